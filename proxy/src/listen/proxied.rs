//! Reading the PROXY protocol header of a connection on a `proxy_protocol` listener: the IO
//! around `proxy_header.rs`. It reads at most [`MAX_HEADER`] bytes, within a deadline, and
//! returns who the client is with the bytes read past the header (the client's own first
//! bytes, to replay to TLS or protocol detection).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::proxy_header::{self, HeaderError, Parse, Source, MAX_HEADER};
use crate::stats::HeaderFailure;

/// The client a header named, and what came after it.
#[derive(Debug)]
pub struct Proxied {
    /// The client: the header's source, or the socket's peer (v2 `LOCAL`, v1 `UNKNOWN`).
    pub client: SocketAddr,
    /// Whether the header named the client (`false`: the peer is the client).
    pub from_header: bool,
    /// Bytes read after the header.
    pub rest: Bytes,
}

/// Why no client came out of the header, with what the peer sent when it says more.
#[derive(Debug)]
pub struct Failed {
    /// The counter's kind.
    pub why: HeaderFailure,
    /// The parse error, if the header was read and refused.
    pub error: Option<HeaderError>,
}

/// Reads and parses the PROXY header at the start of `stream` (whose socket peer is `peer`)
/// within `deadline`.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    deadline: Duration,
) -> Result<Proxied, Failed> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut filled = 0;
    let work = async {
        loop {
            // Never more than the longest header: what follows it is read later, by TLS or
            // HTTP, under their own limits.
            let n = stream
                .read(&mut buf[filled..])
                .await
                .map_err(|_| failed(HeaderFailure::Closed, None))?;
            if n == 0 {
                return Err(failed(HeaderFailure::Closed, None));
            }
            filled += n;
            match proxy_header::parse(&buf[..filled]) {
                Parse::NeedMore if filled < MAX_HEADER => continue,
                Parse::NeedMore => return Err(failed(HeaderFailure::TooLong, None)),
                Parse::Done { source, consumed } => {
                    let (client, from_header) = match source {
                        Source::Client(a) => (a, true),
                        Source::Peer => (peer, false),
                    };
                    let rest = Bytes::copy_from_slice(&buf[consumed..filled]);
                    return Ok(Proxied {
                        client,
                        from_header,
                        rest,
                    });
                }
                Parse::Invalid(e) => {
                    let why = match e {
                        HeaderError::Missing => HeaderFailure::Missing,
                        HeaderError::TooLong { .. } => HeaderFailure::TooLong,
                        HeaderError::V1(ppp::v1::BinaryParseError::Parse(
                            ppp::v1::ParseError::HeaderTooLong,
                        )) => HeaderFailure::TooLong,
                        _ => HeaderFailure::Invalid,
                    };
                    return Err(failed(why, Some(e)));
                }
            }
        }
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(failed(HeaderFailure::Timeout, None)),
    }
}

fn failed(why: HeaderFailure, error: Option<HeaderError>) -> Failed {
    Failed { why, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn peer() -> SocketAddr {
        "10.0.0.1:5555".parse().unwrap()
    }

    async fn feed(parts: &[&[u8]], close: bool) -> Result<Proxied, Failed> {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        for p in parts {
            client.write_all(p).await.unwrap();
        }
        if close {
            drop(client);
            read_header(&mut server, peer(), Duration::from_secs(5)).await
        } else {
            let r = read_header(&mut server, peer(), Duration::from_millis(50)).await;
            drop(client);
            r
        }
    }

    #[tokio::test]
    async fn the_header_names_the_client_and_the_rest_is_kept() {
        let p = feed(
            &[b"PROXY TCP4 203.0.113.9 192.0.2.1 4000 443\r\nGET / HTTP/1.1\r\n"],
            false,
        )
        .await
        .unwrap();
        assert_eq!(p.client, "203.0.113.9:4000".parse().unwrap());
        assert!(p.from_header);
        assert_eq!(&p.rest[..], b"GET / HTTP/1.1\r\n");
        let p = feed(&[b"PROXY UNKNOWN\r\n"], false).await.unwrap();
        assert_eq!((p.client, p.from_header), (peer(), false));
        assert!(p.rest.is_empty());
    }

    #[tokio::test]
    async fn failures_are_classified() {
        let why = |r: Result<Proxied, Failed>| r.err().map(|f| f.why);
        assert_eq!(
            why(feed(&[b"GET / HTTP/1.1\r\n"], false).await),
            Some(HeaderFailure::Missing)
        );
        assert_eq!(
            why(feed(&[b"PROXY TCP4 1.2.3"], true).await),
            Some(HeaderFailure::Closed)
        );
        assert_eq!(
            why(feed(&[b"PROXY TCP4 1.2.3"], false).await),
            Some(HeaderFailure::Timeout)
        );
        assert_eq!(
            why(feed(&[b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n"], false).await),
            Some(HeaderFailure::Invalid)
        );
        let long = [b"PROXY TCP6 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            why(feed(&[&long], false).await),
            Some(HeaderFailure::TooLong)
        );
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        v2.extend_from_slice(&[0; 64]);
        assert_eq!(why(feed(&[&v2], false).await), Some(HeaderFailure::TooLong));
    }
}
