//! The accept thread and its loops: a new connection is taken as a plain socket, checked by
//! the limiter before any byte of it is read, and handed to a worker, or reset. On a
//! `proxy_protocol` listener only the peer is checked here (a trusted proxy, when
//! `client_ip.trusted_proxies` is set); the client its PROXY header names is checked on the
//! worker, right after the header.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use zgate_limiter::Verdict;

use crate::account::meter::{log_block, Meter};
use crate::account::timed::Timed;
use crate::conn::{reset_on_close, serve, ConnSettings, Phase};
use crate::http::service::Services;
use zgate_limiter::Identified;

use super::proxied::read_header;
use crate::stats::{HeaderFailure, Stats};
use crate::worker::WorkerSet;

/// A thread of its own for the accept loops, with a single-threaded runtime.
///
/// On the workers' runtime an accept loop waits its turn behind the connection tasks; under
/// load, a blocked client's new connections then sit in the accept queue while the kernel
/// takes its data, and an attacker reconnecting in a loop costs the proxy far more than the
/// RST it gets. Here a new connection is accepted as soon as epoll reports it: a blocked
/// client is reset at once on this thread, and an admitted connection moves to the workers'
/// worker (its socket registered with that worker's runtime, where it stays).
pub(crate) struct AcceptThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AcceptThread {
    /// Starts the thread; returns it with its runtime's handle.
    pub(crate) fn start() -> std::io::Result<(AcceptThread, tokio::runtime::Handle)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("zgate-accept".into())
            .spawn(move || {
                // Returns when the server is dropped; dropping the runtime then drops the
                // accept loops and closes their listeners.
                let _ = rt.block_on(stopped);
            })?;
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

/// What the accept loops need to admit a connection and hand it to a worker.
pub(crate) struct Admission {
    /// What every connection shares.
    pub(crate) services: Arc<Services>,
    /// Timeouts and protocol limits; new connections take the current ones (a reload swaps
    /// them).
    pub(crate) settings: ArcSwap<ConnSettings>,
    /// The server's lifecycle, as connections see it.
    pub(crate) phase: watch::Sender<Phase>,
    /// Open client connections.
    pub(crate) conns: Arc<ConnCount>,
    /// The worker threads connections are served on (each connection on one, for its life).
    pub(crate) workers: Arc<WorkerSet>,
}

/// Accepts on `listener` until the task is aborted. With `proxy_protocol` set, connections
/// are admitted on a worker once their PROXY header names the client (see
/// [`hand_over_proxied`]).
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    proxy_protocol: Arc<AtomicBool>,
    admission: Arc<Admission>,
) {
    let services = &admission.services;
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
    let mut syn_drop = super::syndrop::SynDrop::default();
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
                    let now = services.clock.now();
                    let blocked = |ip| services.limiter.is_blocked(ip, now);
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
        Stats::add(&services.stats.connections_accepted, 1);
        if proxy_protocol.load(Ordering::Relaxed) {
            let identity = services.identity.load();
            if identity.has_trusted() && !identity.is_trusted(peer.ip()) {
                tracing::debug!(peer = %peer, "refused: not a trusted proxy (client_ip.trusted_proxies)");
                reset_on_close(stream.as_raw_fd());
                Stats::add(&services.stats.connections_refused, 1);
                services
                    .stats
                    .proxy_protocol_error(HeaderFailure::Untrusted);
                continue;
            }
            hand_over_proxied(&admission, stream, peer, &tls);
            continue;
        }
        let Some(meter) = admit(services, stream.as_raw_fd(), peer, Identified::Peer) else {
            Stats::add(&services.stats.connections_refused, 1);
            #[cfg(target_os = "linux")]
            syn_drop_refused(&mut syn_drop, listener.get_ref(), services, peer);
            continue;
        };
        #[cfg(target_os = "linux")]
        if syn_drop.is_active() {
            // Accepted sockets inherit the listener's filter; this one has no use for it.
            if let Err(e) = super::syndrop::detach(&stream) {
                tracing::debug!(client = %peer, error = %e, "cannot remove the SYN filter");
            }
        }
        hand_over(&admission, stream, peer, &tls, meter);
    }
}

/// Serves an admitted connection on a worker.
fn hand_over(
    admission: &Admission,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: &ArcSwapOption<TlsAcceptor>,
    meter: Arc<Meter>,
) {
    let guard = ConnGuard::new(admission.conns.clone());
    let acceptor = tls.load_full().map(|a| TlsAcceptor::clone(&a));
    let settings = admission.settings.load_full();
    let phase = admission.phase.subscribe();
    let services = admission.services.clone();
    admission.workers.spawn(async move {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "cannot register the connection");
                return;
            }
        };
        // Boxed: the connection's state machine (TLS, hyper, the watchdog) is kilobytes, and
        // inline it made this task as large, copied several times on the accept thread as the
        // task was spawned (callgrind: 35-60 k instructions of memcpy per connection, varying
        // with inlining). Boxed here, on the worker, it is written once.
        let task = Box::pin(serve(
            services,
            settings,
            stream,
            peer,
            Bytes::new(),
            acceptor,
            meter.clone(),
            phase,
        ));
        Timed::new(task, meter).await;
        drop(guard);
    });
}

/// Serves a connection of a `proxy_protocol` listener on a worker: its PROXY header is read
/// first (within `timeouts.protocol_detect`, before TLS and protocol detection), then the
/// client it names is admitted as any other at accept, so a blocked client is reset right
/// after its header, before any TLS work. A connection without a valid header is closed and
/// counted (`zgate_proxy_protocol_errors_total`).
fn hand_over_proxied(
    admission: &Admission,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: &ArcSwapOption<TlsAcceptor>,
) {
    let guard = ConnGuard::new(admission.conns.clone());
    let acceptor = tls.load_full().map(|a| TlsAcceptor::clone(&a));
    let settings = admission.settings.load_full();
    let phase = admission.phase.subscribe();
    let services = admission.services.clone();
    admission.workers.spawn(async move {
        let mut stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "cannot register the connection");
                return;
            }
        };
        let deadline = settings.timeouts.protocol_detect;
        let proxied = match read_header(&mut stream, peer, deadline).await {
            Ok(p) => p,
            Err(f) => {
                services.stats.proxy_protocol_error(f.why);
                match f.error {
                    Some(e) => tracing::debug!(peer = %peer, reason = f.why.name(), error = %e, "PROXY header refused"),
                    None => tracing::debug!(peer = %peer, reason = f.why.name(), "no PROXY header"),
                }
                return;
            }
        };
        let how = if proxied.from_header {
            Identified::ProxyProtocol
        } else {
            Identified::Peer
        };
        let Some(meter) = admit(&services, stream.as_raw_fd(), proxied.client, how) else {
            Stats::add(&services.stats.connections_refused, 1);
            return;
        };
        // Boxed, as in `hand_over`.
        let task = Box::pin(serve(
            services,
            settings,
            stream,
            proxied.client,
            proxied.rest,
            acceptor,
            meter.clone(),
            phase,
        ));
        Timed::new(task, meter).await;
        drop(guard);
    });
}

/// A refused connection of a blocked client counts towards dropping its SYNs
/// (`limits.syn_drop_after`).
#[cfg(target_os = "linux")]
fn syn_drop_refused(
    syn_drop: &mut super::syndrop::SynDrop,
    listener: &std::net::TcpListener,
    services: &Services,
    peer: SocketAddr,
) {
    let after = services.limits.load().syn_drop_after;
    if after == 0 || !services.limiter.is_blocked(peer.ip(), services.clock.now()) {
        return;
    }
    match syn_drop.refused(listener, peer.ip(), after) {
        Ok(true) => tracing::warn!(
            client = %peer.ip(),
            refusals = after,
            "blocked client keeps reconnecting: its SYNs are now dropped"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot set the listener's SYN filter"),
    }
}

/// Accepts one connection as a plain socket, non-blocking: it is registered with a runtime
/// only once admitted, and then with the worker that serves it, so a refused connection (a
/// blocked client reconnecting at full speed) costs accept, one setsockopt and close, and no
/// epoll registration on the accept thread. An admitted one costs no other system call here:
/// `accept4` makes it non-blocking, and it inherits `TCP_NODELAY` from the listener (`bind.rs`).
fn accept_raw(
    listener: &std::net::TcpListener,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let listener = socket2::SockRef::from(listener);
    #[cfg(target_os = "linux")]
    let (sock, addr) = listener.accept4(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)?;
    #[cfg(not(target_os = "linux"))]
    let (sock, addr) = listener.accept().and_then(|(s, a)| {
        s.set_nonblocking(true)?;
        Ok((s, a))
    })?;
    let peer = addr.as_socket().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "accepted a non-IP socket")
    })?;
    Ok((sock.into(), peer))
}

/// The limiter's word on a new connection of `client` (identified `how`), before any byte of
/// its own is read (so a blocked client costs no TLS handshake). A refused connection is reset
/// (SO_LINGER 0 on `fd`) when its socket drops.
fn admit(
    services: &Services,
    fd: std::os::fd::RawFd,
    client: SocketAddr,
    how: Identified,
) -> Option<Arc<Meter>> {
    let now = services.clock.now();
    if services.limiter.is_blocked(client.ip(), now) {
        reset_on_close(fd);
        return None;
    }
    let (conn, verdict) = services.limiter.connection_opened(client.ip(), now);
    let Some(conn) = conn else {
        // Decided here (a connection flood, a full table): logged at warn like any block.
        match verdict {
            Verdict::Block { reason, value, z } => log_block(client.ip(), reason, value, z),
            other => tracing::debug!(client = %client.ip(), verdict = ?other, "connection refused"),
        }
        reset_on_close(fd);
        return None;
    };
    conn.owner().identified_by(how);
    let peer = client;
    let limits = **services.limits.load();
    let log = services.would_block_log.clone();
    let meter = Meter::new(conn, services.clock, peer, limits, log);
    if !meter.verdict(verdict) || meter.is_killed() {
        reset_on_close(fd);
        return None;
    }
    Some(meter)
}

/// Counts open connections so shutdown can wait for zero.
#[derive(Debug, Default)]
pub(crate) struct ConnCount {
    open: AtomicUsize,
    zero: Notify,
}

impl ConnCount {
    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes when no connection is open.
    pub(crate) async fn wait_zero(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_socket_is_non_blocking_and_has_nodelay_from_the_listener() {
        let listener = crate::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = listener.into_std().unwrap();
        // The std listener is non-blocking (tokio's): wait for the connection to be queued.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, peer) = loop {
            match accept_raw(&listener) {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(peer.ip().is_loopback());
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.nonblocking().unwrap());
        assert!(sock.nodelay().unwrap());
        // And it registers with a runtime as it is.
        assert!(tokio::net::TcpStream::from_std(stream).is_ok());
    }
}
