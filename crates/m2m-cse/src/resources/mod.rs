//! Per-resource-type behaviour (TS-0004 clause 7.4): what a CREATE or UPDATE of each type does
//! beyond the generic procedure.

pub mod acp;
pub mod ae;
pub mod container;
pub mod remote_cse;
pub mod service_subscribed_app_rule;
pub mod subscription;

use crate::cse::Cse;
use crate::group;
use crate::store::{Resource, Writer};
use m2m_core::{M2mResult, Request, ResourceType};
use serde_json::{Map, Value};
use std::sync::Arc;

/// What the type-specific preparation decided.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The resourceID, when the type dictates it (AE-ID, CSE-ID).
    pub ri: Option<String>,
    /// The Credential-ID to bind the new AE to (registration over an association whose
    /// credential names no entity).
    pub credential: Option<String>,
}

/// Checks and completes a CREATE before anything is written; may contact peers.
pub async fn prepare_create(
    cse: &Arc<Cse>,
    req: &Request,
    parent: &Resource,
    ty: ResourceType,
    attrs: &mut Map<String, Value>,
    peer: &crate::association::Peer,
) -> M2mResult<Prepared> {
    match ty {
        ResourceType::Ae => ae::prepare_create(cse, req, attrs, peer),
        ResourceType::RemoteCse => remote_cse::prepare_create(cse, req, attrs, peer),
        ResourceType::Container => {
            container::init_container(attrs);
            Ok(Prepared::default())
        }
        ResourceType::Subscription => subscription::prepare_create(cse, req, parent, attrs).await,
        ResourceType::Group => group::prepare_create(cse, req, attrs, peer)
            .await
            .map(|_| Prepared::default()),
        ResourceType::AccessControlPolicy => acp::check(attrs).map(|_| Prepared::default()),
        ResourceType::ServiceSubscribedAppRule => {
            service_subscribed_app_rule::check(attrs).map(|_| Prepared::default())
        }
        ResourceType::ContentInstance => Ok(Prepared::default()),
        ResourceType::LocalMulticastGroup => {
            local_multicast_group(cse, attrs, peer.originator.as_ref(), None)
                .map(|_| Prepared::default())
        }
        ResourceType::CseBase => Err(m2m_core::M2mError::not_allowed(
            "a CSEBase cannot be created",
        )),
    }
}

/// Inserts a new resource inside the write transaction, with its effects on the parent.
pub fn insert_with_effects(
    cse: &Cse,
    w: &Writer<'_>,
    parent: &Resource,
    new: Resource,
) -> M2mResult<Resource> {
    match new.ty {
        ResourceType::ContentInstance => container::insert_instance(cse, w, parent, new),
        _ => w.insert(new),
    }
}

/// Checks an UPDATE before anything is written; may contact peers.
pub async fn prepare_update(
    cse: &Arc<Cse>,
    req: &Request,
    res: &Resource,
    content: &Map<String, Value>,
    peer: &crate::association::Peer,
) -> M2mResult<()> {
    match res.ty {
        ResourceType::Subscription => subscription::prepare_update(cse, req, res, content).await,
        ResourceType::AccessControlPolicy => acp::check(content),
        ResourceType::ServiceSubscribedAppRule => {
            let mut merged = res.attrs.clone();
            merged.extend(content.clone());
            service_subscribed_app_rule::check(&merged)
        }
        ResourceType::Group if content.contains_key("mid") => {
            group::prepare_update(cse, req, res, content, peer).await
        }
        ResourceType::LocalMulticastGroup => {
            let mut merged = res.attrs.clone();
            merged.extend(content.clone());
            merged.retain(|_, v| !v.is_null());
            let creator = res
                .creator
                .as_deref()
                .and_then(|c| m2m_core::EntityId::parse(c, &cse.id.home).ok());
            local_multicast_group(cse, &merged, creator.as_ref(), Some(res))
        }
        _ => Ok(()),
    }
}

/// `<localMulticastGroup>` (TS-0004 clause 7.4.55): only a member hosting CSE holds one, and only
/// with a group key that opens (`crate::multicast::member`).
fn local_multicast_group(
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

/// Applies the effects of an UPDATE inside the write transaction (`res` already holds the new
/// attributes, `changed` the attributes the request set or removed).
pub fn update_with_effects(
    cse: &Cse,
    w: &Writer<'_>,
    res: &mut Resource,
    changed: &Map<String, Value>,
) -> M2mResult<()> {
    match res.ty {
        ResourceType::Container => container::after_update(cse, w, res, changed),
        ResourceType::Group => {
            group::refresh_counts(res);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Keeps a parent consistent after a child was deleted (container counters).
pub fn after_child_deleted(w: &Writer<'_>, parent: &Resource, child: &Resource) -> M2mResult<()> {
    if parent.ty == ResourceType::Container && child.ty == ResourceType::ContentInstance {
        container::instance_removed(w, parent, child)?;
    }
    Ok(())
}
