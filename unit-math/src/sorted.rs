//! The exact reference for histograms and quantiles: the samples themselves, sorted.
//!
//! A histogram is checked bucket by bucket against the sorted samples (each bucket's count must
//! be the number of samples in its range, found by binary search, and the counts must add up to
//! `n`), its bucket widths against the documented resolution (at most 1/16 of the lower bound,
//! width 1 below 32), and its quantiles against the exact nearest-rank quantiles of the sorted
//! samples: relative error at most [`QUANTILE_TOLERANCE`] = 1/32, and a maximum that is never
//! below the true one and at most 1/16 above it. None of this uses the crate's bucketing code.

use zgate_training::{Bucket, Quantiles, MAX_SAMPLE};

/// The relative error allowed on a quantile: 1/32 (a bucket at most 1/16 of its lower bound
/// wide, reported by its midpoint).
pub const QUANTILE_TOLERANCE: f64 = 1.0 / 32.0;

/// Samples sorted, clamped to [`MAX_SAMPLE`] as the accumulators clamp them.
#[derive(Clone, Debug)]
pub struct Sorted(Vec<u64>);

impl Sorted {
    /// Clamps and sorts `samples`.
    pub fn new(samples: &[u64]) -> Sorted {
        let mut v: Vec<u64> = samples.iter().map(|&x| x.min(MAX_SAMPLE)).collect();
        v.sort_unstable();
        Sorted(v)
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The exact nearest-rank `q`-quantile: the sample of rank `ceil(q * n)` (1-based, at least
    /// 1). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.0[rank - 1])
    }

    /// The number of samples in `lower..=upper`.
    pub fn count_in(&self, lower: u64, upper: u64) -> u64 {
        let from = self.0.partition_point(|&x| x < lower);
        let to = self.0.partition_point(|&x| x <= upper);
        (to - from) as u64
    }

    /// The largest sample.
    pub fn max(&self) -> Option<u64> {
        self.0.last().copied()
    }
}

/// The worst relative error of `got` over the four quantiles, against `want`.
pub fn worst_quantile_error(got: &Quantiles, want: &Sorted) -> f64 {
    [
        (got.p50, 0.5),
        (got.p90, 0.9),
        (got.p99, 0.99),
        (got.p99_9, 0.999),
    ]
    .into_iter()
    .map(|(g, q)| {
        let exact = want.quantile(q).unwrap_or(0);
        rel(g, exact)
    })
    .fold(0.0, f64::max)
}

fn rel(got: u64, exact: u64) -> f64 {
    if exact == 0 {
        got as f64
    } else {
        got.abs_diff(exact) as f64 / exact as f64
    }
}

/// Asserts that `buckets` (non-empty buckets in increasing order) and `quantiles` describe
/// exactly the samples of `want`, within the documented resolution. Returns the worst relative
/// error of p50, p90, p99 and p99.9.
#[track_caller]
pub fn assert_histogram_accurate(
    buckets: &[Bucket],
    quantiles: Option<&Quantiles>,
    want: &Sorted,
    case: &str,
) -> f64 {
    let mut total = 0u64;
    let mut prev_upper: Option<u64> = None;
    for b in buckets {
        assert!(
            prev_upper.is_none_or(|u| u < b.lower),
            "{case}: bucket {b:?} overlaps or is out of order"
        );
        prev_upper = Some(b.upper);
        let width = b.upper - b.lower + 1;
        assert!(
            width == 1 || (b.lower >= 32 && width * 16 <= b.lower),
            "{case}: bucket {b:?} is wider than 1/16 of its lower bound"
        );
        let exact = want.count_in(b.lower, b.upper);
        assert!(b.count > 0, "{case}: empty bucket {b:?} listed");
        assert_eq!(b.count, exact, "{case}: count of bucket {b:?}");
        total += b.count;
    }
    assert_eq!(total, want.len() as u64, "{case}: samples in the buckets");
    let Some(q) = quantiles else {
        assert!(
            want.is_empty(),
            "{case}: no quantiles for {} samples",
            want.len()
        );
        return 0.0;
    };
    let worst = worst_quantile_error(q, want);
    assert!(
        worst <= QUANTILE_TOLERANCE,
        "{case}: quantiles {q:?}, exact p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} (worst error {worst:e})",
        want.quantile(0.5),
        want.quantile(0.9),
        want.quantile(0.99),
        want.quantile(0.999),
    );
    let max = want.max().unwrap_or(0);
    assert!(
        q.max >= max && (q.max - max) * 16 <= max.max(15),
        "{case}: max {} for exact max {max}",
        q.max
    );
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_of_one_to_ten() {
        let s = Sorted::new(&[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(s.quantile(0.5), Some(5));
        assert_eq!(s.quantile(0.51), Some(6));
        assert_eq!(s.quantile(0.0), Some(1));
        assert_eq!(s.quantile(0.999), Some(10));
        assert_eq!(s.count_in(3, 5), 3);
        assert_eq!(Sorted::new(&[]).quantile(0.5), None);
    }
}
