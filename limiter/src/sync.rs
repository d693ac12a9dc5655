//! What a fleet of limiters needs to stay in step (DESIGN.md §7): local changes reported to a
//! sink, and remote changes applied without being reported back.
//!
//! The limiter reports every block it decides (a metric, a guard, or [`Limiter::block`]), every
//! [`Limiter::unblock`] and every mode change made by [`Limiter::set_mode`] or by the end of a
//! training period, as a [`Change`], to the sink set with [`Limiter::set_change_sink`]. The sink
//! runs on the thread that made the change, possibly a worker on the hot path (a block is rare,
//! but the call must not wait): it should only hand the change on, e.g. with a bounded channel's
//! `try_send`. Changes applied with the `apply_*` methods (they came from the fleet) are not
//! reported, so nothing echoes.

use core::str::FromStr;
use std::net::IpAddr;

use crate::blocklist::{BlockEntry, BlockListFull};
use crate::key::IpPrefix;
use crate::limiter::Limiter;
use crate::mode::{Mode, ModeError};
use crate::shared::Shared;
use crate::time::Nanos;
use crate::verdict::{Guard, Reason};
use std::sync::Arc;

use zgate_training::{Epoch, Metric, Populations, TrainingSet};

/// A change this limiter made on its own, reported to its sink.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A prefix was blocked (or its block extended) at `now`; `entry.until` is on the same
    /// clock.
    Blocked {
        /// The block list entry as stored.
        entry: BlockEntry,
        /// When it was decided.
        now: Nanos,
    },
    /// The block of exactly `prefix` was removed.
    Unblocked {
        /// The prefix unblocked.
        prefix: IpPrefix,
    },
    /// The mode changed (a new training epoch, or training ended into defence or monitor).
    Mode {
        /// The new mode.
        mode: Mode,
        /// The epoch after the change.
        epoch: Epoch,
        /// When the change ended a training epoch: that epoch's merged statistics, exact (the
        /// fleet's snapshot of this instance).
        ended: Option<Box<Populations>>,
    },
}

/// The sink's type: called on the thread that made the change; must not block.
pub(crate) type Sink = Box<dyn Fn(Change) + Send + Sync>;

impl Limiter {
    /// Reports every local [`Change`] to `sink` from now on (replacing any earlier sink).
    pub fn set_change_sink(&self, sink: impl Fn(Change) + Send + Sync + 'static) {
        self.shared.sink.store(Some(Arc::new(Box::new(sink))));
    }

    /// Stops reporting changes.
    pub fn clear_change_sink(&self) {
        self.shared.sink.store(None);
    }

    /// Blocks `prefix` until `until` for a reason decided elsewhere (`None`: manual, or
    /// unknown), without reporting it. Clients in the table covered by it are blocked at once.
    pub fn apply_block(
        &self,
        prefix: IpPrefix,
        until: Nanos,
        reason: Option<Reason>,
        now: Nanos,
    ) -> Result<(), BlockListFull> {
        let s = &self.shared;
        let entry = BlockEntry {
            prefix,
            until,
            reason,
            value: 0,
            z: 0.0,
        };
        s.blocks.insert(entry, now)?;
        // Exempt clients here stay unblocked, whatever another instance decided.
        s.for_clients_in(prefix, |key, c| {
            if !s.is_exempt(key.addr()) {
                c.block(until.0)
            }
        });
        Ok(())
    }

    /// Removes the block of exactly `prefix` without reporting it. Returns whether there was
    /// one.
    pub fn apply_unblock(&self, prefix: IpPrefix) -> bool {
        let s = &self.shared;
        let found = s.blocks.remove(prefix).is_some();
        if found {
            s.for_clients_in(prefix, |_, c| c.unblock());
        }
        found
    }

    /// [`Limiter::set_mode`] for a switch decided elsewhere, without reporting it. Returns the
    /// merged statistics of the training epoch the switch ended, if it ended one.
    pub fn apply_mode(&self, mode: Mode, now: Nanos) -> Result<Option<Populations>, ModeError> {
        let s = &self.shared;
        let ctl = s.lock_control();
        let before = s.training.load_full();
        s.switch(&ctl, mode, now.0, true)?;
        Ok(ended(before, s))
    }
}

impl Shared {
    /// Reports `change` to the sink, if there is one.
    #[inline]
    pub(crate) fn emit(&self, change: Change) {
        if let Some(sink) = self.sink.load().as_ref() {
            sink(change);
        }
    }

    /// Reports the current mode and epoch after a switch; `before` is the training set in use
    /// before it.
    pub(crate) fn emit_mode(&self, before: Option<Arc<TrainingSet>>) {
        if self.sink.load().is_none() {
            return;
        }
        let st = self.state();
        let ended = ended(before, self).map(Box::new);
        self.emit(Change::Mode {
            mode: st.mode,
            epoch: st.epoch,
            ended,
        });
    }
}

/// The statistics of `before` if a switch retired it (training ended or restarted).
fn ended(before: Option<Arc<TrainingSet>>, s: &Shared) -> Option<Populations> {
    let before = before?;
    let now = s.training.load();
    let same = now.as_ref().is_some_and(|n| Arc::ptr_eq(n, &before));
    (!same).then(|| before.merge())
}

/// Text that is not a block reason (`metric:NAME` or `guard:NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownReason;

impl core::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("not a block reason: use metric:NAME or guard:NAME")
    }
}

impl std::error::Error for UnknownReason {}

impl FromStr for Reason {
    type Err = UnknownReason;

    /// The inverse of `Display`: `metric:cpu`, `guard:ping`.
    fn from_str(s: &str) -> Result<Reason, UnknownReason> {
        match s.split_once(':') {
            Some(("metric", m)) => m
                .parse::<Metric>()
                .map(Reason::Metric)
                .map_err(|_| UnknownReason),
            Some(("guard", g)) => Guard::ALL
                .into_iter()
                .find(|x| x.name() == g)
                .map(Reason::Guard)
                .ok_or(UnknownReason),
            _ => Err(UnknownReason),
        }
    }
}

/// Text that is not an address or a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPrefix;

impl core::fmt::Display for BadPrefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("not an address or prefix like 192.0.2.1 or 2001:db8::/64")
    }
}

impl std::error::Error for BadPrefix {}

impl FromStr for IpPrefix {
    type Err = BadPrefix;

    /// `192.0.2.1` (a host) or `2001:db8::/64`, the inverse of `Display`.
    fn from_str(s: &str) -> Result<IpPrefix, BadPrefix> {
        match s.split_once('/') {
            None => s
                .parse::<IpAddr>()
                .map(IpPrefix::host)
                .map_err(|_| BadPrefix),
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| BadPrefix)?;
                let len: u8 = len.parse().map_err(|_| BadPrefix)?;
                IpPrefix::new(addr, len).ok_or(BadPrefix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimiterConfig;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn local_changes_reach_the_sink_and_applied_ones_do_not() {
        let l = Limiter::new(LimiterConfig::default(), None, Nanos(0)).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        l.set_change_sink(move |c| s.lock().unwrap().push(c));
        let a: IpPrefix = "192.0.2.1".parse().unwrap();
        let b: IpPrefix = "2001:db8::/64".parse().unwrap();
        l.block(a, Duration::from_secs(10), Nanos(5)).unwrap();
        l.apply_block(b, Nanos(100), None, Nanos(5)).unwrap();
        assert!(l.is_blocked("2001:db8::7".parse().unwrap(), Nanos(6)));
        assert!(l.unblock(a));
        assert!(l.apply_unblock(b));
        l.set_mode(Mode::Training, Nanos(7)).unwrap();
        l.apply_mode(Mode::Disabled, Nanos(8)).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            matches!(seen[0], Change::Blocked { entry, .. } if entry.prefix == a
            && entry.until == Nanos(10_000_000_005))
        );
        assert_eq!(seen[1], Change::Unblocked { prefix: a });
        assert_eq!(
            seen[2],
            Change::Mode {
                mode: Mode::Training,
                epoch: 1,
                ended: None,
            }
        );
    }

    #[test]
    fn ending_training_reports_the_epochs_statistics() {
        let l = Limiter::new(LimiterConfig::default(), None, Nanos(0)).unwrap();
        l.apply_mode(Mode::Training, Nanos(1)).unwrap();
        for i in 1..=3u8 {
            let ip = IpAddr::from([192, 0, 2, i]);
            let (c, _) = l.connection_opened(ip, Nanos(2));
            c.unwrap().close(Nanos(3));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        l.set_change_sink(move |c| s.lock().unwrap().push(c));
        l.set_mode(Mode::Monitor, Nanos(4)).unwrap();
        let seen = seen.lock().unwrap();
        let Some(Change::Mode {
            mode,
            epoch,
            ended: Some(p),
        }) = seen.first()
        else {
            panic!("{seen:?}");
        };
        assert_eq!((*mode, *epoch), (Mode::Monitor, 1));
        assert_eq!(p.get(Metric::Connections).n, 3);
        let again = l.apply_mode(Mode::Training, Nanos(5)).unwrap();
        assert_eq!(again, None);
        let out = l.apply_mode(Mode::Defence, Nanos(6)).unwrap();
        assert_eq!(out.map(|p| p.get(Metric::Connections).n), Some(0));
    }

    #[test]
    fn reasons_and_prefixes_parse_back() {
        for r in [Reason::Metric(Metric::Cpu), Reason::Guard(Guard::RstStream)] {
            assert_eq!(r.to_string().parse::<Reason>(), Ok(r));
        }
        assert!("metric:nope".parse::<Reason>().is_err());
        assert!("cpu".parse::<Reason>().is_err());
        let p: IpPrefix = "2001:db8::/64".parse().unwrap();
        assert_eq!(p.to_string().parse::<IpPrefix>(), Ok(p));
        assert_eq!("10.0.0.1/32".parse::<IpPrefix>().map(|p| p.len()), Ok(32));
        assert!("10.0.0.1/33".parse::<IpPrefix>().is_err());
        assert!("x".parse::<IpPrefix>().is_err());
    }
}
