//! `m2m demo --json`: the door-lock story of the security guide, with the MEF, the MAF and both
//! CSEs as processes, ends with every step behaving (story steps succeed, attacks are refused), exit
//! status 0, well within a minute.

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
    assert_eq!(attacks.len(), 7, "seven attacks: {doc:#}");
    for a in &attacks {
        let outcome = a["outcome"].as_str().unwrap_or_default();
        assert!(outcome.contains("refused"), "attack not refused: {a}");
    }
    // The handshake attacks fail in the TLS handshake itself, with the alert the peer sends:
    // a connection refused or a timeout would not do.
    let handshake_attacks = [
        (
            "ATTACK wrong PSK for the front lock's KpsaID",
            "TLS handshake failed: sslv3 alert bad record mac",
        ),
        (
            "ATTACK guessed KpsaID",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
        ),
        (
            "ATTACK phone uses its expired MAF key",
            "TLS handshake failed: tlsv1 alert unknown psk identity",
        ),
    ];
    for (name, reason) in handshake_attacks {
        let a = attacks
            .iter()
            .find(|a| a["step"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}: {doc:#}"));
        let outcome = a["outcome"].as_str().unwrap_or_default();
        assert!(outcome.contains(reason), "{name}: want {reason:?}: {a}");
    }
    assert!(steps.len() >= 22, "every step is reported: {doc:#}");
    assert!(
        doc["unlock_to_notification_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "{doc:#}"
    );
    assert_eq!(doc["ok"], Value::Bool(true), "{doc:#}");
    assert!(status.success(), "exit status {status}\nstderr:\n{stderr}");
    assert!(elapsed < LIMIT, "took {elapsed:?}");

    // The CSEs themselves refused those handshakes: an audit line each (two at the MN-CSE,
    // the expired key at the IN-CSE).
    let log = |name: &str| {
        std::fs::read_to_string(logs_dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for (name, attacks) in [("mn.log", 2), ("in.log", 1)] {
        let refused = log(name)
            .lines()
            .filter(|l| l.contains("association refused"))
            .count();
        assert!(
            refused >= attacks,
            "{name}: {refused} 'association refused' lines, want {attacks}"
        );
    }

    // No key of the run reaches a log or the output: the locks' Kpsa, the phone's Kpm, the
    // other phones' Km at the MAF. The texts are lowercased, so upper-case hex is caught too.
    let keys = [
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
    for name in ["mef.log", "maf.log", "in.log", "mn.log"] {
        texts.push((name.to_owned(), log(name).to_lowercase()));
    }
    for (name, text) in &texts {
        for key in keys {
            assert!(
                !text.contains(key),
                "{name} contains a key ({}...)",
                &key[..4]
            );
        }
    }
}
