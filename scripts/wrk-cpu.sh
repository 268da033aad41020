#!/bin/bash
# As scripts/wrk-side-by-side.sh (docs/PERFORMANCE.md), also reporting the CSE's CPU time per
# request (utime + stime from /proc/<pid>/stat, 10 ms ticks) for each wrk phase:
#   scripts/wrk-cpu.sh BINARY LABEL PORT
set -eu
BIN=$1; LABEL=$2; PORT=$3
D=$(mktemp -d)
cat > $D/cse.toml <<CFG
[http]
listen = "127.0.0.1:$PORT"
[storage]
path = "$D/db"
CFG
( cd $D && exec "$BIN" cse --config $D/cse.toml > $D/cse.log 2>&1 ) &
PID=$!
for i in $(seq 1 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:$PORT/ && break; sleep 0.1; done
H=(-H 'X-M2M-Origin: Cperf' -H 'X-M2M-RI: p' -H 'X-M2M-RVI: 3')
curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=2' -d '{"m2m:ae":{"rn":"app","api":"Nperf","rr":false,"srv":["3"]}}' http://127.0.0.1:$PORT/cse-in
curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=3' -d '{"m2m:cnt":{"rn":"c"}}' http://127.0.0.1:$PORT/cse-in/app
for i in $(seq 1 200); do curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=4' -d '{"m2m:cin":{"con":"21.5"}}' http://127.0.0.1:$PORT/cse-in/app/c; done
cat > $D/post.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"m2m:cin":{"con":"21.5"}}'
wrk.headers["X-M2M-Origin"] = "Cperf"
wrk.headers["X-M2M-RI"] = "p"
wrk.headers["X-M2M-RVI"] = "3"
wrk.headers["Content-Type"] = "application/json;ty=4"
LUA
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
c0=$(cpu)
la=$(wrk -t2 -c32 -d5s "${H[@]}" http://127.0.0.1:$PORT/cse-in/app/c/la | awk '/^ *[0-9]+ requests in/{n=$1} /Requests\/sec/{r=$2} END{print r, n}')
c1=$(cpu)
cr=$(wrk -t2 -c32 -d5s -s $D/post.lua http://127.0.0.1:$PORT/cse-in/app/c | awk '/^ *[0-9]+ requests in/{n=$1} /Requests\/sec/{r=$2} END{print r, n}')
c2=$(cpu)
kill $PID; wait $PID 2>/dev/null || true
set -- $la; lar=$1; lan=$2; set -- $cr; crr=$1; crn=$2
echo "$LABEL la $lar /s $(awk -v t=$((c1-c0)) -v n=$lan 'BEGIN{printf "%.1f", t*10000/n}') us-cpu/req | create $crr /s $(awk -v t=$((c2-c1)) -v n=$crn 'BEGIN{printf "%.1f", t*10000/n}') us-cpu/req"
rm -rf $D
