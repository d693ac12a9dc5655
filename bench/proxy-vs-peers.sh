#!/usr/bin/env bash
# proxy-vs-peers.sh: zgate vs nginx vs HAProxy as reverse proxies, same backend, same run.
#
# What it measures
#   zgate, nginx and HAProxy sit in front of ONE embedded demo backend (`zgate backend`, hyper
#   HTTP/1.1) with the same number of workers (zgate: worker threads; nginx: worker_processes;
#   HAProxy: nbthread, with `http-reuse always`). zgate is measured twice, in one process whose
#   limiter mode is switched before each run (`zgate ctl mode=...`): "zgate" with the limiter
#   disabled, "zgate-def" in defence (trained on the warm-up, thresholds far away, so every
#   event runs the whole scoring path and the load generator is never blocked). Rows:
#     h1 0 B, h1 1 KiB     wrk -t1 -c64 keep-alive, GET /bytes?n=0|1024
#     h2c 0 B, h2c 1 KiB   h2load -t1 -c32 -m10, HTTP/2 prior knowledge
#     h2 TLS 1 KiB         h2load -t1 -c32 -m10 over TLS (ALPN h2)
#     TLS new conn 1 KiB   wrk -t1 -c64 with `Connection: close`: a TLS handshake per request
#   TLS uses an ECDSA P-256 certificate made at run time, and TLS 1.3 for every contender
#   (nginx is told `ssl_protocols TLSv1.2 TLSv1.3`: before 1.23.4 its default stops at TLS 1.2,
#   whose resumed handshake has no key exchange, where TLS 1.3's has an X25519 one; Debian 12
#   ships 1.22, and with its default the new-connection row compared different handshakes:
#   wrk resumed TLS 1.2 with nginx and TLS 1.3 with zgate and HAProxy). In every round each contender runs
#   once per row, the order rotated by one each round (so none is always first or last after
#   another's load). Each cell is the median over ROUNDS runs: req/s, p99 (wrk --latency;
#   h2load's per-request log), proxy CPU µs per request (utime+stime of the proxy's processes
#   over the run, /proc/<pid>/stat, divided by the requests completed, and its user-space and
#   kernel parts: the kernel's share is the system calls and TCP, much alike for every proxy
#   here, so it bounds what user-space work alone can win), and the ratio of zgate
#   (each mode) to the best peer of the row, the median of per-round ratios.
#   The machine's CPU per request (every process, from /proc/stat) gives a second table: what
#   1.1x the best peer's req/s would allow zgate's user-space time per request, the rest of
#   the machine (backend, load generator, zgate's kernel time) left as it is.
#   Peak RSS (VmHWM) of each proxy at the end. A probe before the rows counts how many of
#   wrk's TLS reconnections resume a TLS 1.3 session (nginx logs `$ssl_session_reused
#   $ssl_protocol`).
#
# How to run (from the repository root; installs haproxy, nginx-light, wrk, nghttp2-client,
# openssl with apt when missing; builds zgate in release mode; ~12 minutes with the defaults):
#     bash bench/proxy-vs-peers.sh
# Knobs (environment): DURATION=8 (seconds per load run), ROUNDS=3, WORKERS=2, H1_CONNS=64,
#   H2_CONNS=32, H2_STREAMS=10, BASE_PORT=18080 (uses BASE_PORT..BASE_PORT+9),
#   ROWS="h1:0 h1:1024 h2c:0 h2c:1024 h2tls:1024 tlsnew:1024", CONTENDERS="zgate zgate-def
#   nginx haproxy", CARGO_TARGET_DIR=target, ZGATE_BIN=path (skip the build),
#   OUT=bench/results/peers-latest.md.
# Output: a markdown table on stdout, also written to $OUT with date, commit, command, machine
#   and load average (before and after).
# Everything listens on 127.0.0.1 only; every load run is time-bounded; every process the
# script starts is stopped on exit.

set -euo pipefail

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
H1_CONNS=${H1_CONNS:-64}
H2_CONNS=${H2_CONNS:-32}
H2_STREAMS=${H2_STREAMS:-10}
BASE_PORT=${BASE_PORT:-18080}
WARMUP=${WARMUP:-2}
ROWS=${ROWS:-"h1:0 h1:1024 h2c:0 h2c:1024 h2tls:1024 tlsnew:1024"}
CONTENDERS=${CONTENDERS:-"zgate zgate-def nginx haproxy"}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/bench/results/peers-latest.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac

BACKEND_PORT=$BASE_PORT
Z_PORT=$((BASE_PORT + 1))
Z_TLS_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
N_H1_PORT=$((BASE_PORT + 4))
N_H2_PORT=$((BASE_PORT + 5))
N_TLS_PORT=$((BASE_PORT + 6))
H_PORT=$((BASE_PORT + 7))
H_TLS_PORT=$((BASE_PORT + 8))
PROBE_PORT=$((BASE_PORT + 9))

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- tools
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export PATH="$PATH:/usr/sbin:/sbin"
install_tools() {
  local pkgs=()
  command -v nginx >/dev/null 2>&1 || pkgs+=(nginx)
  command -v haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
  command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
  command -v h2load >/dev/null 2>&1 || pkgs+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  as_root apt-get update -qq
  # nginx-light is the smallest build with the http2 and ssl modules; newer Debian dropped it.
  if [[ " ${pkgs[*]} " == *" nginx "* ]] && apt-cache show nginx-light >/dev/null 2>&1; then
    pkgs=("${pkgs[@]/#nginx/nginx-light}")
  fi
  log "installing from Debian packages: ${pkgs[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
install_tools
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
HAPROXY_VERSION=$("$HAPROXY" -v | awk 'NR==1 {print $3}')

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
TMP=$(mktemp -d /tmp/zgate-peers.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local rc=$?
  set +e
  [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null
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

for port in $(seq "$BASE_PORT" $((BASE_PORT + 9))); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && die "port $port is in use (set BASE_PORT)"
done
wait_port() { # port name pid
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited at start (see its log)"
    sleep 0.1
  done
  die "$2 did not listen on $1"
}

log "test certificate: ECDSA P-256, self-signed, made now"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

"$ZGATE" backend --listen "127.0.0.1:$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
wait_port "$BACKEND_PORT" backend "$BACKEND_PID"

cat >"$TMP/zgate.toml" <<EOF
[[listener]]
addr = "127.0.0.1:$Z_PORT"
[[listener]]
addr = "127.0.0.1:$Z_TLS_PORT"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
[[backend]]
addr = "127.0.0.1:$BACKEND_PORT"
[runtime]
workers = $WORKERS
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[log]
level = "warn"
access = false
EOF
cat "$REPO/bench/limits-scored-never-blocked.toml" >>"$TMP/zgate.toml"
"$ZGATE" --config "$TMP/zgate.toml" >"$TMP/zgate.log" 2>&1 &
ZGATE_PID=$!
PIDS+=("$ZGATE_PID")
wait_port "$Z_PORT" zgate "$ZGATE_PID"

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
if version_ge "$NGINX_VERSION" 1.25.1; then
  H2C_LISTEN="listen 127.0.0.1:$N_H2_PORT; http2 on;"
  TLS_LISTEN="listen 127.0.0.1:$N_TLS_PORT ssl; http2 on;"
  PROBE_LISTEN="listen 127.0.0.1:$PROBE_PORT ssl;"
else
  H2C_LISTEN="listen 127.0.0.1:$N_H2_PORT http2;"
  TLS_LISTEN="listen 127.0.0.1:$N_TLS_PORT ssl http2;"
  PROBE_LISTEN="listen 127.0.0.1:$PROBE_PORT ssl;"
fi
# shellcheck source=bench/nginx.sh
. "$REPO/bench/nginx.sh"
nginx_conf "$TMP" "$WORKERS" "$BACKEND_PORT" \
  "listen 127.0.0.1:$N_H1_PORT; $NGINX_PROXY" \
  "$H2C_LISTEN $NGINX_PROXY" \
  "$TLS_LISTEN $NGINX_PROXY" \
  "$PROBE_LISTEN access_log $TMP/probe.log reused; $NGINX_PROXY" >"$TMP/nginx.conf"
"$NGINX" -t -q -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" ||
  die "nginx rejected its config: $(cat "$TMP/nginx-error.log")"
"$NGINX" -e "$TMP/nginx-error.log" -p "$TMP" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$N_TLS_PORT" nginx "$NGINX_PID"

cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 8000
  log stdout format raw local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$H_PORT
  bind 127.0.0.1:$H_TLS_PORT ssl crt $TMP/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
EOF
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected its config"
"$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_port "$H_TLS_PORT" haproxy "$HAPROXY_PID"

# ---------------------------------------------------------------- who listens where
base_url() { # contender row-proto -> scheme://host:port
  local c=$1 p=$2
  case "$c:$p" in
    zgate*:h1 | zgate*:h2c) echo "http://127.0.0.1:$Z_PORT" ;;
    zgate*:*) echo "https://127.0.0.1:$Z_TLS_PORT" ;;
    nginx:h1) echo "http://127.0.0.1:$N_H1_PORT" ;;
    nginx:h2c) echo "http://127.0.0.1:$N_H2_PORT" ;;
    nginx:*) echo "https://127.0.0.1:$N_TLS_PORT" ;;
    haproxy:h1 | haproxy:h2c) echo "http://127.0.0.1:$H_PORT" ;;
    haproxy:*) echo "https://127.0.0.1:$H_TLS_PORT" ;;
  esac
}
proxy_pids() { # contender -> pids whose CPU counts as the proxy's
  case "$1" in
    zgate*) echo "$ZGATE_PID" ;;
    nginx) echo "$NGINX_PID"; pgrep -P "$NGINX_PID" || true ;;
    haproxy) echo "$HAPROXY_PID"; pgrep -P "$HAPROXY_PID" || true ;;
  esac
}
cpu_ticks() { # contender -> "utime stime" of its processes, in clock ticks
  local u=0 s=0 p pu ps
  for p in $(proxy_pids "$1"); do
    read -r pu ps < <(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}
CLK_TCK=$(getconf CLK_TCK)
# The whole machine's busy time (every CPU, every process: proxy, backend, load generator and
# anything else), in clock ticks, from /proc/stat.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# ---------------------------------------------------------------- sanity: same bytes everywhere
check() { # url want-http-version curl-args...
  local url=$1 want=$2; shift 2
  local got
  got=$(curl -sSk --max-time 5 -o /dev/null -w '%{http_code} %{size_download} %{http_version}' "$@" "$url")
  log "  $url -> $got"
  [ "$got" = "200 1024 $want" ] || die "unexpected answer from $url: $got (want 200 1024 $want)"
}
log "sanity checks"
for c in zgate nginx haproxy; do
  check "$(base_url $c h1)/bytes?n=1024" 1.1
  check "$(base_url $c h2c)/bytes?n=1024" 2 --http2-prior-knowledge
  check "$(base_url $c h2tls)/bytes?n=1024" 2 --http2
  check "$(base_url $c tlsnew)/bytes?n=1024" 1.1 --http1.1
done

to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else print "?" }'
}

SWITCH_MODES=0
MODE_NOW=""
set_mode() { # contender
  local want=disabled
  [ "$1" = zgate-def ] && want=defence
  [ "$MODE_NOW" = "$want" ] && return 0
  "$ZGATE" ctl --admin "http://127.0.0.1:$ADMIN_PORT" "mode=$want" --force >/dev/null ||
    die "zgate refused mode=$want"
  MODE_NOW=$want
}

# One load run; prints "rps p99_ms cpu_us_per_req user_us_per_req sys_us_per_req
# machine_us_per_req" (the last: every process's CPU, the proxy's included).
run_load() { # contender proto size duration
  local c=$1 proto=$2 size=$3 dur=$4 url out rps p99 reqs t0 t1 m0 m1
  case "$c" in zgate*) [ "$SWITCH_MODES" = 1 ] && set_mode "$c" ;; esac
  url="$(base_url "$c" "$proto")/bytes?n=$size"
  out=$TMP/run.out
  t0=$(cpu_ticks "$c")
  m0=$(machine_ticks)
  case "$proto" in
    h1 | tlsnew)
      local hdr=()
      [ "$proto" = tlsnew ] && hdr=(-H "Connection: close")
      timeout $((dur + 30)) wrk -t1 -c"$H1_CONNS" -d"${dur}s" --latency "${hdr[@]}" "$url" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
      t1=$(cpu_ticks "$c")
      m1=$(machine_ticks)
      grep -q 'Non-2xx' "$out" && log "  warning ($c $proto $size): $(grep 'Non-2xx' "$out")"
      rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
      p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
      reqs=$(awk '/requests in/ {print $1}' "$out")
      ;;
    *)
      timeout $((dur + 30)) h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$dur" \
        --log-file="$TMP/h2load.log" "$url" >"$out" 2>&1 || die "h2load failed: $(cat "$out")"
      t1=$(cpu_ticks "$c")
      m1=$(machine_ticks)
      grep -q '^status codes: .* 0 3xx, 0 4xx, 0 5xx' "$out" ||
        log "  warning ($c $proto $size): $(grep '^status codes:' "$out")"
      rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
      reqs=$(awk '/^requests:/ {print $8}' "$out")
      p99=$(cut -f3 "$TMP/h2load.log" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "?"; exit } i = int(NR * 0.99 + 0.999999); if (i > NR) i = NR; printf "%.2f", v[i] / 1000 }')
      rm -f "$TMP/h2load.log"
      ;;
  esac
  [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || die "no result from $c $proto $size: $(cat "$out")"
  local u0 s0 u1 s1
  read -r u0 s0 <<<"$t0"
  read -r u1 s1 <<<"$t1"
  awk -v r="$rps" -v p="$p99" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v m="$((m1 - m0))" \
    -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { f = 1e6 / hz / n
      printf "%.0f %s %.1f %.1f %.1f %.1f\n", r, p, (u + s) * f, u * f, s * f, m * f }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- does the client resume?
log "TLS resumption probe: wrk with Connection: close against nginx, 2 s"
timeout 30 wrk -t1 -c8 -d2s -H "Connection: close" "https://127.0.0.1:$PROBE_PORT/bytes?n=0" >/dev/null 2>&1 || true
PROBE_TOTAL=$(wc -l <"$TMP/probe.log" 2>/dev/null || echo 0)
PROBE_REUSED=$(grep -c '^r TLSv1.3$' "$TMP/probe.log" 2>/dev/null || true)
RESUMPTION="wrk's TLS reconnections resumed a TLS 1.3 session in ${PROBE_REUSED:-0} of $PROBE_TOTAL connections (nginx \`\$ssl_session_reused \$ssl_protocol\`, 2 s probe)."
log "$RESUMPTION"

# ---------------------------------------------------------------- warm up (zgate trains)
log "warming up (${WARMUP}s per contender and protocol)"
for c in zgate nginx haproxy; do
  run_load "$c" h1 1024 "$WARMUP" >/dev/null
  run_load "$c" h2c 1024 "$WARMUP" >/dev/null
done
mode=""
for _ in $(seq 50); do
  mode=$("$ZGATE" ctl --admin "http://127.0.0.1:$ADMIN_PORT" mode 2>/dev/null || true)
  [ "$mode" = "mode = defence" ] && break
  run_load zgate h1 1024 1 >/dev/null
done
[ "$mode" = "mode = defence" ] || die "zgate did not end training: $mode"
MODE_NOW=defence
SWITCH_MODES=1

# ---------------------------------------------------------------- measure
read -r -a CS <<<"$CONTENDERS"
declare -A RES
rows_done=0
for r in $(seq "$ROUNDS"); do
  for row in $ROWS; do
    proto=${row%%:*}; size=${row##*:}
    # Rotate the order by one each round (and by row, so no row always starts alike).
    k=$(( (r + rows_done) % ${#CS[@]} ))
    rows_done=$((rows_done + 1))
    order=("${CS[@]:$k}" "${CS[@]:0:$k}")
    for c in "${order[@]}"; do
      res=$(run_load "$c" "$proto" "$size" "$DURATION")
      log "$proto ${size}B round $r $c: $res (req/s, p99 ms, CPU us/req: total user sys)"
      RES[$row.$c]+="$res"$'\n'
    done
  done
done

hwm_kib() { local t=0 p; for p in $(proxy_pids "$1"); do t=$((t + $(awk '/^VmHWM:/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
declare -A HWM
for c in zgate nginx haproxy; do HWM[$c]=$(hwm_kib "$c"); done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
col() { printf '%s' "${RES[$1]:-}" | awk -v c="$2" 'NF { print $c }' | median; }
# Median over rounds of zgate's req/s over the best peer's of the same round.
ratio() { # row zgate-contender
  local row=$1 z=$2 r
  for r in $(seq "$ROUNDS"); do
    local zr best=0 p v
    zr=$(printf '%s' "${RES[$row.$z]:-}" | awk -v r="$r" 'NF { n++ } n == r { print $1; exit }')
    for p in nginx haproxy; do
      v=$(printf '%s' "${RES[$row.$p]:-}" | awk -v r="$r" 'NF { n++ } n == r { print $1; exit }')
      [ -n "$v" ] && best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
    done
    [ -n "$zr" ] && awk -v a="$zr" -v b="$best" 'BEGIN { if (b > 0) print a / b }'
  done | median
}
label() {
  case "$1" in
    h1:0) echo "HTTP/1.1 0 B" ;; h1:1024) echo "HTTP/1.1 1 KiB" ;;
    h2c:0) echo "h2c 0 B" ;; h2c:1024) echo "h2c 1 KiB" ;;
    h2tls:1024) echo "h2 over TLS 1 KiB" ;; tlsnew:1024) echo "TLS new conn per request, 1 KiB" ;;
    *) echo "$1" ;;
  esac
}
TABLE=$(
  printf '| row |'; for c in "${CS[@]}"; do printf ' %s req/s |' "$c"; done
  printf ' zgate / best peer | zgate-def / best peer |'
  for c in "${CS[@]}"; do printf ' %s p99 ms |' "$c"; done
  for c in "${CS[@]}"; do printf ' %s CPU µs/req (user + sys) |' "$c"; done
  echo
  printf '|---|'; for _ in $(seq $((3 * ${#CS[@]} + 2))); do printf -- '---:|'; done; echo
  for row in $ROWS; do
    printf '| %s |' "$(label "$row")"
    for c in "${CS[@]}"; do printf ' %.0f |' "$(col "$row.$c" 1)"; done
    printf ' %.2f× | %.2f× |' "$(ratio "$row" zgate)" "$(ratio "$row" zgate-def)"
    for c in "${CS[@]}"; do printf ' %s |' "$(col "$row.$c" 2)"; done
    for c in "${CS[@]}"; do
      printf ' %s (%s + %s) |' "$(col "$row.$c" 3)" "$(col "$row.$c" 4)" "$(col "$row.$c" 5)"
    done
    echo
  done
)
# What 1.1x the best peer's req/s asks of zgate's CPU. With the machine's CPUs busy, req/s is
# their number over the machine's CPU per request (proxy + backend + load generator): 1.1x
# needs zgate's machine CPU per request <= the best peer's / 1.1. What zgate's run spends
# outside zgate (backend, load generator) and in its own kernel time (system calls, TCP) left
# where they are, what remains is the user-space time zgate may spend per request.
NCPU=$(nproc)
# One field of one run: row contender round column.
field() { printf '%s' "${RES[$1.$2]:-}" | awk -v r="$3" -v c="$4" 'NF { n++ } n == r { print $c; exit }'; }
BUDGET=$(
  printf '| row | best peer (rounds) | machine busy: best peer, zgate | machine CPU µs/req: best peer, zgate | outside zgate in its run (backend, load generator) + zgate kernel time, µs/req | zgate user-space µs/req: now, allowed for 1.1× |\n'
  printf '|---|---|---:|---:|---:|---:|\n'
  for row in $ROWS; do
    # Per round: the best peer of that round, and what 1.1x of it allows zgate's run of the
    # same round; each column is then the median over rounds.
    for r in $(seq "$ROUNDS"); do
      best="" bestr=0
      for p in nginx haproxy; do
        v=$(field "$row" "$p" "$r" 1)
        [ -n "$v" ] || continue
        if awk -v a="$v" -v b="$bestr" 'BEGIN { exit !(a > b) }'; then best=$p; bestr=$v; fi
      done
      [ -n "$best" ] || continue
      mb=$(field "$row" "$best" "$r" 6)
      rz=$(field "$row" zgate "$r" 1) pz=$(field "$row" zgate "$r" 3)
      uz=$(field "$row" zgate "$r" 4) kz=$(field "$row" zgate "$r" 5) mz=$(field "$row" zgate "$r" 6)
      [ -n "$mz" ] || continue
      awk -v peer="$best" -v rb="$bestr" -v mb="$mb" -v rz="$rz" -v mz="$mz" -v pz="$pz" \
        -v uz="$uz" -v kz="$kz" -v ncpu="$NCPU" 'BEGIN { fixed = (mz - pz) + kz
          print peer, 100 * rb * mb / 1e6 / ncpu, 100 * rz * mz / 1e6 / ncpu, mb, mz, fixed, uz, mb / 1.1 - fixed }'
    done >"$TMP/budget"
    [ -s "$TMP/budget" ] || continue
    m() { awk -v c="$1" '{ print $c }' "$TMP/budget" | median; }
    peers=$(awk '{ n[$1]++ } END { for (p in n) { printf "%s%s %d", sep, p, n[p]; sep = ", " } }' "$TMP/budget")
    printf '| %s | %s | %.0f%%, %.0f%% | %.1f, %.1f | %.1f | %.1f, %.1f |\n' "$(label "$row")" "$peers" \
      "$(m 2)" "$(m 3)" "$(m 4)" "$(m 5)" "$(m 6)" "$(m 7)" "$(m 8)"
  done
)
RAW=$(for row in $ROWS; do for c in "${CS[@]}"; do
  printf '%s %s: %s\n' "$row" "$c" "$(printf '%s' "${RES[$row.$c]:-}" | awk 'NF' | paste -sd ';' -)"
done; done)
REPORT=$(cat <<EOF
# zgate vs nginx vs HAProxy, reverse proxies in front of the same backend

$TABLE

What 1.1× the best peer asks of zgate's user-space time (per round: the best peer of the round
and zgate's run of the same round; medians over rounds). Meaningful when the machine is busy, as
req/s is then the CPUs over the machine's CPU per request. An allowance at or below zero, or
below what any proxy spends, is out of reach by user-space work alone:

$BUDGET

Peak RSS (VmHWM, all processes of each proxy summed): zgate $((HWM[zgate] / 1024)) MiB (both modes, one process), nginx $((HWM[nginx] / 1024)) MiB, HAProxy $((HWM[haproxy] / 1024)) MiB.

$RESUMPTION

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); zgate commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); nginx $NGINX_VERSION; HAProxy $HAPROXY_VERSION; wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'); $(h2load --version | head -1).
- Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); kernel $(uname -r). Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER.
- Workers: $WORKERS (zgate worker threads = nginx worker_processes = HAProxy nbthread). Backend: \`zgate backend\`, shared; nginx upstream keepalive; HAProxy \`http-reuse always\`. TLS: ECDSA P-256, self-signed at run time.
- Load: h1 = \`wrk -t1 -c$H1_CONNS -d${DURATION}s --latency\`; h2c, h2 TLS = \`h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D $DURATION\`; TLS new connection = wrk as h1 with \`-H "Connection: close"\`.
- Each cell is the median of $ROUNDS runs; the contenders' order rotates each round; a ratio is the median of per-round ratios of zgate's req/s to the best peer's of the same round. "zgate" = limiter disabled, "zgate-def" = the same process in defence. CPU µs/req = proxy utime+stime over the run / requests completed, then the user-space (utime) and kernel (stime) parts, each the median of its own runs (so the parts need not add up exactly to the total's median).
- Command: \`bash bench/proxy-vs-peers.sh\` (env: DURATION=$DURATION ROUNDS=$ROUNDS WORKERS=$WORKERS H1_CONNS=$H1_CONNS H2_CONNS=$H2_CONNS H2_STREAMS=$H2_STREAMS ROWS="$ROWS").

Raw runs (req/s p99_ms cpu_us_per_req user_us_per_req sys_us_per_req machine_us_per_req):
\`\`\`
$RAW
\`\`\`
EOF
)
mkdir -p "$(dirname "$OUT")"
printf '%s\n' "$REPORT" >"$OUT"
printf '%s\n' "$REPORT"
log "written to $OUT"
