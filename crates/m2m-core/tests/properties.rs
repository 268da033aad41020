//! Property tests of m2m-core's parsers of network input: the HTTP binding (TS-0009), the CoAP
//! binding and its message layer (TS-0008, RFC 7252/7959), `To` addresses
//! and originator identities (TS-0001 clause 7.2), CREATE/UPDATE content validation (TS-0004 clause 7.3.3), filter criteria
//! (TS-0004 clause 6.3.5.8) and `m2m:securityInfo` (TS-0004 clause 6.3.5.48).
//!
//! What every property asserts: no input panics; a refusal is a 4xxx status (the only 5xxx allowed is
//! 5001 NOT_IMPLEMENTED for a feature the input names and this implementation lacks); encoding then
//! decoding a valid value gives it back; 64 KiB inputs are handled in bounded time. Case counts are fixed
//! so the whole file runs in seconds in a debug build.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use m2m_core::filter::{FilterCriteria, FilterOperation, FilterUsage};
use m2m_core::http_binding::{decode_request, decode_response, encode_request, encode_response};
use m2m_core::schema::{self, inner_content, validate_create, validate_update};
use m2m_core::security_info::{
    EsprimKeyGenAlgId, EsprimProtocolAndAlgId, ReceiverEsprimRandObject, SecurityInfo,
};
use m2m_core::{
    Address, AeStem, CseId, DiscResType, EntityId, Home, M2mError, Operation, Originator, Request,
    ResourceType, Response, ResponseStatusCode, ResponseType, ResultContent, Scope, SpId,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------
// Shared helpers

/// A refusal of bad input: a 4xxx code, never a 5xxx (which would blame the server).
fn is_client_error(e: &M2mError) -> bool {
    (4000..5000).contains(&e.rsc.code())
}

/// The query names that are filter criteria of the specification this CSE does not evaluate.
const UNSUPPORTED_FILTERS: [&str; 4] = ["smf", "cfs", "cfq", "arp"];

/// Upper bound for one parser call on a 64 KiB input in a debug build on a loaded 2-core machine: far
/// above the few milliseconds a linear parser needs, far below what a quadratic one would take.
const SLOW: Duration = Duration::from_secs(2);

/// A fixed number of cases, and no regression files: a failure found here becomes a named unit test of
/// its exact input next to the code it fixes.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < SLOW, "{what} took {took:?}");
    out
}

/// Short identifier-like text, printable ASCII, and any Unicode: the three kinds of string that reach
/// a parser.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,10}",
        "[ -~]{0,16}",
        ".{0,12}",
        "[/*%+&=;: .a-c0-9-]{0,16}",
    ]
}

/// JSON values whose object keys come mostly from `keys` and whose strings mostly from `words`, so that
/// generated values reach deep into a parser instead of failing at its first member.
fn json(keys: &'static [&'static str], words: &'static [&'static str]) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..70).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(words).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![3 => select(keys).prop_map(str::to_owned), 1 => text()];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Every attribute short name of the schema tables, and the members of their complex types.
const SCHEMA_KEYS: &[&str] = &[
    "rn", "ty", "ri", "pi", "ct", "lt", "st", "et", "lbl", "acpi", "at", "aa", "daci", "cr", "pv",
    "pvs", "acr", "acor", "acop", "acco", "acaf", "acod", "actw", "acip", "aclr", "ipv4", "ipv6",
    "accc", "accr", "chty", "spty", "api", "aei", "apn", "poa", "rr", "nl", "csz", "srv", "nfu",
    "or", "mni", "mbs", "mia", "cni", "cbs", "li", "cnf", "cs", "con", "conr", "mt", "cnm", "mnm",
    "mid", "mtv", "gn", "macp", "ssi", "csy", "cb", "csi", "cst", "dcse", "mei", "tri", "trn",
    "esi", "nu", "enc", "exc", "nct", "nec", "su", "bn", "ln", "rl", "psn", "pn", "nsp", "cbs",
    "om", "atr", "net", "chty", "apci", "aai", "aae", "ari", "m2m:cnt", "m2m:ae", "m2m:acp",
];
/// Strings that are valid for some attribute kind, so that the checks past the type test run.
const SCHEMA_WORDS: &[&str] = &[
    "20991231T235959",
    "20991231T235959,5",
    "20200101T000000",
    "99991231T235960,999999999",
    "Nmyapp",
    "rApp",
    "text/plain:0",
    "application/json:1:2",
    "a/b:3",
    "PT10S",
    "P1DT2H",
    "P",
    "PT",
    "2a",
    "3",
    "10",
    "0",
    "la",
    "cnt-1",
    "/id-in/Cae1",
    "Cae1",
    "all",
    "10.0.0.0/8",
    "::1/128",
    "1.2.3.4/33",
    "DE",
    "* * * * * * *",
    "xml",
    "json",
];

// ---------------------------------------------------------------------------------------------------------
// HTTP binding (TS-0009): decoding arbitrary requests and responses

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        6 => select(vec![Method::GET, Method::PUT, Method::POST, Method::DELETE]),
        1 => select(vec![
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
            Method::CONNECT,
        ]),
        1 => "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).expect("token")),
    ]
}

/// Query field names the decoder knows, and some it does not.
const QUERY_KEYS: &[&str] = &[
    "rcn", "drt", "rt", "atrl", "fu", "fo", "ty", "lbl", "cty", "lim", "ofst", "lvl", "crb", "cra",
    "ms", "us", "exb", "exa", "sts", "stb", "sza", "szb", "smf", "cfs", "cfq", "arp", "rp", "da",
    "rids", "cr", "mni", "rn", "x", "",
];
const QUERY_WORDS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "42",
    "-1",
    "2+3",
    "2 3",
    "a+b",
    "18446744073709551616",
    "4294967296",
    "20260101T000000",
    "20260101T000000,5",
    "2026-01-01",
    "%ff",
    "%",
    "%2",
    "%2B",
    "%20",
    "%C3%A9",
    "%E2%82",
    "+",
    "",
];

/// One `name=value` pair, percent-escaped or raw.
fn query_pair() -> impl Strategy<Value = String> {
    (
        prop_oneof![select(QUERY_KEYS).prop_map(str::to_owned), "[a-z%0-9]{0,5}"],
        prop::option::of(prop_oneof![
            select(QUERY_WORDS).prop_map(str::to_owned),
            "[A-Za-z0-9%+.:,_~-]{0,12}",
        ]),
    )
        .prop_map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
}

/// A Request-Target: a path of the three TS-0009 forms (or none) and an optional query.
fn request_target() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[A-Za-z0-9._~-]{1,8}",
        "[A-Za-z0-9%._~!$'()*,;:@-]{0,8}",
        select(vec!["%ff", "%", "%zz", "%2F", "%C3%A9", "~", "_", ".."]).prop_map(str::to_owned),
    ];
    (
        select(vec!["/", "/~/", "/_/", "", "*", "//"]),
        prop::collection::vec(segment, 0..5),
        prop::option::of(prop::collection::vec(query_pair(), 0..6)),
    )
        .prop_map(|(prefix, segs, query)| {
            let mut s = format!("{prefix}{}", segs.join("/"));
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q.join("&"));
            }
            s
        })
}

const HEADER_NAMES: &[&str] = &[
    "x-m2m-ri",
    "x-m2m-origin",
    "x-m2m-rvi",
    "x-m2m-rsc",
    "x-m2m-rtu",
    "x-m2m-ot",
    "x-m2m-ret",
    "x-m2m-rst",
    "x-m2m-oet",
    "x-m2m-gid",
    "x-m2m-ec",
    "x-m2m-cts",
    "x-m2m-cto",
    "content-type",
    "content-location",
    "accept",
];
const HEADER_WORDS: &[&str] = &[
    "application/json",
    "application/json;ty=3",
    "application/json; ty=2",
    "application/vnd.onem2m-res+json;ty=1",
    "application/json;ty=5",
    "application/json;ty=28",
    "application/json;ty=777",
    "application/json;ty=",
    "application/json;ty=99999999",
    "APPLICATION/JSON;TY=3",
    "application/xml;ty=2",
    "text/plain",
    "2000",
    "4004",
    "5000",
    "9999",
    "65536",
    "-1",
    "1",
    "18446744073709551616",
    "Cae1",
    "/id-in/Cae1",
    "r1",
    "a&b&&c",
    "",
];

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        3 => select(HEADER_WORDS).prop_map(HeaderValue::from_static),
        2 => "[ -~]{0,20}".prop_map(|s| HeaderValue::from_str(&s).expect("visible ASCII")),
        // Bytes outside visible ASCII (obs-text) are legal in HTTP but not text.
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_filter_map("a header value", |b| {
            HeaderValue::from_bytes(&b).ok()
        }),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        4 => select(HEADER_NAMES).prop_map(HeaderName::from_static),
        1 => "[a-z-]{1,10}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("token")),
    ];
    (
        // Most requests carry a request identifier and a content type, so that decoding goes past
        // the first checks.
        prop::option::weighted(0.9, "[!-~]{1,10}"),
        prop::option::weighted(
            0.7,
            prop_oneof![
                3 => select(&HEADER_WORDS[..10]).prop_map(HeaderValue::from_static),
                1 => header_value(),
            ],
        ),
        prop::collection::vec((name, header_value()), 0..6),
    )
        .prop_map(|(ri, ct, pairs)| {
            let mut h = HeaderMap::new();
            if let Some(ri) = ri {
                h.insert(
                    "x-m2m-ri",
                    HeaderValue::from_str(&ri).expect("visible ASCII"),
                );
            }
            if let Some(ct) = ct {
                h.insert("content-type", ct);
            }
            for (k, v) in pairs {
                h.append(k, v);
            }
            h
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => json(SCHEMA_KEYS, SCHEMA_WORDS).prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => select(vec!["{", "[]", "null", "\"x\"", "{\"m2m:cnt\":{}}", "\u{feff}{}", "1e999"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// The refusal is allowed for this input: 4xxx, or 5001 for a feature the request itself names.
fn check_request_refusal(e: &M2mError, target: &str, headers: &HeaderMap) {
    if is_client_error(e) {
        return;
    }
    assert_eq!(
        e.rsc,
        ResponseStatusCode::NotImplemented,
        "{target}: refused with {} ({})",
        e.rsc,
        e.dbg
    );
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let names_filter = UNSUPPORTED_FILTERS
        .iter()
        .chain(m2m_core::http_binding::UNSUPPORTED_QUERY_FIELDS)
        .any(|f| query.split('&').any(|p| p.split('=').next() == Some(*f)));
    let names_type = headers.get_all("content-type").iter().any(|v| {
        v.as_bytes()
            .to_ascii_lowercase()
            .windows(3)
            .any(|w| w == b"ty=")
    });
    assert!(
        names_filter || names_type,
        "{target}: 5001 ({}) without an unsupported feature in the request",
        e.dbg
    );
}

proptest! {
    #![proptest_config(config(768))]

    /// Any method, Request-Target, headers and body: a request primitive, or a 4xxx refusal.
    #[test]
    fn decode_request_never_fails_badly(
        m in method(),
        target in request_target(),
        h in headers(),
        body in body(),
    ) {
        let Ok(uri) = target.parse::<http::Uri>() else {
            // The HTTP layer never hands such a target to the binding.
            return Ok(());
        };
        match decode_request(&m, &uri, &h, &body, schema::is_attribute_name) {
            Ok(req) => {
                prop_assert!(!req.rqi.is_empty());
                prop_assert_eq!(Some(req.rqi.as_str()), h.get("x-m2m-ri").and_then(|v| v.to_str().ok()));
                prop_assert_eq!(req.pc.is_some(), !body.is_empty());
                if let Some(rcn) = req.rcn {
                    prop_assert!(rcn.valid_for(req.op, req.is_discovery()));
                }
                let expected_op = match m {
                    Method::GET => Operation::Retrieve,
                    Method::PUT => Operation::Update,
                    Method::DELETE => Operation::Delete,
                    Method::POST if req.ty.is_some() => Operation::Create,
                    Method::POST => Operation::Notify,
                    _ => return Err(TestCaseError::fail(format!("method {m} accepted"))),
                };
                prop_assert_eq!(req.op, expected_op);
            }
            Err(e) => check_request_refusal(&e, &target, &h),
        }
    }

    /// Any status, headers and body of a peer's answer: a response primitive, 4000 for a malformed one,
    /// or 5103 for a peer that is not a oneM2M entity and reported an error.
    #[test]
    fn decode_response_never_fails_badly(
        status in 100u16..1000,
        h in headers(),
        body in body(),
    ) {
        let status = StatusCode::from_u16(status).expect("100..1000");
        match decode_response(status, &h, &body) {
            Ok(resp) => prop_assert_eq!(resp.pc.is_some(), !body.is_empty()),
            Err(e) => prop_assert!(
                e.rsc == ResponseStatusCode::BadRequest
                    || (e.rsc == ResponseStatusCode::TargetNotReachable
                        && !h.contains_key("x-m2m-rsc")
                        && !status.is_success()),
                "{}: {}", e.rsc, e.dbg
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP binding: valid primitives survive encode then decode

/// A valid `To` in one of the three scopes, built from identifier segments.
///
/// A CSE-relative `To` whose first segment is `~` or `_` is left out: TS-0009 table 6.2.2.1-1 maps it to
/// the path of an SP-relative or absolute `To` (`/~/...`, `/_/...`), and it names nothing anyway (a CSEBase
/// name starts with a letter or digit, resourceIDs are the CSE's own).
fn address() -> impl Strategy<Value = String> {
    let seg = "[A-Za-z0-9._~-]{1,8}";
    (
        0..3usize,
        "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,2}",
        seg.prop_filter("not a TS-0009 scope marker", |s| s != "~" && s != "_"),
        prop::collection::vec(seg, 0..4),
    )
        .prop_map(|(scope, sp, cse, path)| {
            let tail: String = path.iter().map(|p| format!("/{p}")).collect();
            match scope {
                0 => format!("{cse}{tail}"),
                1 => format!("/{cse}{tail}"),
                _ => format!("//{sp}/{cse}{tail}"),
            }
        })
}

/// Header text as a peer sends it: visible ASCII, inner spaces, no edge whitespace.
fn header_text() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,14}[!-~])?"
}

fn timestamp() -> impl Strategy<Value = String> {
    // 2000-01-01 .. 2100-01-01, microsecond precision: what time::normalize produces.
    (946_684_800_000_000i64..4_102_444_800_000_000).prop_map(|us| {
        m2m_core::time::format(chrono::DateTime::from_timestamp_micros(us).expect("in range"))
    })
}

/// A label as TS-0004 allows it (xs:token: no white space), so a list of them has one text form.
fn token() -> impl Strategy<Value = String> {
    "[!-~\u{e9}\u{4e2d}]{1,8}"
}

/// Attribute names the receiver treats as attribute conditions (and no other query field).
fn attribute_condition_name() -> impl Strategy<Value = String> {
    select(vec!["cr", "mni", "mbs", "api", "rn", "cnf", "nu", "acpi"]).prop_map(str::to_owned)
}

fn filter_criteria() -> impl Strategy<Value = FilterCriteria> {
    let time = || prop::option::of(timestamp());
    let num = || prop::option::of(any::<u64>());
    (
        (time(), time(), time(), time(), time(), time()),
        (num(), num(), num(), num(), num(), num()),
        prop::option::of(any::<u32>()),
        prop::collection::vec(token(), 0..4),
        prop::collection::vec(any::<u16>(), 0..4),
        prop::collection::vec("[a-z]{1,6}/[a-z0-9.+-]{1,8}", 0..3),
        prop::collection::vec((attribute_condition_name(), ".{0,10}"), 0..3),
        prop::option::of(select(vec![
            FilterUsage::Discovery,
            FilterUsage::ConditionalRetrieval,
        ])),
        select(vec![FilterOperation::And, FilterOperation::Or]),
    )
        .prop_map(
            |(t, n, level, labels, tys, ctys, attributes, fu, fo)| FilterCriteria {
                created_before: t.0,
                created_after: t.1,
                modified_since: t.2,
                unmodified_since: t.3,
                expire_before: t.4,
                expire_after: t.5,
                state_tag_smaller: n.0,
                state_tag_bigger: n.1,
                size_above: n.2,
                size_below: n.3,
                limit: n.4,
                offset: n.5,
                level,
                labels,
                resource_types: tys,
                content_types: ctys,
                attributes,
                filter_usage: fu,
                filter_operation: fo,
                ..FilterCriteria::default()
            },
        )
}

const OPERATIONS: [Operation; 5] = [
    Operation::Create,
    Operation::Retrieve,
    Operation::Update,
    Operation::Delete,
    Operation::Notify,
];
const RESULT_CONTENTS: [ResultContent; 10] = [
    ResultContent::Nothing,
    ResultContent::Attributes,
    ResultContent::HierarchicalAddress,
    ResultContent::HierarchicalAddressAndAttributes,
    ResultContent::AttributesAndChildResources,
    ResultContent::AttributesAndChildResourceReferences,
    ResultContent::ChildResourceReferences,
    ResultContent::OriginalResource,
    ResultContent::ChildResources,
    ResultContent::ModifiedAttributes,
];

/// JSON content without floating point numbers (whose text form need not be exact).
fn content() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A valid request primitive of any operation, with every parameter the HTTP binding carries.
fn request() -> impl Strategy<Value = Request> {
    let opt_text = || prop::option::of(header_text());
    (
        (
            select(OPERATIONS.to_vec()),
            address(),
            prop::option::of("[A-Za-z0-9._~/:@-]{1,16}"),
            header_text(),
            "[1-5]a?",
            select(ResourceType::ALL.to_vec()),
            prop::option::of(content()),
            prop::option::of(select(RESULT_CONTENTS.to_vec())),
        ),
        (
            filter_criteria(),
            select(vec![DiscResType::Structured, DiscResType::Unstructured]),
            select(vec![
                ResponseType::NonBlockingSynch,
                ResponseType::NonBlockingAsynch,
                ResponseType::Blocking,
                ResponseType::FlexBlocking,
            ]),
            prop::collection::vec("[!-%'-~]{1,10}", 0..3),
            (
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
                opt_text(),
            ),
            prop::collection::vec("[a-z]{1,4}", 0..3),
        ),
    )
        .prop_map(|(a, b)| {
            let (op, to, from, rqi, rvi, ty, pc, rcn) = a;
            let (fc, drt, rt, rtu, (ot, rqet, rset, oet, gid, ec), atrl) = b;
            let mut req = Request::new(op, to, from, rqi);
            req.rvi = Some(rvi);
            // CREATE carries its type (a POST without one is a NOTIFY); NOTIFY carries none.
            req.ty = match op {
                Operation::Notify => None,
                _ => Some(ty),
            };
            req.pc = pc;
            req.fc = Box::new(fc);
            req.rcn = rcn.filter(|r| r.valid_for(op, req.is_discovery()));
            req.drt = drt;
            req.rt = rt;
            req.rtu = (!rtu.is_empty()).then_some(rtu);
            (req.ot, req.rqet, req.rset, req.oet, req.gid, req.ec) = (ot, rqet, rset, oet, gid, ec);
            req.atrl = atrl;
            req
        })
}

const ALL_CODES: [ResponseStatusCode; 12] = [
    ResponseStatusCode::Accepted,
    ResponseStatusCode::Ok,
    ResponseStatusCode::Created,
    ResponseStatusCode::Deleted,
    ResponseStatusCode::Updated,
    ResponseStatusCode::BadRequest,
    ResponseStatusCode::NotFound,
    ResponseStatusCode::OriginatorHasNoPrivilege,
    ResponseStatusCode::EsprimBadMac,
    ResponseStatusCode::InternalServerError,
    ResponseStatusCode::TargetNotReachable,
    ResponseStatusCode::MaxNumberOfMemberExceeded,
];

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn requests_round_trip_through_http(req in request()) {
        prop_assert!(Address::parse(&req.to).is_ok(), "generator made a bad To {}", req.to);
        let http = encode_request(&req, "http", "127.0.0.1:8080", m2m_core::serialization::Serialization::Json).expect("a valid request encodes");
        let back = decode_request(http.method(), http.uri(), http.headers(), http.body(), schema::is_attribute_name)
            .map_err(|e| TestCaseError::fail(format!("{}: {} ({})", http.uri(), e, e.dbg)))?;
        // The receiver also learns the serialization its answer will be in (Accept).
        let mut expected = req;
        expected.accept = Some(m2m_core::serialization::Serialization::Json);
        prop_assert_eq!(back, expected, "via {}", http.uri());
    }

    #[test]
    fn responses_round_trip_through_http(
        rsc in select(ALL_CODES.to_vec()),
        rqi in header_text(),
        pc in prop::option::of(content()),
        rvi in prop::option::of("[1-5]a?"),
        ot in prop::option::of(header_text()),
        cts in prop::option::of(1u8..=2),
        cto in prop::option::of(any::<u64>()),
        location in prop::option::of(address()),
    ) {
        let mut resp = Response::new(rsc, rqi, pc);
        (resp.rvi, resp.ot, resp.cts, resp.cto, resp.location) = (rvi, ot, cts, cto, location);
        let http = encode_response(&resp, m2m_core::serialization::Serialization::Json);
        let back = decode_response(http.status(), http.headers(), http.body())
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        // From and To are not carried by an HTTP response (TS-0009 clause 6.4).
        prop_assert_eq!(back, resp);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Addresses (TS-0001 clause 7.2)

/// The text form of a parsed address, as [`Address::parse`] reads it.
fn render(a: &Address) -> String {
    let tail = if a.path.is_empty() {
        String::new()
    } else {
        format!("/{}", a.path)
    };
    match &a.scope {
        Scope::CseRelative => a.path.clone(),
        Scope::SpRelative(c) => format!("{}{tail}", c.sp_relative()),
        Scope::Absolute(sp, c) => format!("//{}/{}{tail}", sp.fqdn(), c.bare()),
    }
}

/// `to` as the parser normalizes it: trailing slashes dropped, the SP-ID in lower case.
fn normalized(to: &str) -> String {
    let to = to.trim_end_matches('/');
    match to.strip_prefix("//") {
        Some(rest) => {
            let (sp, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!("//{}{tail}", sp.to_ascii_lowercase())
        }
        None => to.to_owned(),
    }
}

fn address_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[A-Za-z0-9._~-]{1,6}",
        1 => Just(String::new()),
        1 => "[ -~]{1,4}",
        1 => ".{1,3}",
    ];
    (
        select(vec!["", "/", "//", "///"]),
        prop::collection::vec(piece, 0..5),
        select(vec!["", "/", "//"]),
    )
        .prop_map(|(pre, pieces, post)| format!("{pre}{}{post}", pieces.join("/")))
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any text: an address whose every segment is an identifier, or a 4000.
    #[test]
    fn address_parse_is_total_and_exact(to in prop_oneof![address_like(), text(), address()]) {
        match Address::parse(&to) {
            Ok(a) => {
                prop_assert!(a.segments().all(|s| !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))));
                prop_assert_eq!(a.segments().count(), if a.path.is_empty() { 0 } else { a.path.split('/').count() });
                if a.scope == Scope::CseRelative {
                    prop_assert!(!a.path.is_empty());
                }
                prop_assert_eq!(render(&a), normalized(&to));
                prop_assert_eq!(Address::parse(&render(&a)).ok(), Some(a));
            }
            Err(e) => prop_assert_eq!(e.rsc, ResponseStatusCode::BadRequest, "{}", e.dbg),
        }
    }

    /// Every valid address parses back to itself.
    #[test]
    fn valid_addresses_parse(to in address()) {
        let a = Address::parse(&to).map_err(|e| TestCaseError::fail(e.dbg))?;
        prop_assert_eq!(render(&a), normalized(&to));
    }
}

// ---------------------------------------------------------------------------------------------------------
// CREATE / UPDATE validation (TS-0004 clauses 7.3.3.3, 7.3.3.4)

/// A minimal valid CREATE content of each type (what the schema's own tests use).
fn minimal(ty: ResourceType) -> Map<String, Value> {
    let v = match ty {
        ResourceType::AccessControlPolicy => serde_json::json!(
            {"pv": {"acr": []}, "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}
        ),
        ResourceType::Ae => serde_json::json!({"api": "Nmyapp", "rr": false, "srv": ["3"]}),
        ResourceType::AeAnnc => serde_json::json!({"lnk": "/id-mn/Sphone"}),
        ResourceType::Action => serde_json::json!({"evc": {"optr": 1, "sbjt": "lbl", "thld": "x"},
            "evm": 1, "orc": "/id-in/Cae1", "apv": {"op": 3, "fr": "Cae1", "pc": {}}}),
        ResourceType::Dependency => serde_json::json!({"sfc": true,
            "evc": {"optr": 3, "sbjt": "cni", "thld": 1}, "rri": "/id-in/cnt1"}),
        ResourceType::ContentInstance => serde_json::json!({"con": "21.5"}),
        ResourceType::CrossResourceSubscription => serde_json::json!(
            {"nu": ["/id-in/Cae1"], "twt": 1, "tws": "PT4S", "srat": ["/id-in/sub1"]}
        ),
        ResourceType::Group => serde_json::json!({"mid": [], "mnm": 10}),
        ResourceType::LocalMulticastGroup => serde_json::json!(
            {"mad": {"ip4": "239.255.77.1"}, "mgft": "/in/mcg-1", "mli": ["/mn/cnt1"],
             "gck": "a.b.c.d.e", "spk": {"kty": "EC"}}
        ),
        ResourceType::RemoteCse => {
            serde_json::json!({"cb": "/mn-cse/cb", "rr": true, "srv": ["2a", "3"]})
        }
        ResourceType::Subscription => serde_json::json!({"nu": ["/id-in/Cae1"]}),
        ResourceType::ServiceSubscribedAppRule => {
            serde_json::json!({"aai": ["Nlock*"], "aae": ["C*"]})
        }
        ResourceType::NotificationTargetMgmtPolicyRef => serde_json::json!({"ntu": ["Cae1"]}),
        ResourceType::MgmtObj => serde_json::json!({"mgd": 1006, "btl": 50, "bts": 1}),
        ResourceType::Node => serde_json::json!({"ni": "urn:sn:1234"}),
        ResourceType::Schedule => serde_json::json!({"se": {"sce": ["* * 8-20 * * * *"]}}),
        ResourceType::LocationPolicy => serde_json::json!({"los": 2}),
        ResourceType::TimeSyncBeacon => serde_json::json!({"bcnc": 1, "bcnu": ["/id-in/Cae1"]}),
        ResourceType::DynamicAuthorizationConsultation => {
            serde_json::json!({"dae": true, "dap": ["https://das.example.com"]})
        }
        ResourceType::Role => serde_json::json!({"rlid": "r@roles.example.com", "tkis": "CAdmin",
            "tkhd": "Cae1", "tknb": "20261201T000000", "tkna": "20271201T000000"}),
        ResourceType::Token => serde_json::json!({"tkid": "t@das.example.com", "tkob": "a.b.c"}),
        ResourceType::SemanticDescriptor => {
            serde_json::json!({"dcrp": 5, "dsp": "PGE+IDxiPiA8Yz4gLg=="})
        }
        ResourceType::NotificationTargetPolicy => serde_json::json!({"acn": 1, "plbl": "Default"}),
        ResourceType::Container
        | ResourceType::CseBase
        | ResourceType::PolicyDeletionRules
        | ResourceType::PollingChannel
        | ResourceType::Request
        | ResourceType::FlexContainerInstance
        | ResourceType::TimeSeries => serde_json::json!({}),
        ResourceType::FlexContainer => {
            serde_json::json!({"cnd": "org.onem2m.common.moduleclass.lock"})
        }
        ResourceType::TimeSeriesInstance => {
            serde_json::json!({"dgt": "20261205T120000", "con": "21.5"})
        }
    };
    match v {
        Value::Object(m) => m,
        _ => unreachable!("objects above"),
    }
}

/// The codes a validation may answer with for `ty`: 4000, and 4005 for the operations the type has not.
fn check_validation_error(e: &M2mError, ty: ResourceType, update: bool) {
    let not_allowed = ty == ResourceType::CseBase || (update && ty.is_instance());
    let expected = if not_allowed {
        ResponseStatusCode::OperationNotAllowed
    } else {
        ResponseStatusCode::BadRequest
    };
    assert_eq!(e.rsc, expected, "<{ty}> update={update}: {}", e.dbg);
}

/// An attribute name of `ty` mostly, else any name.
fn attribute_name(ty: ResourceType) -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = schema::attributes(ty).iter().map(|a| a.name).collect();
    prop_oneof![6 => select(names).prop_map(str::to_owned), 1 => select(SCHEMA_KEYS).prop_map(str::to_owned), 1 => text()]
}

/// A type and a CREATE/UPDATE content whose names are mostly attributes of that type.
fn typed_content() -> impl Strategy<Value = (ResourceType, Map<String, Value>)> {
    select(ResourceType::ALL.to_vec()).prop_flat_map(|ty| {
        let content =
            prop::collection::vec((attribute_name(ty), json(SCHEMA_KEYS, SCHEMA_WORDS)), 0..5)
                .prop_map(|kv| kv.into_iter().collect::<Map<String, Value>>());
        (Just(ty), content)
    })
}

fn object(
    keys: &'static [&'static str],
    words: &'static [&'static str],
) -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![4 => select(keys).prop_map(str::to_owned), 1 => text()];
    prop::collection::vec((key, json(keys, words)), 0..6).prop_map(|kv| kv.into_iter().collect())
}

proptest! {
    #![proptest_config(config(768))]

    /// Any content of any type: accepted, or 4000 (4005 for a type without that operation).
    #[test]
    fn validation_never_fails_badly((ty, content) in typed_content()) {
        if let Err(e) = validate_create(ty, &content) {
            check_validation_error(&e, ty, false);
        }
        if let Err(e) = validate_update(ty, &content) {
            check_validation_error(&e, ty, true);
        }
    }

    /// One attribute added to a valid CREATE, or alone in an UPDATE: accepted, or refused with a reason
    /// that names that attribute.
    #[test]
    fn refusals_name_the_attribute(
        (ty, name) in select(ResourceType::ALL.to_vec()).prop_flat_map(|ty| (Just(ty), attribute_name(ty))),
        value in json(SCHEMA_KEYS, SCHEMA_WORDS),
    ) {
        let mut create = minimal(ty);
        create.insert(name.clone(), value.clone());
        let update: Map<String, Value> = [(name.clone(), value)].into_iter().collect();
        for (content, is_update) in [(create, false), (update, true)] {
            let result = if is_update { validate_update(ty, &content) } else { validate_create(ty, &content) };
            if let Err(e) = result {
                check_validation_error(&e, ty, is_update);
                if e.rsc == ResponseStatusCode::BadRequest {
                    prop_assert!(e.dbg.contains(&format!("'{name}")), "<{}> {}: {}", ty, name, e.dbg);
                }
            }
        }
    }

    /// Any Content of a CREATE or UPDATE: its resource representation, or 4000.
    #[test]
    fn inner_content_is_total(ty in select(ResourceType::ALL.to_vec()), pc in json(SCHEMA_KEYS, SCHEMA_WORDS)) {
        let wrapped = serde_json::json!({ ty.root_name(): pc.clone() });
        for v in [pc, wrapped] {
            match inner_content(ty, &v) {
                // A flexContainer's root is its specialization's name, whatever it is.
                Ok(inner) if ty == ResourceType::FlexContainer => {
                    prop_assert_eq!(v.as_object().map(|o| o.len()), Some(1));
                    prop_assert_eq!(Some(&Value::Object(inner.clone())), v.as_object().and_then(|o| o.values().next()));
                }
                Ok(inner) => prop_assert_eq!(Some(&Value::Object(inner.clone())), v.get(ty.root_name())),
                Err(e) if ty == ResourceType::FlexContainer => prop_assert!(
                    matches!(e.rsc, ResponseStatusCode::BadRequest | ResponseStatusCode::SpecializationSchemaNotFound),
                    "{:?}", e.rsc
                ),
                Err(e) => prop_assert_eq!(e.rsc, ResponseStatusCode::BadRequest),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Filter criteria (TS-0004 clause 6.3.5.8)

fn resource() -> impl Strategy<Value = Map<String, Value>> {
    const KEYS: &[&str] = &[
        "ty", "ct", "lt", "et", "st", "cs", "lbl", "cnf", "cr", "mni", "rn",
    ];
    const WORDS: &[&str] = &[
        "20260101T000000",
        "20260101T000000,5",
        "not a time",
        "text/plain:0",
        "a",
        "b",
        "Cx",
        "true",
    ];
    object(KEYS, WORDS)
}

/// `(name, value)` pairs as a query string brings them, names mostly filter criteria.
fn filter_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        4 => select(QUERY_KEYS).prop_map(str::to_owned),
        1 => text(),
    ];
    let value = prop_oneof![
        3 => select(QUERY_WORDS).prop_map(str::to_owned),
        1 => timestamp(),
        2 => text(),
    ];
    prop::collection::vec((name, value), 0..8)
}

/// The condition-carrying filter criteria and the attribute conditions (not lim/ofst/lvl/fu).
const CONDITION_KEYS: &[&str] = &[
    "crb", "cra", "ms", "us", "exb", "exa", "sts", "stb", "sza", "szb", "lbl", "ty", "cty", "cr",
    "mni",
];

fn is_attr(n: &str) -> bool {
    n == "cr" || n == "mni"
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any query field: taken, left for the caller, or refused with 4000 (5001 only for the conditions
    /// of the specification that are not evaluated here).
    #[test]
    fn filter_fields_never_fail_badly(pairs in filter_pairs(), res in resource()) {
        let mut fc = FilterCriteria::default();
        for (k, v) in &pairs {
            match fc.take_query_field(k, v, schema::is_attribute_name) {
                Ok(_) => {}
                Err(e) if e.rsc == ResponseStatusCode::NotImplemented => {
                    prop_assert!(UNSUPPORTED_FILTERS.contains(&k.as_str()), "{k}: {}", e.dbg)
                }
                Err(e) => prop_assert_eq!(e.rsc, ResponseStatusCode::BadRequest, "{}={}: {}", k, v, e.dbg),
            }
        }
        // Evaluation of whatever was taken, against any resource, is total.
        let _ = fc.matches(&res);
        prop_assert!(FilterCriteria::default().matches(&res));
    }

    /// Several conditions combine as their filterOperation says: AND of each alone, or OR.
    #[test]
    fn conditions_combine_by_filter_operation(
        picks in prop::sample::subsequence(CONDITION_KEYS.to_vec(), 0..5),
        values in prop::collection::vec(prop_oneof![select(QUERY_WORDS).prop_map(str::to_owned), timestamp()], 5),
        or in any::<bool>(),
        res in resource(),
    ) {
        let mut singles = Vec::new();
        let mut all = FilterCriteria::default();
        for (k, v) in picks.iter().zip(&values) {
            let mut one = FilterCriteria::default();
            // A value that is refused, or that names nothing (`lbl=+`), adds no condition.
            if one.take_query_field(k, v, is_attr).is_err() || one == FilterCriteria::default() {
                continue;
            }
            all.take_query_field(k, v, is_attr).expect("accepted alone");
            singles.push(one.matches(&res));
        }
        if or {
            all.take_query_field("fo", "2", is_attr).expect("fo=2");
        }
        let want = if singles.is_empty() {
            true
        } else if or {
            singles.iter().any(|m| *m)
        } else {
            singles.iter().all(|m| *m)
        };
        prop_assert_eq!(all.matches(&res), want);
    }

    /// Filter criteria written as query fields (what both encoders write) read back the same.
    #[test]
    fn filter_criteria_round_trip_as_query_fields(fc in filter_criteria()) {
        let mut back = FilterCriteria::default();
        for (k, v) in fc.fields() {
            let text = match v {
                Value::String(s) => s,
                Value::Array(items) => items.iter().map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }).collect::<Vec<_>>().join(" "),
                other => other.to_string(),
            };
            prop_assert!(back.take_query_field(k, &text, |n| fc.attributes.iter().any(|(a, _)| a == n))
                .map_err(|e| TestCaseError::fail(e.dbg))?, "{} not taken", k);
        }
        prop_assert_eq!(back, fc);
    }
}

// ---------------------------------------------------------------------------------------------------------
// m2m:securityInfo (TS-0004 clause 6.3.5.48)

const SECI_KEYS: &[&str] = &[
    "m2m:seci", "sit", "ero", "epo", "eckm", "esri", "esrv", "esrx", "esks", "espa", "esk",
];
const SECI_WORDS: &[&str] = &["a.b.c.d.e", "AA==", "FgMB", "!!", "20300101T000000", "r1"];

/// Objects shaped like a securityInfo (a `sit` near the valid ones, some of its members), or any JSON.
fn seci_like() -> impl Strategy<Value = Value> {
    let member = || {
        prop::option::weighted(
            0.3,
            prop_oneof![text().prop_map(Value::String), json(SECI_KEYS, SECI_WORDS)],
        )
    };
    let other = prop::option::weighted(0.1, (text(), json(SECI_KEYS, SECI_WORDS)));
    prop_oneof![
        3 => (prop::option::weighted(0.9, 0u64..9), member(), member(), member(), other)
            .prop_map(|(sit, ero, epo, eckm, other)| {
                let mut m = Map::new();
                for (k, v) in [("sit", sit.map(Value::from)), ("ero", ero), ("epo", epo), ("eckm", eckm)] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                if let Some((k, v)) = other {
                    m.insert(k, v);
                }
                Value::Object(m)
            }),
        1 => json(SECI_KEYS, SECI_WORDS),
    ]
}

fn security_info() -> impl Strategy<Value = SecurityInfo> {
    let ero = (
        ".{0,8}",
        "[0-9a-f]{32}",
        timestamp(),
        prop::collection::vec(Just(EsprimKeyGenAlgId::HmacSha256), 0..2),
        prop::collection::vec(select(EsprimProtocolAndAlgId::ALL.to_vec()), 0..4),
    )
        .prop_map(|(esri, esrv, esrx, esks, espa)| ReceiverEsprimRandObject {
            esri,
            esrv,
            esrx,
            esks,
            espa,
        });
    prop_oneof![
        Just(SecurityInfo::rand_request()),
        ero.prop_map(SecurityInfo::rand_response),
        ".{0,40}".prop_map(SecurityInfo::esprim_object),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| SecurityInfo::escertke_message(&b)),
    ]
}

proptest! {
    #![proptest_config(config(768))]

    /// Any Content: a securityInfo with exactly the member its type calls for, or a refusal.
    #[test]
    fn security_info_from_any_json(v in seci_like(), wrap in prop::bool::weighted(0.8)) {
        let pc = if wrap { serde_json::json!({ "m2m:seci": v }) } else { v };
        if let Ok(si) = SecurityInfo::from_content(&pc) {
            prop_assert!(si.validate().is_ok());
            prop_assert_eq!(SecurityInfo::from_content(&si.to_content()), Ok(si.clone()));
            let _ = si.escertke_bytes();
        }
    }

    #[test]
    fn security_info_round_trips(si in security_info()) {
        let back = SecurityInfo::from_content(&si.to_content());
        prop_assert_eq!(back.as_ref(), Ok(&si));
        if let Some(text) = &si.eckm {
            let bytes = si.escertke_bytes().expect("our own base64");
            prop_assert_eq!(&SecurityInfo::escertke_message(&bytes).eckm, &Some(text.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Originator identities (TS-0001 clause 7.2, table 7.2-1)

fn sp_id() -> impl Strategy<Value = SpId> {
    "[A-Za-z0-9.-]{1,12}".prop_map(|s| SpId::parse(&s).unwrap())
}

/// CSE-IDs never start with `S` (that form is an SP-relative AE-ID).
fn cse_id() -> impl Strategy<Value = CseId> {
    "[A-RT-Za-z0-9_~-][A-Za-z0-9._~-]{0,8}".prop_map(|s| CseId::parse(&s).unwrap())
}

fn stem(letter: &'static str) -> impl Strategy<Value = AeStem> {
    "[A-Za-z0-9._~-]{1,8}".prop_map(move |s| AeStem::parse(&format!("{letter}{s}")).unwrap())
}

fn entity() -> impl Strategy<Value = EntityId> {
    prop_oneof![
        (sp_id(), cse_id()).prop_map(|(sp, cse)| EntityId::Cse { sp, cse }),
        (sp_id(), cse_id(), stem("C")).prop_map(|(sp, registrar, stem)| EntityId::CseAe {
            sp,
            registrar,
            stem
        }),
        (sp_id(), stem("S")).prop_map(|(sp, stem)| EntityId::SpAe { sp, stem }),
    ]
}

fn home() -> impl Strategy<Value = Home> {
    (sp_id(), prop::option::weighted(0.8, cse_id())).prop_map(|(sp, cse)| Home { sp, cse })
}

/// An entity and a home that often share its SP and CSE, so the relative forms are exercised.
fn entity_and_home() -> impl Strategy<Value = (EntityId, Home)> {
    (entity(), home(), 0..3u8).prop_map(|(e, h, near)| {
        let h = match near {
            0 => h,
            1 => Home {
                sp: e.sp().clone(),
                cse: h.cse,
            },
            _ => Home {
                sp: e.sp().clone(),
                cse: e.registrar().or(e.cse_id()).cloned().or(h.cse),
            },
        };
        (e, h)
    })
}

/// Strings shaped like originators: slashes, C/S stems, case changes, reserved characters.
fn originator_like() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just(String::new()),
        Just("S".to_owned()),
        Just("C".to_owned()),
        "[CSs][A-Za-z0-9]{0,4}",
        "[a-z-]{1,6}",
        "[A-Za-z0-9.*%~_ -]{1,6}",
        ".{1,3}",
    ];
    (
        prop_oneof![Just(""), Just("/"), Just("//")],
        prop::collection::vec(part, 1..5),
    )
        .prop_map(|(lead, parts)| format!("{lead}{}", parts.join("/")))
}

proptest! {
    #![proptest_config(config(512))]

    /// Every input parses into an entity or is refused with a 4xxx, and a parsed entity is what its
    /// text says: an SP-relative `/S...` is always an AE, never a CSE.
    #[test]
    fn originator_parse_is_total(from in prop_oneof![originator_like(), text()], home in home()) {
        match Originator::parse(Some(&from), &home) {
            Ok(Originator::Entity(e)) => {
                if from.starts_with("/S") || (!from.starts_with('/') && from.starts_with('S')) {
                    prop_assert!(e.is_ae(), "{from} read as {e}");
                }
                prop_assert_eq!(EntityId::parse(&e.absolute(), &home).ok(), Some(e));
            }
            Ok(Originator::Unassigned(_)) => prop_assert!(matches!(from.as_str(), "" | "C" | "S")),
            Err(e) => prop_assert!(is_client_error(&e), "{from}: {e:?}"),
        }
    }

    /// Every form of an entity that table 7.2-1 lets `home` read names the same entity.
    #[test]
    fn every_form_reads_back((e, home) in entity_and_home()) {
        prop_assert_eq!(EntityId::parse(&e.absolute(), &home).unwrap(), e.clone());
        prop_assert_eq!(EntityId::parse(&e.as_seen_from(&home), &home).unwrap(), e.clone());
        prop_assert_eq!(EntityId::parse(&e.shortest_from(&home), &home).unwrap(), e.clone());
        if *e.sp() == home.sp {
            prop_assert_eq!(EntityId::parse(&e.sp_relative(), &home).unwrap(), e.clone());
        }
        prop_assert_eq!(e.to_string(), e.absolute());
    }

    /// Two entities are equal exactly when their absolute forms are: normalization neither merges
    /// distinct entities nor splits one.
    #[test]
    fn normalization_is_exact(a in entity(), b in entity()) {
        prop_assert_eq!(a == b, a.absolute() == b.absolute());
    }

    /// The SP-ID is compared without case, CSE-IDs and AE-ID-Stems exactly: changing the case of
    /// any other letter names another entity (or none), never the same one.
    #[test]
    fn only_the_sp_id_ignores_case((e, home) in entity_and_home(), at in any::<prop::sample::Index>()) {
        let segments = e.segments();
        let sp_upper = format!("//{}/{}", segments[0].to_ascii_uppercase(), segments[1..].join("/"));
        prop_assert_eq!(EntityId::parse(&sp_upper, &home).unwrap(), e.clone());

        let rest = segments[1..].join("/");
        let letters: Vec<usize> = rest
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphabetic())
            .map(|(i, _)| i)
            .collect();
        if !letters.is_empty() {
            let i = letters[at.index(letters.len())];
            let mut flipped = rest.into_bytes();
            flipped[i] ^= 0x20;
            let flipped = format!("//{}/{}", segments[0], String::from_utf8(flipped).unwrap());
            prop_assert_ne!(EntityId::parse(&flipped, &home).ok(), Some(e));
        }
    }
}

#[test]
fn identities_over_the_length_limit_are_refused() {
    let home = Home::cse(SpId::parse("sp").unwrap(), CseId::parse("cse").unwrap());
    for id in [
        format!("C{}", "a".repeat(m2m_core::identity::MAX_ID_LEN)),
        format!("/cse/C{}", "a".repeat(m2m_core::identity::MAX_ID_LEN)),
    ] {
        let e = timed("EntityId::parse", || EntityId::parse(&id, &home)).unwrap_err();
        assert!(is_client_error(&e));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Adversarial sizes

/// 64 KiB inputs of the shapes that make naive parsers slow: long runs of a separator, escapes, deep
/// nesting, many list elements.
fn big_inputs() -> Vec<(&'static str, String)> {
    const N: usize = 64 * 1024;
    vec![
        ("letters", "a".repeat(N)),
        ("slashes", "/".repeat(N)),
        ("segments", "a/".repeat(N / 2)),
        ("escapes", "%41".repeat(N / 3)),
        ("bad escapes", "%ff".repeat(N / 3)),
        ("pluses", "+".repeat(N)),
        ("pairs", "lbl=a&".repeat(N / 6)),
        ("list", "2+".repeat(N / 2)),
        ("stars", "*a".repeat(N / 2)),
        ("digits", "9".repeat(N)),
        (
            "nested arrays",
            format!("{}{}", "[".repeat(N / 2), "]".repeat(N / 2)),
        ),
        ("nested objects", "{\"a\":".repeat(N / 5)),
        ("long string", format!("\"{}\"", "x".repeat(N))),
        (
            "many members",
            format!("{{{}\"z\":0}}", "\"a\":0,".repeat(N / 6)),
        ),
    ]
}

#[test]
fn parsers_take_bounded_time_on_64_kib_inputs() {
    let mut ri = HeaderMap::new();
    ri.insert("x-m2m-ri", HeaderValue::from_static("r1"));
    for (shape, input) in big_inputs() {
        let what = |p: &str| format!("{p} on 64 KiB of {shape}");
        timed(&what("Address::parse"), || Address::parse(&input).err());
        timed(&what("Originator::parse"), || {
            let home = Home::cse(SpId::parse("sp").unwrap(), CseId::parse("cse").unwrap());
            Originator::parse(Some(&input), &home).err()
        });
        timed(&what("filter"), || {
            let mut fc = FilterCriteria::default();
            for k in ["lbl", "ty", "crb", "lim", "cr"] {
                let _ = fc.take_query_field(k, &input, is_attr);
            }
            fc.matches(&Map::new())
        });
        let json_value = serde_json::from_str::<Value>(&input).ok();
        timed(&what("decode_request (body)"), || {
            let mut h = ri.clone();
            h.insert(
                "content-type",
                HeaderValue::from_static("application/json;ty=3"),
            );
            decode_request(
                &Method::POST,
                &"/cse-in".parse().unwrap(),
                &h,
                input.as_bytes(),
                schema::is_attribute_name,
            )
            .err()
        });
        timed(&what("decode_response (body)"), || {
            decode_response(StatusCode::OK, &ri, input.as_bytes()).err()
        });
        if let Ok(uri) = format!("/{input}").parse::<http::Uri>() {
            timed(&what("decode_request (path)"), || {
                decode_request(&Method::GET, &uri, &ri, b"", schema::is_attribute_name).err()
            });
        }
        if let Ok(uri) = format!("/cse-in?{input}").parse::<http::Uri>() {
            timed(&what("decode_request (query)"), || {
                decode_request(&Method::GET, &uri, &ri, b"", schema::is_attribute_name).err()
            });
        }
        if let Ok(v) = HeaderValue::from_str(&input) {
            timed(&what("decode_request (headers)"), || {
                let mut h = ri.clone();
                for name in ["x-m2m-origin", "x-m2m-rtu", "content-type", "x-m2m-ot"] {
                    h.insert(name, v.clone());
                }
                decode_request(
                    &Method::POST,
                    &"/cse-in".parse().unwrap(),
                    &h,
                    b"",
                    schema::is_attribute_name,
                )
                .err()
            });
        }
        let candidates = [
            Value::String(input.clone()),
            Value::Array(vec![Value::String(input.clone())]),
            json_value.unwrap_or(Value::Null),
        ];
        for v in candidates {
            timed(&what("schema validation"), || {
                for ty in ResourceType::ALL {
                    for name in ["rn", "lbl", "et", "cnf", "srv", "pv", "poa", "con"] {
                        let m: Map<String, Value> =
                            [(name.to_owned(), v.clone())].into_iter().collect();
                        let _ = validate_create(ty, &m);
                        let _ = validate_update(ty, &m);
                    }
                }
            });
            timed(&what("securityInfo"), || {
                SecurityInfo::from_content(
                    &serde_json::json!({"m2m:seci": {"sit": 5, "epo": v.clone()}}),
                )
                .err()
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The CoAP binding (TS-0008) and its message layer (RFC 7252, RFC 7959)

/// CoAP messages built from parts a peer controls: any code, options among the ones the binding
/// reads (oneM2M and standard) and random others, any values, any payload.
fn coap_message() -> impl Strategy<Value = Vec<u8>> {
    // Mostly the options the binding reads (Uri-Path and Uri-Query most), sometimes any other.
    let option = prop_oneof![
        6 => select(vec![11u16, 11, 11, 15, 15, 279, 267, 12]),
        3 => select(vec![
            3u16, 7, 17, 23, 27, 60, 258, 259, 263, 271, 275, 291, 295, 299, 303, 307, 311, 319,
            323, 327, 331, 335, 339,
        ]),
        1 => 0u16..3000,
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        "[a-z0-9=+/~_.-]{0,24}".prop_map(String::into_bytes),
        Just(b"fu=1".to_vec()),
        Just(b"ty=2+3".to_vec()),
        Just(b"rcn=4".to_vec()),
    ];
    (
        any::<u8>(),
        select(vec![1u8, 1, 2, 2, 3, 4, 0, 5, 0x45]),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec((option, value), 0..10),
        prop_oneof![
            Just(Vec::new()),
            Just(br#"{"m2m:cnt":{"rn":"x"}}"#.to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
    )
        .prop_map(|(kind, code, mid, token, options, payload)| {
            let mut p = coap_lite::Packet::new();
            p.header.set_type(match kind % 4 {
                0 => coap_lite::MessageType::Confirmable,
                1 => coap_lite::MessageType::NonConfirmable,
                2 => coap_lite::MessageType::Acknowledgement,
                _ => coap_lite::MessageType::Reset,
            });
            p.header.code = coap_lite::MessageClass::from(code);
            p.header.message_id = mid;
            p.set_token(token);
            for (n, v) in options {
                p.add_option(coap_lite::CoapOption::from(n), v);
            }
            if mid % 4 != 0 {
                p.add_option(coap_lite::CoapOption::from(283), b"rqi-1".to_vec());
            }
            if mid % 3 == 0 {
                p.add_option(coap_lite::CoapOption::from(12), vec![0x27, 0x11]);
            }
            p.payload = payload;
            p.to_bytes_unlimited().unwrap_or_default()
        })
}

/// Polls a future that never waits (the responders below answer at once).
fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the responder waited"),
    }
}

proptest! {
    #![proptest_config(config(768))]

    /// Any CoAP message a peer can send: the binding decodes it to a request primitive or refuses
    /// it with a 4xxx (or 5001 for a feature it names), never a panic; a decoded request encodes
    /// back to a message that decodes to the same primitive.
    #[test]
    fn coap_requests_decode_or_are_refused(bytes in coap_message()) {
        let Ok(p) = coap_lite::Packet::from_bytes(&bytes) else { return Ok(()); };
        if m2m_core::coap_binding::check_options(&p).is_err() {
            return Ok(());
        }
        match m2m_core::coap_binding::decode_request(&p, schema::is_attribute_name) {
            Ok(req) => {
                let again = m2m_core::coap_binding::encode_request(&req).expect("encodes");
                let back = m2m_core::coap_binding::decode_request(&again, schema::is_attribute_name)
                    .expect("what was decoded once decodes again");
                prop_assert_eq!((back.op, &back.to, &back.from, &back.rqi), (req.op, &req.to, &req.from, &req.rqi));
                prop_assert_eq!(back.ty, req.ty);
                prop_assert_eq!(back.pc, req.pc);
            }
            // 5207 NOT_ACCEPTABLE is the code TS-0004 and TS-0008 table 6.2.4-1 give an Accept
            // this CSE cannot answer in (CoAP 4.06).
            Err(e) => prop_assert!(
                is_client_error(&e)
                    || e.rsc == ResponseStatusCode::NotImplemented
                    || e.rsc == ResponseStatusCode::NotAcceptable,
                "{:?}", e
            ),
        }
    }

    /// The message layer takes any datagram, a run of them from one peer included: it answers
    /// with a well-formed message or not at all, never panics, and a duplicate Message ID gets the
    /// same answer without running the request again.
    #[test]
    fn the_coap_message_layer_survives_any_datagrams(
        run in proptest::collection::vec(prop_oneof![coap_message(), proptest::collection::vec(any::<u8>(), 0..40)], 1..12),
    ) {
        let mut exchanges = m2m_core::coap_exchange::Exchanges::default();
        let calls = std::cell::Cell::new(0u32);
        for d in &run {
            let before = calls.get();
            let first = ready(exchanges.answer(d, 4096, |req| {
                calls.set(calls.get() + 1);
                let mut r = coap_lite::Packet::new();
                r.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Content);
                r.payload = vec![b'x'; req.payload.len() * 3];
                async move { r }
            }));
            if let Some(reply) = &first {
                prop_assert!(coap_lite::Packet::from_bytes(reply).is_ok(), "a well-formed answer");
            }
            let ran = calls.get() > before;
            let again = ready(exchanges.answer(d, 4096, |_| {
                calls.set(calls.get() + 1);
                async { coap_lite::Packet::new() }
            }));
            if ran {
                prop_assert_eq!(&again, &first, "a duplicate gets the same answer");
                prop_assert_eq!(calls.get(), before + 1, "and does not run again");
            }
        }
    }
}
