//! IP address certificates over ACME (RFC 8738) against the real Pebble 2.10: the order carries
//! identifiers of type "ip", the CSR IP SANs, and Pebble validates HTTP-01 by connecting to the
//! address itself on its httpPort (va.go: `net.JoinHostPort(identifier, httpPort)`), where
//! regcert's responder or a web server with a webroot answers. Verification connects to the IP
//! (no SNI: a TLS server name cannot be an IP address).

use crate::common::registry::*;
use crate::common::*;
use toml::toml;

/// The order behind the installed certificate, as Pebble holds it.
fn order_of(pebble: &Pebble, s: &Setup, name: &str) -> serde_json::Value {
    let (account, key) = s.account_credentials();
    let url = s.meta(name)["order_url"].as_str().unwrap().to_owned();
    pebble.post_as_get(&url, &account, &key)
}

/// The installed leaf lasts Pebble's `shortlived` period, has exactly the SAN `san` (openssl's
/// form: "DNS:…, IP Address:…") and no subject CN, chains to Pebble's root and matches its key.
fn assert_ip_leaf(pebble: &Pebble, s: &Setup, name: &str, san: &str) {
    let text = cert_text(&s.fullchain(name));
    let got = text.lines().skip_while(|l| !l.contains("Subject Alternative Name")).nth(1).unwrap_or_default().trim().to_owned();
    assert_eq!(got, san, "{text}");
    let subject = text.lines().find(|l| l.trim_start().starts_with("Subject:")).unwrap_or_default();
    assert!(!subject.contains("CN"), "no CN in an IP certificate of the shortlived profile: {subject}");
    let shortlived = PEBBLE_PROFILES.iter().find(|(profile, _)| *profile == "shortlived").unwrap().1;
    let (not_before, not_after) = validity(&s.fullchain(name));
    assert!((not_after - not_before).abs_diff(shortlived) <= 60, "a shortlived leaf: {text}");
    assert_chain_verifies(&s.fullchain(name), &pebble.issuing_root());
    assert_key_matches(&s.fullchain(name), &s.key(name));
}

#[test]
fn an_ip_only_certificate_is_issued_over_http01_installed_into_a_registry_and_verified_at_the_ip() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let mut config = pebble_config(&pebble);
    // The responder's default form ([::]:PORT): one listener for 127.0.0.1 and ::1.
    set(&mut config, "http01.listen", format!("[::]:{}", pebble.http_port));
    let spec = CertSpec::new("ip", toml! { ips = ["127.0.0.1", "::1"] profile = "shortlived" key = "ecdsa-p256" });
    let s = Setup::with_config(config, &[spec]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    // openssl writes ::1 in full.
    assert_ip_leaf(&pebble, &s, "ip", "IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");

    // The order named both addresses as IP identifiers, and the profile.
    let order = order_of(&pebble, &s, "ip");
    let mut ids: Vec<(String, String)> = order["identifiers"]
        .as_array()
        .unwrap_or_else(|| panic!("{order}"))
        .iter()
        .map(|i| (i["type"].as_str().unwrap().to_owned(), i["value"].as_str().unwrap().to_owned()))
        .collect();
    ids.sort();
    assert_eq!(ids, [("ip".to_owned(), "127.0.0.1".to_owned()), ("ip".to_owned(), "::1".to_owned())], "{order}");
    assert_eq!(order["profile"], "shortlived", "{order}");
    assert_eq!(s.meta("ip")["profile"], "shortlived");

    // A dry run validates both addresses and issues nothing.
    let run = s.run(&["renew", "--dry-run", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("validated 2 name(s)"), "{run:?}");

    // Status shows the addresses: configured and covered.
    let st = s.status_of("ip");
    assert_eq!(st["ips"], serde_json::json!(["127.0.0.1", "::1"]), "{st}");
    assert_eq!(st["covered"], serde_json::json!(["127.0.0.1", "::1"]), "{st}");
    let text = s.run(&["status"]);
    assert!(text.stdout.contains("names:      127.0.0.1, ::1"), "{text:?}");

    // A real registry container serving it on 127.0.0.1 and ::1 (the host's network); the
    // renewal restarts it and verification connects to the IP itself, no connect_to.
    let port = free_port();
    let reg = Registry::start(&s.install_dir("ip"), RegistryOpts { host_port: Some(port), ..Default::default() });
    let url = format!("https://127.0.0.1:{port}/v2/");
    let ca_bundle = pebble.issuing_root().display().to_string();
    s.edit_cert("ip", |c| {
        set(c, "reload", toml! { docker = { container = (reg.container.as_str()), action = "restart" } });
        set(c, "verify", toml! { url = (url.as_str()) ca_bundle = (ca_bundle.as_str()) timeout = "20s" });
    });
    let before = serial(&s.fullchain("ip"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}\n{}\n{}", reg.logs(), pebble.logs());
    assert!(run.stdout.contains(&format!("reloaded; verified: {url} serves it")), "{run:?}");
    assert_ne!(serial(&s.fullchain("ip")), before);
    assert_ip_leaf(&pebble, &s, "ip", "IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    assert_eq!(order_of(&pebble, &s, "ip")["profile"], "shortlived", "the renewal ordered the profile again");

    // And over IPv6: the same registry checked at [::1].
    let v6 = format!("https://[::1]:{port}/v2/");
    s.edit_cert("ip", |c| set(c, "verify.url", v6.as_str()));
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("connected to [::1]:{port}")), "{run:?}");

    // A name the certificate does not hold fails the check (the IP really is what was checked).
    s.edit_cert("ip", |c| set(c, "verify.url", format!("https://localhost:{port}/v2/")));
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 1, "{run:?}");
}

/// A DNS name and an IP address in one certificate, answered by a web server with a webroot
/// (pebble-challtestsrv resolves the name to 127.0.0.1, so both are asked at the same server).
#[test]
fn a_name_and_an_ip_in_one_certificate_through_a_webroot() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let webroot = tempfile::tempdir().unwrap();
    let _web = StaticServer::start(webroot.path(), pebble.http_port);
    let mut config = pebble_config(&pebble);
    table(&mut config, "http01").remove("listen");
    set(&mut config, "http01.webroot", webroot.path().display().to_string());
    let spec = CertSpec::new("ip", toml! { domains = ["web.example.com"] ips = ["127.0.0.1"] profile = "shortlived" key = "ecdsa-p256" });
    let s = Setup::with_config(config, &[spec]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", pebble.logs());
    assert_ip_leaf(&pebble, &s, "ip", "DNS:web.example.com, IP Address:127.0.0.1");
    let mut ids: Vec<String> =
        order_of(&pebble, &s, "ip")["identifiers"].as_array().unwrap().iter().map(|i| format!("{}:{}", i["type"], i["value"])).collect();
    ids.sort();
    assert_eq!(ids, ["\"dns\":\"web.example.com\"", "\"ip\":\"127.0.0.1\""]);
    let left: Vec<_> = std::fs::read_dir(webroot.path().join(".well-known/acme-challenge")).unwrap().collect();
    assert!(left.is_empty(), "the token files are removed: {left:?}");
}

#[test]
fn ips_with_a_dns_challenge_are_refused_by_the_config_check() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let dns = toml! { provider = "exec" command = ["/bin/true"] nameservers = ["127.0.0.1:53"] };
    let spec = CertSpec::new(
        "ip",
        toml! { domains = ["registry.example.com"] ips = ["127.0.0.1"] challenge = "dns-01" dns = (dns) key = "ecdsa-p256" },
    );
    let s = Setup::new(&pebble, &[spec]);
    for args in [&["check-config"][..], &["renew"]] {
        let run = s.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        for want in [
            "[[certificate]] `ip`: ips = [\"127.0.0.1\"] cannot be validated with challenge = \"dns-01\"",
            "never through DNS",
            "use challenge = \"http-01\"",
        ] {
            assert!(run.stderr.contains(want), "{want:?} not in {run:?}");
        }
    }
    assert!(!pebble.logs().contains("POST /order-plz"), "nothing was ordered:\n{}", pebble.logs());
    assert!(!s.fullchain("ip").exists());
}
