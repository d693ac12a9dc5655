//! What a connection is doing, shared between its IO wrapper, its requests and its watchdog.
//!
//! The IO wrapper is the only writer of the byte counters (one task owns the stream), so they
//! are updated with plain loads and stores; requests may run on other worker threads (HTTP/2
//! streams), so the in-flight count is a real atomic counter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Activity of one client connection.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicUsize,
    /// Nanoseconds since `started` when the current HTTP/1 request head began arriving, plus
    /// one (0 means no head is being read).
    head_started: AtomicU64,
}

impl Activity {
    /// Activity of a connection accepted now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    /// Records `n` bytes read from the client. Called only by the connection's IO;
    /// `exchanging`: a request of the connection is still in progress, its response not yet
    /// sent to the end (its handler may have returned: the body still streams, and the bytes
    /// read may be the rest of its request body).
    pub(crate) fn read(&self, n: usize, exchanging: bool) {
        let total = self.bytes_in.load(Ordering::Relaxed);
        self.bytes_in.store(total + n as u64, Ordering::Relaxed);
        // A byte with no request in progress and no head in progress starts a request head:
        // the header-read deadline runs from here.
        if !exchanging
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            let since = self.started.elapsed().as_nanos() as u64;
            self.head_started.store(since + 1, Ordering::Relaxed);
        }
    }

    /// Records `n` bytes written to the client. Called only by the connection's IO.
    pub(crate) fn wrote(&self, n: usize) {
        let total = self.bytes_out.load(Ordering::Relaxed);
        self.bytes_out.store(total + n as u64, Ordering::Relaxed);
    }

    /// Bytes moved in either direction so far; the watchdog compares two readings to see idleness.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed) + self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes read from the client so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes written to the client so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// A request's head has been parsed and it is now being served; the guard ends it.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Relaxed);
        InFlight(self)
    }

    /// Requests being served on this connection now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the request head now arriving started, if one is.
    pub fn head_started_at(&self) -> Option<Instant> {
        match self.head_started.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.started + std::time::Duration::from_nanos(n - 1)),
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// A request in flight; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_starts_only_between_requests() {
        let a = Activity::new();
        assert!(a.head_started_at().is_none());
        a.read(10, false);
        let first = a.head_started_at().expect("head started");
        a.read(5, false);
        assert_eq!(
            a.head_started_at(),
            Some(first),
            "later bytes do not move the start"
        );
        {
            let _req = a.request_started();
            assert!(a.head_started_at().is_none());
            a.read(100, true); // body bytes
            assert!(a.head_started_at().is_none());
            assert_eq!(a.in_flight(), 1);
        }
        assert_eq!(a.in_flight(), 0);
        // The handler returned, its response still streams: bytes read belong to its body.
        a.read(1, true);
        assert!(a.head_started_at().is_none());
        a.read(1, false);
        assert!(a.head_started_at().is_some());
        a.wrote(7);
        assert_eq!(a.bytes_moved(), 124);
    }
}
