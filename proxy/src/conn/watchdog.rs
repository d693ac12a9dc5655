//! The connection watchdog's decisions, sans-IO: given the time and the connection's
//! accounting at a tick, whether the HTTP/1 header deadline has passed or the connection has
//! been idle for `timeouts.idle`. The driver ticks it and acts.

use std::time::Duration;

use zgate_config::Timeouts;
use zgate_limiter::Nanos;

use crate::account::accounting::Accounting;

/// What the watchdog found at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    /// Nothing to do.
    Quiet,
    /// HTTP/1: a request head has been arriving for longer than `timeouts.header_read`.
    HeaderDeadline,
    /// No byte moved for `timeouts.idle` (HTTP/2 control frames do not count) and no request awaits its response: close
    /// gracefully.
    Idle,
    /// Still silent for another `timeouts.idle` after a graceful close was asked: drop it.
    StillIdle,
}

/// The watchdog of one connection.
#[derive(Debug)]
pub(super) struct Watchdog {
    header_read: Duration,
    idle: Duration,
    http1: bool,
    last_bytes: u64,
    last_change: Nanos,
}

impl Watchdog {
    /// The watchdog of a connection whose accounting reads `accounting` at `now`.
    pub(super) fn new(t: &Timeouts, http1: bool, accounting: &Accounting, now: Nanos) -> Self {
        Watchdog {
            header_read: t.header_read,
            idle: t.idle,
            http1,
            last_bytes: accounting.active_bytes(),
            last_change: now,
        }
    }

    /// Looks at the connection at `now`; `closing`: a graceful close was asked already.
    pub(super) fn tick(&mut self, now: Nanos, accounting: &Accounting, closing: bool) -> Watch {
        if self.http1 {
            if let Some(start) = accounting.head_started() {
                if now.saturating_since(start) > self.header_read {
                    return Watch::HeaderDeadline;
                }
            }
        }
        // Control frames are not activity; `active_bytes` can step back while a control
        // frame's payload is in transit, so only a new maximum is progress.
        let moved = accounting.active_bytes();
        if moved > self.last_bytes {
            self.last_bytes = moved;
            self.last_change = now;
            return Watch::Quiet;
        }
        if self.idle.is_zero()
            || accounting.awaiting() > 0
            || now.saturating_since(self.last_change) < self.idle
        {
            return Watch::Quiet;
        }
        self.last_change = now;
        if closing {
            Watch::StillIdle
        } else {
            Watch::Idle
        }
    }
}

/// How often the watchdog looks: a quarter of the shortest deadline it enforces, within
/// [10 ms, 5 s], so a deadline is enforced at most 25% late.
pub(super) fn watchdog_tick(t: &Timeouts) -> Duration {
    let mut shortest = t.header_read;
    if !t.idle.is_zero() {
        shortest = shortest.min(t.idle);
    }
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::accounting::Costs;
    use zgate_limiter::{Limiter, LimiterConfig};

    fn s(n: u64) -> Nanos {
        Nanos::from_secs(n)
    }

    fn accounting() -> (Limiter, Accounting) {
        let limiter = Limiter::new(LimiterConfig::default(), None, s(0)).unwrap();
        let (conn, _) = limiter.connection_opened("192.0.2.7".parse().unwrap(), s(0));
        let costs = Costs {
            per_connection: 0,
            per_request: 0,
        };
        let (acc, _) = Accounting::new(conn.unwrap(), costs, s(0));
        (limiter, acc)
    }

    fn timeouts(header_read: u64, idle: u64) -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(header_read),
            idle: Duration::from_secs(idle),
            ..Timeouts::default()
        }
    }

    #[test]
    fn a_head_that_takes_too_long_is_cut_on_http1_only() {
        let (_l, acc) = accounting();
        let t = timeouts(10, 0);
        let mut h1 = Watchdog::new(&t, true, &acc, s(0));
        let mut h2 = Watchdog::new(&t, false, &acc, s(0));
        acc.bytes_read(3, s(1));
        assert_eq!(
            h1.tick(s(11), &acc, false),
            Watch::Quiet,
            "10 s: not past it"
        );
        assert_eq!(h1.tick(s(12), &acc, false), Watch::HeaderDeadline);
        assert_eq!(h2.tick(s(12), &acc, false), Watch::Quiet);
    }

    #[test]
    fn idle_means_no_byte_and_nothing_awaited_for_the_whole_period() {
        let (_l, acc) = accounting();
        let mut w = Watchdog::new(&timeouts(100, 60), true, &acc, s(0));
        assert_eq!(w.tick(s(59), &acc, false), Watch::Quiet);
        acc.bytes_written(1, s(59));
        assert_eq!(w.tick(s(60), &acc, false), Watch::Quiet, "a byte moved");
        assert_eq!(w.tick(s(119), &acc, false), Watch::Quiet);
        // A request waiting on its backend keeps it open, however long.
        acc.request_started(true, s(119));
        assert_eq!(w.tick(s(500), &acc, false), Watch::Quiet);
        // Its response started but the client reads nothing: idle again.
        acc.response_started();
        assert_eq!(w.tick(s(501), &acc, false), Watch::Idle);
        assert_eq!(w.tick(s(560), &acc, true), Watch::Quiet);
        assert_eq!(w.tick(s(561), &acc, true), Watch::StillIdle);
    }

    #[test]
    fn control_frames_are_not_activity() {
        let (_l, acc) = accounting();
        let mut w = Watchdog::new(&timeouts(100, 60), false, &acc, s(0));
        // A PING every 2 s and its ACK, the header counted before the payload arrives.
        for t in (2..60).step_by(2) {
            acc.control_bytes(17);
            acc.bytes_read(9, s(t));
            assert_eq!(w.tick(s(t), &acc, false), Watch::Quiet);
            acc.bytes_read(8, s(t));
            acc.control_bytes(17);
            acc.bytes_written(17, s(t));
        }
        assert_eq!(w.tick(s(61), &acc, false), Watch::Idle, "PINGs only: idle");
        // One byte of anything else is activity.
        acc.bytes_written(1, s(62));
        assert_eq!(w.tick(s(62), &acc, false), Watch::Quiet);
        assert_eq!(w.tick(s(121), &acc, false), Watch::Quiet);
        assert_eq!(w.tick(s(122), &acc, false), Watch::Idle);
    }

    #[test]
    fn zero_idle_never_closes() {
        let (_l, acc) = accounting();
        let mut w = Watchdog::new(&timeouts(10, 0), false, &acc, s(0));
        assert_eq!(w.tick(s(1_000_000), &acc, false), Watch::Quiet);
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_deadline_within_bounds() {
        assert_eq!(
            watchdog_tick(&timeouts(10, 60)),
            Duration::from_millis(2500)
        );
        assert_eq!(watchdog_tick(&timeouts(60, 8)), Duration::from_secs(2));
        assert_eq!(watchdog_tick(&timeouts(3600, 0)), Duration::from_secs(5));
    }
}
