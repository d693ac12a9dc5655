//! CPU accounting: every poll of a client's connection task and of its HTTP/2 stream tasks is
//! timed and charged to that client, and only to it (DESIGN.md §2, metric P). A poll's wall time
//! is charged as CPU time through the worker thread's running share (`run_share.rs`).
//!
//! A request a trusted proxy forwarded for another client ([`ChargedTo`]) marks the poll it
//! runs in; the [`Timed`] poll around it charges its time to that client as well, batched per
//! connection ([`Forwarded::cpu`]): no clock read of its own.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::account::forwarded::Forwarded;
use crate::account::meter::Meter;
use crate::account::run_share;
use crate::clock::mono_ns;

thread_local! {
    /// The forwarded client whose request's work ran in the current poll of a [`Timed`] (set
    /// by [`ChargedTo`], taken by the `Timed` when its poll returns).
    static WORKED_FOR: Cell<Option<Arc<Forwarded>>> = const { Cell::new(None) };
}

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
        let start = mono_ns();
        let out = this.inner.poll(cx);
        let end = mono_ns();
        let wall = end.saturating_sub(start);
        let (cpu, now) = (run_share::cpu_ns(wall, end), this.meter.clock().at(end));
        this.meter.cpu(cpu, now);
        if let Some(client) = WORKED_FOR.take() {
            let v = client.cpu(cpu, now);
            this.meter
                .forwarded_verdict(client.handle().client().addr(), v);
        }
        out
    }
}

pin_project_lite::pin_project! {
    /// A request's work (its handler, up to the response head; a tunnel) whose polls are also
    /// charged to the forwarded client the request belongs to: each poll of `inner` marks the
    /// [`Timed`] poll it runs in (the connection's task, or an HTTP/2 stream's), whose whole
    /// time then goes to that client too, in batches ([`Forwarded::cpu`]). So on HTTP/1 the
    /// client is charged the connection's polls that read its request, ran its handler and
    /// wrote its response head. The same polls stay charged to the connection (a trusted
    /// proxy, never blocked) through its task; without a forwarded client this only polls
    /// `inner`. Every `ChargedTo` runs inside a `Timed`.
    pub struct ChargedTo<F> {
        #[pin]
        inner: F,
        client: Option<Arc<Forwarded>>,
    }
}

impl<F> ChargedTo<F> {
    /// Charges `inner`'s polls to `client`, if any.
    pub fn new(inner: F, client: Option<Arc<Forwarded>>) -> Self {
        ChargedTo { inner, client }
    }
}

impl<F: Future> Future for ChargedTo<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(client) = this.client.as_ref() {
            WORKED_FOR.set(Some(client.clone()));
        }
        this.inner.poll(cx)
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
