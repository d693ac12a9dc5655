//! `[[pool]]` and `[[route]]`: named groups of backends, and which requests go to which group.
//!
//! ```toml
//! [[pool]]
//! name = "api"
//! backends = ["10.0.0.5:8080", "10.0.0.6:8080"]
//! balance = "least_in_flight"      # or "round_robin" (default), "client_hash"
//! # protocol = "http2"             # default: upstream.protocol
//! # tls = { server_name = "api.internal", ca = "ca.pem" }   # default: upstream.tls
//! # health = { path = "/healthz" }  # default: upstream.health
//!
//! [[route]]
//! host = "api.example.com"         # exact, or "*.example.com"; omitted = any host
//! path_prefix = "/v1/"             # omitted = "/"
//! pool = "api"
//! ```
//!
//! The `[[backend]]` list is the pool named [`DEFAULT_POOL`], used by a request no route
//! matches; a config without `[[backend]]` has no default pool (an unmatched request gets 404).
//! Everything is checked here, each error naming its key: pool names (unique, not
//! `"default"`), backends (at least one, each `host:port`, no duplicate), route hosts (an
//! exact name or one leading `*.`, no port), path prefixes (starting with `/`), routes naming
//! a pool that exists, and no two routes with the same host and prefix.

use std::path::Path;

use crate::health::HealthCheck;
use crate::upstream_tls::{UpstreamProtocol, UpstreamTls};
use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::error::ConfigError;

/// The name of the pool made of the `[[backend]]` list: the default pool.
pub const DEFAULT_POOL: &str = "default";

/// How a pool spreads requests over its backends (`pool[].balance`, `upstream.balance`).
/// Backends that are down are skipped by every strategy while another is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// `"round_robin"`: each backend in turn. The default.
    #[default]
    RoundRobin,
    /// `"least_in_flight"`: the backend with the fewest requests in flight (from the request
    /// handed to it to its response's last byte); ties in turn.
    LeastInFlight,
    /// `"client_hash"`: rendezvous (highest random weight) hashing of the client's address,
    /// as the limiter sees it: a client stays on one backend; when that backend is down its
    /// clients spread over the others, and every other client stays where it was.
    ClientHash,
}

impl Balance {
    /// The word the config uses.
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastInFlight => "least_in_flight",
            Balance::ClientHash => "client_hash",
        }
    }
}

/// One `[[pool]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    name: String,
    #[serde(default)]
    backends: Vec<String>,
    #[serde(default)]
    balance: Balance,
    protocol: Option<UpstreamProtocol>,
    tls: Option<UpstreamTls>,
    health: Option<HealthCheck>,
}

/// One `[[route]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    pool: String,
}

/// A pool of backends: the `[[backend]]` list (named [`DEFAULT_POOL`]) or one `[[pool]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `pool[].name`: unique, letters, digits, `-`, `_`, `.`. Required.
    pub name: String,
    /// `pool[].backends`: `host:port` of each HTTP/1.1 backend, at least one, no duplicate.
    pub backends: Vec<String>,
    /// `pool[].balance`. Default `"round_robin"` (`upstream.balance` for the default pool).
    pub balance: Balance,
    /// `pool[].protocol` spoken to its backends. Default `upstream.protocol`.
    pub protocol: UpstreamProtocol,
    /// `pool[].tls` to its backends (`ca` resolved against the config's folder). Default
    /// `upstream.tls`.
    pub tls: Option<UpstreamTls>,
    /// `pool[].health`, its active checks. Default `upstream.health`.
    pub health: Option<HealthCheck>,
    /// Where in the file it was written, to name its keys.
    pub source: PoolSource,
}

/// Where a [`Pool`] was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSource {
    /// The `[[backend]]` list.
    Backend,
    /// `[[pool]]` number `n` (from 0).
    Pool(usize),
}

impl PoolSource {
    /// The key of the pool's backend number `j`, as written in the file.
    pub fn backend_key(self, j: usize) -> String {
        match self {
            PoolSource::Backend => format!("backend[{j}].addr"),
            PoolSource::Pool(i) => format!("pool[{i}].backends[{j}]"),
        }
    }

    /// The key of the pool's `tls` table, as written in the file (the default pool's is
    /// `upstream.tls`).
    pub fn tls_key(self) -> String {
        match self {
            PoolSource::Backend => "upstream.tls".to_owned(),
            PoolSource::Pool(i) => format!("pool[{i}].tls"),
        }
    }
}

/// Which hosts a route matches (`route[].host`), lower case, without a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `host` omitted: any host, and requests without one.
    Any,
    /// `"api.example.com"`: that host only (any case; a trailing dot ignored).
    Exact(String),
    /// `"*.example.com"`, held as its suffix `".example.com"`: any name ending with it, at
    /// any depth (`a.example.com`, `a.b.example.com`), not `example.com` itself.
    Wildcard(String),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("any host"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// One `[[route]]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `route[].host`. Default: any host.
    pub host: HostPattern,
    /// `route[].path_prefix`: a request whose path starts with it (bytes, case-sensitive, as
    /// the client sent it) matches. Starts with `/`. Default `"/"`.
    pub path_prefix: String,
    /// `route[].pool`: the pool's name (a `[[pool]]`, or `"default"` for the `[[backend]]`
    /// list). Required.
    pub pool: String,
}

/// Checks the `[[pool]]` and `[[route]]` lists against each other and against whether a
/// `[[backend]]` list (the default pool) exists.
pub(crate) fn check(
    raw_pools: Vec<RawPool>,
    raw_routes: Vec<RawRoute>,
    has_default: bool,
    upstream: &crate::schema::Upstream,
    base_dir: &Path,
) -> Result<(Vec<Pool>, Vec<Route>), ConfigError> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut pools = Vec::with_capacity(raw_pools.len());
    for (i, p) in raw_pools.into_iter().enumerate() {
        let key = format!("pool[{i}].name");
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::key(
                key,
                format!("{:?}: use letters, digits, `-`, `_` and `.`", p.name),
            ));
        }
        if p.name == DEFAULT_POOL {
            return Err(ConfigError::key(
                key,
                "\"default\" is the name of the [[backend]] list: choose another",
            ));
        }
        if let Some(j) = names.insert(p.name.clone(), i) {
            return Err(ConfigError::key(
                key,
                format!("{:?} is already the name of pool[{j}]", p.name),
            ));
        }
        if p.backends.is_empty() {
            return Err(ConfigError::key(
                format!("pool[{i}].backends"),
                "empty: list at least one \"host:port\"",
            ));
        }
        for (j, b) in p.backends.iter().enumerate() {
            let key = PoolSource::Pool(i).backend_key(j);
            crate::schema::validate_authority(b).map_err(|m| ConfigError::key(&key, m))?;
            if let Some(k) = p.backends[..j].iter().position(|o| o == b) {
                return Err(ConfigError::key(
                    key,
                    format!("{b:?} is already pool[{i}].backends[{k}]"),
                ));
            }
        }
        let tls = match p.tls {
            Some(mut tls) => {
                tls.resolve(base_dir, &format!("pool[{i}].tls"))?;
                Some(tls)
            }
            None => upstream.tls.clone(),
        };
        let health = match p.health {
            Some(h) => {
                h.validate(&format!("pool[{i}].health"))?;
                Some(h)
            }
            None => upstream.health.clone(),
        };
        pools.push(Pool {
            name: p.name,
            backends: p.backends,
            balance: p.balance,
            protocol: p.protocol.unwrap_or(upstream.protocol),
            tls,
            health,
            source: PoolSource::Pool(i),
        });
    }
    let mut seen: HashMap<(HostPattern, String), usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw_routes.len());
    for (i, r) in raw_routes.into_iter().enumerate() {
        let host = match &r.host {
            None => HostPattern::Any,
            Some(h) => {
                host_pattern(h).map_err(|m| ConfigError::key(format!("route[{i}].host"), m))?
            }
        };
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".to_owned());
        if !path_prefix.starts_with('/')
            || path_prefix
                .chars()
                .any(|c| c.is_ascii_control() || c == ' ' || c == '?' || c == '#')
        {
            return Err(ConfigError::key(
                format!("route[{i}].path_prefix"),
                format!("{path_prefix:?}: a path starting with `/`, without a query"),
            ));
        }
        let known = names.contains_key(&r.pool) || (has_default && r.pool == DEFAULT_POOL);
        if !known {
            let hint = if r.pool == DEFAULT_POOL {
                "there is no [[backend]] list, so no default pool"
            } else {
                "no [[pool]] has this name"
            };
            return Err(ConfigError::key(
                format!("route[{i}].pool"),
                format!("unknown pool {:?}: {hint}", r.pool),
            ));
        }
        if let Some(j) = seen.insert((host.clone(), path_prefix.clone()), i) {
            return Err(ConfigError::key(
                format!("route[{i}]"),
                format!("same host ({host}) and path_prefix ({path_prefix:?}) as route[{j}]"),
            ));
        }
        routes.push(Route {
            host,
            path_prefix,
            pool: r.pool,
        });
    }
    Ok((pools, routes))
}

/// `route[].host` as written, checked and lower-cased.
fn host_pattern(written: &str) -> Result<HostPattern, String> {
    let lower = written.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(suffix) = lower.strip_prefix("*.") {
        check_name(suffix).map_err(|m| format!("{written:?}: bad wildcard: {m}"))?;
        return Ok(HostPattern::Wildcard(format!(".{suffix}")));
    }
    if lower.contains('*') {
        return Err(format!(
            "{written:?}: bad wildcard: only a leading `*.` is allowed (\"*.example.com\"); omit `host` for any host"
        ));
    }
    if let Some(v6) = lower.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(HostPattern::Exact(lower.to_owned())),
            Err(_) => Err(format!("{written:?} is not an IPv6 address in brackets")),
        };
    }
    check_name(lower).map_err(|m| format!("{written:?}: {m}"))?;
    Ok(HostPattern::Exact(lower.to_owned()))
}

/// A host name or IPv4 address: dot-separated labels of letters, digits, `-` and `_`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.contains(':') {
        return Err("write the host without a port");
    }
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name.split('.').all(label_ok) {
        return Err("not a host name (labels of letters, digits, `-` and `_`, split by dots)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            host_pattern("API.Example.com."),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            host_pattern("*.Example.com"),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
        assert_eq!(
            host_pattern("[::1]"),
            Ok(HostPattern::Exact("[::1]".into()))
        );
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "**.a",
            "a:80",
            "",
            "a..b",
            "a b",
            "[zz]",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn parse(text: &str) -> Result<crate::Config, ConfigError> {
        crate::Config::parse(
            &format!("[[listener]]\naddr = \"127.0.0.1:1\"\n{text}"),
            std::path::Path::new("/"),
        )
    }

    const API: &str = "[[pool]]\nname = \"api\"\nbackends = [\"10.0.0.5:80\", \"10.0.0.6:80\"]\n";

    #[test]
    fn pools_and_routes_parse_with_defaults() {
        let c = parse(&format!(
            "{API}balance = \"client_hash\"\n[[route]]\nhost = \"*.Example.com\"\npool = \"api\"\n[[route]]\npath_prefix = \"/v1/\"\npool = \"api\"\n"
        ))
        .unwrap();
        assert!(c.backends.is_empty() && c.default_pool().is_none());
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].balance, Balance::ClientHash);
        assert_eq!(c.pools[0].source.backend_key(1), "pool[0].backends[1]");
        assert_eq!(
            c.routes[0].host,
            HostPattern::Wildcard(".example.com".into())
        );
        assert_eq!(c.routes[0].path_prefix, "/");
        assert_eq!(c.routes[1].host, HostPattern::Any);
        assert_eq!(c.routes[1].path_prefix, "/v1/");
        // The [[backend]] list is the default pool, balanced by upstream.balance.
        let c = parse(&format!(
            "[[backend]]\naddr = \"a:1\"\n[upstream]\nbalance = \"least_in_flight\"\n{API}[[route]]\nhost = \"x\"\npool = \"default\"\n"
        ))
        .unwrap();
        let d = c.default_pool().unwrap();
        assert_eq!(
            (d.name.as_str(), d.balance),
            ("default", Balance::LeastInFlight)
        );
        assert_eq!(d.source.backend_key(0), "backend[0].addr");
        assert_eq!(c.pools[0].balance, Balance::RoundRobin);
    }

    #[test]
    fn mistakes_name_the_key() {
        let route = |r: &str| format!("{API}[[route]]\n{r}\n");
        for (text, key, says) in [
            (route("pool = \"web\""), "route[0].pool", "unknown pool"),
            (route("pool = \"default\""), "route[0].pool", "no default pool"),
            (route("host = \"a.*.com\"\npool = \"api\""), "route[0].host", "bad wildcard"),
            (route("host = \"*\"\npool = \"api\""), "route[0].host", "bad wildcard"),
            (route("host = \"a:80\"\npool = \"api\""), "route[0].host", "port"),
            (route("path_prefix = \"v1\"\npool = \"api\""), "route[0].path_prefix", "`/`"),
            (
                route("host = \"A\"\npool = \"api\"\n[[route]]\nhost = \"a\"\npath_prefix = \"/\"\npool = \"api\""),
                "route[1]",
                "route[0]",
            ),
            (format!("{API}{API}"), "pool[1].name", "already"),
            ("[[pool]]\nname = \"default\"\nbackends = [\"a:1\"]".into(), "pool[0].name", "default"),
            ("[[pool]]\nname = \"x y\"\nbackends = [\"a:1\"]".into(), "pool[0].name", "letters"),
            ("[[pool]]\nname = \"x\"".into(), "pool[0].backends", "empty"),
            ("[[pool]]\nname = \"x\"\nbackends = [\"a\"]".into(), "pool[0].backends[0]", "port"),
            ("[[pool]]\nname = \"x\"\nbackends = [\"a:1\", \"a:1\"]".into(), "pool[0].backends[1]", "already"),
        ] {
            let e = parse(&text).expect_err(&text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
        let e = parse("[[pool]]\nname = \"x\"\nbackends = [\"a:1\"]\nbalance = \"random\"")
            .unwrap_err();
        assert!(e.to_string().contains("balance"), "{e}");
        let e =
            parse("[[route]]\npool = \"x\"\nweight = 1\n[[backend]]\naddr = \"a:1\"").unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
    }
}
