//! `<node>` (TS-0004 clause 7.4.18, TS-0001 clauses 9.6.18 and 10.2.8): the M2M Node an AE or
//! CSE runs on, with its `<mgmtObj>` children, and the links between them (TS-0001 table
//! 9.4.2-1): an `<AE>` names its node in `nodeLink` (`nl`), and the node lists it in
//! hostedAELinks (`hael`); a `<remoteCSE>` likewise in hostedCSELink (`hcl`).
//!
//! The CSE keeps the node's side: an AE's `nl` set at registration or by an UPDATE adds it to
//! that node's `hael` (once) and takes it out of the previous node's (the attribute goes when
//! the list empties); a deregistration takes it out; deleting a node removes the `nl` of the
//! entities it listed. A local `nl` must name a `<node>` the originator may retrieve (4103
//! otherwise); one on another CSE is kept as given. A node that hosts one CSE is not taken over
//! by another (4105). `hael` says what the AEs declared, on nodes they may read.

use super::{Behaviour, Call};
use crate::cse::Cse;
use crate::store::{string_list, Resource, Writer};
use m2m_core::{M2mError, M2mResult, ResourceType};
use serde_json::{json, Map, Value};

pub struct Node;

impl Behaviour for Node {}

/// Checks the `nl` of a CREATE or UPDATE of an `<AE>` or `<remoteCSE>`: a local one must name
/// a `<node>` the originator may retrieve (otherwise 4103, the same whether or not it exists),
/// and a node whose hostedCSELink names another CSE is not taken over (4105).
pub async fn check_link(
    call: Call<'_>,
    attrs: &Map<String, Value>,
    cse_ri: Option<&str>,
) -> M2mResult<()> {
    let cse = call.cse;
    let Some(nl) = attrs.get("nl").and_then(Value::as_str) else {
        return Ok(());
    };
    let Ok(addr) = m2m_core::Address::parse(nl) else {
        return Err(M2mError::bad_request("attribute 'nl': not an address"));
    };
    if crate::resolve::locality(cse, &addr) != crate::resolve::Locality::Local {
        return Ok(());
    }
    let originator = call.req.from.as_deref().unwrap_or("");
    let node = crate::resolve::local_resource(cse, nl).filter(|n| n.ty == ResourceType::Node);
    // Decided for the originator as this request proved it (a registering AE is not registered
    // yet: a request of its own would not pass).
    let facts = crate::access::Facts::of(call.peer);
    let readable = match &node {
        Some(n) => crate::access::permits(
            cse,
            &facts,
            m2m_security::access_control::AccessOperation::Retrieve,
            n,
            &mut Default::default(),
        )?,
        None => false,
    };
    let Some(node) = node.filter(|_| readable) else {
        tracing::info!(target: "audit", originator, nl, "nodeLink refused: not a node the originator may retrieve");
        return Err(crate::access::refused());
    };
    if let (Some(hcl), Some(me)) = (node.str_attr("hcl"), cse_ri) {
        // hcl in any address form (a client may write it): the resource it names.
        let other_cse = crate::resolve::local_resource(cse, hcl)
            .is_some_and(|c| c.ty == ResourceType::RemoteCse && c.ri() != me);
        if other_cse {
            return Err(M2mError::new(
                m2m_core::ResponseStatusCode::Conflict,
                "the node hosts another CSE",
            ));
        }
    }
    Ok(())
}

/// The local `<node>` an `nl` names, as the transaction sees it.
fn node_of(cse: &Cse, w: &Writer<'_>, nl: Option<&str>) -> M2mResult<Option<Resource>> {
    let Some(node) = nl
        .and_then(|nl| crate::resolve::local_resource(cse, nl))
        .filter(|n| n.ty == ResourceType::Node)
    else {
        return Ok(None);
    };
    w.get(node.ri())
}

/// Lists `entity` (an `<AE>` or `<remoteCSE>`) in the node its `nl` names.
pub fn link(cse: &Cse, w: &Writer<'_>, entity: &Resource) -> M2mResult<()> {
    let Some(mut node) = node_of(cse, w, entity.str_attr("nl"))? else {
        return Ok(());
    };
    let ri = entity.ri().to_owned();
    if entity.ty == ResourceType::RemoteCse {
        node.attrs.insert("hcl".into(), json!(ri));
    } else {
        let mut hael = string_list(node.attrs.get("hael"));
        if hael.contains(&ri) {
            return Ok(());
        }
        hael.push(ri);
        node.attrs.insert("hael".into(), json!(hael));
    }
    w.update(&node)
}

/// Takes `entity` out of the node `nl` named.
pub fn unlink(cse: &Cse, w: &Writer<'_>, entity: &Resource, nl: Option<&str>) -> M2mResult<()> {
    let Some(mut node) = node_of(cse, w, nl)? else {
        return Ok(());
    };
    let ri = entity.ri();
    if entity.ty == ResourceType::RemoteCse {
        if node.str_attr("hcl") != Some(ri) {
            return Ok(());
        }
        node.attrs.remove("hcl");
    } else {
        let hael = string_list(node.attrs.get("hael"));
        if !hael.iter().any(|h| h == ri) {
            return Ok(());
        }
        let kept: Vec<String> = hael.into_iter().filter(|h| h != ri).collect();
        if kept.is_empty() {
            node.attrs.remove("hael");
        } else {
            node.attrs.insert("hael".into(), json!(kept));
        }
    }
    w.update(&node)
}

/// A node was deleted: the entities it listed no longer name it (in whatever form of its
/// address).
pub fn node_deleted(cse: &Cse, w: &Writer<'_>, node: &Resource) -> M2mResult<()> {
    let listed = string_list(node.attrs.get("hael"))
        .into_iter()
        .chain(node.str_attr("hcl").map(str::to_owned));
    for ri in listed {
        let Some(mut entity) = w.get(&ri)? else {
            continue;
        };
        let names_it = entity
            .str_attr("nl")
            .is_some_and(|nl| crate::resolve::names(cse, nl, node));
        if names_it {
            entity.attrs.remove("nl");
            w.update(&entity)?;
        }
    }
    Ok(())
}

/// An UPDATE of an `<AE>` or `<remoteCSE>` that changes its `nl` moves it between nodes.
pub fn relink(
    cse: &Cse,
    w: &Writer<'_>,
    entity: &Resource,
    changed: &Map<String, Value>,
    before: &Map<String, Value>,
) -> M2mResult<()> {
    if !changed.contains_key("nl") {
        return Ok(());
    }
    unlink(cse, w, entity, before.get("nl").and_then(Value::as_str))?;
    link(cse, w, entity)
}

/// The prepare step of a registration (`<AE>`, `<remoteCSE>`): its nodeLink checked, then the
/// type's own checks (`own`, which dictates the resourceID), then a name of its own when the
/// request names none, even if something else took its ID as a name.
pub async fn prepare_registration(
    call: Call<'_>,
    parent: &Resource,
    attrs: &mut Map<String, Value>,
    cse_ri: Option<&str>,
    own: impl FnOnce(&mut Map<String, Value>) -> M2mResult<super::Prepared>,
) -> M2mResult<super::Prepared> {
    check_link(call, attrs, cse_ri).await?;
    let prepared = own(attrs)?;
    // An entity that names itself by its own ID (a CSE's `<remoteCSE>` by its CSE-ID) gets a
    // free variant when something else took that name first, as one that names nothing.
    let own_id = attrs.get("rn").and_then(Value::as_str) == prepared.ri.as_deref();
    if !attrs.contains_key("rn") || own_id {
        if let Some(ri) = &prepared.ri {
            let rn = super::free_name(call.cse, parent, ri);
            attrs.insert("rn".into(), Value::from(rn));
        }
    }
    Ok(prepared)
}

/// Inserts a registration and lists it in the node its `nl` names.
pub fn insert_linked(cse: &Cse, w: &Writer<'_>, new: Resource) -> M2mResult<Resource> {
    let inserted = w.insert(new)?;
    link(cse, w, &inserted)?;
    Ok(inserted)
}
