//! Client trust in the operating system's store: `trust install --system`, `trust list` and
//! `trust remove` on this machine's real Debian store (restored afterwards, whatever happens),
//! and on the RHEL family's layout through a temporary root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const DEBIAN_ANCHORS: &str = "/usr/local/share/ca-certificates";
const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Does the CA bundle at `bundle` make OpenSSL trust `leaf`?
fn trusted(bundle: &Path, leaf: &str) -> bool {
    let out = Command::new(tool("openssl")).args(["verify", "-CAfile"]).arg(bundle).arg(leaf).output().unwrap();
    out.status.success()
}

/// Takes our anchor out of the real store again if a test left it there.
struct RestoreStore(PathBuf);

impl Drop for RestoreStore {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_file(&self.0);
            let _ = Command::new(tool("update-ca-certificates")).output();
        }
    }
}

fn entries(certs_d: &Path, env: &[(&str, &Path)]) -> Vec<serde_json::Value> {
    let list = regcert_bare_env(env, &["trust", "list", "--json", "--certs-d", certs_d.to_str().unwrap()]);
    assert_eq!(list.code, 0, "{list:?}");
    serde_json::from_str::<Vec<serde_json::Value>>(&list.stdout).unwrap()
}

fn system_files(entries: &[serde_json::Value]) -> Vec<String> {
    entries.iter().filter(|e| e["store"] == "system").map(|e| e["file"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn system_store_on_this_debian_host_install_list_remove() {
    tool("update-ca-certificates");
    let dir = tempfile::tempdir().unwrap();
    let (root, leaf, _) = write_tls_material(dir.path());
    let certs_d = dir.path().join("certs.d");
    let registry = format!("regcert-test-{}.invalid:5443", std::process::id());
    let anchor = Path::new(DEBIAN_ANCHORS).join(format!("{}.crt", format!("regcert-{registry}").replace(':', "_")));
    let _restore = RestoreStore(anchor.clone());
    let (bundle, certs_d_arg) = (Path::new(DEBIAN_BUNDLE), certs_d.to_str().unwrap());
    assert!(!trusted(bundle, &leaf), "the test CA must not be trusted before");

    let run = regcert_bare(&[
        "trust",
        "install",
        "--registry",
        &registry,
        "--ca-file",
        root.to_str().unwrap(),
        "--system",
        "--certs-d",
        certs_d_arg,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("added {} to the system store (update-ca-certificates)", anchor.display())), "{run:?}");
    assert!(run.stdout.contains("restart it (systemctl restart docker)"), "{run:?}");
    assert!(trusted(bundle, &leaf), "the system bundle trusts the CA after install");
    let listed = entries(&certs_d, &[]);
    assert!(system_files(&listed).contains(&anchor.display().to_string()), "{listed:?}");
    assert!(listed.iter().any(|e| e["store"] == "docker" && e["registry"] == registry.as_str()), "{listed:?}");

    let run = regcert_bare(&["trust", "remove", "--registry", &registry, "--certs-d", certs_d_arg]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("no restart needed"), "certs.d: {run:?}");
    assert!(run.stdout.contains(&format!("removed {} from the system store (update-ca-certificates)", anchor.display())), "{run:?}");
    assert!(run.stdout.contains("until it is restarted"), "{run:?}");
    assert!(!anchor.exists());
    assert!(!trusted(bundle, &leaf), "the system bundle no longer trusts the CA after remove");
    assert!(!system_files(&entries(&certs_d, &[])).contains(&anchor.display().to_string()), "no longer listed");
    let again = regcert_bare(&["trust", "remove", "--registry", &registry, "--certs-d", certs_d_arg]);
    assert!(again.stdout.contains("nothing to remove"), "{again:?}");
    // The host's own anchors are untouched.
    assert!(std::fs::read_dir(DEBIAN_ANCHORS).unwrap().flatten().all(|f| f.path() != anchor));
}

/// TEST STAND-IN for the RHEL family's `update-ca-trust`, which has no Debian package: like the
/// real one it writes every anchor into the extracted bundle, and it records how it was called.
const UPDATE_CA_TRUST: &str = r#"#!/bin/sh
root=$(cd "$(dirname "$0")/../.." && pwd)
echo "$*" >> "$root/update-ca-trust.calls"
mkdir -p "$root/etc/pki/ca-trust/extracted/pem"
cat "$root"/etc/pki/ca-trust/source/anchors/*.crt > "$root/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem" 2>/dev/null || true
"#;

#[test]
fn system_store_with_the_rhel_layout_in_a_temporary_root() {
    let dir = tempfile::tempdir().unwrap();
    let (root_pem, leaf, _) = write_tls_material(dir.path());
    let root = dir.path().join("root");
    let anchors = root.join("etc/pki/ca-trust/source/anchors");
    std::fs::create_dir_all(&anchors).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    let stand_in = root.join("usr/bin/update-ca-trust");
    std::fs::write(&stand_in, UPDATE_CA_TRUST).unwrap();
    std::fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Someone else's anchor, which regcert must leave alone.
    let foreign = anchors.join("corp-root.crt");
    std::fs::copy(&root_pem, &foreign).unwrap();
    let env = [("REGCERT_SYSTEM_TRUST_ROOT", root.as_path())];
    let certs_d = dir.path().join("certs.d");
    let certs_d_arg = certs_d.to_str().unwrap();
    let bundle = root.join("etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem");
    let calls = || std::fs::read_to_string(root.join("update-ca-trust.calls")).unwrap_or_default();

    let registry = "192.168.20.10:5000";
    let run = regcert_bare_env(
        &env,
        &["trust", "install", "--registry", registry, "--ca-file", root_pem.to_str().unwrap(), "--system", "--certs-d", certs_d_arg],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let anchor = anchors.join("regcert-192.168.20.10_5000.crt");
    assert_eq!(std::fs::read(&anchor).unwrap(), std::fs::read(&root_pem).unwrap());
    assert!(run.stdout.contains("(update-ca-trust)"), "{run:?}");
    assert_eq!(calls(), "extract\n");
    assert!(trusted(&bundle, &leaf));
    let listed = entries(&certs_d, &env);
    assert_eq!(system_files(&listed), [anchor.display().to_string()], "only regcert's own anchors are listed: {listed:?}");
    assert!(
        regcert_bare_env(&env, &["trust", "list", "--certs-d", certs_d_arg]).stdout.contains("added by regcert to the system trust store:")
    );

    let run = regcert_bare_env(&env, &["trust", "remove", "--registry", registry, "--certs-d", certs_d_arg]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&format!("removed {} from the system store (update-ca-trust)", anchor.display())), "{run:?}");
    assert!(!anchor.exists() && foreign.exists(), "only regcert's anchor goes");
    assert_eq!(calls(), "extract\nextract\n");
    assert_eq!(std::fs::read(&bundle).unwrap(), std::fs::read(&foreign).unwrap(), "the bundle is rebuilt without it");

    // A file with regcert's name that holds no certificate is not regcert's to delete.
    std::fs::write(&anchor, "not a certificate\n").unwrap();
    let run = regcert_bare_env(&env, &["trust", "remove", "--registry", registry, "--certs-d", certs_d_arg]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("holds no certificate; it was left alone"), "{run:?}");
    assert!(anchor.exists());
}
