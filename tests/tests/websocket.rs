//! Protocol upgrades through zgate, over real sockets, against a WebSocket backend with
//! hand-written framing (`tests/src/websocket.rs`): the handshake gives `101`; 10 MB each way
//! echo intact; a close from the client and one from the backend both end cleanly; another
//! protocol (`Upgrade: foo`) is tunnelled as raw bytes; a backend that answers `200` gives the
//! client `200`; an upgrade with a body is an ordinary request; an idle tunnel is closed after
//! `timeouts.idle`; the tunnel's request in flight and memory show in the admin API while it
//! is open and are gone after; WebSocket over HTTP/2 (RFC 8441 extended CONNECT) becomes an
//! HTTP/1.1 upgrade to the backend; a plain `CONNECT` is 405.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_proxy::Server;
use zgate_tests::websocket::{
    handshake, header, op, read_frame, read_head, write_frame, BackendEnd, Prefixed, WsBackend,
};
use zgate_tests::{addr, admin_get, config, config_text, noise, proxy, TempDir, STEP};

/// The limiter counts clients (it does not while disabled, the default).
const TRAINING: &str = "[limits]\nmode = \"training\"\n";

/// zgate (with its admin API) in front of a WebSocket backend, with `extra` config.
struct Setup {
    server: Server,
    backend: WsBackend,
    _dir: TempDir,
}

impl Setup {
    async fn start(extra: &str) -> Setup {
        let backend = WsBackend::start().await;
        let dir = TempDir::new("websocket");
        let text = config_text(
            &[backend.addr()],
            &format!("[admin]\naddr = \"127.0.0.1:0\"\n{extra}"),
        );
        let server = proxy(config(&text, dir.path())).await;
        Setup {
            server,
            backend,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        addr(&self.server)
    }

    /// Opens a connection, sends the handshake for `path` asking for `protocol`; the
    /// response head and the stream (with what was read past the head).
    async fn upgrade(&self, path: &str, protocol: &str) -> (String, Prefixed<TcpStream>) {
        let mut s = TcpStream::connect(self.addr()).await.expect("connect");
        s.write_all(handshake(path, protocol).as_bytes())
            .await
            .expect("write");
        let (head, rest) = tokio::time::timeout(STEP, read_head(&mut s))
            .await
            .expect("a response in time")
            .expect("a response head");
        (head, Prefixed::new(rest, s))
    }

    /// Waits (bounded) until the backend has seen `n` connections end; their ends.
    async fn backend_ends(&self, n: usize) -> Vec<BackendEnd> {
        for _ in 0..300 {
            let ends = self.backend.ends();
            if ends.len() >= n {
                return ends;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.backend.ends()
    }

    /// The admin API's view of 127.0.0.1: current requests in flight and memory.
    async fn client_view(&self) -> (u64, u64) {
        let a = self.server.admin_addr().expect("admin API running");
        let r = admin_get(a, "/api/v1/clients/127.0.0.1").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let current = &v["current"];
        (
            current["requests"].as_u64().expect("requests"),
            current["memory"].as_u64().expect("memory"),
        )
    }
}

fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

/// Reads to EOF within `STEP`; whether the connection ended with a FIN (not a reset).
async fn ends_cleanly<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(STEP, s.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_101_and_10_mb_each_way_echo_intact_then_the_client_closes() {
    let t = Setup::start("").await;
    let (head, s) = t.upgrade("/echo", "websocket").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(header(&head, "upgrade").as_deref(), Some("websocket"));
    assert!(header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")));
    assert_eq!(
        header(&head, "sec-websocket-accept").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==.accepted")
    );
    // The backend got the upgrade and the WebSocket headers.
    let seen = &t.backend.heads()[0];
    assert_eq!(
        header(seen, "upgrade").as_deref(),
        Some("websocket"),
        "{seen}"
    );
    assert_eq!(
        header(seen, "connection").as_deref(),
        Some("upgrade"),
        "{seen}"
    );
    assert_eq!(
        header(seen, "sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(header(seen, "sec-websocket-version").as_deref(), Some("13"));

    const TOTAL: usize = 10 * 1024 * 1024;
    const FRAME: usize = 64 * 1024;
    let data = noise(TOTAL, 15);
    let mut s = s;
    // Up and down at once: the echo comes back while the upload goes on.
    let (mut rd, mut wr) = tokio::io::split(&mut s);
    let up = async {
        for chunk in data.chunks(FRAME) {
            write_frame(&mut wr, op::BINARY, chunk, true)
                .await
                .expect("send a frame");
        }
    };
    let down = async {
        let mut got = Vec::with_capacity(TOTAL);
        while got.len() < TOTAL {
            let (opcode, payload) = read_frame(&mut rd).await.expect("an echoed frame");
            assert_eq!(opcode, op::BINARY);
            got.extend_from_slice(&payload);
        }
        got
    };
    let ((), got) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(up, down) })
            .await
            .expect("10 MB each way in time");
    assert!(got == data[..], "the echo differs from what was sent");

    // The client closes: the backend answers the close frame and closes; the client sees
    // the close frame, then a clean EOF.
    write_frame(&mut s, op::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("send close");
    let (opcode, payload) = read_frame(&mut s).await.expect("the close answer");
    assert_eq!(opcode, op::CLOSE);
    assert_eq!(payload, 1000u16.to_be_bytes());
    assert!(ends_cleanly(&mut s).await, "the tunnel ends with a FIN");
    assert_eq!(t.backend_ends(1).await, [BackendEnd::ClientClosed]);
}

#[tokio::test]
async fn the_backend_closes_cleanly() {
    let t = Setup::start("").await;
    let (head, mut s) = t.upgrade("/bye", "websocket").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(read_frame(&mut s).await, Some((op::TEXT, b"bye".to_vec())));
    let (opcode, payload) = read_frame(&mut s).await.expect("the backend's close");
    assert_eq!(
        (opcode, payload),
        (op::CLOSE, 1000u16.to_be_bytes().to_vec())
    );
    write_frame(&mut s.inner, op::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("answer the close");
    assert!(ends_cleanly(&mut s).await, "the tunnel ends with a FIN");
    assert_eq!(t.backend_ends(1).await, [BackendEnd::ClosedByBackend]);
}

#[tokio::test]
async fn another_protocol_is_tunnelled_as_raw_bytes_and_a_half_close_passes() {
    let t = Setup::start("").await;
    let (head, mut s) = t.upgrade("/raw", "foo/2").await;
    assert_eq!(status(&head), "101", "{head}");
    assert_eq!(header(&head, "upgrade").as_deref(), Some("foo/2"));
    let seen = &t.backend.heads()[0];
    assert_eq!(header(seen, "upgrade").as_deref(), Some("foo/2"), "{seen}");
    // Not HTTP: a request line's look-alike, then arbitrary bytes.
    let payload = [b"GET / HTTP/1.1\r\n\r\n".as_slice(), &noise(100_000, 3)].concat();
    s.inner.write_all(&payload).await.expect("write");
    // The client is done sending: the backend sees EOF, echoes the rest and closes.
    s.inner.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut back))
        .await
        .expect("the echo in time")
        .expect("a clean end");
    assert!(back == payload, "raw bytes came back changed");
    assert_eq!(t.backend_ends(1).await, [BackendEnd::RawEof]);
}

#[tokio::test]
async fn a_backend_that_does_not_switch_gives_its_answer() {
    let t = Setup::start("").await;
    let (head, mut s) = t.upgrade("/plain", "websocket").await;
    assert_eq!(status(&head), "200", "{head}");
    let mut body = [0u8; 5];
    tokio::time::timeout(STEP, s.read_exact(&mut body))
        .await
        .expect("in time")
        .expect("the body");
    assert_eq!(&body, b"plain");
}

#[tokio::test]
async fn an_upgrade_with_a_body_is_an_ordinary_request() {
    let t = Setup::start("").await;
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    s.write_all(
        b"POST /plain HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await
    .expect("write");
    let (head, _) = read_head(&mut s).await.expect("a response");
    assert_eq!(status(&head), "200", "{head}");
    let seen = &t.backend.heads()[0];
    assert_eq!(header(seen, "upgrade"), None, "{seen}");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let t = Setup::start("[timeouts]\nidle = \"300ms\"\n").await;
    let (head, mut s) = t.upgrade("/silent", "websocket").await;
    assert_eq!(status(&head), "101", "{head}");
    // Nothing moves either way: zgate closes both sides.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(STEP, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle tunnel was not closed");
    assert!(rest.is_empty());
    assert_eq!(t.backend_ends(1).await, [BackendEnd::Dropped]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_counts_in_the_limiter_until_it_ends() {
    let t = Setup::start(TRAINING).await;
    let (head, mut s) = t.upgrade("/echo", "websocket").await;
    assert_eq!(status(&head), "101", "{head}");
    write_frame(&mut s.inner, op::TEXT, b"ping", true)
        .await
        .expect("send");
    assert_eq!(read_frame(&mut s).await, Some((op::TEXT, b"ping".to_vec())));
    // Open: one request in flight, and memory for the connection (16 KiB) and the splice's
    // buffers (64 KiB) at least.
    let (requests, memory) = t.client_view().await;
    assert_eq!(requests, 1, "the tunnel's request is in flight");
    assert!(
        memory >= 16 * 1024 + 64 * 1024,
        "memory {memory}: the splice buffers are not charged"
    );
    write_frame(&mut s.inner, op::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("close");
    assert!(read_frame(&mut s).await.is_some());
    assert!(ends_cleanly(&mut s).await);
    // The backend closed; the client closes its side too (until then the tunnel is half
    // open, the client may still send).
    drop(s);
    // Ended: nothing in flight, nothing held.
    let mut view = t.client_view().await;
    for _ in 0..100 {
        if view == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = t.client_view().await;
    }
    assert_eq!(view, (0, 0), "(requests, memory) after the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_becomes_an_http1_upgrade_to_the_backend() {
    let t = Setup::start(TRAINING).await;
    let tcp = TcpStream::connect(t.addr()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    // A first request, so the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) are in.
    let first = Request::get(format!("http://{}/plain", t.addr()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let r = sender.send_request(first).await.expect("a response");
    assert_eq!(r.status(), 200);
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{}/echo", t.addr()))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut r = sender.send_request(req).await.expect("a response");
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(r.headers().get("sec-websocket-accept").is_none());
    let seen = t.backend.heads()[1].clone();
    assert!(seen.starts_with("GET /echo HTTP/1.1\r\n"), "{seen}");
    assert_eq!(
        header(&seen, "upgrade").as_deref(),
        Some("websocket"),
        "{seen}"
    );
    assert_eq!(
        header(&seen, "sec-websocket-version").as_deref(),
        Some("13")
    );
    assert!(header(&seen, "sec-websocket-key").is_some_and(|k| k.len() == 24));

    let upgraded = hyper::upgrade::on(&mut r)
        .await
        .expect("the stream upgraded");
    let mut io = TokioIo::new(upgraded);
    let big = noise(300_000, 8);
    write_frame(&mut io, op::BINARY, &big, true)
        .await
        .expect("send");
    assert_eq!(read_frame(&mut io).await, Some((op::BINARY, big.to_vec())));
    let (requests, _) = t.client_view().await;
    assert_eq!(requests, 1, "the tunnel's request is in flight");
    write_frame(&mut io, op::CLOSE, &1000u16.to_be_bytes(), true)
        .await
        .expect("close");
    assert_eq!(
        read_frame(&mut io).await,
        Some((op::CLOSE, 1000u16.to_be_bytes().to_vec()))
    );
    assert!(ends_cleanly(&mut io).await, "the stream ends cleanly");
    let ends = t.backend_ends(2).await;
    assert!(ends.contains(&BackendEnd::ClientClosed), "{ends:?}");
}

#[tokio::test]
async fn plain_connect_is_405() {
    let t = Setup::start("").await;
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = read_head(&mut s).await.expect("a response");
    assert_eq!(status(&head), "405", "{head}");
    assert!(t.backend.heads().is_empty(), "CONNECT reached the backend");
}
