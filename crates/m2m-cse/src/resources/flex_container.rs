//! `<flexContainer>` (TS-0004 clause 7.4.37, Annex J; TS-0001 clause 9.6.35): a container whose
//! attributes are those of its specialization (m2m-core `specialization`), represented under the
//! specialization's own name (`cod:lock`). Its containerDefinition must be that specialization's
//! (4000); a specialization this CSE does not know is 4125 SPECIALIZATION_SCHEMA_NOT_FOUND; the
//! custom attributes are checked against it at CREATE and UPDATE; contentSize is the size of the
//! custom attributes.

use super::{Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::specialization::{self, Specialization};
use m2m_core::{M2mError, M2mResult, Request};
use serde_json::{json, Map, Value};

/// The type's behaviour.
pub struct FlexContainer;

impl super::Behaviour for FlexContainer {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        let checked = requested(call.req).and_then(|spec| {
            if attrs.get("cnd").and_then(Value::as_str) != Some(spec.cnd.as_str()) {
                return Err(M2mError::bad_request(format!(
                    "containerDefinition is not that of {}",
                    spec.key
                )));
            }
            spec.check(attrs, true)?;
            attrs.insert("cs".into(), json!(content_size(&spec, attrs)));
            attrs.insert("st".into(), json!(0));
            Ok(Prepared::default())
        });
        super::ready(checked)
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        let checked = requested(call.req).and_then(|spec| {
            if res.str_attr("cnd") != Some(spec.cnd.as_str()) {
                return Err(M2mError::bad_request(format!(
                    "the resource is not a {}",
                    spec.key
                )));
            }
            spec.check(content, false)
        });
        super::ready(checked)
    }

    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        res: &mut Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) -> M2mResult<()> {
        if let Some(spec) = res.str_attr("cnd").and_then(specialization::by_cnd) {
            let cs = content_size(&spec, &res.attrs);
            res.attrs.insert("cs".into(), json!(cs));
        }
        Ok(())
    }
}

/// The specialization the request's content names (known: the content was read already).
fn requested(req: &Request) -> M2mResult<Specialization> {
    req.pc
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|o| o.keys().next())
        .and_then(|k| specialization::by_key(k))
        .ok_or_else(|| M2mError::bad_request("content names no known specialization"))
}

/// contentSize: the bytes of the custom attributes' values as serialized.
fn content_size(spec: &Specialization, attrs: &Map<String, Value>) -> u64 {
    spec.custom(attrs)
        .map(|(_, v)| super::container::content_size(v))
        .sum()
}
