//! The limiter's modes and the errors of switching between them.

use core::fmt;
use core::str::FromStr;

use zgate_training::Metric;

/// What the limiter does with its observations. Switched at run time with
/// [`crate::Limiter::set_mode`]. Static guards and the block list act in every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No statistics, no scoring: events cost one relaxed load plus the static guards.
    Disabled,
    /// Record every client's per-epoch maxima into the epoch's training set; no scoring.
    /// Ends by itself after `training_period` (if non-zero) into `after_training`.
    Training,
    /// Score every observation against the model; block clients over threshold.
    Defence,
    /// Score like defence, but return [`crate::Verdict::WouldBlock`] and enforce nothing.
    Monitor,
}

impl Mode {
    /// Stable name: `"disabled"`, `"training"`, `"defence"`, `"monitor"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disabled => "disabled",
            Mode::Training => "training",
            Mode::Defence => "defence",
            Mode::Monitor => "monitor",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Training,
            2 => Mode::Defence,
            3 => Mode::Monitor,
            _ => Mode::Disabled,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = UnknownMode;

    /// Parses [`Mode::name`]; `"defense"` is accepted as a spelling of `"defence"`.
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "disabled" => Ok(Mode::Disabled),
            "training" => Ok(Mode::Training),
            "defence" | "defense" => Ok(Mode::Defence),
            "monitor" => Ok(Mode::Monitor),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// A string that is not a mode name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mode {:?}: expected disabled, training, defence or monitor",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

/// A refused mode switch or model import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeError {
    /// Defence or monitor needs a model: train first (or import one).
    NoModel {
        /// The mode that was asked for.
        requested: Mode,
    },
    /// Defence or monitor was asked without `force`, and some enabled metrics of the model
    /// (the one in use, or the one training would yield) were learned from fewer than
    /// `min_clients` clients: those metrics are not scored and fall back to their static caps.
    ThinModel {
        /// The mode that was asked for.
        requested: Mode,
        /// The thin metrics and their population sizes, in [`Metric::ALL`] order.
        thin: Vec<(Metric, u64)>,
        /// The minimum population in force.
        min_clients: u64,
    },
    /// A model's epoch is above [`crate::MAX_EPOCH`] (the limiter packs epochs with the mode
    /// in one word, and counts on from the model's epoch): refused, nothing changes.
    EpochOutOfRange {
        /// The epoch given.
        epoch: u64,
    },
    /// Training cannot start: the epoch counter is at [`crate::MAX_EPOCH`].
    EpochsExhausted,
}

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeError::NoModel { requested } => write!(
                f,
                "cannot switch to {requested}: no model; train first (mode=training) or import a model"
            ),
            ModeError::ThinModel {
                requested,
                thin,
                min_clients,
            } => {
                write!(
                    f,
                    "cannot switch to {requested}: these metrics were learned from fewer than \
                     min_clients ({min_clients}) clients and fall back to their static caps \
                     (limits.fallback):"
                )?;
                for (i, (m, n)) in thin.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{} (n = {n})", m.name())?;
                }
                f.write_str("; train longer, disable them, or force the switch")
            }
            ModeError::EpochOutOfRange { epoch } => write!(
                f,
                "epoch {epoch} is out of range: at most {}",
                crate::MAX_EPOCH
            ),
            ModeError::EpochsExhausted => write!(
                f,
                "cannot start training: the epoch counter is at its maximum ({})",
                crate::MAX_EPOCH
            ),
        }
    }
}

impl std::error::Error for ModeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in [Mode::Disabled, Mode::Training, Mode::Defence, Mode::Monitor] {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
            assert_eq!(Mode::from_u8(m.to_u8()), m);
        }
        assert!("attack".parse::<Mode>().is_err());
        let e = ModeError::NoModel {
            requested: Mode::Defence,
        };
        assert!(e.to_string().contains("no model"));
        let e = ModeError::ThinModel {
            requested: Mode::Defence,
            thin: vec![(Metric::Cpu, 0), (Metric::Fragmentation, 3)],
            min_clients: 10,
        };
        let text = e.to_string();
        assert!(
            text.contains("cpu (n = 0), fragmentation (n = 3)") && text.contains("force"),
            "{text}"
        );
    }
}
