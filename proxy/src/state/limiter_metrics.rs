//! The limiter's families of `/metrics`: mode and table, the model in base units, thresholds
//! and verdict counters (rendered by [`super::exporter`], in this order).

use zgate_limiter::{Guard, Limiter, Metric, Mode, Nanos};

use super::exposition::{Kind, Text};

pub(super) fn limiter_families(t: &mut Text, limiter: &Limiter, now: Nanos) {
    let status = limiter.status(now);
    t.family(
        "zgate_limiter_mode",
        Kind::Gauge,
        "1 for the limiter's current mode, 0 for the others.",
    );
    for mode in [Mode::Disabled, Mode::Training, Mode::Defence, Mode::Monitor] {
        let on = if status.mode == mode { 1.0 } else { 0.0 };
        t.sample("zgate_limiter_mode", &[("mode", mode.name())], on);
    }
    let left = status.training_left.map_or(0.0, |d| d.as_secs_f64());
    for (name, help, v) in [
        (
            "zgate_limiter_epoch",
            "Training epoch (bumped by every start of training).",
            status.epoch as f64,
        ),
        (
            "zgate_limiter_training_left_seconds",
            "Time left before training ends by itself; 0 when not training.",
            left,
        ),
        (
            "zgate_limiter_clients",
            "Clients in the limiter's table.",
            status.clients as f64,
        ),
        (
            "zgate_limiter_blocklist_entries",
            "Entries in the block list.",
            status.blocks as f64,
        ),
    ] {
        t.single(name, Kind::Gauge, help, v);
    }
}

/// The unit scale of a metric's model values to base units: `cpu` is learned in millionths of
/// a core and exported as a ratio of one core; the others are counts, bytes or scores.
fn to_base_unit(m: Metric) -> f64 {
    match m {
        Metric::Cpu => 1e-6,
        _ => 1.0,
    }
}

pub(super) fn model_families(t: &mut Text, limiter: &Limiter) {
    let model = limiter.model();
    let present = if model.is_some() { 1.0 } else { 0.0 };
    t.single(
        "zgate_model_present",
        Kind::Gauge,
        "1 when the limiter has a model.",
        present,
    );
    let value = |m: Metric, f: fn(&zgate_limiter::MetricModel) -> f64| {
        model
            .as_ref()
            .map_or(0.0, |md| f(md.get(m)) * to_base_unit(m))
    };
    t.family(
        "zgate_model_clients",
        Kind::Gauge,
        "Clients the model's metric was learned from.",
    );
    for m in Metric::ALL {
        let n = model.as_ref().map_or(0.0, |md| md.get(m).n as f64);
        t.sample("zgate_model_clients", &[("metric", m.name())], n);
    }
    // One family per unit: a family never mixes counts, bytes and cores.
    let unitless = [
        Metric::Connections,
        Metric::RequestsNonidempotent,
        Metric::Requests,
        Metric::Fragmentation,
    ];
    for (name, help, f) in [
        (
            "zgate_model_mean",
            "Model mean of the count and score metrics (connections, requests, fragmentation).",
            (|s| s.mean) as fn(&zgate_limiter::MetricModel) -> f64,
        ),
        (
            "zgate_model_std",
            "Model standard deviation of the count and score metrics.",
            |s| s.std,
        ),
    ] {
        t.family(name, Kind::Gauge, help);
        for m in unitless {
            t.sample(name, &[("metric", m.name())], value(m, f));
        }
    }
    for (name, help, m, f) in [
        (
            "zgate_model_memory_mean_bytes",
            "Model mean of the memory metric.",
            Metric::Memory,
            (|s| s.mean) as fn(&zgate_limiter::MetricModel) -> f64,
        ),
        (
            "zgate_model_memory_std_bytes",
            "Model standard deviation of the memory metric.",
            Metric::Memory,
            |s| s.std,
        ),
        (
            "zgate_model_cpu_mean_ratio",
            "Model mean of the cpu metric, as a share of one core.",
            Metric::Cpu,
            |s| s.mean,
        ),
        (
            "zgate_model_cpu_std_ratio",
            "Model standard deviation of the cpu metric, as a share of one core.",
            Metric::Cpu,
            |s| s.std,
        ),
    ] {
        t.single(name, Kind::Gauge, help, value(m, f));
    }
}

pub(super) fn verdict_families(t: &mut Text, limiter: &Limiter) {
    t.family(
        "zgate_threshold_z",
        Kind::Gauge,
        "z-score threshold per metric (standard deviations).",
    );
    for m in Metric::ALL {
        t.sample(
            "zgate_threshold_z",
            &[("metric", m.name())],
            limiter.threshold(m),
        );
    }
    t.family(
        "zgate_metric_enabled",
        Kind::Gauge,
        "1 when the metric is scored.",
    );
    for m in Metric::ALL {
        let on = if limiter.is_enabled(m) { 1.0 } else { 0.0 };
        t.sample("zgate_metric_enabled", &[("metric", m.name())], on);
    }
    let c = limiter.counters();
    for (name, help, values) in [
        (
            "zgate_limiter_observations_total",
            "Observations scored, per metric.",
            &c.observations,
        ),
        (
            "zgate_limiter_blocks_total",
            "Clients blocked, per metric.",
            &c.blocked,
        ),
        (
            "zgate_limiter_would_block_total",
            "Would-blocks in monitor mode, per metric.",
            &c.would_block,
        ),
    ] {
        t.family(name, Kind::Counter, help);
        for m in Metric::ALL {
            t.sample(name, &[("metric", m.name())], values[m.index()] as f64);
        }
    }
    t.family(
        "zgate_limiter_guard_blocks_total",
        Kind::Counter,
        "Blocks and refusals by static guard.",
    );
    for g in Guard::ALL {
        let v = c.guard_blocked[g.index()] as f64;
        t.sample(
            "zgate_limiter_guard_blocks_total",
            &[("guard", g.name())],
            v,
        );
    }
    for (name, help, v) in [
        (
            "zgate_limiter_connections_total",
            "Connections the limiter was asked about.",
            c.connections,
        ),
        (
            "zgate_limiter_evictions_total",
            "Clients evicted from a full table.",
            c.evictions,
        ),
        (
            "zgate_limiter_expired_total",
            "Idle clients forgotten after limits.client_idle_expiry.",
            c.expired,
        ),
        (
            "zgate_limiter_untracked_total",
            "Connections admitted untracked (static guards only) because the client table was \
             full of clients with open connections.",
            c.untracked,
        ),
        (
            "zgate_limiter_blocklist_full_total",
            "Blocks not recorded because the block list was full.",
            c.blocklist_full,
        ),
    ] {
        t.single(name, Kind::Counter, help, v as f64);
    }
}
