//! `[limits]`: the adaptive limits and static guards, as written in the file.
//!
//! Every value is optional: an absent key keeps the limiter's documented default (the limiter
//! crate owns the defaults, so they live in one place). The modes and the block action are
//! parsed into enums here ([`StartMode`], [`AfterTraining`], [`BlockActionKind`]); the proxy
//! maps the section onto the limiter's config and checks the numbers there, naming the key on
//! error.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::choices::{AfterTraining, BlockActionKind, StartMode};
use crate::cidr::Cidr;
use crate::duration::serde_human_opt;

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Mode at start: `"disabled"`, `"training"`, `"defence"` or `"monitor"`. Default: the
    /// mode saved in `state_file` with its model, else `"disabled"`. When set, it wins over the
    /// saved mode. Read at start only: a reload does not change the mode (use the admin API).
    pub mode: Option<StartMode>,
    /// Where the learned model and the mode are saved (when training ends, when a model is
    /// imported, when the mode is changed through the admin API), with the runtime overrides and
    /// the manual blocks (when they change), and loaded from at start. Written mode 0600.
    /// Relative to the config file's directory. Default: none (nothing saved).
    pub state_file: Option<PathBuf>,
    /// How long training runs before it ends by itself; `"0"` = only on command. Default `"1h"`.
    #[serde(default, with = "serde_human_opt")]
    pub training_period: Option<Duration>,
    /// Mode after training ends: `"defence"` or `"monitor"`. Default `"defence"`.
    pub after_training: Option<AfterTraining>,
    /// How long a blocked client stays blocked. Default `"10m"`.
    #[serde(default, with = "serde_human_opt")]
    pub block_duration: Option<Duration>,
    /// What a block does to a connection with a request in progress: `"reset"` (TCP RST, or
    /// GOAWAY and close for HTTP/2) or `"reply"` (a `block_status` response first). Default
    /// `"reset"`.
    pub block_action: Option<BlockActionKind>,
    /// The status of the `"reply"` response. Default `403`.
    pub block_status: Option<u16>,
    /// After this many refusals at accept of a blocked client, its SYNs are dropped in the
    /// kernel until its block ends (Linux). Default `0`: never, every attempt gets a RST.
    pub syn_drop_after: Option<u32>,
    /// Clients a metric's population needs before it can block. Default `10`.
    pub min_clients: Option<u64>,
    /// Clients tracked at most; idle ones are evicted first. Default `4000000` (~1 GiB).
    pub max_clients: Option<usize>,
    /// A client with no open connection is forgotten after this. Default `"10m"`.
    #[serde(default, with = "serde_human_opt")]
    pub client_idle_expiry: Option<Duration>,
    /// IPv6 clients are aggregated to this prefix length. Default `64`.
    pub ipv6_prefix: Option<u8>,
    /// Half-life of the CPU EMA (metric `cpu`). Default `"1s"`.
    #[serde(default, with = "serde_human_opt")]
    pub cpu_half_life: Option<Duration>,
    /// Entries in the block list at most. Default `65536`.
    pub max_blocks: Option<usize>,
    /// Memory charged to a client per open connection, bytes (buffers and state). Default
    /// `16384`.
    pub memory_per_connection: Option<u64>,
    /// Memory charged to a client per request in flight, bytes. Default `4096`.
    pub memory_per_stream: Option<u64>,
    /// z-score thresholds per metric (`[limits.z]`): a real z, blocked when exceeded
    /// strictly. Default `3.0` each.
    #[serde(default)]
    pub z: PerMetric<f64>,
    /// Per-metric switches (`[limits.enabled]`). Default `true` each.
    #[serde(default)]
    pub enabled: PerMetric<bool>,
    /// Per-metric std floor in the metric's unit (`[limits.min_std]`).
    #[serde(default)]
    pub min_std: PerMetric<f64>,
    /// Per-metric static cap in the metric's unit (`[limits.fallback]`) that a metric learned
    /// from fewer than `min_clients` clients falls back to: values above it block. Defaults:
    /// connections 64, requests_nonidempotent 32, requests 256, memory 67108864 bytes,
    /// cpu 500000 ppm, fragmentation 100000.
    #[serde(default)]
    pub fallback: PerMetric<u64>,
    /// Static guards (`[limits.guards]`), active in every mode.
    #[serde(default)]
    pub guards: Guards,
    /// Clients never blocked (`["192.0.2.0/24", "2001:db8::/48", "198.51.100.7"]`): measured
    /// and shown by the admin API, but never blocked by a metric, a guard or the accept path,
    /// and never a training sample; a manual block covering only exempt addresses is refused.
    /// Applies on reload. Default: none.
    #[serde(default)]
    pub exempt: Vec<Cidr>,
}

/// One optional value per metric; keys are the metric names. The proxy maps it onto the
/// limiter's metrics by name (destructuring every field), never by position.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerMetric<T> {
    /// Concurrent connections.
    pub connections: Option<T>,
    /// In-flight non-idempotent requests.
    pub requests_nonidempotent: Option<T>,
    /// In-flight requests of any method.
    pub requests: Option<T>,
    /// Bytes held in the proxy.
    pub memory: Option<T>,
    /// CPU EMA, millionths of a core.
    pub cpu: Option<T>,
    /// Chunk fragmentation score.
    pub fragmentation: Option<T>,
}

/// `[limits.guards]`: hard caps, active in every mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    /// Concurrent connections per client. Default `1024`.
    pub max_connections_per_client: Option<u64>,
    /// Bytes held per client. Default `268435456` (256 MiB).
    pub max_memory_per_client: Option<u64>,
    /// HTTP/2 PING frames per connection per second. Default `100`.
    pub ping_per_sec: Option<u32>,
    /// HTTP/2 SETTINGS frames per connection per second. Default `100`.
    pub settings_per_sec: Option<u32>,
    /// HTTP/2 RST_STREAM frames per connection per second. Default `200`.
    pub rst_stream_per_sec: Option<u32>,
    /// HTTP/2 empty DATA frames (no END_STREAM) per connection per second. Default `200`.
    pub empty_data_per_sec: Option<u32>,
    /// CONTINUATION frames per header block. Default `32`.
    pub max_continuation_per_block: Option<u32>,
    /// Weighted glitches per client per 10-second window: streams reset before their response
    /// (1 each), streams the server reset (1), connections ended by a protocol error or an
    /// oversized header block (10). Above it the client is blocked (`guard:glitches`), in
    /// every mode. `0` turns it off. Default `100`.
    pub max_glitches: Option<u32>,
    /// HTTP/2 WINDOW_UPDATE frames per connection per second. Default `1000`.
    pub window_update_per_sec: Option<u32>,
    /// HTTP/2 PRIORITY frames per connection per second. Default `100`.
    pub priority_per_sec: Option<u32>,
    /// HTTP/2 frames of unknown types per connection per second. Default `10`.
    pub unknown_frame_per_sec: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn limits(section: &str) -> Result<Limits, crate::ConfigError> {
        let text = format!(
            "[[listener]]\naddr = \"127.0.0.1:8080\"\n[[backend]]\naddr = \"127.0.0.1:3000\"\n\
             [limits]\n{section}"
        );
        Config::parse(&text, Path::new("/etc/zgate")).map(|c| c.limits)
    }

    #[test]
    fn modes_and_block_action_are_parsed_at_load() {
        let l =
            limits("mode = \"defense\"\nafter_training = \"monitor\"\nblock_action = \"reply\"\n")
                .unwrap();
        assert_eq!(l.mode, Some(StartMode::Defence));
        assert_eq!(l.after_training, Some(AfterTraining::Monitor));
        assert_eq!(l.block_action, Some(BlockActionKind::Reply));
        for (bad, key) in [
            ("mode = \"offence\"", "limits.mode"),
            ("after_training = \"training\"", "limits.after_training"),
            ("block_action = \"explode\"", "limits.block_action"),
            ("block_action = 1", "block_action"),
        ] {
            let e = limits(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
