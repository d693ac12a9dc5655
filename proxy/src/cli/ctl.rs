//! `zgate ctl`: a thin client of the admin API with sysctl-like syntax.
//!
//! ```text
//! zgate ctl mode                 # mode = training
//! zgate ctl mode=defence         # sets it
//! zgate ctl -a                   # every runtime knob as key = value
//! zgate ctl z.cpu=4              # a threshold; enabled.cpu=false switches a metric off
//! zgate ctl blocks | block IP [DURATION] | unblock IP
//! zgate ctl model | clients [--top N] [--by METRIC] | client IP | reload | metrics | health
//! ```
//!
//! The admin URL comes from `--admin URL`, else `ZGATE_ADMIN`, else `http://127.0.0.1:9090`;
//! the token from `--token T`, else `ZGATE_ADMIN_TOKEN`. Exit codes: 0 done, 1 the API refused
//! (its error is printed), 2 usage error, 3 zgate could not be reached.
//!
//! The HTTP/1.1 client is a few lines over a blocking `TcpStream` (one request per
//! connection, `Connection: close`): the API answers with a `Content-Length` body, so this is
//! all a command-line client needs, with no runtime to start.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};

/// The default admin URL.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: the API refused the request (4xx/5xx); its error is printed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: zgate's admin API could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Connect timeout; the read timeout is longer (a reload binds sockets and reads files).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The usage of `zgate ctl`.
pub const USAGE: &str = "\
zgate ctl [--admin URL] [--token TOKEN] COMMAND
    mode                       print the mode (mode = training)
    mode=MODE                  set it: disabled, training, defence, monitor
    -a                         print every runtime knob as key = value
    KEY                        print one knob (e.g. z.cpu, block_duration)
    z.METRIC=Z                 set a z-score threshold (standard deviations, >= 0)
    enabled.METRIC=true|false  switch scoring of a metric on or off
    model                      print the model per metric (n, mean, std, threshold), then
                               where it blocks and its quantiles, in the metric's unit
    clients [--top N] [--by METRIC]   the top clients (default 10 by connections)
    client IP                  one client's current values, maxima and z
    blocks                     the block list
    block IP[/LEN] [DURATION]  block an address or network (default block_duration)
    unblock IP[/LEN]           remove a block
    reload                     re-read the config file
    metrics | health           Prometheus text | liveness
  --admin URL (or ZGATE_ADMIN, default http://127.0.0.1:9090), --token (or ZGATE_ADMIN_TOKEN)
  exit: 0 ok, 1 refused by zgate, 2 usage error, 3 zgate unreachable
";

/// A failed command, with the exit code it maps to.
#[derive(Debug)]
pub enum CtlError {
    /// Bad command line (exit 2).
    Usage(String),
    /// The API said no (exit 1): status and its error message.
    Refused(u16, String),
    /// No answer (exit 3).
    Unreachable(String),
}

impl CtlError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Refused(..) => EXIT_REFUSED,
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) => write!(f, "{m}"),
            CtlError::Refused(status, m) => write!(f, "{m} (HTTP {status})"),
            CtlError::Unreachable(m) => write!(f, "cannot reach zgate: {m}"),
        }
    }
}

/// Runs `zgate ctl ARGS` (the arguments after `ctl`); prints results on stdout and errors on
/// stderr; returns the exit code.
pub fn main(args: &[String]) -> u8 {
    match run(args, &mut std::io::stdout()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("zgate ctl: {e}");
            if matches!(e, CtlError::Usage(_)) {
                eprintln!("\n{USAGE}");
            }
            e.exit_code()
        }
    }
}

/// Parses and runs one command, writing its output to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<(), CtlError> {
    let mut url = std::env::var("ZGATE_ADMIN").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let mut token = std::env::var("ZGATE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--admin" => url = it.next().ok_or(usage("--admin needs a URL"))?.clone(),
            "--token" => token = Some(it.next().ok_or(usage("--token needs a value"))?.clone()),
            "-h" | "--help" => {
                let _ = out.write_all(USAGE.as_bytes());
                return Ok(());
            }
            _ => rest.push(a.as_str()),
        }
    }
    let api = Api::new(&url, token)?;
    let Some((&cmd, args)) = rest.split_first() else {
        return Err(usage("no command"));
    };
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    match (cmd, args) {
        ("-a", []) => {
            for (k, v) in api.knobs()? {
                w(out, format!("{k} = {v}"));
            }
        }
        ("model", []) => print_model(&api.get("/api/v1/model")?, out),
        ("clients", _) => {
            let mut query = Vec::new();
            let mut a = args.iter();
            while let Some(flag) = a.next() {
                let v = a
                    .next()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?;
                match *flag {
                    "--top" => query.push(format!("top={v}")),
                    "--by" => query.push(format!("by={v}")),
                    other => return Err(usage(format!("clients: unknown option {other:?}"))),
                }
            }
            let v = api.get(&format!("/api/v1/clients?{}", query.join("&")))?;
            for c in v["clients"].as_array().into_iter().flatten() {
                w(out, client_line(c));
            }
        }
        ("client", [ip]) => w(
            out,
            client_line(&api.get(&format!("/api/v1/clients/{ip}"))?),
        ),
        ("blocks", []) => {
            let v = api.get("/api/v1/blocks")?;
            for b in v["blocks"].as_array().into_iter().flatten() {
                w(
                    out,
                    format!(
                        "{} expires_in={}s reason={}",
                        text(&b["prefix"]),
                        text(&b["expires_in_secs"]),
                        text(&b["reason"])
                    ),
                );
            }
        }
        ("block", [ip, rest @ ..]) if rest.len() <= 1 => {
            let mut body = json!({ "ip": ip });
            if let Some(d) = rest.first() {
                body["duration"] = json!(d);
            }
            let v = api.call("POST", "/api/v1/blocks", Some(body))?;
            let b = &v["blocked"];
            w(
                out,
                format!(
                    "blocked {} for {}s",
                    text(&b["prefix"]),
                    text(&b["expires_in_secs"])
                ),
            );
        }
        ("unblock", [ip]) => {
            let v = api.call("DELETE", &format!("/api/v1/blocks/{ip}"), None)?;
            w(out, format!("unblocked {}", text(&v["unblocked"])));
        }
        ("reload", []) => {
            let v = api.call("POST", "/api/v1/reload", Some(json!({})))?;
            w(
                out,
                format!(
                    "reloaded: backends = {}, listeners added = {}, removed = {}",
                    text(&v["backends"]),
                    v["listeners_added"].as_array().map_or(0, Vec::len),
                    v["listeners_removed"].as_array().map_or(0, Vec::len)
                ),
            );
        }
        ("metrics", []) => {
            let (_, body) = api.request("GET", "/metrics", None)?;
            let _ = out.write_all(body.as_bytes());
        }
        ("health", []) => w(out, text(&api.get("/healthz")?["status"])),
        ("block" | "unblock" | "client", _) => {
            return Err(usage(format!(
                "{cmd}: wrong arguments {:?}",
                args.join(" ")
            )))
        }
        (kv, []) if kv.contains('=') => {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            set(&api, key, value)?;
            let knobs = api.knobs()?;
            if let Some((k, v)) = knobs.iter().find(|(k, _)| k == key) {
                w(out, format!("{k} = {v}"));
            }
        }
        (key, []) if !key.starts_with('-') => {
            let knobs = api.knobs()?;
            let (k, v) = knobs
                .iter()
                .find(|(k, _)| k == key)
                .ok_or_else(|| usage(format!("unknown key {key:?}: `zgate ctl -a` lists them")))?;
            w(out, format!("{k} = {v}"));
        }
        _ => return Err(usage(format!("cannot parse {:?}", rest.join(" ")))),
    }
    Ok(())
}

/// `KEY=VALUE`: the knobs that can be set at run time.
fn set(api: &Api, key: &str, value: &str) -> Result<(), CtlError> {
    if key == "mode" {
        api.call("PUT", "/api/v1/mode", Some(json!({ "mode": value })))?;
        return Ok(());
    }
    if let Some(metric) = key.strip_prefix("z.") {
        let z: f64 = value
            .parse()
            .map_err(|_| usage(format!("{key}: {value:?} is not a number")))?;
        api.call("PUT", "/api/v1/thresholds", Some(json!({ metric: z })))?;
        return Ok(());
    }
    if let Some(metric) = key.strip_prefix("enabled.") {
        let on = match value {
            "true" | "1" | "on" => true,
            "false" | "0" | "off" => false,
            _ => return Err(usage(format!("{key}: {value:?} is not true or false"))),
        };
        api.call(
            "PUT",
            "/api/v1/thresholds",
            Some(json!({ metric: { "enabled": on } })),
        )?;
        return Ok(());
    }
    let known = api.knobs()?.iter().any(|(k, _)| k == key);
    if known {
        Err(usage(format!(
            "{key} is not settable at run time: change it in the config file and `zgate ctl reload`"
        )))
    } else {
        Err(usage(format!(
            "unknown key {key:?}: `zgate ctl -a` lists them"
        )))
    }
}

fn usage(m: impl Into<String>) -> CtlError {
    CtlError::Usage(m.into())
}

/// A JSON value as plain text (strings without quotes, null as `-`).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_model(v: &Value, out: &mut dyn Write) {
    if v["present"] != Value::Bool(true) {
        let _ = writeln!(out, "model = none");
        return;
    }
    let _ = writeln!(out, "model.epoch = {}", text(&v["epoch"]));
    let _ = writeln!(out, "model.trained_at = {}", text(&v["trained_at"]));
    if let Some(metrics) = v["metrics"].as_object() {
        for (name, m) in metrics {
            for field in ["n", "mean", "std", "threshold", "enabled"] {
                let _ = writeln!(out, "model.{name}.{field} = {}", text(&m[field]));
            }
        }
        for (name, m) in metrics {
            let _ = writeln!(out, "{}", distribution_line(name, m));
        }
    }
}

/// One metric of the model for people, in the metric's own unit: where it blocks and its
/// quantiles, e.g. `connections: blocks above 4.95 connections; p50 2, p90 3, p99 4, p99.9 4,
/// max 4`.
fn distribution_line(name: &str, m: &Value) -> String {
    let mut line = format!("{name}: ");
    match m["blocks_above"].as_f64() {
        Some(v) => line.push_str(&format!("blocks above {}", in_unit(name, v, true))),
        None if m["enabled"] == Value::Bool(false) => line.push_str("scoring disabled"),
        None => line.push_str("never blocks (too few clients)"),
    }
    let q = &m["quantiles"];
    if q.is_object() {
        let parts: Vec<String> = [
            ("p50", "p50"),
            ("p90", "p90"),
            ("p99", "p99"),
            ("p99_9", "p99.9"),
            ("max", "max"),
        ]
        .iter()
        .filter_map(|(key, label)| {
            Some(format!(
                "{label} {}",
                in_unit(name, q[*key].as_f64()?, false)
            ))
        })
        .collect();
        line.push_str("; ");
        line.push_str(&parts.join(", "));
    }
    line
}

/// A value of metric `name` in its unit: counts as they are (with the unit's name when `named`),
/// memory in bytes with binary prefixes, cpu (millionths of a core) as a percentage of a core,
/// fragmentation as a bare score.
fn in_unit(name: &str, v: f64, named: bool) -> String {
    let count = |unit: &str| {
        if named {
            format!("{} {unit}", decimal(v))
        } else {
            decimal(v)
        }
    };
    match name {
        "connections" => count("connections"),
        "requests" | "requests_nonidempotent" => count("requests"),
        "memory" => bytes(v),
        "cpu" if named => format!("{}% of a core", decimal(v / 10_000.0)),
        "cpu" => format!("{}%", decimal(v / 10_000.0)),
        _ => decimal(v),
    }
}

/// `v` with at most two decimals, trailing zeros dropped: `4.95`, `5`, `0.1`.
fn decimal(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// A byte count with a binary prefix: `512 B`, `39.06 KiB`, `1.5 MiB`.
fn bytes(v: f64) -> String {
    let mut v = v;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v.abs() < 1024.0 {
            return format!("{} {unit}", decimal(v));
        }
        v /= 1024.0;
    }
    format!("{} TiB", decimal(v))
}

fn client_line(c: &Value) -> String {
    let mut line = text(&c["client"]);
    if let Some(cur) = c["current"].as_object() {
        for (name, value) in cur {
            line.push_str(&format!(" {name}={}", text(value)));
            let z = &c["z"][name.as_str()];
            if z.as_f64().is_some_and(|z| z > 0.0) {
                line.push_str(&format!("(z={})", text(z)));
            }
        }
    }
    if !c["blocked_for_secs"].is_null() {
        line.push_str(&format!(" blocked_for={}s", text(&c["blocked_for_secs"])));
    }
    line
}

/// The admin API at one address.
struct Api {
    host: String,
    token: Option<String>,
}

impl Api {
    fn new(url: &str, token: Option<String>) -> Result<Api, CtlError> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(usage(format!(
                    "--admin {url:?}: only http:// is supported (scheme {scheme:?})"
                )))
            }
            None => url,
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(usage(format!(
                "--admin {url:?}: give http://HOST:PORT, e.g. {DEFAULT_ADMIN_URL}"
            )));
        }
        let host = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !host.ends_with(']')
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Api { host, token })
    }

    fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call("GET", path, None)
    }

    fn knobs(&self) -> Result<Vec<(String, String)>, CtlError> {
        let v = self.get("/api/v1/knobs")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect())
    }

    /// A JSON request; a 4xx/5xx becomes [`CtlError::Refused`] with the API's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CtlError> {
        let (status, text) = self.request(method, path, body)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            CtlError::Unreachable(format!(
                "{}: not a JSON answer (HTTP {status}): {e}",
                self.host
            ))
        })?;
        if status >= 400 {
            let msg = value["error"].as_str().unwrap_or("refused").to_owned();
            return Err(CtlError::Refused(status, msg));
        }
        Ok(value)
    }

    /// One HTTP/1.1 exchange: returns the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CtlError> {
        let unreachable = |e: String| CtlError::Unreachable(format!("{}: {e}", self.host));
        let addrs: Vec<_> = self
            .host
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .collect();
        let mut stream = None;
        let mut last = String::from("no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let mut stream = stream.ok_or_else(|| unreachable(last))?;
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: zgate-ctl\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .map_err(|e| unreachable(e.to_string()))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| unreachable(e.to_string()))?;
        parse_response(&raw).ok_or_else(|| unreachable("malformed HTTP response".into()))
    }
}

/// Status and body of a complete HTTP/1.1 response with a `Content-Length` (or read to EOF).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().ok()?;
                body = body.get(..n)?;
            }
        }
    }
    Some((status, String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Api::new("http://127.0.0.1:9090", None).unwrap().host,
            "127.0.0.1:9090"
        );
        assert_eq!(
            Api::new("127.0.0.1:9090/", None).unwrap().host,
            "127.0.0.1:9090"
        );
        assert_eq!(Api::new("http://[::1]:9", None).unwrap().host, "[::1]:9");
        assert_eq!(
            Api::new("http://localhost", None).unwrap().host,
            "localhost:80"
        );
        assert!(matches!(
            Api::new("https://x:1", None),
            Err(CtlError::Usage(_))
        ));
    }

    #[test]
    fn model_lines_are_in_each_metric_s_unit() {
        let m = |above: Value, enabled: bool, quantiles: Value| json!({"blocks_above": above, "enabled": enabled, "quantiles": quantiles});
        let q = json!({"p50": 2, "p90": 3, "p99": 4, "p99_9": 4, "max": 5});
        assert_eq!(
            distribution_line("connections", &m(json!(4.95), true, q.clone())),
            "connections: blocks above 4.95 connections; p50 2, p90 3, p99 4, p99.9 4, max 5"
        );
        let cpu = json!({"p50": 2000, "p90": 4500, "p99": 10000, "p99_9": 250000, "max": 1000000});
        assert_eq!(
            distribution_line("cpu", &m(json!(4500.0), true, cpu)),
            "cpu: blocks above 0.45% of a core; p50 0.2%, p90 0.45%, p99 1%, p99.9 25%, max 100%"
        );
        let mem =
            json!({"p50": 40000, "p90": 512, "p99": 1048576, "p99_9": 1572864, "max": 3u64 << 30});
        assert_eq!(
            distribution_line("memory", &m(json!(56000.0), true, mem)),
            "memory: blocks above 54.69 KiB; p50 39.06 KiB, p90 512 B, p99 1 MiB, p99.9 1.5 MiB, max 3 GiB"
        );
        assert_eq!(
            distribution_line("fragmentation", &m(Value::Null, false, Value::Null)),
            "fragmentation: scoring disabled"
        );
        assert_eq!(
            distribution_line("requests", &m(Value::Null, true, q)),
            "requests: never blocks (too few clients); p50 2, p90 3, p99 4, p99.9 4, max 5"
        );
    }

    #[test]
    fn responses_parse() {
        let r = b"HTTP/1.1 409 Conflict\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        assert_eq!(parse_response(r), Some((409, "{\"error\":\"x\"}".into())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\nshort"),
            None
        );
    }

    #[test]
    fn usage_errors_exit_2_and_unreachable_exits_3() {
        let mut out = Vec::new();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = run(&args(&["--admin", "http://127.0.0.1:1"]), &mut out).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = run(&args(&["--admin", "http://127.0.0.1:1", "mode"]), &mut out).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE, "{e}");
        let e = run(&args(&["--admin", "http://127.0.0.1:1", "block"]), &mut out).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }
}
