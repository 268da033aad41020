//! The two clients of a BSF: a device bootstrapping over Ub with its USIM ([`bootstrap`]), and a
//! NAF fetching the key of a B-TID over Zn ([`ZnClient`]).

use super::server::BOOTSTRAPPING_INFO_TYPE;
use super::usim::SoftwareUsim;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use m2m_security::gba::bootstrapping::{self, UeAnswer, UeRefusal};
use m2m_security::gba::digest_aka;
use m2m_security::gba::key_derivation::{Ks, NafId};
use m2m_security::tls::{self, ClientTlsConfig};
use m2m_transport::PeerCheck;
use openssl::ssl::SslContext;
use rand::RngCore;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// The largest answer of the BSF read (a BootstrappingInfo is a few hundred bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// How long one exchange with the BSF may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A bootstrapped key as the device holds it.
pub struct Bootstrapped {
    pub b_tid: String,
    pub ks: Ks,
    pub rand: [u8; 16],
    pub impi: String,
    /// The key's lifetime, as the BSF wrote it (xsd:dateTime).
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl Clone for Bootstrapped {
    fn clone(&self) -> Self {
        Bootstrapped {
            b_tid: self.b_tid.clone(),
            ks: Ks::from_bytes(self.ks.expose()),
            rand: self.rand,
            impi: self.impi.clone(),
            expires: self.expires,
        }
    }
}

impl std::fmt::Debug for Bootstrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrapped")
            .field("b_tid", &self.b_tid)
            .field("impi", &self.impi)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Bootstrapped {
    /// Ks_NAF for a NAF (TS 33.220 Annex B), the key of the Ua protocol with it.
    pub fn ks_naf(&self, naf: &NafId) -> Result<Zeroizing<[u8; 32]>, String> {
        m2m_security::gba::key_derivation::ks_naf(&self.ks, &self.rand, &self.impi, naf)
            .ok_or_else(|| "the IMPI or NAF FQDN is too long for the KDF".to_owned())
    }

    /// Whether the key is still valid (with a margin for one association to be made with it).
    pub fn is_fresh(&self) -> bool {
        self.expires > chrono::Utc::now() + chrono::Duration::seconds(30)
    }
}

/// Why a bootstrapping failed. Never carries key material.
#[derive(Debug)]
pub enum BootstrapError {
    /// No connection, or the BSF did not answer in time.
    Connect(String),
    /// The BSF refused (403 for an unknown subscriber, a device that ended the run).
    Refused { status: u16, reason: String },
    /// AUTN did not prove the home network: the run was ended (TS 24.109 clause 4.4).
    NotTheNetwork,
    /// The answer made no sense, or its rspauth did not prove the BSF knew RES.
    Protocol(String),
    /// The USIM file could not be kept up to date.
    Usim(String),
}

impl std::fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapError::Connect(e) => write!(f, "connecting to the BSF: {e}"),
            BootstrapError::Refused { status, reason } => {
                write!(f, "the BSF refused the bootstrapping ({status}): {reason}")
            }
            BootstrapError::NotTheNetwork => f.write_str(
                "the BSF's challenge did not authenticate the home network (AUTN MAC failure)",
            ),
            BootstrapError::Protocol(e) => write!(f, "bootstrapping protocol: {e}"),
            BootstrapError::Usim(e) => write!(f, "USIM: {e}"),
        }
    }
}

impl std::error::Error for BootstrapError {}

/// An answer of the BSF.
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    authentication_info: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// One HTTP/1.1 exchange with the BSF's Ub listener (`http://host:port`).
async fn exchange(url: &http::Uri, authorization: &str) -> Result<Answer, BootstrapError> {
    let host = url
        .host()
        .ok_or_else(|| BootstrapError::Connect("the Ub URL names no host".into()))?;
    let port = url.port_u16().unwrap_or(80);
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let run = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| BootstrapError::Connect(format!("{addr}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| BootstrapError::Connect(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(hyper::Method::GET)
            .uri("/")
            .header(hyper::header::HOST, host)
            .header(hyper::header::AUTHORIZATION, authorization)
            .body(Full::new(Bytes::new()))
            .map_err(|e| BootstrapError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| BootstrapError::Connect(e.to_string()))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let answer = Answer {
            status: resp.status().as_u16(),
            www_authenticate: header("www-authenticate"),
            authentication_info: header("authentication-info"),
            content_type: header("content-type"),
            body: Bytes::new(),
        };
        // Ub is plain HTTP: whatever answers is not believed, nor read without bound.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| BootstrapError::Protocol(format!("the answer: {e}")))?
            .to_bytes();
        task.abort();
        Ok(Answer { body, ..answer })
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| BootstrapError::Connect(format!("{addr}: no answer within {TIMEOUT:?}")))?
}

/// The Authorization of a request with nothing proven yet: the IMPI only.
fn initial_authorization(impi: &str, realm: &str) -> String {
    format!(
        "Digest username={}, realm={}, nonce=\"\", uri=\"/\", response=\"\"",
        digest_aka::quote(impi),
        digest_aka::quote(realm)
    )
}

/// The Authorization that ends a run whose AUTN failed (TS 24.109 clause 4.4: an empty response).
fn refusal_authorization(impi: &str, www_authenticate: &str) -> String {
    let p = digest_aka::parse(www_authenticate).unwrap_or_default();
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    format!(
        "Digest username={}, realm={}, nonce={}, uri=\"/\", response=\"\"",
        digest_aka::quote(impi),
        digest_aka::quote(&get("realm")),
        digest_aka::quote(&get("nonce"))
    )
}

/// Runs the bootstrapping at the BSF's Ub listener `ub_url` (`http://host:port`) with `usim`,
/// whose realm is the BSF's domain `bsf_fqdn`: the 401 challenge answered by the USIM (its SQN
/// saved first), a resynchronisation when the USIM asks for one, and the 200 checked with
/// rspauth.
pub async fn bootstrap(
    ub_url: &str,
    bsf_fqdn: &str,
    usim: &mut SoftwareUsim,
) -> Result<Bootstrapped, BootstrapError> {
    let url: http::Uri = ub_url
        .parse()
        .map_err(|_| BootstrapError::Connect(format!("bad Ub URL {ub_url}")))?;
    if url.scheme_str() != Some("http") {
        return Err(BootstrapError::Connect(format!(
            "the Ub URL {ub_url} must be http:// (Digest AKA protects the run)"
        )));
    }
    let milenage = usim.milenage();
    let mut answer = exchange(&url, &initial_authorization(&usim.impi, bsf_fqdn)).await?;
    // A challenge, at most one resynchronisation, then the answer.
    for _ in 0..2 {
        if answer.status != 401 {
            return Err(refused(&answer));
        }
        let www = answer
            .www_authenticate
            .clone()
            .ok_or_else(|| BootstrapError::Protocol("401 without a challenge".into()))?;
        let mut cnonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut cnonce);
        let cnonce = hex::encode(cnonce);
        let req = bootstrapping::Request {
            method: "GET",
            uri: "/",
            body: b"",
        };
        let mut highest = usim.sqn_highest;
        match bootstrapping::answer(&milenage, &mut highest, &usim.impi, &www, req, &cnonce) {
            Ok(UeAnswer::Authenticated {
                authorization,
                ks,
                rand,
                auth_info,
            }) => {
                usim.sqn_highest = highest;
                usim.save().map_err(BootstrapError::Usim)?;
                let done = exchange(&url, &authorization).await?;
                if done.status != 200 {
                    return Err(refused(&done));
                }
                if !done
                    .content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with(BOOTSTRAPPING_INFO_TYPE))
                {
                    return Err(BootstrapError::Protocol(
                        "the 200 is not application/vnd.3gpp.bsf+xml".into(),
                    ));
                }
                let info = done.authentication_info.as_deref().unwrap_or_default();
                if !auth_info.check(info, &done.body) {
                    return Err(BootstrapError::Protocol(
                        "the answer's rspauth does not prove the BSF knew RES".into(),
                    ));
                }
                let body = std::str::from_utf8(&done.body)
                    .map_err(|_| BootstrapError::Protocol("the answer is not UTF-8".into()))?;
                let (b_tid, lifetime) = bootstrapping::read_bootstrapping_info(body)
                    .ok_or_else(|| BootstrapError::Protocol("no B-TID or lifetime".into()))?;
                let expires = chrono::DateTime::parse_from_rfc3339(&lifetime)
                    .map_err(|_| BootstrapError::Protocol("the lifetime is no dateTime".into()))?
                    .with_timezone(&chrono::Utc);
                // The B-TID names this run's RAND at this BSF (TS 33.220 clause 4.5.2).
                if b_tid != m2m_security::gba::key_derivation::b_tid(&rand, bsf_fqdn) {
                    return Err(BootstrapError::Protocol(
                        "the B-TID is not this run's".into(),
                    ));
                }
                return Ok(Bootstrapped {
                    b_tid,
                    ks,
                    rand,
                    impi: usim.impi.clone(),
                    expires,
                });
            }
            Ok(UeAnswer::Resynchronising { authorization }) => {
                answer = exchange(&url, &authorization).await?;
            }
            Err(UeRefusal::NotTheNetwork) => {
                let _ = exchange(&url, &refusal_authorization(&usim.impi, &www)).await;
                return Err(BootstrapError::NotTheNetwork);
            }
            Err(UeRefusal::Malformed(why)) => return Err(BootstrapError::Protocol(why.into())),
        }
    }
    Err(BootstrapError::Protocol(
        "the BSF challenged again after a resynchronisation".into(),
    ))
}

/// The device's bootstrapped key: the one its USIM file keeps while it is fresh, else a new
/// bootstrapping (kept in the file for the next run). `force` bootstraps anew whatever is kept
/// (a NAF no longer knew the B-TID).
pub async fn current_key(
    ub_url: &str,
    bsf_fqdn: &str,
    usim: &mut SoftwareUsim,
    force: bool,
) -> Result<Bootstrapped, BootstrapError> {
    // One process at a time runs the USIM of a file (m2m ae and m2m request may share it): the
    // file is read again under the lock, so no process writes back an older SQN.
    let _lock = lock_usim(usim.path())?;
    *usim = SoftwareUsim::load(usim.path()).map_err(BootstrapError::Usim)?;
    if let Some(kept) = usim.bootstrapped.as_ref().filter(|b| {
        !force && b.is_fresh() && m2m_security::gba::key_derivation::is_b_tid_of(&b.b_tid, bsf_fqdn)
    }) {
        return Ok(kept.clone());
    }
    let fresh = bootstrap(ub_url, bsf_fqdn, usim).await?;
    usim.bootstrapped = Some(fresh.clone());
    usim.save().map_err(BootstrapError::Usim)?;
    Ok(fresh)
}

/// An exclusive lock on `<usim>.lock`, released when dropped.
fn lock_usim(usim: &Path) -> Result<std::fs::File, BootstrapError> {
    let mut path = usim.as_os_str().to_owned();
    path.push(".lock");
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(&path)
        .map_err(|e| BootstrapError::Usim(format!("{}: {e}", Path::new(&path).display())))?;
    file.lock()
        .map_err(|e| BootstrapError::Usim(format!("locking the USIM file: {e}")))?;
    Ok(file)
}

fn refused(a: &Answer) -> BootstrapError {
    BootstrapError::Refused {
        status: a.status,
        reason: String::from_utf8_lossy(&a.body).chars().take(200).collect(),
    }
}

/// What a NAF receives for a B-TID.
pub struct NafKey {
    pub ks_naf: Zeroizing<[u8; 32]>,
    pub impi: String,
    /// The AE-ID the subscriber record names.
    pub ae_id: Option<String>,
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for NafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NafKey")
            .field("impi", &self.impi)
            .field("ae_id", &self.ae_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A NAF's client of the BSF's Zn listener: its certificate context, built once.
pub struct ZnClient {
    url: String,
    bsf_fqdn: String,
    context: SslContext,
    /// A connection to the BSF kept open between fetches: a fetch in a handshake then costs one
    /// request, not a mutual-TLS handshake as well. Taken by one fetch at a time; the others
    /// open their own (not kept).
    idle: std::sync::Mutex<Option<ZnConnection>>,
}

type ZnConnection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl ZnClient {
    /// A client reaching `url` (`https://host:port`), whose certificate must name `bsf_fqdn`,
    /// with the NAF's certificate context.
    pub fn new(url: &str, bsf_fqdn: &str, context: SslContext) -> ZnClient {
        ZnClient {
            url: url.to_owned(),
            bsf_fqdn: bsf_fqdn.to_owned(),
            context,
            idle: std::sync::Mutex::new(None),
        }
    }

    /// The certificate context of a NAF from its files.
    pub fn context(
        certificate_chain: &Path,
        private_key: &Path,
        trusted_ca: &Path,
    ) -> Result<SslContext, String> {
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
    }

    /// The BSF's domain (the suffix of its B-TIDs).
    pub fn bsf_fqdn(&self) -> &str {
        &self.bsf_fqdn
    }

    /// Ks_NAF of `b_tid` for `naf` (this NAF's FQDN and the Ua protocol in use).
    pub async fn naf_key(&self, b_tid: &str, naf: &NafId) -> Result<NafKey, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Reply {
            ks_naf: Option<String>,
            impi: Option<String>,
            ae_id: Option<String>,
            key_lifetime: Option<String>,
            error: Option<String>,
        }
        let run = async {
            let body = serde_json::json!({
                "bTid": b_tid,
                "nafFqdn": naf.fqdn,
                "uaSecurityProtocolId": hex::encode(naf.ua_protocol),
            });
            let req = || {
                hyper::Request::builder()
                    .method(hyper::Method::POST)
                    .uri("/zn/naf-key")
                    .header(hyper::header::HOST, &self.bsf_fqdn)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .map_err(|e| e.to_string())
            };
            // The kept connection first; one the BSF has closed meanwhile is replaced once.
            let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
            let (mut sender, resp) = match kept.filter(|s| !s.is_closed()) {
                Some(mut sender) => match sender.send_request(req()?).await {
                    Ok(resp) => (sender, resp),
                    Err(_) => {
                        let mut sender = self.connect().await?;
                        let resp = sender
                            .send_request(req()?)
                            .await
                            .map_err(|e| e.to_string())?;
                        (sender, resp)
                    }
                },
                None => {
                    let mut sender = self.connect().await?;
                    let resp = sender
                        .send_request(req()?)
                        .await
                        .map_err(|e| e.to_string())?;
                    (sender, resp)
                }
            };
            let status = resp.status();
            let bytes = Zeroizing::new(
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes()
                    .to_vec(),
            );
            // Kept for the next fetch, unless another one was kept meanwhile.
            if sender.ready().await.is_ok() {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.is_none() {
                    *idle = Some(sender);
                }
            }
            let reply: Reply =
                serde_json::from_slice(&bytes).map_err(|_| "the BSF's answer is not JSON")?;
            if !status.is_success() {
                return Err(format!(
                    "the BSF refused ({}): {}",
                    status.as_u16(),
                    reply.error.unwrap_or_default()
                ));
            }
            let key_hex = Zeroizing::new(reply.ks_naf.ok_or("no ksNaf")?);
            let key =
                Zeroizing::new(hex::decode(key_hex.as_str()).map_err(|_| "ksNaf is not hex")?);
            let ks_naf: [u8; 32] = key[..].try_into().map_err(|_| "ksNaf is not 32 octets")?;
            let expires = reply
                .key_lifetime
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .ok_or("no keyLifetime")?
                .with_timezone(&chrono::Utc);
            Ok(NafKey {
                ks_naf: Zeroizing::new(ks_naf),
                impi: reply.impi.ok_or("no impi")?,
                ae_id: reply.ae_id,
                expires,
            })
        };
        tokio::time::timeout(TIMEOUT, run)
            .await
            .map_err(|_| format!("BSF {}: no answer within {TIMEOUT:?}", self.url))?
    }

    /// A new mutual-TLS connection to the BSF, its certificate naming the BSF's FQDN.
    async fn connect(&self) -> Result<ZnConnection, String> {
        let (host, port) = crate::maf::client::host_port(&self.url)?;
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let check = PeerCheck::Host(self.bsf_fqdn.clone());
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("BSF {addr}: {e}"))?;
        let stream = m2m_transport::connect(&self.context, tcp, &check, TIMEOUT).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // The connection lives as long as its sender (kept, or dropped after this fetch).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
