//! What zgate keeps and reports about itself at run time.
//!
//! - `checked.rs`: a config checked whole ([`checked::Checked`]): what `zgate check-config`,
//!   start and a reload all run;
//! - `reload.rs`: a new config checked whole ([`reload::Plan`]) before anything of it applies;
//! - `persist.rs`: the state file (mode and model), written atomically, read at start;
//! - `stats.rs`: the proxy's own traffic counters (relaxed atomics, sharded where hot);
//! - `exporter.rs`: `/metrics`, Prometheus text rendered from a [`exporter::Scrape`] at scrape
//!   time.

pub mod checked;
pub mod exporter;
pub mod persist;
pub mod reload;
