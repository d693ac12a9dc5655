//! The learned model: per metric `{ n, mean, std }` and the distribution (quantiles and
//! histogram buckets), its parameters (std floor, minimum population), and scoring.

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::metric::Metric;
use crate::per_metric;
use crate::population::Populations;
use crate::quantiles::Quantiles;
use crate::robust::Enforcement;
use crate::sparse::SparseHistogram;

/// The learned statistics of one metric.
///
/// Serialized as `{"n", "mean", "std", "quantiles", "buckets"}`; `quantiles` (null when the
/// population is empty) and `buckets` may be absent, as in models saved before histograms
/// existed: they then read as `None` and empty.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricModel {
    /// Number of clients in the population.
    pub n: u64,
    /// Mean over clients of their maximum, in the metric's unit.
    pub mean: f64,
    /// Population standard deviation (divides by `n`) of the clients' maxima, in the metric's
    /// unit, as measured (before the floor of [`ModelParams::min_std`]).
    pub std: f64,
    /// p50, p90, p99, p99.9 and max of the clients' maxima, in the metric's unit, from the
    /// histogram (within 1/32 relative error; exact below 32). `None` for an empty population
    /// or a model without histograms.
    #[serde(default)]
    pub quantiles: Option<Quantiles>,
    /// The histogram of the clients' maxima: the non-empty buckets. Empty for an empty
    /// population or a model without histograms.
    #[serde(default)]
    pub buckets: SparseHistogram,
}

/// How a model scores, chosen by the operator. Serialized with `min_std` as a map keyed by
/// metric name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Per metric, the floor of the standard deviation used for scoring, in the metric's unit:
    /// `std_effective = max(std, min_std)`, so a population of identical clients (std 0) still
    /// scores an outlier high instead of dividing by zero. Defaults: connections 1, requests
    /// (non-idempotent and any) 1, memory 65536 bytes (64 KiB), cpu 10000 ppm (1% of a core),
    /// fragmentation 8 score units.
    #[serde(with = "per_metric")]
    pub min_std: [f64; Metric::COUNT],
    /// The minimum population: a metric learned from fewer clients is not scored, because its
    /// mean and std say nothing yet; it blocks above its static [`ModelParams::fallback`] cap
    /// only. Default 10
    /// clients.
    pub min_clients: u64,
    /// Per metric, the static cap a thin metric (fewer than `min_clients` clients) falls back
    /// to, in the metric's unit: values above it block (see [`crate::Enforcement`]). Defaults:
    /// connections 64, requests_nonidempotent 32, requests 256, memory 67108864 bytes (64
    /// MiB), cpu 500000 ppm (half a core), fragmentation 100000 score units. Absent from models
    /// saved before it existed: reads as the defaults.
    #[serde(with = "per_metric", default = "default_fallbacks")]
    pub fallback: [u64; Metric::COUNT],
    /// Per metric, a value at or below which a learned metric never blocks, in the metric's
    /// unit, whatever the training saw (the poisoning floor is the larger of this and the
    /// trained maximum, see [`crate::Enforcement`]). Defaults: memory 2097152 bytes (2 MiB:
    /// what one HTTP/2 upload may hold at hyper's 1 MiB stream and connection windows, so a
    /// site trained on GETs does not block its first upload), 0 for the other metrics. Absent
    /// from models saved before it existed: reads as the defaults.
    #[serde(with = "per_metric", default = "default_min_floors")]
    pub min_floor: [u64; Metric::COUNT],
}

fn default_fallbacks() -> [u64; Metric::COUNT] {
    Metric::ALL.map(crate::robust::default_fallback)
}

fn default_min_floors() -> [u64; Metric::COUNT] {
    Metric::ALL.map(crate::robust::default_min_floor)
}

impl ModelParams {
    /// The std floor of `metric`, in its unit.
    pub fn min_std(&self, metric: Metric) -> f64 {
        self.min_std[metric.index()]
    }

    /// The static cap of `metric` when its population is thin, in its unit.
    pub fn fallback(&self, metric: Metric) -> u64 {
        self.fallback[metric.index()]
    }
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            min_std: Metric::ALL.map(default_min_std),
            min_clients: 10,
            fallback: default_fallbacks(),
            min_floor: default_min_floors(),
        }
    }
}

/// The default std floor of `metric`, in its unit (see [`ModelParams::min_std`]). Keyed by
/// name: a new metric does not compile until it has one.
fn default_min_std(metric: Metric) -> f64 {
    match metric {
        Metric::Connections => 1.0,
        Metric::RequestsNonidempotent => 1.0,
        Metric::Requests => 1.0,
        Metric::Memory => 65536.0,
        Metric::Cpu => 10_000.0,
        Metric::Fragmentation => 8.0,
    }
}

/// A trained model: per metric `{ n, mean, std }` and the distribution (quantiles, histogram
/// buckets) from one epoch, and the parameters it scores with. Serialized with `metrics` as a
/// map keyed by metric name; `params` defaults when absent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The training epoch the model was learned in.
    pub epoch: Epoch,
    /// Per metric, in [`Metric::ALL`] order; prefer [`Model::get`].
    #[serde(with = "per_metric")]
    pub metrics: [MetricModel; Metric::COUNT],
    /// The std floors and minimum population used by [`Model::z`] and [`Model::exceeds`].
    #[serde(default)]
    pub params: ModelParams,
}

impl Model {
    /// A model of merged populations.
    pub fn from_populations(
        epoch: Epoch,
        populations: &Populations,
        params: &ModelParams,
    ) -> Model {
        Model {
            epoch,
            metrics: Metric::ALL.map(|m| {
                let p = populations.get(m);
                let h = populations.histogram(m);
                MetricModel {
                    n: p.n,
                    mean: p.mean,
                    std: p.std,
                    quantiles: h.quantiles(),
                    buckets: SparseHistogram::of(h),
                }
            }),
            params: params.clone(),
        }
    }

    /// The same statistics scored with other parameters (e.g. after a config reload).
    pub fn with_params(mut self, params: ModelParams) -> Model {
        self.params = params;
        self
    }

    /// One metric's statistics. O(1).
    pub fn get(&self, metric: Metric) -> &MetricModel {
        &self.metrics[metric.index()]
    }

    /// The standard deviation scoring divides by: `max(std, min_std)` of the metric.
    pub fn std_effective(&self, metric: Metric) -> f64 {
        self.get(metric).std.max(self.params.min_std(metric))
    }

    /// The z-score of `x` for `metric`, positive side only: `(x - mean) / std_effective` when
    /// `x > mean`, else 0.0. A real number, not rounded to whole sigmas. `+inf` if `x > mean`
    /// and both the std and its floor are 0.
    pub fn z(&self, metric: Metric, x: u64) -> f64 {
        let mean = self.get(metric).mean;
        let x = x as f64;
        // Also 0.0 for a NaN mean (a hand-edited model): never block on it.
        if x.partial_cmp(&mean) != Some(core::cmp::Ordering::Greater) {
            return 0.0;
        }
        let std = self.std_effective(metric);
        if std > 0.0 {
            (x - mean) / std
        } else {
            f64::INFINITY
        }
    }

    /// The value of `metric` above which a client is blocked at `threshold` (in standard
    /// deviations), in the metric's unit: `mean + max(threshold, 0) * std_effective`. A sample
    /// `x` exceeds ([`Model::exceeds`]) exactly when `x >` this value (up to the rounding of
    /// `f64` at the boundary), and never below the trained maximum (see [`Enforcement`]). For a thin
    /// metric (fewer than `min_clients` clients), its static fallback cap. `None` when the
    /// metric never blocks: a NaN threshold or mean.
    pub fn blocks_above(&self, metric: Metric, threshold: f64) -> Option<f64> {
        let s = self.get(metric);
        let floor = match self.enforcement(metric) {
            Enforcement::Fallback { cap, .. } => return Some(cap as f64),
            Enforcement::Learned { floor } => floor as f64,
        };
        if threshold.is_nan() || s.mean.is_nan() {
            return None;
        }
        Some((s.mean + threshold.max(0.0) * self.std_effective(metric)).max(floor))
    }

    /// Whether `x` is an anomaly for `metric` at `threshold` (in standard deviations).
    ///
    /// For a thin metric (fewer than `min_clients` clients): true iff `x` is above its static
    /// fallback cap. Otherwise true iff `x` is above the trained maximum (the poisoning floor,
    /// see [`Enforcement`]), `x > mean`, and the
    /// real z of [`Model::z`] is strictly greater than `threshold`: `z == threshold` is not
    /// blocked, and e.g. threshold 3.0 blocks z 3.0001. A value at or below the mean never
    /// exceeds, whatever the threshold (so a threshold <= 0 blocks everything above the mean, and
    /// nothing else). A NaN threshold never exceeds.
    pub fn exceeds(&self, metric: Metric, x: u64, threshold: f64) -> bool {
        match self.enforcement(metric) {
            Enforcement::Fallback { cap, .. } => x > cap,
            Enforcement::Learned { floor } => {
                let z = self.z(metric, x);
                x > floor && z > 0.0 && z > threshold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::TrainingSet;

    fn trained(values: &[u64], metric: Metric, params: &ModelParams) -> Model {
        let set = TrainingSet::new(3, 1);
        let w = set.writer();
        values.iter().for_each(|&x| w.add(metric, x));
        set.finalize(params)
    }

    #[test]
    fn z_is_real_and_positive_side_only() {
        let values: Vec<u64> = (1..=20).collect();
        let m = trained(&values, Metric::Requests, &ModelParams::default());
        let std = 5.766_281_297_335_398;
        assert_eq!(m.epoch, 3);
        assert!((m.z(Metric::Requests, 20) - 9.5 / std).abs() < 1e-12);
        assert_eq!(m.z(Metric::Requests, 10), 0.0);
        assert_eq!(m.z(Metric::Requests, 0), 0.0);
    }

    #[test]
    fn boundary_z_equal_threshold_is_not_blocked() {
        // mean 10, std 2 (values 8 and 12, 10 clients)
        let values = [8, 12, 8, 12, 8, 12, 8, 12, 8, 12];
        let m = trained(&values, Metric::Connections, &ModelParams::default());
        assert_eq!(m.get(Metric::Connections).mean, 10.0);
        assert_eq!(m.get(Metric::Connections).std, 2.0);
        assert_eq!(m.z(Metric::Connections, 16), 3.0);
        assert!(!m.exceeds(Metric::Connections, 16, 3.0));
        assert!(m.exceeds(Metric::Connections, 17, 3.0));
        assert!(m.exceeds(Metric::Connections, 16, 2.999));
        assert_eq!(m.blocks_above(Metric::Connections, 3.0), Some(16.0));
        // Never below the trained maximum (12 here): the poisoning floor.
        assert_eq!(m.blocks_above(Metric::Connections, -1.0), Some(12.0));
        assert!(!m.exceeds(Metric::Connections, 12, -1.0));
        assert!(m.exceeds(Metric::Connections, 13, -1.0));
        assert_eq!(m.blocks_above(Metric::Connections, f64::NAN), None);
        assert!(!m.exceeds(Metric::Connections, 9, -1.0));
        assert!(!m.exceeds(Metric::Connections, 100, f64::NAN));
    }

    #[test]
    fn floor_makes_identical_clients_then_outlier_block() {
        let m = trained(&[2; 50], Metric::Connections, &ModelParams::default());
        assert_eq!(m.get(Metric::Connections).std, 0.0);
        assert_eq!(m.z(Metric::Connections, 2), 0.0);
        assert_eq!(m.z(Metric::Connections, 6), 4.0); // floor 1 connection
        assert!(m.exceeds(Metric::Connections, 6, 3.0));
        assert!(!m.exceeds(Metric::Connections, 5, 3.0));
        let no_floor = m.with_params(ModelParams {
            min_std: [0.0; Metric::COUNT],
            ..ModelParams::default()
        });
        assert_eq!(no_floor.z(Metric::Connections, 3), f64::INFINITY);
        assert_eq!(no_floor.z(Metric::Connections, 2), 0.0);
    }

    #[test]
    fn small_population_is_not_scored_but_capped() {
        let m = trained(&[1; 9], Metric::Memory, &ModelParams::default());
        // z is far over 3, but 9 < min_clients: only the static fallback cap (64 MiB) applies.
        assert!(m.z(Metric::Memory, 1 << 20) > 3.0);
        assert!(!m.exceeds(Metric::Memory, 64 << 20, 3.0));
        assert!(m.exceeds(Metric::Memory, (64 << 20) + 1, 3.0));
        assert_eq!(
            m.blocks_above(Metric::Memory, 3.0),
            Some((64u64 << 20) as f64)
        );
    }

    #[test]
    fn serde_round_trip_with_named_metrics() {
        let values: Vec<u64> = (1..=20).collect();
        let m = trained(&values, Metric::Cpu, &ModelParams::default());
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains("\"requests_nonidempotent\":{\"n\":0"),
            "{json}"
        );
        assert!(json.contains("\"cpu\":{\"n\":20,\"mean\":10.5"), "{json}");
        assert!(
            json.contains(
                "\"quantiles\":{\"p50\":10,\"p90\":18,\"p99\":20,\"p99_9\":20,\"max\":20}"
            ),
            "{json}"
        );
        assert!(json.contains("\"buckets\":[[1,1],[2,1],[3,1],"), "{json}");
        assert!(json.contains("\"quantiles\":null,\"buckets\":[]"), "{json}");
        let back: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn the_model_carries_the_distribution() {
        let values: Vec<u64> = (1..=1000).collect();
        let m = trained(&values, Metric::Memory, &ModelParams::default());
        let memory = m.get(Metric::Memory);
        assert_eq!(memory.buckets.count(), 1000);
        let q = memory.quantiles.unwrap();
        assert_eq!(Some(q), memory.buckets.quantiles());
        for (got, exact) in [(q.p50, 500), (q.p90, 900), (q.p99, 990), (q.p99_9, 999)] {
            assert!(got.abs_diff(exact) * 32 <= exact, "{got} for {exact}");
        }
        assert!((1000..=1000 + 1000 / 16).contains(&q.max), "{}", q.max);
        assert_eq!(m.get(Metric::Cpu).quantiles, None);
        assert!(m.get(Metric::Cpu).buckets.is_empty());
    }

    #[test]
    fn a_model_saved_without_histograms_still_loads() {
        let mm = r#"{"n":1,"mean":1.0,"std":0.0}"#;
        let entries: Vec<String> = Metric::ALL
            .iter()
            .map(|m| format!("\"{m}\":{mm}"))
            .collect();
        let json = format!("{{\"epoch\":1,\"metrics\":{{{}}}}}", entries.join(","));
        let m: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(m.get(Metric::Cpu).quantiles, None);
        assert!(m.get(Metric::Cpu).buckets.is_empty());
        let bad = json.replacen(r#""std":0.0}"#, r#""std":0.0,"buckets":[[33,1]]}"#, 1);
        let err = serde_json::from_str::<Model>(&bad).unwrap_err();
        assert!(
            err.to_string().contains("33 is not the lower bound"),
            "{err}"
        );
    }

    #[test]
    fn serde_rejects_missing_duplicate_and_unknown_metrics() {
        let mm = r#"{"n":1,"mean":1.0,"std":0.0}"#;
        let names = [
            "connections",
            "requests_nonidempotent",
            "requests",
            "memory",
            "cpu",
        ];
        let body = |names: &[&str]| {
            let entries: Vec<String> = names.iter().map(|n| format!("\"{n}\":{mm}")).collect();
            format!("{{\"epoch\":1,\"metrics\":{{{}}}}}", entries.join(","))
        };
        let missing = serde_json::from_str::<Model>(&body(&names)).unwrap_err();
        assert!(missing.to_string().contains("fragmentation"), "{missing}");
        let mut dup = names.to_vec();
        dup.push("cpu");
        let dup = serde_json::from_str::<Model>(&body(&dup)).unwrap_err();
        assert!(dup.to_string().contains("duplicate metric `cpu`"), "{dup}");
        let mut unknown = names.to_vec();
        unknown.push("frag");
        assert!(serde_json::from_str::<Model>(&body(&unknown)).is_err());
        let mut all = names.to_vec();
        all.push("fragmentation");
        let ok = serde_json::from_str::<Model>(&body(&all)).unwrap();
        assert_eq!(ok.params, ModelParams::default());
    }
}
