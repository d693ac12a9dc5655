//! Header rewriting between client and backend: hop-by-hop headers go, forwarding headers come
//! (believed and extended from a trusted proxy, replaced from anyone else).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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
    // Most messages have none: one pass over the names (a comparison of each with the list)
    // costs less than hashing every name of the list for a removal.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
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
    if headers.contains_key(header::VIA) {
        append_list(headers, header::VIA, token);
    } else {
        headers.insert(header::VIA, HeaderValue::from_static(token));
    }
}

/// The `X-Forwarded-For` element of a client: its address as a header value, made once per
/// connection.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::from_str(&client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
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
    /// The request's client: the peer, or the client a trusted peer's forwarding header named.
    pub client: IpAddr,
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
        drop_forwarding(headers);
        headers.insert(X_FORWARDED_FOR.clone(), hop.peer.clone());
        headers.insert(X_REAL_IP.clone(), hop.peer.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), scheme(hop.tls));
        return;
    }
    if headers.contains_key(&X_FORWARDED_FOR) {
        if let Ok(text) = hop.peer.to_str() {
            append_list(headers, X_FORWARDED_FOR.clone(), text);
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), hop.peer.clone());
    }
    if headers.contains_key(header::FORWARDED) {
        let element = match hop.peer_ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        append_list(headers, header::FORWARDED, &element);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), scheme(hop.tls));
    }
    let client = if hop.client == hop.peer_ip {
        hop.peer.clone()
    } else {
        forwarded_for(hop.client)
    };
    headers.insert(X_REAL_IP.clone(), client);
}

fn scheme(tls: bool) -> HeaderValue {
    HeaderValue::from_static(if tls { "https" } else { "http" })
}

/// Removes `Forwarded`, `X-Real-IP` and every `X-Forwarded-*` header.
fn drop_forwarding(headers: &mut HeaderMap) {
    let named = |n: &HeaderName| {
        n == header::FORWARDED || n == X_REAL_IP || n.as_str().starts_with("x-forwarded-")
    };
    if !headers.keys().any(named) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| named(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

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

/// Appends `item` to a comma-separated list header, joining existing fields into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut joined = String::new();
    for v in headers.get_all(&name) {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s);
        }
    }
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str(item);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
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

    fn hop<'a>(peer: &'a HeaderValue, client: &str, trusted: bool, tls: bool) -> Hop<'a> {
        Hop {
            peer,
            peer_ip: peer.to_str().unwrap().parse().unwrap(),
            client: client.parse().unwrap(),
            trusted,
            tls,
        }
    }

    #[test]
    fn an_untrusted_peer_gets_its_own_forwarding_headers_only() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-host", "evil.example"),
            ("X-Forwarded-Port", "1"),
            ("forwarded", "for=198.51.100.1"),
            ("x-real-ip", "198.51.100.2"),
            ("x-kept", "yes"),
        ]);
        let peer = forwarded_for("192.0.2.7".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, "192.0.2.7", false, true));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-kept"], "yes");
        for gone in ["x-forwarded-host", "x-forwarded-port", "forwarded"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut h = HeaderMap::new();
        let peer = forwarded_for("::1".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, "::1", false, false));
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
        set_forwarded(&mut h, &hop(&peer, "203.0.113.9", true, false));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1, 10.0.0.2");
        assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https, for=10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        // IPv6 in Forwarded is quoted and bracketed; no Forwarded, none added.
        let mut h = map(&[("forwarded", "for=unknown")]);
        let peer = forwarded_for("2001:db8::2".parse().unwrap());
        set_forwarded(&mut h, &hop(&peer, "2001:db8::2", true, true));
        assert_eq!(h["forwarded"], "for=unknown, for=\"[2001:db8::2]\"");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &hop(&peer, "2001:db8::2", true, true));
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["x-real-ip"], "2001:db8::2");
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
