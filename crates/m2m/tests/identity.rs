//! Issue 11's identity holes at the process level, against real peers and real sockets: a TLS 1.3
//! client offering a PSK identity without its key (openssl s_client), a claimed originator on an
//! IN-CSE's plain listener aimed at its MN-CSE (two CSE processes), a CSE registering under a CSE-ID
//! its certificate does not name, and the connection limits (cap, header-read and idle timeouts).
//! The in-process attack tables are in crates/m2m-cse/tests/identity_attacks.rs.

mod common;

use common::{have_tool, poll, retrieve, CseProcess, Pki, WAIT};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOCK_ID: &str = "AE123456789012-Lock@in.provider.com";
const LOCK_KEY: &str = "1a2b3c4d5e6f7a8b";

/// An IN-CSE with TLS 1.3 allowed, certificates and the lock's PSK row.
fn tls13_cse(pki: &Pki) -> CseProcess {
    CseProcess::start_temp(&format!(
        "{}tls13 = true\n[[security.psk]]\nentity = \"Clock-AE1\"\nkpsa_id = \"{LOCK_ID}\"\nkey = \"{LOCK_KEY}\"\n",
        common::in_tls_config(pki)
    ))
}

/// `openssl s_client` ARGS against `port`, sending one oneM2M RETRIEVE of the CSEBase as `from`;
/// its stdout (the HTTP answer, if the handshake let it through) and whether it succeeded.
fn s_client(port: u16, args: &[&str], from: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
            "-ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let request = format!(
        "GET /cse-in HTTP/1.1\r\nHost: x\r\nX-M2M-Origin: {from}\r\nX-M2M-RI: 1\r\nX-M2M-RVI: 3\r\nConnection: close\r\n\r\n"
    );
    let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `X-M2M-RSC` of an HTTP answer, if there is one.
fn rsc_of(answer: &str) -> Option<u16> {
    answer.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-m2m-rsc")
            .then(|| value.trim().parse().ok())?
    })
}

/// TLS 1.3 with a PSK identity and a wrong key (or no usable PSK at all: a SHA-384 suite): the
/// association must never be bound to the row's entity, with or without a client certificate of
/// the trusted CA. The lock itself, over TLS 1.3 with its key, is bound to it.
#[test]
fn a_tls13_client_without_the_key_is_never_the_lock() {
    if !have_tool("openssl", "version", "TLS 1.3 PSK attacks with s_client") {
        return;
    }
    let pki = Pki::temp();
    let (cert, key) = pki.issue(&["--kind", "ae", "--id", "/Sattacker"], "attacker");
    let cse = tls13_cse(&pki);
    let port = cse.https_port();
    let cert = cert.to_str().unwrap().to_owned();
    let key = key.to_str().unwrap().to_owned();
    let with_cert = ["-cert", cert.as_str(), "-key", key.as_str()];
    let attacks: [(&str, Vec<&str>); 4] = [
        (
            "SHA-384 suite, no key",
            vec![
                "-tls1_3",
                "-ciphersuites",
                "TLS_AES_256_GCM_SHA384",
                "-psk",
                "00",
                "-psk_identity",
                LOCK_ID,
            ],
        ),
        (
            "SHA-256 suite, wrong key",
            vec![
                "-tls1_3",
                "-ciphersuites",
                "TLS_AES_128_GCM_SHA256",
                "-psk",
                "00",
                "-psk_identity",
                LOCK_ID,
            ],
        ),
        (
            "SHA-384 suite, no key, a client certificate of the CA",
            [
                vec![
                    "-tls1_3",
                    "-ciphersuites",
                    "TLS_AES_256_GCM_SHA384",
                    "-psk",
                    "00",
                    "-psk_identity",
                    LOCK_ID,
                ],
                with_cert.to_vec(),
            ]
            .concat(),
        ),
        (
            "SHA-256 suite, wrong key, a client certificate of the CA",
            [
                vec![
                    "-tls1_3",
                    "-ciphersuites",
                    "TLS_AES_128_GCM_SHA256",
                    "-psk",
                    "00",
                    "-psk_identity",
                    LOCK_ID,
                ],
                with_cert.to_vec(),
            ]
            .concat(),
        ),
    ];
    for (what, args) in &attacks {
        let (_, answer) = s_client(port, args, "Clock-AE1");
        // Either no association at all, or one that is not the lock's: as Clock-AE1 it is 4106.
        match rsc_of(&answer) {
            None => {}
            Some(rsc) => assert_eq!(rsc, 4106, "{what}: answered as the lock:\n{answer}"),
        }
    }
    let log = cse.stderr();
    assert!(
        !log.contains("provisioned-key 12-AE123456789012-Lock"),
        "an attack was bound to the lock's row:\n{log}"
    );
    // SHA-384 only: no suite in common (the CSE offers TLS 1.3 only with the PSK's hash); a wrong
    // key: the binder fails.
    assert!(log.contains("no shared cipher"), "{log}");
    assert!(log.contains("binder does not verify"), "{log}");
    // A TLS 1.3 client certificate of the CA is its own identity, nobody else's.
    let (_, answer) = s_client(
        port,
        &[
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"][..],
            &with_cert[..],
        ]
        .concat(),
        "Clock-AE1",
    );
    assert_eq!(rsc_of(&answer), Some(4106), "{answer}");
    assert!(
        cse.stderr()
            .contains("certificate 33-Sattacker.m2m.example.com -> //m2m.example.com/Sattacker"),
        "{}",
        cse.stderr()
    );
    // Control: the lock over TLS 1.3 with its key (a SHA-256 suite) is the lock. It is not
    // registered, so the CSEBase is not for it (4103), but it is not refused as someone else.
    let (_, answer) = s_client(
        port,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256",
            "-psk",
            LOCK_KEY,
            "-psk_identity",
            LOCK_ID,
        ],
        "Clock-AE1",
    );
    assert_eq!(rsc_of(&answer), Some(4103), "{answer}\n{}", cse.stderr());
    assert!(
        poll(WAIT, || cse
            .stderr()
            .contains("provisioned-key 12-AE123456789012-Lock@in.provider.com -> //m2m.example.com/id-in/Clock-AE1")
            .then_some(()))
        .is_some(),
        "{}",
        cse.stderr()
    );
}

/// A request whose From an IN-CSE's plain (anonymous) listener cannot prove is not carried to the
/// MN-CSE, in any form of an AE registered at the IN; over the AE's own association it is.
#[test]
fn a_claimed_originator_is_not_retargeted() {
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&format!(
        "{}[http]\noriginators = \"anonymous\"\n[[security.psk]]\nentity = \"Cclaimed\"\nkpsa_id = \"claimed@in.example.com\"\nkey = \"00112233445566778899aabbccddeeff\"\n",
        common::in_tls_config(&pki)
    ));
    let mn = CseProcess::start_temp(&common::mn_config(in_cse.https_url(), &pki));
    // The IN's plain listener serves no admin: the MN's own record of its registrar tells.
    let registered = poll(WAIT, || {
        (retrieve(mn.url(), "/cse-mn/id-in", "CAdmin").0 == 2000).then_some(())
    });
    assert!(
        registered.is_some(),
        "IN:\n{}\nMN:\n{}",
        in_cse.stderr(),
        mn.stderr()
    );
    // The AE registers at the IN over its PSK association.
    let ae = common::TlsClient::psk("claimed@in.example.com", "00112233445566778899aabbccddeeff");
    let r = ae
        .request(
            in_cse.https_url(),
            "POST",
            "/cse-in",
            Some("Cclaimed"),
            Some(2),
            Some(&serde_json::json!({"m2m:ae": {"rn": "claimed", "api": "Nx", "rr": false, "srv": ["3"]}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    for from in [
        "Cclaimed",
        "/id-in/Cclaimed",
        "//m2m.example.com/id-in/Cclaimed",
    ] {
        let (rsc, body) = retrieve(in_cse.url(), "/~/id-mn/cse-mn", from);
        assert_eq!(rsc, 4106, "{from}: {body}");
    }
    assert!(!mn.stderr().contains("Cclaimed"), "{}", mn.stderr());
    // Over its association the same request reaches the MN (which decides: its CSEBase is for
    // its registrees, 4103 there, not 4106 at the IN).
    let r = ae
        .request(
            in_cse.https_url(),
            "GET",
            "/~/id-mn/cse-mn",
            Some("Cclaimed"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 4103, "{:?}", r.body);
    assert!(mn.logged("access denied"), "{}", mn.stderr());
}

/// A CSE whose certificate names /id-mn registers as /id-mn2: the IN refuses, whatever the MN
/// claims; no <remoteCSE> appears for either.
#[test]
fn a_cse_registers_only_under_its_own_cse_id() {
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&common::in_tls_config(&pki));
    let config = common::mn_config(in_cse.https_url(), &pki)
        .replace("cse_id = \"/id-mn\"", "cse_id = \"/id-mn2\"")
        .replace("resource_name = \"cse-mn\"", "resource_name = \"cse-mn2\"");
    let mn = CseProcess::start_temp(&config);
    assert!(
        poll(WAIT, || in_cse
            .stderr()
            .contains("remoteCSE registration refused")
            .then_some(()))
        .is_some()
            || poll(WAIT, || in_cse.logged("originator refused").then_some(())).is_some(),
        "IN:\n{}\nMN:\n{}",
        in_cse.stderr(),
        mn.stderr()
    );
    for csr in ["/cse-in/id-mn2", "/cse-in/id-mn"] {
        let (rsc, _) = retrieve(in_cse.url(), csr, "CAdmin");
        assert_eq!(rsc, 4004, "{csr} registered");
    }
}

/// Reads until the server closes the connection; how long that took (`None`: still open).
fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

/// A slow client sending a request head that never ends is closed at the header-read timeout;
/// a silent connection at the idle timeout; connections beyond the cap at once; and the CSE
/// answers new requests throughout or as soon as the limits free a place.
#[test]
fn connections_are_bounded_in_number_and_time() {
    let cse = CseProcess::start_temp(
        "[limits]\nmax_connections = 20\nheader_read_timeout_ms = 500\nidle_timeout_ms = 1500\n",
    );
    let addr = cse.url().strip_prefix("http://").unwrap().to_owned();
    // Slowloris: a head that never ends, one byte now and then.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /cse-in HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let closed = closed_within(slow.try_clone().unwrap(), Duration::from_secs(5))
        .expect("a head that never ends is closed");
    assert!(
        closed < Duration::from_millis(1400),
        "closed after {closed:?}, not at the header-read timeout"
    );
    // Idle: nothing sent, closed at the idle timeout (not the header one).
    let idle = TcpStream::connect(&addr).unwrap();
    let closed = closed_within(idle, Duration::from_secs(5)).expect("an idle connection is closed");
    assert!(
        closed >= Duration::from_millis(1200),
        "closed after {closed:?}"
    );
    drop(cse);
    // The cap, on a CSE whose idle timeout (60 s) cannot free a place while the test looks: 20
    // held, the next ones closed without an answer to the request they send.
    let cse = CseProcess::start_temp("[limits]\nmax_connections = 20\nidle_timeout_ms = 60000\n");
    let addr = cse.url().strip_prefix("http://").unwrap().to_owned();
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let mut extra = TcpStream::connect(&addr).unwrap();
        let _ = extra.write_all(&common::http_request(
            "GET",
            "x",
            "/cse-in",
            Some("CAdmin"),
            None,
            None,
        ));
        extra
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = Vec::new();
        let read = extra.read_to_end(&mut answer);
        assert!(
            read.is_ok() || answer.is_empty(),
            "over the cap: closed, not left open ({read:?})"
        );
        assert!(
            answer.is_empty(),
            "over the cap: not served: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(cse.logged("connection cap"), "{}", cse.stderr());
    // Once the held connections are gone, the CSE answers again.
    drop(held);
    let answers = || {
        common::try_request("GET", cse.url(), "/cse-in", Some("CAdmin"), None, None)
            .is_ok_and(|r| r.rsc == 2000)
            .then_some(())
    };
    assert!(poll(WAIT, answers).is_some(), "{}", cse.stderr());
    // 200 silent connections beyond the cap never stop it for good: they time out.
    drop(cse);
    let cse = CseProcess::start_temp(
        "[limits]\nmax_connections = 20\nheader_read_timeout_ms = 500\nidle_timeout_ms = 1500\n",
    );
    let addr = cse.url().strip_prefix("http://").unwrap().to_owned();
    let answers = || {
        common::try_request("GET", cse.url(), "/cse-in", Some("CAdmin"), None, None)
            .is_ok_and(|r| r.rsc == 2000)
            .then_some(())
    };
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    let ok = poll(Duration::from_secs(10), answers);
    assert!(
        ok.is_some(),
        "the CSE did not recover from the flood:\n{}",
        cse.stderr()
    );
    drop(flood);
}

/// An MN-CSE reaching its registrar by IP address, with no `server_name`, still checks that the
/// server is its registrar: a server presenting another CSE's certificate of the same CA (here the
/// "IN" holds the certificate of /id-mn2) is refused, and nothing registers.
#[test]
fn an_mn_checks_who_its_registrar_is_even_by_ip_address() {
    let pki = Pki::temp();
    let (pem, key) = pki.issue(&["--kind", "cse", "--id", "/id-mn2"], "id-mn2");
    let impostor = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\n",
        pem.display().to_string(),
        key.display().to_string(),
        pki.ca_pem().display().to_string()
    ));
    // The MN's registrar section without server_name: the name to check comes from the CSE-ID.
    let config = common::mn_config(impostor.https_url(), &pki).replace(
        &format!("server_name = \"{}\"\n", common::IN_SERVER_NAME),
        "",
    );
    assert!(!config.contains("server_name"), "{config}");
    let mn = CseProcess::start_temp(&config);
    let refused = poll(WAIT, || {
        mn.stderr().contains("registration failed").then_some(())
    });
    assert!(refused.is_some(), "{}", mn.stderr());
    assert!(
        mn.stderr().contains("TLS handshake failed") || mn.stderr().contains("certificate"),
        "{}",
        mn.stderr()
    );
    let (rsc, _) = retrieve(impostor.url(), "/cse-in/id-mn", "CAdmin");
    assert_eq!(rsc, 4004, "the MN registered with an impostor");
}

/// What a From on an anonymous listener cannot do with a registered AE's ID or the admin's: make
/// a subscription as that AE (it would be shown what the AE may read, or flood the AE's
/// pointOfAccess unasked when it names the AE as its target), or register the admin's AE-ID
/// (and so receive what is addressed to the admin), in any form of the ID.
#[test]
fn a_claim_neither_subscribes_nor_registers_the_admin() {
    let pki = Pki::temp();
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let cse = CseProcess::start_temp(&format!(
        "{}[http]\noriginators = \"anonymous\"\n\
         [[security.psk]]\nentity = \"Cvictim\"\nkpsa_id = \"victim@in.example.com\"\nkey = \"{KEY}\"\n\
         [[security.psk]]\nentity = \"Cowner\"\nkpsa_id = \"owner@in.example.com\"\nkey = \"{KEY}\"\n",
        common::in_tls_config(&pki)
    ));
    let victim_rx = common::Receiver::start();
    let victim = common::TlsClient::psk("victim@in.example.com", KEY);
    let owner = common::TlsClient::psk("owner@in.example.com", KEY);
    let register = |client: &common::TlsClient, from: &str, rn: &str, poa: &[&str]| {
        let body = serde_json::json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": true, "srv": ["3"], "poa": poa}});
        let r = client
            .request(
                cse.https_url(),
                "POST",
                "/cse-in",
                Some(from),
                Some(2),
                Some(&body),
            )
            .unwrap();
        assert_eq!(r.rsc, 2001, "{:?}", r.body);
    };
    register(&victim, "Cvictim", "victim", &[victim_rx.url()]);
    register(&owner, "Cowner", "owner", &[]);
    // The owner's container: anyone may subscribe to it.
    let owner_do = |method: &str, to: &str, ty: Option<u16>, body: serde_json::Value| {
        let r = owner
            .request(cse.https_url(), method, to, Some("Cowner"), ty, Some(&body))
            .unwrap();
        assert!(r.rsc < 3000, "{method} {to}: {:?}", r.body);
    };
    owner_do(
        "POST",
        "/cse-in/owner",
        Some(1),
        serde_json::json!({"m2m:acp": {"rn": "open", "pv": {"acr": [
            {"acor": ["Cowner"], "acop": 63}, {"acor": ["all"], "acop": 3}
        ]}, "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}}),
    );
    owner_do(
        "POST",
        "/cse-in/owner",
        Some(3),
        serde_json::json!({"m2m:cnt": {"rn": "c", "acpi": ["cse-in/owner/open"]}}),
    );
    for form in [
        "Cvictim",
        "/id-in/Cvictim",
        "//m2m.example.com/id-in/Cvictim",
    ] {
        let attacker_rx = common::Receiver::start();
        for nu in [form, "cse-in/victim", attacker_rx.url()] {
            let (rsc, b) = common::create(
                cse.url(),
                "/cse-in/owner/c",
                form,
                23,
                serde_json::json!({"m2m:sub": {"nu": [nu]}}),
            );
            assert_eq!(rsc, 4103, "{form} names {nu}: {b}");
        }
        assert_eq!(attacker_rx.all().len(), 0);
    }
    assert_eq!(victim_rx.all().len(), 0, "the victim was never contacted");
    // Over its own association the victim subscribes (its own target is not asked).
    let r = victim
        .request(
            cse.https_url(),
            "POST",
            "/cse-in/owner/c",
            Some("Cvictim"),
            Some(23),
            Some(&serde_json::json!({"m2m:sub": {"nu": ["Cvictim"]}})),
        )
        .unwrap();
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    assert_eq!(victim_rx.all().len(), 0, "no verification of itself");
    // The admin's AE-ID is nobody's to register on this listener.
    for from in ["CAdmin", "/id-in/CAdmin", "//m2m.example.com/id-in/CAdmin"] {
        let (rsc, b) = common::create(
            cse.url(),
            "/cse-in",
            from,
            2,
            serde_json::json!({"m2m:ae": {"rn": "admin", "api": "Nx", "rr": true, "srv": ["3"], "poa": [victim_rx.url()]}}),
        );
        assert_eq!(rsc, 4106, "{from}: {b}");
    }
    let (rsc, _) = common::retrieve(cse.url(), "/cse-in/admin", "CAdmin");
    assert_ne!(rsc, 2000);
    assert!(
        cse.logged("(the administrator) registering"),
        "{}",
        cse.stderr()
    );
}

/// Requests travel along the registration tree: an AE registered at a CSE two levels below the
/// IN-CSE reaches a resource there through both CSEs, vouched for at each hop (the IN's policy
/// names it by its SP-relative AE-ID), though the IN knows nothing of the CSE it is registered
/// at; another AE of that CSE is decided by the IN's policy like any other (4103).
#[test]
fn an_originator_two_cses_down_is_relayed_to_the_in_cse() {
    use common::{acr, create_acp, create_cnt, register_ae};
    let (in_cse, mn, mn2, _pki) = common::start_three_tiers();
    let valve = register_ae(mn2.url(), "/cse-mn2", "Cvalve", "valve", &[]);
    let owner = register_ae(in_cse.url(), "/cse-in", "Cowner", "owner", &[]);
    let acp = create_acp(
        in_cse.url(),
        "/cse-in/owner",
        &owner,
        "acp",
        vec![acr(&[&owner], 63), acr(&["/id-mn2/Cvalve"], 2)],
        vec![acr(&[&owner], 63)],
    );
    create_cnt(
        in_cse.url(),
        "/cse-in/owner",
        &owner,
        serde_json::json!({ "rn": "c", "acpi": [acp] }),
    );
    let (rsc, body) = retrieve(mn2.url(), "/~/id-in/cse-in/owner/c", &valve);
    assert_eq!(rsc, 2000, "{body}\nIN:\n{}", in_cse.stderr());
    // Another AE of the second MN is not in the policy: the IN decides, 4103.
    let other = register_ae(mn2.url(), "/cse-mn2", "Cother", "other", &[]);
    let (rsc, body) = retrieve(mn2.url(), "/~/id-in/cse-in/owner/c", &other);
    assert_eq!(rsc, 4103, "{body}");
    // The IN knows the second MN as the first one's descendant (its dcse, kept up to date by
    // the MN); when it deregisters, the IN no longer takes the MN's word for its AEs.
    let (_, csr) = retrieve(in_cse.url(), "/cse-in/id-mn", "CAdmin");
    assert_eq!(
        csr["m2m:csr"]["dcse"],
        serde_json::json!(["/id-mn2"]),
        "{csr}"
    );
    assert_eq!(common::delete(mn.url(), "/cse-mn/id-mn2", "CAdmin").0, 2002);
    let forgotten = poll(WAIT, || {
        let (_, csr) = retrieve(in_cse.url(), "/cse-in/id-mn", "CAdmin");
        (csr["m2m:csr"]["dcse"] == serde_json::json!([])).then_some(())
    });
    assert!(forgotten.is_some(), "MN:\n{}", mn.stderr());
}

/// An AE-ID registered over a credential that names no entity stays with that credential once
/// the AE has expired, and across a restart of the CSE (the store on disk keeps it): another
/// credential, or the plain listener, registering it gets 4106 in every form of the ID; its own
/// credential registers it again. Once gone again, the operator frees it (`m2m store
/// release-ae-id`, CSE stopped) and another credential registers it.
#[test]
fn an_expired_ae_id_stays_with_its_credential_across_a_restart() {
    let pki = Pki::temp();
    const KEY: &str = "00112233445566778899aabbccddeeff";
    let cse = CseProcess::start_temp(&format!(
        "{}[http]\noriginators = \"anonymous\"\n\
         [[registration.rules]]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
         [[registration.rules]]\napci = [\"12-*\"]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
         [[security.psk]]\nkpsa_id = \"meter@in.example.com\"\nkey = \"{KEY}\"\n\
         [[security.psk]]\nkpsa_id = \"thief@in.example.com\"\nkey = \"{KEY}\"\n",
        common::in_tls_config(&pki)
    ));
    let meter = common::TlsClient::psk("meter@in.example.com", KEY);
    let thief = common::TlsClient::psk("thief@in.example.com", KEY);
    let ae = |et: Option<String>| {
        let mut body = serde_json::json!({"m2m:ae": {"rn": "meter", "api": "Nmeter", "rr": false, "srv": ["3"]}});
        if let Some(et) = et {
            body["m2m:ae"]["et"] = serde_json::json!(et);
        }
        body
    };
    let expires = m2m_core::time::format(chrono::Utc::now() + chrono::Duration::seconds(2));
    let r = meter
        .request(
            cse.https_url(),
            "POST",
            "/cse-in",
            Some("Cmeter"),
            Some(2),
            Some(&ae(Some(expires))),
        )
        .unwrap();
    assert_eq!(r.rsc, 2001, "{:?}", r.body);
    let gone = poll(WAIT, || {
        let r = meter
            .request(
                cse.https_url(),
                "GET",
                "/cse-in/meter",
                Some("Cmeter"),
                None,
                None,
            )
            .ok()?;
        (r.rsc != 2000).then_some(())
    });
    assert!(gone.is_some(), "the AE expired");
    // A registration without an expiration time, over `client`'s association.
    let register = |client: &common::TlsClient, cse: &CseProcess, from: &str| {
        client
            .request(
                cse.https_url(),
                "POST",
                "/cse-in",
                Some(from),
                Some(2),
                Some(&ae(None)),
            )
            .unwrap()
    };
    let attempts = |cse: &CseProcess| {
        for from in ["Cmeter", "/id-in/Cmeter", "//m2m.example.com/id-in/Cmeter"] {
            let r = register(&thief, cse, from);
            assert_eq!(r.rsc, 4106, "another credential as {from}: {:?}", r.body);
            let (rsc, b) = common::create(cse.url(), "/cse-in", from, 2, ae(None));
            assert_eq!(rsc, 4106, "the plain listener as {from}: {b}");
        }
    };
    attempts(&cse);
    let cse = cse.restart();
    attempts(&cse);
    let r = register(&meter, &cse, "Cmeter");
    assert_eq!(r.rsc, 2001, "its own credential: {:?}", r.body);
    assert!(
        cse.logged("registered before with credential 12-meter@in.example.com"),
        "the audit log says why: {}",
        cse.stderr()
    );
    let r = meter
        .request(
            cse.https_url(),
            "DELETE",
            "/cse-in/meter",
            Some("Cmeter"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.rsc, 2002, "{:?}", r.body);
    let mut cse = cse;
    cse.kill9();
    let release = |id: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["store", "release-ae-id", "--config"])
            .arg(cse.config_path())
            .arg(id)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(release("/id-in/Cmeter").contains("released"));
    assert!(release("Cmeter").contains("held by no credential"));
    // The release is in the CSE's audit trail, whose chain still verifies.
    let trail = cse.data_dir().join("audit.log");
    let text = std::fs::read_to_string(&trail).unwrap();
    assert!(text.contains("AE-ID released by the operator"), "{text}");
    let verified = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["audit", "verify", "--file"])
        .arg(&trail)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let cse = cse.restart();
    let r = register(&thief, &cse, "Cmeter");
    assert_eq!(r.rsc, 2001, "released, another credential: {:?}", r.body);
}
