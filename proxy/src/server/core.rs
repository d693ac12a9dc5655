//! What the server, a reload and the admin API share ([`Core`]): applying a checked config,
//! the runtime overrides, the admin API's [`Control`], and the tick that ends training on time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig, Nanos};

use crate::admin::{Control, FleetView};
use crate::conn::ConnSettings;
use crate::http::identity::{self, Identity};
use crate::http::service::Services;
use crate::listen::Admission;
use crate::listen::{Listeners, Stopped};
use crate::state::checked::Checked;
use crate::state::exporter::{Exporter, Scrape};
use crate::state::fleet::FleetTask;
use crate::state::overrides::Overrides;
use crate::state::persist::{self, Persist};
use crate::state::reload::Plan;
pub use crate::state::reload::{ReloadError, ReloadReport};
use crate::state::restore;
use crate::stats::Stats;

/// What the server, the reload and the admin API share.
pub(super) struct Core {
    /// What the accept loops need, what every connection shares among it.
    pub(super) admission: Arc<Admission>,
    /// The config in force (the last one applied).
    pub(super) config: ArcSwap<Config>,
    /// `[limits]` mapped onto the limiter's config, as in force: the file's with the runtime
    /// overrides laid over it.
    pub(super) limiter_config: ArcSwap<LimiterConfig>,
    /// `[limits]` of the config file alone.
    pub(super) file_limiter_config: ArcSwap<LimiterConfig>,
    /// The runtime overrides (API, `zgate ctl`), kept in the state file.
    pub(super) overrides: Mutex<Overrides>,
    /// The file the config came from, re-read by a reload; `None` for an in-memory config.
    pub(super) config_path: Option<PathBuf>,
    /// The bound listeners.
    pub(super) listeners: Listeners,
    /// Serialises reloads.
    pub(super) reloading: Mutex<()>,
    /// The state file.
    pub(super) persist: Persist,
    /// The Prometheus exporter of `/metrics`.
    pub(super) exporter: Exporter,
    /// The fleet task (`[fleet]`), if configured.
    pub(super) fleet: Option<FleetTask>,
}

/// How often the limiter is ticked (training ends on time, blocks expire) when no event does it.
const TICK: Duration = Duration::from_millis(250);

impl Core {
    pub(super) fn services(&self) -> &Services {
        &self.admission.services
    }

    /// Re-reads the config file, validates all of it (limits mapping, backends, TLS files, new
    /// listeners bound), then applies it. See `state/reload.rs` for what applies how.
    pub(super) fn reload(&self) -> Result<ReloadReport, ReloadError> {
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
        upstream.start_checks();
        // The old pool's checks stop now; its requests in flight finish on it.
        services.upstream.swap(Arc::new(upstream)).retire();
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
        let backends = services.upstream.load().backend_count();
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
            fleet: self.fleet.as_ref().map(|f| f.handle.status()),
        })
    }

    fn fleet(&self) -> Option<FleetView> {
        let f = self.fleet.as_ref()?;
        Some(FleetView {
            instance: f.handle.instance().to_owned(),
            redis: f.redis.clone(),
            status: f.handle.status(),
        })
    }

    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        Core::reload(self)
    }
}

/// Ticks the limiter, saves the state file when training has ended (or the mode changed), and
/// closes the backends' idle connections that expired or that their backend closed.
pub(super) async fn tick_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limiter = core.services().limiter.clone();
    let clock = core.services().clock;
    loop {
        every.tick().await;
        limiter.tick(clock.now());
        let _ = core.persist.sync(&limiter);
        for pool in core.services().upstream.load().pools() {
            pool.sweep_idle();
        }
    }
}
