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

/// The `Retry-After` of the CA's last error response. instant-acme reads only the body of an
/// error (the problem document); a rate limit's Retry-After is what tells the daemon when to
/// come back, so the HTTP client keeps it here. Certificates renewed at the same time share one
/// CA and, with it, the rate limit the header speaks of.
#[derive(Debug, Default)]
pub struct LastRetryAfter(std::sync::Mutex<Option<SystemTime>>);

impl LastRetryAfter {
    /// The value seen since the last call, if it still lies ahead.
    pub fn take(&self) -> Option<SystemTime> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take().filter(|t| *t > SystemTime::now())
    }

    fn record(&self, value: &http::HeaderValue) {
        let value = value.to_str().unwrap_or("").trim();
        let at = match value.parse::<u64>() {
            Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
            Err(_) => httpdate::parse_http_date(value).ok(),
        };
        if at.is_some() {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
        }
    }
}

/// An HTTP client for instant-acme that trusts `roots` and keeps the Retry-After of error
/// responses in `retry_after`.
pub fn acme_http_client(roots: RootCertStore, retry_after: Arc<LastRetryAfter>) -> Box<dyn HttpClient> {
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
    let https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().enable_http2().wrap_connector(tcp);
    Box::new(Metered { client: Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(https), retry_after })
}

/// Counts and times every request to the CA (`regcert_acme_requests_total`, `…_duration_seconds`).
struct Metered<C> {
    client: C,
    retry_after: Arc<LastRetryAfter>,
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
        let started = Instant::now();
        let fut = self.client.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let result = fut.await;
            if let Ok(rsp) = &result {
                let status = rsp.status();
                if (status.is_client_error() || status.is_server_error())
                    && let Some(value) = rsp.headers().get(http::header::RETRY_AFTER)
                {
                    retry_after.record(value);
                }
            }
            let status = match &result {
                Ok(rsp) => rsp.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            crate::metrics::global().observe_acme(&method, &status, started.elapsed());
            result.map(BytesResponse::from).map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}
