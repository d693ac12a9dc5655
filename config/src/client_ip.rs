//! `[client_ip]`: who the client is when zgate sits behind a load balancer or a CDN.
//!
//! By default the client is the socket's peer. A listener with `proxy_protocol = true` takes
//! it from the PROXY protocol header its front end sends; with `header` set, a request whose
//! peer is inside `trusted_proxies` takes it from that forwarding header (the rightmost address
//! in it that is not itself a trusted proxy). Trusted proxies are never blocked.

use serde::Deserialize;

use crate::cidr::Cidr;
use crate::error::ConfigError;

/// `[client_ip]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIp {
    /// The front ends zgate trusts (`["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]`): only
    /// their forwarding headers decide a client, and when set, only they may connect to a
    /// `proxy_protocol` listener (others are refused at accept). They are measured as clients
    /// of their own (connection-level metrics) but never blocked and never a training sample.
    /// Default: none.
    pub trusted_proxies: Vec<Cidr>,
    /// The forwarding header that names the client of a request from a trusted proxy:
    /// `"x-forwarded-for"`, `"forwarded"` (RFC 7239) or `"x-real-ip"`. Needs
    /// `trusted_proxies`. Default: none (headers never decide who the client is).
    pub header: Option<ForwardHeader>,
}

/// A forwarding header that can name the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ForwardHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    #[serde(rename = "forwarded")]
    Forwarded,
    /// `X-Real-IP: client` (one address).
    #[serde(rename = "x-real-ip")]
    XRealIp,
}

impl ForwardHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardHeader::XForwardedFor => "x-forwarded-for",
            ForwardHeader::Forwarded => "forwarded",
            ForwardHeader::XRealIp => "x-real-ip",
        }
    }
}

impl ClientIp {
    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// A header without trusted proxies would let nobody set it, or (if it meant "everyone")
    /// let every client choose its identity: refused, naming the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(h) = self.header {
            if self.trusted_proxies.is_empty() {
                return Err(ConfigError::key(
                    "client_ip.header",
                    format!(
                        "{:?} needs client_ip.trusted_proxies: the proxies whose {} header is believed",
                        h.name(),
                        h.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}
