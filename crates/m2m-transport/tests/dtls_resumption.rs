//! DTLS 1.2 session resumption (RFC 5246 clause 7.3) on the transport's DTLS listener, driven by a
//! client we did not write (`openssl s_client -dtls1_2 -sess_out/-sess_in`): a device resumes
//! its session and gets the association it had; once its key is rotated or removed, the old
//! session resumes nothing, while a full handshake with the new key works.
//!
//! `openssl` missing skips the test with a loud message, except in CI where it fails it.

use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId};
use m2m_security::tls::{Authenticated, PskKey, PskLookup, ServerTlsConfig, PSK_SUITES};
use m2m_transport::{Binder, DatagramListener, Limits, Security, Server};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const IDENTITY: &str = "AE123456789012-Lock@in.provider.com";

/// One row whose key the test changes, as a rotation would.
struct Row {
    key: Mutex<Option<Vec<u8>>>,
}

impl PskLookup for Row {
    fn lookup(&self, psk_identity: &str, _: &m2m_security::tls::PskHandshake) -> Option<PskKey> {
        let id = KpsaId::parse(IDENTITY).unwrap();
        if KpsaId::parse(psk_identity).ok()? != id {
            return None;
        }
        let key = self.key.lock().unwrap().clone()?;
        Some(PskKey {
            key: zeroize::Zeroizing::new(key),
            association: Association {
                mode: SaeMode::ProvisionedKey,
                credential: CredentialId::for_kpsa(&id),
                entity: None,
            },
        })
    }
}

/// Counts the associations it makes; names them by credential.
#[derive(Default)]
struct Counting {
    made: AtomicUsize,
}

struct Named(String);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Binder for Counting {
    type Association = Named;
    fn bind(
        &self,
        proof: Authenticated,
        _ssl: &openssl::ssl::SslRef,
        _peer: SocketAddr,
    ) -> Result<Named, String> {
        match proof {
            Authenticated::Psk(a) => {
                self.made.fetch_add(1, Ordering::SeqCst);
                Ok(Named(a.credential.to_string()))
            }
            Authenticated::Certificate { .. } => Err("PSK only".into()),
        }
    }
}

fn have_openssl() -> bool {
    if Command::new("openssl").arg("version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install openssl for the DTLS resumption test"
    );
    eprintln!("SKIPPED: `openssl` is not installed; the DTLS resumption test did not run");
    false
}

/// `openssl s_client -dtls1_2` with `key`, saving (`-sess_out`) or resuming (`-sess_in`) the
/// session in `session`; sends `hello` and returns what it printed.
fn s_client(port: u16, key: &str, session: &std::path::Path, resume: bool) -> String {
    s_client_suite(port, "PSK-AES128-CCM8", key, session, resume)
}

fn s_client_suite(
    port: u16,
    suite: &str,
    key: &str,
    session: &std::path::Path,
    resume: bool,
) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-dtls1_2",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["-psk", key, "-psk_identity", IDENTITY])
    .args(["-cipher", suite, "-ign_eof"])
    .arg(if resume { "-sess_in" } else { "-sess_out" })
    .arg(session)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"hello\n");
    std::thread::sleep(Duration::from_millis(1500));
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    out + &err
}

#[test]
fn a_resumed_session_keeps_its_association_until_the_key_changes() {
    if !have_openssl() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let row = Arc::new(Row {
        key: Mutex::new(Some(hex::decode("1a2b3c4d5e6f7a8b").unwrap())),
    });
    let context = m2m_security::tls::dtls_server_context(&ServerTlsConfig {
        cipher_suites: PSK_SUITES.iter().map(|s| s.to_string()).collect(),
        tls13: false,
        certificate_chain: None,
        private_key: None,
        trusted_ca: None,
        psk: Some(row.clone()),
        revocation: None,
    })
    .unwrap();
    let binder = Arc::new(Counting::default());
    let server = rt.block_on(async {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // As the CSE runs its DTLS listener: on a thread of its own.
        Server::spawn_datagram_on_own_thread(
            DatagramListener {
                name: "test-dtls",
                udp,
                security: Security::Tls(context),
                limits: Limits {
                    handshake_timeout_ms: 2_000,
                    // Associations end soon after s_client stops: resumption must outlive them.
                    idle_timeout_ms: 1_000,
                    ..Limits::default()
                },
            },
            binder.clone(),
            |mut session: m2m_transport::Session<Named>| async move {
                let name = session.association.as_ref().map(|a| a.0.clone());
                while let Some(d) = session.io.recv().await {
                    let answer = format!(
                        "echo from {}: {}",
                        name.as_deref().unwrap_or("nobody"),
                        String::from_utf8_lossy(&d).trim()
                    );
                    if session.io.send(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            },
        )
        .unwrap()
    });
    let port = server.local_addr.port();
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("lock.session");
    let echo = format!("echo from 12-{IDENTITY}: hello");

    // Under CBC OpenSSL keeps the records, under CCM_8 the transport does and frees OpenSSL's
    // connection at once: either way the session stays resumable after the association ended.
    let cbc = s_client_suite(
        port,
        "PSK-AES128-CBC-SHA256",
        "1a2b3c4d5e6f7a8b",
        &session,
        false,
    );
    assert!(cbc.contains(&echo), "{cbc}");
    std::thread::sleep(Duration::from_millis(1500));
    let cbc = s_client_suite(
        port,
        "PSK-AES128-CBC-SHA256",
        "1a2b3c4d5e6f7a8b",
        &session,
        true,
    );
    assert!(
        // s_client names the suite's own minimum version here, not the protocol's.
        cbc.contains("Reused, ") && cbc.contains("Cipher is PSK-AES128-CBC-SHA256"),
        "{cbc}"
    );
    assert!(cbc.contains(&echo), "{cbc}");
    assert_eq!(binder.made.load(Ordering::SeqCst), 2);
    binder.made.store(0, Ordering::SeqCst);

    let first = s_client(port, "1a2b3c4d5e6f7a8b", &session, false);
    assert!(
        first.contains("New, TLSv1.2, Cipher is PSK-AES128-CCM8"),
        "{first}"
    );
    assert!(first.contains(&echo), "{first}");
    assert!(session.exists(), "s_client saved the session");
    assert_eq!(binder.made.load(Ordering::SeqCst), 1);

    // The device comes back: an abbreviated handshake, the same association.
    std::thread::sleep(Duration::from_millis(1500));
    let again = s_client(port, "1a2b3c4d5e6f7a8b", &session, true);
    assert!(
        again.contains("Reused, TLSv1.2, Cipher is PSK-AES128-CCM8"),
        "{again}"
    );
    assert!(again.contains(&echo), "resumed: {again}");
    assert_eq!(binder.made.load(Ordering::SeqCst), 2);

    // The key is rotated: OpenSSL would resume, but the association is not made again.
    *row.key.lock().unwrap() = Some(hex::decode("00112233445566778899aabbccddeeff").unwrap());
    let stale = s_client(port, "1a2b3c4d5e6f7a8b", &session, true);
    assert!(!stale.contains(&echo), "an old key's session: {stale}");
    assert_eq!(binder.made.load(Ordering::SeqCst), 2);
    let fresh_session = dir.path().join("new.session");
    let fresh = s_client(
        port,
        "00112233445566778899aabbccddeeff",
        &fresh_session,
        false,
    );
    assert!(
        fresh.contains(&echo),
        "a full handshake with the new key: {fresh}"
    );
    assert_eq!(binder.made.load(Ordering::SeqCst), 3);

    // The row is removed: its sessions resume nothing either.
    *row.key.lock().unwrap() = None;
    let removed = s_client(
        port,
        "00112233445566778899aabbccddeeff",
        &fresh_session,
        true,
    );
    assert!(
        !removed.contains(&echo),
        "a removed row's session: {removed}"
    );
    assert_eq!(binder.made.load(Ordering::SeqCst), 3);
    drop(server);
}
