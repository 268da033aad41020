//! Security associations (TS-0003 clause 8.2) on a real `m2m cse`, with real third-party TLS peers:
//! `openssl s_client` and `gnutls-cli` with the door-lock PSKs of the developer guide (seeds/000
//! table 7.1.2-1), `curl` with AE certificates made by `m2m pki`; the refusals of the profile
//! (TS-0003 clause 10.2); the impersonation check (TS-0003 clause 7.2.1, TS-0004 clause 7.3.2.1);
//! the listener policy; the encrypted keystore; registration rules bound to credentials.
//!
//! A peer binary that is missing skips its test with a loud message, except in CI (`CI=true`),
//! where it fails the test (`.ci/run` installs them).
//!
//! The AE-IDs of the door-lock rows are those of table 7.1.2-1 as given, including the guide's
//! spelling `Cllock-AE2` for the second lock.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A third lock of the same issuer, configured without an AE-ID: the registration rules decide.
const LOCK3: Row = Row {
    ae: "",
    kpsa_id: "AE123456789020-Lock@in.provider.com",
    key: "0f1e2d3c4b5a6978",
};

const CBC: &str = "PSK-AES128-CBC-SHA256";
const CCM8: &str = "PSK-AES128-CCM8";
const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// A CSE with a PSK-only TLS listener and the two door-lock rows (plus `extra`).
fn door_lock_cse(extra: &str) -> CseProcess {
    CseProcess::start_temp(&format!(
        "{extra}\n[tls]\nlisten = \"127.0.0.1:0\"\n\n{}\n{}",
        psk_row_toml(&LOCK1),
        psk_row_toml(&LOCK2)
    ))
}

// ---------------------------------------------------------------------------------------------
// Third-party peers
// ---------------------------------------------------------------------------------------------

/// `have_tool` for this file's peers (`.ci/run` installs openssl, gnutls-bin and curl).
fn have(program: &str) -> bool {
    // `openssl` has no `--version` option (it exits 1 on it): ask it with `version`.
    let version_arg = if program == "openssl" {
        "version"
    } else {
        "--version"
    };
    have_tool(program, version_arg, "this security-association test")
}

/// What a peer process did.
struct PeerRun {
    what: String,
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: String,
}

impl PeerRun {
    fn response(&self) -> Option<Resp> {
        parse_http_response(&self.stdout)
    }

    /// The HTTP response, or a panic that shows what the peer printed.
    fn expect_response(&self) -> Resp {
        self.response().unwrap_or_else(|| {
            panic!(
                "{}: no HTTP response (exit {:?})\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.status,
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs a peer: writes `input` on its stdin and keeps stdin open (unless `close_stdin`, for a
/// peer that reads its input to the end first) until the peer closes its stdout (the server
/// closes the connection after a `Connection: close` answer), or kills it after [`PEER_TIMEOUT`].
fn run_peer(mut cmd: Command, input: &[u8], close_stdin: bool) -> PeerRun {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    // A peer that fails the handshake may exit before reading: ignore a broken pipe.
    let _ = stdin.write_all(input);
    let _ = stdin.flush();
    let stdin = (!close_stdin).then_some(stdin);
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let mut err = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let stdout = match rx.recv_timeout(PEER_TIMEOUT) {
        Ok(b) => b,
        Err(_) => {
            let _ = child.kill();
            rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
        }
    };
    drop(stdin);
    let status = child.wait().ok();
    let stderr = err_reader.join().unwrap_or_default();
    PeerRun {
        what,
        status,
        stdout,
        stderr,
    }
}

/// `openssl s_client` with a PSK; `args` adds or overrides options (version, cipher).
fn s_client(port: u16, identity: &str, key: &str, args: &[&str], input: &[u8]) -> PeerRun {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-psk", key, "-psk_identity", identity])
        .args(args)
        .args(["-quiet", "-ign_eof"]);
    run_peer(cmd, input, false)
}

/// An AE's side of a PSK association through `openssl s_client -tls1_2`: a door-lock row and
/// a cipher suite.
struct Psk<'a>(&'a CseProcess, &'a Row, &'a str);

impl Psk<'_> {
    /// One oneM2M request over a new association.
    fn send(
        &self,
        method: &str,
        path: &str,
        from: &str,
        ty: Option<u16>,
        body: Option<&Value>,
    ) -> Resp {
        let Psk(cse, row, cipher) = self;
        let req = http_request(method, "127.0.0.1", path, Some(from), ty, body);
        s_client(
            cse.https_port(),
            row.kpsa_id,
            row.key,
            &["-tls1_2", "-cipher", cipher],
            &req,
        )
        .expect_response()
    }
}

/// `gnutls-cli` with a PSK, TLS 1.2 and TLS_PSK_WITH_AES_128_CBC_SHA256 only.
fn gnutls_cli(port: u16, row: &Row, input: &[u8]) -> PeerRun {
    let mut cmd = Command::new("gnutls-cli");
    cmd.args(["--pskusername", row.kpsa_id, "--pskkey", row.key])
        .arg("--priority")
        .arg("NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-CBC:-MAC-ALL:+SHA256")
        .args(["-p", &port.to_string(), "127.0.0.1"]);
    run_peer(cmd, input, false)
}

/// A oneM2M request with `curl` to `https://id-in.m2m.example.com:PORT` resolved to loopback;
/// `tls_args` are the certificate options. Returns curl's exit code and the response, if any.
fn curl(
    port: u16,
    tls_args: &[&str],
    method: &str,
    path: &str,
    from: &str,
    ty: Option<u16>,
    body: Option<&Value>,
) -> (Option<i32>, Option<Resp>, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "15", "--tlsv1.2"])
        .arg("--resolve")
        .arg(format!("{IN_SERVER_NAME}:{port}:127.0.0.1"))
        .args(tls_args)
        .args(["-X", method])
        .args(["-H", &format!("X-M2M-Origin: {from}")])
        .args(["-H", &format!("X-M2M-RI: {}", rqi())])
        .args(["-H", "X-M2M-RVI: 3", "-H", "Accept: application/json"]);
    let input = body
        .map(|b| serde_json::to_vec(b).expect("JSON"))
        .unwrap_or_default();
    if let Some(ty) = ty {
        cmd.args(["-H", &format!("Content-Type: application/json;ty={ty}")]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("https://{IN_SERVER_NAME}:{port}{path}"));
    let run = run_peer(cmd, &input, true);
    (
        run.status.and_then(|s| s.code()),
        run.response(),
        run.stderr.clone(),
    )
}

fn ae_body(rn: &str, api: &str) -> Value {
    json!({ "m2m:ae": { "rn": rn, "api": api, "rr": false, "srv": ["3"] } })
}

/// How many handshakes the CSE refused so far (its audit log).
fn refused_count(cse: &CseProcess) -> usize {
    cse.stderr()
        .lines()
        .filter(|l| l.contains("association refused"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// PSK peers
// ---------------------------------------------------------------------------------------------

/// The door-lock guide's flow (seeds/000 clause 7.1.2) with `openssl s_client`: both rows, both
/// PSK suites of TS-0003 clause 10.2.2.
#[test]
fn openssl_s_client_door_locks() {
    if !have("openssl") {
        return;
    }
    let cse = door_lock_cse("");
    for (row, rn) in [(&LOCK1, "lock1"), (&LOCK2, "lock2")] {
        let r = Psk(&cse, row, CBC).send(
            "POST",
            "/cse-in",
            "C",
            Some(2),
            Some(&ae_body(rn, "Ndoorlock")),
        );
        assert_eq!(
            r.rsc, 2001,
            "{} registers over its PSK: {:?}",
            row.ae, r.body
        );
        assert_eq!(
            r.body["m2m:ae"]["aei"],
            json!(row.ae),
            "From C over an association bound to {}: the AE gets that AE-ID",
            row.ae
        );
        let parent = format!("/cse-in/{rn}");
        let r = Psk(&cse, row, CBC).send(
            "POST",
            &parent,
            row.ae,
            Some(3),
            Some(&json!({ "m2m:cnt": { "rn": "state" } })),
        );
        assert_eq!(r.rsc, 2001, "{}: container: {:?}", row.ae, r.body);
        let state = format!("{parent}/state");
        for (cipher, con) in [(CBC, "locked"), (CCM8, "unlocked")] {
            let r = Psk(&cse, row, cipher).send(
                "POST",
                &state,
                row.ae,
                Some(4),
                Some(&json!({ "m2m:cin": { "con": con } })),
            );
            assert_eq!(
                r.rsc, 2001,
                "{}: contentInstance over {cipher}: {:?}",
                row.ae, r.body
            );
        }
        let r = Psk(&cse, row, CCM8).send("GET", &format!("{state}/la"), row.ae, None, None);
        assert_eq!(r.rsc, 2000, "{}: latest: {:?}", row.ae, r.body);
        assert_eq!(r.body["m2m:cin"]["con"], json!("unlocked"), "{:?}", r.body);
    }
    let log = cse.stderr();
    for row in [&LOCK1, &LOCK2] {
        assert!(
            log.lines().any(|l| l.contains("association established")
                && l.contains(row.kpsa_id)
                && l.contains(row.ae)),
            "the audit log names the credential and {}:\n{log}",
            row.ae
        );
        assert!(
            !log.contains(row.key) && !cse.stdout().contains(row.key),
            "no key material in the CSE's output"
        );
    }
}

/// The same flow with GnuTLS's client.
#[test]
fn gnutls_cli_door_lock() {
    if !have("gnutls-cli") {
        return;
    }
    let cse = door_lock_cse("");
    let port = cse.https_port();
    let send = |method: &str, path: &str, from: &str, ty: Option<u16>, body: Value| {
        let req = http_request(method, "127.0.0.1", path, Some(from), ty, Some(&body));
        gnutls_cli(port, &LOCK2, &req).expect_response()
    };
    let r = send(
        "POST",
        "/cse-in",
        "C",
        Some(2),
        ae_body("lock2", "Ndoorlock"),
    );
    assert_eq!(r.rsc, 2001, "registration over gnutls-cli: {:?}", r.body);
    assert_eq!(r.body["m2m:ae"]["aei"], json!(LOCK2.ae), "{:?}", r.body);
    let r = send(
        "POST",
        "/cse-in/lock2",
        LOCK2.ae,
        Some(3),
        json!({ "m2m:cnt": { "rn": "state" } }),
    );
    assert_eq!(r.rsc, 2001, "container over gnutls-cli: {:?}", r.body);
    let r = send(
        "POST",
        "/cse-in/lock2/state",
        LOCK2.ae,
        Some(4),
        json!({ "m2m:cin": { "con": "locked" } }),
    );
    assert_eq!(r.rsc, 2001, "contentInstance over gnutls-cli: {:?}", r.body);
    // A wrong key: the handshake fails, nothing is answered.
    let wrong = Row {
        key: "12345678abcdefac",
        ..LOCK2
    };
    let req = http_request(
        "GET",
        "127.0.0.1",
        "/cse-in/lock2",
        Some(LOCK2.ae),
        None,
        None,
    );
    let run = gnutls_cli(port, &wrong, &req);
    assert!(
        run.response().is_none() && !run.succeeded(),
        "gnutls-cli with a wrong key must fail: {:?}\n{}",
        String::from_utf8_lossy(&run.stdout),
        run.stderr
    );
}

/// Handshakes outside the profile or with wrong credentials fail without any HTTP answer, the
/// CSE logs each refusal, and it keeps serving.
#[test]
fn refused_handshakes() {
    if !have("openssl") {
        return;
    }
    let cse = door_lock_cse("");
    let port = cse.https_port();
    let req = http_request("GET", "127.0.0.1", "/cse-in", Some(LOCK1.ae), None, None);
    let wrong_key = "1a2b3c4d5e6f7a8c";
    let cases: [(&str, &str, &str, &[&str]); 5] = [
        (
            "a wrong key",
            LOCK1.kpsa_id,
            wrong_key,
            &["-tls1_2", "-cipher", CBC],
        ),
        (
            "an unknown identity",
            "AE000000000000-Lock@in.provider.com",
            LOCK1.key,
            &["-tls1_2", "-cipher", CBC],
        ),
        (
            "a suite outside the profile",
            LOCK1.kpsa_id,
            LOCK1.key,
            &["-tls1_2", "-cipher", "PSK-AES256-CBC-SHA384"],
        ),
        // TLS 1.0/1.1 have no SHA-256 suites: offer the SHA-1 PSK suite, which the client may
        // send at security level 0, so the server (not the client) has to refuse.
        (
            "TLS 1.0",
            LOCK1.kpsa_id,
            LOCK1.key,
            &["-tls1", "-cipher", "PSK-AES128-CBC-SHA:@SECLEVEL=0"],
        ),
        (
            "TLS 1.1",
            LOCK1.kpsa_id,
            LOCK1.key,
            &["-tls1_1", "-cipher", "PSK-AES128-CBC-SHA:@SECLEVEL=0"],
        ),
    ];
    for (what, identity, key, args) in cases {
        let before = refused_count(&cse);
        let run = s_client(port, identity, key, args, &req);
        assert!(
            run.response().is_none(),
            "{what}: no HTTP response expected, got {:?}",
            String::from_utf8_lossy(&run.stdout)
        );
        assert!(
            !run.succeeded(),
            "{what}: s_client reports the failed handshake\n{}",
            run.stderr
        );
        let logged = poll(Duration::from_secs(5), || {
            (refused_count(&cse) > before).then_some(())
        });
        assert!(
            logged.is_some(),
            "{what}: the CSE itself refused the handshake (audit line)\ns_client: {}\nCSE:\n{}",
            run.stderr,
            cse.stderr()
        );
    }
    let mut cse = cse;
    assert!(cse.is_running(), "the CSE survives refused handshakes");
    let r = Psk(&cse, &LOCK1, CBC).send(
        "POST",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("lock1", "Ndoorlock")),
    );
    assert_eq!(
        r.rsc, 2001,
        "after the refusals a good association still registers: {:?}",
        r.body
    );
    let log = cse.stderr();
    assert!(
        !log.contains(LOCK1.key) && !log.contains(wrong_key),
        "no key material in the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// An AE with a certificate from `m2m pki` registers and reads over mutual TLS with curl;
/// certificates from another CA, expired, not yet valid, outside the profile (P-384) or none are refused.
#[test]
fn curl_with_ae_certificates() {
    if !have("curl") {
        return;
    }
    let pki = Pki::temp();
    let cse = CseProcess::start_temp(&in_tls_config(&pki));
    let port = cse.https_port();
    let ca = pki.ca_pem();
    let ca = ca.to_str().expect("UTF-8");
    let issue = |name: &str, extra: &[&str]| {
        let mut args = vec!["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"];
        args.extend_from_slice(extra);
        let (pem, key) = pki.issue(&args, name);
        (
            pem.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        )
    };
    let (pem, key) = issue("phone", &[]);
    let phone: [&str; 6] = ["--cacert", ca, "--cert", &pem, "--key", &key];

    let (code, r, err) = curl(
        port,
        &phone,
        "POST",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("phone", "Nphone")),
    );
    let r = r.unwrap_or_else(|| panic!("curl registration: exit {code:?}: {err}"));
    assert_eq!(
        r.rsc, 2001,
        "registration with an AE certificate: {:?}",
        r.body
    );
    assert_eq!(
        r.body["m2m:ae"]["aei"],
        json!("Cphone"),
        "the AE-ID of the certificate's SAN: {:?}",
        r.body
    );
    let (code, r, err) = curl(port, &phone, "GET", "/cse-in/phone", "Cphone", None, None);
    let r = r.unwrap_or_else(|| panic!("curl retrieve: exit {code:?}: {err}"));
    assert_eq!(r.rsc, 2000, "the AE reads its resource: {:?}", r.body);
    // Any form of the bound AE-ID is the same originator.
    let (_, r, err) = curl(
        port,
        &phone,
        "GET",
        "/cse-in/phone",
        "//m2m.example.com/id-in/Cphone",
        None,
        None,
    );
    let r = r.unwrap_or_else(|| panic!("curl retrieve (absolute From): {err}"));
    assert_eq!(r.rsc, 2000, "absolute AE-ID as From: {:?}", r.body);
    // The admin originator over an association not bound to it is not the admin.
    let (_, r, err) = curl(port, &phone, "GET", "/cse-in", "CAdmin", None, None);
    let r = r.unwrap_or_else(|| panic!("curl as CAdmin: {err}"));
    assert_eq!(
        r.rsc, 4106,
        "CAdmin over Cphone's certificate association: {:?}",
        r.body
    );

    // Refusals: the handshake fails, curl exits non-zero, no HTTP answer.
    let foreign = Pki::temp();
    let (fpem, fkey) = foreign.issue(&["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"], "x");
    let (epem, ekey) = issue(
        "expired",
        &[
            "--not-before",
            "2019-01-01T00:00:00Z",
            "--not-after",
            "2020-01-01T00:00:00Z",
        ],
    );
    let (ypem, ykey) = issue(
        "not-yet-valid",
        &[
            "--not-before",
            "2099-01-01T00:00:00Z",
            "--not-after",
            "2100-01-01T00:00:00Z",
        ],
    );
    let (ppem, pkey) = issue("p384", &["--key-type", "p384"]);
    let (fpem, fkey) = (
        fpem.to_string_lossy().into_owned(),
        fkey.to_string_lossy().into_owned(),
    );
    let cases: [(&str, Vec<&str>); 5] = [
        (
            "a certificate from another CA",
            vec!["--cacert", ca, "--cert", &fpem, "--key", &fkey],
        ),
        (
            "an expired certificate",
            vec!["--cacert", ca, "--cert", &epem, "--key", &ekey],
        ),
        (
            "a not-yet-valid certificate",
            vec!["--cacert", ca, "--cert", &ypem, "--key", &ykey],
        ),
        (
            "a P-384 certificate",
            vec!["--cacert", ca, "--cert", &ppem, "--key", &pkey],
        ),
        ("no certificate", vec!["--cacert", ca]),
    ];
    for (what, args) in cases {
        let before = refused_count(&cse);
        let (code, r, err) = curl(port, &args, "GET", "/cse-in/phone", "Cphone", None, None);
        assert!(
            code.is_some_and(|c| c != 0) && r.is_none(),
            "{what}: curl must fail, got exit {code:?} and {r:?} ({err})"
        );
        let logged = poll(Duration::from_secs(5), || {
            (refused_count(&cse) > before).then_some(())
        });
        assert!(
            logged.is_some(),
            "{what}: the CSE refused the association (audit line); curl: {err}\nCSE:\n{}",
            cse.stderr()
        );
    }
    let mut cse = cse;
    assert!(cse.is_running(), "the CSE survives refused certificates");
}

// ---------------------------------------------------------------------------------------------
// Impersonation, listener policy, keystore, registration rules
// ---------------------------------------------------------------------------------------------

/// TS-0003 clause 7.2.1: the originator must be the identity of the association; CSEs need one;
/// unregistered AE-IDs without one are refused.
#[test]
fn impersonation() {
    if !have("openssl") {
        return;
    }
    let cse = door_lock_cse("");
    for (row, rn) in [(&LOCK1, "lock1"), (&LOCK2, "lock2")] {
        let r = Psk(&cse, row, CBC).send(
            "POST",
            "/cse-in",
            "C",
            Some(2),
            Some(&ae_body(rn, "Ndoorlock")),
        );
        assert_eq!(r.rsc, 2001, "{} registers: {:?}", row.ae, r.body);
    }
    let r = Psk(&cse, &LOCK1, CBC).send("GET", "/cse-in/lock1", LOCK1.ae, None, None);
    assert_eq!(r.rsc, 2000, "Clock-AE1 as itself: {:?}", r.body);
    for other in [LOCK2.ae, "Clock-AE2", "/id-in/Cllock-AE2"] {
        let r = Psk(&cse, &LOCK1, CBC).send("GET", "/cse-in/lock2", other, None, None);
        assert_eq!(
            r.rsc, 4106,
            "From {other} over Clock-AE1's association: {:?}",
            r.body
        );
    }
    // A registration over Clock-AE1's association with another AE-ID is impersonation too.
    let r = Psk(&cse, &LOCK1, CBC).send(
        "POST",
        "/cse-in",
        "Cintruder",
        Some(2),
        Some(&ae_body("intruder", "Ndoorlock")),
    );
    assert_eq!(
        r.rsc, 4106,
        "registering as Cintruder over Clock-AE1's association: {:?}",
        r.body
    );

    // Without an association (the loopback plain listener).
    let r = retrieve_full(cse.url(), "/cse-in", "/id-mn");
    assert_eq!(
        r.rsc, 4107,
        "a CSE-ID without a security association: {:?}",
        r.body
    );
    let r = retrieve_full(cse.url(), "/cse-in/lock1", "Cnobody");
    assert_eq!(
        r.rsc, 4106,
        "an unregistered AE-ID without a security association: {:?}",
        r.body
    );
}

/// A plain listener off loopback needs `http.allow_insecure`; a configuration holding keys must
/// be private to its owner.
#[test]
fn listener_policy() {
    let (ok, _out, err) = cse_exit("[http]\nlisten = \"0.0.0.0:0\"\n", 0o600);
    assert!(!ok, "a plain listener on 0.0.0.0 must be refused");
    assert!(
        err.contains("allow_insecure"),
        "the error names http.allow_insecure:\n{err}"
    );

    let config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nlisten = \"127.0.0.1:0\"\n\n{}",
        psk_row_toml(&LOCK1)
    );
    let (ok, out, err) = cse_exit(&config, 0o644);
    assert!(!ok, "PSK rows in a world-readable configuration");
    assert!(err.contains("chmod"), "the error says to chmod:\n{err}");
    assert!(
        !err.contains(LOCK1.key) && !out.contains(LOCK1.key),
        "the refusal does not print the key:\n{out}\n{err}"
    );
}

/// The door-lock rows in an encrypted keystore made with `m2m keys`: the CSE uses them, and the
/// keys never appear in its output.
#[test]
fn keystore_rows() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("keys.m2mks");
    let keyfile = dir.path().join("master.key");
    let (store_s, key_s) = (
        store.to_str().expect("UTF-8").to_owned(),
        keyfile.to_str().expect("UTF-8").to_owned(),
    );
    m2m(&[
        "keys",
        "init",
        "--keystore",
        &store_s,
        "--key-file",
        &key_s,
        "--create-key-file",
    ]);
    for row in [&LOCK1, &LOCK2] {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([
                "keys",
                "add-psk",
                "--keystore",
                &store_s,
                "--key-file",
                &key_s,
            ])
            .args(["--kpsa-id", row.kpsa_id, "--key-env", "M2M_TEST_KPSA"])
            .args(["--entity", row.ae])
            .env("M2M_TEST_KPSA", row.key)
            .output()
            .expect("run m2m keys add-psk");
        assert!(
            out.status.success(),
            "m2m keys add-psk {}: {}",
            row.kpsa_id,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stored = std::fs::read(&store).expect("read the keystore");
    for row in [&LOCK1, &LOCK2] {
        assert!(
            !String::from_utf8_lossy(&stored).contains(row.key),
            "the keystore is encrypted: no key in hex"
        );
    }
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\n[security]\nkeystore = {store_s:?}\nkey_file = {key_s:?}\n"
    ));
    for (row, rn) in [(&LOCK1, "lock1"), (&LOCK2, "lock2")] {
        let r = Psk(&cse, row, CBC).send(
            "POST",
            "/cse-in",
            "C",
            Some(2),
            Some(&ae_body(rn, "Ndoorlock")),
        );
        assert_eq!(
            r.rsc, 2001,
            "{} registers with the keystore's row: {:?}",
            row.ae, r.body
        );
        assert_eq!(r.body["m2m:ae"]["aei"], json!(row.ae), "{:?}", r.body);
    }
    let run = s_client(
        cse.https_port(),
        LOCK3.kpsa_id,
        LOCK3.key,
        &["-tls1_2", "-cipher", CBC],
        &http_request("GET", "127.0.0.1", "/cse-in", Some("C"), None, None),
    );
    assert!(
        run.response().is_none(),
        "a row that is not in the keystore"
    );
    let output = format!("{}\n{}", cse.stdout(), cse.stderr());
    for row in [&LOCK1, &LOCK2] {
        assert!(
            !output.to_ascii_lowercase().contains(row.key),
            "the CSE printed the key of {}:\n{output}",
            row.kpsa_id
        );
    }
}

/// A PSK row without an AE-ID: the registration rules with applicableCredIDs decide (TS-0001
/// clause 10.2.2.2), the registered AE-ID is bound to the credential, and an ACP rule with
/// `acaf: true` lets only requests over that association through (TS-0003 clause 7.1.2).
#[test]
fn registration_rules_with_credentials() {
    if !have("openssl") {
        return;
    }
    let cse = door_lock_cse(&format!(
        "[[registration.rules]]\napci = [\"12-*@in.provider.com\"]\naai = [\"Ndoorlock\"]\naae = [\"C*\"]\n\n{}",
        psk_row_toml(&LOCK3)
    ));
    // Without the credential, no rule admits the App-ID.
    let r = create_full(cse.url(), "/cse-in", "C", 2, ae_body("plain", "Ndoorlock"));
    assert_eq!(
        r.rsc, 4126,
        "registration without a credential under an apci rule: {:?}",
        r.body
    );
    let send = |method: &str, path: &str, from: &str, ty: Option<u16>, body: Option<&Value>| {
        Psk(&cse, &LOCK3, CBC).send(method, path, from, ty, body)
    };
    let r = send(
        "POST",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("lock3", "Ndoorlock")),
    );
    assert_eq!(
        r.rsc, 2001,
        "registration over the credential: {:?}",
        r.body
    );
    let aei = r.body["m2m:ae"]["aei"]
        .as_str()
        .unwrap_or_else(|| panic!("aei: {:?}", r.body))
        .to_owned();
    assert!(aei.starts_with('C'), "a C-stem AE-ID: {aei}");
    let r = send(
        "POST",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("lock3bis", "Nother")),
    );
    assert_eq!(
        r.rsc, 4126,
        "an App-ID the rule does not allow: {:?}",
        r.body
    );

    // Later requests with that AE-ID over the same credential (new connections each time).
    let r = send(
        "POST",
        "/cse-in/lock3",
        &aei,
        Some(3),
        Some(&json!({ "m2m:cnt": { "rn": "state" } })),
    );
    assert_eq!(r.rsc, 2001, "container over the credential: {:?}", r.body);
    let r = send(
        "POST",
        "/cse-in/lock3/state",
        &aei,
        Some(4),
        Some(&json!({ "m2m:cin": { "con": "locked" } })),
    );
    assert_eq!(
        r.rsc, 2001,
        "contentInstance over the credential: {:?}",
        r.body
    );
    // Another credential cannot speak for it.
    let r = Psk(&cse, &LOCK1, CBC).send("GET", "/cse-in/lock3/state/la", &aei, None, None);
    assert_eq!(
        r.rsc, 4106,
        "{aei} over Clock-AE1's association: {:?}",
        r.body
    );

    // An ACP that requires an authenticated originator.
    let acp = json!({ "m2m:acp": {
        "rn": "authenticated-only",
        "pv": { "acr": [{ "acor": [aei], "acop": OP_RETRIEVE, "acaf": true }] },
        "pvs": { "acr": [{ "acor": [aei], "acop": OP_ALL }] },
    }});
    let r = send("POST", "/cse-in/lock3", &aei, Some(1), Some(&acp));
    assert_eq!(r.rsc, 2001, "ACP over the credential: {:?}", r.body);
    let acp_ri = r.body["m2m:acp"]["ri"].as_str().expect("acp ri").to_owned();
    let r = send(
        "PUT",
        "/cse-in/lock3/state",
        &aei,
        None,
        Some(&json!({ "m2m:cnt": { "acpi": [acp_ri] } })),
    );
    assert_eq!(r.rsc, 2004, "acpi of the container: {:?}", r.body);
    let r = send("GET", "/cse-in/lock3/state/la", &aei, None, None);
    assert_eq!(r.rsc, 2000, "acaf: true over the association: {:?}", r.body);
    assert_eq!(r.body["m2m:cin"]["con"], json!("locked"), "{:?}", r.body);
    // The AE is registered, so its AE-ID passes the impersonation check on the loopback plain
    // listener, but the request is not authenticated.
    let r = retrieve_full(cse.url(), "/cse-in/lock3/state/la", &aei);
    assert_eq!(
        r.rsc, 4103,
        "acaf: true over plain HTTP (not authenticated): {:?}",
        r.body
    );
}
