//! The attack lab: a legitimate population on distinct `127.0.N.M` addresses, a proxy to train
//! on it, and attack generators, each bounded in count and time.
//!
//! Population (20 clients, mixed profiles):
//! - 6 HTTP/1.1 browsers (`127.0.1.1-6`) with 1-6 keep-alive connections, small GETs, a form
//!   POST and a 64 KiB upload;
//! - 6 HTTP/2 browsers (`127.0.1.7-12`), one connection, 4 concurrent GETs, a POST, an upload;
//! - 7 API clients (`127.0.2.1-7`), 3 concurrent connections of JSON-sized POSTs, an upload;
//! - 1 NAT-like client (`127.0.3.1`) with 24 concurrent connections, ending each round with
//!   24 simultaneous POSTs to a 100 ms endpoint.
//!
//! Attackers use `127.0.9.N`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use zgate_limiter::{BlockEntry, Mode};
use zgate_proxy::Server;

use crate::balancer::{Balancer, Version};
use crate::{backend, config, config_text, get, noise, request, Client, TempDir};

/// The `[limits]` the lab runs with: z = 6 for every metric (a population of 20 can put no
/// client above z = 19/sqrt(20) = 4.25 in training, so the margin is 1.75 standard deviations
/// for a legitimate client that grows a little in defence), a CPU floor of 5% of a core (the
/// machine is shared: poll times include preemption), a memory floor of 128 KiB (memory reaches
/// the limiter in 16 KiB steps per connection, so the NAT-like client with 24 connections moves
/// by several steps from round to round), and defaults otherwise.
pub const LAB_LIMITS: &str = "\
[limits]
mode = \"disabled\"
training_period = \"0\"
block_duration = \"10m\"
min_clients = 10
[limits.z]
connections = 6.0
requests_nonidempotent = 6.0
requests = 6.0
memory = 6.0
cpu = 6.0
fragmentation = 6.0
[limits.min_std]
cpu = 50000.0
memory = 131072.0
";

/// A proxy in front of a demo backend, with its limiter at hand.
pub struct Lab {
    /// The proxy.
    pub server: Server,
    /// Where clients connect: the proxy's listener, or the balancer in front of it.
    pub addr: SocketAddr,
    _balancer: Option<Balancer>,
    _backend: crate::demo::Backend,
    _dir: TempDir,
}

impl Lab {
    /// Starts a lab proxy with [`LAB_LIMITS`] plus `extra` TOML (more `[limits.*]` keys must
    /// come as their own sections) and `[timeouts]`.
    pub async fn start(extra: &str) -> Lab {
        Lab::start_with("", extra).await
    }

    /// [`Lab::start`], with `limits_keys` added to the `[limits]` table.
    pub async fn start_with(limits_keys: &str, extra: &str) -> Lab {
        Lab::launch(limits_keys, extra, None).await
    }

    /// [`Lab::start`] behind an L4 balancer (on `127.0.0.1`, the only trusted proxy) that
    /// speaks PROXY protocol `version` to a `proxy_protocol` listener: every client reaches
    /// zgate from the balancer's address, and is known by the header's.
    pub async fn start_behind_balancer(version: Version, extra: &str) -> Lab {
        Lab::launch("", extra, Some(version)).await
    }

    async fn launch(limits_keys: &str, extra: &str, balancer: Option<Version>) -> Lab {
        let b = backend().await;
        let dir = TempDir::new("lab");
        let limits = LAB_LIMITS.replacen("[limits]\n", &format!("[limits]\n{limits_keys}\n"), 1);
        let mut text = config_text(&[b.addr()], &format!("{limits}\n{extra}"));
        if balancer.is_some() {
            text = text.replacen(
                "addr = \"127.0.0.1:0\"\n",
                "addr = \"127.0.0.1:0\"\nproxy_protocol = true\n",
                1,
            );
            text.push_str("\n[client_ip]\ntrusted_proxies = [\"127.0.0.1\"]\n");
        }
        let server = crate::proxy(config(&text, dir.path())).await;
        let direct = crate::addr(&server);
        let balancer = match balancer {
            Some(v) => Some(Balancer::start(direct, v).await),
            None => None,
        };
        Lab {
            server,
            addr: balancer.as_ref().map_or(direct, |b| b.addr),
            _balancer: balancer,
            _backend: b,
            _dir: dir,
        }
    }

    /// Switches the limiter's mode, panicking if refused.
    pub fn set_mode(&self, mode: Mode) {
        let now = self.server.clock().now();
        if let Err(e) = self.server.limiter().set_mode(mode, now) {
            panic!("mode {mode:?} refused: {e}");
        }
    }

    /// Trains on `rounds` of the population (all must succeed), then switches to `then`.
    pub async fn train(&self, rounds: usize, then: Mode) {
        self.set_mode(Mode::Training);
        let out = self.rounds(rounds).await;
        out.assert_clean("training");
        self.set_mode(then);
        let model = self
            .server
            .limiter()
            .model()
            .expect("a model after training");
        for m in zgate_limiter::Metric::ALL {
            assert!(
                model.get(m).n >= 10,
                "metric {m} has only {} clients in the model",
                model.get(m).n
            );
        }
    }

    /// The block list entry covering `ip`, if any.
    pub fn block_of(&self, ip: IpAddr) -> Option<BlockEntry> {
        let now = self.server.clock().now();
        self.server
            .limiter()
            .blocks(now)
            .into_iter()
            .find(|b| b.prefix.contains(ip))
    }

    /// Whether `ip` is blocked now.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = self.server.clock().now();
        self.server.limiter().is_blocked(ip, now)
    }

    /// Waits (at most 10 s; nothing is asserted on time) until the proxy has closed every
    /// connection of the population. A client's connections from one round would otherwise
    /// still be closing on a busy server when it opens the next round's, and its connection
    /// count would depend on the server's load: training and defence must see the same
    /// rounds.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let limiter = self.server.limiter();
        while Instant::now() < deadline {
            let now = self.server.clock().now();
            let open = population_ips().into_iter().any(|ip| {
                limiter
                    .client(ip, now)
                    .is_some_and(|c| c.current[zgate_limiter::Metric::Connections.index()] > 0)
            });
            if !open {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `n` rounds of the population, each starting once the previous one's connections are
    /// closed.
    pub async fn rounds(&self, n: usize) -> Outcome {
        let mut total = Outcome::default();
        for _ in 0..n {
            let out = population(self.addr, 1).await;
            total.ok += out.ok;
            total.failed.extend(out.failed);
            self.settle().await;
        }
        total
    }

    /// Every block entry now.
    pub fn blocks(&self) -> Vec<BlockEntry> {
        self.server.limiter().blocks(self.server.clock().now())
    }

    /// Asserts that no legitimate request failed; on failure the message also shows the block
    /// list and what the limiter knows of each population client, so a failure explains itself.
    pub fn assert_legit(&self, out: &Outcome, phase: &str) {
        if out.failed.is_empty() && out.ok > 0 {
            return;
        }
        let now = self.server.clock().now();
        let clients: Vec<_> = population_ips()
            .into_iter()
            .filter_map(|ip| self.server.limiter().client(ip, now))
            .collect();
        eprintln!(
            "{phase}: blocks {:#?}\npopulation as the limiter sees it: {clients:#?}",
            self.blocks()
        );
        out.assert_clean(phase);
    }
}

/// `127.0.a.b`.
pub fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// The population's addresses.
pub fn population_ips() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (1..=12).map(|i| ip(1, i)).collect();
    v.extend((1..=7).map(|i| ip(2, i)));
    v.push(ip(3, 1));
    v
}

/// A TCP connection to `to` from source address `from`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// What a population run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests answered 2xx with the expected body.
    pub ok: u64,
    /// Everything else, with the client and what went wrong.
    pub failed: Vec<String>,
}

impl Outcome {
    /// Panics, listing the failures, unless there are none.
    pub fn assert_clean(&self, phase: &str) {
        assert!(
            self.failed.is_empty(),
            "{phase}: {} legitimate requests failed ({} ok): {:#?}",
            self.failed.len(),
            self.ok,
            &self.failed[..self.failed.len().min(20)]
        );
        assert!(self.ok > 0, "{phase}: no request was made");
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, who: IpAddr, what: &str, r: Result<crate::Collected, String>, want: &[u8]) {
        match r {
            Ok(resp) if resp.status() == 200 && (want.is_empty() || resp.body == want) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(resp) => self.fail(who, what, format!("status {}", resp.status())),
            Err(e) => self.fail(who, what, e),
        }
    }

    fn fail(&self, who: IpAddr, what: &str, why: String) {
        if let Ok(mut f) = self.failed.lock() {
            f.push(format!("{who} {what}: {why}"));
        }
    }
}

async fn client_from(from: IpAddr, to: SocketAddr, h2: bool) -> Result<Client, String> {
    let stream = connect_from(from, to)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(Client::from_stream(stream, h2).await)
}

async fn send(
    c: &mut Client,
    req: http::Request<http_body_util::Full<Bytes>>,
) -> Result<crate::Collected, String> {
    c.try_send(req).await.map_err(|e| e.to_string())
}

/// Runs `rounds` rounds of every population client concurrently; returns what happened.
pub async fn population(to: SocketAddr, rounds: usize) -> Outcome {
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 1..=12u8 {
        let t = tally.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                if i <= 6 {
                    browser_h1(ip(1, i), i as usize, to, &t).await;
                } else {
                    browser_h2(ip(1, i), to, &t).await;
                }
            }
        }));
    }
    for i in 1..=7u8 {
        let t = tally.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                api(ip(2, i), to, &t).await;
            }
        }));
    }
    let t = tally.clone();
    tasks.push(tokio::spawn(async move {
        for _ in 0..rounds {
            nat(ip(3, 1), to, &t).await;
        }
    }));
    for task in tasks {
        if let Err(e) = task.await {
            tally.fail(ip(0, 0), "task", e.to_string());
        }
    }
    let failed = tally.failed.lock().map(|f| f.clone()).unwrap_or_default();
    Outcome {
        ok: tally.ok.load(Ordering::Relaxed),
        failed,
    }
}

/// A 64 KiB upload: several socket reads (HTTP/1) or DATA frames (HTTP/2) of normal size,
/// so every client has fragmentation samples of a normal message.
async fn upload(c: &mut Client, who: IpAddr, to: SocketAddr, t: &Tally) {
    let r = send(c, request("POST", to, "/discard", noise(64 * 1024, 9))).await;
    t.check(who, "upload", r, b"65536\n");
}

async fn browser_h1(who: IpAddr, conns: usize, to: SocketAddr, t: &Tally) {
    let mut tasks = Vec::new();
    for k in 0..conns {
        tasks.push(async move {
            let mut c = match client_from(who, to, false).await {
                Ok(c) => c,
                Err(e) => return t.fail(who, "connect", e),
            };
            for _ in 0..3 {
                let r = send(&mut c, get(to, "/bytes?n=2048")).await;
                t.check(who, "GET", r, &crate::pattern(2048));
            }
            let form = noise(300, k as u64);
            let r = send(&mut c, request("POST", to, "/echo", form.clone())).await;
            t.check(who, "POST", r, &form);
            if k == 0 {
                upload(&mut c, who, to, t).await;
            }
        });
    }
    futures_join(tasks).await;
}

async fn browser_h2(who: IpAddr, to: SocketAddr, t: &Tally) {
    let c = match client_from(who, to, true).await {
        Ok(c) => c,
        Err(e) => return t.fail(who, "connect", e),
    };
    let Client::H2(sender) = c else {
        return t.fail(who, "connect", "not h2".into());
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = Client::H2(sender.clone());
        tasks.push(async move {
            let r = send(&mut c, get(to, "/bytes?n=4096")).await;
            t.check(who, "GET", r, &crate::pattern(4096));
        });
    }
    futures_join(tasks).await;
    let mut c = Client::H2(sender);
    let form = noise(500, 3);
    let r = send(&mut c, request("POST", to, "/echo", form.clone())).await;
    t.check(who, "POST", r, &form);
    upload(&mut c, who, to, t).await;
}

async fn api(who: IpAddr, to: SocketAddr, t: &Tally) {
    let mut tasks = Vec::new();
    for k in 0..3u64 {
        tasks.push(async move {
            let mut c = match client_from(who, to, false).await {
                Ok(c) => c,
                Err(e) => return t.fail(who, "connect", e),
            };
            for j in 0..2 {
                let json = noise(2048, k * 10 + j);
                let r = send(&mut c, request("POST", to, "/echo", json.clone())).await;
                t.check(who, "POST", r, &json);
            }
            if k == 0 {
                upload(&mut c, who, to, t).await;
            }
        });
    }
    futures_join(tasks).await;
}

async fn nat(who: IpAddr, to: SocketAddr, t: &Tally) {
    // Its 24 POSTs start together and take 100 ms each, so every round (training included)
    // reaches the same maxima of in-flight requests: a legitimate client whose training
    // maximum fell short of what it can do would look new in defence.
    let barrier = tokio::sync::Barrier::new(24);
    let barrier = &barrier;
    let mut tasks = Vec::new();
    for k in 0..24u64 {
        tasks.push(async move {
            let mut c = match client_from(who, to, false).await {
                Ok(c) => c,
                Err(e) => {
                    t.fail(who, "connect", e);
                    // Still meet the others, or they would wait forever.
                    barrier.wait().await;
                    return;
                }
            };
            for _ in 0..2 {
                let r = send(&mut c, get(to, "/bytes?n=1024")).await;
                t.check(who, "GET", r, &crate::pattern(1024));
            }
            barrier.wait().await;
            let form = noise(200, k);
            let r = send(&mut c, request("POST", to, "/slow?ms=100", form)).await;
            t.check(who, "POST", r, b"slept 100 ms\n");
            if k == 0 {
                upload(&mut c, who, to, t).await;
            }
        });
    }
    futures_join(tasks).await;
}

/// Runs futures concurrently on this task and waits for all (no futures dependency).
pub async fn futures_join<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs the population concurrently with `attack`, repeating population rounds until the
/// attack is over (at most `max_rounds`), and returns both results.
pub async fn under_attack<A, T>(lab: &Lab, max_rounds: usize, attack: A) -> (Outcome, T)
where
    A: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let attack = tokio::spawn(attack);
    let mut total = Outcome::default();
    for _ in 0..max_rounds {
        let out = lab.rounds(1).await;
        total.ok += out.ok;
        total.failed.extend(out.failed);
        if attack.is_finished() {
            break;
        }
    }
    // One more round after the attack, so the population is seen working after the block.
    let out = lab.rounds(1).await;
    total.ok += out.ok;
    total.failed.extend(out.failed);
    let result = attack.await.expect("attack task");
    (total, result)
}

/// What an attacker saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Connections or streams that were reset or closed by the proxy.
    pub cut: u64,
    /// Connections the proxy refused or reset at connect.
    pub refused: u64,
    /// Responses received.
    pub responses: u64,
    /// GOAWAY frames received (HTTP/2).
    pub goaway: u64,
}

/// A deadline for an attack loop: attacks stop by themselves.
pub fn attack_deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

/// A raw HTTP/2 connection for attacks the client crates refuse to produce.
pub struct RawH2 {
    /// The socket.
    pub stream: TcpStream,
}

/// HPACK for `:method GET|POST`, `:scheme http`, `:path /`, and `:authority` literal.
pub fn hpack_request(post: bool, authority: &str, path_index_root: bool) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    if path_index_root {
        b.push(0x84);
    }
    b.push(0x01); // literal without indexing, name = static index 1 (:authority)
    b.push(authority.len() as u8);
    b.extend_from_slice(authority.as_bytes());
    b
}

/// Frame type and flag constants for [`RawH2::frame`].
pub mod h2 {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
    /// END_STREAM.
    pub const END_STREAM: u8 = 0x1;
    /// END_HEADERS.
    pub const END_HEADERS: u8 = 0x4;
}

/// Encodes one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One write of a Rapid Reset attack: for `streams` new streams from `first_id` (odd), a GET
/// HEADERS with END_STREAM immediately followed by RST_STREAM(CANCEL).
pub fn rapid_reset_batch(first_id: u32, streams: u32, authority: &str) -> Vec<u8> {
    let block = hpack_request(false, authority, true);
    let mut out = Vec::with_capacity(streams as usize * (block.len() + 31));
    for k in 0..streams {
        let id = first_id + 2 * k;
        out.extend(frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            id,
            &block,
        ));
        out.extend(frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    out
}

impl RawH2 {
    /// Connects from `from`, sends the preface and an empty SETTINGS.
    pub async fn connect(from: IpAddr, to: SocketAddr) -> std::io::Result<RawH2> {
        let mut stream = connect_from(from, to).await?;
        stream.write_all(zgate_proxy::H2_PREFACE).await?;
        stream.write_all(&frame(h2::SETTINGS, 0, 0, &[])).await?;
        Ok(RawH2 { stream })
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads and discards what the server sends until `wait` passes or the connection ends;
    /// returns whether it ended (EOF or reset) and how many GOAWAYs were seen.
    pub async fn drain(&mut self, wait: Duration) -> (bool, u64) {
        let mut goaway = 0;
        let mut buf = vec![0u8; 65536];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return (false, goaway),
                Ok(Ok(0)) | Ok(Err(_)) => return (true, goaway),
                Ok(Ok(n)) => {
                    // Count GOAWAY frame headers seen at the start of reads (good enough: the
                    // server's GOAWAY comes alone at the end).
                    if n >= 9 && buf[3] == h2::GOAWAY {
                        goaway += 1;
                    }
                }
            }
        }
    }
}

/// Whether an IO error means the proxy cut the connection.
pub fn is_cut(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof | NotConnected
    )
}
