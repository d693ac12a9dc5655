//! What finding a request's pool costs, in nanoseconds per lookup, with 1000 routes against
//! none: [`zgate_proxy::upstream::RouteTable`], the lookup every request makes before it is
//! sent (`Router::route`).
//!
//! The 1000 routes, those of `bench/routes-1000.py` (which `bench/routes-callgrind.sh` gives
//! zgate): 400 exact hosts (`app{i}.example.com`, each with `/` and `/api/`), 100 wildcards
//! (`*.tenant{i}.example.net`), 99 path prefixes without a host (`/svc{i}/v{j}/`) and
//! `/bytes`. Looked up: an exact host (upper case and a port) with its longest prefix, a
//! wildcard three labels deep, an any-host prefix from a host no route names, a miss (default
//! pool), and `callgrind`: the request of the callgrind rows (`127.0.0.1:PORT`, `/bytes`:
//! exact and wildcard hosts skipped, the last any-host route). `none` is a request with no
//! route at all (the table is skipped).
//!
//! Run: `cargo bench -p zgate-proxy --bench routes` (about 30 s). It prints each case's ns per
//! lookup and its share of a request's CPU (30 µs, below); `bench/routes-callgrind.sh` gives
//! the same share counted in zgate's instructions per request (`bench/results/routes.md`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use zgate_config::HostPattern;
use zgate_proxy::upstream::RouteTable;

/// zgate's CPU per request for the share printed, in ns: the low end of the 30-38 µs of
/// `bench/results/latest.md` (a lower figure makes the share larger: the pessimistic side).
const REQUEST_NS: f64 = 30_000.0;

fn thousand() -> RouteTable {
    let mut routes: Vec<(HostPattern, String)> = Vec::new();
    for i in 0..400 {
        let h = HostPattern::Exact(format!("app{i}.example.com"));
        routes.push((h.clone(), "/".into()));
        routes.push((h, "/api/".into()));
    }
    for i in 0..100 {
        routes.push((
            HostPattern::Wildcard(format!(".tenant{i}.example.net")),
            "/".into(),
        ));
    }
    for i in 0..50 {
        for j in 0..2 {
            routes.push((HostPattern::Any, format!("/svc{i}/v{j}/")));
        }
    }
    routes.truncate(999);
    routes.push((HostPattern::Any, "/bytes".into()));
    assert_eq!(routes.len(), 1000);
    RouteTable::new(
        routes
            .iter()
            .enumerate()
            .map(|(k, (h, p))| (h, p.as_str(), k % 7)),
    )
}

const CASES: [(&str, &str, &str); 5] = [
    ("exact", "App371.Example.com:443", "/api/users/17"),
    ("wildcard", "eu.shop.tenant42.example.net", "/cart"),
    ("any_host_prefix", "unknown.test", "/svc31/v1/items/9"),
    ("miss", "unknown.test", "/index.html"),
    ("callgrind", "127.0.0.1:18381", "/bytes"),
];

fn bench(c: &mut Criterion) {
    let table = thousand();
    let empty = RouteTable::new(std::iter::empty());
    let mut g = c.benchmark_group("routes");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("none", |b| {
        b.iter(|| empty.lookup(black_box(b"app371.example.com"), black_box("/api/")))
    });
    for (name, host, path) in CASES {
        assert!(
            table.lookup(host.as_bytes(), path).is_some() == (name != "miss"),
            "{name}"
        );
        g.bench_function(format!("1000/{name}"), |b| {
            b.iter(|| table.lookup(black_box(host.as_bytes()), black_box(path)))
        });
    }
    g.finish();
    // The figure the issue asks for, printed plainly: ns per lookup and the share of a request.
    let rounds = 2_000_000u32;
    println!("\nroutes: ns per lookup with 1000 routes, and its share of {REQUEST_NS} ns of CPU per request");
    let none = ("none", "app371.example.com", "/api/");
    for (name, host, path) in std::iter::once(none).chain(CASES) {
        let table = if name == "none" { &empty } else { &table };
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(table.lookup(black_box(host.as_bytes()), black_box(path)));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "routes: {name:16} {ns:6.1} ns  {:.3}% of a request",
            100.0 * ns / REQUEST_NS
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
