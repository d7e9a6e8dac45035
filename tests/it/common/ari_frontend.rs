//! TEST FIXTURE, not a CA: an HTTPS front for Pebble 2.4 that adds what Pebble cannot do, so it
//! can be tested end to end: ACME Renewal Information (Pebble 2.4 has none) and rate limits
//! (no Pebble has them).
//!
//! Pebble 2.10's real ARI is used wherever it does the job (`tests/it/ari.rs`: its windows,
//! `/set-renewal-info/`, `replaces` as the CA holds it). This front stays for what 2.10 cannot
//! do: a Retry-After of seconds (2.10 always says 6 hours; [`AriFrontend::pass_renewal_info_through`]
//! keeps Pebble's own answer and changes only that), counting renewalInfo requests, a 404
//! for a certificate, rate limits, refusing or ignoring `replaces` on demand, broken chains.
//!
//! - every ACME request is passed on to Pebble unchanged (new orders are recorded on the way, to
//!   see `replaces`);
//! - the directory gets a `renewalInfo` URL, answered here with a window the test sets;
//! - when the test says so, new orders are refused as Let's Encrypt refuses them over a rate
//!   limit: 429, a `rateLimited` problem with an `instance` URL, a `Link: rel="help"` and a
//!   Retry-After;
//! - when the test says so, an order's `replaces` is refused (403 `unauthorized` as for another
//!   account's certificate, 409 `alreadyReplaced`) or ignored (not echoed, as by a CA without it);
//! - when the test says so, the certificate download comes with a broken chain ([`BadChain`]),
//!   as from a misconfigured CA.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Default)]
struct Seen {
    /// (start, end) in RFC 3339 served for every certificate.
    window: Option<(String, String)>,
    /// Windows for single certificates (by ARI identifier), before `window`.
    windows_for: std::collections::HashMap<String, (String, String)>,
    /// Decoded JWS payloads of new orders.
    orders: Vec<serde_json::Value>,
    /// Certificate identifiers asked for at renewalInfo.
    ari_requests: Vec<String>,
    /// The Retry-After (seconds) of renewalInfo answers; 3600 unless set.
    ari_retry_after: Option<u64>,
    /// Refuse new orders as rate-limited, with this Retry-After (seconds).
    rate_limit: Option<u64>,
    /// What happens to an order that names a certificate it replaces.
    replaces: Replaces,
    /// Spoil the chain of every certificate download this way.
    bad_chain: Option<BadChain>,
    /// Pass renewalInfo requests on to Pebble 2.10's own (its windows, its "renew now" for a
    /// revoked certificate), changing only the Retry-After.
    pass_through: bool,
    /// Pebble's renewalInfo URL, from its directory.
    pebble_renewal_info: Option<String>,
}

/// How the front treats an order's `replaces`.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Replaces {
    /// Echoed in the order, as an ARI CA does.
    #[default]
    Accept,
    /// 403 `unauthorized`: Let's Encrypt's answer when another account issued the certificate.
    RefuseUnauthorized,
    /// 409 `alreadyReplaced` (RFC 9773): another order already replaced it.
    RefuseAlreadyReplaced,
    /// The order is created, but the field is not echoed (a CA that does not know it).
    Ignore,
}

/// A broken chain in the certificate download (no real CA sends one on demand).
#[derive(Clone, Copy, Debug)]
pub enum BadChain {
    /// The intermediate first, then the leaf.
    Misordered,
    /// The leaf, then an impostor in place of its intermediate: a CA certificate with the
    /// intermediate's very name, but its own key (so it did not sign the leaf).
    Impostor,
}

pub struct AriFrontend {
    pub directory_url: String,
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

impl AriFrontend {
    /// Start in front of the Pebble whose directory is `pebble_dir`, serving TLS with `cert`/`key`
    /// and trusting `root` for the way to Pebble.
    /// In front of `pebble`, with the TLS material of Pebble's own listener.
    pub fn in_front_of(pebble: &super::Pebble) -> Self {
        let dir = pebble.dir.path();
        Self::start(&pebble.directory_url, &dir.join("tls-cert.pem"), &dir.join("tls-key.pem"), &pebble.tls_root)
    }

    pub fn start(pebble_dir: &str, cert: &Path, key: &Path, root: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = super::listener();
        listener.set_nonblocking(true).unwrap();
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let base = format!("https://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(CertificateDer::pem_file_iter(root).unwrap().flatten());
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Pebble 2.10 refuses requests without a User-Agent.
        let client = reqwest::Client::builder().tls_backend_preconfigured(client_tls).user_agent("regcert-test-ari-front").build().unwrap();
        let pebble = pebble_dir.trim_end_matches("/dir").to_owned();
        let ctx = Arc::new(Ctx { base: base.clone(), pebble, client, seen: seen.clone() });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = service_fn(move |req| handle(req, ctx.clone()));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        AriFrontend { directory_url: format!("{base}/dir"), seen, _runtime: runtime }
    }

    /// Serve this suggested window (Unix times) from now on.
    pub fn set_window(&self, start: u64, end: u64) {
        self.seen.lock().unwrap().window = Some((rfc3339(start), rfc3339(end)));
    }

    /// Serve this window (Unix times) for the certificate with ARI identifier `id` from now on.
    pub fn set_window_for(&self, id: &str, start: u64, end: u64) {
        self.seen.lock().unwrap().windows_for.insert(id.to_owned(), (rfc3339(start), rfc3339(end)));
    }

    /// The `replaces` field of every new order so far (None where absent).
    pub fn replaces(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().orders.iter().map(|o| o["replaces"].as_str().map(str::to_owned)).collect()
    }

    /// Treat every new order that carries `replaces` this way from now on.
    pub fn set_replaces(&self, mode: Replaces) {
        self.seen.lock().unwrap().replaces = mode;
    }

    /// Answer renewalInfo with this Retry-After (seconds) from now on.
    pub fn set_ari_retry_after(&self, secs: u64) {
        self.seen.lock().unwrap().ari_retry_after = Some(secs);
    }

    /// Pebble 2.10: answer renewalInfo with Pebble's own answer, but with this Retry-After
    /// (seconds) instead of Pebble's six hours.
    pub fn pass_renewal_info_through(&self, retry_after: u64) {
        let mut seen = self.seen.lock().unwrap();
        seen.pass_through = true;
        seen.ari_retry_after = Some(retry_after);
    }

    /// Refuse every new order from now on as over a rate limit, asking to retry after `secs`.
    pub fn rate_limit_orders(&self, secs: u64) {
        self.seen.lock().unwrap().rate_limit = Some(secs);
    }

    /// From now on, send every certificate download with its chain spoiled this way.
    pub fn spoil_chain(&self, how: BadChain) {
        self.seen.lock().unwrap().bad_chain = Some(how);
    }

    pub fn ari_requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().ari_requests.clone()
    }
}

fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

struct Ctx {
    base: String,
    /// Pebble's https://host:port.
    pebble: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Seen>>,
}

/// Everything but renewalInfo is passed to Pebble with this front's Host header: Pebble builds
/// the URLs it hands out, and checks the JWS `url`/`kid`, from the Host it was asked for, so the
/// ACME conversation stays consistent through the front.
async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if let Some(id) = path.strip_prefix("/renewal-info/") {
        let pebble = {
            let seen = ctx.seen.lock().unwrap();
            seen.pebble_renewal_info.clone().filter(|_| seen.pass_through)
        };
        return Ok(match pebble {
            Some(base) => pebble_renewal_info(&ctx, &base, id).await,
            None => renewal_info(&ctx, id),
        });
    }
    let method = req.method().clone();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let new_order = path.starts_with("/order-plz").then(|| order_payload(&body));
    let replaces = new_order.as_ref().and_then(|o| o["replaces"].as_str().map(str::to_owned));
    let (rate_limit, mode) = {
        let seen = ctx.seen.lock().unwrap();
        (seen.rate_limit, if replaces.is_some() { seen.replaces } else { Replaces::Accept })
    };
    if let (Some(order), Some(secs)) = (&new_order, rate_limit) {
        ctx.seen.lock().unwrap().orders.push(order.clone());
        return Ok(rate_limited(secs));
    }
    let refusal = match mode {
        Replaces::RefuseUnauthorized => Some((403, "unauthorized", "the certificate to be replaced was not issued to this account")),
        Replaces::RefuseAlreadyReplaced => Some((409, "alreadyReplaced", "the certificate has already been replaced by another order")),
        Replaces::Accept | Replaces::Ignore => None,
    };
    if let (Some(order), Some((status, kind, detail))) = (&new_order, refusal) {
        ctx.seen.lock().unwrap().orders.push(order.clone());
        return Ok(problem(status, kind, detail, None));
    }
    let host = ctx.base.trim_start_matches("https://").to_owned();
    let mut fwd = ctx.client.request(method, format!("{}{path}", ctx.pebble)).header("host", host);
    if let Some(ct) = content_type {
        fwd = fwd.header("content-type", ct);
    }
    let rsp = fwd.body(body).send().await.unwrap();
    let status = rsp.status().as_u16();
    let headers: Vec<(String, String)> = rsp
        .headers()
        .iter()
        .filter(|(k, _)| ["location", "replay-nonce", "link", "retry-after", "content-type", "cache-control"].contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let mut bytes = rsp.bytes().await.unwrap();
    // An order Pebble refused for its nonce is sent again by the client: count it once.
    if let Some(order) = new_order
        && !(status == 400 && String::from_utf8_lossy(&bytes).contains("badNonce"))
    {
        ctx.seen.lock().unwrap().orders.push(order);
    }
    if path == "/dir" {
        let mut dir: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        ctx.seen.lock().unwrap().pebble_renewal_info = dir["renewalInfo"].as_str().map(str::to_owned);
        dir["renewalInfo"] = format!("{}/renewal-info", ctx.base).into();
        bytes = Bytes::from(dir.to_string());
    }
    // An ARI CA echoes `replaces` in the order; Pebble 2.4 does not know the field.
    if let (Some(replaces), 201, Replaces::Accept) = (replaces, status, mode) {
        let mut order: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        order["replaces"] = replaces.into();
        bytes = Bytes::from(order.to_string());
    }
    let bad_chain = ctx.seen.lock().unwrap().bad_chain;
    let is_chain = headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/pem-certificate-chain"));
    if let (Some(how), true) = (bad_chain, is_chain) {
        bytes = Bytes::from(spoil(&bytes, how));
    }
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    Ok(b.body(Full::new(bytes)).unwrap())
}

/// Where the front's rate-limit answer says the limit is explained (the problem's `instance`).
pub const RATE_LIMIT_INSTANCE: &str = "https://acme.test/rate-limits/new-orders/account-1";

/// What Let's Encrypt answers a new order over a rate limit (the nonce of the request was not
/// used up at Pebble, so none is handed out: the client fetches a fresh one).
fn rate_limited(secs: u64) -> Response<Full<Bytes>> {
    let mut rsp = problem(429, "rateLimited", "too many new orders recently", Some(secs));
    rsp.headers_mut().insert("link", "<https://acme.test/docs/rate-limits>;rel=\"help\"".parse().unwrap());
    rsp
}

/// An ACME problem response (without a nonce: the client fetches a fresh one).
fn problem(status: u16, kind: &str, detail: &str, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({ "type": format!("urn:ietf:params:acme:error:{kind}"), "detail": detail, "status": status });
    if kind == "rateLimited" {
        body["instance"] = RATE_LIMIT_INSTANCE.into();
    }
    let mut rsp = Response::builder().status(status).header("content-type", "application/problem+json");
    if let Some(secs) = retry_after {
        rsp = rsp.header("retry-after", secs.to_string());
    }
    rsp.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn renewal_info(ctx: &Ctx, id: &str) -> Response<Full<Bytes>> {
    let mut seen = ctx.seen.lock().unwrap();
    seen.ari_requests.push(id.to_owned());
    let Some((start, end)) = seen.windows_for.get(id).or(seen.window.as_ref()).cloned() else {
        return Response::builder().status(404).body(Full::new(Bytes::new())).unwrap();
    };
    let body = serde_json::json!({ "suggestedWindow": { "start": start, "end": end } }).to_string();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("retry-after", seen.ari_retry_after.unwrap_or(3_600).to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Pebble's own renewalInfo answer for `id` (`base`: its renewalInfo URL), with the front's
/// Retry-After.
async fn pebble_renewal_info(ctx: &Ctx, base: &str, id: &str) -> Response<Full<Bytes>> {
    let retry_after = {
        let mut seen = ctx.seen.lock().unwrap();
        seen.ari_requests.push(id.to_owned());
        seen.ari_retry_after.unwrap_or(3_600)
    };
    // Pebble's directory names its URL with the Host it was asked for (this front's).
    let path = base.splitn(4, '/').nth(3).unwrap_or_default();
    let url = format!("{}/{}/{id}", ctx.pebble, path.trim_end_matches('/'));
    let rsp = ctx.client.get(url).send().await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.bytes().await.unwrap();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("retry-after", retry_after.to_string())
        .body(Full::new(body))
        .unwrap()
}

/// The decoded JWS payload of a new order.
fn order_payload(body: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jws["payload"].as_str().unwrap_or_default()).unwrap_or_default();
    serde_json::from_slice(&payload).unwrap_or_default()
}

/// The PEM chain `pem` (leaf first, as Pebble sends it) broken as `how` says.
fn spoil(pem: &[u8], how: BadChain) -> String {
    let mut chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().unwrap();
    assert!(chain.len() >= 2, "Pebble sent no intermediate");
    match how {
        BadChain::Misordered => chain.swap(0, 1),
        BadChain::Impostor => {
            let (_, real) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
            let cn = real.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap().to_owned();
            assert_eq!(real.subject().to_string(), format!("CN={cn}"), "impostors are made of names with a CN only");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            // Encoded as Pebble (Go) encodes it, so the names compare equal byte for byte.
            params.distinguished_name.push(rcgen::DnType::CommonName, rcgen::DnValue::PrintableString(cn.as_str().try_into().unwrap()));
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            chain[1] = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().clone();
        }
    }
    chain.iter().map(|c| pem_certificate(c)).collect()
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}
