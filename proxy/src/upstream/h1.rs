//! zgate's own HTTP/1.1 client to its backends, driven in the task of the request it carries.
//!
//! hyper's client connection is a task of its own, fed by a channel: each request wakes that
//! task, which wakes the request's task back with the answer, and each response body chunk
//! crosses the same way. Measured (`bench/results/issue-17.md`), that dispatch was a quarter to
//! a third of zgate's instructions per proxied request. Here the request's own task writes the
//! request and reads the answer: a [`Conn`] is the socket and its read buffer; an
//! [`Exchange`] writes a request on it (head, then the body as it comes, framed by
//! `wire.rs`) while watching for the answer; the answer's body is a [`Body`] that reads the
//! connection as the client takes it (backpressure: nothing is read ahead of the client) and,
//! at its end, gives the connection back to its backend's idle pool.
//!
//! - **Reuse** only when both messages ended cleanly: the request body fully sent, the
//!   response delimited by length or chunks and read to its end, no `Connection: close`, and
//!   nothing left over in the buffer (a backend that sends more than it framed is not trusted
//!   with another request).
//! - **An early answer** (before the request body was all sent: a `413`, or an echo that
//!   streams back what it reads) goes to the client at once; the rest of the request is
//!   written as the answer's body is read, and if the answer ends first, the connection
//!   closes after it.
//! - **Unsent**: a connection that fails before any byte of the request was written gives the
//!   request back whole, so a request with a body can be sent again on a fresh connection.
//! - **A request dropped before its answer** (a reset HTTP/2 stream: Rapid Reset) that was
//!   fully written finishes in a task of its own: the answer is read and discarded (at most
//!   [`DRAIN_LIMIT`] bytes of body, within `timeouts.backend_response`), and the connection
//!   goes back to the pool. A request dropped half-written closes its connection.
//! - **An idle connection the backend closed** is noticed at checkout: the socket's readiness
//!   (as the runtime last saw it, no system call while it is quiet) says something arrived,
//!   and an idle connection has nothing to receive but its end.
//!
//! HTTP/2 backends and protocol upgrades (a connection of its own, handed over at the `101`)
//! stay on hyper: `multiplex.rs`, `tunnel.rs`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::connect::Opened;
use super::pool::IdlePool;
use super::wire::{self, Chunked, Decoded, Framing, Sending, WireError};
use super::{Outgoing, BACKEND_BUFFER};

/// The most response body bytes read to save a connection whose request was dropped: 256 KiB.
pub const DRAIN_LIMIT: usize = 256 * 1024;

/// The first read's room; it doubles while reads fill it, up to [`BACKEND_BUFFER`].
const FIRST_READ: usize = 16 * 1024;

/// The most pieces handed to one vectored write.
const MAX_SLICES: usize = 16;

/// One connection to a backend, with what was read from it and not used yet. Boxed once per
/// connection, so the bodies and exchanges that carry it stay small (a response body is part
/// of every request's future).
pub(super) struct Conn(Box<ConnState>);

pub(super) struct ConnState {
    io: Opened,
    buf: BytesMut,
    /// The room of the next read (see [`FIRST_READ`]).
    read_size: usize,
}

impl std::ops::Deref for Conn {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("tls", &matches!(self.io, Opened::Tls(_)))
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Conn {
    pub(super) fn new(io: Opened) -> Conn {
        Conn(Box::new(ConnState {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
        }))
    }
}

impl ConnState {
    /// Whether the idle connection is closed, or otherwise unfit for a request: the backend
    /// sent something (its end, a TLS alert, stray bytes) since the last response. Costs a
    /// system call only when the runtime saw the socket become readable.
    pub(super) fn is_closed(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let tcp = self.io.tcp();
        let mut cx = Context::from_waker(Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readiness can be left over from the last response's read: a read tells.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the connection.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room && self.read_size < BACKEND_BUFFER {
            self.read_size = (self.read_size * 2).min(BACKEND_BUFFER);
        }
        Poll::Ready(Ok(n))
    }
}

/// Why an exchange or a response body failed.
#[derive(Debug)]
pub enum H1Error {
    /// The connection failed.
    Io(io::Error),
    /// The backend closed the connection before the end of its answer.
    Closed,
    /// The backend sent something that is not HTTP/1.1, or the request cannot be framed.
    Wire(WireError),
    /// The client's request body failed (its error says why): not the backend's doing.
    ClientBody(Box<dyn std::error::Error + Send + Sync>),
}

impl H1Error {
    /// Whether the client's request body failed, rather than the backend.
    pub fn is_client(&self) -> bool {
        matches!(
            self,
            H1Error::ClientBody(_) | H1Error::Wire(WireError::RequestBodyLength)
        )
    }
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Io(e) => write!(f, "backend connection: {e}"),
            H1Error::Closed => f.write_str("the backend closed the connection mid-answer"),
            H1Error::Wire(e) => e.fmt(f),
            H1Error::ClientBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for H1Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            H1Error::Io(e) => Some(e),
            H1Error::Wire(e) => Some(e),
            H1Error::ClientBody(e) => Some(&**e),
            H1Error::Closed => None,
        }
    }
}

impl From<WireError> for H1Error {
    fn from(e: WireError) -> Self {
        H1Error::Wire(e)
    }
}

/// How an exchange failed.
pub(super) enum Failure<B> {
    /// The connection failed before any byte of the request was written: the request, whole.
    Unsent(Box<Request<B>>, H1Error),
    /// The exchange failed after the request was (maybe partly) written.
    Failed(H1Error),
}

/// What is left to write of a request: queued bytes, and the body still to come.
struct Outbound<B> {
    /// The request body still to send (`None`: sent, or none).
    body: Option<B>,
    sending: Sending,
    /// Bytes to write, in order.
    queue: Queue,
}

impl<B: Outgoing> Outbound<B> {
    /// Whether the whole request was written.
    fn is_sent(&self) -> bool {
        self.body.is_none() && self.queue.is_empty()
    }

    /// Writes what is queued, then the body, a piece at a time, as it comes; ready once the
    /// whole request is written. `wrote` is set when any byte was; the body is polled only
    /// after everything queued before it (the head) is written.
    fn poll_send(
        &mut self,
        io: &mut Opened,
        wrote: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            std::task::ready!(self.queue.poll_write(io, wrote, cx)).map_err(H1Error::Io)?;
            std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(H1Error::Io)?;
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // A body that knows it has ended is not polled again (as hyper does).
                    let ended = body.is_end_stream();
                    self.queue_frame(frame)?;
                    if ended && self.body.is_some() {
                        self.queue_end()?;
                    }
                }
                None => self.queue_end()?,
                Some(Err(e)) => return Poll::Ready(Err(H1Error::ClientBody(e))),
            }
        }
    }

    /// Queues a frame of the request body, framed.
    fn queue_frame(&mut self, frame: Frame<Bytes>) -> Result<(), H1Error> {
        let trailers = match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                match &mut self.sending {
                    Sending::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Err(H1Error::Wire(WireError::RequestBodyLength));
                        }
                        *left -= len;
                        self.queue.push_back(data);
                    }
                    Sending::Chunked => {
                        self.queue.push_back(wire::chunk_line(data.len()));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Sending::Nothing => {
                        return Err(H1Error::Wire(WireError::RequestBodyLength));
                    }
                }
                return Ok(());
            }
            Err(frame) => frame.into_trailers(),
        };
        // Trailers end the body; only a chunked one can carry them.
        if let (Ok(trailers), Sending::Chunked) = (trailers, self.sending) {
            self.queue.push_back(wire::last_chunk_with(&trailers));
            self.sending = Sending::Nothing;
        }
        self.queue_end()
    }

    /// The request body ended: its last chunk, or a check that its length was all sent.
    fn queue_end(&mut self) -> Result<(), H1Error> {
        self.body = None;
        match std::mem::replace(&mut self.sending, Sending::Nothing) {
            Sending::Chunked => {
                self.queue.push_back(Bytes::from_static(wire::LAST_CHUNK));
                Ok(())
            }
            Sending::Length(left) if left > 0 => Err(H1Error::Wire(WireError::RequestBodyLength)),
            _ => Ok(()),
        }
    }
}

/// The rest of a request still being written while its answer is read (a backend may answer
/// before it has the whole body, and go on reading it: an echo, a stream).
trait Upload: Send {
    fn poll_upload(&mut self, io: &mut Opened, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>>;
}

impl<B: Outgoing> Upload for Outbound<B> {
    fn poll_upload(&mut self, io: &mut Opened, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        self.poll_send(io, &mut false, cx)
    }
}

/// A request on its way over a [`Conn`], until its answer's head.
pub(super) struct Exchange<B: Outgoing> {
    conn: Option<Conn>,
    /// The request head, until a byte of it is written (then the request cannot come back).
    unsent: Option<Parts>,
    /// The body of a request whose body was complete with its head, kept with `unsent`.
    bodiless: Option<B>,
    out: Outbound<B>,
    /// The head could not be framed: the error to answer with.
    refused: Option<WireError>,
    method: Method,
    /// Where the connection goes after a clean exchange.
    pool: Arc<IdlePool>,
    /// `timeouts.backend_response`, for the drain of a dropped exchange.
    limit: Duration,
    /// Finishing a dropped request's exchange: dropped again, it closes.
    draining: bool,
}

impl<B: Outgoing> Exchange<B> {
    /// Starts writing `req` on `conn`; `pool` takes the connection back after the answer (or
    /// after the answer of a request dropped before it, within `limit`).
    pub(super) fn start(
        conn: Conn,
        req: Request<B>,
        pool: &Arc<IdlePool>,
        limit: Duration,
    ) -> Self {
        let (parts, body) = req.into_parts();
        let end = body.is_end_stream();
        let (head, sending, refused) = match wire::write_head(&parts, end, body.size_hint().exact())
        {
            Ok((head, s)) => (head, s, None),
            Err(e) => (Bytes::new(), Sending::Nothing, Some(e)),
        };
        // A body complete with its head is not polled (as hyper does not): it is kept only to
        // give the request back unsent.
        let (body, bodiless) = if sending == Sending::Nothing && end {
            (None, Some(body))
        } else {
            (Some(body), None)
        };
        let mut queue = Queue::default();
        queue.push_back(head);
        Exchange {
            conn: Some(conn),
            method: parts.method.clone(),
            unsent: Some(parts),
            bodiless,
            out: Outbound {
                body,
                sending,
                queue,
            },
            refused,
            pool: pool.clone(),
            limit,
            draining: false,
        }
    }

    /// The answer's head and its body (which holds the connection until it ends).
    pub(super) async fn answer(&mut self) -> Result<Response<Body>, Failure<B>> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn fail(&mut self, e: H1Error) -> Failure<B> {
        self.conn = None;
        let body = self.out.body.take().or_else(|| self.bodiless.take());
        match (self.unsent.take(), body) {
            (Some(parts), Some(body)) => {
                Failure::Unsent(Box::new(Request::from_parts(parts, body)), e)
            }
            _ => Failure::Failed(e),
        }
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<Body>, Failure<B>>> {
        if let Some(e) = self.refused.take() {
            self.conn = None;
            return Poll::Ready(Err(Failure::Failed(H1Error::Wire(e))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Err(Failure::Failed(H1Error::Closed)));
            };
            if !self.out.is_sent() {
                let mut wrote = false;
                let sent = self.out.poll_send(&mut conn.io, &mut wrote, cx);
                if wrote {
                    self.unsent = None;
                    self.bodiless = None;
                }
                if let Poll::Ready(Err(e)) = sent {
                    return Poll::Ready(Err(self.fail(e)));
                }
            }
            // The answer may come before the request is all sent.
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) => return Poll::Ready(Err(self.fail(H1Error::Closed))),
                Ok(_) => match wire::parse_head(&mut conn.buf, &self.method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(self.take_answer(head))),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(self.fail(H1Error::Wire(e)))),
                },
                Err(e) => return Poll::Ready(Err(self.fail(H1Error::Io(e)))),
            }
        }
    }

    /// The answer to the request: its body takes the connection, and the rest of the request
    /// to write if the answer came first.
    fn take_answer(&mut self, head: wire::Head) -> Response<Body> {
        self.unsent = None;
        let conn = self.conn.take();
        let rest: Option<Box<dyn Upload>> = if self.out.is_sent() {
            None
        } else {
            let out = Outbound {
                body: self.out.body.take(),
                sending: self.out.sending,
                queue: std::mem::take(&mut self.out.queue),
            };
            Some(Box::new(out))
        };
        let reuse = head.keep_alive.then(|| self.pool.clone());
        let body = Body::new(conn, head.framing, reuse, rest);
        let (parts, ()) = head.response.into_parts();
        Response::from_parts(parts, body)
    }
}

impl<B: Outgoing> Drop for Exchange<B> {
    fn drop(&mut self) {
        if self.draining || self.conn.is_none() {
            return;
        }
        if self.unsent.is_some() {
            // Nothing written: the connection is as it was.
            if let Some(conn) = self.conn.take() {
                self.pool.put(conn);
            }
            return;
        }
        // Half-written: the connection closes with the exchange.
        if !self.out.is_sent() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rest: Exchange<B> = Exchange {
            conn: self.conn.take(),
            unsent: None,
            bodiless: None,
            out: Outbound {
                body: None,
                sending: Sending::Nothing,
                queue: Queue::default(),
            },
            refused: None,
            method: self.method.clone(),
            pool: self.pool.clone(),
            limit: self.limit,
            draining: true,
        };
        runtime.spawn(finish_dropped(rest));
    }
}

/// Reads the answer to a dropped request and its body (at most [`DRAIN_LIMIT`] bytes, within
/// the exchange's limit each); a body read to its end gives the connection back.
async fn finish_dropped<B: Outgoing>(mut rest: Exchange<B>) {
    let limit = rest.limit;
    let Ok(Ok(response)) = tokio::time::timeout(limit, rest.answer()).await else {
        return;
    };
    let mut body = response.into_body();
    let drain = async {
        let mut total = 0usize;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else { return };
            total += frame.data_ref().map_or(0, Bytes::len);
            if total > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// Bytes to write, in order: the first piece inline (a bodiless request's head is all there
/// is, and needs no allocation), the others after it.
#[derive(Default)]
struct Queue {
    first: Bytes,
    rest: VecDeque<Bytes>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    fn push_back(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if self.first.is_empty() {
            self.first = piece;
        } else {
            self.rest.push_back(piece);
        }
    }

    /// Drops `n` written bytes from the front.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && !self.first.is_empty() {
            let len = self.first.len().min(n);
            self.first.advance(len);
            n -= len;
            if self.first.is_empty() {
                self.first = self.rest.pop_front().unwrap_or_default();
            }
        }
    }

    /// Writes the front (several pieces in one call when the IO takes them); ready once empty.
    /// `wrote` is set when any byte was written.
    fn poll_write(
        &mut self,
        io: &mut Opened,
        wrote: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let n = if !self.rest.is_empty() && io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                slices[0] = IoSlice::new(&self.first);
                let mut count = 1;
                for (slot, piece) in slices[1..].iter_mut().zip(self.rest.iter()) {
                    *slot = IoSlice::new(piece);
                    count += 1;
                }
                std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            } else {
                std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.first))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *wrote = true;
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// How much of a response body is left.
#[derive(Debug)]
enum Decode {
    /// All of it was read with the head (the connection is given back already).
    Whole(Option<Bytes>),
    /// This many bytes.
    Length(u64),
    Chunked(Chunked),
    /// Up to the connection's end.
    Close,
    /// None.
    Done,
}

/// A response body read from its backend connection as it is taken; the connection goes back
/// to its pool at the end when the exchange allows reuse, and closes otherwise (and when the
/// body is dropped before its end).
pub struct Body {
    conn: Option<Conn>,
    decode: Decode,
    /// Where the connection goes at the end; `None`: it closes.
    reuse: Option<Arc<IdlePool>>,
    /// The rest of the request, when the answer came before it was all written: written as
    /// the body is read. A connection whose request is not all written at the answer's end
    /// closes.
    rest: Option<Box<dyn Upload>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("conn", &self.conn)
            .field("decode", &self.decode)
            .field("uploading", &self.rest.is_some())
            .finish()
    }
}

impl Body {
    fn new(
        conn: Option<Conn>,
        framing: Framing,
        reuse: Option<Arc<IdlePool>>,
        rest: Option<Box<dyn Upload>>,
    ) -> Body {
        let mut body = Body {
            rest,
            conn,
            decode: match framing {
                Framing::Empty => Decode::Done,
                Framing::Length(n) => Decode::Length(n),
                Framing::Chunked => Decode::Chunked(Chunked::new()),
                Framing::Close => Decode::Close,
            },
            reuse,
        };
        match body.decode {
            Decode::Done => body.finish(),
            Decode::Length(n) => {
                // Small bodies come with their head: taken now, the connection is free at once.
                let whole = body
                    .conn
                    .as_mut()
                    .filter(|c| c.buf.len() as u64 >= n)
                    .and_then(|c| usize::try_from(n).ok().map(|n| c.buf.split_to(n).freeze()));
                if let Some(whole) = whole {
                    body.decode = Decode::Whole(Some(whole));
                    body.finish();
                }
            }
            _ => {}
        }
        body
    }

    /// Whether the body still reads from its backend connection.
    pub fn holds_connection(&self) -> bool {
        self.conn.is_some()
    }

    /// The body's end was read: the connection goes back to the pool (if it may be reused and
    /// nothing follows the answer), or closes.
    fn finish(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Some(pool) = self.reuse.take() else {
            return;
        };
        if let Some(mut rest) = self.rest.take() {
            // The request's end may be all that is left: a last try, without waiting.
            let mut cx = Context::from_waker(Waker::noop());
            if !matches!(rest.poll_upload(&mut conn.io, &mut cx), Poll::Ready(Ok(()))) {
                return;
            }
        }
        // Bytes left over after the answer: `put` refuses the connection (see `is_closed`).
        pool.put(conn);
    }

    /// Writes more of the request, if the answer came before it was all written.
    fn upload(&mut self, cx: &mut Context<'_>) {
        let (Some(rest), Some(conn)) = (self.rest.as_mut(), self.conn.as_mut()) else {
            return;
        };
        match rest.poll_upload(&mut conn.io, cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.rest = None,
            Poll::Ready(Err(e)) => {
                // The answer is still read; the connection will not be reused.
                tracing::debug!(error = %e, "the rest of the request failed after its answer");
                self.rest = None;
                self.reuse = None;
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.upload(cx);
        loop {
            let conn = match &mut self.decode {
                Decode::Done => return Poll::Ready(None),
                Decode::Whole(data) => {
                    let data = data.take();
                    self.decode = Decode::Done;
                    return Poll::Ready(data.map(|d| Ok(Frame::data(d))));
                }
                _ => match self.conn.as_mut() {
                    Some(conn) => conn,
                    None => return Poll::Ready(Some(Err(H1Error::Closed))),
                },
            };
            match &mut self.decode {
                Decode::Length(left) if !conn.buf.is_empty() => {
                    let n =
                        usize::try_from(*left).map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                    let data = conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        self.decode = Decode::Done;
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Chunked(chunked) => match chunked.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        self.decode = Decode::Done;
                        self.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        self.decode = Decode::Done;
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(H1Error::Wire(e))));
                    }
                },
                Decode::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                _ => {}
            }
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    self.conn = None;
                    if matches!(self.decode, Decode::Close) {
                        self.decode = Decode::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(H1Error::Closed)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done | Decode::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decode {
            Decode::Whole(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Decode::Length(n) => SizeHint::with_exact(*n),
            Decode::Whole(None) | Decode::Done => SizeHint::with_exact(0),
            Decode::Chunked(_) | Decode::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client against scripted backends: each connection reads whole requests and answers
    //! each with the next of its script's answers.
    use super::super::tests::{get, pool_of};
    use super::super::{BackendBody, Upstream};
    use super::*;
    use crate::http::body::ProxyBody;
    use http_body_util::BodyExt;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    /// A backend whose connections answer each request with the next answer of the script
    /// (shared by all its connections), then, for answers marked so, close.
    struct Scripted {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        /// Every request as received, head and body, in order.
        received: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    /// An answer: its bytes, and whether the connection closes after it.
    type Answer = (&'static str, bool);

    /// A loopback backend running `serve` on each connection it accepts, in a task of its own:
    /// its address, and how many connections it accepted.
    async fn backend<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s));
            }
        });
        (addr, accepted)
    }

    async fn scripted(script: Vec<Answer>) -> Scripted {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let r = received.clone();
        let (addr, connections) = backend(move |mut s| {
            let (script, received) = (script.clone(), r.clone());
            async move {
                let mut buf = Vec::new();
                loop {
                    let Some(request) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    received.lock().expect("lock").push(request);
                    let next = script.lock().expect("lock").pop_front();
                    let Some((answer, close)) = next else { return };
                    if s.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            }
        })
        .await;
        Scripted {
            addr,
            connections,
            received,
        }
    }

    /// One whole request from `s` (head, and a body by `Content-Length` or chunked).
    async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = request_end(buf) {
                return Some(buf.drain(..end).collect());
            }
            if !read_more(s, buf).await {
                return None;
            }
        }
    }

    /// Reads what `s` has into `buf`; false at its end or on an error.
    async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Where the request at the front of `buf` ends, if it is whole.
    fn request_end(buf: &[u8]) -> Option<usize> {
        let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        if text.contains("transfer-encoding: chunked") {
            let rest = &buf[head..];
            return rest
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map(|p| head + p + 5);
        }
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (buf.len() >= head + len).then_some(head + len)
    }

    /// The pool of the one backend at `addr`, waiting at most 5 s for an answer.
    fn upstream<B: Outgoing>(addr: SocketAddr) -> Upstream<B> {
        pool_of(addr, "[timeouts]\nbackend_response = \"5s\"")
    }

    /// The body's data and trailers.
    async fn read_all(body: BackendBody) -> (Vec<u8>, Option<http::HeaderMap>) {
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn chunked_answers_with_trailers_and_the_connection_is_reused() {
        let b = scripted(vec![
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 7\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        ])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        let (resp, hold) = up.send_pooled(get("/a")).await.expect("answer");
        assert!(!resp.headers().contains_key("content-length"));
        let (data, trailers) = read_all(resp.into_body()).await;
        drop(hold);
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.expect("trailers")["x-sum"], "7");
        let (resp, _) = up.send_pooled(get("/b")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"ok");
        assert_eq!(
            b.connections.load(Ordering::SeqCst),
            1,
            "one connection for both"
        );
        let received = b.received.lock().expect("lock").clone();
        assert_eq!(
            String::from_utf8_lossy(&received[0]),
            "GET /a HTTP/1.1\r\nhost: test\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_answer_delimited_by_close_is_read_to_the_end_and_not_reused() {
        let b = scripted(vec![
            ("HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
        ])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        let (resp, _) = up.send_pooled(get("/")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"until the end");
        let (resp, _) = up.send_pooled(get("/")).await.expect("answer");
        assert_eq!(resp.status(), 204);
        assert_eq!(b.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stray_bytes_after_an_answer_or_connection_close_forbid_reuse() {
        let b = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxJUNK", false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\ny",
                false,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", false),
        ])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        for want in [b"x", b"y", b"z"] {
            let (resp, _) = up.send_pooled(get("/")).await.expect("answer");
            assert_eq!(read_all(resp.into_body()).await.0, want);
        }
        assert_eq!(b.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_malformed_answer_is_a_failure_not_a_response() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nab",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            let b = scripted(vec![(bad, false)]).await;
            let up = upstream::<ProxyBody>(b.addr);
            let failed = up.send_pooled(get("/")).await;
            assert!(
                matches!(failed, Err(super::super::UpstreamError::Failed(_))),
                "{bad:?}"
            );
        }
        // A chunked body that goes wrong half way fails the body.
        let b = scripted(vec![(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX",
            false,
        )])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        let (resp, _) = up.send_pooled(get("/")).await.expect("head");
        assert!(resp.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_not_used() {
        // The backend closes each connection after its answer, without saying so.
        let b = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", true),
        ])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        let (resp, _) = up.send_pooled(get("/")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"a");
        // Let the close arrive.
        for _ in 0..100 {
            if up.idle_connections().sum::<usize>() == 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let post = Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "test")
            .body(ProxyBody::full("data"))
            .expect("request");
        let (resp, _) = up
            .send_pooled(post)
            .await
            .expect("answer on a fresh connection");
        assert_eq!(read_all(resp.into_body()).await.0, b"b");
        assert_eq!(b.connections.load(Ordering::SeqCst), 2);
        let received = b.received.lock().expect("lock").clone();
        assert!(received[1].ends_with(b"content-length: 4\r\n\r\ndata"));
    }

    /// A request body fed by the test, piece by piece.
    struct Fed {
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        exact: Option<u64>,
    }

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
        }
        fn size_hint(&self) -> SizeHint {
            self.exact.map(SizeHint::with_exact).unwrap_or_default()
        }
    }

    impl Outgoing for Fed {
        fn progress(&self) -> Option<&Arc<super::super::UploadProgress>> {
            None
        }
        fn replay(&self) -> Option<Self> {
            None
        }
    }

    fn post(exact: Option<u64>) -> (tokio::sync::mpsc::Sender<Bytes>, Request<Fed>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let req = Request::builder()
            .method("POST")
            .uri("/up")
            .header("host", "test")
            .body(Fed { rx, exact })
            .expect("request");
        (tx, req)
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_chunked_and_a_known_one_by_length() {
        let b = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        ])
        .await;
        let up = upstream::<Fed>(b.addr);
        let (tx, req) = post(None);
        let send = tokio::spawn(async move {
            for piece in ["ab", "", "cde"] {
                tx.send(Bytes::from(piece)).await.expect("send");
            }
        });
        let (resp, _) = up.send_pooled(req).await.expect("answer");
        assert_eq!(resp.status(), 200);
        send.await.expect("fed");
        let (tx, req) = post(Some(5));
        tx.send(Bytes::from("12345")).await.expect("send");
        drop(tx);
        up.send_pooled(req).await.expect("answer");
        let received = b.received.lock().expect("lock").clone();
        assert_eq!(
            String::from_utf8_lossy(&received[0]),
            "POST /up HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&received[1]),
            "POST /up HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\n12345"
        );
        assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_passed_on_and_the_connection_closed() {
        // The backend answers as soon as it has a head: it does not wait for the body.
        let (addr, _) = backend(|mut s| async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig";
            let _ = s.write_all(answer.as_bytes()).await;
            // Keeps the connection open, reading nothing more.
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let up = upstream::<Fed>(addr);
        let (tx, req) = post(Some(1 << 20));
        tx.send(Bytes::from("first piece")).await.expect("send");
        // The rest never comes: the answer must not wait for it.
        let (resp, _) = up.send_pooled(req).await.expect("answer");
        assert_eq!(resp.status(), 413);
        assert_eq!(read_all(resp.into_body()).await.0, b"big");
        drop(tx);
        assert_eq!(up.idle_connections().sum::<usize>(), 0, "not reused");
    }

    #[tokio::test]
    async fn an_echo_that_answers_before_the_body_gets_the_rest_of_it() {
        // The backend answers with its head as soon as it has the request's, then echoes the
        // body as it reads it.
        let (addr, accepted) = backend(|mut s| async move {
            let mut buf = Vec::new();
            loop {
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    if !read_more(&mut s, &mut buf).await {
                        return;
                    }
                };
                buf.drain(..head_end);
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut echoed = 0;
                while echoed < 6 {
                    if buf.is_empty() && !read_more(&mut s, &mut buf).await {
                        return;
                    }
                    let n = buf.len().min(6 - echoed);
                    let piece: Vec<u8> = buf.drain(..n).collect();
                    if s.write_all(&piece).await.is_err() {
                        return;
                    }
                    echoed += n;
                }
            }
        })
        .await;
        let up = upstream::<Fed>(addr);
        let (tx, req) = post(Some(6));
        let feed = tokio::spawn(async move {
            for piece in ["abc", "def"] {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(Bytes::from(piece)).await.expect("send");
            }
        });
        let (resp, _) = up.send_pooled(req).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"abcdef");
        feed.await.expect("fed");
        let (tx, req) = post(Some(6));
        tx.send(Bytes::from("ghijkl")).await.expect("send");
        drop(tx);
        let (resp, _) = up.send_pooled(req).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"ghijkl");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the request was all sent: reused"
        );
    }

    #[tokio::test]
    async fn a_connection_that_fails_before_any_byte_is_written_gives_the_request_back() {
        for (method, body) in [("PUT", "payload"), ("GET", "")] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let ours = TcpStream::connect(listener.local_addr().expect("address"))
                .await
                .expect("connect");
            let (theirs, _) = listener.accept().await.expect("accept");
            // The backend resets the connection (SO_LINGER 0, then close), and the reset
            // arrives before the request is written.
            socket2::SockRef::from(&theirs)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            drop(theirs);
            ours.readable().await.expect("the reset arrives");
            let pool = Arc::new(IdlePool::new(4, Duration::from_secs(60), 1));
            let req = Request::builder()
                .method(method)
                .uri("/x?y")
                .header("host", "test")
                .body(ProxyBody::full(body))
                .expect("request");
            let mut exchange = Exchange::start(
                Conn::new(Opened::Plain(ours)),
                req,
                &pool,
                Duration::from_secs(5),
            );
            match exchange.answer().await {
                Err(Failure::Unsent(req, e)) => {
                    assert!(matches!(e, H1Error::Io(_)), "{e}");
                    assert_eq!(req.method(), method);
                    assert_eq!(req.uri(), "/x?y");
                    assert_eq!(req.headers()["host"], "test");
                    let whole = req.into_body().collect().await.expect("body").to_bytes();
                    assert_eq!(whole, body.as_bytes(), "the body was not taken");
                }
                Err(Failure::Failed(e)) => panic!("{method}: failed, not given back: {e}"),
                Ok(r) => panic!("{method}: answered {}", r.status()),
            }
        }
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_leaves_the_connection_to_the_pool() {
        let b = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond", false),
        ])
        .await;
        let up = upstream::<ProxyBody>(b.addr);
        // Polled until the request is written, then dropped: a reset stream.
        {
            let mut send = std::pin::pin!(up.send_pooled(get("/dropped")));
            'written: for _ in 0..100 {
                let polled = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
                assert!(polled.is_pending(), "the answer takes a round trip");
                // Not polled meanwhile: the answer cannot be taken.
                for _ in 0..10 {
                    if !b.received.lock().expect("lock").is_empty() {
                        break 'written;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            assert_eq!(
                b.received.lock().expect("lock").len(),
                1,
                "the request was written"
            );
        }
        for _ in 0..200 {
            if up.idle_connections().sum::<usize>() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (resp, _) = up.send_pooled(get("/next")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"second");
        assert_eq!(
            b.connections.load(Ordering::SeqCst),
            1,
            "the drained one was reused"
        );
    }

    /// A backend that answers one request on each connection with `ok`, keeps the connection
    /// open until `close` fires (or for good), and reports on `saw_end` when zgate closes it.
    async fn one_answer_backend(
        close: Option<oneshot::Receiver<()>>,
        saw_end: oneshot::Sender<()>,
    ) -> SocketAddr {
        let close = Mutex::new(close);
        let saw_end = Mutex::new(Some(saw_end));
        let hooks = Arc::new((close, saw_end));
        let (addr, _) = backend(move |mut s| {
            let hooks = hooks.clone();
            async move {
                let mut buf = Vec::new();
                while request_end(&buf).is_none() {
                    if !read_more(&mut s, &mut buf).await {
                        return;
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let close = hooks.0.lock().expect("hooks").take();
                match close {
                    Some(close) => {
                        let _ = close.await;
                    }
                    // Reads until zgate closes the connection.
                    None => while read_more(&mut s, &mut buf).await {},
                }
                drop(s);
                if let Some(tx) = hooks.1.lock().expect("hooks").take() {
                    let _ = tx.send(());
                }
            }
        })
        .await;
        addr
    }

    /// Sweeps `up` until it keeps no idle connection (at most 200 times, 10 ms apart: the
    /// runtime has to see the socket's end first); the idle count then.
    async fn sweep_until_empty(up: &Upstream<ProxyBody>) -> usize {
        for _ in 0..200 {
            up.sweep_idle();
            if up.idle_connections().sum::<usize>() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        up.idle_connections().sum()
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_connections_past_the_idle_timeout() {
        let (saw_end, ended) = oneshot::channel();
        let addr = one_answer_backend(None, saw_end).await;
        let up = pool_of::<ProxyBody>(addr, "[upstream]\npool_idle_timeout = \"50ms\"");
        let (resp, hold) = up.send_pooled(get("/")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"ok");
        if let Some(hold) = hold {
            hold.release();
        }
        assert_eq!(up.idle_connections().sum::<usize>(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(sweep_until_empty(&up).await, 0);
        // No request came after it: the sweep, not a checkout, closed the socket.
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("the backend saw the connection end")
            .expect("reported");
    }

    #[tokio::test]
    async fn the_sweep_closes_idle_connections_the_backend_closed() {
        let (close, closed) = oneshot::channel();
        let (saw_end, _ended) = oneshot::channel();
        let addr = one_answer_backend(Some(closed), saw_end).await;
        let up = pool_of::<ProxyBody>(addr, "");
        let (resp, hold) = up.send_pooled(get("/")).await.expect("answer");
        assert_eq!(read_all(resp.into_body()).await.0, b"ok");
        if let Some(hold) = hold {
            hold.release();
        }
        up.sweep_idle();
        assert_eq!(
            up.idle_connections().sum::<usize>(),
            1,
            "open and fresh: kept"
        );
        close.send(()).expect("backend waiting");
        assert_eq!(
            sweep_until_empty(&up).await,
            0,
            "closed by the backend: swept"
        );
    }
}
