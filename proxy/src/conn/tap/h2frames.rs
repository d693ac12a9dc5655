//! A streaming parser of HTTP/2 frame headers for the IO taps.
//!
//! It sees a connection's bytes in whatever pieces the socket delivers and reports each frame's
//! 9-byte header (length, type, flags, stream) without copying or looking at payloads, except
//! the first 8 bytes of a GOAWAY (last stream and error code). h2 keeps its frame events
//! private, so this is how zgate observes framing (DESIGN.md §5): the read tap parses what the
//! client sends, the write tap what the server sends.

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6).
pub mod flag {
    /// END_STREAM on DATA and HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// ACK on SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    /// END_HEADERS on HEADERS and CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
}

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (24 bits).
    pub len: u32,
    /// Frame type, see [`kind`].
    pub kind: u8,
    /// Flags, see [`flag`].
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; 9]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// GOAWAY error code `ENHANCE_YOUR_CALM` (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What the parser reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEvent {
    /// A frame header, reported before its payload arrives.
    Header(FrameHeader),
    /// A GOAWAY's payload head, reported once its first 8 bytes arrived.
    GoAway {
        /// The last stream the sender processed.
        last_stream: u32,
        /// The error code.
        error: u32,
    },
}

const PREFACE_LEN: usize = 24;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Skipping the client's 24-byte connection preface; `n` bytes seen.
    Preface(usize),
    /// Collecting a frame header; `have` bytes of it in `buf`.
    Header { buf: [u8; 9], have: usize },
    /// Skipping `remaining` payload bytes.
    Payload { remaining: usize },
    /// Collecting a GOAWAY's first 8 payload bytes, then skipping the rest.
    GoAway {
        buf: [u8; 8],
        have: usize,
        remaining: usize,
    },
}

/// Parses frame headers out of a byte stream delivered in arbitrary pieces.
#[derive(Debug, Clone)]
pub struct FrameParser {
    state: State,
}

impl FrameParser {
    /// A parser for a client stream, which starts with the connection preface.
    pub fn new() -> Self {
        FrameParser {
            state: State::Preface(0),
        }
    }

    /// A parser for a server stream, which starts with a frame.
    pub fn server() -> Self {
        FrameParser {
            state: State::Header {
                buf: [0; 9],
                have: 0,
            },
        }
    }

    /// Feeds the next bytes of the stream, calling `on_event` for each frame header (and
    /// GOAWAY payload head) completed by them, in order.
    pub fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(FrameEvent)) {
        while !data.is_empty() {
            match &mut self.state {
                State::Preface(seen) => {
                    let take = (PREFACE_LEN - *seen).min(data.len());
                    *seen += take;
                    data = &data[take..];
                    if *seen == PREFACE_LEN {
                        self.state = State::Header {
                            buf: [0; 9],
                            have: 0,
                        };
                    }
                }
                State::Payload { remaining } => {
                    let take = (*remaining).min(data.len());
                    *remaining -= take;
                    data = &data[take..];
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; 9],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    let take = (9 - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 9 {
                        let header = FrameHeader::parse(buf);
                        let len = header.len as usize;
                        self.state = if len == 0 {
                            State::Header {
                                buf: [0; 9],
                                have: 0,
                            }
                        } else if header.kind == kind::GOAWAY && len >= 8 {
                            State::GoAway {
                                buf: [0; 8],
                                have: 0,
                                remaining: len,
                            }
                        } else {
                            State::Payload { remaining: len }
                        };
                        on_event(FrameEvent::Header(header));
                    }
                }
                State::GoAway {
                    buf,
                    have,
                    remaining,
                } => {
                    let take = (8 - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == 8 {
                        let last_stream =
                            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & 0x7fff_ffff;
                        let error = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                        let rest = *remaining - 8;
                        self.state = if rest == 0 {
                            State::Header {
                                buf: [0; 9],
                                have: 0,
                            }
                        } else {
                            State::Payload { remaining: rest }
                        };
                        on_event(FrameEvent::GoAway { last_stream, error });
                    }
                }
            }
        }
    }
}

impl Default for FrameParser {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::detect::H2_PREFACE;

    fn frame(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xAB, len as usize));
        f
    }

    fn stream() -> (Vec<u8>, Vec<FrameEvent>) {
        let mut bytes = H2_PREFACE.to_vec();
        let frames = [
            (6, kind::SETTINGS, 0, 0),
            (0, kind::SETTINGS, flag::ACK, 0),
            (20, kind::HEADERS, 0, 1),
            (5, kind::CONTINUATION, 0, 1),
            (3, kind::CONTINUATION, flag::END_HEADERS, 1),
            (1, kind::DATA, 0, 1),
            (0, kind::DATA, 0, 1),
            (16384, kind::DATA, flag::END_STREAM, 1),
            (8, kind::PING, 0, 0),
            (4, kind::RST_STREAM, 0, 0x8000_0003),
        ];
        let mut expected = Vec::new();
        for (len, k, f, s) in frames {
            bytes.extend(frame(len, k, f, s));
            expected.push(FrameEvent::Header(FrameHeader {
                len,
                kind: k,
                flags: f,
                stream: s & 0x7fff_ffff,
            }));
        }
        (bytes, expected)
    }

    #[test]
    fn parses_whole_stream_at_once() {
        let (bytes, expected) = stream();
        let mut got = Vec::new();
        FrameParser::new().feed(&bytes, |e| got.push(e));
        assert_eq!(got, expected);
    }

    #[test]
    fn parses_the_same_in_any_split() {
        let (bytes, expected) = stream();
        for piece in [1, 2, 3, 7, 9, 10, 23, 24, 25, 100, 4096] {
            let mut p = FrameParser::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                p.feed(chunk, |e| got.push(e));
            }
            assert_eq!(got, expected, "pieces of {piece}");
        }
    }

    #[test]
    fn a_header_is_reported_before_its_payload_arrives() {
        let mut p = FrameParser::new();
        let mut got = Vec::new();
        p.feed(H2_PREFACE, |e| got.push(e));
        let f = frame(1000, kind::DATA, 0, 1);
        p.feed(&f[..9], |e| got.push(e));
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], FrameEvent::Header(h) if h.len == 1000));
    }

    #[test]
    fn server_stream_goaway_reports_its_error_code_in_any_split() {
        let mut bytes = frame(0, kind::SETTINGS, 0, 0);
        let mut goaway = frame(0, kind::GOAWAY, 0, 0);
        let payload = [0, 0, 0, 7, 0, 0, 0, 0xb, b'd', b'e', b'b', b'u', b'g'];
        goaway[2] = payload.len() as u8;
        goaway.extend_from_slice(&payload);
        bytes.extend(goaway);
        bytes.extend(frame(4, kind::RST_STREAM, 0, 9));
        for piece in [1, 2, 5, 9, 12, 100] {
            let mut p = FrameParser::server();
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                p.feed(chunk, |e| got.push(e));
            }
            let kinds: Vec<_> = got
                .iter()
                .map(|e| match e {
                    FrameEvent::Header(h) => h.kind,
                    FrameEvent::GoAway { .. } => 0xff,
                })
                .collect();
            assert_eq!(
                kinds,
                [kind::SETTINGS, kind::GOAWAY, 0xff, kind::RST_STREAM],
                "pieces of {piece}"
            );
            assert_eq!(
                got[2],
                FrameEvent::GoAway {
                    last_stream: 7,
                    error: ENHANCE_YOUR_CALM
                }
            );
        }
    }
}
