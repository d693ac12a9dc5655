//! Metric P: a time-decayed exponential moving average of the CPU time spent on a client, as a
//! share of one core.
//!
//! # The formula
//!
//! Between two updates at `t0` and `t1 = t0 + dt` the client used `cpu` ns of CPU time, taken as
//! spread evenly over `[t0, t1]`, i.e. at rate `r = cpu / dt`. With half-life `h` and
//! `a = 2^(-dt / h)`:
//!
//! ```text
//! value(t1) = a * value(t0) + (1 - a) * r
//! ```
//!
//! This is the exact solution of `dv/dt = (r - v) * ln2 / h` over the interval. Hence:
//! - a constant load `r` converges to `r` (the gap halves every half-life);
//! - with no load the value halves every half-life ([`CpuEma::at`]);
//! - splitting one interval of uniform load into many updates gives the same value as one update
//!   (up to float rounding), because `a` multiplies over sub-intervals;
//! - when `dt == 0` (several updates at one instant, or the very first update) the sample is an
//!   impulse: `value += cpu * ln2 / h`, the limit of the formula as `dt -> 0`. A burst of CPU time
//!   reported at a single instant therefore raises the value by `cpu * ln2 / h`, as much as the
//!   same time spread over a short interval.
//!
//! Values are kept in `f64` so that many tiny updates (1 us of CPU with a 1 s half-life adds
//! 0.69 ppm) do not lose their contribution to rounding; [`CpuEma::value_ppm`] rounds to an
//! integer sample for the training set.

/// The CPU EMA state of one client: value in ppm of one core, time of the last update.
///
/// Default: never updated, value 0. Times are nanoseconds on the caller's monotonic clock;
/// half-lives are nanoseconds (0 is taken as 1 ns).
///
/// 16 bytes (it sits in every tracked client's state): the time of the last update is a plain
/// `u64` with [`NEVER`] for "never updated" rather than an `Option<u64>` (24 bytes). A time of
/// `u64::MAX` ns (584 years on a monotonic clock) therefore reads as never updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuEma {
    /// Estimated CPU share, in millionths of a core (1e6 = one core busy).
    ppm: f64,
    /// Time of the last update, in ns; [`NEVER`] before the first.
    last_ns: u64,
}

/// `CpuEma::last_ns` of an EMA never updated nor started.
const NEVER: u64 = u64::MAX;

impl Default for CpuEma {
    fn default() -> CpuEma {
        CpuEma {
            ppm: 0.0,
            last_ns: NEVER,
        }
    }
}

impl CpuEma {
    /// An EMA starting at 0 at `now_ns` (e.g. when the client is first seen), so that the first
    /// update's CPU time is spread over the real elapsed time instead of being an impulse.
    pub fn started(now_ns: u64) -> CpuEma {
        CpuEma {
            ppm: 0.0,
            last_ns: now_ns,
        }
    }

    /// The EMA after `cpu_ns` nanoseconds of CPU time were spent on the client since the last
    /// update, which is now `now_ns`, with half-life `half_life_ns`.
    ///
    /// A `now_ns` earlier than the last update (clock readings from racing threads) counts as
    /// no elapsed time; the last-update time never goes backwards.
    pub fn update(self, cpu_ns: u64, now_ns: u64, half_life_ns: u64) -> CpuEma {
        let h = half_life_ns.max(1) as f64;
        let (last, dt) = match self.last_ns() {
            Some(last) => (last.max(now_ns), now_ns.saturating_sub(last)),
            None => (now_ns, 0),
        };
        let cpu = cpu_ns as f64 * 1e6; // ppm * ns
        let ppm = if dt == 0 {
            self.ppm + cpu * core::f64::consts::LN_2 / h
        } else {
            let dt = dt as f64;
            let x = -dt / h * core::f64::consts::LN_2;
            // a = 2^(-dt/h) = e^x; 1 - a = -expm1(x) without cancellation for small dt, and
            // a = 1 + expm1(x): one transcendental call, not two (this runs for every CPU
            // batch of every client).
            let m = x.exp_m1();
            (1.0 + m) * self.ppm - m * (cpu / dt)
        };
        CpuEma { ppm, last_ns: last }
    }

    /// The value as of the last update, rounded to the nearest ppm of a core (saturating).
    pub fn value_ppm(&self) -> u64 {
        self.ppm.round() as u64
    }

    /// The value as of the last update, unrounded, in ppm of a core.
    pub fn value(&self) -> f64 {
        self.ppm
    }

    /// The time of the last update in ns, `None` if never updated nor started.
    pub fn last_ns(&self) -> Option<u64> {
        (self.last_ns != NEVER).then_some(self.last_ns)
    }

    /// The value at `now_ns` with no CPU spent since the last update (decayed), rounded ppm.
    /// `now_ns` at or before the last update gives the value as of the last update.
    pub fn at(self, now_ns: u64, half_life_ns: u64) -> u64 {
        self.update(0, now_ns, half_life_ns).value_ppm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn first_update_is_an_impulse_and_started_spreads_it() {
        assert_eq!(CpuEma::default().last_ns(), None);
        assert_eq!(CpuEma::started(0).last_ns(), Some(0));
        assert_eq!(core::mem::size_of::<CpuEma>(), 16);
        let e = CpuEma::default().update(1000 * MS, 5 * MS, 1000 * MS);
        // 1 s of CPU with a 1 s half-life: 1e6 * ln 2
        assert_eq!(e.value_ppm(), 693_147);
        assert_eq!(e.last_ns(), Some(5 * MS));
        // Half a core over one half-life from 0: (1 - 1/2) * 500_000
        let s = CpuEma::started(0).update(500 * MS, 1000 * MS, 1000 * MS);
        assert_eq!(s.value_ppm(), 250_000);
    }

    #[test]
    fn clock_going_backwards_is_no_elapsed_time() {
        let e = CpuEma::started(10 * MS).update(0, 5 * MS, 1000 * MS);
        assert_eq!(e.last_ns(), Some(10 * MS));
        assert_eq!(e.at(0, 1000 * MS), 0);
    }

    #[test]
    fn zero_half_life_is_the_instant_rate() {
        let e = CpuEma::started(0).update(MS, 4 * MS, 0);
        assert_eq!(e.value_ppm(), 250_000);
    }
}
