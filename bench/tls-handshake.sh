#!/usr/bin/env bash
# tls-handshake.sh: what one new TLS connection costs zgate (the "TLS new conn per request" row
# of bench/proxy-vs-peers.sh), per connection, for one or several zgate binaries.
#
# What it measures
#   The row's load: wrk -t1 with `Connection: close` over TLS (HTTP/1.1, ALPN http/1.1), so every
#   request is a new TLS connection, resumed by wrk (TLS 1.3 PSK-DHE) after its first ones; GET
#   /bytes?n=1024 through zgate to the embedded backend; ECDSA P-256 certificate made at run time;
#   limiter disabled. wrk is stopped after exactly N responses (a Lua `response` counter that
#   exits wrk), so every run serves the same number of connections (plus the few that were
#   opening when it stopped: at most CONNS).
#   Modes (first argument):
#     cpu        CPU µs per connection: zgate natively (WORKERS worker threads), utime+stime of
#                its process (/proc/PID/stat, all threads) over the N connections, divided by
#                the responses wrk counted. ROUNDS rounds; in each every binary runs once, the
#                order rotated by one each round. The name `nginx` instead of a binary
#                measures nginx (WORKERS worker processes, the peers script's TLS settings) the
#                same way.
#     callgrind  instructions per connection: zgate under `valgrind --tool=callgrind` (one
#                worker), counters zeroed after a warm-up and dumped after N connections
#                (repeatable whatever else the machine runs; valgrind's CPU lacks ADX/BMI2, so
#                ring's X25519 runs its portable code there, not its assembly).
#     perf       where the CPU goes natively: `perf record -e cpu-clock -g` on zgate (first
#                binary) for N connections; reports (self time by symbol and by shared object,
#                and bench/perf-split.py's split of the samples by cost) go to $OUT_DIR.
#   A binary may be a wrapper script that execs zgate (e.g. with an environment variable set):
#   valgrind follows the exec.
#
# How to run (from the repository root; needs wrk, openssl, valgrind and perf, each for its mode):
#     bash bench/tls-handshake.sh cpu target/release/zgate [OTHER_BIN ... | nginx]
#     bash bench/tls-handshake.sh callgrind BIN [BIN ...]
#     bash bench/tls-handshake.sh perf BIN
# Knobs (environment): N (connections per run: cpu 20000, callgrind 2000, perf 40000), CONNS (wrk
#   connections: 64, callgrind 8), ROUNDS=5, WORKERS=2, BASE_PORT=18480 (uses 3 ports), OUT_DIR
#   (keeps callgrind dumps and perf data and reports).
# Everything listens on 127.0.0.1 only; every load run is bounded by N and by a timeout; every
# process the script starts is stopped on exit.

set -euo pipefail
# shellcheck source=bench/nginx.sh
. "$(dirname "$0")/nginx.sh"

MODE=${1:?usage: tls-handshake.sh cpu|callgrind|perf BIN [BIN ...]}
shift
[ $# -gt 0 ] || { echo "tls-handshake.sh: no binary given" >&2; exit 2; }
case "$MODE" in
  cpu) N=${N:-20000}; CONNS=${CONNS:-64} ;;
  callgrind) N=${N:-2000}; CONNS=${CONNS:-8} ;;
  perf) N=${N:-40000}; CONNS=${CONNS:-64} ;;
  *) echo "tls-handshake.sh: unknown mode $MODE" >&2; exit 2 ;;
esac
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-2}
BASE_PORT=${BASE_PORT:-18480}
BACKEND_PORT=$BASE_PORT
Z_PORT=$((BASE_PORT + 1))
N_PORT=$((BASE_PORT + 2))

die() { echo "tls-handshake.sh: $*" >&2; exit 1; }
for t in wrk openssl; do command -v $t >/dev/null || die "$t missing (apt-get install $t)"; done
[ "$MODE" = callgrind ] && { command -v callgrind_control >/dev/null || die "valgrind missing"; }
[ "$MODE" = perf ] && { command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"; }

TMP=$(mktemp -d /tmp/zgate-tls.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local rc=$?
  set +e
  # Also the processes started inside $(...) (the measured proxies), listed in $TMP/pids.
  [ -f "$TMP/pids" ] && PIDS+=($(cat "$TMP/pids"))
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port pid
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "the process for port $1 exited (logs in $TMP)"
    sleep 0.1
  done
  die "nothing listens on port $1"
}
for port in $BACKEND_PORT $Z_PORT $N_PORT; do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && die "port $port is in use (set BASE_PORT)"
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

FIRST_BIN=
for b in "$@"; do [ "$b" != nginx ] && { FIRST_BIN=$b; break; }; done
[ -n "$FIRST_BIN" ] || die "give at least one zgate binary (for the backend)"
"$FIRST_BIN" backend --listen "127.0.0.1:$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" $!

zgate_config() { # workers
  cat <<EOF
[[listener]]
addr = "127.0.0.1:$Z_PORT"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
[[backend]]
addr = "127.0.0.1:$BACKEND_PORT"
[runtime]
workers = $1
[admin]
enabled = false
[log]
level = "warn"
access = false
[limits]
mode = "disabled"
EOF
}

# wrk stops itself after $WRK_STOP_AFTER responses: its one thread counts them and exits the
# process (`wrk.thread:stop()` would leave wrk sleeping until its -d duration ends).
cat >"$TMP/count.lua" <<'EOF'
local want = tonumber(os.getenv("WRK_STOP_AFTER"))
local done, bad = 0, 0
function response(status, headers, body)
  done = done + 1
  if status ~= 200 then bad = bad + 1 end
  if done >= want then
    io.write(string.format("responses %d non-200 %d\n", done, bad))
    io.flush()
    os.exit(0)
  end
end
EOF

# Runs wrk against port $1 until $2 responses, $3 connections at a time; prints the count.
load() { # port responses concurrent
  local out=$TMP/wrk.out
  WRK_STOP_AFTER=$2 timeout 600 wrk -t1 -c"$3" -d590s -s "$TMP/count.lua" \
    -H "Connection: close" "https://127.0.0.1:$1/bytes?n=1024" >"$out" 2>&1 ||
    die "wrk failed: $(cat "$out")"
  awk '/^responses/ && $4 != 0 { print "tls-handshake.sh: warning: " $4 " responses not 200" > "/dev/stderr" }
    /^responses/ { n = $2 } END { if (n) print n; else exit 1 }' "$out" ||
    die "wrk did not finish: $(cat "$out")"
}

ticks() { # pids...
  local t=0 p
  for p in "$@"; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

start_nginx() {
  nginx_conf "$TMP" "$WORKERS" "$BACKEND_PORT" "listen 127.0.0.1:$N_PORT ssl; $NGINX_PROXY" >"$TMP/nginx.conf"
  nginx -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
  NGINX_PID=$!
  echo "$NGINX_PID" >>"$TMP/pids"
  wait_port "$N_PORT" "$NGINX_PID"
}
stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# CPU µs per connection of one run of $1 (a zgate binary, or nginx).
cpu_run() {
  local bin=$1 pid port pids t0 t1 n
  if [ "$bin" = nginx ]; then
    start_nginx
    pid=$NGINX_PID port=$N_PORT
    sleep 0.5
    pids=$(pgrep -P "$pid" | tr '\n' ' ')
  else
    zgate_config "$WORKERS" >"$TMP/zgate.toml"
    "$bin" --config "$TMP/zgate.toml" >"$TMP/zgate.log" 2>&1 &
    pid=$! port=$Z_PORT
    echo "$pid" >>"$TMP/pids"
    wait_port "$port" "$pid"
    pids=""
  fi
  load "$port" 1000 "$CONNS" >/dev/null # warm-up: ticket keys, caches, the backend's pool
  sleep 0.3
  # shellcheck disable=SC2086
  t0=$(ticks $pid $pids)
  n=$(load "$port" "$N" "$CONNS")
  sleep 0.5 # the connections wrk dropped when it stopped are closed
  # shellcheck disable=SC2086
  t1=$(ticks $pid $pids)
  stop "$pid"
  awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.1f\n", d / hz * 1e6 / n }'
}

# Instructions per connection of $1 under callgrind (one worker).
callgrind_run() {
  local bin=$1 label=$2 out=$TMP/callgrind.out pid ir n
  rm -f "$out"*
  zgate_config 1 >"$TMP/zgate.toml"
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out" "$bin" --config "$TMP/zgate.toml" \
    >"$TMP/zgate.log" 2>&1 &
  pid=$!
  echo "$pid" >>"$TMP/pids"
  wait_port "$Z_PORT" "$pid"
  load "$Z_PORT" 200 "$CONNS" >/dev/null
  sleep 1
  callgrind_control -z "$pid" >/dev/null 2>&1
  n=$(load "$Z_PORT" "$N" "$CONNS")
  sleep 2
  callgrind_control -d "$pid" >/dev/null 2>&1
  stop "$pid"
  if [ -n "${OUT_DIR:-}" ]; then
    mkdir -p "$OUT_DIR"
    cp "$out.1" "$OUT_DIR/$label.callgrind"
  fi
  ir=$(awk '/^(totals|summary):/ {print $2; exit}' "$out.1")
  [ -n "$ir" ] && [ "$ir" -gt 0 ] || die "no instruction count in $out.1"
  echo $((ir / n))
}

label_of() { # binary -> a label: the binary's directory name when it is called zgate
  case "$1" in
    nginx) echo nginx ;;
    */zgate) basename "$(dirname "$1")" ;;
    *) basename "$1" ;;
  esac
}

case "$MODE" in
  cpu)
    declare -A RES
    bins=("$@")
    for r in $(seq "$ROUNDS"); do
      k=$(((r - 1) % ${#bins[@]}))
      order=("${bins[@]:k}" "${bins[@]:0:k}")
      for b in "${order[@]}"; do
        v=$(cpu_run "$b")
        RES[$b]="${RES[$b]:-} $v"
        echo "round $r: $(label_of "$b") $v µs/conn" >&2
      done
    done
    echo "| binary | CPU µs per connection (median) | runs |"
    echo "|---|---:|---|"
    for b in "${bins[@]}"; do
      # shellcheck disable=SC2086
      med=$(printf '%s\n' ${RES[$b]} | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
      echo "| $(label_of "$b") | $med |${RES[$b]} |"
    done
    echo
    echo "N = $N connections per run (wrk -t1 -c$CONNS, Connection: close, 1 KiB), $WORKERS workers, $ROUNDS rounds; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)."
    ;;
  callgrind)
    echo "| binary | instructions per connection |"
    echo "|---|---:|"
    for b in "$@"; do
      echo "| $(label_of "$b") | $(callgrind_run "$b" "$(label_of "$b")") |"
    done
    echo
    echo "N = $N connections after 200 warm-up ones (wrk -t1 -c$CONNS, Connection: close, 1 KiB), one worker; $(date -u '+%Y-%m-%d %H:%M UTC'); $(valgrind --version)."
    ;;
  perf)
    OUT_DIR=${OUT_DIR:-$TMP}
    mkdir -p "$OUT_DIR"
    zgate_config "$WORKERS" >"$TMP/zgate.toml"
    "$1" --config "$TMP/zgate.toml" >"$TMP/zgate.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$Z_PORT" "$pid"
    load "$Z_PORT" 1000 "$CONNS" >/dev/null
    perf record -e cpu-clock -g -p "$pid" -o "$OUT_DIR/perf.data" >"$TMP/perf.log" 2>&1 &
    perf_pid=$!
    sleep 1
    n=$(load "$Z_PORT" "$N" "$CONNS")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop "$pid"
    perf report -i "$OUT_DIR/perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null \
      | grep -v '^$' >"$OUT_DIR/perf-self.txt" || true
    perf report -i "$OUT_DIR/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null \
      | grep -v '^$' >"$OUT_DIR/perf-dso.txt" || true
    perf script -i "$OUT_DIR/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null >"$OUT_DIR/perf-script.txt"
    python3 "$(dirname "$0")/perf-split.py" "$OUT_DIR/perf-script.txt" >"$OUT_DIR/perf-split.txt"
    cat "$OUT_DIR/perf-split.txt"
    echo "$n connections; perf data and reports in $OUT_DIR"
    ;;
esac
