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
    // Its owner reads it back whole and deletes it; the other AE could not.
    let (rsc, b) = retrieve(u, path, &ae);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:smd"]["dcrp"], json!(5), "{b}");
    assert!(b["m2m:smd"]["dsp"].is_string(), "{b}");
    assert_eq!(delete(u, path, &other).0, 4103);
    assert_eq!(delete(u, path, &ae).0, 2002);
    assert_eq!(retrieve(u, path, &ae).0, 4004);
}

const HOME: &str = "@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .
@prefix ex: <http://example.com/> .
ex:frontDoor a m2m:Device ; ex:battery 81 ; ex:room \"hall\" .
ex:unlock a m2m:Operation ; m2m:oneM2MTargetURI \"/id-in/cse-in/app/front/cmd\" ; m2m:oneM2MMethod \"CREATE\" .";
const GARAGE: &str =
    "@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .
@prefix ex: <http://example.com/> .
ex:garageDoor a m2m:Device ; ex:battery 12 ; ex:room \"garage\" .";
const SECRET: &str =
    "@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .
@prefix ex: <http://example.com/> .
ex:safe a m2m:Device ; ex:battery 5 .";
const PREFIXES: &str = "PREFIX m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> PREFIX ex: <http://example.com/> ";

fn query_text(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Semantic query (TS-0004 clause 7.3.3.19, `sqi`) over the descriptors below the target the
/// originator may read, and semantic discovery (clause 7.3.3.18, `smf` with `fu=1`): the
/// resources whose descriptors match; SPARQL that is none is 4143, SPARQL not evaluated 5001.
#[test]
fn semantic_queries_and_discovery_read_the_descriptors_one_may_read() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Csem", "app", &[]);
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    for (parent, rn, text) in [("front", "d1", HOME), ("garage", "d2", GARAGE)] {
        create_cnt(u, "/cse-in/app", &ae, json!({ "rn": parent }));
        let (rsc, b) = create(
            u,
            &format!("/cse-in/app/{parent}"),
            &ae,
            24,
            json!({ "m2m:smd": { "rn": rn, "dcrp": 5, "dsp": b64(text) } }),
        );
        assert_eq!(rsc, 2001, "{b}");
    }
    // Another AE's descriptor, which Csem may not read.
    create_cnt(u, "/cse-in/other", &other, json!({ "rn": "vault" }));
    let (rsc, b) = create(
        u,
        "/cse-in/other/vault",
        &other,
        24,
        json!({ "m2m:smd": { "rn": "d3", "dcrp": 5, "dsp": b64(SECRET) } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let devices = format!("{PREFIXES}SELECT ?d ?b WHERE {{ ?d a m2m:Device ; ex:battery ?b }}");
    let ask = |to: &str, from: &str, extra: &str, q: &str| {
        get_with_query(u, to, from, &format!("{extra}smf={}", query_text(q)))
    };
    let (rsc, b) = ask("/cse-in", "CAdmin", "sqi=true&rcn=10&", &devices);
    assert_eq!(rsc, 2000, "{b}");
    let results: serde_json::Value =
        serde_json::from_str(b["m2m:qres"].as_str().expect("qres is text")).unwrap();
    assert_eq!(results["head"]["vars"], json!(["d", "b"]));
    assert_eq!(
        results["results"]["bindings"].as_array().map(Vec::len),
        Some(3),
        "{results}"
    );
    // Csem queries its own tree, and the whole CSE: the vault's descriptor is never in scope.
    for to in ["/cse-in/app", "/cse-in"] {
        let (rsc, b) = ask(to, &ae, "sqi=true&", &devices);
        assert_eq!(rsc, 2000, "{to}: {b}");
        let text = b["m2m:qres"].as_str().unwrap();
        assert!(
            text.contains("frontDoor") && text.contains("garageDoor"),
            "{text}"
        );
        assert!(!text.contains("safe"), "another AE's descriptor: {text}");
    }
    // An XML response carries the results in the SPARQL XML results format (TS-0004 clause
    // 7.3.3.19), the same solutions.
    let r = raw(
        "GET",
        u,
        &format!("/cse-in/app?sqi=true&smf={}", query_text(&devices)),
        &[
            ("X-M2M-Origin", &ae),
            ("X-M2M-RI", "xml-1"),
            ("X-M2M-RVI", "3"),
            ("Accept", "application/xml"),
        ],
        b"",
    );
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/xml")),
        "{:?}",
        r.headers
    );
    let doc = m2m_core::xml::decode(r.body.as_str().expect("an XML text").as_bytes())
        .expect("the response is XML");
    let results = doc["m2m:qres"].as_str().expect("qres is text");
    assert!(
        results.starts_with(
            "<?xml version=\"1.0\"?><sparql xmlns=\"http://www.w3.org/2005/sparql-results#\">"
        ),
        "{results}"
    );
    assert_eq!(results.matches("<result>").count(), 2, "{results}");
    assert!(
        results.contains("<uri>http://example.com/frontDoor</uri>") && !results.contains("safe"),
        "{results}"
    );
    let (rsc, b) = ask(
        "/cse-in/app",
        &ae,
        "sqi=true&",
        &format!("{PREFIXES}SELECT ?op WHERE {{ ?op m2m:oneM2MMethod ?m FILTER(contains(?m, \"CREATE\")) }}"),
    );
    assert_eq!(rsc, 2000, "{b}");
    assert!(
        b["m2m:qres"]
            .as_str()
            .unwrap()
            .contains("example.com/unlock"),
        "{b}"
    );
    // Semantic discovery: the containers whose descriptor has a device with a low battery.
    let low = format!("{PREFIXES}SELECT ?d WHERE {{ ?d ex:battery ?b FILTER(?b < 20) }}");
    let (rsc, b) = ask("/cse-in", &ae, "fu=1&", &low);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:uril"], json!(["cse-in/app/garage"]), "{b}");
    let (rsc, b) = ask("/cse-in", &other, "fu=1&", &low);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:uril"],
        json!(["cse-in/other/vault"]),
        "each sees its own: {b}"
    );
    // DISCOVER on the vault and its descriptor is not enough to match on its content: yes/no
    // answers to one filter after another would read it out. RETRIEVE is.
    let share = |ops: u64, rn: &str| {
        let acp = create_acp(
            u,
            "/cse-in/other",
            &other,
            rn,
            vec![acr(&[&ae], ops), acr(&[&other], OP_ALL)],
            vec![acr(&[&other], OP_ALL)],
        );
        for (path, root) in [
            ("/cse-in/other/vault", "m2m:cnt"),
            ("/cse-in/other/vault/d3", "m2m:smd"),
        ] {
            set_acpi(u, path, &other, root, &[&acp]);
        }
    };
    share(OP_DISCOVERY, "discoverOnly");
    let (rsc, b) = ask("/cse-in", &ae, "fu=1&", &low);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:uril"],
        json!(["cse-in/app/garage"]),
        "DISCOVER only: {b}"
    );
    share(OP_DISCOVERY | OP_RETRIEVE, "readable");
    let (rsc, b) = ask("/cse-in", &ae, "fu=1&", &low);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:uril"],
        json!(["cse-in/app/garage", "cse-in/other/vault"]),
        "with RETRIEVE: {b}"
    );
    // Bad input.
    for (extra, q, code, why) in [
        ("sqi=true&", "SELECT ?x WHERE { ?x ?p ?o", 4143, "no SPARQL"),
        ("fu=1&", "hello", 4143, "no SPARQL in a discovery either"),
        (
            "sqi=true&",
            "SELECT ?x WHERE { ?x ?p ?o OPTIONAL { ?x ?q ?r } }",
            5001,
            "OPTIONAL",
        ),
        (
            "sqi=true&fu=1&",
            "SELECT ?x WHERE { ?x ?p ?o }",
            4000,
            "a semantic query is no discovery",
        ),
        (
            "sqi=true&rcn=1&",
            "SELECT ?x WHERE { ?x ?p ?o }",
            4000,
            "rcn other than 10",
        ),
        (
            "rcn=10&",
            "SELECT ?x WHERE { ?x ?p ?o }",
            4000,
            "rcn 10 without sqi",
        ),
        (
            "sqi=maybe&",
            "SELECT ?x WHERE { ?x ?p ?o }",
            4000,
            "sqi not a boolean",
        ),
    ] {
        let (rsc, b) = ask("/cse-in/app", &ae, extra, q);
        assert_eq!(rsc, code, "{why}: {b}");
    }
    let (rsc, b) = get_with_query(u, "/cse-in/app", &ae, "sqi=true");
    assert_eq!(rsc, 4000, "a semantic query without semanticsFilter: {b}");
    let (rsc, b) = get_with_query(u, "/cse-in/app", &ae, "sqi=false");
    assert_eq!(rsc, 2000, "{b}");
}

/// The same access over CoAP with DTLS-PSK (the binding of constrained devices): `sqi`, `smf` and
/// `fu` travel as Uri-Query options through the CoAP decoder, and each lock, proven by its own
/// PSK, queries and discovers over its own descriptors only; the other lock's descriptor is in
/// no answer, error or count.
#[test]
fn semantic_queries_over_coaps_read_only_the_originators_descriptors() {
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\n\n{}\n{}",
        psk_row_toml(&LOCK1),
        psk_row_toml(&LOCK2)
    ));
    let url = format!("coaps://127.0.0.1:{}", cse.coaps_port());
    let request = |row: &Row, args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["request", "--json", "--url", &url])
            .args(["--psk-identity", row.kpsa_id, "--psk-key-env", "LOCK_KPSA"])
            .args(args)
            .env("LOCK_KPSA", row.key)
            .output()
            .expect("run m2m request");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let create = |row: &Row, from: &str, to: &str, ty: &str, body: serde_json::Value| {
        let r = request(
            row,
            &[
                "--from",
                from,
                "-X",
                "create",
                "--to",
                to,
                "--ty",
                ty,
                "--body",
                &body.to_string(),
            ],
        );
        assert_eq!(r["rsc"], 2001, "{to}: {r}");
        r
    };
    let mut descriptors = Vec::new();
    for (row, rn, cnt, text) in [
        (&LOCK1, "lock1", "front", HOME),
        (&LOCK2, "lock2", "vault", SECRET),
    ] {
        create(
            row,
            "C",
            "cse-in",
            "2",
            json!({ "m2m:ae": { "rn": rn, "api": "Nlock", "rr": false, "srv": ["3"] } }),
        );
        let parent = format!("cse-in/{rn}");
        create(
            row,
            row.ae,
            &parent,
            "3",
            json!({ "m2m:cnt": { "rn": cnt } }),
        );
        let r = create(
            row,
            row.ae,
            &format!("{parent}/{cnt}"),
            "24",
            json!({ "m2m:smd": { "rn": "d", "dcrp": 5, "dsp": b64(text) } }),
        );
        descriptors.push(r["pc"]["m2m:smd"]["ri"].as_str().unwrap().to_owned());
    }
    // The admin (on the loopback listener) groups both descriptors; both locks may read the
    // group, each only its own descriptor.
    let acp = create_acp(
        cse.url(),
        "/cse-in",
        "CAdmin",
        "locks",
        vec![acr(&[LOCK1.ae, LOCK2.ae], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    let (rsc, b) = common::create(
        cse.url(),
        "/cse-in",
        "CAdmin",
        9,
        json!({ "m2m:grp": { "rn": "both", "mt": 24, "mnm": 10, "mid": descriptors, "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let devices = format!("{PREFIXES}SELECT ?d ?b WHERE {{ ?d a m2m:Device ; ex:battery ?b }}");
    let low = format!("{PREFIXES}SELECT ?d WHERE {{ ?d ex:battery ?b FILTER(?b < 90) }}");
    for (row, own, other, own_cnt) in [
        (&LOCK1, "frontDoor", "safe", "cse-in/lock1/front"),
        (&LOCK2, "safe", "frontDoor", "cse-in/lock2/vault"),
    ] {
        for to in ["cse-in", "/id-in/cse-in", "//m2m.example.com/id-in/cse-in"] {
            let smf = format!("smf={devices}");
            let r = request(
                row,
                &["--from", row.ae, "--to", to, "-q", "sqi=true", "-q", &smf],
            );
            assert_eq!(r["rsc"], 2000, "{to}: {r}");
            let text = r["pc"]["m2m:qres"].as_str().expect("qres is text");
            assert!(text.contains(own), "{}: {text}", row.ae);
            assert!(!text.contains(other), "{} read another's: {text}", row.ae);
        }
        let smf = format!("smf={low}");
        let r = request(
            row,
            &["--from", row.ae, "--to", "cse-in", "-q", "fu=1", "-q", &smf],
        );
        assert_eq!(r["rsc"], 2000, "{r}");
        assert_eq!(r["pc"]["m2m:uril"], json!([own_cnt]), "{}: {r}", row.ae);
        // Addressed at the other lock's tree: nothing of it, not even that it matched.
        let theirs = if row.ae == LOCK1.ae {
            "cse-in/lock2"
        } else {
            "cse-in/lock1"
        };
        let smf = format!("smf={devices}");
        let r = request(
            row,
            &[
                "--from", row.ae, "--to", theirs, "-q", "sqi=true", "-q", &smf,
            ],
        );
        assert_eq!(r["rsc"], 4103, "{}: {r}", row.ae);
        let text = r.to_string();
        assert!(!text.contains(other), "{}: {text}", row.ae);
        // Through the group's semanticFanOutPoint: each member is retrieved as the lock, so
        // the other lock's descriptor adds nothing to the query or to the discovery.
        let smf = format!("smf={devices}");
        let r = request(
            row,
            &[
                "--from",
                row.ae,
                "--to",
                "cse-in/both/sfop",
                "-q",
                "sqi=true",
                "-q",
                &smf,
            ],
        );
        assert_eq!(r["rsc"], 2000, "{r}");
        let text = r["pc"]["m2m:qres"].as_str().expect("qres is text");
        assert!(text.contains(own), "{}: {text}", row.ae);
        assert!(!text.contains(other), "{} read another's: {text}", row.ae);
        let smf = format!("smf={low}");
        let r = request(
            row,
            &["--from", row.ae, "--to", "cse-in/both/sfop", "-q", &smf],
        );
        assert_eq!(r["rsc"], 2000, "{r}");
        let own_d = &descriptors[usize::from(row.ae != LOCK1.ae)];
        assert_eq!(r["pc"]["m2m:uril"], json!([own_d]), "{}: {r}", row.ae);
    }
}

/// `<semanticFanOutPoint>` (TS-0004 clause 7.4.35, the explicit scope of 7.3.3.19.2): a RETRIEVE
/// of `<group>/sfop` retrieves each member as the originator and queries the descriptors it was
/// given; without `sqi` it discovers the members whose descriptor matches. A member the
/// originator may not read adds nothing; the group's own policy decides who may fan out; only
/// RETRIEVE is allowed.
#[test]
fn a_semantic_fan_out_point_queries_the_members_one_may_read() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Csem", "app", &[]);
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    let mut members = Vec::new();
    for (owner, parent, cnt, text) in [
        (&ae, "/cse-in/app", "front", HOME),
        (&ae, "/cse-in/app", "garage", GARAGE),
        (&other, "/cse-in/other", "vault", SECRET),
    ] {
        create_cnt(u, parent, owner, json!({ "rn": cnt }));
        let (rsc, b) = create(
            u,
            &format!("{parent}/{cnt}"),
            owner,
            24,
            json!({ "m2m:smd": { "rn": "d", "dcrp": 5, "dsp": b64(text) } }),
        );
        assert_eq!(rsc, 2001, "{b}");
        members.push(b["m2m:smd"]["ri"].as_str().unwrap().to_owned());
    }
    // The admin groups all three descriptors and lets Csem (only) read the group.
    let acp = create_acp(
        u,
        "/cse-in",
        "CAdmin",
        "semReaders",
        vec![acr(&[&ae], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    let (rsc, b) = create(
        u,
        "/cse-in",
        "CAdmin",
        9,
        json!({ "m2m:grp": { "rn": "sem", "mt": 24, "mnm": 10, "mid": members, "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    assert_eq!(b["m2m:grp"]["cnm"], json!(3), "{b}");
    assert_eq!(
        b["m2m:grp"]["ssi"],
        json!(true),
        "semanticSupportIndicator: {b}"
    );
    let devices = format!("{PREFIXES}SELECT ?d WHERE {{ ?d a m2m:Device }}");
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/sem/sfop",
        &ae,
        &format!("sqi=true&smf={}", query_text(&devices)),
    );
    assert_eq!(rsc, 2000, "{b}");
    let text = b["m2m:qres"].as_str().expect("qres is text");
    assert!(
        text.contains("frontDoor") && text.contains("garageDoor"),
        "{text}"
    );
    assert!(!text.contains("safe"), "a member Csem may not read: {text}");
    // Semantic discovery: the members whose own descriptor matches.
    let low = format!("{PREFIXES}SELECT ?d WHERE {{ ?d ex:battery ?b FILTER(?b < 20) }}");
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/sem/sfop",
        &ae,
        &format!("smf={}", query_text(&low)),
    );
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:uril"], json!([members[1]]), "{b}");
    // The admin reads every member: the vault's device is found too.
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/sem/sfop",
        "CAdmin",
        &format!("smf={}", query_text(&low)),
    );
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:uril"], json!([members[1], members[2]]), "{b}");
    // Another AE may not fan out over the group (its policy names Csem only), whatever it asks.
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/sem/sfop",
        &other,
        &format!("sqi=true&smf={}", query_text(&devices)),
    );
    assert_eq!(rsc, 4103, "{b}");
    // Only RETRIEVE; a semanticsFilter is needed; SPARQL that is none is 4143.
    let (rsc, b) = create(
        u,
        "/cse-in/sem/sfop",
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "x" } }),
    );
    assert_eq!(rsc, 4005, "{b}");
    let (rsc, b) = retrieve(u, "/cse-in/sem/sfop", &ae);
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = get_with_query(u, "/cse-in/sem/sfop", &ae, "sqi=true&smf=SELECT");
    assert_eq!(rsc, 4143, "{b}");
}

/// Semantic resource discovery, annotation-based method (TS-0004 clause 7.3.3.18.1): a
/// descriptor without relatedSemantics brings in the descriptors its `resourceDescriptorLink`
/// triples name (link after link), each only if the originator may read it; a descriptor with
/// relatedSemantics follows those instead (clause 7.3.3.18.2).
#[test]
fn annotation_links_bring_in_the_linked_descriptors_one_may_read() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Csem", "app", &[]);
    let other = register_ae(u, "/cse-in", "Cother", "other", &[]);
    let turtle = |body: &str| {
        format!("@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .\n@prefix ex: <http://example.com/> .\n{body}")
    };
    let describe = |owner: &str, parent: &str, cnt: &str, body: &str, extra: serde_json::Value| {
        create_cnt(u, parent, owner, json!({ "rn": cnt }));
        let mut smd = json!({ "rn": "d", "dcrp": 5, "dsp": b64(&turtle(body)) });
        for (k, v) in extra.as_object().unwrap() {
            smd[k] = v.clone();
        }
        let (rsc, b) = create(
            u,
            &format!("{parent}/{cnt}"),
            owner,
            24,
            json!({ "m2m:smd": smd }),
        );
        assert_eq!(rsc, 2001, "{cnt}: {b}");
        b["m2m:smd"]["ri"].as_str().unwrap().to_owned()
    };
    // The battery of each door is in a descriptor of its own, which the door's links to.
    describe(
        &ae,
        "/cse-in/app",
        "spec1",
        "ex:spec1 ex:battery 7 .",
        json!({}),
    );
    describe(
        &ae,
        "/cse-in/app",
        "spec2",
        "ex:spec2 m2m:resourceDescriptorLink \"cse-in/app/spec1/d\" .",
        json!({}),
    );
    let vault = describe(
        &other,
        "/cse-in/other",
        "vault",
        "ex:vault ex:battery 5 .",
        json!({}),
    );
    describe(
        &ae,
        "/cse-in/app",
        "door",
        "ex:door a m2m:Device ; m2m:resourceDescriptorLink \"cse-in/app/spec2/d\" .",
        json!({}),
    );
    describe(
        &ae,
        "/cse-in/app",
        "stranger",
        "ex:stranger a m2m:Device ; m2m:resourceDescriptorLink \"cse-in/other/vault/d\" .",
        json!({}),
    );
    describe(
        &ae,
        "/cse-in/app",
        "linked",
        "ex:linked a m2m:Device ; m2m:resourceDescriptorLink \"cse-in/app/spec1/d\" .",
        json!({ "rels": ["cse-in/app/spec2/d"] }),
    );
    // The same links in every ID form a link may take (TS-0001 clause 7.2): SP-relative,
    // absolute, and the unstructured resourceID; each is held to the same permission check.
    let forms = [
        ("sp", "/id-in/cse-in".to_owned()),
        ("abs", "//m2m.example.com/id-in/cse-in".to_owned()),
    ];
    for (form, base) in &forms {
        describe(
            &ae,
            "/cse-in/app",
            &format!("door-{form}"),
            &format!("ex:d a m2m:Device ; m2m:resourceDescriptorLink \"{base}/app/spec1/d\" ."),
            json!({}),
        );
        describe(
            &ae,
            "/cse-in/app",
            &format!("stranger-{form}"),
            &format!("ex:s a m2m:Device ; m2m:resourceDescriptorLink \"{base}/other/vault/d\" ."),
            json!({}),
        );
    }
    for (form, link) in [
        ("ri", vault.clone()),
        ("sp-ri", format!("/id-in/{vault}")),
        ("abs-ri", format!("//m2m.example.com/id-in/{vault}")),
    ] {
        describe(
            &ae,
            "/cse-in/app",
            &format!("stranger-{form}"),
            &format!("ex:s a m2m:Device ; m2m:resourceDescriptorLink \"{link}\" ."),
            json!({}),
        );
    }
    let sorted = |v: &serde_json::Value| {
        let mut l: Vec<String> = v
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        l.sort();
        l
    };
    let low = format!(
        "{PREFIXES}SELECT ?d WHERE {{ ?d a m2m:Device . ?x ex:battery ?b FILTER(?b < 20) }}"
    );
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/app",
        &ae,
        &format!("fu=1&smf={}", query_text(&low)),
    );
    assert_eq!(rsc, 2000, "{b}");
    // door: through spec2 to spec1 (two links). stranger: its link names a descriptor Csem may
    // not read, in whatever form. linked: its relatedSemantics (spec2, no battery) count, not
    // its annotation.
    assert_eq!(
        sorted(&b["m2m:uril"]),
        [
            "cse-in/app/door",
            "cse-in/app/door-abs",
            "cse-in/app/door-sp"
        ],
        "{b}"
    );
    let (rsc, b) = get_with_query(
        u,
        "/cse-in/app",
        "CAdmin",
        &format!("fu=1&smf={}", query_text(&low)),
    );
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        sorted(&b["m2m:uril"]),
        [
            "cse-in/app/door",
            "cse-in/app/door-abs",
            "cse-in/app/door-sp",
            "cse-in/app/stranger",
            "cse-in/app/stranger-abs",
            "cse-in/app/stranger-abs-ri",
            "cse-in/app/stranger-ri",
            "cse-in/app/stranger-sp",
            "cse-in/app/stranger-sp-ri",
        ],
        "the admin reads the vault, whatever form names it: {b}"
    );
}

/// A semantic fan-out over a member on another CSE: while that CSE answers, its descriptor is
/// queried with the local one; once it is down, the answer is over the member that answered
/// and says it is partial (Content Status PARTIAL_CONTENT, `X-M2M-CTS: 1`), not that the
/// devices it described are gone.
#[test]
fn a_semantic_fan_out_says_when_a_member_did_not_answer() {
    let (in_cse, mut mn, _pki) = start_in_mn_tls();
    let ae_in = register_ae(in_cse.url(), "/cse-in", "Ccloud", "cloud", &[]);
    let ae_mn = register_ae(mn.url(), "/cse-mn", "Cdevice", "dev", &[]);
    // The device's descriptor on the MN, readable by the cloud AE (by its SP-relative AE-ID).
    let acp = create_acp(
        mn.url(),
        "/cse-mn/dev",
        &ae_mn,
        "forcloud",
        vec![
            acr(&[&format!("/id-in/{ae_in}")], OP_RETRIEVE),
            acr(&[&ae_mn], OP_ALL),
        ],
        vec![acr(&[&ae_mn], OP_ALL)],
    );
    create_cnt(mn.url(), "/cse-mn/dev", &ae_mn, json!({ "rn": "garage" }));
    let (rsc, b) = create(
        mn.url(),
        "/cse-mn/dev/garage",
        &ae_mn,
        24,
        json!({ "m2m:smd": { "rn": "d", "dcrp": 5, "dsp": b64(GARAGE), "acpi": [acp] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let remote = format!("/id-mn/{}", b["m2m:smd"]["ri"].as_str().unwrap());
    // The front door's descriptor on the IN, and the group of both.
    create_cnt(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        json!({ "rn": "front" }),
    );
    let (rsc, b) = create(
        in_cse.url(),
        "/cse-in/cloud/front",
        &ae_in,
        24,
        json!({ "m2m:smd": { "rn": "d", "dcrp": 5, "dsp": b64(HOME) } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let local = b["m2m:smd"]["ri"].as_str().unwrap().to_owned();
    let (rsc, b) = create(
        in_cse.url(),
        "/cse-in/cloud",
        &ae_in,
        9,
        json!({ "m2m:grp": { "rn": "doors", "mt": 24, "mnm": 10, "mid": [local, remote] } }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let devices = format!("{PREFIXES}SELECT ?d WHERE {{ ?d a m2m:Device }}");
    let query = format!("sqi=true&smf={}", query_text(&devices));
    let ask = || get_with_query_full(in_cse.url(), "/cse-in/cloud/doors/sfop", &ae_in, &query);
    let r = ask();
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let text = r.body["m2m:qres"]
        .as_str()
        .expect("qres is text")
        .to_owned();
    assert!(
        text.contains("frontDoor") && text.contains("garageDoor"),
        "{text}"
    );
    assert_eq!(r.header("x-m2m-cts"), None, "both members answered");
    // The MN goes down: the garage door is not known to be gone, its member did not answer.
    mn.kill9();
    let r = ask();
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let text = r.body["m2m:qres"].as_str().expect("qres is text");
    assert!(
        text.contains("frontDoor") && !text.contains("garageDoor"),
        "{text}"
    );
    assert_eq!(
        r.header("x-m2m-cts"),
        Some("1"),
        "PARTIAL_CONTENT: {:?}",
        r.body
    );
}
