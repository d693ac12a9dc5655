//! The block list over the API: `GET /api/v1/blocks`, `POST /api/v1/blocks` (manual blocks,
//! wide ones only with `"force": true`, see `scope.rs`) and `DELETE /api/v1/blocks/{ip}`.
//! Every change is saved to the state file.

use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use zgate_config::{format_duration, parse_duration};
use zgate_limiter::{BlockEntry, BlockError, IpPrefix, Reason};

use super::api::{parse_ip, secs};
use super::json::{self as j, ApiError, Reply};
use super::scope;
use super::Control;
use crate::state::overrides::MAX_BLOCK_DURATION;

fn block_json(core: &dyn Control, b: &BlockEntry) -> Value {
    let now = core.now();
    json!({
        "prefix": b.prefix.to_string(),
        "expires_in_secs": secs(Duration::from_nanos(b.until.0.saturating_sub(now.0))),
        "reason": b.reason.map_or("manual".to_owned(), |r: Reason| r.to_string()),
        "value": b.value,
        "z": if b.z.is_finite() { b.z } else { f64::MAX },
    })
}

pub(crate) fn blocks(core: &dyn Control) -> Value {
    let list = core.limiter().blocks(core.now());
    let mut list: Vec<Value> = list.iter().map(|b| block_json(core, b)).collect();
    list.sort_by(|a, b| a["prefix"].as_str().cmp(&b["prefix"].as_str()));
    json!({ "blocks": list })
}

/// `1.2.3.4` (a host) or `2001:db8::/64` (a network).
pub(crate) fn parse_prefix(text: &str) -> Result<IpPrefix, ApiError> {
    match text.split_once('/') {
        None => Ok(IpPrefix::host(parse_ip(text)?)),
        Some((addr, len)) => {
            let ip = parse_ip(addr)?;
            let len: u8 = len.parse().map_err(|_| {
                ApiError::bad_request(format!("{text:?}: {len:?} is not a prefix length"))
            })?;
            IpPrefix::new(ip, len).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{text:?}: prefix length {len} is longer than the address"
                ))
            })
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlockBody {
    ip: String,
    duration: Option<String>,
    /// Takes a prefix wider than `scope.rs` allows.
    #[serde(default)]
    force: bool,
}

pub(crate) fn post_block(core: &dyn Control, body: BlockBody) -> Result<Reply, ApiError> {
    let prefix = parse_prefix(&body.ip)?;
    if let Some(why) = scope::too_wide(prefix).filter(|_| !body.force) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{why}: send \"force\": true to block it anyway"),
        ));
    }
    let duration = match &body.duration {
        None => core.limiter_config().block_duration,
        Some(d) => {
            parse_duration(d).map_err(|e| ApiError::bad_request(format!("duration: {e}")))?
        }
    };
    if duration.is_zero() {
        return Err(ApiError::bad_request("duration: must be greater than zero"));
    }
    if duration > MAX_BLOCK_DURATION {
        return Err(ApiError::bad_request("duration: at most 365d"));
    }
    let now = core.now();
    core.limiter()
        .block(prefix, duration, now)
        .map_err(|e| match e {
            // Exempt: `limits.exempt`, or a trusted proxy (`client_ip.trusted_proxies`).
            BlockError::Exempt { .. } => ApiError::new(
                StatusCode::CONFLICT,
                format!("{e} (limits.exempt and client_ip.trusted_proxies are never blocked)"),
            ),
            BlockError::Full(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        })?;
    tracing::warn!(
        client = %prefix,
        duration = %format_duration(duration),
        "blocked through the admin API"
    );
    core.blocks_changed();
    let entry = core
        .limiter()
        .blocks(now)
        .into_iter()
        .find(|b| b.prefix == prefix);
    let entry = entry.map(|b| block_json(core, &b));
    Ok(j::json(StatusCode::CREATED, &json!({ "blocked": entry })))
}

pub(crate) fn delete_block(core: &dyn Control, ip: &str) -> Result<Reply, ApiError> {
    let prefix = parse_prefix(ip)?;
    if !core.limiter().unblock(prefix) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{ip} is not on the block list"),
        ));
    }
    tracing::info!(client = %prefix, "unblocked through the admin API");
    core.blocks_changed();
    Ok(j::json(
        StatusCode::OK,
        &json!({ "unblocked": prefix.to_string() }),
    ))
}
