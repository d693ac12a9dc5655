//! The server: binds the listeners, accepts connections, drains them on shutdown, and owns what
//! changes at run time (the config behind a reload, the admin API, the state file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig};

use crate::admin::{self, AdminHandle};
use crate::clock::Clock;
use crate::conn::{reset_on_close, serve, ConnSettings, Phase};
use crate::limits;
use crate::meter::Meter;
use crate::metrics::Exporter;
use crate::persist::{self, LoadError, Persist};
use crate::service::Shared;
use crate::stats::Stats;
use crate::timed::Timed;
use crate::tls;
use crate::upstream::Upstream;

/// Why the server could not start. Its message names the config key at fault where there is one.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

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
pub(crate) struct Core {
    /// What every connection shares (backends, limiter, stats).
    pub(crate) shared: Arc<Shared>,
    /// Timeouts and protocol limits; new connections take the current ones.
    settings: ArcSwap<ConnSettings>,
    /// The config in force (the last one applied).
    pub(crate) config: ArcSwap<Config>,
    /// `[limits]` mapped onto the limiter's config, as in force.
    pub(crate) limiter_config: ArcSwap<LimiterConfig>,
    /// The file the config came from, re-read by a reload; `None` for an in-memory config.
    config_path: Option<PathBuf>,
    /// The bound listeners, by config address; `None` once shut down.
    listeners: Mutex<Option<Vec<Bound>>>,
    /// Serialises reloads.
    reloading: Mutex<()>,
    phase: watch::Sender<Phase>,
    conns: Arc<ConnCount>,
    /// The state file.
    pub(crate) persist: Persist,
    /// The Prometheus exporter of `/metrics`.
    pub(crate) exporter: Exporter,
    /// The runtime the accept loops run on: a thread of their own (see [`AcceptThread`]).
    accept_rt: tokio::runtime::Handle,
    /// The runtime connections are served on (the one `Server::start` was called in).
    workers: tokio::runtime::Handle,
}

/// A thread of its own for the accept loops, with a single-threaded runtime.
///
/// On the workers' runtime an accept loop waits its turn behind the connection tasks; under
/// load, a blocked client's new connections then sit in the accept queue while the kernel
/// takes its data, and an attacker reconnecting in a loop costs the proxy far more than the
/// RST it gets. Here a new connection is accepted as soon as epoll reports it: a blocked
/// client is reset at once on this thread, and an admitted connection moves to the workers'
/// runtime (its socket re-registered there).
struct AcceptThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AcceptThread {
    fn start() -> Result<(AcceptThread, tokio::runtime::Handle), StartError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError(format!("cannot start the accept thread: {e}")))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("zgate-accept".into())
            .spawn(move || {
                // Returns when the server is dropped; dropping the runtime then drops the
                // accept loops and closes their listeners.
                let _ = rt.block_on(stopped);
            })
            .map_err(|e| StartError(format!("cannot start the accept thread: {e}")))?;
        Ok((AcceptThread { stop: Some(stop) }, handle))
    }
}

impl Drop for AcceptThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One bound listener.
struct Bound {
    /// The address as written in the config (port 0 stays 0): the identity across reloads.
    config_addr: SocketAddr,
    /// The address actually bound.
    local: SocketAddr,
    /// TLS, swappable by a reload (certificate rotation).
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners bound by this reload (their bound addresses).
    pub listeners_added: Vec<SocketAddr>,
    /// Listeners closed by this reload (their connections finish on their own).
    pub listeners_removed: Vec<SocketAddr>,
    /// Backends now in force.
    pub backends: usize,
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
        let upstream = Upstream::new(&config).map_err(StartError)?;
        let (limiter_config, proxy_limits) =
            limits::from_config(&config.limits).map_err(|e| StartError(e.to_string()))?;
        let clock = Clock::new();
        let saved = load_state(config.limits.state_file.as_deref());
        let limiter = start_limiter(&config, &limiter_config, saved.as_ref(), clock)?;
        let limiter = Arc::new(limiter);
        let persist = Persist::new(
            config.limits.state_file.clone(),
            &limiter,
            saved.and_then(|s| s.trained_at),
        );
        let shared = Arc::new(Shared {
            upstream: ArcSwap::from_pointee(upstream),
            access_log: config.log.access.into(),
            limiter: limiter.clone(),
            clock,
            limits: ArcSwap::from_pointee(proxy_limits),
            stats: Stats::default(),
        });
        let (phase, _) = watch::channel(Phase::Running);
        let (accept_thread, accept_rt) = AcceptThread::start()?;
        let core = Arc::new(Core {
            accept_rt,
            workers: tokio::runtime::Handle::current(),
            shared,
            settings: ArcSwap::from_pointee(ConnSettings {
                timeouts: config.timeouts.clone(),
                http: config.http.clone(),
            }),
            config: ArcSwap::from_pointee(config.clone()),
            limiter_config: ArcSwap::from_pointee(limiter_config),
            config_path: path,
            listeners: Mutex::new(Some(Vec::new())),
            reloading: Mutex::new(()),
            phase,
            conns: Arc::new(ConnCount::default()),
            persist,
            exporter: Exporter::new(),
        });
        let mut bound = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let acceptor = tls_acceptor(l, i).map_err(StartError)?;
            let (listener, local) = bind_listener(l.addr, i).map_err(StartError)?;
            tracing::info!(addr = %local, tls = acceptor.is_some(), "listening");
            bound.push(core.spawn_listener(l.addr, listener, local, acceptor));
        }
        *core.lock_listeners() = Some(bound);
        let admin = match admin::start(core.clone(), &config.admin).await {
            Ok(a) => a,
            Err(e) => {
                core.stop_listeners();
                return Err(StartError(e));
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
        &self.core.shared.limiter
    }

    /// The clock the limiter runs on.
    pub fn clock(&self) -> Clock {
        self.core.shared.clock
    }

    /// The bound addresses, in the order of the config's listeners (port 0 resolved). After a
    /// reload, the listeners of the config in force.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core
            .lock_listeners()
            .as_ref()
            .map(|ls| ls.iter().map(|b| b.local).collect())
            .unwrap_or_default()
    }

    /// The admin API's bound address, `None` when it is not running (`admin.enabled = false`,
    /// or the default address was taken).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The proxy's traffic counters.
    pub fn stats(&self) -> &Stats {
        &self.core.shared.stats
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.core.conns.open.load(Ordering::Acquire)
    }

    /// Re-reads the config file and applies it without dropping connections, or refuses it
    /// (and keeps the config in force) with the reason. See [`crate::reload`].
    pub fn reload(&self) -> Result<ReloadReport, String> {
        self.core.reload()
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeouts.shutdown_grace`,
    /// then cuts what is left.
    pub async fn shutdown(self) -> Shutdown {
        let core = &self.core;
        let _ = core.phase.send(Phase::Draining);
        core.stop_listeners();
        if let Some(admin) = &self.admin {
            admin.stop();
        }
        let grace = core.config.load().timeouts.shutdown_grace;
        let drained = tokio::time::timeout(grace, core.conns.wait_zero()).await;
        let outcome = match drained {
            Ok(()) => Shutdown::Drained,
            Err(_) => Shutdown::GraceExpired(self.connections()),
        };
        let _ = core.phase.send(Phase::Abort);
        self.ticker.abort();
        let _ = core.persist.sync(&core.shared.limiter);
        outcome
    }
}

impl Core {
    /// Re-reads the config file, validates all of it (limits mapping, backends, TLS files, new
    /// listeners bound), then applies it. See `reload.rs` for what applies how.
    pub(crate) fn reload(self: &Arc<Self>) -> Result<ReloadReport, String> {
        let result = self.reload_inner();
        match &result {
            Ok(r) => {
                Stats::add(&self.shared.stats.reloads, 1);
                tracing::info!(
                    added = r.listeners_added.len(),
                    removed = r.listeners_removed.len(),
                    backends = r.backends,
                    "config reloaded"
                );
            }
            Err(e) => {
                Stats::add(&self.shared.stats.reload_failures, 1);
                tracing::warn!(error = %e, "config reload refused; the config in force stays");
            }
        }
        result
    }

    fn reload_inner(self: &Arc<Self>) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.config_path else {
            return Err("zgate was started without a config file: nothing to reload".into());
        };
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let bound: Vec<SocketAddr> = self
            .lock_listeners()
            .as_ref()
            .map(|ls| ls.iter().map(|b| b.config_addr).collect())
            .unwrap_or_default();
        let plan = crate::reload::Plan::prepare(&config, &self.config.load(), &bound)?;
        self.apply(config, plan)
    }

    fn apply(
        self: &Arc<Self>,
        config: Config,
        plan: crate::reload::Plan,
    ) -> Result<ReloadReport, String> {
        let crate::reload::Plan {
            upstream,
            limiter_config,
            proxy_limits,
            tls,
            new,
        } = plan;
        // The limiter first: it is the only step that could refuse, and nothing has changed yet.
        self.shared
            .limiter
            .reconfigure(&limiter_config)
            .map_err(|e| format!("`limits`: {e}"))?;
        let mut guard = self.lock_listeners();
        let Some(listeners) = guard.as_mut() else {
            return Err("zgate is shutting down".into());
        };
        self.shared.upstream.store(Arc::new(upstream));
        self.shared.limits.store(Arc::new(proxy_limits));
        self.shared
            .access_log
            .store(config.log.access, Ordering::Relaxed);
        self.settings.store(Arc::new(ConnSettings {
            timeouts: config.timeouts.clone(),
            http: config.http.clone(),
        }));
        let mut removed = Vec::new();
        listeners.retain(|b| {
            let keep = config.listeners.iter().any(|l| l.addr == b.config_addr);
            if !keep {
                // Closing the socket stops accepting; its connections run on their own tasks.
                b.task.abort();
                removed.push(b.local);
                tracing::info!(addr = %b.local, "listener closed by reload");
            }
            keep
        });
        for b in listeners.iter() {
            if let Some((_, acceptor)) = tls.iter().find(|(a, _)| *a == b.config_addr) {
                b.tls.store(acceptor.clone().map(Arc::new));
            }
        }
        let mut added = Vec::new();
        for (config_addr, listener, local, acceptor) in new {
            tracing::info!(addr = %local, tls = acceptor.is_some(), "listening");
            added.push(local);
            listeners.push(self.spawn_listener(config_addr, listener, local, acceptor));
        }
        // Keep the config's listener order.
        listeners.sort_by_key(|b| {
            config
                .listeners
                .iter()
                .position(|l| l.addr == b.config_addr)
        });
        drop(guard);
        let backends = config.backends.len();
        self.limiter_config.store(Arc::new(limiter_config));
        self.config.store(Arc::new(config));
        Ok(ReloadReport {
            listeners_added: added,
            listeners_removed: removed,
            backends,
        })
    }

    fn spawn_listener(
        self: &Arc<Self>,
        config_addr: SocketAddr,
        listener: TcpListener,
        local: SocketAddr,
        acceptor: Option<TlsAcceptor>,
    ) -> Bound {
        let tls = Arc::new(ArcSwapOption::from(acceptor.map(Arc::new)));
        // The listener was registered with this runtime's reactor: hand it to the accept
        // thread's (epoll registration follows the runtime that polls it).
        let core = self.clone();
        let loop_tls = tls.clone();
        let task = self.accept_rt.spawn(async move {
            let listener = listener.into_std().and_then(TcpListener::from_std);
            match listener {
                Ok(l) => accept_loop(l, loop_tls, core).await,
                Err(e) => {
                    tracing::error!(addr = %local, error = %e, "cannot accept on the listener")
                }
            }
        });
        Bound {
            config_addr,
            local,
            tls,
            task,
        }
    }

    fn stop_listeners(&self) {
        if let Some(ls) = self.lock_listeners().take() {
            for b in ls {
                b.task.abort();
            }
        }
    }

    /// Open client connections.
    pub(crate) fn open_connections(&self) -> usize {
        self.conns.open.load(Ordering::Acquire)
    }

    fn lock_listeners(&self) -> MutexGuard<'_, Option<Vec<Bound>>> {
        // The list is consistent after every statement: a poisoned lock is usable.
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ticks the limiter and saves the state file when training has ended (or the mode changed).
async fn tick_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limiter = core.shared.limiter.clone();
    let clock = core.shared.clock;
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
    let limiter = Limiter::new(limiter_config.clone(), model, now)
        .map_err(|e| StartError(format!("`limits`: {e}")))?;
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

/// The TLS acceptor of listener `i`, if it has TLS (reads and checks the PEM files).
pub(crate) fn tls_acceptor(
    l: &zgate_config::Listener,
    i: usize,
) -> Result<Option<TlsAcceptor>, String> {
    match &l.tls {
        Some(files) => Ok(Some(TlsAcceptor::from(tls::server_config(
            &files.cert,
            &files.key,
            &format!("listener[{i}].tls"),
        )?))),
        None => Ok(None),
    }
}

/// Binds listener `i` at `addr`; returns it with its bound address.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    i: usize,
) -> Result<(TcpListener, SocketAddr), String> {
    let listener =
        bind(addr).map_err(|e| format!("`listener[{i}].addr`: cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("`listener[{i}].addr`: {e}"))?;
    Ok((listener, local))
}

/// Binds with a deep accept backlog and address reuse.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(listener: TcpListener, tls: Arc<ArcSwapOption<TlsAcceptor>>, core: Arc<Core>) {
    let shared = &core.shared;
    // Accepted sockets are plain ones (see `accept_raw`); the listener itself stays registered.
    let listener = match listener.into_std().and_then(|l| {
        // SAFETY: the std listener owns its socket, open until the `AsyncFd` drops it.
        unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }.map_err(Into::into)
    }) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot poll the listener");
            return;
        }
    };
    #[cfg(target_os = "linux")]
    let mut syn_drop = crate::syndrop::SynDrop::default();
    let mut prune = tokio::time::interval(Duration::from_secs(1));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(target_os = "linux")]
        let pruning = !syn_drop.is_empty();
        #[cfg(not(target_os = "linux"))]
        let pruning = false;
        let accepted = tokio::select! {
            accepted = listener.async_io(Interest::READABLE, accept_raw) => accepted,
            _ = prune.tick(), if pruning => {
                #[cfg(target_os = "linux")]
                {
                    let now = shared.clock.now();
                    let blocked = |ip| shared.limiter.is_blocked(ip, now);
                    if let Err(e) = syn_drop.prune(listener.get_ref(), blocked) {
                        tracing::warn!(error = %e, "cannot update the listener's SYN filter");
                    }
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Stats::add(&shared.stats.connections_accepted, 1);
        let Some(meter) = admit(shared, &stream, peer) else {
            Stats::add(&shared.stats.connections_refused, 1);
            #[cfg(target_os = "linux")]
            {
                let after = shared.limits.load().syn_drop_after;
                if after > 0 && shared.limiter.is_blocked(peer.ip(), shared.clock.now()) {
                    match syn_drop.refused(listener.get_ref(), peer.ip(), after) {
                        Ok(true) => tracing::warn!(
                            client = %peer.ip(),
                            refusals = after,
                            "blocked client keeps reconnecting: its SYNs are now dropped"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot set the listener's SYN filter")
                        }
                    }
                }
            }
            continue;
        };
        #[cfg(target_os = "linux")]
        if syn_drop.is_active() {
            // Accepted sockets inherit the listener's filter; this one has no use for it.
            if let Err(e) = crate::syndrop::detach(&stream) {
                tracing::debug!(client = %peer, error = %e, "cannot remove the SYN filter");
            }
        }
        if let Err(e) = stream.set_nonblocking(true) {
            tracing::debug!(client = %peer, error = %e, "cannot hand the connection over");
            continue;
        }
        let guard = ConnGuard::new(core.conns.clone());
        let acceptor = tls.load_full().map(|a| TlsAcceptor::clone(&a));
        let settings = core.settings.load_full();
        let phase = core.phase.subscribe();
        let shared = shared.clone();
        core.workers.spawn(async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "cannot register the connection");
                    return;
                }
            };
            let task = serve(
                shared,
                settings,
                stream,
                peer,
                acceptor,
                meter.clone(),
                phase,
            );
            Timed::new(task, meter).await;
            drop(guard);
        });
    }
}

/// Accepts one connection as a plain socket: it is registered with a runtime only once
/// admitted, and then with the worker that serves it, so a refused connection (a blocked
/// client reconnecting at full speed) costs accept, one setsockopt and close, and no epoll
/// registration on the accept thread.
fn accept_raw(
    listener: &std::net::TcpListener,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let (sock, addr) = socket2::SockRef::from(listener).accept()?;
    let peer = addr.as_socket().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "accepted a non-IP socket")
    })?;
    Ok((sock.into(), peer))
}

/// The limiter's word on a new connection, before any byte of it is read (so a blocked client
/// costs no TLS handshake). A refused connection is reset (SO_LINGER 0) when `stream` drops.
fn admit(shared: &Shared, stream: &std::net::TcpStream, peer: SocketAddr) -> Option<Arc<Meter>> {
    use std::os::fd::AsRawFd;
    let now = shared.clock.now();
    if shared.limiter.is_blocked(peer.ip(), now) {
        reset_on_close(stream.as_raw_fd());
        return None;
    }
    let (conn, verdict) = shared.limiter.connection_opened(peer.ip(), now);
    let Some(conn) = conn else {
        tracing::debug!(client = %peer.ip(), verdict = ?verdict, "connection refused");
        reset_on_close(stream.as_raw_fd());
        return None;
    };
    let meter = Meter::new(conn, shared.clock, peer, **shared.limits.load());
    if !meter.verdict(verdict) || meter.is_killed() {
        reset_on_close(stream.as_raw_fd());
        return None;
    }
    Some(meter)
}

/// Counts open connections so shutdown can wait for zero.
#[derive(Debug, Default)]
struct ConnCount {
    open: AtomicUsize,
    zero: Notify,
}

impl ConnCount {
    async fn wait_zero(&self) {
        loop {
            let mut notified = std::pin::pin!(self.zero.notified());
            // Register before checking, so a drop to zero in between is not missed.
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct ConnGuard(Arc<ConnCount>);

impl ConnGuard {
    fn new(count: Arc<ConnCount>) -> Self {
        count.open.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}
