//! The backends: pools of them, routes to the pools, the choice of a backend in a pool
//! (round robin, least in flight, client hash), skipping of backends that refuse connections,
//! and a small pool of HTTP/1.1 connections per backend built directly on
//! `hyper::client::conn::http1`.
//!
//! - `mod.rs`: [`Upstream`], one pool's backends and sending a request;
//! - `router.rs`: [`Router`], every pool of a config, the route table and the default pool;
//! - `routes.rs`: [`RouteTable`], a request's host and path to a pool (sans-IO);
//! - `balance.rs`: which backend of a pool takes a request (sans-IO);
//! - `in_flight.rs`: requests in flight per backend, for `least_in_flight`;
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
//! Each backend has an [`IdlePool`]: a `Mutex<VecDeque>` of idle `SendRequest`s with the
//! instant each became idle, newest at the back. The lock is held only to push or pop.
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

mod balance;
mod connect;
mod exchange;
mod health;
mod in_flight;
mod pool;
mod progress;
mod router;
mod routes;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use zgate_config::{Balance, Config, Pool};

use connect::{ConnectFailed, Target};
pub use connect::{BACKEND_BUFFER, BACKEND_BUFFER_HELD};
use exchange::Exchange;
pub use health::BackendStats;
use in_flight::InFlight;
use pool::IdlePool;
pub use pool::{PoolReturn, READY_WAIT};
pub use progress::{Outgoing, UploadProgress};
pub use router::Router;
pub use routes::RouteTable;

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
    /// Requests in flight (counted for `least_in_flight` only), kept across reloads.
    in_flight: Arc<AtomicUsize>,
    /// `client_hash`'s seed: a hash of the address.
    seed: u64,
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
    /// Builds the pool `spec` (its name, backends and balance), with `config`'s `[upstream]`
    /// and `[timeouts]`. Backend addresses were validated by the config; one that still fails
    /// to parse as an authority is reported with its key.
    pub fn new(spec: &Pool, config: &Config) -> Result<Self, BackendsError> {
        let mut backends = Vec::with_capacity(spec.backends.len());
        for (i, addr) in spec.backends.iter().enumerate() {
            let authority: Authority =
                addr.parse()
                    .map_err(|e: http::uri::InvalidUri| BackendsError::BadAddr {
                        key: spec.source.backend_key(i),
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })?;
            backends.push(BackendState {
                seed: balance::seed(authority.as_str()),
                in_flight: Arc::default(),
                target: Arc::new(Target::of(&authority)),
                authority,
                down_until: AtomicU64::new(0),
                idle: Arc::new(IdlePool::new(
                    config.upstream.max_idle_per_backend,
                    config.upstream.pool_idle_timeout,
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
        let anyone = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.send(req, anyone).await.map(|a| (a.response, a.pool))
    }

    /// Like [`Upstream::send_pooled`], for `client` (its address as the limiter keys it,
    /// which `client_hash` hashes), also saying which backend answered and how long it took
    /// to.
    pub async fn send(
        &self,
        req: Request<B>,
        client: IpAddr,
    ) -> Result<Answered<B>, UpstreamError> {
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
        client: IpAddr,
        trying: &AtomicUsize,
    ) -> Result<Answered<B>, UpstreamError> {
        origin_form(req.uri_mut());
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
        // Backends that refused this request's connection (allocated on the first failure).
        let mut tried: Vec<usize> = Vec::new();
        let mut index = self.choose(turn, client, &tried).unwrap_or(0);
        let mut fresh_only = false;
        loop {
            let backend = &self.backends[index];
            trying.store(index, Ordering::Relaxed);
            let in_flight = (self.balance == Balance::LeastInFlight)
                .then(|| InFlight::start(&backend.in_flight));
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
                        tried.push(index);
                        match self.choose(index + 1, client, &tried) {
                            Some(next) => index = next,
                            None => return Err(UpstreamError::Unreachable),
                        }
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
                    // A body still to come keeps the request in flight until its end.
                    let pool = match sender {
                        Some(sender) if response.body().is_end_stream() => {
                            backend.idle.put(sender);
                            None
                        }
                        Some(sender) => Some(PoolReturn {
                            sender,
                            pool: backend.idle.clone(),
                            in_flight,
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

    /// The backend for a request by the pool's balance (see `balance.rs`), skipping those
    /// that are down while another is up, and those in `tried`; `None` when all were tried.
    fn choose(&self, turn: usize, client: u64, tried: &[usize]) -> Option<usize> {
        if self.backends.len() == 1 {
            return tried.is_empty().then_some(0);
        }
        let view = View {
            up: self,
            now: std::cell::Cell::new(None),
        };
        balance::choose(self.balance, &view, turn, client, tried)
    }

    /// Whether backend `i` is up at `now` (lazily read once per choice); a mark that has
    /// expired is cleared.
    fn is_up(&self, i: usize, now: &std::cell::Cell<Option<u64>>) -> bool {
        let until = self.backends[i].down_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let t = now.get().unwrap_or_else(|| {
            let t = self.clock.elapsed().as_nanos() as u64;
            now.set(Some(t));
            t
        });
        if t >= until {
            self.backends[i].down_until.store(0, Ordering::Relaxed);
            return true;
        }
        false
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

    /// Takes over the counters (and requests in flight) of `old`'s backends that have the
    /// same address, so a reload does not reset them.
    pub fn carry_stats_from(&mut self, old: &Upstream<B>) {
        for b in self.backends.iter_mut() {
            if let Some(o) = old.backends.iter().find(|o| o.authority == b.authority) {
                b.stats = o.stats.clone();
                b.in_flight = o.in_flight.clone();
            }
        }
    }

    /// Idle pooled connections per backend, in config order (closed ones not yet noticed
    /// included).
    pub fn idle_connections(&self) -> impl Iterator<Item = usize> + '_ {
        self.backends.iter().map(|b| b.idle.len())
    }
}

/// A pool's backends as a choice sees them.
struct View<'a, B> {
    up: &'a Upstream<B>,
    now: std::cell::Cell<Option<u64>>,
}

impl<B: Outgoing> balance::Candidates for View<'_, B> {
    fn len(&self) -> usize {
        self.up.backends.len()
    }
    fn is_up(&self, i: usize) -> bool {
        self.up.is_up(i, &self.now)
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
