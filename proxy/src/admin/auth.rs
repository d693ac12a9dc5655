//! Admin authentication: `Authorization: Bearer <token>`, compared in constant time.

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// Whether `headers` carry the bearer `token`. With no token configured every request passes
/// (the config allows that on loopback addresses only).
pub(crate) fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = headers.get(AUTHORIZATION) else {
        return false;
    };
    let given = given.as_bytes();
    let Some(given) = given
        .strip_prefix(b"Bearer ")
        .or_else(|| given.strip_prefix(b"bearer "))
    else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

/// Compares `a` and `b` in time that depends only on their lengths, not on where they differ
/// (so a network attacker cannot find the token byte by byte from response times).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // Keep the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_strings() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_header_is_required() {
        let mut h = HeaderMap::new();
        assert!(authorized(&h, None));
        assert!(!authorized(&h, Some("0123456789abcdef")));
        h.insert(AUTHORIZATION, "Bearer 0123456789abcdef".parse().unwrap());
        assert!(authorized(&h, Some("0123456789abcdef")));
        assert!(!authorized(&h, Some("0123456789abcdeg")));
        h.insert(AUTHORIZATION, "Basic 0123456789abcdef".parse().unwrap());
        assert!(!authorized(&h, Some("0123456789abcdef")));
    }
}
