//! Facts about certificates read from PEM: what a leaf covers, when it expires, and whether a
//! chain is complete. Everything that decides "is this certificate good" goes through here.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::keys::KeyType;

/// Parse every CERTIFICATE block of a PEM text (other blocks are ignored).
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Read a PEM certificate file; the error names the file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_pem_certs(&bytes).map_err(|e| format!("{} {e}", path.display()))
}

/// What matters about a leaf certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeafInfo {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
    pub sha256: String,
    #[serde(skip)]
    pub spki: Vec<u8>,
    pub key_type: Option<KeyType>,
}

impl LeafInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unparseable certificate: {e}"))?;
        let names: Vec<GeneralName<'_>> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san.value.general_names.clone(),
            _ => Vec::new(),
        };
        let dns_names = names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        let ips = names
            .iter()
            .filter_map(|n| match n {
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ips,
            serial: cert.raw_serial_as_string(),
            not_before: cert.validity().not_before.timestamp().max(0) as u64,
            not_after: cert.validity().not_after.timestamp().max(0) as u64,
            sha256: fingerprint(der),
            spki: cert.public_key().raw.to_vec(),
            key_type: key_type_of(cert.public_key()),
        })
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.not_after.saturating_sub(self.not_before))
    }

    /// Time left until expiry (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_secs(self.not_after.saturating_sub(unix(now)))
    }

    /// Does the SAN cover every name (exactly, or by a wildcard one label deep)?
    pub fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| {
            let n = n.to_ascii_lowercase();
            self.dns_names.iter().any(|have| {
                *have == n
                    || have
                        .strip_prefix("*.")
                        .is_some_and(|base| !n.starts_with("*.") && n.split_once('.').is_some_and(|(_, rest)| rest == base))
            })
        })
    }

    /// Does the certificate cover every DNS name in `domains` and every address in `ips`?
    pub fn covers_all(&self, domains: &[String], ips: &[std::net::IpAddr]) -> bool {
        self.covers(domains) && ips.iter().all(|ip| self.ips.contains(ip))
    }
}

/// "2027-02-21 12:00 UTC" for a Unix time.
pub fn fmt_time(secs: u64) -> String {
    let fmt = ::time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    ::time::OffsetDateTime::from_unix_timestamp(secs as i64).ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_else(|| format!("@{secs}"))
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Uppercase hex SHA-256 of the DER, colon-free (as `openssl x509 -fingerprint -sha256` minus colons).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(der))
}

/// The key type of a DER SubjectPublicKeyInfo.
pub fn key_type_of_spki_der(der: &[u8]) -> Option<KeyType> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(der).ok()?;
    key_type_of(&spki)
}

fn key_type_of(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        },
        x509_parser::public_key::PublicKey::EC(point) => match point.key_size() {
            256 => Some(KeyType::EcdsaP256),
            384 => Some(KeyType::EcdsaP384),
            _ => None,
        },
        _ => None,
    }
}

/// Check that `chain` is leaf first, then each certificate signed by the next, with at least
/// one intermediate. This is what makes the classic "incomplete chain" install impossible:
/// a bare leaf never reaches the registry's cert volume.
pub fn check_chain_links(chain: &[CertificateDer<'_>]) -> Result<(), String> {
    if chain.len() < 2 {
        return Err(format!(
            "the CA returned {} certificate(s) and no intermediate: installing it would give clients an incomplete chain",
            chain.len()
        ));
    }
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|c| X509Certificate::from_der(c).map(|(_, x)| x).map_err(|e| format!("unparseable certificate in chain: {e}")))
        .collect::<Result<_, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject() {
            return Err(format!(
                "chain is out of order at position {i}: issued by \"{}\" but the next certificate is \"{}\"",
                child.issuer(),
                parent.subject()
            ));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| format!("certificate {i} of the chain is not signed by certificate {}: {e}", i + 1))?;
    }
    Ok(())
}

/// PEM-encode certificates (64-column base64, like openssl).
pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for c in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(names: &[&str]) -> LeafInfo {
        LeafInfo {
            subject: String::new(),
            issuer: String::new(),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            ips: vec![],
            serial: String::new(),
            not_before: 0,
            not_after: 0,
            sha256: String::new(),
            spki: vec![],
            key_type: None,
        }
    }

    #[test]
    fn coverage_rules() {
        let l = leaf(&["a.example", "*.b.example"]);
        assert!(l.covers(&["a.example".into()]));
        assert!(l.covers(&["x.b.example".into()]));
        assert!(!l.covers(&["y.x.b.example".into()]));
        assert!(!l.covers(&["b.example".into()]));
        assert!(!l.covers(&["a.example".into(), "c.example".into()]));
    }

    #[test]
    fn malformed_pem_is_reported() {
        assert!(parse_pem_certs(b"hello").unwrap_err().contains("no PEM certificate"));
        assert!(parse_pem_certs(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn pem_round_trip_and_bare_leaf_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.example".into()]).unwrap().self_signed(&key).unwrap();
        let pem = to_pem(&[cert.der().clone()]);
        let back = parse_pem_certs(pem.as_bytes()).unwrap();
        assert_eq!(back[0].as_ref(), cert.der().as_ref());
        assert!(check_chain_links(&back).unwrap_err().contains("incomplete chain"));
        let info = LeafInfo::parse(&back[0]).unwrap();
        assert_eq!(info.dns_names, vec!["x.example"]);
        assert_eq!(info.key_type, Some(KeyType::EcdsaP256));
    }
}
