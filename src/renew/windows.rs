//! The CA's renewal windows (ACME Renewal Information, RFC 9773), for `regcert renew` and for
//! each check of `regcert run` alike.
//!
//! A certificate the lifetime policy keeps can still be due because its CA says so (a revoked
//! certificate, an incident): the window is asked for and stored in schedule.json with the
//! moment chosen inside it. It is asked for again only after the CA's Retry-After, so a pass
//! whose stored windows are fresh stays off the network; a CA without ARI is asked again after a
//! day, one that failed after an hour. The CA asked is the one that issued the installed
//! certificate (a fallback CA of the certificate's `issuer` list, perhaps): no other CA knows it.

use super::{CertReport, Outcome, Plan};
use crate::certinfo::fmt_time;
use crate::config::CertificateConfig;
use crate::install::{self, Installed};
use crate::obtain::{Error, Issuer, Issuers};
use crate::policy::{Decision, Reason};
use crate::schedule::{AriWindow, Schedule};
use crate::state::StateDir;

/// A planned certificate the lifetime policy keeps, from a CA that may still call it due.
pub struct Kept {
    /// Its place in the plan.
    index: usize,
    installed: Installed,
    schedule: Schedule,
    changed: bool,
}

/// The certificates of `plan` that the policy keeps and whose issuer offers renewal windows,
/// with their stored schedules. Reads files only.
pub fn kept(state: &StateDir, issuers: &Issuers, plan: &Plan<'_>) -> Vec<Kept> {
    plan.iter()
        .enumerate()
        .filter(|(_, (_, decision))| matches!(decision, Decision::NotDue { .. }))
        .filter_map(|(index, (cert, _))| {
            let installed = install::read_installed(&cert.install).ok().flatten()?;
            issuing(issuers, cert, &installed).filter(|i| i.offers_renewal_windows())?;
            Some(Kept { index, installed, schedule: Schedule::load(state, &cert.name), changed: false })
        })
        .collect()
}

/// The issuer of `cert`'s list that issued `installed` (state_dir's record), else its first.
fn issuing<'i>(issuers: &'i Issuers, cert: &CertificateConfig, installed: &Installed) -> Option<&'i Issuer> {
    issuers.that_issued(cert, Some(&installed.leaf.sha256)).ok()
}

/// Must the CA be asked for any window of `kept`?
pub fn any_stale(issuers: &Issuers, plan: &Plan<'_>, kept: &[Kept], now: u64) -> bool {
    kept.iter().any(|k| issuing(issuers, plan[k.index].0, &k.installed).is_some_and(|issuer| stale(issuer, &k.installed, &k.schedule, now)))
}

/// Ask the CAs for the stale windows of `kept`.
pub async fn refresh_stale(issuers: &Issuers, plan: &Plan<'_>, kept: &mut [Kept], now: u64) {
    let each = kept.iter_mut().map(|k| (plan[k.index].0, &k.installed, &mut k.schedule, &mut k.changed));
    refresh_each(issuers, each, now).await;
}

/// For each (certificate, installed pair, schedule, changed): ask its CA for the window when the
/// stored one is stale, and mark the schedule changed. A CA that cannot be asked is reported once
/// per pass, not once per certificate.
pub async fn refresh_each<'a>(
    issuers: &Issuers,
    each: impl Iterator<Item = (&'a CertificateConfig, &'a Installed, &'a mut Schedule, &'a mut bool)>,
    now: u64,
) {
    let mut warned = false;
    for (cert, installed, schedule, changed) in each {
        let Some(issuer) = issuing(issuers, cert, installed) else { continue };
        if !stale(issuer, installed, schedule, now) {
            continue;
        }
        *changed = true;
        if let Err(e) = refresh(issuer, &cert.name, installed, schedule, now).await
            && !std::mem::replace(&mut warned, true)
        {
            tracing::warn!(cert = %cert.name, error = %e, "cannot fetch renewal windows (ARI); using the lifetime policy");
        }
    }
}

/// Make due what its CA's window says to renew now, and store the schedules that changed
/// (schedule.json, which `regcert run` reads too).
pub fn apply(state: &StateDir, plan: &mut Plan<'_>, kept: Vec<Kept>, now: u64) {
    for mut k in kept {
        let (cert, decision) = &mut plan[k.index];
        if let Some(reason) = conclude(state, &cert.name, &mut k.schedule, k.changed, &k.installed, now) {
            *decision = Decision::Due(reason);
        }
    }
}

/// The fleet's certificate, judged by its leader (`cluster::fleet`), when the lifetime policy
/// keeps it: ask its CA for the window when the stored one is stale, store it, and say whether
/// the window calls for renewal now. The leader orders for every node, so the CA's "renew now"
/// (a revoked certificate, an incident) reaches the whole fleet through it.
pub async fn reason_for(state: &StateDir, issuers: &Issuers, cert: &CertificateConfig, installed: &Installed, now: u64) -> Option<Reason> {
    let (mut schedule, mut changed) = (Schedule::load(state, &cert.name), false);
    refresh_each(issuers, std::iter::once((cert, installed, &mut schedule, &mut changed)), now).await;
    conclude(state, &cert.name, &mut schedule, changed, installed, now)
}

/// Store `schedule` if it `changed`; the renewal its window calls for now, if any (logged).
fn conclude(state: &StateDir, name: &str, schedule: &mut Schedule, changed: bool, installed: &Installed, now: u64) -> Option<Reason> {
    if changed && let Err(e) = schedule.save(state, name) {
        tracing::warn!(cert = %name, error = %e, "cannot store the renewal window");
    }
    let reason = schedule.window_reason(&installed.leaf.serial, now);
    if let Some(reason) = &reason {
        tracing::info!(cert = %name, %reason, "the CA's renewal window says renew");
    }
    reason
}

/// Does `schedule` need the CA's window for `installed` (issued by `issuer`) at `now` (Unix time)? Pure.
pub fn stale(issuer: &Issuer, installed: &Installed, schedule: &Schedule, now: u64) -> bool {
    let fresh = schedule.ari.as_ref().is_some_and(|w| w.serial == installed.leaf.serial && now < w.refetch_at);
    issuer.offers_renewal_windows() && !fresh && schedule.ari_skip_until.is_none_or(|t| now >= t)
}

/// Ask `issuer` for the window of `installed` and store the answer in `schedule`. An error is
/// the caller's to report (once per pass, not once per certificate, when the CA is down).
pub async fn refresh(issuer: &Issuer, name: &str, installed: &Installed, schedule: &mut Schedule, now: u64) -> Result<(), Error> {
    match issuer.renewal_window(&installed.leaf_der).await {
        Ok(Some(window)) => {
            let w =
                AriWindow::choose(installed.leaf.serial.clone(), window.start, window.end, now, window.retry_after, window.explanation_url);
            tracing::info!(cert = %name, window_start = %fmt_time(w.start), window_end = %fmt_time(w.end), renew_at = %fmt_time(w.renew_at), ask_again = %fmt_time(w.refetch_at), "CA renewal window (ARI)");
            schedule.ari = Some(w);
            schedule.ari_skip_until = None;
            Ok(())
        }
        Ok(None) => {
            tracing::debug!(cert = %name, "the CA offers no renewal window for this certificate; using the lifetime policy");
            schedule.ari = None;
            schedule.ari_skip_until = Some(now + spread(86_400));
            Ok(())
        }
        Err(e) => {
            schedule.ari_skip_until = Some(now + spread(3_600));
            Err(e)
        }
    }
}

/// Right after renewals (the CA was just talked to), ask for each new ACME certificate's window
/// and store it: the next runs then know it — or that the CA offers none — without asking, and
/// a renew with nothing due stays off the network.
pub async fn learn_after_renewals(state: &StateDir, issuers: &Issuers, certs: &[&CertificateConfig], reports: &[CertReport], now: u64) {
    for report in reports.iter().filter(|r| matches!(r.outcome, Outcome::Renewed { .. } | Outcome::ReloadPending { .. })) {
        let Some(cert) = certs.iter().find(|c| c.name == report.name) else { continue };
        let Some(installed) = install::read_installed(&cert.install).ok().flatten() else { continue };
        let Some(issuer) = issuing(issuers, cert, &installed) else { continue };
        let mut schedule = Schedule::load(state, &cert.name);
        if !stale(issuer, &installed, &schedule, now) {
            continue;
        }
        if let Err(e) = refresh(issuer, &cert.name, &installed, &mut schedule, now).await {
            tracing::debug!(cert = %cert.name, error = %e, "cannot fetch the new certificate's renewal window (ARI); asking again later");
        }
        if let Err(e) = schedule.save(state, &cert.name) {
            tracing::warn!(cert = %cert.name, error = %e, "cannot store the renewal window");
        }
    }
}

/// A CA may ask to be asked again within a second; a daemon woken by windows is not woken more
/// often than this.
const MIN_WAKE: u64 = 10;

/// When the stored windows next call for a check, after `now`: the earliest moment chosen to
/// renew at, or the CA's Retry-After for asking again (a "renew now" answer — a revoked
/// certificate, an incident — is then acted on at once, not at the next scheduled check).
/// At least [`MIN_WAKE`] seconds away. Pure.
pub fn next_moment<'a>(schedules: impl IntoIterator<Item = &'a Schedule>, now: u64) -> Option<u64> {
    let moments = schedules.into_iter().filter_map(|s| s.ari.as_ref()).flat_map(|w| [w.renew_at, w.refetch_at]);
    moments.filter(|t| *t > now).min().map(|t| t.max(now + MIN_WAKE))
}

/// Somewhere between half and all of `secs`, so that many certificates do not ask together.
fn spread(secs: u64) -> u64 {
    secs / 2 + fastrand::u64(0..=secs / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::AriWindow;

    const NOW: u64 = 1_000_000;

    fn with_window(renew_at: u64, refetch_at: u64) -> Schedule {
        let ari = AriWindow { serial: "01".into(), start: NOW, end: NOW + 100, renew_at, refetch_at, explanation_url: None };
        Schedule { ari: Some(ari), ..Schedule::default() }
    }

    #[test]
    fn the_daemon_wakes_for_the_earliest_window_moment_still_ahead() {
        assert_eq!(next_moment([&Schedule::default()], NOW), None, "no window: the cron schedule alone");
        let (a, b) = (with_window(NOW + 500, NOW + 21_600), with_window(NOW - 5, NOW + 3_600));
        assert_eq!(next_moment([&a, &b], NOW), Some(NOW + 500), "the moment chosen to renew at");
        assert_eq!(
            next_moment([&b], NOW),
            Some(NOW + 3_600),
            "a moment passed already (renewal failed) is not a reason; the Retry-After is"
        );
        assert_eq!(next_moment([&with_window(NOW - 5, NOW + 1)], NOW), Some(NOW + MIN_WAKE), "a Retry-After of 1 s wakes it after 10 s");
    }
}
