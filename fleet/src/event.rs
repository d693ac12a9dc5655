//! The fleet's events on the wire: one Redis stream entry each, as flat string fields.
//!
//! | field | meaning |
//! |---|---|
//! | `k` | kind: `block`, `unblock`, `train`, `end`, `model` |
//! | `o` | origin: the instance that published it |
//! | `p` | prefix (`192.0.2.1/32`, `2001:db8::/64`), block and unblock |
//! | `x` | expiry, Unix milliseconds, block |
//! | `r` | reason (`metric:cpu`, `guard:ping`), block, optional (manual) |
//! | `e` | training epoch, train, end and model |
//! | `m` | mode after training (`defence`, `monitor`), end |
//!
//! Decoding never panics: a malformed entry (another version, a hand-made XADD) is an error
//! the caller counts and skips.

use zgate_limiter::{IpPrefix, Mode, Reason};

/// One change shared by the fleet.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `prefix` is blocked until `expires_ms` (Unix milliseconds).
    Block {
        /// The blocked network.
        prefix: IpPrefix,
        /// Unix milliseconds.
        expires_ms: u64,
        /// Why; `None` for a manual block.
        reason: Option<Reason>,
    },
    /// The block of exactly `prefix` is removed.
    Unblock {
        /// The network unblocked.
        prefix: IpPrefix,
    },
    /// The fleet starts training epoch `epoch`.
    TrainingStarted {
        /// The fleet's epoch (its Redis counter).
        epoch: u64,
    },
    /// The fleet ends training epoch `epoch` into `mode`.
    TrainingEnded {
        /// The fleet's epoch.
        epoch: u64,
        /// Defence or monitor.
        mode: Mode,
    },
    /// The model of `epoch` is written.
    Model {
        /// The fleet's epoch.
        epoch: u64,
    },
}

/// An event and the instance that published it.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The publishing instance's name.
    pub origin: String,
    /// What happened.
    pub event: Event,
}

/// Why a stream entry is not an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A required field is absent.
    Missing(&'static str),
    /// A field does not parse.
    Invalid(&'static str),
    /// An unknown kind.
    UnknownKind(String),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Missing(k) => write!(f, "field `{k}` missing"),
            DecodeError::Invalid(k) => write!(f, "field `{k}` invalid"),
            DecodeError::UnknownKind(k) => write!(f, "unknown kind {:?}", k.escape_debug()),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Envelope {
    /// The stream entry's fields.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("o", self.origin.clone())];
        match &self.event {
            Event::Block {
                prefix,
                expires_ms,
                reason,
            } => {
                f.push(("k", "block".into()));
                f.push(("p", prefix.to_string()));
                f.push(("x", expires_ms.to_string()));
                if let Some(r) = reason {
                    f.push(("r", r.to_string()));
                }
            }
            Event::Unblock { prefix } => {
                f.push(("k", "unblock".into()));
                f.push(("p", prefix.to_string()));
            }
            Event::TrainingStarted { epoch } => {
                f.push(("k", "train".into()));
                f.push(("e", epoch.to_string()));
            }
            Event::TrainingEnded { epoch, mode } => {
                f.push(("k", "end".into()));
                f.push(("e", epoch.to_string()));
                f.push(("m", mode.name().into()));
            }
            Event::Model { epoch } => {
                f.push(("k", "model".into()));
                f.push(("e", epoch.to_string()));
            }
        }
        f
    }

    /// The event of a stream entry's fields (`get` looks one up by name).
    pub fn from_fields<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Envelope, DecodeError> {
        let field = |k: &'static str| get(k).ok_or(DecodeError::Missing(k));
        let num = |k: &'static str| {
            field(k)?
                .parse::<u64>()
                .map_err(|_| DecodeError::Invalid(k))
        };
        let prefix = || {
            field("p")?
                .parse::<IpPrefix>()
                .map_err(|_| DecodeError::Invalid("p"))
        };
        let origin = field("o")?.to_owned();
        let event = match field("k")? {
            "block" => Event::Block {
                prefix: prefix()?,
                expires_ms: num("x")?,
                reason: match get("r") {
                    None => None,
                    Some(r) => Some(r.parse().map_err(|_| DecodeError::Invalid("r"))?),
                },
            },
            "unblock" => Event::Unblock { prefix: prefix()? },
            "train" => Event::TrainingStarted { epoch: num("e")? },
            "end" => Event::TrainingEnded {
                epoch: num("e")?,
                mode: field("m")?
                    .parse::<Mode>()
                    .ok()
                    .filter(|m| matches!(m, Mode::Defence | Mode::Monitor))
                    .ok_or(DecodeError::Invalid("m"))?,
            },
            "model" => Event::Model { epoch: num("e")? },
            other => return Err(DecodeError::UnknownKind(other.to_owned())),
        };
        Ok(Envelope { origin, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zgate_limiter::{Guard, Metric};

    fn round_trip(event: Event) {
        let env = Envelope {
            origin: "edge-1".into(),
            event,
        };
        let fields = env.to_fields();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(Envelope::from_fields(get), Ok(env));
    }

    #[test]
    fn every_event_round_trips() {
        let p: IpPrefix = "2001:db8::/64".parse().unwrap();
        round_trip(Event::Block {
            prefix: p,
            expires_ms: 1_700_000_000_123,
            reason: Some(Reason::Metric(Metric::Cpu)),
        });
        round_trip(Event::Block {
            prefix: "192.0.2.1".parse().unwrap(),
            expires_ms: 5,
            reason: Some(Reason::Guard(Guard::Ping)),
        });
        round_trip(Event::Block {
            prefix: p,
            expires_ms: 5,
            reason: None,
        });
        round_trip(Event::Unblock { prefix: p });
        round_trip(Event::TrainingStarted { epoch: 7 });
        round_trip(Event::TrainingEnded {
            epoch: 7,
            mode: Mode::Monitor,
        });
        round_trip(Event::Model { epoch: 7 });
    }

    #[test]
    fn malformed_entries_are_errors() {
        let decode = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            Envelope::from_fields(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()))
        };
        assert_eq!(decode(&[("k", "block")]), Err(DecodeError::Missing("o")));
        assert_eq!(
            decode(&[("o", "a"), ("k", "block"), ("p", "x"), ("x", "1")]),
            Err(DecodeError::Invalid("p"))
        );
        assert_eq!(
            decode(&[("o", "a"), ("k", "end"), ("e", "1"), ("m", "training")]),
            Err(DecodeError::Invalid("m"))
        );
        assert!(matches!(
            decode(&[("o", "a"), ("k", "zap")]),
            Err(DecodeError::UnknownKind(_))
        ));
    }
}
