//! Trust for the other container runtimes, proven with their real clients against a registry
//! container on a private-CA certificate: containerd (`ctr image pull --hosts-dir`, Debian
//! `containerd`) and containers/image (`skopeo inspect`, Debian `skopeo` — the library podman,
//! CRI-O and buildah use). Each fails with an x509 error before `regcert trust install` and works
//! after; an operator's hosts.toml keeps its settings; `trust remove` restores what was there.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use toml::toml;

use crate::common::registry::*;
use crate::common::*;

/// The containerd namespace the pulls go to (images removed after each pull).
const NAMESPACE: &str = "regcert-test";

/// A registry on the test network serving a leaf for its bare IP from a fresh private CA; the
/// `tiny` image is in it as `IP:5000/tiny:1`. Returns the registry and the CA's root (PEM file).
fn private_ca_registry(dir: &Path) -> (Registry, PathBuf) {
    let ip = fixed_ip();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "regcert runtimes test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![ip.clone()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("domain.crt"), leaf.pem()).unwrap();
    std::fs::write(certs.join("domain.key"), leaf_key.serialize_pem()).unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, ca.pem()).unwrap();
    let reg = Registry::start(&certs, RegistryOpts { ip: Some(ip), ..Default::default() });
    seed_tiny(&reg, &root, dir);
    (reg, root)
}

/// Put [`TINY`] into the registry with skopeo (trusting `root` for this copy only).
fn seed_tiny(reg: &Registry, root: &Path, dir: &Path) {
    let (archive, cert_dir) = (dir.join("tiny.tar"), dir.join("seed-certs"));
    docker(&["save", TINY, "-o", archive.to_str().unwrap()]);
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(root, cert_dir.join("ca.crt")).unwrap();
    let dest = format!("docker://{}/tiny:1", reg.addr());
    let out = Command::new(tool("skopeo"))
        .args(["copy", "--dest-cert-dir", cert_dir.to_str().unwrap(), &format!("docker-archive:{}", archive.display()), &dest])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The socket of a running containerd: a standalone one, or the Docker engine's own.
fn containerd_socket() -> &'static str {
    ["/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock"]
        .into_iter()
        .find(|s| Path::new(s).exists())
        .expect("no containerd socket (/run/containerd/containerd.sock, or the Docker engine's /var/run/docker/containerd/containerd.sock): start dockerd (scripts/docker-testbed.sh) or containerd")
}

/// `ctr image pull --hosts-dir ROOT IMAGE` with the real containerd: Ok, or its error output.
pub(crate) fn ctr_pull(hosts_dir: &Path, image: &str) -> Result<(), String> {
    let ctr =
        |args: &[&str]| Command::new(tool("ctr")).args(["--address", containerd_socket(), "-n", NAMESPACE]).args(args).output().unwrap();
    let out = ctr(&["images", "pull", "--hosts-dir", hosts_dir.to_str().unwrap(), image]);
    let _ = ctr(&["images", "rm", "--sync", image]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(()) } else { Err(text) }
}

/// `skopeo inspect docker://IMAGE` (with `--cert-dir DIR` if given): Ok, or its error output.
fn skopeo_inspect(cert_dir: Option<&Path>, image: &str) -> Result<(), String> {
    let mut cmd = Command::new(tool("skopeo"));
    cmd.arg("inspect");
    if let Some(d) = cert_dir {
        cmd.arg("--cert-dir").arg(d);
    }
    let out = cmd.arg(format!("docker://{image}")).output().unwrap();
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn assert_x509(result: Result<(), String>, what: &str) {
    let err = result.expect_err(what);
    assert!(err.contains("x509") || err.contains("certificate signed by unknown authority"), "{what}: {err}");
}

/// The trust commands on roots of their own (`--…-certs-d`), with the runtimes named.
fn trust_cmd(roots: &Path, args: &[&str]) -> Run {
    let root = |r: &str| roots.join(r).join("certs.d").display().to_string();
    let (docker, containerd, containers) = (root("docker"), root("containerd"), root("containers"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--certs-d", &docker, "--containerd-certs-d", &containerd, "--containers-certs-d", &containers]);
    regcert_bare(&all)
}

#[test]
fn containerd_pulls_after_trust_install_into_the_operators_hosts_toml_and_not_after_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, root) = private_ca_registry(dir.path());
    let registry = reg.addr();
    let image = format!("{registry}/tiny:1");
    let roots = dir.path().join("roots");
    let hosts_dir = roots.join("containerd/certs.d");
    let host = hosts_dir.join(&registry);
    std::fs::create_dir_all(&host).unwrap();
    // The operator's file: a mirror that is down (tried first, then the registry itself), and
    // settings and comments regcert must keep.
    let user = format!(
        "# pull through the mirror when it is up\nserver = \"https://{registry}\"\ncapabilities = [\"pull\", \"resolve\"] # no push from nodes\nskip_verify = false\n\n[host.\"https://127.0.0.1:9\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(host.join("hosts.toml"), &user).unwrap();
    assert_x509(ctr_pull(&hosts_dir, &image), "ctr pull must fail before trust install");

    let args = ["--registry", registry.as_str(), "--runtime", "containerd"];
    let run = trust_cmd(&roots, &[&["trust", "install", "--ca-file", root.to_str().unwrap()], &args[..]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("containerd on this host now trusts") && run.stdout.contains("no restart needed"), "{run:?}");
    let ca = host.join("regcert-ca.crt");
    assert_eq!(std::fs::read(&ca).unwrap(), std::fs::read(&root).unwrap());
    assert_eq!(mode(&ca), 0o644);
    let merged = std::fs::read_to_string(host.join("hosts.toml")).unwrap();
    let expected = user.replace("skip_verify = false\n", &format!("skip_verify = false\nca = \"{}\"\n", ca.display()));
    assert_eq!(merged, expected, "only `ca` is added; the operator's settings and comments stay");
    assert!(!roots.join("docker").exists() && !roots.join("containers").exists(), "only the runtime named");
    ctr_pull(&hosts_dir, &image).expect("ctr pull with regcert's hosts.toml entry");

    let list = trust_cmd(&roots, &["trust", "list", "--json", "--runtime", "containerd"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        entries.iter().any(|e| e["store"] == "containerd"
            && e["file"] == ca.display().to_string().as_str()
            && e["subject"].as_str().unwrap().contains("regcert runtimes test CA")),
        "{list:?}"
    );

    let run = trust_cmd(&roots, &[&["trust", "remove"], &args[..]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("removed the CA for"), "{run:?}");
    assert_eq!(std::fs::read_to_string(host.join("hosts.toml")).unwrap(), user, "remove restores the operator's file byte for byte");
    assert!(!ca.exists());
    assert_x509(ctr_pull(&hosts_dir, &image), "ctr pull must fail again after trust remove");

    // Without a hosts.toml: regcert's own, gone again with its entry.
    std::fs::remove_dir_all(&host).unwrap();
    let run = trust_cmd(&roots, &[&["trust", "install", "--ca-file", root.to_str().unwrap()], &args[..]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(std::fs::read_to_string(host.join("hosts.toml")).unwrap().starts_with("# Written by regcert"));
    ctr_pull(&hosts_dir, &image).expect("ctr pull with a hosts.toml regcert wrote");
    assert_eq!(trust_cmd(&roots, &[&["trust", "remove"], &args[..]].concat()).code, 0);
    assert!(!host.exists(), "nothing of regcert's is left");
}

/// Removes what a test put into the host's real certs.d directories for one registry.
struct CleanCertsD(Vec<PathBuf>);

impl Drop for CleanCertsD {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// podman, CRI-O and skopeo read /etc/containers/certs.d, else /etc/docker/certs.d — the first
/// directory for the registry that exists. On this host's real directories (a test registry
/// address no one else uses; cleaned up whatever happens).
#[test]
fn skopeo_trusts_after_trust_install_and_an_empty_containers_dir_hides_dockers_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, root) = private_ca_registry(dir.path());
    let registry = reg.addr();
    let image = format!("{registry}/tiny:1");
    let (containers, docker_dir) = (Path::new("/etc/containers/certs.d").join(&registry), Path::new("/etc/docker/certs.d").join(&registry));
    let _clean = CleanCertsD(vec![containers.clone(), docker_dir.clone()]);
    assert_x509(skopeo_inspect(None, &image), "skopeo must fail before trust install");
    let root_arg = root.to_str().unwrap();

    let run = regcert_bare(&["trust", "install", "--registry", &registry, "--ca-file", root_arg, "--runtime", "podman"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("podman, CRI-O and skopeo on this host now trust"), "{run:?}");
    assert_eq!(std::fs::read(containers.join("ca.crt")).unwrap(), std::fs::read(&root).unwrap());
    skopeo_inspect(None, &image).expect("skopeo with /etc/containers/certs.d/HOST:PORT/ca.crt");
    assert_eq!(regcert_bare(&["trust", "remove", "--registry", &registry, "--runtime", "podman"]).code, 0);
    assert!(!containers.exists(), "the directory regcert made goes with its CA");
    assert_x509(skopeo_inspect(None, &image), "skopeo must fail again after trust remove");

    // Docker's CA alone: containers/image falls back to it …
    assert_eq!(regcert_bare(&["trust", "install", "--registry", &registry, "--ca-file", root_arg, "--runtime", "docker"]).code, 0);
    skopeo_inspect(None, &image).expect("skopeo falls back to /etc/docker/certs.d");
    // … unless a directory of its own exists: then it looks no further.
    std::fs::create_dir_all(&containers).unwrap();
    assert_x509(skopeo_inspect(None, &image), "an empty /etc/containers/certs.d/HOST:PORT hides Docker's CA");
    let run = regcert_bare(&["trust", "install", "--registry", &registry, "--ca-file", root_arg, "--runtime", "docker"]);
    assert!(run.stderr.contains("warning:") && run.stderr.contains("ignore Docker's"), "{run:?}");
    let list = regcert_bare(&["trust", "list", "--runtime", "podman"]);
    assert_eq!(list.code, 1, "a problem is listed: {list:?}");
    assert!(list.stdout.contains(&format!("problem: {} exists without a CA", containers.display())), "{list:?}");
    let run = regcert_bare(&["trust", "install", "--registry", &registry, "--ca-file", root_arg, "--runtime", "podman"]);
    assert!(run.code == 0 && !run.stderr.contains("warning:"), "{run:?}");
    skopeo_inspect(None, &image).expect("skopeo with the CA in its own directory");

    // remove without --runtime: every runtime's trust goes.
    let run = regcert_bare(&["trust", "remove", "--registry", &registry]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!containers.exists() && !docker_dir.exists(), "{run:?}");
    assert_x509(skopeo_inspect(None, &image), "skopeo must fail after trust remove");
}

/// `[certificate.trust]` without `runtimes`: every runtime found on this host (it has dockerd,
/// containerd and skopeo) gets the private CA at `ca init` and after each renewal, and their
/// clients then pull from the registry serving the renewed certificate.
#[test]
fn certificate_trust_keeps_every_runtime_found_in_sync() {
    let ip = fixed_ip();
    let s = ca_setup(toml! { subject = "CN=Runtimes CA" }, toml! { ips = [(ip.as_str())] validity = "30d" });
    let roots = s.root.path().join("roots");
    let registry = format!("{ip}:5000");
    let root = |r: &str| roots.join(r).join("certs.d").display().to_string();
    s.edit_cert("registry", |c| {
        set(
            c,
            "trust",
            toml! {
                registries = [(registry.as_str())]
                certs_d = (root("docker"))
                containerd_certs_d = (root("containerd"))
                containers_certs_d = (root("containers"))
            },
        )
    });
    let run = s.run(&["ca", "init", "internal"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    let ca = std::fs::read(export_root(&s)).unwrap();
    let host = |r: &str, f: &str| roots.join(r).join("certs.d").join(&registry).join(f);
    assert_eq!(std::fs::read(host("docker", "ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(host("containerd", "regcert-ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(host("containers", "ca.crt")).unwrap(), ca);

    let reg = Registry::start(&s.install_dir("registry"), RegistryOpts { ip: Some(ip.clone()), ..Default::default() });
    seed_tiny(&reg, &export_root(&s), s.root.path());
    let image = format!("{registry}/tiny:1");
    ctr_pull(&roots.join("containerd/certs.d"), &image).expect("ctr pull with the hosts.toml regcert keeps");
    skopeo_inspect(Some(&host("containers", "")), &image).expect("skopeo with the certs.d regcert keeps");
}
