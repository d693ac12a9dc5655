//! `/metrics`: Prometheus text, rendered at scrape time.
//!
//! The hot path only bumps plain relaxed atomics ([`crate::stats::Stats`] and the limiter's own
//! counters). A scrape copies them into a `metrics`-facade recorder private to this server
//! (`metrics-exporter-prometheus`'s recorder, installed with `with_local_recorder`, never
//! globally and never on a port of its own) and renders it. Nothing is labelled by client.

use std::sync::Mutex;

use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use zgate_limiter::{Guard, Limiter, Metric, Mode, Nanos};

use crate::stats::{Stats, STATUS_CLASSES};

/// The server's Prometheus recorder.
pub(crate) struct Exporter {
    recorder: Mutex<PrometheusRecorder>,
}

impl Exporter {
    pub(crate) fn new() -> Exporter {
        Exporter {
            recorder: Mutex::new(PrometheusBuilder::new().build_recorder()),
        }
    }

    /// Publishes every counter and gauge of `scrape` and renders them as Prometheus text.
    pub(crate) fn render(&self, scrape: &Scrape<'_>) -> String {
        // The recorder holds plain registries: a poisoned lock is still usable.
        let recorder = self.recorder.lock().unwrap_or_else(|p| p.into_inner());
        with_local_recorder(&*recorder, || publish(scrape));
        recorder.handle().render()
    }
}

/// What a scrape renders.
pub(crate) struct Scrape<'a> {
    /// The proxy's traffic counters.
    pub(crate) stats: &'a Stats,
    /// Open client connections.
    pub(crate) open_connections: usize,
    /// The limiter: mode, model, its own counters.
    pub(crate) limiter: &'a Limiter,
    /// Now, on the limiter's clock.
    pub(crate) now: Nanos,
    /// The fleet's state, `None` without `[fleet]`.
    pub(crate) fleet: Option<zgate_fleet::StatusView>,
}

fn publish(scrape: &Scrape<'_>) {
    let s = scrape.stats;
    let c = |name: &'static str, v: &std::sync::atomic::AtomicU64| {
        counter!(name).absolute(Stats::get(v));
    };
    counter!("zgate_requests_total").absolute(s.requests());
    for (i, class) in STATUS_CLASSES.iter().enumerate() {
        counter!("zgate_responses_total", "class" => *class).absolute(s.responses(i));
    }
    c("zgate_connections_accepted_total", &s.connections_accepted);
    c("zgate_connections_refused_total", &s.connections_refused);
    c("zgate_bytes_in_total", &s.bytes_in);
    c("zgate_bytes_out_total", &s.bytes_out);
    for (kind, v) in [
        ("unreachable", &s.backend_unreachable),
        ("timeout", &s.backend_timeout),
        ("failed", &s.backend_failed),
    ] {
        counter!("zgate_backend_errors_total", "kind" => kind).absolute(Stats::get(v));
    }
    c("zgate_client_body_timeouts_total", &s.client_body_timeout);
    c("zgate_reloads_total", &s.reloads);
    c("zgate_reload_failures_total", &s.reload_failures);
    gauge!("zgate_connections_open").set(scrape.open_connections as f64);

    let limiter = scrape.limiter;
    let status = limiter.status(scrape.now);
    for mode in [Mode::Disabled, Mode::Training, Mode::Defence, Mode::Monitor] {
        let on = if status.mode == mode { 1.0 } else { 0.0 };
        gauge!("zgate_limiter_mode", "mode" => mode.name()).set(on);
    }
    gauge!("zgate_limiter_epoch").set(status.epoch as f64);
    gauge!("zgate_limiter_training_left_seconds")
        .set(status.training_left.map_or(0.0, |d| d.as_secs_f64()));
    gauge!("zgate_limiter_clients").set(status.clients as f64);
    gauge!("zgate_limiter_blocklist_entries").set(status.blocks as f64);

    let model = limiter.model();
    gauge!("zgate_model_present").set(if model.is_some() { 1.0 } else { 0.0 });
    let counters = limiter.counters();
    for m in Metric::ALL {
        let name = m.name();
        let i = m.index();
        let (n, mean, std) = model.as_ref().map_or((0.0, 0.0, 0.0), |md| {
            let s = md.get(m);
            (s.n as f64, s.mean, s.std)
        });
        gauge!("zgate_model_clients", "metric" => name).set(n);
        gauge!("zgate_model_mean", "metric" => name).set(mean);
        gauge!("zgate_model_std", "metric" => name).set(std);
        gauge!("zgate_threshold_z", "metric" => name).set(limiter.threshold(m));
        gauge!("zgate_metric_enabled", "metric" => name).set(if limiter.is_enabled(m) {
            1.0
        } else {
            0.0
        });
        counter!("zgate_limiter_observations_total", "metric" => name)
            .absolute(counters.observations[i]);
        counter!("zgate_limiter_blocks_total", "metric" => name).absolute(counters.blocked[i]);
        counter!("zgate_limiter_would_block_total", "metric" => name)
            .absolute(counters.would_block[i]);
    }
    for g in Guard::ALL {
        counter!("zgate_limiter_guard_blocks_total", "guard" => g.name())
            .absolute(counters.guard_blocked[g.index()]);
    }
    counter!("zgate_limiter_connections_total").absolute(counters.connections);
    counter!("zgate_limiter_evictions_total").absolute(counters.evictions);
    counter!("zgate_limiter_expired_total").absolute(counters.expired);
    counter!("zgate_limiter_blocklist_full_total").absolute(counters.blocklist_full);
    if let Some(f) = &scrape.fleet {
        publish_fleet(f);
    }
}

/// `[fleet]`: connection to Redis, outbox, event lag, events both ways (absent when alone).
fn publish_fleet(f: &zgate_fleet::StatusView) {
    gauge!("zgate_fleet_connected").set(if f.connected { 1.0 } else { 0.0 });
    gauge!("zgate_fleet_outbox_events").set(f.outbox as f64);
    gauge!("zgate_fleet_event_lag_seconds").set(f.lag_ms as f64 / 1000.0);
    gauge!("zgate_fleet_epoch").set(f.epoch as f64);
    gauge!("zgate_fleet_model_epoch").set(f.model_epoch as f64);
    counter!("zgate_fleet_events_published_total").absolute(f.published);
    counter!("zgate_fleet_events_received_total").absolute(f.received);
    counter!("zgate_fleet_events_malformed_total").absolute(f.malformed);
    counter!("zgate_fleet_dropped_total").absolute(f.dropped);
}
