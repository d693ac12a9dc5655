//! Listening sockets: a deep accept backlog, address reuse and `TCP_NODELAY` for the
//! connections they accept; errors name the config key.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A listening socket that could not be set up; its message names the config key.
#[derive(Debug)]
pub struct BindError {
    /// The config key, e.g. `listener[0].addr` or `admin.addr`.
    pub key: String,
    /// The address asked for.
    pub addr: SocketAddr,
    /// What the OS said.
    pub source: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}`: cannot listen on {}: {}",
            self.key, self.addr, self.source
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Binds the socket of config key `key` at `addr`; returns it with its bound address.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    key: &str,
) -> Result<(TcpListener, SocketAddr), BindError> {
    let failed = |source| BindError {
        key: key.to_owned(),
        addr,
        source,
    };
    let listener = bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// Binds with a deep accept backlog and address reuse, and `TCP_NODELAY`, which the
/// connections it accepts inherit (Linux copies the listener's option into each one: no
/// `setsockopt` per connection).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
