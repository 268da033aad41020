//! Trust anchor rotation through trustAnchorCred (TS-0003 clause 8.3.9.9.7), every party its own
//! process: the administrator names the CAs a lock trusts for its CSE's certificate in
//! `dcfg:tac` objects below the lock's `<node>`; the lock, running as `m2m ae` in certificate
//! mode, fetches each CA it lacks by HTTPS GET from `openssl s_server` (software we did not
//! write), keeps it only if it is a CA with the named SHA-256 fingerprint (computed here by
//! `openssl x509`), and switches only once a handshake with its CSE succeeds under the new set.
//! Then the CSE moves to a certificate of the new CA, the old anchor is removed, and a CSE
//! presenting a certificate of the old CA is refused by the lock, running or restarted.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SP: &str = "m2m.example.com";

/// `m2m pki ca` in `dir/name` (`extra`: more options).
fn ca(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["pki", "ca", "--out", out.to_str().unwrap(), "--sp", SP];
    args.extend_from_slice(extra);
    m2m(&args);
    out
}

/// `m2m pki issue` by the CA in `ca` into `dir/name.pem|key`.
fn issue(dir: &Path, ca: &Path, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let mut all = vec![
        "pki",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--sp",
        SP,
        "--out",
        prefix.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    m2m(&all);
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// The SHA-256 fingerprint of the first certificate of `pem`, as `openssl x509` prints it.
fn openssl_fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .expect("openssl x509");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .split_once('=')
        .expect("Fingerprint=")
        .1
        .to_owned()
}

/// The fingerprint as the AE reports it: 64 lower-case hex digits.
fn plain(fp: &str) -> String {
    fp.replace(':', "").to_lowercase()
}

/// `openssl s_server -WWW` serving the files of `www` over HTTPS with `cert`.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn start(www: &Path, cert: &Path, key: &Path) -> FileServer {
        let port = unused_port();
        let child = Command::new("openssl")
            .args(["s_server", "-WWW", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .current_dir(www)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let up = poll(WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        assert!(up.is_some(), "openssl s_server did not listen");
        FileServer { child, port }
    }

    fn url(&self, file: &str) -> String {
        format!("https://localhost:{}/{file}", self.port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CSE on its fixed TLS port with the certificate `(pem, key)`, trusting both CAs for its
/// clients.
fn cse_config(port: u16, (pem, key): &(PathBuf, PathBuf), clients_ca: &Path) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:{port}\"\ncertificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\n",
        pem.display().to_string(),
        key.display().to_string(),
        clients_ca.display().to_string()
    )
}

/// The lock's next `trust_anchors` line within `wait`, if any (other lines skipped).
fn anchors_line(lock: &AeProcess, wait: Duration) -> Option<Value> {
    let deadline = std::time::Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let line = lock.silent_for(left)?;
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v.get("trust_anchors").is_some() {
            return Some(v["trust_anchors"].clone());
        }
    }
    None
}

fn wait_logged(log: &Path, text: &str) -> bool {
    poll(WAIT, || {
        std::fs::read_to_string(log)
            .ok()
            .filter(|l| l.contains(text))
            .map(|_| ())
    })
    .is_some()
}

fn certificates_in(pem: &Path) -> usize {
    std::fs::read_to_string(pem)
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count()
}

#[test]
fn an_administrator_rotates_a_locks_trust_anchors() {
    if !have_program("openssl", "the HTTPS file server and the fingerprints") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // CA1 (also for the file server's localhost name), CA2 the rotation's, CA3 nobody's.
    let ca1 = ca(d, "ca1", &["--permit-dns", "localhost"]);
    let ca2 = ca(d, "ca2", &["--name", "rotated root CA"]);
    let ca3 = ca(
        d,
        "ca3",
        &["--name", "some other CA", "--permit-dns", "localhost"],
    );
    let in_ca1 = issue(d, &ca1, "in-ca1", &["--kind", "cse", "--id", "/id-in"]);
    let in_ca2 = issue(d, &ca2, "in-ca2", &["--kind", "cse", "--id", "/id-in"]);
    let (lock_pem, lock_key) = issue(
        d,
        &ca1,
        "lock1",
        &["--kind", "ae", "--id", "Clock1", "--cse", "/id-in"],
    );
    let files = issue(
        d,
        &ca1,
        "files",
        &[
            "--kind",
            "das",
            "--id",
            "files.m2m.example.com",
            "--dns",
            "localhost",
        ],
    );
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    for (name, from) in [("ca1", &ca1), ("ca2", &ca2), ("ca3", &ca3)] {
        std::fs::copy(from.join("ca.pem"), www.join(format!("{name}.pem"))).unwrap();
    }
    // A leaf certificate: not a CA, whatever its fingerprint.
    let leaf = std::fs::read_to_string(&files.0).unwrap();
    let leaf = leaf
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    std::fs::write(www.join("leaf.pem"), leaf).unwrap();
    let server = FileServer::start(&www, &files.0, &files.1);
    // The same files from a server whose certificate the lock has no reason to trust.
    let stranger_files = issue(
        d,
        &ca3,
        "stranger-files",
        &[
            "--kind",
            "das",
            "--id",
            "files.m2m.example.com",
            "--dns",
            "localhost",
        ],
    );
    let stranger = FileServer::start(&www, &stranger_files.0, &stranger_files.1);
    let fp1 = openssl_fingerprint(&ca1.join("ca.pem"));
    let fp2 = openssl_fingerprint(&ca2.join("ca.pem"));
    let fp_leaf = openssl_fingerprint(&www.join("leaf.pem"));

    let clients = d.join("clients-ca.pem");
    let both = std::fs::read_to_string(ca1.join("ca.pem")).unwrap()
        + &std::fs::read_to_string(ca2.join("ca.pem")).unwrap();
    std::fs::write(&clients, both).unwrap();
    let data = d.join("cse-data");
    std::fs::create_dir(&data).unwrap();
    let port = unused_port();
    let cse = CseProcess::start(&cse_config(port, &in_ca1, &clients), &data);

    let ae_toml = d.join("lock1.toml");
    write_private(
        &ae_toml,
        &format!(
            "[ae]\nresource_name = \"lock1\"\napp_id = \"Ndoorlock\"\noriginator = \"Clock1\"\n\n\
             [cse]\nurl = \"https://127.0.0.1:{port}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             trusted_ca = {:?}\nserver_name = \"{IN_SERVER_NAME}\"\n\n\
             [security]\nmode = \"certificate\"\ncertificate = {:?}\nprivate_key = {:?}\n\n\
             [credentials]\ntrust_anchors = \"cse-in/lock1-node\"\npoll_seconds = 1\n",
            ca1.join("ca.pem").display().to_string(),
            lock_pem.display().to_string(),
            lock_key.display().to_string(),
        ),
    );
    let log = d.join("lock1.log");
    let lock = AeProcess::start_logged(&ae_toml, &log);
    assert_eq!(lock.ready(&cse)["aei"], json!("Clock1"));
    let anchors = d.join("lock1.anchors.pem");

    // The administrator's node for the lock: it reads, nothing more.
    let base = cse.url();
    let acp = create_acp(
        base,
        "/cse-in",
        "CAdmin",
        "lock1-dm",
        vec![acr(&["Clock1"], OP_RETRIEVE)],
        vec![acr(&["CAdmin"], OP_ALL)],
    );
    let (rsc, b) = create(
        base,
        "/cse-in",
        "CAdmin",
        14,
        json!({"m2m:nod": {"rn": "lock1-node", "ni": "lock1-dev", "hael": ["Clock1"], "acpi": [acp]}}),
    );
    assert_eq!(rsc, 2001, "{b}");
    let tac = |rn: &str, cfp: &str, uri: &str| {
        let (rsc, b) = create(
            base,
            "/cse-in/lock1-node",
            "CAdmin",
            13,
            json!({"dcfg:tac": {"rn": rn, "mgd": 1024, "cfp": cfp, "uri": uri, "acpi": [acp]}}),
        );
        assert_eq!(rsc, 2001, "{b}");
    };

    // The current CA, and a "CA2" whose URI serves another CA: the lock keeps what it has.
    tac("ta1", &fp1, &server.url("ca1.pem"));
    tac("ta2", &fp2, &server.url("ca3.pem"));
    assert!(
        wait_logged(&log, "serves no certificate with that fingerprint"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(anchors_line(&lock, Duration::from_secs(2)), None);
    assert!(
        !anchors.exists(),
        "no anchors kept from a wrong certificate"
    );
    // A leaf with its own fingerprint is no trust anchor either.
    let (rsc, b) = update(
        base,
        "/cse-in/lock1-node/ta2",
        "CAdmin",
        json!({"dcfg:tac": {"cfp": fp_leaf, "uri": server.url("leaf.pem")}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert!(wait_logged(&log, "not a CA"));
    assert!(!anchors.exists());
    // The right certificate from a server the lock cannot authenticate is not taken either.
    let (rsc, b) = update(
        base,
        "/cse-in/lock1-node/ta2",
        "CAdmin",
        json!({"dcfg:tac": {"cfp": fp2, "uri": stranger.url("ca2.pem")}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    assert!(
        wait_logged(&log, "certificate verify failed"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!anchors.exists());

    // CA2 as it should be: the lock trusts both.
    let (rsc, b) = update(
        base,
        "/cse-in/lock1-node/ta2",
        "CAdmin",
        json!({"dcfg:tac": {"cfp": fp2, "uri": server.url("ca2.pem")}}),
    );
    assert_eq!(rsc, 2004, "{b}");
    let line = anchors_line(&lock, WAIT).expect("the lock takes CA2");
    let mut both = vec![plain(&fp1), plain(&fp2)];
    both.sort();
    assert_eq!(line["fingerprints"], json!(both), "{line}");
    assert_eq!(certificates_in(&anchors), 2);

    // Removing CA1 while the CSE still presents a CA1 certificate would lock the lock out: it
    // tries, fails the handshake, and keeps both.
    assert_eq!(delete(base, "/cse-in/lock1-node/ta1", "CAdmin").0, 2002);
    assert!(wait_logged(&log, "under the new trust anchors"));
    assert_eq!(anchors_line(&lock, Duration::from_secs(2)), None);
    assert_eq!(certificates_in(&anchors), 2);

    // The CSE moves to its CA2 certificate: the lock follows, CA2 only.
    drop(cse);
    let cse = CseProcess::start(&cse_config(port, &in_ca2, &clients), &data);
    let line = anchors_line(&lock, WAIT).expect("the lock drops CA1");
    assert_eq!(line["fingerprints"], json!([plain(&fp2)]), "{line}");
    assert_eq!(certificates_in(&anchors), 1);
    assert_eq!(plain(&openssl_fingerprint(&anchors)), plain(&fp2));

    // Someone presents a CA1 certificate as the CSE: the lock refuses it, running or restarted.
    drop(cse);
    let impostor = CseProcess::start(&cse_config(port, &in_ca1, &clients), &data);
    let mark = std::fs::read_to_string(&log).unwrap().len();
    let refused = poll(WAIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text[mark..]
            .contains("certificate verify failed")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the lock did not refuse the CA1 certificate:\n{}",
        &std::fs::read_to_string(&log).unwrap()[mark..]
    );
    drop(lock);
    let restarted = AeProcess::start_logged(&ae_toml, &d.join("lock1-restarted.log"));
    assert_eq!(
        restarted.silent_for(Duration::from_secs(5)),
        None,
        "the restarted lock registered with a CA1 certificate"
    );
    assert!(std::fs::read_to_string(d.join("lock1-restarted.log"))
        .unwrap()
        .contains("certificate verify failed"));
    drop(restarted);
    // Its anchors lost, the lock trusts nothing: not its first CA again.
    std::fs::remove_file(&anchors).unwrap();
    let lost = AeProcess::start_logged(&ae_toml, &d.join("lock1-lost.log"));
    assert_eq!(
        lost.silent_for(Duration::from_secs(5)),
        None,
        "the lock went back to its first CA"
    );
    let text = std::fs::read_to_string(d.join("lock1-lost.log")).unwrap();
    assert!(text.contains("anchors.pem"), "{text}");
    drop(impostor);
}
