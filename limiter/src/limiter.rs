//! The limiter: the shared object every proxy worker calls.

use core::time::Duration;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use zgate_training::{Epoch, Metric, Model, ModelParams, Populations, TrainingSet};

use crate::blocklist::{BlockEntry, BlockList, BlockListFull};
use crate::client::{ClientState, Sample};
use crate::config::{ConfigError, GuardConfig, LimiterConfig};
use crate::connection::Connection;
use crate::counters::{Counters, CountersSnapshot};
use crate::error::Error;
use crate::guards::GuardLimits;
use crate::key::{ClientKey, IpPrefix};
use crate::mode::{Mode, ModeError};
use crate::sampler;
use crate::snapshot::{ClientSnapshot, Status};
use crate::sync::{Change, Sink};
use crate::table::{Removed, Table};
use crate::time::{duration_ns, Nanos};
use crate::verdict::{Guard, Reason, Verdict};

/// Idle clients examined per [`Limiter::tick`].
const EXPIRE_BUDGET: usize = 4096;

/// Unique ids for the per-thread writer cache.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The limiter: client table, mode machine, model, block list, static guards, counters.
///
/// `Send + Sync` and cheap to clone (an `Arc`): share one between all proxy workers. Sans-IO:
/// it spawns nothing, reads no clock (every event takes `now`) and never logs; it returns
/// verdicts and counts them.
///
/// The proxy calls [`Limiter::connection_opened`] on accept, then the events of the returned
/// [`Connection`] handle (requests, memory, CPU, chunks, HTTP/2 frames), and
/// [`Limiter::tick`] about once a second.
#[derive(Clone)]
pub struct Limiter {
    pub(crate) shared: Arc<Shared>,
}

impl Limiter {
    /// A limiter configured by `config`, starting in `config.mode` at `now`, scoring with
    /// `model` if given (e.g. loaded from disk; the limiter's `min_std` and `min_clients` apply
    /// to it). Refused if the config is invalid, or if the start mode is defence or monitor
    /// without a model.
    pub fn new(config: LimiterConfig, model: Option<Model>, now: Nanos) -> Result<Limiter, Error> {
        config.validate()?;
        let shards = match config.training_shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared = Arc::new(Shared {
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
            guards: GuardLimits::new(&config.guards),
            table: Table::new(config.max_clients),
            blocks: BlockList::new(config.max_blocks),
            counters: Counters::new(),
            ipv6_prefix: config.ipv6_prefix,
            shards,
            control: Mutex::new(Control {
                training_period: config.training_period,
                after_training: config.after_training,
                params: ModelParams {
                    min_std: config.min_std,
                    min_clients: config.min_clients,
                },
            }),
            sink: ArcSwapOption::empty(),
        });
        let limiter = Limiter { shared };
        if let Some(model) = model {
            limiter.import_model(model);
        }
        limiter.set_mode(config.mode, now)?;
        Ok(limiter)
    }

    /// A new connection from `ip` at `now`: finds or creates the client, counts the connection
    /// and checks the block list, the table bound, the connection guard and (defence/monitor)
    /// the connection count's z-score.
    ///
    /// Returns the connection's handle, `Some` unless the verdict is `Block` (then close the
    /// connection; nothing stays counted). Dropping the handle closes the connection in the
    /// limiter.
    ///
    /// At `max_clients`, a new client evicts one (idle first; never one with an open connection
    /// or blocked) or is refused with [`Guard::TableFull`]. An evicted client's samples leave a
    /// running training epoch, so a flood of one-shot addresses weighs at most `max_clients`
    /// samples in the model.
    pub fn connection_opened(&self, ip: IpAddr, now: Nanos) -> (Option<Connection>, Verdict) {
        let s = &self.shared;
        s.counters.connection();
        s.advance_clock(now.0);
        let st = s.state();
        if st.mode == Mode::Training {
            s.end_training_if_due(now.0);
        }
        if s.blocks.lookup(ip, now).is_some() {
            return (None, s.refuse(Guard::Blocked, 0));
        }
        let key = ClientKey::new(ip, s.ipv6_prefix);
        let idle = s.idle_ns.load(Ordering::Relaxed);
        let (client, n, evicted) = match s.table.open(key, now.0, idle) {
            Ok(opened) => opened,
            Err(_) => return (None, s.refuse(Guard::TableFull, s.table.len() as u64)),
        };
        if let Some(gone) = evicted {
            s.counters.evictions.fetch_add(1, Ordering::Relaxed);
            s.forget(&gone);
        }
        let conn = Connection::new(Arc::clone(s), client, key, now.0);
        let verdict = conn.opened(n, now.0);
        if verdict.is_block() {
            return (None, verdict);
        }
        (Some(conn), verdict)
    }

    /// Whether `ip` is blocked at `now` (block list only: for the accept path, before any TLS).
    /// Costs one relaxed load when the block list is empty.
    #[inline]
    pub fn is_blocked(&self, ip: IpAddr, now: Nanos) -> bool {
        self.shared.blocks.lookup(ip, now).is_some()
    }

    /// Housekeeping, about once a second: ends training when due, purges expired blocks, and
    /// removes up to 4096 idle clients (no open connection, unseen for `idle_expiry`).
    ///
    /// An expired client keeps its samples in a running training epoch: it is a normal client
    /// that left, and its maxima are valid data (if it comes back in the same epoch it counts
    /// as a second client). An *evicted* client's samples are removed instead (see
    /// [`Limiter::connection_opened`]).
    pub fn tick(&self, now: Nanos) {
        let s = &self.shared;
        s.advance_clock(now.0);
        if s.state().mode == Mode::Training {
            s.end_training_if_due(now.0);
        }
        s.blocks.purge(now);
        let idle = s.idle_ns.load(Ordering::Relaxed);
        let gone = s.table.expire(now.0, idle, EXPIRE_BUDGET);
        s.counters
            .expired
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
    }

    /// Switches to `mode` at `now`.
    ///
    /// - `Training` (also from training): a new epoch with a fresh training set; ends by itself
    ///   `training_period` after `now` (if non-zero) into `after_training`.
    /// - `Defence` / `Monitor`: from training, the training set is finalized into the model
    ///   first. Refused with [`ModeError::NoModel`] if there is still no model.
    /// - `Disabled`: stops training (its samples are dropped) and scoring; keeps the model.
    pub fn set_mode(&self, mode: Mode, now: Nanos) -> Result<(), ModeError> {
        let ctl = self.shared.lock_control();
        let before = self.shared.training.load_full();
        self.shared.switch(&ctl, mode, now.0)?;
        self.shared.emit_mode(before);
        Ok(())
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.state().mode
    }

    /// The current epoch (0 before the first training).
    pub fn epoch(&self) -> Epoch {
        self.shared.state().epoch
    }

    /// The model in use, if any.
    pub fn model(&self) -> Option<Arc<Model>> {
        self.shared.model.load_full()
    }

    /// Replaces the model (e.g. loaded from disk), scored with this limiter's `min_std` and
    /// `min_clients`. Does not change the mode. Later epochs are numbered after the model's.
    pub fn import_model(&self, model: Model) {
        let ctl = self.shared.lock_control();
        let s = &self.shared;
        let st = s.state();
        if model.epoch > st.epoch && st.mode != Mode::Training {
            s.state.store(pack(model.epoch, st.mode), Ordering::Release);
        }
        s.model
            .store(Some(Arc::new(model.with_params(ctl.params.clone()))));
    }

    /// The live statistics of the running training epoch (approximate while workers write),
    /// `None` when not training.
    pub fn training_preview(&self) -> Option<Populations> {
        self.shared.training.load().as_ref().map(|set| set.merge())
    }

    /// Sets the z-score threshold of `m` (standard deviations, finite, >= 0). Takes effect on the
    /// next event.
    pub fn set_threshold(&self, m: Metric, z: f64) -> Result<(), ConfigError> {
        if !z.is_finite() || z < 0.0 {
            return Err(ConfigError {
                field: format!("thresholds.{}", m.name()),
                reason: "must be finite and >= 0",
            });
        }
        self.shared.thresholds[m.index()].store(z.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The z-score threshold of `m`.
    pub fn threshold(&self, m: Metric) -> f64 {
        self.shared.threshold(m)
    }

    /// The static guards in force.
    pub fn guards(&self) -> GuardConfig {
        self.shared.guards.load()
    }

    /// Enables or disables scoring of `m` (training records it regardless).
    pub fn set_enabled(&self, m: Metric, on: bool) {
        let bit = 1u8 << m.index();
        if on {
            self.shared.enabled.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.shared.enabled.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Whether scoring of `m` is enabled.
    pub fn is_enabled(&self, m: Metric) -> bool {
        self.shared.enabled.load(Ordering::Relaxed) & (1 << m.index()) != 0
    }

    /// Applies the run-time settings of `config` (config reload): thresholds, enables,
    /// `min_std` and `min_clients` (re-applied to the model in use), guards, `block_duration`,
    /// `idle_expiry`, `cpu_half_life`, `training_period` (a running training keeps its deadline)
    /// and `after_training`. `mode`, `max_clients`, `max_blocks`, `ipv6_prefix` and
    /// `training_shards` are fixed at construction and ignored here. Nothing changes if the
    /// config is invalid.
    pub fn reconfigure(&self, config: &LimiterConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let s = &self.shared;
        let mut ctl = s.lock_control();
        let r = Ordering::Relaxed;
        for (a, t) in s.thresholds.iter().zip(config.thresholds) {
            a.store(t.to_bits(), r);
        }
        s.enabled.store(enabled_mask(&config.enabled), r);
        s.guards.store(&config.guards);
        s.block_ns.store(duration_ns(config.block_duration), r);
        s.idle_ns.store(duration_ns(config.idle_expiry), r);
        s.cpu_half_life_ns
            .store(duration_ns(config.cpu_half_life), r);
        ctl.training_period = config.training_period;
        ctl.after_training = config.after_training;
        ctl.params = ModelParams {
            min_std: config.min_std,
            min_clients: config.min_clients,
        };
        if let Some(model) = s.model.load_full() {
            let model = Model::clone(&model).with_params(ctl.params.clone());
            s.model.store(Some(Arc::new(model)));
        }
        Ok(())
    }

    /// Blocks `prefix` until `now + duration` (manual block). Clients in the table covered by
    /// it are blocked at once (a walk over the table for a prefix shorter than a client).
    pub fn block(
        &self,
        prefix: IpPrefix,
        duration: Duration,
        now: Nanos,
    ) -> Result<(), BlockListFull> {
        let s = &self.shared;
        let until = now.saturating_add(duration);
        let entry = BlockEntry {
            prefix,
            until,
            reason: None,
            value: 0,
            z: 0.0,
        };
        s.blocks.insert(entry, now)?;
        s.for_clients_in(prefix, |c| c.block(until.0));
        s.emit(Change::Blocked { entry, now });
        Ok(())
    }

    /// Removes the block of exactly `prefix` (as listed by [`Limiter::blocks`]) and unblocks
    /// the clients it covers. Returns whether there was one.
    pub fn unblock(&self, prefix: IpPrefix) -> bool {
        let s = &self.shared;
        let found = s.blocks.remove(prefix).is_some();
        if found {
            s.for_clients_in(prefix, |c| c.unblock());
            s.emit(Change::Unblocked { prefix });
        }
        found
    }

    /// Unexpired block list entries.
    pub fn blocks(&self, now: Nanos) -> Vec<BlockEntry> {
        self.shared.blocks.list(now)
    }

    /// The client `ip` belongs to, if tracked.
    pub fn client(&self, ip: IpAddr, now: Nanos) -> Option<ClientSnapshot> {
        let s = &self.shared;
        let key = ClientKey::new(ip, s.ipv6_prefix);
        let client = s.table.get(&key)?;
        Some(s.snapshot(key, &client, now.0, s.model.load_full().as_deref()))
    }

    /// The `n` clients with the highest current value of `m`, highest first. Walks the table
    /// (O(clients)): for the admin API, not the hot path.
    pub fn top(&self, m: Metric, n: usize, now: Nanos) -> Vec<ClientSnapshot> {
        let s = &self.shared;
        if n == 0 {
            return Vec::new();
        }
        let mut best: Vec<(u64, ClientKey)> = Vec::with_capacity(n + 1);
        s.table.for_each(|key, c| {
            let v = c.cur(m);
            if best.len() == n && best.last().is_some_and(|(min, _)| v <= *min) {
                return;
            }
            let at = best.partition_point(|(x, _)| *x >= v);
            best.insert(at, (v, key));
            best.truncate(n);
        });
        let model = s.model.load_full();
        best.into_iter()
            .filter_map(|(_, key)| {
                let c = s.table.get(&key)?;
                Some(s.snapshot(key, &c, now.0, model.as_deref()))
            })
            .collect()
    }

    /// Mode, epoch, training time left, model epoch, table and block list sizes.
    pub fn status(&self, now: Nanos) -> Status {
        let s = &self.shared;
        let st = s.state();
        let training_left = match st.mode {
            Mode::Training => match s.training_deadline.load(Ordering::Relaxed) {
                u64::MAX => None,
                d => Some(Duration::from_nanos(d.saturating_sub(now.0))),
            },
            _ => None,
        };
        Status {
            mode: st.mode,
            epoch: st.epoch,
            training_left,
            model_epoch: s.model.load().as_ref().map(|m| m.epoch),
            clients: s.table.len(),
            blocks: s.blocks.len(),
        }
    }

    /// All counters, summed at this instant without locks.
    pub fn counters(&self) -> CountersSnapshot {
        let s = &self.shared;
        s.counters.snapshot(s.table.len(), s.blocks.len())
    }
}

/// Mode and epoch, packed in one atomic so the hot path reads both with one load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    pub(crate) epoch: Epoch,
}

fn pack(epoch: Epoch, mode: Mode) -> u64 {
    epoch << 8 | u64::from(mode.to_u8())
}

fn enabled_mask(enabled: &[bool; Metric::COUNT]) -> u8 {
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
    state: AtomicU64,
    /// When training ends by itself, ns; `u64::MAX` = only on command.
    training_deadline: AtomicU64,
    /// The running epoch's training set (training mode only).
    pub(crate) training: ArcSwapOption<TrainingSet>,
    model: ArcSwapOption<Model>,
    /// f64 bits per metric.
    thresholds: [AtomicU64; Metric::COUNT],
    /// Bit per metric index.
    enabled: AtomicU8,
    pub(crate) block_ns: AtomicU64,
    pub(crate) cpu_half_life_ns: AtomicU64,
    idle_ns: AtomicU64,
    /// Latest `now` seen by `connection_opened` or `tick`: the time of a handle dropped without
    /// `close(now)`.
    clock: AtomicU64,
    pub(crate) guards: GuardLimits,
    table: Table,
    pub(crate) blocks: BlockList,
    pub(crate) counters: Counters,
    pub(crate) ipv6_prefix: u8,
    /// Exclusive shards per training set.
    shards: usize,
    /// Serialises mode switches and configuration changes.
    control: Mutex<Control>,
    /// Where local block, unblock and mode changes are reported (a fleet); see `sync.rs`.
    pub(crate) sink: ArcSwapOption<Sink>,
}

pub(crate) struct Control {
    training_period: Duration,
    after_training: Mode,
    params: ModelParams,
}

impl Shared {
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

    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn advance_clock(&self, now: u64) {
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
        if self.blocks.insert(entry, Nanos(now)).is_err() {
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
    fn forget(&self, client: &Removed) {
        let st = self.state();
        if st.mode != Mode::Training {
            return;
        }
        if let Some(set) = self.training.load().as_ref() {
            sampler::remove(self.id, set, client.samples(set.epoch()));
        }
    }

    fn end_training_if_due(&self, now: u64) {
        let ctl = self.lock_control();
        let st = self.state();
        if st.mode != Mode::Training || now < self.training_deadline.load(Ordering::Relaxed) {
            return;
        }
        // Training always yields a model, so this switch cannot be refused.
        let before = self.training.load_full();
        if self.switch(&ctl, ctl.after_training, now).is_ok() {
            self.emit_mode(before);
        }
    }

    pub(crate) fn switch(&self, ctl: &Control, mode: Mode, now: u64) -> Result<(), ModeError> {
        let st = self.state();
        match mode {
            Mode::Training => {
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
                if st.mode == Mode::Training {
                    if let Some(set) = self.training.load_full() {
                        self.model.store(Some(Arc::new(set.finalize(&ctl.params))));
                    }
                }
                if self.model.load().is_none() {
                    return Err(ModeError::NoModel { requested: mode });
                }
                self.leave_training(st.epoch, mode);
            }
            Mode::Disabled => self.leave_training(st.epoch, mode),
        }
        Ok(())
    }

    fn leave_training(&self, epoch: Epoch, mode: Mode) {
        self.state.store(pack(epoch, mode), Ordering::Release);
        self.training_deadline.store(u64::MAX, Ordering::Relaxed);
        self.training.store(None);
    }

    pub(crate) fn for_clients_in(&self, prefix: IpPrefix, f: impl Fn(&ClientState)) {
        let client_len = if prefix.addr().is_ipv4() {
            32
        } else {
            self.ipv6_prefix
        };
        if prefix.len() >= client_len {
            if let Some(c) = self
                .table
                .get(&ClientKey::new(prefix.addr(), self.ipv6_prefix))
            {
                f(&c);
            }
            return;
        }
        self.table.for_each(|key, c| {
            if prefix.contains(key.addr()) {
                f(c);
            }
        });
    }

    fn snapshot(
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
        }
    }

    pub(crate) fn lock_control(&self) -> MutexGuard<'_, Control> {
        // Every critical section leaves `Control` and the atomics consistent at each step, so a
        // poisoned lock is safe to reuse.
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
