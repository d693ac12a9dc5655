//! What zgate keeps and reports about itself at run time.
//!
//! - `checked.rs`: a config checked whole ([`checked::Checked`]): what `zgate check-config`,
//!   start and a reload all run;
//! - `reload.rs`: a new config checked whole ([`reload::Plan`]) before anything of it applies;
//! - `fleet.rs`: `[fleet]` started (the `zgate-fleet` task sharing blocks and the model);
//! - `fleet_ca.rs`: `fleet.ca`, the CA file `rediss://` trusts, read and checked;
//! - `persist.rs`: the state file (mode, model, overrides, manual blocks), read at start;
//! - `atomic_file.rs`: a private file written atomically (random exclusive temporary, rename);
//! - `overrides.rs`: runtime overrides of `[limits]`, laid over the config file's values;
//! - `restore.rs`: what the state file gives back at start (manual blocks, overrides);
//! - `exporter.rs`: `/metrics`, Prometheus text rendered from a [`exporter::Scrape`] at scrape
//!   time: every family, its help, its labels, in a fixed order;
//! - `exposition.rs`: the Prometheus text format (`# HELP`, `# TYPE`, samples, histograms);
//! - `limiter_metrics.rs`: the limiter's families (mode, model, thresholds, verdicts).

pub mod atomic_file;
pub mod checked;
pub mod exporter;
mod exposition;
pub(crate) mod fleet;
pub mod fleet_ca;
mod limiter_metrics;
pub mod overrides;
pub mod persist;
pub mod reload;
pub mod restore;
