//! `m2m demo --json`: the door-lock story of the security guide, with the MEF, the MAF and both
//! CSEs as processes, ends with every step behaving (story steps succeed, attacks are refused), exit
//! status 0, well within a minute. Each attack is refused as the requester sees it (status code
//! or TLS alert, a text that names nothing) and for the reason the CSE's audit log gives.

use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_door_lock_demo_behaves() {
    let started = Instant::now();
    // A relative --dir, from a working directory of its own: every path the demo writes into a
    // configuration must still name the right file for each process that reads it.
    let dir = tempfile::tempdir().expect("temp dir");
    let logs_dir = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["demo", "--json", "--dir", "run"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run m2m demo");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for m2m demo") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "m2m demo did not finish within {LIMIT:?}; progress:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("--json output is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}")
    });
    let steps = doc["steps"].as_array().expect("steps");
    for s in steps {
        for key in ["step", "entity", "sae", "expected", "outcome"] {
            assert!(s[key].is_string(), "{key} in {s}");
        }
        assert!(s["ms"].is_number(), "{s}");
        assert_eq!(
            s["ok"],
            Value::Bool(true),
            "step did not behave: {s}\nstderr:\n{stderr}"
        );
    }
    let attacks: Vec<&Value> = steps
        .iter()
        .filter(|s| s["step"].as_str().is_some_and(|n| n.starts_with("ATTACK")))
        .collect();
    assert_eq!(attacks.len(), 16, "sixteen attacks: {doc:#}");
    for a in &attacks {
        let outcome = a["outcome"].as_str().unwrap_or_default();
        assert!(outcome.contains("refused"), "attack not refused: {a}");
    }
    let attack = |name: &str| {
        let a = attacks
            .iter()
            .find(|a| a["step"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}: {doc:#}"));
        a["outcome"].as_str().unwrap_or_default().to_owned()
    };
    // The handshake attacks fail in the TLS handshake itself, with the alert the peer sends (a
    // connection refused or a timeout would not do), and the CSE's audit line says why.
    let handshake_attacks = [
        (
            "ATTACK wrong PSK for the front lock's KpsaID",
            "TLS handshake failed: sslv3 alert bad record mac",
            "MN-CSE audit: decryption failed or bad record mac",
        ),
        (
            "ATTACK TLS 1.3 PSK client without the front lock's key",
            "TLS handshake failed: sslv3 alert handshake failure",
            "MN-CSE audit: no shared cipher",
        ),
        (
            "ATTACK guessed KpsaID",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
            "MN-CSE audit: psk identity not found",
        ),
        // The same over CoAP/DTLS: the locks' own binding.
        (
            "ATTACK wrong PSK for the front lock's KpsaID, over DTLS",
            "TLS handshake failed: sslv3 alert bad record mac",
            "MN-CSE audit: decryption failed or bad record mac",
        ),
        (
            "ATTACK guessed KpsaID, over DTLS",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
            "MN-CSE audit: psk identity not found",
        ),
        (
            "ATTACK phone uses its expired MAF key",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
            "IN-CSE audit: psk identity not found",
        ),
        // GBA: the B-TID is public, Ks_NAF is not; the IN-CSE had the real key from the BSF.
        (
            "ATTACK the cellular lock's sniffed B-TID with a guessed key",
            "TLS handshake failed: sslv3 alert bad record mac",
            "IN-CSE audit: decryption failed or bad record mac",
        ),
        // After the operator rotated the front lock's Kpsa, the old one opens nothing, on
        // either listener.
        (
            "ATTACK the front lock's old key after the rotation",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
            "MN-CSE audit: psk identity not found",
        ),
        (
            "ATTACK the front lock's old key after the rotation, over TLS",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
            "MN-CSE audit: psk identity not found",
        ),
    ];
    for (name, alert, audit) in handshake_attacks {
        let outcome = attack(name);
        assert!(outcome.contains(alert), "{name}: want {alert:?}: {outcome}");
        assert!(outcome.contains(audit), "{name}: want {audit:?}: {outcome}");
    }
    // The attacks by request: the status code, the reason in the MN-CSE's audit log, and a text
    // for the requester that names no entity, policy or rule.
    let request_attacks = [
        (
            "ATTACK unlock without a security association",
            "refused: 4103",
            "(claimed without a security association: only \"all\" can match)",
        ),
        (
            "ATTACK a local process without a credential acts as the admin",
            "refused: 4106",
            "/mn-cse-123456/CAdmin is not registered here and has no security association",
        ),
        (
            "ATTACK the gateway app unlocks the front door",
            "refused: 4103",
            "accessControlObjectDetails do not allow creating type 4 under type 3",
        ),
        (
            "ATTACK back lock pretends to be the front lock",
            "refused: 4106",
            "over an association bound to //m2m.example.com/mn-cse-123456/Cllock-AE2",
        ),
        (
            "ATTACK an AE no ACP names reads the lock",
            "refused: 4103",
            "grants RETRIEVE to //m2m.example.com/id-in/Cstranger",
        ),
        (
            "ATTACK babysitter outside its time window (2001)",
            "refused: 4103",
            "is outside accessControlWindow",
        ),
    ];
    let generic = [
        "the originator has no privilege for this operation on the target",
        "the originator is not the entity the security association authenticated",
    ];
    let mn_log = file(&logs_dir, "mn.log");
    for (name, status, reason) in request_attacks {
        let outcome = attack(name);
        assert!(outcome.contains(status), "{name}: want {status}: {outcome}");
        assert!(
            outcome.contains("MN-CSE audit: ") && outcome.contains(reason),
            "{name}: want the audit reason {reason:?}: {outcome}"
        );
        assert!(
            mn_log.contains(reason),
            "{name}: mn.log has no audit line with {reason:?}"
        );
        let told = outcome
            .split("told: \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .unwrap_or_else(|| panic!("{name}: what the requester was told: {outcome}"));
        assert!(
            generic.contains(&told),
            "{name}: the requester's text is not the generic one: {told:?}"
        );
    }
    // The admin's claim deleted nothing: the admin, over its own PSK, finds the lock.
    assert!(
        attack("ATTACK a local process without a credential acts as the admin")
            .contains("lock still there"),
        "{doc:#}"
    );
    // The gateway app may read what it may not change.
    let read = steps
        .iter()
        .find(|s| s["step"] == "gateway app reads the front lock's state")
        .unwrap_or_else(|| panic!("no gateway read step: {doc:#}"));
    assert!(
        read["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("LOCKED"),
        "{read}"
    );
    assert_eq!(steps.len(), 41, "every step is reported: {doc:#}");
    // The cellular lock got its key by GBA, bound to its SIM's subscriber and AE-ID.
    let cellular = steps
        .iter()
        .find(|s| s["step"] == "cellular lock bootstraps by GBA and registers at the IN-CSE")
        .unwrap_or_else(|| panic!("no GBA step: {doc:#}"));
    let outcome = cellular["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome.contains("@bsf.keys.example.net") && outcome.contains("2001 as Cgarage-lock"),
        "{outcome}"
    );
    assert!(outcome.contains("97-001010000000042@"), "{outcome}");
    // The administration step: the lock itself (m2m ae) took the new key, and it works.
    let rotated = steps
        .iter()
        .find(|s| s["step"] == "the babysitter has left: operator rotates the front lock's key")
        .unwrap_or_else(|| panic!("no rotation step: {doc:#}"));
    let outcome = rotated["outcome"].as_str().unwrap_or_default();
    for want in [
        "crds UPDATE 2004",
        "the lock reports the new KpsaID",
        "the new key reads cse-mn/front-lock as Clock-AE1",
    ] {
        assert!(outcome.contains(want), "want {want:?}: {rotated}");
    }
    // The phone hears the unlock on the WebSocket it keeps open to the IN-CSE; the gateway app
    // talks to the home gateway through mosquitto (installed in CI).
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {doc:#}"))
    };
    let heard = step("phone receives the notification");
    assert_eq!(heard["sae"], "its WebSocket", "{heard}");
    let gateway = step("gateway app registers at the home gateway");
    let mosquitto = std::process::Command::new("mosquitto")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if mosquitto || std::env::var("CI").as_deref() == Ok("true") {
        assert!(
            gateway["outcome"]
                .as_str()
                .unwrap_or_default()
                .contains("via mqtts://"),
            "{gateway}"
        );
        assert_eq!(gateway["sae"], "MQTT, TLS-PSK (Kpsa)", "{gateway}");
    }
    // The phone with a <pollingChannel> gets its notification there, not on its WebSocket.
    let polled = steps
        .iter()
        .find(|s| s["step"] == "phone receives the notification by long polling")
        .unwrap_or_else(|| panic!("no long polling step: {doc:#}"));
    assert_eq!(polled["ok"], Value::Bool(true), "{polled}");
    assert!(
        polled["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing on its WebSocket"),
        "{polled}"
    );
    assert!(
        doc["unlock_to_notification_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "{doc:#}"
    );
    assert_eq!(doc["ok"], Value::Bool(true), "{doc:#}");
    assert!(status.success(), "exit status {status}\nstderr:\n{stderr}");
    assert!(elapsed < LIMIT, "took {elapsed:?}");

    // The CSEs themselves refused those handshakes: an audit line each (five at the MN-CSE,
    // the expired key at the IN-CSE).
    for (name, attacks) in [("mn.log", 5), ("in.log", 1)] {
        let refused = file(&logs_dir, name)
            .lines()
            .filter(|l| l.contains("association refused"))
            .count();
        assert!(
            refused >= attacks,
            "{name}: {refused} 'association refused' lines, want {attacks}"
        );
    }
    // Every configuration the demo wrote names its files by absolute paths (a relative --dir
    // included), and the MN-CSE's loopback listener takes a From as a claim only.
    for name in ["mef.toml", "maf.toml", "in.toml", "mn.toml"] {
        let cfg: toml::Table = file(&logs_dir, name).parse().expect(name);
        let mut paths = Vec::new();
        collect_paths(&toml::Value::Table(cfg), &mut paths);
        assert!(!paths.is_empty(), "{name} names no file");
        for p in paths {
            assert!(
                std::path::Path::new(&p).is_absolute(),
                "{name}: relative path {p}"
            );
        }
    }
    assert!(
        file(&logs_dir, "mn.toml").contains("originators = \"anonymous\""),
        "the MN-CSE's plain listener is anonymous"
    );
    assert!(
        !file(&logs_dir, "in.toml").contains("originators = \"trusted\""),
        "no trusted listener at the IN-CSE"
    );

    // No key of the run reaches a log or the output: the locks' Kpsa, the phone's Kpm, the
    // other phones' Km at the MAF. The texts are lowercased, so upper-case hex is caught too.
    // The run's random keys too: the gateway app's Kpsa and the admins'.
    // The MN-CSE's rotation key, and the front lock's rotated Kpsa (the lock keeps it).
    let mut run_keys: Vec<String> = ["gateway-app.kpsa", "admin-mn.kpsa", "admin-in.kpsa"]
        .iter()
        .map(|f| file(&logs_dir, f).trim().to_lowercase())
        .collect();
    for k in &run_keys {
        assert!(
            k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()),
            "a 16-byte key in hex"
        );
    }
    run_keys.push(file(&logs_dir, "mn-rotation.key").trim().to_lowercase());
    let lock_state: Value =
        serde_json::from_str(&file(&logs_dir, "front-lock.kpsa.json")).expect("the lock's state");
    assert_eq!(
        lock_state["kpsa_id"], "AE123456789012-Lock-r1@in.provider.com",
        "the lock keeps its new KpsaID"
    );
    let rotated_key = lock_state["key"].as_str().expect("its key").to_lowercase();
    assert_eq!(rotated_key.len(), 64, "a 32-byte Kpsa in hex");
    run_keys.push(rotated_key.clone());
    let guide_keys = [
        "1a2b3c4d5e6f7a8b",
        "12345678abcdefab",
        "7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d",
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
        "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000",
    ];
    let mut texts = vec![
        ("stdout".to_owned(), stdout.to_lowercase()),
        ("stderr".to_owned(), stderr.to_lowercase()),
    ];
    for name in ["mef.log", "maf.log", "in.log", "mn.log", "front-lock.log"] {
        texts.push((name.to_owned(), file(&logs_dir, name).to_lowercase()));
    }
    // Nor does the gateway keep the rotated key anywhere in its data: it derives it.
    let key_bytes = hex::decode(&rotated_key).expect("hex");
    for entry in walk(&logs_dir.join("mn-data")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes)
                .to_lowercase()
                .contains(&rotated_key)
                && !bytes
                    .windows(key_bytes.len())
                    .any(|w| w == key_bytes.as_slice()),
            "{} holds the rotated Kpsa",
            entry.display()
        );
    }
    let keys = guide_keys
        .iter()
        .copied()
        .chain(run_keys.iter().map(String::as_str));
    for (name, text) in &texts {
        for key in keys.clone() {
            assert!(
                !text.contains(key),
                "{name} contains a key ({}...)",
                &key[..4]
            );
        }
    }
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A file of the demo directory (a log, a configuration, a key file).
fn file(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The values of the keys that name files (`path`, `storage*`, `certificate`, `*_key`,
/// `trusted_ca`, `key_file`) anywhere in a configuration.
fn collect_paths(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let names_file = matches!(
                    k.as_str(),
                    "path" | "storage" | "certificate" | "private_key" | "trusted_ca" | "key_file"
                ) || k.starts_with("storage_key");
                match v {
                    toml::Value::String(s) if names_file => out.push(s.clone()),
                    _ => collect_paths(v, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}
