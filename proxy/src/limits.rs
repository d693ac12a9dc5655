//! `[limits]` from the config file onto the limiter's config, plus the settings only the proxy
//! uses (what a block does to the connection, what memory costs to charge).

use http::StatusCode;
use zgate_config::Limits;
use zgate_limiter::{LimiterConfig, Metric, Mode};

/// What a block does to a connection that has a request in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAction {
    /// TCP RST (HTTP/1), or GOAWAY and close (HTTP/2).
    Reset,
    /// Answer the requests in progress with `status` first, then close.
    Reply(StatusCode),
}

/// The proxy's own limit settings.
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

/// Maps and validates `[limits]`; errors name the key (`limits.z.cpu`, ...).
pub fn from_config(l: &Limits) -> Result<(LimiterConfig, ProxyLimits), String> {
    let mut c = LimiterConfig::default();
    if let Some(m) = &l.mode {
        c.mode = m
            .parse::<Mode>()
            .map_err(|e| format!("`limits.mode`: {e}"))?;
    }
    if let Some(m) = &l.after_training {
        c.after_training = m
            .parse::<Mode>()
            .map_err(|e| format!("`limits.after_training`: {e}"))?;
    }
    set(&mut c.training_period, l.training_period);
    set(&mut c.block_duration, l.block_duration);
    set(&mut c.min_clients, l.min_clients);
    set(&mut c.max_clients, l.max_clients);
    set(&mut c.idle_expiry, l.client_idle_expiry);
    set(&mut c.ipv6_prefix, l.ipv6_prefix);
    set(&mut c.cpu_half_life, l.cpu_half_life);
    set(&mut c.max_blocks, l.max_blocks);
    for (i, (_, v)) in l.z.entries().into_iter().enumerate() {
        set(&mut c.thresholds[i], v);
    }
    for (i, (_, v)) in l.enabled.entries().into_iter().enumerate() {
        set(&mut c.enabled[i], v);
    }
    for (i, (_, v)) in l.min_std.entries().into_iter().enumerate() {
        set(&mut c.min_std[i], v);
    }
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
    set(
        &mut c.guards.max_continuation_per_block,
        g.max_continuation_per_block,
    );
    c.validate()
        .map_err(|e| format!("`{}`: {}", file_key(&e.field), e.reason))?;
    debug_assert_eq!(Metric::ALL.len(), l.z.entries().len());

    let status = l.block_status.unwrap_or(403);
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| format!("`limits.block_status`: {status} is not a 4xx or 5xx status"))?;
    let block_action = match l.block_action.as_deref() {
        None | Some("reset") => BlockAction::Reset,
        Some("reply") => BlockAction::Reply(status),
        Some(other) => {
            return Err(format!(
                "`limits.block_action`: unknown action {other:?}: use \"reset\" or \"reply\""
            ))
        }
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

/// The file's key of a limiter config field: `thresholds.cpu` is written `limits.z.cpu`,
/// `idle_expiry` is `limits.client_idle_expiry`; the rest keep their name under `limits.`.
fn file_key(field: &str) -> String {
    if let Some(metric) = field.strip_prefix("thresholds.") {
        return format!("limits.z.{metric}");
    }
    match field {
        "idle_expiry" => "limits.client_idle_expiry".to_owned(),
        other => format!("limits.{other}"),
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

    #[test]
    fn values_map_and_bad_ones_name_the_key() {
        let mut l = Limits {
            mode: Some("training".into()),
            block_action: Some("reply".into()),
            block_status: Some(429),
            ..Limits::default()
        };
        l.z.cpu = Some(2.5);
        l.guards.ping_per_sec = Some(7);
        let (c, p) = from_config(&l).unwrap();
        assert_eq!(c.mode, Mode::Training);
        assert_eq!(c.thresholds[Metric::Cpu.index()], 2.5);
        assert_eq!(c.guards.ping_per_sec, 7);
        assert_eq!(
            p.block_action,
            BlockAction::Reply(StatusCode::TOO_MANY_REQUESTS)
        );

        l.mode = Some("offence".into());
        assert!(from_config(&l).unwrap_err().contains("limits.mode"));
        l.mode = None;
        l.block_action = Some("explode".into());
        assert!(from_config(&l).unwrap_err().contains("limits.block_action"));
        l.block_action = None;
        l.block_status = Some(200);
        assert!(from_config(&l).unwrap_err().contains("limits.block_status"));
        l.block_status = None;
        l.z.memory = Some(-1.0);
        let e = from_config(&l).unwrap_err();
        assert!(e.starts_with("`limits.z.memory`"), "{e}");
    }
}
