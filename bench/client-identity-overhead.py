#!/usr/bin/env python3
"""client-identity-overhead.py: zgate's CPU per request with and without client identity.

What it measures
  Two zgate processes in front of one embedded backend, loaded in turn (ABAB..., --rounds
  pairs of --secs-second h2load runs each, h2c -c64 -m10, GET /bytes?n=0, every request with
  `X-Forwarded-For: 203.0.113.9, 10.9.9.9`), limits in training mode so that the limiter
  counts every request:
    plain     no [client_ip]: the header comes from an untrusted peer and is dropped and
              replaced (what every zgate now does to a client's own forwarding headers);
    identity  [client_ip] trusted_proxies = ["127.0.0.1", "10.0.0.0/8"], header =
              "x-forwarded-for": every request is attributed to 203.0.113.9 (found in the
              header, its own limiter handle, its R/A and per-request memory), and the chain
              is extended.
  For each run: requests completed, and zgate's CPU (utime + stime from /proc/PID/stat) over
  the run; per row the median CPU µs per request of each side and the median of the per-pair
  ratios identity/plain. PROXY protocol parsing is per connection (64 here, for the whole run),
  so its share per request is what `cargo bench -p zgate-proxy --bench client_identity`
  measures divided by the requests a connection carries.

  The last lines print the median ratio as a percentage. For a figure that does not move
  with the machine's load, see bench/client-identity-callgrind.sh (instructions per request).

  Each run also prints the user-space share of that CPU (utime / (utime + stime)): what
  callgrind's instruction counts cover.

Run: python3 bench/client-identity-overhead.py [--rounds 5] [--secs 5] [--h1]
  (builds zgate in release; needs h2load, from Debian's nghttp2-client). Nothing is pinned:
  on a shared machine the per-pair ratio is the figure to read, and its spread says how much
  noise there is.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """(user, system) CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def wait_port(port):
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def config(port, backend, identity):
    text = f"""[[listener]]
addr = "127.0.0.1:{port}"
[[backend]]
addr = "127.0.0.1:{backend}"
[admin]
enabled = false
[log]
level = "warn"
[limits]
mode = "training"
training_period = "0"
"""
    if identity:
        text += """[client_ip]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
header = "x-forwarded-for"
"""
    return text


def run_load(port, secs, h1):
    shape = ["--h1", "-c64", "-m1"] if h1 else ["-c64", "-m10"]
    out = subprocess.run(
        ["h2load", *shape, "-t1", "-D", str(secs),
         "-H", "x-forwarded-for: 203.0.113.9, 10.9.9.9",
         f"http://127.0.0.1:{port}/bytes?n=0"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, ...
            parts = line.split()
            return int(parts[7])
    sys.exit("h2load printed no request count:\n" + out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--h1", action="store_true", help="HTTP/1.1 (h2load --h1 -c64 -m1)")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "zgate-proxy", "--bin", "zgate"],
                   cwd=ROOT, check=True)
    zgate = os.path.join(ROOT, "target", "release", "zgate")
    procs = []
    with tempfile.TemporaryDirectory() as d:
        try:
            backend = 18091
            procs.append(subprocess.Popen([zgate, "backend", "--listen", f"127.0.0.1:{backend}"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(backend)
            sides = {}
            for name, port, identity in [("plain", 18092, False), ("identity", 18093, True)]:
                path = os.path.join(d, f"{name}.toml")
                with open(path, "w") as f:
                    f.write(config(port, backend, identity))
                p = subprocess.Popen([zgate, "--config", path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port)
                sides[name] = (p, port)
            run_load(sides["plain"][1], 2, a.h1)  # warm-up
            run_load(sides["identity"][1], 2, a.h1)
            per = {"plain": [], "identity": []}
            user_share = {"plain": [], "identity": []}
            ratios = []
            for r in range(a.rounds):
                order = ["plain", "identity"] if r % 2 == 0 else ["identity", "plain"]
                got = {}
                for name in order:
                    p, port = sides[name]
                    (u0, s0) = cpu_seconds(p.pid)
                    n = run_load(port, a.secs, a.h1)
                    (u1, s1) = cpu_seconds(p.pid)
                    us = (u1 - u0 + s1 - s0) * 1e6 / max(n, 1)
                    share = (u1 - u0) / max(u1 - u0 + s1 - s0, 1e-9)
                    got[name] = us
                    per[name].append(us)
                    user_share[name].append(share)
                    print(f"round {r} {name:8} {n:7d} req  {us:6.2f} CPU us/req"
                          f"  (user {share * 100:.0f} %)", flush=True)
                ratios.append(got["identity"] / got["plain"])
            print()
            for name in ("plain", "identity"):
                print(f"{name:8} median {statistics.median(per[name]):.2f} CPU us/req, user"
                      f" share {statistics.median(user_share[name]) * 100:.0f} %")
            print(f"identity/plain per-pair ratios: {' '.join(f'{x:.3f}' for x in ratios)}")
            m = statistics.median(ratios)
            print(f"median ratio {m:.3f}: identity costs {(m - 1) * 100:+.1f} % CPU per request")
            print("(wall-clock CPU on a shared machine: bench/client-identity-callgrind.sh gives"
                  " instruction counts that do not move with the load)")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()


if __name__ == "__main__":
    main()
