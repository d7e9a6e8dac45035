//! Client trust: the container runtimes on a host trust a registry's private CA, each in its own
//! layout, and optionally the operating system's store ([`system`]). One module per runtime:
//!
//! | runtime | layout | module |
//! |---|---|---|
//! | Docker | `/etc/docker/certs.d/HOST:PORT/ca.crt` | [`docker`] |
//! | containerd (Kubernetes nodes) | `/etc/containerd/certs.d/HOST:PORT/hosts.toml` → `ca = "…/regcert-ca.crt"` | [`containerd`] |
//! | podman, CRI-O, skopeo, buildah | `/etc/containers/certs.d/HOST:PORT/ca.crt` | [`podman`] |
//!
//! All of them re-read these files on every pull: no restart. A runtime is *found* on a host
//! when its configuration directory (the parent of its certs.d: /etc/docker, /etc/containerd,
//! /etc/containers, which their packages create), one of its programs on PATH, or its socket
//! exists — see [`Runtime::found`].

mod client_pair;

pub use client_pair::remove_listed as remove_client_pairs;
pub mod containerd;
mod docker;
mod podman;
mod system;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::certinfo::{LeafInfo, fmt_time, parse_pem_certs, unix};
use crate::config::{CertificateConfig, TrustConfig, Usage};
use crate::obtain::Issuer;
pub use system::SystemStore;

pub const DEFAULT_CERTS_D: &str = docker::DEFAULT_ROOT;
pub const DEFAULT_CONTAINERD_CERTS_D: &str = containerd::DEFAULT_ROOT;
pub const DEFAULT_CONTAINERS_CERTS_D: &str = podman::DEFAULT_ROOT;

/// A container runtime whose trust regcert writes. Adding one: a variant here, its arms below,
/// and its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    /// podman, CRI-O, skopeo, buildah: everything built on containers/image.
    Podman,
}

/// Where each runtime's certs.d is (overridable: `--certs-d`, `--containerd-certs-d`,
/// `--containers-certs-d` and the same keys in `[certificate.trust]`).
#[derive(Debug, Clone)]
pub struct Roots {
    pub docker: PathBuf,
    pub containerd: PathBuf,
    pub containers: PathBuf,
}

impl Roots {
    /// Absolute paths: containerd reads a relative path in hosts.toml relative to that file.
    pub fn new(docker: &Path, containerd: &Path, containers: &Path) -> Self {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        Roots { docker: abs(docker), containerd: abs(containerd), containers: abs(containers) }
    }

    pub fn of(trust: &TrustConfig) -> Self {
        Roots::new(&trust.certs_d, &trust.containerd_certs_d, &trust.containers_certs_d)
    }
}

/// What `--runtime` and `runtimes = […]` take: a runtime's name, or `all`.
pub const RUNTIME_NAMES: [&str; 4] = ["docker", "containerd", "podman", "all"];

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Docker, Runtime::Containerd, Runtime::Podman];

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Podman => "podman",
        }
    }

    fn root(self, roots: &Roots) -> &Path {
        match self {
            Runtime::Docker => &roots.docker,
            Runtime::Containerd => &roots.containerd,
            Runtime::Podman => &roots.containers,
        }
    }

    /// Programs (on PATH) and sockets that show the runtime is on this host.
    fn signs(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Runtime::Docker => (&["dockerd"], &["/var/run/docker.sock"]),
            Runtime::Containerd => (&["containerd"], &["/run/containerd/containerd.sock"]),
            Runtime::Podman => (&["podman", "crio", "skopeo", "buildah"], &["/run/podman/podman.sock", "/run/crio/crio.sock"]),
        }
    }

    /// Is the runtime on this host: its configuration directory (the parent of its certs.d), one
    /// of its programs on PATH, or its socket exists?
    pub fn found(self, roots: &Roots) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        self.found_with(roots, |p| p.exists(), |prog| std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
    }

    fn found_with(self, roots: &Roots, exists: impl Fn(&Path) -> bool, on_path: impl Fn(&str) -> bool) -> bool {
        let (programs, sockets) = self.signs();
        self.root(roots).parent().is_some_and(&exists)
            || programs.iter().any(|p| on_path(p))
            || sockets.iter().any(|s| exists(Path::new(s)))
    }

    /// Trust `pem` for `registry`; says what was written.
    pub fn install(self, roots: &Roots, registry: &str, pem: &str) -> Result<String, String> {
        let root = self.root(roots);
        Ok(match self {
            Runtime::Docker => {
                let path = docker::install(root, registry, pem)?;
                format!("Docker on this host now trusts {registry}: {} (no daemon restart needed)", path.display())
            }
            Runtime::Containerd => {
                let hosts = containerd::install(root, registry, pem)?;
                format!(
                    "containerd on this host now trusts {registry}: {} lists {} (read on every pull: no restart needed)",
                    hosts.display(),
                    containerd::CA_FILE
                )
            }
            Runtime::Podman => {
                let path = docker::install(root, registry, pem)?;
                format!("podman, CRI-O and skopeo on this host now trust {registry}: {} (no restart needed)", path.display())
            }
        })
    }

    /// Take out what [`Runtime::install`] wrote for `registry`; says what, if anything was there.
    pub fn remove(self, roots: &Roots, registry: &str) -> Result<Option<String>, String> {
        let root = self.root(roots);
        let what = match self {
            Runtime::Docker => docker::remove(root, registry)?.map(|p| format!("{} (read on every pull by Docker", p.display())),
            Runtime::Containerd => containerd::remove(root, registry)?
                .map(|p| format!("{} and its entry in {} (read on every pull by containerd", containerd::CA_FILE, p.display())),
            Runtime::Podman => {
                docker::remove(root, registry)?.map(|p| format!("{} (read on every pull by podman, CRI-O, skopeo", p.display()))
            }
        };
        Ok(what.map(|w| format!("removed the CA for {registry}: {w}: no restart needed)")))
    }

    fn list(self, roots: &Roots, now: i64) -> Vec<Entry> {
        match self {
            Runtime::Docker => docker::list("docker", "Docker", self.root(roots), now),
            Runtime::Containerd => containerd::list(self.root(roots), now),
            Runtime::Podman => podman::list(roots, now),
        }
    }
}

pub use podman::hiding as podman_hiding;

/// `--runtime` / `runtimes = […]` as runtimes (`all` is every one), or None when none is named.
pub fn parse_runtimes(names: &[String]) -> Result<Option<Vec<Runtime>>, String> {
    let mut out: Vec<Runtime> = Vec::new();
    for name in names {
        let picked: Vec<Runtime> = match name.as_str() {
            "all" => Runtime::ALL.to_vec(),
            n => vec![
                Runtime::ALL
                    .into_iter()
                    .find(|r| r.name() == n)
                    .ok_or_else(|| format!("unknown runtime \"{n}\": name one of {}", RUNTIME_NAMES.join(", ")))?,
            ],
        };
        for r in picked {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok((!names.is_empty()).then_some(out))
}

/// The runtimes named, or else every runtime found on this host.
pub fn named_or_found(names: &[String], roots: &Roots) -> Result<Vec<Runtime>, String> {
    Ok(match parse_runtimes(names)? {
        Some(named) => named,
        None => Runtime::ALL.into_iter().filter(|r| r.found(roots)).collect(),
    })
}

/// Check `HOST[:PORT]` and return the directory name Docker uses for it.
pub fn check_registry(registry: &str) -> Result<String, String> {
    let bad = || format!("\"{registry}\" is not HOST or HOST:PORT (e.g. registry.corp.lan:5000 or 192.168.20.10:5000)");
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (format!("[{h}]"), Some(port(p)?)),
            None if after.is_empty() => (format!("[{h}]"), None),
            None => return Err(bad()),
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(port(p)?)),
            None => (registry.to_owned(), None),
        }
    };
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(match port {
        Some(443) | None => host,
        Some(p) => format!("{host}:{p}"),
    })
}

/// The runtimes `[certificate.trust]` writes, and those of them that must succeed: the ones
/// named in `runtimes`; without it every runtime found on the host is written, and only Docker
/// (which regcert always wrote) must succeed — a runtime merely installed on the host must not
/// fail a verified renewal (a warning says what it lacks). For a client certificate nothing is
/// written for Docker (it reads install.dir itself), so only the named ones must succeed.
fn runtimes_of(trust: &TrustConfig, roots: &Roots, usage: Usage) -> Result<(Vec<Runtime>, Vec<Runtime>), String> {
    let all = named_or_found(&trust.runtimes, roots).map_err(|e| format!("[certificate.trust] runtimes: {e}"))?;
    let strict = match parse_runtimes(&trust.runtimes) {
        Ok(Some(named)) => named,
        _ if usage == Usage::Client => Vec::new(),
        _ => all.iter().copied().filter(|r| *r == Runtime::Docker).collect(),
    };
    Ok((all, strict))
}

/// `[certificate.trust]`: the runtimes on this host trust the root of the issuer of `cert` for
/// each listed registry. Nothing to do for issuers whose roots are public. A client certificate's
/// installed pair is presented to the registries instead ([`client_pair`]).
pub fn sync_clients(cert: &CertificateConfig, issuer: &Issuer) -> Result<(), String> {
    if let (Some(trust), Usage::Client) = (&cert.trust, cert.usage) {
        return client_pair::sync(cert, trust);
    }
    let (Some(trust), Some(root)) = (&cert.trust, issuer.trust_anchor()) else { return Ok(()) };
    if trust.docker_clients.is_empty() {
        return Ok(());
    }
    let pem = std::fs::read_to_string(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let roots = Roots::of(trust);
    let (all, strict) = runtimes_of(trust, &roots, Usage::Server)?;
    for runtime in all {
        for registry in &trust.docker_clients {
            match runtime.install(&roots, registry, &pem) {
                Ok(done) => tracing::info!(cert = %cert.name, registry = %registry, runtime = runtime.name(), "{done}"),
                Err(e) if strict.contains(&runtime) => return Err(format!("installed and verified, but {e}")),
                Err(e) => tracing::warn!(
                    cert = %cert.name, registry = %registry, runtime = runtime.name(),
                    "{} is on this host but cannot be given the CA: {e} (name the runtimes to keep in [certificate.trust] runtimes)",
                    runtime.name()
                ),
            }
        }
    }
    Ok(())
}

/// Before anything is ordered: can `[certificate.trust]` be written for the runtimes that must
/// succeed? (Under a sandbox without certs.d in ReadWritePaths it cannot, and a verified renewal
/// would be reported failed at the very end.) Each registry's directory, or where it would be
/// created, must be writable.
pub fn preflight(cert: &CertificateConfig) -> Result<(), String> {
    let Some(trust) = &cert.trust else { return Ok(()) };
    let roots = Roots::of(trust);
    // Only containerd's hosts.toml is written for a client certificate.
    let written = |r: &Runtime| cert.usage == Usage::Server || *r == Runtime::Containerd;
    runtimes_of(trust, &roots, cert.usage)?.1.into_iter().filter(written).try_for_each(|r| preflight_runtime(r, &roots, trust))
}

fn preflight_runtime(runtime: Runtime, roots: &Roots, trust: &TrustConfig) -> Result<(), String> {
    for registry in &trust.docker_clients {
        let dir = runtime.root(roots).join(check_registry(registry).map_err(|e| format!("[certificate.trust] {e}"))?);
        // The directory, or the nearest one above it that exists (the rest is created).
        let Some(existing) = dir.ancestors().find(|d| d.exists()) else { continue };
        crate::fsutil::check_writable_dir(existing).map_err(|e| {
            format!("[certificate.trust] docker_clients \"{registry}\" ({}): {e} (regcert writes in {})", runtime.name(), dir.display())
        })?;
    }
    Ok(())
}

/// The registry directories under a certs.d root, by name.
fn registry_dirs(root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dirs) = std::fs::read_dir(root) else { return Vec::new() };
    let mut dirs: Vec<_> =
        dirs.flatten().filter(|d| d.path().is_dir()).map(|d| (d.file_name().to_string_lossy().into_owned(), d.path())).collect();
    dirs.sort();
    dirs
}

/// The files in a directory, by name.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(files) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = files.flatten().map(|f| f.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// An entry for a file a runtime reads: its certificate, and `problem` or else what is wrong
/// with the certificate (none, expired; not a certificate where one belongs).
fn entry_for_file(store: &'static str, registry: &str, file: PathBuf, problem: Option<String>, now: i64) -> Entry {
    let cert = std::fs::read(&file).ok().and_then(|b| parse_pem_certs(&b).ok()).and_then(|c| LeafInfo::parse(&c[0]).ok());
    let keyish = file.extension().is_some_and(|e| e == "key" || e == "cert");
    let problem = problem.or_else(|| match &cert {
        None if file.is_file() && !keyish => Some("not a PEM certificate".to_owned()),
        Some(c) if (c.not_after as i64) < now => Some("expired".to_owned()),
        _ => None,
    });
    Entry::new(store, registry.to_owned(), file, cert, problem, now)
}

#[derive(Debug, Serialize)]
pub struct Entry {
    /// The runtime (`docker`, `containerd`, `podman`) or `system` (an anchor regcert added to
    /// the OS store).
    pub store: &'static str,
    pub registry: String,
    pub file: PathBuf,
    pub subject: Option<String>,
    pub not_after: Option<u64>,
    pub days_left: Option<i64>,
    pub problem: Option<String>,
}

impl Entry {
    fn new(store: &'static str, registry: String, file: PathBuf, cert: Option<LeafInfo>, problem: Option<String>, now: i64) -> Self {
        Entry {
            store,
            registry,
            file,
            subject: cert.as_ref().map(|c| c.subject.clone()),
            not_after: cert.as_ref().map(|c| c.not_after),
            days_left: cert.as_ref().map(|c| (c.not_after as i64 - now).div_euclid(86_400)),
            problem,
        }
    }
}

/// What each runtime's certs.d holds — every CA it reads per registry, with expiry and the
/// mistakes it ignores — and the anchors regcert added to the system store (`system`, when the
/// host has one).
pub fn list(roots: &Roots, runtimes: &[Runtime], system: Option<&SystemStore>) -> Vec<Entry> {
    let now = unix(std::time::SystemTime::now()) as i64;
    let mut out: Vec<Entry> = runtimes.iter().flat_map(|r| r.list(roots, now)).collect();
    for anchor in system.map(SystemStore::anchors_added).unwrap_or_default() {
        let cert = anchor.cert;
        let problem = match &cert {
            None => Some("not a PEM certificate".to_owned()),
            Some(c) if (c.not_after as i64) < now => Some("expired".to_owned()),
            Some(_) => None,
        };
        out.push(Entry::new("system", anchor.registry, anchor.file, cert, problem, now));
    }
    out
}

pub fn render_list(entries: &[Entry], runtimes: &[Runtime]) -> String {
    let mut out = String::new();
    for r in runtimes {
        let mine: Vec<&Entry> = entries.iter().filter(|e| e.store == r.name()).collect();
        if mine.is_empty() {
            out.push_str(&format!("{}: no registry CAs\n", r.name()));
        } else {
            out.push_str(&format!("{}:\n", r.name()));
        }
        render_entries(&mut out, &mine);
    }
    let system: Vec<&Entry> = entries.iter().filter(|e| e.store == "system").collect();
    if !system.is_empty() {
        out.push_str("added by regcert to the system trust store:\n");
        render_entries(&mut out, &system);
    }
    out
}

fn render_entries(out: &mut String, entries: &[&Entry]) {
    for e in entries {
        let when = e.not_after.map(|t| format!("expires {} ({} days)", fmt_time(t), e.days_left.unwrap_or(0))).unwrap_or_default();
        out.push_str(&format!("  {}  {}  {}  {}\n", e.registry, e.file.display(), e.subject.as_deref().unwrap_or("?"), when));
        if let Some(p) = &e.problem {
            out.push_str(&format!("      problem: {p}\n"));
        }
    }
}

/// The certificate to trust from a served chain: its last one (the root, if the server sends
/// it; otherwise the topmost certificate it sends).
pub fn anchor_of(chain: &[rustls_pki_types::CertificateDer<'static>]) -> Option<(String, LeafInfo)> {
    let last = chain.last()?;
    let info = LeafInfo::parse(last).ok()?;
    Some((crate::certinfo::to_pem(std::slice::from_ref(last)), info))
}

/// "AB:CD:…" or "abcd…" → "ABCD…"
pub fn normalize_fingerprint(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_follow_docker() {
        assert_eq!(check_registry("registry.corp.lan:5000").unwrap(), "registry.corp.lan:5000");
        assert_eq!(check_registry("registry.corp.lan:443").unwrap(), "registry.corp.lan");
        assert_eq!(check_registry("192.168.20.10:5000").unwrap(), "192.168.20.10:5000");
        assert!(check_registry("https://x:5000").is_err());
        assert!(check_registry("x:port").is_err());
        assert_eq!(normalize_fingerprint("ab:cd:01"), "ABCD01");
    }

    #[test]
    fn docker_install_remove_and_list() {
        let d = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = rcgen::CertificateParams::new(vec!["ca.example".into()]).unwrap().self_signed(&key).unwrap().pem();
        let roots =
            Roots { docker: d.path().join("docker"), containerd: d.path().join("containerd"), containers: d.path().join("containers") };
        Runtime::Docker.install(&roots, "reg.example:5000", &pem).unwrap();
        let p = roots.docker.join("reg.example:5000/ca.crt");
        std::fs::write(roots.docker.join("reg.example:5000/ca.pem"), &pem).unwrap();
        let l = list(&roots, &Runtime::ALL, None);
        assert_eq!(l.len(), 2);
        assert!(l.iter().any(|e| e.problem.as_deref().is_some_and(|p| p.contains("must end in .crt"))));
        assert!(Runtime::Docker.remove(&roots, "reg.example:5000").unwrap().unwrap().contains(&p.display().to_string()));
        assert_eq!(Runtime::Docker.remove(&roots, "reg.example:5000").unwrap(), None);
    }

    #[test]
    fn an_empty_containers_dir_hides_dockers_ca() {
        let d = tempfile::tempdir().unwrap();
        let roots =
            Roots { docker: d.path().join("docker"), containerd: d.path().join("containerd"), containers: d.path().join("containers") };
        Runtime::Docker.install(&roots, "reg.example:5000", "PEM").unwrap();
        assert_eq!(podman::hiding(&roots, "reg.example:5000"), None, "no containers dir: podman falls back to Docker's");
        std::fs::create_dir_all(roots.containers.join("reg.example:5000")).unwrap();
        assert!(podman::hiding(&roots, "reg.example:5000").unwrap().contains("ignore Docker's"));
        let l = list(&roots, &[Runtime::Podman], None);
        assert!(l[0].problem.as_deref().unwrap().contains("ignore Docker's"), "{l:?}");
        Runtime::Podman.install(&roots, "reg.example:5000", "PEM").unwrap();
        assert_eq!(podman::hiding(&roots, "reg.example:5000"), None);
    }

    #[test]
    fn runtimes_are_named_or_found() {
        let roots = Roots {
            docker: "/r/docker/certs.d".into(),
            containerd: "/r/containerd/certs.d".into(),
            containers: "/r/containers/certs.d".into(),
        };
        let names = |n: &[&str]| parse_runtimes(&n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["all", "docker"]).unwrap(), Some(Runtime::ALL.to_vec()));
        assert_eq!(names(&["podman"]).unwrap(), Some(vec![Runtime::Podman]));
        assert_eq!(names(&[]).unwrap(), None);
        assert!(names(&["cri-o"]).unwrap_err().contains("docker, containerd, podman, all"));
        // Found by its config dir, a program on PATH, or a socket.
        let nothing = |r: Runtime| r.found_with(&roots, |_| false, |_| false);
        assert!(Runtime::ALL.into_iter().all(|r| !nothing(r)));
        assert!(Runtime::Containerd.found_with(&roots, |p| p == Path::new("/r/containerd"), |_| false));
        assert!(!Runtime::Docker.found_with(&roots, |p| p == Path::new("/r/containerd"), |_| false));
        assert!(Runtime::Podman.found_with(&roots, |_| false, |p| p == "skopeo"));
        assert!(Runtime::Containerd.found_with(&roots, |p| p == Path::new("/run/containerd/containerd.sock"), |_| false));
        // A client certificate's trust fails a renewal only for the runtimes named.
        let trust = |names: &[&str]| TrustConfig { runtimes: names.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        assert_eq!(runtimes_of(&trust(&[]), &roots, Usage::Client).unwrap().1, vec![]);
        assert_eq!(runtimes_of(&trust(&["containerd"]), &roots, Usage::Client).unwrap().1, vec![Runtime::Containerd]);
        // hosts.toml gets absolute paths whatever the command line said.
        assert!(Roots::new(Path::new("d"), Path::new("c"), Path::new("p")).containerd.is_absolute());
    }
}
