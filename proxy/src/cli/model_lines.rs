//! `zgate ctl model`'s lines for people: per metric, where it blocks and its quantiles, each in
//! the metric's own unit (counts, bytes with binary prefixes, cpu as a share of a core).

use serde_json::Value;

/// One metric of the model for people, in the metric's own unit: where it blocks and its
/// quantiles, e.g. `connections: blocks above 4.95 connections; p50 2, p90 3, p99 4, p99.9 4,
/// max 4`.
pub(crate) fn distribution_line(name: &str, m: &Value) -> String {
    let mut line = format!("{name}: ");
    match m["blocks_above"].as_f64() {
        Some(v) if m["enforceable"] == Value::Bool(false) => line.push_str(&format!(
            "NOT ENFORCEABLE (too few clients), static cap: blocks above {}",
            in_unit(name, v, true)
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
