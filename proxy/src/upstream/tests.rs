//! The pool and the backends, exercised with the proxy's real body type and demo backend.

use super::*;
// Test-only: the pool is exercised with the proxy's real body type and demo backend.
use crate::cli::demo;
use crate::http::body::ProxyBody;
use http_body_util::BodyExt;
use std::net::SocketAddr;

type Upstream = super::Upstream<ProxyBody>;

async fn setup(upstream: &str) -> (demo::Backend, Upstream) {
    let b = demo::Backend::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("backend");
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{}\"\n[upstream]\n{upstream}\n",
        b.addr()
    );
    let config = Config::parse(&text, std::path::Path::new(".")).expect("config");
    let spec = config.default_pool().expect("the [[backend]] list");
    let up = Upstream::new(&spec, &config).expect("upstream");
    (b, up)
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::builder()
        .uri(path)
        .header("host", "test")
        .body(ProxyBody::empty())
        .expect("request")
}

/// Sends, reads the whole body through `ProxyBody::Response`-like handling: the guard is
/// released at the end, as the body does it.
async fn fetch(up: &Upstream, path: &str) -> usize {
    let (resp, guard) = up.send_pooled(get(path)).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    if let Some(g) = guard {
        g.release();
    }
    body.len()
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (b, up) = setup("").await;
    for i in 0..20 {
        let n = [0, 1, 1024, 100_000][i % 4];
        assert_eq!(fetch(&up, &format!("/bytes?n={n}")).await, n);
    }
    assert_eq!(b.connections(), 1);
    assert_eq!(up.idle_connections().collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn idle_pool_is_bounded() {
    let (b, up) = setup("max_idle_per_backend = 2").await;
    // Five requests at once need five connections; only two stay idle.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(up.send_pooled(get("/bytes?n=10")).await.expect("response"));
    }
    for (resp, guard) in held {
        resp.into_body().collect().await.expect("body");
        if let Some(g) = guard {
            g.release();
        }
    }
    assert_eq!(b.connections(), 5);
    assert_eq!(up.idle_connections().collect::<Vec<_>>(), [2]);
    for _ in 0..10 {
        fetch(&up, "/").await;
    }
    assert_eq!(b.connections(), 5, "later requests use the idle ones");
}

#[tokio::test]
async fn no_pool_when_max_idle_is_zero() {
    let (b, up) = setup("max_idle_per_backend = 0").await;
    for _ in 0..4 {
        fetch(&up, "/").await;
    }
    assert_eq!(b.connections(), 4);
}

#[tokio::test]
async fn idle_connections_expire() {
    let (b, up) = setup("pool_idle_timeout = \"50ms\"").await;
    fetch(&up, "/").await;
    fetch(&up, "/").await;
    assert_eq!(b.connections(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    fetch(&up, "/").await;
    assert_eq!(b.connections(), 2, "the expired connection was not reused");
}

#[tokio::test]
async fn unreleased_connection_is_not_reused() {
    let (b, up) = setup("").await;
    let (resp, guard) = up
        .send_pooled(get("/bytes?n=10000000"))
        .await
        .expect("response");
    assert!(guard.is_some());
    let mut body = resp.into_body();
    body.frame().await.expect("a frame").expect("data");
    drop((body, guard));
    fetch(&up, "/").await;
    assert_eq!(b.connections(), 2);
    fetch(&up, "/").await;
    assert_eq!(b.connections(), 2);
}

#[test]
fn absolute_uris_become_origin_form() {
    for (from, to) in [
        ("http://example.com/a/b?c=d", "/a/b?c=d"),
        ("https://example.com", "/"),
        ("/already?x", "/already?x"),
        ("*", "*"),
    ] {
        let mut uri: Uri = from.parse().expect("valid uri");
        origin_form(&mut uri);
        assert_eq!(uri.to_string(), to, "{from}");
    }
}

#[test]
fn targets_parse_addresses_and_names() {
    let t = |s: &str| Target::of(&s.parse::<Authority>().expect("authority"));
    assert!(matches!(t("127.0.0.1:81"), Target::Addr(a) if a.port() == 81));
    assert!(matches!(t("[::1]:82"), Target::Addr(a) if a.is_ipv6() && a.port() == 82));
    assert!(matches!(t("localhost:83"), Target::Name(h, 83) if h == "localhost"));
    assert!(matches!(t("10.0.0.1"), Target::Addr(a) if a.port() == 80));
}
