//! `<semanticDescriptor>` (TS-0004 clause 7.4.34, TS-0001 clause 9.6.30): a semantic description
//! of its parent as RDF, in the descriptor (`dsp`, base64) written in the descriptorRepresentation
//! (`dcrp`, m2m:semanticFormat, TS-0004 table 6.3.4.2.48-1).
//!
//! - The descriptor must conform to its representation (Recv-6.4): RDF/XML (4), RDF/Turtle (5)
//!   and JSON-LD (7) are parsed in full (oxrdfio); an IRI (1) is no descriptor (4000). The OWL
//!   syntaxes (functional-style 2, OWL/XML 3, Manchester 6) cannot be checked here: 5001.
//! - semanticOpExec (`soe`, a SPARQL update of the descriptor) is not supported (5001); with
//!   `dsp` in the same UPDATE it is 4000 first (Recv-6.4 a).
//! - Semantic validation against ontologies (TS-0034 clause 7.10) is not performed: this CSE's
//!   local policy sets validationEnable (`vlde`) false whatever the request asks, and
//!   semanticValidated (`svd`) is false (Recv-6.5 a, k).
//! - JSON-LD contexts are not fetched: a descriptor naming a remote `@context` is refused (the
//!   CSE fetches nothing an originator names).

use super::{Behaviour, Call, Pending, Prepared};
use crate::store::Resource;
use base64::Engine;
use m2m_core::EntityId;
use m2m_core::{M2mError, M2mResult};
use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfParser};
use serde_json::{Map, Value};

pub struct SemanticDescriptor;

/// m2m:semanticFormat values.
const IRI: u64 = 1;
const RDF_XML: u64 = 4;
const TURTLE: u64 = 5;
const JSON_LD: u64 = 7;

impl Behaviour for SemanticDescriptor {
    fn prepare_create<'a>(
        &'a self,
        _call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready(check(attrs).map(|()| {
            local_policy(attrs);
            Prepared::default()
        }))
    }

    fn prepare_update<'a>(
        &'a self,
        _call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready((|| {
            if content.contains_key("soe") {
                if content.contains_key("dsp") {
                    return Err(M2mError::bad_request(
                        "semanticOpExec and descriptor cannot be updated together",
                    ));
                }
                return Err(M2mError::not_implemented(
                    "semanticOpExec (SPARQL update of the descriptor) is not supported",
                ));
            }
            if content.contains_key("dsp") || content.contains_key("dcrp") {
                check(&super::merged(res, content))?;
            }
            Ok(())
        })())
    }

    fn apply_update(
        &self,
        _cse: &crate::cse::Cse,
        _w: &crate::store::Writer<'_>,
        res: &mut Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        local_policy(&mut res.attrs);
        Ok(())
    }
}

/// No semantic validation here: validationEnable false, semanticValidated false.
fn local_policy(attrs: &mut Map<String, Value>) {
    attrs.insert("vlde".into(), Value::Bool(false));
    attrs.insert("svd".into(), Value::Bool(false));
}

/// The descriptor decodes from base64 and parses in its representation.
fn check(attrs: &Map<String, Value>) -> M2mResult<()> {
    let dcrp = attrs.get("dcrp").and_then(Value::as_u64).unwrap_or(0);
    if dcrp == IRI {
        return Err(M2mError::bad_request(
            "descriptorRepresentation IRI is not a descriptor's representation",
        ));
    }
    let Some(dsp) = attrs.get("dsp").and_then(Value::as_str) else {
        return Ok(());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(dsp.trim())
        .map_err(|_| M2mError::bad_request("attribute 'dsp': not base64"))?;
    // A document type declaration brings entities, which the XML parser expands in memory (a
    // few hundred bytes of nested entities are gigabytes): RDF/XML needs none.
    if matches!(dcrp, RDF_XML) && has_doctype(&bytes) {
        return Err(M2mError::bad_request(
            "attribute 'dsp': an RDF/XML descriptor may not declare a document type or entities",
        ));
    }
    let format = match dcrp {
        RDF_XML => RdfFormat::RdfXml,
        TURTLE => RdfFormat::Turtle,
        JSON_LD => RdfFormat::JsonLd {
            profile: JsonLdProfileSet::empty(),
        },
        _ => {
            return Err(M2mError::not_implemented(
                "descriptors in OWL syntaxes (descriptorRepresentation 2, 3, 6) cannot be checked by this CSE",
            ))
        }
    };
    for quad in RdfParser::from_format(format).for_slice(&bytes) {
        if let Err(e) = quad {
            return Err(M2mError::bad_request(format!(
                "attribute 'dsp': not valid in its descriptorRepresentation: {e}"
            )));
        }
    }
    Ok(())
}

/// Whether an XML text declares a document type or an entity (`<!DOCTYPE`, `<!ENTITY`, in any
/// case, as bytes: the check comes before any decoding).
fn has_doctype(xml: &[u8]) -> bool {
    let upper = xml.to_ascii_uppercase();
    [&b"<!DOCTYPE"[..], &b"<!ENTITY"[..]]
        .iter()
        .any(|needle| upper.windows(needle.len()).any(|w| w == *needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(dcrp: u64, text: &str) -> Map<String, Value> {
        let dsp = base64::engine::general_purpose::STANDARD.encode(text);
        json!({ "dcrp": dcrp, "dsp": dsp })
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn descriptors_are_parsed_in_their_representation() {
        let turtle = "@prefix ex: <http://example.com/> . ex:lock ex:state \"locked\" .";
        let rdfxml = r#"<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.com/"><rdf:Description rdf:about="http://example.com/lock"><ex:state>locked</ex:state></rdf:Description></rdf:RDF>"#;
        let jsonld = r#"{"@id": "http://example.com/lock", "http://example.com/state": "locked"}"#;
        check(&attrs(TURTLE, turtle)).unwrap();
        check(&attrs(RDF_XML, rdfxml)).unwrap();
        check(&attrs(JSON_LD, jsonld)).unwrap();
        for (dcrp, text) in [
            (TURTLE, "ex:lock ex:state"),
            (RDF_XML, "<rdf:RDF"),
            (JSON_LD, "{\"@id\": "),
            (RDF_XML, turtle),
        ] {
            assert_eq!(
                check(&attrs(dcrp, text)).unwrap_err().rsc.code(),
                4000,
                "{text}"
            );
        }
        // Entities: refused before any parsing (a "billion laughs" would take gigabytes).
        let mut laughs = String::from("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"ha\">");
        for i in 1..9 {
            let prev = format!("&e{};", i - 1).replace("&e0;", "&a;");
            laughs.push_str(&format!("<!ENTITY e{i} \"{}\">", prev.repeat(10)));
        }
        laughs.push_str(
            "]><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">&e8;</rdf:RDF>",
        );
        assert_eq!(
            check(&attrs(RDF_XML, &laughs)).unwrap_err().rsc.code(),
            4000
        );
        let lower = rdfxml.replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><!doctype x>",
        );
        assert_eq!(check(&attrs(RDF_XML, &lower)).unwrap_err().rsc.code(), 4000);
        // A remote context would have to be fetched: refused, not fetched.
        let remote = r#"{"@context": "http://127.0.0.1:9/ctx", "@id": "http://example.com/lock"}"#;
        assert_eq!(check(&attrs(JSON_LD, remote)).unwrap_err().rsc.code(), 4000);
        assert_eq!(check(&attrs(IRI, turtle)).unwrap_err().rsc.code(), 4000);
        assert_eq!(check(&attrs(3, turtle)).unwrap_err().rsc.code(), 5001);
        let not_base64 = json!({ "dcrp": 5, "dsp": "wrong!" });
        assert_eq!(
            check(not_base64.as_object().unwrap())
                .unwrap_err()
                .rsc
                .code(),
            4000
        );
    }
}
