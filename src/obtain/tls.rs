//! The HTTPS client regcert uses to talk to an ACME server.
//!
//! Trust = the system's roots (or Mozilla's bundled roots when the host has none) plus
//! `[acme] ca_bundle`, so a private or test CA can be added without losing the public ones.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::http;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::RootCertStore;

use crate::certinfo::read_pem_certs;

/// A root store of the system roots plus the PEM certificates in each of `extra`.
pub fn root_store(extra: &[&Path]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for path in extra {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| format!("{}: a certificate is not usable as a trust root: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// What the CA's last error response said beyond its problem document, which is all instant-acme
/// reads: when to come back (`Retry-After`) and where the CA explains the problem (the problem's
/// `instance`, RFC 8555 §6.7, or a `Link: <…>;rel="help"` header). A rate limit's Retry-After is
/// what tells the daemon when to come back, and its explanation URL is what an operator needs.
/// Certificates renewed at the same time share one CA and, with it, the rate limit spoken of.
#[derive(Debug, Default)]
pub struct LastErrorResponse(std::sync::Mutex<Option<ErrorHints>>);

/// See [`LastErrorResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorHints {
    /// When to try again, if still ahead.
    pub retry_after: Option<SystemTime>,
    /// The `type` of the problem document the response carried: the explanation belongs to it.
    pub problem_type: Option<String>,
    pub explanation: Option<String>,
}

impl LastErrorResponse {
    /// What was seen since the last call (a Retry-After only while it lies ahead).
    pub fn take(&self) -> ErrorHints {
        let mut hints = self.0.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        hints.retry_after = hints.retry_after.filter(|t| *t > SystemTime::now());
        hints
    }

    fn record(&self, headers: &http::HeaderMap, body: &[u8]) {
        let retry_after = headers.get(http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.to_str().ok()?));
        let problem: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |k: &str| problem.as_ref().and_then(|p| p[k].as_str()).map(str::to_owned);
        let explanation = field("instance")
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .or_else(|| headers.get_all(http::header::LINK).iter().filter_map(|v| v.to_str().ok()).find_map(help_link));
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(ErrorHints { retry_after, problem_type: field("type"), explanation });
    }
}

/// A Retry-After in seconds or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

/// The target of a `rel="help"` link in one Link header value (`<url>; rel="help", <…>; rel=…`).
fn help_link(value: &str) -> Option<String> {
    links(value, "help").next()
}

/// The targets of the links with relation `rel` in one Link header value.
fn links<'a>(value: &'a str, rel: &'a str) -> impl Iterator<Item = String> + 'a {
    value.split(',').filter_map(move |link| {
        let (target, params) = link.trim().split_once(';')?;
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_rel = params.split(';').any(|p| {
            p.trim().split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("rel") && v.trim().trim_matches('"') == rel)
        });
        is_rel.then(|| url.to_owned())
    })
}

/// The other chains a CA offers for a certificate it sent (RFC 8555 §7.4.2: `Link:
/// <url>;rel="alternate"` on the download), by the URL downloaded. instant-acme reads only the
/// body; `preferred_chain` needs the links.
#[derive(Debug, Default)]
pub struct AlternateChains(std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>);

impl AlternateChains {
    /// The alternates offered with the download of `url` (once).
    pub fn take(&self, url: &str) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(url).unwrap_or_default()
    }

    fn record(&self, url: String, headers: &http::HeaderMap) {
        let alternates: Vec<String> =
            headers.get_all(http::header::LINK).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| links(v, "alternate")).collect();
        if !alternates.is_empty() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(url, alternates);
        }
    }
}

/// How long a connection to the CA may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the CA got no complete answer within its time.
#[derive(Debug, thiserror::Error)]
#[error("no complete answer within {}", humantime::format_duration(*.0))]
pub struct NoAnswer(pub Duration);

/// An HTTP client for instant-acme that trusts `roots`, gives up on a request (connect, send,
/// headers and body) after `timeout`, keeps what error responses said in `last_error` and the
/// alternate chains certificate downloads offered in `alternates`.
pub fn acme_http_client(
    roots: RootCertStore,
    timeout: Duration,
    last_error: Arc<LastErrorResponse>,
    alternates: Arc<AlternateChains>,
) -> Box<dyn HttpClient> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let tls = match tls {
        Ok(tls) => tls,
        // The aws-lc-rs provider always supports the default versions; this is unreachable.
        Err(e) => unreachable!("aws-lc-rs supports the default TLS versions: {e}"),
    };
    // Without TCP_NODELAY, a JWS POST (headers and body in two writes) waits ~40 ms for a
    // delayed ACK every time: Nagle's algorithm would be the slowest part of an issuance.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT.min(timeout)));
    let https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().enable_http2().wrap_connector(tcp);
    let client = Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(https);
    Box::new(Metered { client, timeout, last_error, alternates })
}

/// Counts and times every request to the CA (`regcert_acme_requests_total`, `…_duration_seconds`),
/// bounds it in time, and beats the heartbeat when an answer came.
struct Metered<C> {
    client: C,
    timeout: Duration,
    last_error: Arc<LastErrorResponse>,
    alternates: Arc<AlternateChains>,
}

impl<C> HttpClient for Metered<Client<C, BodyWrapper<Bytes>>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let method = req.method().to_string();
        let url = req.uri().to_string();
        let started = Instant::now();
        let fut = self.client.request(req);
        let (timeout, last_error, alternates) = (self.timeout, self.last_error.clone(), self.alternates.clone());
        Box::pin(async move {
            // The body is read here, inside the bound: a CA that sends headers and then stalls
            // must not hang the caller either.
            let exchange = async {
                let rsp = fut.await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = rsp.into_parts();
                let body = body.collect().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?.to_bytes();
                Ok::<_, instant_acme::Error>((parts, body))
            };
            let result = match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(instant_acme::Error::Other(Box::new(NoAnswer(timeout)))),
            };
            let status = match &result {
                Ok((parts, body)) => {
                    crate::progress::beat();
                    if parts.status.is_client_error() || parts.status.is_server_error() {
                        last_error.record(&parts.headers, body);
                    } else {
                        alternates.record(url, &parts.headers);
                    }
                    parts.status.as_u16().to_string()
                }
                Err(_) => "error".to_owned(),
            };
            crate::metrics::global().observe_acme(&method, &status, started.elapsed());
            let (parts, body) = result?;
            Ok(BytesResponse::from(http::Response::from_parts(parts, Full::new(body))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_explanation_comes_from_the_problem_instance_or_a_help_link() {
        let last = LastErrorResponse::default();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("120"));
        headers.append(http::header::LINK, http::HeaderValue::from_static("<https://ca/dir>;rel=\"index\""));
        headers.append(http::header::LINK, http::HeaderValue::from_static("<https://ca/docs/rate-limits>; rel=\"help\""));
        last.record(&headers, br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"x"}"#);
        let hints = last.take();
        assert_eq!(hints.explanation.as_deref(), Some("https://ca/docs/rate-limits"));
        assert_eq!(hints.problem_type.as_deref(), Some("urn:ietf:params:acme:error:rateLimited"));
        assert!(hints.retry_after.is_some_and(|t| t > SystemTime::now() + Duration::from_secs(100)));
        assert_eq!(last.take(), ErrorHints::default(), "taken once");

        last.record(&headers, br#"{"type":"urn:ietf:params:acme:error:rateLimited","instance":"https://ca/limits/123"}"#);
        assert_eq!(last.take().explanation.as_deref(), Some("https://ca/limits/123"), "the problem's own instance first");
        assert_eq!(help_link("<https://a>;rel=index, <https://b>;rel=help"), Some("https://b".into()));
        assert_eq!(help_link("<https://a>;rel=\"alternate\""), None);
        let alternates = AlternateChains::default();
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::LINK, http::HeaderValue::from_static("<https://ca/dir>;rel=\"index\""));
        headers.append(
            http::header::LINK,
            http::HeaderValue::from_static("<https://ca/cert/1/1>;rel=\"alternate\", <https://ca/cert/1/2>; rel=alternate"),
        );
        alternates.record("https://ca/cert/1".into(), &headers);
        assert_eq!(alternates.take("https://ca/cert/1"), ["https://ca/cert/1/1", "https://ca/cert/1/2"]);
        assert!(alternates.take("https://ca/cert/1").is_empty(), "taken once");
    }
}
