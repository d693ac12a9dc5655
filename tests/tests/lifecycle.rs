//! zgate as a process: graceful shutdown on SIGTERM, the demo, and memory that stays flat while
//! gigabytes stream through.

use std::ffi::OsStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use zgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let b = backend().await;
    let dir = TempDir::new("life");
    let mut z = ZgateProcess::start(
        &config_text(&[b.addr()], "[timeouts]\nshutdown_grace = \"20s\"\n"),
        &dir,
    );
    let a = z.addr;
    let mut c = Client::connect(a, Proto::Http1).await;
    let slow = tokio::spawn(async move { c.send(get(a, "/slow?ms=1500")).await });
    // Let the request reach the backend, then ask zgate to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    z.signal("TERM");
    let resp = slow.await.expect("request task");
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.body[..], b"slept 1500 ms\n");
    assert_eq!(z.wait_exit(), Some(0));
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(a).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_drain() {
    let b = backend().await;
    let dir = TempDir::new("life");
    let mut z = ZgateProcess::start(
        &config_text(&[b.addr()], "[timeouts]\nshutdown_grace = \"200ms\"\n"),
        &dir,
    );
    let a = z.addr;
    let mut c = Client::connect(a, Proto::Http1).await;
    let slow = tokio::spawn(async move { c.try_send(get(a, "/slow?ms=20000")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    z.signal("TERM");
    assert_eq!(z.wait_exit(), Some(0));
    assert!(
        slow.await.expect("task").is_err(),
        "the over-long request was cut"
    );
    let log = z.log.lock().unwrap().join("\n");
    assert!(log.contains("grace period over"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_embedded_backend() {
    let z = ZgateProcess::spawn(&[
        OsStr::new("demo"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--backend"),
        OsStr::new("127.0.0.1:0"),
    ]);
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(z.addr, proto).await;
        let resp = c.send(get(z.addr, "/")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.body[..], b"hello from the zgate demo backend\n");
        let resp = c
            .send(request("POST", z.addr, "/echo", Bytes::from_static(b"hi")))
            .await;
        assert_eq!(&resp.body[..], b"hi");
    }
}

const GIB: u64 = 1 << 30;
/// zgate's own footprint plus its buffers; a body held in memory would be 1 GiB.
const MEMORY_BOUND: u64 = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_each_way_without_sitting_in_memory() {
    let b = backend().await;
    let dir = TempDir::new("life");
    let z = ZgateProcess::start(&config_text(&[b.addr()], ""), &dir);
    let a = z.addr;

    // Download: count bytes and check the pattern at chunk boundaries, keep nothing.
    let mut c = Client::connect(a, Proto::Http1).await;
    let resp = match &mut c {
        Client::H1(s) => s
            .send_request(get(a, &format!("/bytes?n={GIB}")))
            .await
            .unwrap(),
        Client::H2(_) => unreachable!(),
    };
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("download frame");
        if let Some(d) = frame.data_ref() {
            assert_eq!(d[0], pattern_byte(seen), "byte {seen}");
            seen += d.len() as u64;
        }
    }
    assert_eq!(seen, GIB);

    // Upload: 1 GiB generated on the fly, in 256 KiB frames, to a backend that discards it.
    let chunk = noise(256 * 1024, 3);
    let frames = (0..GIB / chunk.len() as u64).map(move |_| chunk.clone());
    let body = StreamedBody::new(frames);
    let mut up: Client<StreamedBody> = Client::connect(a, Proto::Http1).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{a}/discard"))
        .header("host", a.to_string())
        .body(body)
        .unwrap();
    let resp = up.send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        std::str::from_utf8(&resp.body).unwrap().trim(),
        GIB.to_string()
    );

    let peak = z.peak_rss();
    assert!(
        peak < MEMORY_BOUND,
        "zgate peaked at {} MiB while streaming",
        peak >> 20
    );
}
