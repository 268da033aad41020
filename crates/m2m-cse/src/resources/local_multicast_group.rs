//! `<localMulticastGroup>` (TS-0004 clause 7.4.55): held only by a member hosting CSE, created by
//! its registrar, and only with a group key that opens (`crate::multicast::member`); storing one
//! joins its multicast address, deleting it leaves.

use super::{ready, Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::Resource;
use m2m_core::M2mResult;
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct LocalMulticastGroup;

impl Behaviour for LocalMulticastGroup {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        ready(
            check(call.cse, attrs, call.peer.originator.as_ref(), None)
                .map(|_| Prepared::default()),
        )
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        crate::multicast::on_stored(cse, res);
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        let cse = call.cse;
        let merged = super::merged(res, content);
        let creator = res
            .creator
            .as_deref()
            .and_then(|c| m2m_core::EntityId::parse(c, &cse.id.home).ok());
        ready(check(cse, &merged, creator.as_ref(), Some(res)))
    }

    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        crate::multicast::on_stored(cse, res);
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        crate::multicast::on_deleted(cse, res);
    }
}

/// Whether this CSE may hold the `<localMulticastGroup>` `attrs`: it must be a member hosting
/// CSE, and the group key must open (`crate::multicast::member`).
fn check(
    cse: &Cse,
    attrs: &Map<String, Value>,
    creator: Option<&m2m_core::EntityId>,
    current: Option<&Resource>,
) -> M2mResult<()> {
    let member = cse.multicast_member.as_ref().ok_or_else(|| {
        m2m_core::M2mError::new(
            m2m_core::ResponseStatusCode::JoinMulticastGroupFailed,
            "this CSE does not join multicast groups",
        )
    })?;
    let creator = creator.ok_or_else(|| m2m_core::M2mError::internal("no creator"))?;
    member.check(cse, attrs, creator, current)
}
