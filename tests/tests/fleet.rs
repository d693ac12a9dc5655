//! `[fleet]` end to end: two to four zgate instances and a real redis-server (each test starts
//! its own on a loopback port, persistence off, and stops it). Blocks and unblocks propagate,
//! training on two instances with disjoint clients gives both the same model of all clients
//! (the exact sums, and the histograms summed bucket by bucket),
//! a Redis killed mid-run leaves both instances serving and blocking, and they converge when it
//! is back; over `rediss://` with a private CA (`fleet.ca`) a block propagates, and without the
//! CA the instance does not connect; a bad URL is refused naming `fleet.redis`, a bad CA file
//! naming `fleet.ca`.
//!
//! Waits are bounded polls for a condition (never a timing assertion); how fast a block
//! propagates is measured by `cargo bench -p zgate-tests --bench fleet_propagation`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zgate_limiter::{Metric, Mode};
use zgate_proxy::Server;
use zgate_tests::lab::{connect_from, ip};
use zgate_tests::redis::RedisServer;
use zgate_tests::*;

/// The longest any propagation may take before a test fails (a bound, not the target).
const WAIT: Duration = Duration::from_secs(10);

/// The guard the block test trips: at most 3 connections per client.
const GUARD: &str = "[limits.guards]\nmax_connections_per_client = 3\n";

async fn instance(redis: &RedisServer, name: &str, backend: SocketAddr) -> Server {
    instance_with(redis, name, backend, "").await
}

async fn instance_with(
    redis: &RedisServer,
    name: &str,
    backend: SocketAddr,
    extra: &str,
) -> Server {
    instance_in_fleet(redis, name, backend, extra, "").await
}

/// An instance with `extra` config sections and `fleet_extra` keys in `[fleet]`.
async fn instance_in_fleet(
    redis: &RedisServer,
    name: &str,
    backend: SocketAddr,
    extra: &str,
    fleet_extra: &str,
) -> Server {
    let dir = TempDir::new("fleet");
    let text = config_text(
        &[backend],
        &format!(
            "[admin]\naddr = \"127.0.0.1:0\"\n\
             [limits]\ntraining_period = \"0\"\nmin_clients = 2\n{extra}\
             [fleet]\nredis = \"{}\"\ninstance = \"{name}\"\n{fleet_extra}",
            redis.url()
        ),
    );
    proxy(config(&text, dir.path())).await
}

/// Polls `cond` every 5 ms until it holds; panics naming `what` after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn blocked(s: &Server, who: IpAddr) -> bool {
    s.limiter().is_blocked(who, s.clock().now())
}

fn connected(s: &Server) -> bool {
    s.fleet().is_some_and(|f| f.connected)
}

fn admin(s: &Server) -> SocketAddr {
    s.admin_addr().expect("admin API running")
}

/// A plain GET from `from`: `Some(status)`, or `None` if the connection was cut.
async fn get_from(from: IpAddr, to: SocketAddr) -> Option<u16> {
    let mut s = connect_from(from, to).await.ok()?;
    let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    s.write_all(req).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf);
    head.get(9..12)?.parse().ok()
}

async fn block_on(s: &Server, who: &str, duration: &str) {
    let body = format!("{{\"ip\": \"{who}\", \"duration\": \"{duration}\"}}");
    let r = admin_request(admin(s), "POST", "/api/v1/blocks", None, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_unblocks_reach_every_instance() {
    let redis = RedisServer::start();
    let b = backend().await;
    let a = instance_with(&redis, "a", b.addr(), GUARD).await;
    let others = [
        instance_with(&redis, "b", b.addr(), GUARD).await,
        instance_with(&redis, "c", b.addr(), GUARD).await,
    ];
    eventually("all connected", || {
        connected(&a) && others.iter().all(connected)
    })
    .await;

    // A manual block on A is refused on B and C, with its remaining duration.
    let x = ip(9, 1);
    block_on(&a, "127.0.9.1", "10m").await;
    let took = eventually("B and C block 127.0.9.1", || {
        others.iter().all(|s| blocked(s, x))
    })
    .await;
    println!("manual block reached B and C in {took:?}");
    for s in &others {
        assert_eq!(get_from(x, addr(s)).await, None, "a blocked client is cut");
        assert_eq!(get_from(ip(9, 2), addr(s)).await, Some(200));
        let list = admin_get(admin(s), "/api/v1/blocks").await.json();
        let left = list["blocks"][0]["expires_in_secs"].as_f64().unwrap_or(0.0);
        assert!((590.0..=600.0).contains(&left), "{list}");
    }

    // A guard's block on A (4 connections, the cap is 3) reaches them too, with its reason.
    let g = ip(9, 3);
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.extend(connect_from(g, addr(&a)).await.ok());
    }
    eventually("A blocks the guard's client", || blocked(&a, g)).await;
    eventually("B and C block it too", || {
        others.iter().all(|s| blocked(s, g))
    })
    .await;
    let list = admin_get(admin(&others[0]), "/api/v1/blocks").await.json();
    assert!(list.to_string().contains("guard:connections"), "{list}");
    drop(conns);

    // An unblock on A propagates.
    let r = admin_request(admin(&a), "DELETE", "/api/v1/blocks/127.0.9.1", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("B and C unblock 127.0.9.1", || {
        others.iter().all(|s| !blocked(s, x))
    })
    .await;
    assert_eq!(get_from(x, addr(&others[1])).await, Some(200));

    // An instance that starts now resynchronises the list: it refuses the guard's client.
    let late = instance(&redis, "d", b.addr()).await;
    eventually("a late instance gets the list", || blocked(&late, g)).await;
    assert!(!blocked(&late, x), "and not what was unblocked");

    // The fleet's state shows in the admin API and /metrics.
    let f = admin_get(admin(&others[0]), "/api/v1/fleet").await.json();
    assert_eq!(
        (f["instance"].as_str(), f["connected"].as_bool()),
        (Some("b"), Some(true)),
        "{f}"
    );
    assert!(f["received"].as_u64().unwrap_or(0) >= 3, "{f}");
    let m = admin_get(admin(&others[0]), "/metrics").await.body;
    assert!(m.contains("zgate_fleet_connected 1"), "{m}");
    assert!(m.contains("zgate_fleet_outbox_events 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rediss_with_a_private_ca_a_block_propagates() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let ca = redis.ca_path().expect("a TLS server has a CA");
    let trust = format!("ca = \"{}\"\n", ca.display());
    let b = backend().await;
    let a = instance_in_fleet(&redis, "a", b.addr(), "", &trust).await;
    let bb = instance_in_fleet(&redis, "b", b.addr(), "", &trust).await;
    // Without `fleet.ca` the system's roots do not know the test CA: never connected, and the
    // fleet's state says why.
    let untrusting = instance(&redis, "c", b.addr()).await;
    eventually("A and B connected over TLS", || {
        connected(&a) && connected(&bb)
    })
    .await;

    let x = ip(9, 20);
    block_on(&a, "127.0.9.20", "10m").await;
    eventually("B blocks 127.0.9.20", || blocked(&bb, x)).await;
    assert_eq!(
        get_from(x, addr(&bb)).await,
        None,
        "a blocked client is cut"
    );
    let r = admin_request(admin(&a), "DELETE", "/api/v1/blocks/127.0.9.20", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("B unblocks it", || !blocked(&bb, x)).await;

    eventually("C reports its TLS failure", || {
        untrusting.fleet().is_some_and(|f| f.last_error.is_some())
    })
    .await;
    let f = untrusting.fleet().unwrap_or_default();
    assert!(!f.connected && !blocked(&untrusting, x), "{f:?}");
    let error = f.last_error.unwrap_or_default().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("issuer"),
        "{error}"
    );
}

/// Client `i` of a training set opens `i` concurrent connections and makes one request on each.
async fn client_session(from: IpAddr, to: SocketAddr, conns: usize) {
    let mut open = Vec::new();
    for _ in 0..conns {
        open.push(connect_from(from, to).await.expect("connect"));
    }
    for s in &mut open {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.expect("response");
        assert_eq!(&buf[9..12], b"200");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_on_two_instances_gives_both_the_model_of_all_clients() {
    let redis = RedisServer::start();
    let b = backend().await;
    let a = instance(&redis, "a", b.addr()).await;
    let bb = instance(&redis, "b", b.addr()).await;
    eventually("both connected", || connected(&a) && connected(&bb)).await;

    let r = admin_request(
        admin(&a),
        "PUT",
        "/api/v1/mode",
        None,
        Some(r#"{"mode": "training"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("B trains too", || bb.limiter().mode() == Mode::Training).await;
    eventually("both in the fleet's epoch", || {
        let (fa, fb) = (
            a.fleet().unwrap_or_default(),
            bb.fleet().unwrap_or_default(),
        );
        fa.training && fb.training && fa.epoch == fb.epoch && fa.epoch > 0
    })
    .await;

    // Disjoint clients: 127.0.1.1-5 on A with 1..=5 connections, 127.0.2.1-4 on B with 1..=4.
    for i in 1..=5u8 {
        client_session(ip(1, i), addr(&a), usize::from(i)).await;
    }
    for i in 1..=4u8 {
        client_session(ip(2, i), addr(&bb), usize::from(i)).await;
    }
    let r = admin_request(
        admin(&a),
        "PUT",
        "/api/v1/mode",
        None,
        Some(r#"{"mode": "defence", "force": true}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let n = |s: &Server| {
        s.limiter()
            .model()
            .map_or(0, |m| m.get(Metric::Connections).n)
    };
    eventually("both enforce the fleet's model of 9 clients", || {
        n(&a) == 9 && n(&bb) == 9
    })
    .await;
    assert_eq!(bb.limiter().mode(), Mode::Defence);
    let (ma, mb) = (a.limiter().model().unwrap(), bb.limiter().model().unwrap());
    assert_eq!(ma.metrics, mb.metrics, "the same model on both");
    let c = ma.get(Metric::Connections);
    let expect_mean = (15.0 + 10.0) / 9.0;
    assert!(
        (c.mean - expect_mean).abs() < 1e-9,
        "mean {} != {expect_mean}",
        c.mean
    );
    assert_eq!(
        a.fleet().map(|f| f.model_epoch),
        bb.fleet().map(|f| f.model_epoch)
    );

    // The histograms are the fleet's too: the bucket-by-bucket sums of both instances', their
    // counts adding up to n on every metric, and the status page's source says the same.
    for m in Metric::ALL {
        let s = ma.get(m);
        assert_eq!(s.buckets.count(), s.n, "{m}: the buckets add up to n");
    }
    let buckets: Vec<(u64, u64)> = c
        .buckets
        .buckets()
        .iter()
        .map(|b| (b.lower, b.count))
        .collect();
    assert_eq!(
        buckets,
        [(1, 2), (2, 2), (3, 2), (4, 2), (5, 1)],
        "A's 1..=5, B's 1..=4"
    );
    assert_eq!(c.quantiles.map(|q| q.max), Some(5));
    for s in [&a, &bb] {
        let model = admin_get(admin(s), "/api/v1/model").await.json();
        let shown = &model["metrics"]["connections"]["buckets"];
        assert_eq!(
            shown.to_string(),
            "[[1,2],[2,2],[3,2],[4,2],[5,1]]",
            "{model}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_instances_serve_and_block_then_converge() {
    let mut redis = RedisServer::start();
    let b = backend().await;
    let a = instance(&redis, "a", b.addr()).await;
    let bb = instance(&redis, "b", b.addr()).await;
    eventually("both connected", || connected(&a) && connected(&bb)).await;
    let before = ip(9, 5);
    block_on(&a, "127.0.9.5", "10m").await;
    eventually("B blocks the first client", || blocked(&bb, before)).await;

    redis.kill();
    eventually("both see Redis down", || !connected(&a) && !connected(&bb)).await;
    // Both keep serving, and blocking locally.
    assert_eq!(get_from(ip(9, 6), addr(&a)).await, Some(200));
    assert_eq!(get_from(ip(9, 6), addr(&bb)).await, Some(200));
    let during = ip(9, 7);
    block_on(&a, "127.0.9.7", "10m").await;
    assert_eq!(get_from(during, addr(&a)).await, None);
    assert!(blocked(&bb, before), "B keeps the blocks it had");
    // At least this block waits (a publish that was in flight when Redis died may wait beside
    // it: replaying both is harmless, a block is idempotent).
    eventually("the block waits in A's outbox", || {
        a.fleet().is_some_and(|f| f.outbox >= 1)
    })
    .await;
    let m = admin_get(admin(&a), "/metrics").await.body;
    assert!(m.contains("zgate_fleet_connected 0"), "{m}");

    // Redis is back (empty: persistence was off).
    redis.restart();
    eventually("both reconnect", || connected(&a) && connected(&bb)).await;
    eventually("the outage's block reaches B", || blocked(&bb, during)).await;
    assert!(
        blocked(&bb, before) && blocked(&a, before),
        "earlier blocks survive"
    );
    assert_eq!(get_from(during, addr(&bb)).await, None);
    eventually("A's outbox is empty", || {
        a.fleet().is_some_and(|f| f.outbox == 0)
    })
    .await;
    // And the fleet works as before: a new block propagates.
    block_on(&bb, "127.0.9.8", "1m").await;
    eventually("a new block reaches A", || blocked(&a, ip(9, 8))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redis_url_is_refused_naming_fleet_redis_and_no_fleet_changes_nothing() {
    let dir = TempDir::new("fleet-bad");
    let path = dir.path().join("zgate.toml");
    let text = config_text(
        &[dead_addr()],
        "[fleet]\nredis = \"http://127.0.0.1:6379\"\n",
    );
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(zgate_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run zgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fleet.redis"), "{stderr}");
    // A `fleet.ca` that is not a CA file stops check-config (and start) naming `fleet.ca`.
    std::fs::write(dir.path().join("not-a-ca.pem"), "hello\n").expect("write");
    let text = config_text(
        &[dead_addr()],
        "[fleet]\nredis = \"rediss://127.0.0.1:6380\"\nca = \"not-a-ca.pem\"\n",
    );
    std::fs::write(&path, text).expect("write config");
    let out = std::process::Command::new(zgate_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run zgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`fleet.ca`") && stderr.contains("no certificate"),
        "{stderr}"
    );

    let b = backend().await;
    let text = config_text(&[b.addr()], "[admin]\naddr = \"127.0.0.1:0\"\n");
    let alone = proxy(config(&text, dir.path())).await;
    assert!(alone.fleet().is_none());
    let f = admin_get(admin(&alone), "/api/v1/fleet").await.json();
    assert_eq!(f["enabled"], false);
    let m = admin_get(admin(&alone), "/metrics").await.body;
    assert!(!m.contains("zgate_fleet_"), "{m}");
}
