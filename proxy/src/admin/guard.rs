//! What keeps other web pages on the same host from driving the admin API.
//!
//! A browser lets any page send a "simple" cross-origin request (a `text/plain` POST needs no
//! CORS preflight), and DNS rebinding lets a page on `evil.example` reach a loopback port under
//! its own name. Without a token (the default on loopback) nothing else would stop either, so
//! every admin request passes these checks, sans-IO, on its headers:
//!
//! - **Host** (DNS rebinding): it must name the listener's own address or a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`, ...), with the listener's port if a port is given. With
//!   a token configured any Host passes: a rebinding page does not have the token, and remote
//!   operators reach an off-loopback listener under names zgate cannot know.
//! - **Origin**: when present, it must be the listener's own origin, `http://` + the Host
//!   (what a page served by the admin listener itself sends); anything else, `null` included, is
//!   refused with 403.
//! - **Content-Type**: a mutation (`PUT`, `POST`, `DELETE`) must say `application/json`
//!   (parameters such as `charset` allowed), else 415: a page cannot send that type
//!   cross-origin without a preflight, which the admin API never grants.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Method, StatusCode};

use super::json::ApiError;
use crate::escape::escaped;

/// The admin listener as the checks see it.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// The bound address.
    pub(crate) addr: SocketAddr,
    /// `admin.token`, if set.
    pub(crate) token: Option<String>,
    /// `admin.public_healthz`: `/healthz` without the token.
    pub(crate) public_healthz: bool,
}

impl Site {
    /// Checks `Host` and `Origin` of any request; see the module docs.
    pub(crate) fn check_headers(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}"))
            .ok_or_else(|| ApiError::bad_request("no Host header"))?;
        if self.token.is_none() && !self.host_allowed(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {:?} is not this admin listener ({}) nor a loopback name",
                    escaped(host).to_string(),
                    self.addr
                ),
            ));
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("\u{fffd}");
            let own = format!("http://{host}");
            if !origin.eq_ignore_ascii_case(&own) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Origin {:?} is not this admin listener's own origin ({own}): \
                         requests from other web pages are refused",
                        escaped(origin).to_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether `host` (a Host header or an Origin's authority) names this listener: its own
    /// IP or a loopback name, and its port when a port is given.
    fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port.is_some_and(|p| p != self.addr.port()) {
            return false;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.addr.ip(),
            Err(_) => false,
        }
    }
}

/// A mutation must carry `Content-Type: application/json`; 415 otherwise.
pub(crate) fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if !matches!(*method, Method::PUT | Method::POST | Method::DELETE) {
        return Ok(());
    }
    let given = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let media = given.map(|t| t.split(';').next().unwrap_or("").trim());
    if media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "{method} needs Content-Type: application/json (got {})",
            given.map_or("none".to_owned(), |t| format!(
                "{:?}",
                escaped(t).to_string()
            ))
        ),
    ))
}

/// `name` and the port of `host:port`, `[v6]:port`, `name` or `[v6]`; `None` if malformed.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!name.is_empty()).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(token: Option<&str>) -> Site {
        Site {
            addr: "127.0.0.1:7391".parse().unwrap(),
            token: token.map(str::to_owned),
            public_healthz: false,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    #[test]
    fn host_must_name_the_listener_or_loopback() {
        let s = site(None);
        for ok in [
            "127.0.0.1:7391",
            "localhost:7391",
            "LOCALHOST.",
            "[::1]:7391",
            "127.0.0.2",
        ] {
            assert_eq!(
                status(s.check_headers(&headers(&[("host", ok)]))),
                200,
                "{ok}"
            );
        }
        for bad in [
            "evil.example:7391",
            "127.0.0.1:80",
            "localhost:9090",
            "10.0.0.1:7391",
            "[::1",
            "",
        ] {
            assert_eq!(
                status(s.check_headers(&headers(&[("host", bad)]))),
                403,
                "{bad}"
            );
        }
        assert_eq!(status(s.check_headers(&HeaderMap::new())), 400);
        // With a token, the token is what keeps rebinding pages out.
        let t = site(Some("0123456789abcdef"));
        assert_eq!(
            status(t.check_headers(&headers(&[("host", "zgate.example:7391")]))),
            200
        );
    }

    #[test]
    fn origin_must_be_the_listeners_own() {
        let s = site(None);
        let h = |o: &str| headers(&[("host", "127.0.0.1:7391"), ("origin", o)]);
        assert_eq!(status(s.check_headers(&h("http://127.0.0.1:7391"))), 200);
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8080",
            "https://127.0.0.1:7391",
        ] {
            assert_eq!(status(s.check_headers(&h(bad))), 403, "{bad}");
        }
    }

    #[test]
    fn mutations_need_json() {
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        let text = headers(&[("content-type", "text/plain")]);
        assert_eq!(status(check_content_type(&Method::POST, &json)), 200);
        assert_eq!(status(check_content_type(&Method::POST, &text)), 415);
        assert_eq!(
            status(check_content_type(&Method::DELETE, &HeaderMap::new())),
            415
        );
        assert_eq!(status(check_content_type(&Method::GET, &text)), 200);
    }
}
