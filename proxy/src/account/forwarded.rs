//! A forwarded client (named by a trusted proxy's header) as one connection charges it: the
//! limiter's handle on that client, with its per-request memory and the CPU of its requests'
//! work batched exactly as [`Accounting`](super::accounting::Accounting) batches the
//! connection's own client's ([`MemBatch`], [`CpuBatch`]): memory reported in steps of
//! [`MEM_GRANULARITY`](super::accounting::MEM_GRANULARITY), CPU in batches of
//! [`CPU_BATCH_NS`](super::accounting::CPU_BATCH_NS) or every [`FORWARDED_CPU_INTERVAL_NS`]. So a CDN edge's connection pays
//! the limiter's shared counters for a forwarded client about as often as a direct client's
//! connection does, not once per request (issue 13's cost target: ≤ 1 % per request).
//!
//! One per connection and client: kept by the connection's [`Recent`](crate::http::recent)
//! cache across that client's requests, and by each of its requests in flight. What is still
//! unreported when the last of them lets go is settled then: the memory is given back with the
//! handle, the CPU charged.

use std::sync::Arc;

use zgate_limiter::{AsClient, ClientHandle, Nanos, Verdict};

use super::accounting::{CpuBatch, MemBatch, Now};
use crate::clock::Clock;

/// A forwarded client's CPU pending on one connection is charged at least this often (10 ms;
/// the connection's own client: 1 ms). Its requests are spread over a connection it shares
/// with other clients, so the 1 ms of a direct client would charge nearly every request of a
/// light client; 10 ms keeps the limiter's view of it as fresh as it needs (1 % of the default
/// 1 s half-life of the CPU EMA). A heavy client reaches
/// [`CPU_BATCH_NS`](super::accounting::CPU_BATCH_NS) first anyway.
pub const FORWARDED_CPU_INTERVAL_NS: u64 = 10_000_000;

/// A forwarded client on one connection. `Send + Sync`: HTTP/2 serves a connection's requests
/// on several tasks.
pub struct Forwarded {
    handle: Arc<ClientHandle>,
    clock: Clock,
    /// Per-request memory not yet reported to the limiter (either way).
    mem_unreported: MemBatch,
    /// CPU time not yet charged.
    cpu_pending: CpuBatch,
}

impl Forwarded {
    /// `handle`'s client as this connection charges it, on `clock`.
    pub fn new(handle: Arc<ClientHandle>, clock: Clock) -> Arc<Forwarded> {
        Arc::new(Forwarded {
            handle,
            clock,
            mem_unreported: MemBatch::default(),
            cpu_pending: CpuBatch::new(clock.now()),
        })
    }

    /// The limiter's handle on the client.
    pub fn handle(&self) -> &Arc<ClientHandle> {
        &self.handle
    }

    /// The proxy holds `delta` bytes more (a request of this client started: its per-request
    /// cost) or less (it ended), reported once the unreported total reaches the granularity
    /// either way, exactly as for the connection's own client.
    pub fn memory_changed(&self, delta: i64, now: impl Now) -> Verdict {
        match self.mem_unreported.add(delta) {
            Some(n) if n > 0 => self.handle.memory_grew(n as u64, now.now()),
            Some(n) => {
                self.handle.memory_shrank(n.unsigned_abs());
                Verdict::Allow
            }
            None => Verdict::Allow,
        }
    }

    /// `ns` of CPU time spent on this client's requests (one poll) at `now`, charged in
    /// batches.
    pub fn cpu(&self, ns: u64, now: Nanos) -> Verdict {
        match self.cpu_pending.add(ns, now, FORWARDED_CPU_INTERVAL_NS) {
            Some(batch) => self.handle.cpu_spent(batch, now),
            None => Verdict::Allow,
        }
    }
}

/// What a forwarded client's [`Request`](zgate_limiter::Request) is counted on: its
/// [`Forwarded`], which the request keeps (and so its per-request memory) until it ends.
pub struct Charged(pub Arc<Forwarded>);

impl AsClient for Charged {
    fn client_handle(&self) -> &ClientHandle {
        &self.0.handle
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        // The memory went up and down with requests that have all ended: nothing is held. What
        // was reported comes back when the handle drops (if this was its last holder).
        let unreported = self.mem_unreported.take();
        if unreported < 0 {
            self.handle.memory_shrank(unreported.unsigned_abs());
        }
        let cpu = self.cpu_pending.take();
        if cpu > 0 {
            // A block this decides is recorded by the limiter; nobody is left to refuse.
            let _ = self.handle.cpu_spent(cpu, self.clock.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::accounting::CPU_BATCH_NS;
    use std::net::IpAddr;
    use zgate_limiter::{Limiter, LimiterConfig, Metric, Mode};

    fn limiter() -> Limiter {
        let config = LimiterConfig {
            mode: Mode::Training,
            ..LimiterConfig::default()
        };
        Limiter::new(config, None, Nanos(0)).unwrap()
    }

    fn forwarded(l: &Limiter, ip: &str) -> Arc<Forwarded> {
        let ip: IpAddr = ip.parse().unwrap();
        let (handle, _) = l.forwarded(ip, Nanos(1));
        Forwarded::new(Arc::new(handle.unwrap()), Clock::new())
    }

    fn memory(l: &Limiter, ip: &str) -> u64 {
        let ip: IpAddr = ip.parse().unwrap();
        l.client(ip, Nanos(5)).unwrap().current[Metric::Memory.index()]
    }

    /// Requests that start and end, one at a time, report nothing; many at once report in
    /// steps; when they end, the memory is back to zero, and a dropped `Forwarded` leaves
    /// nothing behind.
    #[test]
    fn per_request_memory_is_batched_and_given_back() {
        let l = limiter();
        let f = forwarded(&l, "203.0.113.9");
        for _ in 0..1000 {
            assert_eq!(f.memory_changed(4096, Nanos(2)), Verdict::Allow);
            f.memory_changed(-4096, Nanos(2));
        }
        assert_eq!(memory(&l, "203.0.113.9"), 0);
        for _ in 0..10 {
            f.memory_changed(4096, Nanos(3));
        }
        // 40 KiB in flight: two steps of at least 16 KiB reported, the rest pending.
        let reported = memory(&l, "203.0.113.9");
        assert!((32 * 1024..=40 * 1024).contains(&reported), "{reported}");
        for _ in 0..10 {
            f.memory_changed(-4096, Nanos(4));
        }
        assert!(memory(&l, "203.0.113.9") < 16 * 1024);
        drop(f);
        assert_eq!(memory(&l, "203.0.113.9"), 0);
    }

    /// Small polls accumulate until a batch; what is pending at the drop is charged then.
    #[test]
    fn cpu_is_charged_in_batches_and_at_the_end() {
        let l = limiter();
        let f = forwarded(&l, "203.0.113.10");
        let start = f.cpu_pending.charged_at().0;
        let cpu = |at: u64| {
            let ip: IpAddr = "203.0.113.10".parse().unwrap();
            l.client(ip, Nanos(start + at)).unwrap().current[Metric::Cpu.index()]
        };
        f.cpu(10_000, Nanos(start + 10));
        assert_eq!(f.cpu_pending.pending(), 10_000);
        assert_eq!(cpu(10), 0);
        f.cpu(CPU_BATCH_NS, Nanos(start + 20));
        assert_eq!(f.cpu_pending.pending(), 0);
        assert!(cpu(20) > 0);
        f.cpu(1_000, Nanos(start + 30));
        assert_eq!(f.cpu_pending.pending(), 1_000);
        // 2 ms later: a direct client's connection would charge it; a forwarded one waits.
        f.cpu(1, Nanos(start + 20 + 2_000_000));
        assert_eq!(f.cpu_pending.pending(), 1_001);
        // Long after the last batch, even a small poll is charged.
        f.cpu(1, Nanos(start + 30 + FORWARDED_CPU_INTERVAL_NS));
        assert_eq!(f.cpu_pending.pending(), 0);
    }
}
