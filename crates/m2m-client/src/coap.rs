//! The `coap` and `coaps` transports (TS-0008 binding, DTLS 1.2 for `coaps`): a request primitive
//! as a confirmable CoAP request, retransmitted until acknowledged (RFC 7252 clause 4.2), the
//! response piggybacked or separate, large payloads in Block1/Block2 blocks (RFC 7959).
//!
//! One association per server, kept open and reused; requests to one server go one at a time
//! (NSTART = 1, RFC 7252 clause 4.7). A broken association is opened again once.

use crate::tls::TlsSettings;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use m2m_core::coap_binding::{self, decode_uint, encode_uint};
use m2m_core::{M2mError, M2mResult, Request, Response, ResponseStatusCode};
use m2m_transport::DatagramChannel;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// ACK_TIMEOUT of RFC 7252 clause 4.8 (the random factor is left out: one request at a time).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// MAX_RETRANSMIT of RFC 7252 clause 4.8.
const MAX_RETRANSMIT: u32 = 4;
/// Block size of the requests this client sends in blocks (SZX 6: 1024 bytes).
const SZX: u8 = 6;
const BLOCK: usize = 1024;

/// Whether a URL scheme is CoAP's.
pub(crate) fn is_coap(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("coap://") || lower.starts_with("coaps://")
}

/// A CoAP URL split: scheme, server, and the Uri-Path segments of a full URL.
struct CoapUrl {
    secure: bool,
    host: String,
    port: u16,
    path: Vec<String>,
}

fn unreachable(url: &str, why: impl std::fmt::Display) -> M2mError {
    M2mError::new(
        ResponseStatusCode::TargetNotReachable,
        format!("{url}: {why}"),
    )
}

fn parse(url: &str) -> M2mResult<CoapUrl> {
    let trimmed = url.trim();
    let (secure, rest) = match trimmed.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("coaps") => (true, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("coap") => (false, rest),
        _ => return Err(unreachable(url, "not a coap:// or coaps:// URL")),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(unreachable(url, "user info in URLs is not supported"));
    }
    let default_port = if secure { 5684 } else { 5683 };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| unreachable(url, "invalid port"))
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        // An IPv6 literal: [addr] or [addr]:port.
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| unreachable(url, "unclosed IPv6 literal"))?;
        match after.strip_prefix(':') {
            Some(p) => (addr.to_owned(), port_of(p)?),
            None if after.is_empty() => (addr.to_owned(), default_port),
            None => return Err(unreachable(url, "invalid authority")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), port_of(p)?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(unreachable(url, "URL has no host"));
    }
    let path = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(CoapUrl {
        secure,
        host,
        port,
        path,
    })
}

/// One server's association, opened on first use; its lock serializes the exchanges.
type Slot = Arc<Mutex<Option<DatagramChannel>>>;

/// The associations of a client, one per server and scheme (`coaps`: true).
#[derive(Default)]
pub(crate) struct CoapTransport {
    channels: std::sync::Mutex<HashMap<(bool, SocketAddr), Slot>>,
}

impl std::fmt::Debug for CoapTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoapTransport")
    }
}

impl CoapTransport {
    /// Sends `req` to the CSE at a base URL (`full = false`: the path comes from `req.to`) or
    /// to exactly a full URL's path (a notification target).
    pub(crate) async fn send(
        &self,
        url: &str,
        full: bool,
        req: &Request,
        dtls: Option<&TlsSettings>,
        timeout: Duration,
    ) -> M2mResult<Response> {
        let target = parse(url)?;
        if !full && !target.path.is_empty() {
            return Err(unreachable(
                url,
                "a base URL is scheme://host:port only (no path)",
            ));
        }
        let mut packet = coap_binding::encode_request(req)?;
        if full {
            packet.clear_option(CoapOption::UriPath);
            packet.clear_option(CoapOption::UriQuery);
            for seg in &target.path {
                packet.add_option(CoapOption::UriPath, seg.clone().into_bytes());
            }
        }
        if target.host.parse::<std::net::IpAddr>().is_err() {
            packet.add_option(CoapOption::UriHost, target.host.clone().into_bytes());
        }
        let server = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| unreachable(url, format_args!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| unreachable(url, "cannot resolve"))?;
        // Whether an association exists when the time is up: if not, the handshake is what did
        // not finish (a wrong key under CCM_8 looks so: the server drops the Finished unanswered).
        let associated = std::sync::atomic::AtomicBool::new(false);
        let exchange = async {
            let slot = self.slot(target.secure, server);
            let mut channel = slot.lock().await;
            // A kept association may have ended on the server's side: one fresh attempt.
            for attempt in 0..2 {
                if channel.is_none() {
                    *channel = Some(open(url, &target, server, dtls, timeout).await?);
                }
                let ch = channel.as_mut().expect("opened above");
                associated.store(true, std::sync::atomic::Ordering::Relaxed);
                match exchange(ch, &packet).await {
                    Ok(p) => return Ok(p),
                    Err(e) if attempt == 0 => {
                        tracing::debug!("coap exchange with {server} failed ({e}); reopening");
                        *channel = None;
                    }
                    Err(e) => {
                        *channel = None;
                        return Err(unreachable(url, e));
                    }
                }
            }
            Err(unreachable(url, "no response"))
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) if target.secure && !associated.load(std::sync::atomic::Ordering::Relaxed) => {
                return Err(unreachable(url, "DTLS handshake timed out"))
            }
            Err(_) => {
                return Err(unreachable(
                    url,
                    format_args!("no response within {timeout:?}"),
                ))
            }
        };
        coap_binding::decode_response(&response)
            .map_err(|e| unreachable(url, format_args!("malformed response: {}", e.dbg)))
    }

    fn slot(&self, secure: bool, server: SocketAddr) -> Slot {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry((secure, server)).or_default())
    }
}

async fn open(
    url: &str,
    target: &CoapUrl,
    server: SocketAddr,
    dtls: Option<&TlsSettings>,
    timeout: Duration,
) -> M2mResult<DatagramChannel> {
    if !target.secure {
        return DatagramChannel::plain(server)
            .await
            .map_err(|e| unreachable(url, e));
    }
    let settings =
        dtls.ok_or_else(|| unreachable(url, "coaps needs DTLS credentials (Client::with_dtls)"))?;
    let check = settings.check_for(&target.host);
    DatagramChannel::dtls(&settings.context, server, &check, timeout)
        .await
        .map_err(|e| unreachable(url, e))
}

/// One request (in Block1 blocks if its payload is large), its response (reassembled from Block2
/// blocks if large).
async fn exchange(ch: &mut DatagramChannel, request: &Packet) -> Result<Packet, String> {
    let mut response = if request.payload.len() > BLOCK {
        let mut last = None;
        let blocks = request.payload.len().div_ceil(BLOCK);
        for num in 0..blocks {
            let mut part = request.clone();
            let end = ((num + 1) * BLOCK).min(request.payload.len());
            part.payload = request.payload[num * BLOCK..end].to_vec();
            let more = num + 1 < blocks;
            part.add_option(
                CoapOption::Block1,
                encode_uint((num as u64) << 4 | u64::from(more) << 3 | u64::from(SZX)),
            );
            let r = confirmable(ch, &part).await?;
            if more && r.header.code != MessageClass::Response(ResponseType::Continue) {
                return Ok(r); // refused before the end (too large, incomplete)
            }
            last = Some(r);
        }
        last.expect("at least two blocks")
    } else {
        confirmable(ch, request).await?
    };
    // Block2: ask for the next blocks while the server says more follow.
    let mut payload = response.payload.clone();
    while let Some(v) = response
        .get_first_option(CoapOption::Block2)
        .and_then(|v| decode_uint(v))
    {
        if v & 8 == 0 {
            break;
        }
        let szx = (v & 7) as u8;
        let next = (v >> 4) + 1;
        if payload.len() > 16 * 1024 * 1024 {
            return Err("response larger than 16 MiB".into());
        }
        let mut again = request.clone();
        again.payload.clear();
        again.clear_option(CoapOption::Block1);
        again.add_option(CoapOption::Block2, encode_uint(next << 4 | u64::from(szx)));
        let part = confirmable(ch, &again).await?;
        payload.extend_from_slice(&part.payload);
        response = part;
    }
    response.payload = payload;
    Ok(response)
}

/// Sends `request` as a confirmable message until acknowledged; returns the response, piggybacked
/// or separate (then acknowledged).
async fn confirmable(ch: &mut DatagramChannel, request: &Packet) -> Result<Packet, String> {
    let mut p = request.clone();
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = rand::random();
    let token: [u8; 4] = rand::random();
    p.set_token(token.to_vec());
    let bytes = p.to_bytes_unlimited().map_err(|e| e.to_string())?;
    let mut wait = ACK_TIMEOUT;
    let mut acknowledged = false;
    for _ in 0..=MAX_RETRANSMIT {
        if !acknowledged {
            ch.send(&bytes).await.map_err(|e| e.to_string())?;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(d) = ch.recv(left).await.map_err(|e| e.to_string())? else {
                break;
            };
            let Ok(r) = Packet::from_bytes(&d) else {
                continue;
            };
            let ours_by_id = r.header.message_id == p.header.message_id;
            match r.header.get_type() {
                MessageType::Reset if ours_by_id => {
                    return Err("the server reset the exchange".into())
                }
                MessageType::Acknowledgement if ours_by_id => {
                    if r.header.code == MessageClass::Empty {
                        acknowledged = true; // a separate response follows
                        continue;
                    }
                    return Ok(r);
                }
                MessageType::Confirmable | MessageType::NonConfirmable
                    if r.get_token() == p.get_token() =>
                {
                    if r.header.get_type() == MessageType::Confirmable {
                        let mut ack = Packet::new();
                        ack.header.code = MessageClass::Empty; // Packet::new() is a GET
                        ack.header.set_type(MessageType::Acknowledgement);
                        ack.header.message_id = r.header.message_id;
                        if let Ok(b) = ack.to_bytes_unlimited() {
                            let _ = ch.send(&b).await;
                        }
                    }
                    return Ok(r);
                }
                _ => continue,
            }
        }
        wait *= 2;
    }
    Err("no acknowledgement after retransmissions".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_server_and_path() {
        let u = parse("coaps://127.0.0.1:5684/cse-in/lock/state").unwrap();
        assert!(u.secure);
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 5684));
        assert_eq!(u.path, ["cse-in", "lock", "state"]);
        let u = parse("coap://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.secure), ("::1", 5683, false));
        let u = parse("COAPS://gw.example.com").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("gw.example.com", 5684));
        assert!(parse("http://x").is_err());
        assert!(parse("coap://u@x").is_err());
        assert!(parse("coap://x:notaport").is_err());
    }
}
