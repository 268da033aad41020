//! ESData between processes (seeds/001 clause 5.7, Annex A; TS-0003 clause 8.5.3): an IN-CSE and
//! an MN-CSE over mutual TLS, a MAF holding the trusted third party. The gateway registers its
//! sensor's credentials at the TTP and stores the sensor's data signed and encrypted as a
//! contentInstance on the MN (`m2m e2e protect-data` + `m2m request`); the authorized application
//! reads it through the IN-CSE, fetches the keys from the TTP by their IDs and opens it
//! (`m2m e2e open-data`). Attacks: the MN alters the stored content in its SQLite file, the content
//! is copied to another container, its creator is changed, and an application the TTP does not
//! list asks for the key; an old reading re-posted as the latest instance is refused by a reader
//! that keeps a state (`--state`), and one older than `--max-age` by any reader.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const MAF_FQDN: &str = "maf.sec.m2m.example.com";
const APP_KM_ID: &str = "app@maf.sec.m2m.example.com";
const APP_KM: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KM_ID: &str = "other@maf.sec.m2m.example.com";
const OTHER_KM: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const CONTAINER: &str = "/id-mn/cse-mn/gw/sensor1";
const READING: &str = r#"{"temperature":21.5,"unit":"C"}"#;

/// The MAF as a process: the app and another application with Km, the MN delegated for its AEs.
fn start_maf(pki: &Pki) -> ServiceProcess {
    pki.issue(&["--kind", "maf", "--id", MAF_FQDN], "maf");
    start_maf_process(
        pki,
        MAF_FQDN,
        &format!(
            "[[km]]\nclient_id = \"/Sapp\"\nkm_id = \"{APP_KM_ID}\"\nkey = \"{APP_KM}\"\n\
             [[km]]\nclient_id = \"/Sother\"\nkm_id = \"{OTHER_KM_ID}\"\nkey = \"{OTHER_KM}\"\n\
             [ttp]\nmax_lifetime = 86400\n\
             [[ttp.delegations]]\ndelegate = \"/id-mn\"\nsubjects = [\"/id-mn/C*\"]\n"
        ),
    )
}

/// IN and MN over mutual TLS; the MN's TLS port is fixed so that its pointOfAccess at the IN
/// stays valid across a restart.
fn start_cses(pki: &Pki) -> (CseProcess, CseProcess) {
    let in_cse = CseProcess::start_temp(&in_tls_config(pki));
    let mn_cfg = mn_config(in_cse.https_url(), pki).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{}\"", unused_port()),
    );
    let mn = CseProcess::start_temp(&mn_cfg);
    wait_registered(&in_cse, &mn);
    // The applications are registered with the IN-CSE by SP-assigned AE-IDs (their MAF identities).
    register_ae(in_cse.url(), "/cse-in", "Sapp", "app", &[]);
    register_ae(in_cse.url(), "/cse-in", "Sother", "other", &[]);
    (in_cse, mn)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Everything the gateway set up: its key files, the TTP's credential IDs.
struct Gateway {
    sig_id: String,
    enc_id: String,
    sig_key: PathBuf,
    enc_key: PathBuf,
}

/// The gateway makes its sensor's keys, registers them at the TTP for the app (as the MN-CSE,
/// certificate), and its app AE makes the container.
fn gateway_setup(pki: &Pki, maf: &ServiceProcess, mn: &CseProcess) -> Gateway {
    let dir = pki.dir();
    let sig_key = dir.join("sensor1-sig.jwk");
    let enc_key = dir.join("sensor1-enc.jwk");
    let out = m2m_command_env(
        &[
            "e2e",
            "keygen",
            "--kty",
            "ec",
            "--kid",
            "sensor1-sig",
            "--out",
            &p(&sig_key),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = dir.join("sensor1-sig.pub.jwk");
    std::fs::write(&public, &out.stdout).unwrap();
    let out = m2m_command_env(
        &[
            "e2e",
            "keygen",
            "--kty",
            "oct",
            "--kid",
            "sensor1-enc",
            "--out",
            &p(&enc_key),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let register = |usage: &str, jwk: &Path| -> String {
        let (cert, key) = pki.cse_cert("id-mn");
        let out = m2m_command_env(
            &[
                "ttp",
                "--maf-url",
                maf.url(),
                "--maf-fqdn",
                MAF_FQDN,
                "--cert",
                &p(&cert),
                "--key",
                &p(&key),
                "--ca",
                &p(&pki.ca_pem()),
                "register",
                "--subject",
                "/id-mn/Csensor1",
                "--usage",
                usage,
                "--jwk",
                &format!("@{}", p(jwk)),
                "--requester",
                "/Sapp",
            ],
            &[],
        );
        assert!(out.status.success(), "register: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["credentialID"].as_str().unwrap().to_owned()
    };
    let sig_id = register("esdata-integrity", &public);
    let enc_id = register("esdata-confidentiality", &enc_key);
    let gw = register_ae(mn.url(), "/cse-mn", "Cgw", "gw", &[]);
    assert_eq!(gw, "Cgw");
    // The applications read through the IN-CSE, which forwards them as /id-in/<AE-ID>.
    let acp = create_acp(
        mn.url(),
        "/cse-mn/gw",
        "Cgw",
        "readers",
        vec![
            acr(&["/id-in/Sapp", "/id-in/Sother"], OP_RETRIEVE),
            acr(&["Cgw"], OP_ALL),
        ],
        vec![acr(&["Cgw"], OP_ALL)],
    );
    for rn in ["sensor1", "sensor2"] {
        create_cnt(
            mn.url(),
            "/cse-mn/gw",
            "Cgw",
            json!({ "rn": rn, "acpi": [acp] }),
        );
    }
    Gateway {
        sig_id,
        enc_id,
        sig_key,
        enc_key,
    }
}

/// `m2m e2e protect-data` then `m2m request -X create --ty 4` as the gateway app.
fn store_protected(gw: &Gateway, mn: &CseProcess, container: &str, bound_to: &str) -> String {
    let out = m2m_command_env(
        &[
            "e2e",
            "protect-data",
            "--to",
            bound_to,
            "--cr",
            "Cgw",
            "--sign",
            &p(&gw.sig_key),
            "--sign-kid",
            &gw.sig_id,
            "--encrypt",
            &p(&gw.enc_key),
            "--encrypt-kid",
            &gw.enc_id,
            "--content",
            READING,
        ],
        &[],
    );
    assert!(out.status.success(), "protect-data: {}", text(&out.stderr));
    let body = text(&out.stdout);
    assert!(
        !body.contains("temperature"),
        "the content leaves encrypted: {body}"
    );
    let out = m2m_command_env(
        &[
            "request",
            "--url",
            mn.url(),
            "-X",
            "create",
            "--ty",
            "4",
            "--to",
            container.trim_start_matches('/'),
            "--from",
            "Cgw",
            "--json",
            "--body",
            body.trim(),
        ],
        &[],
    );
    assert!(out.status.success(), "create: {}", text(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["pc"]["m2m:cin"]["ri"].as_str().unwrap().to_owned()
}

/// The application reads the latest instance through the IN-CSE (`m2m request --json`).
fn read_via_in(in_cse: &CseProcess, container: &str, from: &str) -> String {
    let out = m2m_command_env(
        &[
            "request",
            "--url",
            in_cse.url(),
            "--to",
            &format!("{container}/la"),
            "--from",
            from,
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "read: {}", text(&out.stdout));
    text(&out.stdout)
}

/// `m2m e2e open-data` with both keys fetched from the TTP by their IDs.
fn open_with_ttp(
    maf: &ServiceProcess,
    gw: &Gateway,
    km: (&str, &str),
    to: &str,
    cin: &str,
) -> (i32, String, String) {
    open_with_ttp_args(maf, gw, km, to, cin, &[])
}

/// [`open_with_ttp`] with further options (`--state`, `--max-age`, `--json`).
fn open_with_ttp_args(
    maf: &ServiceProcess,
    gw: &Gateway,
    km: (&str, &str),
    to: &str,
    cin: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "e2e",
        "open-data",
        "--to",
        to,
        "--cin",
        cin,
        "--ttp-url",
        maf.url(),
        "--ttp-fqdn",
        MAF_FQDN,
        "--km-id",
        km.0,
        "--km-env",
        "APP_KM",
        "--verify-ttp",
        &gw.sig_id,
        "--decrypt-ttp",
        &gw.enc_id,
    ];
    args.extend(extra);
    let out = m2m_command_env(&args, &[("APP_KM", km.1)]);
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn assert_no_key(gw: &Gateway, outputs: &[&str]) {
    let jwk: Value = serde_json::from_str(&std::fs::read_to_string(&gw.enc_key).unwrap()).unwrap();
    let k = jwk["k"].as_str().unwrap();
    let sig: Value = serde_json::from_str(&std::fs::read_to_string(&gw.sig_key).unwrap()).unwrap();
    let d = sig["d"].as_str().unwrap();
    for o in outputs {
        assert!(!o.contains(k) && !o.contains(d), "a key in an output: {o}");
    }
}

#[test]
fn gateway_protects_for_its_sensor_and_the_authorized_app_opens_through_the_in_cse() {
    let pki = Pki::temp();
    let maf = start_maf(&pki);
    let (in_cse, mn) = start_cses(&pki);
    let gw = gateway_setup(&pki, &maf, &mn);
    store_protected(&gw, &mn, "/cse-mn/gw/sensor1", CONTAINER);

    // The hosting CSE keeps the content opaque: what it serves is the JWE, not the reading.
    let read = read_via_in(&in_cse, CONTAINER, "Sapp");
    assert!(!read.contains("temperature"), "{read}");
    let (code, out, err) = open_with_ttp(&maf, &gw, (APP_KM_ID, APP_KM), CONTAINER, &read);
    assert_eq!(code, 0, "open-data: {out} {err}");
    assert_eq!(out.trim(), READING);

    // An application the TTP does not list gets 4004 for the key (as for an unknown ID) ...
    let read = read_via_in(&in_cse, CONTAINER, "Sother");
    let (code, out, err) = open_with_ttp(&maf, &gw, (OTHER_KM_ID, OTHER_KM), CONTAINER, &read);
    assert_eq!(code, 1, "{out} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rsc"], json!(4004), "{v}");
    // ... and a key of its own under the same kid decrypts nothing.
    let guess = pki.dir().join("guess.jwk");
    let g = m2m_command_env(
        &[
            "e2e",
            "keygen",
            "--kty",
            "oct",
            "--kid",
            &gw.enc_id,
            "--out",
            &p(&guess),
        ],
        &[],
    );
    assert!(g.status.success());
    let public = pki.dir().join("sensor1-sig.pub.jwk");
    let out = m2m_command_env(
        &[
            "e2e",
            "open-data",
            "--to",
            CONTAINER,
            "--cin",
            &read,
            "--verify",
            &p(&public),
            "--decrypt",
            &p(&guess),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("temperature"));
    assert_no_key(&gw, &[&read, &text(&out.stdout), &text(&out.stderr), &err]);
}

#[test]
fn the_reader_detects_a_hosting_cse_that_alters_moves_or_reattributes_the_content() {
    let pki = Pki::temp();
    let maf = start_maf(&pki);
    let (in_cse, mn) = start_cses(&pki);
    let gw = gateway_setup(&pki, &maf, &mn);
    let ri = store_protected(&gw, &mn, "/cse-mn/gw/sensor1", CONTAINER);

    // Copied into another container (with a genuine creator): the binding names sensor1.
    store_protected(&gw, &mn, "/cse-mn/gw/sensor2", CONTAINER);
    let other = "/id-mn/cse-mn/gw/sensor2";
    let read = read_via_in(&in_cse, other, "Sapp");
    let (code, out, _) = open_with_ttp(&maf, &gw, (APP_KM_ID, APP_KM), other, &read);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("4106") && out.contains("written to"), "{out}");

    // The MN is stopped and its SQLite file edited: first the creator, then the content.
    let data = mn.data_dir().to_owned();
    let mut mn = mn;
    let edit = |mn: CseProcess, change: &dyn Fn(&mut Value)| -> CseProcess {
        let mut mn = mn;
        mn.kill9();
        let db = rusqlite::Connection::open(data.join("resources.db")).unwrap();
        let doc: String = db
            .query_row("SELECT doc FROM resources WHERE ri = ?1", [&ri], |r| {
                r.get(0)
            })
            .unwrap();
        let mut v: Value = serde_json::from_str(&doc).unwrap();
        change(&mut v);
        db.execute(
            "UPDATE resources SET doc = ?1 WHERE ri = ?2",
            rusqlite::params![v.to_string(), ri],
        )
        .unwrap();
        drop(db);
        let mn = mn.restart();
        wait_registered(&in_cse, &mn);
        mn
    };
    mn = edit(mn, &|v| set_attr(v, "cr", json!("Cintruder")));
    let read = read_via_in(&in_cse, CONTAINER, "Sapp");
    assert!(read.contains("Cintruder"), "the edit took effect: {read}");
    let (code, out, _) = open_with_ttp(&maf, &gw, (APP_KM_ID, APP_KM), CONTAINER, &read);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("4106") && out.contains("creator"), "{out}");

    mn = edit(mn, &|v| {
        set_attr(v, "cr", json!("Cgw"));
        let con = find_attr(v, "con").as_str().unwrap().to_owned();
        // One character of the ciphertext (the fourth part of the compact JWE) changes.
        let mut parts: Vec<String> = con.split('.').map(str::to_owned).collect();
        let c = &mut parts[3];
        let first = if c.starts_with('A') { "B" } else { "A" };
        c.replace_range(0..1, first);
        set_attr(v, "con", json!(parts.join(".")));
    });
    let read = read_via_in(&in_cse, CONTAINER, "Sapp");
    let (code, out, _) = open_with_ttp(&maf, &gw, (APP_KM_ID, APP_KM), CONTAINER, &read);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("4106"), "{out}");
    assert!(!out.contains("temperature"), "{out}");
    drop(mn);
}

/// The stored document holds the attributes at the top level or under the type's root name.
fn attrs_of(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if v.get("m2m:cin").is_some() {
        return v["m2m:cin"].as_object_mut().unwrap();
    }
    v.as_object_mut().unwrap()
}

fn set_attr(v: &mut Value, k: &str, val: Value) {
    attrs_of(v).insert(k.into(), val);
}

fn find_attr(v: &mut Value, k: &str) -> Value {
    attrs_of(v).get(k).cloned().unwrap_or(Value::Null)
}

#[test]
fn the_reader_refuses_an_old_reading_re_posted_as_the_latest() {
    let pki = Pki::temp();
    let maf = start_maf(&pki);
    let (in_cse, mn) = start_cses(&pki);
    let gw = gateway_setup(&pki, &maf, &mn);
    let app = (APP_KM_ID, APP_KM);
    let state = p(&pki.dir().join("app.state"));
    let with_state = ["--state", state.as_str(), "--json"];

    // The first reading, opened: --json shows its creation time.
    store_protected(&gw, &mn, "/cse-mn/gw/sensor1", CONTAINER);
    let first = read_via_in(&in_cse, CONTAINER, "Sapp");
    let (code, out, err) = open_with_ttp_args(&maf, &gw, app, CONTAINER, &first, &with_state);
    assert_eq!(code, 0, "{out} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["con"], json!(READING));
    let created = m2m_core::time::parse(v["created"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - created).num_seconds().abs() < 60,
        "{v}"
    );

    // A second reading (same value, later time) is newer: opened.
    store_protected(&gw, &mn, "/cse-mn/gw/sensor1", CONTAINER);
    let second = read_via_in(&in_cse, CONTAINER, "Sapp");
    let (code, out, err) = open_with_ttp_args(&maf, &gw, app, CONTAINER, &second, &with_state);
    assert_eq!(code, 0, "{out} {err}");

    // The first reading's stored bytes re-posted as the writer (what the hosting CSE, or anyone
    // who may create as Cgw, can do): they become the latest instance with a valid binding.
    let first_cin: Value = serde_json::from_str(&first).unwrap();
    let old = first_cin["pc"]["m2m:cin"].clone();
    let r = create_full(
        mn.url(),
        "/cse-mn/gw/sensor1",
        "Cgw",
        4,
        json!({ "m2m:cin": { "cnf": old["cnf"], "con": old["con"], "cr": null } }),
    );
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let replayed = read_via_in(&in_cse, CONTAINER, "Sapp");
    let latest: Value = serde_json::from_str(&replayed).unwrap();
    assert_eq!(latest["pc"]["m2m:cin"]["con"], old["con"]);
    let (code, out, _) = open_with_ttp_args(&maf, &gw, app, CONTAINER, &replayed, &with_state);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rsc"], json!(4106), "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("replayed or out of order"), "{why}");
    assert!(why.contains(&format!("from Cgw in {CONTAINER}")), "{why}");
    assert!(!out.contains("temperature"), "{out}");
    // The same reading twice (equal time) is a replay too.
    let (code, out, _) = open_with_ttp_args(&maf, &gw, app, CONTAINER, &second, &with_state);
    assert_eq!(code, 1, "{out}");
    // It is genuine data: a reader without state takes it for the latest.
    let (code, out, _) = open_with_ttp(&maf, &gw, app, CONTAINER, &replayed);
    assert_eq!((code, out.trim()), (0, READING));

    // --max-age: the second reading, a little later, is too old for one second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out, _) =
        open_with_ttp_args(&maf, &gw, app, CONTAINER, &second, &["--max-age", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("older than the maximum age of 1 s"), "{out}");
    let (code, out, _) =
        open_with_ttp_args(&maf, &gw, app, CONTAINER, &second, &["--max-age", "600"]);
    assert_eq!(code, 0, "{out}");
}
