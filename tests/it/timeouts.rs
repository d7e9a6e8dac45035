//! Never hang: a CA that accepts connections and then says nothing costs one certificate a
//! bounded, named failure — each request is bounded by `[acme] timeout`, each certificate's
//! renewal by `renewal_timeout` — and the other certificates are renewed all the same.

use crate::common::stall::StalledServer;
use crate::common::*;
use std::time::{Duration, Instant};
use toml::{Value, toml};

#[test]
fn a_ca_that_never_answers_fails_in_time_and_the_others_are_renewed() {
    let ca = StalledServer::start();
    let url = ca.directory_url.as_str();
    let config = toml! {
        [acme]
        directory = (url)
        accept_terms = true
        timeout = "2s"

        [http01]
        listen = (format!("127.0.0.1:{}", free_port()))

        [ca]
        internal = (Value::from(toml! { validity = "1y" }))
    };
    let s = Setup::with_config(
        config,
        &[
            cert("registry", &["registry.example.com"], "ecdsa-p256"),
            CertSpec::new("internal", toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] }),
        ],
    );
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);

    // Each request is bounded: the first one (the directory) gives up after [acme] timeout.
    let started = Instant::now();
    let run = s.run(&["renew"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {run:?}");
    assert!(run.stdout.contains("registry: FAILED (nothing installed yet): "), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "the ACME server {url} did not answer within 2s; check that it is up and reachable, or raise [acme] timeout"
        )),
        "{run:?}"
    );
    assert!(run.stdout.contains("internal: renewed"), "one certificate's stalled CA does not stop the others: {run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 1 failed"), "{run:?}");
    assert!(ca.connections() >= 1, "the CA was asked");
    assert!(!s.fullchain("registry").exists(), "nothing installed for the stalled certificate");

    // The whole renewal of a certificate is bounded too, and the failure names the step.
    s.edit(|c| {
        set(c, "acme.timeout", "60s");
        set(c, "renewal_timeout", "3s");
    });
    let started = Instant::now();
    let run = s.run(&["renew"]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {run:?}");
    assert!(
        run.stdout.contains(&format!(
            "registry: FAILED (nothing installed yet): ACME {url} timed out after 3s while loading the ACME account (renewal_timeout)"
        )),
        "{run:?}"
    );
    assert!(run.stdout.contains("internal: not due"), "{run:?}");
}
