//! The `Host` a backend gets, per RFC 9112 §3.2 and RFC 9113 §8.3.1 (sans-IO: a request head
//! in, a decision out).
//!
//! - A request target with an authority wins: the absolute-form of HTTP/1.1 (`GET
//!   http://a.example/ HTTP/1.1`; RFC 9112 §3.2.2: the server must ignore `Host`) and the
//!   `:authority` of HTTP/2 (RFC 9113 §8.3.1: it takes precedence over `host`).
//! - More than one `Host` field, or a value that is not an authority: 400, any version.
//! - HTTP/1.1 without `Host`: 400. HTTP/1.0 and HTTP/2 may have none; the backend then gets
//!   none.
//!
//! The decision is taken before hop-by-hop headers are stripped and applied after, so `Host`
//! cannot be removed by naming it in `Connection`.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Uri, Version};

/// Why a request's `Host` is unusable: the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    Missing,
    /// More than one `Host` field line.
    Duplicate,
    /// A `Host` value that is not `host[:port]`.
    Invalid,
}

impl HostError {
    /// The text of the 400 response.
    pub fn message(self) -> &'static str {
        match self {
            HostError::Missing => "bad request: no Host header\n",
            HostError::Duplicate => "bad request: more than one Host header\n",
            HostError::Invalid => "bad request: invalid Host header\n",
        }
    }
}

/// The `Host` the backend gets for a request with this version, target and headers; `None`
/// when the request has no authority at all (allowed for HTTP/1.0 and HTTP/2).
pub fn backend_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, HostError> {
    let mut fields = headers.get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(HostError::Duplicate);
    }
    if let Some(field) = field {
        if !field.is_empty() && Authority::try_from(field.as_bytes()).is_err() {
            return Err(HostError::Invalid);
        }
    }
    if let Some(authority) = uri.authority() {
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| HostError::Invalid);
    }
    match field {
        Some(v) => Ok(Some(v.clone())),
        None if version == Version::HTTP_11 => Err(HostError::Missing),
        None => Ok(None),
    }
}

/// Sets the backend's `Host` (after hop-by-hop headers were stripped, whatever `Connection`
/// named).
pub fn apply(headers: &mut HeaderMap, host: Option<HeaderValue>) {
    match host {
        Some(v) => {
            headers.insert(header::HOST, v);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<String>, HostError> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        let uri: Uri = uri.parse().unwrap();
        backend_host(version, &uri, &h).map(|v| v.map(|v| v.to_str().unwrap().to_owned()))
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let v = Version::HTTP_11;
        assert_eq!(host(v, "/", &["a.example"]), Ok(Some("a.example".into())));
        assert_eq!(host(v, "/", &[]), Err(HostError::Missing));
        assert_eq!(host(v, "/", &["a", "b"]), Err(HostError::Duplicate));
        assert_eq!(host(v, "/", &["a b"]), Err(HostError::Invalid));
        assert_eq!(host(Version::HTTP_10, "/", &[]), Ok(None));
    }

    #[test]
    fn the_targets_authority_wins() {
        let v = Version::HTTP_11;
        let got = host(v, "http://real.example:8080/x", &["other.example"]);
        assert_eq!(got, Ok(Some("real.example:8080".into())));
        // HTTP/2: `:authority` (in the URI) wins over a differing `host`.
        let got = host(Version::HTTP_2, "https://a.example/", &["b.example"]);
        assert_eq!(got, Ok(Some("a.example".into())));
        assert_eq!(
            host(Version::HTTP_2, "/", &["b.example"]),
            Ok(Some("b.example".into()))
        );
        assert_eq!(host(Version::HTTP_2, "/", &[]), Ok(None));
        // Absolute-form still may not carry two Host lines.
        let got = host(v, "http://a.example/", &["a", "b"]);
        assert_eq!(got, Err(HostError::Duplicate));
    }

    #[test]
    fn apply_sets_or_removes() {
        let mut h = HeaderMap::new();
        apply(&mut h, Some(HeaderValue::from_static("a")));
        assert_eq!(h[header::HOST], "a");
        apply(&mut h, None);
        assert!(!h.contains_key(header::HOST));
    }
}
