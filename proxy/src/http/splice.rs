//! The bytes of a tunnel (an upgraded connection), copied both ways between the client and
//! the backend until both sides are done, or until no byte has moved either way for
//! `timeouts.idle`.
//!
//! - **Backpressure**: one buffer of [`SPLICE_BUFFER`] bytes each way (tokio's
//!   `copy_bidirectional_with_sizes`): a side that does not read stops the other side from
//!   being read once its buffer is full. [`SPLICE_HELD`] is what a tunnel holds, charged to
//!   its client (metric M) for its lifetime.
//! - **Half-close**: a side that ends (EOF) has the other side's write half shut down (TCP
//!   FIN, TLS close_notify, HTTP/2 END_STREAM), and the other direction goes on until it ends
//!   too.
//! - **Idle**: every read and write of either side stamps the time; with no stamp for
//!   `idle` the tunnel is closed (both IOs dropped). `Duration::ZERO`: never.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::account::meter::Meter;

/// The splice's buffer each way, in bytes: 32 KiB (tokio's default is 8 KiB; a larger one
/// moves bulk data in fewer polls).
pub const SPLICE_BUFFER: usize = 32 * 1024;

/// What one tunnel's splice holds, in bytes: its two buffers, 64 KiB. Charged to the client
/// while the tunnel is open.
pub const SPLICE_HELD: usize = 2 * SPLICE_BUFFER;

/// How a splice ended.
#[derive(Debug)]
pub enum End {
    /// Both sides ended (each direction reached its EOF and was passed on).
    Closed {
        /// Bytes from the client to the backend.
        up: u64,
        /// Bytes from the backend to the client.
        down: u64,
    },
    /// No byte moved either way for `timeouts.idle`.
    Idle,
    /// A side failed (reset, TLS error, HTTP/2 stream reset).
    Failed(io::Error),
}

/// Copies between `client` and `backend` until both are done, one fails, or nothing moves for
/// `idle` (zero: no limit). Bytes read from the client are reported to `forwarded` as request
/// bytes handed on, when the client's reads were counted as held (HTTP/2 DATA).
pub async fn splice<C, B>(
    client: C,
    backend: B,
    idle: Duration,
    forwarded: Option<Arc<Meter>>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let base = Instant::now();
    let stamp = AtomicU64::new(0);
    let mut client = Stamped {
        inner: client,
        base,
        stamp: &stamp,
        forwarded,
    };
    let mut backend = Stamped {
        inner: backend,
        base,
        stamp: &stamp,
        forwarded: None,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    );
    let mut copy = std::pin::pin!(copy);
    let ended = |r: io::Result<(u64, u64)>| match r {
        Ok((up, down)) => End::Closed { up, down },
        Err(e) => End::Failed(e),
    };
    if idle.is_zero() {
        return ended(copy.await);
    }
    loop {
        let last = base + Duration::from_nanos(stamp.load(Ordering::Relaxed));
        let deadline = last + idle;
        if deadline <= Instant::now() {
            return End::Idle;
        }
        tokio::select! {
            r = copy.as_mut() => return ended(r),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One side of the splice: every read or write that moves bytes stamps the time.
struct Stamped<'a, T> {
    inner: T,
    base: Instant,
    stamp: &'a AtomicU64,
    forwarded: Option<Arc<Meter>>,
}

impl<T> Stamped<'_, T> {
    fn moved(&self) {
        let now = self.base.elapsed().as_nanos() as u64;
        self.stamp.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.moved();
            if let Some(m) = &this.forwarded {
                m.request_forwarded(n);
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                this.moved();
            }
        }
        res
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_half_close_is_passed_on() {
        let (mut client, client_side) = tokio::io::duplex(1024);
        let (backend_side, mut backend) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(client_side, backend_side, Duration::ZERO, None));
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // The client is done sending: the backend sees EOF, and can still answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        backend.write_all(b"bye").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"bye");
        match task.await.unwrap() {
            End::Closed { up, down } => assert_eq!((up, down), (5, 3)),
            other => panic!("expected a clean end, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_is_closed_after_idle_and_traffic_keeps_it_open() {
        let (mut client, client_side) = tokio::io::duplex(1024);
        let (backend_side, mut backend) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(10);
        let task = tokio::spawn(splice(client_side, backend_side, idle, None));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            backend.read_exact(&mut one).await.unwrap();
        }
        assert!(
            !task.is_finished(),
            "traffic every 6 s keeps a 10 s idle tunnel open"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        let end = task.await.unwrap();
        assert!(matches!(end, End::Idle), "{end:?}");
        // Both sides were dropped: the peers see EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
