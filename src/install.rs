//! Step two of the pipeline: put fullchain and key into the registry's certificate directory.
//!
//! The install dir receives only the two configured files, and only ever a [`MatchedPair`].
//! Before they are replaced, the installed pair becomes the known-good pair in state_dir (when
//! it is one), so that a rollback can put it back. An install and its delivery are journaled:
//! a run that dies between the two renames, or before the reload and the verification, leaves
//! the journal behind, and the next run puts the known-good pair back and delivers again.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::certinfo::{LeafInfo, parse_pem_certs};
use crate::config::{CertificateConfig, InstallConfig};
use crate::fsutil::{
    FileSpec, Staged, UNTRUSTED_READ_CAP, os_error, read_untrusted, remove_stale_temps, stage, write_advice, write_atomic, write_in_place,
};
use crate::keys::spki_of_key_pem;
use crate::pair::{MatchedPair, keep_known_good, load_known_good};
use crate::state::{INSTALL_JOURNAL, StateDir};
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

/// Install `new` for `cert`, keeping the pair it replaces as the known-good pair when it is
/// one. Returns why the replaced pair was not kept (`None`: kept, or nothing was installed).
///
/// Both files are written in full next to their final names before either is renamed, so a
/// full disk or a read-only dir fails with the install dir as it was. Only a crash between
/// the two renames can leave a key and a certificate that do not belong together; the journal
/// written before the first rename makes the next run repair that ([`recover`]). Paths in
/// `in_place` are bind-mounted into a container one by one and are rewritten in place instead
/// of replaced. The journal stays until [`finish`] is called after the delivery.
pub fn install(state: &StateDir, cert: &CertificateConfig, new: &MatchedPair, in_place: &[PathBuf]) -> Result<Option<String>, String> {
    remove_stale_temps(&cert.install.dir);
    // A pair still waiting for its reload (held for the window) was never served: the pair the
    // registry serves stays the known-good one.
    let held = state.read_record(&cert.name, crate::state::PENDING_RELOAD).is_some();
    let unkept = if held { None } else { keep_installed(state, cert, new)? };
    begin(state, cert, new)?;
    if let Err(e) = write_pair(cert, new, in_place) {
        if e.as_before {
            finish(state, cert);
        }
        return Err(e.message);
    }
    tracing::info!(cert = %cert.name, fullchain = %cert.install.fullchain_path().display(), key = %cert.install.key_path().display(), "installed");
    Ok(unkept)
}

/// Put a known-good pair back (a rollback, or the repair after an interrupted install).
pub fn restore(cert: &CertificateConfig, good: &MatchedPair, in_place: &[PathBuf]) -> Result<(), String> {
    write_pair(cert, good, in_place).map_err(|e| e.message)?;
    tracing::warn!(cert = %cert.name, fullchain = %cert.install.fullchain_path().display(), serial = %good.leaf().serial, "known-good pair installed again");
    Ok(())
}

/// The journal of an install in progress: written before the first rename, removed by
/// [`finish`] once the delivery (reload → verify → rollback) is over.
fn begin(state: &StateDir, cert: &CertificateConfig, new: &MatchedPair) -> Result<(), String> {
    let path = state.install_journal_path(&cert.name);
    let record = serde_json::json!({
        "pid": std::process::id(),
        "started": crate::certinfo::unix(SystemTime::now()),
        "installing": new.leaf().sha256,
    });
    state
        .write_record(&cert.name, INSTALL_JOURNAL, record.to_string().as_bytes(), FileSpec::PRIVATE)
        .map_err(|e| format!("cannot write the install journal {}: {e}; nothing was installed", path.display()))
}

/// The install and its delivery are over (whatever their outcome): remove the journal.
pub fn finish(state: &StateDir, cert: &CertificateConfig) {
    if let Err(e) = state.remove_record(&cert.name, INSTALL_JOURNAL) {
        // Harmless but for a second delivery at the next run.
        let path = state.install_journal_path(&cert.name);
        tracing::warn!(cert = %cert.name, path = %path.display(), error = %e, "cannot remove the install journal");
    }
}

/// Did a run die during an install or its delivery (the journal is still there)?
pub fn interrupted(state: &StateDir, name: &str) -> bool {
    state.read_record(name, INSTALL_JOURNAL).is_some()
}

/// After an interrupted install: put the known-good pair back unless it is what is installed,
/// so that the install dir holds a matching pair again whatever the dead run had written. The
/// journal stays: the renewal that follows installs (the kept certificate, without a new
/// order) and delivers again, and [`finish`] removes it.
pub fn recover(state: &StateDir, cert: &CertificateConfig, in_place: &[PathBuf]) -> Result<(), String> {
    remove_stale_temps(&cert.install.dir);
    let good = match load_known_good(state, &cert.name, SystemTime::now()) {
        Ok(Some(good)) => good,
        Ok(None) => {
            tracing::warn!(cert = %cert.name, "an earlier install was interrupted; no known-good pair is kept, so a new one is installed");
            return Ok(());
        }
        Err(why) => {
            tracing::warn!(cert = %cert.name, %why, "an earlier install was interrupted; the known-good pair kept is not usable, so a new one is installed");
            return Ok(());
        }
    };
    let (chain, key) = read_files(&cert.install).unwrap_or_default();
    if chain.as_deref() == Some(good.fullchain()) && key.as_deref().map(|k| k.as_slice()) == Some(good.key()) {
        tracing::warn!(cert = %cert.name, "an earlier install was interrupted; the known-good pair is installed");
        return Ok(());
    }
    tracing::warn!(cert = %cert.name, "an earlier install was interrupted; putting the known-good pair back");
    restore(cert, &good, in_place)
        .map_err(|e| format!("an earlier install was interrupted, and the known-good pair cannot be put back: {e}"))
}

/// Keep the installed pair as the known-good pair when it is one (and not `new` itself).
/// Returns why it was not kept; `None` when it was, or when nothing is installed.
///
/// The install dir is writable by the registry's side, so what is read there is never read
/// through a link (symbolic or hard), and only regular files of a sane size are read. Only a
/// [`MatchedPair`] reaches state_dir: a link to another secret, a FIFO, a device, a key that does
/// not belong to its certificate, an incomplete chain or an expired certificate is logged and
/// replaced by the install, and the known-good pair kept earlier stays as it is.
fn keep_installed(state: &StateDir, cert: &CertificateConfig, new: &MatchedPair) -> Result<Option<String>, String> {
    let read = |p: &Path| read_untrusted(p, UNTRUSTED_READ_CAP);
    let (chain, key) = match (read(&cert.install.fullchain_path()), read(&cert.install.key_path())) {
        (Ok(None), Ok(None)) => return Ok(None),
        (Ok(Some(chain)), Ok(Some(key))) => (chain, Zeroizing::new(key)),
        (Err(e), _) | (_, Err(e)) => return Ok(Some(not_kept(cert, e))),
        (Ok(_), Ok(_)) => return Ok(Some(not_kept(cert, "only one of the two files is installed".into()))),
    };
    match MatchedPair::check(chain, key, SystemTime::now()) {
        Ok(pair) if pair.leaf().sha256 == new.leaf().sha256 => Ok(None),
        Ok(pair) => keep_known_good(state, &cert.name, &pair).map(|()| None),
        Err(why) => Ok(Some(not_kept(cert, why))),
    }
}

fn not_kept(cert: &CertificateConfig, why: String) -> String {
    tracing::warn!(cert = %cert.name, "the installed pair is not backed up: {why}; the known-good pair kept earlier stays");
    why
}

/// Why the install dir could not be written, and whether it is as it was before.
struct Unwritten {
    message: String,
    /// The install dir holds what it held before (nothing changed, or the change was undone).
    as_before: bool,
}

/// One of the two files of an install.
struct Target<'a> {
    path: PathBuf,
    data: &'a [u8],
    spec: FileSpec,
    in_place: bool,
    /// What the file held before, to put it back: `Ok(None)` when it did not exist.
    old: Result<Option<Zeroizing<Vec<u8>>>, String>,
}

impl Target<'_> {
    fn stage(&self) -> Result<Option<Staged>, std::io::Error> {
        if self.in_place { Ok(None) } else { stage(&self.path, self.data, self.spec).map(Some) }
    }

    fn write(&self, data: &[u8]) -> std::io::Result<()> {
        if self.in_place { write_in_place(&self.path, data, self.spec) } else { write_atomic(&self.path, data, self.spec) }
    }

    /// Put back what the file held before.
    fn undo(&self) -> Result<(), String> {
        let what = |e: std::io::Error| format!("{}: {e}", self.path.display());
        match &self.old {
            Ok(Some(old)) => self.write(old).map_err(what),
            Ok(None) => fs::remove_file(&self.path)
                .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                .map_err(what),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Write `pair` into the install dir: key first, then fullchain, both staged before either
/// replaces anything. A failure after a file changed puts the old contents back, and a
/// failure of that is reported too, never ignored.
fn write_pair(cert: &CertificateConfig, pair: &MatchedPair, in_place: &[PathBuf]) -> Result<(), Unwritten> {
    let (chain_spec, key_spec) = file_specs(&cert.install);
    let target = |path: PathBuf, data, spec| {
        let old = read_untrusted(&path, UNTRUSTED_READ_CAP).map(|o| o.map(Zeroizing::new));
        Target { in_place: in_place.contains(&path), path, data, spec, old }
    };
    let targets =
        [target(cert.install.key_path(), pair.key(), key_spec), target(cert.install.fullchain_path(), pair.fullchain(), chain_spec)];
    let failed = |path: &Path, e: &std::io::Error| {
        format!("cannot write {}: {} ({})", path.display(), os_error(e), write_advice(&cert.install.dir, e))
    };
    let mut staged = Vec::with_capacity(2);
    for t in &targets {
        match t.stage() {
            Ok(s) => staged.push(s),
            // The temp files staged so far are removed when dropped.
            Err(e) => {
                return Err(Unwritten { message: format!("{}; the installed pair was not changed", failed(&t.path, &e)), as_before: true });
            }
        }
    }
    for (i, (t, s)) in targets.iter().zip(staged).enumerate() {
        let result = match s {
            Some(s) => s.commit(),
            None => t.write(t.data),
        };
        let Err(e) = result else { continue };
        // A rename that failed changed nothing; an in-place write may have changed its file.
        let changed = if t.in_place { &targets[..=i] } else { &targets[..i] };
        let undone: Vec<String> = changed.iter().filter_map(|t| t.undo().err()).collect();
        let message = failed(&t.path, &e);
        return Err(if undone.is_empty() {
            Unwritten { message: format!("{message}; the installed pair was put back as it was"), as_before: true }
        } else {
            Unwritten {
                message: format!(
                    "{message}; putting the installed pair back failed too ({}): the next run puts the known-good pair back",
                    undone.join("; ")
                ),
                as_before: false,
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair::tests::{TestCa, matched};
    use std::os::unix::fs::MetadataExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        state: StateDir,
        cert: CertificateConfig,
        ca: TestCa,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let install = dir.path().join("install");
        fs::create_dir(&install).unwrap();
        let text = format!("name = \"r\"\ndomains = [\"r.example\"]\n[install]\ndir = \"{}\"\n", install.display());
        let cert: CertificateConfig = toml::from_str(&text).unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        Fixture { _dir: dir, state, cert, ca: TestCa::new() }
    }

    impl Fixture {
        fn installed(&self) -> (Vec<u8>, Vec<u8>) {
            (fs::read(self.cert.install.fullchain_path()).unwrap(), fs::read(self.cert.install.key_path()).unwrap())
        }
        fn known_good(&self) -> Option<Vec<u8>> {
            load_known_good(&self.state, "r", SystemTime::now()).unwrap().map(|p| p.fullchain().to_vec())
        }
        fn install_dir_files(&self) -> Vec<String> {
            let mut names: Vec<String> =
                fs::read_dir(&self.cert.install.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        }
    }

    fn bytes(p: &(String, String)) -> (Vec<u8>, Vec<u8>) {
        (p.0.clone().into_bytes(), p.1.clone().into_bytes())
    }

    #[test]
    fn the_replaced_pair_becomes_the_known_good_one_only_when_it_is_one() {
        let f = fixture();
        let (a, b, c) = (f.ca.pair(30), f.ca.pair(60), f.ca.pair(90));
        assert_eq!(install(&f.state, &f.cert, &matched(&a), &[]).unwrap(), None, "nothing was installed before");
        assert_eq!(f.known_good(), None);
        install(&f.state, &f.cert, &matched(&b), &[]).unwrap();
        assert_eq!(f.known_good(), Some(a.0.clone().into_bytes()));
        assert_eq!(f.installed(), bytes(&b));
        // Half of a pair (someone copied a key by hand): not kept; the known-good pair stays.
        fs::write(f.cert.install.key_path(), &c.1).unwrap();
        let unkept = install(&f.state, &f.cert, &matched(&c), &[]).unwrap();
        assert_eq!(unkept.as_deref(), Some("the key does not belong to the certificate"));
        assert_eq!(f.known_good(), Some(a.0.clone().into_bytes()));
        assert_eq!(f.installed(), bytes(&c));
        // Installing the installed pair again does not make it its own known-good pair.
        install(&f.state, &f.cert, &matched(&c), &[]).unwrap();
        assert_eq!(f.known_good(), Some(a.0.clone().into_bytes()));
        assert!(interrupted(&f.state, "r"), "the journal stays until the delivery is over");
        finish(&f.state, &f.cert);
        assert!(!interrupted(&f.state, "r"));
        assert_eq!(f.install_dir_files(), ["domain.crt", "domain.key"], "no temp file is left");
    }

    #[test]
    fn a_crash_between_the_two_renames_is_repaired_by_the_next_run() {
        let f = fixture();
        let (a, b) = (f.ca.pair(30), f.ca.pair(60));
        install(&f.state, &f.cert, &matched(&a), &[]).unwrap();
        finish(&f.state, &f.cert);
        assert!(!interrupted(&f.state, "r"));
        // The run installing `b` dies after the key's rename, before the fullchain's: only a
        // hand-made state can stop a run exactly there.
        install(&f.state, &f.cert, &matched(&b), &[]).unwrap();
        fs::write(f.cert.install.fullchain_path(), &a.0).unwrap();
        assert!(interrupted(&f.state, "r"));
        assert!(!read_installed(&f.cert.install).unwrap().unwrap().key_matches);

        recover(&f.state, &f.cert, &[]).unwrap();
        assert_eq!(f.installed(), bytes(&a), "the known-good pair is back");
        assert!(interrupted(&f.state, "r"), "the journal stays until the delivery that follows is over");
        finish(&f.state, &f.cert);
        assert!(!interrupted(&f.state, "r"));
    }

    #[test]
    fn a_failed_install_puts_the_old_key_back_and_leaves_no_temp_file() {
        let f = fixture();
        let (a, b) = (f.ca.pair(30), f.ca.pair(60));
        install(&f.state, &f.cert, &matched(&a), &[]).unwrap();
        // The fullchain cannot be replaced (a directory is in its place): the key renamed
        // before it must be put back.
        let chain = f.cert.install.fullchain_path();
        fs::remove_file(&chain).unwrap();
        fs::create_dir(&chain).unwrap();
        fs::write(chain.join("x"), "").unwrap();
        let e = install(&f.state, &f.cert, &matched(&b), &[]).unwrap_err();
        assert!(e.starts_with(&format!("cannot write {}: ", chain.display())), "{e}");
        assert!(e.ends_with("; the installed pair was put back as it was"), "{e}");
        assert_eq!(fs::read(f.cert.install.key_path()).unwrap(), a.1.as_bytes());
        assert_eq!(f.install_dir_files(), ["domain.crt", "domain.key"]);
        assert!(!interrupted(&f.state, "r"), "nothing to repair");
    }

    #[test]
    fn an_undo_that_fails_is_reported_and_left_to_the_next_run() {
        let f = fixture();
        let (a, b, c) = (f.ca.pair(30), f.ca.pair(60), f.ca.pair(90));
        install(&f.state, &f.cert, &matched(&a), &[]).unwrap();
        install(&f.state, &f.cert, &matched(&b), &[]).unwrap();
        finish(&f.state, &f.cert);
        // The fullchain is rewritten in place (a single-file bind mount) and that fails; what
        // was there cannot be put back (it was no regular file): only a hand-made state gets here.
        let chain = f.cert.install.fullchain_path();
        fs::remove_file(&chain).unwrap();
        fs::create_dir(&chain).unwrap();
        let e = install(&f.state, &f.cert, &matched(&c), std::slice::from_ref(&chain)).unwrap_err();
        assert!(e.contains("; putting the installed pair back failed too ("), "{e}");
        assert!(e.ends_with("): the next run puts the known-good pair back"), "{e}");
        assert_eq!(fs::read(f.cert.install.key_path()).unwrap(), b.1.as_bytes(), "the key was put back");
        assert!(interrupted(&f.state, "r"), "the journal stays for the next run");
        // The next run: the known-good pair (`a`, kept when `b` was installed) goes back once
        // the fullchain can be written again.
        fs::remove_dir(&chain).unwrap();
        recover(&f.state, &f.cert, &[]).unwrap();
        assert_eq!(f.installed(), bytes(&a));
    }

    #[test]
    fn in_place_files_keep_their_inode_through_install_and_recovery() {
        let f = fixture();
        let (a, b) = (f.ca.pair(30), f.ca.pair(60));
        install(&f.state, &f.cert, &matched(&a), &[]).unwrap();
        let paths = [f.cert.install.fullchain_path(), f.cert.install.key_path()];
        let inodes = || paths.iter().map(|p| fs::metadata(p).unwrap().ino()).collect::<Vec<_>>();
        let before = inodes();
        install(&f.state, &f.cert, &matched(&b), &paths).unwrap();
        assert_eq!((inodes(), f.installed()), (before.clone(), bytes(&b)));
        recover(&f.state, &f.cert, &paths).unwrap();
        assert_eq!((inodes(), f.installed()), (before, bytes(&a)));
    }
}
