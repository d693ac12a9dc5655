//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that an L4
//! load balancer sends before the client's bytes: who the client is.
//!
//! Sans-IO and incremental: [`parse`] takes the bytes read so far and says `NeedMore`,
//! `Done` (the client and how many bytes the header took; what follows belongs to TLS or
//! HTTP) or `Invalid`. The caller reads until it is not `NeedMore`, never buffering more than
//! [`MAX_HEADER`] bytes, under its own deadline. The parsing itself is the `ppp` crate's; this
//! file bounds it and turns its result into what zgate needs.
//!
//! Accepted: v1 `TCP4`/`TCP6` and `UNKNOWN` (then the peer is the client), v2 `PROXY` over TCP
//! on IPv4 or IPv6 (TLVs are skipped), v2 `LOCAL` (a health check of the balancer itself: the
//! peer is the client) and v2 `PROXY` with an unspecified family (the same). Anything else,
//! including v2 over UDP or UNIX sockets, is invalid.

use std::net::SocketAddr;

use ppp::v2;

/// Longest v1 header: `PROXY TCP6` with two full IPv6 addresses and ports, and CRLF (the
/// protocol's own limit).
pub const V1_MAX: usize = 107;

/// Longest v2 header accepted, bytes: the 16-byte fixed part and up to 4080 bytes of addresses
/// and TLVs. The protocol allows 16 + 65535; the addresses take at most 216 (UNIX) and the
/// TLVs that balancers send (AWS, Azure, GCP ids, HAProxy's SSL and unique-id TLVs) a few
/// hundred, so a longer declared length is refused as soon as it is read, rather than held.
/// nginx's limit is the same 4096.
pub const V2_MAX: usize = 4096;

/// The most bytes a reader ever needs to hold to parse a header.
pub const MAX_HEADER: usize = V2_MAX;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// What the header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address and port, as the balancer saw them.
    Client(SocketAddr),
    /// The connection is the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`, or no address given):
    /// the socket's peer is the client.
    Peer,
}

/// The outcome of parsing the bytes read so far.
#[derive(Debug, PartialEq)]
pub enum Parse {
    /// Not enough bytes yet: read more (and never more than [`MAX_HEADER`] in all).
    NeedMore,
    /// A whole header: the client, and the header's length in bytes (the bytes after it are
    /// the client's).
    Done {
        /// Who the client is.
        source: Source,
        /// Bytes the header took.
        consumed: usize,
    },
    /// Not a valid header, whatever follows: close the connection.
    Invalid(HeaderError),
}

/// Why the bytes are not an acceptable PROXY protocol header.
#[derive(Debug, PartialEq)]
pub enum HeaderError {
    /// The bytes start with neither the v1 `PROXY ` prefix nor the v2 signature (a client
    /// that speaks TLS or HTTP at once, or a balancer not configured to send the header).
    Missing,
    /// A v1 header that does not parse, or is longer than [`V1_MAX`].
    V1(ppp::v1::BinaryParseError),
    /// A v2 header that does not parse.
    V2(v2::ParseError),
    /// A v2 header declaring more bytes than [`V2_MAX`] in all.
    TooLong {
        /// The declared total length, bytes.
        declared: usize,
    },
    /// A well-formed header for a transport zgate does not serve (UDP, UNIX sockets).
    Unsupported(&'static str),
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeaderError::Missing => f.write_str("no PROXY protocol header"),
            HeaderError::V1(e) => write!(f, "bad PROXY v1 header: {e}"),
            HeaderError::V2(e) => write!(f, "bad PROXY v2 header: {e}"),
            HeaderError::TooLong { declared } => write!(
                f,
                "PROXY v2 header of {declared} bytes, more than the {V2_MAX} accepted"
            ),
            HeaderError::Unsupported(what) => write!(f, "PROXY header for {what}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Parses the start of a connection's bytes as a PROXY protocol header (v1 or v2).
pub fn parse(buf: &[u8]) -> Parse {
    let Some(&first) = buf.first() else {
        return Parse::NeedMore;
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf),
        _ => Parse::Invalid(HeaderError::Missing),
    }
}

fn parse_v1(buf: &[u8]) -> Parse {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Parse::Invalid(HeaderError::Missing);
    }
    // ppp's v1 parser is not incremental (a line cut after a space reads as an empty port),
    // so it only ever sees a whole line: up to CRLF, within the protocol's 107 bytes.
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() < V1_MAX {
            Parse::NeedMore
        } else {
            Parse::Invalid(HeaderError::V1(ppp::v1::ParseError::HeaderTooLong.into()))
        };
    };
    if cr + 1 == buf.len() {
        // The CR is the last byte of a line that fits: its LF may follow.
        return if cr + 2 <= V1_MAX {
            Parse::NeedMore
        } else {
            Parse::Invalid(HeaderError::V1(ppp::v1::ParseError::HeaderTooLong.into()))
        };
    }
    let line = &buf[..buf.len().min(cr + 2)];
    match ppp::v1::Header::try_from(line) {
        Ok(h) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => Source::Peer,
            };
            Parse::Done {
                source,
                consumed: h.header.len(),
            }
        }
        Err(e) => Parse::Invalid(HeaderError::V1(e)),
    }
}

fn parse_v2(buf: &[u8]) -> Parse {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Parse::Invalid(HeaderError::Missing);
    }
    if buf.len() < V2_FIXED {
        return Parse::NeedMore;
    }
    let declared = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if declared > V2_MAX {
        return Parse::Invalid(HeaderError::TooLong { declared });
    }
    let header = match v2::Header::try_from(buf) {
        Ok(h) => h,
        Err(e) if ppp::PartialResult::is_incomplete(&e) => return Parse::NeedMore,
        Err(e) => return Parse::Invalid(HeaderError::V2(e)),
    };
    let source = match (header.command, header.protocol, header.addresses) {
        (v2::Command::Local, _, _) => Source::Peer,
        (v2::Command::Proxy, _, v2::Addresses::Unspecified) => Source::Peer,
        (v2::Command::Proxy, _, v2::Addresses::Unix(_)) => {
            return Parse::Invalid(HeaderError::Unsupported("a UNIX socket"))
        }
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
            Source::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
            Source::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, _, _) => {
            return Parse::Invalid(HeaderError::Unsupported("a transport other than TCP"))
        }
    };
    Parse::Done {
        source,
        consumed: header.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Type};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v2(command: Command, protocol: Protocol, src: &str, dst: &str) -> Vec<u8> {
        let addresses: v2::Addresses = (addr(src), addr(dst)).into();
        Builder::with_addresses(v2::Version::Two | command, protocol, addresses)
            .build()
            .unwrap()
    }

    /// Feeds `bytes` one at a time: `NeedMore` until the whole header is there.
    fn byte_by_byte(bytes: &[u8]) -> Parse {
        for n in 1..bytes.len() {
            let p = parse(&bytes[..n]);
            if p != Parse::NeedMore {
                return p;
            }
        }
        parse(bytes)
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parse::Done {
                source: Source::Client(addr("203.0.113.9:56324")),
                consumed: 44
            }
        );
        let h = b"PROXY TCP6 2001:db8::9 2001:db8::1 4711 80\r\n";
        assert_eq!(
            parse(h),
            Parse::Done {
                source: Source::Client(addr("[2001:db8::9]:4711")),
                consumed: h.len()
            }
        );
        let h = b"PROXY UNKNOWN\r\n\x16\x03\x01";
        assert_eq!(
            parse(h),
            Parse::Done {
                source: Source::Peer,
                consumed: 15
            }
        );
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_tlvs() {
        let mut h = v2(
            Command::Proxy,
            Protocol::Stream,
            "198.51.100.7:4000",
            "192.0.2.1:443",
        );
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h),
            Parse::Done {
                source: Source::Client(addr("198.51.100.7:4000")),
                consumed: len
            }
        );
        let h = v2(
            Command::Proxy,
            Protocol::Stream,
            "[2001:db8::7]:4000",
            "[2001:db8::1]:443",
        );
        assert_eq!(
            parse(&h),
            Parse::Done {
                source: Source::Client(addr("[2001:db8::7]:4000")),
                consumed: h.len()
            }
        );
        let h = v2(
            Command::Local,
            Protocol::Unspecified,
            "10.0.0.1:1",
            "10.0.0.2:2",
        );
        assert!(matches!(
            parse(&h),
            Parse::Done {
                source: Source::Peer,
                ..
            }
        ));
        let addresses: v2::Addresses = (addr("198.51.100.7:4000"), addr("192.0.2.1:443")).into();
        let h = Builder::with_addresses(
            v2::Version::Two | Command::Proxy,
            Protocol::Stream,
            addresses,
        )
        .write_tlv(Type::UniqueId, &[7u8; 64])
        .unwrap()
        .write_tlv(Type::Authority, b"example.com")
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(
            parse(&h),
            Parse::Done {
                source: Source::Client(addr("198.51.100.7:4000")),
                consumed: h.len()
            }
        );
    }

    #[test]
    fn split_anywhere_needs_more_then_completes() {
        let v1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\n";
        assert_eq!(
            byte_by_byte(v1),
            Parse::Done {
                source: Source::Client(addr("203.0.113.9:56324")),
                consumed: v1.len()
            }
        );
        let v2h = v2(
            Command::Proxy,
            Protocol::Stream,
            "[2001:db8::7]:4000",
            "[2001:db8::1]:443",
        );
        assert_eq!(
            byte_by_byte(&v2h),
            Parse::Done {
                source: Source::Client(addr("[2001:db8::7]:4000")),
                consumed: v2h.len()
            }
        );
        assert_eq!(parse(b""), Parse::NeedMore);
    }

    #[test]
    fn missing_wrong_signature_and_garbage_are_refused_at_once() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PRI * HTTP/2.0\r\n",
            b"PROXX",
            b"\r\n\r\n\0\r\nQUIX\n",
        ] {
            assert_eq!(
                parse(bytes),
                Parse::Invalid(HeaderError::Missing),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            parse(b"PROXY TCP4 203.0.113.999 192.0.2.1 1 2\r\n"),
            Parse::Invalid(HeaderError::V1(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\rX"),
            Parse::Invalid(HeaderError::V1(_))
        ));
        assert!(matches!(
            parse(b"PROXY UDP4 203.0.113.9 192.0.2.1 1 2\r\n"),
            Parse::Invalid(HeaderError::V1(_))
        ));
        // v2 with version 1 in the version nibble.
        let mut h = v2(Command::Proxy, Protocol::Stream, "10.0.0.1:1", "10.0.0.2:2");
        h[12] = 0x11;
        assert!(matches!(parse(&h), Parse::Invalid(HeaderError::V2(_))));
    }

    #[test]
    fn lengths_are_bounded() {
        // v1 without CRLF: refused once 107 bytes are there, never held beyond.
        let mut long = b"PROXY TCP6 ".to_vec();
        long.resize(V1_MAX - 1, b'1');
        assert_eq!(parse(&long), Parse::NeedMore);
        long.push(b'1');
        assert!(matches!(parse(&long), Parse::Invalid(HeaderError::V1(_))));
        long.resize(10 * V1_MAX, b'1');
        assert!(matches!(parse(&long), Parse::Invalid(HeaderError::V1(_))));
        // v2 declaring 65535 bytes: refused as soon as the length is read.
        let mut h = v2(Command::Proxy, Protocol::Stream, "10.0.0.1:1", "10.0.0.2:2");
        h[14] = 0xff;
        h[15] = 0xff;
        assert_eq!(
            parse(&h[..16]),
            Parse::Invalid(HeaderError::TooLong {
                declared: 16 + 65535
            })
        );
        // A declared length too short for its addresses.
        let mut h = v2(Command::Proxy, Protocol::Stream, "10.0.0.1:1", "10.0.0.2:2");
        h[15] = 4;
        assert!(matches!(parse(&h), Parse::Invalid(HeaderError::V2(_))));
        // Within the bound but not all there yet.
        let mut h = v2(Command::Proxy, Protocol::Stream, "10.0.0.1:1", "10.0.0.2:2");
        h[14] = 0x0f;
        h[15] = 0xf0;
        assert_eq!(parse(&h), Parse::NeedMore);
    }

    #[test]
    fn udp_and_unix_are_unsupported() {
        let h = v2(
            Command::Proxy,
            Protocol::Datagram,
            "10.0.0.1:1",
            "10.0.0.2:2",
        );
        assert!(matches!(
            parse(&h),
            Parse::Invalid(HeaderError::Unsupported(_))
        ));
        let unix = v2::Addresses::Unix(v2::Unix::new([0; 108], [0; 108]));
        let h = Builder::with_addresses(v2::Version::Two | Command::Proxy, Protocol::Stream, unix)
            .build()
            .unwrap();
        assert!(matches!(
            parse(&h),
            Parse::Invalid(HeaderError::Unsupported(_))
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_ask_for_more_than_the_bound() {
        // A small deterministic fuzz: every prefix of pseudo-random bytes behind each
        // signature either decides or asks for more while under the bound.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..2000 {
            let mut buf: Vec<u8> = match round % 3 {
                0 => V2_SIGNATURE.to_vec(),
                1 => V1_PREFIX.to_vec(),
                _ => Vec::new(),
            };
            for _ in 0..(round % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            for n in 0..=buf.len() {
                if parse(&buf[..n]) == Parse::NeedMore {
                    assert!(n < MAX_HEADER);
                }
            }
        }
    }
}
