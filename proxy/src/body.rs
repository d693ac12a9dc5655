//! The body type zgate sends both ways: a streamed body from the other side, metered for the
//! client it belongs to, or a small one of its own (error pages). An enum rather than a boxed
//! trait object, so a proxied request costs no body allocation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::meter::{InFlightRequest, Meter};
use crate::upstream::PoolReturn;

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
    },
    /// A backend's response on its way to the client: received bytes count as held for the
    /// client until written; the request stays in flight until the body ends or is dropped.
    Response {
        /// The backend's body.
        inner: Incoming,
        /// The client's meter.
        meter: Arc<Meter>,
        /// The request, counted in flight until this is dropped.
        request: Option<InFlightRequest>,
        /// The backend connection, given back to its pool when the body ends (dropped, and
        /// the connection with it, if the body is dropped before its end).
        pool: Option<PoolReturn>,
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

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Incoming(body)
    }
}

fn data_len(frame: &Option<Result<Frame<Bytes>, hyper::Error>>) -> usize {
    match frame {
        Some(Ok(f)) => f.data_ref().map_or(0, Bytes::len),
        _ => 0,
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Incoming(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Request { inner, meter, done } => {
                let frame = std::task::ready!(Pin::new(inner).poll_frame(cx));
                let n = data_len(&frame);
                if n > 0 {
                    meter.request_forwarded(n);
                }
                if frame.is_none() && !*done {
                    *done = true;
                    meter.message_done();
                }
                Poll::Ready(frame)
            }
            ProxyBody::Response {
                inner,
                meter,
                request,
                pool,
            } => {
                let frame = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                let n = data_len(&frame);
                if n > 0 {
                    meter.response_received(n);
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
                }
                Poll::Ready(frame)
            }
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(body)
            | ProxyBody::Request { inner: body, .. }
            | ProxyBody::Response { inner: body, .. } => body.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(body)
            | ProxyBody::Request { inner: body, .. }
            | ProxyBody::Response { inner: body, .. } => body.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
