//! The fleet's decisions, sans-IO: events in (local changes, remote events, Redis up or down,
//! the time), [`Action`]s out. Time is wall-clock Unix milliseconds passed in by the caller, so
//! tests step it exactly.
//!
//! What it decides:
//! - a local block or unblock is published, or queued in the [`Outbox`] while Redis is down
//!   and replayed on reconnect;
//! - a remote block or unblock is applied to the local limiter (never published back);
//! - a resync (start, reconnect) applies the whole list and removes the fleet's blocks that
//!   are gone from it (unless a local change about them still waits in the outbox; or, if Redis
//!   lost its data, publishes them again);
//! - training: a local start asks Redis for the next fleet epoch; a remote start joins it; an
//!   end (local or remote) publishes this instance's final snapshot and, `settle` later, builds
//!   the model (the sum of every snapshot, written once per epoch); a newer fleet model is
//!   imported. While training, a live snapshot goes out every `snapshot_every`.
//! - Training started or ended while Redis is down stays local: the model stays at its last
//!   fleet version until the fleet trains again.

use std::collections::HashMap;

use zgate_limiter::{IpPrefix, Mode, Reason};

use crate::event::{Envelope, Event};
use crate::outbox::Outbox;
use crate::snapshot::Snapshot;

/// Timing of the training exchange, ms.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Live snapshots while training, every this. Default 1000 ms.
    pub snapshot_every_ms: u64,
    /// After training ends, how long to wait for every instance's final snapshot before the
    /// model is built. Default 1000 ms.
    pub settle_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            snapshot_every_ms: 1000,
            settle_ms: 1000,
        }
    }
}

/// A change made on this instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Local {
    /// Blocked until `expires_ms` (Unix ms).
    Block {
        /// The network.
        prefix: IpPrefix,
        /// Unix ms.
        expires_ms: u64,
        /// Why; `None` for manual.
        reason: Option<Reason>,
    },
    /// Unblocked.
    Unblock {
        /// The network.
        prefix: IpPrefix,
    },
    /// Training started (by the operator or at start).
    TrainingStarted,
    /// Training ended into `mode` with these final statistics.
    TrainingEnded {
        /// Defence or monitor.
        mode: Mode,
        /// This instance's statistics of the epoch.
        snapshot: Box<Snapshot>,
    },
    /// Training stopped without a model (disabled).
    TrainingStopped,
}

/// What the caller does next, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Block `prefix` locally until `expires_ms`, without reporting it.
    ApplyBlock {
        /// The network.
        prefix: IpPrefix,
        /// Unix ms.
        expires_ms: u64,
        /// Why.
        reason: Option<Reason>,
    },
    /// Unblock `prefix` locally, without reporting it.
    ApplyUnblock {
        /// The network.
        prefix: IpPrefix,
    },
    /// Switch the limiter to training (fleet epoch `epoch`).
    StartTraining {
        /// The fleet epoch.
        epoch: u64,
    },
    /// Switch the limiter to `mode` and publish the ended epoch's statistics as this
    /// instance's final snapshot of `epoch`.
    EndTraining {
        /// The fleet epoch.
        epoch: u64,
        /// Defence or monitor.
        mode: Mode,
    },
    /// Read the model of `epoch` from Redis and import it; then call
    /// [`Fleet::model_imported`].
    ImportModel {
        /// The fleet epoch.
        epoch: u64,
    },
    /// Publish `event` (and update the sorted set or training state with it). On failure call
    /// [`Fleet::publish_failed`].
    Publish(Event),
    /// Take the next fleet epoch (INCR), publish `TrainingStarted` with it, then call
    /// [`Fleet::epoch_assigned`].
    AssignEpoch,
    /// Store this instance's snapshot of `epoch`: `Some` as given, `None` the limiter's live
    /// statistics (skip if it is no longer training).
    PublishSnapshot {
        /// The fleet epoch.
        epoch: u64,
        /// The statistics, or `None` for a live preview.
        snapshot: Option<Box<Snapshot>>,
    },
    /// Sum every snapshot of `epoch`, write the model once (if nobody has), announce it, then
    /// import it as for [`Action::ImportModel`].
    BuildModel {
        /// The fleet epoch.
        epoch: u64,
    },
}

/// The fleet's shared state as read from Redis on a resync.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resync {
    /// Every block in force: prefix and expiry (Unix ms).
    pub blocks: Vec<(IpPrefix, u64)>,
    /// The fleet's training state, if it ever trained: epoch, whether it is training, and the
    /// mode it ended into.
    pub training: Option<(u64, bool, Mode)>,
    /// The latest model's epoch, if any.
    pub model: Option<u64>,
    /// Redis lost its data since the last resync (restarted without persistence, flushed): the
    /// fleet's blocks missing from it are published again instead of being removed here.
    pub fresh: bool,
}

/// The fleet state machine of one instance.
#[derive(Debug)]
pub struct Fleet {
    instance: String,
    timing: Timing,
    connected: bool,
    outbox: Outbox,
    /// Blocks known to be in the fleet's list, with their expiry (Unix ms).
    known: HashMap<IpPrefix, u64>,
    /// The fleet epoch this instance trains in, or trained in last.
    epoch: Option<u64>,
    /// Training under the fleet's epoch now.
    training: bool,
    next_snapshot_ms: u64,
    /// The epoch of the last fleet model imported (0: none).
    model_epoch: u64,
    /// Model builds due: (epoch, at ms).
    builds: Vec<(u64, u64)>,
    /// Milliseconds between the last remote event's publication and its arrival.
    lag_ms: u64,
}

impl Fleet {
    /// A disconnected fleet member named `instance` with an outbox of `outbox` events.
    pub fn new(instance: impl Into<String>, outbox: usize, timing: Timing) -> Fleet {
        Fleet {
            instance: instance.into(),
            timing,
            connected: false,
            outbox: Outbox::new(outbox),
            known: HashMap::new(),
            epoch: None,
            training: false,
            next_snapshot_ms: 0,
            model_epoch: 0,
            builds: Vec::new(),
            lag_ms: 0,
        }
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether Redis is reachable (since the last resync).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Lag of the last remote event, ms.
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms
    }

    /// The fleet epoch trained in now or last, and whether training now.
    pub fn training(&self) -> (Option<u64>, bool) {
        (self.epoch, self.training)
    }

    /// The last fleet model imported (0: none).
    pub fn model_epoch(&self) -> u64 {
        self.model_epoch
    }

    /// A change made on this instance at `now_ms`.
    pub fn local(&mut self, change: Local, now_ms: u64) -> Vec<Action> {
        match change {
            Local::Block {
                prefix,
                expires_ms,
                reason,
            } => {
                self.known.insert(prefix, expires_ms);
                self.publish(Event::Block {
                    prefix,
                    expires_ms,
                    reason,
                })
            }
            Local::Unblock { prefix } => {
                self.known.remove(&prefix);
                self.publish(Event::Unblock { prefix })
            }
            Local::TrainingStarted => {
                self.training = false;
                if !self.connected {
                    return Vec::new();
                }
                vec![Action::AssignEpoch]
            }
            Local::TrainingEnded { mode, snapshot } => {
                let was = std::mem::take(&mut self.training);
                match self.epoch {
                    Some(epoch) if was && self.connected => {
                        self.schedule_build(epoch, now_ms);
                        vec![
                            Action::PublishSnapshot {
                                epoch,
                                snapshot: Some(snapshot),
                            },
                            Action::Publish(Event::TrainingEnded { epoch, mode }),
                        ]
                    }
                    _ => Vec::new(),
                }
            }
            Local::TrainingStopped => {
                self.training = false;
                Vec::new()
            }
        }
    }

    /// The fleet epoch Redis gave this instance's training start.
    pub fn epoch_assigned(&mut self, epoch: u64, now_ms: u64) {
        self.epoch = Some(epoch);
        self.training = true;
        self.next_snapshot_ms = now_ms + self.timing.snapshot_every_ms;
    }

    /// An event read from the stream at `now_ms`, published at `sent_ms`.
    pub fn remote(&mut self, env: Envelope, sent_ms: u64, now_ms: u64) -> Vec<Action> {
        if env.origin == self.instance {
            return Vec::new();
        }
        self.lag_ms = now_ms.saturating_sub(sent_ms);
        match env.event {
            Event::Block {
                prefix,
                expires_ms,
                reason,
            } => {
                if expires_ms <= now_ms {
                    return Vec::new();
                }
                self.known.insert(prefix, expires_ms);
                vec![Action::ApplyBlock {
                    prefix,
                    expires_ms,
                    reason,
                }]
            }
            Event::Unblock { prefix } => {
                self.known.remove(&prefix);
                vec![Action::ApplyUnblock { prefix }]
            }
            Event::TrainingStarted { epoch } => self.join(epoch, now_ms),
            Event::TrainingEnded { epoch, mode } => self.end(epoch, mode, now_ms),
            Event::Model { epoch } if epoch > self.model_epoch => {
                vec![Action::ImportModel { epoch }]
            }
            Event::Model { .. } => Vec::new(),
        }
    }

    /// Redis answered again: `state` was read just now. Applies it and replays the outbox.
    pub fn resync(&mut self, state: Resync, now_ms: u64) -> Vec<Action> {
        self.connected = true;
        let mut out = Vec::new();
        let mut listed = HashMap::with_capacity(state.blocks.len());
        for (prefix, expires_ms) in state.blocks {
            if expires_ms <= now_ms {
                continue;
            }
            listed.insert(prefix, expires_ms);
            if self.known.get(&prefix) != Some(&expires_ms) && !self.outbox.mentions(prefix) {
                self.known.insert(prefix, expires_ms);
                out.push(Action::ApplyBlock {
                    prefix,
                    expires_ms,
                    reason: None,
                });
            }
        }
        let gone: Vec<IpPrefix> = self
            .known
            .iter()
            .filter(|(p, &x)| x > now_ms && !listed.contains_key(*p) && !self.outbox.mentions(**p))
            .map(|(p, _)| *p)
            .collect();
        for prefix in gone {
            if state.fresh {
                let expires_ms = self.known[&prefix];
                out.push(Action::Publish(Event::Block {
                    prefix,
                    expires_ms,
                    reason: None,
                }));
            } else {
                self.known.remove(&prefix);
                out.push(Action::ApplyUnblock { prefix });
            }
        }
        self.known.retain(|_, x| *x > now_ms);
        match state.training {
            Some((epoch, true, _)) => out.extend(self.join(epoch, now_ms)),
            Some((epoch, false, mode)) => out.extend(self.end(epoch, mode, now_ms)),
            None => {}
        }
        if let Some(epoch) = state.model.filter(|e| *e > self.model_epoch) {
            out.push(Action::ImportModel { epoch });
        }
        out.extend(self.outbox.drain(now_ms).into_iter().map(Action::Publish));
        out
    }

    /// Redis stopped answering. Returns whether that is news (log it once).
    pub fn disconnected(&mut self) -> bool {
        std::mem::replace(&mut self.connected, false)
    }

    /// Publishing `event` failed: it waits in the outbox (blocks and unblocks only; a training
    /// event stays local). Returns whether the connection state changed.
    pub fn publish_failed(&mut self, event: Event) -> bool {
        if matches!(event, Event::Block { .. } | Event::Unblock { .. }) {
            self.outbox.push(event);
        }
        self.disconnected()
    }

    /// The model of `epoch` is in force.
    pub fn model_imported(&mut self, epoch: u64) {
        self.model_epoch = self.model_epoch.max(epoch);
    }

    /// Time passes: live snapshots and model builds that are due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if let (true, true, Some(epoch)) = (self.connected, self.training, self.epoch) {
            if now_ms >= self.next_snapshot_ms {
                self.next_snapshot_ms = now_ms + self.timing.snapshot_every_ms;
                out.push(Action::PublishSnapshot {
                    epoch,
                    snapshot: None,
                });
            }
        }
        if self.connected {
            let (due, later): (Vec<_>, Vec<_>) =
                self.builds.iter().partition(|(_, at)| *at <= now_ms);
            self.builds = later;
            out.extend(
                due.into_iter()
                    .map(|(epoch, _)| Action::BuildModel { epoch }),
            );
        }
        out
    }

    fn publish(&mut self, event: Event) -> Vec<Action> {
        if self.connected {
            vec![Action::Publish(event)]
        } else {
            self.outbox.push(event);
            Vec::new()
        }
    }

    fn join(&mut self, epoch: u64, now_ms: u64) -> Vec<Action> {
        if self.epoch.is_some_and(|e| e >= epoch) {
            return Vec::new();
        }
        self.epoch_assigned(epoch, now_ms);
        vec![Action::StartTraining { epoch }]
    }

    fn end(&mut self, epoch: u64, mode: Mode, now_ms: u64) -> Vec<Action> {
        if self.epoch != Some(epoch) || !self.training {
            return Vec::new();
        }
        self.training = false;
        self.schedule_build(epoch, now_ms);
        vec![Action::EndTraining { epoch, mode }]
    }

    fn schedule_build(&mut self, epoch: u64, now_ms: u64) {
        if epoch > self.model_epoch && !self.builds.iter().any(|(e, _)| *e == epoch) {
            self.builds.push((epoch, now_ms + self.timing.settle_ms));
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
