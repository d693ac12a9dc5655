//! Active health checks of a pool's backends: `[upstream] health = { ... }` today, a field of
//! its own so that a `[[pool]]` can carry the same table later (`[[pool]] health = { ... }`).
//!
//! Absent: no active checks (passive detection still applies, see `upstream.fail_after`).

use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_human;
use crate::error::ConfigError;

/// `health = { path, interval, timeout, unhealthy_after, healthy_after }`: every `interval`,
/// `GET path` is sent to each backend on a connection of its own; a 2xx or 3xx answer within
/// `timeout` is a success.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// The path (and query) requested, starting with `/`. Default `"/"`.
    pub path: String,
    /// Time between two checks of a backend. Greater than zero. Default `"2s"`.
    #[serde(with = "serde_human")]
    pub interval: Duration,
    /// Deadline of one check, connect included; at most `interval`. Default `"1s"`.
    #[serde(with = "serde_human")]
    pub timeout: Duration,
    /// Consecutive failed checks that take a backend out. At least 1. Default `2`.
    pub unhealthy_after: u32,
    /// Consecutive successful checks that bring it back. At least 1. Default `2`.
    pub healthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

impl HealthCheck {
    /// Checks the values; `at` is where the table is written (`upstream.health`), so errors
    /// name the full key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        // It goes on a request line as is: printable ASCII, no spaces, no fragment.
        let path_ok = self.path.starts_with('/')
            && self.path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !path_ok {
            return Err(ConfigError::key(
                key("path"),
                format!(
                    "{:?}: write a path starting with '/', without spaces or control characters",
                    self.path
                ),
            ));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::key(
                key("interval"),
                "must be greater than zero",
            ));
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(ConfigError::key(
                key("timeout"),
                format!(
                    "must be greater than zero and at most `{}` ({:?})",
                    key("interval"),
                    self.interval
                ),
            ));
        }
        for (field, v) in [
            ("unhealthy_after", self.unhealthy_after),
            ("healthy_after", self.healthy_after),
        ] {
            if v == 0 {
                return Err(ConfigError::key(key(field), "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::Config, ConfigError> {
        let base = "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"127.0.0.1:1\"\n";
        crate::Config::parse(&format!("{base}{extra}"), ".".as_ref())
    }

    #[test]
    fn absent_means_no_checks_and_defaults_fill_a_partial_table() {
        assert_eq!(parse("").unwrap().upstream.health, None);
        let h = parse("[upstream]\nhealth = { path = \"/healthz\" }\n")
            .unwrap()
            .upstream
            .health
            .unwrap();
        assert_eq!(
            h,
            HealthCheck {
                path: "/healthz".into(),
                ..HealthCheck::default()
            }
        );
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!((h.unhealthy_after, h.healthy_after), (2, 2));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (table, key) in [
            ("{ path = \"healthz\" }", "upstream.health.path"),
            ("{ path = \"/a b\" }", "upstream.health.path"),
            ("{ interval = \"0\" }", "upstream.health.interval"),
            ("{ timeout = \"3s\" }", "upstream.health.timeout"),
            ("{ timeout = \"0\" }", "upstream.health.timeout"),
            ("{ unhealthy_after = 0 }", "upstream.health.unhealthy_after"),
            ("{ healthy_after = 0 }", "upstream.health.healthy_after"),
        ] {
            let e = parse(&format!("[upstream]\nhealth = {table}\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{table}: {e}");
        }
        let e = parse("[upstream]\nfail_after = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.fail_after"));
        let u = parse("").unwrap().upstream;
        assert_eq!((u.fail_after, u.retries), (3, 1));
        let e = parse("[upstream]\nhealth = { port = 1 }\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }
}
