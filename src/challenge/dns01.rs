//! DNS-01: a TXT record at `_acme-challenge.<name>` proves control of `<name>` — the only way
//! for registries the internet cannot reach on port 80, and for wildcards.
//!
//! Providers: RFC 2136 dynamic update with TSIG (BIND, Knot, PowerDNS, Windows DNS…), `exec`
//! (any script, for DNS APIs), or `acme.sh` (the acme.sh dnsapi plugin the user already runs,
//! [`super::acmesh`]). Before the CA is told to look, every authoritative nameserver must
//! answer the record; afterwards exactly our records are removed again, on success and failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};

use super::acmesh::{Action, Plugin};

/// `dns = { provider = "rfc2136" | "exec" | "acme.sh", … }`: how DNS-01 records are published and checked.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "RawDns", into = "RawDns")]
pub struct DnsConfig {
    pub provider: DnsProvider,
    /// Check propagation on these servers instead of the zone's NS set.
    pub nameservers: Vec<DnsServer>,
    /// CNAME delegation (acme-dns style): write the TXT here instead of at `_acme-challenge.<name>`.
    pub delegate: Option<String>,
    /// How long to wait for every nameserver to answer the record.
    pub propagation_timeout: Duration,
    /// How long one run of the exec hook or the acme.sh plugin may take.
    pub hook_timeout: Duration,
}

/// Who publishes the records, with the settings only that provider uses.
///
/// Required settings that are missing stay `None` (or empty) here: [`validate`] reports them
/// together with every other problem of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsProvider {
    /// RFC 2136 dynamic update signed with TSIG (BIND, Knot, PowerDNS, Windows DNS…).
    Rfc2136 {
        /// The primary server that accepts updates, "10.0.0.53:53".
        server: Option<DnsServer>,
        /// The zone to update, "example.com.".
        zone: Option<String>,
        /// BIND key file (the `nsupdate -k` format) with the TSIG key.
        tsig_key: Option<PathBuf>,
    },
    /// An acme.sh dnsapi plugin (`<api>_add` / `<api>_rm`), with its credentials.
    AcmeSh {
        plugin: Plugin,
        /// Where to look up the zone's NS set when `nameservers` is empty (optional).
        server: Option<DnsServer>,
        zone: Option<String>,
    },
    /// A program run as `COMMAND present|cleanup FQDN VALUE`.
    Exec {
        command: Vec<String>,
        /// Where to look up the zone's NS set when `nameservers` is empty (optional).
        server: Option<DnsServer>,
        zone: Option<String>,
    },
}

/// The value of `provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ProviderKind {
    Rfc2136,
    Exec,
    #[serde(rename = "acme.sh")]
    AcmeSh,
}

/// A DNS server as written in the config: "IP:PORT", or "IP" for port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsServer(pub SocketAddr);

impl std::str::FromStr for DnsServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_server(s).map(DnsServer)
    }
}

impl std::fmt::Display for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for DnsServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: String| serde::de::Error::custom(format!("dns server {e}, e.g. \"10.0.0.53:53\"")))
    }
}

impl Serialize for DnsServer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The TOML shape of `dns = {…}`: one flat table whatever the provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    provider: ProviderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<DnsServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tsig_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    home: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_home: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nameservers: Vec<DnsServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delegate: Option<String>,
    #[serde(default = "default_propagation", with = "crate::config::duration")]
    propagation_timeout: Duration,
    #[serde(default = "default_hook_timeout", with = "crate::config::duration")]
    hook_timeout: Duration,
}

// `command` with rfc2136 and `tsig_key` with exec were always accepted and never used; they
// still are accepted, and dropped.
impl From<RawDns> for DnsConfig {
    fn from(raw: RawDns) -> Self {
        let provider = match raw.provider {
            ProviderKind::Rfc2136 => DnsProvider::Rfc2136 { server: raw.server, zone: raw.zone, tsig_key: raw.tsig_key },
            ProviderKind::Exec => DnsProvider::Exec { command: raw.command.unwrap_or_default(), server: raw.server, zone: raw.zone },
            ProviderKind::AcmeSh => DnsProvider::AcmeSh {
                plugin: Plugin {
                    api: raw.api.unwrap_or_default(),
                    home: raw.home,
                    config_home: raw.config_home,
                    env: raw.env,
                    env_file: raw.env_file,
                },
                server: raw.server,
                zone: raw.zone,
            },
        };
        DnsConfig {
            provider,
            nameservers: raw.nameservers,
            delegate: raw.delegate,
            propagation_timeout: raw.propagation_timeout,
            hook_timeout: raw.hook_timeout,
        }
    }
}

impl From<DnsConfig> for RawDns {
    fn from(c: DnsConfig) -> Self {
        let mut plugin = Plugin::default();
        let (provider, server, zone, tsig_key, command) = match c.provider {
            DnsProvider::Rfc2136 { server, zone, tsig_key } => (ProviderKind::Rfc2136, server, zone, tsig_key, None),
            DnsProvider::Exec { command, server, zone } => (ProviderKind::Exec, server, zone, None, Some(command)),
            DnsProvider::AcmeSh { plugin: p, server, zone } => {
                plugin = p;
                (ProviderKind::AcmeSh, server, zone, None, None)
            }
        };
        let api = (provider == ProviderKind::AcmeSh).then_some(plugin.api);
        RawDns {
            provider,
            server,
            zone,
            tsig_key,
            command,
            api,
            home: plugin.home,
            config_home: plugin.config_home,
            env: plugin.env,
            env_file: plugin.env_file,
            nameservers: c.nameservers,
            delegate: c.delegate,
            propagation_timeout: c.propagation_timeout,
            hook_timeout: c.hook_timeout,
        }
    }
}

impl DnsProvider {
    /// The server and zone the provider knows (where the zone's NS set can be asked for).
    fn server_and_zone(&self) -> (Option<DnsServer>, Option<&str>) {
        match self {
            DnsProvider::Rfc2136 { server, zone, .. }
            | DnsProvider::Exec { server, zone, .. }
            | DnsProvider::AcmeSh { server, zone, .. } => (*server, zone.as_deref()),
        }
    }
}

impl DnsConfig {
    /// The same settings with every secret (the acme.sh provider's `env` values) replaced, for
    /// printing.
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        if let DnsProvider::AcmeSh { plugin, .. } = &mut shown.provider {
            plugin.env.values_mut().for_each(|v| *v = "<redacted>".into());
        }
        shown
    }
}

fn default_propagation() -> Duration {
    Duration::from_secs(120)
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(120)
}

/// A TSIG key from a BIND key file.
pub struct TsigKey {
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

/// Parse `key "name" { algorithm hmac-sha256; secret "base64"; };`.
pub fn read_tsig_key(path: &Path) -> Result<TsigKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("dns.tsig_key {}: {e}", path.display()))?;
    let bad =
        |what: &str| format!("dns.tsig_key {}: no {what} (expected the BIND key file format that `tsig-keygen` writes)", path.display());
    let name = text.split("key \"").nth(1).and_then(|r| r.split('"').next()).ok_or_else(|| bad("key \"NAME\""))?;
    let alg = text.split("algorithm").nth(1).and_then(|r| r.split(';').next()).map(str::trim).ok_or_else(|| bad("algorithm"))?;
    let secret = text.split("secret \"").nth(1).and_then(|r| r.split('"').next()).ok_or_else(|| bad("secret \"…\""))?;
    let algorithm = match alg.to_ascii_lowercase().as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(format!(
                "dns.tsig_key {}: algorithm {other} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512",
                path.display()
            ));
        }
    };
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.decode(secret).map_err(|_| bad("base64 secret"))?;
    Ok(TsigKey { name: name.to_owned(), algorithm, secret })
}

/// Problems of a `dns = {…}` table that the table itself shows (no I/O).
pub fn validate(at: &str, dns: &DnsConfig, problems: &mut Vec<String>) {
    match &dns.provider {
        DnsProvider::Rfc2136 { server, zone, tsig_key } => {
            if server.is_none() {
                problems.push(format!("{at}: dns.server must be the update server as IP:PORT, e.g. \"10.0.0.53:53\""));
            }
            if zone.as_deref().is_none_or(|z| Name::from_ascii(z).is_err()) {
                problems.push(format!("{at}: dns.zone must name the zone to update, e.g. \"example.com.\""));
            }
            if tsig_key.is_none() {
                problems.push(format!("{at}: dns.tsig_key is required: the BIND key file (tsig-keygen NAME > file)"));
            }
        }
        DnsProvider::Exec { command, .. } => {
            if command.is_empty() {
                problems.push(format!("{at}: dns.command is required for provider \"exec\", e.g. [\"/usr/local/bin/dns-hook\"]"));
            }
        }
        DnsProvider::AcmeSh { plugin, .. } => plugin.validate(at, problems),
    }
    // A hook or a plugin publishes the record, but cannot tell where the zone is served: regcert
    // checks the record reached every authoritative server before the CA looks, so it must be
    // told where to look. (rfc2136's own server and zone are required above.)
    let (server, zone) = dns.provider.server_and_zone();
    let kind = match dns.provider {
        DnsProvider::Rfc2136 { .. } => None,
        DnsProvider::Exec { .. } => Some("exec"),
        DnsProvider::AcmeSh { .. } => Some("acme.sh"),
    };
    if let Some(kind) = kind
        && dns.nameservers.is_empty()
        && (server.is_none() || zone.is_none())
    {
        problems.push(format!(
            "{at}: provider \"{kind}\" needs dns.nameservers (the zone's authoritative servers, e.g. [\"192.0.2.53:53\"]) or \
             dns.server + dns.zone (a server that knows the zone's NS set), to check that the record has propagated"
        ));
    }
}

/// Problems of a `dns = {…}` table on this host: the TSIG key file must be readable and valid.
pub fn preflight(at: &str, dns: &DnsConfig, problems: &mut Vec<String>) {
    match &dns.provider {
        DnsProvider::Rfc2136 { tsig_key: Some(path), .. } => {
            if let Err(e) = read_tsig_key(path) {
                problems.push(format!("{at}: {e}"));
            }
        }
        DnsProvider::AcmeSh { plugin, .. } => plugin.preflight(at, problems),
        _ => {}
    }
}

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    s.parse().or_else(|_| format!("{s}:53").parse()).map_err(|_| format!("\"{s}\" is not IP or IP:PORT"))
}

/// One record we publish: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
}

pub struct Dns01 {
    /// The certificate these records are for (a field of every log line).
    cert: String,
    cfg: DnsConfig,
}

impl Dns01 {
    pub fn new(cert: &str, cfg: DnsConfig) -> Self {
        Self { cert: cert.to_owned(), cfg }
    }

    /// The TXT record for the identifier `domain` (wildcards validate at their base name).
    pub fn record_for(&self, domain: &str, value: String) -> TxtRecord {
        let base = domain.strip_prefix("*.").unwrap_or(domain).trim_end_matches('.');
        let fqdn = match &self.cfg.delegate {
            Some(d) => format!("{}.", d.trim_end_matches('.')),
            None => format!("_acme-challenge.{base}."),
        };
        TxtRecord { fqdn, value }
    }

    /// Publish `rec`, and return the record as published. When its name is a CNAME (a
    /// delegation set up in DNS instead of with `delegate`), the record goes where the CNAME
    /// chain ends, which is where the CA will look: a TXT beside a CNAME would be ignored.
    pub async fn present(&self, rec: TxtRecord) -> Result<TxtRecord, String> {
        let rec = match self.lookup_server() {
            Some(server) => {
                let target = follow_cnames(&self.cert, server, &rec.fqdn).await;
                if target != rec.fqdn {
                    tracing::info!(cert = %self.cert, fqdn = %rec.fqdn, target = %target, server = %server, "the challenge name is a CNAME: the TXT record goes to its target");
                }
                TxtRecord { fqdn: target, ..rec }
            }
            None => rec,
        };
        match &self.cfg.provider {
            DnsProvider::Exec { command, .. } => self.exec(command, "present", &rec).await?,
            DnsProvider::Rfc2136 { .. } => self.update(&rec, true).await?,
            DnsProvider::AcmeSh { plugin, .. } => self.plugin(plugin, Action::Add, &rec).await?,
        }
        Ok(rec)
    }

    pub async fn cleanup(&self, rec: &TxtRecord) {
        let done = match &self.cfg.provider {
            DnsProvider::Exec { command, .. } => self.exec(command, "cleanup", rec).await,
            DnsProvider::Rfc2136 { .. } => self.update(rec, false).await,
            DnsProvider::AcmeSh { plugin, .. } => self.plugin(plugin, Action::Rm, rec).await,
        };
        match done {
            Ok(()) => tracing::info!(cert = %self.cert, fqdn = %rec.fqdn, "TXT record removed"),
            Err(e) => tracing::warn!(cert = %self.cert, fqdn = %rec.fqdn, error = %e, "could not remove the TXT record; remove it by hand"),
        }
    }

    /// The server to ask where a name leads: the update server, or the first of `nameservers`.
    fn lookup_server(&self) -> Option<SocketAddr> {
        self.cfg.provider.server_and_zone().0.map(|s| s.0).or_else(|| self.cfg.nameservers.first().map(|s| s.0))
    }

    async fn update(&self, rec: &TxtRecord, add: bool) -> Result<(), String> {
        let DnsProvider::Rfc2136 { server, zone, tsig_key } = &self.cfg.provider else {
            return Err("dns.provider is not \"rfc2136\"".into());
        };
        let server = server.ok_or("dns.server is not set")?.0;
        let zone = Name::from_ascii(zone.as_deref().unwrap_or_default()).map_err(|e| format!("dns.zone: {e}"))?;
        let key_path = tsig_key.as_deref().ok_or("dns.tsig_key is not set")?;
        let key = read_tsig_key(key_path)?;
        let signer_name = Name::from_ascii(&key.name).map_err(|e| format!("TSIG key name: {e}"))?;
        let signer = TSigner::new(key.secret, key.algorithm, signer_name, 300).map_err(|e| format!("TSIG key: {e}"))?;
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new())
            .with_timeout(Some(QUERY_TIMEOUT))
            .with_signer(Some(signer))
            .build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let bg = tokio::spawn(bg);
        let name = Name::from_ascii(&rec.fqdn).map_err(|e| format!("record name {}: {e}", rec.fqdn))?;
        let record = Record::from_rdata(name, 60, RData::TXT(TXT::new(vec![rec.value.clone()])));
        let what = if add { "adding" } else { "removing" };
        let response =
            if add { client.append(record, zone.clone(), false).await } else { client.delete_by_rdata(record, zone.clone()).await };
        bg.abort();
        let response = response.map_err(|e| {
            let text = e.to_string();
            // BIND answers a bad signature with an unsigned BADSIG/BADKEY response, which the
            // client reports as a TSIG/HMAC protocol error.
            if text.contains("HMAC") || text.to_ascii_lowercase().contains("tsig") {
                format!(
                    "{what} {} at {server}: the server rejected our TSIG signature: the key \"{}\" in {} does not match the one the server has (wrong secret, name or algorithm)",
                    rec.fqdn,
                    key.name,
                    key_path.display()
                )
            } else {
                format!("{what} {} at {server}: {text} (check dns.server, dns.zone and the TSIG key)", rec.fqdn)
            }
        })?;
        let code = response.metadata.response_code;
        if code != ResponseCode::NoError {
            return Err(format!(
                "{what} TXT {} in zone {zone} at {server} was refused: {code} (is the TSIG key {} allowed to update this zone? `allow-update`/`update-policy` in the server config; is the name inside dns.zone?)",
                rec.fqdn, key.name
            ));
        }
        if add {
            tracing::info!(cert = %self.cert, fqdn = %rec.fqdn, server = %server, "TXT record added");
        }
        Ok(())
    }

    async fn exec(&self, argv: &[String], action: &str, rec: &TxtRecord) -> Result<(), String> {
        let Some((program, args)) = argv.split_first() else { return Err("dns.command is empty".into()) };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .args([action, &rec.fqdn, &rec.value])
            .env("REGCERT_DNS_ACTION", action)
            .env("REGCERT_DNS_FQDN", &rec.fqdn)
            .env("REGCERT_DNS_VALUE", &rec.value);
        let hook = format!("dns hook `{} {action} {}`", argv.join(" "), rec.fqdn);
        let out = crate::command::run(cmd, None, self.cfg.hook_timeout).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => format!("{hook} {e} (dns.hook_timeout)"),
            _ => format!("cannot run dns hook {program}: {e} (check dns.command)"),
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        tracing::debug!(cert = %self.cert, action, fqdn = %rec.fqdn, stdout = %stdout.trim(), stderr = %out.stderr_text(), "dns hook ran");
        if !out.status.success() {
            return Err(format!("{hook} failed ({}): {}", out.status, out.stderr_text()));
        }
        Ok(())
    }

    async fn plugin(&self, plugin: &Plugin, action: Action, rec: &TxtRecord) -> Result<(), String> {
        plugin.run(&self.cert, action, &rec.fqdn, &rec.value, self.cfg.hook_timeout).await
    }

    /// Wait until every nameserver answers every record, or the timeout passes.
    pub async fn wait_propagated(&self, records: &[TxtRecord]) -> Result<(), String> {
        let servers = reachable(&self.cert, self.nameservers().await?, crate::route::routable)?;
        let deadline = Instant::now() + self.cfg.propagation_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let mut missing = Vec::new();
            for server in &servers {
                for rec in records {
                    match txt_present(*server, &rec.fqdn, &rec.value).await {
                        Ok(true) => {}
                        Ok(false) => missing.push(format!("{server} lacks {} \"{}\"", rec.fqdn, rec.value)),
                        Err(e) => missing.push(format!("{server} did not answer for {}: {e}", rec.fqdn)),
                    }
                }
            }
            if missing.is_empty() {
                tracing::info!(cert = %self.cert, servers = servers.len(), records = records.len(), "TXT records visible on every nameserver");
                return Ok(());
            }
            if Instant::now() + delay > deadline {
                return Err(format!(
                    "the TXT records did not reach every nameserver within {}: {} (raise dns.propagation_timeout, or check the zone's secondaries)",
                    humantime::format_duration(self.cfg.propagation_timeout),
                    missing.join("; ")
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// What every authoritative nameserver (those [`Dns01::wait_propagated`] asks) answers for
    /// TXT `fqdn`, server by server: the values, or why it did not answer.
    pub async fn txt_everywhere(&self, fqdn: &str) -> Result<Vec<(SocketAddr, Result<Vec<String>, String>)>, String> {
        let servers = reachable(&self.cert, self.nameservers().await?, crate::route::routable)?;
        let mut answers = Vec::new();
        for server in servers {
            answers.push((server, query(server, fqdn, RecordType::TXT).await));
        }
        Ok(answers)
    }

    /// `nameservers`, or the addresses of the zone's NS set as the update server (or, for exec,
    /// `dns.server`) knows it. Every failure to find them is an error that says where it failed.
    async fn nameservers(&self) -> Result<Vec<SocketAddr>, String> {
        if !self.cfg.nameservers.is_empty() {
            return Ok(self.cfg.nameservers.iter().map(|s| s.0).collect());
        }
        let (server, zone) = self.cfg.provider.server_and_zone();
        let Some(DnsServer(server)) = server else {
            return Err(
                "dns.nameservers is needed with provider \"exec\" to check propagation (the zone's authoritative servers as IP:PORT)"
                    .into(),
            );
        };
        let zone = zone.unwrap_or_default();
        let names = query(server, zone, RecordType::NS).await.map_err(|e| {
            format!("cannot look up the NS set of zone {zone} at {server}: {e} (check dns.server and dns.zone, or list the servers in dns.nameservers)")
        })?;
        if names.is_empty() {
            return Err(format!(
                "{server} has no NS records for zone {zone} (check dns.zone, or list the authoritative servers in dns.nameservers)"
            ));
        }
        let mut found = Vec::new();
        for ns in names {
            found.extend(ns_addresses(server, zone, &ns).await?);
        }
        tracing::debug!(cert = %self.cert, zone, servers = ?found, "the zone's nameservers");
        Ok(found)
    }
}

/// How long one DNS query or update may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses of the nameserver `ns` (port 53): as `server` knows them (the zone's own data
/// or glue), else through the system resolver.
async fn ns_addresses(server: SocketAddr, zone: &str, ns: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for kind in [RecordType::A, RecordType::AAAA] {
        match query(server, ns, kind).await {
            Ok(answers) => addrs.extend(answers.iter().filter_map(|a| a.parse::<IpAddr>().ok()).map(|ip| SocketAddr::new(ip, 53))),
            Err(e) => errors.push(format!("{kind} at {server}: {e}")),
        }
    }
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    match tokio::time::timeout(QUERY_TIMEOUT, tokio::net::lookup_host(format!("{}:53", ns.trim_end_matches('.')))).await {
        Ok(Ok(found)) => addrs.extend(found),
        Ok(Err(e)) => errors.push(format!("system resolver: {e}")),
        Err(_) => errors.push("system resolver: no answer".into()),
    }
    if addrs.is_empty() {
        let why = if errors.is_empty() { "no A or AAAA record".to_owned() } else { errors.join("; ") };
        return Err(format!(
            "nameserver {ns} of zone {zone} has no address ({why}); list the authoritative servers in dns.nameservers instead"
        ));
    }
    Ok(addrs)
}

/// The nameserver addresses this host can ask (`routable` decides). The others are skipped,
/// said in the log: a host without IPv6 cannot check the IPv6 addresses, which the CA may
/// well reach. None at all left is an error.
fn reachable(cert: &str, addrs: Vec<SocketAddr>, routable: impl Fn(SocketAddr) -> bool) -> Result<Vec<SocketAddr>, String> {
    let (kept, skipped): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| routable(**a));
    if kept.is_empty() {
        let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no route from this host to any nameserver address ({}): cannot check propagation; list reachable servers in dns.nameservers",
            all.join(", ")
        ));
    }
    if !skipped.is_empty() {
        let skipped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        tracing::info!(cert, skipped = %skipped.join(", "), "nameserver addresses without a route from this host are not checked");
    }
    Ok(kept)
}

/// Where `fqdn` leads on `server`: the end of its CNAME chain, or `fqdn` itself. Following is a
/// service, not a requirement: when the server cannot say, the name stays as it is (logged).
async fn follow_cnames(cert: &str, server: SocketAddr, fqdn: &str) -> String {
    let mut name = fqdn.to_owned();
    for _ in 0..8 {
        match query(server, &name, RecordType::CNAME).await {
            Ok(answers) => match answers.iter().find_map(|a| a.strip_prefix("CNAME ")) {
                Some(target) => name = target.to_owned(),
                None => return name,
            },
            Err(e) => {
                tracing::warn!(cert, fqdn = %name, server = %server, error = %e, "cannot see whether the challenge name is a CNAME; writing it as it is");
                return name;
            }
        }
    }
    tracing::warn!(cert, fqdn, server = %server, "more than 8 CNAMEs in a row (a loop?); writing the record at the challenge name");
    fqdn.to_owned()
}

/// Does `server` answer TXT `fqdn` with `value` (following CNAMEs on the same server)?
async fn txt_present(server: SocketAddr, fqdn: &str, value: &str) -> Result<bool, String> {
    let mut name = fqdn.to_owned();
    for _ in 0..8 {
        let answers = query(server, &name, RecordType::TXT).await?;
        if answers.iter().any(|a| a == value) {
            return Ok(true);
        }
        match answers.iter().find_map(|a| a.strip_prefix("CNAME ")) {
            Some(target) => name = target.to_owned(),
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Ask `server` directly; answers as strings (TXT text, NS names, addresses, "CNAME target").
/// A name that does not exist has no answers; any other error code is an error.
async fn query(server: SocketAddr, name: &str, kind: RecordType) -> Result<Vec<String>, String> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new()).with_timeout(Some(QUERY_TIMEOUT)).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let bg = tokio::spawn(bg);
    let name = Name::from_ascii(name).map_err(|e| e.to_string())?;
    let response = client.query(name, DNSClass::IN, kind).await;
    bg.abort();
    let response = response.map_err(|e| e.to_string())?;
    match response.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        code => return Err(format!("answered {code}")),
    }
    Ok(response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>()),
            RData::NS(ns) => Some(ns.0.to_ascii()),
            RData::CNAME(c) => Some(format!("CNAME {}", c.0.to_ascii())),
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Wrap {
        dns: DnsConfig,
    }

    fn parse(table: &str) -> Result<DnsConfig, String> {
        toml::from_str::<Wrap>(&format!("dns = {{ {table} }}")).map(|w| w.dns).map_err(|e| e.to_string())
    }

    fn round_trip(dns: &DnsConfig) -> DnsConfig {
        let text = toml::to_string(&Wrap { dns: dns.clone() }).unwrap();
        let back = toml::from_str::<Wrap>(&text).unwrap_or_else(|e| panic!("{e}\n{text}")).dns;
        assert_eq!(&back, dns, "{text}");
        back
    }

    #[test]
    fn providers_carry_their_own_settings() {
        let dns =
            parse("provider = \"rfc2136\", server = \"10.0.0.53\", zone = \"example.com.\", tsig_key = \"/k\", command = [\"unused\"]")
                .unwrap();
        assert_eq!(
            dns.provider,
            DnsProvider::Rfc2136 {
                server: Some("10.0.0.53:53".parse().unwrap()),
                zone: Some("example.com.".into()),
                tsig_key: Some("/k".into())
            }
        );
        assert_eq!(dns.propagation_timeout, Duration::from_secs(120));
        round_trip(&dns);
        // exec may name a server and zone to find the NS set; a tsig_key was always ignored.
        let dns = parse("provider = \"exec\", command = [\"hook\"], server = \"[::1]:5353\", zone = \"z.\", tsig_key = \"/k\", propagation_timeout = \"5s\"").unwrap();
        assert_eq!(
            dns.provider,
            DnsProvider::Exec { command: vec!["hook".into()], server: Some("[::1]:5353".parse().unwrap()), zone: Some("z.".into()) }
        );
        assert_eq!(round_trip(&dns).propagation_timeout, Duration::from_secs(5));
    }

    #[test]
    fn missing_settings_are_problems_and_files_are_preflight() {
        let mut p = Vec::new();
        validate("c", &parse("provider = \"exec\", command = [], nameservers = [\"192.0.2.53\"]").unwrap(), &mut p);
        assert_eq!(p, ["c: dns.command is required for provider \"exec\", e.g. [\"/usr/local/bin/dns-hook\"]"]);
        let mut p = Vec::new();
        validate("c", &parse("provider = \"exec\", command = [\"hook\"], server = \"192.0.2.53\"").unwrap(), &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("c: provider \"exec\" needs dns.nameservers"), "{p:?}");
        let mut p = Vec::new();
        validate(
            "c",
            &parse("provider = \"exec\", command = [\"hook\"], server = \"192.0.2.53\", zone = \"example.com.\"").unwrap(),
            &mut p,
        );
        assert!(p.is_empty(), "{p:?}");
        let dns =
            parse("provider = \"rfc2136\", server = \"10.0.0.53:53\", zone = \"example.com.\", tsig_key = \"/nonexistent/k\"").unwrap();
        let mut p = Vec::new();
        validate("c", &dns, &mut p);
        assert!(p.is_empty(), "{p:?}");
        preflight("c", &dns, &mut p);
        assert!(p.len() == 1 && p[0].starts_with("c: dns.tsig_key /nonexistent/k: "), "{p:?}");
    }

    #[test]
    fn acmesh_provider_settings_and_their_problems() {
        let dns = parse(
            "provider = \"acme.sh\", api = \"dns_ali\", home = \"/root/.acme.sh\", env = { Ali_Key = \"k-123456\" }, env_file = \"/etc/regcert/ali.env\", nameservers = [\"10.0.0.53\"]",
        )
        .unwrap();
        let DnsProvider::AcmeSh { plugin, .. } = &round_trip(&dns).provider else { panic!("{dns:?}") };
        assert_eq!((plugin.api.as_str(), plugin.env["Ali_Key"].as_str()), ("dns_ali", "k-123456"));
        let mut p = Vec::new();
        validate("c", &dns, &mut p);
        assert!(p.is_empty(), "{p:?}");
        // What check-config prints: the key, never its value.
        let shown = toml::to_string(&Wrap { dns: dns.redacted() }).unwrap();
        assert!(shown.contains("Ali_Key") && !shown.contains("k-123456"), "{shown}");
        // Without nameservers (or server + zone) the record's propagation cannot be checked.
        let dns = parse("provider = \"acme.sh\", api = \"dns_ali\", home = \"/h\"").unwrap();
        validate("c", &dns, &mut p);
        assert!(p.len() == 1 && p[0].contains("needs dns.nameservers"), "{p:?}");
    }

    #[test]
    fn hook_timeout_defaults_to_two_minutes() {
        let dns = parse("provider = \"exec\", command = [\"hook\"]").unwrap();
        assert_eq!(dns.hook_timeout, Duration::from_secs(120));
        let dns = parse("provider = \"exec\", command = [\"hook\"], hook_timeout = \"3s\"").unwrap();
        assert_eq!(round_trip(&dns).hook_timeout, Duration::from_secs(3));
    }

    #[test]
    fn only_addresses_with_a_route_are_checked() {
        let v4: SocketAddr = "192.0.2.53:53".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
        // An IPv4-only host: the IPv6 address is skipped, not waited for until the timeout.
        assert_eq!(reachable("c", vec![v4, v6], |a| a.is_ipv4()), Ok(vec![v4]));
        assert_eq!(reachable("c", vec![v4, v6], |_| true), Ok(vec![v4, v6]));
        let err = reachable("c", vec![v6], |a| a.is_ipv4()).unwrap_err();
        assert!(err.contains("no route from this host to any nameserver address ([2001:db8::53]:53)"), "{err}");
    }

    #[test]
    fn bad_servers_are_parse_errors() {
        let err = parse("provider = \"rfc2136\", server = \"ns1.example.com:53\"").unwrap_err();
        assert!(err.contains("dns server \"ns1.example.com:53\" is not IP or IP:PORT"), "{err}");
        let err = parse("provider = \"exec\", nameservers = [\"10.0.0.1\", \"x\"]").unwrap_err();
        assert!(err.contains("dns server \"x\""), "{err}");
    }
}
