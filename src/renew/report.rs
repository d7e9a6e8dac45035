//! What a pass did to each certificate, for people (Display, the run's summary line) and for
//! the daemon, metrics and notifications (typed).

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::RenewOptions;
use crate::certinfo::fmt_time;
use crate::policy::Reason;

/// Why a renewal failed. The CA's errors stay typed, so the daemon can honour a rate limit's
/// Retry-After; the other steps (reload preflight, storing, installing, delivering) only ever
/// get reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Obtain(#[from] crate::obtain::Error),
    #[error("{0}")]
    Step(String),
    /// Installed, but verification did not show the registry serving it, and the new pair
    /// stayed (no rollback: off, or nothing to roll back to).
    #[error("{0}")]
    NotVerified(String),
}

impl Error {
    /// When the CA asked to be left alone until.
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            Error::Obtain(e) => e.retry_after(),
            Error::Step(_) | Error::NotVerified(_) => None,
        }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Step(s)
    }
}

/// What happened to one certificate.
#[derive(Debug)]
pub enum Outcome {
    NotDue {
        not_after: u64,
        due_at: u64,
        /// Installed earlier; its restart waits for the reload window until then.
        reload_pending: Option<u64>,
    },
    Renewed {
        reason: Reason,
        not_after: u64,
        serial: String,
        /// The CA that issued it, as people read it (`ACME "NAME" (https://…)`).
        issued_by: String,
        fullchain: PathBuf,
        /// Installed material issued earlier and kept in state_dir (a previous install had failed).
        from_store: bool,
        reloaded: bool,
        /// What verification proved: "URL serves it" (a client certificate: "accepts it").
        verified: Option<String>,
    },
    /// `renew --dry-run`: a certificate only when it was safe to get one (a private CA, Let's
    /// Encrypt's staging CA); `how` says what was done.
    DryRun {
        reason: Reason,
        not_after: Option<u64>,
        serial: Option<String>,
        how: String,
    },
    /// Installed; the registry keeps serving the previous certificate until the reload window
    /// opens at `until` (Unix time), when the reload and the verification happen.
    ReloadPending {
        reason: Reason,
        not_after: u64,
        serial: String,
        issued_by: String,
        fullchain: PathBuf,
        until: u64,
    },
    /// The new certificate failed after installing; the previous pair was put back.
    RolledBack {
        reason: Reason,
        error: String,
        restored: String,
    },
    Failed {
        reason: Reason,
        error: Error,
    },
    /// Fleet mode: nothing for this node to do yet (the leader has not published, another node
    /// holds the reload slot, the rollout is halted, etcd is unreachable).
    Waiting {
        why: String,
        /// Another node holds the reload slot: this node's turn comes within the rollout, and
        /// `regcert renew` waits for it (bounded) rather than report and exit.
        for_turn: bool,
    },
}

impl Outcome {
    /// [`Outcome::Waiting`] for anything but this node's turn.
    pub fn waiting(why: impl Into<String>) -> Outcome {
        Outcome::Waiting { why: why.into(), for_turn: false }
    }
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
            Outcome::NotDue { not_after, due_at, reload_pending } => {
                write!(f, "{name}: not due; expires {}, renewal due {}", fmt_time(*not_after), fmt_time(*due_at))?;
                match reload_pending {
                    Some(until) => write!(f, "; installed, reload pending until {} (the reload window)", fmt_time(*until)),
                    None => Ok(()),
                }
            }
            Outcome::Renewed { reason, not_after, serial, issued_by, fullchain, from_store, reloaded, verified } => {
                let what = match reason {
                    Reason::ReloadPending { .. } => "reloaded the certificate installed earlier",
                    Reason::Fleet { .. } => "installed the fleet's certificate",
                    _ if *from_store => "installed the certificate already issued and kept in state_dir",
                    _ => "renewed",
                };
                write!(
                    f,
                    "{name}: {what} ({reason}); serial {serial}, expires {}, issued by {issued_by}; installed {}",
                    fmt_time(*not_after),
                    fullchain.display()
                )?;
                if *reloaded {
                    write!(f, "; reloaded")?;
                }
                match verified {
                    Some(proof) => write!(f, "; verified: {proof}"),
                    None => Ok(()),
                }
            }
            Outcome::DryRun { reason, not_after: Some(not_after), serial: Some(serial), how } => write!(
                f,
                "{name}: obtained ({reason}); serial {serial}, expires {}; {how} — dry run: nothing stored or installed",
                fmt_time(*not_after)
            ),
            Outcome::DryRun { reason, how, .. } => write!(f, "{name}: due ({reason}); {how} — dry run: nothing stored or installed"),
            Outcome::ReloadPending { reason, not_after, serial, issued_by, fullchain, until } => write!(
                f,
                "{name}: renewed ({reason}); serial {serial}, expires {}, issued by {issued_by}; installed {}, reload pending until {} (the reload window)",
                fmt_time(*not_after),
                fullchain.display(),
                fmt_time(*until)
            ),
            Outcome::RolledBack { reason, error, restored } => write!(f, "{name}: FAILED ({reason}) and ROLLED BACK: {error}; {restored}"),
            Outcome::Failed { reason, error } => write!(f, "{name}: FAILED ({reason}): {error}"),
            Outcome::Waiting { why, .. } => write!(f, "{name}: waiting: {why}"),
        }
    }
}

/// One line for the end of a run.
pub fn summary(reports: &[CertReport], opts: RenewOptions) -> String {
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let renewed = count(|o| matches!(o, Outcome::Renewed { .. } | Outcome::ReloadPending { .. }));
    let pending = count(|o| matches!(o, Outcome::ReloadPending { .. }));
    let dry = count(|o| matches!(o, Outcome::DryRun { .. }));
    let not_due = count(|o| matches!(o, Outcome::NotDue { .. }));
    let waiting = count(|o| matches!(o, Outcome::Waiting { .. }));
    let failed = count(|o| matches!(o, Outcome::Failed { .. } | Outcome::RolledBack { .. }));
    if opts.dry_run {
        format!("dry run: {dry} tried, {not_due} not due, {failed} failed; nothing was installed")
    } else {
        let pending = if pending > 0 { format!(" ({pending} installed, reload pending)") } else { String::new() };
        let waiting = if waiting > 0 { format!(", {waiting} waiting") } else { String::new() };
        format!("{renewed} renewed{pending}, {not_due} not due{waiting}, {failed} failed")
    }
}
