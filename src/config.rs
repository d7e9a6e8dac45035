//! The configuration file: its schema, and the validation that runs before anything is touched.
//!
//! Loading is two steps on purpose. `serde` turns TOML into typed values (rejecting unknown keys,
//! wrong types and values outside a fixed set: challenge, DNS provider, reload actions, file
//! modes); then [`validate`] checks what the types cannot say — domain syntax, duplicate names,
//! two certificates fighting over one file, settings a provider or action needs — without
//! touching the host, and [`preflight`] checks the host: files to read, directories to write,
//! users and groups. [`load`] runs both and reports *all* their problems at once, in the order of
//! the file, so an operator fixes the file in one pass.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::KeyType;

/// Where `--config` points when nothing else is said.
pub const DEFAULT_PATH: &str = "/etc/regcert/config.toml";

pub(crate) const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accounts, issued material, backups and the lock live here.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How many certificates `renew` works on at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The most one certificate's renewal may take from the order to the downloaded
    /// certificate (account, order, challenges, validation, finalize, download); past it, that
    /// certificate fails (retried with backoff) and the installed pair stays.
    #[serde(default = "default_renewal_timeout", with = "duration")]
    pub renewal_timeout: Duration,
    /// The ACME CA; needed when a certificate has issuer "acme" (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeConfig>,
    /// More ACME CAs, by name (`issuer = ["acme", "acme:NAME"]`): tried in turn when one cannot issue.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub acme_ca: std::collections::BTreeMap<String, AcmeConfig>,
    #[serde(default)]
    pub http01: Http01Config,
    #[serde(rename = "certificate", default)]
    pub certificates: Vec<CertificateConfig>,
    /// `regcert run`: when to check.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Prometheus endpoint of `regcert run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Who hears about renewals, failures and expiring certificates.
    #[serde(rename = "notify", default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::NotifyConfig>,
    /// Private CAs, by name (`issuer = "ca:NAME"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ca: std::collections::BTreeMap<String, CaConfig>,
    /// Fleet mode: this node is one of several sharing certificates through etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// e.g. "CN=Example Registry CA, O=Example"
    #[serde(default = "default_ca_subject")]
    pub subject: String,
    #[serde(default = "crate::obtain::local_ca::default_key")]
    pub key: KeyType,
    #[serde(default = "default_ca_validity", with = "duration")]
    pub validity: Duration,
    /// Two levels: an offline root and an online intermediate that signs.
    #[serde(default)]
    pub intermediate: bool,
    /// DNS subtrees and IP ranges the CA may certify (name constraints), e.g. ["corp.lan", "10.20.0.0/16"].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_constraints: Vec<String>,
    /// DNS subtrees and IP ranges it must never certify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_name_constraints: Vec<String>,
    /// Adopt an existing CA (e.g. made with `openssl ca`) instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<CaImport>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaImport {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// For an encrypted (PKCS#8) key: a file holding its passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

fn default_ca_subject() -> String {
    "CN=regcert private CA".into()
}
fn default_ca_validity() -> Duration {
    Duration::from_secs(10 * 365 * 86_400)
}

/// Who issues a certificate: the ACME CA of `[acme]` (`"acme"`, the default), a named ACME CA
/// of `[acme_ca.NAME]` (`"acme:NAME"`) or a private CA (`"ca:NAME"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IssuerRef {
    #[default]
    Acme,
    AcmeNamed(String),
    Ca(String),
}

impl IssuerRef {
    pub fn is_acme(&self) -> bool {
        matches!(self, IssuerRef::Acme | IssuerRef::AcmeNamed(_))
    }

    /// Where it is configured, for messages: `[acme]`, `[acme_ca.NAME]`, `[ca.NAME]`.
    pub fn section(&self) -> String {
        match self {
            IssuerRef::Acme => "[acme]".into(),
            IssuerRef::AcmeNamed(n) => format!("[acme_ca.{n}]"),
            IssuerRef::Ca(n) => format!("[ca.{n}]"),
        }
    }
}

impl std::str::FromStr for IssuerRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "acme" => Ok(IssuerRef::Acme),
            Some(("acme", name)) if !name.is_empty() => Ok(IssuerRef::AcmeNamed(name.to_owned())),
            Some(("ca", name)) if !name.is_empty() => Ok(IssuerRef::Ca(name.to_owned())),
            _ => Err(format!(
                "issuer = \"{s}\": use \"acme\" ([acme]), \"acme:NAME\" for an ACME CA defined as [acme_ca.NAME], or \"ca:NAME\" for a private CA defined as [ca.NAME]"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for IssuerRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for IssuerRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The name as written in the config: `acme`, `acme:NAME`, `ca:NAME`.
impl fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuerRef::Acme => f.write_str("acme"),
            IssuerRef::AcmeNamed(n) => write!(f, "acme:{n}"),
            IssuerRef::Ca(n) => write!(f, "ca:{n}"),
        }
    }
}

/// A certificate's `issuer`: one issuer (`"acme"`), or ACME CAs to try in turn
/// (`["acme", "acme:zerossl"]`). Never empty once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerList(pub Vec<IssuerRef>);

impl Default for IssuerList {
    fn default() -> Self {
        IssuerList(vec![IssuerRef::Acme])
    }
}

impl IssuerList {
    /// The issuer tried first: the one a certificate is judged against when nothing says which issued it.
    pub fn first(&self) -> &IssuerRef {
        self.0.first().unwrap_or(&IssuerRef::Acme)
    }

    pub fn iter(&self) -> impl Iterator<Item = &IssuerRef> {
        self.0.iter()
    }

    /// Is the certificate issued over ACME (by every CA it lists)?
    pub fn is_acme(&self) -> bool {
        self.0.iter().all(IssuerRef::is_acme)
    }

    /// The private CA, for `issuer = "ca:NAME"`.
    pub fn private_ca(&self) -> Option<&str> {
        match self.0.as_slice() {
            [IssuerRef::Ca(name)] => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for IssuerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "\"{one}\""),
            all => write!(f, "[{}]", all.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")),
        }
    }
}

impl<'de> Deserialize<'de> for IssuerList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let names = match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => vec![s],
            Ok(OneOrMany::Many(v)) => v,
            Err(_) => {
                return Err(serde::de::Error::custom(
                    "issuer must be a string (\"acme\") or a list of ACME CAs ([\"acme\", \"acme:NAME\"])",
                ));
            }
        };
        names.iter().map(|s| s.parse()).collect::<Result<_, _>>().map(IssuerList).map_err(serde::de::Error::custom)
    }
}

impl Serialize for IssuerList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            all => all.serialize(s),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Registries (HOST:PORT) whose CA regcert keeps in sync with this certificate's private CA
    /// in the container runtimes on this host (`registries` is the same key).
    #[serde(default, alias = "registries")]
    pub docker_clients: Vec<String>,
    /// `docker`, `containerd`, `podman` or `all`; default: every runtime found on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<String>,
    /// Where Docker looks for registry CAs.
    #[serde(default = "default_certs_d")]
    pub certs_d: PathBuf,
    /// Where containerd looks for hosts.toml.
    #[serde(default = "default_containerd_certs_d")]
    pub containerd_certs_d: PathBuf,
    /// Where podman, CRI-O and skopeo look for registry CAs.
    #[serde(default = "default_containers_certs_d")]
    pub containers_certs_d: PathBuf,
}

fn default_certs_d() -> PathBuf {
    PathBuf::from(crate::trust::DEFAULT_CERTS_D)
}

fn default_containerd_certs_d() -> PathBuf {
    PathBuf::from(crate::trust::DEFAULT_CONTAINERD_CERTS_D)
}

fn default_containers_certs_d() -> PathBuf {
    PathBuf::from(crate::trust::DEFAULT_CONTAINERS_CERTS_D)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Cron expression with seconds; default every 10 minutes.
    #[serde(default = "default_check")]
    pub check: String,
    /// Alert ("expiring") when less than this is left and the certificate is still not renewed;
    /// by default halfway between a certificate's renewal point and its expiry, which fits any
    /// lifetime (see [`crate::policy::alert_at`]).
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub alert_before: Option<Duration>,
    /// Waits after the 1st, 2nd, … consecutive failure of a certificate; the last one repeats.
    #[serde(default = "default_backoff", with = "duration_list")]
    pub backoff: Vec<Duration>,
    /// How long SIGTERM/SIGINT wait for a check in flight before abandoning it; the service
    /// manager's stop timeout (systemd `TimeoutStopSec=`) must be longer.
    #[serde(default = "default_stop_grace", with = "duration")]
    pub stop_grace: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self { check: default_check(), alert_before: None, backoff: default_backoff(), stop_grace: default_stop_grace() }
    }
}

fn default_stop_grace() -> Duration {
    Duration::from_secs(90)
}

fn default_backoff() -> Vec<Duration> {
    [60, 120, 300, 600, 1_200, 1_800, 3_600, 21_600].into_iter().map(Duration::from_secs).collect()
}

mod duration_list {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                humantime::parse_duration(s).map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"5m\": {e}")))
            })
            .collect()
    }

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&humantime::format_duration(*d).to_string())?;
        }
        seq.end()
    }
}

fn default_check() -> String {
    "0 */10 * * * *".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9184"
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// `letsencrypt`, `letsencrypt-staging` or a directory URL.
    pub directory: String,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(default)]
    pub accept_terms: bool,
    /// Extra roots for the ACME server's own TLS (private or test CAs).
    pub ca_bundle: Option<PathBuf>,
    pub eab: Option<EabConfig>,
    /// The most one request to the CA may take (connecting, sending, the whole answer).
    #[serde(default = "default_acme_timeout", with = "duration")]
    pub timeout: Duration,
    /// The ACME profile (draft-ietf-acme-profiles) of certificates that name none; none: the CA's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    pub kid: String,
    /// Base64url (or standard base64) HMAC key, as the CA hands it out.
    pub hmac_key: String,
}

// The HMAC key is a secret: never let `{:?}` print it.
impl fmt::Debug for EabConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EabConfig").field("kid", &self.kid).field("hmac_key", &"<redacted>").finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http01Config {
    /// Address of the built-in responder; default `[::]:80` unless `webroot` is set.
    pub listen: Option<SocketAddr>,
    /// Write tokens under `<webroot>/.well-known/acme-challenge/` for an existing web server.
    pub webroot: Option<PathBuf>,
}

/// How HTTP-01 challenges are answered, resolved from `[http01]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http01Mode {
    Listen(SocketAddr),
    Webroot(PathBuf),
}

impl Http01Config {
    pub fn mode(&self) -> Http01Mode {
        match (&self.webroot, self.listen) {
            (Some(dir), _) => Http01Mode::Webroot(dir.clone()),
            (None, Some(addr)) => Http01Mode::Listen(addr),
            (None, None) => Http01Mode::Listen(SocketAddr::from(([0u16; 8], 80))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub name: String,
    /// `"acme"` (default), `"acme:NAME"`, `"ca:NAME"`, or ACME CAs tried in turn (`["acme", "acme:NAME"]`).
    #[serde(default)]
    pub issuer: IssuerList,
    /// What the certificate is for: a registry's server certificate (default), or a client
    /// certificate a Docker/podman host presents to a registry that requires mTLS.
    #[serde(default, skip_serializing_if = "Usage::is_server")]
    pub usage: Usage,
    /// `usage = "client"`: the client's name, the certificate's subject CN (e.g. "ci-runner-1").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// First = primary name; all go in the SAN.
    #[serde(default)]
    pub domains: Vec<String>,
    /// IP SANs: from a private CA, or from an ACME CA as IP identifiers (RFC 8738, HTTP-01 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<std::net::IpAddr>,
    /// Lifetime of leaves from a private CA (default 90 days).
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub validity: Option<Duration>,
    /// The ACME profile to order (`classic`, `tlsserver`, `shortlived`, …); default `[acme] profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Install the chain (of those the ACME CA offers) whose topmost certificate this common
    /// name issued; when none is, the CA's default chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<String>,
    /// "http-01" (default), "dns-01" (needs `dns`) or "dns-persist-01" (`dns` optional); with
    /// `dns` alone, DNS-01. See [`CertificateConfig::dns01`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeKind>,
    /// How DNS-01 records are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<crate::challenge::dns01::DnsConfig>,
    #[serde(default)]
    pub key: KeyType,
    /// Renew when less than this is left; default: a third of the certificate's lifetime.
    #[serde(default, with = "opt_duration")]
    pub renew_before: Option<Duration>,
    /// Keep the current private key across renewals (default: a fresh key per issuance).
    #[serde(default)]
    pub reuse_key: bool,
    pub install: InstallConfig,
    /// How to make the registry load the new certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadConfig>,
    /// How to prove the registry serves it; on by default when `reload` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyConfig>,
    /// Container runtimes on this host that must trust the certificate's private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustConfig>,
    /// With `[cluster]`: shared by the fleet (ordered once by its leader, rolled out to every
    /// node); `false` keeps it this host's own.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub fleet: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// The registry's certificate volume.
    pub dir: PathBuf,
    #[serde(default = "default_fullchain")]
    pub fullchain: String,
    #[serde(default = "default_key")]
    pub key: String,
    /// Mode of the fullchain file (octal string), default "0644".
    #[serde(default = "default_mode", deserialize_with = "de_mode")]
    pub mode: FileMode,
    /// Mode of the key file (octal string), default "0600"; never readable by others.
    #[serde(default = "default_key_mode", deserialize_with = "de_key_mode")]
    pub key_mode: FileMode,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl InstallConfig {
    pub fn fullchain_path(&self) -> PathBuf {
        self.dir.join(&self.fullchain)
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(&self.key)
    }
}

pub use crate::reload::config::ReloadConfig;

/// `usage = "server" | "client"`: the extended key usage, and what verification checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// serverAuth: the registry serves it.
    #[default]
    Server,
    /// clientAuth: a client presents it to a registry that requires client certificates.
    Client,
}

impl Usage {
    fn is_server(&self) -> bool {
        *self == Usage::Server
    }
}

/// `challenge = "http-01" | "dns-01" | "dns-persist-01"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
    /// One persistent TXT record per name (draft-ietf-acme-dns-persist); see
    /// [`crate::challenge::dns_persist`].
    #[serde(rename = "dns-persist-01")]
    DnsPersist01,
}

impl ChallengeKind {
    /// The name as written in the config (`challenge = "…"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::DnsPersist01 => "dns-persist-01",
        }
    }
}

/// A file mode such as "0640": octal, permission bits only (at most "0777").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Can users other than owner and group read, write or run it?
    pub fn for_others(self) -> bool {
        self.0 & 0o007 != 0
    }

    /// What users other than owner and group may do, in words ("read and write").
    fn others_access(self) -> String {
        let words: Vec<&str> = [(0o004, "read"), (0o002, "write"), (0o001, "execute")]
            .into_iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, word)| word)
            .collect();
        words.join(" and ")
    }
}

impl std::str::FromStr for FileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_mode(s).map(FileMode)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: String| serde::de::Error::custom(e.trim_start_matches("= ")))
    }
}

/// `install.mode` / `install.key_mode`: a [`FileMode`], with the key named in the error.
fn install_mode<'de, D: serde::Deserializer<'de>>(key: &str, d: D) -> Result<FileMode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|e: String| serde::de::Error::custom(format!("install.{key} {e}")))
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default: https://<first domain>/v2/
    pub url: Option<String>,
    /// Trust roots for the check; default: the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Check these addresses instead of every address the URL's host resolves to (SNI and Host
    /// stay those of the URL): one "host:port" or a list of them.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub connect_to: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A client certificate (leaf + chain, PEM) and its key to present when the registry asks
    /// for one (mTLS), e.g. the `client.cert` / `client.key` Docker uses for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// How long to keep trying while the registry restarts.
    #[serde(default = "default_verify_timeout", with = "duration")]
    pub timeout: Duration,
    /// Restore the previous pair when verification fails.
    #[serde(default = "yes")]
    pub rollback: bool,
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Other(serde::de::IgnoredAny),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
        OneOrMany::Other(_) => Err(serde::de::Error::custom("verify.connect_to must be \"host:port\" or a list of them")),
    }
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            ca_bundle: None,
            connect_to: Vec::new(),
            username: None,
            password_file: None,
            client_cert: None,
            client_key: None,
            timeout: default_verify_timeout(),
            rollback: true,
        }
    }
}

impl CertificateConfig {
    /// The DNS-01 settings when this certificate is validated with DNS-01 (`dns` set, and
    /// `challenge` "dns-01" or left out), None for HTTP-01.
    pub fn dns01(&self) -> Option<&crate::challenge::dns01::DnsConfig> {
        match self.challenge {
            None | Some(ChallengeKind::Dns01) => self.dns.as_ref(),
            Some(ChallengeKind::Http01 | ChallengeKind::DnsPersist01) => None,
        }
    }

    /// Is this certificate validated with dns-persist-01? Its `dns` (optional) then only
    /// creates the persistent record, once.
    pub fn dns_persist(&self) -> bool {
        self.challenge == Some(ChallengeKind::DnsPersist01)
    }

    /// The verification to run after installing, if any: explicit `[certificate.verify]`, or
    /// the defaults whenever a reload is configured (a reload nobody checks proves nothing).
    pub fn verify_settings(&self) -> Option<VerifyConfig> {
        match (&self.verify, &self.reload) {
            (Some(v), _) => v.enabled.then(|| v.clone()),
            (None, Some(_)) => Some(VerifyConfig::default()),
            (None, None) => None,
        }
    }

    /// The URL verification checks.
    pub fn verify_url(&self, verify: &VerifyConfig) -> String {
        let host = match (self.domains.first(), self.ips.first()) {
            (Some(d), _) => d.clone(),
            (None, Some(std::net::IpAddr::V6(ip))) => format!("[{ip}]"),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => "localhost".into(),
        };
        verify.url.clone().unwrap_or_else(|| format!("https://{host}/v2/"))
    }
}

fn yes() -> bool {
    true
}
fn default_verify_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/regcert")
}
fn default_concurrency() -> usize {
    4
}
fn default_renewal_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
pub(crate) fn default_acme_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_fullchain() -> String {
    "domain.crt".into()
}
fn default_key() -> String {
    "domain.key".into()
}
fn default_mode() -> FileMode {
    FileMode(0o644)
}
fn default_key_mode() -> FileMode {
    FileMode(0o600)
}
fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FileMode, D::Error> {
    install_mode("mode", d)
}
fn de_key_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FileMode, D::Error> {
    install_mode("key_mode", d)
}

pub(crate) mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"30d\" or \"12h\": {e}")))
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

pub(crate) mod opt_duration {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl CertificateConfig {
    /// The ACME profile to order: the certificate's own, else `[acme] profile`; `None` leaves
    /// the choice to the CA. Every renewal orders it again (traefik#12462 dropped it there).
    pub fn acme_profile<'a>(&'a self, acme: &'a AcmeConfig) -> Option<&'a str> {
        self.profile.as_deref().or(acme.profile.as_deref())
    }

    /// Every name the certificate is for, as the SAN lists them: the DNS names, then the IPs.
    pub fn names(&self) -> Vec<String> {
        self.domains.iter().cloned().chain(self.ips.iter().map(ToString::to_string)).collect()
    }
}

impl Config {
    /// The ACME CA `issuer` names (`[acme]` or `[acme_ca.NAME]`), if configured.
    pub fn acme_config(&self, issuer: &IssuerRef) -> Option<&AcmeConfig> {
        match issuer {
            IssuerRef::Acme => self.acme.as_ref(),
            IssuerRef::AcmeNamed(name) => self.acme_ca.get(name),
            IssuerRef::Ca(_) => None,
        }
    }

    /// Every configured ACME CA with the name certificates use for it.
    pub fn acme_cas(&self) -> impl Iterator<Item = (IssuerRef, &AcmeConfig)> {
        let default = self.acme.iter().map(|a| (IssuerRef::Acme, a));
        default.chain(self.acme_ca.iter().map(|(n, a)| (IssuerRef::AcmeNamed(n.clone()), a)))
    }
}

impl AcmeConfig {
    /// The directory URL, with the well-known shorthands expanded.
    pub fn directory_url(&self) -> &str {
        match self.directory.as_str() {
            "letsencrypt" => LETSENCRYPT,
            "letsencrypt-staging" => LETSENCRYPT_STAGING,
            url => url,
        }
    }
}

/// Everything wrong with a configuration file, ready to print.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "invalid configuration {} ({n} problem{}):", self.path.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  - {}", p.trim_end().replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// What a command is going to do, which decides how much of the host is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Only read (status): the file must make sense; directories need not be writable by us.
    Read,
    /// Write certificates (check-config, ca init): install dirs and webroot must be usable too.
    Write,
    /// Renew (`renew`, `run`): the file must make sense; the host is checked per certificate
    /// when it is worked on ([`host_problems`]), so that one certificate's missing install dir
    /// never stops the others or the service. A file with problems of its own is reported with
    /// every host problem too, as for `Write`.
    Work,
}

/// Read, parse and check the file at `path`: [`validate`] and [`preflight`], every problem of
/// both listed at once, in the order of the file.
pub fn load(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError { path: path.to_owned(), problems };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![format!(
            "cannot read {}: {e} (pass --config PATH or set REGCERT_CONFIG; config.example.toml documents every key)",
            path.display()
        )])
    })?;
    let config = parse(&text).map_err(|p| fail(vec![p]))?;
    let problems = match purpose {
        Purpose::Work if validate(&config).is_empty() => Vec::new(),
        Purpose::Work => all_problems(&config, Purpose::Write),
        other => all_problems(&config, other),
    };
    if problems.is_empty() { Ok(config) } else { Err(fail(problems)) }
}

/// Parse TOML into a [`Config`]; a syntax or schema error is returned as one readable problem.
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| with_suggestion(&e.to_string()))
}

/// serde says "unknown field `domian`, expected one of `name`, `domains`, …" (or "unknown
/// variant `dns01`, expected `http-01` or `dns-01`"); add the likely fix.
fn with_suggestion(msg: &str) -> String {
    let Some(rest) = ["unknown field `", "unknown variant `"].iter().find_map(|m| msg.split(m).nth(1)) else { return msg.to_owned() };
    let Some(unknown) = rest.split('`').next() else { return msg.to_owned() };
    let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).filter(|s| !s.is_empty()).collect();
    match closest(unknown, &expected) {
        Some(best) => format!("{}\ndid you mean `{best}`?", msg.trim_end()),
        None => msg.to_owned(),
    }
}

fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Problems with their place in the file. [`validate`] and [`preflight`] each find some; [`load`]
/// merges both back into the order of the file, as if one pass had found them all.
///
/// It derefs to the list itself, so checks push to it like to any `Vec<String>`.
#[derive(Debug, Default)]
struct Problems {
    list: Vec<String>,
    /// (index in `list` from which on, place)
    places: Vec<(usize, Place)>,
}

/// (part, certificate, step): the order problems are listed in. Part 0 is the top of the file up
/// to [http01], part 1 the rest of the top, part 2 the certificates, each in steps 0..=3.
type Place = (u8, usize, u8);

const TOP: Place = (0, 0, 0);
const TOP_REST: Place = (1, 0, 0);

fn cert_place(i: usize) -> Place {
    (2, i, 0)
}

impl Problems {
    /// Problems pushed from now on belong at `place`.
    fn at(&mut self, place: Place) {
        self.places.push((self.list.len(), place));
    }

    /// Problems pushed from now on belong to `step` of the current certificate.
    fn step(&mut self, step: u8) {
        let (part, cert, _) = self.places.last().map_or(TOP, |p| p.1);
        self.at((part, cert, step));
    }

    fn placed(self) -> Vec<(Place, String)> {
        let places = self.places;
        self.list
            .into_iter()
            .enumerate()
            .map(|(i, p)| (places.iter().rev().find(|(from, _)| *from <= i).map_or(TOP, |(_, place)| *place), p))
            .collect()
    }
}

impl std::ops::Deref for Problems {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.list
    }
}

impl std::ops::DerefMut for Problems {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.list
    }
}

/// Everything [`validate`] and [`preflight`] find, in the order of the file.
fn all_problems(config: &Config, purpose: Purpose) -> Vec<String> {
    let mut all = validate(config).placed();
    all.extend(preflight(config, purpose).placed());
    // Stable: at one place, what the file itself shows comes before what the host shows.
    all.sort_by_key(|(place, _)| *place);
    all.into_iter().map(|(_, p)| p).collect()
}

/// Every problem of the configuration on this host: files that must be readable (TSIG key,
/// verify.password_file, CA bundles), directories that must be usable (install.dir and the
/// HTTP-01 webroot when writing), users and groups that must exist.
fn preflight(config: &Config, purpose: Purpose) -> Problems {
    let mut problems = Problems::default();
    preflight_acme(config, config.acme_cas().map(|(r, _)| r), purpose, &mut problems);
    for (i, cert) in config.certificates.iter().enumerate() {
        problems.at(cert_place(i));
        preflight_certificate(&cert_label(i, cert), cert, purpose, &mut problems);
    }
    problems
}

/// What stands in the way of renewing `cert` on this host now: the files it reads and the
/// install dir it writes, and for a certificate from the ACME CA the CA's ca_bundle and the
/// HTTP-01 webroot. Checked when the certificate is due, each time, so a volume mounted late or
/// a directory fixed by hand is noticed at the next attempt.
pub fn host_problems(config: &Config, cert: &CertificateConfig) -> Vec<String> {
    let mut problems = Problems::default();
    if cert.issuer.is_acme() {
        preflight_acme(config, cert.issuer.iter().cloned(), Purpose::Write, &mut problems);
    }
    preflight_certificate(&format!("[[certificate]] `{}`", cert.name), cert, Purpose::Write, &mut problems);
    problems.list
}

/// The host side of `[http01]` and of the ACME CAs `cas` (`[acme]`, `[acme_ca.NAME]`).
fn preflight_acme(config: &Config, cas: impl Iterator<Item = IssuerRef>, purpose: Purpose, problems: &mut Problems) {
    if let Some(dir) = &config.http01.webroot
        && purpose == Purpose::Write
        && !dir.is_dir()
    {
        problems.push(format!(
            "[http01] webroot {} is not a directory: point it at the document root your web server serves on port 80",
            dir.display()
        ));
    }
    for ca in cas {
        if let Some(bundle) = config.acme_config(&ca).and_then(|a| a.ca_bundle.as_ref())
            && let Err(e) = crate::certinfo::read_pem_certs(bundle)
        {
            problems.push(format!("{} ca_bundle: {e}", ca.section()));
        }
    }
}

/// The host side of one `[[certificate]]` (`at` names it in messages).
fn preflight_certificate(at: &str, cert: &CertificateConfig, purpose: Purpose, problems: &mut Problems) {
    if let Some(dns) = cert.dns01().or(cert.dns.as_ref().filter(|_| cert.dns_persist())) {
        crate::challenge::dns01::preflight(at, dns, problems);
    }
    problems.step(1);
    preflight_install(at, &cert.install, purpose, problems);
    problems.step(2);
    if let Some(verify) = &cert.verify_settings() {
        preflight_verify(at, verify, purpose, problems);
    }
}

/// Every problem the configuration itself shows, without looking at the host; empty means valid.
fn validate(config: &Config) -> Problems {
    let mut problems = Problems::default();
    match &config.acme {
        Some(acme) => validate_acme("[acme]", acme, &mut problems),
        None if config.certificates.iter().any(|c| c.issuer.iter().any(|i| *i == IssuerRef::Acme)) => problems.push(
            "no [acme] section, but a certificate has issuer \"acme\" (the default): add [acme] (see config.example.toml) or set issuer = \"ca:NAME\"".into(),
        ),
        None => {}
    }
    validate_acme_cas(config, &mut problems);
    if config.concurrency == 0 {
        problems.push("concurrency = 0: at least one certificate must be worked on; use 1 or more".into());
    }
    if config.renewal_timeout < Duration::from_secs(1) {
        problems.push("renewal_timeout must be at least 1s (default \"15m\"): it bounds each certificate's renewal".into());
    }
    if config.http01.webroot.is_some() && config.http01.listen.is_some() {
        problems.push("[http01] sets both `listen` and `webroot`: choose one way of answering HTTP-01".into());
    }
    problems.at(TOP_REST);
    if tokio_cron_scheduler::Job::new_async(config.daemon.check.as_str(), |_, _| Box::pin(async {})).is_err() {
        problems.push(format!(
            "[daemon] check = \"{}\" is not a cron expression with seconds, like \"0 */10 * * * *\" (sec min hour day month weekday)",
            config.daemon.check
        ));
    }
    if config.daemon.backoff.is_empty() || config.daemon.backoff.iter().any(Duration::is_zero) {
        problems.push("[daemon] backoff must list one or more non-zero waits, e.g. [\"1m\", \"5m\", \"1h\"]".into());
    }
    for (i, n) in config.notify.iter().enumerate() {
        crate::notify::validate(i, n, &mut problems);
    }
    for cert in &config.certificates {
        let Some(name) = cert.issuer.private_ca() else { continue };
        let Some(ca) = config.ca.get(name) else {
            problems.push(format!("[[certificate]] `{}`: issuer = \"ca:{name}\" but there is no [ca.{name}]", cert.name));
            continue;
        };
        // Bad entries are reported once, with the CA, below.
        let Ok(constraints) = ca.constraints() else { continue };
        for refused in constraints.refused(&cert.domains, &cert.ips) {
            problems.push(format!(
                "[[certificate]] `{}`: {refused} is not allowed by the name constraints of [ca.{name}]; clients would reject the certificate",
                cert.name
            ));
        }
    }
    for (name, ca) in &config.ca {
        if let Err(bad) = ca.constraints() {
            problems.extend(bad.into_iter().map(|b| format!("[ca.{name}] name_constraints: {b}")));
        }
        if let Err(e) = crate::obtain::local_ca::parse_subject(&ca.subject) {
            problems.push(format!("[ca.{name}] subject = \"{}\": {e}", ca.subject));
        }
        if ca.validity.is_zero() {
            problems.push(format!("[ca.{name}] validity must be longer than 0"));
        }
        if ca.validity > crate::obtain::local_ca::MAX_VALIDITY {
            problems.push(format!(
                "[ca.{name}] validity = \"{}\" is more than 100 years; use e.g. \"10y\"",
                humantime::format_duration(ca.validity)
            ));
        }
    }
    if let Some(cluster) = &config.cluster {
        problems.extend(cluster.problems());
        for cert in config.certificates.iter().filter(|c| c.fleet) {
            if let Some(ca) = cert.issuer.private_ca() {
                problems.push(format!(
                    "[[certificate]] `{}`: issuer = \"ca:{ca}\" in a fleet: the private CA's key is on this host only, so the fleet cannot share it; set `fleet = false` on it (each node issues its own)",
                    cert.name
                ));
            }
            if cert.dns01().is_none() && !cert.dns_persist() && config.http01.webroot.is_some() {
                problems.push(format!(
                    "[[certificate]] `{}`: a fleet answers HTTP-01 from every node's own responder (tokens in etcd): set [http01] listen instead of webroot, or use DNS-01",
                    cert.name
                ));
            }
        }
    }
    if config.certificates.is_empty() {
        problems.push("no [[certificate]] is configured: add one (see config.example.toml)".into());
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut files: HashMap<PathBuf, (usize, &str)> = HashMap::new();
    for (i, cert) in config.certificates.iter().enumerate() {
        let at = cert_label(i, cert);
        problems.at(cert_place(i));
        if let Some(prev) = names.insert(cert.name.as_str(), i) {
            problems.push(format!("{at}: name `{}` is used by certificate #{} too; names must be unique", cert.name, prev + 1));
        }
        validate_certificate(&at, cert, &mut problems);
        for acme in cert.issuer.iter().filter_map(|issuer| config.acme_config(issuer)) {
            check_lets_encrypt_ips(&at, cert, acme, &mut problems);
        }
        problems.step(3);
        for file in [cert.install.fullchain_path(), cert.install.key_path()] {
            if let Some((j, other)) = files.insert(file.clone(), (i, &cert.name))
                && j != i
            {
                problems.push(format!(
                    "{at}: writes {} which certificate `{other}` writes too; give each certificate its own files",
                    file.display()
                ));
            }
        }
    }
    problems
}

fn cert_label(i: usize, cert: &CertificateConfig) -> String {
    if cert.name.is_empty() { format!("[[certificate]] #{}", i + 1) } else { format!("[[certificate]] `{}`", cert.name) }
}

/// For an `http://` URL: is its host this machine (127.0.0.0/8, ::1, `localhost`)? `None` for
/// any other scheme. Plain HTTP is accepted only there (a test CA, a local webhook relay).
pub(crate) fn http_on_loopback(url: &str) -> Option<bool> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    Some(host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

/// The named ACME CAs (`[acme_ca.NAME]`) and the issuer lists that name them.
fn validate_acme_cas(config: &Config, problems: &mut Vec<String>) {
    for (name, acme) in &config.acme_ca {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            problems.push(format!("[acme_ca.{name}]: the name must use only letters, digits, '-', '_' and '.'"));
        }
        validate_acme(&format!("[acme_ca.{name}]"), acme, problems);
    }
    // Each CA keeps one account per directory URL; the same CA twice would share it (and
    // falling back to the CA that just failed gains nothing).
    let mut seen: HashMap<&str, IssuerRef> = HashMap::new();
    for (r, acme) in config.acme_cas() {
        if let Some(first) = seen.insert(acme.directory_url(), r.clone()) {
            problems.push(format!(
                "{} directory = \"{}\" is also the directory of {}: define each ACME CA once and name it in every certificate's `issuer` list",
                r.section(),
                acme.directory_url(),
                first.section()
            ));
        }
    }
    for cert in &config.certificates {
        let at = format!("[[certificate]] `{}`", cert.name);
        let list = &cert.issuer.0;
        if list.is_empty() {
            problems.push(format!("{at}: issuer = []: name at least one issuer, e.g. \"acme\""));
        }
        if list.len() > 1 && !cert.issuer.is_acme() {
            problems.push(format!(
                "{at}: issuer = {}: a private CA (\"ca:NAME\") cannot be in a list; only ACME CAs are tried in turn (clients trust a private CA's root only where it was given to them)",
                cert.issuer
            ));
        }
        for (i, r) in list.iter().enumerate() {
            if list[..i].contains(r) {
                problems.push(format!("{at}: issuer = {}: \"{r}\" is listed twice", cert.issuer));
            }
            if let IssuerRef::AcmeNamed(name) = r
                && !config.acme_ca.contains_key(name)
            {
                problems.push(format!("{at}: issuer \"{r}\" but there is no [acme_ca.{name}]: define it (directory, contact, accept_terms, …) or remove it from `issuer`"));
            }
        }
    }
}

fn validate_acme(at: &str, acme: &AcmeConfig, problems: &mut Vec<String>) {
    let url = acme.directory_url();
    if acme.timeout < Duration::from_secs(1) {
        problems.push(format!("{at} timeout must be at least 1s (default \"30s\"): it bounds each request to the CA"));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        problems.push(format!(
            "{at} directory = \"{}\": use \"letsencrypt\", \"letsencrypt-staging\" or the CA's directory URL (https://…)",
            acme.directory
        ));
    } else if http_on_loopback(url) == Some(false) {
        problems.push(format!(
            "{at} directory = \"{url}\": ACME needs HTTPS (RFC 8555 §6.1); plain http:// is accepted only for a CA on this host (127.0.0.1, ::1, localhost)"
        ));
    }
    if !acme.accept_terms {
        problems.push(format!(
            "{at} accept_terms is not true: the CA requires agreeing to its terms of service to create an account; \
             read them and set accept_terms = true"
        ));
    }
    for c in &acme.contact {
        if !c.starts_with("mailto:") || !c[7..].contains('@') {
            problems.push(format!("{at} contact \"{c}\": write contacts as \"mailto:ops@example.com\""));
        }
    }
    if let Some(profile) = &acme.profile {
        check_profile_name(&format!("{at} profile"), profile, problems);
    }
    if let Some(eab) = &acme.eab {
        if eab.kid.is_empty() {
            problems.push(format!("{at} eab.kid is empty: copy the key identifier your CA gave you"));
        }
        if crate::obtain::account::decode_hmac_key(&eab.hmac_key).is_err() {
            problems.push(format!("{at} eab.hmac_key is not base64: copy the HMAC key exactly as your CA gave it"));
        }
    }
}

/// A profile name as the CA lists it in its directory (`meta.profiles`): whether the CA offers it
/// is checked against the directory before ordering.
fn check_profile_name(at: &str, profile: &str, problems: &mut Vec<String>) {
    if profile.is_empty() || !profile.chars().all(|c| c.is_ascii_graphic() && c != '"') {
        problems.push(format!(
            "{at} = \"{}\" is not a profile name: use a name from the CA's directory (meta.profiles), e.g. \"tlsserver\" or \"shortlived\"; leave it out for the CA's default",
            profile.escape_default()
        ));
    }
}

fn validate_certificate(at: &str, cert: &CertificateConfig, problems: &mut Problems) {
    if cert.name.is_empty() || !cert.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || cert.name.starts_with('.') {
        problems.push(format!(
            "{at}: name \"{}\" must be non-empty and use only letters, digits, '-', '_' and '.' (it names a directory in state_dir)",
            cert.name
        ));
    }
    let acme = cert.issuer.is_acme();
    let client = cert.usage == Usage::Client;
    validate_usage(at, cert, problems);
    if cert.domains.is_empty() && cert.ips.is_empty() && !client {
        problems.push(format!("{at}: domains is empty: list at least one DNS name, or IP address in `ips`"));
    }
    for d in &cert.domains {
        if let Err(why) = check_domain(d) {
            problems.push(format!("{at}: domain \"{d}\" {why}"));
        } else if d.starts_with("*.") && acme && cert.dns.is_none() && !cert.dns_persist() {
            problems.push(format!("{at}: wildcard \"{d}\" cannot be validated with HTTP-01; a wildcard needs the DNS-01 challenge"));
        }
    }
    match (cert.challenge, &cert.dns) {
        (Some(ChallengeKind::DnsPersist01), _) if !acme => problems.push(format!(
            "{at}: challenge = \"dns-persist-01\" is an ACME challenge; a private CA (issuer = \"{}\") needs none: remove `challenge`",
            cert.issuer
        )),
        (None | Some(ChallengeKind::Dns01), Some(dns)) => crate::challenge::dns01::validate(at, dns, problems),
        (Some(ChallengeKind::Dns01), None) => {
            problems.push(format!("{at}: challenge = \"dns-01\" needs dns = {{ provider = \"rfc2136\" | \"exec\", … }}"))
        }
        (Some(ChallengeKind::Http01), Some(_)) => problems.push(format!("{at}: `dns` is set but challenge = \"http-01\"; remove one")),
        (Some(ChallengeKind::DnsPersist01), Some(dns)) => crate::challenge::dns_persist::validate(at, dns, problems),
        (None | Some(ChallengeKind::Http01 | ChallengeKind::DnsPersist01), None) => {}
    }
    problems.step(1);
    if acme && !cert.ips.is_empty() {
        check_ip_challenge(at, cert, problems);
    }
    if acme && cert.validity.is_some() {
        problems.push(format!(
            "{at}: validity applies to private-CA certificates only; an ACME CA decides the lifetime (choose it with `profile`)"
        ));
    }
    if let Some(profile) = &cert.profile {
        if !acme {
            problems.push(format!("{at}: profile applies to ACME certificates only; a private CA's leaves last `validity`"));
        }
        check_profile_name(&format!("{at}: profile"), profile, problems);
    }
    if let Some(preferred) = &cert.preferred_chain {
        if !acme {
            problems.push(format!("{at}: preferred_chain applies to ACME certificates only; a private CA has one chain"));
        }
        if preferred.trim().is_empty() {
            problems.push(format!(
                "{at}: preferred_chain is empty: name the issuer (common name) of the chain's topmost certificate, e.g. \"ISRG Root X2\", or remove it"
            ));
        }
    }
    validate_lifetime(at, cert, acme, problems);
    if let Some(t) = &cert.trust {
        if acme && !t.docker_clients.is_empty() {
            problems.push(format!("{at}: trust.docker_clients is for certificates from a private CA (issuer = \"ca:NAME\")"));
        }
        if client && t.docker_clients.is_empty() {
            problems.push(format!(
                "{at}: [certificate.trust] on a client certificate needs registries = [\"HOST:PORT\"], the registries that ask for it \
                 (containerd's hosts.toml for each lists the installed pair); add them, or remove [certificate.trust]"
            ));
        }
        for r in &t.docker_clients {
            if crate::trust::check_registry(r).is_err() {
                problems.push(format!("{at}: trust.docker_clients entry \"{r}\" is not HOST or HOST:PORT"));
            }
        }
        if let Err(e) = crate::trust::parse_runtimes(&t.runtimes) {
            problems.push(format!("{at}: trust.runtimes: {e}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for d in &cert.domains {
        if !seen.insert(d.to_ascii_lowercase()) {
            problems.push(format!("{at}: domain \"{d}\" is listed twice"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for ip in cert.ips.iter().filter(|ip| !seen.insert(**ip)) {
        problems.push(format!("{at}: ips lists {ip} twice"));
    }
    if cert.renew_before.is_some_and(|rb| rb.is_zero()) {
        problems.push(format!("{at}: renew_before = 0 would never renew; remove it to use the default (a third of the lifetime)"));
    }
    validate_install(at, &cert.install, problems);
    problems.step(2);
    if let Some(reload) = &cert.reload {
        crate::reload::config::validate(at, reload, problems);
    }
    if let Some(verify) = &cert.verify_settings() {
        validate_verify(at, cert, verify, problems);
    }
}

/// `usage` and `client_name`: a client certificate comes from a private CA, has a name, and is
/// installed where Docker and podman read it as one.
fn validate_usage(at: &str, cert: &CertificateConfig, problems: &mut Vec<String>) {
    if cert.usage == Usage::Server {
        if cert.client_name.is_some() {
            problems.push(format!("{at}: client_name applies to usage = \"client\" only; remove it, or set usage = \"client\""));
        }
        return;
    }
    if cert.issuer.private_ca().is_none() {
        problems.push(format!(
            "{at}: usage = \"client\" needs a private CA: set issuer = \"ca:NAME\" with a [ca.NAME]; Let's Encrypt and other \
             public ACME CAs no longer issue client-authentication certificates"
        ));
    }
    match cert.client_name.as_deref() {
        None => problems.push(format!(
            "{at}: usage = \"client\" needs client_name = \"…\", the name the certificate gives the client (its subject CN), e.g. \"ci-runner-1\""
        )),
        Some(n) if n.trim().is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control() || ",+=\"\\<>;#".contains(c)) => {
            problems.push(format!(
                "{at}: client_name = \"{}\" must be 1 to 64 characters without control characters or any of , + = \" \\ < > ; #",
                n.escape_default()
            ))
        }
        Some(_) => {}
    }
    // Docker and podman read every *.crt in certs.d/HOST:PORT as a CA root, and pair X.cert with X.key.
    let install = &cert.install;
    if install.dir.components().any(|c| c.as_os_str() == "certs.d") && install.fullchain.ends_with(".crt") {
        problems.push(format!(
            "{at}: install.fullchain = \"{}\" in {}: Docker and podman read *.crt there as CA roots, not as a client certificate; \
             use fullchain = \"client.cert\" and key = \"client.key\"",
            install.fullchain,
            install.dir.display()
        ));
    }
    if let Some(stem) = install.fullchain.strip_suffix(".cert")
        && install.key != format!("{stem}.key")
    {
        problems.push(format!(
            "{at}: install.key = \"{}\": Docker and podman take the key of {} from {stem}.key; set key = \"{stem}.key\"",
            install.key, install.fullchain
        ));
    }
}

/// An ACME CA validates an IP address only by connecting to it (HTTP-01 or TLS-ALPN-01, RFC
/// 8738): no DNS record can prove control of an address, so a DNS-based challenge is refused
/// here rather than by the CA at the first renewal.
fn check_ip_challenge(at: &str, cert: &CertificateConfig, problems: &mut Problems) {
    let challenge = match (cert.challenge, &cert.dns) {
        (Some(ChallengeKind::Http01), _) | (None, None) => return,
        (Some(kind), _) => format!("challenge = \"{}\"", kind.as_str()),
        (None, Some(_)) => "DNS-01 (`dns` is set)".to_owned(),
    };
    let ips: Vec<String> = cert.ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    problems.push(format!(
        "{at}: ips = [{}] cannot be validated with {challenge}: an ACME CA validates IP addresses only by connecting to them (RFC 8738), never through DNS, \
         and regcert answers that with HTTP-01; use challenge = \"http-01\" (the default, without `dns`) for this certificate, or move the IPs into a [[certificate]] of their own that uses HTTP-01",
        ips.join(", ")
    ));
}

/// What Let's Encrypt certifies for IP addresses (since 2026-01-15): public addresses only, under
/// the `shortlived` profile only. Any other order would be refused at the CA; say it now.
fn check_lets_encrypt_ips(at: &str, cert: &CertificateConfig, acme: &AcmeConfig, problems: &mut Problems) {
    if cert.ips.is_empty() || ![LETSENCRYPT, LETSENCRYPT_STAGING].contains(&acme.directory_url()) {
        return;
    }
    for ip in cert.ips.iter().filter(|ip| !is_public_ip(ip)) {
        problems.push(format!(
            "{at}: ips: {ip} is not a public address (private, loopback, link-local, shared or reserved), and Let's Encrypt certifies public IP addresses only; \
             give it a certificate from a private CA (issuer = \"ca:NAME\")"
        ));
    }
    if cert.acme_profile(acme) != Some("shortlived") {
        problems.push(format!(
            "{at}: Let's Encrypt issues IP address certificates only under the \"shortlived\" profile (160 hours): set profile = \"shortlived\" on this certificate"
        ));
    }
}

/// Is `ip` an address of the public internet (not private, loopback, link-local, CGNAT, documentation,
/// multicast or otherwise reserved)? std's `is_global` is not stable yet.
fn is_public_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(&IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            // Global unicast is 2000::/3; within it, documentation (2001:db8::/32) is not public.
            (first & 0xe000) == 0x2000 && !(first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A private-CA leaf's `validity` and `renew_before` must leave time between two renewals:
/// otherwise every check renews it again.
fn validate_lifetime(at: &str, cert: &CertificateConfig, acme: bool, problems: &mut Problems) {
    use crate::obtain::local_ca::{DEFAULT_LEAF_VALIDITY, MAX_VALIDITY};
    // Whole days as "90d" (humantime would say "2months 29days 2h 52m 48s").
    let fmt = |d: Duration| match d.as_secs() {
        s if s % 86_400 == 0 && d.subsec_nanos() == 0 => format!("{}d", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    };
    match cert.validity {
        Some(v) if v.is_zero() => {
            problems.push(format!("{at}: validity = \"0s\" would issue certificates that are already expired; use e.g. \"90d\""))
        }
        Some(v) if v > MAX_VALIDITY => {
            problems.push(format!("{at}: validity = \"{}\" is more than 100 years; use e.g. \"90d\"", fmt(v)));
        }
        _ => {}
    }
    let validity = cert.validity.unwrap_or(DEFAULT_LEAF_VALIDITY);
    if !acme
        && !validity.is_zero()
        && let Some(rb) = cert.renew_before.filter(|rb| !rb.is_zero() && *rb >= validity)
    {
        let whose = if cert.validity.is_some() { "validity" } else { "the default validity" };
        problems.push(format!(
            "{at}: renew_before = \"{}\" is not shorter than {whose} \"{}\": every check would renew it again; \
             make renew_before shorter (or remove it: a third of the lifetime)",
            fmt(rb),
            fmt(validity)
        ));
    }
}

fn validate_verify(at: &str, cert: &CertificateConfig, verify: &VerifyConfig, problems: &mut Problems) {
    if cert.usage == Usage::Client {
        if verify.url.is_none() {
            problems.push(format!(
                "{at}: a client certificate is verified against the registry it is for: set [certificate.verify] url, e.g. \"https://registry.corp.lan:5000/v2/\""
            ));
        }
        if verify.client_cert.is_some() || verify.client_key.is_some() {
            problems.push(format!(
                "{at}: verify.client_cert / client_key: a client certificate's verification presents the certificate itself (as installed); remove them"
            ));
        }
    } else if verify.client_cert.is_some() != verify.client_key.is_some() {
        problems.push(format!("{at}: verify.client_cert and verify.client_key go together; set both or neither"));
    }
    let url = cert.verify_url(verify);
    if !url.starts_with("https://") || url.parse::<hyper::Uri>().map(|u| u.host().is_none()).unwrap_or(true) {
        problems.push(format!("{at}: verify.url \"{url}\" must be an https:// URL such as \"https://registry.example.com:5000/v2/\""));
    }
    if verify.username.is_some() != verify.password_file.is_some() {
        problems.push(format!("{at}: verify.username and verify.password_file go together; set both or neither"));
    }
    problems.step(3);
    if verify.timeout.is_zero() {
        problems.push(format!("{at}: verify.timeout = 0 leaves no time for the registry to restart; use e.g. \"60s\""));
    }
}

fn preflight_verify(at: &str, verify: &VerifyConfig, purpose: Purpose, problems: &mut Vec<String>) {
    if purpose == Purpose::Write
        && let Some(p) = &verify.password_file
        && let Err(e) = std::fs::read_to_string(p)
    {
        problems.push(format!("{at}: verify.password_file {}: {e}", p.display()));
    }
    if let Some(bundle) = &verify.ca_bundle
        && let Err(e) = crate::certinfo::read_pem_certs(bundle)
    {
        problems.push(format!("{at}: verify.ca_bundle: {e}"));
    }
    // client_cert / client_key are read at each check, not here: they are often the pair
    // another [[certificate]] of this file installs, which does not exist before its first run.
}

fn validate_install(at: &str, install: &InstallConfig, problems: &mut Vec<String>) {
    for (key, file) in [("fullchain", &install.fullchain), ("key", &install.key)] {
        if file.is_empty() || file.contains('/') || file == "." || file == ".." {
            problems.push(format!("{at}: install.{key} = \"{file}\" must be a plain file name inside install.dir"));
        }
    }
    if install.fullchain == install.key {
        problems.push(format!("{at}: install.fullchain and install.key are both \"{}\"; use two files", install.key));
    }
    if install.key_mode.for_others() {
        problems.push(format!(
            "{at}: install.key_mode = \"{}\" lets every user {} the private key; use \"0600\" or \"0640\" with a group",
            install.key_mode,
            install.key_mode.others_access()
        ));
    }
}

fn preflight_install(at: &str, install: &InstallConfig, purpose: Purpose, problems: &mut Vec<String>) {
    if let Some(owner) = &install.owner
        && crate::fsutil::lookup_user(owner).is_none()
    {
        problems.push(format!("{at}: install.owner \"{owner}\" is not a user on this host"));
    }
    if let Some(group) = &install.group
        && crate::fsutil::lookup_group(group).is_none()
    {
        problems.push(format!("{at}: install.group \"{group}\" is not a group on this host"));
    }
    if purpose == Purpose::Write
        && let Err(e) = crate::fsutil::check_writable_dir(&install.dir)
    {
        problems.push(format!("{at}: install.dir {e}"));
    }
}

/// Parse an octal mode such as "0644"; only permission bits are accepted.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("= \"{s}\" is not an octal file mode like \"0644\"")),
    }
}

/// Syntax of a DNS name as ACME CAs accept it (LDH labels, optional leading `*.`).
pub fn check_domain(d: &str) -> Result<(), &'static str> {
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address: list IP addresses in `ips`, not in `domains`");
    }
    let name = d.strip_prefix("*.").unwrap_or(d);
    if name.is_empty() || name.len() > 253 {
        return Err("is not a valid DNS name (empty or longer than 253 characters)");
    }
    if name.ends_with('.') {
        return Err("ends with a dot: write it without the trailing dot");
    }
    if d != d.to_ascii_lowercase() {
        return Err("has upper-case letters: write DNS names in lower case");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(
                "is not a valid DNS name (labels are 1-63 letters, digits or '-', not starting or ending with '-'; use punycode for IDNs)",
            );
        }
    }
    Ok(())
}

impl Config {
    /// The certificates `--cert` selects (all when none is named); unknown names are an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&CertificateConfig>, String> {
        if names.is_empty() {
            return Ok(self.certificates.iter().collect());
        }
        let mut out = Vec::new();
        for n in names {
            match self.certificates.iter().find(|c| &c.name == n) {
                Some(c) => out.push(c),
                None => {
                    let known: Vec<&str> = self.certificates.iter().map(|c| c.name.as_str()).collect();
                    return Err(format!("--cert {n}: no such certificate in the config (known: {})", known.join(", ")));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_closest_key() {
        let msg = "unknown field `domian`, expected one of `name`, `domains`, `key`";
        assert!(with_suggestion(msg).ends_with("did you mean `domains`?"));
        assert_eq!(with_suggestion("unknown field `zzzzzz`, expected `name`"), "unknown field `zzzzzz`, expected `name`");
    }

    #[test]
    fn domain_syntax() {
        assert!(check_domain("registry.example.com").is_ok());
        assert!(check_domain("*.example.com").is_ok());
        assert!(check_domain("-bad.example.com").is_err());
        assert!(check_domain("Registry.example.com").is_err());
        assert!(check_domain("a..b").is_err());
        assert!(check_domain("192.168.1.1").is_err());
        assert!(check_domain("under_score.example").is_err());
    }

    #[test]
    fn acme_ip_certificates_are_validated_over_http01_only() {
        let ips = "ips = [\"9.9.9.9\", \"2001:4860::8\"]\nprofile = \"shortlived\"";
        let p = problems(ips, "");
        assert!(p.iter().all(|p| !p.contains("ips")), "HTTP-01 (the default) with public IPs is fine: {p:?}");
        let p = problems(&format!("{ips}\nchallenge = \"dns-01\"\ndns = {{ provider = \"exec\", command = [\"/bin/true\"] }}"), "");
        let refused: Vec<&String> = p.iter().filter(|p| p.contains("cannot be validated with")).collect();
        assert_eq!(refused.len(), 1, "{p:?}");
        for want in ["`r`", "ips = [\"9.9.9.9\", \"2001:4860::8\"]", "challenge = \"dns-01\"", "use challenge = \"http-01\""] {
            assert!(refused[0].contains(want), "{want:?} not in {refused:?}");
        }
        let p = problems(&format!("{ips}\ndns = {{ provider = \"exec\", command = [\"/bin/true\"] }}"), "");
        assert!(p.iter().any(|p| p.contains("cannot be validated with DNS-01 (`dns` is set)")), "{p:?}");
        let p = problems("ips = [\"9.9.9.9\", \"9.9.9.9\"]\nprofile = \"shortlived\"", "");
        assert!(p.iter().any(|p| p.contains("ips lists 9.9.9.9 twice")), "{p:?}");
        let p = problems("domains = [\"10.0.0.5\"]", "");
        assert!(p.iter().any(|p| p.contains("list IP addresses in `ips`")), "{p:?}");
    }

    #[test]
    fn lets_encrypt_certifies_public_ips_under_the_shortlived_profile_only() {
        let p = problems("ips = [\"10.0.0.5\", \"::1\", \"198.51.100.1\", \"8.8.8.8\"]", "");
        for bad in ["10.0.0.5", "::1", "198.51.100.1"] {
            assert!(p.iter().any(|p| p.contains(&format!("ips: {bad} is not a public address"))), "{bad}: {p:?}");
        }
        assert!(!p.iter().any(|p| p.contains("8.8.8.8")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("only under the \"shortlived\" profile") && p.contains("`r`")), "{p:?}");
        // Another CA (Pebble, a private ACME CA) decides for itself.
        let other = config("ips = [\"127.0.0.1\"]", "").replace("\"letsencrypt\"", "\"https://127.0.0.1:14000/dir\"");
        assert!(validate(&parse(&other).unwrap()).list.is_empty());
        for (ip, public) in [
            ("100.64.0.1", false),
            ("169.254.1.1", false),
            ("192.0.2.1", false),
            ("224.0.0.1", false),
            ("1.1.1.1", true),
            ("fd00::1", false),
            ("fe80::1", false),
            ("2001:db8::1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:1.1.1.1", true),
            ("2a00:1450::1", true),
        ] {
            assert_eq!(is_public_ip(&ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("7777").is_err());
    }

    #[test]
    fn example_config_parses() {
        let cfg = parse(include_str!("../config.example.toml")).unwrap();
        assert_eq!(cfg.certificates[0].install.fullchain, "domain.crt");
        assert_eq!(cfg.http01.mode(), Http01Mode::Listen("[::]:80".parse().unwrap()));
        let cert = &cfg.certificates[0];
        assert!(matches!(cert.reload.as_ref().unwrap().actions[..], [crate::reload::config::ReloadAction::Docker(_)]));
        assert_eq!(cert.verify_settings().unwrap().timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_examples_fallback_ca_works_uncommented() {
        let example = include_str!("../config.example.toml");
        // The commented [acme_ca.zerossl] block (up to the blank line) and the issuer list.
        let mut in_block = false;
        let mut lines = Vec::new();
        for l in example.lines() {
            in_block = (in_block && !l.is_empty()) || l == "# [acme_ca.zerossl]";
            let uncomment = in_block || l.starts_with("# issuer = [");
            lines.push(if uncomment {
                l.trim_start_matches("# ")
            } else if l == "issuer = \"acme\"" {
                ""
            } else {
                l
            });
        }
        let uncommented = lines.join("\n");
        let cfg = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(cfg.acme_ca["zerossl"].directory_url(), "https://acme.zerossl.com/v2/DV90");
        assert_eq!(cfg.certificates[0].issuer.0, [IssuerRef::Acme, IssuerRef::AcmeNamed("zerossl".into())]);
        assert_eq!(validate(&cfg).list, Vec::<String>::new());
    }

    #[test]
    fn the_examples_cluster_table_works_uncommented() {
        let example = include_str!("../config.example.toml");
        let mut in_block = false;
        let mut lines = Vec::new();
        for l in example.lines() {
            in_block = (in_block && l.starts_with("# ") && !l.starts_with("# Every")) || l == "# [cluster]";
            lines.push(if in_block && !l.starts_with("#  ") { l.trim_start_matches("# ") } else { l });
        }
        let uncommented = lines.join("\n");
        let cfg = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let cluster = cfg.cluster.as_ref().unwrap();
        assert_eq!((cluster.node_name(), cluster.key_prefix(), cluster.max_unavailable), ("reg-a".into(), "/regcert/".into(), 1));
        assert_eq!(cluster.issue_alone_within, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(validate(&cfg).list, Vec::<String>::new());
    }

    #[test]
    fn a_cluster_table_is_checked_and_a_private_ca_certificate_must_stay_the_nodes_own() {
        let cluster = "[cluster]\nendpoints = [\"https://10.0.0.1:2379\", \"etcd:2379\"]\nsecret_key_file = \"/k\"\nprefix = \"/\"\n\
                       node = \"reg a\"\nmax_unavailable = 0\nclient_cert = \"/c\"\nuser = \"u\"\n";
        let text = format!("{cluster}{}", config("", ""));
        let found = validate(&parse(&text).unwrap()).list.join("\n");
        for expected in [
            "`etcd:2379` is not an http:// or https:// URL",
            "endpoints use https: set ca_bundle",
            "client_cert and client_key go together",
            "user and password_file go together",
            "prefix = \"/\"",
            "node = \"reg a\"",
            "max_unavailable = 0",
        ] {
            assert!(found.contains(expected), "{expected:?} not in:\n{found}");
        }
        let ok = "[cluster]\nendpoints = [\"http://127.0.0.1:2379\"]\nsecret_key_file = \"/k\"\n[ca.internal]\nsubject = \"CN=x\"\n";
        let private = format!("{ok}{}", config("issuer = \"ca:internal\"\ndomains = [\"r.lan\"]", ""));
        let found = validate(&parse(&private).unwrap()).list.join("\n");
        assert!(found.contains("set `fleet = false` on it"), "{found}");
        let own = format!("{ok}{}", config("issuer = \"ca:internal\"\ndomains = [\"r.lan\"]\nfleet = false", ""));
        assert_eq!(validate(&parse(&own).unwrap()).list, Vec::<String>::new());
        let webroot = format!("{ok}[http01]\nwebroot = \"/var/www\"\n{}", config("domains = [\"r.example.com\"]", ""));
        assert!(validate(&parse(&webroot).unwrap()).list.join("\n").contains("set [http01] listen instead of webroot"));
    }

    /// A valid config with one certificate; `extra` goes into the certificate table, `after` after
    /// its install table.
    fn config(extra: &str, after: &str) -> String {
        format!(
            "[acme]\ndirectory = \"letsencrypt\"\naccept_terms = true\n[[certificate]]\nname = \"r\"\n{extra}\n\
             [certificate.install]\ndir = \"/nonexistent/certs\"\n{after}\n"
        )
    }

    fn problems(extra: &str, after: &str) -> Vec<String> {
        validate(&parse(&config(extra, after)).unwrap()).list
    }

    fn round_trip(cfg: &Config) -> Config {
        let text = toml::to_string_pretty(cfg).unwrap();
        let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(toml::to_string_pretty(&back).unwrap(), text);
        back
    }

    #[test]
    fn client_certificates_need_a_private_ca_a_name_and_docker_file_names() {
        let ca = "[ca.internal]\n";
        let client = |extra: &str, install: &str| {
            let text = format!(
                "{ca}[[certificate]]\nname = \"c\"\nusage = \"client\"\n{extra}\n[certificate.install]\ndir = \"/etc/docker/certs.d/r.lan:5000\"\n{install}\n"
            );
            validate(&parse(&text).unwrap()).list
        };
        let good = "fullchain = \"client.cert\"\nkey = \"client.key\"";
        assert_eq!(client("issuer = \"ca:internal\"\nclient_name = \"ci-runner-1\"", good), Vec::<String>::new());
        let acme = problems("usage = \"client\"\nclient_name = \"ci\"", "");
        assert!(acme.iter().any(|p| p.contains("needs a private CA") && p.contains("no longer issue client-authentication")), "{acme:?}");
        let unnamed = client("issuer = \"ca:internal\"", good);
        assert!(unnamed.len() == 1 && unnamed[0].contains("needs client_name"), "{unnamed:?}");
        let bad = client("issuer = \"ca:internal\"\nclient_name = \"a,b\"", good);
        assert!(bad.len() == 1 && bad[0].contains("client_name = \"a,b\""), "{bad:?}");
        // The defaults (domain.crt) would be read by Docker as a CA root.
        let crt = client("issuer = \"ca:internal\"\nclient_name = \"ci\"", "");
        assert!(crt.len() == 1 && crt[0].contains("read *.crt there as CA roots") && crt[0].contains("client.cert"), "{crt:?}");
        let unpaired = client("issuer = \"ca:internal\"\nclient_name = \"ci\"", "fullchain = \"client.cert\"\nkey = \"other.key\"");
        assert!(unpaired.len() == 1 && unpaired[0].contains("set key = \"client.key\""), "{unpaired:?}");
        // Verified against the registry it is for: the URL is required, and it presents itself.
        let verify = client(
            "issuer = \"ca:internal\"\nclient_name = \"ci\"",
            &format!("{good}\n[certificate.verify]\nclient_cert = \"/x.cert\"\nclient_key = \"/x.key\""),
        );
        assert!(verify.iter().any(|p| p.contains("set [certificate.verify] url")), "{verify:?}");
        assert!(verify.iter().any(|p| p.contains("presents the certificate itself")), "{verify:?}");
        let server = problems("domains = [\"a.example.com\"]\nclient_name = \"ci\"", "[certificate.verify]\nclient_cert = \"/x.cert\"");
        assert!(server.iter().any(|p| p.contains("client_name applies to usage = \"client\" only")), "{server:?}");
        assert!(server.iter().any(|p| p.contains("client_cert and verify.client_key go together")), "{server:?}");
        // [certificate.trust] on a client certificate names the registries that ask for it.
        let named = "issuer = \"ca:internal\"\nclient_name = \"ci\"";
        let trust = |t: &str| client(named, &format!("{good}\n[certificate.trust]\n{t}"));
        assert_eq!(trust("registries = [\"r.lan:5000\"]\nruntimes = [\"containerd\"]"), Vec::<String>::new());
        let none = trust("runtimes = [\"containerd\"]");
        assert!(none.len() == 1 && none[0].contains("on a client certificate needs registries = [\"HOST:PORT\"]"), "{none:?}");
    }

    #[test]
    fn dns_persist_needs_no_provider_covers_wildcards_and_is_acme_only() {
        let persist = "challenge = \"dns-persist-01\"";
        assert_eq!(problems(&format!("domains = [\"a.example.com\", \"*.a.example.com\"]\n{persist}"), ""), Vec::<String>::new());
        let cert = parse(&config(&format!("domains = [\"a.example.com\"]\n{persist}"), "")).unwrap().certificates.remove(0);
        assert!(cert.dns_persist() && cert.dns01().is_none(), "its `dns` only creates the persistent record");
        let delegated =
            "dns = { provider = \"exec\", command = [\"/bin/true\"], nameservers = [\"127.0.0.1\"], delegate = \"x.example.net.\" }";
        let got = problems(&format!("domains = [\"a.example.com\"]\n{persist}\n{delegated}"), "");
        assert!(got.len() == 1 && got[0].contains("remove `delegate`"), "{got:?}");
        let got =
            problems(&format!("domains = [\"a.example.com\"]\nissuer = \"ca:internal\"\n{persist}"), "[ca.internal]\nsubject = \"CN=x\"");
        assert!(got.iter().any(|p| p.contains("dns-persist-01\" is an ACME challenge")), "{got:?}");
    }

    #[test]
    fn issuer_lists_name_acme_cas_tried_in_turn() {
        let named = "[acme_ca.zerossl]\ndirectory = \"https://acme.zerossl.com/v2/DV90\"\naccept_terms = true\n";
        let text =
            |issuer: &str, extra: &str| format!("{extra}{}", config(&format!("domains = [\"a.example.com\"]\nissuer = {issuer}"), ""));
        let cfg = parse(&text("[\"acme\", \"acme:zerossl\"]", named)).unwrap();
        assert_eq!(validate(&cfg).list, Vec::<String>::new());
        let cert = &cfg.certificates[0];
        assert_eq!(cert.issuer.0, [IssuerRef::Acme, IssuerRef::AcmeNamed("zerossl".into())]);
        assert!(cert.issuer.is_acme());
        assert_eq!(cert.issuer.to_string(), "[\"acme\", \"acme:zerossl\"]");
        assert_eq!(round_trip(&cfg).certificates[0].issuer, cert.issuer);
        // A single string keeps working, and stays a string when written back.
        let cfg = parse(&text("\"acme:zerossl\"", named)).unwrap();
        assert_eq!(cfg.certificates[0].issuer.0, [IssuerRef::AcmeNamed("zerossl".into())]);
        assert!(toml::to_string(&cfg).unwrap().contains("issuer = \"acme:zerossl\""));

        let problems_of = |issuer: &str, extra: &str| validate(&parse(&text(issuer, extra)).unwrap()).list;
        let p = problems_of("[\"acme\", \"acme:nope\"]", "");
        assert!(p.iter().any(|p| p.contains("issuer \"acme:nope\" but there is no [acme_ca.nope]")), "{p:?}");
        let p = problems_of("[\"acme\", \"ca:internal\"]", "[ca.internal]\n");
        assert!(p.iter().any(|p| p.contains("a private CA (\"ca:NAME\") cannot be in a list")), "{p:?}");
        let p = problems_of("[\"acme\", \"acme\"]", "");
        assert!(p.iter().any(|p| p.contains("\"acme\" is listed twice")), "{p:?}");
        let p = problems_of("[]", "");
        assert!(p.iter().any(|p| p.contains("issuer = []")), "{p:?}");
        let same = "[acme_ca.le]\ndirectory = \"https://acme-v02.api.letsencrypt.org/directory\"\naccept_terms = true\n";
        let p = problems_of("[\"acme\", \"acme:le\"]", same);
        assert!(p.iter().any(|p| p.contains("[acme_ca.le] directory") && p.contains("also the directory of [acme]")), "{p:?}");
        // A named CA's own mistakes name its table.
        let p = problems_of("\"acme:x\"", "[acme_ca.x]\ndirectory = \"ftp://x\"\n");
        assert!(p.iter().any(|p| p.starts_with("[acme_ca.x] directory = \"ftp://x\"")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("[acme_ca.x] accept_terms is not true")), "{p:?}");
        let e = parse(&text("\"zerossl\"", named)).unwrap_err();
        assert!(e.contains("\"acme:NAME\" for an ACME CA defined as [acme_ca.NAME]"), "{e}");
    }

    #[test]
    fn pure_validation_needs_no_host() {
        assert_eq!(problems("domains = [\"a.example.com\"]", ""), Vec::<String>::new());
        assert_eq!(
            problems("domains = [\"*.example.com\"]", ""),
            ["[[certificate]] `r`: wildcard \"*.example.com\" cannot be validated with HTTP-01; a wildcard needs the DNS-01 challenge"]
        );
        assert_eq!(
            problems("domains = [\"a.example.com\"]\nchallenge = \"dns-01\"", ""),
            ["[[certificate]] `r`: challenge = \"dns-01\" needs dns = { provider = \"rfc2136\" | \"exec\", … }"]
        );
        assert_eq!(
            problems("domains = [\"a.example.com\"]\nchallenge = \"http-01\"\ndns = { provider = \"exec\", command = [\"x\"] }", ""),
            ["[[certificate]] `r`: `dns` is set but challenge = \"http-01\"; remove one"]
        );
        assert_eq!(
            problems("domains = [\"*.example.com\"]\ndns = { provider = \"exec\", nameservers = [\"192.0.2.53\"] }", ""),
            ["[[certificate]] `r`: dns.command is required for provider \"exec\", e.g. [\"/usr/local/bin/dns-hook\"]"]
        );
        assert_eq!(
            problems(
                "domains = [\"a.example.com\"]",
                "key_mode = \"0644\"\n[certificate.reload]\ndocker = { container = \"r\", action = \"signal\" }"
            ),
            [
                "[[certificate]] `r`: install.key_mode = \"0644\" lets every user read the private key; use \"0600\" or \"0640\" with a group",
                "[[certificate]] `r`: reload.docker action = \"signal\" needs `signal`, e.g. \"SIGHUP\"",
            ]
        );
        assert_eq!(
            problems("domains = [\"a.example.com\"]", "key_mode = \"0603\""),
            [
                "[[certificate]] `r`: install.key_mode = \"0603\" lets every user write and execute the private key; use \"0600\" or \"0640\" with a group"
            ]
        );
        // Host facts are preflight's: a TSIG key file that is not there, an unknown owner.
        let cfg = parse(&config(
            "domains = [\"a.example.com\"]\ndns = { provider = \"rfc2136\", server = \"10.0.0.53\", zone = \"example.com.\", tsig_key = \"/nonexistent/k\" }",
            "owner = \"no-such-user-regcert\"",
        ))
        .unwrap();
        assert!(validate(&cfg).is_empty(), "{:?}", validate(&cfg));
        let host = preflight(&cfg, Purpose::Read);
        assert!(host.len() == 2 && host[0].contains("dns.tsig_key /nonexistent/k") && host[1].contains("install.owner"), "{host:?}");
        assert!(preflight(&cfg, Purpose::Write).iter().any(|p| p.contains("install.dir /nonexistent/certs")));
    }

    #[test]
    fn trust_runtimes_are_checked_and_registries_is_docker_clients() {
        let with_trust = |trust: &str| {
            let text = format!(
                "[ca.internal]\nsubject = \"CN=T\"\n[[certificate]]\nname = \"r\"\nissuer = \"ca:internal\"\ndomains = [\"r.corp.lan\"]\n\
                 [certificate.install]\ndir = \"/nonexistent/certs\"\n[certificate.trust]\n{trust}\n"
            );
            let cfg = parse(&text).unwrap();
            (validate(&cfg).list, cfg.certificates[0].trust.clone().unwrap())
        };
        let (p, t) = with_trust("registries = [\"r.corp.lan:5000\"]\nruntimes = [\"containerd\", \"all\"]");
        assert_eq!(p, Vec::<String>::new());
        assert_eq!(t.docker_clients, ["r.corp.lan:5000"]);
        assert_eq!(t.containerd_certs_d, Path::new("/etc/containerd/certs.d"));
        let (p, _) = with_trust("registries = [\"r.corp.lan:5000\"]\nruntimes = [\"cri-o\"]");
        assert_eq!(p, ["[[certificate]] `r`: trust.runtimes: unknown runtime \"cri-o\": name one of docker, containerd, podman, all"]);
    }

    #[test]
    fn lifetimes_that_would_loop_or_overflow_are_refused() {
        let ca = "[ca.internal]\nsubject = \"CN=T\"\n";
        let with_ca = |cert: &str, ca_extra: &str| {
            let text = format!(
                "{ca}{ca_extra}\n[[certificate]]\nname = \"r\"\nissuer = \"ca:internal\"\ndomains = [\"r.corp.lan\"]\n{cert}\n\
                 [certificate.install]\ndir = \"/nonexistent/certs\"\n"
            );
            validate(&parse(&text).unwrap()).list
        };
        assert_eq!(with_ca("validity = \"30d\"\nrenew_before = \"10d\"", ""), Vec::<String>::new());
        assert_eq!(with_ca("validity = \"100y\"", "validity = \"100y\""), Vec::<String>::new());
        let p = with_ca("validity = \"30d\"\nrenew_before = \"30d\"", "");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("renew_before = \"30d\" is not shorter than validity \"30d\""), "{p:?}");
        let p = with_ca("renew_before = \"1year\"", "");
        assert!(p.len() == 1 && p[0].contains("renew_before = \"1year\" is not shorter than the default validity \"90d\""), "{p:?}");
        assert_eq!(
            with_ca("validity = \"0s\"", ""),
            ["[[certificate]] `r`: validity = \"0s\" would issue certificates that are already expired; use e.g. \"90d\""]
        );
        let p = with_ca("validity = \"8000y\"", "validity = \"8000y\"");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().any(|p| p.starts_with("[ca.internal] validity = \"8000years")) && p.iter().any(|p| p.contains("more than 100 years")),
            "{p:?}"
        );
        assert_eq!(with_ca("", "validity = \"0s\""), ["[ca.internal] validity must be longer than 0"]);
        // ACME certificates: the CA decides the lifetime (the tests' "due at every check" stays possible).
        assert_eq!(problems("domains = [\"a.example.com\"]\nrenew_before = \"3000d\"", ""), Vec::<String>::new());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for (url, want) in [
            ("http://127.0.0.1:14000/dir", Some(true)),
            ("http://127.8.9.1/dir", Some(true)),
            ("http://[::1]:80/x", Some(true)),
            ("http://LOCALHOST/x", Some(true)),
            ("http://localhost.evil.example/x", Some(false)),
            ("http://127.0.0.1.evil.example/x", Some(false)),
            ("http://user@10.0.0.1/x", Some(false)),
            ("http://acme.example.net/dir", Some(false)),
            ("https://acme.example.net/dir", None),
        ] {
            assert_eq!(http_on_loopback(url), want, "{url}");
        }
        let with_dir = |d: &str| {
            validate(&parse(&config("domains = [\"a.example.com\"]", "").replace("\"letsencrypt\"", &format!("\"{d}\""))).unwrap()).list
        };
        assert_eq!(with_dir("http://127.0.0.1:14000/dir"), Vec::<String>::new());
        let p = with_dir("http://acme.example.net/dir");
        assert!(p.len() == 1 && p[0].contains("ACME needs HTTPS (RFC 8555 §6.1)"), "{p:?}");
    }

    #[test]
    fn rfc2136_lists_every_missing_setting() {
        let p = problems("domains = [\"a.example.com\"]\ndns = { provider = \"rfc2136\", zone = \"bad..zone\" }", "");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].contains("dns.server must be") && p[1].contains("dns.zone must") && p[2].contains("dns.tsig_key is required"),
            "{p:?}"
        );
    }

    #[test]
    fn load_merges_validate_and_preflight_in_file_order() {
        let dir = std::env::temp_dir().join(format!("regcert-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let text = config(
            "domains = [\"a.example.com\"]",
            "group = \"no-such-group-regcert\"\n[certificate.reload]\ncommand = []\n[certificate.verify]\ntimeout = \"0s\"\npassword_file = \"/nonexistent/pw\"\nusername = \"u\"",
        )
        .replace("[acme]", "concurrency = 0\n[acme]");
        std::fs::write(&path, text).unwrap();
        let err = load(&path, Purpose::Write).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let wants =
            ["concurrency = 0", "install.group", "install.dir", "reload.command is empty", "verify.password_file", "verify.timeout = 0"];
        assert_eq!(err.problems.len(), wants.len(), "{err}");
        for (p, want) in err.problems.iter().zip(wants) {
            assert!(p.contains(want), "{want:?} expected, got {p:?} in {err}");
        }
    }

    #[test]
    fn wrong_values_are_parse_errors_that_name_key_value_and_choices() {
        for (extra, after, wants) in [
            (
                "challenge = \"tls-alpn-01\"",
                "",
                &["challenge = \"tls-alpn-01\"", "unknown variant `tls-alpn-01`, expected one of `http-01`, `dns-01`, `dns-persist-01`"][..],
            ),
            ("challenge = \"dns01\"", "", &["unknown variant `dns01`", "did you mean `dns-01`?"][..]),
            (
                "dns = { provider = \"route53\" }",
                "",
                &["provider = \"route53\"", "unknown variant `route53`, expected one of `rfc2136`, `exec`, `acme.sh`"][..],
            ),
            ("dns = { provider = \"exec\", comand = [\"x\"] }", "", &["unknown field `comand`", "did you mean `command`?"][..]),
            (
                "dns = { provider = \"exec\", command = [\"x\"], nameservers = [\"ns1\"] }",
                "",
                &["dns server \"ns1\" is not IP or IP:PORT"][..],
            ),
            ("", "mode = \"0999\"", &["mode = \"0999\"", "install.mode = \"0999\" is not an octal file mode like \"0644\""][..]),
            ("", "key_mode = \"1600\"", &["install.key_mode = \"1600\" is not an octal file mode"][..]),
            (
                "",
                "[certificate.reload]\ndocker = { container = \"r\", action = \"stop\" }",
                &["unknown variant `stop`", "`restart`, `signal`, `exec`"][..],
            ),
            (
                "",
                "[certificate.reload]\nsystemd = { unit = \"a\", action = \"relaod\" }",
                &["unknown variant `relaod`", "did you mean `reload`?"][..],
            ),
        ] {
            let err = parse(&config(&format!("domains = [\"a.example.com\"]\n{extra}"), after)).unwrap_err();
            for want in wants {
                assert!(err.contains(want), "{want:?} not in {err}");
            }
        }
    }

    #[test]
    fn typed_values_round_trip() {
        let cfg = parse(&config(
            "domains = [\"*.example.com\"]\nchallenge = \"dns-01\"\n\
             dns = { provider = \"rfc2136\", server = \"10.0.0.53\", zone = \"example.com.\", tsig_key = \"/k\", nameservers = [\"[::1]:5353\"] }",
            "mode = \"640\"\nkey_mode = \"0400\"\n[certificate.reload]\nsystemd = { unit = \"nginx.service\", action = \"reload-or-restart\" }\n\
             docker = { label = \"a=b\", action = \"exec\", exec = [\"nginx\", \"-s\", \"reload\"] }",
        ))
        .unwrap();
        let cert = &round_trip(&cfg).certificates[0];
        assert_eq!(cert.challenge, Some(ChallengeKind::Dns01));
        let dns = cert.dns01().unwrap();
        assert_eq!(
            dns.provider,
            crate::challenge::dns01::DnsProvider::Rfc2136 {
                server: Some("10.0.0.53:53".parse().unwrap()),
                zone: Some("example.com.".into()),
                tsig_key: Some("/k".into())
            }
        );
        assert_eq!(dns.nameservers[0].0, "[::1]:5353".parse().unwrap());
        assert_eq!((cert.install.mode.bits(), cert.install.key_mode.bits()), (0o640, 0o400));
        assert_eq!(cert.install.mode.to_string(), "0640");
        let text = toml::to_string_pretty(&cfg).unwrap();
        for want in [
            "mode = \"0640\"",
            "key_mode = \"0400\"",
            "challenge = \"dns-01\"",
            "provider = \"rfc2136\"",
            "server = \"10.0.0.53:53\"",
            "action = \"reload-or-restart\"",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        // dns without challenge means DNS-01; challenge = "http-01" means none.
        let cfg = parse(&config("domains = [\"a.example.com\"]\ndns = { provider = \"exec\", command = [\"h\"] }", "")).unwrap();
        assert!(round_trip(&cfg).certificates[0].dns01().is_some());
        assert_eq!(cfg.certificates[0].challenge, None);
        let cfg = parse(&config("domains = [\"a.example.com\"]\nchallenge = \"http-01\"", "")).unwrap();
        assert!(cfg.certificates[0].dns01().is_none());
        assert_eq!(cfg.certificates[0].install.key_mode.to_string(), "0600");
    }

    #[test]
    fn example_config_round_trips() {
        round_trip(&parse(include_str!("../config.example.toml")).unwrap());
    }

    #[test]
    fn directory_shorthands() {
        let acme = AcmeConfig {
            directory: "letsencrypt".into(),
            contact: vec![],
            accept_terms: true,
            ca_bundle: None,
            eab: None,
            timeout: default_acme_timeout(),
            profile: None,
        };
        assert_eq!(acme.directory_url(), LETSENCRYPT);
    }
}
