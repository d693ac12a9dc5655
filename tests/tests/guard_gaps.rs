//! Guard gaps (issue 18, point 4), over real sockets: floods of HTTP/2 frames that carry no
//! request (WINDOW_UPDATE, PRIORITY, unknown types) are capped per connection and block the
//! client; a connection that only PINGs is closed at `timeouts.idle`; a request body sent at a
//! byte per half second, each pause well under `timeouts.body_read`, is answered 408 by
//! `timeouts.body_min_rate`. The guards act in every mode: no training is needed.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zgate_limiter::{Guard, Reason};
use zgate_tests::lab::{frame, RawH2};
use zgate_tests::{addr, Fronted, STEP};

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The reason `ip` is blocked for, if it is.
fn block_reason(z: &Fronted, ip: IpAddr) -> Option<Reason> {
    let now = z.clock().now();
    z.limiter()
        .blocks(now)
        .into_iter()
        .find(|b| b.prefix.contains(ip))
        .and_then(|b| b.reason)
}

/// Sends `batch` (50 frames) up to 400 times on one HTTP/2 connection, reading what comes
/// back; whether the proxy cut the connection.
async fn flood(z: &Fronted, one: impl Fn(u32) -> Vec<u8>) -> bool {
    let mut raw = RawH2::connect(CLIENT, addr(z)).await.expect("connect");
    for i in 0..400u32 {
        let batch: Vec<u8> = (0..50).flat_map(|k| one(i * 50 + k)).collect();
        if raw.send(&batch).await.is_err() {
            return true;
        }
        if raw.drain(Duration::from_millis(1)).await.0 {
            return true;
        }
    }
    raw.drain(Duration::from_secs(5)).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_flood_is_blocked() {
    let z = Fronted::start("").await;
    // Connection-level WINDOW_UPDATEs of 1 byte: valid, each one costs a parse and a wake-up.
    let cut = flood(&z, |_| frame(0x8, 0, 0, &1u32.to_be_bytes())).await;
    assert!(cut, "a WINDOW_UPDATE flood kept its connection");
    assert_eq!(
        block_reason(&z, CLIENT),
        Some(Reason::Guard(Guard::WindowUpdate))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_flood_is_blocked() {
    let z = Fronted::start("").await;
    // PRIORITY on ever new idle streams (allowed, RFC 9113 §5.3.2): depends on 0, weight 16.
    let cut = flood(&z, |i| frame(0x2, 0, 2 * i + 1, &[0, 0, 0, 0, 15])).await;
    assert!(cut, "a PRIORITY flood kept its connection");
    assert_eq!(
        block_reason(&z, CLIENT),
        Some(Reason::Guard(Guard::Priority))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_flood_is_blocked() {
    let z = Fronted::start("").await;
    // Frames of an undefined type must be ignored by the receiver: free to send, not to parse.
    let cut = flood(&z, |_| frame(0xfa, 0, 0, b"grease")).await;
    assert!(cut, "an unknown-frame flood kept its connection");
    assert_eq!(
        block_reason(&z, CLIENT),
        Some(Reason::Guard(Guard::UnknownFrame))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_only_pings_is_closed_at_idle() {
    let z = Fronted::start("[timeouts]\nidle = \"1s\"\n").await;
    let mut raw = RawH2::connect(CLIENT, addr(&z)).await.expect("connect");
    // A PING every 250 ms for up to 8 s: 4 per idle period, none of it a request.
    let mut closed = false;
    for _ in 0..32 {
        if raw.send(&frame(0x6, 0, 0, &[7; 8])).await.is_err() {
            closed = true;
            break;
        }
        if raw.drain(Duration::from_millis(250)).await.0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "PINGs kept an idle connection open");
    assert_eq!(
        block_reason(&z, CLIENT),
        None,
        "closing idle is not a block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_at_two_bytes_per_second_is_answered_408() {
    // Every pause (500 ms) is far below body_read (2 s); 100 B/s earns 10 ms per byte, so the
    // 2 s grace is spent after about four bytes.
    let z = Fronted::start("[timeouts]\nbody_read = \"2s\"\nbody_min_rate = 100\n").await;
    let mut s = TcpStream::connect(addr(&z)).await.expect("connect");
    let head = "POST /discard HTTP/1.1\r\nHost: zgate.test\r\nContent-Length: 40\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..40 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
        }
    }
    if answer.is_empty() {
        if let Ok(Ok(n)) = tokio::time::timeout(STEP, s.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "a 2 B/s body got: {text:?}"
    );
}
