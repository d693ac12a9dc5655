//! What one backend did, for `/metrics` and the log: requests, failures by kind, response
//! latency, and whether it is up.
//!
//! "Up" is a state, not a time window: a backend goes down when a connection to it fails and
//! comes back up when one succeeds. Each change is logged once (`warn` down, `info` up), so a
//! dead backend is seen at once and a backend failing over and over logs one line, not one per
//! request. The counters are kept across reloads for a backend whose address stays
//! ([`crate::upstream::Upstream::carry_stats_from`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::histogram::Histogram;

/// One backend's counters (relaxed atomics) and state.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests handed to the backend (sent on a connection to it).
    pub requests: AtomicU64,
    /// Connections to it that failed (refused, unreachable, timed out).
    pub connect_failures: AtomicU64,
    /// Requests it did not answer within `timeouts.backend_response`.
    pub timeouts: AtomicU64,
    /// Requests whose connection failed mid-exchange (reset, malformed response).
    pub failures: AtomicU64,
    /// Times it went from up to down.
    pub marked_down: AtomicU64,
    /// From a request handed to it to its response head.
    pub latency: Histogram,
    down: AtomicBool,
}

impl BackendStats {
    /// Whether the backend is up: no connection to it has failed since the last one that
    /// succeeded.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// A connection to the backend failed: it is down. Logged once per change.
    pub(super) fn connect_failed(&self, backend: &str, down_for: Duration, error: &str) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            self.marked_down.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                backend,
                error,
                skipped_for = ?down_for,
                "backend down: cannot connect; skipped while other backends are up"
            );
        }
    }

    /// A connection to the backend succeeded: it is up. Logged once per change.
    pub(super) fn connected(&self, backend: &str) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(backend, "backend up again");
        }
    }

    /// The backend answered a request with its response head after `waited`.
    pub(super) fn answered(&self, waited: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(waited);
    }

    /// A request handed to the backend failed mid-exchange.
    pub(super) fn failed(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_up_are_states_counted_once_per_change() {
        let s = BackendStats::default();
        assert!(s.is_up());
        s.connect_failed("b:1", Duration::from_secs(5), "refused");
        s.connect_failed("b:1", Duration::from_secs(5), "refused");
        assert!(!s.is_up());
        assert_eq!(s.connect_failures.load(Ordering::Relaxed), 2);
        assert_eq!(s.marked_down.load(Ordering::Relaxed), 1);
        s.connected("b:1");
        assert!(s.is_up());
        s.connect_failed("b:1", Duration::from_secs(5), "refused");
        assert_eq!(s.marked_down.load(Ordering::Relaxed), 2);
        s.answered(Duration::from_millis(3));
        s.failed();
        assert_eq!(s.requests.load(Ordering::Relaxed), 2);
        assert_eq!(s.latency.snapshot().count, 1);
    }
}
