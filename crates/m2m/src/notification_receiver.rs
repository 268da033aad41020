//! An AE's notification receiver at its pointOfAccess (TS-0004 clause 7.3.3.x: the Notify
//! procedure; TS-0009 HTTP binding): accepts NOTIFY requests carrying a `m2m:sgn` and hands each
//! over; answers anything else with a oneM2M error.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use m2m_core::http_binding;
use m2m_core::{M2mError, Operation, Response, ResponseStatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A notification is small; a CSE sending more is refused rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// One notification as received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    /// The From of the NOTIFY request (the notifying CSE).
    pub from: Option<String>,
    /// The content of `m2m:sgn`.
    pub sgn: Value,
}

impl Notification {
    /// A verification request (sent when a subscription is created), not an event.
    pub fn is_verification(&self) -> bool {
        self.sgn.get("vrq") == Some(&Value::Bool(true))
    }

    /// The `con` of the contentInstance an event notification carries, if any.
    pub fn content_instance_con(&self) -> Option<&Value> {
        self.sgn.pointer("/nev/rep/m2m:cin/con")
    }
}

/// Listens on `listen` (e.g. `127.0.0.1:0`); returns the bound address and the notifications.
pub async fn start(listen: &str) -> anyhow::Result<(SocketAddr, UnboundedReceiver<Notification>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("notification receiver: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(tx.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, rx))
}

async fn handle(
    tx: UnboundedSender<Notification>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let rqi = http_binding::request_identifier(&parts.headers);
    let rsp = match Limited::new(body, MAX_BODY).collect().await {
        Err(_) => Response::error(
            &M2mError::bad_request(format!("notification larger than {MAX_BODY} bytes")),
            rqi,
        ),
        Ok(body) => match accept(&parts, &body.to_bytes()) {
            Ok(note) => {
                let _ = tx.send(note);
                Response::new(ResponseStatusCode::Ok, rqi, None)
            }
            Err(e) => Response::error(&e, rqi),
        },
    };
    let (parts, body) = http_binding::encode_response(&rsp).into_parts();
    Ok(hyper::Response::from_parts(parts, Full::new(body)))
}

/// The notification in a request, or why it is not one.
fn accept(parts: &http::request::Parts, body: &[u8]) -> Result<Notification, M2mError> {
    let req =
        http_binding::decode_request(&parts.method, &parts.uri, &parts.headers, body, |_| false)?;
    if req.op != Operation::Notify {
        return Err(M2mError::new(
            ResponseStatusCode::OperationNotAllowed,
            "this is a notification receiver: NOTIFY only",
        ));
    }
    let sgn = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:sgn"))
        .filter(|s| s.is_object())
        .ok_or_else(|| M2mError::bad_request("the content is not a m2m:sgn notification"))?;
    Ok(Notification {
        at: Instant::now(),
        from: req.from,
        sgn: sgn.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::Request;
    use serde_json::json;

    async fn send(url: &str, op: Operation, pc: Option<Value>) -> Response {
        let mut req = Request::new(op, "phone", Some("/id-in".into()), "r1".to_owned());
        req.pc = pc;
        m2m_client::Client::new().send(url, &req).await.unwrap()
    }

    #[tokio::test]
    async fn notifications_pass_anything_else_gets_a_status_code() {
        let (addr, mut rx) = start("127.0.0.1:0").await.unwrap();
        let url = format!("http://{addr}");
        let sgn = json!({ "m2m:sgn": { "nev": { "rep": { "m2m:cin": { "con": "UNLOCKED" } }, "net": 3 }, "sur": "/id-in/sub1" } });
        assert_eq!(
            send(&url, Operation::Notify, Some(sgn)).await.rsc.code(),
            2000
        );
        let note = rx.recv().await.unwrap();
        assert_eq!(note.from.as_deref(), Some("/id-in"));
        assert_eq!(note.content_instance_con(), Some(&json!("UNLOCKED")));
        assert!(!note.is_verification());

        let rsp = send(&url, Operation::Retrieve, None).await;
        assert_eq!(rsp.rsc, ResponseStatusCode::OperationNotAllowed);
        let rsp = send(&url, Operation::Notify, Some(json!({ "m2m:cin": {} }))).await;
        assert_eq!(rsp.rsc.code(), 4000);
        assert!(rsp.dbg().unwrap().contains("m2m:sgn"));
        assert!(
            rx.try_recv().is_err(),
            "refused requests are not notifications"
        );
    }
}
