//! The config schema: raw TOML shapes, their defaults, and the typed [`Config`] they become.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::admin::Admin;
use crate::client_ip::ClientIp;
use crate::duration::serde_human;
use crate::error::ConfigError;
use crate::fleet::{Fleet, RawFleet};
use crate::health::HealthCheck;
use crate::limits::Limits;
use crate::listener_tls::TlsFiles;
use crate::pool::{self, Balance, Pool, PoolSource, RawPool, RawRoute, Route, DEFAULT_POOL};
use crate::upstream_tls::{UpstreamProtocol, UpstreamTls};

/// The config the demo runs on (`zgate demo`): a proxy on `127.0.0.1:8080` in front of the
/// embedded backend on `127.0.0.1:8081`. It is also a readable example of every section.
pub const DEFAULT_CONFIG: &str = include_str!("../examples/demo.toml");

/// A validated zgate configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where clients connect (`[[listener]]`, at least one).
    pub listeners: Vec<Listener>,
    /// The default pool's backends (`[[backend]]`): where a request no route matches goes,
    /// chosen by `upstream.balance`. Empty when the file has only `[[pool]]`s (an unmatched
    /// request then gets 404). See [`Config::default_pool`].
    pub backends: Vec<Backend>,
    /// `[[pool]]`: named pools of backends, in file order (the default pool not included).
    pub pools: Vec<Pool>,
    /// `[[route]]`: which requests go to which pool, in file order.
    pub routes: Vec<Route>,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[upstream]`: the connection pool to the backends.
    pub upstream: Upstream,
    /// `[http]`: protocol limits.
    pub http: Http,
    /// `[runtime]`: threads.
    pub runtime: Runtime,
    /// `[log]`.
    pub log: Log,
    /// `[limits]`: adaptive limits and static guards.
    pub limits: Limits,
    /// `[admin]`: the admin HTTP API.
    pub admin: Admin,
    /// `[client_ip]`: who the client is behind a load balancer or CDN.
    pub client_ip: ClientIp,
    /// `[fleet]`: instances sharing blocks and the model through Redis; `None`: alone.
    pub fleet: Option<Fleet>,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The address and port to accept on, e.g. `"127.0.0.1:8080"` or `"[::]:443"`. Required.
    pub addr: SocketAddr,
    /// TLS (`tls = { cert = "cert.pem", key = "key.pem" }`, or several certificates chosen by
    /// SNI: `tls = { certs = [{ cert, key }, ...] }`): clients then speak TLS, and ALPN
    /// chooses `h2` or `http/1.1`. Without it the listener serves cleartext HTTP/1.1 and HTTP/2
    /// with prior knowledge (h2c), told apart by the connection preface. Default: none.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Every connection must open with a PROXY protocol header (v1 or v2, from an L4 load
    /// balancer), read before TLS and protocol detection within `timeouts.protocol_detect`;
    /// its source address is the client. A connection without a valid header is closed.
    /// With `client_ip.trusted_proxies` set, only those peers may connect. Default `false`.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One `[[backend]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `host:port` of a backend, e.g. `"127.0.0.1:3000"` or `"app.internal:80"`, spoken to as
    /// `[upstream]` says (`protocol`, `tls`).
    /// Required.
    pub addr: String,
}

/// `[timeouts]`. Every value is a human duration (`"500ms"`, `"10s"`, `"5m"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Deadline for a client to send a whole request header block, from its first byte
    /// (HTTP/1.1). Default `"10s"`.
    #[serde(with = "serde_human")]
    pub header_read: Duration,
    /// The longest a client may pause while sending a request body (from when zgate first
    /// waits for body bytes, and between two pieces of it; time the backend makes zgate wait
    /// does not count). The request then gets 408 and, on HTTP/1, its connection is closed.
    /// `"0"` disables it. Default `"60s"`.
    #[serde(with = "serde_human")]
    pub body_read: Duration,
    /// The least rate a request body must average, in bytes per second, over the time zgate
    /// waits on the client (like Apache's `RequestReadTimeout body=…,MinRate=…`): every byte
    /// earns the client `1 / body_min_rate` s of waiting on top of a grace of `body_read`
    /// (60 s when that is `"0"`); a body whose pauses add up to more is answered 408. Time the
    /// backend makes zgate wait does not count. `0` disables it. Default `10` (a body sent at
    /// a byte every 2 s is cut about a minute in, past the 60 s grace; a slow mobile upload
    /// is thousands of times faster).
    pub body_min_rate: u64,
    /// A connection with no request in flight and no bytes moving for this long is closed
    /// (gracefully: HTTP/2 gets a GOAWAY). `"0"` disables it. Default `"60s"`.
    #[serde(with = "serde_human")]
    pub idle: Duration,
    /// Deadline for a cleartext connection to show which protocol it speaks (its first bytes).
    /// Default `"5s"`.
    #[serde(with = "serde_human")]
    pub protocol_detect: Duration,
    /// Deadline for the TLS handshake. Default `"10s"`.
    #[serde(with = "serde_human")]
    pub tls_handshake: Duration,
    /// Deadline for a TCP connection to a backend. Default `"3s"`.
    #[serde(with = "serde_human")]
    pub backend_connect: Duration,
    /// How long a backend may keep zgate waiting: for its response head once the request is
    /// sent, and, while a request body is sent, without taking a piece of it that the client
    /// has sent (the client's own pauses are `body_read`'s). The client then gets 504.
    /// Default `"30s"`.
    #[serde(with = "serde_human")]
    pub backend_response: Duration,
    /// On SIGTERM or SIGINT, how long in-flight requests may still run before zgate exits.
    /// Default `"10s"`.
    #[serde(with = "serde_human")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(60),
            body_min_rate: 10,
            idle: Duration::from_secs(60),
            protocol_detect: Duration::from_secs(5),
            tls_handshake: Duration::from_secs(10),
            backend_connect: Duration::from_secs(3),
            backend_response: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[upstream]`: the pooled connections to the backends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Idle connections kept per backend and per worker thread (each worker pools the
    /// connections its own tasks drive). Default `1024`.
    pub max_idle_per_backend: usize,
    /// An idle pooled connection is closed after this long. Default `"90s"`.
    #[serde(with = "serde_human")]
    pub pool_idle_timeout: Duration,
    /// A backend taken out by passive detection (`fail_after` failures in a row) is skipped by
    /// the balancer for this long, unless every backend is skipped; then it is tried again,
    /// and one more failure before a success takes it out again at once. Default `"5s"`.
    #[serde(with = "serde_human")]
    pub down_for: Duration,
    /// Passive detection: this many failures of a backend in a row (connect failures,
    /// failures before a response head, timeouts, 5xx answers other than 501 and 505) take it
    /// out for `down_for`; one success resets the count. At least 1. Default `3`.
    pub fail_after: u32,
    /// How many times a request that was sent and failed before any response head (reset,
    /// closed) is sent again, each time to another backend: only an idempotent request
    /// (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) without a body. `0` disables it.
    /// A request that never left zgate (connect failure) always moves on to the next backend.
    /// Default `1`.
    pub retries: u32,
    /// Active health checks (`health = { path = "/healthz", interval = "2s", ... }`, see
    /// [`HealthCheck`]). Default: none, no active checks.
    pub health: Option<HealthCheck>,
    /// The protocol spoken to the backends: `"http1"` or `"http2"` (multiplexed connections).
    /// Default `"http1"`.
    pub protocol: UpstreamProtocol,
    /// TLS to the backends, verified (`{ server_name, ca }`). Default: none (cleartext).
    pub tls: Option<UpstreamTls>,
    /// How the default pool (the `[[backend]]` list) spreads requests: `"round_robin"`,
    /// `"least_in_flight"` or `"client_hash"` (a `[[pool]]` has its own `balance`). Default
    /// `"round_robin"`.
    pub balance: Balance,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            max_idle_per_backend: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            down_for: Duration::from_secs(5),
            fail_after: 3,
            retries: 1,
            health: None,
            protocol: UpstreamProtocol::Http1,
            tls: None,
            balance: Balance::RoundRobin,
        }
    }
}

/// `[http]`: protocol limits applied to clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Largest HTTP/1.1 request head (request line and headers) in bytes; larger gets 431.
    /// Default `65536`.
    pub max_header_bytes: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` offered to clients. Default `128`.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` in bytes. Default `65536`.
    pub h2_max_header_list_bytes: u32,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            h2_max_concurrent_streams: 128,
            h2_max_header_list_bytes: 64 * 1024,
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads, each a current-thread runtime serving its connections, their HTTP/2
    /// streams and their backend connections (thread-per-core); `0` means one per CPU.
    /// Default `0`.
    pub workers: usize,
}

/// `[log]`. The `RUST_LOG` environment variable, when set, overrides `level`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`. Default `"info"`.
    pub level: String,
    /// One line per request (client, method, target, status, duration to the last byte,
    /// bytes, host, user agent, upstream) at `info`. Default `false`.
    pub access: bool,
    /// `"text"` (human-readable, one line per event) or `"json"` (one JSON object per line).
    /// Default `"text"`.
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            access: false,
            format: "text".into(),
        }
    }
}

/// The file as written: every section optional, so defaults apply; unknown keys rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listener: Vec<Listener>,
    #[serde(default)]
    backend: Vec<Backend>,
    #[serde(default)]
    pool: Vec<RawPool>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    upstream: Upstream,
    #[serde(default)]
    http: Http,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    admin: Admin,
    #[serde(default)]
    client_ip: ClientIp,
    fleet: Option<RawFleet>,
}

impl Config {
    /// Reads and validates the config file at `path`. Relative TLS paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::whole(format!("cannot read config: {e}")).in_file(Some(path.into()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| e.in_file(Some(path.into())))
    }

    /// Parses and validates config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message names the key and shows the line; keep it whole.
            ConfigError::whole(e.to_string().trim_end().to_string())
        })?;
        Self::from_raw(raw, base_dir)
    }

    fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
        if raw.listener.is_empty() {
            return Err(ConfigError::key(
                "listener",
                "no listener: add at least one [[listener]] with an `addr`",
            ));
        }
        if raw.backend.is_empty() && raw.pool.is_empty() {
            return Err(ConfigError::key(
                "backend",
                "no backend: add at least one [[backend]] with an `addr`, or a [[pool]]",
            ));
        }
        let mut seen = HashSet::new();
        let mut listeners = raw.listener;
        for (i, l) in listeners.iter_mut().enumerate() {
            if !seen.insert(l.addr) {
                return Err(ConfigError::key(
                    format!("listener[{i}].addr"),
                    format!("{} is already used by another listener", l.addr),
                ));
            }
            if let Some(tls) = &mut l.tls {
                tls.resolve(base_dir);
            }
        }
        for (i, b) in raw.backend.iter().enumerate() {
            validate_authority(&b.addr)
                .map_err(|m| ConfigError::key(format!("backend[{i}].addr"), m))?;
        }
        if raw.upstream.fail_after == 0 {
            return Err(ConfigError::key(
                "upstream.fail_after",
                "must be at least 1",
            ));
        }
        if let Some(h) = &raw.upstream.health {
            h.validate("upstream.health")?;
        }
        let mut upstream = raw.upstream;
        if let Some(tls) = &mut upstream.tls {
            tls.resolve(base_dir, "upstream.tls")?;
        }
        let (pools, routes) = pool::check(
            raw.pool,
            raw.route,
            !raw.backend.is_empty(),
            &upstream,
            base_dir,
        )?;
        let t = &raw.timeouts;
        for (key, value) in [
            ("timeouts.header_read", t.header_read),
            ("timeouts.protocol_detect", t.protocol_detect),
            ("timeouts.tls_handshake", t.tls_handshake),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.backend_response", t.backend_response),
        ] {
            if value.is_zero() {
                return Err(ConfigError::key(key, "must be greater than zero"));
            }
        }
        if raw.http.max_header_bytes < 1024 {
            return Err(ConfigError::key(
                "http.max_header_bytes",
                format!("{} is too small: at least 1024", raw.http.max_header_bytes),
            ));
        }
        if raw.http.h2_max_concurrent_streams == 0 {
            return Err(ConfigError::key(
                "http.h2_max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if raw.runtime.workers > 1024 {
            return Err(ConfigError::key(
                "runtime.workers",
                format!("{} is more than 1024", raw.runtime.workers),
            ));
        }
        if !matches!(
            raw.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(ConfigError::key(
                "log.level",
                format!(
                    "unknown level {:?}: use error, warn, info, debug or trace",
                    raw.log.level
                ),
            ));
        }
        if !matches!(raw.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::key(
                "log.format",
                format!("unknown format {:?}: use text or json", raw.log.format),
            ));
        }
        raw.admin.validate()?;
        raw.client_ip.validate()?;
        let fleet = raw
            .fleet
            .map(|f| Fleet::from_raw(f, base_dir))
            .transpose()?;
        let mut limits = raw.limits;
        if let Some(state) = &mut limits.state_file {
            if state.as_os_str().is_empty() {
                return Err(ConfigError::key("limits.state_file", "empty path"));
            }
            *state = base_dir.join(&*state);
        }
        Ok(Config {
            listeners,
            backends: raw.backend,
            pools,
            routes,
            timeouts: raw.timeouts,
            upstream,
            http: raw.http,
            runtime: raw.runtime,
            log: raw.log,
            limits,
            admin: raw.admin,
            client_ip: raw.client_ip,
            fleet,
        })
    }
}

impl Config {
    /// The default pool: the `[[backend]]` list, named [`DEFAULT_POOL`], balanced by
    /// `upstream.balance`; `None` without `[[backend]]`.
    pub fn default_pool(&self) -> Option<Pool> {
        (!self.backends.is_empty()).then(|| Pool {
            name: DEFAULT_POOL.to_owned(),
            backends: self.backends.iter().map(|b| b.addr.clone()).collect(),
            balance: self.upstream.balance,
            protocol: self.upstream.protocol,
            tls: self.upstream.tls.clone(),
            health: self.upstream.health.clone(),
            source: PoolSource::Backend,
        })
    }
}

/// Checks `host:port` (an IPv6 host in brackets) without resolving it.
pub(crate) fn validate_authority(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} has no port: write host:port"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{addr:?}: {port:?} is not a port (1-65535)")),
        Ok(_) => {}
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("{addr:?}: {host:?} is not a host name or address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::StartMode;
    use crate::client_ip::ForwardHeader;
    use std::path::PathBuf;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/zgate"))
    }

    const MINIMAL: &str = r#"
        [[listener]]
        addr = "127.0.0.1:8080"
        [[backend]]
        addr = "127.0.0.1:3000"
    "#;

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.backends[0].addr, "127.0.0.1:3000");
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.timeouts.header_read, Duration::from_secs(10));
        assert_eq!(c.timeouts.body_read, Duration::from_secs(60));
        assert_eq!(c.timeouts.body_min_rate, 10);
        assert_eq!(c.timeouts.idle, Duration::from_secs(60));
        assert_eq!(c.timeouts.backend_connect, Duration::from_secs(3));
        assert_eq!(c.timeouts.backend_response, Duration::from_secs(30));
        assert_eq!(c.timeouts.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn embedded_default_config_is_valid() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.listeners[0].addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn timeouts_accept_human_units() {
        let c = parse(&format!(
            "{MINIMAL}\n[timeouts]\nheader_read = \"500ms\"\nidle = \"5m\"\nshutdown_grace = \"1m30s\""
        ))
        .unwrap();
        assert_eq!(c.timeouts.header_read, Duration::from_millis(500));
        assert_eq!(c.timeouts.idle, Duration::from_secs(300));
        assert_eq!(c.timeouts.shutdown_grace, Duration::from_secs(90));
        let c = parse(&format!("{MINIMAL}\n[timeouts]\nbody_read = \"0\"")).unwrap();
        assert_eq!(
            c.timeouts.body_read,
            Duration::ZERO,
            "0 disables the body timeout"
        );
    }

    #[test]
    fn tls_paths_resolve_against_the_config_dir() {
        let c = parse(
            r#"
            [[listener]]
            addr = "127.0.0.1:8443"
            tls = { cert = "cert.pem", key = "/abs/key.pem" }
            [[backend]]
            addr = "localhost:3000"
        "#,
        )
        .unwrap();
        let tls = &c.listeners[0].tls.as_ref().unwrap().certs[0];
        assert_eq!(tls.cert, PathBuf::from("/etc/zgate/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/key.pem"));
        let c = parse(
            r#"
            [[listener]]
            addr = "127.0.0.1:8443"
            tls = { certs = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }] }
            [[backend]]
            addr = "localhost:3000"
            [upstream]
            protocol = "http2"
            tls = { server_name = "api.internal", ca = "ca.pem" }
        "#,
        )
        .unwrap();
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certs[1].key, PathBuf::from("/etc/zgate/b.key"));
        assert_eq!(c.upstream.protocol, UpstreamProtocol::Http2);
        let up = c.upstream.tls.as_ref().unwrap();
        assert_eq!(up.ca.as_deref(), Some(Path::new("/etc/zgate/ca.pem")));
        assert_eq!(up.server_name.as_deref(), Some("api.internal"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&format!("{MINIMAL}\n[timeouts]\nheader_raed = \"1s\"")).unwrap_err();
        assert!(e.to_string().contains("header_raed"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[bogus]\nx = 1")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse(&format!("{MINIMAL}\n[timeouts]\nidle = \"5 parsecs\"")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("idle") && s.contains("unknown unit"), "{s}");

        let e = parse(&format!("{MINIMAL}\n[timeouts]\nbackend_connect = \"0\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("timeouts.backend_connect"));

        let e = parse("[[listener]]\naddr = \"nope\"\n[[backend]]\naddr = \"a:1\"").unwrap_err();
        assert!(e.to_string().contains("addr"), "{e}");

        let e =
            parse("[[listener]]\naddr = \"127.0.0.1:1\"\n[[backend]]\naddr = \"a\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("backend[0].addr"));
        assert!(e.message.contains("no port"));

        let e = parse(&format!("{MINIMAL}\n[log]\nlevel = \"loud\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("log.level"));
    }

    #[test]
    fn missing_sections_are_named() {
        let e = parse("[[backend]]\naddr = \"a:1\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener"));
        let e = parse("[[listener]]\naddr = \"127.0.0.1:1\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("backend"));
    }

    #[test]
    fn duplicate_listener_is_refused() {
        let e = parse(
            "[[listener]]\naddr = \"127.0.0.1:1\"\n[[listener]]\naddr = \"127.0.0.1:1\"\n[[backend]]\naddr = \"a:1\"",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("listener[1].addr"));
    }

    #[test]
    fn backend_authorities() {
        assert!(validate_authority("[::1]:80").is_ok());
        assert!(validate_authority("app.internal:8080").is_ok());
        assert!(validate_authority("[zz]:80").is_err());
        assert!(validate_authority("host:0").is_err());
        assert!(validate_authority("host:99999").is_err());
        assert!(validate_authority(":80").is_err());
    }

    #[test]
    fn limits_section_parses_and_rejects_unknown_keys() {
        let c = parse(&format!(
            "{MINIMAL}\n[limits]\nmode = \"training\"\ntraining_period = \"30s\"\n[limits.z]\ncpu = 2.5\n[limits.guards]\nping_per_sec = 10\n"
        ))
        .unwrap();
        assert_eq!(c.limits.mode, Some(StartMode::Training));
        assert_eq!(c.limits.training_period, Some(Duration::from_secs(30)));
        assert_eq!(c.limits.z.cpu, Some(2.5));
        assert_eq!(c.limits.z.memory, None);
        assert_eq!(c.limits.guards.ping_per_sec, Some(10));
        let e = parse(&format!("{MINIMAL}\n[limits.z]\ncpuu = 1.0\n")).unwrap_err();
        assert!(e.to_string().contains("cpuu"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}\n[limits]\nblock_duration = \"forever\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("block_duration"), "{e}");
    }

    #[test]
    fn admin_section_and_state_file() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.admin, Admin::default());
        assert_eq!(c.limits.state_file, None);
        let c = parse(&format!(
            "{MINIMAL}\n[limits]\nstate_file = \"state/model.json\"\n[admin]\naddr = \"0.0.0.0:9191\"\ntoken = \"0123456789abcdef\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.limits.state_file,
            Some(PathBuf::from("/etc/zgate/state/model.json"))
        );
        assert_eq!(c.admin.listen_addr(), "0.0.0.0:9191".parse().unwrap());
        assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
        let e = parse(&format!("{MINIMAL}\n[admin]\naddr = \"0.0.0.0:9191\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.token"));
        let e = parse(&format!("{MINIMAL}\n[admin]\nport = 1\n")).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[limits]\nstate_file = \"\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.state_file"));
    }

    #[test]
    fn client_ip_section_proxy_protocol_and_exempt() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.client_ip, ClientIp::default());
        assert!(!c.listeners[0].proxy_protocol);
        assert!(c.limits.exempt.is_empty());
        let c = parse(
            r#"
            [[listener]]
            addr = "127.0.0.1:8080"
            proxy_protocol = true
            [[backend]]
            addr = "127.0.0.1:3000"
            [client_ip]
            trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
            header = "forwarded"
            [limits]
            exempt = ["198.51.100.0/24"]
        "#,
        )
        .unwrap();
        assert!(c.listeners[0].proxy_protocol);
        assert_eq!(c.client_ip.header, Some(ForwardHeader::Forwarded));
        assert_eq!(c.client_ip.trusted_proxies.len(), 3);
        assert!(c.client_ip.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(c.client_ip.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(!c.client_ip.is_trusted("192.0.2.8".parse().unwrap()));
        assert_eq!(c.limits.exempt[0].to_string(), "198.51.100.0/24");
        for h in ["x-forwarded-for", "x-real-ip"] {
            let c = parse(&format!(
                "{MINIMAL}\n[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\nheader = \"{h}\"\n"
            ))
            .unwrap();
            assert_eq!(c.client_ip.header.map(|h| h.name()), Some(h));
        }
    }

    #[test]
    fn client_ip_mistakes_name_the_key() {
        let e = parse(&format!(
            "{MINIMAL}\n[client_ip]\nheader = \"x-forwarded-for\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("client_ip.header"));
        assert!(e.message.contains("trusted_proxies"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[client_ip]\nheader = \"via\"\n")).unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        let e = parse(&format!(
            "{MINIMAL}\n[client_ip]\ntrusted_proxies = [\"10.0.0.1/8\"]\n"
        ))
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("trusted_proxies") && s.contains("10.0.0.0/8"),
            "{s}"
        );
        let e = parse(&format!(
            "{MINIMAL}\n[limits]\nexempt = [\"300.0.0.0/8\"]\n"
        ))
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("exempt") && s.contains("not an IP address"),
            "{s}"
        );
        let e = parse(&format!("{MINIMAL}\n[client_ip]\ntrusted = []\n")).unwrap_err();
        assert!(e.to_string().contains("trusted"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let e = Config::load(Path::new("/nonexistent/zgate.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/zgate.toml: cannot read config"));
    }
}
