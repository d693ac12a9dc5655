//! One backend's pool of idle HTTP/1.1 connections, and the guard that gives a connection
//! back when its response body has been read to the end (see the room's docs for the design).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

/// How long a checkout waits for an idle connection that is open but not ready yet (it was
/// given back at the end of its response body and its task is finishing the exchange).
pub const READY_WAIT: Duration = Duration::from_millis(100);

/// How many of the newest idle connections a checkout looks at for one that is ready.
const READY_SCAN: usize = 4;

/// One backend's idle connections, newest at the back.
#[derive(Debug)]
pub(super) struct IdlePool<B> {
    conns: Mutex<VecDeque<Idle<B>>>,
    max: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> IdlePool<B> {
    /// An empty pool keeping at most `max` idle connections, each for at most `idle_timeout`.
    pub(super) fn new(max: usize, idle_timeout: Duration) -> Self {
        IdlePool {
            conns: Mutex::new(VecDeque::new()),
            max,
            idle_timeout,
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
            let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
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
                let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
                // Prefer a ready one among the newest few: the very newest may still be
                // finishing its previous exchange on another thread.
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

    /// How many idle connections are kept (closed ones not yet noticed included).
    pub(super) fn len(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
/// [`PoolReturn::release`] when the body has ended; dropping it closes the connection.
#[derive(Debug)]
pub struct PoolReturn<B> {
    pub(super) sender: SendRequest<B>,
    pub(super) pool: Arc<IdlePool<B>>,
    /// The request stays in flight on its backend (`least_in_flight`) until the body ends.
    pub(super) in_flight: Option<super::InFlight>,
}

impl<B> PoolReturn<B> {
    /// The response body ended: the connection goes back to its backend's idle pool.
    pub fn release(self) {
        self.pool.put(self.sender);
        drop(self.in_flight);
    }
}
