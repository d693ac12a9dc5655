//! The admin HTTP API and `zgate ctl`, end to end: every endpoint and command, bad input that is
//! refused with a clear 4xx and changes nothing, token enforcement, and `/metrics` after known
//! traffic.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use zgate_limiter::{Metric, Mode};
use zgate_tests::*;

const TOKEN: &str = "test-token-0123456789";

async fn server_with(backends: &[SocketAddr], extra: &str) -> zgate_proxy::Server {
    let dir = TempDir::new("admin");
    let text = config_text(
        backends,
        &format!("[admin]\naddr = \"127.0.0.1:0\"\n{extra}"),
    );
    proxy(config(&text, dir.path())).await
}

fn admin(s: &zgate_proxy::Server) -> SocketAddr {
    s.admin_addr().expect("admin API running")
}

async fn put(a: SocketAddr, path: &str, body: &str) -> AdminResponse {
    admin_request(a, "PUT", path, None, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_is_read_set_and_bad_requests_change_nothing() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "").await;
    let a = admin(&s);
    let r = admin_get(a, "/api/v1/mode").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["mode"], "disabled");
    assert_eq!(v["epoch"], 0);
    assert!(v["training_left_secs"].is_null());

    // No model yet: defence is refused with the limiter's reason.
    let r = put(a, "/api/v1/mode", r#"{"mode": "defence"}"#).await;
    assert_eq!(r.status, 409);
    assert!(r.error().contains("no model"), "{}", r.body);
    // Unknown mode, bad JSON, unknown field, empty body.
    let r = put(a, "/api/v1/mode", r#"{"mode": "attack"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("unknown mode \"attack\""), "{}", r.body);
    let r = put(a, "/api/v1/mode", r#"{"mode": "#).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("bad JSON"), "{}", r.body);
    let r = put(a, "/api/v1/mode", r#"{"mode": "training", "x": 1}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("unknown field"), "{}", r.body);
    let r = put(a, "/api/v1/mode", "").await;
    assert_eq!(r.status, 400);
    assert_eq!(s.limiter().mode(), Mode::Disabled);

    let r = put(a, "/api/v1/mode", r#"{"mode": "training"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["mode"], "training");
    assert_eq!(v["epoch"], 1);
    assert!(v["training_left_secs"].as_f64().unwrap() > 3000.0);
    assert_eq!(s.limiter().mode(), Mode::Training);

    // Routing: unknown path 404, wrong method 405 naming the allowed ones.
    let r = admin_get(a, "/api/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/api/v1/nothing"));
    let r = admin_request(a, "DELETE", "/api/v1/mode", None, None).await;
    assert_eq!(r.status, 405);
    assert!(r.error().contains("GET, PUT"), "{}", r.body);
    let r = admin_get(a, "/healthz").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_update_partially_and_all_or_nothing() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "[limits.z]\nmemory = 3.5\n").await;
    let a = admin(&s);
    let v = admin_get(a, "/api/v1/thresholds").await.json();
    assert_eq!(v["memory"]["z"], 3.5);
    assert_eq!(v["cpu"]["z"], 3.0);
    assert_eq!(v["cpu"]["enabled"], true);

    let r = put(a, "/api/v1/thresholds", r#"{"cpu": 4.5}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["cpu"]["z"], 4.5);
    assert_eq!(s.limiter().threshold(Metric::Cpu), 4.5);
    assert_eq!(s.limiter().threshold(Metric::Memory), 3.5);

    // One bad entry refuses the whole update.
    for (body, needle) in [
        (r#"{"cpu": 1.0, "frag": 2.0}"#, "unknown metric \"frag\""),
        (r#"{"cpu": 1.0, "memory": -1}"#, "memory: threshold -1"),
        (r#"{"cpu": "NaN"}"#, "cpu: give a number"),
        (r#"{"cpu": {"z": "x"}}"#, "must be a number"),
        (r#"{"cpu": {"zz": 1}}"#, "unknown field"),
        (r#"{"requests": {"enabled": "no"}}"#, "true or false"),
        (r#"[1, 2]"#, "object of metric names"),
        (r#"{}"#, "no metric"),
    ] {
        let r = put(a, "/api/v1/thresholds", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains(needle), "{body}: {}", r.body);
    }
    assert_eq!(s.limiter().threshold(Metric::Cpu), 4.5);
    assert_eq!(s.limiter().threshold(Metric::Memory), 3.5);
    assert!(s.limiter().is_enabled(Metric::Requests));

    let r = put(
        a,
        "/api/v1/thresholds",
        r#"{"requests": {"enabled": false}, "memory": {"z": 6}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!s.limiter().is_enabled(Metric::Requests));
    assert_eq!(s.limiter().threshold(Metric::Memory), 6.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_is_imported_validated_and_shown() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "").await;
    let a = admin(&s);
    let v = admin_get(a, "/api/v1/model").await.json();
    assert_eq!(v["present"], false);
    assert_eq!(v["metrics"]["cpu"]["threshold"], 3.0);

    // Invalid models are refused and change nothing.
    let mut missing: Value = serde_json::from_str(MODEL_JSON).unwrap();
    missing["metrics"]
        .as_object_mut()
        .unwrap()
        .remove("fragmentation");
    let missing = missing.to_string();
    for (body, needle) in [
        (missing.as_str(), "not a valid model"),
        (
            &*MODEL_JSON.replace(r#""std": 500.0"#, r#""std": -5.0"#),
            "cpu.std",
        ),
        ("{\"epoch\": 1", "bad JSON"),
        ("[]", "JSON object"),
    ] {
        let r = put(a, "/api/v1/model", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.error().contains(needle), "{needle}: {}", r.body);
    }
    assert!(s.limiter().model().is_none());

    let r = put(a, "/api/v1/model", MODEL_JSON).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let model = s.limiter().model().expect("imported");
    assert_eq!(model.epoch, 7);
    assert_eq!(model.get(Metric::Cpu).mean, 2000.0);
    let v = admin_get(a, "/api/v1/model").await.json();
    assert_eq!(v["present"], true);
    assert_eq!(v["epoch"], 7);
    assert_eq!(v["metrics"]["memory"]["n"], 20);
    assert_eq!(v["metrics"]["memory"]["mean"], 40000.0);
    assert_eq!(v["metrics"]["memory"]["std"], 5000.0);
    assert!(v["trained_at"].as_u64().unwrap() > 1_600_000_000);
    // What GET shows can be PUT back.
    let again = put(a, "/api/v1/model", &v.to_string()).await;
    assert_eq!(again.status, 200, "{}", again.body);

    // With a model, defence is allowed.
    let r = put(a, "/api/v1/mode", r#"{"mode": "defence"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.limiter().mode(), Mode::Defence);

    // Bodies are size-limited.
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024));
    let r = put(a, "/api/v1/model", &huge).await;
    assert_eq!(r.status, 413, "{}", r.body);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_blocks() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "").await;
    let a = admin(&s);
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);

    let r = admin_get(a, "/api/v1/clients?top=5&by=connections").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["by"], "connections");
    let list = v["clients"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["client"], "127.0.0.1");
    assert!(list[0]["current"]["connections"].as_u64().unwrap() >= 1);
    let one = admin_get(a, "/api/v1/clients/127.0.0.1").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["prefix"], "127.0.0.1/32");
    for (path, status, needle) in [
        ("/api/v1/clients/not-an-ip", 400, "not an IP address"),
        ("/api/v1/clients/192.0.2.99", 404, "not tracked"),
        ("/api/v1/clients?by=frag", 400, "unknown metric"),
        ("/api/v1/clients?top=0", 400, "top="),
        ("/api/v1/clients?color=red", 400, "unknown query parameter"),
    ] {
        let r = admin_get(a, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.error().contains(needle), "{path}: {}", r.body);
    }

    let post = |body: &'static str| admin_request(a, "POST", "/api/v1/blocks", None, Some(body));
    let r = post(r#"{"ip": "192.0.2.7", "duration": "10m"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["blocked"]["prefix"], "192.0.2.7/32");
    let r = post(r#"{"ip": "2001:db8::/64"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    for (body, needle) in [
        (r#"{"ip": "1.2.3"}"#, "not an IP address"),
        (r#"{"ip": "1.2.3.4/33"}"#, "longer than the address"),
        (r#"{"ip": "1.2.3.4", "duration": "forever"}"#, "duration"),
        (r#"{"ip": "1.2.3.4", "duration": "0"}"#, "greater than zero"),
        (r#"{"address": "1.2.3.4"}"#, "unknown field"),
    ] {
        let r = post(body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains(needle), "{body}: {}", r.body);
    }
    let v = admin_get(a, "/api/v1/blocks").await.json();
    let prefixes: Vec<&str> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["192.0.2.7/32", "2001:db8::/64"]);
    assert_eq!(v["blocks"][0]["reason"], "manual");

    // A block of the client itself is enforced at accept; removing it lets it back in.
    let r = post(r#"{"ip": "127.0.0.1", "duration": "1m"}"#).await;
    assert_eq!(r.status, 201);
    assert!(refused(p).await, "a blocked client is cut at accept");
    let r = admin_request(a, "DELETE", "/api/v1/blocks/127.0.0.1", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut back = Client::connect(p, Proto::Http1).await;
    assert_eq!(back.send(get(p, "/")).await.status(), 200);

    let del = |path: &'static str| admin_request(a, "DELETE", path, None, None);
    assert_eq!(del("/api/v1/blocks/192.0.2.7").await.status, 200);
    let r = del("/api/v1/blocks/192.0.2.7").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("not on the block list"));
    assert_eq!(del("/api/v1/blocks/2001:db8::%2F64").await.status, 200);
    assert_eq!(del("/api/v1/blocks/nope").await.status, 400);
    assert_eq!(s.limiter().blocks(s.clock().now()).len(), 0);
    s.shutdown().await;
}

/// Whether a connection to `p` is refused or cut before any response.
async fn refused(p: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(p).await else {
        return true;
    };
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(STEP, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_set() {
    let b = backend().await;
    let s = server_with(&[b.addr()], &format!("token = \"{TOKEN}\"\n")).await;
    let a = admin(&s);
    let r = admin_get(a, "/healthz").await;
    assert_eq!(r.status, 401);
    assert!(r.error().contains("token"));
    let r = admin_request(
        a,
        "GET",
        "/api/v1/mode",
        Some("test-token-0123456788"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = admin_request(
        a,
        "PUT",
        "/api/v1/mode",
        None,
        Some(r#"{"mode":"training"}"#),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(s.limiter().mode(), Mode::Disabled);
    let r = admin_request(a, "GET", "/api/v1/mode", Some(TOKEN), None).await;
    assert_eq!(r.status, 200);
    let r = admin_request(a, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(r.status, 200);

    // ctl: without the token the API refuses (exit 1), with it (env) it works.
    let out = ctl(a, None, &["mode"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("token"), "{out:?}");
    let out = ctl(a, Some(TOKEN), &["mode"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "mode = disabled\n"));
    let out = ctl(a, None, &["--token", TOKEN, "mode"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_public_admin_address_without_a_token() {
    let b = backend().await;
    let dir = TempDir::new("admin");
    let file = dir.path().join("zgate.toml");
    std::fs::write(
        &file,
        config_text(&[b.addr()], "[admin]\naddr = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(zgate_bin())
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`admin.token`"), "{err}");
    // With a token it starts, and says where the admin API is.
    std::fs::write(
        &file,
        config_text(
            &[b.addr()],
            &format!("[admin]\naddr = \"0.0.0.0:0\"\ntoken = \"{TOKEN}\"\n"),
        ),
    )
    .unwrap();
    let z = ZgateProcess::spawn(&[OsStr::new("--config"), file.as_os_str()]);
    let admin = z.admin_addr();
    let local = SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let r = admin_request(local, "GET", "/healthz", Some(TOKEN), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(admin_get(local, "/healthz").await.status, 401);
}

/// The value of the sample line `name` (with its labels, exactly) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "").await;
    let a = admin(&s);
    let p = addr(&s);
    {
        let mut c = Client::connect(p, Proto::Http1).await;
        for _ in 0..7 {
            assert_eq!(c.send(get(p, "/")).await.status(), 200);
        }
        for _ in 0..2 {
            assert_eq!(c.send(get(p, "/status/404")).await.status(), 404);
        }
    }
    let r = admin_get(a, "/metrics").await;
    assert_eq!(r.status, 200);
    let m = r.body;
    assert_eq!(sample(&m, "zgate_requests_total"), Some(9.0), "{m}");
    assert_eq!(
        sample(&m, "zgate_responses_total{class=\"2xx\"}"),
        Some(7.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_responses_total{class=\"4xx\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_responses_total{class=\"5xx\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_connections_accepted_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_limiter_mode{mode=\"disabled\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_limiter_mode{mode=\"defence\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_threshold_z{metric=\"cpu\"}"),
        Some(3.0),
        "{m}"
    );
    assert!(
        sample(&m, "zgate_limiter_guard_blocks_total{guard=\"ping\"}").is_some(),
        "{m}"
    );
    // Backends are labelled by their configured address; nothing is labelled by client.
    let by_client = m
        .lines()
        .any(|l| !l.contains("backend=\"") && l.contains("127.0.0.1"));
    assert!(!by_client, "never labelled by client: {m}");
    // Bytes are counted as they move; the last ones may still be on their way (bounded).
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let m = admin_get(a, "/metrics").await.body;
        if sample(&m, "zgate_bytes_out_total").unwrap_or(0.0) > 0.0 {
            assert!(sample(&m, "zgate_bytes_in_total").unwrap() > 0.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown().await;

    // Backend errors, by kind.
    let s = server_with(&[dead_addr()], "").await;
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    for _ in 0..3 {
        assert_eq!(c.send(get(p, "/")).await.status(), 502);
    }
    let m = admin_get(admin(&s), "/metrics").await.body;
    assert_eq!(
        sample(&m, "zgate_backend_errors_total{kind=\"unreachable\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "zgate_responses_total{class=\"5xx\"}"),
        Some(3.0),
        "{m}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "").await;
    let a = admin(&s);
    let p = addr(&s);
    let run = |args: &'static [&'static str]| ctl(a, None, args);

    let out = run(&["mode"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "mode = disabled\n"),
        "{out:?}"
    );
    let out = run(&["mode=defence"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no model"), "{out:?}");
    let out = run(&["mode=attack"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("unknown mode"), "{out:?}");
    let out = run(&["mode=training"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "mode = training\n"),
        "{out:?}"
    );
    assert_eq!(s.limiter().mode(), Mode::Training);

    let out = run(&["-a"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for line in [
        "mode = training",
        "epoch = 1",
        "training_period = 1h",
        "block_duration = 10m",
        "z.cpu = 3",
        "enabled.fragmentation = true",
        "guards.ping_per_sec = 100",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{line}: {}",
            out.stdout
        );
    }
    let out = run(&["z.cpu=4.5"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "z.cpu = 4.5\n"),
        "{out:?}"
    );
    assert_eq!(s.limiter().threshold(Metric::Cpu), 4.5);
    let out = run(&["z.cpu=-1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let out = run(&["z.frag=1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("unknown metric"), "{out:?}");
    let out = run(&["z.cpu=abc"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(s.limiter().threshold(Metric::Cpu), 4.5);
    let out = run(&["enabled.memory=false"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "enabled.memory = false\n")
    );
    let out = run(&["block_duration"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "block_duration = 10m\n")
    );
    let out = run(&["max_clients=5"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("config file"), "{out:?}");
    let out = run(&["frobnicate"]).await;
    assert_eq!(out.code, 2, "{out:?}");

    let out = run(&["block", "192.0.2.9", "5m"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("blocked 192.0.2.9/32 for"),
        "{out:?}"
    );
    let out = run(&["blocks"]).await;
    assert!(
        out.stdout.starts_with("192.0.2.9/32 expires_in="),
        "{out:?}"
    );
    assert!(out.stdout.contains("reason=manual"), "{out:?}");
    let out = run(&["block", "192.0.2.300"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let out = run(&["unblock", "192.0.2.9"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "unblocked 192.0.2.9/32\n")
    );
    let out = run(&["unblock", "192.0.2.9"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let out = run(&["block"]).await;
    assert_eq!(out.code, 2, "{out:?}");

    let out = run(&["model"]).await;
    assert_eq!(out.stdout, "model = none\n", "{out:?}");
    assert_eq!(put(a, "/api/v1/model", MODEL_JSON).await.status, 200);
    let out = run(&["model"]).await;
    assert!(out.stdout.contains("model.epoch = 7\n"), "{out:?}");
    assert!(out.stdout.contains("model.cpu.mean = 2000.0\n"), "{out:?}");
    assert!(
        out.stdout.contains("model.cpu.threshold = 4.5\n"),
        "{out:?}"
    );

    let mut c = Client::connect(p, Proto::Http1).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    let out = run(&["clients", "--top", "3", "--by", "connections"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("127.0.0.1 "), "{out:?}");
    let out = run(&["client", "127.0.0.1"]).await;
    assert!(out.stdout.contains("connections=1"), "{out:?}");
    let out = run(&["clients", "--by", "nope"]).await;
    assert_eq!(out.code, 1, "{out:?}");

    // This server was started without a file: reload is refused, with the reason.
    let out = run(&["reload"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("without a config file"), "{out:?}");
    let out = run(&["health"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"));
    let out = run(&["metrics"]).await;
    assert!(out.stdout.contains("zgate_requests_total 1"), "{out:?}");

    // Nobody there: exit 3.
    let out = ctl(dead_addr(), None, &["mode"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("cannot reach zgate"), "{out:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_can_be_disabled() {
    let b = backend().await;
    let s = server_with(&[b.addr()], "enabled = false\n").await;
    assert_eq!(s.admin_addr(), None);
    s.shutdown().await;
}
