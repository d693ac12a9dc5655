//! HTTP edge cases answered per RFC 9112 and RFC 9113, over raw sockets: a malformed chunked
//! body is the client's fault (400, not a backend error); the absolute-form target's authority
//! wins over `Host`; two `Host` lines, or none in HTTP/1.1, get 400; `Connection` cannot
//! remove `Host`; in HTTP/2 `:authority` wins over a differing `host`.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_proxy::stats::Stats;
use zgate_tests::{addr, Client, Fronted, Proto, STEP};

/// Writes `request` on a fresh connection and reads until the proxy closes it or `STEP` ends.
async fn exchange(f: &Fronted, request: &str) -> String {
    let mut s = TcpStream::connect(addr(f)).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or_default()
}

/// The `host` lines the demo backend's `/headers` saw.
fn hosts_seen(response: &str) -> Vec<&str> {
    response
        .lines()
        .filter_map(|l| l.strip_prefix("host: "))
        .collect()
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_client_error() {
    let f = Fronted::start("").await;
    let r = exchange(
        &f,
        "POST /discard HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
    )
    .await;
    assert_eq!(status(&r), "400", "{r}");
    let stats = f.stats();
    assert_eq!(
        Stats::get(&stats.backend_failed),
        0,
        "counted as a backend error"
    );
    assert_eq!(stats.client_body_errors.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_absolute_form_authority_wins_over_host() {
    let f = Fronted::start("").await;
    let r = exchange(
        &f,
        "GET http://real.example:8080/headers HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert_eq!(hosts_seen(&r), ["real.example:8080"], "{r}");
}

#[tokio::test]
async fn two_host_lines_or_none_in_http11_get_400() {
    let f = Fronted::start("").await;
    let r = exchange(
        &f,
        "GET /headers HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "400", "{r}");
    let r = exchange(&f, "GET /headers HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status(&r), "400", "{r}");
    // HTTP/1.0 may omit it.
    let r = exchange(&f, "GET /headers HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&r), "200", "{r}");
}

#[tokio::test]
async fn connection_cannot_remove_host() {
    let f = Fronted::start("").await;
    let r = exchange(
        &f,
        "GET /headers HTTP/1.1\r\nHost: kept.example\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert_eq!(hosts_seen(&r), ["kept.example"], "{r}");
}

#[tokio::test]
async fn in_http2_the_authority_wins_over_host() {
    let f = Fronted::start("").await;
    let mut c = Client::connect(addr(&f), Proto::H2c).await;
    let req = http::Request::builder()
        .uri("http://authority.example/headers")
        .header("host", "host.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let r = c.send(req).await;
    assert_eq!(r.status(), 200);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(hosts_seen(&body), ["authority.example"], "{body}");
}
