//! Hot reload: a new config is checked whole before anything of it applies.
//!
//! [`Plan::prepare`] does every step that can fail (the file's own validation, the `[limits]`
//! mapping, the backends, the TLS files of every listener, binding the new listeners) without
//! touching the running server; the server (`server.rs`) then swaps it in, and cannot fail
//! half-way. What applies how:
//!
//! - backends, `[[pool]]`s, `[[route]]`s and `[upstream]`: new pools and routes are swapped in
//!   whole (`arc-swap`); requests in flight keep the pools they started with, which are
//!   dropped when the last of them ends. A backend keeps its counters (and, for
//!   `least_in_flight`, its requests in flight) when its pool's name and its address stay;
//!   idle connections are not carried over; the old pools' health checks stop at the swap
//!   and the new pools' start (`upstream.health`);
//! - `[timeouts]`, `[http]`, `[limits]` block action and memory costs: new connections take the
//!   new values; open connections keep theirs;
//! - the rest of `[limits]`: `Limiter::reconfigure` (thresholds, enables, guards, durations),
//!   with the runtime overrides (`overrides.rs`) laid over the new file's values;
//!   `limits.mode`, `max_clients`, `max_blocks` and `ipv6_prefix` apply at start only;
//! - listeners, by their config address: a new one is bound (and a bind failure refuses the
//!   reload), a removed one stops accepting while its connections finish, a kept one stays
//!   bound and gets its TLS certificates re-read (every file of a `certs` list);
//! - `log.access` applies at once; `log.level`, `runtime.workers` and `[admin]` at restart
//!   (a reload that changes them says so in the log).

use std::net::SocketAddr;

use zgate_config::Config;
use zgate_limiter::LimiterConfig;

use crate::http::Router;
use crate::limits::ProxyLimits;
use crate::listen::{bind_listener, Kept, NewListener};
use crate::state::checked::{CheckError, Checked};

/// A new config, checked and ready to apply.
pub(crate) struct Plan {
    /// The new backend pools and routes.
    pub(crate) upstream: Router,
    /// The new `[limits]`, for the limiter.
    pub(crate) limiter_config: LimiterConfig,
    /// The new `[limits]`, for the proxy.
    pub(crate) proxy_limits: ProxyLimits,
    /// TLS and PROXY protocol of the listeners that stay, by config address.
    pub(crate) tls: Vec<Kept>,
    /// Listeners to add, bound.
    pub(crate) new: Vec<NewListener>,
}

impl Plan {
    /// Checks `config` against the running one (`current`, with listeners bound at the config
    /// addresses `bound`) and binds its new listeners. Nothing running changes; on error the
    /// new sockets are closed again.
    pub(crate) fn prepare(
        checked: Checked,
        current: &Config,
        bound: &[SocketAddr],
    ) -> Result<(Config, Plan), ReloadError> {
        let Checked {
            config,
            upstream,
            limiter_config,
            proxy_limits,
            tls: acceptors,
            fleet_ca: _,
        } = checked;
        let mut tls = Vec::new();
        let mut new = Vec::new();
        for ((i, l), acceptor) in config.listeners.iter().enumerate().zip(acceptors) {
            if bound.contains(&l.addr) {
                tls.push(Kept {
                    config_addr: l.addr,
                    tls: acceptor,
                    proxy_protocol: l.proxy_protocol,
                });
            } else {
                let (listener, local) = bind_listener(l.addr, &format!("listener[{i}].addr"))?;
                new.push(NewListener {
                    config_addr: l.addr,
                    listener,
                    local,
                    tls: acceptor,
                    proxy_protocol: l.proxy_protocol,
                });
            }
        }
        warn_restart_only(&config, current);
        let plan = Plan {
            upstream,
            limiter_config,
            proxy_limits,
            tls,
            new,
        };
        Ok((config, plan))
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners bound by this reload (their bound addresses).
    pub listeners_added: Vec<SocketAddr>,
    /// Listeners closed by this reload (their connections finish on their own).
    pub listeners_removed: Vec<SocketAddr>,
    /// Backends now in force, all pools together.
    pub backends: usize,
}

/// Why a reload was refused (the config in force stays). The message names the file's key.
#[derive(Debug)]
pub enum ReloadError {
    /// zgate was started without a config file: there is nothing to re-read.
    NoConfigFile,
    /// The file fails a check (syntax, unknown key, a value out of range, `[limits]`, the
    /// backends, TLS files): the same check as `zgate check-config`.
    Check(CheckError),
    /// A new listener cannot be bound.
    Bind(crate::listen::bind::BindError),
    /// The limiter refused the new `[limits]`.
    Limiter(zgate_limiter::LimiterConfigError),
    /// zgate is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoConfigFile => {
                f.write_str("zgate was started without a config file: nothing to reload")
            }
            ReloadError::Check(e) => e.fmt(f),
            ReloadError::Bind(e) => e.fmt(f),
            ReloadError::Limiter(e) => write!(f, "`limits`: {e}"),
            ReloadError::ShuttingDown => f.write_str("zgate is shutting down"),
        }
    }
}

impl std::error::Error for ReloadError {}

impl From<crate::listen::bind::BindError> for ReloadError {
    fn from(e: crate::listen::bind::BindError) -> Self {
        ReloadError::Bind(e)
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
