//! Proof of zgate's statistics: exact references, hostile data sets, and the accuracy,
//! property, EMA and fragmentation tests (in `tests/`) and benchmarks (in `benches/`) of the
//! `zgate-training` crate against them.
//!
//! This crate is for tests and benchmarks only; nothing in zgate depends on it. It holds no
//! production code: [`reference`](mod@reference) is a deliberately different algorithm (two-pass, wide
//! integers) so that agreeing with it means something, [`sorted`] checks histograms and
//! quantiles against the sorted samples themselves, and [`data`] generates seeded, reproducible
//! populations.
//!
//! Run: `cargo test -p zgate-unit-math` (the 10^6-client cases rely on the workspace's
//! `opt-level = 3` for this crate's test profile) and `cargo bench -p zgate-unit-math`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod data;
mod ratio;
pub mod reference;
pub mod sorted;
