//! Who can change what the import reads. acme.sh's files become regcert's configuration: a
//! reload command that regcert (usually root) runs, install dirs it writes to, the CA bundle it
//! trusts. Whoever can write those files — or any directory above them — decides what regcert
//! does, so they must belong to root or to the user running the import, and be writable by no
//! one else.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Who may change what the import reads: root, the invoking user, and the groups whose write
/// access is fine (root's, and `regcert`, the service's own group, which the README has write
/// to the install dirs).
pub struct Trusted {
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Trusted {
    pub fn invoking_user() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Trusted { uid, gids: std::iter::once(0).chain(crate::fsutil::lookup_group("regcert")).collect() }
    }
}

/// Why `path` (or a directory above it, or a link on the way) can be changed by someone not
/// `trusted`; `None` when only they can change it or it does not exist (a missing file is
/// reported where it is needed).
pub fn untrusted(path: &Path, trusted: &Trusted) -> Option<String> {
    let canonical = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Some(format!("{} leads into a loop of symbolic links", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("{} cannot be checked: {e}", path.display())),
    };
    // The directories the path names (where a link is replaced by whoever owns its directory)
    // and the ones it really reaches.
    prefixes(path).into_iter().chain(prefixes(&canonical)).find_map(|p| writable_by_others(&p, trusted))
}

/// `/a/b/c` → `/`, `/a`, `/a/b`, `/a/b/c`.
fn prefixes(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for c in path.components() {
        if matches!(c, Component::CurDir) {
            continue;
        }
        cur.push(c);
        out.push(cur.clone());
    }
    out
}

fn writable_by_others(p: &Path, trusted: &Trusted) -> Option<String> {
    let meta = std::fs::symlink_metadata(p).ok()?;
    if meta.file_type().is_symlink() {
        // The link itself cannot be changed in place; its directory and its target are checked.
        return None;
    }
    let owner = meta.uid();
    if owner != 0 && owner != trusted.uid {
        return Some(format!("{} belongs to uid {owner}", p.display()));
    }
    // A sticky directory (/tmp) lets others add names, never replace or remove ours.
    let sticky = meta.is_dir() && meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o002 != 0 && !sticky {
        return Some(format!("{} is writable by everyone (mode {:o})", p.display(), meta.mode() & 0o7777));
    }
    if meta.mode() & 0o020 != 0 && !trusted.gids.contains(&meta.gid()) && !sticky {
        return Some(format!("{} is writable by group gid {} (mode {:o})", p.display(), meta.gid(), meta.mode() & 0o7777));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_others_write_access_and_link_loops() {
        let dir = tempfile::tempdir().unwrap();
        let me = Trusted::invoking_user();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(untrusted(&f, &me), None);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(untrusted(&f, &me).unwrap().contains("writable by everyone"), "the directory above counts");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("b"), dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert!(untrusted(&dir.path().join("a/x"), &me).unwrap().contains("loop of symbolic links"));
        assert_eq!(untrusted(&dir.path().join("missing"), &me), None);
        // Group write: fine for a trusted group only.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let gid = std::fs::metadata(&f).unwrap().gid();
        let without = Trusted { uid: me.uid, gids: vec![] };
        assert!(untrusted(&f, &without).unwrap().contains(&format!("writable by group gid {gid}")));
        assert_eq!(untrusted(&f, &Trusted { uid: me.uid, gids: vec![gid] }), None);
    }
}
