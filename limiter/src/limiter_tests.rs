//! Behaviour of the limiter through its public API, with an injected clock.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;
use crate::connection::{Connection, Request};
use crate::guards::H2Frame;
use crate::verdict::Reason;
use zgate_training::Fragments;

const SEC: u64 = 1_000_000_000;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn t(secs: u64) -> Nanos {
    Nanos::from_secs(secs)
}

fn config() -> LimiterConfig {
    LimiterConfig {
        training_shards: 2,
        ..LimiterConfig::default()
    }
}

fn limiter(c: LimiterConfig) -> Limiter {
    Limiter::new(c, None, t(0)).unwrap()
}

fn open(l: &Limiter, i: u32, now: Nanos) -> Connection {
    let (c, v) = l.connection_opened(ip(i), now);
    assert_eq!(v, Verdict::Allow);
    c.unwrap()
}

/// Trains a population where client `i` reaches `maxima[i]` concurrent connections, then
/// switches to defence.
fn trained(maxima: &[u32]) -> Limiter {
    let l = limiter(config());
    l.set_mode(Mode::Training, t(1)).unwrap();
    for (i, &m) in maxima.iter().enumerate() {
        let conns: Vec<_> = (0..m).map(|_| open(&l, 1000 + i as u32, t(2))).collect();
        drop(conns);
    }
    l.set_mode(Mode::Defence, t(3)).unwrap();
    l
}

/// Opens connections for client `i` until it is blocked or has `upto`; returns the count at
/// which it was blocked and the verdict.
fn ramp(l: &Limiter, i: u32, upto: u64) -> (Vec<Connection>, Option<(u64, Verdict)>) {
    let mut conns = Vec::new();
    for n in 1..=upto {
        let (c, v) = l.connection_opened(ip(i), t(10));
        match c {
            Some(c) => conns.push(c),
            None => return (conns, Some((n, v))),
        }
    }
    (conns, None)
}

#[test]
fn handles_are_shareable_between_workers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Limiter>();
    send_sync::<Connection>();
    send_sync::<Request<std::sync::Arc<Connection>>>();
    send_sync::<Request<&Connection>>();
}

#[test]
fn starting_in_defence_without_a_model_is_refused() {
    let c = LimiterConfig {
        mode: Mode::Defence,
        ..config()
    };
    let e = Limiter::new(c.clone(), None, t(0)).err().unwrap();
    assert_eq!(
        e,
        Error::Mode(ModeError::NoModel {
            requested: Mode::Defence
        })
    );
    assert!(e.to_string().contains("no model"));
    let bad = LimiterConfig {
        ipv6_prefix: 129,
        ..config()
    };
    assert!(matches!(
        Limiter::new(bad, None, t(0)),
        Err(Error::Config(_))
    ));
    // With a model (e.g. loaded from disk) it starts in defence, numbering epochs after it.
    let model = trained(&[1, 2, 3]).model().unwrap();
    let l = Limiter::new(c, Some(Model::clone(&model)), t(0)).unwrap();
    assert_eq!(l.mode(), Mode::Defence);
    assert_eq!(l.epoch(), 1);
    l.set_mode(Mode::Training, t(1)).unwrap();
    assert_eq!(l.epoch(), 2);
}

#[test]
fn refused_transitions_leave_the_mode_unchanged() {
    let l = limiter(config());
    assert_eq!(l.mode(), Mode::Disabled);
    for m in [Mode::Defence, Mode::Monitor] {
        assert_eq!(
            l.set_mode(m, t(1)),
            Err(ModeError::NoModel { requested: m })
        );
        assert_eq!(l.mode(), Mode::Disabled);
    }
    assert_eq!(l.status(t(1)).model_epoch, None);
}

#[test]
fn training_ends_by_itself_on_the_next_event() {
    let c = LimiterConfig {
        training_period: Duration::from_secs(10),
        ..config()
    };
    let l = limiter(c);
    l.set_mode(Mode::Training, t(100)).unwrap();
    assert_eq!(l.epoch(), 1);
    assert_eq!(l.status(t(104)).training_left, Some(Duration::from_secs(6)));
    let a = open(&l, 1, t(101));
    let _r = a.request_started(false, Nanos(110 * SEC - 1));
    assert_eq!(l.mode(), Mode::Training);
    // The first event at the deadline ends training and scores with the new model.
    let _r2 = a.request_started(true, t(110));
    assert_eq!(l.mode(), Mode::Defence);
    assert_eq!(l.status(t(110)).model_epoch, Some(1));
    assert_eq!(l.status(t(110)).training_left, None);
    let model = l.model().unwrap();
    assert_eq!(model.get(Metric::Connections).n, 1);
    assert_eq!(model.get(Metric::RequestsNonidempotent).n, 1);
    assert_eq!(model.get(Metric::Requests).mean, 1.0);
}

#[test]
fn training_ends_on_tick_into_monitor_and_zero_period_never_ends() {
    let c = LimiterConfig {
        training_period: Duration::from_secs(5),
        after_training: Mode::Monitor,
        ..config()
    };
    let l = limiter(c);
    l.set_mode(Mode::Training, t(0)).unwrap();
    l.tick(t(4));
    assert_eq!(l.mode(), Mode::Training);
    l.tick(t(5));
    assert_eq!(l.mode(), Mode::Monitor);

    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    l.tick(Nanos(u64::MAX - 1));
    assert_eq!(l.mode(), Mode::Training);
    assert_eq!(l.status(t(1)).training_left, None);
    // On command: training -> defence finalizes, -> disabled keeps the model, -> defence again.
    l.set_mode(Mode::Defence, t(2)).unwrap();
    assert_eq!(l.status(t(2)).model_epoch, Some(1));
    l.set_mode(Mode::Disabled, t(3)).unwrap();
    l.set_mode(Mode::Monitor, t(4)).unwrap();
    l.set_mode(Mode::Defence, t(5)).unwrap();
    assert_eq!(l.epoch(), 1);
}

#[test]
fn training_restarts_under_load_without_losing_or_leaking_counts() {
    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    std::thread::scope(|s| {
        for w in 0..3u32 {
            let l = &l;
            s.spawn(move || {
                for i in 0..3000u32 {
                    let c = open(l, w * 10 + i % 10, Nanos(u64::from(i)));
                    let (r, _) = c.request_started(i % 2 == 0, Nanos(u64::from(i)));
                    c.memory_grew(100, Nanos(u64::from(i)));
                    drop(r);
                    c.close(Nanos(u64::from(i)));
                }
            });
        }
        for k in 0..20 {
            l.set_mode(Mode::Training, Nanos(k)).unwrap();
            std::thread::yield_now();
        }
    });
    assert_eq!(l.epoch(), 21);
    for i in 0..30 {
        let c = l.client(ip(i), t(1)).unwrap();
        assert_eq!(c.current[..4], [0, 0, 0, 0], "client {i}");
    }
    l.set_mode(Mode::Defence, t(1)).unwrap();
    assert!(l.model().unwrap().get(Metric::Connections).n <= 30);
    assert_eq!(l.counters().observations[Metric::Requests.index()], 9000);
}

#[test]
fn population_1_to_20_blocks_exactly_per_the_z_semantics() {
    let maxima: Vec<u32> = (1..=20).collect();
    let l = trained(&maxima);
    let m = l.model().unwrap();
    let c = m.get(Metric::Connections);
    let std = (33.25f64).sqrt(); // population std of 1..20: sqrt((20^2 - 1) / 12)
    assert_eq!(c.n, 20);
    assert_eq!(c.mean, 10.5);
    assert!((c.std - std).abs() < 1e-9 && (c.std - 5.766).abs() < 1e-3);
    let z = |x: f64| (x - 10.5) / std;
    assert!((z(23.0) - 2.168).abs() < 1e-3);
    assert!((z(30.0) - 3.382).abs() < 1e-3);
    assert!((z(40.0) - 5.116).abs() < 1e-3);

    // The decision table of the documented semantics (z > threshold, strictly).
    for (threshold, blocked) in [
        (1.0, [true, true, true]),
        (2.0, [true, true, true]),
        (5.0, [false, false, true]),
    ] {
        for (x, b) in [23, 30, 40].into_iter().zip(blocked) {
            assert_eq!(
                m.exceeds(Metric::Connections, x, threshold),
                b,
                "x {x} threshold {threshold}"
            );
        }
    }

    // For each threshold, a client ramps up towards 23, 30 and 40 connections; it is blocked
    // at the first count whose z exceeds the threshold and that is above the trained maximum
    // (the poisoning floor, 20 here): threshold 1: 21 (z alone: 17), 2: 23, 5: 40.
    let mut next = 0;
    for (threshold, first_block) in [(1.0, 21u64), (2.0, 23), (5.0, 40)] {
        l.set_threshold(Metric::Connections, threshold).unwrap();
        let mut blocked_at = Vec::new();
        for target in [23u64, 30, 40] {
            next += 1;
            let (_conns, outcome) = ramp(&l, next, target);
            if let Some((n, v)) = outcome {
                assert_eq!(n, first_block);
                let Verdict::Block {
                    reason,
                    value,
                    z: got,
                } = v
                else {
                    panic!("{v:?}")
                };
                assert_eq!(reason, Reason::Metric(Metric::Connections));
                assert_eq!(value, n);
                assert!((got - z(n as f64)).abs() < 1e-9 && got > threshold);
                assert!(l.is_blocked(ip(next), t(10)));
                blocked_at.push(target);
            }
        }
        let expect: &[u64] = if threshold < 5.0 {
            &[23, 30, 40]
        } else {
            &[40]
        };
        assert_eq!(blocked_at, expect, "threshold {threshold}");
    }
    let counters = l.counters();
    assert_eq!(counters.blocked[Metric::Connections.index()], 7);
}

#[test]
fn identical_population_still_blocks_an_outlier_through_the_std_floor() {
    let l = trained(&[2; 20]);
    let c = l.model().unwrap().get(Metric::Connections).clone();
    assert_eq!((c.n, c.mean, c.std), (20, 2.0, 0.0));
    // min_std 1, threshold 3: z(5) = 3 is not over, z(6) = 4 is.
    let (_conns, outcome) = ramp(&l, 1, 100);
    let (n, v) = outcome.unwrap();
    assert_eq!(n, 6);
    assert_eq!(
        v,
        Verdict::Block {
            reason: Reason::Metric(Metric::Connections),
            value: 6,
            z: 4.0
        }
    );
}

#[test]
fn a_client_below_the_mean_is_never_blocked() {
    let l = trained(&(1..=20).collect::<Vec<_>>());
    l.set_threshold(Metric::Connections, 0.0).unwrap();
    let (conns, outcome) = ramp(&l, 1, 20);
    assert_eq!(outcome, None);
    assert_eq!(conns.len(), 20);
    // 11 > mean 10.5 is over a threshold of 0, but only values above the trained maximum (20)
    // block: 21 does.
    let (c, v) = l.connection_opened(ip(1), t(10));
    assert!(c.is_none() && v.is_block());
}

#[test]
fn monitor_mode_counts_would_block_and_enforces_nothing() {
    let l = trained(&(1..=20).collect::<Vec<_>>());
    l.set_mode(Mode::Monitor, t(5)).unwrap();
    let (conns, outcome) = ramp(&l, 1, 40);
    assert_eq!(outcome, None);
    assert_eq!(conns.len(), 40);
    let c = l.counters();
    // z > 3 from 28 connections on (10.5 + 3 * 5.766 = 27.8): 28..=40.
    assert_eq!(c.would_block[Metric::Connections.index()], 13);
    assert_eq!(c.blocked[Metric::Connections.index()], 0);
    assert!(!l.is_blocked(ip(1), t(10)));
    let (_c, v) = l.connection_opened(ip(1), t(10));
    let Verdict::WouldBlock {
        reason, value: 41, ..
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(reason, Reason::Metric(Metric::Connections));
    // Disabling the metric's scoring stops it.
    l.set_enabled(Metric::Connections, false);
    assert!(!l.is_enabled(Metric::Connections));
    assert_eq!(l.connection_opened(ip(1), t(10)).1, Verdict::Allow);
}

#[test]
fn objects_from_an_older_epoch_never_underflow() {
    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let a: Vec<_> = (0..3).map(|_| open(&l, 1, t(1))).collect();
    let reqs: Vec<Request<&Connection>> = (0..2)
        .map(|_| a[0].request_started(false, t(1)).0)
        .collect();
    a[1].memory_grew(1000, t(1));
    // New epoch: live counts carry over, maxima start again.
    l.set_mode(Mode::Training, t(2)).unwrap();
    assert_eq!(l.epoch(), 2);
    let snap = l.client(ip(1), t(2)).unwrap();
    assert_eq!(snap.current[..4], [3, 2, 2, 1000]);
    assert_eq!(snap.max, [0; 6]);
    let d = open(&l, 1, t(3));
    assert_eq!(l.client(ip(1), t(3)).unwrap().max[0], 4);
    // Everything from epoch 1 goes away in epoch 2, and shrinking more than was added is
    // clamped.
    a[1].memory_shrank(5000);
    drop(reqs);
    drop(a);
    drop(d);
    let snap = l.client(ip(1), t(4)).unwrap();
    assert_eq!(snap.current[..4], [0, 0, 0, 0]);
    let p = l.training_preview().unwrap();
    assert_eq!(p.get(Metric::Connections).n, 1);
    assert_eq!(p.get(Metric::Connections).mean, 4.0);
    // A request counted in training and finished after a switch to disabled still decrements.
    let c = open(&l, 2, t(5));
    let (r, _) = c.request_started(true, t(5));
    l.set_mode(Mode::Disabled, t(6)).unwrap();
    let (r2, _) = c.request_started(true, t(6));
    assert!(r.is_counted() && !r2.is_counted());
    r.finish();
    r2.finish();
    assert_eq!(
        l.client(ip(2), t(7)).unwrap().current[Metric::Requests.index()],
        0
    );
}

#[test]
fn a_million_distinct_clients_keep_the_table_at_its_bound() {
    let max = 10_000;
    let l = limiter(LimiterConfig {
        max_clients: max,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let n = 1_000_000u32;
    for i in 0..n {
        let now = Nanos(u64::from(i));
        let (c, v) = l.connection_opened(ip(i), now);
        assert_eq!(v, Verdict::Allow);
        c.unwrap().close(now);
        assert!(l.status(now).clients <= max);
    }
    let c = l.counters();
    assert_eq!(c.clients, max);
    assert_eq!(c.evictions, u64::from(n) - max as u64);
    // Evicted clients left the training population: it holds only the tracked ones.
    let p = l.training_preview().unwrap();
    assert_eq!(p.get(Metric::Connections).n, max as u64);
}

#[test]
fn a_full_table_of_busy_clients_admits_newcomers_untracked() {
    let l = limiter(LimiterConfig {
        max_clients: 100,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let held: Vec<_> = (0..100).map(|i| open(&l, i, t(1))).collect();
    let newcomers: Vec<_> = (100..200).map(|i| open(&l, i, t(2))).collect();
    let c = l.counters();
    assert_eq!((c.clients, c.untracked), (100, 100));
    assert_eq!(c.guard_blocked[Guard::TableFull.index()], 0);
    // Untracked: no training samples, but the static guards still hold.
    let p = l.training_preview().unwrap();
    assert_eq!(p.get(Metric::Connections).n, 100);
    let v = (0..200)
        .map(|i| newcomers[0].h2_frame(H2Frame::Ping, Nanos(2 * SEC + i)))
        .find(|v| v.is_block());
    assert_eq!(v.map(|v| v.is_block()), Some(true));
    assert!(l.is_blocked(ip(100), t(3)));
    drop(held);
    assert!(l.connection_opened(ip(150), t(3)).0.is_some());
}

#[test]
fn a_table_full_of_blocked_clients_serves_a_newcomer() {
    // The case: 300 clients each blocked by a PING flood fill the table.
    let l = limiter(LimiterConfig {
        max_clients: 300,
        ..config()
    });
    for i in 0..300 {
        let c = open(&l, i, t(1));
        let blocked = (0..200).any(|k| c.h2_frame(H2Frame::Ping, Nanos(SEC + k)).is_block());
        assert!(blocked, "client {i}");
        c.close(t(1));
    }
    assert_eq!(l.counters().clients, 300);
    let newcomer = l.connection_opened(ip(1000), t(2));
    assert_eq!(newcomer.1, Verdict::Allow);
    assert!(newcomer.0.is_some());
    // The evicted blocked clients stay blocked: the block list holds them.
    assert!((0..300).all(|i| l.is_blocked(ip(i), t(2))));
    assert!(l.connection_opened(ip(0), t(2)).0.is_none());
}

#[test]
fn a_full_block_list_aggregates_instead_of_dropping_blocks() {
    let l = limiter(LimiterConfig {
        max_blocks: 4,
        ..config()
    });
    // Five clients in five /24s of 10.0.0.0/16: the fifth block finds the list full and
    // aggregates the four into the /16.
    for i in 0..5 {
        let c = open(&l, i * 256, t(1));
        assert!((0..200).any(|k| c.h2_frame(H2Frame::Ping, Nanos(SEC + k)).is_block()));
    }
    assert!((0..5).all(|i| l.is_blocked(ip(i * 256), t(2))));
    assert_eq!(l.counters().blocklist_full, 0);
    assert_eq!(l.counters().blocks, 1);
    assert!(l.is_blocked(ip(77), t(2)));
    assert!(!l.is_blocked("10.1.0.1".parse().unwrap(), t(2)));
}

#[test]
fn idle_clients_expire_on_tick() {
    let l = limiter(LimiterConfig {
        idle_expiry: Duration::from_secs(60),
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    open(&l, 1, t(0)).close(t(10));
    let _busy = open(&l, 2, t(0));
    l.tick(t(69));
    assert_eq!(l.counters().clients, 2);
    l.tick(t(70));
    assert!(l.client(ip(1), t(70)).is_none());
    assert!(l.client(ip(2), t(70)).is_some());
    assert_eq!(l.counters().expired, 1);
    // The client that left is still part of the training population.
    let p = l.training_preview().unwrap();
    assert_eq!(p.get(Metric::Connections).n, 2);
}

#[test]
fn blocks_expire_and_can_be_removed_by_hand() {
    let c = LimiterConfig {
        block_duration: Duration::from_secs(60),
        guards: GuardLimits {
            max_connections_per_client: 2,
            ..GuardLimits::default()
        },
        ..config()
    };
    let l = limiter(c);
    let a = open(&l, 1, t(0));
    let _b = open(&l, 1, t(0));
    let (c3, v) = l.connection_opened(ip(1), t(10));
    assert!(c3.is_none());
    assert_eq!(
        v,
        Verdict::Block {
            reason: Reason::Guard(Guard::Connections),
            value: 3,
            z: 0.0
        }
    );
    assert!(l.is_blocked(ip(1), t(69)));
    // Further events of the client are blocked at once, on every connection.
    assert_eq!(a.cpu_spent(1, t(11)), Verdict::guard(Guard::Blocked, 0));
    assert_eq!(
        l.connection_opened(ip(1), t(11)).1,
        Verdict::guard(Guard::Blocked, 0)
    );
    let list = l.blocks(t(11));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].until, t(70));
    assert_eq!(list[0].reason, Some(Reason::Guard(Guard::Connections)));
    // Expiry.
    assert!(!l.is_blocked(ip(1), t(70)));
    assert_eq!(a.cpu_spent(1, t(70)), Verdict::Allow);
    assert!(l.blocks(t(70)).is_empty());

    // Manual block of a prefix covers tracked clients at once; unblock lifts it.
    let p = IpPrefix::new(ip(0), 24).unwrap();
    l.block(p, Duration::from_secs(600), t(100)).unwrap();
    assert!(l.is_blocked(ip(200), t(100)));
    assert!(l.connection_opened(ip(7), t(100)).1.is_block());
    assert!(a.memory_grew(1, t(101)).is_block());
    assert!(l.unblock(p));
    assert!(!l.unblock(p));
    assert!(!l.is_blocked(ip(200), t(102)));
    assert_eq!(a.memory_grew(1, t(102)), Verdict::Allow);
    assert!(l.connection_opened(ip(7), t(102)).0.is_some());
}

#[test]
fn static_guards_act_in_every_mode() {
    let guards = GuardLimits {
        max_connections_per_client: 3,
        max_memory_per_client: 1000,
        ping_per_sec: 2,
        settings_per_sec: 2,
        rst_stream_per_sec: 2,
        empty_data_per_sec: 2,
        max_continuation_per_block: 2,
        ..GuardLimits::default()
    };
    let model = trained(&[1; 20]).model().unwrap();
    for mode in [Mode::Disabled, Mode::Training, Mode::Defence, Mode::Monitor] {
        let c = LimiterConfig {
            guards: guards.clone(),
            ..config()
        };
        let l = Limiter::new(c, Some(Model::clone(&model)), t(0)).unwrap();
        l.set_mode(mode, t(0)).unwrap();
        // Guard-only thresholds: keep the model from firing first.
        for m in Metric::ALL {
            l.set_enabled(m, false);
        }
        let mut client = 0;
        let fresh = |client: &mut u32| {
            *client += 1;
            open(&l, *client, t(1))
        };
        let expect = |v: Verdict, g: Guard, value: u64| {
            assert_eq!(
                v,
                Verdict::Block {
                    reason: Reason::Guard(g),
                    value,
                    z: 0.0
                },
                "{mode}"
            );
        };
        // Connections.
        let c = fresh(&mut client);
        let _more = [open(&l, client, t(1)), open(&l, client, t(1))];
        expect(
            l.connection_opened(ip(client), t(1)).1,
            Guard::Connections,
            4,
        );
        drop(c);
        // Memory, summed over the client's connections.
        let c = fresh(&mut client);
        let d = open(&l, client, t(1));
        assert_eq!(c.memory_grew(600, t(1)), Verdict::Allow);
        expect(d.memory_grew(401, t(1)), Guard::Memory, 1001);
        // Frame rates.
        for (frame, g) in [
            (H2Frame::Ping, Guard::Ping),
            (H2Frame::Settings, Guard::Settings),
            (H2Frame::RstStream, Guard::RstStream),
            (H2Frame::EmptyData, Guard::EmptyData),
        ] {
            let c = fresh(&mut client);
            assert_eq!(c.h2_frame(frame, t(1)), Verdict::Allow);
            assert_eq!(c.h2_frame(frame, t(1)), Verdict::Allow);
            expect(c.h2_frame(frame, t(1)), g, 3);
            assert!(l.is_blocked(ip(client), t(1)));
        }
        // CONTINUATION per header block.
        let c = fresh(&mut client);
        assert!(c
            .h2_frame(H2Frame::Headers { end_headers: false }, t(1))
            .is_allow());
        assert!(c
            .h2_frame(H2Frame::Continuation { end_headers: false }, t(1))
            .is_allow());
        assert!(c
            .h2_frame(H2Frame::Continuation { end_headers: false }, t(1))
            .is_allow());
        let v = c.h2_frame(H2Frame::Continuation { end_headers: false }, t(1));
        expect(v, Guard::Continuation, 3);
        assert_eq!(l.counters().guard_blocked[Guard::Continuation.index()], 1);
        // Resets the server sent (MadeYouReset) share the RST_STREAM cap with the client's own.
        let c = fresh(&mut client);
        assert!(c.h2_frame(H2Frame::RstStream, t(1)).is_allow());
        assert!(c.h2_frame(H2Frame::ServerRstStream, t(1)).is_allow());
        expect(
            c.h2_frame(H2Frame::ServerRstStream, t(1)),
            Guard::RstStream,
            3,
        );
        // The HTTP/2 stack's ENHANCE_YOUR_CALM blocks at once.
        let c = fresh(&mut client);
        expect(
            c.h2_frame(H2Frame::EnhanceYourCalm, t(1)),
            Guard::H2Abuse,
            1,
        );
        assert!(l.is_blocked(ip(client), t(1)));
    }
}

#[test]
fn hammering_one_client_from_several_threads_gives_exact_counts() {
    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let threads = 4u64;
    let rounds = 20_000u64;
    let conns: Vec<_> = (0..threads).map(|_| open(&l, 1, t(0))).collect();
    let kept: Vec<Vec<Request<&Connection>>> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..rounds {
                        let now = Nanos(i);
                        let (r, v) = c.request_started(i % 3 == 0, now);
                        assert!(v.is_allow());
                        c.memory_grew(10, now);
                        c.cpu_spent(1000, now);
                        c.memory_shrank(7);
                        if i % 1000 == 0 {
                            kept.push(r);
                        }
                    }
                    kept
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let snap = l.client(ip(1), t(0)).unwrap();
    let kept_n = kept.iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(kept_n, threads * 20);
    let nonidem = kept.iter().flatten().filter(|r| r.nonidempotent()).count() as u64;
    assert_eq!(snap.current[Metric::Connections.index()], threads);
    assert_eq!(snap.current[Metric::Requests.index()], kept_n);
    assert_eq!(snap.current[Metric::RequestsNonidempotent.index()], nonidem);
    assert_eq!(snap.current[Metric::Memory.index()], threads * rounds * 3);
    let obs = l.counters().observations;
    assert_eq!(obs[Metric::Requests.index()], threads * rounds);
    assert_eq!(obs[Metric::Memory.index()], threads * rounds);
    // One client, one sample per metric, whatever thread raised it.
    let p = l.training_preview().unwrap();
    assert_eq!(p.get(Metric::Requests).n, 1);
    assert_eq!(
        p.get(Metric::Requests).mean,
        snap.max[Metric::Requests.index()] as f64
    );
    drop(kept);
    drop(conns);
    let snap = l.client(ip(1), t(0)).unwrap();
    assert_eq!(snap.current[..4], [0, 0, 0, 0]);
}

#[test]
fn fragmentation_is_scored_from_the_second_chunk() {
    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let c = open(&l, 1, t(0));
    let mut msg = Fragments::default();
    assert!(c.chunk(&mut msg, 1, t(0)).is_allow());
    assert_eq!(l.counters().observations[Metric::Fragmentation.index()], 0);
    c.chunk(&mut msg, 1, t(0));
    // 1024 * 2^2 / 2 bytes.
    assert_eq!(
        l.client(ip(1), t(0)).unwrap().current[Metric::Fragmentation.index()],
        2048
    );
    assert_eq!(
        l.client(ip(1), t(0)).unwrap().max[Metric::Fragmentation.index()],
        2048
    );
}

#[test]
fn snapshots_for_the_admin_api() {
    let l = trained(&(1..=20).collect::<Vec<_>>());
    l.set_threshold(Metric::Connections, 100.0).unwrap();
    assert_eq!(l.threshold(Metric::Connections), 100.0);
    assert!(l.set_threshold(Metric::Cpu, f64::NAN).is_err());
    let _a: Vec<_> = (0..5).map(|_| open(&l, 1, t(5))).collect();
    let _b: Vec<_> = (0..30).map(|_| open(&l, 2, t(5))).collect();
    let _c = open(&l, 3, t(5));
    let top = l.top(Metric::Connections, 2, t(6));
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].key.addr(), ip(2));
    assert_eq!(top[0].current[0], 30);
    assert!((top[0].z[0] - (30.0 - 10.5) / 33.25f64.sqrt()).abs() < 1e-9);
    assert_eq!(top[1].key.addr(), ip(1));
    let one = l.client(ip(3), t(6)).unwrap();
    assert_eq!(one.current[0], 1);
    assert_eq!(one.z[0], 0.0);
    assert_eq!(one.blocked_until, None);
    let st = l.status(t(6));
    assert_eq!(
        (st.mode, st.epoch, st.model_epoch),
        (Mode::Defence, 1, Some(1))
    );
}

#[test]
fn reconfigure_applies_run_time_settings() {
    let l = trained(&(1..=20).collect::<Vec<_>>());
    let mut c = config();
    c.thresholds[Metric::Connections.index()] = 1.0;
    c.min_std[Metric::Connections.index()] = 100.0;
    c.guards.ping_per_sec = 7;
    l.reconfigure(&c).unwrap();
    assert_eq!(l.threshold(Metric::Connections), 1.0);
    assert_eq!(l.guards().ping_per_sec, 7);
    assert_eq!(l.model().unwrap().std_effective(Metric::Connections), 100.0);
    c.ipv6_prefix = 0;
    assert!(l.reconfigure(&c).is_err());
    assert_eq!(l.guards().ping_per_sec, 7);
}

#[test]
fn concurrent_floods_keep_the_bound_and_never_evict_busy_clients() {
    let max = 1000;
    let l = limiter(LimiterConfig {
        max_clients: max,
        ..config()
    });
    let kept: Vec<Connection> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                let l = &l;
                s.spawn(move || {
                    let keep = open(l, 1_000_000 + w, t(0));
                    for i in 0..100_000u32 {
                        let now = Nanos(u64::from(i));
                        if let (Some(c), _) = l.connection_opened(ip(w * 100_000 + i), now) {
                            c.close(now);
                        }
                        assert!(l.status(now).clients <= max);
                    }
                    keep
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(l.counters().clients, max);
    for w in 0..2 {
        // Busy during the whole flood: never evicted.
        let c = l.client(ip(1_000_000 + w), t(1)).unwrap();
        assert_eq!(c.current[Metric::Connections.index()], 1);
    }
    drop(kept);
}

#[test]
fn ipv6_clients_are_aggregated_to_the_configured_prefix() {
    let l = limiter(LimiterConfig {
        ipv6_prefix: 48,
        ..config()
    });
    let a: IpAddr = "2001:db8:1:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:bbbb::2".parse().unwrap();
    let other: IpAddr = "2001:db8:2::1".parse().unwrap();
    let _c = [
        l.connection_opened(a, t(0)).0.unwrap(),
        l.connection_opened(b, t(0)).0.unwrap(),
        l.connection_opened(other, t(0)).0.unwrap(),
    ];
    let snap = l.client(a, t(0)).unwrap();
    assert_eq!(snap.current[Metric::Connections.index()], 2);
    assert_eq!(snap.prefix.to_string(), "2001:db8:1::/48");
    assert_eq!(l.counters().clients, 2);
}

#[test]
fn a_request_owning_its_connection_outlives_the_starter_and_counts_until_dropped() {
    let l = limiter(LimiterConfig {
        training_period: Duration::ZERO,
        ..config()
    });
    l.set_mode(Mode::Training, t(0)).unwrap();
    let c = std::sync::Arc::new(open(&l, 1, t(1)));
    let (r, v) = Request::start(c.clone(), false, t(1));
    assert!(v.is_allow() && r.is_counted() && r.nonidempotent());
    drop(c);
    let current = |now| l.client(ip(1), now).unwrap().current;
    // The request keeps its connection open, and both stay counted.
    assert_eq!(current(t(2))[..3], [1, 1, 1]);
    drop(r);
    assert_eq!(current(t(3))[..3], [0, 0, 0]);
}

#[test]
fn a_thin_model_needs_force_and_a_refusal_keeps_training() {
    // Three clients: every metric they touched has n = 3 < min_clients (10).
    let l = limiter(config());
    l.set_mode(Mode::Training, t(1)).unwrap();
    for i in 0..3 {
        drop(open(&l, i, t(2)));
    }
    let e = l.set_mode_checked(Mode::Defence, t(3), false).unwrap_err();
    match &e {
        ModeError::ThinModel {
            thin, min_clients, ..
        } => {
            assert_eq!(*min_clients, 10);
            assert!(thin.contains(&(Metric::Connections, 3)), "{thin:?}");
            assert!(thin.contains(&(Metric::Fragmentation, 0)), "{thin:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(l.mode(), Mode::Training, "a refusal changes nothing");
    assert!(l.model().is_none());
    // Disabled metrics are not named; force accepts the thin model.
    for m in Metric::ALL {
        l.set_enabled(m, m == Metric::Connections);
    }
    match l.set_mode_checked(Mode::Monitor, t(3), false) {
        Err(ModeError::ThinModel { thin, .. }) => assert_eq!(thin, vec![(Metric::Connections, 3)]),
        other => panic!("{other:?}"),
    }
    l.set_mode_checked(Mode::Defence, t(3), true).unwrap();
    assert_eq!(l.mode(), Mode::Defence);
    assert_eq!(l.model().unwrap().get(Metric::Connections).n, 3);
}

#[test]
fn model_epochs_above_the_bound_are_refused() {
    let l = limiter(config());
    let mut model = trained(&[1; 20]).model().unwrap().as_ref().clone();
    model.epoch = u64::MAX;
    assert_eq!(
        l.import_model(model.clone()),
        Err(ModeError::EpochOutOfRange { epoch: u64::MAX })
    );
    assert!(l.model().is_none());
    model.epoch = MAX_EPOCH;
    for m in &mut model.metrics {
        m.n = 20;
    }
    l.import_model(model).unwrap();
    assert_eq!(l.epoch(), MAX_EPOCH);
    assert_eq!(
        l.set_mode(Mode::Training, t(1)),
        Err(ModeError::EpochsExhausted)
    );
    assert_eq!(l.mode(), Mode::Disabled);
    // A full model is accepted without force.
    l.set_mode_checked(Mode::Defence, t(1), false).unwrap();
}

#[test]
fn glitches_block_per_client_across_reconnections() {
    use crate::glitches::Glitch;
    let l = limiter(config());
    // A MadeYouReset attacker: each connection ends in a protocol error (weight 10) after one
    // abandoned request; it reconnects. The 10th connection's error reaches 100 + 9 > 100.
    let mut blocked_at = None;
    for k in 0..20u64 {
        let c = open(&l, 1, Nanos(SEC + k));
        let a = c.glitch(Glitch::AbandonedRequest, Nanos(SEC + k));
        let e = c.glitch(Glitch::ConnectionError, Nanos(SEC + k));
        if a.is_block() || e.is_block() {
            blocked_at = Some(k);
            break;
        }
    }
    assert_eq!(blocked_at, Some(9));
    assert!(l.is_blocked(ip(1), t(2)));
    assert_eq!(l.counters().guard_blocked[Guard::Glitches.index()], 1);
    // One oversized header block, or a few cancelled requests, cost nothing.
    let c = open(&l, 2, t(1));
    assert!(c.glitch(Glitch::OversizedHeaders, t(1)).is_allow());
    assert!((0..50).all(|_| c.glitch(Glitch::AbandonedRequest, t(1)).is_allow()));
    // A new window starts over.
    let c = open(&l, 3, t(1));
    assert!((0..10).all(|_| c.glitch(Glitch::OversizedHeaders, t(1)).is_allow()));
    assert!(c.glitch(Glitch::OversizedHeaders, t(11)).is_allow());
    assert!(c.glitch(Glitch::OversizedHeaders, t(11)).is_allow());
}
