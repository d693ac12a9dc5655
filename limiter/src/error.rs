//! Errors of building a limiter.

use core::fmt;

use crate::config::LimiterConfigError;
use crate::mode::ModeError;

/// Why [`crate::Limiter::new`] refused to build a limiter.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A configuration value is invalid.
    Config(LimiterConfigError),
    /// The configured start mode needs a model and none was given.
    Mode(ModeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Mode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<LimiterConfigError> for Error {
    fn from(e: LimiterConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<ModeError> for Error {
    fn from(e: ModeError) -> Error {
        Error::Mode(e)
    }
}
