//! A client PSK from the secure environment is asked for at each handshake
//! (`secure_environment::psk_source`): the TLS context holds no key, so a key kept in a token
//! leaves it for one handshake only, and a key the environment no longer holds opens nothing,
//! even on a context made while it did.

use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::{
    holds_psk, psk_source, PlainPskTable, SecureEnvironment, SharedEnvironments,
};
use m2m_security::tls::{self, ClientTlsConfig, PskHandshake, PskKey, PskLookup};
use openssl::ssl::Ssl;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

const IDENTITY: &str = "lock1@in.m2m.example.com";
const KEY: [u8; 16] = [0x5a; 16];

/// A PSK table that counts the keys it hands out and can lose its key.
struct Counting {
    table: PlainPskTable,
    handed_out: Arc<AtomicUsize>,
    gone: Arc<AtomicBool>,
}

impl SecureEnvironment for Counting {
    fn psk(&self, kpsa_id: &str) -> Option<PskEntry> {
        if self.gone.load(Ordering::SeqCst) {
            return None;
        }
        let entry = self.table.psk(kpsa_id)?;
        self.handed_out.fetch_add(1, Ordering::SeqCst);
        Some(entry)
    }
    fn psk_entries(&self) -> Vec<(Option<String>, KpsaId)> {
        self.table.psk_entries()
    }
    fn secret(&self, _: &str) -> Option<Secret> {
        None
    }
    fn name(&self) -> &str {
        "counting"
    }
}

/// The server: knows the key, whatever the client's environment does.
struct Server;

impl PskLookup for Server {
    fn lookup(&self, identity: &str, _: &PskHandshake) -> Option<PskKey> {
        (identity == IDENTITY).then(|| PskKey {
            key: Zeroizing::new(KEY.to_vec()),
            association: Association {
                mode: SaeMode::ProvisionedKey,
                credential: CredentialId::new(CredentialId::TYPE_KPSA_ID, IDENTITY).unwrap(),
                entity: None,
            },
        })
    }
}

/// One TLS 1.2 PSK handshake of `client` against a server that knows the key: whether it
/// completed.
fn handshake(client: &openssl::ssl::SslContext) -> bool {
    let server = tls::server_context(&tls::ServerTlsConfig {
        cipher_suites: vec!["PSK-AES128-CBC-SHA256".into()],
        tls13: false,
        certificate_chain: None,
        private_key: None,
        trusted_ca: None,
        psk: Some(Arc::new(Server) as Arc<dyn PskLookup>),
        revocation: None,
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        Ssl::new(&server).unwrap().accept(tcp).is_ok()
    });
    let tcp = TcpStream::connect(addr).unwrap();
    let client_ok = Ssl::new(client).unwrap().connect(tcp).is_ok();
    let server_ok = t.join().unwrap();
    client_ok && server_ok
}

#[test]
fn the_client_key_is_asked_for_at_each_handshake_and_a_lost_key_opens_nothing() {
    let handed_out = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicBool::new(false));
    let table = PlainPskTable::new(
        "t",
        vec![PskEntry {
            entity_id: Some("Clock".into()),
            kpsa_id: KpsaId::parse(IDENTITY).unwrap(),
            key: Secret::from_slice(&KEY),
        }],
    )
    .unwrap();
    let environments: SharedEnvironments = vec![Box::new(Counting {
        table,
        handed_out: handed_out.clone(),
        gone: gone.clone(),
    }) as Box<dyn SecureEnvironment>]
    .into();
    // Known without handing the key out.
    assert!(holds_psk(&environments, IDENTITY));
    assert!(
        holds_psk(&environments, "lock1@IN.M2M.Example.com"),
        "the FQDN without case"
    );
    assert!(!holds_psk(&environments, "LOCK1@in.m2m.example.com"));
    assert!(!holds_psk(&environments, "other@in.m2m.example.com"));
    assert!(!holds_psk(&environments, "not a kpsa id"));
    assert_eq!(handed_out.load(Ordering::SeqCst), 0);

    let client = tls::client_context(&ClientTlsConfig {
        cipher_suites: vec!["PSK-AES128-CBC-SHA256".into()],
        psk_source: Some(psk_source(&environments, IDENTITY)),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        handed_out.load(Ordering::SeqCst),
        0,
        "making the context asks for no key"
    );
    assert!(handshake(&client));
    assert!(handshake(&client));
    assert_eq!(
        handed_out.load(Ordering::SeqCst),
        2,
        "one key per handshake"
    );

    // The environment lost the key (destroyed in the token): the same context opens nothing.
    gone.store(true, Ordering::SeqCst);
    assert!(!handshake(&client));
    assert_eq!(handed_out.load(Ordering::SeqCst), 2);
}

#[test]
fn a_fixed_key_and_a_source_together_are_refused() {
    let environments: SharedEnvironments = Vec::<Box<dyn SecureEnvironment>>::new().into();
    let e = tls::client_context(&ClientTlsConfig {
        psk: Some((IDENTITY.into(), Zeroizing::new(KEY.to_vec()))),
        psk_source: Some(psk_source(&environments, IDENTITY)),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(e.contains("give one"), "{e}");
}
