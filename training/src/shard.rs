//! One shard: the six metrics' moments behind a sequence lock, on its own cache lines.
//!
//! Writers store whole values (load, add, store; never a read-modify-write instruction) between
//! two increments of the sequence number; a reader retries until it saw an even, unchanged
//! sequence around its loads. This is the classic seqlock of Boehm, "Can seqlocks get along with
//! programming language memory models?" (2012): writer `seq=odd; fence(Release); data...;
//! seq=even (Release)`, reader `seq (Acquire); data...; fence(Acquire); seq`.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use crate::metric::Metric;
use crate::moments::Moments;

/// Moments of all metrics in one shard. With `CachePadded` around it, a shard is 256 bytes and
/// shares no cache line with another shard.
#[derive(Default)]
pub(crate) struct Shard {
    seq: AtomicU64,
    cells: [Cells; Metric::COUNT],
}

/// One metric's wrapping moments; the 128-bit sums are stored as (low, high) 64-bit halves.
#[derive(Default)]
struct Cells {
    n: AtomicU64,
    s1: [AtomicU64; 2],
    s2: [AtomicU64; 2],
}

/// What one update does to a metric's moments: wrapping deltas of `n`, `S1`, `S2`.
#[derive(Clone, Copy)]
pub(crate) struct Delta {
    pub(crate) dn: u64,
    pub(crate) d1: u128,
    pub(crate) d2: u128,
}

impl Shard {
    /// Applies `delta` to `metric`. The caller must be the only writer of this shard (it holds
    /// the shard's claim).
    #[inline]
    pub(crate) fn write_exclusive(&self, metric: Metric, delta: Delta) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.cells[metric.index()].apply(delta);
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
        self.cells[metric.index()].apply(delta);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
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
            },
        );
        shard.write_shared(
            Metric::Memory,
            Delta {
                dn: 1,
                d1: 10,
                d2: 0,
            },
        );
        shard.write_shared(
            Metric::Cpu,
            Delta {
                dn: u64::MAX,
                d1: 0,
                d2: 1,
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
    }

    #[test]
    fn a_shard_is_four_cache_lines_when_padded() {
        let size = core::mem::size_of::<crossbeam_utils::CachePadded<Shard>>();
        assert!(size.trailing_zeros() >= 6 && size <= 256, "{size}");
    }
}
