//! Block and unblock events waiting for Redis while it is unreachable.
//!
//! Bounded: at the bound the oldest event is dropped (and counted). That loses nothing the
//! fleet cannot recover for blocks still in force elsewhere: on reconnect every instance
//! resynchronises the whole list from the sorted set. A block's expiry is absolute (Unix
//! milliseconds), so a replayed block keeps its remaining duration, and one that expired while
//! waiting is not replayed at all.

use std::collections::VecDeque;

use crate::event::Event;

/// The outbox. Default bound (from `fleet.outbox`): 10000 events.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Event>,
    max: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox of at most `max` events (at least 1).
    pub fn new(max: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            max: max.max(1),
            dropped: 0,
        }
    }

    /// Queues `event`, dropping the oldest at the bound.
    pub fn push(&mut self, event: Event) {
        if self.queue.len() >= self.max {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(event);
    }

    /// Everything to replay at `now_ms`, oldest first; expired blocks are left out.
    pub fn drain(&mut self, now_ms: u64) -> Vec<Event> {
        self.queue
            .drain(..)
            .filter(|e| !matches!(e, Event::Block { expires_ms, .. } if *expires_ms <= now_ms))
            .collect()
    }

    /// Whether an event about `prefix` is waiting (then a resync must not undo it). O(len).
    pub fn mentions(&self, prefix: zgate_limiter::IpPrefix) -> bool {
        self.prefixes().any(|p| p == prefix)
    }

    /// The prefixes of the events waiting.
    pub fn prefixes(&self) -> impl Iterator<Item = zgate_limiter::IpPrefix> + '_ {
        self.queue.iter().filter_map(|e| match e {
            Event::Block { prefix, .. } | Event::Unblock { prefix } => Some(*prefix),
            _ => None,
        })
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Events dropped at the bound since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(i: u8, expires_ms: u64) -> Event {
        Event::Block {
            prefix: zgate_limiter::IpPrefix::host([192, 0, 2, i].into()),
            expires_ms,
            reason: None,
        }
    }

    #[test]
    fn bounded_oldest_dropped_and_expired_blocks_not_replayed() {
        let mut o = Outbox::new(2);
        o.push(block(1, 100));
        o.push(block(2, 50));
        o.push(block(3, 200));
        assert_eq!((o.len(), o.dropped()), (2, 1));
        assert!(o.mentions(zgate_limiter::IpPrefix::host([192, 0, 2, 3].into())));
        assert!(!o.mentions(zgate_limiter::IpPrefix::host([192, 0, 2, 1].into())));
        assert_eq!(o.drain(60), vec![block(3, 200)]);
        assert!(o.is_empty());
    }
}
