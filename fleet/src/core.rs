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

use std::collections::{HashMap, HashSet};

use zgate_limiter::{IpPrefix, Mode};

use crate::event::{Envelope, Event};
pub use crate::messages::{Action, Local, Resync, Timing};
use crate::outbox::Outbox;

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
    /// When expired entries of `known` go next.
    next_purge_ms: u64,
}

/// Expired blocks are forgotten this often, ms.
const PURGE_EVERY_MS: u64 = 1000;

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
            next_purge_ms: 0,
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
        let pending: HashSet<IpPrefix> = self.outbox.prefixes().collect();
        for (prefix, expires_ms) in state.blocks {
            if expires_ms <= now_ms {
                continue;
            }
            listed.insert(prefix, expires_ms);
            if self.known.get(&prefix) != Some(&expires_ms) && !pending.contains(&prefix) {
                self.known.insert(prefix, expires_ms);
                out.push(Action::ApplyBlock {
                    prefix,
                    expires_ms,
                    reason: None,
                });
            }
        }
        let gone: Vec<(IpPrefix, u64)> = self
            .known
            .iter()
            .filter(|(p, &x)| x > now_ms && !listed.contains_key(*p) && !pending.contains(*p))
            .map(|(p, x)| (*p, *x))
            .collect();
        for (prefix, expires_ms) in gone {
            if state.fresh {
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
        if now_ms >= self.next_purge_ms {
            self.next_purge_ms = now_ms + PURGE_EVERY_MS;
            self.known.retain(|_, x| *x > now_ms);
        }
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
