//! Notifications to `coaps://` points of access (TS-0008 binding over DTLS 1.2, TS-0003 clause
//! 10.2.1): the CSE opens the DTLS association towards the AE with the AE's own security
//! association run the other way, the AE's PSK row (mode psk) or certificates (mode
//! certificate), and `m2m ae` accepts a handshake only from its CSE.
//!
//! What a user sees: a lock that speaks only DTLS-PSK hears its notifications; nobody without
//! the lock's key (another lock, a wrong key, plain CoAP) can deliver one to it; a lock that gives
//! another lock's receiver as its pointOfAccess cannot make the CSE deliver its notifications
//! there; with certificates, only a client certificate naming the CSE gets through, and the CSE
//! delivers only to the AE its AE-ID certificate names (another AE announcing the phone's
//! receiver gets nothing delivered there).

mod common;

use common::*;
use m2m_core::{Operation, Request};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn port_of(poa: &str) -> u16 {
    poa.rsplit(':').next().unwrap().parse().unwrap()
}

/// A lock's configuration: DTLS-PSK with its row, a coaps receiver (announcing `poa` when
/// given), its state container and a subscription to it.
fn lock_config(
    dir: &Path,
    row: &Row,
    rn: &str,
    coaps_port: u16,
    poa: Option<&str>,
) -> std::path::PathBuf {
    let key_file = dir.join(format!("{rn}.kpsa"));
    write_private(&key_file, row.key);
    let config = dir.join(format!("{rn}.toml"));
    let poa = poa.map(|p| format!("poa = \"{p}\"\n")).unwrap_or_default();
    write_private(
        &config,
        &format!(
            "[ae]\nresource_name = \"{rn}\"\napp_id = \"Ndoorlock\"\nstate_file = \"{rn}.state.json\"\n\
             [cse]\nurl = \"coaps://127.0.0.1:{coaps_port}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
             [security]\nmode = \"psk\"\nkpsa_id = \"{}\"\nkey_file = {:?}\n\
             [notifications]\nlisten = \"127.0.0.1:0\"\nbinding = \"coaps\"\n{poa}\
             [[create]]\nty = 3\ncontent = {{ \"m2m:cnt\" = {{ rn = \"state\" }} }}\n\
             [[subscribe]]\nto = \"cse-in/{rn}/state\"\nrn = \"self\"\n",
            row.kpsa_id,
            key_file.display().to_string()
        ),
    );
    config
}

/// `m2m request --ae CONFIG` creating a contentInstance `con` in `state`.
fn report(config: &Path, rn: &str, con: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["request", "--ae"])
        .arg(config)
        .args([
            "-X",
            "create",
            "--to",
            &format!("cse-in/{rn}/state"),
            "--ty",
            "4",
        ])
        .args(["--body", &json!({ "m2m:cin": { "con": con } }).to_string()])
        .output()
        .expect("m2m request");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("2001"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `sur` of the AE's subscription `self` on its state (read back with `m2m request`).
fn subscription_sur(config: &Path, rn: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["request", "--ae"])
        .arg(config)
        .args(["--to", &format!("cse-in/{rn}/state/self")])
        .output()
        .expect("m2m request");
    let text = String::from_utf8_lossy(&out.stdout);
    let body: Value = text
        .split_once('\n')
        .and_then(|(_, b)| serde_json::from_str(b.trim()).ok())
        .unwrap_or_else(|| {
            panic!(
                "the subscription: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    format!("/id-in/{}", body["m2m:sub"]["ri"].as_str().expect("ri"))
}

fn psk_context(identity: &str, key_hex: &str) -> openssl::ssl::SslContext {
    m2m_security::tls::dtls_client_context(&m2m_security::tls::ClientTlsConfig {
        cipher_suites: m2m_security::tls::PSK_SUITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        psk: Some((
            identity.into(),
            zeroize::Zeroizing::new(hex::decode(key_hex).unwrap()),
        )),
        ..Default::default()
    })
    .unwrap()
}

/// A forged NOTIFY for the AE's own subscription `sur`, sent over a DTLS association opened with
/// `context`; the AE's answer, if the association was accepted at all.
fn forge_notify(
    context: &openssl::ssl::SslContext,
    check: m2m_transport::PeerCheck,
    port: u16,
    sur: &str,
) -> Option<u16> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut ch = m2m_transport::DatagramChannel::dtls(
            context,
            ([127, 0, 0, 1], port).into(),
            &check,
            Duration::from_secs(3),
        )
        .await
        .ok()?;
        let mut req = Request::new(Operation::Notify, "lock", Some("/id-in".into()), rqi());
        req.pc = Some(json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED-forged" } }, "net": 3 }, "sur": sur } }));
        let mut packet = m2m_core::coap_binding::encode_request(&req).ok()?;
        packet.header.message_id = 0x4242;
        ch.send(&packet.to_bytes().ok()?).await.ok()?;
        let d = ch.recv(Duration::from_secs(3)).await.ok()??;
        let p = coap_lite::Packet::from_bytes(&d).ok()?;
        m2m_core::coap_binding::decode_response(&p)
            .ok()
            .map(|r| r.rsc.code())
    })
}

/// Lock 1 speaks only DTLS-PSK: it hears its notification over coaps. A forged NOTIFY gets in
/// with no key but the lock's (lock 2's key, a wrong key for lock 1's identity, plain CoAP). Lock
/// 2, announcing lock 1's receiver as its own pointOfAccess, cannot make the CSE deliver there.
#[test]
fn a_lock_hears_its_notifications_over_dtls_psk_and_nobody_else_gets_in() {
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n\n{}\n{}",
        psk_row_toml(&LOCK1),
        psk_row_toml(&LOCK2)
    ));
    let dir = tempfile::tempdir().unwrap();
    let config1 = lock_config(dir.path(), &LOCK1, "lock1", cse.coaps_port(), None);
    let lock1 = AeProcess::start(&config1);
    let ready = lock1.ready(&cse);
    let poa = ready["poa"].as_str().unwrap_or_default().to_owned();
    assert!(poa.starts_with("coaps://127.0.0.1:"), "{ready}");
    assert_eq!(ready["aei"], json!(LOCK1.ae), "{ready}");
    let sur = subscription_sur(&config1, "lock1");

    report(&config1, "lock1", "UNLOCKED");
    let note = lock1.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED"),
        "{note}"
    );

    // Forged NOTIFYs for lock 1's own subscription.
    let port = port_of(&poa);
    let psk = m2m_transport::PeerCheck::PreSharedKey;
    let with_lock2 = forge_notify(
        &psk_context(LOCK2.kpsa_id, LOCK2.key),
        psk.clone(),
        port,
        &sur,
    );
    assert_eq!(with_lock2, None, "lock 2's key opens nothing at lock 1");
    let wrong_key = forge_notify(
        &psk_context(LOCK1.kpsa_id, "00112233445566778899aabbccddeeff"),
        psk.clone(),
        port,
        &sur,
    );
    assert_eq!(wrong_key, None, "a wrong key for lock 1's identity");
    let mut req = Request::new(Operation::Notify, "lock1", Some("/id-in".into()), rqi());
    req.pc = Some(
        json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "x" } }, "net": 3 }, "sur": sur } }),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain = rt.block_on(
        m2m_client::Client::new()
            .with_timeout(Duration::from_secs(3))
            .send_to_url(&format!("coap://127.0.0.1:{port}/"), &req),
    );
    assert!(
        plain.is_err(),
        "plain CoAP to the coaps receiver: {plain:?}"
    );
    // The control: the lock's own key (what its CSE holds) does get an answer.
    let with_key = forge_notify(&psk_context(LOCK1.kpsa_id, LOCK1.key), psk, port, &sur);
    assert_eq!(
        with_key,
        Some(2000),
        "the lock's own key is the CSE's proof"
    );
    let note = lock1.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("UNLOCKED-forged")
    );

    // Lock 2 announces lock 1's receiver: the CSE opens it with lock 2's key, which lock 1 refuses.
    let config2 = lock_config(dir.path(), &LOCK2, "lock2", cse.coaps_port(), Some(&poa));
    let lock2 = AeProcess::start(&config2);
    let ready2 = lock2.ready(&cse);
    assert_eq!(ready2["poa"], json!(poa), "{ready2}");
    report(&config2, "lock2", "LOCK2-OPEN");
    let ok = poll(Duration::from_secs(20), || {
        cse.logged("notification not delivered").then_some(())
    });
    assert!(
        ok.is_some(),
        "the CSE gives up on lock 2's notification:\n{}",
        cse.stderr()
    );
    assert_eq!(
        lock1.silent_for(Duration::from_millis(500)),
        None,
        "lock 1 hears nothing of lock 2"
    );
}

/// With certificates: the CSE presents its CSE-ID certificate and checks that the AE's names the
/// AE-ID; the AE accepts only a client certificate carrying its CSE's name, so another AE's
/// certificate from the same CA delivers nothing.
#[test]
fn an_ae_with_a_certificate_hears_its_notifications_over_coaps() {
    let pki = Pki::temp();
    let cse = CseProcess::start_temp(&format!(
        "{}dtls_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 2000\n",
        in_tls_config(&pki)
    ));
    let ca = pki.ca_pem();
    let (pem, key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let dir = tempfile::tempdir().unwrap();
    let cert_config = |rn: &str, pem: &Path, key: &Path, poa: Option<&str>| {
        let config = dir.path().join(format!("{rn}.toml"));
        let poa = poa.map(|p| format!("poa = \"{p}\"\n")).unwrap_or_default();
        write_private(
            &config,
            &format!(
                "[ae]\nresource_name = \"{rn}\"\napp_id = \"Nphone\"\nstate_file = \"{rn}.state.json\"\n\
                 [cse]\nurl = \"coaps://127.0.0.1:{}\"\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
                 trusted_ca = {:?}\nserver_name = \"{IN_SERVER_NAME}\"\n\
                 [security]\nmode = \"certificate\"\ncertificate = {:?}\nprivate_key = {:?}\n\
                 [notifications]\nlisten = \"127.0.0.1:0\"\nbinding = \"coaps\"\n{poa}\
                 [[create]]\nty = 3\ncontent = {{ \"m2m:cnt\" = {{ rn = \"state\" }} }}\n\
                 [[subscribe]]\nto = \"cse-in/{rn}/state\"\nrn = \"self\"\n",
                cse.coaps_port(),
                ca.display().to_string(),
                pem.display().to_string(),
                key.display().to_string(),
            ),
        );
        config
    };
    let config = cert_config("phone", &pem, &key, None);
    let phone = AeProcess::start(&config);
    let ready = phone.ready(&cse);
    let poa = ready["poa"].as_str().unwrap_or_default().to_owned();
    assert!(poa.starts_with("coaps://"), "{ready}");
    assert_eq!(ready["aei"], json!("Cphone"), "{ready}");
    let sur = subscription_sur(&config, "phone");
    report(&config, "phone", "DOOR-OPEN");
    let note = phone.event(&cse);
    assert_eq!(
        note["notification"]["sgn"]["nev"]["rep"]["m2m:cin"]["con"],
        json!("DOOR-OPEN"),
        "{note}"
    );

    // Another AE's certificate of the same CA, as a DTLS client of the phone's receiver.
    let (other_pem, other_key) = pki.issue(
        &["--kind", "ae", "--id", "Cother", "--cse", "/id-in"],
        "other",
    );
    let context = |pem: &Path, key: &Path| {
        m2m_security::tls::dtls_client_context(&m2m_security::tls::ClientTlsConfig {
            cipher_suites: m2m_security::tls::CERTIFICATE_SUITES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            certificate_chain: Some(pem.to_owned()),
            private_key: Some(key.to_owned()),
            trusted_ca: Some(ca.clone()),
            ..Default::default()
        })
        .unwrap()
    };
    let any_server = m2m_transport::PeerCheck::Certificate(std::sync::Arc::new(|_| Ok(())));
    let port = port_of(&poa);
    assert_eq!(
        forge_notify(
            &context(&other_pem, &other_key),
            any_server.clone(),
            port,
            &sur
        ),
        None,
        "an AE certificate is not the CSE's"
    );
    assert_eq!(phone.silent_for(Duration::from_millis(300)), None);
    // Another AE announcing the phone's receiver as its own pointOfAccess: the CSE requires the
    // server to be that AE (its AE-ID certificate), which the phone is not.
    let other_config = cert_config("other", &other_pem, &other_key, Some(&poa));
    let other = AeProcess::start(&other_config);
    let ready = other.ready(&cse);
    assert_eq!(ready["aei"], json!("Cother"), "{ready}");
    report(&other_config, "other", "NOT-FOR-THE-PHONE");
    let ok = poll(Duration::from_secs(20), || {
        cse.logged("notification not delivered").then_some(())
    });
    assert!(
        ok.is_some(),
        "the CSE gives up on the other AE's notification:\n{}",
        cse.stderr()
    );
    assert_eq!(
        phone.silent_for(Duration::from_millis(500)),
        None,
        "the phone hears nothing of it"
    );
    // The control: the CSE's own certificate gets an answer.
    let (cse_pem, cse_key) = pki.cse_cert("id-in");
    assert_eq!(
        forge_notify(&context(&cse_pem, &cse_key), any_server, port, &sur),
        Some(2000),
        "the CSE's certificate is accepted"
    );
}
