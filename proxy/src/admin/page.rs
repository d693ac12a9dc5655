//! The status page (`/`): one HTML page, its stylesheet and its script, embedded in the binary
//! (`proxy/ui/`), nothing fetched from elsewhere. The page holds no data: it polls the JSON API
//! with the token the operator gives it, so it is served without the token; every API request
//! it makes is authenticated as any other.

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::json::Reply;

/// One embedded file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    /// `/`: the HTML.
    Index,
    /// `/ui/app.css`.
    Style,
    /// `/ui/app.js`.
    Script,
}

const INDEX: &str = include_str!("../../ui/index.html");
const STYLE: &str = include_str!("../../ui/app.css");
const SCRIPT: &str = include_str!("../../ui/app.js");

/// Only the page's own files, only its own origin for API calls; no framing (the unblock
/// buttons must not be clickable from another site's frame).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

impl Asset {
    /// The asset served at `path`, if any.
    pub(crate) fn of(path: &str) -> Option<Asset> {
        match path {
            "/" | "/index.html" => Some(Asset::Index),
            "/ui/app.css" => Some(Asset::Style),
            "/ui/app.js" => Some(Asset::Script),
            _ => None,
        }
    }

    fn body_and_type(self) -> (&'static str, &'static str) {
        match self {
            Asset::Index => (INDEX, "text/html; charset=utf-8"),
            Asset::Style => (STYLE, "text/css; charset=utf-8"),
            Asset::Script => (SCRIPT, "text/javascript; charset=utf-8"),
        }
    }
}

/// The asset as a 200 response, never cached (a new binary brings a new page).
pub(crate) fn reply(asset: Asset) -> Reply {
    let (body, content_type) = asset.body_and_type();
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    let fixed: [(HeaderName, &'static str); 6] = [
        (CONTENT_TYPE, content_type),
        (CACHE_CONTROL, "no-store"),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_with_their_types() {
        assert_eq!(Asset::of("/"), Some(Asset::Index));
        assert_eq!(Asset::of("/ui/app.js"), Some(Asset::Script));
        assert_eq!(Asset::of("/ui/nope.js"), None);
        let r = reply(Asset::Index);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(r.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        // The page loads only its own files: nothing from another origin.
        for text in [INDEX, STYLE, SCRIPT] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http:") && !text.contains("https:") && !text.contains("//cdn"));
        }
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/app.css"));
    }
}
