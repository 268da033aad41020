//! `<role>` (ty 31; TS-0004 clause 7.4.40, TS-0001 clause 9.6.38, TS-0003 clause 7.4): a role
//! (`rlid`) assigned to its holder (`tkhd`) by an Authorization Authority (`tkis`) from `tknb` to
//! `tkna`; this CSE is its Role Repository. The issuer is who creates it: a `<role>` naming
//! another issuer than its authenticated originator is refused, so that one entity cannot assign
//! roles in another's name. Which issuers' roles count is the CSE's configuration
//! (`[security] role_issuers`, and the administrator), checked where a role is used
//! ([`crate::roles`]).

use super::{Behaviour, Call, Pending, Prepared};
use crate::store::Resource;
use m2m_core::{EntityId, M2mError, M2mResult, RoleId};
use serde_json::{Map, Value};

pub struct Role;

impl Behaviour for Role {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready((|| {
            let text = |name: &str| attrs.get(name).and_then(Value::as_str).unwrap_or("");
            RoleId::parse(text("rlid"))
                .map_err(|e| M2mError::bad_request(format!("attribute 'rlid': {}", e.dbg)))?;
            let home = &call.cse.id.home;
            EntityId::parse(text("tkhd"), home).map_err(|_| {
                M2mError::bad_request("attribute 'tkhd': the holder is an AE-ID or CSE-ID")
            })?;
            let issuer = EntityId::parse(text("tkis"), home).map_err(|_| {
                M2mError::bad_request("attribute 'tkis': the issuer is an AE-ID or CSE-ID")
            })?;
            if call.peer.originator.as_ref() != Some(&issuer) {
                return Err(M2mError::bad_request(
                    "attribute 'tkis': a <role> is created by its issuer",
                ));
            }
            // The issuer proven by a credential (the administrator, by its own means), never
            // through an <action>.
            // An <action> runs as an internal, authenticated request whoever made it: none
            // issues roles.
            if call.peer.by_action {
                return Err(M2mError::new(
                    m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
                    "a <role> is not created by an <action>",
                ));
            }
            let admin = call.peer.is_admin(call.cse);
            if !admin && !call.peer.proof.is_authenticated() {
                return Err(M2mError::new(
                    m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
                    "a <role> is created over the issuer's own security association",
                ));
            }
            crate::roles::check_namespace(call.cse, &issuer, text("rlid"))?;
            validity(attrs)?;
            Ok(Prepared::default())
        })())
    }
}

/// `tknb` before `tkna` (4000 otherwise).
pub(crate) fn validity(attrs: &Map<String, Value>) -> M2mResult<()> {
    let at = |name: &str| {
        attrs
            .get(name)
            .and_then(Value::as_str)
            .map(m2m_core::time::parse)
            .transpose()
    };
    if let (Some(nb), Some(na)) = (at("tknb")?, at("tkna")?) {
        if nb >= na {
            return Err(M2mError::bad_request(
                "attributes 'tknb' and 'tkna': notBefore comes before notAfter",
            ));
        }
    }
    Ok(())
}
