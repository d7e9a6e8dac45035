//! Signed ACME requests (JWS, RFC 8555 §6.2) for what instant-acme does not send for us:
//! fetching alternate chains (as the account), and revoking a certificate with its own key
//! (§7.6: the JWS carries the certificate's public key as a JWK instead of an account URL).
//!
//! instant-acme signs only with its P-256 account key; a certificate key may also be P-384 or
//! RSA, so the signature is made here, on aws-lc-rs.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Signs ACME requests with one key, naming it either by the account URL (`kid`) or by the
/// public key itself (`jwk`).
pub(crate) struct Signer {
    key: Key,
    id: KeyId,
}

enum Key {
    Es256(EcdsaKeyPair),
    Es384(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

enum KeyId {
    /// The account URL.
    Kid(String),
    /// The public key (for requests not made as an account).
    Jwk(serde_json::Value),
}

impl Key {
    /// A P-256, P-384 or RSA key from PKCS#8 DER.
    fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8) {
            return Some(Key::Es256(k));
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8) {
            return Some(Key::Es384(k));
        }
        RsaKeyPair::from_pkcs8(pkcs8).ok().map(Key::Rs256)
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Es384(_) => "ES384",
            Key::Rs256(_) => "RS256",
        }
    }

    /// The public key as a JWK (RFC 7518 §6.2, §6.3).
    fn jwk(&self) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            Key::Es256(k) | Key::Es384(k) => {
                // Uncompressed point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let crv = if matches!(self, Key::Es256(_)) { "P-256" } else { "P-384" };
                serde_json::json!({ "crv": crv, "kty": "EC", "x": b64(x), "y": b64(y) })
            }
            Key::Rs256(k) => {
                let public = k.public_key();
                serde_json::json!({
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                })
            }
        }
    }

    /// A JWS signature: r || s for ECDSA, PKCS#1 v1.5 for RSA.
    fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        let rng = SystemRandom::new();
        match self {
            Key::Es256(k) | Key::Es384(k) => k.sign(&rng, message).ok().map(|s| s.as_ref().to_vec()),
            Key::Rs256(k) => {
                let mut signature = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature).ok()?;
                Some(signature)
            }
        }
    }
}

impl Signer {
    /// The ACME account `kid` (its URL) with its key (PKCS#8; ES256, the only account key type
    /// instant-acme makes).
    pub(crate) fn new(kid: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| "the stored ACME account key is not a P-256 PKCS#8 key".to_owned())?;
        Ok(Self { key: Key::Es256(key), id: KeyId::Kid(kid.to_owned()) })
    }

    /// A certificate's own key (PKCS#8: P-256, P-384 or RSA), named by its public key.
    pub(crate) fn certificate_key(pkcs8: &[u8]) -> Result<Self, String> {
        let key = Key::from_pkcs8(pkcs8).ok_or_else(|| "the certificate's key is not a P-256, P-384 or RSA key".to_owned())?;
        let jwk = key.jwk();
        Ok(Self { key, id: KeyId::Jwk(jwk) })
    }

    /// The JWS body of a POST of `payload` (none: a POST-as-GET) to `url` with `nonce`.
    pub(crate) fn sign(&self, url: &str, nonce: &str, payload: Option<&serde_json::Value>) -> Result<Vec<u8>, String> {
        let mut header = serde_json::json!({ "alg": self.key.alg(), "nonce": nonce, "url": url });
        match &self.id {
            KeyId::Kid(kid) => header["kid"] = kid.as_str().into(),
            KeyId::Jwk(jwk) => header["jwk"] = jwk.clone(),
        }
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let payload = payload.map(|p| URL_SAFE_NO_PAD.encode(p.to_string())).unwrap_or_default();
        let signature =
            self.key.sign(format!("{protected}.{payload}").as_bytes()).ok_or_else(|| "signing an ACME request failed".to_owned())?;
        let jws = serde_json::json!({ "protected": protected, "payload": payload, "signature": URL_SAFE_NO_PAD.encode(signature) });
        Ok(jws.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(part: &serde_json::Value) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.as_str().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_post_as_get_is_an_es256_jws_with_an_empty_payload() {
        let key = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let signer = Signer::new("https://ca/acct/1", key.as_ref()).unwrap();
        let jws: serde_json::Value = serde_json::from_slice(&signer.sign("https://ca/cert/1/1", "n0nce", None).unwrap()).unwrap();
        assert_eq!(
            decode(&jws["protected"]),
            serde_json::json!({ "alg": "ES256", "kid": "https://ca/acct/1", "nonce": "n0nce", "url": "https://ca/cert/1/1" })
        );
        assert_eq!(jws["payload"], "");
        assert_eq!(URL_SAFE_NO_PAD.decode(jws["signature"].as_str().unwrap()).unwrap().len(), 64, "r || s, 32 bytes each");
        assert!(Signer::new("k", b"not a key").is_err());
    }

    /// Every key type a certificate may have signs a request that names its public key, and the
    /// signature verifies against the SPKI a certificate for that key would carry.
    #[test]
    fn a_certificate_key_signs_with_its_jwk_and_the_signature_verifies() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
        for kind in [crate::keys::KeyType::EcdsaP256, crate::keys::KeyType::EcdsaP384, crate::keys::KeyType::Rsa2048] {
            let pair = kind.generate().unwrap();
            let signer = Signer::certificate_key(&pair.serialize_der()).unwrap();
            let payload = serde_json::json!({ "certificate": "AAAA", "reason": 1 });
            let jws: serde_json::Value = serde_json::from_slice(&signer.sign("https://ca/revoke", "n", Some(&payload)).unwrap()).unwrap();
            let header = decode(&jws["protected"]);
            assert!(header.get("kid").is_none(), "{header}");
            assert_eq!(decode(&jws["payload"]), payload);
            let (alg, verify): (_, &'static dyn aws_lc_rs::signature::VerificationAlgorithm) = match kind {
                crate::keys::KeyType::EcdsaP256 => ("ES256", &ECDSA_P256_SHA256_FIXED),
                crate::keys::KeyType::EcdsaP384 => ("ES384", &ECDSA_P384_SHA384_FIXED),
                _ => ("RS256", &RSA_PKCS1_2048_8192_SHA256),
            };
            assert_eq!(header["alg"], alg);
            // The public key as the JWK gives it, in the form aws-lc-rs verifies with.
            let jwk = &header["jwk"];
            let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
            let public = match jwk["kty"].as_str().unwrap() {
                "EC" => [vec![4], b("x"), b("y")].concat(),
                _ => {
                    let der = rsa_public_key_der(&b("n"), &b("e"));
                    assert!(pair.public_key_raw() == der.as_slice(), "the JWK is the certificate key's public key");
                    der
                }
            };
            if jwk["kty"] == "EC" {
                assert_eq!(pair.public_key_raw(), public.as_slice(), "the JWK is the certificate key's public key");
            }
            let message = format!("{}.{}", jws["protected"].as_str().unwrap(), jws["payload"].as_str().unwrap());
            let signature = URL_SAFE_NO_PAD.decode(jws["signature"].as_str().unwrap()).unwrap();
            UnparsedPublicKey::new(verify, &public).verify(message.as_bytes(), &signature).unwrap();
        }
    }

    /// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (DER).
    fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            match body.len() {
                l if l < 0x80 => out.push(l as u8),
                l if l < 0x100 => out.extend([0x81, l as u8]),
                l => out.extend([0x82, (l >> 8) as u8, l as u8]),
            }
            out.extend_from_slice(body);
            out
        }
        let int = |v: &[u8]| if v[0] & 0x80 != 0 { tlv(2, &[&[0u8][..], v].concat()) } else { tlv(2, v) };
        tlv(0x30, &[int(n), int(e)].concat())
    }
}
