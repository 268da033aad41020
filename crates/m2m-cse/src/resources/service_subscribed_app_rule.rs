//! <serviceSubscribedAppRule> (TS-0004 clause 7.4.29): a registration rule held as a resource.

use crate::store::string_list;
use m2m_core::{M2mError, M2mResult};
use m2m_security::registration_rules::AppRule;
use serde_json::{Map, Value};

/// The rule a resource's attributes describe.
pub fn rule_of(attrs: &Map<String, Value>) -> AppRule {
    let list = |name: &str| string_list(attrs.get(name));
    AppRule {
        apci: attrs
            .get("apci")
            .filter(|v| !v.is_null())
            .map(|_| list("apci")),
        aai: list("aai"),
        aae: list("aae"),
    }
}

/// allowedApp-IDs patterns start with `*`, R or N (TS-0004 clause 7.4.29.2.1).
pub fn check(attrs: &Map<String, Value>) -> M2mResult<()> {
    rule_of(attrs).validate().map_err(M2mError::bad_request)
}
