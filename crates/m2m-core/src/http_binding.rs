//! The HTTP binding (TS-0009): request and response primitives to and from HTTP messages.
//!
//! Pure translation only; sockets live in the CSE and the client.

use crate::error::{M2mError, M2mResult};
use crate::primitive::{DiscResType, Operation, Request, Response, ResponseType, ResultContent};
use crate::resource_type::ResourceType;
use crate::serialization::Serialization;
use crate::status::ResponseStatusCode;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LOCATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub const X_M2M_ORIGIN: &str = "x-m2m-origin";
pub const X_M2M_RI: &str = "x-m2m-ri";
pub const X_M2M_RVI: &str = "x-m2m-rvi";
pub const X_M2M_RSC: &str = "x-m2m-rsc";
pub const X_M2M_RTU: &str = "x-m2m-rtu";
pub const X_M2M_OT: &str = "x-m2m-ot";
pub const X_M2M_RET: &str = "x-m2m-ret";
pub const X_M2M_RST: &str = "x-m2m-rst";
pub const X_M2M_OET: &str = "x-m2m-oet";
pub const X_M2M_GID: &str = "x-m2m-gid";
pub const X_M2M_EC: &str = "x-m2m-ec";
pub const X_M2M_VSI: &str = "x-m2m-vsi";
pub const X_M2M_CTS: &str = "x-m2m-cts";
pub const X_M2M_CTO: &str = "x-m2m-cto";

/// The oneM2M header names as TS-0009 clause 6.4 spells them. Names are case-insensitive
/// (RFC 9110 clause 5.1) and are handled in lower case; these are the spellings written on the
/// wire where the writer can choose (some receivers compare names as written).
pub const TS_SPELLING: &[&str] = &[
    "X-M2M-Origin",
    "X-M2M-RI",
    "X-M2M-RVI",
    "X-M2M-RSC",
    "X-M2M-RTU",
    "X-M2M-OT",
    "X-M2M-RET",
    "X-M2M-RST",
    "X-M2M-OET",
    "X-M2M-GID",
    "X-M2M-EC",
    "X-M2M-VSI",
    "X-M2M-CTS",
    "X-M2M-CTO",
    "X-M2M-ATI",
    "X-M2M-ASRI",
    "Content-Type",
    "Content-Length",
    "Content-Location",
    "Accept",
    "Host",
    "Authorization",
];

/// The media type this CSE answers with.
pub const JSON: &str = "application/json";

/// Query fields of TS-0009 table 6.2.2.2-1 this CSE does not support: Delivery Aggregation (a
/// CMDH parameter), local token IDs and the token request indicator (indirect dynamic
/// authorization through the Originator), the authorization signature and relationship
/// indicators, the semantic query indicator. A request with one is refused (TS-0004 clause
/// 7.3.2.1: NOT_IMPLEMENTED), not carried out as if it had none.
pub const UNSUPPORTED_QUERY_FIELDS: &[&str] = &["da", "tqi", "asi", "auri"];

/// X-M2M-ATI (TS-0009 clause 6.4.18): Assigned Token Identifiers, `lti:tkid` pairs joined by `+`.
pub const X_M2M_ATI: &str = "x-m2m-ati";

/// Whether `s` is an xs:NCName as a local token ID may be: a letter or `_`, then letters,
/// digits, `.`, `-`, `_` (ASCII only here), at most 64 characters.
pub fn is_local_token_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && s.len() <= 64
}

/// Role and token IDs a request may name at most.
pub const MAX_ISSUED_IDS: usize = 8;

/// The Tokens parameter (TS-0009 clause 6.4.19: the Authorization header, tokens separated by
/// `+`; an OAuth `Bearer` prefix is tolerated; a space separates them too, as in a query list).
pub fn split_tokens(text: &str) -> Vec<String> {
    let text = text.trim();
    let text = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .unwrap_or(text);
    text.split(['+', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names above as `HeaderName`s, checked once: a lookup by `&str` parses and checks the
/// name again on every call, a dozen per request.
mod parsed {
    use http::HeaderName;
    pub const ORIGIN: HeaderName = HeaderName::from_static(super::X_M2M_ORIGIN);
    pub const RI: HeaderName = HeaderName::from_static(super::X_M2M_RI);
    pub const RVI: HeaderName = HeaderName::from_static(super::X_M2M_RVI);
    pub const RSC: HeaderName = HeaderName::from_static(super::X_M2M_RSC);
    pub const RTU: HeaderName = HeaderName::from_static(super::X_M2M_RTU);
    pub const OT: HeaderName = HeaderName::from_static(super::X_M2M_OT);
    pub const RET: HeaderName = HeaderName::from_static(super::X_M2M_RET);
    pub const RST: HeaderName = HeaderName::from_static(super::X_M2M_RST);
    pub const OET: HeaderName = HeaderName::from_static(super::X_M2M_OET);
    pub const GID: HeaderName = HeaderName::from_static(super::X_M2M_GID);
    pub const EC: HeaderName = HeaderName::from_static(super::X_M2M_EC);
    pub const VSI: HeaderName = HeaderName::from_static(super::X_M2M_VSI);
    pub const CTS: HeaderName = HeaderName::from_static(super::X_M2M_CTS);
    pub const CTO: HeaderName = HeaderName::from_static(super::X_M2M_CTO);
    pub const ATI: HeaderName = HeaderName::from_static(super::X_M2M_ATI);
}

/// The header value, if present and valid text.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> M2mResult<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| M2mError::bad_request(format!("header {name} is not valid text"))),
    }
}

/// The request identifier of an HTTP request, for echoing in an error response.
pub fn request_identifier(headers: &HeaderMap) -> String {
    headers
        .get(&parsed::RI)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Maps the Request-Target path back to a `To` parameter (TS-0009 table 6.2.2.1-1). A
/// CSE-relative `To` never starts with `/`, so a path `//...` is no encoding of any `To`: SP-relative
/// and absolute IDs travel as `/~/...` and `/_/...` (4000, not a guess at which was meant).
pub fn to_from_path(path: &str) -> M2mResult<String> {
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| M2mError::bad_request("request path is not valid UTF-8"))?;
    let to = if let Some(rest) = decoded.strip_prefix("/~/") {
        format!("/{rest}")
    } else if let Some(rest) = decoded.strip_prefix("/_/") {
        format!("//{rest}")
    } else if decoded.starts_with("//") {
        return Err(M2mError::bad_request(
            "request path: an SP-relative ID goes as /~/..., an absolute one as /_/... (TS-0009 6.2.2.1)",
        ));
    } else if let Some(rest) = decoded.strip_prefix('/') {
        rest.to_owned()
    } else {
        return Err(M2mError::bad_request("request path must start with '/'"));
    };
    Ok(to)
}

/// Maps a `To` parameter to a Request-Target path.
pub fn path_from_to(to: &str) -> String {
    if let Some(rest) = to.strip_prefix("//") {
        format!("/_/{rest}")
    } else if to.starts_with('/') {
        format!("/~{to}")
    } else {
        format!("/{to}")
    }
}

/// Content-Type check: JSON or CBOR, plain or in one of their oneM2M flavours; returns the
/// serialization and the `ty` parameter if any.
fn parse_content_type(value: &str) -> M2mResult<(Serialization, Option<ResourceType>)> {
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let ser = Serialization::from_media_type(&media)
        .ok_or_else(|| crate::serialization::unsupported(&media))?;
    let mut ty = None;
    for p in parts {
        let p = p.trim();
        if let Some(v) = p.strip_prefix("ty=") {
            ty = Some(ResourceType::parse_requested(v)?);
        }
    }
    Ok((ser, ty))
}

/// The serialization a response is written in (TS-0009 clause 6.4.3: chosen considering the
/// Accept header): the first supported media type of Accept; else (no Accept, or only
/// wildcards or unsupported types) the request's own content type; else JSON.
pub fn response_serialization(headers: &HeaderMap) -> Serialization {
    let accepted = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(Serialization::from_media_type));
    accepted
        .or_else(|| {
            headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(Serialization::from_media_type)
        })
        .unwrap_or_default()
}

/// Decodes an HTTP request into a request primitive (TS-0009 clause 6, receiver side).
/// `is_attribute` tells which unknown query fields are resource attribute conditions.
pub fn decode_request(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    is_attribute: impl Fn(&str) -> bool,
) -> M2mResult<Request> {
    let rqi = header(headers, &parsed::RI)?
        .filter(|r| !r.is_empty())
        .ok_or_else(|| M2mError::bad_request("missing X-M2M-RI header"))?
        .to_owned();
    let from = header(headers, &parsed::ORIGIN)?.map(str::to_owned);
    let to = to_from_path(uri.path())?;
    let (ser, ty) = match header(headers, &CONTENT_TYPE)? {
        Some(ct) => parse_content_type(ct)?,
        None if !body.is_empty() => {
            return Err(M2mError::new(
                ResponseStatusCode::UnsupportedMediaType,
                "missing Content-Type",
            ))
        }
        None => (Serialization::Json, None),
    };
    let op = match *method {
        Method::GET => Operation::Retrieve,
        Method::PUT => Operation::Update,
        Method::DELETE => Operation::Delete,
        Method::POST if ty.is_some() => Operation::Create,
        Method::POST => Operation::Notify,
        _ => {
            return Err(M2mError::not_allowed(format!(
                "HTTP method {method} has no oneM2M operation"
            )))
        }
    };
    let mut req = Request::new(op, to, from, rqi);
    req.rvi = header(headers, &parsed::RVI)?.map(str::to_owned);
    req.ty = ty;
    req.ot = header(headers, &parsed::OT)?.map(str::to_owned);
    req.rqet = header(headers, &parsed::RET)?.map(str::to_owned);
    req.rset = header(headers, &parsed::RST)?.map(str::to_owned);
    req.accept = Some(response_serialization(headers));
    req.oet = header(headers, &parsed::OET)?.map(str::to_owned);
    req.gid = header(headers, &parsed::GID)?.map(str::to_owned);
    req.ec = header(headers, &parsed::EC)?.map(str::to_owned);
    req.vsi = header(headers, &parsed::VSI)?.map(str::to_owned);
    if let Some(tokens) = header(headers, &http::header::AUTHORIZATION)? {
        req.tkns = crate::primitive::Tokens(split_tokens(tokens));
    }
    if let Some(rtu) = header(headers, &parsed::RTU)? {
        req.rtu = Some(
            rtu.split('&')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    if let Some(q) = uri.query() {
        decode_query(&mut req, q, is_attribute)?;
    }
    if !body.is_empty() {
        req.pc = Some(ser.decode(body)?);
    }
    check_whole_primitive(&req)?;
    Ok(req)
}

fn decode_query(
    req: &mut Request,
    query: &str,
    is_attribute: impl Fn(&str) -> bool,
) -> M2mResult<()> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decode_query_field(
            req,
            &decode_component(k)?,
            &decode_component(v)?,
            &is_attribute,
        )?;
    }
    Ok(())
}

/// Checks what only the whole primitive tells, once every binding has read it: a Result Content
/// the operation does not allow (TS-0004 clause 6.3.5.9), a geo-query given in part.
pub(crate) fn check_whole_primitive(req: &Request) -> M2mResult<()> {
    match req.rcn {
        Some(rcn) if !rcn.valid_for(req.op, req.is_discovery()) => Err(M2mError::bad_request(
            format!("rcn {} is not valid for this operation", rcn as u8),
        )),
        _ => req.fc.check_complete(),
    }
}

/// One query parameter of TS-0009 table 6.2.2.2-1 (also the Uri-Query of TS-0008), its value
/// decoded, lists separated by spaces.
pub(crate) fn decode_query_field(
    req: &mut Request,
    k: &str,
    v: &str,
    is_attribute: impl Fn(&str) -> bool,
) -> M2mResult<()> {
    match k {
        "rcn" => req.rcn = Some(ResultContent::parse(v)?),
        "drt" => {
            req.drt = match v {
                "1" => DiscResType::Structured,
                "2" => DiscResType::Unstructured,
                _ => return Err(M2mError::bad_request(format!("drt '{v}' is not 1 or 2"))),
            }
        }
        "rp" => req.rp = Some(v.to_owned()),
        "rt" => {
            req.rt = match v {
                "1" => ResponseType::NonBlockingSynch,
                "2" => ResponseType::NonBlockingAsynch,
                "3" => ResponseType::Blocking,
                "4" => ResponseType::FlexBlocking,
                "5" => ResponseType::NoResponse,
                _ => {
                    return Err(M2mError::bad_request(format!(
                        "rt '{v}' is not a response type"
                    )))
                }
            }
        }
        // Tokens in the Uri-Query (TS-0008 clause 6.2.2.3), separated like every list.
        "tkns" => req.tkns.extend(split_tokens(v)),
        "sqi" => {
            req.sqi = match v {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(M2mError::bad_request(format!(
                        "sqi '{v}' is not true or false"
                    )))
                }
            }
        }
        "rids" => {
            for r in v.split([' ', '+']).filter(|s| !s.is_empty()) {
                req.rids.push(crate::RoleId::parse(r)?);
            }
            if req.rids.len() > MAX_ISSUED_IDS {
                return Err(M2mError::bad_request(format!(
                    "rids: at most {MAX_ISSUED_IDS} Role-IDs"
                )));
            }
        }
        "ltids" => {
            for l in v.split([' ', '+']).filter(|s| !s.is_empty()) {
                if !is_local_token_id(l) {
                    return Err(M2mError::bad_request(
                        "ltids: a local token ID is an NCName",
                    ));
                }
                req.ltids.push(l.to_owned());
            }
            if req.ltids.len() > MAX_ISSUED_IDS {
                return Err(M2mError::bad_request(format!(
                    "ltids: at most {MAX_ISSUED_IDS} local token IDs"
                )));
            }
        }
        "tids" => {
            for t in v.split([' ', '+']).filter(|s| !s.is_empty()) {
                req.tids.push(crate::TokenId::parse(t)?);
            }
            if req.tids.len() > MAX_ISSUED_IDS {
                return Err(M2mError::bad_request(format!(
                    "tids: at most {MAX_ISSUED_IDS} Token-IDs"
                )));
            }
        }
        "atrl" => req.atrl.extend(
            v.split([' ', '+'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        ),
        f if UNSUPPORTED_QUERY_FIELDS.contains(&f) => {
            return Err(M2mError::not_implemented(format!(
                "request parameter '{f}' is not supported"
            )))
        }
        _ => {
            if !req.fc.take_query_field(k, v, &is_attribute)? {
                return Err(M2mError::bad_request(format!(
                    "unknown query parameter '{k}'"
                )));
            }
        }
    }
    Ok(())
}

fn decode_component(s: &str) -> M2mResult<String> {
    let s = s.replace('+', " ");
    percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| M2mError::bad_request("query string is not valid UTF-8"))
}

/// Characters escaped in query values: everything but unreserved.
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Encodes a response primitive as an HTTP response (TS-0009 clause 6.3), its content in `ser`.
pub fn encode_response(resp: &Response, ser: Serialization) -> http::Response<Bytes> {
    let status =
        StatusCode::from_u16(resp.rsc.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = http::Response::builder().status(status);
    let h = b.headers_mut().expect("fresh builder");
    h.insert(
        HeaderName::from_static(X_M2M_RSC),
        HeaderValue::from(resp.rsc.code()),
    );
    h.insert(HeaderName::from_static(X_M2M_RI), hv(&resp.rqi));
    if let Some(rvi) = &resp.rvi {
        h.insert(HeaderName::from_static(X_M2M_RVI), hv(rvi));
    }
    if let Some(ot) = &resp.ot {
        h.insert(HeaderName::from_static(X_M2M_OT), hv(ot));
    }
    if !resp.ati.is_empty() {
        let pairs: Vec<String> = resp.ati.iter().map(|(l, t)| format!("{l}:{t}")).collect();
        h.insert(HeaderName::from_static(X_M2M_ATI), hv(&pairs.join("+")));
    }
    if let Some(vsi) = &resp.vsi {
        h.insert(HeaderName::from_static(X_M2M_VSI), hv(vsi));
    }
    if let Some(rset) = &resp.rset {
        h.insert(HeaderName::from_static(X_M2M_RST), hv(rset));
    }
    if let Some(cts) = resp.cts {
        h.insert(
            HeaderName::from_static(X_M2M_CTS),
            HeaderValue::from(u16::from(cts)),
        );
    }
    if let Some(cto) = resp.cto {
        h.insert(HeaderName::from_static(X_M2M_CTO), HeaderValue::from(cto));
    }
    if let Some(loc) = &resp.location {
        h.insert(CONTENT_LOCATION, hv(loc));
    }
    let body = match &resp.pc {
        Some(pc) => {
            // A content the asked serialization cannot write (XML needs plain names) goes in
            // JSON, which writes any, rather than as an empty body.
            let (ser, bytes) = match ser.encode(pc) {
                Ok(bytes) => (ser, bytes),
                Err(_) => (
                    Serialization::Json,
                    serde_json::to_vec(pc).unwrap_or_default(),
                ),
            };
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ser.media_type()));
            Bytes::from(bytes)
        }
        None => Bytes::new(),
    };
    b.body(body).expect("valid response parts")
}

/// Encodes a request primitive as an HTTP request to `authority` (TS-0009 clause 6.2, originator
/// side), its content in `ser` (and the response asked for in it).
pub fn encode_request(
    req: &Request,
    scheme: &str,
    authority: &str,
    ser: Serialization,
) -> M2mResult<http::Request<Bytes>> {
    let method = match req.op {
        Operation::Create | Operation::Notify => Method::POST,
        Operation::Retrieve => Method::GET,
        Operation::Update => Method::PUT,
        Operation::Delete => Method::DELETE,
    };
    let mut uri = format!("{scheme}://{authority}{}", path_from_to(&req.to));
    let query = encode_query(req);
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&query);
    }
    let mut b = http::Request::builder().method(method).uri(&uri);
    let h = b.headers_mut().expect("fresh builder");
    if let Some(from) = &req.from {
        h.insert(HeaderName::from_static(X_M2M_ORIGIN), hv(from));
    }
    h.insert(HeaderName::from_static(X_M2M_RI), hv(&req.rqi));
    h.insert(
        HeaderName::from_static(X_M2M_RVI),
        hv(req.rvi.as_deref().unwrap_or("3")),
    );
    for (name, v) in [
        (X_M2M_OT, &req.ot),
        (X_M2M_RET, &req.rqet),
        (X_M2M_RST, &req.rset),
        (X_M2M_OET, &req.oet),
        (X_M2M_GID, &req.gid),
        (X_M2M_EC, &req.ec),
        (X_M2M_VSI, &req.vsi),
    ] {
        if let Some(v) = v {
            h.insert(HeaderName::from_static(name), hv(v));
        }
    }
    if let Some(rtu) = &req.rtu {
        h.insert(HeaderName::from_static(X_M2M_RTU), hv(&rtu.join("&")));
    }
    if !req.tkns.is_empty() {
        h.insert(http::header::AUTHORIZATION, hv(&req.tkns.join("+")));
    }
    if ser != Serialization::Json {
        h.insert(http::header::ACCEPT, hv(ser.media_type()));
    }
    let content_type = match req.ty {
        Some(ty) => format!("{};ty={}", ser.media_type(), ty.code()),
        None => ser.media_type().to_owned(),
    };
    let body = match &req.pc {
        Some(pc) => {
            h.insert(CONTENT_TYPE, hv(&content_type));
            Bytes::from(ser.encode(pc)?)
        }
        None => {
            if req.ty.is_some() {
                h.insert(CONTENT_TYPE, hv(&content_type));
            }
            Bytes::new()
        }
    };
    b.body(body)
        .map_err(|e| M2mError::bad_request(format!("cannot encode request: {e}")))
}

fn encode_query(req: &Request) -> String {
    query_fields(req)
        .iter()
        .map(|(k, v)| {
            // Lists are joined with '+' on the wire (TS-0009 clause 6.2.2.2).
            let v: Vec<String> = v
                .split(' ')
                .map(|p| utf8_percent_encode(p, QUERY_ESCAPE).to_string())
                .collect();
            format!("{k}={}", v.join("+"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The query parameters of a request, values as text with lists space-separated.
pub(crate) fn query_fields(req: &Request) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = Vec::new();
    if let Some(rcn) = req.rcn {
        q.push(("rcn".into(), (rcn as u8).to_string()));
    }
    if req.rt != ResponseType::Blocking {
        q.push(("rt".into(), (req.rt as u8).to_string()));
    }
    if req.drt != DiscResType::Structured {
        q.push(("drt".into(), (req.drt as u8).to_string()));
    }
    if req.sqi {
        q.push(("sqi".into(), "true".into()));
    }
    if !req.atrl.is_empty() {
        q.push(("atrl".into(), req.atrl.join(" ")));
    }
    if let Some(rp) = &req.rp {
        q.push(("rp".into(), rp.clone()));
    }
    if !req.rids.is_empty() {
        let ids: Vec<&str> = req.rids.iter().map(|r| r.as_str()).collect();
        q.push(("rids".into(), ids.join(" ")));
    }
    if !req.tids.is_empty() {
        let ids: Vec<&str> = req.tids.iter().map(|t| t.as_str()).collect();
        q.push(("tids".into(), ids.join(" ")));
    }
    if !req.ltids.is_empty() {
        q.push(("ltids".into(), req.ltids.join(" ")));
    }
    for (k, v) in req.fc.fields() {
        match (k, v) {
            // Each SPARQL text its own `smf` field: spaces are part of a query.
            ("smf", serde_json::Value::Array(queries)) => {
                q.extend(queries.iter().map(|s| ("smf".to_owned(), query_text(s))));
            }
            (k, v) => q.push((k.to_owned(), query_text(&v))),
        }
    }
    q
}

/// A filter criteria value as query text: lists space-separated (joined with '+' on the wire).
fn query_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => {
            items.iter().map(query_text).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

/// Decodes an HTTP response into a response primitive (TS-0009 clause 6.3, originator side).
pub fn decode_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> M2mResult<Response> {
    let rsc = match header(headers, &parsed::RSC)? {
        Some(v) => {
            let n: u16 = v
                .trim()
                .parse()
                .map_err(|_| M2mError::bad_request(format!("X-M2M-RSC '{v}' is not a number")))?;
            ResponseStatusCode::from_code(n).unwrap_or(if n < 4000 {
                ResponseStatusCode::Ok
            } else {
                ResponseStatusCode::InternalServerError
            })
        }
        // A peer that is not a oneM2M entity: keep the HTTP outcome.
        None if status.is_success() => ResponseStatusCode::Ok,
        None => {
            return Err(M2mError::new(
                ResponseStatusCode::TargetNotReachable,
                format!("peer answered HTTP {} without X-M2M-RSC", status.as_u16()),
            ))
        }
    };
    let pc = if body.is_empty() {
        None
    } else {
        let ser = header(headers, &CONTENT_TYPE)?
            .and_then(Serialization::from_media_type)
            .unwrap_or_default();
        Some(ser.decode(body)?)
    };
    let mut resp = Response::new(rsc, request_identifier(headers), pc);
    resp.rvi = header(headers, &parsed::RVI)?.map(str::to_owned);
    // Originating Timestamp of the response (TS-0009 clause 6.4.12), which encode_response writes.
    resp.ot = header(headers, &parsed::OT)?.map(str::to_owned);
    resp.vsi = header(headers, &parsed::VSI)?.map(str::to_owned);
    // An echo only: a peer's malformed one does not make its answer unreadable.
    resp.rset = header(headers, &parsed::RST)
        .ok()
        .flatten()
        .map(str::to_owned);
    if let Some(ati) = header(headers, &parsed::ATI)? {
        resp.ati = ati
            .split('+')
            .filter_map(|pair| pair.trim().split_once(':'))
            .map(|(l, t)| (l.trim().to_owned(), t.trim().to_owned()))
            .collect();
    }
    resp.cts = header(headers, &parsed::CTS)?.and_then(|v| v.parse().ok());
    resp.cto = header(headers, &parsed::CTO)?.and_then(|v| v.parse().ok());
    resp.location = header(headers, &CONTENT_LOCATION)?.map(str::to_owned);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Tokens (TS-0009 clause 6.4.19): the Authorization header, `+` between tokens, both ways;
    /// in a query (the CoAP binding's Uri-Query, TS-0008 clause 6.2.2.3) as `tkns`; never shown
    /// by `Debug`.
    #[test]
    fn tokens_travel_in_the_authorization_header() {
        assert_eq!(split_tokens("a.b.c+d.e.f"), vec!["a.b.c", "d.e.f"]);
        assert_eq!(split_tokens("Bearer a.b.c"), vec!["a.b.c"]);
        assert_eq!(split_tokens(" a.b.c+ d.e.f "), vec!["a.b.c", "d.e.f"]);
        assert!(split_tokens("").is_empty());
        let h = headers(&[
            ("x-m2m-ri", "1"),
            ("X-M2M-Origin", "Cabc"),
            ("authorization", "h.p.s1+h.p.s2"),
        ]);
        let r = decode_request(
            &Method::GET,
            &"/cse-in?tkns=h.p.s3".parse().unwrap(),
            &h,
            b"",
            |_| false,
        )
        .unwrap();
        assert_eq!(*r.tkns, vec!["h.p.s1", "h.p.s2", "h.p.s3"]);
        assert!(!format!("{r:?}").contains("h.p.s1"), "Debug shows a token");
        let out = encode_request(&r, "http", "127.0.0.1:1", Serialization::Json).unwrap();
        assert_eq!(
            out.headers()[http::header::AUTHORIZATION],
            "h.p.s1+h.p.s2+h.p.s3"
        );
    }

    /// X-M2M-RTU absent, given empty, given with targets: three different requests
    /// (TS-0004 7.5.1.2.5: an empty list means no result notification), each kept by encoding.
    #[test]
    fn an_empty_notification_uri_list_is_not_an_absent_one() {
        for (given, want) in [
            (None, None),
            (Some(""), Some(vec![])),
            (
                Some("/id-in/Ca&http://h:1"),
                Some(vec!["/id-in/Ca", "http://h:1"]),
            ),
        ] {
            let mut pairs = vec![("x-m2m-ri", "1"), ("X-M2M-Origin", "Ca")];
            if let Some(v) = given {
                pairs.push(("x-m2m-rtu", v));
            }
            let decode = |h: &HeaderMap| {
                decode_request(
                    &Method::GET,
                    &"/cse-in?rt=2".parse().unwrap(),
                    h,
                    b"",
                    |_| false,
                )
                .unwrap()
            };
            let r = decode(&headers(&pairs));
            let want: Option<Vec<String>> =
                want.map(|w: Vec<&str>| w.into_iter().map(str::to_owned).collect());
            assert_eq!(r.rtu, want, "{given:?}");
            let out = encode_request(&r, "http", "127.0.0.1:1", Serialization::Json).unwrap();
            assert_eq!(decode(out.headers()).rtu, want, "{given:?} after encoding");
        }
    }

    #[test]
    fn path_mapping_follows_table_6_2_2_1_1() {
        for (to, path) in [
            ("CSEBase/ae12/cont27", "/CSEBase/ae12/cont27"),
            ("/CSE178/cin00856", "/~/CSE178/cin00856"),
            (
                "//mym2msp.org/CSE178/cin00856",
                "/_/mym2msp.org/CSE178/cin00856",
            ),
        ] {
            assert_eq!(path_from_to(to), path);
            assert_eq!(to_from_path(path).unwrap(), to);
        }
        // No To maps to these: an SP-relative or absolute ID in the CSE-relative form.
        for path in [
            "//id-in",
            "///acme.example.com/id-in",
            "//id-in/cnt1",
            "%2F%2Fid-in",
        ] {
            let e = to_from_path(path).unwrap_err();
            assert_eq!(e.rsc, crate::ResponseStatusCode::BadRequest, "{path}");
        }
    }

    #[test]
    fn create_and_notify_are_told_apart_by_ty() {
        let h = headers(&[
            ("x-m2m-ri", "1"),
            ("X-M2M-Origin", "Cabc"),
            ("content-type", "application/json;ty=3"),
        ]);
        let r = decode_request(
            &Method::POST,
            &"/cse-in".parse().unwrap(),
            &h,
            b"{}",
            |_| false,
        )
        .unwrap();
        assert_eq!(r.op, Operation::Create);
        assert_eq!(r.ty, Some(ResourceType::Container));
        let h = headers(&[("x-m2m-ri", "1"), ("content-type", "application/json")]);
        let r = decode_request(
            &Method::POST,
            &"/cse-in".parse().unwrap(),
            &h,
            b"{}",
            |_| false,
        )
        .unwrap();
        assert_eq!(r.op, Operation::Notify);
    }

    #[test]
    fn discovery_query_is_decoded() {
        let h = headers(&[("x-m2m-ri", "1")]);
        let uri = "/~/id-in/cse-in?fu=1&ty=2+3&lbl=a&lim=5&drt=2&cr=Cx"
            .parse()
            .unwrap();
        let r = decode_request(&Method::GET, &uri, &h, b"", |n| n == "cr").unwrap();
        assert!(r.is_discovery());
        assert_eq!(r.to, "/id-in/cse-in");
        assert_eq!(r.fc.resource_types, vec![2, 3]);
        assert_eq!(r.fc.limit, Some(5));
        assert_eq!(r.drt, DiscResType::Unstructured);
        assert_eq!(r.fc.attributes, vec![("cr".to_owned(), "Cx".to_owned())]);
    }

    #[test]
    fn request_round_trips_through_http() {
        let mut req = Request::new(
            Operation::Retrieve,
            "/id-in/cse-in",
            Some("CAdmin".into()),
            "r1",
        );
        req.fc.filter_usage = Some(crate::filter::FilterUsage::Discovery);
        req.fc.resource_types = vec![3, 4];
        req.fc.labels = vec!["a b".into()];
        let http = encode_request(&req, "http", "127.0.0.1:8080", Serialization::Json).unwrap();
        let back = decode_request(
            http.method(),
            http.uri(),
            http.headers(),
            http.body(),
            |_| false,
        )
        .unwrap();
        assert_eq!(back.to, req.to);
        assert_eq!(back.fc.resource_types, vec![3, 4]);
        assert_eq!(back.from.as_deref(), Some("CAdmin"));
    }

    #[test]
    fn response_originating_timestamp_round_trips() {
        // Found by the property tests: X-M2M-OT was written but not read back.
        let mut resp = Response::new(ResponseStatusCode::Ok, "r1", None);
        resp.ot = Some("20260101T000000".into());
        resp.rset = Some("20260101T000100".into());
        let http = encode_response(&resp, Serialization::Json);
        let back = decode_response(http.status(), http.headers(), http.body()).unwrap();
        assert_eq!(back.ot.as_deref(), Some("20260101T000000"));
        assert_eq!(back, resp);
    }

    #[test]
    fn a_content_xml_cannot_write_goes_in_json() {
        let resp = Response::new(
            ResponseStatusCode::Ok,
            "r1",
            Some(serde_json::json!({"not a name": {"x": 1}})),
        );
        let http = encode_response(&resp, Serialization::Xml);
        assert_eq!(http.headers()[CONTENT_TYPE], "application/json");
        let back = decode_response(http.status(), http.headers(), http.body()).unwrap();
        assert_eq!(back.pc, resp.pc);
        let ok = Response::new(
            ResponseStatusCode::Ok,
            "r2",
            Some(serde_json::json!({"m2m:dbg": "fine"})),
        );
        let http = encode_response(&ok, Serialization::Xml);
        assert_eq!(http.headers()[CONTENT_TYPE], "application/xml");
    }

    #[test]
    fn an_escaped_plus_stays_in_its_list_element() {
        // Found by the property tests: '+' separates list elements on the wire, '%2B' is a '+'.
        let mut req = Request::new(Operation::Retrieve, "cse-in", None, "r1");
        req.fc.content_types = vec!["a/+".into(), "application/senml+json".into()];
        req.fc.labels = vec!["c++".into()];
        let http = encode_request(&req, "http", "127.0.0.1:8080", Serialization::Json).unwrap();
        assert_eq!(
            http.uri().query(),
            Some("lbl=c%2B%2B&cty=a%2F%2B+application%2Fsenml%2Bjson")
        );
        let back = decode_request(
            http.method(),
            http.uri(),
            http.headers(),
            http.body(),
            |_| false,
        )
        .unwrap();
        assert_eq!(back.fc, req.fc);
    }

    #[test]
    fn bad_requests() {
        let ok = headers(&[("x-m2m-ri", "1")]);
        let cases: Vec<(Method, &str, HeaderMap, &[u8], ResponseStatusCode)> = vec![
            (
                Method::GET,
                "/cse-in",
                HeaderMap::new(),
                b"",
                ResponseStatusCode::BadRequest,
            ),
            (
                Method::PATCH,
                "/cse-in",
                ok.clone(),
                b"",
                ResponseStatusCode::OperationNotAllowed,
            ),
            (
                Method::GET,
                "/cse-in?rcn=42",
                ok.clone(),
                b"",
                ResponseStatusCode::BadRequest,
            ),
            (
                Method::GET,
                "/cse-in?bogus=1",
                ok.clone(),
                b"",
                ResponseStatusCode::BadRequest,
            ),
            (
                Method::POST,
                "/cse-in",
                headers(&[("x-m2m-ri", "1"), ("content-type", "text/plain;ty=2")]),
                b"<a/>",
                ResponseStatusCode::UnsupportedMediaType,
            ),
            (
                Method::POST,
                "/cse-in",
                headers(&[("x-m2m-ri", "1"), ("content-type", "application/json;ty=2")]),
                b"{",
                ResponseStatusCode::BadRequest,
            ),
            (
                Method::POST,
                "/cse-in",
                headers(&[
                    ("x-m2m-ri", "1"),
                    ("content-type", "application/json;ty=777"),
                ]),
                b"{}",
                ResponseStatusCode::BadRequest,
            ),
        ];
        for (m, uri, h, body, rsc) in cases {
            let e = decode_request(&m, &uri.parse().unwrap(), &h, body, |_| false).unwrap_err();
            assert_eq!(e.rsc, rsc, "{m} {uri}: {}", e.dbg);
        }
    }
}
