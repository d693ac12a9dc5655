//! A client connection's handle on its accounting, shared by its IO, its requests and its
//! bodies, and the kill switch that acts on the limiter's verdicts.
//!
//! Every event is forwarded to the connection's [`Accounting`] with the proxy's clock, and the
//! verdict that comes back is acted on here: a `Block` fires the kill switch (the
//! connection's driver then resets it, or sends GOAWAY, or a reply first, per
//! `limits.block_action`, and in-flight requests stop waiting for their backends); a
//! `WouldBlock` (monitor mode) changes nothing and is logged at most once per client per
//! minute ([`WouldBlockLog`]). [`log_block`] is the one place a block is logged, at `warn`,
//! wherever it was decided (here, or at accept).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use zgate_limiter::{AsConnection, Connection, Fragments, Guard, H2Frame};
use zgate_limiter::{Glitch, Identified, Limiter, Nanos, Reason, Request, Verdict};

use super::accounting::{Accounting, Costs, Now};
use super::forwarded::{Charged, Forwarded};
use super::would_block::{Decision, WouldBlockLog};
use crate::clock::Clock;
use crate::limits::ProxyLimits;

/// One client connection's accounting and kill switch.
pub struct Meter {
    accounting: Accounting,
    clock: Clock,
    peer: SocketAddr,
    limits: ProxyLimits,
    killed: AtomicBool,
    kill: Notify,
    monitor_logged: AtomicBool,
    would_block_log: Arc<WouldBlockLog>,
    /// Why the connection was cut, once it is.
    reason: OnceLock<Reason>,
}

impl Now for Clock {
    #[inline]
    fn now(self) -> Nanos {
        Clock::now(&self)
    }
}

impl Meter {
    /// The meter of a connection the limiter admitted; charges its fixed memory cost.
    pub fn new(
        conn: Connection,
        clock: Clock,
        peer: SocketAddr,
        limits: ProxyLimits,
        would_block_log: Arc<WouldBlockLog>,
    ) -> Arc<Meter> {
        let costs = Costs {
            per_connection: limits.memory_per_connection,
            per_request: limits.memory_per_stream,
        };
        let (accounting, verdict) = Accounting::new(conn, costs, clock);
        let meter = Arc::new(Meter {
            accounting,
            clock,
            peer,
            limits,
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            monitor_logged: AtomicBool::new(false),
            would_block_log,
            reason: OnceLock::new(),
        });
        meter.verdict(verdict);
        meter
    }

    /// The connection's accounting: bytes, requests in flight, the head being read.
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
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
                // One question per connection; the log keeps it to one line per client.
                if !self.monitor_logged.swap(true, Ordering::Relaxed) {
                    let ip = self.peer.ip();
                    let decision = self.would_block_log.observe(ip, self.now());
                    if let Decision::Log { suppressed } = decision {
                        tracing::info!(
                            client = %ip,
                            reason = %reason,
                            value,
                            z = format_args!("{z:.2}"),
                            suppressed,
                            "monitor: would block"
                        );
                    }
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
        let _ = self.reason.set(reason);
        log_block(self.peer.ip(), reason, value, z);
        self.kill.notify_waiters();
    }

    /// Why the connection was cut, if it was.
    pub fn block_reason(&self) -> Option<Reason> {
        self.reason.get().copied()
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
        let mem = self.accounting.request_started(true, now);
        let guard = InFlightRequest {
            charge: Charge::Own(request),
            awaiting: true,
            backend_buffer: 0,
        };
        (self.verdict(v) && self.verdict(mem)).then_some(guard)
    }

    /// A request of `ip`, a forwarded client (named by a trusted proxy's header) other than
    /// the connection's, starts: counted in flight on this connection, charged to that client
    /// (requests, per-request memory). `Err` with the request (still counted in flight until
    /// dropped) when it must be refused: the client is blocked, or the client table is full.
    /// A block of a forwarded client never cuts the connection, which carries other clients'
    /// requests.
    ///
    /// `kept` is the client as this connection charged it for an earlier request (see
    /// [`InFlightRequest::forwarded`]): reused when it still fits
    /// ([`Limiter::forwarded_again`]), which spares the client table's lookup and a new handle,
    /// and batches its memory and CPU across its requests ([`Forwarded`]).
    pub fn forwarded_request_started(
        self: &Arc<Self>,
        limiter: &Limiter,
        ip: IpAddr,
        kept: Option<&Arc<Forwarded>>,
        idempotent: bool,
    ) -> Result<InFlightRequest, InFlightRequest> {
        let now = self.now();
        let again = kept.and_then(|f| Some((f, limiter.forwarded_again(ip, f.handle(), now)?)));
        let found = match again {
            Some((f, Verdict::Allow)) => (Some(f.clone()), Verdict::Allow),
            Some((_, v)) => (None, v),
            None => {
                let (h, v) = limiter.forwarded(ip, now);
                (h.map(|h| Forwarded::new(Arc::new(h), self.clock)), v)
            }
        };
        let client = match found {
            (Some(client), _) => client,
            (None, v) => {
                self.forwarded_verdict(ip, v);
                self.accounting.request_started(false, now);
                return Err(InFlightRequest {
                    charge: Charge::Nobody(self.clone()),
                    awaiting: true,
                    backend_buffer: 0,
                });
            }
        };
        client.handle().identified_by(Identified::Header);
        let mem = client.memory_changed(self.limits.memory_per_stream as i64, now);
        let (request, v) = Request::start(Charged(client), idempotent, now);
        self.accounting.request_started(false, now);
        let guard = InFlightRequest {
            charge: Charge::Forwarded {
                request,
                meter: self.clone(),
            },
            awaiting: true,
            backend_buffer: 0,
        };
        if self.forwarded_verdict(ip, v) && self.forwarded_verdict(ip, mem) {
            Ok(guard)
        } else {
            Err(guard)
        }
    }

    /// Acts on a verdict about a forwarded client `ip` of this connection: logs it (a block
    /// once, where it fired; a would-block once per connection) and says whether its request
    /// may go on. Never cuts the connection.
    pub fn forwarded_verdict(&self, ip: IpAddr, v: Verdict) -> bool {
        match v {
            Verdict::Allow => true,
            Verdict::WouldBlock { reason, value, z } => {
                if !self.monitor_logged.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        client = %ip,
                        via = %self.peer.ip(),
                        reason = %reason,
                        value,
                        z = format_args!("{z:.2}"),
                        "monitor: would block"
                    );
                }
                true
            }
            Verdict::Block { reason, value, z } => {
                if reason != Reason::Guard(Guard::Blocked) {
                    tracing::warn!(
                        client = %ip,
                        via = %self.peer.ip(),
                        reason = %reason,
                        value,
                        z = format_args!("{z:.2}"),
                        "blocked"
                    );
                }
                false
            }
        }
    }

    /// `n` bytes were read from the client (any protocol).
    #[inline]
    pub fn bytes_read(&self, n: usize) {
        self.accounting.bytes_read(n, self.clock);
    }

    /// `n` bytes were written to the client.
    #[inline]
    pub fn bytes_written(&self, n: usize) {
        self.verdict(self.accounting.bytes_written(n, self.clock));
    }

    /// `n` request bytes were read from the client (HTTP/2: a DATA payload), held until
    /// forwarded. See [`Accounting::request_read`].
    pub fn request_received(&self, n: usize) {
        self.request_read(n, u64::MAX);
    }

    /// `n` request bytes were read from the client, never more than `max_held` held in all
    /// (HTTP/1: what hyper can buffer). See [`Accounting::request_read`].
    pub fn request_read(&self, n: usize, max_held: u64) {
        self.verdict(self.accounting.request_read(n, max_held, self.clock));
    }

    /// `n` request body bytes were handed to the backend.
    pub fn request_forwarded(&self, n: usize) {
        self.verdict(self.accounting.request_forwarded(n, self.clock));
    }

    /// `n` response bytes arrived from the backend for this client.
    pub fn response_received(&self, n: usize) {
        self.verdict(self.accounting.response_received(n, self.clock));
    }

    /// `ns` of CPU time spent on this client's work (one poll) at `now`.
    #[inline]
    pub fn cpu(&self, ns: u64, now: Nanos) {
        self.verdict(self.accounting.cpu(ns, now));
    }

    /// A chunk of `n` bytes of the message tracked by `message` (metric F).
    #[inline]
    pub fn chunk(&self, message: &mut Fragments, n: usize, now: Nanos) {
        self.verdict(self.accounting.chunk(message, n, now));
    }

    /// `n` bytes of HTTP/2 control frames moved (either way): not activity for the idle
    /// timeout. See [`Accounting::control_bytes`].
    #[inline]
    pub fn control_bytes(&self, n: usize) {
        self.accounting.control_bytes(n);
    }

    /// An HTTP/2 frame the static guards count.
    #[inline]
    pub fn h2_frame(&self, frame: H2Frame, now: Nanos) {
        self.verdict(self.accounting.h2_frame(frame, now));
    }

    /// The client caused `glitch` (a protocol error, a request abandoned, an oversized header
    /// block): counted per client against `limits.guards.max_glitches`.
    pub fn glitch(&self, glitch: Glitch) {
        self.verdict(self.accounting.conn().glitch(glitch, self.now()));
    }

    /// HTTP/1: the connection became a tunnel. See [`Accounting::enter_tunnel`].
    pub fn enter_tunnel(&self) {
        self.verdict(self.accounting.enter_tunnel(self.clock));
    }

    /// HTTP/1: the request being read is complete.
    pub fn message_done(&self) {
        self.accounting.message_done();
    }

    /// HTTP/1: whether a message completed since the last call (and clears it).
    pub fn take_message_done(&self) -> bool {
        self.accounting.take_message_done()
    }
}

/// Logs a block decision once, at `warn`, with the client, the reason, the value and z:
/// wherever it was decided (a connection's event, or the accept path). A refusal of a client
/// already blocked (`guard:blocked`) is not news and is not logged.
pub fn log_block(client: IpAddr, reason: Reason, value: u64, z: f64) {
    if reason == Reason::Guard(Guard::Blocked) {
        return;
    }
    tracing::warn!(
        client = %client,
        reason = %reason,
        value,
        z = format_args!("{z:.2}"),
        "blocked"
    );
}

impl AsConnection for Meter {
    fn connection(&self) -> &Connection {
        self.accounting.conn()
    }
}

/// A request in flight: counted until dropped (when its response body ends or the stream is
/// reset), with its per-request memory; awaiting its response until
/// [`InFlightRequest::answered`] or the drop.
pub struct InFlightRequest {
    charge: Charge,
    awaiting: bool,
    /// Bytes of a backend connection's buffers held for the response, charged until the drop.
    backend_buffer: u64,
}

/// Whom a request in flight is charged to.
enum Charge {
    /// The connection's client, reached through the meter.
    Own(Request<Arc<Meter>>),
    /// A forwarded client, through its own handle; the connection still counts it in flight.
    Forwarded {
        request: Request<Charged>,
        meter: Arc<Meter>,
    },
    /// A refused forwarded client's request: only in flight on the connection.
    Nobody(Arc<Meter>),
}

impl InFlightRequest {
    /// The request's response has started (its head is ready, from the backend or zgate).
    pub fn answered(&mut self) {
        if std::mem::take(&mut self.awaiting) {
            self.meter().accounting.response_started();
        }
    }

    /// The forwarded client the request is charged to, if it is not the connection's.
    pub fn forwarded(&self) -> Option<&Arc<Forwarded>> {
        match &self.charge {
            Charge::Own(_) | Charge::Nobody(_) => None,
            Charge::Forwarded { request, .. } => Some(&request.owner().0),
        }
    }

    fn meter(&self) -> &Arc<Meter> {
        match &self.charge {
            Charge::Own(request) => request.owner(),
            Charge::Forwarded { meter, .. } | Charge::Nobody(meter) => meter,
        }
    }
}

impl InFlightRequest {
    /// The response streams over a backend connection whose buffers (`bytes`) are held for
    /// this client until the request ends: charged to its memory now, released at the drop.
    pub fn holds_backend_buffer(&mut self, bytes: u64) {
        let add = bytes.saturating_sub(self.backend_buffer);
        if add == 0 {
            return;
        }
        self.backend_buffer += add;
        let m = self.meter();
        m.verdict(m.accounting.backend_buffer(add as i64, m.clock));
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.answered();
        let own = matches!(self.charge, Charge::Own(_));
        let held = std::mem::take(&mut self.backend_buffer);
        let m = self.meter();
        if held > 0 {
            m.verdict(m.accounting.backend_buffer(-(held as i64), m.clock));
        }
        if let Charge::Forwarded { request, .. } = &self.charge {
            // Its per-request memory.
            let client = &request.owner().0;
            let v = client.memory_changed(-(m.limits.memory_per_stream as i64), m.clock);
            m.forwarded_verdict(client.handle().client().addr(), v);
        }
        m.verdict(m.accounting.request_ended(own, m.clock));
    }
}
