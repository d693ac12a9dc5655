//! Hot-path cost: nanoseconds per event on an open connection (the client is in the table and
//! the handle holds it), in defence mode against a trained model (and in training mode), with one thread and with two
//! threads hammering the same client; disabled mode as the baseline, and `connection_opened` on
//! a table hit (open + drop).
//!
//! Two threads run either on two clients (the usual case: workers serve different clients) or
//! on two connections of one client (contention on its counters).
//!
//! An "event" here is one `request_started` + drop of the `Request`, one `memory_grew` + one
//! `memory_shrank`, and one `cpu_spent`: the per-request mix the proxy reports.
//!
//! Run: `cargo bench -p zgate-limiter --bench hot_path`
//! (about 20 s).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use zgate_limiter::{Connection, Limiter, LimiterConfig, Metric, Mode, Nanos};

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// A limiter trained on 100 clients with 1..=100 connections and a few requests, in `mode`.
fn limiter(mode: Mode) -> Limiter {
    let c = LimiterConfig {
        training_period: Duration::ZERO,
        ..LimiterConfig::default()
    };
    let l = Limiter::new(c, None, Nanos(0)).expect("valid config");
    l.set_mode(Mode::Training, Nanos(0))
        .expect("training needs no model");
    for i in 0..100 {
        let conns: Vec<Connection> = (0..=i)
            .filter_map(|_| l.connection_opened(ip(i), Nanos(1)).0)
            .collect();
        for c in &conns {
            let _r = c.request_started(true, Nanos(1));
            c.memory_grew(64 << 10, Nanos(1));
            c.cpu_spent(50_000, Nanos(1));
        }
    }
    l.set_mode(mode, Nanos(2)).expect("trained");
    l
}

/// Events so far: the clock never goes backwards across benchmark runs (a CPU EMA fed at a
/// standing clock only grows, and would get the bench client blocked).
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// One event mix; event `i` happens at `1 s + i * 100 us`, with 1 us of CPU time (1 % of a core
/// per connection, inside the trained population).
#[inline]
fn event(c: &Connection, i: u64) {
    let now = Nanos(1_000_000_000 + i * 100_000);
    let (r, v) = c.request_started(true, now);
    black_box(v);
    drop(r);
    black_box(c.memory_grew(4096, now));
    c.memory_shrank(4096);
    black_box(c.cpu_spent(1_000, now));
}

/// `iters` event mixes on each of `threads` threads, each on its own connection, of one client
/// (`same_client`) or of one client per thread; returns the wall time (all threads run at once).
fn run(l: &Limiter, threads: u32, iters: u64, same_client: bool) -> Duration {
    let client = |t: u32| if same_client { ip(1000) } else { ip(2000 + t) };
    let conns: Vec<Connection> = (0..threads)
        .filter_map(|t| l.connection_opened(client(t), Nanos(3)).0)
        .collect();
    assert_eq!(conns.len(), threads as usize);
    let base = EVENTS.fetch_add(iters, Ordering::Relaxed);
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for c in &conns {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in base..base + iters {
                    event(c, i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_mix");
    for (name, mode) in [
        ("disabled", Mode::Disabled),
        ("training", Mode::Training),
        ("defence", Mode::Defence),
    ] {
        let l = limiter(mode);
        g.bench_function(format!("{name}/1_thread"), |b| {
            let (conn, v) = l.connection_opened(ip(1000), Nanos(3));
            let conn = conn.unwrap_or_else(|| panic!("{name}: {v:?}"));
            b.iter_custom(|iters| {
                let base = EVENTS.fetch_add(iters, Ordering::Relaxed);
                let start = Instant::now();
                for i in base..base + iters {
                    event(&conn, i);
                }
                start.elapsed()
            })
        });
        g.bench_function(format!("{name}/2_threads_2_clients"), |b| {
            b.iter_custom(|iters| run(&l, 2, iters, false))
        });
        // Two threads feed one client's CPU EMA with unsynchronised clocks: a thread that runs
        // behind the other reports CPU at a standing clock, which only adds. Keep the CPU z from
        // crossing its threshold; it is still computed and compared on every event.
        l.set_threshold(Metric::Cpu, 1e9).expect("finite");
        g.bench_function(format!("{name}/2_threads_same_client"), |b| {
            b.iter_custom(|iters| run(&l, 2, iters, true))
        });
        // The figures only mean something if nothing was blocked.
        let blocked: u64 = l.counters().blocked.iter().sum();
        assert_eq!(blocked, 0, "{name}: the bench client was blocked");
    }
    g.finish();

    let l = limiter(Mode::Defence);
    let _keep = l.connection_opened(ip(7), Nanos(3)).0;
    c.bench_function("connection_opened_table_hit/defence", |b| {
        b.iter(|| black_box(l.connection_opened(ip(7), Nanos(4))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = hot_path
}
criterion_main!(benches);
