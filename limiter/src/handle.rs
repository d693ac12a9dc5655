//! A handle on one client's live counters: what a request, its memory, its body chunks and the
//! CPU of its work are charged to.
//!
//! Every [`Connection`](crate::Connection) holds one for the client that owns it. Behind a
//! load balancer or a CDN the client of a request may be another one than the connection's
//! owner (DESIGN.md §6a): [`Limiter::forwarded`](crate::Limiter::forwarded) gives a handle on
//! that client, with no connection counted, so the request-level metrics (R, A, per-request
//! memory, body fragmentation, request CPU) go to it while the connection-level ones (C,
//! per-connection memory, connection CPU) stay with the owner.
//!
//! RAII like the connection: a handle gives back the memory it reported when dropped, and a
//! client someone holds a handle on is never evicted from the table.
//!
//! An **exempt** handle (its address is inside the limiter's exempt prefixes when the handle
//! was made) is measured like any other, but it never blocks (no metric, no guard, no block
//! list entry in its way) and in training it is never a sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zgate_training::{Fragments, Metric};

use crate::client::ClientState;
use crate::glitches::Glitch;
use crate::guards::LiveGuardLimits;
use crate::identified::Identified;
use crate::key::ClientKey;
use crate::mode::Mode;
use crate::shared::{Shared, State};
use crate::time::Nanos;
use crate::verdict::{Guard, Reason, Verdict};

/// A handle on one client's counters. `Send + Sync`.
///
/// Every event takes `now` and returns a [`Verdict`]; events of a blocked client return `Block`
/// with [`Guard::Blocked`] at once.
pub struct ClientHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: Arc<ClientState>,
    key: ClientKey,
    exempt: bool,
    /// Admitted while the client table was full: its client is not in the table, so it is
    /// held to the static guards only (no scoring, no training samples).
    untracked: bool,
    /// Bytes this handle added to the client's memory.
    memory: AtomicU64,
    /// The exempt prefixes' generation `exempt` was decided in (`u64::MAX`: not recorded).
    pub(crate) exempt_gen: u64,
}

impl ClientHandle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Arc<ClientState>,
        key: ClientKey,
        exempt: bool,
    ) -> ClientHandle {
        ClientHandle {
            shared,
            client,
            key,
            exempt,
            untracked: false,
            memory: AtomicU64::new(0),
            exempt_gen: u64::MAX,
        }
    }

    /// This handle as one of a client the table had no room for (see `untracked`).
    pub(crate) fn set_untracked(&mut self) {
        self.untracked = true;
    }

    /// The client caused `glitch` (see [`Glitch`]): counted per client, weighted, and checked
    /// against `max_glitches` per 10-second window, in every mode (untracked clients too;
    /// never for an exempt handle).
    pub fn glitch(&self, glitch: Glitch, now: Nanos) -> Verdict {
        let now = now.0;
        if self.blocked_at(now) {
            return self.blocked();
        }
        let max = self.shared.max_glitches.load(Ordering::Relaxed);
        let n = self.client.glitches.add(glitch.weight(), now);
        match LiveGuardLimits::over(u64::from(max), n, Guard::Glitches) {
            Some((g, v)) => self.block(Reason::Guard(g), v, 0.0, now),
            None => Verdict::Allow,
        }
    }

    /// Whether the handle was made while the client table was full (see `untracked`).
    pub(crate) fn is_untracked(&self) -> bool {
        self.untracked
    }

    /// The client.
    pub fn client(&self) -> ClientKey {
        self.key
    }

    /// Whether the client was exempt when the handle was made: measured, never blocked, never
    /// a training sample.
    pub fn is_exempt(&self) -> bool {
        self.exempt
    }

    /// Records how the client was identified, for the admin API (the latest wins). Cheap when
    /// unchanged.
    #[inline]
    pub fn identified_by(&self, how: Identified) {
        self.client.identified_by(how);
    }

    /// Whether the client is blocked at `now` (never, for an exempt handle).
    #[inline]
    pub fn is_blocked(&self, now: Nanos) -> bool {
        self.blocked_at(now.0)
    }

    /// The proxy now holds `bytes` more for this client (buffers, per-stream cost). Checked
    /// against `max_memory_per_client` in every mode, scored as metric `memory` in
    /// defence/monitor.
    pub fn memory_grew(&self, bytes: u64, now: Nanos) -> Verdict {
        let now = now.0;
        if self.blocked_at(now) {
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
    /// handle reported.
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

    /// `cpu_ns` nanoseconds of proxy CPU time were spent on this client's work. Updates the
    /// client's CPU EMA and scores it as metric `cpu`.
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

    #[inline]
    pub(crate) fn blocked_at(&self, now: u64) -> bool {
        !self.exempt && self.client.is_blocked(now)
    }

    /// Counts a request starting; returns whether it was counted (and as non-idempotent) and
    /// the verdict.
    pub(crate) fn count_request(&self, idempotent: bool, now: u64) -> (Counted, Verdict) {
        if self.blocked_at(now) {
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

    /// Gives back what [`ClientHandle::count_request`] counted.
    pub(crate) fn uncount_request(&self, counted: Counted) {
        match counted {
            Counted::No => {}
            Counted::Idempotent => self.client.sub(Metric::Requests, 1),
            Counted::NonIdempotent => {
                self.client.sub(Metric::Requests, 1);
                self.client.sub(Metric::RequestsNonidempotent, 1);
            }
        }
    }

    /// The state to score an event in, or the verdict without scoring: `Block` for a blocked
    /// client, `Allow` in disabled mode.
    #[inline]
    fn scoring(&self, now: u64) -> Result<State, Verdict> {
        if self.blocked_at(now) {
            return Err(self.blocked());
        }
        let st = self.shared.state();
        if st.mode == Mode::Disabled {
            return Err(Verdict::Allow);
        }
        Ok(st)
    }

    /// Records `x` as an observation of `m` and, in defence or monitor, scores it. An exempt
    /// client's observation is counted and kept as its maximum (outside training), never
    /// sampled and never scored.
    #[inline]
    pub(crate) fn observe(&self, m: Metric, x: u64, st: State, now: u64) -> Verdict {
        if self.untracked {
            return Verdict::Allow;
        }
        let s = &self.shared;
        s.counters.observed(m);
        if self.exempt {
            if st.mode != Mode::Training {
                self.client.observe(m, x, st.epoch);
            }
            return Verdict::Allow;
        }
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

    /// Blocks the client for `block_duration` and returns the verdict; an exempt client is
    /// not blocked (`Allow`).
    pub(crate) fn block(&self, reason: Reason, value: u64, z: f64, now: u64) -> Verdict {
        if self.exempt {
            return Verdict::Allow;
        }
        let s = &self.shared;
        let until = now.saturating_add(s.block_ns.load(Ordering::Relaxed));
        self.client.block(until);
        s.record_block(self.key, until, reason, value, z, now);
        Verdict::Block { reason, value, z }
    }

    pub(crate) fn blocked(&self) -> Verdict {
        self.shared.refuse(Guard::Blocked, 0)
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let held = *self.memory.get_mut();
        if held > 0 {
            self.client.sub(Metric::Memory, held);
        }
        let now = self.shared.clock();
        if now > self.client.last_seen() {
            self.client.touch(now);
        }
    }
}

/// How a request was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Not at all (disabled mode, or its client is blocked).
    No,
    Idempotent,
    NonIdempotent,
}
