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
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, PublicKeyData, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use zeroize::Zeroizing;

use super::Error;
use crate::certinfo::{LeafInfo, parse_pem_certs, to_pem, unix};
use crate::config::{CaConfig, CertificateConfig};
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

fn random_serial() -> SerialNumber {
    let mut bytes: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte to strip
    SerialNumber::from(bytes)
}

/// Is the DNS name `name` (a wildcard counts as its base) inside one of the `subtrees` of a
/// name constraint? No subtrees: every name is.
pub fn permits(subtrees: &[String], name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    subtrees.is_empty() || subtrees.iter().map(|s| s.trim_start_matches('.')).any(|s| name == s || name.ends_with(&format!(".{s}")))
}

/// The DNS subtrees the name constraints of the CA certificate `der` permit (empty: any).
fn permitted_dns(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(ext)) = cert.name_constraints() else { return Vec::new() };
    let subtrees = ext.value.permitted_subtrees.as_deref().unwrap_or_default();
    subtrees
        .iter()
        .filter_map(|s| match &s.base {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
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
    p.serial_number = Some(random_serial());
    let now = ::time::OffsetDateTime::now_utc();
    p.not_before = now - ::time::Duration::hours(1);
    p.not_after = not_after(now, cfg.validity, None);
    p.use_authority_key_identifier_extension = true;
    if !cfg.name_constraints.is_empty() {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: cfg.name_constraints.iter().map(|d| GeneralSubtree::DnsName(d.clone())).collect(),
            excluded_subtrees: Vec::new(),
        });
    }
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
        return Ok(format!("imported the CA from {} into {}", import.cert.display(), d.display()));
    }
    let dn = parse_subject(&cfg.subject).map_err(|e| format!("[ca.{name}] subject: {e}"))?;
    let root_key = cfg.key.generate().map_err(|e| format!("cannot generate the CA key: {e}"))?;
    let root_params = ca_params(cfg, dn.clone(), IsCa::Ca(BasicConstraints::Unconstrained))?;
    let root = root_params.self_signed(&root_key).map_err(|e| format!("cannot create the CA certificate: {e}"))?;
    if !cfg.intermediate {
        write("root.key", &Zeroizing::new(root_key.serialize_pem()), FileSpec::PRIVATE)?;
        write("root.crt", &root.pem(), FileSpec::PUBLIC)?;
        return Ok(format!("created CA \"{name}\" in {}", d.display()));
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
    Ok(format!(
        "created two-level CA \"{name}\" in {}; move {} to offline storage (it is only needed to make a new intermediate)",
        d.display(),
        offline.join("root.key").display()
    ))
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
        if !d.join("root.crt").exists() {
            return Err(format!("CA \"{name}\" does not exist yet: run `regcert ca init {name}`"));
        }
        let (signer_file, key_file) =
            if d.join("intermediate.crt").exists() { ("intermediate.crt", "intermediate.key") } else { ("root.crt", "root.key") };
        let signer_pem = read(signer_file).map_err(|e| format!("{}: {e}", d.join(signer_file).display()))?;
        let key_pem = read(key_file)
            .map(Zeroizing::new)
            .map_err(|e| format!("{}: {e} (the CA's signing key is missing)", d.join(key_file).display()))?;
        let signer_der = parse_pem_certs(signer_pem.as_bytes()).map_err(|e| format!("{} {e}", d.join(signer_file).display()))?.remove(0);
        let signer_key = load_key(&key_pem, &d.join(key_file), None)?;
        Ok(LocalCa { name: name.to_owned(), chain_pem: signer_pem, signer_der, signer_key })
    }

    /// Sign a leaf for `cert`: serverAuth, every DNS name and IP in the SAN, random serial,
    /// AKI/SKI, `validity` (default 90 days).
    fn issue(&self, cert: &CertificateConfig, key: &LeafKey) -> Result<Issued, String> {
        // The CA's own name constraints (an imported CA may carry ones the config does not say):
        // a leaf outside them is one no client accepts, so it is never issued.
        let permitted = permitted_dns(&self.signer_der);
        if let Some(d) = cert.domains.iter().find(|d| !permits(&permitted, d)) {
            return Err(format!(
                "CA \"{}\" may only certify names under {} (its name constraints), not \"{d}\"; clients would reject the certificate",
                self.name,
                permitted.join(", ")
            ));
        }
        let names: Vec<String> = cert.domains.iter().cloned().chain(cert.ips.iter().map(|ip| ip.to_string())).collect();
        let mut p = CertificateParams::new(names.clone()).map_err(|e| format!("certificate names: {e}"))?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(random_serial());
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
            },
        })
    }
}

impl CaConfig {
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

    #[test]
    fn names_outside_the_ca_name_constraints_are_never_issued() {
        assert!(permits(&[], "anything.example"));
        let corp = vec!["corp.lan".to_owned()];
        assert!(permits(&corp, "corp.lan") && permits(&corp, "registry.corp.lan") && permits(&corp, "*.corp.lan"));
        assert!(!permits(&corp, "registry.other.lan") && !permits(&corp, "evilcorp.lan"));

        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let ca: CaConfig = toml::from_str("name_constraints = [\"corp.lan\"]").unwrap();
        init(&state, "internal", &ca, false).unwrap();
        let issuer = LocalIssuer::new("internal", &state);
        let cert = |domain: &str| -> CertificateConfig {
            toml::from_str(&format!("name = \"r\"\nissuer = \"ca:internal\"\ndomains = [\"{domain}\"]\n[install]\ndir = \"/tmp\"\n"))
                .unwrap()
        };
        let key = LeafKey::generate(KeyType::EcdsaP256).unwrap();
        assert!(issuer.issue(&cert("registry.corp.lan"), &key).is_ok());
        let err = issuer.issue(&cert("registry.other.lan"), &key).err().unwrap().to_string();
        assert!(err.contains("may only certify names under corp.lan") && err.contains("registry.other.lan"), "{err}");
    }
}
