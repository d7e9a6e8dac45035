//! Step two of the pipeline: put fullchain and key into the registry's certificate directory.
//!
//! The install dir receives only the two configured files. Before they are replaced, the pair
//! that was there is copied to `state_dir/certs/<name>/previous/`, so a later step (or an
//! operator) can put it back.

use std::fs;
use std::path::{Path, PathBuf};

use crate::certinfo::{LeafInfo, parse_pem_certs};
use crate::config::{CertificateConfig, InstallConfig};
use crate::fsutil::{FileSpec, UNTRUSTED_READ_CAP, create_private_dir, read_untrusted, remove_stale_temps, write_atomic, write_in_place};
use crate::keys::spki_of_key_pem;
use crate::state::StateDir;
use zeroize::Zeroizing;

/// What the install dir holds now.
#[derive(Debug, Clone)]
pub struct Installed {
    pub leaf: LeafInfo,
    /// The leaf as DER (to name it in `replaces`, or ask the CA for its renewal window).
    pub leaf_der: rustls_pki_types::CertificateDer<'static>,
    /// Certificates after the leaf in the installed fullchain.
    pub intermediates: usize,
    /// Does the installed key belong to the installed leaf?
    pub key_matches: bool,
}

/// Read the installed pair: `Ok(None)` when no fullchain is installed yet.
///
/// The install dir is shared with the registry and is not trusted input: links are not
/// followed, and only regular files of a sane size are read (see [`read_untrusted`]); anything
/// else is an error for this certificate, which makes it due.
///
/// Parsed results are remembered per file (keyed by path, inode, size and mtime of both files):
/// the daemon looks at every certificate on every check, and parsing keys is the expensive part.
pub fn read_installed(install: &InstallConfig) -> Result<Option<Installed>, String> {
    let path = install.fullchain_path();
    let chain_meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the installed certificate {}: {e}", path.display())),
    };
    let stamp = (file_stamp(Some(&chain_meta)), file_stamp(fs::symlink_metadata(install.key_path()).ok().as_ref()));
    if let Some(hit) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&path).filter(|(s, _)| *s == stamp) {
        return Ok(Some(hit.1.clone()));
    }
    let (Some(bytes), key) = read_files(install)? else { return Ok(None) };
    let installed = inspect_pair(&bytes, key.as_deref().and_then(|k| std::str::from_utf8(k).ok()))
        .map_err(|e| format!("installed certificate {} {e}", path.display()))?;
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(path, (stamp, installed.clone()));
    Ok(Some(installed))
}

/// Fullchain and key as read from the install dir; either may be missing.
type RawPair = (Option<Vec<u8>>, Option<Zeroizing<Vec<u8>>>);

/// The installed fullchain and key as they are, read as untrusted files.
fn read_files(install: &InstallConfig) -> Result<RawPair, String> {
    let chain = read_untrusted(&install.fullchain_path(), UNTRUSTED_READ_CAP)?;
    let key = read_untrusted(&install.key_path(), UNTRUSTED_READ_CAP)?.map(Zeroizing::new);
    Ok((chain, key))
}

/// (inode, size, mtime) of a file (not following a link), or None when it is missing.
type Stamp = Option<(u64, u64, std::time::SystemTime)>;
type Cache = std::sync::Mutex<std::collections::HashMap<PathBuf, ((Stamp, Stamp), Installed)>>;

fn file_stamp(meta: Option<&fs::Metadata>) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    meta.and_then(|m| Some((m.ino(), m.len(), m.modified().ok()?)))
}

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Facts about a fullchain PEM and (if given) whether `key_pem` is its key.
pub fn inspect_pair(fullchain: &[u8], key_pem: Option<&str>) -> Result<Installed, String> {
    let chain = parse_pem_certs(fullchain)?;
    let leaf = LeafInfo::parse(&chain[0])?;
    let key_matches = key_pem.and_then(spki_of_key_pem).is_some_and(|spki| spki == leaf.spki);
    let intermediates = chain.len() - 1;
    let leaf_der = chain.into_iter().next().ok_or("contains no certificate")?;
    Ok(Installed { leaf, leaf_der, intermediates, key_matches })
}

/// Owner and modes for the two files, from `[certificate.install]` (validated at load time).
fn file_specs(install: &InstallConfig) -> (FileSpec, FileSpec) {
    let uid = install.owner.as_deref().and_then(crate::fsutil::lookup_user);
    let gid = install.group.as_deref().and_then(crate::fsutil::lookup_group);
    (FileSpec { mode: install.mode.bits(), uid, gid }, FileSpec { mode: install.key_mode.bits(), uid, gid })
}

/// Install `fullchain` and `key` for `cert`, keeping the pair they replace as the backup.
///
/// Key first, then fullchain: two renames cannot be one atomic step, but the registry reads
/// both only when it (re)starts, which happens after this returns. If the fullchain cannot be
/// written, the old key is put back so the directory holds a matching pair again; if the
/// process dies in between, the renewal policy sees a key that does not match its certificate
/// and renews. Paths in `in_place` are bind-mounted into a container one by one and are
/// rewritten in place instead of replaced.
pub fn install(state: &StateDir, cert: &CertificateConfig, fullchain: &[u8], key: &[u8], in_place: &[PathBuf]) -> Result<(), String> {
    remove_stale_temps(&cert.install.dir);
    let old_key = backup_current(state, cert)?;
    write_pair(cert, fullchain, key, old_key.as_ref().map(|k| k.as_slice()), in_place)?;
    tracing::info!(cert = %cert.name, fullchain = %cert.install.fullchain_path().display(), key = %cert.install.key_path().display(), "installed");
    Ok(())
}

/// The pair kept in state_dir by the last install, if both files are there.
pub fn previous_pair(state: &StateDir, cert: &CertificateConfig) -> Option<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let dir = state.previous_dir(&cert.name);
    Some((fs::read(dir.join("fullchain.pem")).ok()?, fs::read(dir.join("privkey.pem")).ok().map(Zeroizing::new)?))
}

/// Put the previous pair back (the backup itself stays as it is).
pub fn restore_previous(cert: &CertificateConfig, previous: &(Vec<u8>, Zeroizing<Vec<u8>>), in_place: &[PathBuf]) -> Result<(), String> {
    let current_key = read_untrusted(&cert.install.key_path(), UNTRUSTED_READ_CAP).ok().flatten().map(Zeroizing::new);
    write_pair(cert, &previous.0, &previous.1, current_key.as_ref().map(|k| k.as_slice()), in_place)?;
    tracing::warn!(cert = %cert.name, fullchain = %cert.install.fullchain_path().display(), "previous certificate restored");
    Ok(())
}

fn write_pair(cert: &CertificateConfig, fullchain: &[u8], key: &[u8], old_key: Option<&[u8]>, in_place: &[PathBuf]) -> Result<(), String> {
    let (chain_spec, key_spec) = file_specs(&cert.install);
    let (chain_path, key_path) = (cert.install.fullchain_path(), cert.install.key_path());
    let write = |path: &Path, data: &[u8], spec| {
        if in_place.iter().any(|p| p == path) { write_in_place(path, data, spec) } else { write_atomic(path, data, spec) }
    };
    write(&key_path, key, key_spec).map_err(|e| write_error(&key_path, e))?;
    if let Err(e) = write(&chain_path, fullchain, chain_spec) {
        // Put the old key back so the directory holds a matching pair again.
        match old_key {
            Some(old) => {
                let _ = write(&key_path, old, key_spec);
            }
            None => {
                let _ = fs::remove_file(&key_path);
            }
        }
        return Err(write_error(&chain_path, e));
    }
    Ok(())
}

fn write_error(path: &Path, e: std::io::Error) -> String {
    format!("cannot write {}: {e} (check [certificate.install] dir and its permissions)", path.display())
}

/// Copy the installed pair into state_dir (`previous/`), and return the installed key to put
/// back if the install fails half-way.
///
/// The install dir is writable by the registry's side, so what is read there is never read
/// through a link (symbolic or hard), and only regular files of a sane size are read: a link to
/// another secret, a FIFO or a device never reaches state_dir (nor is it put back), it is just
/// replaced by the install. A complete pair whose key belongs to its leaf is the backup a
/// rollback may restore. Two regular files that are not such a pair (a hand-made or broken
/// pair) are kept for the operator only when state_dir holds no good pair yet — a good backup
/// is never overwritten by them — and a rollback never restores them (it checks the pair).
fn backup_current(state: &StateDir, cert: &CertificateConfig) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let install = &cert.install;
    let not_kept = |why: String| tracing::warn!(cert = %cert.name, "the installed pair is not backed up: {why}");
    let key = match read_untrusted(&install.key_path(), UNTRUSTED_READ_CAP) {
        Ok(key) => key.map(Zeroizing::new),
        Err(e) => {
            not_kept(e);
            return Ok(None);
        }
    };
    let chain = match read_untrusted(&install.fullchain_path(), UNTRUSTED_READ_CAP) {
        Ok(chain) => chain,
        Err(e) => {
            not_kept(e);
            return Ok(key);
        }
    };
    let (Some(chain), Some(key)) = (chain, key) else {
        return Ok(None);
    };
    let matching = inspect_pair(&chain, std::str::from_utf8(&key).ok()).is_ok_and(|p| p.key_matches);
    if !matching {
        let good_backup =
            previous_pair(state, cert).is_some_and(|(c, k)| inspect_pair(&c, std::str::from_utf8(&k).ok()).is_ok_and(|p| p.key_matches));
        if good_backup {
            not_kept("it is not a matching pair, and the backup holds a good one".into());
            return Ok(Some(key));
        }
        tracing::warn!(cert = %cert.name, "the installed files are not a matching pair: kept in state_dir for reference, never restored");
    }
    let dir = state.previous_dir(&cert.name);
    let save = || -> std::io::Result<()> {
        create_private_dir(&dir)?;
        write_atomic(&dir.join("privkey.pem"), &key, FileSpec::PRIVATE)?;
        write_atomic(&dir.join("fullchain.pem"), &chain, FileSpec::PUBLIC)
    };
    save().map_err(|e| format!("cannot back up the installed pair to {}: {e}; nothing was changed", dir.display()))?;
    Ok(Some(key))
}
