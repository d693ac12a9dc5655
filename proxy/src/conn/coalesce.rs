//! HTTP/2 over TLS: what one poll of the connection's task writes goes to TLS at the end of
//! that poll, in one write, so that one record carries it.
//!
//! rustls seals each write it is given as a record of its own (up to 16 KiB of plaintext),
//! and h2 writes each DATA frame over 256 bytes in a write of its own, then flushes (it chains
//! the payload rather than copying it into its buffer, and makes room by flushing). So ten
//! 1 KiB responses answered in one poll made ten records: ten seals, ten record headers and
//! ten passes through tokio-rustls for zgate, ten opens for the client (measured: 1.09
//! records per response over h2 with `h2load -m10`, 22 bytes each on the wire). HAProxy and
//! nginx hand TLS what one event loop iteration wrote.
//!
//! [`Coalesced`] sits between the codec and the TLS stream and works with the socket's
//! gathering (`gather.rs`): during a gathering poll a write is appended to a buffer and a
//! flush waits; at the poll's end ([`PollEnd`]) the buffer goes to TLS in one write, and the
//! record joins the poll's other bytes in the socket's one system call.
//!
//! - **Bounded**: at most [`COALESCE_MAX`] bytes (one record's plaintext) wait. A write that
//!   would go past it sends what waits first; one that large alone is not copied.
//! - **Order and end**: nothing passes what waits. Outside a gathering poll a flush sends it
//!   (and a shutdown, before `close_notify`).
//! - **Accounting**: the connection's IO (`io.rs`) counts a write as done when this buffer
//!   takes it; like the socket's gathering, what waits here is part of the fixed
//!   `limits.memory_per_connection`.
//! - **Where it applies**: TLS connections that negotiated h2. Over HTTP/1.1 hyper writes a
//!   message's head and body in one vectored write already, one record.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::gather::{Gather, PollEnd};

/// The most bytes kept for one record: 16 KiB, TLS's largest record plaintext.
pub const COALESCE_MAX: usize = 16 * 1024;

/// A TLS stream whose writes during a gathering poll are handed to it at the poll's end, in
/// one write; or, for HTTP/1.1, the stream as it is. Reads go straight through.
pub struct Coalesced<S>(Mode<S>);

enum Mode<S> {
    /// Every call straight through: no lock, no buffer.
    Direct(S),
    Kept(Arc<Shared<S>>),
}

struct Shared<S> {
    /// Only the connection's task takes it (its IO and its gathering poll's end): never
    /// contended.
    state: Mutex<State<S>>,
    gather: Gather,
}

struct State<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// A flush was asked for during the poll: `inner` is flushed at its end.
    flush: bool,
    /// What the end of a poll met writing, for the next write or flush to report.
    error: Option<io::Error>,
}

impl<S: AsyncWrite + Unpin + Send + 'static> Coalesced<S> {
    /// `inner`'s writes kept for the end of each of `gather`'s polls (which must gather);
    /// with no `gather`, `inner` as it is.
    pub fn new(inner: S, gather: Option<&Gather>) -> Self {
        let Some(gather) = gather else {
            return Coalesced(Mode::Direct(inner));
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                inner,
                buf: Vec::new(),
                written: 0,
                flush: false,
                error: None,
            }),
            gather: gather.clone(),
        });
        let layer: Arc<dyn PollEnd> = shared.clone();
        let weak: Weak<dyn PollEnd> = Arc::downgrade(&layer);
        // A socket has one TLS stream: a second registration cannot happen.
        let _ = gather.at_poll_end(weak);
        Coalesced(Mode::Kept(shared))
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // Every statement leaves `State` consistent: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: AsyncWrite + Unpin> State<S> {
    /// Writes what waits to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether `total` more bytes fit in what waits (none of it written yet).
    fn fits(&self, total: usize) -> bool {
        self.written == 0 && self.buf.len() + total <= COALESCE_MAX
    }

    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.take_error()?;
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if !self.fits(total) {
            ready!(self.poll_send(cx))?;
        }
        // A record's worth alone goes straight through, not copied.
        if total < COALESCE_MAX && self.fits(total) {
            for b in bufs {
                self.buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<S: AsyncWrite + Unpin + Send> PollEnd for Shared<S> {
    fn poll_end(&self, cx: &mut Context<'_>) {
        let mut state = self.lock();
        if state.buf.is_empty() && !state.flush {
            return;
        }
        // Pending: the socket's writability wakes the task, and a later poll's end (or a
        // write past the bound) sends the rest.
        let sent = match state.poll_send(cx) {
            Poll::Ready(Ok(())) if state.flush => Pin::new(&mut state.inner).poll_flush(cx),
            other => other,
        };
        match sent {
            Poll::Ready(Ok(())) => state.flush = false,
            Poll::Ready(Err(e)) => state.error = Some(e),
            Poll::Pending => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Mode::Direct(inner) => Pin::new(inner).poll_read(cx, buf),
            Mode::Kept(shared) => Pin::new(&mut shared.lock().inner).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Mode::Direct(inner) => Pin::new(inner).poll_write(cx, buf),
            Mode::Kept(shared) => shared.lock().poll_write_vectored(cx, &[IoSlice::new(buf)]),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Mode::Direct(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            Mode::Kept(shared) => shared.lock().poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Mode::Direct(inner) => inner.is_write_vectored(),
            Mode::Kept(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = match &mut self.get_mut().0 {
            Mode::Direct(inner) => return Pin::new(inner).poll_flush(cx),
            Mode::Kept(shared) => shared,
        };
        let mut state = shared.lock();
        state.take_error()?;
        if shared.gather.is_gathering() {
            // The poll's end writes and flushes.
            state.flush = true;
            return Poll::Ready(Ok(()));
        }
        ready!(state.poll_send(cx))?;
        state.flush = false;
        Pin::new(&mut state.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = match &mut self.get_mut().0 {
            Mode::Direct(inner) => return Pin::new(inner).poll_shutdown(cx),
            Mode::Kept(shared) => shared,
        };
        let mut state = shared.lock();
        ready!(state.poll_send(cx))?;
        Pin::new(&mut state.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::gather::tests::pair;
    use super::super::gather::Gathering;
    use super::*;

    /// What the mock TLS stream was asked to do.
    #[derive(Default)]
    struct Seen {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shutdown: bool,
    }

    /// A stand-in for the TLS stream: records each write; refuses them while `blocked`, fails
    /// them while `failing`.
    #[derive(Default, Clone)]
    struct Mock {
        seen: Arc<Mutex<Seen>>,
        blocked: Arc<std::sync::atomic::AtomicBool>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Mock {
        fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
            self.seen.lock().expect("lock")
        }
        fn writes(&self) -> Vec<Vec<u8>> {
            self.seen().writes.clone()
        }
    }

    impl AsyncRead for Mock {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            use std::sync::atomic::Ordering::Relaxed;
            if self.failing.load(Relaxed) {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.blocked.load(Relaxed) {
                return Poll::Pending;
            }
            self.seen().writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.seen().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.seen().shutdown = true;
            Poll::Ready(Ok(()))
        }
    }

    fn write(io: &mut Coalesced<Mock>, cx: &mut Context<'_>, data: &[u8]) -> io::Result<usize> {
        match Pin::new(io).poll_write(cx, data) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(io: &mut Coalesced<Mock>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(cx)
    }

    #[tokio::test]
    async fn a_polls_writes_and_flushes_reach_tls_once_at_its_end() {
        let (_socket, gather, _client) = pair().await;
        gather.enable();
        let mock = Mock::default();
        let mut io = Coalesced::new(mock.clone(), Some(&gather));
        let mut during = Vec::new();
        Gathering::new(
            std::future::poll_fn(|cx| {
                for frame in [&b"HEADERS "[..], b"DATA one ", b"DATA two"] {
                    assert_eq!(write(&mut io, cx, frame).expect("taken"), frame.len());
                    assert!(flush(&mut io, cx).is_ready());
                    during.push(mock.writes().len());
                }
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert_eq!(during, [0, 0, 0], "nothing reaches TLS during the poll");
        assert_eq!(mock.writes(), [b"HEADERS DATA one DATA two".to_vec()]);
        assert_eq!(mock.seen().flushes, 1, "one flush, at the poll's end");
    }

    #[tokio::test]
    async fn outside_a_gathering_poll_a_flush_sends_and_large_writes_pass() {
        let (_socket, gather, _client) = pair().await;
        gather.enable();
        let mock = Mock::default();
        let mut io = Coalesced::new(mock.clone(), Some(&gather));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        write(&mut io, &mut cx, b"kept").expect("taken");
        assert!(mock.writes().is_empty());
        assert!(flush(&mut io, &mut cx).is_ready());
        assert_eq!(mock.writes(), [b"kept".to_vec()]);
        // Past the bound: what waits goes first; a record's worth alone is not copied.
        let small = vec![1u8; 10 * 1024];
        let more = vec![2u8; 10 * 1024];
        let large = vec![3u8; COALESCE_MAX];
        for w in [&small, &more, &large] {
            write(&mut io, &mut cx, w).expect("taken");
        }
        // Compared by first byte and length (whole buffers would fill a failure's message).
        let shapes: Vec<(u8, usize)> = mock.writes()[1..].iter().map(|w| (w[0], w.len())).collect();
        assert_eq!(
            shapes,
            [(1, small.len()), (2, more.len()), (3, large.len())]
        );
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert!(mock.seen().shutdown);
    }

    #[tokio::test]
    async fn a_blocked_end_keeps_the_bytes_and_a_failed_one_is_reported() {
        let (_socket, gather, _client) = pair().await;
        gather.enable();
        let mock = Mock::default();
        let mut io = Coalesced::new(mock.clone(), Some(&gather));
        mock.blocked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Gathering::new(
            std::future::poll_fn(|cx| {
                write(&mut io, cx, b"waits").expect("taken");
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert!(mock.writes().is_empty(), "TLS would block: kept");
        mock.blocked
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(flush(&mut io, &mut cx).is_ready());
        assert_eq!(
            mock.writes(),
            [b"waits".to_vec()],
            "sent later, whole, in order"
        );
        // A failure at a poll's end is the next write's error.
        mock.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Gathering::new(
            std::future::poll_fn(|cx| {
                write(&mut io, cx, b"lost").expect("taken");
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        let e = write(&mut io, &mut cx, b"next").expect_err("the failure reported");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn what_the_last_poll_kept_goes_out_though_the_connection_ended_in_it() {
        let (_socket, gather, _client) = pair().await;
        gather.enable();
        let mock = Mock::default();
        let mut io = Some(Coalesced::new(mock.clone(), Some(&gather)));
        let mut polls = 0;
        Gathering::new(
            std::future::poll_fn(|cx| {
                polls += 1;
                let Some(c) = io.as_mut() else {
                    return Poll::Ready(());
                };
                write(c, cx, if polls == 1 { b"first " } else { b"GOAWAY" }).expect("taken");
                if polls == 1 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // The connection ends in this poll, dropping its IO.
                io = None;
                Poll::Ready(())
            }),
            gather.clone(),
        )
        .await;
        assert_eq!(mock.writes(), [b"first ".to_vec(), b"GOAWAY".to_vec()]);
    }

    #[tokio::test]
    async fn without_gathering_every_call_goes_straight_through() {
        let mock = Mock::default();
        let mut io = Coalesced::new(mock.clone(), None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        write(&mut io, &mut cx, b"one").expect("written");
        write(&mut io, &mut cx, b"two").expect("written");
        assert_eq!(mock.writes(), [b"one".to_vec(), b"two".to_vec()]);
    }

    #[tokio::test]
    async fn the_layer_and_its_socket_are_freed_together() {
        let (socket, gather, _client) = pair().await;
        gather.enable();
        let io = Coalesced::new(socket, Some(&gather));
        let Mode::Kept(shared) = &io.0 else {
            panic!("a gathering connection keeps its writes");
        };
        let weak = Arc::downgrade(shared);
        drop(io);
        assert!(
            weak.upgrade().is_none(),
            "no cycle through the poll-end hook"
        );
    }
}
