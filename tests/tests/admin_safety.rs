//! The admin API against other web pages on the same host, end to end over real sockets:
//! mutations need `Content-Type: application/json` (415), a foreign `Origin` is refused (403),
//! a `Host` that is not the listener nor loopback is refused (403, DNS rebinding), wide manual
//! blocks need `"force": true`, `admin.public_healthz` serves `/healthz` without the token, a
//! thin model needs `force` for defence (409 naming the metrics), and text a request sent is
//! escaped in the log.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zgate_limiter::Mode;
use zgate_tests::*;

const TOKEN: &str = "test-token-0123456789";

async fn server_with(extra: &str) -> (zgate_proxy::Server, demo::Backend) {
    let b = backend().await;
    let dir = TempDir::new("admin-safety");
    let text = config_text(
        &[b.addr()],
        &format!("[admin]\naddr = \"127.0.0.1:0\"\n{extra}"),
    );
    (proxy(config(&text, dir.path())).await, b)
}

/// One raw HTTP/1.1 request with exactly `headers` (no Host unless given); returns the status
/// and the body.
async fn raw(
    a: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(a)
        .await
        .expect("connect admin");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut out))
        .await
        .expect("admin answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_the_api() {
    let (s, _b) = server_with("").await;
    let a = s.admin_addr().unwrap();
    let host = a.to_string();
    let block = r#"{"ip": "192.0.2.1"}"#;

    // The classic simple request: text/plain POST, no preflight needed by a browser.
    let (st, body) = raw(
        a,
        "POST",
        "/api/v1/blocks",
        &[("host", &host), ("content-type", "text/plain")],
        block,
    )
    .await;
    assert_eq!(st, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    let (st, _) = raw(a, "POST", "/api/v1/reload", &[("host", &host)], "{}").await;
    assert_eq!(st, 415);
    let (st, _) = raw(
        a,
        "DELETE",
        "/api/v1/blocks/192.0.2.1",
        &[("host", &host)],
        "",
    )
    .await;
    assert_eq!(st, 415);

    // A forged Origin, even with the right type.
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let (st, body) = raw(
            a,
            "POST",
            "/api/v1/blocks",
            &[
                ("host", &host),
                ("content-type", "application/json"),
                ("origin", origin),
            ],
            block,
        )
        .await;
        assert_eq!(st, 403, "{origin}: {body}");
        assert!(body.contains("Origin"), "{body}");
    }
    // DNS rebinding: the page's own name in Host.
    for h in [
        "evil.example",
        &format!("evil.example:{}", a.port()),
        "127.0.0.1:1",
    ] {
        let (st, body) = raw(a, "GET", "/api/v1/mode", &[("host", h)], "").await;
        assert_eq!(st, 403, "{h}: {body}");
        assert!(body.contains("Host"), "{body}");
    }
    assert!(
        s.limiter().blocks(s.clock().now()).is_empty(),
        "nothing was blocked"
    );

    // The listener's own origin, and loopback names, pass.
    let (st, body) = raw(
        a,
        "POST",
        "/api/v1/blocks",
        &[
            ("host", &host),
            ("content-type", "application/json"),
            ("origin", &format!("http://{host}")),
        ],
        block,
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let local = format!("localhost:{}", a.port());
    let (st, _) = raw(a, "GET", "/api/v1/mode", &[("host", &local)], "").await;
    assert_eq!(st, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_blocks_need_force() {
    let (s, _b) = server_with("").await;
    let a = s.admin_addr().unwrap();
    let post = |body: &'static str| admin_request(a, "POST", "/api/v1/blocks", None, Some(body));
    for body in [
        r#"{"ip": "::/0"}"#,
        r#"{"ip": "::/32"}"#,
        r#"{"ip": "2001::/16"}"#,
        r#"{"ip": "10.0.0.0/8"}"#,
        r#"{"ip": "0.0.0.0/0"}"#,
    ] {
        let r = post(body).await;
        assert_eq!(r.status, 409, "{body}: {}", r.body);
        assert!(r.error().contains("force"), "{body}: {}", r.body);
    }
    assert!(s.limiter().blocks(s.clock().now()).is_empty());
    // Clients still get in.
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    for body in [r#"{"ip": "10.1.0.0/16"}"#, r#"{"ip": "2001:db8::/32"}"#] {
        assert_eq!(post(body).await.status, 201, "{body}");
    }
    let r = post(r#"{"ip": "10.0.0.0/8", "force": true}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["blocked"]["prefix"], "10.0.0.0/8");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_healthz_needs_no_token_and_the_rest_still_does() {
    let (s, _b) = server_with(&format!("token = \"{TOKEN}\"\npublic_healthz = true\n")).await;
    let a = s.admin_addr().unwrap();
    let r = admin_get(a, "/healthz").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    assert_eq!(admin_get(a, "/api/v1/mode").await.status, 401);
    assert_eq!(admin_get(a, "/metrics").await.status, 401);
    s.shutdown().await;
    // Off by default: the token is needed for /healthz too.
    let (s, _b) = server_with(&format!("token = \"{TOKEN}\"\n")).await;
    assert_eq!(
        admin_get(s.admin_addr().unwrap(), "/healthz").await.status,
        401
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_model_needs_force_for_defence() {
    let (s, _b) = server_with("").await;
    let a = s.admin_addr().unwrap();
    let put = |body: &'static str| admin_request(a, "PUT", "/api/v1/mode", None, Some(body));
    assert_eq!(put(r#"{"mode": "training"}"#).await.status, 200);
    // One client: every metric is learned from at most 1 < min_clients (10).
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    for mode in ["defence", "monitor"] {
        let r = admin_request(
            a,
            "PUT",
            "/api/v1/mode",
            None,
            Some(&format!("{{\"mode\": \"{mode}\"}}")),
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.body);
        let e = r.error();
        assert!(
            e.contains("connections (n = 1)") && e.contains("fragmentation (n = 0)"),
            "{e}"
        );
        assert!(e.contains("min_clients (10)") && e.contains("force"), "{e}");
    }
    assert_eq!(
        s.limiter().mode(),
        Mode::Training,
        "a refusal changes nothing"
    );
    let out = ctl(a, None, &["mode=defence"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("fall back to their static caps"),
        "{out:?}"
    );
    let out = ctl(a, None, &["mode=defence", "--force"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "mode = defence\n"),
        "{out:?}"
    );
    assert_eq!(s.limiter().mode(), Mode::Defence);
    let r = put(r#"{"mode": "monitor", "force": true}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The forced answer says which metrics are not enforceable, and so does the model.
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let w = v["warning"].as_str().unwrap_or_default();
    assert!(
        w.contains("fragmentation (n = 0, static cap 100000)"),
        "{}",
        r.body
    );
    let m = admin_request(a, "GET", "/api/v1/model", None, None).await;
    let m: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let f = &m["metrics"]["fragmentation"];
    assert_eq!(f["enforceable"], false, "{f}");
    assert_eq!(f["blocks_above"], 100000.0, "{f}");
    assert!(f["not_enforceable"]
        .as_str()
        .unwrap_or_default()
        .contains("fewer than min_clients"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_model_epoch_is_refused() {
    let (s, _b) = server_with("").await;
    let a = s.admin_addr().unwrap();
    let body = MODEL_JSON.replace("\"epoch\": 7", "\"epoch\": 18446744073709551615");
    let r = admin_request(a, "PUT", "/api/v1/model", None, Some(&body)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.error()
            .contains("epoch 18446744073709551615 is out of range"),
        "{}",
        r.body
    );
    assert!(s.limiter().model().is_none());
    let body = MODEL_JSON.replace("\"epoch\": 7", "\"epoch\": 9007199254740991");
    assert_eq!(
        admin_request(a, "PUT", "/api/v1/model", None, Some(&body))
            .await
            .status,
        200
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_text_is_escaped_in_the_log() {
    let b = backend().await;
    let dir = TempDir::new("admin-safety");
    let text = config_text(&[b.addr()], "[admin]\naddr = \"127.0.0.1:0\"\n");
    let z = ZgateProcess::start(&text, &dir);
    let a = z.admin_addr();
    let r = admin_request(
        a,
        "PUT",
        "/api/v1/mode",
        None,
        Some("{\"mode\": \"training\", \"x\\nFORGED zgate line\": 1}"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let line = z.wait_log("admin request refused");
    assert!(line.contains("x\\nFORGED zgate line`"), "{line}");
    let log = z.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.starts_with("FORGED")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_takes_an_admin_address() {
    use std::ffi::OsStr;
    let z = ZgateProcess::spawn(&[
        OsStr::new("demo"),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--backend"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--admin"),
        OsStr::new("127.0.0.1:0"),
    ]);
    let a = z.admin_addr();
    assert_ne!(a.port(), zgate_config::DEFAULT_ADMIN_PORT);
    let out = ctl(a, None, &["mode"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "mode = disabled\n"),
        "{out:?}"
    );
}
