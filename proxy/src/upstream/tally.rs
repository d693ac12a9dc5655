//! Whether a backend is in rotation, decided from what happened to it, sans-IO: a
//! consecutive-count state machine stepped with the outcome of each request (passive
//! detection) and of each health check (active), and the time as a parameter.
//!
//! - **Passive**: `fail_after` failures in a row take the backend out for `down_for`. When
//!   that has passed it is back in rotation on probation: one success ends the probation (and
//!   the backend is reported up), one failure takes it out again at once.
//! - **Active**: `unhealthy_after` failed checks in a row take it out until `healthy_after`
//!   checks in a row pass. Checks do not shorten a passive `down_for`.
//! - **Reported state**: what the log and `zgate_backend_up` say. It goes down with the first
//!   of the two that takes the backend out, and up when nothing holds it out any more and it
//!   proved itself (a request answered, or `healthy_after` checks passed).
//!
//! Every step returns the [`Change`] of the reported state it caused, if any, so the caller
//! logs each change once.

use std::fmt;
use std::time::Duration;

/// The thresholds a backend is judged by (from `[upstream]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Failures in a row that take the backend out (`upstream.fail_after`, ≥ 1).
    pub fail_after: u32,
    /// How long passive detection takes it out (`upstream.down_for`).
    pub down_for: Duration,
    /// Active checks: failed checks in a row that take it out, passed checks in a row that
    /// bring it back (`health.unhealthy_after`, `health.healthy_after`); `None`: no checks.
    pub checks: Option<(u32, u32)>,
}

/// What a request handed to a backend came to, as passive detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a server failure.
    Answered,
    /// It failed on the backend's side.
    Failed(Cause),
}

/// Why a request failed on the backend's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No connection (refused, unreachable, timed out).
    Connect,
    /// The connection failed before a response head (reset, closed, malformed).
    Reset,
    /// No response head within `timeouts.backend_response`.
    Timeout,
    /// A 5xx answer (not 501 or 505, which are about the client's request).
    Status(u16),
}

/// What one health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A 2xx or 3xx answer in time.
    Passed,
    /// Anything else.
    Failed(CheckFailure),
}

/// Why a health check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// An answer other than 2xx or 3xx.
    Status(u16),
    /// No answer within `health.timeout`.
    Timeout,
    /// No connection: refused, unreachable.
    Connect(String),
    /// The connection failed before the answer's head.
    Failed(String),
}

/// A change of a backend's reported state, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Taken out.
    Down(Why),
    /// Back.
    Up(Why),
}

/// The reason of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// `count` requests in a row failed, the last for `last`.
    Requests {
        /// How many in a row (1 on probation).
        count: u32,
        /// The last failure.
        last: Cause,
    },
    /// `count` health checks in a row failed, the last for `last`.
    ChecksFailed {
        /// How many in a row.
        count: u32,
        /// The last failure.
        last: CheckFailure,
    },
    /// `count` health checks in a row passed.
    ChecksPassed {
        /// How many in a row.
        count: u32,
    },
    /// A request it was handed got an answer.
    Answered,
}

/// One backend's counts and state. Starts up, with nothing counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests failed in a row since the last success.
    fails: u32,
    /// Out of rotation by passive detection until this instant (ns on the caller's clock);
    /// 0: never was.
    passive_until: u64,
    /// Back from a passive `down_for` with no success since: one failure takes it out.
    probation: bool,
    /// Out of rotation by active checks.
    checks_down: bool,
    /// Checks passed in a row, and failed in a row (one of the two is 0).
    passes: u32,
    check_fails: u32,
    /// What was last reported: down.
    reported_down: bool,
}

impl Tally {
    /// Whether the balancer skips the backend at `now` (what [`Tally::skipped_until`] says).
    #[cfg(test)]
    pub fn skipped(&self, now: u64) -> bool {
        self.checks_down || now < self.passive_until
    }

    /// Until when the backend is skipped, ns: `u64::MAX` while active checks hold it out, 0
    /// when not skipped since `passive_until`.
    pub fn skipped_until(&self) -> u64 {
        if self.checks_down {
            u64::MAX
        } else {
            self.passive_until
        }
    }

    /// Whether the backend is reported down (log, `zgate_backend_up`).
    pub fn reported_down(&self) -> bool {
        self.reported_down
    }

    /// Whether a success at this point changes nothing (no count to reset, nothing to
    /// report): the request path's lock-free fast path.
    pub fn settled(&self) -> bool {
        self.fails == 0 && !self.probation && !self.reported_down
    }

    /// A request handed to the backend came to `outcome` at `now`.
    pub fn request(&mut self, rules: &Rules, outcome: Outcome, now: u64) -> Option<Change> {
        match outcome {
            Outcome::Answered => {
                self.fails = 0;
                self.probation = false;
                self.passive_until = 0;
                self.report_up(Why::Answered)
            }
            Outcome::Failed(cause) => {
                self.fails = self.fails.saturating_add(1);
                if self.fails < rules.fail_after && !self.probation {
                    return None;
                }
                let count = self.fails;
                self.fails = 0;
                self.probation = true;
                let until = now.saturating_add(duration_ns(rules.down_for));
                self.passive_until = self.passive_until.max(until).max(1);
                self.report_down(Why::Requests { count, last: cause })
            }
        }
    }

    /// A health check of the backend came to `check` at `now` (ignored without checks).
    pub fn check(&mut self, rules: &Rules, check: Check, now: u64) -> Option<Change> {
        let (unhealthy_after, healthy_after) = rules.checks?;
        match check {
            Check::Passed => {
                self.check_fails = 0;
                self.passes = self.passes.saturating_add(1);
                if self.passes < healthy_after {
                    return None;
                }
                self.checks_down = false;
                if now < self.passive_until {
                    return None;
                }
                self.report_up(Why::ChecksPassed { count: self.passes })
            }
            Check::Failed(last) => {
                self.passes = 0;
                self.check_fails = self.check_fails.saturating_add(1);
                if self.check_fails < unhealthy_after {
                    return None;
                }
                self.checks_down = true;
                let count = self.check_fails;
                self.report_down(Why::ChecksFailed { count, last })
            }
        }
    }

    /// The rules changed (a reload): without checks now, what checks held is forgotten.
    pub fn rules_changed(&mut self, rules: &Rules) {
        if rules.checks.is_none() {
            self.checks_down = false;
            self.passes = 0;
            self.check_fails = 0;
        }
    }

    fn report_down(&mut self, why: Why) -> Option<Change> {
        if self.reported_down {
            return None;
        }
        self.reported_down = true;
        Some(Change::Down(why))
    }

    fn report_up(&mut self, why: Why) -> Option<Change> {
        if !self.reported_down || self.checks_down {
            return None;
        }
        self.reported_down = false;
        Some(Change::Up(why))
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Requests { count, last } => {
                write!(
                    f,
                    "passive: {count} failed request(s) in a row, the last: {last}"
                )
            }
            Why::ChecksFailed { count, last } => {
                write!(
                    f,
                    "health check failed {count} time(s) in a row, the last: {last}"
                )
            }
            Why::ChecksPassed { count } => {
                write!(f, "health check passed {count} time(s) in a row")
            }
            Why::Answered => f.write_str("a request was answered"),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Connect => f.write_str("connect failure"),
            Cause::Reset => f.write_str("connection failed before a response"),
            Cause::Timeout => f.write_str("response timeout"),
            Cause::Status(s) => write!(f, "status {s}"),
        }
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckFailure::Status(s) => write!(f, "status {s}"),
            CheckFailure::Timeout => f.write_str("timeout"),
            CheckFailure::Connect(e) => write!(f, "connect failed: {e}"),
            CheckFailure::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn rules(checks: Option<(u32, u32)>) -> Rules {
        Rules {
            fail_after: 3,
            down_for: Duration::from_secs(5),
            checks,
        }
    }

    fn fail(t: &mut Tally, r: &Rules, now: u64) -> Option<Change> {
        t.request(r, Outcome::Failed(Cause::Status(500)), now)
    }

    #[test]
    fn passive_takes_out_after_n_in_a_row_and_a_success_resets_the_count() {
        let r = rules(None);
        let mut t = Tally::default();
        assert!(t.settled());
        assert_eq!(fail(&mut t, &r, 0), None);
        assert_eq!(fail(&mut t, &r, 0), None);
        assert!(!t.settled(), "a count to reset");
        assert_eq!(
            t.request(&r, Outcome::Answered, 0),
            None,
            "nothing to report"
        );
        assert!(t.settled());
        assert_eq!(fail(&mut t, &r, SEC), None);
        assert_eq!(fail(&mut t, &r, SEC), None);
        assert!(!t.skipped(SEC));
        let c = t.request(&r, Outcome::Failed(Cause::Connect), SEC);
        assert_eq!(
            c,
            Some(Change::Down(Why::Requests {
                count: 3,
                last: Cause::Connect
            }))
        );
        assert!(t.skipped(SEC) && t.skipped(6 * SEC - 1) && t.reported_down());
        assert_eq!(fail(&mut t, &r, 2 * SEC), None, "reported once");
        // Extended by the failure at 2 s.
        assert!(t.skipped(6 * SEC));
        assert!(!t.skipped(7 * SEC), "back in rotation, on probation");
        assert!(
            t.reported_down(),
            "still reported down until it proves itself"
        );
    }

    #[test]
    fn on_probation_one_failure_takes_it_out_and_one_success_brings_it_up() {
        let r = rules(None);
        let mut t = Tally::default();
        for _ in 0..3 {
            fail(&mut t, &r, 0);
        }
        assert!(!t.skipped(5 * SEC));
        assert_eq!(fail(&mut t, &r, 5 * SEC), None, "already reported down");
        assert!(t.skipped(5 * SEC) && t.skipped(10 * SEC - 1));
        assert_eq!(
            t.request(&r, Outcome::Answered, 10 * SEC),
            Some(Change::Up(Why::Answered))
        );
        assert!(t.settled() && !t.skipped(10 * SEC));
        // Off probation: it takes three failures again.
        assert_eq!(fail(&mut t, &r, 11 * SEC), None);
        assert!(!t.skipped(11 * SEC));
    }

    #[test]
    fn checks_take_out_and_bring_back_with_their_own_counts() {
        let r = rules(Some((2, 3)));
        let mut t = Tally::default();
        let refused = || Check::Failed(CheckFailure::Connect("refused".into()));
        assert_eq!(t.check(&r, refused(), 0), None);
        assert_eq!(t.check(&r, Check::Passed, 0), None, "the run is broken");
        assert_eq!(t.check(&r, refused(), 0), None);
        assert!(!t.skipped(0));
        assert_eq!(
            t.check(&r, Check::Failed(CheckFailure::Timeout), 0),
            Some(Change::Down(Why::ChecksFailed {
                count: 2,
                last: CheckFailure::Timeout
            }))
        );
        assert!(t.skipped(u64::MAX - 1) && t.skipped_until() == u64::MAX);
        // A request answered while every backend was down does not override the checks.
        assert_eq!(t.request(&r, Outcome::Answered, SEC), None);
        assert!(t.skipped(SEC) && t.reported_down());
        assert_eq!(t.check(&r, Check::Passed, SEC), None);
        assert_eq!(t.check(&r, Check::Passed, SEC), None);
        assert_eq!(
            t.check(&r, Check::Passed, SEC),
            Some(Change::Up(Why::ChecksPassed { count: 3 }))
        );
        assert!(!t.skipped(SEC) && !t.reported_down());
        assert_eq!(t.check(&r, Check::Passed, SEC), None, "reported once");
    }

    #[test]
    fn passing_checks_do_not_shorten_a_passive_down() {
        let r = rules(Some((2, 1)));
        let mut t = Tally::default();
        for _ in 0..3 {
            fail(&mut t, &r, 0);
        }
        assert_eq!(t.check(&r, Check::Passed, SEC), None);
        assert!(t.skipped(SEC));
        assert_eq!(
            t.check(&r, Check::Passed, 5 * SEC),
            Some(Change::Up(Why::ChecksPassed { count: 2 }))
        );
        assert!(!t.skipped(5 * SEC));
    }

    #[test]
    fn checks_are_ignored_without_rules_and_forgotten_when_removed() {
        let mut t = Tally::default();
        let failed = || Check::Failed(CheckFailure::Status(503));
        assert_eq!(t.check(&rules(None), failed(), 0), None);
        assert!(!t.skipped(0));
        let r = rules(Some((1, 1)));
        assert!(matches!(t.check(&r, failed(), 0), Some(Change::Down(_))));
        t.rules_changed(&r);
        assert!(t.skipped(0), "kept while checks stay");
        t.rules_changed(&rules(None));
        assert!(!t.skipped(0));
        assert_eq!(
            t.request(&rules(None), Outcome::Answered, 0),
            Some(Change::Up(Why::Answered))
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let w = Why::Requests {
            count: 3,
            last: Cause::Status(502),
        };
        assert_eq!(
            w.to_string(),
            "passive: 3 failed request(s) in a row, the last: status 502"
        );
        let w = Why::ChecksFailed {
            count: 2,
            last: CheckFailure::Timeout,
        };
        assert!(w.to_string().starts_with("health check failed 2 time(s)"));
    }
}
