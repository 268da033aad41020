//! Remote rotation of a door lock's Kpsa (seed 002 Security Administration), every party its own
//! process: the administrator updates the lock's credentials mgmtObj (`dcfg:crds`, purpose
//! "kpsa") with a new KpsaID and the new Kpsa as a JWE only the lock can open (`m2m keys
//! rotate-kpsa`); the lock, running as `m2m ae`, reads it over its current association, opens it,
//! and associates with the new key; from then on the old key opens nothing. The new key is checked
//! against an independent computation (Python's hmac), and appears in no retrieve, log or file of
//! the CSE.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const NEW_ID: &str = "lock1-r1@in.provider.com";

fn write(path: &Path, text: &str) {
    write_private(path, text);
}

/// The new Kpsa as TS-style HMAC-SHA-256 computed by Python, not by this project's code.
fn python_rotated_kpsa(krot_hex: &str, kpsa_id: &str, entity: &str) -> String {
    let script = "import hmac,hashlib,sys,unicodedata as u\n\
        k=bytes.fromhex(sys.argv[1])\n\
        n=lambda s: u.normalize('NFKC', s).encode()\n\
        m=b'oneM2M Kpsa rotation'+b'\\0'+n(sys.argv[2])+b'\\0'+n(sys.argv[3])\n\
        print(hmac.new(k,m,hashlib.sha256).hexdigest())";
    let out = Command::new("python3")
        .args(["-c", script, krot_hex, kpsa_id, entity])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_administrator_rotates_a_locks_kpsa_remotely() {
    if !have_program("python3", "the independent Kpsa derivation") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let krot = "5f".repeat(8) + &"a3".repeat(24);
    write(&p("rotation.key"), &krot);
    write(&p("lock1.kpsa"), LOCK1.key);
    let out = m2m_command(&[
        "e2e",
        "keygen",
        "--kty",
        "ec",
        "--kid",
        "lock1-device",
        "--out",
        p("lock1.jwk").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        p("lock1.pub.jwk"),
        String::from_utf8(out.stdout).unwrap().trim(),
    )
    .unwrap();

    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n[security]\nrotation_key = {:?}\n\n{}",
        p("rotation.key").display().to_string(),
        psk_row_toml(&LOCK1)
    ));
    let ae_toml = p("lock1.toml");
    write(
        &ae_toml,
        &format!(
            "[ae]\nresource_name = \"lock1\"\napp_id = \"Ndoorlock\"\noriginator = \"{}\"\n\n\
             [cse]\nurl = \"{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\n\
             [security]\nmode = \"psk\"\nkpsa_id = \"{}\"\nkey_file = \"lock1.kpsa\"\n\n\
             [credentials]\nobject = \"cse-in/lock1-node/kpsa\"\nprivate_jwk = \"lock1.jwk\"\npoll_seconds = 1\n",
            LOCK1.ae,
            cse.https_url(),
            LOCK1.kpsa_id
        ),
    );
    let lock = AeProcess::start(&ae_toml);
    assert_eq!(lock.ready(&cse)["aei"], json!(LOCK1.ae));

    // The administrator gives the lock its node and credentials object: the lock may read and
    // update it, only the administrator may change its KpsaID.
    let base = cse.url();
    let (rsc, acp) = create(
        base,
        "/cse-in",
        "CAdmin",
        1,
        json!({"m2m:acp": {"rn": "lock1-dm", "pv": {"acr": [{"acor": [LOCK1.ae], "acop": 6}]},
            "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}}),
    );
    assert_eq!(rsc, 2001, "{acp}");
    let acpi = json!([acp["m2m:acp"]["ri"]]);
    let (rsc, node) = create(
        base,
        "/cse-in",
        "CAdmin",
        14,
        json!({"m2m:nod": {"rn": "lock1-node", "ni": "lock1-dev", "hael": [LOCK1.ae], "acpi": acpi}}),
    );
    assert_eq!(rsc, 2001, "{node}");
    let (rsc, crds) = create(
        base,
        "/cse-in/lock1-node",
        "CAdmin",
        13,
        json!({"dcfg:crds": {"rn": "kpsa", "mgd": 1029, "pur": "kpsa", "crid": LOCK1.kpsa_id,
            "acpi": acpi}}),
    );
    assert_eq!(rsc, 2001, "{crds}");

    // The rotation, as the administrator's tool makes it.
    let out = m2m_command(&[
        "keys",
        "rotate-kpsa",
        "--rotation-key",
        p("rotation.key").to_str().unwrap(),
        "--kpsa-id",
        NEW_ID,
        "--entity",
        &format!("/id-in/{}", LOCK1.ae),
        "--device-jwk",
        p("lock1.pub.jwk").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let content: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_key = python_rotated_kpsa(&krot, NEW_ID, &format!("/id-in/{}", LOCK1.ae));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&new_key),
        "the tool printed the key"
    );
    // Not the lock's to decide, even with UPDATE on the object.
    let lock_client = TlsClient::psk(LOCK1.kpsa_id, LOCK1.key);
    let r = lock_client
        .request(
            cse.https_url(),
            "PUT",
            "/cse-in/lock1-node/kpsa",
            Some(LOCK1.ae),
            None,
            Some(&content),
        )
        .expect("the lock's association");
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    // Nor may the lock touch the key material or the purpose.
    for attrs in [
        json!({"crse": content["dcfg:crds"]["crse"]}),
        json!({"pur": "wifi"}),
    ] {
        let r = lock_client
            .request(
                cse.https_url(),
                "PUT",
                "/cse-in/lock1-node/kpsa",
                Some(LOCK1.ae),
                None,
                Some(&json!({ "dcfg:crds": attrs })),
            )
            .expect("the lock's association");
        assert_eq!(r.rsc, 4103, "{attrs}: {:?}", r.body);
    }
    // The node's hael changed to another AE: the rotation, naming the lock, is refused rather
    // than bound to that AE.
    register_ae(base, "/cse-in", "Cother", "other", &[]);
    let hael = |who: &str| json!({"m2m:nod": {"hael": [who]}});
    assert_eq!(
        update(base, "/cse-in/lock1-node", "CAdmin", hael("Cother")).0,
        2004
    );
    let (rsc, body) = update(base, "/cse-in/lock1-node/kpsa", "CAdmin", content.clone());
    assert_eq!(rsc, 4000, "{body}");
    assert_eq!(
        update(base, "/cse-in/lock1-node", "CAdmin", hael(LOCK1.ae)).0,
        2004
    );
    let (rsc, body) = update(base, "/cse-in/lock1-node/kpsa", "CAdmin", content.clone());
    assert_eq!(rsc, 2004, "{body}");

    // The lock picks it up and associates with the new key.
    let line = loop {
        let l = lock.next("credential line", &cse);
        if l.get("credential").is_some() {
            break l;
        }
    };
    assert_eq!(line["credential"]["kpsa_id"], json!(NEW_ID));
    // The old key opens nothing any more, in any spelling of its KpsaID; the new one does, as
    // the lock.
    let (rel, fqdn) = LOCK1.kpsa_id.split_once('@').unwrap();
    for id in [
        LOCK1.kpsa_id.to_owned(),
        format!("{rel}@{}", fqdn.to_uppercase()),
    ] {
        let old = TlsClient::psk(&id, LOCK1.key);
        let r = get_lock(&old, &cse);
        assert!(r.is_err(), "the old Kpsa still associates as {id}");
    }
    let new = TlsClient::psk(NEW_ID, &new_key);
    let r = get_lock(&new, &cse).expect("the new Kpsa associates");
    assert_eq!(r.rsc, 2000, "{:?}", r.body);
    // Bound to the lock: posing as another entity with it is refused.
    let r = new
        .request(
            cse.https_url(),
            "GET",
            "/cse-in",
            Some("Cother"),
            None,
            None,
        )
        .expect("an answer");
    assert_eq!(r.rsc, 4106);

    // The key appears in no retrieve, log or file of the CSE.
    let (_, shown) = retrieve(base, "/cse-in/lock1-node/kpsa", "CAdmin");
    let key_bytes = hex::decode(&new_key).unwrap();
    assert!(
        !shown.to_string().to_lowercase().contains(&new_key),
        "{shown}"
    );
    assert!(!cse.stderr().to_lowercase().contains(&new_key));
    for entry in walk(cse.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(
            !text.contains(&new_key),
            "{} holds the key in hex",
            entry.display()
        );
        assert!(
            !bytes.windows(key_bytes.len()).any(|w| w == key_bytes),
            "{} holds the key",
            entry.display()
        );
    }
    assert!(
        cse.logged("credential changed"),
        "the audit trail records the change:\n{}",
        cse.stderr()
    );
    // The lock keeps the new key to itself.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p("lock1.kpsa.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the lock's key state is private");
    // A restart forgets nothing: the old key stays retired, the new one works.
    drop(lock);
    let cse = cse.restart();
    let old = TlsClient::psk(LOCK1.kpsa_id, LOCK1.key);
    let r = get_lock(&old, &cse);
    assert!(r.is_err(), "the old Kpsa associates after a restart");
    let r = get_lock(&new, &cse).expect("the new Kpsa after a restart");
    assert_eq!(r.rsc, 2000);
}

/// A RETRIEVE of the lock's <AE> as the lock over a new association of `client`.
fn get_lock(client: &TlsClient, cse: &CseProcess) -> Result<Resp, String> {
    client.request(
        cse.https_url(),
        "GET",
        "/cse-in/lock1",
        Some(LOCK1.ae),
        None,
        None,
    )
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
