//! How zgate talks to a pool's backends: the protocol (`http1` or `http2`) and TLS
//! (`tls = { server_name, ca }`).
//!
//! Today they are keys of `[upstream]` and apply to the backends of the single pool; they are
//! written as a pool's own settings, so a `[[pool]]` can take them as fields as they are. The
//! proxy loads the CA file (this crate reads no certificates) and names `upstream.tls.ca` when
//! it is missing or bad.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;

/// The protocol spoken to the backends. Default [`UpstreamProtocol::Http1`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// `"http1"`: HTTP/1.1, a pool of connections each carrying one request at a time.
    #[default]
    Http1,
    /// `"http2"`: HTTP/2, a connection per backend shared by concurrent requests (over TLS the
    /// backend must agree to `h2` by ALPN; in cleartext, h2c with prior knowledge).
    Http2,
}

impl UpstreamProtocol {
    /// The word the config uses for it.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }
}

impl<'de> Deserialize<'de> for UpstreamProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "http1" => Ok(UpstreamProtocol::Http1),
            "http2" => Ok(UpstreamProtocol::Http2),
            _ => Err(serde::de::Error::custom(format!(
                "unknown protocol {s:?}: use http1 or http2"
            ))),
        }
    }
}

/// TLS to the backends (`tls = { server_name = "api.internal", ca = "ca.pem" }`). The
/// backend's certificate is always verified: against `ca` when given, else against the
/// system's trusted roots. Default: none (cleartext).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified in the backend's certificate. Default: each
    /// backend's host (an IP address backend is verified against that address, and sends no
    /// SNI).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A PEM file of the certificates to trust (the backends' CA), instead of the system's
    /// roots. Relative to the config file's directory. Read at load and at each reload.
    /// Default: none (the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl UpstreamTls {
    /// Checks the values and resolves `ca` against `base_dir`; `key` is the table's key
    /// (`upstream.tls`), which errors name.
    pub(crate) fn resolve(&mut self, base_dir: &Path, key: &str) -> Result<(), ConfigError> {
        if let Some(name) = &self.server_name {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
            if !ok {
                return Err(ConfigError::key(
                    format!("{key}.server_name"),
                    format!("{name:?} is not a host name or IP address"),
                ));
            }
        }
        if let Some(ca) = &mut self.ca {
            if ca.as_os_str().is_empty() {
                return Err(ConfigError::key(format!("{key}.ca"), "empty path"));
            }
            *ca = base_dir.join(&*ca);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default)]
        protocol: UpstreamProtocol,
        tls: Option<UpstreamTls>,
    }

    #[test]
    fn protocol_words() {
        let t: T = toml::from_str("").unwrap();
        assert_eq!(t.protocol, UpstreamProtocol::Http1);
        let t: T = toml::from_str("protocol = \"http2\"").unwrap();
        assert_eq!(t.protocol, UpstreamProtocol::Http2);
        assert_eq!(t.protocol.name(), "http2");
        let e = toml::from_str::<T>("protocol = \"h3\"").unwrap_err();
        assert!(e.to_string().contains("http1 or http2"), "{e}");
    }

    #[test]
    fn tls_resolves_and_checks() {
        let mut t: T =
            toml::from_str("tls = { server_name = \"api.internal\", ca = \"ca.pem\" }").unwrap();
        let tls = t.tls.as_mut().unwrap();
        tls.resolve(Path::new("/etc/zgate"), "upstream.tls")
            .unwrap();
        assert_eq!(tls.ca.as_deref(), Some(Path::new("/etc/zgate/ca.pem")));
        let mut bad = UpstreamTls {
            server_name: Some("a b".into()),
            ca: None,
        };
        let e = bad.resolve(Path::new("."), "upstream.tls").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.tls.server_name"));
        let e = toml::from_str::<T>("tls = { sni = \"x\" }").unwrap_err();
        assert!(e.to_string().contains("sni"), "{e}");
    }
}
