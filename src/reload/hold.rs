//! `[certificate.reload] hold`: while the registry restarts, new connections wait instead of
//! being refused.
//!
//! `drain` waits for the connections that are open; it cannot stop the next client from
//! connecting in the second or two in which nothing listens, and that client's pull fails
//! ("connection refused"). Holding closes that gap: regcert drops the first packet of every *new*
//! connection to the registry (a TCP SYN without ACK) in nftables, before connection tracking
//! and NAT see it. The client's kernel sends the SYN again after a second (Linux 6.6 and later:
//! each second for the first four tries; older kernels after 1, 2, 4 s), and once the registry
//! listens again and regcert lets SYNs through, the connection is made: the client saw a slow
//! connect, not an error. Established connections are not touched.
//!
//! The rules live in a table of their own, `inet regcert` (a `prerouting` chain for clients on
//! the network, an `output` chain for clients on this host, both at the `raw` priority), and
//! match three sets: host ports (`ports`, a systemd unit's or a command's `port`, a container's
//! published ports) and address-port pairs (`v4`, `v6`: a container's own addresses). The rules
//! without elements match nothing, so the table stays between restarts. Each element carries a
//! kernel timeout, the `hold` setting: if regcert dies while holding, the kernel lets clients
//! through on its own at that limit; no rule can be left behind that blocks the registry.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

/// The table, its sets and rules. Every statement is idempotent (`add` of what exists is
/// nothing; the chains are flushed and filled again), and `nft` applies a script as one
/// transaction: two regcert processes setting it up at once cannot leave duplicate rules, and
/// elements already in the sets stay.
const SETUP: &str = "add table inet regcert
add set inet regcert ports { type inet_service; flags timeout; }
add set inet regcert v4 { type ipv4_addr . inet_service; flags timeout; }
add set inet regcert v6 { type ipv6_addr . inet_service; flags timeout; }
add chain inet regcert prerouting { type filter hook prerouting priority raw; policy accept; }
add chain inet regcert output { type filter hook output priority raw; policy accept; }
flush chain inet regcert prerouting
flush chain inet regcert output
";

/// The rules of each chain: a SYN without ACK (a new connection) to a held destination.
const RULES: [&str; 3] = ["tcp dport @ports", "ip daddr . tcp dport @v4", "ip6 daddr . tcp dport @v6"];

/// How long one `nft` run may take (it talks to the kernel over netlink: milliseconds).
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where new connections to the registry arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doors {
    /// Ports on this host, on any of its addresses.
    pub ports: Vec<u16>,
    pub v4: Vec<(Ipv4Addr, u16)>,
    pub v6: Vec<(Ipv6Addr, u16)>,
}

impl Doors {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.v4.is_empty() && self.v6.is_empty()
    }

    /// `nft` statements, one per element, `verb` (`add` or `delete`) and an optional timeout.
    fn statements(&self, verb: &str, timeout: Option<Duration>) -> String {
        let timeout = timeout.map(|t| format!(" timeout {}ms", t.as_millis().max(1))).unwrap_or_default();
        let mut out = String::new();
        for p in &self.ports {
            let _ = writeln!(out, "{verb} element inet regcert ports {{ {p}{timeout} }}");
        }
        for (ip, p) in &self.v4 {
            let _ = writeln!(out, "{verb} element inet regcert v4 {{ {ip} . {p}{timeout} }}");
        }
        for (ip, p) in &self.v6 {
            let _ = writeln!(out, "{verb} element inet regcert v6 {{ {ip} . {p}{timeout} }}");
        }
        out
    }

    /// The script that lets clients through again. An element whose timeout has passed is
    /// gone, and deleting it would fail the whole transaction: each is added again first, with
    /// a short timeout (adding an element that exists changes nothing), then deleted.
    fn opening(&self) -> String {
        self.statements("add", Some(Duration::from_secs(1))) + &self.statements("delete", None)
    }
}

impl std::fmt::Display for Doors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports = self.ports.iter().map(|p| format!("port {p}"));
        let v4 = self.v4.iter().map(|(ip, p)| format!("{ip}:{p}"));
        let v6 = self.v6.iter().map(|(ip, p)| format!("[{ip}]:{p}"));
        let all: Vec<String> = ports.chain(v4).chain(v6).collect();
        f.write_str(&all.join(", "))
    }
}

fn setup() -> String {
    let mut script = SETUP.to_owned();
    for chain in ["prerouting", "output"] {
        for rule in RULES {
            let _ = writeln!(script, "add rule inet regcert {chain} tcp flags & (syn | ack) == syn {rule} drop");
        }
    }
    script
}

fn nft(script: &str) -> Command {
    let mut cmd = Command::new("nft");
    cmd.arg(script);
    cmd
}

/// What went wrong running `nft`, and what to do about it.
fn explain(result: std::io::Result<crate::command::Output>) -> Result<(), String> {
    let out = match result {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "the `nft` program is not installed (Debian/Ubuntu: apt install nftables; Fedora/RHEL: dnf install nftables)".into()
            );
        }
        Err(e) => return Err(format!("cannot run `nft`: {e}")),
    };
    if out.status.success() {
        return Ok(());
    }
    let text = out.stderr_text();
    if text.contains("Operation not permitted") || text.contains("Permission denied") {
        return Err(format!(
            "`nft` was refused ({}): holding connections needs CAP_NET_ADMIN; run regcert as root, or under the shipped systemd \
             unit install systemd/regcert.service.d/hold.conf",
            text.lines().next().unwrap_or_default()
        ));
    }
    Err(format!("`nft` failed ({}): {text}", out.status))
}

/// Make sure the table is there and `nft` works with our privileges. Run before anything is
/// installed, so that a host that cannot hold is told so before a restart depends on it.
pub async fn ready() -> Result<(), String> {
    explain(crate::command::run(nft(&setup()), None, NFT_TIMEOUT).await)
}

/// Hold new connections to `doors` for at most `limit` (the kernel lets them through after it
/// on its own). The returned guard lets them through when [`Closed::open`] is called or when it
/// is dropped.
pub async fn close(doors: &Doors, limit: Duration) -> Result<Closed, String> {
    let script = setup() + &doors.statements("add", Some(limit));
    explain(crate::command::run(nft(&script), None, NFT_TIMEOUT).await)?;
    Ok(Closed { doors: Some(doors.clone()) })
}

/// New connections to these doors are being held.
#[must_use = "the doors stay closed until the hold's limit unless opened"]
pub struct Closed {
    doors: Option<Doors>,
}

impl Closed {
    /// Let new connections through again.
    pub async fn open(mut self) -> Result<(), String> {
        let Some(doors) = self.doors.take() else { return Ok(()) };
        explain(crate::command::run(nft(&doors.opening()), None, NFT_TIMEOUT).await)
    }
}

impl Drop for Closed {
    /// A hold abandoned on the way (a timeout around the restart, an error) must not keep
    /// clients waiting until the kernel's limit.
    fn drop(&mut self) {
        if let Some(doors) = self.doors.take()
            && let Err(error) = explain(crate::command::output_within(nft(&doors.opening()), NFT_TIMEOUT))
        {
            tracing::warn!(%error, doors = %doors, "hold: cannot let new connections through; the kernel will at the hold's limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doors() -> Doors {
        Doors { ports: vec![443], v4: vec![(Ipv4Addr::new(172, 17, 0, 2), 5000)], v6: vec![("fd00::2".parse().unwrap(), 5000)] }
    }

    #[test]
    fn each_door_is_one_element_with_the_kernel_timeout() {
        let add = doors().statements("add", Some(Duration::from_secs(30)));
        assert_eq!(
            add,
            "add element inet regcert ports { 443 timeout 30000ms }\n\
             add element inet regcert v4 { 172.17.0.2 . 5000 timeout 30000ms }\n\
             add element inet regcert v6 { fd00::2 . 5000 timeout 30000ms }\n"
        );
        let open = doors().opening();
        let (readd, delete) = open.split_at(open.find("delete").unwrap());
        assert_eq!(readd.lines().count(), 3);
        assert!(readd.lines().all(|l| l.starts_with("add element") && l.ends_with("timeout 1000ms }")), "{readd}");
        assert_eq!(
            delete,
            "delete element inet regcert ports { 443 }\ndelete element inet regcert v4 { 172.17.0.2 . 5000 }\ndelete element inet regcert v6 { fd00::2 . 5000 }\n"
        );
        assert_eq!(doors().to_string(), "port 443, 172.17.0.2:5000, [fd00::2]:5000");
        assert!(Doors::default().is_empty() && !doors().is_empty());
    }

    #[test]
    fn the_setup_drops_only_new_connections_in_both_chains() {
        let script = setup();
        let rules: Vec<&str> = script.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(rules.len(), 6);
        assert!(rules.iter().all(|r| r.contains("tcp flags & (syn | ack) == syn") && r.ends_with(" drop")), "{rules:?}");
        // The chains are emptied before their rules are added: running it twice adds nothing.
        let flush = script.find("flush chain inet regcert output").unwrap();
        assert!(script.find("add rule").unwrap() > flush);
    }
}
