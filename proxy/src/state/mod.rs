//! What zgate keeps and reports about itself at run time.
//!
//! - `reload.rs`: a new config checked whole ([`reload::Plan`]) before anything of it applies;
//! - `persist.rs`: the state file (mode and model), written atomically, read at start;
//! - `stats.rs`: the proxy's own traffic counters (relaxed atomics, sharded where hot);
//! - `fleet.rs`: `[fleet]` started (the `zgate-fleet` task sharing blocks and the model);
//! - `exporter.rs`: `/metrics`, Prometheus text rendered from a [`exporter::Scrape`] at scrape
//!   time.

pub mod exporter;
pub(crate) mod fleet;
pub mod persist;
pub mod reload;
