//! How a pool reaches its backends: the protocol (`http1`, `http2`) and TLS, loaded once from
//! the config (the CA file is read here, at load and at each reload) into a [`BackendLink`]
//! that [`super::Upstream::with_link`] takes, and, per backend, the name its certificate is
//! verified against.
//!
//! Roots: a `ca` PEM file, else the system's trust store through `rustls-native-certs` (the
//! crate `zgate ctl` already uses for `https://`): the operator's own CAs added to the OS
//! store apply, and the list is updated with the OS, rather than compiled into zgate as
//! `webpki-roots` would be. Verification cannot be turned off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::uri::Authority;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use zgate_config::{UpstreamProtocol, UpstreamTls};

/// Why a pool's TLS to its backends cannot be set up; each variant names the config key
/// (`upstream.tls.ca`, `upstream.tls.server_name`, `upstream.tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTlsError {
    /// The CA file cannot be read or is not PEM.
    CaRead {
        /// The key, e.g. `upstream.tls.ca`.
        key: String,
        /// The file.
        path: PathBuf,
        /// What the OS or the PEM parser said.
        reason: String,
    },
    /// The CA file holds no usable certificate.
    CaEmpty {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// No `ca`, and the system has no trusted roots to verify backends against.
    NoSystemRoots {
        /// The key of the `tls` table.
        key: String,
    },
    /// The server name (given, or a backend's host) is not a DNS name or an IP address.
    ServerName {
        /// The key: `upstream.tls.server_name`, or the backend's address key.
        key: String,
        /// The name.
        name: String,
    },
    /// rustls refused the settings.
    Rejected {
        /// The key of the `tls` table.
        key: String,
        /// rustls's reason.
        reason: String,
    },
}

impl std::fmt::Display for UpstreamTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTlsError::CaRead { key, path, reason } => {
                write!(f, "`{key}`: cannot read {}: {reason}", path.display())
            }
            UpstreamTlsError::CaEmpty { key, path } => {
                write!(f, "`{key}`: {}: no certificate in the file", path.display())
            }
            UpstreamTlsError::NoSystemRoots { key } => write!(
                f,
                "`{key}`: the system has no trusted root certificates: give `ca`"
            ),
            UpstreamTlsError::ServerName { key, name } => {
                write!(f, "`{key}`: {name:?} is not a DNS name or an IP address")
            }
            UpstreamTlsError::Rejected { key, reason } => write!(f, "`{key}`: {reason}"),
        }
    }
}

impl std::error::Error for UpstreamTlsError {}

/// A pool's way to its backends: protocol and TLS, shared by its backends.
#[derive(Debug, Clone, Default)]
pub struct BackendLink {
    pub(super) protocol: UpstreamProtocol,
    pub(super) tls: Option<TlsLink>,
}

/// TLS to a pool's backends.
#[derive(Clone)]
pub(super) struct TlsLink {
    /// Roots and ALPN (`h2` or `http/1.1`, to match the protocol).
    pub(super) config: Arc<ClientConfig>,
    /// `server_name` when configured; else each backend's host.
    server_name: Option<ServerName<'static>>,
    /// The `tls` table's key, for errors.
    key: String,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl BackendLink {
    /// Cleartext HTTP/1.1, the default.
    pub fn plain() -> BackendLink {
        BackendLink::default()
    }

    /// Loads `protocol` and `tls` (the CA file, or the system roots); `tls_key` is the key of
    /// the `tls` table (`upstream.tls`), which errors name.
    pub fn load(
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTls>,
        tls_key: &str,
    ) -> Result<BackendLink, UpstreamTlsError> {
        let Some(tls) = tls else {
            return Ok(BackendLink {
                protocol,
                tls: None,
            });
        };
        let roots = match &tls.ca {
            Some(path) => ca_roots(path, &format!("{tls_key}.ca"))?,
            None => system_roots(tls_key)?,
        };
        let server_name = match &tls.server_name {
            Some(name) => Some(server_name(name, &format!("{tls_key}.server_name"))?),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamTlsError::Rejected {
                key: tls_key.to_owned(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
        Ok(BackendLink {
            protocol,
            tls: Some(TlsLink {
                config: Arc::new(config),
                server_name,
                key: tls_key.to_owned(),
            }),
        })
    }

    /// The protocol spoken to the backends.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Whether the backends are reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl TlsLink {
    /// The name backend `authority`'s certificate is verified against (and sent as SNI when
    /// it is a DNS name): `server_name`, else the backend's host.
    pub(super) fn name_for(
        &self,
        authority: &Authority,
    ) -> Result<ServerName<'static>, UpstreamTlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = authority.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        server_name(bare, &self.key)
    }
}

fn server_name(name: &str, key: &str) -> Result<ServerName<'static>, UpstreamTlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| UpstreamTlsError::ServerName {
        key: key.to_owned(),
        name: name.to_owned(),
    })
}

/// The certificates of a PEM file, as roots.
fn ca_roots(path: &Path, key: &str) -> Result<RootCertStore, UpstreamTlsError> {
    let read = |reason: String| UpstreamTlsError::CaRead {
        key: key.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(UpstreamTlsError::CaEmpty {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The system's trusted roots.
fn system_roots(key: &str) -> Result<RootCertStore, UpstreamTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(UpstreamTlsError::NoSystemRoots {
            key: key.to_owned(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca: Option<&str>, name: Option<&str>) -> UpstreamTls {
        UpstreamTls {
            server_name: name.map(str::to_owned),
            ca: ca.map(PathBuf::from),
        }
    }

    #[test]
    fn a_missing_or_bad_ca_names_the_key() {
        let e = BackendLink::load(
            UpstreamProtocol::Http1,
            Some(&tls(Some("/nonexistent/ca.pem"), None)),
            "upstream.tls",
        )
        .unwrap_err();
        assert!(matches!(e, UpstreamTlsError::CaRead { .. }));
        assert!(
            e.to_string().starts_with("`upstream.tls.ca`: cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("zgate-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = BackendLink::load(
            UpstreamProtocol::Http2,
            Some(&tls(file.to_str(), None)),
            "upstream.tls",
        )
        .unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(e, UpstreamTlsError::CaEmpty { .. }), "{e}");
        assert!(e.to_string().contains("`upstream.tls.ca`"), "{e}");
    }

    #[test]
    fn plain_link_and_names() {
        let l = BackendLink::load(UpstreamProtocol::Http2, None, "upstream.tls").unwrap();
        assert!(!l.is_tls());
        assert_eq!(l.protocol(), UpstreamProtocol::Http2);
        let link = TlsLink {
            config: Arc::new(
                ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
            ),
            server_name: None,
            key: "upstream.tls".into(),
        };
        let ip = link.name_for(&"127.0.0.1:443".parse().unwrap()).unwrap();
        assert!(matches!(ip, ServerName::IpAddress(_)));
        let v6 = link.name_for(&"[::1]:443".parse().unwrap()).unwrap();
        assert!(matches!(v6, ServerName::IpAddress(_)));
        let dns = link.name_for(&"api.internal:443".parse().unwrap()).unwrap();
        assert_eq!(dns.to_str(), "api.internal");
    }
}
