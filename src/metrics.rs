//! Prometheus metrics (names in the style of cert-manager) and the `/metrics`, `/healthz`,
//! `/readyz` endpoint of the daemon.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    pub name: String,
    /// success | failure | rolled_back
    pub result: String,
}

/// What is known about the installed certificate beyond its dates (an "info" metric, always 1).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub name: String,
    /// The CA that issued it: the ACME directory URL or `ca:NAME` (empty: not issued by regcert).
    pub ca: String,
    /// Its ACME profile (empty: none, or the CA's default).
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeLabels {
    pub method: String,
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub expiration: Family<NameLabel, Gauge>,
    pub renewal: Family<NameLabel, Gauge>,
    pub alert: Family<NameLabel, Gauge>,
    pub ready: Family<NameLabel, Gauge>,
    /// Per private CA (`name` = the `[ca.NAME]` name).
    pub ca_expiry: Family<NameLabel, Gauge>,
    pub renewals: Family<RenewalLabels, Counter>,
    pub verify_success: Family<NameLabel, Gauge>,
    /// When a reload held for the window happens (Unix time); 0 when none is pending.
    pub reload_pending: Family<NameLabel, Gauge>,
    pub acme_requests: Family<AcmeLabels, Counter>,
    pub acme_duration: Family<AcmeLabels, Histogram>,
    info: Family<InfoLabels, Gauge>,
    /// The labels of each certificate's info series, so that a changed CA or profile replaces it.
    info_now: std::sync::Mutex<std::collections::HashMap<String, InfoLabels>>,
    pub lifetime: Family<NameLabel, Gauge>,
    pub window_start: Family<NameLabel, Gauge>,
    pub window_end: Family<NameLabel, Gauge>,
    /// Fleet mode: 1 while this node is the fleet's leader.
    pub cluster_leader: Gauge,
    /// Fleet mode, per certificate: 0 no rollout in progress, 1 rolling, 2 halted.
    pub rollout_state: Family<NameLabel, Gauge>,
    pub etcd_requests: Counter,
    pub etcd_errors: Counter,
    /// `[certificate.reload] drain`: how long each restart waited for client connections.
    pub drain_wait: Family<NameLabel, Histogram>,
    /// Restarts that went ahead at the drain's limit with client connections still open.
    pub drain_limit_reached: Family<NameLabel, Counter>,
    /// `[certificate.reload] hold`: how long new connections were held across each restart.
    pub hold: Family<NameLabel, Histogram>,
    ready_flag: AtomicBool,
}

/// One request to etcd, and whether it succeeded.
pub fn etcd_request(ok: bool) {
    let m = global();
    m.etcd_requests.inc();
    if !ok {
        m.etcd_errors.inc();
    }
}

/// The process-wide metrics (instrumented code needs no plumbing to reach them).
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("regcert");
        let expiration = Family::<NameLabel, Gauge>::default();
        let renewal = Family::<NameLabel, Gauge>::default();
        let alert = Family::<NameLabel, Gauge>::default();
        let ready = Family::<NameLabel, Gauge>::default();
        let ca_expiry = Family::<NameLabel, Gauge>::default();
        let renewals = Family::<RenewalLabels, Counter>::default();
        let verify_success = Family::<NameLabel, Gauge>::default();
        let reload_pending = Family::<NameLabel, Gauge>::default();
        let acme_requests = Family::<AcmeLabels, Counter>::default();
        let acme_duration = Family::<AcmeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "certificate_expiration_timestamp_seconds",
            "When the installed certificate expires (Unix time)",
            expiration.clone(),
        );
        registry.register(
            "certificate_renewal_timestamp_seconds",
            "When the certificate is next due for renewal (Unix time)",
            renewal.clone(),
        );
        registry.register(
            "certificate_alert_timestamp_seconds",
            "When the certificate, if still not renewed, raises the `expiring` alert (Unix time)",
            alert.clone(),
        );
        registry.register(
            "certificate_ready_status",
            "1 when a valid certificate is installed and the last renewal did not fail",
            ready.clone(),
        );
        registry.register(
            "ca_expiry_timestamp_seconds",
            "When the private CA's first certificate (root or intermediate) expires; no leaf outlives it (Unix time)",
            ca_expiry.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        let lifetime = Family::<NameLabel, Gauge>::default();
        let window_start = Family::<NameLabel, Gauge>::default();
        let window_end = Family::<NameLabel, Gauge>::default();
        registry.register(
            "certificate_info",
            "The installed certificate's CA (ACME directory URL or ca:NAME) and ACME profile; always 1",
            info.clone(),
        );
        registry.register("certificate_lifetime_seconds", "The installed certificate's lifetime (notAfter - notBefore)", lifetime.clone());
        registry.register(
            "certificate_renewal_window_start_timestamp_seconds",
            "Start of the renewal window the CA suggests for the installed certificate (ARI; Unix time)",
            window_start.clone(),
        );
        registry.register(
            "certificate_renewal_window_end_timestamp_seconds",
            "End of the renewal window the CA suggests for the installed certificate (ARI; Unix time)",
            window_end.clone(),
        );
        registry.register("renewals", "Renewal attempts by result", renewals.clone());
        registry.register("verify_success", "1 when the last HTTPS verification passed", verify_success.clone());
        registry.register(
            "reload_pending_timestamp_seconds",
            "Installed, reload pending until this time (the reload window opens; Unix time); 0 when no reload is pending",
            reload_pending.clone(),
        );
        registry.register("acme_requests", "Requests sent to the ACME server", acme_requests.clone());
        let cluster_leader = Gauge::default();
        let rollout_state = Family::<NameLabel, Gauge>::default();
        let (etcd_requests, etcd_errors) = (Counter::default(), Counter::default());
        registry.register("cluster_leader", "Fleet mode: 1 while this node is the fleet's leader", cluster_leader.clone());
        registry.register(
            "cluster_rollout_state",
            "Fleet mode: the rollout of the fleet's certificate (0 none in progress, 1 rolling, 2 halted)",
            rollout_state.clone(),
        );
        registry.register("cluster_etcd_requests", "Fleet mode: requests this node sent to etcd", etcd_requests.clone());
        registry.register("cluster_etcd_errors", "Fleet mode: etcd requests that failed or timed out", etcd_errors.clone());
        registry.register("acme_request_duration_seconds", "Duration of requests to the ACME server", acme_duration.clone());
        let drain_wait =
            Family::<NameLabel, Histogram>::new_with_constructor(|| Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0]));
        let drain_limit_reached = Family::<NameLabel, Counter>::default();
        let hold = Family::<NameLabel, Histogram>::new_with_constructor(|| Histogram::new([0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]));
        registry.register(
            "reload_drain_wait_seconds",
            "[certificate.reload] drain: how long a restart waited for the registry's client connections to end",
            drain_wait.clone(),
        );
        registry.register(
            "reload_drain_limit_reached",
            "[certificate.reload] drain: restarts that went ahead at the limit with client connections still open (transfers cut)",
            drain_limit_reached.clone(),
        );
        registry.register(
            "reload_hold_seconds",
            "[certificate.reload] hold: how long new connections were held while the registry restarted",
            hold.clone(),
        );
        Metrics {
            registry,
            expiration,
            renewal,
            alert,
            ready,
            ca_expiry,
            renewals,
            verify_success,
            reload_pending,
            acme_requests,
            acme_duration,
            info,
            info_now: Default::default(),
            lifetime,
            window_start,
            window_end,
            cluster_leader,
            rollout_state,
            etcd_requests,
            etcd_errors,
            drain_wait,
            drain_limit_reached,
            hold,
            ready_flag: AtomicBool::new(false),
        }
    }

    pub fn name(name: &str) -> NameLabel {
        NameLabel { name: name.to_owned() }
    }

    /// The installed certificate of `name` came from `ca` under `profile` (one series per
    /// certificate: a change replaces the old one).
    pub fn set_info(&self, name: &str, ca: &str, profile: &str) {
        let labels = InfoLabels { name: name.to_owned(), ca: ca.to_owned(), profile: profile.to_owned() };
        let mut now = self.info_now.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = now.insert(name.to_owned(), labels.clone()).filter(|old| *old != labels) {
            self.info.remove(&old);
        }
        self.info.get_or_create(&labels).set(1);
    }

    pub fn count_renewal(&self, name: &str, result: &str) {
        self.renewals.get_or_create(&RenewalLabels { name: name.to_owned(), result: result.to_owned() }).inc();
    }

    pub fn observe_acme(&self, method: &str, status: &str, took: Duration) {
        let labels = AcmeLabels { method: method.to_owned(), status: status.to_owned() };
        self.acme_requests.get_or_create(&labels).inc();
        self.acme_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// After the first completed check: `/readyz` answers 200.
    pub fn set_ready(&self) {
        self.ready_flag.store(true, Ordering::SeqCst);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serve the endpoint until the task is aborted (bounded: see [`crate::httpserve`]).
pub async fn serve(listen: SocketAddr) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("[metrics] listen = \"{listen}\": {e}"))?;
    tracing::info!(%listen, "metrics endpoint listening");
    Ok(tokio::spawn(crate::httpserve::serve(listener, "metrics", crate::httpserve::Limits::DEFAULT, |req, _| answer(req))))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let m = global();
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", m.render()),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if m.ready_flag.load(Ordering::SeqCst) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "first check not finished\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let rsp = Response::builder().status(status).header("content-type", ctype).body(Full::new(Bytes::from(body)));
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
