//! Several ACME CAs tried in turn (`issuer = ["acme", "acme:backup"]`), against two real
//! Pebbles: the second issues when the first is down or refuses the name; status, meta.json,
//! metrics, notifications and the report name the CA that issued; the next renewal starts again
//! at the first and does not send it `replaces` for the second CA's certificate; a failure that
//! is the certificate's own (its HTTP-01 answer cannot be reached) does not go on to the next CA.

use crate::common::*;
use std::time::Duration;
use toml::{Table, toml};

/// A second Pebble 2.10 that validates HTTP-01 at the first one's port, so one `[http01]`
/// responder answers both.
fn second_ca(first: &Pebble) -> Pebble {
    Pebble::start_with(PebbleOpts { http_port: Some(first.http_port), ..PebbleOpts::v2_10() })
}

/// `[acme]` is `first`, `[acme_ca.backup]` is `second`, and the certificate `registry` tries them in turn.
fn setup(first: &Pebble, second: &Pebble) -> Setup {
    let mut config = pebble_config(first);
    let backup: Table = pebble_config(second)["acme"].as_table().unwrap().clone();
    set(&mut config, "acme_ca.backup", backup);
    let issuer = toml! { issuer = ["acme", "acme:backup"] };
    Setup::with_config(config, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(issuer)])
}

const BACKUP: &str = "ACME \"backup\"";

#[test]
fn the_first_ca_down_the_second_issues_and_the_next_renewal_goes_back_to_the_first_without_replaces() {
    let mut first = Pebble::start_with(PebbleOpts::v2_10());
    let second = second_ca(&first);
    let s = setup(&first, &second);
    first.stop();

    // The daemon's first check: the first CA cannot be reached, the second issues.
    let hook = Webhook::start();
    let metrics = format!("127.0.0.1:{}", free_port());
    s.edit(|c| {
        set(c, "metrics.listen", metrics.as_str());
        set(c, "daemon.check", "0 0 0 1 1 *");
        c.insert("notify".into(), vec![toml::Value::from(toml! { webhook = (hook.url.as_str()) })].into());
    });
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(60));
    let log = d.log_text();
    assert!(log.contains("this CA cannot issue; trying the next one") && log.contains("cannot reach the ACME server"), "{log}");
    assert!(log.contains("issued by a fallback CA"), "{log}");
    let event: serde_json::Value = serde_json::from_str(&hook.wait_for("\"event\":\"renewed\"", Duration::from_secs(10))).unwrap();
    assert_eq!(event["issued_by"], format!("{BACKUP} ({})", second.directory_url), "{event}");
    let (_, text) = http_get(&metrics, "/metrics");
    let info = format!("regcert_certificate_info{{name=\"registry\",ca=\"{}\",", second.directory_url);
    assert!(text.lines().any(|l| l.starts_with(&info)), "{info} not in\n{text}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0);

    assert_chain_verifies(&s.fullchain("registry"), &second.issuing_root());
    assert_eq!(s.meta("registry")["directory"], second.directory_url.as_str());
    let st = s.status_of("registry");
    assert_eq!(st["ca"], second.directory_url.as_str(), "{st}");
    assert_eq!(st["issued_by"], format!("{BACKUP} ({})", second.directory_url), "{st}");
    assert!(s.run(&["status"]).stdout.contains(&format!("from:       {BACKUP}")));
    // Judged against the CA that issued it: a fallback CA's certificate is not due for that.
    let run = s.run(&["renew"]);
    assert!(run.stdout.contains("0 renewed, 1 not due, 0 failed"), "{run:?}");
    // Its renewal window (ARI) came from the CA that issued it: the first one is still down.
    let window = &s.status_of("registry")["schedule"]["ari"];
    let (not_before, not_after) = validity(&s.fullchain("registry"));
    let (start, end) = (window["start"].as_u64().unwrap_or(0), window["end"].as_u64().unwrap_or(0));
    assert!(not_before < start && start < end && end <= not_after, "the second CA's window: {window}\n{run:?}");

    // The first CA is back: the next renewal starts at it again, and the order it gets does not
    // name the second CA's certificate in `replaces` (it never issued it).
    first.restart();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("issued by ACME {}", first.directory_url)), "{run:?}");
    assert_chain_verifies(&s.fullchain("registry"), &first.issuing_root());
    let meta = s.meta("registry");
    assert_eq!(meta["directory"], first.directory_url.as_str());
    let (account, key) = s.account_for(&first.directory_url).expect("an account at the first CA");
    let order = first.post_as_get(meta["order_url"].as_str().unwrap(), &account, &key);
    assert_eq!(order["status"], "valid", "{order}");
    assert!(order["replaces"].is_null(), "the first CA was sent `replaces` for the second CA's certificate: {order}\n{run:?}");
    assert!(run.stderr.contains("the installed certificate was not issued by this ACME account"), "{run:?}");
}

#[test]
fn the_first_ca_refusing_the_name_the_second_issues() {
    let first = Pebble::start_with(PebbleOpts { blocklist: vec!["registry.example.com".into()], ..PebbleOpts::v2_10() });
    let second = second_ca(&first);
    let s = setup(&first, &second);
    // A dry run goes the same way, and stops short of a certificate at the second CA.
    let run = s.run(&["renew", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("the CA {} validated 1 name(s)", second.directory_url)), "{run:?}");
    assert!(!s.fullchain("registry").exists());

    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("rejectedIdentifier") && run.stderr.contains("trying the next one"), "{run:?}");
    assert!(run.stdout.contains(&format!("issued by {BACKUP} ({})", second.directory_url)), "{run:?}");
    assert_chain_verifies(&s.fullchain("registry"), &second.issuing_root());
    assert_eq!(s.meta("registry")["directory"], second.directory_url.as_str());
}

#[test]
fn a_failure_of_the_certificates_own_does_not_go_on_to_the_next_ca() {
    // The responder listens where only the second CA looks: the first one cannot reach the
    // HTTP-01 answer. Any CA would fail the same way, so the second is never asked.
    let first = Pebble::start_with(PebbleOpts::v2_10());
    let second = Pebble::start_with(PebbleOpts::v2_10());
    let s = setup(&first, &second);
    s.edit(|c| set(c, "http01.listen", format!("127.0.0.1:{}", second.http_port)));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("validation failed: registry.example.com: ACME connection"), "{run:?}");
    assert!(!run.stderr.contains("trying the next one"), "{run:?}");
    assert!(s.account_for(&second.directory_url).is_none(), "the second CA was asked");
    assert!(!s.fullchain("registry").exists());
}

#[test]
fn every_ca_failing_names_each_ca_and_its_error() {
    let mut first = Pebble::start_with(PebbleOpts::v2_10());
    let mut second = second_ca(&first);
    let s = setup(&first, &second);
    first.stop();
    second.stop();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let (a, b) = (&first.directory_url, &second.directory_url);
    let want = format!(
        "no CA of the certificate's `issuer` list could issue: ACME {a}: creating the ACME account: cannot reach the ACME server {a}"
    );
    assert!(run.stdout.contains(&want), "{want}\n{run:?}");
    let then = format!("; then {BACKUP} ({b}): creating the ACME account: cannot reach the ACME server {b}");
    assert!(run.stdout.contains(&then), "{then}\n{run:?}");
    // Each hint names the table of the CA it is about.
    assert!(run.stdout.contains(&format!("for a private CA, [acme] ca_bundle{then}")), "{run:?}");
    assert!(
        run.stdout.contains("check [acme_ca.backup] directory, the network and, for a private CA, [acme_ca.backup] ca_bundle"),
        "{run:?}"
    );
}

#[test]
fn a_named_ca_that_is_down_is_named_by_its_own_table() {
    // The named CA is tried first and is down; the default one issues. What to check is in
    // [acme_ca.backup], not in [acme].
    let first = Pebble::start_with(PebbleOpts::v2_10());
    let mut second = second_ca(&first);
    let s = setup(&first, &second);
    s.edit_cert("registry", |c| set(c, "issuer", vec!["acme:backup", "acme"]));
    second.stop();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let b = &second.directory_url;
    let warning = run.stderr.lines().find(|l| l.contains("trying the next one")).unwrap_or_else(|| panic!("no fallback: {run:?}"));
    assert!(warning.contains(&format!("cannot reach the ACME server {b}")), "{warning}");
    assert!(
        warning.contains("check [acme_ca.backup] directory, the network and, for a private CA, [acme_ca.backup] ca_bundle"),
        "{warning}"
    );
    assert!(!warning.contains("[acme] "), "{warning}");
    assert!(run.stdout.contains(&format!("issued by ACME {}", first.directory_url)), "{run:?}");
    assert_chain_verifies(&s.fullchain("registry"), &first.issuing_root());
}

/// `openssl s_server` serving `fullchain` (leaf, then its chain) and `key` on 127.0.0.1:`port`,
/// answering every GET with 200 (the HTTPS end `regcert verify` checks). Stopped when dropped.
struct TlsServer(std::process::Child);

impl TlsServer {
    fn start(fullchain: &std::path::Path, key: &std::path::Path, port: u16) -> Self {
        let child = std::process::Command::new(tool("openssl"))
            .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(fullchain)
            .arg("-cert_chain")
            .arg(fullchain)
            .arg("-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "openssl s_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer(child)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn verification_trusts_the_root_of_the_ca_that_issued() {
    let mut first = Pebble::start_with(PebbleOpts::v2_10());
    let second = second_ca(&first);
    let s = setup(&first, &second);
    // Each CA's ca_bundle holds its HTTPS root and the root it issues under (as for step-ca,
    // whose one root does both); no [certificate.verify] ca_bundle.
    let bundle = |ca: &Pebble, name: &str| {
        let both = [std::fs::read_to_string(&ca.tls_root).unwrap(), std::fs::read_to_string(ca.issuing_root()).unwrap()].concat();
        let path = s.root.path().join(name);
        std::fs::write(&path, both).unwrap();
        path.display().to_string()
    };
    let (first_bundle, second_bundle) = (bundle(&first, "first.pem"), bundle(&second, "second.pem"));
    let port = free_port();
    s.edit(|c| {
        set(c, "acme.ca_bundle", first_bundle.as_str());
        set(c, "acme_ca.backup.ca_bundle", second_bundle.as_str());
    });
    s.edit_cert("registry", |c| {
        set(c, "verify.url", format!("https://registry.example.com:{port}/v2/"));
        set(c, "verify.connect_to", format!("127.0.0.1:{port}"));
        // Checked by `regcert verify` below, once something serves the certificate.
        set(c, "verify.enabled", false);
    });
    first.stop();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.meta("registry")["directory"], second.directory_url.as_str());

    let _server = TlsServer::start(&s.fullchain("registry"), &s.key("registry"), port);
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 0, "trusted through the second CA's ca_bundle: {run:?}");
    // The root that made it pass is the issuing CA's: without it in the bundle, it fails.
    s.edit(|c| set(c, "acme_ca.backup.ca_bundle", second.tls_root.display().to_string()));
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("the served chain does not lead to a trusted root"), "{run:?}");
}
