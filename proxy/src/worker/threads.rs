//! The worker threads: each runs a current-thread tokio runtime until the [`Workers`] that
//! started it is dropped. A connection spawned on a worker stays there, and so does every
//! task it spawns (`tokio::spawn` on a current-thread runtime runs on that runtime): its
//! HTTP/2 streams, its upstream connections, the drains of its reset requests.

use crate::account::run_share;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The worker threads; dropping this stops them (their runtimes drop every task left, which
/// closes the connections still open).
pub struct Workers {
    set: Arc<WorkerSet>,
    /// One per thread: sending (or dropping) it ends the thread's runtime.
    _stops: Vec<oneshot::Sender<()>>,
}

/// Where connections are handed over: the workers' runtimes and how many connections each
/// serves now.
pub struct WorkerSet {
    workers: Box<[Worker]>,
    /// Where the search for the least loaded worker starts (spreads ties).
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Tasks handed over with [`WorkerSet::spawn`] still running.
    load: CachePadded<AtomicUsize>,
}

impl Workers {
    /// Starts `n` worker threads (at least 1), named `zgate-worker-<i>`.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut workers = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for index in 0..n {
            // The park hooks let a poll's wall time be charged as CPU time on a loaded machine
            // (`account::run_share`).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(run_share::on_park)
                .on_thread_unpark(run_share::on_unpark)
                .build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("zgate-worker-{index}"))
                .spawn(move || {
                    super::id::enter(index);
                    // Returns when `Workers` drops; dropping the runtime then drops its tasks.
                    let _ = rt.block_on(stopped);
                })?;
            workers.push(Worker {
                handle,
                load: CachePadded::new(AtomicUsize::new(0)),
            });
            stops.push(stop);
        }
        Ok(Workers {
            set: Arc::new(WorkerSet {
                workers: workers.into_boxed_slice(),
                next: AtomicUsize::new(0),
            }),
            _stops: stops,
        })
    }

    /// The handle connections are handed over through.
    pub fn set(&self) -> Arc<WorkerSet> {
        self.set.clone()
    }
}

impl WorkerSet {
    /// Runs `task` on the worker with the fewest tasks handed over and still running.
    pub fn spawn<F>(self: &Arc<Self>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.least_loaded();
        let load = Load::new(self.clone(), index);
        // A stopped worker (the server is being dropped) drops the task, and the connection.
        self.workers[index].handle.spawn(async move {
            task.await;
            drop(load);
        });
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    fn least_loaded(&self) -> usize {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut least = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.workers[i].load.load(Ordering::Relaxed);
            if load < least {
                least = load;
                best = i;
            }
        }
        best
    }
}

/// One task counted in its worker's load while it lives.
struct Load {
    set: Arc<WorkerSet>,
    index: usize,
}

impl Load {
    fn new(set: Arc<WorkerSet>, index: usize) -> Self {
        set.workers[index].load.fetch_add(1, Ordering::Relaxed);
        Load { set, index }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.set.workers[self.index]
            .load
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_worker_threads_and_spread_by_load() {
        let workers = Workers::start(2).expect("workers");
        let set = workers.set();
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold, held) = tokio::sync::watch::channel(());
        for _ in 0..4 {
            let tx = tx.clone();
            let mut held = held.clone();
            set.spawn(async move {
                let _ = tx.send((super::super::current(), std::thread::current().id()));
                let _ = held.changed().await;
            });
        }
        let seen: Vec<_> = (0..4).map(|_| rx.recv().expect("ran")).collect();
        let on = |w| seen.iter().filter(|(i, _)| *i == Some(w)).count();
        assert_eq!((on(0), on(1)), (2, 2), "{seen:?}");
        assert_ne!(seen[0].1, std::thread::current().id());
        drop(hold);
    }
}
