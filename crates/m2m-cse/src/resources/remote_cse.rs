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

/// Tells this CSE's registrar its descendantCSEs as they are now, in a task of its own.
fn publish_now(cse: &std::sync::Arc<crate::cse::Cse>) {
    let cse = std::sync::Arc::clone(cse);
    tokio::spawn(async move { crate::registration::publish_descendants(&cse, &[]).await });
}

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
            let prepared =
                super::node::prepare_registration(call, parent, attrs, me.as_deref(), |attrs| {
                    prepare_create(call.cse, call.req, attrs, call.peer)
                })
                .await?;
            // Our registrar learns the new CSE (and what is below it) before the registration is
            // answered: requests it relays from there are taken up the tree at once.
            let csi = CseId::parse(attrs.get("csi").and_then(Value::as_str).unwrap_or(""))?;
            let claimed = crate::store::string_list(attrs.get("dcse"));
            let below = call
                .cse
                .store
                .read(|r| crate::descendants::admit(call.cse, r, &csi, &claimed))?;
            let joining: Vec<CseId> = std::iter::once(csi)
                .chain(below.iter().filter_map(|c| CseId::parse(c).ok()))
                .collect();
            crate::registration::publish_descendants(call.cse, &joining).await;
            Ok(prepared)
        })
    }

    fn own_creator<'a>(&self, attrs: &'a Map<String, Value>) -> Option<&'a str> {
        attrs.get("csi").and_then(Value::as_str)
    }

    /// Once stored, our registrar learns the list as the store has it (a registration made at the
    /// same time may have published a list without this one).
    fn created(&self, cse: &std::sync::Arc<crate::cse::Cse>, _res: &crate::store::Resource) {
        publish_now(cse);
    }

    /// The list published for the joining CSE before its `<remoteCSE>` was stored named it: it
    /// did not join, so the registrar is told the list without it.
    fn create_failed(&self, cse: &std::sync::Arc<crate::cse::Cse>) {
        publish_now(cse);
    }

    /// A deregistered CSE's secure storage goes with it (`secure_storage::owner_gone`), and our
    /// registrar learns it is no longer below us.
    fn deleted(&self, cse: &std::sync::Arc<crate::cse::Cse>, res: &crate::store::Resource) {
        if let Some(csi) = res.str_attr("csi").and_then(|c| CseId::parse(c).ok()) {
            let entity = m2m_core::EntityId::cse(cse.id.home.sp.clone(), csi);
            crate::secure_storage::owner_gone(cse, &entity);
        }
        publish_now(cse);
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
        let mut new = new;
        crate::descendants::keep_admitted(cse, w, &mut new)?;
        super::node::insert_linked(cse, w, new)
    }

    fn prepare_update<'a>(
        &'a self,
        call: super::Call<'a>,
        res: &'a crate::store::Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        Box::pin(async move {
            // Which CSEs a registree speaks for is its own word (or the administrator's), never
            // granted by a policy to anyone else.
            if content.contains_key("dcse") {
                let registree = res
                    .str_attr("csi")
                    .and_then(|c| EntityId::parse(c, &call.cse.id.home).ok());
                // The registree's own association, speaking as itself (not an entity it relays).
                let itself = registree.is_some()
                    && call.peer.bound_entity() == registree.as_ref()
                    && call.peer.originator.as_ref() == registree.as_ref();
                if !(itself || call.peer.is_internal() || call.peer.is_admin(call.cse)) {
                    return Err(M2mError::new(
                        ResponseStatusCode::OriginatorHasNoPrivilege,
                        "the originator has no privilege for this operation on the target",
                    ));
                }
            }
            super::node::check_link(call, content, Some(res.ri())).await
        })
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
        if changed.contains_key("dcse") {
            crate::descendants::keep_admitted(cse, w, res)?;
        }
        super::node::relink(cse, w, res, changed, before)
    }

    /// A registree's new descendants reach our registrar before its UPDATE is answered.
    fn settle_update<'a>(
        &'a self,
        cse: &'a std::sync::Arc<crate::cse::Cse>,
        _res: &'a crate::store::Resource,
        changed: &'a Map<String, Value>,
        _before: &'a Map<String, Value>,
    ) -> super::Pending<'a, ()> {
        Box::pin(async move {
            if changed.contains_key("dcse") {
                crate::registration::publish_descendants(cse, &[]).await;
            }
        })
    }
}
