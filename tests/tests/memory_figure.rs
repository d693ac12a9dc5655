//! The limiter's memory figure for a slow reader against the RSS growth it causes (issue 18,
//! point 6), with zgate as its own process: one client (`127.0.7.1`) opens 200 HTTP/1.1
//! connections, asks each for a large response and reads none of it. zgate then holds, for
//! that client, response bytes it cannot write, what hyper holds to write them, and each
//! backend connection's buffers. The test prints zgate's RSS growth and the client's memory
//! as the limiter counts it, and asserts they agree within 25%.
//!
//! Run it alone (it measures a process's memory):
//! `cargo test -p zgate-tests --test memory_figure -- --nocapture`

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use zgate_tests::lab::{connect_from, ip};
use zgate_tests::{admin_get, backend, config_text, TempDir, ZgateProcess};

/// Slow-reading connections of the client.
const CONNECTIONS: usize = 200;

/// The process's current resident memory (VmRSS), bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc status")
}

async fn client_memory(admin: SocketAddr, client: &str) -> u64 {
    let r = admin_get(admin, &format!("/api/v1/clients/{client}")).await;
    r.json()["current"]["memory"]
        .as_u64()
        .unwrap_or_else(|| panic!("no current memory in {:?}", r.json()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_readers_memory_figure_is_within_a_quarter_of_the_rss_it_costs() {
    let b = backend().await;
    let dir = TempDir::new("memory-figure");
    let text = config_text(
        &[b.addr()],
        "[admin]\naddr = \"127.0.0.1:0\"\n[limits]\nmode = \"training\"\n",
    );
    let z = ZgateProcess::start(&text, &dir);
    let admin = z.admin_addr();
    let pid = z.child.id();
    // Warm up: one read response, so the allocator and runtime are past their first growth.
    let client = ip(7, 1);
    let mut warm = connect_from(ip(7, 2), z.addr).await.expect("connect");
    warm.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("warm-up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = connect_from(client, z.addr).await.expect("connect");
        let req = "GET /bytes?n=268435456 HTTP/1.1\r\nHost: x\r\n\r\n";
        s.write_all(req.as_bytes()).await.expect("request");
        held.push(s);
    }
    // Let every buffer fill (bounded; nothing is asserted on time).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss(pid);
    let counted = client_memory(admin, "127.0.7.1").await;
    let growth = after.saturating_sub(before);
    let ratio = counted as f64 / growth.max(1) as f64;
    println!(
        "slow reader, {CONNECTIONS} connections: RSS {:.1} -> {:.1} MiB (growth {:.1} MiB), \
         limiter counts {:.1} MiB, ratio {ratio:.2}",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        counted as f64 / 1048576.0,
    );
    assert!(
        (0.75..=1.25).contains(&ratio),
        "the limiter counts {counted} bytes for a slow reader whose RSS growth is {growth}"
    );
    drop(held);
}
