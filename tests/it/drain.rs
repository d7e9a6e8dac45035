//! `[certificate.reload] drain`: a restart waits for the transfers in flight. A real `docker push`
//! of a large layer, slowed down on the container's link so that it is certainly in flight,
//! runs while `regcert renew --force` restarts the registry container.

use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A disruptive command on the host drains the configured `port`: it waits for a client
/// connection to end, and when one never does, restarts at the limit anyway (and says so).
#[test]
fn a_disruptive_command_waits_for_the_connections_on_the_host_port() {
    let s = ca_setup(toml::Table::new(), toml! { domains = ["registry.corp.lan"] });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let restarted = s.root.path().join("restarted");
    let reload = toml! {
        command = ["/bin/sh", "-c", (format!("date +%s%N > {}", restarted.display()))]
        disruptive = true
        drain = "30s"
        port = (i64::from(port))
    };
    s.edit_cert("registry", |c| {
        set(c, "reload", reload);
        set(c, "verify.enabled", false);
    });

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
