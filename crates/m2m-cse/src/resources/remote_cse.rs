//! `<remoteCSE>` creation by a registering CSE (TS-0001 clause 10.2.2.4, TS-0004 clause 7.4.4): only the
//! credential bound to a CSE-ID registers that CSE.

use super::Prepared;
use crate::association::Peer;
use crate::cse::Cse;
use m2m_core::{CseId, EntityId, M2mError, M2mResult, Request, ResponseStatusCode};
use serde_json::{json, Map, Value};

pub fn prepare_create(
    cse: &Cse,
    req: &Request,
    attrs: &mut Map<String, Value>,
    peer: &Peer,
) -> M2mResult<Prepared> {
    let csi = attrs.get("csi").and_then(Value::as_str).unwrap_or("");
    let csi = CseId::parse(csi)?;
    csi.check_not_ae_form()?;
    let registering = EntityId::cse(cse.id.home.sp.clone(), csi.clone());
    if peer.originator.as_ref() != Some(&registering) || req.from.is_none() {
        return Err(M2mError::bad_request(
            "a remoteCSE is created by the CSE it names: From and csi must be the same CSE-ID",
        ));
    }
    if registering.is_home_cse(&cse.id.home) {
        return Err(M2mError::bad_request("a CSE cannot register with itself"));
    }
    // Only over a security association bound to that CSE-ID (or from this CSE itself).
    let proven = peer.is_internal() || peer.bound_entity() == Some(&registering);
    if !proven {
        tracing::warn!(target: "audit", csi = %registering, bound = ?peer.bound_entity(), "remoteCSE registration refused: not the credential of that CSE");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorNotAuthenticated,
            "a CSE registers only over a security association bound to its own CSE-ID",
        ));
    }
    if cse.store.get(csi.bare())?.is_some() {
        return Err(M2mError::new(
            ResponseStatusCode::Conflict,
            "the CSE is already registered",
        ));
    }
    attrs.insert("csi".into(), json!(csi.sp_relative()));
    Ok(Prepared {
        ri: Some(csi.bare().to_owned()),
        ..Prepared::default()
    })
}

/// The type's behaviour: the registration checks of [`prepare_create`].
pub struct RemoteCse;

impl super::Behaviour for RemoteCse {
    fn prepare_create<'a>(
        &'a self,
        call: super::Call<'a>,
        parent: &'a crate::store::Resource,
        attrs: &'a mut serde_json::Map<String, serde_json::Value>,
    ) -> super::Pending<'a, m2m_core::M2mResult<super::Prepared>> {
        // The CSE-ID it registers, as the resourceID it gets (checked in prepare_create).
        let me = attrs
            .get("csi")
            .and_then(Value::as_str)
            .and_then(|c| CseId::parse(c).ok())
            .map(|c| c.bare().to_owned());
        Box::pin(async move {
            super::node::prepare_registration(call, parent, attrs, me.as_deref(), |attrs| {
                prepare_create(call.cse, call.req, attrs, call.peer)
            })
            .await
        })
    }

    fn own_creator<'a>(&self, attrs: &'a Map<String, Value>) -> Option<&'a str> {
        attrs.get("csi").and_then(Value::as_str)
    }

    /// A deregistered CSE's secure storage goes with it (`secure_storage::owner_gone`).
    fn deleted(&self, cse: &std::sync::Arc<crate::cse::Cse>, res: &crate::store::Resource) {
        if let Some(csi) = res.str_attr("csi").and_then(|c| CseId::parse(c).ok()) {
            let entity = m2m_core::EntityId::cse(cse.id.home.sp.clone(), csi);
            crate::secure_storage::owner_gone(cse, &entity);
        }
    }

    /// [`Behaviour::deleted`] also when the remoteCSE goes with an ancestor.
    fn keeps_state(&self) -> bool {
        true
    }

    fn insert(
        &self,
        cse: &crate::cse::Cse,
        w: &crate::store::Writer<'_>,
        _parent: &crate::store::Resource,
        new: crate::store::Resource,
    ) -> M2mResult<crate::store::Resource> {
        super::node::insert_linked(cse, w, new)
    }

    fn prepare_update<'a>(
        &'a self,
        call: super::Call<'a>,
        res: &'a crate::store::Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        Box::pin(super::node::check_link(call, content, Some(res.ri())))
    }

    /// A new nodeLink moves the entity between nodes (`resources::node`).
    fn apply_update(
        &self,
        cse: &crate::cse::Cse,
        w: &crate::store::Writer<'_>,
        res: &mut crate::store::Resource,
        changed: &Map<String, Value>,
        before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        super::node::relink(cse, w, res, changed, before)
    }
}
