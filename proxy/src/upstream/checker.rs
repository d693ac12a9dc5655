//! Active health checks: one task per [`super::Upstream`] (per pool) that every
//! `health.interval` sends `GET health.path` to each of its backends, all at once, each on a
//! connection of its own (`Host`: the backend's address, `User-Agent: zgate-health`,
//! `Connection: close`) under `health.timeout`, and steps each backend's tally with the result.
//!
//! The task ends when its [`Checks`] handle is dropped (with the `Upstream` that owns it) or
//! stopped ([`Checks::stop`]: a reload replaced the `Upstream`, or the server shuts down), so
//! no checker outlives its pool; a result that arrives after the stop is not recorded.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use http::{header, Method, Request};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use zgate_config::HealthCheck;

use super::connect::{ConnectFailed, Dial, Opened};
use super::health::BackendStats;
use super::tally::{Check, CheckFailure, Rules};

/// The `User-Agent` of a health check.
pub const USER_AGENT: &str = "zgate-health";

/// One backend as the checker sees it.
pub(super) struct Checked {
    pub(super) authority: Authority,
    pub(super) target: Arc<Dial>,
    /// Whether the pool speaks HTTP/2 to it (the check then does too).
    pub(super) h2: bool,
    pub(super) stats: Arc<BackendStats>,
}

/// The running checker of one upstream: stops it when dropped.
#[derive(Debug)]
pub(super) struct Checks {
    stop: watch::Sender<bool>,
}

impl Checks {
    /// Starts checking `backends` per `health` on the current tokio runtime; `None` (and a
    /// warning) outside one, where there is nothing to run a task on.
    pub(super) fn start(backends: Vec<Checked>, health: HealthCheck, rules: Rules) -> Option<Self> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to run health checks on: none started");
            return None;
        };
        let (stop, stopped) = watch::channel(false);
        runtime.spawn(run(backends, health, rules, stopped));
        Some(Checks { stop })
    }

    /// Stops the checker (its checks in progress are not recorded).
    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn run(
    backends: Vec<Checked>,
    health: HealthCheck,
    rules: Rules,
    mut stopped: watch::Receiver<bool>,
) {
    let backends: Arc<[Checked]> = backends.into();
    let path = Arc::<str>::from(health.path.as_str());
    let mut every = tokio::time::interval(health.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopped.changed() => return,
        }
        let mut round = JoinSet::new();
        for i in 0..backends.len() {
            let (backends, path) = (backends.clone(), path.clone());
            round.spawn(async move {
                let b = &backends[i];
                (
                    i,
                    check(&b.target, b.h2, &b.authority, &path, health.timeout).await,
                )
            });
        }
        loop {
            let next = tokio::select! {
                next = round.join_next() => next,
                // Dropping the round aborts its checks.
                _ = stopped.changed() => return,
            };
            let Some(done) = next else { break };
            if *stopped.borrow() {
                return;
            }
            if let Ok((i, result)) = done {
                if let Some(b) = backends.get(i) {
                    b.stats.checked(b.authority.as_str(), &rules, result);
                }
            }
        }
    }
}

/// One check of one backend: connect (and TLS), `GET path`, the response head, all within
/// `timeout`; over HTTP/2 when the pool speaks it.
async fn check(
    dial: &Dial,
    h2: bool,
    authority: &Authority,
    path: &str,
    timeout: std::time::Duration,
) -> Check {
    let exchange = async {
        match dial.open(timeout).await {
            Ok(Opened::Plain(s)) => exchange(s, h2, dial.is_tls(), authority, path).await,
            Ok(Opened::Tls(s)) => exchange(s, h2, dial.is_tls(), authority, path).await,
            Err(ConnectFailed(e)) => Err(CheckFailure::Connect(e)),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Check::Passed,
        Ok(Ok(status)) => Check::Failed(CheckFailure::Status(status)),
        Ok(Err(failure)) => Check::Failed(failure),
        Err(_) => Check::Failed(CheckFailure::Timeout),
    }
}

async fn exchange<IO>(
    io: IO,
    h2: bool,
    tls: bool,
    authority: &Authority,
    path: &str,
) -> Result<u16, CheckFailure>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let failed = |e: hyper::Error| CheckFailure::Failed(e.to_string());
    let req = Request::builder()
        .method(Method::GET)
        .header(header::USER_AGENT, USER_AGENT);
    let req = if h2 {
        let scheme = if tls { "https" } else { "http" };
        req.uri(format!("{scheme}://{authority}{path}"))
    } else {
        req.uri(path)
            .header(header::HOST, authority.as_str())
            .header(header::CONNECTION, "close")
    };
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| CheckFailure::Failed(e.to_string()))?;
    // The connection ends with this task (dropped at the end of the check, or aborted).
    let response = if h2 {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(failed)?;
        let conn = async move {
            let _ = conn.await;
        };
        answer(sender.send_request(req), conn).await
    } else {
        let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await.map_err(failed)?;
        let conn = async move {
            let _ = conn.await;
        };
        answer(sender.send_request(req), conn).await
    };
    Ok(response.map_err(failed)?.status().as_u16())
}

/// The answer to `send`, driving the connection `conn` meanwhile.
async fn answer<S, C, T>(send: S, conn: C) -> hyper::Result<T>
where
    S: std::future::Future<Output = hyper::Result<T>>,
    C: std::future::Future<Output = ()>,
{
    tokio::pin!(conn, send);
    tokio::select! {
        biased;
        r = &mut send => r,
        // The connection ended: the answer, if it came, is in the channel already.
        _ = &mut conn => send.await,
    }
}
