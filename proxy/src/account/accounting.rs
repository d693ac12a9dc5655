//! The accounting of one client connection, sans-IO: every event the proxy observes on the
//! connection comes here with the time it happened (`now`, on the limiter's clock: a [`Now`],
//! read only when needed), is counted,
//! batched where the limiter need not see every one, and reported to the limiter, whose
//! verdict is returned to the caller to act on. Nothing here reads a clock, logs, or wakes a
//! task.
//!
//! What it counts:
//! - **bytes** read from and written to the client (the watchdog's idleness, the traffic
//!   counters);
//! - **memory held** for the client (metric M): request bytes read and not yet forwarded,
//!   response bytes received from the backend and not yet written, a fixed cost per connection
//!   and per request in flight. Changes reach the limiter once they add up to
//!   [`MEM_GRANULARITY`] either way;
//! - **requests in flight**: one count, from a request's start (its head parsed) until its
//!   response body has ended or its stream was reset; the limiter's R and A have the same
//!   lifetime. Of those, the ones still **awaiting** their response (the backend has not
//!   answered yet) keep the connection from counting as idle;
//! - **the request head being read** (HTTP/1): when its first byte arrived, for the header
//!   deadline;
//! - **CPU time** (metric P), charged to the limiter in batches of [`CPU_BATCH_NS`] or every
//!   [`CPU_BATCH_INTERVAL_NS`], whichever comes first;
//! - chunks (metric F) and HTTP/2 control frames go straight to the limiter.
//!
//! The counters are atomics: the connection's IO task, its HTTP/2 stream tasks (on any
//! worker) and its watchdog report concurrently. Each is updated with relaxed operations; no
//! decision depends on the order of two different counters.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use zgate_limiter::{Connection, Fragments, H2Frame, Nanos, Verdict};

use super::window;

/// Memory changes are reported to the limiter once they add up to this many bytes either way.
/// The client's counters are shared by all its connections (and, for a NAT or a load
/// generator, by many of them on every core): a small request's per-stream cost and response
/// bytes come and go without touching them. A client's memory is thus seen to within this much
/// per connection, on top of the exact per-connection cost.
pub const MEM_GRANULARITY: i64 = 16 * 1024;

/// CPU time is charged to the limiter in batches: when this much has accumulated...
pub const CPU_BATCH_NS: u64 = 50_000;
/// ...or this long after the last charge, whichever comes first. The EMA's half-life is of
/// the order of a second, so batching changes its value by a negligible amount, and a verdict
/// comes at most this late; the EMA's `exp` is not paid on every poll.
pub const CPU_BATCH_INTERVAL_NS: u64 = 1_000_000;

/// Where an event's time comes from. The accounting asks only when it needs the time (an
/// event that changes nothing the limiter sees costs no clock read): a fixed [`Nanos`] in
/// tests, the proxy's clock in the IO glue.
pub trait Now: Copy {
    /// The time of the event, on the limiter's clock.
    fn now(self) -> Nanos;
}

impl Now for Nanos {
    #[inline]
    fn now(self) -> Nanos {
        self
    }
}

/// Fixed memory costs charged for the client, in bytes (`limits.memory_per_connection`,
/// `limits.memory_per_stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Costs {
    /// Charged for the connection while it is open.
    pub per_connection: u64,
    /// Charged for each request while it is in flight.
    pub per_request: u64,
}

/// One client connection's accounting.
pub struct Accounting {
    conn: Connection,
    costs: Costs,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Bytes of HTTP/2 control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, unknown
    /// types) moved either way, headers included: part of `bytes_in + bytes_out` that is not
    /// activity for `timeouts.idle`.
    control: AtomicU64,
    /// Response bytes received from the backend and not yet written to the client.
    held_out: AtomicU64,
    /// Request bytes read from the client and not yet forwarded (HTTP/2: DATA payloads;
    /// HTTP/1: every byte read, the head included, until its request ends).
    held_in: AtomicU64,
    /// Request bytes held that are not charged: the inbound window zgate granted (see
    /// `window.rs`); 0 until [`Accounting::grant_inbound`].
    granted_in: AtomicU64,
    /// Memory changes not yet reported to the limiter.
    mem_unreported: MemBatch,
    /// Requests in flight (see the module docs for the lifetime).
    requests: AtomicU64,
    /// Requests in flight whose response has not started yet.
    awaiting: AtomicU64,
    /// When the HTTP/1 request head now arriving began, ns on the limiter's clock plus one
    /// (0: no head is being read).
    head_started: AtomicU64,
    /// HTTP/1: the message being read is complete; the next read starts a new one.
    message_done: AtomicBool,
    /// HTTP/1: the connection is a tunnel now (a protocol upgrade): its bytes are not HTTP
    /// messages (not chunks of one, not held as a request's).
    tunnel: AtomicBool,
    /// CPU time measured but not yet charged to the limiter.
    cpu_pending: CpuBatch,
}

impl Accounting {
    /// The accounting of a connection the limiter admitted (`conn`) at `now`; charges the
    /// per-connection cost, whose verdict comes back with it.
    pub fn new(conn: Connection, costs: Costs, now: impl Now) -> (Accounting, Verdict) {
        let verdict = conn.memory_grew(costs.per_connection, now.now());
        let accounting = Accounting {
            conn,
            costs,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            control: AtomicU64::new(0),
            held_out: AtomicU64::new(0),
            held_in: AtomicU64::new(0),
            granted_in: AtomicU64::new(0),
            mem_unreported: MemBatch::default(),
            requests: AtomicU64::new(0),
            awaiting: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            message_done: AtomicBool::new(false),
            tunnel: AtomicBool::new(false),
            cpu_pending: CpuBatch::new(Nanos(0)),
        };
        (accounting, verdict)
    }

    /// The limiter's handle of the connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// `n` bytes were read from the client (any protocol; called by the IO task only). A byte read while no request is in
    /// flight and no head is being read starts a request head: the header deadline runs from
    /// `now`.
    #[inline]
    pub fn bytes_read(&self, n: usize, now: impl Now) {
        add_single_writer(&self.bytes_in, n as u64);
        if self.requests.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now.now().0 + 1, Ordering::Relaxed);
        }
    }

    /// `n` bytes were written to the client (called by the IO task only): what was held for it is released (response heads
    /// and framing also count, which can only release early, never hold forever).
    #[inline]
    pub fn bytes_written(&self, n: usize, now: impl Now) -> Verdict {
        add_single_writer(&self.bytes_out, n as u64);
        if self.held_out.load(Ordering::Relaxed) == 0 {
            return Verdict::Allow;
        }
        let released = take(&self.held_out, n as u64);
        self.memory_changed(-(released as i64), now)
    }

    /// `n` request bytes were read from the client and are held until forwarded as body
    /// ([`Accounting::request_forwarded`]) or, for what is never forwarded (an HTTP/1 head,
    /// chunked framing), until no request is in flight any more; never more than `max_held`
    /// in all (HTTP/1: what hyper can buffer; HTTP/2: no cap, `u64::MAX`).
    pub fn request_read(&self, n: usize, max_held: u64, now: impl Now) -> Verdict {
        let before = self.held_in.fetch_add(n as u64, Ordering::Relaxed);
        let held = before + n as u64;
        let dropped = if held > max_held {
            take(&self.held_in, held - max_held)
        } else {
            0
        };
        self.held_in_changed(before, held - dropped, now)
    }

    /// The inbound window zgate granted on this connection, in bytes (HTTP/2: hyper's
    /// connection window; HTTP/1 grants none): held request bytes up to it are not charged
    /// (see `window.rs`). Set once, before any byte is read.
    pub fn grant_inbound(&self, bytes: u64) {
        self.granted_in.store(bytes, Ordering::Relaxed);
    }

    /// HTTP/1: the connection became a tunnel (a protocol upgrade was switched to): what
    /// was held of its requests is released (the tunnel's own buffers are charged with its
    /// request), and from now on its reads are neither held nor chunks of a message.
    pub fn enter_tunnel(&self, now: impl Now) -> Verdict {
        self.tunnel.store(true, Ordering::Relaxed);
        let before = self.held_in.swap(0, Ordering::Relaxed);
        self.held_in_changed(before, 0, now)
    }

    /// HTTP/1: whether the connection is a tunnel (see [`Accounting::enter_tunnel`]).
    #[inline]
    pub fn in_tunnel(&self) -> bool {
        self.tunnel.load(Ordering::Relaxed)
    }

    /// `n` request body bytes were handed to the backend.
    pub fn request_forwarded(&self, n: usize, now: impl Now) -> Verdict {
        let (released, before) = take_from(&self.held_in, n as u64);
        self.held_in_changed(before, before - released, now)
    }

    /// Held request bytes went from `before` to `after`: the charge changes by what is beyond
    /// the grant.
    fn held_in_changed(&self, before: u64, after: u64, now: impl Now) -> Verdict {
        let granted = self.granted_in.load(Ordering::Relaxed);
        match window::charge_delta(before, after, granted) {
            0 => Verdict::Allow,
            delta => self.memory_changed(delta, now),
        }
    }

    /// A backend connection's buffers are held for this client (`delta` > 0: a response
    /// started streaming over it) or no longer (`delta` < 0: its body ended or was dropped).
    pub fn backend_buffer(&self, delta: i64, now: impl Now) -> Verdict {
        self.memory_changed(delta, now)
    }

    /// `n` response bytes arrived from the backend for this client.
    pub fn response_received(&self, n: usize, now: impl Now) -> Verdict {
        self.held_out.fetch_add(n as u64, Ordering::Relaxed);
        self.memory_changed(n as i64, now)
    }

    /// A request starts (its head was parsed): in flight and awaiting its response until
    /// [`Accounting::response_started`] and [`Accounting::request_ended`]. Ends the request
    /// head being read. With `own`, the request is the connection's client's and its
    /// per-request memory cost is charged here (the verdict is that charge's); without, it is
    /// a forwarded client's, charged to that client's handle by the caller.
    pub fn request_started(&self, own: bool, now: impl Now) -> Verdict {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.awaiting.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        if !own {
            return Verdict::Allow;
        }
        self.memory_changed(self.costs.per_request as i64, now)
    }

    /// A request's response started (or the request was given up before it did).
    pub fn response_started(&self) {
        take(&self.awaiting, 1);
    }

    /// A request ended: its response body ended, or its stream was reset. When it was the
    /// last one in flight, request bytes still counted as held belonged to streams that were
    /// reset or refused, or to HTTP/1 heads, and hyper has dropped them. `own` as given to
    /// [`Accounting::request_started`].
    pub fn request_ended(&self, own: bool, now: impl Now) -> Verdict {
        let mut release = if own { self.costs.per_request } else { 0 };
        let before = self
            .requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
        match before {
            Ok(1) => {
                let held = self.held_in.swap(0, Ordering::Relaxed);
                let granted = self.granted_in.load(Ordering::Relaxed);
                release += window::charged(held, granted);
            }
            Ok(_) => {}
            // Not in flight (a late event): nothing to release.
            Err(_) => return Verdict::Allow,
        }
        self.memory_changed(-(release as i64), now)
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

    /// A chunk of `n` bytes of the message tracked by `message` (metric F).
    #[inline]
    pub fn chunk(&self, message: &mut Fragments, n: usize, now: impl Now) -> Verdict {
        self.conn.chunk(message, n, now.now())
    }

    /// An HTTP/2 frame the static guards count.
    #[inline]
    pub fn h2_frame(&self, frame: H2Frame, now: impl Now) -> Verdict {
        self.conn.h2_frame(frame, now.now())
    }

    /// `ns` of CPU time spent on this client's work (one poll), charged in batches.
    #[inline]
    pub fn cpu(&self, ns: u64, now: impl Now) -> Verdict {
        let now = now.now();
        match self.cpu_pending.add(ns, now, CPU_BATCH_INTERVAL_NS) {
            Some(batch) => self.conn.cpu_spent(batch, now),
            None => Verdict::Allow,
        }
    }

    /// Bytes moved in either direction so far; two readings tell whether the connection idled.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_in() + self.bytes_out()
    }

    /// `n` bytes of HTTP/2 control frames were (or are being) moved, either way: counted
    /// from the frame header, so this may run ahead of the bytes moved until the payload
    /// arrives (called by the IO task only).
    #[inline]
    pub fn control_bytes(&self, n: usize) {
        add_single_writer(&self.control, n as u64);
    }

    /// Bytes moved that were not HTTP/2 control frames: what `timeouts.idle` counts as
    /// activity, so a client that only PINGs stays idle. May step back while a control frame's
    /// payload is in transit; a reader keeps its own maximum.
    pub fn active_bytes(&self) -> u64 {
        self.bytes_moved()
            .saturating_sub(self.control.load(Ordering::Relaxed))
    }

    /// Bytes read from the client so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes written to the client so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests in flight whose response has not started yet.
    pub fn awaiting(&self) -> u64 {
        self.awaiting.load(Ordering::Relaxed)
    }

    /// When the request head now arriving started, if one is.
    pub fn head_started(&self) -> Option<Nanos> {
        match self.head_started.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Nanos(n - 1)),
        }
    }

    /// Bytes held for the client on this connection now (not counting the fixed costs).
    pub fn held(&self) -> u64 {
        self.held_in.load(Ordering::Relaxed) + self.held_out.load(Ordering::Relaxed)
    }

    /// Records a change of the bytes held for this connection, reporting it to the limiter
    /// when the unreported total reaches [`MEM_GRANULARITY`] either way.
    fn memory_changed(&self, delta: i64, now: impl Now) -> Verdict {
        match self.mem_unreported.add(delta) {
            Some(n) if n > 0 => self.conn.memory_grew(n as u64, now.now()),
            Some(n) => {
                self.conn.memory_shrank(n.unsigned_abs());
                Verdict::Allow
            }
            None => Verdict::Allow,
        }
    }
}

/// Memory changes not yet reported to the limiter, net bytes: reported when the total
/// reaches [`MEM_GRANULARITY`] either way. Shared by a connection's own client
/// ([`Accounting`]) and the forwarded ones it carries (`forwarded.rs`).
#[derive(Debug, Default)]
pub struct MemBatch(AtomicI64);

impl MemBatch {
    /// Adds `delta`; the net change to report now, once the total reached the granularity.
    #[inline]
    pub fn add(&self, delta: i64) -> Option<i64> {
        if delta == 0 {
            return None;
        }
        let net = self.0.fetch_add(delta, Ordering::Relaxed) + delta;
        if net.abs() < MEM_GRANULARITY {
            return None;
        }
        match self.0.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// What is not reported yet (taken by an owner going away).
    pub fn take(&mut self) -> i64 {
        std::mem::take(self.0.get_mut())
    }
}

/// CPU time measured but not yet charged to the limiter: charged when [`CPU_BATCH_NS`] have
/// accumulated or `interval` has passed since the last charge. Shared by a connection's own
/// client ([`Accounting`]) and the forwarded ones it carries (`forwarded.rs`).
#[derive(Debug)]
pub struct CpuBatch {
    pending: AtomicU64,
    /// When CPU time was last charged, ns on the limiter's clock.
    charged_at: AtomicU64,
}

impl CpuBatch {
    /// Nothing pending, as if last charged at `start`.
    pub fn new(start: Nanos) -> CpuBatch {
        CpuBatch {
            pending: AtomicU64::new(0),
            charged_at: AtomicU64::new(start.0),
        }
    }

    /// Adds `ns` spent at `now`; the batch to charge now, if one is due and not empty.
    #[inline]
    pub fn add(&self, ns: u64, now: Nanos, interval: u64) -> Option<u64> {
        let pending = self.pending.fetch_add(ns, Ordering::Relaxed) + ns;
        let last = self.charged_at.load(Ordering::Relaxed);
        if pending < CPU_BATCH_NS && now.0.saturating_sub(last) < interval {
            return None;
        }
        let batch = self.pending.swap(0, Ordering::Relaxed);
        self.charged_at.store(now.0, Ordering::Relaxed);
        (batch > 0).then_some(batch)
    }

    /// The CPU time pending, ns.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// When CPU time was last charged.
    pub fn charged_at(&self) -> Nanos {
        Nanos(self.charged_at.load(Ordering::Relaxed))
    }

    /// What is pending (taken by an owner going away).
    pub fn take(&mut self) -> u64 {
        std::mem::take(self.pending.get_mut())
    }
}

/// Adds `n` to a counter that only one task writes (the connection's IO task owns the
/// stream): a plain load and store, no locked instruction.
#[inline]
fn add_single_writer(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Subtracts up to `n` from `cell`, never below zero; returns what was subtracted and what
/// the cell held before.
fn take_from(cell: &AtomicU64, n: u64) -> (u64, u64) {
    match cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        (held > 0).then(|| held - n.min(held))
    }) {
        Ok(held) => (n.min(held), held),
        Err(_) => (0, 0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use zgate_limiter::{Limiter, LimiterConfig, Metric, Mode};

    const COSTS: Costs = Costs {
        per_connection: 1000,
        per_request: 100,
    };

    fn ms(n: u64) -> Nanos {
        Nanos(n * 1_000_000)
    }

    fn setup() -> (Limiter, Accounting) {
        let limiter = Limiter::new(LimiterConfig::default(), None, ms(0)).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        let (conn, v) = limiter.connection_opened(ip, ms(0));
        assert_eq!(v, Verdict::Allow);
        let (acc, v) = Accounting::new(conn.unwrap(), COSTS, ms(0));
        assert_eq!(v, Verdict::Allow);
        (limiter, acc)
    }

    fn memory(limiter: &Limiter) -> u64 {
        let ip = "192.0.2.1".parse().unwrap();
        limiter.client(ip, ms(0)).unwrap().current[Metric::Memory.index()]
    }

    #[test]
    fn the_connection_cost_is_charged_at_once() {
        let (limiter, _acc) = setup();
        assert_eq!(memory(&limiter), 1000);
    }

    #[test]
    fn a_head_starts_only_between_requests() {
        let (_l, acc) = setup();
        assert_eq!(acc.head_started(), None);
        acc.bytes_read(10, ms(5));
        assert_eq!(acc.head_started(), Some(ms(5)));
        acc.bytes_read(5, ms(7));
        assert_eq!(
            acc.head_started(),
            Some(ms(5)),
            "later bytes do not move it"
        );
        acc.request_started(true, ms(8));
        assert_eq!(acc.head_started(), None);
        acc.bytes_read(100, ms(9)); // body bytes
        assert_eq!(acc.head_started(), None);
        acc.response_started();
        // The response still streams: bytes read belong to its request.
        acc.bytes_read(1, ms(10));
        assert_eq!(acc.head_started(), None);
        acc.request_ended(true, ms(11));
        acc.bytes_read(1, ms(12));
        assert_eq!(acc.head_started(), Some(ms(12)));
        acc.bytes_written(7, ms(12));
        assert_eq!((acc.bytes_in(), acc.bytes_out()), (117, 7));
        assert_eq!(acc.bytes_moved(), 124);
    }

    #[test]
    fn one_in_flight_count_and_the_awaiting_part_of_it() {
        let (_l, acc) = setup();
        acc.request_started(true, ms(1));
        acc.request_started(true, ms(1));
        assert_eq!((acc.requests(), acc.awaiting()), (2, 2));
        acc.response_started();
        assert_eq!((acc.requests(), acc.awaiting()), (2, 1));
        acc.request_ended(true, ms(2));
        acc.response_started();
        acc.request_ended(true, ms(3));
        assert_eq!((acc.requests(), acc.awaiting()), (0, 0));
        // Never below zero, whatever a late event does.
        acc.request_ended(true, ms(4));
        acc.response_started();
        assert_eq!((acc.requests(), acc.awaiting()), (0, 0));
    }

    #[test]
    fn a_forwarded_clients_request_is_in_flight_here_but_costs_this_client_nothing() {
        let (limiter, acc) = setup();
        let step = MEM_GRANULARITY as usize;
        // Enough own requests to cross a reporting step, then the same number forwarded.
        let n = step / COSTS.per_request as usize + 1;
        for _ in 0..n {
            acc.request_started(false, ms(1));
        }
        assert_eq!(acc.requests(), n as u64);
        assert_eq!(
            memory(&limiter),
            1000,
            "no per-request cost for another's request"
        );
        for _ in 0..n {
            acc.request_ended(false, ms(2));
        }
        assert_eq!((acc.requests(), memory(&limiter)), (0, 1000));
        for _ in 0..n {
            acc.request_started(true, ms(3));
        }
        assert!(memory(&limiter) > 1000);
    }

    #[test]
    fn memory_reaches_the_limiter_in_steps_of_the_granularity() {
        let (limiter, acc) = setup();
        let step = MEM_GRANULARITY as usize;
        acc.response_received(step - 1, ms(1));
        assert_eq!(memory(&limiter), 1000, "below the step: not reported");
        acc.response_received(1, ms(1));
        assert_eq!(memory(&limiter), 1000 + step as u64);
        assert_eq!(acc.held(), step as u64);
        acc.bytes_written(step, ms(2));
        assert_eq!(memory(&limiter), 1000);
        assert_eq!(acc.held(), 0);
    }

    #[test]
    fn held_request_bytes_are_capped_and_released_with_the_last_request() {
        let (limiter, acc) = setup();
        acc.request_started(true, ms(1));
        acc.request_read(40_000, 32_768, ms(1));
        assert_eq!(acc.held(), 32_768, "never more than the cap");
        acc.request_forwarded(10_000, ms(2));
        assert_eq!(acc.held(), 22_768);
        acc.response_started();
        acc.request_ended(true, ms(3));
        assert_eq!(acc.held(), 0, "the last request takes what is left with it");
        assert_eq!(memory(&limiter), 1000);
    }

    #[test]
    fn cpu_is_charged_in_batches_by_amount_or_by_time() {
        let (limiter, acc) = setup();
        limiter.set_mode(Mode::Training, ms(0)).unwrap();
        let charges = || limiter.counters().observations[Metric::Cpu.index()];
        // The first poll charges at once (nothing was charged for over the interval).
        let t = CPU_BATCH_INTERVAL_NS;
        acc.cpu(10, Nanos(t));
        assert_eq!(charges(), 1);
        // Small polls within the interval wait for the batch...
        acc.cpu(1_000, Nanos(t + 1));
        acc.cpu(1_000, Nanos(t + 10));
        assert_eq!(charges(), 1, "batched");
        // ...until it fills by amount...
        acc.cpu(CPU_BATCH_NS, Nanos(t + 20));
        assert_eq!(charges(), 2);
        acc.cpu(1, Nanos(t + 30));
        assert_eq!(charges(), 2);
        // ...or by time.
        acc.cpu(1, Nanos(t + 20 + CPU_BATCH_INTERVAL_NS));
        assert_eq!(charges(), 3);
    }

    #[test]
    fn an_http1_message_boundary_is_taken_once() {
        let (_l, acc) = setup();
        assert!(!acc.take_message_done());
        acc.message_done();
        assert!(acc.take_message_done());
        assert!(!acc.take_message_done());
    }
}
