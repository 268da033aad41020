//! The TLS connector (TS-0003 clause 8.2, Entity A's side): every outgoing TLS connection of the
//! CSE, the MAF, the MEF and the clients checks who answered against what is configured for that
//! peer ([`PeerCheck`]); there is no way to connect without saying what to check.

use m2m_security::tls::{client_ssl, client_ssl_for_ip};
use openssl::ssl::SslContext;
use openssl::x509::{X509Ref, X509VerifyResult};
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_openssl::SslStream;

/// A check of the server's certificate beyond its chain, e.g. the oneM2M identity it carries.
pub type CertificateCheck = Arc<dyn Fn(&X509Ref) -> Result<(), String> + Send + Sync>;

/// What the server at the other end must prove.
#[derive(Clone)]
pub enum PeerCheck {
    /// Its certificate chains to the context's root of trust and names this host: a DNS name
    /// (also sent as SNI) or an IP address (an iPAddress subjectAltName).
    Host(String),
    /// TLS-PSK: knowing the key is the proof; a handshake that ends without it is refused.
    PreSharedKey,
    /// Its certificate chains to the root of trust and passes this check.
    Certificate(CertificateCheck),
}

impl fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCheck::Host(h) => write!(f, "Host({h:?})"),
            PeerCheck::PreSharedKey => f.write_str("PreSharedKey"),
            PeerCheck::Certificate(_) => f.write_str("Certificate(..)"),
        }
    }
}

/// Runs a client handshake over `tcp` (or a DTLS client's datagram pipe) and checks the server
/// against `check`.
pub async fn connect<S>(
    context: &SslContext,
    tcp: S,
    check: &PeerCheck,
    timeout: Duration,
) -> Result<SslStream<S>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ssl = match check {
        PeerCheck::Host(host) => match host.parse::<IpAddr>() {
            Ok(ip) => client_ssl_for_ip(context, ip)?,
            // SNI carries a host name, never an address literal (RFC 6066 clause 3).
            Err(_) => client_ssl(context, Some(host))?,
        },
        PeerCheck::PreSharedKey | PeerCheck::Certificate(_) => client_ssl(context, None)?,
    };
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, Pin::new(&mut stream).connect()).await {
        Err(_) => return Err("TLS handshake timed out".into()),
        Ok(Err(e)) => {
            let mut why = format!(
                "TLS handshake failed: {}",
                m2m_security::tls::handshake_reason(&e)
            );
            let verify = stream.ssl().verify_result();
            if verify != X509VerifyResult::OK {
                why.push_str(&format!(" ({})", verify.error_string()));
                // X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
                let name_mismatch = matches!(verify.as_raw(), 62 | 64);
                if let (PeerCheck::Host(host), true) = (check, name_mismatch) {
                    why.push_str(&format!(
                        "; the server's certificate must name {host}: give the server's name \
                         (e.g. a server_name setting) when it is reached by address"
                    ));
                }
            }
            return Err(why);
        }
        Ok(Ok(())) => {}
    }
    verify(stream.ssl(), check)?;
    Ok(stream)
}

/// The checks that hold after the handshake whatever the context was built with.
fn verify(ssl: &openssl::ssl::SslRef, check: &PeerCheck) -> Result<(), String> {
    if matches!(check, PeerCheck::PreSharedKey) {
        return if m2m_security::tls::psk_was_used(ssl) {
            Ok(())
        } else {
            Err("the server did not authenticate with the pre-shared key".into())
        };
    }
    let cert = ssl
        .peer_certificate()
        .ok_or("the server presented no certificate")?;
    // The chain to the root of trust, and for Host the name, were checked by OpenSSL; a context
    // built without a root of trust verifies nothing, so its result is refused here.
    if ssl.verify_result() != X509VerifyResult::OK {
        return Err(format!(
            "the server's certificate is not trusted: {}",
            ssl.verify_result().error_string()
        ));
    }
    match check {
        PeerCheck::Certificate(f) => f(&cert),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_security::certificates::{self as certs, KeyType, LeafName, Validity};
    use openssl::ssl::{SslAcceptor, SslContextBuilder, SslMethod, SslVerifyMode};
    use openssl::x509::store::X509StoreBuilder;

    /// A TLS server in a thread with the certificate of `id-in.m2m.example.com`, and the CA.
    fn server() -> (std::net::SocketAddr, openssl::x509::X509) {
        let ca_key = certs::generate_key(KeyType::P256).unwrap();
        let ca = certs::make_ca("t", &ca_key, Validity::days_from_now(1), None, &[]).unwrap();
        let key = certs::generate_key(KeyType::P256).unwrap();
        let name = LeafName::Fqdn("id-in.m2m.example.com".into());
        let leaf =
            certs::issue(&name, &key, &ca, &ca_key, Validity::days_from_now(1), &[]).unwrap();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate(&leaf).unwrap();
        b.set_private_key(&key).unwrap();
        let acceptor = b.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let _ = acceptor.accept(tcp);
            }
        });
        (addr, ca)
    }

    fn client(ca: Option<&openssl::x509::X509>) -> SslContext {
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        match ca {
            Some(ca) => {
                let mut store = X509StoreBuilder::new().unwrap();
                store.add_cert(ca.clone()).unwrap();
                b.set_verify_cert_store(store.build()).unwrap();
                b.set_verify(SslVerifyMode::PEER);
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        b.build()
    }

    /// Whatever the context was built with, the server is checked against what is configured.
    #[tokio::test]
    async fn the_server_is_always_checked() {
        let (addr, ca) = server();
        let t = Duration::from_secs(5);
        let go = |ctx: SslContext, check: PeerCheck| async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connect(&ctx, tcp, &check, t).await.map(|_| ())
        };
        let name = PeerCheck::Host("id-in.m2m.example.com".into());
        go(client(Some(&ca)), name.clone())
            .await
            .expect("the right name");
        // The wrong name, or the address: refused, with a hint for the address.
        let e = go(
            client(Some(&ca)),
            PeerCheck::Host("other.example.com".into()),
        )
        .await
        .unwrap_err();
        assert!(e.contains("other.example.com"), "{e}");
        let e = go(client(Some(&ca)), PeerCheck::Host("127.0.0.1".into()))
            .await
            .unwrap_err();
        assert!(e.contains("must name 127.0.0.1"), "{e}");
        // A context that verifies nothing still does not connect to an untrusted server.
        let e = go(client(None), name).await.unwrap_err();
        assert!(e.contains("not trusted"), "{e}");
        // A certificate server is no PSK server.
        let e = go(client(Some(&ca)), PeerCheck::PreSharedKey)
            .await
            .unwrap_err();
        assert!(e.contains("pre-shared key"), "{e}");
        // A certificate check of the caller's own decides too.
        let refuse: CertificateCheck = Arc::new(|_| Err("not the one".into()));
        let e = go(client(Some(&ca)), PeerCheck::Certificate(refuse))
            .await
            .unwrap_err();
        assert!(e.contains("not the one"), "{e}");
    }
}

/// An outgoing URL (a notification target, a registrar, a next hop, a DAS) as it may be logged:
/// without the user information of its authority (`user:password@`) and without its query,
/// either of which may carry a credential; IDs and URLs without them are returned as they are.
pub fn loggable(uri: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map(|(_, h)| h);
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let cut_query = path.len() != tail.len();
    if host.is_none() && !cut_query {
        return uri.into();
    }
    let who = if host.is_some() { "***@" } else { "" };
    let more = if cut_query { "?…" } else { "" };
    format!("{scheme}://{who}{}{path}{more}", host.unwrap_or(authority)).into()
}

#[cfg(test)]
mod loggable_tests {
    use super::loggable;

    #[test]
    fn credentials_in_a_target_uri_never_reach_the_log() {
        assert_eq!(
            loggable("https://ae:s3cret@phone.example.com:8443/ntf?token=abc#x"),
            "https://***@phone.example.com:8443/ntf?…"
        );
        assert_eq!(
            loggable("mqtts://u:p@broker:8883?ct=json"),
            "mqtts://***@broker:8883?…"
        );
        assert_eq!(loggable("coap://[::1]:5683/n"), "coap://[::1]:5683/n");
        assert_eq!(loggable("http://127.0.0.1:9990"), "http://127.0.0.1:9990");
        assert_eq!(loggable("/id-in/Cphone"), "/id-in/Cphone");
        assert!(!loggable("http://a:pw@h/p?k=v").contains("pw"));
        // A user without password, a fragment alone, a secure CoAP target, an `@` in the path.
        assert_eq!(loggable("https://tok3n@h/n"), "https://***@h/n");
        assert_eq!(loggable("http://h/n#k=s3cret"), "http://h/n?…");
        assert_eq!(loggable("coaps://u:p@[::1]/n"), "coaps://***@[::1]/n");
        assert_eq!(loggable("http://h/a@b"), "http://h/a@b");
    }
}
