//! IO taps: observers of the client's byte stream between TLS and hyper (DESIGN.md §5).
//!
//! The read tap turns what arrives into limiter events: for HTTP/1, one chunk of the current
//! message per socket read (metric F) and the bytes read, held (M); for HTTP/2, the frame
//! headers: DATA and CONTINUATION payload sizes per message (F), inbound body bytes held (M),
//! and the control frames the static guards count. The write tap (HTTP/2 only) sees the
//! server's own RST_STREAMs, response heads and ends, and a GOAWAY with which its HTTP/2 stack
//! gives up on a client; with the read tap's client RST_STREAMs they make the client's glitches
//! (`glitches.rs`). Bytes pass through untouched.

pub mod glitches;
pub mod h2frames;

use std::collections::HashMap;

use zgate_limiter::{Fragments, H2Frame};

use crate::account::meter::Meter;
use glitches::Pending;
use h2frames::{flag, kind, FrameEvent, FrameParser};

/// Streams whose body fragmentation is tracked at once per connection; more are not scored
/// (hyper refuses streams beyond `http.h2_max_concurrent_streams` anyway).
const MAX_TRACKED_STREAMS: usize = 512;

/// The read tap of one connection.
#[derive(Debug)]
pub enum ReadTap {
    /// HTTP/1.x: socket reads per message.
    Http1(Http1Tap),
    /// HTTP/2: frame headers.
    Http2(Box<Http2Tap>),
}

impl ReadTap {
    /// A tap for an HTTP/1 connection whose server buffers at most `max_buf` bytes read.
    pub fn http1(max_buf: usize) -> Self {
        ReadTap::Http1(Http1Tap {
            message: Fragments::default(),
            // What hyper can hold of what was read: its read buffer, plus the parsed head.
            max_held: 2 * max_buf as u64,
        })
    }

    /// A tap for an HTTP/2 connection (which starts with the client preface).
    pub fn http2() -> Self {
        ReadTap::Http2(Box::default())
    }

    /// Observes bytes just read from the client.
    #[inline]
    pub fn on_read(&mut self, data: &[u8], meter: &Meter) {
        match self {
            ReadTap::Http1(t) => t.on_read(data.len(), meter),
            ReadTap::Http2(t) => t.on_read(data, meter),
        }
    }
}

/// HTTP/1: each socket read is one chunk of the message being received, and its bytes are
/// held for the client (in hyper's read buffer, then as the parsed head) until forwarded as
/// body or until their request ends; never more than hyper can hold, so bytes read but never
/// forwarded as body (chunked framing) do not pile up over a long upload. Once the connection
/// is a tunnel (an upgrade switched to), reads are neither: see the http room's `upgrade.rs`.
#[derive(Debug)]
pub struct Http1Tap {
    message: Fragments,
    max_held: u64,
}

impl Http1Tap {
    fn on_read(&mut self, n: usize, meter: &Meter) {
        if meter.accounting().in_tunnel() {
            // A tunnel's bytes: no HTTP message, held in the tunnel's charged buffers.
            return;
        }
        meter.request_read(n, self.max_held);
        if meter.take_message_done() {
            self.message.reset();
        }
        meter.chunk(&mut self.message, n, meter.now());
    }
}

/// HTTP/2: frame headers, per-stream body fragmentation, the current header block.
#[derive(Debug, Default)]
pub struct Http2Tap {
    parser: FrameParser,
    /// The header block being received (HEADERS then CONTINUATIONs); one at a time per
    /// connection (RFC 9113 §6.10).
    block: Fragments,
    /// Request bodies being received, by stream.
    bodies: HashMap<u32, Fragments>,
    /// Streams waiting for their response, shared with the write tap (see `glitches.rs`).
    pending: Pending,
}

impl Http2Tap {
    fn on_read(&mut self, data: &[u8], meter: &Meter) {
        let now = meter.now();
        let Http2Tap {
            parser,
            block,
            bodies,
            pending,
        } = self;
        parser.feed(data, |e| {
            let FrameEvent::Header(h) = e else { return };
            pending.client_frame(&h, meter);
            let len = h.len as usize;
            match h.kind {
                kind::DATA => {
                    let end = h.has(flag::END_STREAM);
                    if len == 0 {
                        if !end {
                            meter.h2_frame(H2Frame::EmptyData, now);
                        }
                    } else {
                        meter.request_received(len);
                        let tracked =
                            bodies.len() < MAX_TRACKED_STREAMS || bodies.contains_key(&h.stream);
                        if tracked {
                            let frag = bodies.entry(h.stream).or_default();
                            meter.chunk(frag, len, now);
                        }
                    }
                    if end {
                        bodies.remove(&h.stream);
                    }
                }
                kind::HEADERS | kind::PUSH_PROMISE => {
                    let end_headers = h.has(flag::END_HEADERS);
                    meter.h2_frame(H2Frame::Headers { end_headers }, now);
                    block.reset();
                    if !end_headers {
                        meter.chunk(block, len, now);
                    }
                }
                kind::CONTINUATION => {
                    let end_headers = h.has(flag::END_HEADERS);
                    meter.h2_frame(H2Frame::Continuation { end_headers }, now);
                    meter.chunk(block, len, now);
                    if end_headers {
                        block.reset();
                    }
                }
                kind::RST_STREAM => {
                    bodies.remove(&h.stream);
                    meter.h2_frame(H2Frame::RstStream, now);
                }
                other => {
                    if let Some(frame) = control_frame(other) {
                        meter.control_bytes(9 + len);
                        meter.h2_frame(frame, now);
                    }
                }
            }
        });
    }
}

/// The guard kind of a frame that carries no request, response or stream state: these are
/// rate-capped per connection and do not count as activity for `timeouts.idle`. GOAWAY and
/// the frame kinds handled apart (DATA, HEADERS, PUSH_PROMISE, CONTINUATION, RST_STREAM) are
/// not control frames here.
fn control_frame(k: u8) -> Option<H2Frame> {
    match k {
        kind::PING => Some(H2Frame::Ping),
        kind::SETTINGS => Some(H2Frame::Settings),
        kind::WINDOW_UPDATE => Some(H2Frame::WindowUpdate),
        kind::PRIORITY => Some(H2Frame::Priority),
        kind::GOAWAY => None,
        k if k > kind::CONTINUATION => Some(H2Frame::Unknown),
        _ => None,
    }
}

/// The write tap of an HTTP/2 connection: frames the server sends.
#[derive(Debug)]
pub struct Http2WriteTap {
    parser: FrameParser,
    pending: Pending,
}

impl Http2WriteTap {
    /// A tap for the server side of an HTTP/2 connection.
    pub fn new() -> Self {
        Http2WriteTap {
            parser: FrameParser::server(),
            pending: Pending::default(),
        }
    }

    /// The write tap of the HTTP/2 connection whose read tap is `read`: they share the streams
    /// waiting for their response. `None` for HTTP/1.
    pub fn of(read: &ReadTap) -> Option<Self> {
        match read {
            ReadTap::Http2(r) => Some(Http2WriteTap {
                parser: FrameParser::server(),
                pending: r.pending.clone(),
            }),
            ReadTap::Http1(_) => None,
        }
    }

    /// Observes bytes just written to the client.
    pub fn on_write(&mut self, data: &[u8], meter: &Meter) {
        let pending = &self.pending;
        self.parser.feed(data, |e| match e {
            FrameEvent::Header(h) => {
                if matches!(h.kind, kind::PING | kind::SETTINGS | kind::WINDOW_UPDATE) {
                    meter.control_bytes(9 + h.len as usize);
                }
                pending.server_frame(&h, meter);
                if h.kind == kind::RST_STREAM {
                    meter.h2_frame(H2Frame::ServerRstStream, meter.now());
                }
            }
            // Counted, not a block by itself (GOAWAY ENHANCE_YOUR_CALM included): one
            // oversized header block costs the request, a flood blocks.
            FrameEvent::GoAway { error, .. } => glitches::server_goaway(error, meter),
        });
    }
}

impl Default for Http2WriteTap {
    fn default() -> Self {
        Self::new()
    }
}
