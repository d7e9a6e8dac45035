//! Private keys and certificate signing requests for leaves (rcgen on aws-lc-rs).

use std::fmt;

use rcgen::{CertificateParams, KeyPair, PublicKeyData, RsaKeySize, SignatureAlgorithm};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The key algorithms a leaf may use; the names are the config's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum KeyType {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// A fresh key of this type.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        let size = match self {
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => return KeyPair::generate_for(self.algorithm()),
            KeyType::Rsa2048 => RsaKeySize::_2048,
            KeyType::Rsa3072 => RsaKeySize::_3072,
            KeyType::Rsa4096 => RsaKeySize::_4096,
        };
        KeyPair::generate_rsa_for(self.algorithm(), size)
    }
}

/// A leaf private key together with the PEM it is stored as.
pub struct LeafKey {
    pair: KeyPair,
    /// Wiped from memory when the key is dropped.
    pem: Zeroizing<String>,
}

impl LeafKey {
    pub fn generate(kind: KeyType) -> Result<Self, rcgen::Error> {
        let pair = kind.generate()?;
        let pem = Zeroizing::new(pair.serialize_pem());
        Ok(Self { pair, pem })
    }

    /// Load a stored key (for `reuse_key`).
    pub fn from_pem(pem: &str) -> Result<Self, rcgen::Error> {
        let pair = KeyPair::from_pem(pem)?;
        Ok(Self { pem: Zeroizing::new(pair.serialize_pem()), pair })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The PEM, to keep with the certificate; the key pair itself is dropped.
    pub fn into_pem(self) -> Zeroizing<String> {
        self.pem
    }

    /// DER SubjectPublicKeyInfo, to match a certificate against this key.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// A certificate for this key, signed by `issuer` (the private CA).
    pub fn sign<S: rcgen::SigningKey>(
        &self,
        params: &CertificateParams,
        issuer: &rcgen::Issuer<'_, S>,
    ) -> Result<rcgen::Certificate, rcgen::Error> {
        params.signed_by(&self.pair, issuer)
    }

    /// A CSR (DER) naming every DNS name and IP address (`names`, as the SAN lists them) in the
    /// SAN. The subject is empty: rcgen's default one ("CN=rcgen self signed cert") is a name no
    /// order holds, which a CA that checks the CN against the order (Boulder) refuses, and an IP-only
    /// or `tlsserver`/`shortlived` certificate has no CN at all.
    pub fn csr_der(&self, names: &[String]) -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        Ok(params.serialize_request(&self.pair)?.der().to_vec())
    }
}

/// The SPKI of a PEM private key, to check that an installed key belongs to its certificate.
pub fn spki_of_key_pem(pem: &str) -> Option<Vec<u8>> {
    KeyPair::from_pem(pem).ok().map(|k| k.subject_public_key_info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn every_key_type_makes_a_csr_for_its_key() {
        for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let key = LeafKey::generate(kind).unwrap();
            let csr = key.csr_der(&["a.example".into(), "b.example".into()]).unwrap();
            let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
            assert_eq!(req.certification_request_info.subject_pki.raw, key.spki_der().as_slice());
            assert_eq!(
                req.certification_request_info.subject.iter_attributes().count(),
                0,
                "no CN: {}",
                req.certification_request_info.subject
            );
            assert_eq!(spki_of_key_pem(key.pem()).unwrap(), key.spki_der());
        }
    }

    #[test]
    fn ip_addresses_go_into_the_csr_as_ip_sans() {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        let csr = key.csr_der(&["127.0.0.1".into(), "::1".into()]).unwrap();
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
        let sans: Vec<String> = req
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| if let ParsedExtension::SubjectAlternativeName(san) = e { Some(san) } else { None })
            .flat_map(|san| san.general_names.iter())
            .map(|n| match n {
                GeneralName::IPAddress(b) if b.len() == 4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                GeneralName::IPAddress(b) => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                other => format!("not an IP: {other:?}"),
            })
            .collect();
        assert_eq!(sans, ["127.0.0.1", "::1"]);
    }
}
