//! The MEF client (TS-0003 clause 8.3): one TLS connection to the MEF (TLS-PSK on Kpm/KpmID for an
//! enrolee, or a certificate for an enrolee or an enrolment target), opened by the transport
//! layer's connector with a check of the MEF ([`PeerCheck`]: its FQDN certificate, or the Kpm of a
//! PSK handshake), with the bootstrap exporter computed locally.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use m2m_security::credentials::Secret;
use m2m_security::kdf::{self, BOOTSTRAP_EXPORTER_LABEL, EXPORT_LEN};
use m2m_security::tls::{self, ClientTlsConfig};
use m2m_transport::PeerCheck;
use openssl::ssl::SslContext;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// The one suite a GBA enrolee offers, so that it knows the NAF_Id its key is for.
const GBA_SUITE: (&str, u16) = ("PSK-AES128-CBC-SHA256", 0x00AE);

/// How long the TLS handshake with the MEF may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub use super::store::TargetRef;

/// What can go wrong on the client side. Never carries key material.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting or the TLS handshake failed (a wrong Kpm ends here).
    Connect(String),
    /// The MEF answered with an error status.
    Http { status: u16, message: String },
    /// The reply made no sense (or the KeIDs disagree).
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connecting to the MEF: {e}"),
            ClientError::Http { status, message } => write!(f, "MEF answered {status}: {message}"),
            ClientError::Protocol(e) => write!(f, "MEF protocol: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The HTTP status, when the MEF answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An enrolment request (clause 8.3.4).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentRequest {
    pub indications: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maf_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRef>,
}

/// A completed enrolment, as the enrolee holds it.
#[derive(Debug)]
pub struct EnrolResult {
    /// Ke, from this side's exporter.
    pub ke: Secret,
    /// KeID (`HEX@MEF-FQDN`), the same on both sides.
    pub ke_id: String,
    pub enrolee_id: String,
    pub lifetime: u64,
}

/// What an enrolment target fetched.
#[derive(Debug)]
pub struct FetchedCredential {
    pub credential: Secret,
    pub enrolee_id: String,
    /// Seconds the enrolment has left (the Lifetime of TS-0003 clause 8.3.2.1).
    pub lifetime: u64,
    pub status: String,
}

/// One TLS connection to a MEF.
pub struct MefClient {
    sender: SendRequest<Full<Bytes>>,
    exported: Zeroizing<[u8; EXPORT_LEN]>,
    mef_fqdn: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MefClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The socket address of a MEF URL: `https://host[:port][/...]` or `host:port` → `host:port` (443 by
/// default), the form [`MefClient`] connects to.
pub fn mef_addr(url: &str) -> Result<String, String> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let (host, port) = crate::maf::client::host_port(&url)?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

impl MefClient {
    /// An enrolee connection with TLS-PSK: psk_identity = `kpm_id`, psk = `kpm`; the MEF proves it
    /// knows Kpm ([`PeerCheck::PreSharedKey`]).
    pub async fn connect_psk(
        addr: &str,
        mef_fqdn: &str,
        kpm_id: &str,
        kpm: &Secret,
    ) -> Result<MefClient, ClientError> {
        let cfg = ClientTlsConfig {
            cipher_suites: tls::PSK_SUITES.iter().map(|s| s.to_string()).collect(),
            psk: Some((kpm_id.to_owned(), Zeroizing::new(kpm.expose().to_vec()))),
            ..Default::default()
        };
        let ctx = tls::client_context(&cfg).map_err(ClientError::Connect)?;
        Self::connect_with_context(addr, mef_fqdn, &ctx, &PeerCheck::PreSharedKey).await
    }

    /// An enrolee connection authenticated by GBA (the MEF is a NAF of the device's BSF):
    /// psk_identity = the B-TID of `key`, psk = Ks_NAF for NAF_Id = the MEF-FQDN and the one suite
    /// offered (TS 33.220 Annex B, H). The MEF proves it knows the same key.
    pub async fn connect_gba(
        addr: &str,
        mef_fqdn: &str,
        key: &crate::bsf::Bootstrapped,
    ) -> Result<MefClient, ClientError> {
        use m2m_security::gba::key_derivation::{ua_tls_psk, NafId};
        let (suite, code) = GBA_SUITE;
        let naf = NafId {
            fqdn: mef_fqdn.to_owned(),
            ua_protocol: ua_tls_psk(code),
        };
        let ks_naf = key.ks_naf(&naf).map_err(ClientError::Connect)?;
        let cfg = ClientTlsConfig {
            cipher_suites: vec![suite.to_owned()],
            psk: Some((key.b_tid.clone(), Zeroizing::new(ks_naf.to_vec()))),
            ..Default::default()
        };
        let ctx = tls::client_context(&cfg).map_err(ClientError::Connect)?;
        Self::connect_with_context(addr, mef_fqdn, &ctx, &PeerCheck::PreSharedKey).await
    }

    /// A certificate connection (enrolee with a certificate, or enrolment target); the MEF's
    /// certificate is verified against `trusted_ca` and must name `mef_fqdn` ([`PeerCheck::Host`]).
    pub async fn connect_certificate(
        addr: &str,
        mef_fqdn: &str,
        certificate_chain: &Path,
        private_key: &Path,
        trusted_ca: &Path,
    ) -> Result<MefClient, ClientError> {
        let ctx = Self::certificate_context(certificate_chain, private_key, trusted_ca)?;
        let check = PeerCheck::Host(mef_fqdn.to_owned());
        Self::connect_with_context(addr, mef_fqdn, &ctx, &check).await
    }

    /// The TLS context of a certificate connection, built once (reading the files) for many
    /// connections with [`MefClient::connect_with_context`].
    pub fn certificate_context(
        certificate_chain: &Path,
        private_key: &Path,
        trusted_ca: &Path,
    ) -> Result<SslContext, ClientError> {
        tls::client_context(&ClientTlsConfig {
            cipher_suites: tls::CERTIFICATE_SUITES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            certificate_chain: Some(certificate_chain.to_path_buf()),
            private_key: Some(private_key.to_path_buf()),
            trusted_ca: Some(trusted_ca.to_path_buf()),
            ..Default::default()
        })
        .map_err(ClientError::Connect)
    }

    /// A connection over an existing TLS context (e.g. [`MefClient::certificate_context`]) to the
    /// MEF at `addr`, which must pass `check` (its certificate names `mef_fqdn`, or it knows the
    /// PSK).
    pub async fn connect_with_context(
        addr: &str,
        mef_fqdn: &str,
        ctx: &SslContext,
        check: &PeerCheck,
    ) -> Result<MefClient, ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(format!("{addr}: {e}")))?;
        let stream = m2m_transport::connect(ctx, tcp, check, HANDSHAKE_TIMEOUT)
            .await
            .map_err(ClientError::Connect)?;
        let mut exported = Zeroizing::new([0u8; EXPORT_LEN]);
        stream
            .ssl()
            .export_keying_material(&mut exported[..], BOOTSTRAP_EXPORTER_LABEL, None)
            .map_err(|e| ClientError::Connect(format!("TLS exporter: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(MefClient {
            sender,
            exported,
            mef_fqdn: mef_fqdn.to_owned(),
            task,
        })
    }

    /// Ke and KeID of this connection, from the local exporter (clause 10.3.1, 10.3.4).
    pub fn bootstrap_key(&self) -> (Secret, String) {
        let (ke, rel) = kdf::export_split(&self.exported);
        (ke, kdf::ke_id_string(&rel, &self.mef_fqdn))
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        origin: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.mef_fqdn);
        if let Some(o) = origin {
            b = b.header("X-M2M-Origin", o);
        }
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")))?;
        if !status.is_success() {
            return Err(ClientError::Http {
                status: status.as_u16(),
                message: v["error"].as_str().unwrap_or("").to_owned(),
            });
        }
        if status != StatusCode::OK && status != StatusCode::CREATED {
            return Err(ClientError::Protocol(format!("unexpected status {status}")));
        }
        Ok(v)
    }

    /// The enrolment exchange (`POST /mef/enrolment`): returns this side's Ke and the KeID, after
    /// checking that the MEF computed the same KeID on this connection.
    pub async fn enrol(&mut self, req: &EnrolmentRequest) -> Result<EnrolResult, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self
            .call(Method::POST, "/mef/enrolment", None, Some(body))
            .await?;
        let (ke, ke_id) = self.bootstrap_key();
        let theirs = v["keID"].as_str().unwrap_or_default();
        if theirs != ke_id {
            return Err(ClientError::Protocol(format!(
                "the MEF's KeID {theirs} differs from the local one {ke_id}"
            )));
        }
        Ok(EnrolResult {
            ke,
            ke_id,
            enrolee_id: v["enroleeID"].as_str().unwrap_or_default().to_owned(),
            lifetime: v["lifetime"].as_u64().unwrap_or_default(),
        })
    }

    /// Administrator side: `POST /mef/revocation` ends the enrolment of a KeID, or every enrolment
    /// of an enrolee; returns the KeIDs revoked (the MEF answers 404 when none matched).
    pub async fn revoke(
        &mut self,
        which: &crate::mef::store::Revocation,
    ) -> Result<Vec<String>, ClientError> {
        use crate::mef::store::Revocation;
        let body = match which {
            Revocation::KeId(k) => serde_json::json!({ "keID": k }),
            Revocation::Enrolee(e) => serde_json::json!({ "enroleeID": e }),
        };
        let v = self
            .call(
                Method::POST,
                "/mef/revocation",
                None,
                Some(body.to_string().into_bytes()),
            )
            .await?;
        Ok(v["revoked"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Enrolment-target side: `GET /mef/fetchCredentials/{KeID}/{SUID}`, From (X-M2M-Origin) = `origin`
    /// when given (it must equal the certificate identity).
    pub async fn fetch_credentials(
        &mut self,
        ke_id: &str,
        suid: u32,
        origin: Option<&str>,
    ) -> Result<FetchedCredential, ClientError> {
        let path = format!("/mef/fetchCredentials/{ke_id}/{suid}");
        let v = self.call(Method::GET, &path, origin, None).await?;
        let hex = Zeroizing::new(v["credential"].as_str().unwrap_or_default().to_owned());
        let credential = Secret::from_hex(&hex).map_err(ClientError::Protocol)?;
        // What the target keeps depends on it (the MAF ends a client registration with the
        // enrolment): an answer without it is refused, not read as "no limit".
        let lifetime = v["lifetime"]
            .as_u64()
            .ok_or_else(|| ClientError::Protocol("the answer carries no lifetime".into()))?;
        Ok(FetchedCredential {
            credential,
            enrolee_id: v["enroleeID"].as_str().unwrap_or_default().to_owned(),
            lifetime,
            status: v["status"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::mef_addr;

    #[test]
    fn mef_urls_become_socket_addresses() {
        assert_eq!(
            mef_addr("https://mef.keys.example.net:8443").unwrap(),
            "mef.keys.example.net:8443"
        );
        assert_eq!(
            mef_addr("https://mef.keys.example.net/").unwrap(),
            "mef.keys.example.net:443"
        );
        assert_eq!(
            mef_addr("https://mef.keys.example.net").unwrap(),
            "mef.keys.example.net:443"
        );
        assert_eq!(mef_addr("127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(mef_addr("https://[::1]:9000").unwrap(), "[::1]:9000");
        assert!(mef_addr("https://").is_err());
        assert!(mef_addr("http://mef.keys.example.net").is_err());
    }
}
