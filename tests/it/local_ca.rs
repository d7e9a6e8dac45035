//! The private CA: a registry on a bare IP gets a certificate with an IP SAN, Docker clients
//! trust it through `regcert trust install`, renewals go through the same install → reload →
//! verify path, and existing openssl CAs can be adopted.

use crate::common::registry::*;
use crate::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value, toml};

/// `import = { cert, key }` of the CA, with more keys (passphrase_file).
fn import(cert: &Path, key: &Path, more: Table) -> Table {
    let mut import = toml! { cert = (cert.display().to_string()) key = (key.display().to_string()) };
    import.extend(more);
    toml! { import = (Value::from(import)) }
}

#[test]
fn ip_registry_trusted_by_docker_through_trust_install() {
    let ip = fixed_ip();
    let s = ca_setup(
        toml! { subject = "CN=Test Registry CA, O=regcert tests" key = "ecdsa-p384" },
        toml! { domains = ["registry.corp.lan"] ips = [(ip.as_str())] validity = "30d" },
    );
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let key_mode = mode(&s.state().join("ca/internal/root.key"));
    assert_eq!(key_mode, 0o600);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let text = cert_text(&s.fullchain("registry"));
    assert!(text.contains(&format!("IP Address:{ip}")) && text.contains("DNS:registry.corp.lan"), "{text}");
    assert!(text.contains("TLS Web Server Authentication") && text.contains("Authority Key Identifier"), "{text}");
    let root = export_root(&s);
    assert_chain_verifies(&s.fullchain("registry"), &root);

    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { ip: Some(ip.clone()), ..Default::default() });
    let registry = format!("{ip}:5000");
    let repo = format!("{registry}/tiny:1");
    let certs_d = Path::new("/etc/docker/certs.d").join(&registry);
    let _ = fs::remove_dir_all(&certs_d);
    // Without trust: the error every operator knows.
    docker(&["tag", TINY, &repo]);
    let err = docker_retry(&["push", &repo]).expect_err("push must fail without trust");
    assert!(err.contains("x509") || err.contains("certificate"), "{err}");

    // --from-url: a wrong fingerprint writes nothing.
    let run = regcert_bare(&[
        "trust",
        "install",
        "--registry",
        &registry,
        "--from-url",
        &format!("https://{registry}"),
        "--fingerprint",
        "00:11",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("fingerprint mismatch") && run.stderr.contains("nothing was written"), "{run:?}");
    assert!(!certs_d.join("ca.crt").exists());

    let run = regcert_bare(&["trust", "install", "--registry", &registry, "--ca-file", root.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(mode(&certs_d.join("ca.crt")), 0o644);
    docker_retry(&["push", &repo]).expect("docker push with certs.d/IP:PORT/ca.crt");
    docker(&["rmi", &repo]);
    docker_retry(&["pull", &repo]).expect("docker pull");
    docker(&["rmi", &repo]);

    let list = regcert_bare(&["trust", "list", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["registry"] == registry.as_str() && e["subject"].as_str().unwrap().contains("Test Registry CA")),
        "{list:?}"
    );

    // --from-url with the right fingerprint (the CA root is served as part of the chain).
    // The fingerprint as an operator gets it, from openssl (colons and all).
    let fp = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", root.to_str().unwrap()]);
    let fp = fp.trim().split_once('=').unwrap().1.to_owned();
    assert_eq!(regcert_bare(&["trust", "remove", "--registry", &registry]).code, 0);
    let run =
        regcert_bare(&["trust", "install", "--registry", &registry, "--from-url", &format!("https://{registry}"), "--fingerprint", &fp]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(fs::read_to_string(certs_d.join("ca.crt")).unwrap(), fs::read_to_string(&root).unwrap());
    assert_eq!(regcert_bare(&["trust", "remove", "--registry", &registry]).code, 0);
    drop(reg);
}

#[test]
fn leaf_renewal_restarts_verifies_against_the_ca_and_syncs_certs_d() {
    let ip = fixed_ip();
    let s = ca_setup(toml! { subject = "CN=Two Level CA" intermediate = true }, toml! { ips = [(ip.as_str())] key = "ecdsa-p256" });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("move") && run.stdout.contains("offline/root.key"), "{run:?}");
    assert!(!s.state().join("ca/internal/root.key").exists(), "the root key is not online");
    assert_eq!(s.run(&["renew"]).code, 0);
    assert_eq!(pem_count(&s.fullchain("registry")), 2, "leaf + intermediate");
    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { ip: Some(ip.clone()), ..Default::default() });
    let certs_d = s.root.path().join("certs.d");
    // Verification trusts the CA's root by itself: no ca_bundle.
    let settings = toml! {
        [reload]
        docker = { container = (reg.container.as_str()) }

        [verify]
        url = (format!("https://{ip}:5000/v2/"))
        timeout = "20s"

        [trust]
        docker_clients = [(format!("{ip}:5000"))]
        runtimes = ["docker"]
        certs_d = (certs_d.display().to_string())
    };
    s.edit_cert("registry", |c| c.extend(settings));
    let before = serial(&s.fullchain("registry"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("verified: https://{ip}:5000/v2/ serves it")), "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), before);
    let root = export_root(&s);
    assert_eq!(fs::read_to_string(certs_d.join(format!("{ip}:5000/ca.crt"))).unwrap(), fs::read_to_string(root).unwrap());
    // Leaves renew when a third of their lifetime is left, like ACME ones: due within an hour of
    // that moment, on either side (a certificate due at expiry, or at once, is not).
    let st: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
    let (not_after, due) = (st[0]["not_after"].as_u64().unwrap(), st[0]["next_due"].as_u64().unwrap());
    let (start, end) = validity(&s.fullchain("registry"));
    assert_eq!(not_after, end, "status reports the installed notAfter");
    let third_left = end - (end - start) / 3;
    assert!(due.abs_diff(third_left) < 3_600, "due {due}, a third of [{start}, {end}] left at {third_left}");
}

fn openssl_ca(dir: &Path) -> (PathBuf, PathBuf) {
    // The classic recipe: a self-signed CA with openssl req -x509.
    let (cert, key) = (dir.join("cacert.pem"), dir.join("cakey.pem"));
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        k,
        "-out",
        c,
        "-days",
        "3650",
        "-subj",
        "/C=CN/O=Example/CN=Example Registry CA",
    ]);
    (cert, key)
}

#[test]
fn imports_an_openssl_ca_and_reports_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(dir.path());
    let s = ca_setup(import(&cert, &key, Table::new()), toml! { domains = ["registry.corp.lan"] ips = ["192.168.20.10"] });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("imported"), "{run:?}");
    assert_eq!(s.run(&["renew"]).code, 0);
    assert_chain_verifies(&s.fullchain("registry"), &cert);
    let again = s.run(&["ca", "init", "internal"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");

    // A key that belongs to another CA.
    let (_, other_key) = openssl_ca(&{
        let d = dir.path().join("other");
        fs::create_dir_all(&d).unwrap();
        d
    });
    let bad = ca_setup(import(&cert, &other_key, Table::new()), toml! { domains = ["r.corp.lan"] });
    let run = bad.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("does not belong to import.cert"), "{run:?}");
    assert!(!bad.state().join("ca/internal/root.key").exists(), "nothing written");

    // An encrypted key: a clear error, then the passphrase file opens it.
    let enc = dir.path().join("cakey.enc.pem");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        key.to_str().unwrap(),
        "-out",
        enc.to_str().unwrap(),
        "-passout",
        "pass:s3cret",
    ]);
    let locked = ca_setup(import(&cert, &enc, Table::new()), toml! { domains = ["r.corp.lan"] });
    let run = locked.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("is encrypted") && run.stderr.contains("passphrase_file") && run.stderr.contains("unencrypted copy"),
        "{run:?}"
    );
    let pass = dir.path().join("pass");
    fs::write(&pass, "s3cret\n").unwrap();
    let opened =
        ca_setup(import(&cert, &enc, toml! { passphrase_file = (pass.display().to_string()) }), toml! { domains = ["r.corp.lan"] });
    let run = opened.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(opened.run(&["renew"]).code, 0);

    // An IP SAN typo is a config error that names the key.
    let typo = ca_setup(toml! { subject = "CN=x" }, toml! { ips = ["192.168.20.300"] });
    let run = typo.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ips") && run.stderr.contains("invalid IP address"), "{run:?}");
    // A private IP with Let's Encrypt (which certifies public IPs only) is refused with the way forward.
    let acme_ip = Setup::with_config(
        toml! { [acme] directory = "letsencrypt" accept_terms = true },
        &[CertSpec::new("r", toml! { domains = ["r.example.com"] ips = ["10.0.0.5"] profile = "shortlived" })],
    );
    let run = acme_ip.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ips: 10.0.0.5 is not a public address") && run.stderr.contains("issuer = \"ca:NAME\""), "{run:?}");
}

#[test]
fn name_constraints_and_ipv6_sans() {
    let s = ca_setup(
        toml! { subject = "CN=Constrained CA" name_constraints = ["corp.lan"] },
        toml! { domains = ["registry.corp.lan"] ips = ["fd00::10", "192.168.20.10"] },
    );
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let root = export_root(&s);
    let ca_text = cert_text(&root);
    assert!(ca_text.contains("X509v3 Name Constraints: critical") && ca_text.contains("DNS:corp.lan"), "{ca_text}");
    let text = cert_text(&s.fullchain("registry"));
    assert!(text.contains("IP Address:FD00:0:0:0:0:0:0:10") && text.contains("IP Address:192.168.20.10"), "{text}");
    assert_chain_verifies(&s.fullchain("registry"), &root);
    // A name outside the constraints is refused before anything is issued: no client would
    // accept such a certificate.
    s.edit_cert("registry", |c| set(c, "domains", toml::Value::Array(vec!["registry.other.lan".into()])));
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "[[certificate]] `registry`: \"registry.other.lan\" (outside corp.lan) is not allowed by the name constraints of [ca.internal]"
        ),
        "{run:?}"
    );
}

/// A leaf for `sans` (openssl's subjectAltName syntax) signed by openssl with the CA's own key:
/// what `openssl verify` says of a certificate regcert would refuse to issue.
fn openssl_leaf(dir: &Path, ca_cert: &Path, ca_key: &Path, sans: &str) -> (bool, String) {
    let (key, csr, leaf, ext) = (dir.join("leaf.key"), dir.join("leaf.csr"), dir.join("leaf.pem"), dir.join("leaf.ext"));
    fs::write(&ext, format!("subjectAltName={sans}\n")).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p(&key),
        "-subj",
        "/CN=leaf",
        "-out",
        &p(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(ca_cert),
        "-CAkey",
        &p(ca_key),
        "-set_serial",
        "7",
        "-days",
        "5",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&leaf),
    ]);
    let out = std::process::Command::new(tool("openssl")).args(["verify", "-CAfile", &p(ca_cert), &p(&leaf)]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Issue #10 item 15: IP ranges in the name constraints, permitted and excluded, IPv4 and IPv6 —
/// written by `ca init`, enforced by config validation and by issuing, and honoured by openssl.
#[test]
fn ip_name_constraints_are_written_enforced_and_honoured_by_openssl() {
    let s = ca_setup(
        toml! {
            subject = "CN=IP Constrained CA"
            name_constraints = ["corp.lan", "192.168.20.0/24", "fd00::/8"]
            excluded_name_constraints = ["192.168.20.128/25", "fd00:dead::/32"]
        },
        toml! { domains = ["registry.corp.lan"] ips = ["192.168.20.10", "fd00::10"] },
    );
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let root = export_root(&s);
    let ca_text = cert_text(&root);
    for part in [
        "Permitted:",
        "IP:192.168.20.0/255.255.255.0",
        "IP:FD00:0:0:0:0:0:0:0/FF00:0:0:0:0:0:0:0",
        "Excluded:",
        "IP:192.168.20.128/255.255.255.128",
    ] {
        assert!(ca_text.contains(part), "{part} missing:\n{ca_text}");
    }
    assert_chain_verifies(&s.fullchain("registry"), &root);

    // openssl enforces what the CA says, for leaves regcert would never issue.
    let dir = tempfile::tempdir().unwrap();
    let key = s.state().join("ca/internal/root.key");
    for (sans, ok, why) in [
        ("DNS:registry.corp.lan,IP:192.168.20.20,IP:fd00::20", true, ""),
        ("DNS:registry.corp.lan,IP:10.0.0.1", false, "permitted subtree violation"),
        ("DNS:registry.corp.lan,IP:192.168.20.200", false, "excluded subtree violation"),
        ("DNS:registry.corp.lan,IP:fe80::1", false, "permitted subtree violation"),
        ("DNS:registry.corp.lan,IP:fd00:dead::1", false, "excluded subtree violation"),
    ] {
        let (verified, out) = openssl_leaf(dir.path(), &root, &key, sans);
        assert_eq!(verified, ok, "{sans}: {out}");
        assert!(out.contains(why), "{sans}: {out}");
    }

    // regcert refuses the same names before anything is issued.
    for (ip, want) in [
        ("10.0.0.1", "\"10.0.0.1\" (outside 192.168.20.0/24, fd00::/8)"),
        ("192.168.20.200", "\"192.168.20.200\" (excluded by 192.168.20.128/25)"),
        ("fe80::1", "\"fe80::1\" (outside 192.168.20.0/24, fd00::/8)"),
        ("fd00:dead::1", "\"fd00:dead::1\" (excluded by fd00:dead::/32)"),
    ] {
        s.edit_cert("registry", |c| set(c, "ips", toml::Value::Array(vec![ip.into()])));
        let run = s.run(&["check-config"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(&format!("{want} is not allowed by the name constraints of [ca.internal]")), "{run:?}");
    }
    // A bad range is named.
    s.edit(|c| set(c, "ca.internal.excluded_name_constraints", toml::Value::Array(vec!["192.168.20.1/24".into()])));
    let run = s.run(&["check-config"]);
    assert!(run.code == 2 && run.stderr.contains("has host bits set; the range is \"192.168.20.0/24\""), "{run:?}");
}

/// The runtime check reads the constraints from the CA certificate itself: an imported openssl
/// CA limited to one IPv4 range refuses an IPv6 SAN that the configuration does not forbid.
#[test]
fn an_imported_ca_s_own_ip_constraints_are_enforced_when_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let constraints = [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign",
        "nameConstraints=critical,permitted;IP:10.20.0.0/255.255.0.0",
    ];
    self_signed(&key, &cert, "/CN=Ranged CA", &constraints);
    let s = ca_setup(import(&cert, &key, Table::new()), toml! { ips = ["10.20.1.5"] });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_chain_verifies(&s.fullchain("registry"), &cert);
    let before = fs::read_to_string(s.fullchain("registry")).unwrap();
    s.edit_cert("registry", |c| set(c, "ips", toml::Value::Array(vec!["10.20.1.5".into(), "fd00::5".into()])));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("CA \"internal\" may not certify \"fd00::5\" (outside 10.20.0.0/16) (its name constraints)"), "{run:?}");
    assert_eq!(fs::read_to_string(s.fullchain("registry")).unwrap(), before, "nothing installed");
}

/// `ca init --force` from a two-level CA to a one-level one: the old intermediate is gone and
/// leaves are signed by the new root (it used to stay and be preferred).
#[test]
fn ca_init_force_from_two_levels_to_one_signs_with_the_new_root() {
    let s = ca_setup(toml! { subject = "CN=Switching CA" intermediate = true }, toml! { domains = ["registry.corp.lan"] });
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    assert_eq!(s.run(&["renew"]).code, 0);
    assert_eq!(pem_count(&s.fullchain("registry")), 2);
    s.edit(|c| set(c, "ca.internal.intermediate", false));
    let run = s.run(&["ca", "init", "internal", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("removed the replaced CA's") && run.stdout.contains("intermediate.crt"), "{run:?}");
    for gone in ["intermediate.crt", "intermediate.key", "offline/root.key"] {
        assert!(!s.state().join("ca/internal").join(gone).exists(), "{gone} is left");
    }
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let root = export_root(&s);
    assert_eq!(pem_count(&s.fullchain("registry")), 2, "leaf + the root as its chain");
    assert_chain_verifies(&s.fullchain("registry"), &root);
    let issuer = openssl(&["x509", "-noout", "-issuer", "-in", s.fullchain("registry").to_str().unwrap()]);
    assert!(issuer.contains("Switching CA") && !issuer.contains("Intermediate"), "{issuer}");
}

/// A CA with less time left than its leaves' validity: leaves end with it, and `regcert run`
/// says so — an `expiring` event naming the CA, the metric, and `status`.
#[test]
fn an_expiring_ca_is_alerted_by_event_metric_and_status() {
    let watched = Watched::start();
    let s = ca_setup(toml! { subject = "CN=Short Lived CA" validity = "30d" }, toml! { domains = ["registry.corp.lan"] });
    s.edit(|c| c.extend(watched.settings()));
    let Watched { hook, metrics } = watched;
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let root = export_root(&s);
    let (_, ca_end) = validity(&root);
    let mut d = Daemon::start(&s.config);
    let body = hook.wait_for("\"ca\":\"internal\"", Duration::from_secs(60));
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "expiring");
    assert_eq!(event["certificate"], "ca:internal");
    assert_eq!(event["domains"][0], "registry.corp.lan");
    assert!(matches!(event["days_left"].as_i64(), Some(29 | 30)), "{event}");
    assert!(event["error"].as_str().unwrap().contains("private CA \"internal\" (CN=Short Lived CA) expires in"), "{event}");
    d.wait_for_log("1 renewed, 0 failed", 1, Duration::from_secs(30));
    let (_, text) = http_get(&metrics, "/metrics");
    assert!(text.contains(&format!("regcert_ca_expiry_timestamp_seconds{{name=\"internal\"}} {ca_end}")), "{text}");
    // The leaf (90 days by default) was cut short to end with the CA.
    assert_eq!(validity(&s.fullchain("registry")).1, ca_end);
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("CA EXPIRING: private CA \"internal\""), "{status:?}");
    let st: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st[0]["ca_expiry"]["not_after"].as_u64(), Some(ca_end));
    // Once a day, remembered across restarts: a second start checks again, without a new event.
    drop(d);
    let mut again = Daemon::start(&s.config);
    again.wait_for_log("0 renewed, 0 failed", 1, Duration::from_secs(30));
    let events = hook.bodies.lock().unwrap().iter().filter(|b| b.contains("\"ca\":\"internal\"")).count();
    assert_eq!(events, 1, "{:?}", hook.bodies.lock().unwrap());
}
