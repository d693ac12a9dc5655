//! The state shared by the [`crate::Limiter`] and every [`crate::Connection`] handle: mode and
//! epoch, model, thresholds, guards, client table, block list, counters. Its own file so that
//! `limiter.rs` and `connection.rs` both import it and not each other.

use core::time::Duration;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, ArcSwapOption};
use zgate_training::{Epoch, Metric, Model, ModelParams, TrainingSet};

use crate::blocklist::{BlockEntry, BlockList};
use crate::client::{ClientState, Sample};
use crate::config::LimiterConfig;
use crate::counters::Counters;
use crate::guards::LiveGuardLimits;
use crate::key::{ClientKey, IpPrefix};
use crate::mode::{Mode, ModeError};
use crate::sampler;
use crate::snapshot::ClientSnapshot;
use crate::sync::{Change, Sink};
use crate::table::{Removed, Table};
use crate::time::{duration_ns, Nanos};
use crate::verdict::{Guard, Reason, Verdict};

/// Unique ids for the per-thread writer cache.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Mode and epoch, packed in one atomic so the hot path reads both with one load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    pub(crate) epoch: Epoch,
}

/// The largest epoch the limiter takes: from an imported model (the API, the state file) and
/// as the count of trainings. `2^53 - 1`: exact as a JSON number in every consumer (a double),
/// and far below the `2^56` that [`pack`] can hold, so `epoch + 1` and `epoch << 8` never wrap.
pub const MAX_EPOCH: Epoch = (1 << 53) - 1;

pub(crate) fn pack(epoch: Epoch, mode: Mode) -> u64 {
    debug_assert!(epoch <= MAX_EPOCH);
    epoch << 8 | u64::from(mode.to_u8())
}

pub(crate) fn enabled_mask(enabled: &[bool; Metric::COUNT]) -> u8 {
    Metric::ALL
        .iter()
        .filter(|m| enabled[m.index()])
        .fold(0, |acc, m| acc | 1 << m.index())
}

/// State shared by the limiter and every connection handle.
pub(crate) struct Shared {
    /// Id of this limiter for the per-thread writer cache.
    id: u64,
    /// `epoch << 8 | mode`.
    pub(crate) state: AtomicU64,
    /// When training ends by itself, ns; `u64::MAX` = only on command.
    pub(crate) training_deadline: AtomicU64,
    /// The running epoch's training set (training mode only).
    pub(crate) training: ArcSwapOption<TrainingSet>,
    pub(crate) model: ArcSwapOption<Model>,
    /// f64 bits per metric.
    pub(crate) thresholds: [AtomicU64; Metric::COUNT],
    /// Bit per metric index.
    pub(crate) enabled: AtomicU8,
    pub(crate) block_ns: AtomicU64,
    pub(crate) cpu_half_life_ns: AtomicU64,
    pub(crate) idle_ns: AtomicU64,
    /// Latest `now` seen by `connection_opened` or `tick`: the time of a handle dropped without
    /// `close(now)`.
    clock: AtomicU64,
    pub(crate) guards: LiveGuardLimits,
    /// `max_glitches` in force (0 = off).
    pub(crate) max_glitches: AtomicU32,
    pub(crate) table: Table,
    pub(crate) blocks: BlockList,
    pub(crate) counters: Counters,
    pub(crate) ipv6_prefix: u8,
    /// Prefixes never blocked nor sampled.
    pub(crate) exempt: ArcSwap<Vec<IpPrefix>>,
    /// `exempt` is not empty: lets the common case skip the load.
    pub(crate) any_exempt: AtomicBool,
    /// Bumped by every change of `exempt`: a kept handle whose generation is current has the
    /// exemption it would get anew (see `Limiter::forwarded_again`).
    pub(crate) exempt_gen: AtomicU64,
    /// Exclusive shards per training set.
    shards: usize,
    /// Serialises mode switches and configuration changes.
    pub(crate) control: Mutex<Control>,
    /// Where local block, unblock and mode changes are reported (a fleet); see `sync.rs`.
    pub(crate) sink: ArcSwapOption<Sink>,
}

pub(crate) struct Control {
    pub(crate) training_period: Duration,
    pub(crate) after_training: Mode,
    pub(crate) params: ModelParams,
}

impl Shared {
    /// The state of a new limiter configured by `config` with `shards` exclusive training
    /// shards, in [`Mode::Disabled`] at `now`.
    pub(crate) fn new(config: &LimiterConfig, shards: usize, now: Nanos) -> Shared {
        Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: AtomicU64::new(pack(0, Mode::Disabled)),
            training_deadline: AtomicU64::new(u64::MAX),
            training: ArcSwapOption::empty(),
            model: ArcSwapOption::empty(),
            thresholds: config.thresholds.map(|t| AtomicU64::new(t.to_bits())),
            enabled: AtomicU8::new(enabled_mask(&config.enabled)),
            block_ns: AtomicU64::new(duration_ns(config.block_duration)),
            cpu_half_life_ns: AtomicU64::new(duration_ns(config.cpu_half_life)),
            idle_ns: AtomicU64::new(duration_ns(config.idle_expiry)),
            clock: AtomicU64::new(now.0),
            guards: LiveGuardLimits::new(&config.guards),
            max_glitches: AtomicU32::new(config.max_glitches),
            table: Table::new(config.max_clients),
            blocks: BlockList::new(config.max_blocks),
            counters: Counters::new(),
            ipv6_prefix: config.ipv6_prefix,
            exempt: ArcSwap::from_pointee(Vec::new()),
            any_exempt: AtomicBool::new(false),
            exempt_gen: AtomicU64::new(0),
            shards,
            control: Mutex::new(Control {
                training_period: config.training_period,
                after_training: config.after_training,
                params: config.model_params(),
            }),
            sink: ArcSwapOption::empty(),
        }
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        let s = self.state.load(Ordering::Relaxed);
        // The low byte holds a `Mode` written by `pack`; truncation is the intent.
        State {
            mode: Mode::from_u8(s as u8),
            epoch: s >> 8,
        }
    }

    #[inline]
    pub(crate) fn threshold(&self, m: Metric) -> f64 {
        f64::from_bits(self.thresholds[m.index()].load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn is_enabled(&self, m: Metric) -> bool {
        self.enabled.load(Ordering::Relaxed) & (1 << m.index()) != 0
    }

    /// Whether `ip` is inside an exempt prefix.
    #[inline]
    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        self.any_exempt.load(Ordering::Relaxed) && self.exempt.load().iter().any(|p| p.contains(ip))
    }

    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    pub(crate) fn advance_clock(&self, now: u64) {
        if now > self.clock.load(Ordering::Relaxed) {
            self.clock.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Records an observation of `m` in training mode, ending training first if it is due.
    /// The caller has already updated the client's maximum for `epoch`.
    #[inline]
    pub(crate) fn train(&self, m: Metric, sample: Sample, epoch: Epoch, now: u64) {
        if now >= self.training_deadline.load(Ordering::Relaxed) {
            self.end_training_if_due(now);
        }
        if sample == Sample::None {
            return;
        }
        if let Some(set) = self.training.load().as_ref() {
            // A sample read under another epoch belongs to a set that is gone: drop it.
            if set.epoch() == epoch {
                sampler::record(self.id, set, m, sample);
            }
        }
    }

    /// The z-score of `x` for `m` if it is over the metric's threshold (and scoring of `m` is
    /// enabled and there is a model).
    #[inline]
    pub(crate) fn score(&self, m: Metric, x: u64) -> Option<f64> {
        if !self.is_enabled(m) {
            return None;
        }
        let model = self.model.load();
        let model = model.as_ref()?;
        if !model.exceeds(m, x, self.threshold(m)) {
            return None;
        }
        Some(model.z(m, x))
    }

    /// Puts `key` on the block list (best effort: a full list is counted) and counts the block.
    pub(crate) fn record_block(
        &self,
        key: ClientKey,
        until: u64,
        reason: Reason,
        value: u64,
        z: f64,
        now: u64,
    ) {
        let entry = BlockEntry {
            prefix: key.prefix(self.ipv6_prefix),
            until: Nanos(until),
            reason: Some(reason),
            value,
            z,
        };
        if self.blocks.insert_aggregating(entry, Nanos(now)).is_err() {
            self.counters.blocklist_full.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.blocked(reason);
        self.emit(Change::Blocked {
            entry,
            now: Nanos(now),
        });
    }

    /// A `Block` verdict for `guard` that puts nobody on the block list (already blocked, or the
    /// table is full).
    pub(crate) fn refuse(&self, guard: Guard, value: u64) -> Verdict {
        self.counters.blocked(Reason::Guard(guard));
        Verdict::guard(guard, value)
    }

    /// Removes a departed client's samples from the running training set.
    pub(crate) fn forget(&self, client: &Removed) {
        let st = self.state();
        if st.mode != Mode::Training {
            return;
        }
        if let Some(set) = self.training.load().as_ref() {
            sampler::remove(self.id, set, client.samples(set.epoch()));
        }
    }

    pub(crate) fn end_training_if_due(&self, now: u64) {
        let ctl = self.lock_control();
        let st = self.state();
        if st.mode != Mode::Training || now < self.training_deadline.load(Ordering::Relaxed) {
            return;
        }
        // Training always yields a model and the switch is forced: it cannot be refused.
        let before = self.training.load_full();
        if self.switch(&ctl, ctl.after_training, now, true).is_ok() {
            self.emit_mode(before);
        }
    }

    pub(crate) fn switch(
        &self,
        ctl: &Control,
        mode: Mode,
        now: u64,
        force: bool,
    ) -> Result<(), ModeError> {
        let st = self.state();
        match mode {
            Mode::Training => {
                if st.epoch >= MAX_EPOCH {
                    return Err(ModeError::EpochsExhausted);
                }
                let epoch = st.epoch + 1;
                self.training
                    .store(Some(TrainingSet::new(epoch, self.shards)));
                let deadline = match ctl.training_period {
                    Duration::ZERO => u64::MAX,
                    p => now.saturating_add(duration_ns(p)),
                };
                self.training_deadline.store(deadline, Ordering::Relaxed);
                self.state
                    .store(pack(epoch, Mode::Training), Ordering::Release);
            }
            Mode::Defence | Mode::Monitor => {
                let trained = match (st.mode, self.training.load_full()) {
                    (Mode::Training, Some(set)) => Some(Arc::new(set.finalize(&ctl.params))),
                    _ => None,
                };
                let Some(model) = trained.clone().or_else(|| self.model.load_full()) else {
                    return Err(ModeError::NoModel { requested: mode });
                };
                if !force {
                    self.refuse_thin(&model, &ctl.params, mode)?;
                }
                if trained.is_some() {
                    self.model.store(Some(model));
                }
                self.leave_training(st.epoch, mode);
            }
            Mode::Disabled => self.leave_training(st.epoch, mode),
        }
        Ok(())
    }

    /// [`ModeError::ThinModel`] if an enabled metric of `model` has fewer than `min_clients`.
    fn refuse_thin(
        &self,
        model: &Model,
        params: &ModelParams,
        mode: Mode,
    ) -> Result<(), ModeError> {
        let thin: Vec<(Metric, u64)> = Metric::ALL
            .into_iter()
            .filter(|&m| self.is_enabled(m))
            .map(|m| (m, model.get(m).n))
            .filter(|&(_, n)| n < params.min_clients)
            .collect();
        if thin.is_empty() {
            return Ok(());
        }
        Err(ModeError::ThinModel {
            requested: mode,
            thin,
            min_clients: params.min_clients,
        })
    }

    fn leave_training(&self, epoch: Epoch, mode: Mode) {
        self.state.store(pack(epoch, mode), Ordering::Release);
        self.training_deadline.store(u64::MAX, Ordering::Relaxed);
        self.training.store(None);
    }

    pub(crate) fn for_clients_in(&self, prefix: IpPrefix, f: impl Fn(ClientKey, &ClientState)) {
        let client_len = if prefix.addr().is_ipv4() {
            32
        } else {
            self.ipv6_prefix
        };
        if prefix.len() >= client_len {
            let key = ClientKey::new(prefix.addr(), self.ipv6_prefix);
            if let Some(c) = self.table.get(&key) {
                f(key, &c);
            }
            return;
        }
        self.table.for_each(|key, c| {
            if prefix.contains(key.addr()) {
                f(key, c);
            }
        });
    }

    pub(crate) fn snapshot(
        &self,
        key: ClientKey,
        c: &ClientState,
        now: u64,
        model: Option<&Model>,
    ) -> ClientSnapshot {
        let epoch = self.state().epoch;
        let mut current = Metric::ALL.map(|m| c.cur(m));
        current[Metric::Cpu.index()] = c.cpu_at(now, self.cpu_half_life_ns.load(Ordering::Relaxed));
        let z = match model {
            Some(model) => Metric::ALL.map(|m| model.z(m, current[m.index()])),
            None => [0.0; Metric::COUNT],
        };
        ClientSnapshot {
            key,
            prefix: key.prefix(self.ipv6_prefix),
            current,
            max: Metric::ALL.map(|m| c.max(m, epoch)),
            z,
            last_seen: Nanos(c.last_seen()),
            blocked_until: c.is_blocked(now).then(|| Nanos(c.blocked_until())),
            exempt: self.is_exempt(key.addr()),
            identified: c.identified(),
        }
    }

    pub(crate) fn lock_control(&self) -> MutexGuard<'_, Control> {
        // Every critical section leaves `Control` and the atomics consistent at each step, so a
        // poisoned lock is safe to reuse.
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}
