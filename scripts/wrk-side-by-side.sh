#!/bin/bash
# Side-by-side throughput of one m2m binary with wrk (docs/PERFORMANCE.md): usage
#   scripts/wrk-side-by-side.sh BINARY LABEL PORT
# starts a CSE from BINARY on PORT with a fresh store, seeds one AE, a container and SEED (200)
# instances, checks that `la` answers 200 and a CREATE 201, then runs wrk (2 threads, 32
# connections, 5 s) on `la` (GET) and on contentInstance CREATE (POST), and prints both rates
# (with CPU=1 also the CSE's CPU time per request).
set -eu
BIN=$1; LABEL=$2; PORT=$3
SEED=${SEED:-200}
. "$(dirname "$0")/seeded-cse.sh"
curl -s -o /dev/null -w "check la %{http_code}\n" "${H[@]}" $URL/app/c/la && curl -s -o /dev/null -w "check create %{http_code}\n" "${H[@]}" -H "Content-Type: application/json;ty=4" -d "{\"m2m:cin\":{\"con\":\"1\"}}" $URL/app/c
# With CPU=1, each rate is followed by the CSE's CPU time per request: utime + stime from
# /proc/<pid>/stat (10 ms ticks) around the phase, divided by the requests wrk completed.
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
phase() {
  local c0 out; c0=$(cpu)
  out=$(wrk -t2 -c32 -d5s --latency "$@" | awk '/^ *[0-9]+ requests in/{n=$1} /Requests\/sec/{r=$2} /99%/{p=$2} END{print r" p99 "p" "n}')
  set -- $out
  if [ "${CPU:-0}" = 1 ]; then
    echo "$1 p99 $3 $(awk -v t=$(( $(cpu) - c0 )) -v n=$4 'BEGIN{printf "%.1f", t*10000/n}') us-cpu/req"
  else
    echo "$1 p99 $3"
  fi
}
la=$(phase "${H[@]}" $URL/app/c/la)
cr=$(phase -s $D/post.lua $URL/app/c)
kill $PID; wait $PID 2>/dev/null || true
echo "$LABEL la $la | create $cr"
rm -rf $D
