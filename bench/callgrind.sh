#!/usr/bin/env bash
# callgrind.sh: zgate's instructions per request, a figure that does not move with machine noise.
#
# What it measures
#   zgate runs under `valgrind --tool=callgrind` (one worker) in front of the embedded demo
#   backend (not under valgrind). After a warm-up, the counters are zeroed
#   (`callgrind_control -z`), h2load sends exactly N requests, and the counters are dumped
#   (`callgrind_control -d`): the instructions zgate executed for those N requests (its
#   accept, TLS-free HTTP parsing, limiter accounting, upstream pool, kernel calls excluded),
#   divided by N. Instruction counts are repeatable for the same binary and inputs whatever
#   else the machine does, so two binaries (before/after a change) compare to within a
#   fraction of a percent where req/s figures drift by several percent.
#   Rows: h1 (`h2load --h1 -c8 -m1`), h2c (`h2load -c8 -m10`), GET /bytes?n=SIZE (0 B unless set),
#   limiter disabled (unless EXTRA_TOML sets `[limits]`).
#
# How to run (from the repository root; needs valgrind and h2load, installed with apt when
# missing):
#     bash bench/callgrind.sh [ZGATE_BIN ...]      # default: builds and measures target/release/zgate
# Knobs (environment): N=2000 requests per row, SIZE=0 (the response body, bytes),
#   BASE_PORT=18380, EXTRA_TOML (appended to
#   zgate's config, e.g. a `[fleet]` section, to compare the same binary with a feature on/off;
#   LABEL names the rows then), HEADERS (request headers h2load adds to every request, one a line,
#   e.g. `x-forwarded-for: 203.0.113.9, 10.9.9.9`), PROXY_PROTOCOL=v1|v2 (the listener gets
#   `proxy_protocol = true` and h2load connects through bench/proxy-front.py, which opens each
#   connection with a PROXY header of that version naming 203.0.113.9; the front runs outside
#   valgrind), OUT_DIR (keeps each row's measured dump there as `LABEL-PROTO.callgrind`, for
#   `callgrind_annotate`). bench/client-identity-callgrind.sh runs these for issue 13's cases.
# Output: one markdown table on stdout, a row per binary and protocol.
# Everything listens on 127.0.0.1 only; every load run is bounded by N; every process the
# script starts is stopped on exit.

set -euo pipefail

N=${N:-2000}
SIZE=${SIZE:-0}
BASE_PORT=${BASE_PORT:-18380}
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "callgrind.sh: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 && return
  [ "$(id -u)" = 0 ] || die "$1 missing (apt-get install $2)"
  apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
}
need valgrind valgrind
need callgrind_control valgrind
need h2load nghttp2-client

if [ $# -eq 0 ]; then
  (cd "$REPO" && cargo build --release -q -p zgate-proxy --bin zgate)
  set -- "$REPO/target/release/zgate"
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1"
}

BACKEND_PORT=$BASE_PORT
ZGATE_PORT=$((BASE_PORT + 1))
# Where h2load connects: zgate, or the PROXY protocol front before it.
TARGET_PORT=$ZGATE_PORT

# The backend: the first binary's embedded one, outside valgrind, for every row.
"$1" backend --listen "127.0.0.1:$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT"

cat >"$TMP/zgate.toml" <<EOF
[[listener]]
addr = "127.0.0.1:$ZGATE_PORT"
$([ -n "${PROXY_PROTOCOL:-}" ] && echo "proxy_protocol = true")

[[backend]]
addr = "127.0.0.1:$BACKEND_PORT"

[runtime]
workers = 1

[admin]
enabled = false

[log]
level = "warn"
EOF
printf '%s\n' "${EXTRA_TOML:-}" >>"$TMP/zgate.toml"

if [ -n "${PROXY_PROTOCOL:-}" ]; then
  TARGET_PORT=$((BASE_PORT + 2))
  python3 "$REPO/bench/proxy-front.py" --listen "$TARGET_PORT" --to "$ZGATE_PORT" \
    --version "$PROXY_PROTOCOL" >"$TMP/front.log" 2>&1 &
  PIDS+=($!)
  wait_port "$TARGET_PORT"
fi
HEADER_ARGS=()
while IFS= read -r line; do
  if [ -n "$line" ]; then HEADER_ARGS+=(-H "$line"); fi
done <<<"${HEADERS:-}"

# Instructions per request of binary $1 for protocol $2 (h1 or h2c).
measure() {
  local bin=$1 proto=$2 out pid ir
  out="$TMP/callgrind.out"
  rm -f "$out"*
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$TMP/zgate.toml" \
    >"$TMP/zgate.log" 2>&1 &
  pid=$!
  wait_port "$ZGATE_PORT"
  local flags=(-c8 -m10)
  [ "$proto" = h1 ] && flags=(--h1 -c8 -m1)
  h2load "${flags[@]}" "${HEADER_ARGS[@]}" -n 400 "http://127.0.0.1:$TARGET_PORT/bytes?n=$SIZE" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>>"$TMP/callgrind_control.log"
  h2load "${flags[@]}" "${HEADER_ARGS[@]}" -n "$N" "http://127.0.0.1:$TARGET_PORT/bytes?n=$SIZE" >"$TMP/h2load.log"
  grep -q "$N succeeded" "$TMP/h2load.log" || die "$proto: not all requests succeeded"
  callgrind_control -d "$pid" >/dev/null 2>>"$TMP/callgrind_control.log"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The dump asked for after the load (out.1) holds exactly the measured part; the one
  # written at exit (out) holds the shutdown.
  if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"
    cp "$out.1" "$OUT_DIR/${LABEL:-run}-$proto.callgrind"
  fi
  ir=$(awk '/^(totals|summary):/ {print $2; exit}' "$out.1")
  [ -n "$ir" ] && [ "$ir" -gt 0 ] || die "no instruction count in $out"
  echo $((ir / N))
}

echo "| binary | row | instructions per request |"
echo "|---|---|---:|"
for bin in "$@"; do
  for proto in h1 h2c; do
    echo "| \`$bin\`${LABEL:+ ($LABEL)} | $proto $SIZE B | $(measure "$bin" "$proto") |"
  done
done
echo
echo "N = $N requests per row after 400 warm-up requests; zgate under callgrind with 1 worker, limiter disabled unless EXTRA_TOML sets [limits];"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); valgrind $(valgrind --version); $(nproc) CPUs."
