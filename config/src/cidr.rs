//! `Cidr`: an IP network written `"192.0.2.0/24"`, `"2001:db8::/32"`, or a bare address (a
//! single host, /32 or /128), as used by `client_ip.trusted_proxies` and `limits.exempt`.
//!
//! Parsed once, when the file is read: a prefix length longer than the address, or host bits
//! set below the prefix (`"10.0.0.1/8"`, almost always a typo), is refused there with the key.
//! The proxy turns it into the limiter's `IpPrefix`, which does the matching; this type only
//! carries a validated `(address, length)` across the config boundary.

use core::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An IP network: an address with no host bits set, and a prefix length within its family
/// (0..=32 for IPv4, 0..=128 for IPv6). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is read
/// as the IPv4 address it carries, with an IPv4 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    Address(String),
    /// The part after `/` is not a number.
    Length(String),
    /// The prefix length is longer than the address (32 or 128).
    TooLong {
        /// The length written.
        len: u8,
        /// The family's maximum.
        max: u8,
    },
    /// Bits are set below the prefix length.
    HostBits {
        /// The network the text probably meant.
        network: String,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Address(a) => write!(
                f,
                "{a:?} is not an IP address like 192.0.2.1 or 2001:db8::1"
            ),
            CidrError::Length(l) => write!(f, "{l:?} is not a prefix length"),
            CidrError::TooLong { len, max } => {
                write!(f, "prefix length {len} is longer than the address ({max})")
            }
            CidrError::HostBits { network } => {
                write!(
                    f,
                    "host bits are set below the prefix: did you mean {network}?"
                )
            }
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network address.
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    /// The prefix length in the address's family.
    pub fn len(self) -> u8 {
        self.len
    }

    /// Whether the prefix length is 0 (the whole family).
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask32(u32::from(ip), self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.len) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| CidrError::Length(l.to_owned()))?,
        };
        if len > max {
            return Err(CidrError::TooLong { len, max });
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::from(mask32(u32::from(a), len).to_be_bytes()),
            IpAddr::V6(a) => IpAddr::from(mask128(u128::from(a), len).to_be_bytes()),
        };
        if network != addr {
            return Err(CidrError::HostBits {
                network: format!("{network}/{len}"),
            });
        }
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask32(bits: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        32.. => bits,
        n => bits & !(u32::MAX >> n),
    }
}

fn mask128(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        128.. => bits,
        n => bits & !(u128::MAX >> n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_hosts_parse() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert_eq!((c.addr(), c.len()), (ip("192.0.2.0"), 24));
        assert!(c.contains(ip("192.0.2.200")) && !c.contains(ip("192.0.3.1")));
        assert!(c.contains(ip("::ffff:192.0.2.9")));
        assert!(!c.contains(ip("2001:db8::1")));
        let h: Cidr = "2001:db8::7".parse().unwrap();
        assert_eq!(h.len(), 128);
        assert!(h.contains(ip("2001:db8::7")) && !h.contains(ip("2001:db8::8")));
        // An IPv4-mapped address is read as the IPv4 address it carries.
        let m: Cidr = "::ffff:10.0.0.0/8".parse().unwrap();
        assert_eq!(m.to_string(), "10.0.0.0/8");
        assert!(m.contains(ip("10.9.9.9")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.is_empty() && all.contains(ip("203.0.113.9")));
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits {
                network: "10.0.0.0/8".into()
            })
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::TooLong { len: 33, max: 32 })
        );
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Length(_))
        ));
        assert!(matches!("".parse::<Cidr>(), Err(CidrError::Address(_))));
    }
}
