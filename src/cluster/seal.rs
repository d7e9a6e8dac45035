//! Sealing fleet secrets for etcd: private keys and the ACME account are encrypted with the
//! fleet's secret key ([cluster] secret_key_file, the same file on every node) before they leave
//! the node, so etcd, its backups and anyone with `etcdctl get` only ever see ciphertext.
//!
//! A sealed blob is `1 ‖ 12-byte nonce ‖ AES-256-GCM ciphertext and tag`. The authenticated data
//! is the version byte and a caller-given context (the etcd key the blob is stored under): a blob
//! copied to another key, or given a different version byte, does not open.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The config key every load error names, so the operator knows which setting points at the file.
const CONFIG_KEY: &str = "[cluster] secret_key_file";
/// Raw key length: AES-256.
const KEY_LEN: usize = 32;
/// The first byte of every sealed blob. A later format (another cipher, key rotation with a key
/// id) gets a new number, and this code refuses blobs it does not know instead of misreading them.
const VERSION: u8 = 1;
/// Version byte plus nonce: everything before the ciphertext.
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// AES-GCM's tag.
const TAG_LEN: usize = 16;
/// A key file is one line of 44 base64 characters; anything much larger is not one, and is not
/// read whole (it could be a log file or a device given by mistake).
const KEY_FILE_CAP: u64 = 1024;

/// The fleet's secret key ([cluster] secret_key_file): 32 bytes, AES-256-GCM.
///
/// Only aws-lc's key schedule holds the key (its context is cleansed when freed); the raw bytes
/// live in zeroized buffers just long enough to build it and the fingerprint.
pub struct SecretKey {
    key: RandomizedNonceKey,
    fingerprint: String,
}

/// Shows the public fingerprint only: a key printed with `{:?}` into a log must not leak.
impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Read the key file: one line, base64 (standard) of exactly 32 bytes; surrounding whitespace ok.
    /// A file that group or others may read is refused: it holds the key to every private key in
    /// etcd, so it is treated like one.
    pub fn load(path: &Path) -> Result<SecretKey, String> {
        let at = format!("{CONFIG_KEY} {}", path.display());
        let new_key = format!("create one with `regcert cluster new-key {}` and copy it to every node", path.display());
        let mut file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(format!("{at} does not exist: {new_key}")),
            Err(e) => return Err(format!("{at} cannot be read: {e} (make it readable by the user regcert runs as, mode 600)")),
        };
        // Mode and type from the open file, not the path: what is checked is what is read.
        let meta = file.metadata().map_err(|e| format!("{at} cannot be read: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{at} is not a regular file: point {CONFIG_KEY} at the key file ({new_key})"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{at} can be read or written by group or others (mode {mode:04o}): it must be private to regcert's user; run `chmod 600 {}`",
                path.display()
            ));
        }
        // Room for the whole cap up front: a growing Vec would leave copies of the key in freed memory.
        let mut text = Zeroizing::new(Vec::with_capacity(KEY_FILE_CAP as usize + 1));
        (&mut file).take(KEY_FILE_CAP + 1).read_to_end(&mut text).map_err(|e| format!("{at} cannot be read: {e}"))?;
        // The errors below describe the content (length, not base64) but never quote it: a key
        // file with a stray character is still mostly the key.
        let not_a_key = |what: String| {
            format!("{at} is not a secret key: {what}; it must hold one line, the base64 of {KEY_LEN} random bytes ({new_key})")
        };
        if text.len() as u64 > KEY_FILE_CAP {
            return Err(not_a_key(format!("it is more than {KEY_FILE_CAP} bytes long")));
        }
        let trimmed = text.trim_ascii();
        // base64's error names the offending character; it is not passed on, see above.
        let raw = Zeroizing::new(STANDARD.decode(trimmed).map_err(|_| not_a_key("it is not base64".to_owned()))?);
        if raw.len() != KEY_LEN {
            return Err(not_a_key(format!("it decodes to {} bytes, not {KEY_LEN}", raw.len())));
        }
        Ok(Self::from_bytes(&raw))
    }

    /// A new random key written to `path` with mode 0600; refuses to overwrite an existing file,
    /// because everything sealed with the old key would become unreadable.
    pub fn create(path: &Path) -> Result<SecretKey, String> {
        let at = path.display();
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut raw[..]).map_err(|_| "the system random number generator failed".to_owned())?;
        let mut text = Zeroizing::new(STANDARD.encode(&raw[..]));
        text.push('\n');
        write_new_private(path, text.as_bytes()).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => format!(
                "{at} already exists; regcert never overwrites a secret key (what was sealed with it would be lost): \
                 remove it first if you really mean to replace it, or give another path"
            ),
            _ => format!("cannot write the secret key to {at}: {e} ({})", crate::fsutil::write_advice(parent_dir(path), &e)),
        })?;
        Ok(Self::from_bytes(&raw[..]))
    }

    fn from_bytes(raw: &[u8]) -> SecretKey {
        // Fails only for a wrong key length, which both callers have ruled out.
        let key = RandomizedNonceKey::new(&AES_256_GCM, raw).expect("a 32-byte key is valid for AES-256-GCM");
        let fingerprint = hex::encode(&Sha256::digest(raw)[..8]);
        SecretKey { key, fingerprint }
    }

    /// A short public fingerprint (first 8 bytes of SHA-256 of the key, hex): nodes record it so a
    /// node with a different key file is named in an error, without revealing the key.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Encrypt `plaintext`, bound to `context` (e.g. the etcd key the blob is stored under).
    /// Output: version byte 1 ‖ 12-byte random nonce ‖ ciphertext+tag. aws-lc draws a fresh
    /// random nonce for every call; 96 random bits stay unique far beyond the few thousand
    /// blobs a fleet writes with one key.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        // Allocated at its final size: the plaintext copy is encrypted where it lies, and no
        // reallocation leaves a clear copy behind in freed memory.
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&[0; NONCE_LEN]);
        out.extend_from_slice(plaintext);
        let (nonce, tag) = self
            .key
            .seal_in_place_separate_tag(aad(VERSION, context), &mut out[HEADER_LEN..])
            // Fails only for a plaintext of more than 64 GiB or a broken system RNG; neither is
            // something a caller could handle.
            .expect("AES-256-GCM sealing failed");
        out[1..HEADER_LEN].copy_from_slice(nonce.as_ref());
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Decrypt a blob made by [`SecretKey::seal`] with the same key and context. The error says
    /// what may be wrong (another secret key, another context, damage, an unknown version) and
    /// names the context and this key's fingerprint, never key bytes or plaintext.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        let version = *sealed.first().ok_or_else(|| format!("the sealed data for {context} is empty: it was damaged"))?;
        if version != VERSION {
            return Err(format!(
                "the sealed data for {context} has format version {version}, which this regcert does not know: \
                 it was damaged, or written by a newer regcert (upgrade this node)"
            ));
        }
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(format!("the sealed data for {context} is {} bytes, too short to be sealed data: it was damaged", sealed.len()));
        }
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(&sealed[1..HEADER_LEN]).expect("the slice is NONCE_LEN bytes");
        // Opened in a buffer that is zeroized on drop, since it ends up holding the plaintext.
        let mut buf = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        // GCM cannot tell a wrong key from a wrong context or a flipped bit: the message lists
        // them, most likely first, and gives the fingerprint to compare between nodes.
        let len = self
            .key
            .open_in_place(nonce, aad(version, context), &mut buf)
            .map_err(|_| {
                format!(
                    "the sealed data for {context} does not open with this node's secret key (fingerprint {}): it was sealed \
                     with another secret key, or for another key than {context}, or it was damaged; check that every node's \
                     {CONFIG_KEY} holds the same key (nodes with the same key show the same fingerprint)",
                    self.fingerprint
                )
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The authenticated data: the version byte (so the header is covered too) and the context.
/// The version has a fixed length, so no two (version, context) pairs give the same bytes.
fn aad(version: u8, context: &str) -> Aad<Vec<u8>> {
    let mut aad = Vec::with_capacity(1 + context.len());
    aad.push(version);
    aad.extend_from_slice(context.as_bytes());
    Aad::from(aad)
}

/// Write a new private file at `path`, atomically and without replacing an existing one:
/// fsutil's atomic write renames over whatever is there, which for a secret key would destroy
/// the fleet's only copy. The temp file is created 0600, so the key is never readable by others.
fn write_new_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new().prefix(".regcert-tmp-").tempfile_in(dir).map_err(|e| crate::fsutil::os_error(&e))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    // rename(2) with RENAME_NOREPLACE (or link + unlink): fails with AlreadyExists, atomically.
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const CONTEXT: &str = "/regcert/certs/registry.example/key";

    /// A key created in a fresh temp dir, with its path and file text.
    fn new_key() -> (tempfile::TempDir, std::path::PathBuf, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let key = SecretKey::create(&path).unwrap();
        (dir, path, key)
    }

    /// Write `text` as a key file with `mode`, load it, and return the error.
    fn load_error(dir: &Path, text: &str, mode: u32) -> (std::path::PathBuf, String) {
        let path = dir.join("bad.key");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()) && err.contains(CONFIG_KEY), "{err}");
        assert!(!text.trim().is_empty() && !err.contains(text.trim()), "the error quotes the key file: {err}");
        (path, err)
    }

    #[test]
    fn round_trip_with_the_loaded_key() {
        let (_dir, path, created) = new_key();
        let loaded = SecretKey::load(&path).unwrap();
        assert_eq!(created.fingerprint(), loaded.fingerprint());
        assert_eq!(loaded.fingerprint().len(), 16);
        let secret = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEA...\n";
        let sealed = created.seal(secret, CONTEXT);
        assert_eq!(sealed[0], VERSION);
        assert_eq!(sealed.len(), HEADER_LEN + secret.len() + TAG_LEN);
        assert!(!sealed.windows(8).any(|w| w == &secret[..8]), "the plaintext shows in the sealed data");
        assert_eq!(&loaded.open(&sealed, CONTEXT).unwrap()[..], secret);
        // Empty plaintext is sealed too (an empty file is still a file).
        assert!(loaded.open(&created.seal(b"", CONTEXT), CONTEXT).unwrap().is_empty());
    }

    #[test]
    fn another_context_does_not_open() {
        let (_dir, _path, key) = new_key();
        let sealed = key.seal(b"account key", CONTEXT);
        let err = key.open(&sealed, "/regcert/certs/other.example/key").unwrap_err();
        assert!(err.contains("for another key") && err.contains("other.example"), "{err}");
        assert!(!err.contains("account key"), "{err}");
    }

    #[test]
    fn another_secret_key_does_not_open_and_is_named_by_fingerprint() {
        let (_dir, _path, key) = new_key();
        let (_dir2, path2, other) = new_key();
        assert_ne!(key.fingerprint(), other.fingerprint());
        let err = other.open(&key.seal(b"private key", CONTEXT), CONTEXT).unwrap_err();
        assert!(err.contains("another secret key") && err.contains(&other.fingerprint()), "{err}");
        let key_text = fs::read_to_string(&path2).unwrap();
        assert!(!err.contains(key_text.trim()) && !err.contains("private key"), "{err}");
        // Debug shows the fingerprint, not the key.
        let debug = format!("{other:?}");
        assert!(debug.contains(&other.fingerprint()) && !debug.contains(key_text.trim()), "{debug}");
    }

    #[test]
    fn any_flipped_byte_or_cut_does_not_open() {
        let (_dir, _path, key) = new_key();
        let sealed = key.seal(b"private key", CONTEXT);
        // Every position: version byte, nonce, ciphertext and tag are all covered.
        for i in 0..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[i] ^= 0x01;
            assert!(key.open(&damaged, CONTEXT).is_err(), "byte {i} flipped still opens");
        }
        assert!(key.open(&sealed[..sealed.len() - 1], CONTEXT).unwrap_err().contains("damaged"));
        assert!(key.open(&sealed[..HEADER_LEN], CONTEXT).unwrap_err().contains("too short"));
        assert!(key.open(&[], CONTEXT).unwrap_err().contains("empty"));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert!(key.open(&v2, CONTEXT).unwrap_err().contains("format version 2"));
    }

    #[test]
    fn two_seals_of_the_same_plaintext_differ() {
        let (_dir, _path, key) = new_key();
        let (a, b) = (key.seal(b"same", CONTEXT), key.seal(b"same", CONTEXT));
        assert_ne!(a[1..HEADER_LEN], b[1..HEADER_LEN], "nonce reused");
        assert_ne!(a, b);
        assert_eq!(key.open(&a, CONTEXT).unwrap(), key.open(&b, CONTEXT).unwrap());
    }

    #[test]
    fn load_refuses_a_key_file_others_may_read() {
        let (dir, path, _key) = new_key();
        let text = fs::read_to_string(&path).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let (bad, err) = load_error(dir.path(), &text, mode);
            assert!(err.contains(&format!("mode {mode:04o}")) && err.contains(&format!("chmod 600 {}", bad.display())), "{err}");
        }
        // The same text, private, is a good key.
        fs::set_permissions(dir.path().join("bad.key"), fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretKey::load(&dir.path().join("bad.key")).is_ok());
    }

    #[test]
    fn load_refuses_wrong_length_and_not_base64_and_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let fix = "regcert cluster new-key";
        let (_, err) = load_error(dir.path(), &format!("{}\n", STANDARD.encode([7u8; 16])), 0o600);
        assert!(err.contains("decodes to 16 bytes, not 32") && err.contains(fix), "{err}");
        let (_, err) = load_error(dir.path(), &format!("{}\n", STANDARD.encode([7u8; 33])), 0o600);
        assert!(err.contains("decodes to 33 bytes, not 32"), "{err}");
        // Base64 with one stray character: the error must not quote the text or the character.
        let mut text = STANDARD.encode([9u8; 32]);
        text.replace_range(5..6, "%");
        let (_, err) = load_error(dir.path(), &text, 0o600);
        assert!(err.contains("is not base64") && err.contains(fix) && !err.contains('%'), "{err}");
        let (_, err) = load_error(dir.path(), &"A".repeat(2000), 0o600);
        assert!(err.contains("more than 1024 bytes"), "{err}");
        // Whitespace around the one line is fine.
        fs::write(dir.path().join("ok.key"), format!("  \n{}\r\n\n", STANDARD.encode([1u8; 32]))).unwrap();
        fs::set_permissions(dir.path().join("ok.key"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretKey::load(&dir.path().join("ok.key")).is_ok());
    }

    #[test]
    fn load_of_a_missing_file_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.key");
        let err = SecretKey::load(&path).unwrap_err();
        let p = path.display();
        assert!(err.contains(&format!("{CONFIG_KEY} {p} does not exist")), "{err}");
        assert!(err.contains(&format!("regcert cluster new-key {p}")) && err.contains("every node"), "{err}");
        let err = SecretKey::load(dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn create_writes_a_private_file_and_never_overwrites() {
        let (dir, path, key) = new_key();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), KEY_LEN);
        let err = SecretKey::create(&path).unwrap_err();
        assert!(err.contains("already exists") && err.contains(&path.display().to_string()), "{err}");
        // The old key is untouched, and no temp file is left behind.
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(SecretKey::load(&path).unwrap().fingerprint(), key.fingerprint());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = SecretKey::create(&dir.path().join("no/such/dir/k")).unwrap_err();
        assert!(err.contains("cannot write the secret key"), "{err}");
    }
}
