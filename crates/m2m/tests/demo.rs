//! `m2m demo --json`: the door-lock story of the security guide, with the MAF and both CSEs as
//! processes, ends with every step behaving (story steps succeed, attacks are refused), exit
//! status 0, well within a minute.

use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_door_lock_demo_behaves() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["demo", "--json"])
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
        assert!(
            outcome.starts_with("refused") || outcome.contains("refused"),
            "attack not refused: {a}"
        );
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
}
