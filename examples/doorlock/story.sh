#!/usr/bin/env bash
# The door-lock story of seeds/000 with `m2m request` only, against the MAF and the two CSEs
# started from this directory (see README.md). Each step prints the response as JSON and stops
# the script when the status code is not the expected one. It creates resources: to play it
# again, stop the processes, `rm -rf data` and start them again.
#   ./story.sh
#   M2M=/path/to/m2m IN_URL=... MN_URL=... MAF_URL=... MEF_URL=... ./story.sh
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${M2M:-}" ]; then
    if command -v m2m >/dev/null 2>&1; then M2M=m2m; else M2M=../../target/release/m2m; fi
fi
IN_URL=${IN_URL:-https://127.0.0.1:8443}
MN_URL=${MN_URL:-https://127.0.0.1:8444}
MAF_URL=${MAF_URL:-https://127.0.0.1:8445}
MEF_URL=${MEF_URL:-https://127.0.0.1:8446}

# The guide's credentials (Table 7.1.2-1) and the phone's Kpm (mef.toml), passed in variables so
# that they stay out of the process list.
export FRONT_KPSA=1a2b3c4d5e6f7a8b
export BACK_KPSA=12345678abcdefab
export PHONE_KPM=7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d

N=0
LAST=
# step "WHAT" EXPECTED-RSC m2m-request-arguments...
step() {
    local what=$1 want=$2 out rc=0 got
    shift 2
    N=$((N + 1))
    echo "== step $N: $what (expect $want)"
    out=$("$M2M" request --json "$@") || rc=$?
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

# 1. Each lock associates with the home gateway by TLS-PSK (its KpsaID and Kpsa), registers,
#    and publishes its state under an access control policy: itself (every operation, only over
#    its own association) and the smartphone /id-in/Cphone (CREATE, RETRIEVE, DISCOVERY).
lock_story() { # AE-ID KPSA-ID KEY-VARIABLE RESOURCE-NAME
    local ae=$1 id=$2 var=$3 rn=$4 ri
    local tls=(--url "$MN_URL" --psk-identity "$id" --psk-key-env "$var")
    step "$rn registers at the MN-CSE over TLS-PSK ($id)" 2001 "${tls[@]}" \
        -X create --to cse-mn --from C --ty 2 \
        --body "{\"m2m:ae\":{\"rn\":\"$rn\",\"api\":\"Ndoorlock\",\"rr\":false,\"srv\":[\"3\"]}}"
    expect_in_last "\"aei\":\"$ae\""
    step "$rn creates the ACP of its state" 2001 "${tls[@]}" \
        -X create --to "cse-mn/$rn" --from "$ae" --ty 1 \
        --body "{\"m2m:acp\":{\"rn\":\"state-acp\",\"pv\":{\"acr\":[{\"acor\":[\"$ae\"],\"acop\":63,\"acaf\":true},{\"acor\":[\"/id-in/Cphone\"],\"acop\":35}]},\"pvs\":{\"acr\":[{\"acor\":[\"$ae\"],\"acop\":63}]}}}"
    ri=$(printf '%s' "$LAST" | grep -o '"ri":"[^"]*"' | head -n1 | cut -d'"' -f4)
    step "$rn creates its state container under that ACP ($ri)" 2001 "${tls[@]}" \
        -X create --to "cse-mn/$rn" --from "$ae" --ty 3 \
        --body "{\"m2m:cnt\":{\"rn\":\"state\",\"acpi\":[\"$ri\"]}}"
    step "$rn reports LOCKED" 2001 "${tls[@]}" \
        -X create --to "cse-mn/$rn/state" --from "$ae" --ty 4 \
        --body '{"m2m:cin":{"con":"LOCKED"}}'
}
lock_story Clock-AE1 AE123456789012-Lock@in.provider.com FRONT_KPSA front-lock
lock_story Cllock-AE2 AE123456789015-Lock@in.provider.com BACK_KPSA back-lock

# 2. The smartphone: each request enrols at the MEF on Kpm (Km derived from the enrolment key),
#    obtains a connection key Kc for the IN-CSE from the MAF (TLS-PSK on Km; the MAF fetches Km
#    from the MEF), then opens TLS-PSK with the IN-CSE using Kc (the IN-CSE fetches Kc from the MAF).
phone=(--url "$IN_URL" --mef-url "$MEF_URL" --mef-fqdn mef.keys.example.net
    --kpm-id phone@mef.keys.example.net --kpm-env PHONE_KPM
    --maf-url "$MAF_URL" --maf-fqdn maf.keys.example.net --target-cse //m2m.example.com/id-in)
step "the phone enrols at the MEF, gets Kc from the MAF, registers at the IN-CSE" 2001 "${phone[@]}" \
    -X create --to cse-in --from C --ty 2 \
    --body '{"m2m:ae":{"rn":"phone","api":"Nphone","rr":false,"srv":["3"]}}'
expect_in_last '"aei":"Cphone"'
step "the phone discovers the locks' state containers through the IN-CSE" 2000 "${phone[@]}" \
    --to /mn-cse-123456/cse-mn --from Cphone -q fu=1 -q ty=3
expect_in_last "front-lock/state"
expect_in_last "back-lock/state"
step "the phone unlocks the front door" 2001 "${phone[@]}" \
    -X create --to /mn-cse-123456/cse-mn/front-lock/state --from Cphone --ty 4 \
    --body '{"m2m:cin":{"con":"UNLOCKED"}}'
step "the phone reads the front door's state" 2000 "${phone[@]}" \
    --to /mn-cse-123456/cse-mn/front-lock/state/la --from Cphone
expect_in_last '"con":"UNLOCKED"'
echo "story.sh: the story played: $N steps as expected"
