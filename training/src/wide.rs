//! Just enough unsigned 256-bit arithmetic to finish the variance exactly.
//!
//! The variance numerator `n * S2 - S1^2` needs up to 2 * 88 = 176 bits at the documented limits
//! (see [`crate::MAX_SAMPLE`]), more than `u128` holds; this is the exact wide path.

/// An unsigned 256-bit integer as `(high, low)` 128-bit halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct U256 {
    hi: u128,
    lo: u128,
}

impl U256 {
    /// The full product of two `u128`.
    pub(crate) fn mul(a: u128, b: u128) -> U256 {
        const LOW: u128 = u64::MAX as u128;
        let (a0, a1) = (a & LOW, a >> 64);
        let (b0, b1) = (b & LOW, b >> 64);
        // Each partial product of two 64-bit limbs fits in a u128.
        let p00 = a0 * b0;
        let p01 = a0 * b1;
        let p10 = a1 * b0;
        let p11 = a1 * b1;
        // At most 3 * (2^64 - 1): no overflow.
        let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
        U256 {
            lo: (p00 & LOW) | (mid << 64),
            hi: p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64),
        }
    }

    /// `self - other`, or `None` if `other > self`.
    pub(crate) fn checked_sub(self, other: U256) -> Option<U256> {
        if other > self {
            return None;
        }
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        Some(U256 {
            lo,
            hi: self.hi - other.hi - u128::from(borrow),
        })
    }

    /// The nearest `f64` up to two roundings (relative error below 2^-52).
    pub(crate) fn to_f64(self) -> f64 {
        const TWO_POW_128: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0;
        self.hi as f64 * TWO_POW_128 + self.lo as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_matches_u128_when_small_and_handles_max() {
        let p = U256::mul(123_456_789_012_345, 987_654_321_098);
        assert_eq!(
            p,
            U256 {
                hi: 0,
                lo: 123_456_789_012_345 * 987_654_321_098
            }
        );
        // (2^128 - 1)^2 = 2^256 - 2^129 + 1
        let m = U256::mul(u128::MAX, u128::MAX);
        assert_eq!(
            m,
            U256 {
                hi: u128::MAX - 1,
                lo: 1
            }
        );
        // 2^64 * 2^64 = 2^128
        assert_eq!(U256::mul(1 << 64, 1 << 64), U256 { hi: 1, lo: 0 });
    }

    #[test]
    fn sub_borrows_and_refuses_negative() {
        let a = U256 { hi: 1, lo: 0 };
        let b = U256 { hi: 0, lo: 1 };
        assert_eq!(
            a.checked_sub(b),
            Some(U256 {
                hi: 0,
                lo: u128::MAX
            })
        );
        assert_eq!(b.checked_sub(a), None);
    }

    #[test]
    fn to_f64_of_two_pow_200() {
        let x = U256 { hi: 1 << 72, lo: 0 };
        assert_eq!(x.to_f64(), 2f64.powi(200));
    }
}
