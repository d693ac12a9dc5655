//! Manual blocks that are too wide to take on a single request: they need `"force": true`.
//!
//! A typo or a forged request must not cut every client off. An IPv4 prefix shorter than /16
//! (65536 addresses), an IPv6 prefix shorter than /32 (a whole provider allocation), and any
//! IPv6 prefix that covers the IPv4-mapped space (`::ffff:0:0/96`, where zgate keeps IPv4
//! clients, so `::/0` or `::/32` block every IPv4 client too) are refused without it.

use std::net::{IpAddr, Ipv4Addr};

use zgate_limiter::IpPrefix;

/// Shortest IPv4 prefix a manual block takes without `force`, in bits.
pub(crate) const MIN_V4_LEN: u8 = 16;
/// Shortest IPv6 prefix a manual block takes without `force`, in bits.
pub(crate) const MIN_V6_LEN: u8 = 32;

/// Why `prefix` needs `force`, or `None` if it does not.
pub(crate) fn too_wide(prefix: IpPrefix) -> Option<String> {
    let len = prefix.len();
    match prefix.addr() {
        IpAddr::V4(_) if len < MIN_V4_LEN => Some(format!(
            "{prefix} is wider than /{MIN_V4_LEN} ({} addresses)",
            1u64 << (32 - len)
        )),
        IpAddr::V4(_) => None,
        IpAddr::V6(_) if prefix.contains(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) => Some(format!(
            "{prefix} covers the IPv4-mapped space ::ffff:0:0/96, so every IPv4 client"
        )),
        IpAddr::V6(_) if len < MIN_V6_LEN => Some(format!("{prefix} is wider than /{MIN_V6_LEN}")),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> IpPrefix {
        let (a, l) = text.split_once('/').unwrap();
        IpPrefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    #[test]
    fn wide_prefixes_need_force() {
        for ok in [
            "192.0.2.1/32",
            "10.1.0.0/16",
            "2001:db8::/32",
            "2001:db8::/64",
            "::1/128",
        ] {
            assert_eq!(too_wide(p(ok)), None, "{ok}");
        }
        for (wide, needle) in [
            ("10.0.0.0/15", "131072 addresses"),
            ("0.0.0.0/0", "wider than /16"),
            ("2001::/16", "wider than /32"),
            ("::/0", "IPv4-mapped"),
            ("::/32", "IPv4-mapped"),
            ("::/64", "IPv4-mapped"),
        ] {
            let why = too_wide(p(wide)).unwrap_or_default();
            assert!(why.contains(needle), "{wide}: {why}");
        }
    }
}
