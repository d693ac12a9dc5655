//! The injected clock: a monotonic timestamp in nanoseconds.

use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds since an arbitrary origin.
///
/// The limiter never reads a clock: every event takes `now: Nanos` from the caller (the proxy
/// derives it from one `Instant` taken at start-up). Only differences between two values mean
/// anything. Arithmetic saturates, so a value near `u64::MAX` (about 584 years) never wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// The origin of the clock: 0 ns.
    pub const ZERO: Nanos = Nanos(0);

    /// `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Nanos {
        Nanos(secs.saturating_mul(1_000_000_000))
    }

    /// `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// The raw value in nanoseconds.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at `u64::MAX` ns.
    pub fn saturating_add(self, d: Duration) -> Nanos {
        Nanos(self.0.saturating_add(duration_ns(d)))
    }

    /// `self - earlier` as a duration, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Nanos(u64::MAX)
        );
        assert_eq!(Nanos(5).saturating_since(Nanos(9)), Duration::ZERO);
        assert_eq!(
            Nanos::from_secs(2).saturating_since(Nanos::from_millis(500)),
            Duration::from_millis(1500)
        );
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }
}
