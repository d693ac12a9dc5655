//! Driving one hyper connection to its end while enforcing what hyper does not: blocks (the
//! kill switch: RST for HTTP/1, GOAWAY for HTTP/2), the HTTP/1 header deadline, the idle
//! timeout, and the server's shutdown phase.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use zgate_limiter::Glitch;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use tokio::sync::watch;
use zgate_config::Timeouts;

use super::serve::Phase;
use super::watchdog::{watchdog_tick, Watch, Watchdog};
use crate::account::meter::Meter;
use crate::http::service::Services;
use crate::limits::BlockAction;

/// A hyper server connection that can be asked to finish gracefully.
pub(super) trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<I, S, B> Graceful for http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E, B> Graceful for http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What the driver of a connection needs besides the connection itself.
pub(super) struct Link {
    pub(super) meter: Arc<Meter>,
    pub(super) fd: RawFd,
    pub(super) peer: SocketAddr,
    pub(super) shared: Arc<Services>,
}

/// How long a blocked HTTP/2 connection may still run after its GOAWAY (reset), or a blocked
/// connection with `block_action = "reply"` may take to send its replies, before it is closed.
const KILL_GRACE_RESET: Duration = Duration::from_millis(100);
const KILL_GRACE_REPLY: Duration = Duration::from_secs(1);

/// Polls the connection to completion while enforcing blocks, the header deadline (HTTP/1),
/// the idle timeout and the server's shutdown phase.
pub(super) async fn drive<C: Graceful>(
    conn: C,
    link: &Link,
    t: &Timeouts,
    http1: bool,
    phase: &mut watch::Receiver<Phase>,
) {
    let accounting = link.meter.accounting();
    let clock = link.shared.clock;
    let peer = link.peer;
    let mut conn = std::pin::pin!(conn);
    let tick = watchdog_tick(t);
    let mut watchdog = Watchdog::new(t, http1, accounting, clock.now());
    let mut closing = false;
    let mut kill_deadline: Option<tokio::time::Instant> = None;
    if *phase.borrow() != Phase::Running {
        conn.as_mut().graceful();
        closing = true;
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                    // HTTP/1: hyper answered 400 (431 for a head too large) and closed: the
                    // client's glitch. (HTTP/2's errors are counted by the write tap.)
                    if http1 && e.is_parse_too_large() {
                        link.meter.glitch(Glitch::OversizedHeaders);
                    } else if http1 && e.is_parse() {
                        link.meter.glitch(Glitch::ConnectionError);
                    }
                }
                if kill_deadline.is_some() && http1 {
                    reset_on_close(link.fd);
                }
                return;
            }
            _ = link.meter.killed(), if kill_deadline.is_none() => {
                let reply = matches!(link.meter.limits().block_action, BlockAction::Reply(_));
                if http1 && !(reply && accounting.requests() > 0) {
                    // RST: the client learns nothing and its socket state goes at once.
                    reset_on_close(link.fd);
                    return;
                }
                // HTTP/2: GOAWAY (hyper's graceful shutdown); with "reply", the requests in
                // progress get their block response first. Either way, closed soon.
                conn.as_mut().graceful();
                closing = true;
                let grace = if reply { KILL_GRACE_REPLY } else { KILL_GRACE_RESET };
                kill_deadline = Some(tokio::time::Instant::now() + grace);
            }
            _ = sleep_until_opt(kill_deadline) => {
                if http1 {
                    reset_on_close(link.fd);
                }
                return;
            }
            changed = phase.changed() => {
                let now = if changed.is_err() { Phase::Abort } else { *phase.borrow_and_update() };
                match now {
                    Phase::Running => {}
                    Phase::Draining => if !closing {
                        conn.as_mut().graceful();
                        closing = true;
                    },
                    Phase::Abort => return,
                }
            }
            _ = tokio::time::sleep(tick) => {
                let now = clock.now();
                if link.shared.limiter.is_blocked(peer.ip(), now) {
                    // Blocked because of another connection of the same client.
                    link.meter.kill_blocked();
                    continue;
                }
                match watchdog.tick(now, accounting, closing) {
                    Watch::Quiet => {}
                    Watch::HeaderDeadline => {
                        tracing::debug!(client = %peer, "request header deadline passed; closing");
                        return;
                    }
                    Watch::Idle => {
                        tracing::debug!(client = %peer, "idle; closing");
                        conn.as_mut().graceful();
                        closing = true;
                    }
                    // Asked to close once already and still silent: drop it.
                    Watch::StillIdle => return,
                }
            }
        }
    }
}

/// HTTP/1: runs the tunnel the connection switched to (a `101` was written and hyper let go
/// of the connection) to its end, in the connection's task, so its polls are charged with the
/// connection's and the connection stays counted until it ends. The tunnel keeps its own idle
/// timeout (`timeouts.idle`) and acts on a block itself (it resets the socket it holds); here
/// a block through another connection of the client, seen at a tick, fires the kill switch,
/// and the server's abort drops the tunnel (a drain lets it run, as any request in flight,
/// until `timeouts.shutdown_grace` ends in an abort).
pub(super) async fn tunnel(
    tunnel: crate::http::upgrade::Tunnel,
    link: &Link,
    t: &Timeouts,
    phase: &mut watch::Receiver<Phase>,
) {
    if *phase.borrow() == Phase::Abort {
        return;
    }
    let mut tunnel = tunnel;
    let tick = watchdog_tick(t);
    loop {
        tokio::select! {
            _ = tunnel.as_mut() => return,
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Abort {
                    return;
                }
            }
            _ = tokio::time::sleep(tick) => {
                if link.shared.limiter.is_blocked(link.peer.ip(), link.shared.clock.now()) {
                    link.meter.kill_blocked();
                }
            }
        }
    }
}

/// Completes at `deadline`, or never without one.
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Makes the socket's close send a TCP RST (SO_LINGER 0).
pub(crate) fn reset_on_close(fd: RawFd) {
    // SAFETY: `fd` is the connection's socket, owned by the connection the caller is still
    // holding (the hyper connection, or the stream itself), so it is open for this call.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
}
