//! One shard: the six metrics' moments behind a sequence lock, on its own cache lines, then the
//! six metrics' histogram counts.
//!
//! Writers store whole values (load, add, store; never a read-modify-write instruction) between
//! two increments of the sequence number; a reader retries until it saw an even, unchanged
//! sequence around its loads. This is the classic seqlock of Boehm, "Can seqlocks get along with
//! programming language memory models?" (2012): writer `seq=odd; fence(Release); data...;
//! seq=even (Release)`, reader `seq (Acquire); data...; fence(Acquire); seq`.
//!
//! The histogram counts are written in the same way, inside the same write section (so writers
//! sharing the overflow shard stay serialised), but read without the retry: a copy of 3558
//! counts would rarely finish between two writes of a busy shard. Each count is read whole (one
//! atomic word) after the moments' acquiring read, so a reader sees every update written before
//! the moments it copied, and possibly some later ones: exact when the writers are idle, off by
//! the updates in flight during a live read.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use crate::bucket::BUCKETS;
use crate::histogram::Histogram;
use crate::metric::Metric;
use crate::moments::Moments;

/// Moments and histograms of all metrics in one shard. The moments with the sequence number
/// fill the first 248 bytes (four cache lines, all a write of the moments touches); then come 6
/// x 593 counts of 8 bytes (28,464 bytes). With `CachePadded` around it, a shard shares no cache
/// line with another shard.
///
/// `repr(C)` keeps that order: left to itself, the compiler put `seq` after the histograms, a
/// cache line away from the moments, which cost every write one more line.
#[repr(C)]
pub(crate) struct Shard {
    seq: AtomicU64,
    cells: [Cells; Metric::COUNT],
    /// Per metric, the wrapping count of each histogram bucket.
    buckets: [[AtomicU64; BUCKETS]; Metric::COUNT],
}

/// One metric's wrapping moments; the 128-bit sums are stored as (low, high) 64-bit halves.
#[derive(Default)]
struct Cells {
    n: AtomicU64,
    s1: [AtomicU64; 2],
    s2: [AtomicU64; 2],
}

/// What one update does to a metric: wrapping deltas of `n`, `S1`, `S2`, and the histogram
/// bucket that loses a count and the one that gains it ([`NO_BUCKET`] for none; nothing moves
/// when both are the same).
#[derive(Clone, Copy)]
pub(crate) struct Delta {
    pub(crate) dn: u64,
    pub(crate) d1: u128,
    pub(crate) d2: u128,
    pub(crate) leave: usize,
    pub(crate) enter: usize,
}

/// The bucket index meaning "no bucket" in a [`Delta`]: one past the last.
pub(crate) const NO_BUCKET: usize = BUCKETS;

impl Shard {
    /// Applies `delta` to `metric`. The caller must be the only writer of this shard (it holds
    /// the shard's claim).
    #[inline]
    pub(crate) fn write_exclusive(&self, metric: Metric, delta: Delta) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.apply(metric, delta);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Applies `delta` to `metric` when other writers may write this shard at the same time:
    /// the sequence number doubles as a spin lock (taken by moving it from even to odd).
    pub(crate) fn write_shared(&self, metric: Metric, delta: Delta) {
        let mut spins = 0u32;
        let seq = loop {
            let seq = self.seq.load(Ordering::Relaxed);
            if seq & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(
                        seq,
                        seq.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                break seq;
            }
            backoff(&mut spins);
        };
        fence(Ordering::Release);
        self.apply(metric, delta);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    #[inline]
    fn apply(&self, metric: Metric, delta: Delta) {
        let i = metric.index();
        self.cells[i].apply(delta);
        if delta.leave != delta.enter {
            let counts = &self.buckets[i];
            // `get` skips NO_BUCKET (one past the end).
            if let Some(c) = counts.get(delta.leave) {
                c.store(c.load(Ordering::Relaxed).wrapping_sub(1), Ordering::Relaxed);
            }
            if let Some(c) = counts.get(delta.enter) {
                c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            }
        }
    }

    /// Adds this shard's histogram counts to `totals` (per metric, in [`Metric::ALL`] order).
    /// Not a consistent snapshot while writers are active: call it after [`Shard::read`], see
    /// the module docs.
    pub(crate) fn add_histograms_to(&self, totals: &mut [Histogram; Metric::COUNT]) {
        for (total, counts) in totals.iter_mut().zip(self.buckets.iter()) {
            total.add_counts(counts.iter().map(|c| c.load(Ordering::Relaxed)));
        }
    }

    /// A consistent copy of all six metrics' moments (retries while a writer is mid-update).
    pub(crate) fn read(&self) -> [Moments; Metric::COUNT] {
        let mut spins = 0u32;
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let copy = self.cells.each_ref().map(Cells::load);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return copy;
                }
            }
            backoff(&mut spins);
        }
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            seq: AtomicU64::new(0),
            cells: Default::default(),
            buckets: [const { [const { AtomicU64::new(0) }; BUCKETS] }; Metric::COUNT],
        }
    }
}

impl Cells {
    #[inline]
    fn apply(&self, delta: Delta) {
        if delta.dn != 0 {
            let n = self.n.load(Ordering::Relaxed);
            self.n.store(n.wrapping_add(delta.dn), Ordering::Relaxed);
        }
        store128(&self.s1, load128(&self.s1).wrapping_add(delta.d1));
        store128(&self.s2, load128(&self.s2).wrapping_add(delta.d2));
    }

    fn load(&self) -> Moments {
        Moments {
            n: self.n.load(Ordering::Relaxed),
            s1: load128(&self.s1),
            s2: load128(&self.s2),
        }
    }
}

#[inline]
fn load128(halves: &[AtomicU64; 2]) -> u128 {
    let lo = halves[0].load(Ordering::Relaxed);
    let hi = halves[1].load(Ordering::Relaxed);
    u128::from(lo) | (u128::from(hi) << 64)
}

#[inline]
fn store128(halves: &[AtomicU64; 2], v: u128) {
    halves[0].store(v as u64, Ordering::Relaxed);
    halves[1].store((v >> 64) as u64, Ordering::Relaxed);
}

/// Spins a little, then yields the CPU: the other side is a writer in the middle of a handful of
/// stores, unless it was preempted there.
fn backoff(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_shared_writes_are_read_back() {
        let shard = Shard::default();
        let big = u128::MAX - 5; // exercises both 64-bit halves
        shard.write_exclusive(
            Metric::Memory,
            Delta {
                dn: 1,
                d1: big,
                d2: 7,
                leave: NO_BUCKET,
                enter: 40,
            },
        );
        shard.write_shared(
            Metric::Memory,
            Delta {
                dn: 1,
                d1: 10,
                d2: 0,
                leave: 40,
                enter: 3,
            },
        );
        shard.write_shared(
            Metric::Cpu,
            Delta {
                dn: u64::MAX,
                d1: 0,
                d2: 1,
                leave: 7,
                enter: NO_BUCKET,
            },
        );
        let m = shard.read();
        assert_eq!(m[Metric::Memory.index()], Moments { n: 2, s1: 4, s2: 7 });
        assert_eq!(
            m[Metric::Cpu.index()],
            Moments {
                n: u64::MAX,
                s1: 0,
                s2: 1
            }
        );
        assert_eq!(m[Metric::Connections.index()], Moments::default());
        let mut h: [Histogram; Metric::COUNT] = Default::default();
        shard.add_histograms_to(&mut h);
        let mut memory = Histogram::new();
        memory.add(3); // entered 40, then moved from 40 to 3
        assert_eq!(h[Metric::Memory.index()], memory);
        let mut cpu = Histogram::new();
        cpu.remove(7);
        assert_eq!(h[Metric::Cpu.index()], cpu);
        assert_eq!(h[Metric::Connections.index()], Histogram::new());
    }

    #[test]
    fn a_shard_is_whole_cache_lines_of_the_documented_size() {
        let size = core::mem::size_of::<crossbeam_utils::CachePadded<Shard>>();
        assert_eq!(size % 64, 0, "{size}");
        // The sequence number and the moments share the first four cache lines.
        let shard = Shard::default();
        let base = &shard as *const Shard as usize;
        let seq = &shard.seq as *const AtomicU64 as usize;
        let cells_end = shard.cells.as_ptr_range().end as usize;
        assert_eq!(seq - base, 0);
        assert!(cells_end - base <= 256, "{}", cells_end - base);
        // 256 bytes of moments, 28,464 of histograms, padded to whole (128-byte) lines
        assert!((256 + 28_464..256 + 28_464 + 128).contains(&size), "{size}");
    }
}
