//! Non-blocking requests and `<request>` (TS-0004 clauses 7.3.2.2, 7.3.2.3, 7.4.12) on a real
//! `m2m cse` over HTTP: acknowledged at once with the `<request>`, carried out afterwards, the
//! result in the `<request>` and, for nonBlockingRequestAsynch, sent to the notification targets.

mod common;

use common::*;
use serde_json::{json, Value};

fn setup() -> (CseProcess, String) {
    let cse = CseProcess::start_in();
    let ae = register_ae(cse.url(), "/cse-in", "Cnb", "app", &[]);
    create_cnt(cse.url(), "/cse-in/app", &ae, json!({ "rn": "c" }));
    (cse, ae)
}

/// A CREATE of a contentInstance with Response Type `rt` and, optionally, X-M2M-RTU.
fn create_cin_rt(cse: &CseProcess, ae: &str, rt: u8, rtu: Option<&str>, con: &str) -> Resp {
    let mut h = vec![
        ("X-M2M-Origin", ae),
        ("X-M2M-RI", "nb-1"),
        ("X-M2M-RVI", "3"),
        ("Content-Type", "application/json;ty=4"),
    ];
    if let Some(rtu) = rtu {
        h.push(("X-M2M-RTU", rtu));
    }
    raw(
        "POST",
        cse.url(),
        &format!("/cse-in/app/c?rt={rt}"),
        &h,
        json!({ "m2m:cin": { "con": con } }).to_string().as_bytes(),
    )
}

/// The `<request>` once it is no longer pending.
fn settled(cse: &CseProcess, ae: &str, ri: &str) -> Value {
    poll(WAIT, || {
        let (rsc, b) = retrieve(cse.url(), &format!("/{ri}"), ae);
        (rsc == 2000 && b["m2m:req"]["rs"] != json!(3)).then_some(b["m2m:req"].clone())
    })
    .unwrap_or_else(|| panic!("the request {ri} stayed pending"))
}

#[test]
fn a_synchronous_non_blocking_request_is_acknowledged_then_done() {
    let (cse, ae) = setup();
    let r = create_cin_rt(&cse, &ae, 1, None, "later");
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.rsc, 1001, "{:?}", r.body);
    let ri = r.body["m2m:uri"]
        .as_str()
        .expect("the <request>'s ID")
        .to_owned();
    let req = settled(&cse, &ae, &ri);
    assert_eq!(req["ty"], json!(17));
    assert_eq!(
        (req["op"].clone(), req["rid"].clone(), req["org"].clone()),
        (json!(1), json!("nb-1"), json!(ae)),
        "{req}"
    );
    assert_eq!(req["tg"], json!("cse-in/app/c"), "{req}");
    assert_eq!(req["rs"], json!(1), "completed: {req}");
    assert_eq!(req["ors"]["rsc"], json!(2001), "{req}");
    assert_eq!(req["ors"]["pc"]["m2m:cin"]["con"], json!("later"), "{req}");
    // The result says whom it is from and for; the <request> was modified when it completed.
    assert_eq!(
        (req["ors"]["fr"].clone(), req["ors"]["to"].clone()),
        (json!("/id-in"), json!(ae)),
        "{req}"
    );
    assert!(
        req["lt"].as_str() > req["ct"].as_str(),
        "lastModifiedTime moves at completion: {req}"
    );
    let (_, la) = retrieve(cse.url(), "/cse-in/app/c/la", &ae);
    assert_eq!(
        la["m2m:cin"]["con"],
        json!("later"),
        "it was carried out: {la}"
    );
    // A failing operation: the request completes as FAILED with the error's status.
    let r = raw(
        "GET",
        cse.url(),
        "/cse-in/app/nothing?rt=1",
        &[
            ("X-M2M-Origin", &ae),
            ("X-M2M-RI", "nb-2"),
            ("X-M2M-RVI", "3"),
        ],
        b"",
    );
    assert_eq!(r.rsc, 1001, "{:?}", r.body);
    let req = settled(&cse, &ae, r.body["m2m:uri"].as_str().unwrap());
    assert_eq!(
        (req["rs"].clone(), req["ors"]["rsc"].clone()),
        (json!(2), json!(4004)),
        "{req}"
    );
}

#[test]
fn an_asynchronous_request_sends_its_result_to_the_response_targets() {
    let (cse, owner) = setup();
    let rx = Receiver::start();
    // The result goes to the originator's own point of access, never to a target of its choice.
    let ae = register_ae(cse.url(), "/cse-in", "Casync", "async", &[rx.url()]);
    let elsewhere = Receiver::start();
    let r = create_cin_rt(&cse, &owner, 2, Some(elsewhere.url()), "redirected");
    assert_eq!(r.rsc, 4000, "not the originator's: {:?}", r.body);
    let r = raw(
        "GET",
        cse.url(),
        "/cse-in/async?rt=2",
        &[
            ("X-M2M-Origin", &ae),
            ("X-M2M-RI", "nb-1"),
            ("X-M2M-RVI", "3"),
            ("X-M2M-RTU", rx.url()),
        ],
        b"",
    );
    assert_eq!(r.rsc, 1002, "{:?}", r.body);
    let n = rx.wait_for(|r| r.body.get("m2m:rsp").is_some(), WAIT);
    let rsp = &n.body["m2m:rsp"];
    assert_eq!(rsp["rsc"], json!(2000), "{rsp}");
    assert_eq!(rsp["rqi"], json!("nb-1"), "{rsp}");
    assert_eq!(rsp["pc"]["m2m:ae"]["aei"], json!(ae), "{rsp}");
    assert!(elsewhere.all().is_empty(), "{:#?}", elsewhere.all());
    let req = settled(&cse, &ae, r.body["m2m:uri"].as_str().unwrap());
    assert_eq!(req["mi"]["rt"]["rtv"], json!(2), "{req}");
    // Without X-M2M-RTU the originator (its point of access) gets the result; with one given
    // empty, nobody does (TS-0004 7.5.1.2.5), and the result waits in the <request>.
    for (rtu, rqi, notified) in [(None, "nb-absent", true), (Some(""), "nb-empty", false)] {
        let mut h = vec![
            ("X-M2M-Origin", ae.as_str()),
            ("X-M2M-RI", rqi),
            ("X-M2M-RVI", "3"),
        ];
        if let Some(rtu) = rtu {
            h.push(("X-M2M-RTU", rtu));
        }
        let r = raw("GET", cse.url(), "/cse-in/async?rt=2", &h, b"");
        assert_eq!(r.rsc, 1002, "{:?}", r.body);
        let req = settled(&cse, &ae, r.body["m2m:uri"].as_str().unwrap());
        assert_eq!(req["ors"]["rqi"], json!(rqi), "{req}");
        let got = rx.try_wait_for(
            |n| n.body["m2m:rsp"]["rqi"] == json!(rqi),
            std::time::Duration::from_secs(if notified { 10 } else { 2 }),
        );
        assert_eq!(got.is_some(), notified, "{rqi}");
    }
}

#[test]
fn a_request_resource_is_its_originators_and_the_cses() {
    let (cse, ae) = setup();
    let r = create_cin_rt(&cse, &ae, 1, None, "mine");
    let ri = r.body["m2m:uri"].as_str().unwrap().to_owned();
    settled(&cse, &ae, &ri);
    let other = register_ae(cse.url(), "/cse-in", "Cother", "other", &[]);
    let (rsc, _) = retrieve(cse.url(), &format!("/{ri}"), &other);
    assert_eq!(rsc, 4103, "another AE cannot read it");
    let (rsc, _) = delete(cse.url(), &format!("/{ri}"), &other);
    assert_eq!(rsc, 4103, "nor delete it");
    // Not made by a request, not updated; deleted by its originator.
    let (rsc, _) = create(cse.url(), "/cse-in", &ae, 17, json!({ "m2m:req": {} }));
    assert_eq!(rsc, 4005);
    let (rsc, _) = update(
        cse.url(),
        &format!("/{ri}"),
        &ae,
        json!({ "m2m:req": { "rs": 1 } }),
    );
    assert_eq!(rsc, 4000, "rs is the CSE's");
    // Addressed non-blocking, by another AE: acknowledged as any address is (the answer tells
    // nothing of whether it exists), and refused when carried out.
    for target in [format!("/{ri}"), "/cse-in/REQnothing".to_owned()] {
        let r = raw(
            "GET",
            cse.url(),
            &format!("{target}?rt=1"),
            &[
                ("X-M2M-Origin", &other),
                ("X-M2M-RI", "nb-3"),
                ("X-M2M-RVI", "3"),
            ],
            b"",
        );
        assert_eq!(r.rsc, 1001, "{target}: {:?}", r.body);
        let theirs = r.body["m2m:uri"].as_str().unwrap().to_owned();
        let result = settled(&cse, &other, &theirs);
        assert_eq!(result["rs"], json!(2), "failed: {result}");
        assert!(
            matches!(result["ors"]["rsc"].as_u64(), Some(4103 | 4004)),
            "{result}"
        );
    }
    let (rsc, _) = delete(cse.url(), &format!("/{ri}"), &ae);
    assert_eq!(rsc, 2002);
    // An originator that is not who it says gets no <request> at all.
    let r = raw(
        "POST",
        cse.url(),
        "/cse-in/app/c?rt=1",
        &[
            ("X-M2M-Origin", "Cnobody"),
            ("X-M2M-RI", "nb-4"),
            ("X-M2M-RVI", "3"),
            ("Content-Type", "application/json;ty=4"),
        ],
        br#"{"m2m:cin":{"con":"x"}}"#,
    );
    assert_eq!(r.rsc, 4106, "{:?}", r.body);
}

#[test]
fn a_pending_request_cannot_be_recalled() {
    let (cse, ae) = setup();
    // Due in 1.5 s: pending until then.
    let r = raw(
        "POST",
        cse.url(),
        "/cse-in/app/c?rt=1",
        &[
            ("X-M2M-Origin", &ae),
            ("X-M2M-RI", "nb-5"),
            ("X-M2M-RVI", "3"),
            ("X-M2M-OET", "1500"),
            ("Content-Type", "application/json;ty=4"),
        ],
        br#"{"m2m:cin":{"con":"due"}}"#,
    );
    assert_eq!(r.rsc, 1001, "{:?}", r.body);
    let ri = r.body["m2m:uri"].as_str().unwrap().to_owned();
    let (rsc, b) = retrieve(cse.url(), &format!("/{ri}"), &ae);
    assert_eq!(b["m2m:req"]["rs"], json!(3), "pending: {rsc} {b}");
    assert_eq!(b["m2m:req"]["ors"]["rsc"], json!(1000), "{b}");
    let (rsc, _) = delete(cse.url(), &format!("/{ri}"), &ae);
    assert_eq!(rsc, 5220, "UNABLE_TO_RECALL_REQUEST");
    assert_eq!(settled(&cse, &ae, &ri)["rs"], json!(1));
}

/// Each originator has at most 64 non-blocking requests under way: the next one is refused
/// (5207 NOT_ACCEPTABLE), while other originators go on, and the
/// place is free again once they are done.
#[test]
fn an_originator_has_a_bounded_number_of_requests_under_way() {
    let (cse, ae) = setup();
    let due_later = |from: &str, i: usize| {
        raw(
            "POST",
            cse.url(),
            "/cse-in/app/c?rt=1",
            &[
                ("X-M2M-Origin", from),
                ("X-M2M-RI", &format!("nb-cap-{i}")),
                ("X-M2M-RVI", "3"),
                ("X-M2M-OET", "3000"),
                ("Content-Type", "application/json;ty=4"),
            ],
            br#"{"m2m:cin":{"con":"due"}}"#,
        )
    };
    let mut first = String::new();
    for i in 0..64 {
        let r = due_later(&ae, i);
        assert_eq!(r.rsc, 1001, "request {i}: {:?}", r.body);
        if i == 0 {
            first = r.body["m2m:uri"].as_str().unwrap().to_owned();
        }
    }
    let r = due_later(&ae, 64);
    assert_eq!(r.rsc, 5207, "{:?}", r.body);
    let other = register_ae(cse.url(), "/cse-in", "Cother", "other", &[]);
    let acp = create_acp(
        cse.url(),
        "/cse-in/app",
        &ae,
        "shared",
        vec![acr(&[ae.as_str(), other.as_str()], OP_ALL)],
        vec![acr(&[ae.as_str()], OP_ALL)],
    );
    set_acpi(cse.url(), "/cse-in/app/c", &ae, "m2m:cnt", &[acp.as_str()]);
    assert_eq!(
        due_later(&other, 65).rsc,
        1001,
        "another originator goes on"
    );
    settled(&cse, &ae, &first);
    let freed = poll(WAIT, || (due_later(&ae, 66).rsc == 1001).then_some(()));
    assert!(
        freed.is_some(),
        "the places are free once the requests are done"
    );
}

/// Result Persistence (`rp`, TS-0009 table 6.2.2.2-1): the `<request>` keeps the result that
/// long; what cannot be kept is refused, never ignored.
#[test]
fn the_result_persists_as_long_as_asked() {
    let (cse, ae) = setup();
    let post = |query: &str| {
        raw(
            "POST",
            cse.url(),
            &format!("/cse-in/app/c?{query}"),
            &[
                ("X-M2M-Origin", ae.as_str()),
                ("X-M2M-RI", "rp-1"),
                ("X-M2M-RVI", "3"),
                ("Content-Type", "application/json;ty=4"),
            ],
            json!({ "m2m:cin": { "con": "kept" } })
                .to_string()
                .as_bytes(),
        )
    };
    let r = post("rt=1&rp=PT10M");
    assert_eq!(r.rsc, 1001, "{:?}", r.body);
    let ri = r.body["m2m:uri"]
        .as_str()
        .expect("the <request>'s ID")
        .to_owned();
    let req = settled(&cse, &ae, &ri);
    // The metaInformation keeps rp, as the absolute time it stands for: the <request>'s end.
    assert_eq!(req["mi"]["rp"], req["et"], "{req}");
    let et = req["et"].as_str().expect("et").to_owned();
    let (_, cnt) = retrieve(cse.url(), "/cse-in/app/c", &ae);
    let ct = cnt["m2m:cnt"]["ct"].as_str().expect("ct").to_owned();
    // The container was made just now: the request lives about ten minutes past it.
    let minutes = |t: &str| -> i64 {
        let h: i64 = t[9..11].parse().unwrap();
        let m: i64 = t[11..13].parse().unwrap();
        h * 60 + m
    };
    let lives = (minutes(&et) - minutes(&ct)).rem_euclid(24 * 60);
    assert!((9..=11).contains(&lives), "et {et}, created {ct}");
    // Milliseconds read as a relative time too.
    assert_eq!(post("rt=1&rp=600000").rsc, 1001);
    for (query, what) in [
        ("rt=1&rp=soon", "no time"),
        ("rt=1&rp=20000101T000000", "in the past"),
        ("rt=1&rp=P2D", "beyond the 24 h a <request> lives"),
    ] {
        let r = post(query);
        assert_eq!(r.rsc, 4000, "{what}: {:?}", r.body);
    }
    // A blocking request has no result to keep: the parameter is checked, and harmless.
    assert_eq!(post("rp=PT1M").rsc, 2001);
    assert_eq!(post("rp=soon").rsc, 4000);
}

/// Response Type noResponse (5): the request is carried out as a blocking one and the HTTP
/// answer is a bare 204, no oneM2M status, no body, for a success and a refusal alike.
#[test]
fn a_request_that_wants_no_response_is_done_and_answered_with_nothing() {
    let (cse, ae) = setup();
    let r = create_cin_rt(&cse, &ae, 5, None, "quiet");
    assert_eq!((r.status, r.rsc), (204, 0), "{:?}", r.headers);
    assert_eq!(r.body, Value::Null);
    assert!(
        r.header("x-m2m-ri").is_none() && r.header("content-type").is_none(),
        "{:?}",
        r.headers
    );
    let (rsc, b) = retrieve(cse.url(), "/cse-in/app/c/la", &ae);
    assert_eq!((rsc, b["m2m:cin"]["con"].clone()), (2000, json!("quiet")));
    // A RETRIEVE and a refused CREATE (an originator with no rights) answer the same nothing.
    let r = raw(
        "GET",
        cse.url(),
        "/cse-in/app/c?rt=5",
        &[
            ("X-M2M-Origin", &ae),
            ("X-M2M-RI", "q-2"),
            ("X-M2M-RVI", "3"),
        ],
        b"",
    );
    assert_eq!((r.status, r.rsc, r.body.clone()), (204, 0, Value::Null));
    let other = register_ae(cse.url(), "/cse-in", "Cother", "other", &[]);
    let r = create_cin_rt(&cse, &other, 5, None, "intruder");
    assert_eq!((r.status, r.rsc), (204, 0));
    let (_, b) = retrieve(cse.url(), "/cse-in/app/c/la", &ae);
    assert_eq!(b["m2m:cin"]["con"], json!("quiet"), "nothing was created");
    // A Response Type beyond the table is still refused, with a status.
    let r = create_cin_rt(&cse, &ae, 6, None, "x");
    assert_eq!(r.rsc, 4000);
}

/// noResponse over the TLS listener, each lock proven by its PSK: a granted CREATE is done and a
/// refused one is not, and both are answered the same bare 204 (a neighbour of the plain HTTP
/// test above: the listener with associations takes the same path).
#[test]
fn no_response_over_tls_is_done_or_refused_and_answered_with_nothing() {
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n{}\n{}",
        psk_row_toml(&LOCK1),
        psk_row_toml(&LOCK2)
    ));
    let lock1 = TlsClient::psk(LOCK1.kpsa_id, LOCK1.key);
    let lock2 = TlsClient::psk(LOCK2.kpsa_id, LOCK2.key);
    let send = |client: &TlsClient, from: &str, path: &str, ty: Option<u16>, body: Value| {
        client
            .request(cse.https_url(), "POST", path, Some(from), ty, Some(&body))
            .expect("an answer over TLS")
    };
    let ae =
        |rn: &str| json!({ "m2m:ae": { "rn": rn, "api": "Nlock", "rr": false, "srv": ["3"] } });
    assert_eq!(send(&lock1, "C", "/cse-in", Some(2), ae("lock1")).rsc, 2001);
    assert_eq!(send(&lock2, "C", "/cse-in", Some(2), ae("lock2")).rsc, 2001);
    let r = send(
        &lock1,
        LOCK1.ae,
        "/cse-in/lock1",
        Some(3),
        json!({ "m2m:cnt": { "rn": "state" } }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    for (client, from, con) in [(&lock1, LOCK1.ae, "locked"), (&lock2, LOCK2.ae, "forged")] {
        let r = send(
            client,
            from,
            "/cse-in/lock1/state?rt=5",
            Some(4),
            json!({ "m2m:cin": { "con": con } }),
        );
        assert_eq!(
            (r.status, r.rsc, r.body.clone()),
            (204, 0, Value::Null),
            "{from}"
        );
        assert!(r.header("x-m2m-ri").is_none(), "{from}: {:?}", r.headers);
    }
    let r = lock1
        .request(
            cse.https_url(),
            "GET",
            "/cse-in/lock1/state?rcn=4",
            Some(LOCK1.ae),
            None,
            None,
        )
        .expect("an answer over TLS");
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let instances = r.body["m2m:cnt"]["m2m:cin"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cons: Vec<&Value> = instances.iter().map(|c| &c["con"]).collect();
    assert_eq!(cons, [&json!("locked")], "{:?}", r.body);
}
