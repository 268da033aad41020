#!/usr/bin/env bash
# Makes what the door-lock example's configurations refer to; safe to run again (keeps what
# exists). Generated files go to ./pki (keys, certificates, keystore) and ./data (databases).
#   ./setup.sh                  # m2m on PATH, else ../../target/release/m2m
#   M2M=/path/to/m2m ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${M2M:-}" ]; then
    if command -v m2m >/dev/null 2>&1; then
        M2M=m2m
    elif [ -x ../../target/release/m2m ]; then
        M2M=../../target/release/m2m
    else
        echo "setup.sh: no m2m on PATH and no ../../target/release/m2m; run 'cargo build --release' or set M2M" >&2
        exit 1
    fi
fi

SP=m2m.example.com
umask 077
mkdir -p pki data/in-cse data/mn-cse data/maf

# The PKI: a CA constrained to the SP domain, also permitting the MAF's domain.
if [ ! -f pki/ca/ca.pem ]; then
    "$M2M" pki ca --out pki/ca --name "door-lock example root" --sp "$SP" --permit-dns keys.example.net
fi
issue() { # NAME KIND ID [--sp SP]
    local name=$1
    shift
    if [ ! -f "pki/$name.pem" ] || [ ! -f "pki/$name.key" ]; then
        "$M2M" pki issue --ca pki/ca --out "pki/$name" --force "$@"
    fi
}
issue in --kind cse --id /id-in --sp "$SP"
issue mn --kind cse --id /mn-cse-123456 --sp "$SP"
issue maf --kind maf --id maf.keys.example.net
issue mef --kind mef --id mef.keys.example.net

# The MN-CSE's encrypted keystore with the two door locks of seeds/000 Table 7.1.2-1.
if [ ! -f pki/mn.keystore ]; then
    if [ -f pki/mn.keyfile ]; then
        "$M2M" keys init --keystore pki/mn.keystore --key-file pki/mn.keyfile
    else
        "$M2M" keys init --keystore pki/mn.keystore --key-file pki/mn.keyfile --create-key-file
    fi
fi
DOORLOCK_KPSA=1a2b3c4d5e6f7a8b "$M2M" keys add-psk --keystore pki/mn.keystore --key-file pki/mn.keyfile \
    --kpsa-id AE123456789012-Lock@in.provider.com --key-env DOORLOCK_KPSA --entity Clock-AE1 --replace
# The guide prints the second lock's AE-ID as Cllock-AE2; kept as printed.
DOORLOCK_KPSA=12345678abcdefab "$M2M" keys add-psk --keystore pki/mn.keystore --key-file pki/mn.keyfile \
    --kpsa-id AE123456789015-Lock@in.provider.com --key-env DOORLOCK_KPSA --entity Cllock-AE2 --replace

# The gateway app's own PSK (the MN-AE, bound to its AE-ID Cgateway-app): a random key, kept in a
# private file for the app.
if [ ! -f pki/gateway-app.kpsa ]; then
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > pki/gateway-app.kpsa
fi
GATEWAY_KPSA=$(cat pki/gateway-app.kpsa) "$M2M" keys add-psk --keystore pki/mn.keystore --key-file pki/mn.keyfile \
    --kpsa-id MNAE-gateway-app@in.provider.com --key-env GATEWAY_KPSA --entity Cgateway-app --replace

# The AEs' keys, each in a private file its configuration names (never in the configuration):
# the locks' Kpsa of Table 7.1.2-1 and the smartphone's factory credential Kpm (mef.toml holds the
# MEF's copy). Example values, published: never use them outside this example.
key_file() { # FILE HEX
    if [ ! -f "$1" ]; then printf '%s\n' "$2" > "$1"; fi
}
key_file pki/front-lock.kpsa 1a2b3c4d5e6f7a8b
key_file pki/back-lock.kpsa 12345678abcdefab
key_file pki/phone.kpm 7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d

# The MAF's storage key: 32 random bytes in hex.
if [ ! -f pki/maf-storage.key ]; then
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > pki/maf-storage.key
fi

# The MEF's storage key, likewise.
if [ ! -f pki/mef-storage.key ]; then
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > pki/mef-storage.key
fi

# Files holding secrets must not be readable by others (the tools refuse them otherwise);
# mef.toml holds the phone's Kpm and comes from git without its mode.
chmod 600 maf.toml mef.toml pki/*.key pki/*.kpsa pki/*.kpm pki/ca/ca.key pki/mn.keyfile pki/mn.keystore
"$M2M" keys list --keystore pki/mn.keystore --key-file pki/mn.keyfile
echo "setup.sh: done (pki/, data/)"
