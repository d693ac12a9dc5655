//! What each client connection costs, counted for the limiter.
//!
//! - `accounting.rs`: the per-connection accounting, sans-IO: it takes `now` and the events
//!   (bytes held and released, requests started and ended, chunks, CPU spent), batches what it
//!   batches, and returns the limiter's verdicts; tested with stepped time;
//! - `forwarded.rs`: a forwarded client (named by a trusted proxy) as one connection charges
//!   it, batched like the connection's own client;
//! - `meter.rs`: the connection's handle on it, shared by the connection's IO, its requests and
//!   its bodies, and the kill switch that acts on the verdicts (logs a block once, wakes the
//!   driver);
//! - `run_share.rs`: the share of its busy wall time a worker thread ran on a CPU, which turns
//!   a poll's wall time into CPU time on a loaded machine;
//! - `timed.rs`: every poll of a connection's task, its HTTP/2 stream tasks and a forwarded
//!   request's work timed and charged (metric P);
//! - `window.rs`: which held request bytes are charged: those beyond the inbound window
//!   zgate granted (sans-IO);
//! - `would_block.rs`: monitor mode's would-block lines, one per client per minute (sans-IO).
//!
//! The IO glue (the `conn` room's IO wrapper and taps; the `http` room's bodies) only forwards
//! events here.

pub mod accounting;
pub mod forwarded;
pub mod meter;
pub mod run_share;
pub mod timed;
pub mod window;
pub mod would_block;
