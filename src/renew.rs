//! The renewal pipeline: decide → obtain → (keep) → install, per certificate.
//!
//! Planning is synchronous and cheap (read the installed files, apply the policy), so a run in
//! which nothing is due never starts an async runtime, loads trust roots or talks to the CA.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::certinfo::{fmt_time, key_type_of_spki_der};
use crate::challenge::Solver;
use crate::config::{CertificateConfig, Config};
use crate::install::{self, inspect_pair};
use crate::keys::LeafKey;
use crate::obtain::acme::AcmeIssuer;
use crate::obtain::{account, tls};
use crate::policy::{Decision, Reason, decide};
use crate::state::{Issued, StateDir};

#[derive(Debug, Clone, Copy, Default)]
pub struct RenewOptions {
    pub force: bool,
    pub dry_run: bool,
}

/// What happened to one certificate.
#[derive(Debug)]
pub enum Outcome {
    NotDue { not_after: u64, due_at: u64 },
    Renewed { reason: Reason, not_after: u64, serial: String, fullchain: PathBuf },
    /// Installed material issued earlier and kept in state_dir (a previous install had failed).
    InstalledStored { reason: Reason, not_after: u64, serial: String, fullchain: PathBuf },
    DryRun { reason: Reason, not_after: u64, serial: String },
    Failed { reason: Reason, error: String },
}

#[derive(Debug)]
pub struct CertReport {
    pub name: String,
    pub outcome: Outcome,
}

impl CertReport {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

impl fmt::Display for CertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.outcome {
            Outcome::NotDue { not_after, due_at } => {
                write!(f, "{name}: not due; expires {}, renewal due {}", fmt_time(*not_after), fmt_time(*due_at))
            }
            Outcome::Renewed { reason, not_after, serial, fullchain } => write!(
                f,
                "{name}: renewed ({reason}); serial {serial}, expires {}; installed {}",
                fmt_time(*not_after),
                fullchain.display()
            ),
            Outcome::InstalledStored { reason, not_after, serial, fullchain } => write!(
                f,
                "{name}: installed the certificate already issued and kept in state_dir ({reason}); serial {serial}, expires {}; installed {}",
                fmt_time(*not_after),
                fullchain.display()
            ),
            Outcome::DryRun { reason, not_after, serial } => write!(
                f,
                "{name}: obtained ({reason}); serial {serial}, expires {} — dry run: nothing stored or installed",
                fmt_time(*not_after)
            ),
            Outcome::Failed { reason, error } => write!(f, "{name}: FAILED ({reason}): {error}"),
        }
    }
}

/// One line for the end of a run.
pub fn summary(reports: &[CertReport], opts: RenewOptions) -> String {
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let renewed = count(|o| matches!(o, Outcome::Renewed { .. } | Outcome::InstalledStored { .. }));
    let dry = count(|o| matches!(o, Outcome::DryRun { .. }));
    let not_due = count(|o| matches!(o, Outcome::NotDue { .. }));
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
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
        futures_util::stream::iter(due)
            .map(|(cert, reason)| async move {
                let outcome = match self.renew_one(cert, &reason).await {
                    Ok(o) => o,
                    Err(error) => {
                        tracing::error!(cert = %cert.name, %error, "renewal failed");
                        Outcome::Failed { reason, error }
                    }
                };
                CertReport { name: cert.name.clone(), outcome }
            })
            .buffered(self.config.concurrency)
            .collect()
            .await
    }

    async fn renew_one(&self, cert: &CertificateConfig, reason: &Reason) -> Result<Outcome, String> {
        tracing::info!(cert = %cert.name, %reason, "renewal due");
        if !self.opts.force && !self.opts.dry_run {
            if let Some(stored) = self.stored_replacement(cert) {
                self.install(cert, &stored)?;
                let m = stored.meta;
                let fullchain = cert.install.fullchain_path();
                return Ok(Outcome::InstalledStored { reason: reason.clone(), not_after: m.not_after, serial: m.serial, fullchain });
            }
        }
        let issuer = self.issuer().await?;
        let key = self.leaf_key(cert).await?;
        let issued = issuer.issue(cert, key).await?;
        let (not_after, serial) = (issued.meta.not_after, issued.meta.serial.clone());
        if self.opts.dry_run {
            tracing::info!(cert = %cert.name, "dry run: not storing or installing");
            return Ok(Outcome::DryRun { reason: reason.clone(), not_after, serial });
        }
        self.state
            .save_issued(&issued)
            .map_err(|e| format!("cannot keep the issued certificate in {}: {e}", self.state.cert_dir(&cert.name).display()))?;
        self.install(cert, &issued)?;
        Ok(Outcome::Renewed { reason: reason.clone(), not_after, serial, fullchain: cert.install.fullchain_path() })
    }

    fn install(&self, cert: &CertificateConfig, issued: &Issued) -> Result<(), String> {
        install::install(self.state, cert, issued.fullchain_pem().as_bytes(), issued.key_pem.as_bytes())
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

    async fn issuer(&self) -> Result<&AcmeIssuer, String> {
        let init = self.issuer.get_or_init(|| async {
            let acme = &self.config.acme;
            let roots = tls::root_store(acme.ca_bundle.as_deref()).map_err(|e| format!("[acme] ca_bundle: {e}"))?;
            let account = account::load_or_create(self.state, acme, || tls::acme_http_client(roots.clone())).await?;
            let solver = Solver::from_config(&self.config.http01);
            Ok(AcmeIssuer::new(account, acme.directory_url().to_owned(), solver))
        });
        init.await.as_ref().map_err(Clone::clone)
    }
}
