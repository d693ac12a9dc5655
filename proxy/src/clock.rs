//! The monotonic clock the limiter is driven by: nanoseconds since the server started.

use std::time::Instant;

use zgate_limiter::Nanos;

/// A monotonic clock with a fixed origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, as the limiter counts time.
    pub fn now(&self) -> Nanos {
        self.at(Instant::now())
    }

    /// `t`, as the limiter counts time.
    pub fn at(&self, t: Instant) -> Nanos {
        Nanos(t.saturating_duration_since(self.origin).as_nanos() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
