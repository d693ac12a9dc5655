//! Backend health: active checks take a dead backend out before a client needs it and bring it
//! back when it returns; passive detection takes out a backend answering 500s; an idempotent
//! request without a body that a backend resets is retried on another one, a POST with a body
//! is not; a state change is logged at `warn` with its reason; a reload changing the health
//! settings takes effect (and the old checker stops).
//!
//! The backends here are the test's own: they can be killed whole (listener and connections)
//! and restarted on the same port, answer 500, or reset a connection after reading a request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_parse::{Scrape, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zgate_proxy::Server;
use zgate_tests::{
    admin_get, backend, config_text, dead_addr, get, loopback0, request, Client, Proto, TempDir,
    ZgateProcess, STEP,
};

/// What a test backend does with a request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// `200` with its name as the body.
    Ok,
    /// `500`.
    Fail,
    /// Reads the request head, then resets the connection (SO_LINGER 0).
    Reset,
}

/// A backend that can be stopped whole: its listener and every connection close.
struct TestBackend {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Requests it read.
    seen: Arc<AtomicUsize>,
}

impl TestBackend {
    async fn start(addr: SocketAddr, name: &'static str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind test backend");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                    _ = accept_stopped.changed() => return,
                };
                let mut conn_stopped = stopped.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, name, behaviour, counter) => {}
                        _ = conn_stopped.changed() => {}
                    }
                });
            }
        });
        TestBackend { addr, stop, seen }
    }

    /// Stops it: the listener and every connection close.
    fn kill(&self) {
        let _ = self.stop.send(true);
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    name: &'static str,
    behaviour: Behaviour,
    seen: Arc<AtomicUsize>,
) {
    if let Behaviour::Reset = behaviour {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        seen.fetch_add(1, Ordering::Relaxed);
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        return;
    }
    let service = service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            // Health checks are not requests of the test.
            if req
                .headers()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                != Some(zgate_proxy::upstream::HEALTH_USER_AGENT)
            {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            let status = match behaviour {
                Behaviour::Fail => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::OK,
            };
            let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
            *resp.status_mut() = status;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Starts zgate on the config file `dir/zgate.toml` holding `text` (admin API on port 0).
async fn start(dir: &TempDir, text: &str) -> (Server, PathBuf) {
    let path = dir.path().join("zgate.toml");
    let text = format!("{text}[admin]\naddr = \"127.0.0.1:0\"\n");
    std::fs::write(&path, text).expect("write config");
    let config = zgate_config::Config::load(&path).expect("valid config");
    let s = Server::start_with_path(config, Some(path.clone()))
        .await
        .expect("zgate starts");
    (s, path)
}

async fn scrape(s: &Server) -> Scrape {
    let r = admin_get(s.admin_addr().expect("admin API"), "/metrics").await;
    assert_eq!(r.status, 200);
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text parses")
}

/// The value of `name` for `backend` (and `extra` label, if any); 0 when absent.
fn value(m: &Scrape, name: &str, backend: SocketAddr, extra: Option<(&str, &str)>) -> f64 {
    let backend = backend.to_string();
    m.samples
        .iter()
        .filter(|x| x.metric == name && x.labels.get("backend") == Some(backend.as_str()))
        .find(|x| extra.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map_or(0.0, |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            _ => 0.0,
        })
}

/// Waits (bounded) until `backend`'s `zgate_backend_up` is `up`.
async fn wait_up(s: &Server, backend: SocketAddr, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    let deadline = tokio::time::Instant::now() + STEP;
    while value(&scrape(s).await, "zgate_backend_up", backend, None) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{backend} never showed up = {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `GET /` and returns the status and body.
async fn fetch(c: &mut Client, proxy: SocketAddr) -> (u16, String) {
    let r = c.send(get(proxy, "/")).await;
    (r.status(), String::from_utf8_lossy(&r.body).into_owned())
}

const FAST_CHECKS: &str =
    "health = { interval = \"200ms\", timeout = \"200ms\", unhealthy_after = 2, healthy_after = 2 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_taken_out_by_checks_before_any_client_needs_it_and_comes_back() {
    let a = TestBackend::start(loopback0(), "a", Behaviour::Ok).await;
    let b = TestBackend::start(loopback0(), "b", Behaviour::Ok).await;
    let dir = TempDir::new("health-active");
    // No retries, and no passive detection to speak of: only the checks can keep clients off a.
    let extra = format!("[upstream]\nretries = 0\nfail_after = 1000\n{FAST_CHECKS}");
    let (s, _) = start(&dir, &config_text(&[a.addr, b.addr], &extra)).await;
    let p = s.local_addrs()[0];
    let mut c = Client::connect(p, Proto::Http1).await;
    let mut from_a = 0;
    for _ in 0..4 {
        let (status, body) = fetch(&mut c, p).await;
        assert_eq!(status, 200);
        from_a += usize::from(body == "a");
    }
    assert_eq!(from_a, 2, "round-robin over both while both are up");

    a.kill();
    wait_up(&s, a.addr, false).await;
    let m = scrape(&s).await;
    let refused_before = value(
        &m,
        "zgate_backend_failures_total",
        a.addr,
        Some(("kind", "connect")),
    );
    assert!(
        value(
            &m,
            "zgate_backend_health_checks_total",
            a.addr,
            Some(("result", "failed"))
        ) >= 2.0
    );
    for _ in 0..20 {
        // A fresh connection each time: no client keeps a pooled route to anything.
        let mut c = Client::connect(p, Proto::Http1).await;
        assert_eq!(fetch(&mut c, p).await, (200, "b".to_owned()));
    }
    let m = scrape(&s).await;
    assert_eq!(
        value(
            &m,
            "zgate_backend_failures_total",
            a.addr,
            Some(("kind", "connect"))
        ),
        refused_before,
        "no client request was sent to the dead backend"
    );
    assert_eq!(value(&m, "zgate_backend_down_total", a.addr, None), 1.0);

    // Back on the same port: the checks bring it back, and it gets traffic again.
    let a2 = TestBackend::start(a.addr, "a", Behaviour::Ok).await;
    wait_up(&s, a.addr, true).await;
    let mut from_a = 0;
    for _ in 0..6 {
        let (status, body) = fetch(&mut c, p).await;
        assert_eq!(status, 200);
        from_a += usize::from(body == "a");
    }
    assert!(from_a >= 2, "a serves again ({from_a} of 6)");
    assert_eq!(a2.seen(), from_a);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500s_is_taken_out_after_fail_after_in_a_row() {
    let bad = TestBackend::start(loopback0(), "bad", Behaviour::Fail).await;
    let good = TestBackend::start(loopback0(), "good", Behaviour::Ok).await;
    let dir = TempDir::new("health-passive");
    let extra = "[upstream]\nfail_after = 3\ndown_for = \"1h\"\n";
    let (s, _) = start(&dir, &config_text(&[bad.addr, good.addr], extra)).await;
    let p = s.local_addrs()[0];
    let mut c = Client::connect(p, Proto::Http1).await;
    let mut failed = 0;
    for _ in 0..30 {
        let (status, _) = fetch(&mut c, p).await;
        failed += usize::from(status == 500);
    }
    assert_eq!(
        failed, 3,
        "the 500s reach the client until the third takes it out"
    );
    assert_eq!(bad.seen(), 3);
    let m = scrape(&s).await;
    assert_eq!(value(&m, "zgate_backend_up", bad.addr, None), 0.0);
    assert_eq!(value(&m, "zgate_backend_up", good.addr, None), 1.0);
    let fivexx = value(
        &m,
        "zgate_backend_failures_total",
        bad.addr,
        Some(("kind", "5xx")),
    );
    assert_eq!(fivexx, 3.0);
    assert_eq!(
        value(&m, "zgate_backend_requests_total", good.addr, None),
        27.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_get_is_retried_on_another_backend_and_a_post_with_a_body_is_not() {
    let reset = TestBackend::start(loopback0(), "reset", Behaviour::Reset).await;
    let good = TestBackend::start(loopback0(), "good", Behaviour::Ok).await;
    let dir = TempDir::new("health-retry");
    let extra = "[upstream]\nfail_after = 100\n";
    let (s, _) = start(&dir, &config_text(&[reset.addr, good.addr], extra)).await;
    let p = s.local_addrs()[0];
    let mut c = Client::connect(p, Proto::Http1).await;
    // Round-robin: the first request goes to `reset`, the second to `good`, the third to
    // `reset` again.
    assert_eq!(fetch(&mut c, p).await, (200, "good".to_owned()), "retried");
    assert_eq!(
        reset.seen(),
        1,
        "it was sent to the resetting backend first"
    );
    assert_eq!(fetch(&mut c, p).await, (200, "good".to_owned()));
    let post = request("POST", p, "/", Bytes::from_static(b"not twice"));
    assert_eq!(
        c.send(post).await.status(),
        502,
        "a request with a body is not sent again"
    );
    assert_eq!(reset.seen(), 2);
    assert_eq!(good.seen(), 2);
    let m = scrape(&s).await;
    assert_eq!(
        value(&m, "zgate_backend_retries_total", reset.addr, None),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "zgate_backend_failures_total",
            reset.addr,
            Some(("kind", "failed"))
        ),
        2.0
    );
    s.shutdown().await;

    // `retries = 0`: the reset GET gets its 502.
    let dir = TempDir::new("health-no-retry");
    let extra = "[upstream]\nfail_after = 100\nretries = 0\n";
    let (s, _) = start(&dir, &config_text(&[reset.addr, good.addr], extra)).await;
    let p = s.local_addrs()[0];
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(fetch(&mut c, p).await.0, 502);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changing_the_health_settings_applies_and_stops_the_old_checker() {
    let a = backend().await;
    let b = backend().await;
    let dir = TempDir::new("health-reload");
    let checks = |path: &str| {
        format!(
            "[upstream]\nhealth = {{ path = \"{path}\", interval = \"200ms\", timeout = \"200ms\", \
             unhealthy_after = 1, healthy_after = 1 }}\n"
        )
    };
    let backends = [a.addr(), b.addr()];
    let (s, path) = start(&dir, &config_text(&backends, &checks("/status/503"))).await;
    wait_up(&s, a.addr(), false).await;
    wait_up(&s, b.addr(), false).await;
    // Every backend out: zgate tries them anyway rather than answer 502.
    let p = s.local_addrs()[0];
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(fetch(&mut c, p).await.0, 200);

    let text = format!(
        "{}[admin]\naddr = \"127.0.0.1:0\"\n",
        config_text(&backends, &checks("/"))
    );
    std::fs::write(&path, text).expect("rewrite config");
    s.reload().expect("reload");
    wait_up(&s, a.addr(), true).await;
    wait_up(&s, b.addr(), true).await;
    let failed = |m: &Scrape| {
        backends
            .iter()
            .map(|&b| {
                value(
                    m,
                    "zgate_backend_health_checks_total",
                    b,
                    Some(("result", "failed")),
                )
            })
            .sum::<f64>()
    };
    let passed = |m: &Scrape| {
        backends
            .iter()
            .map(|&b| {
                value(
                    m,
                    "zgate_backend_health_checks_total",
                    b,
                    Some(("result", "ok")),
                )
            })
            .sum::<f64>()
    };
    let m = scrape(&s).await;
    let (failed_then, passed_then) = (failed(&m), passed(&m));
    // Several rounds of the new checker later, the old one (checking /status/503) has
    // recorded nothing more.
    let deadline = tokio::time::Instant::now() + STEP;
    let mut m = scrape(&s).await;
    while passed(&m) < passed_then + 10.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new checker runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = scrape(&s).await;
    }
    assert_eq!(failed(&m), failed_then, "no failed check after the reload");
    assert_eq!(value(&m, "zgate_backend_up", a.addr(), None), 1.0);

    // Checks removed: nothing checks any more.
    let text = format!(
        "{}[admin]\naddr = \"127.0.0.1:0\"\n",
        config_text(&backends, "")
    );
    std::fs::write(&path, text).expect("rewrite config");
    s.reload().expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = passed(&scrape(&s).await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(passed(&scrape(&s).await), before, "no checker left running");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_is_logged_once_at_warn_with_its_reason() {
    let live = backend().await;
    let dead = dead_addr();
    let dir = TempDir::new("health-log");
    let extra = format!("[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\n{FAST_CHECKS}");
    let z = ZgateProcess::start(&config_text(&[dead, live.addr()], &extra), &dir);
    let line = z.wait_log("backend down");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&dead.to_string()), "{line}");
    assert!(
        line.contains("health check failed 2 time(s) in a row"),
        "{line}"
    );
    assert!(line.contains("connect failed"), "{line}");
    // Several more failed rounds, one line.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let lines = z
        .log
        .lock()
        .map(|l| l.iter().filter(|l| l.contains("backend down")).count())
        .unwrap_or(0);
    assert_eq!(lines, 1);
}
