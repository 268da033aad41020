"""An independent CBOR peer for crates/m2m/tests/serialization.rs: Python's cbor2 encodes a
oneM2M request, urllib sends it over HTTP, cbor2 decodes the answer.

stdin: {"url": ..., "method": ..., "headers": {...}, "content": <JSON value or null>}
stdout: {"status": int, "headers": {lower-case name: value}, "content": <decoded body or null>,
         "cbor": whether the answer was CBOR}
"""
import json
import sys
import urllib.error
import urllib.request

import cbor2

job = json.load(sys.stdin)
data = None if job["content"] is None else cbor2.dumps(job["content"])
req = urllib.request.Request(job["url"], data=data, method=job["method"])
for k, v in job["headers"].items():
    req.add_header(k, v)
try:
    resp = urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    resp = e
body = resp.read()
headers = {k.lower(): v for k, v in resp.headers.items()}
cbor = "cbor" in headers.get("content-type", "")
content = None
if body:
    content = cbor2.loads(body) if cbor else json.loads(body)
json.dump({"status": resp.status, "headers": headers, "content": content, "cbor": cbor}, sys.stdout)
