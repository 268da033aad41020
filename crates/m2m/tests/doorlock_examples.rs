//! examples/doorlock as a user runs it: a copy of the directory with only its ports changed,
//! `setup.sh`, then every entity as its own process started from that directory (`m2m mef`,
//! `m2m maf`, both `m2m cse`, and `m2m ae` for the two locks and the gateway app), then
//! `story.sh`, which runs the phone as `m2m ae` itself: the story with its subscription and
//! notification, and the demo's attacks, each status code checked. Then what the gateway app
//! printed, no key in any output or log, a clean stop on SIGTERM and a reused registration.

mod common;

use common::{assert_no_secret, have_tool, unhex};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const M2M: &str = env!("CARGO_BIN_EXE_m2m");
/// How long a process may take to listen, the MN to register, a script to finish.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// A child process killed when dropped, on every path (panics included).
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
    /// The stdout lines after the ones `start` waited for.
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reads stdout lines until one contains every text of `want`; returns the lines read.
    fn wait_for_line(&self, want: &[&str], limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = want.iter().all(|w| line.contains(w));
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "{} printed no line with {want:?} within {limit:?}; it printed:\n{}\nits log:\n{}",
                    self.name,
                    seen.join("\n"),
                    self.log()
                ),
            }
        }
    }

    /// Sends SIGTERM and waits for the process to end; its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `m2m ARGS` in `dir` (stderr to `dir/NAME.log`) and waits for a stdout line starting
/// with each of `prefixes`; returns the rest of those lines.
fn start(dir: &Path, name: &'static str, args: &[&str], prefixes: &[&str]) -> (Proc, Vec<String>) {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(M2M)
        .args(args)
        .current_dir(dir)
        .env("M2M_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start m2m {args:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining stdout so that the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let proc = Proc {
        child,
        name,
        log,
        lines: rx,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proc.lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "{name} did not print {prefixes:?} within {START_TIMEOUT:?}; its log:\n{}",
                proc.log()
            )
        });
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(rest) = line.trim().strip_prefix(p) {
                found[i].get_or_insert_with(|| rest.to_owned());
            }
        }
    }
    (proc, found.into_iter().flatten().collect())
}

/// Runs a command to its end within `limit` (killed otherwise), output captured.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(limit).is_err() {
        // Still running: end it by its id (the waiter then returns).
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let out = waiter.join().unwrap().unwrap();
        panic!(
            "{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // What setup.sh and the processes generate, if someone ran them in the source tree.
        if name == "pki" || name == "data" {
            continue;
        }
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else if ty.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Replaces each `from` (which must occur) by `to` in the file, keeping its mode.
fn patch(file: &Path, edits: &[(&str, String)]) {
    let mut text = std::fs::read_to_string(file).unwrap();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{} does not contain {from:?}:\n{text}",
            file.display()
        );
        text = text.replace(from, to);
    }
    std::fs::write(file, text).unwrap();
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_doorlock_example_runs_as_separate_processes() {
    if !have_tool("bash", "--version", "the examples/doorlock scripts") {
        return;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/doorlock");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("doorlock");
    copy_dir(&source, &dir);

    // setup.sh: the PKI, the MN's keystore, the MAF's storage key, the modes.
    let out = run(
        Command::new("bash")
            .arg("setup.sh")
            .env("M2M", M2M)
            .current_dir(&dir),
        SCRIPT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "setup.sh failed:\n{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    // It is idempotent.
    let again = run(
        Command::new("bash")
            .arg("setup.sh")
            .env("M2M", M2M)
            .current_dir(&dir),
        SCRIPT_TIMEOUT,
    );
    assert!(
        again.status.success(),
        "setup.sh run twice failed:\n{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Only the ports change: every listener on port 0, each peer's URL patched with the address
    // the peer actually listens on.
    patch(
        &dir.join("mef.toml"),
        &[(
            "listen = \"127.0.0.1:8446\"",
            "listen = \"127.0.0.1:0\"".into(),
        )],
    );
    let (mef, urls) = start(
        &dir,
        "mef",
        &["mef", "--config", "mef.toml"],
        &["m2m-mef listening https://"],
    );
    let mef_url = format!("https://{}", urls[0]);

    patch(
        &dir.join("maf.toml"),
        &[
            (
                "listen = \"127.0.0.1:8445\"",
                "listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "url = \"https://127.0.0.1:8446\"",
                format!("url = \"{mef_url}\""),
            ),
        ],
    );
    let (maf, urls) = start(
        &dir,
        "maf",
        &["maf", "--config", "maf.toml"],
        &["m2m-maf listening https://"],
    );
    let maf_url = format!("https://{}", urls[0]);

    patch(
        &dir.join("in-cse.toml"),
        &[
            (
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "listen = \"127.0.0.1:8443\"",
                "listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "url = \"https://127.0.0.1:8445\"",
                format!("url = \"{maf_url}\""),
            ),
        ],
    );
    let (in_cse, urls) = start(
        &dir,
        "in-cse",
        &["cse", "--config", "in-cse.toml"],
        &["m2m-cse listening http://", "m2m-cse listening https://"],
    );
    let (in_http, in_https) = (
        format!("http://{}", urls[0]),
        format!("https://{}", urls[1]),
    );

    patch(
        &dir.join("mn-cse.toml"),
        &[
            (
                "listen = \"127.0.0.1:8081\"",
                "listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "listen = \"127.0.0.1:8444\"",
                "listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "dtls_listen = \"127.0.0.1:5684\"",
                "dtls_listen = \"127.0.0.1:0\"".into(),
            ),
            (
                "url = \"https://127.0.0.1:8443\"",
                format!("url = \"{in_https}\""),
            ),
        ],
    );
    let (mn_cse, urls) = start(
        &dir,
        "mn-cse",
        &["cse", "--config", "mn-cse.toml"],
        &[
            "m2m-cse listening http://",
            "m2m-cse listening https://",
            "m2m-cse listening coaps://",
        ],
    );
    let (mn_http, mn_https, mn_coaps) = (
        format!("http://{}", urls[0]),
        format!("https://{}", urls[1]),
        format!("coaps://{}", urls[2]),
    );
    let logs = |procs: &[&Proc]| {
        procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Registered when the IN-CSE holds the MN-CSE's <remoteCSE> (asked on its loopback listener).
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = run(
            Command::new(M2M).args([
                "request",
                "--url",
                &in_http,
                "--to",
                "cse-in/mn-cse-123456",
                "--from",
                "CAdmin",
                "--timeout",
                "5",
            ]),
            Duration::from_secs(20),
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the MN-CSE did not register with the IN-CSE within {START_TIMEOUT:?}:\n{}",
            logs(&[&mef, &maf, &in_cse, &mn_cse])
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The AEs, each its own process: the locks on the MN-CSE's CoAP/DTLS listener, the gateway
    // app on its TLS listener, each with its own PSK; the phone (started by story.sh) on the IN-CSE and the key services.
    for lock in ["front-lock.toml", "back-lock.toml"] {
        patch(
            &dir.join(lock),
            &[(
                "url = \"coaps://127.0.0.1:5684\"",
                format!("url = \"{mn_coaps}\""),
            )],
        );
    }
    patch(
        &dir.join("gateway-app.toml"),
        &[(
            "url = \"https://127.0.0.1:8444\"",
            format!("url = \"{mn_https}\""),
        )],
    );
    patch(
        &dir.join("phone.toml"),
        &[
            (
                "url = \"https://127.0.0.1:8443\"",
                format!("url = \"{in_https}\""),
            ),
            (
                "maf_url = \"https://127.0.0.1:8445\"",
                format!("maf_url = \"{maf_url}\""),
            ),
            (
                "mef_url = \"https://127.0.0.1:8446\"",
                format!("mef_url = \"{mef_url}\""),
            ),
        ],
    );
    let ready = |v: &str| -> Value { serde_json::from_str(&format!("{{\"ready\"{v}")).unwrap() };
    let (mut front, r) = start(
        &dir,
        "front-lock",
        &["ae", "--config", "front-lock.toml"],
        &["{\"ready\""],
    );
    let r = ready(&r[0]);
    assert_eq!(r["ready"]["aei"], "Clock-AE1", "{r}");
    assert_eq!(r["ready"]["registration"], "created", "{r}");
    assert_eq!(
        r["ready"]["created"].as_array().map(Vec::len),
        Some(3),
        "{r}"
    );
    let (mut back, r) = start(
        &dir,
        "back-lock",
        &["ae", "--config", "back-lock.toml"],
        &["{\"ready\""],
    );
    assert_eq!(ready(&r[0])["ready"]["aei"], "Cllock-AE2");
    let (mut gateway, r) = start(
        &dir,
        "gateway-app",
        &["ae", "--config", "gateway-app.toml"],
        &["{\"ready\""],
    );
    let r = ready(&r[0]);
    assert_eq!(r["ready"]["aei"], "Cgateway-app", "{r}");
    assert_eq!(
        r["ready"]["subscriptions"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );

    // The story and the attacks.
    let out = run(
        Command::new("bash")
            .arg("story.sh")
            .env("M2M", M2M)
            .env("IN_URL", &in_https)
            .env("MN_HTTP", &mn_http)
            .env("MAF_URL", &maf_url)
            .env("MEF_URL", &mef_url)
            .current_dir(&dir),
        SCRIPT_TIMEOUT,
    );
    let text = stdout(&out);
    let all = [&mef, &maf, &in_cse, &mn_cse, &front, &back, &gateway];
    assert!(
        out.status.success(),
        "story.sh failed:\n{text}\n{}\n{}\n--- phone ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&all),
        std::fs::read_to_string(dir.join("data/phone.log")).unwrap_or_default()
    );
    let responses: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let codes: Vec<u64> = responses
        .iter()
        .map(|r| r["rsc"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        codes,
        [
            // each lock reads its LOCKED state over its own association
            2000, 2000, //
            // phone: discovery, unlock, read, lock
            2000, 2001, 2000, 2001, //
            // attacks: no association, the admin without a credential, the gateway app unlocks
            4103, 4106, 4103, //
            // the gateway app may read
            2000, //
            // attacks: wrong PSK, guessed KpsaID, impersonation
            5103, 5103, 4106, //
            // the stranger and the babysitter register; each is refused the front lock's state
            2001, 2001, 4103, 4103,
        ],
        "story.sh:\n{text}"
    );
    let found: Vec<&str> = responses[2]["pc"]["m2m:uril"]
        .as_array()
        .unwrap_or_else(|| panic!("no m2m:uril in the discovery: {text}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for lock in ["front-lock/state", "back-lock/state"] {
        assert!(
            found.iter().any(|u| u.ends_with(lock)),
            "{lock} not discovered through the IN-CSE: {found:?}"
        );
    }
    assert_eq!(responses[4]["pc"]["m2m:cin"]["con"], "UNLOCKED", "{text}");
    let reason = |i: usize| {
        responses[i]["pc"]["m2m:dbg"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    // Refusals tell the requester no policy, rule or entity; the reasons are in the audit logs.
    for i in [6, 7, 8, 12, 15, 16] {
        let r = reason(i);
        for leak in [
            "acp",
            "rule",
            "Clock-AE1",
            "Cllock-AE2",
            "acaf",
            "accessControl",
        ] {
            assert!(!r.contains(leak), "refusal {i} names '{leak}': {r}");
        }
    }
    let mn_log = mn_cse.log();
    for why in [
        "claimed without a security association",
        "accessControlObjectDetails",
        "accessControlWindow",
    ] {
        assert!(
            mn_log.contains(why),
            "no '{why}' in the MN-CSE's log:\n{mn_log}"
        );
    }
    // CCM_8: the MN-CSE drops the wrong key's Finished unanswered (RFC 6347 clause 4.1.2.7).
    assert!(
        reason(10).contains("DTLS handshake timed out"),
        "{}",
        reason(10)
    );
    assert!(
        reason(11).contains("unknown psk identity"),
        "{}",
        reason(11)
    );
    assert!(
        reason(12).contains("not the entity the security association authenticated"),
        "{}",
        reason(12)
    );
    // The front lock is still there: the claimed admin deleted nothing.
    assert_eq!(responses[9]["rsc"], 2000, "{text}");

    // The phone heard the unlock through its subscription (MN-CSE -> IN-CSE -> its poa).
    let phone_out = std::fs::read_to_string(dir.join("data/phone.out")).unwrap();
    let notified: Vec<Value> = phone_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &Value| v.get("notification").is_some())
        .collect();
    let cons: Vec<&Value> = notified
        .iter()
        .filter_map(|n| n.pointer("/notification/sgn/nev/rep/m2m:cin/con"))
        .collect();
    assert_eq!(
        cons,
        ["UNLOCKED", "LOCKED"],
        "the phone printed:\n{phone_out}"
    );

    // The gateway app heard both changes of the front lock on its loopback association.
    gateway.wait_for_line(&["\"con\":\"UNLOCKED\""], START_TIMEOUT);
    gateway.wait_for_line(&["\"con\":\"LOCKED\""], START_TIMEOUT);

    // The AEs stop cleanly on SIGTERM, and a restarted lock reuses its registration.
    for p in [&mut front, &mut back, &mut gateway] {
        let status = p.terminate();
        assert!(status.success(), "{} on SIGTERM: {status}", p.name);
    }
    let (_front_again, r) = start(
        &dir,
        "front-lock-again",
        &["ae", "--config", "front-lock.toml"],
        &["{\"ready\""],
    );
    let r = ready(&r[0]);
    assert_eq!(r["ready"]["registration"], "reused", "{r}");
    assert_eq!(r["ready"]["created"][0]["outcome"], "exists", "{r}");

    // No key of the example reaches any output or log.
    let mut seen = format!(
        "{text}\n{}\n{phone_out}",
        String::from_utf8_lossy(&out.stderr)
    );
    for entry in std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("data")).unwrap())
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            seen.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    let keys = [
        "1a2b3c4d5e6f7a8b",
        "12345678abcdefab",
        "7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d",
    ]
    .map(unhex);
    assert_no_secret(&[seen], &keys);
    drop((mn_cse, in_cse, maf, mef));
}
