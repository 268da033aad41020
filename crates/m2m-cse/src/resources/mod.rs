//! Per-resource-type behaviour (TS-0004 clause 7.4): what a CREATE, UPDATE or DELETE of each
//! type does beyond the generic procedures of clause 7.3.3, one module per type, all found
//! through [`behaviour`]. The dispatcher, discovery, access control and notification stay
//! generic: adding a type is its module, its arm in [`behaviour`], and its attributes in the
//! schema (m2m-core `schema`, `resource_type`).
//!
//! | type | ty | module | TS-0004 |
//! |---|---:|---|---|
//! | accessControlPolicy | 1 | [`acp`] | 7.4.2 |
//! | action, dependency | 65, 66 | [`action`] | Release 4 |
//! | AE | 2 | [`ae`] | 7.4.5 |
//! | container | 3 | [`container`] | 7.4.6 |
//! | contentInstance | 4 | [`content_instance`] | 7.4.7 |
//! | crossResourceSubscription | 48 | [`cross_resource_subscription`] | 7.4.58 |
//! | CSEBase | 5 | [`cse_base`] | 7.4.3 |
//! | dynamicAuthorizationConsultation | 34 | [`dynamic_authorization_consultation`] | 7.4.36 |
//! | group | 9 | [`group`] | 7.4.13 |
//! | flexContainer, flexContainerInstance | 28, 58 | [`flex_container`] | 7.4.37, Release 4 |
//! | pollingChannel (and `pcu`) | 15 | [`polling_channel`] | 7.4.21, 7.4.22 |
//! | remoteCSE | 16 | [`remote_cse`] | 7.4.4 |
//! | request | 17 | [`request`] | 7.4.12, 7.3.2.2 |
//! | role | 31 | [`role`] | 7.4.40 |
//! | schedule | 18 | [`schedule`] | 7.4.9 |
//! | semanticDescriptor | 24 | [`semantic_descriptor`] | 7.4.34 |
//! | serviceSubscribedAppRule | 19 | [`service_subscribed_app_rule`] | 7.4.29 |
//! | subscription | 23 | [`subscription`] | 7.4.8 |
//! | timeSeries, timeSeriesInstance | 29, 30 | [`time_series`] | 7.4.38, 7.4.39 |
//! | timeSyncBeacon | 60 | [`time_sync_beacon`] | Release 4 |
//! | token | 32 | [`token`] | 7.4.41 |
//! | localMulticastGroup | 45 | [`local_multicast_group`] | 7.4.55 |
//! | locationPolicy (and its location container's geofence events) | 10 | [`location_policy`] | 7.4.10 |
//! | mgmtObj (firmware, software, memory... of Annex D) | 13 | [`mgmt_obj`] | 7.4.15, Annex D |
//! | node (and `nl`/`hael`/`hcl` links) | 14 | [`node`] | 7.4.18 |
//! | notificationTargetMgmtPolicyRef, notificationTargetPolicy, policyDeletionRules (and `ntsr`) | 25, 26, 27 | [`notification_target_policy`] | 7.4.30 - 7.4.33 |

pub mod acp;
pub mod action;
pub mod ae;
pub mod ae_annc;
pub mod container;
pub mod content_instance;
pub mod cross_resource_subscription;
pub mod cse_base;
pub mod dynamic_authorization_consultation;
pub mod flex_container;
pub mod group;
pub mod local_multicast_group;
pub mod location_policy;
pub mod mgmt_obj;
pub mod node;
pub mod notification_target_policy;
pub mod polling_channel;
pub mod remote_cse;
pub mod request;
pub mod role;
pub mod schedule;
pub mod semantic_descriptor;
pub mod service_subscribed_app_rule;
pub mod subscription;
pub mod time_series;
pub mod time_sync_beacon;
pub mod token;

use crate::association::Peer;
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::EntityId;
use m2m_core::{M2mResult, Operation, Request, ResourceType};
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What the type-specific preparation decided.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The resourceID, when the type dictates it (AE-ID, CSE-ID).
    pub ri: Option<String>,
    /// Who may register the new AE's AE-ID again (a registration over a security association),
    /// and the Credential-ID of that association; a [`AeIdHolder::Credential`] also binds the AE
    /// to that credential while it is registered.
    pub holder: Option<(
        crate::store::AeIdHolder,
        m2m_security::credentials::CredentialId,
    )>,
    /// The specialization the new resource is represented under (a `<flexContainer>`'s).
    pub specialization: Option<String>,
}

/// A step that may wait (contact peers) before anything is written.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A step that did not need to wait.
pub fn ready<'a, T: Send + 'a>(value: T) -> Pending<'a, T> {
    Box::pin(std::future::ready(value))
}

/// The request being carried out and who sent it.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub cse: &'a Arc<Cse>,
    pub req: &'a Request,
    pub peer: &'a Peer,
}

/// What one resource type does beyond the generic procedures. Every step has a default that
/// does nothing more, so a type overrides only what the TS gives it.
pub trait Behaviour: Sync {
    /// Checks and completes the attributes of a CREATE before anything is written; may contact
    /// peers; may dictate the resourceID.
    fn prepare_create<'a>(
        &'a self,
        _call: Call<'a>,
        _parent: &'a Resource,
        _attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        ready(Ok(Prepared::default()))
    }

    /// Inserts the new resource inside the write transaction, with its effects on the parent.
    fn insert(
        &self,
        _cse: &Cse,
        w: &Writer<'_>,
        _parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        w.insert(new)
    }

    /// The resourceName of a new resource the request did not name.
    fn default_name(&self, ri: &str) -> String {
        ri.to_owned()
    }

    /// The entity that owns a new resource when it is not its originator: the AE or CSE a
    /// registration creates owns its own resource (its AE-ID or CSE-ID attribute).
    fn own_creator<'a>(&self, _attrs: &'a Map<String, Value>) -> Option<&'a str> {
        None
    }

    /// Refuses an operation on `res`, a resource of this type, for a reason of its type before
    /// access control (the additions to Recv-6.3 of TS-0004 clause 7.4.x).
    fn admits(&self, _cse: &Cse, _op: Operation, _res: &Resource) -> M2mResult<()> {
        Ok(())
    }

    /// The same for an operation on the `la` or `ol` virtual child of `res`.
    fn admits_latest_oldest(&self, _op: Operation, _res: &Resource) -> M2mResult<()> {
        Ok(())
    }

    /// Whether a child listing of `res` (rcn 4, 5, 6, 8) leaves `child` out.
    fn hides_child(&self, _res: &Resource, _child: &Resource) -> bool {
        false
    }

    /// Completes `res` as a RETRIEVE shows it (attributes sampled when read).
    fn present(&self, _cse: &Cse, _res: &mut Resource) {}

    /// After the creation was stored.
    fn created(&self, _cse: &Arc<Cse>, _res: &Resource) {}

    /// After [`Behaviour::prepare_create`] succeeded but the creation was not stored (the name
    /// taken meanwhile, the parent gone): undoes what the preparation told others.
    fn create_failed(&self, _cse: &Arc<Cse>) {}

    /// Checks an UPDATE (`content`: the attributes it sets, null for removed) before anything is
    /// written; may contact peers.
    fn prepare_update<'a>(
        &'a self,
        _call: Call<'a>,
        _res: &'a Resource,
        _content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        ready(Ok(()))
    }

    /// Applies the effects of an UPDATE inside the write transaction (`res` already holds the
    /// new attributes, `changed` what the request set or removed, `before` the values those
    /// attributes had, `by` the originator the request was proven or claimed to come from).
    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        _res: &mut Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        Ok(())
    }

    /// After the update was stored (`before`: the values the changed attributes had).
    fn updated(
        &self,
        _cse: &Arc<Cse>,
        _res: &Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
    }

    /// After `updated`, awaited before the UPDATE is answered: what the update makes happen
    /// elsewhere that a client reading next must find done.
    fn settle_update<'a>(
        &'a self,
        _cse: &'a Arc<Cse>,
        _res: &'a Resource,
        _changed: &'a Map<String, Value>,
        _before: &'a Map<String, Value>,
    ) -> Pending<'a, ()> {
        ready(())
    }

    /// Keeps this resource consistent after its child was deleted, inside the transaction.
    fn child_deleted(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        _res: &Resource,
        _child: &Resource,
    ) -> M2mResult<()> {
        Ok(())
    }

    /// After the resource was deleted (by a request, by expiry, or with an ancestor).
    fn deleted(&self, _cse: &Arc<Cse>, _res: &Resource) {}

    /// Whether the type keeps state outside the store (timers, indexes, subscriptions on other
    /// resources) that [`Behaviour::deleted`] releases: then it runs also for the resources of
    /// this type deleted with an ancestor.
    fn keeps_state(&self) -> bool {
        false
    }
}

/// The types whose resources [`Behaviour::deleted`] must see when a subtree goes.
/// Computed once: every DELETE asks.
pub fn keeping_state() -> &'static [ResourceType] {
    static TYPES: std::sync::OnceLock<Vec<ResourceType>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        ResourceType::ALL
            .into_iter()
            .filter(|ty| behaviour(*ty).keeps_state())
            .collect()
    })
}

/// The attributes `res` would have after an UPDATE setting `content` (null removes): what the
/// checks of an UPDATE judge, as those of a CREATE judge its content.
pub fn merged(res: &Resource, content: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = res.attrs.clone();
    for (k, v) in content {
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}

/// Whether `who` may retrieve `id`, asked as `who` would ask it over `peer` (access control,
/// routing and all).
pub(crate) async fn reachable(cse: &Arc<Cse>, peer: &Peer, who: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let req = Request::new(
        Operation::Retrieve,
        id,
        Some(who.to_owned()),
        format!("chk-{}", crate::context::random_suffix(10)),
    );
    cse.handle(req, peer.clone()).await.rsc.is_success()
}

/// The resourceName a registration gets when it names none: `wanted` (its AE-ID or CSE-ID)
/// when that name is free under `parent`, else `wanted` with a random suffix, so that nothing
/// created earlier under the name can keep an entity from registering.
pub(crate) fn free_name(cse: &Cse, parent: &Resource, wanted: &str) -> String {
    let taken = |rn: &str| {
        cse.store
            .get_by_srn(&format!("{}/{rn}", parent.srn))
            .map_or(true, |r| r.is_some())
    };
    if !taken(wanted) {
        return wanted.to_owned();
    }
    format!("{wanted}-{}", crate::context::random_suffix(6))
}

/// The behaviour of a resource type: the registry.
pub fn behaviour(ty: ResourceType) -> &'static dyn Behaviour {
    match ty {
        ResourceType::AccessControlPolicy => &acp::AccessControlPolicy,
        ResourceType::Action => &action::Action,
        ResourceType::Dependency => &action::Dependency,
        ResourceType::Ae => &ae::Ae,
        ResourceType::AeAnnc => &ae_annc::AeAnnc,
        ResourceType::Container => &container::Container,
        ResourceType::ContentInstance => &content_instance::ContentInstance,
        ResourceType::CrossResourceSubscription => {
            &cross_resource_subscription::CrossResourceSubscription
        }
        ResourceType::CseBase => &cse_base::CseBase,
        ResourceType::Role => &role::Role,
        ResourceType::Token => &token::Token,
        ResourceType::DynamicAuthorizationConsultation => {
            &dynamic_authorization_consultation::DynamicAuthorizationConsultation
        }
        ResourceType::Group => &group::Group,
        ResourceType::FlexContainer => &flex_container::FlexContainer,
        ResourceType::FlexContainerInstance => &flex_container::FlexContainerInstance,
        ResourceType::LocalMulticastGroup => &local_multicast_group::LocalMulticastGroup,
        ResourceType::LocationPolicy => &location_policy::LocationPolicy,
        ResourceType::MgmtObj => &mgmt_obj::MgmtObj,
        ResourceType::Node => &node::Node,
        ResourceType::NotificationTargetMgmtPolicyRef => {
            &notification_target_policy::NotificationTargetMgmtPolicyRef
        }
        ResourceType::NotificationTargetPolicy => {
            &notification_target_policy::NotificationTargetPolicy
        }
        ResourceType::PolicyDeletionRules => &notification_target_policy::PolicyDeletionRules,
        ResourceType::PollingChannel => &polling_channel::PollingChannel,
        ResourceType::RemoteCse => &remote_cse::RemoteCse,
        ResourceType::Request => &request::RequestResource,
        ResourceType::SemanticDescriptor => &semantic_descriptor::SemanticDescriptor,
        ResourceType::Schedule => &schedule::Schedule,
        ResourceType::ServiceSubscribedAppRule => {
            &service_subscribed_app_rule::ServiceSubscribedAppRule
        }
        ResourceType::Subscription => &subscription::Subscription,
        ResourceType::TimeSeries => &time_series::TimeSeries,
        ResourceType::TimeSeriesInstance => &time_series::TimeSeriesInstance,
        ResourceType::TimeSyncBeacon => &time_sync_beacon::TimeSyncBeacon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/CONFORMANCE.md says "supported" for exactly the types of this registry.
    #[test]
    fn conformance_table_matches_the_registry() {
        let doc = include_str!("../../../../docs/CONFORMANCE.md");
        let mut claimed = Vec::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | ty | type | status | ... |
            let (Some(ty), Some(status)) = (cells.get(1), cells.get(3)) else {
                continue;
            };
            let Ok(code) = ty.parse::<u16>() else {
                continue;
            };
            match *status {
                "supported" => claimed.push(code),
                "not supported" => assert!(
                    ResourceType::from_code(code).is_none(),
                    "ty {code} is in the registry but CONFORMANCE.md says not supported"
                ),
                other => panic!("ty {code}: status '{other}'"),
            }
        }
        for ty in ResourceType::ALL {
            let _ = behaviour(ty);
            assert!(
                claimed.contains(&ty.code()),
                "{ty} (ty {}) has no 'supported' row in docs/CONFORMANCE.md",
                ty.code()
            );
        }
        for code in claimed {
            assert!(
                ResourceType::from_code(code).is_some(),
                "CONFORMANCE.md claims ty {code}, which the registry lacks"
            );
        }
    }
}
