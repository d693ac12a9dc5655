//! One request handed to a backend connection, until its response head arrives. If the
//! request is dropped before that (its client reset the HTTP/2 stream: Rapid Reset), hyper
//! would close the connection (its response has nowhere to go); instead the exchange finishes
//! in a task of its own: the response is read and discarded, and the connection goes back to
//! the idle pool. So a client that resets every stream it opens costs backend requests, but
//! not a backend connection each. The task is bounded: `timeouts.backend_response` for the
//! head, at most [`DRAIN_LIMIT`] bytes of body (more, and the connection is closed).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;

use super::pool::IdlePool;
use super::Outgoing;

/// The most response body bytes read to save a connection whose request was dropped: 256 KiB.
pub const DRAIN_LIMIT: usize = 256 * 1024;

type Answer<B> = Result<Response<Incoming>, TrySendError<Request<B>>>;
type Pending<B> = Pin<Box<dyn Future<Output = Answer<B>> + Send>>;

/// A request handed to `sender`, awaiting its response head.
pub(super) struct Exchange<B: Outgoing> {
    sender: Option<SendRequest<B>>,
    pending: Option<Pending<B>>,
    pool: Arc<IdlePool<B>>,
    limit: Duration,
}

impl<B: Outgoing> Exchange<B> {
    /// Hands `req` to `sender`; `pool` takes the connection back if the exchange is dropped
    /// before its answer, within `limit` (`timeouts.backend_response`).
    pub(super) fn start(
        mut sender: SendRequest<B>,
        req: Request<B>,
        pool: &Arc<IdlePool<B>>,
        limit: Duration,
    ) -> Self {
        let pending: Pending<B> = Box::pin(sender.try_send_request(req));
        Exchange {
            sender: Some(sender),
            pending: Some(pending),
            pool: pool.clone(),
            limit,
        }
    }

    /// The answer; then the sender is the caller's ([`Exchange::into_sender`]).
    pub(super) async fn answer(&mut self) -> Option<Answer<B>> {
        let answer = self.pending.as_mut()?.await;
        self.pending = None;
        Some(answer)
    }

    /// The connection, once answered.
    pub(super) fn into_sender(mut self) -> Option<SendRequest<B>> {
        self.sender.take()
    }
}

impl<B: Outgoing> Drop for Exchange<B> {
    fn drop(&mut self) {
        let (Some(sender), Some(pending)) = (self.sender.take(), self.pending.take()) else {
            return;
        };
        let pool = self.pool.clone();
        let limit = self.limit;
        tokio::spawn(async move {
            if let Ok(Ok(response)) = tokio::time::timeout(limit, pending).await {
                if drain(response.into_body(), limit).await {
                    pool.put(sender);
                }
            }
        });
    }
}

/// Reads `body` to its end within `limit` and [`DRAIN_LIMIT`] bytes; whether it ended.
async fn drain(mut body: Incoming, limit: Duration) -> bool {
    let read = async {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            total += frame.data_ref().map_or(0, |d| d.len());
            if total > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    matches!(tokio::time::timeout(limit, read).await, Ok(true))
}
