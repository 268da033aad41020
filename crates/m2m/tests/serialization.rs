//! Content serializations (TS-0004 clauses 8.4, 8.5; TS-0009 clause 6.4.3) on a real `m2m cse`
//! over HTTP: requests and responses in CBOR with an independent CBOR implementation (Python
//! cbor2, tests/cbor_peer.py), notifications in CBOR where the target asks for it (`ct=cbor` in
//! a notificationURI, an AE's contentSerialization), and what is refused.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cbor_peer.py");
const XML_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xml_peer.py");

fn have_cbor2() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cbor2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 with cbor2 is not installed, and CI=true: .ci/run must install it");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!! SKIPPED: python3 + cbor2 are not installed (pip install cbor2); the CBOR \
             interoperability test needs them. In CI it is mandatory. !!!!!!!!!!\n"
        );
    }
    ok
}

/// One request through the Python peer: (HTTP status, headers, decoded content, was CBOR).
fn cbor2_request(url: &str, method: &str, headers: Value, content: Value) -> Value {
    let mut child = Command::new("python3")
        .arg(PEER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let job = json!({ "url": url, "method": method, "headers": headers, "content": content });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn requests_and_responses_in_cbor_with_an_independent_peer() {
    if !have_cbor2() {
        return;
    }
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Ccbor", "app", &[]);
    let headers = |ct: &str| {
        json!({ "X-M2M-Origin": ae, "X-M2M-RI": "cbor-1", "X-M2M-RVI": "3",
                "Content-Type": ct, "Accept": "application/cbor" })
    };
    // CREATE in CBOR, answered in CBOR.
    let r = cbor2_request(
        &format!("{}/cse-in/app", cse.url()),
        "POST",
        headers("application/cbor;ty=3"),
        json!({ "m2m:cnt": { "rn": "c", "lbl": ["cbor"], "mni": 5 } }),
    );
    assert_eq!(r["headers"]["x-m2m-rsc"], json!("2001"), "{r}");
    assert_eq!(r["cbor"], json!(true), "{r}");
    assert_eq!(r["content"]["m2m:cnt"]["mni"], json!(5), "{r}");
    // The oneM2M media type, and an instance read back in JSON: the same content.
    let r = cbor2_request(
        &format!("{}/cse-in/app/c", cse.url()),
        "POST",
        headers("application/vnd.onem2m-res+cbor; ty=4"),
        json!({ "m2m:cin": { "con": "21.5", "cnf": "text/plain:0" } }),
    );
    assert_eq!(r["headers"]["x-m2m-rsc"], json!("2001"), "{r}");
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/c/la", &ae);
    assert_eq!((rsc, b["m2m:cin"]["con"].clone()), (2000, json!("21.5")));
    // A RETRIEVE that accepts CBOR gets CBOR; without Accept, JSON.
    let r = cbor2_request(
        &format!("{}/cse-in/app/c/la", cse.url()),
        "GET",
        json!({ "X-M2M-Origin": ae, "X-M2M-RI": "cbor-2", "X-M2M-RVI": "3", "Accept": "application/cbor" }),
        Value::Null,
    );
    assert_eq!(
        (r["cbor"].clone(), r["content"]["m2m:cin"]["con"].clone()),
        (json!(true), json!("21.5")),
        "{r}"
    );
    let r = get_with_query_full(cse.url(), "/cse-in/app/c/la", &ae, "rcn=1");
    assert!(r.header("content-type").is_some_and(|c| c.contains("json")));
}

#[test]
fn notifications_take_the_serialization_their_target_asks_for() {
    let cse = CseProcess::start_in();
    let rx = Receiver::start();
    let ae = register_ae(cse.url(), "/cse-in", "Cnotified", "app", &[]);
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    // `ct=cbor` in a URL target: CBOR, and the key is not sent.
    let nu = format!("{}/n?ct=cbor", rx.url());
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/app/c",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [nu], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(cse.url(), "/cse-in/app/c", &ae, "x");
    let n = rx.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(
        n.headers.get("content-type").map(String::as_str),
        Some("application/cbor"),
        "{:?}",
        n.headers
    );
    assert_eq!(n.path, "/n", "the ct key is not sent");
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("x"), "{:?}", n.body);
    // An AE whose contentSerialization prefers CBOR gets its notifications in CBOR.
    let rx2 = Receiver::start();
    let (rsc, b) = create(
        cse.url(),
        "/cse-in",
        "Cprefers",
        2,
        json!({ "m2m:ae": { "rn": "prefers", "api": "Nx", "rr": true, "srv": ["3"],
                "poa": [rx2.url()], "csz": ["application/cbor", "application/json"] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/app/c",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "s2", "nu": ["Cprefers"], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(cse.url(), "/cse-in/app/c", &ae, "y");
    let n = rx2.wait_for(|r| r.net() == Some(3), WAIT);
    assert_eq!(
        n.headers.get("content-type").map(String::as_str),
        Some("application/cbor")
    );
    assert_eq!(n.rep()["m2m:cin"]["con"], json!("y"));
}

#[test]
fn other_serializations_and_broken_content_are_refused() {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cbroken", "app", &[]);
    let post = |ct: &str, body: &[u8]| {
        raw(
            "POST",
            cse.url(),
            "/cse-in/app",
            &[
                ("X-M2M-Origin", ae.as_str()),
                ("X-M2M-RI", "bad"),
                ("X-M2M-RVI", "3"),
                ("Content-Type", ct),
            ],
            body,
        )
    };
    assert_eq!(
        post("application/cbor;ty=3", b"\xff\x00").rsc,
        4000,
        "malformed CBOR"
    );
    assert_eq!(
        post("application/cbor;ty=3", br#"{"m2m:cnt":{}}"#).rsc,
        4000,
        "JSON sent as CBOR"
    );
    assert_eq!(post("text/plain;ty=3", b"cnt").rsc, 4015);
    assert_eq!(post("application/yaml;ty=3", b"m2m:cnt: {}").rsc, 4015);
    assert_eq!(
        post("application/xml;ty=3", b"<m2m:cnt><mni>5</m2m:cnt>").rsc,
        4000,
        "malformed XML"
    );
    let laughs = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><m2m:cnt><lbl>&b;</lbl></m2m:cnt>"#;
    assert_eq!(post("application/xml;ty=3", laughs).rsc, 4000, "a DTD");
    assert_eq!(
        post("application/xml;ty=3", br#"{"m2m:cnt":{}}"#).rsc,
        4000,
        "JSON sent as XML"
    );
}

/// Content nested deeper than the store reads back is refused at the door, in CBOR and JSON,
/// and the container stays readable.
#[test]
fn deeply_nested_content_is_refused() {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cdeep", "app", &[]);
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    let mut con = json!(0);
    for _ in 0..200 {
        con = json!([con]);
    }
    let body = json!({ "m2m:cin": { "con": con } });
    for (ct, bytes) in [
        (
            "application/cbor;ty=4",
            m2m_core::serialization::Serialization::Cbor
                .encode(&body)
                .unwrap(),
        ),
        ("application/json;ty=4", body.to_string().into_bytes()),
    ] {
        let r = raw(
            "POST",
            cse.url(),
            "/cse-in/app/c",
            &[
                ("X-M2M-Origin", ae.as_str()),
                ("X-M2M-RI", "deep"),
                ("X-M2M-RVI", "3"),
                ("Content-Type", ct),
            ],
            &bytes,
        );
        assert_eq!(r.rsc, 4000, "{ct}: {:?}", r.body);
    }
    create_cin(cse.url(), "/cse-in/app/c", &ae, "fine");
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/c/la", &ae);
    assert_eq!((rsc, b["m2m:cin"]["con"].clone()), (2000, json!("fine")));
}

/// One request through the Python XML peer (urllib, xml.etree): (status, headers, parsed answer).
fn xml_request(url: &str, method: &str, headers: Value, body: Option<&str>) -> Value {
    xml_peer(json!({ "url": url, "method": method, "headers": headers, "body": body }))
}

fn xml_peer(job: Value) -> Value {
    let mut child = Command::new("python3")
        .arg(XML_PEER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write the job");
    let out = child.wait_with_output().expect("the peer ends");
    assert!(out.status.success(), "the XML peer failed: {job}");
    serde_json::from_slice(&out.stdout).expect("the peer answers JSON")
}

/// The text of the child element `tag` of a parsed tree.
fn child_text<'a>(tree: &'a Value, tag: &str) -> Option<&'a str> {
    tree["children"]
        .as_array()?
        .iter()
        .find(|c| c["tag"] == tag)
        .and_then(|c| c["text"].as_str())
}

#[test]
fn xml_requests_and_answers_with_an_independent_parser() {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cxml", "app", &[]);
    let headers = |ty: Option<u16>, accept: &str| {
        let ct = match ty {
            Some(t) => format!("application/xml;ty={t}"),
            None => "application/xml".to_owned(),
        };
        json!({ "X-M2M-Origin": ae, "X-M2M-RI": "x1", "X-M2M-RVI": "3",
                "Content-Type": ct, "Accept": accept })
    };
    let url = |path: &str| format!("{}{path}", cse.url());
    // A container created in XML, answered in XML that Python's parser reads.
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
        <m2m:cnt xmlns:m2m="http://www.onem2m.org/xml/protocols" rn="box">
            <mni>5</mni><lbl>kitchen hall</lbl><mbs>100</mbs>
        </m2m:cnt>"#;
    let r = xml_request(
        &url("/cse-in/app"),
        "POST",
        headers(Some(3), "application/xml"),
        Some(body),
    );
    assert_eq!(
        (r["status"].as_u64(), r["headers"]["x-m2m-rsc"].as_str()),
        (Some(201), Some("2001")),
        "{r}"
    );
    assert!(
        r["headers"]["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/xml")),
        "{r}"
    );
    let cnt = &r["xml"];
    assert_eq!(
        (cnt["tag"].as_str(), cnt["attrs"]["rn"].as_str()),
        (Some("m2m:cnt"), Some("box")),
        "{r}"
    );
    assert_eq!(child_text(cnt, "mni"), Some("5"));
    assert_eq!(child_text(cnt, "lbl"), Some("kitchen hall"));
    assert_eq!(child_text(cnt, "ty"), Some("3"));
    // Stored with its types: the same container in JSON.
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/box", &ae);
    assert_eq!(rsc, 2000);
    assert_eq!(
        (&b["m2m:cnt"]["mni"], &b["m2m:cnt"]["lbl"]),
        (&json!(5), &json!(["kitchen", "hall"])),
        "{b}"
    );
    // A contentInstance in XML, with characters XML escapes; read back under the oneM2M type.
    let r = xml_request(
        &url("/cse-in/app/box"),
        "POST",
        headers(Some(4), "application/xml"),
        Some(
            r#"<m2m:cin xmlns:m2m="http://www.onem2m.org/xml/protocols"><cnf>text/plain:0</cnf><con>a &lt; b &amp; "c"</con></m2m:cin>"#,
        ),
    );
    assert_eq!(r["headers"]["x-m2m-rsc"].as_str(), Some("2001"), "{r}");
    let r = xml_request(
        &url("/cse-in/app/box/la"),
        "GET",
        headers(None, "application/vnd.onem2m-res+xml"),
        None,
    );
    assert_eq!(r["status"].as_u64(), Some(200), "{r}");
    assert_eq!(child_text(&r["xml"], "con"), Some(r#"a < b & "c""#), "{r}");
    // An empty element removes the attribute (TS-0004 clause 8.3.1).
    let r = xml_request(
        &url("/cse-in/app/box"),
        "PUT",
        headers(None, "application/xml"),
        Some(r#"<m2m:cnt xmlns:m2m="http://www.onem2m.org/xml/protocols"><mbs/></m2m:cnt>"#),
    );
    assert_eq!(r["headers"]["x-m2m-rsc"].as_str(), Some("2004"), "{r}");
    let (_, b) = retrieve(cse.url(), "/cse-in/app/box", &ae);
    assert!(b["m2m:cnt"].get("mbs").is_none(), "{b}");
    // Errors come in XML too: the reason under m2m:dbg.
    let r = xml_request(
        &url("/cse-in/app/box"),
        "PUT",
        headers(None, "application/xml"),
        Some(
            r#"<m2m:cnt xmlns:m2m="http://www.onem2m.org/xml/protocols"><mni>many</mni></m2m:cnt>"#,
        ),
    );
    assert_eq!(r["headers"]["x-m2m-rsc"].as_str(), Some("4000"), "{r}");
    assert_eq!(r["xml"]["tag"].as_str(), Some("m2m:dbg"), "{r}");
    // A discovery answer: the list of addresses in one element.
    let r = xml_request(
        &url("/cse-in/app?fu=1&ty=3"),
        "GET",
        headers(None, "application/xml"),
        None,
    );
    assert_eq!(
        (r["xml"]["tag"].as_str(), r["xml"]["text"].as_str()),
        (Some("m2m:uril"), Some("cse-in/app/box")),
        "{r}"
    );

    // A notification target that asks for XML gets it.
    let rx = Receiver::start();
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/app/box",
        &ae,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [format!("{}/n?ct=xml", rx.url())], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    create_cin(cse.url(), "/cse-in/app/box", &ae, "notified");
    let n = rx.wait_for(
        |r| r.body.as_str().is_some_and(|t| t.contains("notified")),
        WAIT,
    );
    assert_eq!(
        n.headers.get("content-type").map(String::as_str),
        Some("application/xml")
    );
    let sgn = xml_peer(json!({ "parse": n.body.as_str().expect("XML text") }))["xml"].clone();
    assert_eq!(sgn["tag"].as_str(), Some("m2m:sgn"), "{sgn}");
    let nev = sgn["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tag"] == "nev")
        .expect("nev")
        .clone();
    let rep = nev["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tag"] == "rep")
        .expect("rep")
        .clone();
    let cin = &rep["children"][0];
    assert_eq!(
        (cin["tag"].as_str(), child_text(cin, "con")),
        (Some("m2m:cin"), Some("notified")),
        "{sgn}"
    );
    assert_eq!(child_text(&nev, "net"), Some("3"));
}
