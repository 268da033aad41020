//! The client against a tiny hyper server on 127.0.0.1:0.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use m2m_client::Client;
use m2m_core::http_binding::{decode_request, encode_response};
use m2m_core::{M2mError, Operation, Request, ResourceType, Response, ResponseStatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type Handler = dyn Fn(http::Request<Bytes>) -> http::Response<Bytes> + Send + Sync;

/// Starts a server answering every request with `handler`; returns its address and a
/// counter of accepted TCP connections.
async fn serve(handler: Arc<Handler>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let conns2 = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let rsp = handler(http::Request::from_parts(parts, body));
                        let (parts, body) = rsp.into_parts();
                        Ok::<_, Infallible>(http::Response::from_parts(parts, Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

/// A response as a CSE answering in JSON writes it.
fn encode_json(resp: &Response) -> http::Response<Bytes> {
    encode_response(resp, m2m_core::serialization::Serialization::Json)
}

fn decode(req: &http::Request<Bytes>) -> Request {
    decode_request(req.method(), req.uri(), req.headers(), req.body(), |_| true).unwrap()
}

#[tokio::test]
async fn create_round_trip_reuses_the_connection() {
    let (addr, conns) = serve(Arc::new(|req| {
        let r = decode(&req);
        assert_eq!(r.op, Operation::Create);
        assert_eq!(r.to, "cse-in");
        assert_eq!(r.ty, Some(ResourceType::Ae));
        assert_eq!(r.from.as_deref(), Some("Cbench"));
        assert_eq!(req.uri().path(), "/cse-in");
        let mut pc = r.pc.clone().unwrap();
        pc["m2m:ae"]["aei"] = json!("Cbench");
        let mut rsp = Response::new(ResponseStatusCode::Created, r.rqi, Some(pc));
        rsp.rvi = r.rvi;
        rsp.location = Some("cse-in/bench".into());
        encode_response(&rsp, m2m_core::serialization::Serialization::Json)
    }))
    .await;
    let client = Client::new();
    let base = format!("http://{addr}/");
    for i in 0..3 {
        let mut req = Request::new(
            Operation::Create,
            "cse-in",
            Some("Cbench".into()),
            format!("rq{i}"),
        );
        req.ty = Some(ResourceType::Ae);
        req.pc =
            Some(json!({"m2m:ae": {"rn": "bench", "api": "Nbench", "rr": false, "srv": ["3"]}}));
        let rsp = client.send(&base, &req).await.unwrap();
        assert_eq!(rsp.rsc, ResponseStatusCode::Created);
        assert_eq!(rsp.rqi, format!("rq{i}"));
        assert_eq!(rsp.rvi.as_deref(), Some("3"));
        assert_eq!(rsp.location.as_deref(), Some("cse-in/bench"));
        assert_eq!(rsp.pc.unwrap()["m2m:ae"]["aei"], "Cbench");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "keep-alive connection reused"
    );
}

#[tokio::test]
async fn not_found_is_a_response_and_into_result_an_error() {
    let (addr, _) = serve(Arc::new(|req| {
        let r = decode(&req);
        assert_eq!(r.op, Operation::Retrieve);
        assert_eq!(req.uri().path(), "/~/id-in/nothing");
        assert_eq!(req.uri().query(), Some("rcn=1"));
        encode_json(&Response::error(
            &M2mError::not_found("no such resource"),
            r.rqi,
        ))
    }))
    .await;
    let mut req = Request::new(
        Operation::Retrieve,
        "/id-in/nothing",
        Some("C1".into()),
        "r",
    );
    req.rcn = Some(m2m_core::ResultContent::Attributes);
    let rsp = Client::new()
        .send(&format!("http://{addr}"), &req)
        .await
        .unwrap();
    assert_eq!(rsp.rsc, ResponseStatusCode::NotFound);
    assert_eq!(rsp.dbg(), Some("no such resource"));
    let err = rsp.into_result().unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::NotFound);
    assert_eq!(err.dbg, "no such resource");
}

#[tokio::test]
async fn send_to_url_uses_the_exact_path_and_query() {
    let (addr, _) = serve(Arc::new(|req| {
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/notify/ae1");
        assert_eq!(req.uri().query(), Some("k=v&x=1"));
        let r = decode(&req);
        assert_eq!(r.op, Operation::Notify);
        assert_eq!(r.from.as_deref(), Some("/id-in"));
        assert!(r.pc.unwrap().get("m2m:sgn").is_some());
        encode_json(&Response::new(ResponseStatusCode::Ok, r.rqi, None))
    }))
    .await;
    let mut req = Request::new(Operation::Notify, "Cae1", Some("/id-in".into()), "n1");
    req.pc = Some(json!({"m2m:sgn": {"sur": "/id-in/sub1", "vrq": true}}));
    let rsp = Client::new()
        .send_to_url(&format!("http://{addr}/notify/ae1?k=v&x=1"), &req)
        .await
        .unwrap();
    assert_eq!(rsp.rsc, ResponseStatusCode::Ok);
    assert_eq!(rsp.rqi, "n1");
}

#[tokio::test]
async fn connection_refused_is_target_not_reachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let req = Request::new(Operation::Retrieve, "cse-in", Some("C".into()), "r");
    let err = Client::new().send(&url, &req).await.unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(err.dbg.contains(&url), "{}", err.dbg);
    assert!(err.dbg.contains("cannot connect"), "{}", err.dbg);
}

#[tokio::test]
async fn timeout_is_target_not_reachable() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let client = Client::new().with_timeout(Duration::from_millis(200));
    assert_eq!(client.timeout(), Duration::from_millis(200));
    let req = Request::new(Operation::Retrieve, "cse-in", Some("C".into()), "r");
    let started = std::time::Instant::now();
    let err = client
        .send(&format!("http://{addr}"), &req)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(err.dbg.contains("no response within"), "{}", err.dbg);
}

#[tokio::test]
async fn malformed_and_oversized_responses_are_target_not_reachable() {
    let (addr, _) = serve(Arc::new(|req| {
        let body = match req.uri().path() {
            "/bad-json" => Bytes::from_static(b"{not json"),
            _ => Bytes::from(vec![b' '; 4096]),
        };
        http::Response::builder()
            .status(200)
            .header("x-m2m-rsc", "2000")
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }))
    .await;
    let base = format!("http://{addr}");
    let req = Request::new(Operation::Retrieve, "bad-json", Some("C".into()), "r");
    let err = Client::new().send(&base, &req).await.unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(err.dbg.contains("malformed response"), "{}", err.dbg);

    let req = Request::new(Operation::Retrieve, "big", Some("C".into()), "r");
    let err = Client::new()
        .with_max_body(1024)
        .send(&base, &req)
        .await
        .unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(err.dbg.contains("larger than 1024"), "{}", err.dbg);
}

#[tokio::test]
async fn non_onem2m_http_error_is_target_not_reachable() {
    let (addr, _) = serve(Arc::new(|_| {
        http::Response::builder()
            .status(502)
            .body(Bytes::from_static(b"bad gateway"))
            .unwrap()
    }))
    .await;
    let req = Request::new(Operation::Notify, "x", Some("C".into()), "r");
    let err = Client::new()
        .send_to_url(&format!("http://{addr}/x"), &req)
        .await
        .unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(err.dbg.contains("502"), "{}", err.dbg);
}

#[tokio::test]
async fn https_without_credentials_is_refused_clearly() {
    let req = Request::new(Operation::Retrieve, "cse-in", Some("C".into()), "r");
    let err = Client::new()
        .send("https://127.0.0.1:8443", &req)
        .await
        .unwrap_err();
    assert_eq!(err.rsc, ResponseStatusCode::TargetNotReachable);
    assert!(
        err.dbg.contains("https needs TLS credentials"),
        "{}",
        err.dbg
    );
}

/// Header names go out as TS-0009 spells them (`X-M2M-Origin`, `X-M2M-RI`), the others in
/// title case (`Content-Type`), as a receiver that compares them as written expects; read off
/// the wire, not through a parser that folds case.
#[tokio::test]
async fn header_names_go_out_as_ts_0009_spells_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let raw = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head ended early");
            head.extend_from_slice(&buf[..n]);
        }
        let ok = b"HTTP/1.1 200 OK\r\nX-M2M-RSC: 2000\r\nX-M2M-RI: r1\r\nContent-Length: 0\r\n\r\n";
        stream.write_all(ok).await.unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    let mut req = Request::new(Operation::Create, "cse-in", Some("Cae".into()), "r1");
    req.ty = Some(ResourceType::Container);
    req.rvi = Some("3".into());
    req.pc = Some(json!({"m2m:cnt": {"rn": "box"}}));
    let resp = Client::new()
        .send(&format!("http://{addr}"), &req)
        .await
        .unwrap();
    assert_eq!(resp.rsc, ResponseStatusCode::Ok);
    let head = raw.await.unwrap();
    let names = [
        "Content-Type: ",
        "X-M2M-Origin: Cae\r\n",
        "X-M2M-RI: r1\r\n",
        "X-M2M-RVI: 3\r\n",
        "Host: ",
    ];
    for name in names {
        assert!(head.contains(&format!("\r\n{name}")), "{name} in\n{head}");
    }
}
