//! Runtime overrides: `[limits]` values set through the admin API or `zgate ctl`, which win
//! over the config file's until they are reset (a layer over the file, like Envoy's runtime
//! layers over its bootstrap config).
//!
//! Precedence, highest first: a runtime override, the config file, the built-in default. The
//! overrides are kept in `limits.state_file`, so they survive a reload (SIGHUP, `ctl reload`:
//! the new file is read, then the overrides are laid over it again) and a restart.
//! `zgate ctl --reset KEY` (`DELETE /api/v1/overrides/KEY`) drops one, and the file's value
//! applies again.
//!
//! The keys are those `zgate ctl -a` prints, with their ranges:
//! - `z.METRIC`: threshold, standard deviations, finite, 0..=1e6;
//! - `enabled.METRIC`: `true` or `false`;
//! - `min_std.METRIC`: std floor in the metric's unit, finite, > 0 and <= 2^40;
//! - `min_clients`: 1..=2^32 clients;
//! - `fallback.METRIC`: the static cap of a metric learned from fewer than `min_clients`
//!   clients, in the metric's unit, 0..=2^40 (the training crate's sample cap);
//! - `block_duration`: a duration, 1s..=365d;
//! - `guards.NAME`: the static guards (`max_connections_per_client`, `max_memory_per_client`,
//!   `ping_per_sec`, `settings_per_sec`, `rst_stream_per_sec`, `empty_data_per_sec`,
//!   `window_update_per_sec`, `priority_per_sec`, `unknown_frame_per_sec`,
//!   `max_continuation_per_block`, and the glitch guard `max_glitches`), integers from 0 (off)
//!   to the guard's type (u32, or u64 for the first two).
//!
//! Sans-IO: parsing, validation and laying the overrides over a [`LimiterConfig`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use zgate_config::{format_duration, parse_duration};
use zgate_limiter::{LimiterConfig, Metric};

/// Largest `z.METRIC` override, standard deviations.
pub const MAX_Z: f64 = 1e6;
/// Largest `min_std.METRIC` override, in the metric's unit (the training crate's sample cap).
pub const MAX_MIN_STD: f64 = (1u64 << 40) as f64;
/// Largest `min_clients` override, clients.
pub const MAX_MIN_CLIENTS: u64 = 1 << 32;
/// Largest `fallback.METRIC` override, in the metric's unit (the training crate's sample cap:
/// a cap above it never blocks).
pub const MAX_FALLBACK: u64 = 1 << 40;
/// Longest `block_duration` override, and longest manual block: 365 days.
pub const MAX_BLOCK_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A `[limits]` key that can be overridden at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    /// `z.METRIC`.
    Z(Metric),
    /// `enabled.METRIC`.
    Enabled(Metric),
    /// `min_std.METRIC`.
    MinStd(Metric),
    /// `min_clients`.
    MinClients,
    /// `fallback.METRIC`.
    Fallback(Metric),
    /// `block_duration`.
    BlockDuration,
    /// `guards.NAME`.
    Guard(GuardKnob),
}

/// A static guard, by its `guards.NAME` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuardKnob {
    /// `max_connections_per_client` (u64).
    MaxConnectionsPerClient,
    /// `max_memory_per_client`, bytes (u64).
    MaxMemoryPerClient,
    /// `ping_per_sec` (u32).
    PingPerSec,
    /// `settings_per_sec` (u32).
    SettingsPerSec,
    /// `rst_stream_per_sec` (u32).
    RstStreamPerSec,
    /// `empty_data_per_sec` (u32).
    EmptyDataPerSec,
    /// `max_continuation_per_block` (u32).
    MaxContinuationPerBlock,
    /// `window_update_per_sec` (u32).
    WindowUpdatePerSec,
    /// `priority_per_sec` (u32).
    PriorityPerSec,
    /// `unknown_frame_per_sec` (u32).
    UnknownFramePerSec,
    /// `max_glitches`: weighted glitches per client per 10 s window (u32; the limiter keeps it
    /// beside the guards, [`LimiterConfig::max_glitches`]).
    MaxGlitches,
}

impl GuardKnob {
    /// Every guard.
    pub const ALL: [GuardKnob; 11] = [
        GuardKnob::MaxConnectionsPerClient,
        GuardKnob::MaxMemoryPerClient,
        GuardKnob::PingPerSec,
        GuardKnob::SettingsPerSec,
        GuardKnob::RstStreamPerSec,
        GuardKnob::EmptyDataPerSec,
        GuardKnob::WindowUpdatePerSec,
        GuardKnob::PriorityPerSec,
        GuardKnob::UnknownFramePerSec,
        GuardKnob::MaxContinuationPerBlock,
        GuardKnob::MaxGlitches,
    ];

    /// The name after `guards.`.
    pub fn name(self) -> &'static str {
        match self {
            GuardKnob::MaxConnectionsPerClient => "max_connections_per_client",
            GuardKnob::MaxMemoryPerClient => "max_memory_per_client",
            GuardKnob::PingPerSec => "ping_per_sec",
            GuardKnob::SettingsPerSec => "settings_per_sec",
            GuardKnob::RstStreamPerSec => "rst_stream_per_sec",
            GuardKnob::EmptyDataPerSec => "empty_data_per_sec",
            GuardKnob::MaxContinuationPerBlock => "max_continuation_per_block",
            GuardKnob::WindowUpdatePerSec => "window_update_per_sec",
            GuardKnob::PriorityPerSec => "priority_per_sec",
            GuardKnob::UnknownFramePerSec => "unknown_frame_per_sec",
            GuardKnob::MaxGlitches => "max_glitches",
        }
    }

    /// The largest value the guard takes.
    fn max(self) -> u64 {
        match self {
            GuardKnob::MaxConnectionsPerClient | GuardKnob::MaxMemoryPerClient => u64::MAX,
            _ => u64::from(u32::MAX),
        }
    }

    /// The guard's value in `c`.
    pub fn get(self, c: &LimiterConfig) -> u64 {
        let g = &c.guards;
        match self {
            GuardKnob::MaxConnectionsPerClient => g.max_connections_per_client,
            GuardKnob::MaxMemoryPerClient => g.max_memory_per_client,
            GuardKnob::PingPerSec => u64::from(g.ping_per_sec),
            GuardKnob::SettingsPerSec => u64::from(g.settings_per_sec),
            GuardKnob::RstStreamPerSec => u64::from(g.rst_stream_per_sec),
            GuardKnob::EmptyDataPerSec => u64::from(g.empty_data_per_sec),
            GuardKnob::MaxContinuationPerBlock => u64::from(g.max_continuation_per_block),
            GuardKnob::WindowUpdatePerSec => u64::from(g.window_update_per_sec),
            GuardKnob::PriorityPerSec => u64::from(g.priority_per_sec),
            GuardKnob::UnknownFramePerSec => u64::from(g.unknown_frame_per_sec),
            GuardKnob::MaxGlitches => u64::from(c.max_glitches),
        }
    }

    /// Sets the guard; `v` was checked against [`GuardKnob::max`].
    fn set(self, c: &mut LimiterConfig, v: u64) {
        let small = u32::try_from(v).unwrap_or(u32::MAX);
        let g = &mut c.guards;
        match self {
            GuardKnob::MaxConnectionsPerClient => g.max_connections_per_client = v,
            GuardKnob::MaxMemoryPerClient => g.max_memory_per_client = v,
            GuardKnob::PingPerSec => g.ping_per_sec = small,
            GuardKnob::SettingsPerSec => g.settings_per_sec = small,
            GuardKnob::RstStreamPerSec => g.rst_stream_per_sec = small,
            GuardKnob::EmptyDataPerSec => g.empty_data_per_sec = small,
            GuardKnob::MaxContinuationPerBlock => g.max_continuation_per_block = small,
            GuardKnob::WindowUpdatePerSec => g.window_update_per_sec = small,
            GuardKnob::PriorityPerSec => g.priority_per_sec = small,
            GuardKnob::UnknownFramePerSec => g.unknown_frame_per_sec = small,
            GuardKnob::MaxGlitches => c.max_glitches = small,
        }
    }
}

impl Knob {
    /// Parses a key as `zgate ctl -a` prints it.
    pub fn parse(key: &str) -> Result<Knob, OverrideError> {
        let metric = |m: &str| {
            m.parse::<Metric>()
                .map_err(|e| OverrideError::UnknownKey(key.to_owned(), e.to_string()))
        };
        if let Some(m) = key.strip_prefix("z.") {
            return Ok(Knob::Z(metric(m)?));
        }
        if let Some(m) = key.strip_prefix("enabled.") {
            return Ok(Knob::Enabled(metric(m)?));
        }
        if let Some(m) = key.strip_prefix("min_std.") {
            return Ok(Knob::MinStd(metric(m)?));
        }
        if let Some(m) = key.strip_prefix("fallback.") {
            return Ok(Knob::Fallback(metric(m)?));
        }
        if let Some(g) = key.strip_prefix("guards.") {
            if let Some(g) = GuardKnob::ALL.into_iter().find(|k| k.name() == g) {
                return Ok(Knob::Guard(g));
            }
        }
        match key {
            "min_clients" => Ok(Knob::MinClients),
            "block_duration" => Ok(Knob::BlockDuration),
            _ => Err(OverrideError::UnknownKey(
                key.to_owned(),
                "not settable at run time (z.*, enabled.*, min_std.*, min_clients, \
                 fallback.*, block_duration, guards.* are): change it in the config file"
                    .to_owned(),
            )),
        }
    }

    /// Checks and converts a value for this knob: a JSON number, boolean or string (`ctl`
    /// sends what the operator typed, e.g. `"5"`, `"off"`, `"10m"`).
    pub fn value(self, v: &Value) -> Result<Setting, OverrideError> {
        let bad = |why: String| OverrideError::BadValue(self.to_string(), why);
        let text = match v {
            Value::String(s) => Some(s.trim()),
            _ => None,
        };
        match self {
            Knob::Enabled(_) => match (v, text) {
                (Value::Bool(b), _) => Ok(Setting::Bool(*b)),
                (_, Some("true" | "on" | "1")) => Ok(Setting::Bool(true)),
                (_, Some("false" | "off" | "0")) => Ok(Setting::Bool(false)),
                _ => Err(bad("must be true or false".into())),
            },
            Knob::BlockDuration => {
                let d = text
                    .ok_or_else(|| bad("give a duration such as \"10m\"".into()))
                    .and_then(|t| parse_duration(t).map_err(|e| bad(e.to_string())))?;
                if d < Duration::from_secs(1) || d > MAX_BLOCK_DURATION {
                    return Err(bad("must be from 1s to 365d".into()));
                }
                Ok(Setting::Duration(d))
            }
            Knob::Z(_) | Knob::MinStd(_) => {
                let x = number(v, text).ok_or_else(|| bad("must be a number".into()))?;
                let (lo_ok, hi) = match self {
                    Knob::Z(_) => (x >= 0.0, MAX_Z),
                    _ => (x > 0.0, MAX_MIN_STD),
                };
                if !x.is_finite() || !lo_ok || x > hi {
                    let lo = if matches!(self, Knob::Z(_)) {
                        ">= 0"
                    } else {
                        "> 0"
                    };
                    return Err(bad(format!("{x} must be finite, {lo} and <= {hi}")));
                }
                Ok(Setting::Number(x))
            }
            Knob::MinClients | Knob::Fallback(_) | Knob::Guard(_) => {
                let n = integer(v, text).ok_or_else(|| bad("must be a whole number".into()))?;
                let (lo, hi) = match self {
                    Knob::Guard(g) => (0, g.max()),
                    Knob::Fallback(_) => (0, MAX_FALLBACK),
                    _ => (1, MAX_MIN_CLIENTS),
                };
                if n < lo || n > hi {
                    return Err(bad(format!("{n} must be from {lo} to {hi}")));
                }
                Ok(Setting::Count(n))
            }
        }
    }

    /// The knob's value in `c`, as `zgate ctl -a` prints it.
    pub fn show(self, c: &LimiterConfig) -> String {
        match self {
            Knob::Z(m) => c.thresholds[m.index()].to_string(),
            Knob::Enabled(m) => c.enabled[m.index()].to_string(),
            Knob::MinStd(m) => c.min_std[m.index()].to_string(),
            Knob::MinClients => c.min_clients.to_string(),
            Knob::Fallback(m) => c.fallback[m.index()].to_string(),
            Knob::BlockDuration => format_duration(c.block_duration),
            Knob::Guard(g) => g.get(c).to_string(),
        }
    }

    /// Sets the knob in `c` to `s` (a value checked by [`Knob::value`] for this knob).
    fn apply(self, s: Setting, c: &mut LimiterConfig) {
        match (self, s) {
            (Knob::Z(m), Setting::Number(x)) => c.thresholds[m.index()] = x,
            (Knob::Enabled(m), Setting::Bool(b)) => c.enabled[m.index()] = b,
            (Knob::MinStd(m), Setting::Number(x)) => c.min_std[m.index()] = x,
            (Knob::MinClients, Setting::Count(n)) => c.min_clients = n,
            (Knob::Fallback(m), Setting::Count(n)) => c.fallback[m.index()] = n,
            (Knob::BlockDuration, Setting::Duration(d)) => c.block_duration = d,
            (Knob::Guard(g), Setting::Count(n)) => g.set(c, n),
            // `value` never pairs a knob with another kind of setting.
            _ => {}
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Knob::Z(m) => write!(f, "z.{}", m.name()),
            Knob::Enabled(m) => write!(f, "enabled.{}", m.name()),
            Knob::MinStd(m) => write!(f, "min_std.{}", m.name()),
            Knob::MinClients => f.write_str("min_clients"),
            Knob::Fallback(m) => write!(f, "fallback.{}", m.name()),
            Knob::BlockDuration => f.write_str("block_duration"),
            Knob::Guard(g) => write!(f, "guards.{}", g.name()),
        }
    }
}

fn number(v: &Value, text: Option<&str>) -> Option<f64> {
    v.as_f64().or_else(|| text?.parse().ok())
}

fn integer(v: &Value, text: Option<&str>) -> Option<u64> {
    v.as_u64().or_else(|| text?.parse().ok())
}

/// A checked value of a knob.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// `z.*`, `min_std.*`.
    Number(f64),
    /// `enabled.*`.
    Bool(bool),
    /// `min_clients`, `fallback.*`, `guards.*`.
    Count(u64),
    /// `block_duration`.
    Duration(Duration),
}

impl Setting {
    /// As JSON, the way the state file keeps it.
    fn to_json(self) -> Value {
        match self {
            Setting::Number(x) => Value::from(x),
            Setting::Bool(b) => Value::from(b),
            Setting::Count(n) => Value::from(n),
            Setting::Duration(d) => Value::from(format_duration(d)),
        }
    }
}

/// The runtime overrides in force, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides(BTreeMap<Knob, Setting>);

impl Overrides {
    /// Sets `knob` (the value checked by [`Knob::value`]).
    pub fn set(&mut self, knob: Knob, s: Setting) {
        self.0.insert(knob, s);
    }

    /// Drops the override of `knob`; whether there was one.
    pub fn reset(&mut self, knob: Knob) -> bool {
        self.0.remove(&knob).is_some()
    }

    /// The overridden keys, in a stable order.
    pub fn knobs(&self) -> impl Iterator<Item = Knob> + '_ {
        self.0.keys().copied()
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `base` (the config file's `[limits]`) with the overrides laid over it. Valid when `base`
    /// is: every override was checked against the limiter's own bounds.
    pub fn apply(&self, base: &LimiterConfig) -> LimiterConfig {
        let mut c = base.clone();
        for (k, s) in &self.0 {
            k.apply(*s, &mut c);
        }
        c
    }

    /// As the state file keeps them: `{"z.cpu": 5.0, "block_duration": "5m", ...}`.
    pub fn to_json(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_json()))
            .collect()
    }

    /// From the state file: every entry checked as if sent to the API. Bad entries are left
    /// out and returned with the reason (the caller warns).
    pub fn from_json(map: &Map<String, Value>) -> (Overrides, Vec<OverrideError>) {
        let mut o = Overrides::default();
        let mut bad = Vec::new();
        for (key, v) in map {
            match Knob::parse(key).and_then(|k| Ok((k, k.value(v)?))) {
                Ok((k, s)) => o.set(k, s),
                Err(e) => bad.push(e),
            }
        }
        (o, bad)
    }
}

/// A refused override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideError {
    /// Not a key that can be overridden: the key and why.
    UnknownKey(String, String),
    /// The value is out of range or of the wrong kind: the key and why.
    BadValue(String, String),
}

impl fmt::Display for OverrideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverrideError::UnknownKey(k, why) => write!(f, "{k:?}: {why}"),
            OverrideError::BadValue(k, why) => write!(f, "{k}: {why}"),
        }
    }
}

impl std::error::Error for OverrideError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(o: &mut Overrides, key: &str, v: Value) -> Result<(), OverrideError> {
        let k = Knob::parse(key)?;
        o.set(k, k.value(&v)?);
        Ok(())
    }

    #[test]
    fn overrides_lay_over_the_file_and_round_trip() {
        let mut o = Overrides::default();
        set(&mut o, "z.cpu", json!(5)).unwrap();
        set(&mut o, "enabled.memory", json!("off")).unwrap();
        set(&mut o, "min_std.cpu", json!("20000")).unwrap();
        set(&mut o, "min_clients", json!(3)).unwrap();
        set(&mut o, "block_duration", json!("5m")).unwrap();
        set(&mut o, "guards.ping_per_sec", json!("7")).unwrap();
        set(&mut o, "guards.max_glitches", json!(40)).unwrap();
        set(&mut o, "guards.window_update_per_sec", json!("0")).unwrap();
        set(&mut o, "fallback.fragmentation", json!("5000")).unwrap();
        let base = LimiterConfig::default();
        let c = o.apply(&base);
        assert_eq!(c.thresholds[Metric::Cpu.index()], 5.0);
        assert!(!c.enabled[Metric::Memory.index()]);
        assert_eq!(c.min_std[Metric::Cpu.index()], 20000.0);
        assert_eq!(c.min_clients, 3);
        assert_eq!(c.block_duration, Duration::from_secs(300));
        assert_eq!(c.guards.ping_per_sec, 7);
        assert_eq!(c.max_glitches, 40);
        assert_eq!(c.guards.window_update_per_sec, 0);
        assert_eq!(c.fallback[Metric::Fragmentation.index()], 5000);
        assert_eq!(c.model_params().fallback(Metric::Fragmentation), 5000);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(Knob::parse("guards.max_glitches").unwrap().show(&c), "40");
        assert_eq!(Knob::BlockDuration.show(&c), "5m");
        let (back, bad) = Overrides::from_json(&o.to_json());
        assert_eq!((back, bad), (o.clone(), vec![]));
        assert!(o.reset(Knob::MinClients));
        assert!(!o.reset(Knob::MinClients));
        assert_eq!(o.apply(&base).min_clients, base.min_clients);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let mut o = Overrides::default();
        for (key, v, needle) in [
            ("max_clients", json!(5), "not settable"),
            ("z.frag", json!(1), "unknown metric"),
            ("z.cpu", json!(-1), "must be finite"),
            ("z.cpu", json!(1e9), "<= 1000000"),
            ("min_std.cpu", json!(0), "> 0"),
            ("enabled.cpu", json!("maybe"), "true or false"),
            ("min_clients", json!(0), "from 1"),
            (
                "guards.ping_per_sec",
                json!(1u64 << 33),
                "from 0 to 4294967295",
            ),
            ("block_duration", json!("0"), "1s to 365d"),
            (
                "guards.max_glitches",
                json!(1u64 << 32),
                "guards.max_glitches: 4294967296 must be from 0 to 4294967295",
            ),
            ("guards.max_glitches", json!("lots"), "whole number"),
            (
                "fallback.cpu",
                json!(-1),
                "fallback.cpu: must be a whole number",
            ),
            (
                "fallback.memory",
                json!((1u64 << 40) + 1),
                "to 1099511627776",
            ),
            ("fallback.nope", json!(5), "unknown metric"),
            ("block_duration", json!(60), "duration"),
        ] {
            let e = set(&mut o, key, v).unwrap_err().to_string();
            assert!(e.contains(needle), "{key}: {e}");
        }
        assert!(o.is_empty());
        let (o, bad) = Overrides::from_json(
            json!({"z.cpu": 4, "z.nope": 1, "min_clients": -3})
                .as_object()
                .unwrap(),
        );
        assert_eq!(o.knobs().count(), 1);
        assert_eq!(bad.len(), 2);
    }
}
