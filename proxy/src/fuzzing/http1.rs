//! One HTTP/1 client connection through the proxy service, over in-memory IO: the fuzzer's
//! bytes are what the client sends (then it closes its side); the backend is a hyper server in
//! the same runtime that reads each request body and answers 200. Built once per process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use zgate_config::Config;

use crate::account::meter::Meter;
use crate::account::would_block::WouldBlockLog;
use crate::clock::Clock;
use crate::conn::io::ClientIo;
use crate::conn::tap::ReadTap;
use crate::conn::{run_http1, ConnSettings, Phase};
use crate::http::service::{ConnInfo, Services};
use crate::http::Router;
use crate::limits;
use crate::stats::Stats;

/// How long one fuzzed connection may take before it is given up (a hang is not a crash, but
/// it must not stall the fuzzer): 2 s.
const CONNECTION_LIMIT: Duration = Duration::from_secs(2);

struct World {
    runtime: Runtime,
    shared: Arc<Services>,
    settings: Arc<ConnSettings>,
    phase: watch::Receiver<Phase>,
    _phase_tx: watch::Sender<Phase>,
    /// An open socket whose descriptor stands in for the client's, for what a block does to it
    /// (SO_LINGER, which fails harmlessly on UDP).
    stand_in: std::net::UdpSocket,
}

/// Runs `data` as one client connection's bytes through the proxy (see the module docs).
pub fn http1_connection(data: &[u8]) {
    let Some(w) = world() else { return };
    w.runtime.block_on(async {
        let _ = tokio::time::timeout(CONNECTION_LIMIT, connection(w, data)).await;
    });
}

async fn connection(w: &World, data: &[u8]) {
    let Ok(peer) = super::PEER.parse::<SocketAddr>() else {
        return;
    };
    let s = &w.shared;
    // A guard that fired in an earlier run blocked the client: each run starts unblocked.
    s.limiter.unblock(zgate_limiter::IpPrefix::host(peer.ip()));
    let (conn, _) = s.limiter.connection_opened(peer.ip(), s.clock.now());
    let Some(conn) = conn else { return };
    let meter = Meter::new(
        conn,
        s.clock,
        peer,
        **s.limits.load(),
        s.would_block_log.clone(),
    );
    let (mut client, server) = tokio::io::duplex(64 * 1024);
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
        identity: s.identity.load_full(),
        recent: Default::default(),
    };
    let mut phase = w.phase.clone();
    let settings = w.settings.clone();
    let shared = s.clone();
    let served =
        tokio::spawn(async move { run_http1(shared, settings, io, info, &mut phase).await });
    let _ = client.write_all(data).await;
    let _ = client.shutdown().await;
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink).await;
    let _ = served.await;
}

fn world() -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    WORLD.get_or_init(build).as_ref()
}

fn build() -> Option<World> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let backend = runtime.block_on(backend())?;
    let text = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"{backend}\"\n\
         [limits]\nmode = \"training\"\n[timeouts]\nbody_read = \"1s\"\n"
    );
    let config = Config::parse(&text, Path::new("/")).ok()?;
    let (limiter_config, proxy_limits) = limits::from_config(&config.limits).ok()?;
    let clock = Clock::new();
    let limiter = zgate_limiter::Limiter::new(limiter_config, None, clock.now()).ok()?;
    let upstream = Router::new(&config).ok()?;
    let shared = Arc::new(Services {
        upstream: arc_swap::ArcSwap::from_pointee(upstream),
        access_log: false.into(),
        limiter: Arc::new(limiter),
        clock,
        limits: arc_swap::ArcSwap::from_pointee(proxy_limits),
        would_block_log: Arc::new(WouldBlockLog::default()),
        stats: Arc::new(Stats::default()),
        identity: arc_swap::ArcSwap::from_pointee(crate::http::identity::Identity::new(
            &config.client_ip,
        )),
    });
    let settings = Arc::new(ConnSettings {
        timeouts: config.timeouts.clone(),
        http: config.http.clone(),
    });
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let stand_in = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    Some(World {
        stand_in,
        runtime,
        shared,
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
