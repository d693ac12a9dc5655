//! The merged statistics of a training set: per metric `n`, mean and std, with the exact moments
//! they come from, and the merged histogram.

use crate::histogram::Histogram;
use crate::metric::Metric;
use crate::moments::Moments;

/// One metric's population over clients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Population {
    /// Number of clients with a sample (0 for an empty or inconsistent population).
    pub n: u64,
    /// Mean of the samples, in the metric's unit.
    pub mean: f64,
    /// Population standard deviation (divides by `n`), in the metric's unit.
    pub std: f64,
    /// The exact power sums behind `n`, `mean` and `std`; merge these, not the floats.
    pub moments: Moments,
}

impl Population {
    /// The statistics of `moments`.
    pub fn from_moments(moments: Moments) -> Population {
        Population {
            n: moments.count(),
            mean: moments.mean(),
            std: moments.std(),
            moments,
        }
    }
}

/// Every metric's [`Population`] and [`Histogram`], indexed by [`Metric::index`].
#[derive(Clone, Debug, PartialEq)]
pub struct Populations {
    /// Per metric, in [`Metric::ALL`] order; prefer [`Populations::get`].
    pub metrics: [Population; Metric::COUNT],
    /// Per metric, in [`Metric::ALL`] order, the merged histogram of the samples; prefer
    /// [`Populations::histogram`].
    pub histograms: [Histogram; Metric::COUNT],
}

impl Populations {
    /// The statistics of per-metric moments (in [`Metric::ALL`] order), with empty histograms.
    pub fn from_moments(moments: [Moments; Metric::COUNT]) -> Populations {
        Populations::from_parts(moments, Default::default())
    }

    /// The statistics of per-metric moments and histograms (in [`Metric::ALL`] order).
    pub fn from_parts(
        moments: [Moments; Metric::COUNT],
        histograms: [Histogram; Metric::COUNT],
    ) -> Populations {
        Populations {
            metrics: moments.map(Population::from_moments),
            histograms,
        }
    }

    /// One metric's population. O(1).
    pub fn get(&self, metric: Metric) -> &Population {
        &self.metrics[metric.index()]
    }

    /// One metric's merged histogram. O(1).
    pub fn histogram(&self, metric: Metric) -> &Histogram {
        &self.histograms[metric.index()]
    }

    /// The populations of the union of `self` and `other` (e.g. another instance's shards),
    /// computed exactly from the moments and the histograms' counts.
    pub fn merge(&self, other: &Populations) -> Populations {
        let mut moments = self.metrics.map(|p| p.moments);
        for (m, o) in moments.iter_mut().zip(other.metrics.iter()) {
            m.merge(&o.moments);
        }
        let mut histograms = self.histograms.clone();
        for (h, o) in histograms.iter_mut().zip(other.histograms.iter()) {
            h.merge(o);
        }
        Populations::from_parts(moments, histograms)
    }
}
