//! zgate's proxy: listeners, TLS, protocol detection, the hyper glue, the upstream pool, the
//! admin API, the embedded demo backend and the command line.
//!
//! This crate owns all IO. It is not where decisions about clients are made: those belong to
//! the sans-IO `limiter` and `training` crates, which the proxy feeds with observations.
//!
//! The rooms, each a folder whose `mod.rs` lists its files, in the order a connection meets
//! them; dependencies point down this list, never back up:
//! - `server/`: the lifecycle (start, reload applied, shutdown) and what it shares;
//! - `admin/`: the admin API and the status page (its files in `proxy/ui/`);
//! - `listen/`: bind, accept, admission, TLS, protocol detection, SYN drop;
//! - `conn/`: one connection's driver, IO wrapper, taps, CPU timing;
//! - `http/`: one request: rewriting, bodies, responses of zgate's own;
//! - `upstream/`: the backends and their connection pools;
//! - `account/`: what each connection costs, counted for the limiter; the kill switch;
//! - `state/`: reload planning, the state file, the Prometheus exporter;
//! - `cli/`: arguments, `zgate ctl`, the demo backend, logging;
//! - `worker/`: the data path's threads, one current-thread runtime each (thread-per-core);
//! - `limits.rs` (`[limits]` mapped onto the limiter's and the proxy's settings), `clock.rs`
//!   (the limiter's clock), `stats.rs` (traffic counters), `histogram.rs` (latency buckets),
//!   `escape.rs` (client text made safe for a log line) and `log.rs` (the log subscriber, text
//!   or JSON) are small shared leaves;
//! - `fuzzing/` (feature `fuzzing`, for `fuzz/` only): the fuzz targets' entry points.

pub mod account;
pub mod admin;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod escape;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod histogram;
pub mod http;
pub mod limits;
pub mod listen;
pub mod log;
pub mod server;
pub mod state;
pub mod stats;
pub mod upstream;
pub mod worker;

pub use conn::H2_PREFACE;
pub use server::{ReloadReport, Server, Shutdown, StartError};
