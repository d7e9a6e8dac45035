//! Obtaining a certificate from an ACME CA (RFC 8555): order, authorize, finalize, download.

use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, Identifier, NewOrder, Order, OrderStatus, RenewalInfo, RetryPolicy,
};
use rustls_pki_types::CertificateDer;

use crate::certinfo::{LeafInfo, check_chain_links, fmt_time, parse_pem_certs, to_pem, unix};
use crate::challenge::dns01::Dns01;
use crate::challenge::{Published, Solver};
use crate::config::CertificateConfig;
use crate::keys::LeafKey;
use crate::obtain::problem::{describe, describe_problem};
use crate::state::{Issued, IssuedMeta};

/// An ACME account plus the way it answers challenges; shared by every certificate of a run.
pub struct AcmeIssuer {
    account: Account,
    directory: String,
    solver: Solver,
}

/// Poll quickly at first (a local or fast CA answers in milliseconds), then back off; the CA's
/// Retry-After always wins. Our polling must never be what makes an issuance slow.
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new().initial_delay(Duration::from_millis(10)).backoff(1.5).timeout(Duration::from_secs(180))
}

impl AcmeIssuer {
    pub fn new(account: Account, directory: String, solver: Solver) -> Self {
        Self { account, directory, solver }
    }

    /// The CA's suggested renewal window for `leaf` (ARI, RFC 9773) and when to ask again;
    /// `None` when the CA offers no renewalInfo or the leaf has no authority key identifier.
    pub async fn renewal_window(&self, leaf: &CertificateDer<'_>) -> Result<Option<(RenewalInfo, Duration)>, String> {
        let Ok(id) = CertificateIdentifier::try_from(leaf) else { return Ok(None) };
        match self.account.renewal_info(&id).await {
            Ok(info) => Ok(Some(info)),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(format!("fetching the renewal window: {}", describe(&e, &self.directory))),
        }
    }

    /// Run one order for `cert` with `key` and return the verified result. `replaces` is the
    /// certificate being renewed: with a CA that offers ARI the order says so (RFC 9773), which
    /// Let's Encrypt exempts from its rate limits.
    pub async fn issue(&self, cert: &CertificateConfig, key: LeafKey, replaces: Option<&CertificateDer<'_>>) -> Result<Issued, String> {
        let name = cert.name.as_str();
        let ca = self.directory.as_str();
        let ids: Vec<Identifier> = cert.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = self.new_order(&ids, replaces).await.map_err(|e| describe(&e, ca))?;
        tracing::info!(cert = %name, order = %order.url(), "ACME order created");

        let solver = match &cert.dns {
            Some(dns) => Solver::Dns01(std::sync::Arc::new(Dns01::new(dns.clone()))),
            None => self.solver.clone(),
        };
        let mut published = Vec::new();
        let authorized = self.authorize(&mut order, &solver, &mut published).await;
        for p in &published {
            solver.cleanup(p).await;
        }
        authorized?;
        tracing::info!(cert = %name, "names validated");

        let csr = key.csr_der(&cert.domains).map_err(|e| format!("building the CSR: {e}"))?;
        retry_bad_nonce!(order.finalize_csr(&csr).await).map_err(|e| format!("finalizing the order: {}", describe(&e, ca)))?;
        let pem = retry_bad_nonce!(order.poll_certificate(&poll_policy()).await)
            .map_err(|e| format!("downloading the certificate: {}", describe(&e, ca)))?;
        let issued = self.check_and_package(cert, key, &pem, order.url())?;
        tracing::info!(cert = %name, serial = %issued.meta.serial, not_after = %fmt_time(issued.meta.not_after), "certificate issued");
        Ok(issued)
    }

    async fn new_order(&self, ids: &[Identifier], replaces: Option<&CertificateDer<'_>>) -> Result<Order, instant_acme::Error> {
        if let Some(id) = replaces.and_then(|der| CertificateIdentifier::try_from(der).ok()) {
            match retry_bad_nonce!(self.account.new_order(&NewOrder::new(ids).replaces(id.clone())).await) {
                Ok(order) => return Ok(order),
                // No ARI at this CA, or the certificate was already replaced: order plainly.
                Err(instant_acme::Error::Unsupported(_)) => {}
                Err(instant_acme::Error::Api(p))
                    if p.r#type.as_deref().is_some_and(|t| t.ends_with(":alreadyReplaced") || t.ends_with(":conflict")) =>
                {
                    tracing::debug!(problem = %describe_problem(&p), "order without `replaces`");
                }
                // A CA that ignored `replaces` (instant-acme checks the echo): order plainly.
                Err(instant_acme::Error::Other(e)) if e.to_string().contains("replaces") => {
                    tracing::debug!(error = %e, "the CA ignored `replaces`; ordering without it");
                }
                Err(e) => return Err(e),
            }
        }
        retry_bad_nonce!(self.account.new_order(&NewOrder::new(ids)).await)
    }

    /// Publish every pending challenge, wait until the CA can see them, tell the CA, and wait
    /// for the order to become ready. What goes out is recorded in `published` as it goes, so
    /// the caller can always clean up.
    async fn authorize(&self, order: &mut Order, solver: &Solver, published: &mut Vec<Published>) -> Result<(), String> {
        let ca = self.directory.as_str();
        let kind = solver.challenge_type();
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| describe(&e, ca))?;
            let ident = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => return Err(format!("authorization for {ident} is {other:?}; the CA will not validate it")),
            }
            let challenge = authz.challenge(kind.clone()).ok_or_else(|| format!("the CA offers no {kind:?} challenge for {ident}"))?;
            let key_auth = challenge.key_authorization();
            published.push(solver.present(&ident, &challenge.token, &key_auth).await?);
        }
        solver.wait_visible(published).await?;
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| describe(&e, ca))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| format!("the CA offers no {kind:?} challenge for {ident}"))?;
            retry_bad_nonce!(challenge.set_ready().await).map_err(|e| describe(&e, ca))?;
            tracing::debug!(identifier = %ident, "challenge ready");
        }
        match retry_bad_nonce!(order.poll_ready(&poll_policy()).await) {
            Ok(OrderStatus::Ready) => Ok(()),
            // The order's own problem is generic; the failed challenges say which name and why.
            Ok(_) => Err(self.validation_failures(order).await),
            Err(instant_acme::Error::Api(_)) if order.state().status == OrderStatus::Invalid => Err(self.validation_failures(order).await),
            Err(e) => Err(describe(&e, ca)),
        }
    }

    /// Why an order went invalid: each failed challenge's problem, by identifier.
    async fn validation_failures(&self, order: &mut Order) -> String {
        let mut reasons = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(Ok(authz)) = authzs.next().await {
            let ident = authz.identifier().to_string();
            for ch in authz.challenges.iter().filter(|c| c.error.is_some()) {
                if let Some(p) = &ch.error {
                    reasons.push(format!("{ident}: {}", describe_problem(p)));
                }
            }
        }
        if reasons.is_empty() {
            match &order.state().error {
                Some(p) => describe_problem(p),
                None => "the CA marked the order invalid without saying why".to_owned(),
            }
        } else {
            format!("validation failed: {}", reasons.join("; "))
        }
    }

    /// Never hand on a certificate we would not install: it must be for our key, cover every
    /// name, and come with the intermediates that make its chain complete.
    fn check_and_package(&self, cert: &CertificateConfig, key: LeafKey, pem: &str, order_url: &str) -> Result<Issued, String> {
        let chain = parse_pem_certs(pem.as_bytes()).map_err(|e| format!("the CA's certificate download {e}"))?;
        check_chain_links(&chain)?;
        let leaf = LeafInfo::parse(&chain[0])?;
        if leaf.spki != key.spki_der() {
            return Err("the CA returned a certificate for a different public key than our CSR".into());
        }
        if !leaf.covers(&cert.domains) {
            return Err(format!("the CA returned a certificate for {:?}, not for {:?}", leaf.dns_names, cert.domains));
        }
        Ok(Issued {
            leaf_pem: to_pem(&chain[..1]),
            chain_pem: to_pem(&chain[1..]),
            key_pem: key.pem().to_owned(),
            meta: IssuedMeta {
                name: cert.name.clone(),
                domains: cert.domains.clone(),
                key_type: cert.key,
                directory: self.directory.clone(),
                order_url: order_url.to_owned(),
                issued_at: unix(SystemTime::now()),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                serial: leaf.serial,
                sha256: leaf.sha256,
                issuer: leaf.issuer,
            },
        })
    }
}
