//! `[certificate.reload] window`: outside it, a renewal installs the new pair and holds the
//! registry's restart (the old certificate, still valid, stays served); `regcert renew` in the
//! window, or `regcert run` when the window opens, restarts and verifies. A served certificate
//! that would not last until the window opens is replaced at once.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::toml;

use crate::common::registry::*;
use crate::common::*;
use crate::registry::{issued, reload_and_verify, verify_registry};

/// Local time `minutes` from now, as `date` (the C library) sees it: "HH:MM".
fn local_hhmm(minutes: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let out = Command::new(tool("date")).args(["-d", &format!("@{}", now + minutes * 60), "+%H:%M"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A window from `from` to `to` minutes from now (minute precision: "from -1" includes now).
fn window(from: i64, to: i64) -> String {
    format!("{}-{}", local_hhmm(from), local_hhmm(to))
}

/// `regcert verify --json`: is the installed leaf the one the registry serves?
fn serves_installed(s: &Setup) -> bool {
    let v = s.run(&["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&v.stdout).unwrap_or_else(|e| panic!("{e}: {v:?}"));
    let r = &report[0]["report"];
    r["served"]["sha256"] == r["expected_sha256"]
}

fn pending_record(s: &Setup) -> std::path::PathBuf {
    s.state().join("certs/registry/reload-pending.json")
}

/// A Pebble certificate served by a registry container that regcert restarts within `window`.
fn registry_with_window(pebble: &Pebble, window: &str) -> (Setup, Registry) {
    let (s, name) = issued(pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let reload = toml! { docker = { container = (reg.container.as_str()), action = "restart" } window = (window) };
    reload_and_verify(&s, reload, Some(verify_registry(pebble, &name, &reg)));
    (s, reg)
}

#[test]
fn outside_the_window_the_pair_is_installed_and_the_restart_waits_for_the_window() {
    let pebble = Pebble::start();
    let (s, reg) = registry_with_window(&pebble, &window(120, 180));
    let (before, started) = (serial(&s.fullchain("registry")), reg.started_at());

    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("reload pending until") && run.stdout.contains("(1 installed, reload pending)"), "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), before, "the new pair is installed at once");
    assert_eq!(reg.started_at(), started, "the registry was not restarted");
    assert!(!serves_installed(&s), "the registry keeps serving the previous certificate");
    assert!(pending_record(&s).exists());
    assert!(!s.state().join("certs/registry/installing.json").exists(), "the install is over: nothing for the next run to repair");
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("installed, reload pending until"), "{status:?}");

    // Still outside: nothing happens.
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("not due;") && run.stdout.contains("installed, reload pending until"), "{run:?}");
    assert_eq!(reg.started_at(), started);
    assert!(pending_record(&s).exists());

    // The window (as configured now) includes the present: the next run restarts and verifies.
    s.edit_cert("registry", |c| set(c, "reload.window", window(-1, 10)));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
    assert!(run.stdout.contains("reloaded the certificate installed earlier"), "{run:?}");
    assert!(run.stdout.contains("is open") && run.stdout.contains("verified:"), "{run:?}");
    assert_ne!(reg.started_at(), started, "restarted in the window");
    assert!(serves_installed(&s));
    assert!(!pending_record(&s).exists());
    assert!(!s.run(&["status"]).stdout.contains("reload pending"));
}

#[test]
fn a_served_certificate_that_would_expire_before_the_window_is_replaced_now() {
    let ip = fixed_ip();
    // Leaves of two hours: the window opening in three would find the served one expired.
    let s = ca_setup(toml::Table::new(), toml! { ips = [(ip.as_str())] key = "ecdsa-p256" validity = "2h" });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { ip: Some(ip.clone()), ..Default::default() });
    let settings = toml! {
        [reload]
        docker = { container = (reg.container.as_str()) }
        window = (window(180, 240))

        [verify]
        url = (format!("https://{ip}:5000/v2/"))
        timeout = "20s"
    };
    s.edit_cert("registry", |c| c.extend(settings));
    let started = reg.started_at();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("; reloaded; verified:") && !run.stdout.contains("pending"), "{run:?}");
    assert_ne!(reg.started_at(), started);
    assert!(!pending_record(&s).exists());
}

/// `regcert run` restarts when the window opens, whatever its check schedule (here: yearly);
/// the pending reload shows in a notification and in the metrics until then.
#[test]
fn the_daemon_reloads_when_the_window_opens() {
    let pebble = Pebble::start();
    // The next minute (or the one after, when this one is nearly over) opens the window.
    let second = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 60;
    let opens = if second < 45 { 1 } else { 2 };
    let (s, reg) = registry_with_window(&pebble, &window(opens, opens + 10));
    let metrics = format!("127.0.0.1:{}", free_port());
    let events = s.root.path().join("events.jsonl");
    let script = s.root.path().join("notify.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat >> {0}\necho >> {0}\n", events.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.edit(|c| {
        set(c, "daemon.check", "0 0 0 1 1 *");
        set(c, "metrics.listen", metrics.as_str());
        c.insert("notify".into(), toml::Value::Array(vec![toml::Value::Table(toml! { command = [(script.display().to_string())] })]));
    });
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("reload pending until"), "{run:?}");
    let started = reg.started_at();
    let status: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
    let until = status[0]["reload_pending"]["until"].as_u64().expect("status --json shows the pending reload");
    let event: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&events).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(event["event"], "reload_pending");
    assert!(event["reload_pending_until"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");

    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 certificates: 0 renewed", 1, Duration::from_secs(30));
    assert_eq!(reg.started_at(), started, "not before the window");
    let gauge = |v: u64| format!("regcert_reload_pending_timestamp_seconds{{name=\"registry\"}} {v}");
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(text.contains(&gauge(until)), "{text}");
    d.wait_for_log("1 certificates: 1 renewed, 0 failed", 1, Duration::from_secs(60 * opens as u64 + 60));
    assert!(d.log_text().contains("a reload window opens"), "{}", d.log_text());
    assert_ne!(reg.started_at(), started, "restarted when the window opened");
    assert!(serves_installed(&s));
    assert!(!pending_record(&s).exists());
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(text.contains(&gauge(0)), "{text}");
    assert!(std::fs::read_to_string(&events).unwrap().contains("\"event\":\"renewed\""));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

/// The delayed verification fails: the pair the registry served all along comes back, also
/// when a second renewal was installed while the first one waited (a pair never served is
/// never kept as the known-good one).
#[test]
fn a_failed_verification_in_the_window_restores_the_pair_that_was_served() {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    // A "restart" that does nothing: the registry keeps serving the first certificate.
    let mut verify = verify_registry(&pebble, &name, &reg);
    set(&mut verify, "timeout", "2s");
    reload_and_verify(&s, toml! { command = ["true"] disruptive = true window = (window(120, 180)) }, Some(verify));
    let served = (std::fs::read(s.fullchain("registry")).unwrap(), std::fs::read(s.key("registry")).unwrap());

    for _ in 0..2 {
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("reload pending until"), "{run:?}");
    }
    assert_ne!(std::fs::read(s.fullchain("registry")).unwrap(), served.0);

    s.edit_cert("registry", |c| set(c, "reload.window", window(-1, 10)));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("ROLLED BACK") && run.stdout.contains("is installed and served again"), "{run:?}");
    assert_eq!(std::fs::read(s.fullchain("registry")).unwrap(), served.0, "the certificate served all along is back");
    assert_eq!(std::fs::read(s.key("registry")).unwrap(), served.1);
    assert!(!pending_record(&s).exists());
}
