//! The backends: round-robin choice, skipping of backends that refuse connections, and a small
//! pool of HTTP/1.1 connections per backend built directly on `hyper::client::conn::http1`.
//!
//! - `mod.rs`: [`Upstream`], the backends and sending a request;
//! - `pool.rs`: one backend's idle connections and the [`PoolReturn`] guard;
//! - `connect.rs`: a backend connect in a task of its own, whose connection goes to the pool
//!   if its request is gone;
//! - `exchange.rs`: a request handed to a connection until its answer; if the request is
//!   dropped first, the answer is read and discarded in a task and the connection pooled;
//! - `health.rs`: [`BackendStats`], one backend's counters and up/down state (logged once per
//!   change);
//! - `tests.rs`: the pool's tests against the demo backend;
//! - `progress.rs`: what the wait for an answer knows of the request body being sent
//!   ([`Outgoing`], [`UploadProgress`]), so this room never names the body type.
//!
//! # Design
//!
//! Each backend has an [`IdlePool`]: per worker thread, a `Mutex<VecDeque>` of idle
//! `SendRequest`s with the instant each became idle, newest at the back (a worker only sees
//! the connections its own tasks drive). The lock is held only to push or pop.
//!
//! - **Checkout**: pop the newest idle sender (LIFO keeps few connections warm and lets old
//!   ones age out at the front), preferring a ready one among the newest four (the newest may
//!   still be finishing its previous exchange on another thread). One idle longer than
//!   `upstream.pool_idle_timeout` means all older ones are too: they are dropped (closing
//!   them). A closed sender is dropped
//!   and the next one tried. A sender that is open but not ready yet (its connection task has
//!   not looped back to idle after the previous response) is awaited for at most
//!   [`READY_WAIT`], then dropped.
//! - **Connect** when no idle sender is usable (`connect.rs`): in a task of its own, so a
//!   request dropped half way (a reset stream) leaves its connection to the idle pool instead
//!   of abandoning it: `TcpStream::connect` (resolution included) under
//!   `timeouts.backend_connect`, `TCP_NODELAY`, an HTTP/1 handshake, and the connection
//!   future spawned as its own task (it ends when the connection closes or its sender is
//!   dropped while idle). A failed connect marks the backend down for `upstream.down_for`;
//!   since nothing of the request was sent, it is retried on the next backend that is up
//!   (whatever its body), until every backend was tried.
//! - **Send** with `try_send_request` (`exchange.rs`: a request dropped before its answer,
//!   as a reset stream is, leaves the exchange to finish in a task, and the connection to the
//!   pool; a checkout dropped while it waits for a ready sender gives the sender back) and the origin-form URI (absolute URIs of HTTP/2
//!   clients are cut to their path and query). A pooled connection can have been closed by
//!   the backend while idle: when hyper hands the request back unsent, it is retried once on
//!   a fresh connection, so requests with bodies are safe too.
//! - **Return**: an HTTP/1 sender is reusable only after its response body was read to the
//!   end. A response whose body is already complete with its head gives its sender back at
//!   once; otherwise [`Upstream::send_pooled`] returns a [`PoolReturn`] guard that the response
//!   body ((the http room's `ProxyBody::Response`)) calls [`PoolReturn::release`] on when the
//!   body reaches its end. A body dropped before its end drops the guard instead, and with it
//!   the connection (hyper cannot reuse a half-read response).
//! - `timeouts.backend_response` bounds checkout, connect and the wait for the response head,
//!   and, while a request body is sent, each time the backend keeps zgate waiting (it takes no
//!   piece of the body for that long while the client has one ready); the client's pauses are
//!   `timeouts.body_read`'s.
//!
//! No per-request allocation beyond hyper's own (its request channel and response body), and
//! a request with a body's `Upload`.

mod connect;
mod exchange;
mod health;
mod pool;
mod progress;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use zgate_config::Config;

use connect::{ConnectFailed, Target};
pub use connect::{BACKEND_BUFFER, BACKEND_BUFFER_HELD};
use exchange::Exchange;
pub use health::BackendStats;
use pool::IdlePool;
pub use pool::{PoolReturn, READY_WAIT};
pub use progress::{Outgoing, UploadProgress};

/// Why a request got no response from any backend.
#[derive(Debug)]
pub enum UpstreamError {
    /// No backend accepted a connection (refused, unreachable, or connect timeout): 502.
    Unreachable,
    /// The backend did not answer within `timeouts.backend_response`: 504.
    Timeout,
    /// The backend connection failed mid-request (reset, malformed response): 502.
    Failed(hyper::Error),
}

/// Why the backends of a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendsError {
    /// `backend[index].addr` is not a `host:port` authority.
    BadAddr {
        /// The backend's position in the config.
        index: usize,
        /// The address as written.
        addr: String,
        /// The parser's reason.
        reason: String,
    },
    /// The config has no backend.
    NoBackend,
}

impl std::fmt::Display for BackendsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendsError::BadAddr {
                index,
                addr,
                reason,
            } => write!(f, "`backend[{index}].addr`: {addr:?}: {reason}"),
            BackendsError::NoBackend => f.write_str("no backend configured"),
        }
    }
}

impl std::error::Error for BackendsError {}

/// The pool of backends, shared by every connection.
#[derive(Debug)]
pub struct Upstream<B> {
    backends: Box<[BackendState<B>]>,
    next: AtomicUsize,
    clock: Instant,
    down_for: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
}

#[derive(Debug)]
struct BackendState<B> {
    authority: Authority,
    target: Arc<Target>,
    /// Nanoseconds since `Upstream::clock` until which the backend is skipped; 0 when up.
    down_until: AtomicU64,
    idle: Arc<IdlePool<B>>,
    /// Counters and up/down state, kept across reloads for the same address.
    stats: Arc<BackendStats>,
}

/// A backend's response head, with where it came from.
pub struct Answered<B> {
    /// The response head (and its body, to stream).
    pub response: Response<Incoming>,
    /// Gives the connection back to the pool at the end of the body; `None` when given back.
    pub pool: Option<PoolReturn<B>>,
    /// Index of the backend that answered (see [`Upstream::backend_name`]).
    pub backend: usize,
    /// From the request handed to that backend to its response head.
    pub waited: std::time::Duration,
}

impl<B: Outgoing> Upstream<B> {
    /// Builds the pool for `config`'s backends. Backend addresses were validated by the config;
    /// one that still fails to parse as an authority is reported with its key.
    pub fn new(config: &Config) -> Result<Self, BackendsError> {
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, b) in config.backends.iter().enumerate() {
            let authority: Authority =
                b.addr
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| BackendsError::BadAddr {
                        index: i,
                        addr: b.addr.clone(),
                        reason: e.to_string(),
                    })?;
            backends.push(BackendState {
                target: Arc::new(Target::of(&authority)),
                authority,
                down_until: AtomicU64::new(0),
                idle: Arc::new(IdlePool::new(
                    config.upstream.max_idle_per_backend,
                    config.upstream.pool_idle_timeout,
                    crate::worker::count(config.runtime.workers),
                )),
                stats: Arc::default(),
            });
        }
        if backends.is_empty() {
            return Err(BackendsError::NoBackend);
        }
        Ok(Self {
            backends: backends.into_boxed_slice(),
            next: AtomicUsize::new(0),
            clock: Instant::now(),
            down_for: config.upstream.down_for,
            connect_timeout: config.timeouts.backend_connect,
            response_timeout: config.timeouts.backend_response,
        })
    }

    /// Sends `req` (headers already rewritten, `Host` set) to the next backend that is up and
    /// returns its response head, with the guard that gives the connection back to the pool
    /// when the body has been read to its end (`None` when it was given back already).
    ///
    /// A backend that cannot be connected to is marked down and the request goes to the next
    /// one (nothing of it was sent). A pooled connection found closed when the request is
    /// handed to it gets the request back unsent: it is retried once on a fresh connection.
    pub async fn send_pooled(
        &self,
        req: Request<B>,
    ) -> Result<(Response<Incoming>, Option<PoolReturn<B>>), UpstreamError> {
        self.send(req).await.map(|a| (a.response, a.pool))
    }

    /// Like [`Upstream::send_pooled`], also saying which backend answered and how long it
    /// took to.
    pub async fn send(&self, req: Request<B>) -> Result<Answered<B>, UpstreamError> {
        let upload = req.body().progress().cloned();
        let limit = self.response_timeout;
        let trying = AtomicUsize::new(usize::MAX);
        let mut send = std::pin::pin!(self.send_inner(req, &trying));
        let mut deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, send.as_mut()).await {
                Ok(r) => return r,
                Err(_) => {
                    // Time is up unless a request body is being sent and the backend has not
                    // kept zgate waiting for `limit` (the client has, or it took a piece since).
                    let next = upload.as_ref().map(|u| u.backend_deadline(limit));
                    match next {
                        Some(next) if next > tokio::time::Instant::now() => deadline = next,
                        _ => {
                            let i = trying.load(Ordering::Relaxed);
                            if let Some(b) = self.backends.get(i) {
                                b.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                                b.stats.requests.fetch_add(1, Ordering::Relaxed);
                            }
                            return Err(UpstreamError::Timeout);
                        }
                    }
                }
            }
        }
    }

    async fn send_inner(
        &self,
        mut req: Request<B>,
        trying: &AtomicUsize,
    ) -> Result<Answered<B>, UpstreamError> {
        origin_form(req.uri_mut());
        let n = self.backends.len();
        // One backend needs no turn-taking: skip the counter every core would write.
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let mut index = self.pick(start);
        let mut tried = 0;
        let mut fresh_only = false;
        loop {
            let backend = &self.backends[index];
            trying.store(index, Ordering::Relaxed);
            let pooled = if fresh_only {
                None
            } else {
                backend.idle.checkout().await
            };
            let reused = pooled.is_some();
            let sender = match pooled {
                Some(s) => s,
                None => match self.connect(backend).await {
                    Ok(s) => {
                        backend.stats.connected(backend.authority.as_str());
                        s
                    }
                    Err(ConnectFailed(error)) => {
                        let name = backend.authority.as_str();
                        backend.stats.connect_failed(name, self.down_for, &error);
                        self.mark_down(index);
                        tried += 1;
                        if tried >= n {
                            return Err(UpstreamError::Unreachable);
                        }
                        index = self.pick(index + 1);
                        fresh_only = false;
                        continue;
                    }
                },
            };
            let sent_at = Instant::now();
            let mut exchange = Exchange::start(sender, req, &backend.idle, self.response_timeout);
            let Some(answer) = exchange.answer().await else {
                // Answered once only: not reached.
                return Err(UpstreamError::Unreachable);
            };
            match answer {
                Ok(response) => {
                    let waited = sent_at.elapsed();
                    backend.stats.answered(waited);
                    let sender = exchange.into_sender();
                    let pool = match sender {
                        Some(sender) if response.body().is_end_stream() => {
                            backend.idle.put(sender);
                            None
                        }
                        Some(sender) => Some(PoolReturn {
                            sender,
                            pool: backend.idle.clone(),
                        }),
                        None => None,
                    };
                    return Ok(Answered {
                        response,
                        pool,
                        backend: index,
                        waited,
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        // The pooled connection was closed before the request was written.
                        req = unsent;
                        fresh_only = true;
                    }
                    _ => {
                        backend.stats.failed();
                        return Err(UpstreamError::Failed(e.into_error()));
                    }
                },
            }
        }
    }

    async fn connect(&self, backend: &BackendState<B>) -> Result<SendRequest<B>, ConnectFailed> {
        connect::connect(&backend.target, self.connect_timeout, &backend.idle).await
    }

    /// The first backend from `start` (round-robin) that is up, or `start`'s own when all are
    /// down (trying beats refusing everything).
    fn pick(&self, start: usize) -> usize {
        let n = self.backends.len();
        let mut now = None;
        for k in 0..n {
            let i = (start + k) % n;
            let until = self.backends[i].down_until.load(Ordering::Relaxed);
            if until == 0 {
                return i;
            }
            let now = *now.get_or_insert_with(|| self.clock.elapsed().as_nanos() as u64);
            if now >= until {
                self.backends[i].down_until.store(0, Ordering::Relaxed);
                return i;
            }
        }
        start % n
    }

    fn mark_down(&self, index: usize) {
        let until = (self.clock.elapsed() + self.down_for).as_nanos() as u64;
        self.backends[index]
            .down_until
            .store(until.max(1), Ordering::Relaxed);
    }

    /// Backends and whether each is currently skipped.
    pub fn backends(&self) -> impl Iterator<Item = (&Authority, bool)> {
        let now = self.clock.elapsed().as_nanos() as u64;
        self.backends.iter().map(move |b| {
            let until = b.down_until.load(Ordering::Relaxed);
            (&b.authority, until != 0 && now < until)
        })
    }

    /// The backends with their counters, in config order: `(address, stats)`.
    pub fn backend_stats(&self) -> impl Iterator<Item = (&str, &BackendStats)> {
        self.backends
            .iter()
            .map(|b| (b.authority.as_str(), &*b.stats))
    }

    /// The address of backend `index` as configured (`""` for an index out of range).
    pub fn backend_name(&self, index: usize) -> &str {
        self.backends
            .get(index)
            .map_or("", |b| b.authority.as_str())
    }

    /// Takes over the counters of `old`'s backends that have the same address, so a reload
    /// does not reset them.
    pub fn carry_stats_from(&mut self, old: &Upstream<B>) {
        for b in self.backends.iter_mut() {
            if let Some(o) = old.backends.iter().find(|o| o.authority == b.authority) {
                b.stats = o.stats.clone();
            }
        }
    }

    /// Idle pooled connections per backend, in config order (closed ones not yet noticed
    /// included).
    pub fn idle_connections(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends.iter().map(|b| b.idle.len())
    }
}

/// Cuts an absolute URI (HTTP/2 clients, absolute-form HTTP/1.1 requests) to origin-form.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let pq = match uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => pq.clone(),
        _ => PathAndQuery::from_static("/"),
    };
    *uri = Uri::from(pq);
}

#[cfg(test)]
mod tests;
