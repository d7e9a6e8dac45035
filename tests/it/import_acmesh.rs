//! `regcert import acme.sh` from an acme.sh home built in acme.sh's on-disk format, with an
//! account that really exists on Pebble: the account is reused (same URL), the installed
//! certificates are adopted (the first `renew` is a no-op), and settings are carried over.

use crate::common::*;
use std::fs;
use std::path::Path;

/// Create an ACME account on Pebble the way any client would; returns (account URL, PKCS#8 key PEM).
fn pebble_account(pebble: &Pebble) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let new =
            instant_acme::NewAccount { contact: &["mailto:ops@example.com"], terms_of_service_agreed: true, only_return_existing: false };
        let (account, creds) = instant_acme::Account::builder_with_root(&pebble.tls_root)
            .unwrap()
            .create(&new, pebble.directory_url.clone(), None)
            .await
            .unwrap();
        let json = serde_json::to_value(&creds).unwrap();
        use base64::Engine;
        let der = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(json["key_pkcs8"].as_str().unwrap()).unwrap();
        let pem =
            format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", base64::engine::general_purpose::STANDARD.encode(der));
        (account.id().to_owned(), pem)
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    format!("__ACME_BASE64__START_{}__ACME_BASE64__END_", base64::engine::general_purpose::STANDARD.encode(s))
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn imports_account_and_certificates_and_renew_is_a_no_op() {
    let pebble = Pebble::start();
    // Two certificates as acme.sh would have installed them: ECC and RSA.
    let issued = Setup::new(
        &pebble,
        &[cert("ecc", &["ecc.example.com"], "ecdsa-p256"), cert("rsa", &["rsa.example.com", "www.rsa.example.com"], "rsa-2048")],
    );
    assert_eq!(issued.run(&["renew"]).code, 0);
    let (account_url, key_pkcs8) = pebble_account(&pebble);

    // ~/.acme.sh in acme.sh's format.
    let home = issued.root.path().join("acme.sh");
    let host_path = pebble.directory_url.trim_start_matches("https://");
    let ca_dir = home.join("ca").join(host_path);
    let p8 = issued.root.path().join("account.p8.pem");
    fs::write(&p8, key_pkcs8).unwrap();
    fs::create_dir_all(&ca_dir).unwrap();
    openssl(&["ec", "-in", p8.to_str().unwrap(), "-out", ca_dir.join("account.key").to_str().unwrap()]); // SEC1, like acme.sh
    write(&ca_dir.join("ca.conf"), &format!("ACCOUNT_URL='{account_url}'\nCA_EMAIL='ops@example.com'\nCA_KEY_HASH='abc'\n"));
    write(&ca_dir.join("account.json"), "{\"status\":\"valid\"}");
    let tsig = issued.root.path().join("nsupdate.key");
    fs::write(&tsig, crate::common::bind::tsig_key("acme-sh")).unwrap();
    write(
        &home.join("account.conf"),
        &format!(
            "LOG_FILE='/root/.acme.sh/acme.sh.log'\nAUTO_UPGRADE='1'\nACCOUNT_EMAIL='ops@example.com'\nSAVED_NSUPDATE_SERVER='127.0.0.1'\nSAVED_NSUPDATE_SERVER_PORT='5353'\nSAVED_NSUPDATE_KEY='{}'\nSAVED_NSUPDATE_ZONE='example.com'\nDEFAULT_ACME_SERVER='{}'\n",
            tsig.display(),
            pebble.directory_url
        ),
    );
    let conf = |domain: &str, alt: &str, webroot: &str, keylen: &str, install: &Path, reload: &str| {
        format!(
            "Le_Domain='{domain}'\nLe_Alt='{alt}'\nLe_Webroot='{webroot}'\nLe_PreHook=''\nLe_PostHook=''\nLe_RenewHook=''\nLe_API='{api}'\nLe_Keylength='{keylen}'\n\
             Le_CertCreateTime='1700000000'\nLe_NextRenewTime='1900000000'\nLe_RealCertPath=''\nLe_RealCACertPath=''\nLe_RealKeyPath='{key}'\nLe_ReloadCmd='{reload}'\nLe_RealFullChainPath='{chain}'\n",
            api = pebble.directory_url,
            key = install.join("domain.key").display(),
            chain = install.join("domain.crt").display(),
            reload = b64(reload)
        )
    };
    write(
        &home.join("ecc.example.com_ecc/ecc.example.com.conf"),
        &conf("ecc.example.com", "no", "no", "ec-256", &issued.install_dir("ecc"), "docker restart registry"),
    );
    write(
        &home.join("rsa.example.com/rsa.example.com.conf"),
        &conf("rsa.example.com", "www.rsa.example.com", "dns_nsupdate", "", &issued.install_dir("rsa"), "systemctl reload nginx"),
    );

    // --dry-run changes nothing.
    let dry_state = issued.root.path().join("dry-state");
    let import = |state: &Path, more: &[&str]| {
        let args = [&["import", "acme.sh", "--home", home.to_str().unwrap(), "--state-dir", state.to_str().unwrap()], more].concat();
        regcert_bare(&args)
    };
    let run = import(&dry_state, &["--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("dry run") && run.stdout.contains(&format!("would adopt the ACME account {account_url}")), "{run:?}");
    assert!(!dry_state.exists());

    let state = issued.root.path().join("imported-state");
    let config = issued.root.path().join("imported.toml");
    let run = import(&state, &["--write-config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("adopted the ACME account {account_url}")), "{run:?}");
    assert!(!run.stdout.contains("could not carry over"), "{run:?}");
    let text = fs::read_to_string(&config).unwrap();
    for want in [
        "docker = { container = \"registry\", action = \"restart\" }",
        "command = [\"/bin/sh\", \"-c\", \"systemctl reload nginx\"]",
        "provider = \"rfc2136\", server = \"127.0.0.1:5353\", zone = \"example.com.\"",
        "key = \"ecdsa-p256\"",
        "key = \"rsa-2048\"",
        "domains = [\"rsa.example.com\", \"www.rsa.example.com\"]",
        "contact = [\"mailto:ops@example.com\"]",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Pebble's own TLS root and the test's HTTP-01 port are this test bed's, not acme.sh's.
    edit_toml(&config, |c| {
        set(c, "acme.ca_bundle", pebble.tls_root.display().to_string());
        set(c, "http01.listen", format!("127.0.0.1:{}", pebble.http_port));
    });

    // The current certificates are adopted: nothing is due.
    let run = regcert(&config, &["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("0 renewed, 2 not due, 0 failed"), "{run:?}");

    // The adopted account is the acme.sh one, and Pebble accepts orders signed with it.
    let account_file = fs::read_dir(state.join("accounts")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(mode(&account_file), 0o600);
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&account_file).unwrap()).unwrap();
    assert_eq!(stored["credentials"]["id"], account_url.as_str());
    edit_toml(&config, |c| {
        let reload = certificate(c, "ecc.example.com").remove("reload").unwrap();
        assert_eq!(reload["docker"]["container"].as_str(), Some("registry"), "{reload}");
    });
    let run = regcert(&config, &["renew", "--force", "--cert", "ecc.example.com"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("ACME account created"), "no new account: {run:?}");
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&account_file).unwrap()).unwrap();
    assert_eq!(stored["credentials"]["id"], account_url.as_str());
    assert_key_matches(&issued.fullchain("ecc"), &issued.key("ecc"));
}

#[test]
fn unsupported_dns_api_is_reported_with_the_way_forward() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("acme.sh");
    let install = dir.path().join("certs");
    fs::create_dir_all(&install).unwrap();
    write(&home.join("account.conf"), "ACCOUNT_EMAIL='ops@example.com'\n");
    write(&home.join("ca/acme-v02.api.letsencrypt.org/directory/account.key"), "not a key\n");
    write(
        &home.join("registry.example.com/registry.example.com.conf"),
        &format!(
            "Le_Domain='registry.example.com'\nLe_Alt='no'\nLe_Webroot='dns_cf'\nLe_API='https://acme-v02.api.letsencrypt.org/directory'\nLe_Keylength='4096'\nLe_RealKeyPath='{0}/k.pem'\nLe_RealFullChainPath='{0}/c.pem'\n",
            install.display()
        ),
    );
    let run = regcert_bare(&["import", "acme.sh", "--home", home.to_str().unwrap(), "--state-dir", dir.path().join("s").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("dns_cf is not built into regcert") && run.stdout.contains("/etc/regcert/dns-hook-cf"), "{run:?}");
    assert!(run.stdout.contains("could not carry over") && run.stdout.contains("has no ACCOUNT_URL"), "{run:?}");
    assert!(run.stdout.contains("key = \"rsa-4096\""), "{run:?}");
}
