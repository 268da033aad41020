//! Request and response primitives as whole JSON objects with short names (TS-0004 clause 8.4, names
//! of clause 8.2.2), the form an ESPrim inner primitive travels in (TS-0004 clause 7.6.2).
//!
//! Only the parameters an inner primitive needs are carried. The delivery-related parameters (Response
//! Type, Event Category, Delivery Aggregation) are ignored on reading, as clause 7.6.2 step K tells the
//! Target to; any other unknown member is refused, so nothing an Originator asked for is dropped
//! silently.

use crate::error::{M2mError, M2mResult};
use crate::filter::FilterCriteria;
use crate::primitive::{DiscResType, Operation, Request, Response, ResultContent};
use crate::resource_type::ResourceType;
use crate::status::ResponseStatusCode;
use serde_json::{json, Map, Value};

/// Members of a request primitive the Target ignores (TS-0004 clause 7.6.2, note 1).
const DELIVERY_PARAMETERS: &[&str] = &["rt", "ec", "da"];

fn bad(dbg: impl Into<String>) -> M2mError {
    M2mError::bad_request(dbg)
}

fn text(v: &Value, name: &str) -> M2mResult<String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("inner primitive: '{name}' must be a string")))
}

fn number(v: &Value, name: &str) -> M2mResult<u64> {
    v.as_u64()
        .ok_or_else(|| bad(format!("inner primitive: '{name}' must be a number")))
}

/// A filter criteria member as the query-string text [`FilterCriteria::take_query_field`] reads.
fn fc_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => a
            .iter()
            .map(|x| fc_value(x).filter(|s| !s.contains(' ')))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join(" ")),
        _ => None,
    }
}

fn filter_from_json(fc: &Value) -> M2mResult<FilterCriteria> {
    let obj = fc
        .as_object()
        .ok_or_else(|| bad("inner primitive: 'fc' must be an object"))?;
    let mut out = FilterCriteria::default();
    for (k, v) in obj {
        // A geometry may come as the JSON array itself rather than its text.
        let v = match v {
            Value::Array(_) if k == "geom" => Some(v.to_string()),
            _ => fc_value(v),
        };
        let v = v.ok_or_else(|| bad(format!("inner primitive: fc '{k}' is malformed")))?;
        if !out.take_query_field(k, &v, crate::schema::is_attribute_name)? {
            return Err(bad(format!(
                "inner primitive: '{k}' is not a filter criterion"
            )));
        }
    }
    out.check_complete()?;
    Ok(out)
}

fn filter_to_json(fc: &FilterCriteria) -> Map<String, Value> {
    fc.fields().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Request {
    /// The request primitive as one JSON object (`op`, `to`, `fr`, `rqi`, `rvi`, `ty`, `pc`, `rcn`,
    /// `drt`, `fc`, and the optional time parameters).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("op".into(), json!(self.op as u8));
        m.insert("to".into(), json!(self.to));
        if let Some(fr) = &self.from {
            m.insert("fr".into(), json!(fr));
        }
        m.insert("rqi".into(), json!(self.rqi));
        let optional = [
            ("rvi", &self.rvi),
            ("ot", &self.ot),
            ("rqet", &self.rqet),
            ("rset", &self.rset),
            ("oet", &self.oet),
            ("rp", &self.rp),
            ("gid", &self.gid),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(ty) = self.ty {
            m.insert("ty".into(), json!(ty.code()));
        }
        if let Some(pc) = &self.pc {
            m.insert("pc".into(), pc.clone());
        }
        if let Some(rcn) = self.rcn {
            m.insert("rcn".into(), json!(rcn as u8));
        }
        if self.drt == DiscResType::Unstructured {
            m.insert("drt".into(), json!(2));
        }
        let fc = filter_to_json(&self.fc);
        if !fc.is_empty() {
            m.insert("fc".into(), Value::Object(fc));
        }
        Value::Object(m)
    }

    /// Reads a request primitive from one JSON object; 4000 BAD_REQUEST with a short reason when a
    /// member is missing, malformed or unknown.
    pub fn from_json(v: &Value) -> M2mResult<Request> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("inner primitive: not a JSON object"))?;
        let get = |k: &str| {
            obj.get(k)
                .ok_or_else(|| bad(format!("inner primitive: no '{k}'")))
        };
        let op = Operation::from_code(number(get("op")?, "op")?)
            .ok_or_else(|| bad("inner primitive: 'op' is not an operation"))?;
        let to = text(get("to")?, "to")?;
        let rqi = text(get("rqi")?, "rqi")?;
        let from = obj.get("fr").map(|f| text(f, "fr")).transpose()?;
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
                "rp" => req.rp = Some(text(val, k)?),
                "gid" => req.gid = Some(text(val, k)?),
                "ty" => req.ty = Some(ResourceType::parse_requested(&number(val, k)?.to_string())?),
                "pc" => req.pc = Some(val.clone()),
                "rcn" => req.rcn = Some(ResultContent::parse(&number(val, k)?.to_string())?),
                "drt" => {
                    req.drt = match number(val, k)? {
                        1 => DiscResType::Structured,
                        2 => DiscResType::Unstructured,
                        _ => return Err(bad("inner primitive: 'drt' is not 1 or 2")),
                    }
                }
                "fc" => req.fc = Box::new(filter_from_json(val)?),
                d if DELIVERY_PARAMETERS.contains(&d) => {}
                other => {
                    return Err(bad(format!(
                        "inner primitive: parameter '{other}' is not supported"
                    )))
                }
            }
        }
        Ok(req)
    }
}

impl Response {
    /// Reads a response primitive from one JSON object (the form of [`Response::to_rsp_json`]).
    pub fn from_rsp_json(v: &Value) -> M2mResult<Response> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("inner response: not a JSON object"))?;
        let code = obj
            .get("rsc")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .ok_or_else(|| bad("inner response: no numeric 'rsc'"))?;
        let rsc = ResponseStatusCode::from_code(code)
            .ok_or_else(|| bad(format!("inner response: unknown rsc {code}")))?;
        let rqi = obj.get("rqi").and_then(Value::as_str).unwrap_or_default();
        let mut rsp = Response::new(rsc, rqi, obj.get("pc").cloned());
        let opt = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        rsp.from = opt("fr");
        rsp.to = opt("to");
        rsp.rvi = opt("rvi");
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_bad_members_are_refused() {
        let mut r = Request::new(
            Operation::Create,
            "/id-in/cse-in/box",
            Some("Sae1".into()),
            "r1",
        );
        r.ty = Some(ResourceType::ContentInstance);
        r.pc = Some(json!({"m2m:cin": {"con": "x"}}));
        r.rcn = Some(ResultContent::Attributes);
        r.fc.labels = vec!["a".into(), "b".into()];
        r.fc.limit = Some(3);
        let back = Request::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let mut v = r.to_json();
        v["rt"] = json!({"rtv": 1});
        assert_eq!(
            Request::from_json(&v).unwrap(),
            r,
            "delivery parameters are ignored"
        );
        for (k, val) in [
            ("op", json!(9)),
            ("to", json!(1)),
            ("zzz", json!(1)),
            ("fc", json!({"nope": {}})),
            ("ty", json!(99999)),
        ] {
            let mut v = r.to_json();
            v[k] = val;
            assert_eq!(
                Request::from_json(&v).unwrap_err().rsc,
                ResponseStatusCode::BadRequest,
                "{k}"
            );
        }
        assert!(Request::from_json(&json!([1])).is_err());
    }

    #[test]
    fn a_geo_query_travels_in_fc_and_goes_whole() {
        let mut v = Request::new(Operation::Retrieve, "/cse-in", Some("Cx".into()), "r1").to_json();
        v["fc"] = json!({"fu": 1, "gmty": 1, "geom": [0.5, 0.5], "gsf": 1});
        let r = Request::from_json(&v).unwrap();
        let q = r.fc.geo.clone().expect("a whole geo-query");
        assert_eq!(q.text, "[0.5,0.5]");
        assert_eq!(
            Request::from_json(&r.to_json()).unwrap(),
            r,
            "forwarded as read"
        );
        for partial in [
            json!({"gmty": 1}),
            json!({"gmty": 1, "gsf": 1}),
            json!({"geom": "[0.5,0.5]"}),
        ] {
            v["fc"] = partial;
            assert_eq!(
                Request::from_json(&v).unwrap_err().rsc,
                ResponseStatusCode::BadRequest
            );
        }
    }

    #[test]
    fn response_round_trips() {
        let r = Response::new(
            ResponseStatusCode::Created,
            "r1",
            Some(json!({"m2m:cin": {}})),
        );
        assert_eq!(Response::from_rsp_json(&r.to_rsp_json()).unwrap(), r);
        assert!(Response::from_rsp_json(&json!({"rsc": 1})).is_err());
        assert!(Response::from_rsp_json(&json!({"rqi": "x"})).is_err());
    }
}
