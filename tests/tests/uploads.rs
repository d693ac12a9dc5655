//! A fast legitimate upload after a training that saw none (issue 18, point 8), over real
//! sockets: zgate trains on clients that only GET, then in defence a newcomer uploads 20 MiB
//! at full speed over HTTP/2 and another over HTTP/1.1. What a client sends inside the window
//! zgate granted (hyper's HTTP/2 connection window) is zgate's choice and is not charged to the
//! client's memory; HTTP/1 is charged what hyper buffers, at most twice its read buffer. So
//! neither upload is an outlier. A slow reader still is: `attacks.rs`'s
//! `slow_readers_are_blocked_for_memory`.

use std::net::IpAddr;

use bytes::Bytes;
use zgate_limiter::Mode;
use zgate_tests::lab::{connect_from, ip};
use zgate_tests::{addr, get, pattern, request, Client, Fronted};

/// GET-only clients in training (`127.0.6.1-12`): each a few small and larger GETs, over
/// HTTP/1.1 (odd) or HTTP/2 (even).
async fn train_on_gets(z: &Fronted) {
    let to = addr(z);
    let now = z.clock().now();
    z.limiter().set_mode(Mode::Training, now).expect("training");
    for i in 1..=12u8 {
        let from = ip(6, i);
        let stream = connect_from(from, to).await.expect("connect");
        let mut c = Client::from_stream(stream, i % 2 == 0).await;
        for path in ["/", "/bytes?n=20000", "/", "/bytes?n=4096"] {
            let r = c.send(get(to, path)).await;
            assert_eq!(r.status(), 200, "training GET {path} from {from}");
        }
    }
    let now = z.clock().now();
    z.limiter().set_mode(Mode::Defence, now).expect("defence");
}

async fn upload(z: &Fronted, from: IpAddr, h2: bool) -> u16 {
    let to = addr(z);
    let stream = connect_from(from, to).await.expect("connect");
    let mut c = Client::from_stream(stream, h2).await;
    let body: Bytes = pattern(20 << 20);
    match c.try_send(request("POST", to, "/discard", body)).await {
        Ok(r) => r.status(),
        Err(e) => panic!("the upload from {from} failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_speed_upload_after_a_get_only_training_passes() {
    let z = Fronted::start("").await;
    train_on_gets(&z).await;
    for (from, h2) in [(ip(6, 100), true), (ip(6, 101), false)] {
        let status = upload(&z, from, h2).await;
        let now = z.clock().now();
        let blocked = z.limiter().blocks(now);
        assert!(
            !z.limiter().is_blocked(from, now),
            "a 20 MiB upload over {} was blocked: {blocked:?}",
            if h2 { "HTTP/2" } else { "HTTP/1.1" }
        );
        assert_eq!(status, 200);
    }
}
