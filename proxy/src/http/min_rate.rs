//! The minimum rate of a request body (`timeouts.body_min_rate`), sans-IO: like Apache's
//! `RequestReadTimeout body=…,MinRate=…`, every byte the client sends earns it `1 / rate`
//! seconds of waiting, on top of a grace period; a client whose pauses add up to more than it
//! earned is too slow, and its request is answered 408.
//!
//! Only time spent waiting on the client counts (the body's pauses, as `timeouts.body_read`
//! times them): while the backend keeps zgate from reading, the client is not to blame. So a
//! body sent at 1 byte every 2 s, whose every pause is shorter than `body_read`, is cut once
//! its pauses exceed the grace plus what its bytes earned, while a fast upload, whose pauses
//! are short and whose bytes earn much, never is.

use std::time::Duration;

/// The grace when `timeouts.body_read` is `"0"` (no pause limit): 60 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// One request body's rate budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second the client must average over the time zgate waits on it (> 0).
    rate: u64,
    /// Waiting allowed before any byte earned more.
    grace: Duration,
    /// Time spent waiting on the client, pauses that ended.
    waited: Duration,
    /// Body bytes received.
    bytes: u64,
}

impl MinRate {
    /// The budget of a body held to `rate` bytes per second after `grace` (`rate` 0: no
    /// minimum, `None`).
    pub fn new(rate: u64, grace: Duration) -> Option<MinRate> {
        (rate > 0).then_some(MinRate {
            rate,
            grace,
            waited: Duration::ZERO,
            bytes: 0,
        })
    }

    /// `n` body bytes arrived.
    pub fn received(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// A pause on the client ended after `d`.
    pub fn paused(&mut self, d: Duration) {
        self.waited = self.waited.saturating_add(d);
    }

    /// How long the pause starting now may last before the body is too slow: the grace plus
    /// what the bytes earned, less what was waited already (zero: too slow already).
    pub fn allowance(&self) -> Duration {
        let earned_ns = u128::from(self.bytes) * 1_000_000_000 / u128::from(self.rate);
        let earned = Duration::from_nanos(u64::try_from(earned_ns).unwrap_or(u64::MAX));
        self.grace
            .saturating_add(earned)
            .saturating_sub(self.waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn zero_rate_is_no_minimum() {
        assert_eq!(MinRate::new(0, s(10)), None);
    }

    #[test]
    fn a_byte_every_two_seconds_runs_out_of_allowance() {
        // 100 B/s after 10 s of grace: each byte earns 10 ms, each pause costs 2 s.
        let mut m = MinRate::new(100, s(10)).unwrap();
        let mut pauses = 0;
        while m.allowance() >= s(2) {
            m.paused(s(2));
            m.received(1);
            pauses += 1;
        }
        assert_eq!(pauses, 5, "cut within the grace plus what 5 bytes earned");
        assert!(m.allowance() < s(2));
    }

    #[test]
    fn a_fast_body_earns_far_more_than_it_waits() {
        let mut m = MinRate::new(100, s(10)).unwrap();
        for _ in 0..10_000 {
            m.received(16_384);
            m.paused(Duration::from_millis(5));
        }
        assert!(m.allowance() > s(1_000_000));
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let mut m = MinRate::new(1, Duration::MAX).unwrap();
        m.received(usize::MAX);
        m.received(usize::MAX);
        assert_eq!(m.allowance(), Duration::MAX);
        m.paused(Duration::MAX);
        m.paused(Duration::MAX);
        assert_eq!(m.allowance(), Duration::ZERO);
    }
}
