//! One backend's pool of idle HTTP/1.1 connections, and the guard that gives a connection
//! back when its response body has been read to the end (see the room's docs for the design).
//!
//! The pool has a slot per worker thread (and one for every other thread): a connection's
//! task runs on the worker that opened it, and it is only ever given back to, and checked out
//! from, that worker's slot, so a request never wakes another thread to reach its backend,
//! and workers never share a lock or a cache line here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hyper::client::conn::http1::SendRequest;

use crate::worker;

/// How long a checkout waits for an idle connection that is open but not ready yet (it was
/// given back at the end of its response body and its task is finishing the exchange).
pub const READY_WAIT: Duration = Duration::from_millis(100);

/// How many of the newest idle connections a checkout looks at for one that is ready.
const READY_SCAN: usize = 4;

/// One backend's idle connections, per worker, newest at the back.
#[derive(Debug)]
pub(super) struct IdlePool<B> {
    /// Slot 0: threads that are no worker; slot `1 + i`: worker `i`.
    slots: Box<[CachePadded<Slot<B>>]>,
    /// Idle connections kept per slot.
    max: usize,
    idle_timeout: Duration,
}

/// One worker's idle connections, newest at the back.
type Slot<B> = Mutex<VecDeque<Idle<B>>>;

#[derive(Debug)]
struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> IdlePool<B> {
    /// An empty pool for `workers` worker threads keeping at most `max` idle connections per
    /// worker, each for at most `idle_timeout`.
    pub(super) fn new(max: usize, idle_timeout: Duration, workers: usize) -> Self {
        IdlePool {
            slots: (0..=workers).map(|_| CachePadded::default()).collect(),
            max,
            idle_timeout,
        }
    }

    /// The current thread's slot: its worker's, or the shared one of other threads.
    fn slot(&self) -> &Slot<B> {
        // `slots` has `workers + 1` entries; a worker beyond them (more workers than the pool
        // was built for) shares a slot, which is still correct, only slower.
        let workers = self.slots.len() - 1;
        match worker::current() {
            Some(w) if workers > 0 => &self.slots[1 + w % workers],
            _ => &self.slots[0],
        }
    }

    /// Gives `sender` back, unless its connection is closed or the pool is full.
    pub(super) fn put(&self, sender: SendRequest<B>) {
        if self.max == 0 || sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut expired = None;
        let rejected;
        {
            let mut conns = self.slot().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(oldest) = conns.front() {
                if now.saturating_duration_since(oldest.since) >= self.idle_timeout {
                    expired = conns.pop_front();
                }
            }
            if conns.len() < self.max {
                conns.push_back(Idle { sender, since: now });
                rejected = None;
            } else {
                rejected = Some(sender);
            }
        }
        // Closing connections happens outside the lock.
        drop((expired, rejected));
    }

    /// The newest idle sender that is open and not past the idle timeout.
    pub(super) fn pop(&self) -> Option<SendRequest<B>> {
        loop {
            let (idle, stale) = {
                let mut conns = self.slot().lock().unwrap_or_else(PoisonError::into_inner);
                // Prefer a ready one among the newest few: the very newest may still be
                // finishing its previous exchange (its task has not run since).
                let len = conns.len();
                let ready = (len.saturating_sub(READY_SCAN)..len)
                    .rev()
                    .find(|&i| conns[i].sender.is_ready());
                let i = ready.unwrap_or(len.checked_sub(1)?);
                let idle = conns.remove(i)?;
                if idle.since.elapsed() >= self.idle_timeout {
                    // Every older one is expired too (a rare path: allocating is fine).
                    let newer = conns.split_off(i);
                    (None, Some(std::mem::replace(&mut *conns, newer)))
                } else {
                    (Some(idle), None)
                }
            };
            drop(stale);
            match idle {
                Some(idle) if !idle.sender.is_closed() => return Some(idle.sender),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// An idle sender ready for a request, waiting briefly for one that is finishing its
    /// previous exchange. Dropped during that wait (its request was reset), the sender goes
    /// back to the pool rather than closing with the request.
    pub(super) async fn checkout(&self) -> Option<SendRequest<B>> {
        loop {
            let sender = self.pop()?;
            if sender.is_ready() {
                return Some(sender);
            }
            let mut lent = Lent {
                sender: Some(sender),
                pool: self,
            };
            let ready = match lent.sender.as_mut() {
                Some(s) => matches!(
                    tokio::time::timeout(READY_WAIT, s.ready()).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            let sender = lent.sender.take();
            if ready {
                return sender;
            }
        }
    }

    /// How many idle connections are kept, all workers together (closed ones not yet noticed
    /// included).
    pub(super) fn len(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// A sender popped from the pool while it is awaited: back to the pool if dropped with it.
struct Lent<'a, B> {
    sender: Option<SendRequest<B>>,
    pool: &'a IdlePool<B>,
}

impl<B> Drop for Lent<'_, B> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}

/// A backend connection lent to a response whose body is still being read: give it back with
/// [`PoolReturn::release`] when the body has ended; dropping it closes the connection. For an
/// HTTP/2 backend there is nothing to give back (the stream ends with its body): the guard
/// only says that the response streams over a backend connection.
#[derive(Debug)]
pub struct PoolReturn<B> {
    lent: Option<(SendRequest<B>, Arc<IdlePool<B>>)>,
    /// The request stays in flight on its backend (`least_in_flight`) until the body ends.
    in_flight: Option<super::InFlight>,
}

impl<B> PoolReturn<B> {
    /// HTTP/1: `sender` goes back to `pool` when the body ends.
    pub(super) fn http1(
        sender: SendRequest<B>,
        pool: Arc<IdlePool<B>>,
        in_flight: Option<super::InFlight>,
    ) -> Self {
        PoolReturn {
            lent: Some((sender, pool)),
            in_flight,
        }
    }

    /// HTTP/2: a stream of a shared connection, nothing to give back.
    pub(super) fn streaming(in_flight: Option<super::InFlight>) -> Self {
        PoolReturn {
            lent: None,
            in_flight,
        }
    }

    /// The response body ended: the connection goes back to its backend's idle pool.
    pub fn release(self) {
        if let Some((sender, pool)) = self.lent {
            pool.put(sender);
        }
        drop(self.in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{self, Workers};
    use bytes::Bytes;
    use http_body_util::Empty;
    use tokio::sync::oneshot;

    type Pool = IdlePool<Empty<Bytes>>;

    /// Runs `f` on the next worker `set` picks (all idle: round-robin from worker 0) and
    /// returns its result with the worker it ran on.
    async fn on_worker<T: Send + 'static>(
        set: &Arc<worker::WorkerSet>,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> (Option<usize>, T) {
        let (tx, rx) = oneshot::channel();
        set.spawn(async move {
            let out = f.await;
            let _ = tx.send((worker::current(), out));
        });
        rx.await.expect("the worker ran the task")
    }

    /// Runs `f` on worker `want` (or, with `other`, on any worker but `want`): the set picks
    /// by load, and a task that just answered may not have left its worker's load yet, so
    /// probes run until one lands where wanted (a bounded number of them).
    async fn on_chosen_worker<T: Send + 'static>(
        set: &Arc<worker::WorkerSet>,
        want: Option<usize>,
        other: bool,
        f: impl Fn() -> T + Send + Sync + Clone + 'static,
    ) -> (Option<usize>, T) {
        for _ in 0..1000 {
            let f = f.clone();
            let (at, out) = on_worker(set, async move {
                let at = worker::current();
                ((at == want) != other).then(f)
            })
            .await;
            if let Some(out) = out {
                return (at, out);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no task landed on the wanted worker in 1000 tries");
    }

    /// A connection over an in-memory pipe, its task spawned where this runs (kept alive by
    /// the pipe's other end, which `hold` keeps).
    async fn connection(hold: oneshot::Receiver<()>) -> SendRequest<Empty<Bytes>> {
        let (ours, theirs) = tokio::io::duplex(1024);
        let io = hyper_util::rt::TokioIo::new(ours);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake over a pipe");
        tokio::spawn(async move {
            let _theirs = theirs;
            tokio::select! {
                _ = conn => {}
                _ = hold => {}
            }
        });
        sender
    }

    #[tokio::test]
    async fn a_worker_never_checks_out_another_workers_connection() {
        let workers = Workers::start(2).expect("workers");
        let set = workers.set();
        let pool = Arc::new(Pool::new(4, Duration::from_secs(60), 2));
        let (_hold, held) = oneshot::channel();
        let p = pool.clone();
        let (first, ()) = on_worker(&set, async move { p.put(connection(held).await) }).await;
        assert_eq!(pool.len(), 1);
        let p = pool.clone();
        let (second, other) = on_chosen_worker(&set, first, true, move || p.pop().is_some()).await;
        assert_ne!(first, second, "the two tasks ran on two workers");
        assert!(
            !other,
            "worker {second:?} got worker {first:?}'s connection"
        );
        assert_eq!(
            pool.pop().map(|_| ()),
            None,
            "nor does a thread that is no worker"
        );
        let p = pool.clone();
        let (third, own) = on_chosen_worker(&set, first, false, move || p.pop().is_some()).await;
        assert_eq!(third, first);
        assert!(own, "the worker that pooled it checks it out");
        assert_eq!(pool.len(), 0);
    }
}
