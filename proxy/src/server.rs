//! The server's lifecycle: start (listeners, limiter, admin API), a reload applied, shutdown
//! with a drain; and what it hands the rooms below it (the accept loops' [`Admission`], the
//! admin API's [`Control`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig, Nanos};

use crate::admin::{self, AdminHandle, Control};
use crate::clock::Clock;
use crate::conn::{ConnSettings, Phase};
use crate::http::identity::{self, Identity};
use crate::http::service::Services;
use crate::listen::bind::BindError;
use crate::listen::{bind_listener, AcceptThread, Admission, ConnCount};
use crate::listen::{Listeners, NewListener, Stopped};
use crate::state::checked::{CheckError, Checked};
use crate::state::exporter::{Exporter, Scrape};
use crate::state::overrides::Overrides;
use crate::state::persist::{self, LoadError, Persist};
use crate::state::reload::Plan;
pub use crate::state::reload::{ReloadError, ReloadReport};
use crate::state::restore;
use crate::stats::Stats;

/// Why the server could not start. Its message names the config key at fault where there is one.
#[derive(Debug)]
pub enum StartError {
    /// The config fails a check ([`Checked`]: values, `[limits]`, backends, TLS files).
    Check(CheckError),
    /// The limiter refused its settings or the start mode.
    Limiter(zgate_limiter::Error),
    /// A listener (or the admin API's) cannot be bound.
    Bind(BindError),
    /// The accept thread could not be started.
    AcceptThread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Check(e) => e.fmt(f),
            StartError::Limiter(e) => write!(f, "`limits`: {e}"),
            StartError::Bind(e) => e.fmt(f),
            StartError::AcceptThread(e) => write!(f, "cannot start the accept thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<CheckError> for StartError {
    fn from(e: CheckError) -> Self {
        StartError::Check(e)
    }
}

impl From<BindError> for StartError {
    fn from(e: BindError) -> Self {
        StartError::Bind(e)
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out; this many connections were cut.
    GraceExpired(usize),
}

/// A running zgate: its listeners, connections, limiter and admin API.
pub struct Server {
    core: Arc<Core>,
    ticker: JoinHandle<()>,
    admin: Option<AdminHandle>,
    /// The thread the listeners accept on; dropped with the server.
    _accept_thread: AcceptThread,
}

/// What the server, the reload and the admin API share.
struct Core {
    /// What the accept loops need, what every connection shares among it.
    admission: Arc<Admission>,
    /// The config in force (the last one applied).
    config: ArcSwap<Config>,
    /// `[limits]` mapped onto the limiter's config, as in force: the file's with the runtime
    /// overrides laid over it.
    limiter_config: ArcSwap<LimiterConfig>,
    /// `[limits]` of the config file alone.
    file_limiter_config: ArcSwap<LimiterConfig>,
    /// The runtime overrides (API, `zgate ctl`), kept in the state file.
    overrides: Mutex<Overrides>,
    /// The file the config came from, re-read by a reload; `None` for an in-memory config.
    config_path: Option<PathBuf>,
    /// The bound listeners.
    listeners: Listeners,
    /// Serialises reloads.
    reloading: Mutex<()>,
    /// The state file.
    persist: Persist,
    /// The Prometheus exporter of `/metrics`.
    exporter: Exporter,
}

/// How often the limiter is ticked (training ends on time, blocks expire) when no event does it.
const TICK: Duration = Duration::from_millis(250);

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
        } = checked;
        let clock = Clock::new();
        let overrides = restore::overrides(saved.as_ref());
        let effective = overrides.apply(&limiter_config);
        let limiter = start_limiter(&config, &effective, saved.as_ref(), clock)?;
        let limiter = Arc::new(limiter);
        let (now, unix_now) = (clock.now(), persist::unix_now());
        if let Some(saved) = &saved {
            restore::blocks(&limiter, &saved.blocks, now, unix_now);
        }
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
            workers: tokio::runtime::Handle::current(),
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
        });
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
        let _ = core.persist.sync(&core.services().limiter);
        outcome
    }
}

impl Core {
    fn services(&self) -> &Services {
        &self.admission.services
    }

    /// Re-reads the config file, validates all of it (limits mapping, backends, TLS files, new
    /// listeners bound), then applies it. See `state/reload.rs` for what applies how.
    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let result = self.reload_inner();
        let stats = &self.services().stats;
        match &result {
            Ok(r) => {
                Stats::add(&stats.reloads, 1);
                tracing::info!(
                    added = r.listeners_added.len(),
                    removed = r.listeners_removed.len(),
                    backends = r.backends,
                    "config reloaded"
                );
            }
            Err(e) => {
                Stats::add(&stats.reload_failures, 1);
                tracing::warn!(error = %e, "config reload refused; the config in force stays");
            }
        }
        result
    }

    fn reload_inner(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.config_path else {
            return Err(ReloadError::NoConfigFile);
        };
        let checked = Checked::load(path).map_err(ReloadError::Check)?;
        let bound = self.listeners.config_addrs();
        let (config, plan) = Plan::prepare(checked, &self.config.load(), &bound)?;
        self.apply(config, plan)
    }

    /// Swaps a checked config in; only the limiter can still refuse it, before anything
    /// changes.
    fn apply(&self, config: Config, plan: Plan) -> Result<ReloadReport, ReloadError> {
        let Plan {
            mut upstream,
            limiter_config,
            proxy_limits,
            tls,
            new,
        } = plan;
        let services = self.services();
        let overrides = self.lock_overrides();
        let effective = overrides.apply(&limiter_config);
        services
            .limiter
            .reconfigure(&effective)
            .map_err(ReloadError::Limiter)?;
        upstream.carry_stats_from(&services.upstream.load());
        services.upstream.store(Arc::new(upstream));
        services.limits.store(Arc::new(proxy_limits));
        let identity = Identity::new(&config.client_ip);
        services
            .limiter
            .set_exempt(identity::exempt(&config.limits.exempt, &identity));
        services.identity.store(Arc::new(identity));
        services
            .access_log
            .store(config.log.access, std::sync::atomic::Ordering::Relaxed);
        self.admission.settings.store(Arc::new(ConnSettings {
            timeouts: config.timeouts.clone(),
            http: config.http.clone(),
        }));
        let order: Vec<SocketAddr> = config.listeners.iter().map(|l| l.addr).collect();
        let changes = self
            .listeners
            .apply(&order, tls, new)
            .map_err(|Stopped| ReloadError::ShuttingDown)?;
        let backends = config.backends.len();
        self.limiter_config.store(Arc::new(effective));
        self.file_limiter_config.store(Arc::new(limiter_config));
        drop(overrides);
        self.config.store(Arc::new(config));
        Ok(ReloadReport {
            listeners_added: changes.added,
            listeners_removed: changes.removed,
            backends,
        })
    }
}

impl Core {
    fn lock_overrides(&self) -> std::sync::MutexGuard<'_, Overrides> {
        // Replaced whole under the lock: a poisoned lock still holds a consistent value.
        self.overrides.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the overrides and manual blocks in force to the state file, and saves it.
    fn save_runtime(&self, overrides: &Overrides) {
        let limiter = &self.services().limiter;
        let now = self.services().clock.now();
        let runtime = restore::runtime(overrides, limiter, now, persist::unix_now());
        self.persist.set_runtime(runtime);
        let _ = self.persist.sync(limiter);
    }
}

impl Control for Core {
    fn limiter(&self) -> &Limiter {
        &self.services().limiter
    }

    fn now(&self) -> Nanos {
        self.services().clock.now()
    }

    fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    fn limiter_config(&self) -> Arc<LimiterConfig> {
        self.limiter_config.load_full()
    }

    fn persist(&self) -> &Persist {
        &self.persist
    }

    fn file_limiter_config(&self) -> Arc<LimiterConfig> {
        self.file_limiter_config.load_full()
    }

    fn overrides(&self) -> Overrides {
        self.lock_overrides().clone()
    }

    fn set_overrides(&self, new: Overrides) -> Result<(), zgate_limiter::LimiterConfigError> {
        // After a reload in progress, so that it lays these overrides over its new file.
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut overrides = self.lock_overrides();
        let effective = new.apply(&self.file_limiter_config.load());
        self.services().limiter.reconfigure(&effective)?;
        self.limiter_config.store(Arc::new(effective));
        *overrides = new;
        self.save_runtime(&overrides);
        Ok(())
    }

    fn blocks_changed(&self) {
        let overrides = self.lock_overrides();
        self.save_runtime(&overrides);
    }

    fn metrics(&self) -> String {
        let services = self.services();
        let upstream = services.upstream.load();
        self.exporter.render(&Scrape {
            stats: &services.stats,
            open_connections: self.admission.conns.open(),
            upstream: &upstream,
            limiter: &services.limiter,
            now: services.clock.now(),
        })
    }

    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        Core::reload(self)
    }
}

/// Ticks the limiter and saves the state file when training has ended (or the mode changed).
async fn tick_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limiter = core.services().limiter.clone();
    let clock = core.services().clock;
    loop {
        every.tick().await;
        limiter.tick(clock.now());
        let _ = core.persist.sync(&limiter);
    }
}

/// Reads the state file, if configured. A missing file is normal; a bad one is reported and
/// ignored (zgate starts without a model rather than not at all).
fn load_state(path: Option<&Path>) -> Option<persist::SavedState> {
    let path = path?;
    match persist::load(path) {
        Ok(s) => {
            tracing::info!(
                file = %path.display(),
                mode = %s.mode,
                model = s.model.is_some(),
                "state loaded"
            );
            Some(s)
        }
        Err(LoadError::Missing) => {
            tracing::info!(file = %path.display(), "no saved state yet; starting without a model");
            None
        }
        Err(LoadError::Invalid(e)) => {
            tracing::warn!("state file unusable, starting without a saved model: {e}");
            None
        }
    }
}

/// The limiter at start: the saved model, and the saved mode unless `[limits] mode` is set
/// (the config wins; without it a restarted zgate resumes in the mode it had, e.g. defence).
fn start_limiter(
    config: &Config,
    limiter_config: &LimiterConfig,
    saved: Option<&persist::SavedState>,
    clock: Clock,
) -> Result<Limiter, StartError> {
    let now = clock.now();
    let model = saved.and_then(|s| s.model.clone());
    let limiter = Limiter::new(limiter_config.clone(), model, now).map_err(StartError::Limiter)?;
    if config.limits.mode.is_none() {
        if let Some(mode) = saved.and_then(|s| s.mode().ok()) {
            if let Err(e) = limiter.set_mode(mode, now) {
                tracing::warn!(error = %e, "saved mode not resumed");
            }
        }
    }
    tracing::info!(
        mode = %limiter.mode(),
        model = limiter.model().is_some(),
        "limiter ready"
    );
    Ok(limiter)
}
