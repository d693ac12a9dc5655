//! The IO wrapper between the client's stream (TCP, or TLS plaintext) and hyper.
//!
//! It replays bytes already read during protocol detection, then passes every read and write
//! through untouched while forwarding them to the connection's [`Meter`] and taps (the
//! linkerd "sensor" pattern).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::account::meter::Meter;
use crate::conn::tap::{Http2WriteTap, ReadTap};
use crate::stats::Stats;

/// A client stream as hyper sees it.
pub struct ClientIo<S> {
    inner: S,
    /// Bytes read before hyper took over (protocol detection), replayed first.
    prefix: Bytes,
    meter: Arc<Meter>,
    tap: ReadTap,
    /// HTTP/2 only: what the server sends.
    wtap: Option<Http2WriteTap>,
    /// The server's byte counters, counted as bytes move.
    stats: Arc<Stats>,
}

impl<S> ClientIo<S> {
    /// Wraps `inner`; `prefix` is replayed before anything else is read from it. Reads go
    /// through `tap` to `meter`; reads and writes are counted in `stats` as they happen.
    pub fn new(
        inner: S,
        prefix: Bytes,
        meter: Arc<Meter>,
        tap: ReadTap,
        stats: Arc<Stats>,
    ) -> Self {
        let wtap = Http2WriteTap::of(&tap);
        Self {
            inner,
            prefix,
            meter,
            tap,
            wtap,
            stats,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.meter.is_killed() {
            // The client is cut off: read nothing more of it. The connection's driver, woken
            // by the kill switch, closes the connection.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.stats.bytes_read(new.len());
            this.meter.bytes_read(new.len());
            this.tap.on_read(new, &this.meter);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.stats.bytes_written(n);
            this.meter.bytes_written(n);
            if let Some(w) = &mut this.wtap {
                w.on_write(&buf[..n], &this.meter);
            }
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.stats.bytes_written(n);
            this.meter.bytes_written(n);
            if let Some(w) = &mut this.wtap {
                let mut left = n;
                for b in bufs {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(b.len());
                    w.on_write(&b[..take], &this.meter);
                    left -= take;
                }
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::limits;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zgate_limiter::{Limiter, LimiterConfig};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_through_and_counts() {
        let clock = Clock::new();
        let limiter = Limiter::new(LimiterConfig::default(), None, clock.now()).unwrap();
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (conn, _) = limiter.connection_opened(peer.ip(), clock.now());
        let (_, proxy_limits) = limits::from_config(&Default::default()).unwrap();
        let meter = Meter::new(conn.unwrap(), clock, peer, proxy_limits, Arc::default());
        let (client, server) = tokio::io::duplex(64);
        let mut io = ClientIo::new(
            server,
            Bytes::from_static(b"PRE"),
            meter.clone(),
            ReadTap::http1(8192),
            Arc::new(Stats::default()),
        );
        let mut client = client;
        client.write_all(b"rest").await.unwrap();
        let mut got = vec![0u8; 7];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"PRErest");
        io.write_all(b"reply").await.unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"reply");
        assert_eq!(meter.accounting().bytes_in(), 7);
        assert_eq!(meter.accounting().bytes_out(), 5);
    }
}
