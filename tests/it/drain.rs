//! `[certificate.reload] drain`: a restart waits for the transfers in flight. A real `docker push`
//! of a large layer, slowed down on the container's link so that it is certainly in flight,
//! runs while `regcert renew --force` restarts the registry container. `hold`: a loop of real
//! `docker pull`s across the restart, and a client connecting to a host port while a command
//! restarts what listens there.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use toml::toml;

use crate::common::registry::*;
use crate::common::*;
use crate::registry::{issued, reload_and_verify, verify_registry};

/// What the upload to the registry container is slowed down to: the large layer takes ~16 s.
const RATE: &str = "12mbit";

/// A registry serving a Pebble certificate, restarted by regcert (with `drain`, if given), the
/// docker client trusting it; then a push of the large image in flight while `renew --force`
/// runs. Returns the renewal, the push's output, and whether the push ended before the renewal.
fn renew_during_a_push(drain: Option<&str>) -> (Run, Output, bool, Registry) {
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let mut reload = toml! { docker = { container = (reg.container.as_str()), action = "restart" } };
    if let Some(drain) = drain {
        reload.insert("drain".into(), drain.into());
    }
    reload_and_verify(&s, reload, Some(verify_registry(&pebble, &name, &reg)));
    let trust = DockerClientTrust::new(&name, &reg.ip, 5000, &pebble.issuing_root());
    // A small push first: dockerd resolves the new name and trusts the CA before the timed part.
    let small = format!("{name}:5000/tiny:1");
    docker(&["tag", TINY, &small]);
    docker_retry(&["push", &small]).expect("docker push of the small image");
    docker(&["rmi", &small]);

    let repo = format!("{name}:5000/large:1");
    docker(&["tag", large_image(), &repo]);
    reg.throttle_uploads(RATE);
    let push: JoinHandle<(Output, Instant)> = {
        let repo = repo.clone();
        std::thread::spawn(move || {
            let out = Command::new(tool("docker")).args(["push", &repo]).output().unwrap();
            (out, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    assert!(!push.is_finished(), "the push must still be in flight when the renewal starts");
    let run = s.run(&["renew", "--force"]);
    let renewed = Instant::now();
    let (out, pushed) = push.join().unwrap();
    let _ = Command::new(tool("docker")).args(["rmi", &repo]).output();
    drop(trust);
    (run, out, pushed < renewed, reg)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn drain_lets_a_push_in_flight_finish_before_the_restart() {
    let (run, push, push_first, reg) = renew_during_a_push(Some("2m"));
    let pushed = text(&push);
    assert!(push.status.success(), "the push failed: {pushed}\nregcert: {run:?}");
    assert!(!pushed.contains("Retrying"), "the push was cut and retried: {pushed}");
    assert!(push_first, "the push ended before the renewal (which restarted the registry after it): {run:?}");
    assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
    assert!(run.stderr.contains("drain: waiting for client connections to end before the restart"), "{run:?}");
    assert!(run.stderr.contains("drain: every client connection has ended; restarting"), "{run:?}");
    assert!(run.stdout.contains("reloaded; verified:"), "restarted after the drain, then verified: {run:?}");
}

/// The same push without `drain`: the restart cuts it (the problem `drain` solves is real).
#[test]
fn without_drain_the_restart_cuts_a_push_in_flight() {
    let (run, push, _, reg) = renew_during_a_push(None);
    let pushed = text(&push);
    assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
    assert!(!run.stderr.contains("drain:"), "{run:?}");
    assert!(
        !push.status.success() || pushed.contains("Retrying"),
        "the restart should have cut the push (failed, or retried by the docker client): {pushed}"
    );
}

/// A certificate of the local CA, installed, whose reload is a disruptive shell command (made
/// from the setup's directory) guarded by `setting` (drain or hold) on a free `port` of this
/// host; verification is off (nothing serves the certificate).
fn restarted_by_a_host_command(script: impl FnOnce(&std::path::Path) -> String, setting: (&str, &str)) -> (Setup, u16) {
    let s = ca_setup(toml::Table::new(), toml! { domains = ["registry.corp.lan"] });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    let port = free_port();
    let mut reload = toml! {
        command = ["/bin/sh", "-c", (script(s.root.path()))]
        disruptive = true
        port = (i64::from(port))
    };
    reload.insert(setting.0.into(), setting.1.into());
    s.edit_cert("registry", |c| {
        set(c, "reload", reload);
        set(c, "verify.enabled", false);
    });
    (s, port)
}

/// A disruptive command on the host drains the configured `port`: it waits for a client
/// connection to end, and when one never does, restarts at the limit anyway (and says so).
#[test]
fn a_disruptive_command_waits_for_the_connections_on_the_host_port() {
    let (s, port) = restarted_by_a_host_command(|dir| format!("date +%s%N > {}", dir.join("restarted").display()), ("drain", "30s"));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let restarted = s.root.path().join("restarted");

    // A client that stays 3 s: the restart comes after it left.
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let leaves = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        drop(client);
        std::time::SystemTime::now()
    });
    let run = s.run(&["renew", "--force"]);
    let left = leaves.join().unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("drain: every client connection has ended; restarting"), "{run:?}");
    let at: u128 = std::fs::read_to_string(&restarted).unwrap().trim().parse().unwrap();
    let left = left.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    assert!(at >= left, "the command ran after the client left ({at} < {left})");

    // A client that never leaves: restarted at the limit, with a warning.
    s.edit_cert("registry", |c| set(c, "reload.drain", "1s"));
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _accepted = listener.accept().unwrap();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("drain: limit reached with client connections still open; restarting anyway"),
        "{run:?}"
    );
}

/// A pull every 1.3 s (a fleet of nodes pulling now and then) while `renew --force` restarts the
/// registry with `drain` and `hold`: drain restarts in a gap between two pulls, and a pull that
/// comes during the restart waits for the registry instead of being refused. No pull fails.
#[test]
fn a_pull_loop_across_a_rotation_with_drain_and_hold_sees_no_failed_pull() {
    pulls_across_a_rotation_with_drain_and_hold(false);
}

/// The same through a published port (`-p GATEWAY:PORT:5000`, the way most registries are
/// reached): the hold covers the host port as well as the container's own address.
#[test]
fn hold_covers_the_registrys_published_port() {
    pulls_across_a_rotation_with_drain_and_hold(true);
}

/// Whether one of the loop's pulls falls into the half second of the restart is chance, so one
/// more pull is started exactly then: as soon as the hold's element for the registry (its
/// address, or its published port) shows in nftables. That pull must be served by the
/// registry's new process.
fn pulls_across_a_rotation_with_drain_and_hold(publish: bool) {
    type Pull = (SystemTime, SystemTime, Output);
    let pebble = Pebble::start();
    let (s, name) = issued(&pebble);
    let published = publish.then(free_port);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { publish: published, ..Default::default() });
    // Where clients connect, and the element of `inet regcert` that holds them.
    let ((ip, port), (set, element)) = match published {
        Some(p) => ((gateway(), p), ("ports", p.to_string())),
        None => ((reg.ip.clone(), 5000), ("v4", format!("{} . 5000", reg.ip))),
    };
    let reload = toml! {
        docker = { container = (reg.container.as_str()), action = "restart" }
        drain = "2m"
        hold = "30s"
    };
    let verify = verify_table(&pebble, &format!("https://{name}:{port}/v2/"), &format!("{ip}:{port}"));
    reload_and_verify(&s, reload, Some(verify));
    let trust = DockerClientTrust::new(&name, &ip, port, &pebble.issuing_root());
    let image = format!("{name}:{port}/tiny:1");
    docker(&["tag", TINY, &image]);
    docker_retry(&["push", &image]).expect("docker push of the small image");
    let pull = |image: &str| -> Pull {
        let started = SystemTime::now();
        let out = Command::new(tool("docker")).args(["pull", image]).output().unwrap();
        (started, SystemTime::now(), out)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let pulls: JoinHandle<Vec<Pull>> = {
        let (stop, image) = (stop.clone(), image.clone());
        std::thread::spawn(move || {
            let mut pulls = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                pulls.push(pull(&image));
                std::thread::sleep(Duration::from_millis(1300));
            }
            pulls
        })
    };
    let during: JoinHandle<Option<Pull>> = {
        let (stop, image) = (stop.clone(), image.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let listed = Command::new(tool("nft")).args(["list", "set", "inet", "regcert", set]).output().unwrap();
                if String::from_utf8_lossy(&listed.stdout).contains(&format!("{element} timeout")) {
                    return Some(pull(&image));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = reg.started_at();
    let run = s.run(&["renew", "--force"]);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let (pulls, during) = (pulls.join().unwrap(), during.join().unwrap());
    let restarted = reg.started_at();
    let _ = Command::new(tool("docker")).args(["rmi", &image]).output();
    drop(trust);

    assert_eq!(run.code, 0, "{run:?}\n{}", reg.logs());
    assert_ne!(before, restarted, "the registry was restarted");
    assert!(run.stderr.contains("hold: new connections wait while the registry restarts"), "{run:?}");
    assert!(run.stderr.contains("hold: new connections let through"), "{run:?}");
    assert!(run.stdout.contains("reloaded; verified:"), "{run:?}");
    let failed: Vec<String> = pulls.iter().filter(|(_, _, o)| !o.status.success()).map(|(_, _, o)| text(o)).collect();
    assert!(failed.is_empty(), "{} of {} pulls failed: {failed:?}\nregcert: {run:?}", failed.len(), pulls.len());
    assert!(pulls.len() >= 5, "{} pulls", pulls.len());

    // The pull started during the restart: served by the registry's new process, not refused.
    let (started, ended, out) = during.unwrap_or_else(|| panic!("the hold never showed in `nft list set inet regcert {set}`: {run:?}"));
    assert!(out.status.success(), "the pull started during the restart failed: {}\nregcert: {run:?}", text(&out));
    let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let new_process = unix_nanos_of(&restarted);
    assert!(
        nanos(started) < new_process && nanos(ended) > new_process,
        "the pull ({}..{}) began before the new registry process started ({new_process}) and ended after it",
        nanos(started),
        nanos(ended)
    );
}

/// Docker's RFC 3339 time with nanoseconds, as nanoseconds since the epoch (`date` parses it).
fn unix_nanos_of(rfc3339: &str) -> u128 {
    let out = Command::new(tool("date")).args(["-u", "-d", rfc3339, "+%s%N"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("date -d {rfc3339}: {out:?}"))
}

/// A disruptive command on the host with `hold`: a client that connects to the `port` while the
/// command has nothing listening there waits and is served once the listener is back, instead of
/// being refused. The listener is a plain TCP server in this test (the hold is about the port,
/// whatever serves it); the command stops it, waits 2 s, and starts it again.
#[test]
fn hold_keeps_a_client_waiting_through_a_restart_on_a_host_port() {
    // The "registry": a listener that the command asks to go away (a file), then brings back.
    let script = |dir: &std::path::Path| {
        format!("touch {down}; sleep 2; touch {up}", down = dir.join("down").display(), up = dir.join("up").display())
    };
    let (s, port) = restarted_by_a_host_command(script, ("hold", "20s"));
    let (down, up) = (s.root.path().join("down"), s.root.path().join("up"));
    let server = {
        let (down, up) = (down.clone(), up.clone());
        std::thread::spawn(move || {
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            while !down.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(listener);
            while !up.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            std::io::Write::write_all(&mut conn, b"served by the new listener\n").unwrap();
        })
    };
    let client = {
        let down = down.clone();
        std::thread::spawn(move || {
            while !down.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            let asked = Instant::now();
            let mut conn = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(15))
                .map_err(|e| format!("connect during the restart: {e}"))?;
            let mut got = String::new();
            std::io::Read::read_to_string(&mut conn, &mut got).map_err(|e| e.to_string())?;
            Ok::<_, String>((got, asked.elapsed()))
        })
    };
    let run = s.run(&["renew", "--force"]);
    server.join().unwrap();
    let (got, waited) = client.join().unwrap().unwrap_or_else(|e| panic!("{e}\nregcert: {run:?}"));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(got, "served by the new listener\n");
    assert!(waited >= Duration::from_millis(1000), "the connect waited for the listener to come back: {waited:?}");
    assert!(run.stderr.contains("hold: new connections wait while the registry restarts") && run.stderr.contains("port"), "{run:?}");
    assert!(run.stderr.contains("hold: new connections let through"), "{run:?}");

    // Where `nft` cannot be found, the renewal stops before anything is installed, and says why.
    let served = std::fs::read(s.fullchain("registry")).unwrap();
    let mut cmd = Command::new(regcert_bin());
    cmd.arg("--config").arg(&s.config).args(["renew", "--force"]).env("PATH", "/usr/bin:/bin").env_remove("RUST_LOG");
    let run = output(&mut cmd);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[certificate.reload] hold: the `nft` program is not installed"), "{run:?}");
    assert_eq!(std::fs::read(s.fullchain("registry")).unwrap(), served, "the installed pair stays");
}
