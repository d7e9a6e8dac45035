//! Telling people: a webhook (JSON POST) and/or a command, on renewal success, failure,
//! rollback, and "expires soon and still not renewed".
//!
//! The body (also given to commands on stdin):
//! ```json
//! {"event": "renewed" | "reload_pending" | "failed" | "rolled_back" | "expiring" | "revoked",
//!  "certificate": "registry", "domains": ["registry.example.com"], "host": "regbox",
//!  "time": "2026-11-23T18:00:00Z", "serial": "…", "not_after": "2027-02-21T18:00:00Z",
//!  "days_left": 89, "error": null}
//! ```
//! `reload_pending` (installed, the restart held for `[certificate.reload] window`) also has
//! `"reload_pending_until": "…"`; `renewed` follows when the reload is done. Both name the CA
//! that issued the new certificate: `"issued_by": "ACME \"NAME\" (https://…)"`. `revoked`
//! (`regcert revoke`) has `"revocation_reason": "keyCompromise"` (or another reason).
//! A failing notification is logged and never fails a renewal.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::certinfo::unix;
use crate::config::{CertificateConfig, Config};
use crate::install;
use crate::renew::{CertReport, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Renewed,
    /// Installed; the registry restarts in the reload window.
    ReloadPending,
    Failed,
    RolledBack,
    Expiring,
    /// `regcert revoke` revoked the installed certificate at its CA.
    Revoked,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// URL that receives the event as a JSON POST.
    pub webhook: Option<String>,
    /// Program run with the event JSON on stdin (and REGCERT_EVENT, REGCERT_CERTIFICATE set).
    pub command: Option<Vec<String>>,
    /// Which events; default all.
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// Extra trust roots for the webhook's HTTPS.
    pub ca_bundle: Option<PathBuf>,
}

fn all_events() -> Vec<EventKind> {
    vec![EventKind::Renewed, EventKind::ReloadPending, EventKind::Failed, EventKind::RolledBack, EventKind::Expiring, EventKind::Revoked]
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub certificate: String,
    pub domains: Vec<String>,
    pub host: String,
    pub time: String,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub error: Option<String>,
    /// Set on an `expiring` event about a private CA itself (then `certificate` is "ca:NAME",
    /// `domains` every name of the certificates it issues, and `error` what to do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// On `renewed` and `reload_pending`: the CA that issued the new certificate (a fallback CA
    /// of the certificate's `issuer` list, perhaps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    /// On `reload_pending`: when the reload window opens and the registry restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_pending_until: Option<String>,
    /// On `revoked`: the reason given (`keyCompromise`, `superseded`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

pub fn rfc3339(secs: u64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// A URL as it may be shown: scheme and host only (`https://hooks.slack.com/…`). Webhook URLs
/// carry their credentials in the path or query (Slack, Teams, Discord), sometimes as userinfo,
/// so nothing after the host ever reaches a log line, an error or `check-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "<redacted>".into() };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let more = if rest.len() > host.len() { "/…" } else { "" };
    format!("{scheme}://{host}{more}")
}

pub fn validate(i: usize, n: &NotifyConfig, problems: &mut Vec<String>) {
    let at = format!("[[notify]] #{}", i + 1);
    if n.webhook.is_none() && n.command.is_none() {
        problems.push(format!("{at}: set `webhook` and/or `command`"));
    }
    if let Some(url) = &n.webhook
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        problems.push(format!("{at}: webhook \"{}\" must be an http(s) URL", redact_url(url)));
    } else if let Some(url) = &n.webhook
        && crate::config::http_on_loopback(url) == Some(false)
    {
        problems.push(format!(
            "{at}: webhook \"{}\" uses plain http:// to another host, which would send the event (and the URL's token) in clear text; use https:// (http:// only on 127.0.0.1, ::1, localhost)",
            redact_url(url)
        ));
    }
    if n.command.as_ref().is_some_and(|c| c.is_empty()) {
        problems.push(format!("{at}: command is empty"));
    }
}

/// Tell every `[[notify]]` about each renewal result of a pass.
pub async fn send_reports(config: &Config, reports: &[CertReport]) {
    for report in reports {
        let cert = config.certificates.iter().find(|c| c.name == report.name);
        if let Some(event) = cert.and_then(|c| event_for(c, report)) {
            send(&config.notify, &event).await;
        }
    }
}

/// The notification for a renewal result (none for "not due").
fn event_for(cert: &CertificateConfig, report: &CertReport) -> Option<Event> {
    Some(match &report.outcome {
        Outcome::Renewed { serial, not_after, issued_by, .. } => {
            Event { issued_by: Some(issued_by.clone()), ..Event::new(cert, EventKind::Renewed, Some(serial), Some(*not_after), None) }
        }
        Outcome::ReloadPending { serial, not_after, until, issued_by, .. } => Event {
            issued_by: Some(issued_by.clone()),
            reload_pending_until: Some(rfc3339(*until)),
            ..Event::new(cert, EventKind::ReloadPending, Some(serial), Some(*not_after), None)
        },
        Outcome::Failed { error, .. } => Event::new(cert, EventKind::Failed, None, None, Some(error.to_string())),
        Outcome::RolledBack { error, restored, .. } => {
            Event::new(cert, EventKind::RolledBack, None, None, Some(format!("{error}; {restored}")))
        }
        Outcome::NotDue { .. } | Outcome::DryRun { .. } | Outcome::Waiting { .. } => return None,
    })
}

impl Event {
    /// An event about `cert`; without a new certificate (`serial`, `not_after`), it reports on
    /// the one installed.
    pub fn new(cert: &CertificateConfig, kind: EventKind, serial: Option<&str>, not_after: Option<u64>, error: Option<String>) -> Self {
        let now = unix(SystemTime::now());
        let installed = install::read_installed(&cert.install).ok().flatten();
        let not_after = not_after.or(installed.as_ref().map(|i| i.leaf.not_after));
        Event {
            event: kind,
            certificate: cert.name.clone(),
            domains: cert.names(),
            host: hostname(),
            time: rfc3339(now),
            serial: serial.map(str::to_owned).or(installed.map(|i| i.leaf.serial)),
            not_after: not_after.map(rfc3339),
            days_left: not_after.map(|t| (t as i64 - now as i64).div_euclid(86_400)),
            error,
            ca: None,
            issued_by: None,
            reload_pending_until: None,
            revocation_reason: None,
        }
    }

    /// `expiring` for a private CA that leaves would now outlive.
    pub fn for_ca(ca: &crate::obtain::local_ca::CaExpiry, config: &Config, message: String) -> Self {
        let now = unix(SystemTime::now());
        let origin = crate::config::IssuerRef::Ca(ca.ca.clone());
        Event {
            event: EventKind::Expiring,
            certificate: origin.to_string(),
            domains: config
                .certificates
                .iter()
                .filter(|c| c.issuer.private_ca() == Some(ca.ca.as_str()))
                .flat_map(CertificateConfig::names)
                .collect(),
            host: hostname(),
            time: rfc3339(now),
            serial: Some(ca.serial.clone()),
            not_after: Some(rfc3339(ca.not_after)),
            days_left: Some((ca.not_after as i64 - now as i64).div_euclid(86_400)),
            error: Some(message),
            ca: Some(ca.ca.clone()),
            issued_by: None,
            reload_pending_until: None,
            revocation_reason: None,
        }
    }
}

/// Send `event` to every notifier that wants it.
pub async fn send(notifiers: &[NotifyConfig], event: &Event) {
    for n in notifiers.iter().filter(|n| n.events.contains(&event.event)) {
        if let Some(full) = &n.webhook {
            let url = redact_url(full);
            match post(full, n, event).await {
                Ok(()) => tracing::info!(cert = %event.certificate, event = ?event.event, %url, "notified"),
                Err(e) => tracing::warn!(cert = %event.certificate, event = ?event.event, %url, error = %e, "webhook failed"),
            }
        }
        if let Some(argv) = &n.command
            && let Err(e) = run(argv, event).await
        {
            tracing::warn!(cert = %event.certificate, event = ?event.event, command = %argv.join(" "), error = %e, "notify command failed");
        }
    }
}

async fn post(url: &str, n: &NotifyConfig, event: &Event) -> Result<(), String> {
    if url.starts_with("http://") {
        tracing::warn!(url = %redact_url(url), "webhook over plain http (loopback only)");
    }
    let roots = crate::obtain::tls::root_store(n.ca_bundle.as_deref().as_slice())?;
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("regcert/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    // reqwest's errors quote the whole URL: without it, they may be logged.
    let rsp = client.post(url).json(event).send().await.map_err(|e| e.without_url().to_string())?;
    if rsp.status().is_success() { Ok(()) } else { Err(format!("answered {}", rsp.status())) }
}

/// How long a notify command may take, writing its stdin included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(argv: &[String], event: &Event) -> Result<(), String> {
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let kind = serde_json::to_value(event.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    run_command(argv, &body, &[("REGCERT_EVENT", &kind), ("REGCERT_CERTIFICATE", &event.certificate)], COMMAND_TIMEOUT).await
}

/// Run `argv` with `body` on its stdin, all of it — writing stdin (a command that does not read
/// it blocks the write once the pipe is full) and waiting — within `timeout`, after which the
/// command is killed with every process it started.
async fn run_command(argv: &[String], body: &[u8], env: &[(&str, &str)], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty command".into()) };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).envs(env.iter().copied());
    let out = crate::command::run(cmd, Some(body), timeout).await.map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(format!("exited with {}: {}", out.status, out.stderr_text())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_does_not_read_its_stdin_is_bounded_by_the_timeout() {
        // More than a pipe holds: the write blocks until the command reads or exits.
        let body = vec![b'x'; 4 << 20];
        let started = std::time::Instant::now();
        let argv = ["sleep".to_owned(), "30".to_owned()];
        let r = run_command(&argv, &body, &[], Duration::from_millis(500)).await;
        assert!(r.as_ref().is_err_and(|e| e.starts_with("did not finish within 500ms")), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let cat = ["sh".to_owned(), "-c".to_owned(), "cat >/dev/null".to_owned()];
        assert_eq!(run_command(&cat, &body, &[], Duration::from_secs(20)).await, Ok(()));
    }

    #[test]
    fn urls_are_shown_as_scheme_and_host_only() {
        assert_eq!(redact_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"), "https://hooks.slack.com/…");
        assert_eq!(redact_url("https://user:pass@example.com:8443/hook?token=SECRET"), "https://example.com:8443/…");
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(redact_url("https://h.example?SECRET"), "https://h.example/…");
        assert_eq!(redact_url("ftp:SECRET"), "<redacted>");
    }
}
