//! When a certificate is due: the renewal policy, kept apart from the mechanics of renewing.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::certinfo::{LeafInfo, unix};
use crate::config::CertificateConfig;
use crate::install::Installed;

/// Why a certificate must be renewed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Forced,
    NothingInstalled,
    Unreadable(String),
    NamesNotCovered(Vec<String>),
    KeyTypeChanged {
        installed: String,
        wanted: String,
    },
    KeyMismatch,
    IncompleteChain,
    Expiring {
        days_left: u64,
    },
    /// The CA's renewal window (ARI) says now.
    RenewalWindow {
        start: u64,
        end: u64,
    },
    /// The installed certificate came from another CA than the configured issuer (staging →
    /// production, a private CA → ACME, …).
    IssuerChanged {
        from: String,
        to: String,
    },
    /// Another ACME profile is configured than the installed certificate was issued under.
    ProfileChanged {
        from: Option<String>,
        to: String,
    },
    /// A run died during an install or before its reload and verification were over (its
    /// journal is still there): installed and delivered again.
    Interrupted,
    /// The installed certificate waits for its reload (held for `[certificate.reload] window`),
    /// and the time has come: the window is open, or what the registry serves would not last.
    ReloadPending {
        installed_at: u64,
        why: String,
    },
    /// Fleet mode: the leader published a new certificate, and it is this node's turn.
    Fleet {
        serial: String,
        by: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Forced => write!(f, "--force"),
            Reason::NothingInstalled => write!(f, "nothing installed yet"),
            Reason::Unreadable(e) => write!(f, "installed certificate unusable: {e}"),
            Reason::NamesNotCovered(n) => write!(f, "installed certificate does not cover {}", n.join(", ")),
            Reason::KeyTypeChanged { installed, wanted } => write!(f, "key type {installed} installed, {wanted} configured"),
            Reason::KeyMismatch => write!(f, "installed key does not match the installed certificate"),
            Reason::IncompleteChain => write!(f, "installed fullchain has no intermediate (incomplete chain)"),
            Reason::Expiring { days_left } => write!(f, "{days_left} days left"),
            Reason::IssuerChanged { from, to } => write!(f, "installed certificate was issued by {from}, the configured issuer is {to}"),
            Reason::ProfileChanged { from, to } => match from {
                Some(from) => write!(f, "installed certificate has the ACME profile {from}, {to} is configured"),
                None => write!(f, "installed certificate has the CA's default profile, {to} is configured"),
            },
            Reason::Interrupted => write!(f, "an earlier install was interrupted before it was reloaded and verified"),
            Reason::ReloadPending { installed_at, why } => {
                write!(f, "the reload held since {} is due: {why}", crate::certinfo::fmt_time(*installed_at))
            }
            Reason::Fleet { serial, by } => write!(f, "the fleet's certificate {serial}, ordered by node {by}"),
            Reason::RenewalWindow { start, end } => {
                write!(f, "inside the CA's renewal window {} – {}", crate::certinfo::fmt_time(*start), crate::certinfo::fmt_time(*end))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Due(Reason),
    /// Valid and installed; expires at `not_after`, due at `due_at` (Unix times).
    NotDue {
        due_at: u64,
        not_after: u64,
    },
}

/// When `leaf` becomes due: `renew_before` ahead of expiry, or a third of its lifetime.
pub fn due_at(leaf: &LeafInfo, renew_before: Option<Duration>) -> u64 {
    let margin = renew_before.unwrap_or(leaf.lifetime() / 3);
    leaf.not_after.saturating_sub(margin.as_secs())
}

/// When a certificate that is still not renewed is worth an alert: halfway from its renewal
/// point to its expiry — a third of the lifetime before expiry is due, so a sixth is left — or
/// `alert_before` ahead of expiry when that is configured. Relative by default, because an
/// absolute margin cannot fit lifetimes from 90 seconds to a year: "14 days left" is true of a
/// six-day certificate the moment it is issued. Never before the renewal point: a certificate
/// that is not due yet is not late.
pub fn alert_at(leaf: &LeafInfo, renew_before: Option<Duration>, alert_before: Option<Duration>) -> u64 {
    let due = due_at(leaf, renew_before);
    let at = match alert_before {
        Some(margin) => leaf.not_after.saturating_sub(margin.as_secs()),
        None => due + leaf.not_after.saturating_sub(due) / 2,
    };
    at.max(due)
}

/// Where the installed certificate came from (`IssuedMeta.directory`, when state_dir's record of
/// the last issuance is that certificate) and where it should come from now (`Issuer::origin`).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub installed: &'a str,
    pub configured: &'a str,
    /// The ACME profile it was issued under, and the one configured (`None`: the CA's choice,
    /// which never makes a certificate due).
    pub installed_profile: Option<&'a str>,
    pub configured_profile: Option<&'a str>,
}

/// Decide for one certificate from what is installed (and, when known, where it came from).
pub fn decide(
    cert: &CertificateConfig,
    installed: Result<Option<&Installed>, String>,
    origin: Option<Origin<'_>>,
    now: SystemTime,
    force: bool,
) -> Decision {
    if force {
        return Decision::Due(Reason::Forced);
    }
    let inst = match installed {
        Err(e) => return Decision::Due(Reason::Unreadable(e)),
        Ok(None) => return Decision::Due(Reason::NothingInstalled),
        Ok(Some(i)) => i,
    };
    let missing: Vec<String> = cert
        .domains
        .iter()
        .filter(|d| !inst.leaf.covers(std::slice::from_ref(d)))
        .cloned()
        .chain(cert.ips.iter().filter(|ip| !inst.leaf.ips.contains(ip)).map(|ip| ip.to_string()))
        // A client certificate is named by its subject: a new client_name needs a new one.
        .chain(cert.client_name.iter().map(|n| format!("CN={n}")).filter(|cn| inst.leaf.subject != *cn))
        .collect();
    if !missing.is_empty() {
        return Decision::Due(Reason::NamesNotCovered(missing));
    }
    if let Some(o) = origin.filter(|o| o.installed != o.configured) {
        return Decision::Due(Reason::IssuerChanged { from: o.installed.to_owned(), to: o.configured.to_owned() });
    }
    if let Some(o) = origin
        && let Some(wanted) = o.configured_profile.filter(|p| o.installed_profile != Some(*p))
    {
        return Decision::Due(Reason::ProfileChanged { from: o.installed_profile.map(str::to_owned), to: wanted.to_owned() });
    }
    if inst.leaf.key_type != Some(cert.key) {
        let installed = inst.leaf.key_type.map(|k| k.to_string()).unwrap_or_else(|| "unknown".into());
        return Decision::Due(Reason::KeyTypeChanged { installed, wanted: cert.key.to_string() });
    }
    if !inst.key_matches {
        return Decision::Due(Reason::KeyMismatch);
    }
    if inst.intermediates == 0 {
        return Decision::Due(Reason::IncompleteChain);
    }
    let due = due_at(&inst.leaf, cert.renew_before);
    if unix(now) >= due {
        return Decision::Due(Reason::Expiring { days_left: inst.leaf.remaining(now).as_secs() / 86_400 });
    }
    Decision::NotDue { due_at: due, not_after: inst.leaf.not_after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InstallConfig;
    use crate::keys::KeyType;

    const DAY: u64 = 86_400;

    fn cert(renew_before: Option<Duration>) -> CertificateConfig {
        CertificateConfig {
            name: "r".into(),
            domains: vec!["a.example".into()],
            key: KeyType::EcdsaP256,
            renew_before,
            reuse_key: false,
            install: InstallConfig {
                dir: "/tmp".into(),
                fullchain: "c".into(),
                key: "k".into(),
                mode: "0644".parse().unwrap(),
                key_mode: "0600".parse().unwrap(),
                owner: None,
                group: None,
            },
            reload: None,
            verify: None,
            issuer: Default::default(),
            usage: Default::default(),
            client_name: None,
            ips: Vec::new(),
            validity: None,
            profile: None,
            preferred_chain: None,
            trust: None,
            fleet: true,
            challenge: None,
            dns: None,
        }
    }

    fn installed(not_before: u64, days: u64) -> Installed {
        Installed {
            leaf: LeafInfo {
                subject: String::new(),
                issuer: String::new(),
                dns_names: vec!["a.example".into()],
                ips: vec![],
                serial: String::new(),
                not_before,
                not_after: not_before + days * DAY,
                sha256: String::new(),
                spki: vec![],
                key_type: Some(KeyType::EcdsaP256),
            },
            leaf_der: rustls_pki_types::CertificateDer::from(Vec::new()),
            intermediates: 1,
            key_matches: true,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Let's Encrypt's IP certificates live 160 hours (the `shortlived` profile): renewed when a
    /// third, 53 h 20 min, is left; an address the installed leaf lacks makes it due at once.
    #[test]
    fn a_160_hour_ip_certificate_is_renewed_when_53_hours_are_left() {
        let mut i = installed(1_000 * DAY, 0);
        i.leaf.not_after = i.leaf.not_before + 160 * 3_600;
        i.leaf.ips = vec!["192.0.2.1".parse().unwrap()];
        let mut c = cert(None);
        c.domains.clear();
        c.ips = i.leaf.ips.clone();
        assert_eq!(i.leaf.not_after - due_at(&i.leaf, None), 53 * 3_600 + 20 * 60);
        let not_due = decide(&c, Ok(Some(&i)), None, at(due_at(&i.leaf, None) - 1), false);
        assert!(matches!(not_due, Decision::NotDue { .. }), "{not_due:?}");
        c.ips.push("2001:db8::1".parse().unwrap());
        let due = decide(&c, Ok(Some(&i)), None, at(i.leaf.not_before), false);
        assert_eq!(due, Decision::Due(Reason::NamesNotCovered(vec!["2001:db8::1".into()])));
    }

    #[test]
    fn default_is_a_third_of_the_lifetime() {
        let i = installed(1_000 * DAY, 90);
        assert_eq!(
            decide(&cert(None), Ok(Some(&i)), None, at(1_000 * DAY + 59 * DAY), false),
            Decision::NotDue { due_at: 1_060 * DAY, not_after: 1_090 * DAY }
        );
        assert!(matches!(
            decide(&cert(None), Ok(Some(&i)), None, at(1_060 * DAY), false),
            Decision::Due(Reason::Expiring { days_left: 30 })
        ));
        // Six-day certificates renew after four days, not never.
        let short = installed(1_000 * DAY, 6);
        assert_eq!(
            decide(&cert(None), Ok(Some(&short)), None, at(1_000 * DAY), false),
            Decision::NotDue { due_at: 1_004 * DAY, not_after: 1_006 * DAY }
        );
    }

    #[test]
    fn alerts_come_halfway_from_the_renewal_point_to_expiry_for_every_lifetime() {
        // 90 days: due with 30 days left, alert with 15 left.
        let i = installed(1_000 * DAY, 90);
        assert_eq!(alert_at(&i.leaf, None, None), 1_075 * DAY);
        // Six days: due with 2 days left, alert with 1 left (not "14 days left" at once).
        let i = installed(1_000 * DAY, 6);
        assert_eq!(alert_at(&i.leaf, None, None), 1_005 * DAY);
        // 90 seconds: due with 30 s left, alert with 15 s left.
        let mut short = installed(1_000, 0);
        short.leaf.not_after = 1_090;
        assert_eq!(alert_at(&short.leaf, None, None), 1_075);
        // An absolute alert_before, but never before the certificate is even due.
        let i = installed(1_000 * DAY, 90);
        assert_eq!(alert_at(&i.leaf, None, Some(Duration::from_secs(14 * DAY))), 1_076 * DAY);
        let i = installed(1_000 * DAY, 6);
        assert_eq!(alert_at(&i.leaf, None, Some(Duration::from_secs(14 * DAY))), 1_004 * DAY);
        // With renew_before the renewal point moves, and the alert with it.
        let i = installed(1_000 * DAY, 90);
        assert_eq!(alert_at(&i.leaf, Some(Duration::from_secs(10 * DAY)), None), 1_085 * DAY);
    }

    #[test]
    fn a_certificate_from_another_ca_than_the_configured_one_is_due() {
        let i = installed(1_000 * DAY, 90);
        let c = cert(None);
        let moved = Origin {
            installed: "https://acme-staging-v02.api.letsencrypt.org/directory",
            configured: "https://acme-v02.api.letsencrypt.org/directory",
            installed_profile: None,
            configured_profile: None,
        };
        assert!(matches!(decide(&c, Ok(Some(&i)), Some(moved), at(1_001 * DAY), false), Decision::Due(Reason::IssuerChanged { .. })));
        let same = Origin { installed: "ca:internal", configured: "ca:internal", installed_profile: None, configured_profile: None };
        assert!(matches!(decide(&c, Ok(Some(&i)), Some(same), at(1_001 * DAY), false), Decision::NotDue { .. }));
    }

    #[test]
    fn a_certificate_of_another_profile_than_the_configured_one_is_due() {
        let i = installed(1_000 * DAY, 90);
        let c = cert(None);
        let ca = "https://acme-v02.api.letsencrypt.org/directory";
        let origin =
            |installed_profile, configured_profile| Origin { installed: ca, configured: ca, installed_profile, configured_profile };
        let decide_at = |o| decide(&c, Ok(Some(&i)), Some(o), at(1_001 * DAY), false);
        assert_eq!(
            decide_at(origin(Some("classic"), Some("shortlived"))),
            Decision::Due(Reason::ProfileChanged { from: Some("classic".into()), to: "shortlived".into() })
        );
        assert!(matches!(decide_at(origin(None, Some("tlsserver"))), Decision::Due(Reason::ProfileChanged { from: None, .. })));
        // The same profile, or none configured (the CA's choice stands): not due.
        assert!(matches!(decide_at(origin(Some("tlsserver"), Some("tlsserver"))), Decision::NotDue { .. }));
        assert!(matches!(decide_at(origin(Some("shortlived"), None)), Decision::NotDue { .. }));
    }

    #[test]
    fn renew_before_and_other_reasons() {
        let i = installed(1_000 * DAY, 90);
        let c = cert(Some(Duration::from_secs(10 * DAY)));
        assert_eq!(
            decide(&c, Ok(Some(&i)), None, at(1_000 * DAY), false),
            Decision::NotDue { due_at: 1_080 * DAY, not_after: 1_090 * DAY }
        );
        assert_eq!(decide(&c, Ok(Some(&i)), None, at(1_000 * DAY), true), Decision::Due(Reason::Forced));
        assert_eq!(decide(&c, Ok(None), None, at(0), false), Decision::Due(Reason::NothingInstalled));
        let mut other = c.clone();
        other.domains.push("b.example".into());
        assert_eq!(decide(&other, Ok(Some(&i)), None, at(0), false), Decision::Due(Reason::NamesNotCovered(vec!["b.example".into()])));
        other = c.clone();
        other.key = KeyType::Rsa2048;
        assert!(matches!(decide(&other, Ok(Some(&i)), None, at(0), false), Decision::Due(Reason::KeyTypeChanged { .. })));
        let mut bad = installed(1_000 * DAY, 90);
        bad.key_matches = false;
        assert_eq!(decide(&c, Ok(Some(&bad)), None, at(0), false), Decision::Due(Reason::KeyMismatch));
        bad.key_matches = true;
        bad.intermediates = 0;
        assert_eq!(decide(&c, Ok(Some(&bad)), None, at(0), false), Decision::Due(Reason::IncompleteChain));
    }
}
