//! `regcert renew` against a real Pebble: issuance, no-op, forced and due renewals, key types,
//! EAB, CA failures, and the files that end up in the registry's cert volume.

use crate::common::*;
use std::fs;
use toml::toml;

#[test]
fn issues_installs_then_noop_then_force_keeps_backup() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);

    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed (nothing installed yet)"), "{run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 0 failed"), "{run:?}");

    let (chain, key) = (s.fullchain("registry"), s.key("registry"));
    assert_eq!(mode(&chain), 0o644);
    assert_eq!(mode(&key), 0o600);
    assert!(pem_count(&chain) >= 2, "fullchain must carry the intermediate");
    assert_chain_verifies(&chain, &pebble.issuing_root());
    assert_key_matches(&chain, &key);
    assert!(cert_text(&chain).contains("DNS:registry.example.com"));
    // The cert volume receives only the configured files.
    let mut names: Vec<String> =
        fs::read_dir(s.install_dir("registry")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["domain.crt", "domain.key"]);
    // Account and issued material are kept, private where they must be.
    let accounts: Vec<_> = fs::read_dir(s.state().join("accounts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0]), 0o600);
    assert_eq!(mode(&s.state().join("certs/registry/privkey.pem")), 0o600);
    let account_before = fs::read(&accounts[0]).unwrap();

    // Second run: nothing due, nothing touched, and the CA is not contacted at all (Pebble logs
    // every request it gets, and every TLS handshake that fails).
    let first = fs::read(&chain).unwrap();
    let pebble_log = pebble.logs();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: not due"), "{run:?}");
    assert_eq!(fs::read(&chain).unwrap(), first);
    assert_eq!(pebble.logs(), pebble_log, "a no-op renew must not talk to the CA");

    // Forced: a new certificate and key, the old pair kept as backup, same account.
    let old_key = fs::read(&key).unwrap();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed (--force)"), "{run:?}");
    assert_ne!(fs::read(&chain).unwrap(), first);
    assert_ne!(fs::read(&key).unwrap(), old_key, "a fresh key per issuance");
    assert_key_matches(&chain, &key);
    assert_eq!(fs::read(s.state().join("certs/registry/previous/fullchain.pem")).unwrap(), first);
    assert_eq!(fs::read(s.state().join("certs/registry/previous/privkey.pem")).unwrap(), old_key);
    assert_eq!(fs::read(&accounts[0]).unwrap(), account_before, "the account is reused, not recreated");

    // status reports what is installed.
    let run = s.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let st: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(st[0]["name"], "registry");
    assert_eq!(st[0]["covered"][0], "registry.example.com");
    assert!(st[0]["days_left"].as_i64().unwrap() > 300);
    assert!(st[0]["due_reason"].is_null());
    assert!(st[0]["issuer"].as_str().unwrap().contains("Pebble"), "{}", run.stdout);
    let text = s.run(&["status"]);
    assert!(text.stdout.contains("next due:") && text.stdout.contains("domain.crt"), "{text:?}");
}

#[test]
fn key_types_and_multi_name_certificates() {
    let pebble = Pebble::start();
    let s = Setup::new(
        &pebble,
        &[
            cert("p384", &["a.example.com", "b.example.com"], "ecdsa-p384"),
            cert("rsa", &["rsa.example.com"], "rsa-2048"),
            cert("p256", &["x.example.org", "y.example.org", "z.example.net"], "ecdsa-p256"),
        ],
    );
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("3 renewed"), "{run:?}");
    let root = pebble.issuing_root();
    for (name, marker) in [("p384", "secp384r1"), ("rsa", "Public-Key: (2048 bit)"), ("p256", "prime256v1")] {
        assert_chain_verifies(&s.fullchain(name), &root);
        assert_key_matches(&s.fullchain(name), &s.key(name));
        assert!(cert_text(&s.fullchain(name)).contains(marker), "{name}: want {marker}");
    }
    let text = cert_text(&s.fullchain("p256"));
    for d in ["x.example.org", "y.example.org", "z.example.net"] {
        assert!(text.contains(&format!("DNS:{d}")), "SAN must contain {d}");
    }

    // Changing the key type or the names makes a certificate due without --force.
    s.edit(|c| {
        set(certificate(c, "rsa"), "key", "ecdsa-p256");
        set(certificate(c, "p384"), "domains", vec!["a.example.com", "b.example.com", "c.example.com"]);
    });
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("rsa: renewed (key type rsa-2048 installed, ecdsa-p256 configured)"), "{run:?}");
    assert!(run.stdout.contains("p384: renewed (installed certificate does not cover c.example.com)"), "{run:?}");
    assert!(run.stdout.contains("p256: not due"), "{run:?}");
    assert!(cert_text(&s.fullchain("rsa")).contains("prime256v1"));
}

#[test]
fn renew_before_makes_a_certificate_due() {
    let pebble = Pebble::start();
    // Pebble issues 5-year leaves: a renew_before longer than that means "due at every run".
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").always_due()]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let first = serial(&s.fullchain("registry"));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed (") && run.stdout.contains("days left)"), "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), first);
}

#[test]
fn dry_run_obtains_but_installs_nothing() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let run = s.run(&["renew", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("dry run: nothing stored or installed"), "{run:?}");
    assert!(run.stdout.contains("dry run: 1 tried"), "{run:?}");
    assert_eq!(fs::read_dir(s.install_dir("registry")).unwrap().count(), 0);
    assert!(!s.state().join("certs").exists());
    // Not Let's Encrypt: the names are validated, the order is never finalized, and the CA says
    // it issued nothing.
    assert!(run.stdout.contains("validated 1 name(s); the order was not finalized (no certificate issued)"), "{run:?}");
    assert!(!pebble.logs().contains("Issued certificate serial"), "Pebble's log: {}", pebble.logs());
}

#[test]
fn external_account_binding() {
    // Pebble's example EAB key (base64url HMAC).
    let (kid, hmac) = ("kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W");
    let pebble = Pebble::start_with(PebbleOpts { eab: vec![(kid.into(), hmac.into())], ..Default::default() });

    let without = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let run = without.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("externalAccountRequired"), "{run:?}");
    assert!(run.stdout.contains("eab"), "the message must say how to fix it: {run:?}");

    let with = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    with.edit(|c| set(c, "acme.eab", toml! { kid = (kid) hmac_key = (hmac) }));
    let run = with.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_chain_verifies(&with.fullchain("registry"), &pebble.issuing_root());
    // The HMAC key is a secret: check-config must not print it.
    let shown = with.run(&["check-config"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(!shown.stdout.contains(hmac) && shown.stdout.contains("<redacted>"), "{shown:?}");
}

#[test]
fn ca_down_leaves_installed_files_untouched() {
    let mut pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let (chain, key) = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());

    pebble.stop();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("registry: FAILED (--force): cannot reach the ACME server"), "{run:?}");
    assert!(run.stdout.contains(&pebble.directory_url), "the error must name the CA: {run:?}");
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), chain);
    assert_eq!(fs::read(s.key("registry")).unwrap(), key);
    assert_eq!(fs::read_dir(s.install_dir("registry")).unwrap().count(), 2, "no temp files left behind");
}

#[test]
fn refused_identifier_fails_only_that_certificate() {
    let pebble = Pebble::start_with(PebbleOpts { blocklist: vec!["blocked.example.com".into()], ..Default::default() });
    let s = Setup::new(&pebble, &[cert("bad", &["blocked.example.com"], "ecdsa-p256"), cert("good", &["good.example.com"], "ecdsa-p256")]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("bad: FAILED (nothing installed yet): ACME rejectedIdentifier"), "{run:?}");
    assert!(run.stdout.contains("good: renewed"), "{run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 1 failed"), "{run:?}");
    assert!(!s.fullchain("bad").exists());
    assert_chain_verifies(&s.fullchain("good"), &pebble.issuing_root());
}

#[test]
fn validation_failure_names_the_domain() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    // Answer HTTP-01 on a port the CA does not use: validation must fail with its reason.
    s.edit(|c| set(c, "http01.listen", format!("127.0.0.1:{}", free_port())));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("validation failed: registry.example.com: ACME connection"), "{run:?}");
    assert_eq!(fs::read_dir(s.install_dir("registry")).unwrap().count(), 0);
}

#[test]
fn webroot_mode_serves_tokens_through_an_existing_web_server() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let webroot = s.root.path().join("www");
    fs::create_dir_all(&webroot).unwrap();
    let server = StaticServer::start(&webroot, pebble.http_port);
    s.edit(|c| set(c, "http01", toml! { webroot = (webroot.display().to_string()) }));
    let run = s.run(&["renew"]);
    drop(server);
    assert_eq!(run.code, 0, "{run:?}");
    assert_chain_verifies(&s.fullchain("registry"), &pebble.issuing_root());
    let left = fs::read_dir(webroot.join(".well-known/acme-challenge")).unwrap().count();
    assert_eq!(left, 0, "tokens are removed after validation");
}

#[test]
fn changed_contact_updates_the_same_account() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let account_file = fs::read_dir(s.state().join("accounts")).unwrap().next().unwrap().unwrap().path();
    let before: serde_json::Value = serde_json::from_slice(&fs::read(&account_file).unwrap()).unwrap();

    s.edit(|c| set(c, "acme.contact", vec!["mailto:oncall@example.com"]));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("ACME account contact updated"), "{run:?}");
    let after: serde_json::Value = serde_json::from_slice(&fs::read(&account_file).unwrap()).unwrap();
    assert_eq!(after["credentials"]["id"], before["credentials"]["id"], "same account URL");
    assert_eq!(after["contact"][0], "mailto:oncall@example.com");
    assert_eq!(fs::read_dir(s.state().join("accounts")).unwrap().count(), 1);
    // The CA has it too, on that same account.
    let credentials = &after["credentials"];
    let at_ca = pebble.account(credentials["id"].as_str().unwrap(), credentials["key_pkcs8"].as_str().unwrap());
    assert_eq!(at_ca["contact"], serde_json::json!(["mailto:oncall@example.com"]), "{at_ca}");
    assert_eq!(at_ca["status"], "valid", "{at_ca}");
}

#[test]
fn second_process_is_refused_while_the_lock_is_held() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let state = regcert::state::StateDir::open(&s.state()).unwrap();
    let held = state.lock("test holder").unwrap();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("another regcert process holds the lock"), "{run:?}");
    assert!(run.stderr.contains("test holder"), "must say who holds it: {run:?}");
    assert!(!s.fullchain("registry").exists());
    drop(held);
    assert_eq!(s.run(&["renew"]).code, 0);
}

#[test]
fn an_unwritable_install_dir_fails_only_its_certificate() {
    let pebble = Pebble::start();
    let s = Setup::new(
        &pebble,
        &[cert("registry", &["registry.example.com"], "ecdsa-p256"), cert("other", &["other.example.com"], "ecdsa-p256")],
    );
    // Run as `nobody`: `registry`'s install dir belongs to root and is not writable for it;
    // `other`'s is, and so is the state dir's parent.
    fs::set_permissions(s.root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    fs::set_permissions(s.install_dir("other"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    // check-config reports the host problem (a configuration check, exit 2) …
    let run = s.run_as_nobody(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("install.dir") && run.stderr.contains("is not writable by this user"), "{run:?}");

    // … but renew works on every other certificate: only this one fails, nothing is ordered for it.
    let run = s.run_as_nobody(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("registry: FAILED (nothing installed yet): [[certificate]] `registry`: install.dir")
            && run.stdout.contains("is not writable by this user"),
        "{run:?}"
    );
    assert!(run.stdout.contains("other: renewed"), "{run:?}");
    assert_key_matches(&s.fullchain("other"), &s.key("other"));
    assert!(!s.fullchain("registry").exists());
    assert_eq!(pebble.logs().matches("Issued certificate serial").count(), 1, "no order for the blocked certificate");

    // Reading is fine for that user: `status` does not need write access.
    let run = s.run_as_nobody(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("installed:  nothing yet"), "{run:?}");

    // Once the directory is writable, the next run renews it.
    fs::set_permissions(s.install_dir("registry"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let run = s.run_as_nobody(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
}

#[test]
fn malformed_installed_certificate_is_replaced_and_not_backed_up() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    fs::write(s.fullchain("registry"), "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
    fs::write(s.key("registry"), "garbage").unwrap();
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("next due:   now (installed certificate unusable"), "{status:?}");
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed (installed certificate unusable"), "{run:?}");
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    // Not a known-good pair: never copied into state_dir (a rollback could not use it).
    assert!(!s.state().join("certs/registry/previous").exists());
    assert!(run.stderr.contains("the installed pair is not backed up: the fullchain cannot be read"), "{run:?}");
}

#[test]
fn failed_install_restores_the_pair_and_next_run_installs_the_kept_certificate() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let (old_chain, old_key) = (fs::read(s.fullchain("registry")).unwrap(), fs::read(s.key("registry")).unwrap());

    // Make the fullchain impossible to replace: the key is written first and must be put back.
    let blocker = s.install_dir("registry").join("blocked");
    fs::rename(s.fullchain("registry"), &blocker).unwrap();
    fs::create_dir(s.fullchain("registry")).unwrap();
    fs::write(s.fullchain("registry").join("x"), "").unwrap();
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("registry: FAILED (--force): cannot write"), "{run:?}");
    assert_eq!(fs::read(s.key("registry")).unwrap(), old_key, "the old key is restored");
    let issued_serial = serial(&s.state().join("certs/registry/cert.pem"));

    // Repair the directory: the next run installs the certificate issued above, without a new order.
    fs::remove_dir_all(s.fullchain("registry")).unwrap();
    fs::rename(&blocker, s.fullchain("registry")).unwrap();
    assert_eq!(fs::read(s.fullchain("registry")).unwrap(), old_chain);
    // Make what is installed due (its key no longer matches), so the kept certificate is wanted.
    fs::write(s.key("registry"), "garbage").unwrap();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("installed the certificate already issued and kept in state_dir"), "{run:?}");
    assert_eq!(serial(&s.fullchain("registry")), issued_serial);
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
}

#[test]
fn survives_a_ca_that_rejects_many_nonces() {
    // Half the nonces rejected: instant-acme's own retries (three attempts per request) are not
    // enough on their own, so every step must also be retried by regcert — fetching the
    // authorizations (a POST-as-GET, which needs a nonce too) included.
    let pebble = Pebble::start_with(PebbleOpts { nonce_reject: Some(50), ..Default::default() });
    let certs: Vec<CertSpec> = (0..4).map(|i| cert(&format!("c{i}"), &[&format!("n{i}.example.com")], "ecdsa-p256")).collect();
    let s = Setup::new(&pebble, &certs);
    // One order at a time, so Pebble's log reads order by order.
    s.edit(|c| set(c, "concurrency", 1));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("4 renewed, 0 not due, 0 failed"), "{run:?}");
    // Pebble does not log the rejections, but it logs every request: an authorization fetched
    // with four or more POSTs is one that instant-acme gave up on (badNonce three times) and
    // regcert asked for again. Each order has one authorization (one name); rejection is random,
    // so renew until that happened (at 50%, one order in eight; 30 runs make missing it ~1e-7).
    let mut runs = 1;
    while most_posts_for_one_authorization(&pebble.logs()) < 4 {
        assert!(runs < 30, "no authorization fetch needed regcert's retry in {runs} runs:\n{}", pebble.logs());
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("4 renewed, 0 not due, 0 failed"), "{run:?}");
        runs += 1;
    }
    for i in 0..4 {
        assert_chain_verifies(&s.fullchain(&format!("c{i}")), &pebble.issuing_root());
    }
}

/// From Pebble's request log: the most POSTs to /authZ/ between an order and its first challenge
/// response. With one name per order, that is the attempts one authorization fetch took.
fn most_posts_for_one_authorization(log: &str) -> usize {
    let (mut most, mut current) = (0, 0);
    for line in log.lines() {
        if line.contains("POST /order-plz ") {
            current = 0;
        } else if line.contains("POST /authZ/ ") {
            current += 1;
        } else if line.contains("POST /chalZ/ ") {
            most = most.max(current);
            current = 0;
        }
    }
    most
}

#[test]
fn switching_the_issuer_makes_the_certificate_due() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    assert_eq!(s.run(&["renew"]).code, 0);
    // From the ACME CA to a private CA: the ACME certificate is valid for years, but it is not
    // from the CA the configuration now names.
    s.edit(|c| c.extend(toml::toml! { [ca] internal = {} }));
    s.edit_cert("registry", |c| set(c, "issuer", "ca:internal"));
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("installed certificate was issued by {}, the configured issuer is ca:internal", pebble.directory_url)),
        "{run:?}"
    );
    assert!(cert_text(&s.fullchain("registry")).contains("Issuer: CN = regcert private CA"), "now from the private CA");
    let again = s.run(&["renew"]);
    assert!(again.stdout.contains("registry: not due"), "{again:?}");
}
