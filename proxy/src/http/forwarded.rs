//! Who the client of a request is, from a forwarding header set by a trusted proxy (an L7
//! load balancer or a CDN edge): `X-Forwarded-For`, RFC 7239 `Forwarded`, or `X-Real-IP`.
//!
//! Sans-IO: the header's values in, an address (or none) out. Each proxy on the way appends
//! the address it received the request from, so the chain reads left to right from the
//! original client to the last proxy, and only its right end is believable: the client is the
//! **rightmost address that is not itself a trusted proxy** (everything left of it could be
//! made up by that client). When every address is a trusted proxy, the leftmost is the
//! client. A missing header, or a rightmost untrusted element that is not an address
//! (`unknown`, an obfuscated `_name`, garbage), yields `None`: the caller keeps the peer.
//!
//! This is nginx's `real_ip_recursive on` with `set_real_ip_from` as the trusted set.

use std::net::{IpAddr, SocketAddr};

use zgate_config::ForwardHeader;

/// The client named by the values of header `kind` (in the order they arrived; several
/// header lines read as one comma-separated list), or `None` if they name none: see the
/// module doc. `is_trusted` says whether an address is a trusted proxy.
pub fn client<'a>(
    kind: ForwardHeader,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    match kind {
        ForwardHeader::XForwardedFor => rightmost_untrusted(
            values
                .rev()
                .flat_map(|v| v.rsplit(|&b| b == b','))
                .map(node),
            is_trusted,
        ),
        ForwardHeader::XRealIp => rightmost_untrusted(values.rev().map(node), is_trusted),
        ForwardHeader::Forwarded => {
            // Quoted strings may hold commas: split each line front to back.
            let mut hops: Vec<Option<IpAddr>> = Vec::new();
            for v in values {
                hops.extend(ForwardedElements { rest: Some(v) }.map(|e| e.and_then(for_param)));
            }
            rightmost_untrusted(hops.into_iter().rev(), is_trusted)
        }
    }
}

/// Walks the chain from its right end: skips trusted proxies, returns the first other
/// address; `None` at an element that is not an address. All trusted: the leftmost.
fn rightmost_untrusted(
    from_right: impl Iterator<Item = Option<IpAddr>>,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let mut leftmost = None;
    for hop in from_right {
        let ip = hop?;
        if !is_trusted(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// One node of a chain: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711`, surrounded by optional whitespace. An IPv4-mapped IPv6 address is
/// the IPv4 address.
fn node(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Ok(sa) = text.parse::<SocketAddr>() {
        sa.ip()
    } else {
        text.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(ip.to_canonical())
}

/// The `for` parameter of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`), as
/// an address; `None` if it has none, or it is `unknown` or an obfuscated identifier.
fn for_param(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    let params = Params { rest: element };
    for pair in params {
        let (name, value) = pair?;
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                // A parameter may appear once per element (RFC 7239 §4).
                return None;
            }
            found = Some(value);
        }
    }
    node(&found?)
}

/// The comma-separated elements of a `Forwarded` value, front to back; a comma inside a
/// quoted string does not split, and an empty element (`a,,b`, a trailing comma) is one.
/// `None` for an element with an unterminated quote.
struct ForwardedElements<'a> {
    /// What is left to split; `None` once the last element was returned.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for ForwardedElements<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.take()?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(Some(&rest[..i]));
                }
                _ => {}
            }
        }
        Some((!quoted).then_some(rest))
    }
}

/// The `name=value` pairs of one element, separated by `;`; a value is a token or a quoted
/// string (unquoted here, with `\` escapes resolved). `None` for a pair without `=`.
struct Params<'a> {
    rest: &'a [u8],
}

impl Iterator for Params<'_> {
    type Item = Option<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = trim(self.rest);
        if rest.is_empty() {
            return None;
        }
        let Some(eq) = rest.iter().position(|&b| b == b'=') else {
            self.rest = &[];
            return Some(None);
        };
        let name = trim(&rest[..eq]).to_vec();
        let after = &rest[eq + 1..];
        let (value, tail) = if after.first() == Some(&b'"') {
            let mut value = Vec::new();
            let mut escaped = false;
            let mut end = None;
            for (i, &b) in after.iter().enumerate().skip(1) {
                match b {
                    _ if escaped => {
                        value.push(b);
                        escaped = false;
                    }
                    b'\\' => escaped = true,
                    b'"' => {
                        end = Some(i);
                        break;
                    }
                    _ => value.push(b),
                }
            }
            let Some(end) = end else {
                self.rest = &[];
                return Some(None);
            };
            (value, &after[end + 1..])
        } else {
            let end = after.iter().position(|&b| b == b';').unwrap_or(after.len());
            (trim(&after[..end]).to_vec(), &after[end..])
        };
        let tail = trim(tail);
        self.rest = match tail.first() {
            Some(b';') => &tail[1..],
            Some(_) => {
                // Text after a quoted value that is not a separator.
                self.rest = &[];
                return Some(None);
            }
            None => tail,
        };
        Some(Some((name, value)))
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// 10.0.0.0/8 and 2001:db8:ffff::/48 are the trusted proxies.
    fn trusted(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.octets()[0] == 10,
            IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
        }
    }

    fn xff(values: &[&str]) -> Option<IpAddr> {
        client(
            ForwardHeader::XForwardedFor,
            values.iter().map(|v| v.as_bytes()),
            trusted,
        )
    }

    fn fwd(values: &[&str]) -> Option<IpAddr> {
        client(
            ForwardHeader::Forwarded,
            values.iter().map(|v| v.as_bytes()),
            trusted,
        )
    }

    fn real(values: &[&str]) -> Option<IpAddr> {
        client(
            ForwardHeader::XRealIp,
            values.iter().map(|v| v.as_bytes()),
            trusted,
        )
    }

    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        assert_eq!(xff(&["203.0.113.9"]), Some(ip("203.0.113.9")));
        // A client-made entry on the left does not matter.
        assert_eq!(xff(&["6.6.6.6, 203.0.113.9"]), Some(ip("203.0.113.9")));
        // The chain "client, cdn-edge" through a trusted edge: the client.
        assert_eq!(xff(&["203.0.113.9, 10.1.2.3"]), Some(ip("203.0.113.9")));
        assert_eq!(
            xff(&["6.6.6.6,203.0.113.9 ,\t10.1.2.3,10.0.0.1"]),
            Some(ip("203.0.113.9"))
        );
        // Several header lines are one list.
        assert_eq!(
            xff(&["6.6.6.6", "203.0.113.9, 10.0.0.1"]),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(xff(&["203.0.113.9", "10.0.0.1"]), Some(ip("203.0.113.9")));
        // Ports and brackets, IPv6, IPv4-mapped.
        assert_eq!(xff(&["203.0.113.9:4711"]), Some(ip("203.0.113.9")));
        assert_eq!(xff(&["[2001:db8::9]:4711"]), Some(ip("2001:db8::9")));
        assert_eq!(xff(&["[2001:db8::9]"]), Some(ip("2001:db8::9")));
        assert_eq!(
            xff(&["2001:db8::9, 2001:db8:ffff::1"]),
            Some(ip("2001:db8::9"))
        );
        assert_eq!(xff(&["::ffff:203.0.113.9"]), Some(ip("203.0.113.9")));
        // All trusted: the leftmost.
        assert_eq!(xff(&["10.0.0.7, 10.0.0.1"]), Some(ip("10.0.0.7")));
    }

    #[test]
    fn x_forwarded_for_without_an_address_means_the_peer() {
        assert_eq!(xff(&[]), None);
        assert_eq!(xff(&[""]), None);
        assert_eq!(xff(&["unknown"]), None);
        assert_eq!(xff(&["203.0.113.9, garbage"]), None);
        assert_eq!(xff(&["203.0.113.9, , 10.0.0.1"]), None);
        assert_eq!(xff(&["203.0.113.9:"]), None);
        assert_eq!(xff(&["2001:db8::9:4711:zz"]), None);
        // Garbage left of the rightmost untrusted address is never looked at.
        assert_eq!(xff(&["garbage, 203.0.113.9"]), Some(ip("203.0.113.9")));
        let bytes: &[&[u8]] = &[b"203.0.113.9\xff"];
        assert_eq!(
            client(ForwardHeader::XForwardedFor, bytes.iter().copied(), trusted),
            None
        );
    }

    #[test]
    fn forwarded_rfc_7239() {
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            fwd(&["For=\"[2001:db8:cafe::17]:4711\""]),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            fwd(&["for=\"[2001:db8:cafe::17]\""]),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(fwd(&["for=\"192.0.2.60:8080\""]), Some(ip("192.0.2.60")));
        assert_eq!(
            fwd(&["for=192.0.2.43, for=198.51.100.17;by=10.0.0.1, for=10.2.3.4"]),
            Some(ip("198.51.100.17"))
        );
        // Parameters in any order, case and spacing; a quoted comma does not split.
        assert_eq!(
            fwd(&["proto=https;host=\"a,b\" ; FOR = 198.51.100.17 ,for=10.0.0.2"]),
            Some(ip("198.51.100.17"))
        );
        assert_eq!(
            fwd(&["for=198.51.100.17", "for=\"[2001:db8:ffff::3]:443\""]),
            Some(ip("198.51.100.17"))
        );
        assert_eq!(fwd(&["for=\"\\[2001:db8::1\\]\""]), Some(ip("2001:db8::1")));
    }

    #[test]
    fn forwarded_without_a_usable_for_means_the_peer() {
        assert_eq!(fwd(&["for=unknown"]), None);
        assert_eq!(fwd(&["for=_hidden, for=10.0.0.1"]), None);
        assert_eq!(fwd(&["proto=https"]), None);
        assert_eq!(fwd(&["for=192.0.2.60;for=192.0.2.61"]), None);
        assert_eq!(fwd(&["for=\"192.0.2.60"]), None);
        assert_eq!(fwd(&["for=\"192.0.2.60\"x"]), None);
        assert_eq!(fwd(&["for"]), None);
        assert_eq!(fwd(&["for=192.0.2.60,"]), None);
        // Unbracketed IPv6 reads as the address it spells (RFC 7239 brackets one with a port).
        assert_eq!(
            fwd(&["for=\"2001:db8::1:4711\""]),
            Some(ip("2001:db8::1:4711"))
        );
    }

    #[test]
    fn x_real_ip_is_one_address() {
        assert_eq!(real(&["203.0.113.9"]), Some(ip("203.0.113.9")));
        assert_eq!(real(&[" 2001:db8::9 "]), Some(ip("2001:db8::9")));
        assert_eq!(real(&["10.0.0.3"]), Some(ip("10.0.0.3")));
        assert_eq!(real(&["203.0.113.9, 198.51.100.1"]), None);
        assert_eq!(real(&[]), None);
    }
}
