//! Hot reload: a valid config applies without dropping connections or requests (backends,
//! listeners, limits), an invalid one is refused and the old config stays in force; SIGHUP and
//! `POST /api/v1/reload` both reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zgate_limiter::Metric;
use zgate_proxy::Server;
use zgate_tests::*;

/// The config text of a server on `listeners` (port 0 allowed) in front of `backends`.
fn text(listeners: &[SocketAddr], backends: &[SocketAddr], extra: &str) -> String {
    let mut t = String::new();
    for l in listeners {
        t.push_str(&format!("[[listener]]\naddr = \"{l}\"\n"));
    }
    for b in backends {
        t.push_str(&format!("[[backend]]\naddr = \"{b}\"\n"));
    }
    t.push_str("[admin]\naddr = \"127.0.0.1:0\"\n");
    t.push_str(extra);
    t
}

/// Starts a server on the config file `dir/zgate.toml` holding `config_text`.
async fn start(dir: &TempDir, config_text: &str) -> (Server, PathBuf) {
    let path = dir.path().join("zgate.toml");
    std::fs::write(&path, config_text).unwrap();
    let config = zgate_config::Config::load(&path).expect("valid config");
    let s = Server::start_with_path(config, Some(path.clone()))
        .await
        .expect("zgate starts");
    (s, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_nothing_and_new_backend_takes_traffic() {
    let a = backend().await;
    let b = backend().await;
    let dir = TempDir::new("reload");
    let lo = loopback0();
    let (s, path) = start(&dir, &text(&[lo], &[a.addr()], "")).await;
    let p = addr(&s);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok) = (stop.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::H2c };
            let mut c = Client::connect(p, proto).await;
            let mut failures = Vec::new();
            // Bounded: at most 5000 requests per client.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.try_send(get(p, "/")).await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let wait_for = |n: u64| {
        let ok = ok.clone();
        async move {
            let deadline = std::time::Instant::now() + STEP;
            while ok.load(Ordering::Relaxed) < n {
                assert!(std::time::Instant::now() < deadline, "load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(50).await;
    // Both backends, new timeouts and limits.
    std::fs::write(
        &path,
        text(
            &[lo],
            &[a.addr(), b.addr()],
            "[timeouts]\nidle = \"30s\"\n[limits.z]\ncpu = 5.0\n",
        ),
    )
    .unwrap();
    let r = s.reload().expect("valid reload");
    assert_eq!(r.backends, 2);
    assert!(r.listeners_added.is_empty() && r.listeners_removed.is_empty());
    assert_eq!(s.limiter().threshold(Metric::Cpu), 5.0);
    let n = ok.load(Ordering::Relaxed);
    wait_for(n + 50).await;
    // Only the new backend.
    std::fs::write(&path, text(&[lo], &[b.addr()], "")).unwrap();
    s.reload().expect("valid reload");
    let n = ok.load(Ordering::Relaxed);
    wait_for(n + 50).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let failures = t.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    // The old backend is gone; fresh connections are served by the new one.
    drop(a);
    for _ in 0..10 {
        let mut c = Client::connect(p, Proto::Http1).await;
        assert_eq!(c.send(get(p, "/")).await.status(), 200);
    }
    let m = admin_get(s.admin_addr().unwrap(), "/metrics").await.body;
    assert!(m.contains("zgate_reloads_total 2"), "{m}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_refused_and_the_old_config_stays() {
    let good = backend().await;
    let dir = TempDir::new("reload");
    let lo = loopback0();
    let (s, path) = start(
        &dir,
        &text(&[lo], &[good.addr()], "[limits.z]\ncpu = 4.0\n"),
    )
    .await;
    let p = addr(&s);
    let admin = s.admin_addr().unwrap();
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    let dead = dead_addr();
    let missing_cert =
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = { cert = \"nope.pem\", key = \"nope.pem\" }\n";
    for (bad, needle) in [
        (text(&[lo], &[dead], "[limits.z]\ncpu = -2.0\n"), "cpu"),
        (
            text(&[lo], &[dead], "[limits]\nblock_action = \"explode\"\n"),
            "limits.block_action",
        ),
        (
            text(&[lo], &[dead], "[timeouts]\nidle = \"soon\"\n"),
            "idle",
        ),
        (text(&[lo], &[dead], "[nonsense]\n"), "nonsense"),
        (
            format!("{missing_cert}[[backend]]\naddr = \"{dead}\"\n"),
            "listener[0].tls.cert",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:0\"\n".to_string(),
            "backend",
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let e = s.reload().expect_err("invalid config refused").to_string();
        assert!(e.contains(needle), "{needle}: {e}");
        // Through the API too: 400 with the error.
        let r = admin_request(admin, "POST", "/api/v1/reload", None, None).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.error().contains(needle), "{}", r.body);
        // The old config is in force: the old backend serves, the old threshold holds.
        assert_eq!(c.send(get(p, "/")).await.status(), 200);
        assert_eq!(s.limiter().threshold(Metric::Cpu), 4.0);
    }
    let knobs = admin_get(admin, "/api/v1/knobs").await.json();
    let backends = knobs
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv[0] == "backends")
        .unwrap()[1]
        .clone();
    assert_eq!(backends, good.addr().to_string());
    let m = admin_get(admin, "/metrics").await.body;
    assert!(m.contains("zgate_reload_failures_total 12"), "{m}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_without_cutting_connections() {
    let b = backend().await;
    let dir = TempDir::new("reload");
    let first = dead_addr();
    let (s, path) = start(&dir, &text(&[first], &[b.addr()], "")).await;
    let mut old = Client::connect(first, Proto::Http1).await;
    assert_eq!(old.send(get(first, "/")).await.status(), 200);

    let second = dead_addr();
    std::fs::write(&path, text(&[first, second], &[b.addr()], "")).unwrap();
    let r = s.reload().expect("valid reload");
    assert_eq!(r.listeners_added, vec![second]);
    assert_eq!(s.local_addrs(), vec![first, second]);
    let mut new = Client::connect(second, Proto::H2c).await;
    assert_eq!(new.send(get(second, "/")).await.status(), 200);

    std::fs::write(&path, text(&[second], &[b.addr()], "")).unwrap();
    let r = s.reload().expect("valid reload");
    assert_eq!(r.listeners_removed, vec![first]);
    assert_eq!(s.local_addrs(), vec![second]);
    // The removed listener accepts no more, but its open connection goes on.
    // (The accept task is stopped asynchronously: wait, bounded, for the socket to close.)
    let deadline = std::time::Instant::now() + STEP;
    while tokio::net::TcpStream::connect(first).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(old.send(get(first, "/")).await.status(), 200);
    assert_eq!(new.send(get(second, "/")).await.status(), 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_is_logged() {
    let b = backend().await;
    let dir = TempDir::new("reload");
    let lo = loopback0();
    let z = ZgateProcess::start(&text(&[lo], &[b.addr()], ""), &dir);
    let admin = z.admin_addr();
    let path = dir.path().join("zgate.toml");
    std::fs::write(&path, text(&[lo], &[b.addr()], "[limits.z]\ncpu = 7.5\n")).unwrap();
    z.signal("HUP");
    z.wait_log("config reloaded");
    let v = admin_get(admin, "/api/v1/thresholds").await.json();
    assert_eq!(v["cpu"]["z"], 7.5);

    std::fs::write(&path, "[[listener]]\naddr = 12\n").unwrap();
    z.signal("HUP");
    let line = z.wait_log("config reload refused");
    assert!(line.contains("zgate.toml: TOML parse error"), "{line}");
    // Still serving, on the config in force.
    let mut c = Client::connect(z.addr, Proto::Http1).await;
    assert_eq!(c.send(get(z.addr, "/")).await.status(), 200);
    let v = admin_get(admin, "/api/v1/thresholds").await.json();
    assert_eq!(v["cpu"]["z"], 7.5);
    // And `zgate ctl reload` reports the refusal with exit 1.
    let out = ctl(admin, None, &["reload"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    std::fs::write(&path, text(&[lo], &[b.addr()], "")).unwrap();
    let out = ctl(admin, None, &["reload"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("reloaded: backends = 1"), "{out:?}");
}
