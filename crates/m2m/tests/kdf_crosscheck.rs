//! An independent cross-check of every oneM2M key derivation (`m2m_security::kdf`, TS-0003 clause 10.3,
//! seeds/001 clause 8.2.1 NOTE 5) as printed by `m2m keys ...`.
//!
//! - Python 3 (`hmac`, `hashlib.sha256`, `unicodedata.normalize('NFKC', ...)`, its own copy of the labels)
//!   computes a table of derivations, including identifiers that NFKC changes (full-width letters, the
//!   ligature "ﬁ", composed and decomposed accents, a Roman numeral, a superscript, half-width katakana).
//! - `openssl s_server` and `openssl s_client` run a PSK handshake (TLS 1.3 and TLS 1.2) with
//!   `-keymatexport EXPORTER-oneM2M-Connection|Bootstrap -keymatexportlen 48`; both must print the same
//!   keying material, and `m2m keys export-split` must split it as §10.3.1 says.
//!
//! A missing `python3` or `openssl` skips its test with a loud message, except in CI (`CI=true`), where it
//! fails.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const M2M: &str = env!("CARGO_BIN_EXE_m2m");

/// Whether `program` runs; outside CI a missing one skips loudly, in CI it fails.
fn have(program: &str, version_arg: &str) -> bool {
    common::have_tool(program, version_arg, "the KDF cross-check")
}

/// Runs `m2m keys ARGS` with extra environment variables; returns stdout, panicking on failure.
fn m2m_keys(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(M2M)
        .arg("keys")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run m2m");
    assert!(
        out.status.success(),
        "m2m keys {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The value of the `NAME: value` line.
fn field(out: &str, name: &str) -> String {
    let p = format!("{name}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(p.as_str()))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{out}"))
        .to_string()
}

/// The independent implementation: reads a JSON list of cases on stdin, writes a JSON list of results.
const PYTHON: &str = r#"
import sys, json, hmac, hashlib, unicodedata
def H(key, *parts):
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()
def N(s):
    return unicodedata.normalize('NFKC', s).encode('utf-8')
x = bytes.fromhex
out = []
for c in json.load(sys.stdin):
    k = c['kind']
    if k == 'km':
        r = H(x(c['key']), b"oneM2M Enrolment Key to Master Credential derivation", N(c['id'])).hex()
    elif k == 'kpsa':
        r = H(x(c['key']), b"oneM2M Enrolment Key to Provisioned Secure Connection Key derivation",
              N(c['id'])).hex()
    elif k == 'usage':
        r = H(x(c['key']), b"oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation",
              str(c['suid']).encode('ascii'), N(c['id'])).hex()
    elif k == 'ksx':
        r = H(x(c['key']), b"oneM2M Group Secure Connection Key derivation", N(c['id']), x(c['rand'])).hex()
    elif k == 'session':
        r = H(x(c['key']), x(c['receiver']), x(c['originator']),
              b"oneM2M HMAC-SHA256 sessionESPrimKey derivation algorithm").hex()
    elif k == 'esprim-maf':
        r = H(x(c['key']), b"oneM2M ESPrim pairwise key derivation").hex()
    elif k == 'e2e':
        m = H(x(c['salt']), x(c['key']))
        r, t = [m.hex()], b""
        labels = [b"E2E Message Authentication Key", b"E2E Message Confidentiality Key",
                  b"E2E Attribute Authenticity Key", b"E2E Attribute Confidentiality Key"]
        for i, l in enumerate(labels, 1):
            t = H(m, t, l, bytes([i]))
            r.append(t.hex())
    elif k == 'split':
        b = x(c['exported'])
        assert len(b) == 48
        r = [b[-32:].hex(), b[:16].hex().upper()]
    elif k == 'nfkc':
        r = unicodedata.normalize('NFKC', c['id'])
    else:
        raise SystemExit('unknown kind ' + k)
    out.append(r)
json.dump(out, sys.stdout)
"#;

fn python(cases: &[Value]) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 printed JSON")
}

/// Identifiers, several of which NFKC changes.
const IDS: &[&str] = &[
    "maf.example.com",
    "CAE123456789012",
    "/in-cse/CAE01",
    "AE123456789012-Lock",
    "ＡＢＣ",                  // full-width letters: "ABC"
    "ABC",                     // ... the same key as the line above
    "Ca\u{fb01}le",            // the ligature fi: "Cafile"
    "caf\u{e9}.example.com",   // composed é
    "cafe\u{301}.example.com", // decomposed é: the same key as the line above
    "\u{216b}-ae",             // the Roman numeral twelve: "XII-ae"
    "x\u{b2}",                 // superscript two: "x2"
    "\u{ff76}\u{ff9e}",        // half-width katakana ga: full-width ガ
    // Group members' Enrolee-Ax-IDs (tests/group_authentication.rs): an S-AE-ID, in full width.
    "Smeter1",
    "Ｓｍｅｔｅｒ1",
];

const KE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KE2: &str = "c0ffee00c0ffee00c0ffee00c0ffee00deadbeefdeadbeefdeadbeefdeadbeef";
const LOCK_KEYS: &[&str] = &["1a2b3c4d5e6f7a8b", "12345678abcdefab"];

/// A case for Python, the argv of `m2m keys`, its extra environment, the output fields to compare.
type Run = (Value, Vec<String>, Vec<(String, String)>, Vec<&'static str>);

#[test]
fn every_derivation_matches_python() {
    if !have("python3", "--version") {
        return;
    }
    let mut runs: Vec<Run> = Vec::new();
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (i, id) in IDS.iter().enumerate() {
        let ke = if i % 2 == 0 { KE } else { KE2 };
        let env = vec![("KDF_TEST_KEY".to_string(), ke.to_string())];
        runs.push((
            json!({"kind": "nfkc", "id": id}),
            argv(&["kpsa", "--ke", ke, "--id", id]),
            vec![],
            vec!["Enrolee-B-ID"],
        ));
        runs.push((
            json!({"kind": "km", "key": ke, "id": id}),
            argv(&["km", "--ke", ke, "--maf-id", id]),
            vec![],
            vec!["Km"],
        ));
        runs.push((
            json!({"kind": "kpsa", "key": ke, "id": id}),
            argv(&["kpsa", "--ke-env", "KDF_TEST_KEY", "--id", id]),
            env.clone(),
            vec!["Kpsa"],
        ));
        for suid in [10u32, 12, 13, 21, 45] {
            runs.push((
                json!({"kind": "usage", "key": ke, "suid": suid, "id": id}),
                argv(&[
                    "usage-key",
                    "--ke-env",
                    "KDF_TEST_KEY",
                    "--suid",
                    &suid.to_string(),
                    "--target",
                    id,
                ]),
                env.clone(),
                vec!["key"],
            ));
        }
        for (j, k) in LOCK_KEYS.iter().chain([KE2].iter()).enumerate() {
            let rand: String = (0..16u8)
                .map(|b| format!("{:02x}", b.wrapping_mul(17).wrapping_add((i * 3 + j) as u8)))
                .collect();
            runs.push((
                json!({"kind": "ksx", "key": k, "id": id, "rand": rand}),
                argv(&["group-key", "--kpsa", k, "--id", id, "--rand", &rand]),
                vec![],
                vec!["Ksx"],
            ));
        }
    }
    let rands = [
        "000102030405060708090a0b0c0d0e0f",
        "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    ];
    for key in [KE, KE2, LOCK_KEYS[0]] {
        for r in rands {
            for o in rands {
                runs.push((
                    json!({"kind": "session", "key": key, "receiver": r, "originator": o}),
                    argv(&[
                        "session-esprim-key",
                        "--key-env",
                        "KDF_TEST_KEY",
                        "--receiver-rand",
                        r,
                        "--originator-rand",
                        o,
                    ]),
                    vec![("KDF_TEST_KEY".to_string(), key.to_string())],
                    vec!["sessionESPrimKey"],
                ));
            }
        }
    }
    // The MAF ESPrim Framework's pairwiseESPrimKey from Kc (the reserved string is this project's).
    for kc in [KE, KE2, LOCK_KEYS[1]] {
        runs.push((
            json!({"kind": "esprim-maf", "key": kc}),
            argv(&["esprim-maf-key", "--kc-env", "KDF_TEST_KEY"]),
            vec![("KDF_TEST_KEY".to_string(), kc.to_string())],
            vec!["pairwiseESPrimKey"],
        ));
    }
    let e2e_fields = vec![
        "Ke2e_master",
        "Ke2e_msg_auth",
        "Ke2e_msg_conf",
        "Ke2e_att_auth",
        "Ke2e_att_conf",
    ];
    for (kpsa, salt) in [
        (KE, ""),
        (KE, "00"),
        (LOCK_KEYS[0], "6f6e654d324d"),
        (&"0b".repeat(22)[..], "000102030405060708090a0b0c"),
    ] {
        runs.push((
            json!({"kind": "e2e", "key": kpsa, "salt": salt}),
            argv(&["e2e-keys", "--kpsa", kpsa, "--salt", salt]),
            vec![],
            e2e_fields.clone(),
        ));
    }
    for exported in [format!("{KE}{}", &KE2[..32]), format!("{KE2}{}", &KE[..32])] {
        for (kind, fields) in [
            ("connection", vec!["Kc", "KcID"]),
            ("bootstrap", vec!["Ke", "RelativeKeID"]),
        ] {
            runs.push((
                json!({"kind": "split", "exported": exported}),
                argv(&[
                    "export-split",
                    "--exported",
                    &exported,
                    "--fqdn",
                    "f.example.com",
                    "--kind",
                    kind,
                ]),
                vec![],
                fields,
            ));
        }
    }

    let cases: Vec<Value> = runs.iter().map(|r| r.0.clone()).collect();
    let expected = python(&cases);
    assert_eq!(expected.len(), runs.len());
    for ((case, args, env, fields), want) in runs.iter().zip(&expected) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = m2m_keys(&args, &env);
        let got: Vec<String> = fields
            .iter()
            .map(|f| {
                let v = field(&out, f);
                // An identifier line may add " (NFKC of ...)": the hashed form is the first word.
                v.split(" (NFKC of ").next().unwrap().to_string()
            })
            .collect();
        let want: Vec<String> = match want {
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            v => vec![v.as_str().unwrap().to_string()],
        };
        assert_eq!(got, want, "case {case}, m2m keys {args:?}");
    }
    // NFKC-equivalent IDs give one key.
    for (a, b) in [
        ("ＡＢＣ", "ABC"),
        ("caf\u{e9}.example.com", "cafe\u{301}.example.com"),
    ] {
        let ka = field(&m2m_keys(&["km", "--ke", KE, "--maf-id", a], &[]), "Km");
        let kb = field(&m2m_keys(&["km", "--ke", KE, "--maf-id", b], &[]), "Km");
        assert_eq!(ka, kb, "{a:?} and {b:?} are NFKC-equivalent");
    }
    let rand = "00112233445566778899aabbccddeeff";
    let ksx = |id: &str| {
        let out = m2m_keys(
            &["group-key", "--kpsa", KE2, "--id", id, "--rand", rand],
            &[],
        );
        field(&out, "Ksx")
    };
    assert_eq!(
        ksx("Ｓｍｅｔｅｒ1"),
        ksx("Smeter1"),
        "Ksx hashes NFKC(Enrolee-Ax-ID)"
    );
}

/// A child process killed when dropped (only the one this test started).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The HEX of the `Keying material: HEX` line.
fn keying_material(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Keying material: "))
        .map(|s| s.trim().to_string())
}

/// One PSK handshake between `openssl s_server` and `openssl s_client`, both exporting 48 bytes with
/// `label`; returns (server's, client's) keying material.
fn openssl_export(label: &str, version: &[&str]) -> (String, String) {
    const KEY: &str = "1a2b3c4d5e6f7a8b";
    const IDENTITY: &str = "AE123456789012-Lock@in.provider.com";
    let port = common::unused_port();
    let mut server = Killed(
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-nocert",
            ])
            .args(["-psk", KEY, "-psk_identity", IDENTITY, "-naccept", "1"])
            .args(version)
            .args(["-keymatexport", label, "-keymatexportlen", "48"])
            // stdin stays open until the server is dropped: s_server ends a connection on stdin EOF.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_server"),
    );
    // Read the server's output on a thread; wait for ACCEPT before connecting.
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("ACCEPT") => break,
            Ok(_) => {}
            Err(_) => {
                let mut e = String::new();
                let _ = server.0.stderr.take().unwrap().read_to_string(&mut e);
                panic!("openssl s_server did not start: {e}");
            }
        }
    }
    let client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-psk", KEY, "-psk_identity", IDENTITY])
        .args(version)
        .args(["-keymatexport", label, "-keymatexportlen", "48"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    // "Q" at the start of a line makes s_client close the connection and quit.
    let mut client = Killed(client);
    client.0.stdin.take().unwrap().write_all(b"Q\n").unwrap();
    let mut c_out = String::new();
    client
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut c_out)
        .unwrap();
    let mut s_km = None;
    while s_km.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => s_km = keying_material(&l),
            Err(_) => break,
        }
    }
    drop(server);
    let _ = reader.join();
    let c_km = keying_material(&c_out)
        .unwrap_or_else(|| panic!("no keying material from s_client {version:?}:\n{c_out}"));
    let s_km = s_km.unwrap_or_else(|| panic!("no keying material from s_server {version:?}"));
    (s_km, c_km)
}

#[test]
fn export_split_matches_openssl_exporter() {
    if !have("openssl", "version") {
        return;
    }
    for version in [
        &["-tls1_3"][..],
        &["-tls1_2", "-cipher", "PSK-AES128-GCM-SHA256"][..],
    ] {
        for (label, kind, key_name, rel_name, id_name, fqdn) in [
            (
                "EXPORTER-oneM2M-Connection",
                "connection",
                "Kc",
                "KcID",
                "Key Identifier",
                "maf.example.com",
            ),
            (
                "EXPORTER-oneM2M-Bootstrap",
                "bootstrap",
                "Ke",
                "RelativeKeID",
                "KeID",
                "mef.example.com",
            ),
        ] {
            let (s, c) = openssl_export(label, version);
            assert_eq!(s, c, "{version:?} {label}: both ends export the same bytes");
            assert_eq!(s.len(), 96, "{s}");
            let out = m2m_keys(
                &[
                    "export-split",
                    "--exported-env",
                    "KDF_EXPORTED",
                    "--fqdn",
                    fqdn,
                    "--kind",
                    kind,
                ],
                &[("KDF_EXPORTED", &s)],
            );
            let upper = s.to_ascii_uppercase();
            assert_eq!(field(&out, key_name), s[32..].to_ascii_lowercase());
            assert_eq!(field(&out, rel_name), upper[..32]);
            assert_eq!(field(&out, id_name), format!("{}@{fqdn}", &upper[..32]));
        }
    }
}
