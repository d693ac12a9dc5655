#!/usr/bin/env bash
# routes-callgrind.sh: what 1000 routes cost zgate per request, in instructions (issue 15:
# "a route lookup costs <= 1% CPU per request with 1000 routes").
#
# Runs bench/callgrind.sh on the same binary without routes and with the 1000 routes of
# bench/routes-1000.py (the requests take the last of them; by default any host `/bytes`,
# after missing every exact and wildcard host: their Host is 127.0.0.1:PORT), RUNS times each,
# and prints
# every run's instructions per request, the difference of the means and its percentage of
# the no-routes mean, for the h1 and h2c rows. The routes' whole cost is in the difference:
# the lookup, and anything else that changes with them (another pool, allocations).
#
#     bash bench/routes-callgrind.sh [ZGATE_BIN]    # default: target/release/zgate, built
# Knobs: RUNS=2 (per config), HIT=any|exact|wildcard (which kind of route the requests take,
# bench/routes-1000.py's), N=2000 requests per row (callgrind.sh's), OUT_DIR (keeps the dumps,
# `none.K-PROTO.callgrind` and `routes.K-PROTO.callgrind`, for callgrind_annotate).

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-2}
if [ $# -eq 0 ]; then
  (cd "$REPO" && cargo build --release -q -p zgate-proxy --bin zgate)
  set -- "$REPO/target/release/zgate"
fi
BIN=$1
ROUTES=$(python3 "$REPO/bench/routes-1000.py")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One callgrind.sh run: "h1 N" and "h2c N" lines.
run() {
  local label=$1 extra=$2
  EXTRA_TOML="$extra" LABEL="$label" bash "$REPO/bench/callgrind.sh" "$BIN" |
    awk -F'|' '/ 0 B \|/ {gsub(/ /, "", $3); gsub(/ /, "", $4); sub(/0B$/, "", $3); print $3, $4}'
}

for k in $(seq "$RUNS"); do
  run "none.$k" "" >>"$TMP/none"
  run "routes.$k" "$ROUTES" >>"$TMP/routes"
done

echo "| row | no routes | 1000 routes (HIT=${HIT:-any}) | difference | of a request |"
echo "|---|---:|---:|---:|---:|"
for proto in h1 h2c; do
  python3 - "$proto" "$TMP/none" "$TMP/routes" <<'EOF'
import sys
proto, none, routes = sys.argv[1], sys.argv[2], sys.argv[3]
def runs(path):
    return [int(n) for p, n in (line.split() for line in open(path)) if p == proto]
a, b = runs(none), runs(routes)
ma, mb = sum(a) / len(a), sum(b) / len(b)
fmt = lambda xs: ", ".join(str(x) for x in xs)
print(f"| {proto} 0 B | {fmt(a)} | {fmt(b)} | {mb - ma:+.0f} | {100 * (mb - ma) / ma:+.2f}% |")
EOF
done
echo
echo "Instructions per request (callgrind, N=${N:-2000} after 400 warm-up, 1 worker), $RUNS runs each of \`$BIN\`;"
echo "difference of the means; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs."
