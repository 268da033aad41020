//! Resource discovery (fu=1) over HTTP on a real `m2m cse` (TS-0004 clause 7.3.3.17, TS-0009
//! table 6.2.2.2-1 query fields).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The last path segments of the discovered structured addresses, as a set.
fn names(list: &[String]) -> BTreeSet<String> {
    list.iter()
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn discover(u: &str, to: &str, from: &str, query: &str) -> Vec<String> {
    let (rsc, b) = get_with_query(u, to, from, &format!("fu=1&{query}"));
    assert_eq!(rsc, 2000, "discovery {to}?fu=1&{query}: {b}");
    uril(&b)
}

/// app (AE, by Cone) with containers c1 (lbl kitchen, mni 7), c2 (lbl hall), c3 (lbl kitchen hall);
/// c1 holds 2 contentInstances and a sub-container deep; other (AE, by Ctwo) with container o1,
/// both readable and discoverable by Cone through the ACP other/share.
struct Tree {
    cse: CseProcess,
    ae1: String,
    ae2: String,
    ct: Vec<String>,
}

fn tree() -> Tree {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae1 = register_ae(&u, "/cse-in", "Cone", "app", &[]);
    let ae2 = register_ae(&u, "/cse-in", "Ctwo", "other", &[]);
    let mut ct = Vec::new();
    for (rn, lbl, extra) in [
        ("c1", json!(["kitchen"]), json!({ "mni": 7 })),
        ("c2", json!(["hall"]), json!({})),
        ("c3", json!(["kitchen", "hall"]), json!({})),
    ] {
        let mut attrs = json!({ "rn": rn, "lbl": lbl, "cr": null });
        for (k, v) in extra.as_object().expect("object") {
            attrs[k] = v.clone();
        }
        let (rsc, b) = create(&u, "/cse-in/app", &ae1, 3, json!({ "m2m:cnt": attrs }));
        assert_eq!(rsc, 2001, "{b}");
        ct.push(b["m2m:cnt"]["ct"].as_str().expect("ct").to_owned());
    }
    create_cin(&u, "/cse-in/app/c1", &ae1, "one");
    create_cin(&u, "/cse-in/app/c1", &ae1, "two");
    create_cnt(&u, "/cse-in/app/c1", &ae1, json!({ "rn": "deep" }));
    // Discovery results are filtered to what the originator may DISCOVER: Ctwo shares `other`
    // and o1 with Cone through an <accessControlPolicy>, so Cone discovers the whole tree.
    let share = create_acp(
        &u,
        "/cse-in/other",
        &ae2,
        "share",
        vec![
            acr(&[&ae1], OP_RETRIEVE | OP_DISCOVERY),
            acr(&[&ae2], OP_ALL),
        ],
        vec![acr(&[&ae2], OP_ALL)],
    );
    set_acpi(&u, "/cse-in/other", &ae2, "m2m:ae", &[&share]);
    create_cnt(
        &u,
        "/cse-in/other",
        &ae2,
        json!({ "rn": "o1", "cr": null, "acpi": [share] }),
    );
    Tree { cse, ae1, ae2, ct }
}

#[test]
fn discovery_by_type_label_and_attributes() {
    let t = tree();
    let u = t.cse.url();

    let all_cnt = discover(u, "/cse-in", &t.ae1, "ty=3");
    assert_eq!(
        names(&all_cnt),
        set(&["c1", "c2", "c3", "deep", "o1"]),
        "ty=3 from the CSEBase: {all_cnt:?}"
    );
    assert!(
        all_cnt.iter().any(|s| s.ends_with("cse-in/app/c1")),
        "structured addresses by default: {all_cnt:?}"
    );
    let under_app = discover(u, "/cse-in/app", &t.ae1, "ty=3");
    assert_eq!(
        names(&under_app),
        set(&["c1", "c2", "c3", "deep"]),
        "ty=3 under app: {under_app:?}"
    );

    let aes = discover(u, "/cse-in", &t.ae1, "ty=2");
    assert_eq!(names(&aes), set(&["app", "other"]), "ty=2: {aes:?}");

    // Several types: ty=3+4 and ty=3&ty=4.
    for q in ["ty=3+4", "ty=3&ty=4"] {
        let found = discover(u, "/cse-in/app/c1", &t.ae1, q);
        assert_eq!(
            found.len(),
            3,
            "{q} under c1: 2 instances + deep: {found:?}"
        );
        assert!(
            names(&found).contains("deep"),
            "{q} finds the container: {found:?}"
        );
    }

    let kitchen = discover(u, "/cse-in", &t.ae1, "lbl=kitchen");
    assert_eq!(
        names(&kitchen),
        set(&["c1", "c3"]),
        "lbl=kitchen: {kitchen:?}"
    );
    let hall_cnt = discover(u, "/cse-in", &t.ae1, "lbl=hall&ty=3");
    assert_eq!(
        names(&hall_cnt),
        set(&["c2", "c3"]),
        "lbl=hall: {hall_cnt:?}"
    );
    let none = discover(u, "/cse-in", &t.ae1, "lbl=garage");
    assert!(none.is_empty(), "lbl=garage: {none:?}");

    // Attribute conditions (TS-0009: any other query field naming a resource attribute).
    let by_ae2 = discover(u, "/cse-in", &t.ae1, &format!("cr={}", t.ae2));
    assert_eq!(names(&by_ae2), set(&["o1"]), "cr={}: {by_ae2:?}", t.ae2);
    let by_ae1 = discover(u, "/cse-in", &t.ae1, &format!("cr={}&ty=3", t.ae1));
    assert_eq!(
        names(&by_ae1),
        set(&["c1", "c2", "c3"]),
        "cr={}: {by_ae1:?}",
        t.ae1
    );
    let mni = discover(u, "/cse-in", &t.ae1, "mni=7");
    assert_eq!(names(&mni), set(&["c1"]), "mni=7: {mni:?}");
    // Attribute values take wildcards (TS-0004 7.3.3.17.9), the indexed rn too.
    for (q, want) in [
        ("rn=c*&ty=3", &["c1", "c2", "c3"][..]),
        // (containers only: an instance's generated name may end in 3 too)
        ("rn=*3&ty=3", &["c3"][..]),
        ("rn=d*p", &["deep"][..]),
    ] {
        let found = discover(u, "/cse-in", &t.ae1, q);
        assert_eq!(names(&found), set(want), "{q}: {found:?}");
    }
    let cins = discover(u, "/cse-in/app/c1", &t.ae1, "ty=4&con=t*o");
    assert_eq!(cins.len(), 1, "con=t*o: {cins:?}");

    // drt=2: resourceIDs instead of structured addresses.
    let (_, b) = retrieve(u, "/cse-in/app/c2", &t.ae1);
    let c2_ri = b["m2m:cnt"]["ri"].as_str().expect("ri").to_owned();
    let ids = discover(u, "/cse-in", &t.ae1, "lbl=hall&ty=3&drt=2");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&c2_ri),
        "drt=2 returns resourceIDs ({c2_ri}): {ids:?}"
    );
    assert!(
        ids.iter().all(|i| !i.contains('/')),
        "drt=2 entries are unstructured: {ids:?}"
    );
}

#[test]
fn discovery_by_creation_time() {
    let t = tree();
    let u = t.cse.url();
    let after_c1 = discover(u, "/cse-in/app", &t.ae1, &format!("ty=3&cra={}", t.ct[0]));
    assert!(
        !names(&after_c1).contains("c1") && names(&after_c1).is_superset(&set(&["c2", "c3"])),
        "cra={} (strictly after c1): {after_c1:?}",
        t.ct[0]
    );
    let before_c3 = discover(u, "/cse-in/app", &t.ae1, &format!("ty=3&crb={}", t.ct[2]));
    assert_eq!(
        names(&before_c3),
        set(&["c1", "c2"]),
        "crb={} (strictly before c3): {before_c3:?}",
        t.ct[2]
    );
    let between = discover(
        u,
        "/cse-in/app",
        &t.ae1,
        &format!("ty=3&cra={}&crb={}", t.ct[0], t.ct[2]),
    );
    assert_eq!(
        names(&between),
        set(&["c2"]),
        "between c1 and c3: {between:?}"
    );
    let future = discover(u, "/cse-in", &t.ae1, "cra=20991231T000000");
    assert!(
        future.is_empty(),
        "nothing is created after 2099: {future:?}"
    );
}

#[test]
fn discovery_limit_offset_and_level() {
    let t = tree();
    let u = t.cse.url();
    let full = discover(u, "/cse-in/app", &t.ae1, "ty=3");
    assert_eq!(full.len(), 4, "{full:?}");

    // lim: partial content, flagged with X-M2M-CTS and the offset to continue from.
    let r = get_with_query_full(u, "/cse-in/app", &t.ae1, "fu=1&ty=3&lim=2");
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let page1 = uril(&r.body);
    assert_eq!(page1.len(), 2, "lim=2: {page1:?}");
    assert_eq!(
        r.header("x-m2m-cts"),
        Some("1"),
        "a truncated discovery result is partial content (m2m:contentStatus 1): {:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-m2m-cto"),
        Some("2"),
        "the continuation offset: {:?}",
        r.headers
    );
    // ofst: the next page; the pages together are the full result, without repetition.
    let r = get_with_query_full(u, "/cse-in/app", &t.ae1, "fu=1&ty=3&lim=2&ofst=2");
    let page2 = uril(&r.body);
    assert_eq!(page2.len(), 2, "ofst=2&lim=2: {page2:?}");
    assert_eq!(
        r.header("x-m2m-cts"),
        None,
        "the last page is complete: {:?}",
        r.headers
    );
    let mut both: Vec<String> = page1.iter().chain(page2.iter()).cloned().collect();
    both.sort();
    let mut sorted_full = full.clone();
    sorted_full.sort();
    assert_eq!(both, sorted_full, "pages {page1:?} + {page2:?} vs {full:?}");
    let r = get_with_query_full(u, "/cse-in/app", &t.ae1, "fu=1&ty=3&ofst=10");
    assert!(
        uril(&r.body).is_empty(),
        "offset past the end: {:?}",
        r.body
    );
    // A complete result has no X-M2M-CTS.
    let r = get_with_query_full(u, "/cse-in/app", &t.ae1, "fu=1&ty=3&lim=4");
    assert_eq!(uril(&r.body).len(), 4);
    assert_eq!(r.header("x-m2m-cts"), None, "{:?}", r.headers);

    // lvl: how many levels below the target are searched.
    let lvl1 = discover(u, "/cse-in", &t.ae1, "lvl=1");
    assert_eq!(
        names(&lvl1),
        set(&["app", "other"]),
        "lvl=1 from the CSEBase: {lvl1:?}"
    );
    let lvl2 = discover(u, "/cse-in", &t.ae1, "lvl=2&ty=3");
    assert_eq!(
        names(&lvl2),
        set(&["c1", "c2", "c3", "o1"]),
        "lvl=2 excludes c1/deep: {lvl2:?}"
    );
    let lvl1_c1 = discover(u, "/cse-in/app/c1", &t.ae1, "lvl=1");
    assert_eq!(lvl1_c1.len(), 3, "lvl=1 under c1: {lvl1_c1:?}");
}

#[test]
fn discovery_answers_are_well_formed() {
    let t = tree();
    let u = t.cse.url();
    // The target itself is not part of its discovery result.
    let found = discover(u, "/cse-in/app/c2", &t.ae1, "");
    assert!(found.is_empty(), "c2 has no descendants: {found:?}");
    // Discovery of a missing target.
    let (rsc, b) = get_with_query(u, "/cse-in/nothing", &t.ae1, "fu=1");
    assert_eq!(rsc, 4004, "{b}");
    // A bad filter value is a BAD_REQUEST.
    let (rsc, b) = get_with_query(u, "/cse-in", &t.ae1, "fu=1&lim=-1");
    assert_eq!(rsc, 4000, "lim=-1: {b}");
    let (rsc, b) = get_with_query(u, "/cse-in", &t.ae1, "fu=1&cra=yesterday");
    assert_eq!(rsc, 4000, "cra=yesterday: {b}");
    // fu=2 is a (conditional) retrieve of the target, not a discovery.
    let (rsc, b) = get_with_query(u, "/cse-in/app", &t.ae1, "fu=2");
    assert_eq!(rsc, 2000, "{b}");
    assert!(b.get("m2m:uril").is_none(), "fu=2 is no discovery: {b}");
    assert_eq!(b["m2m:ae"]["rn"], json!("app"), "{b}");
}

/// A RETRIEVE listing child resources (rcn 4, 5, 6, 8) spans the resource tree below its target
/// (TS-0004 clauses 7.3.3.17.14, 8.4.3): every level unless `lvl` limits it; with rcn 4 and 8
/// each resource sits inside its nearest listed ancestor (inside the target when its parent is
/// filtered out); with rcn 5 and 6 the references are one list. An instance its container hides
/// (disableRetrieval) is left out at any depth.
#[test]
fn child_listings_span_the_tree_below() {
    let t = tree();
    let u = t.cse.url();
    let (rsc, b) = get_with_query(u, "/cse-in/app", &t.ae1, "rcn=8");
    assert_eq!(rsc, 2000, "{b}");
    let cnts = b["m2m:ae"]["m2m:cnt"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(cnts.len(), 3, "{b}");
    let c1 = cnts.iter().find(|c| c["rn"] == "c1").expect("c1");
    assert_eq!(c1["m2m:cin"].as_array().map(Vec::len), Some(2), "{c1}");
    assert_eq!(c1["m2m:cnt"][0]["rn"], json!("deep"), "{c1}");
    // Only instances: inside the target, whatever their parents.
    let (_, b) = get_with_query(u, "/cse-in/app", &t.ae1, "rcn=8&ty=4");
    assert_eq!(
        b["m2m:ae"]["m2m:cin"].as_array().map(Vec::len),
        Some(2),
        "{b}"
    );
    assert!(b["m2m:ae"].get("m2m:cnt").is_none(), "{b}");
    // References: one list; lvl 1 keeps to the direct children.
    let refs = |query: &str| -> BTreeSet<String> {
        let (_, b) = get_with_query(u, "/cse-in/app", &t.ae1, query);
        b["m2m:rrl"]["rrf"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {b}"))
            .iter()
            .map(|r| r["nm"].as_str().unwrap().to_owned())
            .filter(|n| !n.starts_with("cin"))
            .collect()
    };
    assert_eq!(refs("rcn=6"), set(&["c1", "c2", "c3", "deep"]));
    assert_eq!(refs("rcn=6&lvl=1"), set(&["c1", "c2", "c3"]));
    let (_, b) = get_with_query(u, "/cse-in/app", &t.ae1, "rcn=6&ty=4");
    assert_eq!(b["m2m:rrl"]["rrf"].as_array().map(Vec::len), Some(2), "{b}");
    // disableRetrieval hides c1's instances in every listing from above.
    let (rsc, b) = update(
        u,
        "/cse-in/app/c1",
        &t.ae1,
        json!({ "m2m:cnt": { "disr": true } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (_, b) = get_with_query(u, "/cse-in/app", &t.ae1, "rcn=6&ty=4");
    assert_eq!(b["m2m:rrl"]["rrf"], json!([]), "{b}");
    // Another originator lists only what it may retrieve.
    let (_, b) = get_with_query(u, "/cse-in", &t.ae2, "rcn=6");
    let seen: BTreeSet<String> = b["m2m:rrl"]["rrf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["val"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        seen.iter().all(|v| v.starts_with("cse-in/other")),
        "{seen:?}"
    );
}

/// A chain of containers of any depth: an rcn 4 listing answers, nested at most 16 levels (the
/// deeper ones at the last level), and the CSE keeps serving.
#[test]
fn a_deep_tree_is_listed_without_exhausting_anything() {
    let cse = CseProcess::start_in();
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cdeep", "deep", &[]);
    let mut parent = "/cse-in/deep".to_owned();
    for i in 0..300 {
        let (rsc, b) = create(
            u,
            &parent,
            &ae,
            3,
            json!({ "m2m:cnt": { "rn": format!("d{i}") } }),
        );
        assert_eq!(rsc, 2001, "{i}: {b}");
        parent = format!("/{}", b["m2m:cnt"]["ri"].as_str().unwrap());
    }
    let (rsc, b) = get_with_query(u, "/cse-in/deep", &ae, "rcn=4");
    assert_eq!(rsc, 2000, "{b}");
    let mut depth = 0;
    let mut at = &b["m2m:ae"];
    let mut count = 0;
    while let Some(list) = at.get("m2m:cnt").and_then(Value::as_array) {
        depth += 1;
        count += list.len();
        at = list.last().unwrap();
    }
    assert!(depth <= 17, "nested {depth} deep");
    assert_eq!(count, 300, "every container is listed once");
    let (rsc, _) = retrieve(u, "/cse-in/deep", &ae);
    assert_eq!(rsc, 2000, "still serving");
}

/// applyRelativePath (`arp`, TS-0004 clause 7.3.3.17.17): each match stands for what exists at
/// the path from it, listed once, and only what the originator may discover there; a path that
/// leads nowhere (or above the CSEBase) drops the match. The same for a RETRIEVE's child
/// resources. Malformed paths are 4000.
#[test]
fn apply_relative_path_lists_what_the_path_leads_to() {
    let t = tree();
    let u = t.cse.url();
    assert_eq!(
        discover(u, "/cse-in/app", &t.ae1, "lbl=kitchen&arp=deep"),
        vec!["cse-in/app/c1/deep"],
        "c3 has no child named deep"
    );
    assert_eq!(
        discover(u, "/cse-in/app", &t.ae1, "lbl=kitchen&arp=.."),
        vec!["cse-in/app"],
        "c1 and c3 lead to the same parent: listed once"
    );
    let latest = discover(u, "/cse-in/app", &t.ae1, "ty=3&arp=la");
    assert_eq!(latest.len(), 1, "only c1 holds instances: {latest:?}");
    let (_, cin) = retrieve(u, &format!("/{}", latest[0]), &t.ae1);
    assert_eq!(cin["m2m:cin"]["con"], json!("two"), "{cin}");
    let oldest = discover(u, "/cse-in/app", &t.ae1, "ty=3&arp=OLDEST");
    let (_, cin) = retrieve(u, &format!("/{}", oldest[0]), &t.ae1);
    assert_eq!(cin["m2m:cin"]["con"], json!("one"), "{cin}");
    assert!(discover(u, "/cse-in/app", &t.ae1, "lbl=kitchen&arp=../../../..").is_empty());
    // Ctwo's o2 has no policy: Cone may not discover it, though the path leads there.
    create_cnt(u, "/cse-in/other", &t.ae2, json!({ "rn": "o2" }));
    assert_eq!(
        discover(u, "/cse-in", &t.ae1, "ty=2&arp=o1"),
        vec!["cse-in/other/o1"]
    );
    assert!(
        discover(u, "/cse-in", &t.ae1, "ty=2&arp=o2").is_empty(),
        "a resource the originator may not discover"
    );
    assert_eq!(
        discover(u, "/cse-in", &t.ae2, "ty=2&arp=o2"),
        vec!["cse-in/other/o2"],
        "its creator may"
    );
    // A RETRIEVE of child resources with the same condition.
    let (rsc, b) = get_with_query(u, "/cse-in/app", &t.ae1, "rcn=4&ty=3&lbl=kitchen&arp=deep");
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:ae"]["m2m:cnt"][0]["rn"], json!("deep"), "{b}");
    assert_eq!(
        b["m2m:ae"]["m2m:cnt"].as_array().map(Vec::len),
        Some(1),
        "{b}"
    );
    for bad in ["/cse-in/app", "la/c1", "a//b", "", "c%20d", "c:d"] {
        let (rsc, b) = get_with_query(u, "/cse-in/app", &t.ae1, &format!("fu=1&arp={bad}"));
        assert_eq!(rsc, 4000, "arp '{bad}': {b}");
    }
}
