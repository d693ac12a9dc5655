//! What one backend did, for `/metrics`, the balancer and the log: requests, failures by kind,
//! retries, health checks, response latency, and whether it is in rotation.
//!
//! The decision is the sans-IO [`Tally`] (`tally.rs`), behind a mutex taken only when
//! something can change: a failure, a health check, or a success while a count is running.
//! The request path reads two mirrors of it without the lock: until when the backend is
//! skipped, and whether a success has anything to change. Each change of the reported state
//! is logged once (`warn` down, `info` up) with the backend and the reason. The counters and
//! the state are kept across reloads for a backend whose address stays
//! ([`crate::upstream::Upstream::carry_stats_from`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use super::tally::{Cause, Change, Check, Outcome, Rules, Tally};
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
    /// Requests it answered with a 5xx status counted by passive detection (not 501, 505).
    pub server_errors: AtomicU64,
    /// Requests sent to it that failed before a response head and were sent again to
    /// another backend.
    pub retried: AtomicU64,
    /// Health checks that passed.
    pub checks_passed: AtomicU64,
    /// Health checks that failed.
    pub checks_failed: AtomicU64,
    /// Times it went from up to down.
    pub marked_down: AtomicU64,
    /// From a request handed to it to its response head.
    pub latency: Histogram,
    tally: Mutex<Tally>,
    /// [`Tally::skipped_until`], ns since [`origin`].
    skipped_until: AtomicU64,
    /// [`Tally::settled`].
    unsettled: AtomicBool,
    /// [`Tally::reported_down`].
    down: AtomicBool,
}

impl BackendStats {
    /// Whether the backend is reported up (`zgate_backend_up`): nothing took it out, or it
    /// proved itself since.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Whether the balancer skips it now.
    pub(super) fn skipped(&self) -> bool {
        let until = self.skipped_until.load(Ordering::Relaxed);
        until != 0 && now() < until
    }

    /// A request handed to the backend came to `outcome`; `backend` names it in the log.
    pub(super) fn record(&self, backend: &str, rules: &Rules, outcome: Outcome) {
        match outcome {
            Outcome::Answered if !self.unsettled.load(Ordering::Relaxed) => return,
            Outcome::Answered => {}
            Outcome::Failed(Cause::Connect) => bump(&self.connect_failures),
            Outcome::Failed(Cause::Status(_)) => bump(&self.server_errors),
            // Counted with the request (`failed`, `timed_out`).
            Outcome::Failed(Cause::Reset | Cause::Timeout) => {}
        }
        self.step(backend, None, |t| t.request(rules, outcome, now()));
    }

    /// A connection to the backend failed with `error` (refused, timed out, TLS refused): as
    /// [`BackendStats::record`] with a connect failure, and the error, escaped, in the line
    /// that says the backend is down.
    pub(super) fn connect_failed(&self, backend: &str, rules: &Rules, error: &str) {
        bump(&self.connect_failures);
        tracing::debug!(backend, error = %crate::escape::escaped(error), "backend connect failed");
        let outcome = Outcome::Failed(Cause::Connect);
        self.step(backend, Some(error), |t| t.request(rules, outcome, now()));
    }

    /// A health check of the backend came to `check`.
    pub(super) fn checked(&self, backend: &str, rules: &Rules, check: Check) {
        match check {
            Check::Passed => bump(&self.checks_passed),
            Check::Failed(_) => bump(&self.checks_failed),
        }
        self.step(backend, None, |t| t.check(rules, check, now()));
    }

    /// The rules changed (a reload that kept this backend).
    pub(super) fn rules_changed(&self, backend: &str, rules: &Rules) {
        self.step(backend, None, |t| {
            t.rules_changed(rules);
            None
        });
    }

    /// The backend answered a request with its response head after `waited`.
    pub(super) fn answered(&self, waited: std::time::Duration) {
        bump(&self.requests);
        self.latency.observe(waited);
    }

    /// A request handed to the backend failed mid-exchange.
    pub(super) fn failed(&self) {
        bump(&self.requests);
        bump(&self.failures);
    }

    /// A request handed to the backend got no response head in time.
    pub(super) fn timed_out(&self) {
        bump(&self.requests);
        bump(&self.timeouts);
    }

    /// Applies `step` to the tally, refreshes the mirrors and logs a change.
    fn step(
        &self,
        backend: &str,
        error: Option<&str>,
        step: impl FnOnce(&mut Tally) -> Option<Change>,
    ) {
        let change = {
            // The tally is a few integers, consistent after every step: a poisoned lock still
            // holds a usable one.
            let mut t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            let change = step(&mut t);
            self.skipped_until
                .store(t.skipped_until(), Ordering::Relaxed);
            self.unsettled.store(!t.settled(), Ordering::Relaxed);
            self.down.store(t.reported_down(), Ordering::Relaxed);
            change
        };
        match change {
            Some(Change::Down(why)) => {
                bump(&self.marked_down);
                match error {
                    Some(e) => {
                        tracing::warn!(backend, reason = %why, error = %crate::escape::escaped(e), "backend down: skipped while other backends are up")
                    }
                    None => {
                        tracing::warn!(backend, reason = %why, "backend down: skipped while other backends are up")
                    }
                }
            }
            Some(Change::Up(why)) => tracing::info!(backend, reason = %why, "backend up again"),
            None => {}
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Now, ns since the first time the upstream asked (one origin for every pool, so a state
/// carried across a reload keeps its meaning).
fn now() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // Never 0, which means "never skipped".
    u64::try_from(origin.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn down_and_up_are_states_counted_once_per_change() {
        let s = BackendStats::default();
        let rules = Rules {
            fail_after: 2,
            down_for: Duration::from_secs(60),
            checks: None,
        };
        let refused = Outcome::Failed(Cause::Connect);
        assert!(s.is_up() && !s.skipped());
        s.record("b:1", &rules, refused);
        assert!(s.is_up() && !s.skipped(), "one failure of two");
        s.record("b:1", &rules, refused);
        s.record("b:1", &rules, Outcome::Failed(Cause::Status(503)));
        assert!(!s.is_up() && s.skipped());
        assert_eq!(s.connect_failures.load(Ordering::Relaxed), 2);
        assert_eq!(s.server_errors.load(Ordering::Relaxed), 1);
        assert_eq!(s.marked_down.load(Ordering::Relaxed), 1);
        s.record("b:1", &rules, Outcome::Answered);
        assert!(s.is_up() && !s.skipped());
        s.record("b:1", &rules, refused);
        s.record("b:1", &rules, refused);
        assert_eq!(s.marked_down.load(Ordering::Relaxed), 2);
        s.answered(Duration::from_millis(3));
        s.failed();
        s.timed_out();
        assert_eq!(s.requests.load(Ordering::Relaxed), 3);
        assert_eq!(s.latency.snapshot().count, 1);
    }

    #[test]
    fn checks_count_and_removing_them_lifts_their_hold() {
        let s = BackendStats::default();
        let mut rules = Rules {
            fail_after: 3,
            down_for: Duration::from_secs(5),
            checks: Some((1, 1)),
        };
        s.checked(
            "b:1",
            &rules,
            Check::Failed(super::super::tally::CheckFailure::Timeout),
        );
        assert!(s.skipped() && !s.is_up());
        assert_eq!(s.checks_failed.load(Ordering::Relaxed), 1);
        rules.checks = None;
        s.rules_changed("b:1", &rules);
        assert!(!s.skipped());
        s.record("b:1", &rules, Outcome::Answered);
        assert!(s.is_up());
    }
}
