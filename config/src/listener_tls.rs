//! A TLS listener's certificates: one (`tls = { cert, key }`) or several chosen by SNI
//! (`tls = { certs = [{ cert, key }, { cert, key, default = true }] }`).
//!
//! The proxy loads the files, matches each client's SNI against each certificate's DNS names
//! (exact, then wildcard), and uses the default certificate when there is no SNI or it
//! matches none: the one marked `default = true`, else the first.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// PEM files for a TLS listener. Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTls")]
pub struct TlsFiles {
    /// The certificates, in config order; never empty.
    pub certs: Vec<CertFiles>,
    /// Written as a `certs` list (its keys are then `tls.certs[N].cert`), rather than as one
    /// `cert` and `key` (`tls.cert`).
    pub listed: bool,
}

/// One certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The certificate for clients that send no SNI or one no certificate matches. At most
    /// one per listener. Default `false` (then the first certificate is the default).
    #[serde(default)]
    pub default: bool,
}

impl TlsFiles {
    /// The position of the default certificate: the one marked `default = true`, else 0.
    pub fn default_index(&self) -> usize {
        self.certs.iter().position(|c| c.default).unwrap_or(0)
    }

    /// The config key of certificate `index` under the listener's `tls` key `tls_key`
    /// (`listener[0].tls` gives `listener[0].tls` or `listener[0].tls.certs[1]`).
    pub fn key_of(&self, tls_key: &str, index: usize) -> String {
        if self.listed {
            format!("{tls_key}.certs[{index}]")
        } else {
            tls_key.to_owned()
        }
    }

    /// Resolves the paths against `base_dir`.
    pub(crate) fn resolve(&mut self, base_dir: &Path) {
        for c in &mut self.certs {
            c.cert = base_dir.join(&c.cert);
            c.key = base_dir.join(&c.key);
        }
    }
}

/// The table as written: one of the two shapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    certs: Option<Vec<CertFiles>>,
}

impl TryFrom<RawTls> for TlsFiles {
    type Error = String;

    fn try_from(raw: RawTls) -> Result<Self, String> {
        match (raw.cert, raw.key, raw.certs) {
            (Some(cert), Some(key), None) => Ok(TlsFiles {
                certs: vec![CertFiles {
                    cert,
                    key,
                    default: true,
                }],
                listed: false,
            }),
            (None, None, Some(certs)) => {
                if certs.is_empty() {
                    return Err("`certs` is empty: list at least one { cert, key }".into());
                }
                if certs.iter().filter(|c| c.default).count() > 1 {
                    return Err("`certs`: more than one has `default = true`".into());
                }
                Ok(TlsFiles {
                    certs,
                    listed: true,
                })
            }
            (None, None, None) => Err("give `cert` and `key`, or `certs`".into()),
            (_, _, Some(_)) => Err("give either `cert` and `key`, or `certs`, not both".into()),
            (Some(_), None, None) => Err("`cert` without `key`".into()),
            (None, Some(_), None) => Err("`key` without `cert`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        tls: TlsFiles,
    }

    fn parse(text: &str) -> Result<TlsFiles, String> {
        toml::from_str::<T>(text)
            .map(|t| t.tls)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn both_shapes() {
        let t = parse("tls = { cert = \"c.pem\", key = \"k.pem\" }").unwrap();
        assert_eq!(t.certs.len(), 1);
        assert!(!t.listed);
        assert_eq!(t.key_of("listener[0].tls", 0), "listener[0].tls");
        let t = parse(
            "tls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"b.key\", default = true }] }",
        )
        .unwrap();
        assert_eq!(t.certs.len(), 2);
        assert_eq!(t.default_index(), 1);
        assert_eq!(t.key_of("listener[0].tls", 1), "listener[0].tls.certs[1]");
        let t = parse("tls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }] }").unwrap();
        assert_eq!(t.default_index(), 0);
    }

    #[test]
    fn mistakes_are_refused() {
        for (text, says) in [
            ("tls = { cert = \"c.pem\" }", "without `key`"),
            ("tls = { key = \"k.pem\" }", "without `cert`"),
            ("tls = { certs = [] }", "empty"),
            ("tls = {}", "give `cert`"),
            (
                "tls = { cert = \"c\", key = \"k\", certs = [{ cert = \"a\", key = \"b\" }] }",
                "not both",
            ),
            (
                "tls = { certs = [{ cert = \"a\", key = \"b\", default = true }, { cert = \"c\", key = \"d\", default = true }] }",
                "more than one",
            ),
            ("tls = { certs = [{ cert = \"a\", key = \"b\", sni = \"x\" }] }", "sni"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
