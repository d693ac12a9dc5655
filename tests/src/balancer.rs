//! An L4 load balancer for the tests: it accepts on `127.0.0.1`, opens a connection to zgate,
//! sends a PROXY protocol header naming the client's address, then copies bytes both ways.
//! A connection zgate cuts is cut on the client's side too (reset when zgate reset it), so
//! the attack lab sees the same verdicts through it as direct.
//!
//! Also the headers themselves, for tests that speak to a `proxy_protocol` listener directly.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// Binary, command `PROXY`, TCP.
    V2,
}

/// The header announcing a connection from `client` to `server` (of one family in the header:
/// an IPv4 address beside an IPv6 one is written IPv4-mapped).
pub fn header(version: Version, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (client, server) = same_family(client, server);
    match version {
        Version::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                server.ip(),
                client.port(),
                server.port()
            )
            .into_bytes()
        }
        Version::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("a v2 header"),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        std::net::IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), s.port()),
        _ => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

/// A v2 `LOCAL` header (the balancer's own health check: the peer is the client).
pub fn local_header() -> Vec<u8> {
    v2::Builder::new(
        v2::Version::Two | v2::Command::Local,
        v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
    )
    .build()
    .expect("a v2 LOCAL header")
}

/// A running balancer in front of one zgate listener.
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Starts a balancer on `127.0.0.1` in front of `to`, speaking `version`.
    pub async fn start(to: SocketAddr, version: Version) -> Balancer {
        let listener = TcpListener::bind(crate::loopback0())
            .await
            .expect("bind the balancer");
        let addr = listener.local_addr().expect("balancer address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay(client, peer, to, version));
            }
        });
        Balancer { addr, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection through the balancer.
async fn relay(mut client: TcpStream, peer: SocketAddr, to: SocketAddr, version: Version) {
    let _ = client.set_nodelay(true);
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(to)).await
    else {
        reset_on_close(&client);
        return;
    };
    let _ = server.set_nodelay(true);
    if server.write_all(&header(version, peer, to)).await.is_err() {
        reset_on_close(&client);
        return;
    }
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    // Client to zgate; true once the client finished sending (zgate is told), false if the
    // client's connection failed.
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) => {
                    let _ = sw.shutdown().await;
                    return true;
                }
                Err(_) => return false,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
            }
        }
    };
    // zgate to client; true if zgate reset the connection.
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) => {
                    let _ = cw.shutdown().await;
                    return false;
                }
                Err(_) => return true,
                Ok(n) => {
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
            }
        }
    };
    // zgate closing or resetting ends the relay at once, whatever the client is doing (an
    // attacker holding its connection open must see it cut); the client finishing its side
    // leaves zgate's answer to come.
    let reset = {
        tokio::pin!(up, down);
        tokio::select! {
            reset = &mut down => reset,
            sent = &mut up => sent && down.await,
        }
    };
    if reset {
        reset_on_close(&client);
    }
}

/// Makes the socket's close a reset (SO_LINGER 0; this never blocks).
fn reset_on_close(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}
