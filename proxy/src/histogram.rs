//! A fixed-bucket latency histogram of relaxed atomics, for `/metrics`: one `fetch_add` per
//! bucket hit plus one for the sum, no lock, no allocation after construction.
//!
//! Buckets are upper bounds in seconds ([`BOUNDS`]); the exporter renders them cumulative, as
//! Prometheus wants, with `+Inf`, `_sum` (seconds) and `_count`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, seconds: 1 ms to 5 min, roughly 1-2.5-5 per decade.
pub const BOUNDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Counts of durations per bucket (not cumulative; the last slot is above every bound) and
/// their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment: cumulative counts per bound, then the total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `cumulative[i]`: observations `<= BOUNDS[i]`.
    pub cumulative: [u64; BOUNDS.len()],
    /// All observations (the `+Inf` bucket and `_count`).
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BOUNDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into` (a scrape sums per-thread shards).
    pub fn add_to(&self, into: &mut Snapshot) {
        let mut running = 0;
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            if let Some(slot) = into.cumulative.get_mut(i) {
                *slot += running;
            }
        }
        into.count += running;
        into.sum += self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    }

    /// This histogram alone.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.add_to(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_with_a_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(1000));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2, "<= 1 ms, the bound included");
        assert_eq!(s.cumulative[4], 2, "<= 25 ms");
        assert_eq!(s.cumulative[5], 3, "<= 50 ms");
        assert_eq!(s.cumulative[BOUNDS.len() - 1], 3, "<= 300 s");
        assert_eq!(s.count, 4);
        assert!((s.sum - 1000.0315).abs() < 1e-9, "{}", s.sum);
        let mut twice = s.clone();
        h.add_to(&mut twice);
        assert_eq!(twice.count, 8);
    }
}
