//! The attack lab: zgate trained on a legitimate population, then attacked while the population
//! keeps working. Each scenario asserts that the attacker was cut off and blocked, and that no
//! legitimate request failed. Every attack is bounded in count and time.
//!
//! The connection flood, the POST flood and the slow read also run through an L4 balancer that
//! speaks PROXY protocol, with the same verdicts.
//!
//! Scenarios run one at a time (a process-wide lock): they measure CPU time per client, and
//! two labs at once on two cores would make each other's clients look expensive.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zgate_limiter::{Guard, Metric, Mode, Reason};
use zgate_tests::balancer::Version;
use zgate_tests::lab::*;

/// An async mutex: tokio's works across the tests' separate runtimes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TRAIN_ROUNDS: usize = 4;

/// What may block a flood of connections: their count, or the memory they cost.
const CONNECTION_FLOOD: &[Reason] = &[
    Reason::Metric(Metric::Connections),
    Reason::Metric(Metric::Memory),
];

async fn trained(extra: &str) -> Lab {
    let lab = Lab::start(extra).await;
    lab.train(TRAIN_ROUNDS, Mode::Defence).await;
    lab
}

/// A lab behind an L4 balancer speaking PROXY protocol `version`, trained like [`trained`]:
/// the population and the attackers are known by the header's addresses.
async fn trained_behind_balancer(version: Version) -> Lab {
    let lab = Lab::start_behind_balancer(version, "").await;
    lab.train(TRAIN_ROUNDS, Mode::Defence).await;
    lab
}

fn assert_blocked_for(lab: &Lab, attacker: IpAddr, allowed: &[Reason]) {
    let entry = lab
        .block_of(attacker)
        .unwrap_or_else(|| panic!("{attacker} is not blocked; blocks: {:?}", lab.blocks()));
    assert!(
        entry.reason.is_some_and(|r| allowed.contains(&r)),
        "{attacker} blocked for {:?}, expected one of {allowed:?}",
        entry.reason
    );
    for legit in population_ips() {
        assert!(!lab.is_blocked(legit), "legitimate {legit} was blocked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn population_in_defence_is_never_blocked() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    for round in 0..5 {
        lab.rounds(1)
            .await
            .assert_clean(&format!("defence round {round}"));
    }
    assert!(
        lab.blocks().is_empty(),
        "false positives: {:?}",
        lab.blocks()
    );
    let c = lab.server.limiter().counters();
    assert_eq!(c.blocked, [0; Metric::COUNT], "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_from_one_address_is_blocked() {
    let _s = SERIAL.lock().await;
    connection_flood(&trained("").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_through_a_proxy_protocol_balancer_is_blocked() {
    let _s = SERIAL.lock().await;
    connection_flood(&trained_behind_balancer(Version::V1).await).await;
}

async fn connection_flood(lab: &Lab) {
    let attacker = ip(9, 1);
    let to = lab.addr;
    let (legit, seen) = under_attack(lab, 30, async move {
        let mut seen = Seen::default();
        let mut open = Vec::new();
        let deadline = attack_deadline();
        for _ in 0..400 {
            if Instant::now() > deadline {
                break;
            }
            match connect_from(attacker, to).await {
                Ok(mut s) => {
                    // A request line, so the connection is real; then hold it.
                    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                        seen.cut += 1;
                    }
                    open.push(s);
                }
                Err(_) => seen.refused += 1,
            }
        }
        // Held connections get reset: read each with a bound.
        for mut s in open {
            let mut b = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => seen.cut += 1,
                _ => {}
            }
        }
        seen
    })
    .await;
    report(lab, attacker, "connection flood");
    lab.assert_legit(&legit, "during the connection flood");
    assert!(
        seen.cut + seen.refused > 0,
        "the attacker was never cut off: {seen:?}"
    );
    // Memory charges `memory_per_connection` per connection, so for a flood of connections
    // it grows in step with their count and either may cross its threshold first.
    assert_blocked_for(lab, attacker, CONNECTION_FLOOD);
}

/// Prints the model and the attacker's block entry (for the closing figures).
fn report(lab: &Lab, attacker: IpAddr, label: &str) {
    if let Some(b) = lab.block_of(attacker) {
        eprintln!(
            "[{label}] {attacker} blocked: reason={:?} value={} z={:.2}",
            b.reason, b.value, b.z
        );
    }
    if let Some(m) = lab.server.limiter().model() {
        for metric in Metric::ALL {
            let mm = m.get(metric);
            eprintln!(
                "[{label}] model {metric}: n={} mean={:.1} std={:.1}",
                mm.n, mm.mean, mm.std
            );
        }
    }
}

/// Sends `n` concurrent requests over one HTTP/2 connection from `from`; counts failures.
async fn h2_concurrent(from: IpAddr, to: std::net::SocketAddr, n: usize, post: bool) -> Seen {
    let mut seen = Seen::default();
    let Ok(stream) = connect_from(from, to).await else {
        seen.refused += 1;
        return seen;
    };
    let zgate_tests::Client::H2(sender) = zgate_tests::Client::from_stream(stream, true).await
    else {
        unreachable!("asked for h2")
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = zgate_tests::Client::H2(sender.clone());
        tasks.push(tokio::spawn(async move {
            let req = if post {
                zgate_tests::request(
                    "POST",
                    to,
                    "/slow?ms=4000",
                    zgate_tests::noise(64, i as u64),
                )
            } else {
                zgate_tests::get(to, "/slow?ms=4000")
            };
            c.try_send(req).await
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(r)) if r.status() == 200 => seen.responses += 1,
            _ => seen.cut += 1,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_flood_against_a_slow_endpoint_is_blocked() {
    let _s = SERIAL.lock().await;
    post_flood(&trained("").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_flood_through_a_proxy_protocol_balancer_is_blocked() {
    let _s = SERIAL.lock().await;
    post_flood(&trained_behind_balancer(Version::V2).await).await;
}

async fn post_flood(lab: &Lab) {
    let attacker = ip(9, 2);
    let (legit, seen) = under_attack(lab, 30, h2_concurrent(attacker, lab.addr, 100, true)).await;
    report(lab, attacker, "post flood");
    lab.assert_legit(&legit, "during the POST flood");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(
        lab,
        attacker,
        &[
            Reason::Metric(Metric::RequestsNonidempotent),
            Reason::Metric(Metric::Requests),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_concurrent_get_streams_against_a_slow_endpoint_are_blocked() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 3);
    let (legit, seen) = under_attack(&lab, 30, h2_concurrent(attacker, lab.addr, 120, false)).await;
    report(&lab, attacker, "get streams");
    lab.assert_legit(&legit, "during the GET stream flood");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(&lab, attacker, &[Reason::Metric(Metric::Requests)]);
}

/// Runs a raw HTTP/2 attack: writes `batch()` repeatedly until the proxy cuts the connection,
/// `max_batches` are sent, or the deadline passes. Returns what the attacker saw.
async fn raw_h2_attack(
    from: IpAddr,
    to: std::net::SocketAddr,
    max_batches: usize,
    mut batch: impl FnMut(usize) -> Vec<u8> + Send,
) -> Seen {
    let mut seen = Seen::default();
    let mut raw = match RawH2::connect(from, to).await {
        Ok(r) => r,
        Err(_) => {
            seen.refused += 1;
            return seen;
        }
    };
    let deadline = attack_deadline();
    for i in 0..max_batches {
        if Instant::now() > deadline {
            break;
        }
        if raw.send(&batch(i)).await.is_err() {
            seen.cut += 1;
            return seen;
        }
        // Keep the server's replies flowing without blocking the attack.
        let (ended, goaway) = raw.drain(Duration::from_millis(1)).await;
        seen.goaway += goaway;
        if ended {
            seen.cut += 1;
            return seen;
        }
    }
    let (ended, goaway) = raw.drain(Duration::from_secs(5)).await;
    seen.goaway += goaway;
    if ended {
        seen.cut += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_blocked() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 4);
    let to = lab.addr;
    let authority = to.to_string();
    // A real attacker reconnects whenever a connection is closed: up to 30 connections, each
    // sending HEADERS then RST_STREAM(CANCEL) for 50 streams per write, as fast as it can.
    let attack = async move {
        let mut total = Seen::default();
        for _ in 0..30 {
            let authority = authority.clone();
            let seen = raw_h2_attack(attacker, to, 400, move |i| {
                rapid_reset_batch(2 * (i as u32 * 50) + 1, 50, &authority)
            })
            .await;
            total.cut += seen.cut;
            total.refused += seen.refused;
            total.goaway += seen.goaway;
            if seen.refused > 0 {
                break;
            }
        }
        total
    };
    let (legit, seen) = under_attack(&lab, 30, attack).await;
    report(&lab, attacker, "rapid reset");
    lab.assert_legit(&legit, "during Rapid Reset");
    assert!(seen.cut > 0, "the connection was never closed: {seen:?}");
    assert_blocked_for(
        &lab,
        attacker,
        &[
            Reason::Guard(Guard::H2Abuse),
            Reason::Guard(Guard::Glitches),
            Reason::Guard(Guard::RstStream),
            Reason::Metric(Metric::Cpu),
            Reason::Metric(Metric::Requests),
        ],
    );
    // Once blocked, a new connection is refused at accept.
    let refused = match connect_from(attacker, to).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = s.write_all(zgate_proxy::H2_PREFACE).await;
            let mut b = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    };
    assert!(refused, "a blocked client got a new connection served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_by_its_guard() {
    let _s = SERIAL.lock().await;
    // h2 itself gives up on a header block after a few CONTINUATIONs (GOAWAY
    // ENHANCE_YOUR_CALM, which zgate counts as a glitch: see rapid_reset_is_blocked).
    // A cap below h2's shows zgate's own guard acting first, on the frame that passes it.
    let cap = 3;
    let lab = trained(&format!(
        "[limits.guards]\nmax_continuation_per_block = {cap}\n"
    ))
    .await;
    let attacker = ip(9, 5);
    let to = lab.addr;
    let authority = to.to_string();
    let attack = raw_h2_attack(attacker, to, 5000, move |i| {
        if i == 0 {
            // A header block that never ends: HEADERS without END_HEADERS...
            frame(h2::HEADERS, 0, 1, &hpack_request(false, &authority, true))
        } else {
            // ...then CONTINUATION after CONTINUATION, each a ~1 KiB literal header: frames
            // of normal size, so fragmentation stays low and the guard is what must act.
            let mut lit = vec![0x00, 5];
            lit.extend_from_slice(b"x-pad");
            lit.extend_from_slice(&[0x7f, 0x81, 0x07]); // 7-bit prefix integer: 127 + 897 = 1024
            lit.extend_from_slice(&[b'a'; 1024]);
            frame(h2::CONTINUATION, 0, 1, &lit)
        }
    });
    let (legit, seen) = under_attack(&lab, 30, attack).await;
    report(&lab, attacker, "continuation");
    lab.assert_legit(&legit, "during the CONTINUATION flood");
    assert!(seen.cut > 0, "{seen:?}");
    let entry = lab.block_of(attacker).expect("attacker blocked");
    assert_eq!(entry.reason, Some(Reason::Guard(Guard::Continuation)));
    assert_eq!(entry.value, cap + 1, "cut at the first frame over the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_data_frames_are_blocked_for_fragmentation() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 6);
    let to = lab.addr;
    let authority = to.to_string();
    let attack = raw_h2_attack(attacker, to, 3000, move |i| {
        if i == 0 {
            // POST /, body to follow.
            frame(
                h2::HEADERS,
                h2::END_HEADERS,
                1,
                &hpack_request(true, &authority, true),
            )
        } else {
            frame(h2::DATA, 0, 1, b"x")
        }
    });
    let (legit, seen) = under_attack(&lab, 30, attack).await;
    report(&lab, attacker, "tiny data");
    lab.assert_legit(&legit, "during the tiny DATA attack");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(&lab, attacker, &[Reason::Metric(Metric::Fragmentation)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_data_dribble_is_blocked_for_fragmentation() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 7);
    let to = lab.addr;
    let attack = async move {
        let mut seen = Seen::default();
        let Ok(mut s) = connect_from(attacker, to).await else {
            seen.refused += 1;
            return seen;
        };
        let head = "POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
        if s.write_all(head.as_bytes()).await.is_err() {
            seen.cut += 1;
            return seen;
        }
        let deadline = attack_deadline();
        for _ in 0..3000 {
            if Instant::now() > deadline {
                break;
            }
            // One byte per write, spaced so each is its own read on the proxy side.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if s.write_all(b"x").await.is_err() {
                seen.cut += 1;
                return seen;
            }
            let mut b = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    seen.cut += 1;
                    return seen;
                }
                _ => {}
            }
        }
        seen
    };
    let (legit, seen) = under_attack(&lab, 30, attack).await;
    report(&lab, attacker, "dribble");
    lab.assert_legit(&legit, "during the HTTP/1 dribble");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(&lab, attacker, &[Reason::Metric(Metric::Fragmentation)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_blocked_for_memory() {
    let _s = SERIAL.lock().await;
    slow_read(&trained("").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_through_a_proxy_protocol_balancer_are_blocked_for_memory() {
    let _s = SERIAL.lock().await;
    slow_read(&trained_behind_balancer(Version::V2).await).await;
}

async fn slow_read(lab: &Lab) {
    let attacker = ip(9, 8);
    let to = lab.addr;
    let attack = async move {
        let mut seen = Seen::default();
        let mut held = Vec::new();
        for _ in 0..24 {
            let Ok(mut s) = connect_from(attacker, to).await else {
                seen.refused += 1;
                continue;
            };
            // Large responses, never read: the proxy holds what the socket cannot take.
            let req = "GET /bytes?n=268435456 HTTP/1.1\r\nHost: x\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_err() {
                seen.cut += 1;
            }
            held.push(s);
        }
        // Let the buffers fill, then see whether the proxy cut us (bounded wait).
        tokio::time::sleep(Duration::from_secs(3)).await;
        for mut s in held {
            // Reading now drains kernel buffers until the reset shows, bounded by time.
            let mut buf = vec![0u8; 1 << 20];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        seen.cut += 1;
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Err(_) => break,
                }
            }
        }
        seen
    };
    let (legit, seen) = under_attack(lab, 30, attack).await;
    report(lab, attacker, "slow read");
    lab.assert_legit(&legit, "during the slow read");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(lab, attacker, &[Reason::Metric(Metric::Memory)]);
}

async fn control_flood(kind: u8, attacker: IpAddr, lab: &Lab) -> (Outcome, Seen) {
    let to = lab.addr;
    let attack = raw_h2_attack(attacker, to, 2000, move |_| {
        let mut out = Vec::new();
        for _ in 0..50 {
            match kind {
                h2::PING => out.extend(frame(h2::PING, 0, 0, &[7; 8])),
                _ => out.extend(frame(h2::SETTINGS, 0, 0, &[])),
            }
        }
        out
    });
    under_attack(lab, 30, attack).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_blocked() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 9);
    let (legit, seen) = control_flood(h2::PING, attacker, &lab).await;
    report(&lab, attacker, "ping");
    lab.assert_legit(&legit, "during the PING flood");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(
        &lab,
        attacker,
        &[Reason::Guard(Guard::Ping), Reason::Metric(Metric::Cpu)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_blocked() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 10);
    let (legit, seen) = control_flood(h2::SETTINGS, attacker, &lab).await;
    report(&lab, attacker, "settings");
    lab.assert_legit(&legit, "during the SETTINGS flood");
    assert!(seen.cut > 0, "{seen:?}");
    assert_blocked_for(
        &lab,
        attacker,
        &[Reason::Guard(Guard::Settings), Reason::Metric(Metric::Cpu)],
    );
}

/// Slowloris connections from one address: each trickles a header byte at a time.
async fn slowloris(attacker: IpAddr, to: std::net::SocketAddr, conns: usize) -> Seen {
    let mut seen = Seen::default();
    let mut socks = Vec::new();
    for _ in 0..conns {
        match connect_from(attacker, to).await {
            Ok(mut s) => {
                if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                    seen.cut += 1;
                } else {
                    socks.push(s);
                }
            }
            Err(_) => seen.refused += 1,
        }
    }
    let deadline = attack_deadline();
    while !socks.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut alive = Vec::new();
        for mut s in socks {
            if s.write_all(b"X").await.is_err() {
                seen.cut += 1;
                continue;
            }
            let mut b = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => seen.cut += 1,
                _ => alive.push(s),
            }
        }
        socks = alive;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_by_the_header_deadline_and_blocked_from_one_address() {
    let _s = SERIAL.lock().await;
    // Fragmentation off, to show the other two defences on their own.
    let lab =
        trained("[limits.enabled]\nfragmentation = false\n[timeouts]\nheader_read = \"2s\"\n")
            .await;
    // One trickling connection: too little to block anyone; the header deadline cuts it.
    let lone = ip(9, 11);
    let (legit, seen) = under_attack(&lab, 30, slowloris(lone, lab.addr, 1)).await;
    lab.assert_legit(&legit, "during a lone slowloris");
    assert_eq!(seen.cut, 1, "the header deadline cut the trickle: {seen:?}");
    assert!(!lab.is_blocked(lone), "{:?}", lab.block_of(lone));
    // Many from one address: blocked for connections.
    let attacker = ip(9, 12);
    let (legit, seen) = under_attack(&lab, 30, slowloris(attacker, lab.addr, 80)).await;
    report(&lab, attacker, "slowloris");
    lab.assert_legit(&legit, "during slowloris");
    assert!(
        seen.cut + seen.refused >= 80,
        "every trickle was cut: {seen:?}"
    );
    // Memory charges `memory_per_connection` per connection, so for a flood of connections
    // it grows in step with their count and either may cross its threshold first.
    assert_blocked_for(&lab, attacker, CONNECTION_FLOOD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_blocked_for_fragmentation() {
    let _s = SERIAL.lock().await;
    let lab = trained("").await;
    let attacker = ip(9, 14);
    let (legit, seen) = under_attack(&lab, 30, slowloris(attacker, lab.addr, 1)).await;
    report(&lab, attacker, "trickled head");
    lab.assert_legit(&legit, "during a trickled head");
    assert_eq!(seen.cut, 1, "{seen:?}");
    assert_blocked_for(&lab, attacker, &[Reason::Metric(Metric::Fragmentation)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_records_would_block_and_enforces_nothing() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    lab.train(TRAIN_ROUNDS, Mode::Monitor).await;
    let attacker = ip(9, 13);
    let to = lab.addr;
    let (legit, (opened, alive)) = under_attack(&lab, 30, async move {
        let mut socks = Vec::new();
        for _ in 0..100 {
            if let Ok(mut s) = connect_from(attacker, to).await {
                if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .is_ok()
                {
                    socks.push(s);
                }
            }
        }
        let opened = socks.len();
        // Every connection is served: read one response head from each.
        let mut alive = 0;
        for mut s in socks {
            let mut b = [0u8; 16];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
                if b[..n].starts_with(b"HTTP/1.1 200") {
                    alive += 1;
                }
            }
        }
        (opened, alive)
    })
    .await;
    lab.assert_legit(&legit, "monitor mode");
    assert_eq!(opened, 100);
    assert_eq!(alive, 100, "monitor mode cut connections");
    assert!(
        lab.blocks().is_empty(),
        "monitor mode blocked: {:?}",
        lab.blocks()
    );
    let c = lab.server.limiter().counters();
    assert!(
        c.would_block[Metric::Connections.index()] > 0,
        "no would-block recorded: {c:?}"
    );
    assert_eq!(c.blocked, [0; Metric::COUNT]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_restarts_under_load() {
    let _s = SERIAL.lock().await;
    let lab = Lab::start("").await;
    lab.set_mode(Mode::Training);
    let first_epoch = lab.server.limiter().epoch();
    let to = lab.addr;
    let load = tokio::spawn(async move { population(to, 6).await });
    // Restart training twice while the population is busy.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lab.set_mode(Mode::Training);
    }
    load.await
        .expect("population")
        .assert_clean("training restarted under load");
    assert_eq!(lab.server.limiter().epoch(), first_epoch + 2);
    // The last epoch learns from what follows, and defence then works.
    lab.settle().await;
    lab.rounds(TRAIN_ROUNDS).await.assert_clean("last epoch");
    lab.set_mode(Mode::Defence);
    let model = lab.server.limiter().model().expect("model");
    assert_eq!(
        model.get(Metric::Connections).n,
        20,
        "one sample per population client"
    );
    lab.rounds(2).await.assert_clean("defence after restarts");
    assert!(lab.blocks().is_empty(), "{:?}", lab.blocks());
}
