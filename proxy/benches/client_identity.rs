//! What knowing the real client costs, per request and per connection, in nanoseconds: the
//! pieces issue 13 added to the request path, each against what the same request costs
//! without it. Divide by zgate's CPU per request (30-38 µs in `bench/results/latest.md`) for
//! the share; the run prints that share for the sum of the per-request pieces.
//!
//! - `proxy_header/*`: parsing a PROXY header (v1 TCP4, v2 TCP6 with a TLV), once per
//!   connection of a `proxy_protocol` listener;
//! - `forwarding_headers/*`: the outgoing `X-Forwarded-*` rewrite of every request, from an
//!   untrusted peer (its own forwarding headers dropped) and from a trusted one (the chain
//!   extended), on a typical browser request's 9 headers;
//! - `attribution/*`: a request from a trusted proxy: finding the client in its
//!   `X-Forwarded-For` (`client, cdn-edge`) (parsed, and through a connection's cache of the
//!   values it saw, `http/recent.rs`), then the limiter's handle on that client, the
//!   request counted and its per-request memory charged, in defence against a trained model;
//!   `own_request` is the same count and charge on the connection's own client, the baseline.
//!
//! Run: `cargo bench -p zgate-proxy --bench client_identity` (about 30 s).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use zgate_config::Config;
use zgate_limiter::{Limiter, LimiterConfig, Mode, Nanos, Request};
use zgate_proxy::http::headers::{forwarded_for, set_forwarded, Hop};
use zgate_proxy::http::identity::Identity;
use zgate_proxy::http::recent::Recent;
use zgate_proxy::listen::proxy_header;

fn identity() -> Identity {
    let c = Config::parse(
        "[[listener]]\naddr = \"127.0.0.1:1\"\n[[backend]]\naddr = \"a:1\"\n[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8:cd::/48\"]\nheader = \"x-forwarded-for\"\n",
        std::path::Path::new("/"),
    )
    .expect("valid config");
    Identity::new(&c.client_ip)
}

/// A browser request's headers, with the CDN's forwarding headers.
fn request_headers(with_forwarding: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("cache-control", "no-cache"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    if with_forwarding {
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.1.2.3"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    }
    h
}

/// A limiter trained on 100 clients (1..=3 requests in flight each), in defence.
fn limiter() -> Limiter {
    let c = LimiterConfig {
        training_period: Duration::ZERO,
        ..LimiterConfig::default()
    };
    let l = Limiter::new(c, None, Nanos(0)).expect("valid config");
    l.set_mode(Mode::Training, Nanos(0)).expect("training");
    for i in 0..100u32 {
        let ip = IpAddr::from([198, 51, (i / 250) as u8, (i % 250) as u8]);
        let (conn, _) = l.connection_opened(ip, Nanos(1));
        let conn = conn.expect("admitted");
        let held: Vec<_> = (0..1 + i % 3)
            .map(|_| conn.request_started(true, Nanos(1)).0)
            .collect();
        conn.memory_grew(64 << 10, Nanos(1));
        drop(held);
    }
    l.set_mode(Mode::Defence, Nanos(2)).expect("trained");
    l
}

fn bench(c: &mut Criterion) {
    let v1 = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n".to_vec();
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::9]:4711".parse::<SocketAddr>().expect("addr"),
            "[2001:db8::1]:443".parse::<SocketAddr>().expect("addr"),
        ),
    )
    .write_tlv(ppp::v2::Type::UniqueId, &[7u8; 32])
    .and_then(|b| b.build())
    .expect("a v2 header");
    let mut g = c.benchmark_group("proxy_header");
    g.bench_function("v1_tcp4", |b| {
        b.iter(|| proxy_header::parse(black_box(&v1)))
    });
    g.bench_function("v2_tcp6_tlv", |b| {
        b.iter(|| proxy_header::parse(black_box(&v2)))
    });
    g.finish();

    let peer_ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let peer = forwarded_for(peer_ip);
    let plain = request_headers(false);
    let forwarded = request_headers(true);
    let mut g = c.benchmark_group("forwarding_headers");
    // What zgate did before: X-Forwarded-For appended to, X-Forwarded-Proto set, whoever the
    // peer.
    g.bench_function("before_append_only", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |h| before(h, &peer, true),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("untrusted_peer", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |h| {
                let hop = Hop {
                    peer: &peer,
                    peer_ip,
                    client: &peer,
                    chain_set: false,
                    trusted: false,
                    tls: true,
                };
                set_forwarded(h, &hop)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let client: IpAddr = "203.0.113.9".parse().expect("ip");
    let client_value = forwarded_for(client);
    g.bench_function("trusted_peer", |b| {
        b.iter_batched_ref(
            || forwarded.clone(),
            |h| {
                let hop = Hop {
                    peer: &peer,
                    peer_ip,
                    client: &client_value,
                    chain_set: false,
                    trusted: true,
                    tls: true,
                };
                set_forwarded(h, &hop)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    let id = identity();
    let l = limiter();
    let (cdn, _) = l.connection_opened(peer_ip, Nanos(3));
    let cdn = Arc::new(cdn.expect("admitted"));
    let mut g = c.benchmark_group("attribution");
    g.bench_function("find_client_in_header", |b| {
        b.iter(|| id.forwarded_client(black_box(&forwarded)))
    });
    // The same through a connection's cache, as every request after a client's first does.
    let recent = Recent::default();
    let peer_value = HeaderValue::from_static("10.1.2.3");
    g.bench_function("find_client_in_header_seen_before", |b| {
        b.iter(|| {
            recent
                .client(&id, black_box(&mut forwarded.clone()), peer_ip, &peer_value)
                .named
        })
    });
    // The limiter's part of a request of the connection's own client: counted, per-request
    // memory charged and released.
    g.bench_function("own_request", |b| {
        b.iter(|| {
            let (r, v) = Request::start(cdn.clone(), true, Nanos(4));
            let m = cdn.memory_grew(4096, Nanos(4));
            cdn.memory_shrank(4096);
            drop(r);
            (v, m)
        })
    });
    // The same for a forwarded client: its handle first.
    g.bench_function("forwarded_request", |b| {
        b.iter(|| {
            let (h, v) = l.forwarded(black_box(client), Nanos(4));
            let h = Arc::new(h.expect("not blocked"));
            let m = h.memory_grew(4096, Nanos(4));
            let (r, rv) = Request::start(h, true, Nanos(4));
            drop(r);
            (v, m, rv)
        })
    });
    // The same with the handle a connection kept from the client's earlier request.
    let (kept, _) = l.forwarded(client, Nanos(4));
    let kept = Arc::new(kept.expect("not blocked"));
    g.bench_function("forwarded_request_kept_handle", |b| {
        b.iter(|| {
            let v = l.forwarded_again(black_box(client), &kept, Nanos(4));
            let m = kept.memory_grew(4096, Nanos(4));
            let (r, rv) = Request::start(kept.clone(), true, Nanos(4));
            kept.memory_shrank(4096);
            drop(r);
            (v, m, rv)
        })
    });
    g.finish();
}

/// The forwarding headers as zgate set them before issue 13 (for the comparison).
fn before(h: &mut HeaderMap, peer: &HeaderValue, tls: bool) {
    let xff = HeaderName::from_static("x-forwarded-for");
    if let Some(old) = h.get(&xff) {
        let mut joined = old.as_bytes().to_vec();
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(peer.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            h.insert(xff, v);
        }
    } else {
        h.insert(xff, peer.clone());
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
