//! One training epoch's accumulators: a [`TrainingSet`] of shards and the [`ShardWriter`]s that
//! fill them.
//!
//! # Epochs and stale objects
//!
//! A new epoch is a new `TrainingSet` (`TrainingSet::new(epoch + 1, shards)`), swapped in by the
//! caller; the old set and every writer still pointing at it stay valid and simply stop mattering.
//! Nothing here walks per-client state. The caller (the limiter) keeps, per client, the epoch of
//! the client's sample for each metric, and:
//! - on an observation, if the client's epoch differs from the current set's [`TrainingSet::epoch`]
//!   (or [`ShardWriter::epoch`]), treats the client as new in this epoch: resets its maximum,
//!   tags it with the current epoch and calls [`ShardWriter::add`], never `raise`;
//! - calls [`ShardWriter::remove`] for an evicted client only if its tag equals the writer's
//!   epoch (its sample is in this set), with the same value it last added or raised to;
//! - decrements of current counters (a connection closed, a request finished) never touch the
//!   training set; only maxima are samples, so an object from an older epoch cannot underflow
//!   anything here. Its events can raise a client's maximum in the new epoch, which is correct:
//!   that load is real and current.

use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::bucket;
use crate::epoch::Epoch;
use crate::histogram::Histogram;
use crate::metric::Metric;
use crate::model::{Model, ModelParams};
use crate::moments::{replace_deltas, Moments, MAX_SAMPLE};
use crate::population::Populations;
use crate::shard::{Delta, Shard, NO_BUCKET};

/// One epoch's accumulators for all six metrics, split in cache-padded shards.
///
/// Each shard belongs to at most one [`ShardWriter`] at a time (one per worker thread), so the hot
/// path neither locks nor shares a cache line. A further overflow shard takes the writers created
/// when every shard is claimed; those writers serialise on it (correct, only slower).
pub struct TrainingSet {
    epoch: Epoch,
    /// `shards.len() - 1` exclusive shards, then the shared overflow shard.
    shards: Box<[CachePadded<Shard>]>,
    /// Whether exclusive shard `i` is held by a writer. Kept off the shards' cache lines.
    claimed: Box<[AtomicBool]>,
}

impl TrainingSet {
    /// A fresh, empty set for `epoch` with `shards` exclusive shards (use the number of worker
    /// threads; 0 is taken as 1), plus one shared overflow shard.
    pub fn new(epoch: Epoch, shards: usize) -> Arc<TrainingSet> {
        let shards = shards.max(1);
        Arc::new(TrainingSet {
            epoch,
            shards: (0..=shards)
                .map(|_| CachePadded::new(Shard::default()))
                .collect(),
            claimed: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// The epoch this set accumulates.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The number of exclusive shards (the overflow shard not counted).
    pub fn shards(&self) -> usize {
        self.claimed.len()
    }

    /// Claims a shard for the calling thread's exclusive use.
    ///
    /// The writer is `Send` but not `Sync`. Writes through it are plain (non-RMW) atomic stores
    /// guarded by a seqlock, so they cost a few ns and never share a cache line with another
    /// writer. When every shard is claimed, returns a writer on the shared overflow shard that is
    /// still correct (serialised), only slower. Dropping the writer releases the shard; its
    /// contents stay in the set.
    pub fn writer(self: &Arc<Self>) -> ShardWriter {
        let free = self.claimed.iter().position(|c| {
            c.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        let (shard, exclusive) = match free {
            Some(i) => (i, true),
            None => (self.claimed.len(), false),
        };
        ShardWriter {
            set: Arc::clone(self),
            shard,
            exclusive,
            _not_sync: PhantomData,
        }
    }

    /// Merges all shards (a consistent read of each shard's moments via its seqlock, then its
    /// histograms) into per-metric population statistics and histograms.
    ///
    /// Each shard's moments are read consistently, but not all shards at one instant, and a
    /// shard's histograms not at the same instant as its moments: while writers are active, a
    /// raise may be seen without the add it refers to (on another shard), and a histogram may
    /// hold a few more or fewer updates than the moments. At the end of training, with writers
    /// idle, the result is exact. A live preview is approximate and never panics (an
    /// inconsistent metric reads as empty; a negative bucket as an empty one).
    pub fn merge(&self) -> Populations {
        let mut total = [Moments::default(); Metric::COUNT];
        let mut histograms: [Histogram; Metric::COUNT] = Default::default();
        for shard in self.shards.iter() {
            for (t, m) in total.iter_mut().zip(shard.read()) {
                t.merge(&m);
            }
            shard.add_histograms_to(&mut histograms);
        }
        Populations::from_parts(total, histograms)
    }

    /// [`TrainingSet::merge`], then [`Model::from_populations`] for this set's epoch.
    pub fn finalize(&self, params: &ModelParams) -> Model {
        Model::from_populations(self.epoch, &self.merge(), params)
    }
}

/// Exclusive write access to one shard of a [`TrainingSet`] (or shared access to its overflow
/// shard). `Send`, not `Sync`: keep one per worker thread.
///
/// Samples are in the metric's unit and clamped to [`MAX_SAMPLE`] (2^40).
pub struct ShardWriter {
    set: Arc<TrainingSet>,
    shard: usize,
    exclusive: bool,
    /// `Cell` is `Send + !Sync`: the exclusive shard must not be written from two threads.
    _not_sync: PhantomData<Cell<()>>,
}

impl ShardWriter {
    /// The epoch of the set this writer writes to.
    pub fn epoch(&self) -> Epoch {
        self.set.epoch
    }

    /// The set this writer writes to.
    pub fn set(&self) -> &Arc<TrainingSet> {
        &self.set
    }

    /// Whether this writer has a shard of its own (false: it shares the overflow shard).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Adds a client's first sample `x` of `metric` in this epoch: to the moments, and one
    /// count to `x`'s histogram bucket.
    #[inline]
    pub fn add(&self, metric: Metric, x: u64) {
        let enter = bucket::index(x);
        let x = u128::from(x.min(MAX_SAMPLE));
        self.write(
            metric,
            Delta {
                dn: 1,
                d1: x,
                d2: x * x,
                leave: NO_BUCKET,
                enter,
            },
        );
    }

    /// Replaces a client's sample `old` with `new` (normally its maximum growing). O(1), no
    /// history; may be on another shard (writer) than the `add` of that sample. Moves one
    /// histogram count from `old`'s bucket to `new`'s (nothing when they share a bucket).
    #[inline]
    pub fn raise(&self, metric: Metric, old: u64, new: u64) {
        let (d1, d2) = replace_deltas(old, new);
        self.write(
            metric,
            Delta {
                dn: 0,
                d1,
                d2,
                leave: bucket::index(old),
                enter: bucket::index(new),
            },
        );
    }

    /// [`ShardWriter::raise`] of the moments only, leaving the histogram alone: the baseline of
    /// the `unit-math` benchmark, which reports what the histogram adds to a raise. Leaves the
    /// histogram out of step with the moments; never use it otherwise.
    #[doc(hidden)]
    #[inline]
    pub fn raise_moments_only(&self, metric: Metric, old: u64, new: u64) {
        let (d1, d2) = replace_deltas(old, new);
        self.write(
            metric,
            Delta {
                dn: 0,
                d1,
                d2,
                leave: NO_BUCKET,
                enter: NO_BUCKET,
            },
        );
    }

    /// Removes a client's sample `x` (its current value) of `metric`: a client evicted during
    /// training. May be on another shard than the `add`. Takes one count from `x`'s bucket.
    #[inline]
    pub fn remove(&self, metric: Metric, x: u64) {
        let leave = bucket::index(x);
        let x = u128::from(x.min(MAX_SAMPLE));
        self.write(
            metric,
            Delta {
                dn: 1u64.wrapping_neg(),
                d1: x.wrapping_neg(),
                d2: (x * x).wrapping_neg(),
                leave,
                enter: NO_BUCKET,
            },
        );
    }

    #[inline]
    fn write(&self, metric: Metric, delta: Delta) {
        let shard = &self.set.shards[self.shard];
        if self.exclusive {
            shard.write_exclusive(metric, delta);
        } else {
            shard.write_shared(metric, delta);
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.exclusive {
            self.set.claimed[self.shard].store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_claim_distinct_shards_then_overflow_and_release_on_drop() {
        let set = TrainingSet::new(7, 2);
        let a = set.writer();
        let b = set.writer();
        let c = set.writer();
        let d = set.writer();
        assert!(a.is_exclusive() && b.is_exclusive());
        assert!(!c.is_exclusive() && !d.is_exclusive());
        assert_ne!(a.shard, b.shard);
        let shard_a = a.shard;
        a.add(Metric::Connections, 4);
        drop(a);
        let e = set.writer();
        assert!(e.is_exclusive());
        assert_eq!(e.shard, shard_a);
        assert_eq!(e.epoch(), 7);
        e.add(Metric::Connections, 6);
        c.add(Metric::Connections, 2);
        d.raise(Metric::Connections, 2, 8);
        b.remove(Metric::Connections, 4);
        let p = set.merge();
        let conn = p.get(Metric::Connections);
        assert_eq!(conn.n, 2);
        assert_eq!(conn.mean, 7.0);
        assert_eq!(conn.std, 1.0);
        assert_eq!(p.get(Metric::Memory).n, 0);
    }

    #[test]
    fn concurrent_writers_on_threads_sum_exactly() {
        let set = TrainingSet::new(1, 2);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let w = set.writer(); // the last two share the overflow shard
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let x = t * 100_000 + i;
                        w.add(Metric::Memory, x);
                        w.raise(Metric::Memory, x, x + 1);
                    }
                })
            })
            .collect();
        // Live reads while writers run must not panic or tear.
        for _ in 0..100 {
            let _ = set.merge();
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut exact = Moments::default();
        for t in 0..4u64 {
            for i in 0..10_000u64 {
                exact.add(t * 100_000 + i + 1);
            }
        }
        assert_eq!(set.merge().get(Metric::Memory).moments, exact);
    }

    /// Writers flip a sample in and out (`remove` first, so the wrapping sums are "negative" and
    /// use both 64-bit halves) while a reader checks that every merge it sees is a whole number
    /// of updates: `S1 == n * x` and `S2 == n * x^2` (as signed values). A torn read (halves of
    /// two different writes) or two writers interleaving on the shared shard breaks that.
    #[test]
    fn reads_never_see_a_torn_or_interleaved_write() {
        const X: u64 = (1 << 40) - 3;
        let set = TrainingSet::new(1, 1);
        let writers = [set.writer(), set.writer(), set.writer()]; // one exclusive, two shared
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            for w in writers {
                let done = &done;
                s.spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        w.remove(Metric::Memory, X);
                        w.add(Metric::Memory, X);
                    }
                });
            }
            // Stop the writers before asserting, so a failure fails instead of hanging.
            let torn = (0..100_000)
                .map(|_| set.merge().get(Metric::Memory).moments)
                .find(|m| {
                    let n = i128::from(m.n as i64);
                    let x = i128::from(X);
                    m.s1 != (n * x) as u128 || m.s2 != (n * x * x) as u128
                });
            done.store(true, Ordering::Relaxed);
            assert_eq!(torn, None);
        });
        assert_eq!(set.merge().get(Metric::Memory).moments, Moments::default());
    }
}
