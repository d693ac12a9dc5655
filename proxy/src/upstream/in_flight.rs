//! Requests in flight on one backend, for `least_in_flight`: counted from the request handed
//! to the backend until its response's last byte (or until the request or response is
//! dropped), by a guard that cannot forget to count down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One request in flight on a backend; dropping it ends it.
#[derive(Debug)]
pub(super) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// A request starts on the backend whose counter is `count`.
    pub(super) fn start(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_held() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = InFlight::start(&count);
        let b = InFlight::start(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
