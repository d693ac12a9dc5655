//! `/metrics` read as Prometheus reads it (`prometheus-parse`): every family has `# HELP` and
//! `# TYPE`, families come in the same order on every scrape, `zgate_build_info` and the
//! request-duration histogram are there, each backend has its series (and a dead one shows
//! down), and the byte counters move while a connection is open.

use std::net::SocketAddr;

use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zgate_tests::{
    addr, admin_get, backend, config, config_text, dead_addr, get, proxy, Client, Proto, TempDir,
};

async fn server(backends: &[SocketAddr]) -> (zgate_proxy::Server, TempDir) {
    let dir = TempDir::new("metrics");
    let text = config_text(backends, "[admin]\naddr = \"127.0.0.1:0\"\n");
    (proxy(config(&text, dir.path())).await, dir)
}

async fn scrape_text(s: &zgate_proxy::Server) -> String {
    let r = admin_get(s.admin_addr().expect("admin API"), "/metrics").await;
    assert_eq!(r.status, 200);
    r.body
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text parses")
}

/// The family names in the order of their `# TYPE` lines, each checked to have `# HELP`.
fn families(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_owned();
            assert!(helped.contains(&name), "{name} has TYPE without HELP first");
            names.push(name);
        }
    }
    names
}

/// The value of the counter or gauge `name` with label `key` = `value` (or unlabelled).
fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .and_then(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) => Some(v),
            _ => None,
        })
}

fn histogram_count(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .find_map(|x| match &x.value {
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_typed_and_described_in_a_stable_order() {
    let b = backend().await;
    let (s, _dir) = server(&[b.addr()]).await;
    let p = addr(&s);
    let first = scrape_text(&s).await;
    let mut c = Client::connect(p, Proto::Http1).await;
    for _ in 0..5 {
        assert_eq!(c.send(get(p, "/")).await.status(), 200);
    }
    let second = scrape_text(&s).await;
    let order = families(&first);
    assert!(order.len() > 30, "{first}");
    assert_eq!(
        order,
        families(&second),
        "family order changed between scrapes"
    );

    let m = parse(&second);
    let histograms: Vec<&str> = second
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    for sample in &m.samples {
        // prometheus-parse reads a histogram's `_sum` and `_count` as untyped samples.
        let histogram_part = ["_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.metric.strip_suffix(suffix))
            .find(|f| histograms.contains(f));
        assert!(
            !matches!(sample.value, Value::Untyped(_)) || histogram_part.is_some(),
            "{} has no TYPE",
            sample.metric
        );
        let family = histogram_part.unwrap_or(&sample.metric);
        assert!(m.docs.contains_key(family), "{} has no HELP", sample.metric);
    }
    let info = m
        .samples
        .iter()
        .find(|x| x.metric == "zgate_build_info")
        .expect("zgate_build_info");
    assert_eq!(info.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(info.labels.get("commit").is_some_and(|c| !c.is_empty()));
    assert_eq!(
        histogram_count(&m, "zgate_request_duration_seconds", None),
        Some(5.0),
        "{second}"
    );
    let backend = b.addr().to_string();
    let label = Some(("backend", backend.as_str()));
    assert_eq!(value(&m, "zgate_backend_up", label), Some(1.0));
    assert_eq!(value(&m, "zgate_backend_requests_total", label), Some(5.0));
    assert_eq!(
        histogram_count(&m, "zgate_backend_response_seconds", label),
        Some(5.0)
    );
    // CPU in the model is a ratio of a core, memory in bytes: families of their own.
    assert!(m.docs.contains_key("zgate_model_cpu_mean_ratio"));
    assert!(m.docs.contains_key("zgate_model_memory_mean_bytes"));
    assert_eq!(value(&m, "zgate_model_mean", Some(("metric", "cpu"))), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_shows_down() {
    let b = backend().await;
    let dead = dead_addr();
    let (s, _dir) = server(&[dead, b.addr()]).await;
    let p = addr(&s);
    let mut c = Client::connect(p, Proto::Http1).await;
    // Round-robin: every other request meets the dead backend first; the third refusal in a
    // row (`upstream.fail_after`) takes it out.
    for _ in 0..6 {
        assert_eq!(c.send(get(p, "/")).await.status(), 200);
    }
    let m = parse(&scrape_text(&s).await);
    let dead = dead.to_string();
    let label = Some(("backend", dead.as_str()));
    assert_eq!(value(&m, "zgate_backend_up", label), Some(0.0));
    assert_eq!(value(&m, "zgate_backend_down_total", label), Some(1.0));
    let connect = m
        .samples
        .iter()
        .find(|x| {
            x.metric == "zgate_backend_failures_total"
                && x.labels.get("backend") == Some(&dead)
                && x.labels.get("kind") == Some("connect")
        })
        .expect("connect failures of the dead backend");
    assert!(matches!(connect.value, Value::Counter(v) if v >= 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_counters_move_while_a_connection_is_open() {
    let b = backend().await;
    let (s, _dir) = server(&[b.addr()]).await;
    let mut raw = tokio::net::TcpStream::connect(addr(&s))
        .await
        .expect("connect");
    let head = "GET /bytes?n=100000000 HTTP/1.1\r\nHost: a\r\n\r\n";
    raw.write_all(head.as_bytes()).await.expect("write");
    let mut got = vec![0u8; 1 << 20];
    raw.read_exact(&mut got).await.expect("the first MiB");
    let m = parse(&scrape_text(&s).await);
    assert_eq!(value(&m, "zgate_connections_open", None), Some(1.0));
    let bytes_in = value(&m, "zgate_bytes_in_total", None).unwrap_or(0.0);
    let bytes_out = value(&m, "zgate_bytes_out_total", None).unwrap_or(0.0);
    assert_eq!(bytes_in, head.len() as f64);
    assert!(bytes_out >= (1 << 20) as f64, "{bytes_out}");
    drop(raw);
}
