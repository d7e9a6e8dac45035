//! Issue 10 (hardening): configurations that would loop or panic are refused, secrets stay out
//! of every output, and the listeners regcert opens cannot be held by idle clients.

use crate::common::*;
use toml::{Value, toml};

#[test]
fn lifetimes_that_would_loop_or_panic_are_refused_by_check_config() {
    let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Lifetime CA" validity = "8000y" })) };
    let s = Setup::with_config(
        config,
        &[
            CertSpec::new("zero", toml! { issuer = "ca:internal" domains = ["zero.corp.lan"] validity = "0s" }),
            CertSpec::new("loop", toml! { issuer = "ca:internal" domains = ["loop.corp.lan"] validity = "30d" renew_before = "30d" }),
            CertSpec::new("default", toml! { issuer = "ca:internal" domains = ["d.corp.lan"] renew_before = "100d" }),
        ],
    );
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    for expected in [
        "[ca.internal] validity = \"8000years\" is more than 100 years",
        "`zero`: validity = \"0s\" would issue certificates that are already expired",
        "`loop`: renew_before = \"30d\" is not shorter than validity \"30d\": every check would renew it again",
        "`default`: renew_before = \"100d\" is not shorter than the default validity \"90d\"",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?}: {run:?}");
    }
    // Nothing reaches the CA code, which must not panic either.
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stderr.contains("panicked") && !s.state().join("ca").exists(), "{run:?}");

    // Fixed, the same configuration is accepted and issues.
    s.edit(|c| set(c, "ca.internal.validity", "100y"));
    s.edit_cert("zero", |c| set(c, "validity", "1d"));
    s.edit_cert("loop", |c| set(c, "renew_before", "10d"));
    s.edit_cert("default", |c| set(c, "renew_before", "30d"));
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("3 renewed"), "{run:?}");
}

/// The parts of a webhook URL that are its credentials.
const TOKENS: [&str; 3] = ["T0SECRET", "B0SECRET", "XSECRETX"];

fn assert_no_token(what: &str, text: &str) {
    for t in TOKENS {
        assert!(!text.contains(t), "{what} shows the webhook token {t}:\n{text}");
    }
}

#[test]
fn webhook_tokens_appear_in_no_output() {
    let hook = Webhook::start();
    let url = format!("{}/T0SECRET/B0SECRET?token=XSECRETX", hook.url);
    // A second hook that fails (nothing listens): its error is logged, without the URL's secret part.
    let dead = format!("http://127.0.0.1:{}/hook/T0SECRET?token=XSECRETX", free_port());
    let mut config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Notify CA" })) };
    config
        .insert("notify".into(), Value::Array(vec![toml! { webhook = (url.as_str()) }.into(), toml! { webhook = (dead.as_str()) }.into()]));
    let s = Setup::with_config(config, &[CertSpec::new("registry", toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] })]);

    let check = s.run(&["check-config"]);
    assert_eq!(check.code, 0, "{check:?}");
    let host = hook.url.trim_end_matches("/hook");
    assert!(check.stdout.contains(&format!("webhook = \"{host}/…\"")), "{check:?}");
    assert_no_token("check-config", &format!("{check:?}"));
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);

    // `regcert renew`, logging everything.
    let out = std::process::Command::new(regcert_bin())
        .arg("--config")
        .arg(&s.config)
        .args(["renew", "--force"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    hook.wait_for("\"event\":\"renewed\"", std::time::Duration::from_secs(10));
    assert!(stderr.contains("notified") && stderr.contains(&format!("{host}/…")), "{stderr}");
    assert!(stderr.contains("webhook failed"), "{stderr}");
    assert_no_token("renew", &format!("{stdout}\n{stderr}"));

    // `regcert run` (debug log) — its first check renews (forced by a changed name).
    s.edit_cert("registry", |c| set(c, "domains", Value::from(vec!["registry.corp.lan", "r2.corp.lan"])));
    let mut daemon = Daemon::start(&s.config);
    daemon.wait_for_log("webhook failed", 1, std::time::Duration::from_secs(60));
    daemon.wait_for_log("notified", 1, std::time::Duration::from_secs(60));
    daemon.signal("TERM");
    daemon.wait(std::time::Duration::from_secs(30));
    assert_no_token("regcert run", &daemon.log_text());
}

#[test]
fn import_acmesh_never_prints_the_eab_hmac_key() {
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("acme.sh");
    let ca = home.join("ca/acme.example.net/directory");
    std::fs::create_dir_all(&ca).unwrap();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca.join("account.key").to_str().unwrap()]);
    std::fs::write(
        ca.join("ca.conf"),
        format!("ACCOUNT_URL='https://acme.example.net/acct/1'\nCA_EAB_KEY_ID='kid-1'\nCA_EAB_HMAC_KEY='{HMAC}'\n"),
    )
    .unwrap();
    std::fs::write(
        home.join("account.conf"),
        "DEFAULT_ACME_SERVER='https://acme.example.net/directory'\nACCOUNT_EMAIL='ops@example.com'\n",
    )
    .unwrap();
    let domain = home.join("reg.example.net_ecc");
    std::fs::create_dir_all(&domain).unwrap();
    std::fs::write(
        domain.join("reg.example.net.conf"),
        "Le_Domain='reg.example.net'\nLe_Keylength='ec-256'\nLe_API='https://acme.example.net/directory'\nLe_Webroot='no'\n",
    )
    .unwrap();
    let state = root.path().join("state");
    let (home_s, state_s) = (home.to_str().unwrap(), state.to_str().unwrap());

    let dry = regcert_bare_env(
        &[("RUST_LOG", std::path::Path::new("debug"))],
        &["import", "acme.sh", "--home", home_s, "--state-dir", state_s, "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("eab = { kid = \"kid-1\", hmac_key = \"<redacted>\" }"), "{dry:?}");
    assert!(dry.stdout.contains("eab.hmac_key is not printed: use --write-config"), "{dry:?}");
    assert!(!format!("{dry:?}").contains(HMAC), "{dry:?}");

    // Printed instead of written: redacted too. Written: the key is there (0640), and not printed.
    let printed = regcert_bare(&["import", "acme.sh", "--home", home_s, "--state-dir", state_s]);
    assert!(!format!("{printed:?}").contains(HMAC), "{printed:?}");
    let out = root.path().join("config.toml");
    let written = regcert_bare(&["import", "acme.sh", "--home", home_s, "--state-dir", state_s, "--write-config", out.to_str().unwrap()]);
    assert!(!format!("{written:?}").contains(HMAC), "{written:?}");
    assert!(std::fs::read_to_string(&out).unwrap().contains(HMAC));
    assert_eq!(mode(&out), 0o640);
}

#[test]
fn idle_clients_cannot_hold_the_metrics_endpoint() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Metrics CA" })) };
    config.extend(toml! {
        [daemon]
        check = "0 0 0 1 1 *"
        [metrics]
        listen = (metrics.as_str())
    });
    let s = Setup::with_config(config, &[CertSpec::new("registry", toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] })]);
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    let mut daemon = Daemon::start(&s.config);
    daemon.wait_for_log("metrics endpoint listening", 1, Duration::from_secs(30));
    assert_eq!(http_get(&metrics, "/healthz").0, 200);

    // Is the socket closed by the server within `within`?
    let closed = |s: &mut TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        match s.read(&mut [0u8; 16]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // 100 clients that connect and say nothing: 64 are held, the rest closed at once.
    let mut idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&metrics).unwrap()).collect();
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let states: Vec<bool> = idle
        .iter_mut()
        .map(|s| {
            s.set_nonblocking(true).unwrap();
            let state = match s.read(&mut [0u8; 16]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            state
        })
        .collect();
    let refused = states.iter().filter(|c| **c).count();
    assert_eq!(refused, 36, "the connection cap (64) must hold: {states:?} after {:?}", opened.elapsed());
    // While they are held, a new client is turned away too.
    let mut one_more = TcpStream::connect(&metrics).unwrap();
    assert!(closed(&mut one_more, Duration::from_secs(1)), "the cap must hold for new clients");
    // After the 10 s header timeout, every idle connection is closed, and the endpoint answers.
    for s in &mut idle {
        let left = Duration::from_secs(15).saturating_sub(opened.elapsed()).max(Duration::from_millis(100));
        assert!(closed(s, left), "an idle connection was kept beyond the header timeout");
    }
    assert!(opened.elapsed() >= Duration::from_secs(9), "closed after the timeout, not before: {:?}", opened.elapsed());
    let (status, body) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("regcert_"), "{body}");
    assert!(daemon.running());
}

#[test]
fn plain_http_is_refused_except_on_loopback() {
    let mut config = toml! {
        [acme]
        directory = "http://acme.example.net/directory"
        accept_terms = true
    };
    config.insert("notify".into(), Value::Array(vec![toml! { webhook = "http://hooks.example.com/services/T0SECRET" }.into()]));
    let s = Setup::with_config(config, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ACME needs HTTPS (RFC 8555 §6.1)"), "{run:?}");
    assert!(run.stderr.contains("webhook \"http://hooks.example.com/…\" uses plain http:// to another host"), "{run:?}");
    assert_no_token("check-config", &format!("{run:?}"));
    // On this host, plain http is accepted (a test CA, a local relay).
    s.edit(|c| {
        set(c, "acme.directory", "http://127.0.0.1:14000/dir");
        c.insert("notify".into(), Value::Array(vec![toml! { webhook = "http://[::1]:9000/hook" }.into()]));
    });
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn dry_run_never_finalizes_and_never_sends_replaces() {
    // Pebble behind the ARI front, which records every new order (to see `replaces`).
    let pebble = Pebble::start();
    let dir = pebble.dir.path();
    let front = crate::common::ari_frontend::AriFrontend::start(
        &pebble.directory_url,
        &dir.join("tls-cert.pem"),
        &dir.join("tls-key.pem"),
        &pebble.tls_root,
    );
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.directory", front.directory_url.as_str()));
    assert_eq!(s.run(&["renew"]).code, 0);
    let (chain, key) = (std::fs::read(s.fullchain("registry")).unwrap(), std::fs::read(s.key("registry")).unwrap());
    let orders = front.replaces().len();
    let stored = std::fs::read(s.state().join("certs/registry/cert.pem")).unwrap();

    let run = s.run(&["renew", "--dry-run", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("validated 1 name(s); the order was not finalized (no certificate issued)"), "{run:?}");
    assert!(run.stdout.contains("and 1 authorization(s) were deactivated"), "{run:?}");
    assert!(run.stdout.contains("dry run: nothing stored or installed"), "{run:?}");
    // A new order, without `replaces` (the live certificate is not marked as replaced). The front
    // records every attempt, so a badNonce retry (Pebble rejects 5% of nonces) shows twice.
    let replaces = front.replaces();
    assert!(replaces.len() > orders, "{replaces:?}");
    assert!(replaces[orders..].iter().all(Option::is_none), "a dry run sent `replaces`: {replaces:?}");
    // Nothing issued, stored or installed.
    assert_eq!(std::fs::read(s.fullchain("registry")).unwrap(), chain);
    assert_eq!(std::fs::read(s.key("registry")).unwrap(), key);
    assert_eq!(std::fs::read(s.state().join("certs/registry/cert.pem")).unwrap(), stored);
}
