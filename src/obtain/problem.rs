//! Turning instant-acme errors into messages an operator can act on.

use instant_acme::{Error, Identifier, Problem};

/// Did the CA reject the request's anti-replay nonce (a transient fault to retry)?
pub fn is_bad_nonce(p: &Problem) -> bool {
    p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce")
}

/// Describe an ACME error; `ca` is the directory URL, named when the CA cannot be reached.
pub fn describe(err: &Error, ca: &str) -> String {
    match err {
        Error::Api(p) => describe_problem(p),
        Error::Other(inner) if inner.downcast_ref::<hyper_util::client::legacy::Error>().is_some() => format!(
            "cannot reach the ACME server {ca}: {}; check [acme] directory, the network and, for a private CA, [acme] ca_bundle",
            chain(inner.as_ref())
        ),
        Error::Other(inner) => format!("the ACME server {ca} answered unexpectedly: {}", chain(inner.as_ref())),
        Error::Hyper(e) => format!("cannot reach the ACME server {ca}: {e}"),
        Error::Timeout(_) => format!("the ACME server {ca} did not finish the order in time; try again later"),
        Error::Json(e) => format!(
            "the ACME server {ca} sent a response that is not valid ACME JSON ({e}); is [acme] directory really an ACME directory URL?"
        ),
        other => format!("ACME error talking to {ca}: {other}"),
    }
}

/// "rateLimited: too many certificates … (for a.example: …)" plus a hint for the common types.
pub fn describe_problem(p: &Problem) -> String {
    let kind = short_type(p.r#type.as_deref());
    let mut out = format!("ACME {kind}: {}", p.detail.as_deref().unwrap_or("(no detail)"));
    for sub in &p.subproblems {
        let id = identifier_name(sub.identifier.as_ref());
        out.push_str(&format!("; {id} {}: {}", short_type(sub.r#type.as_deref()), sub.detail.as_deref().unwrap_or("")));
    }
    if let Some(hint) = hint(kind) {
        out.push_str(" — ");
        out.push_str(hint);
    }
    out
}

fn identifier_name(id: Option<&Identifier>) -> String {
    match id {
        Some(Identifier::Dns(d)) => d.clone(),
        Some(Identifier::Ip(ip)) => ip.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn short_type(t: Option<&str>) -> &str {
    let t = t.unwrap_or("error");
    t.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(t)
}

fn hint(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "rateLimited" => "the CA's rate limit was hit; wait until it resets (use letsencrypt-staging for tests)",
        "rejectedIdentifier" => "the CA will not issue for this name; check the domains of this certificate",
        "unauthorized" | "incorrectResponse" | "connection" | "dns" => {
            "the CA could not validate the name: check that it resolves to this host and that port 80 reaches regcert (or the webroot's server)"
        }
        "externalAccountRequired" => "this CA requires external account binding: set [acme] eab = { kid = …, hmac_key = … }",
        "unauthorizedAccount" | "accountDoesNotExist" => "the stored ACME account is not valid on this CA anymore",
        "userActionRequired" => "the CA requires you to accept updated terms of service",
        "caa" => "a CAA DNS record forbids this CA from issuing for the name",
        _ => return None,
    })
}

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

    #[test]
    fn problem_names_type_detail_and_hint() {
        let p: Problem =
            serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"blocked name","status":400}"#)
                .unwrap();
        let s = describe_problem(&p);
        assert!(s.starts_with("ACME rejectedIdentifier: blocked name"), "{s}");
        assert!(s.contains("will not issue"), "{s}");
    }
}
