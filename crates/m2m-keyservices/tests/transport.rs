//! The MAF and the MEF on the transport layer (m2m-transport), with real sockets: the connection
//! cap, the per-source handshake limit (silent connections take no handshake place; stalled
//! handshakes beyond the limit are closed at once), the handshake timeout, and graceful shutdown
//! (a request in progress finishes, idle associations do not hold the shutdown up, the grace
//! period ends what is left). Each case checks that the service still serves afterwards.

mod common;

use common::{logs, maf_config, test_clock, write_private, Pki};
use m2m_keyservices::maf::{KmRow, MafClient, RunningMaf};
use m2m_keyservices::mef::{EnrolmentRequest, Mef, MefClient, MefConfig, RunningMef};
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use m2m_security::tls::{client_context, ClientTlsConfig, PSK_SUITES};
use m2m_transport::{Limits, PeerCheck};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const MEF_FQDN: &str = "mef.keys.example.net";
const KM_ID: &str = "ae1@maf.keys.example.net";
const KPM_ID: &str = "00112233445566778899AABBCCDDEEFF@mef.keys.example.net";
const KEY_HEX: &str = "5a1f0c9e7d3b2a4f6e8d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Maf,
    Mef,
}

enum Running {
    Maf(RunningMaf),
    Mef(RunningMef),
}

/// A MAF or a MEF on 127.0.0.1:0 with the given limits, and what a client needs to reach it.
struct Service {
    kind: Kind,
    addr: SocketAddr,
    running: Running,
    pki: Arc<Pki>,
}

fn key() -> Secret {
    Secret::from_hex(KEY_HEX).unwrap()
}

/// One CA for the MAF, the MEF and a CSE-ID certificate of the IN-CSE.
fn pki() -> Arc<Pki> {
    logs();
    let pki = Pki::new(
        "transport test CA",
        None,
        &[],
        &[
            ("maf", LeafName::Fqdn(MAF_FQDN.into())),
            ("mef", LeafName::Fqdn(MEF_FQDN.into())),
            ("in", common::cse_leaf("/id-in", SP)),
        ],
    );
    write_private(&pki.path("storage.key"), "5a".repeat(32).as_bytes());
    Arc::new(pki)
}

async fn start(kind: Kind, limits: Limits) -> Service {
    start_in(kind, limits, pki()).await
}

/// A service of `pki` (two services of one PKI keep their storage apart).
async fn start_in(kind: Kind, limits: Limits, pki: Arc<Pki>) -> Service {
    let running = match kind {
        Kind::Maf => {
            let km = vec![KmRow {
                client_id: "/Sae1".into(),
                km_id: KM_ID.into(),
                key: key(),
            }];
            let cfg = m2m_keyservices::maf::MafConfig {
                limits,
                ..maf_config(&pki, MAF_FQDN, SP, km, &pki.path("maf-data"))
            };
            Running::Maf(RunningMaf::start(cfg, test_clock().0).await.unwrap())
        }
        Kind::Mef => {
            let text = format!(
                "fqdn = \"{MEF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\n\
                 certificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\nstorage = {:?}\n\
                 storage_key = {:?}\n[[kpm]]\nenrolee_id = \"/id-asn\"\nkpm_id = \"{KPM_ID}\"\nkey = \"{KEY_HEX}\"\n",
                pki.path("mef.pem"),
                pki.path("mef.key"),
                pki.path("ca.pem"),
                pki.path("enrolments.json"),
                pki.path("storage.key"),
            );
            let mut cfg = MefConfig::from_toml_str(&text).unwrap();
            cfg.limits = limits;
            Running::Mef(Mef::new(cfg).unwrap().start().await.unwrap())
        }
    };
    let addr = match &running {
        Running::Maf(m) => m.addr,
        Running::Mef(m) => m.addr,
    };
    Service {
        kind,
        addr,
        running,
        pki,
    }
}

impl Service {
    /// A real client's association (TLS-PSK on Km or Kpm), not yet used.
    async fn client(&self) -> Result<Client, String> {
        match self.kind {
            Kind::Maf => {
                MafClient::connect_psk(&format!("https://{}", self.addr), MAF_FQDN, KM_ID, &key())
                    .await
                    .map(Client::Maf)
                    .map_err(|e| e.to_string())
            }
            Kind::Mef => MefClient::connect_psk(&self.addr.to_string(), MEF_FQDN, KPM_ID, &key())
                .await
                .map(Client::Mef)
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether a real client gets an answer on a new association.
    async fn serves(&self) -> Result<(), String> {
        self.client().await?.request().await
    }

    /// A TLS-PSK association over which the test writes HTTP itself.
    async fn raw(&self) -> tokio_openssl::SslStream<TcpStream> {
        let id = match self.kind {
            Kind::Maf => KM_ID,
            Kind::Mef => KPM_ID,
        };
        let ctx = client_context(&ClientTlsConfig {
            cipher_suites: PSK_SUITES.iter().map(|s| s.to_string()).collect(),
            psk: Some((id.into(), Zeroizing::new(key().expose().to_vec()))),
            ..Default::default()
        })
        .unwrap();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        m2m_transport::connect(&ctx, tcp, &PeerCheck::PreSharedKey, Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// A request the service answers 201, as a head and a body to send apart.
    fn request(&self) -> (String, &'static str) {
        let (path, body) = match self.kind {
            Kind::Maf => ("/maf/clients", "{}"),
            Kind::Mef => ("/mef/enrolment", r#"{"indications":["RemoteMgmt"]}"#),
        };
        (
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            body,
        )
    }

    fn listener(&self) -> &'static str {
        match self.kind {
            Kind::Maf => "listener=\"maf\"",
            Kind::Mef => "listener=\"mef\"",
        }
    }

    async fn shutdown(self) {
        match self.running {
            Running::Maf(m) => m.shutdown().await,
            Running::Mef(m) => m.shutdown().await,
        }
    }
}

enum Client {
    Maf(MafClient),
    Mef(MefClient),
}

impl Client {
    /// One request answered: a client registration at the MAF, an enrolment at the MEF.
    async fn request(&mut self) -> Result<(), String> {
        match self {
            Client::Maf(c) => c
                .register_client(None)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::Mef(c) => c
                .enrol(&EnrolmentRequest {
                    indications: vec!["RemoteMgmt".into()],
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

/// How long until the server closes `s` (read returns 0 or fails); `None` if it is still open
/// after `limit`.
async fn time_until_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A connection that starts a ClientHello (a TLS record header) and never finishes it.
async fn stalled_handshake(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    s
}

/// Waits (at most 5 s) for an audit line with all of `parts`.
async fn logged(parts: &[&str]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = common::log_text();
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

// ----- the connection cap ----------------------------------------------------------------------

async fn connection_cap(kind: Kind) {
    let svc = start(kind, limits(|l| l.max_connections = 3)).await;
    // Three connections that say nothing hold the three places ...
    let held: Vec<TcpStream> = futures_join(svc.addr, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a fourth is closed as it arrives, with an audit line naming it.
    let mut fourth = TcpStream::connect(svc.addr).await.unwrap();
    let peer = format!("peer={}", fourth.local_addr().unwrap());
    let closed = time_until_closed(&mut fourth, Duration::from_secs(3))
        .await
        .expect("a connection over the cap must be closed");
    assert!(
        closed < Duration::from_secs(2),
        "{kind:?}: closed only after {closed:?}"
    );
    assert!(
        logged(&["connection cap", svc.listener(), &peer]).await,
        "{kind:?}: no audit line for the cap:\n{}",
        common::log_text()
    );
    assert!(
        svc.serves().await.is_err(),
        "{kind:?}: the cap holds for real clients too"
    );
    // Once they are gone, the service serves again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    svc.serves()
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
}

async fn futures_join(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_maf_closes_connections_over_its_cap() {
    connection_cap(Kind::Maf).await;
}

#[tokio::test]
async fn the_mef_closes_connections_over_its_cap() {
    connection_cap(Kind::Mef).await;
}

// ----- handshakes per source -------------------------------------------------------------------

async fn handshakes_per_source(kind: Kind) {
    let svc = start(kind, limits(|l| l.max_handshakes_per_source = 2)).await;
    // Twenty silent connections are no handshakes in flight: a real client still gets through.
    let silent = futures_join(svc.addr, 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    svc.serves()
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: beside silent connections: {e}"));
    // Two stalled handshakes take the allowance of 127.0.0.1 ...
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(stalled_handshake(svc.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a third is closed at once, not after the handshake timeout (10 s).
    let mut third = stalled_handshake(svc.addr).await;
    let peer = format!("peer={}", third.local_addr().unwrap());
    let closed = time_until_closed(&mut third, Duration::from_secs(3))
        .await
        .expect("a handshake over the limit must be closed");
    assert!(
        closed < Duration::from_secs(2),
        "{kind:?}: closed only after {closed:?}"
    );
    assert!(
        logged(&["too many handshakes in progress", svc.listener(), &peer]).await,
        "{kind:?}: no audit line for the limit:\n{}",
        common::log_text()
    );
    // The stalled ones are still waiting for their ClientHello: not closed by the refusal.
    assert!(time_until_closed(&mut held[0], Duration::from_millis(300))
        .await
        .is_none());
    // Once they are gone, the address handshakes again and the service serves.
    drop(held);
    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    svc.serves()
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
}

#[tokio::test]
async fn the_maf_limits_handshakes_in_progress_per_address() {
    handshakes_per_source(Kind::Maf).await;
}

#[tokio::test]
async fn the_mef_limits_handshakes_in_progress_per_address() {
    handshakes_per_source(Kind::Mef).await;
}

async fn handshake_timeout(kind: Kind) {
    let svc = start(kind, limits(|l| l.handshake_timeout_ms = 300)).await;
    let mut stalled = stalled_handshake(svc.addr).await;
    let peer = format!("peer={}", stalled.local_addr().unwrap());
    let closed = time_until_closed(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled handshake must be closed");
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(3),
        "{kind:?}: closed after {closed:?}"
    );
    assert!(
        logged(&[
            "association refused",
            svc.listener(),
            &peer,
            "handshake timed out"
        ])
        .await,
        "{kind:?}: no audit line for the timeout:\n{}",
        common::log_text()
    );
    svc.serves()
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
}

#[tokio::test]
async fn the_maf_ends_a_stalled_handshake_after_its_timeout() {
    handshake_timeout(Kind::Maf).await;
}

#[tokio::test]
async fn the_mef_ends_a_stalled_handshake_after_its_timeout() {
    handshake_timeout(Kind::Mef).await;
}

// ----- graceful shutdown -----------------------------------------------------------------------

async fn graceful_shutdown(kind: Kind) {
    let svc = start(kind, limits(|l| l.shutdown_grace_ms = 5_000)).await;
    let addr = svc.addr;
    // An association that has not sent anything, one that has answered a request and idles, and
    // one in the middle of a request (head sent, body not yet).
    let _silent_association = svc.client().await.unwrap();
    let mut idle_association = svc.client().await.unwrap();
    idle_association.request().await.unwrap();
    let mut in_flight = svc.raw().await;
    let (head, body) = svc.request();
    in_flight.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(svc.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections ...
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "{kind:?}: still accepting"
    );
    // ... but the request in progress is answered.
    in_flight.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), in_flight.read_to_end(&mut answer))
        .await
        .expect("the connection closes after its answer")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{kind:?}: {answer}");
    shutdown.await.unwrap();
    // Idle associations did not hold the shutdown up for the grace period.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{kind:?}: shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_maf_finishes_a_request_in_progress_when_it_shuts_down() {
    graceful_shutdown(Kind::Maf).await;
}

#[tokio::test]
async fn the_mef_finishes_a_request_in_progress_when_it_shuts_down() {
    graceful_shutdown(Kind::Mef).await;
}

/// A request that does not finish within the grace period is ended with the server.
async fn grace_ends(kind: Kind) {
    let svc = start(kind, limits(|l| l.shutdown_grace_ms = 300)).await;
    let mut stuck = svc.raw().await;
    let (head, _) = svc.request();
    stuck.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    svc.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{kind:?}: shutdown took {took:?}"
    );
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stuck.read_to_end(&mut answer))
        .await
        .expect("the stuck connection is closed");
    assert!(
        !String::from_utf8_lossy(&answer).contains("201"),
        "{kind:?}: a request without its body got an answer"
    );
}

#[tokio::test]
async fn the_maf_ends_what_outlasts_the_grace_period() {
    grace_ends(Kind::Maf).await;
}

#[tokio::test]
async fn the_mef_ends_what_outlasts_the_grace_period() {
    grace_ends(Kind::Mef).await;
}

// ----- outgoing: the clients check who answers ---------------------------------------------------

/// A MAF or MEF client over a certificate connects only to a server whose certificate names the
/// FQDN it asked for: the MEF (a certificate of the same CA) cannot pose as the MAF, nor the MAF
/// as the MEF, and a name the certificate does not carry is refused.
#[tokio::test]
async fn the_clients_accept_only_the_server_they_asked_for() {
    let maf = start(Kind::Maf, Limits::default()).await;
    let mef = start_in(Kind::Mef, Limits::default(), Arc::clone(&maf.pki)).await;
    let p = &maf.pki;
    let (cert, key, ca) = (p.path("in.pem"), p.path("in.key"), p.path("ca.pem"));
    let maf_url = format!("https://{}", maf.addr);
    let mef_url = format!("https://{}", mef.addr);
    // The right server under its own name: accepted.
    MafClient::connect_certificate(&maf_url, MAF_FQDN, &cert, &key, &ca)
        .await
        .expect("the MAF under its FQDN");
    // The other service's certificate chains to the same root, but names another FQDN.
    let e = MafClient::connect_certificate(&mef_url, MAF_FQDN, &cert, &key, &ca)
        .await
        .err()
        .expect("the MEF posing as the MAF must be refused");
    assert!(e.reason.contains("certificate verify failed"), "{e}");
    let e = MafClient::connect_certificate(&maf_url, "maf.other.example.net", &cert, &key, &ca)
        .await
        .err()
        .expect("a name the certificate does not carry must be refused");
    assert!(e.reason.contains("certificate verify failed"), "{e}");
    let e = MefClient::connect_certificate(&maf.addr.to_string(), MEF_FQDN, &cert, &key, &ca)
        .await
        .err()
        .expect("the MAF posing as the MEF must be refused");
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
    // The MEF under its own name, after all that: accepted (and the identity is read).
    MefClient::connect_certificate(&mef.addr.to_string(), MEF_FQDN, &cert, &key, &ca)
        .await
        .expect("the MEF under its FQDN");
}
