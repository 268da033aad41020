//! Placeholder client (replaced by the real SDK from the `client` branch).
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HClient};
use hyper_util::rt::TokioExecutor;
use m2m_core::{http_binding, M2mError, M2mResult, Request, Response, ResponseStatusCode};
use std::time::Duration;

#[derive(Clone)]
pub struct Client {
    inner: HClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self {
            inner: HClient::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(10),
        }
    }
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    pub async fn send(&self, base_url: &str, req: &Request) -> M2mResult<Response> {
        let base = base_url.trim_end_matches('/');
        let (scheme, authority) = base.split_once("://").unwrap_or(("http", base));
        let hreq = http_binding::encode_request(req, scheme, authority)?;
        self.exec(hreq, base).await
    }
    pub async fn send_to_url(&self, url: &str, req: &Request) -> M2mResult<Response> {
        let mut hreq = http_binding::encode_request(req, "http", "localhost")?;
        *hreq.uri_mut() = url
            .parse()
            .map_err(|_| M2mError::bad_request(format!("bad URL {url}")))?;
        self.exec(hreq, url).await
    }
    async fn exec(&self, hreq: http::Request<Bytes>, target: &str) -> M2mResult<Response> {
        let unreachable = |why: String| {
            M2mError::new(
                ResponseStatusCode::TargetNotReachable,
                format!("{target}: {why}"),
            )
        };
        let (parts, body) = hreq.into_parts();
        let hreq = http::Request::from_parts(parts, Full::new(body));
        let fut = async {
            let resp = self
                .inner
                .request(hreq)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            http_binding::decode_response(parts.status, &parts.headers, &body)
                .map_err(|e| unreachable(e.dbg))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| unreachable("timeout".into()))?
    }
}
