//! The backends: a pooled HTTP/1.1 client, round-robin choice, and skipping of backends that
//! refuse connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use zgate_config::Config;

use crate::body::ProxyBody;

/// Why a request got no response from any backend.
#[derive(Debug)]
pub enum UpstreamError {
    /// No backend accepted a connection (refused, unreachable, or connect timeout): 502.
    Unreachable,
    /// The backend did not answer within `timeouts.backend_response`: 504.
    Timeout,
    /// The backend connection failed mid-request (reset, malformed response): 502.
    Failed(hyper_util::client::legacy::Error),
}

/// The pool of backends, shared by every connection.
#[derive(Debug)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    backends: Box<[BackendState]>,
    next: AtomicUsize,
    clock: Instant,
    down_for: Duration,
    response_timeout: Duration,
}

#[derive(Debug)]
struct BackendState {
    authority: Authority,
    /// Nanoseconds since `Upstream::clock` until which the backend is skipped; 0 when up.
    down_until: AtomicU64,
}

impl Upstream {
    /// Builds the pool for `config`'s backends. Backend addresses were validated by the config;
    /// one that still fails to parse as an authority is reported with its key.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, b) in config.backends.iter().enumerate() {
            let authority: Authority = b
                .addr
                .parse()
                .map_err(|e| format!("`backend[{i}].addr`: {:?}: {e}", b.addr))?;
            backends.push(BackendState {
                authority,
                down_until: AtomicU64::new(0),
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeouts.backend_connect));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.upstream.pool_idle_timeout)
            .pool_max_idle_per_host(config.upstream.max_idle_per_backend)
            .set_host(false)
            .build(connector);
        Ok(Self {
            client,
            backends: backends.into_boxed_slice(),
            next: AtomicUsize::new(0),
            clock: Instant::now(),
            down_for: config.upstream.down_for,
            response_timeout: config.timeouts.backend_response,
        })
    }

    /// Sends `req` (origin-form URI, headers already rewritten) to the next backend that is up
    /// and returns its response head. A request with no body is retried on the next backend
    /// when a backend refuses the connection; one with a body is not (it may be half sent).
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        let n = self.backends.len();
        let retryable = n > 1 && http_body::Body::is_end_stream(&body);
        let mut body = Some(body);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tried = 0;
        let mut index = self.pick(start);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        loop {
            let backend = &self.backends[index];
            let uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(backend.authority.clone())
                .path_and_query(path.clone())
                .build()
                .map_err(|_| UpstreamError::Unreachable)?;
            let mut builder = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(Version::HTTP_11);
            if retryable && tried + 1 < n {
                if let Some(h) = builder.headers_mut() {
                    *h = parts.headers.clone();
                }
            } else if let Some(h) = builder.headers_mut() {
                *h = std::mem::take(&mut parts.headers);
            }
            let body = body.take().unwrap_or_else(ProxyBody::empty);
            let req = builder.body(body).map_err(|_| UpstreamError::Unreachable)?;
            match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
                Ok(Ok(resp)) => return Ok(resp),
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Err(e)) if e.is_connect() => {
                    self.mark_down(index);
                    tried += 1;
                    if !retryable || tried >= n {
                        return Err(UpstreamError::Unreachable);
                    }
                    index = self.pick(index + 1);
                }
                Ok(Err(e)) => return Err(UpstreamError::Failed(e)),
            }
        }
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
}
