//! zgate's limiter: decides, per client, whether to let its traffic through.
//!
//! It owns the bounded client table (per-client live counters and per-epoch maxima of the six
//! metrics of DESIGN.md §2), the mode machine (disabled, training, defence, monitor) on top of
//! the `training` crate's accumulators and model, the block list with expiry, the static guards
//! (hard caps active in every mode) and counters of every decision. The proxy calls
//! [`Limiter::connection_opened`] on accept and the events of the returned [`Connection`]
//! handle; every call returns a [`Verdict`] that the proxy acts on.
//!
//! It is **sans-IO**: no clock (every event takes `now: Nanos` from the caller), no threads, no
//! sockets, no logging. It is not the statistics (see `zgate-training`), not the proxy glue
//! that measures bytes, CPU time and frames (see `zgate-proxy`), and not the TOML config (the
//! proxy maps the `config` crate's `[limits]` onto [`LimiterConfig`]). It re-exports what the
//! proxy needs of `zgate-training` ([`Metric`], [`Model`], [`check_threshold`], ...), so the
//! proxy depends on this crate alone.
//!
//! # Example
//! ```
//! use std::net::IpAddr;
//! use zgate_limiter::{Limiter, LimiterConfig, Mode, Nanos, Verdict};
//!
//! let limiter = Limiter::new(LimiterConfig::default(), None, Nanos(0))?;
//! limiter.set_mode(Mode::Training, Nanos(0))?;
//! let ip: IpAddr = "192.0.2.7".parse()?;
//! // On accept (after the cheap `is_blocked` check):
//! let (conn, verdict) = limiter.connection_opened(ip, Nanos(1_000));
//! assert_eq!(verdict, Verdict::Allow);
//! let conn = conn.expect("not blocked");
//! // Events on the handle: no table lookup.
//! let (request, verdict) = conn.request_started(false, Nanos(2_000));
//! assert!(verdict.is_allow());
//! conn.memory_grew(16 << 10, Nanos(2_000));
//! drop(request); // the request finished
//! conn.close(Nanos(3_000));
//! // Training -> defence finalizes the model; without one, defence is refused.
//! limiter.set_mode(Mode::Defence, Nanos(4_000))?;
//! assert_eq!(limiter.status(Nanos(4_000)).model_epoch, Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design notes
//! - **Hot path.** Events go through the per-connection handle, which holds an
//!   `Arc<ClientState>`: no map lookup. A typical event costs one relaxed load of the
//!   mode/epoch word, a load of the client's block time, one `fetch_add` on the client's
//!   counter, and, in defence, a lock-free model read (`arc-swap`). Training samples go to a
//!   per-thread shard writer cached in a thread-local; only a new per-client maximum takes the
//!   client's small lock. Disabled mode returns after the mode load (plus the guards).
//! - **Bounded table.** At `max_clients`, clients without open connections are evicted (idle
//!   first; blocked or not: blocks live in the block list, which aggregates into wider prefixes
//!   when full); if none can be, the new client is admitted untracked, with the static guards
//!   only ([`Guard::TableFull`] is no longer returned for a newcomer). Memory per client is
//!   222 to 240 bytes including the map and the eviction queue (a 152-byte state behind an
//!   `Arc`, a 24-byte map entry, a 16-byte queue key; `cargo bench -p zgate-limiter --bench
//!   memory`, figures in `bench/results/limiter-memory.md`).
//! - **Client identity.** A request may belong to another client than its connection (behind
//!   a trusted proxy): [`Limiter::forwarded`] gives a [`ClientHandle`] on that client, which a
//!   [`Request`] and its memory, chunks and CPU are charged to; the connection-level metrics
//!   stay with the connection's owner. Exempt prefixes ([`Limiter::set_exempt`]) are measured,
//!   never blocked, never sampled.
//! - **Epochs.** Live counters are never reset by an epoch; the RAII handles give back exactly
//!   what they added, so nothing underflows across epochs. Per-epoch maxima reset lazily.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blocklist;
mod client;
mod config;
mod connection;
mod counters;
mod error;
mod glitches;
mod guards;
mod handle;
mod identified;
mod key;
mod limiter;
mod live;
mod mode;
mod queue;
mod sampler;
mod shared;
mod snapshot;
mod sync;
mod table;
mod time;
mod verdict;

pub use blocklist::{BlockEntry, BlockError, BlockListFull};
pub use config::{GuardLimits, LimiterConfig, LimiterConfigError};
pub use connection::{AsClient, AsConnection, Connection, Request};
pub use counters::CountersSnapshot;
pub use error::Error;
pub use glitches::{Glitch, GLITCH_WINDOW_SECS};
pub use guards::H2Frame;
pub use handle::ClientHandle;
pub use identified::Identified;
pub use key::{ClientKey, IpPrefix};
pub use limiter::Limiter;
pub use live::{LiveClient, LiveMetric, LiveView};
pub use mode::{Mode, ModeError, UnknownMode};
pub use shared::MAX_EPOCH;
pub use snapshot::{ClientSnapshot, Status};
pub use sync::{BadPrefix, Change, UnknownReason};
pub use time::Nanos;
pub use verdict::{Guard, Reason, Verdict};
// What the proxy needs of the statistics, so that it depends on this crate alone.
pub use zgate_training::{
    check_threshold, Epoch, Fragments, InvalidModel, InvalidThreshold, Metric, MetricModel, Model,
    ModelParams, Moments, Populations, UnknownMetric,
};
