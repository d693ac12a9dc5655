//! Header rewriting between client and backend: hop-by-hop headers go, forwarding headers come
//! (believed and extended from a trusted proxy, replaced from anyone else).

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::Version;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, and the legacy ones).
/// A `static`, not a `const`: a const array would be built and dropped on every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `Upgrade` goes
/// too: an upgrade zgate tunnels is put back for the backend by `upgrade.rs`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages have no hop-by-hop header at all, and a
    // `remove` per name would hash and probe nine times.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection are hop-by-hop for this message.
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            if let Ok(text) = value.to_str() {
                for token in text.split(',') {
                    if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`] (a match on the text: one length switch and a
/// compare, no hashing).
#[inline]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The `Via` protocol token for a client's HTTP version (RFC 9110 §7.6.3).
pub fn via_token(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0 zgate",
        Version::HTTP_2 => "2 zgate",
        Version::HTTP_3 => "3 zgate",
        _ => "1.1 zgate",
    }
}

/// Appends `token` to the `Via` header (creating it when absent).
pub fn append_via(headers: &mut HeaderMap, token: &'static str) {
    append_list(headers, &header::VIA, token.as_bytes(), || {
        Some(HeaderValue::from_static(token))
    });
}

/// The `X-Forwarded-For` element of a client: its address as a header value, made once per
/// connection (and per forwarded client a connection's cache holds: see `identity.rs`).
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    let mut buf = [0u8; IP_TEXT_MAX];
    let text = ip_text(client, &mut buf);
    // An IP address's text is always a valid header value.
    HeaderValue::from_bytes(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The longest text of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_TEXT_MAX: usize = 45;

/// `ip` as text in `buf`, without the formatting machinery for IPv4 (the common case, once
/// per new client); IPv6 through `Display`, for its zero compression rules.
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut w = std::io::Cursor::new(&mut buf[..]);
            // Never longer than IP_TEXT_MAX: the write cannot fail.
            let _ = write!(w, "{v6}");
            let n = usize::try_from(w.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Where a request came from, for its forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The connection's client (socket peer or PROXY header address) as an `X-Forwarded-For`
    /// element ([`forwarded_for`]).
    pub peer: &'a HeaderValue,
    /// The same address.
    pub peer_ip: IpAddr,
    /// The request's client as an `X-Real-IP` value: `peer`, or the client a trusted peer's
    /// forwarding header named ([`forwarded_for`] of it).
    pub client: &'a HeaderValue,
    /// From a trusted peer: `X-Forwarded-For` is already the chain to send (the connection's
    /// [`Recent`](super::recent::Recent) put the one it made for the same value in place).
    pub chain_set: bool,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// Whether the peer connected over TLS.
    pub tls: bool,
}

/// Sets the forwarding headers of a request sent to a backend.
///
/// From an untrusted peer, any forwarding header may be made up: `Forwarded`, `X-Real-IP` and
/// every `X-Forwarded-*` header are dropped, then zgate sets its own: `X-Forwarded-For` and
/// `X-Real-IP` name the peer, `X-Forwarded-Proto` the scheme it used.
///
/// From a trusted proxy, the chain goes on: the peer is appended to `X-Forwarded-For` (and to
/// `Forwarded`, as a `for=` element, when the request has one), an `X-Forwarded-Proto` it set
/// is kept (the proxy knows the scheme its client used), and `X-Real-IP` names the request's
/// client as zgate decided it.
pub fn set_forwarded(headers: &mut HeaderMap, hop: &Hop<'_>) {
    if !hop.trusted {
        // What `insert` sets replaces every field of its name: only the others are removed.
        drop_forwarding(headers);
        headers.insert(X_FORWARDED_FOR.clone(), hop.peer.clone());
        headers.insert(X_REAL_IP.clone(), hop.peer.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), scheme(hop.tls));
        return;
    }
    if !hop.chain_set {
        append_list(headers, &X_FORWARDED_FOR, hop.peer.as_bytes(), || {
            Some(hop.peer.clone())
        });
    }
    if headers.contains_key(header::FORWARDED) {
        let mut buf = [0u8; IP_TEXT_MAX + 8];
        let element = for_element(hop.peer_ip, &mut buf);
        append_list(headers, &header::FORWARDED, element, || None);
    }
    if let Entry::Vacant(v) = headers.entry(&X_FORWARDED_PROTO) {
        v.insert(scheme(hop.tls));
    }
    headers.insert(X_REAL_IP.clone(), hop.client.clone());
}

/// A `Forwarded` element naming `ip` (RFC 7239 §6: IPv6 quoted and bracketed), in `buf`.
fn for_element(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX + 8]) -> &[u8] {
    let mut text = [0u8; IP_TEXT_MAX];
    let addr = ip_text(ip, &mut text);
    let (open, close): (&[u8], &[u8]) = match ip {
        IpAddr::V4(_) => (b"for=", b""),
        IpAddr::V6(_) => (b"for=\"[", b"]\""),
    };
    let mut n = 0;
    for part in [open, addr, close] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    &buf[..n]
}

fn scheme(tls: bool) -> HeaderValue {
    HeaderValue::from_static(if tls { "https" } else { "http" })
}

/// Removes `Forwarded` and every `X-Forwarded-*` header but those [`set_forwarded`] sets
/// anew (`X-Forwarded-For`, `X-Forwarded-Proto`, and `X-Real-IP`, which it replaces). One
/// pass over the names when there is none (the common case); else one more per header
/// removed, with no list of names allocated.
fn drop_forwarding(headers: &mut HeaderMap) {
    loop {
        let found = match headers.keys().find(|n| is_forwarding(n)) {
            None => return,
            Some(n) => match FORWARDING.iter().find(|known| *known == n) {
                Some(known) => Cow::Borrowed(known),
                None => Cow::Owned(n.clone()),
            },
        };
        headers.remove(&*found);
    }
}

/// Whether `name` is `Forwarded` or an `X-Forwarded-*` header other than `-For` and
/// `-Proto` (see [`drop_forwarding`]).
#[inline]
fn is_forwarding(name: &HeaderName) -> bool {
    name == header::FORWARDED || {
        let n = name.as_str();
        n.starts_with("x-forwarded-") && n != "x-forwarded-for" && n != "x-forwarded-proto"
    }
}

/// The forwarding headers [`drop_forwarding`] removes without copying their name.
static FORWARDING: [HeaderName; 4] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-server"),
];

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else { return };
    let Some(second) = values.next() else { return };
    let mut joined = Vec::with_capacity(first.len() + second.len() + 2);
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Appends `item` to the comma-separated list header `name`, joining the fields it has into
/// one value (one allocation; a field that is not visible ASCII is left out); when it has
/// none, inserts what `alone` gives.
fn append_list(
    headers: &mut HeaderMap,
    name: &HeaderName,
    item: &[u8],
    alone: impl FnOnce() -> Option<HeaderValue>,
) {
    let mut entry = match headers.entry(name) {
        Entry::Occupied(o) => o,
        Entry::Vacant(v) => {
            if let Some(value) = alone() {
                v.insert(value);
            }
            return;
        }
    };
    if let Some(v) = extend_list(|| entry.iter(), item) {
        entry.insert(v);
    }
}

/// The list of `values` (the fields of one comma-separated list header) with `item` appended,
/// as one value (one allocation; a field that is not visible ASCII is left out).
pub fn extend_list<'v, I: Iterator<Item = &'v HeaderValue>>(
    values: impl Fn() -> I,
    item: &[u8],
) -> Option<HeaderValue> {
    let len = values().map(|v| v.len() + 2).sum::<usize>() + item.len();
    let mut joined = Vec::with_capacity(len);
    for v in values().filter(|v| v.to_str().is_ok()) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if !joined.is_empty() {
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(item);
    HeaderValue::from_maybe_shared(Bytes::from(joined)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "example.com"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }

    fn hop<'a>(
        peer: &'a HeaderValue,
        client: &'a HeaderValue,
        trusted: bool,
        tls: bool,
    ) -> Hop<'a> {
        Hop {
            peer,
            peer_ip: peer.to_str().unwrap().parse().unwrap(),
            client,
            chain_set: false,
            trusted,
            tls,
        }
    }

    #[test]
    fn an_untrusted_peer_gets_its_own_forwarding_headers_only() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "198.51.100.3"),
            ("x-forwarded-for", "198.51.100.4"),
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-host", "evil.example"),
            ("X-Forwarded-Port", "1"),
            ("forwarded", "for=198.51.100.1"),
            ("x-real-ip", "198.51.100.2"),
            ("x-kept", "yes"),
        ]);
        let peer = forwarded_for("192.0.2.7".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, &peer, false, true));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        for one in ["x-forwarded-for", "x-real-ip", "x-forwarded-proto"] {
            assert_eq!(h.get_all(one).iter().count(), 1, "{one}");
        }
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-kept"], "yes");
        for gone in ["x-forwarded-host", "x-forwarded-port", "forwarded"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut h = HeaderMap::new();
        let peer = forwarded_for("::1".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, &peer, false, false));
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn a_trusted_peer_extends_the_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-real-ip", "10.0.0.1"),
        ]);
        let peer = forwarded_for("10.0.0.2".parse().unwrap());
        let client = forwarded_for("203.0.113.9".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, &client, true, false));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1, 10.0.0.2");
        assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https, for=10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        // IPv6 in Forwarded is quoted and bracketed; no Forwarded, none added.
        let mut h = map(&[("forwarded", "for=unknown")]);
        let peer = forwarded_for("2001:db8::2".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, &peer, true, true));
        assert_eq!(h["forwarded"], "for=unknown, for=\"[2001:db8::2]\"");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &hop(&peer, &peer, true, true));
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["x-real-ip"], "2001:db8::2");
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut h = map(&[("host", "a"), ("x-kept", "1"), ("keep-alive-ish", "2")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "203.0.113.9",
            "::1",
            "2001:db8::9",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(forwarded_for(ip), ip.to_string().as_str());
            let mut buf = [0u8; IP_TEXT_MAX + 8];
            let want = match ip {
                IpAddr::V4(_) => format!("for={ip}"),
                IpAddr::V6(_) => format!("for=\"[{ip}]\""),
            };
            assert_eq!(for_element(ip, &mut buf), want.as_bytes());
        }
    }

    #[test]
    fn a_list_skips_fields_that_are_not_visible_ascii() {
        let mut h = HeaderMap::new();
        h.append("via", HeaderValue::from_static("1.0 a"));
        h.append("via", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        h.append("via", HeaderValue::from_static("1.1 b"));
        append_via(&mut h, "1.1 zgate");
        assert_eq!(h.get_all("via").iter().count(), 1);
        assert_eq!(h["via"], "1.0 a, 1.1 b, 1.1 zgate");
    }

    #[test]
    fn via_appends() {
        let mut h = map(&[("via", "1.0 fred")]);
        append_via(&mut h, via_token(Version::HTTP_2));
        assert_eq!(h["via"], "1.0 fred, 2 zgate");
        let mut h = HeaderMap::new();
        append_via(&mut h, via_token(Version::HTTP_11));
        assert_eq!(h["via"], "1.1 zgate");
    }

    #[test]
    fn cookies_join_for_http1() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
    }
}
