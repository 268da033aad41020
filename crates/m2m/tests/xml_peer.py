"""An independent XML peer for crates/m2m/tests/serialization.rs: Python's urllib sends a oneM2M
request whose content the test wrote as XML text, and Python's own XML parser
(xml.etree.ElementTree) reads the answer; or it only parses a document given to it.

stdin: {"url": ..., "method": ..., "headers": {...}, "body": <XML text or null>}
   or: {"parse": <XML text>}
stdout: {"status": int, "headers": {lower-case name: value}, "xml": <tree or null>}
   a tree: {"tag": "m2m:cnt", "attrs": {...}, "text": "...", "children": [tree, ...]}, the
   namespace of a tag written back as the prefix its document declared.
"""
import io
import json
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET


def tree(text):
    prefixes = {}
    for _, (prefix, uri) in ET.iterparse(io.StringIO(text), events=["start-ns"]):
        prefixes[uri] = prefix

    def name(tag):
        if tag.startswith("{"):
            uri, local = tag[1:].split("}", 1)
            return f"{prefixes.get(uri, uri)}:{local}"
        return tag

    def walk(e):
        return {
            "tag": name(e.tag),
            "attrs": dict(e.attrib),
            "text": (e.text or "").strip(),
            "children": [walk(c) for c in e],
        }

    return walk(ET.fromstring(text))


job = json.load(sys.stdin)
if "parse" in job:
    json.dump({"xml": tree(job["parse"])}, sys.stdout)
    sys.exit(0)
data = None if job["body"] is None else job["body"].encode("utf-8")
req = urllib.request.Request(job["url"], data=data, method=job["method"])
for k, v in job["headers"].items():
    req.add_header(k, v)
try:
    resp = urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    resp = e
body = resp.read().decode("utf-8")
headers = {k.lower(): v for k, v in resp.headers.items()}
parsed = tree(body) if body and "xml" in headers.get("content-type", "") else None
json.dump({"status": resp.status, "headers": headers, "xml": parsed}, sys.stdout)
