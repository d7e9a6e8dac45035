//! ACME Renewal Information (RFC 9773) with the daemon: the CA's suggested window decides when
//! to renew, and the renewal order names the certificate it `replaces`. Pebble 2.4 has no ARI,
//! so the clearly named test fixture `AriFrontend` adds it in front of a real Pebble.

use crate::common::ari_frontend::AriFrontend;
use crate::common::*;
use std::time::Duration;

fn frontend(pebble: &Pebble) -> AriFrontend {
    let dir = pebble.dir.path();
    AriFrontend::start(&pebble.directory_url, &dir.join("tls-cert.pem"), &dir.join("tls-key.pem"), &pebble.tls_root)
}

fn cert_id(fullchain: &std::path::Path) -> String {
    let pem = std::fs::read(fullchain).unwrap();
    let der = regcert::certinfo::parse_pem_certs(&pem).unwrap().remove(0);
    instant_acme::CertificateIdentifier::try_from(&der).unwrap().to_string()
}

#[test]
fn an_open_window_renews_with_replaces_and_a_future_one_waits() {
    let pebble = Pebble::start();
    let ari = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", ari.directory_url.as_str()));
    // First issuance: nothing to replace.
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ari.replaces(), [None]);
    let first_id = cert_id(&s.fullchain("registry"));

    // A window that opens in a day: the daemon learns it and waits.
    ari.set_window(now() + 86_400, now() + 2 * 86_400);
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("CA renewal window (ARI)", 1, Duration::from_secs(30));
    d.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));
    assert_eq!(ari.ari_requests(), std::slice::from_ref(&first_id));
    let st = s.run(&["status"]);
    assert!(st.stdout.contains("CA window:"), "{st:?}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);

    // The window moved into the past ("renew now"): after the Retry-After the daemon asks again;
    // here the stored window is dropped to ask at once.
    ari.set_window(now() - 7_200, now() - 3_600);
    let schedule = s.state().join("certs/registry/schedule.json");
    let mut sched: serde_json::Value = serde_json::from_slice(&std::fs::read(&schedule).unwrap()).unwrap();
    sched["ari"] = serde_json::Value::Null;
    std::fs::write(&schedule, sched.to_string()).unwrap();
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    assert!(d.log_text().contains("inside the CA's renewal window"), "{}", d.log_text());
    assert_eq!(ari.replaces(), [None, Some(first_id.clone())], "the renewal order names the certificate it replaces");
    assert_ne!(cert_id(&s.fullchain("registry")), first_id);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}
