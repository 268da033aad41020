//! The PSK lookup learns the suite of the handshake in progress (GBA keys depend on it: the
//! NAF_Id of TS 33.220 names the Ua protocol and, for TLS 1.2, the suite), whatever the order the
//! client offers the suites in.

use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::CredentialId;
use m2m_security::tls::{
    self, ClientTlsConfig, PskHandshake, PskKey, PskLookup, PskSuite, ServerTlsConfig,
};
use openssl::ssl::Ssl;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Answers every identity with one key, and records the suite each lookup was told.
struct Recorder(Mutex<Vec<PskSuite>>);

impl PskLookup for Recorder {
    fn lookup(&self, _: &str, handshake: &PskHandshake) -> Option<PskKey> {
        self.0.lock().unwrap().push(handshake.suite);
        Some(PskKey {
            key: Zeroizing::new(vec![7u8; 16]),
            association: Association {
                mode: SaeMode::ProvisionedKey,
                credential: CredentialId::new(CredentialId::TYPE_KPSA_ID, "a@b.example").unwrap(),
                entity: None,
            },
        })
    }
}

/// One TLS handshake offering `client_suites` in that order; the suite the lookup was told and
/// the one the completed handshake used.
fn handshake(client_suites: &[&str], tls13: bool) -> (PskSuite, [u8; 2]) {
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    let server = tls::server_context(&ServerTlsConfig {
        cipher_suites: tls::PSK_SUITES.iter().map(|s| s.to_string()).collect(),
        tls13,
        certificate_chain: None,
        private_key: None,
        trusted_ca: None,
        psk: Some(recorder.clone() as Arc<dyn PskLookup>),
        revocation: None,
    })
    .unwrap();
    let client = tls::client_context(&ClientTlsConfig {
        cipher_suites: client_suites.iter().map(|s| s.to_string()).collect(),
        tls13,
        psk: Some(("a@b.example".into(), Zeroizing::new(vec![7u8; 16]))),
        ..Default::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let ssl = Ssl::new(&server).unwrap();
        let s = ssl.accept(tcp).unwrap();
        s.ssl().current_cipher().unwrap().protocol_id()
    });
    let tcp = TcpStream::connect(addr).unwrap();
    let _c = Ssl::new(&client).unwrap().connect(tcp).unwrap();
    let used = t.join().unwrap();
    let told = recorder.0.lock().unwrap()[0];
    (told, used)
}

#[test]
fn the_lookup_is_told_the_suite_the_handshake_uses() {
    for order in [
        ["PSK-AES128-CBC-SHA256", "PSK-AES128-CCM8"],
        ["PSK-AES128-CCM8", "PSK-AES128-CBC-SHA256"],
    ] {
        let (told, used) = handshake(&order, false);
        assert_eq!(told, PskSuite::Tls12(used), "offer {order:?}");
    }
    for one in tls::PSK_SUITES {
        let (told, used) = handshake(&[one], false);
        assert_eq!(told, PskSuite::Tls12(used), "offer {one}");
    }
    let (told, _) = handshake(&["PSK-AES128-CBC-SHA256"], true);
    assert_eq!(told, PskSuite::Tls13);
}
