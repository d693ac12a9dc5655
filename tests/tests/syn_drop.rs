//! `limits.syn_drop_after`: a blocked client that keeps reconnecting is first reset at accept,
//! then has its SYNs dropped in the kernel (a socket filter on the listener) until its block
//! ends; nobody else is affected.

#![cfg(target_os = "linux")]

use std::time::Duration;

use tokio::io::AsyncReadExt;
use zgate_limiter::IpPrefix;
use zgate_tests::lab::{connect_from, ip};
use zgate_tests::{addr, backend, config, config_text, get, proxy, Client, TempDir};

/// A GET from `from` succeeds.
async fn served(from: std::net::IpAddr, to: std::net::SocketAddr) -> bool {
    let Ok(s) = connect_from(from, to).await else {
        return false;
    };
    let mut c: Client = Client::from_stream(s, false).await;
    matches!(c.try_send(get(to, "/bytes?n=10")).await, Ok(r) if r.status() == 200)
}

#[tokio::test]
async fn a_blocked_client_that_keeps_reconnecting_is_dropped_in_the_kernel_until_unblocked() {
    let b = backend().await;
    let dir = TempDir::new("syndrop");
    let text = config_text(&[b.addr()], "[limits]\nsyn_drop_after = 3\n");
    let server = proxy(config(&text, dir.path())).await;
    let to = addr(&server);
    let (bad, good) = (ip(9, 9), ip(9, 10));
    assert!(served(bad, to).await, "before the block");
    let now = server.clock().now();
    server
        .limiter()
        .block(IpPrefix::host(bad), Duration::from_secs(600), now)
        .expect("block list has room");

    // The first attempts complete the handshake in the kernel and are reset by zgate. The
    // filter is set before the third reset is sent.
    // (On loopback the reset may already be there when the connect is polled.)
    for attempt in 1..=3 {
        let r = match connect_from(bad, to).await {
            Ok(mut s) => s.read(&mut [0u8; 1]).await,
            Err(e) => Err(e),
        };
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "attempt {attempt}: {r:?}"
        );
    }
    // Then its SYNs go unanswered: the connect does not complete (it would in microseconds on
    // loopback, reset or not; the kernel retries a dropped SYN after 1 s, dropped again).
    let r = tokio::time::timeout(Duration::from_millis(1500), connect_from(bad, to)).await;
    assert!(r.is_err(), "connect after the refusals completed: {r:?}");
    // Another address on the same listener is served, before and after.
    assert!(served(good, to).await, "another client");

    // Unblocked: the filter loses the address at its next refresh (once a second).
    assert!(server.limiter().unblock(IpPrefix::host(bad)));
    let mut back = false;
    for _ in 0..20 {
        if let Ok(true) = tokio::time::timeout(Duration::from_millis(500), served(bad, to)).await {
            back = true;
            break;
        }
    }
    assert!(back, "the unblocked client never got through again");
    assert!(served(good, to).await, "another client, after");
}
