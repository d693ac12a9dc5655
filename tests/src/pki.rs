//! Throwaway PKI for the TLS tests: a certificate authority made at run time, leaf
//! certificates it signs for chosen names, written as PEM files, and test backends that speak
//! TLS (HTTP/1.1 or h2 by ALPN) or h2c behind a certificate of this CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Barrier};

use crate::loopback0;

/// A certificate authority: its certificate and key, and its certificate as a PEM file.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, DER (to trust on a client).
    pub der: CertificateDer<'static>,
    /// The CA certificate as PEM, `ca.pem` in `dir`.
    pub pem_path: PathBuf,
}

impl TestCa {
    /// A fresh CA named `name`, its certificate written into `dir`.
    pub fn new(name: &str, dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).expect("write CA");
        TestCa {
            der: cert.der().clone(),
            cert,
            key,
            pem_path,
        }
    }

    /// A leaf certificate for `names` (DNS names, `*.` wildcards or IP addresses), signed by
    /// this CA, written as `<file>.pem` and `<file>.key` in `dir`.
    pub fn leaf(&self, names: &[&str], dir: &Path, file: &str) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write leaf");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_path,
            key_path,
        }
    }
}

/// A leaf certificate and its key, in memory and as PEM files.
pub struct Leaf {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// `<file>.pem`.
    pub cert_path: PathBuf,
    /// `<file>.key`.
    pub key_path: PathBuf,
}

impl Leaf {
    /// A rustls server config serving this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::try_from(self.key_der.clone()).expect("key DER");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A test backend: HTTP/1.1 or HTTP/2 (told apart by the preface), over TLS when given a
/// server config. It answers every request 200 with `x-backend-version` (the request's HTTP
/// version as the backend saw it), `x-backend-alpn` (the protocol ALPN chose, `-` without),
/// and `x-backend-authority` (the URI's authority, or `Host`); its body is the request's body
/// for `/echo`, a greeting otherwise. `/gate` answers only when
/// `gate` requests are waiting together (a barrier), so a test can prove they were in flight
/// at once.
pub struct TestBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    close: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// Starts on an ephemeral loopback port; `tls` makes it a TLS server; `gate` is the number
    /// of `/gate` requests that must arrive before any is answered (0: no gate).
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, gate: usize) -> TestBackend {
        let listener = TcpListener::bind(loopback0()).await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (close, close_rx) = watch::channel(0u64);
        let barrier = Arc::new(Barrier::new(gate.max(1)));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (acc, opn) = (accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (acceptor, barrier, open, mut close) = (
                    acceptor.clone(),
                    barrier.clone(),
                    opn.clone(),
                    close_rx.clone(),
                );
                close.mark_unchanged();
                tokio::spawn(async move {
                    open.fetch_add(1, Ordering::SeqCst);
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let alpn = tls
                                    .get_ref()
                                    .1
                                    .alpn_protocol()
                                    .map(|p| String::from_utf8_lossy(p).into_owned())
                                    .unwrap_or_else(|| "-".into());
                                serve(tls, alpn, barrier, &mut close).await;
                            }
                        }
                        None => serve(tcp, "-".into(), barrier, &mut close).await,
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestBackend {
            addr,
            accepted,
            open,
            close,
            task,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every open connection (gracefully: HTTP/2 GOAWAY, HTTP/1 close when idle).
    pub fn close_connections(&self) {
        self.close.send_modify(|n| *n += 1);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<IO>(io: IO, alpn: String, barrier: Arc<Barrier>, close: &mut watch::Receiver<u64>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (alpn, barrier) = (alpn.clone(), barrier.clone());
        async move {
            if req.uri().path() == "/gate" {
                barrier.wait().await;
            }
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            let version = req.version();
            let body = if req.uri().path() == "/echo" {
                match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::from_static(b"broken body\n"),
                }
            } else {
                Bytes::from_static(b"hello from the test backend\n")
            };
            let resp = Response::builder()
                .header("x-backend-version", format!("{version:?}"))
                .header("x-backend-alpn", alpn)
                .header("x-backend-authority", authority)
                .body(Full::new(body))
                .expect("response");
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = close.changed(), if !closing => {
                closing = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
