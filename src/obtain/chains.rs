//! Alternate chains (RFC 8555 §7.4.2) and `preferred_chain`: a CA may offer the same
//! certificate under other chains (a cross-signed root, a newer hierarchy), linked from the
//! download with `Link: <url>;rel="alternate"`. `preferred_chain = "ISSUER CN"` picks the chain
//! whose topmost certificate was issued by that name, like certbot's `--preferred-chain`.
//!
//! instant-acme downloads only the default chain, so an alternate is fetched with a
//! POST-as-GET (RFC 8555 §6.3) signed with the account key (see [`super::jws`]).

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certinfo::parse_pem_certs;

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
}
