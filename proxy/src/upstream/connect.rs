//! Connecting to a backend, in a task of its own: a connect outlives the request that asked
//! for it. A request dropped half way (an HTTP/2 stream the client reset, Rapid Reset) used to
//! drop its connect with it, so every reset HEADERS cost a fresh backend TCP connection that
//! never carried a request (and a socket in TIME_WAIT); now the connect completes and its
//! connection goes to the backend's idle pool, where the next request finds it. The number of
//! backend connections a client can make zgate open is then bounded by the requests it keeps
//! in flight, which the limiter scores (metric A) and h2 caps, not by how fast it resets.
//!
//! A [`Dial`] is one backend's way in: its address, and TLS (the pool's client config, the
//! name verified) when the pool has it. TCP connect and TLS handshake share one deadline,
//! `timeouts.backend_connect`. HTTP/1.1 connections come from [`connect`] (pooled, driven by
//! `h1.rs`); HTTP/2 ones from [`connect_h2`] (shared, see `multiplex.rs`).

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::h1::Conn;
use super::link::{BackendLink, UpstreamTlsError};
use super::pool::IdlePool;
use super::Outgoing;

/// The largest read buffer kept per backend connection, in bytes: 64 KiB (`h1.rs`'s reads
/// grow to it; hyper's, for upgrades, is capped at it; hyper's default, ~408 KiB, let a slow
/// reader's responses pin that much per backend connection, uncounted). A response being streamed to a client holds its backend connection,
/// and this much of it is charged to the client (metric M) until the body ends.
pub const BACKEND_BUFFER: usize = 64 * 1024;

/// What a response streaming over a backend connection pins there beyond the body bytes on
/// their way to the client (those are counted as they arrive), charged to its client: one
/// [`BACKEND_BUFFER`], 64 KiB. Body chunks are handed out as slices of the read buffer, so the
/// chunks a slow client has not taken keep their buffers alive: the room not yet filled in
/// the one being read into, and the unused tail of the one before. Measured by
/// `tests/tests/memory_figure.rs`: with hyper's client, which read ahead into a second buffer,
/// it took two; zgate's client reads only as the client takes (one buffer: ratios 1.01 to 1.03,
/// where two counted 1.40 times the RSS it cost).
pub const BACKEND_BUFFER_HELD: usize = BACKEND_BUFFER;

/// Where to connect: an address, or a name resolved at each connect.
#[derive(Debug)]
pub(super) enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Target {
    pub(super) fn of(authority: &Authority) -> Self {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(host.to_owned(), port),
        }
    }

    pub(super) async fn connect(&self) -> std::io::Result<TcpStream> {
        match self {
            Target::Addr(addr) => TcpStream::connect(*addr).await,
            Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    }
}

/// One backend's way in: where, and with which TLS.
pub(super) struct Dial {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial")
            .field("target", &self.target)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Dial {
    /// The way to the backend at `authority` over `link`.
    pub(super) fn new(authority: &Authority, link: &BackendLink) -> Result<Dial, UpstreamTlsError> {
        let tls = match &link.tls {
            Some(t) => Some((TlsConnector::from(t.config.clone()), t.name_for(authority)?)),
            None => None,
        };
        Ok(Dial {
            target: Target::of(authority),
            tls,
        })
    }

    /// Whether requests to it are `https`.
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TCP, `TCP_NODELAY`, and the TLS handshake when there is TLS, within `timeout`.
    pub(super) async fn open(&self, timeout: Duration) -> Result<Opened, ConnectFailed> {
        let open = async {
            let stream = self
                .target
                .connect()
                .await
                .map_err(|e| ConnectFailed(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => Ok(Opened::Plain(stream)),
                Some((connector, name)) => connector
                    .connect(name.clone(), stream)
                    .await
                    .map(|s| Opened::Tls(Box::new(s)))
                    .map_err(|e| ConnectFailed(format!("TLS handshake: {e}"))),
            }
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(ConnectFailed(format!("no connection within {timeout:?}"))),
        }
    }
}

/// A connection made, before HTTP: TCP, or TLS over it. zgate's HTTP/1 client reads and writes
/// it as it is (`h1.rs`); hyper's handshakes take the stream inside.
pub(super) enum Opened {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Opened {
    /// The TCP socket under it.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Opened::Plain(s) => s,
            Opened::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Opened {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Opened::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Opened {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Opened::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Opened::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Opened::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Opened::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Opened::Plain(s) => s.is_write_vectored(),
            Opened::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(s) => Pin::new(s).poll_flush(cx),
            Opened::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Opened::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Opened::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A connect failure (refused, unreachable, resolution failed, timed out, TLS refused), in
/// words.
pub(super) struct ConnectFailed(pub(super) String);

/// Connects to `target` within `timeout` in a task of its own and returns the connection;
/// if the caller is dropped before the connect completes, the connection goes to `idle`
/// instead (which keeps it if it has room).
pub(super) async fn connect(
    target: &Arc<Dial>,
    timeout: Duration,
    idle: &Arc<IdlePool>,
) -> Result<Conn, ConnectFailed> {
    let (tx, rx) = oneshot::channel();
    let target = target.clone();
    let idle = idle.clone();
    tokio::spawn(async move {
        let result = target.open(timeout).await.map(Conn::new);
        if let Err(Ok(conn)) = tx.send(result) {
            idle.put(conn);
        }
    });
    rx.await
        .unwrap_or_else(|_| Err(ConnectFailed("the connect task ended".to_owned())))
}

/// An HTTP/2 connection to `target` within `timeout` (h2 by ALPN over TLS, h2c with prior
/// knowledge in cleartext), its task spawned (it ends when the backend closes it or every
/// sender is dropped). Each stream may hold [`BACKEND_BUFFER`] of response unread (its
/// window), as an HTTP/1 connection's buffer does; request bodies are buffered up to as much.
pub(super) async fn connect_h2<B: Outgoing>(
    target: &Dial,
    timeout: Duration,
) -> Result<http2::SendRequest<B>, ConnectFailed> {
    match target.open(timeout).await? {
        Opened::Plain(s) => handshake_h2(s).await,
        Opened::Tls(s) => {
            let alpn = s.get_ref().1.alpn_protocol();
            if alpn.is_some_and(|p| p != b"h2") {
                return Err(ConnectFailed(
                    "the backend did not agree to h2 by ALPN".to_owned(),
                ));
            }
            handshake_h2(s).await
        }
    }
}

/// The connection-level window of an HTTP/2 backend connection, bytes: room for many
/// streams' [`BACKEND_BUFFER`] windows at once, so one slow reader does not stall the others.
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

async fn handshake_h2<B: Outgoing, IO>(io: IO) -> Result<http2::SendRequest<B>, ConnectFailed>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(BACKEND_BUFFER as u32)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(BACKEND_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectFailed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
