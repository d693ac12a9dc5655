#!/usr/bin/env python3
"""perf-split.py: where a proxy's CPU goes, from `perf script -F comm,tid,ip,sym,dso` output.

Each sample is put in one category by its stack: in the kernel, by the system call (or the
interrupt) it is under; in user space, by the name of the function it is in (crypto by
algorithm, rustls, the allocator, memcpy, hyper, tokio, zgate). Prints each category's share
of the samples, then the same grouped as in bench/results/issue-17.md (TLS), and the share of
each thread. Used by `bench/tls-handshake.sh perf`; run by hand on any perf.data with
    perf script -i perf.data -F comm,tid,ip,sym,dso > s.txt && python3 bench/perf-split.py s.txt
"""
import collections
import re
import sys

USER = [
    ("crypto: SHA-384/512", r"sha512|sha384"),
    ("crypto: SHA-256", r"sha256"),
    ("crypto: X25519", r"curve25519|x25519|fe4_|fe_|ge_"),
    ("crypto: AES-GCM", r"aes|gcm|gfmul|ghash|clmul"),
    ("crypto: P-256 / ECDSA", r"p256|ecdsa|ecp_nistz|nistz256"),
    ("crypto: other (HMAC/HKDF glue, library code)",
     r"^ring::|ring_core|aws_lc|hmac|hkdf|digest|OPENSSL|CRYPTO_|bn_|EVP_"),
    ("TLS state machine (rustls)", r"rustls|tokio_rustls"),
    ("allocator", r"^_?mi_|mimalloc|^malloc|^free|^calloc|^realloc|^cfree|_int_malloc|_int_free"),
    ("memcpy/memmove/memset", r"memmove|memcpy|memset|memcmp|bcmp"),
    ("hyper (HTTP/1 server and client)", r"hyper|httparse|^http::|h2::"),
    ("tokio runtime (tasks, IO driver, timers)", r"tokio|mio::|parking|futures|std::sys|std::thread"),
    ("zgate", r"zgate|limiter"),
]
KERNEL = [
    ("kernel: accept", r"sys_accept"),
    ("kernel: close, shutdown", r"__x64_sys_close|__fput|task_work_run|sys_shutdown"),
    ("kernel: epoll_ctl", r"sys_epoll_ctl"),
    ("kernel: epoll_wait, sleeping and waking", r"sys_epoll_wait|schedule|finish_task_switch"),
    ("kernel: send (TCP, and on loopback the peer's receive)",
     r"sys_write|sys_sendto|sys_sendmsg|sys_writev|ksys_write|vfs_writev"),
    ("kernel: recv", r"sys_read|sys_recvfrom|sys_recvmsg|ksys_read"),
    ("kernel: getrandom", r"getrandom"),
    ("kernel: other system calls", r"sys_"),
    ("kernel: interrupts, softirq", r"irq|softirq|net_rx|sysvec"),
]
GROUPS = [
    ("crypto: X25519", r"X25519"),
    ("crypto: SHA-2 (HKDF, HMAC, transcript)", r"SHA-"),
    ("crypto: AES-GCM, P-256, glue, getrandom", r"AES-GCM|P-256|crypto: other|getrandom"),
    ("TLS state machine (rustls)", r"rustls"),
    ("kernel: send", r"kernel: send"),
    ("kernel: epoll_wait, sleeping and waking", r"epoll_wait"),
    ("kernel: recv, accept, close, epoll_ctl, other", r"^kernel"),
    ("user: runtime, HTTP, zgate, memcpy, allocator, other", r"."),
]


def samples(path):
    comm, frames = None, []
    for line in open(path, errors="replace"):
        if not line.strip():
            if frames:
                yield comm, frames
            comm, frames = None, []
        elif not line.startswith(("\t", " ")):
            comm, frames = line.split()[0], []
        else:
            m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)\s*$", line)
            if m:
                frames.append((m.group(1), m.group(2)))
    if frames:
        yield comm, frames


def classify(frames):
    top, dso = frames[0]
    if dso.startswith("[kernel"):
        names = " ".join(f for f, _ in frames)
        for cat, pat in KERNEL:
            if re.search(pat, names):
                return cat
        return "kernel: other"
    for cat, pat in USER:
        if re.search(pat, top, re.I):
            return cat
    if "libcrypto" in dso or "libssl" in dso:
        return "crypto: other (HMAC/HKDF glue, library code)"
    return "user: other"


def main():
    cats, groups, threads, total = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for comm, frames in samples(sys.argv[1]):
        total += 1
        cat = classify(frames)
        cats[cat] += 1
        groups[next(g for g, pat in GROUPS if re.search(pat, cat))] += 1
        threads[re.sub(r"\d+$", "N", comm or "?")] += 1
    if not total:
        sys.exit("no samples")
    print(f"{total} samples")
    for title, counter in (("category", cats), ("group", groups), ("thread", threads)):
        print(f"\n| {title} | share |\n|---|---:|")
        for name, n in counter.most_common():
            print(f"| {name} | {n / total * 100:.1f}% |")


if __name__ == "__main__":
    main()
