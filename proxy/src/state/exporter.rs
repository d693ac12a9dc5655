//! `/metrics`: Prometheus text, rendered at scrape time.
//!
//! The hot path only bumps plain relaxed atomics ([`crate::stats::Stats`], the backends'
//! [`crate::upstream::BackendStats`] and the limiter's own counters); a scrape reads them and
//! writes the text ([`super::exposition`]). Every family has `# HELP` and `# TYPE`, families
//! come in the order of this file on every scrape, values are in base units (seconds, bytes,
//! CPU as a ratio of one core), and nothing is labelled by client. The README's metrics table
//! lists every family and label.

use zgate_limiter::{Guard, Limiter, Metric, Mode, Nanos};

use super::exposition::{Kind, Text};
use crate::http::Upstream;
use crate::stats::{Stats, STATUS_CLASSES};

/// zgate's version, for `zgate_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit zgate was built from (`git rev-parse --short HEAD` at build time, `ZGATE_COMMIT`
/// when set, else `unknown`), for `zgate_build_info`.
pub const COMMIT: &str = env!("ZGATE_COMMIT");

/// The server's `/metrics` renderer.
pub(crate) struct Exporter;

impl Exporter {
    pub(crate) fn new() -> Exporter {
        Exporter
    }

    /// Renders every family of `scrape` as Prometheus text.
    pub(crate) fn render(&self, scrape: &Scrape<'_>) -> String {
        let mut t = Text::default();
        proxy_families(&mut t, scrape);
        backend_families(&mut t, scrape.upstream);
        limiter_families(&mut t, scrape.limiter, scrape.now);
        model_families(&mut t, scrape.limiter);
        verdict_families(&mut t, scrape.limiter);
        t.finish()
    }
}

/// What a scrape renders.
pub(crate) struct Scrape<'a> {
    /// The proxy's traffic counters.
    pub(crate) stats: &'a Stats,
    /// Open client connections.
    pub(crate) open_connections: usize,
    /// The backends in force, with their counters.
    pub(crate) upstream: &'a Upstream,
    /// The limiter: mode, model, its own counters.
    pub(crate) limiter: &'a Limiter,
    /// Now, on the limiter's clock.
    pub(crate) now: Nanos,
}

fn proxy_families(t: &mut Text, scrape: &Scrape<'_>) {
    let s = scrape.stats;
    let get = Stats::get;
    t.family(
        "zgate_build_info",
        Kind::Gauge,
        "Always 1; the labels say which zgate this is.",
    );
    t.sample(
        "zgate_build_info",
        &[("version", VERSION), ("commit", COMMIT)],
        1.0,
    );
    let requests = s.requests() as f64;
    t.single(
        "zgate_requests_total",
        Kind::Counter,
        "Requests received from clients.",
        requests,
    );
    t.family(
        "zgate_responses_total",
        Kind::Counter,
        "Responses sent to clients, by status class.",
    );
    for (i, class) in STATUS_CLASSES.iter().enumerate() {
        t.sample(
            "zgate_responses_total",
            &[("class", class)],
            s.responses(i) as f64,
        );
    }
    t.family(
        "zgate_request_duration_seconds",
        Kind::Histogram,
        "Requests from their head to the last byte of the response sent (or its end).",
    );
    t.histogram(
        "zgate_request_duration_seconds",
        &[],
        &s.request_durations(),
    );
    for (name, help, v) in [
        (
            "zgate_connections_accepted_total",
            "Client connections accepted, before the limiter's word.",
            get(&s.connections_accepted),
        ),
        (
            "zgate_connections_refused_total",
            "Client connections refused at accept (blocked client, guard, full table).",
            get(&s.connections_refused),
        ),
    ] {
        t.single(name, Kind::Counter, help, v as f64);
    }
    t.single(
        "zgate_connections_open",
        Kind::Gauge,
        "Client connections open now.",
        scrape.open_connections as f64,
    );
    t.single(
        "zgate_bytes_in_total",
        Kind::Counter,
        "Plaintext bytes read from clients, counted as they are read.",
        s.bytes_in() as f64,
    );
    t.single(
        "zgate_bytes_out_total",
        Kind::Counter,
        "Plaintext bytes written to clients, counted as they are written.",
        s.bytes_out() as f64,
    );
    t.family(
        "zgate_backend_errors_total",
        Kind::Counter,
        "Requests that got no backend response, by kind.",
    );
    for (kind, v) in [
        ("unreachable", &s.backend_unreachable),
        ("timeout", &s.backend_timeout),
        ("failed", &s.backend_failed),
    ] {
        t.sample(
            "zgate_backend_errors_total",
            &[("kind", kind)],
            get(v) as f64,
        );
    }
    for (name, help, v) in [
        (
            "zgate_client_body_timeouts_total",
            "Requests answered 408: the client paused its body longer than timeouts.body_read.",
            &s.client_body_timeout,
        ),
        (
            "zgate_client_body_errors_total",
            "Requests answered 400: the client's request body was malformed.",
            &s.client_body_errors,
        ),
        ("zgate_reloads_total", "Config reloads applied.", &s.reloads),
        (
            "zgate_reload_failures_total",
            "Config reloads refused.",
            &s.reload_failures,
        ),
    ] {
        t.single(name, Kind::Counter, help, get(v) as f64);
    }
}

fn backend_families(t: &mut Text, upstream: &Upstream) {
    use std::sync::atomic::Ordering::Relaxed;
    t.family(
        "zgate_backend_up",
        Kind::Gauge,
        "1 when the backend is up: no connection to it failed since the last that succeeded.",
    );
    for (b, s) in upstream.backend_stats() {
        let up = if s.is_up() { 1.0 } else { 0.0 };
        t.sample("zgate_backend_up", &[("backend", b)], up);
    }
    t.family(
        "zgate_backend_requests_total",
        Kind::Counter,
        "Requests handed to the backend.",
    );
    for (b, s) in upstream.backend_stats() {
        let v = s.requests.load(Relaxed) as f64;
        t.sample("zgate_backend_requests_total", &[("backend", b)], v);
    }
    t.family(
        "zgate_backend_failures_total",
        Kind::Counter,
        "Backend failures by kind: connect (refused, unreachable, timed out), timeout \
         (no response head within timeouts.backend_response), failed (mid-exchange).",
    );
    for (b, s) in upstream.backend_stats() {
        for (kind, v) in [
            ("connect", &s.connect_failures),
            ("timeout", &s.timeouts),
            ("failed", &s.failures),
        ] {
            let labels = [("backend", b), ("kind", kind)];
            t.sample(
                "zgate_backend_failures_total",
                &labels,
                v.load(Relaxed) as f64,
            );
        }
    }
    t.family(
        "zgate_backend_down_total",
        Kind::Counter,
        "Times the backend went from up to down.",
    );
    for (b, s) in upstream.backend_stats() {
        let v = s.marked_down.load(Relaxed) as f64;
        t.sample("zgate_backend_down_total", &[("backend", b)], v);
    }
    t.family(
        "zgate_backend_response_seconds",
        Kind::Histogram,
        "From a request handed to the backend to its response head.",
    );
    for (b, s) in upstream.backend_stats() {
        let h = s.latency.snapshot();
        t.histogram("zgate_backend_response_seconds", &[("backend", b)], &h);
    }
}

fn limiter_families(t: &mut Text, limiter: &Limiter, now: Nanos) {
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

fn model_families(t: &mut Text, limiter: &Limiter) {
    let model = limiter.model();
    let present = if model.is_some() { 1.0 } else { 0.0 };
    t.single(
        "zgate_model_present",
        Kind::Gauge,
        "1 when the limiter has a model.",
        present,
    );
    let value = |m: Metric, f: fn(&zgate_training::MetricModel) -> f64| {
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
            (|s| s.mean) as fn(&zgate_training::MetricModel) -> f64,
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
            (|s| s.mean) as fn(&zgate_training::MetricModel) -> f64,
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

fn verdict_families(t: &mut Text, limiter: &Limiter) {
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
            "zgate_limiter_blocklist_full_total",
            "Blocks not recorded because the block list was full.",
            c.blocklist_full,
        ),
    ] {
        t.single(name, Kind::Counter, help, v as f64);
    }
}
