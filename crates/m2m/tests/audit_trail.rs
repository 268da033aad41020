//! The audit trail of a real `m2m cse`: associations established and refused, access denied and
//! originators refused are appended to `audit.log` in the storage directory, each entry chained by
//! hash to the one before; `m2m audit verify` finds any entry changed, removed or moved, `m2m audit
//! show` filters, the chain continues across restarts, and no key ever reaches the trail.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A key the PSK client tries that is not LOCK1's.
const WRONG_KEY: &str = "99887766554433221100ffeeddccbbaa";

fn cse() -> CseProcess {
    CseProcess::start_temp(&format!(
        "[http]\noriginators = \"anonymous\"\n\n[tls]\nlisten = \"127.0.0.1:0\"\n\n{}",
        psk_row_toml(&LOCK1)
    ))
}

fn trail(cse: &CseProcess) -> PathBuf {
    cse.data_dir().join("audit.log")
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the trail holds an entry with `event`.
fn wait_for(path: &Path, event: &str) {
    let needle = format!("\"event\":\"{event}\"");
    assert!(
        poll(Duration::from_secs(10), || text(path)
            .contains(&needle)
            .then_some(()))
        .is_some(),
        "no '{event}' entry in the trail:\n{}",
        text(path)
    );
}

fn verify(path: &Path) -> (i32, String) {
    let out = m2m_command(&["audit", "verify", "--file", path.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The security events of a session: an association with the right key, one with a wrong key, an
/// anonymous claim to be the admin, an anonymous claim to own an AE.
fn provoke(cse: &CseProcess) {
    let lock = TlsClient::psk(LOCK1.kpsa_id, LOCK1.key);
    let r = lock
        .request(
            cse.https_url(),
            "GET",
            "/cse-in",
            Some(LOCK1.ae),
            None,
            None,
        )
        .expect("the lock's association");
    assert!(r.rsc > 0, "{:?}", r.body);
    let forger = TlsClient::psk(LOCK1.kpsa_id, WRONG_KEY);
    assert!(forger
        .request(
            cse.https_url(),
            "GET",
            "/cse-in",
            Some(LOCK1.ae),
            None,
            None
        )
        .is_err());
    let (rsc, _) = create(
        cse.url(),
        "/cse-in",
        "CAdmin",
        3,
        json!({ "m2m:cnt": { "rn": "c" } }),
    );
    assert_eq!(rsc, 4106, "an anonymous claim to be the admin");
    let rn = format!("app{}", rqi());
    let ae = register_ae(cse.url(), "/cse-in", "C", &rn, &[]);
    let (rsc, _) = create(
        cse.url(),
        &format!("/cse-in/{rn}"),
        &ae,
        3,
        json!({ "m2m:cnt": { "rn": "c" } }),
    );
    assert_eq!(rsc, 4103, "a claim is not the AE's own");
}

#[test]
fn security_events_are_chained_verified_and_filtered() {
    let cse = cse();
    let path = trail(&cse);
    provoke(&cse);
    for event in [
        "audit trail opened",
        "association established",
        "association refused",
        "originator refused",
        "access denied",
    ] {
        wait_for(&path, event);
    }
    let (code, out) = verify(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain intact"), "{out}");
    // Filters: by event, by field; JSON lines with the hash of each entry.
    let out = m2m(&[
        "audit",
        "show",
        "--file",
        path.to_str().unwrap(),
        "--event",
        "ACCESS DENIED",
        "--json",
    ]);
    let shown: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!shown.is_empty());
    for e in &shown {
        assert_eq!(e["event"], json!("access denied"), "{e}");
        assert!(e["fields"]["originator"].is_string(), "{e}");
        assert_eq!(e["hash"].as_str().map(str::len), Some(64), "{e}");
    }
    let out = m2m(&[
        "audit",
        "show",
        "--file",
        path.to_str().unwrap(),
        "--field",
        "level=warn",
    ]);
    let warn = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(warn.contains("association refused"), "{warn}");
    assert!(!warn.contains("access denied"), "an info entry: {warn}");
    let out = m2m(&[
        "audit",
        "show",
        "--file",
        path.to_str().unwrap(),
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(out.stdout.is_empty());
    // Neither key, in any encoding, reached the trail (nor the log).
    assert_no_secret(
        &[text(&path), cse.stderr()],
        &[unhex(LOCK1.key), unhex(WRONG_KEY)],
    );
}

/// Any change to an entry is found at its line: a field edited, an entry removed, two swapped,
/// and an entry edited with its own hash recomputed (the next link breaks).
#[test]
fn a_tampered_trail_is_detected() {
    let mut cse = cse();
    let path = trail(&cse);
    provoke(&cse);
    wait_for(&path, "access denied");
    // A second round, so that entries follow the first refusal.
    provoke(&cse);
    assert!(poll(Duration::from_secs(10), || {
        (text(&path).matches("\"event\":\"access denied\"").count() >= 2).then_some(())
    })
    .is_some());
    // The writer appends in batches, after the answers: read the trail once it has settled (the
    // same whole lines twice), then stop the CSE, so that nothing is appended mid-line to what
    // this test reads or to the file it rewrites.
    let settled = poll(Duration::from_secs(10), || {
        let before = text(&path);
        std::thread::sleep(Duration::from_millis(200));
        (before == text(&path) && before.ends_with('\n')).then_some(())
    });
    assert!(settled.is_some(), "the trail kept changing");
    cse.kill9();
    let original = text(&path);
    let lines: Vec<&str> = original.lines().collect();
    let denied = lines
        .iter()
        .position(|l| l.contains("\"event\":\"access denied\""))
        .expect("the access denied entry");
    let write = |lines: &[String]| std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let owned = || lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();

    // Someone erases who was refused.
    let mut edited = owned();
    edited[denied] = edited[denied].replace("\"originator\":\"", "\"originator\":\"X");
    write(&edited);
    let (code, out) = verify(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("line {}", denied + 1)), "{out}");

    // ... and recomputes the entry's hash: the link of the next entry no longer matches.
    let mut rehashed = owned();
    let body = rehashed[denied]
        .split_once(' ')
        .unwrap()
        .1
        .replace("\"originator\":\"", "\"originator\":\"X");
    rehashed[denied] = format!("{} {body}", sha256_hex(body.as_bytes()));
    write(&rehashed);
    let (code, out) = verify(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("line {}", denied + 2)), "{out}");

    // An entry removed; two entries swapped.
    let mut removed = owned();
    removed.remove(1);
    write(&removed);
    assert_eq!(verify(&path).0, 2);
    let mut swapped = owned();
    swapped.swap(1, 2);
    write(&swapped);
    assert_eq!(verify(&path).0, 2);

    // `show` prints what it verified and says where the chain breaks.
    write(&edited);
    let out = m2m_command(&["audit", "show", "--file", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN"));
    std::fs::write(&path, &original).unwrap();
    let (code, out) = verify(&path);
    assert_eq!(code, 0, "{out}");

    // Someone who rewrites the chain from that entry on (the chain has no key) passes a plain
    // verify, but not a head recorded before: that entry no longer has its hash.
    let head = out
        .split("head: seq ")
        .nth(1)
        .and_then(|h| h.split_once(" hash "))
        .map(|(seq, hash)| format!("{seq}:{}", hash.trim()))
        .expect("the head");
    let mut forged = owned();
    let mut prev = String::new();
    for (i, line) in forged.iter_mut().enumerate() {
        let (_, body) = line.split_once(' ').unwrap();
        let mut v: Value = serde_json::from_str(body).unwrap();
        if i == denied {
            v["fields"]["originator"] = json!("Cnobody");
        }
        if i > denied {
            v["prev"] = json!(prev);
        }
        let body = v.to_string();
        prev = sha256_hex(body.as_bytes());
        *line = format!("{prev} {body}");
    }
    write(&forged);
    assert_eq!(verify(&path).0, 0, "a rewritten chain is a chain");
    let out = verify_expecting(&path, &head);
    assert_eq!(out.status.code(), Some(2), "{head}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no longer has the recorded hash"));
    std::fs::write(&path, &original).unwrap();
    assert_eq!(verify_expecting(&path, &head).status.code(), Some(0));
}

/// The chain goes on across restarts: the second process links its first entry to the last one
/// of the first.
#[test]
fn the_chain_continues_across_restarts() {
    let cse = cse();
    let path = trail(&cse);
    provoke(&cse);
    wait_for(&path, "access denied");
    let cse = cse.restart();
    provoke(&cse);
    let opened = || {
        text(&path)
            .matches("\"event\":\"audit trail opened\"")
            .count()
    };
    assert!(poll(Duration::from_secs(10), || (opened() == 2).then_some(())).is_some());
    wait_for(&path, "access denied");
    let (code, out) = verify(&path);
    assert_eq!(code, 0, "{out}");
}

/// `m2m audit verify --expect SEQ:HASH` on the trail at `path`.
fn verify_expecting(path: &Path, head: &str) -> std::process::Output {
    m2m_command(&[
        "audit",
        "verify",
        "--file",
        path.to_str().unwrap(),
        "--expect",
        head,
    ])
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}
