#!/usr/bin/env python3
"""limiter-overhead.py: the limiter's cost, defence mode against disabled, interleaved in one run.

What it measures
  One zgate process (limits trained on the warm-up load, then defence; thresholds far away so
  the benchmark client is scored on every event and never blocked) in front of the embedded
  backend. For each row ONE long h2load run keeps a steady load on zgate while this script
  switches zgate's mode through the admin API (`PUT /api/v1/mode`) every --window seconds, in
  pairs of windows ordered disabled/defence, defence/disabled, ... (ABBA). h2load's per-request
  log (start time in µs since the epoch, status, duration) attributes every request to the
  window it started in; the first --guard-ms after each switch are left out. Rows:
    h1  0 B    h2load --h1 -c64 -m1   GET /bytes?n=0      (HTTP/1.1 keep-alive, no pipelining)
    h1  1 KiB  h2load --h1 -c64 -m1   GET /bytes?n=1024
    h2c 0 B    h2load -c64 -m10       GET /bytes?n=0      (HTTP/2 prior knowledge)
    h2c 1 KiB  h2load -c64 -m10       GET /bytes?n=1024
  Per window: req/s (requests started in its measured part / that part's length), p99 of
  the durations of those of them that also ended before the next switch (a request that ran
  partly in the next window's mode would pull both modes' p99 together; leaving out the
  crossing ones cuts the long tail near a window's end in both modes alike, so absolute
  p99s read somewhat low, for h2c most), and zgate's CPU per request (the sum over its threads of
  /proc/PID/task/*/schedstat run time across the window / requests started in it).
  Ratios defence/disabled are taken per pair of adjacent windows; a row reports their median
  and a distribution-free 95% confidence interval of that median. Why medians of pairs: the
  noise of a shared machine comes in bursts (a neighbour halves the throughput for a few
  seconds, CPU per request doubling with it, in both modes alike); between bursts adjacent
  windows agree within ~1%. A burst spoils the few pairs it overlaps, not the median. The
  interval assumes independent pairs; a burst spans several, so it is somewhat optimistic:
  the --control run shows the method's actual spread.

Why interleaved: on a shared machine the throughput of back-to-back runs of several seconds
  drifts by more than the limiter costs (earlier runs of bench/proxy-vs-nginx.sh, now proxy-vs-peers.sh, moved rows by
  up to 12%). Switching twice a second inside one run puts both modes under the same noise,
  the same connections and the same warm caches; the mode is the only difference.
--control: the same schedule, but the "defence" windows set mode=disabled too (the same API
  call). Its ratios show what the method itself reads when nothing changes: its noise floor.

Layout (--pin 1, the default on 2+ CPUs): zgate on CPU 0 with one worker, the backend, h2load
  and this script on CPU 1, so zgate has a core to itself and is the bottleneck.
  --pin 0: nothing pinned, zgate with 2 workers.

Run from the repository root (builds zgate in release mode unless --zgate is given; installs
h2load from Debian's nghttp2-client if missing; about 5 minutes with the defaults):
    python3 bench/limiter-overhead.py [--windows 120] [--window 0.5] [--pin 1] [--control]
Output: a markdown report on stdout, also written to --out
(default bench/results/limiter-overhead-interleaved.md, or ...-control.md with --control).
Everything listens on 127.0.0.1; every load run is bounded by h2load's -D; every process the
script starts is stopped on exit.
"""

import argparse
import bisect
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROWS = "h1:0,h1:1024,h2c:0,h2c:1024"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


def install_h2load():
    if shutil.which("h2load"):
        return
    log("installing h2load (Debian package nghttp2-client)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                "--no-install-recommends", "nghttp2-client"],
        check=True, stdout=subprocess.DEVNULL)


def build_zgate(target_dir):
    log(f"building zgate (release, target dir {target_dir})")
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "zgate-proxy", "--bin", "zgate"],
                   cwd=REPO, env=env, check=True)
    return Path(target_dir) / "release" / "zgate"


def port_open(port):
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, name, proc, logfile):
    for _ in range(100):
        if port_open(port):
            return
        if proc.poll() is not None:
            die(f"{name} exited at start: {Path(logfile).read_text()[-2000:]}")
        time.sleep(0.1)
    die(f"{name} did not listen on {port}")


class Admin:
    """zgate's admin API on loopback (no token needed there)."""

    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body)
            headers = {} if body is None else {"content-type": "application/json"}
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            text = r.read().decode()
            if r.status != 200:
                die(f"{method} {path} -> {r.status}: {text}")
            return json.loads(text)
        finally:
            c.close()

    def set_mode(self, mode):
        # force: the model is learned from one load generator, thinner than min_clients allows.
        got = self.call("PUT", "/api/v1/mode", {"mode": mode, "force": True})["mode"]
        if got != mode:
            die(f"zgate is in {got}, not {mode}")

    def mode(self):
        return self.call("GET", "/api/v1/mode")["mode"]


def cpu_ns(pid):
    """Run time of all of pid's threads so far, ns (schedstat's first field)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals), max(1, int(len(sorted_vals) * q + 0.999999)))
    return sorted_vals[i - 1]


def h2load_cmd(args, proto, size, duration, logfile):
    url = f"http://127.0.0.1:{args.zgate_port}/bytes?n={size}"
    cmd = ["h2load", "-t1", f"-c{args.conns}", "-D", str(duration), f"--log-file={logfile}"]
    if proto == "h1":
        cmd += ["--h1", "-m1"]
    else:
        cmd += [f"-m{args.h2_streams}"]
    return cmd + [url]


def measure_row(args, zgate_pid, admin, proto, size, tmp):
    """One long h2load run with the mode switched every window; returns per-window results."""
    n = args.windows
    modes = []
    for k in range(n // 2):
        modes += ["disabled", "defence"] if k % 2 == 0 else ["defence", "disabled"]
    settle, tail = 2.0, 1.0
    duration = int(settle + n * args.window + tail + 0.999)
    logfile = tmp / f"{proto}-{size}.log"
    admin.set_mode(modes[0])
    cmd = args.on_load_cpu + h2load_cmd(args, proto, size, duration, logfile)
    out = open(tmp / "h2load.out", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    # bounds[k] = (switch done µs, CPU ns then); window k runs from bounds[k] to bounds[k+1].
    bounds = []
    switch_started = []
    for k in range(n + 1):
        wake = t0 + settle + k * args.window
        time.sleep(max(0.0, wake - time.time()))
        if proc.poll() is not None:
            die(f"h2load ended early: {(tmp / 'h2load.out').read_text()[-2000:]}")
        switch_started.append(time.time_ns() // 1000)
        if k < n:
            want = modes[k]
            admin.set_mode("disabled" if args.control else want)
        bounds.append((time.time_ns() // 1000, cpu_ns(zgate_pid)))
    rc = proc.wait(timeout=duration + 60)
    out.close()
    text = (tmp / "h2load.out").read_text()
    if rc != 0:
        die(f"h2load failed ({rc}): {text[-2000:]}")

    starts = [b[0] for b in bounds]
    guard_us = int(args.guard_ms * 1000)
    counted = [0] * n  # requests started in the measured part of each window
    durations = [[] for _ in range(n)]  # of those, the durations of the ones that also ended in it
    started = [0] * n  # all requests started in each window (for CPU per request)
    failed = 0
    with open(logfile) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            start_us, status, dur_us = int(parts[0]), int(parts[1]), int(parts[2])
            k = bisect.bisect_right(starts, start_us) - 1
            if k < 0 or k >= n:
                continue
            started[k] += 1
            if status != 200:
                failed += 1
                continue
            # Measured part: from GUARD after this window's switch to the next switch's start.
            if starts[k] + guard_us <= start_us < switch_started[k + 1]:
                counted[k] += 1
                # Latency only of requests that ran wholly in this window's mode.
                if start_us + dur_us < switch_started[k + 1]:
                    durations[k].append(dur_us)
    os.unlink(logfile)

    windows = []
    for k in range(n):
        span_s = (switch_started[k + 1] - starts[k] - guard_us) / 1e6
        cpu = bounds[k + 1][1] - bounds[k][1]
        windows.append({
            "mode": modes[k],
            "n": counted[k],
            "rps": counted[k] / span_s if span_s > 0 else float("nan"),
            "span_s": span_s,
            "durations": durations[k],
            "cpu_ns": cpu,
            "started": started[k],
        })
    summary = [ln for ln in text.splitlines() if ln.startswith(("requests:", "status codes:"))]
    return windows, failed, summary


def median_ci(vals, level=0.95):
    """Median of vals and a distribution-free confidence interval for it: the order statistics
    x(k) and x(n+1-k) with k the largest rank such that P(Binomial(n, 1/2) < k) <= (1-level)/2."""
    s = sorted(vals)
    n = len(s)
    tail, k, cum = (1 - level) / 2, 0, 0.0
    while k < n:
        cum += math.comb(n, k) / 2**n
        if cum > tail:
            break
        k += 1
    if k == 0:
        return statistics.median(s), float("nan"), float("nan")
    return statistics.median(s), s[k - 1], s[n - k]


def row_stats(windows):
    """Per-mode figures (medians over the mode's windows) and per-pair ratios defence/disabled."""
    res = {}
    for mode in ("disabled", "defence"):
        ws = [w for w in windows if w["mode"] == mode and w["durations"]]
        res[mode] = {
            "rps": statistics.median(w["rps"] for w in ws),
            "p99_ms": statistics.median(percentile(sorted(w["durations"]), 0.99) for w in ws) / 1000,
            "cpu_us": statistics.median(w["cpu_ns"] / 1000 / w["started"] for w in ws),
            "requests": sum(w["n"] for w in ws),
        }
    pairs = {"rps": [], "p99": [], "cpu": []}
    for k in range(0, len(windows) - 1, 2):
        a, b = windows[k], windows[k + 1]
        dis, dfc = (a, b) if a["mode"] == "disabled" else (b, a)
        if not dis["durations"] or not dfc["durations"]:
            continue
        pairs["rps"].append(dfc["rps"] / dis["rps"])
        pairs["p99"].append(percentile(sorted(dfc["durations"]), 0.99) /
                            percentile(sorted(dis["durations"]), 0.99))
        pairs["cpu"].append((dfc["cpu_ns"] / dfc["started"]) / (dis["cpu_ns"] / dis["started"]))
    return res, pairs


def write_config(args, tmp):
    conf = tmp / "zgate.toml"
    conf.write_text(f"""[[listener]]
addr = "127.0.0.1:{args.zgate_port}"
[[backend]]
addr = "127.0.0.1:{args.backend_port}"
[runtime]
workers = {args.workers}
[log]
level = "warn"
access = false
[admin]
addr = "127.0.0.1:{args.admin_port}"
""" + (REPO / "bench" / "limits-scored-never-blocked.toml").read_text())
    return conf


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=120, help="windows per row (even), default 120")
    p.add_argument("--window", type=float, default=0.5, help="seconds per window, default 0.5")
    p.add_argument("--guard-ms", type=float, default=50.0,
                   help="ms after each switch left out, default 50")
    p.add_argument("--pin", type=int, choices=(0, 1), default=1 if (os.cpu_count() or 1) >= 2 else 0)
    p.add_argument("--workers", type=int, help="zgate worker threads (default 1 pinned, 2 not)")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--h2-streams", type=int, default=10)
    p.add_argument("--base-port", type=int, default=18180)
    p.add_argument("--control", action="store_true",
                   help="A/A run: the 'defence' windows stay disabled (the method's noise floor)")
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"default {DEFAULT_ROWS}")
    p.add_argument("--zgate", help="path of a built zgate (skips the build)")
    p.add_argument("--out")
    p.add_argument("--dump", help="also write every window's figures to this JSON file")
    args = p.parse_args()
    if args.windows < 2 or args.windows % 2:
        die("--windows must be even and at least 2")
    if args.window <= args.guard_ms / 1000:
        die("--window must be longer than --guard-ms")
    rows = []
    for r in args.rows.split(","):
        proto, _, size = r.partition(":")
        if proto not in ("h1", "h2c") or not size.isdigit():
            die(f"bad row {r!r} (want h1:SIZE or h2c:SIZE)")
        rows.append((proto, int(size)))
    if args.pin and (os.cpu_count() or 1) < 2:
        die("--pin 1 needs 2 CPUs")
    args.workers = args.workers or (1 if args.pin else 2)
    args.on_proxy_cpu = ["taskset", "-c", "0"] if args.pin else []
    args.on_load_cpu = ["taskset", "-c", "1"] if args.pin else []
    args.backend_port = args.base_port
    args.zgate_port = args.base_port + 1
    args.admin_port = args.base_port + 2
    out_path = Path(args.out) if args.out else REPO / "bench" / "results" / (
        "limiter-overhead-control.md" if args.control else "limiter-overhead-interleaved.md")
    for port in (args.backend_port, args.zgate_port, args.admin_port):
        if port_open(port):
            die(f"port {port} is already in use (use --base-port)")

    install_h2load()
    if args.zgate:
        zgate = Path(args.zgate)
    else:
        zgate = build_zgate(Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")).resolve())
    if not os.access(zgate, os.X_OK):
        die(f"no zgate binary at {zgate}")
    if args.pin:
        os.sched_setaffinity(0, {1})

    tmp = Path(tempfile.mkdtemp(prefix="zgate-overhead."))
    procs = []
    try:
        blog = open(tmp / "backend.log", "w")
        backend = subprocess.Popen(args.on_load_cpu + [str(zgate), "backend", "--listen",
                                   f"127.0.0.1:{args.backend_port}"], stdout=blog, stderr=blog)
        procs.append(backend)
        wait_port(args.backend_port, "backend", backend, tmp / "backend.log")
        conf = write_config(args, tmp)
        zlog = open(tmp / "zgate.log", "w")
        zg = subprocess.Popen(args.on_proxy_cpu + [str(zgate), "--config", str(conf)],
                              stdout=zlog, stderr=zlog)
        procs.append(zg)
        wait_port(args.zgate_port, "zgate", zg, tmp / "zgate.log")
        admin = Admin(args.admin_port)

        log("warming up and training (h1 and h2c load until training ends)")
        for i in range(20):
            proto = "h1" if i % 2 == 0 else "h2c"
            subprocess.run(args.on_load_cpu + h2load_cmd(args, proto, 1024, 2, tmp / "warm.log"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            if i >= 3 and admin.mode() == "defence":
                break
        if admin.mode() != "defence":
            die(f"zgate did not end training: {admin.mode()}")
        model = admin.call("GET", "/api/v1/model")
        log(f"training over; model epoch {model.get('epoch')}, mode defence")

        results = []
        dumped = []
        for proto, size in rows:
            label = f"{proto} {'0 B' if size == 0 else f'{size // 1024} KiB' if size % 1024 == 0 else f'{size} B'}"
            log(f"{label}: {args.windows} windows of {args.window}s")
            windows, failed, summary = measure_row(args, zg.pid, admin, proto, size, tmp)
            res, pairs = row_stats(windows)
            results.append((label, res, pairs, failed, summary))
            if args.dump:
                dumped.append({"row": label, "windows": [
                    {"mode": w["mode"], "n": w["n"], "rps": w["rps"], "span_s": w["span_s"],
                     "p99_us": percentile(sorted(w["durations"]), 0.99),
                     "cpu_us_per_req": w["cpu_ns"] / 1000 / max(1, w["started"])}
                    for w in windows]})
            log(f"  disabled {res['disabled']['rps']:.0f} req/s, defence {res['defence']['rps']:.0f} "
                f"req/s; ratios req/s {fmt_ci(pairs['rps'])}, p99 {fmt_ci(pairs['p99'])}, "
                f"CPU/req {fmt_ci(pairs['cpu'])}; failed {failed}")
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.dump:
        Path(args.dump).write_text(json.dumps(dumped, indent=1))
    report = render(args, results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(report)
    print(report)
    log(f"written to {out_path}")


def fmt_ci(vals):
    m, lo, hi = median_ci(vals)
    if math.isnan(lo):
        return f"{m:.3f} [too few pairs]"
    return f"{m:.3f} [{lo:.3f}–{hi:.3f}]"


def verdict(pairs):
    rps, rps_lo, _ = median_ci(pairs["rps"])
    p99, _, p99_hi = median_ci(pairs["p99"])
    if rps < 0.97 or p99 > 1.10:
        return "**not met**"
    if rps_lo >= 0.97 and p99_hi <= 1.10:
        return "met, CI inside"
    return "met (median)"


def render(args, results):
    b = "defence" if not args.control else "\"defence\" (disabled)"
    lines = [
        "# zgate limiter overhead: defence against disabled, interleaved in one run"
        + (" (CONTROL: both disabled)" if args.control else ""),
        "",
        f"| row | disabled req/s | {b} req/s | req/s ratio [95% CI] | disabled p99 ms "
        f"| {b} p99 ms | p99 ratio [95% CI] | CPU µs/req disabled | CPU µs/req {b} "
        "| CPU ratio [95% CI] | target (≥0.97 req/s, ≤1.10 p99) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, res, pairs, failed, _ in results:
        d, f = res["disabled"], res["defence"]
        lines.append(
            f"| {label} | {d['rps']:.0f} | {f['rps']:.0f} | {fmt_ci(pairs['rps'])} "
            f"| {d['p99_ms']:.2f} | {f['p99_ms']:.2f} | {fmt_ci(pairs['p99'])} "
            f"| {d['cpu_us']:.1f} | {f['cpu_us']:.1f} | {fmt_ci(pairs['cpu'])} | {'— (A/A)' if args.control else verdict(pairs)} |")
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    h2v = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.splitlines()
    placement = ("zgate on CPU 0; backend, h2load and this script on CPU 1" if args.pin
                 else "nothing pinned; client, proxy and backend share the CPUs")
    cmd = f"python3 bench/limiter-overhead.py --windows {args.windows} --window {args.window} --pin {args.pin}"
    if args.control:
        cmd += " --control"
    if args.rows != DEFAULT_ROWS:
        cmd += f" --rows {args.rows}"
    lines += [
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; zgate commit {commit}; "
        f"{h2v[0] if h2v else 'h2load ?'}; {os.cpu_count()} CPUs, {model}; kernel {os.uname().release}.",
        f"- One zgate process, {args.workers} worker(s); {placement}. Per row one h2load run "
        f"(h1: `--h1 -c{args.conns} -m1`; h2c: `-c{args.conns} -m{args.h2_streams}`), the mode switched "
        f"through the admin API every {args.window}s in ABBA pairs, {args.windows} windows per row; "
        f"requests are attributed to windows by their start time, the first {args.guard_ms:.0f} ms "
        "after each switch left out; p99 only over requests that also ended before the next "
        "switch.",
        "- Ratios: defence/disabled per pair of adjacent windows (one per mode); each cell is the "
        f"median over the row's {args.windows // 2} pairs and, in brackets, a distribution-free 95% "
        "confidence interval of that median (order statistics, binomial ranks). Absolute cells: "
        "medians over the mode's windows. CPU µs/req: zgate's threads' run time (schedstat) per "
        "request started in the window. Target: the medians; \"CI inside\" when the whole "
        "interval is inside the target too.",
        f"- Command: `{cmd}`.",
    ]
    if args.control:
        lines.append("- CONTROL run: the \"defence\" windows also set mode=disabled (same API call); "
                     "its ratios are the method's noise floor.")
    fails = [f"{label}: {failed} failed" for label, _, _, failed, _ in results if failed]
    lines.append(f"- Failed requests: {', '.join(fails) if fails else 'none'}.")
    lines += ["", "h2load summaries:", "```"]
    for label, _, _, _, summary in results:
        lines += [f"{label}: {s}" for s in summary]
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
