//! The systemd side: the unit files pass `systemd-analyze verify`, and `regcert run` speaks the
//! notify protocol (READY=1, STATUS=, STOPPING=1) on $NOTIFY_SOCKET.

use crate::common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = ["regcert.service", "regcert-renew.service", "regcert-renew.timer"];
    for unit in units {
        // ExecStart must name an executable that exists here: point it at the test build.
        let text =
            std::fs::read_to_string(format!("systemd/{unit}")).unwrap().replace("/usr/local/bin/regcert", env!("CARGO_BIN_EXE_regcert"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new(tool("systemd-analyze")).arg("verify").args(units.iter().map(|u| dir.path().join(u))).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("regcert")).collect();
    assert!(ours.is_empty(), "warnings about our units: {ours:?}");
    let service = std::fs::read_to_string("systemd/regcert.service").unwrap();
    // Directives only: a commented-out line does not harden anything.
    let directives: Vec<&str> = service.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])).collect();
    for hardening in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "SupplementaryGroups=docker",
        "WatchdogSec=",
    ] {
        assert!(directives.iter().any(|d| d.starts_with(hardening)), "regcert.service lacks {hardening}");
    }
}

#[test]
fn run_speaks_the_notify_protocol() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let sock_path = s.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // Killed however the test ends: a daemon that never says READY must not outlive it.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_regcert"))
            .arg("--config")
            .arg(&s.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000")
            .env("WATCHDOG_PID", "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    let mut stopped = false;
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
        let ready = seen.contains("READY=1") && seen.contains("STATUS=1 certificates") && seen.contains("WATCHDOG=1");
        if ready && !stopped {
            Command::new(tool("kill")).args(["-TERM", &child.0.id().to_string()]).status().unwrap();
            stopped = true;
        }
        if stopped && seen.contains("STOPPING=1") {
            break;
        }
    }
    assert!(stopped, "no READY=1, STATUS= and WATCHDOG=1 within 30 s: {seen}");
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(30), "regcert run did not exit after SIGTERM: {seen}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(seen.contains("STATUS=1 certificates: 0 renewed, 0 failed"), "{seen}");
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
    assert!(seen.contains("STOPPING=1"), "{seen}");
    assert_eq!(status.code(), Some(0));
}

/// The watchdog is fed from the progress of the work: while a check is stuck on a CA that never
/// answers (a fixture: no real CA stalls on demand), WATCHDOG=1 stops — systemd would restart
/// the service — and once the request's bound ends the check, it comes back.
#[test]
fn the_watchdog_starves_while_a_check_is_stuck() {
    let ca = crate::common::stall::StalledServer::start();
    let config = toml::toml! {
        [acme]
        directory = (ca.directory_url.as_str())
        accept_terms = true
        timeout = "4s"

        [http01]
        listen = (format!("127.0.0.1:{}", free_port()))
    };
    let s = Setup::with_config(config, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let sock_path = s.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let started = Instant::now();
    let _child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_regcert"))
            .arg("--config")
            .arg(&s.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000")
            .env("WATCHDOG_PID", "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // (when, message) of every datagram until the first check has ended and the watchdog is fed again.
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = |seen: &[(Duration, String)]| {
        let status = seen.iter().position(|(_, m)| m.contains("STATUS=1 certificates: 0 renewed, 1 failed"));
        status.is_some_and(|i| seen[i..].iter().any(|(_, m)| m.contains("WATCHDOG=1")))
    };
    while !ended(&seen) {
        assert!(started.elapsed() < Duration::from_secs(30), "the check did not end and feed the watchdog again: {seen:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push((started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    let pings: Vec<Duration> = seen.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).map(|(t, _)| *t).collect();
    let longest = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    // Fed every 250 ms while work moves; starved from half the interval (0.5 s) of no progress
    // until the 4 s request bound ends the check.
    assert!(longest >= Duration::from_millis(2_500), "WATCHDOG=1 never stopped while the check was stuck: {pings:?}");
    assert!(longest < Duration::from_secs(10), "fed again once the bound ended the check: {pings:?}");
    assert!(ca.connections() >= 1, "the check was stuck on the CA");
}
