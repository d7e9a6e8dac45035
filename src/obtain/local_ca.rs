//! The private CA issuer: certificate authorities kept in state_dir, for registries on internal
//! names and IPs that no public CA will certify.
//!
//! ```text
//! state_dir/ca/<name>/root.crt          the trust anchor clients get (`regcert ca export`)
//! state_dir/ca/<name>/root.key          0600; absent for a two-level CA (see below)
//! state_dir/ca/<name>/intermediate.crt  two-level CA: the online signing CA …
//! state_dir/ca/<name>/intermediate.key  … and its key (0600)
//! state_dir/ca/<name>/offline/root.key  two-level CA: the root key, to be moved offline
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use zeroize::Zeroizing;

use super::Error;
use super::name_constraints::Constraints;
use crate::certinfo::{LeafInfo, parse_pem_certs, to_pem, unix};
use crate::config::{CaConfig, CertificateConfig, Usage};
use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
use crate::keys::{KeyType, LeafKey};
use crate::state::{Issued, IssuedMeta, StateDir};

/// The issuer `ca:NAME`: signs with CA `name` of the state directory. Cheap to make; the CA
/// is read from disk for each certificate it signs.
pub struct LocalIssuer {
    name: String,
    state: StateDir,
    root: PathBuf,
}

impl LocalIssuer {
    pub(crate) fn new(name: &str, state: &StateDir) -> Self {
        Self { name: name.to_owned(), state: state.clone(), root: root_path(state, name) }
    }

    pub(crate) fn issue(&self, cert: &CertificateConfig, key: &LeafKey) -> Result<Issued, Error> {
        LocalCa::load(&self.state, &self.name).and_then(|ca| ca.issue(cert, key)).map_err(Error::LocalCa)
    }

    /// The root clients and verification must trust.
    pub(crate) fn trust_anchor(&self) -> &Path {
        &self.root
    }

    pub(crate) fn origin(&self) -> String {
        format!("ca:{}", self.name)
    }

    pub(crate) fn label(&self) -> String {
        format!("private CA \"{}\"", self.name)
    }
}

/// A CA ready to sign leaves.
struct LocalCa {
    name: String,
    /// The signing certificate (root, or the intermediate of a two-level CA) and its key.
    signer_der: CertificateDer<'static>,
    signer_key: KeyPair,
    /// The root (the same as the signer for a one-level CA).
    root_der: CertificateDer<'static>,
    /// What follows the leaf in a fullchain.
    chain_pem: String,
}

fn dir(state: &StateDir, name: &str) -> PathBuf {
    state.ca_dir(name)
}

/// Where the root certificate of CA `name` is kept (what clients must trust).
pub fn root_path(state: &StateDir, name: &str) -> PathBuf {
    dir(state, name).join("root.crt")
}

/// The longest `validity` a CA or leaf may have (100 years as "100y" counts them); config
/// validation refuses more, and issuing clamps to it.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 31_557_600);

/// A leaf's validity when the certificate sets none.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// `now + validity`, clamped to [`MAX_VALIDITY`] and to `limit` (the signer's own expiry): never
/// a panic or an overflow, whatever the duration.
fn not_after(now: ::time::OffsetDateTime, validity: Duration, limit: Option<::time::OffsetDateTime>) -> ::time::OffsetDateTime {
    let secs = validity.min(MAX_VALIDITY).as_secs().max(1);
    let end = now.checked_add(::time::Duration::seconds(secs as i64)).unwrap_or(now);
    match limit {
        Some(limit) if limit < end => limit,
        _ => end,
    }
}

/// A serial number from the system's CSPRNG (RFC 5280 §4.1.2.2: positive, at most 20 octets;
/// CA/B Forum: at least 64 random bits). 16 bytes, 126 of them random bits.
fn random_serial() -> Result<SerialNumber, String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "the system random number generator failed".to_owned())?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from(bytes.to_vec()))
}

/// Parse "CN=Example Registry CA, O=Example" into a distinguished name.
pub fn parse_subject(subject: &str) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for part in subject.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("\"{part}\" is not KEY=value"))?;
        let kind = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            other => return Err(format!("attribute \"{other}\" is not one of CN, O, OU, C, ST, L")),
        };
        dn.push(kind, v.trim());
    }
    if dn.get(&DnType::CommonName).is_none() {
        return Err("needs a CN=…".into());
    }
    Ok(dn)
}

fn ca_params(cfg: &CaConfig, dn: DistinguishedName, is_ca: IsCa) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name = dn;
    p.is_ca = is_ca;
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(random_serial()?);
    let now = ::time::OffsetDateTime::now_utc();
    p.not_before = now - ::time::Duration::hours(1);
    p.not_after = not_after(now, cfg.validity, None);
    p.use_authority_key_identifier_extension = true;
    p.name_constraints = cfg.constraints().map_err(|p| format!("name constraints: {}", p.join("; ")))?.to_rcgen();
    Ok(p)
}

/// `regcert ca init NAME`: create the CA, or adopt the one configured under `import`.
/// Refuses to replace an existing CA (clients trust it) unless `force`.
pub fn init(state: &StateDir, name: &str, cfg: &CaConfig, force: bool) -> Result<String, String> {
    let d = dir(state, name);
    if d.join("root.crt").exists() && !force {
        return Err(format!(
            "CA \"{name}\" already exists in {} (clients trust it); use --force only if every client will get the new root",
            d.display()
        ));
    }
    create_private_dir(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let write = |file: &str, data: &str, spec| {
        write_atomic(&d.join(file), data.as_bytes(), spec).map_err(|e| format!("cannot write {}: {e}", d.join(file).display()))
    };
    if let Some(import) = &cfg.import {
        let (cert_pem, key_pem) = read_import(import)?;
        write("root.key", &key_pem, FileSpec::PRIVATE)?;
        write("root.crt", &cert_pem, FileSpec::PUBLIC)?;
        let removed = remove_stale(&d, ONE_LEVEL)?;
        return Ok(format!("imported the CA from {} into {}{removed}", import.cert.display(), d.display()));
    }
    let dn = parse_subject(&cfg.subject).map_err(|e| format!("[ca.{name}] subject: {e}"))?;
    let root_key = cfg.key.generate().map_err(|e| format!("cannot generate the CA key: {e}"))?;
    let root_params = ca_params(cfg, dn.clone(), IsCa::Ca(BasicConstraints::Unconstrained))?;
    let root = root_params.self_signed(&root_key).map_err(|e| format!("cannot create the CA certificate: {e}"))?;
    if !cfg.intermediate {
        write("root.key", &Zeroizing::new(root_key.serialize_pem()), FileSpec::PRIVATE)?;
        write("root.crt", &root.pem(), FileSpec::PUBLIC)?;
        let removed = remove_stale(&d, ONE_LEVEL)?;
        return Ok(format!("created CA \"{name}\" in {}{removed}", d.display()));
    }
    // Two-level: the root signs an intermediate, then its key goes offline.
    let mut inter_dn = dn;
    let cn = cfg.subject_cn();
    inter_dn.push(DnType::CommonName, format!("{cn} Intermediate"));
    let inter_key = cfg.key.generate().map_err(|e| format!("cannot generate the intermediate key: {e}"))?;
    let inter_params = ca_params(cfg, inter_dn, IsCa::Ca(BasicConstraints::Constrained(0)))?;
    let root_issuer = Issuer::new(root_params, &root_key);
    let inter = inter_params.signed_by(&inter_key, &root_issuer).map_err(|e| format!("cannot create the intermediate: {e}"))?;
    let offline = d.join("offline");
    create_private_dir(&offline).map_err(|e| format!("cannot create {}: {e}", offline.display()))?;
    write("offline/root.key", &Zeroizing::new(root_key.serialize_pem()), FileSpec::PRIVATE)?;
    write("intermediate.key", &Zeroizing::new(inter_key.serialize_pem()), FileSpec::PRIVATE)?;
    write("intermediate.crt", &inter.pem(), FileSpec::PUBLIC)?;
    write("root.crt", &root.pem(), FileSpec::PUBLIC)?;
    let removed = remove_stale(&d, TWO_LEVEL)?;
    Ok(format!(
        "created two-level CA \"{name}\" in {}; move {} to offline storage (it is only needed to make a new intermediate){removed}",
        d.display(),
        offline.join("root.key").display()
    ))
}

/// The files of a one-level CA (root signs) and of a two-level one (an intermediate signs).
const ONE_LEVEL: &[&str] = &["root.crt", "root.key"];
const TWO_LEVEL: &[&str] = &["root.crt", "intermediate.crt", "intermediate.key", "offline/root.key"];

/// After `ca init --force`: remove every file of the replaced CA that the new layout does not
/// have — an old intermediate would still be preferred for signing, and an old key has no use
/// but to sign as the CA that clients are about to stop trusting. Returns a note for the output.
fn remove_stale(d: &Path, keep: &[&str]) -> Result<String, String> {
    let mut removed = Vec::new();
    for file in ONE_LEVEL.iter().chain(TWO_LEVEL).filter(|f| !keep.contains(f)) {
        let path = d.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {} of the replaced CA: {e}; remove it by hand", path.display())),
        }
    }
    // The new CA has not been alerted about (see [`record_alert`]).
    let _ = std::fs::remove_file(d.join(EXPIRY_ALERT));
    Ok(if removed.is_empty() { String::new() } else { format!("; removed the replaced CA's {}", removed.join(", ")) })
}

/// Read and check an existing CA (e.g. one made with `openssl ca`): a CA certificate and the
/// unencrypted key that belongs to it.
fn read_import(import: &crate::config::CaImport) -> Result<(String, Zeroizing<String>), String> {
    let cert_bytes = std::fs::read(&import.cert).map_err(|e| format!("[ca] import.cert {}: {e}", import.cert.display()))?;
    let certs = parse_pem_certs(&cert_bytes).map_err(|e| format!("[ca] import.cert {} {e}", import.cert.display()))?;
    let key_text =
        std::fs::read_to_string(&import.key).map(Zeroizing::new).map_err(|e| format!("[ca] import.key {}: {e}", import.key.display()))?;
    let key = load_key(&key_text, &import.key, import.passphrase_file.as_deref())?;
    let cert = LeafInfo::parse(&certs[0])?;
    if cert.spki != key.subject_public_key_info() {
        return Err(format!(
            "[ca] import.key {} does not belong to import.cert {} (their public keys differ); point both at the same CA",
            import.key.display(),
            import.cert.display()
        ));
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).map_err(|e| e.to_string())?;
    if !parsed.is_ca() {
        return Err(format!("[ca] import.cert {} is not a CA certificate (basicConstraints CA:TRUE is missing)", import.cert.display()));
    }
    Ok((to_pem(&certs[..1]), Zeroizing::new(key.serialize_pem())))
}

/// A CA key from PEM; encrypted PKCS#8 is opened with the passphrase file.
fn load_key(text: &str, path: &Path, passphrase_file: Option<&Path>) -> Result<KeyPair, String> {
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "the CA key {} is encrypted in the legacy OpenSSL format: convert it once with `openssl pkey -in {} -out ca-key.pem` \
             (unencrypted, keep it 0600) or `openssl pkcs8 -topk8 -in {} -out ca-key.p8.pem` (encrypted, then set import.passphrase_file)",
            path.display(),
            path.display(),
            path.display()
        ));
    }
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let Some(pass_file) = passphrase_file else {
            return Err(format!(
                "the CA key {} is encrypted: set [ca.NAME] import.passphrase_file to a file holding its passphrase, \
                 or give an unencrypted copy (`openssl pkey -in {} -out ca-key.pem`, kept 0600)",
                path.display(),
                path.display()
            ));
        };
        let pass = std::fs::read_to_string(pass_file)
            .map(Zeroizing::new)
            .map_err(|e| format!("import.passphrase_file {}: {e}", pass_file.display()))?;
        let pass = pass.trim_end_matches(['\n', '\r']);
        use pkcs8::der::Decode;
        let (_, doc) = pkcs8::SecretDocument::from_pem(text).map_err(|e| format!("the CA key {} is not PEM: {e}", path.display()))?;
        let encrypted =
            pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| format!("the CA key {}: {e}", path.display()))?;
        let plain = encrypted.decrypt(pass).map_err(|_| {
            format!("cannot decrypt the CA key {} with import.passphrase_file {}: wrong passphrase?", path.display(), pass_file.display())
        })?;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(plain.as_bytes());
        return KeyPair::try_from(&rustls_pki_types::PrivateKeyDer::Pkcs8(der)).map_err(|e| format!("the CA key {}: {e}", path.display()));
    }
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| format!("the CA key {} is not a PEM private key: {e}", path.display()))?;
    KeyPair::try_from(&der).map_err(|e| format!("the CA key {} is not usable: {e}", path.display()))
}

impl LocalCa {
    /// Load CA `name` from state_dir.
    fn load(state: &StateDir, name: &str) -> Result<Self, String> {
        let d = dir(state, name);
        let read = |f: &str| std::fs::read_to_string(d.join(f));
        let chain = ca_chain(state, name)?;
        let (signer_file, key_file) = if chain.len() > 1 { ("intermediate.crt", "intermediate.key") } else { ("root.crt", "root.key") };
        let signer_pem = read(signer_file).map_err(|e| format!("{}: {e}", d.join(signer_file).display()))?;
        let key_pem = read(key_file)
            .map(Zeroizing::new)
            .map_err(|e| format!("{}: {e} (the CA's signing key is missing)", d.join(key_file).display()))?;
        let signer_key = load_key(&key_pem, &d.join(key_file), None)?;
        let (Some(signer_der), Some(root_der)) = (chain.first().cloned(), chain.last().cloned()) else {
            return Err(format!("CA \"{name}\": no certificate"));
        };
        Ok(LocalCa { name: name.to_owned(), chain_pem: signer_pem, signer_der, signer_key, root_der })
    }

    /// Sign a leaf for `cert`: serverAuth (or clientAuth for `usage = "client"`), every DNS name
    /// and IP in the SAN, random serial, AKI/SKI, `validity` (default 90 days).
    fn issue(&self, cert: &CertificateConfig, key: &LeafKey) -> Result<Issued, String> {
        // The name constraints of the CA's certificates (an imported CA may carry ones the config
        // does not say): a leaf outside them is one no client accepts, so it is never issued.
        for der in [&self.signer_der, &self.root_der] {
            let refused = Constraints::of_certificate(der).refused(&cert.domains, &cert.ips);
            if !refused.is_empty() {
                return Err(format!(
                    "CA \"{}\" may not certify {} (its name constraints); clients would reject the certificate",
                    self.name,
                    refused.join(", ")
                ));
            }
        }
        let names = cert.names();
        let mut p = CertificateParams::new(names.clone()).map_err(|e| format!("certificate names: {e}"))?;
        p.distinguished_name = DistinguishedName::new();
        p.is_ca = IsCa::ExplicitNoCa;
        let names = match (cert.usage, &cert.client_name) {
            // A client is named by its subject (registries and proxies check only the issuer);
            // DNS names and IPs, if any, go in the SAN as for a server.
            (Usage::Client, Some(client)) => {
                p.distinguished_name.push(DnType::CommonName, client.clone());
                // Only a signature: a client never decrypts a key exchange with its key.
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                std::iter::once(client.clone()).chain(names).collect()
            }
            _ => {
                p.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                names
            }
        };
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let validity = cert.validity.unwrap_or(DEFAULT_LEAF_VALIDITY);
        let now = ::time::OffsetDateTime::now_utc();
        // Backdated for clocks that lag, by at most a tenth of the validity: five minutes would
        // be most of the lifetime of a short-lived certificate (and make it due at once).
        let backdate = (validity / 10).min(Duration::from_secs(300));
        p.not_before = now - ::time::Duration::seconds(backdate.as_secs() as i64);
        // A leaf never outlives the certificate that signs it.
        let signer_end =
            LeafInfo::parse(&self.signer_der).ok().and_then(|s| ::time::OffsetDateTime::from_unix_timestamp(s.not_after as i64).ok());
        p.not_after = not_after(now, validity, signer_end);
        if signer_end.is_some_and(|end| end == p.not_after) {
            tracing::warn!(cert = %cert.name, ca = %self.name, "validity shortened: a leaf cannot outlive its CA certificate");
        }
        let issuer = Issuer::from_ca_cert_der(&self.signer_der, &self.signer_key).map_err(|e| format!("CA \"{}\": {e}", self.name))?;
        let leaf = key.sign(&p, &issuer).map_err(|e| format!("signing the certificate: {e}"))?;
        let info = LeafInfo::parse(leaf.der())?;
        tracing::info!(cert = %cert.name, ca = %self.name, serial = %info.serial, "certificate issued by the local CA");
        Ok(Issued {
            leaf_pem: leaf.pem(),
            chain_pem: self.chain_pem.clone(),
            key_pem: Zeroizing::new(key.pem().to_owned()),
            meta: IssuedMeta {
                name: cert.name.clone(),
                domains: names,
                key_type: cert.key,
                directory: format!("ca:{}", self.name), // = LocalIssuer::origin
                order_url: String::new(),
                issued_at: unix(SystemTime::now()),
                not_before: info.not_before,
                not_after: info.not_after,
                serial: info.serial,
                sha256: info.sha256,
                issuer: info.issuer,
                account: None,
                profile: None,
            },
        })
    }
}

/// The certificates of CA `name`, signer first: `[root]`, or `[intermediate, root]` for a
/// two-level CA — whose intermediate must be signed by the root (an intermediate of another CA
/// is never used).
fn ca_chain(state: &StateDir, name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let d = dir(state, name);
    let read = |file: &str| -> Result<CertificateDer<'static>, String> {
        let path = d.join(file);
        let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse_pem_certs(&pem)
            .map_err(|e| format!("{} {e}", path.display()))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: empty", path.display()))
    };
    if !d.join("root.crt").exists() {
        return Err(format!("CA \"{name}\" does not exist yet: run `regcert ca init {name}`"));
    }
    let root = read("root.crt")?;
    if !d.join("intermediate.crt").exists() {
        return Ok(vec![root]);
    }
    let inter = read("intermediate.crt")?;
    let signed_by_root = match (x509_parser::parse_x509_certificate(&inter), x509_parser::parse_x509_certificate(&root)) {
        (Ok((_, i)), Ok((_, r))) => i.verify_signature(Some(r.public_key())).is_ok(),
        _ => false,
    };
    if !signed_by_root {
        return Err(format!(
            "{} was not issued by {} (left from another CA?): run `regcert ca init {name} --force` to make a consistent CA, \
             or put back the intermediate of this root",
            d.join("intermediate.crt").display(),
            d.join("root.crt").display()
        ));
    }
    Ok(vec![inter, root])
}

/// When a private CA can no longer sign full-length leaves, and when it stops signing at all.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaExpiry {
    /// The `[ca.NAME]` name.
    pub ca: String,
    /// Subject and serial of the CA certificate that expires first (root or intermediate).
    pub subject: String,
    pub serial: String,
    /// The earliest notAfter of the CA's certificates: no leaf it signs lasts longer.
    pub not_after: u64,
    /// `not_after` minus the longest `validity` of the certificates it issues: from then on, new
    /// leaves are shortened to end with the CA, and regcert alerts.
    pub alert_at: u64,
}

impl CaExpiry {
    pub fn alerting(&self, now: u64) -> bool {
        now >= self.alert_at
    }

    /// One line for logs, alerts and `status`.
    pub fn message(&self, now: u64) -> String {
        let left = self.not_after.saturating_sub(now);
        let when = if left == 0 {
            "has EXPIRED: no certificate can be issued".to_owned()
        } else {
            format!("expires in {} days; leaves it signs now end with it", left / 86_400)
        };
        format!(
            "private CA \"{}\" ({}) {when} ({}): create a new CA (`regcert ca init {} --force`, or a new [ca.NAME]) and give its root to every client",
            self.ca,
            self.subject,
            crate::certinfo::fmt_time(self.not_after),
            self.ca
        )
    }
}

/// The expiry of each configured private CA that exists in state_dir (one that cannot be read is
/// left out: issuing from it reports why). The warning time is the longest leaf validity of its
/// certificates (default 90 days), since that is when leaves start being cut short.
pub fn expiries(config: &crate::config::Config, state: &StateDir) -> Vec<CaExpiry> {
    let mut out = Vec::new();
    for name in config.ca.keys() {
        let Ok(chain) = ca_chain(state, name) else { continue };
        let Some(info) = chain.iter().filter_map(|der| LeafInfo::parse(der).ok()).min_by_key(|i| i.not_after) else { continue };
        let warn = config
            .certificates
            .iter()
            .filter(|c| c.issuer.private_ca() == Some(name.as_str()))
            .map(|c| c.validity.unwrap_or(DEFAULT_LEAF_VALIDITY).min(MAX_VALIDITY))
            .max()
            .unwrap_or(DEFAULT_LEAF_VALIDITY);
        out.push(CaExpiry {
            ca: name.clone(),
            subject: info.subject.clone(),
            serial: info.serial.clone(),
            not_after: info.not_after,
            alert_at: info.not_after.saturating_sub(warn.as_secs()),
        });
    }
    out
}

/// In a CA's directory: when `regcert run` last alerted about its expiry (Unix time).
const EXPIRY_ALERT: &str = "expiry-alert";

/// `regcert run` alerts about an expiring CA once a day: when it last did, per CA.
pub fn last_alert(state: &StateDir, name: &str) -> Option<u64> {
    std::fs::read_to_string(dir(state, name).join(EXPIRY_ALERT)).ok()?.trim().parse().ok()
}

pub fn record_alert(state: &StateDir, name: &str, now: u64) -> Result<(), String> {
    let path = dir(state, name).join(EXPIRY_ALERT);
    write_atomic(&path, now.to_string().as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl CaConfig {
    /// `name_constraints` and `excluded_name_constraints`, parsed (every bad entry a problem).
    pub fn constraints(&self) -> Result<Constraints, Vec<String>> {
        Constraints::parse(&self.name_constraints, &self.excluded_name_constraints)
    }

    fn subject_cn(&self) -> String {
        self.subject.split(',').find_map(|p| p.trim().strip_prefix("CN=").map(str::to_owned)).unwrap_or_else(|| "regcert CA".into())
    }
}

/// The default key of a CA.
pub fn default_key() -> KeyType {
    KeyType::EcdsaP384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_never_panics_and_clamps() {
        let now = ::time::OffsetDateTime::now_utc();
        let max = now + ::time::Duration::seconds(MAX_VALIDITY.as_secs() as i64);
        for d in [Duration::MAX, Duration::from_secs(u64::MAX / 2), Duration::from_secs(8000 * 31_557_600), MAX_VALIDITY] {
            assert_eq!(not_after(now, d, None), max, "{d:?}");
        }
        assert_eq!(not_after(now, Duration::ZERO, None), now + ::time::Duration::seconds(1));
        assert_eq!(not_after(now, Duration::from_secs(86_400), None), now + ::time::Duration::days(1));
        let ca_end = now + ::time::Duration::days(10);
        assert_eq!(not_after(now, Duration::from_secs(90 * 86_400), Some(ca_end)), ca_end);
        assert_eq!(not_after(now, Duration::from_secs(86_400), Some(ca_end)), now + ::time::Duration::days(1));
    }

    fn cert(domain: &str, ips: &[&str]) -> CertificateConfig {
        let ips: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        toml::from_str(&format!(
            "name = \"r\"\nissuer = \"ca:internal\"\ndomains = [\"{domain}\"]\nips = [{}]\n[install]\ndir = \"/tmp\"\n",
            ips.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn names_and_ips_outside_the_ca_name_constraints_are_never_issued() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let ca: CaConfig = toml::from_str(
            "name_constraints = [\"corp.lan\", \"192.168.20.0/24\", \"fd00::/8\"]\nexcluded_name_constraints = [\"192.168.20.128/25\"]",
        )
        .unwrap();
        init(&state, "internal", &ca, false).unwrap();
        let issuer = LocalIssuer::new("internal", &state);
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        assert!(issuer.issue(&cert("registry.corp.lan", &["192.168.20.10", "fd00::10"]), &key).is_ok());
        for (domain, ips, want) in [
            ("registry.other.lan", &[][..], "\"registry.other.lan\" (outside corp.lan)"),
            ("registry.corp.lan", &["192.168.20.200"][..], "\"192.168.20.200\" (excluded by 192.168.20.128/25)"),
            ("registry.corp.lan", &["10.0.0.1"][..], "\"10.0.0.1\" (outside 192.168.20.0/24, fd00::/8)"),
            ("registry.corp.lan", &["fe80::1"][..], "\"fe80::1\" (outside 192.168.20.0/24, fd00::/8)"),
        ] {
            let err = issuer.issue(&cert(domain, ips), &key).err().unwrap().to_string();
            assert!(err.contains("may not certify") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn a_client_certificate_is_for_client_auth_only_and_named_by_its_cn() {
        use x509_parser::extensions::ParsedExtension;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        init(&state, "internal", &toml::from_str("").unwrap(), false).unwrap();
        let client: CertificateConfig = toml::from_str(
            "name = \"c\"\nissuer = \"ca:internal\"\nusage = \"client\"\nclient_name = \"ci-runner-1\"\n[install]\ndir = \"/tmp\"\n",
        )
        .unwrap();
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        let issued = LocalIssuer::new("internal", &state).issue(&client, &key).unwrap();
        assert_eq!(issued.meta.domains, ["ci-runner-1"]);
        let der = parse_pem_certs(issued.leaf_pem.as_bytes()).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(leaf.subject().to_string(), "CN=ci-runner-1");
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "{eku:?}");
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment(), "{ku:?}");
        assert!(!leaf.extensions().iter().any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectAlternativeName(_))));
        // A server certificate of the same CA stays serverAuth.
        let issued = LocalIssuer::new("internal", &state).issue(&cert("r.lan", &[]), &key).unwrap();
        let der = parse_pem_certs(issued.leaf_pem.as_bytes()).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
    }

    #[test]
    fn serials_are_random_positive_and_16_bytes() {
        let a: Vec<Vec<u8>> = (0..64).map(|_| random_serial().unwrap().to_bytes()).collect();
        for s in &a {
            assert_eq!(s.len(), 16);
            assert!(s[0] & 0x80 == 0 && s[0] != 0, "positive, no leading zero: {s:02x?}");
        }
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert_eq!(distinct.len(), a.len());
    }

    #[test]
    fn init_force_leaves_nothing_of_the_replaced_ca() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let d = state.ca_dir("internal");
        let two: CaConfig = toml::from_str("intermediate = true").unwrap();
        let one: CaConfig = toml::from_str("intermediate = false").unwrap();
        init(&state, "internal", &two, false).unwrap();
        assert!(d.join("intermediate.crt").exists() && d.join("offline/root.key").exists() && !d.join("root.key").exists());
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        let issued = LocalIssuer::new("internal", &state).issue(&cert("r.corp.lan", &[]), &key).unwrap();
        assert!(issued.meta.issuer.contains("Intermediate"), "{}", issued.meta.issuer);

        let out = init(&state, "internal", &one, true).unwrap();
        assert!(out.contains("removed the replaced CA's") && out.contains("intermediate.crt"), "{out}");
        for gone in ["intermediate.crt", "intermediate.key", "offline/root.key"] {
            assert!(!d.join(gone).exists(), "{gone} left behind");
        }
        let issued = LocalIssuer::new("internal", &state).issue(&cert("r.corp.lan", &[]), &key).unwrap();
        let root = LeafInfo::parse(&parse_pem_certs(&std::fs::read(d.join("root.crt")).unwrap()).unwrap()[0]).unwrap();
        assert_eq!(issued.meta.issuer, root.subject, "signed by the new root, not an old intermediate");

        // And back: the one-level root key does not stay online next to a two-level CA.
        init(&state, "internal", &two, true).unwrap();
        assert!(!d.join("root.key").exists() && d.join("intermediate.key").exists());
    }

    #[test]
    fn an_intermediate_of_another_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let d = state.ca_dir("internal");
        let two: CaConfig = toml::from_str("intermediate = true").unwrap();
        init(&state, "internal", &two, false).unwrap();
        let other = tempfile::tempdir().unwrap();
        let other_state = StateDir::open(other.path()).unwrap();
        init(&other_state, "internal", &two, false).unwrap();
        std::fs::copy(other_state.ca_dir("internal").join("root.crt"), d.join("root.crt")).unwrap();
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        let err = LocalIssuer::new("internal", &state).issue(&cert("r.corp.lan", &[]), &key).err().unwrap().to_string();
        assert!(err.contains("intermediate.crt was not issued by") && err.contains("--force"), "{err}");
    }

    #[test]
    fn ca_expiry_alerts_when_leaves_would_be_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let ca: CaConfig = toml::from_str("subject = \"CN=Short CA\"\nvalidity = \"100d\"").unwrap();
        init(&state, "internal", &ca, false).unwrap();
        let config = |validity: &str| -> crate::config::Config {
            toml::from_str(&format!(
                "[ca.internal]\nsubject = \"CN=Short CA\"\n[[certificate]]\nname = \"r\"\nissuer = \"ca:internal\"\ndomains = [\"r.lan\"]\n{validity}\n[certificate.install]\ndir = \"/tmp\"\n"
            ))
            .unwrap()
        };
        let now = unix(SystemTime::now());
        let e = expiries(&config(""), &state).remove(0);
        assert_eq!(e.ca, "internal");
        assert!(e.subject.contains("Short CA"), "{e:?}");
        assert!(e.not_after.abs_diff(now + 100 * 86_400) < 60, "{e:?}");
        // 100 days left, 90-day leaves (the default): not yet; 120-day leaves: already cut short.
        assert_eq!(e.alert_at, e.not_after - 90 * 86_400);
        assert!(!e.alerting(now));
        let e = expiries(&config("validity = \"120d\""), &state).remove(0);
        assert!(e.alerting(now));
        let msg = e.message(now);
        assert!(
            msg.contains("private CA \"internal\"")
                && msg.contains(&format!("expires in {} days", (e.not_after - now) / 86_400))
                && msg.contains("ca init internal --force"),
            "{msg}"
        );
        assert!(e.message(e.not_after).contains("has EXPIRED"));
        // The leaf is clamped to the CA.
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        let mut long = cert("r.lan", &[]);
        long.validity = Some(Duration::from_secs(120 * 86_400));
        let issued = LocalIssuer::new("internal", &state).issue(&long, &key).unwrap();
        assert_eq!(issued.meta.not_after, e.not_after);
        // A CA that was never initialised is left out.
        let mut two = config("");
        two.ca.insert("later".into(), ca.clone());
        assert_eq!(expiries(&two, &state).len(), 1);
    }
}
