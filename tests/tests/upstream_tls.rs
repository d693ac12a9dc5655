//! TLS and HTTP/2 to backends (`[upstream] protocol`, `[upstream] tls`): a TLS backend
//! verified against a test CA (and refused with the wrong CA: 502, logged), HTTP/2 backends
//! in cleartext (h2c) and over TLS (h2 by ALPN) whose concurrent requests share one
//! connection, and a proxy that keeps working after the backend closes that connection.

use std::net::SocketAddr;

use zgate_tests::pki::{TestBackend, TestCa};
use zgate_tests::{
    addr, config, get, proxy, wait_until, Client, Collected, Proto, TempDir, ZgateProcess, STEP,
};

/// Config text: a cleartext listener and `backend`, with `[upstream]` keys.
fn text(backend: &str, upstream: &str) -> String {
    format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{backend}\"\n[upstream]\n{upstream}\n"
    )
}

async fn fetch(p: SocketAddr, path: &str) -> Collected {
    let mut c = Client::connect(p, Proto::Http1).await;
    c.send(get(p, path)).await
}

#[tokio::test]
async fn a_tls_backend_verified_against_the_ca_answers() {
    let dir = TempDir::new("up-tls");
    let ca = TestCa::new("test", dir.path());
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], dir.path(), "backend");
    let b = TestBackend::start(Some(leaf.server_config(&["http/1.1", "h2"])), 0).await;
    // An IP address backend is verified against the address.
    let s = proxy(config(
        &text(&b.addr().to_string(), "tls = { ca = \"test-ca.pem\" }"),
        dir.path(),
    ))
    .await;
    let r = fetch(addr(&s), "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-backend-alpn"), Some("http/1.1"));
    assert_eq!(r.header("x-backend-version"), Some("HTTP/1.1"));
    // The name in `server_name` is verified (and sent as SNI) instead.
    let named = ca.leaf(&["api.internal"], dir.path(), "named");
    let b2 = TestBackend::start(Some(named.server_config(&["http/1.1"])), 0).await;
    let s2 = proxy(config(
        &text(
            &b2.addr().to_string(),
            "tls = { server_name = \"api.internal\", ca = \"test-ca.pem\" }",
        ),
        dir.path(),
    ))
    .await;
    assert_eq!(fetch(addr(&s2), "/").await.status(), 200);
}

#[tokio::test]
async fn a_backend_with_a_certificate_of_another_ca_is_refused() {
    let dir = TempDir::new("up-tls-wrong");
    let ca = TestCa::new("test", dir.path());
    let _other = TestCa::new("other", dir.path());
    let leaf = ca.leaf(&["127.0.0.1"], dir.path(), "backend");
    let b = TestBackend::start(Some(leaf.server_config(&["http/1.1"])), 0).await;
    let z = ZgateProcess::start(
        // One failure takes the backend out, so its log line (with the reason) comes at once.
        &text(
            &b.addr().to_string(),
            "tls = { ca = \"other-ca.pem\" }\nfail_after = 1",
        ),
        &dir,
    );
    let r = fetch(z.addr, "/").await;
    assert_eq!(r.status(), 502, "an unverified backend must not be used");
    let line = z.wait_log("backend down");
    assert!(
        line.contains("TLS handshake") && line.contains("invalid peer certificate"),
        "{line}"
    );
    // A certificate for another name is refused too (the CA is right, the name is not).
    let s = proxy(config(
        &text(
            &b.addr().to_string(),
            "tls = { server_name = \"api.internal\", ca = \"test-ca.pem\" }",
        ),
        dir.path(),
    ))
    .await;
    assert_eq!(fetch(addr(&s), "/").await.status(), 502);
}

#[tokio::test]
async fn a_missing_ca_file_is_a_config_error_naming_the_key() {
    let dir = TempDir::new("up-tls-ca");
    let c = config(
        &text("127.0.0.1:9", "tls = { ca = \"nowhere.pem\" }"),
        dir.path(),
    );
    let e = match zgate_proxy::Server::start(c).await {
        Ok(_) => panic!("a missing CA file must refuse the start"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("`upstream.tls.ca`") && e.contains("nowhere.pem"),
        "{e}"
    );
}

/// `n` concurrent `/gate` requests through `p`, over HTTP/2 from one client connection: the
/// backend answers none until all `n` are in flight at once.
async fn concurrent_gate(p: SocketAddr, n: usize) {
    let c = Client::connect(p, Proto::H2c).await;
    let Client::H2(send) = c else {
        panic!("an h2c client")
    };
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let resp = tokio::time::timeout(STEP, send.send_request(get(p, "/gate")))
                .await
                .expect("answer in time")
                .expect("response");
            resp.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
}

#[tokio::test]
async fn an_h2c_backend_shares_one_connection_and_survives_its_close() {
    let dir = TempDir::new("up-h2c");
    let b = TestBackend::start(None, 8).await;
    let s = proxy(config(
        &text(&b.addr().to_string(), "protocol = \"http2\""),
        dir.path(),
    ))
    .await;
    let p = addr(&s);
    let r = fetch(p, "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-backend-version"), Some("HTTP/2.0"));
    assert_eq!(
        r.header("x-backend-authority"),
        Some(p.to_string().as_str()),
        "`:authority` is the client's Host"
    );
    // A request body goes through, over HTTP/1.1 and h2c clients alike.
    let body = zgate_tests::noise(300_000, 7);
    for proto in [Proto::Http1, Proto::H2c] {
        let mut c = Client::connect(p, proto).await;
        let r = c
            .send(zgate_tests::request("POST", p, "/echo", body.clone()))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, body, "{proto:?}");
    }
    // Eight requests in flight at once, on one backend connection.
    concurrent_gate(p, 8).await;
    assert_eq!(b.accepted(), 1, "the requests share one connection");
    // The backend closes it: the next request connects anew.
    b.close_connections();
    wait_until("the backend closes its connection", || b.open() == 0).await;
    for _ in 0..3 {
        assert_eq!(fetch(p, "/").await.status(), 200);
    }
    assert_eq!(b.accepted(), 2);
}

#[tokio::test]
async fn an_h2_backend_over_tls_shares_one_connection() {
    let dir = TempDir::new("up-h2-tls");
    let ca = TestCa::new("test", dir.path());
    let leaf = ca.leaf(&["127.0.0.1"], dir.path(), "backend");
    let b = TestBackend::start(Some(leaf.server_config(&["h2", "http/1.1"])), 6).await;
    let s = proxy(config(
        &text(
            &b.addr().to_string(),
            "protocol = \"http2\"\ntls = { ca = \"test-ca.pem\" }",
        ),
        dir.path(),
    ))
    .await;
    let p = addr(&s);
    let r = fetch(p, "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-backend-alpn"), Some("h2"));
    assert_eq!(r.header("x-backend-version"), Some("HTTP/2.0"));
    concurrent_gate(p, 6).await;
    assert_eq!(b.accepted(), 1, "the requests share one connection");
    b.close_connections();
    wait_until("the backend closes its connection", || b.open() == 0).await;
    assert_eq!(fetch(p, "/").await.status(), 200);
    assert_eq!(b.accepted(), 2);
}

#[tokio::test]
async fn an_http1_backend_opens_a_connection_per_concurrent_request() {
    // The control for the sharing tests: without `protocol = "http2"`, concurrent requests
    // each need a connection of their own.
    let dir = TempDir::new("up-h1");
    let b = TestBackend::start(None, 4).await;
    let s = proxy(config(&text(&b.addr().to_string(), ""), dir.path())).await;
    concurrent_gate(addr(&s), 4).await;
    assert_eq!(b.accepted(), 4);
}

/// `[[pool]]` has its own `protocol` and `tls`: a route to an HTTP/2-over-TLS pool beside a
/// cleartext HTTP/1.1 default pool, each request reaching its own kind of backend; a pool's
/// bad CA file is an error naming `pool[0].tls`.
#[tokio::test]
async fn each_pool_reaches_its_backends_with_its_own_protocol_and_tls() {
    let dir = TempDir::new("up-pool-tls");
    let ca = TestCa::new("test", dir.path());
    let leaf = ca.leaf(&["127.0.0.1"], dir.path(), "backend");
    let secure = TestBackend::start(Some(leaf.server_config(&["h2", "http/1.1"])), 0).await;
    let plain = TestBackend::start(None, 0).await;
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{}\"\n\
         [[pool]]\nname = \"secure\"\nbackends = [\"{}\"]\nprotocol = \"http2\"\n\
         tls = {{ ca = \"test-ca.pem\" }}\n\
         [[route]]\npath_prefix = \"/s/\"\npool = \"secure\"\n",
        plain.addr(),
        secure.addr()
    );
    let s = proxy(config(&text, dir.path())).await;
    let p = addr(&s);
    let r = fetch(p, "/s/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-backend-alpn"), Some("h2"));
    assert_eq!(r.header("x-backend-version"), Some("HTTP/2.0"));
    let r = fetch(p, "/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("x-backend-version"), Some("HTTP/1.1"));
    assert_eq!((secure.accepted(), plain.accepted()), (1, 1));

    let bad = text.replace("test-ca.pem", "nowhere.pem");
    let e = match zgate_proxy::Server::start(config(&bad, dir.path())).await {
        Ok(_) => panic!("a pool's missing CA file must refuse the start"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("pool[0].tls"), "{e}");
}
