//! <remoteCSE> creation by a registering CSE (TS-0001 clause 10.2.2.4, TS-0004 clause 7.4.4).

use super::Prepared;
use crate::cse::Cse;
use m2m_core::id::{classify_originator, OriginatorKind};
use m2m_core::{CseId, M2mError, M2mResult, Request, ResponseStatusCode};
use serde_json::{json, Map, Value};

pub fn prepare_create(
    cse: &Cse,
    req: &Request,
    attrs: &mut Map<String, Value>,
) -> M2mResult<Prepared> {
    let from = req.from.as_deref().unwrap_or("");
    let OriginatorKind::SpRelative {
        cse: from_cse,
        rest: None,
    } = classify_originator(from)
    else {
        return Err(M2mError::bad_request(format!(
            "a remoteCSE must be created by a CSE (From '/cse-id'), not '{from}'"
        )));
    };
    let csi = attrs.get("csi").and_then(Value::as_str).unwrap_or("");
    let csi = CseId::parse(csi)?;
    if csi.bare() != from_cse {
        return Err(M2mError::bad_request(format!(
            "csi '{csi}' does not match the originator '{from}'"
        )));
    }
    if csi == cse.id.cse_id {
        return Err(M2mError::bad_request("a CSE cannot register with itself"));
    }
    if cse.store.get(csi.bare())?.is_some() {
        return Err(M2mError::new(
            ResponseStatusCode::Conflict,
            format!("CSE '{csi}' is already registered"),
        ));
    }
    attrs.insert("csi".into(), json!(csi.sp_relative()));
    Ok(Prepared {
        ri: Some(csi.bare().to_owned()),
        credential: None,
    })
}
