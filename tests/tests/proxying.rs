//! Requests and bodies through zgate over HTTP/1.1, h2c and h2 over TLS arrive intact, with the
//! forwarding headers set and hop-by-hop headers removed.

use bytes::Bytes;
use zgate_tests::*;

const SIZES: [usize; 3] = [0, 1024, 10 * 1024 * 1024];

async fn bodies_both_ways(client: &mut Client, addr: std::net::SocketAddr, label: &str) {
    for (i, size) in SIZES.into_iter().enumerate() {
        // Download: the backend's pattern.
        let resp = client.send(get(addr, &format!("/bytes?n={size}"))).await;
        assert_eq!(resp.status(), 200, "{label} download {size}");
        assert_eq!(resp.body.len(), size, "{label} download {size} length");
        assert!(
            resp.body == pattern(size),
            "{label} download {size} differs"
        );
        // Upload and echo: our bytes come back identical.
        let sent = noise(size, i as u64 + 7);
        let resp = client
            .send(request("POST", addr, "/echo", sent.clone()))
            .await;
        assert_eq!(resp.status(), 200, "{label} echo {size}");
        assert_eq!(resp.body.len(), size, "{label} echo {size} length");
        assert!(resp.body == sent, "{label} echo {size} differs");
        assert_eq!(resp.header("via"), Some("1.1 zgate"), "{label} via");
    }
}

#[tokio::test]
async fn http1_bodies_arrive_byte_identical() {
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    bodies_both_ways(&mut c, addr(&z), "h1").await;
}

#[tokio::test]
async fn h2c_bodies_arrive_byte_identical() {
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::H2c).await;
    bodies_both_ways(&mut c, addr(&z), "h2c").await;
    let resp = c.send(get(addr(&z), "/")).await;
    assert_eq!(resp.head.version, http::Version::HTTP_2);
}

/// zgate with one TLS listener (`cert`) in front of `b`.
async fn tls_proxy(b: &demo::Backend, cert: &TestCert) -> zgate_proxy::Server {
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n[[backend]]\naddr = \"{}\"\n",
        b.addr()
    );
    proxy(config(&text, cert.dir.path())).await
}

#[tokio::test]
async fn tls_with_alpn_serves_h2_and_http1() {
    let b = backend().await;
    let cert = TestCert::generate();
    let z = tls_proxy(&b, &cert).await;
    let a = addr(&z);

    let mut h2 = Client::connect_tls(a, &cert, "h2").await;
    bodies_both_ways(&mut h2, a, "h2+tls").await;
    let resp = h2.send(get(a, "/headers")).await;
    assert_eq!(resp.head.version, http::Version::HTTP_2);
    let headers = String::from_utf8_lossy(&resp.body);
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");

    let mut h1 = Client::connect_tls(a, &cert, "http/1.1").await;
    let resp = h1.send(get(a, "/")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.head.version, http::Version::HTTP_11);
}

/// Over h2 and TLS, what one poll of the connection writes goes to TLS at the poll's end, in
/// one write (the connection room's `coalesce.rs`): many streams answered together, of sizes
/// on both sides of a record's 16 KiB, each arrive whole and in order.
#[tokio::test]
async fn over_tls_h2_streams_answered_together_each_arrive_whole() {
    let b = backend().await;
    let cert = TestCert::generate();
    let z = tls_proxy(&b, &cert).await;
    let a = addr(&z);
    let Client::H2(send) = Client::connect_tls(a, &cert, "h2").await else {
        panic!("h2 was offered and expected");
    };
    let sizes = [
        0,
        1,
        100,
        1023,
        1024,
        5000,
        16 * 1024,
        16 * 1024 + 9,
        70_000,
        1 << 20,
    ];
    let mut streams = Vec::new();
    for round in 0..4 {
        for size in sizes {
            let mut c = Client::H2(send.clone());
            streams.push(tokio::spawn(async move {
                let resp = c.send(get(a, &format!("/bytes?n={size}&r={round}"))).await;
                (size, resp)
            }));
        }
    }
    for stream in streams {
        let (size, resp) = stream.await.expect("stream task");
        assert_eq!(resp.status(), 200, "{size}");
        assert_eq!(resp.body.len(), size, "length of {size}");
        assert!(resp.body == pattern(size), "body of {size} differs");
    }
}

/// What a TLS connection writes during one poll is sent at the poll's end (the connection
/// room's `gather.rs`): a client that stops reading must still get every byte once it reads
/// again, and a `Connection: close` response must arrive whole, then `close_notify` and the
/// end of the stream, in that order.
#[tokio::test]
async fn over_tls_a_paused_reader_gets_every_byte_and_close_comes_after_the_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = backend().await;
    let cert = TestCert::generate();
    let z = tls_proxy(&b, &cert).await;
    let a = addr(&z);
    for size in [1024, 8 << 20] {
        let tcp = tokio::net::TcpStream::connect(a).await.expect("connect");
        let mut tls = tls_connect(tcp, &cert, "http/1.1").await;
        let head = format!("GET /bytes?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tls.write_all(head.as_bytes()).await.expect("request");
        // Not reading: zgate's socket and its gather buffer fill up and it must wait.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut all = Vec::new();
        // `read_to_end` ends with Ok only after the server's `close_notify`: a stream cut
        // without it is an error (rustls: UnexpectedEof).
        tokio::time::timeout(STEP, tls.read_to_end(&mut all))
            .await
            .expect("the whole response in time")
            .expect("the response, then close_notify");
        let split = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        let head = String::from_utf8_lossy(&all[..split]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains(&format!("content-length: {size}")), "{head}");
        assert_eq!(all.len() - split, size, "body length of {size}");
        assert!(all[split..] == pattern(size), "body of {size} differs");
    }
}

#[tokio::test]
async fn chunked_request_bodies_are_forwarded_whole() {
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let a = addr(&z);
    // A body of unknown length: hyper sends it chunked.
    let parts: Vec<Bytes> = (0..50).map(|i| noise(997 + i * 13, i as u64)).collect();
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    // Yields chunks one by one with no length: hyper sends the body chunked.
    let body = StreamedBody::new(parts.into_iter());
    let mut c: Client<_> = Client::connect(a, Proto::Http1).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{a}/echo"))
        .header("host", a.to_string())
        .body(body)
        .unwrap();
    assert!(req.headers().get("content-length").is_none());
    let resp = c.send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body.len(), whole.len());
    assert!(resp.body == whole);
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_removed() {
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let a = addr(&z);
    let mut c = Client::connect(a, Proto::Http1).await;
    let req = http::Request::builder()
        .uri("/headers")
        .header("host", "app.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = c.send(req).await;
    let seen = String::from_utf8_lossy(&resp.body).to_string();
    assert!(seen.contains("host: app.example\n"), "Host kept: {seen}");
    // The client is no trusted proxy: its X-Forwarded-For is dropped, not extended.
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(!seen.contains("203.0.113.9"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("via: 1.1 zgate\n"), "{seen}");
    assert!(seen.contains("x-end-to-end: kept\n"), "{seen}");
    assert!(
        !seen.contains("x-hop"),
        "header named by Connection removed: {seen}"
    );
    assert!(!seen.contains("keep-alive"), "{seen}");

    // HTTP/2: Host comes from :authority, the Via names protocol 2.
    let mut c = Client::connect(a, Proto::H2c).await;
    let resp = c.send(get(a, "/headers")).await;
    let seen = String::from_utf8_lossy(&resp.body).to_string();
    assert!(seen.contains(&format!("host: {a}\n")), "{seen}");
    assert!(seen.contains("via: 2 zgate\n"), "{seen}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let mut s = tokio::net::TcpStream::connect(addr(&z)).await.unwrap();
    let mut batch = String::new();
    for code in [201, 202, 203, 204] {
        batch.push_str(&format!("GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    batch.push_str("GET /slow?ms=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(batch.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("responses in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let statuses: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .map(|l| &l[9..12])
        .collect();
    assert_eq!(statuses, ["201", "202", "203", "204", "200"], "{text}");
    assert!(text.ends_with("slept 50 ms\n"), "{text}");
}

#[tokio::test]
async fn many_requests_share_one_keep_alive_connection() {
    let b = backend().await;
    let dir = TempDir::new("p");
    let z = proxy(config(&config_text(&[b.addr()], ""), dir.path())).await;
    let mut c = Client::connect(addr(&z), Proto::Http1).await;
    for i in 0..200 {
        let resp = c.send(get(addr(&z), &format!("/bytes?n={i}"))).await;
        assert_eq!(resp.body.len(), i);
    }
    assert_eq!(z.connections(), 1);
}
