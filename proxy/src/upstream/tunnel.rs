//! A protocol upgrade (WebSocket, or any `Upgrade` protocol) sent to a backend on a connection
//! of its own: never taken from the idle pool, never given back to it. hyper's connection is
//! built with upgrades, so when the backend answers `101 Switching Protocols` the caller gets
//! the backend's side of the tunnel from `hyper::upgrade::on(&mut response)`; any other answer
//! is an ordinary response whose body streams over that connection, which closes after it.
//!
//! The backend is chosen as for any request (round-robin over the backends that are up); a
//! connect failure marks it down and the next one is tried, as [`Upstream::send`] does.
//! `timeouts.backend_connect` bounds the connect, `timeouts.backend_response` the wait for
//! the response head. Nothing is retried once the request was handed to a connection. Over
//! TLS when the pool has it; always HTTP/1.1, so a pool with `protocol = "http2"` takes no
//! upgrade (502).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::{ConnectFailed, Dial, Opened, BACKEND_BUFFER};
use super::retry::Tried;
use super::tally::{Cause, Outcome};
use super::{
    origin_form, outcome_of, Answered, BackendBody, BackendError, Outgoing, Upstream, UpstreamError,
};

impl<B: Outgoing> Upstream<B> {
    /// Sends `req` (headers rewritten, `Connection: upgrade` and `Upgrade` set) to the next
    /// backend that is up, on a fresh connection that is never pooled, and returns its answer
    /// (`pool` is always `None`). A `101` answer carries the backend's upgraded IO
    /// (`hyper::upgrade::on`). `client` is the client's address as the limiter keys it (the
    /// pool's `client_hash` hashes it).
    pub async fn send_upgrade(
        &self,
        mut req: Request<B>,
        client: IpAddr,
    ) -> Result<Answered, UpstreamError> {
        origin_form(req.uri_mut());
        if self.backends.iter().any(|b| b.shared.is_some()) {
            // An HTTP/2 pool: its backends take no HTTP/1.1 upgrade.
            return Err(UpstreamError::Unreachable);
        }
        let mut tried = Tried::default();
        let (mut index, client) = self.first_choice(client);
        let sender = loop {
            let backend = &self.backends[index];
            let name = backend.authority.as_str();
            match connect(&backend.target, self.connect_timeout).await {
                Ok(sender) => break sender,
                Err(error) => {
                    backend.stats.connect_failed(name, &self.rules, &error);
                    tried.add(index);
                    index = self
                        .untried(index, client, &tried)
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
                    response: response.map(BackendBody::Hyper),
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
                Err(UpstreamError::Failed(BackendError::Hyper(e)))
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

/// A connection to `dial` (TCP, and TLS when the pool has it) within `timeout`, and the
/// HTTP/1 handshake of a connection that supports upgrades; its task is spawned (it ends with
/// the connection, or hands the IO over at a `101`). Errors in words, for the backend's log
/// line.
async fn connect<B: Outgoing>(
    dial: &Dial,
    timeout: Duration,
) -> Result<http1::SendRequest<B>, String> {
    match dial.open(timeout).await {
        Ok(Opened::Plain(s)) => handshake(s).await,
        Ok(Opened::Tls(s)) => handshake(s).await,
        Err(ConnectFailed(e)) => Err(e),
    }
}

async fn handshake<B: Outgoing, IO>(io: IO) -> Result<http1::SendRequest<B>, String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(BACKEND_BUFFER)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend upgrade connection ended with an error");
        }
    });
    Ok(sender)
}
