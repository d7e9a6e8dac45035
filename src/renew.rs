//! The renewal pipeline: decide → obtain → (keep) → install, per certificate.
//!
//! Planning is synchronous and cheap (read the installed files, apply the policy), so a run in
//! which nothing is due never starts an async runtime, loads trust roots or talks to the CA.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::ca::LocalCa;
use crate::certinfo::{fmt_time, key_type_of_spki_der};
use crate::challenge::Solver;
use crate::config::{CertificateConfig, Config, IssuerRef, VerifyConfig};
use crate::install::{self, inspect_pair};
use crate::keys::LeafKey;
use crate::notify::{self, EventKind};
use crate::obtain::acme::AcmeIssuer;
use crate::obtain::{account, tls};
use crate::policy::{Decision, Reason, decide};
use crate::state::{Issued, StateDir};
use crate::{reload, verify};

#[derive(Debug, Clone, Copy, Default)]
pub struct RenewOptions {
    pub force: bool,
    pub dry_run: bool,
}

/// What happened to one certificate.
#[derive(Debug)]
pub enum Outcome {
    NotDue {
        not_after: u64,
        due_at: u64,
    },
    Renewed {
        reason: Reason,
        not_after: u64,
        serial: String,
        fullchain: PathBuf,
        /// Installed material issued earlier and kept in state_dir (a previous install had failed).
        from_store: bool,
        reloaded: bool,
        /// The URL that was shown to serve the new certificate.
        verified: Option<String>,
    },
    DryRun {
        reason: Reason,
        not_after: u64,
        serial: String,
    },
    /// The new certificate failed after installing; the previous pair was put back.
    RolledBack {
        reason: Reason,
        error: String,
        restored: String,
    },
    Failed {
        reason: Reason,
        error: String,
    },
}

#[derive(Debug)]
pub struct CertReport {
    pub name: String,
    pub outcome: Outcome,
}

impl CertReport {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. } | Outcome::RolledBack { .. })
    }
}

impl fmt::Display for CertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.outcome {
            Outcome::NotDue { not_after, due_at } => {
                write!(f, "{name}: not due; expires {}, renewal due {}", fmt_time(*not_after), fmt_time(*due_at))
            }
            Outcome::Renewed { reason, not_after, serial, fullchain, from_store, reloaded, verified } => {
                let what = if *from_store { "installed the certificate already issued and kept in state_dir" } else { "renewed" };
                write!(
                    f,
                    "{name}: {what} ({reason}); serial {serial}, expires {}; installed {}",
                    fmt_time(*not_after),
                    fullchain.display()
                )?;
                if *reloaded {
                    write!(f, "; reloaded")?;
                }
                match verified {
                    Some(url) => write!(f, "; verified: {url} serves it"),
                    None => Ok(()),
                }
            }
            Outcome::DryRun { reason, not_after, serial } => write!(
                f,
                "{name}: obtained ({reason}); serial {serial}, expires {} — dry run: nothing stored or installed",
                fmt_time(*not_after)
            ),
            Outcome::RolledBack { reason, error, restored } => write!(f, "{name}: FAILED ({reason}) and ROLLED BACK: {error}; {restored}"),
            Outcome::Failed { reason, error } => write!(f, "{name}: FAILED ({reason}): {error}"),
        }
    }
}

/// One line for the end of a run.
pub fn summary(reports: &[CertReport], opts: RenewOptions) -> String {
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let renewed = count(|o| matches!(o, Outcome::Renewed { .. }));
    let dry = count(|o| matches!(o, Outcome::DryRun { .. }));
    let not_due = count(|o| matches!(o, Outcome::NotDue { .. }));
    let failed = count(|o| matches!(o, Outcome::Failed { .. } | Outcome::RolledBack { .. }));
    if opts.dry_run {
        format!("dry run: {dry} obtained, {not_due} not due, {failed} failed; nothing was installed")
    } else {
        format!("{renewed} renewed, {not_due} not due, {failed} failed")
    }
}

/// The decision for each selected certificate, from what is installed now.
pub fn plan<'c>(certs: &[&'c CertificateConfig], opts: RenewOptions, now: SystemTime) -> Vec<(&'c CertificateConfig, Decision)> {
    certs
        .iter()
        .map(|cert| {
            let installed = install::read_installed(&cert.install);
            (*cert, decide(cert, installed.as_ref().map(Option::as_ref).map_err(Clone::clone), now, opts.force))
        })
        .collect()
}

/// Everything one run shares: config, state, and the ACME issuer (built on first need).
pub struct Renewer<'a> {
    config: &'a Config,
    state: &'a StateDir,
    opts: RenewOptions,
    issuer: OnceCell<Result<AcmeIssuer, String>>,
}

impl<'a> Renewer<'a> {
    pub fn new(config: &'a Config, state: &'a StateDir, opts: RenewOptions) -> Self {
        Self { config, state, opts, issuer: OnceCell::new() }
    }

    /// Renew every due certificate, at most `concurrency` at once; reports keep config order.
    pub async fn run(&self, due: Vec<(&CertificateConfig, Reason)>) -> Vec<CertReport> {
        // Futures made by a plain iterator (not an async closure) keep this spawnable.
        let jobs: Vec<_> = due.into_iter().map(|(cert, reason)| self.report(cert, reason)).collect();
        futures_util::stream::iter(jobs).buffered(self.config.concurrency).collect().await
    }

    async fn report(&self, cert: &CertificateConfig, reason: Reason) -> CertReport {
        let outcome = match self.renew_one(cert, &reason).await {
            Ok(o) => o,
            Err(error) => {
                tracing::error!(cert = %cert.name, %error, "renewal failed");
                Outcome::Failed { reason, error }
            }
        };
        CertReport { name: cert.name.clone(), outcome }
    }

    async fn renew_one(&self, cert: &CertificateConfig, reason: &Reason) -> Result<Outcome, String> {
        tracing::info!(cert = %cert.name, %reason, "renewal due");
        // Check the reload actions before ordering: a wrong container name must not cost an issuance.
        let plan = reload::prepare(cert).await?;
        let stored = (!self.opts.force && !self.opts.dry_run).then(|| self.stored_replacement(cert)).flatten();
        let from_store = stored.is_some();
        let issued = match stored {
            Some(issued) => issued,
            None => {
                let key = self.leaf_key(cert).await?;
                let issued = match &cert.issuer {
                    IssuerRef::Acme => {
                        let issuer = self.issuer().await?;
                        let current = install::read_installed(&cert.install).ok().flatten();
                        issuer.issue(cert, key, current.as_ref().map(|i| &i.leaf_der)).await?
                    }
                    IssuerRef::Ca(name) => LocalCa::load(self.state, name)?.issue(cert, &key)?,
                };
                if self.opts.dry_run {
                    tracing::info!(cert = %cert.name, "dry run: not storing or installing");
                    let m = issued.meta;
                    return Ok(Outcome::DryRun { reason: reason.clone(), not_after: m.not_after, serial: m.serial });
                }
                self.state
                    .save_issued(&issued)
                    .map_err(|e| format!("cannot keep the issued certificate in {}: {e}", self.state.cert_dir(&cert.name).display()))?;
                issued
            }
        };
        install::install(self.state, cert, issued.fullchain_pem().as_bytes(), issued.key_pem.as_bytes(), &plan.in_place)?;
        let delivered = deliver(self.state, cert, &plan, &issued.meta.sha256).await;
        let m = issued.meta;
        match delivered {
            Ok(verified) => {
                sync_docker_clients(self.state, cert)?;
                Ok(Outcome::Renewed {
                    reason: reason.clone(),
                    not_after: m.not_after,
                    serial: m.serial,
                    fullchain: cert.install.fullchain_path(),
                    from_store,
                    reloaded: !plan.is_empty(),
                    verified,
                })
            }
            Err(Undelivered::RolledBack { error, restored }) => Ok(Outcome::RolledBack { reason: reason.clone(), error, restored }),
            Err(Undelivered::Failed(error)) => Err(error),
        }
    }

    /// A certificate issued earlier but never installed (say, the install dir was read-only)
    /// is installed instead of ordering again, as long as the policy would keep it.
    fn stored_replacement(&self, cert: &CertificateConfig) -> Option<Issued> {
        let stored = self.state.load_issued(&cert.name)?;
        let pair = inspect_pair(stored.fullchain_pem().as_bytes(), Some(&stored.key_pem)).ok()?;
        let installed = install::read_installed(&cert.install).ok().flatten();
        if installed.is_some_and(|i| i.leaf.sha256 == pair.leaf.sha256) {
            return None;
        }
        matches!(decide(cert, Ok(Some(&pair)), SystemTime::now(), false), Decision::NotDue { .. }).then_some(stored)
    }

    /// A fresh key, or with `reuse_key` the last one (when it is still of the configured type).
    async fn leaf_key(&self, cert: &CertificateConfig) -> Result<LeafKey, String> {
        if cert.reuse_key {
            if let Some(key) = self.state.load_key_pem(&cert.name).and_then(|pem| LeafKey::from_pem(&pem).ok()) {
                if key_type_of_spki_der(&key.spki_der()) == Some(cert.key) {
                    return Ok(key);
                }
            }
        }
        let kind = cert.key;
        // RSA generation takes long enough to stall other certificates' network I/O.
        tokio::task::spawn_blocking(move || LeafKey::generate(kind))
            .await
            .map_err(|e| format!("key generation task failed: {e}"))?
            .map_err(|e| format!("cannot generate a {kind} key: {e}"))
    }

    pub async fn issuer(&self) -> Result<&AcmeIssuer, String> {
        let init = self.issuer.get_or_init(|| async {
            let acme = self.config.acme.as_ref().ok_or("no [acme] section in the config")?;
            let roots = tls::root_store(acme.ca_bundle.as_deref().as_slice()).map_err(|e| format!("[acme] ca_bundle: {e}"))?;
            let account = account::load_or_create(self.state, acme, || tls::acme_http_client(roots.clone())).await?;
            let solver = Solver::from_config(&self.config.http01);
            Ok(AcmeIssuer::new(account, acme.directory_url().to_owned(), solver))
        });
        init.await.as_ref().map_err(Clone::clone)
    }
}

/// `[certificate.trust] docker_clients`: this host's Docker trusts the certificate's private CA.
pub fn sync_docker_clients(state: &StateDir, cert: &CertificateConfig) -> Result<(), String> {
    let (Some(trust), IssuerRef::Ca(ca)) = (&cert.trust, &cert.issuer) else { return Ok(()) };
    let root = crate::ca::root_path(state.root(), ca);
    let pem = std::fs::read_to_string(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    for registry in &trust.docker_clients {
        let path = crate::trust::install(&trust.certs_d, registry, &pem).map_err(|e| format!("installed and verified, but {e}"))?;
        tracing::info!(cert = %cert.name, registry = %registry, file = %path.display(), "Docker trusts the CA");
    }
    Ok(())
}

/// Why an installed certificate did not reach the registry.
enum Undelivered {
    RolledBack { error: String, restored: String },
    Failed(String),
}

/// Reload and verify after an install; on failure, roll back when configured.
/// Returns the verified URL (if verification is configured).
async fn deliver(state: &StateDir, cert: &CertificateConfig, plan: &reload::Plan, sha256: &str) -> Result<Option<String>, Undelivered> {
    let reloaded = plan.run(&cert.name).await;
    let Some(settings) = cert.verify_settings() else {
        return match reloaded {
            Ok(()) => Ok(None),
            Err(e) => Err(Undelivered::Failed(format!("installed, but {e}; the registry may still serve the old certificate"))),
        };
    };
    let target = verify::Target::for_certificate(cert, &settings, state.root()).map_err(Undelivered::Failed)?;
    let report = verify::verify_until(&target, Some(sha256), settings.timeout).await;
    let error = match (reloaded, report.ok()) {
        (Ok(()), true) => {
            tracing::info!(cert = %cert.name, url = %target.url, "verified: the registry serves the new certificate");
            return Ok(Some(target.url));
        }
        (Err(e), _) => e,
        (Ok(()), false) => format!("verification of {} failed: {}", target.url, report.problems.join("; ")),
    };
    tracing::error!(cert = %cert.name, %error, "the new certificate is not served correctly");
    if !settings.rollback {
        return Err(Undelivered::Failed(format!("{error}; rollback = false, so the new pair stays installed")));
    }
    rollback(state, cert, plan, &target, &settings, error).await
}

/// Put the previous pair back, reload again, and check that it is served again.
async fn rollback(
    state: &StateDir,
    cert: &CertificateConfig,
    plan: &reload::Plan,
    target: &verify::Target,
    settings: &VerifyConfig,
    error: String,
) -> Result<Option<String>, Undelivered> {
    let Some(previous) = install::previous_pair(state, cert) else {
        return Err(Undelivered::Failed(format!("{error}; there is no previous pair to restore, so the new one stays installed")));
    };
    let old = match inspect_pair(&previous.0, std::str::from_utf8(&previous.1).ok()) {
        Ok(old) if old.leaf.remaining(SystemTime::now()).is_zero() => {
            return Err(Undelivered::Failed(format!(
                "{error}; the previous certificate expired on {}, so the new one stays installed",
                fmt_time(old.leaf.not_after)
            )));
        }
        Ok(old) => old,
        Err(e) => return Err(Undelivered::Failed(format!("{error}; the previous pair is unusable ({e}), so the new one stays installed"))),
    };
    install::restore_previous(cert, &previous, &plan.in_place)
        .map_err(|e| Undelivered::Failed(format!("{error}; rollback failed: {e}")))?;
    let reloaded = plan.run(&cert.name).await;
    let report = verify::verify_until(target, Some(&old.leaf.sha256), settings.timeout).await;
    let restored = match (reloaded, report.ok()) {
        (Ok(()), true) => format!("the previous certificate (serial {}) is installed and served again", old.leaf.serial),
        (Err(e), _) => format!("the previous certificate (serial {}) is installed again, but reloading failed too: {e}", old.leaf.serial),
        (Ok(()), false) => format!(
            "the previous certificate (serial {}) is installed again, but it is not served correctly either: {}",
            old.leaf.serial,
            report.problems.join("; ")
        ),
    };
    tracing::error!(cert = %cert.name, %error, %restored, "rolled back");
    Err(Undelivered::RolledBack { error, restored })
}

/// Tell every `[[notify]]` about each renewal result.
pub async fn notify_reports(config: &Config, reports: &[CertReport]) {
    for report in reports {
        let cert = config.certificates.iter().find(|c| c.name == report.name);
        if let Some(event) = cert.and_then(|c| event_for(c, report)) {
            notify::send(&config.notify, &event).await;
        }
    }
}

/// The notification for a renewal result (none for "not due").
fn event_for(cert: &CertificateConfig, report: &CertReport) -> Option<notify::Event> {
    Some(match &report.outcome {
        Outcome::Renewed { serial, not_after, .. } => event(cert, EventKind::Renewed, Some(serial), Some(*not_after), None),
        Outcome::Failed { error, .. } => event(cert, EventKind::Failed, None, None, Some(error.clone())),
        Outcome::RolledBack { error, restored, .. } => event(cert, EventKind::RolledBack, None, None, Some(format!("{error}; {restored}"))),
        Outcome::NotDue { .. } | Outcome::DryRun { .. } => return None,
    })
}

pub fn event(
    cert: &CertificateConfig,
    kind: EventKind,
    serial: Option<&str>,
    not_after: Option<u64>,
    error: Option<String>,
) -> notify::Event {
    let now = crate::certinfo::unix(SystemTime::now());
    // Without a new certificate, report on the one installed.
    let installed = install::read_installed(&cert.install).ok().flatten();
    let not_after = not_after.or(installed.as_ref().map(|i| i.leaf.not_after));
    notify::Event {
        event: kind,
        certificate: cert.name.clone(),
        domains: cert.domains.clone(),
        host: notify::hostname(),
        time: notify::rfc3339(now),
        serial: serial.map(str::to_owned).or(installed.map(|i| i.leaf.serial)),
        not_after: not_after.map(notify::rfc3339),
        days_left: not_after.map(|t| (t as i64 - now as i64).div_euclid(86_400)),
        error,
    }
}
