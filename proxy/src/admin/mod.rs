//! The admin HTTP API: its own HTTP/1.1 listener (`[admin] addr`, default `127.0.0.1:7391`),
//! JSON in and out, for operators and `zgate ctl`.
//!
//! - `auth.rs`: the bearer token, compared in constant time;
//! - `guard.rs`: Host, Origin and Content-Type checks against other web pages on the host;
//! - `scope.rs`: which manual blocks are too wide to take without `"force": true`;
//! - `json.rs`: responses, errors (`{"error": "..."}`) and size-limited request bodies;
//! - `router.rs`: paths and methods to endpoints (404 unknown path, 405 wrong method);
//! - `api.rs`: the endpoints (mode, model, thresholds, knobs, clients);
//! - `blocks.rs`: the block list's endpoints;
//! - `runtime.rs`: the runtime overrides' endpoints;
//! - `live.rs`: `GET /api/v1/clients/live`, the clients' current values per metric;
//! - `page.rs`: the status page at `/`, its files embedded from `proxy/ui/`.
//! - `thin.rs`: which metrics of the model are not enforceable (too few clients) and why.
//!
//! Every request passes the checks of `guard.rs` (Host, Origin, Content-Type), and is
//! authenticated when a token is configured (except `/healthz` with `admin.public_healthz`, and
//! the status page's own files, which hold no data); a non-loopback address without a token is
//! refused by the config. The admin listener is separate from the client listeners: it is
//! not metered by the limiter and its requests are not counted in the proxy's traffic stats.

mod api;
mod auth;
mod blocks;
pub(crate) mod guard;
mod json;
mod live;
mod page;
pub(crate) mod router;
mod runtime;
mod scope;
mod thin;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zgate_config::{Admin, Config};
use zgate_limiter::{Limiter, LimiterConfig, Nanos};

use crate::state::overrides::Overrides;
use crate::state::persist::Persist;
use crate::state::reload::{ReloadError, ReloadReport};

use crate::listen::bind;
use crate::listen::bind::BindError;

pub use auth::constant_time_eq;

/// What the admin API operates on: the running server, seen only through what the endpoints
/// need (the server implements it; this room never names the server).
pub(crate) trait Control: Send + Sync + 'static {
    /// The limiter: mode, model, thresholds, block list, client table.
    fn limiter(&self) -> &Limiter;
    /// Now, on the limiter's clock.
    fn now(&self) -> Nanos;
    /// The config in force.
    fn config(&self) -> Arc<Config>;
    /// `[limits]` as mapped onto the limiter's settings, in force.
    fn limiter_config(&self) -> Arc<LimiterConfig>;
    /// The state file.
    fn persist(&self) -> &Persist;
    /// `[limits]` of the config file alone, before the runtime overrides.
    fn file_limiter_config(&self) -> Arc<LimiterConfig>;
    /// The runtime overrides in force.
    fn overrides(&self) -> Overrides;
    /// Replaces the runtime overrides: lays them over the file's `[limits]`, applies the result
    /// to the limiter (or refuses it, changing nothing) and saves the state file.
    fn set_overrides(&self, overrides: Overrides) -> Result<(), zgate_limiter::LimiterConfigError>;
    /// Saves the manual blocks to the state file (after one was added or removed).
    fn blocks_changed(&self);
    /// `/metrics`: the Prometheus text of a scrape now.
    fn metrics(&self) -> String;
    /// Re-reads the config file and applies it, or refuses it.
    fn reload(&self) -> Result<ReloadReport, ReloadError>;
    /// The fleet's state, `None` without `[fleet]`.
    fn fleet(&self) -> Option<FleetView>;
}

/// What `GET /api/v1/fleet` shows.
pub(crate) struct FleetView {
    /// This instance's name.
    pub(crate) instance: String,
    /// The Redis URL without its password.
    pub(crate) redis: String,
    /// Connection, outbox, lag, training.
    pub(crate) status: zgate_fleet::StatusView,
}
pub use json::MAX_BODY_BYTES;

/// The running admin listener.
pub(crate) struct AdminHandle {
    /// Its bound address.
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl AdminHandle {
    /// Stops accepting and closes the admin connections.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long an admin client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the admin API per `config`. `Ok(None)` when it is disabled, or when the default
/// address is taken (warned); an explicitly configured address that cannot be bound is an
/// error naming `admin.addr`.
pub(crate) async fn start(
    core: Arc<dyn Control>,
    config: &Admin,
) -> Result<Option<AdminHandle>, BindError> {
    if !config.enabled {
        tracing::info!("admin API disabled (admin.enabled = false)");
        return Ok(None);
    }
    let addr = config.listen_addr();
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) if config.addr.is_none() => {
            tracing::warn!(
                error = %e,
                "admin API not started: default address {addr} unavailable (set admin.addr)"
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(BindError {
                key: "admin.addr".into(),
                addr,
                source,
            })
        }
    };
    let local = listener.local_addr().map_err(|source| BindError {
        key: "admin.addr".into(),
        addr,
        source,
    })?;
    tracing::info!(addr = %local, token = config.token.is_some(), "admin API ready");
    let site = Arc::new(guard::Site {
        addr: local,
        token: config.token.clone(),
        public_healthz: config.public_healthz,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let core = core.clone();
            let site = site.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let core = core.clone();
                    let site = site.clone();
                    async move { Ok::<_, Infallible>(router::handle(&*core, &site, peer, req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
    });
    Ok(Some(AdminHandle {
        addr: local,
        task,
        stop,
    }))
}
