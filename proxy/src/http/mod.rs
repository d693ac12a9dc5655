//! Requests: what zgate does with one request between the client's connection and a backend.
//!
//! - `service.rs`: serving one request: rewrite, send upstream, map the outcome to a response
//!   (blocked, 502, 504, 408);
//! - `identity.rs`: who a request's client is, from `[client_ip]`: the connection's, or the
//!   one a trusted proxy's forwarding header names;
//! - `forwarded.rs`: the client a forwarding header names (sans-IO);
//! - `recent.rs`: per connection, the clients a trusted proxy's header values named lately
//!   (a hit spares the parse, the limiter's table lookup and the formatting);
//! - `headers.rs`: hop-by-hop headers removed, forwarding headers (`X-Forwarded-*`, `Via`)
//!   added;
//! - `finish.rs`: a request's end (its response's last byte, or its drop): the duration
//!   histogram and the access log line;
//! - `host.rs`: the `Host` the backend gets (RFC 9112 §3.2, RFC 9113 §8.3.1), or why the
//!   request gets 400;
//! - `body.rs`: the body type both ways: streamed and metered for the client, or zgate's own;
//!   the request body's pause timer; a client's malformed body told apart from a backend's
//!   failure;
//! - `min_rate.rs`: `timeouts.body_min_rate`, the minimum rate of a request body, sans-IO;
//! - `upgrade.rs`: protocol upgrades (WebSocket, HTTP/2 extended CONNECT): which requests are
//!   tunnelled, the backend's upgrade request, the client's `101` (or `200`), the tunnel and
//!   what it counts in the limiter;
//! - `splice.rs`: a tunnel's bytes copied both ways, with backpressure, half-close and
//!   `timeouts.idle`.

pub mod body;
pub mod finish;
pub mod forwarded;
pub mod headers;
pub mod host;
pub mod identity;
pub mod min_rate;
pub mod recent;
pub mod service;
pub mod splice;
pub mod upgrade;

/// One backend pool as the proxy uses it: sending [`body::ProxyBody`] requests.
pub type Upstream = crate::upstream::Upstream<body::ProxyBody>;

/// The pools and routes as the proxy uses them.
pub type Router = crate::upstream::Router<body::ProxyBody>;
