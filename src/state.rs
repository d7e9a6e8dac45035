//! The state directory: ACME accounts, issued material, backups of what was installed, and the
//! lock that keeps two regcert processes from working on it at once.
//!
//! Every path below is built here, by [`StateDir`], and nowhere else:
//!
//! ```text
//! state_dir/                            0700
//!   regcert.lock                        held while a process works; says who holds it
//!   daemon.json                         `regcert run`: pid, schedule, last and next check
//!   accounts/<hash of directory>.json   ACME account credentials (0600)
//!   certs/<name>/cert.pem chain.pem fullchain.pem privkey.pem meta.json   last issued
//!   certs/<name>/previous/fullchain.pem privkey.pem                      the last known-good pair
//!   certs/<name>/installing.json        journal of an install in progress (left by a killed run)
//!   certs/<name>/reload-pending.json    installed, its restart held for the reload window
//!   certs/<name>/schedule.json          what the daemon remembers: backoff, last result, ARI
//!   ca/<name>/root.crt root.key         a private CA (see obtain::local_ca)
//!   ca/<name>/intermediate.crt intermediate.key offline/root.key   … a two-level one
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
use crate::keys::KeyType;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// The daemon's memory of the small records in `certs/<name>/` (see [`Records`]); `None`
    /// for one-shot commands, which read each record once anyway.
    records: Option<std::sync::Arc<Records>>,
}

/// Held while this process works on the state; released when dropped (or the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another regcert process holds the lock {path} ({holder}); wait for it to finish, or stop it if it is stuck")]
    Busy { path: PathBuf, holder: String },
    #[error("cannot open the lock file {path}: {source} (check that state_dir is writable by this user)")]
    Io { path: PathBuf, source: io::Error },
}

/// Metadata stored next to issued material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedMeta {
    pub name: String,
    pub domains: Vec<String>,
    pub key_type: KeyType,
    pub directory: String,
    pub order_url: String,
    pub issued_at: u64,
    pub not_before: u64,
    pub not_after: u64,
    pub serial: String,
    pub sha256: String,
    pub issuer: String,
    /// The ACME account (its URL) the certificate was ordered with, at `directory`. Only a
    /// certificate this account issued is named in a renewal's `replaces`; absent for a
    /// private CA and in records older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The ACME profile the CA issued it under (as its order said); absent for a private CA, a CA
    /// without profiles and in records older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// What a successful issuance produced.
pub struct Issued {
    pub leaf_pem: String,
    pub chain_pem: String,
    /// The private key; wiped from memory when dropped.
    pub key_pem: Zeroizing<String>,
    pub meta: IssuedMeta,
}

impl Issued {
    pub fn fullchain_pem(&self) -> String {
        format!("{}{}", self.leaf_pem, self.chain_pem)
    }
}

impl StateDir {
    /// Open (creating, 0700) the state directory.
    pub fn open(root: &Path) -> Result<Self, String> {
        create_private_dir(root)
            .map_err(|e| format!("cannot create state_dir {}: {e} (set state_dir to a directory this user may write)", root.display()))?;
        Ok(Self { root: root.to_owned(), records: None })
    }

    /// The state directory at `root` without creating anything (for read-only use).
    pub fn at(root: &Path) -> Self {
        Self { root: root.to_owned(), records: None }
    }

    /// This state directory, remembering the records of `certs/<name>/` between reads (for
    /// `regcert run`, which looks at every certificate on every check). The memory is trusted
    /// only within one pass (see [`StateDir::new_pass`]) and otherwise re-validated by the
    /// directory's stamp.
    pub fn remembering_records(mut self) -> Self {
        self.records = Some(Default::default());
        self
    }

    /// Start a new pass over the certificates: what is remembered is checked against each
    /// certificate directory again before it is used. The daemon calls this when a check starts
    /// and after its renewals, so that a record written by another process between checks (a
    /// one-shot `regcert renew`, which takes the same lock) is seen.
    pub fn new_pass(&self) {
        if let Some(r) = &self.records {
            r.pass.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The contents of `certs/<name>/<file>` (a small JSON record), or `None` when it is missing.
    pub(crate) fn read_record(&self, name: &str, file: &'static str) -> Option<std::sync::Arc<[u8]>> {
        match &self.records {
            Some(records) => records.read(&self.cert_dir(name), file),
            None => fs::read(self.cert_dir(name).join(file)).ok().map(Into::into),
        }
    }

    /// Write `certs/<name>/<file>` atomically (creating the directory, 0700) and forget what was
    /// remembered of the directory.
    pub(crate) fn write_record(&self, name: &str, file: &'static str, bytes: &[u8], spec: FileSpec) -> io::Result<()> {
        let dir = self.cert_dir(name);
        self.forget_records(name);
        create_private_dir(&dir).and_then(|()| write_atomic(&dir.join(file), bytes, spec))
    }

    /// Remove `certs/<name>/<file>` (missing is fine) and forget what was remembered of the directory.
    pub(crate) fn remove_record(&self, name: &str, file: &'static str) -> io::Result<()> {
        self.forget_records(name);
        match fs::remove_file(self.cert_dir(name).join(file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn forget_records(&self, name: &str) {
        if let Some(r) = &self.records {
            r.forget(&self.cert_dir(name));
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take the state lock without waiting; `who` is recorded for the process that finds it taken.
    pub fn lock(&self, who: &str) -> Result<StateLock, LockError> {
        let path = self.lock_path();
        let io_err = |source| LockError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "holder unknown".to_owned() } else { holder.to_owned() };
                return Err(LockError::Busy { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let record = format!("pid {}: {who}\n", std::process::id());
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(record.as_bytes())).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("regcert.lock")
    }

    /// What `regcert run` tells `regcert status` about itself.
    pub fn daemon_status_path(&self) -> PathBuf {
        self.root.join("daemon.json")
    }

    /// The daemon's memory of one certificate (backoff, last result, ARI window).
    pub fn schedule_path(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join(SCHEDULE)
    }

    /// Private CA `name`.
    pub fn ca_dir(&self, name: &str) -> PathBuf {
        self.root.join("ca").join(name)
    }

    /// Where the account for an ACME directory URL is kept (one account per directory).
    pub fn account_path(&self, directory_url: &str) -> PathBuf {
        let hash = hex::encode(&Sha256::digest(directory_url.as_bytes())[..8]);
        self.root.join("accounts").join(format!("{hash}.json"))
    }

    pub fn cert_dir(&self, name: &str) -> PathBuf {
        self.root.join("certs").join(name)
    }

    /// The last known-good pair (see `pair`): the pair a rollback puts back.
    pub fn previous_dir(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join("previous")
    }

    /// The journal of an install in progress (see `install`).
    pub fn install_journal_path(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join(INSTALL_JOURNAL)
    }

    /// An installed pair whose (disruptive) reload waits for `[certificate.reload] window`.
    pub fn pending_reload_path(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join(PENDING_RELOAD)
    }

    /// Remove the temp files a killed regcert left anywhere in state_dir (they may hold key
    /// material). Only with the lock held: another process's temp files are its work in progress.
    pub fn remove_stale_temps(&self) {
        // certs/<name>/previous and ca/<name>/offline are the deepest.
        sweep_temps(&self.root, 3);
    }

    /// [`StateDir::remove_stale_temps`] for one certificate's directory (and previous/).
    pub fn remove_stale_temps_of(&self, name: &str) {
        crate::fsutil::remove_stale_temps(&self.root);
        sweep_temps(&self.cert_dir(name), 1);
    }

    /// Keep newly issued material, so that a failed install never costs a second issuance.
    pub fn save_issued(&self, issued: &Issued) -> io::Result<()> {
        let dir = self.cert_dir(&issued.meta.name);
        self.forget_records(&issued.meta.name);
        create_private_dir(&dir)?;
        write_atomic(&dir.join("privkey.pem"), issued.key_pem.as_bytes(), FileSpec::PRIVATE)?;
        write_atomic(&dir.join("cert.pem"), issued.leaf_pem.as_bytes(), FileSpec::PUBLIC)?;
        write_atomic(&dir.join("chain.pem"), issued.chain_pem.as_bytes(), FileSpec::PUBLIC)?;
        write_atomic(&dir.join("fullchain.pem"), issued.fullchain_pem().as_bytes(), FileSpec::PUBLIC)?;
        let meta = serde_json::to_vec_pretty(&issued.meta).map_err(io::Error::other)?;
        self.write_record(&issued.meta.name, META, &meta, FileSpec::PUBLIC)
    }

    pub fn load_meta(&self, name: &str) -> Option<IssuedMeta> {
        serde_json::from_slice(&self.read_record(name, META)?).ok()
    }

    /// The record of the last issuance of `name` when it is the certificate whose SHA-256 is
    /// `sha256` (the installed one), not an older or another certificate's.
    pub fn meta_for(&self, name: &str, sha256: &str) -> Option<IssuedMeta> {
        self.load_meta(name).filter(|m| m.sha256 == sha256)
    }

    /// The last issued material for `name`, if complete.
    pub fn load_issued(&self, name: &str) -> Option<Issued> {
        let dir = self.cert_dir(name);
        let read = |f: &str| fs::read_to_string(dir.join(f)).ok();
        Some(Issued {
            leaf_pem: read("cert.pem")?,
            chain_pem: read("chain.pem")?,
            key_pem: self.load_key_pem(name)?,
            meta: self.load_meta(name)?,
        })
    }

    /// Remove the key of the last issuance (revoked as compromised: `reuse_key` must never
    /// pick it up again). Missing already is fine.
    pub fn forget_key(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.cert_dir(name).join("privkey.pem")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The key of the last issuance, for `reuse_key`.
    pub fn load_key_pem(&self, name: &str) -> Option<Zeroizing<String>> {
        fs::read_to_string(self.cert_dir(name).join("privkey.pem")).ok().map(Zeroizing::new)
    }
}

/// The record of the last issuance, in `certs/<name>/`.
const META: &str = "meta.json";
/// The journal of an install in progress, in `certs/<name>/`.
pub(crate) const INSTALL_JOURNAL: &str = "installing.json";
/// What the daemon remembers of a certificate (see `schedule`), in `certs/<name>/`.
pub(crate) const SCHEDULE: &str = "schedule.json";
/// A reload held for the reload window, in `certs/<name>/`.
pub(crate) const PENDING_RELOAD: &str = "reload-pending.json";

/// What the daemon remembers of the small records in each certificate directory.
///
/// A check with nothing due looks at every certificate's meta.json, reload-pending.json and
/// installing.json, mostly to find them missing: 500 certificates cost a few thousand failed
/// opens per check. Remembered here, a check costs one `stat` of each certificate directory.
/// Every record is written by rename or removed by unlink, both of which change the directory's
/// mtime, so an unchanged (inode, mtime) means unchanged records — unless the mtime is so recent
/// that a later write in the same clock tick could leave it unchanged; such a directory is read
/// again in the next pass (as git treats "racily clean" files).
#[derive(Debug, Default)]
struct Records {
    pass: std::sync::atomic::AtomicU64,
    dirs: std::sync::Mutex<std::collections::HashMap<PathBuf, DirRecords>>,
}

#[derive(Debug, Default)]
struct DirRecords {
    /// The pass in which `stamp` was last compared with the directory (`None`: never).
    pass: Option<u64>,
    /// (inode, mtime) of the directory; `None` when it does not exist.
    stamp: Option<(u64, std::time::SystemTime)>,
    /// The stamp is too recent to vouch for the contents in a later pass.
    racy: bool,
    files: std::collections::HashMap<&'static str, Option<std::sync::Arc<[u8]>>>,
}

/// How recent a directory mtime must be not to be trusted in a later pass (well above the
/// filesystem timestamp granularity).
const RACY: std::time::Duration = std::time::Duration::from_secs(2);

impl Records {
    fn read(&self, dir: &Path, file: &'static str) -> Option<std::sync::Arc<[u8]>> {
        let pass = self.pass.load(std::sync::atomic::Ordering::Relaxed);
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = dirs.entry(dir.to_owned()).or_default();
        if entry.pass != Some(pass) {
            let stamp = dir_stamp(dir);
            if entry.racy || stamp != entry.stamp {
                entry.files.clear();
            }
            entry.racy = stamp.is_some_and(|(_, mtime)| mtime.elapsed().map_or(true, |age| age < RACY));
            entry.stamp = stamp;
            entry.pass = Some(pass);
        }
        if let Some(bytes) = entry.files.get(file) {
            return bytes.clone();
        }
        let bytes: Option<std::sync::Arc<[u8]>> = match entry.stamp {
            None => None,
            Some(_) => fs::read(dir.join(file)).ok().map(Into::into),
        };
        entry.files.insert(file, bytes.clone());
        bytes
    }

    fn forget(&self, dir: &Path) {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
    }
}

fn dir_stamp(dir: &Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir).ok()?;
    Some((meta.ino(), meta.modified().ok()?))
}

/// Temp files left in `dir` and its subdirectories down to `depth` levels.
fn sweep_temps(dir: &Path, depth: u8) {
    crate::fsutil::remove_stale_temps(dir);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        // file_type() does not follow links: state_dir's own directories only.
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            sweep_temps(&e.path(), depth - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_reports_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let held = state.lock("regcert renew").unwrap();
        let err = state.lock("regcert status").unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}: regcert renew", std::process::id())), "{err}");
        drop(held);
        assert!(state.lock("again").is_ok());
    }

    /// `regcert run` remembers the records of certificate directories; a record written by
    /// another process (a one-shot `renew`) is seen in the next pass, a write of its own at once.
    #[test]
    fn remembered_records_follow_writes_by_this_and_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = StateDir::open(dir.path()).unwrap().remembering_records();
        let other = StateDir::at(dir.path());
        let read = |s: &StateDir| s.read_record("a", PENDING_RELOAD).map(|b| b.to_vec());
        assert_eq!(read(&daemon), None);
        other.write_record("a", PENDING_RELOAD, b"one", FileSpec::PRIVATE).unwrap();
        daemon.new_pass();
        assert_eq!(read(&daemon).as_deref(), Some(&b"one"[..]));
        daemon.write_record("a", PENDING_RELOAD, b"two", FileSpec::PRIVATE).unwrap();
        assert_eq!(read(&daemon).as_deref(), Some(&b"two"[..]), "its own write is seen in the same pass");
        other.remove_record("a", PENDING_RELOAD).unwrap();
        daemon.new_pass();
        assert_eq!(read(&daemon), None);
    }

    /// A write in the same clock tick as the last look leaves the directory's mtime unchanged;
    /// a recent mtime is therefore never trusted in a later pass.
    #[test]
    fn a_write_that_leaves_the_directory_mtime_unchanged_is_seen_when_the_mtime_was_recent() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = StateDir::open(dir.path()).unwrap().remembering_records();
        let other = StateDir::at(dir.path());
        other.write_record("a", META, b"{}", FileSpec::PUBLIC).unwrap();
        let cert_dir = other.cert_dir("a");
        let mtime = fs::metadata(&cert_dir).unwrap().modified().unwrap();
        assert!(daemon.read_record("a", PENDING_RELOAD).is_none());
        other.write_record("a", PENDING_RELOAD, b"late", FileSpec::PRIVATE).unwrap();
        File::open(&cert_dir).unwrap().set_modified(mtime).unwrap();
        daemon.new_pass();
        assert_eq!(daemon.read_record("a", PENDING_RELOAD).as_deref(), Some(&b"late"[..]));
    }

    #[test]
    fn account_paths_differ_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_ne!(state.account_path("https://a/dir"), state.account_path("https://b/dir"));
        assert_eq!(state.account_path("https://a/dir"), state.account_path("https://a/dir"));
    }
}
