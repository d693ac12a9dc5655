//! Whether a model from outside (a state file, the admin API) is usable: [`Model::validate`].

use core::fmt;

use crate::metric::Metric;
use crate::model::Model;

impl Model {
    /// Checks that every statistic is usable for scoring: per metric, `mean` and `std` finite and
    /// `>= 0`, quantiles (if any) in order, and `params.min_std` finite and `>= 0`. The first bad
    /// value is the error. (The buckets were checked when they were read.)
    ///
    /// A model this crate learned always passes; one read from a file or sent by an operator
    /// may not.
    pub fn validate(&self) -> Result<(), InvalidModel> {
        let usable = |x: f64| x.is_finite() && x >= 0.0;
        for m in Metric::ALL {
            let s = self.get(m);
            if !usable(s.mean) {
                return Err(InvalidModel::Mean(m));
            }
            if !usable(s.std) {
                return Err(InvalidModel::Std(m));
            }
            if let Some(q) = &s.quantiles {
                if !(q.p50 <= q.p90 && q.p90 <= q.p99 && q.p99 <= q.p99_9 && q.p99_9 <= q.max) {
                    return Err(InvalidModel::Quantiles(m));
                }
            }
            if !usable(self.params.min_std(m)) {
                return Err(InvalidModel::MinStd(m));
            }
        }
        Ok(())
    }
}

/// The value of a model that is not usable, named as in its serialized form
/// (`cpu.mean`, `params.min_std.cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidModel {
    /// `<metric>.mean` is negative or not finite.
    Mean(Metric),
    /// `<metric>.std` is negative or not finite.
    Std(Metric),
    /// `<metric>.quantiles` are not in increasing order (`p50 <= p90 <= p99 <= p99_9 <= max`).
    Quantiles(Metric),
    /// `params.min_std.<metric>` is negative or not finite.
    MinStd(Metric),
}

impl fmt::Display for InvalidModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidModel::Mean(m) => write!(f, "{m}.mean must be finite and >= 0"),
            InvalidModel::Std(m) => write!(f, "{m}.std must be finite and >= 0"),
            InvalidModel::Quantiles(m) => write!(
                f,
                "{m}.quantiles must be in order: p50 <= p90 <= p99 <= p99_9 <= max"
            ),
            InvalidModel::MinStd(m) => write!(f, "params.min_std.{m} must be finite and >= 0"),
        }
    }
}

impl std::error::Error for InvalidModel {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricModel, ModelParams};
    use crate::quantiles::Quantiles;
    use crate::sparse::SparseHistogram;

    fn model() -> Model {
        Model {
            epoch: 3,
            metrics: Metric::ALL.map(|_| MetricModel {
                n: 20,
                mean: 2.0,
                std: 1.0,
                quantiles: None,
                buckets: SparseHistogram::default(),
            }),
            params: ModelParams::default(),
        }
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(model().validate(), Ok(()));
        let mut m = model();
        m.metrics[Metric::Connections.index()].std = -1.0;
        let e = m.validate().unwrap_err();
        assert_eq!(e, InvalidModel::Std(Metric::Connections));
        assert!(e.to_string().contains("connections.std"), "{e}");
        let mut m = model();
        m.metrics[Metric::Cpu.index()].mean = f64::NAN;
        assert!(m.validate().unwrap_err().to_string().contains("cpu.mean"));
        let mut m = model();
        let q = Quantiles {
            p50: 2,
            p90: 3,
            p99: 4,
            p99_9: 4,
            max: 5,
        };
        m.metrics[Metric::Requests.index()].quantiles = Some(q);
        assert_eq!(m.validate(), Ok(()));
        m.metrics[Metric::Requests.index()].quantiles = Some(Quantiles { max: 3, ..q });
        let e = m.validate().unwrap_err();
        assert_eq!(e, InvalidModel::Quantiles(Metric::Requests));
        assert!(e.to_string().contains("requests.quantiles"), "{e}");
        let mut m = model();
        m.params.min_std[Metric::Memory.index()] = f64::INFINITY;
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "params.min_std.memory must be finite and >= 0"
        );
    }
}
