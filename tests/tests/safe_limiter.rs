//! A limiter that attackers cannot turn against everyone (issue 18, the limiter's half): a
//! poisoned training, metrics training never saw, a table full of blocked clients, Rapid Reset
//! below h2's own limits, and oversized header blocks. Real sockets, the attack lab's proxy.
//!
//! Scenarios run one at a time (a process-wide lock), like the attack lab's.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use zgate_limiter::{Guard, Metric, Mode, Reason};
use zgate_tests::lab::*;
use zgate_tests::{get, noise, request, Client};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One GET over HTTP/1.1 from `from`; the status, or 0 when the connection failed or was cut.
async fn get_from(from: IpAddr, to: std::net::SocketAddr) -> u16 {
    let Ok(stream) = connect_from(from, to).await else {
        return 0;
    };
    let mut c = Client::from_stream(stream, false).await;
    match c.try_send(get(to, "/")).await {
        Ok(r) => r.status(),
        Err(_) => 0,
    }
}

/// The i-th address of a flood: 127.20.0.0/14, one per client.
fn flood_ip(i: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0x7f14_0000 + i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_training_then_a_clean_defence_and_attacks_still_blocked() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    lab.set_mode(Mode::Training);
    // 3000 addresses with one connection and one GET each, during the population's training.
    let to = lab.addr;
    let flood = async move {
        for batch in 0..60u32 {
            let gets: Vec<_> = (0..50)
                .map(|k| async move {
                    assert_eq!(get_from(flood_ip(batch * 50 + k), to).await, 200);
                })
                .collect();
            futures_join(gets).await;
        }
    };
    let (out, ()) = tokio::join!(lab.rounds(4), flood);
    out.assert_clean("training");
    lab.set_mode(Mode::Defence);
    let model = lab.server.limiter().model().expect("a model");
    let conns = model.get(Metric::Connections);
    assert!(conns.n > 3000, "{}", conns.n);
    for round in 0..3 {
        lab.rounds(1)
            .await
            .assert_clean(&format!("defence round {round}"));
    }
    assert!(
        lab.blocks().is_empty(),
        "false positives: {:?}",
        lab.blocks()
    );
    // A connection flood from one address is still blocked.
    let attacker = ip(9, 1);
    let mut held = Vec::new();
    for _ in 0..200 {
        match connect_from(attacker, to).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        if lab.is_blocked(attacker) {
            break;
        }
    }
    let entry = lab
        .block_of(attacker)
        .expect("the connection flood is blocked");
    assert!(
        matches!(
            entry.reason,
            Some(Reason::Metric(Metric::Connections | Metric::Memory))
        ),
        "{entry:?}"
    );
}

/// Trains on GETs only (12 clients, HTTP/1.1 and HTTP/2), then forces defence: the
/// non-idempotent request and fragmentation metrics are thin.
async fn get_only_training() -> Lab {
    let lab = Lab::start("").await;
    lab.set_mode(Mode::Training);
    let to = lab.addr;
    for i in 1..=12u8 {
        let stream = connect_from(ip(1, i), to).await.expect("connect");
        let mut c = Client::from_stream(stream, i % 2 == 0).await;
        for _ in 0..3 {
            assert_eq!(c.send(get(to, "/")).await.status(), 200);
        }
    }
    // Forced: the thin metrics fall back to their static caps.
    lab.set_mode(Mode::Defence);
    let model = lab.server.limiter().model().expect("a model");
    let thin: Vec<Metric> = model.thin_metrics().map(|(m, _)| m).collect();
    assert!(thin.contains(&Metric::Fragmentation), "{thin:?}");
    lab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_only_training_still_stops_a_one_byte_frame_post_and_passes_uploads() {
    let _s = SERIAL.lock().await;
    let lab = get_only_training().await;
    let to = lab.addr;
    let authority = to.to_string();
    let attacker = ip(9, 6);
    let mut raw = RawH2::connect(attacker, to).await.expect("connect");
    let mut cut = false;
    let post = frame(
        h2::HEADERS,
        h2::END_HEADERS,
        1,
        &hpack_request(true, &authority, true),
    );
    if raw.send(&post).await.is_ok() {
        for _ in 0..3000 {
            if raw.send(&frame(h2::DATA, 0, 1, b"x")).await.is_err() {
                cut = true;
                break;
            }
            if lab.is_blocked(attacker) {
                break;
            }
        }
    }
    let (ended, _) = raw.drain(Duration::from_secs(5)).await;
    assert!(cut || ended, "the one-byte-frame POST was not cut");
    let entry = lab.block_of(attacker).expect("blocked");
    assert_eq!(entry.reason, Some(Reason::Metric(Metric::Fragmentation)));
    // A normal 20 MiB upload, at full speed, over HTTP/2 and HTTP/1.1, passes.
    let len = 20 << 20;
    for (i, h2) in [(1u8, true), (2, false)] {
        let stream = connect_from(ip(4, i), to).await.expect("connect");
        let mut c = Client::from_stream(stream, h2).await;
        let r = c.send(request("POST", to, "/discard", noise(len, 7))).await;
        assert_eq!(r.status(), 200, "h2 {h2}: {:?}", lab.block_of(ip(4, i)));
        assert_eq!(r.body, Bytes::from(format!("{len}\n")), "h2 {h2}");
    }
    assert!(lab.block_of(ip(4, 1)).is_none() && lab.block_of(ip(4, 2)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_full_of_blocked_clients_still_serves_a_newcomer() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start_with("max_clients = 300", "").await;
    let to = lab.addr;
    // 300 addresses, each blocked by a PING flood (110 PINGs, the cap is 100 per second).
    for i in 0..300u32 {
        let from = flood_ip(i);
        let mut raw = RawH2::connect(from, to).await.expect("connect");
        let pings: Vec<u8> = (0..110u64)
            .flat_map(|k| frame(h2::PING, 0, 0, &k.to_be_bytes()))
            .collect();
        let _ = raw.send(&pings).await;
        let _ = raw.drain(Duration::from_secs(5)).await;
        assert!(lab.is_blocked(from), "{from} not blocked");
    }
    assert_eq!(lab.server.limiter().counters().clients, 300);
    // A newcomer is served; a blocked client is still refused.
    assert_eq!(get_from(ip(5, 1), to).await, 200);
    assert_eq!(get_from(flood_ip(7), to).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_below_h2_limits_is_blocked() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    let to = lab.addr;
    let authority = to.to_string();
    let attacker = ip(9, 4);
    // 10 reset streams per connection (h2 tolerates 20 pending, zgate's RST_STREAM cap is 200
    // per second), then a new connection: 30 connections at most.
    for _ in 0..30 {
        let Ok(mut raw) = RawH2::connect(attacker, to).await else {
            break;
        };
        if raw
            .send(&rapid_reset_batch(1, 10, &authority))
            .await
            .is_err()
        {
            break;
        }
        let _ = raw.drain(Duration::from_millis(200)).await;
        if lab.is_blocked(attacker) {
            break;
        }
    }
    let entry = lab
        .block_of(attacker)
        .expect("Rapid Reset below h2's limits is blocked");
    assert_eq!(entry.reason, Some(Reason::Guard(Guard::Glitches)));
}

/// An HTTP/2 request whose header block is `size` bytes of one literal header, in HEADERS
/// and CONTINUATION frames of 16 KiB.
fn oversized_request(authority: &str, stream: u32, size: usize) -> Vec<u8> {
    let mut block = hpack_request(false, authority, true);
    // Literal without indexing, new name "cookie", value of `size` bytes (7-bit prefix).
    block.extend_from_slice(&[0x00, 6]);
    block.extend_from_slice(b"cookie");
    block.push(0x7f);
    let mut rest = size - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend(std::iter::repeat_n(b'c', size));
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags =
            if last { h2::END_HEADERS } else { 0 } | if i == 0 { h2::END_STREAM } else { 0 };
        let kind = if i == 0 {
            h2::HEADERS
        } else {
            h2::CONTINUATION
        };
        out.extend(frame(kind, flags, stream, c));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_oversized_header_block_costs_the_request_and_a_flood_blocks() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    let to = lab.addr;
    let authority = to.to_string();
    // Over 4x the 64 KiB header list limit: h2 ends the connection (GOAWAY ENHANCE_YOUR_CALM;
    // the request, above the GOAWAY's last stream, is refused).
    let browser = ip(6, 1);
    let mut raw = RawH2::connect(browser, to).await.expect("connect");
    raw.send(&oversized_request(&authority, 1, 300 * 1024))
        .await
        .expect("sent");
    let (ended, _) = raw.drain(Duration::from_secs(5)).await;
    assert!(ended, "h2 did not end the connection");
    assert!(!lab.is_blocked(browser), "{:?}", lab.block_of(browser));
    assert_eq!(get_from(browser, to).await, 200);
    // A flood of them blocks.
    let attacker = ip(9, 7);
    for _ in 0..30 {
        let Ok(mut raw) = RawH2::connect(attacker, to).await else {
            break;
        };
        let _ = raw
            .send(&oversized_request(&authority, 1, 300 * 1024))
            .await;
        let _ = raw.drain(Duration::from_secs(2)).await;
        if lab.is_blocked(attacker) {
            break;
        }
    }
    let entry = lab.block_of(attacker).expect("the flood is blocked");
    assert_eq!(entry.reason, Some(Reason::Guard(Guard::Glitches)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_bad_requests_are_glitches() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    let to = lab.addr;
    let bad = |from: IpAddr| async move {
        let Ok(mut s) = connect_from(from, to).await else {
            return;
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            .await;
        let mut buf = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    };
    // One malformed request costs that request only.
    let browser = ip(6, 2);
    bad(browser).await;
    assert!(!lab.is_blocked(browser), "{:?}", lab.block_of(browser));
    assert_eq!(get_from(browser, to).await, 200);
    // A stream of them (each a 400 from hyper) blocks.
    let attacker = ip(9, 8);
    for _ in 0..20 {
        bad(attacker).await;
        if lab.is_blocked(attacker) {
            break;
        }
    }
    let entry = lab.block_of(attacker).expect("blocked");
    assert_eq!(entry.reason, Some(Reason::Guard(Guard::Glitches)));
}
