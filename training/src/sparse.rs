//! The model's copy of a histogram: only the non-empty buckets, as `(lower bound, count)` pairs.
//!
//! Serialized as a JSON array of `[lower, count]` pairs in increasing order, e.g.
//! `[[1, 12], [2, 30], [3, 5], [40, 1]]`: bucket `[40, 1]` holds one sample in `40..=41` (see
//! [`crate::bucket`] for the widths: 1 below 32, then 1/16 of the power of two). Reading checks
//! that every key is a bucket lower bound, keys increase and counts are positive.

use core::fmt;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bucket;
use crate::histogram::Histogram;
use crate::quantiles::{self, Bucket, Quantiles};

/// The non-empty buckets of a population's histogram, in increasing order. Default: empty (a
/// model learned, or saved, before histograms existed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseHistogram {
    buckets: Vec<Bucket>,
}

/// Why a list of `(lower, count)` pairs is not a [`SparseHistogram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseHistogramError {
    /// The key is not the lower bound of a bucket (or is above `MAX_SAMPLE`).
    NotALowerBound(u64),
    /// The key is not greater than the key before it.
    NotIncreasing(u64),
    /// The bucket with this key has a count of 0.
    EmptyBucket(u64),
}

impl SparseHistogram {
    /// The non-empty buckets of `h` (negative ones, of an inconsistent live merge, left out).
    pub fn of(h: &Histogram) -> SparseHistogram {
        SparseHistogram {
            buckets: h.buckets().collect(),
        }
    }

    /// Checks and takes `(lower, count)` pairs in increasing order of `lower`.
    pub fn from_pairs<I>(pairs: I) -> Result<SparseHistogram, SparseHistogramError>
    where
        I: IntoIterator<Item = (u64, u64)>,
    {
        let mut buckets: Vec<Bucket> = Vec::new();
        for (lower, count) in pairs {
            if !bucket::is_lower_bound(lower) {
                return Err(SparseHistogramError::NotALowerBound(lower));
            }
            if buckets.last().is_some_and(|b| b.lower >= lower) {
                return Err(SparseHistogramError::NotIncreasing(lower));
            }
            if count == 0 {
                return Err(SparseHistogramError::EmptyBucket(lower));
            }
            buckets.push(Bucket::of_index(bucket::index(lower), count));
        }
        Ok(SparseHistogram { buckets })
    }

    /// The non-empty buckets, in increasing order.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Whether there is no bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The number of samples (saturating).
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |n, b| n.saturating_add(b.count))
    }

    /// The nearest-rank `q`-quantile, as [`Histogram::quantile`]; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        quantiles::quantile(self.buckets.iter().copied(), self.count(), q)
    }

    /// p50, p90, p99, p99.9 and max; `None` when empty.
    pub fn quantiles(&self) -> Option<Quantiles> {
        Quantiles::of(self.buckets.iter().copied())
    }

    /// The dense histogram of these buckets (e.g. to merge with another instance's).
    pub fn to_histogram(&self) -> Histogram {
        let mut h = Histogram::new();
        for b in &self.buckets {
            h.add_to_bucket(bucket::index(b.lower), b.count);
        }
        h
    }
}

impl fmt::Display for SparseHistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotALowerBound(x) => write!(f, "{x} is not the lower bound of a bucket"),
            Self::NotIncreasing(x) => write!(f, "bucket {x} is out of order or repeated"),
            Self::EmptyBucket(x) => write!(f, "bucket {x} has a count of 0"),
        }
    }
}

impl std::error::Error for SparseHistogramError {}

impl Serialize for SparseHistogram {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.buckets.len()))?;
        for b in &self.buckets {
            seq.serialize_element(&[b.lower, b.count])?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for SparseHistogram {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(PairsVisitor)
    }
}

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = SparseHistogram;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [lower, count] pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(bucket::BUCKETS));
        while let Some([lower, count]) = seq.next_element::<[u64; 2]>()? {
            pairs.push((lower, count));
        }
        SparseHistogram::from_pairs(pairs).map_err(A::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_the_dense_form() {
        let mut h = Histogram::new();
        for x in [1, 1, 2, 40, 41, 1 << 30] {
            h.add(x);
        }
        let s = SparseHistogram::of(&h);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "[[1,2],[2,1],[40,2],[1073741824,1]]");
        let back: SparseHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.to_histogram(), h);
        assert_eq!(back.count(), 6);
        assert_eq!(back.quantiles(), h.quantiles());
        assert_eq!(back.quantile(0.5), Some(2));
    }

    #[test]
    fn rejects_bad_keys_order_and_counts() {
        let bad = |json: &str| serde_json::from_str::<SparseHistogram>(json).unwrap_err();
        assert!(bad("[[33,1]]")
            .to_string()
            .contains("33 is not the lower bound"));
        assert!(bad("[[5,1],[5,1]]").to_string().contains("out of order"));
        assert!(bad("[[5,1],[4,1]]").to_string().contains("out of order"));
        assert!(bad("[[5,0]]").to_string().contains("count of 0"));
        assert!(serde_json::from_str::<SparseHistogram>("[[5,1,2]]").is_err());
        let too_big = format!("[[{},1]]", crate::MAX_SAMPLE + 1);
        assert!(bad(&too_big).to_string().contains("not the lower bound"));
        assert_eq!(
            serde_json::from_str::<SparseHistogram>("[]").unwrap(),
            SparseHistogram::default()
        );
    }
}
