//! What a CA says about timing, with the daemon: the suggested window of ACME Renewal Information
//! (RFC 9773) decides when to renew, the renewal order names the certificate it `replaces`, and
//! a rate limit's Retry-After is waited out. Pebble has neither ARI (2.4) nor rate limits, so the
//! clearly named test fixture `AriFrontend` adds them in front of a real Pebble.

use crate::common::ari_frontend::AriFrontend;
use crate::common::*;
use std::time::Duration;

fn frontend(pebble: &Pebble) -> AriFrontend {
    let dir = pebble.dir.path();
    AriFrontend::start(&pebble.directory_url, &dir.join("tls-cert.pem"), &dir.join("tls-key.pem"), &pebble.tls_root)
}

/// The certificate's ARI identifier (RFC 9773 section 4.1), derived without regcert or
/// instant-acme: from the authority key identifier and serial openssl reads.
fn cert_id(fullchain: &std::path::Path) -> String {
    let f = fullchain.to_str().unwrap();
    let aki = openssl(&["x509", "-noout", "-ext", "authorityKeyIdentifier", "-in", f]);
    let key_id = aki.lines().nth(1).unwrap_or_else(|| panic!("no AKI: {aki}")).trim().trim_start_matches("keyid:");
    let serial = openssl(&["x509", "-noout", "-serial", "-in", f]);
    ari_id(key_id, serial.trim().strip_prefix("serial=").unwrap())
}

/// base64url(keyIdentifier) "." base64url(the serial's DER content octets), from hex as openssl
/// prints it (which drops the leading zero DER needs when the high bit is set).
fn ari_id(key_id_hex: &str, serial_hex: &str) -> String {
    use base64::Engine;
    let bytes = |h: &str| {
        let h: String = h.chars().filter(char::is_ascii_hexdigit).collect();
        hex::decode(if h.len() % 2 == 1 { format!("0{h}") } else { h }).unwrap()
    };
    let mut serial = bytes(serial_hex);
    while serial.len() > 1 && serial[0] == 0 && serial[1] < 0x80 {
        serial.remove(0);
    }
    if serial[0] >= 0x80 {
        serial.insert(0, 0);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(bytes(key_id_hex)), b64.encode(serial))
}

#[test]
fn ari_id_known_answer_from_rfc_9773() {
    let aki = "69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4";
    assert_eq!(ari_id(aki, "00:87:65:43:21"), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    // The same serial as `openssl x509 -serial` prints it.
    assert_eq!(ari_id(aki, "87654321"), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
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

#[test]
fn a_rate_limited_ca_is_left_alone_until_its_retry_after() {
    let pebble = Pebble::start();
    let front = frontend(&pebble);
    front.rate_limit_orders(7_200);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", front.directory_url.as_str()));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("FAILED (nothing installed yet): ACME rateLimited: too many new orders"), "{run:?}");
    assert!(run.stdout.contains("the CA's rate limit was hit"), "{run:?}");

    // The daemon's first failure would back off for a minute; the CA asked for two hours.
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("0 renewed, 1 failed", 1, Duration::from_secs(30));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
    let sched: serde_json::Value = serde_json::from_slice(&std::fs::read(s.state().join("certs/registry/schedule.json")).unwrap()).unwrap();
    let retry_at = sched["retry_at"].as_u64().unwrap();
    assert!(retry_at >= now() + 7_000 && retry_at <= now() + 7_300, "retry_at {retry_at} is not the CA's Retry-After: {sched}");
    assert_eq!(front.replaces().len(), 2, "one refused order per attempt, none more");

    // A restarted daemon remembers, and does not ask the CA again before then.
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("0 renewed, 0 failed, 1 backing off", 1, Duration::from_secs(30));
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
    assert_eq!(front.replaces().len(), 2);
    let st = s.run(&["status"]);
    assert!(st.stdout.contains("1 failure(s) in a row; next attempt not before"), "{st:?}");
}

#[test]
fn a_ca_that_refuses_replaces_gets_a_plain_order() {
    let pebble = Pebble::start();
    let front = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", front.directory_url.as_str()));
    assert_eq!(s.run(&["renew"]).code, 0);
    let first = serial(&s.fullchain("registry"));
    // Let's Encrypt refuses `replaces` for a certificate another account issued (an imported
    // acme.sh certificate, a recreated account): the renewal must not fail forever.
    front.refuse_replaces();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("the CA did not take `replaces`; ordering without it"), "{run:?}");
    let replaces = front.replaces();
    assert_eq!(replaces.len(), 3, "{replaces:?}");
    assert!(replaces[1].is_some() && replaces[2].is_none(), "refused with `replaces`, then ordered plainly: {replaces:?}");
    assert_ne!(serial(&s.fullchain("registry")), first);
}
