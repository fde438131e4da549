//! The client's address behind proxies. The TCP peer is the client unless it is one of
//! the proxies named in `gateway.trusted_proxies` (`SOMAGENT_GATEWAY__TRUSTED_PROXIES`, comma-separated CIDRs, e.g.
//! `10.0.0.0/8,192.168.1.7`); then the client is the rightmost address that is not itself
//! a trusted proxy in the one header those proxies write: `X-Forwarded-For` by default,
//! or `Forwarded` (RFC 7239) with `SOMAGENT_GATEWAY__FORWARDED_HEADER=forwarded`. Only that header
//! is read, whichever others arrive (an ingress that appends to one passes the other
//! through from the client), and addresses left of the trusted hops were written by the
//! client and prove nothing: a client cannot pick its own rate-limit bucket.

use std::net::IpAddr;

use axum::http::HeaderMap;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
    header: ForwardedHeader,
}

/// The header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl TrustedProxies {
    /// The same proxies, writing `header`.
    pub fn written_in(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an address or CIDR"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{item}` has a bad prefix length"))?,
                None => max,
            };
            // An IPv4-mapped net (`::ffff:10.0.0.0/104`) is the IPv4 net it maps, with
            // the prefix counted in IPv4 bits; a shorter prefix would reach past it.
            let (addr, bits) = match addr {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) if bits >= 96 => (IpAddr::V4(v4), bits - 96),
                    Some(_) => return Err(format!("`{item}` has a bad prefix length")),
                    None => (addr, bits),
                },
                v4 => (v4, bits),
            };
            nets.push((addr, bits));
        }
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|(net, bits)| contains(*net, *bits, ip))
    }

    /// The client's address for a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers, self.header);
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.trusts(*ip) {
                        return client;
                    }
                }
                // An entry we cannot read ("unknown", an obfuscated name): the last
                // trusted hop is as far as the chain can be believed.
                None => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    // `bits` is at most the family's width (checked when parsed); a prefix of 0 is
    // everything, which `checked_shl` of the full width gives as `None`.
    let bits = u32::from(bits);
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The address a per-address limit counts: an IPv4 address itself, an IPv6 address's
/// /64 (one subscriber's usual allocation, which they could otherwise spread guesses
/// over).
pub fn bucket_of(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// The addresses the proxies recorded in `header`, oldest first. `None` marks an entry
/// that is not an address.
fn forwarded_chain(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    if header == ForwardedHeader::Forwarded {
        return headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| node_address(v))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| node_address(v.trim()))
        .collect()
}

/// `192.0.2.1`, `"192.0.2.1:80"`, `"[2001:db8::1]:4711"` or `2001:db8::1` → the address.
fn node_address(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (host, port) = raw.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(proxies.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.1.1"), &h),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        // The client forged the first entry; the ingress appended the real address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.3")]);
        assert_eq!(proxies.client(ip("10.2.3.4"), &h), ip("198.51.100.4"));
        // Only the configured header counts: a `Forwarded` the client sent through an
        // ingress that appends to X-Forwarded-For changes nothing.
        let h = headers(&[
            ("forwarded", "for=198.51.100.5:1234"),
            ("x-forwarded-for", "198.51.100.6"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &h), ip("198.51.100.6"));
        let forwarded = TrustedProxies {
            header: ForwardedHeader::Forwarded,
            ..proxies.clone()
        };
        assert_eq!(forwarded.client(ip("10.0.0.1"), &h), ip("198.51.100.5"));
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=192.168.1.7",
        )]);
        assert_eq!(
            forwarded.client(ip("10.0.0.1"), &h),
            ip("2001:db8:cafe::17")
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // IPv4-mapped peers count as IPv4.
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.1"), &h),
            ip("198.51.100.7")
        );
        // An unreadable hop stops the walk at the last trusted one.
        let h = headers(&[("forwarded", "for=198.51.100.8, for=unknown")]);
        assert_eq!(forwarded.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn bad_cidrs_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").unwrap().nets.is_empty());
        assert!(TrustedProxies::parse("::ffff:10.0.0.0/95").is_err());
    }

    #[test]
    fn an_ipv4_mapped_net_trusts_only_the_addresses_it_maps() {
        let proxies = TrustedProxies::parse("::ffff:10.0.0.5").unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(proxies.client(ip("10.0.0.5"), &h), ip("198.51.100.1"));
        // Any other IPv4 peer is not a proxy, whatever it writes.
        assert_eq!(proxies.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        let wide = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(wide.client(ip("10.9.9.9"), &h), ip("198.51.100.1"));
        assert_eq!(wide.client(ip("11.0.0.1"), &h), ip("11.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        assert_eq!(bucket_of(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:ffff::9")),
            bucket_of(ip("2001:db8:1:2::1"))
        );
        assert_eq!(bucket_of(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}
