//! `<serviceSubscribedAppRule>` (TS-0004 clause 7.4.29): a registration rule held as a resource.

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

/// The type's behaviour: the rule checked at creation and, merged, at update.
pub struct ServiceSubscribedAppRule;

impl super::Behaviour for ServiceSubscribedAppRule {
    fn prepare_create<'a>(
        &'a self,
        _call: super::Call<'a>,
        _parent: &'a crate::store::Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<super::Prepared>> {
        super::ready(check(attrs).map(|_| super::Prepared::default()))
    }

    fn prepare_update<'a>(
        &'a self,
        _call: super::Call<'a>,
        res: &'a crate::store::Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        super::ready(check(&super::merged(res, content)))
    }
}
