//! Eviction cost: time to insert 10^6 distinct clients into a table bounded at 100_000 (every
//! insert past the bound evicts one idle client), printed once; then criterion's steady-state
//! time per new client at the bound.
//!
//! Run: `cargo bench -p zgate-limiter --bench eviction`
//! (about 10 s).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use zgate_limiter::{Limiter, LimiterConfig, Mode, Nanos};

const BOUND: usize = 100_000;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i))
}

fn limiter(mode: Mode) -> Limiter {
    let c = LimiterConfig {
        max_clients: BOUND,
        training_period: Duration::ZERO,
        idle_expiry: Duration::from_millis(1),
        ..LimiterConfig::default()
    };
    let l = Limiter::new(c, None, Nanos(0)).expect("valid config");
    l.set_mode(mode, Nanos(0)).expect("no model needed");
    l
}

/// Opens and closes one connection for each of `n` new clients starting at `from`.
fn insert(l: &Limiter, from: u32, n: u32) {
    for i in from..from + n {
        let now = Nanos(u64::from(i) * 1000);
        let (c, v) = l.connection_opened(ip(i), now);
        black_box(v);
        if let Some(c) = c {
            c.close(now);
        }
    }
}

fn million(mode: Mode) {
    let l = limiter(mode);
    let start = Instant::now();
    insert(&l, 1, 1_000_000);
    let took = start.elapsed();
    let c = l.counters();
    println!(
        "eviction/{mode}: 10^6 distinct clients, bound {BOUND}: {:.3} s ({:.0} ns/client), table {} , evictions {}",
        took.as_secs_f64(),
        took.as_nanos() as f64 / 1e6,
        c.clients,
        c.evictions
    );
    assert_eq!(c.clients, BOUND);
}

fn eviction(c: &mut Criterion) {
    million(Mode::Disabled);
    million(Mode::Training);
    let l = limiter(Mode::Training);
    insert(&l, 1, BOUND as u32);
    let mut next = BOUND as u32 + 1;
    c.bench_function("new_client_at_bound/training", |b| {
        b.iter(|| {
            insert(&l, next, 1);
            next += 1;
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = eviction
}
criterion_main!(benches);
