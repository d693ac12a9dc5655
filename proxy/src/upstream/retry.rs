//! Which requests are sent again after a failure, and to which backend.
//!
//! - A request that **never left zgate** (the connect failed, or a fresh connection failed
//!   before writing it) is intact, whatever its method and body: it moves on to the next
//!   backend, each backend tried once.
//! - A request that **was sent** and failed before any response head (reset, closed,
//!   malformed answer; not a timeout, and not a failure of the client's own body) may have
//!   reached the application. It is sent again, to another backend, only if it is idempotent
//!   (RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) and has no body,
//!   at most `upstream.retries` times. A request with a body never is: its bytes are gone.
//!
//! A pooled connection the backend closed while it was idle hands the request back unsent;
//! that is retried on a fresh connection to the same backend (`mod.rs`), not counted here.

use http::{HeaderMap, Method, Request, Uri, Version};

use super::Outgoing;

/// A copy of a request to send again: the head, and a fresh empty body.
pub(super) struct Replay<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: B,
}

impl<B: Outgoing> Replay<B> {
    /// A copy of `req` if it may be sent again after it was sent: idempotent, no body.
    pub(super) fn of(req: &Request<B>) -> Option<Self> {
        if !idempotent(req.method()) {
            return None;
        }
        let body = req.body().replay()?;
        Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        })
    }

    /// The request again.
    pub(super) fn into_request(self) -> Request<B> {
        let mut req = Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// RFC 9110's idempotent methods.
pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The backends a request has been sent to or failed on (the first 64 by index; a request
/// is also bounded by its number of attempts).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tried {
    mask: u64,
    count: usize,
}

impl Tried {
    /// Backend `i` failed this request.
    pub(super) fn add(&mut self, i: usize) {
        if let Some(bit) = 1u64.checked_shl(i as u32).filter(|_| i < 64) {
            self.mask |= bit;
        }
        self.count += 1;
    }

    /// Whether backend `i` has failed this request.
    pub(super) fn has(&self, i: usize) -> bool {
        i < 64 && self.mask & (1 << i) != 0
    }

    /// How many attempts failed.
    pub(super) fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_are_rfc_9110s() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn tried_marks_indexes_and_counts_every_attempt() {
        let mut t = Tried::default();
        t.add(0);
        t.add(63);
        t.add(64);
        assert!(t.has(0) && t.has(63) && !t.has(1) && !t.has(64));
        assert_eq!(t.count(), 3);
    }
}
