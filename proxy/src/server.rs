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

use crate::conn::{serve, ConnSettings, Phase};
use crate::service::Shared;
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

/// A running zgate: its listeners and connections.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    phase: watch::Sender<Phase>,
    conns: Arc<ConnCount>,
    accept_loops: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Server {
    /// Binds every listener of `config` and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let upstream = Upstream::new(&config).map_err(StartError)?;
        let shared = Arc::new(Shared {
            upstream,
            access_log: config.log.access,
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
            grace: config.timeouts.shutdown_grace,
        })
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
        let guard = ConnGuard::new(conns.clone());
        let task = serve(
            shared.clone(),
            settings.clone(),
            stream,
            peer,
            tls.clone(),
            phase.clone(),
        );
        tokio::spawn(async move {
            task.await;
            drop(guard);
        });
    }
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
