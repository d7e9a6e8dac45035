//! `regcert revoke` against the real Pebble 2.10, whose management port tells what it holds
//! (`/cert-status-by-serial/`: Valid or Revoked, with the reason): revoked with the account key
//! and replaced at once (the registry container serves a new leaf for a new key); revoked with
//! the certificate's own key when the account is gone or is not the certificate's; a private
//! CA's certificate refused. And the daemon renews a certificate revoked out of band as soon
//! as the CA's renewal window (ARI) says "renew now", not at its next scheduled check.

use crate::common::ari_frontend::AriFrontend;
use crate::common::registry::*;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use toml::toml;

fn public_key_of_key(key: &Path) -> String {
    openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()])
}

fn public_key_of_cert(pem: &Path) -> String {
    openssl(&["x509", "-noout", "-pubkey", "-in", pem.to_str().unwrap()])
}

/// The leaf the TLS server at `addr` serves for `name` (openssl s_client), in a file in `dir`.
fn served_leaf(dir: &Path, addr: &str, name: &str) -> PathBuf {
    let out =
        Command::new(tool("openssl")).args(["s_client", "-connect", addr, "-servername", name]).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let start = text.find(begin).unwrap_or_else(|| panic!("{addr} served no certificate: {text}"));
    let stop = text[start..].find(end).unwrap() + start + end.len();
    let path = dir.join("served.pem");
    std::fs::write(&path, format!("{}\n", &text[start..stop])).unwrap();
    path
}

/// Pebble's (status, reason code) of the certificate with `serial`.
fn status_at_ca(pebble: &Pebble, serial: &str) -> (String, Option<u64>) {
    let st = pebble.cert_status(serial);
    (st["Status"].as_str().unwrap_or_else(|| panic!("{st}")).to_owned(), st["Reason"].as_u64())
}

fn revoked(reason: u64) -> (String, Option<u64>) {
    ("Revoked".into(), Some(reason))
}

#[test]
fn revoke_with_the_account_key_and_renew_serves_a_new_leaf_with_a_new_key() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let name = unique_name("revoke");
    // reuse_key: a key revoked as compromised is still never used again.
    let s = Setup::new(&pebble, &[cert("registry", &[&name], "ecdsa-p256").with(toml! { profile = "default" reuse_key = true })]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts::default());
    let hook = Webhook::start();
    s.edit(|c| c.extend(toml! { [[notify]] webhook = (hook.url.as_str()) }));
    s.edit_cert("registry", |c| {
        set(c, "reload.docker.container", reg.container.as_str());
        set(c, "verify", verify_table(&pebble, &format!("https://{name}:5000/v2/"), &reg.addr()));
    });
    let (old_serial, old_key) = (serial(&s.fullchain("registry")), public_key_of_key(&s.key("registry")));

    // Without --yes it only shows what would be revoked.
    let run = s.run(&["revoke", "--cert", "registry", "--reason", "keyCompromise"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("would revoke `registry`") && run.stderr.contains("nothing was revoked") && run.stderr.contains("--yes"),
        "{run:?}"
    );
    assert_eq!(status_at_ca(&pebble, &old_serial).0, "Valid");

    let run = s.run(&["revoke", "--cert", "registry", "--reason", "keyCompromise", "--renew", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("signed by the ACME account that ordered it") && run.stdout.contains("1 renewed"), "{run:?}");
    assert_eq!(status_at_ca(&pebble, &old_serial), revoked(1), "keyCompromise is reason 1");

    // The registry container serves the replacement: another leaf, for another key, valid at the CA.
    let served = served_leaf(s.root.path(), &reg.addr(), &name);
    let new_serial = serial(&served);
    assert_ne!(new_serial, old_serial);
    assert_eq!(new_serial, serial(&s.fullchain("registry")), "what is served is what is installed");
    assert_ne!(public_key_of_cert(&served), old_key, "a compromised key is never reused, reuse_key or not");
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    assert_eq!(status_at_ca(&pebble, &new_serial).0, "Valid");

    let event: serde_json::Value = serde_json::from_str(&hook.wait_for("\"event\":\"revoked\"", Duration::from_secs(10))).unwrap();
    assert_eq!((event["certificate"].as_str(), event["revocation_reason"].as_str()), (Some("registry"), Some("keyCompromise")), "{event}");
    hook.wait_for("\"event\":\"renewed\"", Duration::from_secs(10));
}

#[test]
fn revoke_with_the_certificate_key_when_the_account_is_gone_or_is_not_the_certificates() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let default = toml! { profile = "default" };
    let s = Setup::new(
        &pebble,
        &[
            cert("p384", &["p384.example.com"], "ecdsa-p384").with(default.clone()),
            cert("rsa", &["rsa.example.com"], "rsa-2048").with(default),
        ],
    );
    assert_eq!(s.run(&["renew"]).code, 0);
    let (p384, rsa) = (serial(&s.fullchain("p384")), serial(&s.fullchain("rsa")));

    // The account files are gone: the certificate's own key (ES384) signs, no account is made.
    std::fs::remove_dir_all(s.state().join("accounts")).unwrap();
    let run = s.run(&["revoke", "--cert", "p384", "--reason", "superseded", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("signed by the certificate's own key"), "{run:?}");
    assert!(run.stdout.contains("still serves the revoked certificate") && run.stdout.contains("renew --force --cert p384"), "{run:?}");
    assert_eq!(status_at_ca(&pebble, &p384), revoked(4));
    assert!(!s.state().join("accounts").exists(), "no account is created to revoke");

    // `renew` (not forced) replaces it: asked again after the revocation, the CA's window says now.
    let run = s.run(&["renew", "--cert", "p384"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("1 renewed") && run.stdout.contains("inside the CA's renewal window"), "{run:?}");
    assert_ne!(serial(&s.fullchain("p384")), p384);

    // That renewal made a new account. For a certificate whose issuing account state_dir does not
    // record (as after an import), the account is tried, the CA says it is not the certificate's,
    // and the certificate's own key (RS256) signs.
    let meta = s.state().join("certs/rsa/meta.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("account").expect("the issuing account is recorded");
    std::fs::write(&meta, m.to_string()).unwrap();
    let run = s.run(&["revoke", "--cert", "rsa", "--reason", "cessationOfOperation", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("not the certificate's") && run.stdout.contains("signed by the certificate's own key"), "{run:?}");
    assert_eq!(status_at_ca(&pebble, &rsa), revoked(5));
    // Once more: nothing to do, and it says so.
    let run = s.run(&["revoke", "--cert", "rsa", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("the CA had revoked it already"), "{run:?}");
}

#[test]
fn a_private_ca_certificate_is_not_revoked_and_the_message_says_what_to_do() {
    let s = ca_setup(toml! { subject = "CN=Revoke Test CA" }, toml! { domains = ["registry.corp.lan"] });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    let before = serial(&s.fullchain("registry"));
    let run = s.run(&["revoke", "--cert", "registry", "--reason", "keyCompromise", "--renew", "--yes"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("private CA \"internal\" publishes no CRL or OCSP")
            && run.stderr.contains("regcert renew --force --cert registry"),
        "{run:?}"
    );
    assert_eq!(serial(&s.fullchain("registry")), before, "nothing was replaced");
}

#[test]
fn the_daemon_renews_a_certificate_revoked_out_of_band_when_the_ca_says_so_not_at_its_scheduled_check() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    // TEST FIXTURE in front of Pebble 2.10: Pebble's own renewal windows, but a Retry-After of one
    // second instead of six hours (which a test cannot wait for).
    let ari = AriFrontend::in_front_of(&pebble);
    ari.pass_renewal_info_through(1);
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml! { profile = "default" })]);
    s.edit(|c| {
        set(c, "acme.directory", ari.directory_url.as_str());
        // The only scheduled check is next 1 January.
        set(c, "daemon.check", "0 0 0 1 1 *");
    });
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first = serial(&s.fullchain("registry"));
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));

    // Revoked without regcert, by the account, at the CA.
    let (account, key) = s.account_credentials();
    assert_eq!(pebble.revoke(&ari.directory_url, &s.fullchain("registry"), &account, &key, 4), serde_json::Value::Null);
    assert_eq!(status_at_ca(&pebble, &first), revoked(4));

    // The daemon wakes for the window's Retry-After (at least 10 s on), hears "renew now" and renews.
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(60));
    let log = d.log_text();
    assert!(log.contains("a CA renewal window (ARI) calls for a check") && log.contains("inside the CA's renewal window"), "{log}");
    let second = serial(&s.fullchain("registry"));
    assert_ne!(second, first);
    assert_eq!(status_at_ca(&pebble, &second).0, "Valid");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
}

/// `regcert revoke` without `--renew` while `regcert run` runs: revoke drops the stored renewal
/// window from schedule.json, and the daemon — which keeps schedules in memory between checks —
/// takes what another process stored, asks the CA again at its next check and renews. Real Pebble
/// 2.10, whose Retry-After (six hours) the daemon would otherwise have waited out.
#[test]
fn the_daemon_sees_a_revoke_by_regcert_revoke_at_its_next_check() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml! { profile = "default" })]);
    s.edit(|c| set(c, "daemon.check", "*/2 * * * * *"));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let first = serial(&s.fullchain("registry"));
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));

    // The daemon takes the lock for each check: try again while it holds it.
    let mut revoke = s.run(&["revoke", "--cert", "registry", "--reason", "superseded", "--yes"]);
    for _ in 0..20 {
        if revoke.code == 0 || !revoke.stdout.contains("holds the lock") && !revoke.stderr.contains("holds the lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        revoke = s.run(&["revoke", "--cert", "registry", "--reason", "superseded", "--yes"]);
    }
    assert_eq!(revoke.code, 0, "{revoke:?}");
    assert_eq!(status_at_ca(&pebble, &first), revoked(4));

    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    let second = serial(&s.fullchain("registry"));
    assert_ne!(second, first, "{}", d.log_text());
    assert_eq!(status_at_ca(&pebble, &second).0, "Valid");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(30)), 0, "{}", d.log_text());
}
