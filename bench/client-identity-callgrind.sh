#!/usr/bin/env bash
# client-identity-callgrind.sh: what knowing the real client costs (issue 13), in instructions
# per request, against a baseline, with bench/callgrind.sh (read its header).
#
# What it measures
#   The same zgate binary, limits in training mode (every request counted by the limiter), in
#   four cases, each an h1 row (`h2load --h1 -c8 -m1`) and an h2c row (`h2load -c8 -m10`) of
#   N GET /bytes?n=0:
#     baseline   no [client_ip], no forwarding headers in the requests;
#     proxy-v1   `proxy_protocol = true`, each connection opened by bench/proxy-front.py with a
#                PROXY v1 header naming 203.0.113.9 (parsed once per connection: 8
#                connections for the N requests, as a balancer keeps its connections open);
#     trusted    [client_ip] trusted_proxies = ["127.0.0.1", "10.0.0.0/8"], header =
#                "x-forwarded-for", every request with `X-Forwarded-For: 203.0.113.9,
#                10.9.9.9`: attributed to 203.0.113.9 (found in the header, its limiter handle,
#                its R/A and per-request memory) and the chain extended;
#     untrusted  no [client_ip], every request with spoofed `X-Forwarded-For`, `X-Real-IP`,
#                `X-Forwarded-Host` and `Forwarded`: dropped and replaced by zgate's own.
#   Controls, the same request bytes without the identity work:
#     xff        no [client_ip], the trusted case's `X-Forwarded-For` (an untrusted client's:
#                dropped and replaced), for `trusted`;
#     ordinary   no [client_ip], four headers of the untrusted case's lengths whose names are
#                not forwarding headers (forwarded as they are), for `untrusted`.
#   Each row is printed with its difference from the baseline row of its protocol, and the
#   trusted and untrusted rows also from their control's, in percent: the requests of those
#   cases carry 40 to 100 more header bytes than the baseline's, which hyper parses whatever
#   their names; the control's difference is that of the identity work alone.
#
# How to run (from the repository root; needs valgrind, h2load and python3):
#     bash bench/client-identity-callgrind.sh [ZGATE_BIN]   # default: builds target/release/zgate
# Knobs: CASES (default "baseline proxy-v1 xff trusted ordinary untrusted"; also proxy-v2), N (2000),
#   BASE_PORT (18470), OUT_DIR (keeps the dumps, see callgrind.sh), USER_SHARE (1: with trusted
#   and xff measured, also turn their difference into a share of the CPU per request, below),
#   NATIVE_N (100000 requests for that native run).
# Everything listens on 127.0.0.1 only; callgrind.sh bounds every load run and stops what it
# starts.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
export N=${N:-2000}
export BASE_PORT=${BASE_PORT:-18470}
CASES=${CASES:-baseline proxy-v1 xff trusted ordinary untrusted}

if [ $# -eq 0 ]; then
  (cd "$REPO" && cargo build --release -q -p zgate-proxy --bin zgate)
  set -- "$REPO/target/release/zgate"
fi
BIN=$1

LIMITS='[limits]
mode = "training"
training_period = "0"'

# Runs callgrind.sh for one case; prints "h1 N" and "h2c N" lines.
run_case() {
  local name=$1 extra=$LIMITS headers="" proxy=""
  case "$name" in
    baseline) ;;
    proxy-v1) proxy=v1 ;;
    proxy-v2) proxy=v2 ;;
    trusted)
      extra="$LIMITS
[client_ip]
trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]
header = \"x-forwarded-for\""
      headers="x-forwarded-for: 203.0.113.9, 10.9.9.9"
      ;;
    untrusted)
      headers="x-forwarded-for: 203.0.113.9, 10.9.9.9
x-real-ip: 203.0.113.9
x-forwarded-host: evil.example
forwarded: for=203.0.113.9"
      ;;
    xff) headers="x-forwarded-for: 203.0.113.9, 10.9.9.9" ;;
    ordinary)
      headers="x-fhrwarded-for: 203.0.113.9, 10.9.9.9
x-rexl-ip: 203.0.113.9
x-fhrwarded-host: evil.example
fhrwarded: for=203.0.113.9"
      ;;
    *) echo "client-identity-callgrind.sh: unknown case $name" >&2; exit 1 ;;
  esac
  EXTRA_TOML=$extra HEADERS=$headers PROXY_PROTOCOL=$proxy LABEL=$name \
    bash "$REPO/bench/callgrind.sh" "$BIN" |
    awk -F'|' '/ 0 B /{gsub(/ /,"",$3); sub(/0B/,"",$3); gsub(/ /,"",$4); print $3, $4}'
}

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f %%", (a - b) * 100 / b }'; }

declare -A IR
echo "| case | row | instructions per request | vs baseline | vs control |"
echo "|---|---|---:|---:|---:|"
for c in baseline $CASES; do
  [ "$c" = baseline ] && [ -n "${IR[baseline-h1]:-}" ] && continue
  while read -r proto ir; do
    IR[$c-$proto]=$ir
    vs_base="—"
    [ "$c" != baseline ] && vs_base=$(pct "$ir" "${IR[baseline-$proto]}")
    control=""
    case "$c" in trusted) control=xff ;; untrusted) control=ordinary ;; esac
    vs_control="—"
    if [ -n "$control" ] && [ -n "${IR[$control-$proto]:-}" ]; then
      vs_control="$(pct "$ir" "${IR[$control-$proto]}") ($control)"
    fi
    echo "| $c | $proto | $ir | $vs_base | $vs_control |"
  done < <(run_case "$c")
done

# What share of zgate's CPU per request the instructions above are: callgrind counts user-space
# instructions only, and the identity work adds no system call. So its share of the CPU per
# request is its share of the instructions times the user-space share of the CPU (utime over
# utime + stime, read from /proc over a native run of the trusted case: same config, same
# h2load shape, NATIVE_N requests; a ratio within one process run, so steadier than two
# wall-clock runs compared).
user_share() {
  local proto=$1 tmp pid flags port=$((BASE_PORT + 40)) backend=$((BASE_PORT + 41))
  tmp=$(mktemp -d)
  "$BIN" backend --listen "127.0.0.1:$backend" >/dev/null 2>&1 &
  local bpid=$!
  cat >"$tmp/z.toml" <<EOF2
[[listener]]
addr = "127.0.0.1:$port"
[[backend]]
addr = "127.0.0.1:$backend"
[runtime]
workers = 1
[admin]
enabled = false
[log]
level = "warn"
$LIMITS
[client_ip]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
header = "x-forwarded-for"
EOF2
  "$BIN" --config "$tmp/z.toml" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  flags=(-c8 -m10)
  [ "$proto" = h1 ] && flags=(--h1 -c8 -m1)
  local url="http://127.0.0.1:$port/bytes?n=0" h="x-forwarded-for: 203.0.113.9, 10.9.9.9"
  h2load "${flags[@]}" -H "$h" -n 2000 "$url" >/dev/null
  local a b
  a=$(awk '{print $14, $15}' "/proc/$pid/stat")
  h2load "${flags[@]}" -H "$h" -n "${NATIVE_N:-100000}" "$url" >/dev/null
  b=$(awk '{print $14, $15}' "/proc/$pid/stat")
  kill "$pid" "$bpid" 2>/dev/null; wait "$pid" "$bpid" 2>/dev/null || true
  rm -rf "$tmp"
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    u = y[1] - x[1]; s = y[2] - x[2]; printf "%.3f", u / (u + s) }'
}
if [ -n "${IR[trusted-h1]:-}" ] && [ -n "${IR[xff-h1]:-}" ] && [ "${USER_SHARE:-1}" = 1 ]; then
  echo
  echo "| row | trusted vs xff, instructions | user-space share of CPU (native) | share of CPU per request |"
  echo "|---|---:|---:|---:|"
  for proto in h1 h2c; do
    share=$(user_share "$proto")
    awk -v t="${IR[trusted-$proto]}" -v c="${IR[xff-$proto]}" -v s="$share" -v p="$proto" 'BEGIN {
      d = (t - c) * 100 / c
      printf "| %s | %+.2f %% | %.0f %% | **%+.2f %%** |\n", p, d, s * 100, d * s }'
  done
fi
echo
echo "\`$BIN\` ($(cd "$REPO" && git describe --always --dirty)); N = $N requests per row, limits in training mode;"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); valgrind $(valgrind --version); $(nproc) CPUs."
