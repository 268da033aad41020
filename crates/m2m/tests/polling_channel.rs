//! <pollingChannel> and long polling on its `pcu` (TS-0004 clauses 7.4.21, 7.4.22, TS-0001
//! clauses 10.2.5.12 to 10.2.5.19) on a real `m2m cse` over HTTP: an AE with no point of access
//! gets its notifications, and requests for it get its answers.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A CSE, the polling AE `poller` (no pointOfAccess) with its channel `pch`, and a publisher
/// AE `pub` with a container `c`. The poller's AE lets the publisher NOTIFY it.
struct Setup {
    cse: CseProcess,
    poller: String,
    publisher: String,
}

const PCH: &str = "/cse-in/poller/pch";
const PCU: &str = "/cse-in/poller/pch/pcu";

fn setup() -> Setup {
    let cse = CseProcess::start_in();
    let poller = register_ae(cse.url(), "/cse-in", "Cpoller", "poller", &[]);
    let publisher = register_ae(cse.url(), "/cse-in", "Cpub", "pub", &[]);
    create_cnt(cse.url(), "/cse-in/pub", &publisher, json!({ "rn": "c" }));
    let u = cse.url();
    // The poller may read and subscribe to the publisher's container.
    create_acp(
        u,
        "/cse-in/pub",
        &publisher,
        "acp",
        vec![
            acr(&[&publisher], OP_ALL),
            acr(&[&poller], OP_CREATE | OP_RETRIEVE | OP_DISCOVERY),
        ],
        vec![acr(&[&publisher], OP_ALL)],
    );
    set_acpi(
        u,
        "/cse-in/pub/c",
        &publisher,
        "m2m:cnt",
        &["cse-in/pub/acp"],
    );
    // The poller lets the publisher send it requests (NOTIFY).
    create_acp(
        u,
        "/cse-in/poller",
        &poller,
        "acp",
        vec![acr(&[&poller], OP_ALL), acr(&[&publisher], OP_NOTIFY)],
        vec![acr(&[&poller], OP_ALL)],
    );
    set_acpi(
        u,
        "/cse-in/poller",
        &poller,
        "m2m:ae",
        &["cse-in/poller/acp"],
    );
    let (rsc, b) = create(
        cse.url(),
        "/cse-in/poller",
        &poller,
        15,
        json!({ "m2m:pch": { "rn": "pch" } }),
    );
    assert_eq!(rsc, 2001, "pollingChannel creation: {b}");
    assert_eq!(b["m2m:pch"]["ty"], json!(15), "{b}");
    Setup {
        cse,
        poller,
        publisher,
    }
}

/// A request with a Request Expiration Timestamp relative in milliseconds (X-M2M-RET).
fn with_ret(
    method: &str,
    base: &str,
    path: &str,
    from: &str,
    ret_ms: u64,
    body: Option<&Value>,
) -> Resp {
    let ri = rqi();
    let ret = ret_ms.to_string();
    let mut headers = vec![
        ("X-M2M-RI", ri.as_str()),
        ("X-M2M-RVI", "3"),
        ("X-M2M-Origin", from),
        ("X-M2M-RET", ret.as_str()),
        ("Accept", "application/json"),
    ];
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
    if bytes.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    raw(
        method,
        base,
        path,
        &headers,
        bytes.as_deref().unwrap_or(&[]),
    )
}

/// One long poll by `from`, waiting at most `ms`.
fn long_poll(s: &Setup, from: &str, ms: u64) -> Resp {
    with_ret("GET", s.cse.url(), PCU, from, ms, None)
}

/// The poller's answer to a polled request: a NOTIFY to `pcu` carrying `m2m:rsp`.
fn answer(s: &Setup, rqi: &str, rsc: u16, pc: Option<Value>) -> (u16, Value) {
    let mut rsp = json!({ "rsc": rsc, "rqi": rqi, "rvi": "3" });
    if let Some(pc) = pc {
        rsp["pc"] = pc;
    }
    notify(s.cse.url(), PCU, &s.poller, json!({ "m2m:rsp": rsp }))
}

#[test]
fn a_subscription_notification_reaches_an_ae_without_a_point_of_access_by_long_polling() {
    let s = setup();
    // Subscribed by the poller itself: no verification request (it is the originator).
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/pub/c",
        &s.poller,
        23,
        json!({ "m2m:sub": { "rn": "s", "nu": [s.poller.as_str()], "enc": { "net": [3] } } }),
    );
    assert_eq!(rsc, 2001, "{b}");

    // The poll waits; the event comes while it waits.
    let base = s.cse.url().to_owned();
    let publisher = s.publisher.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        create_cin(&base, "/cse-in/pub/c", &publisher, "UNLOCKED")
    });
    let started = Instant::now();
    let r = long_poll(&s, &s.poller, 5000);
    let cin = t.join().expect("publisher thread");
    assert_eq!(r.rsc, 2000, "the poll returns the request: {:?}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(4000),
        "the poll answered when the notification came, not at its expiry"
    );
    let rqp = &r.body["m2m:rqp"];
    assert_eq!(rqp["op"], json!(5), "a NOTIFY: {rqp}");
    assert_eq!(rqp["fr"], json!("/id-in"), "from the CSE: {rqp}");
    let sgn = &rqp["pc"]["m2m:sgn"];
    assert_eq!(sgn["nev"]["net"], json!(3), "{sgn}");
    assert_eq!(
        sgn["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{sgn}"
    );
    assert_eq!(sgn["nev"]["rep"]["m2m:cin"]["ri"], json!(cin), "{sgn}");
    let rqi = rqp["rqi"].as_str().expect("the polled request has a rqi");
    let (rsc, b) = answer(&s, rqi, 2000, None);
    assert_eq!(rsc, 2000, "the answer is taken: {b}");

    // A notification that comes between two polls waits in the channel for the next one.
    let cin2 = create_cin(s.cse.url(), "/cse-in/pub/c", &s.publisher, "LOCKED");
    let r = long_poll(&s, &s.poller, 5000);
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let rep = &r.body["m2m:rqp"]["pc"]["m2m:sgn"]["nev"]["rep"]["m2m:cin"];
    assert_eq!(rep["ri"], json!(cin2), "the queued notification: {rep}");
}

#[test]
fn a_request_for_the_polling_ae_gets_the_answer_it_gave() {
    let s = setup();
    let base = s.cse.url().to_owned();
    let publisher = s.publisher.clone();
    // The publisher sends the poller a NOTIFY and waits for the poller's answer.
    let sender = std::thread::spawn(move || {
        with_ret(
            "POST",
            &base,
            "/cse-in/poller",
            &publisher,
            5000,
            Some(&json!({ "m2m:sgn": { "sur": "/id-in/some/sub", "nev": { "net": 1 } } })),
        )
    });
    let r = long_poll(&s, &s.poller, 5000);
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let rqp = &r.body["m2m:rqp"];
    assert_eq!(
        rqp["fr"],
        json!(s.publisher),
        "the sender as originator: {rqp}"
    );
    assert_eq!(rqp["op"], json!(5), "{rqp}");
    assert_eq!(rqp["pc"]["m2m:sgn"]["nev"]["net"], json!(1), "{rqp}");
    let rqi = rqp["rqi"].as_str().expect("rqi").to_owned();
    // The poller answers with a status and content of its own; the sender gets exactly that.
    let (rsc, b) = answer(
        &s,
        &rqi,
        2000,
        Some(json!({ "m2m:dbg": "seen by the poller" })),
    );
    assert_eq!(rsc, 2000, "{b}");
    let got = sender.join().expect("sender thread");
    assert_eq!(got.rsc, 2000, "{:?}", got.body);
    assert_eq!(got.body, json!({ "m2m:dbg": "seen by the poller" }));
    // The same answer twice: nobody waits for it any more.
    let (rsc, _) = answer(&s, &rqi, 2000, None);
    assert_eq!(rsc, 4004, "an answer nobody waits for");
}

/// requestAggregation (`rqag`, Release 4): one poll hands out every queued request as the list
/// `m2m:agrp`; each sender still gets the answer given to its own request.
#[test]
fn an_aggregating_channel_hands_out_every_queued_request_at_once() {
    let s = setup();
    let (rsc, b) = update(
        s.cse.url(),
        "/cse-in/poller/pch",
        &s.poller,
        json!({ "m2m:pch": { "rqag": true } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert_eq!(b["m2m:pch"]["rqag"], json!(true), "{b}");
    let (rsc, _) = update(
        s.cse.url(),
        "/cse-in/poller/pch",
        &s.poller,
        json!({ "m2m:pch": { "rqag": "yes" } }),
    );
    assert_eq!(rsc, 4000, "rqag is a boolean");
    let senders: Vec<_> = (1..=3)
        .map(|n| {
            let base = s.cse.url().to_owned();
            let publisher = s.publisher.clone();
            std::thread::spawn(move || {
                with_ret(
                    "POST",
                    &base,
                    "/cse-in/poller",
                    &publisher,
                    8000,
                    Some(&json!({ "m2m:sgn": { "sur": format!("/id-in/sub{n}"), "nev": { "net": 1 } } })),
                )
            })
        })
        .collect();
    // Wait until all three are queued, then take them in one poll.
    std::thread::sleep(Duration::from_millis(800));
    let r = long_poll(&s, &s.poller, 3000);
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    let agrp = r.body["m2m:agrp"].as_array().expect("m2m:agrp").clone();
    assert_eq!(agrp.len(), 3, "{:?}", r.body);
    for rqp in &agrp {
        let rqi = rqp["rqi"].as_str().expect("rqi");
        let sur = rqp["pc"]["m2m:sgn"]["sur"].as_str().expect("sur");
        let (rsc, b) = answer(&s, rqi, 2000, Some(json!({ "m2m:dbg": sur })));
        assert_eq!(rsc, 2000, "{b}");
    }
    for (n, sender) in senders.into_iter().enumerate() {
        let got = sender.join().expect("sender thread");
        assert_eq!(got.rsc, 2000, "{:?}", got.body);
        assert_eq!(
            got.body,
            json!({ "m2m:dbg": format!("/id-in/sub{}", n + 1) })
        );
    }
    // Nothing left: the next poll waits and times out.
    assert_eq!(long_poll(&s, &s.poller, 300).rsc, 4008);
}

#[test]
fn polls_and_requests_without_an_answer_time_out_with_4008() {
    let s = setup();
    let started = Instant::now();
    let r = long_poll(&s, &s.poller, 600);
    assert_eq!(r.rsc, 4008, "nothing arrived: {:?}", r.body);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the poll waited until its expiration"
    );
    // Nobody polls: the sender gets 4008 at its own expiration, and the request leaves the queue.
    let r = with_ret(
        "POST",
        s.cse.url(),
        "/cse-in/poller",
        &s.publisher,
        600,
        Some(&json!({ "m2m:sgn": { "sur": "/id-in/x", "nev": { "net": 1 } } })),
    );
    assert_eq!(r.rsc, 4008, "{:?}", r.body);
    let r = long_poll(&s, &s.poller, 300);
    assert_eq!(
        r.rsc, 4008,
        "the expired request is not handed out: {:?}",
        r.body
    );
}

#[test]
fn only_the_channels_own_ae_may_create_read_change_delete_poll_or_answer() {
    let s = setup();
    let other = register_ae(s.cse.url(), "/cse-in", "Cother", "other", &[]);
    // The publisher holds NOTIFY on the poller's AE; the admin may do anything elsewhere;
    // neither matters for the channel.
    for who in [
        other.as_str(),
        s.publisher.as_str(),
        "/id-in/Cother",
        "CAdmin",
    ] {
        let (rsc, _) = retrieve(s.cse.url(), PCH, who);
        assert_eq!(rsc, 4103, "RETRIEVE of the channel by {who}");
        let (rsc, _) = update(
            s.cse.url(),
            PCH,
            who,
            json!({ "m2m:pch": { "lbl": ["x"] } }),
        );
        assert_eq!(rsc, 4103, "UPDATE of the channel by {who}");
        let (rsc, _) = delete(s.cse.url(), PCH, who);
        assert_eq!(rsc, 4103, "DELETE of the channel by {who}");
        let r = long_poll(&s, who, 300);
        assert_eq!(r.rsc, 4103, "a poll by {who}: {:?}", r.body);
        let (rsc, _) = notify(
            s.cse.url(),
            PCU,
            who,
            json!({ "m2m:rsp": { "rsc": 2000, "rqi": "x" } }),
        );
        assert_eq!(rsc, 4103, "an answer by {who}");
    }
    // Another AE cannot make a channel under the poller's AE, nor under its own for somebody else.
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/poller",
        &other,
        15,
        json!({ "m2m:pch": { "rn": "pch2" } }),
    );
    assert_eq!(rsc, 4103, "a channel under another AE");
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/other",
        "CAdmin",
        15,
        json!({ "m2m:pch": { "rn": "pch2" } }),
    );
    assert_eq!(rsc, 4103, "not even the admin makes a channel for an AE");
    // Its own works; a second one under the same AE does not.
    let (rsc, b) = create(
        s.cse.url(),
        "/cse-in/other",
        &other,
        15,
        json!({ "m2m:pch": {} }),
    );
    assert_eq!(rsc, 2001, "{b}");
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/other",
        &other,
        15,
        json!({ "m2m:pch": {} }),
    );
    assert_eq!(rsc, 4000, "one channel per AE");
    // The owner reads, changes and finds its channel by discovery; others do not find it.
    let (rsc, b) = retrieve(s.cse.url(), PCH, &s.poller);
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(b["m2m:pch"]["rn"], json!("pch"));
    assert!(b["m2m:pch"].get("acpi").is_none(), "no acpi on a pch: {b}");
    let (rsc, b) = update(
        s.cse.url(),
        PCH,
        &s.poller,
        json!({ "m2m:pch": { "lbl": ["phone"] } }),
    );
    assert_eq!(rsc, 2004, "{b}");
    let (rsc, b) = get_with_query(s.cse.url(), "/cse-in", &s.poller, "fu=1&ty=15");
    assert_eq!(rsc, 2000, "{b}");
    let found: Vec<&str> = b["m2m:uril"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        found.len(),
        1,
        "the poller discovers its own channel only: {b}"
    );
    assert!(found[0].ends_with("poller/pch"), "{b}");
    let (rsc, b) = get_with_query(s.cse.url(), "/cse-in", &s.publisher, "fu=1&ty=15");
    assert!(
        rsc == 4103 || b["m2m:uril"].as_array().is_none_or(|a| a.is_empty()),
        "another AE finds no channel: {rsc} {b}"
    );
}

#[test]
fn bad_input_on_a_channel_gets_its_status_code() {
    let s = setup();
    // pcu is virtual: no UPDATE, DELETE or CREATE under it.
    let (rsc, _) = update(s.cse.url(), PCU, &s.poller, json!({ "m2m:pch": {} }));
    assert_eq!(rsc, 4005, "UPDATE of pcu");
    let (rsc, _) = delete(s.cse.url(), PCU, &s.poller);
    assert_eq!(rsc, 4005, "DELETE of pcu");
    let (rsc, _) = create(s.cse.url(), PCU, &s.poller, 3, json!({ "m2m:cnt": {} }));
    assert_eq!(rsc, 4005, "CREATE under pcu");
    // An answer that is not m2m:rsp, or that answers nothing.
    let (rsc, _) = notify(s.cse.url(), PCU, &s.poller, json!({ "m2m:sgn": {} }));
    assert_eq!(rsc, 4000, "NOTIFY without m2m:rsp");
    let (rsc, _) = notify(
        s.cse.url(),
        PCU,
        &s.poller,
        json!({ "m2m:rsp": { "rqi": "x" } }),
    );
    assert_eq!(rsc, 4000, "m2m:rsp without rsc");
    let (rsc, _) = answer(&s, "nobody-asked", 2000, None);
    assert_eq!(rsc, 4004, "an answer to no request");
    // A channel under a container, attributes a pch does not have, and the reserved name.
    create_cnt(
        s.cse.url(),
        "/cse-in/poller",
        &s.poller,
        json!({ "rn": "box" }),
    );
    let (rsc, _) = create(
        s.cse.url(),
        "/cse-in/poller/box",
        &s.poller,
        15,
        json!({ "m2m:pch": {} }),
    );
    assert_eq!(rsc, 4108, "a pch only under an AE or remoteCSE");
    let (rsc, _) = update(
        s.cse.url(),
        PCH,
        &s.poller,
        json!({ "m2m:pch": { "acpi": ["cse-in/poller/acp"] } }),
    );
    assert_eq!(rsc, 4000, "a pch has no acpi");
    let (rsc, _) = create_cnt_rsc(&s, "pcu");
    assert_eq!(rsc, 4000, "pcu is reserved for the virtual child");
}

fn create_cnt_rsc(s: &Setup, rn: &str) -> (u16, Value) {
    create(
        s.cse.url(),
        "/cse-in/poller",
        &s.poller,
        3,
        json!({ "m2m:cnt": { "rn": rn } }),
    )
}

#[test]
fn deleting_the_channel_ends_its_polls_and_the_ae_is_reached_at_its_poa_again() {
    let s = setup();
    let base = s.cse.url().to_owned();
    let poller = s.poller.clone();
    let poll = std::thread::spawn(move || with_ret("GET", &base, PCU, &poller, 8000, None));
    std::thread::sleep(Duration::from_millis(300));
    let (rsc, _) = delete(s.cse.url(), PCH, &s.poller);
    assert_eq!(rsc, 2002);
    let r = poll.join().expect("poll thread");
    assert_eq!(
        r.rsc, 4004,
        "the waiting poll learns the channel is gone: {:?}",
        r.body
    );
    // Without a channel, a NOTIFY for the AE goes to its pointOfAccess, which it has none of.
    let (rsc, _) = notify(
        s.cse.url(),
        "/cse-in/poller",
        &s.publisher,
        json!({ "m2m:sgn": { "sur": "/id-in/x", "nev": { "net": 1 } } }),
    );
    assert_eq!(rsc, 5103, "no channel, no pointOfAccess");
    let r = long_poll(&s, &s.poller, 300);
    assert_eq!(r.rsc, 4004, "no pcu without the channel");
}

#[test]
fn a_sender_waiting_on_a_deleted_channel_is_told_the_target_is_unreachable() {
    let s = setup();
    let base = s.cse.url().to_owned();
    let publisher = s.publisher.clone();
    let sender = std::thread::spawn(move || {
        with_ret(
            "POST",
            &base,
            "/cse-in/poller",
            &publisher,
            8000,
            Some(&json!({ "m2m:sgn": { "sur": "/id-in/x", "nev": { "net": 1 } } })),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    // The AE deregisters: its channel goes with it.
    let (rsc, _) = delete(s.cse.url(), "/cse-in/poller", &s.poller);
    assert_eq!(rsc, 2002);
    let got = sender.join().expect("sender thread");
    assert_eq!(got.rsc, 5103, "{:?}", got.body);
}

/// `m2m ae` with `[notifications] binding = "polling"`: it registers without a pointOfAccess,
/// makes its channel, subscribes, and prints what it receives by long polling; a notification
/// for a subscription it never made is answered 4004 through the channel, and printed nowhere.
#[test]
fn m2m_ae_hears_its_notifications_by_long_polling() {
    let cse = CseProcess::start_in();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("phone.toml");
    std::fs::write(
        &config,
        format!(
            "[ae]\nresource_name = \"phone\"\napp_id = \"Nphone\"\noriginator = \"Cphone\"\n\
             [cse]\nurl = \"{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\ntimeout_seconds = 5\n\
             [security]\nmode = \"none\"\n\
             [notifications]\nbinding = \"polling\"\n\
             [[create]]\nty = 3\ncontent = {{ \"m2m:cnt\" = {{ rn = \"state\" }} }}\n\
             [[subscribe]]\nto = \"cse-in/phone/state\"\nrn = \"self\"\n",
            cse.url()
        ),
    )
    .unwrap();
    let ae = AeProcess::start(&config);
    let ready = ae.ready(&cse);
    assert_eq!(ready["aei"], json!("Cphone"), "{ready}");
    assert_eq!(ready["poa"], Value::Null, "no pointOfAccess: {ready}");
    assert_eq!(ready["polling"], json!(true), "{ready}");
    let (rsc, b) = retrieve(cse.url(), "/cse-in/phone", "Cphone");
    assert_eq!(rsc, 2000);
    assert_eq!(
        b["m2m:ae"]["rr"],
        json!(false),
        "not request-reachable: {b}"
    );
    let (rsc, b) = retrieve(cse.url(), "/cse-in/phone/pch", "Cphone");
    assert_eq!(rsc, 2000, "its channel: {b}");

    create_cin(cse.url(), "/cse-in/phone/state", "Cphone", "UNLOCKED");
    let note = ae.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{note}"
    );
    // The admin (who may NOTIFY any AE) sends a notification of a subscription the AE never made.
    let forged = json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED" } }, "net": 3 }, "sur": "/id-in/sub-forged" } });
    let (rsc, b) = notify(cse.url(), "/cse-in/phone", "CAdmin", forged);
    assert_eq!(rsc, 4004, "the AE's own answer, through the channel: {b}");
    assert_eq!(
        ae.silent_for(Duration::from_millis(500)),
        None,
        "nothing printed for it"
    );
}
