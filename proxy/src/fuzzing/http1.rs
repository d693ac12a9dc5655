//! One HTTP/1 client connection through the proxy service, over in-memory IO: the fuzzer's
//! bytes are what the client sends (then it closes its side); the backend is a hyper server in
//! the same runtime that reads each request body and answers 200. The runtime, config,
//! backend, its pool and the counters are built once per process ([`super::world`]); the
//! limiter (the client's counters, glitches, blocks, training samples) is fresh for every
//! input.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::world::{self, World};
use crate::account::meter::Meter;
use crate::account::would_block::WouldBlockLog;
use crate::conn::io::ClientIo;
use crate::conn::tap::ReadTap;
use crate::conn::{run_http1, ConnSettings, Phase};
use crate::http::identity::Identity;
use crate::http::service::{ConnInfo, Services};
use crate::http::Router;
use crate::stats::Stats;

/// How long one fuzzed connection may take before it is given up (a hang is not a crash, but
/// it must not stall the fuzzer): 2 s.
const CONNECTION_LIMIT: Duration = Duration::from_secs(2);

/// Bytes the in-memory connection buffers each way.
const PIPE: usize = 64 * 1024;

struct Http1World {
    world: World,
    /// The backend pool, kept across inputs (its idle connections too).
    upstream: Arc<Router>,
    stats: Arc<Stats>,
    identity: Arc<Identity>,
    settings: Arc<ConnSettings>,
    phase: watch::Receiver<Phase>,
    _phase_tx: watch::Sender<Phase>,
    /// An open socket whose descriptor stands in for the client's, for what a block does to it
    /// (SO_LINGER, which fails harmlessly on UDP).
    stand_in: std::net::UdpSocket,
}

/// Runs `data` as one client connection's bytes through the proxy (see the module docs).
pub fn http1_connection(data: &[u8]) {
    let Some(w) = http1_world() else { return };
    let Some(s) = services(w) else { return };
    w.world.runtime.block_on(async {
        let _ = tokio::time::timeout(CONNECTION_LIMIT, connection(w, s, data)).await;
    });
}

/// What the connection's requests share, around a fresh limiter.
fn services(w: &Http1World) -> Option<Arc<Services>> {
    Some(Arc::new(Services {
        upstream: arc_swap::ArcSwap::new(w.upstream.clone()),
        access_log: false.into(),
        limiter: Arc::new(w.world.limiter()?),
        clock: w.world.clock,
        limits: arc_swap::ArcSwap::from_pointee(w.world.proxy_limits),
        would_block_log: Arc::new(WouldBlockLog::default()),
        stats: w.stats.clone(),
        identity: arc_swap::ArcSwap::new(w.identity.clone()),
    }))
}

async fn connection(w: &Http1World, s: Arc<Services>, data: &[u8]) {
    let Ok(peer) = super::PEER.parse::<SocketAddr>() else {
        return;
    };
    let (conn, _) = s.limiter.connection_opened(peer.ip(), s.clock.now());
    let Some(conn) = conn else { return };
    let meter = Meter::new(
        conn,
        s.clock,
        peer,
        **s.limits.load(),
        s.would_block_log.clone(),
    );
    let (mut client, server) = tokio::io::duplex(PIPE);
    let max_buf = w.settings.http.max_header_bytes.max(8192);
    let io = ClientIo::new(
        server,
        Bytes::new(),
        meter.clone(),
        ReadTap::http1(max_buf),
        s.stats.clone(),
    );
    let info = ConnInfo {
        shared: s.clone(),
        forwarded_for: crate::http::headers::forwarded_for(peer.ip()),
        peer,
        tls: false,
        meter,
        fd: std::os::fd::AsRawFd::as_raw_fd(&w.stand_in),
        body_read: w.settings.timeouts.body_read,
        body_min_rate: w.settings.timeouts.body_min_rate,
        idle: w.settings.timeouts.idle,
        tunnel: Default::default(),
        trusted: false,
        identity: w.identity.clone(),
        recent: Default::default(),
    };
    let mut phase = w.phase.clone();
    let settings = w.settings.clone();
    let shared = s;
    let served =
        tokio::spawn(async move { run_http1(shared, settings, io, info, &mut phase).await });
    let _ = client.write_all(data).await;
    let _ = client.shutdown().await;
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink).await;
    let _ = served.await;
}

fn http1_world() -> Option<&'static Http1World> {
    static WORLD: OnceLock<Option<Http1World>> = OnceLock::new();
    WORLD.get_or_init(build).as_ref()
}

fn build() -> Option<Http1World> {
    let runtime = world::runtime()?;
    let backend = runtime.block_on(backend())?;
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{backend}\"\n\
         [limits]\nmode = \"training\"\n[timeouts]\nbody_read = \"1s\"\n"
    );
    let world = World::new(runtime, &text)?;
    let upstream = Arc::new(Router::new(&world.config).ok()?);
    let identity = Arc::new(Identity::new(&world.config.client_ip));
    let settings = Arc::new(ConnSettings {
        timeouts: world.config.timeouts.clone(),
        http: world.config.http.clone(),
    });
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let stand_in = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    Some(Http1World {
        world,
        upstream,
        stats: Arc::new(Stats::default()),
        identity,
        stand_in,
        settings,
        phase,
        _phase_tx: phase_tx,
    })
}

/// A backend on loopback in the fuzzing runtime: reads each request's body, answers 200.
async fn backend() -> Option<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
    let addr = listener.local_addr().ok()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Some(addr)
}
