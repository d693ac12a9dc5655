//! Which backend of a pool takes a request (sans-IO): round robin, least in flight, or a
//! consistent hash of the client. Every strategy prefers a backend that is up, and falls back
//! to one that is down only when all are (trying beats refusing everything); a backend the
//! request already tried is never chosen again.
//!
//! `client_hash` is rendezvous hashing (highest random weight): each backend's score for a
//! client is a hash of the pair, and the client goes to the highest-scoring backend that is
//! up. A backend's seed is a hash of its address, so scores do not depend on the order of the
//! list; when a backend goes down only its own clients move (each to its second choice, which
//! spreads them over the others), and when it comes back they return.

use std::net::IpAddr;

use zgate_config::Balance;

/// What a choice sees of a pool's backends.
pub(super) trait Candidates {
    /// How many backends the pool has.
    fn len(&self) -> usize;
    /// Whether backend `i` is up (not skipped after a failure).
    fn is_up(&self, i: usize) -> bool;
    /// Requests in flight on backend `i` (`least_in_flight` only).
    fn in_flight(&self, i: usize) -> usize;
    /// Backend `i`'s hash seed ([`seed`] of its address; `client_hash` only).
    fn seed(&self, i: usize) -> u64;
}

/// The backends a request already failed on.
pub(super) trait Failed {
    /// Whether the request failed on backend `i`.
    fn has(&self, i: usize) -> bool;
}

impl Failed for [usize] {
    fn has(&self, i: usize) -> bool {
        self.contains(&i)
    }
}

impl Failed for super::retry::Tried {
    fn has(&self, i: usize) -> bool {
        super::retry::Tried::has(self, i)
    }
}

/// The backend that takes a request: `turn` is the pool's request counter (ties and round
/// robin start there), `client` the client's [`client_hash`], `tried` the backends this
/// request already failed to connect to. `None` when every backend was tried.
pub(super) fn choose(
    balance: Balance,
    c: &impl Candidates,
    turn: usize,
    client: u64,
    tried: &(impl Failed + ?Sized),
) -> Option<usize> {
    let n = c.len();
    if n == 0 {
        return None;
    }
    let fresh = |i: &usize| !tried.has(*i);
    let order = (0..n).map(|k| (turn.wrapping_add(k)) % n).filter(fresh);
    let best = |up_only: bool| {
        let mut candidates = order.clone().filter(|&i| !up_only || c.is_up(i));
        match balance {
            Balance::RoundRobin => candidates.next(),
            // `min_by_key` keeps the first of equal keys: ties go in turn.
            Balance::LeastInFlight => candidates.min_by_key(|&i| c.in_flight(i)),
            Balance::ClientHash => candidates.max_by_key(|&i| score(client, c.seed(i))),
        }
    };
    best(true).or_else(|| best(false))
}

/// A backend's seed for `client_hash`: a hash of its address as configured (stable across
/// restarts, reloads and reorderings of the list).
pub(super) fn seed(addr: &str) -> u64 {
    // FNV-1a, then a finaliser: short strings differing in one digit spread over all bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// A client's hash for `client_hash`.
pub(super) fn client_hash(client: IpAddr) -> u64 {
    let bits = match client {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    mix(mix(bits as u64) ^ (bits >> 64) as u64)
}

/// The rendezvous score of a client on a backend.
fn score(client: u64, seed: u64) -> u64 {
    mix(client ^ seed)
}

/// MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        up: Vec<bool>,
        in_flight: Vec<usize>,
        seeds: Vec<u64>,
    }

    impl Fake {
        fn new(n: usize) -> Fake {
            Fake {
                up: vec![true; n],
                in_flight: vec![0; n],
                seeds: (0..n).map(|i| seed(&format!("10.0.0.{i}:80"))).collect(),
            }
        }
    }

    impl Candidates for Fake {
        fn len(&self) -> usize {
            self.up.len()
        }
        fn is_up(&self, i: usize) -> bool {
            self.up[i]
        }
        fn in_flight(&self, i: usize) -> usize {
            self.in_flight[i]
        }
        fn seed(&self, i: usize) -> u64 {
            self.seeds[i]
        }
    }

    fn ip(i: u32) -> u64 {
        client_hash(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
    }

    #[test]
    fn round_robin_takes_turns_and_skips_down_and_tried() {
        let mut f = Fake::new(3);
        let rr = |f: &Fake, turn, tried: &[usize]| choose(Balance::RoundRobin, f, turn, 0, tried);
        assert_eq!(
            (0..6).map(|t| rr(&f, t, &[]).unwrap()).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        f.up[1] = false;
        assert_eq!(rr(&f, 1, &[]), Some(2));
        assert_eq!(rr(&f, 1, &[2]), Some(0));
        f.up = vec![false; 3];
        assert_eq!(rr(&f, 1, &[]), Some(1), "all down: trying beats refusing");
        assert_eq!(rr(&f, 1, &[0, 1, 2]), None, "every backend tried");
    }

    #[test]
    fn least_in_flight_prefers_the_idle_and_rotates_ties() {
        let mut f = Fake::new(3);
        f.in_flight = vec![2, 0, 1];
        let lif = |f: &Fake, turn, tried: &[usize]| {
            choose(Balance::LeastInFlight, f, turn, 0, tried).unwrap()
        };
        assert_eq!(lif(&f, 0, &[]), 1);
        assert_eq!(lif(&f, 7, &[]), 1);
        assert_eq!(lif(&f, 0, &[1]), 2);
        f.up[1] = false;
        assert_eq!(lif(&f, 0, &[]), 2, "a down backend is skipped, idle or not");
        f.in_flight = vec![0, 0, 0];
        f.up[1] = true;
        assert_eq!(
            (0..3).map(|t| lif(&f, t, &[])).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn client_hash_is_sticky_spread_and_moves_only_the_down_backends_clients() {
        let mut f = Fake::new(4);
        let pick =
            |f: &Fake, c: u32, turn| choose(Balance::ClientHash, f, turn, ip(c), &[][..]).unwrap();
        let before: Vec<usize> = (0..1000).map(|c| pick(&f, c, 0)).collect();
        for c in 0..1000 {
            assert_eq!(
                pick(&f, c, c as usize * 7),
                before[c as usize],
                "sticky whatever the turn"
            );
        }
        let mut per = [0usize; 4];
        for &b in &before {
            per[b] += 1;
        }
        assert!(per.iter().all(|&n| n > 150), "spread: {per:?}");
        f.up[2] = false;
        let mut moved_to = [0usize; 4];
        for c in 0..1000u32 {
            let now = pick(&f, c, 0);
            if before[c as usize] == 2 {
                assert_ne!(now, 2);
                moved_to[now] += 1;
            } else {
                assert_eq!(now, before[c as usize], "a client of an up backend moved");
            }
        }
        assert!(
            moved_to.iter().filter(|&&n| n > 0).count() == 3,
            "the down backend's clients spread: {moved_to:?}"
        );
        // Its order does not matter: the seed is the address.
        f.up[2] = true;
        let mut g = Fake::new(4);
        g.seeds.reverse();
        for c in 0..100u32 {
            assert_eq!(pick(&g, c, 0), 3 - before[c as usize]);
        }
    }
}
