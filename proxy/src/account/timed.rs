//! CPU accounting: every poll of a client's connection task and of its HTTP/2 stream tasks is
//! timed and charged to that client, and only to it (DESIGN.md §2, metric P). A poll's wall time
//! is charged as CPU time through the worker thread's running share (`run_share.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use zgate_limiter::ClientHandle;

use crate::account::accounting::CPU_BATCH_NS;
use crate::account::meter::Meter;
use crate::account::run_share;

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
        let wall = end.saturating_duration_since(start).as_nanos() as u64;
        this.meter
            .cpu(run_share::cpu_ns(wall, end), this.meter.clock().at(end));
        out
    }
}

pin_project_lite::pin_project! {
    /// A request's work (its handler, up to the response head) whose polls are also charged
    /// to the forwarded client the request belongs to, in batches of [`CPU_BATCH_NS`] and at
    /// the end. The same polls stay charged to the connection (a trusted proxy, never
    /// blocked) through its task; without a forwarded client this only polls `inner`.
    pub struct ChargedTo<F> {
        #[pin]
        inner: F,
        client: Option<(Arc<ClientHandle>, Arc<Meter>)>,
        pending: u64,
    }
}

impl<F> ChargedTo<F> {
    /// Charges `inner`'s polls to `client` (its verdicts acted on by `meter`), if any.
    pub fn new(inner: F, client: Option<(Arc<ClientHandle>, Arc<Meter>)>) -> Self {
        ChargedTo {
            inner,
            client,
            pending: 0,
        }
    }
}

impl<F: Future> Future for ChargedTo<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some((client, meter)) = this.client.as_ref() else {
            return this.inner.poll(cx);
        };
        let start = Instant::now();
        let out = this.inner.poll(cx);
        let end = Instant::now();
        let wall = end.saturating_duration_since(start).as_nanos() as u64;
        *this.pending += run_share::cpu_ns(wall, end);
        if *this.pending >= CPU_BATCH_NS || out.is_ready() {
            let v = client.cpu_spent(std::mem::take(this.pending), meter.clock().at(end));
            meter.forwarded_verdict(client.client().addr(), v);
        }
        out
    }
}

/// hyper's executor for a client's HTTP/2 stream tasks: spawns them, timed and charged to the
/// client, on the runtime of the connection's own worker (a current-thread runtime: the
/// streams run on the connection's thread).
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
