//! The monotonic clock the limiter is driven by: nanoseconds since the server started.
//!
//! Read as plain nanoseconds ([`mono_ns`]) rather than through `std::time::Instant`: the hot
//! path reads the clock about ten times per request (each timed poll twice, each read of the
//! client once) and subtracts readings, and `Instant`'s `Duration` arithmetic (seconds and
//! nanoseconds, checked and normalised) cost more than the reads (callgrind: 1 031 of 26 578
//! instructions per HTTP/1.1 request went to reading and subtracting `Instant`s).

use zgate_limiter::Nanos;

/// The monotonic clock (`CLOCK_MONOTONIC`, the clock `std::time::Instant` reads on Linux) in
/// nanoseconds since an arbitrary origin; a vDSO call, no system call. CLOCK_MONOTONIC exists
/// on every Linux, so the read cannot fail (it would read 0).
#[inline]
pub fn mono_ns() -> u64 {
    read_ns(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

/// Clock `id` in nanoseconds, or `None` if it cannot be read.
#[inline]
pub fn read_ns(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes to it.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    Some(
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64),
    )
}

/// A monotonic clock with a fixed origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// [`mono_ns`] when the clock was made.
    origin: u64,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Clock { origin: mono_ns() }
    }

    /// Now, as the limiter counts time.
    #[inline]
    pub fn now(&self) -> Nanos {
        self.at(mono_ns())
    }

    /// The [`mono_ns`] reading `t`, as the limiter counts time.
    #[inline]
    pub fn at(&self, t: u64) -> Nanos {
        Nanos(t.saturating_sub(self.origin))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
