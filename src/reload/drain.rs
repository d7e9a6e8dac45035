//! `[certificate.reload] drain`: before an action that cuts connections (a restart), wait until
//! the registry has no client connection left, up to a limit, then go ahead anyway.
//!
//! Connections are counted from the kernel's own table, `/proc/PID/net/tcp` and `tcp6`, which
//! shows the network namespace of PID: a container's (its PID from the Docker API) or the
//! host's. A client connection is an established one whose local port is a listening port
//! there (or the configured `port`): connections the registry itself opens (to a storage
//! backend, say) end on the far side and are not counted.

use std::time::{Duration, Instant};

/// How long to wait at most, and which port the registry listens on (for the host's table,
/// where other services listen too; a container's listening ports are the registry's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub limit: Duration,
    pub port: Option<u16>,
    /// How long no client may be connected before the restart goes ahead (see [`wait`]).
    pub quiet: Duration,
}

/// [`Drain::quiet`]: far longer than the pause between two requests of one transfer.
pub const QUIET: Duration = Duration::from_secs(1);

/// Whose network namespace to look into.
#[derive(Debug, Clone, Copy)]
pub enum Netns {
    /// regcert's own (the host's, for a systemd unit or a command).
    Own,
    /// The namespace of this process (a container's main process).
    Of(i64),
}

const POLL: Duration = Duration::from_millis(100);
const LISTEN: &str = "0A";
const ESTABLISHED: &str = "01";

/// Client connections open now in `ns`.
pub fn count(ns: Netns, port: Option<u16>) -> Result<usize, String> {
    Ok(count_clients(&tables(ns)?, port))
}

/// The ports something listens on in `ns` (TCP, IPv4 or IPv6), without repeats. Listeners on
/// a loopback address are left out: in a container they serve only the container itself (the
/// engine's DNS resolver listens on 127.0.0.11 there, on a port that changes on every restart).
pub fn listening(ns: Netns) -> Result<Vec<u16>, String> {
    Ok(listening_ports(&tables(ns)?, false))
}

/// The ports something listens on in `ns`, loopback listeners included (a registry on this
/// host may listen on 127.0.0.1 behind a proxy).
pub fn listening_any(ns: Netns) -> Result<Vec<u16>, String> {
    Ok(listening_ports(&tables(ns)?, true))
}

/// The kernel's TCP tables (`tcp`, and `tcp6` where the kernel has IPv6) of `ns`.
fn tables(ns: Netns) -> Result<Vec<String>, String> {
    let dir = match ns {
        Netns::Own => "/proc/self/net".to_owned(),
        Netns::Of(pid) => format!("/proc/{pid}/net"),
    };
    let mut tables = Vec::new();
    for file in ["tcp", "tcp6"] {
        let path = format!("{dir}/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => tables.push(text),
            // A kernel without IPv6 has no tcp6.
            Err(e) if file == "tcp6" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot read {path}: {e} (regcert needs the host's /proc with other users' processes visible: under the shipped \
                     systemd unit, install systemd/regcert.service.d/drain.conf)"
                ));
            }
        }
    }
    Ok(tables)
}

/// One line of a table: the local address and port, and the state.
struct Socket<'a> {
    loopback: bool,
    port: u16,
    state: &'a str,
}

fn sockets(tables: &[String]) -> Vec<Socket<'_>> {
    tables
        .iter()
        .flat_map(|t| t.lines().skip(1))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (addr, port) = fields.nth(1)?.rsplit_once(':')?;
            let state = fields.nth(1)?;
            Some(Socket { loopback: is_loopback(addr), port: u16::from_str_radix(port, 16).ok()?, state })
        })
        .collect()
}

/// An address as the kernel writes it in these tables: 32-bit words in hex, each in the host's
/// byte order (little-endian on the machines regcert runs on).
fn is_loopback(hex: &str) -> bool {
    let words: Vec<[u8; 4]> =
        (0..hex.len() / 8).filter_map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes)).collect();
    match words.as_slice() {
        [v4] => v4[0] == 127,
        [a, b, c, d] => {
            let bytes: Vec<u8> = [a, b, c, d].iter().flat_map(|w| w.iter().copied()).collect();
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default());
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

fn listening_ports(tables: &[String], loopback: bool) -> Vec<u16> {
    let mut ports: Vec<u16> =
        sockets(tables).into_iter().filter(|s| s.state == LISTEN && (loopback || !s.loopback)).map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Established connections whose local port is `port`, or any port something listens on.
pub fn count_clients(tables: &[String], port: Option<u16>) -> usize {
    let listening = match port {
        Some(p) => vec![p],
        None => listening_ports(tables, false),
    };
    sockets(tables).iter().filter(|s| s.state == ESTABLISHED && listening.contains(&s.port)).count()
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub waited: Duration,
    /// Client connections still open when the limit was reached (0: none were left).
    pub cut: usize,
}

/// Wait until `count` has said "no client connected" for [`Drain::quiet`] on end, or until
/// `drain.limit` has passed. Returns how long it waited, and what the limit cut. A count that
/// cannot be made is logged, and the restart goes ahead.
///
/// One zero is not enough: a push or a pull is a series of HTTP requests, and clients that
/// close the connection after each one (the docker client does) leave a moment between two
/// requests of the same transfer without a connection.
pub async fn wait(cert: &str, target: &str, drain: &Drain, count: impl Fn() -> Result<usize, String>) -> Drained {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut open = 0;
    let mut seen = false;
    loop {
        match count() {
            Ok(0) => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= drain.quiet {
                    let waited = started.elapsed();
                    let ms = waited.as_millis() as u64;
                    if seen {
                        tracing::info!(cert = %cert, target = %target, waited_ms = ms, "drain: every client connection has ended; restarting");
                    } else {
                        tracing::info!(cert = %cert, target = %target, waited_ms = ms, "drain: no client connection open; restarting");
                    }
                    return Drained { waited, cut: 0 };
                }
            }
            Ok(n) => {
                if !seen {
                    let limit = humantime::format_duration(drain.limit);
                    tracing::info!(cert = %cert, target = %target, connections = n, %limit, "drain: waiting for client connections to end before the restart");
                }
                (open, seen, quiet_since) = (n, true, None);
            }
            Err(error) => {
                tracing::warn!(cert = %cert, target = %target, %error, "drain: cannot count client connections; restarting without waiting");
                return Drained { waited: started.elapsed(), cut: 0 };
            }
        }
        if started.elapsed() >= drain.limit {
            let waited = started.elapsed();
            tracing::warn!(
                cert = %cert, target = %target, connections = open, waited_ms = waited.as_millis() as u64,
                "drain: limit reached with client connections still open; restarting anyway (raise [certificate.reload] drain to wait longer)"
            );
            return Drained { waited, cut: open };
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 02001FAC:1388 01001FAC:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 02001FAC:1388 01001FAC:C351 06 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 02001FAC:D431 0A001FAC:01BB 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0B00007F:AEB1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0
   5: 0B00007F:AEB1 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 8 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000200A8C0:1388 0000000000000000FFFF00000100A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 20 4 30 10 -1
";

    #[test]
    fn established_connections_to_a_listening_port_are_clients() {
        let tables = [TCP.to_owned(), TCP6.to_owned()];
        // Port 5000 (0x1388): one IPv4 and one IPv6 client; a TIME_WAIT (06) and the registry's
        // own outgoing connection (from port 0xD431 to 443) do not count, nor a connection to the
        // engine's DNS resolver on 127.0.0.11 (0xAEB1), which listens on loopback only.
        assert_eq!(count_clients(&tables, None), 2);
        assert_eq!(count_clients(&tables, Some(5000)), 2);
        assert_eq!(count_clients(&tables, Some(443)), 0);
        assert_eq!(count_clients(&tables[..1], None), 1);
        assert_eq!(listening_ports(&tables, true), vec![5000, 0xAEB1]);
        assert!(
            is_loopback("0100007F") && is_loopback("00000000000000000000000001000000") && is_loopback("0000000000000000FFFF00000100007F")
        );
        assert!(!is_loopback("02001FAC") && !is_loopback("00000000000000000000000000000000"));
        assert_eq!(count_clients(&[], None), 0);
        assert_eq!(listening_ports(&tables, false), vec![5000], "one port, listened on over IPv4 and IPv6");
    }

    #[test]
    fn this_process_can_count_its_own_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(count(Netns::Own, Some(port)), Ok(0));
        assert!(listening_any(Netns::Own).unwrap().contains(&port));
        assert!(!listening(Netns::Own).unwrap().contains(&port), "a loopback listener");
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        assert_eq!(count(Netns::Own, Some(port)), Ok(1));
    }

    #[test]
    fn waiting_ends_when_the_connections_do_or_at_the_limit() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let drain = Drain { limit: Duration::from_millis(1500), port: None, quiet: Duration::from_millis(300) };
        let waited = rt.block_on(wait("c", "t", &drain, || Ok(0))).waited;
        assert!(waited >= drain.quiet && waited < drain.limit, "nobody connected: only the quiet time: {waited:?}");
        // Connected, a gap between two requests shorter than the quiet time, connected, gone.
        let calls = std::cell::Cell::new(0);
        let script = [2, 2, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let waited = rt.block_on(wait("c", "t", &drain, || {
            calls.set(calls.get() + 1);
            Ok(script.get(calls.get() - 1).copied().unwrap_or(0))
        }));
        assert_eq!(waited.cut, 0);
        let waited = waited.waited;
        assert!(waited >= POLL * 5 + drain.quiet && waited < drain.limit, "{waited:?}");
        let cut = rt.block_on(wait("c", "t", &drain, || Ok(1)));
        assert!(cut.waited >= drain.limit && cut.cut == 1, "{cut:?}");
        assert!(rt.block_on(wait("c", "t", &drain, || Err("no /proc".into()))).waited < POLL, "no waiting when nothing can be counted");
    }
}
