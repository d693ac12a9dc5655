//! Legitimate goodput under a Rapid Reset attack, as a ratio of goodput without it, and the
//! time zgate takes to block the attacker.
//!
//! What it does: starts zgate in-process (release build) in front of the demo backend, trains
//! it on the lab population (`tests/src/lab.rs`), switches to defence, then measures for
//! `SECS` seconds each: (1) legitimate load alone, (2) the same load while a Rapid Reset
//! attacker (HEADERS + RST_STREAM, 50 streams per write, reconnecting whenever cut) runs at
//! full speed from another address, reconnecting whenever cut. Legitimate load: 16 keep-alive
//! HTTP/1.1 connections from 8 addresses, GET /bytes?n=1024 in a loop; goodput = 200
//! responses per second.
//!
//! The proxy, the legitimate load and the attacker each run on their own threads (the proxy on
//! a 2-worker runtime, the others on single-threaded runtimes).
//!
//! Where they run (env `PIN`):
//! - `PIN=1` (the default on a machine with 2 CPUs or more): the attacker's thread runs on
//!   CPU 1 only and everything else (proxy, backend, legitimate clients) on CPU 0 only, with or
//!   without the attack. This is the layout of a real attack, whose sender's CPU is not the
//!   proxy's: the ratio then measures what the attacker's traffic costs the defended side.
//! - `PIN=0`: nothing is pinned; the attacker's own CPU use takes from the proxy whatever the
//!   proxy does (on a 2-core machine, most of the drop).
//!
//! In both, a control row runs the same attacker against a listener that resets every
//! connection at once (no zgate work at all), on the defended side's CPU: zgate's cost of an
//! attacker it has blocked is the difference between the "defence" row and the control row.
//!
//! A second defence row sets `limits.syn_drop_after = 16`: after 16 resets at accept, the
//! blocked attacker's SYNs are dropped in the kernel, so its reconnects stop costing the
//! defended side an accept and a reset each.
//!
//! Run: `cargo bench -p zgate-tests --bench under_attack` (env SECS=5 per phase, PIN).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zgate_limiter::Mode;
use zgate_tests::lab::*;
use zgate_tests::{get, Client};

/// Whether the attacker gets a CPU of its own (see the module docs); decided once, before
/// any pinning narrows what `available_parallelism` sees.
fn pinned() -> bool {
    static PINNED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PINNED.get_or_init(|| match std::env::var("PIN").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
    })
}

/// Restricts the calling thread (and the threads it spawns afterwards) to `cpu`.
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bit set, valid when zeroed; `CPU_SET` writes inside it
    // (cpu < CPU_SETSIZE), and `sched_setaffinity(0, ..)` only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        panic!(
            "cannot pin a thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) {
    panic!("PIN=1 is implemented on Linux only; run with PIN=0");
}

fn secs() -> u64 {
    std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Runs `f` to completion on a new thread with its own single-threaded runtime, on `cpu` only
/// if given.
fn on_own_thread<F, T>(cpu: Option<usize>, f: F) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            pin_current_thread(cpu);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
}

/// Runs legitimate load for `dur` on its own thread; returns 200-responses per second and
/// failures.
async fn legit_load(to: SocketAddr, dur: Duration) -> (f64, u64) {
    tokio::task::spawn_blocking(move || {
        on_own_thread(None, legit_load_here(to, dur))
            .join()
            .unwrap_or((0.0, u64::MAX))
    })
    .await
    .unwrap_or((0.0, u64::MAX))
}

async fn legit_load_here(to: SocketAddr, dur: Duration) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let from = ip(1, 1 + i % 8);
            let Ok(s) = connect_from(from, to).await else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut c: Client = Client::from_stream(s, false).await;
            while Instant::now() < stop {
                match c.try_send(get(to, "/bytes?n=1024")).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / dur.as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

/// Rapid Reset from `from` until `stop` is set: reconnects whenever cut.
async fn rapid_reset(from: IpAddr, to: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let authority = to.to_string();
    let mut connections = 0;
    while !stop.load(Ordering::Relaxed) {
        connections += 1;
        // A connect whose SYN is dropped is given up after a while, like a real attacker's,
        // and tried again (and `stop` is seen).
        let Ok(Ok(mut raw)) =
            tokio::time::timeout(Duration::from_millis(250), RawH2::connect(from, to)).await
        else {
            continue;
        };
        let mut id = 1u32;
        while !stop.load(Ordering::Relaxed) {
            let out = rapid_reset_batch(id, 50, &authority);
            id += 100;
            if raw.send(&out).await.is_err() {
                break;
            }
            if raw.drain(Duration::from_millis(0)).await.0 {
                break;
            }
        }
    }
    connections
}

/// A listener that resets every connection it accepts (SO_LINGER 0), doing nothing else.
fn resetting_listener() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    });
    addr
}

/// `target` is where the attacker aims: the lab's proxy, or the control listener.
/// Returns goodput alone and under the attack.
async fn scenario(label: &str, lab: &Lab, attacker: IpAddr, target: SocketAddr) -> (f64, f64) {
    let dur = Duration::from_secs(secs());
    let (base, f0) = legit_load(lab.addr, dur).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let attack = on_own_thread(
        pinned().then_some(1),
        rapid_reset(attacker, target, stop.clone()),
    );
    let watch = {
        let limiter = lab.server.limiter().clone();
        let clock = lab.server.clock();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if limiter.is_blocked(attacker, clock.now()) {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            None
        })
    };
    let (under, f1) = legit_load(lab.addr, dur).await;
    stop.store(true, Ordering::Relaxed);
    let conns = tokio::task::spawn_blocking(move || attack.join().unwrap_or(0))
        .await
        .unwrap_or(0);
    let blocked_after = watch.await.ok().flatten();
    println!(
        "| {label} | {base:.0} | {under:.0} | {:.3} | {} | {conns} | {f0}/{f1} |",
        under / base,
        blocked_after.map_or("never".into(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
    );
    (base, under)
}

fn main() {
    let pinned = pinned();
    if pinned {
        // Before any thread exists: every thread but the attacker's inherits CPU 0.
        pin_current_thread(0);
    }
    println!(
        "layout: {}\n",
        if pinned {
            "PIN=1: the attacker on CPU 1; proxy, backend and legitimate clients on CPU 0"
        } else {
            "PIN=0: nothing pinned; attacker, proxy, backend and clients share every CPU"
        }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("| zgate | goodput alone (req/s) | goodput under Rapid Reset (req/s) | ratio | attacker blocked after | attacker connections | legit failures (alone/under) |");
        println!("|---|---:|---:|---:|---|---:|---|");
        let lab = Lab::start("").await;
        lab.train(4, Mode::Defence).await;
        let (_, defended) = scenario("defence", &lab, ip(9, 4), lab.addr).await;
        let lab = Lab::start_with("syn_drop_after = 16", "").await;
        lab.train(4, Mode::Defence).await;
        scenario(
            "defence, syn_drop_after = 16",
            &lab,
            ip(9, 7),
            lab.addr,
        )
        .await;
        let (_, control) = scenario(
            "control: attacker aimed at a resetting listener",
            &lab,
            ip(9, 5),
            resetting_listener(),
        )
        .await;
        let lab = Lab::start("").await;
        scenario("disabled (static guards only)", &lab, ip(9, 6), lab.addr).await;
        println!(
            "\ngoodput under the attack, zgate defending / the same attacker aimed at the control \
             listener: {:.3} (what zgate's handling of the attacker costs; the rest of the drop \
             is the attacker's own CPU on the shared cores)",
            defended / control
        );
    });
}
