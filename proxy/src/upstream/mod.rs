//! The backends: pools of them, routes to the pools, the choice of a backend in a pool
//! (round robin, least in flight, client hash), skipping of backends that are down (passive
//! detection and active health checks), retries, and a small pool of HTTP/1.1 connections
//! per backend, spoken by zgate's own client in the request's task (`h1.rs`).
//!
//! - `mod.rs`: [`Upstream`], one pool's backends and sending a request;
//! - `router.rs`: [`Router`], every pool of a config, the route table and the default pool;
//! - `routes.rs`: [`RouteTable`], a request's host and path to a pool (sans-IO);
//! - `balance.rs`: which backend of a pool takes a request (sans-IO);
//! - `in_flight.rs`: requests in flight per backend, for `least_in_flight`;
//! - `pool.rs`: one backend's idle connections, and the [`BackendHold`] a response carries
//!   while its body streams over a backend connection;
//! - `connect.rs`: a backend connect in a task of its own, whose connection goes to the pool
//!   if its request is gone; TLS to the backend; HTTP/2 handshakes;
//! - `h1.rs`: the HTTP/1.1 client: a request written and its answer read in the request's
//!   own task, the answer's body ([`BackendBody::Http1`]) reading the connection as the
//!   client takes it and giving it back to the pool at its end; a request dropped before its
//!   answer has the answer read and discarded in a task, and the connection pooled;
//! - `wire.rs`: HTTP/1.1 framing for `h1.rs`, sans IO: the request head, the response head
//!   and its body's delimitation, chunked decoding;
//! - `link.rs`: [`BackendLink`], the protocol and TLS (roots, server name) a pool's backends
//!   are reached with, taken by [`Upstream::with_link`];
//! - `multiplex.rs`: HTTP/2 backends (hyper's client), one connection per backend shared by
//!   concurrent requests, reconnected when closed (the HTTP/1 pool does not apply to them);
//! - `health.rs`: [`BackendStats`], one backend's counters and its state in rotation (logged
//!   once per change);
//! - `tally.rs`: the sans-IO state machine that state comes from: consecutive request
//!   failures (passive) and health check results (active), time as a parameter;
//! - `checker.rs`: the active health checks, one task per `Upstream`, stopped with it;
//! - `retry.rs`: which failed requests are sent again, and where;
//! - `tests.rs`: the pool's tests against the demo backend;
//! - `progress.rs`: what the wait for an answer knows of the request body being sent
//!   ([`Outgoing`], [`UploadProgress`]), so this room never names the body type;
//! - `tunnel.rs`: [`Upstream::send_upgrade`], a protocol upgrade on a connection of its own
//!   (hyper's client), never pooled, whose `101` hands its IO over for the tunnel.
//!
//! # Design
//!
//! Each backend has an [`IdlePool`]: per worker thread, a `Mutex<VecDeque>` of idle
//! connections with the instant each became idle, newest at the back (a worker only sees the
//! connections its own tasks use: each worker is a runtime of its own, and a connection stays
//! on the one it was opened on). The lock is held only to push or pop.
//!
//! - **Checkout**: pop the newest idle connection (LIFO keeps few connections warm and lets
//!   old ones age out at the front). One idle longer than `upstream.pool_idle_timeout` means
//!   all older ones are too: they are dropped (closing them). One the backend closed while
//!   idle (its socket turned readable: see `h1.rs`) is dropped and the next one tried.
//! - **Sweep**: the server's tick ([`Upstream::sweep_idle`], four times a second) closes, in
//!   every worker's slot, the idle connections past the timeout and those their backend
//!   closed, so a pool no request comes to keeps no socket past its timeout.
//! - **Connect** when no idle connection is usable (`connect.rs`): in a task of its own, so
//!   a request dropped half way (a reset stream) leaves its connection to the idle pool
//!   instead of abandoning it: `TcpStream::connect` (resolution included) under
//!   `timeouts.backend_connect`, `TCP_NODELAY`, and TLS when the pool has it. A failed
//!   connect counts against the backend (`upstream.fail_after` in a row take it out for
//!   `upstream.down_for`); since nothing of the request was sent, it moves on to the next
//!   backend that is up (whatever its body), until every backend was tried (`retry.rs`).
//! - **Choice**: round-robin over the backends in rotation. When every backend is out, the
//!   round-robin goes over all of them anyway: a backend wrongly out still serves, and a dead
//!   one costs a refused connect before the next is tried, where a 502 for everything would
//!   cost every request.
//! - **Send** (`h1.rs`) with the origin-form URI (absolute URIs of HTTP/2 clients are cut to
//!   their path and query), in the request's task: no connection task, no channel, no
//!   wake-up of another task per request or per body chunk. A request dropped before its
//!   answer, as a reset stream is, leaves the exchange to finish in a task, and the
//!   connection to the pool. A connection that fails before any byte of the request was
//!   written gives the request back: from the pool, it is sent again once on a fresh
//!   connection, so requests with bodies are safe too. A request that was sent and failed
//!   before its response head is sent again to another backend only when it is idempotent and
//!   has no body (`upstream.retries`, `retry.rs`).
//! - **Outcome**: every answer, failure and timeout steps the backend's tally (a 5xx answer
//!   other than 501 and 505 counts as a failure, and still goes to the client).
//! - **Return**: an HTTP/1 connection is reusable only after its response body was read to
//!   the end; the body gives it back then. A small body that came whole with its head frees
//!   the connection at once; otherwise the response carries a [`BackendHold`] (in flight on
//!   its backend, and the connection's buffer charged to the client) that the http room's
//!   `ProxyBody::Response` releases at the body's end. A body dropped before its end closes
//!   its connection.
//! - `timeouts.backend_response` bounds checkout, connect and the wait for the response head,
//!   and, while a request body is sent, each time the backend keeps zgate waiting (it takes no
//!   piece of the body for that long while the client has one ready); the client's pauses are
//!   `timeouts.body_read`'s.
//!
//! Per request: the request head's bytes, the response head's bytes (the fields share them)
//! and its `HeaderMap`, a request with a body's `Upload`, and, while a retry is possible
//! (`upstream.retries` > 0, two backends or more), a copy of an idempotent bodiless request's
//! head to send it again. The read buffer is the connection's, reused while the body chunks
//! handed out of it are gone.

mod balance;
mod checker;
mod connect;
mod h1;
mod health;
mod in_flight;
mod link;
mod multiplex;
mod pool;
mod progress;
mod retry;
mod router;
mod routes;
mod tally;
mod tunnel;
mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use zgate_config::{Balance, Config, HealthCheck, Pool};

use checker::Checks;
pub use checker::USER_AGENT as HEALTH_USER_AGENT;
#[cfg(test)]
use connect::Target;
use connect::{ConnectFailed, Dial};
pub use connect::{BACKEND_BUFFER, BACKEND_BUFFER_HELD};
use h1::{Conn, Exchange, Failure};
pub use h1::{H1Error, DRAIN_LIMIT};
pub use health::BackendStats;
use in_flight::InFlight;
pub use link::{BackendLink, UpstreamTlsError};
use multiplex::{Sent, Shared};
pub use pool::BackendHold;
use pool::IdlePool;
pub use progress::{Outgoing, UploadProgress};
use retry::{Replay, Tried};
pub use router::Router;
pub use routes::RouteTable;
use tally::{Cause, Outcome, Rules};
#[cfg(feature = "fuzzing")]
pub use wire::fuzz_answer;
pub use wire::WireError;

/// Why a request got no response from any backend.
#[derive(Debug)]
pub enum UpstreamError {
    /// No backend accepted a connection (refused, unreachable, or connect timeout): 502.
    Unreachable,
    /// The backend did not answer within `timeouts.backend_response`: 504.
    Timeout,
    /// The backend connection failed mid-request (reset, malformed response): 502; or the
    /// client's request body did (see [`BackendError::is_client`]).
    Failed(BackendError),
}

/// How an exchange with a backend failed: on zgate's HTTP/1 client, or on hyper's (HTTP/2
/// backends, upgrades).
#[derive(Debug)]
pub enum BackendError {
    /// HTTP/1 (`h1.rs`).
    Http1(H1Error),
    /// HTTP/2, or an upgrade's connection.
    Hyper(hyper::Error),
}

impl BackendError {
    /// Whether the client's own request body failed, not the backend.
    pub fn is_client(&self) -> bool {
        match self {
            BackendError::Http1(e) => e.is_client(),
            BackendError::Hyper(e) => e.is_user(),
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Http1(e) => e.fmt(f),
            BackendError::Hyper(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BackendError {
    /// The error itself: a search for a cause along the chain (a client body error, a body
    /// timeout) goes through it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Http1(e) => Some(e),
            BackendError::Hyper(e) => Some(e),
        }
    }
}

/// A backend's response body: read by zgate's HTTP/1 client from its connection, or by
/// hyper's (HTTP/2 backends, upgrades).
#[derive(Debug)]
pub enum BackendBody {
    /// HTTP/1 (`h1.rs`).
    Http1(h1::Body),
    /// HTTP/2, or an upgrade's connection.
    Hyper(Incoming),
}

impl BackendBody {
    /// Whether the body still reads from a backend connection (a small HTTP/1 body read
    /// whole with its head does not, though it has a frame to give).
    fn holds_connection(&self) -> bool {
        match self {
            BackendBody::Http1(b) => b.holds_connection(),
            BackendBody::Hyper(b) => !b.is_end_stream(),
        }
    }
}

impl http_body::Body for BackendBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            BackendBody::Http1(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            BackendBody::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BackendBody::Http1(b) => b.is_end_stream(),
            BackendBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            BackendBody::Http1(b) => b.size_hint(),
            BackendBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Why the backends of a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendsError {
    /// A backend address is not a `host:port` authority.
    BadAddr {
        /// Its key in the config: `backend[j].addr` or `pool[i].backends[j]`.
        key: String,
        /// The address as written.
        addr: String,
        /// The parser's reason.
        reason: String,
    },
    /// A pool has no backend.
    NoBackend {
        /// The pool's name.
        pool: String,
    },
    /// `route[route].pool` names no pool.
    UnknownPool {
        /// The route's position in the config.
        route: usize,
        /// The name as written.
        pool: String,
    },
    /// TLS to the backends cannot be set up (its `Display` names the key).
    Tls(UpstreamTlsError),
}

impl std::fmt::Display for BackendsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendsError::BadAddr { key, addr, reason } => {
                write!(f, "`{key}`: {addr:?}: {reason}")
            }
            BackendsError::NoBackend { pool } => write!(f, "pool {pool:?} has no backend"),
            BackendsError::UnknownPool { route, pool } => {
                write!(f, "`route[{route}].pool`: unknown pool {pool:?}")
            }
            BackendsError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BackendsError {}

/// One pool of backends, shared by every connection.
#[derive(Debug)]
pub struct Upstream<B> {
    /// `pool[].name`, or `"default"` for the `[[backend]]` list.
    name: Box<str>,
    balance: Balance,
    backends: Box<[BackendState<B>]>,
    next: AtomicUsize,
    /// Passive detection's thresholds and the health checks' counts.
    rules: Rules,
    /// Sends again of a sent request that failed before its head (`upstream.retries`).
    retries: u32,
    /// The active health checks, `None` without.
    health: Option<HealthCheck>,
    /// The running checker ([`Upstream::start_checks`]); stops when the pool is dropped.
    checks: OnceLock<Checks>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

#[derive(Debug)]
struct BackendState<B> {
    authority: Authority,
    target: Arc<Dial>,
    /// The shared connection of an HTTP/2 backend (`None`: HTTP/1, pooled in `idle`).
    shared: Option<Arc<Shared<B>>>,
    idle: Arc<IdlePool>,
    /// Counters and state in rotation, kept across reloads for the same address.
    stats: Arc<BackendStats>,
    /// Requests in flight (counted for `least_in_flight` only), kept across reloads.
    in_flight: Arc<AtomicUsize>,
    /// `client_hash`'s seed: a hash of the address.
    seed: u64,
}

/// A backend's response head, with where it came from.
pub struct Answered {
    /// The response head (and its body, to stream).
    pub response: Response<BackendBody>,
    /// Held while the body streams over the backend connection; `None` when the body holds
    /// no connection (it ended with its head, or came whole with it).
    pub pool: Option<BackendHold>,
    /// Index of the backend that answered (see [`Upstream::backend_name`]).
    pub backend: usize,
    /// From the request handed to that backend to its response head.
    pub waited: std::time::Duration,
}

impl<B: Outgoing> Upstream<B> {
    /// Builds the pool `spec` (its name, backends, balance, `protocol`, `tls`: the CA file is
    /// read now, `health`: checks start with [`Upstream::start_checks`]), with `config`'s
    /// `[upstream]` and `[timeouts]`. Backend addresses were validated by the config; one that
    /// still fails to parse as an authority is reported with its key.
    pub fn new(spec: &Pool, config: &Config) -> Result<Self, BackendsError> {
        let key = spec.source.tls_key();
        let link = BackendLink::load(spec.protocol, spec.tls.as_ref(), &key)
            .map_err(BackendsError::Tls)?;
        Self::with_link(spec, config, &link, spec.health.as_ref())
    }

    /// Builds the pool `spec`, reached over `link` (protocol and TLS) and checked per
    /// `health` (`None`: no active checks).
    pub fn with_link(
        spec: &Pool,
        config: &Config,
        link: &BackendLink,
        health: Option<&HealthCheck>,
    ) -> Result<Self, BackendsError> {
        let mut backends = Vec::with_capacity(spec.backends.len());
        for (i, addr) in spec.backends.iter().enumerate() {
            let authority: Authority =
                addr.parse()
                    .map_err(|e: http::uri::InvalidUri| BackendsError::BadAddr {
                        key: spec.source.backend_key(i),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
            let dial = Dial::new(&authority, link).map_err(BackendsError::Tls)?;
            let shared = (link.protocol() == zgate_config::UpstreamProtocol::Http2)
                .then(|| Arc::new(Shared::new()));
            backends.push(BackendState {
                seed: balance::seed(authority.as_str()),
                in_flight: Arc::default(),
                target: Arc::new(dial),
                shared,
                authority,
                idle: Arc::new(IdlePool::new(
                    config.upstream.max_idle_per_backend,
                    config.upstream.pool_idle_timeout,
                    crate::worker::count(config.runtime.workers),
                )),
                stats: Arc::default(),
            });
        }
        if backends.is_empty() {
            return Err(BackendsError::NoBackend {
                pool: spec.name.clone(),
            });
        }
        Ok(Self {
            name: spec.name.as_str().into(),
            balance: spec.balance,
            backends: backends.into_boxed_slice(),
            next: AtomicUsize::new(0),
            rules: Rules {
                fail_after: config.upstream.fail_after,
                down_for: config.upstream.down_for,
                checks: health.map(|h| (h.unhealthy_after, h.healthy_after)),
            },
            retries: config.upstream.retries,
            health: health.cloned(),
            checks: OnceLock::new(),
            connect_timeout: config.timeouts.backend_connect,
            response_timeout: config.timeouts.backend_response,
        })
    }

    /// Sends `req` (headers already rewritten, `Host` set) to the next backend that is up and
    /// returns its response head, with the guard that gives the connection back to the pool
    /// when the body has been read to its end (`None` when it was given back already).
    ///
    /// A backend that cannot be connected to counts a failure and the request goes to the
    /// next one (nothing of it was sent). A pooled connection found closed when the request
    /// is handed to it gets the request back unsent: it is retried once on a fresh
    /// connection. A request that was sent and failed before its response head is sent again
    /// to another backend if it is idempotent and has no body (`retry.rs`).
    pub async fn send_pooled(
        &self,
        req: Request<B>,
    ) -> Result<(Response<BackendBody>, Option<BackendHold>), UpstreamError> {
        let anyone = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.send(req, anyone).await.map(|a| (a.response, a.pool))
    }

    /// Like [`Upstream::send_pooled`], for `client` (its address as the limiter keys it,
    /// which `client_hash` hashes), also saying which backend answered and how long it took
    /// to.
    pub async fn send(&self, req: Request<B>, client: IpAddr) -> Result<Answered, UpstreamError> {
        let upload = req.body().progress().cloned();
        let limit = self.response_timeout;
        let trying = AtomicUsize::new(usize::MAX);
        let mut send = std::pin::pin!(self.send_inner(req, client, &trying));
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
                                b.stats.timed_out();
                                let timeout = Outcome::Failed(Cause::Timeout);
                                b.stats.record(b.authority.as_str(), &self.rules, timeout);
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
        client: IpAddr,
        trying: &AtomicUsize,
    ) -> Result<Answered, UpstreamError> {
        origin_form(req.uri_mut());
        let mut tried = Tried::default();
        let (mut index, client) = self.first_choice(client);
        let mut retries = self.retries;
        let mut fresh_only = false;
        loop {
            let backend = &self.backends[index];
            let name = backend.authority.as_str();
            trying.store(index, Ordering::Relaxed);
            let in_flight = (self.balance == Balance::LeastInFlight)
                .then(|| InFlight::start(&backend.in_flight));
            if let Some(shared) = &backend.shared {
                let timeout = self.connect_timeout;
                let (target, authority) = (&backend.target, &backend.authority);
                // Boxed: the HTTP/1 path's future stays as small as it was.
                let send = Box::pin(shared.send(req, target, authority, timeout));
                match send.await {
                    Sent::Answered(response, waited) => {
                        backend.stats.answered(waited);
                        let outcome = outcome_of(response.status());
                        backend.stats.record(name, &self.rules, outcome);
                        let response = response.map(BackendBody::Hyper);
                        let pool = response
                            .body()
                            .holds_connection()
                            .then(|| BackendHold::new(in_flight));
                        return Ok(Answered {
                            response,
                            pool,
                            backend: index,
                            waited,
                        });
                    }
                    Sent::Failed(e) => {
                        backend.stats.failed();
                        if !e.is_user() {
                            let failed = Outcome::Failed(Cause::Reset);
                            backend.stats.record(name, &self.rules, failed);
                        }
                        return Err(UpstreamError::Failed(BackendError::Hyper(e)));
                    }
                    Sent::Unconnected(unsent, ConnectFailed(error)) => {
                        req = unsent;
                        backend.stats.connect_failed(name, &self.rules, &error);
                        tried.add(index);
                        index = self
                            .untried(index, client, &tried)
                            .ok_or(UpstreamError::Unreachable)?;
                        continue;
                    }
                }
            }
            let pooled = if fresh_only {
                None
            } else {
                backend.idle.checkout()
            };
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(c) => c,
                None => match self.connect(backend).await {
                    Ok(c) => c,
                    Err(ConnectFailed(error)) => {
                        backend.stats.connect_failed(name, &self.rules, &error);
                        // Nothing of the request was sent: any request moves on.
                        tried.add(index);
                        index = self
                            .choose(index + 1, client, &tried)
                            .ok_or(UpstreamError::Unreachable)?;
                        fresh_only = false;
                        continue;
                    }
                },
            };
            // A copy to send again, kept only while a retry is possible.
            let replay = if retries > 0 && self.backends.len() > 1 {
                Replay::of(&req)
            } else {
                None
            };
            let sent_at = Instant::now();
            let mut exchange = Exchange::start(conn, req, &backend.idle, self.response_timeout);
            match exchange.answer().await {
                Ok(response) => {
                    let waited = sent_at.elapsed();
                    backend.stats.answered(waited);
                    let outcome = outcome_of(response.status());
                    backend.stats.record(name, &self.rules, outcome);
                    let response = response.map(BackendBody::Http1);
                    // A body still to read keeps the request in flight until its end.
                    let pool = response
                        .body()
                        .holds_connection()
                        .then(|| BackendHold::new(in_flight));
                    return Ok(Answered {
                        response,
                        pool,
                        backend: index,
                        waited,
                    });
                }
                Err(Failure::Unsent(unsent, e)) if reused => {
                    // The pooled connection was closed before the request was written.
                    tracing::debug!(backend = name, error = %e, "pooled connection closed; the request goes on a fresh one");
                    req = *unsent;
                    fresh_only = true;
                }
                Err(Failure::Unsent(unsent, e)) => {
                    // A fresh connection failed before the request was written: as a connect
                    // failure, it moves on.
                    tracing::debug!(backend = name, error = %e, "fresh connection failed before the request was written");
                    let failed = Outcome::Failed(Cause::Reset);
                    backend.stats.record(name, &self.rules, failed);
                    tried.add(index);
                    req = *unsent;
                    index = self
                        .untried(index, client, &tried)
                        .ok_or(UpstreamError::Unreachable)?;
                    fresh_only = false;
                }
                Err(Failure::Failed(e)) => {
                    backend.stats.failed();
                    if e.is_client() {
                        // The client's own body failed: not the backend's doing.
                        return Err(UpstreamError::Failed(BackendError::Http1(e)));
                    }
                    let failed = Outcome::Failed(Cause::Reset);
                    backend.stats.record(name, &self.rules, failed);
                    tried.add(index);
                    let again =
                        replay.and_then(|r| Some((r, self.untried(index, client, &tried)?)));
                    let Some((replay, next)) = again else {
                        return Err(UpstreamError::Failed(BackendError::Http1(e)));
                    };
                    tracing::debug!(backend = name, error = %e, "request failed before its answer; sent again to another backend");
                    backend.stats.retried.fetch_add(1, Ordering::Relaxed);
                    retries -= 1;
                    req = replay.into_request();
                    index = next;
                    fresh_only = false;
                }
            }
        }
    }

    /// Connects to `backend` within `timeouts.backend_connect`.
    async fn connect(&self, backend: &BackendState<B>) -> Result<Conn, ConnectFailed> {
        connect::connect(&backend.target, self.connect_timeout, &backend.idle).await
    }
    /// A request's first backend, for `client` (its address as the limiter keys it), with the
    /// hash `client_hash` keeps choosing by (0 for the other balances) for its next tries.
    fn first_choice(&self, client: IpAddr) -> (usize, u64) {
        let n = self.backends.len();
        // One backend needs no turn-taking (skip the counter every core would write), nor
        // does a hash.
        let turn = if n == 1 || self.balance == Balance::ClientHash {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let client = match self.balance {
            Balance::ClientHash if n > 1 => balance::client_hash(client),
            _ => 0,
        };
        let index = self.choose(turn, client, &Tried::default()).unwrap_or(0);
        (index, client)
    }

    /// The backend for a request by the pool's balance (see `balance.rs`), skipping those
    /// out of rotation while another is in, and those in `tried`; `None` when all were
    /// tried.
    fn choose(&self, turn: usize, client: u64, tried: &Tried) -> Option<usize> {
        if self.backends.len() == 1 {
            return (tried.count() == 0).then_some(0);
        }
        balance::choose(self.balance, &View { up: self }, turn, client, tried)
    }

    /// The next backend after `failed` for a request that failed there.
    fn untried(&self, failed: usize, client: u64, tried: &Tried) -> Option<usize> {
        self.choose(failed + 1, client, tried)
    }

    /// Starts the active health checks of this pool, if it has any and they are not running
    /// (on the current tokio runtime). They stop when the pool is dropped or
    /// [`Upstream::retire`]d.
    pub fn start_checks(&self) {
        let Some(health) = &self.health else { return };
        if self.checks.get().is_some() {
            return;
        }
        let backends = self
            .backends
            .iter()
            .map(|b| checker::Checked {
                authority: b.authority.clone(),
                target: b.target.clone(),
                h2: b.shared.is_some(),
                stats: b.stats.clone(),
            })
            .collect();
        if let Some(checks) = Checks::start(backends, health.clone(), self.rules) {
            let _ = self.checks.set(checks);
        }
    }

    /// This pool was replaced (a reload) or the server stops: its health checks stop now,
    /// though requests in flight may still hold it.
    pub fn retire(&self) {
        if let Some(c) = self.checks.get() {
            c.stop();
        }
    }

    /// Backends and whether each is currently skipped.
    pub fn backends(&self) -> impl Iterator<Item = (&Authority, bool)> {
        self.backends
            .iter()
            .map(|b| (&b.authority, b.stats.skipped()))
    }

    /// The pool's name: `pool[].name`, or `"default"` for the `[[backend]]` list.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the pool spreads requests.
    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Requests in flight per backend, in config order (counted for `least_in_flight` only).
    pub fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends
            .iter()
            .map(|b| b.in_flight.load(Ordering::Relaxed))
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

    /// Takes over the counters, state and requests in flight of `old`'s backends that have
    /// the same address, so a reload does not reset them (nor put a dead backend back in
    /// rotation); the state is then judged by this pool's rules. Call before
    /// [`Upstream::start_checks`].
    pub fn carry_stats_from(&mut self, old: &Upstream<B>) {
        for b in self.backends.iter_mut() {
            if let Some(o) = old.backends.iter().find(|o| o.authority == b.authority) {
                b.stats = o.stats.clone();
                b.in_flight = o.in_flight.clone();
                b.stats.rules_changed(b.authority.as_str(), &self.rules);
            }
        }
    }

    /// Closes the idle pooled connections past `pool_idle_timeout` or closed by their
    /// backend (see [`IdlePool::sweep`]).
    pub fn sweep_idle(&self) {
        for b in self.backends.iter() {
            b.idle.sweep();
        }
    }

    /// Idle pooled connections per backend, in config order (closed ones not yet noticed
    /// included).
    pub fn idle_connections(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends.iter().map(|b| b.idle.len())
    }
}

/// What an answer with `status` says of its backend: 5xx is a failure, except 501 (Not
/// Implemented) and 505 (HTTP Version Not Supported), which are about the client's request.
fn outcome_of(status: http::StatusCode) -> Outcome {
    let code = status.as_u16();
    if status.is_server_error() && code != 501 && code != 505 {
        Outcome::Failed(Cause::Status(code))
    } else {
        Outcome::Answered
    }
}

/// A pool's backends as a choice sees them.
struct View<'a, B> {
    up: &'a Upstream<B>,
}

impl<B: Outgoing> balance::Candidates for View<'_, B> {
    fn len(&self) -> usize {
        self.up.backends.len()
    }
    fn is_up(&self, i: usize) -> bool {
        !self.up.backends[i].stats.skipped()
    }
    fn in_flight(&self, i: usize) -> usize {
        self.up.backends[i].in_flight.load(Ordering::Relaxed)
    }
    fn seed(&self, i: usize) -> u64 {
        self.up.backends[i].seed
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
