//! The client's address: the TCP peer, or what a trusted proxy says it forwarded for.
//!
//! Proxy headers are only believed when the peer itself is in `blocking.trusted_proxies`;
//! otherwise any client could name an arbitrary address and slip past the deny list or
//! the rate limit. `X-Forwarded-For` is read from the right (the hop nearest to us) and the
//! first address that is not a trusted proxy is the client. A header that does not parse
//! is ignored and the peer is used, so garbage can never be believed.

use std::net::IpAddr;

use crate::settings::{canonical_ip, CidrList};

/// Resolves client addresses against a set of trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr {
    trusted_proxies: CidrList,
}

impl ClientAddr {
    /// Believes forwarding headers only from peers in `trusted_proxies`.
    pub fn new(trusted_proxies: CidrList) -> Self {
        ClientAddr { trusted_proxies }
    }

    /// Whether `peer` is one of the trusted proxies, whose forwarding headers we believe.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.contains(peer)
    }

    /// The client of a Rocket request, `None` without a peer address (only Rocket's local
    /// test client sends none). Headers are only read (a map lookup each) when the peer is
    /// a trusted proxy.
    pub fn of(&self, request: &rocket::Request<'_>) -> Option<IpAddr> {
        let peer = request.remote()?.ip();
        if !self.is_trusted_proxy(peer) {
            return Some(canonical_ip(peer));
        }
        Some(self.resolve(
            peer,
            request.headers().get("X-Forwarded-For"),
            request.headers().get_one("X-Real-IP"),
        ))
    }

    /// `forwarded_for` yields each `X-Forwarded-For` header line in order of arrival;
    /// `real_ip` is the `X-Real-IP` header, used when there is no `X-Forwarded-For`.
    pub fn resolve<'h>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'h str>,
        real_ip: Option<&str>,
    ) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        // Walk from the hop nearest to us. Only hops our trusted proxies appended are
        // believed, so the first address that is not a trusted proxy is the client, and
        // whatever the client itself wrote further left never matters.
        let lines: Vec<&str> = forwarded_for.collect();
        let mut nearest = peer;
        let mut saw_any = false;
        for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
            saw_any = true;
            match parse_hop(hop.trim()) {
                Some(address) if self.trusted_proxies.contains(address) => nearest = address,
                Some(address) => return address,
                // Garbage right next to a trusted hop: the chain cannot be followed further,
                // so the nearest trusted hop is the best-known client.
                None => return nearest,
            }
        }
        if saw_any {
            // Every hop is a trusted proxy: the leftmost is the origin.
            return nearest;
        }
        real_ip
            .and_then(|value| parse_hop(value.trim()))
            .unwrap_or(peer)
    }
}

/// One hop: an address, optionally with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| canonical_ip(addr.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn resolver() -> ClientAddr {
        ClientAddr::new("10.0.0.0/8".parse::<Cidr>().into_iter().collect())
    }

    use crate::settings::Cidr;

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let got = resolver().resolve(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), Some("5.6.7.8"));
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxy_forwarded_for_rightmost_untrusted() {
        let got = resolver().resolve(
            ip("10.0.0.1"),
            ["198.51.100.1, 203.0.113.7", "10.0.0.2"].into_iter(),
            None,
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn trusted_proxy_real_ip_and_garbage() {
        let r = resolver();
        assert_eq!(
            r.resolve(ip("10.0.0.1"), std::iter::empty(), Some("198.51.100.4")),
            ip("198.51.100.4")
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), ["not-an-ip"].into_iter(), None),
            ip("10.0.0.1")
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), ["[::1]:80, 1.2.3.4:9"].into_iter(), None),
            ip("1.2.3.4")
        );
        assert_eq!(
            r.resolve(ip("::ffff:10.0.0.1"), ["10.0.0.3"].into_iter(), None),
            ip("10.0.0.3")
        );
    }
}
