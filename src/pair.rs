//! The pair model: a key and the fullchain it belongs to, checked once, and the last
//! known-good pair kept in state_dir.
//!
//! A [`MatchedPair`] can only be made by [`MatchedPair::check`]: the key belongs to the leaf,
//! the chain is complete (leaf first, each certificate signed by the next, at least one
//! intermediate — the check every issued chain passes) and the leaf has not expired. Whatever
//! regcert writes into an install dir or keeps as the known-good pair is one, so a key and a
//! certificate that do not belong together are never backed up or restored.

use std::fs;
use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::certinfo::{LeafInfo, check_chain_links, fmt_time, parse_pem_certs};
use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
use crate::keys::spki_of_key_pem;
use crate::state::StateDir;

/// A key and fullchain that belong together, with a complete chain and an unexpired leaf.
pub struct MatchedPair {
    fullchain: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    leaf: LeafInfo,
}

impl MatchedPair {
    /// The only way to make one. The error says what is wrong with the pair ("the key does not
    /// belong to the certificate", …), for the caller to say where the pair came from.
    pub fn check(fullchain: Vec<u8>, key: Zeroizing<Vec<u8>>, now: SystemTime) -> Result<Self, String> {
        let unreadable = |e: String| format!("the fullchain cannot be read: {e}");
        let chain = parse_pem_certs(&fullchain).map_err(unreadable)?;
        let leaf = LeafInfo::parse(&chain[0]).map_err(unreadable)?;
        let spki = std::str::from_utf8(&key).ok().and_then(spki_of_key_pem).ok_or("the key is not a PEM private key")?;
        if spki != leaf.spki {
            return Err("the key does not belong to the certificate".into());
        }
        if leaf.remaining(now).is_zero() {
            return Err(format!("the certificate expired on {}", fmt_time(leaf.not_after)));
        }
        if chain.len() < 2 {
            return Err("the fullchain has no intermediate (incomplete chain)".into());
        }
        check_chain_links(&chain)?;
        Ok(Self { fullchain, key, leaf })
    }

    pub fn fullchain(&self) -> &[u8] {
        &self.fullchain
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }
}

impl std::fmt::Debug for MatchedPair {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchedPair").field("serial", &self.leaf.serial).field("sha256", &self.leaf.sha256).finish_non_exhaustive()
    }
}

/// The known-good pair of `name` kept in state_dir: `Ok(None)` when none is kept, an error when
/// what is kept is no longer good (it expired, or it was edited by hand).
pub fn load_known_good(state: &StateDir, name: &str, now: SystemTime) -> Result<Option<MatchedPair>, String> {
    let dir = state.previous_dir(name);
    let read = |f: &str| match fs::read(dir.join(f)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", dir.join(f).display())),
    };
    match (read("fullchain.pem")?, read("privkey.pem")?.map(Zeroizing::new)) {
        (Some(chain), Some(key)) => MatchedPair::check(chain, key, now).map(Some),
        _ => Ok(None),
    }
}

/// Keep `pair` as the known-good pair of `name`.
///
/// Two files, written key first: a crash in between leaves a key and a fullchain that do not
/// belong together, which [`load_known_good`] refuses. That is safe because the pair is kept
/// before an install touches the install dir: the same pair is still installed then, and the
/// next install keeps it again.
pub fn keep_known_good(state: &StateDir, name: &str, pair: &MatchedPair) -> Result<(), String> {
    let dir = state.previous_dir(name);
    let save = || -> std::io::Result<()> {
        create_private_dir(&dir)?;
        write_atomic(&dir.join("privkey.pem"), pair.key(), FileSpec::PRIVATE)?;
        write_atomic(&dir.join("fullchain.pem"), pair.fullchain(), FileSpec::PUBLIC)
    };
    save().map_err(|e| format!("cannot keep the installed pair in {}: {e}; nothing was changed", dir.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA for test pairs: root → intermediate → leaves.
    pub(crate) struct TestCa {
        root_pem: String,
        inter_pem: String,
        inter: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new() -> Self {
            let ca_params = |cn: &str| {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.distinguished_name.push(rcgen::DnType::CommonName, cn);
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p
            };
            let root_key = KeyPair::generate().unwrap();
            let root = ca_params("test root").self_signed(&root_key).unwrap();
            let root_issuer = Issuer::new(ca_params("test root"), root_key);
            let inter_key = KeyPair::generate().unwrap();
            let inter = ca_params("test intermediate").signed_by(&inter_key, &root_issuer).unwrap();
            Self { root_pem: root.pem(), inter_pem: inter.pem(), inter: Issuer::new(ca_params("test intermediate"), inter_key) }
        }

        /// A leaf valid until `days` from now (negative: expired), with its intermediate: (fullchain, key).
        pub(crate) fn pair(&self, days: i64) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["r.example".to_owned()]).unwrap();
            let now = ::time::OffsetDateTime::now_utc();
            p.not_before = now - ::time::Duration::days(100);
            p.not_after = now + ::time::Duration::days(days);
            let leaf = p.signed_by(&key, &self.inter).unwrap();
            (format!("{}{}", leaf.pem(), self.inter_pem), key.serialize_pem())
        }

        pub(crate) fn root_pem(&self) -> &str {
            &self.root_pem
        }
    }

    pub(crate) fn matched(p: &(String, String)) -> MatchedPair {
        MatchedPair::check(p.0.clone().into_bytes(), Zeroizing::new(p.1.clone().into_bytes()), SystemTime::now()).unwrap()
    }

    fn check(chain: &str, key: &str) -> Result<MatchedPair, String> {
        MatchedPair::check(chain.as_bytes().to_vec(), Zeroizing::new(key.as_bytes().to_vec()), SystemTime::now())
    }

    #[test]
    fn only_a_complete_unexpired_pair_whose_key_belongs_to_the_leaf_is_matched() {
        let ca = TestCa::new();
        let (chain, key) = ca.pair(30);
        assert_eq!(check(&chain, &key).unwrap().fullchain(), chain.as_bytes());

        let (_, other_key) = ca.pair(30);
        assert_eq!(check(&chain, &other_key).unwrap_err(), "the key does not belong to the certificate");
        assert_eq!(check(&chain, "garbage").unwrap_err(), "the key is not a PEM private key");
        let bare_leaf = chain.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap();
        assert_eq!(check(bare_leaf, &key).unwrap_err(), "the fullchain has no intermediate (incomplete chain)");
        // The leaf followed by the root: the root did not sign it.
        let wrong = format!("{bare_leaf}{}", ca.root_pem());
        assert!(check(&wrong, &key).unwrap_err().contains("chain is out of order"), "{wrong}");
        let (expired, expired_key) = ca.pair(-1);
        assert!(check(&expired, &expired_key).unwrap_err().starts_with("the certificate expired on "));
        assert!(check("", &key).unwrap_err().starts_with("the fullchain cannot be read: contains no PEM certificate"));
    }

    #[test]
    fn a_half_written_known_good_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let now = SystemTime::now();
        assert!(load_known_good(&state, "r", now).unwrap().is_none());
        let ca = TestCa::new();
        let (old, new) = (ca.pair(30), ca.pair(60));
        keep_known_good(&state, "r", &matched(&old)).unwrap();
        assert_eq!(load_known_good(&state, "r", now).unwrap().unwrap().fullchain(), old.0.as_bytes());
        // A crash after the key of the next pair was written, before its fullchain.
        write_atomic(&state.previous_dir("r").join("privkey.pem"), new.1.as_bytes(), FileSpec::PRIVATE).unwrap();
        assert_eq!(load_known_good(&state, "r", now).unwrap_err(), "the key does not belong to the certificate");
        keep_known_good(&state, "r", &matched(&new)).unwrap();
        assert_eq!(load_known_good(&state, "r", now).unwrap().unwrap().key(), new.1.as_bytes());
    }
}
