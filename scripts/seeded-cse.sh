# Sourced by the measuring scripts (wrk-side-by-side.sh, per-request.sh): a CSE from $BIN on
# $PORT with a fresh store in a temporary directory $D, one AE `app` (originator Cperf), a
# container `c` and $SEED contentInstances; `$D/post.lua`, wrk's contentInstance CREATE.
# Before sourcing, RUN may hold a command to run the CSE under (valgrind ...). After: $PID is the
# CSE (or what runs it), H the request headers for curl and wrk, URL the CSEBase's URL.
D=$(mktemp -d)
printf '[http]\nlisten = "127.0.0.1:%s"\n[storage]\npath = "%s/db"\n' "$PORT" "$D" > "$D/cse.toml"
( cd "$D" && exec ${RUN[@]+"${RUN[@]}"} "$BIN" cse --config "$D/cse.toml" > "$D/cse.log" 2>&1 ) &
PID=$!
for i in $(seq 1 600); do curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
H=(-H 'X-M2M-Origin: Cperf' -H 'X-M2M-RI: p' -H 'X-M2M-RVI: 3')
URL=http://127.0.0.1:$PORT/cse-in
curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=2' -d '{"m2m:ae":{"rn":"app","api":"Nperf","rr":false,"srv":["3"]}}' "$URL"
curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=3' -d '{"m2m:cnt":{"rn":"c"}}' "$URL/app"
for i in $(seq 1 "$SEED"); do curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=4' -d '{"m2m:cin":{"con":"21.5"}}' "$URL/app/c"; done
# SUBS=n: n subscriptions of Cperf to the instances created under `c` (notificationEventType 3),
# notified at a local receiver that answers 2000 (its pid: $RX_PID, stopped with the CSE's $D).
if [ "${SUBS:-0}" -gt 0 ]; then
  RX_PORT=$((PORT + 1))
  python3 - "$RX_PORT" > "$D/rx.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("X-M2M-RSC", "2000")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  RX_PID=$!
  sleep 0.5
  for i in $(seq 1 "$SUBS"); do curl -s -o /dev/null "${H[@]}" -H 'Content-Type: application/json;ty=23' -d "{\"m2m:sub\":{\"rn\":\"s$i\",\"nu\":[\"http://127.0.0.1:$RX_PORT/\"],\"enc\":{\"net\":[3]}}}" "$URL/app/c"; done
fi
cat > "$D/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"m2m:cin":{"con":"21.5"}}'
wrk.headers["X-M2M-Origin"] = "Cperf"
wrk.headers["X-M2M-RI"] = "p"
wrk.headers["X-M2M-RVI"] = "3"
wrk.headers["Content-Type"] = "application/json;ty=4"
LUA
