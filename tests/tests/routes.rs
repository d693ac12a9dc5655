//! Pools and routes (`[[pool]]`, `[[route]]`): a request goes to the pool of the most specific
//! matching host, then the longest path prefix, else to the default pool (`[[backend]]`), else
//! 404; balancing inside a pool (`least_in_flight` prefers the idle backend, `client_hash`
//! keeps a client on one backend); mistakes named by `zgate check-config`; and a reload that
//! changes routes under load without failing a request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use zgate_proxy::Server;
use zgate_tests::lab::connect_from;
use zgate_tests::*;

/// A backend that answers every request with its name; `/hold` waits until released.
struct Named {
    name: &'static str,
    addr: SocketAddr,
    task: JoinHandle<()>,
    /// `/hold` requests that arrived.
    holding: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

impl Named {
    async fn start(name: &'static str) -> Named {
        let listener = TcpListener::bind(loopback0()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holding = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (h, r) = (holding.clone(), release.clone());
        let task = tokio::spawn(async move {
            // Dropped with this task (stop): every connection closes with it.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (h, r) = (h.clone(), r.clone());
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (h, r) = (h.clone(), r.clone());
                    async move {
                        if req.uri().path() == "/hold" {
                            h.fetch_add(1, Ordering::SeqCst);
                            let _permit = r.acquire().await;
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(name.as_bytes()),
                        )))
                    }
                });
                conns.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Named {
            name,
            addr,
            task,
            holding,
            release,
        }
    }

    /// Stops listening and closes its connections.
    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.release.add_permits(1000);
        self.task.abort();
    }
}

/// A request for `path` to `authority` (in the target and in `Host`).
fn to(authority: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("http://{authority}{path}"))
        .header("host", authority)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// The name of the backend that answered, panicking on anything but 200.
async fn served_by(c: &mut Client, authority: &str, path: &str) -> String {
    let r = c.send(to(authority, path)).await;
    assert_eq!(r.status(), 200, "{authority}{path}: {:?}", r.body);
    String::from_utf8_lossy(&r.body).into_owned()
}

fn pool(name: &str, backends: &[&Named], balance: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nbackends = [{}]\nbalance = \"{balance}\"\n",
        list.join(", ")
    )
}

fn route(host: Option<&str>, prefix: Option<&str>, pool: &str) -> String {
    let mut t = String::from("[[route]]\n");
    if let Some(h) = host {
        t.push_str(&format!("host = \"{h}\"\n"));
    }
    if let Some(p) = prefix {
        t.push_str(&format!("path_prefix = \"{p}\"\n"));
    }
    t.push_str(&format!("pool = \"{pool}\"\n"));
    t
}

const LISTENER: &str = "[[listener]]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_host_wildcard_and_prefix_then_the_default_pool() {
    let (api, wild, stat, dflt) = (
        Named::start("api").await,
        Named::start("wild").await,
        Named::start("static").await,
        Named::start("default").await,
    );
    let text = format!(
        "{LISTENER}[[backend]]\naddr = \"{}\"\n{}{}{}{}{}{}{}",
        dflt.addr,
        pool("api", &[&api], "round_robin"),
        pool("wild", &[&wild], "round_robin"),
        pool("static", &[&stat], "round_robin"),
        route(Some("api.example.com"), Some("/v1/"), "api"),
        route(Some("*.example.com"), None, "wild"),
        route(None, Some("/static/"), "static"),
        route(Some("default.example.com"), None, "default"),
    );
    let dir = TempDir::new("routes");
    let z = proxy(config(&text, dir.path())).await;
    let p = addr(&z);
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(p, proto).await;
        for (authority, path, want) in [
            ("api.example.com", "/v1/users", "api"),
            ("API.Example.com:8080", "/v1/", "api"),
            // The exact host's only route misses the path: the wildcard's takes it.
            ("api.example.com", "/v2/users", "wild"),
            ("www.example.com", "/", "wild"),
            // The host is more specific than any path prefix.
            ("a.b.example.com", "/static/x.css", "wild"),
            ("other.test", "/static/x.css", "static"),
            ("default.example.com", "/static/", "default"),
            // A wildcard does not match its apex; nothing matches: the default pool.
            ("example.com", "/", "default"),
            ("other.test", "/v1/users", "default"),
        ] {
            assert_eq!(
                served_by(&mut c, authority, path).await,
                want,
                "{proto:?} {authority}{path}"
            );
        }
    }
    // Per-backend series carry the pool.
    let m = admin_get(z.admin_addr().expect("admin"), "/metrics")
        .await
        .body;
    let line = format!(
        "zgate_backend_requests_total{{pool=\"api\",backend=\"{}\"}} 4",
        api.addr
    );
    assert!(m.contains(&line), "no {line} in\n{m}");
    z.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_pool_an_unmatched_request_gets_404() {
    let api = Named::start("api").await;
    let text = format!(
        "{LISTENER}{}{}",
        pool("api", &[&api], "round_robin"),
        route(Some("api.example.com"), None, "api")
    );
    let dir = TempDir::new("routes");
    let z = proxy(config(&text, dir.path())).await;
    let p = addr(&z);
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(p, proto).await;
        assert_eq!(served_by(&mut c, "api.example.com", "/x").await, "api");
        let r = c.send(to("www.example.com", "/x")).await;
        assert_eq!(r.status(), 404, "{proto:?}");
        // The connection carries on.
        assert_eq!(served_by(&mut c, "api.example.com", "/").await, "api");
    }
    z.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_in_flight_prefers_the_idle_backend() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let text = format!(
        "{LISTENER}{}{}",
        pool("p", &[&a, &b], "least_in_flight"),
        route(None, None, "p")
    );
    let dir = TempDir::new("routes");
    let z = proxy(config(&text, dir.path())).await;
    let p = addr(&z);
    // One request held on whichever backend takes it.
    let held = tokio::spawn(async move {
        let mut c = Client::connect(p, Proto::Http1).await;
        served_by(&mut c, "x.test", "/hold").await
    });
    let deadline = std::time::Instant::now() + STEP;
    while a.holding.load(Ordering::SeqCst) + b.holding.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the held request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (busy, idle) = if a.holding.load(Ordering::SeqCst) > 0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Round robin would send every other one to the busy backend.
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(p, proto).await;
        for i in 0..10 {
            assert_eq!(
                served_by(&mut c, "x.test", "/").await,
                idle.name,
                "{proto:?} request {i} went to the busy backend"
            );
        }
    }
    busy.release.add_permits(1);
    assert_eq!(held.await.expect("held request"), busy.name);
    // Both idle again: the turns alternate.
    let mut c = Client::connect(p, Proto::Http1).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(served_by(&mut c, "x.test", "/").await);
    }
    assert_eq!(seen.len(), 2, "ties go in turn: {seen:?}");
    z.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hash_keeps_each_client_on_one_backend() {
    let backends = [
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    ];
    let refs: Vec<&Named> = backends.iter().collect();
    let text = format!(
        "{LISTENER}{}{}",
        pool("p", &refs, "client_hash"),
        route(None, None, "p")
    );
    let dir = TempDir::new("routes");
    let z = proxy(config(&text, dir.path())).await;
    let p = addr(&z);
    let clients: Vec<IpAddr> = (1..=12)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 7, i)))
        .collect();
    // Each client, over three connections (HTTP/1.1 twice, h2c once), always on one backend.
    let home = |z_addr: SocketAddr, ip: IpAddr| async move {
        let mut names = std::collections::HashSet::new();
        for proto in [Proto::Http1, Proto::H2c, Proto::Http1] {
            let tcp = connect_from(ip, z_addr)
                .await
                .expect("connect from the client");
            let mut c = Client::from_stream(tcp, proto == Proto::H2c).await;
            for _ in 0..3 {
                names.insert(served_by(&mut c, "x.test", "/").await);
            }
        }
        assert_eq!(names.len(), 1, "{ip} was served by {names:?}");
        names.into_iter().next().expect("one name")
    };
    let mut before = Vec::new();
    for &ip in &clients {
        before.push(home(p, ip).await);
    }
    let distinct: std::collections::HashSet<&String> = before.iter().collect();
    assert!(distinct.len() >= 2, "12 clients all on {distinct:?}");
    // One backend dies: its clients move, every other client stays where it was.
    let dead = &backends[0];
    dead.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (ip, was) in clients.iter().zip(&before) {
        let now = home(p, *ip).await;
        if was == dead.name {
            assert_ne!(now, dead.name, "{ip} still on the dead backend");
        } else {
            assert_eq!(&now, was, "{ip} moved although its backend is up");
        }
    }
    z.shutdown().await;
}

/// Starts a server on the config file `dir/zgate.toml` holding `text`.
async fn start_from_file(dir: &TempDir, text: &str) -> (Server, PathBuf) {
    let path = dir.path().join("zgate.toml");
    std::fs::write(&path, text).expect("write config");
    let config = zgate_config::Config::load(&path).expect("valid config");
    let s = Server::start_with_path(config, Some(path.clone()))
        .await
        .expect("zgate starts");
    (s, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_changes_routes_under_load_without_failing_a_request() {
    let (one, two, three) = (
        Named::start("one").await,
        Named::start("two").await,
        Named::start("three").await,
    );
    let dir = TempDir::new("routes-reload");
    // The listener stays (a reload keeps listeners by their config address).
    let head = LISTENER;
    let first = format!(
        "{head}{}{}",
        pool("p1", &[&one], "round_robin"),
        route(Some("app.test"), None, "p1")
    );
    let (s, path) = start_from_file(&dir, &first).await;
    let p = addr(&s);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let seen: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok, seen) = (stop.clone(), ok.clone(), seen.clone());
        load.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
            let mut c = Client::connect(p, proto).await;
            let mut failures = Vec::new();
            // Bounded: at most 5000 requests per client.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.try_send(to("app.test", "/")).await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let k = match &r.body[..] {
                            b"one" => 0,
                            b"two" => 1,
                            _ => 2,
                        };
                        seen[k].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let wait_for = |k: usize, n: u64| {
        let seen = seen.clone();
        async move {
            let deadline = std::time::Instant::now() + STEP;
            while seen[k].load(Ordering::Relaxed) < n {
                assert!(std::time::Instant::now() < deadline, "load stalled on {k}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(0, 50).await;
    // The route moves to a new pool.
    let second = format!(
        "{head}{}{}{}",
        pool("p1", &[&one], "round_robin"),
        pool("p2", &[&two], "least_in_flight"),
        route(Some("app.test"), None, "p2")
    );
    std::fs::write(&path, second).expect("write config");
    let r = s.reload().expect("valid reload");
    assert_eq!(r.backends, 2);
    wait_for(1, 50).await;
    // Now by a wildcard to a default pool.
    let third = format!(
        "{head}[[backend]]\naddr = \"{}\"\n{}{}",
        three.addr,
        pool("p2", &[&two], "client_hash"),
        route(Some("*.other.test"), None, "p2")
    );
    std::fs::write(&path, third).expect("write config");
    s.reload().expect("valid reload");
    wait_for(2, 50).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let failures = t.await.expect("load task");
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    assert!(ok.load(Ordering::Relaxed) >= 150);
    // A bad route is refused and the routes in force stay.
    let bad = format!(
        "{head}{}{}",
        pool("p1", &[&one], "round_robin"),
        route(None, None, "nowhere")
    );
    std::fs::write(&path, bad).expect("write config");
    let e = s.reload().expect_err("unknown pool").to_string();
    assert!(e.contains("`route[0].pool`"), "{e}");
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(served_by(&mut c, "app.test", "/").await, "three");
    s.shutdown().await;
}

/// `zgate check-config FILE`: (exit code, stderr).
fn check_config(dir: &TempDir, text: &str) -> (Option<i32>, String) {
    let file = dir.path().join("zgate.toml");
    std::fs::write(&file, text).expect("write config");
    let out = std::process::Command::new(zgate_bin())
        .arg("check-config")
        .arg(&file)
        .env("RUST_LOG", "error")
        .output()
        .expect("run zgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_pool_and_route_at_fault() {
    let dir = TempDir::new("routes-check");
    let head = "[[listener]]\naddr = \"127.0.0.1:0\"\n";
    let api = "[[pool]]\nname = \"api\"\nbackends = [\"127.0.0.1:9\"]\n";
    let good = format!(
        "{head}{api}[[route]]\nhost = \"*.example.com\"\npath_prefix = \"/v1/\"\npool = \"api\"\n"
    );
    assert_eq!(check_config(&dir, &good).0, Some(0), "{good}");
    for (text, key, says) in [
        (
            format!("{head}{api}[[route]]\npool = \"web\"\n"),
            "route[0].pool",
            "unknown pool",
        ),
        (
            format!("{head}{api}{api}"),
            "pool[1].name",
            "already the name of pool[0]",
        ),
        (
            format!("{head}{api}[[route]]\npool = \"api\"\n[[route]]\npath_prefix = \"/\"\npool = \"api\"\n"),
            "route[1]",
            "as route[0]",
        ),
        (
            format!("{head}[[pool]]\nname = \"api\"\nbackends = []\n"),
            "pool[0].backends",
            "empty",
        ),
        (
            format!("{head}{api}[[route]]\nhost = \"api.*.com\"\npool = \"api\"\n"),
            "route[0].host",
            "bad wildcard",
        ),
        (
            format!("{head}{api}[[route]]\npool = \"default\"\n"),
            "route[0].pool",
            "no default pool",
        ),
    ] {
        let (code, err) = check_config(&dir, &text);
        assert_eq!(code, Some(1), "check-config passed {text:?}");
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(says),
            "{text:?}: expected `{key}` and {says:?} in {err}"
        );
    }
}
