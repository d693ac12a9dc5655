//! TLS for listeners: PEM files to a rustls server config offering h2 and http/1.1 by ALPN,
//! with one certificate or several chosen by SNI (`sni.rs`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use zgate_config::TlsFiles;

use super::sni::SniResolver;

/// Why a listener's TLS could not be set up. Its message names the config key (such as
/// `listener[0].tls.cert`) and the file.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be opened or read.
    Read {
        /// The config key, e.g. `listener[0].tls.key`.
        key: String,
        /// The file.
        path: PathBuf,
        /// What the OS or the PEM parser said.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    NoCertificate {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    NoKey {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// The session ticket keys could not be made (no randomness).
    Ticketer {
        /// The config key of the listener's `tls`.
        key: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused the pair (the key does not fit the certificate, an unsupported key).
    Rejected {
        /// The config key of the listener's `tls` (or of its `tls.certs[N]`).
        key: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read { key, path, source } => {
                write!(f, "`{key}`: cannot read {}: {source}", path.display())
            }
            TlsError::NoCertificate { key, path } => {
                write!(f, "`{key}`: {}: no certificate in the file", path.display())
            }
            TlsError::NoKey { key, path } => {
                write!(f, "`{key}`: {}: no private key in the file", path.display())
            }
            TlsError::Ticketer { key, source } => {
                write!(f, "`{key}`: cannot make session ticket keys: {source}")
            }
            TlsError::Rejected { key, source } => {
                write!(f, "`{key}`: certificate and key do not fit: {source}")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rejected { source, .. } | TlsError::Ticketer { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The TLS acceptor of listener `i`, if it has TLS (reads and checks the PEM files).
pub(crate) fn tls_acceptor(
    l: &zgate_config::Listener,
    i: usize,
) -> Result<Option<TlsAcceptor>, TlsError> {
    match &l.tls {
        Some(files) => Ok(Some(TlsAcceptor::from(server_config(
            files,
            &format!("listener[{i}].tls"),
        )?))),
        None => Ok(None),
    }
}

/// The crypto of TLS listeners: `ring` for the cipher suites (AEAD, HKDF), signatures and
/// randomness, `aws-lc-rs` for the key exchange. A new connection's largest cost is its
/// ephemeral X25519 (a key pair and one agreement, even when the session resumes), and
/// aws-lc's X25519 (s2n-bignum assembly) takes about 40% less CPU than ring's
/// (bench/results/issue-17.md, TLS). The groups are the ones ring offers (X25519, P-256,
/// P-384), in the same order. aws-lc's post-quantum hybrid X25519MLKEM768 is left out: a
/// client listing it first (current browsers do) would get it, ML-KEM-768 on top of X25519 in
/// every handshake; offering it is a choice of its own, not made here.
///
/// The TLS 1.3 suites put `TLS13_AES_128_GCM_SHA256` first: its key schedule runs HKDF over
/// SHA-256, which ring computes with the CPU's SHA extensions where it has them, where
/// SHA-384 (the AES-256 suite) runs ring's portable SHA-512 code on AMD CPUs. TLS 1.2 suites
/// likewise put AES-128-GCM (SHA-256 PRF) first. See [`server_config`] for the choice.
pub(crate) fn listener_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::aws_lc_rs::kx_group;
    use rustls::CipherSuite as Cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    // A stable sort: each version's suites keep their relative order otherwise.
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        Cs::TLS13_AES_128_GCM_SHA256
        | Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        Cs::TLS13_AES_256_GCM_SHA384
        | Cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | Cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    provider
}

/// Builds the server config of a TLS listener: every certificate loaded and matched to its
/// key, chosen by SNI ([`SniResolver`]). `tls_key` is the config key (such as
/// `listener[0].tls`) that errors name.
///
/// The suite is the server's choice ([`listener_provider`]'s order, `ignore_client_order`):
/// AES-128-GCM with SHA-256 for every client, including those that list AES-256-GCM first
/// (OpenSSL-based clients: curl, wrk) or ChaCha20-Poly1305 first (clients without AES
/// instructions, which then run AES in software). Every TLS 1.3 client implements it (RFC
/// 8446 §9.1); browsers already list it first.
pub fn server_config(files: &TlsFiles, tls_key: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(listener_provider());
    let mut keys = Vec::with_capacity(files.certs.len());
    for (j, pair) in files.certs.iter().enumerate() {
        let key_name = files.key_of(tls_key, j);
        let certs = load_certs(&pair.cert, &format!("{key_name}.cert"))?;
        let private = load_key(&pair.key, &format!("{key_name}.key"))?;
        let certified = CertifiedKey::from_der(certs, private, &provider).map_err(|source| {
            TlsError::Rejected {
                key: key_name.clone(),
                source,
            }
        })?;
        keys.push(Arc::new(certified));
    }
    let Some(default) = keys.get(files.default_index()).or(keys.first()) else {
        // The config crate refuses an empty `certs`; a listener without one has no TLS.
        return Err(TlsError::NoCertificate {
            key: format!("{tls_key}.certs"),
            path: PathBuf::new(),
        });
    };
    let mut resolver = SniResolver::new(default.clone());
    for k in &keys {
        resolver.add(k);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rejected {
            key: tls_key.to_owned(),
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Session resumption: stateless tickets (TLS 1.2 and 1.3), so a returning client skips
    // the certificate signature; the keys live in memory, rotate every 6 hours, and are new
    // after a restart or a reload (a client's old ticket then costs a full handshake).
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Ticketer {
            key: tls_key.to_owned(),
            source,
        })?;
    // One TLS 1.3 ticket per handshake (rustls sends 2): a client that reconnects spends one
    // ticket per connection and gets a new one each time; each ticket costs two random draws
    // and an encryption. A client opening several connections at once resumes only as many
    // as it holds tickets.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read = |source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(read)?
        .ok_or_else(|| TlsError::NoKey {
            key: key.to_owned(),
            path: path.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{CipherSuite, ClientConfig, ClientConnection, DigitallySignedStruct};
    use rustls::{NamedGroup, ProtocolVersion, ServerConnection, SignatureScheme};
    use zgate_config::CertFiles;

    /// Trusts any certificate: these tests look at what the server negotiates.
    #[derive(Debug)]
    struct AnyCert(Vec<SignatureScheme>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
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
            self.0.clone()
        }
    }

    /// A listener's server config over a self-signed ECDSA P-256 pair written to a temporary
    /// directory.
    fn listener_config(tag: &str) -> Arc<ServerConfig> {
        let dir = std::env::temp_dir().join(format!("zgate-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
        let files = TlsFiles {
            certs: vec![CertFiles {
                cert,
                key,
                default: false,
            }],
            listed: false,
        };
        let config = server_config(&files, "listener[0].tls").expect("config");
        let _ = std::fs::remove_dir_all(&dir);
        config
    }

    /// A client with ring's default suite order (AES-256-GCM first, as OpenSSL's), or only
    /// `suites` and `versions` when given.
    fn client(suites: Option<&[CipherSuite]>, v12_only: bool) -> ClientConnection {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(only) = suites {
            provider.cipher_suites.retain(|s| only.contains(&s.suite()));
        }
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let versions: &[&rustls::SupportedProtocolVersion] = if v12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(schemes)))
            .with_no_client_auth();
        ClientConnection::new(Arc::new(cfg), "localhost".try_into().expect("name")).expect("client")
    }

    /// Runs the handshake and what follows it (the tickets) in memory.
    fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).expect("client writes");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("server reads");
            }
            s.process_new_packets().expect("server accepts");
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).expect("server writes");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("client reads");
            }
            c.process_new_packets().expect("client accepts");
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
    }

    #[test]
    fn aes_128_gcm_sha256_is_chosen_over_the_clients_order_and_one_ticket_is_sent() {
        let config = listener_config("order");
        let mut c = client(None, false);
        let mut s = ServerConnection::new(config.clone()).expect("server");
        handshake(&mut c, &mut s);
        assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        let suite = s.negotiated_cipher_suite().expect("suite").suite();
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        let group = s.negotiated_key_exchange_group().expect("group").name();
        assert_eq!(group, NamedGroup::X25519);
        assert_eq!(c.tls13_tickets_received(), 1);
    }

    #[test]
    fn other_suites_and_tls12_still_negotiate() {
        let config = listener_config("others");
        let chacha = [CipherSuite::TLS13_CHACHA20_POLY1305_SHA256];
        let mut c = client(Some(&chacha), false);
        let mut s = ServerConnection::new(config.clone()).expect("server");
        handshake(&mut c, &mut s);
        assert_eq!(
            s.negotiated_cipher_suite().expect("suite").suite(),
            chacha[0]
        );

        let mut c = client(None, true);
        let mut s = ServerConnection::new(config).expect("server");
        handshake(&mut c, &mut s);
        assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(
            s.negotiated_cipher_suite().expect("suite").suite(),
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
    }
}
