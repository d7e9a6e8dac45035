//! Why obtaining a certificate failed — typed, because the callers react differently: a
//! rejected nonce is retried at once, a rate limit waits for the CA's `Retry-After`, a name the
//! CA could not validate is the operator's to fix, and a CA that cannot be reached is a blip.
//!
//! `Display` is the operator's message: what went wrong, where, and what to do.

use std::time::SystemTime;

use super::problem::{Problem, ProblemKind};
use super::tls::{ErrorHints, NoAnswer};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The CA answered with a problem document.
    #[error("{0}")]
    Problem(Problem),
    /// No HTTP exchange with the CA happened (DNS, TCP, TLS).
    /// `section` is the CA's table (`[acme]`, `[acme_ca.NAME]`), which the hint names.
    #[error(
        "cannot reach the ACME server {ca}: {detail}; check {section} directory, the network and, for a private CA, {section} ca_bundle"
    )]
    Unreachable { ca: String, section: String, detail: String },
    /// A request got no complete answer in time (the CA's `timeout`).
    #[error(
        "the ACME server {ca} did not answer within {}; check that it is up and reachable, or raise {section} timeout",
        humantime::format_duration(*.after)
    )]
    NoAnswer { ca: String, section: String, after: std::time::Duration },
    /// The order did not become ready (or valid) in time.
    #[error("the ACME server {ca} did not finish the order in time; try again later")]
    Timeout { ca: String },
    /// What came back is not ACME.
    #[error(
        "the ACME server {ca} sent a response that is not valid ACME JSON ({detail}); is {section} directory really an ACME directory URL?"
    )]
    NotAcme { ca: String, section: String, detail: String },
    /// The CA answered, but not as RFC 8555 says it must (for example, it ignored `replaces`).
    #[error("the ACME server {ca} answered unexpectedly: {detail}")]
    Unexpected { ca: String, detail: String },
    /// The CA lacks something the request needed (ARI, say).
    #[error("ACME error talking to {ca}: ACME server does not support: {what}")]
    Unsupported { ca: String, what: &'static str },
    /// Anything else instant-acme reported.
    #[error("ACME error talking to {ca}: {detail}")]
    Acme { ca: String, detail: String },
    /// The CA tried and could not validate these identifiers.
    #[error("validation failed: {}", .failures.iter().map(|(id, p)| format!("{id}: {p}")).collect::<Vec<_>>().join("; "))]
    ValidationFailed { failures: Vec<(String, Problem)> },
    /// An authorization that will not become valid (deactivated, revoked, expired, invalid).
    #[error("authorization for {identifier} is {status}; the CA will not validate it")]
    AuthorizationUnusable { identifier: String, status: String },
    /// The CA does not offer the challenge type this certificate is configured for.
    #[error("the CA offers no {kind} challenge for {identifier}")]
    NoChallenge { identifier: String, kind: String },
    /// Publishing a challenge response failed (responder, webroot, DNS).
    #[error("{0}")]
    Challenge(String),
    /// The CA does not offer what the certificate asks for (its `profile`).
    #[error("{0}")]
    NotOffered(String),
    /// The CA's certificate is not one we would install (wrong key, names, broken chain).
    #[error("{0}")]
    Rejected(String),
    /// The private CA could not sign.
    #[error("{0}")]
    LocalCa(String),
    /// Local trouble: the key, the CSR, the account file, the configuration.
    #[error("{0}")]
    Local(String),
    /// Every CA of a certificate's `issuer` list failed, each with its error (in the order tried).
    /// The last one's error is what the renewal reacts to (its Retry-After, say).
    #[error("no CA of the certificate's `issuer` list could issue: {}", .tried.iter().map(|(ca, e)| format!("{ca}: {e}")).collect::<Vec<_>>().join("; then "))]
    EveryCa { tried: Vec<(String, Error)> },
    /// Which step of the flow failed.
    #[error("{step}: {source}")]
    During { step: &'static str, source: Box<Error> },
}

impl Error {
    /// From an instant-acme error; `ca` is the directory URL, `section` the CA's table
    /// (`[acme]`, `[acme_ca.NAME]`), `hints` what the failed response said beyond its problem
    /// document (instant-acme drops it, our HTTP client keeps it).
    pub(crate) fn from_acme(err: &instant_acme::Error, ca: &str, section: &str, hints: ErrorHints) -> Self {
        use instant_acme::Error as E;
        let (ca, section) = (ca.to_owned(), section.to_owned());
        match err {
            E::Api(p) => {
                // Only a rate limit (or an overloaded CA) says when to come back; a Retry-After
                // seen on another response must not stick to an unrelated problem.
                let mut problem = Problem::from_acme(p, None);
                if problem.kind == ProblemKind::RateLimited || matches!(p.status, Some(429 | 503)) {
                    problem.retry_after = hints.retry_after;
                }
                // The explanation of the response that carried this very problem.
                if hints.problem_type.is_some() && hints.problem_type == p.r#type {
                    problem.explanation_url = hints.explanation;
                }
                Error::Problem(problem)
            }
            E::Other(inner) if inner.downcast_ref::<NoAnswer>().is_some() => {
                Error::NoAnswer { ca, section, after: inner.downcast_ref::<NoAnswer>().map(|n| n.0).unwrap_or_default() }
            }
            E::Other(inner) if inner.downcast_ref::<hyper_util::client::legacy::Error>().is_some() => {
                Error::Unreachable { ca, section, detail: chain(inner.as_ref()) }
            }
            E::Other(inner) => Error::Unexpected { ca, detail: chain(inner.as_ref()) },
            E::Hyper(e) => Error::Unreachable { ca, section, detail: e.to_string() },
            E::Timeout(_) => Error::Timeout { ca },
            E::Json(e) => Error::NotAcme { ca, section, detail: e.to_string() },
            E::Unsupported(what) => Error::Unsupported { ca, what },
            other => Error::Acme { ca, detail: other.to_string() },
        }
    }

    /// Say which step failed.
    pub(crate) fn during(self, step: &'static str) -> Self {
        Error::During { step, source: Box::new(self) }
    }

    /// Every CA of a list failed: `tried` holds each CA's label and error, in order.
    pub(crate) fn every_ca(tried: Vec<(String, Error)>) -> Self {
        Error::EveryCa { tried }
    }

    /// The error itself, without the steps around it (of the last CA tried, when several were).
    pub fn root(&self) -> &Error {
        match self {
            Error::During { source, .. } => source.root(),
            Error::EveryCa { tried } if !tried.is_empty() => tried[tried.len() - 1].1.root(),
            other => other,
        }
    }

    /// The CA's problem, if the CA answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self.root() {
            Error::Problem(p) => Some(p),
            _ => None,
        }
    }

    pub fn is_problem(&self, kind: &ProblemKind) -> bool {
        self.problem().is_some_and(|p| &p.kind == kind)
    }

    /// Should the next CA of a certificate's `issuer` list be tried? Yes when this CA cannot
    /// issue — it did not answer (down, unreachable, timed out), answered with something unusable
    /// (5xx, not ACME, a broken chain), or refused with a problem of its own (rateLimited,
    /// rejectedIdentifier, caa, serverInternal, an account or EAB problem, a profile or challenge
    /// type it does not offer). No when the fault is ours and would be the same at every CA,
    /// where trying the next one only spends its rate limit: local trouble (key, CSR, state_dir,
    /// configuration), a challenge that could not be published (responder, webroot, DNS
    /// provider), and names the CA could not validate because what it found was wrong or
    /// missing (connection, dns, incorrectResponse, unauthorized, tls) — except where the CA
    /// itself refused the name (caa, rejectedIdentifier), which another CA may allow.
    pub fn falls_through(&self) -> bool {
        match self.root() {
            Error::Problem(_)
            | Error::Unreachable { .. }
            | Error::NoAnswer { .. }
            | Error::Timeout { .. }
            | Error::NotAcme { .. }
            | Error::Unexpected { .. }
            | Error::Unsupported { .. }
            | Error::Acme { .. }
            | Error::AuthorizationUnusable { .. }
            | Error::NoChallenge { .. }
            | Error::NotOffered(_)
            | Error::Rejected(_) => true,
            Error::ValidationFailed { failures } => {
                failures.iter().any(|(_, p)| matches!(p.kind, ProblemKind::Caa | ProblemKind::RejectedIdentifier))
            }
            Error::Challenge(_) | Error::LocalCa(_) | Error::Local(_) => false,
            Error::During { .. } | Error::EveryCa { .. } => false,
        }
    }

    /// When the CA asked us to come back (a rate limit's Retry-After).
    pub fn retry_after(&self) -> Option<SystemTime> {
        self.problem().and_then(|p| p.retry_after)
    }
}

/// The message of an error and its sources, without repeating what a source already said.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steps_wrap_the_message_and_keep_the_kind() {
        let p: instant_acme::Problem =
            serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down","status":429}"#).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let hints = ErrorHints {
            retry_after: Some(at),
            problem_type: Some("urn:ietf:params:acme:error:rateLimited".into()),
            explanation: Some("https://ca/docs/rate-limits".into()),
        };
        let e = Error::from_acme(&instant_acme::Error::Api(p), "https://ca/dir", "[acme]", hints).during("finalizing the order");
        assert!(e.to_string().starts_with("finalizing the order: ACME rateLimited: slow down — the CA's rate limit"), "{e}");
        assert!(e.is_problem(&ProblemKind::RateLimited));
        assert_eq!(e.retry_after(), Some(at));
        assert!(e.to_string().ends_with("; the CA explains it at https://ca/docs/rate-limits"), "{e}");
    }

    #[test]
    fn a_request_without_an_answer_names_the_ca_and_the_bound() {
        let e = Error::from_acme(
            &instant_acme::Error::Other(Box::new(NoAnswer(Duration::from_secs(30)))),
            "https://ca/dir",
            "[acme]",
            ErrorHints::default(),
        );
        assert_eq!(
            e.to_string(),
            "the ACME server https://ca/dir did not answer within 30s; check that it is up and reachable, or raise [acme] timeout"
        );
    }

    #[test]
    fn hints_name_the_table_of_the_ca_they_are_about() {
        let section = "[acme_ca.backup]".to_owned();
        let e = Error::NoAnswer { ca: "https://b/dir".into(), section: section.clone(), after: Duration::from_secs(5) };
        assert!(e.to_string().ends_with("or raise [acme_ca.backup] timeout"), "{e}");
        let e = Error::Unreachable { ca: "https://b/dir".into(), section: section.clone(), detail: "connection refused".into() };
        assert!(
            e.to_string().ends_with("check [acme_ca.backup] directory, the network and, for a private CA, [acme_ca.backup] ca_bundle"),
            "{e}"
        );
        let e = Error::NotAcme { ca: "https://b/dir".into(), section, detail: "expected value".into() };
        assert!(e.to_string().ends_with("is [acme_ca.backup] directory really an ACME directory URL?"), "{e}");
        assert!(!e.to_string().contains("[acme] "), "{e}");
    }

    #[test]
    fn what_a_ca_cannot_do_falls_through_and_what_is_ours_does_not() {
        let problem = |t: &str| {
            let p: instant_acme::Problem =
                serde_json::from_str(&format!(r#"{{"type":"urn:ietf:params:acme:error:{t}","status":400}}"#)).unwrap();
            Problem::from_acme(&p, None)
        };
        let ca = || "https://ca/dir".to_owned();
        for e in [
            Error::Problem(problem("rateLimited")),
            Error::Problem(problem("rejectedIdentifier")),
            Error::Problem(problem("serverInternal")),
            Error::Unreachable { ca: ca(), section: "[acme]".into(), detail: "connection refused".into() },
            Error::NoAnswer { ca: ca(), section: "[acme]".into(), after: Duration::from_secs(30) },
            Error::Unexpected { ca: ca(), detail: "HTTP 503".into() },
            Error::NotOffered("profile".into()),
            Error::Rejected("broken chain".into()).during("downloading the certificate"),
            Error::ValidationFailed { failures: vec![("a.test".into(), problem("caa"))] },
        ] {
            assert!(e.falls_through(), "{e:?}");
        }
        for e in [
            Error::Local("cannot generate a key".into()),
            Error::Challenge("the responder cannot listen".into()).during("publishing"),
            Error::ValidationFailed { failures: vec![("a.test".into(), problem("connection")), ("b.test".into(), problem("dns"))] },
            Error::ValidationFailed { failures: vec![("a.test".into(), problem("incorrectResponse"))] },
        ] {
            assert!(!e.falls_through(), "{e:?}");
        }
    }

    #[test]
    fn unsupported_reads_as_before() {
        let e = Error::from_acme(
            &instant_acme::Error::Unsupported("ACME renewal information (ARI)"),
            "https://ca/dir",
            "[acme]",
            ErrorHints::default(),
        );
        assert_eq!(e.to_string(), "ACME error talking to https://ca/dir: ACME server does not support: ACME renewal information (ARI)");
    }
}
