//! The CoAP message layer of a server (RFC 7252, RFC 7959), below the TS-0008 mapping and above
//! the socket: what one session (a peer address, or a DTLS association) remembers between
//! messages. Pure logic: the caller reads datagrams, gives each to [`Exchanges::answer`] with the
//! function that answers a whole request, and sends what comes back.
//!
//! - A confirmable request is answered piggybacked on its ACK, a non-confirmable one by a
//!   non-confirmable response (TS-0008 clause 6.3.1); the token is echoed.
//! - Duplicates (same Message ID within the exchange lifetime) get the stored answer again,
//!   without running the request twice (RFC 7252 clause 4.5).
//! - Block-wise transfer (RFC 7959, TS-0008 clause 6.5): a request payload arrives in Block1
//!   blocks (each answered 2.31 Continue) and is answered once complete; a response payload
//!   larger than a block is sent in Block2 blocks, the later ones from the stored response.
//! - An empty confirmable message (a CoAP ping) is answered with a Reset; a request with an
//!   unknown critical option 4.02, one with a method that has no oneM2M operation 4.05.

use crate::coap_binding::{decode_uint, encode_uint, Refusal};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

/// EXCHANGE_LIFETIME of RFC 7252 clause 4.8.2: how long a Message ID is remembered.
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Answers remembered per session for deduplication.
const REMEMBERED: usize = 32;
/// The block size this server sends (SZX 6: 1024 bytes), the largest RFC 7959 allows.
const MAX_SZX: u8 = 6;

/// What a session remembers between messages.
#[derive(Default)]
pub struct Exchanges {
    /// (Message ID, when, the answer sent) of recent confirmable and non-confirmable requests.
    answered: VecDeque<(u16, Instant, Vec<u8>)>,
    /// A request payload arriving in Block1 blocks: its fingerprint and the bytes so far.
    upload: Option<(Vec<u8>, Vec<u8>)>,
    /// The last response too large for one message: the request's fingerprint and the response.
    download: Option<(Vec<u8>, Packet)>,
}

impl Exchanges {
    /// The datagram to send back for `datagram`, if any. `respond` answers one whole request
    /// (reassembled from its blocks, options checked) with a response (code, options,
    /// payload); `max_request` bounds a request payload.
    pub async fn answer<F, Fut>(
        &mut self,
        datagram: &[u8],
        max_request: usize,
        respond: F,
    ) -> Option<Vec<u8>>
    where
        F: FnOnce(Packet) -> Fut,
        Fut: Future<Output = Packet>,
    {
        let Ok(request) = Packet::from_bytes(datagram) else {
            // Not a CoAP message: nothing to answer (a Reset needs a Message ID we cannot read).
            return None;
        };
        let kind = request.header.get_type();
        if matches!(kind, MessageType::Acknowledgement | MessageType::Reset) {
            return None; // this server sends no confirmable messages of its own yet
        }
        if request.header.code == MessageClass::Empty {
            // A ping (RFC 7252 clause 4.3): a Reset answers it.
            let mut rst = Packet::new();
            rst.header.code = MessageClass::Empty; // Packet::new() is a GET
            rst.header.set_type(MessageType::Reset);
            rst.header.message_id = request.header.message_id;
            return rst.to_bytes_unlimited().ok();
        }
        let mid = request.header.message_id;
        self.answered
            .retain(|(_, at, _)| at.elapsed() < EXCHANGE_LIFETIME);
        // A duplicate is answered as the first was (nothing, for one that got nothing), never
        // carried out twice.
        if let Some((_, _, bytes)) = self.answered.iter().find(|(m, _, _)| *m == mid) {
            return (!bytes.is_empty()).then(|| bytes.clone());
        }
        let mut reply = self.respond(&request, max_request, respond).await;
        if reply.header.code == MessageClass::Empty {
            // The request wanted no response (noResponse): a confirmable one is acknowledged,
            // empty, so that its sender stops retransmitting; a non-confirmable one gets nothing.
            if kind != MessageType::Confirmable {
                self.remember(mid, Vec::new());
                return None;
            }
            reply = Packet::new();
            reply.header.code = MessageClass::Empty;
            reply.header.set_type(MessageType::Acknowledgement);
            reply.header.message_id = mid;
        } else {
            reply.header.set_type(match kind {
                MessageType::Confirmable => MessageType::Acknowledgement,
                _ => MessageType::NonConfirmable,
            });
            reply.header.message_id = match kind {
                MessageType::Confirmable => mid,
                _ => rand::random(),
            };
            reply.set_token(request.get_token().to_vec());
        }
        let bytes = reply.to_bytes_unlimited().ok()?;
        self.remember(mid, bytes.clone());
        Some(bytes)
    }

    /// Keeps what a Message ID was answered with (empty: nothing) for its duplicates.
    fn remember(&mut self, mid: u16, bytes: Vec<u8>) {
        if self.answered.len() >= REMEMBERED {
            self.answered.pop_front();
        }
        self.answered.push_back((mid, Instant::now(), bytes));
    }

    /// The response to one request message (code, options, payload).
    async fn respond<F, Fut>(&mut self, request: &Packet, max: usize, respond: F) -> Packet
    where
        F: FnOnce(Packet) -> Fut,
        Fut: Future<Output = Packet>,
    {
        if let Err(refusal) = crate::coap_binding::check_options(request) {
            return refused(refusal);
        }
        let fingerprint = fingerprint(request);
        // A later block of a response already computed.
        if let Some(block) = block_option(request, CoapOption::Block2) {
            if block.num > 0 {
                return match &self.download {
                    Some((f, full)) if *f == fingerprint => slice(full, block),
                    _ => code_only(ResponseType::RequestEntityIncomplete),
                };
            }
        }
        // A request payload in blocks: collect until the last one.
        let mut whole = request.clone();
        if let Some(block) = block_option(request, CoapOption::Block1) {
            let offset = block.num as usize * block.size();
            let collected = match self.upload.take() {
                Some((f, bytes)) if f == fingerprint && bytes.len() == offset => bytes,
                _ if offset == 0 => Vec::new(),
                _ => return code_only(ResponseType::RequestEntityIncomplete),
            };
            let mut collected = collected;
            collected.extend_from_slice(&request.payload);
            if collected.len() > max {
                return code_only(ResponseType::RequestEntityTooLarge);
            }
            if block.more {
                self.upload = Some((fingerprint, collected));
                let mut cont = code_only(ResponseType::Continue);
                cont.add_option(CoapOption::Block1, block.encode());
                return cont;
            }
            whole.payload = collected;
            whole.clear_option(CoapOption::Block1);
        }
        let mut full = respond(whole).await;
        if let Some(block) = block_option(request, CoapOption::Block1) {
            full.add_option(CoapOption::Block1, block.encode());
        }
        let szx = block_option(request, CoapOption::Block2).map_or(MAX_SZX, |b| b.szx.min(MAX_SZX));
        if full.payload.len() <= 1usize << (szx + 4) {
            return full;
        }
        let first = slice(
            &full,
            Block {
                num: 0,
                more: false,
                szx,
            },
        );
        self.download = Some((fingerprint, full));
        first
    }
}

/// Block `block` of a stored response, with its Block2 and Size2 options.
fn slice(full: &Packet, block: Block) -> Packet {
    let size = block.size();
    let start = block.num as usize * size;
    if start >= full.payload.len() && !(start == 0 && full.payload.is_empty()) {
        return code_only(ResponseType::BadOption);
    }
    let end = (start + size).min(full.payload.len());
    let mut p = full.clone();
    p.payload = full.payload[start..end].to_vec();
    p.add_option(
        CoapOption::Block2,
        Block {
            num: block.num,
            more: end < full.payload.len(),
            szx: block.szx,
        }
        .encode(),
    );
    p.add_option(CoapOption::Size2, encode_uint(full.payload.len() as u64));
    p
}

/// What identifies one request across its blocks: method, path, query and oneM2M-RQI.
fn fingerprint(p: &Packet) -> Vec<u8> {
    let mut f = vec![u8::from(p.header.code)];
    for n in [11u16, 15, crate::coap_binding::option::RQI] {
        if let Some(values) = p.get_option(CoapOption::from(n)) {
            for v in values {
                f.extend_from_slice(&(v.len() as u16).to_be_bytes());
                f.extend_from_slice(v);
            }
        }
        f.push(0xFF);
    }
    f
}

/// A Block1/Block2 option value (RFC 7959 clause 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    num: u32,
    more: bool,
    szx: u8,
}

impl Block {
    fn size(self) -> usize {
        1usize << (self.szx + 4)
    }
    fn encode(self) -> Vec<u8> {
        encode_uint(u64::from(self.num) << 4 | u64::from(self.more) << 3 | u64::from(self.szx))
    }
}

fn block_option(p: &Packet, which: CoapOption) -> Option<Block> {
    let v = decode_uint(p.get_first_option(which)?)?;
    let szx = (v & 7) as u8;
    // SZX 7 is reserved (RFC 7959 clause 2.2); the number has at most 20 bits.
    (szx < 7 && v >> 4 <= 0xF_FFFF).then_some(Block {
        num: (v >> 4) as u32,
        more: v & 8 != 0,
        szx,
    })
}

fn code_only(code: ResponseType) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    p
}

/// A message that is no oneM2M request: the CoAP code alone, with a diagnostic payload.
fn refused(refusal: Refusal) -> Packet {
    let (code, why) = match refusal {
        Refusal::BadOption(_) => (ResponseType::BadOption, "unrecognized critical option"),
        Refusal::MethodNotAllowed => (
            ResponseType::MethodNotAllowed,
            "this method has no oneM2M operation",
        ),
    };
    let mut p = code_only(code);
    // RFC 7252 clause 5.5.2: a diagnostic payload, UTF-8, no Content-Format.
    p.payload = why.as_bytes().to_vec();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_options_round_trip_and_refuse_the_reserved_size() {
        for b in [
            Block {
                num: 0,
                more: true,
                szx: 6,
            },
            Block {
                num: 5,
                more: false,
                szx: 2,
            },
            Block {
                num: 0xF_FFFF,
                more: true,
                szx: 0,
            },
        ] {
            let mut p = Packet::new();
            p.add_option(CoapOption::Block2, b.encode());
            assert_eq!(block_option(&p, CoapOption::Block2), Some(b));
        }
        let mut p = Packet::new();
        p.add_option(CoapOption::Block2, vec![7]);
        assert_eq!(block_option(&p, CoapOption::Block2), None);
    }

    #[test]
    fn a_large_response_is_cut_into_blocks_that_say_what_follows() {
        let mut full = Packet::new();
        full.header.code = MessageClass::Response(ResponseType::Content);
        full.payload = (0..2500u32).map(|i| i as u8).collect();
        let mut got = Vec::new();
        for num in 0.. {
            let p = slice(
                &full,
                Block {
                    num,
                    more: false,
                    szx: 6,
                },
            );
            let b = block_option(&p, CoapOption::Block2).unwrap();
            got.extend_from_slice(&p.payload);
            assert_eq!(
                decode_uint(p.get_first_option(CoapOption::Size2).unwrap()),
                Some(2500)
            );
            if !b.more {
                break;
            }
        }
        assert_eq!(got, full.payload);
        let past = slice(
            &full,
            Block {
                num: 9,
                more: false,
                szx: 6,
            },
        );
        assert_eq!(
            past.header.code,
            MessageClass::Response(ResponseType::BadOption)
        );
    }

    fn message(kind: MessageType, mid: u16) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(coap_lite::RequestType::Post);
        p.header.set_type(kind);
        p.header.message_id = mid;
        p.set_token(vec![7, 7]);
        p.to_bytes_unlimited().unwrap()
    }

    /// noResponse: a confirmable request gets an empty acknowledgement (its Message ID, no
    /// token, no options), also when it is retransmitted; a non-confirmable one gets nothing.
    #[test]
    fn a_request_that_wants_no_response_gets_an_empty_ack_or_nothing() {
        // Nothing here waits: one poll finishes each answer.
        fn now<T>(f: impl Future<Output = T>) -> T {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::pin!(f).poll(&mut cx) {
                std::task::Poll::Ready(v) => v,
                std::task::Poll::Pending => panic!("the answer waited"),
            }
        }
        let mut ex = Exchanges::default();
        let quiet = |_| async { crate::coap_binding::no_response() };
        let con = message(MessageType::Confirmable, 41);
        for _ in 0..2 {
            let ack = now(ex.answer(&con, 1024, quiet)).expect("an ACK");
            let ack = Packet::from_bytes(&ack).unwrap();
            assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
            assert_eq!(ack.header.code, MessageClass::Empty);
            assert_eq!(ack.header.message_id, 41);
            assert!(ack.get_token().is_empty() && ack.payload.is_empty());
        }
        let non = message(MessageType::NonConfirmable, 42);
        assert_eq!(now(ex.answer(&non, 1024, quiet)), None);
        // Its duplicate is not carried out again.
        let ran = std::cell::Cell::new(false);
        let again = |_| {
            ran.set(true);
            async { crate::coap_binding::no_response() }
        };
        assert_eq!(now(ex.answer(&non, 1024, again)), None);
        assert!(!ran.get(), "a duplicate NON was carried out twice");
    }
}
