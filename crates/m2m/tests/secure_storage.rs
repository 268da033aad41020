//! The Secure Storage service (seeds/002 clause 6.3.5.2, issue 18), run for real: AEs proven by
//! their certificates store sensitive data objects at `<CSEBase>/secureStorage`; only the owner
//! and the readers it names read them back, and the CSE's files never hold them in the clear.

mod common;

use common::*;
use serde_json::{json, Value};

/// What the lock keeps; no file, log or other entity may ever see it.
const SECRET: &str = "wifi-passphrase-Zq81-never-in-clear";

/// A CSE whose software keystore holds the secret the storage key is derived from.
fn cse_with_storage(pki: &Pki, extra: &str) -> CseProcess {
    let ks = pki.dir().join("cse.keystore");
    let kf = pki.dir().join("cse-keystore.key");
    let (ks, kf) = (ks.to_str().unwrap(), kf.to_str().unwrap());
    let init = m2m_command(&[
        "keys",
        "init",
        "--keystore",
        ks,
        "--key-file",
        kf,
        "--create-key-file",
    ]);
    assert!(init.status.success(), "{init:?}");
    let add = m2m_command(&[
        "keys",
        "add-secret",
        "--keystore",
        ks,
        "--key-file",
        kf,
        "--name",
        "secure-storage",
        "--generate",
    ]);
    assert!(add.status.success(), "{add:?}");
    CseProcess::start_temp(&format!(
        "{}\n{extra}\n[security]\nkeystore = {ks:?}\nkey_file = {kf:?}\n\n[secure_storage]\nsecret = \"secure-storage\"\n",
        in_tls_config(pki)
    ))
}

/// An AE with its certificate, registered.
fn ae(pki: &Pki, cse: &CseProcess, name: &str) -> TlsClient {
    let (pem, key) = match pki.dir().join(format!("{name}.pem")) {
        issued if issued.exists() => (issued, pki.dir().join(format!("{name}.key"))),
        _ => pki.issue(&["--kind", "ae", "--id", name, "--cse", "/id-in"], name),
    };
    let client = TlsClient::certificate(&pki.ca_pem(), &pem, &key, IN_SERVER_NAME);
    let body = json!({ "m2m:ae": { "rn": name, "api": "Nstore", "rr": false, "srv": ["3"] } });
    let r = client
        .request(
            cse.https_url(),
            "POST",
            "/cse-in",
            Some(name),
            Some(2),
            Some(&body),
        )
        .unwrap();
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    client
}

fn call(
    c: &TlsClient,
    cse: &CseProcess,
    method: &str,
    path: &str,
    from: &str,
    body: Option<Value>,
) -> Resp {
    c.request(
        cse.https_url(),
        method,
        path,
        Some(from),
        None,
        body.as_ref(),
    )
    .unwrap()
}

#[test]
fn an_ae_stores_a_secret_that_only_it_and_its_readers_read_back() {
    let pki = Pki::temp();
    let cse = cse_with_storage(&pki, "");
    let lock = ae(&pki, &cse, "Clock");
    let thief = ae(&pki, &cse, "Cthief");
    let friend = ae(&pki, &cse, "Cfriend");

    // The lock stores its secret: the answer describes it, without the content.
    let stored = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/wifi",
        "Clock",
        Some(json!({"m2m:sdo": {"con": SECRET}})),
    );
    assert_eq!(stored.rsc, 2001, "{:?}", stored.body);
    let sdo = &stored.body["m2m:sdo"];
    assert_eq!(sdo["rn"], "wifi");
    assert_eq!(sdo["own"], "//m2m.example.com/id-in/Clock");
    assert_eq!(sdo["cs"], SECRET.len());
    assert!(sdo.get("con").is_none(), "{sdo}");
    let ri = sdo["ri"].as_str().unwrap().to_string();
    // It reads it back, by name and by ID.
    for path in [
        "/cse-in/secureStorage/wifi".to_string(),
        format!("/cse-in/secureStorage/{ri}"),
    ] {
        let got = call(&lock, &cse, "GET", &path, "Clock", None);
        assert_eq!(
            (got.rsc, &got.body["m2m:sdo"]["con"]),
            (2000, &json!(SECRET)),
            "{path}"
        );
    }

    // Another AE gets nothing, in any way it asks: as if there were no such object.
    for (method, path, body) in [
        ("GET", format!("/cse-in/secureStorage/{ri}"), None),
        ("DELETE", format!("/cse-in/secureStorage/{ri}"), None),
        ("GET", "/cse-in/secureStorage/wifi".to_string(), None),
        ("GET", format!("/~/id-in/cse-in/secureStorage/{ri}"), None),
        (
            "GET",
            format!("/_/m2m.example.com/id-in/cse-in/secureStorage/{ri}"),
            None,
        ),
        (
            "PUT",
            format!("/cse-in/secureStorage/{ri}"),
            Some(json!({"m2m:sdo": {"con": "mine", "rdr": ["Cthief"]}})),
        ),
    ] {
        let r = call(&thief, &cse, method, &path, "Cthief", body);
        assert!(
            r.rsc == 4004 || (method == "PUT" && r.rsc == 2001),
            "{method} {path}: {} {:?}",
            r.rsc,
            r.body
        );
        assert!(!r.body.to_string().contains(SECRET));
    }
    // (The thief's PUT stored an object of its own named like the lock's ID: the lock's is
    // untouched.)
    let still = call(
        &lock,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(still.body["m2m:sdo"]["con"], SECRET);
    assert_eq!(still.body["m2m:sdo"]["rdr"], json!([]));
    // Claiming to be the lock over the thief's association is no way in either.
    let claimed = call(
        &thief,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_ne!(claimed.rsc, 2000);
    assert!(!claimed.body.to_string().contains(SECRET));
    // Its listing shows its own objects only.
    let listed = call(&thief, &cse, "GET", "/cse-in/secureStorage", "Cthief", None);
    assert_eq!(listed.rsc, 2000);
    assert!(listed.body["m2m:sdoL"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["own"] == "//m2m.example.com/id-in/Cthief"));

    // The administrator, over its own association, sees that it exists and cannot read it.
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "CAdmin", "--cse", "/id-in"],
        "CAdmin",
    );
    let admin = TlsClient::certificate(&pki.ca_pem(), &pem, &key, IN_SERVER_NAME);
    let r = call(
        &admin,
        &cse,
        "GET",
        &format!("/cse-in/secureStorage/{ri}"),
        "CAdmin",
        None,
    );
    assert_eq!(r.rsc, 4004, "{:?}", r.body);
    let r = call(&admin, &cse, "GET", "/cse-in/secureStorage", "CAdmin", None);
    assert_eq!(r.rsc, 2000);
    assert!(
        r.body.to_string().contains(&ri) && !r.body.to_string().contains(SECRET),
        "{:?}",
        r.body
    );

    // The lock names a reader: that AE reads it by ID (and only by ID).
    let shared = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/wifi",
        "Clock",
        Some(json!({"m2m:sdo": {"rdr": ["Cfriend"]}})),
    );
    assert_eq!(shared.rsc, 2004, "{:?}", shared.body);
    assert_eq!(
        shared.body["m2m:sdo"]["rdr"],
        json!(["//m2m.example.com/id-in/Cfriend"])
    );
    let read = call(
        &friend,
        &cse,
        "GET",
        &format!("/cse-in/secureStorage/{ri}"),
        "Cfriend",
        None,
    );
    assert_eq!(
        (read.rsc, &read.body["m2m:sdo"]["con"]),
        (2000, &json!(SECRET))
    );
    let by_name = call(
        &friend,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Cfriend",
        None,
    );
    assert_eq!(by_name.rsc, 4004);
    // A reader cannot change or delete it.
    let r = call(
        &friend,
        &cse,
        "DELETE",
        &format!("/cse-in/secureStorage/{ri}"),
        "Cfriend",
        None,
    );
    assert_eq!(r.rsc, 4004);

    // Bad input: clear codes.
    let r = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/a%20b",
        "Clock",
        Some(json!({"m2m:sdo": {"con": "x"}})),
    );
    assert_eq!(r.rsc, 4000, "{:?}", r.body);
    let r = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/other",
        "Clock",
        Some(json!({"m2m:sdo": {"con": 5}})),
    );
    assert_eq!(r.rsc, 4000);
    let r = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/big",
        "Clock",
        Some(json!({"m2m:sdo": {"con": "x".repeat(70_000)}})),
    );
    assert_eq!(r.rsc, 5207, "{:?}", r.body);
    let r = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/other",
        "Clock",
        Some(json!({"m2m:sdo": {"con": "x", "own": "Cthief"}})),
    );
    assert_eq!(r.rsc, 4000);

    // Nothing of it in the clear in any file of the CSE, nor in what it logged; it survives a
    // restart.
    for (path, bytes) in files_under(cse.data_dir()) {
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
    assert!(!cse.stderr().contains(SECRET) && !cse.stdout().contains(SECRET));
    let cse = cse.restart();
    let again = call(
        &lock,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(again.body["m2m:sdo"]["con"], SECRET);
    // The owner deletes it.
    let r = call(
        &lock,
        &cse,
        "DELETE",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(r.rsc, 2002);
    let r = call(
        &lock,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(r.rsc, 4004);
}

#[test]
fn the_storage_refuses_unproven_originators_and_is_off_unless_configured() {
    let pki = Pki::temp();
    // A listener that proves nothing: a claim is never an owner.
    let cse = cse_with_storage(&pki, "[http]\noriginators = \"anonymous\"\n");
    for from in ["Clock", "CAdmin"] {
        let (rsc, _) = retrieve(cse.url(), "/cse-in/secureStorage", from);
        // 4106 for an AE-ID no AE holds without an association (TS-0004 7.3.2.1), else 4103.
        assert!(rsc == 4103 || rsc == 4106, "{from}: {rsc}");
    }
    let off = CseProcess::start_in();
    let (rsc, _) = retrieve(off.url(), "/cse-in/secureStorage", "CAdmin");
    assert_eq!(rsc, 5001, "no [secure_storage] there");
    drop(off);
    // Stored objects are no resources: no CREATE, no discovery finds them.
    let lock = ae(&pki, &cse, "Clock");
    let r = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/k",
        "Clock",
        Some(json!({"m2m:sdo": {"con": SECRET}})),
    );
    assert_eq!(r.rsc, 2001);
    let r = lock
        .request(
            cse.https_url(),
            "POST",
            "/cse-in/secureStorage",
            Some("Clock"),
            Some(4),
            Some(&json!({"m2m:cin": {"con": "x"}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 4005, "{:?}", r.body);
    let found = lock
        .request(
            cse.https_url(),
            "GET",
            "/cse-in?fu=1",
            Some("Clock"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(found.rsc, 2000);
    assert!(
        !found.body.to_string().contains("secureStorage"),
        "{:?}",
        found.body
    );
}

#[test]
fn only_the_owners_own_association_reaches_its_objects() {
    let pki = Pki::temp();
    // The default plain listener believes any From (the operator's local tool): it is no way
    // into anyone's storage, the administrator's included.
    let cse = cse_with_storage(&pki, "");
    let lock = ae(&pki, &cse, "Clock");
    let thief = ae(&pki, &cse, "Cthief");
    let stored = call(
        &lock,
        &cse,
        "PUT",
        "/cse-in/secureStorage/wifi",
        "Clock",
        Some(json!({"m2m:sdo": {"con": SECRET}})),
    );
    assert_eq!(stored.rsc, 2001);
    let ri = stored.body["m2m:sdo"]["ri"].as_str().unwrap().to_string();
    for from in ["Clock", "CAdmin"] {
        for path in [
            "/cse-in/secureStorage/wifi".to_string(),
            format!("/cse-in/secureStorage/{ri}"),
            "/cse-in/secureStorage".to_string(),
        ] {
            let (rsc, body) = retrieve(cse.url(), &path, from);
            assert_eq!(rsc, 4103, "{from} {path}: {body}");
            assert!(!body.to_string().contains(SECRET));
        }
        let (rsc, _) = update(
            cse.url(),
            "/cse-in/secureStorage/wifi",
            from,
            json!({"m2m:sdo": {"con": "overwritten"}}),
        );
        assert_eq!(rsc, 4103, "{from}");
        let (rsc, _) = delete(cse.url(), "/cse-in/secureStorage/wifi", from);
        assert_eq!(rsc, 4103, "{from}");
    }
    // A non-blocking request would keep the content in a <request>: refused, for the owner too.
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(json!({"m2m:sdo": {"con": "in-a-request"}}))),
    ] {
        let r = call(
            &lock,
            &cse,
            method,
            "/cse-in/secureStorage/wifi?rt=2",
            "Clock",
            body,
        );
        assert_eq!(r.rsc, 4000, "{method}: {:?}", r.body);
    }
    // "Not yours" and "none" are one answer: no oracle of other entities' objects.
    let someone_elses = call(
        &thief,
        &cse,
        "GET",
        &format!("/cse-in/secureStorage/{ri}"),
        "Cthief",
        None,
    );
    let missing = call(
        &thief,
        &cse,
        "GET",
        "/cse-in/secureStorage/sdo0000000000000000",
        "Cthief",
        None,
    );
    assert_eq!(
        (someone_elses.rsc, someone_elses.body.clone()),
        (missing.rsc, missing.body.clone())
    );
    // The owner's object is intact, and goes when its AE deregisters: whoever registers the
    // AE-ID next inherits nothing.
    let got = call(
        &lock,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(got.body["m2m:sdo"]["con"], SECRET);
    let (rsc, _) = delete(cse.url(), "/cse-in/Clock", "CAdmin");
    assert_eq!(rsc, 2002);
    let lock = ae(&pki, &cse, "Clock");
    let after = call(
        &lock,
        &cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(after.rsc, 4004, "{:?}", after.body);
    for (path, bytes) in files_under(cse.data_dir()) {
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
}

#[test]
fn an_entity_relayed_by_a_cse_reaches_no_storage() {
    let pki = Pki::temp();
    let in_cse = cse_with_storage(&pki, "");
    let mn = CseProcess::start_temp(&mn_config(in_cse.https_url(), &pki));
    wait_registered(&in_cse, &mn);
    let lock = ae(&pki, &in_cse, "Clock");
    let stored = call(
        &lock,
        &in_cse,
        "PUT",
        "/cse-in/secureStorage/wifi",
        "Clock",
        Some(json!({"m2m:sdo": {"con": SECRET}})),
    );
    assert_eq!(stored.rsc, 2001);
    let ri = stored.body["m2m:sdo"]["ri"].as_str().unwrap().to_string();
    // The MN vouches for the From it relays, over its own association: no proof of the AE (an AE
    // bound to its certificate is refused by the IN's identity check, 4106; one it may vouch for,
    // as the administrator here, by the storage, 4103).
    for path in [
        "/~/id-in/cse-in/secureStorage/wifi".to_string(),
        format!("/_/m2m.example.com/id-in/cse-in/secureStorage/{ri}"),
        "/~/id-in/cse-in/secureStorage".to_string(),
    ] {
        for from in ["Clock", "/id-in/Clock", "CAdmin"] {
            let (rsc, body) = retrieve(mn.url(), &path, from);
            let want = if from == "CAdmin" { 4103 } else { 4106 };
            assert_eq!(rsc, want, "{from} via the MN, {path}: {body}");
            assert!(!body.to_string().contains(SECRET), "{body}");
        }
        let (rsc, _) = delete(mn.url(), &path, "Clock");
        assert!(rsc >= 4000, "DELETE {path} via the MN: {rsc}");
    }
    let still = call(
        &lock,
        &in_cse,
        "GET",
        "/cse-in/secureStorage/wifi",
        "Clock",
        None,
    );
    assert_eq!(still.body["m2m:sdo"]["con"], SECRET);
}

/// The service over CoAP/DTLS (TS-0008), the binding of constrained devices: an AE proven by its
/// PSK stores and reads its object; another AE with a PSK of its own gets the answer for "no
/// such object", by name and by ID.
#[test]
fn over_coaps_an_ae_stores_and_reads_back_and_another_cannot() {
    const LOCK: (&str, &str) = (
        "lock@in.m2m.example.com",
        "00112233445566778899aabbccddeeff",
    );
    const THIEF: (&str, &str) = (
        "thief@in.m2m.example.com",
        "ffeeddccbbaa99887766554433221100",
    );
    let pki = Pki::temp();
    let ks = pki.dir().join("cse.keystore");
    let kf = pki.dir().join("cse-keystore.key");
    let (ks_s, kf_s) = (ks.to_str().unwrap(), kf.to_str().unwrap());
    // The keystore and its storage secret as the other tests make them; then the two AEs' PSKs.
    drop(cse_with_storage(&pki, ""));
    for ((kpsa_id, key), entity) in [(LOCK, "Clock"), (THIEF, "Cthief")] {
        let add = m2m_command_env(
            &[
                "keys",
                "add-psk",
                "--keystore",
                ks_s,
                "--key-file",
                kf_s,
                "--kpsa-id",
                kpsa_id,
                "--key-env",
                "KPSA",
                "--entity",
                entity,
            ],
            &[("KPSA", key)],
        );
        assert!(add.status.success(), "{add:?}");
    }
    let cse = CseProcess::start_temp(&format!(
        "{}dtls_listen = \"127.0.0.1:0\"\n[security]\nkeystore = {ks_s:?}\nkey_file = {kf_s:?}\n\n\
         [secure_storage]\nsecret = \"secure-storage\"\n",
        in_tls_config(&pki)
    ));
    let url = format!("coaps://127.0.0.1:{}", cse.coaps_port());
    let request = |(kpsa_id, key): (&str, &str), from: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["request", "--url", &url, "--from", from, "--json"])
            .args(["--psk-identity", kpsa_id, "--psk-key-env", "KPSA"])
            .args(args)
            .env("KPSA", key)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        json_stdout(&out)
    };
    for ((psk, name), from) in [(LOCK, "lock"), (THIEF, "thief")]
        .into_iter()
        .zip(["Clock", "Cthief"])
    {
        let body = json!({"m2m:ae": {"rn": name, "api": "Nstore", "rr": false, "srv": ["3"]}});
        let r = request(
            psk,
            from,
            &[
                "-X",
                "create",
                "--to",
                "cse-in",
                "--ty",
                "2",
                "--body",
                &body.to_string(),
            ],
        );
        assert_eq!(r["rsc"], 2001, "{r}");
    }
    let sdo = json!({"m2m:sdo": {"con": SECRET}}).to_string();
    let stored = request(
        LOCK,
        "Clock",
        &[
            "-X",
            "update",
            "--to",
            "cse-in/secureStorage/wifi",
            "--body",
            &sdo,
        ],
    );
    assert_eq!(stored["rsc"], 2001, "{stored}");
    let ri = stored["pc"]["m2m:sdo"]["ri"].as_str().unwrap().to_owned();
    let read = request(LOCK, "Clock", &["--to", "cse-in/secureStorage/wifi"]);
    assert_eq!(read["pc"]["m2m:sdo"]["con"], SECRET, "{read}");
    for to in [
        "cse-in/secureStorage/wifi".to_owned(),
        format!("cse-in/secureStorage/{ri}"),
    ] {
        let stolen = request(THIEF, "Cthief", &["--to", &to]);
        assert_eq!(stolen["rsc"], 4004, "{to}: {stolen}");
        assert!(!stolen.to_string().contains(SECRET), "{stolen}");
    }
}
