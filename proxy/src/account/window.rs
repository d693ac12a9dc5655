//! What of a client's held request bytes is charged to it (metric M): only what exceeds the
//! inbound window zgate itself granted on the connection.
//!
//! A client that sends a body at full speed fills whatever zgate lets it send before the
//! backend drains it: on HTTP/2 the flow-control window hyper grants (its connection window,
//! [`H2_CONNECTION_WINDOW`]). Those bytes are zgate's choice, not the client's abuse:
//! charging them made a newcomer's fast upload score as an outlier on memory after a training
//! that saw no uploads. So the held request bytes of an HTTP/2 connection are charged beyond
//! its grant only (both in training and in defence, so the model sees the same rule). HTTP/1
//! has no window and grants nothing: what hyper buffers of it is capped at twice its read
//! buffer and charged, so a large head being received (slowloris) still counts. What a slow reader pins (response bytes) and the fixed per-connection and
//! per-request costs are charged in full; a client that pins request buffers on many
//! connections is charged their fixed costs and counted on connections.

/// hyper's HTTP/2 server windows, set explicitly so the grant below is what the client gets:
/// 1 MiB for the connection (hyper's default).
pub const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// The initial window of each HTTP/2 stream: 1 MiB (hyper's default).
pub const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The part of `held` request bytes charged when `granted` bytes are free.
#[inline]
pub fn charged(held: u64, granted: u64) -> u64 {
    held.saturating_sub(granted)
}

/// The change of the charge when held request bytes go from `before` to `after`.
#[inline]
pub fn charge_delta(before: u64, after: u64, granted: u64) -> i64 {
    charged(after, granted) as i64 - charged(before, granted) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_exceeds_the_grant_is_charged_and_deltas_add_up() {
        let g = 1000;
        assert_eq!(charge_delta(0, 1000, g), 0, "within the grant: free");
        assert_eq!(charge_delta(1000, 1500, g), 500);
        assert_eq!(charge_delta(900, 1500, g), 500, "straddling the grant");
        assert_eq!(charge_delta(1500, 200, g), -500, "released below it");
        // Any path from 0 back to 0 charges nothing in all.
        let path = [0, 700, 2500, 1200, 4000, 10, 0];
        let sum: i64 = path.windows(2).map(|w| charge_delta(w[0], w[1], g)).sum();
        assert_eq!(sum, 0);
        assert_eq!(charge_delta(0, 5, 0), 5, "no grant: all charged");
    }
}
