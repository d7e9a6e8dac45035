//! Crash-safe file writes. A reader (the registry, a restarting container) sees either the old
//! file or the new one, never a half-written one, and a private key is never readable by anyone
//! else, not even for the instant between creating and chmod-ing a file.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, fchown};
use std::path::Path;

/// Prefix of our temporary files, so that leftovers of a killed run can be recognised and removed.
const TEMP_PREFIX: &str = ".regcert-tmp-";

/// Ownership and mode a written file must end up with.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FileSpec {
    pub const PRIVATE: FileSpec = FileSpec { mode: 0o600, uid: None, gid: None };
    pub const PUBLIC: FileSpec = FileSpec { mode: 0o644, uid: None, gid: None };
}

/// Write `data` to `path` atomically: temp file in the same directory (created 0600), owner and
/// mode set on the temp file, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8], spec: FileSpec) -> io::Result<()> {
    stage(path, data, spec)?.commit()
}

/// A file written and synced next to its final name, not yet renamed over it: everything that
/// can fail for lack of space or permission has happened. Dropped without [`Staged::commit`],
/// the temp file is removed.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    path: std::path::PathBuf,
}

/// The first half of [`write_atomic`]: the temp file, complete and synced.
pub fn stage(path: &Path, data: &[u8], spec: FileSpec) -> io::Result<Staged> {
    // tempfile creates with O_EXCL and mode 0600, so key bytes are private from the first write.
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(parent_dir(path))?;
    tmp.write_all(data)?;
    let file = tmp.as_file();
    if spec.uid.is_some() || spec.gid.is_some() {
        fchown(file, spec.uid, spec.gid)?;
    }
    file.set_permissions(fs::Permissions::from_mode(spec.mode))?;
    file.sync_all()?;
    Ok(Staged { tmp, path: path.to_owned() })
}

impl Staged {
    /// Rename the temp file over the final name, and sync the directory.
    pub fn commit(self) -> io::Result<()> {
        let Staged { tmp, path } = self;
        tmp.persist(&path).map_err(|e| e.error)?;
        sync_dir(parent_dir(&path))
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Overwrite an existing file's contents in place, keeping its inode.
///
/// Only for files a container bind-mounts one by one: there a rename would leave the container
/// on the old inode forever. It is not atomic, which is why the caller keeps a backup.
pub fn write_in_place(path: &Path, data: &[u8], spec: FileSpec) -> io::Result<()> {
    // Never through a symbolic link: the registry's cert dir is not trusted input, and a link
    // there could point the write at any file regcert may write. Checked before truncating.
    let mut file = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    file.set_len(0)?;
    // Tighten the mode before the new bytes go in (a key must never be readable by others).
    file.set_permissions(fs::Permissions::from_mode(spec.mode))?;
    if spec.uid.is_some() || spec.gid.is_some() {
        fchown(&file, spec.uid, spec.gid)?;
    }
    file.write_all(data)?;
    file.sync_all()
}

/// The most regcert reads from a file it does not own (a certificate chain or a key is a few KiB).
pub const UNTRUSTED_READ_CAP: u64 = 1 << 20;

/// Read a file that someone else can write (the registry's cert dir): `Ok(None)` when it does
/// not exist. A symbolic link is not followed, and anything but a regular file of at most
/// `cap` bytes with no other name (hard link) is refused (a FIFO would block, a device or a huge file would exhaust memory).
/// The error says which of these it was.
pub fn read_untrusted(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{} is a symbolic link; regcert does not follow links in the install dir", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file ({}); regcert reads only regular files", path.display(), file_kind(&meta)));
    }
    // A second name for the file: possibly a secret from elsewhere on the same filesystem.
    if meta.nlink() > 1 {
        return Err(format!("{} has {} hard links; regcert reads only files that are not linked elsewhere", path.display(), meta.nlink()));
    }
    if meta.len() > cap {
        return Err(format!("{} is {} bytes, more than the {cap} a certificate or key can be", path.display(), meta.len()));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never more than the cap.
    file.take(cap + 1).read_to_end(&mut data).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() as u64 > cap {
        return Err(format!("{} is more than the {cap} bytes a certificate or key can be", path.display()));
    }
    Ok(Some(data))
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_char_device() => "a character device",
        _ if t.is_block_device() => "a block device",
        _ if t.is_socket() => "a socket",
        _ => "not a file",
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove temp files a killed regcert left behind in `dir` (they may hold key material).
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Create a directory (and parents) readable only by its owner.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

use std::os::unix::fs::DirBuilderExt;

/// Is `dir` an existing directory we can create files in? Checked by really creating one,
/// because permission bits lie (root, read-only mounts, ACLs).
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{} does not exist: create it (it should be the directory the registry mounts as its cert volume)",
                dir.display()
            ));
        }
        Err(e) => return Err(format!("{} cannot be read: {e}", dir.display())),
        Ok(m) if !m.is_dir() => return Err(format!("{} is not a directory", dir.display())),
        Ok(_) => {}
    }
    tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir).map(drop).map_err(|e| {
        let e = os_error(&e);
        match e.raw_os_error() {
            Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT) => {
                format!("{} is not writable: {e} ({})", dir.display(), write_advice(dir, &e))
            }
            _ => format!(
                "{} is not writable by this user: {e} (run regcert as a user that may write there, or fix its permissions)",
                dir.display()
            ),
        }
    })
}

/// The operating system's error behind `e`: tempfile wraps it with the temp file's name (which
/// says nothing to an operator), keeping only its kind.
pub fn os_error(e: &io::Error) -> io::Error {
    use io::ErrorKind::*;
    let errno = e.raw_os_error().or(match e.kind() {
        ReadOnlyFilesystem => Some(libc::EROFS),
        StorageFull => Some(libc::ENOSPC),
        QuotaExceeded => Some(libc::EDQUOT),
        PermissionDenied => Some(libc::EACCES),
        _ => None,
    });
    errno.map_or_else(|| io::Error::new(e.kind(), e.to_string()), io::Error::from_raw_os_error)
}

/// What to do when a write into `dir` failed with `e`, for the failures the host causes.
pub fn write_advice(dir: &Path, e: &io::Error) -> String {
    let dir = dir.display();
    match os_error(e).raw_os_error() {
        Some(libc::EROFS) => format!("{dir} is on a read-only filesystem: remount it read-write, then run regcert again"),
        Some(libc::ENOSPC | libc::EDQUOT) => format!("the filesystem of {dir} is full: free space there, then run regcert again"),
        Some(libc::EACCES | libc::EPERM) => {
            format!("this user may not write in {dir}: run regcert as a user that may, or fix its permissions")
        }
        _ => format!("check {dir} and its permissions"),
    }
}

pub fn lookup_user(name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we read one field at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

pub fn lookup_group(name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: as above, for getgrnam.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_atomic(&p, b"one", FileSpec::PRIVATE).unwrap();
        write_atomic(&p, b"two", FileSpec { mode: 0o640, uid: None, gid: None }).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn untrusted_reads_refuse_links_fifos_devices_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "SECRET").unwrap();
        let p = |n: &str| dir.path().join(n);
        assert_eq!(read_untrusted(&p("missing"), 10).unwrap(), None);
        fs::write(p("ok"), "hello").unwrap();
        assert_eq!(read_untrusted(&p("ok"), 10).unwrap().unwrap(), b"hello");
        std::os::unix::fs::symlink(&secret, p("link")).unwrap();
        assert!(read_untrusted(&p("link"), 10).unwrap_err().contains("is a symbolic link"));
        let fifo = std::ffi::CString::new(p("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(read_untrusted(&p("fifo"), 10).unwrap_err().contains("a FIFO"));
        assert!(read_untrusted(Path::new("/dev/zero"), 10).unwrap_err().contains("a character device"));
        assert!(read_untrusted(dir.path(), 10).unwrap_err().contains("a directory"));
        fs::hard_link(&secret, p("hard")).unwrap();
        assert!(read_untrusted(&p("hard"), 10).unwrap_err().contains("has 2 hard links"));
        fs::write(p("big"), "01234567890").unwrap();
        assert!(read_untrusted(&p("big"), 10).unwrap_err().contains("more than the 10"));
        // In-place writes do not go through a link either, and leave its target alone.
        assert!(write_in_place(&p("link"), b"x", FileSpec::PRIVATE).is_err());
        assert_eq!(fs::read(&secret).unwrap(), b"SECRET");
    }

    #[test]
    fn writable_dir_checks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable_dir(dir.path()).is_ok());
        assert!(check_writable_dir(&dir.path().join("nope")).unwrap_err().contains("does not exist"));
        let f = dir.path().join("file");
        fs::write(&f, "x").unwrap();
        assert!(check_writable_dir(&f).unwrap_err().contains("not a directory"));
        assert_eq!(lookup_user("root"), Some(0));
        assert_eq!(lookup_user("no-such-user-xyz"), None);
    }
}
