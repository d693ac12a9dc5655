//! The route table (sans-IO): a request's host and path in, the index of its pool out.
//!
//! Among the routes whose host and path prefix both match, the most specific host wins (an
//! exact host, then the longest wildcard suffix, then routes without a host), then the longest
//! path prefix. So an exact host's routes that all miss the path fall through to the wildcard
//! and any-host routes.
//!
//! Cost, whatever the number of routes; no allocation, no `memcmp` call, bytes read 8 at a
//! time where it counts:
//! - the host: its port is cut; then it is looked up only when some exact route's host has its
//!   length or some wildcard suffix is shorter than it: one probe of a table of the exact hosts
//!   and one per wildcard suffix length, from the longest, that puts a dot of the host first.
//!   The probes hash and compare the host in ASCII lower case as they read it (no copy); a
//!   host with a byte above 0x7f is checked to be UTF-8 when a wildcard of its matches;
//! - the path, per host group that has routes: a walk down a radix tree of its prefixes (a
//!   node where prefixes branch or end), choosing each child by one byte and comparing the rest
//!   of its label.
//!
//! `proxy/benches/routes.rs` measures it with 1000 routes (ns per lookup);
//! `bench/results/routes.md` gives zgate's instructions per request with and without them.

use std::collections::{HashMap, VecDeque};

use zgate_config::HostPattern;

/// The longest host looked up, bytes (a DNS name is at most 253). A longer one matches only
/// the routes without a host.
const MAX_HOST: usize = 255;

/// Routes by host, then path prefix, to a pool index.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Exact hosts to the root of their prefixes' tree in `trees`.
    exact: Hosts,
    /// Wildcards by suffix with its leading dot (`".example.com"` for `*.example.com`).
    wildcard: Hosts,
    /// The lengths of the exact hosts: a host of another length is not looked up at all.
    exact_lengths: Lengths,
    /// The lengths of the wildcard suffixes, longest first (none of [`MAX_HOST`] or more: it
    /// would match no host looked up).
    wildcard_lengths: Box<[usize]>,
    /// The shortest of them; `usize::MAX` when none.
    shortest_wildcard: usize,
    /// Whether there are exact or wildcard routes.
    named: bool,
    /// The root of the routes without a host, when there is one.
    any: Option<usize>,
    trees: Trees,
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

impl RouteTable {
    /// A table of `(host, path prefix, pool index)` routes. A later duplicate of a host and
    /// prefix replaces an earlier one (the config refuses duplicates).
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a HostPattern, &'a str, usize)>) -> Self {
        type Lists = HashMap<Box<[u8]>, Vec<(Box<[u8]>, usize)>>;
        let mut exact: Lists = HashMap::new();
        let mut wildcard: Lists = HashMap::new();
        let mut any = Vec::new();
        for (host, prefix, pool) in routes {
            let list = match host {
                HostPattern::Any => &mut any,
                HostPattern::Exact(h) => exact.entry(h.as_bytes().into()).or_default(),
                HostPattern::Wildcard(s) => wildcard.entry(s.as_bytes().into()).or_default(),
            };
            list.push((prefix.as_bytes().into(), pool));
        }
        let mut exact_lengths = Lengths::default();
        exact.keys().for_each(|k| exact_lengths.insert(k.len()));
        let mut wildcard_lengths: Vec<usize> = wildcard
            .keys()
            .map(|k| k.len())
            .filter(|&n| n < MAX_HOST)
            .collect();
        wildcard_lengths.sort_unstable_by(|a, b| b.cmp(a));
        wildcard_lengths.dedup();
        let mut trees = Trees::default();
        let mut build = |m: Lists| -> Hosts {
            Hosts::new(
                m.into_iter()
                    .map(|(h, list)| (h, trees.add(list)))
                    .collect(),
            )
        };
        let (exact, wildcard) = (build(exact), build(wildcard));
        let any = (!any.is_empty()).then(|| trees.add(any));
        RouteTable {
            named: !exact.is_empty() || !wildcard.is_empty(),
            exact,
            wildcard,
            exact_lengths,
            shortest_wildcard: wildcard_lengths.last().copied().unwrap_or(usize::MAX),
            wildcard_lengths: wildcard_lengths.into(),
            any,
            trees,
        }
    }

    /// Whether the table has no route.
    #[inline]
    pub fn is_empty(&self) -> bool {
        !self.named && self.any.is_none()
    }

    /// The pool of a request to `authority` (the `Host` or `:authority`, a port and any case
    /// allowed; empty when the request has none) for `path`; `None` when no route matches.
    pub fn lookup(&self, authority: &[u8], path: &str) -> Option<usize> {
        let path = path.as_bytes();
        if self.named {
            if let Some(host) = host_of(authority) {
                // Looked up only when some exact host has its length or some wildcard suffix
                // is shorter (`*.example.com` does not match `.example.com`).
                let exact = self.exact_lengths.contains(host.len());
                if exact || host.len() > self.shortest_wildcard {
                    if let Some(pool) = self.by_host(host, exact, path) {
                        return Some(pool);
                    }
                }
            }
        }
        self.trees.lookup(self.any?, path)
    }

    /// The pool of the exact (when `exact`: some exact host has its length) or wildcard routes
    /// of `host` (without its port, any case) for `path`.
    #[inline]
    fn by_host(&self, host: &[u8], exact: bool, path: &[u8]) -> Option<usize> {
        // A host that is not UTF-8 has no route of its own. One that matched an exact host (a
        // `String`) but for ASCII case is UTF-8; one that matched a wildcard suffix is checked
        // then (rare: a byte above 0x7f).
        if exact {
            let found = self
                .exact
                .get(host)
                .and_then(|t| self.trees.lookup(t, path));
            if found.is_some() {
                return found;
            }
        }
        // From the longest: `.b.example.com`, `.example.com`, `.com`.
        let n = host.len();
        for &l in self.wildcard_lengths.iter().filter(|&&l| l < n) {
            let suffix = host.get(n - l..).unwrap_or_default();
            if suffix.first() == Some(&b'.') {
                let found = self
                    .wildcard
                    .get(suffix)
                    .and_then(|t| self.trees.lookup(t, path));
                if found.is_some() {
                    let utf8 = words_or(host) & TOPS == 0 || std::str::from_utf8(host).is_ok();
                    return found.filter(|_| utf8);
                }
            }
        }
        None
    }
}

/// Hosts (or wildcard suffixes), in lower case, to a tree's root: an open-addressing table at
/// most half full, probed with the host in any case. Not keyed: it holds only the config's
/// hosts, so a client's host cannot lengthen a probe sequence beyond what they make.
#[derive(Debug, Default)]
struct Hosts {
    /// A power of two of them, or none.
    slots: Box<[Slot]>,
    /// 64 minus the number of bits of a slot's index: a hash's top bits are its slot.
    shift: u32,
    /// The hosts, end to end.
    names: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    hash: u64,
    /// The host: `names[name..name + len]`.
    name: usize,
    len: usize,
    /// `None`: an empty slot.
    root: Option<usize>,
}

impl Hosts {
    fn new(mut hosts: Vec<(Box<[u8]>, usize)>) -> Hosts {
        if hosts.is_empty() {
            return Hosts::default();
        }
        // In one order whatever the order given (a HashMap's): the same probe sequences, and
        // instruction counts, from one run to the next.
        hosts.sort_unstable();
        let size = (hosts.len() * 2).next_power_of_two();
        let (mask, shift) = (size - 1, 64 - size.trailing_zeros());
        let mut slots = vec![Slot::default(); size];
        let mut names = Vec::new();
        for (host, root) in hosts {
            let hash = hash(&host);
            let mut i = slot_of(hash, shift);
            while slots[i].root.is_some() {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                hash,
                name: names.len(),
                len: host.len(),
                root: Some(root),
            };
            names.extend_from_slice(&host);
        }
        Hosts {
            slots: slots.into(),
            shift,
            names,
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The root of `host` (any case).
    #[inline]
    fn get(&self, host: &[u8]) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let hash = hash(host);
        let mut i = slot_of(hash, self.shift);
        // Half empty at least: a probe sequence ends.
        loop {
            let slot = self.slots.get(i)?;
            let root = slot.root?;
            if slot.hash == hash && slot.len == host.len() {
                let name = self.names.get(slot.name..slot.name + slot.len);
                if name.is_some_and(|name| same_lower(host, name)) {
                    return Some(root);
                }
            }
            i = (i + 1) & mask;
        }
    }
}

/// FxHash's multiplier.
const K: u64 = 0x517c_c1b7_2722_0a95;

/// FxHash's steps over the length and the words of `s`, each byte with its 0x20 bit set: the
/// same for an ASCII letter in either case.
#[inline]
fn hash(s: &[u8]) -> u64 {
    let mut h = (s.len() as u64).wrapping_mul(K);
    for_words(s, |w| h = (h.rotate_left(5) ^ (w | CASE)).wrapping_mul(K));
    h
}

/// The slot of `hash`: its top bits (a product's low bits depend only on its factors' low
/// bits), `64 - shift` of them.
#[inline]
fn slot_of(hash: u64, shift: u32) -> usize {
    hash.checked_shr(shift).unwrap_or(0) as usize
}

/// Whether `host` in ASCII lower case is `name` (of the same length).
#[inline]
fn same_lower(host: &[u8], name: &[u8]) -> bool {
    // Lower-cased only where it differs.
    let same = |h: u64, n: u64| h == n || lower_word(h) == n;
    let n = host.len();
    if n < 8 || name.len() != n {
        return name.len() == n && same(packed(host), packed(name));
    }
    let mut at = 0;
    while at + 8 < n {
        if !same(word(host, at), word(name, at)) {
            return false;
        }
        at += 8;
    }
    same(word(host, n - 8), word(name, n - 8))
}

/// Calls `f` with words covering every byte of `s`, the same for the same bytes: 8 at a time,
/// the last overlapping the previous; fewer than 8 [`packed`] in one.
#[inline]
fn for_words(s: &[u8], mut f: impl FnMut(u64)) {
    let n = s.len();
    if n < 8 {
        if n > 0 {
            f(packed(s));
        }
        return;
    }
    f(word(s, 0));
    let mut at = 8;
    while at + 8 < n {
        f(word(s, at));
        at += 8;
    }
    if n > 8 {
        f(word(s, n - 8));
    }
}

/// The bitwise or of the words of `s`.
#[inline]
fn words_or(s: &[u8]) -> u64 {
    let mut or = 0;
    for_words(s, |w| or |= w);
    or
}

/// Fewer than 8 bytes in one word, each byte of `s` in a byte of the word: bytes 0-3 and the
/// last 4 (overlapping) from 4 bytes, else the first, middle and last.
#[inline]
fn packed(s: &[u8]) -> u64 {
    let n = s.len();
    match n {
        0 => 0,
        1..=3 => u64::from(s[0]) | u64::from(s[n / 2]) << 8 | u64::from(s[n - 1]) << 16,
        4..=7 => u64::from(half(s, 0)) | u64::from(half(s, n - 4)) << 32,
        _ => word(s, 0),
    }
}

/// Every host group's path prefixes, as radix trees in one arena: a node per prefix and per
/// place where prefixes branch; a node's label is what its prefix adds to its parent's (the
/// root's: what all the group's prefixes start with, usually `/`).
#[derive(Debug, Default)]
struct Trees {
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    /// The label after its first byte, the byte its parent chose it by (a root's: whole).
    label: Box<[u8]>,
    /// The first bytes of its children's labels, ascending; the children are
    /// `nodes[kids..kids + first.len()]`, in the same order.
    first: Box<[u8]>,
    kids: usize,
    /// The pool of the route whose prefix ends here.
    pool: Option<usize>,
}

/// A node's children are compared one by one up to this many, else searched by halves.
const FEW_KIDS: usize = 8;

impl Trees {
    /// Adds the tree of one host group's `(prefix, pool)`s (a later duplicate of a prefix
    /// replaces the earlier one); its root.
    fn add(&mut self, mut list: Vec<(Box<[u8]>, usize)>) -> usize {
        // Stable: of equal prefixes, the later stays later.
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        // The root's prefix: what the first and last (sorted) have in common.
        let whole = match (list.first(), list.last()) {
            (Some(a), Some(z)) => &a.0[..common(&a.0, &z.0)],
            _ => &[],
        };
        let depth = whole.len();
        let root = self.push(whole);
        // Breadth first, so that a node's children are next to each other: (node, its entries
        // `list[from..to]`, all starting with its prefix, the length of that prefix).
        let mut queue = VecDeque::from([(root, 0, list.len(), depth)]);
        while let Some((at, mut from, to, depth)) = queue.pop_front() {
            // Sorted, the entry that is the node's prefix itself comes first.
            if from < to && list[from].0.len() == depth {
                self.nodes[at].pool = Some(list[from].1);
                from += 1;
            }
            let (kids, mut first) = (self.nodes.len(), Vec::new());
            // The others, grouped by their byte after the node's prefix: a child each, whose
            // prefix is what its group has in common (that of its first and last, sorted).
            while from < to {
                let start = &list[from].0;
                let b = start[depth];
                let end = from + list[from..to].partition_point(|e| e.0[depth] <= b);
                let common = common(start, &list[end - 1].0);
                let kid = self.push(&start[depth + 1..common]);
                first.push(b);
                queue.push_back((kid, from, end, common));
                from = end;
            }
            self.nodes[at].kids = kids;
            self.nodes[at].first = first.into();
        }
        root
    }

    fn push(&mut self, label: &[u8]) -> usize {
        self.nodes.push(Node {
            label: label.into(),
            first: Box::default(),
            kids: 0,
            pool: None,
        });
        self.nodes.len() - 1
    }

    /// The pool of the longest prefix of `path` in the tree at `root`.
    #[inline(always)]
    fn lookup(&self, root: usize, path: &[u8]) -> Option<usize> {
        let mut at = root;
        let mut rest = path;
        let mut best = None;
        // At each node, `rest` past the byte that chose it.
        while let Some(node) = self.nodes.get(at) {
            match rest.split_at_checked(node.label.len()) {
                Some((head, tail)) if same(head, &node.label) => rest = tail,
                _ => break,
            }
            best = node.pool.or(best);
            let Some((&b, after)) = rest.split_first() else {
                break;
            };
            let k = if node.first.len() <= FEW_KIDS {
                node.first.iter().position(|&k| k == b)
            } else {
                node.first.binary_search(&b).ok()
            };
            let Some(k) = k else {
                break;
            };
            at = node.kids + k;
            rest = after;
        }
        best
    }
}

/// How many bytes `a` and `b` start with in common.
fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Whether `a == b`, a word at a time (`==` on slices calls `memcmp`, costlier than the
/// comparison itself for a few bytes).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if b.len() != n {
        return false;
    }
    match n {
        0 => return true,
        1 => return a[0] == b[0],
        2..=7 => return packed(a) == packed(b),
        _ => {}
    }
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last 8 bytes, overlapping the previous word.
    word(a, n - 8) == word(b, n - 8)
}

/// The 8 bytes of `s` from `at` (which has them), little-endian.
#[inline]
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The 4 bytes of `s` from `at` (which has them).
#[inline]
fn half(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The top bit of every byte of a word.
const TOPS: u64 = 0x8080_8080_8080_8080;
/// The bit of every byte that ASCII upper and lower case differ by.
const CASE: u64 = 0x2020_2020_2020_2020;

/// The top bit of each zero byte of `w`, and maybe of bytes after (higher than) one: the
/// lowest bit set is exact.
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & TOPS
}

/// `w` with its ASCII upper-case letters in lower case (the other bytes, above 0x7f too, as
/// they are).
#[inline]
fn lower_word(w: u64) -> u64 {
    let low = w & !TOPS;
    // 0x7f at most per byte, plus less than 0x80: no carry into the next byte.
    let from_a = low.wrapping_add(ONES * u64::from(0x80 - b'A'));
    let past_z = low.wrapping_add(ONES * u64::from(0x80 - b'Z' - 1));
    let upper = from_a & !past_z & !w & TOPS;
    // 0x80 >> 2: the bit between `A` and `a`.
    w | upper >> 2
}

/// The first `b` in `s`, 8 bytes at a time.
#[inline]
fn find(s: &[u8], b: u8) -> Option<usize> {
    let n = s.len();
    if n < 8 {
        return s.iter().position(|&x| x == b);
    }
    let pattern = ONES * u64::from(b);
    let at_word = |at: usize| {
        let z = zero_bytes(word(s, at) ^ pattern);
        (z != 0).then(|| at + z.trailing_zeros() as usize / 8)
    };
    let mut at = 0;
    while at + 8 <= n {
        if let Some(i) = at_word(at) {
            return Some(i);
        }
        at += 8;
    }
    // The last 8 bytes, overlapping bytes found not to be `b`.
    if at < n {
        return at_word(n - 8);
    }
    None
}

/// The host of `authority`: without its port and a trailing dot; `None` when empty or longer
/// than [`MAX_HOST`].
#[inline]
fn host_of(authority: &[u8]) -> Option<&[u8]> {
    let end = if authority.first() == Some(&b'[') {
        // `[v6]:port`: up to the bracket.
        authority.iter().position(|&b| b == b']').map(|end| end + 1)
    } else {
        find(authority, b':')
    };
    let host = authority.get(..end.unwrap_or(authority.len()))?;
    let host = host.strip_suffix(b".").unwrap_or(host);
    (!host.is_empty() && host.len() <= MAX_HOST).then_some(host)
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
        const LABELS: &[&str] = &[
            "a", "b", "ab", "x1", "example", "tenant42", "c-d", "b\u{e9}",
        ];
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
