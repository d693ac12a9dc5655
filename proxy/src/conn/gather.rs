//! What one poll of a connection's task writes to its client, sent in one system call at the
//! end of that poll.
//!
//! The HTTP/2 codec sends a DATA frame whose payload is over 256 bytes in a write of its own
//! (h2 chains the payload instead of copying it, and flushes before the next frame), and
//! rustls writes each record it makes (the handshake's flight, a session ticket, a response,
//! `close_notify`) as it makes it. Each write to a socket is a system call, and on loopback
//! it also runs the peer's receive path: with 1 KiB responses over h2c, zgate made one
//! `writev` per response (40 832 for 20 000 requests on 8 connections, where 0 B responses
//! took 23 961: HEADERS frames are copied into h2's buffer and leave together).
//!
//! [`Gathered`] sits between the socket and everything above it (TLS, hyper): while the
//! connection's task is in a poll of [`Gathering`], a write is appended to a buffer and
//! reported done, a flush is a no-op; when that poll returns, the buffer goes out in one
//! `write`, as a server that writes at the end of its event loop iteration would (HAProxy,
//! nginx). So a poll that answers ten streams writes once.
//!
//! - **Bounded**: at most [`GATHER_MAX`] bytes wait. A write that would go past it is sent at
//!   once, with what waits before it, in one `writev`; so bulk data (16 KiB DATA frames, large
//!   HTTP/1 bodies) is never copied here.
//! - **Backpressure**: if the socket takes only part of it, the rest waits for the socket to be
//!   writable (the task is woken then); a write past the bound waits for it too, as a write to
//!   a full socket always did.
//! - **Order and end**: nothing passes what waits; a shutdown (FIN, `close_notify` before it)
//!   and a write outside a [`Gathering`] poll send what waits first. A connection whose future
//!   ends with bytes waiting tries once to send them.
//! - **Accounting**: the connection's IO (`io.rs`, above TLS) counts a write as done when this
//!   buffer takes it, so response bytes waiting here (at most [`GATHER_MAX`], while the client
//!   does not read) are no longer charged as held: like hyper's, h2's and rustls's own
//!   buffers, they are part of the fixed `limits.memory_per_connection`.
//! - **Where it applies**: TLS connections and cleartext HTTP/2 ([`Gather::enable`]). HTTP/1 in
//!   the clear gains nothing (hyper writes a response's head and body in one `writev`
//!   already), and writes straight through.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The most bytes that wait for the end of a poll: 16 KiB. A write that would make more is
/// sent at once (one `writev` with what waits).
pub const GATHER_MAX: usize = 16 * 1024;

/// The buffer's capacity kept between polls: 4 KiB (a larger one, grown by a burst, is freed
/// once sent, so an idle connection holds at most this).
const KEEP: usize = 4 * 1024;

/// The most slices of one vectored write taken with what waits (the rest go in the next
/// write, as any partial write).
const MAX_SLICES: usize = 16;

/// A client's socket whose writes are gathered during a [`Gathering`] poll.
#[derive(Debug)]
pub struct Gathered {
    read: OwnedReadHalf,
    shared: Arc<Shared>,
}

/// The connection's handle on its gathering: switched on with [`Gather::enable`], and polled
/// through by [`Gathering`], whose poll's end sends what was gathered.
#[derive(Debug, Clone)]
pub struct Gather {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The socket's write side; never shut down by its drop (see `Drop`).
    write: Option<OwnedWriteHalf>,
    /// Whether this connection gathers at all ([`Gather::enable`]).
    enabled: AtomicBool,
    /// Set during a [`Gathering`] poll of an enabled connection: writes wait for its end.
    gathering: AtomicBool,
    /// Bytes wait in `out` (checked without the lock).
    waiting: AtomicBool,
    /// Only the connection's task takes it (its IO and its `Gathering` poll): never contended.
    out: Mutex<Out>,
    /// What a layer above keeps for the end of a gathering poll (`coalesce.rs`: plaintext for
    /// TLS), run before the socket's bytes are sent. Weak: that layer holds this socket (the
    /// [`Gathering`] future holds it strongly, outside the cycle).
    poll_end: OnceLock<Weak<dyn PollEnd>>,
}

/// A layer above the socket with writes of its own to finish at the end of each gathering
/// poll (before what was gathered is sent).
pub trait PollEnd: Send + Sync {
    /// Writes down what this layer kept during the poll; a failure is for its next write to
    /// report.
    fn poll_end(&self, cx: &mut Context<'_>);
}

#[derive(Debug, Default)]
struct Out {
    buf: Vec<u8>,
    /// Bytes of `buf` already sent.
    sent: usize,
    /// An error the end of a poll met sending, for the next write to report.
    error: Option<io::Error>,
}

/// Splits `stream` into the IO the connection reads and writes through and the handle its
/// task polls with. Gathering is off until [`Gather::enable`].
pub fn split(stream: TcpStream) -> (Gathered, Gather) {
    let (read, write) = stream.into_split();
    let shared = Arc::new(Shared {
        write: Some(write),
        enabled: AtomicBool::new(false),
        gathering: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
        out: Mutex::new(Out::default()),
        poll_end: OnceLock::new(),
    });
    (
        Gathered {
            read,
            shared: shared.clone(),
        },
        Gather { shared },
    )
}

impl Gather {
    /// Gathers the writes of each poll from now on.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether the connection's task is in a gathering poll now (writes wait for its end).
    pub fn is_gathering(&self) -> bool {
        self.shared.gathering.load(Ordering::Relaxed)
    }

    /// Runs `layer`'s [`PollEnd`] at the end of each gathering poll, before the socket's bytes
    /// leave, while it lives. Once per connection: a second layer is refused.
    pub fn at_poll_end(&self, layer: Weak<dyn PollEnd>) -> Result<(), Weak<dyn PollEnd>> {
        self.shared.poll_end.set(layer)
    }
}

pin_project_lite::pin_project! {
    /// `inner` (a connection's whole future) polled through its [`Gather`].
    pub struct Gathering<F> {
        #[pin]
        inner: F,
        gather: Gather,
        // The layer above with writes to finish at each poll's end, held from its first poll's
        // end on, so that what it kept in the poll that ends `inner` (which drops the layer's
        // owner) still goes out.
        layer: Option<Arc<dyn PollEnd>>,
    }
}

impl<F> Gathering<F> {
    /// Polls `inner` through `gather`.
    pub fn new(inner: F, gather: Gather) -> Self {
        Gathering {
            inner,
            gather,
            layer: None,
        }
    }
}

impl<F: Future> Future for Gathering<F> {
    type Output = F::Output;

    /// Polls `inner` with writes gathered (once enabled), then sends what it wrote.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let s = &*this.gather.shared;
        if !s.enabled.load(Ordering::Relaxed) {
            return this.inner.poll(cx);
        }
        s.gathering.store(true, Ordering::Relaxed);
        let polled = this.inner.poll(cx);
        // The layer above writes down what it kept: into this poll's bytes, still gathering.
        if this.layer.is_none() {
            *this.layer = s.poll_end.get().and_then(Weak::upgrade);
        }
        if let Some(layer) = this.layer {
            layer.poll_end(cx);
        }
        s.gathering.store(false, Ordering::Relaxed);
        if s.waiting.load(Ordering::Relaxed) {
            let mut out = s.lock();
            // Pending: the socket's writability wakes this task, and the next poll's end sends
            // the rest. An error is the next write's to report (or nobody's, at the end).
            if let Poll::Ready(Err(e)) = s.send_waiting(&mut out, cx) {
                out.error = Some(e);
            }
        }
        polled
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Out> {
        // Every statement leaves `Out` consistent: a poisoned lock is usable.
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn socket(&self) -> io::Result<&TcpStream> {
        match &self.write {
            Some(w) => Ok(w.as_ref()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// One vectored write to the socket, waiting for it to be writable.
    fn poll_send(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let socket = self.socket()?;
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Sends everything waiting in `out`.
    fn send_waiting(&self, out: &mut Out, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while out.sent < out.buf.len() {
            let n = ready!(self.poll_send(cx, &[IoSlice::new(&out.buf[out.sent..])]));
            match n {
                Ok(0) => {
                    self.clear(out);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => out.sent += n,
                Err(e) => {
                    self.clear(out);
                    return Poll::Ready(Err(e));
                }
            }
        }
        self.clear(out);
        Poll::Ready(Ok(()))
    }

    fn clear(&self, out: &mut Out) {
        out.buf.clear();
        out.sent = 0;
        if out.buf.capacity() > KEEP {
            out.buf = Vec::new();
        }
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// A write of `bufs` (`total` bytes): gathered during a [`Gathering`] poll when it fits,
    /// otherwise sent with what waits before it.
    fn write(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        total: usize,
    ) -> Poll<io::Result<usize>> {
        let gathering = self.gathering.load(Ordering::Relaxed);
        if !gathering && !self.waiting.load(Ordering::Relaxed) {
            return self.poll_send(cx, bufs);
        }
        let mut out = self.lock();
        if let Some(e) = out.error.take() {
            return Poll::Ready(Err(e));
        }
        let waiting = out.buf.len() - out.sent;
        if gathering && waiting + total <= GATHER_MAX {
            if out.buf.capacity() == 0 {
                out.buf.reserve(total.max(KEEP / 2));
            }
            for b in bufs {
                out.buf.extend_from_slice(b);
            }
            self.waiting.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(total));
        }
        // Past the bound, or outside a gathering poll: what waits goes first, in the same
        // `writev` as this write.
        loop {
            let waiting = out.buf.len() - out.sent;
            if waiting == 0 {
                self.clear(&mut out);
                return self.poll_send(cx, bufs);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&out.buf[out.sent..]);
            let taken = bufs.len().min(MAX_SLICES - 1);
            slices[1..=taken].copy_from_slice(&bufs[..taken]);
            let n = match ready!(self.poll_send(cx, &slices[..=taken])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) => {
                    self.clear(&mut out);
                    return Poll::Ready(Err(e));
                }
            };
            if n < waiting {
                out.sent += n;
                continue;
            }
            self.clear(&mut out);
            return Poll::Ready(Ok(n - waiting));
        }
    }

    /// Sends what waits, unless this is a gathering poll (its end will).
    fn flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gathering.load(Ordering::Relaxed) || !self.waiting.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let mut out = self.lock();
        self.send_waiting(&mut out, cx)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping a tokio write half shuts the socket's write side down (FIN); the
        // connection's close decides that (a reset, `SO_LINGER` 0, must not send a FIN first).
        if let Some(w) = self.write.take() {
            w.forget();
        }
    }
}

impl AsRawFd for Gathered {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_ref().as_raw_fd()
    }
}

impl AsyncRead for Gathered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.shared.write(cx, &[IoSlice::new(buf)], buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        self.shared.write(cx, bufs, total)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = &*self.shared;
        if s.waiting.load(Ordering::Relaxed) {
            let mut out = s.lock();
            ready!(s.send_waiting(&mut out, cx))?;
        }
        let socket = s.socket()?;
        Poll::Ready(socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the gathered server side, and the client's plain std socket.
    pub(in crate::conn) async fn pair() -> (Gathered, Gather, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(addr));
        let (server, _) = listener.accept().await.unwrap();
        let client = client.await.unwrap().unwrap();
        let (io, gather) = split(server);
        (io, gather, client)
    }

    /// Whether the client has nothing to read right now.
    fn nothing_arrived(client: &std::net::TcpStream) -> bool {
        client.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let none = matches!(client.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        client.set_nonblocking(false).unwrap();
        none
    }

    fn read_exactly(client: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[tokio::test]
    async fn a_polls_writes_leave_together_when_it_returns() {
        let (mut io, gather, mut client) = pair().await;
        gather.enable();
        let c = &client;
        let mut held_back = Vec::new();
        Gathering::new(
            std::future::poll_fn(|cx| {
                for part in [&b"one "[..], b"two ", b"three"] {
                    let n = ready!(Pin::new(&mut io).poll_write(cx, part)).unwrap();
                    assert_eq!(n, part.len());
                    assert!(Pin::new(&mut io).poll_flush(cx).is_ready());
                    // Still in the poll: nothing has left.
                    held_back.push(nothing_arrived(c));
                }
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert_eq!(held_back, [true, true, true]);
        assert_eq!(read_exactly(&mut client, 13), b"one two three");
    }

    #[tokio::test]
    async fn without_gathering_a_write_leaves_at_once() {
        let (mut io, gather, mut client) = pair().await;
        // Not enabled (HTTP/1 in the clear): straight through, inside a poll too.
        let mut arrived = None;
        Gathering::new(
            std::future::poll_fn(|cx| {
                ready!(Pin::new(&mut io).poll_write(cx, b"now")).unwrap();
                arrived = Some(!nothing_arrived(&client));
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert_eq!(arrived, Some(true));
        assert_eq!(read_exactly(&mut client, 3), b"now");
        // Enabled, but written outside a gathering poll: straight through as well.
        gather.enable();
        io.write_all(b"later").await.unwrap();
        assert!(!nothing_arrived(&client));
        assert_eq!(read_exactly(&mut client, 5), b"later");
    }

    #[tokio::test]
    async fn a_write_past_the_bound_leaves_at_once_after_what_waits() {
        let (mut io, gather, mut client) = pair().await;
        gather.enable();
        let big = vec![b'x'; GATHER_MAX];
        let mut arrived = Vec::new();
        Gathering::new(
            std::future::poll_fn(|cx| {
                ready!(Pin::new(&mut io).poll_write(cx, b"head")).unwrap();
                arrived.push(!nothing_arrived(&client));
                // "head" + GATHER_MAX bytes do not fit: both leave now, in order.
                let n = ready!(Pin::new(&mut io).poll_write(cx, &big)).unwrap();
                assert_eq!(n, big.len());
                arrived.push(!nothing_arrived(&client));
                ready!(Pin::new(&mut io).poll_write(cx, b"tail")).unwrap();
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert_eq!(arrived, [false, true]);
        let got = read_exactly(&mut client, 4 + GATHER_MAX + 4);
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + GATHER_MAX].iter().all(|&b| b == b'x'));
        assert_eq!(&got[4 + GATHER_MAX..], b"tail");
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_holds_back_the_writer_not_the_memory() {
        let (mut io, gather, mut client) = pair().await;
        gather.enable();
        // 8 MiB in small writes, more than the socket buffers hold: the writer must wait for
        // the client, and every byte arrives once and in order.
        const TOTAL: usize = 8 << 20;
        let writer = tokio::spawn(Gathering::new(
            async move {
                let chunk: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
                let mut sent = 0;
                while sent < TOTAL {
                    let n = chunk.len().min(TOTAL - sent);
                    io.write_all(&chunk[..n]).await.unwrap();
                    sent += n;
                    let waiting = io.shared.lock();
                    assert!(waiting.buf.len() - waiting.sent <= GATHER_MAX);
                }
                io.shutdown().await.unwrap();
            },
            gather,
        ));
        let got = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            all
        })
        .await
        .unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), TOTAL);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((i % 1000) % 251) as u8));
    }

    #[tokio::test]
    async fn shutdown_sends_what_waits_before_the_fin() {
        let (mut io, gather, mut client) = pair().await;
        gather.enable();
        Gathering::new(
            async {
                io.write_all(b"last words").await.unwrap();
                io.shutdown().await.unwrap();
            },
            gather.clone(),
        )
        .await;
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"last words");
        // The read side still works after the write side's shutdown.
        use std::io::Write;
        client.write_all(b"ok").unwrap();
        let mut back = [0u8; 2];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}
