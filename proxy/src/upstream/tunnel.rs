//! A protocol upgrade (WebSocket, or any `Upgrade` protocol) sent to a backend on a connection
//! of its own: never taken from the idle pool, never given back to it. hyper's connection is
//! built with upgrades, so when the backend answers `101 Switching Protocols` the caller gets
//! the backend's side of the tunnel from `hyper::upgrade::on(&mut response)`; any other answer
//! is an ordinary response whose body streams over that connection, which closes after it.
//!
//! The backend is chosen as for any request (round-robin over the backends that are up); a
//! connect failure marks it down and the next one is tried, as [`Upstream::send`] does.
//! `timeouts.backend_connect` bounds the connect, `timeouts.backend_response` the wait for
//! the response head. Nothing is retried once the request was handed to a connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connect::{Target, BACKEND_BUFFER};
use super::retry::Tried;
use super::tally::{Cause, Outcome};
use super::{origin_form, outcome_of, Answered, Outgoing, Upstream, UpstreamError};

impl<B: Outgoing> Upstream<B> {
    /// Sends `req` (headers rewritten, `Connection: upgrade` and `Upgrade` set) to the next
    /// backend that is up, on a fresh connection that is never pooled, and returns its answer
    /// (`pool` is always `None`). A `101` answer carries the backend's upgraded IO
    /// (`hyper::upgrade::on`).
    pub async fn send_upgrade(&self, mut req: Request<B>) -> Result<Answered<B>, UpstreamError> {
        origin_form(req.uri_mut());
        let n = self.backends.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let mut tried = Tried::default();
        let mut index = self.pick(start, &tried).unwrap_or(0);
        let sender = loop {
            let backend = &self.backends[index];
            let name = backend.authority.as_str();
            match connect(&backend.target, self.connect_timeout).await {
                Ok(sender) => break sender,
                Err(error) => {
                    tracing::debug!(backend = name, error, "backend connect failed (upgrade)");
                    backend
                        .stats
                        .record(name, &self.rules, Outcome::Failed(Cause::Connect));
                    tried.add(index);
                    index = self
                        .untried(index, &tried)
                        .ok_or(UpstreamError::Unreachable)?;
                }
            }
        };
        let backend = &self.backends[index];
        let name = backend.authority.as_str();
        let mut sender = sender;
        let sent_at = Instant::now();
        let answer = tokio::time::timeout(self.response_timeout, sender.send_request(req)).await;
        match answer {
            Ok(Ok(response)) => {
                let waited = sent_at.elapsed();
                backend.stats.answered(waited);
                let outcome = outcome_of(response.status());
                backend.stats.record(name, &self.rules, outcome);
                Ok(Answered {
                    response,
                    pool: None,
                    backend: index,
                    waited,
                })
            }
            Ok(Err(e)) => {
                backend.stats.failed();
                if !e.is_user() {
                    let failed = Outcome::Failed(Cause::Reset);
                    backend.stats.record(name, &self.rules, failed);
                }
                Err(UpstreamError::Failed(e))
            }
            Err(_) => {
                backend.stats.timed_out();
                let timeout = Outcome::Failed(Cause::Timeout);
                backend.stats.record(name, &self.rules, timeout);
                Err(UpstreamError::Timeout)
            }
        }
    }
}

/// TCP connect to `target` within `timeout`, `TCP_NODELAY`, and the HTTP/1 handshake of a
/// connection that supports upgrades; its task is spawned (it ends with the connection, or
/// hands the IO over at a `101`). Errors in words, for the backend's log line.
async fn connect<B: Outgoing>(
    target: &Target,
    timeout: Duration,
) -> Result<http1::SendRequest<B>, String> {
    let connect = async {
        match target {
            Target::Addr(addr) => TcpStream::connect(*addr).await,
            Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    let _ = stream.set_nodelay(true);
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(BACKEND_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = ?peer, error = %e, "backend upgrade connection ended with an error");
        }
    });
    Ok(sender)
}
