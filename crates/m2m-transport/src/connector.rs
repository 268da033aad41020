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
use tokio::net::TcpStream;
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

/// Runs a client handshake over `tcp` and checks the server against `check`.
pub async fn connect(
    context: &SslContext,
    tcp: TcpStream,
    check: &PeerCheck,
    timeout: Duration,
) -> Result<SslStream<TcpStream>, String> {
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
            return Err(format!(
                "TLS handshake failed: {}",
                m2m_security::tls::handshake_reason(&e)
            ))
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
