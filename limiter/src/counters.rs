//! Counters of everything the limiter decided, readable without locks.
//!
//! Observations are counted on every event, so they are sharded: each thread increments its own
//! cache-padded slot (chosen once per thread), and a snapshot sums the slots. Decisions (blocks,
//! would-blocks, evictions) are rare and use plain shared atomics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use zgate_training::Metric;

use crate::verdict::{Guard, Reason};

/// Number of observation slots; threads beyond this share slots (still exact, only slower).
const SLOTS: usize = 32;

/// The next slot to hand to a thread.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// A point-in-time copy of the limiter's counters. Per-metric arrays are indexed by
/// [`Metric::index`], per-guard arrays by [`Guard::index`]. All counts since the limiter was
/// created; they never decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Observations of each metric (events in training, defence or monitor mode).
    pub observations: [u64; Metric::COUNT],
    /// `Block` verdicts per metric (defence mode).
    pub blocked: [u64; Metric::COUNT],
    /// `WouldBlock` verdicts per metric (monitor mode).
    pub would_block: [u64; Metric::COUNT],
    /// `Block` verdicts per static guard, including [`Guard::Blocked`] (an event of a client
    /// already blocked) and [`Guard::TableFull`] (a new client refused).
    pub guard_blocked: [u64; Guard::COUNT],
    /// Connections opened (all modes, refused ones included).
    pub connections: u64,
    /// Clients evicted to make room for a new one.
    pub evictions: u64,
    /// Idle clients removed by `tick`.
    pub expired: u64,
    /// Connections admitted untracked because the table was full of clients with open
    /// connections (static guards only, no scoring, no training samples).
    pub untracked: u64,
    /// Automatic blocks that did not fit in the block list (the client is still blocked in the
    /// table).
    pub blocklist_full: u64,
    /// Clients in the table now.
    pub clients: usize,
    /// Block list entries now (expired ones until purged included).
    pub blocks: usize,
}

impl CountersSnapshot {
    /// Observations of `m` that were neither blocked nor would-block.
    pub fn allowed(&self, m: Metric) -> u64 {
        let i = m.index();
        self.observations[i]
            .saturating_sub(self.blocked[i])
            .saturating_sub(self.would_block[i])
    }
}

pub(crate) struct Counters {
    observations: Box<[CachePadded<[AtomicU64; Metric::COUNT]>]>,
    blocked: [AtomicU64; Metric::COUNT],
    would_block: [AtomicU64; Metric::COUNT],
    guard_blocked: [AtomicU64; Guard::COUNT],
    connections: CachePadded<AtomicU64>,
    pub(crate) evictions: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) untracked: AtomicU64,
    pub(crate) blocklist_full: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            observations: (0..SLOTS)
                .map(|_| CachePadded::new([const { AtomicU64::new(0) }; Metric::COUNT]))
                .collect(),
            blocked: [const { AtomicU64::new(0) }; Metric::COUNT],
            would_block: [const { AtomicU64::new(0) }; Metric::COUNT],
            guard_blocked: [const { AtomicU64::new(0) }; Guard::COUNT],
            connections: CachePadded::new(AtomicU64::new(0)),
            evictions: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            blocklist_full: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn observed(&self, m: Metric) {
        let slot = SLOT.with(|s| *s);
        // `slot < SLOTS == observations.len()` by construction of `SLOT`.
        if let Some(s) = self.observations.get(slot) {
            s[m.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn blocked(&self, reason: Reason) {
        match reason {
            Reason::Metric(m) => &self.blocked[m.index()],
            Reason::Guard(g) => &self.guard_blocked[g.index()],
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn would_block(&self, m: Metric) {
        self.would_block[m.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, clients: usize, blocks: usize) -> CountersSnapshot {
        let r = Ordering::Relaxed;
        let mut observations = [0u64; Metric::COUNT];
        for slot in self.observations.iter() {
            for (o, a) in observations.iter_mut().zip(slot.iter()) {
                *o += a.load(r);
            }
        }
        CountersSnapshot {
            observations,
            blocked: self.blocked.each_ref().map(|a| a.load(r)),
            would_block: self.would_block.each_ref().map(|a| a.load(r)),
            guard_blocked: self.guard_blocked.each_ref().map(|a| a.load(r)),
            connections: self.connections.load(r),
            evictions: self.evictions.load(r),
            expired: self.expired.load(r),
            untracked: self.untracked.load(r),
            blocklist_full: self.blocklist_full.load(r),
            clients,
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_sum_exactly() {
        let c = Counters::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.observed(Metric::Requests);
                    }
                });
            }
        });
        c.blocked(Reason::Metric(Metric::Requests));
        c.would_block(Metric::Requests);
        c.blocked(Reason::Guard(Guard::Ping));
        let s = c.snapshot(7, 1);
        assert_eq!(s.observations[Metric::Requests.index()], 4000);
        assert_eq!(s.allowed(Metric::Requests), 3998);
        assert_eq!(s.guard_blocked[Guard::Ping.index()], 1);
        assert_eq!(s.clients, 7);
    }
}
