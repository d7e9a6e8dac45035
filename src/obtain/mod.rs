//! Step one of the pipeline: obtain a certificate from an issuer.
//!
//! An [`Issuer`] is whatever signs certificates for a `[[certificate]]`: an ACME CA
//! ([`acme`], with [`account`] and [`tls`]) or a private CA kept in state_dir ([`local_ca`]).
//! The rest of regcert sees only this seam: it asks [`Issuers`] for the issuer a certificate
//! names (`issuer = "acme"`, `"acme:NAME"` or `"ca:NAME"`; or ACME CAs tried in turn, see
//! [`Issuers::in_turn`] and [`Error::falls_through`]), and that issuer issues, tells the renewal
//! window its CA suggests, names the trust anchor that verification and client trust need, and
//! gives a label for people. What is done with an installed certificate (its renewal window,
//! `replaces`, verification) asks the issuer that issued it ([`Issuers::that_issued`]). A new kind of issuer is one new module here and one variant of
//! [`Issuer`]; nothing outside `obtain/` and `config` names a concrete one.

#[macro_use]
mod retry {
    /// instant-acme retries a rejected nonce twice; a CA that rejects more (Pebble can be told to
    /// reject 30%) would still fail a whole issuance on one unlucky request. Every step retried here
    /// is idempotent, so it is simply repeated with a fresh nonce.
    macro_rules! retry_bad_nonce {
        ($call:expr) => {{
            let mut attempts = 0;
            loop {
                match $call {
                    Err(instant_acme::Error::Api(p))
                        if $crate::obtain::problem::ProblemKind::from_type(p.r#type.as_deref())
                            == $crate::obtain::problem::ProblemKind::BadNonce
                            && attempts < 8 =>
                    {
                        attempts += 1;
                        tracing::debug!(attempts, "badNonce, retrying");
                    }
                    other => break other,
                }
            }
        }};
    }
}

pub(crate) mod account;
mod acme;
mod chains;
mod error;
mod jws;
pub mod local_ca;
pub mod name_constraints;
pub mod problem;
pub(crate) mod tls;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

pub use error::Error;

use crate::config::{CertificateConfig, Config, IssuerRef};
use crate::keys::LeafKey;
use crate::state::{Issued, StateDir};

/// Who signs a certificate.
pub enum Issuer {
    /// An ACME CA (`[acme]` or `[acme_ca.NAME]`); boxed, it holds an account, an HTTP client and a solver.
    Acme(Box<acme::AcmeIssuer>),
    /// A private CA in state_dir (`[ca.NAME]`).
    Local(local_ca::LocalIssuer),
}

/// The renewal window a CA suggests for one certificate (ACME Renewal Information, RFC 9773).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Unix times.
    pub start: u64,
    pub end: u64,
    /// When to ask again (the CA's Retry-After).
    pub retry_after: Duration,
    pub explanation_url: Option<String>,
}

/// The certificate a renewal replaces: its leaf, and — when state_dir recorded it — the ACME
/// directory and account that issued it. Only a certificate the same account issued is named
/// in the order's `replaces` (RFC 9773): CAs refuse it for another account's certificate.
#[derive(Clone, Copy)]
pub struct Predecessor<'a> {
    pub leaf: &'a CertificateDer<'static>,
    /// (directory URL, account URL).
    pub issued_by: Option<(&'a str, &'a str)>,
}

/// How a revocation went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Signed by the ACME account that issued the certificate.
    ByAccount,
    /// Signed by the certificate's own key (RFC 8555 §7.6).
    ByCertificateKey,
    /// The CA had revoked it already.
    AlreadyRevoked,
}

/// What a dry run got from an issuer.
pub struct Trial {
    /// The certificate, when the dry run could safely be issued one (a private CA, a staging CA).
    pub issued: Option<Issued>,
    /// What was done, for the report ("issued by Let's Encrypt's staging CA …").
    pub how: String,
}

impl Issuer {
    /// A dry run for `cert`: as much of an issuance as is safe, never a certificate from a
    /// production ACME CA and never a `replaces` (see [`acme::AcmeIssuer::trial`]).
    pub async fn trial(&self, cert: &CertificateConfig, key: LeafKey) -> Result<Trial, Error> {
        match self {
            Issuer::Acme(acme) => acme.trial(cert, key).await,
            Issuer::Local(ca) => Ok(Trial { issued: Some(ca.issue(cert, &key)?), how: format!("issued by {}", ca.label()) }),
        }
    }

    /// Issue a certificate for `cert` with `key`. `current` is the certificate it replaces, if
    /// any (an ACME CA that offers ARI is told when this account issued it, which exempts the
    /// order from Let's Encrypt's rate limits).
    pub async fn issue(&self, cert: &CertificateConfig, key: LeafKey, current: Option<Predecessor<'_>>) -> Result<Issued, Error> {
        match self {
            Issuer::Acme(acme) => acme.issue(cert, key, current).await,
            Issuer::Local(ca) => ca.issue(cert, &key),
        }
    }

    /// The dns-persist-01 records that let this issuer's CA validate `cert` for our account
    /// (`regcert dns-persist show`); an ACME CA only.
    pub async fn dns_persist_records(&self, cert: &CertificateConfig) -> Result<crate::challenge::dns_persist::Shown, Error> {
        match self {
            Issuer::Acme(acme) => acme.dns_persist_records(cert).await,
            Issuer::Local(ca) => Err(Error::Local(format!("dns-persist-01 is an ACME challenge; {} validates nothing", ca.label()))),
        }
    }

    /// Revoke `leaf` (issued by this issuer) with `reason` (RFC 5280 code); `issued_by` is the
    /// ACME account recorded at issuance, `key_pem` the certificate's private key (`cert`: whose). A private CA
    /// refuses: it publishes no CRL or OCSP, so no client could learn of a revocation.
    pub async fn revoke(
        &self,
        cert: &CertificateConfig,
        leaf: &CertificateDer<'_>,
        reason: u8,
        issued_by: Option<&str>,
        key_pem: Option<&str>,
    ) -> Result<Revocation, Error> {
        match self {
            Issuer::Acme(acme) => acme.revoke(leaf, reason, issued_by, key_pem).await,
            Issuer::Local(ca) => Err(Error::Local(format!(
                "{} publishes no CRL or OCSP, so a revocation would reach no client; replace the certificate and its key instead: \
                 `regcert renew --force --cert {}` (a new key unless reuse_key = true)",
                ca.label(),
                cert.name
            ))),
        }
    }

    /// Does this issuer's CA suggest renewal windows that are worth asking for?
    pub fn offers_renewal_windows(&self) -> bool {
        matches!(self, Issuer::Acme(_))
    }

    /// The window the CA suggests for renewing `leaf`; `None` when it has no opinion.
    pub async fn renewal_window(&self, leaf: &CertificateDer<'_>) -> Result<Option<RenewalWindow>, Error> {
        match self {
            Issuer::Acme(acme) => acme.renewal_window(leaf).await,
            Issuer::Local(_) => Ok(None),
        }
    }

    /// A root certificate (PEM file) that verification and Docker clients must trust beyond the
    /// system's, for issuers whose roots are not public: a private CA's root, a private ACME
    /// CA's `ca_bundle`. Asked of the issuer that issued the certificate, so it follows a fallback.
    pub fn trust_anchor(&self) -> Option<&Path> {
        match self {
            Issuer::Acme(acme) => acme.trust_anchor(),
            Issuer::Local(ca) => Some(ca.trust_anchor()),
        }
    }

    /// How the certificates this issuer issues are recorded in state_dir (`IssuedMeta.directory`):
    /// the ACME directory URL, or `ca:NAME`. A certificate recorded with another origin than its
    /// configured issuer's came from a CA the configuration no longer names.
    pub fn origin(&self) -> String {
        match self {
            Issuer::Acme(acme) => acme.directory().to_owned(),
            Issuer::Local(ca) => ca.origin(),
        }
    }

    /// The ACME profile `cert` is ordered with (its own, else the CA's `[acme] profile`); `None`
    /// for the CA's default and for a private CA.
    pub fn profile<'a>(&'a self, cert: &'a CertificateConfig) -> Option<&'a str> {
        match self {
            Issuer::Acme(acme) => acme.profile(cert),
            Issuer::Local(_) => None,
        }
    }

    /// What people read in status, logs and notifications: `ACME https://…/directory`,
    /// `ACME "zerossl" (https://…/directory)`, `private CA "internal"`.
    pub fn label(&self) -> String {
        match self {
            Issuer::Acme(acme) => acme.label(),
            Issuer::Local(ca) => ca.label(),
        }
    }
}

/// Every issuer the configuration defines, by the name certificates use (`acme`, `ca:NAME`).
/// Making them costs no I/O: an ACME account is loaded when it is first needed, a private CA
/// is read when it signs.
pub struct Issuers {
    by_name: BTreeMap<String, Issuer>,
    /// For the record of which CA issued an installed certificate (`meta.json`).
    state: StateDir,
}

impl Issuers {
    pub fn from_config(config: &Config, state: &StateDir) -> Self {
        let mut by_name = BTreeMap::new();
        for (name, acme) in config.acme_cas() {
            let issuer = Issuer::Acme(Box::new(acme::AcmeIssuer::new(name.clone(), acme, &config.http01, state)));
            by_name.insert(name.to_string(), issuer);
        }
        for name in config.ca.keys() {
            by_name.insert(IssuerRef::Ca(name.clone()).to_string(), Issuer::Local(local_ca::LocalIssuer::new(name, state)));
        }
        Self { by_name, state: state.clone() }
    }

    /// The issuer whose certificates are recorded with `origin` ([`Issuer::origin`]: an ACME
    /// directory URL or `ca:NAME`), if the configuration still names it — for any certificate
    /// (unlike [`Issuers::by_origin`], which looks only among a certificate's own issuers).
    /// Every ACME CA answers HTTP-01 with `solver` (fleet mode: through etcd, so that any
    /// node behind the load balancer can answer).
    pub fn answering_http01_with(mut self, solver: crate::challenge::Solver) -> Self {
        for issuer in self.by_name.values_mut() {
            if let Issuer::Acme(acme) = issuer {
                acme.answer_http01_with(solver.clone());
            }
        }
        self
    }

    pub fn configured_with_origin(&self, origin: &str) -> Option<&Issuer> {
        self.by_name.values().find(|i| i.origin() == origin)
    }

    /// The issuer `cert` names first (its only one, usually). Validation guarantees it exists;
    /// the error is for callers that skipped it.
    pub fn of(&self, cert: &CertificateConfig) -> Result<&Issuer, Error> {
        self.named(cert, cert.issuer.first())
    }

    /// Every issuer `cert` names, in the order they are tried: a renewal starts at the first
    /// each time and goes on to the next only when one cannot issue ([`Error::falls_through`]).
    pub fn in_turn(&self, cert: &CertificateConfig) -> Result<Vec<&Issuer>, Error> {
        cert.issuer.iter().map(|r| self.named(cert, r)).collect()
    }

    fn named(&self, cert: &CertificateConfig, name: &IssuerRef) -> Result<&Issuer, Error> {
        self.by_name.get(&name.to_string()).ok_or_else(|| {
            Error::Local(format!(
                "[[certificate]] `{}`: issuer \"{name}\" is not configured (add {})",
                cert.name,
                match name {
                    IssuerRef::Acme => "[acme]".to_owned(),
                    other => other.section(),
                }
            ))
        })
    }

    /// The issuer of `cert`'s list whose CA issued the certificate recorded as `origin` (the
    /// `directory` of its `meta.json`), else the first one: the CA a certificate from a fallback
    /// CA is judged against, asked for its renewal window and trusted for.
    pub fn by_origin(&self, cert: &CertificateConfig, origin: Option<&str>) -> Result<&Issuer, Error> {
        let listed = self.in_turn(cert)?;
        let found = origin.and_then(|o| listed.iter().find(|i| i.origin() == o));
        let first = listed.first().ok_or_else(|| Error::Local(format!("[[certificate]] `{}`: issuer = []: name an issuer", cert.name)));
        found.copied().map_or(first.copied(), Ok)
    }

    /// [`Issuers::by_origin`] for the installed leaf with fingerprint `sha256`, from what
    /// state_dir recorded when it was issued.
    pub fn that_issued(&self, cert: &CertificateConfig, sha256: Option<&str>) -> Result<&Issuer, Error> {
        let meta = sha256.and_then(|h| self.state.meta_for(&cert.name, h));
        self.by_origin(cert, meta.as_ref().map(|m| m.directory.as_str()))
    }
}
