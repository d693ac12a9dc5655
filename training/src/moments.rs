//! Exact additive moments: the representation behind every accumulator.
//!
//! A population of samples `x_i` is kept as `n`, `S1 = sum x_i` and `S2 = sum x_i^2`, all in
//! wrapping integer arithmetic. Adding a sample, replacing one (`old -> new`) and removing one are
//! additions of signed deltas, so they commute: any split of the updates over shards, in any
//! order, sums to the same totals, and a shard may hold a "negative" part (a raise of a sample
//! that another shard added) without harm. As long as the true totals fit (see [`MAX_SAMPLE`])
//! the merged sums are exact, and [`Moments::mean`] and [`Moments::variance`] round only once, at
//! the final conversion to `f64`.

use crate::wide::U256;

/// The largest sample value that is accumulated exactly: 2^40. Default and only value.
///
/// Larger samples are clamped to it on entry (in `add`, `raise` and `remove` alike, so the
/// clamping is consistent). With samples `<= 2^40`, `S2 < n * 2^80`, which fits the 128-bit sum
/// for populations up to `n < 2^48` clients, so the sums are exact for any realistic population.
/// 2^40 is 1 TiB of memory, 1.1 million cores in ppm, and a fragmentation score far above any
/// threshold; a clamped sample still scores as an extreme outlier.
pub const MAX_SAMPLE: u64 = 1 << 40;

/// Exact power sums of a population: `n`, `S1 = sum x`, `S2 = sum x^2`.
///
/// All three wrap (`n` is effectively a two's complement `i64`, the sums `i128`), so partial
/// moments (one shard's updates) may be "negative"; the sum over all parts is exact as long as
/// the true totals are in range (samples `<= MAX_SAMPLE`, `n < 2^48`). Default: empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Moments {
    /// Number of samples (wrapping).
    pub n: u64,
    /// Sum of the samples (wrapping), in the metric's unit.
    pub s1: u128,
    /// Sum of the squared samples (wrapping), in the metric's unit squared.
    pub s2: u128,
}

impl Moments {
    /// Adds a sample `x` (clamped to [`MAX_SAMPLE`]).
    pub fn add(&mut self, x: u64) {
        let x = u128::from(x.min(MAX_SAMPLE));
        self.n = self.n.wrapping_add(1);
        self.s1 = self.s1.wrapping_add(x);
        self.s2 = self.s2.wrapping_add(x * x);
    }

    /// Replaces a sample `old` with `new` (both clamped to [`MAX_SAMPLE`]); `n` is unchanged.
    pub fn raise(&mut self, old: u64, new: u64) {
        let (d1, d2) = replace_deltas(old, new);
        self.s1 = self.s1.wrapping_add(d1);
        self.s2 = self.s2.wrapping_add(d2);
    }

    /// Removes a sample `x` (clamped to [`MAX_SAMPLE`]).
    pub fn remove(&mut self, x: u64) {
        let x = u128::from(x.min(MAX_SAMPLE));
        self.n = self.n.wrapping_sub(1);
        self.s1 = self.s1.wrapping_sub(x);
        self.s2 = self.s2.wrapping_sub(x * x);
    }

    /// Adds another part of the same population (another shard, another instance).
    pub fn merge(&mut self, other: &Moments) {
        self.n = self.n.wrapping_add(other.n);
        self.s1 = self.s1.wrapping_add(other.s1);
        self.s2 = self.s2.wrapping_add(other.s2);
    }

    /// The population size, or 0 if the sums are not those of a real population (`n` negative as
    /// `i64`, which only happens if more samples were removed than added, or when reading a live
    /// set mid-update across shards).
    pub fn count(&self) -> u64 {
        if self.is_consistent() {
            self.n
        } else {
            0
        }
    }

    /// `S1 / n`, rounded once; 0.0 for an empty or inconsistent population.
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        self.s1 as f64 / n as f64
    }

    /// Population variance `(n * S2 - S1^2) / n^2`: the numerator is computed exactly in 256-bit
    /// integer arithmetic, then converted to `f64` once (relative error a few ulp). 0.0 for an
    /// empty or inconsistent population.
    pub fn variance(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let num = U256::mul(u128::from(n), self.s2).checked_sub(U256::mul(self.s1, self.s1));
        match num {
            Some(num) => {
                let n = n as f64;
                num.to_f64() / (n * n)
            }
            // Cauchy-Schwarz forbids this for a real population.
            None => 0.0,
        }
    }

    /// Population standard deviation (divides by `n`, not `n - 1`): `sqrt(variance)`.
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Whether the wrapping sums can be those of a real population: `n` is not negative as an
    /// `i64`, and `n == 0` implies empty sums.
    fn is_consistent(&self) -> bool {
        if self.n > i64::MAX as u64 {
            return false;
        }
        self.n != 0 || (self.s1 == 0 && self.s2 == 0)
    }
}

/// The wrapping deltas `(new - old, new^2 - old^2)` of replacing `old` with `new`, both clamped
/// to [`MAX_SAMPLE`].
///
/// Computed as `d = new - old` and `d * (new + old)` in signed arithmetic, which the compiler
/// turns into one 64 x 64 -> 128-bit multiply on the hot path of every raise.
#[inline]
pub(crate) fn replace_deltas(old: u64, new: u64) -> (u128, u128) {
    // Both are at most 2^40 after the clamp, so they, their difference and their sum fit an
    // i64, and the product (|.| < 2^81) an i128: no overflow, and the casts are lossless.
    let old = old.min(MAX_SAMPLE) as i64;
    let new = new.min(MAX_SAMPLE) as i64;
    let d = i128::from(new - old);
    // Two's complement: a negative delta is the wrapping one the sums expect.
    (d as u128, (d * i128::from(new + old)) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(xs: &[u64]) -> Moments {
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.add(x));
        m
    }

    #[test]
    fn one_to_twenty() {
        let xs: Vec<u64> = (1..=20).collect();
        let m = of(&xs);
        assert_eq!(m.count(), 20);
        assert_eq!(m.mean(), 10.5);
        // population variance of 1..=n is (n^2 - 1) / 12
        assert_eq!(m.variance(), 399.0 / 12.0);
        assert!((m.std() - 5.766_281_297_335_398).abs() < 1e-12);
    }

    #[test]
    fn raise_and_remove_split_over_parts_sum_to_final_population() {
        let mut a = Moments::default();
        let mut b = Moments::default();
        a.add(3);
        a.add(10);
        b.raise(3, 7); // raised on another part than the add
        b.remove(10);
        a.add(1);
        assert_ne!(b.n, 0);
        a.merge(&b);
        assert_eq!(a, of(&[7, 1]));
    }

    #[test]
    fn negative_part_alone_is_reported_empty() {
        let mut m = Moments::default();
        m.remove(5);
        assert_eq!(m.count(), 0);
        assert_eq!(m.mean(), 0.0);
        assert_eq!(m.std(), 0.0);
    }

    #[test]
    fn replace_deltas_are_the_wrapping_differences() {
        for (old, new) in [
            (3, 7),
            (7, 3),
            (0, MAX_SAMPLE),
            (MAX_SAMPLE, 0),
            (5, 5),
            (0, u64::MAX),
        ] {
            let (o, n) = (
                u128::from(old.min(MAX_SAMPLE)),
                u128::from(new.min(MAX_SAMPLE)),
            );
            let want = (n.wrapping_sub(o), (n * n).wrapping_sub(o * o));
            assert_eq!(replace_deltas(old, new), want, "{old} -> {new}");
        }
    }

    #[test]
    fn samples_are_clamped_consistently() {
        let mut m = Moments::default();
        m.add(u64::MAX);
        m.raise(u64::MAX, u64::MAX - 1);
        assert_eq!(m, of(&[MAX_SAMPLE]));
        m.remove(u64::MAX);
        assert_eq!(m, Moments::default());
    }

    #[test]
    fn identical_samples_have_zero_std() {
        let m = of(&[MAX_SAMPLE; 1000]);
        assert_eq!(m.mean(), MAX_SAMPLE as f64);
        assert_eq!(m.variance(), 0.0);
    }
}
