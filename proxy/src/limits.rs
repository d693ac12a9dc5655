//! `[limits]` from the config file onto the limiter's config, plus the settings only the proxy
//! uses (what a block does to the connection, what memory costs to charge).
//!
//! Per-metric tables map by metric name, never by position: [`by_name`] destructures every
//! field of the config's table and matches every [`Metric`], so a metric added or reordered on
//! either side fails to compile here instead of moving a threshold.

use core::fmt;

use http::StatusCode;
use zgate_config::{AfterTraining, BlockActionKind, Limits, PerMetric, StartMode};
use zgate_limiter::{LimiterConfig, LimiterConfigError, Metric, Mode};

/// What a block does to a connection that has a request in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAction {
    /// TCP RST (HTTP/1), or GOAWAY and close (HTTP/2).
    Reset,
    /// Answer the requests in progress with `status` first, then close.
    Reply(StatusCode),
}

/// The `[limits]` settings the proxy applies itself, not the limiter: what a block does to a
/// connection, the memory charged per connection and per request, when SYNs are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// `limits.block_action` and `limits.block_status`.
    pub block_action: BlockAction,
    /// `limits.memory_per_connection`, bytes.
    pub memory_per_connection: u64,
    /// `limits.memory_per_stream`, bytes.
    pub memory_per_stream: u64,
    /// `limits.syn_drop_after`: refusals at accept before a blocked client's SYNs are dropped
    /// in the kernel; 0 = never.
    pub syn_drop_after: u32,
}

/// Default `limits.memory_per_connection`: hyper's read and write buffers and our state.
pub const DEFAULT_MEMORY_PER_CONNECTION: u64 = 16 * 1024;
/// Default `limits.memory_per_stream`: a request's state, headers and in-flight buffers.
pub const DEFAULT_MEMORY_PER_STREAM: u64 = 4 * 1024;

/// Maps and checks `[limits]`; errors name the key (`limits.z.cpu`, ...).
pub fn from_config(l: &Limits) -> Result<(LimiterConfig, ProxyLimits), LimitsError> {
    let mut c = LimiterConfig::default();
    set(&mut c.mode, l.mode.map(start_mode));
    set(&mut c.after_training, l.after_training.map(after_training));
    set(&mut c.training_period, l.training_period);
    set(&mut c.block_duration, l.block_duration);
    set(&mut c.min_clients, l.min_clients);
    set(&mut c.max_clients, l.max_clients);
    set(&mut c.idle_expiry, l.client_idle_expiry);
    set(&mut c.ipv6_prefix, l.ipv6_prefix);
    set(&mut c.cpu_half_life, l.cpu_half_life);
    set(&mut c.max_blocks, l.max_blocks);
    set_per_metric(&mut c.thresholds, &l.z);
    set_per_metric(&mut c.enabled, &l.enabled);
    set_per_metric(&mut c.min_std, &l.min_std);
    set_per_metric(&mut c.fallback, &l.fallback);
    let g = &l.guards;
    set(
        &mut c.guards.max_connections_per_client,
        g.max_connections_per_client,
    );
    set(&mut c.guards.max_memory_per_client, g.max_memory_per_client);
    set(&mut c.guards.ping_per_sec, g.ping_per_sec);
    set(&mut c.guards.settings_per_sec, g.settings_per_sec);
    set(&mut c.guards.rst_stream_per_sec, g.rst_stream_per_sec);
    set(&mut c.guards.empty_data_per_sec, g.empty_data_per_sec);
    set(&mut c.guards.window_update_per_sec, g.window_update_per_sec);
    set(&mut c.guards.priority_per_sec, g.priority_per_sec);
    set(&mut c.guards.unknown_frame_per_sec, g.unknown_frame_per_sec);
    set(
        &mut c.guards.max_continuation_per_block,
        g.max_continuation_per_block,
    );
    set(&mut c.max_glitches, g.max_glitches);
    c.validate().map_err(LimitsError::Limiter)?;

    let status = l.block_status.unwrap_or(403);
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or(LimitsError::BlockStatus(status))?;
    let block_action = match l.block_action {
        None | Some(BlockActionKind::Reset) => BlockAction::Reset,
        Some(BlockActionKind::Reply) => BlockAction::Reply(status),
    };
    Ok((
        c,
        ProxyLimits {
            block_action,
            memory_per_connection: l
                .memory_per_connection
                .unwrap_or(DEFAULT_MEMORY_PER_CONNECTION),
            memory_per_stream: l.memory_per_stream.unwrap_or(DEFAULT_MEMORY_PER_STREAM),
            syn_drop_after: l.syn_drop_after.unwrap_or(0),
        },
    ))
}

/// Why `[limits]` cannot be applied. `Display` names the key as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitsError {
    /// A value the limiter refuses (a threshold, a std floor, a size of zero, ...).
    Limiter(LimiterConfigError),
    /// `limits.block_status` (the value given) is not a 4xx or 5xx status.
    BlockStatus(u16),
}

impl LimitsError {
    /// The key at fault, as written in the file: `limits.z.cpu`, `limits.block_status`, ...
    pub fn key(&self) -> String {
        use LimiterConfigError as E;
        let LimitsError::Limiter(e) = self else {
            return "limits.block_status".into();
        };
        match e {
            E::AfterTraining(_) => "limits.after_training".into(),
            E::Threshold(m, _) => format!("limits.z.{m}"),
            E::MinStd(m, _) => format!("limits.min_std.{m}"),
            E::MinClients => "limits.min_clients".into(),
            E::MaxClients => "limits.max_clients".into(),
            E::MaxBlocks => "limits.max_blocks".into(),
            E::Ipv6Prefix(_) => "limits.ipv6_prefix".into(),
            E::CpuHalfLife => "limits.cpu_half_life".into(),
            E::BlockDuration => "limits.block_duration".into(),
        }
    }
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: ", self.key())?;
        match self {
            LimitsError::Limiter(e) => e.problem().fmt(f),
            LimitsError::BlockStatus(s) => write!(f, "{s} is not a 4xx or 5xx status"),
        }
    }
}

impl std::error::Error for LimitsError {}

fn start_mode(m: StartMode) -> Mode {
    match m {
        StartMode::Disabled => Mode::Disabled,
        StartMode::Training => Mode::Training,
        StartMode::Defence => Mode::Defence,
        StartMode::Monitor => Mode::Monitor,
    }
}

fn after_training(m: AfterTraining) -> Mode {
    match m {
        AfterTraining::Defence => Mode::Defence,
        AfterTraining::Monitor => Mode::Monitor,
    }
}

/// Sets each metric's entry of `field` that `table` gives, by name.
fn set_per_metric<T: Copy>(field: &mut [T; Metric::COUNT], table: &PerMetric<T>) {
    let given = by_name(table);
    for m in Metric::ALL {
        set(&mut field[m.index()], given(m));
    }
}

/// The value `table` gives each metric. Every field is destructured and every metric matched, so
/// a metric added to either side does not compile until it is mapped here.
fn by_name<T: Copy>(table: &PerMetric<T>) -> impl Fn(Metric) -> Option<T> + '_ {
    let PerMetric {
        connections,
        requests_nonidempotent,
        requests,
        memory,
        cpu,
        fragmentation,
    } = table;
    move |m| match m {
        Metric::Connections => *connections,
        Metric::RequestsNonidempotent => *requests_nonidempotent,
        Metric::Requests => *requests,
        Metric::Memory => *memory,
        Metric::Cpu => *cpu,
        Metric::Fragmentation => *fragmentation,
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_keep_the_limiter_defaults() {
        let (c, p) = from_config(&Limits::default()).unwrap();
        assert_eq!(c, LimiterConfig::default());
        assert_eq!(p.block_action, BlockAction::Reset);
        assert_eq!(p.memory_per_connection, DEFAULT_MEMORY_PER_CONNECTION);
        assert_eq!(p.syn_drop_after, 0);
    }

    /// Unknown `mode` and `block_action` words are refused when the file is read, naming the
    /// key: see the config crate's `limits` tests.
    #[test]
    fn values_map_and_bad_ones_name_the_key() {
        let mut l = Limits {
            mode: Some(StartMode::Training),
            after_training: Some(AfterTraining::Monitor),
            block_action: Some(BlockActionKind::Reply),
            block_status: Some(429),
            ..Limits::default()
        };
        l.z.cpu = Some(2.5);
        l.guards.ping_per_sec = Some(7);
        let (c, p) = from_config(&l).unwrap();
        assert_eq!(c.mode, Mode::Training);
        assert_eq!(c.after_training, Mode::Monitor);
        assert_eq!(c.thresholds[Metric::Cpu.index()], 2.5);
        assert_eq!(c.guards.ping_per_sec, 7);
        assert_eq!(
            p.block_action,
            BlockAction::Reply(StatusCode::TOO_MANY_REQUESTS)
        );

        l.block_status = Some(200);
        let e = from_config(&l).unwrap_err();
        assert_eq!(e, LimitsError::BlockStatus(200));
        assert!(e.to_string().contains("limits.block_status"), "{e}");
        l.block_status = None;
        l.z.memory = Some(-1.0);
        let e = from_config(&l).unwrap_err().to_string();
        assert!(e.contains("memory"), "{e}");
        assert!(e.starts_with("`limits.z.memory`: "), "{e}");
        l.z.memory = None;
        l.min_std.fragmentation = Some(0.0);
        let e = from_config(&l).unwrap_err().to_string();
        assert!(e.starts_with("`limits.min_std.fragmentation`: "), "{e}");
        l.min_std.fragmentation = None;
        l.ipv6_prefix = Some(0);
        let e = from_config(&l).unwrap_err().to_string();
        assert!(e.starts_with("`limits.ipv6_prefix`: "), "{e}");
    }

    #[test]
    fn every_metric_maps_to_its_own_name() {
        let table = PerMetric {
            connections: Some(1.0),
            requests_nonidempotent: Some(2.0),
            requests: Some(3.0),
            memory: Some(4.0),
            cpu: Some(5.0),
            fragmentation: Some(6.0),
        };
        let l = Limits {
            z: table.clone(),
            min_std: table,
            ..Limits::default()
        };
        let (c, _) = from_config(&l).unwrap();
        for (m, want) in [
            (Metric::Connections, 1.0),
            (Metric::RequestsNonidempotent, 2.0),
            (Metric::Requests, 3.0),
            (Metric::Memory, 4.0),
            (Metric::Cpu, 5.0),
            (Metric::Fragmentation, 6.0),
        ] {
            assert_eq!(c.thresholds[m.index()], want, "{m}");
            assert_eq!(c.min_std[m.index()], want, "{m}");
        }
    }
}
