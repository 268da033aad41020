#!/usr/bin/env python3
"""The independent JOSE peer of jose_interop.rs (Python jwcrypto 1.6).

Reads one JSON object on stdin:
  {"keys": {name: JWK}, "check": [{"name", "kind": "jws"|"jwe"|"nested", "token", "key", "vkey"?}],
   "esprim": {"pairwise_hex", "kid", "ero": receiverESPrimRandObject, "inner"},
   "esdata": {"sign_key", "enc_key", "attrs", "content"}}
Writes {"checked": {name: {"payload", "header"}}, "made": {name: token}, "esprim_session_hex",
"esdata_esct"} on stdout.
Any failure raises, so the Rust side sees a non-zero exit and the traceback.
"""
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

from jwcrypto import jwe, jwk, jws
from jwcrypto.common import json_encode

ALLOWED = ["HS256", "ES256", "dir", "A128KW", "A192KW", "A256KW", "ECDH-ES+A128KW",
           "A128GCM", "A192GCM", "A256GCM"]
LABEL = b"oneM2M HMAC-SHA256 sessionESPrimKey derivation algorithm"


def key(keys, name):
    return jwk.JWK(**keys[name])


def verify_jws(token, k):
    s = jws.JWS()
    s.allowed_algs = ALLOWED
    s.deserialize(token)
    s.verify(k)
    return s.payload, s.jose_header


def decrypt_jwe(token, k):
    e = jwe.JWE()
    e.allowed_algs = ALLOWED
    e.deserialize(token, key=k)
    return e.payload, e.jose_header


def check(keys, item):
    kind = item["kind"]
    if kind == "jws":
        payload, header = verify_jws(item["token"], key(keys, item["key"]))
    elif kind == "jwe":
        payload, header = decrypt_jwe(item["token"], key(keys, item["key"]))
    else:  # nested: a JWS inside a JWE
        inner, outer = decrypt_jwe(item["token"], key(keys, item["key"]))
        assert outer.get("cty") == "JOSE", outer
        payload, header = verify_jws(inner.decode(), key(keys, item["vkey"]))
        header = {"outer": outer, "inner": header}
    return {"payload": payload.decode(), "header": header}


def sign(payload, k, alg):
    s = jws.JWS(payload)
    s.add_signature(k, None, json_encode({"alg": alg, "kid": k.key_id}))
    return s.serialize(compact=True)


def encrypt(payload, k, alg, enc, extra=None):
    h = {"alg": alg, "enc": enc, "kid": k.key_id}
    h.update(extra or {})
    e = jwe.JWE(payload, json_encode(h))
    e.add_recipient(k)
    return e.serialize(compact=True)


def make(keys):
    made = {}
    made["jws-HS256"] = sign(b"from jwcrypto HS256", key(keys, "hs"), "HS256")
    made["jws-ES256"] = sign(b"from jwcrypto ES256", key(keys, "ec-sign"), "ES256")
    for enc, name in [("A128GCM", "dir128"), ("A192GCM", "dir192"), ("A256GCM", "dir256")]:
        made["jwe-dir-" + enc] = encrypt(b"from jwcrypto dir", key(keys, name), "dir", enc)
    made["jwe-A128KW"] = encrypt(b"from jwcrypto A128KW", key(keys, "kw128"), "A128KW", "A128GCM")
    made["jwe-A256KW"] = encrypt(b"from jwcrypto A256KW", key(keys, "kw256"), "A256KW", "A256GCM")
    pub = jwk.JWK(**keys["ec-enc"])
    pub = jwk.JWK(**json.loads(pub.export_public()))
    made["jwe-ECDH-ES+A128KW"] = encrypt(b"from jwcrypto ECDH-ES", pub, "ECDH-ES+A128KW", "A128GCM")
    return made


def esprim(spec):
    """Plays the Originator: its own rand, its own sessionESPrimKey, its own JWE."""
    ero = spec["ero"]
    rv = binascii.unhexlify(ero["esrv"])
    ov = os.urandom(16)
    expiry = (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y%m%dT%H%M%S")
    oro = {"esri": "oupython0001", "esrv": ov.hex(), "esrx": expiry, "esk": 1, "espa": [10]}
    session = hmac.new(binascii.unhexlify(spec["pairwise_hex"]), rv + ov + LABEL, hashlib.sha256).digest()
    cek = jwk.JWK(kty="oct", k=jwk.base64url_encode(session[:16]), kid=spec["kid"])
    token = encrypt(spec["inner"].encode(), cek, "dir", "A128GCM",
                    {"cty": "json", "ori": oro["esri"], "rri": ero["esri"], "oro": oro})
    return token, session.hex()


def esdata(keys, spec):
    """Plays the writing AE: ES256 over the content bound to the resource and stamped with its creation
    time (esct: microseconds since the epoch), then ECDH-ES to the reader with the same binding and time."""
    esct = time.time_ns() // 1000
    signer = key(keys, spec["sign_key"])
    s = jws.JWS(spec["content"].encode())
    s.add_signature(signer, None, json_encode({"alg": "ES256", "kid": signer.key_id, "esda": spec["attrs"],
                                               "esct": esct}))
    inner = s.serialize(compact=True)
    reader = jwk.JWK(**json.loads(key(keys, spec["enc_key"]).export_public()))
    token = encrypt(inner.encode(), reader, "ECDH-ES+A128KW", "A128GCM",
                    {"cty": "JOSE", "esda": spec["attrs"], "esct": esct})
    return token, esct


def main():
    req = json.load(sys.stdin)
    keys = req["keys"]
    out = {"checked": {i["name"]: check(keys, i) for i in req["check"]}, "made": make(keys)}
    out["made"]["esprim"], out["esprim_session_hex"] = esprim(req["esprim"])
    out["made"]["esdata"], out["esdata_esct"] = esdata(keys, req["esdata"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
