//! CPU accounting: every poll of a client's connection task and of its HTTP/2 stream tasks is
//! timed and charged to that client, and only to it (DESIGN.md §2, metric P).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::account::meter::Meter;

pin_project_lite::pin_project! {
    /// A future whose polls are charged to a client.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        meter: Arc<Meter>,
    }
}

impl<F> Timed<F> {
    /// Charges `inner`'s polls to `meter`'s client.
    pub fn new(inner: F, meter: Arc<Meter>) -> Self {
        Timed { inner, meter }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let start = Instant::now();
        let out = this.inner.poll(cx);
        let end = Instant::now();
        let spent = end.saturating_duration_since(start).as_nanos() as u64;
        this.meter.cpu(spent, this.meter.clock().at(end));
        out
    }
}

/// hyper's executor for a client's HTTP/2 stream tasks: spawns them on tokio, timed and
/// charged to the client.
#[derive(Clone)]
pub struct MeteredExec {
    meter: Arc<Meter>,
}

impl MeteredExec {
    /// An executor charging `meter`'s client.
    pub fn new(meter: Arc<Meter>) -> Self {
        MeteredExec { meter }
    }
}

impl<F> hyper::rt::Executor<F> for MeteredExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Timed::new(fut, self.meter.clone()));
    }
}
