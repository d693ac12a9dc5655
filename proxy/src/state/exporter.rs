//! `/metrics`: Prometheus text, rendered at scrape time.
//!
//! The hot path only bumps plain relaxed atomics ([`crate::stats::Stats`], the backends'
//! [`crate::upstream::BackendStats`] and the limiter's own counters); a scrape reads them and
//! writes the text ([`super::exposition`]). Every family has `# HELP` and `# TYPE`, families
//! come in the order of this file on every scrape, values are in base units (seconds, bytes,
//! CPU as a ratio of one core), and nothing is labelled by client. The README's metrics table
//! lists every family and label.

use zgate_limiter::{Limiter, Nanos};

use super::exposition::{Kind, Text};
use super::limiter_metrics::{limiter_families, model_families, verdict_families};
use crate::http::Router;
use crate::stats::{HeaderFailure, Stats, STATUS_CLASSES};

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
        if let Some(f) = &scrape.fleet {
            fleet_families(&mut t, f);
        }
        t.finish()
    }
}

/// What a scrape renders.
pub(crate) struct Scrape<'a> {
    /// The proxy's traffic counters.
    pub(crate) stats: &'a Stats,
    /// Open client connections.
    pub(crate) open_connections: usize,
    /// The pools in force, their backends with their counters.
    pub(crate) upstream: &'a Router,
    /// The limiter: mode, model, its own counters.
    pub(crate) limiter: &'a Limiter,
    /// Now, on the limiter's clock.
    pub(crate) now: Nanos,
    /// The fleet's state, `None` without `[fleet]`.
    pub(crate) fleet: Option<zgate_fleet::StatusView>,
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
    t.family(
        "zgate_proxy_protocol_errors_total",
        Kind::Counter,
        "Connections of proxy_protocol listeners closed for their PROXY header, by reason.",
    );
    for why in HeaderFailure::ALL {
        t.sample(
            "zgate_proxy_protocol_errors_total",
            &[("reason", why.name())],
            get(&s.proxy_protocol_errors[why.index()]) as f64,
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

/// The labels of one backend's series, `extra` after them: the one place that says how a
/// backend is labelled (its pool, its address).
fn backend_labels<'a>(
    pool: &'a str,
    backend: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut labels = Vec::with_capacity(2 + extra.len());
    labels.push(("pool", pool));
    labels.push(("backend", backend));
    labels.extend_from_slice(extra);
    labels
}

fn backend_families(t: &mut Text, router: &Router) {
    use std::sync::atomic::Ordering::Relaxed;
    // Every backend of every pool, labelled by both: the same address may be in two pools.
    let all = || {
        router
            .pools()
            .flat_map(|p| p.backend_stats().map(move |(b, s)| (p.name(), b, s)))
    };
    t.family(
        "zgate_backend_up",
        Kind::Gauge,
        "1 when the backend is up; 0 from when passive detection (upstream.fail_after failures \
         in a row) or health checks took it out until it proved itself again.",
    );
    for (p, b, s) in all() {
        let up = if s.is_up() { 1.0 } else { 0.0 };
        t.sample("zgate_backend_up", &backend_labels(p, b, &[]), up);
    }
    t.family(
        "zgate_backend_requests_total",
        Kind::Counter,
        "Requests handed to the backend.",
    );
    for (p, b, s) in all() {
        let v = s.requests.load(Relaxed) as f64;
        t.sample(
            "zgate_backend_requests_total",
            &backend_labels(p, b, &[]),
            v,
        );
    }
    t.family(
        "zgate_backend_failures_total",
        Kind::Counter,
        "Backend failures by kind: connect (refused, unreachable, timed out), timeout \
         (no response head within timeouts.backend_response), failed (mid-exchange), \
         5xx (answered with a 5xx other than 501 and 505).",
    );
    for (p, b, s) in all() {
        for (kind, v) in [
            ("connect", &s.connect_failures),
            ("timeout", &s.timeouts),
            ("failed", &s.failures),
            ("5xx", &s.server_errors),
        ] {
            let labels = backend_labels(p, b, &[("kind", kind)]);
            t.sample(
                "zgate_backend_failures_total",
                &labels,
                v.load(Relaxed) as f64,
            );
        }
    }
    t.family(
        "zgate_backend_retries_total",
        Kind::Counter,
        "Requests that failed on the backend before a response head and were sent again to \
         another one (idempotent, without a body; upstream.retries).",
    );
    for (p, b, s) in all() {
        let v = s.retried.load(Relaxed) as f64;
        t.sample("zgate_backend_retries_total", &backend_labels(p, b, &[]), v);
    }
    t.family(
        "zgate_backend_health_checks_total",
        Kind::Counter,
        "Active health checks of the backend, by result (ok: 2xx or 3xx in time; failed).",
    );
    for (p, b, s) in all() {
        for (result, v) in [("ok", &s.checks_passed), ("failed", &s.checks_failed)] {
            let labels = backend_labels(p, b, &[("result", result)]);
            let v = v.load(Relaxed) as f64;
            t.sample("zgate_backend_health_checks_total", &labels, v);
        }
    }
    t.family(
        "zgate_backend_down_total",
        Kind::Counter,
        "Times the backend went from up to down.",
    );
    for (p, b, s) in all() {
        let v = s.marked_down.load(Relaxed) as f64;
        t.sample("zgate_backend_down_total", &backend_labels(p, b, &[]), v);
    }
    t.family(
        "zgate_backend_response_seconds",
        Kind::Histogram,
        "From a request handed to the backend to its response head.",
    );
    for (p, b, s) in all() {
        let h = s.latency.snapshot();
        t.histogram(
            "zgate_backend_response_seconds",
            &backend_labels(p, b, &[]),
            &h,
        );
    }
}

/// `[fleet]`: connection to Redis, outbox, event lag, events both ways (absent when alone).
fn fleet_families(t: &mut Text, f: &zgate_fleet::StatusView) {
    let b = |on: bool| if on { 1.0 } else { 0.0 };
    let gauges = [
        (
            "zgate_fleet_connected",
            "1 while Redis answers, 0 while this instance blocks alone.",
            b(f.connected),
        ),
        (
            "zgate_fleet_outbox_events",
            "Block and unblock events waiting for Redis.",
            f.outbox as f64,
        ),
        (
            "zgate_fleet_event_lag_seconds",
            "Delay of the last event received from another instance.",
            f.lag_ms as f64 / 1000.0,
        ),
        (
            "zgate_fleet_epoch",
            "The fleet's training epoch, now or last (0: none).",
            f.epoch as f64,
        ),
        (
            "zgate_fleet_model_epoch",
            "The epoch of the fleet model in force (0: none).",
            f.model_epoch as f64,
        ),
    ];
    for (name, help, v) in gauges {
        t.single(name, Kind::Gauge, help, v);
    }
    let counters = [
        (
            "zgate_fleet_events_published_total",
            "Events this instance published.",
            f.published,
        ),
        (
            "zgate_fleet_events_received_total",
            "Events from other instances applied here.",
            f.received,
        ),
        (
            "zgate_fleet_events_malformed_total",
            "Stream entries that did not decode.",
            f.malformed,
        ),
        (
            "zgate_fleet_dropped_total",
            "Changes dropped (outbox bound, full queue, full block list).",
            f.dropped,
        ),
    ];
    for (name, help, v) in counters {
        t.single(name, Kind::Counter, help, v as f64);
    }
}
