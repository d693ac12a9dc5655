//! The block list: IP addresses and prefixes blocked until a time.
//!
//! Bounded (`max_blocks`). Lookups take a read lock and one hash lookup per prefix length in use
//! (usually one or two: /32 and the IPv6 client prefix); an empty list costs one relaxed load.
//! Expired entries are ignored by lookups and removed by [`BlockList::purge`] (run from
//! `Limiter::tick`, and when the list is full). A full list aggregates automatic blocks into
//! wider prefixes (see `aggregate`).

mod aggregate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::key::{to_bits, IpPrefix};
use crate::time::Nanos;
use crate::verdict::Reason;

/// One block list entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockEntry {
    /// The blocked network (a client's address, or a manual prefix).
    pub prefix: IpPrefix,
    /// Blocked while `now < until`.
    pub until: Nanos,
    /// What blocked it; `None` for a manual block.
    pub reason: Option<Reason>,
    /// The value that fired, in the metric's or guard's unit (0 for a manual block).
    pub value: u64,
    /// The z-score that fired (0.0 for a guard or a manual block).
    pub z: f64,
}

/// The block list is at `max_blocks` entries, none expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockListFull;

impl core::fmt::Display for BlockListFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("block list full (max_blocks entries, none expired)")
    }
}

impl std::error::Error for BlockListFull {}

/// Why a manual block was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The block list is at `max_blocks` entries, none expired.
    Full(BlockListFull),
    /// Every address of the prefix is exempt: the block would never apply.
    Exempt {
        /// The prefix asked for.
        prefix: IpPrefix,
        /// The exempt prefix that covers it.
        exempt: IpPrefix,
    },
}

impl From<BlockListFull> for BlockError {
    fn from(e: BlockListFull) -> BlockError {
        BlockError::Full(e)
    }
}

impl core::fmt::Display for BlockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlockError::Full(e) => e.fmt(f),
            BlockError::Exempt { prefix, exempt } => write!(
                f,
                "{prefix} is exempt (inside {exempt}): exempt clients are never blocked"
            ),
        }
    }
}

impl std::error::Error for BlockError {}

pub(crate) struct BlockList {
    inner: RwLock<Inner>,
    /// Entries, expired or not: 0 lets lookups skip the lock.
    len: AtomicUsize,
    max: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<IpPrefix, BlockEntry>,
    /// Entries per raw prefix length (IPv6 space, 0..=128).
    per_len: HashMap<u8, usize>,
    /// Raw prefix lengths in use, longest first.
    lens: Vec<u8>,
}

impl BlockList {
    pub(crate) fn new(max: usize) -> BlockList {
        BlockList {
            inner: RwLock::default(),
            len: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// Adds `entry`, or extends an existing entry for the same prefix (the later expiry and the
    /// new reason win).
    pub(crate) fn insert(&self, entry: BlockEntry, now: Nanos) -> Result<(), BlockListFull> {
        let mut inner = self.write();
        if let Some(e) = inner.map.get_mut(&entry.prefix) {
            let until = e.until.max(entry.until);
            *e = BlockEntry { until, ..entry };
            return Ok(());
        }
        if inner.map.len() >= self.max {
            Self::purge_locked(&mut inner, now);
            if inner.map.len() >= self.max {
                self.len.store(inner.map.len(), Ordering::Relaxed);
                return Err(BlockListFull);
            }
        }
        Self::put(&mut inner, entry);
        self.len.store(inner.map.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Inserts a new entry (its prefix is not in the map) and counts its length.
    fn put(inner: &mut Inner, entry: BlockEntry) {
        let len = entry.prefix.raw_len();
        inner.map.insert(entry.prefix, entry);
        *inner.per_len.entry(len).or_insert(0) += 1;
        if !inner.lens.contains(&len) {
            inner.lens.push(len);
            inner.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Removes the entry for exactly `prefix`; returns it.
    pub(crate) fn remove(&self, prefix: IpPrefix) -> Option<BlockEntry> {
        let mut inner = self.write();
        let e = inner.map.remove(&prefix)?;
        Self::forget_len(&mut inner, prefix.raw_len());
        self.len.store(inner.map.len(), Ordering::Relaxed);
        Some(e)
    }

    /// The unexpired entry covering `ip` (the longest prefix first), if any.
    #[inline]
    pub(crate) fn lookup(&self, ip: IpAddr, now: Nanos) -> Option<BlockEntry> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lookup_bits(to_bits(ip).0, now)
    }

    fn lookup_bits(&self, bits: u128, now: Nanos) -> Option<BlockEntry> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let inner = self.read();
        inner.lens.iter().find_map(|&len| {
            let e = inner.map.get(&IpPrefix::of_bits(bits, len))?;
            (now < e.until).then_some(*e)
        })
    }

    /// Removes expired entries; returns how many.
    pub(crate) fn purge(&self, now: Nanos) -> usize {
        if self.len.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut inner = self.write();
        let n = Self::purge_locked(&mut inner, now);
        self.len.store(inner.map.len(), Ordering::Relaxed);
        n
    }

    /// Unexpired entries.
    pub(crate) fn list(&self, now: Nanos) -> Vec<BlockEntry> {
        let inner = self.read();
        inner
            .map
            .values()
            .filter(|e| now < e.until)
            .copied()
            .collect()
    }

    /// Entries, expired or not yet purged.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn purge_locked(inner: &mut Inner, now: Nanos) -> usize {
        let expired: Vec<IpPrefix> = inner
            .map
            .values()
            .filter(|e| e.until <= now)
            .map(|e| e.prefix)
            .collect();
        for p in &expired {
            inner.map.remove(p);
            Self::forget_len(inner, p.raw_len());
        }
        expired.len()
    }

    fn forget_len(inner: &mut Inner, len: u8) {
        if let Some(n) = inner.per_len.get_mut(&len) {
            *n -= 1;
            if *n == 0 {
                inner.per_len.remove(&len);
                inner.lens.retain(|&l| l != len);
            }
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every write leaves `Inner` consistent before it can panic (only allocation can), so a
        // poisoned lock is safe to reuse.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        // See `read`.
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(p: IpPrefix, until: u64) -> BlockEntry {
        BlockEntry {
            prefix: p,
            until: Nanos(until),
            reason: None,
            value: 0,
            z: 0.0,
        }
    }

    #[test]
    fn hosts_and_prefixes_block_until_expiry() {
        let b = BlockList::new(10);
        assert_eq!(b.lookup(ip("10.0.0.1"), Nanos(0)), None);
        b.insert(entry(IpPrefix::host(ip("10.0.0.1")), 100), Nanos(0))
            .unwrap();
        b.insert(
            entry(IpPrefix::new(ip("2001:db8::"), 32).unwrap(), 50),
            Nanos(0),
        )
        .unwrap();
        assert!(b.lookup(ip("10.0.0.1"), Nanos(99)).is_some());
        assert!(b.lookup(ip("10.0.0.1"), Nanos(100)).is_none());
        assert!(b.lookup(ip("10.0.0.2"), Nanos(0)).is_none());
        assert!(b.lookup(ip("2001:db8:1::7"), Nanos(49)).is_some());
        assert!(b.lookup(ip("2001:db9::7"), Nanos(49)).is_none());
        assert_eq!(b.list(Nanos(60)).len(), 1);
        assert_eq!(b.purge(Nanos(60)), 1);
        assert_eq!(b.len(), 1);
        assert!(b.remove(IpPrefix::host(ip("10.0.0.1"))).is_some());
        assert_eq!(b.len(), 0);
        assert!(b.lookup(ip("10.0.0.1"), Nanos(0)).is_none());
    }

    #[test]
    fn bounded_and_purges_when_full() {
        let b = BlockList::new(2);
        b.insert(entry(IpPrefix::host(ip("1.1.1.1")), 10), Nanos(0))
            .unwrap();
        b.insert(entry(IpPrefix::host(ip("1.1.1.2")), 100), Nanos(0))
            .unwrap();
        let third = entry(IpPrefix::host(ip("1.1.1.3")), 100);
        assert_eq!(b.insert(third, Nanos(5)), Err(BlockListFull));
        // Re-blocking an existing entry is not an insertion; it extends it.
        b.insert(entry(IpPrefix::host(ip("1.1.1.2")), 200), Nanos(5))
            .unwrap();
        assert_eq!(
            b.lookup(ip("1.1.1.2"), Nanos(150)).map(|e| e.until),
            Some(Nanos(200))
        );
        // Once 1.1.1.1 expired, it makes room.
        b.insert(third, Nanos(10)).unwrap();
        assert!(b.lookup(ip("1.1.1.3"), Nanos(10)).is_some());
        assert_eq!(b.len(), 2);
    }
}
