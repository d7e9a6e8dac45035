//! The ACME issuer (RFC 8555): order, authorize, finalize, download — on instant-acme.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hyper::http;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, CertificateIdentifier, HttpClient, Identifier, NewOrder, Order, OrderStatus, RenewalInfo,
    RetryPolicy,
};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use tokio::sync::OnceCell;

use super::chains;
use super::error::Error;
use super::jws::Signer;
use super::problem::{Problem, ProblemKind};
use super::tls::{AlternateChains, LastErrorResponse};
use super::{Predecessor, RenewalWindow, Revocation, Trial, account, tls};
use crate::certinfo::{LeafInfo, check_chain_links, fmt_time, parse_pem_certs, to_pem, unix};
use crate::challenge::dns_persist::{self, DnsPersist};
use crate::challenge::dns01::Dns01;
use crate::challenge::{Published, Solver};
use crate::config::{AcmeConfig, CertificateConfig, Http01Config, IssuerRef};
use crate::keys::LeafKey;
use crate::progress::step;
use crate::state::{Issued, IssuedMeta, StateDir};

/// An ACME CA as configured in `[acme]`. The account is loaded (or created) on first use and
/// shared by every certificate of the process; a failure to do so is remembered for the run,
/// so a CA that is down costs one attempt, not one per certificate.
pub struct AcmeIssuer {
    /// How certificates name it: `acme`, `acme:NAME`.
    name: IssuerRef,
    config: AcmeConfig,
    http01: Http01Config,
    /// Answers HTTP-01 instead of what `http01` says (fleet mode: tokens in etcd).
    http01_solver: Option<Solver>,
    state: StateDir,
    /// What the CA's last error response said beyond its problem (see [`LastErrorResponse`]).
    last_error: Arc<LastErrorResponse>,
    /// The alternate chains offered with certificate downloads (see [`AlternateChains`]).
    alternates: Arc<AlternateChains>,
    /// The roots that the CA's own TLS must chain to (read once).
    roots: OnceLock<Result<RootCertStore, Error>>,
    ready: OnceCell<Result<Ready, Error>>,
    /// The directory document, read once (for `renewalInfo` and `newNonce`).
    directory_doc: OnceCell<Result<serde_json::Value, Error>>,
    /// See [`AcmeIssuer::http`].
    plain: OnceLock<Box<dyn HttpClient>>,
}

/// The account, and the way this CA's HTTP-01 challenges are answered.
struct Ready {
    account: Account,
    signer: Signer,
    solver: Solver,
}

/// For a dry run against Let's Encrypt's production directory: the same settings for its
/// staging directory (its own account there; no EAB, which Let's Encrypt does not use).
fn staging_instead(config: &AcmeConfig) -> Option<AcmeConfig> {
    (config.directory_url() == crate::config::LETSENCRYPT).then(|| AcmeConfig {
        directory: "letsencrypt-staging".into(),
        eab: None,
        ..config.clone()
    })
}

/// When to ask for a renewal window again if the CA did not say (RFC 9773 asks CAs to say).
const DEFAULT_ARI_RETRY: Duration = Duration::from_secs(6 * 3_600);

/// Poll quickly at first (a local or fast CA answers in milliseconds), then back off; the CA's
/// Retry-After always wins. Our polling must never be what makes an issuance slow.
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new().initial_delay(Duration::from_millis(10)).backoff(1.5).timeout(Duration::from_secs(180))
}

impl AcmeIssuer {
    pub(crate) fn new(name: IssuerRef, config: &AcmeConfig, http01: &Http01Config, state: &StateDir) -> Self {
        Self {
            name,
            config: config.clone(),
            http01: http01.clone(),
            http01_solver: None,
            state: state.clone(),
            last_error: Arc::new(LastErrorResponse::default()),
            alternates: Arc::new(AlternateChains::default()),
            roots: OnceLock::new(),
            ready: OnceCell::new(),
            directory_doc: OnceCell::new(),
            plain: OnceLock::new(),
        }
    }

    /// The roots the CA's own TLS must chain to: the system's and `[acme] ca_bundle`.
    fn roots(&self) -> Result<&RootCertStore, Error> {
        let roots = self.roots.get_or_init(|| {
            tls::root_store(self.config.ca_bundle.as_deref().as_slice())
                .map_err(|e| Error::Local(format!("{} ca_bundle: {e}", self.name.section())))
        });
        roots.as_ref().map_err(Clone::clone)
    }

    /// A new HTTP client for this CA with `roots`, `[acme] timeout` on every request.
    fn client(&self, roots: &RootCertStore) -> Box<dyn HttpClient> {
        tls::acme_http_client(roots.clone(), self.config.timeout, self.last_error.clone(), self.alternates.clone())
    }

    /// The client for plain GETs (renewal windows), made once: its connections are reused from
    /// one certificate's window to the next.
    fn http(&self) -> Result<&dyn HttpClient, Error> {
        let roots = self.roots()?;
        Ok(self.plain.get_or_init(|| self.client(roots)).as_ref())
    }

    pub(crate) fn profile<'a>(&'a self, cert: &'a CertificateConfig) -> Option<&'a str> {
        cert.acme_profile(&self.config)
    }

    pub(crate) fn answer_http01_with(&mut self, solver: Solver) {
        self.http01_solver = Some(solver);
    }

    pub(crate) fn directory(&self) -> &str {
        self.config.directory_url()
    }

    /// The CA's `ca_bundle`: the roots of a private ACME CA (step-ca, Pebble), which its
    /// certificates chain to as well; a public CA's roots are the system's.
    pub(crate) fn trust_anchor(&self) -> Option<&std::path::Path> {
        self.config.ca_bundle.as_deref()
    }

    /// `ACME https://…` for `[acme]`, `ACME "NAME" (https://…)` for `[acme_ca.NAME]`.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            IssuerRef::AcmeNamed(name) => format!("ACME \"{name}\" ({})", self.directory()),
            _ => format!("ACME {}", self.directory()),
        }
    }

    async fn ready(&self) -> Result<&Ready, Error> {
        let init = self.ready.get_or_init(|| async {
            step("loading the ACME account");
            let roots = self.roots()?;
            let http = || self.client(roots);
            let (account, signer) = account::load_or_create(&self.state, &self.config, &self.name, http, &self.last_error).await?;
            let solver = self.http01_solver.clone().unwrap_or_else(|| Solver::from_config(&self.http01));
            Ok(Ready { account, signer, solver })
        });
        init.await.as_ref().map_err(Clone::clone)
    }

    /// An instant-acme error as ours, with the Retry-After its response carried.
    fn error(&self, e: instant_acme::Error) -> Error {
        Error::from_acme(&e, self.directory(), &self.name.section(), self.last_error.take())
    }

    /// What this CA sent is not ACME; the hint names its table.
    fn not_acme(&self, detail: String) -> Error {
        Error::NotAcme { ca: self.directory().to_owned(), section: self.name.section(), detail }
    }

    /// The CA's suggested renewal window for `leaf` (ARI, RFC 9773) and when to ask again;
    /// `None` when the CA offers no renewalInfo, does not know the certificate (404: another
    /// CA's, say), or the leaf has no authority key identifier. Asking needs no account: it is a
    /// plain GET, made here because instant-acme takes a 404 or a missing Retry-After for an error.
    pub(crate) async fn renewal_window(&self, leaf: &CertificateDer<'_>) -> Result<Option<RenewalWindow>, Error> {
        const DURING: &str = "fetching the renewal window (ARI)";
        let Ok(id) = CertificateIdentifier::try_from(leaf) else { return Ok(None) };
        step(DURING);
        let http = self.http()?;
        let Some(base) = self.renewal_info_url(http).await.map_err(|e| e.during(DURING))? else { return Ok(None) };
        let url = format!("{}/{id}", base.trim_end_matches('/'));
        let (parts, body) = self.get(http, &url).await.map_err(|e| e.during(DURING))?;
        if parts.status == http::StatusCode::NOT_FOUND {
            tracing::debug!(%url, "the CA has no renewal window for this certificate (404)");
            return Ok(None);
        }
        if !parts.status.is_success() {
            return Err(self.problem_or_status(&parts, &body, &url).during(DURING));
        }
        let info: RenewalInfo = serde_json::from_slice(&body).map_err(|e| self.not_acme(format!("{url}: {e}")).during(DURING))?;
        // A CA must send Retry-After (RFC 9773 §4.2); without one, ask again in six hours.
        let retry_after = parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| tls::parse_retry_after(v.to_str().ok()?))
            .map_or(DEFAULT_ARI_RETRY, |t| t.duration_since(SystemTime::now()).unwrap_or_default());
        Ok(Some(RenewalWindow {
            start: info.suggested_window.start.unix_timestamp().max(0) as u64,
            end: info.suggested_window.end.unix_timestamp().max(0) as u64,
            retry_after,
            explanation_url: info.explanation_url,
        }))
    }

    /// The directory's `renewalInfo` URL.
    async fn renewal_info_url(&self, http: &dyn HttpClient) -> Result<Option<String>, Error> {
        Ok(self.directory_doc(http).await?["renewalInfo"].as_str().map(str::to_owned))
    }

    /// The directory document, fetched once.
    async fn directory_doc(&self, http: &dyn HttpClient) -> Result<&serde_json::Value, Error> {
        let doc = self
            .directory_doc
            .get_or_init(|| async {
                let (parts, body) = self.get(http, self.directory()).await?;
                if !parts.status.is_success() {
                    return Err(self.problem_or_status(&parts, &body, self.directory()));
                }
                serde_json::from_slice(&body).map_err(|e| self.not_acme(e.to_string()))
            })
            .await;
        doc.as_ref().map_err(Clone::clone)
    }

    /// A fresh nonce from the directory's `newNonce`.
    async fn nonce(&self, http: &dyn HttpClient) -> Result<String, Error> {
        let new_nonce = self.directory_doc(http).await?["newNonce"].as_str().map(str::to_owned);
        let url = new_nonce.ok_or_else(|| self.not_acme("the directory has no newNonce".into()))?;
        let (parts, body) = self.get(http, &url).await?;
        replay_nonce(&parts).ok_or_else(|| self.problem_or_status(&parts, &body, &url))
    }

    /// A POST-as-GET signed by the account (RFC 8555 §6.3): the body of the answer.
    async fn post_as_get(&self, signer: &Signer, url: &str) -> Result<Bytes, Error> {
        self.post_signed(signer, url, None).await
    }

    /// A POST of `payload` (none: a POST-as-GET) signed by `signer`: the body of the answer. A
    /// rejected nonce is retried with the one the rejection carried.
    async fn post_signed(&self, signer: &Signer, url: &str, payload: Option<&serde_json::Value>) -> Result<Bytes, Error> {
        let http = self.http()?;
        let mut nonce = self.nonce(http).await?;
        let mut attempts = 0;
        loop {
            let jws = signer.sign(url, &nonce, payload).map_err(Error::Local)?;
            let req = http::Request::post(url)
                .header(http::header::USER_AGENT, concat!("regcert/", env!("CARGO_PKG_VERSION")))
                .header(http::header::CONTENT_TYPE, "application/jose+json")
                .body(BodyWrapper::from(jws))
                .map_err(|e| Error::Local(format!("a request to {url}: {e}")))?;
            let mut rsp = http.request(req).await.map_err(|e| self.error(e))?;
            let parts = rsp.parts;
            let body = rsp.body.into_bytes().await.map_err(|e| self.error(instant_acme::Error::Other(e)))?;
            if parts.status.is_success() {
                return Ok(body);
            }
            let error = self.problem_or_status(&parts, &body, url);
            match replay_nonce(&parts) {
                Some(fresh) if error.is_problem(&ProblemKind::BadNonce) && attempts < 8 => {
                    attempts += 1;
                    nonce = fresh;
                }
                _ => return Err(error),
            }
        }
    }

    /// Revoke `leaf` (RFC 8555 §7.6) with `reason` (an RFC 5280 code). Signed by the account that
    /// issued it when state_dir holds that account (`issued_by`: the account URL recorded at
    /// issuance); otherwise — or when the CA says this account is not the certificate's — by the
    /// certificate's own key (`key_pem`), which any CA must accept.
    pub(crate) async fn revoke(
        &self,
        leaf: &CertificateDer<'_>,
        reason: u8,
        issued_by: Option<&str>,
        key_pem: Option<&str>,
    ) -> Result<Revocation, Error> {
        const DURING: &str = "revoking the certificate";
        let http = self.http()?;
        let url = self.directory_doc(http).await.map_err(|e| e.during(DURING))?["revokeCert"].as_str().map(str::to_owned);
        let url = url.ok_or_else(|| self.not_acme("the directory has no revokeCert".into()))?;
        let payload = serde_json::json!({ "certificate": URL_SAFE_NO_PAD.encode(leaf), "reason": reason });
        let outcome = |r: Result<Bytes, Error>, by| match r {
            Ok(_) => Ok(by),
            Err(e) if e.is_problem(&ProblemKind::Other("alreadyRevoked".into())) => Ok(Revocation::AlreadyRevoked),
            Err(e) => Err(e.during(DURING)),
        };
        let stored = account::stored_id(&self.state, self.directory()).map_err(Error::Local)?.map(|(id, _)| id);
        if account_first(stored.as_deref(), issued_by) {
            let signer = &self.ready().await?.signer;
            match outcome(self.post_signed(signer, &url, Some(&payload)).await, Revocation::ByAccount) {
                Err(e) if e.is_problem(&ProblemKind::Unauthorized) && key_pem.is_some() => {
                    tracing::info!(error = %e, "the CA says the account is not the certificate's; signing with the certificate's own key");
                }
                done => return done,
            }
        }
        let key_pem = key_pem.ok_or_else(|| {
            Error::Local(
                "the account that issued the certificate is not in state_dir and its private key is not installed, so nothing can sign the revocation".into(),
            )
        })?;
        let pkcs8 = rcgen::KeyPair::from_pem(key_pem)
            .map(|k| zeroize::Zeroizing::new(k.serialize_der()))
            .map_err(|e| Error::Local(format!("the certificate's private key cannot be read: {e}")))?;
        let signer = Signer::certificate_key(&pkcs8).map_err(Error::Local)?;
        outcome(self.post_signed(&signer, &url, Some(&payload)).await, Revocation::ByCertificateKey)
    }

    /// The chain to install for `cert`: the default chain the CA sent (`pem`, downloaded from
    /// `cert_url`), or — with `preferred_chain` — the first chain the CA offers whose topmost
    /// certificate the named issuer signed. None of them: the default one, and the log says so.
    async fn preferred_chain(&self, cert: &CertificateConfig, signer: &Signer, pem: String, cert_url: Option<&str>) -> String {
        let alternates = cert_url.map(|u| self.alternates.take(u)).unwrap_or_default();
        let Some(preferred) = cert.preferred_chain.as_deref() else { return pem };
        if chains::is_preferred(&pem, preferred) {
            tracing::info!(cert = %cert.name, preferred_chain = preferred, "the CA's default chain is the preferred one");
            return pem;
        }
        let mut offered = vec![chains::top_issuer(&pem).unwrap_or_default()];
        for url in &alternates {
            step("downloading an alternate chain");
            match self.post_as_get(signer, url).await.map(|b| String::from_utf8_lossy(&b).into_owned()) {
                Ok(alternate) if chains::is_preferred(&alternate, preferred) => {
                    tracing::info!(cert = %cert.name, preferred_chain = preferred, %url, "installing the alternate chain that ends at the preferred issuer");
                    return alternate;
                }
                Ok(alternate) => offered.push(chains::top_issuer(&alternate).unwrap_or_default()),
                Err(e) => tracing::warn!(cert = %cert.name, %url, error = %e, "could not download an alternate chain the CA offered"),
            }
        }
        tracing::warn!(
            cert = %cert.name,
            preferred_chain = preferred,
            offered = ?offered,
            "no chain the CA offers ends with a certificate issued by preferred_chain; installing the default chain (check the name against `offered`)"
        );
        pem
    }

    /// A plain GET to the CA: the head and the whole body.
    async fn get(&self, http: &dyn HttpClient, url: &str) -> Result<(http::response::Parts, Bytes), Error> {
        let req = http::Request::get(url)
            .header(http::header::USER_AGENT, concat!("regcert/", env!("CARGO_PKG_VERSION")))
            .body(BodyWrapper::default())
            .map_err(|e| Error::Local(format!("a request to {url}: {e}")))?;
        let mut rsp = http.request(req).await.map_err(|e| self.error(e))?;
        let body = rsp.body.into_bytes().await.map_err(|e| self.error(instant_acme::Error::Other(e)))?;
        Ok((rsp.parts, body))
    }

    /// An error answer to a plain GET: the CA's problem document, or its status.
    fn problem_or_status(&self, parts: &http::response::Parts, body: &[u8], url: &str) -> Error {
        match serde_json::from_slice::<instant_acme::Problem>(body) {
            Ok(p) => self.error(instant_acme::Error::Api(p)),
            Err(_) => Error::Unexpected { ca: self.directory().to_owned(), detail: format!("HTTP {} from {url}", parts.status) },
        }
    }

    /// Run one order for `cert` with `key` and return the verified result. `current` is the
    /// certificate being renewed: when this account issued it, the order names it (`replaces`,
    /// RFC 9773), which Let's Encrypt exempts from its rate limits; a CA refuses `replaces` for
    /// another account's certificate (an imported one, a recreated account), so then it is left out.
    pub(crate) async fn issue(&self, cert: &CertificateConfig, key: LeafKey, current: Option<Predecessor<'_>>) -> Result<Issued, Error> {
        let name = cert.name.as_str();
        let account = self.ready().await?.account.id().to_owned();
        let replaces = current.and_then(|p| {
            let ours = p.issued_by == Some((self.directory(), account.as_str()));
            if !ours {
                tracing::info!(cert = %name, "the installed certificate was not issued by this ACME account (or state_dir does not say); ordering without `replaces`");
            }
            ours.then_some(p.leaf)
        });
        let mut order = self.validated_order(cert, replaces, "ACME order created").await?;
        tracing::info!(cert = %name, "names validated");

        let csr = key.csr_der(&cert.names()).map_err(|e| Error::Local(format!("building the CSR: {e}")))?;
        step("finalizing the order");
        retry_bad_nonce!(order.finalize_csr(&csr).await).map_err(|e| self.error(e).during("finalizing the order"))?;
        step("downloading the certificate");
        let pem = retry_bad_nonce!(order.poll_certificate(&poll_policy()).await)
            .map_err(|e| self.error(e).during("downloading the certificate"))?;
        let cert_url = order.state().certificate.clone();
        let pem = self.preferred_chain(cert, &self.ready().await?.signer, pem, cert_url.as_deref()).await;
        // The profile the CA says it issued under (a CA may echo it), else the one ordered.
        let profile = order.state().profile.clone().or_else(|| self.profile(cert).map(str::to_owned));
        let issued = self.check_and_package(cert, key, &pem, order.url(), &account, profile)?;
        tracing::info!(
            cert = %name,
            ca = %self.label(),
            serial = %issued.meta.serial,
            not_after = %fmt_time(issued.meta.not_after),
            profile = issued.meta.profile.as_deref().unwrap_or("(the CA's default)"),
            "certificate issued"
        );
        Ok(issued)
    }

    /// A dry run (`renew --dry-run`): never a certificate from a production CA, never `replaces`.
    /// Against Let's Encrypt's production directory, the whole flow runs against its staging
    /// directory instead (its own account there; the certificate is untrusted and thrown away).
    /// Against any other CA, the order goes as far as valid authorizations, which are then
    /// deactivated; the order is never finalized.
    pub(crate) async fn trial(&self, cert: &CertificateConfig, key: LeafKey) -> Result<Trial, Error> {
        if let Some(config) = staging_instead(&self.config) {
            let staging = AcmeIssuer::new(self.name.clone(), &config, &self.http01, &self.state);
            let issued = staging.issue(cert, key, None).await?;
            let how = format!(
                "issued by Let's Encrypt's staging CA ({}) instead of production; an untrusted test certificate, thrown away",
                staging.directory()
            );
            return Ok(Trial { issued: Some(issued), how });
        }
        let (validated, deactivated) = self.authorize_only(cert).await?;
        let how = format!(
            "the CA {} validated {validated} name(s); the order was not finalized (no certificate issued) and {deactivated} authorization(s) were deactivated",
            self.directory()
        );
        Ok(Trial { issued: None, how })
    }

    /// Order (without `replaces`), validate every name, then deactivate the authorizations:
    /// (names validated, authorizations deactivated).
    async fn authorize_only(&self, cert: &CertificateConfig) -> Result<(usize, usize), Error> {
        let name = cert.name.as_str();
        let mut order = self.validated_order(cert, None, "dry run: ACME order created (it will not be finalized)").await?;
        tracing::info!(cert = %name, "dry run: names validated; deactivating the authorizations");
        // Fetching an authorization can meet badNonce like any request: a failed pass is tried
        // again (what is deactivated already is skipped).
        let (mut valid, mut deactivated) = (0, 0);
        for attempt in 1..=3 {
            (valid, deactivated) = (0, 0);
            let mut failed = None;
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = match authz {
                    Ok(a) => a,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                match authz.status {
                    AuthorizationStatus::Deactivated => {
                        (valid, deactivated) = (valid + 1, deactivated + 1);
                        continue;
                    }
                    AuthorizationStatus::Valid => valid += 1,
                    _ => continue,
                }
                let identifier = authz.identifier().to_string();
                match retry_bad_nonce!(authz.deactivate().await.map(|_| ())) {
                    Ok(()) => deactivated += 1,
                    Err(e) => {
                        tracing::warn!(cert = %name, %identifier, error = %self.error(e), "dry run: could not deactivate the authorization")
                    }
                }
            }
            match failed {
                None => break,
                Some(e) if attempt == 3 => return Err(self.error(e).during("deactivating the dry run's authorizations")),
                Some(e) => tracing::debug!(error = %e, "fetching the authorizations to deactivate; trying again"),
            }
        }
        Ok((valid, deactivated))
    }

    async fn new_order(
        &self,
        account: &Account,
        ids: &[Identifier],
        profile: Option<&str>,
        replaces: Option<&CertificateDer<'_>>,
    ) -> Result<Order, Error> {
        step("creating the ACME order");
        let plain = || {
            let order = NewOrder::new(ids);
            match profile {
                Some(p) => order.profile(p),
                None => order,
            }
        };
        if let Some(id) = replaces.and_then(|der| CertificateIdentifier::try_from(der).ok()) {
            match retry_bad_nonce!(account.new_order(&plain().replaces(id.clone())).await).map_err(|e| self.error(e)) {
                Ok(order) => return Ok(order),
                // No ARI at this CA: order plainly.
                Err(Error::Unsupported { .. }) => {}
                // A rate limit applies to a plain order all the more.
                Err(e) if e.is_problem(&ProblemKind::RateLimited) => return Err(e),
                // Refused because of `replaces`: already replaced, a conflict, or — Let's Encrypt's
                // `unauthorized`/`malformed` — a certificate another account issued (after `import
                // acme.sh`, a new account, staging → production, renamed domains). Or a CA that
                // ignored the field (instant-acme checks that it is echoed). Order plainly, once.
                Err(e @ (Error::Problem(_) | Error::Unexpected { .. })) => {
                    tracing::info!(error = %e, "the CA did not take `replaces`; ordering without it");
                }
                Err(e) => return Err(e),
            }
        }
        retry_bad_nonce!(account.new_order(&plain()).await).map_err(|e| self.error(e))
    }

    /// Order `cert`'s names (naming the certificate it `replaces`, if any) and get every one
    /// validated; `created` is the log line for the new order.
    async fn validated_order(
        &self,
        cert: &CertificateConfig,
        replaces: Option<&CertificateDer<'_>>,
        created: &str,
    ) -> Result<Order, Error> {
        let ready = self.ready().await?;
        let profile = self.profile(cert);
        if let Some(wanted) = profile {
            let offered: Vec<(&str, &str)> = ready.account.profiles().map(|p| (p.name, p.description)).collect();
            check_profile(wanted, &offered, self.directory()).map_err(|e| {
                let key = if cert.profile.is_some() {
                    format!("[[certificate]] `{}`: profile", cert.name)
                } else {
                    format!("{} profile", self.name.section())
                };
                Error::NotOffered(format!("{key} = \"{wanted}\": {e}"))
            })?;
        }
        // IP addresses are identifiers of their own type (RFC 8738), validated over HTTP-01 at the address itself.
        let ids: Vec<Identifier> =
            cert.domains.iter().map(|d| Identifier::Dns(d.clone())).chain(cert.ips.iter().map(|ip| Identifier::Ip(*ip))).collect();
        let mut order = self.new_order(&ready.account, &ids, profile, replaces).await?;
        tracing::info!(cert = %cert.name, order = %order.url(), "{created}");
        self.validate_names(&mut order, ready, cert).await?;
        Ok(order)
    }

    /// Answer the order's challenges the way `cert` is configured to (its DNS-01 provider, or
    /// this CA's HTTP-01 solver) and withdraw every answer afterwards, whatever happened.
    async fn validate_names(&self, order: &mut Order, ready: &Ready, cert: &CertificateConfig) -> Result<(), Error> {
        let solver = match cert.dns01() {
            Some(dns) => Solver::Dns01(Arc::new(Dns01::new(&cert.name, dns.clone()))),
            None if cert.dns_persist() => {
                let issuers = self.persist_issuers(order, ready).await?;
                Solver::DnsPersist(Arc::new(DnsPersist::new(&cert.name, cert.dns.clone(), ready.account.id(), issuers)))
            }
            None => ready.solver.clone(),
        };
        let mut published = Vec::new();
        let authorized = self.authorize(order, &solver, &mut published).await;
        for p in &published {
            solver.cleanup(p).await;
        }
        match (&solver, authorized) {
            // The CA looked and found no record for us: its reasons (without the HTTP-01/DNS-01
            // advice a problem's text carries) and the record that would do.
            (Solver::DnsPersist(p), Err(e)) => match persist_refusal(&e) {
                Some(why) => {
                    let records: Vec<_> =
                        published.into_iter().filter_map(|p| if let Published::Persist(r) = p { Some(r) } else { None }).collect();
                    Err(Error::Challenge(p.not_authorized(&records, &why)))
                }
                None => Err(e),
            },
            (_, authorized) => authorized,
        }
    }

    /// The issuer-domain-names of the order's dns-persist-01 challenges (the names a record may
    /// give for this CA). instant-acme does not keep the field, so the first pending
    /// authorization is fetched again, signed by the account. None pending: nothing to answer.
    async fn persist_issuers(&self, order: &mut Order, ready: &Ready) -> Result<Vec<String>, Error> {
        self.fetch_authorizations(order).await?;
        let mut pending = None;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let authz = authz.map_err(|e| self.error(e))?;
            if authz.status == AuthorizationStatus::Pending {
                pending = Some((authz.identifier().to_string(), authz.url().to_owned()));
                break;
            }
        }
        let Some((identifier, url)) = pending else { return Ok(Vec::new()) };
        let body = self.post_as_get(&ready.signer, &url).await.map_err(|e| e.during("fetching the dns-persist-01 challenge"))?;
        let authz: serde_json::Value = serde_json::from_slice(&body).map_err(|e| self.not_acme(format!("{url}: {e}")))?;
        let challenge = authz["challenges"].as_array().and_then(|c| c.iter().find(|c| c["type"] == dns_persist::CHALLENGE_TYPE));
        let Some(challenge) = challenge else {
            return Err(Error::NoChallenge { identifier, kind: dns_persist::CHALLENGE_TYPE.to_owned() });
        };
        Ok(strings(&challenge["issuer-domain-names"]))
    }

    /// What `regcert dns-persist show` prints for `cert`: the records that authorize this
    /// account (created now if there is none yet) at this CA. The issuer-domain-name comes
    /// from the directory's `meta.caaIdentities`, the names the CA's challenges list too
    /// (Let's Encrypt: letsencrypt.org; Pebble: its caaIdentities).
    pub(crate) async fn dns_persist_records(&self, cert: &CertificateConfig) -> Result<dns_persist::Shown, Error> {
        let existed = account::stored_id(&self.state, self.directory()).ok().flatten().is_some();
        let account = self.ready().await?.account.id().to_owned();
        let doc = self.directory_doc(self.http()?).await?;
        let Some(issuer) = strings(&doc["meta"]["caaIdentities"]).into_iter().next() else {
            return Err(Error::Local(format!(
                "the CA {} lists no issuer-domain-name in its directory (meta.caaIdentities): run `regcert renew --cert {}`; when the record is missing, the error prints it with the name from the CA's challenge",
                self.directory(),
                cert.name
            )));
        };
        Ok(dns_persist::Shown {
            records: dns_persist::records(&cert.domains, &issuer, &account),
            issuer,
            account_uri: account,
            account_created: !existed,
        })
    }

    /// Publish every pending challenge, wait until the CA can see them, tell the CA, and wait
    /// for the order to become ready. What goes out is recorded in `published` as it goes, so
    /// the caller can always clean up.
    async fn authorize(&self, order: &mut Order, solver: &Solver, published: &mut Vec<Published>) -> Result<(), Error> {
        let kind = solver.challenge_type();
        let no_challenge = |identifier: String| Error::NoChallenge { identifier, kind: format!("{kind:?}") };
        step("publishing the challenges");
        // Fetched once, with badNonce retries; the loops below read instant-acme's cache.
        self.fetch_authorizations(order).await?;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| self.error(e))?;
            let identifier = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(Error::AuthorizationUnusable { identifier, status: format!("{other:?}") }),
            }
            let challenge = authz.challenge(kind.clone()).ok_or_else(|| no_challenge(identifier.clone()))?;
            let key_auth = challenge.key_authorization();
            published.push(solver.present(&identifier, &challenge.token, &key_auth).await.map_err(Error::Challenge)?);
        }
        step("waiting until the challenges can be seen (DNS propagation, the HTTP-01 responder)");
        solver.wait_visible(published).await.map_err(Error::Challenge)?;
        step("asking the CA to validate the names");
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| self.error(e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let identifier = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| no_challenge(identifier.clone()))?;
            retry_bad_nonce!(challenge.set_ready().await).map_err(|e| self.error(e))?;
            tracing::debug!(identifier = %identifier, "challenge ready");
        }
        step("waiting for the CA to validate the names");
        match retry_bad_nonce!(order.poll_ready(&poll_policy()).await) {
            Ok(OrderStatus::Ready) => Ok(()),
            // The order's own problem is generic; the failed challenges say which name and why.
            Ok(_) => Err(self.validation_failures(order).await),
            Err(instant_acme::Error::Api(_)) if order.state().status == OrderStatus::Invalid => Err(self.validation_failures(order).await),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Fetch every authorization of `order` that instant-acme does not hold yet (it keeps them in
    /// the order until the order is refreshed). Fetching is a POST-as-GET, so it needs a nonce
    /// and can meet badNonce like any other step: instant-acme retries twice, then we restart
    /// the stream, which skips what was fetched and asks again for the rest.
    async fn fetch_authorizations(&self, order: &mut Order) -> Result<(), Error> {
        async fn fetch_missing(order: &mut Order) -> Result<(), instant_acme::Error> {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                authz?;
            }
            Ok(())
        }
        retry_bad_nonce!(fetch_missing(order).await).map_err(|e| self.error(e))
    }

    /// Why an order went invalid: each failed challenge's problem, by identifier.
    async fn validation_failures(&self, order: &mut Order) -> Error {
        // The refreshed order holds no authorization states: fetch them (the loop below keeps
        // whatever could be fetched if that fails).
        if let Err(e) = self.fetch_authorizations(order).await {
            tracing::debug!(error = %e, "fetching the failed authorizations");
        }
        let mut failures = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(Ok(authz)) = authzs.next().await {
            let identifier = authz.identifier().to_string();
            for p in authz.challenges.iter().filter_map(|c| c.error.as_ref()) {
                failures.push((identifier.clone(), Problem::from_acme(p, None)));
            }
        }
        if !failures.is_empty() {
            return Error::ValidationFailed { failures };
        }
        match &order.state().error {
            Some(p) => Error::Problem(Problem::from_acme(p, None)),
            None => Error::Rejected("the CA marked the order invalid without saying why".to_owned()),
        }
    }

    /// Never hand on a certificate we would not install: it must be for our key, cover every
    /// name, and come with the intermediates that make its chain complete.
    fn check_and_package(
        &self,
        cert: &CertificateConfig,
        key: LeafKey,
        pem: &str,
        order_url: &str,
        account: &str,
        profile: Option<String>,
    ) -> Result<Issued, Error> {
        let chain = parse_pem_certs(pem.as_bytes()).map_err(|e| Error::Rejected(format!("the CA's certificate download {e}")))?;
        check_chain_links(&chain).map_err(|e| {
            let ca = self.directory();
            Error::Rejected(format!(
                "the ACME server {ca} sent a broken chain, so nothing was installed (what is installed stays): {e}; tell the CA's operator"
            ))
        })?;
        let leaf = LeafInfo::parse(&chain[0]).map_err(Error::Rejected)?;
        if leaf.spki != key.spki_der() {
            return Err(Error::Rejected("the CA returned a certificate for a different public key than our CSR".into()));
        }
        if !leaf.covers_all(&cert.domains, &cert.ips) {
            let got: Vec<String> = leaf.dns_names.iter().cloned().chain(leaf.ips.iter().map(ToString::to_string)).collect();
            return Err(Error::Rejected(format!("the CA returned a certificate for {got:?}, not for {:?}", cert.names())));
        }
        Ok(Issued {
            leaf_pem: to_pem(&chain[..1]),
            chain_pem: to_pem(&chain[1..]),
            key_pem: key.into_pem(),
            meta: IssuedMeta {
                name: cert.name.clone(),
                domains: cert.names(),
                key_type: cert.key,
                directory: self.directory().to_owned(),
                order_url: order_url.to_owned(),
                issued_at: unix(SystemTime::now()),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                serial: leaf.serial,
                sha256: leaf.sha256,
                issuer: leaf.issuer,
                account: Some(account.to_owned()),
                profile,
            },
        })
    }
}

/// The strings of a JSON array (none for anything else).
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Sign a revocation as the account first? When state_dir holds an account for the CA and it
/// is the one recorded as the issuer, or nothing was recorded (an imported certificate): the CA
/// then says whether it is the certificate's. Pure.
fn account_first(stored: Option<&str>, issued_by: Option<&str>) -> bool {
    stored.is_some() && issued_by.is_none_or(|by| Some(by) == stored)
}

/// The `Replay-Nonce` of a response.
fn replay_nonce(parts: &http::response::Parts) -> Option<String> {
    parts.headers.get("replay-nonce").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Is `wanted` one of the profiles the CA's directory lists (`offered`: name, description)?
/// The error names what the CA offers, so the fix is one edit away.
fn check_profile(wanted: &str, offered: &[(&str, &str)], ca: &str) -> Result<(), String> {
    if offered.iter().any(|(name, _)| *name == wanted) {
        return Ok(());
    }
    if offered.is_empty() {
        return Err(format!(
            "the CA {ca} offers no profiles (its directory lists no meta.profiles): remove `profile` to get its only kind of certificate"
        ));
    }
    let list: Vec<String> = offered
        .iter()
        .map(|(name, description)| if description.is_empty() { format!("\"{name}\"") } else { format!("\"{name}\" ({description})") })
        .collect();
    Err(format!(
        "the CA {ca} does not offer this profile; it offers {}: set one of them, or remove `profile` for the CA's default",
        list.join(", ")
    ))
}

/// Why the CA refused a dns-persist-01 validation, if that is what `e` says: each failed
/// challenge's reason, or — when the failed authorizations could not be read back and only the
/// order's own problem tells (seen with Pebble 2.10) — that problem's.
fn persist_refusal(e: &Error) -> Option<String> {
    match e {
        Error::ValidationFailed { failures } => Some(
            failures
                .iter()
                .map(|(id, problem)| format!("{id}: {}", problem.detail.as_deref().unwrap_or("unauthorized")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Error::Problem(problem) if problem.kind == ProblemKind::Unauthorized => {
            Some(problem.detail.clone().unwrap_or_else(|| "unauthorized".into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_persist_refusal_is_read_from_the_challenges_or_from_the_orders_own_problem() {
        let problem = |t: &str, detail: &str| {
            let json = format!(r#"{{"type":"urn:ietf:params:acme:error:{t}","status":403,"detail":"{detail}"}}"#);
            Problem::from_acme(&serde_json::from_str::<instant_acme::Problem>(&json).unwrap(), None)
        };
        let failures =
            vec![("a.test".into(), problem("unauthorized", "no record")), ("*.a.test".into(), problem("unauthorized", "policy"))];
        assert_eq!(persist_refusal(&Error::ValidationFailed { failures }).as_deref(), Some("a.test: no record; *.a.test: policy"));
        assert_eq!(persist_refusal(&Error::Problem(problem("unauthorized", "policy mismatch"))).as_deref(), Some("policy mismatch"));
        assert_eq!(persist_refusal(&Error::Problem(problem("rateLimited", "slow down"))), None);
    }

    #[test]
    fn a_profile_is_checked_against_what_the_directory_offers() {
        let ca = "https://ca.example/dir";
        let offered = [("classic", "90 days"), ("shortlived", "")];
        assert_eq!(check_profile("shortlived", &offered, ca), Ok(()));
        let e = check_profile("tlsserver", &offered, ca).unwrap_err();
        assert!(e.contains("offers \"classic\" (90 days), \"shortlived\": set one of them"), "{e}");
        let e = check_profile("classic", &[], ca).unwrap_err();
        assert!(e.contains("offers no profiles") && e.contains(ca), "{e}");
    }

    #[test]
    fn a_revocation_is_signed_by_the_account_only_when_it_may_be_the_certificates() {
        assert!(account_first(Some("https://ca/acct/1"), Some("https://ca/acct/1")));
        assert!(account_first(Some("https://ca/acct/1"), None), "unknown issuer: the CA decides");
        assert!(!account_first(Some("https://ca/acct/2"), Some("https://ca/acct/1")), "another account: the certificate key");
        assert!(!account_first(None, Some("https://ca/acct/1")), "the account is gone: the certificate key");
    }

    #[test]
    fn dry_runs_against_lets_encrypt_production_go_to_staging() {
        let acme = |dir: &str| -> AcmeConfig { toml::from_str(&format!("directory = \"{dir}\"\naccept_terms = true")).unwrap() };
        for prod in ["letsencrypt", crate::config::LETSENCRYPT] {
            let staging = staging_instead(&acme(prod)).unwrap();
            assert_eq!(staging.directory_url(), "https://acme-staging-v02.api.letsencrypt.org/directory");
            assert!(staging.accept_terms);
        }
        for other in ["letsencrypt-staging", "https://acme.zerossl.com/v2/DV90", "https://127.0.0.1:14000/dir"] {
            assert!(staging_instead(&acme(other)).is_none(), "{other}");
        }
    }
}
