//! What zgate keeps and reports about itself at run time.
//!
//! - `reload.rs`: a new config checked whole ([`reload::Plan`]) before anything of it applies;
//! - `persist.rs`: the state file (mode, model, overrides, manual blocks), read at start;
//! - `atomic_file.rs`: a private file written atomically (random exclusive temporary, rename);
//! - `overrides.rs`: runtime overrides of `[limits]`, laid over the config file's values;
//! - `restore.rs`: what the state file gives back at start (manual blocks, overrides);
//! - `stats.rs`: the proxy's own traffic counters (relaxed atomics, sharded where hot);
//! - `exporter.rs`: `/metrics`, Prometheus text rendered from a [`exporter::Scrape`] at scrape
//!   time.

pub mod atomic_file;
pub mod exporter;
pub mod overrides;
pub mod persist;
pub mod reload;
pub mod restore;
