//! The bounded client table.
//!
//! A `DashMap<ClientKey, Arc<ClientState>>` plus an eviction queue of keys in insertion order.
//! The map never holds more than `max` clients: a new client first reserves a slot in `len`; at
//! the bound it must evict one. Eviction looks at the oldest few keys of the queue (CLOCK-like:
//! keys it cannot evict go to the back), takes the first idle one, else the least recently seen
//! evictable one; a client with an open connection is never evicted (a blocked one may be: its
//! block lives in the block list). If nothing can be evicted the new client is not inserted
//! (the limiter admits it untracked), so a flood of distinct addresses costs at most `max`
//! entries.
//!
//! Connection counts are incremented while the shard's read lock is held, and eviction checks
//! "no open connection" under the shard's write lock (`remove_if`), so a client cannot be
//! evicted between being found and having its connection counted.
//!
//! Lock order: queue, then map shard. The insert path releases the shard before it pushes to the
//! queue.
//!
//! Walks ([`Table::walk`], for the admin API) go through the queue a chunk of keys at a time,
//! then look each key up on its own: neither the queue's lock nor a shard's is held for more
//! than one chunk's copy or one lookup, and none while the caller's function runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use zgate_training::Metric;

use crate::client::ClientState;
use crate::key::ClientKey;
use crate::queue::KeyQueue;

/// How many queue entries one eviction looks at before settling for a non-idle client.
const EVICT_SCAN: usize = 8;
/// How many it looks at, at most, while it has found no evictable client at all (a table
/// mostly of busy clients), before refusing the new client.
const EVICT_SCAN_MAX: usize = 64;
/// How many keys a walk copies out of the queue under one hold of its lock.
const WALK_CHUNK: usize = 256;

/// A client removed from the table (evicted or expired), so the caller can remove its training
/// samples.
pub(crate) type Removed = Arc<ClientState>;

/// The table is full of clients that cannot be evicted.
#[derive(Debug)]
pub(crate) struct Full;

pub(crate) struct Table {
    map: DashMap<ClientKey, Arc<ClientState>>,
    /// Every key of `map` once (briefly absent between insert and push), oldest first.
    queue: Mutex<KeyQueue>,
    /// Entries in `map` plus reserved slots; never above `max`.
    len: AtomicUsize,
    max: usize,
}

impl Table {
    pub(crate) fn new(max: usize) -> Table {
        Table {
            map: DashMap::new(),
            queue: Mutex::new(KeyQueue::new()),
            len: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// Number of clients (including slots being filled).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn get(&self, key: &ClientKey) -> Option<Arc<ClientState>> {
        self.map.get(key).map(|r| Arc::clone(r.value()))
    }

    /// Finds or inserts the client `key` and counts one more open connection for it; returns the
    /// client, the new connection count, and a client evicted to make room.
    pub(crate) fn open(
        &self,
        key: ClientKey,
        now: u64,
        idle_ns: u64,
    ) -> Result<(Arc<ClientState>, u64, Option<Removed>), Full> {
        self.find_or_insert(key, now, idle_ns, 1)
    }

    /// Finds or inserts the client `key` without counting a connection (a forwarded client's
    /// request); returns the client and a client evicted to make room. The returned `Arc`
    /// keeps it from being evicted while held.
    pub(crate) fn attach(
        &self,
        key: ClientKey,
        now: u64,
        idle_ns: u64,
    ) -> Result<(Arc<ClientState>, Option<Removed>), Full> {
        self.find_or_insert(key, now, idle_ns, 0)
            .map(|(client, _, evicted)| (client, evicted))
    }

    /// Finds or inserts `key`, adds `conns` to its connection count under the shard's lock.
    fn find_or_insert(
        &self,
        key: ClientKey,
        now: u64,
        idle_ns: u64,
        conns: u64,
    ) -> Result<(Arc<ClientState>, u64, Option<Removed>), Full> {
        if let Some(r) = self.map.get(&key) {
            let n = r.add(Metric::Connections, conns);
            r.touch(now);
            return Ok((Arc::clone(r.value()), n, None));
        }
        let evicted = self.reserve(now, idle_ns)?;
        let client = match self.map.entry(key) {
            Entry::Occupied(o) => {
                // Another worker inserted it meanwhile: give the slot back.
                self.len.fetch_sub(1, Ordering::Relaxed);
                let n = o.get().add(Metric::Connections, conns);
                o.get().touch(now);
                return Ok((Arc::clone(o.get()), n, evicted));
            }
            Entry::Vacant(v) => {
                let client = Arc::new(ClientState::new(now));
                client.add(Metric::Connections, conns);
                v.insert(Arc::clone(&client));
                client
            }
        };
        self.lock_queue().push_back(key);
        Ok((client, conns, evicted))
    }

    /// Reserves a slot, evicting one client if the table is at its bound. The evicted client's
    /// slot passes to the caller without being released, so a concurrent insert cannot take it.
    fn reserve(&self, now: u64, idle_ns: u64) -> Result<Option<Removed>, Full> {
        let reserved = self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                (l < self.max).then_some(l + 1)
            })
            .is_ok();
        if reserved {
            return Ok(None);
        }
        self.evict_one(now, idle_ns).map(Some).ok_or(Full)
    }

    /// Evicts one client: the first idle one among the oldest `EVICT_SCAN` queue entries (up to
    /// `EVICT_SCAN_MAX` while none is evictable), else the least recently seen evictable one
    /// among them. Its slot is kept (not subtracted from
    /// `len`) for the caller.
    fn evict_one(&self, now: u64, idle_ns: u64) -> Option<Removed> {
        let mut queue = self.lock_queue();
        let mut held: Vec<(ClientKey, u64)> = Vec::with_capacity(EVICT_SCAN);
        let mut out = None;
        let mut candidate = false;
        while held.len() < EVICT_SCAN || (!candidate && held.len() < EVICT_SCAN_MAX) {
            let Some(key) = queue.pop_front() else { break };
            let Some(client) = self.get(&key) else {
                continue;
            };
            let (idle, evictable, last_seen) = (
                client.is_idle(now, idle_ns),
                client.is_evictable(),
                client.last_seen(),
            );
            // `take_if` only removes a client nobody else holds.
            drop(client);
            if idle {
                if let Some(removed) = self.take_if(&key, |c| c.is_idle(now, idle_ns)) {
                    out = Some(removed);
                    break;
                }
            }
            let seen = if evictable {
                candidate = true;
                last_seen
            } else {
                u64::MAX
            };
            held.push((key, seen));
        }
        if out.is_none() {
            let oldest = held
                .iter()
                .enumerate()
                .filter(|(_, (_, seen))| *seen != u64::MAX)
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                let (key, _) = held[i];
                if let Some(removed) = self.take_if(&key, |c| c.is_evictable()) {
                    held.swap_remove(i);
                    out = Some(removed);
                }
            }
        }
        // Clients we could not evict go to the back: the next eviction looks at others.
        queue.extend(held.into_iter().map(|(k, _)| k));
        out
    }

    /// Removes up to `budget` idle clients among the oldest `budget` queue entries (for
    /// `Limiter::tick`); returns them.
    pub(crate) fn expire(&self, now: u64, idle_ns: u64, budget: usize) -> Vec<Removed> {
        let mut queue = self.lock_queue();
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..budget.min(queue.len()) {
            let Some(key) = queue.pop_front() else { break };
            match self.remove_if(&key, |c| c.is_idle(now, idle_ns)) {
                Some(c) => removed.push(c),
                None if self.map.contains_key(&key) => kept.push(key),
                None => {}
            }
        }
        queue.extend(kept);
        removed
    }

    /// Removes `key` if `f` holds for it, under the shard's write lock, and releases its slot.
    fn remove_if(&self, key: &ClientKey, f: impl Fn(&ClientState) -> bool) -> Option<Removed> {
        let client = self.take_if(key, f)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(client)
    }

    /// Removes `key` if `f` holds for it and nobody but the table holds it (no connection, no
    /// forwarded client's handle), under the shard's write lock, keeping its slot.
    fn take_if(&self, key: &ClientKey, f: impl Fn(&ClientState) -> bool) -> Option<Removed> {
        self.map
            .remove_if(key, |_, c| Arc::strong_count(c) == 1 && f(c))
            .map(|(_, client)| client)
    }

    /// Calls `f` on every client (shard by shard, under its read lock: keep `f` short).
    pub(crate) fn for_each(&self, mut f: impl FnMut(ClientKey, &ClientState)) {
        for r in self.map.iter() {
            f(*r.key(), r.value());
        }
    }

    /// Calls `f` on the clients in the table when the walk starts, each at most once, without
    /// holding a lock while `f` runs: keys are copied out of the queue `WALK_CHUNK` at a time,
    /// then each is looked up alone. A client removed meanwhile is skipped, one added meanwhile
    /// is not seen, and one that eviction or expiry moved from the front of the queue to the
    /// back before the walk got to it is missed (they take the oldest keys, which the walk
    /// visits first). Returns the number of clients `f` saw. For the admin API: O(clients), but
    /// it never stalls the hot path for longer than one chunk's copy or one lookup.
    pub(crate) fn walk(&self, mut f: impl FnMut(ClientKey, &ClientState)) -> usize {
        let end = self.lock_queue().end();
        let mut pos = 0;
        let mut chunk = Vec::with_capacity(WALK_CHUNK);
        let mut seen = 0;
        while pos < end {
            chunk.clear();
            pos = self
                .lock_queue()
                .copy_chunk(pos, end, WALK_CHUNK, &mut chunk);
            for key in &chunk {
                if let Some(client) = self.get(key) {
                    f(*key, &client);
                    seen += 1;
                }
            }
        }
        seen
    }

    fn lock_queue(&self) -> MutexGuard<'_, KeyQueue> {
        // The queue is only pushed to and popped from under the lock; no operation can leave it
        // half-updated, so a poisoned lock is safe to reuse.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(i: u32) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::from(i)), 64)
    }

    /// Closes the client's connection and lets go of it (a held client is never evicted);
    /// returns its address, to compare with what is evicted.
    fn close(c: Arc<ClientState>, now: u64) -> *const ClientState {
        c.sub(Metric::Connections, 1);
        c.touch(now);
        Arc::as_ptr(&c)
    }

    #[test]
    fn hits_count_connections_on_the_same_client() {
        let t = Table::new(10);
        let (a, n, _) = t.open(key(1), 0, 100).unwrap();
        assert_eq!(n, 1);
        let (b, n, _) = t.open(key(1), 1, 100).unwrap();
        assert_eq!(n, 2);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn at_the_bound_idle_clients_go_first_and_busy_ones_never() {
        let t = Table::new(3);
        let (busy, _, _) = t.open(key(1), 0, 100).unwrap();
        let (recent, _, _) = t.open(key(2), 0, 100).unwrap();
        let (idle, _, _) = t.open(key(3), 0, 100).unwrap();
        let idle = close(idle, 10);
        let recent = close(recent, 150);
        // At 200: key 3 idle (seen at 10), key 2 closed but recent, key 1 busy.
        let (_, _, ev) = t.open(key(4), 200, 100).unwrap();
        assert_eq!(Arc::as_ptr(&ev.unwrap()), idle);
        assert!(t.get(&key(3)).is_none());
        assert_eq!(t.len(), 3);
        // No idle client left: the least recently seen evictable one goes (key 2), never the
        // busy keys 1 and 4.
        let (_, _, ev) = t.open(key(5), 201, 100).unwrap();
        assert_eq!(Arc::as_ptr(&ev.unwrap()), recent);
        assert!(t.get(&key(1)).is_some() && t.get(&key(4)).is_some());
        assert_eq!(t.len(), 3);
        // Everyone has an open connection now: a new client is refused.
        assert!(t.open(key(6), 202, 100).is_err());
        assert_eq!(t.len(), 3);
        drop(busy);
    }

    #[test]
    fn a_blocked_client_without_connections_is_evicted() {
        let t = Table::new(2);
        t.open(key(1), 0, 1).unwrap();
        let (b, _, _) = t.open(key(2), 0, 1).unwrap();
        b.block(1_000);
        close(b, 0);
        assert!(t.open(key(3), 500, 1).is_ok());
        assert_eq!(t.len(), 2);
        assert!(t.get(&key(2)).is_none());
        // Busy clients only: no room.
        assert!(t.open(key(4), 600, 1).is_err());
    }

    #[test]
    fn eviction_looks_past_a_run_of_busy_clients() {
        let t = Table::new(40);
        let busy: Vec<_> = (0..39).map(|i| t.open(key(i), 0, 100).unwrap().0).collect();
        let (last, _, _) = t.open(key(39), 0, 100).unwrap();
        let last = close(last, 1);
        let (_, _, ev) = t.open(key(40), 2, 100).unwrap();
        assert_eq!(Arc::as_ptr(&ev.unwrap()), last);
        drop(busy);
    }

    #[test]
    fn a_walk_sees_each_client_once_and_holds_no_lock_while_it_calls_back() {
        let t = Table::new(10_000);
        let n = 3 * WALK_CHUNK as u32 + 7;
        let clients: Vec<_> = (0..n).map(|i| t.open(key(i), 0, 100).unwrap().0).collect();
        // Half the clients close: `expire` below rotates the others to the back of the queue.
        for c in clients.iter().step_by(2) {
            c.sub(Metric::Connections, 1);
        }
        let mut seen = std::collections::HashSet::new();
        let mut added = n;
        let count = t.walk(|k, _| {
            assert!(seen.insert(k), "{k:?} seen twice");
            // The callback may change the table: with a shard's lock held this would deadlock.
            if seen.len() % 100 == 1 {
                t.open(key(added), 0, 100).unwrap();
                added += 1;
                t.expire(1_000, 100, 16);
            }
        });
        assert_eq!(count, seen.len());
        // Every client still in the table that was there at the start was seen; the idle ones
        // `expire` removed before the walk reached them may be missing, the new ones are not
        // seen.
        for i in 0..n {
            if t.get(&key(i)).is_some() {
                assert!(seen.contains(&key(i)), "client {i} missed");
            }
        }
        assert!((n..added).all(|i| !seen.contains(&key(i))));
        assert!(seen.len() >= n as usize / 2);
    }

    #[test]
    fn an_attached_client_is_never_evicted_or_expired_while_held() {
        let t = Table::new(2);
        let (held, _) = t.attach(key(1), 0, 100).unwrap();
        assert_eq!(held.cur(Metric::Connections), 0);
        let (other, _) = t.attach(key(2), 0, 100).unwrap();
        drop(other);
        // Both are idle by their counters; only the one nobody holds goes.
        let (_, _, ev) = t.open(key(3), 500, 100).unwrap();
        assert!(ev.is_some());
        assert!(t.get(&key(1)).is_some() && t.get(&key(2)).is_none());
        assert!(t.expire(1_000, 100, 16).is_empty());
        drop(held);
        assert_eq!(t.expire(1_000, 100, 16).len(), 1);
    }

    #[test]
    fn expire_removes_only_idle_clients() {
        let t = Table::new(10);
        let (a, _, _) = t.open(key(1), 0, 100).unwrap();
        let (b, _, _) = t.open(key(2), 0, 100).unwrap();
        let a = close(a, 0);
        close(b, 90);
        let gone = t.expire(120, 100, 16);
        assert_eq!(gone.len(), 1);
        assert_eq!(Arc::as_ptr(&gone[0]), a);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(190, 100, 16).len(), 1);
        assert_eq!(t.len(), 0);
    }
}
