//! `[fleet]`: how fast a block reaches another instance, and what the fleet costs the request
//! path.
//!
//! 1. **Propagation.** A redis-server of its own on a loopback port (persistence off), two zgate
//!    instances in-process (A, B) sharing it. `BLOCKS` times (default 1000), one after the
//!    other: a block is decided on A (`Limiter::block`, the path every block takes: the
//!    limiter's sink, the fleet task, `MULTI ZADD XADD`), and a thread polls B's limiter until
//!    it refuses the address. Prints p50, p99 and max of that latency.
//! 2. **CPU per request, `[fleet]` on against off.** Two zgate instances in-process, each on a
//!    runtime of its own with one worker (threads named `zgate-on` and `zgate-off`), the same
//!    config (`limits.mode = "training"`) but for `[fleet]`. A load of 8 keep-alive HTTP/1.1
//!    connections (`GET /`) goes to one of them at a time, in windows of `WINDOW_MS` (default
//!    1500 ms), `ROUNDS` (default 10) ABBA pairs. A window's CPU is the scheduler's run time
//!    (`/proc/self/task/*/schedstat`, ns) of the loaded instance's threads and the accept
//!    threads; the fleet task runs on the `[fleet]` instance's runtime, so its background work
//!    (tick, `XREAD BLOCK` tail) is charged to it. Prints the median ns per request of each
//!    side and the median of the per-pair ratios.
//!
//! With `CONTROL=1` the "on" instance has no `[fleet]` either: the same schedule then measures
//! the method's noise floor (an A/A run).
//!
//! Run: `cargo bench -p zgate-tests --bench fleet` (env `BLOCKS`, `ROUNDS`, `WINDOW_MS`,
//! `CONTROL`).
//! Loopback only, bounded in count and time (a stuck propagation gives up after 5 s).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zgate_limiter::IpPrefix;
use zgate_proxy::Server;
use zgate_tests::redis::RedisServer;
use zgate_tests::{backend, config, config_text, get, Client, Proto, TempDir};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fleet_toml(redis: &RedisServer, name: &str) -> String {
    format!(
        "[fleet]\nredis = \"{}\"\ninstance = \"{name}\"\n",
        redis.url()
    )
}

async fn start(backend: SocketAddr, extra: &str) -> Server {
    let dir = TempDir::new("bench-fleet");
    let text = config_text(&[backend], &format!("[admin]\nenabled = false\n{extra}"));
    Server::start(config(&text, dir.path()))
        .await
        .expect("zgate starts")
}

async fn wait_connected(s: &Server) {
    let t = Instant::now();
    while !s.fleet().is_some_and(|f| f.connected) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "fleet never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Part 1: block on A, poll B.
fn propagation(rt: &tokio::runtime::Runtime, redis: &RedisServer, backend: SocketAddr) {
    let blocks = env("BLOCKS", 1000) as u32;
    let (a, b) = rt.block_on(async {
        let a = start(backend, &fleet_toml(redis, "a")).await;
        let b = start(backend, &fleet_toml(redis, "b")).await;
        wait_connected(&a).await;
        wait_connected(&b).await;
        (a, b)
    });
    let (la, ca, lb, cb) = (
        a.limiter().clone(),
        a.clock(),
        b.limiter().clone(),
        b.clock(),
    );
    let mut took = Vec::with_capacity(blocks as usize);
    let mut lost = 0;
    for i in 0..blocks {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + (i << 8)));
        let start = Instant::now();
        la.block(IpPrefix::host(ip), Duration::from_secs(600), ca.now())
            .expect("block list has room");
        while !lb.is_blocked(ip, cb.now()) {
            if start.elapsed() > Duration::from_secs(5) {
                lost += 1;
                break;
            }
            std::thread::yield_now();
        }
        took.push(start.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "block propagation A -> B over {blocks} blocks (loopback Redis): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, not propagated within 5 s: {lost}",
        ms(percentile(&took, 0.50)),
        ms(percentile(&took, 0.99)),
        ms(took[took.len() - 1]),
    );
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}

/// Scheduler run time (ns) of this process's threads whose name starts with one of `names`.
fn cpu_ns(names: &[&str]) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            names.iter().any(|n| comm.trim_end().starts_with(n))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A window of load on `to`: requests done.
async fn load(to: SocketAddr, dur: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + dur;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(to, Proto::Http1).await;
                while Instant::now() < deadline {
                    if c.try_send(get(to, "/")).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

fn one_worker(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Part 2: CPU per request with `[fleet]` on against off, ABBA windows.
fn cpu_cost(rt: &tokio::runtime::Runtime, redis: &RedisServer, backend: SocketAddr) {
    let (rounds, window) = (
        env("ROUNDS", 10),
        Duration::from_millis(env("WINDOW_MS", 1500)),
    );
    let limits = "[limits]\nmode = \"training\"\ntraining_period = \"0\"\n";
    let (rt_on, rt_off) = (one_worker("zgate-on"), one_worker("zgate-off"));
    let control = env("CONTROL", 0) == 1;
    let fleet = if control {
        String::new()
    } else {
        fleet_toml(redis, "on")
    };
    let on = rt_on.block_on(start(backend, &format!("{limits}{fleet}")));
    let off = rt_off.block_on(start(backend, limits));
    if !control {
        rt_on.block_on(wait_connected(&on));
    }
    let (addr_on, addr_off) = (on.local_addrs()[0], off.local_addrs()[0]);
    let window_cost = |side: bool| {
        let (addr, name) = if side {
            (addr_on, "zgate-on")
        } else {
            (addr_off, "zgate-off")
        };
        let before = cpu_ns(&[name, "zgate-accept"]);
        let n = rt.block_on(load(addr, window));
        let used = cpu_ns(&[name, "zgate-accept"]) - before;
        used as f64 / n.max(1) as f64
    };
    window_cost(true); // warm both
    window_cost(false);
    let (mut on_ns, mut off_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (x, y) = if r % 2 == 0 {
            let x = window_cost(true);
            (x, window_cost(false))
        } else {
            let y = window_cost(false);
            (window_cost(true), y)
        };
        on_ns.push(x);
        off_ns.push(y);
        ratios.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_on, m_off, m_ratio) = (median(&mut on_ns), median(&mut off_ns), median(&mut ratios));
    println!(
        "request path CPU per request (zgate threads, {rounds} ABBA pairs of {window:?}){}: fleet on {:.0} ns, off {:.0} ns, median ratio on/off {:.4} ({:+.2}%)",
        if control { " CONTROL, both off" } else { "" },
        m_on,
        m_off,
        m_ratio,
        (m_ratio - 1.0) * 100.0
    );
    drop((on, off));
}

fn main() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let b = rt.block_on(backend());
    propagation(&rt, &redis, b.addr());
    cpu_cost(&rt, &redis, b.addr());
}
