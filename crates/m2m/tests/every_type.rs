//! Access control and discovery of every resource type (TS-0001 clause 9.6) the CSE reports in
//! its supportedResourceType (`srt` of the CSEBase), over HTTP on real `m2m cse` processes: one
//! resource of each type, made by its natural owner (a registered AE, or the administrator for
//! what only the administrator makes), is found by its owner's discovery by type (TS-0001 clause
//! 10.2.6, TS-0004 clause 7.3.3.17) and is neither retrieved nor discovered by a registered AE
//! that no policy grants anything (TS-0001 clause 9.6.2, TS-0003 clause 7.1). A type in `srt`
//! that is neither made here nor named in [`ELSEWHERE`] fails the test.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const ADMIN: &str = "CAdmin";
const OWNER: &str = "Cowner";
const STRANGER: &str = "Cstranger";
/// Every discovery starts at the CSEBase: the widest search either originator can ask for.
const ROOT: &str = "/cse-in";
/// The token issuer the CSE trusts (`[[dynamic_authorization.token_issuers]]`).
const DAS_NAME: &str = "das.m2m.example.com";
const LOCK_CND: &str = "org.onem2m.common.moduleclass.lock";

/// The types in `srt` that this file does not make, why, and which test covers them.
const ELSEWHERE: &[(u16, &str)] = &[
    (
        5,
        "CSEBase: the root of every discovery here (a discovery never lists its own target), \
         readable by every registered AE by design; access_control.rs defaults_without_policies",
    ),
    (
        45,
        "localMulticastGroup: made only on a member CSE by its registrar, with a group key that \
         opens, and joins a multicast address: needs a network namespace; multicast.rs scenario \
         (discovered by type on the member, neither read nor discovered by an AE there)",
    ),
    (
        10002,
        "AEAnnc: made on the IN only by an MN-CSE announcing an S-stem AE registered there, over \
         the MN's own association; registration.rs an_mn_registers_an_s_stem_only_once_the_in_recorded_it \
         (discovered by type by the admin, neither discovered nor read by an AE of the IN), \
         identity_attacks.rs an_s_stem_is_announced_once_in_the_sp_and_only_by_its_cse",
    ),
];

/// One resource made here: its type, its structured address (CSE-relative, as `m2m:uril`
/// lists it) and the originator that owns it.
struct Made {
    ty: u16,
    srn: String,
    owner: &'static str,
}

/// The CSE under test and what was made on it.
struct World {
    cse: CseProcess,
    /// The MN-CSE registered with `cse`: its registration is the `<remoteCSE>`.
    _mn: CseProcess,
    _pki: Pki,
    /// Verifies subscriptions and receives their notifications.
    _rx: Receiver,
    made: Vec<Made>,
}

/// The structured address of the resource a CREATE answer describes, under `parent`
/// (e.g. `cse-in/owner`).
fn child_srn(parent: &str, b: &Value) -> String {
    let rn = b
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|r| r["rn"].as_str())
        .unwrap_or_else(|| panic!("no rn in {b}"));
    format!("{parent}/{rn}")
}

/// A CREATE of `body` (type `ty`) under `/parent` by `from` that must succeed; its structured
/// address.
fn make(u: &str, parent: &str, from: &str, ty: u16, body: Value) -> String {
    let (rsc, b) = create(u, &format!("/{parent}"), from, ty, body);
    assert_eq!(rsc, 2001, "type {ty} under {parent} by {from}: {b}");
    child_srn(parent, &b)
}

/// A signed token for `Cowner` from the issuer's key in `dir` (`m2m das token`): the token and
/// its Token-ID. The CSE must trust `dir/das-tokens.pub.jwk`.
fn issue_token(dir: &std::path::Path) -> (String, String) {
    let das = dir.join("das.toml");
    // `das token` reads only `issuer` and `token_key`; the listener's files are never opened.
    write_private(
        &das,
        &format!(
            "listen = \"127.0.0.1:0\"\ncertificate = \"unused.pem\"\nprivate_key = \"unused.key\"\n\
             trusted_ca = \"unused-ca.pem\"\nsp_fqdn = \"m2m.example.com\"\n\
             issuer = \"{DAS_NAME}\"\ntoken_key = \"das-tokens.jwk\"\n"
        ),
    );
    let out = m2m(&[
        "das",
        "token",
        "--config",
        das.to_str().expect("UTF-8 path"),
        "--holder",
        "/id-in/Cowner",
        "--audience",
        "/id-in",
        "--role",
        &format!("reader@{DAS_NAME}"),
    ]);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("token ID: ")
        .to_owned();
    (token, id)
}

/// An IN-CSE trusting a token issuer, with an MN-CSE registered with it, and one resource of
/// every type made here.
fn world() -> World {
    let pki = Pki::temp();
    let dir = pki.dir().to_owned();
    let public_key = token_issuer_key(&dir);
    let cse = CseProcess::start_temp(&format!(
        "{}\n[[dynamic_authorization.token_issuers]]\nid = \"{DAS_NAME}\"\npublic_key = {:?}\n",
        in_tls_config(&pki),
        public_key.display().to_string()
    ));
    let mn = CseProcess::start_temp(&mn_config(cse.https_url(), &pki));
    wait_registered(&cse, &mn);
    let rx = Receiver::start();
    let u = cse.url();
    let owner = register_ae(u, "/cse-in", OWNER, "owner", &[]);
    assert_eq!(owner, OWNER);
    register_ae(u, "/cse-in", STRANGER, "stranger", &[]);

    let mut made = Vec::new();
    let mut add = |ty: u16, srn: String, owner: &'static str| made.push(Made { ty, srn, owner });

    // The registrations themselves: the AE, and the MN's <remoteCSE>, which the operator reads.
    add(2, "cse-in/owner".into(), OWNER);
    add(16, "cse-in/id-mn".into(), ADMIN);

    // What an AE makes, under its own <AE>.
    let ae = "cse-in/owner";
    let acp = make(
        u,
        ae,
        OWNER,
        1,
        json!({ "m2m:acp": { "rn": "acp", "pv": { "acr": [acr(&[OWNER], OP_ALL)] },
            "pvs": { "acr": [acr(&[OWNER], OP_ALL)] } } }),
    );
    add(1, acp, OWNER);
    let bx = make(u, ae, OWNER, 3, json!({ "m2m:cnt": { "rn": "box" } }));
    let other = make(u, ae, OWNER, 3, json!({ "m2m:cnt": { "rn": "other" } }));
    add(3, bx.clone(), OWNER);
    let cin = make(u, &bx, OWNER, 4, json!({ "m2m:cin": { "con": "locked" } }));
    add(4, cin, OWNER);
    let grp = make(
        u,
        ae,
        OWNER,
        9,
        json!({ "m2m:grp": { "rn": "grp", "mt": 3, "mnm": 10, "mid": [bx] } }),
    );
    add(9, grp, OWNER);
    let lcp = make(
        u,
        ae,
        OWNER,
        10,
        json!({ "m2m:lcp": { "rn": "where", "los": 2, "lon": "positions" } }),
    );
    add(10, lcp, OWNER);
    let pch = make(u, ae, OWNER, 15, json!({ "m2m:pch": { "rn": "pch" } }));
    add(15, pch, OWNER);
    let sub = make(
        u,
        &bx,
        OWNER,
        23,
        json!({ "m2m:sub": { "rn": "sub", "nu": [rx.url()], "enc": { "net": [3] } } }),
    );
    add(23, sub.clone(), OWNER);
    let sch = make(
        u,
        &sub,
        OWNER,
        18,
        json!({ "m2m:sch": { "se": { "sce": ["* * * * * * *"] } } }),
    );
    add(18, sch, OWNER);
    let smd = make(
        u,
        &bx,
        OWNER,
        24,
        json!({ "m2m:smd": { "rn": "smd", "dcrp": 5, "dsp": b64(
            b"@prefix ex: <http://example.com/> . ex:frontDoor a ex:Lock ."
        ) } }),
    );
    add(24, smd, OWNER);
    let ntpr = make(
        u,
        &sub,
        OWNER,
        25,
        json!({ "m2m:ntpr": { "rn": "ref", "ntu": [rx.url()] } }),
    );
    add(25, ntpr, OWNER);
    // A notificationTargetPolicy lives under the CSEBase, its rules under it.
    let ntp = make(
        u,
        "cse-in",
        OWNER,
        26,
        json!({ "m2m:ntp": { "rn": "ownerPolicy", "acn": 1, "plbl": "owner" } }),
    );
    add(26, ntp.clone(), OWNER);
    let pdr = make(
        u,
        &ntp,
        OWNER,
        27,
        json!({ "m2m:pdr": { "rn": "rule", "dr": { "tod": ["* * * * * * *"] }, "drr": 1 } }),
    );
    add(27, pdr, OWNER);
    let door = make(
        u,
        ae,
        OWNER,
        28,
        json!({ "cod:lock": { "rn": "door", "cnd": LOCK_CND, "lock": true, "fcied": true, "mni": 3 } }),
    );
    add(28, door.clone(), OWNER);
    // fcied: the CSE records the state at creation as the first flexContainerInstance.
    let (rsc, la) = retrieve(u, &format!("/{door}/la"), OWNER);
    assert_eq!(rsc, 2000, "the door's first record: {la}");
    add(58, child_srn(&door, &la), OWNER);
    let ts = make(u, ae, OWNER, 29, json!({ "m2m:ts": { "rn": "ts" } }));
    add(29, ts.clone(), OWNER);
    let dgt = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let tsi = make(
        u,
        &ts,
        OWNER,
        30,
        json!({ "m2m:tsi": { "dgt": dgt, "con": "21" } }),
    );
    add(30, tsi, OWNER);
    // A consultation the CSE was not told to trust: made, never consulted.
    let dac = make(
        u,
        ae,
        OWNER,
        34,
        json!({ "m2m:dac": { "rn": "dac", "dae": true, "dap": ["https://127.0.0.1:9/das"] } }),
    );
    add(34, dac, OWNER);
    let crs = make(
        u,
        ae,
        OWNER,
        48,
        json!({ "m2m:crs": { "rn": "crs", "nu": [rx.url()], "twt": 2, "tws": "PT1.5S",
            "rrat": [bx, other], "encs": { "enc": [{ "net": [3] }] } } }),
    );
    add(48, crs, OWNER);
    let tsb = make(
        u,
        ae,
        OWNER,
        60,
        json!({ "m2m:tsb": { "rn": "tick", "bcnc": 1, "bcnu": [rx.url()] } }),
    );
    add(60, tsb, OWNER);
    let actr = make(
        u,
        &bx,
        OWNER,
        65,
        json!({ "m2m:actr": { "rn": "alarm", "evc": { "optr": 3, "sbjt": "mni", "thld": 10 },
            "evm": 1, "orc": other,
            "apv": { "op": 3, "fr": OWNER, "pc": { "m2m:cnt": { "lbl": ["alarm"] } } } } }),
    );
    add(65, actr.clone(), OWNER);
    let depr = make(
        u,
        &actr,
        OWNER,
        66,
        json!({ "m2m:depr": { "rn": "dep", "sfc": false,
            "evc": { "optr": 1, "sbjt": "mni", "thld": 100 }, "rri": other } }),
    );
    add(66, depr, OWNER);
    // A non-blocking request leaves a <request> under the CSEBase, its originator's.
    let ri = rqi();
    let r = raw(
        "GET",
        u,
        &format!("/{bx}?rt=1"),
        &[
            ("X-M2M-Origin", OWNER),
            ("X-M2M-RI", &ri),
            ("X-M2M-RVI", "3"),
        ],
        b"",
    );
    assert_eq!(r.rsc, 1001, "a non-blocking RETRIEVE: {:?}", r.body);
    let req_ri = r.body["m2m:uri"].as_str().expect("the <request>'s ID");
    let req = poll(WAIT, || {
        let (rsc, b) = retrieve(u, &format!("/{req_ri}"), OWNER);
        (rsc == 2000 && b["m2m:req"]["rs"] != json!(3)).then_some(b)
    })
    .unwrap_or_else(|| panic!("the <request> {req_ri} stayed pending"));
    add(17, child_srn("cse-in", &req), OWNER);

    // What only the administrator makes.
    let nod = make(
        u,
        "cse-in",
        ADMIN,
        14,
        json!({ "m2m:nod": { "rn": "gw", "ni": "urn:sn:gw" } }),
    );
    add(14, nod.clone(), ADMIN);
    let mgo = make(
        u,
        &nod,
        ADMIN,
        13,
        json!({ "m2m:bat": { "rn": "bat", "mgd": 1006, "btl": 23, "bts": 5 } }),
    );
    add(13, mgo, ADMIN);
    let stamp = |s: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(s))
            .format("%Y%m%dT%H%M%S")
            .to_string()
    };
    let rol = make(
        u,
        "cse-in",
        ADMIN,
        31,
        json!({ "m2m:rol": { "rn": "role", "rlid": "reader@roles.example.com", "tkis": ADMIN,
            "tkhd": OWNER, "tknb": stamp(-60), "tkna": stamp(3600) } }),
    );
    add(31, rol, ADMIN);
    let (token, tkid) = issue_token(&dir);
    let tk = make(
        u,
        "cse-in",
        ADMIN,
        32,
        json!({ "m2m:tk": { "rn": "token", "tkid": tkid, "tkob": token } }),
    );
    add(32, tk, ADMIN);
    // Last: a registration rule also governs the registrations after it.
    let asar = make(
        u,
        "cse-in",
        ADMIN,
        19,
        json!({ "m2m:asar": { "rn": "rule", "aai": ["Ntest"], "aae": ["C*"] } }),
    );
    add(19, asar, ADMIN);

    World {
        cse,
        _mn: mn,
        _pki: pki,
        _rx: rx,
        made,
    }
}

/// The supportedResourceType of the CSEBase, as the administrator reads it.
fn supported_types(u: &str) -> BTreeSet<u16> {
    let (rsc, b) = retrieve(u, ROOT, ADMIN);
    assert_eq!(rsc, 2000, "{b}");
    b["m2m:cb"]["srt"]
        .as_array()
        .unwrap_or_else(|| panic!("no srt: {b}"))
        .iter()
        .map(|t| {
            t.as_u64()
                .and_then(|t| u16::try_from(t).ok())
                .unwrap_or_else(|| panic!("srt entry {t}: {b}"))
        })
        .collect()
}

/// Every type the CSE reports has its place: made by [`world`] or named in [`ELSEWHERE`], not
/// both; and nothing is made or named here that the CSE does not report.
#[test]
fn every_supported_type_is_made_here_or_named_elsewhere() {
    let w = world();
    let srt = supported_types(w.cse.url());
    let covered: BTreeSet<u16> = w.made.iter().map(|m| m.ty).collect();
    let elsewhere: BTreeSet<u16> = ELSEWHERE.iter().map(|(ty, _)| *ty).collect();
    let unplaced: Vec<&u16> = srt
        .difference(&covered)
        .filter(|t| !elsewhere.contains(t))
        .collect();
    assert!(
        unplaced.is_empty(),
        "types in srt neither made here nor in ELSEWHERE: {unplaced:?} (srt {srt:?})"
    );
    let both: Vec<&u16> = covered.intersection(&elsewhere).collect();
    assert!(
        both.is_empty(),
        "made here and named in ELSEWHERE: {both:?}"
    );
    let unknown: Vec<&u16> = covered
        .union(&elsewhere)
        .filter(|t| !srt.contains(t))
        .collect();
    assert!(
        unknown.is_empty(),
        "made or named here, not in srt: {unknown:?} (srt {srt:?})"
    );
}

/// Each resource: its owner retrieves it and finds it by discovery of its type from the CSEBase;
/// the stranger's RETRIEVE is refused (4103) and its same discovery (2000) leaves it out. Every
/// failure is collected, so that one run names every type that fails.
#[test]
fn every_type_is_discovered_by_its_owner_and_hidden_from_a_stranger() {
    let w = world();
    let u = w.cse.url();
    let mut failures = Vec::new();
    for Made { ty, srn, owner } in &w.made {
        let (ty, owner) = (*ty, *owner);
        let query = format!("fu=1&ty={ty}");
        let (rsc, b) = retrieve(u, &format!("/{srn}"), owner);
        if rsc != 2000 {
            failures.push(format!(
                "{ty} {srn}: RETRIEVE by its owner {owner}: {rsc} {b}"
            ));
        }
        let (rsc, b) = get_with_query(u, ROOT, owner, &query);
        if rsc != 2000 || !uril(&b).contains(srn) {
            failures.push(format!(
                "{ty} {srn}: discovery {ROOT}?{query} by its owner {owner} does not find it: {rsc} {b}"
            ));
        }
        let (rsc, b) = retrieve(u, &format!("/{srn}"), STRANGER);
        if rsc != 4103 {
            failures.push(format!("{ty} {srn}: RETRIEVE by {STRANGER}: {rsc} {b}"));
        }
        // The stranger may discover from the CSEBase; what it may not discover is left out.
        let (rsc, b) = get_with_query(u, ROOT, STRANGER, &query);
        if rsc != 2000 || uril(&b).contains(srn) {
            failures.push(format!(
                "{ty} {srn}: discovery {ROOT}?{query} by {STRANGER}: {rsc} {b}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
