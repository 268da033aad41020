//! The CoAP binding (TS-0008) over DTLS 1.2 (TS-0003 clause 10.2.1) on a real `m2m cse`, with
//! real third-party peers: libcoap's `coap-client-openssl` and `coap-client-gnutls` (its own
//! CoAP codec and block-wise logic over OpenSSL's and GnuTLS's DTLS), and `openssl s_client
//! -dtls1_2` forcing each PSK suite of the profile, TLS_PSK_WITH_AES_128_CCM_8 included. The
//! door locks of the developer guide (seeds/000 table 7.1.2-1) register and report over DTLS-PSK;
//! the attacks of the story are tried over DTLS: wrong key, guessed KpsaID, one lock posing as
//! the other.
//!
//! libcoap's clients refuse a response that carries options they do not know as critical (RFC
//! 7252 clause 5.4.1), and every oneM2M option is critical: they print what they received at
//! verbosity 7 before refusing it, so the tests read the response (code, oneM2M-RSC, payload)
//! from that print, as decoded by libcoap.
//!
//! A missing peer skips its test with a loud message, except in CI where it fails it.

mod common;

use common::*;
use m2m_core::coap_binding;
use m2m_core::{Operation, Request};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// A CSE with TLS and DTLS listeners (PSK only) and the two door-lock rows. Handshakes time out
/// after 2 s: under DTLS a wrong key is seen only so (RFC 6347 clause 4.1.2.7: records that fail
/// to decrypt are dropped, not answered with an alert).
fn dtls_cse() -> CseProcess {
    CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n\n{}\n{}",
        psk_row_toml(&LOCK1),
        psk_row_toml(&LOCK2)
    ))
}

/// A response as a third-party peer decoded it.
#[derive(Debug)]
struct Answer {
    /// The CoAP code, e.g. `2.01`.
    code: String,
    /// The oneM2M-RSC option.
    rsc: Option<u16>,
    body: Value,
}

/// Runs a command with a deadline; returns (stdout, stderr). `hold` keeps its stdin open a
/// moment (s_client ends its session when stdin closes).
fn run(mut cmd: Command, input: &[u8], hold: bool) -> (Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input);
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    if hold {
        std::thread::sleep(Duration::from_millis(1500));
    }
    drop(stdin);
    // s_client does not always end its DTLS session at the end of its input: give it a moment
    // to print what it received, then end it.
    let deadline = std::time::Instant::now()
        + if hold {
            Duration::from_secs(3)
        } else {
            PEER_TIMEOUT
        };
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    (
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default(),
    )
}

/// `coap-client-<tls>` (openssl or gnutls) with a PSK: one request, the response libcoap printed.
#[allow(clippy::too_many_arguments)]
fn coap_client(
    tls: &str,
    port: u16,
    identity: &str,
    key_hex: &str,
    method: &str,
    path: &str,
    from: &str,
    ty: Option<u8>,
    body: Option<&Value>,
) -> Option<Answer> {
    let key: Vec<u8> = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).expect("hex key"))
        .collect();
    let mut cmd = Command::new(format!("coap-client-{tls}"));
    cmd.args(["-u", identity]);
    // libcoap takes the key as raw bytes: pass them through the OS string untouched.
    use std::os::unix::ffi::OsStringExt;
    cmd.arg("-k").arg(std::ffi::OsString::from_vec(key));
    libcoap_request(
        cmd,
        &format!("coaps://127.0.0.1:{port}"),
        method,
        path,
        from,
        ty,
        body,
    )
}

/// One oneM2M request through libcoap's `cmd` (its security options already given) to `base`
/// (scheme://host:port): From, a fresh RQI, TY for a CREATE, a JSON payload; the response
/// libcoap printed.
fn libcoap_request(
    mut cmd: Command,
    base: &str,
    method: &str,
    path: &str,
    from: &str,
    ty: Option<u8>,
    body: Option<&Value>,
) -> Option<Answer> {
    cmd.args(["-v", "7", "-B", "3", "-m", method]).args([
        "-O",
        &format!("279,{from}"),
        "-O",
        &format!("283,{}", rqi()),
    ]);
    if let Some(ty) = ty {
        cmd.args(["-O", &format!("267,0x{ty:02x}")]);
    }
    if let Some(b) = body {
        cmd.args(["-t", "10001", "-e", &b.to_string()]);
    }
    cmd.arg(format!("{base}{path}"));
    let (out, err) = run(cmd, b"", false);
    parse_libcoap(&String::from_utf8_lossy(&out), &err)
}

/// The response in libcoap's debug print: `v:1 t:ACK c:2.01 i:... [ ..., 307:\x07\xD1 ] ...`
/// then the payload as hex in `<<...>>`.
fn parse_libcoap(out: &str, err: &str) -> Option<Answer> {
    let text = format!("{out}\n{err}");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| {
        l.contains("v:1 t:ACK c:") || l.contains("v:1 t:NON c:2") || l.contains("v:1 t:CON c:2")
    })?;
    let line = lines[at];
    let code = line
        .split("c:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_owned();
    let rsc = line.split("307:").nth(1).and_then(|rest| {
        let bytes = unescape(rest.split([',', ' ', ']']).next()?);
        Some(coap_binding::decode_uint(&bytes)? as u16)
    });
    let body = lines[at + 1..]
        .iter()
        .find_map(|l| {
            let hex = l.trim().strip_prefix("<<")?.strip_suffix(">>")?;
            if hex.contains(' ') {
                return None;
            }
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            // JSON, or else CBOR (a CBOR Content-Format), or else XML.
            serde_json::from_slice(&bytes).ok().or_else(|| {
                m2m_core::serialization::Serialization::Cbor
                    .decode(&bytes)
                    .ok()
                    .or_else(|| {
                        m2m_core::serialization::Serialization::Xml
                            .decode(&bytes)
                            .ok()
                    })
            })
        })
        .unwrap_or(Value::Null);
    Some(Answer { code, rsc, body })
}

/// libcoap's option print: printable characters as they are, others as `\xNN`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn have_libcoap() -> bool {
    have_program("coap-client-openssl", "the CoAP/DTLS interoperability test")
        && have_program("coap-client-gnutls", "the CoAP/DTLS interoperability test")
}

fn ae_body(rn: &str) -> Value {
    json!({ "m2m:ae": { "rn": rn, "api": "Ndoorlock", "rr": false, "srv": ["3"] } })
}

/// The door-lock flow of seeds/000 clause 7.1.2 over CoAP/DTLS-PSK: each lock registers with its
/// own key (lock 1 through libcoap on OpenSSL, lock 2 through libcoap on GnuTLS), creates its
/// state container and reports; the latest state reads back.
#[test]
fn door_locks_report_over_dtls_psk_with_libcoap() {
    if !have_libcoap() {
        return;
    }
    let cse = dtls_cse();
    let port = cse.coaps_port();
    for (tls, row, rn) in [("openssl", &LOCK1, "lock1"), ("gnutls", &LOCK2, "lock2")] {
        let send = |method: &str, path: &str, from: &str, ty: Option<u8>, body: Option<&Value>| {
            coap_client(
                tls,
                port,
                row.kpsa_id,
                row.key,
                method,
                path,
                from,
                ty,
                body,
            )
            .unwrap_or_else(|| panic!("{tls}: no response printed by libcoap"))
        };
        let r = send("post", "/cse-in", "C", Some(2), Some(&ae_body(rn)));
        assert_eq!(
            (r.code.as_str(), r.rsc),
            ("2.01", Some(2001)),
            "{tls}: {r:?}"
        );
        assert_eq!(
            r.body["m2m:ae"]["aei"],
            json!(row.ae),
            "{tls}: From C over an association bound to {}: the AE gets that AE-ID",
            row.ae
        );
        let parent = format!("/cse-in/{rn}");
        let body = json!({ "m2m:cnt": { "rn": "state" } });
        let r = send("post", &parent, row.ae, Some(3), Some(&body));
        assert_eq!(r.rsc, Some(2001), "{tls}: container: {r:?}");
        let state = format!("{parent}/state");
        for con in ["locked", "unlocked"] {
            let body = json!({ "m2m:cin": { "con": con } });
            let r = send("post", &state, row.ae, Some(4), Some(&body));
            assert_eq!(r.rsc, Some(2001), "{tls}: contentInstance: {r:?}");
        }
        let r = send("get", &format!("{state}/la"), row.ae, None, None);
        assert_eq!(
            (r.code.as_str(), r.rsc),
            ("2.05", Some(2000)),
            "{tls}: {r:?}"
        );
        assert_eq!(r.body["m2m:cin"]["con"], json!("unlocked"), "{r:?}");
    }
    let log = cse.stderr();
    for row in [&LOCK1, &LOCK2] {
        assert!(
            log.lines().any(|l| l.contains("association established")
                && l.contains("cse-dtls")
                && l.contains(row.kpsa_id)
                && l.contains(row.ae)),
            "the audit log names the DTLS listener, the credential and {}:\n{log}",
            row.ae
        );
        // libcoap's locks get CCM_8 (the server's preference) and records without OpenSSL.
        assert!(
            log.lines().any(|l| l.contains("association established")
                && l.contains(row.kpsa_id)
                && l.contains("PSK-AES128-CCM8")
                && l.contains("transport")),
            "{}: CCM_8, records by the transport:\n{log}",
            row.ae
        );
        assert!(!log.contains(row.key), "no key material in the log");
    }
}

/// The attacks of the story over DTLS: a wrong key and a guessed KpsaID get no association (and
/// no CoAP answer at all); a lock with its own key posing as the other lock is refused 4106.
#[test]
fn dtls_refuses_wrong_keys_guessed_identities_and_impersonation() {
    if !have_libcoap() {
        return;
    }
    let cse = dtls_cse();
    let port = cse.coaps_port();
    // Lock 1 registers first, over its own association.
    let r = coap_client(
        "openssl",
        port,
        LOCK1.kpsa_id,
        LOCK1.key,
        "post",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("lock1")),
    )
    .expect("lock 1 registers");
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    for tls in ["openssl", "gnutls"] {
        let refused_before = refused(&cse);
        // The right identity with a wrong key.
        let r = coap_client(
            tls,
            port,
            LOCK1.kpsa_id,
            "1a2b3c4d5e6f7a8c",
            "get",
            "/cse-in/lock1",
            LOCK1.ae,
            None,
            None,
        );
        assert!(r.is_none(), "{tls}: wrong key answered: {r:?}");
        // A KpsaID nobody provisioned.
        let r = coap_client(
            tls,
            port,
            "AE999999999999-Lock@in.provider.com",
            LOCK1.key,
            "get",
            "/cse-in/lock1",
            LOCK1.ae,
            None,
            None,
        );
        assert!(r.is_none(), "{tls}: unknown identity answered: {r:?}");
        assert!(
            poll(Duration::from_secs(8), || (refused(&cse)
                >= refused_before + 2)
                .then_some(()))
            .is_some(),
            "{tls}: both handshakes are refused in the audit log:\n{}",
            cse.stderr()
        );
        // Lock 2, holding its own key, says it is lock 1: in every form of its AE-ID (TS-0001
        // table 7.2-1), and the admin too.
        let forms = [
            LOCK1.ae,
            "/id-in/Clock-AE1",
            "//m2m.example.com/id-in/Clock-AE1",
            "CAdmin",
        ];
        for from in forms {
            let r = coap_client(
                tls,
                port,
                LOCK2.kpsa_id,
                LOCK2.key,
                "delete",
                "/cse-in/lock1",
                from,
                None,
                None,
            )
            .expect("lock 2's association answers");
            assert_eq!(
                (r.code.as_str(), r.rsc),
                ("4.03", Some(4106)),
                "{tls} as {from}: {r:?}"
            );
        }
    }
    // Lock 1 is still there.
    let r = coap_client(
        "openssl",
        port,
        LOCK1.kpsa_id,
        LOCK1.key,
        "get",
        "/cse-in/lock1",
        LOCK1.ae,
        None,
        None,
    )
    .expect("lock 1 reads itself");
    assert_eq!(r.rsc, Some(2000), "{r:?}");
    assert!(!cse.stderr().contains(LOCK2.key) && !cse.stderr().contains("1a2b3c4d5e6f7a8c"));
}

fn refused(cse: &CseProcess) -> usize {
    cse.stderr()
        .lines()
        .filter(|l| l.contains("association refused") && l.contains("cse-dtls"))
        .count()
}

/// `openssl s_client -dtls1_2` forcing each PSK suite of TS-0003 clause 10.2.2, the mandatory
/// TLS_PSK_WITH_AES_128_CCM_8 of DTLS included, sends a CoAP request it did not build; the
/// HelloVerifyRequest cookie exchange happens first and is smaller than the ClientHello (no
/// amplification).
#[test]
fn openssl_s_client_dtls_each_psk_suite_and_the_cookie_exchange() {
    if !have_tool("openssl", "version", "the DTLS interoperability test") {
        return;
    }
    let cse = dtls_cse();
    let port = cse.coaps_port();
    for suite in ["PSK-AES128-CCM8", "PSK-AES128-CBC-SHA256"] {
        let mut req = Request::new(Operation::Retrieve, "cse-in", Some(LOCK1.ae.into()), rqi());
        req.rvi = Some("3".into());
        let mut p = coap_binding::encode_request(&req).unwrap();
        p.header.set_type(coap_lite::MessageType::Confirmable);
        p.header.message_id = 0x1234;
        p.set_token(vec![7, 7]);
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-psk", LOCK1.key, "-psk_identity", LOCK1.kpsa_id])
        .args(["-cipher", suite, "-msg", "-ign_eof"]);
        let (out, err) = run(cmd, &p.to_bytes().unwrap(), true);
        let text = String::from_utf8_lossy(&out);
        // `-msg` prints each record; OpenSSL 3.0 does not name DTLS messages, so read the
        // handshake records (content type 22) in order: the client's first ClientHello, the
        // server's HelloVerifyRequest (12-byte header, version, a 16-byte cookie: 31 bytes, less
        // than the ClientHello), the ClientHello again carrying the cookie (16 bytes longer).
        let flights: Vec<(bool, usize)> = text
            .lines()
            .filter(|l| l.contains("content_type=22"))
            .filter_map(|l| {
                let len = l.split("[length ").nth(1)?.split(']').next()?;
                Some((l.starts_with(">>>"), usize::from_str_radix(len, 16).ok()?))
            })
            .collect();
        assert!(
            flights.len() >= 3,
            "{suite}: handshake records:\n{text}\n{err}"
        );
        let (hello, verify, again) = (flights[0], flights[1], flights[2]);
        assert!(hello.0 && !verify.0 && again.0, "{suite}: {flights:?}");
        assert_eq!(
            verify.1, 31,
            "{suite}: a HelloVerifyRequest with a 16-byte cookie"
        );
        assert!(verify.1 < hello.1, "{suite}: no amplification: {flights:?}");
        assert_eq!(
            again.1,
            hello.1 + 16,
            "{suite}: the ClientHello returns the cookie"
        );
        assert!(
            text.contains(&format!("Cipher is {suite}")),
            "{suite} negotiated:\n{text}"
        );
        let resp = s_client_answer(&out)
            .unwrap_or_else(|| panic!("{suite}: no CoAP answer in s_client's output:\n{text}"));
        // Lock 1, not registered yet, reads the CSEBase over an association that authenticated
        // it: access control decides (no privilege), so the request got through the binding.
        assert_eq!(resp.rsc.code(), 4103, "{suite}: {resp:?}");
    }
    // Under CCM_8 the transport protected the records after the handshake (m2m-transport
    // dtls_record, OpenSSL's state freed), under CBC OpenSSL did: s_client got its answer both ways.
    let log = cse.stderr();
    for (suite, records) in [
        ("PSK-AES128-CCM8", "transport"),
        ("PSK-AES128-CBC-SHA256", "openssl"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("association established")
                && l.contains(suite)
                && l.contains(records)),
            "{suite}: records by {records}:\n{log}"
        );
    }
    // Suites outside the profile of TS-0003 clause 10.2.2: no handshake, no answer.
    for suite in [
        "PSK-AES256-GCM-SHA384",
        "PSK-CHACHA20-POLY1305",
        "PSK-AES128-CBC-SHA",
    ] {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-psk", LOCK1.key, "-psk_identity", LOCK1.kpsa_id])
        .args(["-cipher", suite]);
        let (out, err) = run(cmd, b"ping", true);
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("Cipher is") || text.contains("Cipher is (NONE)"),
            "{suite} must not be negotiated:\n{text}\n{err}"
        );
    }
}

/// The CoAP answer in the application data `openssl s_client` printed for a request of message
/// ID 0x1234 and a 2-byte token: the ACK (0x62 = version 1, ACK, token length 2; the code; 0x12
/// 0x34), decoded from the shortest suffix that decodes (s_client may print text after it).
fn s_client_answer(out: &[u8]) -> Option<m2m_core::Response> {
    let at = out
        .windows(4)
        .position(|w| w[0] == 0x62 && w[2] == 0x12 && w[3] == 0x34)?;
    (at + 5..=out.len()).find_map(|end| {
        let p = coap_lite::Packet::from_bytes(&out[at..end]).ok()?;
        coap_binding::decode_response(&p).ok()
    })
}

/// A request as an `openssl s_client` CoAP message (message ID 0x1234, token 7 7).
fn s_client_request(op: Operation, to: &str, from: &str) -> Vec<u8> {
    let mut req = Request::new(op, to, Some(from.into()), rqi());
    req.rvi = Some("3".into());
    let mut p = coap_binding::encode_request(&req).unwrap();
    p.header.set_type(coap_lite::MessageType::Confirmable);
    p.header.message_id = 0x1234;
    p.set_token(vec![7, 7]);
    p.to_bytes().unwrap()
}

/// A device that associated once comes back with an abbreviated handshake (`openssl s_client
/// -sess_out`, then `-sess_in`; RFC 5246 clause 7.3), under PSK and under certificates (with
/// CCM_8 and with GCM, ECDHE-ECDSA): it is who it was (the audit line names the same credential), and posing as another entity over the
/// resumed association is 4106 as over a full one.
#[test]
fn a_returning_device_resumes_its_session_and_stays_who_it_was() {
    if !have_tool("openssl", "version", "the DTLS resumption test") {
        return;
    }
    let pki = Pki::temp();
    let cse = CseProcess::start_temp(&format!(
        "{}dtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n\n{}",
        in_tls_config(&pki),
        psk_row_toml(&LOCK1)
    ));
    let port = cse.coaps_port();
    let dir = tempfile::tempdir().unwrap();
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let psk = [
        "-psk",
        LOCK1.key,
        "-psk_identity",
        LOCK1.kpsa_id,
        "-cipher",
        "PSK-AES128-CCM8",
    ];
    let ca = pki.ca_pem().display().to_string();
    let cert = |suite| {
        [
            "-cert",
            pem.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-CAfile",
            &ca,
            "-cipher",
            suite,
        ]
    };
    let (ccm8, gcm) = (
        cert("ECDHE-ECDSA-AES128-CCM8"),
        cert("ECDHE-ECDSA-AES128-GCM-SHA256"),
    );
    for (name, args, who, other) in [
        ("psk", &psk[..], LOCK1.ae, "Cphone"),
        ("certificate", &ccm8[..], "Cphone", LOCK1.ae),
        ("certificate-gcm", &gcm[..], "Cphone", LOCK1.ae),
    ] {
        let session = dir.path().join(format!("{name}.session"));
        let s_client = |resume: bool, from: &str| {
            let mut cmd = Command::new("openssl");
            cmd.args([
                "s_client",
                "-dtls1_2",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .args(args)
            .arg(if resume { "-sess_in" } else { "-sess_out" })
            .arg(&session)
            .arg("-ign_eof");
            let (out, err) = run(
                cmd,
                &s_client_request(Operation::Retrieve, "cse-in", from),
                true,
            );
            let text = format!("{}{err}", String::from_utf8_lossy(&out));
            (s_client_answer(&out), text)
        };
        let (first, text) = s_client(false, who);
        assert!(text.contains("New, TLSv1.2"), "{name}: {text}");
        let first = first.unwrap_or_else(|| panic!("{name}: an answer: {text}"));
        assert_ne!(
            first.rsc.code(),
            4106,
            "{name}: its own identity: {first:?}"
        );
        let established = |log: &str| {
            log.lines()
                .filter(|l| l.contains("association established"))
                .count()
        };
        let before = established(&cse.stderr());
        let (again, text) = s_client(true, who);
        assert!(text.contains("Reused, TLSv1.2"), "{name}: resumed: {text}");
        let again = again.unwrap_or_else(|| panic!("{name}: an answer when resumed: {text}"));
        assert_eq!(again.rsc, first.rsc, "{name}: the same answer as before");
        let log = cse.stderr();
        assert_eq!(established(&log), before + 1, "{name}: {log}");
        let line = log
            .lines()
            .rfind(|l| l.contains("association established"))
            .unwrap()
            .to_owned();
        let credential = if name == "psk" {
            LOCK1.kpsa_id
        } else {
            "Cphone"
        };
        let suite = args[args.len() - 1];
        assert!(line.contains(suite), "{name}: {suite} in {line}");
        assert!(line.contains(credential), "{name}: {line}");
        // Posing as another entity over a resumed association.
        let (posing, text) = s_client(true, other);
        assert!(text.contains("Reused, TLSv1.2"), "{name}: {text}");
        let posing = posing.unwrap_or_else(|| panic!("{name}: an answer: {text}"));
        assert_eq!(posing.rsc.code(), 4106, "{name} as {other}: {posing:?}");
    }
}

/// A revoked certificate (TS-0003 clause 8.1.2.2, `m2m pki revoke`) gets no association over
/// DTLS either: not by a full handshake, and not by resuming the session it held before its
/// revocation, which skips the certificate exchange.
#[test]
fn a_revoked_certificate_is_refused_over_dtls_even_when_resuming() {
    if !have_tool("openssl", "version", "the DTLS revocation test") {
        return;
    }
    let pki = Pki::temp();
    let ca_dir = pki.ca_dir().display().to_string();
    assert!(m2m_command(&["pki", "crl", "--ca", &ca_dir])
        .status
        .success());
    let crl = pki.ca_dir().join("crl.pem");
    let cse = CseProcess::start_temp(&format!(
        "{}crl = {:?}\ndtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n",
        in_tls_config(&pki),
        crl.display().to_string()
    ));
    let port = cse.coaps_port();
    let dir = tempfile::tempdir().unwrap();
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let ca = pki.ca_pem().display().to_string();
    let session = dir.path().join("phone.session");
    let s_client = |resume: Option<bool>| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "-cert",
            pem.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ])
        .args([
            "-CAfile",
            &ca,
            "-cipher",
            "ECDHE-ECDSA-AES128-CCM8",
            "-ign_eof",
        ]);
        match resume {
            Some(true) => cmd.arg("-sess_in").arg(&session),
            Some(false) => cmd.arg("-sess_out").arg(&session),
            None => &mut cmd,
        };
        let (out, err) = run(
            cmd,
            &s_client_request(Operation::Retrieve, "cse-in", "Cphone"),
            true,
        );
        let text = format!("{}{err}", String::from_utf8_lossy(&out));
        (s_client_answer(&out), text)
    };
    let (first, text) = s_client(Some(false));
    assert!(text.contains("New, TLSv1.2"), "{text}");
    assert!(first.is_some(), "an answer before the revocation: {text}");
    let (again, text) = s_client(Some(true));
    assert!(text.contains("Reused, TLSv1.2"), "{text}");
    assert!(again.is_some(), "resumed before the revocation: {text}");

    let out = m2m_command(&["pki", "revoke", "--ca", &ca_dir, pem.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let (full, text) = s_client(None);
    assert!(
        full.is_none(),
        "a full handshake after the revocation: {full:?} {text}"
    );
    let (resumed, text) = s_client(Some(true));
    assert!(
        text.contains("Reused, TLSv1.2"),
        "the session was resumed: {text}"
    );
    assert!(
        resumed.is_none(),
        "a resumed session after the revocation: {resumed:?} {text}"
    );
    assert!(
        cse.logged("certificate revoked"),
        "the refusal names its reason:\n{}",
        cse.stderr()
    );
}

/// The certificate-based framework over DTLS (TS-0003 clause 10.2.3, ECDHE-ECDSA with P-256):
/// libcoap presents an AE certificate made by `m2m pki` (`-c`/`-j`), validates the CSE's chain
/// against the CA (`-R`), and registers with the AE-ID of its SAN; a certificate of another CA
/// gets no association.
#[test]
fn certificates_over_dtls_with_libcoap() {
    if !have_libcoap() {
        return;
    }
    let pki = Pki::temp();
    let cse = CseProcess::start_temp(&format!(
        "{}dtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n",
        in_tls_config(&pki)
    ));
    let port = cse.coaps_port();
    let ca = pki.ca_pem().display().to_string();
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let foreign = Pki::temp();
    let (fpem, fkey) = foreign.issue(&["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"], "x");
    let send = |tls: &str,
                pem: &std::path::Path,
                key: &std::path::Path,
                method: &str,
                path: &str,
                from: &str,
                ty: Option<u8>,
                body: Option<&Value>| {
        let mut cmd = Command::new(format!("coap-client-{tls}"));
        cmd.arg("-c").arg(pem).arg("-j").arg(key).args(["-R", &ca]);
        libcoap_request(
            cmd,
            &format!("coaps://127.0.0.1:{port}"),
            method,
            path,
            from,
            ty,
            body,
        )
    };
    let body = json!({ "m2m:ae": { "rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"] } });
    let r = send(
        "openssl",
        &pem,
        &key,
        "post",
        "/cse-in",
        "C",
        Some(2),
        Some(&body),
    )
    .expect("an answer over the certificate association");
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    assert_eq!(
        r.body["m2m:ae"]["aei"],
        json!("Cphone"),
        "the SAN's AE-ID: {r:?}"
    );
    let r = send(
        "gnutls",
        &pem,
        &key,
        "get",
        "/cse-in/phone",
        "Cphone",
        None,
        None,
    )
    .expect("GnuTLS: an answer");
    assert_eq!((r.code.as_str(), r.rsc), ("2.05", Some(2000)), "{r:?}");
    let r = send(
        "openssl",
        &fpem,
        &fkey,
        "get",
        "/cse-in/phone",
        "Cphone",
        None,
        None,
    );
    assert!(r.is_none(), "a certificate of another CA: {r:?}");
    assert!(
        cse.logged("association refused"),
        "the foreign certificate is refused in the audit log:\n{}",
        cse.stderr()
    );
}

/// A DTLS-PSK association of lock 1 opened with the project's own client channel, for the
/// message-layer checks below (the peers above cannot send a duplicate on purpose).
async fn lock1_channel(port: u16) -> m2m_transport::DatagramChannel {
    m2m_transport::DatagramChannel::dtls(
        &lock1_context(),
        ([127, 0, 0, 1], port).into(),
        &m2m_transport::PeerCheck::PreSharedKey,
        Duration::from_secs(5),
    )
    .await
    .expect("lock 1 associates over DTLS")
}

/// Lock 1's DTLS client context (PSK, CCM_8).
fn lock1_context() -> openssl::ssl::SslContext {
    m2m_security::tls::dtls_client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: vec!["PSK-AES128-CCM8".into()],
        tls13: false,
        psk: Some((
            LOCK1.kpsa_id.into(),
            zeroize::Zeroizing::new(
                (0..LOCK1.key.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&LOCK1.key[i..i + 2], 16).unwrap())
                    .collect(),
            ),
        )),
        psk_source: None,
        certificate_chain: None,
        private_key: None,
        trusted_ca: None,
        revocation: None,
    })
    .unwrap()
}

async fn exchange(
    ch: &mut m2m_transport::DatagramChannel,
    p: &coap_lite::Packet,
) -> coap_lite::Packet {
    ch.send(&p.to_bytes().unwrap()).await.unwrap();
    let d = ch
        .recv(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an answer");
    coap_lite::Packet::from_bytes(&d).unwrap()
}

/// The message layer (RFC 7252): a retransmitted confirmable CREATE (same Message ID) is answered
/// again from memory and creates one resource; a ping gets a Reset; an unknown critical option
/// 4.02 and a method without a oneM2M operation 4.05, each without running anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_pings_and_refusals_at_the_message_layer() {
    use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
    let cse = dtls_cse();
    let port = cse.coaps_port();
    let mut ch = lock1_channel(port).await;
    let request = |op: Operation,
                   to: &str,
                   ty: Option<m2m_core::ResourceType>,
                   pc: Option<Value>,
                   mid: u16| {
        let mut req = Request::new(op, to, Some(LOCK1.ae.into()), rqi());
        req.ty = ty;
        req.pc = pc;
        let mut p = coap_binding::encode_request(&req).unwrap();
        p.header.set_type(MessageType::Confirmable);
        p.header.message_id = mid;
        p.set_token(mid.to_be_bytes().to_vec());
        p
    };
    let mut ae = request(
        Operation::Create,
        "cse-in",
        Some(m2m_core::ResourceType::Ae),
        Some(ae_body("lock1")),
        1,
    );
    ae.clear_option(CoapOption::Unknown(coap_binding::option::FR));
    ae.add_option(CoapOption::Unknown(coap_binding::option::FR), b"C".to_vec());
    let r = exchange(&mut ch, &ae).await;
    assert_eq!(coap_binding::decode_response(&r).unwrap().rsc.code(), 2001);
    let cnt = request(
        Operation::Create,
        "cse-in/lock1",
        Some(m2m_core::ResourceType::Container),
        Some(json!({"m2m:cnt": {"rn": "state"}})),
        2,
    );
    assert_eq!(
        coap_binding::decode_response(&exchange(&mut ch, &cnt).await)
            .unwrap()
            .rsc
            .code(),
        2001
    );
    let cin = request(
        Operation::Create,
        "cse-in/lock1/state",
        Some(m2m_core::ResourceType::ContentInstance),
        Some(json!({"m2m:cin": {"con": "unlocked"}})),
        3,
    );
    let first = exchange(&mut ch, &cin).await;
    let again = exchange(&mut ch, &cin).await;
    assert_eq!(first.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(
        first.header.message_id, 3,
        "piggybacked on the ACK of the request"
    );
    assert_eq!(first.get_token(), cin.get_token(), "the token is echoed");
    assert_eq!(first, again, "the duplicate gets the same answer");
    let state = exchange(
        &mut ch,
        &request(Operation::Retrieve, "cse-in/lock1/state", None, None, 4),
    )
    .await;
    let state = coap_binding::decode_response(&state).unwrap();
    assert_eq!(
        state.pc.unwrap()["m2m:cnt"]["cni"],
        json!(1),
        "one contentInstance, not two"
    );
    // A CoAP ping.
    let mut ping = Packet::new();
    ping.header.code = MessageClass::Empty;
    ping.header.set_type(MessageType::Confirmable);
    ping.header.message_id = 5;
    let r = exchange(&mut ch, &ping).await;
    assert_eq!(
        (r.header.get_type(), r.header.message_id),
        (MessageType::Reset, 5)
    );
    assert_eq!(
        r.header.code,
        MessageClass::Empty,
        "a Reset is an empty message"
    );
    // An unknown critical option, and FETCH.
    let mut odd = request(Operation::Delete, "cse-in/lock1", None, None, 6);
    odd.add_option(CoapOption::Unknown(2049), b"x".to_vec());
    let r = exchange(&mut ch, &odd).await;
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::BadOption)
    );
    let mut fetch = request(Operation::Retrieve, "cse-in/lock1", None, None, 7);
    fetch.header.code = MessageClass::Request(RequestType::Fetch);
    let r = exchange(&mut ch, &fetch).await;
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::MethodNotAllowed)
    );
    let r = exchange(
        &mut ch,
        &request(Operation::Retrieve, "cse-in/lock1", None, None, 8),
    )
    .await;
    assert_eq!(
        coap_binding::decode_response(&r).unwrap().rsc.code(),
        2000,
        "the AE is still there"
    );
    ch.close().await;
}

/// `m2m request` over coaps:// with a PSK: a contentInstance of 5,000 bytes goes up in Block1
/// blocks, a listing of 12 KB comes back in Block2 blocks, both whole.
#[test]
fn m2m_request_over_coaps_moves_large_payloads_in_blocks() {
    let cse = dtls_cse();
    let url = format!("coaps://127.0.0.1:{}", cse.coaps_port());
    let m2m = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .arg("request")
            .args([
                "--url",
                &url,
                "--psk-identity",
                LOCK1.kpsa_id,
                "--psk-key-env",
                "LOCK1_KPSA",
            ])
            .args(args)
            .env("LOCK1_KPSA", LOCK1.key)
            .output()
            .expect("run m2m request");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = m2m(&[
        "--from",
        "C",
        "-X",
        "create",
        "--to",
        "cse-in",
        "--ty",
        "2",
        "--body",
        &ae_body("lock1").to_string(),
    ]);
    assert!(out.starts_with("2001"), "{out}{err}");
    let big = "x".repeat(5000);
    let (out, err) = m2m(&[
        "--from",
        LOCK1.ae,
        "-X",
        "create",
        "--to",
        "cse-in/lock1",
        "--ty",
        "3",
        "--body",
        r#"{"m2m:cnt":{"rn":"log"}}"#,
    ]);
    assert!(out.starts_with("2001"), "{out}{err}");
    let body = json!({"m2m:cin": {"con": big}}).to_string();
    let (out, err) = m2m(&[
        "--from",
        LOCK1.ae,
        "-X",
        "create",
        "--to",
        "cse-in/lock1/log",
        "--ty",
        "4",
        "--body",
        &body,
    ]);
    assert!(out.starts_with("2001"), "{out}{err}");
    for i in 0..20 {
        let body =
            json!({"m2m:cin": {"con": format!("entry {i} {}", "y".repeat(400))}}).to_string();
        let (out, err) = m2m(&[
            "--from",
            LOCK1.ae,
            "-X",
            "create",
            "--to",
            "cse-in/lock1/log",
            "--ty",
            "4",
            "--body",
            &body,
        ]);
        assert!(out.starts_with("2001"), "{out}{err}");
    }
    let (out, err) = m2m(&[
        "--from",
        LOCK1.ae,
        "--to",
        "cse-in/lock1/log",
        "--rcn",
        "4",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let text = v.to_string();
    assert!(
        text.len() > 12_000,
        "a listing larger than ten blocks: {} bytes",
        text.len()
    );
    assert!(
        text.contains(&big),
        "the 5,000-byte content arrived whole and comes back whole"
    );
    assert!(text.contains("entry 19"), "every instance listed");
}

/// A device that restarts keeps its address and port and starts a new handshake while the CSE
/// still holds its old association (RFC 6347 clause 4.2.8): once the new ClientHello returns its
/// cookie, the new association replaces the old one and the device is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_on_the_same_port_associates_again() {
    let cse = dtls_cse();
    let port = cse.coaps_port();
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let local = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let ctx = lock1_context();
    let retrieve = |mid: u16| {
        let mut req = Request::new(Operation::Retrieve, "cse-in", Some(LOCK1.ae.into()), rqi());
        req.rvi = Some("3".into());
        let mut p = coap_binding::encode_request(&req).unwrap();
        p.header.set_type(coap_lite::MessageType::Confirmable);
        p.header.message_id = mid;
        p
    };
    for round in 0..3u16 {
        let sock = tokio::net::UdpSocket::bind(local).await.unwrap();
        sock.connect(server).await.unwrap();
        let mut ch = m2m_transport::DatagramChannel::dtls_over(
            sock,
            &ctx,
            &m2m_transport::PeerCheck::PreSharedKey,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: the restarted client associates: {e}"));
        let r = exchange(&mut ch, &retrieve(100 + round)).await;
        // Not registered: access control answers, so the request went through the association.
        assert_eq!(
            coap_binding::decode_response(&r).unwrap().rsc.code(),
            4103,
            "round {round}"
        );
        // The device "restarts": its socket goes away without a close_notify.
        drop(ch);
    }
}

/// The port of the plain CoAP listener (`[coap] listen` on port 0), from its listening line.
fn plain_coap_port(cse: &CseProcess) -> u16 {
    poll(Duration::from_secs(5), || {
        cse.stdout().lines().find_map(|l| {
            l.trim()
                .strip_prefix("m2m-cse listening coap://")
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
        })
    })
    .expect("the coap:// listening line")
}

/// `coap-client` without DTLS: one request to a plain listener, the response libcoap printed.
fn coap_plain(
    port: u16,
    method: &str,
    path: &str,
    from: &str,
    ty: Option<u8>,
    body: Option<&Value>,
) -> Option<Answer> {
    let base = format!("coap://127.0.0.1:{port}");
    libcoap_request(
        Command::new("coap-client-openssl"),
        &base,
        method,
        path,
        from,
        ty,
        body,
    )
}

/// The plain CoAP listener (`[coap]`, anonymous by default) is a listener without association
/// like the plain HTTP one: a registration from `C` works, but a From there is a claim only:
/// not the admin (4106), and never an AE-ID bound to a credential (4106), however written.
#[test]
fn plain_coap_takes_a_from_as_a_claim_only() {
    if !have_libcoap() {
        return;
    }
    let cse = CseProcess::start_temp(&format!(
        "[coap]\nlisten = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\n\n{}",
        psk_row_toml(&LOCK1)
    ));
    let port = plain_coap_port(&cse);
    assert!(
        cse.logged("plain-CoAP listener without security associations"),
        "announced at start"
    );
    let r = coap_plain(
        port,
        "post",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("sensor")),
    )
    .expect("an answer");
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    for admin in ["CAdmin", "/id-in/CAdmin", "//m2m.example.com/id-in/CAdmin"] {
        let r = coap_plain(port, "get", "/cse-in", admin, None, None).expect("an answer");
        assert_eq!(
            (r.code.as_str(), r.rsc),
            ("4.03", Some(4106)),
            "{admin}: {r:?}"
        );
    }
    for lock in [
        "Clock-AE1",
        "/id-in/Clock-AE1",
        "//m2m.example.com/id-in/Clock-AE1",
    ] {
        let r = coap_plain(
            port,
            "post",
            "/cse-in",
            lock,
            Some(2),
            Some(&ae_body("squat")),
        )
        .expect("an answer");
        assert_eq!(
            r.rsc,
            Some(4106),
            "registering as {lock} without its credential: {r:?}"
        );
    }
}

/// A subscription's associatedCrossResourceSub entry that is no notificationURI is refused over
/// CoAP as over HTTP (one check behind every binding): the CSE would send its deletion notice
/// where nobody verified that notifications may go. A plain listener that trusts its From
/// (`originators = "trusted"`) lets the AE reach the check as its own subscriber.
#[test]
fn associated_cross_resource_subs_are_checked_over_coap_too() {
    if !have_libcoap() {
        return;
    }
    let cse =
        CseProcess::start_temp("[coap]\nlisten = \"127.0.0.1:0\"\noriginators = \"trusted\"\n");
    let port = plain_coap_port(&cse);
    let r = coap_plain(
        port,
        "post",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("sensor")),
    )
    .expect("an answer");
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    let aei = r.body["m2m:ae"]["aei"]
        .as_str()
        .expect("the AE-ID")
        .to_owned();
    let rx = Receiver::start();
    let bystander = Receiver::start();
    for acrs in [bystander.url(), "/id-in/cse-in", "Cother"] {
        let sub = json!({ "m2m:sub": { "nu": [rx.url()], "acrs": [acrs] } });
        let r = coap_plain(port, "post", "/cse-in/sensor", &aei, Some(23), Some(&sub))
            .expect("an answer");
        assert_eq!(r.rsc, Some(4000), "{acrs}: {r:?}");
    }
    let sub = json!({ "m2m:sub": { "rn": "s", "nu": [rx.url(), bystander.url()], "acrs": [bystander.url()] } });
    let r =
        coap_plain(port, "post", "/cse-in/sensor", &aei, Some(23), Some(&sub)).expect("an answer");
    assert_eq!(
        r.rsc,
        Some(2001),
        "an entry that is a notificationURI: {r:?}"
    );
}

/// `m2m ae` as a lock over CoAP end to end: it associates over DTLS-PSK with `coaps://`,
/// registers with a `coap://` pointOfAccess, creates its state and subscribes to it; the CSE
/// verifies the subscription and notifies the new contentInstance over CoAP, and the AE prints
/// both as JSON lines. A NOTIFY the AE did not subscribe to is refused there.
#[test]
fn an_ae_hears_its_notifications_over_coap() {
    let cse = dtls_cse();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("lock1.kpsa");
    write_private(&key_file, LOCK1.key);
    let config = dir.path().join("lock1.toml");
    write_private(
        &config,
        &format!(
            "[ae]\nresource_name = \"lock1\"\napp_id = \"Ndoorlock\"\n\
             [cse]\nurl = \"coaps://127.0.0.1:{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             [security]\nmode = \"psk\"\nkpsa_id = \"{}\"\nkey_file = {:?}\n\
             [notifications]\nlisten = \"127.0.0.1:0\"\nbinding = \"coap\"\n\
             [[create]]\nty = 3\ncontent = {{ \"m2m:cnt\" = {{ rn = \"state\" }} }}\n\
             [[subscribe]]\nto = \"cse-in/lock1/state\"\nrn = \"self\"\n",
            cse.coaps_port(),
            LOCK1.kpsa_id,
            key_file.display().to_string()
        ),
    );
    let ae = AeProcess::start(&config);
    let ready = json!({ "ready": ae.ready(&cse) });
    let poa = ready["ready"]["poa"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(poa.starts_with("coap://127.0.0.1:"), "{ready}");
    assert_eq!(ready["ready"]["aei"], json!(LOCK1.ae), "{ready}");
    // The lock reports over its own association (m2m request over coaps).
    let report = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["request", "--ae"])
        .arg(&config)
        .args(["-X", "create", "--to", "cse-in/lock1/state", "--ty", "4"])
        .args(["--body", r#"{"m2m:cin":{"con":"UNLOCKED"}}"#])
        .output()
        .expect("m2m request");
    assert!(
        String::from_utf8_lossy(&report.stdout).starts_with("2001"),
        "{}{}",
        String::from_utf8_lossy(&report.stdout),
        String::from_utf8_lossy(&report.stderr)
    );
    let note = ae.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{note}"
    );
    // A NOTIFY for a subscription the AE never made, straight to its CoAP pointOfAccess.
    let port: u16 = poa.rsplit(':').next().unwrap().parse().unwrap();
    let forged = json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED" } }, "net": 3 }, "sur": "/id-in/sub-forged" } });
    let mut req = Request::new(Operation::Notify, "lock1", Some("/id-in".into()), rqi());
    req.pc = Some(forged);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rsp = rt
        .block_on(m2m_client::Client::new().send_to_url(&format!("coap://127.0.0.1:{port}/"), &req))
        .expect("the receiver answers");
    assert_eq!(rsp.rsc.code(), 4004, "{rsp:?}");
    assert_eq!(
        ae.silent_for(Duration::from_millis(500)),
        None,
        "nothing printed for it"
    );
}

/// Spoofed or abandoned ClientHellos cost the CSE nothing: each gets a HelloVerifyRequest smaller
/// than itself and no state (no session, no per-source handshake slot, no audit line), so a
/// flood from the lock's own address does not keep the lock from associating right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_less_hellos_get_a_small_answer_and_no_state() {
    let cse = dtls_cse();
    let server: std::net::SocketAddr = ([127, 0, 0, 1], cse.coaps_port()).into();
    // A real ClientHello, as OpenSSL's client sends it first (no cookie yet).
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let ctx = lock1_context();
    let grab = tokio::spawn(async move {
        let _ = m2m_transport::DatagramChannel::dtls(
            &ctx,
            sink_addr,
            &m2m_transport::PeerCheck::PreSharedKey,
            Duration::from_millis(500),
        )
        .await;
    });
    let mut hello = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut hello))
        .await
        .expect("a ClientHello")
        .unwrap();
    hello.truncate(n);
    grab.abort();
    assert!(m2m_transport::datagram::is_client_hello(&hello));
    // 64 sources on the lock's address (more than max_handshakes_per_source), none finishing.
    let mut sockets = Vec::new();
    for _ in 0..64 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&hello, server).await.unwrap();
        sockets.push(s);
    }
    for s in &sockets {
        let mut answer = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut answer))
            .await
            .expect("a HelloVerifyRequest")
            .unwrap();
        assert_eq!(answer[0], 22, "a handshake record");
        assert_eq!(answer[13], 3, "a HelloVerifyRequest");
        assert!(
            n < hello.len(),
            "smaller than the ClientHello: {n} >= {}",
            hello.len()
        );
    }
    // The lock associates at once, and works.
    let started = std::time::Instant::now();
    let mut ch = lock1_channel(cse.coaps_port()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut req = Request::new(Operation::Retrieve, "cse-in", Some(LOCK1.ae.into()), rqi());
    req.rvi = Some("3".into());
    let mut p = coap_binding::encode_request(&req).unwrap();
    p.header.set_type(coap_lite::MessageType::Confirmable);
    p.header.message_id = 9;
    let r = exchange(&mut ch, &p).await;
    assert_eq!(coap_binding::decode_response(&r).unwrap().rsc.code(), 4103);
    // Nothing was kept for the others: no handshake to time out, no audit line.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refused(&cse), 0, "{}", cse.stderr());
}

/// Whether a datagram carries a DTLS record of epoch 1 or later (encrypted: after
/// ChangeCipherSpec).
fn has_encrypted_record(mut d: &[u8]) -> bool {
    while d.len() >= 13 {
        let epoch = u16::from_be_bytes([d[3], d[4]]);
        let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
        if epoch >= 1 {
            return true;
        }
        d = d.get(13 + len..).unwrap_or(&[]);
    }
    false
}

/// The server's last flight (ChangeCipherSpec, Finished) is lost on the way: the client sends
/// its own again, and the CSE, whose side of the association is already without OpenSSL
/// (`dtls_record`), answers with the flight it kept (RFC 6347 clause 4.2.4). The request then
/// goes through as if nothing had happened.
#[test]
fn a_lost_server_finished_is_sent_again_after_the_take_over() {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let cse = dtls_cse();
    let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .connect(format!("127.0.0.1:{}", cse.coaps_port()))
        .unwrap();
    for s in [&proxy, &upstream] {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let (dropped, stop) = (Arc::clone(&dropped), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut client = None;
            let mut buf = [0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = proxy.recv_from(&mut buf) {
                    client = Some(from);
                    let _ = upstream.send(&buf[..n]);
                }
                if let Ok(n) = upstream.recv(&mut buf) {
                    // The first encrypted flight from the CSE is its ChangeCipherSpec + Finished.
                    if has_encrypted_record(&buf[..n]) && dropped.load(Ordering::Relaxed) == 0 {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(c) = client {
                        let _ = proxy.send_to(&buf[..n], c);
                    }
                }
            }
        })
    };
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["request", "--url", &format!("coaps://{proxy_addr}")])
        .args([
            "--psk-identity",
            LOCK1.kpsa_id,
            "--psk-key-env",
            "LOCK1_KPSA",
        ])
        .args(["--from", "C", "-X", "create", "--to", "cse-in", "--ty", "2"])
        .args(["--body", &ae_body("lock1").to_string()])
        .env("LOCK1_KPSA", LOCK1.key)
        .output()
        .expect("run m2m request");
    stop.store(true, Ordering::Relaxed);
    relay.join().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dropped.load(Ordering::Relaxed),
        1,
        "the Finished was dropped once"
    );
    assert!(
        printed.starts_with("2001"),
        "{printed}\n{}\nCSE:\n{}",
        String::from_utf8_lossy(&out.stderr),
        cse.stderr()
    );
    assert!(
        cse.stderr()
            .lines()
            .any(|l| l.contains("association established")
                && l.contains(LOCK1.kpsa_id)
                && l.contains("transport")),
        "{}",
        cse.stderr()
    );
}

/// CBOR over CoAP with libcoap (TS-0008 table 6.2.2.2-1): a CREATE in Content-Format 60 is
/// read, the answer asked for with Accept 60 comes in CBOR (10010); an unknown Content-Format
/// is 4.15 and an Accept this CSE cannot write 4.06.
#[test]
fn cbor_over_coap_with_libcoap() {
    if !have_libcoap() {
        return;
    }
    // A loopback listener the operator trusts: the From is taken as given (no DTLS here).
    let cse =
        CseProcess::start_temp("[coap]\nlisten = \"127.0.0.1:0\"\noriginators = \"trusted\"\n");
    let port = plain_coap_port(&cse);
    let r = coap_plain(
        port,
        "post",
        "/cse-in",
        "C",
        Some(2),
        Some(&ae_body("cbor")),
    )
    .expect("an answer");
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    let aei = r.body["m2m:ae"]["aei"].as_str().expect("aei").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("cnt.cbor");
    std::fs::write(
        &payload,
        m2m_core::serialization::Serialization::Cbor
            .encode(&json!({ "m2m:cnt": { "rn": "c", "mni": 3 } }))
            .unwrap(),
    )
    .unwrap();
    let base = format!("coap://127.0.0.1:{port}");
    let cbor_create = |accept: &str, cf: &str| {
        let mut cmd = Command::new("coap-client-openssl");
        cmd.args(["-v", "7", "-B", "3", "-m", "post"])
            .args(["-O", &format!("279,{aei}"), "-O", &format!("283,{}", rqi())])
            .args(["-O", "267,0x03", "-t", cf, "-A", accept])
            .arg("-f")
            .arg(&payload)
            .arg(format!("{base}/cse-in/cbor"));
        let (out, err) = run(cmd, b"", false);
        parse_libcoap(&String::from_utf8_lossy(&out), &err).expect("an answer")
    };
    let r = cbor_create("60", "60");
    assert_eq!((r.code.as_str(), r.rsc), ("2.01", Some(2001)), "{r:?}");
    assert_eq!(
        r.body["m2m:cnt"]["mni"],
        json!(3),
        "the answer decodes as CBOR: {r:?}"
    );
    let r = cbor_create("60", "41");
    assert_eq!(
        (r.code.as_str(), r.rsc),
        ("4.00", Some(4000)),
        "CBOR said to be XML: {r:?}"
    );
    // An XML answer (Accept 41): the name is taken now, and the reason comes in XML.
    let r = cbor_create("41", "60");
    assert_eq!(r.rsc, Some(4105), "{r:?}");
    assert!(r.body.get("m2m:dbg").is_some(), "an XML m2m:dbg: {r:?}");
    let r = cbor_create("60", "50");
    assert_eq!(r.rsc, Some(4000), "CBOR said to be JSON: {r:?}");
}

/// An AE-ID stays with the credential it registered with over CoAP/DTLS too (docs/SECURITY.md
/// "An AE-ID stays with its credential"): a meter registers `Cmeter` over its own PSK (a row
/// bound to nobody, libcoap on OpenSSL) and deregisters; another valid credential (libcoap on
/// GnuTLS) registering that AE-ID gets 4106 in every form of the ID; the meter registers again.
#[test]
fn an_ae_id_stays_with_the_credential_it_registered_with_over_dtls() {
    if !have_libcoap() {
        return;
    }
    const METER: Row = Row {
        ae: "",
        kpsa_id: "meter@in.provider.com",
        key: "1122334455667788aabbccddeeff0102",
    };
    const THIEF: Row = Row {
        ae: "",
        kpsa_id: "thief@in.provider.com",
        key: "a1a2a3a4a5a6a7a8b1b2b3b4b5b6b7b8",
    };
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\n\n{}\n{}\n\
         [[registration.rules]]\napci = [\"12-*@in.provider.com\"]\naai = [\"*\"]\naae = [\"C*\"]\n",
        psk_row_toml(&METER),
        psk_row_toml(&THIEF)
    ));
    let port = cse.coaps_port();
    let send = |tls: &str,
                row: &Row,
                method: &str,
                path: &str,
                from: &str,
                ty: Option<u8>,
                body: Option<&Value>| {
        coap_client(
            tls,
            port,
            row.kpsa_id,
            row.key,
            method,
            path,
            from,
            ty,
            body,
        )
        .unwrap_or_else(|| panic!("{tls}: no response printed by libcoap"))
    };
    let r = send(
        "openssl",
        &METER,
        "post",
        "/cse-in",
        "Cmeter",
        Some(2),
        Some(&ae_body("meter")),
    );
    assert_eq!(r.rsc, Some(2001), "{r:?}");
    let r = send(
        "openssl",
        &METER,
        "delete",
        "/cse-in/meter",
        "Cmeter",
        None,
        None,
    );
    assert_eq!(r.rsc, Some(2002), "{r:?}");
    for from in ["Cmeter", "/id-in/Cmeter", "//m2m.example.com/id-in/Cmeter"] {
        let r = send(
            "gnutls",
            &THIEF,
            "post",
            "/cse-in",
            from,
            Some(2),
            Some(&ae_body("meter")),
        );
        assert_eq!(r.rsc, Some(4106), "another credential as {from}: {r:?}");
    }
    assert!(
        cse.logged("registered before with credential 12-meter@in.provider.com"),
        "{}",
        cse.stderr()
    );
    let r = send(
        "openssl",
        &METER,
        "post",
        "/cse-in",
        "Cmeter",
        Some(2),
        Some(&ae_body("meter")),
    );
    assert_eq!(r.rsc, Some(2001), "its own credential again: {r:?}");
}
