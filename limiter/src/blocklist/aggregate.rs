//! A full block list aggregates instead of refusing: an automatic block that finds the list
//! full (after purging expired entries) widens to the first of a ladder of wider prefixes whose
//! insertion frees room, by replacing every entry it covers. IPv4 widens to /24, /16, /8; IPv6
//! to /48, /32, /16. The aggregate lasts as long as the longest block it replaces, and keeps the
//! new block's reason and value. So a flood of blocked addresses from cheap address space
//! (millions of IPv6 /64s) costs at most `max_blocks` entries and still blocks, at the price of
//! blocking the neighbours of the blocked addresses; manual blocks (the admin API) are never
//! widened: they are refused when the list is full.

use super::{BlockEntry, BlockList, BlockListFull, Inner};
use crate::key::IpPrefix;
use crate::time::Nanos;

/// Raw prefix lengths (in the IPv6 space, where IPv4 is mapped at 96 + its length) an IPv4
/// block widens to, narrowest first.
const V4_LADDER: [u8; 3] = [96 + 24, 96 + 16, 96 + 8];
/// Raw prefix lengths an IPv6 block widens to, narrowest first.
const V6_LADDER: [u8; 3] = [48, 32, 16];

impl BlockList {
    /// Adds `entry` like `insert`; when the list is full, widens it (see the module docs).
    /// Returns the prefix actually blocked. Fails only when no rung of the ladder frees room.
    pub(crate) fn insert_aggregating(
        &self,
        entry: BlockEntry,
        now: Nanos,
    ) -> Result<IpPrefix, BlockListFull> {
        // Already blocked at least as long by a wider entry (an aggregate): nothing to add.
        if let Some(e) = self.lookup_bits(entry.prefix.bits(), now) {
            if e.prefix.raw_len() < entry.prefix.raw_len() && e.until >= entry.until {
                return Ok(e.prefix);
            }
        }
        if self.insert(entry, now).is_ok() {
            return Ok(entry.prefix);
        }
        let mut inner = self.write();
        let addr = entry.prefix.addr();
        let ladder = if addr.is_ipv4() { V4_LADDER } else { V6_LADDER };
        for len in ladder {
            if len >= entry.prefix.raw_len() {
                continue;
            }
            let wide = IpPrefix::of_bits(super::to_bits(addr).0, len);
            if let Some(e) = inner.map.get_mut(&wide) {
                e.until = e.until.max(entry.until);
                return Ok(wide);
            }
            let until = Self::take_covered(&mut inner, wide);
            let Some(until) = until else { continue };
            let aggregate = BlockEntry {
                prefix: wide,
                until: until.max(entry.until),
                ..entry
            };
            Self::put(&mut inner, aggregate);
            self.len
                .store(inner.map.len(), std::sync::atomic::Ordering::Relaxed);
            return Ok(wide);
        }
        Err(BlockListFull)
    }

    /// Removes every entry inside `wide` (strictly narrower); returns the latest expiry among
    /// them, or `None` if there were none (nothing would be freed).
    fn take_covered(inner: &mut Inner, wide: IpPrefix) -> Option<Nanos> {
        let covered: Vec<IpPrefix> = inner
            .map
            .keys()
            .filter(|p| p.raw_len() > wide.raw_len())
            .filter(|p| IpPrefix::of_bits(p.bits(), wide.raw_len()) == wide)
            .copied()
            .collect();
        let mut until = None;
        for p in covered {
            if let Some(e) = inner.map.remove(&p) {
                until = Some(until.map_or(e.until, |u: Nanos| u.max(e.until)));
                Self::forget_len(inner, p.raw_len());
            }
        }
        until
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn host(s: &str, until: u64) -> BlockEntry {
        let ip: IpAddr = s.parse().unwrap();
        BlockEntry {
            prefix: IpPrefix::host(ip),
            until: Nanos(until),
            reason: None,
            value: 0,
            z: 0.0,
        }
    }

    #[test]
    fn a_full_list_widens_ipv4_to_the_slash_24() {
        let b = BlockList::new(2);
        b.insert(host("10.0.0.1", 100), Nanos(0)).unwrap();
        b.insert(host("10.0.0.2", 300), Nanos(0)).unwrap();
        assert_eq!(
            b.insert(host("10.0.0.3", 200), Nanos(0)),
            Err(BlockListFull)
        );
        let p = b
            .insert_aggregating(host("10.0.0.3", 200), Nanos(0))
            .unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/24");
        assert_eq!(b.len(), 1);
        for a in ["10.0.0.1", "10.0.0.3", "10.0.0.200"] {
            let e = b.lookup(a.parse().unwrap(), Nanos(250));
            assert_eq!(e.map(|e| e.prefix), Some(p), "{a}");
        }
        assert!(b.lookup("10.0.1.1".parse().unwrap(), Nanos(0)).is_none());
        // A shorter block inside the aggregate adds nothing; another /24 gets its own room.
        assert_eq!(b.insert_aggregating(host("10.0.0.9", 250), Nanos(0)), Ok(p));
        assert_eq!(b.len(), 1);
        b.insert_aggregating(host("10.0.7.1", 100), Nanos(0))
            .unwrap();
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn many_ipv6_blocks_stay_bounded() {
        let b = BlockList::new(256);
        let mut refused = 0;
        for i in 0u64..200_000 {
            // Distinct /64s spread over a few /32s.
            let a = format!("2001:db8:{:x}:{:x}::1", (i >> 16) & 0x7, i & 0xffff);
            let ip: IpAddr = a.parse().unwrap();
            let e = BlockEntry {
                prefix: IpPrefix::new(ip, 64).unwrap(),
                ..host("::1", 1_000)
            };
            if b.insert_aggregating(e, Nanos(0)).is_err() {
                refused += 1;
            }
            if i % 19_997 == 0 {
                assert!(b.lookup(ip, Nanos(1)).is_some(), "{a} not blocked");
            }
        }
        assert_eq!(refused, 0);
        assert!(b.len() <= 256, "{}", b.len());
    }
}
