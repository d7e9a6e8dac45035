//! Challenge solvers: how we prove control of a name to an ACME CA.
//!
//! A solver only publishes and withdraws key authorizations; the order flow in
//! [`crate::obtain::acme`] decides when. New solvers (DNS-01) are new variants here, nothing else
//! changes.

pub mod http01;
pub mod webroot;

use std::sync::Arc;

use instant_acme::ChallengeType;

use crate::config::{Http01Config, Http01Mode};

/// A way to answer challenges, shared by every order of one run.
#[derive(Clone)]
pub enum Solver {
    /// Built-in HTTP server, running only while some order has a token out.
    Http01(Arc<http01::Responder>),
    /// Token files for a web server that already serves port 80.
    Webroot(Arc<webroot::Webroot>),
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
            Solver::Http01(_) | Solver::Webroot(_) => ChallengeType::Http01,
        }
    }

    /// Publish `key_authorization` for `token`; the CA may look for it right after this returns.
    pub async fn present(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        match self {
            Solver::Http01(r) => r.present(token, key_authorization).await,
            Solver::Webroot(w) => w.present(token, key_authorization),
        }
    }

    /// Withdraw a token published by [`Solver::present`]; never fails loudly, cleanup is best effort.
    pub async fn cleanup(&self, token: &str) {
        match self {
            Solver::Http01(r) => r.cleanup(token).await,
            Solver::Webroot(w) => w.cleanup(token),
        }
    }
}

/// The URL path where HTTP-01 tokens are fetched.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
