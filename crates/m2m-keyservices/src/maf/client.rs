//! A MAF client (TS-0003 clause 8.8.2): one TLS connection (so that the exporter output, and thus
//! Kc/KcID, is the one the MAF computes on its side), opened by the transport layer's connector with
//! a check of the MAF ([`PeerCheck`]: its FQDN certificate, or the Km of a PSK handshake), HTTP/1.1
//! over it with hyper's `conn::http1`.

use super::jwk::Jwk;
use super::ttp::CredentialUsage;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use m2m_security::credentials::Secret;
use m2m_security::kdf::{self, CONNECTION_EXPORTER_LABEL, EXPORT_LEN};
use m2m_security::tls::{client_context, ClientTlsConfig, CERTIFICATE_SUITES, PSK_SUITES};
use m2m_transport::PeerCheck;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// A failed MAF request: the HTTP status (if the MAF answered), the oneM2M status code (the TTP
/// answers carry one) and its short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MafError {
    pub status: Option<u16>,
    pub rsc: Option<u16>,
    pub reason: String,
}

impl std::fmt::Display for MafError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.rsc, self.status) {
            (Some(rsc), _) => write!(f, "MAF answered {rsc}: {}", self.reason),
            (None, Some(s)) => write!(f, "MAF answered {s}: {}", self.reason),
            (None, None) => write!(f, "MAF: {}", self.reason),
        }
    }
}

impl std::error::Error for MafError {}

fn local(reason: impl Into<String>) -> MafError {
    MafError {
        status: None,
        rsc: None,
        reason: reason.into(),
    }
}

/// A client registration as the MAF answered it.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub reg_id: String,
    pub client_id: String,
    pub expiration_time: String,
}

/// A registered key, as the source sees it: Kc, its KcID `HEX@MAF-FQDN` and the registration details.
#[derive(Debug, Clone)]
pub struct RegisteredKey {
    pub key: Secret,
    /// `HEX(KcID)@MAF-FQDN`.
    pub key_id: String,
    /// `HEX(KcID)`.
    pub relative_id: String,
    pub expiration_time: String,
    pub target_ids: Vec<String>,
}

/// An E2E credential of the TTP ([`crate::maf::ttp`]) as the MAF answered it.
#[derive(Debug, Clone)]
pub struct E2eCredential {
    /// `hex@MAF-FQDN`.
    pub credential_id: String,
    pub subject_id: String,
    pub usage: CredentialUsage,
    pub registrant_id: String,
    /// Shown to the registrant only (empty otherwise).
    pub requester_ids: Vec<String>,
    pub expiration_time: String,
    /// On retrieval, and on a registration where the TTP generated the key.
    pub jwk: Option<Jwk>,
}

impl E2eCredential {
    /// The JSON the MAF answered (with the JWK: print it only where the user asked for it).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "credentialID": self.credential_id,
            "subjectID": self.subject_id,
            "usage": self.usage.as_str(),
            "registrantID": self.registrant_id,
            "expirationTime": self.expiration_time,
        });
        if !self.requester_ids.is_empty() {
            v["requesterIDs"] = json!(self.requester_ids);
        }
        if let Some(jwk) = &self.jwk {
            v["jwk"] = jwk.to_value();
        }
        v
    }
}

/// What a gateway registers at the TTP on behalf of a device.
#[derive(Debug, Clone)]
pub struct CredentialRequest<'a> {
    /// The device's AE-ID/CSE-ID.
    pub subject_id: &'a str,
    pub usage: CredentialUsage,
    /// `None`: the TTP generates a 256-bit `oct` key and returns it.
    pub jwk: Option<&'a Jwk>,
    pub requester_ids: &'a [&'a str],
    pub expiration_time: Option<&'a str>,
}

/// A key retrieved by a target.
#[derive(Debug, Clone)]
pub struct RetrievedKey {
    pub key: Secret,
    pub expiration_time: String,
    pub source_id: String,
    pub suid: u32,
    /// The KmID the source registered with the MAF over (`sourceKmID`); `None` when it
    /// authenticated with a certificate.
    pub source_km_id: Option<String>,
}

/// How long the TLS handshake with the MAF may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One authenticated connection to a MAF.
pub struct MafClient {
    sender: SendRequest<Full<Bytes>>,
    exporter: Zeroizing<[u8; EXPORT_LEN]>,
    host: String,
    driver: JoinHandle<()>,
}

impl Drop for MafClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `https://host[:port][/...]` → (host, port), 443 by default; an IPv6 literal without brackets.
pub(crate) fn host_port(url: &str) -> Result<(String, u16), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("bad URL '{url}'"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("the URL '{url}' must be https://"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("the URL '{url}' names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

impl MafClient {
    /// Connects with TLS-PSK on Km (psk_identity = KmID): the MAF proves it knows Km
    /// ([`PeerCheck::PreSharedKey`]). `server_name` (the MAF-FQDN) is the HTTP Host.
    pub async fn connect_psk(
        url: &str,
        server_name: &str,
        km_id: &str,
        km: &Secret,
    ) -> Result<MafClient, MafError> {
        let ctx = client_context(&ClientTlsConfig {
            cipher_suites: PSK_SUITES.iter().map(|s| s.to_string()).collect(),
            psk: Some((km_id.to_owned(), Zeroizing::new(km.expose().to_vec()))),
            ..Default::default()
        })
        .map_err(local)?;
        Self::connect(url, server_name, ctx, &PeerCheck::PreSharedKey).await
    }

    /// Connects with a client certificate (PEM chain and key); the MAF's FQDN certificate is verified
    /// against `trusted_ca` and `server_name` ([`PeerCheck::Host`]).
    pub async fn connect_certificate(
        url: &str,
        server_name: &str,
        certificate_chain: &Path,
        private_key: &Path,
        trusted_ca: &Path,
    ) -> Result<MafClient, MafError> {
        let ctx = client_context(&ClientTlsConfig {
            cipher_suites: CERTIFICATE_SUITES.iter().map(|s| s.to_string()).collect(),
            certificate_chain: Some(PathBuf::from(certificate_chain)),
            private_key: Some(PathBuf::from(private_key)),
            trusted_ca: Some(PathBuf::from(trusted_ca)),
            ..Default::default()
        })
        .map_err(local)?;
        let check = PeerCheck::Host(server_name.to_owned());
        Self::connect(url, server_name, ctx, &check).await
    }

    /// Connects over `ctx` to the MAF at `url`, which must pass `check` (its certificate names
    /// the MAF-FQDN, or it knows the PSK); `server_name` is the HTTP Host.
    pub async fn connect(
        url: &str,
        server_name: &str,
        ctx: openssl::ssl::SslContext,
        check: &PeerCheck,
    ) -> Result<MafClient, MafError> {
        let (host, port) = host_port(url).map_err(local)?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| local(format!("connect {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = m2m_transport::connect(&ctx, tcp, check, HANDSHAKE_TIMEOUT)
            .await
            .map_err(local)?;
        let mut exporter = Zeroizing::new([0u8; EXPORT_LEN]);
        stream
            .ssl()
            .export_keying_material(&mut exporter[..], CONNECTION_EXPORTER_LABEL, None)
            .map_err(|e| local(format!("TLS exporter: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| local(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(MafClient {
            sender,
            exporter,
            host: if port == 443 {
                server_name.to_owned()
            } else {
                format!("{server_name}:{port}")
            },
            driver,
        })
    }

    /// The Kc of this connection and HEX(KcID) (uppercase hexBinary), as computed locally from the
    /// exporter.
    pub fn connection_key(&self) -> (Secret, String) {
        let (kc, kc_id) = kdf::export_split(&self.exporter);
        (kc, kdf::hex_binary(&kc_id))
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), MafError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| local(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| local(format!("connection lost: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| local(format!("request failed: {e}")))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| local(format!("response: {e}")))?
            .to_bytes();
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|_| local("the MAF answered no JSON"))?
        };
        if !status.is_success() {
            return Err(MafError {
                status: Some(status.as_u16()),
                rsc: v["rsc"].as_u64().and_then(|c| u16::try_from(c).ok()),
                reason: v["error"].as_str().unwrap_or("error").to_owned(),
            });
        }
        Ok((status, v))
    }

    /// Client Registration (TS-0003 clause 8.8.2): registers the authenticated identity.
    pub async fn register_client(
        &mut self,
        expiration_time: Option<&str>,
    ) -> Result<ClientRegistration, MafError> {
        self.client_call(Method::POST, "/maf/clients".into(), expiration_time)
            .await
    }

    /// Client Registration Update: a new expiration time for an existing registration.
    pub async fn update_client(
        &mut self,
        reg_id: &str,
        expiration_time: Option<&str>,
    ) -> Result<ClientRegistration, MafError> {
        self.client_call(
            Method::PUT,
            format!("/maf/clients/{reg_id}"),
            expiration_time,
        )
        .await
    }

    async fn client_call(
        &mut self,
        method: Method,
        path: String,
        expiration_time: Option<&str>,
    ) -> Result<ClientRegistration, MafError> {
        let mut body = json!({});
        if let Some(e) = expiration_time {
            body["expirationTime"] = json!(e);
        }
        let (_, v) = self.call(method, &path, Some(body)).await?;
        let s = |k: &str| str_field(&v, k);
        Ok(ClientRegistration {
            reg_id: s("mafClientRegID")?,
            client_id: s("mafClientID")?,
            expiration_time: s("expirationTime")?,
        })
    }

    /// Client De-Registration.
    pub async fn deregister_client(&mut self, reg_id: &str) -> Result<(), MafError> {
        self.call(Method::DELETE, &format!("/maf/clients/{reg_id}"), None)
            .await
            .map(|_| ())
    }

    /// Key Registration of this connection's Kc: the MAF's relativeKeyID must equal the locally computed
    /// hex(KcID). Returns Kc and `hex(KcID)@MAF-FQDN`.
    pub async fn register_key(
        &mut self,
        suid: u32,
        targets: &[&str],
        expiration_time: Option<&str>,
    ) -> Result<RegisteredKey, MafError> {
        let mut body = json!({ "suid": suid, "targetIDs": targets });
        if let Some(e) = expiration_time {
            body["expirationTime"] = json!(e);
        }
        let reg = self.key_registration(body).await?;
        let (kc, kc_id) = self.connection_key();
        // hexBinary compares without case (a MAF of an earlier version answered lowercase).
        if !reg.relative_id.eq_ignore_ascii_case(&kc_id) {
            return Err(local(
                "the MAF registered a KcID other than this connection's",
            ));
        }
        Ok(RegisteredKey { key: kc, ..reg })
    }

    /// Key Registration of a key value chosen by the client (relativeKeyID chosen by the MAF).
    pub async fn register_key_value(
        &mut self,
        suid: u32,
        targets: &[&str],
        key: &Secret,
        expiration_time: Option<&str>,
    ) -> Result<RegisteredKey, MafError> {
        let mut body =
            json!({ "suid": suid, "targetIDs": targets, "keyValue": key.to_hex().as_str() });
        if let Some(e) = expiration_time {
            body["expirationTime"] = json!(e);
        }
        let reg = self.key_registration(body).await?;
        Ok(RegisteredKey {
            key: key.clone(),
            ..reg
        })
    }

    async fn key_registration(&mut self, body: Value) -> Result<RegisteredKey, MafError> {
        let (_, v) = self.call(Method::POST, "/maf/keys", Some(body)).await?;
        parse_registered(&v)
    }

    /// Key Registration Update (only the source may): new expirationTime and/or targetIDs.
    pub async fn update_key(
        &mut self,
        relative_id: &str,
        targets: Option<&[&str]>,
        expiration_time: Option<&str>,
    ) -> Result<(String, Vec<String>), MafError> {
        let mut body = json!({});
        if let Some(t) = targets {
            body["targetIDs"] = json!(t);
        }
        if let Some(e) = expiration_time {
            body["expirationTime"] = json!(e);
        }
        let (_, v) = self
            .call(Method::PUT, &format!("/maf/keys/{relative_id}"), Some(body))
            .await?;
        let r = parse_registered(&v)?;
        Ok((r.expiration_time, r.target_ids))
    }

    /// Key Retrieval (only a target may). `relative_id` is hex(KcID); a full `hex@MAF-FQDN` is accepted too.
    pub async fn retrieve_key(&mut self, relative_id: &str) -> Result<RetrievedKey, MafError> {
        let rel = relative_id.split('@').next().unwrap_or_default();
        let (_, v) = self
            .call(Method::GET, &format!("/maf/keys/{rel}"), None)
            .await?;
        let hex_value = Zeroizing::new(
            v["keyValue"]
                .as_str()
                .ok_or_else(|| local("answer lacks keyValue"))?
                .to_owned(),
        );
        // The caller binds the key to sourceID and checks suid and expiry: none may default.
        let suid = v["suid"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| local("answer lacks suid"))?;
        let source_id = str_field(&v, "sourceID")?;
        if source_id.is_empty() {
            return Err(local("answer has an empty sourceID"));
        }
        let source_km_id = match v.get("sourceKmID") {
            None => None,
            Some(k) => Some(
                k.as_str()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| local("answer has a sourceKmID that is no KmID"))?
                    .to_owned(),
            ),
        };
        Ok(RetrievedKey {
            key: Secret::from_hex(&hex_value).map_err(local)?,
            expiration_time: str_field(&v, "expirationTime")?,
            source_id,
            suid,
            source_km_id,
        })
    }

    /// Key De-Registration (only the source may).
    pub async fn deregister_key(&mut self, relative_id: &str) -> Result<(), MafError> {
        let rel = relative_id.split('@').next().unwrap_or_default();
        self.call(Method::DELETE, &format!("/maf/keys/{rel}"), None)
            .await
            .map(|_| ())
    }
}

/// The TTP's credential registry (seeds/001 clauses 5.6, 5.7; [`crate::maf::ttp`]).
impl MafClient {
    /// Registers an E2E credential (needs a Client Registration; on behalf of another subject only
    /// where the MAF lists that delegation).
    pub async fn register_credential(
        &mut self,
        req: &CredentialRequest<'_>,
    ) -> Result<E2eCredential, MafError> {
        let mut body = json!({
            "subjectID": req.subject_id,
            "usage": req.usage.as_str(),
            "requesterIDs": req.requester_ids,
        });
        if let Some(jwk) = req.jwk {
            body["jwk"] = jwk.to_value();
        }
        if let Some(e) = req.expiration_time {
            body["expirationTime"] = json!(e);
        }
        let (_, v) = self
            .call(Method::POST, "/maf/e2e-credentials", Some(body))
            .await?;
        parse_credential(&v)
    }

    /// Retrieves a credential by its ID (`hex@MAF-FQDN` or `hex`): the registrant or a requester.
    pub async fn retrieve_credential(&mut self, id: &str) -> Result<E2eCredential, MafError> {
        let (_, v) = self.call(Method::GET, &credential_path(id)?, None).await?;
        let c = parse_credential(&v)?;
        if c.jwk.is_none() {
            return Err(local("answer lacks jwk"));
        }
        Ok(c)
    }

    /// Changes the requesters and/or the expiration time (the registrant only).
    pub async fn update_credential(
        &mut self,
        id: &str,
        requester_ids: Option<&[&str]>,
        expiration_time: Option<&str>,
    ) -> Result<E2eCredential, MafError> {
        let mut body = json!({});
        if let Some(r) = requester_ids {
            body["requesterIDs"] = json!(r);
        }
        if let Some(e) = expiration_time {
            body["expirationTime"] = json!(e);
        }
        let (_, v) = self
            .call(Method::PUT, &credential_path(id)?, Some(body))
            .await?;
        parse_credential(&v)
    }

    /// De-registers a credential (the registrant only).
    pub async fn deregister_credential(&mut self, id: &str) -> Result<(), MafError> {
        self.call(Method::DELETE, &credential_path(id)?, None)
            .await
            .map(|_| ())
    }
}

/// The path of a credential; the ID goes into the path as it is, so only its own characters pass.
fn credential_path(id: &str) -> Result<String, MafError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'-'))
    {
        return Err(local("a credential ID is hex, optionally @MAF-FQDN"));
    }
    Ok(format!("/maf/e2e-credentials/{id}"))
}

/// A string member of a MAF answer; its absence is a local error.
fn str_field(v: &Value, k: &str) -> Result<String, MafError> {
    v[k].as_str()
        .map(str::to_owned)
        .ok_or_else(|| local(format!("answer lacks {k}")))
}

/// The strings of an array member of a MAF answer (none when absent).
fn string_array(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_credential(v: &Value) -> Result<E2eCredential, MafError> {
    let s = |k: &str| str_field(v, k);
    let usage = CredentialUsage::parse(&s("usage")?).ok_or_else(|| local("unknown usage"))?;
    let jwk = match v.get("jwk") {
        Some(j) => Some(Jwk::from_value(j, usage).map_err(local)?),
        None => None,
    };
    Ok(E2eCredential {
        credential_id: s("credentialID")?,
        subject_id: s("subjectID")?,
        usage,
        registrant_id: s("registrantID")?,
        requester_ids: string_array(&v["requesterIDs"]),
        expiration_time: s("expirationTime")?,
        jwk,
    })
}

fn parse_registered(v: &Value) -> Result<RegisteredKey, MafError> {
    let s = |k: &str| str_field(v, k);
    Ok(RegisteredKey {
        key: Secret::new(Vec::new()),
        key_id: s("keyID")?,
        relative_id: s("relativeKeyID")?,
        expiration_time: s("expirationTime")?,
        target_ids: string_array(&v["targetIDs"]),
    })
}
