//! Quantiles of a bucketed population: the nearest-rank definition, walked over the non-empty
//! buckets in increasing order (of a dense [`crate::Histogram`] or of a model's
//! [`crate::SparseHistogram`] alike).

use serde::{Deserialize, Serialize};

use crate::bucket;

/// One non-empty bucket: the samples `lower..=upper` (in the metric's unit), `count` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The smallest sample the bucket holds.
    pub lower: u64,
    /// The largest sample the bucket holds (inclusive).
    pub upper: u64,
    /// How many samples are in it.
    pub count: u64,
}

impl Bucket {
    pub(crate) fn of_index(i: usize, count: u64) -> Bucket {
        Bucket {
            lower: bucket::lower(i),
            upper: bucket::upper(i),
            count,
        }
    }

    /// The value reported for a sample of this bucket: its midpoint (the value itself below
    /// 32), within 1/32 relative error of any sample in it.
    pub fn representative(&self) -> u64 {
        bucket::representative(bucket::index(self.lower))
    }
}

/// The distribution of a metric over clients, in the metric's unit: nearest-rank quantiles,
/// each within 1/32 (3.125%) relative error of the exact one (exact below 32), and an upper
/// bound of the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantiles {
    /// Median: the sample of rank `ceil(n / 2)`.
    pub p50: u64,
    /// The sample of rank `ceil(0.9 n)`.
    pub p90: u64,
    /// The sample of rank `ceil(0.99 n)`.
    pub p99: u64,
    /// The sample of rank `ceil(0.999 n)`.
    pub p99_9: u64,
    /// The largest value of the highest non-empty bucket: never below the true maximum, at
    /// most 1/16 above it (exact below 32). Unlike a tracked running maximum, this stays correct
    /// when the largest sample is removed or lowered elsewhere.
    pub max: u64,
}

impl Quantiles {
    /// The quantiles of non-empty `buckets` given in increasing order; `None` if there are
    /// none.
    pub(crate) fn of<I>(buckets: I) -> Option<Quantiles>
    where
        I: Iterator<Item = Bucket> + Clone,
    {
        let n: u64 = buckets.clone().map(|b| b.count).sum();
        let q = |q| quantile(buckets.clone(), n, q);
        Some(Quantiles {
            p50: q(0.5)?,
            p90: q(0.9)?,
            p99: q(0.99)?,
            p99_9: q(0.999)?,
            max: buckets.last()?.upper,
        })
    }
}

/// The nearest rank of quantile `q` among `n > 0` samples: `ceil(q * n)` computed in `f64`, at
/// least 1 and at most `n`. `q` is clamped to `[0, 1]`; NaN is taken as 1.
pub fn rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
    // In [0, n] before the clamp: the cast cannot saturate.
    ((q * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// The `q`-quantile of `n` samples in non-empty `buckets` (increasing order): the
/// representative of the bucket holding the sample of [`rank`] `(q, n)`. `None` when `n == 0`.
pub(crate) fn quantile<I>(buckets: I, n: u64, q: f64) -> Option<u64>
where
    I: Iterator<Item = Bucket>,
{
    if n == 0 {
        return None;
    }
    let rank = rank(q, n);
    let mut seen = 0u64;
    let mut last = None;
    for b in buckets {
        seen = seen.saturating_add(b.count);
        last = Some(b);
        if seen >= rank {
            break;
        }
    }
    last.map(|b| b.representative())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_nearest_rank_and_clamped() {
        assert_eq!(rank(0.5, 10), 5);
        assert_eq!(rank(0.5, 11), 6);
        assert_eq!(rank(0.999, 1000), 999);
        assert_eq!(rank(0.999, 10), 10);
        assert_eq!(rank(0.0, 10), 1);
        assert_eq!(rank(-3.0, 10), 1);
        assert_eq!(rank(7.0, 10), 10);
        assert_eq!(rank(f64::NAN, 10), 10);
    }

    #[test]
    fn quantile_walks_cumulative_counts() {
        let b = |lower, count| Bucket {
            lower,
            upper: lower,
            count,
        };
        let buckets = [b(1, 5), b(3, 4), b(9, 1)];
        let q = |q| quantile(buckets.iter().copied(), 10, q);
        assert_eq!(q(0.5), Some(1));
        assert_eq!(q(0.51), Some(3));
        assert_eq!(q(0.9), Some(3));
        assert_eq!(q(0.91), Some(9));
        assert_eq!(quantile(core::iter::empty(), 0, 0.5), None);
        let all = Quantiles::of(buckets.iter().copied()).unwrap();
        assert_eq!((all.p50, all.p90, all.p99, all.max), (1, 3, 9, 9));
    }
}
