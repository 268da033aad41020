//! `<accessControlPolicy>` (TS-0004 clause 7.4.2): privileges and selfPrivileges must be rules the
//! access decision understands completely; anything it would have to ignore is refused up front.

use m2m_core::{M2mError, M2mResult};
use m2m_security::access_control::Privileges;
use serde_json::{Map, Value};

/// Checks `pv` and `pvs` of a create or update.
pub fn check(attrs: &Map<String, Value>) -> M2mResult<()> {
    for name in ["pv", "pvs"] {
        let Some(v) = attrs.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let privileges =
            Privileges::from_json(v).map_err(|e| M2mError::bad_request(format!("{name}: {e}")))?;
        if let Some(problem) = privileges.problems().into_iter().next() {
            return Err(M2mError::bad_request(format!("{name}: {problem}")));
        }
    }
    Ok(())
}

/// The type's behaviour: the rules checked at creation and update.
pub struct AccessControlPolicy;

impl super::Behaviour for AccessControlPolicy {
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
        _res: &'a crate::store::Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        super::ready(check(content))
    }
}
