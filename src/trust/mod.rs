//! Client trust: Docker's `/etc/docker/certs.d/HOST:PORT/ca.crt`, and optionally the operating
//! system's store ([`system`]).
//!
//! Docker reads `certs.d/<registry>/*.crt` as CA roots on every connection (no daemon restart),
//! where `<registry>` is exactly what users type: `HOST:PORT`, or `HOST` alone for port 443.
//! The classic failures are a misnamed file (`ca.pem`, `ca.cer` are ignored) and a directory
//! named without the port; regcert writes the one name that works.

mod system;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::certinfo::{LeafInfo, fmt_time, parse_pem_certs, unix};
use crate::config::CertificateConfig;
use crate::fsutil::{FileSpec, write_atomic};
use crate::obtain::Issuer;
pub use system::SystemStore;

pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";

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

/// Write `pem` as `<certs_d>/<registry>/ca.crt` (0644, atomic); returns the path. Nothing is
/// written when the file already holds exactly this content.
pub fn install(certs_d: &Path, registry: &str, pem: &str) -> Result<PathBuf, String> {
    let dir = certs_d.join(check_registry(registry)?);
    let path = dir.join("ca.crt");
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur == pem) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_atomic(&path, pem.as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// `[certificate.trust] docker_clients`: this host's Docker trusts the root of the issuer of
/// `cert` for each listed registry. Nothing to do for issuers whose roots are public.
pub fn sync_docker_clients(cert: &CertificateConfig, issuer: &Issuer) -> Result<(), String> {
    let (Some(trust), Some(root)) = (&cert.trust, issuer.trust_anchor()) else { return Ok(()) };
    let pem = std::fs::read_to_string(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for registry in &trust.docker_clients {
        let path = install(&trust.certs_d, registry, &pem).map_err(|e| format!("installed and verified, but {e}"))?;
        tracing::info!(cert = %cert.name, registry = %registry, file = %path.display(), "Docker trusts the CA");
    }
    Ok(())
}

/// Before anything is ordered: can `[certificate.trust] docker_clients` be written? (Under a
/// sandbox without /etc/docker/certs.d in ReadWritePaths it cannot, and a verified renewal
/// would be reported failed at the very end.) Each registry's directory, or where it would be
/// created, must be writable.
pub fn preflight(cert: &CertificateConfig) -> Result<(), String> {
    let Some(trust) = &cert.trust else { return Ok(()) };
    for registry in &trust.docker_clients {
        let dir = trust.certs_d.join(check_registry(registry).map_err(|e| format!("[certificate.trust] {e}"))?);
        // The directory, or the nearest one above it that exists (the rest is created).
        let Some(existing) = dir.ancestors().find(|d| d.exists()) else { continue };
        crate::fsutil::check_writable_dir(existing)
            .map_err(|e| format!("[certificate.trust] docker_clients \"{registry}\": {e} (regcert writes {}/ca.crt)", dir.display()))?;
    }
    Ok(())
}

/// Remove what `install` wrote; the file removed, if one was there.
pub fn remove(certs_d: &Path, registry: &str) -> Result<Option<PathBuf>, String> {
    let dir = certs_d.join(check_registry(registry)?);
    let path = dir.join("ca.crt");
    match std::fs::remove_file(&path) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&dir); // only if now empty
            Ok(Some(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

#[derive(Debug, Serialize)]
pub struct Entry {
    /// `docker` (certs.d) or `system` (an anchor regcert added to the OS store).
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

/// What certs.d holds — every file per registry, with expiry and the mistakes Docker ignores —
/// and the anchors regcert added to the system store (`system`, when the host has one).
pub fn list(certs_d: &Path, system: Option<&SystemStore>) -> Vec<Entry> {
    let now = unix(std::time::SystemTime::now()) as i64;
    let mut out = list_certs_d(certs_d, now);
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

fn list_certs_d(certs_d: &Path, now: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(certs_d) else { return out };
    let mut dirs: Vec<_> = dirs.flatten().filter(|d| d.path().is_dir()).collect();
    dirs.sort_by_key(|d| d.file_name());
    for d in dirs {
        let registry = d.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(d.path()) else { continue };
        let mut files: Vec<_> = files.flatten().collect();
        files.sort_by_key(|f| f.file_name());
        for f in files {
            let name = f.file_name().to_string_lossy().into_owned();
            let cert = std::fs::read(f.path()).ok().and_then(|b| parse_pem_certs(&b).ok()).and_then(|c| LeafInfo::parse(&c[0]).ok());
            let problem = if name.ends_with(".pem") || name.ends_with(".cer") || name.ends_with(".crt.txt") {
                Some(format!("Docker ignores {name}: CA files must end in .crt (ca.crt)"))
            } else if name.ends_with(".cert") || name.ends_with(".key") {
                None // client certificate / key for TLS client auth
            } else if !name.ends_with(".crt") {
                Some(format!("Docker ignores {name}"))
            } else if cert.is_none() {
                Some("not a PEM certificate".into())
            } else if cert.as_ref().is_some_and(|c| (c.not_after as i64) < now) {
                Some("expired".into())
            } else {
                None
            };
            out.push(Entry::new("docker", registry.clone(), f.path(), cert, problem, now));
        }
    }
    out
}

pub fn render_list(entries: &[Entry]) -> String {
    let (docker, system): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| e.store == "docker");
    let mut out = String::new();
    if docker.is_empty() {
        out.push_str("no registry CAs in certs.d\n");
    }
    render_entries(&mut out, &docker);
    if !system.is_empty() {
        out.push_str("added by regcert to the system trust store:\n");
        render_entries(&mut out, &system);
    }
    out
}

fn render_entries(out: &mut String, entries: &[&Entry]) {
    for e in entries {
        let when = e.not_after.map(|t| format!("expires {} ({} days)", fmt_time(t), e.days_left.unwrap_or(0))).unwrap_or_default();
        out.push_str(&format!("{}  {}  {}  {}\n", e.registry, e.file.display(), e.subject.as_deref().unwrap_or("?"), when));
        if let Some(p) = &e.problem {
            out.push_str(&format!("    problem: {p}\n"));
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
    fn install_remove_and_list() {
        let d = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = rcgen::CertificateParams::new(vec!["ca.example".into()]).unwrap().self_signed(&key).unwrap().pem();
        let p = install(d.path(), "reg.example:5000", &pem).unwrap();
        assert_eq!(p, d.path().join("reg.example:5000/ca.crt"));
        std::fs::write(d.path().join("reg.example:5000/ca.pem"), &pem).unwrap();
        let l = list(d.path(), None);
        assert_eq!(l.len(), 2);
        assert!(l.iter().any(|e| e.problem.as_deref().is_some_and(|p| p.contains("must end in .crt"))));
        assert_eq!(remove(d.path(), "reg.example:5000").unwrap(), Some(p));
        assert_eq!(remove(d.path(), "reg.example:5000").unwrap(), None);
    }
}
