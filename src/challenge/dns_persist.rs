//! dns-persist-01 (draft-ietf-acme-dns-persist; CA/B Forum ballot SC-088): one TXT record at
//! `_validation-persist.<domain>` names the CA that may issue for the domain (its
//! issuer-domain-name) and the ACME account it may issue to (`accounturi=`); `policy=wildcard`
//! extends it to wildcards, `persistUntil=` bounds it. The record stays in DNS: a renewal
//! changes nothing there.
//!
//! With a `dns` provider, a missing record is created once, through the same "create a TXT
//! record" operation DNS-01 uses, and never removed. Without one regcert does not touch DNS:
//! the CA looks, and a failed validation prints the record to create.

use std::time::SystemTime;

use serde::Serialize;

use super::dns01::{Dns01, DnsConfig, TxtRecord};

/// The challenge type, as the CA names it (instant-acme knows it only as an unknown type).
pub const CHALLENGE_TYPE: &str = "dns-persist-01";

/// The TTL printed in zone-file lines (the record is meant to stay, so an hour is plenty).
const TTL: u32 = 3600;

/// The persistent record one name needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersistRecord {
    /// `_validation-persist.<name>.` (absolute).
    pub fqdn: String,
    /// The CA's issuer-domain-name.
    pub issuer: String,
    pub account_uri: String,
    /// Some identifier at this name is a wildcard: the record must say `policy=wildcard`.
    pub wildcard: bool,
}

impl PersistRecord {
    /// The TXT value: `<issuer-domain-name>; accounturi=<URI>[; policy=wildcard]`.
    pub fn value(&self) -> String {
        let policy = if self.wildcard { "; policy=wildcard" } else { "" };
        format!("{}; accounturi={}{policy}", self.issuer, self.account_uri)
    }

    /// The record as a zone-file line (also what nsupdate's `update add` takes).
    pub fn zone_line(&self) -> String {
        let quoted = self.value().replace('\\', "\\\\").replace('"', "\\\"");
        format!("{} {TTL} IN TXT \"{quoted}\"", self.fqdn)
    }

    /// Does the TXT value `txt` authorize this account for this name, as the CA reads it
    /// (RFC 8659 issue-value syntax: tags case-insensitive, `policy` checked only for
    /// wildcards, an expired `persistUntil` authorizes nothing)? `issuers` are every
    /// issuer-domain-name the CA accepts. A malformed record authorizes nothing.
    pub fn authorized_by(&self, txt: &str, issuers: &[String], now: u64) -> bool {
        let wsp: &[char] = &[' ', '\t'];
        let mut parts = txt.split(';');
        let issuer = parts.next().unwrap_or_default().trim_matches(wsp);
        if !issuers.iter().any(|i| i.eq_ignore_ascii_case(issuer)) {
            return false;
        }
        let (mut account, mut policy, mut until) = (None, None, None);
        for param in parts {
            let Some((tag, value)) = param.trim_matches(wsp).split_once('=') else { return false };
            let value = value.trim_matches(wsp);
            match tag.trim_matches(wsp).to_ascii_lowercase().as_str() {
                "accounturi" => account = Some(value),
                "policy" => policy = Some(value),
                "persistuntil" => match value.parse::<u64>() {
                    Ok(t) => until = Some(t),
                    Err(_) => return false,
                },
                _ => {}
            }
        }
        account == Some(self.account_uri.as_str())
            && (!self.wildcard || policy.is_some_and(|p| p.eq_ignore_ascii_case("wildcard")))
            && until.is_none_or(|t| now <= t)
    }
}

/// The records `identifiers` need (`*.name` for wildcards): one per name, with
/// `policy=wildcard` where the name is also ordered as a wildcard (one record serves both).
pub fn records<S: AsRef<str>>(identifiers: &[S], issuer: &str, account_uri: &str) -> Vec<PersistRecord> {
    let each: Vec<PersistRecord> = identifiers
        .iter()
        .map(|id| {
            let id = id.as_ref();
            let base = id.strip_prefix("*.").unwrap_or(id).trim_end_matches('.');
            let fqdn = format!("_validation-persist.{base}.");
            PersistRecord { fqdn, issuer: issuer.to_owned(), account_uri: account_uri.to_owned(), wildcard: id.starts_with("*.") }
        })
        .collect();
    merge(&each)
}

/// A wildcard and its base name share one record: one per name, `policy=wildcard` if either
/// asked for it.
fn merge(published: &[PersistRecord]) -> Vec<PersistRecord> {
    let mut out: Vec<PersistRecord> = Vec::new();
    for r in published {
        match out.iter_mut().find(|o| o.fqdn == r.fqdn) {
            Some(o) => o.wildcard |= r.wildcard,
            None => out.push(r.clone()),
        }
    }
    out
}

/// Zone-file lines for `records`, one a line.
pub fn zone_lines(records: &[PersistRecord]) -> String {
    records.iter().map(|r| format!("  {}\n", r.zone_line())).collect()
}

/// Problems of `dns` with dns-persist-01 (no I/O): DNS-01's, and no `delegate` (the CA reads
/// `_validation-persist.<name>` itself).
pub fn validate(at: &str, dns: &DnsConfig, problems: &mut Vec<String>) {
    super::dns01::validate(at, dns, problems);
    if dns.delegate.is_some() {
        problems.push(format!(
            "{at}: dns.delegate is for DNS-01's _acme-challenge records; challenge = \"dns-persist-01\" writes _validation-persist.NAME itself: remove `delegate`"
        ));
    }
}

/// What `regcert dns-persist show` prints for one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub records: Vec<PersistRecord>,
    /// The CA's issuer-domain-name the records name.
    pub issuer: String,
    pub account_uri: String,
    /// The account did not exist before this command (it does now, in state_dir).
    pub account_created: bool,
}

/// Answers dns-persist-01 for one certificate: the account and the CA's issuer-domain-names
/// are fixed per order; the records are checked and, with a provider, created.
pub struct DnsPersist {
    cert: String,
    dns: Option<Dns01>,
    account_uri: String,
    /// The issuer-domain-names the CA's challenge lists; records name the first.
    issuers: Vec<String>,
}

impl DnsPersist {
    pub fn new(cert: &str, dns: Option<DnsConfig>, account_uri: &str, issuers: Vec<String>) -> Self {
        Self { cert: cert.to_owned(), dns: dns.map(|d| Dns01::new(cert, d)), account_uri: account_uri.to_owned(), issuers }
    }

    /// The record for one identifier of the order.
    pub fn record_for(&self, identifier: &str) -> Result<PersistRecord, String> {
        let issuer = self.issuers.first().ok_or_else(|| {
            format!("the CA's {CHALLENGE_TYPE} challenge for {identifier} names no issuer-domain-names, so no record can name the CA")
        })?;
        Ok(records(&[identifier], issuer, &self.account_uri).remove(0))
    }

    /// Make sure the records are in DNS. With a provider: a record every authoritative server
    /// already answers (ours, or another that authorizes this account) is left alone; a missing
    /// one is created once, waited for, and never removed. Without a provider there is
    /// nothing to do here: the CA looks.
    pub async fn ensure(&self, published: &[PersistRecord]) -> Result<(), String> {
        let wanted = merge(published);
        let Some(dns) = &self.dns else {
            tracing::info!(cert = %self.cert, records = wanted.len(), "dns-persist-01 without a dns provider: the CA checks the records");
            return Ok(());
        };
        let now = crate::certinfo::unix(SystemTime::now());
        let mut created = Vec::new();
        for rec in &wanted {
            let answers = dns.txt_everywhere(&rec.fqdn).await?;
            let lacking: Vec<String> = answers
                .iter()
                .filter(|(_, a)| !a.as_ref().is_ok_and(|values| values.iter().any(|v| rec.authorized_by(v, &self.issuers, now))))
                .map(|(server, _)| server.to_string())
                .collect();
            if lacking.is_empty() {
                tracing::info!(cert = %self.cert, fqdn = %rec.fqdn, "the dns-persist-01 record is in place; DNS left as it is");
                continue;
            }
            tracing::info!(cert = %self.cert, fqdn = %rec.fqdn, value = %rec.value(), lacking = ?lacking, "creating the dns-persist-01 record (once: it stays)");
            let txt = TxtRecord { fqdn: rec.fqdn.clone(), value: rec.value() };
            created.push(dns.present(txt).await.map_err(|e| format!("creating the dns-persist-01 record {}: {e}", rec.zone_line()))?);
        }
        if !created.is_empty() {
            dns.wait_propagated(&created).await?;
        }
        Ok(())
    }

    /// The message for an order the CA did not validate (`why`): the records that would
    /// authorize this account, and what to do.
    pub fn not_authorized(&self, published: &[PersistRecord], why: &str) -> String {
        let records = merge(published);
        let todo = if self.dns.is_some() {
            "check that the CA's DNS resolvers see what the dns provider wrote"
        } else {
            "create it in DNS (once: it stays, renewals need no DNS change; `regcert dns-persist show` prints it too) and run again, or set dns = { provider = … } to have regcert create it"
        };
        format!(
            "{CHALLENGE_TYPE}: the CA found no TXT record that authorizes this account ({why}). The record:\n{}{todo}",
            zone_lines(&records)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "https://ca.example/acct/42";

    fn issuers() -> Vec<String> {
        vec!["ca.example".to_owned(), "ca-alias.example".to_owned()]
    }

    #[test]
    fn one_record_per_name_and_a_wildcard_shares_its_base_names_record() {
        let recs = records(&["registry.example.com", "*.registry.example.com", "other.example.com."], "ca.example", ACCOUNT);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].fqdn, "_validation-persist.registry.example.com.");
        assert_eq!(recs[0].value(), "ca.example; accounturi=https://ca.example/acct/42; policy=wildcard");
        assert_eq!(
            recs[1].zone_line(),
            "_validation-persist.other.example.com. 3600 IN TXT \"ca.example; accounturi=https://ca.example/acct/42\""
        );
    }

    #[test]
    fn a_record_authorizes_as_the_ca_reads_it() {
        let plain = &records(&["r.example"], "ca.example", ACCOUNT)[0];
        let wild = &records(&["*.r.example"], "ca.example", ACCOUNT)[0];
        let now = 1_000;
        let yes = |r: &PersistRecord, txt: &str| r.authorized_by(txt, &issuers(), now);
        assert!(yes(plain, &plain.value()));
        assert!(yes(wild, &wild.value()));
        assert!(yes(plain, &wild.value()), "policy=wildcard also covers the base name");
        assert!(!yes(wild, &plain.value()), "a wildcard needs policy=wildcard");
        assert!(yes(wild, " CA-ALIAS.example ;AccountURI=https://ca.example/acct/42 ; Policy=WILDCARD"));
        assert!(!yes(plain, "other-ca.example; accounturi=https://ca.example/acct/42"));
        assert!(!yes(plain, "ca.example; accounturi=https://ca.example/acct/43"));
        assert!(!yes(plain, "ca.example"), "accounturi is mandatory");
        assert!(!yes(plain, "ca.example; accounturi=https://ca.example/acct/42;"), "malformed: trailing ;");
        assert!(yes(plain, "ca.example; accounturi=https://ca.example/acct/42; persistUntil=1000"));
        assert!(!yes(plain, "ca.example; accounturi=https://ca.example/acct/42; persistUntil=999"), "expired");
        assert!(!yes(plain, "ca.example; accounturi=https://ca.example/acct/42; persistUntil=soon"));
    }

    #[test]
    fn the_failure_message_prints_every_record_to_create() {
        let p = DnsPersist::new("r", None, ACCOUNT, issuers());
        let published = vec![p.record_for("*.r.example").unwrap(), p.record_for("r.example").unwrap()];
        let msg = p.not_authorized(&published, "validation failed");
        assert!(
            msg.contains(
                "\n  _validation-persist.r.example. 3600 IN TXT \"ca.example; accounturi=https://ca.example/acct/42; policy=wildcard\"\n"
            ),
            "{msg}"
        );
        assert_eq!(msg.matches("IN TXT").count(), 1, "{msg}");
        assert!(msg.contains("dns = { provider"), "{msg}");
        assert!(DnsPersist::new("r", None, ACCOUNT, vec![]).record_for("r.example").is_err());
    }
}
