//! `zgate ctl`'s HTTP client: one request per connection over hyper's HTTP/1.1 client, on
//! plain TCP for `http://` admin URLs and rustls for `https://` (an admin API behind a TLS
//! terminator), verifying the server against the system's trusted roots or `--cacert FILE`.
//!
//! Every error names the URL it was about, so that an operator sees at once which zgate (or
//! which other program on that port) answered or did not.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-exchange timeout (a reload binds sockets and reads files).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read, bytes (a `/metrics` page is far smaller).
const MAX_ANSWER: usize = 16 << 20;

/// Why a request got no usable answer; the message names the URL.
#[derive(Debug)]
pub enum ClientError {
    /// The URL or `--cacert` is wrong (a usage error).
    Setup(String),
    /// No connection, TLS failure, timeout, or not an HTTP answer.
    Unreachable(String),
}

/// The admin API at one URL.
pub struct AdminClient {
    /// The URL as given (normalised: with a scheme, without a trailing `/`).
    pub url: String,
    host: String,
    port: u16,
    authority: String,
    token: Option<String>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl AdminClient {
    /// A client of `url` (`http://HOST:PORT` or `https://HOST:PORT`; `HOST:PORT` means http).
    /// `cacert`: a PEM file of the CA(s) to trust for https instead of the system's roots.
    pub fn new(
        url: &str,
        token: Option<String>,
        cacert: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let full = if url.contains("://") {
            url.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", url.trim_end_matches('/'))
        };
        let bad = |why: &str| ClientError::Setup(format!("admin URL {url:?}: {why}"));
        let uri: Uri = full
            .parse()
            .map_err(|_| bad("not a URL like http://127.0.0.1:7391"))?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad("give only the scheme, host and port"));
        }
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| bad("not a TLS server name"))?;
            Some((connector(cacert, &full)?, name))
        } else {
            None
        };
        Ok(AdminClient {
            authority: authority.as_str().to_owned(),
            url: full,
            host,
            port,
            token,
            tls,
        })
    }

    /// One request; returns the status and the body. `body` is sent as JSON; a mutation
    /// without a body still says `Content-Type: application/json`, as the API requires.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), ClientError> {
        let exchange = self.exchange(method, path, body);
        match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => {
                Err(self.unreachable(format!("no answer within {}s", EXCHANGE_TIMEOUT.as_secs())))
            }
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), ClientError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.unreachable(e.to_string())),
            Err(_) => return Err(self.unreachable("connect timed out".into())),
        };
        let req = self.build(method, path, body)?;
        match &self.tls {
            None => self.send(tcp, req).await,
            Some((tls, name)) => {
                let stream = tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
                self.send(stream, req).await
            }
        }
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Setup(format!("bad method {method:?}")))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.authority.as_str())
            .header(USER_AGENT, concat!("zgate-ctl/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json");
        if body.is_some() || method != Method::GET {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        req.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Setup(format!("{}{path}: {e}", self.url)))
    }

    async fn send<T>(&self, io: T, req: Request<Full<Bytes>>) -> Result<(u16, String), ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.unreachable(format!("not an HTTP answer: {e}")))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        }
        .await;
        driver.abort();
        result
    }

    /// [`ClientError::Unreachable`] naming the URL.
    pub fn unreachable(&self, why: String) -> ClientError {
        ClientError::Unreachable(format!("{}: {why}", self.url))
    }
}

/// A TLS connector trusting `cacert` (PEM) or else the system's roots.
fn connector(cacert: Option<&Path>, url: &str) -> Result<TlsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Setup(format!("--cacert {}: {e}", path.display())))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert
                    .map_err(|e| ClientError::Setup(format!("--cacert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Setup(format!("--cacert {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root that rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(ClientError::Setup(format!(
            "{url}: no trusted certificate: give --cacert FILE (PEM)"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = AdminClient::new("http://127.0.0.1:7391", None, None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.url.as_str()),
            ("127.0.0.1", 7391, "http://127.0.0.1:7391")
        );
        let c = AdminClient::new("127.0.0.1:7391/", None, None).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.url.as_str()),
            ("127.0.0.1:7391", "http://127.0.0.1:7391")
        );
        let c = AdminClient::new("http://[::1]:9", None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 9));
        assert_eq!(
            AdminClient::new("http://localhost", None, None)
                .unwrap()
                .port,
            80
        );
        for bad in ["ftp://x:1", "http://x:1/api", "http://"] {
            assert!(
                matches!(
                    AdminClient::new(bad, None, None),
                    Err(ClientError::Setup(_))
                ),
                "{bad}"
            );
        }
        let e = AdminClient::new("https://x:1", None, Some(Path::new("/nonexistent.pem")));
        assert!(matches!(e, Err(ClientError::Setup(m)) if m.contains("/nonexistent.pem")));
    }
}
