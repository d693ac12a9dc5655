//! `GET /api/v1/clients/live?top=N`: the clients now, per metric: the histogram of every
//! tracked client's current value (the buckets of the model's histogram), its quantiles, and
//! the N highest clients (default 8, at most 100) with their z. One walk of the client table
//! that never holds a lock of it for long; what the status page draws over the trained
//! distribution.

use serde_json::{json, Map, Value};
use zgate_limiter::{LiveClient, Metric};

use super::json::ApiError;
use super::Control;

/// Most clients per metric `?top=N` returns.
pub(crate) const MAX_LIVE_TOP: usize = 100;
/// Clients per metric without `top`.
pub(crate) const DEFAULT_LIVE_TOP: usize = 8;

/// The live view as JSON, or a refusal of the query.
pub(crate) fn live(core: &dyn Control, query: &str) -> Result<Value, ApiError> {
    let top = parse_top(query)?;
    let view = core.limiter().live(top, core.now());
    let mut metrics = Map::new();
    for m in Metric::ALL {
        let lm = view.get(m);
        let top: Vec<Value> = lm.top.iter().map(client).collect();
        metrics.insert(
            m.name().into(),
            json!({ "buckets": lm.buckets, "quantiles": lm.quantiles, "top": top }),
        );
    }
    Ok(json!({ "clients": view.clients, "top": top, "metrics": metrics }))
}

fn client(c: &LiveClient) -> Value {
    let z = if c.z.is_finite() {
        (c.z * 1000.0).round() / 1000.0
    } else {
        f64::MAX
    };
    json!({ "client": c.key.to_string(), "value": c.value, "z": z, "blocked": c.blocked })
}

fn parse_top(query: &str) -> Result<usize, ApiError> {
    let mut top = DEFAULT_LIVE_TOP;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "top" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}: use top"
            )));
        }
        top = v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_LIVE_TOP)
            .ok_or_else(|| {
                ApiError::bad_request(format!("top={v:?}: give a number from 0 to {MAX_LIVE_TOP}"))
            })?;
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_is_bounded() {
        assert_eq!(parse_top("").unwrap(), DEFAULT_LIVE_TOP);
        assert_eq!(parse_top("top=0").unwrap(), 0);
        assert_eq!(parse_top("top=100").unwrap(), 100);
        assert!(parse_top("top=101").is_err());
        assert!(parse_top("top=x").is_err());
        assert!(parse_top("by=cpu").is_err());
    }
}
