//! The admin endpoints. Each validates its whole input before changing anything, so a refused
//! request (4xx) leaves the state as it was.

use std::collections::BTreeMap;
use std::net::IpAddr;

use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zgate_config::format_duration;
use zgate_limiter::{
    check_threshold, ClientSnapshot, Metric, Mode, ModeError, Model, UnknownMetric,
};

use super::json::{self as j, ApiError, Reply};
use super::router::Route;
use super::Control;
use super::{blocks, live, page, runtime, thin};
use crate::state::overrides::{Knob, Setting};

/// Most clients `GET /api/v1/clients?top=N` returns.
pub(crate) const MAX_TOP: usize = 1000;
/// Clients `GET /api/v1/clients` returns without `top`.
pub(crate) const DEFAULT_TOP: usize = 10;

/// Serves `route` (method already checked).
pub(crate) async fn call(
    core: &dyn Control,
    route: Route,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let write = matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE);
    match route {
        Route::Health => Ok(j::json(StatusCode::OK, &json!({ "status": "ok" }))),
        Route::Metrics => Ok(j::text(core.metrics())),
        Route::Mode if write => put_mode(core, j::body(req).await?),
        Route::Mode => Ok(ok(mode_view(core))),
        Route::Model if write => put_model(core, j::body(req).await?),
        Route::Model => Ok(ok(model_view(core))),
        Route::Thresholds if write => put_thresholds(core, j::body(req).await?),
        Route::Thresholds => Ok(ok(thresholds(core))),
        Route::Knobs => Ok(ok(knobs(core))),
        Route::Fleet => Ok(ok(fleet(core))),
        Route::Clients => clients(core, req.uri().query().unwrap_or("")),
        Route::Client(ip) => client(core, &ip),
        Route::Live => live::live(core, req.uri().query().unwrap_or("")).map(ok),
        Route::Page(asset) => Ok(page::reply(asset)),
        Route::Blocks if write => blocks::post_block(core, j::body(req).await?),
        Route::Blocks => Ok(ok(blocks::blocks(core))),
        Route::Block(ip) => blocks::delete_block(core, &ip),
        Route::Overrides if write => runtime::put(core, j::body(req).await?),
        Route::Overrides => Ok(ok(runtime::view(core))),
        Route::Override(key) => runtime::reset(core, &key),
        Route::Reload => match core.reload() {
            Ok(r) => Ok(ok(json!({
                "reloaded": true,
                "listeners_added": r.listeners_added.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "listeners_removed": r.listeners_removed.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "backends": r.backends,
            }))),
            Err(e) => Err(ApiError::bad_request(format!(
                "reload refused, the config in force stays: {e}"
            ))),
        },
    }
}

fn ok(v: Value) -> Reply {
    j::json(StatusCode::OK, &v)
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn mode_view(core: &dyn Control) -> Value {
    let status = core.limiter().status(core.now());
    json!({
        "mode": status.mode.name(),
        "epoch": status.epoch,
        "training_left_secs": status.training_left.map(secs),
        "model_epoch": status.model_epoch,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
    /// Defence or monitor even with a model whose metrics are thin (fewer than `min_clients`).
    #[serde(default)]
    force: bool,
}

fn put_mode(core: &dyn Control, body: ModeBody) -> Result<Reply, ApiError> {
    let mode: Mode = body
        .mode
        .parse()
        .map_err(|e: zgate_limiter::UnknownMode| ApiError::bad_request(e.to_string()))?;
    let limiter = &core.limiter();
    limiter
        .set_mode_checked(mode, core.now(), body.force)
        .map_err(mode_error)?;
    tracing::info!(mode = %mode, epoch = limiter.epoch(), force = body.force, "mode set through the admin API");
    save(core);
    let mut view = mode_view(core);
    if let Some(warning) = thin::warning(core, mode) {
        tracing::warn!(mode = %mode, "{warning}");
        view["warning"] = json!(warning);
    }
    Ok(ok(view))
}

/// A refused mode switch or import: 409 when the limiter's state is in the way (no model, a
/// thin one, epochs exhausted), 400 for a bad value.
fn mode_error(e: ModeError) -> ApiError {
    let status = match e {
        ModeError::EpochOutOfRange { .. } => StatusCode::BAD_REQUEST,
        ModeError::NoModel { .. } | ModeError::ThinModel { .. } | ModeError::EpochsExhausted => {
            StatusCode::CONFLICT
        }
    };
    ApiError::new(status, e.to_string())
}

/// Saves the state file after a change (errors are logged by `Persist`).
fn save(core: &dyn Control) {
    let _ = core.persist().sync(core.limiter());
}

fn model_view(core: &dyn Control) -> Value {
    let limiter = &core.limiter();
    let model = limiter.model();
    let mut metrics = Map::new();
    for m in Metric::ALL {
        let mut entry = Map::new();
        if let Some(model) = &model {
            let s = model.get(m);
            entry.insert("n".into(), json!(s.n));
            entry.insert("mean".into(), json!(s.mean));
            entry.insert("std".into(), json!(s.std));
            entry.insert("std_effective".into(), json!(model.std_effective(m)));
            entry.insert("quantiles".into(), json!(s.quantiles));
            entry.insert("buckets".into(), json!(s.buckets));
            let above = limiter
                .is_enabled(m)
                .then(|| model.blocks_above(m, limiter.threshold(m)))
                .flatten();
            entry.insert("blocks_above".into(), json!(above));
            thin::describe(&mut entry, model, m);
        }
        entry.insert("threshold".into(), json!(limiter.threshold(m)));
        entry.insert("enabled".into(), json!(limiter.is_enabled(m)));
        metrics.insert(m.name().into(), Value::Object(entry));
    }
    json!({
        "present": model.is_some(),
        "epoch": model.as_ref().map(|m| m.epoch),
        "trained_at": core.persist().trained_at(limiter),
        "params": model.as_ref().map(|m| json!(m.params)),
        "metrics": metrics,
    })
}

/// `PUT /api/v1/model`: a model as `GET` shows it (or as the state file holds it). The fields
/// only `GET` has (`present`, `trained_at`, and per metric `std_effective`, `blocks_above`,
/// `threshold`, `enabled`, `enforceable`, `not_enforceable`) are ignored: thresholds are set with `/api/v1/thresholds`.
fn put_model(core: &dyn Control, mut body: Value) -> Result<Reply, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request("the model must be a JSON object"));
    };
    for k in ["present", "trained_at"] {
        obj.remove(k);
    }
    if obj.get("params").is_some_and(Value::is_null) {
        obj.remove("params");
    }
    if let Some(Value::Object(metrics)) = obj.get_mut("metrics") {
        for (_, v) in metrics.iter_mut() {
            if let Value::Object(entry) = v {
                for k in [
                    "std_effective",
                    "blocks_above",
                    "threshold",
                    "enabled",
                    "enforceable",
                    "not_enforceable",
                ] {
                    entry.remove(k);
                }
            }
        }
    }
    let model: Model = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("not a valid model: {e}")))?;
    model
        .validate()
        .map_err(|e| ApiError::bad_request(format!("not a valid model: {e}")))?;
    let epoch = model.epoch;
    core.limiter().import_model(model).map_err(|e| {
        ApiError::bad_request(format!("not a valid model: {}", mode_error(e).message))
    })?;
    core.persist().model_imported();
    tracing::info!(epoch, "model imported through the admin API");
    save(core);
    Ok(ok(model_view(core)))
}

/// `GET /api/v1/fleet`: `{"enabled": false}` alone, else the instance, Redis (no password),
/// whether it is connected, the outbox, the last event's lag, the fleet's training state and
/// the last failed Redis exchange (`last_error`, `null` if none; `last_error_unix_ms`). The
/// status page shows the same object.
fn fleet(core: &dyn Control) -> Value {
    let Some(f) = core.fleet() else {
        return json!({ "enabled": false });
    };
    let s = &f.status;
    json!({
        "enabled": true,
        "instance": f.instance,
        "redis": f.redis,
        "connected": s.connected,
        "outbox": s.outbox,
        "dropped": s.dropped,
        "event_lag_ms": s.lag_ms,
        "published": s.published,
        "received": s.received,
        "epoch": s.epoch,
        "training": s.training,
        "model_epoch": s.model_epoch,
        "last_error": s.last_error,
        "last_error_unix_ms": (s.last_error_ms > 0).then_some(s.last_error_ms),
    })
}

fn thresholds(core: &dyn Control) -> Value {
    let limiter = &core.limiter();
    let mut out = Map::new();
    for m in Metric::ALL {
        out.insert(
            m.name().into(),
            json!({ "z": limiter.threshold(m), "enabled": limiter.is_enabled(m) }),
        );
    }
    Value::Object(out)
}

/// `PUT /api/v1/thresholds`: `{"cpu": 4.0}` or `{"cpu": {"z": 4.0, "enabled": false}}`, any
/// subset of metrics; all or nothing.
fn put_thresholds(core: &dyn Control, body: Value) -> Result<Reply, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::bad_request(
            "send an object of metric names, e.g. {\"cpu\": 4.0}",
        ));
    };
    if map.is_empty() {
        return Err(ApiError::bad_request("no metric given"));
    }
    let mut changes: Vec<(Metric, Option<f64>, Option<bool>)> = Vec::new();
    for (name, v) in &map {
        let m: Metric = name
            .parse()
            .map_err(|e: UnknownMetric| ApiError::bad_request(e.to_string()))?;
        let (z, enabled) = match v {
            Value::Number(_) => (Some(v), None),
            Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| *k != "z" && *k != "enabled") {
                    return Err(ApiError::bad_request(format!(
                        "{name}: unknown field {k:?}: use \"z\" and \"enabled\""
                    )));
                }
                (o.get("z"), o.get("enabled"))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{name}: give a number (the z threshold) or {{\"z\": ..., \"enabled\": ...}}"
                )))
            }
        };
        let z = match z {
            None => None,
            Some(z) => {
                let z = z.as_f64().ok_or_else(|| {
                    ApiError::bad_request(format!("{name}: the threshold must be a number"))
                })?;
                let z = check_threshold(z)
                    .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
                Some(z)
            }
        };
        let enabled = match enabled {
            None => None,
            Some(e) => Some(e.as_bool().ok_or_else(|| {
                ApiError::bad_request(format!("{name}: \"enabled\" must be true or false"))
            })?),
        };
        changes.push((m, z, enabled));
    }
    let mut o = core.overrides();
    for (m, z, enabled) in changes {
        // Validated above: finite and >= 0; the override's own bound is checked here.
        if let Some(z) = z {
            let knob = Knob::Z(m);
            let z = knob
                .value(&json!(z))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            o.set(knob, z);
        }
        if let Some(on) = enabled {
            o.set(Knob::Enabled(m), Setting::Bool(on));
        }
    }
    runtime::apply(core, o)?;
    for m in Metric::ALL
        .into_iter()
        .filter(|m| map.contains_key(m.name()))
    {
        let (z, on) = (core.limiter().threshold(m), core.limiter().is_enabled(m));
        tracing::info!(
            metric = m.name(),
            z,
            enabled = on,
            "threshold set through the admin API (a runtime override)"
        );
    }
    Ok(ok(thresholds(core)))
}

/// Every runtime knob, in a stable order, as `[key, value]` pairs of strings.
fn knobs(core: &dyn Control) -> Value {
    let limiter = &core.limiter();
    let status = limiter.status(core.now());
    let lc = core.limiter_config();
    let config = core.config();
    let mut k: Vec<(String, String)> = vec![
        ("mode".into(), status.mode.name().into()),
        ("epoch".into(), status.epoch.to_string()),
        (
            "training_left".into(),
            status.training_left.map_or("-".into(), |d| {
                format_duration(Duration::from_secs(d.as_secs()))
            }),
        ),
        (
            "training_period".into(),
            format_duration(lc.training_period),
        ),
        ("after_training".into(), lc.after_training.name().into()),
        ("block_duration".into(), format_duration(lc.block_duration)),
        (
            "model".into(),
            status
                .model_epoch
                .map_or("none".into(), |e| format!("epoch {e}")),
        ),
        ("min_clients".into(), lc.min_clients.to_string()),
        ("max_clients".into(), lc.max_clients.to_string()),
        ("clients".into(), status.clients.to_string()),
        ("blocks".into(), status.blocks.to_string()),
        ("client_idle_expiry".into(), format_duration(lc.idle_expiry)),
        ("cpu_half_life".into(), format_duration(lc.cpu_half_life)),
        ("ipv6_prefix".into(), lc.ipv6_prefix.to_string()),
    ];
    for m in Metric::ALL {
        k.push((format!("z.{}", m.name()), limiter.threshold(m).to_string()));
    }
    for m in Metric::ALL {
        k.push((
            format!("enabled.{}", m.name()),
            limiter.is_enabled(m).to_string(),
        ));
    }
    for m in Metric::ALL {
        k.push((
            format!("min_std.{}", m.name()),
            lc.min_std[m.index()].to_string(),
        ));
    }
    for m in Metric::ALL {
        k.push((
            format!("fallback.{}", m.name()),
            lc.fallback[m.index()].to_string(),
        ));
    }
    let g = limiter.guards();
    for (name, v) in [
        ("max_connections_per_client", g.max_connections_per_client),
        ("max_memory_per_client", g.max_memory_per_client),
        ("ping_per_sec", u64::from(g.ping_per_sec)),
        ("settings_per_sec", u64::from(g.settings_per_sec)),
        ("rst_stream_per_sec", u64::from(g.rst_stream_per_sec)),
        ("empty_data_per_sec", u64::from(g.empty_data_per_sec)),
        ("window_update_per_sec", u64::from(g.window_update_per_sec)),
        ("priority_per_sec", u64::from(g.priority_per_sec)),
        ("unknown_frame_per_sec", u64::from(g.unknown_frame_per_sec)),
        (
            "max_continuation_per_block",
            u64::from(g.max_continuation_per_block),
        ),
        ("max_glitches", u64::from(lc.max_glitches)),
    ] {
        k.push((format!("guards.{name}"), v.to_string()));
    }
    let backends: Vec<&str> = config.backends.iter().map(|b| b.addr.as_str()).collect();
    k.push(("backends".into(), backends.join(",")));
    // `pool.NAME = balance: a,b` and `route.N = host path -> pool`: the pools and routes.
    for p in &config.pools {
        let v = format!("{}: {}", p.balance.name(), p.backends.join(","));
        k.push((format!("pool.{}", p.name), v));
    }
    for (i, r) in config.routes.iter().enumerate() {
        let v = format!("{} {} -> {}", r.host, r.path_prefix, r.pool);
        k.push((format!("route.{i}"), v));
    }
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    k.push(("listeners".into(), listeners.join(",")));
    k.push((
        "state_file".into(),
        core.persist()
            .path()
            .map_or("-".into(), |p| p.display().to_string()),
    ));
    Value::Array(k.into_iter().map(|(a, b)| json!([a, b])).collect())
}

fn per_metric<T: serde::Serialize + Copy>(values: &[T; Metric::COUNT]) -> Value {
    let map: BTreeMap<&str, T> = Metric::ALL
        .iter()
        .map(|m| (m.name(), values[m.index()]))
        .collect();
    json!(map)
}

fn client_json(core: &dyn Control, c: &ClientSnapshot) -> Value {
    let now = core.now();
    let z = c.z.map(|z| {
        if z.is_finite() {
            (z * 1000.0).round() / 1000.0
        } else {
            f64::MAX
        }
    });
    json!({
        "client": c.key.to_string(),
        "prefix": c.prefix.to_string(),
        "current": per_metric(&c.current),
        "max": per_metric(&c.max),
        "z": per_metric(&z),
        "last_seen_secs_ago": secs(Duration::from_nanos(now.0.saturating_sub(c.last_seen.0))),
        "blocked_for_secs": c.blocked_until.map(|u| secs(Duration::from_nanos(u.0.saturating_sub(now.0)))),
        "identified": c.identified.name(),
        "exempt": c.exempt,
    })
}

fn clients(core: &dyn Control, query: &str) -> Result<Reply, ApiError> {
    let mut top = DEFAULT_TOP;
    let mut by = Metric::Connections;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "top" => {
                top = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_TOP).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "top={v:?}: give a number from 1 to {MAX_TOP}"
                        ))
                    })?
            }
            "by" => {
                by = v
                    .parse()
                    .map_err(|e: UnknownMetric| ApiError::bad_request(format!("by: {e}")))?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use top and by"
                )))
            }
        }
    }
    let list = core.limiter().top(by, top, core.now());
    let list: Vec<Value> = list.iter().map(|c| client_json(core, c)).collect();
    Ok(ok(json!({ "by": by.name(), "top": top, "clients": list })))
}

pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, ApiError> {
    text.parse::<IpAddr>().map_err(|_| {
        ApiError::bad_request(format!(
            "{text:?} is not an IP address like 192.0.2.1 or 2001:db8::1"
        ))
    })
}

fn client(core: &dyn Control, ip: &str) -> Result<Reply, ApiError> {
    let ip = parse_ip(ip)?;
    let c = core.limiter().client(ip, core.now()).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("client {ip} is not tracked"))
    })?;
    Ok(ok(client_json(core, &c)))
}
