//! Glitches: per-client counts of the things a client did wrong, as HAProxy counts "glitches".
//!
//! A glitch is an event the client caused that costs the proxy work without serving anyone: a
//! request it abandoned before its response started (an HTTP/2 stream it reset, Rapid Reset),
//! a stream the proxy's HTTP/2 stack reset because of it (MadeYouReset), a connection that
//! ended in a protocol error (GOAWAY with an error code; an HTTP/1 request hyper answered with
//! 400), and an oversized header block. Each has a weight ([`Glitch::weight`]); a client whose
//! weighted glitches within one fixed 10-second window exceed `max_glitches` is blocked under
//! [`crate::Guard::Glitches`], in every mode. The count is per client, not per connection, so an
//! attacker that reconnects after each error is still caught.
//!
//! Windows are fixed, aligned on the first glitch after the previous window ended: a burst
//! across two windows may reach twice the cap, never more. The state is one `AtomicU64` per
//! client (window start in whole seconds, 32 bits; weighted count, 32 bits).

use std::sync::atomic::{AtomicU64, Ordering};

/// The window glitches are counted in, seconds.
pub const GLITCH_WINDOW_SECS: u64 = 10;
const SECOND_NS: u64 = 1_000_000_000;

/// One thing a client did wrong; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glitch {
    /// A request ended before its response started: the client reset its HTTP/2 stream (or
    /// closed its HTTP/1 connection) while the proxy was still waiting for the backend. Weight
    /// 1: browsers cancel some requests.
    AbandonedRequest,
    /// The proxy's HTTP/2 stack reset one of the client's streams (RST_STREAM sent). Weight 1.
    StreamError,
    /// The connection ended in a protocol error the client caused: HTTP/2 GOAWAY with an error
    /// code other than NO_ERROR, or an HTTP/1 request answered 400 by the parser. Weight 10.
    ConnectionError,
    /// A header block over the proxy's header list limit. Weight 10: a single one costs the
    /// request only; a flood blocks.
    OversizedHeaders,
}

impl Glitch {
    /// How much this glitch counts against `max_glitches`.
    pub fn weight(self) -> u32 {
        match self {
            Glitch::AbandonedRequest => 1,
            Glitch::StreamError => 1,
            Glitch::ConnectionError => 10,
            Glitch::OversizedHeaders => 10,
        }
    }
}

/// One client's glitch window.
#[derive(Debug, Default)]
pub(crate) struct GlitchWindow(AtomicU64);

impl GlitchWindow {
    /// Counts `weight` at `now` (ns); returns the weighted count of the current window.
    pub(crate) fn add(&self, weight: u32, now: u64) -> u64 {
        // Whole seconds wrap at 2^32 (136 years): a window compares by difference.
        let sec = (now / SECOND_NS) as u32;
        let r = Ordering::Relaxed;
        let mut count = 0;
        let _ = self.0.fetch_update(r, r, |packed| {
            let start = (packed >> 32) as u32;
            let n = packed as u32;
            let fresh = packed == 0 || u64::from(sec.wrapping_sub(start)) >= GLITCH_WINDOW_SECS;
            let (start, n) = if fresh {
                (sec, weight)
            } else {
                (start, n.saturating_add(weight))
            };
            count = u64::from(n);
            Some((u64::from(start) << 32) | u64::from(n))
        });
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_a_window_and_starts_over_after_it() {
        let w = GlitchWindow::default();
        assert_eq!(w.add(1, 5 * SECOND_NS), 1);
        assert_eq!(w.add(10, 9 * SECOND_NS), 11);
        assert_eq!(w.add(1, 14 * SECOND_NS + SECOND_NS - 1), 12);
        assert_eq!(w.add(1, 15 * SECOND_NS), 1);
    }
}
