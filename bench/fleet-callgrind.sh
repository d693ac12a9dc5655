#!/usr/bin/env bash
# fleet-callgrind.sh: the request path's CPU with `[fleet]` on against off, in instructions per
# request (bench/callgrind.sh), one binary, same run.
#
# What it measures
#   A redis-server of its own on a loopback port (persistence off: --save "" --appendonly no),
#   then bench/callgrind.sh on the same zgate binary in ABBA order: without `[fleet]`, with
#   `[fleet]` pointing at that Redis, again with, again without. Each callgrind.sh row counts
#   every instruction zgate executed while h2load sent N requests (h1 and h2c), divided by N:
#   the fleet task's own background work during that window (its 100 ms tick, the `XREAD
#   BLOCK 1000` tail's replies) included. No block happens during the load, so what the fleet
#   adds per request is that background work plus anything on the request path itself (there
#   should be nothing: the limiter's change sink is only touched when a block is decided).
#   Under valgrind zgate runs ~50x slower than native while the tick stays 100 ms of wall time,
#   so the background share per request is overstated here, never understated.
#
# How to run (from the repository root; needs valgrind, h2load, redis-server):
#     bash bench/fleet-callgrind.sh [ZGATE_BIN]    # default: builds target/release/zgate
# Knobs (environment): N (requests per row, default 2000), BASE_PORT (default 18380; Redis
#   listens on BASE_PORT+10), TRAINING=1 (both sides train, `[limits] mode = "training"`, and
#   Redis says the fleet trains in epoch 1, so the fleet side joins it and publishes a training
#   snapshot, histograms included, every second).
# Output: callgrind.sh's tables, then the on/off ratio per protocol (mean of the two rows of
#   each side). Everything listens on 127.0.0.1; every process started here is stopped on exit.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE_PORT=${BASE_PORT:-18380}
REDIS_PORT=$((BASE_PORT + 10))
export N=${N:-2000} BASE_PORT

command -v redis-server >/dev/null || { echo "fleet-callgrind.sh: redis-server missing (bash scripts/test-deps.sh)" >&2; exit 1; }

if [ $# -eq 0 ]; then
  (cd "$REPO" && cargo build --release -q -p zgate-proxy --bin zgate)
  set -- "$REPO/target/release/zgate"
fi
BIN=$1

TMP=$(mktemp -d)
REDIS_PID=
cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --protected-mode no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done

COMMON_TOML=
if [ "${TRAINING:-0}" = 1 ]; then
  COMMON_TOML=$(printf '[limits]\nmode = "training"\ntraining_period = "0"\n')
  redis-cli -p "$REDIS_PORT" set "{bench}:epoch" 1 >/dev/null
  redis-cli -p "$REDIS_PORT" hset "{bench}:training" epoch 1 active 1 >/dev/null
fi

FLEET=$(printf '[fleet]\nredis = "redis://127.0.0.1:%s/0"\ninstance = "bench"\nprefix = "bench"\n' "$REDIS_PORT")

run() { # $1: on|off
  if [ "$1" = on ]; then
    EXTRA_TOML="$COMMON_TOML
$FLEET" LABEL="fleet on" bash "$REPO/bench/callgrind.sh" "$BIN"
  else
    EXTRA_TOML="$COMMON_TOML" LABEL="fleet off" bash "$REPO/bench/callgrind.sh" "$BIN"
  fi
}

for side in off on on off; do
  run "$side" | tee -a "$TMP/rows.md"
  echo
done
# The on-side rows must have been connected: the fleet wrote its data id (and, training, its
# snapshots of epoch 1).
redis-cli -p "$REDIS_PORT" exists "{bench}:id" | grep -q 1 \
  || { echo "fleet-callgrind.sh: the fleet never reached Redis" >&2; exit 1; }
if [ "${TRAINING:-0}" = 1 ]; then
  redis-cli -p "$REDIS_PORT" hexists "{bench}:snap:1" bench | grep -q 1 \
    || { echo "fleet-callgrind.sh: the fleet published no training snapshot" >&2; exit 1; }
fi

echo "| row | fleet off | fleet on | on/off |"
echo "|---|---:|---:|---:|"
for proto in h1 h2c; do
  awk -F'|' -v p="$proto 0 B" '
    $3 ~ p { v = $4 + 0; if ($2 ~ /fleet on/) { on += v; non++ } else { off += v; noff++ } }
    END { a = off / noff; b = on / non;
          printf "| %s | %d | %d | %.4f (%+.2f%%) |\n", p, a, b, b / a, 100 * (b / a - 1) }
  ' "$TMP/rows.md"
done
