//! `regcert run` as a real process: scheduled checks against Pebble and a registry container,
//! signals, backoff through a CA outage, the metrics endpoint and webhook notifications.

use crate::common::registry::*;
use crate::common::*;
use std::fs;
use std::time::Duration;
use toml::{Table, toml};

/// Adds top-level settings ([daemon], [metrics], [[notify]]) to the config.
fn with_daemon_settings(s: &Setup, settings: Table) {
    s.edit(|c| c.extend(settings));
}

#[test]
fn daemon_renews_restarts_verifies_reports_metrics_and_notifies() {
    let pebble = Pebble::start();
    let name = unique_name("daemon");
    let s = Setup::new(&pebble, &[cert("registry", &[&name], "ecdsa-p256").always_due()]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let hook = Webhook::start();
    let metrics = format!("127.0.0.1:{}", free_port());
    with_daemon_settings(
        &s,
        toml! {
            [daemon]
            check = "0 0 0 1 1 *"

            [metrics]
            listen = (metrics.as_str())

            [[notify]]
            webhook = (hook.url.as_str())
        },
    );
    s.edit_cert("registry", |c| {
        set(c, "reload.docker.container", reg.container.as_str());
        set(c, "verify", verify_table(&pebble, &format!("https://{name}:5000/v2/"), &reg.addr()));
    });
    let before = serial(&s.fullchain("registry"));

    let mut d = Daemon::start(&s.config);
    // The start-up check renews, restarts the registry and verifies.
    let body = hook.wait_for("\"event\":\"renewed\"", Duration::from_secs(60));
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["certificate"], "registry");
    assert_eq!(event["domains"][0], name.as_str());
    d.wait_for_log("regcert run", 1, Duration::from_secs(5));
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    let after = serial(&s.fullchain("registry"));
    assert_ne!(after, before);
    assert!(d.log_text().contains("verified: the registry serves the new certificate"), "{}", d.log_text());
    let v = s.run(&["verify"]);
    assert_eq!(v.code, 0, "{v:?}");

    // Metrics: the expiry of what is installed, readiness, counters.
    let not_after: u64 = {
        let st: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
        st[0]["not_after"].as_u64().unwrap()
    };
    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(text.contains(&format!("regcert_certificate_expiration_timestamp_seconds{{name=\"registry\"}} {not_after}")), "{text}");
    assert!(text.contains("regcert_renewals_total{name=\"registry\",result=\"success\"} 1"), "{text}");
    assert!(text.contains("regcert_verify_success{name=\"registry\"} 1"), "{text}");
    assert!(text.contains("regcert_acme_requests_total{method=\"POST\""), "{text}");
    assert_eq!(http_get(&metrics, "/readyz").0, 200);
    assert_eq!(http_get(&metrics, "/healthz").0, 200);

    // status shows the schedule the daemon keeps.
    let st = s.run(&["status"]);
    assert!(st.stdout.contains("next check:") && st.stdout.contains("last result: ok"), "{st:?}");

    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
}

#[test]
fn sighup_with_a_bad_config_keeps_running_and_a_good_one_applies() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));

    let good = fs::read_to_string(&s.config).unwrap();
    fs::write(&s.config, good.replace("domains", "domian")).unwrap();
    d.signal("HUP");
    d.wait_for_log("keeping the previous one", 1, Duration::from_secs(10));
    assert!(d.running());

    fs::write(&s.config, good).unwrap();
    with_daemon_settings(&s, toml! { [daemon] check = "*/2 * * * * *" });
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    // The new schedule (every 2 s) is in force: more checks follow.
    d.wait_for_log("0 renewed, 0 failed", 3, Duration::from_secs(20));
    d.signal("INT");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
}

#[test]
fn ca_outage_backs_off_and_recovers() {
    let mut pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    with_daemon_settings(&s, toml! { [daemon] check = "* * * * * *" backoff = ["1s", "2s"] });
    pebble.stop();
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("renewal failed; backing off", 2, Duration::from_secs(30));
    // Between attempts it waits instead of hammering the CA.
    d.wait_for_log("due, but backing off after failures", 1, Duration::from_secs(10));
    let schedule: serde_json::Value = serde_json::from_slice(&fs::read(s.state().join("certs/registry/schedule.json")).unwrap()).unwrap();
    assert!(schedule["failures"].as_u64().unwrap() >= 2, "{schedule}");
    assert!(schedule["last_result"]["message"].as_str().unwrap().contains("cannot reach the ACME server"), "{schedule}");
    assert!(!s.fullchain("registry").exists());

    pebble.restart();
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    let schedule: serde_json::Value = serde_json::from_slice(&fs::read(s.state().join("certs/registry/schedule.json")).unwrap()).unwrap();
    assert_eq!(schedule["failures"], 0, "{schedule}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

#[test]
fn sigterm_in_the_middle_of_a_renewal_leaves_a_consistent_pair() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").always_due()]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let before = serial(&s.fullchain("registry"));
    // The reload runs after the new pair is installed; it says so in a file, then takes 2 s:
    // SIGTERM lands in that window every time, with the renewal half done.
    let marker = s.root.path().join("reloading");
    let reload = format!("touch '{}'; sleep 2", marker.display());
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = [(tool("sh").display().to_string()), "-c", (reload.as_str())] });
        set(c, "verify", toml! { enabled = false });
    });
    let mut d = Daemon::start(&s.config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(d.running() && std::time::Instant::now() < deadline, "the reload never started:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), 0, "{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("letting the check in flight finish"), "{log}");
    // The renewal in flight was completed, not abandoned.
    assert!(log.contains("1 renewed, 0 failed"), "{log}");
    assert_ne!(serial(&s.fullchain("registry")), before, "the new certificate stays installed");
    assert_eq!(serial(&s.state().join("certs/registry/cert.pem")), serial(&s.fullchain("registry")));
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    let names: Vec<String> =
        fs::read_dir(s.install_dir("registry")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "no temp files left: {names:?}");
}

#[test]
fn expiring_certificate_alerts_through_webhook_and_command() {
    let mut pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let hook = Webhook::start();
    let out = s.root.path().join("events.jsonl");
    let script = s.root.path().join("notify.sh");
    fs::write(&script, format!("#!/bin/sh\n{{ cat; echo \" $REGCERT_EVENT $REGCERT_CERTIFICATE\"; }} >> {}\n", out.display())).unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Due (renew_before), the CA is down, so it is not renewed, and "expires within 3000 days" is
    // true: alert. (A certificate that is not due yet is never late, whatever alert_before says.)
    s.edit_cert("registry", |c| set(c, "renew_before", "3000d"));
    pebble.stop();
    with_daemon_settings(
        &s,
        toml! {
            [daemon]
            alert_before = "3000d"

            [[notify]]
            webhook = (hook.url.as_str())
            events = ["expiring"]

            [[notify]]
            command = [(script.display().to_string())]
        },
    );
    let mut d = Daemon::start(&s.config);
    let body = hook.wait_for("\"event\":\"expiring\"", Duration::from_secs(30));
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["certificate"], "registry");
    assert!(event["days_left"].as_i64().unwrap() > 1000);
    assert!(event["error"].as_str().is_some_and(|e| e.contains("cannot reach the ACME server")), "{event}");
    d.wait_for_log("0 renewed, 1 failed", 1, Duration::from_secs(30));
    let got = fs::read_to_string(&out).unwrap();
    assert!(got.contains("\"event\":\"expiring\"") && got.ends_with(" expiring registry\n"), "{got}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

#[test]
fn a_missing_install_dir_fails_only_its_certificate_and_the_service_keeps_running() {
    let s = Setup::with_config(
        toml! {
            [ca]
            internal = {}

            [daemon]
            check = "* * * * * *"
            backoff = ["1s"]
        },
        &[
            CertSpec::new("good", toml! { issuer = "ca:internal" domains = ["good.corp.lan"] }),
            CertSpec::new("late", toml! { issuer = "ca:internal" domains = ["late.corp.lan"] }),
        ],
    );
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    // `late`'s volume is not mounted yet at boot: the service starts anyway and serves `good`.
    fs::remove_dir(s.install_dir("late")).unwrap();
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("2 certificates: 1 renewed, 1 failed", 1, Duration::from_secs(30));
    assert!(d.log_text().contains("install.dir") && d.log_text().contains("does not exist"), "{}", d.log_text());
    assert_key_matches(&s.fullchain("good"), &s.key("good"));
    // Mounted: the next attempt after the backoff renews it.
    fs::create_dir(s.install_dir("late")).unwrap();
    d.wait_for_log("2 certificates: 1 renewed, 0 failed", 1, Duration::from_secs(30));
    assert_key_matches(&s.fullchain("late"), &s.key("late"));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}
