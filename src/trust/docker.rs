//! Docker: `<certs.d>/<HOST:PORT>/ca.crt`, read on every connection (no daemon restart), where
//! `<HOST:PORT>` is exactly what users type (`HOST` alone for port 443). The classic failures
//! are a misnamed file (`ca.pem`, `ca.cer` are ignored) and a directory named without the port;
//! regcert writes the one name that works. podman/CRI-O/skopeo read the same layout under
//! another root ([`super::podman`]), so the code here serves both.

use std::path::{Path, PathBuf};

use super::{Entry, check_registry, entry_for_file};
use crate::fsutil::{FileSpec, write_atomic};

pub const DEFAULT_ROOT: &str = "/etc/docker/certs.d";
const CA_FILE: &str = "ca.crt";

/// Write `pem` as `<root>/<registry>/ca.crt` (0644, atomic); returns the path. Nothing is
/// written when the file already holds exactly this content.
pub fn install(root: &Path, registry: &str, pem: &str) -> Result<PathBuf, String> {
    let dir = root.join(check_registry(registry)?);
    let path = dir.join(CA_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur == pem) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_atomic(&path, pem.as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Remove what `install` wrote; the file removed, if one was there.
pub fn remove(root: &Path, registry: &str) -> Result<Option<PathBuf>, String> {
    let dir = root.join(check_registry(registry)?);
    let path = dir.join(CA_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&dir); // only if now empty
            Ok(Some(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// Every file under `root`, per registry, with the mistakes `client` (who reads it) ignores.
pub fn list(store: &'static str, client: &str, root: &Path, now: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    for (registry, dir) in super::registry_dirs(root) {
        for f in super::files_in(&dir) {
            let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let problem = if name.ends_with(".pem") || name.ends_with(".cer") || name.ends_with(".crt.txt") {
                Some(format!("{client} ignores {name}: CA files must end in .crt (ca.crt)"))
            } else if name.ends_with(".cert") || name.ends_with(".key") || name.ends_with(".crt") {
                None // a CA, or a client certificate / key for TLS client auth
            } else {
                Some(format!("{client} ignores {name}"))
            };
            out.push(entry_for_file(store, &registry, f, problem, now));
        }
    }
    out
}
