//! Challenge solvers: how we prove control of a name to an ACME CA.
//!
//! A solver only publishes, waits until the CA can see, and withdraws key authorizations; the
//! ACME issuer's order flow (`obtain/acme.rs`) decides when. HTTP-01 is answered by the built-in
//! responder or a webroot (`[http01]`), DNS-01 by a certificate's `dns` provider, dns-persist-01
//! by a record that stays in DNS ([`dns_persist`]). A new way to
//! answer is one module here and one variant of [`Solver`].

pub mod acmesh;
pub mod dns01;
pub mod dns_persist;
pub mod http01;
pub mod webroot;

use std::sync::Arc;

use instant_acme::ChallengeType;

use crate::config::{Http01Config, Http01Mode};

/// A way to answer challenges.
#[derive(Clone)]
pub enum Solver {
    /// Built-in HTTP server, running only while some order has a token out.
    Http01(Arc<http01::Responder>),
    /// Token files for a web server that already serves port 80.
    Webroot(Arc<webroot::Webroot>),
    /// TXT records in DNS.
    Dns01(Arc<dns01::Dns01>),
    /// One persistent TXT record per name, created once (or by hand) and never removed.
    DnsPersist(Arc<dns_persist::DnsPersist>),
    /// Fleet mode: tokens in etcd, answered by every node's responder.
    Fleet(Arc<crate::cluster::tokens::Publisher>),
}

/// What [`Solver::present`] put out, to withdraw it later.
#[derive(Debug, Clone)]
pub enum Published {
    Token(String),
    Txt(dns01::TxtRecord),
    /// A dns-persist-01 record the order relies on (it is never withdrawn).
    Persist(dns_persist::PersistRecord),
}

impl Solver {
    pub fn from_config(http01: &Http01Config) -> Self {
        match http01.mode() {
            Http01Mode::Listen(addr) => Solver::Http01(Arc::new(http01::Responder::new(addr))),
            Http01Mode::Webroot(dir) => Solver::Webroot(Arc::new(webroot::Webroot::new(dir))),
        }
    }

    pub fn challenge_type(&self) -> ChallengeType {
        match self {
            Solver::Http01(_) | Solver::Webroot(_) | Solver::Fleet(_) => ChallengeType::Http01,
            Solver::Dns01(_) => ChallengeType::Dns01,
            Solver::DnsPersist(_) => ChallengeType::Unknown(dns_persist::CHALLENGE_TYPE.to_owned()),
        }
    }

    /// Publish the proof for `identifier` (`token`, key authorization).
    pub async fn present(&self, identifier: &str, token: &str, key_auth: &instant_acme::KeyAuthorization) -> Result<Published, String> {
        match self {
            Solver::Http01(r) => r.present(token, key_auth.as_str()).await.map(|()| Published::Token(token.to_owned())),
            Solver::Webroot(w) => w.present(token, key_auth.as_str()).map(|()| Published::Token(token.to_owned())),
            Solver::Fleet(f) => f.present(token, key_auth.as_str()).await.map(|()| Published::Token(token.to_owned())),
            Solver::Dns01(d) => {
                let rec = d.record_for(identifier, key_auth.dns_value());
                d.present(rec).await.map(Published::Txt)
            }
            // The record does not depend on the challenge: it is written (if at all) once the
            // whole order's records are known, in `wait_visible`.
            Solver::DnsPersist(p) => p.record_for(identifier).map(Published::Persist),
        }
    }

    /// Everything published is visible to the CA (DNS: on every authoritative server).
    pub async fn wait_visible(&self, published: &[Published]) -> Result<(), String> {
        match self {
            Solver::Dns01(d) => {
                let records: Vec<dns01::TxtRecord> =
                    published.iter().filter_map(|p| if let Published::Txt(r) = p { Some(r.clone()) } else { None }).collect();
                if records.is_empty() { Ok(()) } else { d.wait_propagated(&records).await }
            }
            Solver::DnsPersist(p) => {
                let records: Vec<dns_persist::PersistRecord> =
                    published.iter().filter_map(|p| if let Published::Persist(r) = p { Some(r.clone()) } else { None }).collect();
                p.ensure(&records).await
            }
            Solver::Http01(_) | Solver::Webroot(_) | Solver::Fleet(_) => Ok(()),
        }
    }

    /// Withdraw what [`Solver::present`] published; never fails loudly, cleanup is best effort.
    /// A dns-persist-01 record stays: that is its point.
    pub async fn cleanup(&self, published: &Published) {
        match (self, published) {
            (Solver::Http01(r), Published::Token(t)) => r.cleanup(t).await,
            (Solver::Webroot(w), Published::Token(t)) => w.cleanup(t),
            (Solver::Fleet(f), Published::Token(t)) => f.cleanup(t).await,
            (Solver::Dns01(d), Published::Txt(rec)) => d.cleanup(rec).await,
            _ => {}
        }
    }
}

/// The URL path where HTTP-01 tokens are fetched.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
