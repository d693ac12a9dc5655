//! The histogram's buckets: a log-linear schema over samples `0..=MAX_SAMPLE`, 16 buckets per
//! power of two, indexed with two bit operations.
//!
//! Every sample below 32 has a bucket of its own (bucket `i` holds exactly the value `i`; bucket
//! 0 is the zero bucket), so small counts such as connections and requests are exact. From 32
//! up, each power of two `[2^e, 2^(e+1))` is cut into [`SUB_BUCKETS`] = 16 equal buckets of width
//! `2^(e-4)`: the resolution of the Prometheus native-histogram schema 4 (16 buckets per
//! doubling), with linear instead of geometric sub-buckets so that the index is a
//! `leading_zeros`, a shift and an add, no logarithm (the layout of HdrHistogram with 4
//! sub-bucket bits).
//!
//! A bucket's width is at most 1/16 of its lower bound, so its midpoint ([`representative`]) is
//! within 1/32 (3.125%) relative error of any value in it, and exact below 32. There are
//! [`BUCKETS`] = 593 buckets up to [`MAX_SAMPLE`] = 2^40 (larger samples are clamped to it, as in
//! the moments).

use crate::moments::MAX_SAMPLE;

/// log2 of the number of buckets per power of two: 4, i.e. 16 buckets per doubling.
pub const SUB_BUCKET_BITS: u32 = 4;

/// Buckets per power of two (above 32): 16.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// The number of buckets covering `0..=MAX_SAMPLE`: 593 (indices `0..=592`; the last one holds
/// only `MAX_SAMPLE` itself).
pub const BUCKETS: usize = index(MAX_SAMPLE) + 1;

/// The worst relative error of [`representative`] for any value of its bucket: 1/32.
pub const RELATIVE_ERROR: f64 = 1.0 / (2 * SUB_BUCKETS) as f64;

/// The bucket of sample `x` (clamped to [`MAX_SAMPLE`]): always `< BUCKETS`.
///
/// With `s = max(0, floor(log2 x) - 4)` the index is `16 * s + (x >> s)`: `x` itself below 32,
/// then 16 consecutive indices per power of two.
#[inline]
pub const fn index(x: u64) -> usize {
    let x = if x < MAX_SAMPLE { x } else { MAX_SAMPLE };
    // `x | 16` has the same highest bit as `x` from 16 up, and makes `s` 0 below 32.
    let s = (63 - SUB_BUCKET_BITS) - (x | SUB_BUCKETS).leading_zeros();
    ((s as usize) << SUB_BUCKET_BITS) + (x >> s) as usize
}

/// The smallest sample of bucket `i` (for `i < BUCKETS`; larger indices give values beyond
/// [`MAX_SAMPLE`], which no sample has).
#[inline]
pub const fn lower(i: usize) -> u64 {
    let s = shift(i);
    ((i as u64) - ((s as u64) << SUB_BUCKET_BITS)) << s
}

/// The largest sample of bucket `i`, inclusive: `lower(i) + width(i) - 1`, capped at
/// [`MAX_SAMPLE`] (the last bucket holds only `MAX_SAMPLE`).
#[inline]
pub const fn upper(i: usize) -> u64 {
    let u = lower(i) + ((1u64 << shift(i)) - 1);
    if u < MAX_SAMPLE {
        u
    } else {
        MAX_SAMPLE
    }
}

/// The value reported for a sample known only to be in bucket `i`: the bucket's midpoint
/// `lower + width / 2` (the value itself for buckets of width 1), capped at [`upper`]. For any
/// sample `v` of the bucket, `|representative - v| <= v / 32` ([`RELATIVE_ERROR`]).
#[inline]
pub const fn representative(i: usize) -> u64 {
    let mid = lower(i) + ((1u64 << shift(i)) >> 1);
    let u = upper(i);
    if mid < u {
        mid
    } else {
        u
    }
}

/// Whether `x` is the lower bound of a bucket (the key of a bucket in the sparse form).
pub fn is_lower_bound(x: u64) -> bool {
    x <= MAX_SAMPLE && lower(index(x)) == x
}

/// The bucket width exponent `s` of bucket `i`: width `2^s`.
#[inline]
const fn shift(i: usize) -> u32 {
    let octave = (i >> SUB_BUCKET_BITS) as u32;
    octave.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_large_ones_16_per_doubling() {
        for x in 0..32u64 {
            assert_eq!(index(x), x as usize);
            assert_eq!((lower(x as usize), upper(x as usize)), (x, x));
            assert_eq!(representative(x as usize), x);
        }
        assert_eq!(index(32), 32);
        assert_eq!(index(33), 32);
        assert_eq!((lower(32), upper(32)), (32, 33));
        assert_eq!(index(1 << 20), index((1 << 21) - 1) - 15);
        assert_eq!(BUCKETS, 593);
        assert_eq!(index(MAX_SAMPLE), BUCKETS - 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!((lower(592), upper(592)), (MAX_SAMPLE, MAX_SAMPLE));
        assert_eq!(representative(592), MAX_SAMPLE);
        assert_eq!(upper(591), MAX_SAMPLE - 1);
    }

    #[test]
    fn buckets_tile_the_range_and_contain_their_values() {
        for i in 0..BUCKETS {
            let (lo, hi) = (lower(i), upper(i));
            assert!(lo <= hi);
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            assert!(is_lower_bound(lo));
            if i + 1 < BUCKETS {
                assert_eq!(lower(i + 1), hi + 1, "bucket {i}");
            }
            // the width bound behind the 1/32 error
            assert!(
                (hi - lo + 1) * SUB_BUCKETS <= lo.max(SUB_BUCKETS * 2),
                "bucket {i}"
            );
            let r = representative(i);
            assert!(lo <= r && r <= hi);
            for v in [lo, hi] {
                assert!(
                    (r.abs_diff(v) as f64) <= v as f64 * RELATIVE_ERROR,
                    "bucket {i}"
                );
            }
        }
        assert!(!is_lower_bound(33));
        assert!(!is_lower_bound(MAX_SAMPLE + 1));
    }
}
