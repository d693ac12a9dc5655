//! Static guards: hard caps that act in every mode, model or not.
//!
//! The per-client caps (connections, memory) are checked by the limiter against the client's
//! live counters. The HTTP/2 caps are per connection and live here: control frames counted in
//! fixed one-second windows (a window starts at the first frame after the previous one ended, so
//! a burst straddling two windows may reach twice the cap, never more), and CONTINUATION frames
//! counted per header block.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::GuardLimits;
use crate::verdict::Guard;

const SECOND_NS: u64 = 1_000_000_000;

/// An HTTP/2 frame seen by the proxy's read tap, for the static guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Frame {
    /// A PING frame (ACKs included).
    Ping,
    /// A SETTINGS frame (ACKs included).
    Settings,
    /// A RST_STREAM frame from the client.
    RstStream,
    /// A RST_STREAM frame the proxy's own HTTP/2 stack sent to the client: a client that makes
    /// the server reset streams (MadeYouReset) costs as much as one that resets them itself,
    /// so these count against the same per-second cap.
    ServerRstStream,
    /// The proxy's own HTTP/2 stack ended the connection with GOAWAY `ENHANCE_YOUR_CALM` (it
    /// detected abuse, e.g. too many streams reset before being served: Rapid Reset): the
    /// client is blocked at once under [`Guard::H2Abuse`].
    EnhanceYourCalm,
    /// A DATA frame with an empty payload and no END_STREAM flag.
    EmptyData,
    /// A HEADERS or PUSH_PROMISE frame: starts a header block.
    Headers {
        /// The END_HEADERS flag: the block is complete in this frame.
        end_headers: bool,
    },
    /// A CONTINUATION frame of the current header block.
    Continuation {
        /// The END_HEADERS flag: the block ends with this frame.
        end_headers: bool,
    },
    /// A WINDOW_UPDATE frame from the client.
    WindowUpdate,
    /// A PRIORITY frame from the client.
    Priority,
    /// A frame of a type RFC 9113 does not define (receivers ignore it, so it only costs).
    Unknown,
}

/// The rate-capped frame kinds. A kind's discriminant indexes `LiveGuardLimits::per_sec` and
/// `FrameGuards::counts`; its cap and its guard are matched by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rated {
    Ping,
    Settings,
    RstStream,
    EmptyData,
    WindowUpdate,
    Priority,
    Unknown,
}

impl Rated {
    const COUNT: usize = 7;
    const ALL: [Rated; Rated::COUNT] = [
        Rated::Ping,
        Rated::Settings,
        Rated::RstStream,
        Rated::EmptyData,
        Rated::WindowUpdate,
        Rated::Priority,
        Rated::Unknown,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The guard a frame of this kind over its cap trips.
    fn guard(self) -> Guard {
        match self {
            Rated::Ping => Guard::Ping,
            Rated::Settings => Guard::Settings,
            Rated::RstStream => Guard::RstStream,
            Rated::EmptyData => Guard::EmptyData,
            Rated::WindowUpdate => Guard::WindowUpdate,
            Rated::Priority => Guard::Priority,
            Rated::Unknown => Guard::UnknownFrame,
        }
    }

    /// This kind's cap in `limits`, frames per second.
    fn cap(self, limits: &GuardLimits) -> u32 {
        match self {
            Rated::Ping => limits.ping_per_sec,
            Rated::Settings => limits.settings_per_sec,
            Rated::RstStream => limits.rst_stream_per_sec,
            Rated::EmptyData => limits.empty_data_per_sec,
            Rated::WindowUpdate => limits.window_update_per_sec,
            Rated::Priority => limits.priority_per_sec,
            Rated::Unknown => limits.unknown_frame_per_sec,
        }
    }
}

/// The guard limits in force: a copy of [`GuardLimits`] in atomics, changeable at run time
/// (0 = off).
pub(crate) struct LiveGuardLimits {
    pub(crate) max_connections: AtomicU64,
    pub(crate) max_memory: AtomicU64,
    /// Indexed by [`Rated::index`].
    per_sec: [AtomicU32; Rated::COUNT],
    max_continuation: AtomicU32,
}

impl LiveGuardLimits {
    pub(crate) fn new(c: &GuardLimits) -> LiveGuardLimits {
        let g = LiveGuardLimits {
            max_connections: AtomicU64::new(0),
            max_memory: AtomicU64::new(0),
            per_sec: [const { AtomicU32::new(0) }; Rated::COUNT],
            max_continuation: AtomicU32::new(0),
        };
        g.store(c);
        g
    }

    pub(crate) fn store(&self, c: &GuardLimits) {
        let r = Ordering::Relaxed;
        self.max_connections.store(c.max_connections_per_client, r);
        self.max_memory.store(c.max_memory_per_client, r);
        for kind in Rated::ALL {
            self.per_sec[kind.index()].store(kind.cap(c), r);
        }
        self.max_continuation.store(c.max_continuation_per_block, r);
    }

    pub(crate) fn load(&self) -> GuardLimits {
        let r = Ordering::Relaxed;
        GuardLimits {
            max_connections_per_client: self.max_connections.load(r),
            max_memory_per_client: self.max_memory.load(r),
            ping_per_sec: self.rate(Rated::Ping),
            settings_per_sec: self.rate(Rated::Settings),
            rst_stream_per_sec: self.rate(Rated::RstStream),
            empty_data_per_sec: self.rate(Rated::EmptyData),
            max_continuation_per_block: self.max_continuation.load(r),
            window_update_per_sec: self.rate(Rated::WindowUpdate),
            priority_per_sec: self.rate(Rated::Priority),
            unknown_frame_per_sec: self.rate(Rated::Unknown),
        }
    }

    /// The cap of `kind` in force, frames per second (0 = off).
    fn rate(&self, kind: Rated) -> u32 {
        self.per_sec[kind.index()].load(Ordering::Relaxed)
    }

    /// `Some((guard, value))` if `value` is over the cap `limit` (0 = off).
    #[inline]
    pub(crate) fn over(limit: u64, value: u64, guard: Guard) -> Option<(Guard, u64)> {
        (limit != 0 && value > limit).then_some((guard, value))
    }
}

/// One connection's HTTP/2 frame counters. Atomics so the connection handle stays `Sync`;
/// frames of one connection come from its read tap, one at a time, so they never contend.
pub(crate) struct FrameGuards {
    /// Start of the current one-second window, ns.
    window: AtomicU64,
    /// Indexed by [`Rated::index`].
    counts: [AtomicU32; Rated::COUNT],
    /// CONTINUATION frames in the current header block.
    continuation: AtomicU32,
}

impl FrameGuards {
    pub(crate) fn new(now: u64) -> FrameGuards {
        FrameGuards {
            window: AtomicU64::new(now),
            counts: [const { AtomicU32::new(0) }; Rated::COUNT],
            continuation: AtomicU32::new(0),
        }
    }

    /// Counts `frame` at `now`; `Some((guard, count))` if a cap is exceeded.
    pub(crate) fn frame(
        &self,
        frame: H2Frame,
        now: u64,
        limits: &LiveGuardLimits,
    ) -> Option<(Guard, u64)> {
        let r = Ordering::Relaxed;
        let kind = match frame {
            H2Frame::Ping => Rated::Ping,
            H2Frame::Settings => Rated::Settings,
            H2Frame::RstStream | H2Frame::ServerRstStream => Rated::RstStream,
            H2Frame::EmptyData => Rated::EmptyData,
            H2Frame::WindowUpdate => Rated::WindowUpdate,
            H2Frame::Priority => Rated::Priority,
            H2Frame::Unknown => Rated::Unknown,
            H2Frame::EnhanceYourCalm => return Some((Guard::H2Abuse, 1)),
            H2Frame::Headers { .. } => {
                self.continuation.store(0, r);
                return None;
            }
            H2Frame::Continuation { end_headers } => {
                let n = self.continuation.fetch_add(1, r).saturating_add(1);
                if end_headers {
                    self.continuation.store(0, r);
                }
                let max = limits.max_continuation.load(r);
                return LiveGuardLimits::over(u64::from(max), u64::from(n), Guard::Continuation);
            }
        };
        let limit = limits.rate(kind);
        if limit == 0 {
            return None;
        }
        if now.saturating_sub(self.window.load(r)) >= SECOND_NS {
            self.window.store(now, r);
            for c in &self.counts {
                c.store(0, r);
            }
        }
        let n = self.counts[kind.index()].fetch_add(1, r).saturating_add(1);
        LiveGuardLimits::over(u64::from(limit), u64::from(n), kind.guard())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LiveGuardLimits {
        LiveGuardLimits::new(&GuardLimits {
            ping_per_sec: 3,
            settings_per_sec: 2,
            rst_stream_per_sec: 5,
            empty_data_per_sec: 0,
            max_continuation_per_block: 2,
            ..GuardLimits::default()
        })
    }

    #[test]
    fn rate_caps_fire_above_the_cap_within_one_second() {
        let l = limits();
        let g = FrameGuards::new(0);
        for i in 0..3 {
            assert_eq!(g.frame(H2Frame::Ping, i * 100_000_000, &l), None);
        }
        assert_eq!(
            g.frame(H2Frame::Ping, 900_000_000, &l),
            Some((Guard::Ping, 4))
        );
        // A new window starts one second after the last one started.
        assert_eq!(g.frame(H2Frame::Ping, 1_000_000_000, &l), None);
        // Kinds are counted separately; 0 turns a cap off.
        assert_eq!(g.frame(H2Frame::Settings, 1_000_000_001, &l), None);
        assert_eq!(g.frame(H2Frame::Settings, 1_000_000_002, &l), None);
        assert_eq!(
            g.frame(H2Frame::Settings, 1_000_000_003, &l),
            Some((Guard::Settings, 3))
        );
        for _ in 0..1000 {
            assert_eq!(g.frame(H2Frame::EmptyData, 1_000_000_004, &l), None);
        }
    }

    #[test]
    fn continuation_is_counted_per_header_block() {
        let l = limits();
        let g = FrameGuards::new(0);
        assert_eq!(
            g.frame(H2Frame::Headers { end_headers: false }, 0, &l),
            None
        );
        assert_eq!(
            g.frame(H2Frame::Continuation { end_headers: false }, 0, &l),
            None
        );
        assert_eq!(
            g.frame(H2Frame::Continuation { end_headers: true }, 0, &l),
            None
        );
        // A new block starts from zero.
        assert_eq!(
            g.frame(H2Frame::Headers { end_headers: false }, 0, &l),
            None
        );
        assert_eq!(
            g.frame(H2Frame::Continuation { end_headers: false }, 0, &l),
            None
        );
        assert_eq!(
            g.frame(H2Frame::Continuation { end_headers: false }, 0, &l),
            None
        );
        assert_eq!(
            g.frame(H2Frame::Continuation { end_headers: false }, 0, &l),
            Some((Guard::Continuation, 3))
        );
    }

    #[test]
    fn limits_round_trip() {
        let c = GuardLimits::default();
        assert_eq!(LiveGuardLimits::new(&c).load(), c);
        // Distinct caps come back under their own names.
        let c = GuardLimits {
            ping_per_sec: 1,
            settings_per_sec: 2,
            rst_stream_per_sec: 3,
            empty_data_per_sec: 4,
            window_update_per_sec: 5,
            priority_per_sec: 6,
            unknown_frame_per_sec: 7,
            ..GuardLimits::default()
        };
        assert_eq!(LiveGuardLimits::new(&c).load(), c);
    }

    #[test]
    fn each_rated_kind_trips_its_own_guard() {
        let l = LiveGuardLimits::new(&GuardLimits {
            ping_per_sec: 1,
            settings_per_sec: 1,
            rst_stream_per_sec: 1,
            empty_data_per_sec: 1,
            window_update_per_sec: 1,
            priority_per_sec: 1,
            unknown_frame_per_sec: 1,
            ..GuardLimits::default()
        });
        for (frame, guard) in [
            (H2Frame::Ping, Guard::Ping),
            (H2Frame::Settings, Guard::Settings),
            (H2Frame::RstStream, Guard::RstStream),
            (H2Frame::ServerRstStream, Guard::RstStream),
            (H2Frame::EmptyData, Guard::EmptyData),
            (H2Frame::WindowUpdate, Guard::WindowUpdate),
            (H2Frame::Priority, Guard::Priority),
            (H2Frame::Unknown, Guard::UnknownFrame),
        ] {
            let g = FrameGuards::new(0);
            assert_eq!(g.frame(frame, 0, &l), None);
            assert_eq!(g.frame(frame, 1, &l), Some((guard, 2)), "{frame:?}");
        }
    }
}
