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
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zgate_config::HealthCheck;

use super::connect::Target;
use super::health::BackendStats;
use super::tally::{Check, CheckFailure, Rules};

/// The `User-Agent` of a health check.
pub const USER_AGENT: &str = "zgate-health";

/// One backend as the checker sees it.
pub(super) struct Checked {
    pub(super) authority: Authority,
    pub(super) target: Arc<Target>,
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
                    check(&b.target, &b.authority, &path, health.timeout).await,
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

/// One check of one backend: connect, `GET path`, the response head, all within `timeout`.
async fn check(
    target: &Target,
    authority: &Authority,
    path: &str,
    timeout: std::time::Duration,
) -> Check {
    match tokio::time::timeout(timeout, exchange(target, authority, path)).await {
        Ok(Ok(status)) if (200..400).contains(&status) => Check::Passed,
        Ok(Ok(status)) => Check::Failed(CheckFailure::Status(status)),
        Ok(Err(failure)) => Check::Failed(failure),
        Err(_) => Check::Failed(CheckFailure::Timeout),
    }
}

async fn exchange(target: &Target, authority: &Authority, path: &str) -> Result<u16, CheckFailure> {
    let stream = target
        .connect()
        .await
        .map_err(|e| CheckFailure::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| CheckFailure::Failed(e.to_string()))?;
    // The connection ends with this task (dropped at the end of the check, or aborted).
    let conn = async move {
        let _ = conn.await;
    };
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, authority.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| CheckFailure::Failed(e.to_string()))?;
    let send = sender.send_request(req);
    tokio::pin!(conn, send);
    let response = tokio::select! {
        biased;
        r = &mut send => r,
        // The connection ended: the answer, if it came, is in the channel already.
        _ = &mut conn => send.await,
    };
    let response = response.map_err(|e| CheckFailure::Failed(e.to_string()))?;
    Ok(response.status().as_u16())
}
