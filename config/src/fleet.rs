//! `[fleet]`: several zgate instances sharing one block list and one model through Redis.
//!
//! Absent: zgate runs alone and needs no Redis. Present: `redis` is required and checked here,
//! once, so the proxy trusts a [`RedisUrl`] (scheme, host, port, database; the password is never
//! printed). `ca`, the CA certificates that `rediss://` trusts, is resolved against the config
//! file's directory here; the proxy reads and checks the file itself when it checks the config.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_human;
use crate::error::ConfigError;

/// `[fleet]` as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// Where the fleet's Redis is: `redis://[user[:password]@]host[:port][/db]`, or `rediss://`
    /// for TLS. Required.
    pub redis: RedisUrl,
    /// This instance's name in the fleet (events, snapshots). Default: the host name (or
    /// `zgate` if it cannot be read).
    pub instance: String,
    /// Prefix of every key, wrapped as a Redis Cluster hash tag (`{zgate}:blocks`) so all the
    /// fleet's keys live in one slot. Default `"zgate"`.
    pub prefix: String,
    /// Deadline of every Redis command (and of connecting). Default `"200ms"`.
    pub timeout: Duration,
    /// Changes waiting for Redis while it is unreachable, at most; the oldest are dropped
    /// beyond it (the block list resynchronises on reconnect anyway). Default `10000`.
    pub outbox: usize,
    /// `rediss://` only: a PEM file of the CA certificates that sign Redis's certificate, trusted
    /// instead of the system's roots (a private CA). Relative to the config file's directory.
    /// Default: none (the system's trusted roots).
    pub ca: Option<PathBuf>,
}

/// `[fleet]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    redis: Option<String>,
    instance: Option<String>,
    prefix: Option<String>,
    #[serde(default = "default_timeout", with = "serde_human")]
    timeout: Duration,
    #[serde(default = "default_outbox")]
    outbox: usize,
    ca: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

fn default_outbox() -> usize {
    10_000
}

impl Fleet {
    pub(crate) fn from_raw(raw: RawFleet, base_dir: &Path) -> Result<Fleet, ConfigError> {
        let url = raw.redis.ok_or_else(|| {
            ConfigError::key("fleet.redis", "required: e.g. \"redis://127.0.0.1:6379/0\"")
        })?;
        let redis = RedisUrl::parse(&url).map_err(|m| ConfigError::key("fleet.redis", m))?;
        let instance = raw.instance.unwrap_or_else(host_name);
        if !is_name(&instance) {
            return Err(ConfigError::key(
                "fleet.instance",
                format!("{instance:?}: use 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
        let prefix = raw.prefix.unwrap_or_else(|| "zgate".into());
        if !is_name(&prefix) {
            return Err(ConfigError::key(
                "fleet.prefix",
                format!("{prefix:?}: use 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
        if raw.timeout.is_zero() {
            return Err(ConfigError::key(
                "fleet.timeout",
                "must be greater than zero",
            ));
        }
        if raw.outbox == 0 {
            return Err(ConfigError::key("fleet.outbox", "must be at least 1"));
        }
        let ca =
            match raw.ca {
                None => None,
                Some(p) if p.as_os_str().is_empty() => {
                    return Err(ConfigError::key("fleet.ca", "empty path"))
                }
                Some(_) if !redis.tls => return Err(ConfigError::key(
                    "fleet.ca",
                    "a CA is for TLS: use a rediss:// URL in `fleet.redis`, or remove `fleet.ca`",
                )),
                Some(p) => Some(base_dir.join(p)),
            };
        Ok(Fleet {
            redis,
            instance,
            prefix,
            timeout: raw.timeout,
            outbox: raw.outbox,
            ca,
        })
    }
}

/// A checked Redis URL. `Display` shows it without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    /// `rediss://`: TLS.
    pub tls: bool,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port. Default 6379.
    pub port: u16,
    /// The database number. Default 0.
    pub db: u32,
}

impl RedisUrl {
    /// Checks `url` without resolving or connecting.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(format!(
                "{:?}: the URL must start with redis:// or rediss://",
                redact(url)
            ));
        };
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the URL contains spaces or control characters".into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(hostport)?;
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let db = match path {
            "" => 0,
            d => d
                .parse::<u32>()
                .map_err(|_| format!("database {d:?} is not a number"))?,
        };
        Ok(RedisUrl {
            url: url.to_owned(),
            tls,
            host,
            port,
            db,
        })
    }

    /// The URL as written, password included: for the Redis client only, never a log line.
    pub fn as_secret_str(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host needs its closing ']'")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("no host: e.g. redis://127.0.0.1:6379/0".into());
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split_once(':').map_or(&rest[..at], |(u, _)| u);
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The host name, or `zgate`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| is_name(h))
        .unwrap_or_else(|| "zgate".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_the_password() {
        let u = RedisUrl::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (false, "127.0.0.1", 6379, 0)
        );
        let u = RedisUrl::parse("rediss://app:s3cret@[::1]:7000/3").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.db),
            (true, "::1", 7000, 3)
        );
        assert_eq!(u.to_string(), "rediss://app:***@[::1]:7000/3");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(RedisUrl::parse("redis://cache").unwrap().port, 6379);
        for bad in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis://",
            "redis://host:99999",
            "redis://host:x",
            "redis://host/db",
            "redis://ho st",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        let e = RedisUrl::parse("http://u:pw@h").unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn the_section_is_optional_and_errors_name_its_keys() {
        let base = "[[listener]]\naddr = \"127.0.0.1:0\"\n[[backend]]\naddr = \"127.0.0.1:1\"\n";
        let parse = |extra: &str| crate::Config::parse(&format!("{base}{extra}"), ".".as_ref());
        assert_eq!(parse("").unwrap().fleet, None);
        let f = parse("[fleet]\nredis = \"redis://127.0.0.1:6379/0\"\ninstance = \"edge-1\"\n")
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(
            (f.instance.as_str(), f.prefix.as_str()),
            ("edge-1", "zgate")
        );
        assert_eq!((f.timeout, f.outbox), (Duration::from_millis(200), 10_000));
        let e = parse("[fleet]\nredis = \"redis//127.0.0.1\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.redis"));
        assert!(e.to_string().contains("`fleet.redis`"), "{e}");
        let e = parse("[fleet]\ninstance = \"a\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.redis"));
        let e = parse("[fleet]\nredis = \"redis://h\"\nprefix = \"a b\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.prefix"));
        assert!(parse("[fleet]\nredis = \"redis://h\"\nport = 1\n").is_err());
        assert_eq!(f.ca, None);
        let parse_in =
            |extra: &str| crate::Config::parse(&format!("{base}{extra}"), "/etc/zgate".as_ref());
        let f = parse_in("[fleet]\nredis = \"rediss://h:6380\"\nca = \"redis-ca.pem\"\n")
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(f.ca, Some(PathBuf::from("/etc/zgate/redis-ca.pem")));
        let e = parse_in("[fleet]\nredis = \"redis://h\"\nca = \"ca.pem\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.ca"));
        assert!(e.to_string().contains("rediss://"), "{e}");
        let e = parse_in("[fleet]\nredis = \"rediss://h\"\nca = \"\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.ca"));
    }
}
