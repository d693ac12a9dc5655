//! The limiter's typed configuration, with every default and unit.
//!
//! The proxy maps the TOML file's `[limits]` onto [`LimiterConfig`]; this crate only checks it
//! ([`LimiterConfig::validate`]) and trusts it afterwards.

use core::fmt;
use core::time::Duration;

use zgate_training::{check_threshold, InvalidThreshold, Metric, ModelParams};

use crate::mode::Mode;

/// Everything the limiter can be configured with. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LimiterConfig {
    /// Mode at start. Default: [`Mode::Disabled`] (the proxy switches to defence after loading a
    /// persisted model, or to training on command).
    pub mode: Mode,
    /// How long training lasts before it ends by itself; `Duration::ZERO` = only on command.
    /// Default: 3600 s.
    pub training_period: Duration,
    /// Mode entered when training ends by itself: [`Mode::Defence`] or [`Mode::Monitor`].
    /// Default: `Defence`.
    pub after_training: Mode,
    /// How long a client stays blocked after a violation. Default: 600 s.
    pub block_duration: Duration,
    /// Per-metric z-score threshold, indexed by [`Metric::index`]: a client is blocked when
    /// `(x - mean) / std > threshold` (strictly). Unit: standard deviations. Default: 3.0 each.
    pub thresholds: [f64; Metric::COUNT],
    /// Per-metric enable flags for scoring (training records all metrics regardless).
    /// Default: all `true`.
    pub enabled: [bool; Metric::COUNT],
    /// Per-metric floor of the standard deviation applied when the model is finalized, in the
    /// metric's unit, so that a population of identical clients still blocks an outlier.
    /// Defaults: [`ModelParams::default`]'s (connections 1, requests_nonidempotent 1,
    /// requests 1, memory 65536 bytes, cpu 10000 ppm = 1 % of a core, fragmentation 8).
    pub min_std: [f64; Metric::COUNT],
    /// Minimum population size for a metric's model to score at all. Unit: clients.
    /// Default: [`ModelParams::default`]'s, 10.
    pub min_clients: u64,
    /// Per-metric static cap, in the metric's unit, that a metric learned from fewer than
    /// `min_clients` clients falls back to (values above it block). Defaults:
    /// [`ModelParams::default`]'s (connections 64, requests_nonidempotent 32, requests 256,
    /// memory 64 MiB, cpu 500000 ppm, fragmentation 100000).
    pub fallback: [u64; Metric::COUNT],
    /// Maximum number of tracked clients. At the bound, clients without open connections are
    /// evicted, idle ones first (blocked ones too: blocks live in the block list); if none can
    /// be, a new client is admitted untracked, with the static guards only. Default: 4_000_000
    /// (about 0.89 GiB at the measured 222..=240 bytes per client including the map, see
    /// `benches/memory.rs`).
    pub max_clients: usize,
    /// A client with no open connection and no event for this long is removed by
    /// [`crate::Limiter::tick`] (and is the first choice for eviction). Default: 600 s.
    pub idle_expiry: Duration,
    /// Prefix length IPv6 clients are aggregated to. Unit: bits, 1..=128. Default: 64.
    pub ipv6_prefix: u8,
    /// Half-life of the CPU EMA (metric `cpu`). Default: 1 s.
    pub cpu_half_life: Duration,
    /// Maximum number of block list entries (automatic and manual). Default: 65536.
    pub max_blocks: usize,
    /// Exclusive shards of each training set: the number of threads that record samples
    /// without sharing a cache line (more threads share an overflow shard). 0 = the number of
    /// CPUs. Default: 0.
    pub training_shards: usize,
    /// The static guards (active in every mode).
    pub guards: GuardLimits,
    /// The glitch guard (active in every mode): the most weighted glitches (protocol errors,
    /// abandoned requests, oversized header blocks; see [`crate::Glitch`]) one client may cause
    /// in a 10-second window before it is blocked. 0 = off. Default: 100 (e.g. 100 reset
    /// streams, or 10 connections ended by protocol errors).
    pub max_glitches: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        let params = ModelParams::default();
        LimiterConfig {
            mode: Mode::Disabled,
            training_period: Duration::from_secs(3600),
            after_training: Mode::Defence,
            block_duration: Duration::from_secs(600),
            thresholds: [3.0; Metric::COUNT],
            enabled: [true; Metric::COUNT],
            min_std: params.min_std,
            min_clients: params.min_clients,
            fallback: params.fallback,
            max_clients: 4_000_000,
            idle_expiry: Duration::from_secs(600),
            ipv6_prefix: 64,
            cpu_half_life: Duration::from_secs(1),
            max_blocks: 65536,
            training_shards: 0,
            guards: GuardLimits::default(),
            max_glitches: 100,
        }
    }
}

impl LimiterConfig {
    /// Checks every value; the error names the offending field.
    pub fn validate(&self) -> Result<(), LimiterConfigError> {
        use LimiterConfigError as E;
        if !matches!(self.after_training, Mode::Defence | Mode::Monitor) {
            return Err(E::AfterTraining(self.after_training));
        }
        for m in Metric::ALL {
            check_threshold(self.thresholds[m.index()]).map_err(|e| E::Threshold(m, e))?;
            let s = self.min_std[m.index()];
            if !s.is_finite() || s <= 0.0 {
                return Err(E::MinStd(m, s));
            }
        }
        if self.min_clients == 0 {
            return Err(E::MinClients);
        }
        if self.max_clients == 0 {
            return Err(E::MaxClients);
        }
        if self.max_blocks == 0 {
            return Err(E::MaxBlocks);
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(E::Ipv6Prefix(self.ipv6_prefix));
        }
        if self.cpu_half_life.is_zero() {
            return Err(E::CpuHalfLife);
        }
        if self.block_duration.is_zero() {
            return Err(E::BlockDuration);
        }
        Ok(())
    }

    /// The parameters models are scored with: `min_std` and `min_clients`.
    pub fn model_params(&self) -> ModelParams {
        ModelParams {
            min_std: self.min_std,
            min_clients: self.min_clients,
            fallback: self.fallback,
            ..ModelParams::default()
        }
    }
}

/// Static guards: hard caps, active in every mode. A value of 0 turns that guard off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardLimits {
    /// Concurrent connections per client, including the new one. Default: 1024.
    pub max_connections_per_client: u64,
    /// Bytes the proxy may hold for one client. Default: 256 MiB.
    pub max_memory_per_client: u64,
    /// HTTP/2 PING frames per connection per second. Default: 100.
    pub ping_per_sec: u32,
    /// HTTP/2 SETTINGS frames per connection per second. Default: 100.
    pub settings_per_sec: u32,
    /// HTTP/2 RST_STREAM frames received per connection per second. Default: 200.
    pub rst_stream_per_sec: u32,
    /// HTTP/2 empty DATA frames (no payload, no END_STREAM) per connection per second.
    /// Default: 200.
    pub empty_data_per_sec: u32,
    /// CONTINUATION frames in one header block. Default: 32.
    pub max_continuation_per_block: u32,
    /// HTTP/2 WINDOW_UPDATE frames received per connection per second. A legitimate client
    /// sends about one per DATA frame it reads, so the default leaves room for ~16 MB/s of
    /// 16 KiB frames. Default: 1000.
    pub window_update_per_sec: u32,
    /// HTTP/2 PRIORITY frames received per connection per second (deprecated by RFC 9113;
    /// browsers send a handful per page). Default: 100.
    pub priority_per_sec: u32,
    /// HTTP/2 frames of unknown or extension types received per connection per second (the
    /// receiver must ignore them, RFC 9113 §4.1, so they only cost). Default: 10.
    pub unknown_frame_per_sec: u32,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            max_connections_per_client: 1024,
            max_memory_per_client: 256 << 20,
            ping_per_sec: 100,
            settings_per_sec: 100,
            rst_stream_per_sec: 200,
            empty_data_per_sec: 200,
            max_continuation_per_block: 32,
            window_update_per_sec: 1000,
            priority_per_sec: 100,
            unknown_frame_per_sec: 10,
        }
    }
}

/// A [`LimiterConfig`] value that [`LimiterConfig::validate`] refuses. `Display` names the
/// field as `limiter.<field>`; [`LimiterConfigError::field`] and
/// [`LimiterConfigError::problem`] give the parts, for a caller that names the field its own way
/// (the proxy names the config file's key).
#[derive(Clone, Debug, PartialEq)]
pub enum LimiterConfigError {
    /// `after_training` is neither defence nor monitor.
    AfterTraining(Mode),
    /// A metric's threshold is not finite or is negative.
    Threshold(Metric, InvalidThreshold),
    /// A metric's `min_std` (the value given) is not finite or is not > 0.
    MinStd(Metric, f64),
    /// `min_clients` is 0.
    MinClients,
    /// `max_clients` is 0.
    MaxClients,
    /// `max_blocks` is 0.
    MaxBlocks,
    /// `ipv6_prefix` (the value given) is not 1..=128.
    Ipv6Prefix(u8),
    /// `cpu_half_life` is zero.
    CpuHalfLife,
    /// `block_duration` is zero.
    BlockDuration,
}

impl LimiterConfigError {
    /// The [`LimiterConfig`] field at fault, e.g. `"ipv6_prefix"` or `"thresholds.cpu"`.
    pub fn field(&self) -> String {
        use LimiterConfigError as E;
        match self {
            E::AfterTraining(_) => "after_training".into(),
            E::Threshold(m, _) => format!("thresholds.{m}"),
            E::MinStd(m, _) => format!("min_std.{m}"),
            E::MinClients => "min_clients".into(),
            E::MaxClients => "max_clients".into(),
            E::MaxBlocks => "max_blocks".into(),
            E::Ipv6Prefix(_) => "ipv6_prefix".into(),
            E::CpuHalfLife => "cpu_half_life".into(),
            E::BlockDuration => "block_duration".into(),
        }
    }

    /// What is wrong with the value, without the field's name: e.g. `must be >= 1`.
    pub fn problem(&self) -> impl fmt::Display + '_ {
        Problem(self)
    }
}

impl fmt::Display for LimiterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limiter.{}: {}", self.field(), self.problem())
    }
}

impl std::error::Error for LimiterConfigError {}

/// [`LimiterConfigError::problem`].
struct Problem<'a>(&'a LimiterConfigError);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LimiterConfigError as E;
        match self.0 {
            E::AfterTraining(_) => f.write_str("must be defence or monitor"),
            E::Threshold(_, e) => e.fmt(f),
            E::MinStd(..) => f.write_str("must be finite and > 0"),
            E::MinClients | E::MaxClients | E::MaxBlocks => f.write_str("must be >= 1"),
            E::Ipv6Prefix(_) => f.write_str("must be 1..=128"),
            E::CpuHalfLife | E::BlockDuration => f.write_str("must be > 0"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(LimiterConfig::default().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let c = LimiterConfig {
            ipv6_prefix: 0,
            ..LimiterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field(), "ipv6_prefix");
        let mut c = LimiterConfig::default();
        c.thresholds[Metric::Cpu.index()] = f64::NAN;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "limiter.thresholds.cpu: threshold NaN must be finite and >= 0 (standard deviations)"
        );
        let mut c = LimiterConfig::default();
        c.min_std[Metric::Connections.index()] = 0.0;
        assert_eq!(c.validate().unwrap_err().field(), "min_std.connections");
        let c = LimiterConfig {
            after_training: Mode::Training,
            ..LimiterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field(), "after_training");
        let c = LimiterConfig {
            max_clients: 0,
            ..LimiterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field(), "max_clients");
    }
}
