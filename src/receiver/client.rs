//! Who sent a delivery: the socket peer, or, behind proxies you name, the address they
//! forwarded. Recorded as `client` on every delivery's span, so that each log line about a
//! delivery names where it came from.

use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};

use super::{ReadHeader, RequestHeaders};

/// The header your proxies forward the client's address in (see
/// [`ReceiverBuilder::trusted_proxies`](super::ReceiverBuilder::trusted_proxies)). Only one is
/// read, the one your proxies set: a client can send either, and a header your proxies do not
/// overwrite or append to says whatever that client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …`: nginx's `$proxy_add_x_forwarded_for`, haproxy's
    /// `option forwardfor`, and Caddy's `reverse_proxy` by default.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1, …` (its other parameters are ignored).
    Forwarded,
}

impl ForwardedHeader {
    fn header(self) -> ReadHeader {
        match self {
            Self::XForwardedFor => ReadHeader::XForwardedFor,
            Self::Forwarded => ReadHeader::Forwarded,
        }
    }
}

/// The proxies whose forwarded header is believed, and which header that is.
#[derive(Debug, Clone)]
pub(crate) struct TrustedProxies {
    header: ForwardedHeader,
    /// Each as [`canonical_range`] gives it, so that it is compared with canonical addresses.
    proxies: Vec<IpNet>,
}

impl TrustedProxies {
    pub(crate) fn new(header: ForwardedHeader, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            header,
            proxies: proxies.into_iter().map(canonical_range).collect(),
        }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.proxies.iter().any(|range| range.contains(&address))
    }
}

/// A range of IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) as the IPv4 range it maps
/// (`10.0.0.0/8`): peers are compared in their canonical form, where an IPv4 client of a
/// dual-stack socket is IPv4.
fn canonical_range(range: IpNet) -> IpNet {
    let IpNet::V6(v6) = range else {
        return range;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        // A prefix of at most 128 - 96 = 32 bits: a valid IPv4 one.
        (Some(v4), Some(prefix)) => IpNet::V4(Ipv4Net::new_assert(v4, prefix)),
        _ => range,
    }
}

/// The client's address: the socket `peer`, unless the peer is a trusted proxy; then the
/// rightmost address in the forwarded header that is not a trusted proxy (each proxy appends
/// the address it was connected from, so everything left of the first untrusted one may be
/// forged). `None` when the framework did not give the peer.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn client_address(
    trusted: Option<&TrustedProxies>,
    peer: Option<IpAddr>,
    headers: &impl RequestHeaders,
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let Some(trusted) = trusted.filter(|t| t.trusts(peer)) else {
        return Some(peer);
    };
    let mut hops = Vec::new();
    for value in headers.all(trusted.header.header()) {
        let Ok(value) = std::str::from_utf8(value) else {
            return Some(peer);
        };
        hops.extend(value.split(',').map(|hop| match trusted.header {
            ForwardedHeader::XForwardedFor => Some(hop),
            ForwardedHeader::Forwarded => hop.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            }),
        }));
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // An unreadable hop ("unknown", an obfuscated name): nothing left of it is known, so
        // the last trusted proxy is as far back as the address can be followed.
        let Some(address) = hop.and_then(parse_address) else {
            return Some(client);
        };
        client = address;
        if !trusted.trusts(address) {
            break;
        }
    }
    Some(client)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let address = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })?;
    Some(address.to_canonical())
}
