//! What the daemon remembers per certificate between checks (and restarts): failures and the
//! backoff they impose, the last result, the CA's renewal window (ARI), the last alert.
//!
//! Kept in `state_dir/certs/<name>/schedule.json`, so a restarted daemon neither hammers a CA
//! that was failing nor forgets the renewal moment it picked inside an ARI window.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::certinfo::{LeafInfo, unix};
use crate::fsutil::FileSpec;
use crate::policy::Reason;
use crate::state::{SCHEDULE, StateDir};

/// In an emergency (less than a tenth of the lifetime left) never wait longer than this.
const EMERGENCY_MAX: Duration = Duration::from_secs(600);
/// At most one "expiring" alert per certificate in this period.
const ALERT_EVERY: u64 = 86_400;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Schedule {
    /// Consecutive failed renewals.
    #[serde(default)]
    pub failures: u32,
    /// While failing: no attempt before this time.
    pub retry_at: Option<u64>,
    pub last_result: Option<LastResult>,
    pub ari: Option<AriWindow>,
    /// Do not ask the CA for a renewal window before this time (it has no renewalInfo, or
    /// asking failed): keeps idle checks off the network.
    pub ari_skip_until: Option<u64>,
    /// When the last "expires soon" alert went out, and for which certificate (serial).
    pub last_alert_at: Option<u64>,
    #[serde(default)]
    pub last_alert_serial: Option<String>,
    /// schedule.json as this schedule was read or last written; another process's write (a
    /// one-shot `renew` storing a renewal window, `revoke` dropping one) makes it differ.
    #[serde(skip)]
    pub(crate) stored: Option<std::sync::Arc<[u8]>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastResult {
    pub at: u64,
    pub ok: bool,
    pub message: String,
}

/// The CA's suggested renewal window for one certificate (ACME Renewal Information, RFC 9773).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AriWindow {
    /// The certificate the window is for.
    pub serial: String,
    pub start: u64,
    pub end: u64,
    /// The random moment inside the window chosen to renew at.
    pub renew_at: u64,
    /// Fetch the window again at this time (the CA's Retry-After).
    pub refetch_at: u64,
    pub explanation_url: Option<String>,
}

impl AriWindow {
    /// Pick a uniformly random moment in `[start, end]`, not before `now` (a window that has
    /// already opened means "renew now").
    pub fn choose(serial: String, start: u64, end: u64, now: u64, retry_after: Duration, explanation_url: Option<String>) -> Self {
        let end = end.max(start);
        let renew_at = if end <= now { now } else { fastrand::u64(start.max(now)..=end) };
        // The CA's Retry-After, at most a day (RFC 9773 §4.3.3). No floor of our own: how often
        // it is asked is bounded by how often regcert looks (`[daemon] check`, the renew timer, and
        // the daemon's wake for it, at least 10 s away: see `renew::windows::next_moment`).
        let wait = retry_after.as_secs().clamp(1, 86_400);
        AriWindow { serial, start, end, renew_at, refetch_at: now + wait, explanation_url }
    }
}

/// Wait before the next attempt after `failures` consecutive failures (`steps`: `[daemon] backoff`)
/// of a certificate whose installed leaf is `leaf`. No wait is longer than a tenth of that
/// leaf's lifetime (a one-day certificate: 2.4 h; a 90-second one: 9 s), nor, in an emergency,
/// than 10 minutes. A CA that said when to come back (a rate limit's Retry-After) is not asked
/// earlier, even in an emergency: asking a rate-limited CA again only fails again.
pub fn backoff(failures: u32, leaf: Option<&LeafInfo>, steps: &[Duration], retry_after: Option<SystemTime>, now: SystemTime) -> Duration {
    let i = (failures.max(1) as usize - 1).min(steps.len().saturating_sub(1));
    let step = steps.get(i).copied().unwrap_or(EMERGENCY_MAX);
    let mut cap = leaf.map_or(Duration::MAX, |l| (l.lifetime() / 10).max(Duration::from_secs(1)));
    if is_emergency(leaf, now) {
        cap = cap.min(EMERGENCY_MAX);
    }
    let ca_wait = retry_after.and_then(|t| t.duration_since(now).ok()).unwrap_or_default();
    step.min(cap).max(ca_wait)
}

/// Less than a tenth of the lifetime left (or expired): retry often, and say so.
pub fn is_emergency(leaf: Option<&LeafInfo>, now: SystemTime) -> bool {
    leaf.is_some_and(|l| l.remaining(now) < l.lifetime() / 10)
}

impl Schedule {
    /// The stored schedule, or a fresh one (also when the file is unreadable: it only holds hints).
    pub fn load(state: &StateDir, name: &str) -> Self {
        let stored = state.read_record(name, SCHEDULE);
        let schedule: Option<Self> = stored.as_deref().and_then(|b| serde_json::from_slice(b).ok());
        Self { stored, ..schedule.unwrap_or_default() }
    }

    pub fn save(&mut self, state: &StateDir, name: &str) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        state.write_record(name, SCHEDULE, &json, FileSpec::PUBLIC)?;
        self.stored = Some(json.into());
        Ok(())
    }

    /// Did another process change schedule.json since this schedule was read or written? (The
    /// daemon keeps schedules in memory between checks; one it holds must not overwrite what a
    /// one-shot command stored meanwhile.)
    pub fn changed_on_disk(&self, state: &StateDir, name: &str) -> bool {
        state.read_record(name, SCHEDULE) != self.stored
    }

    /// Has `leaf` (not renewed, now at `now`) earned an "expiring" alert that was not sent yet?
    /// Once per certificate, and again a day later if it is still not renewed.
    pub fn alert_due(&self, leaf: &LeafInfo, alert_at: u64, now: u64) -> bool {
        let repeat =
            self.last_alert_serial.as_deref() == Some(leaf.serial.as_str()) && self.last_alert_at.is_some_and(|t| now < t + ALERT_EVERY);
        now >= alert_at && !repeat
    }

    pub fn record_alert(&mut self, leaf: &LeafInfo, now: u64) {
        self.last_alert_at = Some(now);
        self.last_alert_serial = Some(leaf.serial.clone());
    }

    /// The CA's window for the certificate with `serial` says "renew" at `now`: the reason.
    pub fn window_reason(&self, serial: &str, now: u64) -> Option<Reason> {
        self.ari.as_ref().filter(|w| w.serial == serial && now >= w.renew_at).map(|w| Reason::RenewalWindow { start: w.start, end: w.end })
    }

    /// Still waiting out the backoff of earlier failures?
    pub fn backing_off(&self, now: u64) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    /// Forget earlier failures and their backoff.
    pub fn clear_failures(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    pub fn record_success(&mut self, now: SystemTime, message: String) {
        self.clear_failures();
        self.ari = None; // the window belonged to the replaced certificate
        self.last_result = Some(LastResult { at: unix(now), ok: true, message });
    }

    pub fn record_failure(&mut self, now: SystemTime, message: String, wait: Duration) {
        self.failures += 1;
        self.retry_at = Some(unix(now) + wait.as_secs());
        self.last_result = Some(LastResult { at: unix(now), ok: false, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    /// A leaf valid from `not_before` for `secs` seconds.
    fn leaf(not_before: u64, secs: u64) -> LeafInfo {
        LeafInfo {
            subject: String::new(),
            issuer: String::new(),
            dns_names: vec![],
            ips: vec![],
            serial: "01".into(),
            not_before,
            not_after: not_before + secs,
            sha256: String::new(),
            spki: vec![],
            key_type: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn backoff_grows_then_holds_and_emergency_caps_it() {
        let steps = crate::config::DaemonConfig::default().backoff;
        let ninety_days = leaf(1_000 * DAY, 90 * DAY);
        let now = at(1_070 * DAY);
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n, Some(&ninety_days), &steps, None, now).as_secs()).collect();
        assert_eq!(secs, [60, 120, 300, 600, 1200, 1800, 3600, 21600, 21600, 21600]);
        // Less than a tenth of the lifetime left.
        assert_eq!(backoff(9, Some(&ninety_days), &steps, None, at(1_085 * DAY)).as_secs(), 600);
        assert_eq!(backoff(1, Some(&ninety_days), &steps, None, at(1_085 * DAY)).as_secs(), 60);
        assert_eq!(backoff(9, None, &steps, None, now).as_secs(), 21_600, "nothing installed: the steps as configured");
    }

    #[test]
    fn no_wait_is_longer_than_a_tenth_of_the_lifetime() {
        let steps = crate::config::DaemonConfig::default().backoff;
        let one_day = leaf(1_000 * DAY, DAY);
        assert_eq!(backoff(9, Some(&one_day), &steps, None, at(1_000 * DAY + 16 * 3_600)).as_secs(), DAY / 10);
        let six_days = leaf(1_000 * DAY, 6 * DAY);
        assert_eq!(backoff(9, Some(&six_days), &steps, None, at(1_004 * DAY)).as_secs(), 21_600, "6 h steps fit six days");
        let ninety_seconds = leaf(1_000, 90);
        assert_eq!(backoff(1, Some(&ninety_seconds), &steps, None, at(1_060)).as_secs(), 9);
        assert_eq!(backoff(9, Some(&ninety_seconds), &steps, None, at(1_085)).as_secs(), 9);
    }

    #[test]
    fn a_rate_limit_is_waited_out_even_in_an_emergency() {
        let steps = crate::config::DaemonConfig::default().backoff;
        let ninety_days = leaf(1_000 * DAY, 90 * DAY);
        let now = at(1_070 * DAY);
        let in_an_hour = Some(now + Duration::from_secs(3_600));
        assert_eq!(backoff(1, Some(&ninety_days), &steps, in_an_hour, now).as_secs(), 3_600);
        let emergency = at(1_085 * DAY);
        assert_eq!(backoff(1, Some(&ninety_days), &steps, Some(emergency + Duration::from_secs(3_600)), emergency).as_secs(), 3_600);
        // A Retry-After shorter than the backoff, or in the past, changes nothing.
        assert_eq!(backoff(8, Some(&ninety_days), &steps, in_an_hour, now).as_secs(), 21_600);
        assert_eq!(backoff(2, Some(&ninety_days), &steps, Some(now - Duration::from_secs(5)), now).as_secs(), 120);
    }

    #[test]
    fn an_alert_once_per_certificate_and_again_a_day_later() {
        let mut s = Schedule::default();
        let (first, mut second) = (leaf(1_000, 90), leaf(1_080, 90));
        second.serial = "02".into();
        assert!(!s.alert_due(&first, 1_075, 1_074), "not before the alert point");
        assert!(s.alert_due(&first, 1_075, 1_075));
        s.record_alert(&first, 1_075);
        assert!(!s.alert_due(&first, 1_075, 1_090));
        assert!(s.alert_due(&first, 1_075, 1_075 + DAY), "still not renewed a day later");
        assert!(s.alert_due(&second, 1_155, 1_155), "a new certificate that is late again is a new alert");
    }

    #[test]
    fn failures_gate_attempts_and_success_clears_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = Schedule::default();
        s.record_failure(now, "CA down".into(), Duration::from_secs(60));
        s.record_failure(now, "CA down".into(), Duration::from_secs(120));
        assert_eq!(s.retry_at, Some(1_000_120));
        assert!(s.backing_off(1_000_119));
        assert!(!s.backing_off(1_000_120));
        s.record_success(now, "renewed".into());
        assert_eq!(s.failures, 0);
        assert!(!s.backing_off(1_000_000));
    }

    #[test]
    fn ari_moment_lies_inside_the_window() {
        for _ in 0..100 {
            let w = AriWindow::choose("01".into(), 1_000, 2_000, 500, Duration::from_secs(3600), None);
            assert!((1_000..=2_000).contains(&w.renew_at));
            assert_eq!(w.refetch_at, 500 + 3600);
        }
        // An open window means now; a window in the past means now too.
        let w = AriWindow::choose("01".into(), 1_000, 2_000, 1_500, Duration::ZERO, None);
        assert!((1_500..=2_000).contains(&w.renew_at));
        assert_eq!(AriWindow::choose("01".into(), 10, 20, 30, Duration::ZERO, None).renew_at, 30);
    }
}
