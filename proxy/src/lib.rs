//! zgate's proxy: listeners, TLS, protocol detection, the hyper glue, the upstream pool, the
//! embedded demo backend and the command line.
//!
//! This crate owns all IO. It is not where decisions about clients are made: those belong to the
//! sans-IO `limiter` and `training` crates, which the proxy feeds with observations.

pub mod activity;
pub mod admin;
pub mod body;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod ctl;
pub mod demo;
pub mod detect;
pub mod headers;
pub mod io;
pub mod limits;
pub mod logging;
pub mod meter;
pub mod metrics;
pub mod persist;
pub mod reload;
pub mod server;
pub mod service;
pub mod stats;
#[cfg(target_os = "linux")]
pub mod syndrop;
pub mod tap;
pub mod timed;
pub mod tls;
pub mod upstream;

pub use server::{ReloadReport, Server, StartError};
