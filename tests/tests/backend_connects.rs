//! Backend connects under Rapid Reset (issue 18, point 5), over real sockets: HTTP/2 streams
//! opened and reset at once, below every cap (h2's and zgate's `rst_stream_per_sec`), used to
//! make zgate open one backend connection per stream, each abandoned half way when its request
//! future was dropped. A connect now completes into the idle pool, so the backend sees a few
//! connections however many streams are reset.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use zgate_tests::lab::{rapid_reset_batch, RawH2};
use zgate_tests::{addr, Fronted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_under_the_caps_keeps_backend_connections_bounded() {
    // The glitch guard (early resets count per client) would block this client: off here, so
    // that what is measured is the backend connects alone (tests/tests/safe_limiter.rs shows
    // the guard stopping the same attack).
    let z = Fronted::start("[limits.guards]\nmax_glitches = 0\n").await;
    let to = addr(&z);
    let mut raw = RawH2::connect(IpAddr::V4(Ipv4Addr::LOCALHOST), to)
        .await
        .expect("connect");
    let authority = to.to_string();
    // 9 HEADERS + RST_STREAM pairs every 50 ms: 180 per second, 720 in all.
    let batches = 80u32;
    for i in 0..batches {
        let first = 2 * (i * 9) + 1;
        raw.send(&rapid_reset_batch(first, 9, &authority))
            .await
            .expect("the proxy keeps a connection under its caps");
        let (ended, _) = raw.drain(Duration::from_millis(50)).await;
        assert!(!ended, "the proxy closed a connection under its caps");
    }
    // Connects still in flight complete (bounded: nothing is asserted on time).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = z.backend.connections();
    println!(
        "{} streams reset: {opened} backend connections",
        batches * 9
    );
    assert!(
        opened <= 32,
        "{} streams reset made zgate open {opened} backend connections",
        batches * 9
    );
    assert!(!z
        .limiter()
        .is_blocked(IpAddr::V4(Ipv4Addr::LOCALHOST), z.clock().now()));
}
