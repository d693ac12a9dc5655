//! Entry points for the `cargo fuzz` targets in `fuzz/` (feature `fuzzing`, off by default):
//! each takes the fuzzer's bytes and runs them through the code that parses what attackers
//! (or an admin's tools) send, with the same types the server uses. Not for any other use.
//!
//! - `h2_tap`: the HTTP/2 read and write taps (`conn/tap/`) with a real meter and limiter, in
//!   pieces of fuzzer-chosen sizes;
//! - `http1.rs`: one HTTP/1 connection through the proxy service over in-memory IO, to a
//!   backend in the same runtime;
//! - `admin.rs`: a JSON body to one of the admin API's write endpoints, over in-memory IO;
//! - `proxy_header.rs`: the PROXY protocol header read off a connection in pieces
//!   (`listen/proxied.rs` over `listen/proxy_header.rs`);
//! - `backend_answer`: a backend's HTTP/1.1 answer, head and body, as zgate's HTTP/1 client
//!   decodes it (`upstream/wire.rs`), in reads of fuzzer-chosen size against one read;
//! - `world.rs`: what `http1.rs` and `admin.rs` build once per process (runtime, config) and
//!   what they make fresh for every input (the limiter).
//!
//! The config parser has no entry here: its target calls `zgate_config::Config::parse`.

mod admin;
mod http1;
mod proxy_header;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use zgate_limiter::{Limiter, LimiterConfig};

use crate::account::meter::Meter;
use crate::clock::Clock;
use crate::conn::tap::{Http2WriteTap, ReadTap};
use crate::limits;

pub use admin::admin_json;
pub use http1::http1_connection;
pub use proxy_header::proxy_header;

pub use crate::upstream::fuzz_answer as backend_answer;

/// A client address for the fuzzed connections.
const PEER: &str = "192.0.2.7:40000";

/// Feeds `data` to an HTTP/2 read tap (after the client preface) and to a write tap, in pieces
/// whose sizes come from `data`'s first bytes.
pub fn h2_tap(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let meter = meter();
    let mut read = ReadTap::http2();
    read.on_read(crate::H2_PREFACE, &meter);
    let mut write = Http2WriteTap::new();
    let piece = usize::from(split % 64) + 1;
    for chunk in data.chunks(piece) {
        read.on_read(chunk, &meter);
        write.on_write(chunk, &meter);
    }
}

/// A meter for one connection of [`PEER`] on a limiter built once per process (the default
/// config; its guards are per connection, so runs do not leak into each other).
fn meter() -> Arc<Meter> {
    static LIMITER: OnceLock<(Limiter, Clock)> = OnceLock::new();
    let (limiter, clock) = LIMITER.get_or_init(|| {
        let clock = Clock::new();
        let Ok(limiter) = Limiter::new(LimiterConfig::default(), None, clock.now()) else {
            unreachable!("the default limiter config is valid")
        };
        (limiter, clock)
    });
    let peer: SocketAddr = PEER
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0; 4], 0)));
    // A blocked client (a guard fired in an earlier run) is unblocked: each run starts clean.
    limiter.unblock(zgate_limiter::IpPrefix::host(peer.ip()));
    let (conn, _) = limiter.connection_opened(peer.ip(), clock.now());
    let Some(conn) = conn else {
        unreachable!("an unblocked client with no connection is admitted")
    };
    let Ok((_, proxy_limits)) = limits::from_config(&Default::default()) else {
        unreachable!("the default limits are valid")
    };
    Meter::new(conn, *clock, peer, proxy_limits, Arc::default())
}
