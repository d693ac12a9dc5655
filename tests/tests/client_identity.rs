//! Client identity behind load balancers and CDNs (issue 13): PROXY protocol on a listener,
//! trusted forwarding headers, exempt clients. Real sockets, observable behaviour: what the
//! backend sees, what the client gets, what the limiter and `/metrics` say.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_limiter::{Identified, IpPrefix, Metric, Mode, Reason};
use zgate_tests::balancer::{header, local_header, Version};
use zgate_tests::lab::{connect_from, ip, Lab};
use zgate_tests::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn addr_ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A server with one cleartext `proxy_protocol` listener (a TLS one too if `tls`), an admin
/// API, `protocol_detect` of 500 ms, and `extra` TOML.
async fn pp_server(extra: &str, tls: Option<&TestCert>) -> (zgate_proxy::Server, demo::Backend) {
    let b = backend().await;
    let dir = TempDir::new("ident");
    let mut text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\nproxy_protocol = true\n[[backend]]\naddr = \"{}\"\n",
        b.addr()
    );
    if let Some(c) = tls {
        text.push_str(&format!(
            "[[listener]]\naddr = \"127.0.0.2:0\"\nproxy_protocol = true\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            c.cert_path.display(),
            c.key_path.display()
        ));
    }
    text.push_str("[timeouts]\nprotocol_detect = \"500ms\"\n[admin]\naddr = \"127.0.0.1:0\"\n");
    text.push_str(extra);
    (proxy(config(&text, dir.path())).await, b)
}

/// A server whose cleartext listener takes no PROXY header, with `[client_ip]` as given.
async fn header_server(client_ip: &str, limits: &str) -> (zgate_proxy::Server, demo::Backend) {
    let b = backend().await;
    let dir = TempDir::new("ident");
    let text = config_text(
        &[b.addr()],
        &format!("[admin]\naddr = \"127.0.0.1:0\"\n[client_ip]\n{client_ip}\n{limits}"),
    );
    (proxy(config(&text, dir.path())).await, b)
}

/// Writes `bytes` then reads until the server closes (bounded); returns what was read, or
/// `None` if the connection was reset.
async fn exchange(s: &mut TcpStream, bytes: &[u8]) -> Option<Vec<u8>> {
    if s.write_all(bytes).await.is_err() {
        return None;
    }
    read_all(s).await
}

async fn read_all(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => Some(out),
        Ok(Err(_)) => None,
        Err(_) => panic!("the server neither answered nor closed"),
    }
}

/// A `GET /headers` (the backend answers with the request headers it got) with `Host: x` and
/// `extra` headers.
fn headers_request(to: SocketAddr, extra: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .uri(format!("http://{to}/headers"))
        .header("host", "x");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

const GET_HEADERS: &[u8] = b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// The `x-forwarded-for` line the backend saw, from a `/headers` response.
fn forwarded_for(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .unwrap_or_else(|| panic!("no x-forwarded-for in {text}"))
        .to_owned()
}

async fn metrics(s: &zgate_proxy::Server) -> String {
    admin_get(s.admin_addr().expect("admin"), "/metrics")
        .await
        .body
}

/// The value of a metric line (`name{labels} value`) in Prometheus text; 0 when absent.
fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_and_v2_name_the_client_over_tcp4_tcp6_and_local() {
    let (s, _b) = pp_server("[limits]\nmode = \"training\"\n", None).await;
    let to = addr(&s);
    let admin = s.admin_addr().unwrap();
    for (version, client) in [
        (Version::V1, "203.0.113.9:4000"),
        (Version::V2, "198.51.100.7:4001"),
        (Version::V1, "[2001:db8:1::9]:4002"),
        (Version::V2, "[2001:db8:2::7]:4003"),
    ] {
        let client = sa(client);
        let mut c = TcpStream::connect(to).await.unwrap();
        let mut bytes = header(version, client, to);
        bytes.extend_from_slice(GET_HEADERS);
        let resp = exchange(&mut c, &bytes).await.expect("a response");
        assert_eq!(forwarded_for(&resp), client.ip().to_string(), "{version:?}");
        let v = admin_get(admin, &format!("/api/v1/clients/{}", client.ip()))
            .await
            .json();
        assert_eq!(v["identified"], "proxy_protocol", "{v}");
        assert!(v["max"]["connections"].as_u64() >= Some(1), "{v}");
    }
    // v2 LOCAL (a health check of the balancer): the peer is the client.
    let mut c = TcpStream::connect(to).await.unwrap();
    let mut bytes = local_header();
    bytes.extend_from_slice(GET_HEADERS);
    let resp = exchange(&mut c, &bytes).await.expect("a response");
    assert_eq!(forwarded_for(&resp), "127.0.0.1");
    let v = admin_get(admin, "/api/v1/clients/127.0.0.1").await.json();
    assert_eq!(v["identified"], "peer", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_comes_before_tls_on_a_tls_listener() {
    let cert = TestCert::generate();
    let (s, _b) = pp_server("", Some(&cert)).await;
    let tls_addr = s.local_addrs()[1];
    for (version, alpn, client) in [
        (Version::V2, "h2", "198.51.100.7:4001"),
        (Version::V1, "http/1.1", "[2001:db8::9]:4002"),
    ] {
        let client = sa(client);
        let mut tcp = TcpStream::connect(tls_addr).await.unwrap();
        tcp.write_all(&header(version, client, tls_addr))
            .await
            .unwrap();
        let mut c = Client::tls_over(tcp, &cert, alpn).await;
        let resp = c.send(get(tls_addr, "/headers")).await;
        assert_eq!(resp.status(), 200);
        let seen = String::from_utf8_lossy(&resp.body).into_owned();
        assert!(
            seen.contains(&format!("x-forwarded-for: {}\n", client.ip())),
            "{seen}"
        );
        assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_split_across_reads_is_reassembled() {
    let (s, _b) = pp_server("", None).await;
    let to = addr(&s);
    for version in [Version::V1, Version::V2] {
        let client = sa("203.0.113.77:5000");
        let h = header(version, client, to);
        let mut c = TcpStream::connect(to).await.unwrap();
        c.set_nodelay(true).unwrap();
        for part in [&h[..3], &h[3..13], &h[13..]] {
            c.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let resp = exchange(&mut c, GET_HEADERS).await.expect("a response");
        assert_eq!(forwarded_for(&resp), "203.0.113.77", "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_close_the_connection_and_are_counted() {
    let (s, _b) = pp_server("", None).await;
    let to = addr(&s);
    let good = header(Version::V2, sa("198.51.100.7:1"), to);
    let mut bogus_length = good.clone();
    bogus_length[14] = 0xff;
    bogus_length[15] = 0xff;
    let mut wrong_signature = good.clone();
    wrong_signature[10] = b'X';
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (what, bytes, then close our side)
        ("missing", GET_HEADERS.to_vec(), false),
        (
            "wrong signature",
            [&wrong_signature[..], GET_HEADERS].concat(),
            false,
        ),
        ("bogus v2 length", bogus_length, false),
        (
            "malformed v1",
            b"PROXY TCP4 203.0.113.999 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            false,
        ),
        ("truncated v2", good[..20].to_vec(), true),
        ("truncated v1", b"PROXY TCP4 203.0.113.9 19".to_vec(), true),
    ];
    for (what, bytes, close) in &cases {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(bytes).await.unwrap();
        if *close {
            c.shutdown().await.unwrap();
        }
        let got = read_all(&mut c).await.unwrap_or_default();
        assert!(
            got.is_empty(),
            "{what}: got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Too slow: part of a header, then nothing past `timeouts.protocol_detect`.
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(&good[..10]).await.unwrap();
    let got = read_all(&mut c).await.unwrap_or_default();
    assert!(got.is_empty(), "slow: {got:?}");
    // Oversized: a v1 line that never ends. zgate stops reading at 107 bytes and closes, so
    // the rest is never taken off the socket and our writes fail.
    let mut line = b"PROXY TCP4 ".to_vec();
    line.resize(32 << 20, b'1');
    let mut c = TcpStream::connect(to).await.unwrap();
    let wrote = tokio::time::timeout(STEP, c.write_all(&line)).await;
    assert!(
        matches!(wrote, Ok(Err(_))),
        "zgate took 32 MiB of a PROXY header"
    );

    let m = metrics(&s).await;
    let count = |reason: &str| {
        metric(
            &m,
            &format!("zgate_proxy_protocol_errors_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("missing"), 2, "{m}");
    assert_eq!(count("invalid"), 1, "{m}");
    assert_eq!(count("too_long"), 2, "{m}");
    assert_eq!(count("closed"), 2, "{m}");
    assert_eq!(count("timeout"), 1, "{m}");
    // Nothing is left open, and a good header still works.
    // (Each closed connection ends on its worker thread: wait for the last, boundedly.)
    let deadline = std::time::Instant::now() + STEP;
    while s.connections() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.connections(), 0);
    let mut c = TcpStream::connect(to).await.unwrap();
    let resp = exchange(&mut c, &[&good[..], GET_HEADERS].concat())
        .await
        .unwrap();
    assert_eq!(forwarded_for(&resp), "198.51.100.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_is_refused_at_accept() {
    let (s, _b) = pp_server("[client_ip]\ntrusted_proxies = [\"127.0.0.2\"]\n", None).await;
    let to = addr(&s);
    let bytes = [
        &header(Version::V1, sa("203.0.113.9:1"), to)[..],
        GET_HEADERS,
    ]
    .concat();
    // Reset at accept: the connect itself may already see it.
    let got = match connect_from(addr_ip("127.0.0.1"), to).await {
        Ok(mut c) => exchange(&mut c, &bytes).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    assert!(got.is_empty(), "{got:?}");
    let mut c = connect_from(addr_ip("127.0.0.2"), to).await.unwrap();
    let resp = exchange(&mut c, &bytes).await.expect("a response");
    assert_eq!(forwarded_for(&resp), "203.0.113.9");
    let m = metrics(&s).await;
    assert_eq!(
        metric(
            &m,
            "zgate_proxy_protocol_errors_total{reason=\"untrusted\"}"
        ),
        1,
        "{m}"
    );
    assert!(metric(&m, "zgate_connections_refused_total") >= 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_is_refused_right_after_its_header_before_tls() {
    let cert = TestCert::generate();
    let (s, _b) = pp_server("", Some(&cert)).await;
    let (plain, tls_addr) = (addr(&s), s.local_addrs()[1]);
    let now = s.clock().now();
    s.limiter()
        .block(
            IpPrefix::host(addr_ip("203.0.113.66")),
            Duration::from_secs(600),
            now,
        )
        .unwrap();
    let blocked = sa("203.0.113.66:7");
    let mut c = TcpStream::connect(plain).await.unwrap();
    let got = exchange(
        &mut c,
        &[&header(Version::V2, blocked, plain)[..], GET_HEADERS].concat(),
    )
    .await
    .unwrap_or_default();
    assert!(got.is_empty(), "{got:?}");
    // On the TLS listener no handshake happens: the ClientHello gets a reset.
    let mut tcp = TcpStream::connect(tls_addr).await.unwrap();
    tcp.write_all(&header(Version::V1, blocked, tls_addr))
        .await
        .unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(STEP, tcp.read(&mut b)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // Others behind the same balancer are served.
    let mut c = TcpStream::connect(plain).await.unwrap();
    let ok = sa("203.0.113.67:7");
    let resp = exchange(
        &mut c,
        &[&header(Version::V2, ok, plain)[..], GET_HEADERS].concat(),
    )
    .await
    .expect("a response");
    assert_eq!(forwarded_for(&resp), "203.0.113.67");
    assert!(!s
        .limiter()
        .is_blocked(addr_ip("127.0.0.1"), s.clock().now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_connections_are_counted_for_the_header_address() {
    let (s, _b) = pp_server("[limits]\nmode = \"training\"\n", None).await;
    let to = addr(&s);
    let client = sa("192.0.2.44:1");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(&header(Version::V2, client, to)).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 12];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"HTTP/1.1 200");
        held.push(c);
    }
    let now = s.clock().now();
    let c = s.limiter().client(client.ip(), now).expect("tracked");
    assert_eq!(c.current[Metric::Connections.index()], 3);
    assert_eq!(c.identified, Identified::ProxyProtocol);
    // The balancer itself is nobody's client.
    assert!(s.limiter().client(addr_ip("127.0.0.1"), now).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let (s, _b) = header_server(
        "trusted_proxies = [\"127.0.0.2\"]\nheader = \"x-forwarded-for\"",
        "[limits]\nmode = \"training\"\n",
    )
    .await;
    let to = addr(&s);
    let stream = connect_from(addr_ip("127.0.0.1"), to).await.unwrap();
    let mut c = Client::from_stream(stream, false).await;
    let req = headers_request(
        to,
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
            ("x-real-ip", "198.51.100.2"),
            ("x-forwarded-host", "evil.example"),
        ],
    );
    let resp = c.send(req).await;
    let seen = String::from_utf8_lossy(&resp.body).into_owned();
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-real-ip: 127.0.0.1\n"), "{seen}");
    assert!(!seen.contains("203.0.113.9"), "{seen}");
    assert!(!seen.contains("198.51.100."), "{seen}");
    assert!(!seen.contains("evil.example"), "{seen}");
    let now = s.clock().now();
    assert!(s.limiter().client(addr_ip("203.0.113.9"), now).is_none());
    let me = s.limiter().client(addr_ip("127.0.0.1"), now).unwrap();
    assert_eq!(me.max[Metric::Requests.index()], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_chain_is_attributed_to_its_client() {
    let (s, _b) = header_server(
        "trusted_proxies = [\"127.0.0.2\", \"10.0.0.0/8\"]\nheader = \"x-forwarded-for\"",
        "[limits]\nmode = \"training\"\n",
    )
    .await;
    let to = addr(&s);
    let stream = connect_from(addr_ip("127.0.0.2"), to).await.unwrap();
    let mut c = Client::from_stream(stream, false).await;
    // "client, cdn-edge", with a made-up entry the client put in front.
    let req = headers_request(
        to,
        &[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.9.9.9"),
            ("x-forwarded-proto", "https"),
        ],
    );
    let resp = c.send(req).await;
    let seen = String::from_utf8_lossy(&resp.body).into_owned();
    assert!(
        seen.contains("x-forwarded-for: 6.6.6.6, 198.51.100.7, 10.9.9.9, 127.0.0.2\n"),
        "{seen}"
    );
    assert!(seen.contains("x-real-ip: 198.51.100.7\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    let now = s.limiter().status(s.clock().now());
    let now_ns = s.clock().now();
    let client = s
        .limiter()
        .client(addr_ip("198.51.100.7"), now_ns)
        .expect("tracked");
    assert_eq!(client.max[Metric::Requests.index()], 1);
    assert_eq!(client.current[Metric::Connections.index()], 0);
    assert_eq!(client.identified, Identified::Header);
    let cdn = s
        .limiter()
        .client(addr_ip("127.0.0.2"), now_ns)
        .expect("tracked");
    assert_eq!(cdn.max[Metric::Requests.index()], 0);
    assert_eq!(cdn.current[Metric::Connections.index()], 1);
    assert!(cdn.exempt, "a trusted proxy is never blocked");
    assert!(s.limiter().client(addr_ip("6.6.6.6"), now_ns).is_none());
    assert_eq!(now.mode, Mode::Training);

    // RFC 7239, IPv6 in brackets with a port.
    let req = headers_request(
        to,
        &[("forwarded", "for=\"[2001:db8:5::9]:4711\";proto=https")],
    );
    let resp = c.send(req).await;
    let seen = String::from_utf8_lossy(&resp.body).into_owned();
    assert!(
        seen.contains("forwarded: for=\"[2001:db8:5::9]:4711\";proto=https, for=127.0.0.2\n"),
        "{seen}"
    );
}

/// A forwarded client's per-request memory comes back when each request ends, and its
/// requests' CPU is charged to it, on a CDN connection that carries many of its requests (the
/// connection keeps the client between them); the chain zgate sends stays right when it is
/// made once for the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_clients_requests_give_their_memory_back_and_charge_its_cpu() {
    let (s, _b) = header_server(
        "trusted_proxies = [\"127.0.0.2\", \"10.0.0.0/8\"]\nheader = \"x-forwarded-for\"",
        "[limits]\nmode = \"training\"\n",
    )
    .await;
    let to = addr(&s);
    let stream = connect_from(addr_ip("127.0.0.2"), to).await.unwrap();
    let mut c = Client::from_stream(stream, false).await;
    const REQUESTS: usize = 300;
    for i in 0..REQUESTS {
        let req = headers_request(to, &[("x-forwarded-for", "198.51.100.8, 10.9.9.9")]);
        let resp = c.send(req).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let seen = String::from_utf8_lossy(&resp.body).into_owned();
        assert!(
            seen.contains("x-forwarded-for: 198.51.100.8, 10.9.9.9, 127.0.0.2\n"),
            "request {i}: {seen}"
        );
        assert!(seen.contains("x-real-ip: 198.51.100.8\n"), "{seen}");
    }
    let now = s.clock().now();
    let client = s
        .limiter()
        .client(addr_ip("198.51.100.8"), now)
        .expect("tracked");
    assert_eq!(client.max[Metric::Requests.index()], 1);
    // One request at a time holds one request's cost (4 KiB by default), never the sum of
    // all 300 (1.2 MB): the memory of each request came back when it ended.
    let (held, peak) = (
        client.current[Metric::Memory.index()],
        client.max[Metric::Memory.index()],
    );
    assert!(held <= 16 * 1024, "held {held}");
    assert!(peak <= 16 * 1024, "peak {peak}");
    assert!(
        client.max[Metric::Cpu.index()] > 0,
        "the requests' CPU is charged to the forwarded client"
    );
}

/// The L7 scenario: one HTTP/2 connection from a trusted CDN address carries the requests of
/// 20 forwarded clients; after training, one of them floods; only its requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_behind_one_cdn_connection_only_the_flooder_is_refused() {
    let (s, _b) = header_server(
        "trusted_proxies = [\"127.0.5.1\"]\nheader = \"x-forwarded-for\"",
        &zgate_tests::lab::LAB_LIMITS.replace("mode = \"disabled\"", "mode = \"training\""),
    )
    .await;
    let to = addr(&s);
    let stream = connect_from(ip(5, 1), to).await.unwrap();
    let Client::H2(cdn) = Client::from_stream(stream, true).await else {
        unreachable!("asked for h2")
    };
    let clients: Vec<String> = (1..=20).map(|i| format!("198.51.100.{i}")).collect();
    // One round: client i has 1 + i % 3 requests in flight to a slow endpoint.
    let round = |cdn: hyper::client::conn::http2::SendRequest<_>, skip: Option<usize>| {
        let clients = clients.clone();
        async move {
            let mut tasks = Vec::new();
            for (i, who) in clients.iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                for _ in 0..(1 + i % 3) {
                    let mut c = Client::H2(cdn.clone());
                    let req = http::Request::builder()
                        .uri(format!("http://{to}/slow?ms=300"))
                        .header("x-forwarded-for", who.as_str())
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap();
                    tasks.push(tokio::spawn(async move { c.try_send(req).await }));
                }
            }
            let mut statuses = Vec::new();
            for t in tasks {
                statuses.push(t.await.unwrap().map(|r| r.status()).unwrap_or(0));
            }
            statuses
        }
    };
    for _ in 0..3 {
        let st = round(cdn.clone(), None).await;
        assert!(st.iter().all(|&s| s == 200), "training: {st:?}");
    }
    let now = s.clock().now();
    s.limiter().set_mode(Mode::Defence, now).unwrap();
    assert_eq!(s.limiter().model().unwrap().get(Metric::Requests).n, 20);

    // Client 5 floods 80 concurrent requests while the 19 others do their round.
    let flooder = clients[5].clone();
    let flood = {
        let cdn = cdn.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..80 {
                let mut c = Client::H2(cdn.clone());
                let req = http::Request::builder()
                    .uri(format!("http://{to}/slow?ms=1000"))
                    .header("x-forwarded-for", flooder.as_str())
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap();
                tasks.push(tokio::spawn(async move { c.try_send(req).await }));
            }
            let mut refused = 0;
            for t in tasks {
                if let Ok(Ok(r)) = t.await {
                    if r.status() == 403 {
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    let others = round(cdn.clone(), Some(5)).await;
    let refused = flood.await.unwrap();
    assert!(
        others.iter().all(|&s| s == 200),
        "the 19 others: {others:?}"
    );
    assert!(refused > 0, "the flooder was never refused");
    let b = s
        .limiter()
        .blocks(s.clock().now())
        .into_iter()
        .find(|b| b.prefix.contains(addr_ip(&clients[5])))
        .expect("the flooder is blocked");
    assert_eq!(b.reason, Some(Reason::Metric(Metric::Requests)));
    assert!(!s.limiter().is_blocked(ip(5, 1), s.clock().now()));
    // The shared connection survived: another round on it succeeds.
    let again = round(cdn.clone(), Some(5)).await;
    assert!(
        again.iter().all(|&s| s == 200),
        "after the flood: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_client_that_floods_is_never_blocked_and_others_still_are() {
    let lab = Lab::start_with("exempt = [\"127.0.9.20/32\"]", "").await;
    lab.train(4, Mode::Defence).await;
    let flood = |from: IpAddr, to: SocketAddr| async move {
        let mut open = Vec::new();
        for _ in 0..200 {
            if let Ok(mut s) = connect_from(from, to).await {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
                open.push(s);
            }
        }
        open
    };
    let exempt = ip(9, 20);
    let held = flood(exempt, lab.addr).await;
    assert!(!lab.is_blocked(exempt), "{:?}", lab.block_of(exempt));
    let now = lab.server.clock().now();
    let c = lab.server.limiter().client(exempt, now).unwrap();
    assert!(c.exempt);
    assert!(c.current[Metric::Connections.index()] >= 150, "{c:?}");
    drop(held);
    let attacker = ip(9, 21);
    let _held = flood(attacker, lab.addr).await;
    assert!(lab.is_blocked(attacker), "{:?}", lab.blocks());
    assert!(!lab.is_blocked(exempt));
    let out = lab.rounds(1).await;
    lab.assert_legit(&out, "after the floods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_and_exempt_apply_on_reload() {
    let b = backend().await;
    let dir = TempDir::new("ident-reload");
    let path = dir.path().join("zgate.toml");
    let base = config_text(
        &[b.addr()],
        "[admin]\naddr = \"127.0.0.1:0\"\n[limits]\nmode = \"training\"\n",
    );
    std::fs::write(&path, &base).unwrap();
    let s = zgate_proxy::Server::start_with_path(config(&base, dir.path()), Some(path.clone()))
        .await
        .unwrap();
    // Listeners are known by their config address (port 0 too): the reload keeps it bound.
    let to = addr(&s);
    let send = |xff: &'static str| async move {
        let mut c = Client::connect(to, Proto::Http1).await;
        let req = headers_request(to, &[("x-forwarded-for", xff)]);
        String::from_utf8_lossy(&c.send(req).await.body).into_owned()
    };
    let seen = send("203.0.113.9").await;
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    let admin = s.admin_addr().unwrap();
    let r = admin_request(
        admin,
        "POST",
        "/api/v1/blocks",
        None,
        Some(r#"{"ip": "198.51.100.0/24", "duration": "1m"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(s
        .limiter()
        .is_blocked(addr_ip("198.51.100.5"), s.clock().now()));

    std::fs::write(
        &path,
        format!(
            "{base}exempt = [\"198.51.100.0/24\"]\n[client_ip]\ntrusted_proxies = [\"127.0.0.1\"]\nheader = \"x-forwarded-for\"\n"
        ),
    )
    .unwrap();
    s.reload().expect("the reload applies");
    // The same client now counts as a trusted proxy: its header names the client (an IPv6
    // one, aggregated to its /64 like any other).
    let seen = send("2001:db8:7:7::1").await;
    assert!(
        seen.contains("x-forwarded-for: 2001:db8:7:7::1, 127.0.0.1\n"),
        "{seen}"
    );
    let now = s.clock().now();
    let c = s
        .limiter()
        .client(addr_ip("2001:db8:7:7::ffff"), now)
        .expect("tracked");
    assert_eq!(c.identified, Identified::Header);
    assert_eq!(c.prefix.to_string(), "2001:db8:7:7::/64");
    // Exempt now: the block in place no longer applies, and a new one is refused.
    assert!(!s.limiter().is_blocked(addr_ip("198.51.100.5"), now));
    assert!(
        s.limiter().is_exempt(addr_ip("127.0.0.1")),
        "a trusted proxy is exempt"
    );
    let r = admin_request(
        admin,
        "POST",
        "/api/v1/blocks",
        None,
        Some(r#"{"ip": "198.51.100.7"}"#),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("exempt"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_forwarded_client_gets_block_status_and_http1_keep_alive_goes_on() {
    let (s, _b) = header_server(
        "trusted_proxies = [\"127.0.0.2\"]\nheader = \"x-real-ip\"",
        "[limits]\nblock_action = \"reply\"\nblock_status = 429\n",
    )
    .await;
    let to = addr(&s);
    let now = s.clock().now();
    s.limiter()
        .block(
            IpPrefix::host(addr_ip("203.0.113.50")),
            Duration::from_secs(600),
            now,
        )
        .unwrap();
    let stream = connect_from(addr_ip("127.0.0.2"), to).await.unwrap();
    let mut c = Client::from_stream(stream, false).await;
    let req = |who: &str| {
        http::Request::builder()
            .uri(format!("http://{to}/"))
            .header("host", "x")
            .header("x-real-ip", who)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    for _ in 0..3 {
        let r = c.send(req("203.0.113.50")).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.header("connection"), None, "the shared connection stays");
        let r = c.send(req("203.0.113.51")).await;
        assert_eq!(r.status(), 200);
    }
    assert!(!s
        .limiter()
        .is_blocked(addr_ip("127.0.0.2"), s.clock().now()));
}
