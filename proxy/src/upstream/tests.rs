//! The pool and the backends, exercised with the proxy's real body type and demo backend.

use super::*;
// Test-only: the pool is exercised with the proxy's real body type and demo backend.
use crate::cli::demo;
use crate::http::body::ProxyBody;
use http_body_util::BodyExt;
use std::net::SocketAddr;

type Upstream = super::Upstream<ProxyBody>;

/// The default pool of one backend at `addr`, with `extra` config (TOML sections).
pub(super) fn pool_of<B: Outgoing>(addr: SocketAddr, extra: &str) -> super::Upstream<B> {
    let text =
        format!("[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{addr}\"\n{extra}\n");
    let config = Config::parse(&text, std::path::Path::new(".")).expect("config");
    let spec = config.default_pool().expect("the [[backend]] list");
    super::Upstream::new(&spec, &config).expect("upstream")
}

async fn setup(upstream: &str) -> (demo::Backend, Upstream) {
    let b = demo::Backend::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("backend");
    let up = pool_of(b.addr(), &format!("[upstream]\n{upstream}"));
    (b, up)
}

pub(super) fn get(path: &str) -> Request<ProxyBody> {
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
    // Five responses streaming at once need five connections; only two stay idle. (A small
    // body comes whole with its head and frees its connection at once: these do not.)
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            up.send_pooled(get("/bytes?n=1000000"))
                .await
                .expect("response"),
        );
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

#[test]
fn only_idempotent_requests_without_a_body_are_replayable() {
    let req = |method: &str, body: ProxyBody| {
        Request::builder()
            .method(method)
            .uri("/x?y")
            .header("host", "test")
            .header("x-one", "1")
            .body(body)
            .expect("request")
    };
    let again = Replay::of(&req("GET", ProxyBody::empty()))
        .expect("a bodiless GET")
        .into_request();
    assert_eq!(again.method(), "GET");
    assert_eq!(again.uri(), "/x?y");
    assert_eq!(again.headers()["x-one"], "1");
    assert!(Replay::of(&req("DELETE", ProxyBody::empty())).is_some());
    assert!(Replay::of(&req("POST", ProxyBody::empty())).is_none());
    assert!(Replay::of(&req("PUT", ProxyBody::full("body"))).is_none());
}

#[test]
fn server_errors_count_against_the_backend_except_501_and_505() {
    for (code, failed) in [
        (200, false),
        (404, false),
        (500, true),
        (501, false),
        (503, true),
        (505, false),
    ] {
        let status = http::StatusCode::from_u16(code).expect("status");
        assert_eq!(
            matches!(outcome_of(status), Outcome::Failed(_)),
            failed,
            "{code}"
        );
    }
}

#[tokio::test]
async fn passive_detection_skips_a_backend_answering_5xx_and_checks_start_and_stop() {
    let b = demo::Backend::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("backend");
    let up: Upstream = pool_of(b.addr(), "[upstream]\nfail_after = 2");
    for _ in 0..2 {
        let (resp, _) = up.send_pooled(get("/status/502")).await.expect("answer");
        assert_eq!(resp.status(), 502);
    }
    assert_eq!(
        up.backends()
            .map(|(_, skipped)| skipped)
            .collect::<Vec<_>>(),
        [true]
    );
    // The only backend, skipped, is still tried: it answers.
    fetch(&up, "/").await;
    assert_eq!(
        up.backends()
            .map(|(_, skipped)| skipped)
            .collect::<Vec<_>>(),
        [false]
    );
    // Without `health`, nothing to start.
    up.start_checks();
    assert!(up.checks.get().is_none());
}

fn router(text: &str) -> super::Router<ProxyBody> {
    let text = format!("[[listener]]\naddr = \"127.0.0.1:0\"\n{text}");
    let config = Config::parse(&text, std::path::Path::new(".")).expect("config");
    super::Router::new(&config).expect("router")
}

const POOLS: &str = "[[pool]]\nname = \"api\"\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n\
    [[pool]]\nname = \"web\"\nbackends = [\"127.0.0.1:3\"]\n\
    [[route]]\nhost = \"api.example\"\npool = \"api\"\n\
    [[route]]\npath_prefix = \"/web/\"\npool = \"web\"\n";

#[test]
fn the_router_finds_the_pool_or_the_default_or_nothing() {
    let name = |r: &super::Router<ProxyBody>, host: &str, path: &str| {
        r.route(host.as_bytes(), path).map(|p| p.name().to_owned())
    };
    let r = router(POOLS);
    assert_eq!(name(&r, "API.example:80", "/x").as_deref(), Some("api"));
    assert_eq!(name(&r, "other", "/web/x").as_deref(), Some("web"));
    assert_eq!(name(&r, "other", "/x"), None, "no default pool: 404");
    assert_eq!(r.backend_count(), 3);
    let r = router(&format!("[[backend]]\naddr = \"127.0.0.1:4\"\n{POOLS}"));
    assert_eq!(name(&r, "other", "/x").as_deref(), Some("default"));
    let names: Vec<&str> = r.pools().map(|p| p.name()).collect();
    assert_eq!(names, ["default", "api", "web"]);
    // Without routes, every request goes to the default pool.
    let r = router("[[backend]]\naddr = \"127.0.0.1:4\"\n");
    assert_eq!(name(&r, "", "*").as_deref(), Some("default"));
}

#[test]
fn a_reload_keeps_counters_by_pool_name_and_address() {
    let old = router(POOLS);
    for p in old.pools() {
        for (_, s) in p.backend_stats() {
            s.requests.fetch_add(5, Ordering::Relaxed);
        }
    }
    // `web` now holds 127.0.0.1:1 (which was `api`'s): a new backend of `web`, counted afresh.
    let mut new = router(
        "[[pool]]\nname = \"api\"\nbackends = [\"127.0.0.1:2\", \"127.0.0.1:9\"]\n\
         [[pool]]\nname = \"web\"\nbackends = [\"127.0.0.1:1\"]\n",
    );
    new.carry_stats_from(&old);
    let counts: Vec<(String, String, u64)> = new
        .pools()
        .flat_map(|p| {
            p.backend_stats().map(move |(b, s)| {
                let n = s.requests.load(Ordering::Relaxed);
                (p.name().to_owned(), b.to_owned(), n)
            })
        })
        .collect();
    let want = [
        ("api", "127.0.0.1:2", 5),
        ("api", "127.0.0.1:9", 0),
        ("web", "127.0.0.1:1", 0),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(p, b, n)| (p.to_string(), b.to_string(), *n))
        .collect();
    assert_eq!(counts, want);
}
