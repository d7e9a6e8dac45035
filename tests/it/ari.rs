//! What a CA says about timing, with the daemon: the suggested window of ACME Renewal Information
//! (RFC 9773) decides when to renew, the renewal order names the certificate it `replaces`, and
//! a rate limit's Retry-After is waited out. Pebble 2.10's real ARI (its windows, and
//! `/set-renewal-info/` to move one) is tested first. What Pebble cannot do — rate limits, a
//! Retry-After of seconds, a 404, refusing or ignoring `replaces`, counting requests — the
//! clearly named test fixture `AriFrontend` adds in front of a real Pebble.

use crate::common::ari_frontend::{AriFrontend, RATE_LIMIT_INSTANCE, Replaces};
use crate::common::*;
use std::time::Duration;

fn frontend(pebble: &Pebble) -> AriFrontend {
    let dir = pebble.dir.path();
    AriFrontend::start(&pebble.directory_url, &dir.join("tls-cert.pem"), &dir.join("tls-key.pem"), &pebble.tls_root)
}

/// The certificate's ARI identifier (RFC 9773 section 4.1), derived without regcert or
/// instant-acme: from the authority key identifier and serial openssl reads.
pub(crate) fn cert_id(fullchain: &std::path::Path) -> String {
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

/// `status --json`'s stored renewal window of `name`.
fn stored_window(s: &Setup, name: &str) -> serde_json::Value {
    s.status_of(name)["schedule"]["ari"].clone()
}

#[test]
fn pebble_2_10s_window_is_used_and_its_renew_now_renews_with_replaces() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    // A known lifetime: Pebble picks a profile at random when the order names none.
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml::toml! { profile = "default" })]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first_id = cert_id(&s.fullchain("registry"));
    let first_order = s.meta("registry")["order_url"].as_str().unwrap().to_owned();

    // Right after issuing, the CA's real window is stored: inside the lifetime, asked for again
    // after Pebble's Retry-After of six hours.
    let (not_before, not_after) = validity(&s.fullchain("registry"));
    let w = stored_window(&s, "registry");
    let (start, end, refetch_at) = (w["start"].as_u64().unwrap(), w["end"].as_u64().unwrap(), w["refetch_at"].as_u64().unwrap());
    assert!(not_before < start && start < end && end < not_after, "window {start}–{end} within {not_before}–{not_after}: {w}");
    assert!(refetch_at.abs_diff(now() + 21_600) <= 60, "Pebble's Retry-After is 6 h: {w}");
    let run = s.run(&["renew"]);
    assert!(run.stdout.contains("0 renewed, 1 not due, 0 failed"), "{run:?}");

    // The CA says "renew now" (as for a revoked certificate). Six hours later — the stored
    // Retry-After is moved to now, as the tests cannot wait that long — `renew` asks again,
    // renews, and the new order names the certificate it replaces.
    let past = |secs: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(now() - secs)).to_string();
    pebble.set_renewal_info(
        &s.fullchain("registry"),
        &serde_json::json!({ "suggestedWindow": { "start": past(7_200), "end": past(3_600) } }),
    );
    let schedule = s.state().join("certs/registry/schedule.json");
    let mut sched: serde_json::Value = serde_json::from_slice(&std::fs::read(&schedule).unwrap()).unwrap();
    sched["ari"]["refetch_at"] = now().into();
    std::fs::write(&schedule, sched.to_string()).unwrap();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("inside the CA's renewal window") && run.stdout.contains("1 renewed"), "{run:?}");
    assert_ne!(cert_id(&s.fullchain("registry")), first_id);
    let (account, key) = s.account_credentials();
    let order_url = s.meta("registry")["order_url"].as_str().unwrap().to_owned();
    assert_ne!(order_url, first_order);
    let order = pebble.post_as_get(&order_url, &account, &key);
    assert_eq!(order["replaces"], first_id.as_str(), "the renewal order as Pebble holds it: {order}\n{run:?}");
    assert!(pebble.post_as_get(&first_order, &account, &key)["replaces"].is_null(), "the first order replaced nothing");
}

/// Wait until the front has seen `n` renewalInfo requests.
fn wait_for_ari_requests(front: &AriFrontend, n: usize, d: &Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while front.ari_requests().len() < n {
        assert!(std::time::Instant::now() < deadline, "no {n} renewalInfo requests: {:?}\n{}", front.ari_requests(), d.log_text());
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn an_open_window_renews_with_replaces_and_a_future_one_waits() {
    let pebble = Pebble::start();
    let ari = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| {
        set(c, "acme.directory", ari.directory_url.as_str());
        set(c, "daemon.check", "* * * * * *");
    });
    // A window that opens in a day, to be asked for again after a second.
    let (start, end) = (now() + 86_400, now() + 2 * 86_400);
    ari.set_window(start, end);
    ari.set_ari_retry_after(1);
    // First issuance: nothing to replace.
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ari.replaces(), [None]);
    let first_id = cert_id(&s.fullchain("registry"));
    let first_serial = serial(&s.fullchain("registry"));

    // The daemon asks again after the Retry-After and stores the window (the 5-year Pebble leaf
    // is not due by its lifetime, so only the stored window shows ARI was read), and waits.
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("CA renewal window (ARI)", 1, Duration::from_secs(30));
    d.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));
    let w = stored_window(&s, "registry");
    assert_eq!((w["start"].as_u64(), w["end"].as_u64()), (Some(start), Some(end)), "{w}");
    let renew_at = w["renew_at"].as_u64().unwrap();
    assert!((start..=end).contains(&renew_at), "the moment chosen lies in the window: {w}");
    assert!(w["refetch_at"].as_u64().unwrap() <= now() + 2, "asked again after the CA's Retry-After of 1 s: {w}");
    assert_eq!(ari.ari_requests()[0], first_id);
    assert_eq!(serial(&s.fullchain("registry")), first_serial, "a future window waits");

    // The window moves into the past ("renew now"): the daemon asks again after the Retry-After
    // by itself (nothing in state_dir is touched) and renews, naming the certificate it replaces.
    ari.set_window(now() - 7_200, now() - 3_600);
    let asked = ari.ari_requests().len();
    wait_for_ari_requests(&ari, asked + 1, &d);
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    assert!(d.log_text().contains("inside the CA's renewal window"), "{}", d.log_text());
    assert_eq!(ari.replaces(), [None, Some(first_id.clone())], "the renewal order names the certificate it replaces");
    assert_ne!(cert_id(&s.fullchain("registry")), first_id);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);
}

#[test]
fn one_shot_renew_asks_for_the_window_and_reuses_it_until_the_retry_after() {
    let pebble = Pebble::start();
    let ari = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", ari.directory_url.as_str()));
    // A window that opens in a day; ask again in 10 s.
    ari.set_window(now() + 86_400, now() + 2 * 86_400);
    ari.set_ari_retry_after(10);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first_id = cert_id(&s.fullchain("registry"));
    // Right after issuing, the new certificate's window is asked for once and stored.
    assert_eq!(ari.ari_requests(), std::slice::from_ref(&first_id));
    let refetch_at = stored_window(&s, "registry")["refetch_at"].as_u64().unwrap();

    // Not due; the stored window is used without asking until the CA's Retry-After.
    for _ in 0..2 {
        let run = s.run(&["renew"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("0 renewed, 1 not due, 0 failed"), "{run:?}");
    }
    assert!(now() < refetch_at, "the runs above were meant to happen before the Retry-After ran out");
    assert_eq!(ari.ari_requests(), std::slice::from_ref(&first_id), "the stored window was used");

    // The CA now says "renew now" for it (a revocation, say). After the Retry-After,
    // `regcert renew` — not the daemon — asks again and renews, naming it in `replaces`.
    ari.set_window_for(&first_id, now() - 7_200, now() - 3_600);
    while now() <= refetch_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("inside the CA's renewal window"), "{run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 0 failed"), "{run:?}");
    assert_eq!(ari.replaces(), [None, Some(first_id.clone())]);
    let second_id = cert_id(&s.fullchain("registry"));
    assert_ne!(second_id, first_id);
    // The new certificate's window (in the future again) is asked for right away.
    assert_eq!(ari.ari_requests(), [first_id.clone(), first_id, second_id]);
    let run = s.run(&["renew"]);
    assert!(run.stdout.contains("0 renewed, 1 not due, 0 failed"), "{run:?}");
    assert_eq!(ari.replaces().len(), 2, "nothing ordered");
}

#[test]
fn a_404_from_renewal_info_leaves_the_lifetime_policy_in_charge() {
    let pebble = Pebble::start();
    let ari = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", ari.directory_url.as_str()));
    // No window set: the front answers 404, as a CA does for a certificate it does not know.
    // It is asked right after the issuance, and then not again for a while.
    for expected in ["1 renewed, 0 not due, 0 failed", "0 renewed, 1 not due, 0 failed", "0 renewed, 1 not due, 0 failed"] {
        let run = s.run(&["renew"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains(expected), "{run:?}");
        assert!(!run.stderr.contains("cannot fetch"), "a 404 is an answer, not a failure: {run:?}");
    }
    assert_eq!(ari.ari_requests(), [cert_id(&s.fullchain("registry"))], "asked once");
    let sched: serde_json::Value = serde_json::from_slice(&std::fs::read(s.state().join("certs/registry/schedule.json")).unwrap()).unwrap();
    let skip = sched["ari_skip_until"].as_u64().unwrap();
    assert!(skip >= now() + 43_000 && skip <= now() + 86_400, "asked again within a day: {sched}");
    assert!(sched["ari"].is_null(), "{sched}");
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
    assert!(run.stdout.contains(&format!("the CA explains it at {RATE_LIMIT_INSTANCE}")), "{run:?}");

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
fn a_ca_that_refuses_or_ignores_replaces_gets_a_plain_order() {
    let pebble = Pebble::start();
    let front = frontend(&pebble);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", front.directory_url.as_str()));
    assert_eq!(s.run(&["renew"]).code, 0);
    // Let's Encrypt refuses `replaces` for a certificate another account issued (unauthorized),
    // or one already replaced (alreadyReplaced); a CA without ARI orders ignores it. The renewal
    // must not fail forever: once without `replaces`.
    for mode in [Replaces::RefuseUnauthorized, Replaces::RefuseAlreadyReplaced, Replaces::Ignore] {
        front.set_replaces(mode);
        let before = serial(&s.fullchain("registry"));
        let orders = front.replaces().len();
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{mode:?}: {run:?}");
        assert!(run.stderr.contains("the CA did not take `replaces`; ordering without it"), "{mode:?}: {run:?}");
        let replaces = &front.replaces()[orders..];
        assert!(
            replaces.len() == 2 && replaces[0].is_some() && replaces[1].is_none(),
            "{mode:?}: with `replaces`, then plainly: {replaces:?}"
        );
        assert_ne!(serial(&s.fullchain("registry")), before, "{mode:?}");
    }
}

#[test]
fn replaces_names_only_a_certificate_this_account_issued() {
    // Pebble 2.10 holds each order's `replaces` and refuses one for another account's certificate.
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let first_account = s.meta("registry")["account"].as_str().unwrap_or_else(|| panic!("no account in {}", s.meta("registry"))).to_owned();
    // What the last order named, as Pebble holds it (read with the account that placed it).
    let last_replaces = || {
        let (account, key) = s.account_credentials();
        pebble.post_as_get(s.meta("registry")["order_url"].as_str().unwrap(), &account, &key)["replaces"].clone()
    };

    // Another account at the same CA (a recreated account, an imported setup): its renewal of
    // the first account's certificate must not name it.
    let accounts = s.state().join("accounts");
    std::fs::rename(&accounts, s.state().join("accounts.old")).unwrap();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("was not issued by this ACME account"), "{run:?}");
    assert!(!run.stderr.contains("did not take `replaces`"), "not sent, so not refused: {run:?}");
    assert!(last_replaces().is_null(), "no `replaces` for another account's certificate");
    assert_ne!(s.meta("registry")["account"].as_str(), Some(first_account.as_str()), "a second account: {}", s.meta("registry"));

    // Its own certificate it names.
    let own = cert_id(&s.fullchain("registry"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(last_replaces(), own.as_str());
}
