//! Reloads held for `[certificate.reload] window`: the new pair is installed at once (the
//! registry keeps serving the old, still valid certificate until it restarts), and the
//! restart, the verification and, if that fails, the rollback happen in the window.
//!
//! The record lives in state_dir (`reload-pending.json`), apart from the install journal: the
//! install itself is over, so the next run does not repeat it. The known-good pair stays the
//! one the registry serves; a pair installed while another one waits is not kept as
//! known-good, because the registry never served it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::certinfo::{fmt_time, unix};
use crate::config::CertificateConfig;
use crate::fsutil::FileSpec;
use crate::policy::Reason;
use crate::reload::window::Window;
use crate::state::{PENDING_RELOAD, StateDir};

/// An installed pair waiting for its reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReload {
    /// The installed leaf that waits to be served.
    pub sha256: String,
    pub serial: String,
    pub installed_at: u64,
    /// When the reload is planned: the next opening of the window (Unix time).
    pub until: u64,
    /// The window, as configured when the pair was installed.
    pub window: String,
    /// Validity (not before, not after) of the certificate the registry still serves.
    pub served: Option<(u64, u64)>,
}

/// The reload still pending for `name`, if any.
pub fn load(state: &StateDir, name: &str) -> Option<PendingReload> {
    serde_json::from_slice(&state.read_record(name, PENDING_RELOAD)?).ok()
}

pub fn save(state: &StateDir, name: &str, p: &PendingReload) -> Result<(), String> {
    let path = state.pending_reload_path(name);
    let text = serde_json::to_vec_pretty(p).map_err(|e| e.to_string())?;
    state
        .write_record(name, PENDING_RELOAD, &text, FileSpec::PRIVATE)
        .map_err(|e| format!("cannot record the pending reload in {}: {e}", path.display()))
}

/// The reload is done (or superseded by a newer install).
pub fn clear(state: &StateDir, name: &str) {
    if let Err(e) = state.remove_record(name, PENDING_RELOAD) {
        let path = state.pending_reload_path(name);
        tracing::warn!(cert = %name, path = %path.display(), error = %e, "cannot remove the pending-reload record");
    }
}

/// The reload window of `cert`, when one applies: a window is configured and some reload
/// action restarts the registry (zero-downtime reloads are never held).
pub fn window_of(cert: &CertificateConfig) -> Option<Window> {
    cert.reload.as_ref().filter(|r| r.disrupts()).and_then(|r| r.window)
}

/// Would the served certificate (`served`: not before, not after) fail to last until `at`? It
/// must still have a tenth of its lifetime left then; with nothing served (or a served pair
/// that is broken), there is nothing to keep.
pub fn served_would_lapse(served: Option<(u64, u64)>, at: u64) -> bool {
    let Some((not_before, not_after)) = served else { return true };
    let tenth = not_after.saturating_sub(not_before) / 10;
    not_after.saturating_sub(at) < tenth.max(1)
}

/// Whether a renewal for `reason` may hold its reload: only when what the registry serves now
/// is a working certificate (not a broken, missing or mismatched pair).
pub fn may_hold(reason: &Reason) -> bool {
    !matches!(reason, Reason::NothingInstalled | Reason::Unreadable(_) | Reason::KeyMismatch | Reason::IncompleteChain)
}

/// After installing a pair: hold its reload until the window opens? `Some(opening)` when it
/// waits; `None` to reload now (inside the window, or the served certificate would not last).
pub fn hold_until(window: &Window, served: Option<(u64, u64)>, now: SystemTime) -> Option<u64> {
    let opens = unix(window.next_open(now));
    (opens > unix(now) && !served_would_lapse(served, opens)).then_some(opens)
}

/// Is it time for a pending reload? The reason, when it is: the window (as configured now) is
/// open, no window applies any more, or the served certificate would not last until it opens.
pub fn ripe(p: &PendingReload, window: Option<&Window>, now: SystemTime) -> Option<String> {
    let Some(window) = window else { return Some("no reload window applies any more".into()) };
    if window.contains(now) {
        return Some(format!("the reload window {window} is open"));
    }
    let opens = unix(window.next_open(now));
    served_would_lapse(p.served, opens).then(|| {
        let until = p.served.map(|(_, not_after)| fmt_time(not_after)).unwrap_or_default();
        format!("the certificate the registry serves (expires {until}) would not last until the window opens at {}", fmt_time(opens))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn a_served_certificate_must_keep_a_tenth_of_its_lifetime_until_the_window() {
        // 90 days, issued at 0: a tenth is 9 days.
        let served = Some((0, 90 * DAY));
        assert!(!served_would_lapse(served, 80 * DAY));
        assert!(served_would_lapse(served, 82 * DAY));
        assert!(served_would_lapse(served, 91 * DAY), "expired before the window");
        assert!(served_would_lapse(None, 0), "nothing served: nothing to keep");
    }

    #[test]
    fn holds_outside_the_window_unless_the_served_certificate_would_lapse() {
        let now = SystemTime::now();
        let t = unix(now);
        let (at, _) = crate::reload::window::local_minute(now);
        let minute = |ahead: u32| (at + ahead) % (24 * 60);
        let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let later = Window::parse(&format!("{}-{}", hhmm(minute(120)), hhmm(minute(180)))).unwrap();
        let open = Window::parse(&format!("{}-{}", hhmm(minute(0)), hhmm(minute(30)))).unwrap();
        let long = Some((t - DAY, t + 89 * DAY));
        let until = hold_until(&later, long, now).expect("held");
        assert!(until > t + 119 * 60 && until <= t + 120 * 60, "{until} vs {t}");
        assert_eq!(hold_until(&open, long, now), None, "inside the window: now");
        assert_eq!(hold_until(&later, Some((t - 89 * DAY, t + 3600)), now), None, "the served certificate expires first");
        assert_eq!(hold_until(&later, None, now), None);

        let p = PendingReload { sha256: "x".into(), serial: "1".into(), installed_at: t, until, window: later.to_string(), served: long };
        assert_eq!(ripe(&p, Some(&later), now), None);
        assert!(ripe(&p, Some(&open), now).unwrap().contains("is open"));
        assert!(ripe(&p, None, now).unwrap().contains("no reload window"));
        let short = PendingReload { served: Some((t - 89 * DAY, t + 3600)), ..p };
        assert!(ripe(&short, Some(&later), now).unwrap().contains("would not last until the window opens"));
    }

    #[test]
    fn broken_installs_are_never_held() {
        assert!(may_hold(&Reason::Forced) && may_hold(&Reason::Expiring { days_left: 20 }));
        assert!(!may_hold(&Reason::NothingInstalled) && !may_hold(&Reason::KeyMismatch) && !may_hold(&Reason::IncompleteChain));
    }
}
