//! The registry's cert dir is not trusted input (issue 10, item 3): whatever the registry's side
//! puts there — a link to another secret, a FIFO, a device, a huge file — is never followed,
//! never hangs regcert, never reaches state_dir and never comes back through a rollback.
//! And what regcert itself writes there: the configured owner and group, the same key again
//! with `reuse_key`.

use crate::common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use toml::{Value, toml};

/// A private-CA certificate `registry`, issued twice, so that state_dir keeps a good previous pair.
fn installed_twice() -> Setup {
    let config = toml! { [ca] internal = (Value::from(toml! { subject = "CN=Install Dir Test CA" })) };
    let s = Setup::with_config(
        config,
        &[CertSpec::new("registry", toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] validity = "30d" })],
    );
    for args in [&["ca", "init", "internal"][..], &["renew"], &["renew", "--force"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    s
}

/// `regcert renew` bounded by `timeout`, so a hang is a test failure and not a stuck suite.
fn renew_bounded(s: &Setup) -> Run {
    let out = Command::new(tool("timeout"))
        .arg("60")
        .arg(regcert_bin())
        .args(["--config", s.config.to_str().unwrap(), "renew"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert_ne!(run.code, 124, "regcert renew hung: {run:?}");
    run
}

fn previous(s: &Setup) -> (Vec<u8>, Vec<u8>) {
    let dir = s.state().join("certs/registry/previous");
    (fs::read(dir.join("fullchain.pem")).unwrap(), fs::read(dir.join("privkey.pem")).unwrap())
}

fn assert_regular_matching_pair(s: &Setup) {
    for p in [s.fullchain("registry"), s.key("registry")] {
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file(), "{} is a regular file again", p.display());
    }
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
}

#[test]
fn links_to_other_secrets_are_never_backed_up_or_restored() {
    let s = installed_twice();
    let good_previous = previous(&s);
    let ca = s.state().join("ca/internal");
    let root_key = fs::read(ca.join("root.key")).unwrap();
    // The registry's side points both files at the CA: read through the links, they would even
    // be a matching pair.
    for (link, target) in [(s.fullchain("registry"), ca.join("root.crt")), (s.key("registry"), ca.join("root.key"))] {
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    // …and makes verification fail, so that a rollback follows.
    let closed = free_port();
    s.edit_cert("registry", |c| {
        c.insert(
            "verify".into(),
            toml! { url = "https://registry.corp.lan/v2/" connect_to = (format!("127.0.0.1:{closed}")) timeout = "2s" }.into(),
        );
    });
    let run = renew_bounded(&s);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("domain.crt is a symbolic link; regcert does not follow links in the install dir"), "{run:?}");
    assert!(run.stdout.contains("ROLLED BACK"), "{run:?}");
    assert!(run.stderr.contains("the installed pair is not backed up"), "{run:?}");
    assert_eq!(previous(&s), good_previous, "nothing from the install dir reached state_dir");
    // The rollback put back the last good pair, as regular files; the CA key is where it was.
    assert_regular_matching_pair(&s);
    assert_eq!(fs::read(s.key("registry")).unwrap(), good_previous.1);
    assert_ne!(fs::read(s.key("registry")).unwrap(), root_key);
    assert_eq!(fs::read(ca.join("root.key")).unwrap(), root_key);
    assert!(fs::symlink_metadata(ca.join("root.key")).unwrap().file_type().is_file());

    // A link for the key alone is refused the same way (the fullchain is regular).
    s.edit_cert("registry", |c| {
        c.remove("verify");
    });
    fs::remove_file(s.key("registry")).unwrap();
    std::os::unix::fs::symlink(ca.join("root.key"), s.key("registry")).unwrap();
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("domain.key is a symbolic link"), "{status:?}");
    let run = renew_bounded(&s);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("domain.key is a symbolic link"), "{run:?}");
    assert_eq!(previous(&s), good_previous);
    assert_regular_matching_pair(&s);
    assert_eq!(fs::read(ca.join("root.key")).unwrap(), root_key);
}

#[test]
fn fifos_devices_and_huge_files_are_refused_without_hanging() {
    let s = installed_twice();
    let good_previous = previous(&s);
    let mkfifo = |p: &Path| assert!(Command::new(tool("mkfifo")).arg(p).status().unwrap().success());
    // /dev/zero itself: a character device 1:5 in the install dir.
    let mknod_zero = |p: &Path| assert!(Command::new(tool("mknod")).arg(p).args(["c", "1", "5"]).status().unwrap().success());
    let huge = |p: &Path| fs::File::create(p).unwrap().set_len(64 << 20).unwrap();
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 4] = [
        ("domain.crt", &mkfifo, "domain.crt is not a regular file (a FIFO)"),
        ("domain.key", &mkfifo, "domain.key is not a regular file (a FIFO)"),
        ("domain.key", &mknod_zero, "domain.key is not a regular file (a character device)"),
        ("domain.crt", &huge, "domain.crt is 67108864 bytes, more than the 1048576 a certificate or key can be"),
    ];
    for (file, make, message) in cases {
        let path = s.install_dir("registry").join(file);
        fs::remove_file(&path).unwrap();
        make(&path);
        let status = s.run(&["status"]);
        assert!(status.stdout.contains(message), "{file}: {status:?}");
        let run = renew_bounded(&s);
        assert_eq!(run.code, 0, "{file}: {run:?}");
        assert!(run.stdout.contains(message) && run.stdout.contains("1 renewed"), "{file}: {run:?}");
        assert_eq!(previous(&s), good_previous, "{file}: nothing copied into state_dir");
        assert_regular_matching_pair(&s);
    }
    // Regular files that are not a matching pair never replace a good backup either.
    fs::write(s.key("registry"), "garbage").unwrap();
    let run = renew_bounded(&s);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("installed key does not match the installed certificate"), "{run:?}");
    assert_eq!(previous(&s), good_previous, "a broken pair replaced the good backup");
    assert_regular_matching_pair(&s);
}

/// `getent DATABASE NAME`'s numeric id (third field), e.g. the uid of a system user.
fn getent_id(database: &str, name: &str) -> u32 {
    let out = Command::new(tool("getent")).args([database, name]).output().unwrap();
    assert!(out.status.success(), "getent {database} {name}: the test needs that system {database} entry");
    String::from_utf8_lossy(&out.stdout).split(':').nth(2).unwrap().parse().unwrap()
}

#[test]
fn installed_files_get_the_configured_owner_and_group() {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = (getent_id("passwd", "daemon"), getent_id("group", "nogroup"));
    assert_ne!((uid, gid), (0, 0));
    let s = Setup::with_config(
        toml! { [ca] internal = {} },
        &[CertSpec::new(
            "registry",
            toml! { issuer = "ca:internal" domains = ["registry.corp.lan"] install = { owner = "daemon", group = "nogroup", key_mode = "0640" } },
        )],
    );
    assert_eq!(s.run(&["ca", "init", "internal"]).code, 0);
    for args in [&["renew"][..], &["renew", "--force"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        for (path, file_mode) in [(s.fullchain("registry"), 0o644), (s.key("registry"), 0o640)] {
            let meta = fs::metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{args:?}: owner of {}", path.display());
            assert_eq!(mode(&path), file_mode, "{args:?}: mode of {}", path.display());
        }
        assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
    }
}

#[test]
fn reuse_key_keeps_the_key_across_renewals_and_a_fresh_key_comes_without_it() {
    let pebble = Pebble::start();
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml! { reuse_key = true })]);
    assert_eq!(s.run(&["renew"]).code, 0);
    let key = fs::read(s.key("registry")).unwrap();
    let public_key = || openssl(&["pkey", "-pubout", "-in", s.key("registry").to_str().unwrap()]);
    let first_public = public_key();
    let first = serial(&s.fullchain("registry"));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(serial(&s.fullchain("registry")), first, "a new certificate");
    assert_eq!(fs::read(s.key("registry")).unwrap(), key, "for the same key");
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));

    s.edit_cert("registry", |c| set(c, "reuse_key", false));
    let run = s.run(&["renew", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(public_key(), first_public, "a new key");
    assert_key_matches(&s.fullchain("registry"), &s.key("registry"));
}
