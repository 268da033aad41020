#!/bin/bash
# What one request costs the CSE, counted rather than timed (docs/PERFORMANCE.md): usage
#   scripts/per-request.sh instructions|syscalls BINARY LABEL PORT la|create
# starts a CSE from BINARY on PORT with a fresh store, seeds one AE, a container and 50
# instances (and with SUBS=n, n subscriptions to the container's new instances, notified at a
# receiver on PORT+1), then runs wrk on `la` (GET) or on contentInstance CREATE (POST) and prints, per
# request the CSE answered:
# - instructions: the user-space instructions the CSE executed (valgrind's callgrind, counting
#   from the first request of the phase to its last; N requests, 2000 by default, from four
#   Python clients on keep-alive connections: a CREATE's cost grows with the write-ahead log, so
#   runs compare at equal N).
#   A count, not a rate: the same binary gives the same figure on a busy machine within 1 %.
#   Callgrind counts each byte of a `rep movsb` copy as an instruction, so large memcpys weigh
#   more than on the processor.
#   With SIM=1 also the simulated cache misses and mispredicted branches (--cache-sim,
#   --branch-sim; I1mr instruction-cache misses, D1mr/D1mw data reads/writes, Bcm conditional
#   and Bim indirect branches mispredicted).
#   With KEEP=dir the callgrind output files stay in dir (`callgrind_annotate dir/cg.out.*`).
# - syscalls: the system calls the CSE made, by kind (perf stat on the syscalls tracepoints;
#   wrk -t2 -c32 for 5 s; needs root or perf_event_paranoid <= 1).
set -eu
MODE=$1; BIN=$2; LABEL=$3; PORT=$4; PHASE=$5
case $MODE in
  instructions) RUN=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.out)
    # SIM=1: also simulated cache misses and branch mispredictions, per request.
    [ "${SIM:-0}" = 1 ] && RUN+=(--cache-sim=yes --branch-sim=yes);;
  syscalls) RUN=();;
  *) echo "mode: instructions or syscalls" >&2; exit 2;;
esac
SEED=50
. "$(dirname "$0")/seeded-cse.sh"
trap 'rm -rf "$D"; [ -n "${RX_PID:-}" ] && kill "$RX_PID" 2>/dev/null; true' EXIT
case $PHASE in
  la) LOAD=("${H[@]}" "$URL/app/c/la");;
  create) LOAD=(-s "$D/post.lua" "$URL/app/c");;
  *) echo "phase: la or create" >&2; exit 2;;
esac
requests() { awk '/^ *[0-9]+ requests in/{print $1}'; }
if [ "$MODE" = instructions ]; then
  callgrind_control -i on "$PID" > /dev/null 2>&1
  # N requests exactly, over four keep-alive connections (wrk stops on time, not on a count).
  n=$(python3 - "$PORT" "$PHASE" "${N:-2000}" <<'PY'
import http.client, sys, threading
port, phase, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
head = {"X-M2M-Origin": "Cperf", "X-M2M-RI": "p", "X-M2M-RVI": "3"}
def client(count):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        if phase == "la":
            c.request("GET", "/cse-in/app/c/la", headers=head)
        else:
            c.request("POST", "/cse-in/app/c", body='{"m2m:cin":{"con":"21.5"}}',
                      headers={**head, "Content-Type": "application/json;ty=4"})
        r = c.getresponse(); r.read()
        assert r.status in (200, 201), r.status
threads = [threading.Thread(target=client, args=(n // 4,)) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(n // 4 * 4)
PY
)
  callgrind_control -d "$PID" > /dev/null 2>&1
  callgrind_control -i off "$PID" > /dev/null 2>&1
  kill "$PID"; wait "$PID" 2>/dev/null || true
  # KEEP=dir: keep callgrind's output there, for callgrind_annotate.
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$D"/cg.out.* "$KEEP"/
  ir=$(cat "$D"/cg.out.* | awk '/^summary:/{s+=$2} END{print s+0}')
  echo "$LABEL $PHASE: $n requests, $(( ir / n )) instructions per request"
  if [ "${SIM:-0}" = 1 ]; then
    # Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim (callgrind's event names)
    cat "$D"/cg.out.* | awk -v n="$n" '/^events:/{for(i=2;i<=NF;i++) e[i]=$i} /^summary:/{for(i=2;i<=NF;i++) t[i]+=$i; k=NF} END{for(i=2;i<=k;i++) printf "  %-5s %.0f\n", e[i], t[i]/n}'
  fi
else
  perf stat -x, -e 'syscalls:sys_enter_*' -p "$PID" -o "$D/perf.txt" &
  PP=$!; sleep 0.3
  n=$(wrk -t2 -c32 -d5s "${LOAD[@]}" | requests)
  kill -INT $PP; wait $PP 2>/dev/null || true
  kill "$PID"; wait "$PID" 2>/dev/null || true
  echo "$LABEL $PHASE: $n requests; system calls per request:"
  awk -F, -v n="$n" '$1+0>0 {sub("syscalls:sys_enter_", "", $3); printf "  %-16s %.2f\n", $3, $1/n}' "$D/perf.txt" | sort -k2 -n -r
  awk -F, -v n="$n" '$1+0>0 {t+=$1} END{printf "  %-16s %.2f\n", "all", t/n}' "$D/perf.txt"
fi
