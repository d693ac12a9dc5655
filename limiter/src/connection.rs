//! Per-connection and per-request handles: the hot path.
//!
//! A [`Connection`] holds its client's state, so events do no table lookup. It is RAII: it
//! counts one open connection and the bytes it reported, and dropping it gives them back, so
//! counters cannot leak or underflow, whatever modes and epochs pass meanwhile. A [`Request`]
//! does the same for one request in flight, through whatever holds its connection (a borrow,
//! an `Arc`, the caller's own per-connection state): it takes no reference count of its own,
//! so starting and finishing a request touch only the client's two counters.

use crate::glitches::Glitch;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use zgate_training::{Fragments, Metric};

use crate::client::ClientState;
use crate::guards::{FrameGuards, H2Frame, LiveGuardLimits};
use crate::handle::{ClientHandle, Counted};
use crate::key::ClientKey;
use crate::mode::Mode;
use crate::shared::Shared;
use crate::time::Nanos;
use crate::verdict::{Guard, Reason, Verdict};

/// One open client connection. `Send + Sync`: share it (e.g. in an `Arc`) with the tasks of
/// the connection's HTTP/2 streams.
///
/// Every event takes `now` and returns a [`Verdict`]; on `Block` the caller closes the
/// connection. Events of a client that is blocked return `Block` with [`Guard::Blocked`] at
/// once. Dropping the handle closes the connection in the limiter (prefer
/// [`Connection::close`], which also records the time).
///
/// Its events are charged to the client that owns the connection (its [`ClientHandle`]); a
/// request of another client (behind a trusted proxy) is charged to that client's handle
/// instead (see [`crate::Limiter::forwarded`]).
pub struct Connection {
    handle: ClientHandle,
    frames: FrameGuards,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Arc<ClientState>,
        key: ClientKey,
        exempt: bool,
        now: u64,
    ) -> Connection {
        Connection {
            handle: ClientHandle::new(shared, client, key, exempt),
            frames: FrameGuards::new(now),
        }
    }

    /// The client this connection belongs to.
    pub fn client(&self) -> ClientKey {
        self.handle.client()
    }

    /// The handle on the client that owns the connection.
    pub fn owner(&self) -> &ClientHandle {
        &self.handle
    }

    /// The checks of a connection just counted as the client's `n`-th.
    pub(crate) fn opened(&self, n: u64, now: u64) -> Verdict {
        let h = &self.handle;
        if h.blocked_at(now) {
            return h.blocked();
        }
        let max = h.shared.guards.max_connections.load(Ordering::Relaxed);
        if let Some((g, v)) = LiveGuardLimits::over(max, n, Guard::Connections) {
            return h.block(Reason::Guard(g), v, 0.0, now);
        }
        let st = h.shared.state();
        if st.mode == Mode::Disabled {
            return Verdict::Allow;
        }
        h.observe(Metric::Connections, n, st, now)
    }

    /// A request starts on this connection (`idempotent`: GET, HEAD, PUT, DELETE, OPTIONS,
    /// TRACE). Counts it in metric `requests` and, if not idempotent, `requests_nonidempotent`
    /// (not counted in disabled mode). The returned [`Request`] counts it until dropped; it
    /// borrows the connection (see [`Request::start`] for one that owns its way to it).
    pub fn request_started(&self, idempotent: bool, now: Nanos) -> (Request<&Self>, Verdict) {
        Request::start(self, idempotent, now)
    }

    /// The proxy now holds `bytes` more for this connection's client: see
    /// [`ClientHandle::memory_grew`].
    pub fn memory_grew(&self, bytes: u64, now: Nanos) -> Verdict {
        self.handle.memory_grew(bytes, now)
    }

    /// The proxy released `bytes` it held for this connection's client. Never releases more
    /// than this connection reported.
    pub fn memory_shrank(&self, bytes: u64) {
        self.handle.memory_shrank(bytes)
    }

    /// `cpu_ns` nanoseconds of proxy CPU time were spent on this connection (one poll): see
    /// [`ClientHandle::cpu_spent`].
    pub fn cpu_spent(&self, cpu_ns: u64, now: Nanos) -> Verdict {
        self.handle.cpu_spent(cpu_ns, now)
    }

    /// A chunk of a message arrived on this connection: see [`ClientHandle::chunk`].
    pub fn chunk(&self, message: &mut Fragments, len: usize, now: Nanos) -> Verdict {
        self.handle.chunk(message, len, now)
    }

    /// An HTTP/2 frame arrived on this connection: checked against the per-connection frame
    /// guards (PING, SETTINGS, RST_STREAM, empty DATA per second; CONTINUATION per header
    /// block), in every mode.
    pub fn h2_frame(&self, frame: H2Frame, now: Nanos) -> Verdict {
        let now = now.0;
        let h = &self.handle;
        if h.blocked_at(now) {
            return h.blocked();
        }
        match self.frames.frame(frame, now, &h.shared.guards) {
            None => Verdict::Allow,
            Some((g, v)) => h.block(Reason::Guard(g), v, 0.0, now),
        }
    }

    /// The client caused `glitch`: see [`ClientHandle::glitch`].
    pub fn glitch(&self, glitch: Glitch, now: Nanos) -> Verdict {
        self.handle.glitch(glitch, now)
    }

    /// This connection as one of a client the table had no room for: static guards only.
    pub(crate) fn untracked(mut self) -> Connection {
        self.handle.set_untracked();
        self
    }

    /// Closes the connection at `now` (same as dropping it, and records the time for idle
    /// expiry).
    pub fn close(self, now: Nanos) {
        self.handle.client.touch(now.0);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The handle, dropped next, gives back the memory and records the time.
        self.handle.client.sub(Metric::Connections, 1);
    }
}

/// What reaches a [`Connection`]: `&Connection`, `Arc<Connection>`, or the caller's own
/// per-connection state that holds one. A [`Request`] keeps one to give its count back.
pub trait AsConnection {
    /// The connection.
    fn connection(&self) -> &Connection;
}

impl AsConnection for Connection {
    fn connection(&self) -> &Connection {
        self
    }
}

impl<T: AsConnection + ?Sized> AsConnection for &T {
    fn connection(&self) -> &Connection {
        (**self).connection()
    }
}

impl<T: AsConnection + ?Sized> AsConnection for Arc<T> {
    fn connection(&self) -> &Connection {
        (**self).connection()
    }
}

/// What a [`Request`] is charged to: anything that reaches a [`Connection`] (its owner's
/// handle), or a [`ClientHandle`] of its own (a forwarded client's).
pub trait AsClient {
    /// The handle the request is counted on.
    fn client_handle(&self) -> &ClientHandle;
}

impl<T: AsConnection + ?Sized> AsClient for T {
    fn client_handle(&self) -> &ClientHandle {
        &self.connection().handle
    }
}

impl AsClient for ClientHandle {
    fn client_handle(&self) -> &ClientHandle {
        self
    }
}

impl AsClient for Arc<ClientHandle> {
    fn client_handle(&self) -> &ClientHandle {
        self
    }
}

/// One request in flight, counted in metric `requests` (and `requests_nonidempotent`) until
/// dropped or [`Request::finish`]ed. It reaches its client through `C`: a borrow of its
/// connection, an owning handle (`Arc<Connection>`, or the caller's per-connection state), with
/// which it may outlive whoever started it, or a forwarded client's own [`ClientHandle`]. It
/// adds no reference count of its own.
pub struct Request<C: AsClient> {
    conn: C,
    counted: Counted,
}

impl<C: AsClient> Request<C> {
    /// A request of `conn`'s client starts (`idempotent`: GET, HEAD, PUT, DELETE, OPTIONS,
    /// TRACE): see [`Connection::request_started`]. The returned `Request` keeps `conn`.
    pub fn start(conn: C, idempotent: bool, now: Nanos) -> (Request<C>, Verdict) {
        let (counted, verdict) = conn.client_handle().count_request(idempotent, now.0);
        (Request { conn, counted }, verdict)
    }

    /// What the request reaches its connection through.
    pub fn owner(&self) -> &C {
        &self.conn
    }

    /// The request finished (same as dropping it).
    pub fn finish(self) {}

    /// Whether the request was counted as non-idempotent.
    pub fn nonidempotent(&self) -> bool {
        self.counted == Counted::NonIdempotent
    }

    /// Whether the request is counted (false in disabled mode or for a blocked client).
    pub fn is_counted(&self) -> bool {
        self.counted != Counted::No
    }
}

impl<C: AsClient> Drop for Request<C> {
    fn drop(&mut self) {
        self.conn.client_handle().uncount_request(self.counted);
    }
}
