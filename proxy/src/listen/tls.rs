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

/// Builds the server config of a TLS listener: every certificate loaded and matched to its
/// key, chosen by SNI ([`SniResolver`]). `tls_key` is the config key (such as
/// `listener[0].tls`) that errors name.
pub fn server_config(files: &TlsFiles, tls_key: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
