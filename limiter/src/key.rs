//! Client identity: an IPv4 address, or an IPv6 address aggregated to a prefix.
//!
//! Both are stored as one `u128` in the IPv6 address space: an IPv4 address `a.b.c.d` is the
//! IPv4-mapped address `::ffff:a.b.c.d`, so an IPv4 /n prefix is a /(96 + n) prefix. An IPv6
//! address that is itself IPv4-mapped is treated as the IPv4 address it carries.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix length of an IPv4 address inside the IPv4-mapped IPv6 space.
const V4_BASE: u8 = 96;
/// The `::ffff:0:0/96` prefix of IPv4-mapped addresses.
const V4_MAPPED: u128 = 0xffff_u128 << 32;

/// The identity of one tracked client: an IPv4 address, or an IPv6 network of the configured
/// prefix length (`LimiterConfig::ipv6_prefix`, default /64).
///
/// The `u128` is kept as two `u64` halves (high, low): the same 16 bytes, aligned to 8 instead
/// of 16, so a client table entry (key and `Arc`) takes 24 bytes instead of 32 (see
/// `benches/memory.rs`). It hashes and prints (`Debug`) as the `u128`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientKey([u64; 2]);

impl ClientKey {
    /// The client that `ip` belongs to: `ip` itself for IPv4 (and IPv4-mapped IPv6), else `ip`
    /// masked to `ipv6_prefix` bits (clamped to 0..=128).
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        let (bits, len) = to_bits(ip);
        if len == 128 && is_v4(bits) {
            return ClientKey::of(bits);
        }
        ClientKey::of(mask(bits, ipv6_prefix.min(128)))
    }

    fn of(bits: u128) -> ClientKey {
        // The halves of a u128: truncation is the intent.
        ClientKey([(bits >> 64) as u64, bits as u64])
    }

    fn bits(self) -> u128 {
        u128::from(self.0[0]) << 64 | u128::from(self.0[1])
    }

    /// The client as a network prefix: IPv4 /32, or IPv6 /`ipv6_prefix`.
    pub fn prefix(self, ipv6_prefix: u8) -> IpPrefix {
        let bits = self.bits();
        let len = if is_v4(bits) {
            128
        } else {
            ipv6_prefix.min(128)
        };
        IpPrefix { bits, len }
    }

    /// The client's (network) address: the IPv4 address, or the first address of the IPv6
    /// network.
    pub fn addr(self) -> IpAddr {
        from_bits(self.bits())
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientKey").field(&self.bits()).finish()
    }
}

impl core::hash::Hash for ClientKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.bits());
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

/// An IP network: an address and a prefix length, as used by the block list.
///
/// Construct with [`IpPrefix::new`] (IPv4 lengths are 0..=32, IPv6 lengths 0..=128) or
/// [`IpPrefix::host`]. Host bits are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    bits: u128,
    /// Length in the IPv6 space (IPv4 /n is stored as 96 + n).
    len: u8,
}

impl IpPrefix {
    /// The network `addr/len`. `None` if `len` is longer than the address (32 for IPv4, 128 for
    /// IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        let (bits, base) = to_bits(addr);
        let full = if base == 128 && is_v4(bits) {
            V4_BASE
        } else {
            0
        };
        let max = 128 - full;
        if len > max {
            return None;
        }
        let len = full + len;
        Some(IpPrefix {
            bits: mask(bits, len),
            len,
        })
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpPrefix {
        let (bits, _) = to_bits(addr);
        IpPrefix { bits, len: 128 }
    }

    /// The network address.
    pub fn addr(self) -> IpAddr {
        from_bits(self.bits)
    }

    /// The prefix length in the address's own family: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn len(self) -> u8 {
        if self.len >= V4_BASE && is_v4(self.bits) {
            self.len - V4_BASE
        } else {
            self.len
        }
    }

    /// Whether the prefix has length 0 in its family (matches all of IPv4, or all addresses).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Whether `ip` is inside this network.
    pub fn contains(self, ip: IpAddr) -> bool {
        let (bits, _) = to_bits(ip);
        mask(bits, self.len) == self.bits
    }

    /// Whether every address of `other` is inside this network.
    pub fn covers(self, other: IpPrefix) -> bool {
        self.len <= other.len && mask(other.bits, self.len) == self.bits
    }

    pub(crate) fn raw_len(self) -> u8 {
        self.len
    }

    /// The network's bits in the IPv6 space (IPv4 mapped).
    pub(crate) fn bits(self) -> u128 {
        self.bits
    }

    /// The prefix of length `raw_len` (IPv6 space) containing the address `bits`.
    pub(crate) fn of_bits(bits: u128, raw_len: u8) -> IpPrefix {
        IpPrefix {
            bits: mask(bits, raw_len),
            len: raw_len,
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len())
    }
}

/// The address in the IPv6 space (IPv4 mapped), and 128.
pub(crate) fn to_bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (V4_MAPPED | u128::from(u32::from(v4)), 128),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (V4_MAPPED | u128::from(u32::from(v4)), 128),
            None => (u128::from(v6), 128),
        },
    }
}

fn from_bits(bits: u128) -> IpAddr {
    if is_v4(bits) {
        // The low 32 bits are the IPv4 address; truncation is the intent.
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

fn is_v4(bits: u128) -> bool {
    bits >> 32 == V4_MAPPED >> 32
}

fn mask(bits: u128, len: u8) -> u128 {
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
    fn ipv4_is_its_own_client() {
        let a = ClientKey::new(ip("10.0.0.1"), 64);
        assert_eq!(a.addr(), ip("10.0.0.1"));
        assert_ne!(a, ClientKey::new(ip("10.0.0.2"), 64));
        assert_eq!(a, ClientKey::new(ip("::ffff:10.0.0.1"), 64));
        assert_eq!(a.prefix(64).to_string(), "10.0.0.1/32");
        // Printed and hashed as the u128 of `::ffff:10.0.0.1`.
        let bits = 0xffff_0a00_0001u128;
        assert_eq!(format!("{a:?}"), format!("ClientKey({bits})"));
        let hash = |h: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            h(&mut s);
            std::hash::Hasher::finish(&s)
        };
        assert_eq!(
            hash(&|s| std::hash::Hash::hash(&a, s)),
            hash(&|s| std::hash::Hash::hash(&bits, s))
        );
    }

    #[test]
    fn ipv6_is_aggregated_to_the_prefix() {
        let a = ClientKey::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ClientKey::new(ip("2001:db8:1:2:bbbb::2"), 64);
        let c = ClientKey::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.addr(), ip("2001:db8:1:2::"));
        assert_eq!(a.prefix(64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::new(ip("2001:db8::1"), 128).addr(),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        let p = IpPrefix::new(ip("192.168.7.9"), 16).unwrap();
        assert_eq!(p.to_string(), "192.168.0.0/16");
        assert!(p.contains(ip("192.168.200.1")));
        assert!(!p.contains(ip("192.169.0.1")));
        assert!(!p.contains(ip("2001:db8::1")));
        assert!(IpPrefix::new(ip("1.2.3.4"), 33).is_none());
        let p6 = IpPrefix::new(ip("2001:db8::"), 32).unwrap();
        assert!(p6.contains(ip("2001:db8:ffff::1")));
        assert!(!p6.contains(ip("10.0.0.1")));
        assert_eq!(IpPrefix::host(ip("1.2.3.4")).len(), 32);
        assert!(IpPrefix::new(ip("0.0.0.0"), 0).unwrap().is_empty());
        let p16 = IpPrefix::new(ip("192.168.0.0"), 16).unwrap();
        assert!(p16.covers(IpPrefix::new(ip("192.168.4.0"), 24).unwrap()));
        assert!(p16.covers(p16));
        assert!(!p16.covers(IpPrefix::new(ip("192.0.0.0"), 8).unwrap()));
        assert!(!p16.covers(IpPrefix::host(ip("2001:db8::1"))));
        assert!(p6.covers(IpPrefix::host(ip("2001:db8::1"))));
    }
}
