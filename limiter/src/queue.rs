//! The client table's eviction queue: every key once, oldest first, with absolute positions so
//! a walk can go through it a chunk at a time without holding its lock in between.
//!
//! A key's position is the number of keys ever popped from the front plus its index: it does
//! not change while the key stays queued, whatever is popped before it or pushed after it. A
//! walk remembers the position it stopped at; the next chunk starts there, or at the front if
//! the keys before it were popped meanwhile (they were removed, or went to the back, past the
//! walk's end).

use std::collections::VecDeque;

use crate::key::ClientKey;

/// Keys in insertion order, with the count of keys popped from the front.
#[derive(Default)]
pub(crate) struct KeyQueue {
    keys: VecDeque<ClientKey>,
    /// Keys ever popped from the front: the position of the front key.
    popped: u64,
}

impl KeyQueue {
    pub(crate) fn new() -> KeyQueue {
        KeyQueue::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn push_back(&mut self, key: ClientKey) {
        self.keys.push_back(key);
    }

    pub(crate) fn pop_front(&mut self) -> Option<ClientKey> {
        let key = self.keys.pop_front()?;
        self.popped += 1;
        Some(key)
    }

    pub(crate) fn extend(&mut self, keys: impl IntoIterator<Item = ClientKey>) {
        self.keys.extend(keys);
    }

    /// The position one past the back: where the next pushed key goes.
    pub(crate) fn end(&self) -> u64 {
        self.popped + self.keys.len() as u64
    }

    /// Copies into `out` up to `max` keys from position `from` (or from the front, if it is
    /// past `from`) up to position `end` (exclusive); returns the position after the last key
    /// copied, `end` if there is nothing left before it.
    pub(crate) fn copy_chunk(
        &self,
        from: u64,
        end: u64,
        max: usize,
        out: &mut Vec<ClientKey>,
    ) -> u64 {
        let start = from.max(self.popped);
        let stop = end.min(self.end());
        if start >= stop {
            return end;
        }
        // Both differences are below `keys.len()`, a `usize`.
        let first = (start - self.popped) as usize;
        let count = ((stop - start) as usize).min(max);
        out.extend(self.keys.range(first..first + count).copied());
        start + count as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(i: u32) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::from(i)), 64)
    }

    #[test]
    fn chunks_resume_where_they_stopped_whatever_was_popped_before() {
        let mut q = KeyQueue::new();
        q.extend((0..10).map(key));
        let end = q.end();
        let mut out = Vec::new();
        let pos = q.copy_chunk(0, end, 4, &mut out);
        assert_eq!(pos, 4);
        // Two keys leave the front, one goes to the back: positions of the rest hold.
        let a = q.pop_front().unwrap();
        q.pop_front();
        q.push_back(a);
        let pos = q.copy_chunk(pos, end, 4, &mut out);
        assert_eq!(pos, 8);
        let pos = q.copy_chunk(pos, end, 4, &mut out);
        assert_eq!(pos, 10);
        assert_eq!(q.copy_chunk(pos, end, 4, &mut out), end);
        // Each key once; the key moved to the back (past `end`) is not seen twice.
        assert_eq!(out, (0..10).map(key).collect::<Vec<_>>());
    }

    #[test]
    fn a_chunk_behind_the_front_starts_at_the_front() {
        let mut q = KeyQueue::new();
        q.extend((0..6).map(key));
        let end = q.end();
        for _ in 0..3 {
            q.pop_front();
        }
        let mut out = Vec::new();
        assert_eq!(q.copy_chunk(1, end, 10, &mut out), 6);
        assert_eq!(out, (3..6).map(key).collect::<Vec<_>>());
        // Keys pushed after the walk began are past its end.
        q.push_back(key(99));
        assert_eq!(q.copy_chunk(6, end, 10, &mut out), end);
        assert_eq!(out.len(), 3);
    }
}
