//! The access decision of the Receiver (TS-0004 clause 7.3.3.15, TS-0003 clause 7.1,
//! TS-0001 clause 9.6.2): which policies govern a request and whether they permit it.
//!
//! The decision itself is `m2m_security::access_control::decide`; this module gathers its inputs:
//! the applicable `<accessControlPolicy>` resources (or the creator-only default), the operation,
//! the originator, the source address of the socket and the time.

use crate::association::Peer;
use crate::context::Context;
use crate::resolve::Target;
use crate::store::{string_list, Resource};
use m2m_core::EntityId;
use m2m_core::{
    Address, M2mError, M2mResult, Operation, Request, ResourceType, ResponseStatusCode as Rsc,
};
use m2m_security::access_control::{
    decide, AccessOperation, AccessRequest, GroupLookup, GroupResolver, Privileges,
};
use m2m_security::association::Proof;
use std::collections::HashMap;

/// The facts of one request that every access decision for it shares: the originator as the
/// impersonation check parsed it, and how far its association proves it.
pub struct Facts<'a> {
    pub originator: Option<&'a EntityId>,
    pub peer: &'a Peer,
    pub proof: Proof,
    /// The attributes the operation touches on its target, for rules limited to some (`aca`);
    /// known only in the decision on the target itself.
    pub attributes: Option<&'a [String]>,
    /// The Role-IDs the originator holds for this request ([`crate::roles`]).
    pub roles: &'a [String],
}

impl<'a> Facts<'a> {
    pub fn of(peer: &'a Peer) -> Self {
        Facts {
            originator: peer.originator.as_ref(),
            peer,
            proof: peer.proof,
            attributes: None,
            roles: &[],
        }
    }

    /// The same facts, the originator holding `roles`.
    pub fn holding(&self, roles: &'a [String]) -> Self {
        Facts {
            roles,
            ..self.touching(self.attributes)
        }
    }

    /// The same facts, knowing which attributes of the target the operation touches.
    fn touching(&self, attributes: Option<&'a [String]>) -> Self {
        Facts {
            originator: self.originator,
            peer: self.peer,
            proof: self.proof,
            attributes,
            roles: self.roles,
        }
    }
}

impl Facts<'_> {
    /// The admin originator, where a credential proves it (see [`Peer::is_admin`]).
    pub(crate) fn is_admin(&self, cse: &Context) -> bool {
        self.peer.is_admin(cse)
    }

    /// The originator for reasons in the audit log.
    fn who(&self) -> String {
        self.originator
            .map_or_else(|| "(no AE-ID yet)".to_owned(), ToString::to_string)
    }
}

/// The policies that govern access to a resource.
enum Policies {
    /// Privileges of <accessControlPolicy> resources, with their IDs for reasons.
    Acps(Vec<(String, Privileges)>),
    /// No accessControlPolicyIDs: only the creator (or the custodian, who replaces it) has
    /// access (TS-0001 table 9.6.1.3.2-1).
    CreatorOnly(Option<String>),
    /// The CSEBase without accessControlPolicyIDs: the system rule lets every AE and CSE registered
    /// here retrieve it (a registree must learn its registrar) and create its own
    /// `<notificationTargetPolicy>` (which lives only under the CSEBase, and applies to its
    /// creator's subscriptions only); nothing else.
    RegistreesMayRetrieve,
    /// A <pollingChannel> and its `pcu`: only the AE or CSE its parent stands for (TS-0004
    /// clauses 7.4.21.2 and 7.4.22.2, Recv-6.3), whatever policies say.
    OwnEntity(Option<String>),
    /// An <AEAnnc> (and its CREATE under a <remoteCSE>): only the CSE the <remoteCSE> stands
    /// for, over its own association, as itself or as the announced AE it relays (TS-0004
    /// clause 7.4.5.2.1: From `<CSE-ID>/<AE-ID-Stem>`), never as another of its entities;
    /// never a DELETE (the administrator's only; below the IN-CSE, also this CSE's registrar
    /// removing a copy after its own record went); policies do not count.
    Announcer {
        cse: Option<EntityId>,
        /// The announced AE-ID-Stem (`None` for a CREATE: its type checks From and `lnk`).
        stem: Option<m2m_core::AeStem>,
    },
}

impl Policies {
    /// Whether a rule of these policies covers only some attributes (`aca`).
    fn limit_attributes(&self) -> bool {
        matches!(self, Policies::Acps(acps) if acps.iter().any(|(_, p)| p.has_attribute_rules()))
    }
}

/// The attributes an operation touches on its target (Release 4 accessControlAttributes): those
/// a CREATE or UPDATE sets, those a partial RETRIEVE names, every attribute of the resource a
/// RETRIEVE or DELETE reads or removes. `None` where it cannot be told (an instance behind
/// `la`/`ol`, a NOTIFY): then no rule limited to attributes grants.
fn touched_attributes(req: &Request, target: &Target) -> Option<Vec<String>> {
    let content = || {
        req.pc
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .and_then(|o| o.values().next())
            .and_then(serde_json::Value::as_object)
            .map(|inner| inner.keys().cloned().collect())
    };
    match (req.op, target) {
        (Operation::Create | Operation::Update, _) => content(),
        (Operation::Retrieve, Target::Resource(_)) if !req.atrl.is_empty() => {
            Some(req.atrl.clone())
        }
        (Operation::Retrieve | Operation::Delete, Target::Resource(r)) => {
            Some(r.attrs.keys().cloned().collect())
        }
        _ => None,
    }
}

/// What an access decision granted.
#[derive(Debug, PartialEq, Eq)]
pub enum Grant {
    /// The operation on the whole resource.
    Whole,
    /// The operation through rules limited to these attributes (Release 4 accessControlAttributes):
    /// the answer shows no other.
    Attributes(Vec<String>),
}

/// The access operation a request asks for.
pub(crate) fn operation(req: &Request) -> AccessOperation {
    match req.op {
        Operation::Create => AccessOperation::Create,
        Operation::Retrieve if req.is_discovery() => AccessOperation::Discovery,
        Operation::Retrieve => AccessOperation::Retrieve,
        Operation::Update => AccessOperation::Update,
        Operation::Delete => AccessOperation::Delete,
        Operation::Notify => AccessOperation::Notify,
    }
}

/// Decides a request on its target before it is carried out; a denial is 4103.
pub fn authorize(cse: &Context, req: &Request, target: &Target, peer: &Peer) -> M2mResult<Grant> {
    let roles = crate::roles::held(cse, req, peer);
    let facts = Facts::of(peer).holding(&roles);
    let op = operation(req);
    // A <pollingChannel> and its pcu are its own entity's, not even the admin's: the admin
    // would otherwise take requests meant for that entity (TS-0004 clause 7.4.21.2, Recv-6.3).
    if let Some((subject, policies)) = polling_channel_policy(cse, req, target)? {
        let child_type = (req.op == Operation::Create).then_some(15);
        return enforce(cse, &facts, op, subject, child_type, &policies);
    }
    refuse_administered_delete(cse, req, target, &facts)?;
    if facts.is_admin(cse) {
        return Ok(Grant::Whole);
    }
    let (subject, child_type) = match (req.op, target) {
        // Registration is decided by the registration rules, not by access control (TS-0004 7.3.2.7).
        (Operation::Create, Target::Resource(_))
            if matches!(req.ty, Some(ResourceType::Ae | ResourceType::RemoteCse)) =>
        {
            return Ok(Grant::Whole)
        }
        // A notification to the CSE (a verification request, ESPrim, group keys) carries no
        // resource access: its handlers decide who may send what.
        (Operation::Notify, Target::Resource(r))
            if matches!(r.ty, ResourceType::CseBase | ResourceType::RemoteCse) =>
        {
            return Ok(Grant::Whole)
        }
        // A notification for an AE comes from the CSE hosting the subscription (this one, or an
        // authenticated CSE peer as itself); anyone else needs the NOTIFY privilege on the <AE>.
        (Operation::Notify, Target::Resource(r))
            if matches!(
                r.ty,
                ResourceType::Ae | ResourceType::CrossResourceSubscription
            ) && from_a_hosting_cse(peer) =>
        {
            return Ok(Grant::Whole)
        }
        // A <localMulticastGroup> is made by a group hosting CSE this CSE has a registration
        // relationship with, speaking for itself (TS-0004 clause 7.4.55.2.1).
        (Operation::Create, Target::Resource(r))
            if r.ty == ResourceType::CseBase
                && req.ty == Some(ResourceType::LocalMulticastGroup) =>
        {
            if may_create_local_multicast_group(cse, peer) {
                return Ok(Grant::Whole);
            }
            tracing::info!(target: "audit", originator = %facts.who(), "localMulticastGroup refused: not a CSE with a registration relationship speaking for itself");
            return Err(refused());
        }
        // Discovery results are filtered one by one (see `permits`).
        (Operation::Retrieve, Target::Resource(_)) if req.is_discovery() => {
            return Ok(Grant::Whole)
        }
        // Any notification target may ask to leave a subscription it cannot read: the policy of
        // the subscription decides (`resources::notification_target_policy`).
        (_, Target::SelfReference(_)) => return Ok(Grant::Whole),
        (_, Target::PollingChannelUri(_)) => {
            return Err(M2mError::internal(
                "pcu reached the generic access decision",
            ))
        }
        (Operation::Create, Target::Resource(parent)) if req.ty == Some(ResourceType::AeAnnc) => {
            return enforce(
                cse,
                &facts,
                op,
                parent,
                Some(ResourceType::AeAnnc.code()),
                &announcer_of(cse, parent, None),
            );
        }
        (Operation::Create, Target::Resource(parent)) => (parent, req.ty.map(|t| t.code())),
        (_, Target::Resource(r)) => (r, None),
        // la/ol stand for a contentInstance, which is governed by its container.
        (_, Target::Latest(c) | Target::Oldest(c)) => (&**c, None),
        // Fan-out and semantic fan-out: membersAccessControlPolicyIDs when set, else the group's
        // own policies (TS-0001 clauses 10.2.7.6 to 10.2.7.10: "In the case
        // membersAccessControlPolicyIDs is not provided the access control policy defined for
        // the <group> resource shall be used"; TS-0004 clause 7.4.35.2.2); each member decides
        // on its own as well.
        (_, Target::FanOut { group, .. } | Target::SemanticFanOut(group)) => {
            let macp = string_list(group.attrs.get("macp"));
            let policies = if macp.is_empty() {
                policies_of(cse, group)?
            } else {
                Policies::Acps(load_acps(cse, &macp, false))
            };
            return enforce(cse, &facts, op, group, None, &policies);
        }
    };
    // Changing accessControlPolicyIDs, or the custodian (who holds the rights when there are
    // none), is governed by the selfPrivileges of the current ACPs.
    let content = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get(subject.root_name().as_ref()));
    // dynamicAuthorizationConsultationIDs too: whoever links a resource to a consultation
    // chooses who may be granted access to it.
    let changes_access = req.op == Operation::Update
        && subject.ty != ResourceType::AccessControlPolicy
        && content.is_some_and(|c| {
            c.get("acpi").is_some() || c.get("cstn").is_some() || c.get("daci").is_some()
        });
    let policies = if changes_access {
        self_policies_of_acpi(cse, subject)?
    } else {
        policies_of(cse, subject)?
    };
    let touched = policies
        .limit_attributes()
        .then(|| touched_attributes(req, target))
        .flatten();
    let grant = enforce(
        cse,
        &facts.touching(touched.as_deref()),
        op,
        subject,
        child_type,
        &policies,
    )?;
    if req.op == Operation::Create && req.ty == Some(ResourceType::Subscription) {
        // The subscriber must be allowed to see what it subscribes to (TS-0004 7.4.8.2.1).
        if !permits(
            cse,
            &facts,
            AccessOperation::Retrieve,
            subject,
            &mut HashMap::new(),
        )? {
            tracing::info!(target: "audit", originator = %facts.who(), target = subject.ri(), "subscription refused: no RETRIEVE privilege on the subscribed-to resource");
            return Err(M2mError::new(
                Rsc::SubscriptionCreatorHasNoPrivilege,
                "the subscriber has no RETRIEVE privilege on the subscribed-to resource",
            ));
        }
    }
    Ok(grant)
}

/// Whether the answer to an UPDATE or DELETE may carry the resource it changed or removed (its
/// Result Content, TS-0004 clause 7.3.3.8; the UPDATE's default is its attributes): only to an
/// originator the target's policies let RETRIEVE it. The privilege to change or remove a
/// resource is not the privilege to read it (an UPDATE-only rule would otherwise read every
/// attribute through its answers). Decided before the operation, on the policies it was
/// authorized under; answers of other operations are not concerned.
pub(crate) fn answer_may_show(
    cse: &Context,
    req: &Request,
    target: &Target,
    peer: &Peer,
) -> M2mResult<bool> {
    if !matches!(req.op, Operation::Update | Operation::Delete)
        || req.result_content() == m2m_core::ResultContent::Nothing
    {
        return Ok(true);
    }
    let subject = match target {
        Target::Resource(r) => r,
        Target::Latest(c) | Target::Oldest(c) => &**c,
        // A fan-out's members answer each as their own request; a self reference shows nothing.
        Target::FanOut { .. }
        | Target::SemanticFanOut(_)
        | Target::PollingChannelUri(_)
        | Target::SelfReference(_) => return Ok(true),
    };
    if Facts::of(peer).is_admin(cse) {
        return Ok(true);
    }
    let roles = crate::roles::held(cse, req, peer);
    let facts = Facts::of(peer).holding(&roles);
    // The policies a RETRIEVE of the target would be decided by (`authorize`): a type with a
    // policy of its own (an `<AEAnnc>`, a polling channel) is judged by it, not by its parent's.
    let policies = policies_of(cse, subject)?;
    let (shown, _, _) = evaluate(
        cse,
        &facts,
        AccessOperation::Retrieve,
        subject,
        None,
        &policies,
    );
    if !shown {
        tracing::info!(target: "audit", originator = %facts.who(), target = subject.ri(), operation = %operation(req), "answer without the resource: no RETRIEVE privilege on it");
    }
    Ok(shown)
}

/// A DELETE of a security configuration object (TS-0003 clause 8.3.9.9: trust anchors, an
/// authenticationProfile...), or of the `<node>` holding one, is the administrator's: whoever
/// could would take away the device's trust or its way to authenticate (4103).
fn refuse_administered_delete(
    cse: &Context,
    req: &Request,
    target: &Target,
    facts: &Facts<'_>,
) -> M2mResult<()> {
    let (Operation::Delete, Target::Resource(r)) = (req.op, target) else {
        return Ok(());
    };
    // The administrator itself, not an <action> it made, which others may be able to change.
    if facts.is_admin(cse) && !facts.peer.by_action {
        return Ok(());
    }
    let administered = |m: &Resource| {
        m.u64_attr("mgd")
            .is_some_and(|mgd| m2m_core::mgmt_obj::ADMINISTERED.contains(&mgd))
    };
    let holds = match r.ty {
        ResourceType::MgmtObj => administered(r),
        ResourceType::Node => cse
            .store
            .read(|rd| rd.children(r.ri(), Some(ResourceType::MgmtObj)))?
            .iter()
            .any(administered),
        _ => false,
    };
    if holds {
        tracing::info!(target: "audit", originator = %facts.who(), target = r.ri(), "access denied: only the administrator deletes security configuration");
        return Err(refused());
    }
    Ok(())
}

/// The resource whose policies decide `req` on `target` (a CREATE's parent, the container of
/// `la`/`ol`) and the type a CREATE makes; `None` for targets no policy of a resource decides.
pub(crate) fn subject_of<'t>(
    req: &Request,
    target: &'t Target,
) -> Option<(&'t Resource, Option<u16>)> {
    match (req.op, target) {
        (Operation::Create, Target::Resource(parent)) => Some((parent, req.ty.map(|t| t.code()))),
        (_, Target::Resource(r)) => Some((r, None)),
        (_, Target::Latest(c) | Target::Oldest(c)) => Some((c, None)),
        _ => None,
    }
}

/// Whether a dynamic grant (a Dynamic Authorization Server's privileges, a token's) may decide
/// `req` on `subject` at all. Not the requests [`authorize`] decides by other rules than the
/// target's privileges: a change of who may access (`acpi`, `cstn`, `daci`: selfPrivileges), an
/// <accessControlPolicy> (its `pvs`), a <pollingChannel> (its own entity), a subscription (which
/// needs RETRIEVE on what it watches), nor the creation of resources that govern access.
pub(crate) fn dynamically_grantable(req: &Request, subject: &Resource) -> bool {
    use ResourceType as T;
    // Resources that govern access, registration or devices: their own rules, always.
    if matches!(
        subject.ty,
        T::AccessControlPolicy
            | T::Role
            | T::Token
            | T::PollingChannel
            | T::AeAnnc
            | T::RemoteCse
            | T::DynamicAuthorizationConsultation
            | T::ServiceSubscribedAppRule
            | T::MgmtObj
            | T::Node
    ) {
        return false;
    }
    // What a dynamic grant may create: data, nothing that governs anything.
    if req.op == Operation::Create
        && !matches!(
            req.ty,
            Some(
                T::Container
                    | T::ContentInstance
                    | T::FlexContainer
                    | T::FlexContainerInstance
                    | T::TimeSeries
                    | T::TimeSeriesInstance
                    | T::SemanticDescriptor
            )
        )
    {
        return false;
    }
    let content = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get(subject.root_name().as_ref()));
    !(req.op == Operation::Update
        && content.is_some_and(|c| {
            ["acpi", "cstn", "daci", "nl", "hael"]
                .iter()
                .any(|a| c.get(*a).is_some())
        }))
}

/// Whether `privileges` (a Dynamic Authorization Server's grant) permit `req` on `subject`,
/// decided as the privileges of an <accessControlPolicy> would be.
pub(crate) fn permitted_by(
    cse: &Context,
    peer: &Peer,
    req: &Request,
    subject: &Resource,
    child_type: Option<u16>,
    privileges: &Privileges,
) -> Option<Grant> {
    let facts = Facts::of(peer);
    let policies = Policies::Acps(vec![(
        "dynamic-authorization".to_owned(),
        privileges.clone(),
    )]);
    let limited = policies.limit_attributes();
    let target = Target::Resource(subject.clone());
    let touched = limited.then(|| touched_attributes(req, &target)).flatten();
    let (permit, _, attributes) = evaluate(
        cse,
        &facts.touching(touched.as_deref()),
        operation(req),
        subject,
        child_type,
        &policies,
    );
    permit.then(|| attributes.map_or(Grant::Whole, Grant::Attributes))
}

/// Whether the target's own policies permit `req` when the originator holds `roles` besides
/// those its request named (a token's roles, TS-0003 clause 7.3.2.5 step 3).
pub(crate) fn permitted_with_roles(
    cse: &Context,
    peer: &Peer,
    req: &Request,
    subject: &Resource,
    child_type: Option<u16>,
    roles: &[String],
) -> Option<Grant> {
    let policies = policies_of(cse, subject).ok()?;
    let mut held = crate::roles::held(cse, req, peer);
    held.extend(roles.iter().cloned());
    let facts = Facts::of(peer).holding(&held);
    let target = Target::Resource(subject.clone());
    let touched = policies
        .limit_attributes()
        .then(|| touched_attributes(req, &target))
        .flatten();
    let (permit, _, attributes) = evaluate(
        cse,
        &facts.touching(touched.as_deref()),
        operation(req),
        subject,
        child_type,
        &policies,
    );
    permit.then(|| attributes.map_or(Grant::Whole, Grant::Attributes))
}

fn enforce(
    cse: &Context,
    facts: &Facts<'_>,
    op: AccessOperation,
    subject: &Resource,
    child_type: Option<u16>,
    policies: &Policies,
) -> M2mResult<Grant> {
    let (permit, reason, attributes) = evaluate(cse, facts, op, subject, child_type, policies);
    if permit {
        Ok(attributes.map_or(Grant::Whole, Grant::Attributes))
    } else {
        tracing::info!(target: "audit", originator = %facts.who(), proof = %facts.proof, operation = %op, target = subject.ri(), reason = %reason, "access denied");
        Err(refused())
    }
}

/// A denial: 4103 ORIGINATOR_HAS_NO_PRIVILEGE. The reason (which policy, which rule) is for the
/// audit log: the requester learns nothing about policies or other entities.
pub(crate) fn refused() -> M2mError {
    M2mError::new(
        Rsc::OriginatorHasNoPrivilege,
        "the originator has no privilege for this operation on the target",
    )
}

/// Whether a NOTIFY comes from a CSE that may host a subscription: this CSE, or a CSE peer
/// speaking as itself over its association.
fn from_a_hosting_cse(peer: &Peer) -> bool {
    peer.is_internal()
        || (peer.proof == Proof::Authenticated
            && peer.originator.as_ref().is_some_and(EntityId::is_cse)
            && peer.bound_entity() == peer.originator.as_ref())
}

/// Whether `who` may perform `op` on `res`, judged for an entity that is not the one asking (a
/// subscription's creator when its notifications go out, the target of a blocking
/// subscription): as vouched for by this CSE, never authenticated (rules with `acaf` do not
/// count), the admin as the admin.
pub(crate) fn permits_entity(
    cse: &Context,
    who: &EntityId,
    op: AccessOperation,
    res: &Resource,
) -> M2mResult<bool> {
    if *who == cse.id.admin {
        return Ok(true);
    }
    let peer = Peer::internal().with_originator(Some(who.clone()), Proof::Vouched);
    permits(cse, &Facts::of(&peer), op, res, &mut HashMap::new())
}

/// Whether `res` is decided by its own policies; otherwise by its parent's (a contentInstance
/// by its container's).
pub(crate) fn governed_by_itself(res: &Resource) -> bool {
    res.ty.has_acpi()
        || matches!(
            res.ty,
            ResourceType::AccessControlPolicy | ResourceType::PollingChannel
        )
}

/// Whether the originator may perform `op` on `res`; `cache` keeps decisions per governing resource
/// for the many checks of one discovery or child listing.
pub fn permits(
    cse: &Context,
    facts: &Facts<'_>,
    op: AccessOperation,
    res: &Resource,
    cache: &mut HashMap<String, bool>,
) -> M2mResult<bool> {
    if facts.is_admin(cse) {
        return Ok(true);
    }
    // A contentInstance is governed by its container; decisions for siblings are the same, so
    // the cache is asked before the container is read (a discovery may list thousands of them).
    let governed_by_itself = governed_by_itself(res);
    let key = if governed_by_itself {
        res.ri()
    } else {
        res.pi()
    };
    if let Some(d) = cache.get(key) {
        return Ok(*d);
    }
    let governing = if governed_by_itself {
        res.clone()
    } else {
        match cse.store.get(res.pi())? {
            Some(p) => p,
            None => return Ok(false),
        }
    };
    let policies = policies_of(cse, &governing)?;
    let (permit, _, _) = evaluate(cse, facts, op, &governing, None, &policies);
    cache.insert(governing.ri().to_owned(), permit);
    Ok(permit)
}

fn evaluate(
    cse: &Context,
    facts: &Facts<'_>,
    op: AccessOperation,
    subject: &Resource,
    child_type: Option<u16>,
    policies: &Policies,
) -> (bool, String, Option<Vec<String>>) {
    let Some(originator) = facts.originator else {
        return (false, "the request has no originator".into(), None);
    };
    match policies {
        Policies::CreatorOnly(creator) => {
            // Creator rights need an originator that is more than a claim.
            let creator = creator
                .as_deref()
                .and_then(|c| EntityId::parse(c, &cse.id.home).ok());
            let permit = facts.proof.identifies() && creator.as_ref() == Some(originator);
            let reason = if permit {
                "permitted: the originator is the resource's creator or custodian".to_owned()
            } else if creator.as_ref() == Some(originator) {
                format!(
                    "{originator} holds {} but is only {}; no accessControlPolicyIDs grant {op}",
                    subject.ri(),
                    facts.proof
                )
            } else {
                format!(
                    "{originator} is neither creator nor custodian of {} and no accessControlPolicyIDs grant {op}",
                    subject.ri()
                )
            };
            (permit, reason, None)
        }
        Policies::OwnEntity(owner) => {
            let owner = owner
                .as_deref()
                .and_then(|c| EntityId::parse(c, &cse.id.home).ok());
            let permit = facts.proof.identifies() && owner.as_ref() == Some(originator);
            let reason = if permit {
                "permitted: the channel's own entity".to_owned()
            } else {
                format!(
                    "{originator} ({}) is not the entity the polling channel {} serves",
                    facts.proof,
                    subject.ri()
                )
            };
            (permit, reason, None)
        }
        Policies::Announcer {
            cse: announcer,
            stem,
        } => {
            let bound = facts.peer.bound_entity();
            let as_whom = Some(originator) == announcer.as_ref()
                || originator.local_stem(&cse.id.home).is_some_and(|s| {
                    s.kind() == m2m_core::StemKind::Sp && stem.as_ref().is_none_or(|st| s == st)
                });
            let permit = !facts.peer.by_action
                && op != AccessOperation::Delete
                && facts.proof.identifies()
                && announcer.is_some()
                && bound == announcer.as_ref()
                && as_whom;
            // Below the IN-CSE, this CSE's copy goes when its registrar removed its own record
            // (`resources::ae_annc`, deleted): the registrar, as itself, over its own association.
            let registrar_removes = op == AccessOperation::Delete
                && !facts.peer.by_action
                && cse.id.role != crate::config::Role::IN
                && subject.ty == ResourceType::AeAnnc
                && facts.proof.is_authenticated()
                && bound == Some(originator)
                && cse.id.registrar.as_ref().is_some_and(|r| {
                    *originator == EntityId::cse(cse.id.home.sp.clone(), r.clone())
                });
            if registrar_removes {
                return (
                    true,
                    "permitted: the registrar removed its own record".into(),
                    None,
                );
            }
            let reason = if permit {
                "permitted: the CSE that announced it".to_owned()
            } else {
                format!(
                    "{originator} over {} is not the CSE that announces under {}",
                    bound.map_or_else(|| "no CSE's association".to_owned(), ToString::to_string),
                    subject.ri()
                )
            };
            (permit, reason, None)
        }
        Policies::RegistreesMayRetrieve => {
            let own_policy = op == AccessOperation::Create
                && child_type == Some(ResourceType::NotificationTargetPolicy.code());
            // An Authorization Authority of `[security] role_issuers` keeps its roles and tokens
            // here (TS-0003 clause 7.4.2: this CSE its Role and Token Repository).
            // Issuing roles is a privilege over privileges: a credential must prove the issuer
            // (a claim, or a CSE vouching for an entity it relays, does not).
            let authority = op == AccessOperation::Create
                && matches!(child_type, Some(31 | 32))
                && facts.proof.is_authenticated()
                && !facts.peer.by_action
                && crate::roles::is_issuer(cse, originator);
            let permit = authority
                || ((op == AccessOperation::Retrieve || own_policy)
                    && facts.proof.identifies()
                    && is_registree(cse, originator));
            let reason = if authority {
                "permitted: a role issuer keeps its roles and tokens in the CSEBase".to_owned()
            } else if permit {
                "permitted: registered entities may retrieve the CSEBase and make their own notificationTargetPolicy".to_owned()
            } else {
                format!("no accessControlPolicyIDs on the CSEBase grant {op} to {originator}")
            };
            (permit, reason, None)
        }
        Policies::Acps(acps) => {
            let refs: Vec<(&str, &Privileges)> =
                acps.iter().map(|(id, p)| (id.as_str(), p)).collect();
            let ip = facts.peer.originator_ip();
            let req = AccessRequest {
                originator,
                proof: facts.proof,
                operation: op,
                ip,
                time: cse.now(),
                location: None,
                target_type: subject.ty.code(),
                child_type,
                attributes: facts.attributes,
                roles: facts.roles,
            };
            let d = decide(&refs, &req, &cse.id.home, &StoreGroups { cse });
            (d.permit, d.reason, d.attributes)
        }
    }
}

/// The policies that govern `res` itself (pv of its ACPs, pvs for an ACP, the parent's for types
/// without accessControlPolicyIDs, the creator default when they are unset).
fn policies_of(cse: &Context, res: &Resource) -> M2mResult<Policies> {
    if res.ty == ResourceType::AccessControlPolicy {
        let pvs = res
            .attrs
            .get("pvs")
            .map(Privileges::from_json)
            .and_then(Result::ok)
            .unwrap_or_default();
        return Ok(Policies::Acps(vec![(res.ri().to_owned(), pvs)]));
    }
    if res.ty == ResourceType::PollingChannel {
        let parent = crate::resolve::parent_of(cse, res)?;
        return Ok(own_entity(&parent));
    }
    if res.ty == ResourceType::AeAnnc {
        let parent = crate::resolve::parent_of(cse, res)?;
        let stem = m2m_core::AeStem::parse(res.ri()).ok();
        return Ok(announcer_of(cse, &parent, stem));
    }
    if !res.ty.has_acpi() {
        let parent = crate::resolve::parent_of(cse, res)?;
        return policies_of(cse, &parent);
    }
    let acpi = string_list(res.attrs.get("acpi"));
    if acpi.is_empty() {
        if res.ty == ResourceType::CseBase {
            return Ok(Policies::RegistreesMayRetrieve);
        }
        return Ok(Policies::CreatorOnly(steward(res)));
    }
    Ok(Policies::Acps(load_acps(cse, &acpi, false)))
}

/// Who holds the default rights of a resource without accessControlPolicyIDs: its custodian
/// when it has one (Release 4: the creator then has no more rights than anyone), else its
/// creator.
fn steward(res: &Resource) -> Option<String> {
    res.str_attr("cstn")
        .map(str::to_owned)
        .or_else(|| res.creator.clone())
}

/// The policy for a request on a <pollingChannel> (or a CREATE of one under an AE or remoteCSE)
/// or on its pcu: `None` for any other request.
fn polling_channel_policy<'t>(
    cse: &Context,
    req: &Request,
    target: &'t Target,
) -> M2mResult<Option<(&'t Resource, Policies)>> {
    Ok(match target {
        Target::Resource(parent)
            if req.op == Operation::Create
                && req.ty == Some(ResourceType::PollingChannel)
                && matches!(parent.ty, ResourceType::Ae | ResourceType::RemoteCse) =>
        {
            Some((parent, own_entity(parent)))
        }
        // Discovery from a channel is filtered one by one like any other.
        Target::Resource(r) if r.ty == ResourceType::PollingChannel && !req.is_discovery() => {
            Some((r, policies_of(cse, r)?))
        }
        Target::PollingChannelUri(pch) => Some((pch, policies_of(cse, pch)?)),
        _ => None,
    })
}

/// The policy of a <pollingChannel> under `parent`: its AE-ID or CSE-ID only.
fn own_entity(parent: &Resource) -> Policies {
    Policies::OwnEntity(owner_of(parent).map(str::to_owned))
}

/// The entity a channel serves: the AE-ID of its parent <AE>, the CSE-ID of its <remoteCSE>.
fn owner_of(parent: &Resource) -> Option<&str> {
    match parent.ty {
        ResourceType::Ae => parent.str_attr("aei"),
        ResourceType::RemoteCse => parent.str_attr("csi"),
        _ => None,
    }
}

/// The policy of an <AEAnnc> under `parent`: the CSE a <remoteCSE> stands for (no other parent
/// has one).
fn announcer_of(cse: &Context, parent: &Resource, stem: Option<m2m_core::AeStem>) -> Policies {
    let csi = (parent.ty == ResourceType::RemoteCse)
        .then(|| parent.str_attr("csi"))
        .flatten()
        .and_then(|c| EntityId::parse(c, &cse.id.home).ok())
        .filter(EntityId::is_cse);
    Policies::Announcer { cse: csi, stem }
}

/// Whether `peer` may create a `<localMulticastGroup>` here: this CSE's registrar, speaking for
/// itself over its association. Members of a multicast group are registered with the group
/// hosting CSE (TS-0001 clause 10.2.7.13.1 note 2), so no other CSE ever has to, and a CSE
/// registered here (an ASN-CSE below this one) cannot make this one join groups or send answers.
fn may_create_local_multicast_group(cse: &Context, peer: &Peer) -> bool {
    let Some(who) = &peer.originator else {
        return false;
    };
    if !(who.is_cse() && peer.proof.is_authenticated() && peer.bound_entity() == Some(who)) {
        return false;
    }
    cse.cfg
        .registrar
        .as_ref()
        .and_then(|r| EntityId::parse(&r.cse_id, &cse.id.home).ok())
        .is_some_and(|registrar| registrar == *who)
}

/// Whether the originator is an AE or a CSE registered with this CSE.
fn is_registree(cse: &Context, originator: &EntityId) -> bool {
    let home = &cse.id.home;
    let (id, ty) = match originator {
        EntityId::Cse { sp, cse: id } if *sp == home.sp => (id.bare(), ResourceType::RemoteCse),
        _ => match originator.local_stem(home) {
            Some(stem) => (stem.as_str(), ResourceType::Ae),
            None => return false,
        },
    };
    matches!(cse.store.get(id), Ok(Some(r)) if r.ty == ty)
}

/// The selfPrivileges of the ACPs a resource currently references (for an update of its acpi).
fn self_policies_of_acpi(cse: &Context, res: &Resource) -> M2mResult<Policies> {
    let acpi = string_list(res.attrs.get("acpi"));
    if acpi.is_empty() {
        return Ok(Policies::CreatorOnly(steward(res)));
    }
    Ok(Policies::Acps(load_acps(cse, &acpi, true)))
}

/// Loads the named ACPs hosted here; one that is missing or remote simply grants nothing.
fn load_acps(cse: &Context, ids: &[String], self_privileges: bool) -> Vec<(String, Privileges)> {
    let attr = if self_privileges { "pvs" } else { "pv" };
    ids.iter()
        .filter_map(|id| {
            let acp = crate::access_references::stored(cse, id)?;
            if acp.ty != ResourceType::AccessControlPolicy {
                return None;
            }
            let p = Privileges::from_json(acp.attrs.get(attr)?).ok()?;
            Some((id.clone(), p))
        })
        .collect()
}

/// Group membership for accessControlOriginators entries that name a <group> hosted here.
struct StoreGroups<'a> {
    cse: &'a Context,
}

impl GroupResolver for StoreGroups<'_> {
    fn lookup(&self, id: &str) -> GroupLookup {
        let Ok(addr) = Address::parse(id) else {
            return GroupLookup::NotAGroup;
        };
        if crate::resolve::locality(self.cse, &addr) != crate::resolve::Locality::Local {
            return GroupLookup::NotAGroup;
        }
        // A group is named by its resourceID (pinned when the policy was written): one named by
        // its place would be whatever group was made there last.
        if crate::access_references::is_place(self.cse, &addr) {
            return GroupLookup::NotAGroup;
        }
        match crate::resolve::resolve(self.cse, &addr) {
            Ok(Target::Resource(g)) if g.ty == ResourceType::Group => {
                GroupLookup::Members(string_list(g.attrs.get("mid")))
            }
            Ok(_) => GroupLookup::NotAGroup,
            Err(e) if e.rsc == Rsc::NotFound => GroupLookup::NotAGroup,
            Err(_) => GroupLookup::Unavailable,
        }
    }
}
