//! Connecting to a backend, in a task of its own: a connect outlives the request that asked
//! for it. A request dropped half way (an HTTP/2 stream the client reset, Rapid Reset) used to
//! drop its connect with it, so every reset HEADERS cost a fresh backend TCP connection that
//! never carried a request (and a socket in TIME_WAIT); now the connect completes and its
//! connection goes to the backend's idle pool, where the next request finds it. The number of
//! backend connections a client can make zgate open is then bounded by the requests it keeps
//! in flight, which the limiter scores (metric A) and h2 caps, not by how fast it resets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::pool::IdlePool;
use super::Outgoing;

/// The largest buffer hyper keeps per backend connection, each way, in bytes: 64 KiB
/// (hyper's default, ~408 KiB, let a slow reader's responses pin that much per backend
/// connection, uncounted). A response being streamed to a client holds its backend connection,
/// and this much of it is charged to the client (metric M) until the body ends.
pub const BACKEND_BUFFER: usize = 64 * 1024;

/// What a response streaming over a backend connection pins there, charged to its client:
/// two [`BACKEND_BUFFER`]s, 128 KiB. hyper hands body chunks out as slices of its read
/// buffer, so while the chunks on their way to a slow client are held, the next read goes to
/// a new buffer: the one being filled and the one the held chunks keep alive. Measured by
/// `tests/tests/memory_figure.rs` (one buffer left a slow reader's figure at 0.69 of the
/// RSS it cost).
pub const BACKEND_BUFFER_HELD: usize = 2 * BACKEND_BUFFER;

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

/// A connect failure (refused, unreachable, resolution failed, timed out), in words.
pub(super) struct ConnectFailed(pub(super) String);

/// Connects to `target` within `timeout` in a task of its own and returns the connection's
/// sender; if the caller is dropped before the connect completes, the connection goes to
/// `idle` instead (which keeps it if it has room).
pub(super) async fn connect<B: Outgoing>(
    target: &Arc<Target>,
    timeout: Duration,
    idle: &Arc<IdlePool<B>>,
) -> Result<SendRequest<B>, ConnectFailed> {
    let (tx, rx) = oneshot::channel();
    let target = target.clone();
    let idle = idle.clone();
    tokio::spawn(async move {
        let result = connect_now(&target, timeout).await;
        if let Err(Ok(sender)) = tx.send(result) {
            idle.put(sender);
        }
    });
    rx.await
        .unwrap_or_else(|_| Err(ConnectFailed("the connect task ended".to_owned())))
}

/// TCP connect under `timeout`, `TCP_NODELAY`, the HTTP/1 handshake, and the connection's
/// task spawned (it ends when the connection closes or its sender is dropped while idle).
async fn connect_now<B: Outgoing>(
    target: &Target,
    timeout: Duration,
) -> Result<SendRequest<B>, ConnectFailed> {
    let stream = match tokio::time::timeout(timeout, target.connect()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(ConnectFailed(e.to_string())),
        Err(_) => return Err(ConnectFailed(format!("no connection within {timeout:?}"))),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(BACKEND_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectFailed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}
