//! Glitches seen by the HTTP/2 taps (see `zgate_limiter::Glitch`): streams the client reset
//! before their response started (Rapid Reset, also below h2's own limits), streams the server
//! reset, and connections the server ended with an error code (a protocol error the client
//! caused, an oversized header block, h2's own abuse detection: GOAWAY `ENHANCE_YOUR_CALM` is a
//! counted event, not a block by itself).
//!
//! The read and write taps of one connection share [`Pending`]: the streams the client opened
//! (a HEADERS frame on a new, higher stream id) whose response head the server has not sent
//! yet. A client RST_STREAM on a pending stream was sent before its response started: a glitch
//! (a reset after the response, e.g. a download cancelled, is not). The set holds at most the
//! streams waiting for their response (bounded by the server's concurrent stream limit, since
//! the server resets streams beyond it; and it stops growing at [`MAX_PENDING`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use zgate_limiter::Glitch;

use super::h2frames::{kind, FrameHeader};
use crate::account::meter::Meter;

/// Streams remembered as pending at most; beyond, new streams are not tracked.
const MAX_PENDING: usize = 1024;

/// GOAWAY error code `NO_ERROR` (RFC 9113 §7): a graceful end, not a glitch.
const NO_ERROR: u32 = 0;

/// The streams of one connection waiting for their response head.
#[derive(Debug, Default, Clone)]
pub struct Pending(Arc<Mutex<Streams>>);

#[derive(Debug, Default)]
struct Streams {
    waiting: HashSet<u32>,
    /// The highest stream id the client opened: a HEADERS frame on a lower one is trailers.
    last_opened: u32,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        // Plain data, consistent after every statement: a poisoned lock is usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read tap: a frame from the client. Tracks new streams; a RST_STREAM on a stream still
    /// waiting for its response is a glitch.
    pub fn client_frame(&self, h: &FrameHeader, meter: &Meter) {
        match h.kind {
            kind::HEADERS => {
                let mut s = self.lock();
                if h.stream > s.last_opened {
                    s.last_opened = h.stream;
                    if s.waiting.len() < MAX_PENDING {
                        s.waiting.insert(h.stream);
                    }
                }
            }
            kind::RST_STREAM => {
                let early = self.lock().waiting.remove(&h.stream);
                if early {
                    meter.glitch(Glitch::AbandonedRequest);
                }
            }
            _ => {}
        }
    }

    /// Write tap: a frame the server sends. A response head (or the server's reset) ends the
    /// wait; the server's own RST_STREAMs are glitches.
    pub fn server_frame(&self, h: &FrameHeader, meter: &Meter) {
        match h.kind {
            kind::HEADERS => {
                self.lock().waiting.remove(&h.stream);
            }
            kind::RST_STREAM => {
                self.lock().waiting.remove(&h.stream);
                meter.glitch(Glitch::StreamError);
            }
            _ => {}
        }
    }
}

/// Write tap: the server ended the connection with GOAWAY `error`.
pub fn server_goaway(error: u32, meter: &Meter) {
    if error != NO_ERROR {
        meter.glitch(Glitch::ConnectionError);
    }
}
