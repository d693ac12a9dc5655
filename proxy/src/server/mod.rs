//! The server's lifecycle: start (listeners, limiter, admin API), a reload applied, shutdown
//! with a drain; and what it hands the rooms below it (the accept loops' [`Admission`], the
//! admin API's [`Control`]).
//!
//! - `mod.rs`: [`Server`]: start and shutdown, and what tests and `main` read of it;
//! - `core.rs`: what the server, a reload and the admin API share: a checked config applied,
//!   runtime overrides, the admin API's `Control`, the limiter's tick;
//! - `start.rs`: the state file read back and the limiter built from it;
//! - `error.rs`: [`StartError`] and [`Shutdown`].

mod core;
mod error;
mod start;

use self::core::{tick_loop, Core};
pub use error::{Shutdown, StartError};
use start::{load_state, start_limiter};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zgate_config::Config;
use zgate_limiter::Limiter;

use crate::admin::{self, AdminHandle};
use crate::clock::Clock;
use crate::conn::{ConnSettings, Phase};
use crate::http::identity::{self, Identity};
use crate::http::service::Services;
use crate::listen::{bind_listener, AcceptThread, Admission, ConnCount};
use crate::listen::{Listeners, NewListener};
use crate::state::checked::{CheckError, Checked};
use crate::state::exporter::Exporter;
use crate::state::fleet::{self};
use crate::state::persist::{self, Persist};
pub use crate::state::reload::{ReloadError, ReloadReport};
use crate::state::restore;
use crate::stats::Stats;
use crate::worker::{self, Workers};

/// A running zgate: its listeners, connections, limiter and admin API.
pub struct Server {
    core: Arc<Core>,
    ticker: JoinHandle<()>,
    admin: Option<AdminHandle>,
    /// The thread the listeners accept on; dropped with the server.
    _accept_thread: AcceptThread,
    /// The threads connections are served on; dropped (stopped) with the server, last.
    _workers: Workers,
}

impl Server {
    /// Binds every listener of `config` and the admin API and starts serving. Must run inside a
    /// tokio runtime. Without a config file, [`Server::reload`] has nothing to re-read: see
    /// [`Server::start_with_path`].
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with_path(config, None).await
    }

    /// Like [`Server::start`], remembering that `config` was loaded from `path`, which a reload
    /// (SIGHUP, `POST /api/v1/reload`) re-reads.
    pub async fn start_with_path(
        config: Config,
        path: Option<PathBuf>,
    ) -> Result<Server, StartError> {
        let checked = Checked::new(config).map_err(|e| CheckError {
            file: path.clone(),
            ..e
        })?;
        Self::start_checked(checked, path).await
    }

    /// Starts on a config already through [`Checked`] (what `zgate --config` does: the same
    /// check as `zgate check-config`), remembering the file a reload re-reads.
    pub async fn start_checked(
        checked: Checked,
        path: Option<PathBuf>,
    ) -> Result<Server, StartError> {
        let saved = load_state(checked.config.limits.state_file.as_deref());
        let has_model = saved.as_ref().is_some_and(|s| s.model.is_some());
        checked
            .check_start_mode(has_model)
            .map_err(|e| CheckError {
                file: path.clone(),
                ..e
            })?;
        let Checked {
            config,
            upstream,
            limiter_config,
            proxy_limits,
            tls,
            fleet_ca,
        } = checked;
        let clock = Clock::new();
        let overrides = restore::overrides(saved.as_ref());
        let effective = overrides.apply(&limiter_config);
        let workers =
            Workers::start(worker::count(config.runtime.workers)).map_err(StartError::Workers)?;
        let limiter = start_limiter(
            &config,
            &effective,
            saved.as_ref(),
            clock,
            workers.set().len(),
        )?;
        let limiter = Arc::new(limiter);
        let (now, unix_now) = (clock.now(), persist::unix_now());
        if let Some(saved) = &saved {
            restore::blocks(&limiter, &saved.blocks, now, unix_now);
        }
        let fleet = fleet::start(config.fleet.as_ref(), fleet_ca, &limiter, clock)
            .map_err(StartError::Fleet)?;
        let persist = Persist::new(
            config.limits.state_file.clone(),
            &limiter,
            saved.and_then(|s| s.trained_at),
            restore::runtime(&overrides, &limiter, now, unix_now),
        );
        let services = Arc::new(Services {
            upstream: ArcSwap::from_pointee(upstream),
            access_log: config.log.access.into(),
            limiter: limiter.clone(),
            clock,
            limits: ArcSwap::from_pointee(proxy_limits),
            would_block_log: Arc::default(),
            stats: Arc::new(Stats::default()),
            identity: ArcSwap::from_pointee(Identity::new(&config.client_ip)),
        });
        services.upstream.load().start_checks();
        let identity = services.identity.load();
        limiter.set_exempt(identity::exempt(&config.limits.exempt, &identity));
        let (phase, _) = watch::channel(Phase::Running);
        let (accept_thread, accept_rt) = AcceptThread::start().map_err(StartError::AcceptThread)?;
        let admission = Arc::new(Admission {
            services,
            settings: ArcSwap::from_pointee(ConnSettings {
                timeouts: config.timeouts.clone(),
                http: config.http.clone(),
            }),
            phase,
            conns: Arc::new(ConnCount::default()),
            workers: workers.set(),
        });
        let core = Arc::new(Core {
            listeners: Listeners::new(accept_rt, admission.clone()),
            admission,
            config: ArcSwap::from_pointee(config.clone()),
            limiter_config: ArcSwap::from_pointee(effective),
            file_limiter_config: ArcSwap::from_pointee(limiter_config),
            overrides: Mutex::new(overrides),
            config_path: path,
            reloading: Mutex::new(()),
            persist,
            exporter: Exporter::new(),
            fleet,
        });
        bind_listeners(&core, &config, tls)?;
        let admin = match admin::start(core.clone(), &config.admin).await {
            Ok(a) => a,
            Err(e) => {
                core.listeners.stop();
                return Err(StartError::Bind(e));
            }
        };
        let ticker = tokio::spawn(tick_loop(core.clone()));
        Ok(Server {
            core,
            ticker,
            admin,
            _accept_thread: accept_thread,
            _workers: workers,
        })
    }

    /// The limiter: mode, model, thresholds, block list, client table.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.core.services().limiter
    }

    /// The clock the limiter runs on.
    pub fn clock(&self) -> Clock {
        self.core.services().clock
    }

    /// The bound addresses, in the order of the config's listeners (port 0 resolved). After a
    /// reload, the listeners of the config in force.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core.listeners.local_addrs()
    }

    /// The admin API's bound address, `None` when it is not running (`admin.enabled = false`,
    /// or the default address was taken).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The fleet's state (`[fleet]`), `None` when this instance runs alone.
    pub fn fleet(&self) -> Option<zgate_fleet::StatusView> {
        self.core.fleet.as_ref().map(|f| f.handle.status())
    }

    /// The proxy's traffic counters.
    pub fn stats(&self) -> &Stats {
        &self.core.services().stats
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.core.admission.conns.open()
    }

    /// Re-reads the config file and applies it without dropping connections, or refuses it
    /// (and keeps the config in force) with the reason. See [`crate::state::reload`].
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.core.reload()
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeouts.shutdown_grace`,
    /// then cuts what is left.
    pub async fn shutdown(self) -> Shutdown {
        let core = &self.core;
        let _ = core.admission.phase.send(Phase::Draining);
        core.listeners.stop();
        if let Some(admin) = &self.admin {
            admin.stop();
        }
        let grace = core.config.load().timeouts.shutdown_grace;
        let drained = tokio::time::timeout(grace, core.admission.conns.wait_zero()).await;
        let outcome = match drained {
            Ok(()) => Shutdown::Drained,
            Err(_) => Shutdown::GraceExpired(self.connections()),
        };
        let _ = core.admission.phase.send(Phase::Abort);
        self.ticker.abort();
        core.services().upstream.load().retire();
        if let Some(f) = &core.fleet {
            f.handle.stop();
        }
        let _ = core.persist.sync(&core.services().limiter);
        outcome
    }
}

/// Binds every listener of `config` (with its TLS acceptor from `tls`, in the same order) and
/// starts accepting on it.
fn bind_listeners(
    core: &Core,
    config: &Config,
    tls: Vec<Option<tokio_rustls::TlsAcceptor>>,
) -> Result<(), StartError> {
    for ((i, l), tls) in config.listeners.iter().enumerate().zip(tls) {
        let (listener, local) = bind_listener(l.addr, &format!("listener[{i}].addr"))?;
        let new = NewListener {
            config_addr: l.addr,
            listener,
            local,
            tls,
            proxy_protocol: l.proxy_protocol,
        };
        // Not stopped: nothing has stopped the listeners of a server still starting.
        let _ = core.listeners.add(new);
    }
    Ok(())
}
