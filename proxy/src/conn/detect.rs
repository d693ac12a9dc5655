//! Telling HTTP/1.1 from HTTP/2 with prior knowledge (h2c) on one cleartext listener.
//!
//! An h2c client opens with the 24-byte connection preface. We read until the bytes either
//! complete the preface or diverge from it, with a deadline of our own (hyper-util's auto
//! builder has none, so a silent client would hold the connection forever).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a cleartext connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2: h2c with prior knowledge here, or h2 chosen by ALPN on a TLS listener.
    Http2,
}

/// Why detection did not produce a protocol.
#[derive(Debug)]
pub enum DetectError {
    /// The client sent nothing recognisable in time.
    Timeout,
    /// The client closed before sending a byte.
    Closed,
    /// The socket failed.
    Io(io::Error),
}

/// Reads the first bytes of `stream` and decides its protocol. Returns the bytes read, to be
/// replayed to the protocol's parser.
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Duration,
) -> Result<(Protocol, Bytes), DetectError> {
    let mut buf = BytesMut::with_capacity(4096);
    let work = async {
        loop {
            let n = stream.read_buf(&mut buf).await.map_err(DetectError::Io)?;
            if n == 0 {
                return if buf.is_empty() {
                    Err(DetectError::Closed)
                } else {
                    // A partial request then EOF: let the HTTP/1 parser answer it.
                    Ok(Protocol::Http1)
                };
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf[..seen] != H2_PREFACE[..seen] {
                return Ok(Protocol::Http1);
            }
            if seen == H2_PREFACE.len() {
                return Ok(Protocol::Http2);
            }
        }
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(p)) => Ok((p, buf.freeze())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DetectError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn detect_bytes(chunks: &[&[u8]]) -> Result<(Protocol, Bytes), DetectError> {
        let (mut client, mut server) = tokio::io::duplex(1024);
        for c in chunks {
            client.write_all(c).await.unwrap();
        }
        drop(client);
        detect(&mut server, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn http1_is_seen_on_the_first_byte() {
        let (p, b) = detect_bytes(&[b"GET / HTTP/1.1\r\n"]).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        assert_eq!(&b[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn h2c_preface_split_across_reads() {
        let (p, b) = detect_bytes(&[&H2_PREFACE[..5], &H2_PREFACE[5..]])
            .await
            .unwrap();
        assert_eq!(p, Protocol::Http2);
        assert_eq!(&b[..], &H2_PREFACE[..]);
    }

    #[tokio::test]
    async fn a_request_starting_like_the_preface_is_http1() {
        let (p, _) = detect_bytes(&[b"PRI * HTTP/1.1\r\n"]).await.unwrap();
        assert_eq!(p, Protocol::Http1);
    }

    #[tokio::test]
    async fn silence_times_out_and_close_is_reported() {
        let (_client, mut server) = tokio::io::duplex(64);
        let r = detect(&mut server, Duration::from_millis(20)).await;
        assert!(matches!(r, Err(DetectError::Timeout)));
        assert!(matches!(detect_bytes(&[]).await, Err(DetectError::Closed)));
    }
}
