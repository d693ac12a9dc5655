//! TLS listeners with several certificates chosen by SNI (`tls = { certs = [...] }`): each
//! client sees the certificate for the name it asked for (exact or wildcard), the default
//! without SNI or for an unknown name, requests go through over h2 and HTTP/1.1, and a reload
//! that replaces a certificate file takes effect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use zgate_tests::pki::{Leaf, TestCa};
use zgate_tests::{addr, backend, config, config_text, get, Client, TempDir, STEP};

/// Accepts any certificate and remembers the leaf it was shown (the test looks at which
/// certificate the server chose, not whether it is valid for the name).
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("lock") = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The leaf certificate the listener at `p` presents for `sni` (`None`: no SNI, as when
/// connecting by IP address).
async fn presented(p: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).expect("name"),
        None => ServerName::IpAddress(p.ip().into()),
    };
    let tcp = TcpStream::connect(p).await.expect("connect");
    let tls = tokio::time::timeout(
        STEP,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The handshake went through: a request over it is answered.
    let mut c = Client::from_stream(tls, true).await;
    assert_eq!(c.send(get(p, "/")).await.status(), 200);
    let seen = recorder.seen.lock().expect("lock").clone();
    seen.expect("a certificate was presented")
}

fn listener_tls(a: &Leaf, b: &Leaf) -> String {
    format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\", default = true }}] }}\n",
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        b.key_path.display(),
    )
}

#[tokio::test]
async fn the_certificate_follows_the_sni_and_a_reload_replaces_it() {
    let dir = TempDir::new("sni");
    let ca = TestCa::new("test", dir.path());
    let a = ca.leaf(&["a.test"], dir.path(), "a");
    let b = ca.leaf(&["b.test", "*.w.test"], dir.path(), "b");
    let be = backend().await;
    let file = dir.path().join("zgate.toml");
    let text = config_text(&[be.addr()], "").replacen(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n",
        &listener_tls(&a, &b),
        1,
    );
    std::fs::write(&file, &text).expect("write config");
    let s = zgate_proxy::Server::start_with_path(config(&text, dir.path()), Some(file))
        .await
        .expect("zgate starts");
    let p = addr(&s);
    assert_eq!(presented(p, Some("a.test")).await, a.der);
    assert_eq!(presented(p, Some("b.test")).await, b.der);
    assert_eq!(presented(p, Some("x.w.test")).await, b.der, "wildcard");
    assert_eq!(presented(p, Some("x.y.w.test")).await, b.der, "default");
    assert_eq!(presented(p, Some("unknown.test")).await, b.der, "default");
    assert_eq!(presented(p, None).await, b.der, "no SNI: the default");
    // A reload with a new certificate for a.test in the same files.
    let a2 = ca.leaf(&["a.test"], dir.path(), "a");
    assert_ne!(a2.der, a.der);
    let r = s.reload().expect("valid reload");
    assert!(r.listeners_added.is_empty());
    assert_eq!(
        presented(p, Some("a.test")).await,
        a2.der,
        "re-read on reload"
    );
    assert_eq!(presented(p, Some("b.test")).await, b.der);
}

#[tokio::test]
async fn the_first_certificate_is_the_default_and_the_single_shape_still_works() {
    let dir = TempDir::new("sni-first");
    let ca = TestCa::new("test", dir.path());
    let a = ca.leaf(&["a.test"], dir.path(), "a");
    let b = ca.leaf(&["b.test"], dir.path(), "b");
    let be = backend().await;
    let listed = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}] }}\n",
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        b.key_path.display(),
    );
    let text = config_text(&[be.addr()], "").replacen(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n",
        &listed,
        1,
    );
    let s = zgate_tests::proxy(config(&text, dir.path())).await;
    assert_eq!(presented(addr(&s), None).await, a.der);
    assert_eq!(presented(addr(&s), Some("b.test")).await, b.der);
    let single = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        b.cert_path.display(),
        b.key_path.display(),
    );
    let text = config_text(&[be.addr()], "").replacen(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n",
        &single,
        1,
    );
    let s = zgate_tests::proxy(config(&text, dir.path())).await;
    assert_eq!(presented(addr(&s), Some("a.test")).await, b.der);
}

#[tokio::test]
async fn a_key_that_does_not_fit_is_named_by_its_place_in_the_list() {
    let dir = TempDir::new("sni-bad");
    let ca = TestCa::new("test", dir.path());
    let a = ca.leaf(&["a.test"], dir.path(), "a");
    let b = ca.leaf(&["b.test"], dir.path(), "b");
    let crossed = format!(
        "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}] }}\n[[backend]]\naddr = \"127.0.0.1:9\"\n",
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        a.key_path.display(),
    );
    let e = match zgate_proxy::Server::start(config(&crossed, dir.path())).await {
        Ok(_) => panic!("a key that does not fit must refuse the start"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("`listener[0].tls.certs[1]`"), "{e}");
}
