//! The route table (sans-IO): a request's host and path in, the index of its pool out.
//!
//! Among the routes whose host and path prefix both match, the most specific host wins (an
//! exact host, then the longest wildcard suffix, then routes without a host), then the longest
//! path prefix. So an exact host's routes that all miss the path fall through to the wildcard
//! and any-host routes.
//!
//! Cost, whatever the number of routes: the host is lower-cased on the stack (no allocation),
//! then one hash lookup for the exact host, one per dot of the host for wildcards (each only
//! when some route's host, or wildcard suffix, has that length; the hash is FxHash's, not
//! SipHash), and per host group that has routes, a binary search over its
//! sorted prefixes plus a walk up the "longest other prefix that is a prefix of this one"
//! links, comparing lengths only. `proxy/benches/routes.rs` measures it with 1000 routes.

use std::collections::HashMap;

use zgate_config::HostPattern;

/// The longest host looked up, bytes (a DNS name is at most 253). A longer one matches only
/// the routes without a host.
const MAX_HOST: usize = 255;

/// Routes by host, then path prefix, to a pool index.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Prefixes, Fast>,
    /// By suffix with its leading dot (`".example.com"` for `*.example.com`).
    wildcard: HashMap<Box<str>, Prefixes, Fast>,
    /// The lengths of the exact hosts and of the wildcard suffixes: a host (or suffix) of
    /// another length is not hashed at all.
    exact_lengths: Lengths,
    wildcard_lengths: Lengths,
    any: Prefixes,
}

/// A set of lengths 0..=[`MAX_HOST`].
#[derive(Debug, Default)]
struct Lengths([u64; 4]);

impl Lengths {
    fn insert(&mut self, n: usize) {
        if n <= MAX_HOST {
            self.0[n / 64] |= 1 << (n % 64);
        }
    }

    #[inline]
    fn contains(&self, n: usize) -> bool {
        n <= MAX_HOST && self.0[n / 64] & (1 << (n % 64)) != 0
    }
}

/// A fast hash for the host maps. Not keyed: the maps hold only the config's hosts, so a
/// client's host cannot lengthen a probe sequence beyond what the config's own keys make.
#[derive(Debug, Default, Clone, Copy)]
struct Fast;

impl std::hash::BuildHasher for Fast {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// FxHash's step, over 8-byte words.
struct FastHasher(u64);

/// FxHash's multiplier.
const K: u64 = 0x517c_c1b7_2722_0a95;

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the top 7 bits for its control bytes, the low ones for the bucket.
        self.0 ^ (self.0 >> 29)
    }
}

/// One host's routes, sorted by prefix.
#[derive(Debug, Default)]
struct Prefixes {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    prefix: Box<str>,
    /// The longest other prefix of this host that is a prefix of this one.
    parent: Option<usize>,
    pool: usize,
}

impl RouteTable {
    /// A table of `(host, path prefix, pool index)` routes. A later duplicate of a host and
    /// prefix replaces an earlier one (the config refuses duplicates).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a HostPattern, &'a str, usize)>) -> Self {
        let mut exact: HashMap<Box<str>, Vec<(Box<str>, usize)>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<(Box<str>, usize)>> = HashMap::new();
        let mut any = Vec::new();
        for (host, prefix, pool) in routes {
            let list = match host {
                HostPattern::Any => &mut any,
                HostPattern::Exact(h) => exact.entry(h.as_str().into()).or_default(),
                HostPattern::Wildcard(s) => wildcard.entry(s.as_str().into()).or_default(),
            };
            list.push((prefix.into(), pool));
        }
        let lengths = |m: &HashMap<Box<str>, Vec<(Box<str>, usize)>>| {
            let mut l = Lengths::default();
            m.keys().for_each(|k| l.insert(k.len()));
            l
        };
        let (exact_lengths, wildcard_lengths) = (lengths(&exact), lengths(&wildcard));
        let build = |m: HashMap<Box<str>, Vec<(Box<str>, usize)>>| {
            m.into_iter()
                .map(|(h, list)| (h, Prefixes::new(list)))
                .collect()
        };
        RouteTable {
            exact: build(exact),
            wildcard: build(wildcard),
            exact_lengths,
            wildcard_lengths,
            any: Prefixes::new(any),
        }
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.entries.is_empty()
    }

    /// The pool of a request to `authority` (the `Host` or `:authority`, a port and any case
    /// allowed; empty when the request has none) for `path`; `None` when no route matches.
    pub fn lookup(&self, authority: &[u8], path: &str) -> Option<usize> {
        if !self.exact.is_empty() || !self.wildcard.is_empty() {
            let mut buf = [0u8; MAX_HOST];
            if let Some(host) = normalize(authority, &mut buf) {
                if self.exact_lengths.contains(host.len()) {
                    if let Some(p) = self.exact.get(host).and_then(|p| p.lookup(path)) {
                        return Some(p);
                    }
                }
                if !self.wildcard.is_empty() {
                    // Suffixes from the longest: `.b.example.com`, `.example.com`, `.com`.
                    let dots = host
                        .bytes()
                        .enumerate()
                        .filter(|&(i, b)| b == b'.' && i > 0);
                    for (i, _) in dots {
                        if !self.wildcard_lengths.contains(host.len() - i) {
                            continue;
                        }
                        let found = self.wildcard.get(&host[i..]).and_then(|p| p.lookup(path));
                        if found.is_some() {
                            return found;
                        }
                    }
                }
            }
        }
        self.any.lookup(path)
    }
}

impl Prefixes {
    fn new(mut list: Vec<(Box<str>, usize)>) -> Prefixes {
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        // Sorted, a prefix comes before every string it starts; a stack of the entries that
        // are prefixes of the current one gives each its parent.
        let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
        let mut stack: Vec<usize> = Vec::new();
        for (i, (prefix, pool)) in list.into_iter().enumerate() {
            while let Some(&top) = stack.last() {
                if prefix.starts_with(&*entries[top].prefix) {
                    break;
                }
                stack.pop();
            }
            entries.push(Entry {
                prefix,
                parent: stack.last().copied(),
                pool,
            });
            stack.push(i);
        }
        Prefixes { entries }
    }

    /// The pool of the longest prefix of `path`.
    fn lookup(&self, path: &str) -> Option<usize> {
        // The greatest prefix not above `path`: every prefix of `path` in the table sorts
        // between it and `path`, so it starts with all of them; they are its ancestors.
        let at = self
            .entries
            .partition_point(|e| e.prefix.as_bytes() <= path.as_bytes());
        let mut i = at.checked_sub(1)?;
        let e = &self.entries[i];
        let common = e
            .prefix
            .bytes()
            .zip(path.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        // An ancestor no longer than what `path` shares with it is a prefix of `path`.
        loop {
            let e = &self.entries[i];
            if e.prefix.len() <= common {
                return Some(e.pool);
            }
            i = e.parent?;
        }
    }
}

/// The host of `authority`: without its port and a trailing dot, lower case (in `buf` when it
/// has upper-case letters); `None` when empty or longer than [`MAX_HOST`].
fn normalize<'b>(authority: &'b [u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = if authority.first() == Some(&b'[') {
        // `[v6]:port`: up to the bracket.
        match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    let host = if host.iter().any(u8::is_ascii_uppercase) {
        let out = &mut buf[..host.len()];
        out.copy_from_slice(host);
        out.make_ascii_lowercase();
        &*out
    } else {
        host
    };
    std::str::from_utf8(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, usize)]) -> RouteTable {
        let hosts: Vec<HostPattern> = routes
            .iter()
            .map(|(h, _, _)| match *h {
                "" => HostPattern::Any,
                h if h.starts_with("*.") => HostPattern::Wildcard(h[1..].into()),
                h => HostPattern::Exact(h.into()),
            })
            .collect();
        RouteTable::new(
            hosts
                .iter()
                .zip(routes)
                .map(|(h, (_, p, pool))| (h, *p, *pool)),
        )
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let t = table(&[
            ("api.example.com", "/v1/", 1),
            ("api.example.com", "/v1/admin/", 2),
            ("*.example.com", "/", 3),
            ("*.b.example.com", "/", 4),
            ("", "/static/", 5),
            ("", "/", 6),
        ]);
        let l = |h: &str, p: &str| t.lookup(h.as_bytes(), p);
        assert_eq!(l("api.example.com", "/v1/x"), Some(1));
        assert_eq!(l("API.Example.COM:8443", "/v1/admin/x"), Some(2));
        assert_eq!(l("api.example.com.", "/v1/admin"), Some(1));
        // The exact host's routes miss the path: the wildcard's match.
        assert_eq!(l("api.example.com", "/v2/"), Some(3));
        assert_eq!(l("www.example.com", "/static/a"), Some(3));
        assert_eq!(l("x.b.example.com", "/"), Some(4));
        assert_eq!(l("a.x.b.example.com", "/"), Some(4));
        // A wildcard does not match its apex.
        assert_eq!(l("example.com", "/static/a"), Some(5));
        assert_eq!(l("", "/"), Some(6));
        assert_eq!(l("other", "/static"), Some(6));
        assert_eq!(l("[::1]:80", "/static/"), Some(5));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = table(&[("a.example", "/api/", 0)]);
        assert_eq!(t.lookup(b"a.example", "/api/x"), Some(0));
        assert_eq!(t.lookup(b"a.example", "/api"), None);
        assert_eq!(t.lookup(b"b.example", "/api/x"), None);
        assert_eq!(t.lookup(b"", "/api/x"), None);
        assert!(RouteTable::default().lookup(b"a", "/").is_none());
        assert!(RouteTable::default().is_empty());
        let long = "a".repeat(300);
        assert_eq!(t.lookup(long.as_bytes(), "/api/"), None);
    }

    /// The binary search and parent links agree with a plain scan, on nested and
    /// interleaved prefixes.
    #[test]
    fn longest_prefix_matches_a_linear_scan() {
        let prefixes = [
            "/", "/a", "/a/", "/a/b", "/a/b/c", "/a/bc", "/ab", "/b/", "/b/a", "/ba", "/a/b/c/d",
            "/aa", "/a/a",
        ];
        let routes: Vec<(&str, &str, usize)> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| ("", *p, i))
            .collect();
        let t = table(&routes);
        let paths = [
            "",
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/b/",
            "/a/b/c/d/e",
            "/a/bb",
            "/a/bcd",
            "/ab/x",
            "/b",
            "/b/",
            "/b/ab",
            "/bz",
            "/c",
            "/a/a/a",
            "/a/",
            "/aa",
            "/a0",
        ];
        for path in paths {
            let want = prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| path.starts_with(*p))
                .max_by_key(|(_, p)| p.len())
                .map(|(i, _)| i);
            assert_eq!(t.lookup(b"h", path), want, "{path:?}");
        }
    }

    /// A small deterministic generator (SplitMix64): the randomized tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// What a route matches, for the plain scan.
    #[derive(Debug, Clone)]
    enum Pattern {
        Any,
        Exact(Vec<u8>),
        Wildcard(Vec<u8>),
    }

    /// The lookup as the module's doc states it, by scanning every route: the host without its
    /// port and trailing dot, ASCII lower case, valid UTF-8, 1 to 255 bytes (else only the
    /// routes without a host); its exact routes, then its wildcards from the longest suffix,
    /// then the routes without a host; in the first of those groups that has a route whose
    /// prefix starts `path`, the longest such prefix (the later route of two equal ones).
    fn scan(routes: &[(Pattern, String, usize)], authority: &[u8], path: &str) -> Option<usize> {
        let host = if authority.first() == Some(&b'[') {
            match authority.iter().position(|&b| b == b']') {
                Some(end) => &authority[..=end],
                None => authority,
            }
        } else {
            authority.split(|&b| b == b':').next().unwrap_or_default()
        };
        let host = host.strip_suffix(b".").unwrap_or(host).to_ascii_lowercase();
        let named =
            !host.is_empty() && host.len() <= MAX_HOST && std::str::from_utf8(&host).is_ok();
        let best = |group: &dyn Fn(&Pattern) -> bool| {
            routes
                .iter()
                .filter(|(h, p, _)| group(h) && path.starts_with(p.as_str()))
                .max_by_key(|(_, p, _)| p.len())
                .map(|(_, _, pool)| *pool)
        };
        if named {
            let exact = best(&|h| matches!(h, Pattern::Exact(e) if *e == host));
            if exact.is_some() {
                return exact;
            }
            let mut suffixes: Vec<&Vec<u8>> = routes
                .iter()
                .filter_map(|(h, _, _)| match h {
                    Pattern::Wildcard(s) if host.len() > s.len() && host.ends_with(s) => Some(s),
                    _ => None,
                })
                .collect();
            suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
            for s in suffixes {
                let found = best(&|h| matches!(h, Pattern::Wildcard(w) if w == s));
                if found.is_some() {
                    return found;
                }
            }
        }
        best(&|h| matches!(h, Pattern::Any))
    }

    /// Random tables (nested, interleaved and duplicate prefixes; exact hosts, wildcards at
    /// several depths, no host) against [`scan`], with random hosts (case, port, trailing dot,
    /// IPv6, non-ASCII and invalid UTF-8, too long) and paths. Deterministic seeds.
    #[test]
    fn lookup_matches_a_linear_scan_of_random_routes() {
        const LABELS: &[&str] = &["a", "b", "ab", "x1", "example", "tenant42", "c-d"];
        // Path bytes: a few, so that prefixes nest and interleave; more as the first byte after
        // `/` sometimes, so that a node has many children.
        const PATH: &[&str] = &["a", "b", "/", "ab", "a/", "-", "é"];
        const WIDE: &[&str] = &[
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "c", "d", "e", "f", "g", "h", "i",
            "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "y", "z",
        ];
        let mut checked = 0;
        for seed in 0..300u64 {
            let mut rng = Rng(seed);
            let name = |rng: &mut Rng| {
                let labels = 1 + rng.below(4);
                (0..labels)
                    .map(|_| rng.pick(LABELS))
                    .collect::<Vec<_>>()
                    .join(".")
            };
            let path = |rng: &mut Rng, max: usize| {
                let mut p = String::from("/");
                if rng.below(3) == 0 {
                    p.push_str(rng.pick(WIDE));
                }
                for _ in 0..rng.below(max + 1) {
                    p.push_str(rng.pick(PATH));
                }
                p
            };
            let n = 1 + rng.below(if seed % 10 == 0 { 400 } else { 40 });
            let pools = 1 + rng.below(5);
            let mut patterns = Vec::new();
            let mut routes = Vec::new();
            for _ in 0..n {
                let (host, pattern) = match rng.below(3) {
                    0 => (HostPattern::Any, Pattern::Any),
                    1 => {
                        let h = name(&mut rng);
                        (
                            HostPattern::Exact(h.clone()),
                            Pattern::Exact(h.into_bytes()),
                        )
                    }
                    _ => {
                        let s = format!(".{}", name(&mut rng));
                        (
                            HostPattern::Wildcard(s.clone()),
                            Pattern::Wildcard(s.into_bytes()),
                        )
                    }
                };
                let prefix = if rng.below(8) == 0 {
                    "/".to_owned()
                } else {
                    path(&mut rng, 6)
                };
                patterns.push(host);
                routes.push((pattern, prefix, rng.below(pools)));
            }
            let t = RouteTable::new(
                patterns
                    .iter()
                    .zip(&routes)
                    .map(|(h, (_, p, pool))| (h, p.as_str(), *pool)),
            );
            for _ in 0..200 {
                let mut authority: Vec<u8> = match rng.below(12) {
                    0 => Vec::new(),
                    1 => b"[::1]".to_vec(),
                    2 => "a.b\u{e9}.example".as_bytes().to_vec(),
                    3 => b"a.\xff.example".to_vec(),
                    4 => "x".repeat(250 + rng.below(10)).into_bytes(),
                    _ => name(&mut rng).into_bytes(),
                };
                if rng.below(3) == 0 {
                    authority.make_ascii_uppercase();
                }
                if rng.below(4) == 0 {
                    authority.push(b'.');
                }
                if rng.below(3) == 0 {
                    authority.extend_from_slice(b":8443");
                }
                let path = path(&mut rng, 12);
                let want = scan(&routes, &authority, &path);
                let got = t.lookup(&authority, &path);
                assert_eq!(
                    got,
                    want,
                    "seed {seed}: {:?} {path:?}",
                    String::from_utf8_lossy(&authority)
                );
                checked += usize::from(got.is_some());
            }
        }
        // Most lookups found a route: the comparison is not only of misses.
        assert!(checked > 300 * 200 / 2, "{checked}");
    }
}
