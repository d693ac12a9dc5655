//! What the fleet task shows the rest of zgate: plain atomics, written by the task, read by
//! `/metrics`, the admin API and the status page.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The fleet's state as last published by its task.
#[derive(Debug, Default)]
pub struct Status {
    /// Redis reachable.
    pub connected: AtomicBool,
    /// Events waiting in the outbox.
    pub outbox: AtomicU64,
    /// Events dropped at the outbox's bound, and local changes dropped because the task's
    /// queue was full.
    pub dropped: AtomicU64,
    /// Milliseconds between the last remote event's publication and its arrival here.
    pub lag_ms: AtomicU64,
    /// Events published.
    pub published: AtomicU64,
    /// Remote events applied (blocks, unblocks, training, models).
    pub received: AtomicU64,
    /// Stream entries that did not decode.
    pub malformed: AtomicU64,
    /// The fleet epoch trained in now or last (0: none).
    pub epoch: AtomicU64,
    /// Training under the fleet's epoch now.
    pub training: AtomicBool,
    /// The epoch of the fleet model in force (0: none).
    pub model_epoch: AtomicU64,
    /// The last failed Redis exchange: what went wrong and when (Unix ms). Written by the task
    /// on a failure only, read by the admin API; never touched on the request path.
    pub last_error: Mutex<Option<(String, u64)>>,
}

/// A copy of [`Status`] at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusView {
    /// See [`Status::connected`].
    pub connected: bool,
    /// See [`Status::outbox`].
    pub outbox: u64,
    /// See [`Status::dropped`].
    pub dropped: u64,
    /// See [`Status::lag_ms`].
    pub lag_ms: u64,
    /// See [`Status::published`].
    pub published: u64,
    /// See [`Status::received`].
    pub received: u64,
    /// See [`Status::malformed`].
    pub malformed: u64,
    /// See [`Status::epoch`].
    pub epoch: u64,
    /// See [`Status::training`].
    pub training: bool,
    /// See [`Status::model_epoch`].
    pub model_epoch: u64,
    /// See [`Status::last_error`]: the error's text (`None`: none since start).
    pub last_error: Option<String>,
    /// See [`Status::last_error`]: when, Unix ms (0: never).
    pub last_error_ms: u64,
}

impl Status {
    /// A copy now.
    pub fn view(&self) -> StatusView {
        let r = Ordering::Relaxed;
        let (last_error, last_error_ms) = self
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
            .map_or((None, 0), |(e, at)| (Some(e), at));
        StatusView {
            connected: self.connected.load(r),
            outbox: self.outbox.load(r),
            dropped: self.dropped.load(r),
            lag_ms: self.lag_ms.load(r),
            published: self.published.load(r),
            received: self.received.load(r),
            malformed: self.malformed.load(r),
            epoch: self.epoch.load(r),
            training: self.training.load(r),
            model_epoch: self.model_epoch.load(r),
            last_error,
            last_error_ms,
        }
    }

    /// Records a failed exchange at `now_ms`.
    pub(crate) fn set_error(&self, error: String, now_ms: u64) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((error, now_ms));
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
