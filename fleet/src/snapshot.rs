//! One instance's training statistics for an epoch, as stored in Redis, and their sum.
//!
//! A snapshot is absolute (the instance's merged shards at that moment, not a delta), so
//! publishing it again replaces it and a lost write costs nothing. It is JSON keyed by metric
//! name, with the exact power sums as decimal strings (`s1`, `s2` are `u128`, beyond what a JSON
//! number carries exactly) and the histogram's non-empty buckets as `[lower, count]` pairs (the
//! model's own format, `zgate_training::SparseHistogram`):
//! `{"final":true,"metrics":{"cpu":{"n":"12","s1":"3400","s2":"990000","buckets":[[9984,12]]},...}}`.
//! The fleet's model is the wrapping sum of every instance's snapshot, which is exact (see
//! `zgate_training::Moments`), and its histograms are the bucket-by-bucket sums of theirs, so
//! every instance shows the fleet-wide distribution. A snapshot without `buckets` (an instance
//! older than the histograms) reads as an empty histogram.

use serde::{Deserialize, Serialize};
use zgate_training::{Histogram, Metric, Moments, Populations, SparseHistogram};

/// One instance's statistics for one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Per metric, in [`Metric::ALL`] order.
    pub moments: [Moments; Metric::COUNT],
    /// Per metric, in [`Metric::ALL`] order, the histogram's non-empty buckets.
    pub histograms: [SparseHistogram; Metric::COUNT],
    /// Whether training had ended on the instance when it was taken.
    pub last: bool,
}

/// Why a stored snapshot does not decode.
#[derive(Debug)]
pub enum SnapshotError {
    /// Not the JSON shape above (a histogram's buckets included: out of order, a count of 0,
    /// a key that is not a bucket's lower bound).
    Json(serde_json::Error),
    /// A metric is missing or a sum is not a decimal integer.
    Field(String),
}

impl core::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SnapshotError::Json(e) => write!(f, "snapshot is not JSON of the expected shape: {e}"),
            SnapshotError::Field(k) => write!(f, "snapshot field {k} is missing or not a number"),
        }
    }
}

impl std::error::Error for SnapshotError {}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "final")]
    last: bool,
    metrics: std::collections::BTreeMap<String, WireMoments>,
}

#[derive(Serialize, Deserialize)]
struct WireMoments {
    n: String,
    s1: String,
    s2: String,
    #[serde(default)]
    buckets: SparseHistogram,
}

impl Snapshot {
    /// The snapshot of merged populations.
    pub fn of(populations: &Populations, last: bool) -> Snapshot {
        Snapshot {
            moments: populations.metrics.map(|p| p.moments),
            histograms: Metric::ALL.map(|m| SparseHistogram::of(populations.histogram(m))),
            last,
        }
    }

    /// The JSON text stored in Redis.
    pub fn encode(&self) -> String {
        let metrics = Metric::ALL
            .iter()
            .map(|m| {
                let x = &self.moments[m.index()];
                let w = WireMoments {
                    n: x.n.to_string(),
                    s1: x.s1.to_string(),
                    s2: x.s2.to_string(),
                    buckets: self.histograms[m.index()].clone(),
                };
                (m.name().to_owned(), w)
            })
            .collect();
        let wire = Wire {
            last: self.last,
            metrics,
        };
        // A map of strings always serialises.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Parses [`Snapshot::encode`]'s text.
    pub fn decode(text: &str) -> Result<Snapshot, SnapshotError> {
        let mut wire: Wire = serde_json::from_str(text).map_err(SnapshotError::Json)?;
        let mut moments = [Moments::default(); Metric::COUNT];
        let mut histograms: [SparseHistogram; Metric::COUNT] = Default::default();
        for m in Metric::ALL {
            let w = wire
                .metrics
                .get_mut(m.name())
                .ok_or_else(|| SnapshotError::Field(m.name().into()))?;
            let bad = |f: &str| SnapshotError::Field(format!("{}.{f}", m.name()));
            moments[m.index()] = Moments {
                n: w.n.parse().map_err(|_| bad("n"))?,
                s1: w.s1.parse().map_err(|_| bad("s1"))?,
                s2: w.s2.parse().map_err(|_| bad("s2"))?,
            };
            histograms[m.index()] = std::mem::take(&mut w.buckets);
        }
        Ok(Snapshot {
            moments,
            histograms,
            last: wire.last,
        })
    }
}

/// The fleet's populations: the sum of every instance's snapshot, moments and histograms.
pub fn sum<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Populations {
    let mut total = [Moments::default(); Metric::COUNT];
    let mut histograms: [Histogram; Metric::COUNT] = Default::default();
    for s in snapshots {
        for (t, m) in total.iter_mut().zip(s.moments.iter()) {
            t.merge(m);
        }
        for (h, b) in histograms.iter_mut().zip(s.histograms.iter()) {
            h.merge(&b.to_histogram());
        }
    }
    Populations::from_parts(total, histograms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(values: &[u64], last: bool) -> Snapshot {
        let mut m = Moments::default();
        let mut h = Histogram::new();
        values.iter().for_each(|&x| {
            m.add(x);
            h.add(x);
        });
        let mut moments = [Moments::default(); Metric::COUNT];
        moments[Metric::Memory.index()] = m;
        let mut histograms: [SparseHistogram; Metric::COUNT] = Default::default();
        histograms[Metric::Memory.index()] = SparseHistogram::of(&h);
        Snapshot {
            moments,
            histograms,
            last,
        }
    }

    #[test]
    fn round_trips_u128_sums_exactly() {
        let s = snap(&[1 << 40, (1 << 40) - 1, 3], true);
        let text = s.encode();
        assert!(text.contains("\"final\":true"), "{text}");
        assert!(
            text.contains(&format!("\"s2\":\"{}\"", s.moments[3].s2)),
            "{text}"
        );
        assert!(text.contains("\"buckets\":[[3,1],"), "{text}");
        assert_eq!(Snapshot::decode(&text).unwrap(), s);
        assert!(Snapshot::decode("{}").is_err());
        let bad_bucket = text.replace("[[3,1],", "[[3,0],");
        assert!(matches!(
            Snapshot::decode(&bad_bucket),
            Err(SnapshotError::Json(_))
        ));
        // An instance older than the histograms: no `buckets`, an empty histogram.
        let metrics: Vec<String> = Metric::ALL
            .iter()
            .map(|m| format!("\"{}\":{{\"n\":\"1\",\"s1\":\"2\",\"s2\":\"4\"}}", m.name()))
            .collect();
        let old = format!("{{\"final\":true,\"metrics\":{{{}}}}}", metrics.join(","));
        let read = Snapshot::decode(&old).unwrap();
        assert_eq!(read.moments[3].s2, 4);
        assert!(read.histograms.iter().all(|h| h.is_empty()), "{old}");
        let broken = text.replace("\"cpu\"", "\"cpux\"");
        assert!(matches!(
            Snapshot::decode(&broken),
            Err(SnapshotError::Field(_))
        ));
    }

    #[test]
    fn the_fleet_sum_is_the_population_of_all_clients() {
        let a = snap(&[10, 20, 30], true);
        let b = snap(&[40, 50], false);
        let total = sum([&a, &b]);
        let exact = snap(&[10, 20, 30, 40, 50], true);
        assert_eq!(total.get(Metric::Memory).n, 5);
        assert_eq!(total.get(Metric::Memory).moments, exact.moments[3]);
        assert_eq!(total.get(Metric::Memory).mean, 30.0);
        let h = total.histogram(Metric::Memory);
        assert_eq!(h, &exact.histograms[3].to_histogram());
        assert_eq!(h.count(), 5, "the bucket counts add up to n");
        assert_eq!(total.histogram(Metric::Cpu).count(), 0);
    }
}
