//! `<semanticDescriptor>` (TS-0004 clause 7.4.34) on a real `m2m cse` over HTTP: descriptors
//! checked in their representation, what is not supported said so, access control and discovery.

mod common;

use common::*;
use serde_json::json;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

const TURTLE: &str =
    "@prefix ex: <http://example.com/> . ex:frontDoor a ex:Lock ; ex:state \"locked\" .";

/// Nested XML entities that would expand to gigabytes.
fn laughs() -> String {
    let mut x = String::from("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY e0 \"ha\">");
    for i in 1..9 {
        x.push_str(&format!(
            "<!ENTITY e{i} \"{}\">",
            format!("&e{};", i - 1).repeat(10)
        ));
    }
    x.push_str(
        "]><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">&e8;</rdf:RDF>",
    );
    x
}

#[test]
fn descriptors_are_checked_stored_and_found() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Csmd", "app", &[]);
    create_cnt(u, "/cse-in/app", &ae, json!({ "rn": "lock" }));
    let smd = |attrs: serde_json::Value| {
        create(u, "/cse-in/app/lock", &ae, 24, json!({ "m2m:smd": attrs }))
    };
    let (rsc, b) = smd(json!({ "rn": "d", "dcrp": 5, "dsp": b64(TURTLE), "vlde": true }));
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:smd"]["ty"], json!(24));
    assert_eq!(
        (b["m2m:smd"]["vlde"].clone(), b["m2m:smd"]["svd"].clone()),
        (json!(false), json!(false)),
        "no semantic validation here: {b}"
    );
    for (attrs, code, why) in [
        (json!({ "dcrp": 1, "dsp": b64(TURTLE) }), 4000, "IRI"),
        (json!({ "dcrp": 5, "dsp": "wrong!" }), 4000, "not base64"),
        (
            json!({ "dcrp": 5, "dsp": b64("ex:a ex:b") }),
            4000,
            "not Turtle",
        ),
        (
            json!({ "dcrp": 4, "dsp": b64(TURTLE) }),
            4000,
            "not RDF/XML",
        ),
        (
            json!({ "dcrp": 6, "dsp": b64("Class: Lock") }),
            5001,
            "Manchester",
        ),
        (json!({ "dcrp": 5 }), 4000, "no descriptor"),
        (
            json!({ "dcrp": 4, "dsp": b64(&laughs()) }),
            4000,
            "entities (billion laughs)",
        ),
    ] {
        assert_eq!(smd(attrs).0, code, "{why}");
    }
    // UPDATE: a new descriptor is checked; SPARQL updates are not supported.
    let path = "/cse-in/app/lock/d";
    let (rsc, _) = update(
        u,
        path,
        &ae,
        json!({ "m2m:smd": { "dsp": b64("<a> <b>") } }),
    );
    assert_eq!(rsc, 4000);
    let soe = "INSERT DATA { <http://example.com/frontDoor> <http://example.com/battery> 80 }";
    let (rsc, _) = update(u, path, &ae, json!({ "m2m:smd": { "soe": soe } }));
    assert_eq!(rsc, 5001);
    let (rsc, _) = update(
        u,
        path,
        &ae,
        json!({ "m2m:smd": { "soe": soe, "dsp": b64(TURTLE) } }),
    );
    assert_eq!(rsc, 4000);
    let (rsc, b) = update(
        u,
        path,
        &ae,
        json!({ "m2m:smd": { "vlde": true, "or": "http://example.com/ontology" } }),
    );
    assert_eq!(
        (rsc, b["m2m:smd"]["vlde"].clone()),
        (2004, json!(false)),
        "{b}"
    );
    // Not under an accessControlPolicy; another AE neither reads nor finds it.
    let acp = create_acp(
        u,
        "/cse-in/app",
        &ae,
        "p",
        vec![],
        vec![acr(&[ae.as_str()], OP_ALL)],
    );
    let (rsc, _) = create(
        u,
        &format!("/{acp}"),
        &ae,
        24,
        json!({ "m2m:smd": { "dcrp": 5, "dsp": b64(TURTLE) } }),
    );
    assert_eq!(rsc, 4108);
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    assert_eq!(retrieve(u, path, &other).0, 4103);
    let (_, b) = get_with_query(u, "/cse-in", &ae, "fu=1&ty=24");
    assert_eq!(b["m2m:uril"], json!(["cse-in/app/lock/d"]), "{b}");
    let (_, b) = get_with_query(u, "/cse-in", &other, "fu=1&ty=24");
    assert_eq!(b["m2m:uril"], json!([]), "{b}");
}
