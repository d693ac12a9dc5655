//! Memory per tracked client, measured with a counting global allocator: the bytes the limiter
//! holds after inserting N distinct clients (each opened and closed one connection), divided
//! by N, for several N (the map's load factor varies between its doublings, so the figure
//! does too). Includes the map's buckets, the shard locks, the `Arc<ClientState>` and the
//! eviction queue. Target: <= 256 bytes.
//!
//! Run: `cargo bench -p zgate-limiter --bench memory`
//! (a few seconds; prints, no criterion).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use zgate_limiter::{Limiter, LimiterConfig, Mode, Nanos};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let mut worst = 0.0f64;
    for n in [100_000u32, 300_000, 600_000, 1_000_000, 1_500_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let c = LimiterConfig {
            max_clients: 4_000_000,
            training_period: Duration::ZERO,
            ..LimiterConfig::default()
        };
        let l = Limiter::new(c, None, Nanos(0)).expect("valid config");
        l.set_mode(Mode::Training, Nanos(0))
            .expect("no model needed");
        let empty = LIVE.load(Ordering::Relaxed);
        for i in 0..n {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            if let (Some(c), _) = l.connection_opened(ip, Nanos(1)) {
                c.close(Nanos(2));
            }
        }
        let full = LIVE.load(Ordering::Relaxed);
        let per = (full - empty) as f64 / f64::from(n);
        worst = worst.max(per);
        println!(
            "memory: {n:>9} clients: {per:6.1} bytes/client (limiter itself {} bytes empty)",
            empty - before
        );
        drop(l);
    }
    println!("memory: worst {worst:.1} bytes/client (target <= 256)");
}
