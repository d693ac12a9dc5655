//! The share of its busy wall-clock time a worker thread actually ran on a CPU, so that a poll
//! timed with the wall clock is charged as CPU time (metric P).
//!
//! A poll is timed with two monotonic clock reads (a vDSO call each, about 20 ns); reading the
//! thread's CPU clock instead costs a system call (`CLOCK_THREAD_CPUTIME_ID` is not in the
//! vDSO), twice per poll. On a quiet machine the two agree. On a loaded one, the scheduler
//! preempts a worker in the middle of polls, and a poll's wall time grows with the load of the
//! whole machine (six times at a load average of 12 on two cores): clients would score as CPU
//! outliers for the machine's busyness, not for their own cost.
//!
//! So each worker thread keeps, over windows of [`WINDOW`], the ratio of the CPU time it ran to
//! the wall time it was not parked (tokio's `on_thread_park`/`on_thread_unpark` hooks, set on
//! every worker's runtime in `worker/threads.rs`, mark the parked time), and the timed polls scale their wall time by the last window's ratio. One
//! `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` per window and per thread; two `Instant` reads per
//! park. On a thread whose runtime has no hooks (a test's, a fuzz target's) the share is 1:
//! polls are charged their wall time, as before.
//!
//! The ratio is a statistic: a poll preempted in a window where the thread mostly ran is
//! charged a little too much, one in a busy window too little; over a client's many polls the
//! errors average out, which is what the time-decayed average of metric P sees.

use std::cell::Cell;
use std::time::Duration;

use crate::clock::{self, mono_ns};

/// How long a measuring window lasts: long enough that its system call costs nothing, short
/// enough to follow the machine's load. 10 ms.
pub const WINDOW: Duration = Duration::from_millis(10);
const WINDOW_NS: u64 = WINDOW.as_nanos() as u64;

/// Fixed-point one (the ratio is kept in 1/65536ths).
const ONE: u64 = 1 << 16;

/// The lowest ratio kept (1/64): a window mostly spent in the kernel's run queue still charges
/// something.
const FLOOR: u64 = ONE / 64;

/// Below this much unparked wall time a window is too short to measure and is extended: 1 ms.
const MIN_BUSY_NS: u64 = 1_000_000;

#[derive(Clone, Copy)]
struct Share {
    /// Whether this thread's runtime calls the hooks; until then the ratio is one.
    hooked: bool,
    /// When the window started ([`mono_ns`]).
    window_start: u64,
    cpu_at_start: u64,
    /// Parked time in this window so far, ns.
    parked: u64,
    /// When the thread parked ([`mono_ns`]), while it is parked.
    parked_at: Option<u64>,
    ratio: u64,
}

thread_local! {
    static SHARE: Cell<Option<Share>> = const { Cell::new(None) };
}

/// `wall` (a poll's wall time, in ns, ending at `now`, a [`mono_ns`] reading) as this thread's
/// CPU time.
pub fn cpu_ns(wall: u64, now: u64) -> u64 {
    SHARE.with(|cell| {
        let Some(mut s) = cell.get() else {
            return wall;
        };
        if !s.hooked {
            return wall;
        }
        if now.saturating_sub(s.window_start) >= WINDOW_NS {
            s = renewed(s, now, thread_cpu_ns());
            cell.set(Some(s));
        }
        wall.saturating_mul(s.ratio) >> 16
    })
}

/// For `Builder::on_thread_park`: the worker is about to wait for work.
pub fn on_park() {
    SHARE.with(|cell| {
        let now = mono_ns();
        let mut s = cell.get().unwrap_or_else(|| fresh(now));
        s.hooked = true;
        s.parked_at = Some(now);
        cell.set(Some(s));
    });
}

/// For `Builder::on_thread_unpark`: the worker has work again.
pub fn on_unpark() {
    SHARE.with(|cell| {
        let now = mono_ns();
        let mut s = cell.get().unwrap_or_else(|| fresh(now));
        s.hooked = true;
        if let Some(at) = s.parked_at.take() {
            s.parked += now.saturating_sub(at);
        }
        cell.set(Some(s));
    });
}

fn fresh(now: u64) -> Share {
    Share {
        hooked: false,
        window_start: now,
        cpu_at_start: thread_cpu_ns().unwrap_or(0),
        parked: 0,
        parked_at: None,
        ratio: ONE,
    }
}

/// Closes the window ending at `now`, when the thread's CPU clock read `cpu`, and opens the
/// next one.
fn renewed(s: Share, now: u64, cpu: Option<u64>) -> Share {
    let Some(cpu) = cpu else {
        return Share { ratio: ONE, ..s };
    };
    let wall = now.saturating_sub(s.window_start);
    let busy = wall.saturating_sub(s.parked);
    if busy < MIN_BUSY_NS {
        return s;
    }
    let ran = cpu.saturating_sub(s.cpu_at_start);
    Share {
        window_start: now,
        cpu_at_start: cpu,
        parked: 0,
        ratio: ratio(ran, busy),
        ..s
    }
}

/// `ran / busy` in 1/65536ths, within `[FLOOR, ONE]`.
fn ratio(ran: u64, busy: u64) -> u64 {
    if busy == 0 {
        return ONE;
    }
    let r = (u128::from(ran) << 16) / u128::from(busy);
    (r.min(u128::from(ONE)) as u64).max(FLOOR)
}

/// This thread's CPU time in nanoseconds, or `None` if the clock cannot be read.
fn thread_cpu_ns() -> Option<u64> {
    clock::read_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_clamped_and_exact() {
        assert_eq!(ratio(5, 10), ONE / 2);
        assert_eq!(
            ratio(20, 10),
            ONE,
            "a thread cannot run more than its wall time"
        );
        assert_eq!(ratio(0, 10), FLOOR);
        assert_eq!(ratio(7, 0), ONE);
    }

    #[test]
    fn an_unhooked_thread_is_charged_wall_time() {
        std::thread::spawn(|| {
            let now = mono_ns();
            assert_eq!(cpu_ns(1_000, now + 3 * WINDOW_NS), 1_000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_that_waits_without_parking_is_charged_less() {
        // Sleeping stands for being preempted: wall time passes, the thread does not run, and
        // the runtime never parked it.
        std::thread::spawn(|| {
            on_unpark();
            std::thread::sleep(WINDOW * 2);
            let charged = cpu_ns(1_000_000, mono_ns());
            assert!(charged < 500_000, "charged {charged} ns of 1 ms");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn parked_time_does_not_lower_the_share() {
        let t0 = mono_ns();
        let mut s = fresh(t0);
        s.hooked = true;
        s.cpu_at_start = 1_000_000;
        // 20 ms of wall time, 15 of them parked, 4 ms run: 4 of 5 busy ms.
        s.parked = 15_000_000;
        let s = renewed(s, t0 + 20_000_000, Some(5_000_000));
        assert_eq!(s.ratio, ratio(4_000_000, 5_000_000));
        assert_eq!(s.parked, 0, "the next window starts unparked");
        assert_eq!(s.cpu_at_start, 5_000_000);
    }

    #[test]
    fn a_window_with_too_little_busy_time_is_extended() {
        let t0 = mono_ns();
        let mut s = fresh(t0);
        s.parked = 10_000_000;
        let r = renewed(s, t0 + 10_000_000, Some(9));
        assert_eq!(r.window_start, t0);
        assert_eq!(r.ratio, ONE);
    }
}
