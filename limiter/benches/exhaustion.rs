//! Table and block list exhaustion over IPv6: 10^6 distinct /64 clients, each opening one
//! connection and getting itself blocked (a PING flood over the per-second cap), against a
//! limiter with `max_clients = 100_000` and `max_blocks = 65_536`. Prints the process's resident
//! memory (VmRSS, Linux) before and after, the table and block list sizes, evictions, and
//! whether a newcomer and a client of each kind are served or refused afterwards. Memory must
//! stay bounded (table and block list at their bounds) and every blocked client stay blocked.
//!
//! Run: `cargo bench -p zgate-limiter --bench exhaustion` (about a minute; prints, no
//! criterion).

use std::net::{IpAddr, Ipv6Addr};

use zgate_limiter::{H2Frame, Limiter, LimiterConfig, Nanos};

const SEC: u64 = 1_000_000_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The i-th client: a /64 of its own, spread over 16 /32s and many /48s.
fn client(i: u64) -> IpAddr {
    let hi = 0x2001_0db8_0000_0000u64 | ((i & 0xf) << 32) | ((i >> 4) & 0xffff_ffff);
    IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | 1))
}

fn main() {
    let n: u64 = 1_000_000;
    let config = LimiterConfig {
        max_clients: 100_000,
        max_blocks: 65_536,
        ..LimiterConfig::default()
    };
    let before = rss_kib();
    let l = Limiter::new(config, None, Nanos(0)).expect("valid config");
    let mut not_blocked = 0u64;
    for i in 0..n {
        let now = Nanos(SEC + i * 1000);
        let (conn, _) = l.connection_opened(client(i), now);
        let Some(conn) = conn else {
            continue; // already covered by an aggregated block
        };
        let blocked = (0..110).any(|k| conn.h2_frame(H2Frame::Ping, Nanos(now.0 + k)).is_block());
        if !blocked {
            not_blocked += 1;
        }
        conn.close(now);
    }
    let end = Nanos(SEC + n * 1000 + SEC);
    let after = rss_kib();
    let c = l.counters();
    let still_blocked = (0..n)
        .step_by(9973)
        .filter(|&i| l.is_blocked(client(i), end))
        .count();
    let sampled = (0..n).step_by(9973).count();
    let newcomer: IpAddr = "2400:cb00::1".parse().expect("an address");
    let served = l.connection_opened(newcomer, end).0.is_some();
    println!("clients {n} distinct IPv6 /64s, each blocked by a PING flood");
    println!(
        "table {} (max 100000), evictions {}, block list {} (max 65536), blocklist_full {}, not blocked {not_blocked}",
        c.clients, c.evictions, c.blocks, c.blocklist_full
    );
    println!("sampled blocked clients still blocked: {still_blocked}/{sampled}");
    println!("newcomer outside the blocked prefixes served: {served}");
    println!(
        "VmRSS before {before} KiB, after {after} KiB, growth {} KiB ({:.1} bytes per client)",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 * 1024.0 / n as f64
    );
}
