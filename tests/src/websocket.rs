//! A WebSocket backend and client for the upgrade tests, framing written by hand (RFC 6455
//! §5.2: clients mask, servers do not). The backend answers by path:
//!
//! - `/echo`: `101` for `Upgrade: websocket`, then echoes every data frame; a close frame is
//!   answered with a close frame and the TCP connection is closed (the server closes first);
//! - `/bye`: `101`, then a text frame `bye` and a close frame (1000); waits for the client's
//!   close frame, then closes the TCP connection;
//! - `/raw`: `101` for any `Upgrade` protocol, then echoes raw bytes until EOF, then closes;
//! - `/plain`: `200` with the body `plain` (a backend that does not switch);
//! - `/silent`: `101`, then reads and never writes, until the connection closes.
//!
//! Every request head it got is kept ([`WsBackend::heads`]), and every connection that ended
//! with what it saw last ([`WsBackend::ends`]). `Sec-WebSocket-Accept` is the key with
//! `.accepted` appended: both ends are the test's, so only passing the header on is checked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Opcodes used here.
pub mod op {
    /// A text frame.
    pub const TEXT: u8 = 1;
    /// A binary frame.
    pub const BINARY: u8 = 2;
    /// A close frame.
    pub const CLOSE: u8 = 8;
}

/// How a backend connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEnd {
    /// It got the client's close frame, answered and closed.
    ClientClosed,
    /// It sent its close frame and got the client's answer.
    ClosedByBackend,
    /// The raw echo reached EOF.
    RawEof,
    /// The connection was closed (EOF or error) without a close handshake.
    Dropped,
}

/// The backend.
pub struct WsBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    ends: Arc<Mutex<Vec<BackendEnd>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsBackend {
    /// Starts the backend on a loopback port.
    pub async fn start() -> WsBackend {
        let listener = TcpListener::bind(crate::loopback0()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let ends = Arc::new(Mutex::new(Vec::new()));
        let (h, e) = (heads.clone(), ends.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (h, e) = (h.clone(), e.clone());
                tokio::spawn(async move {
                    let end = serve(s, &h).await;
                    e.lock().unwrap().push(end);
                });
            }
        });
        WsBackend {
            addr,
            heads,
            ends,
            task,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request heads it got, in order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// How its connections ended, in order.
    pub fn ends(&self) -> Vec<BackendEnd> {
        self.ends.lock().unwrap().clone()
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, heads: &Mutex<Vec<String>>) -> BackendEnd {
    let Some((head, rest)) = read_head(&mut s).await else {
        return BackendEnd::Dropped;
    };
    heads.lock().unwrap().push(head.clone());
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let upgrade = header(&head, "upgrade").unwrap_or_default();
    let key = header(&head, "sec-websocket-key").unwrap_or_default();
    if path == "/plain" {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            .await;
        return BackendEnd::Dropped;
    }
    let switch = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {key}.accepted\r\n\r\n"
    );
    if s.write_all(switch.as_bytes()).await.is_err() {
        return BackendEnd::Dropped;
    }
    let mut s = Prefixed { rest, inner: s };
    match path.as_str() {
        "/raw" => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => {
                        let _ = s.inner.shutdown().await;
                        return BackendEnd::RawEof;
                    }
                    Ok(n) => {
                        if s.inner.write_all(&buf[..n]).await.is_err() {
                            return BackendEnd::Dropped;
                        }
                    }
                    Err(_) => return BackendEnd::Dropped,
                }
            }
        }
        "/silent" => {
            let mut buf = [0u8; 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            BackendEnd::Dropped
        }
        "/bye" => {
            let _ = write_frame(&mut s.inner, op::TEXT, b"bye", false).await;
            let _ = write_frame(&mut s.inner, op::CLOSE, &1000u16.to_be_bytes(), false).await;
            match read_frame(&mut s).await {
                Some((op::CLOSE, _)) => {
                    let _ = s.inner.shutdown().await;
                    BackendEnd::ClosedByBackend
                }
                _ => BackendEnd::Dropped,
            }
        }
        _ => loop {
            match read_frame(&mut s).await {
                Some((op::CLOSE, payload)) => {
                    let _ = write_frame(&mut s.inner, op::CLOSE, &payload, false).await;
                    let _ = s.inner.shutdown().await;
                    return BackendEnd::ClientClosed;
                }
                Some((opcode, payload)) => {
                    if write_frame(&mut s.inner, opcode, &payload, false)
                        .await
                        .is_err()
                    {
                        return BackendEnd::Dropped;
                    }
                }
                None => return BackendEnd::Dropped,
            }
        },
    }
}

/// A stream with bytes read past the head put back in front.
pub struct Prefixed<S> {
    rest: Vec<u8>,
    /// The stream.
    pub inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `rest` read first.
    pub fn new(rest: Vec<u8>, inner: S) -> Self {
        Prefixed { rest, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.rest.is_empty() {
            let n = self.rest.len().min(buf.remaining());
            buf.put_slice(&self.rest[..n]);
            self.rest.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads a message head (up to the blank line); the head as text and the bytes read past it.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The value of header `name` (lower case) in a head, if any.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// Writes one final frame; `masked` for a client's (the mask is fixed: any mask is valid).
pub async fn write_frame<S: AsyncWrite + Unpin>(
    s: &mut S,
    opcode: u8,
    payload: &[u8],
    masked: bool,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    s.write_all(&frame).await?;
    s.flush().await
}

/// Reads one frame (unmasking a client's); `None` at EOF or on an error.
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.ok()?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.ok()?;
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.ok()?;
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        s.read_exact(&mut key).await.ok()?;
    }
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    s.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((opcode, payload))
}

/// The handshake a client sends for `path` through `host`, asking for `protocol`.
pub fn handshake(path: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: ws.example\r\nConnection: keep-alive, Upgrade\r\n\
         Upgrade: {protocol}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}
