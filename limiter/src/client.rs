//! One tracked client's state: live counters, per-epoch maxima, block state.
//!
//! All fields are atomics, shared by every worker through an `Arc`. The one lock (`slow`) guards
//! the CPU EMA and serialises the rare "new maximum" path, so that a client's per-epoch sample
//! (what it added to the training set) always equals its recorded maximum, even when two workers
//! raise it at once or an epoch starts meanwhile.
//!
//! # Epochs
//! Current values (`cur`) are live counts (open connections, requests in flight, bytes held):
//! they do not belong to an epoch and are never reset; every decrement is paired with the
//! increment of the handle that made it (see `Connection`, `Request`), so they cannot underflow,
//! whatever epochs pass in between. Only the maxima and the "entered the population" bits belong
//! to an epoch: `tag` holds `epoch << 8 | entered_mask`, and a client seen in a newer epoch resets
//! them lazily, under `slow`, before its first observation there. The two bits of the low byte
//! that no metric uses (6 and 7) hold how the client was last identified ([`Identified`]),
//! which outlives epochs: it costs no byte per client.

use crate::glitches::GlitchWindow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use zgate_training::{CpuEma, Epoch, Metric};

use crate::identified::Identified;

/// Bits of `tag` holding how the client was identified; below them, one bit per metric.
const SOURCE_SHIFT: u64 = 6;
const SOURCE_MASK: u64 = 0b11 << SOURCE_SHIFT;
const _: () = assert!(Metric::COUNT as u64 <= SOURCE_SHIFT);

/// What an observation must add to the epoch's training set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sample {
    /// Nothing: not a new maximum.
    None,
    /// First sample of the client for the metric in this epoch.
    Add(u64),
    /// The client's maximum grew.
    Raise(u64, u64),
}

/// The state of one client: 152 bytes (168 with the `Arc` header); see `benches/memory.rs`.
pub(crate) struct ClientState {
    /// Live value per metric: counts and bytes held; the last CPU EMA (ppm) and the last
    /// fragmentation score.
    cur: [AtomicU64; Metric::COUNT],
    /// Maximum per metric in the epoch of `tag`.
    max: [AtomicU64; Metric::COUNT],
    /// `epoch << 8 | mask` of metrics the client entered in that epoch. Written under `slow`.
    tag: AtomicU64,
    /// Time of the last connection open or close, in ns.
    last_seen: AtomicU64,
    /// Blocked while `now < blocked_until` (ns); 0 = not blocked.
    blocked_until: AtomicU64,
    /// The CPU EMA; the lock also serialises maxima and `tag` updates.
    slow: Mutex<CpuEma>,
    /// Weighted glitches in the current window (see `glitches.rs`).
    pub(crate) glitches: GlitchWindow,
}

impl ClientState {
    pub(crate) fn new(now: u64) -> ClientState {
        ClientState {
            cur: [const { AtomicU64::new(0) }; Metric::COUNT],
            max: [const { AtomicU64::new(0) }; Metric::COUNT],
            tag: AtomicU64::new(0),
            last_seen: AtomicU64::new(now),
            blocked_until: AtomicU64::new(0),
            slow: Mutex::new(CpuEma::started(now)),
            glitches: GlitchWindow::default(),
        }
    }

    #[inline]
    pub(crate) fn cur(&self, m: Metric) -> u64 {
        self.cur[m.index()].load(Ordering::Relaxed)
    }

    /// Adds `d` to the live value; returns the new value.
    #[inline]
    pub(crate) fn add(&self, m: Metric, d: u64) -> u64 {
        self.cur[m.index()]
            .fetch_add(d, Ordering::Relaxed)
            .wrapping_add(d)
    }

    /// Subtracts `d`. The caller only subtracts what its own handle added, so this never goes
    /// below zero; a saturating CAS would cost more on the hot path for no gain.
    #[inline]
    pub(crate) fn sub(&self, m: Metric, d: u64) {
        let prev = self.cur[m.index()].fetch_sub(d, Ordering::Relaxed);
        debug_assert!(prev >= d, "{m} underflow: {prev} - {d}");
    }

    #[inline]
    pub(crate) fn set(&self, m: Metric, v: u64) {
        self.cur[m.index()].store(v, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn touch(&self, now: u64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    pub(crate) fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn is_blocked(&self, now: u64) -> bool {
        now < self.blocked_until.load(Ordering::Relaxed)
    }

    pub(crate) fn blocked_until(&self) -> u64 {
        self.blocked_until.load(Ordering::Relaxed)
    }

    pub(crate) fn block(&self, until: u64) {
        self.blocked_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(crate) fn unblock(&self) {
        self.blocked_until.store(0, Ordering::Relaxed);
    }

    /// No open connection: may be evicted. A blocked client may be too: its block lives in the
    /// block list, which refuses it at accept whether or not it is in the table.
    pub(crate) fn is_evictable(&self) -> bool {
        self.cur(Metric::Connections) == 0
    }

    /// Evictable and unseen for `idle_ns`.
    pub(crate) fn is_idle(&self, now: u64, idle_ns: u64) -> bool {
        self.is_evictable() && self.last_seen().saturating_add(idle_ns) <= now
    }

    /// Records the observation `x` of `m` in `epoch`: raises the epoch's maximum, and says what
    /// the training set must record. Cheap (three relaxed loads) unless `x` is a new maximum or
    /// the first observation of `m` in `epoch`.
    #[inline]
    pub(crate) fn observe(&self, m: Metric, x: u64, epoch: Epoch) -> Sample {
        let bit = 1u64 << m.index();
        let tag = self.tag.load(Ordering::Acquire);
        if tag >> 8 == epoch && tag & bit != 0 && x <= self.max[m.index()].load(Ordering::Relaxed) {
            return Sample::None;
        }
        self.observe_slow(m, x, epoch)
    }

    #[cold]
    fn observe_slow(&self, m: Metric, x: u64, epoch: Epoch) -> Sample {
        let bit = 1u64 << m.index();
        let _guard = self.lock();
        let mut tag = self.tag.load(Ordering::Relaxed);
        if tag >> 8 > epoch {
            // The caller read an older epoch than one already seen here: its sample belongs to a
            // finished set; drop it rather than mix epochs.
            return Sample::None;
        }
        if tag >> 8 < epoch {
            for max in &self.max {
                max.store(0, Ordering::Relaxed);
            }
            tag = epoch << 8 | (tag & SOURCE_MASK);
        }
        let max = &self.max[m.index()];
        let sample = if tag & bit == 0 {
            max.store(x, Ordering::Relaxed);
            tag |= bit;
            Sample::Add(x)
        } else {
            let old = max.load(Ordering::Relaxed);
            if x <= old {
                return Sample::None;
            }
            max.store(x, Ordering::Relaxed);
            Sample::Raise(old, x)
        };
        self.tag.store(tag, Ordering::Release);
        sample
    }

    /// The samples this client holds in `epoch`'s training set, to remove them when it is
    /// evicted.
    pub(crate) fn samples(&self, epoch: Epoch) -> [Option<u64>; Metric::COUNT] {
        let _guard = self.lock();
        let tag = self.tag.load(Ordering::Relaxed);
        let mut out = [None; Metric::COUNT];
        if tag >> 8 != epoch {
            return out;
        }
        for m in Metric::ALL {
            if tag & (1 << m.index()) != 0 {
                out[m.index()] = Some(self.max[m.index()].load(Ordering::Relaxed));
            }
        }
        out
    }

    /// How the client was last identified.
    pub(crate) fn identified(&self) -> Identified {
        Identified::from_bits((self.tag.load(Ordering::Relaxed) & SOURCE_MASK) >> SOURCE_SHIFT)
    }

    /// Records how the client was identified: one relaxed load when unchanged, else the lock
    /// (so that no update of `tag` is lost).
    #[inline]
    pub(crate) fn identified_by(&self, how: Identified) {
        let bits = how.to_bits() << SOURCE_SHIFT;
        if self.tag.load(Ordering::Relaxed) & SOURCE_MASK == bits {
            return;
        }
        let _guard = self.lock();
        let tag = self.tag.load(Ordering::Relaxed);
        self.tag.store(tag & !SOURCE_MASK | bits, Ordering::Release);
    }

    /// The epoch maximum of `m` if the client was seen in `epoch`, else 0.
    pub(crate) fn max(&self, m: Metric, epoch: Epoch) -> u64 {
        let tag = self.tag.load(Ordering::Acquire);
        if tag >> 8 != epoch || tag & (1 << m.index()) == 0 {
            return 0;
        }
        self.max[m.index()].load(Ordering::Relaxed)
    }

    /// Charges `cpu_ns` of CPU time at `now`; returns the EMA in ppm of a core.
    pub(crate) fn charge_cpu(&self, cpu_ns: u64, now: u64, half_life_ns: u64) -> u64 {
        let ppm = {
            let mut ema = self.lock();
            *ema = ema.update(cpu_ns, now, half_life_ns);
            ema.value_ppm()
        };
        self.set(Metric::Cpu, ppm);
        ppm
    }

    /// The CPU EMA decayed to `now`, in ppm.
    pub(crate) fn cpu_at(&self, now: u64, half_life_ns: u64) -> u64 {
        self.lock().at(now, half_life_ns)
    }

    fn lock(&self) -> MutexGuard<'_, CpuEma> {
        // Nothing panics while the lock is held (plain loads, stores and float math), and the
        // state stays consistent at every point anyway, so a poisoned lock is safe to reuse.
        self.slow.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_observation_adds_then_only_new_maxima_raise() {
        let c = ClientState::new(0);
        assert_eq!(c.observe(Metric::Connections, 3, 1), Sample::Add(3));
        assert_eq!(c.observe(Metric::Connections, 2, 1), Sample::None);
        assert_eq!(c.observe(Metric::Connections, 3, 1), Sample::None);
        assert_eq!(c.observe(Metric::Connections, 5, 1), Sample::Raise(3, 5));
        assert_eq!(c.max(Metric::Connections, 1), 5);
        assert_eq!(c.observe(Metric::Memory, 0, 1), Sample::Add(0));
        assert_eq!(c.samples(1)[Metric::Connections.index()], Some(5));
        assert_eq!(c.samples(1)[Metric::Memory.index()], Some(0));
        assert_eq!(c.samples(1)[Metric::Cpu.index()], None);
    }

    #[test]
    fn a_new_epoch_resets_maxima_lazily_and_stale_epochs_are_dropped() {
        let c = ClientState::new(0);
        assert_eq!(c.observe(Metric::Requests, 9, 1), Sample::Add(9));
        assert_eq!(c.observe(Metric::Requests, 2, 2), Sample::Add(2));
        assert_eq!(c.max(Metric::Requests, 2), 2);
        assert_eq!(c.max(Metric::Requests, 1), 0);
        assert_eq!(c.observe(Metric::Requests, 50, 1), Sample::None);
        assert_eq!(c.samples(1), [None; Metric::COUNT]);
    }

    #[test]
    fn blocks_and_eviction_rules() {
        let c = ClientState::new(100);
        assert!(c.is_evictable());
        assert!(!c.is_idle(150, 100));
        assert!(c.is_idle(200, 100));
        c.add(Metric::Connections, 1);
        assert!(!c.is_evictable());
        c.sub(Metric::Connections, 1);
        c.block(500);
        // The block lives in the block list too: a blocked client may be evicted.
        assert!(c.is_blocked(499) && c.is_evictable());
        assert!(!c.is_blocked(500));
        c.block(300);
        assert_eq!(c.blocked_until(), 500);
        c.unblock();
        assert!(!c.is_blocked(0));
    }

    #[test]
    fn how_it_was_identified_outlives_epochs_and_leaves_samples_alone() {
        let c = ClientState::new(0);
        assert_eq!(c.identified(), Identified::Peer);
        assert_eq!(c.observe(Metric::Requests, 3, 1), Sample::Add(3));
        c.identified_by(Identified::Header);
        assert_eq!(c.identified(), Identified::Header);
        assert_eq!(c.observe(Metric::Requests, 3, 1), Sample::None);
        assert_eq!(c.observe(Metric::Requests, 4, 1), Sample::Raise(3, 4));
        let mut expect = [None; Metric::COUNT];
        expect[Metric::Requests.index()] = Some(4);
        assert_eq!(c.samples(1), expect);
        assert_eq!(c.observe(Metric::Requests, 1, 2), Sample::Add(1));
        assert_eq!(c.identified(), Identified::Header);
        c.identified_by(Identified::ProxyProtocol);
        assert_eq!(c.identified(), Identified::ProxyProtocol);
        assert_eq!(c.max(Metric::Requests, 2), 1);
    }

    #[test]
    fn size_is_as_documented() {
        assert_eq!(core::mem::size_of::<ClientState>(), 152);
        // A table entry: the key (two u64 halves, align 8) and the `Arc`, no padding.
        let entry = core::mem::size_of::<(crate::key::ClientKey, std::sync::Arc<ClientState>)>();
        assert_eq!(entry, 24);
    }

    #[test]
    fn cpu_is_an_ema() {
        let c = ClientState::new(0);
        let h = 1_000_000_000;
        // Half a core for one half-life from a cold start: half-way to 500_000 ppm.
        let ppm = c.charge_cpu(500_000_000, h, h);
        assert!((ppm as i64 - 250_000).abs() < 10, "{ppm}");
        assert_eq!(c.cur(Metric::Cpu), ppm);
        let later = c.cpu_at(2 * h, h);
        assert!((later as i64 - 125_000).abs() < 10, "{later}");
    }
}
