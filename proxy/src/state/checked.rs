//! A config checked whole: every step that start (and a reload) can fail on, done once.
//!
//! [`Checked::new`] runs the file's own validation's complement: the `[limits]` mapping onto
//! the limiter's settings (with the limiter's own checks), the backends, pools and routes
//! (and `upstream.tls.ca`, read), every TLS listener's files (loaded, and each key matched to
//! its certificate), `fleet.ca` (loaded, every certificate a usable trust anchor), and the
//! ranges that only the proxy knows. `zgate check-config`, [`crate::Server::start`] and a reload all go through it, so
//! what `check-config` calls good is what start accepts; only binding the sockets is left to
//! start (an address in use is a fact of the machine at that moment, not of the file).
//!
//! Every error names the file (when there is one) and the key as written in it.

use std::path::{Path, PathBuf};

use tokio_rustls::TlsAcceptor;
use zgate_config::{Config, ConfigError};
use zgate_limiter::{LimiterConfig, Mode};

use crate::http::Router;
use crate::limits::{self, LimitsError, ProxyLimits};
use crate::listen::tls::TlsError;
use crate::listen::tls_acceptor;
use crate::state::fleet_ca::{self, FleetCaError};
use crate::state::persist;
use crate::upstream::BackendsError;

/// Smallest `http.h2_max_header_list_bytes`, bytes. Below it an ordinary request's headers
/// (pseudo-headers, a user agent, a few cookies) do not fit, and h2 answers every request
/// with a stream error (and, repeated, `ENHANCE_YOUR_CALM`, which blocks the client).
pub const MIN_H2_HEADER_LIST_BYTES: u32 = 4096;

/// A config that start will accept: its values in range, `[limits]` mapped, backends parsed,
/// TLS files loaded.
pub struct Checked {
    /// The config as loaded.
    pub config: Config,
    /// The backend pools and routes it describes (no connection made yet).
    pub upstream: Router,
    /// `[limits]` for the limiter.
    pub limiter_config: LimiterConfig,
    /// `[limits]` for the proxy.
    pub proxy_limits: ProxyLimits,
    /// Each listener's TLS acceptor, in config order (`None`: cleartext).
    pub tls: Vec<Option<TlsAcceptor>>,
    /// `fleet.ca`'s PEM, checked (`None`: no `fleet.ca`).
    pub fleet_ca: Option<Vec<u8>>,
}

/// Why a config cannot start, with the file it came from. Its `Display` is
/// `FILE: `key`: problem`.
#[derive(Debug)]
pub struct CheckError {
    /// The config file, when the config came from one.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a config; every variant names the file's key.
#[derive(Debug)]
pub enum Problem {
    /// The file does not parse or a value fails the config crate's own validation.
    Config(ConfigError),
    /// A value is out of the range only the proxy knows.
    Range {
        /// The key as written in the file, e.g. `http.h2_max_header_list_bytes`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `[limits]` does not map onto the limiter's settings (its `Display` names the key).
    Limits(LimitsError),
    /// The backends cannot be used.
    Backends(BackendsError),
    /// A listener's TLS files do not load or do not fit each other.
    Tls(TlsError),
    /// `fleet.ca` does not load.
    FleetCa(FleetCaError),
    /// `limits.mode` is `defence` or `monitor` and there is no model to start with (none in
    /// `limits.state_file`, or no state file).
    NoModel {
        /// The start mode.
        mode: Mode,
        /// Where a model was looked for.
        state_file: Option<PathBuf>,
    },
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match &self.problem {
            Problem::Config(e) => {
                if let Some(key) = &e.key {
                    write!(f, "`{key}`: ")?;
                }
                f.write_str(&e.message)
            }
            Problem::Range { key, message } => write!(f, "`{key}`: {message}"),
            Problem::Limits(e) => e.fmt(f),
            Problem::Backends(e) => e.fmt(f),
            Problem::Tls(e) => e.fmt(f),
            Problem::FleetCa(e) => e.fmt(f),
            Problem::NoModel { mode, state_file } => {
                write!(f, "`limits.mode`: {mode} needs a model, and there is none ")?;
                match state_file {
                    Some(p) => write!(f, "in `limits.state_file` ({})", p.display())?,
                    None => f.write_str("(no `limits.state_file`)")?,
                }
                f.write_str(": start in training, or import a model first")
            }
        }
    }
}

impl std::error::Error for CheckError {}

impl Checked {
    /// Loads the file at `path` and checks all of it.
    pub fn load(path: &Path) -> Result<Checked, CheckError> {
        let config = Config::load(path).map_err(|mut e| {
            e.file = None;
            CheckError {
                file: Some(path.to_owned()),
                problem: Problem::Config(e),
            }
        })?;
        Self::new(config).map_err(|e| CheckError {
            file: Some(path.to_owned()),
            ..e
        })
    }

    /// Checks an already parsed config (errors carry no file).
    pub fn new(config: Config) -> Result<Checked, CheckError> {
        let fail = |problem| CheckError {
            file: None,
            problem,
        };
        check_ranges(&config).map_err(fail)?;
        let (limiter_config, proxy_limits) =
            limits::from_config(&config.limits).map_err(|e| fail(Problem::Limits(e)))?;
        let upstream = Router::new(&config).map_err(|e| fail(Problem::Backends(e)))?;
        let tls = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| tls_acceptor(l, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(Problem::Tls(e)))?;
        let fleet_ca = config
            .fleet
            .as_ref()
            .and_then(|f| f.ca.as_deref())
            .map(fleet_ca::load)
            .transpose()
            .map_err(|e| fail(Problem::FleetCa(e)))?;
        Ok(Checked {
            config,
            upstream,
            limiter_config,
            proxy_limits,
            tls,
            fleet_ca,
        })
    }
}

impl Checked {
    /// Start's check of the start mode: `defence` and `monitor` need a model, which only the
    /// state file can give at start. `has_model` says whether the saved state has one.
    pub fn check_start_mode(&self, has_model: bool) -> Result<(), CheckError> {
        let mode = self.limiter_config.mode;
        if has_model || !matches!(mode, Mode::Defence | Mode::Monitor) {
            return Ok(());
        }
        Err(CheckError {
            file: None,
            problem: Problem::NoModel {
                mode,
                state_file: self.config.limits.state_file.clone(),
            },
        })
    }

    /// What `zgate check-config` runs after [`Checked::load`]: the start mode against the
    /// state file's model, read as start reads it (a missing or unusable file: no model).
    pub fn check_start(&self) -> Result<(), CheckError> {
        let has_model = self
            .config
            .limits
            .state_file
            .as_deref()
            .and_then(|p| persist::load(p).ok())
            .is_some_and(|s| s.model.is_some());
        self.check_start_mode(has_model)
    }
}

/// The ranges the config crate does not check (they concern the proxy's own machinery).
fn check_ranges(config: &Config) -> Result<(), Problem> {
    let h2 = config.http.h2_max_header_list_bytes;
    if h2 < MIN_H2_HEADER_LIST_BYTES {
        return Err(Problem::Range {
            key: "http.h2_max_header_list_bytes",
            message: format!("{h2} is too small: at least {MIN_H2_HEADER_LIST_BYTES}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(extra: &str) -> Result<Checked, CheckError> {
        let text = format!(
            "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"127.0.0.1:9\"\n{extra}"
        );
        let config = Config::parse(&text, Path::new(".")).map_err(|e| CheckError {
            file: None,
            problem: Problem::Config(e),
        })?;
        Checked::new(config)
    }

    fn error(extra: &str) -> String {
        match check(extra) {
            Ok(_) => panic!("{extra:?} passed the check"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plain_config_passes() {
        let c = check("").expect("valid");
        assert_eq!(c.tls.len(), 1);
        assert!(c.tls[0].is_none());
    }

    #[test]
    fn what_start_refuses_is_named_by_the_files_key() {
        for (extra, key) in [
            ("[limits]\nmode = \"offence\"\n", "`limits.mode`"),
            ("[limits]\nblock_status = 200\n", "`limits.block_status`"),
            ("[limits.z]\ncpu = -1.0\n", "`limits.z.cpu`"),
            ("[limits]\nmax_clients = 0\n", "`limits.max_clients`"),
            ("[limits]\nipv6_prefix = 200\n", "`limits.ipv6_prefix`"),
            (
                "[limits.min_std]\nmemory = 0.0\n",
                "`limits.min_std.memory`",
            ),
            (
                "[http]\nh2_max_header_list_bytes = 0\n",
                "`http.h2_max_header_list_bytes`",
            ),
        ] {
            let e = error(extra);
            assert!(e.contains(key), "{extra:?}: {e}");
            assert!(
                !e.contains("limiter."),
                "{extra:?} names an internal field: {e}"
            );
        }
    }

    #[test]
    fn a_start_in_defence_needs_a_model() {
        let c = check("[limits]\nmode = \"defence\"\n").expect("the file is valid");
        let e = c.check_start_mode(false).expect_err("no model").to_string();
        assert!(e.starts_with("`limits.mode`: defence needs a model"), "{e}");
        assert!(c.check_start_mode(true).is_ok());
        assert!(c.check_start().is_err(), "no state file, no model");
        let c = check("[limits]\nmode = \"training\"\n").expect("valid");
        assert!(c.check_start_mode(false).is_ok());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let text = "[[listener]]\naddr = \"127.0.0.1:0\"\ntls = { cert = \"/nonexistent/c.pem\", key = \"/nonexistent/k.pem\" }\n[[backend]]\naddr = \"127.0.0.1:9\"\n";
        let config = Config::parse(text, Path::new(".")).expect("parses");
        let e = Checked::new(config).err().expect("refused").to_string();
        assert!(e.contains("`listener[0].tls.cert`"), "{e}");
    }
}
