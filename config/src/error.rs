//! The error of loading a config: which file, which key, what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Why a config could not be loaded. Its `Display` names the file (when there is one), the key
/// (as a dotted path such as `timeouts.idle` or `listener[1].addr`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the config came from, if it came from a file.
    pub file: Option<PathBuf>,
    /// The key at fault, as a dotted path, when the problem belongs to one key.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    pub(crate) fn whole(message: impl Into<String>) -> Self {
        Self {
            file: None,
            key: None,
            message: message.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
