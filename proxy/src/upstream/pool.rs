//! One backend's pool of idle HTTP/1.1 connections (see the room's docs for the design), and
//! the guard a response carries while its body streams over a backend connection.
//!
//! The pool has a slot per worker thread (and one for every other thread): a connection is
//! driven by the tasks of the worker that opened it, and it is only ever given back to, and
//! checked out from, that worker's slot, so a request never wakes another thread to reach its
//! backend, and workers never share a lock or a cache line here.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::h1::Conn;
use crate::worker;

/// One backend's idle connections, per worker, newest at the back.
#[derive(Debug)]
pub(super) struct IdlePool {
    /// Slot 0: threads that are no worker; slot `1 + i`: worker `i`.
    slots: Box<[CachePadded<Slot>]>,
    /// Idle connections kept per slot.
    max: usize,
    idle_timeout: Duration,
}

/// One worker's idle connections, newest at the back.
type Slot = Mutex<VecDeque<Idle>>;

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl IdlePool {
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
    fn slot(&self) -> &Slot {
        // `slots` has `workers + 1` entries; a worker beyond them (more workers than the pool
        // was built for) shares a slot, which is still correct, only slower.
        let workers = self.slots.len() - 1;
        match worker::current() {
            Some(w) if workers > 0 => &self.slots[1 + w % workers],
            _ => &self.slots[0],
        }
    }

    /// Gives `conn` back, unless it is closed or the pool is full.
    pub(super) fn put(&self, conn: Conn) {
        if self.max == 0 || conn.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut expired = None;
        let rejected;
        {
            let mut conns = self.slot().lock().unwrap_or_else(PoisonError::into_inner);
            if conns
                .front()
                .is_some_and(|oldest| self.expired(oldest, now))
            {
                expired = conns.pop_front();
            }
            if conns.len() < self.max {
                conns.push_back(Idle { conn, since: now });
                rejected = None;
            } else {
                rejected = Some(conn);
            }
        }
        // Closing connections happens outside the lock.
        drop((expired, rejected));
    }

    /// The newest idle connection that is open and not past the idle timeout (LIFO keeps few
    /// connections warm and lets old ones age out at the front).
    pub(super) fn checkout(&self) -> Option<Conn> {
        loop {
            let (idle, stale) = {
                let mut conns = self.slot().lock().unwrap_or_else(PoisonError::into_inner);
                let idle = conns.pop_back()?;
                if self.expired(&idle, Instant::now()) {
                    // Every older one is expired too (a rare path).
                    (None, Some(std::mem::take(&mut *conns)))
                } else {
                    (Some(idle), None)
                }
            };
            drop(stale);
            match idle {
                Some(idle) if !idle.conn.is_closed() => return Some(idle.conn),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Closes the idle connections past the idle timeout and those the backend closed (or
    /// wrote to) while idle, in every worker's slot. Run on the server's tick, so that a pool
    /// no request comes to holds no socket past `pool_idle_timeout`, nor one in CLOSE_WAIT.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        let stale = |idle: &Idle| self.expired(idle, now) || idle.conn.is_closed();
        let mut gone = Vec::new();
        for slot in self.slots.iter() {
            let mut conns = slot.lock().unwrap_or_else(PoisonError::into_inner);
            // The common case, nothing to close, takes no allocation.
            if !conns.iter().any(stale) {
                continue;
            }
            for idle in std::mem::take(&mut *conns) {
                if stale(&idle) {
                    gone.push(idle);
                } else {
                    conns.push_back(idle);
                }
            }
        }
        // Closing connections happens outside the locks.
        drop(gone);
    }

    /// Whether `idle` has been idle for `idle_timeout` or longer at `now`.
    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        now.saturating_duration_since(idle.since) >= self.idle_timeout
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

/// A response whose body streams over a backend connection (HTTP/1: the connection is the
/// body's until its end, see `h1.rs`; HTTP/2: a stream of the shared connection). While it
/// lives, the request stays in flight on its backend (`least_in_flight`), and the client is
/// charged for the buffer the connection holds (metric M). [`BackendHold::release`] at the
/// body's end.
#[derive(Debug)]
pub struct BackendHold {
    in_flight: Option<super::InFlight>,
}

impl BackendHold {
    pub(super) fn new(in_flight: Option<super::InFlight>) -> Self {
        BackendHold { in_flight }
    }

    /// The response body ended.
    pub fn release(self) {
        drop(self.in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connect::Opened;
    use crate::worker::{self, Workers};
    use std::sync::Arc;
    use tokio::sync::oneshot;

    type Pool = IdlePool;

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

    /// A connection to a loopback listener, registered with the runtime this runs on; the
    /// listener's side is kept open until `hold` fires.
    async fn connection(hold: oneshot::Receiver<()>) -> Conn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let ours = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().await.expect("accept");
        tokio::spawn(async move {
            let _theirs = theirs;
            let _ = hold.await;
        });
        Conn::new(Opened::Plain(ours))
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
        let (second, other) =
            on_chosen_worker(&set, first, true, move || p.checkout().is_some()).await;
        assert_ne!(first, second, "the two tasks ran on two workers");
        assert!(
            !other,
            "worker {second:?} got worker {first:?}'s connection"
        );
        assert_eq!(
            pool.checkout().map(|_| ()),
            None,
            "nor does a thread that is no worker"
        );
        let p = pool.clone();
        let (third, own) =
            on_chosen_worker(&set, first, false, move || p.checkout().is_some()).await;
        assert_eq!(third, first);
        assert!(own, "the worker that pooled it checks it out");
        assert_eq!(pool.len(), 0);
    }
}
