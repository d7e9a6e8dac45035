//! Invalid configurations: exit 2, every problem listed with where it is and how to fix it,
//! and nothing touched.

use crate::common::regcert;
use std::fs;

fn check(toml: &str) -> (crate::common::Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("certs")).unwrap();
    let text = toml.replace("@DIR@", dir.path().to_str().unwrap());
    let path = dir.path().join("config.toml");
    fs::write(&path, text).unwrap();
    (regcert(&path, &["renew"]), dir)
}

const ACME: &str = "state_dir = \"@DIR@/state\"\n[acme]\ndirectory = \"letsencrypt-staging\"\naccept_terms = true\n";

#[test]
fn unknown_key_gets_a_suggestion() {
    let (run, dir) = check(&format!(
        "{ACME}[[certificate]]\nname = \"r\"\ndomian = [\"a.example.com\"]\n[certificate.install]\ndir = \"@DIR@/certs\"\n"
    ));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown field `domian`") && run.stderr.contains("did you mean `domains`?"), "{run:?}");
    assert!(run.stderr.contains("line 7"), "the error must point at the line: {run:?}");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn all_semantic_problems_are_listed_at_once() {
    let toml = "state_dir = \"@DIR@/state\"\n[acme]\ndirectory = \"letsencrypt\"\ncontact = [\"ops@example.com\"]\n\
        [[certificate]]\nname = \"reg\"\ndomains = [\"*.example.com\", \"bad_name.example.com\"]\n[certificate.install]\ndir = \"@DIR@/certs\"\n\
        [[certificate]]\nname = \"reg\"\ndomains = [\"ok.example.com\"]\n[certificate.install]\ndir = \"@DIR@/certs\"\n\
        [[certificate]]\nname = \"other\"\ndomains = [\"x.example.com\"]\nkey = \"rsa-2048\"\n[certificate.install]\ndir = \"@DIR@/missing\"\nkey_mode = \"0644\"\n";
    let (run, dir) = check(toml);
    assert_eq!(run.code, 2, "{run:?}");
    for want in [
        "accept_terms is not true",
        "write contacts as \"mailto:ops@example.com\"",
        "wildcard \"*.example.com\" cannot be validated with HTTP-01; a wildcard needs the DNS-01 challenge",
        "domain \"bad_name.example.com\" is not a valid DNS name",
        "name `reg` is used by certificate #1 too",
        "writes @DIR@/certs/domain.crt which certificate `reg` writes too",
        "install.dir @DIR@/missing does not exist",
        "lets every user read the private key",
    ] {
        let want = want.replace("@DIR@", dir.path().to_str().unwrap());
        assert!(run.stderr.contains(&want), "missing {want:?} in {run:?}");
    }
    assert!(!dir.path().join("state").exists());
}

#[test]
fn bad_values_name_the_key() {
    let (run, _dir) = check(&format!(
        "{ACME}[[certificate]]\nname = \"r\"\ndomains = [\"a.example.com\"]\nkey = \"ed25519\"\n[certificate.install]\ndir = \"@DIR@/certs\"\n"
    ));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ed25519") && run.stderr.contains("ecdsa-p256"), "{run:?}");

    let (run, _dir) = check(&format!(
        "{ACME}[[certificate]]\nname = \"r\"\ndomains = [\"a.example.com\"]\nrenew_before = \"soon\"\n[certificate.install]\ndir = \"@DIR@/certs\"\n"
    ));
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
    let (_, dir) = check("");
    let path = dir.path().join("ok.toml");
    fs::write(
        &path,
        format!(
            "{ACME}[[certificate]]\nname = \"r\"\ndomains = [\"a.example.com\"]\n[certificate.install]\ndir = \"{}/certs\"\n",
            dir.path().display()
        )
        .replace("@DIR@", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let run = regcert(&path, &["check-config"]);
    assert_eq!(run.code, 0, "{run:?}");
    for want in
        ["is valid", "acme-staging-v02.api.letsencrypt.org", "fullchain = \"domain.crt\"", "key_mode = \"0600\"", "key = \"ecdsa-p256\""]
    {
        assert!(run.stdout.contains(want), "missing {want:?}: {run:?}");
    }
    let run = regcert(&path, &["renew", "--cert", "nope"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--cert nope: no such certificate") && run.stderr.contains("known: r"), "{run:?}");
}
