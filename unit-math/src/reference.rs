//! The exact reference: population mean and standard deviation computed in two passes over the
//! samples with wide integers, rounded to `f64` only at the end.
//!
//! Pass 1: `S = sum c_i x_i` and `n = sum c_i` (exact in `u128`). Pass 2:
//! `Q = sum c_i (n x_i - S)^2`, exact (per term in `i128`/`u128` when it fits, else `BigUint`;
//! the running sum spills into a `BigUint`). Then `mean = S / n` and the population variance is
//! `Q / n^3`; both ratios are converted to `f64` within one ulp, and `std = sqrt(variance)`.
//!
//! This is a different algorithm from the accumulators under test (one pass of power sums), so
//! agreement is evidence, not tautology.

use num_bigint::BigUint;
use num_traits::Zero;

use crate::ratio::ratio_to_f64;

/// Exact statistics of a population, rounded once to `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exact {
    /// Population size.
    pub n: u64,
    /// Mean, within one ulp of the exact value.
    pub mean: f64,
    /// Population standard deviation (divides by `n`), within about one ulp.
    pub std: f64,
    /// Exact `sum x` (for comparing sums, not only floats).
    pub s1: u128,
    /// Exact `sum x^2`, if it fits in `u128`.
    pub s2: Option<u128>,
}

/// The exact statistics of `values` (each sample once). Empty: all zero.
pub fn exact(values: &[u64]) -> Exact {
    exact_weighted(values.iter().map(|&x| (x, 1)))
}

/// The exact statistics of a population given as `(value, multiplicity)` pairs (pairs may repeat
/// a value). Iterates the pairs twice (two-pass). Empty: all zero.
pub fn exact_weighted<I>(pairs: I) -> Exact
where
    I: IntoIterator<Item = (u64, u64)> + Clone,
{
    let mut n: u128 = 0;
    let mut s1: u128 = 0;
    let mut s2: Option<u128> = Some(0);
    for (x, c) in pairs.clone() {
        let (x, c) = (u128::from(x), u128::from(c));
        n += c;
        s1 += c * x; // < 2^128 for any population a test can name
        s2 = s2.and_then(|s| x.checked_mul(x)?.checked_mul(c)?.checked_add(s));
    }
    if n == 0 {
        return Exact {
            n: 0,
            mean: 0.0,
            std: 0.0,
            s1: 0,
            s2: Some(0),
        };
    }
    let mut q = WideSum::default();
    for (x, c) in pairs {
        q.add_weighted_square(n, u128::from(x), s1, c);
    }
    let q = q.finish();
    let n_big = BigUint::from(n);
    let mean = ratio_to_f64(&BigUint::from(s1), &n_big);
    let variance = ratio_to_f64(&q, &(&n_big * &n_big * &n_big));
    Exact {
        n: u64::try_from(n).unwrap_or(u64::MAX),
        mean,
        std: variance.sqrt(),
        s1,
        s2,
    }
}

/// An exact sum of non-negative terms: a `u128` that spills into a `BigUint` on overflow.
#[derive(Default)]
struct WideSum {
    small: u128,
    big: BigUint,
}

impl WideSum {
    /// Adds `c * (n * x - s)^2`.
    fn add_weighted_square(&mut self, n: u128, x: u128, s: u128, c: u64) {
        let fast = n.checked_mul(x).map(|nx| nx.abs_diff(s)).and_then(|d| {
            d.checked_mul(d)
                .and_then(|d2| d2.checked_mul(u128::from(c)))
        });
        match fast {
            Some(term) => match self.small.checked_add(term) {
                Some(sum) => self.small = sum,
                None => {
                    self.big += self.small;
                    self.small = term;
                }
            },
            None => {
                let nx = BigUint::from(n) * BigUint::from(x);
                let s = BigUint::from(s);
                let d = if nx >= s { nx - s } else { s - nx };
                self.big += &d * &d * BigUint::from(c);
            }
        }
    }

    fn finish(self) -> BigUint {
        let mut total = self.big;
        if !self.small.is_zero() {
            total += self.small;
        }
        total
    }
}

/// `|got - want| / |want|`, or `|got|` when `want == 0` (absolute error at zero).
pub fn rel_err(got: f64, want: f64) -> f64 {
    if want == 0.0 {
        got.abs()
    } else {
        ((got - want) / want).abs()
    }
}

/// The accuracy required of the accumulators: relative error on mean and std at most 1e-9.
pub const TOLERANCE: f64 = 1e-9;

/// Asserts that a merged population matches the exact reference: the same `n` and the same
/// exact sums, and mean and std within [`TOLERANCE`] relative error (absolute at zero).
#[track_caller]
pub fn assert_accurate(got: &zgate_training::Population, want: &Exact, case: &str) {
    assert_eq!(got.n, want.n, "{case}: n");
    assert_eq!(got.moments.s1, want.s1, "{case}: sum x");
    if let Some(s2) = want.s2 {
        assert_eq!(got.moments.s2, s2, "{case}: sum x^2");
    }
    let mean_err = rel_err(got.mean, want.mean);
    let std_err = rel_err(got.std, want.std);
    assert!(
        mean_err <= TOLERANCE && std_err <= TOLERANCE,
        "{case}: got mean {} std {}, exact mean {} std {} (relative errors {mean_err:e}, {std_err:e})",
        got.mean,
        got.std,
        want.mean,
        want.std,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_twenty() {
        let v: Vec<u64> = (1..=20).collect();
        let e = exact(&v);
        assert_eq!(e.n, 20);
        assert_eq!(e.mean, 10.5);
        assert_eq!(e.std, (399.0f64 / 12.0).sqrt());
        assert_eq!(e.s1, 210);
        assert_eq!(e.s2, Some(2870));
    }

    #[test]
    fn weighted_equals_repeated_and_handles_huge_populations() {
        let a = exact(&[5, 5, 5, 9]);
        let b = exact_weighted([(5, 3), (9, 1)]);
        assert_eq!(a, b);
        // 2^60 samples of 2^40 and one of 0: the terms overflow u128 and go through BigUint.
        let e = exact_weighted([(1u64 << 40, 1u64 << 60), (0, 1)]);
        let n = 2f64.powi(60) + 1.0;
        assert_eq!(e.mean, 2f64.powi(100) / n);
        // variance = m * 2^80 / (m + 1)^2 with m = 2^60: std = 2^70 / (2^60 + 1) ~ 1024
        assert!(rel_err(e.std, 1024.0) < 1e-15, "{}", e.std);
        assert_eq!(e.s2, None);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(exact(&[]).n, 0);
        let e = exact(&[7]);
        assert_eq!((e.mean, e.std), (7.0, 0.0));
    }
}
