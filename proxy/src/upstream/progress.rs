//! What the upstream knows of the request body being sent: who the upload waits on, and
//! whether the request can be sent again. The body type itself belongs to the http room; it reports here through
//! [`Outgoing`], so this room never names it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// A request body the upstream can send and watch.
pub trait Outgoing:
    http_body::Body<Data = Bytes, Error = Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Unpin
    + 'static
{
    /// Who the body's upload waits on; `None` for a body complete with its head.
    fn progress(&self) -> Option<&Arc<UploadProgress>>;

    /// A fresh body to send the request again with, for a body that is empty (complete with
    /// its head, no bytes); `None` for a body with content, which cannot be sent twice.
    fn replay(&self) -> Option<Self>
    where
        Self: Sized;
}

/// Who a request body's upload waits on, as the wait for the backend's answer sees it:
/// `timeouts.backend_response` counts only the time the backend keeps zgate waiting, not the
/// client's pauses, so a slow but steady upload is not cut, and a backend that stops taking
/// the body is.
#[derive(Debug)]
pub struct UploadProgress {
    base: Instant,
    /// When the body last gave something, ns since `base`.
    last: AtomicU64,
    /// The body had nothing to give when last polled: the upload waits on the client.
    on_client: AtomicBool,
}

impl UploadProgress {
    /// The progress of an upload that starts now.
    pub fn new() -> UploadProgress {
        UploadProgress {
            base: Instant::now(),
            last: AtomicU64::new(0),
            on_client: AtomicBool::new(false),
        }
    }

    /// The body had nothing to give: the upload now waits on the client. Whether this starts
    /// a new pause (it did not wait on the client already).
    pub fn waits_on_client(&self) -> bool {
        !self.on_client.swap(true, Ordering::Relaxed)
    }

    /// The body gave something (a piece, its end or an error): a pause, if any, is over.
    pub fn progressed(&self) {
        self.last
            .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.on_client.store(false, Ordering::Relaxed);
    }

    /// Until when the backend may still keep zgate waiting, `limit` after it last had to: now
    /// plus `limit` while the upload waits on the client, else `limit` after the body last
    /// gave something (its last piece taken, or its end).
    pub fn backend_deadline(&self, limit: Duration) -> Instant {
        if self.on_client.load(Ordering::Relaxed) {
            return Instant::now() + limit;
        }
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        self.base + last + limit
    }
}

impl Default for UploadProgress {
    fn default() -> Self {
        Self::new()
    }
}
