//! After the install: reload, verify, and roll back when the new certificate is not served.
//!
//! The decisions (when to roll back, what to report, when the new pair must stay) are here;
//! the two effects on the outside world — making the registry load the files, and checking
//! what it serves — come through [`Registry`], so each outcome can be tested with an
//! in-memory registry as well as against the real one.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::{CertificateConfig, Usage};
use crate::progress::step;
use crate::state::StateDir;
use crate::{install, pair};
use crate::{reload, verify};

/// The registry a certificate is delivered to.
pub(crate) trait Registry {
    /// Make the registry load what is installed now.
    async fn reload(&self) -> Result<(), String>;
    /// Wait until the leaf with `sha256` is served (a client certificate: accepted) correctly:
    /// what the check proved ("URL serves it"), or what is wrong. `None` when no verification is configured.
    async fn verify(&self, sha256: &str) -> Option<Result<String, String>>;
}

/// The real registry: the prepared reload actions, and an HTTPS check.
pub(crate) struct Live<'a> {
    pub cert: &'a str,
    pub reload: &'a reload::Plan,
    /// What to check, and for how long; `None` when verification is off.
    pub verify: Option<(verify::Target, Duration)>,
}

impl Registry for Live<'_> {
    async fn reload(&self) -> Result<(), String> {
        self.reload.run(self.cert).await
    }

    async fn verify(&self, sha256: &str) -> Option<Result<String, String>> {
        let (target, timeout) = self.verify.as_ref()?;
        let report = verify::verify_until(target, Some(sha256), *timeout).await;
        Some(if report.ok() {
            Ok(target.proof())
        } else {
            Err(format!("verification of {} failed: {}", target.url, report.problems.join("; ")))
        })
    }
}

/// Why an installed certificate did not reach the registry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Undelivered {
    RolledBack { error: String, restored: String },
    Failed(String),
}

/// How a pair gets into the install dir again, and whether it may.
pub(crate) struct Rollback<'a> {
    pub state: &'a StateDir,
    pub cert: &'a CertificateConfig,
    /// `[certificate.verify] rollback`.
    pub enabled: bool,
    /// Installed files rewritten in place (single-file bind mounts).
    pub in_place: &'a [PathBuf],
    /// Why the pair the install replaced did not become the known-good pair (for the message
    /// when there is none to restore).
    pub unkept: Option<String>,
}

/// What the messages say happened: a server certificate is served by the registry, a client
/// certificate (`usage = "client"`) is accepted by it.
#[derive(Clone, Copy)]
struct Wording {
    client: bool,
}

impl Wording {
    fn of(cert: &CertificateConfig) -> Self {
        Self { client: cert.usage == Usage::Client }
    }

    /// The step a renewal timeout names.
    fn step(self) -> &'static str {
        if self.client {
            "reloading the registry and verifying that it accepts the client certificate"
        } else {
            "reloading the registry and verifying what it serves"
        }
    }

    fn previous(self) -> &'static str {
        if self.client { "the previous client certificate" } else { "the previous certificate" }
    }

    fn verified(self) -> &'static str {
        if self.client {
            "verified: the registry accepts the new client certificate"
        } else {
            "verified: the registry serves the new certificate"
        }
    }

    fn not_verified(self) -> &'static str {
        if self.client { "the registry does not accept the new client certificate" } else { "the new certificate is not served correctly" }
    }

    /// After a failed reload that nothing verifies.
    fn maybe_old(self) -> &'static str {
        if self.client {
            "the registry may still expect the old client certificate"
        } else {
            "the registry may still serve the old certificate"
        }
    }

    /// The restored pair passed verification.
    fn restored(self) -> &'static str {
        if self.client { "is installed again, and the registry accepts it" } else { "is installed and served again" }
    }

    /// The restored pair failed verification too.
    fn restored_refused(self) -> &'static str {
        if self.client {
            "is installed again, but the registry does not accept it either"
        } else {
            "is installed again, but it is not served correctly either"
        }
    }
}

/// Reload and verify after an install; on failure, roll back when configured.
/// Returns what verification proved ("URL serves it"; if verification is configured).
pub(crate) async fn deliver(registry: &impl Registry, rollback: &Rollback<'_>, sha256: &str) -> Result<Option<String>, Undelivered> {
    let name = &rollback.cert.name;
    let words = Wording::of(rollback.cert);
    step(words.step());
    let reloaded = registry.reload().await;
    let error = match (reloaded, registry.verify(sha256).await) {
        (Ok(()), None) => return Ok(None),
        (Err(e), None) => return Err(Undelivered::Failed(format!("installed, but {e}; {}", words.maybe_old()))),
        (Ok(()), Some(Ok(proof))) => {
            tracing::info!(cert = %name, %proof, "{}", words.verified());
            return Ok(Some(proof));
        }
        (Err(e), Some(_)) => e,
        (Ok(()), Some(Err(e))) => e,
    };
    tracing::error!(cert = %name, %error, "{}", words.not_verified());
    if !rollback.enabled {
        return Err(Undelivered::Failed(format!("{error}; rollback = false, so the new pair stays installed")));
    }
    roll_back(registry, rollback, error).await
}

/// Put the known-good pair back, reload again, and check that it is served again.
async fn roll_back(registry: &impl Registry, rb: &Rollback<'_>, error: String) -> Result<Option<String>, Undelivered> {
    let old = match pair::load_known_good(rb.state, &rb.cert.name, SystemTime::now()) {
        Ok(Some(old)) => old,
        Ok(None) => {
            let why = rb.unkept.as_ref().map(|why| format!(" (the pair it replaced is not one: {why})")).unwrap_or_default();
            return Err(Undelivered::Failed(format!("{error}; there is no previous pair to restore{why}, so the new one stays installed")));
        }
        Err(why) => {
            let dir = rb.state.previous_dir(&rb.cert.name);
            return Err(Undelivered::Failed(format!(
                "{error}; the previous pair kept in {} is not restored ({why}), so the new one stays installed",
                dir.display()
            )));
        }
    };
    install::restore(rb.cert, &old, rb.in_place).map_err(|e| Undelivered::Failed(format!("{error}; rollback failed: {e}")))?;
    let words = Wording::of(rb.cert);
    let previous = format!("{} (serial {})", words.previous(), old.leaf().serial);
    let restored = match (registry.reload().await, registry.verify(&old.leaf().sha256).await) {
        (Err(e), _) => format!("{previous} is installed again, but reloading failed too: {e}"),
        (Ok(()), Some(Err(problems))) => format!("{previous} {}: {problems}", words.restored_refused()),
        (Ok(()), _) => format!("{previous} {}", words.restored()),
    };
    tracing::error!(cert = %rb.cert.name, %error, %restored, "rolled back");
    Err(Undelivered::RolledBack { error, restored })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
    use crate::pair::tests::TestCa;

    /// A registry that answers from a script and remembers what it was asked.
    struct Scripted {
        reloads: RefCell<Vec<Result<(), String>>>,
        verifies: RefCell<Vec<Option<Result<String, String>>>>,
        asked: RefCell<Vec<String>>,
    }

    impl Scripted {
        fn new(reloads: Vec<Result<(), String>>, verifies: Vec<Option<Result<String, String>>>) -> Self {
            Self { reloads: RefCell::new(reloads), verifies: RefCell::new(verifies), asked: RefCell::default() }
        }
    }

    impl Registry for Scripted {
        async fn reload(&self) -> Result<(), String> {
            self.asked.borrow_mut().push("reload".into());
            self.reloads.borrow_mut().remove(0)
        }
        async fn verify(&self, sha256: &str) -> Option<Result<String, String>> {
            self.asked.borrow_mut().push(format!("verify {sha256}"));
            self.verifies.borrow_mut().remove(0)
        }
    }

    /// Test pairs, all from one CA (root → intermediate → leaf).
    fn pair(days: i64) -> (String, String) {
        thread_local!(static CA: TestCa = TestCa::new());
        CA.with(|ca| ca.pair(days))
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        state: StateDir,
        cert: CertificateConfig,
    }

    /// A certificate installed from `installed`, with `previous` kept as the backup.
    fn fixture(installed: &(String, String), previous: Option<&(String, String)>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let install = dir.path().join("install");
        create_private_dir(&install).unwrap();
        let text = format!("name = \"r\"\ndomains = [\"r.example\"]\n[install]\ndir = \"{}\"\n", install.display());
        let cert: CertificateConfig = toml::from_str(&text).unwrap();
        write_atomic(&cert.install.fullchain_path(), installed.0.as_bytes(), FileSpec::PUBLIC).unwrap();
        write_atomic(&cert.install.key_path(), installed.1.as_bytes(), FileSpec::PRIVATE).unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        if let Some((chain, key)) = previous {
            let prev = state.previous_dir("r");
            create_private_dir(&prev).unwrap();
            write_atomic(&prev.join("fullchain.pem"), chain.as_bytes(), FileSpec::PUBLIC).unwrap();
            write_atomic(&prev.join("privkey.pem"), key.as_bytes(), FileSpec::PRIVATE).unwrap();
        }
        Fixture { _dir: dir, state, cert }
    }

    fn installed_chain(f: &Fixture) -> String {
        std::fs::read_to_string(f.cert.install.fullchain_path()).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn run(f: &Fixture, registry: &Scripted, enabled: bool) -> Result<Option<String>, Undelivered> {
        run_unkept(f, registry, enabled, None)
    }

    fn run_unkept(f: &Fixture, registry: &Scripted, enabled: bool, unkept: Option<String>) -> Result<Option<String>, Undelivered> {
        let rb = Rollback { state: &f.state, cert: &f.cert, enabled, in_place: &[], unkept };
        rt().block_on(deliver(registry, &rb, "new-sha"))
    }

    #[test]
    fn verified_delivery_keeps_the_new_pair() {
        let (new, old) = (pair(90), pair(30));
        let f = fixture(&new, Some(&old));
        let reg = Scripted::new(vec![Ok(())], vec![Some(Ok("https://r.example/v2/".into()))]);
        assert_eq!(run(&f, &reg, true), Ok(Some("https://r.example/v2/".into())));
        assert_eq!(installed_chain(&f), new.0);
        assert_eq!(*reg.asked.borrow(), ["reload", "verify new-sha"]);
    }

    #[test]
    fn failed_verification_restores_reloads_and_verifies_the_previous_pair() {
        let (new, old) = (pair(90), pair(30));
        let f = fixture(&new, Some(&old));
        let reg = Scripted::new(vec![Ok(()), Ok(())], vec![Some(Err("wrong leaf served".into())), Some(Ok("u".into()))]);
        let Err(Undelivered::RolledBack { error, restored }) = run(&f, &reg, true) else { panic!("expected a rollback") };
        assert_eq!(error, "wrong leaf served");
        assert!(restored.ends_with("is installed and served again"), "{restored}");
        assert_eq!(installed_chain(&f), old.0, "the previous pair is installed again");
        let asked = reg.asked.borrow();
        assert_eq!(asked.len(), 4);
        assert!(asked[3].starts_with("verify ") && asked[3] != "verify new-sha", "the old leaf is verified: {asked:?}");
    }

    #[test]
    fn a_rollback_that_is_not_served_either_says_so() {
        let (new, old) = (pair(90), pair(30));
        let f = fixture(&new, Some(&old));
        let reg = Scripted::new(vec![Err("container died".into()), Ok(())], vec![Some(Err("down".into())), Some(Err("still down".into()))]);
        let Err(Undelivered::RolledBack { error, restored }) = run(&f, &reg, true) else { panic!("expected a rollback") };
        assert_eq!(error, "container died");
        assert!(restored.ends_with("is installed again, but it is not served correctly either: still down"), "{restored}");
    }

    #[test]
    fn a_client_certificate_rollback_says_what_the_registry_accepts() {
        let (new, old) = (pair(90), pair(30));
        let mut f = fixture(&new, Some(&old));
        f.cert.usage = Usage::Client;
        let reg = Scripted::new(vec![Ok(()), Ok(())], vec![Some(Err("refused".into())), Some(Ok("u".into()))]);
        let Err(Undelivered::RolledBack { restored, .. }) = run(&f, &reg, true) else { panic!("expected a rollback") };
        assert!(restored.starts_with("the previous client certificate (serial "), "{restored}");
        assert!(restored.ends_with("is installed again, and the registry accepts it"), "{restored}");
        let reg = Scripted::new(vec![Ok(()), Ok(())], vec![Some(Err("refused".into())), Some(Err("refused too".into()))]);
        let Err(Undelivered::RolledBack { restored, .. }) = run(&f, &reg, true) else { panic!("expected a rollback") };
        assert!(restored.ends_with("is installed again, but the registry does not accept it either: refused too"), "{restored}");
        assert!(!restored.contains("served"), "{restored}");
    }

    #[test]
    fn the_new_pair_stays_without_a_usable_previous_one_or_with_rollback_off() {
        let new = pair(90);
        let failing = || Scripted::new(vec![Ok(())], vec![Some(Err("bad chain".into()))]);

        let f = fixture(&new, None);
        let Err(Undelivered::Failed(e)) = run(&f, &failing(), true) else { panic!() };
        assert!(e.ends_with("there is no previous pair to restore, so the new one stays installed"), "{e}");
        // Why the pair the install replaced was not kept, when it was not.
        let Err(Undelivered::Failed(e)) = run_unkept(&f, &failing(), true, Some("the certificate expired on 2021-01-01 00:00 UTC".into()))
        else {
            panic!()
        };
        assert!(
            e.ends_with("no previous pair to restore (the pair it replaced is not one: the certificate expired on 2021-01-01 00:00 UTC), so the new one stays installed"),
            "{e}"
        );

        let f = fixture(&new, Some(&pair(-1)));
        let Err(Undelivered::Failed(e)) = run(&f, &failing(), true) else { panic!() };
        assert!(e.contains("is not restored (the certificate expired on"), "{e}");

        // Only reachable by editing state_dir by hand: the kept key is not the certificate's.
        let (chain, _) = pair(30);
        let f = fixture(&new, Some(&(chain, pair(30).1)));
        let Err(Undelivered::Failed(e)) = run(&f, &failing(), true) else { panic!() };
        assert!(e.ends_with("is not restored (the key does not belong to the certificate), so the new one stays installed"), "{e}");
        assert_eq!(installed_chain(&f), new.0);

        // A bare leaf kept by hand is not restored either: it would be an incomplete chain.
        let (chain, key) = pair(30);
        let leaf = chain.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().to_owned();
        let f = fixture(&new, Some(&(leaf, key)));
        let Err(Undelivered::Failed(e)) = run(&f, &failing(), true) else { panic!() };
        assert!(e.contains("is not restored (the fullchain has no intermediate (incomplete chain))"), "{e}");
        assert_eq!(installed_chain(&f), new.0);

        let f = fixture(&new, Some(&pair(30)));
        let Err(Undelivered::Failed(e)) = run(&f, &failing(), false) else { panic!() };
        assert_eq!(e, "bad chain; rollback = false, so the new pair stays installed");
        assert_eq!(installed_chain(&f), new.0);
    }

    #[test]
    fn without_verification_a_failed_reload_is_reported_and_nothing_is_restored() {
        let (new, old) = (pair(90), pair(30));
        let f = fixture(&new, Some(&old));
        let reg = Scripted::new(vec![Err("systemctl failed".into())], vec![None]);
        assert_eq!(
            run(&f, &reg, true),
            Err(Undelivered::Failed("installed, but systemctl failed; the registry may still serve the old certificate".into()))
        );
        assert_eq!(installed_chain(&f), new.0);
    }
}
