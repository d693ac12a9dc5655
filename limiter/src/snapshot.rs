//! Read-only views for the admin API: one client, the limiter's status.

use core::time::Duration;

use zgate_training::{Epoch, Metric};

use crate::identified::Identified;
use crate::key::{ClientKey, IpPrefix};
use crate::mode::Mode;
use crate::time::Nanos;

/// One client as the admin API shows it. Arrays are indexed by [`Metric::index`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSnapshot {
    /// The client's identity.
    pub key: ClientKey,
    /// The client as a network (IPv4 /32 or IPv6 /`ipv6_prefix`).
    pub prefix: IpPrefix,
    /// Live value per metric in its unit: open connections, requests in flight, bytes held,
    /// CPU EMA decayed to `now` (ppm), last fragmentation score.
    pub current: [u64; Metric::COUNT],
    /// Maximum per metric in the current epoch (0 if not observed in it).
    pub max: [u64; Metric::COUNT],
    /// z-score of `current` per metric against the model (0.0 without a model or at or below
    /// the mean).
    pub z: [f64; Metric::COUNT],
    /// Time of the last connection open or close.
    pub last_seen: Nanos,
    /// Blocked until this time, if blocked now.
    pub blocked_until: Option<Nanos>,
    /// Whether the client's address is exempt (measured, never blocked, never sampled).
    pub exempt: bool,
    /// How the client was last identified: its socket peer, a PROXY protocol header, or a
    /// forwarding header from a trusted proxy.
    pub identified: Identified,
}

/// The limiter's state at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Current mode.
    pub mode: Mode,
    /// Current epoch (bumped by every start of training; 0 before the first).
    pub epoch: Epoch,
    /// Time left before training ends by itself; `None` when not training or when
    /// `training_period` is 0.
    pub training_left: Option<Duration>,
    /// Epoch of the model in use, `None` without a model.
    pub model_epoch: Option<Epoch>,
    /// Clients in the table.
    pub clients: usize,
    /// Block list entries (expired ones until purged included).
    pub blocks: usize,
}
