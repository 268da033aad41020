//! `<group>` (TS-0004 clause 7.4.13): memberIDs validated at creation and update (`crate::group`,
//! which also runs the fan-out); a change of members re-keys its multicast group, if any.

use super::{Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::EntityId;
use m2m_core::M2mResult;
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct Group;

impl Behaviour for Group {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        Box::pin(async move {
            crate::group::prepare_create(call.cse, call.req, attrs, call.peer).await?;
            Ok(Prepared::default())
        })
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        // A multicast group for it now (TS-0001 clause 10.2.7.13.1 step 004), not at its first
        // fan-out.
        crate::group::members_changed(cse, res);
        cse.group_members.index(cse, res);
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        if !content.contains_key("mid") {
            return super::ready(Ok(()));
        }
        Box::pin(crate::group::prepare_update(
            call.cse, call.req, res, content, call.peer,
        ))
    }

    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        res: &mut Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        crate::group::refresh_counts(res);
        Ok(())
    }

    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        if changed.contains_key("mid") {
            crate::group::members_changed(cse, res);
            cse.group_members.index(cse, res);
        }
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        crate::group::deleted(cse, res);
        cse.group_members.forget(res.ri());
    }
}
