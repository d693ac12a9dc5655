//! A circuit breaker in front of Redis, sans-IO (`now` in milliseconds).
//!
//! Closed: commands go. After `threshold` consecutive failures (default 3) it opens: commands
//! are refused without being tried, so a Redis that times out does not cost every caller its
//! timeout. After `cooldown` (starting at 250 ms, doubling per failed probe up to 5 s) it lets
//! one probe through (half-open); a success closes it, a failure reopens it.

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures: u32,
    threshold: u32,
    open_until: Option<u64>,
    cooldown_ms: u64,
}

/// First cooldown after opening, ms.
pub const MIN_COOLDOWN_MS: u64 = 250;
/// Longest cooldown, ms.
pub const MAX_COOLDOWN_MS: u64 = 5_000;

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(3)
    }
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures (at least 1).
    pub fn new(threshold: u32) -> Breaker {
        Breaker {
            failures: 0,
            threshold: threshold.max(1),
            open_until: None,
            cooldown_ms: MIN_COOLDOWN_MS,
        }
    }

    /// Whether a command may be tried at `now_ms` (closed, or a half-open probe).
    pub fn allow(&self, now_ms: u64) -> bool {
        self.open_until.is_none_or(|t| now_ms >= t)
    }

    /// Whether it is open (Redis considered unreachable).
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// A command succeeded.
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.cooldown_ms = MIN_COOLDOWN_MS;
    }

    /// A command failed at `now_ms`.
    pub fn failure(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        if self.open_until.is_some() {
            self.cooldown_ms = (self.cooldown_ms * 2).min(MAX_COOLDOWN_MS);
            self.open_until = Some(now_ms + self.cooldown_ms);
        } else if self.failures >= self.threshold {
            self.open_until = Some(now_ms + self.cooldown_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_backs_off() {
        let mut b = Breaker::new(3);
        b.failure(0);
        b.failure(1);
        assert!(b.allow(2) && !b.is_open());
        b.failure(2);
        assert!(b.is_open() && !b.allow(3));
        assert!(b.allow(2 + MIN_COOLDOWN_MS));
        b.failure(300);
        assert!(!b.allow(300 + MIN_COOLDOWN_MS));
        assert!(b.allow(300 + 2 * MIN_COOLDOWN_MS));
        b.success();
        assert!(!b.is_open() && b.allow(301));
        for t in 0..100 {
            b.failure(t);
        }
        assert!(!b.allow(99 + MAX_COOLDOWN_MS - 1));
        assert!(b.allow(99 + MAX_COOLDOWN_MS));
    }
}
