//! `fleet.ca`: the PEM file of CA certificates that `rediss://` trusts, read and checked when
//! the config is checked (start, `check-config`, a reload), so a bad file stops zgate naming the
//! key instead of surfacing later as a Redis connection that never succeeds.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why `fleet.ca` is not usable. Its `Display` names the key.
#[derive(Debug)]
pub enum FleetCaError {
    /// The file could not be read, or its PEM does not parse.
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS or the PEM parser said.
        source: std::io::Error,
    },
    /// The file holds no certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate is not usable as a trust anchor.
    Rejected {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

impl std::fmt::Display for FleetCaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetCaError::Read { path, source } => {
                write!(f, "`fleet.ca`: cannot read {}: {source}", path.display())
            }
            FleetCaError::NoCertificate { path } => {
                write!(
                    f,
                    "`fleet.ca`: {}: no certificate in the file",
                    path.display()
                )
            }
            FleetCaError::Rejected { path, source } => write!(
                f,
                "`fleet.ca`: {}: not a usable CA certificate: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FleetCaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FleetCaError::Read { source, .. } => Some(source),
            FleetCaError::Rejected { source, .. } => Some(source),
            FleetCaError::NoCertificate { .. } => None,
        }
    }
}

/// The file at `path` as PEM bytes, once every certificate in it parsed as a trust anchor.
pub(crate) fn load(path: &Path) -> Result<Vec<u8>, FleetCaError> {
    let read = |source| FleetCaError::Read {
        path: path.to_owned(),
        source,
    };
    let pem = std::fs::read(path).map_err(read)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(FleetCaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| FleetCaError::Rejected {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_loads_and_bad_ones_name_the_key() {
        let dir = std::env::temp_dir().join(format!("zgate-fleet-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert_eq!(load(&good).unwrap(), ca.cert.pem().into_bytes());

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = load(&empty).unwrap_err();
        assert!(matches!(e, FleetCaError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().starts_with("`fleet.ca`: "), "{e}");

        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load(&garbage).unwrap_err();
        assert!(matches!(e, FleetCaError::Rejected { .. }), "{e}");

        let e = load(&dir.join("missing.pem")).unwrap_err();
        assert!(matches!(e, FleetCaError::Read { .. }), "{e}");
        assert!(e.to_string().contains("`fleet.ca`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
