//! The server: binds the listeners, accepts connections, and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use zgate_config::Config;

use zgate_limiter::Limiter;

use crate::clock::Clock;
use crate::conn::{reset_on_close, serve, ConnSettings, Phase};
use crate::limits;
use crate::meter::Meter;
use crate::service::Shared;
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

/// A running zgate: its listeners, connections and limiter.
pub struct Server {
    addrs: Vec<SocketAddr>,
    phase: watch::Sender<Phase>,
    conns: Arc<ConnCount>,
    accept_loops: Vec<JoinHandle<()>>,
    ticker: JoinHandle<()>,
    grace: Duration,
    shared: Arc<Shared>,
}

/// How often the limiter is ticked (training ends on time, blocks expire) when no event does it.
const TICK: Duration = Duration::from_millis(250);

impl Server {
    /// Binds every listener of `config` and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let upstream = Upstream::new(&config).map_err(StartError)?;
        let (limiter_config, proxy_limits) =
            limits::from_config(&config.limits).map_err(StartError)?;
        let clock = Clock::new();
        let limiter = Limiter::new(limiter_config, None, clock.now())
            .map_err(|e| StartError(format!("`limits`: {e}")))?;
        let limiter = Arc::new(limiter);
        let shared = Arc::new(Shared {
            upstream,
            access_log: config.log.access,
            limiter: limiter.clone(),
            clock,
            limits: proxy_limits,
        });
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                limiter.tick(clock.now());
            }
        });
        let settings = Arc::new(ConnSettings {
            timeouts: config.timeouts.clone(),
            http: config.http.clone(),
        });
        let (phase, _) = watch::channel(Phase::Running);
        let conns = Arc::new(ConnCount::default());
        let mut addrs = Vec::new();
        let mut bound = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let acceptor = match &l.tls {
                Some(files) => Some(TlsAcceptor::from(
                    tls::server_config(&files.cert, &files.key, &format!("listener[{i}].tls"))
                        .map_err(StartError)?,
                )),
                None => None,
            };
            let listener = bind(l.addr).map_err(|e| {
                StartError(format!(
                    "`listener[{i}].addr`: cannot listen on {}: {e}",
                    l.addr
                ))
            })?;
            let local = listener
                .local_addr()
                .map_err(|e| StartError(format!("`listener[{i}].addr`: {e}")))?;
            tracing::info!(addr = %local, tls = acceptor.is_some(), "listening");
            addrs.push(local);
            bound.push((listener, acceptor));
        }
        let accept_loops = bound
            .into_iter()
            .map(|(listener, acceptor)| {
                tokio::spawn(accept_loop(
                    listener,
                    acceptor,
                    shared.clone(),
                    settings.clone(),
                    phase.subscribe(),
                    conns.clone(),
                ))
            })
            .collect();
        Ok(Server {
            addrs,
            phase,
            conns,
            accept_loops,
            ticker,
            grace: config.timeouts.shutdown_grace,
            shared,
        })
    }

    /// The limiter: mode, model, thresholds, block list, client table.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.shared.limiter
    }

    /// The clock the limiter runs on.
    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// The bound addresses, in the order of the config's listeners (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.open.load(Ordering::Acquire)
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeouts.shutdown_grace`,
    /// then cuts what is left.
    pub async fn shutdown(self) -> Shutdown {
        let _ = self.phase.send(Phase::Draining);
        for h in &self.accept_loops {
            h.abort();
        }
        let drained = tokio::time::timeout(self.grace, self.conns.wait_zero()).await;
        let outcome = match drained {
            Ok(()) => Shutdown::Drained,
            Err(_) => Shutdown::GraceExpired(self.connections()),
        };
        let _ = self.phase.send(Phase::Abort);
        self.ticker.abort();
        outcome
    }
}

/// Binds with a deep accept backlog and address reuse.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    phase: watch::Receiver<Phase>,
    conns: Arc<ConnCount>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(meter) = admit(&shared, &stream, peer) else {
            continue;
        };
        let guard = ConnGuard::new(conns.clone());
        let task = serve(
            shared.clone(),
            settings.clone(),
            stream,
            peer,
            tls.clone(),
            meter.clone(),
            phase.clone(),
        );
        tokio::spawn(async move {
            Timed::new(task, meter).await;
            drop(guard);
        });
    }
}

/// The limiter's word on a new connection, before any byte of it is read (so a blocked client
/// costs no TLS handshake). A refused connection is reset (SO_LINGER 0) when `stream` drops.
fn admit(shared: &Shared, stream: &tokio::net::TcpStream, peer: SocketAddr) -> Option<Arc<Meter>> {
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
    let meter = Meter::new(conn, shared.clock, peer, shared.limits);
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
