//! The end-to-end harness: test backends, zgate in-process or as its binary, HTTP/1.1, h2c and
//! TLS clients over real loopback sockets, and throwaway certificates.
//!
//! Every helper binds port 0 on 127.0.0.1, so tests run in parallel without colliding, and
//! every wait is bounded so a broken proxy fails a test instead of hanging it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use zgate_config::Config;
pub use zgate_proxy::cli::demo;
use zgate_proxy::Server;

pub mod balancer;
pub mod browser;
pub mod lab;
pub mod pki;
pub mod redis;
pub mod websocket;

pub use zgate_proxy::cli::demo::pattern_byte;

/// How long any single client operation may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// Polls `done` every 10 ms until it holds; panics with `what` after [`STEP`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a demo backend on an ephemeral loopback port.
pub async fn backend() -> demo::Backend {
    demo::Backend::start(loopback0())
        .await
        .expect("bind demo backend")
}

/// `127.0.0.1:0`.
pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback address where nothing listens (a port bound and released).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind(loopback0()).expect("bind");
    l.local_addr().expect("addr")
}

/// Config text with one cleartext listener on port 0 and the given backends, then `extra`
/// (more sections, TOML).
pub fn config_text(backends: &[SocketAddr], extra: &str) -> String {
    let mut t = String::from("[[listener]]\naddr = \"127.0.0.1:0\"\n");
    for b in backends {
        t.push_str(&format!("[[backend]]\naddr = \"{b}\"\n"));
    }
    t.push_str(extra);
    t
}

/// Parses config text (relative paths against `dir`), panicking with the error.
pub fn config(text: &str, dir: &Path) -> Config {
    Config::parse(text, dir).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"))
}

/// Starts zgate in-process on `config`.
pub async fn proxy(config: Config) -> Server {
    Server::start(config).await.expect("zgate starts")
}

/// The first listener's address of a running server.
pub fn addr(server: &Server) -> SocketAddr {
    server.local_addrs()[0]
}

/// zgate in-process in front of one demo backend: the config of [`config_text`] with that
/// backend, then `extra`, its relative paths against a temporary directory. It owns all three,
/// so the backend and the directory live as long as the proxy, and it derefs to the [`Server`].
pub struct Fronted {
    /// The proxy.
    pub server: Server,
    /// The demo backend behind it.
    pub backend: demo::Backend,
    _dir: TempDir,
}

impl Fronted {
    /// Starts a demo backend, then zgate in front of it with `extra` config (TOML sections).
    pub async fn start(extra: &str) -> Self {
        let backend = backend().await;
        let dir = TempDir::new("fronted");
        let server = proxy(config(&config_text(&[backend.addr()], extra), dir.path())).await;
        Fronted {
            server,
            backend,
            _dir: dir,
        }
    }
}

impl std::ops::Deref for Fronted {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// A model in the admin API's format (`PUT /api/v1/model`; the state file's `model` too): epoch
/// 7, every metric learned from 20 clients (`memory`: mean 40000, std 5000).
pub const MODEL_JSON: &str = r#"{"epoch": 7, "metrics": {
    "connections": {"n": 20, "mean": 2.0, "std": 1.0},
    "requests_nonidempotent": {"n": 20, "mean": 1.0, "std": 0.5},
    "requests": {"n": 20, "mean": 3.0, "std": 1.0},
    "memory": {"n": 20, "mean": 40000.0, "std": 5000.0},
    "cpu": {"n": 20, "mean": 2000.0, "std": 500.0},
    "fragmentation": {"n": 20, "mean": 4.0, "std": 2.0}}}"#;

/// A response with its body collected.
#[derive(Debug)]
pub struct Collected {
    /// Status, headers, version.
    pub head: http::response::Parts,
    /// The whole body.
    pub body: Bytes,
}

impl Collected {
    /// The status code as a number.
    pub fn status(&self) -> u16 {
        self.head.status.as_u16()
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn collect(resp: Response<hyper::body::Incoming>) -> Collected {
    let (head, body) = resp.into_parts();
    let body = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("body in time")
        .expect("body completes")
        .to_bytes();
    Collected { head, body }
}

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over TCP.
    Http1,
    /// HTTP/2 with prior knowledge over TCP.
    H2c,
}

/// One client connection, HTTP/1.1 or HTTP/2, over TCP or TLS.
pub enum Client<B = Full<Bytes>> {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<B>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<B>),
}

impl<B> Client<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Connects over plain TCP.
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Self {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Self::handshake(stream, proto == Proto::H2c).await
    }

    /// Connects over TLS, offering `alpn` (`"h2"` or `"http/1.1"`) and trusting `ca`.
    pub async fn connect_tls(addr: SocketAddr, ca: &TestCert, alpn: &str) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Self::tls_over(tcp, ca, alpn).await
    }

    /// Speaks TLS over an open connection (e.g. after a PROXY protocol header), offering
    /// `alpn` and trusting `ca`.
    pub async fn tls_over(tcp: TcpStream, ca: &TestCert, alpn: &str) -> Self {
        let tls = tls_connect(tcp, ca, alpn).await;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Self::handshake(tls, h2).await
    }

    /// Speaks HTTP/2 (`h2`) or HTTP/1.1 over an established stream.
    pub async fn from_stream<S>(io: S, h2: bool) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Self::handshake(io, h2).await
    }

    async fn handshake<S>(io: S, h2: bool) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    /// Sends a request and collects the response, or returns the client-side error.
    pub async fn try_send(&mut self, req: Request<B>) -> Result<Collected, hyper::Error> {
        let fut = async {
            match self {
                Client::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
                Client::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
            }
        };
        let resp = tokio::time::timeout(STEP, fut)
            .await
            .expect("response in time")?;
        Ok(collect(resp).await)
    }

    /// Sends a request and collects the response, panicking on a client-side error.
    pub async fn send(&mut self, req: Request<B>) -> Collected {
        self.try_send(req).await.expect("request succeeds")
    }
}

/// A GET request for `path` (HTTP/2 clients need the authority in the URI).
pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    request("GET", addr, path, Bytes::new())
}

/// A request with a full body.
pub fn request(method: &str, addr: SocketAddr, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(Full::new(body))
        .expect("valid request")
}

/// A request body of unknown length (so HTTP/1.1 sends it chunked), produced chunk by chunk
/// from an iterator: nothing of it is held beyond the chunk being sent.
pub struct StreamedBody {
    chunks: Box<dyn Iterator<Item = Bytes> + Send>,
    /// After the last chunk, never end (see [`StreamedBody::stalling`]).
    stall: bool,
}

impl StreamedBody {
    /// A body of `chunks`, in order.
    pub fn new(chunks: impl Iterator<Item = Bytes> + Send + 'static) -> Self {
        StreamedBody {
            chunks: Box::new(chunks),
            stall: false,
        }
    }

    /// A body of `chunks` that then sends nothing ever again: the stream stays open, as a
    /// client that stopped sending would leave it.
    pub fn stalling(chunks: impl Iterator<Item = Bytes> + Send + 'static) -> Self {
        StreamedBody {
            stall: true,
            ..Self::new(chunks)
        }
    }
}

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.chunks.next() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None if this.stall => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }
}

/// A TLS client connection over `tcp` to "localhost", offering `alpn` and trusting `ca`.
pub async fn tls_connect(
    tcp: TcpStream,
    ca: &TestCert,
    alpn: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der.clone())
        .expect("add test root certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(
        STEP,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake")
}

/// `len` bytes of the demo backend's pattern.
pub fn pattern(len: usize) -> Bytes {
    (0..len as u64).map(pattern_byte).collect()
}

/// Pseudo-random bytes (a fixed xorshift stream), so an upload is not the download pattern.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM into a
/// temporary directory.
pub struct TestCert {
    /// The certificate, DER, to trust on the client side.
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    /// `cert.pem`.
    pub cert_path: PathBuf,
    /// `key.pem`.
    pub key_path: PathBuf,
    /// The directory holding both.
    pub dir: TempDir,
}

impl TestCert {
    /// Generates a fresh certificate and key.
    pub fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("generate certificate");
        let dir = TempDir::new("tls");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_path, ck.key_pair.serialize_pem()).expect("write key");
        TestCert {
            cert_der: ck.cert.der().clone(),
            cert_path,
            key_path,
            dir,
        }
    }
}

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, written as PEM
/// into a temporary directory (a client trusts `ca.pem`; a server serves `cert.pem` and
/// `key.pem`).
pub struct TestCa {
    /// `ca.pem`: the CA's certificate.
    pub ca_path: PathBuf,
    /// `cert.pem`: the server's certificate.
    pub cert_path: PathBuf,
    /// `key.pem`: the server's key.
    pub key_path: PathBuf,
    /// The directory holding them.
    pub dir: TempDir,
}

impl TestCa {
    /// Generates a fresh CA and a server certificate signed by it.
    pub fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zgate test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params")
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let dir = TempDir::new("ca");
        let path = |name: &str| dir.path().join(name);
        let (ca_path, cert_path, key_path) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        TestCa {
            ca_path,
            cert_path,
            key_path,
            dir,
        }
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "zgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `zgate` binary of this build. `cargo test --workspace` builds it (the proxy package
/// has integration tests); when it is missing, it is built here.
pub fn zgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/zgate
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("zgate");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "zgate-proxy", "--bin", "zgate"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the zgate binary failed");
    }
    assert!(bin.exists(), "no zgate binary at {}", bin.display());
    bin
}

/// zgate running as a child process, killed when dropped.
pub struct ZgateProcess {
    /// The child.
    pub child: Child,
    /// The address its first listener bound (read from its log).
    pub addr: SocketAddr,
    /// Its stderr lines read so far.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ZgateProcess {
    /// Runs `zgate --config <file>` on `config_text` and waits for its first listener.
    pub fn start(config_text: &str, dir: &TempDir) -> Self {
        let file = dir.path().join("zgate.toml");
        std::fs::write(&file, config_text).expect("write config");
        Self::spawn(&["--config".as_ref(), file.as_os_str()])
    }

    /// Runs `zgate ARGS` and waits for its first `listening` log line.
    pub fn spawn(args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(zgate_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zgate");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && line.contains("listening") {
                    if let Some(a) = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(a);
                        sent = true;
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("zgate did not report a listener: {:?}", log.lock()));
        ZgateProcess { child, addr, log }
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"HUP"`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `STEP`; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "zgate did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's peak resident memory (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmHWM in /proc status")
    }
}

impl Drop for ZgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Admin API helpers (issue 6) ----

/// A response of the admin API.
#[derive(Debug)]
pub struct AdminResponse {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl AdminResponse {
    /// The body as JSON, panicking with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("admin answer is not JSON ({e}): {}", self.body))
    }

    /// The `error` message of a refusal.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One admin API request over a fresh HTTP/1.1 connection; `token` goes in
/// `Authorization: Bearer`.
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> AdminResponse {
    let mut c = Client::connect(admin, Proto::Http1).await;
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("host", admin.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    // Every mutation says JSON (the admin API answers 415 otherwise), with or without a body.
    if body.is_some() || !matches!(method, "GET" | "HEAD") {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("valid admin request");
    let resp = c.send(req).await;
    AdminResponse {
        status: resp.status(),
        body: String::from_utf8_lossy(&resp.body).into_owned(),
    }
}

/// `GET path` on the admin API without a token.
pub async fn admin_get(admin: SocketAddr, path: &str) -> AdminResponse {
    admin_request(admin, "GET", path, None, None).await
}

/// The result of running `zgate ctl`.
#[derive(Debug)]
pub struct CtlOutput {
    /// The exit code.
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `zgate ctl --admin http://<admin> ARGS` (with `ZGATE_ADMIN_TOKEN` set to `token` if
/// given) and waits for it.
pub async fn ctl(admin: SocketAddr, token: Option<&str>, args: &[&str]) -> CtlOutput {
    let mut cmd = tokio::process::Command::new(zgate_bin());
    cmd.arg("ctl")
        .arg("--admin")
        .arg(format!("http://{admin}"))
        .args(args)
        .env_remove("ZGATE_ADMIN")
        .env_remove("ZGATE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("ZGATE_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .expect("zgate ctl finishes in time")
        .expect("run zgate ctl");
    CtlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl ZgateProcess {
    /// Waits (up to `STEP`) for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(l) = self
                .log
                .lock()
                .ok()
                .and_then(|l| l.iter().find(|l| l.contains(needle)).cloned())
            {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.log.lock().map(|l| l.join("\n"))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin API's address, from its `admin API ready addr=...` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_log("admin API ready");
        line.split("addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}
