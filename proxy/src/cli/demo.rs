//! The embedded demo backend: a small HTTP/1.1 server built into the binary, used by
//! `zgate demo`, by `zgate backend` (the benchmarks' backend) and by the end-to-end tests.
//!
//! Routes:
//! - `GET /`: a greeting.
//! - `POST /echo` (any method): the request body, streamed back as it arrives.
//! - `POST /discard`: reads the whole body and answers with its length in bytes.
//! - `GET /bytes?n=N`: N bytes of a fixed pattern (byte `i` is `i % 251`), streamed.
//! - `GET /slow?ms=N` (any method): reads the request body, waits N milliseconds, then
//!   answers `slept N ms`.
//! - `GET /headers`: the request headers as text, one `name: value` per line.
//! - `GET /status/NNN`: an empty response with that status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::http::body::{BodyError, ProxyBody};

/// The pattern `/bytes` streams: byte `i` of the body is `i % 251`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

const CHUNK: usize = 64 * 1024;

/// The pattern, long enough that any chunk is one slice of it (no copy per chunk).
fn pattern() -> &'static Bytes {
    static PATTERN: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..(CHUNK + 251) as u64).map(pattern_byte).collect())
}

/// A running demo backend.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    task: JoinHandle<()>,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    /// Binds `addr` (port 0 picks one) and serves until dropped.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service_fn(route))
                        .await;
                });
            }
        });
        Ok(Backend {
            addr,
            task,
            accepted,
        })
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn route(req: Request<Incoming>) -> Result<Response<DemoBody>, Infallible> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let resp = match path {
        "/" => text(StatusCode::OK, "hello from the zgate demo backend\n".into()),
        "/echo" => Response::new(DemoBody::Proxy(ProxyBody::Incoming(req.into_body()))),
        "/discard" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "body failed\n".into())),
                }
            }
            text(StatusCode::OK, format!("{total}\n"))
        }
        "/bytes" => match param(query, "n") {
            Some(n) => Response::new(DemoBody::Pattern { sent: 0, len: n }),
            None => text(StatusCode::BAD_REQUEST, "usage: /bytes?n=N\n".into()),
        },
        "/slow" => {
            let ms = param(query, "ms").unwrap_or(1000);
            // Read the request body first (a POST here keeps its connection reusable).
            if req.into_body().collect().await.is_err() {
                return Ok(text(StatusCode::BAD_REQUEST, "body failed\n".into()));
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms\n"))
        }
        "/headers" => {
            let mut out = String::new();
            for (name, value) in req.headers() {
                out.push_str(name.as_str());
                out.push_str(": ");
                out.push_str(&String::from_utf8_lossy(value.as_bytes()));
                out.push('\n');
            }
            text(StatusCode::OK, out)
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            match code {
                Some(code) => text(code, String::new()),
                None => text(StatusCode::BAD_REQUEST, "usage: /status/NNN\n".into()),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(resp)
}

fn text(status: StatusCode, body: String) -> Response<DemoBody> {
    let mut resp = Response::new(DemoBody::Proxy(ProxyBody::full(body)));
    *resp.status_mut() = status;
    resp
}

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The demo backend's response bodies.
pub enum DemoBody {
    /// An echoed request body, or a fixed one: the proxy's own body type serves.
    Proxy(ProxyBody),
    /// `len` bytes of the pattern, `sent` so far.
    Pattern {
        /// Bytes produced so far.
        sent: u64,
        /// Total length.
        len: u64,
    },
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            DemoBody::Proxy(b) => Pin::new(b).poll_frame(cx),
            DemoBody::Pattern { sent, len } => {
                if *sent >= *len {
                    return Poll::Ready(None);
                }
                let n = ((*len - *sent) as usize).min(CHUNK);
                let offset = (*sent % 251) as usize;
                let chunk = pattern().slice(offset..offset + n);
                *sent += n as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Proxy(b) => b.is_end_stream(),
            DemoBody::Pattern { sent, len } => sent >= len,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Proxy(b) => b.size_hint(),
            DemoBody::Pattern { sent, len } => SizeHint::with_exact(len - sent),
        }
    }
}
