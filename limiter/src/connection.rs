//! Per-connection and per-request handles: the hot path.
//!
//! A [`Connection`] holds its client's state, so events do no table lookup. It is RAII: it
//! counts one open connection and the bytes it reported, and dropping it gives them back, so
//! counters cannot leak or underflow, whatever modes and epochs pass meanwhile. A [`Request`]
//! does the same for one request in flight, through whatever holds its connection (a borrow,
//! an `Arc`, the caller's own per-connection state): it takes no reference count of its own,
//! so starting and finishing a request touch only the client's two counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zgate_training::{Fragments, Metric};

use crate::client::ClientState;
use crate::glitches::Glitch;
use crate::guards::{FrameGuards, H2Frame, LiveGuardLimits};
use crate::key::ClientKey;
use crate::mode::Mode;
use crate::shared::{Shared, State};
use crate::time::Nanos;
use crate::verdict::{Guard, Reason, Verdict};

/// One open client connection. `Send + Sync`: share it (e.g. in an `Arc`) with the tasks of
/// the connection's HTTP/2 streams.
///
/// Every event takes `now` and returns a [`Verdict`]; on `Block` the caller closes the
/// connection. Events of a client that is blocked return `Block` with [`Guard::Blocked`] at
/// once. Dropping the handle closes the connection in the limiter (prefer
/// [`Connection::close`], which also records the time).
pub struct Connection {
    shared: Arc<Shared>,
    client: Arc<ClientState>,
    key: ClientKey,
    /// Bytes this connection added to the client's memory.
    memory: AtomicU64,
    frames: FrameGuards,
    /// Admitted while the client table was full: its client is not in the table, so it is
    /// held to the static guards only (no scoring, no training samples).
    untracked: bool,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Arc<ClientState>,
        key: ClientKey,
        now: u64,
    ) -> Connection {
        Connection {
            shared,
            client,
            key,
            memory: AtomicU64::new(0),
            frames: FrameGuards::new(now),
            untracked: false,
        }
    }

    /// This connection as one of a client the table had no room for (see `untracked`).
    pub(crate) fn untracked(mut self) -> Connection {
        self.untracked = true;
        self
    }

    /// The client this connection belongs to.
    pub fn client(&self) -> ClientKey {
        self.key
    }

    /// The checks of a connection just counted as the client's `n`-th.
    pub(crate) fn opened(&self, n: u64, now: u64) -> Verdict {
        if self.client.is_blocked(now) {
            return self.shared.refuse(Guard::Blocked, 0);
        }
        let max = self.shared.guards.max_connections.load(Ordering::Relaxed);
        if let Some((g, v)) = LiveGuardLimits::over(max, n, Guard::Connections) {
            return self.block(Reason::Guard(g), v, 0.0, now);
        }
        let st = self.shared.state();
        if st.mode == Mode::Disabled {
            return Verdict::Allow;
        }
        self.observe(Metric::Connections, n, st, now)
    }

    /// A request starts on this connection (`idempotent`: GET, HEAD, PUT, DELETE, OPTIONS,
    /// TRACE). Counts it in metric `requests` and, if not idempotent, `requests_nonidempotent`
    /// (not counted in disabled mode). The returned [`Request`] counts it until dropped; it
    /// borrows the connection (see [`Request::start`] for one that owns its way to it).
    pub fn request_started(&self, idempotent: bool, now: Nanos) -> (Request<&Self>, Verdict) {
        Request::start(self, idempotent, now)
    }

    /// Counts a request starting; returns whether it was counted (and as non-idempotent) and
    /// the verdict.
    fn count_request(&self, idempotent: bool, now: u64) -> (Counted, Verdict) {
        if self.client.is_blocked(now) {
            return (Counted::No, self.blocked());
        }
        let st = self.shared.state();
        if st.mode == Mode::Disabled {
            return (Counted::No, Verdict::Allow);
        }
        let mut verdict = Verdict::Allow;
        if !idempotent {
            let n = self.client.add(Metric::RequestsNonidempotent, 1);
            verdict = self.observe(Metric::RequestsNonidempotent, n, st, now);
        }
        let n = self.client.add(Metric::Requests, 1);
        let any = self.observe(Metric::Requests, n, st, now);
        if verdict.is_allow() {
            verdict = any;
        }
        let counted = if idempotent {
            Counted::Idempotent
        } else {
            Counted::NonIdempotent
        };
        (counted, verdict)
    }

    /// Gives back what [`Connection::count_request`] counted.
    fn uncount_request(&self, counted: Counted) {
        match counted {
            Counted::No => {}
            Counted::Idempotent => self.client.sub(Metric::Requests, 1),
            Counted::NonIdempotent => {
                self.client.sub(Metric::Requests, 1);
                self.client.sub(Metric::RequestsNonidempotent, 1);
            }
        }
    }

    /// The proxy now holds `bytes` more for this client (buffers, per-stream cost). Checked
    /// against `max_memory_per_client` in every mode, scored as metric `memory` in
    /// defence/monitor.
    pub fn memory_grew(&self, bytes: u64, now: Nanos) -> Verdict {
        let now = now.0;
        if self.client.is_blocked(now) {
            return self.blocked();
        }
        let st = self.shared.state();
        let max = self.shared.guards.max_memory.load(Ordering::Relaxed);
        if st.mode == Mode::Disabled && max == 0 {
            return Verdict::Allow;
        }
        self.memory.fetch_add(bytes, Ordering::Relaxed);
        let total = self.client.add(Metric::Memory, bytes);
        if let Some((g, v)) = LiveGuardLimits::over(max, total, Guard::Memory) {
            return self.block(Reason::Guard(g), v, 0.0, now);
        }
        if st.mode == Mode::Disabled {
            return Verdict::Allow;
        }
        self.observe(Metric::Memory, total, st, now)
    }

    /// The proxy released `bytes` it held for this client. Never releases more than this
    /// connection reported.
    pub fn memory_shrank(&self, bytes: u64) {
        let taken = self
            .memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held - bytes.min(held))
            })
            .map_or(0, |held| bytes.min(held));
        if taken > 0 {
            self.client.sub(Metric::Memory, taken);
        }
    }

    /// `cpu_ns` nanoseconds of proxy CPU time were spent on this client's work (one poll).
    /// Updates the client's CPU EMA and scores it as metric `cpu`.
    pub fn cpu_spent(&self, cpu_ns: u64, now: Nanos) -> Verdict {
        let now = now.0;
        let st = match self.scoring(now) {
            Ok(st) => st,
            Err(v) => return v,
        };
        let half_life = self.shared.cpu_half_life_ns.load(Ordering::Relaxed);
        let ppm = self.client.charge_cpu(cpu_ns, now, half_life);
        self.observe(Metric::Cpu, ppm, st, now)
    }

    /// A chunk of `len` bytes of the message tracked by `message` arrived (an HTTP/2 DATA or
    /// CONTINUATION payload, or one socket read's share of an HTTP/1 message). From the second
    /// chunk on, the message's fragmentation score is metric `fragmentation`. The caller keeps
    /// one [`Fragments`] per message and resets it when the message ends. Not recorded in
    /// disabled mode.
    pub fn chunk(&self, message: &mut Fragments, len: usize, now: Nanos) -> Verdict {
        let now = now.0;
        let st = match self.scoring(now) {
            Ok(st) => st,
            Err(v) => return v,
        };
        let Some(score) = message.chunk(len) else {
            return Verdict::Allow;
        };
        self.client.set(Metric::Fragmentation, score);
        self.observe(Metric::Fragmentation, score, st, now)
    }

    /// An HTTP/2 frame arrived on this connection: checked against the per-connection frame
    /// guards (PING, SETTINGS, RST_STREAM, empty DATA per second; CONTINUATION per header
    /// block), in every mode.
    pub fn h2_frame(&self, frame: H2Frame, now: Nanos) -> Verdict {
        let now = now.0;
        if self.client.is_blocked(now) {
            return self.blocked();
        }
        match self.frames.frame(frame, now, &self.shared.guards) {
            None => Verdict::Allow,
            Some((g, v)) => self.block(Reason::Guard(g), v, 0.0, now),
        }
    }

    /// The client caused `glitch` (see [`Glitch`]): counted per client, weighted, and checked
    /// against `max_glitches` per 10-second window, in every mode (untracked clients too).
    pub fn glitch(&self, glitch: Glitch, now: Nanos) -> Verdict {
        let now = now.0;
        if self.client.is_blocked(now) {
            return self.blocked();
        }
        let max = self.shared.max_glitches.load(Ordering::Relaxed);
        let n = self.client.glitches.add(glitch.weight(), now);
        match LiveGuardLimits::over(u64::from(max), n, Guard::Glitches) {
            Some((g, v)) => self.block(Reason::Guard(g), v, 0.0, now),
            None => Verdict::Allow,
        }
    }

    /// Closes the connection at `now` (same as dropping it, and records the time for idle
    /// expiry).
    pub fn close(self, now: Nanos) {
        self.client.touch(now.0);
    }

    /// The state to score an event in, or the verdict without scoring: `Block` for a blocked
    /// client, `Allow` in disabled mode.
    #[inline]
    fn scoring(&self, now: u64) -> Result<State, Verdict> {
        if self.client.is_blocked(now) {
            return Err(self.blocked());
        }
        let st = self.shared.state();
        if st.mode == Mode::Disabled {
            return Err(Verdict::Allow);
        }
        Ok(st)
    }

    /// Records `x` as an observation of `m` and, in defence or monitor, scores it.
    #[inline]
    fn observe(&self, m: Metric, x: u64, st: State, now: u64) -> Verdict {
        if self.untracked {
            return Verdict::Allow;
        }
        let s = &self.shared;
        s.counters.observed(m);
        let sample = self.client.observe(m, x, st.epoch);
        match st.mode {
            Mode::Training => {
                s.train(m, sample, st.epoch, now);
                Verdict::Allow
            }
            Mode::Defence | Mode::Monitor => match s.score(m, x) {
                None => Verdict::Allow,
                Some(z) if st.mode == Mode::Defence => self.block(Reason::Metric(m), x, z, now),
                Some(z) => {
                    s.counters.would_block(m);
                    Verdict::WouldBlock {
                        reason: Reason::Metric(m),
                        value: x,
                        z,
                    }
                }
            },
            Mode::Disabled => Verdict::Allow,
        }
    }

    /// Blocks the client for `block_duration` and returns the verdict.
    fn block(&self, reason: Reason, value: u64, z: f64, now: u64) -> Verdict {
        let s = &self.shared;
        let until = now.saturating_add(s.block_ns.load(Ordering::Relaxed));
        self.client.block(until);
        s.record_block(self.key, until, reason, value, z, now);
        Verdict::Block { reason, value, z }
    }

    fn blocked(&self) -> Verdict {
        self.shared.refuse(Guard::Blocked, 0)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let held = *self.memory.get_mut();
        if held > 0 {
            self.client.sub(Metric::Memory, held);
        }
        self.client.sub(Metric::Connections, 1);
        let now = self.shared.clock();
        if now > self.client.last_seen() {
            self.client.touch(now);
        }
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

/// How a request was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    /// Not at all (disabled mode, or its client is blocked).
    No,
    Idempotent,
    NonIdempotent,
}

/// One request in flight, counted in metric `requests` (and `requests_nonidempotent`) until
/// dropped or [`Request::finish`]ed. It reaches its connection through `C`: a borrow, or an
/// owning handle (`Arc<Connection>`, or the caller's per-connection state), with which it may
/// outlive whoever started it. It adds no reference count of its own.
pub struct Request<C: AsConnection> {
    conn: C,
    counted: Counted,
}

impl<C: AsConnection> Request<C> {
    /// A request starts on `conn`'s connection (`idempotent`: GET, HEAD, PUT, DELETE, OPTIONS,
    /// TRACE): see [`Connection::request_started`]. The returned `Request` keeps `conn`.
    pub fn start(conn: C, idempotent: bool, now: Nanos) -> (Request<C>, Verdict) {
        let (counted, verdict) = conn.connection().count_request(idempotent, now.0);
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

impl<C: AsConnection> Drop for Request<C> {
    fn drop(&mut self) {
        self.conn.connection().uncount_request(self.counted);
    }
}
