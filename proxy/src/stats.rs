//! The proxy's own traffic counters: plain relaxed atomics, one `fetch_add` per event, read at
//! scrape time by the `/metrics` endpoint (see `metrics.rs`). Never labelled by client.

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// Counters of everything the proxy served since it started. All counts only grow.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received from clients (every request handled, blocked ones included).
    pub requests: AtomicU64,
    /// Responses sent to clients by status class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Client connections accepted (before the limiter's word).
    pub connections_accepted: AtomicU64,
    /// Client connections refused at accept (blocked client, guard, full table).
    pub connections_refused: AtomicU64,
    /// Bytes read from clients (plaintext, after TLS), counted when a connection ends.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients (plaintext, before TLS), counted when a connection ends.
    pub bytes_out: AtomicU64,
    /// Requests no backend accepted a connection for (502).
    pub backend_unreachable: AtomicU64,
    /// Requests whose backend did not answer in time (504).
    pub backend_timeout: AtomicU64,
    /// Requests whose backend connection failed mid-request (502).
    pub backend_failed: AtomicU64,
    /// Config reloads applied.
    pub reloads: AtomicU64,
    /// Config reloads refused (invalid config).
    pub reload_failures: AtomicU64,
}

/// The status class names, in [`Stats::responses`] order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Stats {
    /// Counts one event on `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a response with `status`.
    #[inline]
    pub fn response(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the bytes of a connection that ended.
    #[inline]
    pub fn connection_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
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
        assert_eq!(Stats::get(&s.responses[1]), 2);
        assert_eq!(Stats::get(&s.responses[4]), 1);
        assert_eq!(Stats::get(&s.responses[0]), 1);
    }
}
