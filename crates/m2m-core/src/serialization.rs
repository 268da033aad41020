//! Content serializations (TS-0004 clauses 8.3 XML, 8.4 JSON and 8.5 CBOR): how a primitive's
//! content is written on the wire, the media types that name it (TS-0009 clause 6.4.3), and the
//! `ct` key of a notification target URL (TS-0004 table 7.4.8.1-3, notificationURI).
//!
//! CBOR is the JSON data model written in CBOR (clause 8.5.1): the same short names and values,
//! so a primitive decodes to the same `serde_json::Value` either way; XML is read into that model
//! too, typed by the schema ([`crate::xml`]).

use crate::error::{M2mError, M2mResult};
use crate::status::ResponseStatusCode;
use serde_json::Value;

/// `{root: value}` with the value moved in. (`serde_json::json!` serializes a value that is not a
/// literal into a new one: a deep copy of a whole representation, per response or notification.)
pub fn rooted(root: impl Into<String>, value: impl Into<Value>) -> Value {
    let mut m = serde_json::Map::with_capacity(1);
    m.insert(root.into(), value.into());
    Value::Object(m)
}

/// A content serialization this implementation reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Serialization {
    #[default]
    Json,
    Cbor,
    Xml,
}

impl Serialization {
    /// The media type it is sent as.
    pub const fn media_type(self) -> &'static str {
        match self {
            Serialization::Json => "application/json",
            Serialization::Cbor => "application/cbor",
            Serialization::Xml => "application/xml",
        }
    }

    /// The serialization a media type names (parameters such as `;ty=3` ignored): the plain
    /// types and the oneM2M ones (`application/vnd.onem2m-res+cbor`...); `None` for others.
    pub fn from_media_type(value: &str) -> Option<Self> {
        let media = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Some(Serialization::Json),
            "application/cbor" => Some(Serialization::Cbor),
            "application/xml" | "text/xml" => Some(Serialization::Xml),
            m if m.starts_with("application/vnd.onem2m-") && m.ends_with("+xml") => {
                Some(Serialization::Xml)
            }
            m if m.starts_with("application/vnd.onem2m-") && m.ends_with("+json") => {
                Some(Serialization::Json)
            }
            m if m.starts_with("application/vnd.onem2m-") && m.ends_with("+cbor") => {
                Some(Serialization::Cbor)
            }
            _ => None,
        }
    }

    /// The value of a notificationURI's `ct` key (lower case: `json`, `cbor`).
    pub fn from_ct(value: &str) -> Option<Self> {
        match value {
            "json" => Some(Serialization::Json),
            "cbor" => Some(Serialization::Cbor),
            "xml" => Some(Serialization::Xml),
            _ => None,
        }
    }

    /// The first serialization of an `<AE>`'s contentSerialization (`csz`, media types) this
    /// implementation writes; `None` when it names none (then any may be used).
    pub fn preferred<'a>(csz: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        csz.into_iter().find_map(Self::from_media_type)
    }

    /// Reads a content: one data item, nested at most [`MAX_DEPTH`] deep (what the store reads
    /// back, JSON, allows 128: a deeper content would be stored and then unreadable).
    pub fn decode(self, body: &[u8]) -> M2mResult<Value> {
        let v: Value = match self {
            Serialization::Json => serde_json::from_slice(body)
                .map_err(|e| M2mError::bad_request(format!("malformed JSON content: {e}")))?,
            Serialization::Cbor => {
                let mut rest = body;
                let v = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
                    .map_err(|e| M2mError::bad_request(format!("malformed CBOR content: {e}")))?;
                if !rest.is_empty() {
                    return Err(M2mError::bad_request(
                        "malformed CBOR content: bytes after the data item",
                    ));
                }
                v
            }
            Serialization::Xml => crate::xml::decode(body)?,
        };
        if depth(&v) > MAX_DEPTH {
            return Err(M2mError::bad_request("content nested too deeply"));
        }
        Ok(v)
    }

    /// Writes a content.
    pub fn encode(self, v: &Value) -> M2mResult<Vec<u8>> {
        match self {
            Serialization::Json => {
                serde_json::to_vec(v).map_err(|e| M2mError::internal(e.to_string()))
            }
            Serialization::Cbor => {
                let mut out = Vec::new();
                ciborium::into_writer(v, &mut out)
                    .map_err(|e| M2mError::internal(e.to_string()))?;
                Ok(out)
            }
            Serialization::Xml => crate::xml::encode(v),
        }
    }
}

/// How deep a content may nest (objects and arrays), in either serialization.
pub const MAX_DEPTH: usize = 64;

/// The nesting depth of a value, without recursion.
fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// A content media type this implementation does not take: 4015.
pub fn unsupported(media: &str) -> M2mError {
    M2mError::new(
        ResponseStatusCode::UnsupportedMediaType,
        format!(
            "content type '{media}' is not supported; use application/json, application/cbor or application/xml"
        ),
    )
}

/// A notification target URL without its serialization key, and the serialization it asks for
/// (TS-0004 clause 7.5.1.2.2: "ct=json", after `?` or `&`; the key is removed before sending).
pub fn split_ct(url: &str) -> (String, Option<Serialization>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut ser = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("ct=") {
            Some(v) => {
                ser = Serialization::from_ct(v).or(ser);
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), ser)
    } else {
        (format!("{base}?{}", kept.join("&")), ser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_serializations_carry_the_same_content() {
        let v = json!({ "m2m:cin": { "con": "21.5", "cs": 4, "lbl": ["a", "b"], "neg": -3, "f": 1.5, "b": true, "n": null } });
        for s in [Serialization::Json, Serialization::Cbor] {
            let bytes = s.encode(&v).unwrap();
            assert_eq!(s.decode(&bytes).unwrap(), v, "{s:?}");
        }
        assert_ne!(
            Serialization::Cbor.encode(&v).unwrap(),
            Serialization::Json.encode(&v).unwrap()
        );
        assert_eq!(
            Serialization::Cbor.decode(b"\xff").unwrap_err().rsc,
            ResponseStatusCode::BadRequest
        );
        // One item only; nesting bounded below what the store reads back.
        let mut two = Serialization::Cbor.encode(&json!(1)).unwrap();
        two.extend(Serialization::Cbor.encode(&json!(2)).unwrap());
        assert!(Serialization::Cbor.decode(&two).is_err());
        for deep in [MAX_DEPTH + 1, 200, 100_000] {
            // `deep` nested one-element arrays: 0x81 ... 0x00.
            let mut cbor = vec![0x81u8; deep];
            cbor.push(0);
            assert_eq!(
                Serialization::Cbor.decode(&cbor).unwrap_err().rsc,
                ResponseStatusCode::BadRequest,
                "{deep}"
            );
            let json = format!("{}0{}", "[".repeat(deep), "]".repeat(deep));
            assert!(
                Serialization::Json.decode(json.as_bytes()).is_err(),
                "{deep}"
            );
        }
        let ok = format!(
            "{}0{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        Serialization::Json.decode(ok.as_bytes()).unwrap();
    }

    #[test]
    fn media_types_and_ct_keys() {
        for (m, s) in [
            ("application/json", Some(Serialization::Json)),
            ("application/cbor;ty=3", Some(Serialization::Cbor)),
            ("application/vnd.onem2m-res+cbor", Some(Serialization::Cbor)),
            (
                "application/vnd.onem2m-ntfy+json",
                Some(Serialization::Json),
            ),
            ("application/xml", Some(Serialization::Xml)),
            ("application/vnd.onem2m-res+xml", Some(Serialization::Xml)),
            ("text/plain", None),
            ("application/yaml", None),
        ] {
            assert_eq!(Serialization::from_media_type(m), s, "{m}");
        }
        assert_eq!(
            split_ct("http://h:1/n?ct=cbor"),
            ("http://h:1/n".into(), Some(Serialization::Cbor))
        );
        assert_eq!(
            split_ct("http://h:1/n?q=true&ct=json"),
            ("http://h:1/n?q=true".into(), Some(Serialization::Json))
        );
        assert_eq!(
            split_ct("http://h:1/n?q=1"),
            ("http://h:1/n?q=1".into(), None)
        );
        assert_eq!(
            Serialization::preferred(["application/exi", "application/cbor"]),
            Some(Serialization::Cbor),
            "the first one written"
        );
        assert_eq!(
            Serialization::preferred(["application/xml", "application/cbor"]),
            Some(Serialization::Xml)
        );
    }
}
