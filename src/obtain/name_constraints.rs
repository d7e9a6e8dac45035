//! Name constraints of a private CA (RFC 5280 §4.2.1.10): the DNS subtrees and IP ranges it may
//! certify (`name_constraints`) and those it must not (`excluded_name_constraints`).
//!
//! The same rules are applied where the CA is written (`ca init`), where the configuration is
//! validated, and before each leaf is signed (from the CA certificate itself, so that an imported
//! CA's own constraints count too). They are the rules clients apply, per kind of name: a DNS name
//! must lie in one of the permitted DNS subtrees if there are any, an IP address in one of the
//! permitted IP ranges if there are any; and no name may lie in an excluded subtree of its kind.
//! So a CA constrained to `corp.lan` alone still certifies any IP: list ranges to limit those.

use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use rustls_pki_types::CertificateDer;

/// One subtree: `corp.lan` (that name and every name under it) or `10.20.0.0/16`, `fd00::/8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subtree {
    Dns(String),
    /// A network address (host bits zero) and its prefix length.
    Ip(IpAddr, u8),
}

impl Subtree {
    /// Parse one entry of `name_constraints`/`excluded_name_constraints`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("\"{s}\" is not an IP range like \"10.20.0.0/16\" or \"fd00::/8\""))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be a number from 0 to {max}"))?;
            if network(addr, prefix) != addr {
                return Err(format!("\"{s}\" has host bits set; the range is \"{}/{prefix}\"", network(addr, prefix)));
            }
            return Ok(Subtree::Ip(addr, prefix));
        }
        if s.parse::<IpAddr>().is_ok() {
            let len = if s.contains(':') { 128 } else { 32 };
            return Err(format!("\"{s}\" is a single address; write it as a range, \"{s}/{len}\""));
        }
        let name = s.trim_start_matches('.');
        let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("\"{s}\" is neither a DNS name like \"corp.lan\" nor an IP range like \"10.20.0.0/16\""));
        }
        Ok(Subtree::Dns(name.to_ascii_lowercase()))
    }

    /// Is the DNS name `name` (a wildcard counts as its base) inside this subtree?
    fn holds_dns(&self, name: &str) -> bool {
        let Subtree::Dns(base) = self else { return false };
        let name = name.strip_prefix("*.").unwrap_or(name).trim_end_matches('.').to_ascii_lowercase();
        name == *base || name.ends_with(&format!(".{base}"))
    }

    /// Is `ip` inside this range? An IPv4 address is never inside an IPv6 range or the reverse,
    /// as for clients, which compare the raw address bytes.
    fn holds_ip(&self, ip: IpAddr) -> bool {
        match self {
            Subtree::Ip(net, prefix) => net.is_ipv4() == ip.is_ipv4() && network(ip, *prefix) == *net,
            Subtree::Dns(_) => false,
        }
    }

    fn to_rcgen(&self) -> GeneralSubtree {
        match self {
            Subtree::Dns(name) => GeneralSubtree::DnsName(name.clone()),
            Subtree::Ip(net, prefix) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*net, *prefix)),
        }
    }

    /// From a GeneralName of a CA certificate's name constraints (other kinds are not ours).
    fn from_general_name(name: &x509_parser::extensions::GeneralName<'_>) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        match name {
            GeneralName::DNSName(d) => Some(Subtree::Dns(d.trim_start_matches('.').to_ascii_lowercase())),
            // The address followed by the mask, 8 or 32 bytes.
            GeneralName::IPAddress(bytes) => {
                let (addr, mask) = bytes.split_at(bytes.len() / 2);
                let addr = match addr.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(addr).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
                    _ => return None,
                };
                // The leading one bits of the mask (a mask is contiguous; anything after a gap is ignored).
                let mut prefix = 0u8;
                for b in mask {
                    prefix += b.leading_ones() as u8;
                    if *b != 0xff {
                        break;
                    }
                }
                Some(Subtree::Ip(network(addr, prefix), prefix))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Subtree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subtree::Dns(name) => f.write_str(name),
            Subtree::Ip(net, prefix) => write!(f, "{net}/{prefix}"),
        }
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

/// What a CA may and may not certify. Empty: anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    pub permitted: Vec<Subtree>,
    pub excluded: Vec<Subtree>,
}

impl Constraints {
    /// From the configuration's lists; every entry that does not parse is a problem.
    pub fn parse(permitted: &[String], excluded: &[String]) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut list = |entries: &[String]| -> Vec<Subtree> {
            entries.iter().filter_map(|e| Subtree::parse(e).map_err(|p| problems.push(p)).ok()).collect()
        };
        let c = Constraints { permitted: list(permitted), excluded: list(excluded) };
        if problems.is_empty() { Ok(c) } else { Err(problems) }
    }

    /// The constraints a CA certificate carries (none, or unreadable: none).
    pub fn of_certificate(der: &CertificateDer<'_>) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Self::default() };
        let Ok(Some(ext)) = cert.name_constraints() else { return Self::default() };
        let list = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>| -> Vec<Subtree> {
            subtrees.as_deref().unwrap_or_default().iter().filter_map(|s| Subtree::from_general_name(&s.base)).collect()
        };
        Constraints { permitted: list(&ext.value.permitted_subtrees), excluded: list(&ext.value.excluded_subtrees) }
    }

    pub fn is_empty(&self) -> bool {
        self.permitted.is_empty() && self.excluded.is_empty()
    }

    /// The extension `ca init` writes (none when there is nothing to constrain).
    pub fn to_rcgen(&self) -> Option<NameConstraints> {
        (!self.is_empty()).then(|| NameConstraints {
            permitted_subtrees: self.permitted.iter().map(Subtree::to_rcgen).collect(),
            excluded_subtrees: self.excluded.iter().map(Subtree::to_rcgen).collect(),
        })
    }

    pub fn permits_dns(&self, name: &str) -> bool {
        let permitted: Vec<&Subtree> = self.permitted.iter().filter(|s| matches!(s, Subtree::Dns(_))).collect();
        (permitted.is_empty() || permitted.iter().any(|s| s.holds_dns(name))) && !self.excluded.iter().any(|s| s.holds_dns(name))
    }

    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        let permitted: Vec<&Subtree> = self.permitted.iter().filter(|s| matches!(s, Subtree::Ip(..))).collect();
        (permitted.is_empty() || permitted.iter().any(|s| s.holds_ip(ip))) && !self.excluded.iter().any(|s| s.holds_ip(ip))
    }

    /// Each of `domains` and `ips` these constraints refuse, with why ("outside …" or "excluded by …").
    pub fn refused(&self, domains: &[String], ips: &[IpAddr]) -> Vec<String> {
        let why = |is_dns: bool, excluded: Option<&Subtree>| match excluded {
            Some(s) => format!("excluded by {s}"),
            None => {
                let kind: Vec<String> =
                    self.permitted.iter().filter(|s| matches!(s, Subtree::Dns(_)) == is_dns).map(ToString::to_string).collect();
                format!("outside {}", kind.join(", "))
            }
        };
        let dns = domains
            .iter()
            .filter(|d| !self.permits_dns(d))
            .map(|d| format!("\"{d}\" ({})", why(true, self.excluded.iter().find(|s| s.holds_dns(d)))));
        let ip = ips
            .iter()
            .filter(|ip| !self.permits_ip(**ip))
            .map(|ip| format!("\"{ip}\" ({})", why(false, self.excluded.iter().find(|s| s.holds_ip(*ip)))));
        dns.chain(ip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(permitted: &[&str], excluded: &[&str]) -> Constraints {
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Constraints::parse(&s(permitted), &s(excluded)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_or_say_what_is_wrong() {
        assert_eq!(Subtree::parse(".Corp.LAN").unwrap(), Subtree::Dns("corp.lan".into()));
        assert_eq!(Subtree::parse("10.20.0.0/16").unwrap(), Subtree::Ip(ip("10.20.0.0"), 16));
        assert_eq!(Subtree::parse("fd00::/8").unwrap(), Subtree::Ip(ip("fd00::"), 8));
        assert_eq!(Subtree::parse("0.0.0.0/0").unwrap(), Subtree::Ip(ip("0.0.0.0"), 0));
        for (bad, want) in [
            ("10.20.0.1/16", "host bits set; the range is \"10.20.0.0/16\""),
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.0/x", "from 0 to 32"),
            ("10.0.0.300/8", "not an IP range"),
            ("10.0.0.5", "write it as a range, \"10.0.0.5/32\""),
            ("fd00::10", "\"fd00::10/128\""),
            ("corp lan", "neither a DNS name"),
            ("", "neither a DNS name"),
        ] {
            let err = Subtree::parse(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let err = Constraints::parse(&["a b".into(), "corp.lan".into()], &["1.2.3.4".into()]).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
    }

    #[test]
    fn dns_and_ip_are_constrained_separately_as_clients_do() {
        let k = c(&["corp.lan", "192.168.20.0/24", "fd00::/8"], &["secret.corp.lan", "192.168.20.128/25"]);
        assert!(k.permits_dns("corp.lan") && k.permits_dns("registry.corp.lan") && k.permits_dns("*.corp.lan"));
        assert!(!k.permits_dns("evilcorp.lan") && !k.permits_dns("registry.other.lan"));
        assert!(!k.permits_dns("secret.corp.lan") && !k.permits_dns("a.secret.corp.lan"));
        assert!(k.permits_ip(ip("192.168.20.10")) && k.permits_ip(ip("fd00::10")) && k.permits_ip(ip("fdff::1")));
        assert!(!k.permits_ip(ip("192.168.20.200")), "excluded");
        assert!(!k.permits_ip(ip("192.168.21.1")) && !k.permits_ip(ip("fe80::1")));
        // Only DNS subtrees: every IP is allowed (RFC 5280 constrains each kind on its own).
        let dns_only = c(&["corp.lan"], &[]);
        assert!(dns_only.permits_ip(ip("8.8.8.8")) && dns_only.permits_ip(ip("::1")));
        // Only IPv4 ranges: an IPv6 address is outside them.
        let v4 = c(&["10.0.0.0/8"], &[]);
        assert!(!v4.permits_ip(ip("::ffff:10.0.0.1")) && v4.permits_dns("anything.example"));
        assert!(c(&[], &[]).permits_ip(ip("1.2.3.4")) && c(&[], &[]).permits_dns("x.y"));
        assert_eq!(
            k.refused(&["registry.corp.lan".into(), "secret.corp.lan".into(), "x.other".into()], &[ip("192.168.20.200"), ip("10.0.0.1")]),
            [
                "\"secret.corp.lan\" (excluded by secret.corp.lan)",
                "\"x.other\" (outside corp.lan)",
                "\"192.168.20.200\" (excluded by 192.168.20.128/25)",
                "\"10.0.0.1\" (outside 192.168.20.0/24, fd00::/8)",
            ]
        );
    }

    #[test]
    fn constraints_survive_the_round_trip_through_a_certificate() {
        let k = c(&["corp.lan", "192.168.20.0/24", "fd00::/8"], &["secret.corp.lan", "192.168.20.128/25", "fd00:dead::/32"]);
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.name_constraints = k.to_rcgen();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(Constraints::of_certificate(cert.der()), k);
        assert!(c(&[], &[]).to_rcgen().is_none());
    }
}
