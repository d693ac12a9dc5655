//! Client identity through the public API, with stepped time: requests charged to a forwarded
//! client, exempt prefixes, manual blocks of exempt space.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::connection::{Connection, Request};
use crate::guards::H2Frame;
use crate::identified::Identified;
use crate::verdict::Reason;
use zgate_training::Fragments;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn t(secs: u64) -> Nanos {
    Nanos::from_secs(secs)
}

fn limiter() -> Limiter {
    let c = LimiterConfig {
        training_shards: 2,
        ..LimiterConfig::default()
    };
    Limiter::new(c, None, t(0)).unwrap()
}

fn open(l: &Limiter, i: u32, now: Nanos) -> Connection {
    let (c, v) = l.connection_opened(ip(i), now);
    assert_eq!(v, Verdict::Allow);
    c.unwrap()
}

fn forwarded(l: &Limiter, i: u32, now: Nanos) -> ClientHandle {
    let (h, v) = l.forwarded(ip(i), now);
    assert_eq!(v, Verdict::Allow);
    h.unwrap()
}

fn current(l: &Limiter, i: u32, m: Metric) -> u64 {
    l.client(ip(i), t(100)).map_or(0, |c| c.current[m.index()])
}

/// A CDN (client 1) carries one request of each of 20 forwarded clients (100..120) during
/// training, then defence.
fn trained_behind_a_cdn(l: &Limiter) -> Connection {
    l.set_mode(Mode::Training, t(1)).unwrap();
    let cdn = open(l, 1, t(1));
    for i in 100..120 {
        let h = forwarded(l, i, t(2));
        let (r, v) = Request::start(h, false, t(2));
        assert_eq!(v, Verdict::Allow);
        drop(r);
    }
    l.set_mode(Mode::Defence, t(3)).unwrap();
    cdn
}

#[test]
fn forwarded_handles_are_shareable_between_workers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ClientHandle>();
    send_sync::<Request<ClientHandle>>();
    send_sync::<Request<std::sync::Arc<ClientHandle>>>();
}

#[test]
fn a_forwarded_request_is_charged_to_its_client_and_the_connection_to_its_owner() {
    let l = limiter();
    l.set_mode(Mode::Training, t(1)).unwrap();
    let cdn = open(&l, 1, t(1));
    let h = forwarded(&l, 2, t(2));
    assert_eq!(h.client(), ClientKey::new(ip(2), 64));
    h.identified_by(Identified::Header);
    cdn.owner().identified_by(Identified::ProxyProtocol);
    let (r, v) = Request::start(h, false, t(2));
    assert!(v.is_allow());
    assert!(r.nonidempotent());
    let h = r.owner();
    assert!(h.memory_grew(4096, t(2)).is_allow());
    let mut f = Fragments::default();
    assert!(h.chunk(&mut f, 10, t(2)).is_allow());
    assert!(h.chunk(&mut f, 10, t(2)).is_allow());
    assert!(h.cpu_spent(1_000_000, t(2)).is_allow());

    for m in [Metric::Requests, Metric::RequestsNonidempotent] {
        assert_eq!(current(&l, 2, m), 1, "{m}");
        assert_eq!(current(&l, 1, m), 0, "{m}");
    }
    assert_eq!(current(&l, 2, Metric::Memory), 4096);
    assert_eq!(current(&l, 2, Metric::Connections), 0);
    assert_eq!(current(&l, 1, Metric::Connections), 1);
    assert!(current(&l, 2, Metric::Fragmentation) > 0);
    assert_eq!(current(&l, 1, Metric::Fragmentation), 0);
    assert!(l.client(ip(2), t(2)).unwrap().max[Metric::Requests.index()] == 1);
    assert_eq!(
        l.client(ip(2), t(2)).unwrap().identified,
        Identified::Header
    );
    assert_eq!(
        l.client(ip(1), t(2)).unwrap().identified,
        Identified::ProxyProtocol
    );

    // The request ends, then its handle goes: nothing stays counted.
    drop(r);
    assert_eq!(current(&l, 2, Metric::Requests), 0);
    assert_eq!(current(&l, 2, Metric::Memory), 0);
    // The client the handle held may now expire like any idle one.
    drop(cdn);
    l.tick(t(2_000));
    assert!(l.client(ip(2), t(2_000)).is_none());
}

#[test]
fn a_blocked_forwarded_client_loses_its_requests_and_the_shared_connection_stays() {
    let l = limiter();
    let cdn = trained_behind_a_cdn(&l);
    assert_eq!(l.model().unwrap().get(Metric::Requests).n, 20);
    // Mean 1, std floored to 1, threshold 3: the 5th concurrent request of one client blocks.
    let mut held = Vec::new();
    let mut blocked_at = None;
    for n in 1..=10 {
        let h = forwarded(&l, 105, t(10));
        let (r, v) = Request::start(h, true, t(10));
        if v.is_block() {
            assert_eq!(v.reason(), Some(Reason::Metric(Metric::Requests)));
            blocked_at = Some(n);
            break;
        }
        held.push(r);
    }
    assert_eq!(blocked_at, Some(5));
    // Its next request is refused before it is counted ...
    let (h, v) = l.forwarded(ip(105), t(11));
    assert!(h.is_none());
    assert_eq!(v.reason(), Some(Reason::Guard(Guard::Blocked)));
    assert_eq!(l.blocks(t(11))[0].prefix, IpPrefix::host(ip(105)));
    // ... and the others' requests on the same connection go on; the connection is not cut.
    for i in (100..120).filter(|&i| i != 105) {
        let (r, v) = Request::start(forwarded(&l, i, t(11)), true, t(11));
        assert!(v.is_allow(), "client {i}");
        drop(r);
    }
    assert!(!l.is_blocked(ip(1), t(11)));
    assert!(cdn.h2_frame(H2Frame::Ping, t(11)).is_allow());
    assert!(cdn.memory_grew(1, t(11)).is_allow());
    drop(held);
}

#[test]
fn a_kept_forwarded_handle_gets_the_verdicts_a_new_one_would() {
    let l = limiter();
    let cdn = trained_behind_a_cdn(&l);
    let kept = Arc::new(forwarded(&l, 105, t(10)));
    assert_eq!(
        l.forwarded_again(ip(105), &kept, t(10)),
        Some(Verdict::Allow)
    );
    // Blocked by its metrics through the kept handle: the next request is refused.
    let mut held = Vec::new();
    for _ in 0..5 {
        assert_eq!(
            l.forwarded_again(ip(105), &kept, t(10)),
            Some(Verdict::Allow)
        );
        held.push(Request::start(kept.clone(), true, t(10)));
    }
    assert!(held.last().is_some_and(|(_, v)| v.is_block()));
    let v = l.forwarded_again(ip(105), &kept, t(11));
    assert_eq!(
        v.and_then(|v| v.reason()),
        Some(Reason::Guard(Guard::Blocked))
    );
    assert!(l.forwarded(ip(105), t(11)).0.is_none());
    // A manual block of another kept client, on the block list only, is seen too.
    let other = forwarded(&l, 106, t(11));
    l.block(IpPrefix::host(ip(106)), Duration::from_secs(60), t(11))
        .unwrap();
    let v = l.forwarded_again(ip(106), &other, t(12));
    assert_eq!(
        v.and_then(|v| v.reason()),
        Some(Reason::Guard(Guard::Blocked))
    );
    // Exempt now (a reload): the kept handle no longer fits, a new one is exempt.
    l.set_exempt(vec![IpPrefix::host(ip(106))]);
    assert_eq!(l.forwarded_again(ip(106), &other, t(13)), None);
    assert!(forwarded(&l, 106, t(13)).is_exempt());
    // A handle of another limiter never fits.
    assert_eq!(limiter().forwarded_again(ip(106), &other, t(13)), None);
    drop((held, cdn));
}

#[test]
fn an_exempt_client_is_measured_but_never_blocked_nor_sampled() {
    let l = limiter();
    l.set_exempt(vec![IpPrefix::host(ip(50))]);
    assert!(l.is_exempt(ip(50)) && !l.is_exempt(ip(51)));
    l.set_mode(Mode::Training, t(1)).unwrap();
    // 20 ordinary clients with one connection each, the exempt one with 40.
    let mut conns: Vec<_> = (0..20).map(|i| open(&l, i, t(2))).collect();
    let exempt: Vec<_> = (0..40).map(|_| open(&l, 50, t(2))).collect();
    drop(exempt);
    drop(conns.drain(..));
    l.set_mode(Mode::Defence, t(3)).unwrap();
    let model = l.model().unwrap();
    let c = model.get(Metric::Connections);
    assert_eq!((c.n, c.mean), (20, 1.0), "the exempt client is no sample");

    // In defence it floods far past the model and the connection guard: never blocked.
    let mut cfg = LimiterConfig {
        training_shards: 2,
        ..LimiterConfig::default()
    };
    cfg.guards.max_connections_per_client = 30;
    l.reconfigure(&cfg).unwrap();
    let flood: Vec<_> = (0..100).map(|_| open(&l, 50, t(10))).collect();
    assert!(flood[99].h2_frame(H2Frame::Ping, t(10)).is_allow());
    for _ in 0..500 {
        assert!(flood[0].h2_frame(H2Frame::Ping, t(10)).is_allow());
    }
    let snap = l.client(ip(50), t(10)).unwrap();
    assert!(snap.exempt && snap.blocked_until.is_none());
    assert_eq!(snap.current[Metric::Connections.index()], 100);
    assert!(
        snap.z[Metric::Connections.index()] > 3.0,
        "measured and scored for the API"
    );
    assert!(!l.is_blocked(ip(50), t(10)));
    // An ordinary client doing the same is blocked.
    let (_, v) = ramp(&l, 7, 10);
    assert_eq!(v.reason(), Some(Reason::Metric(Metric::Connections)));
    assert!(l.blocks(t(10)).iter().all(|b| !b.prefix.contains(ip(50))));
}

fn ramp(l: &Limiter, i: u32, upto: u32) -> (Vec<Connection>, Verdict) {
    let mut conns = Vec::new();
    for _ in 0..upto {
        match l.connection_opened(ip(i), t(10)) {
            (Some(c), _) => conns.push(c),
            (None, v) => return (conns, v),
        }
    }
    (conns, Verdict::Allow)
}

#[test]
fn an_exempt_forwarded_client_is_no_sample_and_never_blocked() {
    let l = limiter();
    l.set_exempt(vec![IpPrefix::new(ip(200), 29).unwrap()]);
    let _cdn = trained_behind_a_cdn(&l);
    let mut held = Vec::new();
    for _ in 0..50 {
        let (r, v) = Request::start(forwarded(&l, 201, t(10)), false, t(10));
        assert!(v.is_allow());
        held.push(r);
    }
    assert_eq!(current(&l, 201, Metric::Requests), 50);
    assert!(!l.is_blocked(ip(201), t(10)));
}

#[test]
fn a_manual_block_of_only_exempt_space_is_refused() {
    let l = limiter();
    let office = IpPrefix::new(ip(64), 26).unwrap();
    l.set_exempt(vec![office]);
    let now = t(1);
    let e = l
        .block(IpPrefix::host(ip(70)), Duration::from_secs(60), now)
        .unwrap_err();
    assert_eq!(
        e,
        BlockError::Exempt {
            prefix: IpPrefix::host(ip(70)),
            exempt: office
        }
    );
    assert!(e.to_string().contains("exempt"), "{e}");
    assert!(l.block(office, Duration::from_secs(60), now).is_err());
    assert!(l.blocks(now).is_empty());

    // A wider block is taken, and applies to everyone in it but the exempt clients.
    let _inside = open(&l, 70, now);
    let wide = IpPrefix::new(ip(0), 24).unwrap();
    l.block(wide, Duration::from_secs(60), now).unwrap();
    assert!(l.is_blocked(ip(3), now));
    assert!(!l.is_blocked(ip(70), now));
    assert!(l.client(ip(70), now).unwrap().blocked_until.is_none());
    assert!(l.connection_opened(ip(70), now).0.is_some());
    assert!(l.forwarded(ip(70), now).0.is_some());
    assert!(l.forwarded(ip(3), now).0.is_none());

    // The exempt list is replaced on reload: the wide block now covers 10.0.0.70 too.
    l.set_exempt(Vec::new());
    assert!(l.is_blocked(ip(70), now));
    assert!(l.connection_opened(ip(70), now).0.is_none());
    assert!(l.exempt().is_empty());
}
