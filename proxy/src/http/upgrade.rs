//! Protocol upgrades (WebSocket, or any `Upgrade` protocol): which requests ask for one, the
//! upgrade request the backend gets, and, when the backend switches protocols, the client's
//! answer and the tunnel that then carries the bytes both ways.
//!
//! What is tunnelled (RFC 9110 §7.8):
//! - an HTTP/1.1 request with `Upgrade` and the `upgrade` token in `Connection`, without a
//!   body: the backend gets `Connection: upgrade` and the client's `Upgrade` (its
//!   `Sec-WebSocket-*` headers are end-to-end and pass as they are), on a connection of its
//!   own (`upstream/tunnel.rs`). Its `101` goes to the client with the backend's `Upgrade`,
//!   then the bytes are spliced (`splice.rs`). Any other answer is an ordinary response.
//! - an HTTP/2 extended CONNECT (RFC 8441, `:protocol`, e.g. `websocket`): the backend gets an
//!   HTTP/1.1 `GET` with `Upgrade: <protocol>` (and, for `websocket`, a fresh
//!   `Sec-WebSocket-Key`; its `Sec-WebSocket-Accept` is not passed back, HTTP/2 has none); its
//!   `101` becomes the client's `200` and the stream carries the bytes. A backend that answers
//!   a 2xx other than `101` gets the client a `502` (a 2xx would open a tunnel to nowhere);
//!   other statuses pass through.
//!
//! What is not: an `Upgrade` on a request with a body (a server may ignore `Upgrade`, §7.8:
//! the request goes on as an ordinary one, without it, so the bytes after its body can never
//! be taken for another protocol's); on HTTP/1.0 (§7.8: must be ignored); on an HTTP/2
//! request other than an extended CONNECT (`Upgrade` is connection-specific, which RFC 9113
//! §8.2.2 makes malformed: h2 refuses the stream). A plain `CONNECT` (a forward proxy's) is
//! answered 405 by the service.
//!
//! In the limiter a tunnel is what its request was, for as long as it is open: its connection
//! stays counted (metric C), its request stays in flight (R and A: it is not released at the
//! `101`), the splice's two buffers ([`SPLICE_HELD`]) are charged to its client's memory (M)
//! with the request's per-stream cost, and the splice's polls are timed and charged to the
//! client (P): an HTTP/1 tunnel runs in the connection's own task, an HTTP/2 one in a task of
//! its own. Once a tunnel is open, its bytes are not HTTP messages: the HTTP/1 read tap stops
//! scoring fragmentation (F) and holding read bytes for the connection (the splice buffers
//! are the memory), and an HTTP/2 tunnel's DATA payloads are released as the splice reads
//! them. (An HTTP/2 tunnel's DATA frames still count towards F as one long message of their
//! stream: the read tap sees frame headers only and cannot tell a tunnel's stream.)
//!
//! A block while a tunnel is open resets an HTTP/1 client's socket (the tunnel holds it) and
//! ends an HTTP/2 one's stream (the connection's driver sends GOAWAY and closes).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use crate::account::forwarded::Forwarded;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::headers;
use super::service::ConnInfo;
use super::splice::{splice, End, SPLICE_HELD};
use crate::account::meter::InFlightRequest;
use crate::account::timed::{ChargedTo, Timed};
use crate::upstream::BackendBody;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The upgrade a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// HTTP/1.1 `Upgrade`: the protocols the client named, as it named them.
    Http1(HeaderValue),
    /// HTTP/2 extended CONNECT (RFC 8441): its `:protocol`.
    Connect(HeaderValue),
}

impl Wanted {
    /// Whether the request is an HTTP/2 extended CONNECT.
    pub fn is_connect(&self) -> bool {
        matches!(self, Wanted::Connect(_))
    }
}

/// The upgrade `req` asks for, if zgate tunnels it (see the module docs for which ones).
pub fn wanted(req: &Request<Incoming>) -> Option<Wanted> {
    if req.version() == Version::HTTP_2 {
        if req.method() != Method::CONNECT {
            return None;
        }
        let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
        return HeaderValue::from_str(protocol.as_str())
            .ok()
            .map(Wanted::Connect);
    }
    if req.version() != Version::HTTP_11
        || req.method() == Method::CONNECT
        || !http_body::Body::is_end_stream(req.body())
        || !connection_has_upgrade(req.headers())
    {
        return None;
    }
    let mut values = req.headers().get_all(header::UPGRADE).iter();
    let first = values.next()?;
    // One `Upgrade` line: several would have to be joined, and nobody sends them.
    if values.next().is_some() || first.is_empty() {
        return None;
    }
    Some(Wanted::Http1(first.clone()))
}

/// Whether `Connection` names the `upgrade` token.
fn connection_has_upgrade(h: &http::HeaderMap) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    })
}

/// Makes the rewritten request (hop-by-hop headers already stripped) the backend's upgrade
/// request: `Connection: upgrade` and `Upgrade`; an extended CONNECT becomes a `GET`.
pub fn to_backend(req: &mut Request<ProxyBody>, wanted: &Wanted) {
    let protocol = match wanted {
        Wanted::Http1(p) => p.clone(),
        Wanted::Connect(p) => {
            *req.method_mut() = Method::GET;
            if p.as_bytes().eq_ignore_ascii_case(b"websocket") {
                req.headers_mut()
                    .insert(SEC_WEBSOCKET_KEY.clone(), websocket_key());
            }
            p.clone()
        }
    };
    let h = req.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// Turns a backend's `101` into the client's answer and opens the tunnel: at once for HTTP/2
/// (a task of its own, charged to the client), or, for HTTP/1, handed to the connection's task
/// ([`ConnInfo::tunnel`]), which runs it once hyper has written the `101` and let go of the
/// connection. `request` stays in flight until the tunnel ends; `charged` is a forwarded
/// client's handle, also charged the tunnel's CPU.
pub fn switch(
    conn: &Arc<ConnInfo>,
    wanted: &Wanted,
    client: OnUpgrade,
    mut response: Response<BackendBody>,
    mut request: Option<InFlightRequest>,
    charged: Option<Arc<Forwarded>>,
) -> Response<ProxyBody> {
    let backend = hyper::upgrade::on(&mut response);
    let answer = client_answer(response, wanted);
    if let Some(r) = request.as_mut() {
        r.holds_backend_buffer(SPLICE_HELD as u64);
    }
    let h2 = wanted.is_connect();
    let meter = conn.meter.clone();
    let idle = conn.idle;
    let peer = conn.peer;
    // HTTP/1: the client's socket, reset if the client is blocked while the tunnel holds it.
    // (HTTP/2's connection is the driver's to end, with GOAWAY.)
    let reset_fd = (!h2).then_some(conn.fd);
    let tunnel = async move {
        // In flight, with the splice's buffers charged, until the tunnel ends.
        let _request = request;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "upgrade failed");
                return;
            }
        };
        if !h2 {
            // The connection's bytes are the tunnel's from now on, not HTTP messages.
            meter.enter_tunnel();
        }
        let forwarded = h2.then(|| meter.clone());
        let mut splice = std::pin::pin!(splice(
            TokioIo::new(client),
            TokioIo::new(backend),
            idle,
            forwarded
        ));
        let end = tokio::select! {
            biased;
            _ = meter.killed() => None,
            end = splice.as_mut() => Some(end),
        };
        let Some(end) = end else {
            // Blocked: the client's socket is still open in `splice`, dropped right after.
            if let Some(fd) = reset_fd {
                crate::conn::reset_on_close(fd);
            }
            return;
        };
        match end {
            End::Closed { up, down } => {
                tracing::debug!(client = %peer, up, down, "tunnel closed")
            }
            End::Idle => tracing::debug!(client = %peer, "tunnel idle; closed"),
            End::Failed(e) => tracing::debug!(client = %peer, error = %e, "tunnel failed"),
        }
    };
    let tunnel = ChargedTo::new(tunnel, charged);
    if h2 {
        tokio::spawn(Timed::new(tunnel, conn.meter.clone()));
    } else {
        conn.tunnel.put(Box::pin(tunnel));
    }
    answer
}

/// The client's answer to a backend's `101`: `101` with the backend's `Upgrade` (HTTP/1.1),
/// or `200` (HTTP/2 extended CONNECT, whose `Sec-WebSocket-Accept` answers a key the client
/// never sent); hop-by-hop headers stripped, `Via` added, no body.
fn client_answer(response: Response<BackendBody>, wanted: &Wanted) -> Response<ProxyBody> {
    let (mut parts, _) = response.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, headers::via_token(Version::HTTP_11));
    match wanted {
        Wanted::Http1(asked) => {
            parts.version = Version::HTTP_11;
            let h = &mut parts.headers;
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, upgrade.unwrap_or_else(|| asked.clone()));
        }
        Wanted::Connect(_) => {
            parts.version = Version::HTTP_2;
            parts.status = StatusCode::OK;
            parts.headers.remove(&SEC_WEBSOCKET_ACCEPT);
        }
    }
    Response::from_parts(parts, ProxyBody::empty())
}

/// A future the connection's task runs.
pub type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where an HTTP/1 connection's service leaves a tunnel for the connection's task to run
/// once hyper lets go of the connection (after writing the `101`).
#[derive(Default)]
pub struct TunnelSlot(Mutex<Option<Tunnel>>);

impl TunnelSlot {
    /// Leaves `tunnel` for the connection's task.
    pub fn put(&self, tunnel: Tunnel) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(tunnel);
    }

    /// The tunnel left, if any.
    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A `Sec-WebSocket-Key` (RFC 6455 §4.1): 16 random bytes in base64.
fn websocket_key() -> HeaderValue {
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        // Each `RandomState` is seeded afresh: its first output is a random 64-bit value.
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    let text = base64(&bytes);
    // Base64's alphabet is valid header text.
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_websocket_key_is_16_bytes_and_differs_each_time() {
        let a = websocket_key();
        let b = websocket_key();
        assert_eq!(a.len(), 24);
        assert!(a.to_str().unwrap().ends_with("=="));
        assert_ne!(a, b);
    }

    #[test]
    fn the_upgrade_token_is_found_among_others_in_any_case() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(connection_has_upgrade(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!connection_has_upgrade(&h));
    }
}
