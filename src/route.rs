//! Which addresses this host can reach at all, asked of the kernel's routing table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Whether this host has a route to `addr`. A UDP connect() sends nothing: it only asks the
/// kernel for a route, and fails at once when there is none (IPv6 on an IPv4-only host).
pub fn routable(addr: SocketAddr) -> bool {
    let local: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(local).and_then(|s| s.connect(addr)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_decides() {
        // Loopback always has a route; a link-local IPv6 address without its interface has none
        // (the integration test dns01::an_ipv6_nameserver_without_a_route_is_skipped adds an
        // `unreachable` route for the real case). Neither sends a packet.
        assert!(routable("127.0.0.1:53".parse().unwrap()));
        assert!(!routable("[fe80::1]:53".parse().unwrap()));
    }
}
