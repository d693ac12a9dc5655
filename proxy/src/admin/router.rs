//! Admin routing: path and method to an endpoint; 401 without the token, 404 for an unknown
//! path, 405 (with `Allow`) for a method the path does not take. The status page's own files
//! (`/`, `/ui/...`) are served without the token: they hold no data.

use std::net::SocketAddr;

use http::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::api;
use super::auth::authorized;
use super::guard::{check_content_type, Site};
use super::json::{ApiError, Reply};
use super::page::{self, Asset};
use super::Control;
use crate::escape::escaped;

/// One admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/v1/mode`.
    Mode,
    /// `/api/v1/model`.
    Model,
    /// `/api/v1/thresholds`.
    Thresholds,
    /// `/api/v1/knobs`: every runtime setting as `key = value` (what `zgate ctl -a` prints).
    Knobs,
    /// `/api/v1/clients`.
    Clients,
    /// `/api/v1/clients/{ip}`.
    Client(String),
    /// `/api/v1/clients/live`: the clients' current values per metric.
    Live,
    /// `/api/v1/blocks`.
    Blocks,
    /// `/api/v1/blocks/{ip or prefix}`.
    Block(String),
    /// `/api/v1/reload`.
    Reload,
    /// `/api/v1/overrides`: the runtime overrides.
    Overrides,
    /// `/api/v1/overrides/{key}`.
    Override(String),
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Health,
    /// The status page: `/` and its files.
    Page(Asset),
}

impl Route {
    /// The route of `path`, if any.
    pub(crate) fn of(path: &str) -> Option<Route> {
        let route = match path {
            "/api/v1/mode" => Route::Mode,
            "/api/v1/model" => Route::Model,
            "/api/v1/thresholds" => Route::Thresholds,
            "/api/v1/knobs" => Route::Knobs,
            "/api/v1/clients" => Route::Clients,
            "/api/v1/clients/live" => Route::Live,
            "/api/v1/blocks" => Route::Blocks,
            "/api/v1/reload" => Route::Reload,
            "/api/v1/overrides" => Route::Overrides,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Health,
            _ => {
                if let Some(asset) = Asset::of(path) {
                    return Some(Route::Page(asset));
                }
                if let Some(ip) = path.strip_prefix("/api/v1/clients/") {
                    return Some(Route::Client(percent_decode(ip)));
                }
                if let Some(ip) = path.strip_prefix("/api/v1/blocks/") {
                    return Some(Route::Block(percent_decode(ip)));
                }
                if let Some(key) = path.strip_prefix("/api/v1/overrides/") {
                    return Some(Route::Override(percent_decode(key)));
                }
                return None;
            }
        };
        Some(route)
    }

    /// The methods the route takes.
    pub(crate) fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Mode | Route::Model | Route::Thresholds | Route::Overrides => {
                &[Method::GET, Method::PUT]
            }
            Route::Blocks => &[Method::GET, Method::POST],
            Route::Block(_) | Route::Override(_) => &[Method::DELETE],
            Route::Reload => &[Method::POST],
            Route::Knobs
            | Route::Clients
            | Route::Client(_)
            | Route::Live
            | Route::Metrics
            | Route::Health
            | Route::Page(_) => &[Method::GET],
        }
    }
}

/// Serves one admin request: the checks against other web pages (`guard.rs`), the token
/// (except `/healthz` with `admin.public_healthz`), the route and method, then the endpoint.
pub(crate) async fn handle(
    core: &dyn Control,
    site: &Site,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Err(e) = site.check_headers(req.headers()) {
        return refused(peer, &method, &path, e);
    }
    if let Some(Route::Page(asset)) = Route::of(&path) {
        if matches!(method, Method::GET | Method::HEAD) {
            return page::reply(asset);
        }
    }
    let public = site.public_healthz && path == "/healthz";
    if !public && !authorized(req.headers(), site.token.as_deref()) {
        tracing::debug!(client = %peer, "admin request without the right token");
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <admin.token>",
        )
        .reply();
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let Some(route) = Route::of(&path) else {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")).reply();
    };
    let allowed = route.allowed();
    let head_of_get = method == Method::HEAD && allowed.contains(&Method::GET);
    if !(allowed.contains(&method) || head_of_get) {
        let list = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}: use {list}"),
        )
        .reply();
        if let Ok(v) = HeaderValue::from_str(&list) {
            r.headers_mut().insert(ALLOW, v);
        }
        return r;
    }
    if let Err(e) = check_content_type(&method, req.headers()) {
        return refused(peer, &method, &path, e);
    }
    let result = api::call(core, route, req).await;
    match result {
        Ok(reply) => reply,
        Err(e) if method == Method::GET || method == Method::HEAD => e.reply(),
        Err(e) => refused(peer, &method, &path, e),
    }
}

/// Logs a refused request (the path and the error, which may quote the request, escaped) and
/// answers it.
fn refused(peer: SocketAddr, method: &Method, path: &str, e: ApiError) -> Reply {
    tracing::info!(
        client = %peer,
        %method,
        path = %escaped(path),
        status = e.status.as_u16(),
        error = %escaped(&e.message),
        "admin request refused"
    );
    e.reply()
}

/// Decodes `%XX` escapes (e.g. `%2F` in a prefix); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(Route::of("/api/v1/mode"), Some(Route::Mode));
        assert_eq!(Route::of("/api/v1/nope"), None);
        assert_eq!(Route::of("/api/v1/clients/live"), Some(Route::Live));
        assert_eq!(
            Route::of("/api/v1/clients/192.0.2.1"),
            Some(Route::Client("192.0.2.1".into()))
        );
        assert_eq!(Route::of("/"), Some(Route::Page(Asset::Index)));
        assert_eq!(
            Route::of("/api/v1/blocks/2001:db8::%2F64"),
            Some(Route::Block("2001:db8::/64".into()))
        );
        assert_eq!(
            Route::of("/api/v1/blocks/2001:db8::/64"),
            Some(Route::Block("2001:db8::/64".into()))
        );
        assert!(Route::Reload.allowed().contains(&Method::POST));
        assert!(!Route::Reload.allowed().contains(&Method::GET));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("1.2.3.4"), "1.2.3.4");
    }
}
