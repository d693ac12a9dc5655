//! The limiter: the shared object every proxy worker calls.

use core::time::Duration;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use zgate_training::{check_threshold, Epoch, InvalidThreshold, Metric, Model, Populations};

use crate::blocklist::{BlockEntry, BlockError};
use crate::client::ClientState;
use crate::config::{GuardLimits, LimiterConfig, LimiterConfigError};
use crate::connection::Connection;
use crate::counters::CountersSnapshot;
use crate::error::Error;
use crate::handle::ClientHandle;
use crate::key::{ClientKey, IpPrefix};
use crate::live::{self, LiveParams, LiveView};
use crate::mode::{Mode, ModeError};
use crate::shared::{enabled_mask, pack, Shared, MAX_EPOCH};
use crate::snapshot::{ClientSnapshot, Status};
use crate::sync::Change;
use crate::time::{duration_ns, Nanos};
use crate::verdict::{Guard, Verdict};

/// Idle clients examined per [`Limiter::tick`].
const EXPIRE_BUDGET: usize = 4096;

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
        let shared = Arc::new(Shared::new(&config, shards, now));
        let limiter = Limiter { shared };
        if let Some(model) = model {
            limiter.import_model(model)?;
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
    /// At `max_clients`, a new client evicts one (idle first, blocked or not: a block lives in
    /// the block list; never one with an open connection), or, if every client has an open
    /// connection, is admitted untracked: static guards only, no scoring, no training samples
    /// (counted in [`CountersSnapshot::untracked`]). An unblocked newcomer is never refused
    /// for want of room. An evicted client's samples leave a
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
        let exempt = s.is_exempt(ip);
        if !exempt && s.blocks.lookup(ip, now).is_some() {
            return (None, s.refuse(Guard::Blocked, 0));
        }
        let key = ClientKey::new(ip, s.ipv6_prefix);
        let idle = s.idle_ns.load(Ordering::Relaxed);
        let (client, n, evicted) = match s.table.open(key, now.0, idle) {
            Ok(opened) => opened,
            Err(_) => return self.open_untracked(key, exempt, now),
        };
        if let Some(gone) = evicted {
            s.counters.evictions.fetch_add(1, Ordering::Relaxed);
            s.forget(&gone);
        }
        let conn = Connection::new(Arc::clone(s), client, key, exempt, now.0);
        let verdict = conn.opened(n, now.0);
        if verdict.is_block() {
            return (None, verdict);
        }
        (Some(conn), verdict)
    }

    /// A connection of a client the full table has no room for: admitted with a client state of
    /// its own that is not in the table, held to the static guards only (a block still goes to
    /// the block list).
    fn open_untracked(
        &self,
        key: ClientKey,
        exempt: bool,
        now: Nanos,
    ) -> (Option<Connection>, Verdict) {
        let s = &self.shared;
        s.counters.untracked.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(ClientState::new(now.0));
        client.add(Metric::Connections, 1);
        let conn = Connection::new(Arc::clone(s), client, key, exempt, now.0).untracked();
        let verdict = conn.opened(1, now.0);
        if verdict.is_block() {
            return (None, verdict);
        }
        (Some(conn), verdict)
    }

    /// The client `ip` of a request that arrived through a trusted proxy on another client's
    /// connection, at `now`: a handle to charge the request to (see [`ClientHandle`]). Finds
    /// or creates the client without counting a connection for it; the handle keeps it in the
    /// table while held.
    ///
    /// `None` with a `Block` verdict when the client is blocked (refuse the request, keep the
    /// connection: it carries other clients' requests) or the table is full of clients that
    /// cannot be evicted (then the handle is untracked: static guards only). An exempt client
    /// is never refused for a block.
    pub fn forwarded(&self, ip: IpAddr, now: Nanos) -> (Option<ClientHandle>, Verdict) {
        let s = &self.shared;
        s.advance_clock(now.0);
        if s.state().mode == Mode::Training {
            s.end_training_if_due(now.0);
        }
        let exempt_gen = s.exempt_gen.load(Ordering::Acquire);
        let exempt = s.is_exempt(ip);
        if !exempt && s.blocks.lookup(ip, now).is_some() {
            return (None, s.refuse(Guard::Blocked, 0));
        }
        let key = ClientKey::new(ip, s.ipv6_prefix);
        let idle = s.idle_ns.load(Ordering::Relaxed);
        let (client, evicted) = match s.table.attach(key, now.0, idle) {
            Ok(attached) => attached,
            Err(_) => {
                // Full of held clients: served untracked, like a newcomer's connection.
                s.counters.untracked.fetch_add(1, Ordering::Relaxed);
                let mut handle = ClientHandle::new(
                    Arc::clone(s),
                    Arc::new(ClientState::new(now.0)),
                    key,
                    exempt,
                );
                handle.set_untracked();
                return (Some(handle), Verdict::Allow);
            }
        };
        if let Some(gone) = evicted {
            s.counters.evictions.fetch_add(1, Ordering::Relaxed);
            s.forget(&gone);
        }
        let mut handle = ClientHandle::new(Arc::clone(s), client, key, exempt);
        handle.exempt_gen = exempt_gen;
        if handle.blocked_at(now.0) {
            return (None, handle.blocked());
        }
        (Some(handle), Verdict::Allow)
    }

    /// [`Limiter::forwarded`] again for a client `ip` whose handle the caller kept from an
    /// earlier call (a proxy's connection from a CDN carries the requests of the same few
    /// clients): the same checks and the same verdict, without the table lookup and a new
    /// handle. `None` when the handle no longer fits: `ip`'s exemption changed since it was
    /// made (a reload), or it is untracked (made while the table was full) or of another
    /// limiter; call [`Limiter::forwarded`] then.
    pub fn forwarded_again(
        &self,
        ip: IpAddr,
        handle: &ClientHandle,
        now: Nanos,
    ) -> Option<Verdict> {
        let s = &self.shared;
        if handle.is_untracked() || !Arc::ptr_eq(&handle.shared, s) {
            return None;
        }
        s.advance_clock(now.0);
        // As `Shared::train` does: the lock is only taken once the deadline has passed.
        if now.0 >= s.training_deadline.load(Ordering::Relaxed) {
            s.end_training_if_due(now.0);
        }
        // The exempt prefixes' generation first: the list is only read when it changed.
        let exempt = handle.is_exempt();
        if handle.exempt_gen != s.exempt_gen.load(Ordering::Acquire) && s.is_exempt(ip) != exempt {
            return None;
        }
        if !exempt && s.blocks.lookup(ip, now).is_some() {
            return Some(s.refuse(Guard::Blocked, 0));
        }
        handle.client.touch(now.0);
        if handle.blocked_at(now.0) {
            return Some(handle.blocked());
        }
        Some(Verdict::Allow)
    }

    /// Whether `ip` is blocked at `now` (block list only: for the accept path, before any TLS).
    /// An exempt address never is. Costs one relaxed load when the block list is empty.
    #[inline]
    pub fn is_blocked(&self, ip: IpAddr, now: Nanos) -> bool {
        let s = &self.shared;
        s.blocks.lookup(ip, now).is_some() && !s.is_exempt(ip)
    }

    /// Replaces the exempt prefixes (at start and on config reload): clients inside them are
    /// measured but never blocked (metrics, guards, block list at accept) and never a training
    /// sample. A connection or forwarded handle keeps the exemption it was opened with.
    pub fn set_exempt(&self, prefixes: Vec<IpPrefix>) {
        let s = &self.shared;
        s.any_exempt.store(!prefixes.is_empty(), Ordering::Relaxed);
        s.exempt.store(Arc::new(prefixes));
        s.exempt_gen.fetch_add(1, Ordering::Release);
    }

    /// The exempt prefixes.
    pub fn exempt(&self) -> Vec<IpPrefix> {
        self.shared.exempt.load().as_ref().clone()
    }

    /// Whether `ip` is inside an exempt prefix.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.shared.is_exempt(ip)
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
    ///
    /// Forced: a model with thin metrics is accepted (see [`Limiter::set_mode_checked`]).
    pub fn set_mode(&self, mode: Mode, now: Nanos) -> Result<(), ModeError> {
        self.set_mode_checked(mode, now, true)
    }

    /// Like [`Limiter::set_mode`], for an operator's request: without `force`, defence or
    /// monitor is refused with [`ModeError::ThinModel`] when any enabled metric of the model
    /// (the one in use, or the one a running training yields) was learned from fewer than
    /// `min_clients` clients, since such a metric never blocks. A refusal changes nothing (a
    /// running training goes on).
    pub fn set_mode_checked(&self, mode: Mode, now: Nanos, force: bool) -> Result<(), ModeError> {
        let ctl = self.shared.lock_control();
        let before = self.shared.training.load_full();
        self.shared.switch(&ctl, mode, now.0, force)?;
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
    /// Refused with [`ModeError::EpochOutOfRange`] (nothing changes) when the model's epoch is
    /// above [`MAX_EPOCH`].
    pub fn import_model(&self, model: Model) -> Result<(), ModeError> {
        if model.epoch > MAX_EPOCH {
            return Err(ModeError::EpochOutOfRange { epoch: model.epoch });
        }
        let ctl = self.shared.lock_control();
        let s = &self.shared;
        let st = s.state();
        if model.epoch > st.epoch && st.mode != Mode::Training {
            s.state.store(pack(model.epoch, st.mode), Ordering::Release);
        }
        s.model
            .store(Some(Arc::new(model.with_params(ctl.params.clone()))));
        Ok(())
    }

    /// The live statistics of the running training epoch (approximate while workers write),
    /// `None` when not training.
    pub fn training_preview(&self) -> Option<Populations> {
        self.shared.training.load().as_ref().map(|set| set.merge())
    }

    /// Sets the z-score threshold of `m` (standard deviations, finite, >= 0: see
    /// [`check_threshold`]). Takes effect on the next event.
    pub fn set_threshold(&self, m: Metric, z: f64) -> Result<(), InvalidThreshold> {
        let z = check_threshold(z)?;
        self.shared.thresholds[m.index()].store(z.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The z-score threshold of `m`.
    pub fn threshold(&self, m: Metric) -> f64 {
        self.shared.threshold(m)
    }

    /// The static guards in force.
    pub fn guards(&self) -> GuardLimits {
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
    pub fn reconfigure(&self, config: &LimiterConfig) -> Result<(), LimiterConfigError> {
        config.validate()?;
        let s = &self.shared;
        let mut ctl = s.lock_control();
        let r = Ordering::Relaxed;
        for (a, t) in s.thresholds.iter().zip(config.thresholds) {
            a.store(t.to_bits(), r);
        }
        s.enabled.store(enabled_mask(&config.enabled), r);
        s.guards.store(&config.guards);
        s.max_glitches.store(config.max_glitches, r);
        s.block_ns.store(duration_ns(config.block_duration), r);
        s.idle_ns.store(duration_ns(config.idle_expiry), r);
        s.cpu_half_life_ns
            .store(duration_ns(config.cpu_half_life), r);
        ctl.training_period = config.training_period;
        ctl.after_training = config.after_training;
        ctl.params = config.model_params();
        if let Some(model) = s.model.load_full() {
            let model = Model::clone(&model).with_params(ctl.params.clone());
            s.model.store(Some(Arc::new(model)));
        }
        Ok(())
    }

    /// Blocks `prefix` until `now + duration` (manual block). Clients in the table covered by
    /// it are blocked at once (a walk over the table for a prefix shorter than a client),
    /// except exempt ones. Refused with [`BlockError::Exempt`] when every address of `prefix`
    /// is exempt, and [`BlockError::Full`] when the block list is full.
    pub fn block(
        &self,
        prefix: IpPrefix,
        duration: Duration,
        now: Nanos,
    ) -> Result<(), BlockError> {
        let s = &self.shared;
        if let Some(&exempt) = s.exempt.load().iter().find(|e| e.covers(prefix)) {
            return Err(BlockError::Exempt { prefix, exempt });
        }
        let until = now.saturating_add(duration);
        let entry = BlockEntry {
            prefix,
            until,
            reason: None,
            value: 0,
            z: 0.0,
        };
        s.blocks.insert(entry, now)?;
        s.for_clients_in(prefix, |key, c| {
            if !s.is_exempt(key.addr()) {
                c.block(until.0)
            }
        });
        s.emit(Change::Blocked { entry, now });
        Ok(())
    }

    /// Removes the block of exactly `prefix` (as listed by [`Limiter::blocks`]) and unblocks
    /// the clients it covers. Returns whether there was one.
    pub fn unblock(&self, prefix: IpPrefix) -> bool {
        let s = &self.shared;
        let found = s.blocks.remove(prefix).is_some();
        if found {
            s.for_clients_in(prefix, |_, c| c.unblock());
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
    /// (O(clients)) a chunk at a time, never holding a lock of the table for long: for the
    /// admin API, not the hot path.
    pub fn top(&self, m: Metric, n: usize, now: Nanos) -> Vec<ClientSnapshot> {
        let s = &self.shared;
        if n == 0 {
            return Vec::new();
        }
        let mut best: Vec<(u64, ClientKey)> = Vec::with_capacity(n + 1);
        s.table.walk(|key, c| {
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

    /// The clients now: per metric, the histogram of every tracked client's current value and
    /// the `top` highest clients with their z. One walk of the table, a chunk at a time (see
    /// [`Limiter::top`]): for the admin API's status page, not the hot path.
    pub fn live(&self, top: usize, now: Nanos) -> LiveView {
        let s = &self.shared;
        let model = s.model.load_full();
        let params = LiveParams {
            model: model.as_deref(),
            cpu_half_life_ns: s.cpu_half_life_ns.load(Ordering::Relaxed),
            now: now.0,
            top,
        };
        live::collect(&s.table, &params)
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

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "identity_tests.rs"]
mod identity_tests;
