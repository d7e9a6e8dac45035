//! What regcert writes on stderr: `--log-format json`, `-q`, no timestamps under the journal,
//! and no secret even at RUST_LOG=trace.

use crate::common::*;
use std::fs;
use std::path::Path;
use toml::toml;

/// regcert with `config` and `args`, and RUST_LOG/JOURNAL_STREAM as given (the plain helper
/// removes RUST_LOG).
fn run_with(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, Path::new(*v))).collect();
    let mut argv = vec!["--config", config.to_str().unwrap()];
    argv.extend(args);
    regcert_bare_env(&env, &argv)
}

#[test]
fn json_quiet_and_journal_formats() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);

    // JSON: every line is an object with a level and a message; the report stays on stdout.
    let run = run_with(&s.config, &[], &["--log-format", "json", "renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("1 renewed, 0 not due, 0 failed"), "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{run:?}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "ACME order created"), "{run:?}");

    // Text outside the journal: every line starts with a timestamp (the year).
    let run = run_with(&s.config, &[], &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.is_empty() && run.stderr.lines().all(|l| l.starts_with("20")), "{run:?}");

    // Under systemd (JOURNAL_STREAM set), the journal stamps lines: no timestamp of our own.
    let run = run_with(&s.config, &[("JOURNAL_STREAM", "8:12345")], &["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    assert!(!run.stderr.is_empty() && run.stderr.lines().all(|l| levels.iter().any(|lvl| l.trim_start().starts_with(lvl))), "{run:?}");

    // -q: no info lines, the report still on stdout.
    let run = run_with(&s.config, &[], &["-q", "renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("registry: renewed (--force)"), "{run:?}");
    assert!(!run.stderr.contains("INFO"), "{run:?}");
}

#[test]
fn no_secret_in_the_logs_at_trace_level() {
    // Pebble's example EAB key (base64url HMAC).
    let (kid, hmac) = ("kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W");
    let pebble = Pebble::start_with(PebbleOpts { eab: vec![(kid.into(), hmac.into())], ..Default::default() });
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.eab", toml! { kid = (kid) hmac_key = (hmac) }));
    let password = "s3cret-registry-password";
    let pass = s.root.path().join("registry.pass");
    fs::write(&pass, format!("{password}\n")).unwrap();
    let mut verify = verify_table(&pebble, "https://registry.example.com/v2/", &format!("127.0.0.1:{}", free_port()));
    verify.extend(toml! { username = "ci" password_file = (pass.display().to_string()) timeout = "1s" rollback = false });
    s.edit_cert("registry", |c| {
        set(c, "reload", toml! { command = ["true"] });
        set(c, "verify", verify);
    });

    let first = run_with(&s.config, &[("RUST_LOG", "trace")], &["renew"]);
    assert!(first.stdout.contains("stays installed"), "{first:?}");
    let second = run_with(&s.config, &[("RUST_LOG", "trace")], &["renew", "--force"]);
    assert!(second.stdout.contains("rollback = false"), "{second:?}");
    let logged = format!("{}{}{}{}", first.stdout, first.stderr, second.stdout, second.stderr);
    assert!(logged.contains("TRACE") && logged.contains("DEBUG"), "trace output was produced");

    let account = fs::read_dir(s.state().join("accounts")).unwrap().next().unwrap().unwrap().path();
    let account: serde_json::Value = serde_json::from_slice(&fs::read(account).unwrap()).unwrap();
    let account_key = account["credentials"]["key_pkcs8"].as_str().unwrap().to_owned();
    // Every leaf key of both runs: the installed one and the one it replaced.
    let keys = [s.key("registry"), s.state().join("certs/registry/previous/privkey.pem")];
    let mut secrets = vec![hmac.to_owned(), password.to_owned(), account_key[..40].to_owned()];
    for key in keys {
        let pem = fs::read_to_string(&key).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        secrets.extend(body.as_bytes().chunks(32).map(|c| String::from_utf8_lossy(c).into_owned()));
    }
    for secret in &secrets {
        assert!(!logged.contains(secret.as_str()), "a secret was logged: {secret}");
    }
}
