//! The clients a trusted proxy's connection named lately, by the bytes of the forwarding header
//! that named them. One connection from an L7 load balancer or a CDN edge carries the requests
//! of the same few clients, so most of its requests find their client here with a compare of
//! bytes, instead of parsing the header, finding the client in the limiter's table, formatting
//! its address and joining the `X-Forwarded-For` chain again (issue 13's cost target: ≤ 1 %
//! per request).
//!
//! Per connection, up to [`SLOTS`] slots (none allocated until a value is kept), replaced
//! round robin. Only a header of one line of at most [`MAX_KEPT`] bytes is kept (anything else
//! is parsed every time), so a connection holds at most `SLOTS × (2 × MAX_KEPT + 64)` bytes
//! here (the value, the chain made from it, the address). A slot holds its client as the
//! connection charges it ([`Forwarded`]: the limiter's handle, with the client's memory and
//! CPU batched) once a request of that client was counted: like the connection's own client,
//! a client held so is not evicted from the table while the connection lives, and every
//! request still gets the limiter's verdict ([`Limiter::forwarded_again`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};
use zgate_limiter::Limiter;

use super::headers::{self, forwarded_for};
use super::identity::Identity;
use crate::account::forwarded::Forwarded;
use crate::account::meter::{InFlightRequest, Meter};

/// Slots per connection: the distinct forwarding header values a connection remembers.
pub const SLOTS: usize = 8;

/// The longest header value kept, in bytes (a chain of a few addresses is far shorter).
pub const MAX_KEPT: usize = 256;

/// One connection's recent clients. `Send + Sync`: HTTP/2 serves a connection's requests on
/// several tasks.
#[derive(Default)]
pub struct Recent {
    slots: Mutex<Slots>,
}

/// Empty (no allocation) until a value is kept: most connections never keep one.
#[derive(Default)]
struct Slots {
    slot: Vec<Slot>,
    /// The slot the next new value replaces once all [`SLOTS`] are used.
    next: usize,
}

struct Slot {
    /// The header value, copied (not a slice of the request's buffer, which it would pin).
    raw: Bytes,
    /// Whom it names; `None`: nobody usable, or the peer itself.
    named: Option<Arc<Named>>,
}

/// What [`Recent::client`] found.
#[derive(Default)]
pub struct Seen {
    /// The client the header names, if not the peer.
    pub named: Option<Arc<Named>>,
    /// Whether `X-Forwarded-For` was already replaced by the chain zgate sends.
    pub chain_set: bool,
}

/// A client a trusted proxy's forwarding header named, other than the proxy itself.
#[derive(Clone)]
pub struct Named {
    /// Its address.
    pub ip: IpAddr,
    /// The same as a header value (zgate's `X-Real-IP`).
    pub value: HeaderValue,
    /// The `X-Forwarded-For` zgate sends for the value that named it, when that header is
    /// `X-Forwarded-For` itself: its chain with the peer appended, made once per value.
    pub chain: Option<HeaderValue>,
    /// The client as this connection charges it, once one of its requests was counted here.
    pub forwarded: Option<Arc<Forwarded>>,
}

impl Recent {
    /// The client of a request with `headers` on a connection from `peer` (`peer_value`: the
    /// same as an `X-Forwarded-For` element), a trusted proxy, under `identity`'s rules
    /// ([`Identity::forwarded_client`]); `None` when it is the peer. When the header is one
    /// line of `X-Forwarded-For` seen before, it is replaced here by the chain zgate sends
    /// (one lookup of the header for both); [`Seen::chain_set`] says so.
    pub fn client(
        &self,
        identity: &Identity,
        headers: &mut HeaderMap,
        peer: IpAddr,
        peer_value: &HeaderValue,
    ) -> Seen {
        let Some(name) = identity.header_name() else {
            return Seen::default();
        };
        let kept = match headers.entry(name) {
            Entry::Vacant(_) => return Seen::default(),
            Entry::Occupied(mut entry) => {
                let mut lines = entry.iter();
                let raw = lines.next().map_or(&b""[..], HeaderValue::as_bytes);
                let kept = lines.next().is_none() && raw.len() <= MAX_KEPT;
                let hit = if kept {
                    let slots = self.lock();
                    slots
                        .slot
                        .iter()
                        .find(|s| s.raw == raw)
                        .map(|s| s.named.clone())
                } else {
                    None
                };
                if let Some(named) = hit {
                    let chain = named.as_ref().and_then(|n| n.chain.as_ref());
                    if let Some(chain) = chain {
                        entry.insert(chain.clone());
                    }
                    return Seen {
                        chain_set: chain.is_some(),
                        named,
                    };
                }
                kept
            }
        };
        let named = identity
            .forwarded_client(headers)
            .filter(|ip| *ip != peer)
            .map(|ip| {
                // One line of `X-Forwarded-For`: what zgate sends for it is the same every time.
                let chain = (kept && *name == X_FORWARDED_FOR)
                    .then(|| {
                        headers::extend_list(|| headers.get_all(name).iter(), peer_value.as_bytes())
                    })
                    .flatten();
                Arc::new(Named {
                    ip,
                    value: forwarded_for(ip),
                    chain,
                    forwarded: None,
                })
            });
        if kept {
            let raw = headers.get(name).map_or(&b""[..], HeaderValue::as_bytes);
            let slot = Slot {
                raw: Bytes::copy_from_slice(raw),
                named: named.clone(),
            };
            let mut slots = self.lock();
            if slots.slot.len() < SLOTS {
                slots.slot.push(slot);
            } else {
                let i = slots.next;
                slots.next = (i + 1) % SLOTS;
                slots.slot[i] = slot;
            }
        }
        Seen {
            named,
            chain_set: false,
        }
    }

    /// Starts a request of `named` on `meter` ([`Meter::forwarded_request_started`], with the
    /// client as this connection charged it before) and keeps what it was charged to for the
    /// next ones.
    pub fn request_started(
        &self,
        named: &Named,
        meter: &Arc<Meter>,
        limiter: &Limiter,
        idempotent: bool,
    ) -> Result<InFlightRequest, InFlightRequest> {
        let kept = named.forwarded.as_ref();
        let started = meter.forwarded_request_started(limiter, named.ip, kept, idempotent);
        if let Some(f) = started.as_ref().ok().and_then(|r| r.forwarded()) {
            if !kept.is_some_and(|k| Arc::ptr_eq(k, f)) {
                self.keep(named.ip, f);
            }
        }
        started
    }

    /// Keeps `forwarded`, on `ip`, in the slots that name `ip`.
    fn keep(&self, ip: IpAddr, forwarded: &Arc<Forwarded>) {
        let mut slots = self.lock();
        for named in slots.slot.iter_mut().filter_map(|s| s.named.as_mut()) {
            if named.ip == ip {
                let mut kept = Named::clone(named);
                kept.forwarded = Some(forwarded.clone());
                *named = Arc::new(kept);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Nothing in a slot can be left half-written by a panic: the data stays usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn identity() -> Identity {
        let c = zgate_config::Config::parse(
            "[[listener]]\naddr = \"127.0.0.1:1\"\n[[backend]]\naddr = \"a:1\"\n[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\nheader = \"x-forwarded-for\"\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        Identity::new(&c.client_ip)
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(r: &Recent, id: &Identity, values: &[&str]) -> Option<IpAddr> {
        let peer = forwarded_for(ip("10.0.0.1"));
        let named = r
            .client(id, &mut headers(values), ip("10.0.0.1"), &peer)
            .named;
        if let Some(n) = &named {
            assert_eq!(n.value, n.ip.to_string());
        }
        named.map(|n| n.ip)
    }

    fn kept(r: &Recent) -> Vec<Vec<u8>> {
        let slots = r.lock();
        slots.slot.iter().map(|s| s.raw.to_vec()).collect()
    }

    #[test]
    fn a_value_seen_before_names_the_same_client_without_a_parse() {
        let (r, id) = (Recent::default(), identity());
        let chain = "203.0.113.9, 10.1.2.3";
        assert_eq!(client(&r, &id, &[chain]), Some(ip("203.0.113.9")));
        assert_eq!(kept(&r), [chain.as_bytes()]);
        // A hit answers from the slot: make the slot say something else to see it used.
        let other = Named {
            ip: ip("198.51.100.1"),
            value: forwarded_for(ip("198.51.100.1")),
            chain: None,
            forwarded: None,
        };
        r.lock().slot[0].named = Some(Arc::new(other));
        assert_eq!(client(&r, &id, &[chain]).unwrap(), ip("198.51.100.1"));
        // The peer itself, nobody usable and no header are "the peer", the first two kept.
        assert_eq!(client(&r, &id, &["10.0.0.1"]), None);
        assert_eq!(client(&r, &id, &["unknown"]), None);
        assert_eq!(client(&r, &id, &[]), None);
        assert_eq!(kept(&r).len(), 3);
    }

    /// One line of `X-Forwarded-For` gets the chain zgate sends made once, with the peer
    /// appended, and put in place of the header on the next requests with the same value; a
    /// value that is not kept gets none (made per request by `set_forwarded`).
    #[test]
    fn a_kept_value_carries_the_chain_to_send() {
        let (r, id) = (Recent::default(), identity());
        let peer = forwarded_for(ip("10.0.0.1"));
        let mut first = headers(&["203.0.113.9, 10.1.2.3"]);
        let seen = r.client(&id, &mut first, ip("10.0.0.1"), &peer);
        assert!(!seen.chain_set, "a miss leaves the header to set_forwarded");
        assert_eq!(
            first.get("x-forwarded-for").unwrap(),
            "203.0.113.9, 10.1.2.3"
        );
        let named = seen.named.unwrap();
        let chain = named.chain.as_ref().unwrap();
        assert_eq!(chain, "203.0.113.9, 10.1.2.3, 10.0.0.1");
        let mut again = headers(&["203.0.113.9, 10.1.2.3"]);
        let seen = r.client(&id, &mut again, ip("10.0.0.1"), &peer);
        assert!(seen.chain_set);
        assert!(
            Arc::ptr_eq(&named, &seen.named.unwrap()),
            "a hit shares the slot's entry"
        );
        let sent: Vec<_> = again.get_all("x-forwarded-for").iter().collect();
        assert_eq!(sent, ["203.0.113.9, 10.1.2.3, 10.0.0.1"]);
        let mut two = headers(&["6.6.6.6", "203.0.113.9"]);
        let seen = r.client(&id, &mut two, ip("10.0.0.1"), &peer);
        assert!(seen.named.unwrap().chain.is_none() && !seen.chain_set);
        assert_eq!(two.get_all("x-forwarded-for").iter().count(), 2);
    }

    #[test]
    fn several_lines_and_long_values_are_parsed_every_time_and_slots_are_bounded() {
        let (r, id) = (Recent::default(), identity());
        let two = ["6.6.6.6", "203.0.113.9, 10.0.0.1"];
        assert_eq!(client(&r, &id, &two), Some(ip("203.0.113.9")));
        let long = format!("{}203.0.113.7", "192.0.2.1, ".repeat(30));
        assert!(long.len() > MAX_KEPT);
        assert_eq!(client(&r, &id, &[&long]), Some(ip("203.0.113.7")));
        assert!(kept(&r).is_empty());
        for i in 0..3 * SLOTS {
            let v = format!("203.0.113.{i}");
            assert_eq!(client(&r, &id, &[&v]), Some(ip(&v)));
        }
        let all = kept(&r);
        assert_eq!(all.len(), SLOTS);
        assert!(all.contains(&format!("203.0.113.{}", 3 * SLOTS - 1).into_bytes()));
    }
}
