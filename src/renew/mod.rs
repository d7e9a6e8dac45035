//! One pass of the renewal pipeline over the selected certificates: plan (the policy,
//! synchronous) → prepare the delivery (reload actions and the verification checked before
//! ordering) → obtain → keep → install → deliver (reload → verify → roll back), at most
//! `concurrency` certificates at once, one certificate's trouble never stopping the others.
//!
//! `regcert renew` is one pass; each check of `regcert run` is one pass over what its triage
//! found due. Planning reads only the installed files, so a pass in which nothing is due never
//! starts an async runtime, loads trust roots or talks to a CA.

mod deliver;
pub mod pending;
pub mod report;
pub mod windows;

use std::time::SystemTime;

use futures_util::StreamExt;
use zeroize::Zeroizing;

pub use report::{CertReport, Error, Outcome, summary};

use crate::certinfo::key_type_of_spki_der;
use crate::config::{CertificateConfig, Config};
use crate::install::Installed;
use crate::install::{self, inspect_pair};
use crate::keys::LeafKey;
use crate::obtain::{Issuer, Issuers, Predecessor};
use crate::pair::MatchedPair;
use crate::policy::{Decision, Origin, Reason, decide};
use crate::progress::{self, step};
use crate::state::{Issued, StateDir};
use crate::{reload, trust, verify};
use deliver::{Live, Rollback, Undelivered};

#[derive(Debug, Clone, Copy, Default)]
pub struct RenewOptions {
    pub force: bool,
    pub dry_run: bool,
}

/// The selected certificates, each with what the policy decided for it.
pub type Plan<'c> = Vec<(&'c CertificateConfig, Decision)>;

/// The delivery of one certificate, checked before anything is ordered or installed.
struct Prepared {
    reload: reload::Plan,
    settings: Option<crate::config::VerifyConfig>,
}

/// The decision for each selected certificate, from what is installed now.
pub fn plan<'c>(state: &StateDir, issuers: &Issuers, certs: &[&'c CertificateConfig], opts: RenewOptions, now: SystemTime) -> Plan<'c> {
    certs
        .iter()
        .map(|cert| {
            let installed = install::read_installed(&cert.install);
            (*cert, decision(state, issuers, cert, &installed, now, opts.force))
        })
        .collect()
}

/// The renewal policy's decision for `cert` given what is installed, with what state_dir knows
/// of the CA the installed certificate came from (the record of the last issuance, when that is
/// the installed certificate): one issued by a CA that is not in the certificate's `issuer`
/// list is due; one from a fallback CA of the list is judged against that CA.
pub fn decision(
    state: &StateDir,
    issuers: &Issuers,
    cert: &CertificateConfig,
    installed: &Result<Option<Installed>, String>,
    now: SystemTime,
    force: bool,
) -> Decision {
    let leaf = installed.as_ref().ok().and_then(Option::as_ref).map(|i| &i.leaf);
    // A run that died mid-install: install and deliver again.
    if !force && install::interrupted(state, &cert.name) {
        return Decision::Due(Reason::Interrupted);
    }
    let decided = policy_decision(state, issuers, cert, installed, now, force);
    // An installed pair whose reload was held for the window: its reload is the work now.
    if let Decision::NotDue { .. } = decided
        && let Some(p) = pending::load(state, &cert.name).filter(|p| leaf.is_some_and(|l| l.sha256 == p.sha256))
        && let Some(why) = pending::ripe(&p, pending::window_of(cert).as_ref(), now)
    {
        return Decision::Due(Reason::ReloadPending { installed_at: p.installed_at, why });
    }
    decided
}

/// The renewal policy alone for `installed` (the certificate, not this host's install of it:
/// no interrupted install, no held reload), judged against the CA state_dir records it from.
/// A fleet's leader judges the fleet's certificate with it.
pub fn policy_decision(
    state: &StateDir,
    issuers: &Issuers,
    cert: &CertificateConfig,
    installed: &Result<Option<Installed>, String>,
    now: SystemTime,
    force: bool,
) -> Decision {
    let leaf = installed.as_ref().ok().and_then(Option::as_ref).map(|i| &i.leaf);
    let recorded = leaf.and_then(|l| state.meta_for(&cert.name, &l.sha256));
    let issuer = issuers.by_origin(cert, recorded.as_ref().map(|m| m.directory.as_str())).ok();
    let configured = issuer.map(Issuer::origin);
    let origin = match (&recorded, &configured) {
        (Some(meta), Some(configured)) => Some(Origin {
            installed: &meta.directory,
            configured,
            installed_profile: meta.profile.as_deref(),
            configured_profile: issuer.and_then(|i| i.profile(cert)),
        }),
        _ => None,
    };
    decide(cert, installed.as_ref().map(Option::as_ref).map_err(Clone::clone), origin, now, force)
}

/// What a killed run may have left, removed before a pass: temp files in state_dir and in the
/// install dirs of `certs`. Only with the state lock held.
pub fn tidy<'c>(state: &StateDir, certs: impl IntoIterator<Item = &'c CertificateConfig>) {
    state.remove_stale_temps();
    for cert in certs {
        crate::fsutil::remove_stale_temps(&cert.install.dir);
    }
}

/// [`tidy`] for one certificate about to be worked on: its install dir and its state. The
/// daemon sweeps everything once at start-up and then only what it works on, because a sweep
/// of every directory on every check costs more than the whole check otherwise does.
pub fn tidy_certificate(state: &StateDir, cert: &CertificateConfig) {
    state.remove_stale_temps_of(&cert.name);
    crate::fsutil::remove_stale_temps(&cert.install.dir);
}

/// The reports of a plan in which nothing is due — made without a runtime; `None` when
/// something is due and the plan needs [`Renewer::run_once`].
pub fn without_work(state: &StateDir, plan: &Plan<'_>) -> Option<Vec<CertReport>> {
    plan.iter().map(|(cert, decision)| settled(state, cert, decision.clone()).ok()).collect()
}

/// The report of a certificate that needs no work, or why it needs some.
fn settled(state: &StateDir, cert: &CertificateConfig, decision: Decision) -> Result<CertReport, Reason> {
    match decision {
        Decision::NotDue { due_at, not_after } => {
            // A reload held for the window that is not due yet (a ripe one makes the decision Due).
            let reload_pending = pending::load(state, &cert.name).map(|p| p.until);
            Ok(CertReport { name: cert.name.clone(), outcome: Outcome::NotDue { not_after, due_at, reload_pending } })
        }
        Decision::Due(reason) => Err(reason),
    }
}

/// What [`Renewer::obtain`] got, and from which issuer.
enum Obtained<'i> {
    Issued { issued: Issued, from_store: bool, by: &'i Issuer },
    DryRun(Outcome),
}

/// Everything one pass shares: config, state, and the issuers (built on first need).
pub struct Renewer<'a> {
    config: &'a Config,
    state: &'a StateDir,
    issuers: &'a Issuers,
    opts: RenewOptions,
}

impl<'a> Renewer<'a> {
    pub fn new(config: &'a Config, state: &'a StateDir, issuers: &'a Issuers, opts: RenewOptions) -> Self {
        Self { config, state, issuers, opts }
    }

    /// Work through `plan`: renew what is due, at most `concurrency` at once; reports keep
    /// the plan's order.
    pub async fn run_once(&self, plan: Plan<'_>) -> Vec<CertReport> {
        // Futures made by a plain iterator (not an async closure) keep this spawnable.
        let jobs: Vec<_> = plan.into_iter().enumerate().map(|(i, (cert, decision))| self.numbered(i, cert, decision)).collect();
        // Unordered: a finished certificate frees its slot at once. (`buffered` holds a finished
        // one until every earlier one is done, so one slow certificate would stall the rest.)
        let mut done: Vec<(usize, CertReport)> = futures_util::stream::iter(jobs).buffer_unordered(self.config.concurrency).collect().await;
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, report)| report).collect()
    }

    async fn numbered(&self, i: usize, cert: &CertificateConfig, decision: Decision) -> (usize, CertReport) {
        (i, self.work(cert, decision).await)
    }

    async fn work(&self, cert: &CertificateConfig, decision: Decision) -> CertReport {
        let reason = match settled(self.state, cert, decision) {
            Ok(report) => return report,
            Err(reason) => reason,
        };
        let outcome = match self.renew_one(cert, &reason).await {
            Ok(o) => o,
            Err(error) => {
                tracing::error!(cert = %cert.name, %error, "renewal failed");
                Outcome::Failed { reason, error }
            }
        };
        CertReport { name: cert.name.clone(), outcome }
    }

    async fn renew_one(&self, cert: &CertificateConfig, reason: &Reason) -> Result<Outcome, Error> {
        if let Reason::ReloadPending { .. } = reason {
            return self.finish_pending(cert, reason).await;
        }
        tracing::info!(cert = %cert.name, %reason, "renewal due");
        // A host condition (an install dir not mounted or not writable, a key file missing)
        // fails this certificate only, before anything is ordered; the next attempt checks again.
        let blocked = crate::config::host_problems(self.config, cert);
        if !blocked.is_empty() {
            return Err(Error::Step(blocked.join("; ")));
        }
        // The first issuer stands for all of them until one has issued: a list holds only ACME CAs.
        let issuer = self.issuers.of(cert)?;
        let prepared = self.prepare(cert, issuer).await?;
        // A run that died mid-install: the install dir gets a matching pair again first.
        let interrupted = !self.opts.dry_run && install::interrupted(self.state, &cert.name);
        if interrupted {
            install::recover(self.state, cert, &prepared.reload.in_place)?;
        }
        // Everything up to a certificate in hand is bounded: a CA (or DNS, or a hook) that stalls
        // fails this certificate, not the pass. What follows is bounded step by step (the reload
        // actions' and the verification's own timeouts), so a rollback is never cut off.
        let obtained = self.bounded(cert, self.obtain(cert, reason, interrupted)).await?;
        match obtained {
            Obtained::Issued { issued, from_store, by } => self.install_and_deliver(cert, reason, prepared, &issued, from_store, by).await,
            Obtained::DryRun(outcome) => Ok(outcome),
        }
    }

    /// [`Renewer::issue`] within `renewal_timeout`, for the leader of a fleet: a new certificate
    /// from the first CA of `cert`'s list that can issue, kept in state_dir, never installed here.
    pub async fn issue_bounded(&self, cert: &CertificateConfig, reason: &Reason) -> Result<(Issued, &'a Issuer), Error> {
        match self.bounded(cert, self.issue(cert, reason)).await? {
            Obtained::Issued { issued, by, .. } => Ok((issued, by)),
            Obtained::DryRun(_) => Err(Error::Step("a dry run issues nothing for the fleet".into())),
        }
    }

    /// Install and deliver a certificate issued elsewhere (by the fleet's leader): the same
    /// checks, install, reload window, reload → verify → roll back as a renewal of this host's own.
    pub async fn deliver_issued(&self, cert: &CertificateConfig, reason: &Reason, issued: &Issued, by: &Issuer) -> Result<Outcome, Error> {
        let blocked = crate::config::host_problems(self.config, cert);
        if !blocked.is_empty() {
            return Err(Error::Step(blocked.join("; ")));
        }
        let prepared = self.prepare(cert, by).await?;
        if install::interrupted(self.state, &cert.name) {
            install::recover(self.state, cert, &prepared.reload.in_place)?;
        }
        self.install_and_deliver(cert, reason, prepared, issued, true, by).await
    }

    /// `work` within `renewal_timeout`; past it, an error that says what it was doing.
    async fn bounded<T>(&self, cert: &CertificateConfig, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let limit = self.config.renewal_timeout;
        progress::bounded(limit, work).await.map_err(|t| {
            Error::Step(format!(
                "{} timed out after {} while {} (renewal_timeout); the installed certificate is unchanged and the renewal will be retried",
                self.labels(cert),
                humantime::format_duration(t.after),
                t.step
            ))
        })?
    }

    /// Check the delivery before ordering: a wrong container name must not cost an issuance.
    async fn prepare(&self, cert: &CertificateConfig, issuer: &Issuer) -> Result<Prepared, Error> {
        step("checking the reload and the verification before ordering");
        let reload = reload::prepare(cert).await?;
        crate::trust::preflight(cert)?;
        let settings = cert.verify_settings();
        if let Some(s) = &settings {
            verify::Target::for_certificate(cert, s, issuer.trust_anchor())?;
        }
        Ok(Prepared { reload, settings })
    }

    /// Install `issued` (from `issuer`) → hold for the reload window, or reload → verify → roll back.
    async fn install_and_deliver(
        &self,
        cert: &CertificateConfig,
        reason: &Reason,
        prepared: Prepared,
        issued: &Issued,
        from_store: bool,
        issuer: &Issuer,
    ) -> Result<Outcome, Error> {
        let Prepared { reload, settings } = prepared;
        // Verification and client trust follow the CA that issued it.
        let verify = match &settings {
            Some(s) => Some((verify::Target::for_certificate(cert, s, issuer.trust_anchor())?, s.timeout)),
            None => None,
        };
        step("installing");
        let new =
            MatchedPair::check(issued.fullchain_pem().into_bytes(), Zeroizing::new(issued.key_pem.as_bytes().to_vec()), SystemTime::now())
                .map_err(|e| format!("the issued pair is not installed: {e}"))?;
        // What the registry serves until it reloads: the pair waiting since an earlier install
        // was never served, so the one before it still is.
        let installed = install::read_installed(&cert.install).ok().flatten();
        let waiting = pending::load(self.state, &cert.name).filter(|p| installed.as_ref().is_some_and(|i| i.leaf.sha256 == p.sha256));
        let served = match waiting {
            Some(p) => p.served,
            None => {
                // A record for a pair that is no longer installed (replaced by hand) is stale.
                pending::clear(self.state, &cert.name);
                installed.map(|i| (i.leaf.not_before, i.leaf.not_after))
            }
        };
        let unkept = install::install(self.state, cert, &new, &reload.in_place)?;
        if let Some(outcome) = self.hold(cert, reason, issued, served, issuer) {
            return Ok(outcome);
        }
        pending::clear(self.state, &cert.name);
        let registry = Live { cert: &cert.name, reload: &reload, verify };
        let enabled = settings.as_ref().is_some_and(|s| s.rollback);
        let rollback = Rollback { state: self.state, cert, enabled, in_place: &reload.in_place, unkept };
        let m = &issued.meta;
        let delivered = deliver::deliver(&registry, &rollback, &m.sha256).await;
        // Whatever came of it, the delivery is over: nothing for the next run to repeat.
        install::finish(self.state, cert);
        match delivered {
            Ok(verified) => {
                trust::sync_clients(cert, issuer)?;
                Ok(Outcome::Renewed {
                    reason: reason.clone(),
                    not_after: m.not_after,
                    serial: m.serial.clone(),
                    issued_by: issuer.label(),
                    fullchain: cert.install.fullchain_path(),
                    from_store,
                    reloaded: !reload.is_empty(),
                    verified,
                })
            }
            Err(Undelivered::RolledBack { error, restored }) => Ok(Outcome::RolledBack { reason: reason.clone(), error, restored }),
            Err(Undelivered::Failed(error)) if settings.is_some() => Err(Error::NotVerified(error)),
            Err(Undelivered::Failed(error)) => Err(Error::Step(error)),
        }
    }

    /// Just installed: hold the reload for the window, when one applies and the registry can
    /// keep serving what it has until then. The install is over either way (its journal goes).
    fn hold(&self, cert: &CertificateConfig, reason: &Reason, issued: &Issued, served: Option<(u64, u64)>, by: &Issuer) -> Option<Outcome> {
        let window = pending::window_of(cert).filter(|_| pending::may_hold(reason))?;
        let now = SystemTime::now();
        let until = pending::hold_until(&window, served, now)?;
        let m = &issued.meta;
        let record = pending::PendingReload {
            sha256: m.sha256.clone(),
            serial: m.serial.clone(),
            installed_at: crate::certinfo::unix(now),
            until,
            window: window.to_string(),
            served,
        };
        if let Err(error) = pending::save(self.state, &cert.name, &record) {
            tracing::warn!(cert = %cert.name, %error, "reloading now instead of in the window");
            return None;
        }
        install::finish(self.state, cert);
        tracing::info!(cert = %cert.name, window = %window, until = %crate::certinfo::fmt_time(until), "installed; the restart waits for the reload window");
        Some(Outcome::ReloadPending {
            reason: reason.clone(),
            not_after: m.not_after,
            serial: m.serial.clone(),
            issued_by: by.label(),
            fullchain: cert.install.fullchain_path(),
            until,
        })
    }

    /// The reload held for the window, now: reload → verify → roll back to the known-good pair
    /// (the one the registry served until now) when the installed pair is not served correctly.
    async fn finish_pending(&self, cert: &CertificateConfig, reason: &Reason) -> Result<Outcome, Error> {
        tracing::info!(cert = %cert.name, %reason, "reloading the certificate installed earlier");
        let installed = install::read_installed(&cert.install)?.ok_or_else(|| "the installed certificate is gone".to_owned())?;
        let issuer = self.issuers.that_issued(cert, Some(&installed.leaf.sha256))?;
        let reload = reload::prepare(cert).await?;
        let settings = cert.verify_settings();
        let verify = match &settings {
            Some(s) => Some((verify::Target::for_certificate(cert, s, issuer.trust_anchor())?, s.timeout)),
            None => None,
        };
        let registry = Live { cert: &cert.name, reload: &reload, verify };
        let enabled = settings.as_ref().is_some_and(|s| s.rollback);
        let rollback = Rollback { state: self.state, cert, enabled, in_place: &reload.in_place, unkept: None };
        let delivered = deliver::deliver(&registry, &rollback, &installed.leaf.sha256).await;
        match delivered {
            Ok(verified) => {
                pending::clear(self.state, &cert.name);
                trust::sync_clients(cert, issuer)?;
                Ok(Outcome::Renewed {
                    reason: reason.clone(),
                    not_after: installed.leaf.not_after,
                    serial: installed.leaf.serial,
                    issued_by: issuer.label(),
                    fullchain: cert.install.fullchain_path(),
                    from_store: false,
                    reloaded: !reload.is_empty(),
                    verified,
                })
            }
            Err(Undelivered::RolledBack { error, restored }) => {
                pending::clear(self.state, &cert.name);
                Ok(Outcome::RolledBack { reason: reason.clone(), error, restored })
            }
            // Still pending: the next pass tries again (the daemon after its backoff).
            Err(Undelivered::Failed(error)) if settings.is_some() => Err(Error::NotVerified(error)),
            Err(Undelivered::Failed(error)) => Err(Error::Step(error)),
        }
    }

    /// `cert`'s issuers as people read them, in the order they are tried.
    fn labels(&self, cert: &CertificateConfig) -> String {
        let labels: Vec<String> = self.issuers.in_turn(cert).unwrap_or_default().into_iter().map(Issuer::label).collect();
        labels.join(", then ")
    }

    /// The certificate to install: kept from an earlier issuance, or issued now by the first
    /// issuer of `cert`'s list that can (and kept at once, so a failed install never costs a
    /// second issuance). A dry run ends here.
    async fn obtain(&self, cert: &CertificateConfig, reason: &Reason, interrupted: bool) -> Result<Obtained<'a>, Error> {
        if !self.opts.dry_run
            && let Some((issued, by)) = (!self.opts.force).then(|| self.stored_replacement(cert, interrupted)).flatten()
        {
            return Ok(Obtained::Issued { issued, from_store: true, by });
        }
        self.issue(cert, reason).await
    }

    /// A new certificate from the first issuer of `cert`'s list that can issue (each failure
    /// that is the CA's own goes on to the next), kept in state_dir at once.
    async fn issue(&self, cert: &CertificateConfig, reason: &Reason) -> Result<Obtained<'a>, Error> {
        let issuers = self.issuers.in_turn(cert)?;
        let mut tried = Vec::new();
        for (i, issuer) in issuers.iter().enumerate() {
            let next = issuers.get(i + 1);
            match self.obtain_from(cert, issuer, reason).await {
                Ok(obtained) => {
                    if !tried.is_empty() {
                        tracing::info!(cert = %cert.name, ca = %issuer.label(), "issued by a fallback CA: the ones before it could not issue");
                    }
                    return Ok(obtained);
                }
                Err(Error::Obtain(e)) if next.is_some() && e.falls_through() => {
                    let next = next.map(|n| n.label()).unwrap_or_default();
                    tracing::warn!(cert = %cert.name, ca = %issuer.label(), error = %e, next = %next, "this CA cannot issue; trying the next one");
                    tried.push((issuer.label(), e));
                }
                Err(Error::Obtain(e)) if !tried.is_empty() => {
                    tried.push((issuer.label(), e));
                    return Err(Error::Obtain(crate::obtain::Error::every_ca(tried)));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Step(format!("[[certificate]] `{}`: no issuer to try", cert.name)))
    }

    /// [`Renewer::obtain`] from one issuer.
    async fn obtain_from(&self, cert: &CertificateConfig, issuer: &'a Issuer, reason: &Reason) -> Result<Obtained<'a>, Error> {
        if self.opts.dry_run {
            // Never finalized against a production CA, never a `replaces` for the live certificate.
            let trial = issuer.trial(cert, self.leaf_key(cert).await?).await?;
            tracing::info!(cert = %cert.name, ca = %issuer.label(), how = %trial.how, "dry run: not storing or installing");
            let m = trial.issued.map(|i| i.meta);
            return Ok(Obtained::DryRun(Outcome::DryRun {
                reason: reason.clone(),
                not_after: m.as_ref().map(|m| m.not_after),
                serial: m.map(|m| m.serial),
                how: trial.how,
            }));
        }
        let key = self.leaf_key(cert).await?;
        // The installed certificate, and the ACME account that issued it when state_dir knows:
        // each CA names it in `replaces` only when its own account issued it.
        let current = install::read_installed(&cert.install).ok().flatten();
        let meta = current.as_ref().and_then(|c| self.state.load_meta(&cert.name).filter(|m| m.sha256 == c.leaf.sha256));
        let predecessor = current.as_ref().map(|c| Predecessor {
            leaf: &c.leaf_der,
            issued_by: meta.as_ref().and_then(|m| Some((m.directory.as_str(), m.account.as_deref()?))),
        });
        let issued = issuer.issue(cert, key, predecessor).await?;
        step("storing the issued certificate");
        self.state
            .save_issued(&issued)
            .map_err(|e| format!("cannot keep the issued certificate in {}: {e}", self.state.cert_dir(&cert.name).display()))?;
        Ok(Obtained::Issued { issued, from_store: false, by: issuer })
    }

    /// A certificate issued earlier but never installed (say, the install dir was read-only)
    /// is installed instead of ordering again, as long as the policy would keep it. After an
    /// interrupted install it is delivered again even when it is what is installed (a first
    /// install, with no known-good pair to put back, killed before its reload).
    fn stored_replacement(&self, cert: &CertificateConfig, interrupted: bool) -> Option<(Issued, &'a Issuer)> {
        let stored = self.state.load_issued(&cert.name)?;
        let pair = inspect_pair(stored.fullchain_pem().as_bytes(), Some(&stored.key_pem)).ok()?;
        let installed = install::read_installed(&cert.install).ok().flatten();
        if !interrupted && installed.is_some_and(|i| i.leaf.sha256 == pair.leaf.sha256) {
            return None;
        }
        // Kept from a CA the list does not name (staging before production, say): not what the
        // config wants now.
        let issuer = self.issuers.by_origin(cert, Some(&stored.meta.directory)).ok()?;
        let configured = issuer.origin();
        let origin = Origin {
            installed: &stored.meta.directory,
            configured: &configured,
            installed_profile: stored.meta.profile.as_deref(),
            configured_profile: issuer.profile(cert),
        };
        matches!(decide(cert, Ok(Some(&pair)), Some(origin), SystemTime::now(), false), Decision::NotDue { .. }).then_some((stored, issuer))
    }

    /// A fresh key, or with `reuse_key` the last one (when it is still of the configured type).
    async fn leaf_key(&self, cert: &CertificateConfig) -> Result<LeafKey, Error> {
        if cert.reuse_key
            && let Some(key) = self.state.load_key_pem(&cert.name).and_then(|pem| LeafKey::from_pem(&pem).ok())
            && key_type_of_spki_der(&key.spki_der()) == Some(cert.key)
        {
            return Ok(key);
        }
        let kind = cert.key;
        step("generating the key");
        // RSA generation takes long enough to stall other certificates' network I/O.
        tokio::task::spawn_blocking(move || LeafKey::generate(kind))
            .await
            .map_err(|e| format!("key generation task failed: {e}"))?
            .map_err(|e| Error::Step(format!("cannot generate a {kind} key: {e}")))
    }
}
