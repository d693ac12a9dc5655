//! What the state file gives back at start besides the model and mode, and what is saved of
//! the running state: the runtime overrides and the manual blocks.
//!
//! A bad entry (an override out of range, a prefix that does not parse) is left out with a
//! warning naming it (escaped: the file may have been edited by hand), and the rest is used.
//! Block expiries are wall-clock seconds in the file and the limiter's clock in memory; an
//! expiry already past is dropped, one more than 365 days ahead is cut to 365 days.

use std::net::IpAddr;
use std::time::Duration;

use zgate_limiter::{IpPrefix, Limiter, Nanos};

use super::overrides::{Overrides, MAX_BLOCK_DURATION};
use super::persist::{Runtime, SavedBlock, SavedState};
use crate::escape::escaped;

/// The overrides of `saved`, bad entries warned about and left out.
pub fn overrides(saved: Option<&SavedState>) -> Overrides {
    let Some(saved) = saved else {
        return Overrides::default();
    };
    let (o, bad) = Overrides::from_json(&saved.overrides);
    for e in bad {
        tracing::warn!(error = %escaped(&e.to_string()), "state file: override left out");
    }
    o
}

/// Blocks the unexpired manual blocks of `saved` again; returns how many. `now` is the
/// limiter's clock and `unix_now` the wall clock, in seconds since the Unix epoch, at the same
/// instant.
pub fn blocks(limiter: &Limiter, saved: &[SavedBlock], now: Nanos, unix_now: u64) -> usize {
    let mut n = 0;
    for b in saved {
        let Some(prefix) = parse_prefix(&b.prefix) else {
            tracing::warn!(prefix = %escaped(&b.prefix), "state file: block left out, not a prefix");
            continue;
        };
        let left = b.expires_at.saturating_sub(unix_now);
        if left == 0 {
            continue;
        }
        let left = Duration::from_secs(left).min(MAX_BLOCK_DURATION);
        match limiter.block(prefix, left, now) {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(%prefix, error = %e, "state file: block left out"),
        }
    }
    n
}

/// The running state to save: `overrides` and the manual blocks of `limiter`.
pub fn runtime(overrides: &Overrides, limiter: &Limiter, now: Nanos, unix_now: u64) -> Runtime {
    let mut blocks: Vec<SavedBlock> = limiter
        .blocks(now)
        .into_iter()
        .filter(|b| b.reason.is_none())
        .map(|b| SavedBlock {
            prefix: b.prefix.to_string(),
            expires_at: unix_now.saturating_add(b.until.saturating_since(now).as_secs()),
        })
        .collect();
    blocks.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Runtime {
        overrides: overrides.to_json(),
        blocks,
    }
}

/// `192.0.2.0/24` or `2001:db8::/64` (as [`IpPrefix`] displays), or a bare address.
fn parse_prefix(text: &str) -> Option<IpPrefix> {
    match text.split_once('/') {
        None => Some(IpPrefix::host(text.parse::<IpAddr>().ok()?)),
        Some((a, l)) => IpPrefix::new(a.parse().ok()?, l.parse().ok()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zgate_limiter::LimiterConfig;

    #[test]
    fn manual_blocks_round_trip_and_bad_or_expired_ones_are_left_out() {
        let l = Limiter::new(LimiterConfig::default(), None, Nanos(0)).unwrap();
        let now = Nanos::from_secs(100);
        let saved = vec![
            SavedBlock {
                prefix: "192.0.2.0/24".into(),
                expires_at: 1_000 + 60,
            },
            SavedBlock {
                prefix: "2001:db8::/64".into(),
                expires_at: u64::MAX,
            },
            SavedBlock {
                prefix: "198.51.100.1/32".into(),
                expires_at: 999,
            },
            SavedBlock {
                prefix: "nonsense\n".into(),
                expires_at: 2_000,
            },
        ];
        assert_eq!(blocks(&l, &saved, now, 1_000), 2);
        let r = runtime(&Overrides::default(), &l, now, 1_000);
        assert_eq!(r.blocks.len(), 2);
        assert_eq!(r.blocks[0].prefix, "192.0.2.0/24");
        assert_eq!(r.blocks[0].expires_at, 1_060);
        assert_eq!(r.blocks[1].expires_at, 1_000 + MAX_BLOCK_DURATION.as_secs());
        assert!(l.is_blocked("192.0.2.9".parse().unwrap(), now));
    }
}
