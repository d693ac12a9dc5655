//! The PROXY protocol header as a `proxy_protocol` listener reads it: the fuzzer's bytes are
//! what the peer sends first, handed to `listen::proxied::read_header` (the incremental read
//! loop the server runs, over `listen/proxy_header.rs`) in reads of fuzzer-chosen sizes, never
//! more than the [`MAX_HEADER`] bytes it reads at most; then it closes.
//!
//! Beyond "no panic", the target checks that reading in pieces changes nothing: a header
//! found is the one a parse of all the bytes at once finds (same client, same length), the
//! bytes handed on after it are exactly those that followed it, and a refusal is one the
//! whole bytes get too.

use std::net::SocketAddr;
#[cfg(test)]
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

use super::world;
use crate::listen::proxied::{read_header, Failed};
use crate::listen::proxy_header::{self, Parse, Source, MAX_HEADER};
use crate::stats::HeaderFailure;

/// The socket peer of the fuzzed connection (the client when the header names none).
const BALANCER: &str = "10.0.0.1:5555";

/// Longest read, bytes: a v1 header whole, or a v2 header's fixed part and its addresses.
const MAX_READ: usize = 128;

/// Reads `data[1..]` as the first bytes of a `proxy_protocol` connection, in pieces whose
/// sizes `data[0]` seeds (see the module docs). Panics when the pieces change the outcome.
pub fn proxy_header(data: &[u8]) {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let Some(runtime) = runtime() else { return };
    let Ok(peer) = BALANCER.parse::<SocketAddr>() else {
        return;
    };
    let mut reader = Pieces::new(bytes, seed);
    let got = runtime.block_on(read_header(&mut reader, peer, Duration::from_secs(60)));
    let read = reader.at;
    assert!(read <= MAX_HEADER, "read {read} bytes");
    let whole = proxy_header::parse(&bytes[..bytes.len().min(MAX_HEADER)]);
    match got {
        Ok(p) => {
            let head = read - p.rest.len();
            assert_eq!(
                &p.rest[..],
                &bytes[head..read],
                "the bytes after the header"
            );
            let Parse::Done { source, consumed } = whole else {
                panic!("in pieces: a header of {head} bytes; at once: {whole:?}");
            };
            assert_eq!(consumed, head, "the header's length");
            let named = match source {
                Source::Client(a) => (a, true),
                Source::Peer => (peer, false),
            };
            assert_eq!((p.client, p.from_header), named, "the client");
        }
        Err(Failed { why, error }) => match why {
            HeaderFailure::Missing | HeaderFailure::Invalid => {
                assert!(
                    matches!(whole, Parse::Invalid(_)),
                    "{why:?} {error:?}: {whole:?}"
                );
            }
            HeaderFailure::TooLong => assert!(
                matches!(whole, Parse::Invalid(_) | Parse::NeedMore),
                "too long in pieces: {whole:?}"
            ),
            // The bytes ran out before a header was whole.
            HeaderFailure::Closed => {
                assert_eq!(read, bytes.len());
                assert_eq!(whole, Parse::NeedMore, "closed in pieces");
            }
            HeaderFailure::Timeout | HeaderFailure::Untrusted => {
                panic!("{why:?} from an in-memory reader")
            }
        },
    }
}

/// The runtime `read_header`'s deadline needs, built once per process.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(world::runtime).as_ref()
}

/// A reader that hands out `data` in pieces of 1..=[`MAX_READ`] bytes (each never more than
/// the reader asks for), their sizes drawn from a generator seeded by the input, then EOF.
struct Pieces<'a> {
    data: &'a [u8],
    /// Bytes handed out so far.
    at: usize,
    /// Every piece's size, for seeds below 64.
    fixed: Option<usize>,
    /// The generator of the other seeds' sizes.
    state: u32,
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], seed: u8) -> Pieces<'a> {
        Pieces {
            data,
            at: 0,
            fixed: (seed < 64).then_some(usize::from(seed) + 1),
            state: u32::from(seed) | 0x100,
        }
    }

    /// The next piece's size: seeds below 64 read that many bytes + 1 every time; the others
    /// vary (a xorshift step), so a header is cut at different points.
    fn next_size(&mut self) -> usize {
        if let Some(size) = self.fixed {
            return size;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        (self.state as usize % MAX_READ) + 1
    }
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let size = this.next_size();
        let left = &this.data[this.at..];
        let n = left.len().min(size).min(buf.remaining());
        buf.put_slice(&left[..n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds pass the target's checks, read in pieces of every size.
    #[test]
    fn the_seed_corpus_reads_the_same_in_pieces() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/proxy_header");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let mut data = std::fs::read(entry.unwrap().path()).unwrap();
            for seed in [0, 1, 5, 63, 64, 200, 255] {
                data[0] = seed;
                proxy_header(&data);
            }
            seeds += 1;
        }
        assert!(seeds >= 20, "{seeds} seeds");
    }

    #[test]
    fn pieces_are_cut_as_the_seed_says() {
        let data = [7u8; 300];
        let mut p = Pieces::new(&data, 2);
        assert_eq!((p.next_size(), p.next_size()), (3, 3));
        let mut p = Pieces::new(&data, 200);
        let sizes: Vec<usize> = (0..50).map(|_| p.next_size()).collect();
        assert!(sizes.iter().all(|&n| (1..=MAX_READ).contains(&n)));
        assert!(sizes.windows(2).any(|w| w[0] != w[1]), "{sizes:?}");
    }
}
