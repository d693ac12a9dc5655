//! Which worker the current thread is, and how many workers there are.
//!
//! A worker thread records its index once, when it starts; per-worker state (the upstream
//! idle pool's slots) is indexed by it, so a worker only ever sees what its own tasks made.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the current thread is (`0..count`), `None` on any other thread
/// (the accept thread, the control plane, a test's runtime).
pub fn current() -> Option<usize> {
    WORKER.try_with(Cell::get).ok().flatten()
}

/// Marks the current thread as worker `index`, for its whole life.
pub(super) fn enter(index: usize) {
    let _ = WORKER.try_with(|w| w.set(Some(index)));
}

/// The number of workers `runtime.workers = configured` asks for: that many, or one per CPU
/// when `0` (at least 1).
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_no_worker_until_it_enters() {
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            enter(3);
            assert_eq!(current(), Some(3));
        })
        .join()
        .expect("thread");
        assert_eq!(current(), None, "another thread's index is not this one's");
    }

    #[test]
    fn zero_workers_means_one_per_cpu() {
        assert_eq!(count(5), 5);
        assert!(count(0) >= 1);
    }
}
