//! The six metrics zgate learns, and their names.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the per-client metrics of DESIGN.md §2.
///
/// Every sample is a `u64` in the metric's integer unit, given per variant. The declaration order
/// is the index order used by every per-metric array in this crate ([`Metric::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// C: concurrent connections of the client. Unit: connections.
    Connections,
    /// R: in-flight non-idempotent requests (POST, PATCH, ...). Unit: requests.
    RequestsNonidempotent,
    /// A: in-flight requests of any method. Unit: requests.
    Requests,
    /// M: bytes the proxy holds on the client's behalf. Unit: bytes.
    Memory,
    /// P: time-decayed EMA of proxy CPU time spent on the client ([`crate::CpuEma`]).
    /// Unit: millionths of one core (ppm; 1_000_000 = one full core).
    Cpu,
    /// F: chunk fragmentation score of a multi-chunk message ([`crate::Fragments`]).
    /// Unit: `FRAG_SCALE * chunks^2 / bytes` (see [`crate::FRAG_SCALE`]).
    Fragmentation,
}

impl Metric {
    /// Number of metrics: 6.
    pub const COUNT: usize = 6;

    /// All metrics, in index order.
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::Connections,
        Metric::RequestsNonidempotent,
        Metric::Requests,
        Metric::Memory,
        Metric::Cpu,
        Metric::Fragmentation,
    ];

    /// The metric's position in [`Metric::ALL`] and in every per-metric array: `0..6`.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric's name as used in config files, the admin API and serde:
    /// `"connections"`, `"requests_nonidempotent"`, `"requests"`, `"memory"`, `"cpu"`,
    /// `"fragmentation"`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Connections => "connections",
            Metric::RequestsNonidempotent => "requests_nonidempotent",
            Metric::Requests => "requests",
            Metric::Memory => "memory",
            Metric::Cpu => "cpu",
            Metric::Fragmentation => "fragmentation",
        }
    }
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    /// Parses a metric's [`Metric::name`] (exact, case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMetric(s.to_owned()))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a string that is not a metric name. Holds the rejected input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMetric(pub String);

impl fmt::Display for UnknownMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown metric {:?}; valid metrics are: ", self.0)?;
        for (i, m) in Metric::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m.name())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownMetric {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_follows_declaration_order() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn names_round_trip_through_from_str_display_and_serde() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), m);
        }
    }

    #[test]
    fn unknown_metric_names_input_and_lists_valid_names() {
        let err = "Memory".parse::<Metric>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"Memory\""), "{msg}");
        for m in Metric::ALL {
            assert!(msg.contains(m.name()), "{msg}");
        }
    }
}
