//! zgate's statistics: what normal clients look like, and how far a client is from them.
//!
//! This crate is for the pure math of DESIGN.md §3: per-worker sharded accumulators of the
//! clients' per-metric maxima ([`TrainingSet`], [`ShardWriter`]), their exact merge into
//! population statistics and histograms ([`Populations`], [`Histogram`]), the learned [`Model`]
//! with its distribution ([`Quantiles`], [`SparseHistogram`]), std floor and minimum population,
//! z-scoring ([`Model::z`], [`Model::exceeds`], [`Model::blocks_above`]) and the one rule for a
//! valid threshold ([`check_threshold`]), the checks of a model from outside
//! ([`Model::validate`]), the CPU EMA of metric P ([`CpuEma`]) and the fragmentation score of
//! metric F ([`Fragments`]).
//!
//! It is not for anything with IO or time of its own: it is sans-IO, with no clock (times are
//! nanosecond arguments), no threads spawned, no sockets, no logging. It holds no per-client
//! state either: the limiter owns the client table and tells this crate about samples. It knows
//! nothing of config files; the caller turns config into [`ModelParams`].
//!
//! # The accumulators
//!
//! Each metric's population is kept as exact power sums `n`, `S1 = sum x`, `S2 = sum x^2` in
//! wrapping 64/128-bit integers ([`Moments`]). Adding, raising (`old -> new`) and removing a
//! sample are additions of deltas, so they may happen on any shard in any order; the sum over
//! shards is exact (samples are clamped to [`MAX_SAMPLE`] = 2^40, which keeps the true sums in
//! range for fewer than 2^48 clients). The variance `(n * S2 - S1^2) / n^2` is computed exactly
//! in 256-bit integers and rounded once to `f64`, so large means with tiny spreads lose nothing.
//! The standard deviation is the population std (divides by `n`). Tempesta's accuracy program
//! reached the same choice: integer power sums are exact at 128 bits.
//!
//! # The histograms
//!
//! Beside the moments, each shard keeps per metric a mergeable log-linear [`Histogram`] of the
//! same samples ([`bucket`] module): 16 buckets per power of two (the resolution of the
//! Prometheus native-histogram schema 4) with linear sub-buckets, one bucket per value below
//! 32 (so 0 has a zero bucket and small counts are exact), [`bucket::BUCKETS`] = 593 buckets up
//! to `MAX_SAMPLE`. The bucket of a sample is a `leading_zeros`, a shift and an add. Adding a
//! sample increments its bucket, removing one decrements it, and a raise moves one count from
//! the old value's bucket to the new one's (nothing when they share a bucket): wrapping signed
//! counts, written like the moments by the shard's one writer with plain stores, merged by
//! addition, so a raise may happen on any shard and the merged histogram is exactly that of the
//! surviving samples. A live merge (writers active) reads the counts without the seqlock's
//! retry, so it may be off by the updates in flight; with writers idle it is exact.
//!
//! Memory: 593 counts x 8 bytes = 4,744 bytes per metric per shard, 28,464 bytes per shard for
//! the six metrics (beside 256 bytes of moments), whatever the number of clients. A model keeps
//! only the non-empty buckets.
//!
//! Quantiles (p50, p90, p99, p99.9; nearest rank, [`quantiles::rank`]) are the midpoint of the
//! bucket holding the sample of that rank: within 1/32 = 3.125% relative error of the exact
//! quantile ([`bucket::RELATIVE_ERROR`]), exact below 32 (Prometheus's geometric buckets of the
//! same count give 2.2%; linear sub-buckets trade that for an index without a table or a
//! logarithm, and are finer at the top of each power of two). The maximum is the top of the
//! highest non-empty bucket: never below the true maximum, at most 1/16 above it, and, unlike a
//! tracked running maximum, still right after the largest sample is removed.
//!
//! # Epochs
//!
//! A new training epoch is a new [`TrainingSet`]; see the [`set`] module docs for what the
//! caller does to ignore state from older epochs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bucket;
mod ema;
mod epoch;
mod fragments;
mod histogram;
mod metric;
mod model;
mod model_check;
mod moments;
mod per_metric;
mod population;
pub mod quantiles;
mod robust;
pub mod set;
mod shard;
mod sparse;
mod threshold;
mod wide;

pub use ema::CpuEma;
pub use epoch::Epoch;
pub use fragments::{fragmentation_score, Fragments, FRAG_SCALE};
pub use histogram::Histogram;
pub use metric::{Metric, UnknownMetric};
pub use model::{MetricModel, Model, ModelParams};
pub use model_check::InvalidModel;
pub use moments::{Moments, MAX_SAMPLE};
pub use population::{Population, Populations};
pub use quantiles::{Bucket, Quantiles};
pub use robust::Enforcement;
pub use set::{ShardWriter, TrainingSet};
pub use sparse::{SparseHistogram, SparseHistogramError};
pub use threshold::{check_threshold, InvalidThreshold};
