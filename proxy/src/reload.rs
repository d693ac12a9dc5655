//! Hot reload: a new config is checked whole before anything of it applies.
//!
//! [`Plan::prepare`] does every step that can fail (the file's own validation, the `[limits]`
//! mapping, the backends, the TLS files of every listener, binding the new listeners) without
//! touching the running server; `Core::apply` (server.rs) then swaps it in, and cannot fail
//! half-way. What applies how:
//!
//! - backends and `[upstream]`: a new pool is swapped in (`arc-swap`); requests in flight keep
//!   the pool they started with, which is dropped when the last of them ends;
//! - `[timeouts]`, `[http]`, `[limits]` block action and memory costs: new connections take the
//!   new values; open connections keep theirs;
//! - the rest of `[limits]`: `Limiter::reconfigure` (thresholds, enables, guards, durations);
//!   `limits.mode`, `max_clients`, `max_blocks` and `ipv6_prefix` apply at start only;
//! - listeners, by their config address: a new one is bound (and a bind failure refuses the
//!   reload), a removed one stops accepting while its connections finish, a kept one stays
//!   bound and gets its TLS certificate re-read;
//! - `log.access` applies at once; `log.level`, `runtime.workers` and `[admin]` at restart
//!   (a reload that changes them says so in the log).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zgate_config::Config;
use zgate_limiter::LimiterConfig;

use crate::limits::{self, ProxyLimits};
use crate::server::{bind_listener, tls_acceptor};
use crate::upstream::Upstream;

/// A new config, checked and ready to apply.
pub(crate) struct Plan {
    /// The new backend pool.
    pub(crate) upstream: Upstream,
    /// The new `[limits]`, for the limiter.
    pub(crate) limiter_config: LimiterConfig,
    /// The new `[limits]`, for the proxy.
    pub(crate) proxy_limits: ProxyLimits,
    /// TLS of the listeners that stay, by config address.
    pub(crate) tls: Vec<(SocketAddr, Option<TlsAcceptor>)>,
    /// Listeners to add: config address, the bound socket, its address, TLS.
    #[allow(clippy::type_complexity)]
    pub(crate) new: Vec<(SocketAddr, TcpListener, SocketAddr, Option<TlsAcceptor>)>,
}

impl Plan {
    /// Checks `config` against the running one (`current`, with listeners bound at the config
    /// addresses `bound`) and binds its new listeners. Nothing running changes; on error the
    /// new sockets are closed again.
    pub(crate) fn prepare(
        config: &Config,
        current: &Config,
        bound: &[SocketAddr],
    ) -> Result<Plan, String> {
        let (limiter_config, proxy_limits) =
            limits::from_config(&config.limits).map_err(|e| e.to_string())?;
        let upstream = Upstream::new(config)?;
        let mut tls = Vec::new();
        let mut new = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let acceptor = tls_acceptor(l, i)?;
            if bound.contains(&l.addr) {
                tls.push((l.addr, acceptor));
            } else {
                let (listener, local) = bind_listener(l.addr, i)?;
                new.push((l.addr, listener, local, acceptor));
            }
        }
        warn_restart_only(config, current);
        Ok(Plan {
            upstream,
            limiter_config,
            proxy_limits,
            tls,
            new,
        })
    }
}

/// Logs the changes a reload does not apply.
fn warn_restart_only(new: &Config, old: &Config) {
    let mut later = Vec::new();
    if new.admin != old.admin {
        later.push("admin");
    }
    if new.log.level != old.log.level {
        later.push("log.level");
    }
    if new.runtime != old.runtime {
        later.push("runtime");
    }
    let (n, o) = (&new.limits, &old.limits);
    if n.mode != o.mode {
        later.push("limits.mode (use the admin API: zgate ctl mode=...)");
    }
    if n.max_clients != o.max_clients {
        later.push("limits.max_clients");
    }
    if n.max_blocks != o.max_blocks {
        later.push("limits.max_blocks");
    }
    if n.ipv6_prefix != o.ipv6_prefix {
        later.push("limits.ipv6_prefix");
    }
    if n.state_file != o.state_file {
        later.push("limits.state_file");
    }
    if !later.is_empty() {
        tracing::warn!(
            keys = %later.join(", "),
            "these changes apply at the next restart, not by reload"
        );
    }
}
