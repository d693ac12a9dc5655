//! zgate's statistics: what normal clients look like, and how far a client is from them.
//!
//! This crate is for the pure math of DESIGN.md §3: per-worker sharded accumulators of the
//! clients' per-metric maxima ([`TrainingSet`], [`ShardWriter`]), their exact merge into
//! population statistics ([`Populations`]), the learned [`Model`] with its std floor and minimum
//! population, z-scoring ([`Model::z`], [`Model::exceeds`]) and the one rule for a valid
//! threshold ([`check_threshold`]), the checks of a model from outside ([`Model::validate`]),
//! the CPU EMA of metric P ([`CpuEma`]) and the fragmentation score of metric F
//! ([`Fragments`]).
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
//! # Epochs
//!
//! A new training epoch is a new [`TrainingSet`]; see the [`set`] module docs for what the
//! caller does to ignore state from older epochs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ema;
mod epoch;
mod fragments;
mod metric;
mod model;
mod model_check;
mod moments;
mod per_metric;
mod population;
pub mod set;
mod shard;
mod threshold;
mod wide;

pub use ema::CpuEma;
pub use epoch::Epoch;
pub use fragments::{fragmentation_score, Fragments, FRAG_SCALE};
pub use metric::{Metric, UnknownMetric};
pub use model::{MetricModel, Model, ModelParams};
pub use model_check::InvalidModel;
pub use moments::{Moments, MAX_SAMPLE};
pub use population::{Population, Populations};
pub use set::{ShardWriter, TrainingSet};
pub use threshold::{check_threshold, InvalidThreshold};
