//! A client connection's link to the limiter: every observation the proxy makes of the
//! connection goes through its [`Meter`], which acts on the verdicts.
//!
//! A `Block` verdict fires the connection's kill switch: the connection's driver then resets it
//! (or sends GOAWAY, or a reply first, per `limits.block_action`), and in-flight requests stop
//! waiting for their backends. A `WouldBlock` (monitor mode) is logged once per connection and
//! changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use zgate_limiter::{AsConnection, Connection, Guard, Nanos, Reason, Request, Verdict};

use crate::clock::Clock;
use crate::limits::ProxyLimits;

/// One client connection's measurements and kill switch.
pub struct Meter {
    conn: Connection,
    clock: Clock,
    peer: SocketAddr,
    limits: ProxyLimits,
    killed: AtomicBool,
    kill: Notify,
    monitor_logged: AtomicBool,
    /// Response bytes received from the backend and not yet written to the client.
    held_out: AtomicU64,
    /// Request bytes read from the client and not yet forwarded (HTTP/2: DATA payloads;
    /// HTTP/1: every byte read, the head included, until its request ends).
    held_in: AtomicU64,
    /// HTTP/1: the message being read is complete; the next read starts a new one.
    message_done: AtomicBool,
    /// Requests in flight; when none is, nothing inbound can still be held.
    requests: AtomicU64,
    /// CPU time measured but not yet charged to the limiter, ns.
    cpu_pending: AtomicU64,
    /// When CPU time was last charged, on the limiter's clock, ns.
    cpu_charged_at: AtomicU64,
    /// Memory changes of this connection not yet reported to the limiter, net bytes.
    mem_unreported: AtomicI64,
}

/// Memory changes are reported to the limiter once they add up to this many bytes either way.
/// The client's counters are shared by all its connections (and, for a NAT or a load
/// generator, by many of them on every core): a small request's per-stream cost and response
/// bytes come and go without touching them. A client's memory is thus seen to within this much
/// per connection, on top of the exact per-connection cost.
const MEM_GRANULARITY: i64 = 16 * 1024;

/// CPU time is charged to the limiter in batches: when this much has accumulated...
const CPU_BATCH_NS: u64 = 50_000;
/// ...or this long after the last charge, whichever comes first. The EMA's half-life is of
/// the order of a second, so batching changes its value by a negligible amount, and a verdict
/// comes at most this late; the EMA's `exp` is not paid on every poll.
const CPU_BATCH_INTERVAL_NS: u64 = 1_000_000;

impl Meter {
    /// The meter of a connection the limiter admitted; charges its fixed memory cost.
    pub fn new(
        conn: Connection,
        clock: Clock,
        peer: SocketAddr,
        limits: ProxyLimits,
    ) -> Arc<Meter> {
        let meter = Arc::new(Meter {
            conn,
            clock,
            peer,
            limits,
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            monitor_logged: AtomicBool::new(false),
            held_out: AtomicU64::new(0),
            held_in: AtomicU64::new(0),
            message_done: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            cpu_pending: AtomicU64::new(0),
            cpu_charged_at: AtomicU64::new(0),
            mem_unreported: AtomicI64::new(0),
        });
        let v = meter
            .conn
            .memory_grew(limits.memory_per_connection, clock.now());
        meter.verdict(v);
        meter
    }

    /// The limiter's connection handle.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What a block does.
    pub fn limits(&self) -> &ProxyLimits {
        &self.limits
    }

    /// Now, on the limiter's clock.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Acts on a verdict; returns whether the traffic may go on.
    #[inline]
    pub fn verdict(&self, v: Verdict) -> bool {
        match v {
            Verdict::Allow => true,
            Verdict::WouldBlock { reason, value, z } => {
                if !self.monitor_logged.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        client = %self.peer.ip(),
                        reason = %reason,
                        value,
                        z = format_args!("{z:.2}"),
                        "monitor: would block"
                    );
                }
                true
            }
            Verdict::Block { reason, value, z } => {
                self.fire(reason, value, z);
                false
            }
        }
    }

    fn fire(&self, reason: Reason, value: u64, z: f64) {
        if self.killed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The block itself is logged once, where it happened; later refusals of the same
        // blocked client are not news.
        if reason != Reason::Guard(Guard::Blocked) {
            tracing::warn!(
                client = %self.peer.ip(),
                reason = %reason,
                value,
                z = format_args!("{z:.2}"),
                "blocked"
            );
        }
        self.kill.notify_waiters();
    }

    /// Cuts the connection because its client is blocked (found outside an event, e.g. by the
    /// watchdog).
    pub fn kill_blocked(&self) {
        self.fire(Reason::Guard(Guard::Blocked), 0, 0.0);
    }

    /// Whether the connection has been cut.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Completes when the connection is cut.
    pub async fn killed(&self) {
        loop {
            let mut notified = std::pin::pin!(self.kill.notified());
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// A request starts; `None` when it must not be served (its client is now blocked).
    pub fn request_started(self: &Arc<Self>, idempotent: bool) -> Option<InFlightRequest> {
        let now = self.now();
        // The request reaches the limiter through this meter: one reference count, on the
        // connection's meter, not on the client's state shared by all its connections.
        let (request, v) = Request::start(self.clone(), idempotent, now);
        let stream_cost = self.limits.memory_per_stream;
        let mem = self.memory_changed(stream_cost as i64);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightRequest {
            request,
            stream_cost,
        };
        (self.verdict(v) && self.verdict(mem)).then_some(guard)
    }

    /// Requests of this connection in progress: from their start until their response is
    /// sent to the end (or the stream reset).
    pub fn requests_in_progress(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// CPU time spent on this client's work (one poll), charged in batches.
    #[inline]
    pub fn cpu(&self, ns: u64, now: Nanos) {
        let pending = self.cpu_pending.fetch_add(ns, Ordering::Relaxed) + ns;
        let last = self.cpu_charged_at.load(Ordering::Relaxed);
        if pending < CPU_BATCH_NS && now.0.saturating_sub(last) < CPU_BATCH_INTERVAL_NS {
            return;
        }
        let batch = self.cpu_pending.swap(0, Ordering::Relaxed);
        self.cpu_charged_at.store(now.0, Ordering::Relaxed);
        if batch > 0 {
            let v = self.conn.cpu_spent(batch, now);
            self.verdict(v);
        }
    }

    /// `n` response bytes arrived from the backend for this client.
    pub fn response_received(&self, n: usize) {
        self.held_out.fetch_add(n as u64, Ordering::Relaxed);
        let v = self.memory_changed(n as i64);
        self.verdict(v);
    }

    /// Records a change of the bytes held for this connection, reporting it to the limiter
    /// when the unreported total reaches [`MEM_GRANULARITY`] either way.
    fn memory_changed(&self, delta: i64) -> Verdict {
        let net = self.mem_unreported.fetch_add(delta, Ordering::Relaxed) + delta;
        if net.abs() < MEM_GRANULARITY {
            return Verdict::Allow;
        }
        match self.mem_unreported.swap(0, Ordering::Relaxed) {
            n if n > 0 => self.conn.memory_grew(n as u64, self.now()),
            n => {
                self.conn.memory_shrank(n.unsigned_abs());
                Verdict::Allow
            }
        }
    }

    /// `n` bytes were written to the client: what was held for it is released (response heads
    /// and framing also count, which can only release early, never hold forever).
    #[inline]
    pub fn wrote(&self, n: usize) {
        if self.held_out.load(Ordering::Relaxed) == 0 {
            return;
        }
        let released = take(&self.held_out, n as u64);
        if released > 0 {
            self.memory_changed(-(released as i64));
        }
    }

    /// `n` request bytes were read from the client (HTTP/2: a DATA payload; HTTP/1: one read).
    /// They are held until forwarded as body ([`Meter::request_forwarded`]) or, for what is
    /// never forwarded (an HTTP/1 head), until no request is in flight any more.
    pub fn request_received(&self, n: usize) {
        self.request_read(n, u64::MAX);
    }

    /// `n` request bytes were read from the client, held as by [`Meter::request_received`] but
    /// never more than `max_held` in all. HTTP/1: hyper cannot hold more, and bytes that are
    /// read but never forwarded as body (chunk sizes, trailers) would otherwise count until
    /// the request ends.
    pub fn request_read(&self, n: usize, max_held: u64) {
        let held = self.held_in.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let dropped = if held > max_held {
            take(&self.held_in, held - max_held)
        } else {
            0
        };
        let v = self.memory_changed(n as i64 - dropped as i64);
        self.verdict(v);
    }

    /// `n` request body bytes were handed to the backend.
    pub fn request_forwarded(&self, n: usize) {
        let released = take(&self.held_in, n as u64);
        if released > 0 {
            self.memory_changed(-(released as i64));
        }
    }

    /// HTTP/1: the request being read is complete.
    pub fn message_done(&self) {
        self.message_done.store(true, Ordering::Relaxed);
    }

    /// HTTP/1: whether a message completed since the last call (and clears it).
    pub fn take_message_done(&self) -> bool {
        self.message_done.load(Ordering::Relaxed)
            && self.message_done.swap(false, Ordering::Relaxed)
    }
}

impl AsConnection for Meter {
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Subtracts up to `n` from `cell`, never below zero; returns what was subtracted.
fn take(cell: &AtomicU64, n: u64) -> u64 {
    match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        (held > 0).then(|| held - n.min(held))
    }) {
        Ok(held) => n.min(held),
        Err(_) => 0,
    }
}

/// A request in flight: counted by the limiter until dropped (when its response body ends or
/// the stream is reset), with its per-stream memory.
pub struct InFlightRequest {
    request: Request<Arc<Meter>>,
    stream_cost: u64,
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        let m = self.request.owner();
        m.memory_changed(-(self.stream_cost as i64));
        if m.requests.fetch_sub(1, Ordering::Relaxed) == 1 {
            // No request left: request bytes still counted as held belonged to streams that
            // were reset or refused, or to HTTP/1 heads, and hyper has dropped them.
            let stale = m.held_in.swap(0, Ordering::Relaxed);
            if stale > 0 {
                m.memory_changed(-(stale as i64));
            }
        }
    }
}
