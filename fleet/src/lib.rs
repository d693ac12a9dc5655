//! zgate's fleet: several zgate instances behind one L4 balancer sharing one block list and one
//! model through Redis (DESIGN.md §7).
//!
//! - [`core`]: the decisions, sans-IO ([`Fleet`]: events and `now` in, [`Action`]s out;
//!   `messages.rs` has those types);
//! - [`event`]: the stream entries; [`snapshot`]: an instance's training statistics;
//!   [`outbox`]: changes waiting for Redis; [`breaker`]: the circuit breaker;
//! - `redis_io`, `driver`, `exec`: the thin IO layer (the `redis` crate over tokio) that runs
//!   it for a [`zgate_limiter::Limiter`]: Redis exchanges, the task, what each action does;
//!   [`status`]: what it shows to `/metrics` and the admin API.
//!
//! It is not on the request path: the limiter enforces from its own memory, and the fleet task
//! only hears of a change through the limiter's sink (a bounded channel's `try_send`). Redis
//! down means local detection and blocking go on, local changes wait in the outbox, and the
//! model stays at its last version.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod core;
mod driver;
pub mod event;
mod exec;
mod messages;
pub mod outbox;
mod redis_io;
pub mod snapshot;
pub mod status;

pub use crate::core::{Action, Fleet, Local, Resync, Timing};
pub use driver::{local_of, start, ClockFn, FleetHandle, Settings, StartError};
pub use event::{Envelope, Event};
pub use snapshot::Snapshot;
pub use status::StatusView;
