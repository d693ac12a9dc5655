//! Who a request's client is (DESIGN.md §6a), as the proxy decides it from `[client_ip]`:
//! the connection's client (its socket peer, or the address of its PROXY protocol header),
//! unless that client is a trusted proxy and the request carries the configured forwarding
//! header, which then names the client (see `forwarded.rs`).
//!
//! Built from the config at start and on every reload; a connection takes the one in force
//! when it starts.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use zgate_config::{Cidr, ClientIp, ForwardHeader};
use zgate_limiter::IpPrefix;

use super::forwarded;

/// `[client_ip]`, typed for the hot path.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `client_ip.trusted_proxies`.
    trusted: Vec<IpPrefix>,
    /// `client_ip.header`, and its name.
    header: Option<(ForwardHeader, HeaderName)>,
}

impl Identity {
    /// The identity rules of `[client_ip]`.
    pub fn new(c: &ClientIp) -> Identity {
        Identity {
            trusted: prefixes(&c.trusted_proxies),
            header: c.header.map(|h| (h, HeaderName::from_static(h.name()))),
        }
    }

    /// Whether `ip` is a trusted proxy.
    #[inline]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.iter().any(|p| p.contains(ip))
    }

    /// Whether `trusted_proxies` is set (then only they may connect to a `proxy_protocol`
    /// listener).
    pub fn has_trusted(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// The trusted proxies, as networks (never blocked: the limiter treats them as exempt).
    pub fn trusted(&self) -> &[IpPrefix] {
        &self.trusted
    }

    /// Whether requests of a connection from `client` may be attributed by their forwarding
    /// header: a header is configured and `client` is a trusted proxy.
    pub fn reads_header_of(&self, client: IpAddr) -> bool {
        self.header.is_some() && self.is_trusted(client)
    }

    /// The forwarding header read from trusted proxies, if one is configured.
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.header.as_ref().map(|(_, name)| name)
    }

    /// The client a request's forwarding header names, for a connection whose client
    /// [`Identity::reads_header_of`]; `None` when the header is absent or names nobody usable
    /// (the connection's client then stays the request's).
    pub fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let (kind, name) = self.header.as_ref()?;
        let values = headers.get_all(name).iter().map(|v| v.as_bytes());
        forwarded::client(*kind, values, |ip| self.is_trusted(ip))
    }
}

/// Config networks as the limiter's prefixes (a validated `Cidr` always fits).
pub fn prefixes(cidrs: &[Cidr]) -> Vec<IpPrefix> {
    cidrs
        .iter()
        .filter_map(|c| IpPrefix::new(c.addr(), c.len()))
        .collect()
}

/// What the limiter must never block: `limits.exempt` and the trusted proxies.
pub fn exempt(exempt: &[Cidr], identity: &Identity) -> Vec<IpPrefix> {
    let mut all = prefixes(exempt);
    all.extend_from_slice(identity.trusted());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn identity(text: &str) -> Identity {
        let c = zgate_config::Config::parse(
            &format!(
                "[[listener]]\naddr = \"127.0.0.1:1\"\n[[backend]]\naddr = \"a:1\"\n[client_ip]\n{text}"
            ),
            std::path::Path::new("/"),
        )
        .unwrap();
        Identity::new(&c.client_ip)
    }

    #[test]
    fn only_a_trusted_peer_with_a_configured_header_is_read() {
        let id = identity("trusted_proxies = [\"10.0.0.0/8\"]\nheader = \"x-real-ip\"");
        assert!(id.reads_header_of(ip("10.1.1.1")));
        assert!(!id.reads_header_of(ip("192.0.2.1")));
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        assert_eq!(id.forwarded_client(&h), Some(ip("203.0.113.9")));
        assert_eq!(id.forwarded_client(&HeaderMap::new()), None);

        let none = identity("trusted_proxies = [\"10.0.0.0/8\"]");
        assert!(none.is_trusted(ip("10.1.1.1")) && !none.reads_header_of(ip("10.1.1.1")));
        assert_eq!(none.forwarded_client(&h), None);
        let empty = Identity::default();
        assert!(!empty.has_trusted() && !empty.is_trusted(ip("10.1.1.1")));
    }

    #[test]
    fn trusted_proxies_are_exempt_with_limits_exempt() {
        let id = identity("trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]");
        let e = exempt(&["192.0.2.0/24".parse().unwrap()], &id);
        let shown: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32"]);
    }
}
