//! What zgate logs, read from a spawned zgate's stderr: a block decided at accept at `warn`;
//! monitor mode's would-blocks once per client, not per connection; the access line written
//! at the response's last byte with bytes, host, user agent and upstream, client text
//! escaped; `log.format = "json"`; a dead backend logged once.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_tests::{
    admin_request, backend, config_text, dead_addr, zgate_bin, TempDir, ZgateProcess, MODEL_JSON,
    STEP,
};

/// One HTTP/1.1 exchange on a fresh connection, `Connection: close`; the whole answer.
async fn exchange(to: std::net::SocketAddr, head: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(to).await.expect("connect");
    s.write_all(head).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await;
    out
}

fn lines_with(z: &ZgateProcess, needle: &str) -> Vec<String> {
    let log = z.log.lock().expect("log");
    log.iter().filter(|l| l.contains(needle)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_at_accept_is_logged_at_warn() {
    let b = backend().await;
    let dir = TempDir::new("logs-accept");
    let extra = "[limits.guards]\nmax_connections_per_client = 2\n";
    let z = ZgateProcess::start(&config_text(&[b.addr()], extra), &dir);
    let mut held = Vec::new();
    for _ in 0..3 {
        // The third is refused at accept with a reset, which can reach the client before its
        // connect returns (ECONNRESET from connect): refused either way.
        match TcpStream::connect(z.addr).await {
            Ok(s) => held.push(s),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let line = z.wait_log("blocked");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains("reason=guard:connections"), "{line}");
    assert!(line.contains("value=3") && line.contains("z="), "{line}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_logs_a_client_once_not_per_connection() {
    let b = backend().await;
    let dir = TempDir::new("logs-monitor");
    let extra = "[admin]\naddr = \"127.0.0.1:0\"\n";
    let z = ZgateProcess::start(&config_text(&[b.addr()], extra), &dir);
    let admin = z.admin_addr();
    let put = |path: &'static str, body: &'static str| {
        admin_request(admin, "PUT", path, None, Some(body))
    };
    assert_eq!(put("/api/v1/model", MODEL_JSON).await.status, 200);
    assert_eq!(
        put("/api/v1/mode", r#"{"mode": "monitor"}"#).await.status,
        200
    );
    // 40 connections from one client, each with a request: far over the model's 2 +- 1.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(z.addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf)
            .await
            .expect("an answer: monitor enforces nothing");
        assert_eq!(&buf[9..12], b"200");
        held.push(s);
    }
    let first = z.wait_log("monitor: would block");
    assert!(first.contains("suppressed=0"), "{first}");
    let lines = lines_with(&z, "monitor: would block");
    assert_eq!(lines.len(), 1, "one line per client per minute: {lines:#?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_line_is_written_at_the_last_byte_with_its_fields() {
    let b = backend().await;
    let dir = TempDir::new("logs-access");
    let z = ZgateProcess::start(&config_text(&[b.addr()], "[log]\naccess = true\n"), &dir);
    let head = b"GET /bytes?n=3000000 HTTP/1.1\r\nHost: shop.example\r\n\
                 User-Agent: probe\xffx\r\nConnection: close\r\n\r\n";
    let answer = exchange(z.addr, head).await;
    assert!(answer.len() > 3_000_000, "the whole body came");
    let line = z.wait_log("target=/bytes?n=3000000");
    for field in [
        "status=200",
        "bytes_out=3000000",
        "bytes_in=0",
        "host=shop.example",
        "duration_ms=",
        "upstream_ms=",
        "blocked=-",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(line.contains(&format!("upstream={}", b.addr())), "{line}");
    // The client's bytes are escaped, not written raw.
    assert!(line.contains("user_agent=probe\\xff"), "{line}");
    assert!(
        !line.contains('\u{1}') && !line.contains('\u{fffd}'),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_logged_once() {
    let b = backend().await;
    let dir = TempDir::new("logs-dead");
    let dead = dead_addr();
    let z = ZgateProcess::start(&config_text(&[dead, b.addr()], ""), &dir);
    for _ in 0..6 {
        let r = exchange(
            z.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with(b"HTTP/1.1 200"));
    }
    let line = z.wait_log("backend down");
    assert!(
        line.contains("WARN") && line.contains(&dead.to_string()),
        "{line}"
    );
    assert_eq!(lines_with(&z, "backend down").len(), 1);
}

#[test]
fn json_format_writes_one_object_per_line() {
    let dir = TempDir::new("logs-json");
    let listen = dead_addr();
    let text = format!(
        "[[listener]]\naddr = \"{listen}\"\n[[backend]]\naddr = \"127.0.0.1:9\"\n[log]\nformat = \"json\"\n"
    );
    let file = dir.path().join("zgate.toml");
    std::fs::write(&file, text).expect("write config");
    let mut child = Command::new(zgate_bin())
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zgate");
    let stderr = child.stderr.take().expect("stderr");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().expect("lines").push(line);
        }
    });
    let deadline = std::time::Instant::now() + STEP;
    let listening = loop {
        let found = seen
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.contains("listening"))
            .cloned();
        if let Some(l) = found {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no listening line");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    for line in seen.lock().expect("lines").iter() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(&listening).expect("JSON");
    assert_eq!(v["level"], "INFO");
}
