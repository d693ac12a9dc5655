//! Serving one client connection: TLS or protocol detection, then hyper's HTTP/1.1 or HTTP/2
//! server, driven alongside a watchdog (header deadline, idle timeout) and the shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use zgate_config::{Http, Timeouts};

use crate::activity::Activity;
use crate::detect::{detect, DetectError, Protocol};
use crate::io::ClientIo;
use crate::limits::BlockAction;
use crate::meter::Meter;
use crate::service::{handle, ConnInfo, Shared};
use crate::tap::ReadTap;
use crate::timed::MeteredExec;

/// The server's lifecycle, as connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Finish in-flight requests, accept no new ones, then close.
    Draining,
    /// Close now.
    Abort,
}

/// Settings a connection needs, copied from the config at accept time.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// The `[timeouts]` section.
    pub timeouts: Timeouts,
    /// The `[http]` section.
    pub http: Http,
}

/// Serves one accepted connection (admitted by the limiter, measured by `meter`) until it
/// closes, the watchdog or a block closes it, or the server stops.
pub async fn serve(
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    meter: Arc<Meter>,
    mut phase: watch::Receiver<Phase>,
) {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let activity = Arc::new(Activity::new());
    let t = &settings.timeouts;
    let info = ConnInfo {
        shared: shared.clone(),
        forwarded_for: crate::headers::forwarded_for(peer.ip()),
        peer,
        tls: tls.is_some(),
        activity: activity.clone(),
        meter: meter.clone(),
        fd,
        body_read: t.body_read,
    };
    match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(t.tls_handshake, acceptor.accept(stream)).await;
            let tls_stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let protocol = if h2 { Protocol::H2c } else { Protocol::Http1 };
            let tap = tap(protocol, &settings);
            let io = ClientIo::new(tls_stream, Bytes::new(), activity, meter, tap);
            run(shared, settings, io, protocol, info, &mut phase).await;
        }
        None => {
            let mut stream = stream;
            let (protocol, prefix) = match detect(&mut stream, t.protocol_detect).await {
                Ok(found) => found,
                Err(DetectError::Timeout) => {
                    tracing::debug!(client = %peer, "protocol detection timed out");
                    return;
                }
                Err(DetectError::Closed) => return,
                Err(DetectError::Io(e)) => {
                    tracing::debug!(client = %peer, error = %e, "read failed before the first request");
                    return;
                }
            };
            let tap = tap(protocol, &settings);
            let io = ClientIo::new(stream, prefix, activity, meter, tap);
            run(shared, settings, io, protocol, info, &mut phase).await;
        }
    }
}

fn tap(protocol: Protocol, settings: &ConnSettings) -> ReadTap {
    match protocol {
        Protocol::Http1 => ReadTap::http1(http1_max_buf(settings)),
        Protocol::H2c => ReadTap::http2(),
    }
}

/// hyper's HTTP/1 read buffer limit: a whole request head must fit.
fn http1_max_buf(settings: &ConnSettings) -> usize {
    settings.http.max_header_bytes.max(8192)
}

async fn run<S>(
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    io: ClientIo<S>,
    protocol: Protocol,
    info: ConnInfo,
    phase: &mut watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = Link {
        activity: info.activity.clone(),
        meter: info.meter.clone(),
        fd: info.fd,
        peer: info.peer,
        shared: shared.clone(),
    };
    let exec = MeteredExec::new(info.meter.clone());
    // One reference count per request: everything a request needs hangs off `info`.
    let info = Arc::new(info);
    let service = service_fn(move |req| {
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(&info, req).await) }
    });
    let io = TokioIo::new(io);
    let t = &settings.timeouts;
    match protocol {
        Protocol::Http1 => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                // Our watchdog owns the header deadline: hyper's would also cut idle keep-alive
                // connections at the same deadline.
                .header_read_timeout(None)
                .keep_alive(true)
                .max_buf_size(http1_max_buf(&settings))
                .serve_connection(io, service);
            drive(conn, &link, t, true, phase).await;
        }
        Protocol::H2c => {
            let conn = http2::Builder::new(exec)
                .timer(TokioTimer::new())
                .max_concurrent_streams(settings.http.h2_max_concurrent_streams)
                .max_header_list_size(settings.http.h2_max_header_list_bytes)
                .serve_connection(io, service);
            drive(conn, &link, t, false, phase).await;
        }
    }
    let activity = &link.activity;
    link.shared
        .stats
        .connection_bytes(activity.bytes_in(), activity.bytes_out());
}

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
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
struct Link {
    activity: Arc<Activity>,
    meter: Arc<Meter>,
    fd: RawFd,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

/// How long a blocked HTTP/2 connection may still run after its GOAWAY (reset), or a blocked
/// connection with `block_action = "reply"` may take to send its replies, before it is closed.
const KILL_GRACE_RESET: Duration = Duration::from_millis(100);
const KILL_GRACE_REPLY: Duration = Duration::from_secs(1);

/// Polls the connection to completion while enforcing blocks, the header deadline (HTTP/1),
/// the idle timeout and the server's shutdown phase.
async fn drive<C: Graceful>(
    conn: C,
    link: &Link,
    t: &Timeouts,
    http1: bool,
    phase: &mut watch::Receiver<Phase>,
) {
    let activity = &link.activity;
    let peer = link.peer;
    let mut conn = std::pin::pin!(conn);
    let tick = watchdog_tick(t);
    let mut last_bytes = activity.bytes_moved();
    let mut last_change = Instant::now();
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
                }
                if kill_deadline.is_some() && http1 {
                    reset_on_close(link.fd);
                }
                return;
            }
            _ = link.meter.killed(), if kill_deadline.is_none() => {
                let reply = matches!(link.meter.limits().block_action, BlockAction::Reply(_));
                if http1 && !(reply && activity.in_flight() > 0) {
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
                let now = Instant::now();
                let shared = &link.shared;
                if shared.limiter.is_blocked(peer.ip(), shared.clock.at(now)) {
                    // Blocked because of another connection of the same client.
                    link.meter.kill_blocked();
                    continue;
                }
                if http1 {
                    if let Some(start) = activity.head_started_at() {
                        if now.duration_since(start) > t.header_read {
                            tracing::debug!(client = %peer, "request header deadline passed; closing");
                            return;
                        }
                    }
                }
                let moved = activity.bytes_moved();
                if moved != last_bytes {
                    last_bytes = moved;
                    last_change = now;
                } else if !t.idle.is_zero()
                    && activity.in_flight() == 0
                    && now.duration_since(last_change) >= t.idle
                {
                    if closing {
                        // Asked to close once already and still silent: drop it.
                        return;
                    }
                    tracing::debug!(client = %peer, "idle; closing");
                    conn.as_mut().graceful();
                    closing = true;
                    last_change = now;
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

/// How often the watchdog looks: a quarter of the shortest deadline it enforces, within
/// [10 ms, 5 s], so a deadline is enforced at most 25% late.
fn watchdog_tick(t: &Timeouts) -> Duration {
    let mut shortest = t.header_read;
    if !t.idle.is_zero() {
        shortest = shortest.min(t.idle);
    }
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}
