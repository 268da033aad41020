//! The CoAP binding (TS-0008): request and response primitives to and from CoAP messages.
//!
//! Pure translation, like [`crate::http_binding`]; the message layer (confirmable messages,
//! deduplication, block-wise transfer) and DTLS live in the transport and the CSE. The message
//! codec is `coap-lite`; the oneM2M options, the Uri-Path forms of `To`, the Content-Formats and
//! the Response Status Code mapping are here:
//!
//! | what | TS-0008 clause |
//! |---|---|
//! | operations to methods (CREATE = POST with oneM2M-TY, NOTIFY = POST without) | 6.2.1 |
//! | Content-Format numbers of the oneM2M media types | 6.2.2.2 |
//! | `To` to Uri-Path (`~` SP-relative, `_` absolute), parameters in Uri-Query | 6.2.2.3 |
//! | the oneM2M options (numbers of V3.9.0) | 6.2.2.4 |
//! | Response Status Code to CoAP response code, the RSC in oneM2M-RSC | 6.2.4 |

use crate::error::{M2mError, M2mResult};
use crate::http_binding::{check_whole_primitive, decode_query_field, query_fields};
use crate::primitive::{Operation, Request, Response};
use crate::resource_type::ResourceType;
use crate::status::ResponseStatusCode as Rsc;
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};

/// The oneM2M CoAP options (TS-0008 table 6.2.2.4.0-1, numbers of V3.7.0 and later). Every one is
/// critical: a receiver that does not know one must refuse the message (RFC 7252 clause 5.4.1).
pub mod option {
    pub const FR: u16 = 279;
    pub const RQI: u16 = 283;
    pub const OT: u16 = 259;
    pub const RQET: u16 = 291;
    pub const RSET: u16 = 295;
    pub const OET: u16 = 299;
    pub const RTURI: u16 = 263;
    pub const EC: u16 = 303;
    pub const RSC: u16 = 307;
    pub const GID: u16 = 311;
    pub const TY: u16 = 267;
    pub const CTO: u16 = 319;
    pub const CTS: u16 = 323;
    pub const ATI: u16 = 327;
    pub const RVI: u16 = 271;
    pub const VSI: u16 = 331;
    pub const GTM: u16 = 335;
    pub const AUS: u16 = 339;
    pub const ASRI: u16 = 275;

    /// Every oneM2M option, for the critical-option check.
    pub const ALL: [u16; 19] = [
        FR, RQI, OT, RQET, RSET, OET, RTURI, EC, RSC, GID, TY, CTO, CTS, ATI, RVI, VSI, GTM, AUS,
        ASRI,
    ];
}

/// Content-Format numbers (TS-0008 table 6.2.2.2-1; 50 is application/json of RFC 7252).
pub mod content_format {
    pub const JSON: u16 = 50;
    pub const CBOR: u16 = 60;
    pub const XML: u16 = 41;
    pub const RES_JSON: u16 = 10001;
    pub const NTFY_JSON: u16 = 10003;
    pub const PREQ_JSON: u16 = 10007;
    pub const PRSP_JSON: u16 = 10009;
    pub const RES_CBOR: u16 = 10010;
    pub const NTFY_CBOR: u16 = 10011;
    pub const PREQ_CBOR: u16 = 10012;
    pub const PRSP_CBOR: u16 = 10013;
    pub const RES_XML: u16 = 10014;
    pub const NTFY_XML: u16 = 10002;
    pub const PREQ_XML: u16 = 10006;
    pub const PRSP_XML: u16 = 10008;

    /// The JSON formats this binding reads and writes.
    pub fn is_json(cf: u16) -> bool {
        matches!(cf, JSON | RES_JSON | NTFY_JSON | PREQ_JSON | PRSP_JSON)
    }

    /// The serialization of a Content-Format this binding reads and writes (JSON, CBOR, XML).
    pub fn serialization(cf: u64) -> Option<crate::serialization::Serialization> {
        use crate::serialization::Serialization;
        let cf = u16::try_from(cf).ok()?;
        if is_json(cf) {
            Some(Serialization::Json)
        } else if matches!(cf, CBOR | RES_CBOR | NTFY_CBOR | PREQ_CBOR | PRSP_CBOR) {
            Some(Serialization::Cbor)
        } else if matches!(cf, XML | RES_XML | NTFY_XML | PREQ_XML | PRSP_XML) {
            Some(Serialization::Xml)
        } else {
            None
        }
    }

    /// The Content-Format of a resource representation (or notification) in `ser`.
    pub fn of(ser: crate::serialization::Serialization, notify: bool) -> u16 {
        use crate::serialization::Serialization;
        match (ser, notify) {
            (Serialization::Json, false) => RES_JSON,
            (Serialization::Json, true) => NTFY_JSON,
            (Serialization::Cbor, false) => RES_CBOR,
            (Serialization::Cbor, true) => NTFY_CBOR,
            (Serialization::Xml, false) => RES_XML,
            (Serialization::Xml, true) => NTFY_XML,
        }
    }
}

/// The serialization a response to request `p` is written in: its Accept when this binding
/// writes it, else the request's own Content-Format, else JSON (TS-0008 clause 6.2.2.2).
pub fn response_serialization(p: &Packet) -> crate::serialization::Serialization {
    let of = |n: u16| {
        uint(p, n, "")
            .ok()
            .flatten()
            .and_then(content_format::serialization)
    };
    of(ACCEPT)
        .or_else(|| of(CONTENT_FORMAT))
        .unwrap_or_default()
}

/// Standard options (RFC 7252, 7959) this binding reads; the other critical ones are refused.
const URI_HOST: u16 = 3;
const URI_PORT: u16 = 7;
const URI_PATH: u16 = 11;
const CONTENT_FORMAT: u16 = 12;
const URI_QUERY: u16 = 15;
const ACCEPT: u16 = 17;
const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;
const SIZE1: u16 = 60;
const NO_RESPONSE: u16 = 258;

/// The options a request may carry here; any other critical option is a 4.02 Bad Option.
fn known_request_option(n: u16) -> bool {
    matches!(
        n,
        URI_HOST | URI_PORT | URI_PATH | CONTENT_FORMAT | URI_QUERY | ACCEPT | BLOCK2 | BLOCK1
    ) || n == SIZE1
        || n == NO_RESPONSE
        || option::ALL.contains(&n)
}

/// The first value of option `n`, if any.
fn first(p: &Packet, n: u16) -> Option<&[u8]> {
    p.get_first_option(CoapOption::from(n)).map(Vec::as_slice)
}

/// Option `n` as text.
fn text(p: &Packet, n: u16, name: &str) -> M2mResult<Option<String>> {
    first(p, n)
        .map(|v| {
            std::str::from_utf8(v)
                .map(str::to_owned)
                .map_err(|_| M2mError::bad_request(format!("option {name} is not valid text")))
        })
        .transpose()
}

/// A CoAP uint option value (RFC 7252 clause 3.2: big-endian, shortest form).
pub fn decode_uint(v: &[u8]) -> Option<u64> {
    if v.len() > 8 {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The shortest big-endian form of `n` (zero is no bytes).
pub fn encode_uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

fn uint(p: &Packet, n: u16, name: &str) -> M2mResult<Option<u64>> {
    first(p, n)
        .map(|v| {
            decode_uint(v)
                .ok_or_else(|| M2mError::bad_request(format!("option {name} is too long")))
        })
        .transpose()
}

/// The request identifier of a request, for the error answered when it cannot be decoded.
pub fn request_identifier(p: &Packet) -> String {
    first(p, option::RQI)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
        .to_owned()
}

/// Maps Uri-Path segments back to `To` (TS-0008 table 6.2.2.3-1).
/// No Uri-Path is the root, an empty `To` (as HTTP's `/`): a notification receiver's address.
pub fn to_from_segments(segments: &[String]) -> M2mResult<String> {
    // A '/' inside one option would make two segments of the address: ambiguous, refused.
    if segments.iter().any(|s| s.contains('/')) {
        return Err(M2mError::bad_request("a Uri-Path segment contains '/'"));
    }
    match segments.split_first() {
        None => Ok(String::new()),
        Some((first, rest)) if first == "~" => Ok(format!("/{}", rest.join("/"))),
        Some((first, rest)) if first == "_" => Ok(format!("//{}", rest.join("/"))),
        Some(_) => Ok(segments.join("/")),
    }
}

/// Maps `To` to Uri-Path segments.
pub fn segments_from_to(to: &str) -> Vec<String> {
    let (head, rest) = if let Some(rest) = to.strip_prefix("//") {
        (Some("_"), rest)
    } else if let Some(rest) = to.strip_prefix('/') {
        (Some("~"), rest)
    } else {
        (None, to)
    };
    head.into_iter()
        .map(str::to_owned)
        .chain(rest.split('/').map(str::to_owned))
        .collect()
}

/// Why a message cannot be a oneM2M request at all; answered with the CoAP code alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An unknown critical option (RFC 7252 clause 5.4.1): 4.02.
    BadOption(u16),
    /// A method with no oneM2M operation (FETCH, PATCH): 4.05.
    MethodNotAllowed,
}

/// Checks the options of a request before it is decoded.
pub fn check_options(p: &Packet) -> Result<(), Refusal> {
    for (n, _) in p.options() {
        if n % 2 == 1 && !known_request_option(*n) {
            return Err(Refusal::BadOption(*n));
        }
    }
    match p.header.code {
        MessageClass::Request(
            RequestType::Get | RequestType::Post | RequestType::Put | RequestType::Delete,
        ) => Ok(()),
        _ => Err(Refusal::MethodNotAllowed),
    }
}

/// The operation a request names (TS-0008 table 6.2.1-1): GET, PUT, DELETE, and POST as CREATE
/// with a oneM2M-TY option or NOTIFY without; `None` for other methods.
pub fn operation(p: &Packet) -> Option<Operation> {
    match p.header.code {
        MessageClass::Request(RequestType::Get) => Some(Operation::Retrieve),
        MessageClass::Request(RequestType::Put) => Some(Operation::Update),
        MessageClass::Request(RequestType::Delete) => Some(Operation::Delete),
        MessageClass::Request(RequestType::Post) => Some(
            if p.get_first_option(CoapOption::Unknown(option::TY))
                .is_some()
            {
                Operation::Create
            } else {
                Operation::Notify
            },
        ),
        _ => None,
    }
}

/// Decodes a CoAP request (reassembled if it came in blocks) into a request primitive (TS-0008
/// clause 6.2, receiver side). `is_attribute` tells which query fields are attribute conditions.
pub fn decode_request(p: &Packet, is_attribute: impl Fn(&str) -> bool) -> M2mResult<Request> {
    let rqi = text(p, option::RQI, "oneM2M-RQI")?
        .filter(|r| !r.is_empty())
        .ok_or_else(|| M2mError::bad_request("missing oneM2M-RQI option"))?;
    let from = text(p, option::FR, "oneM2M-FR")?;
    let segments = p
        .get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| {
                    String::from_utf8(s.clone())
                        .map_err(|_| M2mError::bad_request("Uri-Path is not valid UTF-8"))
                })
                .collect::<M2mResult<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let to = to_from_segments(&segments)?;
    let mut ser = crate::serialization::Serialization::Json;
    if !p.payload.is_empty() {
        match uint(p, CONTENT_FORMAT, "Content-Format")? {
            Some(cf) => {
                ser = content_format::serialization(cf).ok_or_else(|| {
                    M2mError::new(
                        Rsc::UnsupportedMediaType,
                        format!(
                            "Content-Format {cf} is not supported; use 50 or 10001 (JSON), 60 or 10010 (CBOR)"
                        ),
                    )
                })?;
            }
            None => {
                return Err(M2mError::new(
                    Rsc::UnsupportedMediaType,
                    "missing Content-Format",
                ))
            }
        }
    }
    if let Some(accept) = uint(p, ACCEPT, "Accept")? {
        if content_format::serialization(accept).is_none() {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                format!("Accept {accept} is not supported; this CSE answers JSON or CBOR"),
            ));
        }
    }
    let ty = match uint(p, option::TY, "oneM2M-TY")? {
        Some(t) => Some(ResourceType::parse_requested(&t.to_string())?),
        None => None,
    };
    let op = operation(p)
        .ok_or_else(|| M2mError::not_allowed("this CoAP method has no oneM2M operation"))?;
    let mut req = Request::new(op, to, from, rqi);
    req.ty = ty;
    req.rvi = text(p, option::RVI, "oneM2M-RVI")?;
    req.ot = text(p, option::OT, "oneM2M-OT")?;
    req.rqet = text(p, option::RQET, "oneM2M-RQET")?;
    req.rset = text(p, option::RSET, "oneM2M-RSET")?;
    req.oet = text(p, option::OET, "oneM2M-OET")?;
    req.gid = text(p, option::GID, "oneM2M-GID")?;
    req.vsi = text(p, option::VSI, "oneM2M-VSI")?;
    req.ec = uint(p, option::EC, "oneM2M-EC")?.map(|e| e.to_string());
    if let Some(rtu) = text(p, option::RTURI, "oneM2M-RTURI")? {
        req.rtu = Some(
            rtu.split('&')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    if let Some(queries) = p.get_option(CoapOption::UriQuery) {
        for q in queries {
            let q = std::str::from_utf8(q)
                .map_err(|_| M2mError::bad_request("Uri-Query is not valid UTF-8"))?;
            let (k, v) = q.split_once('=').unwrap_or((q, ""));
            // Lists are '+'-joined as in HTTP (TS-0009 clause 6.2.2.2), or repeated options.
            let v = v.replace('+', " ");
            decode_query_field(&mut req, k, &v, &is_attribute)?;
        }
    }
    if !p.payload.is_empty() {
        req.pc = Some(ser.decode(&p.payload)?);
    }
    check_whole_primitive(&req)?;
    Ok(req)
}

/// The CoAP response code of a Response Status Code (TS-0008 table 6.2.4-1). `op` decides the
/// codes the table gives per operation (2000: 2.05 for a RETRIEVE, 2.04 for a NOTIFY).
pub fn response_code(rsc: Rsc, op: Operation) -> ResponseType {
    use ResponseType as C;
    match rsc.code() {
        // 1002 is 2.01 when a <request> resource was made (TS-0008 table 6.2.4-1), as here.
        2001 | 1001 | 1002 => C::Created,
        2000 if op == Operation::Retrieve => C::Content,
        2000 if op == Operation::Notify => C::Changed,
        2000 => C::Content,
        2004 => C::Changed,
        2002 => C::Deleted,
        4004 | 4118 | 4119 | 4121 | 5103 | 5107 | 6003 | 6005 => C::NotFound,
        4005 => C::MethodNotAllowed,
        4015 => C::UnsupportedContentFormat,
        4008 | 6030 | 6031 => C::GatewayTimeout,
        4120 | 4122 => C::BadOption,
        5207 => C::NotAcceptable,
        4001 | 4125 | 5001 | 5206 => C::NotImplemented,
        4101
        | 4103
        | 4105..=4109
        | 4111..=4117
        | 4126..=4128
        | 5105
        | 5203
        | 5205
        | 5208
        | 5214
        | 5215
        | 5218
        | 5222 => C::Forbidden,
        4000..=4999 | 5106 | 5219 | 5220 | 6010 | 6022..=6024 | 6028 | 6029 => C::BadRequest,
        _ => C::InternalServerError,
    }
}

/// Encodes a response primitive as a CoAP response to a request of operation `op` (TS-0008
/// clause 6.2.3): code, options and payload in `ser`. The caller sets the message type, ID and
/// token.
/// What a request with Response Type noResponse gets: no response message. The message layer
/// (`coap_exchange`) turns it into an empty acknowledgement of a confirmable request and sends
/// nothing for a non-confirmable one.
pub fn no_response() -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Empty;
    p
}

pub fn encode_response(
    resp: &Response,
    op: Operation,
    ser: crate::serialization::Serialization,
) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(response_code(resp.rsc, op));
    // Always the RSC: several codes share each CoAP code, and originators read this first.
    p.add_option(
        CoapOption::Unknown(option::RSC),
        encode_uint(u64::from(resp.rsc.code())),
    );
    p.add_option(
        CoapOption::Unknown(option::RQI),
        resp.rqi.as_bytes().to_vec(),
    );
    if let Some(rvi) = &resp.rvi {
        p.add_option(CoapOption::Unknown(option::RVI), rvi.as_bytes().to_vec());
    }
    if let Some(ot) = &resp.ot {
        p.add_option(CoapOption::Unknown(option::OT), ot.as_bytes().to_vec());
    }
    if let Some(vsi) = &resp.vsi {
        p.add_option(CoapOption::Unknown(option::VSI), vsi.as_bytes().to_vec());
    }
    if let Some(rset) = &resp.rset {
        p.add_option(CoapOption::Unknown(option::RSET), rset.as_bytes().to_vec());
    }
    if let Some(cts) = resp.cts {
        p.add_option(
            CoapOption::Unknown(option::CTS),
            encode_uint(u64::from(cts)),
        );
    }
    if let Some(cto) = resp.cto {
        p.add_option(CoapOption::Unknown(option::CTO), encode_uint(cto));
    }
    if let Some(loc) = &resp.location {
        for seg in segments_from_to(loc) {
            p.add_option(CoapOption::LocationPath, seg.into_bytes());
        }
    }
    // A NOTIFY's 2000 carries no payload (table 6.2.4-1).
    let notify_ok = op == Operation::Notify && resp.rsc == Rsc::Ok;
    if let (Some(pc), false) = (&resp.pc, notify_ok) {
        // A content the asked serialization cannot write goes in JSON, which writes any.
        let (ser, payload) = match ser.encode(pc) {
            Ok(bytes) => (ser, bytes),
            Err(_) => (
                crate::serialization::Serialization::Json,
                serde_json::to_vec(pc).unwrap_or_default(),
            ),
        };
        p.add_option(
            CoapOption::ContentFormat,
            encode_uint(u64::from(content_format::of(ser, false))),
        );
        p.payload = payload;
    }
    p
}

/// Encodes a request primitive as a CoAP request (TS-0008 clause 6.2, originator side): method,
/// Uri-Path, Uri-Query and the oneM2M options. The caller sets the message type, ID and token,
/// and Uri-Host/Uri-Port when the server needs them.
pub fn encode_request(req: &Request) -> M2mResult<Packet> {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(match req.op {
        Operation::Create | Operation::Notify => RequestType::Post,
        Operation::Retrieve => RequestType::Get,
        Operation::Update => RequestType::Put,
        Operation::Delete => RequestType::Delete,
    });
    for seg in segments_from_to(&req.to) {
        p.add_option(CoapOption::UriPath, seg.into_bytes());
    }
    for (k, v) in query_fields(req) {
        p.add_option(
            CoapOption::UriQuery,
            format!("{k}={}", v.replace(' ', "+")).into_bytes(),
        );
    }
    if let Some(from) = &req.from {
        p.add_option(CoapOption::Unknown(option::FR), from.as_bytes().to_vec());
    }
    p.add_option(
        CoapOption::Unknown(option::RQI),
        req.rqi.as_bytes().to_vec(),
    );
    p.add_option(
        CoapOption::Unknown(option::RVI),
        req.rvi.as_deref().unwrap_or("3").as_bytes().to_vec(),
    );
    for (n, v) in [
        (option::OT, &req.ot),
        (option::RQET, &req.rqet),
        (option::RSET, &req.rset),
        (option::OET, &req.oet),
        (option::GID, &req.gid),
        (option::VSI, &req.vsi),
    ] {
        if let Some(v) = v {
            p.add_option(CoapOption::Unknown(n), v.as_bytes().to_vec());
        }
    }
    if let Some(ec) = &req.ec {
        let ec: u64 = ec
            .parse()
            .map_err(|_| M2mError::bad_request("event category is not a number"))?;
        p.add_option(CoapOption::Unknown(option::EC), encode_uint(ec));
    }
    if let Some(rtu) = &req.rtu {
        p.add_option(
            CoapOption::Unknown(option::RTURI),
            rtu.join("&").into_bytes(),
        );
    }
    if let Some(ty) = req.ty {
        p.add_option(
            CoapOption::Unknown(option::TY),
            encode_uint(u64::from(ty.code())),
        );
    }
    if let Some(pc) = &req.pc {
        let cf = if req.op == Operation::Notify {
            content_format::NTFY_JSON
        } else {
            content_format::RES_JSON
        };
        p.add_option(CoapOption::ContentFormat, encode_uint(u64::from(cf)));
        p.payload = serde_json::to_vec(pc).map_err(|e| M2mError::internal(e.to_string()))?;
    }
    Ok(p)
}

/// Decodes a CoAP response into a response primitive (originator side): the RSC from oneM2M-RSC,
/// or from the CoAP code for a peer that sent none.
pub fn decode_response(p: &Packet) -> M2mResult<Response> {
    let rsc = match uint(p, option::RSC, "oneM2M-RSC")? {
        Some(n) => u16::try_from(n)
            .ok()
            .and_then(Rsc::from_code)
            .unwrap_or(if n < 4000 {
                Rsc::Ok
            } else {
                Rsc::InternalServerError
            }),
        None => match p.header.code {
            MessageClass::Response(ResponseType::Created) => Rsc::Created,
            MessageClass::Response(ResponseType::Deleted) => Rsc::Deleted,
            MessageClass::Response(ResponseType::Changed) => Rsc::Updated,
            MessageClass::Response(c) if !c.is_error() => Rsc::Ok,
            _ => {
                return Err(M2mError::new(
                    Rsc::TargetNotReachable,
                    format!(
                        "peer answered CoAP {} without oneM2M-RSC",
                        p.header.get_code()
                    ),
                ))
            }
        },
    };
    let pc = if p.payload.is_empty() {
        None
    } else {
        let ser = uint(p, CONTENT_FORMAT, "Content-Format")?
            .and_then(content_format::serialization)
            .unwrap_or_default();
        Some(ser.decode(&p.payload)?)
    };
    let mut resp = Response::new(rsc, request_identifier(p), pc);
    resp.rvi = text(p, option::RVI, "oneM2M-RVI")?;
    resp.ot = text(p, option::OT, "oneM2M-OT")?;
    resp.vsi = text(p, option::VSI, "oneM2M-VSI")?;
    // An echo only: a peer's malformed one does not make its answer unreadable.
    resp.rset = text(p, option::RSET, "oneM2M-RSET").ok().flatten();
    resp.cts = uint(p, option::CTS, "oneM2M-CTS")?.and_then(|v| u8::try_from(v).ok());
    resp.cto = uint(p, option::CTO, "oneM2M-CTO")?;
    if let Some(loc) = p.get_option(CoapOption::LocationPath) {
        let segs: Vec<String> = loc
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        resp.location = Some(to_from_segments(&segs)?);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn to_maps_to_uri_path_as_table_6_2_2_3_1_says() {
        for (to, segs) in [
            ("CSEBase/ae12/cont27", vec!["CSEBase", "ae12", "cont27"]),
            (
                "/CSE178/CSEBase/ae12",
                vec!["~", "CSE178", "CSEBase", "ae12"],
            ),
            ("/CSE178/cin00856", vec!["~", "CSE178", "cin00856"]),
            (
                "//mym2msp.org/CSE178/cin00856",
                vec!["_", "mym2msp.org", "CSE178", "cin00856"],
            ),
        ] {
            let got = segments_from_to(to);
            assert_eq!(got, segs, "{to}");
            assert_eq!(to_from_segments(&got).unwrap(), to);
        }
        // One option holding a '/' would read as two segments once re-encoded.
        assert!(to_from_segments(&["_/".into()]).is_err());
        assert_eq!(to_from_segments(&[]).unwrap(), "", "no Uri-Path: the root");
    }

    #[test]
    fn uints_are_shortest_big_endian() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(2), vec![2]);
        assert_eq!(encode_uint(2001), vec![0x07, 0xD1]);
        assert_eq!(decode_uint(&[0x07, 0xD1]), Some(2001));
        assert_eq!(decode_uint(&[]), Some(0));
        assert_eq!(decode_uint(&[1; 9]), None);
    }

    #[test]
    fn a_create_round_trips_with_its_options() {
        let mut req = Request::new(
            Operation::Create,
            "/in-cse/cse-in/lock",
            Some("CAdmin".into()),
            "req0001",
        );
        req.ty = Some(ResourceType::Container);
        req.pc = Some(json!({"m2m:cnt": {"rn": "state"}}));
        req.rcn = Some(crate::primitive::ResultContent::Nothing);
        let p = encode_request(&req).unwrap();
        assert_eq!(first(&p, option::TY), Some(&[3u8][..]));
        assert_eq!(first(&p, option::FR), Some(&b"CAdmin"[..]));
        let bytes = p.to_bytes().unwrap();
        let back = decode_request(&Packet::from_bytes(&bytes).unwrap(), |_| false).unwrap();
        assert_eq!(back.op, Operation::Create);
        assert_eq!(back.to, req.to);
        assert_eq!(back.from, req.from);
        assert_eq!(back.rqi, req.rqi);
        assert_eq!(back.ty, req.ty);
        assert_eq!(back.pc, req.pc);
        assert_eq!(back.rcn, req.rcn);
        // The notificationURI list: absent, empty (no result notification) and given travel as
        // three different requests.
        for rtu in [None, Some(vec![]), Some(vec!["/id-in/Ca".to_owned()])] {
            let mut r = req.clone();
            r.rtu = rtu.clone();
            let bytes = encode_request(&r).unwrap().to_bytes().unwrap();
            let back = decode_request(&Packet::from_bytes(&bytes).unwrap(), |_| false).unwrap();
            assert_eq!(back.rtu, rtu);
        }
    }

    #[test]
    fn a_post_without_ty_is_a_notify_and_filter_lists_travel_in_uri_query() {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Get);
        for s in ["cse-in", "lock"] {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        p.add_option(CoapOption::Unknown(option::RQI), b"r1".to_vec());
        for q in ["fu=1", "ty=2+3", "lbl=a", "lbl=b", "lim=5"] {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        let req = decode_request(&p, |_| false).unwrap();
        assert!(req.is_discovery());
        assert_eq!(req.fc.limit, Some(5));
        p.header.code = MessageClass::Request(RequestType::Post);
        p.clear_option(CoapOption::UriQuery);
        assert_eq!(decode_request(&p, |_| false).unwrap().op, Operation::Notify);
    }

    #[test]
    fn refusals_name_the_cause() {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Get);
        p.add_option(CoapOption::UriPath, b"cse-in".to_vec());
        assert_eq!(
            decode_request(&p, |_| false).unwrap_err().rsc,
            Rsc::BadRequest,
            "no RQI"
        );
        p.add_option(CoapOption::Unknown(option::RQI), b"r1".to_vec());
        p.payload = b"{}".to_vec();
        // text/plain (0): no serialization of oneM2M contents.
        p.add_option(CoapOption::ContentFormat, encode_uint(0));
        assert_eq!(
            decode_request(&p, |_| false).unwrap_err().rsc,
            Rsc::UnsupportedMediaType
        );
        p.clear_option(CoapOption::ContentFormat);
        p.add_option(CoapOption::ContentFormat, encode_uint(50));
        // An Accept of text/plain: no answer this binding can write.
        p.add_option(CoapOption::Accept, encode_uint(0));
        assert_eq!(
            decode_request(&p, |_| false).unwrap_err().rsc,
            Rsc::NotAcceptable
        );
        // An unknown critical option (odd number) is refused before decoding; elective ones pass.
        let mut q = Packet::new();
        q.header.code = MessageClass::Request(RequestType::Get);
        q.add_option(CoapOption::Unknown(2049), b"x".to_vec());
        assert_eq!(check_options(&q), Err(Refusal::BadOption(2049)));
        let mut q = Packet::new();
        q.header.code = MessageClass::Request(RequestType::Get);
        q.add_option(CoapOption::Unknown(2048), b"x".to_vec());
        assert_eq!(check_options(&q), Ok(()));
        q.header.code = MessageClass::Request(RequestType::Fetch);
        assert_eq!(check_options(&q), Err(Refusal::MethodNotAllowed));
    }

    #[test]
    fn response_codes_follow_table_6_2_4_1() {
        use ResponseType as C;
        for (rsc, op, code) in [
            (Rsc::Created, Operation::Create, C::Created),
            (Rsc::Ok, Operation::Retrieve, C::Content),
            (Rsc::Ok, Operation::Notify, C::Changed),
            (Rsc::Updated, Operation::Update, C::Changed),
            (Rsc::Deleted, Operation::Delete, C::Deleted),
            (Rsc::BadRequest, Operation::Create, C::BadRequest),
            (Rsc::NotFound, Operation::Retrieve, C::NotFound),
            (
                Rsc::OriginatorHasNoPrivilege,
                Operation::Retrieve,
                C::Forbidden,
            ),
            (Rsc::Conflict, Operation::Create, C::Forbidden),
            (Rsc::RequestTimeout, Operation::Retrieve, C::GatewayTimeout),
            (
                Rsc::UnsupportedMediaType,
                Operation::Create,
                C::UnsupportedContentFormat,
            ),
            (Rsc::NotImplemented, Operation::Create, C::NotImplemented),
            (
                Rsc::InternalServerError,
                Operation::Create,
                C::InternalServerError,
            ),
            (Rsc::TargetNotReachable, Operation::Retrieve, C::NotFound),
        ] {
            assert_eq!(response_code(rsc, op), code, "{rsc:?}");
        }
    }

    #[test]
    fn a_response_carries_its_rsc_and_location_and_round_trips() {
        let mut resp = Response::new(Rsc::Created, "r9", Some(json!({"m2m:cnt": {"rn": "x"}})));
        resp.location = Some("/in-cse/cnt-1".into());
        resp.cts = Some(crate::primitive::PARTIAL_CONTENT);
        resp.cto = Some(300);
        let p = encode_response(&resp, Operation::Create, Default::default());
        let back = decode_response(&Packet::from_bytes(&p.to_bytes().unwrap()).unwrap()).unwrap();
        assert_eq!(back.rsc, Rsc::Created);
        assert_eq!(back.rqi, "r9");
        assert_eq!(back.location, resp.location);
        assert_eq!((back.cts, back.cto), (resp.cts, resp.cto));
        assert_eq!(back.pc, resp.pc);
        // A NOTIFY answered 2000 has no payload.
        let ok = Response::new(Rsc::Ok, "n1", Some(json!({})));
        assert!(encode_response(&ok, Operation::Notify, Default::default())
            .payload
            .is_empty());
    }
}
