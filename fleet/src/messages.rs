//! What goes in and out of the fleet state machine ([`crate::Fleet`]): local changes, the
//! actions it asks for, the state a resync reads, and its timing.

use zgate_limiter::{IpPrefix, Mode, Reason};

use crate::event::Event;
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
