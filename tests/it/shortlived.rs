//! Short-lived certificates — the shape of Let's Encrypt's six-day `shortlived` and 45-day
//! `tlsserver` profiles, scaled down to seconds with a private CA (`validity = "20s"`) — under
//! `regcert run` for several rotations: nobody is paged while renewals succeed, and exactly one
//! `expiring` alert comes when renewal is broken and the certificate passes its alert point.

use crate::common::*;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use toml::{Value, toml};

/// One certificate `short` from the private CA "internal", living 20 s, checked every second,
/// every event appended to the returned file by a notify command.
fn short_lived() -> (Setup, PathBuf) {
    let s = Setup::with_config(
        toml! { [ca] internal = {} },
        &[CertSpec::new("short", toml! { issuer = "ca:internal" domains = ["short.corp.lan"] validity = "20s" })],
    );
    let events = s.root.path().join("events.log");
    let script = s.root.path().join("notify.sh");
    fs::write(&script, format!("#!/bin/sh\necho \"$REGCERT_EVENT $REGCERT_CERTIFICATE\" >> {}\n", events.display())).unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let notify = toml! { command = [(script.display().to_string())] };
    s.edit(|c| {
        set(c, "daemon.check", "* * * * * *");
        c.insert("notify".into(), Value::Array(vec![Value::Table(notify)]));
    });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    (s, events)
}

fn events(path: &PathBuf) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn count(events: &[String], event: &str) -> usize {
    events.iter().filter(|e| e.starts_with(&format!("{event} "))).count()
}

#[test]
fn short_lived_certificates_rotate_without_paging_anyone() {
    let (s, events_file) = short_lived();
    let mut d = Daemon::start(&s.config);
    // Issued at start-up, then renewed each time a third of its ~22 s lifetime is left.
    d.wait_for_log("1 renewed, 0 failed", 3, Duration::from_secs(60));
    let mut serials = vec![serial(&s.fullchain("short"))];
    let status = s.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let (due, alert, not_after) =
        (st[0]["next_due"].as_u64().unwrap(), st[0]["alert_at"].as_u64().unwrap(), st[0]["not_after"].as_u64().unwrap());
    assert!(due < alert && alert < not_after, "renewal point {due} < alert point {alert} < expiry {not_after}");
    assert!(s.run(&["status"]).stdout.contains("alert at:"));
    d.wait_for_log("1 renewed, 0 failed", 4, Duration::from_secs(30));
    serials.push(serial(&s.fullchain("short")));
    assert_ne!(serials[0], serials[1]);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
    let got = events(&events_file);
    assert!(count(&got, "renewed") >= 4, "{got:?}");
    assert_eq!(count(&got, "expiring"), 0, "a short-lived certificate that keeps being renewed pages nobody: {got:?}");
    assert_eq!(count(&got, "failed"), 0, "{got:?}");
}

#[test]
fn a_broken_renewal_of_a_short_lived_certificate_alerts_exactly_once() {
    let (s, events_file) = short_lived();
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    let installed = fs::read(s.fullchain("short")).unwrap();
    // The CA's signing key goes missing (moved offline by mistake, say): every renewal from now
    // on fails, and the installed certificate runs out.
    let key = s.state().join("ca/internal/root.key");
    fs::rename(&key, key.with_extension("offline")).unwrap();
    let not_after: u64 = {
        let st: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
        st[0]["not_after"].as_u64().unwrap_or_else(|| panic!("{st}"))
    };
    // Watch it past its expiry and a few more checks.
    let until = Instant::now() + Duration::from_secs(not_after.saturating_sub(now()) + 5);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
    let got = events(&events_file);
    assert_eq!(count(&got, "expiring"), 1, "exactly one alert: {got:?}");
    // Backoff scaled to the lifetime (a tenth of it: ~2 s), not the configured first minute.
    assert!(count(&got, "failed") >= 3, "each failed attempt is reported: {got:?}");
    let log = d.log_text();
    assert!(log.contains("certificate expires soon and is still not renewed"), "{log}");
    assert!(log.contains("the CA's signing key is missing"), "{log}");
    assert_eq!(fs::read(s.fullchain("short")).unwrap(), installed, "the installed pair stays");
}
