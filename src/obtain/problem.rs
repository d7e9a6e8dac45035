//! ACME problem documents (RFC 8555 §6.7) as regcert reacts to them.
//!
//! instant-acme hands over the problem as the CA wrote it; here its `type` becomes a
//! [`ProblemKind`] that code can match on (a rate limit is not a network blip), and the text an
//! operator reads gets a hint for the common kinds.

use std::fmt;
use std::time::SystemTime;

use instant_acme::Identifier;

/// The `type` of a problem, short form (`urn:ietf:params:acme:error:` dropped). The kinds
/// regcert branches on, or gives a hint for, are named; any other is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    BadNonce,
    RateLimited,
    Malformed,
    Unauthorized,
    AlreadyReplaced,
    Conflict,
    Connection,
    Dns,
    IncorrectResponse,
    RejectedIdentifier,
    ExternalAccountRequired,
    AccountDoesNotExist,
    UnauthorizedAccount,
    UserActionRequired,
    Caa,
    /// Another type, as the CA wrote it (without the ACME URN prefix).
    Other(String),
}

const URN: &str = "urn:ietf:params:acme:error:";

impl ProblemKind {
    /// The kind of a problem `type` (a missing type reads as "error").
    pub fn from_type(t: Option<&str>) -> Self {
        let t = t.unwrap_or("error");
        match t.strip_prefix(URN).unwrap_or(t) {
            "badNonce" => Self::BadNonce,
            "rateLimited" => Self::RateLimited,
            "malformed" => Self::Malformed,
            "unauthorized" => Self::Unauthorized,
            "alreadyReplaced" => Self::AlreadyReplaced,
            "conflict" => Self::Conflict,
            "connection" => Self::Connection,
            "dns" => Self::Dns,
            "incorrectResponse" => Self::IncorrectResponse,
            "rejectedIdentifier" => Self::RejectedIdentifier,
            "externalAccountRequired" => Self::ExternalAccountRequired,
            "accountDoesNotExist" => Self::AccountDoesNotExist,
            "unauthorizedAccount" => Self::UnauthorizedAccount,
            "userActionRequired" => Self::UserActionRequired,
            "caa" => Self::Caa,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The short name, as in "ACME rateLimited: …".
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadNonce => "badNonce",
            Self::RateLimited => "rateLimited",
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::AlreadyReplaced => "alreadyReplaced",
            Self::Conflict => "conflict",
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::IncorrectResponse => "incorrectResponse",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::UnauthorizedAccount => "unauthorizedAccount",
            Self::UserActionRequired => "userActionRequired",
            Self::Caa => "caa",
            Self::Other(t) => t,
        }
    }

    /// What the operator can do about it, for the common kinds.
    fn hint(&self) -> Option<&'static str> {
        Some(match self {
            Self::RateLimited => "the CA's rate limit was hit; wait until it resets (use letsencrypt-staging for tests)",
            Self::RejectedIdentifier => "the CA will not issue for this name; check the domains of this certificate",
            Self::Unauthorized | Self::IncorrectResponse | Self::Connection | Self::Dns => {
                "the CA could not validate the name: with HTTP-01, check that it resolves to this host and that port 80 reaches regcert (or the webroot's server); with DNS-01, that the DNS the CA asks serves the TXT record at _acme-challenge.NAME (or where its CNAME leads)"
            }
            // A problem does not know which CA sent it, and a field for that would make every
            // obtain::Error too large to return (clippy::result_large_err): name both tables.
            Self::ExternalAccountRequired => {
                "this CA requires external account binding: set eab = { kid = …, hmac_key = … } in its table ([acme], or [acme_ca.NAME] for a named CA)"
            }
            Self::UnauthorizedAccount | Self::AccountDoesNotExist => "the stored ACME account is not valid on this CA anymore",
            Self::UserActionRequired => "the CA requires you to accept updated terms of service",
            Self::Caa => "a CAA DNS record forbids this CA from issuing for the name",
            _ => return None,
        })
    }
}

/// A problem document from the CA, with the `Retry-After` its response carried (rate limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: Option<String>,
    pub status: Option<u16>,
    pub subproblems: Vec<Subproblem>,
    /// When the CA said to try again (the response's Retry-After), if it did.
    pub retry_after: Option<SystemTime>,
    /// Where the CA explains this problem (its `instance`, or a `Link: rel="help"`), if it said.
    pub explanation_url: Option<String>,
}

/// The part of a problem that concerns one identifier (RFC 8555 §6.7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subproblem {
    pub identifier: Option<String>,
    pub kind: ProblemKind,
    pub detail: Option<String>,
}

impl Problem {
    pub fn from_acme(p: &instant_acme::Problem, retry_after: Option<SystemTime>) -> Self {
        Problem {
            kind: ProblemKind::from_type(p.r#type.as_deref()),
            detail: p.detail.clone(),
            status: p.status,
            subproblems: p
                .subproblems
                .iter()
                .map(|s| Subproblem {
                    identifier: s.identifier.as_ref().map(identifier_name),
                    kind: ProblemKind::from_type(s.r#type.as_deref()),
                    detail: s.detail.clone(),
                })
                .collect(),
            retry_after,
            explanation_url: None,
        }
    }
}

/// "ACME rateLimited: too many certificates … ; a.example rejectedIdentifier: … — hint".
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ACME {}: {}", self.kind.as_str(), self.detail.as_deref().unwrap_or("(no detail)"))?;
        for sub in &self.subproblems {
            let id = sub.identifier.as_deref().unwrap_or("");
            write!(f, "; {id} {}: {}", sub.kind.as_str(), sub.detail.as_deref().unwrap_or(""))?;
        }
        if let Some(hint) = self.kind.hint() {
            write!(f, " — {hint}")?;
        }
        if let Some(url) = &self.explanation_url {
            write!(f, "; the CA explains it at {url}")?;
        }
        Ok(())
    }
}

/// An identifier as people write it.
pub fn identifier_name(id: &Identifier) -> String {
    match id {
        Identifier::Dns(d) => d.clone(),
        Identifier::Ip(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Problem {
        Problem::from_acme(&serde_json::from_str(json).unwrap(), None)
    }

    #[test]
    fn problem_names_type_detail_and_hint() {
        let p = parse(r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"blocked name","status":400}"#);
        assert_eq!(p.kind, ProblemKind::RejectedIdentifier);
        let s = p.to_string();
        assert!(s.starts_with("ACME rejectedIdentifier: blocked name"), "{s}");
        assert!(s.contains("will not issue"), "{s}");
    }

    #[test]
    fn the_eab_hint_names_the_table_of_a_named_ca_too() {
        let s = parse(r#"{"type":"urn:ietf:params:acme:error:externalAccountRequired","status":403}"#).to_string();
        assert!(s.ends_with("set eab = { kid = …, hmac_key = … } in its table ([acme], or [acme_ca.NAME] for a named CA)"), "{s}");
    }

    #[test]
    fn kinds_are_typed_and_unknown_ones_kept() {
        let p = parse(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429,
                "subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"forbidden","identifier":{"type":"dns","value":"a.example"}}]}"#,
        );
        assert_eq!(p.kind, ProblemKind::RateLimited);
        assert_eq!(p.subproblems[0].kind, ProblemKind::Caa);
        assert_eq!(p.subproblems[0].identifier.as_deref(), Some("a.example"));
        assert!(p.to_string().contains("; a.example caa: forbidden"), "{p}");
        assert_eq!(ProblemKind::from_type(Some("urn:example:custom")), ProblemKind::Other("urn:example:custom".into()));
        assert_eq!(ProblemKind::from_type(None).as_str(), "error");
    }
}
