//! Alternate chains (RFC 8555 §7.4.2) and `preferred_chain`: a CA may offer the same
//! certificate under other chains (a cross-signed root, a newer hierarchy), linked from the
//! download with `Link: <url>;rel="alternate"`. `preferred_chain = "ISSUER CN"` picks the chain
//! whose topmost certificate was issued by that name, like certbot's `--preferred-chain`.
//!
//! instant-acme downloads only the default chain and signs no request for us, so an alternate
//! is fetched here with a POST-as-GET (RFC 8555 §6.3) signed with the account key.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certinfo::parse_pem_certs;

/// Signs POST-as-GET requests as the ACME account (`kid` = the account URL; ES256, the only
/// account key type instant-acme makes).
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Signer {
    pub(crate) fn new(kid: &str, pkcs8: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| "the stored ACME account key is not a P-256 PKCS#8 key".to_owned())?;
        Ok(Self { key, kid: kid.to_owned() })
    }

    /// The JWS body of a POST-as-GET for `url` with `nonce` (an empty payload).
    pub(crate) fn post_as_get(&self, url: &str, nonce: &str) -> Result<Vec<u8>, String> {
        let header = serde_json::json!({ "alg": "ES256", "kid": self.kid, "nonce": nonce, "url": url });
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let signature = self
            .key
            .sign(&SystemRandom::new(), format!("{protected}.").as_bytes())
            .map_err(|_| "signing a request with the ACME account key failed".to_owned())?;
        let jws = serde_json::json!({ "protected": protected, "payload": "", "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()) });
        Ok(jws.to_string().into_bytes())
    }
}

/// The common name of whoever issued the topmost certificate of a PEM chain (for a chain that
/// ends below its root: the root's name; that is what `preferred_chain` names).
pub(crate) fn top_issuer(pem: &str) -> Option<String> {
    let chain = parse_pem_certs(pem.as_bytes()).ok()?;
    let top = chain.last()?;
    let (_, cert) = X509Certificate::from_der(top).ok()?;
    let cn = cert.issuer().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// Does the chain `pem` end with a certificate issued by `preferred`?
pub(crate) fn is_preferred(pem: &str, preferred: &str) -> bool {
    top_issuer(pem).is_some_and(|cn| cn == preferred.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    #[test]
    fn the_chain_is_named_by_the_issuer_of_its_topmost_certificate() {
        let (root_key, int_key, leaf_key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let root = Issuer::new(ca("Root X2"), root_key);
        let intermediate = ca("Intermediate E7").signed_by(&int_key, &root).unwrap();
        let leaf = CertificateParams::new(vec!["r.example".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &Issuer::new(ca("Intermediate E7"), int_key))
            .unwrap();
        let pem = format!("{}{}", leaf.pem(), intermediate.pem());
        assert_eq!(top_issuer(&pem).as_deref(), Some("Root X2"));
        assert!(is_preferred(&pem, "Root X2") && is_preferred(&pem, " Root X2 "));
        assert!(!is_preferred(&pem, "Intermediate E7"), "the topmost certificate's issuer, not any issuer");
        assert!(!is_preferred(&leaf.pem(), "Root X2"));
    }

    #[test]
    fn a_post_as_get_is_an_es256_jws_with_an_empty_payload() {
        let key = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let signer = Signer::new("https://ca/acct/1", key.as_ref()).unwrap();
        let jws: serde_json::Value = serde_json::from_slice(&signer.post_as_get("https://ca/cert/1/1", "n0nce").unwrap()).unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jws["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({ "alg": "ES256", "kid": "https://ca/acct/1", "nonce": "n0nce", "url": "https://ca/cert/1/1" })
        );
        assert_eq!(jws["payload"], "");
        assert_eq!(URL_SAFE_NO_PAD.decode(jws["signature"].as_str().unwrap()).unwrap().len(), 64, "r || s, 32 bytes each");
        assert!(Signer::new("k", b"not a key").is_err());
    }
}
