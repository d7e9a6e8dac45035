//! `regcert status`: what is installed for each certificate and when it is next due.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::certinfo::{fmt_time, unix};
use crate::config::CertificateConfig;
use crate::config::Config;
use crate::daemon::DaemonStatus;
use crate::install::read_installed;
use crate::obtain::local_ca::CaExpiry;
use crate::obtain::{Issuer, Issuers};
use crate::policy::{Decision, alert_at};
use crate::schedule::Schedule;
use crate::state::StateDir;

#[derive(Debug, Serialize)]
pub struct CertStatus {
    pub name: String,
    pub domains: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    /// `usage = "client"`: the client's name (the subject CN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Names (DNS and IP) in the installed certificate.
    pub covered: Vec<String>,
    /// Who issues it: `ACME https://…/directory`, `private CA "NAME"`.
    pub issued_by: Option<String>,
    /// The CA that issued the installed certificate, as state_dir recorded it (the ACME
    /// directory URL, or `ca:NAME`); `None` for a certificate regcert did not issue.
    pub ca: Option<String>,
    /// The installed certificate's lifetime (notAfter − notBefore), in seconds.
    pub lifetime: Option<u64>,
    pub issuer: Option<String>,
    /// The ACME profile the installed certificate was issued under (stored with it), else the
    /// configured one (`profile`, `[acme] profile`), which the next order asks for.
    pub profile: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<u64>,
    pub days_left: Option<i64>,
    /// Unix time the certificate becomes due; `now` when it is due already.
    pub next_due: Option<u64>,
    /// Why it is due now, when it is.
    pub due_reason: Option<String>,
    /// When `regcert run` raises the `expiring` alert if the certificate is still not renewed.
    pub alert_at: Option<u64>,
    pub fullchain: PathBuf,
    pub key: PathBuf,
    /// What the daemon remembers: last result, failures and backoff, the ARI window.
    pub schedule: Schedule,
    /// When `regcert run` checks next (if it runs).
    pub next_check_at: Option<u64>,
    /// Installed, but its reload waits for `[certificate.reload] window`: until when, and
    /// the certificate the registry serves meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_pending: Option<crate::renew::pending::PendingReload>,
    /// For a certificate from a private CA: when the CA itself expires, and when that is alerted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_expiry: Option<CaExpiry>,
}

/// The status of `certs`. Read-only: the state dir is not created or locked for this, and
/// nobody is asked anything over the network.
pub fn collect(config: &Config, state: &StateDir, certs: &[&CertificateConfig], now: SystemTime) -> Vec<CertStatus> {
    let daemon = DaemonStatus::load(state);
    let issuers = Issuers::from_config(config, state);
    let alert_before = config.daemon.alert_before;
    let cas = crate::obtain::local_ca::expiries(config, state);
    certs
        .iter()
        .map(|c| {
            let mut s = one(state, &issuers, alert_before, daemon.as_ref(), c, now);
            s.ca_expiry = cas.iter().find(|ca| c.issuer.private_ca() == Some(ca.ca.as_str())).cloned();
            s
        })
        .collect()
}

fn one(
    state: &StateDir,
    issuers: &Issuers,
    alert_before: Option<Duration>,
    daemon: Option<&DaemonStatus>,
    cert: &CertificateConfig,
    now: SystemTime,
) -> CertStatus {
    let installed = read_installed(&cert.install);
    let decision = crate::renew::decision(state, issuers, cert, &installed, now, false);
    let leaf = installed.ok().flatten().map(|i| i.leaf);
    // What state_dir recorded when it issued the installed certificate (not an older one's).
    let meta = leaf.as_ref().and_then(|l| state.meta_for(&cert.name, &l.sha256));
    // The CA of the `issuer` list that issued the installed certificate, else the first one.
    let issuer = issuers.by_origin(cert, meta.as_ref().map(|m| m.directory.as_str())).ok();
    let configured_profile = issuer.and_then(|i| i.profile(cert)).map(str::to_owned);
    let reload_pending = crate::renew::pending::load(state, &cert.name).filter(|p| leaf.as_ref().is_some_and(|l| l.sha256 == p.sha256));
    let (next_due, due_reason) = match decision {
        Decision::NotDue { due_at, .. } => (Some(due_at), None),
        Decision::Due(reason) => (Some(unix(now)), Some(reason.to_string())),
    };
    CertStatus {
        name: cert.name.clone(),
        domains: cert.domains.clone(),
        ips: cert.ips.clone(),
        client_name: cert.client_name.clone().filter(|_| cert.usage == crate::config::Usage::Client),
        covered: leaf
            .as_ref()
            .map(|l| l.dns_names.iter().cloned().chain(l.ips.iter().map(|ip| ip.to_string())).collect())
            .unwrap_or_default(),
        issued_by: issuer.map(Issuer::label),
        ca: meta.as_ref().map(|m| m.directory.clone()),
        lifetime: leaf.as_ref().map(|l| l.not_after.saturating_sub(l.not_before)),
        issuer: leaf.as_ref().map(|l| l.issuer.clone()),
        profile: match &meta {
            Some(m) => m.profile.clone(),
            None => configured_profile,
        },
        serial: leaf.as_ref().map(|l| l.serial.clone()),
        not_after: leaf.as_ref().map(|l| l.not_after),
        days_left: leaf.as_ref().map(|l| (l.not_after as i64 - unix(now) as i64).div_euclid(86_400)),
        next_due,
        due_reason,
        alert_at: leaf.as_ref().map(|l| alert_at(l, cert.renew_before, alert_before)),
        fullchain: cert.install.fullchain_path(),
        key: cert.install.key_path(),
        schedule: Schedule::load(state, &cert.name),
        next_check_at: daemon.and_then(|d| d.next_check_at),
        reload_pending,
        ca_expiry: None,
    }
}

/// A lifetime as people say it: "90 days", "160 hours", "20 s". A CA may end the period one
/// second early (notAfter is its last second: Pebble's 90 days are 7 775 999 s).
fn fmt_lifetime(secs: u64) -> String {
    let whole = |unit: u64| [secs, secs + 1].into_iter().find(|s| *s > 0 && s % unit == 0).map(|s| s / unit);
    match (whole(86_400), whole(3_600)) {
        (Some(days), _) => format!("{days} days"),
        (None, Some(hours)) => format!("{hours} hours"),
        (None, None) => format!("{secs} s"),
    }
}

/// Human-readable report, one block per certificate.
pub fn render(statuses: &[CertStatus]) -> String {
    let now = unix(SystemTime::now());
    let mut out = String::new();
    for s in statuses {
        out.push_str(&format!("{}\n", s.name));
        let ips: Vec<String> = s.ips.iter().map(|ip| ip.to_string()).collect();
        let names = [s.domains.clone(), ips].concat();
        if let Some(client) = &s.client_name {
            out.push_str(&format!("  client:     CN={client} (client certificate, clientAuth)\n"));
        }
        if s.client_name.is_none() || !names.is_empty() {
            out.push_str(&format!("  names:      {}\n", names.join(", ")));
        }
        match (&s.issuer, s.not_after) {
            (Some(issuer), Some(not_after)) => {
                out.push_str(&format!("  covered:    {}\n", s.covered.join(", ")));
                if let Some(issued_by) = &s.issued_by {
                    out.push_str(&format!("  from:       {issued_by}\n"));
                }
                if let Some(ca) = &s.ca {
                    out.push_str(&format!("  CA:         {ca} (issued it)\n"));
                }
                out.push_str(&format!("  issuer:     {issuer}\n"));
                if let Some(profile) = &s.profile {
                    out.push_str(&format!("  profile:    {profile}\n"));
                }
                out.push_str(&format!("  serial:     {}\n", s.serial.as_deref().unwrap_or("")));
                out.push_str(&format!("  not after:  {} ({} days left)\n", fmt_time(not_after), s.days_left.unwrap_or(0)));
                if let Some(lifetime) = s.lifetime {
                    out.push_str(&format!("  lifetime:   {}\n", fmt_lifetime(lifetime)));
                }
            }
            _ => out.push_str("  installed:  nothing yet\n"),
        }
        if let Some(p) = &s.reload_pending {
            out.push_str(&format!(
                "  reload:     installed, reload pending until {} (window {}); the registry serves the previous certificate until then\n",
                fmt_time(p.until),
                p.window
            ));
        }
        match (&s.due_reason, s.next_due) {
            (Some(reason), _) => out.push_str(&format!("  next due:   now ({reason})\n")),
            (None, Some(at)) => out.push_str(&format!("  next due:   {}\n", fmt_time(at))),
            _ => {}
        }
        if let Some(at) = s.alert_at {
            out.push_str(&format!("  alert at:   {} (if still not renewed by then)\n", fmt_time(at)));
        }
        match &s.ca_expiry {
            Some(ca) if ca.alerting(now) => out.push_str(&format!("  CA EXPIRING: {}\n", ca.message(now))),
            Some(ca) => out.push_str(&format!(
                "  CA expires: {} (private CA \"{}\"; alert from {}, when leaves start being cut short)\n",
                fmt_time(ca.not_after),
                ca.ca,
                fmt_time(ca.alert_at)
            )),
            None => {}
        }
        out.push_str(&format!("  install:    {}, {}\n", s.fullchain.display(), s.key.display()));
        if let Some(at) = s.next_check_at {
            out.push_str(&format!("  next check: {} (regcert run)\n", fmt_time(at)));
        }
        if let Some(r) = &s.schedule.last_result {
            let verdict = if r.ok { "ok" } else { "FAILED" };
            out.push_str(&format!("  last result: {verdict} at {}: {}\n", fmt_time(r.at), r.message));
        }
        if let Some(retry) = s.schedule.retry_at.filter(|_| s.schedule.failures > 0) {
            out.push_str(&format!(
                "  backoff:    {} failure(s) in a row; next attempt not before {}\n",
                s.schedule.failures,
                fmt_time(retry)
            ));
        }
        if let Some(w) = &s.schedule.ari {
            out.push_str(&format!(
                "  CA window:  {} – {} (ARI); renewing at {}\n",
                fmt_time(w.start),
                fmt_time(w.end),
                fmt_time(w.renew_at)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fmt_lifetime;

    #[test]
    fn lifetimes_read_as_people_say_them() {
        assert_eq!(fmt_lifetime(90 * 86_400 - 1), "90 days");
        assert_eq!(fmt_lifetime(6 * 86_400), "6 days");
        assert_eq!(fmt_lifetime(160 * 3_600 - 1), "160 hours");
        assert_eq!(fmt_lifetime(20), "20 s");
    }
}
