//! Step four of the pipeline: prove over HTTPS that the registry serves what was installed.
//!
//! One check opens a real TLS connection (with SNI) and records the chain the server sends,
//! then asks `GET /v2/` like a Docker client would. The served leaf must be byte-identical to the
//! installed one, the served chain must validate to the trust roots with nothing fetched (this is
//! what catches an incomplete chain), the name must match, and the endpoint must answer like a
//! registry. While a registry restarts, failures are retried until the timeout.
//!
//! A registry that requires client certificates (mTLS) is checked with one: `[certificate.verify]
//! client_cert` / `client_key` for a server certificate. A client certificate (`usage =
//! "client"`) is itself what is checked: its installed pair is presented to `url`, and it passes
//! when the registry asked for a client certificate, its own certificate validates, and `GET /v2/`
//! answers like a registry with the client certificate accepted.
//!
//! Behind a load balancer or on a dual-stack name, clients reach several servers: every address
//! the name resolves to (or every `connect_to` address) is checked, and a failure on any of them
//! is a failed check that names it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::certinfo::{LeafInfo, unix};
use crate::config::{CertificateConfig, Usage, VerifyConfig};
use crate::obtain::tls::root_store;

/// Where and how to check one registry endpoint.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    host: String,
    port: u16,
    path: String,
    /// Addresses to check instead of those `host` resolves to (SNI and Host stay the URL's).
    pub connect_to: Vec<String>,
    roots: Arc<RootCertStore>,
    /// User and password for `GET /v2/`; the password is wiped from memory when dropped.
    credentials: Option<(String, Zeroizing<String>)>,
    /// The client certificate to present when the registry asks for one.
    pub client: Option<ClientAuth>,
}

/// A client certificate (PEM: leaf, then its chain) and its key, presented when the registry
/// asks for one (mTLS). Read at every check: a renewal or rollback changes the files.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// It is what is being verified (`usage = "client"`): the expected SHA-256 is its own, and
    /// a registry that does not ask for it fails the check (presenting it proved nothing).
    pub under_test: bool,
}

impl ClientAuth {
    /// The pair, ready to present, and the SHA-256 of its leaf; the error names the file.
    pub fn load(&self) -> Result<(Arc<CertifiedKey>, String), String> {
        let (cert_key, key_key) =
            if self.under_test { ("install.fullchain", "install.key") } else { ("verify.client_cert", "verify.client_key") };
        let read = |key: &str, path: &std::path::Path| {
            let read = match self.under_test {
                // The install dir is read as untrusted, as everywhere (no links, regular files, capped).
                true => crate::fsutil::read_untrusted(path, crate::fsutil::UNTRUSTED_READ_CAP)
                    .and_then(|found| found.ok_or_else(|| "no such file".to_owned())),
                false => std::fs::read(path).map_err(|e| e.to_string()),
            };
            read.map(Zeroizing::new).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
        };
        let pem = read(cert_key, &self.cert)?;
        let chain = crate::certinfo::parse_pem_certs(&pem).map_err(|e| format!("{cert_key} {} {e}", self.cert.display()))?;
        let pem = read(key_key, &self.key)?;
        let der =
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{key_key} {} is not a PEM private key: {e}", self.key.display()))?;
        let leaf = LeafInfo::parse(&chain[0]).map_err(|e| format!("{cert_key} {}: {e}", self.cert.display()))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = CertifiedKey::from_der(chain, der, &provider)
            .map_err(|e| format!("{key_key} {} does not fit {cert_key} {}: {e}", self.key.display(), self.cert.display()))?;
        Ok((Arc::new(key), leaf.sha256))
    }
}

impl Target {
    /// `url` must be https://host[:port]/path.
    pub fn new(
        url: &str,
        connect_to: Vec<String>,
        roots: RootCertStore,
        credentials: Option<(String, Zeroizing<String>)>,
    ) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("verify url \"{url}\" is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("verify url \"{url}\" must start with https://"));
        }
        let host = uri.host().ok_or_else(|| format!("verify url \"{url}\" has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/v2/".into());
        Ok(Self {
            url: url.to_owned(),
            port: uri.port_u16().unwrap_or(443),
            host,
            path,
            connect_to,
            roots: Arc::new(roots),
            credentials,
            client: None,
        })
    }

    /// The check configured for `cert` (URL, trust roots, credentials). `anchor` is the root of
    /// the certificate's issuer when that root is not public (a private CA): it is trusted too.
    /// A client certificate (`usage = "client"`) presents its installed pair; its issuer's root
    /// is not trusted for the registry's server certificate (`ca_bundle` says what is).
    pub fn for_certificate(cert: &CertificateConfig, settings: &VerifyConfig, anchor: Option<&std::path::Path>) -> Result<Self, String> {
        let client = match (cert.usage, &settings.client_cert, &settings.client_key) {
            (Usage::Client, _, _) => {
                Some(ClientAuth { cert: cert.install.fullchain_path(), key: cert.install.key_path(), under_test: true })
            }
            (Usage::Server, Some(c), Some(k)) => Some(ClientAuth { cert: c.clone(), key: k.clone(), under_test: false }),
            _ => None,
        };
        if cert.usage == Usage::Client && settings.url.is_none() {
            return Err("a client certificate is verified against the registry it is for: set [certificate.verify] url".into());
        }
        let anchor = anchor.filter(|_| cert.usage == Usage::Server);
        let extra: Vec<&std::path::Path> = settings.ca_bundle.as_deref().into_iter().chain(anchor).collect();
        let roots = root_store(&extra).map_err(|e| format!("verify trust roots: {e}"))?;
        let credentials = match (&settings.username, &settings.password_file) {
            (Some(user), Some(file)) => {
                let pass = std::fs::read_to_string(file)
                    .map(Zeroizing::new)
                    .map_err(|e| format!("verify.password_file {}: {e}", file.display()))?;
                Some((user.clone(), Zeroizing::new(pass.trim_end_matches(['\n', '\r']).to_owned())))
            }
            _ => None,
        };
        let mut target = Self::new(&cert.verify_url(settings), settings.connect_to.clone(), roots, credentials)?;
        target.client = client;
        Ok(target)
    }

    /// What a passed check proved, for the renewal's report line.
    pub fn proof(&self) -> String {
        match self.checks_client() {
            true => format!("{} accepts it as a client certificate", self.url),
            false => format!("{} serves it", self.url),
        }
    }

    /// Whom the expected SHA-256 is of: the client certificate presented, not the server's.
    fn checks_client(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.under_test)
    }

    /// `host:port` of the URL.
    fn authority(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }

    /// Every address to check: those of `connect_to`, or all that the URL's host resolves to
    /// and this host has a route to (a host without IPv6 cannot check the name's IPv6
    /// addresses; if it has a route to none, all are tried, and the errors show why).
    async fn addresses(&self) -> Result<Vec<SocketAddr>, String> {
        let mut found: Vec<SocketAddr> = Vec::new();
        let explicit = !self.connect_to.is_empty();
        let names = if explicit { self.connect_to.clone() } else { vec![self.authority()] };
        for name in &names {
            let resolved = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(name.as_str())).await;
            let where_ =
                if explicit { format!("verify.connect_to \"{name}\"") } else { format!("{} (from verify url {})", self.host, self.url) };
            match resolved {
                Ok(Ok(addrs)) => found.extend(addrs.filter(|a| !found.contains(a)).collect::<Vec<_>>()),
                Ok(Err(e)) => return Err(format!("cannot resolve {where_}: {e}")),
                Err(_) => return Err(format!("cannot resolve {where_}: no answer within 10 s")),
            }
        }
        if explicit {
            return Ok(found);
        }
        let (kept, skipped): (Vec<SocketAddr>, Vec<SocketAddr>) = found.iter().partition(|a| crate::route::routable(**a));
        if kept.is_empty() {
            return Ok(found);
        }
        if !skipped.is_empty() {
            let skipped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
            tracing::info!(url = %self.url, skipped = %skipped.join(", "), "addresses without a route from this host are not checked");
        }
        Ok(kept)
    }
}

/// What the server presented, summarised for people.
#[derive(Debug, Clone, Serialize)]
pub struct ServedCert {
    pub subject: String,
    pub dns_names: Vec<String>,
    pub issuer: String,
    /// Certificates the server sent, leaf included.
    pub chain_depth: usize,
    pub sha256: String,
    pub not_after: u64,
    pub days_left: i64,
}

/// The outcome of one check: everything observed, and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    /// The address this report is about: the first that failed, or the first checked.
    pub address: String,
    /// Every address that was checked.
    pub addresses: Vec<String>,
    /// Whether a TCP connection to `address` was made.
    pub connected: bool,
    pub served: Option<ServedCert>,
    pub expected_sha256: Option<String>,
    pub chain_valid: bool,
    pub http_status: Option<u16>,
    pub api_version: Option<String>,
    /// mTLS: whether the server asked for a client certificate, and the SHA-256 of the one
    /// presented (none: none was configured).
    pub client_cert_requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_presented: Option<String>,
    /// The CA names the server accepts client certificates from, as it announced them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_cas: Vec<String>,
    pub problems: Vec<String>,
    /// Problems that waiting cannot fix (the right leaf is served, but its chain or name is wrong).
    #[serde(skip)]
    definitive: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn new(target: &Target, expected: Option<&str>, address: String) -> Self {
        Report {
            url: target.url.clone(),
            addresses: vec![address.clone()],
            address,
            connected: false,
            served: None,
            expected_sha256: expected.map(str::to_owned),
            chain_valid: false,
            http_status: None,
            api_version: None,
            client_cert_requested: false,
            client_cert_presented: None,
            client_cas: Vec::new(),
            problems: Vec::new(),
            definitive: false,
        }
    }

    /// A few lines for a terminal.
    pub fn render(&self) -> String {
        // On a failed connection, the problem line names the address.
        let mut out = match self.connected {
            true => format!("  url:        {} (connected to {})\n", self.url, self.address),
            false => format!("  url:        {}\n", self.url),
        };
        if self.addresses.len() > 1 {
            out.push_str(&format!("  addresses:  {} (each checked)\n", self.addresses.join(", ")));
        }
        if let Some(s) = &self.served {
            out.push_str(&format!("  subject:    {}\n  names:      {}\n  issuer:     {}\n", s.subject, s.dns_names.join(", "), s.issuer));
            out.push_str(&format!(
                "  chain:      {} certificate(s) served, {}\n",
                s.chain_depth,
                if self.chain_valid { "validates" } else { "does NOT validate" }
            ));
            out.push_str(&format!("  served:     SHA256 {}\n", s.sha256));
            if let Some(e) = &self.expected_sha256 {
                let same = if *e == s.sha256 { "same" } else { "DIFFERENT" };
                out.push_str(&format!("  installed:  SHA256 {e} ({same})\n"));
            }
            out.push_str(&format!("  expires:    {} ({} days left)\n", crate::certinfo::fmt_time(s.not_after), s.days_left));
        }
        if self.client_cert_requested {
            let sent = match &self.client_cert_presented {
                Some(sha) => format!("presented SHA256 {sha}"),
                None => "none presented".to_owned(),
            };
            let from = if self.client_cas.is_empty() { String::new() } else { format!(" (from CAs: {})", self.client_cas.join("; ")) };
            out.push_str(&format!("  client cert: requested by the server{from}, {sent}\n"));
        }
        if let Some(status) = self.http_status {
            let api = self.api_version.as_deref().map(|v| format!(", Docker-Distribution-Api-Version: {v}")).unwrap_or_default();
            out.push_str(&format!("  GET /v2/:   {status}{api}\n"));
        }
        if self.ok() {
            out.push_str("  result:     OK\n");
        }
        for p in &self.problems {
            out.push_str(&format!("  problem:    {p}\n"));
        }
        out
    }
}

/// How long a passing check must keep passing on fresh connections. A reloading nginx keeps
/// old workers accepting connections (with the old certificate) for ~100 ms after new ones
/// start; one lucky connection to a new worker is not proof yet.
const SETTLE: Duration = Duration::from_millis(250);

/// Check repeatedly until it passes (and keeps passing for [`SETTLE`]), a definitive problem
/// shows, or `timeout` passes.
pub async fn verify_until(target: &Target, expected: Option<&str>, timeout: Duration) -> Report {
    until_settled(|| check(target, expected), timeout).await
}

/// The loop of [`verify_until`]. A pass counts only once it has held for [`SETTLE`]: a pass that
/// comes at the deadline gets its settle period too (the check may run up to [`SETTLE`] past
/// `timeout`), and if it fails within it, verification fails.
async fn until_settled<F, Fut>(mut check: F, timeout: Duration) -> Report
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Report>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    let mut passing_since: Option<Instant> = None;
    loop {
        let report = check().await;
        if report.ok() {
            let since = *passing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SETTLE {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        passing_since = None;
        if report.definitive || Instant::now() + delay >= deadline {
            return report;
        }
        tracing::debug!(url = %report.url, problem = %report.problems.join("; "), "not verified yet, retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(2));
    }
}

/// One check of every address (at once): TLS handshake and chain, then `GET /v2/`.
pub async fn check(target: &Target, expected: Option<&str>) -> Report {
    let addresses = match target.addresses().await {
        Ok(a) => a,
        Err(e) => {
            let mut report = Report::new(target, expected, target.authority());
            report.problems.push(e);
            return report;
        }
    };
    let checks = addresses.iter().map(|a| check_address(target, expected, *a));
    combine(futures_util::future::join_all(checks).await).unwrap_or_else(|| {
        let mut report = Report::new(target, expected, target.authority());
        report.problems.push(format!("{} resolves to no address", target.host));
        report
    })
}

/// The reports of one check on several addresses as one: the first failure, with the problems
/// of every failed address (each prefixed with its address, when there are several); or the
/// first pass. Waiting cannot help only when it cannot help any of the failed addresses.
fn combine(reports: Vec<Report>) -> Option<Report> {
    let addresses: Vec<String> = reports.iter().map(|r| r.address.clone()).collect();
    let several = addresses.len() > 1;
    let (failed, passed): (Vec<Report>, Vec<Report>) = reports.into_iter().partition(|r| !r.ok());
    let problems: Vec<String> = failed
        .iter()
        .flat_map(|r| r.problems.iter().map(move |p| if several { format!("at {}: {p}", r.address) } else { p.clone() }))
        .collect();
    let definitive = failed.iter().all(|r| r.definitive);
    let mut report = failed.into_iter().next().or_else(|| passed.into_iter().next())?;
    if !report.ok() {
        report.problems = problems;
        report.definitive = definitive;
    }
    report.addresses = addresses;
    Some(report)
}

async fn check_address(target: &Target, expected: Option<&str>, address: SocketAddr) -> Report {
    // For a client certificate, `expected` is the one presented; the server's may be any.
    let (served, presented) = if target.checks_client() { (None, expected) } else { (expected, None) };
    let mut report = Report::new(target, served, address.to_string());
    let attempt = tokio::time::timeout(Duration::from_secs(10), check_inner(target, address, presented, &mut report)).await;
    if attempt.is_err() {
        report.problems.push(format!("no answer from {} within 10 s", report.address));
    }
    report
}

async fn check_inner(target: &Target, address: SocketAddr, presented: Option<&str>, report: &mut Report) {
    let client = match target.client.as_ref().map(ClientAuth::load).transpose() {
        Ok(c) => c,
        Err(e) => {
            report.definitive = true;
            return report.problems.push(e);
        }
    };
    if let (Some(want), Some((_, sha))) = (presented, &client)
        && want != sha
    {
        report.definitive = true;
        return report.problems.push(format!("the installed client certificate (SHA256 {sha}) is not the one expected (SHA256 {want})"));
    }
    let tcp = match connect(&address.to_string()).await {
        Ok(tcp) => tcp,
        Err(e) => return report.problems.push(e),
    };
    report.connected = true;
    let sha = client.as_ref().map(|(_, sha)| sha.clone());
    let asked = Arc::new(ClientRecorder { key: client.map(|(key, _)| key), asked: Mutex::new(None) });
    let handshaken = handshake(target, tcp, asked.clone()).await;
    if let Some(cas) = asked.asked.lock().unwrap_or_else(|p| p.into_inner()).take() {
        report.client_cert_requested = true;
        report.client_cert_presented = sha;
        report.client_cas = cas;
    }
    match handshaken {
        Ok((tls, verdict)) => {
            let chain: Vec<CertificateDer<'static>> = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
            if judge_certificate(target, report, &chain, verdict) {
                judge_http(target, report, tls).await;
            }
        }
        Err(e) => report.problems.push(e),
    }
    judge_client(target, report);
}

/// What the server made of the client certificate (mTLS), in words: a refusal at the TLS level
/// (an alert; nginx answers 400 instead) becomes what to fix.
fn judge_client(target: &Target, report: &mut Report) {
    let Some(auth) = &target.client else {
        if report.client_cert_requested {
            explain_refusal(report, "none is configured: set [certificate.verify] client_cert and client_key to a client certificate it accepts (e.g. the client.cert / client.key a [[certificate]] with usage = \"client\" installs)".to_owned());
        }
        return;
    };
    if !report.client_cert_requested {
        if auth.under_test && report.http_status.is_some() {
            report.definitive = true;
            report.problems.push(format!(
                "{} did not ask for a client certificate, so presenting {} proved nothing: point [certificate.verify] url at the registry that requires it \
                 (REGISTRY_HTTP_TLS_CLIENTCAS, nginx ssl_verify_client on)",
                target.url,
                auth.cert.display()
            ));
        }
        return;
    }
    let what = if auth.under_test { "install.fullchain" } else { "verify.client_cert" };
    explain_refusal(
        report,
        format!(
            "it refused {what} {}: it must be issued by a CA the registry trusts for clients (REGISTRY_HTTP_TLS_CLIENTCAS, nginx ssl_client_certificate), be unexpired and carry the clientAuth usage",
            auth.cert.display()
        ),
    );
}

/// Replace the failure that shows the server refusing the client (a TLS alert, or nginx's 400)
/// with `why`; a final verdict, waiting does not change it.
fn explain_refusal(report: &mut Report, why: String) {
    let refused = |p: &String| p.contains("received fatal alert") || report.http_status == Some(400) && p.contains("answered 400");
    let Some(i) = report.problems.iter().position(refused) else { return };
    let cas = if report.client_cas.is_empty() { String::new() } else { format!(" from CAs {}", report.client_cas.join("; ")) };
    report.problems[i] = format!("the registry requires a client certificate (mTLS{cas}); {why} ({})", report.problems[i]);
    report.definitive = true;
}

type Verdict = Option<Result<(), rustls::Error>>;

async fn connect(address: &str) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// TLS with SNI over `tcp`; the handshake completes whatever the chain, and the verdict of the
/// trust roots on it comes back beside the stream.
async fn handshake(
    target: &Target,
    tcp: TcpStream,
    client: Arc<ClientRecorder>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Verdict), String> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| target.authority());
    let recorder = Arc::new(Recorder::new(target.roots.clone()));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.dangerous().with_custom_certificate_verifier(recorder.clone()).with_client_cert_resolver(client))
        .map_err(|e| format!("TLS setup: {e}"))?;
    // An IP address (an IP certificate's URL) becomes ServerName::IpAddress: rustls then sends no
    // SNI (RFC 6066 allows host names only) and matches the address against the IP SANs.
    let server_name =
        ServerName::try_from(target.host.clone()).map_err(|_| format!("\"{}\" is not a valid TLS server name", target.host))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {peer} failed: {e}"))?;
    Ok((tls, recorder.outcome()))
}

/// The chain a server presents at `url` (trusting nothing: for showing it to a person, who
/// decides, or to compare with a fingerprint).
pub async fn served_chain(url: &str, connect_to: Option<String>) -> Result<Vec<CertificateDer<'static>>, String> {
    let target = Target::new(url, connect_to.into_iter().collect(), RootCertStore::empty(), None)?;
    let address = target.connect_to.first().cloned().unwrap_or_else(|| target.authority());
    let no_client = Arc::new(ClientRecorder { key: None, asked: Mutex::new(None) });
    let (tls, _) = tokio::time::timeout(Duration::from_secs(15), async { handshake(&target, connect(&address).await?, no_client).await })
        .await
        .map_err(|_| format!("no answer from {address} within 15 s"))??;
    let chain = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    if chain.is_empty() {
        return Err(format!("{url} presented no certificate"));
    }
    Ok(chain)
}

/// Fill in what was served and whether it is right; false when HTTP should not be tried.
fn judge_certificate(
    target: &Target,
    report: &mut Report,
    chain: &[CertificateDer<'static>],
    verdict: Option<Result<(), rustls::Error>>,
) -> bool {
    let Some(leaf_der) = chain.first() else {
        report.problems.push("the server presented no certificate".into());
        return false;
    };
    let leaf = match LeafInfo::parse(leaf_der) {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(format!("the served certificate is {e}"));
            return false;
        }
    };
    let now = unix(SystemTime::now()) as i64;
    report.served = Some(ServedCert {
        subject: leaf.subject.clone(),
        dns_names: leaf.dns_names.clone(),
        issuer: leaf.issuer.clone(),
        chain_depth: chain.len(),
        sha256: leaf.sha256.clone(),
        not_after: leaf.not_after,
        days_left: (leaf.not_after as i64 - now).div_euclid(86_400),
    });
    let same_leaf = report.expected_sha256.as_deref().is_none_or(|e| e == leaf.sha256);
    if !same_leaf {
        report.problems.push(format!(
            "the registry still serves another certificate (serial {}, SHA256 {}): it has not loaded the installed one",
            leaf.serial, leaf.sha256
        ));
    }
    match verdict {
        Some(Ok(())) => report.chain_valid = true,
        Some(Err(e)) => {
            report.problems.push(explain_chain_error(&e, chain, &leaf, &target.host));
            // The right certificate with a broken chain or name will not get better by waiting.
            report.definitive = same_leaf;
        }
        None => report.problems.push("the TLS handshake did not reach certificate verification".into()),
    }
    report.chain_valid
}

fn explain_chain_error(e: &rustls::Error, chain: &[CertificateDer<'_>], leaf: &LeafInfo, host: &str) -> String {
    let rustls::Error::InvalidCertificate(cert_err) = e else { return format!("TLS certificate check failed: {e}") };
    match cert_err {
        CertificateError::UnknownIssuer if chain.len() == 1 && leaf.subject != leaf.issuer => format!(
            "incomplete chain: the server sends only the leaf (issued by \"{}\") without its intermediate; \
             clients fail with \"x509: certificate signed by unknown authority\". Install the fullchain (leaf + intermediates)",
            leaf.issuer
        ),
        CertificateError::UnknownIssuer => format!(
            "the served chain does not lead to a trusted root (issuer \"{}\"; clients see \"x509: certificate signed by unknown authority\"); \
             for a private CA set [certificate.verify] ca_bundle to its root",
            leaf.issuer
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the served certificate expired on {}", crate::certinfo::fmt_time(leaf.not_after))
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("the served certificate is not valid for {host} (it names {})", leaf.dns_names.join(", "))
        }
        other => format!("the served certificate is rejected: {other:?}"),
    }
}

async fn judge_http(target: &Target, report: &mut Report, tls: tokio_rustls::client::TlsStream<TcpStream>) {
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok(x) => x,
        Err(e) => return report.problems.push(format!("HTTP over TLS failed: {}", with_causes(&e))),
    };
    let conn = tokio::spawn(conn);
    let host = if target.port == 443 { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
    let mut req =
        hyper::Request::get(&target.path).header("host", host).header("user-agent", concat!("regcert/", env!("CARGO_PKG_VERSION")));
    if let Some((user, pass)) = &target.credentials {
        use base64::Engine;
        let pair = Zeroizing::new(format!("{user}:{}", pass.as_str()));
        let token = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
        req = req.header("authorization", format!("Basic {}", token.as_str()));
    }
    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
        return report.problems.push(format!("cannot build a request for {}", target.path));
    };
    let rsp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            // When the connection failed (a TLS alert: the server refused our client
            // certificate), the request only learns it was cancelled; the connection knows why.
            let why = match tokio::time::timeout(Duration::from_secs(2), conn).await {
                Ok(Ok(Err(conn_error))) => with_causes(&conn_error),
                _ => with_causes(&e),
            };
            return report.problems.push(format!("GET {} failed: {why}", target.path));
        }
    };
    let status = rsp.status().as_u16();
    report.http_status = Some(status);
    report.api_version = rsp.headers().get("docker-distribution-api-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let is_registry = report.api_version.as_deref() == Some("registry/2.0");
    match (status, target.credentials.is_some()) {
        (200, _) => {}
        (401, false) if is_registry => {}
        (401, true) => report.problems.push(format!(
            "GET {} answered 401 with the configured credentials: check [certificate.verify] username / password_file against the registry's htpasswd",
            target.path
        )),
        (s, _) => report.problems.push(format!(
            "GET {} answered {s}{}: this does not look like a Docker registry API (check [certificate.verify] url, or the proxy in front)",
            target.path,
            if is_registry { "" } else { " without Docker-Distribution-Api-Version: registry/2.0" }
        )),
    }
}

/// An error with what caused it (hyper's errors say "connection error"; the TLS alert is below).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Presents the client certificate (if any) when the server asks for one, and records that it
/// asked and the CA names it accepts client certificates from.
#[derive(Debug)]
struct ClientRecorder {
    key: Option<Arc<CertifiedKey>>,
    asked: Mutex<Option<Vec<String>>>,
}

impl ResolvesClientCert for ClientRecorder {
    fn resolve(&self, root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        use x509_parser::prelude::FromDer;
        let names = root_hint_subjects
            .iter()
            .map(|der| {
                x509_parser::x509::X509Name::from_der(der).map(|(_, n)| n.to_string()).unwrap_or_else(|_| "(unreadable name)".into())
            })
            .collect();
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = Some(names);
        self.key.clone()
    }

    /// Always: rustls asks the resolver only if this says so, and the request is worth recording
    /// even with nothing to present.
    fn has_certs(&self) -> bool {
        true
    }
}

/// A certificate verifier that lets the handshake finish but records webpki's verdict, so a
/// broken chain can be reported with everything the server sent.
#[derive(Debug)]
struct Recorder {
    inner: Option<Arc<WebPkiServerVerifier>>,
    outcome: Mutex<Option<Result<(), rustls::Error>>>,
    /// The provider's signature algorithms, taken once (handshake signatures are checked with them).
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Recorder {
    fn new(roots: Arc<RootCertStore>) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build().ok();
        Self { inner, outcome: Mutex::new(None), algorithms }
    }

    fn outcome(&self) -> Option<Result<(), rustls::Error>> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).map(|_| ()),
            None => Err(rustls::Error::General("no trust roots configured for verification".into())),
        };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports from a script: `true` passes; each check first waits `took`.
    fn scripted(target: &Target, script: Vec<(Duration, bool)>) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Report>>> {
        let template = Report::new(target, None, "192.0.2.1:443".into());
        let mut script = script.into_iter();
        move || {
            let (took, pass) = script.next().unwrap_or((Duration::ZERO, false));
            let mut r = template.clone();
            if !pass {
                r.problems.push("refused".into());
            }
            Box::pin(async move {
                tokio::time::sleep(took).await;
                r
            })
        }
    }

    #[test]
    fn an_ip_url_is_checked_as_an_address_without_sni() {
        for (url, host, authority) in
            [("https://127.0.0.1/v2/", "127.0.0.1", "127.0.0.1:443"), ("https://[::1]:5000/v2/", "::1", "[::1]:5000")]
        {
            let target = Target::new(url, Vec::new(), RootCertStore::empty(), None).unwrap();
            assert_eq!((target.host.as_str(), target.authority().as_str()), (host, authority));
            assert!(matches!(ServerName::try_from(target.host.clone()), Ok(ServerName::IpAddress(_))), "{url}");
        }
    }

    #[test]
    fn one_failing_address_fails_the_check_and_is_named() {
        let target = Target::new("https://r.example/v2/", Vec::new(), RootCertStore::empty(), None).unwrap();
        let at = |address: &str, problem: Option<&str>| {
            let mut r = Report::new(&target, None, address.into());
            r.problems.extend(problem.map(str::to_owned));
            r
        };
        let r = combine(vec![at("192.0.2.1:443", None), at("[2001:db8::1]:443", Some("old certificate"))]).unwrap();
        assert!(!r.ok());
        assert_eq!(r.address, "[2001:db8::1]:443");
        assert_eq!(r.problems, ["at [2001:db8::1]:443: old certificate"]);
        assert_eq!(r.addresses, ["192.0.2.1:443", "[2001:db8::1]:443"]);
        // Every failed address is named, not only the first.
        let r = combine(vec![at("192.0.2.1:443", Some("refused")), at("192.0.2.2:443", None), at("192.0.2.3:443", Some("old"))]);
        assert_eq!(r.unwrap().problems, ["at 192.0.2.1:443: refused", "at 192.0.2.3:443: old"]);
        // A broken chain on one address is final only if no other failure may still clear up.
        let mut broken = at("192.0.2.1:443", Some("incomplete chain"));
        broken.definitive = true;
        assert!(combine(vec![broken.clone(), broken.clone()]).unwrap().definitive);
        assert!(!combine(vec![broken, at("192.0.2.2:443", Some("restarting"))]).unwrap().definitive);
        let r = combine(vec![at("192.0.2.1:443", None), at("192.0.2.2:443", None)]).unwrap();
        assert!(r.ok() && r.address == "192.0.2.1:443" && r.addresses.len() == 2);
        // One address: its problems as they are.
        assert_eq!(combine(vec![at("192.0.2.1:443", Some("refused"))]).unwrap().problems, ["refused"]);
        assert!(combine(Vec::new()).is_none());
    }

    #[test]
    fn a_refused_client_certificate_is_explained_and_other_failures_are_not() {
        let target = Target::new("https://r.example:5000/v2/", Vec::new(), RootCertStore::empty(), None).unwrap();
        let report = |requested: bool, status: Option<u16>, problem: &str| {
            let mut r = Report::new(&target, None, "192.0.2.1:5000".into());
            r.client_cert_requested = requested;
            r.client_cas = vec!["CN=Client CA".into()];
            r.http_status = status;
            r.problems.push(problem.into());
            r
        };
        // nginx (ssl_verify_client on) answers 400 to a client without a certificate.
        let mut r = report(true, Some(400), "GET /v2/ answered 400 without Docker-Distribution-Api-Version: registry/2.0: …");
        judge_client(&target, &mut r);
        assert!(r.definitive, "{r:?}");
        assert!(r.problems[0].starts_with("the registry requires a client certificate (mTLS from CAs CN=Client CA); none is configured: set [certificate.verify] client_cert and client_key"), "{r:?}");
        // A TLS alert after the server's certificate passed, with one presented.
        let mut r = report(true, None, "GET /v2/ failed: connection error: received fatal alert: BadCertificate");
        let mut client = target.clone();
        client.client = Some(ClientAuth { cert: "/c/client.cert".into(), key: "/c/client.key".into(), under_test: true });
        judge_client(&client, &mut r);
        assert!(
            r.problems[0].contains("it refused install.fullchain /c/client.cert") && r.problems[0].ends_with("BadCertificate)"),
            "{r:?}"
        );
        // The server's own certificate failing is no client certificate problem.
        let mut r = report(true, None, "the served chain does not lead to a trusted root");
        judge_client(&target, &mut r);
        assert_eq!(r.problems, ["the served chain does not lead to a trusted root"]);
        assert!(!r.definitive);
        // A client certificate checked where nobody asks for one proved nothing.
        let mut r = report(false, Some(200), "");
        r.problems.clear();
        judge_client(&client, &mut r);
        assert!(r.definitive && r.problems[0].contains("did not ask for a client certificate"), "{r:?}");
        // … while a configured one that is not asked for is simply not needed.
        let mut configured = target.clone();
        configured.client = Some(ClientAuth { cert: "/c/client.cert".into(), key: "/c/client.key".into(), under_test: false });
        let mut r = report(false, Some(200), "");
        r.problems.clear();
        judge_client(&configured, &mut r);
        assert!(r.ok());
    }

    #[tokio::test]
    async fn a_single_pass_at_the_deadline_is_not_enough() {
        let target = Target::new("https://r.example/v2/", Vec::new(), RootCertStore::empty(), None).unwrap();
        let timeout = Duration::from_millis(200);
        // The first answer comes at the deadline and passes; the next one fails.
        let r = until_settled(scripted(&target, vec![(timeout + Duration::from_millis(20), true), (Duration::ZERO, false)]), timeout).await;
        assert!(!r.ok(), "a pass that did not hold for the settle period was accepted");
        // When it keeps passing, it gets its settle period beyond the deadline and is accepted.
        let started = Instant::now();
        let passes = vec![(timeout + Duration::from_millis(20), true); 20];
        let r = until_settled(scripted(&target, passes), timeout).await;
        assert!(r.ok(), "{:?}", r.problems);
        assert!(started.elapsed() >= timeout + SETTLE, "{:?}", started.elapsed());
    }
}
