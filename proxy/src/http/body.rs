//! The body type zgate sends both ways: a streamed body from the other side, metered for the
//! client it belongs to, or a small one of its own (error pages). An enum rather than a boxed
//! trait object, so a proxied request costs no body allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::finish::Finish;
use super::min_rate::{MinRate, DEFAULT_GRACE};
use zgate_limiter::{ClientHandle, Fragments};

use crate::account::meter::{InFlightRequest, Meter};
use crate::upstream::{BackendBody, BackendHold, Outgoing, UploadProgress};

/// A request or response body passing through zgate.
pub enum ProxyBody {
    /// Streamed from the peer, with its backpressure, not metered.
    Incoming(Incoming),
    /// A client's request body on its way to the backend: forwarded bytes release what the
    /// client's meter counted as held, and its end ends the HTTP/1 message.
    Request {
        /// The client's body.
        inner: Incoming,
        /// The client's meter.
        meter: Arc<Meter>,
        /// Whether the end was reported.
        done: bool,
        /// The upload's pauses; `None` for a body that was complete with its head.
        upload: Option<Upload>,
        /// Bytes forwarded, for the access log (`None` without it).
        forwarded: Option<Arc<AtomicU64>>,
    },
    /// A backend's response on its way to the client: received bytes count as held for the
    /// client until written; the request stays in flight until the body ends or is dropped.
    Response {
        /// The backend's body.
        inner: BackendBody,
        /// The client's meter.
        meter: Arc<Meter>,
        /// The request, counted in flight until this is dropped.
        request: Option<InFlightRequest>,
        /// The backend connection's hold while the body streams over it, released at the
        /// body's end (the HTTP/1 body itself gives the connection back to its pool then, or
        /// closes it if dropped before).
        pool: Option<BackendHold>,
        /// The request's end: measured and logged when the body ends or is dropped.
        finish: Option<Finish>,
    },
    /// Complete in memory; `None` once sent.
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// A body of the given bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            ProxyBody::Full(None)
        } else {
            ProxyBody::Full(Some(data))
        }
    }
}

/// The error of a body: the peer's (hyper's), or zgate's own [`BodyTimeout`].
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A client paused its request body longer than `timeouts.body_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client paused its request body longer than timeouts.body_read")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `e`, or an error it was caused by, is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The client's request body failed (a malformed chunk, a reset stream): the client's fault,
/// answered 400, not a backend error.
#[derive(Debug)]
pub struct ClientBodyError(pub hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body failed: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e`, or an error it was caused by, is a [`ClientBodyError`].
pub fn is_client_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<ClientBodyError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body with more than its head, on its way to the backend. The client's pauses are
/// timed here against `timeouts.body_read`: a pause starts when the body has nothing to give
/// and ends with the next piece. Only time spent waiting on the client counts: while the
/// backend keeps zgate from reading (backpressure), the body is not polled, and a piece that
/// arrived meanwhile ends the pause when it finally is. The backend's waits are
/// `timeouts.backend_response`'s, through the [`UploadProgress`] shared with the wait for the
/// answer.
pub struct Upload {
    progress: Arc<UploadProgress>,
    body_read: Duration,
    /// `timeouts.body_min_rate`'s budget; `None` when it is off.
    min_rate: Option<MinRate>,
    /// When the current pause on the client started.
    paused_at: Option<Instant>,
    /// The pause timer, allocated on the first pause.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A forwarded client's body: its handle and the body's chunks so far (metric F is its,
    /// not the connection's).
    charged: Option<(Arc<ClientHandle>, Fragments)>,
}

/// Far enough to mean never, near enough not to overflow an `Instant`: a year.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Upload {
    /// The upload of a body that starts now; its pauses may last up to `body_read` (zero:
    /// any), and its pauses in all no more than `min_rate` allows (bytes per second, 0: off;
    /// see [`MinRate`], whose grace is `body_read`, or [`DEFAULT_GRACE`] when that is zero).
    pub fn new(body_read: Duration, min_rate: u64) -> Upload {
        let grace = if body_read.is_zero() {
            DEFAULT_GRACE
        } else {
            body_read
        };
        Upload {
            progress: Arc::new(UploadProgress::new()),
            body_read,
            min_rate: MinRate::new(min_rate, grace),
            paused_at: None,
            sleep: None,
            charged: None,
        }
    }

    /// The body's chunks are a forwarded client's: they count towards its fragmentation.
    pub fn charging(mut self, client: Arc<ClientHandle>) -> Upload {
        self.charged = Some((client, Fragments::default()));
        self
    }

    /// A piece of `n` bytes was taken from the body: a chunk of a forwarded client's message.
    fn chunk(&mut self, n: usize, meter: &Meter) {
        if let Some((client, fragments)) = &mut self.charged {
            let v = client.chunk(fragments, n, meter.now());
            meter.forwarded_verdict(client.client().addr(), v);
        }
    }

    /// How long the pause starting now may last: `body_read`, or less when the minimum rate
    /// allows less; `None`: any.
    fn pause_limit(&self) -> Option<Duration> {
        let pause = (!self.body_read.is_zero()).then_some(self.body_read);
        let rate = self.min_rate.as_ref().map(MinRate::allowance);
        match (pause, rate) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (p, r) => p.or(r),
        }
    }

    /// The body had nothing to give: the upload waits on the client. Ready once this pause
    /// has lasted its limit ([`Upload::pause_limit`]).
    fn poll_paused(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let new_pause = self.progress.waits_on_client();
        let now = Instant::now();
        if new_pause || self.paused_at.is_none() {
            self.paused_at = Some(now);
        }
        let Some(limit) = self.pause_limit() else {
            return Poll::Pending;
        };
        let start = self.paused_at.unwrap_or(now);
        let deadline = start
            .checked_add(limit.min(NEVER))
            .unwrap_or(start + Duration::from_secs(1));
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if new_pause {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }

    /// The body gave something (a piece of `n` bytes, its end or an error): the pause, if
    /// any, is over.
    fn progressed(&mut self, n: usize) {
        self.progress.progressed();
        let paused = self.paused_at.take();
        if let Some(m) = &mut self.min_rate {
            if let Some(start) = paused {
                m.paused(start.elapsed());
            }
            m.received(n);
        }
    }
}

impl Outgoing for ProxyBody {
    /// Who the upload of a request body on its way to the backend waits on, if it has one.
    fn progress(&self) -> Option<&Arc<UploadProgress>> {
        match self {
            ProxyBody::Request {
                upload: Some(u), ..
            } => Some(&u.progress),
            _ => None,
        }
    }

    /// An empty body again, for an empty one (no bytes, complete with its head).
    fn replay(&self) -> Option<Self> {
        let empty = self.is_end_stream() && self.size_hint().exact() == Some(0);
        empty.then(ProxyBody::empty)
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Incoming(body)
    }
}

fn data_len<E>(frame: &Option<Result<Frame<Bytes>, E>>) -> usize {
    match frame {
        Some(Ok(f)) => f.data_ref().map_or(0, Bytes::len),
        _ => 0,
    }
}

/// A peer's frame as zgate's body passes it on.
fn boxed(
    frame: Option<Result<Frame<Bytes>, hyper::Error>>,
) -> Option<Result<Frame<Bytes>, BodyError>> {
    frame.map(|r| r.map_err(BodyError::from))
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Incoming(body) => Pin::new(body).poll_frame(cx).map(boxed),
            ProxyBody::Request {
                inner,
                meter,
                done,
                upload,
                forwarded,
            } => {
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if let Some(u) = upload {
                            if u.poll_paused(cx).is_ready() {
                                return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                            }
                        }
                        return Poll::Pending;
                    }
                };
                let n = data_len(&frame);
                if let Some(u) = upload {
                    u.progressed(n);
                }
                if n > 0 {
                    meter.request_forwarded(n);
                    if let Some(f) = forwarded {
                        f.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if let Some(u) = upload {
                        u.chunk(n, meter);
                    }
                }
                if frame.is_none() && !*done {
                    *done = true;
                    meter.message_done();
                }
                let frame =
                    frame.map(|r| r.map_err(|e| -> BodyError { Box::new(ClientBodyError(e)) }));
                Poll::Ready(frame)
            }
            ProxyBody::Response {
                inner,
                meter,
                request,
                pool,
                finish,
            } => {
                let frame = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                let n = data_len(&frame);
                if n > 0 {
                    meter.response_received(n);
                    if let Some(f) = finish {
                        f.sent(n);
                    }
                }
                if frame.is_none() {
                    // The response is complete: the request is no longer in flight.
                    request.take();
                }
                // hyper stops polling a body once `is_end_stream` is true after a data frame,
                // so the end is noticed there as well as at `None`.
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => inner.is_end_stream(),
                    // A failed body closes its connection.
                    Some(Err(_)) => {
                        pool.take();
                        false
                    }
                };
                if ended {
                    if let Some(pool) = pool.take() {
                        pool.release();
                    }
                    // The last byte is on its way: the request is finished.
                    finish.take();
                }
                Poll::Ready(frame)
            }
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(body) | ProxyBody::Request { inner: body, .. } => {
                body.is_end_stream()
            }
            ProxyBody::Response { inner, .. } => inner.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(body) | ProxyBody::Request { inner: body, .. } => body.size_hint(),
            ProxyBody::Response { inner, .. } => inner.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn poll_paused(u: &mut Upload) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(u.poll_paused(cx))).await
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_timed_from_its_start_and_a_piece_ends_it() {
        let mut u = Upload::new(Duration::from_millis(100), 0);
        assert!(poll_paused(&mut u).await.is_pending(), "t=0: pause starts");
        advance_ms(60).await;
        assert!(poll_paused(&mut u).await.is_pending(), "t=60: same pause");
        u.progressed(1);
        advance_ms(60).await;
        // A new pause from t=120: the first one's 100 ms have passed, this one's have not.
        assert!(poll_paused(&mut u).await.is_pending(), "t=120: new pause");
        advance_ms(90).await;
        assert!(
            poll_paused(&mut u).await.is_pending(),
            "t=210: 90 ms into it"
        );
        advance_ms(20).await;
        assert!(
            poll_paused(&mut u).await.is_ready(),
            "t=230: 110 ms into it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_allows_any_pause() {
        let mut u = Upload::new(Duration::ZERO, 0);
        assert!(poll_paused(&mut u).await.is_pending());
        advance_ms(3_600_000).await;
        assert!(poll_paused(&mut u).await.is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn the_backend_deadline_waits_while_the_client_pauses() {
        let limit = Duration::from_millis(100);
        let mut u = Upload::new(Duration::ZERO, 0);
        u.progressed(1);
        let from_piece = Instant::now() + limit;
        assert_eq!(u.progress.backend_deadline(limit), from_piece);
        advance_ms(500).await;
        // Nothing polled since the piece: the backend's time runs from it.
        assert_eq!(u.progress.backend_deadline(limit), from_piece);
        // The body waits on the client: the backend's time does not run.
        assert!(poll_paused(&mut u).await.is_pending());
        advance_ms(500).await;
        assert_eq!(u.progress.backend_deadline(limit), Instant::now() + limit);
    }

    #[test]
    fn a_body_timeout_is_found_behind_the_errors_it_caused() {
        #[derive(Debug)]
        struct Outer(BodyError);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        let wrapped = Outer(Box::new(BodyTimeout));
        assert!(is_body_timeout(&wrapped));
        assert!(is_body_timeout(&BodyTimeout));
        let other = Outer(Box::new(std::io::Error::other("reset")));
        assert!(!is_body_timeout(&other));
    }
}
