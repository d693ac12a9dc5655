//! HTTP/2 to a backend (`protocol = "http2"`): one connection per backend, shared by every
//! request to it (each an HTTP/2 stream), instead of the HTTP/1 idle pool.
//!
//! - **Sharing**: the backend's [`Shared`] keeps the current connection's `SendRequest`
//!   (cloneable: each request clones it, a few atomic increments, under a lock held only for
//!   that). Requests beyond the backend's `SETTINGS_MAX_CONCURRENT_STREAMS` wait in hyper for
//!   a stream to end.
//! - **Connect** when there is no connection or it is closed: one at a time per backend (the
//!   requests that find a connect under way wait for it), in a task of its own, so a request
//!   dropped meanwhile (a reset client stream) does not abandon the connection being made.
//! - **Reconnect**: a connection the backend closed (GOAWAY, reset, idle close) is noticed as
//!   closed by the next request, which connects anew. A request hyper hands back unsent
//!   (the connection closed before the request was written) is retried once on a fresh
//!   connection; nothing of it was sent, so requests with bodies are safe too.
//! - **No return**: a stream needs nothing given back at the end of its response; the response
//!   carries [`super::PoolReturn::streaming`] only so the client is charged for what its
//!   stream's window can hold while the body streams (metric M).
//! - The URI is absolute (`:scheme` `http` or `https`, `:authority` the request's `Host`,
//!   else the backend's address), as HTTP/2 requires; `Host` is kept (RFC 9113 §8.3.1).
//!
//! A request dropped before its answer resets its stream (RST_STREAM CANCEL) and leaves the
//! connection to the others.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{header, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;

use super::connect::{self, ConnectFailed, Dial};
use super::Outgoing;

/// One backend's shared HTTP/2 connection.
#[derive(Debug)]
pub(super) struct Shared<B> {
    /// The connection in use and its number (so a failed one is replaced once, not by every
    /// request that saw it fail).
    current: Mutex<Option<(SendRequest<B>, u64)>>,
    /// Held while a connect is under way.
    connecting: Arc<tokio::sync::Mutex<u64>>,
}

/// The outcome of a request sent over a shared connection.
pub(super) enum Sent<B> {
    /// The response head, and how long it took from the request handed to the connection.
    Answered(Response<Incoming>, Duration),
    /// No connection could be made: the request comes back unsent.
    Unconnected(Request<B>, ConnectFailed),
    /// The exchange failed after the request was (maybe partly) sent.
    Failed(hyper::Error),
}

impl<B: Outgoing> Shared<B> {
    /// No connection yet.
    pub(super) fn new() -> Self {
        Shared {
            current: Mutex::new(None),
            connecting: Arc::new(tokio::sync::Mutex::new(0)),
        }
    }

    /// Sends `req` to the backend `dial` reaches (`authority` its address, for `:authority`
    /// when the request has no `Host`), connecting within `timeout` when needed.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: Request<B>,
        dial: &Arc<Dial>,
        authority: &Authority,
        timeout: Duration,
    ) -> Sent<B> {
        absolute_form(&mut req, dial.is_tls(), authority);
        let mut retried = false;
        loop {
            let (mut sender, number) = match self.live() {
                Some(s) => s,
                None => match self.connect(dial, timeout).await {
                    Ok(s) => s,
                    Err(e) => return Sent::Unconnected(req, e),
                },
            };
            let sent_at = Instant::now();
            match sender.try_send_request(req).await {
                Ok(response) => return Sent::Answered(response, sent_at.elapsed()),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !retried => {
                        self.forget(number);
                        req = unsent;
                        retried = true;
                    }
                    _ => return Sent::Failed(e.into_error()),
                },
            }
        }
    }

    /// The current connection's sender, if it is open.
    fn live(&self) -> Option<(SendRequest<B>, u64)> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((s, n)) if !s.is_closed() => Some((s.clone(), *n)),
            _ => None,
        }
    }

    /// Drops connection `number` if it is still the current one.
    fn forget(&self, number: u64) {
        let old = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            match &*current {
                Some((_, n)) if *n == number => current.take(),
                _ => None,
            }
        };
        drop(old);
    }

    /// A connection: the one another request just made, or a new one (made in a task of its
    /// own that installs it even if this request is dropped).
    async fn connect(
        self: &Arc<Self>,
        dial: &Arc<Dial>,
        timeout: Duration,
    ) -> Result<(SendRequest<B>, u64), ConnectFailed> {
        let guard = self.connecting.clone().lock_owned().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let shared = self.clone();
        let dial = dial.clone();
        let task = tokio::spawn(async move {
            let mut guard = guard;
            let sender = connect::connect_h2(&dial, timeout).await?;
            *guard += 1;
            let number = *guard;
            let old = shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace((sender.clone(), number));
            drop(old);
            Ok((sender, number))
        });
        task.await
            .unwrap_or_else(|_| Err(ConnectFailed("the connect task ended".to_owned())))
    }
}

/// Makes the request's URI absolute: `scheme` by TLS, the authority from `Host` (else the
/// backend's address), the path and query kept.
fn absolute_form<B>(req: &mut Request<B>, tls: bool, backend: &Authority) {
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| backend.clone());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are all set: this cannot fail; keep the request's URI if so.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_becomes_absolute() {
        let backend: Authority = "10.0.0.5:8443".parse().unwrap();
        let mut req = Request::builder()
            .uri("/a?b=1")
            .header("host", "api.example")
            .body(())
            .unwrap();
        absolute_form(&mut req, true, &backend);
        assert_eq!(req.uri().to_string(), "https://api.example/a?b=1");
        let mut req = Request::builder().uri("/x").body(()).unwrap();
        absolute_form(&mut req, false, &backend);
        assert_eq!(req.uri().to_string(), "http://10.0.0.5:8443/x");
    }
}
