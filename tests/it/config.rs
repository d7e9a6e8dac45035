//! Invalid configurations: exit 2, every problem listed with where it is and how to fix it,
//! and nothing touched.

use crate::common::*;
use std::fs;
use toml::{Table, toml};

/// An `[acme]` that is never contacted: these configs are refused before.
fn staging() -> Table {
    toml! {
        [acme]
        directory = "letsencrypt-staging"
        accept_terms = true
    }
}

fn renew(config: Table, certs: &[CertSpec]) -> (Run, Setup) {
    let s = Setup::with_config(config, certs);
    (s.run(&["renew"]), s)
}

#[test]
fn unknown_key_gets_a_suggestion() {
    // Literal text: the typo is the point, and the error must point at its line.
    let s = Setup::with_config(staging(), &[]);
    fs::write(
        &s.config,
        format!(
            "state_dir = \"{}\"\n[acme]\ndirectory = \"letsencrypt-staging\"\naccept_terms = true\n[[certificate]]\nname = \"r\"\ndomian = [\"a.example.com\"]\n[certificate.install]\ndir = \"{}\"\n",
            s.state().display(),
            s.root.path().display()
        ),
    )
    .unwrap();
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown field `domian`") && run.stderr.contains("did you mean `domains`?"), "{run:?}");
    assert!(run.stderr.contains("line 7"), "the error must point at the line: {run:?}");
    assert!(!s.state().exists());
}

#[test]
fn all_semantic_problems_are_listed_at_once() {
    let config = toml! {
        [acme]
        directory = "letsencrypt"
        contact = ["ops@example.com"]
    };
    let s = Setup::with_config(
        config,
        &[
            CertSpec::new("reg", toml! { domains = ["*.example.com", "bad_name.example.com"] }),
            CertSpec::new("reg", toml! { domains = ["ok.example.com"] }),
            cert("other", &["x.example.com"], "rsa-2048").with(toml! { install = { key_mode = "0644" } }),
        ],
    );
    // `other` installs into a directory that does not exist.
    let missing = s.root.path().join("missing");
    s.edit_cert("other", |c| set(c, "install.dir", missing.display().to_string()));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 2, "{run:?}");
    for want in [
        "accept_terms is not true".to_owned(),
        "write contacts as \"mailto:ops@example.com\"".to_owned(),
        "wildcard \"*.example.com\" cannot be validated with HTTP-01; a wildcard needs the DNS-01 challenge".to_owned(),
        "domain \"bad_name.example.com\" is not a valid DNS name".to_owned(),
        "name `reg` is used by certificate #1 too".to_owned(),
        format!("writes {}/domain.crt which certificate `reg` writes too", s.install_dir("reg").display()),
        format!("install.dir {} does not exist", missing.display()),
        "lets every user read the private key".to_owned(),
    ] {
        assert!(run.stderr.contains(&want), "missing {want:?} in {run:?}");
    }
    assert!(!s.state().exists());
}

#[test]
fn bad_values_name_the_key() {
    let (run, _s) = renew(staging(), &[cert("r", &["a.example.com"], "ed25519")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ed25519") && run.stderr.contains("ecdsa-p256"), "{run:?}");

    let (run, _s) = renew(staging(), &[CertSpec::new("r", toml! { domains = ["a.example.com"] renew_before = "soon" })]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("`soon` is not a duration"), "{run:?}");
}

#[test]
fn missing_config_file_says_how_to_point_at_one() {
    let run = regcert(std::path::Path::new("/nonexistent/regcert.toml"), &["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read /nonexistent/regcert.toml") && run.stderr.contains("REGCERT_CONFIG"), "{run:?}");
}

#[test]
fn check_config_prints_effective_settings() {
    let s = Setup::with_config(staging(), &[CertSpec::new("r", toml! { domains = ["a.example.com"] })]);
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
    for want in
        ["is valid", "acme-staging-v02.api.letsencrypt.org", "fullchain = \"domain.crt\"", "key_mode = \"0600\"", "key = \"ecdsa-p256\""]
    {
        assert!(run.stdout.contains(want), "missing {want:?}: {run:?}");
    }
    let run = s.run(&["renew", "--cert", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--cert nope: no such certificate") && run.stderr.contains("known: r"), "{run:?}");
}
