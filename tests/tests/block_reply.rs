//! A client blocked while its requests wait on the backend, with `block_action = "reply"`: each
//! request in flight is answered `block_status` at once, over HTTP/1.1 and HTTP/2, rather than
//! waiting for the backend until the connection's grace ends and it is cut. The block comes
//! from outside the connection (the admin's block list), so the connection learns of it at its
//! watchdog's tick, as for a block through another connection of the same client.

use std::net::IpAddr;
use std::time::Duration;

use zgate_limiter::{IpPrefix, Metric};
use zgate_tests::lab::{connect_from, ip};
use zgate_tests::{addr, get, wait_until, Client, Fronted};

/// Reply 429 to blocked clients; training, so that the limiter counts requests in flight; a
/// watchdog tick every 500 ms (a quarter of `header_read`).
const REPLY: &str = "[limits]\nmode = \"training\"\ntraining_period = \"1h\"\n\
                     block_action = \"reply\"\nblock_status = 429\n\
                     [timeouts]\nheader_read = \"2s\"\n";

/// Requests of `ip` in flight, as the limiter sees them.
fn in_flight(z: &Fronted, ip: IpAddr) -> u64 {
    let now = z.clock().now();
    z.limiter()
        .client(ip, now)
        .map_or(0, |c| c.current[Metric::Requests.index()])
}

/// Sends a request the backend answers after 20 s from `from`, blocks `from` once the request
/// is in flight, and returns what the client got.
async fn blocked_while_waiting(z: &Fronted, from: IpAddr, h2: bool) -> u16 {
    let to = addr(z);
    let stream = connect_from(from, to).await.expect("connect");
    let mut c = Client::from_stream(stream, h2).await;
    let block = async {
        wait_until("the request never got in flight", || in_flight(z, from) > 0).await;
        let now = z.clock().now();
        z.limiter()
            .block(IpPrefix::host(from), Duration::from_secs(600), now)
            .expect("block");
    };
    let (answer, ()) = tokio::join!(c.try_send(get(to, "/slow?ms=20000")), block);
    match answer {
        Ok(r) => r.status(),
        Err(e) => panic!("the request in flight was cut instead of answered: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_the_backend_gets_the_block_reply_over_http1() {
    let z = Fronted::start(REPLY).await;
    assert_eq!(blocked_while_waiting(&z, ip(9, 1), false).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_the_backend_gets_the_block_reply_over_http2() {
    let z = Fronted::start(REPLY).await;
    assert_eq!(blocked_while_waiting(&z, ip(9, 2), true).await, 429);
}
