//! The live distribution of the clients now: per metric, a histogram of every tracked client's
//! current value and the few highest clients, from one walk of the table that never holds a
//! lock of it for long (see `Table::walk`). For the admin API's status page, which draws it
//! over the trained distribution.

use zgate_training::{Histogram, Metric, Model, Quantiles, SparseHistogram};

use crate::client::ClientState;
use crate::key::ClientKey;
use crate::table::Table;

/// The current values of the tracked clients, per metric.
#[derive(Clone, Debug)]
pub struct LiveView {
    /// Clients the walk saw.
    pub clients: u64,
    /// Per metric, in [`Metric::ALL`] order; prefer [`LiveView::get`].
    pub metrics: [LiveMetric; Metric::COUNT],
}

impl LiveView {
    /// One metric's live distribution.
    pub fn get(&self, m: Metric) -> &LiveMetric {
        &self.metrics[m.index()]
    }
}

/// One metric's live distribution.
#[derive(Clone, Debug)]
pub struct LiveMetric {
    /// Every client's current value, in the metric's unit: the non-empty buckets of a
    /// histogram with the model's buckets.
    pub buckets: SparseHistogram,
    /// p50, p90, p99, p99.9 and max of the current values (`None` without clients).
    pub quantiles: Option<Quantiles>,
    /// The clients with the highest current value, highest first (ties in walk order).
    pub top: Vec<LiveClient>,
}

/// One client's current value of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveClient {
    /// The client.
    pub key: ClientKey,
    /// Its current value, in the metric's unit (CPU: the EMA decayed to now, ppm of a core).
    pub value: u64,
    /// Its z-score against the model (0.0 without one, or at or below the mean).
    pub z: f64,
    /// Whether it is blocked now.
    pub blocked: bool,
}

/// What the walk needs besides the table: the model to score with, the CPU half-life, the
/// time, and how many clients to keep per metric.
pub(crate) struct LiveParams<'a> {
    pub(crate) model: Option<&'a Model>,
    pub(crate) cpu_half_life_ns: u64,
    pub(crate) now: u64,
    pub(crate) top: usize,
}

/// Walks `table` once and builds the live view.
pub(crate) fn collect(table: &Table, p: &LiveParams<'_>) -> LiveView {
    let mut histograms: [Histogram; Metric::COUNT] = Metric::ALL.map(|_| Histogram::new());
    let mut best: [Vec<(u64, ClientKey, bool)>; Metric::COUNT] =
        Metric::ALL.map(|_| Vec::with_capacity(p.top + 1));
    let clients = table.walk(|key, c| {
        let values = current(c, p);
        let blocked = c.is_blocked(p.now);
        for m in Metric::ALL {
            let v = values[m.index()];
            histograms[m.index()].add(v);
            keep_highest(&mut best[m.index()], p.top, (v, key, blocked));
        }
    });
    let mut histograms = histograms.into_iter();
    let mut best = best.into_iter();
    let metrics = Metric::ALL.map(|m| {
        let histogram = histograms.next().unwrap_or_default();
        LiveMetric {
            buckets: SparseHistogram::of(&histogram),
            quantiles: histogram.quantiles(),
            top: best
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|(value, key, blocked)| LiveClient {
                    key,
                    value,
                    z: p.model.map_or(0.0, |model| model.z(m, value)),
                    blocked,
                })
                .collect(),
        }
    });
    LiveView {
        clients: clients as u64,
        metrics,
    }
}

/// A client's current value per metric, the CPU EMA decayed to now.
fn current(c: &ClientState, p: &LiveParams<'_>) -> [u64; Metric::COUNT] {
    let mut v = Metric::ALL.map(|m| c.cur(m));
    v[Metric::Cpu.index()] = c.cpu_at(p.now, p.cpu_half_life_ns);
    v
}

/// Inserts `item` into `best` (highest value first) if it is among the `n` highest.
fn keep_highest(best: &mut Vec<(u64, ClientKey, bool)>, n: usize, item: (u64, ClientKey, bool)) {
    if n == 0 || best.len() == n && best.last().is_some_and(|(min, _, _)| item.0 <= *min) {
        return;
    }
    let at = best.partition_point(|(x, _, _)| *x >= item.0);
    best.insert(at, item);
    best.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Nanos;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(i: u32) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::from(i)), 64)
    }

    #[test]
    fn the_live_view_counts_every_client_and_keeps_the_highest() {
        let limiter = crate::Limiter::new(crate::LimiterConfig::default(), None, Nanos(0)).unwrap();
        limiter.set_mode(crate::Mode::Training, Nanos(0)).unwrap();
        let mut held = Vec::new();
        for (i, conns) in [1u32, 2, 5].into_iter().enumerate() {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8 + 1));
            for _ in 0..conns {
                held.push(limiter.connection_opened(ip, Nanos(1)).0.unwrap());
            }
        }
        let view = limiter.live(2, Nanos(2));
        assert_eq!(view.clients, 3);
        let conns = view.get(Metric::Connections);
        assert_eq!(conns.buckets.count(), 3);
        let pairs: Vec<(u64, u64)> = conns
            .buckets
            .buckets()
            .iter()
            .map(|b| (b.lower, b.count))
            .collect();
        assert_eq!(pairs, [(1, 1), (2, 1), (5, 1)]);
        let top: Vec<(String, u64)> = conns
            .top
            .iter()
            .map(|c| (c.key.to_string(), c.value))
            .collect();
        assert_eq!(
            top,
            [("192.0.2.3".to_owned(), 5), ("192.0.2.2".to_owned(), 2)]
        );
        assert!(conns.top.iter().all(|c| c.z == 0.0 && !c.blocked));
        assert_eq!(conns.quantiles.map(|q| q.max), Some(5));
        // Nothing in flight: every client's requests are 0.
        assert_eq!(view.get(Metric::Requests).buckets.buckets()[0].count, 3);
        drop(held);
    }

    #[test]
    fn keeps_the_highest_in_order() {
        let mut best = Vec::new();
        for (i, v) in [5u64, 1, 9, 5, 7, 0].into_iter().enumerate() {
            keep_highest(&mut best, 3, (v, key(i as u32), false));
        }
        let values: Vec<u64> = best.iter().map(|b| b.0).collect();
        assert_eq!(values, [9, 7, 5]);
        // The first 5 seen stays ahead of the later one.
        assert_eq!(best[2].1, key(0));
        keep_highest(&mut best, 0, (100, key(9), false));
        assert_eq!(best.len(), 3);
    }
}
