//! Locations (`loc`) and geo-queries (`gmty`, `geom`, `gsf`; Release 4) over HTTP on a real
//! `m2m cse`: what a location may be, which resources a query selects, and that a query reveals
//! nothing about resources the originator may not discover.

mod common;

use common::*;
use serde_json::{json, Value};

const SQUARE: &str = "[[0.0,0.0],[1.0,0.0],[1.0,1.0],[0.0,1.0],[0.0,0.0]]";

fn loc(typ: u64, crd: &str) -> Value {
    json!({ "typ": typ, "crd": crd })
}

/// The names of the containers and contentInstances a discovery under `to` finds.
fn found(u: &str, to: &str, from: &str, query: &str) -> Vec<String> {
    let (rsc, b) = get_with_query(u, to, from, &format!("fu=1&{query}"));
    assert_eq!(rsc, 2000, "{to}?fu=1&{query}: {b}");
    let mut names: Vec<String> = b["m2m:uril"]
        .as_array()
        .unwrap_or_else(|| panic!("no uril in {b}"))
        .iter()
        .filter_map(Value::as_str)
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_location_is_a_geometry_of_its_type() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae = register_ae(&u, "/cse-in", "Cgeo", "geo", &[]);

    let bad = [
        (json!("wrong"), "not an object"),
        (
            json!({"typ": 1, "crd": "[1.0, 2.0]", "x": 1}),
            "an unknown member",
        ),
        (json!({"typ": 1}), "no coordinates"),
        (json!({"crd": "[1.0, 2.0]"}), "no type"),
        (loc(7, "[1.0, 2.0]"), "no geometry type 7"),
        (loc(1, "[1, 2]"), "integer coordinates"),
        (
            loc(1, "[[1.0, 2.0], [3.0, 4.0]]"),
            "a point of two positions",
        ),
        (loc(2, "[[1.0, 2.0]]"), "a line of one position"),
        (loc(3, "[[1.0,2.0],[3.0,4.0],[5.0,6.0]]"), "an open ring"),
        (loc(3, "[[1.0, 2.0]]"), "a polygon of one position"),
        (loc(4, "[]"), "an empty multi-point"),
        (loc(5, "[[1.0,2.0],[3.0,4.0]]"), "a multi-line of positions"),
        (
            loc(6, "[[[1.0,2.0],[3.0,4.0],[5.0,6.0]]]"),
            "a multi-polygon with an open ring",
        ),
        (loc(1, "not json"), "coordinates that are not JSON"),
    ];
    for (value, what) in bad {
        let (rsc, b) = create(
            &u,
            "/cse-in/geo",
            &ae,
            3,
            json!({"m2m:cnt": {"rn": "c", "loc": value}}),
        );
        assert_eq!(rsc, 4000, "{what}: {b}");
    }

    for (i, (typ, crd)) in [
        (1, "[ 1.0, 2.0 ]"),
        (1, "[1.0, 2.0, 30.5]"),
        (2, "[[1.0,1.0],[2.0,2.0]]"),
        (3, SQUARE),
        (4, "[[1.0,2.0],[3.0,4.0]]"),
        (5, "[[[1.0,2.0],[3.0,4.0]],[[5.0,6.0],[7.0,8.0]]]"),
        (6, &format!("[{SQUARE}]")),
    ]
    .into_iter()
    .enumerate()
    {
        let (rsc, b) = create(
            &u,
            "/cse-in/geo",
            &ae,
            3,
            json!({"m2m:cnt": {"rn": format!("ok{i}"), "loc": loc(typ, crd)}}),
        );
        assert_eq!(rsc, 2001, "{typ} {crd}: {b}");
        assert_eq!(b["m2m:cnt"]["loc"], loc(typ, crd), "kept as given");
    }

    // An UPDATE is checked the same way; null removes the location.
    let (rsc, b) = update(
        &u,
        "/cse-in/geo/ok0",
        &ae,
        json!({"m2m:cnt": {"loc": loc(3, "[[1.0,2.0]]")}}),
    );
    assert_eq!(rsc, 4000, "{b}");
    let (rsc, b) = update(
        &u,
        "/cse-in/geo/ok0",
        &ae,
        json!({"m2m:cnt": {"loc": loc(1, "[5.0,5.0]")}}),
    );
    assert_eq!(
        (rsc, &b["m2m:cnt"]["loc"]),
        (2004, &loc(1, "[5.0,5.0]")),
        "{b}"
    );
    let (rsc, b) = update(
        &u,
        "/cse-in/geo/ok0",
        &ae,
        json!({"m2m:cnt": {"loc": null}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert!(b["m2m:cnt"].get("loc").is_none(), "{b}");

    // The AE itself and contentInstances carry locations too.
    let (rsc, b) = update(
        &u,
        "/cse-in/geo",
        &ae,
        json!({"m2m:ae": {"loc": loc(1, "[0.5,0.5]")}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = create(
        &u,
        "/cse-in/geo/ok1",
        &ae,
        4,
        json!({"m2m:cin": {"con": "x", "loc": loc(1, "[2.0, 1.0]")}}),
    );
    assert_eq!(rsc, 2001, "{b}");
}

#[test]
fn a_geo_query_selects_by_within_contains_and_intersects() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let ae = register_ae(&u, "/cse-in", "Cgeo", "geo", &[]);
    // field: the unit square; track: a line across it and beyond; far: a point outside;
    // none: no location at all.
    for (rn, l) in [
        ("field", Some(loc(3, SQUARE))),
        ("track", Some(loc(2, "[[0.5,0.5],[3.0,0.5]]"))),
        ("far", Some(loc(1, "[5.0,5.0]"))),
        ("none", None),
    ] {
        let mut attrs = json!({"rn": rn});
        if let Some(l) = l {
            attrs["loc"] = l;
        }
        create_cnt(&u, "/cse-in/geo", &ae, attrs);
    }

    let q = |gmty: u8, geom: &str, gsf: u8| format!("gmty={gmty}&geom={geom}&gsf={gsf}");
    // A point: within the square only (on the track's interior it would be within the track).
    assert_eq!(
        found(&u, "/cse-in/geo", &ae, &q(1, "[0.25,0.25]", 1)),
        ["field"]
    );
    assert_eq!(
        found(&u, "/cse-in/geo", &ae, &q(1, "[1.0,0.5]", 1)),
        ["track"],
        "on the square's edge, inside the track"
    );
    assert_eq!(
        found(&u, "/cse-in/geo", &ae, &q(1, "[5.0,5.0]", 1)),
        ["far"]
    );
    assert!(found(&u, "/cse-in/geo", &ae, &q(1, "[9.0,9.0]", 1)).is_empty());
    // A big polygon contains the square, the track and the point; a smaller one only the square.
    let big = "[[-1.0,-1.0],[6.0,-1.0],[6.0,6.0],[-1.0,6.0],[-1.0,-1.0]]";
    assert_eq!(
        found(&u, "/cse-in/geo", &ae, &q(3, big, 2)),
        ["far", "field", "track"]
    );
    let two = "[[-1.0,-1.0],[2.0,-1.0],[2.0,2.0],[-1.0,2.0],[-1.0,-1.0]]";
    assert_eq!(found(&u, "/cse-in/geo", &ae, &q(3, two, 2)), ["field"]);
    // Intersection: the track crosses a polygon that holds neither the square nor the point.
    let strip = "[[2.0,0.0],[2.5,0.0],[2.5,1.0],[2.0,1.0],[2.0,0.0]]";
    assert_eq!(found(&u, "/cse-in/geo", &ae, &q(3, strip, 3)), ["track"]);
    // A multi-point intersecting the square and the far point.
    assert_eq!(
        found(&u, "/cse-in/geo", &ae, &q(4, "[[0.1,0.9],[5.0,5.0]]", 3)),
        ["far", "field"]
    );

    // With other conditions: AND by default, OR with fo=2.
    assert!(found(&u, "/cse-in/geo", &ae, &format!("{}&lbl=x", q(3, big, 2))).is_empty());
    assert_eq!(
        found(
            &u,
            "/cse-in/geo",
            &ae,
            &format!("{}&ty=3&fo=2", q(1, "[5.0,5.0]", 1))
        ),
        ["far", "field", "none", "track"]
    );

    // Under OR the geo-query is judged on every resource, not only on those another
    // condition's index names.
    assert_eq!(
        found(
            &u,
            "/cse-in/geo",
            &ae,
            &format!("{}&lbl=nothing&fo=2", q(1, "[5.0,5.0]", 1))
        ),
        ["far"]
    );

    // A child listing (rcn=4) filtered by a geo-query.
    let (rsc, b) = get_with_query(
        &u,
        "/cse-in/geo",
        &ae,
        &format!("rcn=4&{}", q(1, "[0.25,0.25]", 1)),
    );
    assert_eq!(rsc, 2000, "{b}");
    let names: Vec<&str> = b["m2m:ae"]["m2m:cnt"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {b}"))
        .iter()
        .filter_map(|c| c["rn"].as_str())
        .collect();
    assert_eq!(names, ["field"], "{b}");

    // The query as a JSON-bodied fc of CBOR/JSON primitives is covered by the unit tests; here
    // what a client gets for a query given in part or wrong.
    for bad in [
        "gmty=1".to_owned(),
        "geom=[1.0,2.0]".to_owned(),
        "gsf=1".to_owned(),
        "gmty=1&gsf=1".to_owned(),
        q(1, "1.0", 1),
        q(1, "[1,2]", 1),
        q(7, "[1.0,2.0]", 1),
        q(1, "[1.0,2.0]", 4),
        q(3, "[[1.0,2.0],[3.0,4.0],[5.0,6.0]]", 1),
        "gmty=x&geom=[1.0,2.0]&gsf=1".to_owned(),
    ] {
        for prefix in ["fu=1&", "rcn=4&", ""] {
            let (rsc, b) = get_with_query(&u, "/cse-in/geo", &ae, &format!("{prefix}{bad}"));
            assert_eq!(rsc, 4000, "{prefix}{bad}: {b}");
        }
    }
}

#[test]
fn a_geo_query_reveals_nothing_the_originator_may_not_discover() {
    let cse = CseProcess::start_in();
    let u = cse.url().to_owned();
    let owner = register_ae(&u, "/cse-in", "Cowner", "home", &[]);
    let other = register_ae(&u, "/cse-in", "Cother", "nosy", &[]);
    create_cnt(
        &u,
        "/cse-in/home",
        &owner,
        json!({"rn": "lock", "loc": loc(1, "[0.5,0.5]")}),
    );
    let whole_world = "[[-180.0,-90.0],[180.0,-90.0],[180.0,90.0],[-180.0,90.0],[-180.0,-90.0]]";
    let query = format!("gmty=3&geom={whole_world}&gsf=2");
    assert_eq!(found(&u, "/cse-in", &owner, &query), ["lock"]);
    // Another AE discovering from the CSEBase, or aiming at the owner's AE, learns nothing.
    assert!(found(&u, "/cse-in", &other, &query).is_empty());
    let (rsc, b) = get_with_query(&u, "/cse-in/home", &other, &format!("fu=1&{query}"));
    assert!(rsc == 2000 || rsc == 4103, "{rsc} {b}");
    assert!(!b.to_string().contains("lock"), "{b}");
    let (rsc, b) = get_with_query(&u, "/cse-in/home", &other, &format!("rcn=4&{query}"));
    assert_ne!(rsc, 2000, "{b}");
    assert!(!b.to_string().contains("0.5"), "{b}");
}
