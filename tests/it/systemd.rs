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
            std::fs::read_to_string(format!("systemd/{unit}")).unwrap().replace("/usr/local/bin/regcert", regcert_bin().to_str().unwrap());
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
        Command::new(regcert_bin())
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
