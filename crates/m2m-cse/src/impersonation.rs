//! The impersonation check (TS-0003 clause 7.2.1, TS-0004 clause 7.3.2.1): the From of a request is
//! parsed once into an [`Originator`] and held against what the security association proved. The
//! outcome is the [`Proof`] every access decision takes (rq_authn of TS-0003 clause 7.1.2, and the
//! two levels below it). The table of cases is in docs/SECURITY.md, "The identity model".
//!
//! Refusals tell the requester only that its From is not what its association proved (4106) or that
//! it needs one (4107); which entity the association is bound to goes to the audit log.

use crate::association::{Peer, PlainTrust, Proof};
use crate::context::Context;
use m2m_core::{
    EntityId, M2mError, M2mResult, Operation, Originator, Request, ResourceType,
    ResponseStatusCode as Rsc,
};

/// 4106, with the full reason in the audit log only.
fn not_authenticated(why: impl std::fmt::Display) -> M2mError {
    tracing::warn!(target: "audit", reason = %why, "originator refused");
    M2mError::new(
        Rsc::OriginatorNotAuthenticated,
        "the originator is not the entity the security association authenticated",
    )
}

/// Parses the From and decides how far the peer proves it.
pub fn check(cse: &Context, req: &Request, peer: &Peer) -> M2mResult<(Originator, Proof)> {
    let originator = Originator::parse(req.from.as_deref(), &cse.id.home)?;
    let ae_registration = req.op == Operation::Create && req.ty == Some(ResourceType::Ae);
    if let Originator::Unassigned(_) = originator {
        if !ae_registration {
            return Err(M2mError::bad_request(
                "missing originator (X-M2M-Origin): only an AE registration may come without an AE-ID",
            ));
        }
    }
    if peer.is_internal() {
        return Ok((originator, Proof::Authenticated));
    }
    // An <action> runs as its creator, whom the CSE knew at creation (at least vouched for) but
    // who proves nothing now: rules that require authentication (`acaf`) do not count for it,
    // nor is it the admin (TS-0001 clause 9.6.2.5).
    if peer.by_action {
        return Ok((originator, Proof::Vouched));
    }
    let proof = match &peer.association {
        None => without_association(cse, &originator, peer.plain, ae_registration)?,
        Some(a) => match &a.entity {
            Some(bound) if bound.is_cse() => {
                let announcing = announces(cse, req);
                from_cse_peer(cse, &originator, bound, announcing)?
            }
            Some(bound) => from_bound_ae(&originator, bound, ae_registration)?,
            None => from_unbound_credential(
                cse,
                &originator,
                &a.credential.to_string(),
                ae_registration,
            )?,
        },
    };
    Ok((originator, proof))
}

/// An association bound to an AE-ID: that AE and nobody else (it registers as itself).
fn from_bound_ae(
    originator: &Originator,
    bound: &EntityId,
    registration: bool,
) -> M2mResult<Proof> {
    match originator {
        Originator::Unassigned(_) if registration => Ok(Proof::Authenticated),
        Originator::Entity(e) if e == bound => Ok(Proof::Authenticated),
        _ => Err(not_authenticated(format_args!(
            "From {originator} over an association bound to {bound}"
        ))),
    }
}

/// A credential bound to no entity yet: the AE registers with it (the registration rules decide),
/// and afterwards only the AE registered with that credential may use it.
fn from_unbound_credential(
    cse: &Context,
    originator: &Originator,
    credential: &str,
    registration: bool,
) -> M2mResult<Proof> {
    let entity = match originator {
        Originator::Unassigned(_) => return Ok(Proof::Authenticated),
        Originator::Entity(e) => e,
    };
    let registered_with = entity
        .local_stem(&cse.id.home)
        .and_then(|stem| cse.store.read(|r| r.credential_of(stem.as_str())).ok())
        .flatten();
    match registered_with {
        Some(c) if c == credential => Ok(Proof::Authenticated),
        // Registering under a chosen AE-ID: whether that AE-ID is free for this credential is
        // decided by the registration (resources::ae).
        None if registration && is_unregistered_local(cse, entity) => Ok(Proof::Authenticated),
        _ => Err(not_authenticated(format_args!(
            "{entity} did not register with credential {credential}"
        ))),
    }
}

/// Whether `entity` is a local AE-ID not registered here (an AE CREATE may claim it).
fn is_unregistered_local(cse: &Context, entity: &EntityId) -> bool {
    entity
        .local_stem(&cse.id.home)
        .is_some_and(|stem| matches!(cse.store.get_shared(stem.as_str()), Ok(None)))
}

/// No security association: the listener's trust decides. On an anonymous listener a From is a
/// claim: an AE registered here, or the AE-ID an AE registration asks for; never a CSE (4107).
fn without_association(
    cse: &Context,
    originator: &Originator,
    trust: PlainTrust,
    registration: bool,
) -> M2mResult<Proof> {
    // A trusted listener believes the From (the operator said so), an anonymous one takes it as
    // a claim; neither authenticates it.
    let proof = match trust {
        PlainTrust::Trusted => Proof::Vouched,
        PlainTrust::Anonymous => Proof::Claimed,
    };
    let entity = match originator {
        Originator::Unassigned(_) => return Ok(proof),
        Originator::Entity(e) => e,
    };
    // CSEs talk over security associations only (Mcc, TS-0003 clause 6.1.2.2.1), trusted
    // listener or not.
    if entity.is_cse() {
        return Err(M2mError::new(
            Rsc::SecurityAssociationRequired,
            "a CSE must send its requests over a security association",
        ));
    }
    let local = entity.local_stem(&cse.id.home);
    let registered = local.is_some_and(
        |stem| matches!(cse.store.get_shared(stem.as_str()), Ok(Some(r)) if r.ty == ResourceType::Ae),
    );
    let admin = trust == PlainTrust::Trusted && *entity == cse.id.admin;
    if registered || admin || (registration && local.is_some()) {
        Ok(proof)
    } else {
        Err(not_authenticated(format_args!(
            "{entity} is not registered here and has no security association"
        )))
    }
}

/// A CSE peer speaks for itself (authenticated) and relays for the entities behind it (TS-0004
/// clause 7.3.2.1): never for this CSE, its AEs, another CSE registered here, or the AEs of one.
/// `announcing`: the request creates an `<AEAnnc>`, for an S-stem AE that is announced nowhere yet.
fn from_cse_peer(
    cse: &Context,
    originator: &Originator,
    peer: &EntityId,
    announcing: bool,
) -> M2mResult<Proof> {
    let entity = match originator {
        Originator::Entity(e) => e,
        Originator::Unassigned(_) => {
            return Err(M2mError::bad_request(
                "a CSE registers AEs of its own, not on their behalf",
            ))
        }
    };
    if entity == peer {
        return Ok(Proof::Authenticated);
    }
    let home = &cse.id.home;
    let stem_here = entity.local_stem(home).map(|stem| sp_stem_here(cse, stem));
    let foreign = match entity {
        EntityId::Cse { .. } => entity.is_home_cse(home) || is_registree_cse(cse, entity),
        EntityId::CseAe { sp, registrar, .. } => {
            let registrar = EntityId::cse(sp.clone(), registrar.clone());
            registrar != *peer && (registrar.is_home_cse(home) || is_registree_cse(cse, &registrar))
        }
        // S-stems are unique in the SP: one registered or held here is this CSE's to speak for,
        // one announced here (on the IN-CSE) the announcing CSE's.
        EntityId::SpAe { .. } => match &stem_here {
            Some(SpStemHere::Ours) => true,
            Some(SpStemHere::AnnouncedUnder { registree, .. }) => {
                peer.cse_id().map(m2m_core::CseId::bare) != Some(registree.as_str())
            }
            Some(SpStemHere::Free) | None => false,
        },
    };
    if foreign || !speaks_for(cse, peer, entity, stem_here.as_ref(), announcing) {
        return Err(not_authenticated(format_args!(
            "CSE {peer} sent a request on behalf of {entity}"
        )));
    }
    // Originators behind another CSE count as authenticated only through ESPrim (TS-0003 7.1.2).
    Ok(Proof::Vouched)
}

/// Whether the CSE `peer` may relay for `entity` (beyond the `foreign` rule above): requests
/// travel along the registration tree (TS-0001 clause 6.3, TS-0004 clause 7.3.2.6). This CSE's
/// registrar relays for anyone not of this CSE; a CSE registered here only for its own tree: the
/// CSEs its descendantCSEs list as kept here (`descendants`), their C-stem AEs, and the S-stem
/// AEs it announced here (or announces now: `announcing`, TS-0004 clause 7.4.5.2.1; `stem_here`
/// is what this CSE knows of an S-stem `entity`). Any other CSE speaks for nobody but itself.
fn speaks_for(
    cse: &Context,
    peer: &EntityId,
    entity: &EntityId,
    stem_here: Option<&SpStemHere>,
    announcing: bool,
) -> bool {
    let home = &cse.id.home;
    let Some(peer_id) = peer.cse_id().filter(|_| *peer.sp() == home.sp) else {
        return false;
    };
    if cse.id.registrar.as_ref() == Some(peer_id) {
        return true;
    }
    let Ok(Some(csr)) = cse.store.get_shared(peer_id.bare()) else {
        return false;
    };
    if csr.ty != ResourceType::RemoteCse || *entity.sp() != home.sp {
        return false;
    }
    let below = |id: &m2m_core::CseId| id == peer_id || crate::descendants::lists(&csr, id);
    match entity {
        EntityId::Cse { cse: id, .. } => below(id),
        EntityId::CseAe { registrar, .. } => below(registrar),
        EntityId::SpAe { .. } => match stem_here {
            // Under its record, and announced by itself or a CSE it still lists: a CSE its
            // list no longer names (a rule took it away) takes its announcements with it.
            Some(SpStemHere::AnnouncedUnder {
                registree,
                announcer,
            }) => registree == peer_id.bare() && announcer.as_ref().is_none_or(below),
            Some(SpStemHere::Free) => announcing,
            Some(SpStemHere::Ours) | None => false,
        },
    }
}

/// `lnk` of an `<AEAnnc>` whose AE has deregistered (TS-0004 clause 7.4.5.2.4).
pub(crate) const ANNOUNCED_INACTIVE: &str = "INACTIVE";

/// Whether `req` announces an S-stem AE anew (TS-0004 clause 7.4.5.2.1): a CREATE of an
/// `<AEAnnc>`, or an UPDATE giving the IN-CSE's record of the From's stem (`/<IN-CSE-ID>/<stem>`
/// in any form, and nothing else) an active link (a re-registration). Only then may a registree
/// relay for a stem nobody holds here (`resources::ae_annc::may_relay` checks that it is one of
/// its own tree's; the IN-CSE, that the record stays with the CSE that announced it).
fn announces(cse: &Context, req: &Request) -> bool {
    match req.op {
        Operation::Create => req.ty == Some(ResourceType::AeAnnc),
        Operation::Update => {
            let active = req
                .pc
                .as_ref()
                .and_then(|pc| pc.get("m2m:aeA"))
                .and_then(|a| a.get("lnk"))
                .and_then(serde_json::Value::as_str)
                .is_some_and(|l| l != ANNOUNCED_INACTIVE);
            let home = &cse.id.home;
            let stem = req
                .from
                .as_deref()
                .and_then(|f| EntityId::parse(f, home).ok())
                .and_then(|e| e.stem().cloned());
            let in_cse = &cse.id.in_cse;
            let the_record = m2m_core::Address::parse(&req.to).is_ok_and(|to| {
                let at_the_in = match &to.scope {
                    m2m_core::Scope::CseRelative => cse.id.cse_id == *in_cse,
                    m2m_core::Scope::SpRelative(c) => c == in_cse,
                    m2m_core::Scope::Absolute(sp, c) => *sp == home.sp && c == in_cse,
                };
                let mut segments = to.segments();
                at_the_in
                    && stem
                        .as_ref()
                        .is_some_and(|s| segments.next() == Some(s.as_str()))
                    && segments.next().is_none()
            });
            active && the_record
        }
        _ => false,
    }
}

/// What this CSE knows of an S-stem AE-ID (unique in the SP, TS-0001 clause 10.2.2.2).
enum SpStemHere {
    /// Registered here, or held here by the credential it registered with (`store::AeIdHolder`);
    /// also when the store cannot tell.
    Ours,
    /// Announced here (an `<AEAnnc>`, on the IN-CSE, or its copy on an intermediate CSE) under
    /// the `<remoteCSE>` `registree` (its resourceID), by the CSE `announcer` (the record's
    /// creator; unknown for a record kept from before creators were kept).
    AnnouncedUnder {
        registree: String,
        announcer: Option<m2m_core::CseId>,
    },
    /// Unknown here.
    Free,
}

/// The CSE that announced the S-stem AE an `<AEAnnc>` (record or copy) names: the record's
/// creator; for one kept from before creators were, the CSE of its active link.
pub(crate) fn announcer_of_record(
    cse: &Context,
    record: &crate::store::Resource,
) -> Option<m2m_core::CseId> {
    record
        .creator
        .as_deref()
        .and_then(|c| EntityId::parse(c, &cse.id.home).ok())
        .and_then(|e| e.cse_id().cloned())
        .or_else(|| {
            record
                .str_attr("lnk")
                .and_then(|l| m2m_core::Address::parse(l).ok())
                .and_then(|a| a.cse().cloned())
        })
}

fn sp_stem_here(cse: &Context, stem: &m2m_core::AeStem) -> SpStemHere {
    match cse.store.get_shared(stem.as_str()) {
        Ok(Some(r)) if r.ty == ResourceType::AeAnnc => SpStemHere::AnnouncedUnder {
            registree: r.pi().to_owned(),
            announcer: announcer_of_record(cse, &r),
        },
        Ok(Some(_)) | Err(_) => SpStemHere::Ours,
        Ok(None) => match cse.store.read(|r| r.holder_of(stem.as_str())) {
            Ok(None) => SpStemHere::Free,
            _ => SpStemHere::Ours,
        },
    }
}

/// Whether `cse_entity` is a CSE registered here (a <remoteCSE> of this CSE).
fn is_registree_cse(cse: &Context, cse_entity: &EntityId) -> bool {
    let Some(id) = cse_entity.cse_id() else {
        return false;
    };
    *cse_entity.sp() == cse.id.home.sp
        && matches!(cse.store.get_shared(id.bare()), Ok(Some(r)) if r.ty == ResourceType::RemoteCse)
}
