//! Notification target removal (TS-0004 clauses 7.4.30 to 7.4.33; TS-0001 clauses 9.6.31 to
//! 9.6.34 and 10.2.10.8): a notification target that no longer wants a subscription's
//! notifications DELETEs the subscription's virtual `<notificationTargetSelfReference>` (`ntsr`),
//! and a policy decides.
//!
//! - `<notificationTargetPolicy>` (26, under the CSEBase): an action (`acn`: 1 accept, 2 reject,
//!   3 seek the subscription creator's authorization, 4 inform the creator and reject), a label
//!   (`plbl`, unique per creator) and how its rule groups combine (`rrs`: 1 AND, 2 OR).
//! - `<policyDeletionRules>` (27, at most two under a policy, else 4105): rules on the time of
//!   day (`dr/tod`, m2m:scheduleEntry) and on the target's region (`dr/lr`), combined by `drr`
//!   (default OR). The CSE knows no target's location, so a region rule never holds (as an
//!   ACP's accessControlLocationRegion).
//! - `<notificationTargetMgmtPolicyRef>` (25, under a subscription): the policy (`npi`) for some
//!   of its targets (`ntu`, each target in one reference only, else 4105).
//!
//! The policy for a target: the one a reference of the subscription names for it; else the
//! creator's own policy labelled "Default"; else the system default [`SYSTEM_DEFAULT`], which
//! the CSE keeps under its CSEBase with the action of `[notifications] target_removal` (reject
//! unless configured). Another originator's "Default" policy never applies to a subscription:
//! nobody decides for a creator but the creator and the operator.
//!
//! The administrator creates no policy (4000): the CSE's own is the system default, set by
//! the configuration.
//!
//! Only an originator that is a notification target of the subscription, and whose identity
//! the CSE can rely on (not a mere claim), may ask; the rules unmet, or a reject, give 4103.

use super::{Call, Pending, Prepared};
use crate::association::Peer;
use crate::cse::Cse;
use crate::store::{string_list, Resource};
use m2m_core::{
    EntityId, M2mError, M2mResult, Operation, Request, ResourceType, Response,
    ResponseStatusCode as Rsc,
};
use m2m_security::access_control::window::Schedule;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The resourceID (and name) of the system default policy under the CSEBase.
pub const SYSTEM_DEFAULT: &str = "defaultNTP";

/// The label of a default policy (TS-0001 clause 9.6.32; compared without case: the TS writes
/// both "Default" and "default").
const DEFAULT_LABEL: &str = "Default";

pub use crate::config::TargetRemovalAction;

/// m2m:logicalOperator (TS-0004 table 6.3.4.2.33-1).
const AND: u64 = 1;

// ---------------------------------------------------------------------------------------------
// The three resource types
// ---------------------------------------------------------------------------------------------

/// `<notificationTargetPolicy>` (26).
pub struct NotificationTargetPolicy;

impl super::Behaviour for NotificationTargetPolicy {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        let creator = call.peer.originator.as_ref();
        let admin = call.peer.is_admin(call.cse);
        super::ready((|| {
            if admin {
                // The CSE's own policy is one: the system default of the configuration. A policy
                // of the admin's would read as a second one, and applies to no subscriber.
                return Err(M2mError::bad_request(
                    "the CSE's own notificationTargetPolicy is set by its configuration",
                ));
            }
            let policies = policies_under(call.cse, parent.ri())?;
            unique_label(call.cse, &policies, attrs, creator, None)?;
            within_quota(call.cse, &policies, creator)?;
            Ok(Prepared::default())
        })())
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready(policies_under(call.cse, res.pi()).and_then(|policies| {
            let creator = creator_of(call.cse, res);
            unique_label(
                call.cse,
                &policies,
                content,
                creator.as_ref(),
                Some(res.ri()),
            )
        }))
    }

    /// The system default is the operator's, set in the configuration (TS-0004 clause
    /// 7.4.33.2.4: "there is always the default <notificationTargetPolicy>").
    fn admits(&self, _cse: &Cse, op: Operation, res: &Resource) -> M2mResult<()> {
        if res.ri() == SYSTEM_DEFAULT && matches!(op, Operation::Update | Operation::Delete) {
            return Err(M2mError::bad_request(
                "the system default notificationTargetPolicy is set by the CSE's configuration",
            ));
        }
        Ok(())
    }
}

/// The most policies one originator keeps under the CSEBase.
pub const MAX_POLICIES_PER_CREATOR: usize = 16;

/// The policies under the CSEBase (one read for the checks of a CREATE or UPDATE).
fn policies_under(cse: &Cse, parent_ri: &str) -> M2mResult<Vec<Resource>> {
    cse.store
        .read(|r| r.children(parent_ri, Some(ResourceType::NotificationTargetPolicy)))
}

/// A policy's creator as the entity it names (TS-0001 clause 7.2: one entity, several ID forms).
fn creator_of(cse: &Cse, res: &Resource) -> Option<EntityId> {
    res.creator_entity(&cse.id.home)
}

fn within_quota(cse: &Cse, policies: &[Resource], creator: Option<&EntityId>) -> M2mResult<()> {
    let held = policies
        .iter()
        .filter(|p| creator_of(cse, p).as_ref() == creator)
        .count();
    if held >= MAX_POLICIES_PER_CREATOR {
        return Err(M2mError::new(
            Rsc::NotAcceptable,
            "the originator holds as many notificationTargetPolicies as it may",
        ));
    }
    Ok(())
}

/// One creator's policies have distinct labels: the default of a creator is one policy.
fn unique_label(
    cse: &Cse,
    policies: &[Resource],
    attrs: &Map<String, Value>,
    creator: Option<&EntityId>,
    itself: Option<&str>,
) -> M2mResult<()> {
    let Some(label) = attrs.get("plbl").and_then(Value::as_str) else {
        return Ok(());
    };
    let taken = policies.iter().any(|p| {
        Some(p.ri()) != itself
            && creator_of(cse, p).as_ref() == creator
            && p.str_attr("plbl")
                .is_some_and(|l| l.eq_ignore_ascii_case(label))
    });
    if taken {
        return Err(M2mError::bad_request(
            "the originator has a notificationTargetPolicy with this policyLabel already",
        ));
    }
    Ok(())
}

/// `<policyDeletionRules>` (27).
pub struct PolicyDeletionRules;

impl super::Behaviour for PolicyDeletionRules {
    /// At most two under a policy (TS-0004 clause 7.4.32.2.1: CONFLICT); schedules that parse.
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready((|| {
            check_schedules(attrs)?;
            let siblings = call
                .cse
                .store
                .read(|r| r.children(parent.ri(), Some(ResourceType::PolicyDeletionRules)))?;
            if siblings.len() >= 2 {
                return Err(M2mError::new(
                    Rsc::Conflict,
                    "a notificationTargetPolicy has at most two policyDeletionRules",
                ));
            }
            Ok(Prepared::default())
        })())
    }
}

fn check_schedules(attrs: &Map<String, Value>) -> M2mResult<()> {
    let tod = attrs.get("dr").and_then(|dr| dr.get("tod"));
    for entry in string_list(tod) {
        Schedule::parse(&entry)
            .map_err(|e| M2mError::bad_request(format!("deletionRules/timeOfDay: {e}")))?;
    }
    Ok(())
}

/// `<notificationTargetMgmtPolicyRef>` (25).
pub struct NotificationTargetMgmtPolicyRef;

impl super::Behaviour for NotificationTargetMgmtPolicyRef {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready(
            policy_of_the_creator(call.cse, parent, attrs)
                .and_then(|()| targets_not_referenced(call.cse, parent.ri(), attrs, None))
                .map(|()| Prepared::default()),
        )
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready(
            crate::resolve::parent_of(call.cse, res)
                .and_then(|sub| policy_of_the_creator(call.cse, &sub, content))
                .and_then(|()| targets_not_referenced(call.cse, res.pi(), content, Some(res.ri()))),
        )
    }
}

/// A policy a reference names (`npi`) must be the subscription creator's own or the system
/// default: nobody decides for a creator but the creator and the operator, and a policy of
/// someone else could be changed by its owner (its action is RW) to let targets go. One that
/// does not exist (yet) is taken, as TS-0004 clause 7.4.30.2.1 checks nothing more; it decides
/// nothing unless it is the creator's when it is used ([`policy_for`]).
fn policy_of_the_creator(cse: &Cse, sub: &Resource, attrs: &Map<String, Value>) -> M2mResult<()> {
    let Some(npi) = attrs.get("npi").and_then(Value::as_str) else {
        return Ok(());
    };
    match crate::resolve::local_resource(cse, npi) {
        Some(p) if !decides_for(cse, &p, sub) => Err(M2mError::bad_request(
            "policyID must name a notificationTargetPolicy of the subscription's creator",
        )),
        _ => Ok(()),
    }
}

/// Whether `p` is a policy that may decide for the subscription `sub`: its creator's, or the
/// operator's system default.
fn decides_for(cse: &Cse, p: &Resource, sub: &Resource) -> bool {
    p.ty == ResourceType::NotificationTargetPolicy
        && (p.ri() == SYSTEM_DEFAULT || same_creator(cse, p, sub))
}

/// Whether two resources have one creator (a resource without one has no creator in common).
fn same_creator(cse: &Cse, a: &Resource, b: &Resource) -> bool {
    creator_of(cse, a).is_some_and(|c| Some(c) == creator_of(cse, b))
}

/// A notification target has one policy reference in a subscription (TS-0004 clause
/// 7.4.30.2.1: CONFLICT).
fn targets_not_referenced(
    cse: &Cse,
    sub_ri: &str,
    attrs: &Map<String, Value>,
    itself: Option<&str>,
) -> M2mResult<()> {
    let ntu = string_list(attrs.get("ntu"));
    if ntu.is_empty() {
        return Ok(());
    }
    let siblings = cse
        .store
        .read(|r| r.children(sub_ri, Some(ResourceType::NotificationTargetMgmtPolicyRef)))?;
    // The same target however it is written: its ID in any form or its <AE>'s address (a URL
    // only as written).
    let same = |a: &str, b: &str| {
        a == b
            || crate::notification::target_entity(cse, a)
                .is_some_and(|e| crate::notification::target_entity(cse, b) == Some(e))
    };
    for other in siblings.iter().filter(|s| Some(s.ri()) != itself) {
        if string_list(other.attrs.get("ntu"))
            .iter()
            .any(|t| ntu.iter().any(|n| same(t, n)))
        {
            return Err(M2mError::new(
                Rsc::Conflict,
                "a notification target has a policy reference in this subscription already",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The system default
// ---------------------------------------------------------------------------------------------

/// Creates or refreshes the system default policy: its action follows the configuration.
pub fn ensure_system_default(cse: &Cse) -> anyhow::Result<()> {
    let action = cse.config().notifications.target_removal as u8;
    let base = cse.id.cse_id.bare().to_owned();
    let base_rn = cse.id.rn.clone();
    // Absolute, as the creator of every resource is kept (`dispatcher::assemble`).
    let creator = m2m_core::EntityId::cse(cse.id.home.sp.clone(), cse.id.cse_id.clone()).absolute();
    let now = cse.now_ts();
    cse.store
        .write_blocking(move |w| match w.get(SYSTEM_DEFAULT)? {
            Some(mut p) => {
                p.attrs.insert("acn".into(), json!(action));
                p.attrs.insert("cr".into(), json!(creator));
                p.creator = Some(creator);
                w.update(&p)
            }
            None => {
                let attrs = json!({
                    "ty": ResourceType::NotificationTargetPolicy.code(),
                    "ri": SYSTEM_DEFAULT,
                    "rn": SYSTEM_DEFAULT,
                    "pi": base,
                    "ct": now,
                    "lt": now,
                    "acn": action,
                    "plbl": DEFAULT_LABEL,
                    "cr": creator,
                });
                w.insert(Resource {
                    seq: 0,
                    ty: ResourceType::NotificationTargetPolicy,
                    srn: format!("{base_rn}/{SYSTEM_DEFAULT}"),
                    attrs: attrs.as_object().cloned().unwrap_or_default(),
                    creator: Some(creator),
                    specialization: None,
                })
                .map(|_| ())
            }
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// <notificationTargetSelfReference>
// ---------------------------------------------------------------------------------------------

/// A request to `<subscription>/ntsr` (TS-0004 clause 7.4.33.2): only DELETE, by one of the
/// subscription's notification targets, decided by the policy that applies to it.
pub async fn serve_ntsr(
    cse: &Arc<Cse>,
    req: &Request,
    sub: &Resource,
    peer: &Peer,
) -> M2mResult<Response> {
    let originator = req.from.as_deref().unwrap_or("");
    // Removing someone else's target would be the attack itself: the ID must be more than a
    // claim, and be one of the targets.
    let mine: Vec<String> = string_list(sub.attrs.get("nu"))
        .into_iter()
        .filter(|nu| crate::notification::is_originator(cse, nu, originator))
        .collect();
    if !peer.proof.identifies() || mine.is_empty() {
        // Who may not read the subscription learns nothing of it, not even that it exists.
        if !super::reachable(cse, peer, originator, sub.ri()).await {
            return Err(M2mError::not_found("the resource does not exist"));
        }
        if req.op != Operation::Delete {
            return Err(not_deleted());
        }
        tracing::info!(target: "audit", originator, sub = sub.ri(), "notification target removal refused: not a target of the subscription");
        return Err(crate::access::refused());
    }
    if req.op != Operation::Delete {
        return Err(not_deleted());
    }
    let policy = policy_for(cse, sub, originator)?;
    let action = policy
        .as_ref()
        .and_then(|p| p.u64_attr("acn"))
        .and_then(TargetRemovalAction::from_code)
        .unwrap_or(cse.config().notifications.target_removal);
    let holds = match &policy {
        Some(p) => rules_hold(cse, p)?,
        None => true,
    };
    let refused = || {
        tracing::info!(target: "audit", originator, sub = sub.ri(), ?action, "notification target removal refused by policy");
        crate::access::refused()
    };
    if !holds {
        return Err(refused());
    }
    let removed = match action {
        TargetRemovalAction::Accept => true,
        TargetRemovalAction::Reject => false,
        TargetRemovalAction::Seek => ask_creator(cse, sub, originator, "tra").await,
        TargetRemovalAction::Inform => {
            ask_creator(cse, sub, originator, "trr").await;
            false
        }
    };
    if !removed {
        return Err(refused());
    }
    remove_targets(cse, sub, &mine).await?;
    tracing::info!(target: "audit", originator, sub = sub.ri(), "notification target removed at its request");
    Ok(Response::new(Rsc::Deleted, &req.rqi, None))
}

/// Only DELETE: 4005 (TS-0004 clause 7.4.33.2).
fn not_deleted() -> M2mError {
    M2mError::not_allowed("a notificationTargetSelfReference can only be deleted")
}

/// How strict an action is, strictest first: when several references name the target (in
/// different forms of its ID), the strictest of their policies applies.
fn strictness(p: &Resource) -> u8 {
    match p.u64_attr("acn").and_then(TargetRemovalAction::from_code) {
        Some(TargetRemovalAction::Reject) | None => 0,
        Some(TargetRemovalAction::Inform) => 1,
        Some(TargetRemovalAction::Seek) => 2,
        Some(TargetRemovalAction::Accept) => 3,
    }
}

/// The policy that applies to `originator`, a target of `sub` (TS-0001 clause 10.2.10.8): the
/// policy a reference of the subscription names for it (in any form of its ID), else the
/// creator's default, else the system default (`None` if even that is gone: the configured
/// action).
fn policy_for(cse: &Cse, sub: &Resource, originator: &str) -> M2mResult<Option<Resource>> {
    let refs = cse.store.read(|r| {
        r.children(
            sub.ri(),
            Some(ResourceType::NotificationTargetMgmtPolicyRef),
        )
    })?;
    let named = refs
        .iter()
        .filter(|r| {
            string_list(r.attrs.get("ntu"))
                .iter()
                .any(|t| crate::notification::is_originator(cse, t, originator))
        })
        .filter_map(|r| r.str_attr("npi"))
        .filter_map(|npi| crate::resolve::local_resource(cse, npi))
        .filter(|p| decides_for(cse, p, sub))
        .min_by_key(strictness);
    if named.is_some() {
        return Ok(named);
    }
    let base = cse.id.cse_id.bare().to_owned();
    let policies = cse
        .store
        .read(|r| r.children(&base, Some(ResourceType::NotificationTargetPolicy)))?;
    let is_default = |p: &Resource| {
        p.str_attr("plbl")
            .is_some_and(|l| l.eq_ignore_ascii_case(DEFAULT_LABEL))
    };
    let creators = policies
        .iter()
        .find(|p| is_default(p) && same_creator(cse, p, sub));
    Ok(creators
        .or_else(|| policies.iter().find(|p| p.ri() == SYSTEM_DEFAULT))
        .cloned())
}

/// Whether the policy's rule groups hold now: none (the action applies), one, or two combined
/// by `rrs` (absent: OR, as within a group).
fn rules_hold(cse: &Cse, policy: &Resource) -> M2mResult<bool> {
    let groups = cse
        .store
        .read(|r| r.children(policy.ri(), Some(ResourceType::PolicyDeletionRules)))?;
    if groups.is_empty() {
        return Ok(true);
    }
    let now = cse.now();
    let results = groups.iter().map(|g| group_holds(g, &now));
    Ok(if policy.u64_attr("rrs") == Some(AND) {
        results.into_iter().all(|b| b)
    } else {
        results.into_iter().any(|b| b)
    })
}

/// One `<policyDeletionRules>`: its rules (each time-of-day schedule, each region) combined by
/// `drr` (default OR); no rule at all holds.
fn group_holds(group: &Resource, now: &chrono::DateTime<chrono::Utc>) -> bool {
    let dr = group.attrs.get("dr");
    let schedules = string_list(dr.and_then(|d| d.get("tod")))
        .into_iter()
        .map(|s| Schedule::parse(&s).is_ok_and(|s| s.matches(now)));
    // The CSE has no location of a notification target: a region rule does not hold.
    let regions = dr
        .and_then(|d| d.get("lr"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let rules: Vec<bool> = schedules
        .chain(std::iter::repeat_n(false, regions))
        .collect();
    if rules.is_empty() {
        return true;
    }
    if group.u64_attr("drr") == Some(AND) {
        rules.iter().all(|b| *b)
    } else {
        rules.iter().any(|b| *b)
    }
}

/// Tells the subscription's creator that `target` asks to be removed (`flag`: `tra` to seek its
/// authorization, `trr` to inform it); whether it answered with success.
async fn ask_creator(cse: &Arc<Cse>, sub: &Resource, target: &str, flag: &str) -> bool {
    let Some(creator) = sub.creator.as_deref() else {
        return false;
    };
    let mut sgn = json!({ "sur": cse.sp_relative(sub.ri()), "nt": target });
    sgn[flag] = json!(true);
    let resp = crate::notification::send_now(cse, creator, json!({ "m2m:sgn": sgn })).await;
    resp.rsc.is_success()
}

/// Takes `targets` out of the subscription's notificationURI; the subscription stays, even
/// with no target left (its creator decides about it).
async fn remove_targets(cse: &Arc<Cse>, sub: &Resource, targets: &[String]) -> M2mResult<()> {
    let ri = sub.ri().to_owned();
    let targets = targets.to_vec();
    let cse2 = Arc::clone(cse);
    cse.store
        .write(move |w| {
            let Some(mut sub) = w.get(&ri)? else {
                return Err(M2mError::not_found("the subscription is gone"));
            };
            let kept: Vec<String> = string_list(sub.attrs.get("nu"))
                .into_iter()
                .filter(|nu| !targets.contains(nu))
                .collect();
            sub.attrs.insert("nu".into(), json!(kept));
            // A target that left is no associatedCrossResourceSub either: every entry there is a
            // notificationURI too, and the deletion notice would go where it asked not to.
            if sub.attrs.contains_key("acrs") {
                let acrs: Vec<String> = string_list(sub.attrs.get("acrs"))
                    .into_iter()
                    .filter(|a| !super::subscription::still_named(&cse2, a, &targets))
                    .collect();
                sub.attrs.insert("acrs".into(), json!(acrs));
            }
            w.update(&sub)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(dr: Value, drr: Option<u64>) -> Resource {
        let mut attrs = json!({ "dr": dr }).as_object().cloned().unwrap();
        if let Some(drr) = drr {
            attrs.insert("drr".into(), json!(drr));
        }
        Resource {
            seq: 0,
            ty: ResourceType::PolicyDeletionRules,
            srn: "cb/p/r".into(),
            attrs,
            creator: None,
            specialization: None,
        }
    }

    #[test]
    fn rules_of_a_group_combine_by_their_relation() {
        let now = chrono::Utc::now();
        let always = "* * * * * * *";
        // Not this year: never now.
        let never = "* * * * * * 1999";
        assert!(group_holds(&group(json!({}), None), &now), "no rule");
        assert!(group_holds(&group(json!({ "tod": [] }), None), &now));
        assert!(group_holds(
            &group(json!({ "tod": [never, always] }), None),
            &now
        ));
        assert!(!group_holds(
            &group(json!({ "tod": [never, always] }), Some(AND)),
            &now
        ));
        assert!(group_holds(
            &group(json!({ "tod": [always, always] }), Some(AND)),
            &now
        ));
        assert!(!group_holds(
            &group(json!({ "tod": [never] }), Some(2)),
            &now
        ));
        // A region needs the target's location, which the CSE does not have.
        let region = json!({ "tod": [always], "lr": [{ "accr": [0.0, 0.0, 10.0] }] });
        assert!(!group_holds(&group(region.clone(), Some(AND)), &now));
        assert!(group_holds(&group(region, None), &now));
    }
}
