//! `zgate ctl`'s commands: each one a request or two to the admin API and lines of output.

use std::io::Write;

use serde_json::{json, Value};

use super::admin_client::AdminClient;
use super::ctl::{CtlArgs, CtlError};
use super::model_lines::distribution_line;

/// The admin API, answers decoded: a 4xx/5xx becomes [`CtlError::Refused`] with its error.
pub(crate) struct Api {
    pub(crate) client: AdminClient,
}

impl Api {
    pub(crate) async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call("GET", path, None).await
    }

    pub(crate) async fn knobs(&self) -> Result<Vec<(String, String)>, CtlError> {
        let v = self.get("/api/v1/knobs").await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect())
    }

    /// The value of one knob; a usage error if there is no such key.
    pub(crate) async fn knob(&self, key: &str) -> Result<String, CtlError> {
        self.knobs()
            .await?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| {
                let url = &self.client.url;
                usage(format!(
                    "unknown key {key:?} at {url}: `zgate ctl -a` lists them"
                ))
            })
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        let (status, text) = self.request(method, path, body).await?;
        let url = &self.client.url;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            self.client.unreachable(format!(
                "not a JSON answer from zgate's admin API (HTTP {status}): {e}"
            ))
        })?;
        if status >= 400 {
            let msg = value["error"].as_str().unwrap_or("refused").to_owned();
            return Err(CtlError::Refused(format!("{url}{path}"), status, msg));
        }
        Ok(value)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CtlError> {
        let body = body.map(|b| b.to_string());
        Ok(self.client.request(method, path, body).await?)
    }
}

/// Runs `cmd rest...`.
pub(crate) async fn command(
    api: &Api,
    args: &CtlArgs,
    cmd: &str,
    rest: &[&str],
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    let show = |out: &mut dyn Write, k: &str, v: &str| {
        let _ = if args.value_only {
            writeln!(out, "{v}")
        } else {
            writeln!(out, "{k} = {v}")
        };
    };
    match (cmd, rest) {
        ("model", []) => print_model(&api.get("/api/v1/model").await?, out),
        ("clients", _) => {
            let mut query = Vec::new();
            let mut a = rest.iter();
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
            let v = api
                .get(&format!("/api/v1/clients?{}", query.join("&")))
                .await?;
            for c in v["clients"].as_array().into_iter().flatten() {
                w(out, client_line(c));
            }
        }
        ("client", [ip]) => w(
            out,
            client_line(&api.get(&format!("/api/v1/clients/{ip}")).await?),
        ),
        ("blocks", []) => {
            let v = api.get("/api/v1/blocks").await?;
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
        ("block", [ip, more @ ..]) if more.len() <= 1 => {
            let mut body = json!({ "ip": ip, "force": args.force });
            if let Some(d) = more.first() {
                body["duration"] = json!(d);
            }
            let v = api.call("POST", "/api/v1/blocks", Some(body)).await?;
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
            let v = api
                .call("DELETE", &format!("/api/v1/blocks/{ip}"), None)
                .await?;
            w(out, format!("unblocked {}", text(&v["unblocked"])));
        }
        ("reload", []) => {
            let v = api.call("POST", "/api/v1/reload", Some(json!({}))).await?;
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
            let (status, body) = api.request("GET", "/metrics", None).await?;
            if status >= 400 {
                return api.call("GET", "/metrics", None).await.map(|_| ());
            }
            let _ = out.write_all(body.as_bytes());
        }
        ("health", []) => w(out, text(&api.get("/healthz").await?["status"])),
        ("block" | "unblock" | "client", _) => {
            return Err(usage(format!(
                "{cmd}: wrong arguments {:?}",
                rest.join(" ")
            )))
        }
        (kv, []) if kv.contains('=') => {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            set(api, key, value, args.force).await?;
            show(out, key, &api.knob(key).await?);
        }
        (key, []) if !key.starts_with('-') => show(out, key, &api.knob(key).await?),
        _ => return Err(usage(format!("cannot parse {:?}", args.words.join(" ")))),
    }
    Ok(())
}

/// `KEY=VALUE`: the mode, or a runtime override (checked by zgate; `z.*` and `enabled.*` are
/// checked here first, as usage errors).
async fn set(api: &Api, key: &str, value: &str, force: bool) -> Result<(), CtlError> {
    if key == "mode" {
        let body = json!({ "mode": value, "force": force });
        let v = api.call("PUT", "/api/v1/mode", Some(body)).await?;
        if let Some(warning) = v["warning"].as_str() {
            // A warning, not a result: stderr, so that the output stays `mode = ...`.
            eprintln!("zgate ctl: warning: {warning}");
        }
        return Ok(());
    }
    if key.starts_with("z.") && value.parse::<f64>().is_err() {
        return Err(usage(format!("{key}: {value:?} is not a number")));
    }
    if key.starts_with("enabled.") && !matches!(value, "true" | "1" | "on" | "false" | "0" | "off")
    {
        return Err(usage(format!("{key}: {value:?} is not true or false")));
    }
    api.call("PUT", "/api/v1/overrides", Some(json!({ key: value })))
        .await?;
    Ok(())
}

pub(crate) fn usage(m: impl Into<String>) -> CtlError {
    CtlError::Usage(m.into())
}

/// A JSON value as plain text (strings without quotes, null as `-`).
pub(crate) fn text(v: &Value) -> String {
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
