//! zgate fails well: unreachable and slow backends, malformed requests, and clients that stall.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_tests::*;

#[tokio::test]
async fn unreachable_backend_gives_502_on_both_protocols() {
    let dir = TempDir::new("f");
    let z = proxy(config(&config_text(&[dead_addr()], ""), dir.path())).await;
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(addr(&z), proto).await;
        let resp = c.send(get(addr(&z), "/")).await;
        assert_eq!(resp.status(), 502, "{proto:?}");
        let resp = c
            .send(request("POST", addr(&z), "/echo", noise(4096, 1)))
            .await;
        assert_eq!(resp.status(), 502, "{proto:?} with a body");
        // The connection survives the error.
        let resp = c.send(get(addr(&z), "/")).await;
        assert_eq!(resp.status(), 502);
    }
}

#[tokio::test]
async fn slow_backend_gives_504() {
    let z = Fronted::start("[timeouts]\nbackend_response = \"300ms\"\n").await;
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(addr(&z), proto).await;
        let resp = c.send(get(addr(&z), "/slow?ms=5000")).await;
        assert_eq!(resp.status(), 504, "{proto:?}");
        let resp = c.send(get(addr(&z), "/slow?ms=1")).await;
        assert_eq!(resp.status(), 200, "{proto:?}: fast requests still pass");
    }
}

#[tokio::test]
async fn refused_backend_is_skipped_round_robin_continues() {
    let live = backend().await;
    let live2 = backend().await;
    let dir = TempDir::new("f");
    let text = config_text(&[dead_addr(), live.addr(), live2.addr()], "");
    let z = proxy(config(&text, dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    // Bodiless requests are retried on the next backend: none fails.
    for _ in 0..9 {
        assert_eq!(c.send(get(addr(&z), "/")).await.status(), 200);
    }
    // Requests with a body are not retried, but after the refusal the dead backend is skipped:
    // at most the first one can fail.
    let mut failed = 0;
    for i in 0..12 {
        let resp = c
            .send(request("POST", addr(&z), "/echo", noise(100, i)))
            .await;
        match resp.status() {
            200 => assert!(resp.body == noise(100, i)),
            502 => failed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        failed <= 1,
        "{failed} requests failed after the dead backend was found"
    );
}

/// Writes `bytes` on a new connection to `to` and reads until the connection ends: returns what
/// came back, and whether it ended within STEP (a read error, such as a reset, ends it too).
async fn exchange(to: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let ended = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), ended.is_ok())
}

#[tokio::test]
async fn malformed_http1_request_gets_400() {
    let z = Fronted::start("").await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        b"\x00\x01\x02garbage\r\n\r\n",
    ] {
        let (text, _) = exchange(addr(&z), garbage).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{garbage:?} -> {text:?}");
    }
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let z = Fronted::start("[http]\nmax_header_bytes = 8192\n").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
}

/// Reads HTTP/2 frames until a GOAWAY; returns its error code.
async fn read_goaway(s: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
            let kind = buf[at + 3];
            if buf.len() < at + 9 + len {
                break;
            }
            if kind == 0x7 && len >= 8 {
                let p = &buf[at + 9..];
                return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        let n = tokio::time::timeout(STEP, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn malformed_http2_gets_goaway_protocol_error() {
    let z = Fronted::start("").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    s.write_all(zgate_proxy::H2_PREFACE).await.unwrap();
    s.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
                                                                // HEADERS on stream 0 is a connection error of type PROTOCOL_ERROR (RFC 9113 §6.2).
    s.write_all(&[0, 0, 1, 0x1, 0x4, 0, 0, 0, 0, 0x82])
        .await
        .unwrap();
    assert_eq!(read_goaway(&mut s).await, Some(0x1));
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_at_the_header_deadline() {
    let z = Fronted::start("[timeouts]\nheader_read = \"300ms\"\nidle = \"60s\"\n").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // A slowloris: one header byte every 50 ms, bounded at 400 bytes (20 s). The proxy must
    // close the connection long before the head could complete.
    let mut closed = false;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the trickled head was never cut");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_busy_one_is_not() {
    let z = Fronted::start("[timeouts]\nidle = \"300ms\"\n").await;
    // A request slower than the idle timeout completes: in flight is not idle.
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    let resp = c.send(get(addr(&z), "/slow?ms=900")).await;
    assert_eq!(resp.status(), 200);
    // Then, silent, the connection is closed by the proxy.
    let (out, ended) = exchange(addr(&z), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ended, "idle connection was not closed");
    assert!(out.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_protocol_detection_deadline() {
    let z = Fronted::start("[timeouts]\nprotocol_detect = \"200ms\"\n").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "silent connection was never closed");
    assert!(out.is_empty());
    // The server side lets go of it too (bounded wait: the task ends just after the close).
    let mut open = z.connections();
    for _ in 0..500 {
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        open = z.connections();
    }
    assert_eq!(open, 0);
}

#[tokio::test]
async fn connect_method_is_refused() {
    let z = Fronted::start("").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
}

/// A POST of 10 bytes to `/discard` that ends, or, with `stall`, then never does.
fn post_ten_bytes(addr: SocketAddr, stall: bool) -> http::Request<StreamedBody> {
    let ten = std::iter::once(Bytes::from_static(b"0123456789"));
    let body = if stall {
        StreamedBody::stalling(ten)
    } else {
        StreamedBody::new(ten)
    };
    http::Request::post(format!("http://{addr}/discard"))
        .body(body)
        .expect("valid request")
}

/// POSTs `n` bytes to `/discard` (`Connection: close`), one every 50 ms, and returns the whole
/// answer.
async fn post_trickled(to: SocketAddr, n: usize) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"x").await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A POST that announces 100 bytes of body and sends 10.
const STALLED_POST: &[u8] =
    b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";

#[tokio::test]
async fn an_http1_body_that_stops_gets_408_and_its_connection_closed() {
    let z = Fronted::start("[timeouts]\nbody_read = \"300ms\"\n").await;
    // 10 of the 100 bytes announced, then silence.
    let (out, ended) = exchange(addr(&z), STALLED_POST).await;
    assert!(ended, "the stalled request was never answered and closed");
    assert!(out.starts_with("HTTP/1.1 408"), "got: {out}");
    assert!(out.contains("request body timed out"), "got: {out}");
}

#[tokio::test]
async fn an_http1_body_with_short_pauses_is_forwarded_whole() {
    // Pauses of 50 ms against a 2 s limit: a body slower in total than the limit is fine as
    // long as it keeps coming.
    let z = Fronted::start("[timeouts]\nbody_read = \"2s\"\n").await;
    let out = post_trickled(addr(&z), 60).await;
    assert!(out.starts_with("HTTP/1.1 200"), "got: {out}");
    assert!(
        out.ends_with("\r\n\r\n60\n"),
        "the backend got all 60 bytes: {out}"
    );
}

#[tokio::test]
async fn an_http2_stream_whose_body_stops_gets_408_and_the_connection_carries_on() {
    let z = Fronted::start("[timeouts]\nbody_read = \"300ms\"\n").await;
    let mut c: Client<StreamedBody> = Client::connect(addr(&z), Proto::H2c).await;
    let resp = c.send(post_ten_bytes(addr(&z), true)).await;
    assert_eq!(resp.status(), 408);
    let resp = c.send(post_ten_bytes(addr(&z), false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.body[..], b"10\n");
}

#[tokio::test]
async fn a_zero_body_read_allows_any_pause() {
    // body_read = "0": no body deadline (not a deadline of zero). The body pauses 1.5 s, then
    // completes.
    let z = Fronted::start("[timeouts]\nbody_read = \"0\"\n").await;
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    s.write_all(
        b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"cd").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "got: {out}");
    assert!(out.ends_with("\r\n\r\n4\n"), "got: {out}");
}

/// Training: the limiter records events (disabled mode records none), far from the end.
const TRAINING: &str = "[limits]\nmode = \"training\"\ntraining_period = \"1h\"\n";

/// The client's memory held in the proxy (metric M, bytes), as the limiter sees it now.
fn memory_held(z: &zgate_proxy::Server, ip: std::net::IpAddr) -> Option<u64> {
    let now = z.clock().now();
    let c = z.limiter().client(ip, now)?;
    Some(c.current[zgate_limiter::Metric::Memory.index()])
}

/// Polls `f` every 20 ms until it holds (bounded by STEP); returns whether it did.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn an_http1_head_being_received_counts_as_memory_until_its_request_ends() {
    let z = Fronted::start(TRAINING).await;
    let ip = loopback0().ip();
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // The client is in the table from its connection's admission, and its connection's fixed
    // cost (`limits.memory_per_connection`, 16 KiB) is charged a moment later: the base counts
    // it (read before it, the 16 KiB would look like a head still held at the end).
    assert!(eventually(|| memory_held(&z, ip).is_some_and(|m| m >= 16 << 10)).await);
    let base = memory_held(&z, ip).unwrap_or(0);
    // 40 KiB more of an unfinished head (hyper buffers it: under http.max_header_bytes).
    let line = format!("X-Pad: {}\r\n", "a".repeat(1016));
    for _ in 0..40 {
        s.write_all(line.as_bytes()).await.unwrap();
    }
    // Memory is reported in steps of 16 KiB per connection: at least 24 of the 40 show.
    let grew = eventually(|| memory_held(&z, ip).is_some_and(|m| m >= base + (24 << 10))).await;
    assert!(grew, "held {:?}, base {base}", memory_held(&z, ip));
    // The head completes, the request is served: what it held is released.
    s.write_all(b"\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let released = eventually(|| memory_held(&z, ip).is_some_and(|m| m < base + (16 << 10))).await;
    assert!(
        released,
        "held {:?}, base {base}; the client: {:?}",
        memory_held(&z, ip),
        z.limiter().client(ip, z.clock().now())
    );
}

#[tokio::test]
async fn a_slow_but_steady_upload_outlasts_backend_response() {
    // The upload takes ~3 s in pieces 50 ms apart: longer than backend_response, but the
    // backend takes every piece as it comes, so it never keeps zgate waiting.
    let z = Fronted::start("[timeouts]\nbackend_response = \"1s\"\nbody_read = \"2s\"\n").await;
    let out = post_trickled(addr(&z), 60).await;
    assert!(out.starts_with("HTTP/1.1 200"), "got: {out}");
    assert!(out.ends_with("\r\n\r\n60\n"), "got: {out}");
}

#[tokio::test]
async fn a_stalled_body_is_the_clients_fault_even_past_backend_response() {
    // The client stops for good; backend_response is the shorter deadline, but the backend
    // is not what zgate waits on: 408, not 504.
    let z = Fronted::start("[timeouts]\nbackend_response = \"200ms\"\nbody_read = \"1s\"\n").await;
    let (out, ended) = exchange(addr(&z), STALLED_POST).await;
    assert!(ended, "never answered");
    assert!(out.starts_with("HTTP/1.1 408"), "got: {out}");
}

#[tokio::test]
async fn a_backend_that_stops_taking_the_body_gets_504() {
    // A backend that accepts and never reads: once the socket buffers are full, zgate's
    // upload waits on the backend, not on the client.
    let listener = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let dir = TempDir::new("f");
    let text = config_text(
        &[backend_addr],
        "[timeouts]\nbackend_response = \"500ms\"\n",
    );
    let z = proxy(config(&text, dir.path())).await;
    // HTTP/2, so the 504 arrives on its stream while the body is still being offered.
    let mut c: Client<StreamedBody> = Client::connect(addr(&z), Proto::H2c).await;
    let chunk = noise(64 * 1024, 5);
    let body = StreamedBody::new((0..4096).map(move |_| chunk.clone())); // 256 MiB at most
    let req = http::Request::post(format!("http://{}/discard", addr(&z)))
        .body(body)
        .unwrap();
    let resp = c.send(req).await;
    assert_eq!(resp.status(), 504);
    held.abort();
}

#[tokio::test]
async fn chunked_framing_does_not_pile_up_as_memory() {
    let z = Fronted::start(TRAINING).await;
    let ip = loopback0().ip();
    let mut s = TcpStream::connect(addr(&z)).await.unwrap();
    // Echoed back as it arrives: once all of the body has come back, zgate has read all
    // that was sent, and the request is still in flight (its last chunk is not sent yet).
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // 100 000 one-byte chunks: 600 KB read, 100 KB of body, 500 KB of framing that is
    // never forwarded as body.
    let body_len = 100_000;
    let (mut rd, mut wr) = s.into_split();
    // Written while the echo is read: the echo's backpressure would stall a writer alone.
    let writer = tokio::spawn(async move {
        wr.write_all(&b"1\r\nx\r\n".repeat(body_len)).await.unwrap();
        wr
    });
    let mut got = Vec::new();
    let mut echoed = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while echoed < body_len {
        let n = tokio::time::timeout(STEP, rd.read(&mut buf))
            .await
            .expect("echo in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        echoed = head_end.map_or(0, |h| got[h + 4..].iter().filter(|&&c| c == b'x').count());
    }
    // What stays counted is bounded by what hyper can hold of the input (2 x 64 KiB by
    // default), plus the connection's cost, one 16 KiB reporting step and what the echo's
    // response pins of its backend connection (64 KiB), not the framing.
    let bound = (16 + 128 + 16 + 64) << 10;
    let bounded = eventually(|| memory_held(&z, ip).is_some_and(|m| m <= bound)).await;
    assert!(bounded, "held {:?}", memory_held(&z, ip));
    let _wr = writer.await.unwrap();
}

#[tokio::test]
async fn a_request_body_still_streaming_after_its_response_head_outlives_the_header_deadline() {
    // /echo answers at once and streams the body back as it comes: the request body keeps
    // arriving after the response head. Those bytes are body, not a new head: the header
    // deadline must not cut the connection.
    let z = Fronted::start("[timeouts]\nheader_read = \"300ms\"\n").await;
    let s = TcpStream::connect(addr(&z)).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let writer = tokio::spawn(async move {
        // 30 bytes over ~1.5 s: five times the header deadline.
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            wr.write_all(b"z").await.unwrap();
        }
        wr
    });
    let mut out = Vec::new();
    tokio::time::timeout(STEP, rd.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "got: {out}");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body, "z".repeat(30), "the whole body came back: {out}");
    let _wr = writer.await.unwrap();
}
