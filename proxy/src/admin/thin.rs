//! Thin metrics, never silent: a metric learned from fewer than `min_clients` clients is not
//! scored and blocks above its static cap (`limits.fallback.<metric>`) only. `GET
//! /api/v1/model` says so per metric, and a switch to defence or monitor carries a warning
//! naming them (the switch itself is refused with 409 unless forced, see `api.rs`).

use serde_json::{json, Map};
use zgate_limiter::{Metric, Mode, Model};

use super::Control;

/// Adds `enforceable` (bool) to a metric's entry of the model view, and for a thin metric
/// `not_enforceable`: why, and the static cap that applies instead.
pub(super) fn describe(entry: &mut Map<String, serde_json::Value>, model: &Model, m: Metric) {
    let n = model.get(m).n;
    let thin = n < model.params.min_clients;
    entry.insert("enforceable".into(), json!(!thin));
    if thin {
        let why = format!(
            "learned from {n} clients, fewer than min_clients ({}): blocks above its static cap \
             limits.fallback.{m} = {} only",
            model.params.min_clients,
            model.params.fallback(m)
        );
        entry.insert("not_enforceable".into(), json!(why));
    }
}

/// In defence or monitor, the warning that names the enabled metrics of the model in use that
/// are not enforceable (learned from fewer than `min_clients` clients) and the static cap each
/// falls back to; `None` when there are none.
pub(super) fn warning(core: &dyn Control, mode: Mode) -> Option<String> {
    if !matches!(mode, Mode::Defence | Mode::Monitor) {
        return None;
    }
    let limiter = core.limiter();
    let model = limiter.model()?;
    let thin: Vec<String> = model
        .thin_metrics()
        .filter(|&(m, _)| limiter.is_enabled(m))
        .map(|(m, n)| format!("{m} (n = {n}, static cap {})", model.params.fallback(m)))
        .collect();
    if thin.is_empty() {
        return None;
    }
    Some(format!(
        "not enforceable, learned from fewer than min_clients ({}) clients, falling back to \
         static caps (limits.fallback): {}",
        model.params.min_clients,
        thin.join(", ")
    ))
}
