//! Metric F: how finely a message was cut into chunks.
//!
//! For a message of `bytes` bytes that arrived in `chunks >= 2` chunks (HTTP/2 DATA or
//! CONTINUATION payloads, or HTTP/1 socket reads), the score is
//! `FRAG_SCALE * chunks / avg_chunk = FRAG_SCALE * chunks^2 / bytes`, rounded down. Messages in
//! one chunk have no score. Large messages in large chunks score low; many tiny chunks score
//! high, so only the upper tail is an anomaly. Empty chunks (empty DATA frames) count as chunks;
//! a message of 0 bytes is scored as if it had 1 byte.

/// The scale `N` of the fragmentation score: 1024. With it, a message whose chunks average
/// 1 KiB scores its number of chunks; 1-byte chunks score `1024 * chunks`.
pub const FRAG_SCALE: u64 = 1024;

/// The fragmentation score of a message of `bytes` in `chunks` chunks: `None` for
/// `chunks < 2`, else `FRAG_SCALE * chunks^2 / max(bytes, 1)` rounded down, saturating at
/// `u64::MAX`.
pub fn fragmentation_score(bytes: u64, chunks: u64) -> Option<u64> {
    if chunks < 2 {
        return None;
    }
    let chunks = u128::from(chunks);
    let num = u128::from(FRAG_SCALE).saturating_mul(chunks.saturating_mul(chunks));
    let score = num / u128::from(bytes.max(1));
    Some(u64::try_from(score).unwrap_or(u64::MAX))
}

/// A message's running (bytes, chunks), to score it as chunks arrive. Default: no chunk yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragments {
    bytes: u64,
    chunks: u64,
}

impl Fragments {
    /// Records a chunk of `len` bytes; returns the score after it, `None` while fewer than two
    /// chunks arrived.
    pub fn chunk(&mut self, len: usize) -> Option<u64> {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.chunks = self.chunks.saturating_add(1);
        self.score()
    }

    /// Starts a new message.
    pub fn reset(&mut self) {
        *self = Fragments::default();
    }

    /// The current score, `None` while fewer than two chunks arrived.
    pub fn score(&self) -> Option<u64> {
        fragmentation_score(self.bytes, self.chunks)
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Chunks so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_from_the_second_chunk() {
        let mut f = Fragments::default();
        assert_eq!(f.chunk(1024), None);
        assert_eq!(f.chunk(1024), Some(2)); // 1024 * 4 / 2048
        assert_eq!(f.chunk(1024), Some(3));
        f.reset();
        assert_eq!(f, Fragments::default());
        assert_eq!(f.chunk(1), None);
    }

    #[test]
    fn empty_chunks_count_and_saturate_instead_of_overflowing() {
        let mut f = Fragments::default();
        f.chunk(0);
        assert_eq!(f.chunk(0), Some(4096)); // 1024 * 4 / max(0, 1)
        assert_eq!(fragmentation_score(1, u64::MAX), Some(u64::MAX));
    }
}
