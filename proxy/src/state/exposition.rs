//! The Prometheus text format (version 0.0.4), written by hand: a family is its `# HELP` and
//! `# TYPE` lines and then its samples, in the order the caller writes them, so the output's
//! order is the code's order and the same on every scrape. Label values are escaped as the
//! format wants (`\\`, `\"`, `\n`).

use std::fmt::Write;

use crate::histogram::{Snapshot, BOUNDS};

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Prometheus text being written.
#[derive(Debug, Default)]
pub(crate) struct Text {
    out: String,
}

impl Text {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family of one unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram series of the current family: cumulative buckets, `+Inf`,
    /// `_sum` and `_count`.
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Snapshot) {
        for (bound, count) in BOUNDS.iter().zip(h.cumulative) {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&number(*bound)));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", number(h.sum));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }
}

/// A sample value: integers without a fraction, others as Rust prints them (shortest
/// round-trip), and the format's `NaN`, `+Inf`, `-Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut t = Text::default();
        t.family("x_total", Kind::Counter, "Things.");
        t.sample("x_total", &[("k", "a\"b\\c\nd")], 3.0);
        t.single("y", Kind::Gauge, "A ratio.", 0.25);
        let s = t.finish();
        assert_eq!(
            s,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{k=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP y A ratio.\n# TYPE y gauge\ny 0.25\n"
        );
    }

    #[test]
    fn a_histogram_has_buckets_inf_sum_and_count() {
        let h = crate::histogram::Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        let mut t = Text::default();
        t.family("d_seconds", Kind::Histogram, "Durations.");
        t.histogram("d_seconds", &[("b", "x")], &h.snapshot());
        let s = t.finish();
        assert!(
            s.contains("d_seconds_bucket{b=\"x\",le=\"0.001\"} 0\n"),
            "{s}"
        );
        assert!(
            s.contains("d_seconds_bucket{b=\"x\",le=\"0.0025\"} 1\n"),
            "{s}"
        );
        assert!(
            s.contains("d_seconds_bucket{b=\"x\",le=\"+Inf\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("d_seconds_count{b=\"x\"} 1\n"), "{s}");
        assert!(s.contains("d_seconds_sum{b=\"x\"} 0.002\n"), "{s}");
    }
}
