//! Serving one request: rewrite it for the backend, send it, and turn the answer (or the
//! failure) into the client's response.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::account::forwarded::Forwarded;
use crate::account::meter::{InFlightRequest, Meter};
use crate::account::timed::ChargedTo;
use crate::http::body::{self, ProxyBody, Upload};
use crate::http::finish::{Access, Finish};
use crate::http::recent::{Named, Seen};
use crate::http::upgrade::{self, Wanted};
use crate::http::Router;
use crate::http::{headers, host};
use crate::limits::BlockAction;
use crate::upstream::{Answered, UpstreamError};

/// What every connection shares: the backends, the limiter and the settings requests need.
pub struct Services {
    /// The backend pools and the routes to them, swapped whole by a config reload (a request
    /// in flight keeps the pools it started with).
    pub upstream: arc_swap::ArcSwap<Router>,
    /// Log one line per request (`log.access`, reloadable).
    pub access_log: std::sync::atomic::AtomicBool,
    /// The limiter every connection reports to.
    pub limiter: Arc<zgate_limiter::Limiter>,
    /// The limiter's clock.
    pub clock: crate::clock::Clock,
    /// What a block does, memory costs (reloadable: new connections get the new values).
    pub limits: arc_swap::ArcSwap<crate::limits::ProxyLimits>,
    /// Monitor mode's would-block lines, one per client per minute.
    pub would_block_log: Arc<crate::account::would_block::WouldBlockLog>,
    /// Traffic counters for `/metrics`.
    pub stats: Arc<crate::stats::Stats>,
    /// `[client_ip]`: trusted proxies and the forwarding header (reloadable: new connections
    /// get the new rules).
    pub identity: arc_swap::ArcSwap<crate::http::identity::Identity>,
}

/// The connection a request arrived on, shared by its requests.
pub struct ConnInfo {
    /// What every connection shares.
    pub shared: Arc<Services>,
    /// The client's address as an `X-Forwarded-For` element, made once.
    pub forwarded_for: HeaderValue,
    /// The connection's client: its socket peer, or its PROXY protocol header's address.
    pub peer: SocketAddr,
    /// Whether that client is a trusted proxy (its requests' forwarding headers are believed
    /// and appended to; it is never blocked).
    pub trusted: bool,
    /// The `[client_ip]` rules in force when the connection started.
    pub identity: Arc<crate::http::identity::Identity>,
    /// The clients its requests' forwarding headers named lately (a trusted proxy's).
    pub recent: crate::http::recent::Recent,
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// The connection's link to the limiter.
    pub meter: Arc<Meter>,
    /// The client socket, to reset it on a block.
    pub fd: std::os::fd::RawFd,
    /// `timeouts.body_read`: the longest pause allowed within a request body.
    pub body_read: std::time::Duration,
    /// `timeouts.body_min_rate`: bytes per second a request body must average over the time
    /// zgate waits on it (0: off).
    pub body_min_rate: u64,
    /// `timeouts.idle`: a tunnel (an upgraded connection) with no byte moving either way for
    /// this long is closed (zero: never).
    pub idle: std::time::Duration,
    /// HTTP/1: the tunnel a `101` opened, left for the connection's task to run once hyper
    /// has written the `101` (see `upgrade.rs`).
    pub tunnel: crate::http::upgrade::TunnelSlot,
}

/// Completes when the connection is cut (its client blocked), for a request of `version`.
///
/// An HTTP/1 request's handler runs in its connection's task, where the connection's driver
/// (`conn/drive.rs`) waits on the kill switch: the kill wakes that task, whose poll polls the
/// handler too. So a look at the flag at each poll is enough, and the request spares a waiter
/// of its own (a lock to join the switch's list and one to leave it: about 1 000 instructions
/// of an HTTP/1.1 request's 26 600, callgrind). An HTTP/2 stream's handler runs in a task of its
/// own, which only its own waiter wakes.
async fn cut(meter: &Meter, version: Version) {
    if version == Version::HTTP_2 {
        return meter.killed().await;
    }
    std::future::poll_fn(|_| {
        if meter.is_killed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Proxies `req` to a backend and returns what the client gets. The request is finished
/// (duration measured, access line logged: see [`Finish`]) when the response's last byte has
/// gone or the response is dropped.
pub async fn handle(conn: &Arc<ConnInfo>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let shared = &*conn.shared;
    shared.stats.request();
    let started = Instant::now();
    let mut access = shared
        .access_log
        .load(Ordering::Relaxed)
        .then(|| access_fields(&req));
    let client_version = req.version();

    let meter = &conn.meter;
    let wanted = upgrade::wanted(&req);
    let method = req.method().clone();
    // An extended CONNECT is a GET to the backend.
    let idempotent = wanted.as_ref().is_some_and(Wanted::is_connect)
        || matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        );
    // Whose request this is: the connection's client, or the one a trusted proxy names.
    let seen = if conn.trusted {
        let recent = &conn.recent;
        recent.client(
            &conn.identity,
            req.headers_mut(),
            conn.peer.ip(),
            &conn.forwarded_for,
        )
    } else {
        Seen::default()
    };
    let named = seen.named;
    if let Some(a) = access.as_deref_mut() {
        a.forwarded_client = named.as_ref().map(|n| n.ip);
    }
    let (mut in_flight, refused) = match &named {
        None => (meter.request_started(idempotent), false),
        Some(n) => match conn
            .recent
            .request_started(n, meter, &shared.limiter, idempotent)
        {
            Ok(r) => (Some(r), false),
            Err(r) => (Some(r), true),
        },
    };
    if http_body::Body::is_end_stream(req.body()) {
        meter.message_done();
    }
    // Decided once, before anything is stripped: checked here, applied by `rewrite_request`.
    let backend_host = host::backend_host(req.version(), req.uri(), req.headers());
    let mut response = if in_flight.is_none() || meter.is_killed() {
        blocked_response(meter, client_version)
    } else if refused {
        forwarded_blocked_response(meter)
    } else if method == Method::CONNECT && wanted.is_none() {
        error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n")
    } else if let Err(e) = backend_host {
        bad_request(e.message(), client_version)
    } else {
        let bytes_in = access.as_ref().map(|a| a.bytes_in.clone());
        let charged = in_flight.as_ref().and_then(|r| r.forwarded()).cloned();
        // A tunnel's CPU is charged to a forwarded client as its request's was.
        let tunnel_charged = if wanted.is_some() {
            charged.clone()
        } else {
            None
        };
        let on_client = wanted.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let forwarded = Forwarding {
            named: named.as_deref(),
            chain_set: seen.chain_set,
            charged: charged.as_ref(),
        };
        let host = backend_host.ok().flatten();
        let mut upstream_req = rewrite_request(req, host, conn, bytes_in, forwarded);
        if let Some(w) = &wanted {
            upgrade::to_backend(&mut upstream_req, w);
        }
        if let Some(a) = access.as_deref_mut() {
            a.host = upstream_req.headers().get(header::HOST).cloned();
        }
        let router = shared.upstream.load_full();
        let authority = upstream_req
            .headers()
            .get(header::HOST)
            .map_or(&b""[..], HeaderValue::as_bytes);
        match router.route(authority, upstream_req.uri().path()) {
            None => error_response(StatusCode::NOT_FOUND, "not found: no route\n"),
            Some(upstream) => {
                if let Some(a) = access.as_deref_mut() {
                    a.pool = Some(upstream.name().to_owned());
                }
                // The client as the limiter keys it: `client_hash` keeps it on one backend.
                let client = match &charged {
                    Some(forwarded) => forwarded.handle().client(),
                    None => meter.accounting().conn().client(),
                }
                .addr();
                let tunnelled = wanted.is_some();
                let send = async {
                    if tunnelled {
                        upstream.send_upgrade(upstream_req, client).await
                    } else {
                        upstream.send(upstream_req, client).await
                    }
                };
                let sent = tokio::select! {
                    biased;
                    _ = cut(meter, client_version) => None,
                    r = ChargedTo::new(send, charged) => Some(r),
                };
                if let Some(request) = in_flight.as_mut() {
                    request.answered();
                }
                match sent {
                    None => blocked_response(meter, client_version),
                    Some(Ok(answered)) => {
                        if let Some(a) = access.as_deref_mut() {
                            let name = upstream.backend_name(answered.backend).to_owned();
                            a.upstream = Some((name, answered.waited));
                        }
                        let status = answered.response.status();
                        match (&wanted, on_client) {
                            (Some(w), Some(on_client))
                                if status == StatusCode::SWITCHING_PROTOCOLS =>
                            {
                                let response = answered.response;
                                upgrade::switch(
                                    conn,
                                    w,
                                    on_client,
                                    response,
                                    in_flight,
                                    tunnel_charged,
                                )
                            }
                            // A 2xx would open a tunnel to a backend that did not switch.
                            (Some(Wanted::Connect(_)), _) if status.is_success() => error_response(
                                StatusCode::BAD_GATEWAY,
                                "bad gateway: the backend did not switch protocols\n",
                            ),
                            _ => rewrite_response(answered, client_version, meter, in_flight),
                        }
                    }
                    Some(Err(e)) => failed_response(shared, conn.peer, e, client_version),
                }
            }
        }
    };
    shared.stats.response(response.status());
    if let Some(a) = access.as_deref_mut() {
        a.status = response.status().as_u16();
    }
    let mut finish = Finish::new(conn.clone(), started, access);
    match response.body_mut() {
        ProxyBody::Response { finish: slot, .. } => *slot = Some(finish),
        // zgate's own small answer: it is as good as sent.
        own => {
            let len = http_body::Body::size_hint(own).exact().unwrap_or(0);
            finish.sent(usize::try_from(len).unwrap_or(usize::MAX));
        }
    }
    response
}

/// The access line's fields known from the request head.
fn access_fields(req: &Request<Incoming>) -> Box<Access> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Box::new(Access {
        method: req.method().clone(),
        target: target.to_owned(),
        version: req.version(),
        host: req.headers().get(header::HOST).cloned(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        status: 0,
        pool: None,
        upstream: None,
        bytes_in: Arc::default(),
        forwarded_client: None,
    })
}

/// The answer to a request that got no response from the backend, counted by kind.
fn failed_response(
    shared: &Services,
    peer: SocketAddr,
    e: UpstreamError,
    client_version: Version,
) -> Response<ProxyBody> {
    let stats = &shared.stats;
    match e {
        UpstreamError::Unreachable => {
            stats.backend_unreachable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, "no backend reachable");
            error_response(
                StatusCode::BAD_GATEWAY,
                "bad gateway: backend unreachable\n",
            )
        }
        UpstreamError::Timeout => {
            stats.backend_timeout.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, "backend response timed out");
            error_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n")
        }
        UpstreamError::Failed(e) if body::is_client_body_error(&e) => {
            stats.client_body_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %peer, error = %e, "malformed request body");
            bad_request("bad request: malformed body\n", client_version)
        }
        UpstreamError::Failed(e) if body::is_body_timeout(&e) => {
            stats.client_body_timeout.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %peer, "request body timed out");
            body_timeout_response(client_version)
        }
        UpstreamError::Failed(e) => {
            stats.backend_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = %peer, error = %e, "backend request failed");
            error_response(StatusCode::BAD_GATEWAY, "bad gateway\n")
        }
    }
}

/// The request as the backend must see it: origin-form, HTTP/1.1, hop-by-hop headers removed,
/// forwarding headers set (see `headers::set_forwarded`), `Host` set to `backend_host` (what
/// [`host::backend_host`] decided from the head as it came: the target's authority wins, and
/// `Connection` cannot remove it). `bytes_in` counts the
/// body's bytes for the access log; `forwarded` says whose request it is when a trusted proxy
/// named a client.
fn rewrite_request(
    req: Request<Incoming>,
    backend_host: Option<HeaderValue>,
    conn: &ConnInfo,
    bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    forwarded: Forwarding<'_>,
) -> Request<ProxyBody> {
    let Forwarding {
        named,
        chain_set,
        charged,
    } = forwarded;
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    host::apply(h, backend_host);
    if parts.version == Version::HTTP_2 {
        headers::join_cookies(h);
    }
    let hop = headers::Hop {
        peer: &conn.forwarded_for,
        peer_ip: conn.peer.ip(),
        client: named.map_or(&conn.forwarded_for, |n| &n.value),
        chain_set,
        trusted: conn.trusted,
        tls: conn.tls,
    };
    headers::set_forwarded(h, &hop);
    headers::append_via(h, headers::via_token(parts.version));
    parts.version = Version::HTTP_11;
    let upload = (!http_body::Body::is_end_stream(&body)).then(|| {
        let upload = Upload::new(conn.body_read, conn.body_min_rate);
        match charged {
            Some(client) => upload.charging(client.handle().clone()),
            None => upload,
        }
    });
    let body = ProxyBody::Request {
        inner: body,
        meter: conn.meter.clone(),
        done: false,
        upload,
        forwarded: bytes_in,
    };
    Request::from_parts(parts, body)
}

/// The client a trusted proxy named for a request, as [`rewrite_request`] needs it.
struct Forwarding<'a> {
    /// Whom the header names (its `X-Real-IP` value); `None`: the peer.
    named: Option<&'a Named>,
    /// `X-Forwarded-For` is already the chain to send ([`Seen::chain_set`]).
    chain_set: bool,
    /// The client as the connection charges it, which the body's chunks are charged to
    /// (metric F).
    charged: Option<&'a Arc<Forwarded>>,
}

fn rewrite_response(
    answered: Answered,
    client_version: Version,
    meter: &Arc<Meter>,
    request: Option<InFlightRequest>,
) -> Response<ProxyBody> {
    let Answered { response, pool, .. } = answered;
    let mut request = request;
    if let (Some(_), Some(r)) = (&pool, &mut request) {
        // The body streams over the backend connection, held for this client until it ends.
        r.holds_backend_buffer(crate::upstream::BACKEND_BUFFER_HELD as u64);
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, headers::via_token(Version::HTTP_11));
    parts.version = client_version;
    let body = ProxyBody::Response {
        inner: body,
        meter: meter.clone(),
        request,
        pool,
        finish: None,
    };
    Response::from_parts(parts, body)
}

/// The answer to a request of a client that is blocked. With `block_action = "reply"` the
/// client reads it; with `"reset"` the connection is reset before it can (the driver does that).
fn blocked_response(meter: &Meter, version: Version) -> Response<ProxyBody> {
    let status = match meter.limits().block_action {
        BlockAction::Reply(status) => status,
        BlockAction::Reset => StatusCode::FORBIDDEN,
    };
    let mut resp = Response::new(ProxyBody::full("blocked\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A 400 made by zgate: the client's request is at fault. Its body may not have been read to
/// the end, so an HTTP/1 connection cannot carry another request.
fn bad_request(text: &'static str, version: Version) -> Response<ProxyBody> {
    let mut resp = error_response(StatusCode::BAD_REQUEST, text);
    if version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The answer to a request of a forwarded client that is blocked: `limits.block_status` (403
/// with `block_action = "reset"`), and the connection stays up, since it carries other
/// clients' requests.
fn forwarded_blocked_response(meter: &Meter) -> Response<ProxyBody> {
    let status = match meter.limits().block_action {
        BlockAction::Reply(status) => status,
        BlockAction::Reset => StatusCode::FORBIDDEN,
    };
    let mut resp = error_response(StatusCode::FORBIDDEN, "blocked\n");
    *resp.status_mut() = status;
    resp
}

/// The answer to a request whose body paused longer than `timeouts.body_read`. Its body was
/// not read to the end, so an HTTP/1 connection cannot carry another request: say so.
fn body_timeout_response(version: Version) -> Response<ProxyBody> {
    let mut resp = error_response(StatusCode::REQUEST_TIMEOUT, "request body timed out\n");
    if version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A small plain-text response made by zgate itself.
pub fn error_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
