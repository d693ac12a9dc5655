//! The runtime overrides over the API: `GET`/`PUT /api/v1/overrides` and
//! `DELETE /api/v1/overrides/{key}` (what `zgate ctl KEY=VALUE`, `ctl -a` and `ctl --reset KEY`
//! use). The keys, ranges and precedence are in `state/overrides.rs`.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::json::{self as j, ApiError, Reply};
use super::Control;
use crate::escape::escaped;
use crate::state::overrides::{Knob, OverrideError, Overrides};

/// `{"KEY": {"value": "...", "file": "..."}}` for every overridden key: the value in force and
/// the config file's, as `zgate ctl -a` prints them.
pub(crate) fn view(core: &dyn Control) -> Value {
    let o = core.overrides();
    let effective = core.limiter_config();
    let file = core.file_limiter_config();
    let map: Map<String, Value> = o
        .knobs()
        .map(|k| {
            let v = json!({ "value": k.show(&effective), "file": k.show(&file) });
            (k.to_string(), v)
        })
        .collect();
    Value::Object(map)
}

/// `PUT /api/v1/overrides`: `{"z.cpu": 5, "block_duration": "5m", ...}`; all or nothing.
pub(crate) fn put(core: &dyn Control, body: Value) -> Result<Reply, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::bad_request(
            "send an object of keys, e.g. {\"z.cpu\": 4.0, \"block_duration\": \"5m\"}",
        ));
    };
    if map.is_empty() {
        return Err(ApiError::bad_request("no key given"));
    }
    let mut o = core.overrides();
    let mut changed = Vec::new();
    for (key, v) in &map {
        let knob = Knob::parse(key).map_err(refusal)?;
        o.set(knob, knob.value(v).map_err(refusal)?);
        changed.push(knob);
    }
    apply(core, o)?;
    let effective = core.limiter_config();
    for k in changed {
        tracing::info!(key = %k, value = %k.show(&effective), "runtime override set through the admin API");
    }
    Ok(j::json(StatusCode::OK, &view(core)))
}

/// `DELETE /api/v1/overrides/{key}`: the file's value applies again; 404 if not overridden.
pub(crate) fn reset(core: &dyn Control, key: &str) -> Result<Reply, ApiError> {
    let knob = Knob::parse(key).map_err(refusal)?;
    let mut o = core.overrides();
    if !o.reset(knob) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{knob} is not overridden: it has the config file's value"),
        ));
    }
    apply(core, o)?;
    tracing::info!(key = %knob, value = %knob.show(&core.limiter_config()), "runtime override reset: the config file's value applies");
    Ok(j::json(StatusCode::OK, &view(core)))
}

/// Applies `o` through the server (which saves it); a refusal changes nothing.
pub(crate) fn apply(core: &dyn Control, o: Overrides) -> Result<(), ApiError> {
    core.set_overrides(o)
        .map_err(|e| ApiError::bad_request(format!("refused: {e}")))
}

fn refusal(e: OverrideError) -> ApiError {
    ApiError::bad_request(escaped(&e.to_string()).to_string())
}
