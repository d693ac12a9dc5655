//! The mergeable histogram of a metric's samples: one wrapping count per bucket of the
//! log-linear schema of [`crate::bucket`].
//!
//! Like [`crate::Moments`], every update is an addition of signed deltas: adding a sample
//! increments its bucket, removing one decrements it, and raising a sample `old -> new` moves one
//! count (decrement `old`'s bucket, increment `new`'s; nothing when both are in the same bucket).
//! So updates commute, any part (a shard) may hold "negative" counts (a raise of a sample another
//! shard added), and parts merge by adding their counts bucket by bucket: the sum over all parts
//! is exactly the histogram of the surviving samples.
//!
//! Memory: [`BUCKETS`] = 593 counts of 8 bytes, 4744 bytes per metric, whatever the population.

use core::fmt;

use crate::bucket::{self, BUCKETS};
use crate::quantiles::{self, Bucket, Quantiles};

/// Wrapping per-bucket counts of a population of samples in `0..=MAX_SAMPLE` (larger samples
/// are clamped to it). Default: empty.
///
/// A count is effectively a two's complement `i64`: a part of a population may be negative in
/// some bucket; the merged histogram of a real population is not.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: Box::new([0; BUCKETS]),
        }
    }

    /// Adds a sample `x`.
    pub fn add(&mut self, x: u64) {
        self.bump(bucket::index(x), 1);
    }

    /// Replaces a sample `old` with `new`: moves one count between their buckets.
    pub fn raise(&mut self, old: u64, new: u64) {
        let (from, to) = (bucket::index(old), bucket::index(new));
        if from != to {
            self.bump(from, u64::MAX);
            self.bump(to, 1);
        }
    }

    /// Removes a sample `x`.
    pub fn remove(&mut self, x: u64) {
        self.bump(bucket::index(x), u64::MAX);
    }

    /// Adds another part of the same population (another shard, another instance).
    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(other.counts.iter()) {
            *c = c.wrapping_add(*o);
        }
    }

    /// Adds `delta` (wrapping) to the count of bucket `i`; the raw form of an update.
    pub(crate) fn add_to_bucket(&mut self, i: usize, delta: u64) {
        self.bump(i, delta);
    }

    /// Adds (wrapping) the counts of every bucket in index order, e.g. a shard's copy.
    pub(crate) fn add_counts(&mut self, counts: impl Iterator<Item = u64>) {
        for (c, d) in self.counts.iter_mut().zip(counts) {
            *c = c.wrapping_add(d);
        }
    }

    /// Whether the counts can be those of a real population: no bucket is negative (as an
    /// `i64`). A live merge across shards that are being written may not be.
    pub fn is_consistent(&self) -> bool {
        self.counts.iter().all(|&c| c <= i64::MAX as u64)
    }

    /// The number of samples: the sum of the non-negative counts (negative buckets, only seen
    /// in an inconsistent live merge, count as empty).
    pub fn count(&self) -> u64 {
        self.buckets().map(|b| b.count).sum()
    }

    /// The non-empty buckets in increasing order (negative ones skipped, as in
    /// [`Histogram::count`]).
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + Clone + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c != 0 && c <= i64::MAX as u64)
            .map(|(i, &count)| Bucket::of_index(i, count))
    }

    /// The nearest-rank `q`-quantile (rank [`crate::quantiles::rank`]): the representative of the
    /// bucket holding the sample of rank `ceil(q * n)`, within 1/32 relative error of that
    /// sample. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        quantiles::quantile(self.buckets(), self.count(), q)
    }

    /// p50, p90, p99, p99.9 and max; `None` when empty.
    pub fn quantiles(&self) -> Option<Quantiles> {
        Quantiles::of(self.buckets())
    }

    #[inline]
    fn bump(&mut self, i: usize, delta: u64) {
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.wrapping_add(delta);
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl fmt::Debug for Histogram {
    /// The non-zero buckets as `lower: count` (as signed counts).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.counts
                    .iter()
                    .enumerate()
                    .filter(|&(_, &c)| c != 0)
                    .map(|(i, &c)| (bucket::lower(i), c as i64)),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(xs: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        xs.iter().for_each(|&x| h.add(x));
        h
    }

    #[test]
    fn raise_and_remove_split_over_parts_sum_to_final_population() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.add(3);
        a.add(1000);
        b.raise(3, 70); // raised on another part than the add
        b.remove(1000);
        a.add(1);
        assert!(!b.is_consistent());
        assert_eq!(b.count(), 1); // only the non-negative bucket of 70
        a.merge(&b);
        assert!(a.is_consistent());
        assert_eq!(a, of(&[70, 1]));
        assert_eq!(a.count(), 2);
    }

    #[test]
    fn buckets_and_quantiles_of_one_to_hundred() {
        let xs: Vec<u64> = (1..=100).collect();
        let h = of(&xs);
        assert_eq!(h.count(), 100);
        // 1..=31 exact, then buckets of width 2 (32..63) and 4 (64..127)
        let b: Vec<Bucket> = h.buckets().collect();
        assert_eq!(b.len(), 31 + 16 + 10);
        assert_eq!(
            b[31],
            Bucket {
                lower: 32,
                upper: 33,
                count: 2
            }
        );
        assert_eq!(
            b.last(),
            Some(&Bucket {
                lower: 100,
                upper: 103,
                count: 1
            })
        );
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.quantile(0.2), Some(20));
        assert_eq!(h.quantile(0.5), Some(51)); // rank 50 is in 50..=51, reported as 51
        let q = h.quantiles().unwrap();
        assert_eq!((q.p90, q.p99, q.p99_9), (90, 98, 102));
        assert_eq!(q.max, 103); // upper bound of the top bucket: never below the true max
        assert_eq!(Histogram::new().quantiles(), None);
    }

    #[test]
    fn large_samples_are_clamped() {
        let h = of(&[u64::MAX, crate::MAX_SAMPLE]);
        let q = h.quantiles().unwrap();
        assert_eq!((q.p50, q.max), (crate::MAX_SAMPLE, crate::MAX_SAMPLE));
    }
}
