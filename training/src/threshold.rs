//! The z-score threshold: the one rule for what a valid threshold is, shared by config load,
//! the limiter and the admin API.

use core::fmt;

/// Checks a z-score threshold (standard deviations; see [`crate::Model::exceeds`]): it must be
/// finite and `>= 0`. Returns it unchanged when valid.
///
/// A negative threshold would block every client above the mean and a NaN would never block, so
/// neither is accepted from an operator.
pub fn check_threshold(z: f64) -> Result<f64, InvalidThreshold> {
    if z.is_finite() && z >= 0.0 {
        Ok(z)
    } else {
        Err(InvalidThreshold(z))
    }
}

/// A threshold that is not finite or is negative. Holds the rejected value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidThreshold(pub f64);

impl fmt::Display for InvalidThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threshold {} must be finite and >= 0 (standard deviations)",
            self.0
        )
    }
}

impl std::error::Error for InvalidThreshold {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_non_negative_only() {
        assert_eq!(check_threshold(0.0), Ok(0.0));
        assert_eq!(check_threshold(3.5), Ok(3.5));
        assert_eq!(check_threshold(-1.0), Err(InvalidThreshold(-1.0)));
        assert!(check_threshold(f64::NAN).is_err());
        assert!(check_threshold(f64::INFINITY).is_err());
        assert_eq!(
            InvalidThreshold(-1.0).to_string(),
            "threshold -1 must be finite and >= 0 (standard deviations)"
        );
    }
}
