//! zgate's backend connection pool: idle connections are reused, a connection the backend
//! closed while idle is replaced without failing a request, idle connections are closed at
//! their idle timeout even when no request comes, and a response dropped before its end does
//! not give its connection back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zgate_tests::*;

#[tokio::test]
async fn idle_connections_are_reused() {
    let b = backend().await;
    let dir = TempDir::new("pool");
    let text = config_text(&[b.addr()], "[upstream]\nmax_idle_per_backend = 2\n");
    let z = proxy(config(&text, dir.path())).await;
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(addr(&z), proto).await;
        for i in 0..30u64 {
            let n = [0, 1, 1024, 200_000][i as usize % 4];
            let resp = c.send(get(addr(&z), &format!("/bytes?n={n}"))).await;
            assert_eq!(resp.status(), 200, "{proto:?}");
            assert!(resp.body == pattern(n), "{proto:?} body of {n}");
            let sent = noise(3000, i);
            let resp = c
                .send(request("POST", addr(&z), "/echo", sent.clone()))
                .await;
            assert!(resp.body == sent, "{proto:?} echo");
        }
    }
    assert!(
        b.connections() <= 2,
        "{} backend connections for sequential requests",
        b.connections()
    );
}

/// A backend that answers one request per connection with keep-alive, then closes the
/// connection `close_after` later (as a backend with a short keep-alive timeout does).
async fn closing_backend(close_after: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(loopback0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if read_request(&mut s).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(close_after).await;
                }
            });
        }
    });
    (addr, accepted)
}

/// Reads one request head and its `content-length` body.
async fn read_request(s: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

#[tokio::test]
async fn connection_closed_by_backend_while_idle_is_replaced() {
    let (backend_addr, accepted) = closing_backend(Duration::from_millis(30)).await;
    let dir = TempDir::new("pool");
    let z = proxy(config(&config_text(&[backend_addr], ""), dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    for i in 0..8u64 {
        let req = if i % 2 == 0 {
            get(addr(&z), "/")
        } else {
            request("POST", addr(&z), "/", noise(5000, i))
        };
        let resp = c.send(req).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.body, Bytes::from_static(b"ok"));
        // The backend closes the pooled connection meanwhile.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 8);
    assert_eq!(z.stats().backend_failed.load(Ordering::Relaxed), 0);
}

/// With no request coming after it, an idle backend connection is still closed when it
/// passes `pool_idle_timeout` (the server's tick sweeps the pools), and one the backend closed
/// is let go of then, not held in CLOSE_WAIT until the next request.
#[tokio::test]
async fn idle_connections_are_closed_without_a_request_coming() {
    let listener = TcpListener::bind(loopback0()).await.expect("bind");
    let backend_addr = listener.local_addr().expect("addr");
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                if read_request(&mut s).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    // Reads until zgate closes the connection, then says so.
                    let mut chunk = [0u8; 64];
                    while matches!(s.read(&mut chunk).await, Ok(n) if n > 0) {}
                    let _ = ended_tx.send(());
                }
            });
        }
    });
    let dir = TempDir::new("pool-sweep");
    let extra = "[upstream]\npool_idle_timeout = \"300ms\"\n";
    let z = proxy(config(&config_text(&[backend_addr], extra), dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    let resp = c.send(get(addr(&z), "/")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body, Bytes::from_static(b"ok"));
    // Nothing more is sent: only the sweep can close the idle connection.
    tokio::time::timeout(Duration::from_secs(20), ended.recv())
        .await
        .expect("the idle backend connection was closed")
        .expect("reported");
    assert_eq!(z.stats().backend_failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn response_dropped_midway_does_not_return_its_connection() {
    let b = backend().await;
    let dir = TempDir::new("pool");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    // A client reads part of a large response and goes away.
    let mut raw = TcpStream::connect(addr(&z)).await.expect("connect");
    raw.write_all(b"GET /bytes?n=100000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while got < 256 * 1024 {
        let n = tokio::time::timeout(STEP, raw.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "response ended early");
        got += n;
    }
    drop(raw);
    assert_eq!(
        b.connections(),
        1,
        "the dropped response's backend connection"
    );
    // The next requests succeed on a new connection, which is then reused: the first of them
    // already opens the second backend connection (it is not queued behind the rest of the
    // dropped response), and none opens a third.
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    for i in 0..5 {
        let resp = c.send(get(addr(&z), "/bytes?n=1000")).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.body == pattern(1000));
        assert_eq!(b.connections(), 2, "backend connections after request {i}");
    }
}

/// Thread-per-core: each worker pools the backend connections its own tasks drive, so two
/// client connections served by two workers never share a backend connection, even when
/// their requests take turns (a shared pool would hand the one idle connection back and forth
/// between the threads, waking the other thread on every request).
#[tokio::test]
async fn each_worker_pools_its_own_backend_connections() {
    let b = backend().await;
    let dir = TempDir::new("pool-workers");
    let extra = "[runtime]\nworkers = 2\n[upstream]\nmax_idle_per_backend = 4\n";
    let z = proxy(config(&config_text(&[b.addr()], extra), dir.path())).await;
    // Two connections open at once go to the two workers (the least loaded takes each).
    let mut one = Client::connect(addr(&z), Proto::Http1).await;
    let mut two = Client::connect(addr(&z), Proto::H2c).await;
    for i in 0..20 {
        let c = if i % 2 == 0 { &mut one } else { &mut two };
        let resp = c.send(get(addr(&z), "/bytes?n=100")).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.body == pattern(100));
    }
    assert_eq!(
        b.connections(),
        2,
        "one backend connection per worker, each reused by its own worker only"
    );
}
