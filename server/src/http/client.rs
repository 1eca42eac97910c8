//! [`Client`]: who a request comes from, and [`TrustedProxies`]: when a proxy is believed about it.
//!
//! Behind a load balancer every request's TCP peer is the balancer, so limits keyed on the peer would put every
//! shopper into one bucket. Only a peer inside `--trusted-proxies` is believed: the client is then the
//! right-most hop of `Forwarded` (or, without it, `X-Forwarded-For`) that is not itself a trusted proxy — hops
//! further left were written by the client and prove nothing — and the scheme it used is the proxy's
//! `X-Forwarded-Proto` (or `Forwarded: proto=`). From any other peer these headers are ignored, so a client
//! cannot pick its own bucket by sending them.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The request's client, as resolved once per request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or the one a trusted proxy named.
    pub address: IpAddr,
    /// The scheme a trusted proxy said the client used (`https` or `http`), if it said.
    pub forwarded_https: Option<bool>,
}

/// The networks whose peers may name the client (`--trusted-proxies`; none by default).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Who sent a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> Client {
        let peer = peer.ip().to_canonical();
        if !self.contains(peer) {
            return Client { address: peer, forwarded_https: None };
        }
        let forwarded = forwarded_elements(headers);
        let hops: Vec<Option<IpAddr>> = if forwarded.is_empty() {
            header_list(headers, "x-forwarded-for").map(parse_hop).collect()
        } else {
            forwarded.iter().map(|e| param(e, "for").and_then(parse_hop)).collect()
        };
        // From the right: skip our own proxies; the first other hop is the client. A hop that is not an
        // address (`unknown`, an obfuscated name, garbage) ends the walk at the last hop we could trust.
        let mut address = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.contains(*ip) => address = *ip,
                Some(ip) => {
                    address = *ip;
                    break;
                }
                None => break,
            }
        }
        let proto = if forwarded.is_empty() {
            header_list(headers, "x-forwarded-proto").last().map(str::to_owned)
        } else {
            forwarded.iter().rev().find_map(|e| param(e, "proto").map(str::to_owned))
        };
        let forwarded_https = proto.map(|p| p.trim().eq_ignore_ascii_case("https"));
        Client { address, forwarded_https }
    }
}

/// Every comma-separated value of every `name` header, in order.
fn header_list<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// RFC 7239 `Forwarded` elements (`for=…;proto=…`), in order.
fn forwarded_elements(headers: &HeaderMap) -> Vec<&str> {
    header_list(headers, "forwarded").collect()
}

/// The value of `name=` in one `Forwarded` element, unquoted.
fn param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().trim_matches('"'))
    })
}

/// One hop: `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = hop.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        let h = headers(&[("x-forwarded-for", "10.9.9.9"), ("x-forwarded-proto", "https")]);
        assert_eq!(none.client(peer("203.0.113.7"), &h), Client { address: ip("203.0.113.7"), forwarded_https: None });
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(lb.client(peer("203.0.113.7"), &h).address, ip("203.0.113.7"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let lb = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the left-most hop; our two proxies appended the real one and themselves.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.9"), ("x-forwarded-for", "10.0.0.5")]);
        assert_eq!(lb.client(peer("10.0.0.2"), &h).address, ip("198.51.100.9"));
        // Only proxies: the left-most of them.
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(lb.client(peer("127.0.0.1"), &h).address, ip("10.0.0.7"));
        // No header: the proxy itself.
        assert_eq!(lb.client(peer("10.0.0.2"), &HeaderMap::new()).address, ip("10.0.0.2"));
        // Garbage to the right of anything real: stop at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "198.51.100.9, unknown")]);
        assert_eq!(lb.client(peer("10.0.0.2"), &h).address, ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_gives_the_scheme() {
        let lb = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("forwarded", r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";proto=https"#),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        let c = lb.client(peer("10.1.1.1"), &h);
        assert_eq!(c.address, ip("2001:db8:cafe::17"));
        assert_eq!(c.forwarded_https, Some(true));
        let h = headers(&[("x-forwarded-for", "192.0.2.1:5555"), ("x-forwarded-proto", "http")]);
        assert_eq!(lb.client(peer("10.1.1.1"), &h), Client { address: ip("192.0.2.1"), forwarded_https: Some(false) });
    }

    #[test]
    fn networks_parse_as_cidrs_or_single_addresses_and_mapped_ipv4_matches() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network(" 2001:db8::/32 ").is_ok());
        assert_eq!(parse_network("127.0.0.1").unwrap(), "127.0.0.1/32".parse::<IpNet>().unwrap());
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("proxy.local").is_err());
        let lb = proxies(&["127.0.0.1"]);
        assert!(lb.contains(ip("::ffff:127.0.0.1")));
    }
}
