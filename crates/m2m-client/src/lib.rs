//! oneM2M client SDK (TS-0009 HTTP binding, TS-0008 CoAP binding).
//!
//! A [`Client`] sends oneM2M request primitives ([`Request`]) to a CSE or to any
//! oneM2M HTTP endpoint and returns the response primitive ([`Response`]). It keeps
//! HTTP/1.1 connections alive in a pool, so repeated requests to the same peer reuse
//! one TCP connection.
//!
//! ```no_run
//! # async fn demo() -> m2m_core::M2mResult<()> {
//! use m2m_client::Client;
//! use m2m_core::{Operation, Request, ResourceType};
//! use serde_json::json;
//!
//! let client = Client::new();
//! let mut req = Request::new(Operation::Create, "cse-in", Some("Cmyae".into()), m2m_client::next_request_id());
//! req.ty = Some(ResourceType::Ae);
//! req.pc = Some(json!({"m2m:ae": {"rn": "myae", "api": "Nmyapp", "rr": false, "srv": ["3"]}}));
//! let rsp = client.send("http://127.0.0.1:8080", &req).await?.into_result()?;
//! println!("{}", rsp.rsc);
//! # Ok(()) }
//! ```
//!
//! Errors: every transport failure (bad URL, DNS, connection refused, timeout, a response
//! that is not a valid oneM2M HTTP response) is an [`M2mError`] with Response Status Code
//! `TARGET_NOT_REACHABLE` (5103) and a short `dbg` naming the URL. A oneM2M error *answered by
//! the peer* (e.g. 4004) is an `Ok(Response)`; use [`Response::into_result`] to turn it into
//! an error.
//!
//! `https` URLs use TLS in the oneM2M profiles with the credentials given by
//! [`Client::with_tls`] (TLS-PSK or a client certificate); without them an `https` URL is a
//! clear 5103 error. `coap://` and `coaps://` URLs use the CoAP binding, `coaps` over DTLS 1.2
//! with the credentials of [`Client::with_dtls`]. `mqtts://` URLs use the MQTT binding through
//! that MQTT server, with the credentials and CSE-ID of [`Client::with_mqtt`]. `wss://` URLs use
//! the WebSocket binding over the TLS of [`Client::with_tls`], one connection per server.

#![forbid(unsafe_code)]

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use m2m_core::http_binding::{decode_response, encode_request};
use m2m_core::serialization::Serialization;
use m2m_core::{M2mError, M2mResult, ResponseStatusCode};
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use m2m_core::{Operation, Request, Response};

/// Default per-request timeout (connect + request + whole response body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of a response body.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;
type HttpsClient = hyper_util::client::legacy::Client<tls::TlsConnector, Full<Bytes>>;

mod coap;
pub mod escertke;
mod header_spelling;
mod mqtt;
pub use mqtt::{MqttInbox, MqttSettings, Received as MqttReceived};
mod websocket;
pub use websocket::WsInbox;
pub mod esprim;
pub mod group_authentication;
mod tls;
pub use tls::{PeerPolicy, TlsSettings};

/// A oneM2M HTTP client with a keep-alive connection pool.
///
/// Cloning is cheap and clones share the pool. [`Client::new`] creates a fresh pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: HttpClient,
    https: Option<HttpsClient>,
    /// `coap`/`coaps` (TS-0008): the associations, shared by clones.
    coap: std::sync::Arc<coap::CoapTransport>,
    /// Credentials and trust for `coaps` (a DTLS context).
    dtls: Option<std::sync::Arc<TlsSettings>>,
    /// `mqtts` (TS-0010): the sessions, shared by clones, and what they need.
    mqtt: std::sync::Arc<mqtt::MqttTransport>,
    mqtt_settings: Option<std::sync::Arc<MqttSettings>>,
    /// `wss` (TS-0020): the connections, shared by clones, over the `https` TLS settings.
    websocket: std::sync::Arc<websocket::WsTransport>,
    tls_settings: Option<std::sync::Arc<TlsSettings>>,
    timeout: Duration,
    max_body: usize,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

/// The transport a URL asks for: plain HTTP or TLS (`https`, with its own connector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Http,
    Https,
}

/// A target URL split into what the HTTP binding needs.
#[derive(Debug)]
struct Target {
    transport: Transport,
    authority: Authority,
    /// Only for full URLs (`send_to_url`): the exact path and query to request.
    path_and_query: Option<PathAndQuery>,
}

pub(crate) fn unreachable(url: &str, why: impl std::fmt::Display) -> M2mError {
    M2mError::new(
        ResponseStatusCode::TargetNotReachable,
        format!("{url}: {why}"),
    )
}

/// A lock whose holder panicked is still usable: the maps behind it hold no invariant a panic
/// could break half-way (pending answers, sessions).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses `scheme://authority[/path?query]`.
fn parse_url(url: &str, full: bool) -> M2mResult<Target> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| unreachable(url, format_args!("invalid URL: {e}")))?;
    let transport = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => Transport::Http,
        Some(s) if *s == Scheme::HTTPS => Transport::Https,
        Some(s) => return Err(unreachable(url, format_args!("unsupported scheme '{s}'"))),
        None => {
            return Err(unreachable(
                url,
                "URL needs a scheme, e.g. http://host:port",
            ))
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| unreachable(url, "URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(unreachable(url, "user info in URLs is not supported"));
    }
    let path_and_query = if full {
        Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
    } else {
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(unreachable(
                url,
                "a base URL is scheme://host:port only (no path or query)",
            ));
        }
        None
    };
    Ok(Target {
        transport,
        authority,
        path_and_query,
    })
}

/// The innermost cause of an error, which is the readable one ("Connection refused ...").
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Client {
    /// A client with its own connection pool, [`DEFAULT_TIMEOUT`] and [`DEFAULT_MAX_BODY`].
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // Names without a TS-0009 spelling (`header_spelling`) in title case: names are
            // case-insensitive (RFC 9110), but some receivers compare them as written.
            .http1_title_case_headers(true)
            .build(connector);
        Self {
            http,
            https: None,
            coap: Default::default(),
            dtls: None,
            mqtt: Default::default(),
            mqtt_settings: None,
            websocket: Default::default(),
            tls_settings: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Uses these TLS credentials and trust for `https` URLs (its own connection pool).
    pub fn with_tls(mut self, settings: TlsSettings) -> Self {
        self.tls_settings = Some(std::sync::Arc::new(settings.clone()));
        self.websocket = Default::default();
        let connector = tls::TlsConnector {
            settings: std::sync::Arc::new(settings),
            handshake_timeout: self.timeout,
        };
        self.https = Some(
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .http1_title_case_headers(true)
                .build(connector),
        );
        self
    }

    /// Uses these DTLS credentials and trust (a context from
    /// `m2m_security::tls::dtls_client_context`) for `coaps` URLs.
    pub fn with_dtls(mut self, settings: TlsSettings) -> Self {
        self.dtls = Some(std::sync::Arc::new(settings));
        self.coap = Default::default();
        self
    }

    /// Uses these credentials, trust and CSE-ID for `mqtts` URLs (the MQTT binding, TS-0010).
    pub fn with_mqtt(mut self, settings: MqttSettings) -> Self {
        self.mqtt_settings = Some(std::sync::Arc::new(settings));
        self.mqtt = Default::default();
        self
    }

    /// Sets the per-request timeout (connect, send, and reading the whole response).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest response body accepted; a larger one is a 5103 error.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Sends `req` to the CSE at `base_url` (`http://host:port`, trailing slash allowed).
    /// The request path comes from `req.to` (TS-0009 table 6.2.2.1-1), the query from its
    /// parameters and filter criteria.
    pub async fn send(&self, base_url: &str, req: &Request) -> M2mResult<Response> {
        if mqtt::is_mqtt(base_url) {
            return self.send_mqtt(base_url, req, Serialization::Json).await;
        }
        if websocket::is_websocket(base_url) {
            return self.send_websocket(base_url, req).await;
        }
        if coap::is_coap(base_url) {
            let dtls = self.dtls.as_deref();
            return self
                .coap
                .send(base_url, false, req, dtls, self.timeout)
                .await;
        }
        let target = parse_url(base_url, false)?;
        self.dispatch(base_url, target, req, Serialization::Json)
            .await
    }

    /// Sends `req` to exactly the path and query of a full URL
    /// (`http://host:port/path?query`), e.g. a notification target from an AE's
    /// pointOfAccess. The HTTP method follows the operation (NOTIFY and CREATE are POST);
    /// `req.to` is then only informative and the request's own query parameters are not sent.
    ///
    /// A `ct` key in the URL's query (`?ct=cbor`, TS-0004 clause 7.5.1.2.2) chooses the
    /// serialization and is not sent.
    pub async fn send_to_url(&self, url: &str, req: &Request) -> M2mResult<Response> {
        let (url, ser) = m2m_core::serialization::split_ct(url);
        self.send_to_url_as(&url, req, ser.unwrap_or_default())
            .await
    }

    /// [`Client::send_to_url`] in a given serialization (over HTTP; CoAP sends JSON).
    pub async fn send_to_url_as(
        &self,
        url: &str,
        req: &Request,
        ser: Serialization,
    ) -> M2mResult<Response> {
        if mqtt::is_mqtt(url) {
            return self.send_mqtt(url, req, ser).await;
        }
        if websocket::is_websocket(url) {
            return self.send_websocket(url, req).await;
        }
        if coap::is_coap(url) {
            let dtls = self.dtls.as_deref();
            return self.coap.send(url, true, req, dtls, self.timeout).await;
        }
        let target = parse_url(url, true)?;
        self.dispatch(url, target, req, ser).await
    }

    async fn send_websocket(&self, url: &str, req: &Request) -> M2mResult<Response> {
        self.websocket
            .send(
                url,
                req,
                self.tls_settings.as_deref(),
                self.timeout,
                self.max_body,
            )
            .await
    }

    async fn send_mqtt(&self, url: &str, req: &Request, ser: Serialization) -> M2mResult<Response> {
        self.mqtt
            .send(
                url,
                req,
                self.mqtt_settings.as_deref(),
                ser,
                self.timeout,
                self.max_body,
            )
            .await
    }

    async fn dispatch(
        &self,
        url: &str,
        target: Target,
        req: &Request,
        ser: Serialization,
    ) -> M2mResult<Response> {
        let scheme = match target.transport {
            Transport::Http => "http",
            Transport::Https => "https",
        };
        let encoded = encode_request(req, scheme, target.authority.as_str(), ser)?;
        let (mut parts, body) = encoded.into_parts();
        if let Some(pq) = target.path_and_query {
            parts.uri = Uri::builder()
                .scheme(scheme)
                .authority(target.authority.clone())
                .path_and_query(pq)
                .build()
                .map_err(|e| unreachable(url, format_args!("invalid URL: {e}")))?;
        }
        parts.extensions = header_spelling::extensions().await.clone();
        let http_req = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let (parts, body) = self.exchange(url, target.transport, http_req).await?;
            decode_response(parts.status, &parts.headers, &body)
                .map_err(|e| unreachable(url, format_args!("malformed response: {}", e.dbg)))
        };
        self.within_timeout(url, exchange).await
    }

    /// A plain GET of `url` (http or https, over this client's TLS): the body of a 200 answer,
    /// at most [`Client::max_body`] bytes. For what a device fetches that is not a oneM2M
    /// resource, such as a trust anchor certificate (TS-0003 clause 8.3.9.9.7).
    pub async fn fetch(&self, url: &str) -> M2mResult<Bytes> {
        let target = parse_url(url, true)?;
        let scheme = match target.transport {
            Transport::Http => "http",
            Transport::Https => "https",
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(target.authority.clone())
            .path_and_query(
                target
                    .path_and_query
                    .clone()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            )
            .build()
            .map_err(|e| unreachable(url, format_args!("invalid URL: {e}")))?;
        let req = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(url, format_args!("invalid request: {e}")))?;
        let exchange = async {
            let (parts, body) = self.exchange(url, target.transport, req).await?;
            if parts.status != http::StatusCode::OK {
                return Err(unreachable(url, format_args!("answered {}", parts.status)));
            }
            Ok(body)
        };
        self.within_timeout(url, exchange).await
    }

    /// One HTTP exchange: the answer's head and its body, at most `max_body` bytes.
    async fn exchange(
        &self,
        url: &str,
        transport: Transport,
        http_req: http::Request<Full<Bytes>>,
    ) -> M2mResult<(http::response::Parts, Bytes)> {
        let max_body = self.max_body;
        let rsp = match transport {
            Transport::Http => self.http.request(http_req).await,
            Transport::Https => match &self.https {
                Some(https) => https.request(http_req).await,
                None => {
                    return Err(unreachable(
                        url,
                        "https needs TLS credentials (Client::with_tls)",
                    ))
                }
            },
        }
        .map_err(|e| {
            if e.is_connect() {
                unreachable(url, format_args!("cannot connect: {}", root_cause(&e)))
            } else {
                unreachable(
                    url,
                    format_args!("HTTP exchange failed: {}", root_cause(&e)),
                )
            }
        })?;
        let (parts, body) = rsp.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    unreachable(
                        url,
                        format_args!("response body larger than {max_body} bytes"),
                    )
                } else {
                    unreachable(
                        url,
                        format_args!("cannot read response body: {}", root_cause(&*e)),
                    )
                }
            })?
            .to_bytes();
        Ok((parts, body))
    }

    /// `exchange`, or 5103 after this client's timeout.
    async fn within_timeout<T>(
        &self,
        url: &str,
        exchange: impl std::future::Future<Output = M2mResult<T>>,
    ) -> M2mResult<T> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(
                url,
                format_args!("no response within {:?}", self.timeout),
            )),
        }
    }
}

/// A request identifier unique within this process and very likely across processes:
/// `<pid>-<start time>-<counter>` in hex.
pub fn next_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}-{:x}-{n:x}",
        std::process::id(),
        start & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://localhost",
        ] {
            let t = parse_url(ok, false).unwrap();
            assert_eq!(t.transport, Transport::Http);
            assert!(t.path_and_query.is_none());
        }
        assert_eq!(
            parse_url("https://127.0.0.1:8443", false)
                .unwrap()
                .transport,
            Transport::Https
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:8080",
            "http://h/cse-in",
            "http://u:p@h:1",
            "",
            "http://",
        ] {
            let e = parse_url(bad, false).unwrap_err();
            assert_eq!(e.rsc, ResponseStatusCode::TargetNotReachable, "{bad}");
            assert!(e.dbg.starts_with(bad), "{bad}: {}", e.dbg);
        }
    }

    #[test]
    fn full_urls_keep_path_and_query() {
        let t = parse_url("http://10.0.0.1:9000/ntfy/a?x=1&y=2", true).unwrap();
        assert_eq!(t.authority.as_str(), "10.0.0.1:9000");
        assert_eq!(t.path_and_query.unwrap().as_str(), "/ntfy/a?x=1&y=2");
        let t = parse_url("http://10.0.0.1:9000", true).unwrap();
        assert_eq!(t.path_and_query.unwrap().as_str(), "/");
    }

    #[test]
    fn request_ids_are_unique() {
        let a = next_request_id();
        let b = next_request_id();
        assert_ne!(a, b);
    }
}
