//! The end of a request: when the last byte of its response has gone (or the response was
//! dropped: the client left, the connection was cut), its total duration goes into the
//! request-duration histogram and, with `log.access`, one access log line is written.
//!
//! A [`Finish`] rides in the response body ([`super::body::ProxyBody::Response`]) and does its
//! work when dropped, so the duration is the whole exchange (a 105 s download is logged as
//! 105 s), not the time to the response head. zgate's own small responses finish at once.
//!
//! The access line (target `zgate::access`, level `info`) has: `client`, `method`, `target`,
//! `version`, `status`, `duration_ms` (to the last byte, 3 decimals), `bytes_in` (request body
//! bytes forwarded), `bytes_out` (response body bytes), `host`, `user_agent`, `pool` (the pool
//! the request was routed to, `-` when none), `upstream` (the backend's configured address,
//! `-` when none answered), `upstream_ms` (to its response head),
//! and `blocked` (the block's reason, e.g. `metric:cpu`, `-` when none). Text the client sent
//! (target, host, user agent) is escaped ([`crate::escape::Escaped`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, Version};

use super::service::ConnInfo;
use crate::escape::Escaped;

/// A request in progress, finished (measured, logged) when dropped.
pub struct Finish {
    conn: Arc<ConnInfo>,
    started: Instant,
    /// Response body bytes sent on so far.
    bytes_out: u64,
    /// The access line's fields; `None` without `log.access`.
    access: Option<Box<Access>>,
}

/// What the access line says about a request.
pub struct Access {
    /// The request's method.
    pub method: Method,
    /// The request target as the client sent it (path and query).
    pub target: String,
    /// The client's HTTP version.
    pub version: Version,
    /// The `Host` the backend got (or the client's, if none was decided).
    pub host: Option<HeaderValue>,
    /// The client's `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// The response status.
    pub status: u16,
    /// The pool the request was routed to.
    pub pool: Option<String>,
    /// The backend that answered and how long it took to its response head.
    pub upstream: Option<(String, Duration)>,
    /// Request body bytes forwarded, counted by the request body.
    pub bytes_in: Arc<AtomicU64>,
    /// The request's client when a trusted proxy named one; `None`: the connection's.
    pub forwarded_client: Option<IpAddr>,
}

impl Finish {
    /// A request that started at `started` on `conn`; `access` when `log.access` is on.
    pub fn new(conn: Arc<ConnInfo>, started: Instant, access: Option<Box<Access>>) -> Finish {
        Finish {
            conn,
            started,
            bytes_out: 0,
            access,
        }
    }

    /// `n` response body bytes went to the client.
    #[inline]
    pub fn sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// The access fields, to fill in as the request goes.
    pub fn access_mut(&mut self) -> Option<&mut Access> {
        self.access.as_deref_mut()
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        self.conn.shared.stats.request_duration(duration);
        if let Some(a) = self.access.take() {
            let client = a.forwarded_client.unwrap_or(self.conn.peer.ip());
            log_access(client, &self.conn, &a, duration, self.bytes_out);
        }
    }
}

fn log_access(client: IpAddr, conn: &ConnInfo, a: &Access, took: Duration, bytes_out: u64) {
    let text = |v: &Option<HeaderValue>| v.as_ref().map_or(&b"-"[..], |v| v.as_bytes()).to_vec();
    let (host, user_agent) = (text(&a.host), text(&a.user_agent));
    let (upstream, upstream_ms) = match &a.upstream {
        Some((name, waited)) => (name.as_str(), millis(*waited)),
        None => ("-", "-".to_owned()),
    };
    let blocked = conn.meter.block_reason();
    tracing::info!(
        target: "zgate::access",
        client = %client,
        method = %a.method,
        target = %Escaped::str(&a.target),
        version = ?a.version,
        status = a.status,
        duration_ms = %millis(took),
        bytes_in = a.bytes_in.load(Ordering::Relaxed),
        bytes_out,
        host = %Escaped(&host),
        user_agent = %Escaped(&user_agent),
        pool = %a.pool.as_deref().unwrap_or("-"),
        upstream = %upstream,
        upstream_ms = %upstream_ms,
        blocked = %blocked.map_or_else(|| "-".to_owned(), |r| r.to_string()),
    );
}

/// Milliseconds with three decimals (microsecond resolution, no float noise).
fn millis(d: Duration) -> String {
    let us = d.as_micros();
    format!("{}.{:03}", us / 1000, us % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_have_three_decimals() {
        assert_eq!(millis(Duration::from_micros(1_600)), "1.600");
        assert_eq!(millis(Duration::from_secs(105)), "105000.000");
        assert_eq!(millis(Duration::from_nanos(999)), "0.000");
    }
}
