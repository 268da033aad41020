#!/usr/bin/env bash
# The door-lock story of seeds/000 and its attacks, with `m2m request` and `m2m ae` only, against
# the processes started from this directory (see README.md): the MEF, the MAF, both CSEs, and
# the AEs front-lock.toml, back-lock.toml and gateway-app.toml. The smartphone (phone.toml) runs
# here in the background as `m2m ae`; its notifications are read from its JSON lines. Each step
# prints the response as one JSON line and stops the script when the status code is not the
# expected one. It creates resources: to play it again, stop the processes, `rm -rf data` and
# start them again.
#   ./story.sh
#   M2M=/path/to/m2m MN_HTTP=... MAF_URL=... MEF_URL=... IN_URL=... ./story.sh
# The URLs default to the configurations' ports; when they differ, the AE configurations name the
# CSEs and key services they use (the script passes its URLs only to the attackers' requests).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${M2M:-}" ]; then
    if command -v m2m >/dev/null 2>&1; then M2M=m2m; else M2M=../../target/release/m2m; fi
fi
IN_URL=${IN_URL:-https://127.0.0.1:8443}
MN_HTTP=${MN_HTTP:-http://127.0.0.1:8081}
MAF_URL=${MAF_URL:-https://127.0.0.1:8445}
MEF_URL=${MEF_URL:-https://127.0.0.1:8446}
# How long the phone may take to be ready, and a notification to arrive (seconds).
WAIT=${WAIT:-30}

# The attackers' factory credentials (rows of mef.toml), in variables so that they stay out of
# the process list. Example keys, published.
export STRANGER_KPM=ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100
export BABYSITTER_KPM=0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000
# One digit off the front lock's Kpsa.
export WRONG_KPSA=1a2b3c4d5e6f7a8c

N=0
LAST=
# step "WHAT" EXPECTED-RSC m2m-request-arguments...
step() {
    local what=$1 want=$2 out rc=0 got
    shift 2
    N=$((N + 1))
    echo "== step $N: $what (expect $want)"
    out=$("$M2M" request --json "$@" 2>/dev/null) || rc=$?
    echo "$out"
    got=$(printf '%s' "$out" | grep -o '"rsc":[0-9]*' | head -n1 | cut -d: -f2 || true)
    if [ "$got" != "$want" ]; then
        echo "story.sh: step $N ($what): expected $want, got ${got:-no response} (exit $rc)" >&2
        exit 1
    fi
    LAST=$out
}
# Requires the last response to contain TEXT.
expect_in_last() {
    if ! printf '%s' "$LAST" | grep -qF -- "$1"; then
        echo "story.sh: step $N: the response does not contain $1" >&2
        exit 1
    fi
}
# An attack on the handshake: no association may open. `m2m request` then answers 5103 (not
# reached) with the TLS alert as the reason, which must be REASON.
handshake_refused() { # "WHAT" REASON m2m-request-arguments...
    local what=$1 reason=$2
    shift 2
    step "ATTACK $what" 5103 "$@"
    expect_in_last "TLS handshake failed: $reason"
}
# Waits until the phone printed a line containing TEXT.
phone_printed() { # TEXT
    local i
    for ((i = 0; i < WAIT * 10; i++)); do
        if grep -qF -- "$1" data/phone.out 2>/dev/null; then return 0; fi
        if ! kill -0 "$PHONE" 2>/dev/null; then
            echo "story.sh: the phone stopped; its log:" >&2
            cat data/phone.log >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "story.sh: the phone did not print $1 within ${WAIT}s; its log:" >&2
    cat data/phone.log >&2
    exit 1
}

# 1. The locks (their own processes) have registered over TLS-PSK and reported LOCKED; each
#    reads its state over its own association.
step "the front lock reads its state" 2000 --ae front-lock.toml --to cse-mn/front-lock/state/la
expect_in_last '"con":"LOCKED"'
step "the back lock reads its state" 2000 --ae back-lock.toml --to cse-mn/back-lock/state/la
expect_in_last '"con":"LOCKED"'

# 2. The smartphone as its own process: it enrols at the MEF on Kpm, obtains Kc from the MAF,
#    associates with the IN-CSE on Kc, registers and subscribes to the front lock's state.
mkdir -p data
"$M2M" ae --config phone.toml > data/phone.out 2> data/phone.log &
PHONE=$!
trap 'kill "$PHONE" 2>/dev/null || true' EXIT
phone_printed '"ready"'
echo "== the phone is ready: $(grep -F '"ready"' data/phone.out)"
grep -qF '"aei":"Cphone"' data/phone.out || { echo "story.sh: the phone is not Cphone" >&2; exit 1; }
grep -qF '"rn":"phone-sub"' data/phone.out || { echo "story.sh: the phone did not subscribe" >&2; exit 1; }

# 3. Requests as the phone (each enrols, gets a Kc and associates anew, as phone.toml says).
step "the phone discovers the locks' state containers through the IN-CSE" 2000 --ae phone.toml \
    --to /mn-cse-123456/cse-mn -q fu=1 -q ty=3
expect_in_last "front-lock/state"
expect_in_last "back-lock/state"
step "the phone unlocks the front door" 2001 --ae phone.toml \
    -X create --to /mn-cse-123456/cse-mn/front-lock/state --ty 4 --body '{"m2m:cin":{"con":"UNLOCKED"}}'
phone_printed '"con":"UNLOCKED"'
echo "== the phone was notified: $(grep -F '"con":"UNLOCKED"' data/phone.out | head -n1)"
step "the phone reads the front door's state" 2000 --ae phone.toml \
    --to /mn-cse-123456/cse-mn/front-lock/state/la
expect_in_last '"con":"UNLOCKED"'
step "the phone locks the front door again" 2001 --ae phone.toml \
    -X create --to /mn-cse-123456/cse-mn/front-lock/state --ty 4 --body '{"m2m:cin":{"con":"LOCKED"}}'
phone_printed '"con":"LOCKED"'

# 4. The attacks of `m2m demo`, each refused.
# Refusals name no policy, rule or other entity; the reasons are in the CSEs' audit logs.
step "ATTACK unlock without a security association (From Clock-AE1, plain HTTP)" 4103 \
    --url "$MN_HTTP" --from Clock-AE1 \
    -X create --to cse-mn/front-lock/state --ty 4 --body '{"m2m:cin":{"con":"UNLOCKED"}}'
expect_in_last "no privilege"
step "ATTACK a local process without a credential acts as the admin (From CAdmin, plain HTTP)" 4106 \
    --url "$MN_HTTP" --from CAdmin -X delete --to cse-mn/front-lock
step "ATTACK the gateway app unlocks the front door (its own TLS-PSK association)" 4103 \
    --ae gateway-app.toml \
    -X create --to cse-mn/front-lock/state --ty 4 --body '{"m2m:cin":{"con":"UNLOCKED"}}'
step "the gateway app reads the front lock's state (its policy grants RETRIEVE)" 2000 \
    --ae gateway-app.toml --to cse-mn/front-lock/state/la
# Under CCM_8, the locks' suite, the MN-CSE drops a Finished that does not decrypt without an
# answer (RFC 6347 clause 4.1.2.7): the lock's handshake never finishes (3 s are plenty: a
# handshake with the right key takes milliseconds).
step "ATTACK wrong PSK for the front lock's KpsaID" 5103 --timeout 3 \
    --ae front-lock.toml --psk-key-env WRONG_KPSA --to cse-mn/front-lock/state/la
expect_in_last "DTLS handshake timed out"
handshake_refused "guessed KpsaID" "tlsv1 alert unknown psk identity" \
    --ae front-lock.toml --psk-identity AE123456789013-Lock@in.provider.com --to cse-mn/front-lock/state/la
step "ATTACK the back lock pretends to be the front lock" 4106 --ae back-lock.toml --from Clock-AE1 \
    -X create --to cse-mn/front-lock/state --ty 4 --body '{"m2m:cin":{"con":"UNLOCKED"}}'
# Two more phones with credentials of their own, enrolled at the MEF like the owner's.
intruder() { # NAME
    echo --url "$IN_URL" --mef-url "$MEF_URL" --mef-fqdn mef.keys.example.net \
        --kpm-id "$1@mef.keys.example.net" --kpm-env "$(echo "$1" | tr a-z A-Z)_KPM" \
        --maf-url "$MAF_URL" --maf-fqdn maf.keys.example.net --target-cse //m2m.example.com/id-in
}
for who in stranger babysitter; do
    # shellcheck disable=SC2046
    step "the $who's phone registers at the IN-CSE" 2001 $(intruder "$who") \
        -X create --to cse-in --from C --ty 2 --body "{\"m2m:ae\":{\"rn\":\"$who\",\"api\":\"Nphone\",\"rr\":false,\"srv\":[\"3\"]}}"
done
# shellcheck disable=SC2046
step "ATTACK an AE no access control policy names reads the front lock" 4103 $(intruder stranger) \
    --from Cstranger --to /mn-cse-123456/cse-mn/front-lock/state/la
# shellcheck disable=SC2046
step "ATTACK the babysitter outside its time window (2001) reads the front lock" 4103 $(intruder babysitter) \
    --from Cbabysitter --to /mn-cse-123456/cse-mn/front-lock/state/la
# The smartphone's expired MAF key is not played here: see README.md.

# 5. The phone stops cleanly on SIGTERM.
kill -TERM "$PHONE"
rc=0
wait "$PHONE" || rc=$?
trap - EXIT
if [ "$rc" != 0 ]; then
    echo "story.sh: the phone exited with $rc on SIGTERM" >&2
    exit 1
fi
echo "story.sh: the story and the attacks played: $N steps as expected"
