//! Hardening of the TLS listener: a client that never finishes its handshake is dropped after
//! the handshake timeout, and one address cannot hold more handshakes in flight than allowed
//! (silent connections are no handshakes in flight and take no place). Both leave an audit line
//! and the CSE keeps serving.

mod common;

use common::{have_tool, poll, CseProcess};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PSK_ROW: &str = r#"
[[security.psk]]
entity = "Clock-AE1"
kpsa_id = "AE123456789012-Lock@in.provider.com"
key = "1a2b3c4d5e6f7a8b"
"#;

fn tls_cse(timeout_ms: u64, per_source: usize) -> CseProcess {
    CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout_ms = {timeout_ms}\nmax_handshakes_per_source = {per_source}\n{PSK_ROW}"
    ))
}

/// Waits until the server closes the connection (read returns 0 or an error); returns how long.
fn time_until_closed(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[test]
fn a_stalled_handshake_is_dropped_after_the_timeout() {
    let cse = tls_cse(300, 16);
    // A TCP connection that never sends a ClientHello.
    let silent = TcpStream::connect(("127.0.0.1", cse.https_port())).unwrap();
    let closed = time_until_closed(silent, Duration::from_secs(5))
        .expect("the CSE must close a stalled handshake");
    assert!(
        closed >= Duration::from_millis(250),
        "closed too early: {closed:?}"
    );
    assert!(
        poll(Duration::from_secs(5), || cse
            .stderr()
            .contains("handshake timed out")
            .then_some(()))
        .is_some(),
        "no audit line for the timeout:\n{}",
        cse.stderr()
    );
    // The CSE still serves.
    let (rsc, _) = common::retrieve(cse.url(), "/cse-in", "CAdmin");
    assert_eq!(rsc, 2000);
}

/// A connection that starts a ClientHello (a TLS record header) and never finishes it.
fn stalled_handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).unwrap();
    s
}

#[test]
fn handshakes_in_progress_per_address_are_limited() {
    let cse = tls_cse(5_000, 2);
    let port = cse.https_port();
    // Two stalled handshakes take the allowance of 127.0.0.1 ...
    let held: Vec<TcpStream> = (0..2).map(|_| stalled_handshake(port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // ... so a third handshake is closed at once, without waiting for the timeout.
    let third = stalled_handshake(port);
    let closed = time_until_closed(third, Duration::from_secs(3))
        .expect("a handshake over the limit must be closed");
    assert!(
        closed < Duration::from_secs(2),
        "closed only after {closed:?}"
    );
    assert!(
        poll(Duration::from_secs(5), || cse
            .stderr()
            .contains("too many handshakes in progress")
            .then_some(()))
        .is_some(),
        "no audit line for the limit:\n{}",
        cse.stderr()
    );
    // Once they are gone, the address may handshake again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let again = stalled_handshake(port);
    assert!(
        time_until_closed(again, Duration::from_millis(1500)).is_none(),
        "a fresh handshake must be allowed to proceed"
    );
}

/// Silent TCP connections (no ClientHello) are no handshakes in flight: any number of them leaves
/// the address its handshakes, which a real client completes.
#[test]
fn silent_connections_take_no_handshake_place() {
    let cse = tls_cse(5_000, 2);
    let port = cse.https_port();
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    if !have_tool(
        "openssl",
        "version",
        "a TLS-PSK handshake beside silent connections",
    ) {
        return;
    }
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_2",
            "-psk",
            "1a2b3c4d5e6f7a8b",
            "-psk_identity",
            "AE123456789012-Lock@in.provider.com",
            "-cipher",
            "PSK-AES128-CBC-SHA256",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Cipher is PSK-AES128-CBC-SHA256"),
        "the handshake must complete beside 20 silent connections:\n{text}"
    );
    drop(silent);
}

#[test]
fn only_the_accepted_certificate_identities_associate() {
    let pki = common::Pki::temp();
    let (cert, key) = pki.cse_cert("id-in");
    let (mn_cert, mn_key) = pki.cse_cert("id-mn");
    let (phone_cert, phone_key) = pki.issue(
        &["--kind", "ae", "--id", "Cphone", "--cse", "/id-in"],
        "phone",
    );
    let cse = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\ntrusted_ca = \"{}\"\naccepted_identities = [\"/id-mn\"]\n",
        cert.display(),
        key.display(),
        pki.ca_pem().display()
    ));
    let name = "id-in.m2m.example.com";
    // The MN-CSE is an accepted peer: its association is established.
    let mn = common::TlsClient::certificate(&pki.ca_pem(), &mn_cert, &mn_key, name);
    let r = mn.request(
        cse.https_url(),
        "GET",
        "/cse-in",
        Some("/id-mn"),
        None,
        None,
    );
    assert!(r.is_ok(), "the accepted peer must associate: {r:?}");
    // The phone's certificate chains to the same root but names a peer not accepted here.
    let phone = common::TlsClient::certificate(&pki.ca_pem(), &phone_cert, &phone_key, name);
    let r = phone.request(
        cse.https_url(),
        "GET",
        "/cse-in",
        Some("Cphone"),
        None,
        None,
    );
    assert!(
        r.is_err(),
        "a peer outside accepted_identities must not associate: {r:?}"
    );
    assert!(
        poll(Duration::from_secs(5), || cse
            .stderr()
            .contains("not among the accepted peers")
            .then_some(()))
        .is_some(),
        "no audit line:\n{}",
        cse.stderr()
    );
}

/// One request over `openssl s_client` with the front lock's PSK and the given protocol flag;
/// `None` when the handshake failed (no HTTP answer).
fn s_client_psk(port: u16, protocol: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            protocol,
            "-quiet",
            "-ign_eof",
        ])
        .args([
            "-psk",
            "1a2b3c4d5e6f7a8b",
            "-psk_identity",
            "AE123456789012-Lock@in.provider.com",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let req = "GET /cse-in HTTP/1.1\r\nHost: x\r\nX-M2M-Origin: Clock-AE1\r\nX-M2M-RI: 1\r\nConnection: close\r\n\r\n";
    let _ = child.stdin.take().unwrap().write_all(req.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("HTTP/1.1").then_some(text)
}

#[test]
fn tls_1_3_only_when_the_configuration_asks() {
    if !have_tool("openssl", "version", "the TLS 1.3 test") {
        return;
    }
    let r12 = tls_cse(5_000, 16);
    assert!(
        s_client_psk(r12.https_port(), "-tls1_2").is_some(),
        "TLS 1.2 works by default"
    );
    assert!(
        s_client_psk(r12.https_port(), "-tls1_3").is_none(),
        "TLS 1.3 is refused unless configured"
    );
    let r13 = CseProcess::start_temp(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ntls13 = true\n{PSK_ROW}"
    ));
    let answer =
        s_client_psk(r13.https_port(), "-tls1_3").expect("TLS 1.3 PSK works when configured");
    assert!(
        answer.contains("X-M2M-RSC") || answer.contains("x-m2m-rsc"),
        "{answer}"
    );
}
