//! Serving one client connection: TLS or protocol detection, then hyper's HTTP/1.1 or HTTP/2
//! server, driven alongside a watchdog (header deadline, idle timeout) and the shutdown signal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use zgate_config::{Http, Timeouts};

use super::coalesce::Coalesced;
use super::drive::{drive, tunnel, Link};
use super::gather::{self, Gather, Gathered, Gathering};
use super::rewind::Rewind;

use crate::account::meter::Meter;
use crate::account::timed::MeteredExec;
use crate::account::window::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};
use crate::conn::detect::{detect, DetectError, Protocol};
use crate::conn::io::ClientIo;
use crate::conn::tap::ReadTap;
use crate::http::service::{handle, ConnInfo, Services};

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
/// closes, the watchdog or a block closes it, or the server stops. `peer` is the connection's
/// client: the socket's peer, or the address of its PROXY protocol header, after which
/// `rest` was read (the client's first bytes, replayed before the socket's).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    shared: Arc<Services>,
    settings: Arc<ConnSettings>,
    stream: TcpStream,
    peer: SocketAddr,
    rest: Bytes,
    tls: Option<TlsAcceptor>,
    meter: Arc<Meter>,
    phase: watch::Receiver<Phase>,
) {
    // Accepted on Linux, it has it from the listener already (`listen/bind.rs`).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let (stream, gather) = gather::split(stream);
    let serving = serve_gathered(
        shared, settings, stream, &gather, peer, rest, tls, meter, phase,
    );
    Gathering::new(serving, gather.clone()).await;
}

/// [`serve`] on the socket split for gathering: TLS connections and cleartext HTTP/2 gather
/// each poll's writes (`gather.rs`).
#[allow(clippy::too_many_arguments)]
async fn serve_gathered(
    shared: Arc<Services>,
    settings: Arc<ConnSettings>,
    stream: Gathered,
    gather: &Gather,
    peer: SocketAddr,
    rest: Bytes,
    tls: Option<TlsAcceptor>,
    meter: Arc<Meter>,
    mut phase: watch::Receiver<Phase>,
) {
    let fd = stream.as_raw_fd();
    let stream = Rewind::new(stream, rest);
    let t = &settings.timeouts;
    let identity = shared.identity.load_full();
    let info = ConnInfo {
        shared: shared.clone(),
        forwarded_for: crate::http::headers::forwarded_for(peer.ip()),
        peer,
        trusted: identity.is_trusted(peer.ip()),
        identity,
        recent: Default::default(),
        tls: tls.is_some(),
        meter: meter.clone(),
        fd,
        body_read: t.body_read,
        body_min_rate: t.body_min_rate,
        idle: t.idle,
        tunnel: Default::default(),
    };
    match tls {
        Some(acceptor) => {
            gather.enable();
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
            let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
            let tap = tap(protocol, &settings, &meter);
            // HTTP/2: what a poll writes goes in one TLS record (`coalesce.rs`).
            let tls_stream = Coalesced::new(tls_stream, h2.then_some(gather));
            let io = ClientIo::new(tls_stream, Bytes::new(), meter, tap, shared.stats.clone());
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
            if protocol == Protocol::Http2 {
                gather.enable();
            }
            let tap = tap(protocol, &settings, &meter);
            let io = ClientIo::new(stream, prefix, meter, tap, shared.stats.clone());
            run(shared, settings, io, protocol, info, &mut phase).await;
        }
    }
}

/// The read tap of a connection, and the inbound window granted to it in its accounting
/// (held request bytes within it are not charged, see `account/window.rs`).
fn tap(protocol: Protocol, settings: &ConnSettings, meter: &Meter) -> ReadTap {
    match protocol {
        // HTTP/1 has no window: what hyper buffers (at most twice its read buffer) is charged,
        // so a large head being received still counts.
        Protocol::Http1 => ReadTap::http1(http1_max_buf(settings)),
        Protocol::Http2 => {
            meter
                .accounting()
                .grant_inbound(u64::from(H2_CONNECTION_WINDOW));
            ReadTap::http2()
        }
    }
}

/// hyper's HTTP/1 read buffer limit: a whole request head must fit.
fn http1_max_buf(settings: &ConnSettings) -> usize {
    settings.http.max_header_bytes.max(8192)
}

/// Serves an HTTP/1 connection over any IO, as [`serve`] does after protocol detection (for
/// the fuzz targets, which use in-memory IO).
#[cfg(feature = "fuzzing")]
pub(crate) async fn run_http1<S>(
    shared: Arc<Services>,
    settings: Arc<ConnSettings>,
    io: ClientIo<S>,
    info: ConnInfo,
    phase: &mut watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    run(shared, settings, io, Protocol::Http1, info, phase).await;
}

async fn run<S>(
    shared: Arc<Services>,
    settings: Arc<ConnSettings>,
    io: ClientIo<S>,
    protocol: Protocol,
    info: ConnInfo,
    phase: &mut watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = Link {
        meter: info.meter.clone(),
        fd: info.fd,
        peer: info.peer,
        shared: shared.clone(),
    };
    let exec = MeteredExec::new(info.meter.clone());
    // One reference count per request: everything a request needs hangs off `info`.
    let info = Arc::new(info);
    let slot = info.clone();
    let service = service_fn(move |req| {
        let info = info.clone();
        // Boxed: a request's state machine is kilobytes, and hyper and tokio move the future
        // several times (into the HTTP/2 stream task, its timer wrapper, the task's cell, its
        // stage). Boxed once here, each of those moves copies a pointer (callgrind: memcpy was
        // a fifth of the instructions per h2c request).
        Box::pin(async move { Ok::<_, Infallible>(handle(&info, req).await) })
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
                .serve_connection(io, service)
                .with_upgrades();
            drive(conn, &link, t, true, phase).await;
            // A `101` was written: the connection is a tunnel now (the http room's
            // `upgrade.rs`).
            if let Some(opened) = slot.tunnel.take() {
                tunnel(opened, &link, t, phase).await;
            }
        }
        Protocol::Http2 => {
            let conn = http2::Builder::new(exec)
                .timer(TokioTimer::new())
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .max_concurrent_streams(settings.http.h2_max_concurrent_streams)
                .max_header_list_size(settings.http.h2_max_header_list_bytes)
                // RFC 8441: WebSocket over HTTP/2 (extended CONNECT), see `upgrade.rs`.
                .enable_connect_protocol()
                .serve_connection(io, service);
            drive(conn, &link, t, false, phase).await;
        }
    }
}
