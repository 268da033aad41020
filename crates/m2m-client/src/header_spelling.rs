//! The header names of the requests this client writes, spelled as TS-0009 clause 6.4 writes
//! them (`X-M2M-Origin`, `X-M2M-RI`, `X-M2M-RVI`...).
//!
//! Header names are case-insensitive (RFC 9110 clause 5.1), but some receivers compare them as
//! written: a notification server that keeps the headers in a plain dictionary finds
//! `X-M2M-RVI` only under that spelling. hyper keeps names in lower case and writes them in
//! lower or title case (`X-M2m-Rvi`); it writes a chosen spelling only from the case map its own
//! HTTP/1 parser records (`preserve_header_case`), a type it does not export. So this module
//! has hyper parse, once, a request head spelled as TS-0009 writes, keeps the extensions that
//! parse produced, and every request the client sends carries a copy of them. A name missing
//! from that map is written in title case, as before.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use m2m_core::http_binding::TS_SPELLING;
use std::convert::Infallible;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

static SPELLING: OnceCell<http::Extensions> = OnceCell::const_new();

/// Request extensions that make hyper write the names of [`TS_SPELLING`] as spelled there.
pub(crate) async fn extensions() -> &'static http::Extensions {
    SPELLING.get_or_init(learn).await
}

/// Parses a request head naming every header of [`TS_SPELLING`] with hyper's HTTP/1 server
/// (in memory) and returns the extensions of the parsed request. Empty extensions (title
/// case) if the parse fails, which only a hyper that stopped recording case would do.
async fn learn() -> http::Extensions {
    let mut head = String::from("POST / HTTP/1.1\r\n");
    for name in TS_SPELLING.iter().filter(|n| **n != "Content-Length") {
        head.push_str(name);
        head.push_str(": x\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");

    // The whole head fits the duplex buffer, so the write below completes before the
    // connection is first polled (a smaller buffer would wait on it forever).
    let (mut near, far) = tokio::io::duplex(head.len() + 1024);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        if let Some(tx) = crate::lock(&tx).take() {
            let _ = tx.send(req.into_parts().0.extensions);
        }
        async { Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new())) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(far), service);
    if near.write_all(head.as_bytes()).await.is_err() {
        return http::Extensions::default();
    }
    tokio::select! {
        parsed = rx => parsed.unwrap_or_default(),
        _ = conn => http::Extensions::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spelling_covers_every_header_the_binding_writes() {
        use m2m_core::http_binding as b;
        for name in [
            b::X_M2M_ORIGIN,
            b::X_M2M_RI,
            b::X_M2M_RVI,
            b::X_M2M_RSC,
            b::X_M2M_RTU,
            b::X_M2M_OT,
            b::X_M2M_RET,
            b::X_M2M_RST,
            b::X_M2M_OET,
            b::X_M2M_GID,
            b::X_M2M_EC,
            b::X_M2M_VSI,
            b::X_M2M_CTS,
            b::X_M2M_CTO,
            b::X_M2M_ATI,
        ] {
            assert!(
                TS_SPELLING.iter().any(|s| s.eq_ignore_ascii_case(name)),
                "{name} has no TS-0009 spelling"
            );
        }
    }
}
