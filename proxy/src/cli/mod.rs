//! The `zgate` command line and what only it uses.
//!
//! - `args.rs`: the arguments and subcommands;
//! - `ctl.rs`: `zgate ctl`, the admin API's client;
//! - `demo.rs`: the embedded demo backend (`zgate demo`, `zgate backend`, the tests);
//! - `logging.rs`: the log subscriber.

mod args;
pub mod ctl;
pub mod demo;
pub mod logging;

pub use args::{parse, Command, USAGE};
