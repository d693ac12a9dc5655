//! How a model enforces one metric, beyond the z-score: the poisoning floor and the static
//! fallback of a thin population.
//!
//! - **Poisoning floor.** A flood of low-activity clients during training (3000 addresses with
//!   one connection each) drags the mean down and shrinks the std, so a normal client's usual
//!   value scores high. A learned metric therefore never blocks at or below the largest value a
//!   trained client reached ([`Quantiles::max`], from the histogram: never below the true
//!   maximum, at most 1/16 above it): whatever the z, a client must do more than every client
//!   seen in training did. No number of one-shot clients can lower that point. (A high
//!   quantile would not do: beside 3000 one-shot clients, p99.9 is the 4th highest of 3020,
//!   so one normal client in 20 with a rare high value is still blocked.) The trade-off: an
//!   attacker present during training raises the bar to its own level, alone; monitor mode
//!   (validate a model before enforcing it; read its maxima with `zgate ctl model`) and the
//!   static guards, on in every mode, are what protect then. The floor is never below the
//!   metric's `min_floor` ([`crate::ModelParams::min_floor`]; memory: 2 MiB, one HTTP/2
//!   upload's windows), so a site trained on GETs alone does not block its first upload.
//! - **Thin populations.** A metric learned from fewer than `min_clients` clients says nothing
//!   about normal behaviour, so it is not scored: it falls back to a static cap,
//!   [`ModelParams::fallback`], in the metric's unit, and blocks any value above it.

use crate::metric::Metric;
use crate::model::Model;
#[cfg(doc)]
use crate::quantiles::Quantiles;

/// How a model enforces a metric; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Enforcement {
    /// Enough clients: z-score above the threshold and above `floor` (the trained maximum, or
    /// the metric's `min_floor` if higher, in the metric's unit).
    Learned {
        /// Values at or below this never block.
        floor: u64,
    },
    /// Fewer than `min_clients` clients (`n` of them): values above `cap` block.
    Fallback {
        /// Clients the metric was learned from.
        n: u64,
        /// The static cap, in the metric's unit.
        cap: u64,
    },
}

/// The default static cap of a thin `metric`, in its unit (see [`crate::ModelParams::fallback`]).
/// Keyed by name: a new metric does not compile until it has one.
pub(crate) fn default_fallback(metric: Metric) -> u64 {
    match metric {
        // Browsers open up to 6 per host, a few hosts behind one NAT.
        Metric::Connections => 64,
        // Concurrent POSTs from one client.
        Metric::RequestsNonidempotent => 32,
        // Concurrent requests of any method (HTTP/2 browsers: about 100 streams).
        Metric::Requests => 256,
        // 64 MiB held for one client.
        Metric::Memory => 64 << 20,
        // 50% of a core (ppm).
        Metric::Cpu => 500_000,
        // N k / avg with N = 1024: chunks averaging ~10 bytes over ~1000 chunks. A 20 MiB
        // upload in 16 KiB frames scores 80, in 1460-byte reads about 10_000.
        Metric::Fragmentation => 100_000,
    }
}

/// The default value of `metric` at or below which a learned metric never blocks (see
/// [`crate::ModelParams::min_floor`]), in its unit. Keyed by name.
pub(crate) fn default_min_floor(metric: Metric) -> u64 {
    match metric {
        // One HTTP/2 upload at hyper's default 1 MiB windows, plus the stream and
        // connection costs.
        Metric::Memory => 2 << 20,
        Metric::Connections
        | Metric::RequestsNonidempotent
        | Metric::Requests
        | Metric::Cpu
        | Metric::Fragmentation => 0,
    }
}

impl Model {
    /// How `metric` is enforced: see [`Enforcement`].
    pub fn enforcement(&self, metric: Metric) -> Enforcement {
        let s = self.get(metric);
        if s.n < self.params.min_clients {
            return Enforcement::Fallback {
                n: s.n,
                cap: self.params.fallback(metric),
            };
        }
        Enforcement::Learned {
            floor: s
                .quantiles
                .map_or(0, |q| q.max)
                .max(self.params.min_floor[metric.index()]),
        }
    }

    /// The metrics that are not learned (fewer than `min_clients` clients), with their
    /// population size: they block above their static fallback cap only.
    pub fn thin_metrics(&self) -> impl Iterator<Item = (Metric, u64)> + '_ {
        Metric::ALL
            .into_iter()
            .filter_map(|m| match self.enforcement(m) {
                Enforcement::Fallback { n, .. } => Some((m, n)),
                Enforcement::Learned { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::set::TrainingSet;
    use crate::{Metric, Model, ModelParams};

    fn trained(values: &[(u64, usize)], metric: Metric) -> Model {
        let set = TrainingSet::new(1, 1);
        let w = set.writer();
        for &(x, count) in values {
            (0..count).for_each(|_| w.add(metric, x));
        }
        set.finalize(&ModelParams::default())
    }

    #[test]
    fn one_shot_flood_in_training_does_not_block_normal_clients() {
        // The case: 3000 addresses with one connection, 19 browsers with 5 and one
        // client behind a NAT with 24 (0.03% of the population: above its p99.9).
        let m = trained(&[(1, 3000), (5, 19), (24, 1)], Metric::Connections);
        assert!(m.z(Metric::Connections, 5) > 3.0, "the z alone would block");
        assert!(m.get(Metric::Connections).quantiles.unwrap().p99_9 < 24);
        assert!(!m.exceeds(Metric::Connections, 5, 3.0));
        assert!(!m.exceeds(Metric::Connections, 24, 3.0));
        assert!(m.exceeds(Metric::Connections, 25, 3.0));
        assert_eq!(m.blocks_above(Metric::Connections, 3.0), Some(24.0));
    }

    #[test]
    fn a_clean_population_keeps_its_z_threshold() {
        // mean 10, std 2: z 3 is 16, above the max 12.
        let m = trained(&[(8, 50), (12, 50)], Metric::Connections);
        assert!(!m.exceeds(Metric::Connections, 16, 3.0));
        assert!(m.exceeds(Metric::Connections, 17, 3.0));
        // A low threshold never blocks a value the trained clients reached.
        assert!(!m.exceeds(Metric::Connections, 12, 0.5));
        assert!(m.exceeds(Metric::Connections, 13, 0.5));
    }

    #[test]
    fn a_thin_metric_falls_back_to_its_static_cap() {
        let m = trained(&[(1, 50)], Metric::Requests);
        let thin: Vec<_> = m.thin_metrics().collect();
        assert_eq!(thin.len(), Metric::COUNT - 1);
        assert!(thin.contains(&(Metric::Fragmentation, 0)));
        assert!(!m.exceeds(Metric::Fragmentation, 100_000, 3.0));
        assert!(m.exceeds(Metric::Fragmentation, 100_001, 3.0));
        assert_eq!(m.blocks_above(Metric::Fragmentation, 3.0), Some(100_000.0));
        assert!(m.exceeds(Metric::RequestsNonidempotent, 33, 3.0));
        assert!(!m.exceeds(Metric::RequestsNonidempotent, 32, 3.0));
    }
}
