//! The resource store encrypted at rest (issue 18; seeds/001 Annex A: the threat of a CSE's
//! storage being read), run for real: a CSE whose `[storage] encryption_secret` names a keystore
//! secret keeps no resource name, label or content in the clear in its database or log, not even
//! after `kill -9`; the file is a standard SQLCipher 4 database that SQLCipher itself (Zetetic's
//! build, through Python's sqlcipher3) opens with the derived key and nothing else opens; a store
//! written in the clear is encrypted at start, re-encrypted at a key rotation, decrypted when
//! encryption is turned off, and a CSE with the wrong secret or none refuses to start without
//! touching it.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The two secrets of the keystore, in hex (a real deployment generates them: `--generate`).
const KEY_1: &str = "6b31d3a0c2f94e7a8b5c1d2e3f40516273849506a7b8c9dadbecfd0e1f203142";
const KEY_2: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

/// What the door lock's tree holds: none of it may be readable from the files.
const AE_NAME: &str = "front-door-lock-7731";
const LABEL: &str = "home-of-alice-5519";
const CONTENT: &str = "unlock-code-4711-never-in-clear";

/// A keystore holding `store-key-1` and `store-key-2`.
struct Keystore {
    dir: tempfile::TempDir,
}

impl Keystore {
    fn new() -> Keystore {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore { dir };
        let (store, key_file) = (ks.path("cse.keystore"), ks.path("cse-keystore.key"));
        let init = m2m_command(&[
            "keys",
            "init",
            "--keystore",
            &store,
            "--key-file",
            &key_file,
            "--create-key-file",
        ]);
        assert!(init.status.success(), "{init:?}");
        for (name, key) in [("store-key-1", KEY_1), ("store-key-2", KEY_2)] {
            let add = m2m_command_env(
                &[
                    "keys",
                    "add-secret",
                    "--keystore",
                    &store,
                    "--key-file",
                    &key_file,
                    "--name",
                    name,
                    "--key-env",
                    "STORE_KEY",
                ],
                &[("STORE_KEY", key)],
            );
            assert!(add.status.success(), "{add:?}");
        }
        ks
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The configuration: the keystore, and the `[storage]` lines given.
    fn config(&self, storage: &str) -> String {
        format!(
            "[security]\nkeystore = {:?}\nkey_file = {:?}\n[storage]\n{storage}\n",
            self.path("cse.keystore"),
            self.path("cse-keystore.key")
        )
    }
}

/// The database and its log.
fn store_files(data: &Path) -> Vec<PathBuf> {
    ["resources.db", "resources.db-wal"]
        .iter()
        .map(|f| data.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Fails if any of the store's files holds one of the door lock's strings.
fn assert_nothing_in_the_clear(data: &Path) {
    let files = store_files(data);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, b"SQLite format 3"),
            "{} is a plain SQLite file",
            f.display()
        );
        for needle in [AE_NAME, LABEL, CONTENT] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{} holds {needle} in the clear",
                f.display()
            );
        }
    }
}

/// The door lock's tree: the AE, a labelled container, an instance.
fn write_tree(cse: &CseProcess) -> String {
    let u = cse.url();
    let ae = register_ae(u, "/cse-in", "Cdoorlock", AE_NAME, &[]);
    create_cnt(
        u,
        &format!("/cse-in/{AE_NAME}"),
        &ae,
        json!({"rn": "codes", "lbl": [LABEL]}),
    );
    create_cin(u, &format!("/cse-in/{AE_NAME}/codes"), &ae, CONTENT);
    ae
}

/// The tree is all there (after a restart, a conversion).
fn assert_tree(cse: &CseProcess, ae: &str) {
    let (rsc, b) = retrieve(cse.url(), &format!("/cse-in/{AE_NAME}/codes/la"), ae);
    assert_eq!((rsc, &b["m2m:cin"]["con"]), (2000, &json!(CONTENT)), "{b}");
    let (rsc, b) = get_with_query(cse.url(), "/cse-in", ae, &format!("fu=1&lbl={LABEL}"));
    assert_eq!(rsc, 2000, "{b}");
    assert_eq!(
        b["m2m:uril"],
        json!([format!("cse-in/{AE_NAME}/codes")]),
        "{b}"
    );
}

/// How the SQLCipher reader keys the database.
enum Key<'a> {
    None,
    /// The documented derivation from a secret (hex): the raw key HMAC-SHA-256(secret,
    /// "oneM2M resource store v1"), computed by Python's hmac, not by our code.
    DerivedFrom(&'a str),
    /// A raw key (hex) as given.
    Raw(&'a str),
}

/// What SQLCipher (Zetetic's, via Python's sqlcipher3) reads from `db` keyed by `key`: the
/// stored representation of the latest instance, or its error.
fn sqlcipher_read(db: &Path, key: Key<'_>) -> Result<String, String> {
    const SCRIPT: &str = r#"
import sys, hmac, hashlib, sqlcipher3
db, how, value = sys.argv[1], sys.argv[2], sys.argv[3]
c = sqlcipher3.connect(db)
if how == "derive":
    value = hmac.new(bytes.fromhex(value), b"oneM2M resource store v1", hashlib.sha256).hexdigest()
if how != "none":
    c.execute("PRAGMA key = \"x'%s'\"" % value)
try:
    row = c.execute("SELECT doc FROM resources WHERE ty = 4 ORDER BY seq DESC LIMIT 1").fetchone()
    print(row[0])
except Exception as e:
    print("ERROR", e)
    sys.exit(1)
"#;
    let (how, value) = match key {
        Key::None => ("none", ""),
        Key::DerivedFrom(s) => ("derive", s),
        Key::Raw(k) => ("raw", k),
    };
    let out = Command::new("python3")
        .args(["-c", SCRIPT, db.to_str().unwrap(), how, value])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn an_encrypted_store_keeps_nothing_in_the_clear_and_is_standard_sqlcipher() {
    let ks = Keystore::new();
    let data = tempfile::tempdir().unwrap();
    let config = ks.config("encryption_secret = \"store-key-1\"");
    let mut cse = CseProcess::start(&config, data.path());
    let ae = write_tree(&cse);
    // Killed with the writes in the log, not yet checkpointed into the database.
    cse.kill9();
    assert!(data.path().join("resources.db-wal").exists());
    assert_nothing_in_the_clear(data.path());
    let cse = cse.restart();
    assert_tree(&cse, &ae);
    drop(cse);
    assert_nothing_in_the_clear(data.path());

    if have_python_module("sqlcipher3", "reading the store with SQLCipher") {
        let db = data.path().join("resources.db");
        let read = sqlcipher_read(&db, Key::DerivedFrom(KEY_1)).unwrap();
        assert!(read.contains(CONTENT), "{read}");
        for wrong in [Key::None, Key::DerivedFrom(KEY_2), Key::Raw(KEY_1)] {
            let e = sqlcipher_read(&db, wrong).unwrap_err();
            assert!(e.contains("file is not a database"), "{e}");
        }
    }
}

#[test]
fn a_store_in_the_clear_is_encrypted_at_start_rotated_and_never_opened_with_a_wrong_secret() {
    let ks = Keystore::new();
    let data = tempfile::tempdir().unwrap();
    // Written in the clear first, killed with the writes in the log.
    let mut cse = CseProcess::start(&ks.config(""), data.path());
    let ae = write_tree(&cse);
    cse.kill9();
    let db = std::fs::read(data.path().join("resources.db")).unwrap();
    assert!(contains(&db, b"SQLite format 3"));

    // Encryption turned on: a CSE does not take a store it finds in the clear (someone who can
    // write the directory could have put it there), the file untouched.
    let encrypted = ks.config("encryption_secret = \"store-key-1\"");
    let plain = std::fs::read(data.path().join("resources.db")).unwrap();
    let err = CseProcess::start_error(&encrypted, data.path());
    assert!(
        err.contains("is in the clear while [storage] encryption_secret is set")
            && err.contains("m2m store encrypt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(data.path().join("resources.db")).unwrap(),
        plain
    );
    // The operator's command does, with the CSE stopped: the tree is kept, the files no longer
    // show it, nothing is left over.
    let config = ks.dir.path().join("cse.toml");
    write_private(
        &config,
        &ks.config(&format!(
            "path = {:?}\nencryption_secret = \"store-key-1\"",
            data.path().display().to_string()
        )),
    );
    let out = m2m_command(&["store", "encrypt", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now encrypted"));
    assert!(!data.path().join("resources.db.rekey").exists());
    let cse = CseProcess::start(&encrypted, data.path());
    assert_tree(&cse, &ae);
    // The storage directory is the running CSE's: neither the command nor a second CSE opens it.
    let out = m2m_command(&["store", "encrypt", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has this storage directory open"),
        "{err}"
    );
    // (A second CSE meets the audit trail's lock first, in the same directory.)
    let err = CseProcess::start_error(&encrypted, data.path());
    assert!(
        err.contains("has this storage directory open")
            || err.contains("in use by another process"),
        "{err}"
    );
    drop(cse);
    assert_nothing_in_the_clear(data.path());

    // Rotation: re-encrypted under the new secret at start.
    let rotated = ks.config(
        "encryption_secret = \"store-key-2\"\nprevious_encryption_secret = \"store-key-1\"",
    );
    let cse = CseProcess::start(&rotated, data.path());
    assert!(cse.logged("re-encrypted"));
    assert_tree(&cse, &ae);
    drop(cse);
    assert_nothing_in_the_clear(data.path());
    if have_python_module("sqlcipher3", "reading the store with SQLCipher") {
        let file = data.path().join("resources.db");
        assert!(sqlcipher_read(&file, Key::DerivedFrom(KEY_2))
            .unwrap()
            .contains(CONTENT));
        assert!(sqlcipher_read(&file, Key::DerivedFrom(KEY_1)).is_err());
    }

    // Refused, the store untouched: the old secret, no secret, a secret nobody holds.
    let before = std::fs::read(data.path().join("resources.db")).unwrap();
    for (storage, says) in [
        (
            "encryption_secret = \"store-key-1\"",
            "cannot be decrypted with the key derived from [storage] encryption_secret",
        ),
        ("", "is encrypted: set [storage] encryption_secret"),
        (
            "encryption_secret = \"store-key-3\"",
            "storage.encryption_secret: no secure environment holds the secret \"store-key-3\"",
        ),
        (
            "previous_encryption_secret = \"store-key-1\"",
            "cannot be decrypted with the key derived from [storage] previous_encryption_secret",
        ),
    ] {
        let err = CseProcess::start_error(&ks.config(storage), data.path());
        assert!(err.contains(says), "{storage}: {err}");
        for secret in [KEY_1, KEY_2] {
            assert!(!err.contains(secret), "{err}");
        }
        // Nor a derived key: no run of 32 hex digits at all.
        assert!(!err.contains("x'"), "{err}");
        let longest_hex = err
            .split(|c: char| !c.is_ascii_hexdigit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_hex < 32, "{err}");
    }
    assert_eq!(
        std::fs::read(data.path().join("resources.db")).unwrap(),
        before
    );
    // And the right one still opens it.
    let cse = CseProcess::start(
        &ks.config("encryption_secret = \"store-key-2\""),
        data.path(),
    );
    assert_tree(&cse, &ae);
    drop(cse);
    // Encryption turned off: the last secret as previous only, the store back in the clear.
    let cse = CseProcess::start(
        &ks.config("previous_encryption_secret = \"store-key-2\""),
        data.path(),
    );
    assert!(cse.logged("decrypted: it is kept in the clear"));
    assert_tree(&cse, &ae);
    drop(cse);
    let db = std::fs::read(data.path().join("resources.db")).unwrap();
    assert!(contains(&db, b"SQLite format 3"));
}
