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
        Ok(Self { root: root.to_owned() })
    }

    /// The state directory at `root` without creating anything (for read-only use).
    pub fn at(root: &Path) -> Self {
        Self { root: root.to_owned() }
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
        self.cert_dir(name).join("schedule.json")
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
        self.cert_dir(name).join("installing.json")
    }

    /// An installed pair whose (disruptive) reload waits for `[certificate.reload] window`.
    pub fn pending_reload_path(&self, name: &str) -> PathBuf {
        self.cert_dir(name).join("reload-pending.json")
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
        create_private_dir(&dir)?;
        write_atomic(&dir.join("privkey.pem"), issued.key_pem.as_bytes(), FileSpec::PRIVATE)?;
        write_atomic(&dir.join("cert.pem"), issued.leaf_pem.as_bytes(), FileSpec::PUBLIC)?;
        write_atomic(&dir.join("chain.pem"), issued.chain_pem.as_bytes(), FileSpec::PUBLIC)?;
        write_atomic(&dir.join("fullchain.pem"), issued.fullchain_pem().as_bytes(), FileSpec::PUBLIC)?;
        let meta = serde_json::to_vec_pretty(&issued.meta).map_err(io::Error::other)?;
        write_atomic(&dir.join("meta.json"), &meta, FileSpec::PUBLIC)
    }

    pub fn load_meta(&self, name: &str) -> Option<IssuedMeta> {
        let bytes = fs::read(self.cert_dir(name).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
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

    #[test]
    fn account_paths_differ_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_ne!(state.account_path("https://a/dir"), state.account_path("https://b/dir"));
        assert_eq!(state.account_path("https://a/dir"), state.account_path("https://a/dir"));
    }
}
