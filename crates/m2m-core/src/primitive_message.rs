//! Whole request and response primitives as one message: TS-0004 clause 8 applied to
//! `m2m:requestPrimitive` and `m2m:responsePrimitive` (clause 6.4), every parameter by its short
//! name. The payload of the MQTT binding (TS-0010 clause 6.5) and of the WebSocket binding
//! (TS-0020 clause 6.2), in JSON or CBOR.
//!
//! Reading is strict: a parameter this implementation does not take is refused (4000, or 5001 for
//! one TS-0004 defines that the CSE does not support), never dropped.

use crate::error::{M2mError, M2mResult};
use crate::http_binding::{decode_query_field, split_tokens};
use crate::primitive::{DiscResType, Operation, Request, Response, ResponseType, ResultContent};
use crate::resource_type::ResourceType;
use crate::serialization::Serialization;
use crate::status::ResponseStatusCode;
use serde_json::{json, Map, Value};

fn bad(dbg: impl Into<String>) -> M2mError {
    M2mError::bad_request(dbg)
}

/// A text parameter; numbers are taken as their decimal text (an m2m:absRelTimestamp may be
/// either).
fn text(v: &Value, name: &str) -> M2mResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(bad(format!("'{name}' must be a string"))),
    }
}

fn number(v: &Value, name: &str) -> M2mResult<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad(format!("'{name}' must be a number")))
}

/// A list parameter as the space-separated text the query decoder reads: a JSON array of
/// texts, or one text.
fn list_text(v: &Value, name: &str) -> M2mResult<String> {
    match v {
        Value::Array(items) => Ok(items
            .iter()
            .map(|i| text(i, name))
            .collect::<M2mResult<Vec<_>>>()?
            .join(" ")),
        other => text(other, name),
    }
}

/// Reads the request primitive of a message in `ser`.
pub fn decode_request(
    body: &[u8],
    ser: Serialization,
    is_attribute: impl Fn(&str) -> bool,
) -> M2mResult<Request> {
    let v = ser.decode(body)?;
    let v = v.get("m2m:rqp").unwrap_or(&v);
    request_from_value(v, is_attribute)
}

/// The Request Identifier of a message that may not be a valid request, for the error answer.
pub fn request_identifier(body: &[u8], ser: Serialization) -> String {
    let Ok(v) = ser.decode(body) else {
        return String::new();
    };
    let v = v.get("m2m:rqp").unwrap_or(&v);
    v.get("rqi")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Writes a request primitive as one message in `ser`.
pub fn encode_request(req: &Request, ser: Serialization) -> M2mResult<Vec<u8>> {
    ser.encode(&request_to_value(req))
}

/// Writes a response primitive as one message in `ser` (JSON when `ser` cannot write its
/// content, as over HTTP).
pub fn encode_response(resp: &Response, ser: Serialization) -> Vec<u8> {
    let v = response_to_value(resp);
    ser.encode(&v)
        .or_else(|_| Serialization::Json.encode(&v))
        .unwrap_or_default()
}

/// Reads the response primitive of a message in `ser`.
pub fn decode_response(body: &[u8], ser: Serialization) -> M2mResult<Response> {
    let v = ser.decode(body)?;
    let v = v.get("m2m:rsp").unwrap_or(&v);
    response_from_value(v)
}

/// The request primitive as one object.
pub fn request_to_value(req: &Request) -> Value {
    let mut m = Map::new();
    m.insert("op".into(), json!(req.op as u8));
    m.insert("to".into(), json!(req.to));
    if let Some(fr) = &req.from {
        m.insert("fr".into(), json!(fr));
    }
    m.insert("rqi".into(), json!(req.rqi));
    if let Some(ty) = req.ty {
        m.insert("ty".into(), json!(ty.code()));
    }
    if let Some(pc) = &req.pc {
        m.insert("pc".into(), pc.clone());
    }
    let texts = [
        ("rvi", &req.rvi),
        ("ot", &req.ot),
        ("rqet", &req.rqet),
        ("rset", &req.rset),
        ("oet", &req.oet),
        ("rp", &req.rp),
        ("gid", &req.gid),
        ("ec", &req.ec),
        ("vsi", &req.vsi),
    ];
    for (k, v) in texts {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(rcn) = req.rcn {
        m.insert("rcn".into(), json!(rcn as u8));
    }
    if req.drt != DiscResType::Structured {
        m.insert("drt".into(), json!(req.drt as u8));
    }
    if req.sqi {
        m.insert("sqi".into(), json!(true));
    }
    if req.rt != ResponseType::Blocking || req.rtu.is_some() {
        let mut rt = Map::new();
        rt.insert("rtv".into(), json!(req.rt as u8));
        if let Some(rtu) = &req.rtu {
            rt.insert("nu".into(), json!(rtu));
        }
        m.insert("rt".into(), Value::Object(rt));
    }
    let fc: Map<String, Value> = req.fc.fields().map(|(k, v)| (k.to_owned(), v)).collect();
    if !fc.is_empty() {
        m.insert("fc".into(), Value::Object(fc));
    }
    if !req.atrl.is_empty() {
        m.insert("atrl".into(), json!(req.atrl));
    }
    if !req.tkns.is_empty() {
        m.insert("tkns".into(), json!(req.tkns.0));
    }
    if !req.rids.is_empty() {
        let ids: Vec<&str> = req.rids.iter().map(|r| r.as_str()).collect();
        m.insert("rids".into(), json!(ids));
    }
    if !req.tids.is_empty() {
        let ids: Vec<&str> = req.tids.iter().map(|t| t.as_str()).collect();
        m.insert("tids".into(), json!(ids));
    }
    if !req.ltids.is_empty() {
        m.insert("ltids".into(), json!(req.ltids));
    }
    Value::Object(m)
}

/// Reads a request primitive from one object; 4000 with a short reason when a parameter is
/// missing, malformed or unknown.
pub fn request_from_value(v: &Value, is_attribute: impl Fn(&str) -> bool) -> M2mResult<Request> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the request primitive is not an object"))?;
    let get = |k: &str| {
        obj.get(k)
            .ok_or_else(|| bad(format!("the request primitive has no '{k}'")))
    };
    let op = Operation::from_code(number(get("op")?, "op")?)
        .ok_or_else(|| bad("'op' is not an operation"))?;
    let to = text(get("to")?, "to")?;
    let rqi = text(get("rqi")?, "rqi")?;
    if rqi.is_empty() {
        return Err(bad("'rqi' is empty"));
    }
    let from = match obj.get("fr") {
        None | Some(Value::Null) => None,
        Some(f) => Some(text(f, "fr")?).filter(|f| !f.is_empty()),
    };
    let mut req = Request::new(op, to, from, rqi);
    req.rvi = None;
    for (k, val) in obj {
        match k.as_str() {
            "op" | "to" | "fr" | "rqi" => {}
            "rvi" => req.rvi = Some(text(val, k)?),
            "ot" => req.ot = Some(text(val, k)?),
            "rqet" => req.rqet = Some(text(val, k)?),
            "rset" => req.rset = Some(text(val, k)?),
            "oet" => req.oet = Some(text(val, k)?),
            "gid" => req.gid = Some(text(val, k)?),
            "ec" => req.ec = Some(text(val, k)?),
            "vsi" => req.vsi = Some(text(val, k)?),
            "ty" => req.ty = Some(ResourceType::parse_requested(&number(val, k)?.to_string())?),
            "pc" => req.pc = Some(val.clone()),
            "rcn" => req.rcn = Some(ResultContent::parse(&number(val, k)?.to_string())?),
            "rt" => read_response_type(&mut req, val)?,
            "fc" => read_filter(&mut req, val, &is_attribute)?,
            "tkns" => req.tkns.extend(match val {
                Value::String(s) => split_tokens(s),
                other => list_text(other, k)?
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            // Numbers and lists the query decoder of the HTTP binding reads, with its checks.
            "drt" | "rp" | "atrl" | "rids" | "tids" | "ltids" | "da" | "tqi" | "asi" | "auri" => {
                decode_query_field(&mut req, k, &list_text(val, k)?, &is_attribute)?
            }
            // xs:boolean: true or false (the HTTP binding's text form is taken too).
            "sqi" => {
                req.sqi = match val {
                    Value::Bool(b) => *b,
                    Value::String(s) if s == "true" || s == "false" => s == "true",
                    _ => return Err(bad("'sqi' is not a boolean")),
                }
            }
            other => {
                return Err(bad(format!(
                    "parameter '{other}' is not a request parameter"
                )))
            }
        }
    }
    crate::http_binding::check_whole_primitive(&req)?;
    Ok(req)
}

/// Response Type (`rt`, m2m:responseTypeInfo): `rtv` and the notificationURIs `nu`.
fn read_response_type(req: &mut Request, v: &Value) -> M2mResult<()> {
    let (rtv, nu) = match v {
        Value::Object(o) => (
            o.get("rtv").ok_or_else(|| bad("'rt' has no 'rtv'"))?,
            o.get("nu"),
        ),
        // A bare responseType value.
        other => (other, None),
    };
    decode_query_field(req, "rt", &number(rtv, "rtv")?.to_string(), |_| false)?;
    if let Some(nu) = nu {
        req.rtu = Some(
            list_text(nu, "nu")?
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    Ok(())
}

/// Filter Criteria (`fc`): each member as the query decoder reads it.
fn read_filter(req: &mut Request, v: &Value, is_attribute: impl Fn(&str) -> bool) -> M2mResult<()> {
    let obj = v.as_object().ok_or_else(|| bad("'fc' must be an object"))?;
    for (k, val) in obj {
        // semanticsFilter is a list of SPARQL texts, each taken whole (spaces and all).
        if k == "smf" {
            let queries = match val {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("fc 'smf' is a list of SPARQL texts"))?,
                _ => return Err(bad("fc 'smf' is a list of SPARQL texts")),
            };
            req.fc.semantics_filter.extend(queries);
            continue;
        }
        let text = match val {
            // A geometry may come as the JSON array itself rather than its text.
            Value::Array(_) if k == "geom" => val.to_string(),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) if !s.contains(' ') => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(bad(format!("fc '{k}' is malformed"))),
                })
                .collect::<M2mResult<Vec<_>>>()?
                .join(" "),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(bad(format!("fc '{k}' is malformed"))),
        };
        if !req.fc.take_query_field(k, &text, &is_attribute)? {
            return Err(bad(format!("'{k}' is not a filter criterion")));
        }
    }
    Ok(())
}

/// The response primitive as one object.
pub fn response_to_value(resp: &Response) -> Value {
    let mut v = resp.to_rsp_json();
    let m = v.as_object_mut().expect("an object");
    if let Some(ot) = &resp.ot {
        m.insert("ot".into(), json!(ot));
    }
    if let Some(vsi) = &resp.vsi {
        m.insert("vsi".into(), json!(vsi));
    }
    if let Some(rset) = &resp.rset {
        m.insert("rset".into(), json!(rset));
    }
    if let Some(cts) = resp.cts {
        m.insert("cts".into(), json!(cts));
    }
    if let Some(cto) = resp.cto {
        m.insert("cto".into(), json!(cto));
    }
    if !resp.ati.is_empty() {
        let ati: Vec<Value> = resp
            .ati
            .iter()
            .map(|(l, t)| json!({"lti": l, "tkid": t}))
            .collect();
        m.insert("ati".into(), Value::Array(ati));
    }
    v
}

/// Reads a response primitive from one object.
pub fn response_from_value(v: &Value) -> M2mResult<Response> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the response primitive is not an object"))?;
    let code = obj
        .get("rsc")
        .and_then(|c| number(c, "rsc").ok())
        .and_then(|c| u16::try_from(c).ok())
        .ok_or_else(|| bad("the response primitive has no numeric 'rsc'"))?;
    let rsc = ResponseStatusCode::from_code(code).unwrap_or(if code < 4000 {
        ResponseStatusCode::Ok
    } else {
        ResponseStatusCode::InternalServerError
    });
    let rqi = obj.get("rqi").and_then(Value::as_str).unwrap_or_default();
    let mut rsp = Response::new(rsc, rqi, obj.get("pc").cloned());
    let opt = |k: &str| obj.get(k).and_then(|v| text(v, k).ok());
    rsp.from = opt("fr");
    rsp.to = opt("to");
    rsp.rvi = opt("rvi");
    rsp.ot = opt("ot");
    rsp.vsi = opt("vsi");
    rsp.rset = opt("rset");
    rsp.cts = obj
        .get("cts")
        .and_then(Value::as_u64)
        .and_then(|c| u8::try_from(c).ok());
    rsp.cto = obj.get("cto").and_then(Value::as_u64);
    if let Some(Value::Array(ati)) = obj.get("ati") {
        rsp.ati = ati
            .iter()
            .filter_map(|a| {
                Some((
                    a.get("lti")?.as_str()?.to_owned(),
                    a.get("tkid")?.as_str()?.to_owned(),
                ))
            })
            .collect();
    }
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::is_attribute_name;

    fn sample() -> Request {
        let mut r = Request::new(
            Operation::Retrieve,
            "/in-cse/in-name/box",
            Some("Cae1".into()),
            "r1",
        );
        r.rcn = Some(ResultContent::Attributes);
        r.fc.labels = vec!["a".into(), "b".into()];
        r.fc.limit = Some(3);
        r.rqet = Some("20301231T000000".into());
        r.vsi = Some("vendor".into());
        r.atrl = vec!["lbl".into(), "ct".into()];
        r.rt = ResponseType::NonBlockingAsynch;
        r.rtu = Some(vec!["mqtt://b/x".into()]);
        r
    }

    #[test]
    fn a_request_round_trips_in_json_and_cbor() {
        let r = sample();
        for ser in [Serialization::Json, Serialization::Cbor] {
            let bytes = encode_request(&r, ser).unwrap();
            assert_eq!(decode_request(&bytes, ser, is_attribute_name).unwrap(), r);
            assert_eq!(request_identifier(&bytes, ser), "r1");
            // An empty notificationURI list (no result notification) is not an absent one.
            for rtu in [None, Some(vec![])] {
                let mut e = r.clone();
                e.rtu = rtu;
                let bytes = encode_request(&e, ser).unwrap();
                assert_eq!(decode_request(&bytes, ser, is_attribute_name).unwrap(), e);
            }
        }
    }

    #[test]
    fn the_ts_0010_example_is_read() {
        // TS-0010 figure 6.5.1-1 (its `ot` written as a string).
        let body = br#"{"op": 1, "to": "//xxxxx/2345", "fr": "//xxxxx/99", "rqi": "A1234", "ty": 18,
            "pc": {"m2m:sch":{"rn":"schedule1", "se":{"sce":["* 0-5 2,6,10 * * * *"]}}}, "ot": "20150910T062032"}"#;
        let r = decode_request(body, Serialization::Json, is_attribute_name).unwrap();
        assert_eq!(r.op, Operation::Create);
        assert_eq!(r.ty, Some(ResourceType::Schedule));
        assert_eq!(r.from.as_deref(), Some("//xxxxx/99"));
        assert_eq!(r.ot.as_deref(), Some("20150910T062032"));
        let wrapped = br#"{"m2m:rqp": {"op": 2, "to": "cse", "fr": "Cx", "rqi": "q"}}"#;
        let r = decode_request(wrapped, Serialization::Json, is_attribute_name).unwrap();
        assert_eq!(r.op, Operation::Retrieve);
    }

    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        let r = request_to_value(&sample());
        for (k, val, code) in [
            ("op", json!(9), 4000),
            ("to", json!({}), 4000),
            ("rqi", json!(""), 4000),
            ("zzz", json!(1), 4000),
            ("fc", json!({"nope": 1}), 4000),
            ("rt", json!({"rtv": 9}), 4000),
            ("rcn", json!(99), 4000),
            ("sqi", json!(1), 4000),
            ("sqi", json!("yes"), 4000),
        ] {
            let mut v = r.clone();
            v[k] = val;
            let e = request_from_value(&v, is_attribute_name).unwrap_err();
            assert_eq!(e.rsc.code(), code, "{k}: {}", e.dbg);
        }
        for missing in ["op", "to", "rqi"] {
            let mut v = r.clone();
            v.as_object_mut().unwrap().remove(missing);
            assert!(request_from_value(&v, is_attribute_name).is_err());
        }
        assert!(decode_request(b"[1]", Serialization::Json, is_attribute_name).is_err());
        assert!(decode_request(b"\xff", Serialization::Cbor, is_attribute_name).is_err());
        assert_eq!(request_identifier(b"nonsense", Serialization::Json), "");
    }

    #[test]
    fn a_response_round_trips() {
        let mut rsp = Response::new(
            ResponseStatusCode::Created,
            "r1",
            Some(json!({"m2m:cnt": {"rn": "box"}})),
        );
        rsp.ot = Some("20261206T000000".into());
        rsp.vsi = Some("v".into());
        rsp.rset = Some("20301231T000000".into());
        rsp.cts = Some(2);
        rsp.cto = Some(7);
        rsp.ati = vec![("lt1".into(), "tk@x.example".into())];
        rsp.from = Some("/in-cse".into());
        rsp.to = Some("Cae1".into());
        rsp.rvi = Some("3".into());
        for ser in [Serialization::Json, Serialization::Cbor] {
            let back = decode_response(&encode_response(&rsp, ser), ser).unwrap();
            assert_eq!(back.rsc, rsp.rsc);
            assert_eq!(back.pc, rsp.pc);
            assert_eq!(
                (back.ot, back.vsi, back.cts, back.cto, back.ati),
                (
                    rsp.ot.clone(),
                    rsp.vsi.clone(),
                    rsp.cts,
                    rsp.cto,
                    rsp.ati.clone()
                )
            );
            assert_eq!((back.from, back.to), (rsp.from.clone(), rsp.to.clone()));
            assert_eq!(back.rset, rsp.rset);
        }
        assert!(decode_response(br#"{"rqi": "x"}"#, Serialization::Json).is_err());
    }
}
