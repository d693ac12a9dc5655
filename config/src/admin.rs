//! `[admin]`: where the admin HTTP API listens and the token it requires.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::error::ConfigError;

/// The admin API's port when `[admin] addr` is absent: a port of its own that no common tool
/// uses (not 9090, Prometheus's; not 8080/8081, the demo's; not in 9100..=9999, where the
/// exporters live), so `zgate ctl` never talks to something else by mistake.
pub const DEFAULT_ADMIN_PORT: u16 = 7391;

/// The admin API's address when `[admin] addr` is absent.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7391";

/// Shortest accepted `admin.token`, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`: the admin HTTP API (mode, model, thresholds, clients, blocks, reload, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Whether the admin API runs at all. Default `true`.
    pub enabled: bool,
    /// The address the admin API listens on. Default (absent) `"127.0.0.1:7391"`. An address
    /// written in the file must bind or zgate refuses to start; the default one is best-effort
    /// (if it is taken, zgate warns and runs without the admin API), so that several zgates, or
    /// tests, on one host do not fight over port 7391.
    pub addr: Option<SocketAddr>,
    /// The bearer token every admin request must carry (`Authorization: Bearer <token>`),
    /// printable ASCII without spaces, at least 16 characters. Required when `addr` is not a
    /// loopback address. Default: none (no authentication, loopback only).
    pub token: Option<String>,
    /// Serve `GET /healthz` without the token, for liveness probes that cannot send one (the
    /// answer says only `{"status": "ok"}`). Default `false`.
    pub public_healthz: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: None,
            token: None,
            public_healthz: false,
        }
    }
}

impl Admin {
    /// The address to listen on: `addr`, or the default `127.0.0.1:7391`.
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT)))
    }

    /// Checks the token and that a non-loopback address has one.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            if token.len() < MIN_TOKEN_LEN {
                return Err(ConfigError::key(
                    "admin.token",
                    format!("too short: at least {MIN_TOKEN_LEN} characters"),
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::key(
                    "admin.token",
                    "must be printable ASCII without spaces (it travels in an HTTP header)",
                ));
            }
        }
        let addr = self.listen_addr();
        if self.enabled && !addr.ip().is_loopback() && self.token.is_none() {
            return Err(ConfigError::key(
                "admin.token",
                format!(
                    "the admin API on {addr} is reachable from other hosts: set a token, or bind \
                     `admin.addr` to a loopback address such as {DEFAULT_ADMIN_ADDR}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(addr: &str, token: Option<&str>) -> Admin {
        Admin {
            enabled: true,
            addr: Some(addr.parse().unwrap()),
            token: token.map(str::to_owned),
            public_healthz: false,
        }
    }

    #[test]
    fn loopback_needs_no_token_and_others_do() {
        assert!(admin("127.0.0.1:9090", None).validate().is_ok());
        assert!(admin("[::1]:9090", None).validate().is_ok());
        let e = admin("0.0.0.0:9090", None).validate().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.token"));
        assert!(admin("0.0.0.0:9090", Some("0123456789abcdef"))
            .validate()
            .is_ok());
        let off = Admin {
            enabled: false,
            ..admin("0.0.0.0:9090", None)
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn bad_tokens_are_named() {
        let e = admin("127.0.0.1:1", Some("short")).validate().unwrap_err();
        assert!(e.message.contains("too short"), "{e}");
        let e = admin("127.0.0.1:1", Some("has a space in it ok"))
            .validate()
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.token"));
    }

    #[test]
    fn default_addr_is_loopback_7391() {
        let a = Admin::default();
        assert_eq!(a.listen_addr(), DEFAULT_ADMIN_ADDR.parse().unwrap());
        assert!(a.enabled);
        assert_eq!(a.listen_addr().port(), DEFAULT_ADMIN_PORT);
        assert!(!a.public_healthz);
    }
}
