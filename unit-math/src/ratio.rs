//! Converting an exact ratio of big integers to the nearest `f64`.

use num_bigint::BigUint;
use num_traits::{ToPrimitive, Zero};

/// `num / den` as an `f64`, within one ulp: the quotient is first taken exactly to 64
/// significant bits, then rounded once. `den` must not be zero (test code: panics).
pub(crate) fn ratio_to_f64(num: &BigUint, den: &BigUint) -> f64 {
    assert!(!den.is_zero(), "ratio with a zero denominator");
    if num.is_zero() {
        return 0.0;
    }
    // Scale by 2^k so that the integer quotient has 64 or 65 significant bits.
    let k = 64 + den.bits() as i64 - num.bits() as i64;
    let q = if k >= 0 {
        (num << k as u64) / den
    } else {
        num / (den << (-k) as u64)
    };
    let q = q.to_f64().unwrap_or(f64::INFINITY);
    q * 2f64.powi(-k as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_ratios() {
        let r = |a: u64, b: u64| ratio_to_f64(&BigUint::from(a), &BigUint::from(b));
        assert_eq!(r(21, 2), 10.5);
        assert_eq!(r(1, 3), 1.0 / 3.0);
        assert_eq!(r(0, 7), 0.0);
        assert_eq!(r(u64::MAX, 1), u64::MAX as f64);
        let big = BigUint::from(1u8) << 300u32;
        assert_eq!(
            ratio_to_f64(&big, &(BigUint::from(3u8) << 100u32)),
            2f64.powi(200) / 3.0
        );
    }
}
