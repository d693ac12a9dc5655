//! What zgate keeps and reports about itself at run time.
//!
//! - `checked.rs`: a config checked whole ([`checked::Checked`]): what `zgate check-config`,
//!   start and a reload all run;
//! - `reload.rs`: a new config checked whole ([`reload::Plan`]) before anything of it applies;
//! - `persist.rs`: the state file (mode and model), written atomically, read at start;
//! - `exporter.rs`: `/metrics`, Prometheus text rendered from a [`exporter::Scrape`] at scrape
//!   time: every family, its help, its labels, in a fixed order;
//! - `exposition.rs`: the Prometheus text format (`# HELP`, `# TYPE`, samples, histograms);
//! - `limiter_metrics.rs`: the limiter's families (mode, model, thresholds, verdicts).

pub mod checked;
pub mod exporter;
mod exposition;
mod limiter_metrics;
pub mod persist;
pub mod reload;
