//! How a start fails ([`StartError`]) and how a shutdown ends ([`Shutdown`]).

use crate::listen::bind::BindError;
use crate::state::checked::CheckError;

/// Why the server could not start. Its message names the config key at fault where there is one.
#[derive(Debug)]
pub enum StartError {
    /// The config fails a check ([`Checked`]: values, `[limits]`, backends, TLS files).
    Check(CheckError),
    /// The limiter refused its settings or the start mode.
    Limiter(zgate_limiter::Error),
    /// A listener (or the admin API's) cannot be bound.
    Bind(BindError),
    /// The accept thread could not be started.
    AcceptThread(std::io::Error),
    /// The worker threads (`runtime.workers`) could not be started.
    Workers(std::io::Error),
    /// `[fleet]` cannot start (its message names `fleet.redis`).
    Fleet(zgate_fleet::StartError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Check(e) => e.fmt(f),
            StartError::Limiter(e) => write!(f, "`limits`: {e}"),
            StartError::Bind(e) => e.fmt(f),
            StartError::AcceptThread(e) => write!(f, "cannot start the accept thread: {e}"),
            StartError::Workers(e) => write!(f, "`runtime.workers`: cannot start the workers: {e}"),
            StartError::Fleet(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<CheckError> for StartError {
    fn from(e: CheckError) -> Self {
        StartError::Check(e)
    }
}

impl From<BindError> for StartError {
    fn from(e: BindError) -> Self {
        StartError::Bind(e)
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out; this many connections were cut.
    GraceExpired(usize),
}
