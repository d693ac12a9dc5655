#!/usr/bin/env bash
# proxy-vs-nginx.sh: zgate vs nginx as reverse proxies, same backend, same machine, same run.
#
# What it measures
#   Both proxies sit in front of ONE embedded demo backend (`zgate backend`, hyper HTTP/1.1)
#   and run with the same number of workers (zgate: tokio worker threads; nginx:
#   worker_processes). Four rows:
#     h1  0 B    wrk    -t1 -c64 keep-alive, GET /bytes?n=0
#     h1  1 KiB  wrk    -t1 -c64 keep-alive, GET /bytes?n=1024
#     h2c 0 B    h2load -t1 -c64 -m10 (HTTP/2 prior knowledge), GET /bytes?n=0
#     h2c 1 KiB  h2load -t1 -c64 -m10, GET /bytes?n=1024
#   For every row nginx and zgate are run alternately (ABBA order across ROUNDS rounds) so
#   machine noise hits both alike; each number reported is the median over the rounds
#   (req/s, p99 and CPU/request are medians taken independently).
#   Reported: requests/s, ratio zgate/nginx, p99 latency (wrk --latency; for h2load computed
#   from its --log-file per-request durations), proxy CPU time per request (utime+stime of
#   the proxy's processes over the run / requests done: the noise-resistant cost figure),
#   and zgate's peak RSS (VmHWM) at the end (nginx's workers' summed VmHWM for comparison).
#
# Why one client thread: the reference machine has 2 cores, shared by the load generator,
#   the proxy and the backend; one load-generator thread leaves the rest to the systems under
#   test. By default nothing is pinned to cores and both proxies see the same scheduler
#   conditions.
# PIN=1: the proxies run on CPU 0 only, the backend and the load generator on CPU 1 only
#   (taskset), and WORKERS defaults to 1. The proxy under test then has a core to itself and
#   is the bottleneck, so its throughput is not mixed with the load generator's own CPU use:
#   the steadiest comparison a 2-core machine allows (it cannot show contention between
#   proxy workers, which the default layout does).
# Ratios: in every round the two proxies run back to back, so each round gives one ratio; the
#   ratio columns are the medians of these per-round ratios, which cancels the slow drift of a
#   shared machine that medians of the absolute values keep.
#
# How to run (from the repository root; installs nginx-light, wrk, nghttp2-client with apt
# when missing, builds zgate in release mode, takes ~5 minutes with the defaults):
#     bash bench/proxy-vs-nginx.sh
# Knobs (environment): DURATION=10 (seconds per load run), ROUNDS=3, WORKERS=2, PIN=0, CONNS=64,
#   H2_STREAMS=10, BASE_PORT=18080 (uses BASE_PORT..BASE_PORT+3), CARGO_TARGET_DIR=target,
#   ZGATE_BIN=path (skip the build), OUT=bench/results/latest.md.
# Output: a markdown table on stdout, also written to $OUT with the run's parameters.
#
# COMPARE=defence: the same measurement, but the baseline is zgate itself with its limiter in
#   defence mode instead of nginx (the limiter overhead: defence against disabled, same run).
#   ONE zgate process serves both: it trains on the warm-up load (training_period 4s, then
#   defence; min_clients 1 and far thresholds, so every event runs the full scoring path and
#   the benchmark client is never blocked), and before every measured run the script sets its
#   mode through `zgate ctl mode=disabled` or `mode=defence`, as an operator would. Same
#   process, port, memory layout and warm caches: the mode is the only difference. (Two
#   separate instances pinned to one CPU differed by a steady 6%, more than the limiter
#   costs, which is why the script no longer compares two.)
#     COMPARE=defence bash bench/proxy-vs-nginx.sh   (default OUT=bench/results/limiter-overhead.md)
# Everything listens on 127.0.0.1 only; every load run is time-bounded; all processes the
# script starts are stopped on exit.

set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-0}
case "$PIN" in 0 | 1) ;; *) echo "PIN must be 0 or 1" >&2; exit 2 ;; esac
if [ "$PIN" = 1 ]; then
  [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs 2 CPUs" >&2; exit 2; }
  WORKERS=${WORKERS:-1}
  ON_PROXY_CPU=(taskset -c 0)
  ON_LOAD_CPU=(taskset -c 1)
else
  WORKERS=${WORKERS:-2}
  ON_PROXY_CPU=()
  ON_LOAD_CPU=()
fi
CONNS=${CONNS:-64}
H2_STREAMS=${H2_STREAMS:-10}
BASE_PORT=${BASE_PORT:-18080}
WARMUP=${WARMUP:-3}
COMPARE=${COMPARE:-nginx}
case "$COMPARE" in nginx | defence) ;; *) echo "COMPARE must be nginx or defence" >&2; exit 2 ;; esac
OTHER=$COMPARE

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$COMPARE" = defence ]; then
  OUT=${OUT:-$REPO/bench/results/limiter-overhead.md}
else
  OUT=${OUT:-$REPO/bench/results/latest.md}
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac

BACKEND_PORT=$BASE_PORT
ZGATE_PORT=$((BASE_PORT + 1))
NGINX_H1_PORT=$((BASE_PORT + 2))
NGINX_H2_PORT=$((BASE_PORT + 3))

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing from Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  local pkgs=()
  for p in "${missing[@]}"; do
    if [ "$p" = nginx ]; then
      # nginx-light is the smallest build with the http2 module; newer Debian dropped it.
      if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
    else
      pkgs+=("$p")
    fi
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

install_tools
export PATH="$PATH:/usr/sbin:/sbin"
NGINX=$(command -v nginx)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
[ -n "$NGINX_VERSION" ] || die "cannot tell nginx's version"

# ---------------------------------------------------------------- build
if [ -n "${ZGATE_BIN:-}" ]; then
  ZGATE=$ZGATE_BIN
else
  log "building zgate (release, target dir $TARGET_DIR)"
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q -p zgate-proxy --bin zgate)
  ZGATE=$TARGET_DIR/release/zgate
fi
[ -x "$ZGATE" ] || die "no zgate binary at $ZGATE"

# ---------------------------------------------------------------- processes
TMP=$(mktemp -d /tmp/zgate-bench.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local rc=$?
  set +e
  if [ -f "$TMP/nginx.pid" ]; then kill "$(cat "$TMP/nginx.pid")" 2>/dev/null; fi
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

for port in $BACKEND_PORT $ZGATE_PORT $NGINX_H1_PORT $NGINX_H2_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use (set BASE_PORT)"
  fi
done

wait_port() { # port name pid
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited at start (see $TMP/$2.log)"
    sleep 0.1
  done
  die "$2 did not listen on $1"
}

log "starting the backend on :$BACKEND_PORT"
"${ON_LOAD_CPU[@]}" "$ZGATE" backend --listen "127.0.0.1:$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_port "$BACKEND_PORT" backend "$BACKEND_PID"

cat >"$TMP/zgate.toml" <<EOF
[[listener]]
addr = "127.0.0.1:$ZGATE_PORT"
[[backend]]
addr = "127.0.0.1:$BACKEND_PORT"
[runtime]
workers = $WORKERS
[log]
level = "warn"
access = false
EOF
if [ "$COMPARE" = defence ]; then
  # One zgate, both modes: "defence" and "zgate" (disabled) are the same process and port.
  ADMIN_PORT=$((BASE_PORT + 3))
  cat >>"$TMP/zgate.toml" <<EOF
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
EOF
  cat "$REPO/bench/limits-scored-never-blocked.toml" >>"$TMP/zgate.toml"
fi
log "starting zgate on :$ZGATE_PORT (workers = $WORKERS)"
"${ON_PROXY_CPU[@]}" "$ZGATE" --config "$TMP/zgate.toml" >"$TMP/zgate.log" 2>&1 &
ZGATE_PID=$!
PIDS+=("$ZGATE_PID")
wait_port "$ZGATE_PORT" zgate "$ZGATE_PID"

if [ "$COMPARE" = defence ]; then
  NGINX_PID=$ZGATE_PID
  NGINX_H1_PORT=$ZGATE_PORT
  NGINX_H2_PORT=$ZGATE_PORT
else
# nginx: `http2 on;` exists from 1.25.1; before it the listen parameter `http2` does the same.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
if version_ge "$NGINX_VERSION" 1.25.1; then
  H2_LISTEN="listen 127.0.0.1:$NGINX_H2_PORT; http2 on;"
else
  H2_LISTEN="listen 127.0.0.1:$NGINX_H2_PORT http2;"
fi
USER_LINE=""
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
mkdir -p "$TMP/nginx-temp"
cat >"$TMP/nginx.conf" <<EOF
$USER_LINE
worker_processes $WORKERS;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx-temp/body;
  proxy_temp_path $TMP/nginx-temp/proxy;
  fastcgi_temp_path $TMP/nginx-temp/fastcgi;
  uwsgi_temp_path $TMP/nginx-temp/uwsgi;
  scgi_temp_path $TMP/nginx-temp/scgi;
  tcp_nodelay on;
  # zgate never closes a keep-alive client connection after N requests; nor does nginx here.
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  upstream backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 256;
    keepalive_requests 10000000;
    keepalive_timeout 90s;
  }
  server {
    listen 127.0.0.1:$NGINX_H1_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    $H2_LISTEN
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -t -q -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" ||
  die "nginx rejected its config: $(cat "$TMP/nginx-error.log")"
log "starting nginx $NGINX_VERSION on :$NGINX_H1_PORT (h1) and :$NGINX_H2_PORT (h2c), worker_processes = $WORKERS"
"${ON_PROXY_CPU[@]}" "$NGINX" -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_H1_PORT" nginx "$NGINX_PID"
wait_port "$NGINX_H2_PORT" nginx "$NGINX_PID"
fi

# ---------------------------------------------------------------- sanity: same bytes through both
check() { # url curl-args... ; expects 1024 bytes and 200
  local url=$1; shift
  local got
  got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{size_download} %{http_version}' "$@" "$url")
  log "  $url -> $got"
  case "$got" in "200 1024 "*) ;; *) die "unexpected answer from $url: $got" ;; esac
}
log "sanity checks"
check "http://127.0.0.1:$ZGATE_PORT/bytes?n=1024"
check "http://127.0.0.1:$NGINX_H1_PORT/bytes?n=1024"
check "http://127.0.0.1:$ZGATE_PORT/bytes?n=1024" --http2-prior-knowledge
check "http://127.0.0.1:$NGINX_H2_PORT/bytes?n=1024" --http2-prior-knowledge

# ---------------------------------------------------------------- measurement helpers
proxy_pids() { # name -> pids whose CPU counts as the proxy's
  if [ "$1" = zgate ] || [ "$1" = defence ]; then echo "$ZGATE_PID"; else
    echo "$NGINX_PID"; pgrep -P "$NGINX_PID" || true
  fi
}
cpu_ticks() { # name -> utime+stime ticks, summed over its processes
  local t=0 p
  for p in $(proxy_pids "$1"); do
    # fields after the ")" of comm: utime is the 12th, stime the 13th
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

url_for() { # name proto size
  local port
  if [ "$1" = zgate ]; then port=$ZGATE_PORT
  elif [ "$2" = h1 ]; then port=$NGINX_H1_PORT
  else port=$NGINX_H2_PORT; fi
  echo "http://127.0.0.1:$port/bytes?n=$3"
}

to_ms() { # "2.34ms" / "812.00us" / "1.02s" -> ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else print "?" }'
}

# COMPARE=defence, once training is over: the mode each run is measured in.
SWITCH_MODES=0
set_mode() { # name
  local want=disabled got
  [ "$1" = defence ] && want=defence
  # --force: the benchmark's model is learned from a handful of load generators.
  "$ZGATE" ctl --admin "http://127.0.0.1:$ADMIN_PORT" "mode=$want" --force >/dev/null ||
    die "zgate refused mode=$want"
  got=$("$ZGATE" ctl --admin "http://127.0.0.1:$ADMIN_PORT" mode)
  [ "$got" = "mode = $want" ] || die "zgate is in '$got', not $want"
}

# One load run; prints "rps p99_ms cpu_us_per_req".
run_load() { # name proto size duration
  local name=$1 proto=$2 size=$3 dur=$4 url out rps p99 reqs t0 t1
  if [ "$COMPARE" = defence ] && [ "$SWITCH_MODES" = 1 ]; then set_mode "$name"; fi
  url=$(url_for "$name" "$proto" "$size")
  out=$TMP/run.out
  t0=$(cpu_ticks "$name")
  if [ "$proto" = h1 ]; then
    timeout $((dur + 30)) "${ON_LOAD_CPU[@]}" wrk -t1 -c"$CONNS" -d"${dur}s" --latency "$url" >"$out" 2>&1 ||
      die "wrk failed: $(cat "$out")"
    t1=$(cpu_ticks "$name")
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
      log "  warning ($name $proto $size): $(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ')"
    fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    reqs=$(awk '/requests in/ {print $1}' "$out")
  else
    timeout $((dur + 30)) "${ON_LOAD_CPU[@]}" h2load -t1 -c"$CONNS" -m"$H2_STREAMS" -D "$dur" \
      --log-file="$TMP/h2load.log" "$url" >"$out" 2>&1 || die "h2load failed: $(cat "$out")"
    t1=$(cpu_ticks "$name")
    local failed
    failed=$(awk '/^requests:/ {print $10 + $12}' "$out")
    [ "${failed:-0}" = 0 ] || log "  warning ($name $proto $size): $(grep '^requests:' "$out")"
    grep -q '^status codes: .* 0 3xx, 0 4xx, 0 5xx' "$out" ||
      log "  warning ($name $proto $size): $(grep '^status codes:' "$out")"
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
    reqs=$(awk '/^requests:/ {print $8}' "$out")
    p99=$(cut -f3 "$TMP/h2load.log" | sort -n |
      awk '{ v[NR] = $1 } END { if (NR == 0) { print "?"; exit } i = int(NR * 0.99 + 0.999999); if (i > NR) i = NR; printf "%.2f", v[i] / 1000 }')
    rm -f "$TMP/h2load.log"
  fi
  [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || die "no result from $name $proto $size: $(cat "$out")"
  awk -v r="$rps" -v p="$p99" -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="$reqs" \
    'BEGIN { printf "%.0f %s %.1f\n", r, p, d / hz * 1e6 / n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- warm up
log "warming up (${WARMUP}s per proxy and protocol)"
for name in $OTHER zgate; do
  run_load "$name" h1 1024 "$WARMUP" >/dev/null
  run_load "$name" h2c 1024 "$WARMUP" >/dev/null
done
if [ "$COMPARE" = defence ]; then
  # Training ends 4s after start; make sure it has, with load seen.
  mode=""
  for _ in $(seq 50); do
    mode=$("$ZGATE" ctl --admin "http://127.0.0.1:$ADMIN_PORT" mode 2>/dev/null || true)
    [ "$mode" = "mode = defence" ] && break
    run_load defence h1 1024 1 >/dev/null
  done
  [ "$mode" = "mode = defence" ] || die "zgate did not end training: $mode"
  log "training over, zgate: $mode; from now on each run sets its mode"
  SWITCH_MODES=1
fi

# ---------------------------------------------------------------- measure
ROWS=("h1 0" "h1 1024" "h2c 0" "h2c 1024")
declare -A RES
for row in "${ROWS[@]}"; do
  read -r proto size <<<"$row"
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="$OTHER zgate"; else order="zgate $OTHER"; fi
    for name in $order; do
      res=$(run_load "$name" "$proto" "$size" "$DURATION")
      log "$proto ${size}B round $r $name: $res (req/s, p99 ms, CPU us/req)"
      RES[$proto.$size.$name]+="$res"$'\n'
    done
  done
done

vmhwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
ZGATE_HWM=$(vmhwm_kib "$ZGATE_PID")
NGINX_HWM=0
if [ "$COMPARE" = defence ]; then
  NGINX_HWM=$ZGATE_HWM
else
  for p in $(pgrep -P "$NGINX_PID"); do NGINX_HWM=$((NGINX_HWM + $(vmhwm_kib "$p"))); done
fi

# ---------------------------------------------------------------- report
col() { printf '%s' "${RES[$1]}" | awk -v c="$2" 'NF { print $c }' | median; }
# Median over rounds of (column c of $1) / (column c of $2): the runs of a round are adjacent.
pratio() {
  paste -d' ' <(printf '%s' "${RES[$1]}" | awk -v c="$3" 'NF { print $c }') \
    <(printf '%s' "${RES[$2]}" | awk -v c="$3" 'NF { print $c }') |
    awk '$2 > 0 { print $1 / $2 }' | median
}
label() { if [ "$2" = 0 ]; then echo "$1 0 B"; else echo "$1 1 KiB"; fi; }
TABLE=$(
  if [ "$COMPARE" = defence ]; then
    echo "| row | disabled req/s | defence req/s | defence/disabled req/s | disabled p99 (ms) | defence p99 (ms) | defence/disabled p99 | disabled CPU µs/req | defence CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  else
    echo "| row | nginx req/s | zgate req/s | zgate/nginx | nginx p99 (ms) | zgate p99 (ms) | nginx CPU µs/req | zgate CPU µs/req |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  fi
  for row in "${ROWS[@]}"; do
    read -r proto size <<<"$row"
    n_rps=$(col "$proto.$size.$OTHER" 1); z_rps=$(col "$proto.$size.zgate" 1)
    n_p99=$(col "$proto.$size.$OTHER" 2); z_p99=$(col "$proto.$size.zgate" 2)
    n_cpu=$(col "$proto.$size.$OTHER" 3); z_cpu=$(col "$proto.$size.zgate" 3)
    if [ "$COMPARE" = defence ]; then
      ratio=$(printf '%.3f' "$(pratio "$proto.$size.$OTHER" "$proto.$size.zgate" 1)")
      p99r=$(printf '%.3f' "$(pratio "$proto.$size.$OTHER" "$proto.$size.zgate" 2)")
      printf '| %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |\n' "$(label "$proto" "$size")" \
        "$z_rps" "$n_rps" "$ratio" "$z_p99" "$n_p99" "$p99r" "$z_cpu" "$n_cpu"
    else
      ratio=$(printf '%.2fx' "$(pratio "$proto.$size.zgate" "$proto.$size.$OTHER" 1)")
      printf '| %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' "$(label "$proto" "$size")" \
        "$n_rps" "$z_rps" "$ratio" "$n_p99" "$z_p99" "$n_cpu" "$z_cpu"
    fi
  done
)
RAW=$(
  for row in "${ROWS[@]}"; do
    read -r proto size <<<"$row"
    for name in $OTHER zgate; do
      printf '%s %s %s: %s\n' "$proto" "$size" "$name" "$(printf '%s' "${RES[$proto.$size.$name]}" | awk 'NF' | paste -sd ';' -)"
    done
  done
)
if [ "$COMPARE" = defence ]; then
  TITLE="zgate limiter overhead: defence mode against disabled, same run"
  MEM="zgate peak RSS (VmHWM), both modes in one process: $((ZGATE_HWM / 1024)) MiB. In the raw runs below, \"zgate\" is the runs in disabled mode."
else
  TITLE="zgate vs nginx, reverse proxy in front of the same backend"
  MEM="zgate peak RSS (VmHWM): $((ZGATE_HWM / 1024)) MiB ($ZGATE_HWM KiB); nginx workers' summed VmHWM: $((NGINX_HWM / 1024)) MiB."
fi
if [ "$PIN" = 1 ]; then
  PLACEMENT="Pinned (PIN=1): the proxies on CPU 0, the backend and the load generator on CPU 1."
else
  PLACEMENT="2 cores shared by client, proxy and backend; no CPU pinning."
fi
REPORT=$(cat <<EOF
# $TITLE

$TABLE

$MEM

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); zgate commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); nginx $NGINX_VERSION; wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'); $(h2load --version | head -1).
- Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); kernel $(uname -r).
- Workers: $WORKERS (zgate tokio worker threads = nginx worker_processes). Backend: \`zgate backend\` (hyper HTTP/1.1), shared by both proxies; nginx upstream keepalive, HTTP/1.1.
- Load: h1 = \`wrk -t1 -c$CONNS -d${DURATION}s --latency\`; h2c = \`h2load -t1 -c$CONNS -m$H2_STREAMS -D $DURATION\` (prior knowledge). One client thread. $PLACEMENT
- Each absolute cell is the median of $ROUNDS runs; the two proxies alternate (ABBA) within a row; each ratio is the median of the $ROUNDS per-round ratios (the two runs of a round are back to back). p99: wrk's 99% for h1; from h2load's per-request log for h2c. CPU µs/req = proxy utime+stime during the run / requests completed (all nginx workers summed; all zgate threads).
- Command: \`COMPARE=$COMPARE PIN=$PIN bash bench/proxy-vs-nginx.sh\` (env: DURATION=$DURATION ROUNDS=$ROUNDS WORKERS=$WORKERS CONNS=$CONNS H2_STREAMS=$H2_STREAMS).

Raw runs (req/s p99_ms cpu_us_per_req):
\`\`\`
$RAW
\`\`\`
EOF
)
mkdir -p "$(dirname "$OUT")"
printf '%s\n' "$REPORT" >"$OUT"
printf '%s\n' "$REPORT"
log "written to $OUT"
