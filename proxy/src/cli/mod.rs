//! The `zgate` command line and what only it uses.
//!
//! - `args.rs`: the arguments and subcommands (`clap`);
//! - `ctl.rs`: `zgate ctl`'s arguments and entry point;
//! - `ctl_commands.rs`: its commands, over the admin API;
//! - `admin_client.rs`: its HTTP client (hyper; rustls for https admin URLs);
//! - `model_lines.rs`: `ctl model`'s per-metric lines in each metric's unit;
//! - `demo.rs`: the embedded demo backend (`zgate demo`, `zgate backend`, the tests);
//! - `logging.rs`: the log subscriber.

pub mod admin_client;
mod args;
pub mod ctl;
mod ctl_commands;
pub mod demo;
pub mod logging;
mod model_lines;

pub use args::{command, parse, ArgsError, Command, VERSION};
