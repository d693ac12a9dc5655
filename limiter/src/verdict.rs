//! What the limiter decided about one event, and why.

use core::fmt;

use zgate_training::Metric;

/// The outcome of one event. The limiter never acts: the caller (the proxy) does.
///
/// - `Allow`: carry on.
/// - `Block`: reset the connection (GOAWAY then close for HTTP/2). The client is on the block
///   list for `block_duration` and its further events return `Block` at once.
/// - `WouldBlock`: monitor mode only: the model would have blocked, nothing is enforced; the
///   caller should carry on and may log it (the limiter has counted it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Carry on.
    Allow,
    /// Cut the client off.
    Block {
        /// What fired.
        reason: Reason,
        /// The observed value, in the metric's or guard's unit (0 for [`Guard::Blocked`]).
        value: u64,
        /// The z-score for a metric (`(value - mean) / std`); 0.0 for a guard.
        z: f64,
    },
    /// Monitor mode: the model would have blocked. Same fields as `Block`.
    WouldBlock {
        /// What would have fired (always a [`Reason::Metric`]).
        reason: Reason,
        /// The observed value in the metric's unit.
        value: u64,
        /// The z-score.
        z: f64,
    },
}

impl Verdict {
    /// `true` for [`Verdict::Block`]: the caller must close the connection.
    #[inline]
    pub fn is_block(&self) -> bool {
        matches!(self, Verdict::Block { .. })
    }

    /// `true` for [`Verdict::Allow`].
    #[inline]
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// The reason of a `Block` or `WouldBlock`.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Verdict::Allow => None,
            Verdict::Block { reason, .. } | Verdict::WouldBlock { reason, .. } => Some(*reason),
        }
    }

    pub(crate) fn guard(guard: Guard, value: u64) -> Verdict {
        Verdict::Block {
            reason: Reason::Guard(guard),
            value,
            z: 0.0,
        }
    }
}

/// Why a client was (or would have been) blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The metric's z-score exceeded its threshold (defence or monitor mode).
    Metric(Metric),
    /// A static guard fired (any mode).
    Guard(Guard),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Metric(m) => write!(f, "metric:{}", m.name()),
            Reason::Guard(g) => write!(f, "guard:{}", g.name()),
        }
    }
}

/// The static guards: hard caps that act in every mode, model or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guard {
    /// The client is on the block list (its earlier violation, or a manual block).
    Blocked,
    /// The client table is full of clients that cannot be evicted; a new client is refused
    /// rather than grow memory. Does not put the client on the block list.
    TableFull,
    /// `max_connections_per_client` exceeded.
    Connections,
    /// `max_memory_per_client` exceeded.
    Memory,
    /// HTTP/2 PING frames per second per connection.
    Ping,
    /// HTTP/2 SETTINGS frames per second per connection.
    Settings,
    /// HTTP/2 RST_STREAM frames per second per connection.
    RstStream,
    /// HTTP/2 DATA frames with an empty payload (and no END_STREAM) per second per connection.
    EmptyData,
    /// HTTP/2 CONTINUATION frames in one header block.
    Continuation,
    /// The proxy's HTTP/2 stack found the client abusive (GOAWAY `ENHANCE_YOUR_CALM`).
    H2Abuse,
    /// `max_glitches`: the client's weighted protocol errors, abandoned requests and oversized
    /// header blocks in one 10-second window (see [`crate::Glitch`]).
    Glitches,
    /// HTTP/2 WINDOW_UPDATE frames per second per connection.
    WindowUpdate,
    /// HTTP/2 PRIORITY frames per second per connection.
    Priority,
    /// HTTP/2 frames of unknown types per second per connection.
    UnknownFrame,
}

impl Guard {
    /// Number of guards: 14.
    pub const COUNT: usize = 14;

    /// All guards, in index order.
    pub const ALL: [Guard; Guard::COUNT] = [
        Guard::Blocked,
        Guard::TableFull,
        Guard::Connections,
        Guard::Memory,
        Guard::Ping,
        Guard::Settings,
        Guard::RstStream,
        Guard::EmptyData,
        Guard::Continuation,
        Guard::H2Abuse,
        Guard::Glitches,
        Guard::WindowUpdate,
        Guard::Priority,
        Guard::UnknownFrame,
    ];

    /// Position in [`Guard::ALL`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable name for metrics and logs, e.g. `"rst_stream"`.
    pub fn name(self) -> &'static str {
        match self {
            Guard::Blocked => "blocked",
            Guard::TableFull => "table_full",
            Guard::Connections => "connections",
            Guard::Memory => "memory",
            Guard::Ping => "ping",
            Guard::Settings => "settings",
            Guard::RstStream => "rst_stream",
            Guard::EmptyData => "empty_data",
            Guard::Continuation => "continuation",
            Guard::H2Abuse => "h2_abuse",
            Guard::Glitches => "glitches",
            Guard::WindowUpdate => "window_update",
            Guard::Priority => "priority",
            Guard::UnknownFrame => "unknown_frame",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_indices_match_all() {
        for (i, g) in Guard::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
        }
        assert_eq!(
            Reason::Guard(Guard::RstStream).to_string(),
            "guard:rst_stream"
        );
        assert_eq!(Reason::Metric(Metric::Cpu).to_string(), "metric:cpu");
        assert!(Verdict::guard(Guard::Ping, 3).is_block());
        assert!(!Verdict::Allow.is_block());
    }
}
