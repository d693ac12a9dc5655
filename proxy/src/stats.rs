//! The proxy's own traffic counters: plain relaxed atomics, one `fetch_add` per event, read at
//! scrape time by the `/metrics` endpoint (`state/exporter.rs`). Never labelled by client.
//!
//! What is counted on every request or every read and write (requests, responses by class,
//! the request-duration histogram, bytes in and out) is sharded per thread, each shard on its
//! own cache line: workers on different cores never write the same line, and a scrape sums the
//! shards. Bytes are counted as they move (every read and write of a client connection), so
//! the counters move while a connection is open. The rest are rare events and stay single
//! atomics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::histogram::{Histogram, Snapshot};

use http::StatusCode;

/// Counters of everything the proxy served since it started. All counts only grow.
#[derive(Debug)]
pub struct Stats {
    /// Requests received and responses sent, per thread: see [`Stats::requests`] and
    /// [`Stats::responses`].
    hot: Box<[CachePadded<HotShard>]>,
    /// Client connections accepted (before the limiter's word).
    pub connections_accepted: AtomicU64,
    /// Client connections refused at accept (blocked client, guard, full table).
    pub connections_refused: AtomicU64,
    /// Requests no backend accepted a connection for (502).
    pub backend_unreachable: AtomicU64,
    /// Requests whose backend did not answer in time (504).
    pub backend_timeout: AtomicU64,
    /// Requests whose backend connection failed mid-request (502).
    pub backend_failed: AtomicU64,
    /// Requests whose client paused its body longer than `timeouts.body_read` (408).
    pub client_body_timeout: AtomicU64,
    /// Requests whose client sent a malformed body (400; not a backend error).
    pub client_body_errors: AtomicU64,
    /// Config reloads applied.
    pub reloads: AtomicU64,
    /// Config reloads refused (invalid config).
    pub reload_failures: AtomicU64,
    /// Connections of `proxy_protocol` listeners closed for their PROXY header, by
    /// [`HeaderFailure`] index.
    pub proxy_protocol_errors: [AtomicU64; HeaderFailure::COUNT],
}

/// Why a connection of a `proxy_protocol` listener was closed before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFailure {
    /// It began with something else than a PROXY header.
    Missing,
    /// The header was malformed, or for a transport zgate does not serve.
    Invalid,
    /// The header was longer than the protocol (v1) or zgate (v2) accepts.
    TooLong,
    /// The header was not complete within `timeouts.protocol_detect`.
    Timeout,
    /// The peer closed (or the socket failed) before the header was complete.
    Closed,
    /// The peer is not in `client_ip.trusted_proxies` (refused at accept).
    Untrusted,
}

impl HeaderFailure {
    /// Number of kinds.
    pub const COUNT: usize = 6;
    /// Every kind, in index order.
    pub const ALL: [HeaderFailure; HeaderFailure::COUNT] = [
        HeaderFailure::Missing,
        HeaderFailure::Invalid,
        HeaderFailure::TooLong,
        HeaderFailure::Timeout,
        HeaderFailure::Closed,
        HeaderFailure::Untrusted,
    ];

    /// The `reason` label: `missing`, `invalid`, `too_long`, `timeout`, `closed`, `untrusted`.
    pub fn name(self) -> &'static str {
        match self {
            HeaderFailure::Missing => "missing",
            HeaderFailure::Invalid => "invalid",
            HeaderFailure::TooLong => "too_long",
            HeaderFailure::Timeout => "timeout",
            HeaderFailure::Closed => "closed",
            HeaderFailure::Untrusted => "untrusted",
        }
    }

    /// Index into [`Stats::proxy_protocol_errors`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The per-request and per-IO counters of one thread.
#[derive(Debug, Default)]
struct HotShard {
    requests: AtomicU64,
    responses: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Requests from their head to the last byte of their response (or its drop).
    duration: Histogram,
}

/// Shards of the per-request counters; threads beyond this share them (still correct).
const HOT_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard, assigned round-robin on first use.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % HOT_SHARDS
    };
}

/// The status class names, in [`Stats::responses`] order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hot: (0..HOT_SHARDS).map(|_| CachePadded::default()).collect(),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            backend_unreachable: AtomicU64::new(0),
            backend_timeout: AtomicU64::new(0),
            backend_failed: AtomicU64::new(0),
            client_body_timeout: AtomicU64::new(0),
            client_body_errors: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            proxy_protocol_errors: Default::default(),
        }
    }
}

impl Stats {
    fn shard(&self) -> &HotShard {
        let i = SHARD.with(|i| *i);
        &self.hot[i % self.hot.len()]
    }

    /// Counts a request received from a client (every request handled, blocked ones
    /// included).
    #[inline]
    pub fn request(&self) {
        self.shard().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.hot
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Responses sent so far in status class `class` (index into [`STATUS_CLASSES`]).
    pub fn responses(&self, class: usize) -> u64 {
        self.hot
            .iter()
            .map(|s| {
                s.responses
                    .get(class)
                    .map_or(0, |c| c.load(Ordering::Relaxed))
            })
            .sum()
    }

    /// Counts one event on `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a response with `status`.
    #[inline]
    pub fn response(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.shard().responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` plaintext bytes read from a client (after TLS).
    #[inline]
    pub fn bytes_read(&self, n: usize) {
        self.shard().bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` plaintext bytes written to a client (before TLS).
    #[inline]
    pub fn bytes_written(&self, n: usize) {
        self.shard()
            .bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Plaintext bytes read from clients so far, open connections included.
    pub fn bytes_in(&self) -> u64 {
        self.hot
            .iter()
            .map(|s| s.bytes_in.load(Ordering::Relaxed))
            .sum()
    }

    /// Plaintext bytes written to clients so far, open connections included.
    pub fn bytes_out(&self) -> u64 {
        self.hot
            .iter()
            .map(|s| s.bytes_out.load(Ordering::Relaxed))
            .sum()
    }

    /// Records a request's total duration: from its head to the last byte of its response.
    #[inline]
    pub fn request_duration(&self, d: Duration) {
        self.shard().duration.observe(d);
    }

    /// The request-duration histogram, all threads summed.
    pub fn request_durations(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for shard in self.hot.iter() {
            shard.duration.add_to(&mut s);
        }
        s
    }

    /// Counts a connection closed for its PROXY header.
    pub fn proxy_protocol_error(&self, why: HeaderFailure) {
        self.proxy_protocol_errors[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_count_by_class() {
        let s = Stats::default();
        s.response(StatusCode::OK);
        s.response(StatusCode::NO_CONTENT);
        s.response(StatusCode::BAD_GATEWAY);
        s.response(StatusCode::CONTINUE);
        assert_eq!(s.responses(1), 2);
        assert_eq!(s.responses(4), 1);
        assert_eq!(s.responses(0), 1);
    }

    #[test]
    fn header_failures_index_their_counters() {
        for (i, f) in HeaderFailure::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        let s = Stats::default();
        s.proxy_protocol_error(HeaderFailure::Untrusted);
        assert_eq!(Stats::get(&s.proxy_protocol_errors[5]), 1);
    }

    #[test]
    fn shards_of_all_threads_add_up() {
        let s = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.request();
                        s.response(StatusCode::OK);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.requests(), 20_000);
        assert_eq!(s.responses(1), 20_000);
    }
}
