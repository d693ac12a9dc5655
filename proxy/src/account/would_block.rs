//! Monitor mode's would-block log, rate-limited per client (sans-IO: time is a parameter).
//!
//! A client over a threshold in monitor mode may be seen on every event of every one of its
//! connections; one line per client per [`PERIOD`] is enough, with the number of lines held
//! back since the previous one. Each connection asks at most once (its first would-block), so
//! the lock here is taken once per connection, never per event.
//!
//! The map is bounded ([`MAX_CLIENTS`]): when full, entries older than the period are dropped;
//! if none is, a new client's line is held back (counted nowhere: the flood that fills the map
//! is already in `zgate_limiter_would_block_total`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use zgate_limiter::Nanos;

/// At most one line per client per this long: 60 s, in nanoseconds.
pub const PERIOD: u64 = 60_000_000_000;
/// Clients remembered at most.
pub const MAX_CLIENTS: usize = 4096;

/// What to do with a would-block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log it, saying how many were held back since this client's previous line.
    Log {
        /// Lines held back since the previous one.
        suppressed: u64,
    },
    /// Hold it back (counted for the next line).
    Suppress,
}

/// The per-client window, behind a lock.
#[derive(Debug, Default)]
pub struct WouldBlockLog {
    clients: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged_at: u64,
    suppressed: u64,
}

impl WouldBlockLog {
    /// A would-block of `client` at `now`: log it or hold it back.
    pub fn observe(&self, client: IpAddr, now: Nanos) -> Decision {
        // The map holds plain values: a poisoned lock is still consistent.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let now = now.0;
        if let Some(e) = clients.get_mut(&client) {
            if now.saturating_sub(e.logged_at) < PERIOD {
                e.suppressed += 1;
                return Decision::Suppress;
            }
            let suppressed = std::mem::take(&mut e.suppressed);
            e.logged_at = now;
            return Decision::Log { suppressed };
        }
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, e| now.saturating_sub(e.logged_at) < PERIOD);
            if clients.len() >= MAX_CLIENTS {
                return Decision::Suppress;
            }
        }
        let entry = Entry {
            logged_at: now,
            suppressed: 0,
        };
        clients.insert(client, entry);
        Decision::Log { suppressed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn one_line_per_client_per_period_with_the_count_held_back() {
        let log = WouldBlockLog::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(log.observe(a, Nanos(0)), Decision::Log { suppressed: 0 });
        for t in 1..36 {
            assert_eq!(log.observe(a, Nanos(t * SEC)), Decision::Suppress);
        }
        assert_eq!(
            log.observe(b, Nanos(5 * SEC)),
            Decision::Log { suppressed: 0 }
        );
        let next = log.observe(a, Nanos(60 * SEC));
        assert_eq!(next, Decision::Log { suppressed: 35 });
        assert_eq!(log.observe(a, Nanos(61 * SEC)), Decision::Suppress);
    }

    #[test]
    fn the_map_is_bounded() {
        let log = WouldBlockLog::default();
        for i in 0..MAX_CLIENTS as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(matches!(log.observe(ip, Nanos(0)), Decision::Log { .. }));
        }
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(log.observe(late, Nanos(SEC)), Decision::Suppress, "full");
        // A period later the old entries make room.
        let got = log.observe(late, Nanos(PERIOD + SEC));
        assert_eq!(got, Decision::Log { suppressed: 0 });
        assert!(log.clients.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
