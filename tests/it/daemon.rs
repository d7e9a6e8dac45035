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
    let watched = Watched::start();
    with_daemon_settings(&s, watched.settings());
    let Watched { hook, metrics } = watched;
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
fn expiring_certificate_alerts_through_webhook_and_command_once() {
    let mut pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let hook = Webhook::start();
    let (script, out) = notify_command(&s);
    // Due (renew_before), the CA is down, so it is not renewed, and "expires within 3000 days" is
    // true: alert. (A certificate that is not due yet is never late, whatever alert_before says.)
    s.edit_cert("registry", |c| set(c, "renew_before", "3000d"));
    pebble.stop();
    with_daemon_settings(
        &s,
        toml! {
            [daemon]
            alert_before = "3000d"
            check = "* * * * * *"

            [[notify]]
            webhook = (hook.url.as_str())
            events = ["expiring"]

            [[notify]]
            command = [(script.as_str())]
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
    // Once for this certificate (serial): not again at the next checks, nor after a restart
    // (remembered in state_dir). The repeat a day later is not waited for here.
    let alerts = || {
        let webhook = hook.bodies.lock().unwrap().iter().filter(|b| b.contains("\"event\":\"expiring\"")).count();
        (webhook, fs::read_to_string(&out).unwrap().matches(" expiring registry\n").count())
    };
    d.wait_for_log("1 certificates:", 4, Duration::from_secs(30));
    assert_eq!(alerts(), (1, 1), "{}", d.log_text());
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 certificates:", 3, Duration::from_secs(30));
    assert_eq!(alerts(), (1, 1), "{}", d.log_text());
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

/// A private CA `internal` (initialised) and `certs` issued by it, with `settings` at the top
/// level: checks need no network, so a daemon test is about the daemon.
fn private_ca_setup(settings: Table, certs: &[&str]) -> Setup {
    let mut config = toml! { [ca] internal = {} };
    config.extend(settings);
    let specs: Vec<CertSpec> =
        certs.iter().map(|n| CertSpec::new(n, toml! { issuer = "ca:internal" domains = [(format!("{n}.corp.lan"))] })).collect();
    let s = Setup::with_config(config, &specs);
    let init = s.run(&["ca", "init", "internal"]);
    assert_eq!(init.code, 0, "{init:?}");
    s
}

/// A `[[notify]]` command that appends each event's JSON, then ` $REGCERT_EVENT $REGCERT_CERTIFICATE`,
/// to the returned file.
fn notify_command(s: &Setup) -> (String, std::path::PathBuf) {
    let out = s.root.path().join("events.jsonl");
    let script = s.root.path().join("notify.sh");
    fs::write(&script, format!("#!/bin/sh\n{{ cat; echo \" $REGCERT_EVENT $REGCERT_CERTIFICATE\"; }} >> {}\n", out.display())).unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script.display().to_string(), out)
}

/// A reload command for certificate `name` that logs "start NAME NANOS" and "end NAME NANOS" to
/// `log` around a sleep of `secs`, then exits with `code`.
fn timed_reload(name: &str, log: &std::path::Path, secs: u32, code: i32) -> Table {
    let l = log.display();
    let script = format!("echo \"start {name} $(date +%s%N)\" >> {l}; sleep {secs}; echo \"end {name} $(date +%s%N)\" >> {l}; exit {code}");
    toml! { command = [(tool("sh").display().to_string()), "-c", (script.as_str())] }
}

/// (name, start, end) of every reload in a [`timed_reload`] log, in nanoseconds.
fn reload_intervals(log: &std::path::Path) -> Vec<(String, u128, u128)> {
    let text = fs::read_to_string(log).unwrap();
    let at = |kind: &str, name: &str| -> u128 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{kind} {name} "))).unwrap_or_else(|| panic!("no {kind} of {name}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("start ")).map(|l| l.split(' ').next().unwrap()).collect();
    names.iter().map(|n| (n.to_string(), at("start", n), at("end", n))).collect()
}

/// The most reloads running at one moment.
fn most_at_once(intervals: &[(String, u128, u128)]) -> usize {
    intervals.iter().map(|(_, start, _)| intervals.iter().filter(|(_, s, e)| s <= start && start < e).count()).max().unwrap_or(0)
}

#[test]
fn concurrency_bounds_the_renewals_at_once_and_a_failing_certificate_blocks_no_other() {
    let hook = Webhook::start();
    let s = private_ca_setup(
        toml! {
            concurrency = 2
            [daemon]
            check = "0 0 0 1 1 *"
            [[notify]]
            webhook = (hook.url.as_str())
        },
        &["slowbad", "a", "b", "c"],
    );
    let (script, events) = notify_command(&s);
    s.edit(|c| c["notify"].as_array_mut().unwrap().push(toml! { command = [(script.as_str())] }.into()));
    let log = s.root.path().join("reloads.log");
    // `slowbad` comes first and holds one of the two slots for 6 s before its reload fails; the
    // others take 1 s each and go through the other slot meanwhile.
    for (n, secs, code) in [("slowbad", 6, 3), ("a", 1, 0), ("b", 1, 0), ("c", 1, 0)] {
        s.edit_cert(n, |c| {
            set(c, "reload", timed_reload(n, &log, secs, code));
            set(c, "verify.enabled", false);
        });
    }
    let metrics = format!("127.0.0.1:{}", free_port());
    s.edit(|c| set(c, "metrics.listen", metrics.as_str()));

    let mut d = Daemon::start(&s.config);
    d.wait_for_log("4 certificates: 3 renewed, 1 failed", 1, Duration::from_secs(60));
    let intervals = reload_intervals(&log);
    assert_eq!(intervals.len(), 4, "{intervals:?}");
    assert_eq!(most_at_once(&intervals), 2, "concurrency = 2: two renewals at once, never more: {intervals:?}");
    let slow_end = intervals.iter().find(|i| i.0 == "slowbad").unwrap().2;
    for (name, _, end) in intervals.iter().filter(|i| i.0 != "slowbad") {
        assert!(*end < slow_end, "{name} finished while the failing certificate was still busy: {intervals:?}");
        assert_key_matches(&s.fullchain(name), &s.key(name));
    }
    // slowbad's pair is installed (the reload failed afterwards), but the failure is reported.
    let log_text = d.log_text();
    assert!(log_text.contains("renewal failed; backing off") && log_text.contains("cert=slowbad"), "{log_text}");

    // `failed`, by webhook and by command, naming what failed.
    let body = hook.wait_for("\"event\":\"failed\"", Duration::from_secs(10));
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["certificate"], "slowbad");
    let error = event["error"].as_str().unwrap();
    assert!(error.contains("reload `") && error.contains("exit status: 3"), "{event}");
    let got = fs::read_to_string(&events).unwrap();
    assert!(got.contains("\"event\":\"failed\"") && got.contains(" failed slowbad\n"), "{got}");
    assert_eq!(got.matches(" renewed ").count(), 3, "{got}");

    let (_, text) = http_get(&metrics, "/metrics");
    assert!(text.contains("regcert_certificate_ready_status{name=\"slowbad\"} 0"), "{text}");
    assert!(text.contains("regcert_renewals_total{name=\"slowbad\",result=\"failure\"} 1"), "{text}");
    for n in ["a", "b", "c"] {
        assert!(text.contains(&format!("regcert_certificate_ready_status{{name=\"{n}\"}} 1")), "{text}");
        assert!(text.contains(&format!("regcert_renewals_total{{name=\"{n}\",result=\"success\"}} 1")), "{text}");
    }
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

#[test]
fn readyz_waits_for_the_first_check_and_failed_verification_shows_in_metrics_and_notifications() {
    let watched = Watched::start();
    let s = private_ca_setup(watched.settings(), &["rolled", "kept"]);
    let Watched { hook, metrics } = watched;
    let (script, events) = notify_command(&s);
    s.edit(|c| c["notify"].as_array_mut().unwrap().push(toml! { command = [(script.as_str())] }.into()));
    // Both issued once, so that `rolled` has a pair to roll back to.
    assert_eq!(s.run(&["renew"]).code, 0);
    let marker = s.root.path().join("reloading");
    // A name added makes both due. Nothing listens where verification connects: `rolled` is
    // rolled back; `kept` has rollback = false, so its new pair stays, unverified.
    for (name, rollback) in [("rolled", true), ("kept", false)] {
        let reload = format!("touch '{}'; sleep 2", marker.display());
        s.edit_cert(name, |c| {
            set(c, "domains", vec![format!("{name}.corp.lan"), format!("new.{name}.corp.lan")]);
            set(c, "reload", toml! { command = [(tool("sh").display().to_string()), "-c", (reload.as_str())] });
            set(c, "verify", toml! { url = (format!("https://{name}.corp.lan/v2/")) connect_to = (format!("127.0.0.1:{}", free_port())) timeout = "1s" rollback = (rollback) });
        });
    }
    let before = fs::read(s.fullchain("rolled")).unwrap();

    let mut d = Daemon::start(&s.config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(d.running() && std::time::Instant::now() < deadline, "the first check never reached a reload:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first check is still running: alive, not ready.
    assert_eq!(http_get(&metrics, "/healthz").0, 200);
    assert_eq!(http_get(&metrics, "/readyz"), (503, "first check not finished\n".to_owned()));
    d.wait_for_log("2 certificates: 0 renewed, 2 failed", 1, Duration::from_secs(60));
    assert_eq!(http_get(&metrics, "/readyz").0, 200, "ready once the first check finished, failures or not");

    assert_eq!(fs::read(s.fullchain("rolled")).unwrap(), before, "rolled back");
    let (_, text) = http_get(&metrics, "/metrics");
    for (name, result) in [("rolled", "rolled_back"), ("kept", "failure")] {
        assert!(text.contains(&format!("regcert_verify_success{{name=\"{name}\"}} 0")), "{name}: {text}");
        assert!(text.contains(&format!("regcert_certificate_ready_status{{name=\"{name}\"}} 0")), "{name}: {text}");
        assert!(text.contains(&format!("regcert_renewals_total{{name=\"{name}\",result=\"{result}\"}} 1")), "{name}: {text}");
    }
    let body = hook.wait_for("\"event\":\"rolled_back\"", Duration::from_secs(10));
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["certificate"], "rolled");
    assert!(
        event["error"].as_str().unwrap().contains("verification of https://rolled.corp.lan/v2/ failed: cannot connect to 127.0.0.1:"),
        "{event}"
    );
    let body = hook.wait_for("\"event\":\"failed\"", Duration::from_secs(10));
    assert!(body.contains("\"certificate\":\"kept\"") && body.contains("rollback = false"), "{body}");
    let got = fs::read_to_string(&events).unwrap();
    assert!(got.contains(" rolled_back rolled\n") && got.contains(" failed kept\n"), "{got}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

#[test]
fn a_check_skips_its_turn_while_regcert_renew_holds_the_lock() {
    let s = private_ca_setup(toml! { [daemon] check = "* * * * * *" }, &["registry"]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let marker = s.root.path().join("reloading");
    let reload = format!("touch '{}'; sleep 5", marker.display());
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = [(tool("sh").display().to_string()), "-c", (reload.as_str())] });
        set(c, "verify.enabled", false);
    });
    // `regcert renew` holds the lock through its slow reload.
    let renew = std::process::Command::new(regcert_bin())
        .arg("--config")
        .arg(&s.config)
        .args(["renew", "--force"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut renew = Reap(renew);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "regcert renew never reached its reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("another regcert process is working on the state; skipping this check", 2, Duration::from_secs(10));
    assert!(d.log_text().contains("regcert renew"), "the holder is named: {}", d.log_text());
    assert!(!d.log_text().contains("1 certificates:"), "no check ran while the lock was held: {}", d.log_text());
    assert!(renew.0.wait().unwrap().success(), "regcert renew finished its renewal");
    // Lock released: the next turn checks (nothing is due after that renewal).
    d.wait_for_log("1 certificates: 0 renewed, 0 failed, 0 backing off", 1, Duration::from_secs(10));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

/// A self-signed certificate for `name` valid from `now - age` to `now + left` (seconds), with
/// its key, installed in `install`.
fn install_self_signed(install: &std::path::Path, name: &str, age: u64, left: u64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let at = |t: u64| time::OffsetDateTime::from_unix_timestamp(t as i64).unwrap();
    params.not_before = at(now() - age);
    params.not_after = at(now() + left);
    fs::write(install.join("domain.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
    fs::write(install.join("domain.key"), key.serialize_pem()).unwrap();
}

#[test]
fn less_than_a_tenth_of_the_lifetime_left_caps_the_backoff_at_ten_minutes() {
    let mut pebble = Pebble::start();
    let s = Setup::new(
        &pebble,
        &[cert("calm", &["calm.example.com"], "ecdsa-p256").always_due(), cert("urgent", &["urgent.example.com"], "ecdsa-p256")],
    );
    let day = 86_400;
    // calm: 200 of 400 days left (due only by renew_before). urgent: 12 h of 10 days left.
    install_self_signed(&s.install_dir("calm"), "calm.example.com", 200 * day, 200 * day);
    install_self_signed(&s.install_dir("urgent"), "urgent.example.com", 9 * day + day / 2, day / 2);
    with_daemon_settings(&s, toml! { [daemon] check = "0 0 0 1 1 *" backoff = ["6h"] });
    pebble.stop();
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("2 certificates: 0 renewed, 2 failed", 1, Duration::from_secs(60));
    let wait = |name: &str| {
        let sched: serde_json::Value =
            serde_json::from_slice(&fs::read(s.state().join(format!("certs/{name}/schedule.json"))).unwrap()).unwrap();
        sched["retry_at"].as_u64().unwrap() - sched["last_result"]["at"].as_u64().unwrap()
    };
    assert_eq!(wait("calm"), 6 * 3600, "the configured step");
    assert_eq!(wait("urgent"), 600, "an emergency waits at most 10 minutes");
    let log = d.log_text();
    let line = |cert: &str| {
        log.lines()
            .find(|l| l.contains("renewal failed; backing off") && l.contains(&format!("cert={cert}")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("urgent").contains("emergency=true"), "{log}");
    assert!(line("calm").contains("emergency=false"), "{log}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

/// A check still running when `[daemon] stop_grace` ends is abandoned, its reload killed.
#[test]
fn sigterm_abandons_a_check_still_running_after_the_stop_grace() {
    let s = private_ca_setup(
        toml! { [daemon] check = "0 0 0 1 1 *"
        stop_grace = "3s" },
        &["registry"],
    );
    let pid_file = s.root.path().join("reload.pid");
    let reload = format!("echo $$ > '{}'; exec sleep 600", pid_file.display());
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = [(tool("sh").display().to_string()), "-c", (reload.as_str())] });
        set(c, "verify.enabled", false);
    });
    let mut d = Daemon::start(&s.config);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(&pid_file).map_or(true, |p| !p.ends_with('\n')) {
        assert!(d.running() && std::time::Instant::now() < deadline, "the reload never started:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let stopping = std::time::Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(60)), 0, "{}", d.log_text());
    let took = stopping.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(10), "stopped after {took:?}, not after the 3 s stop_grace");
    let log = d.log_text();
    assert!(log.contains("letting the check in flight finish") && log.contains("abandoned the check in flight after 3s"), "{log}");
    // The abandoned reload did not outlive the daemon (a zombie waiting for its reaper is dead).
    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap().split_whitespace().next().unwrap().to_owned());
    assert!(state.as_deref().map_or(true, |s| s == "Z"), "the reload (pid {pid}) still runs: {state:?}");
}
