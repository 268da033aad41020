#!/usr/bin/env bash
# The CSE's `la` retrieve next to nginx serving the same body as a static file, both measured by
# the same wrk command in one run, alternating CSE, nginx, CSE, nginx; then contentInstance
# creates by wrk (no nginx equivalent). A neutral load generator for docs/PERFORMANCE.md (issue 12).
#
# Builds nothing. Usage:
#   scripts/wrk-vs-nginx.sh [M2M_BINARY]          (default: target/release/m2m)
# Environment:
#   DURATION=10     seconds of each wrk run
#   THREADS=2 CONNECTIONS=32   wrk -t / -c
#   NGINX_WORKERS=2 nginx worker_processes (the CSE runs one async worker per core: 2 here)
#   FILL=N or CxN   first store N contentInstances (or N in each of C containers) through
#                   `m2m bench --url ... --fill FILL --phases none --keep`
#   CSE_PORT, NGINX_PORT  first port tried for each (default 18080, CSE_PORT+1); the first free
#                   one from there is used
# Needs wrk (apt-get install wrk), nginx (apt-get install nginx-light) and curl; exits 2 when
# one is missing.
set -euo pipefail

M2M=${1:-target/release/m2m}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
NGINX_WORKERS=${NGINX_WORKERS:-2}
FILL=${FILL:-}

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$0: '$1' is not installed: apt-get install $2" >&2
    exit 2
  fi
}
need wrk wrk
need nginx nginx-light
need curl curl
if [ ! -x "$M2M" ]; then
  echo "$0: no m2m binary at '$M2M' (build it: cargo build --release -p m2m)" >&2
  exit 2
fi
M2M=$(cd "$(dirname "$M2M")" && pwd)/$(basename "$M2M")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wrk-vs-nginx.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "$0: $*" >&2
  for log in "$TMP/cse.log" "$TMP/nginx-error.log"; do
    if [ -s "$log" ]; then
      echo "--- tail of $(basename "$log"):" >&2
      tail -n 20 "$log" >&2
    fi
  done
  exit 1
}

# The first port from $1 on that nothing listens on.
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
    p=$((p + 1))
  done
  echo "$p"
}

# --- the CSE ------------------------------------------------------------------------------
CSE_PORT=$(free_port "${CSE_PORT:-18080}")
CSE="http://127.0.0.1:$CSE_PORT"
cat >"$TMP/cse.toml" <<TOML
[cse]
role = "IN"
[http]
listen = "127.0.0.1:$CSE_PORT"
[storage]
path = "$TMP/data"
TOML
"$M2M" cse --config "$TMP/cse.toml" >"$TMP/cse.out" 2>"$TMP/cse.log" &
PIDS+=("$!")
CSE_PID=$!
for _ in $(seq 300); do
  grep -q "^m2m-cse listening http://" "$TMP/cse.out" 2>/dev/null && break
  kill -0 "$CSE_PID" 2>/dev/null || fail "the CSE exited"
  sleep 0.1
done
grep -q "^m2m-cse listening http://" "$TMP/cse.out" || fail "the CSE did not listen within 30 s"

# oneM2M HTTP binding (TS-0009): From, request id and release version in headers.
onem2m() { # METHOD PATH FROM [TY BODY]: prints the body, fails unless X-M2M-RSC is 2xxx
  local method=$1 path=$2 from=$3 args=()
  if [ $# -ge 5 ]; then
    args=(-H "Content-Type: application/json;ty=$4" -d "$5")
  fi
  local out
  out=$(curl -sS -D "$TMP/headers" -X "$method" "$CSE$path" \
    -H "X-M2M-Origin: $from" -H "X-M2M-RI: setup-$RANDOM" -H "X-M2M-RVI: 3" "${args[@]}") ||
    fail "$method $path: curl failed"
  grep -qi '^X-M2M-RSC: 2' "$TMP/headers" || fail "$method $path: $(grep -i '^X-M2M-RSC' "$TMP/headers") $out"
  printf '%s' "$out"
}
AE_RSP=$(onem2m POST /cse-in Cwrk 2 '{"m2m:ae":{"rn":"wrk","api":"Nwrk","rr":false,"srv":["3"]}}')
AEI=$(printf '%s' "$AE_RSP" | sed -n 's/.*"aei" *: *"\([^"]*\)".*/\1/p')
[ -n "$AEI" ] || fail "no aei in the AE registration answer: $AE_RSP"
onem2m POST /cse-in/wrk "$AEI" 3 '{"m2m:cnt":{"rn":"cnt"}}' >/dev/null
onem2m POST /cse-in/wrk "$AEI" 3 '{"m2m:cnt":{"rn":"created"}}' >/dev/null
onem2m POST /cse-in/wrk/cnt "$AEI" 4 '{"m2m:cin":{"cnf":"text/plain:0","con":"wrk payload 0123456789"}}' >/dev/null

if [ -n "$FILL" ]; then
  echo "filling $FILL contentInstances: $M2M bench --url $CSE --fill $FILL --phases none --keep" >&2
  "$M2M" bench --url "$CSE" --fill "$FILL" --phases none --keep >&2
fi

# --- nginx serving the la answer ----------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/nginx"
onem2m GET /cse-in/wrk/cnt/la "$AEI" >"$TMP/www/la.json"
# nginx's workers may run as another user: they must read the file.
chmod 0755 "$TMP" "$TMP/www"
chmod 0644 "$TMP/www/la.json"
NGINX_PORT=$(free_port "${NGINX_PORT:-$((CSE_PORT + 1))}")
TEMP_PATHS="client_body_temp_path $TMP/nginx/body; proxy_temp_path $TMP/nginx/proxy;"
for m in fastcgi scgi uwsgi; do
  if ! nginx -V 2>&1 | grep -q -- "--without-http_${m}_module"; then
    TEMP_PATHS="$TEMP_PATHS ${m}_temp_path $TMP/nginx/$m;"
  fi
done
cat >"$TMP/nginx.conf" <<CONF
worker_processes $NGINX_WORKERS;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  $TEMP_PATHS
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $TMP/www;
    location = /la.json { default_type application/json; }
  }
}
CONF
nginx -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" -p "$TMP/nginx" &
PIDS+=("$!")
NGINX_PID=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/la.json" && break
  kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited"
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/la.json" || fail "nginx does not serve /la.json"

# --- the runs -----------------------------------------------------------------------------
# The same headers go to both servers, so that the requests have the same size.
HDRS=(-H "X-M2M-Origin: $AEI" -H "X-M2M-RI: wrk" -H "X-M2M-RVI: 3")
WRK=(wrk "-t$THREADS" "-c$CONNECTIONS" "-d${DURATION}s" --latency)

cat >"$TMP/create.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"m2m:cin":{"cnf":"text/plain:0","con":"wrk payload 0123456789"}}'
wrk.headers["Content-Type"] = "application/json;ty=4"
LUA

# Runs wrk with "$@" and sets RESULT to "req/s p50_ms p99_ms errors requests" (errors: non-2xx/3xx
# answers and socket errors). wrk runs in the background so that a signal ends the wait at once
# (and the EXIT trap stops wrk too).
RESULT=
measure() {
  local out
  out=$(mktemp "$TMP/wrk.XXXXXX")
  echo "+ $(printf '%q ' "${WRK[@]}" "$@")" >&2
  "${WRK[@]}" "$@" >"$out" &
  PIDS+=("$!")
  wait "$!" || fail "wrk failed: $(cat "$out")"
  RESULT=$(awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /s$/) return v * 1000
      if (v ~ /m$/) return v * 60000
      return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { n = $1 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
    END {
      if (rps == "") exit 1
      printf "%s %.3f %.3f %d %d\n", rps, p50, p99, errors, n
    }
  ' "$out") || fail "no Requests/sec in the output of wrk: $(cat "$out")"
}

LA_URL="$CSE/cse-in/wrk/cnt/la"
STATIC_URL="http://127.0.0.1:$NGINX_PORT/la.json"
ROWS=()
for pair in 1 2; do
  measure "${HDRS[@]}" "$LA_URL"
  read -r c_rps c_p50 c_p99 c_err _ <<<"$RESULT"
  measure "${HDRS[@]}" "$STATIC_URL"
  read -r n_rps n_p50 n_p99 n_err _ <<<"$RESULT"
  ratio=$(awk -v a="$c_rps" -v b="$n_rps" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
  ROWS+=("la $pair|CSE la|$c_rps|$c_p50|$c_p99|$c_err|")
  ROWS+=("la $pair|nginx static|$n_rps|$n_p50|$n_p99|$n_err|$ratio")
done
measure "${HDRS[@]}" -s "$TMP/create.lua" "$CSE/cse-in/wrk/created"
read -r k_rps k_p50 k_p99 k_err k_n <<<"$RESULT"
CNI=$(onem2m GET /cse-in/wrk/created "$AEI" | sed -n 's/.*"cni" *: *\([0-9]*\).*/\1/p')
ROWS+=("create|CSE cin create|$k_rps|$k_p50|$k_p99|$k_err|")

echo
echo "m2m: $("$M2M" --version); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $(nginx -v 2>&1 | sed 's/.*: //');" \
  "$(nproc) cores; la body $(wc -c <"$TMP/www/la.json") bytes${FILL:+; filled $FILL}"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency (same headers to both)"
printf '%-7s %-15s %10s %8s %8s %7s %10s\n' run server req/s "p50 ms" "p99 ms" errors CSE/nginx
for row in "${ROWS[@]}"; do
  IFS='|' read -r run server rps p50 p99 err ratio <<<"$row"
  printf '%-7s %-15s %10.0f %8.3f %8.3f %7d %10s\n' "$run" "$server" "$rps" "$p50" "$p99" "$err" "$ratio"
done
echo "the container of the create run holds ${CNI:-?} contentInstances; wrk counted $k_n answers"
