//! Retargeting (TS-0001 clause 10.2.x, TS-0004 clause 7.3.2.6): a request for another CSE travels
//! over the registration relation, down to a registered CSE that hosts (or is registrar of) the
//! target, or up to this CSE's registrar.

use crate::association::Peer;
use crate::cse::Cse;
use m2m_core::{
    CseId, EntityId, M2mError, M2mResult, Request, ResourceType, Response, ResponseStatusCode,
};
use serde_json::Value;
use std::sync::Arc;

/// The next hop for a request addressed to `target` (or to another SP when `None`): its URL, and
/// the registree CSE it belongs to when the route goes down.
///
/// Down: to the registree that is the target, else to the registree whose descendantCSEs, as
/// kept here, list it (TS-0001 clause 10.2.2.4; the lists are disjoint, see
/// `descendants::admit`). Up: to this CSE's registrar, unless the request came from it
/// ([`forward`]). A route therefore climbs, then descends, and never turns back: a registree
/// claiming a CSE it does not reach gets the request and answers that it has no route.
pub fn next_hop(cse: &Cse, target: Option<&CseId>) -> M2mResult<(String, Option<CseId>)> {
    if let Some(target) = target.filter(|t| cse.id.registrar.as_ref() != Some(*t)) {
        if let Some(csr) = cse.store.get(target.bare())? {
            let is_registree = csr.ty == ResourceType::RemoteCse
                && csr.str_attr("csi") == Some(target.sp_relative().as_str());
            if is_registree {
                return down_to(&csr, target);
            }
        }
        if let Some(csr) = crate::descendants::registree_above(cse, target)? {
            let registree = csr
                .str_attr("csi")
                .and_then(|c| CseId::parse(c).ok())
                .ok_or_else(|| M2mError::internal("a registree without its CSE-ID"))?;
            return down_to(&csr, &registree);
        }
    }
    if let Some(reg) = &cse.cfg.registrar {
        return Ok((reg.url.clone(), None));
    }
    // No registree matches and there is nobody above to ask: TS-0004 clause 7.3.2.6 answers
    // NOT_FOUND (an IN-CSE, or a CSE that has no registrar). A registree that is known but does
    // not answer is TARGET_NOT_REACHABLE, at the send.
    Err(no_route(target))
}

/// The way down to the registree `csr` (CSE-ID `id`): its first pointOfAccess.
fn down_to(csr: &crate::store::Resource, id: &CseId) -> M2mResult<(String, Option<CseId>)> {
    match csr
        .attrs
        .get("poa")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .and_then(Value::as_str)
    {
        Some(poa) => Ok((poa.to_owned(), Some(id.clone()))),
        // Registered, but with no address to reach it at.
        None => Err(M2mError::new(
            ResponseStatusCode::TargetNotReachable,
            format!("CSE {id} has no point of access"),
        )),
    }
}

fn no_route(target: Option<&CseId>) -> M2mError {
    M2mError::new(
        ResponseStatusCode::NotFound,
        match target {
            Some(t) => format!("no route to CSE {t}: it is not registered here"),
            None => "no route to another M2M service provider".into(),
        },
    )
}

/// Whether `peer` is this CSE's registrar over its own association.
fn from_the_registrar(cse: &Cse, peer: &Peer) -> bool {
    let Some(registrar) = &cse.id.registrar else {
        return false;
    };
    let registrar = EntityId::cse(cse.id.home.sp.clone(), registrar.clone());
    peer.bound_entity() == Some(&registrar)
}

/// Forwards a request to the next hop and returns the answer unchanged. The next CSE sees the
/// originator as this CSE relays it (it proves nothing more than this CSE's word), so an
/// originator that is only a claim here is not forwarded at all: it would arrive vouched for.
pub async fn forward(
    cse: &Arc<Cse>,
    mut req: Request,
    target: Option<CseId>,
    peer: &Peer,
) -> M2mResult<Response> {
    if !peer.proof.identifies() {
        tracing::warn!(target: "audit", to = %req.to, originator = ?peer.originator, "not retargeted: the originator is only claimed (no security association)");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorNotAuthenticated,
            "a request for another CSE needs a security association that proves its originator",
        ));
    }
    let (hop, registree) = next_hop(cse, target.as_ref())?;
    // A request never turns back: what the registrar sent down for another CSE is not sent
    // back up (the registrar took this CSE for the way to a descendant it lists), and what a
    // registree sent up is not sent back down to it (it listed a CSE it does not reach). Between
    // two CSEs such a request would bounce without end. A request for the registrar itself (a
    // group member there) ends there.
    // A group's member request is a request of its own (its fan-out depth bounds it).
    let turns_back = peer.fan_out_depth == 0
        && match &registree {
            None => target.as_ref() != cse.id.registrar.as_ref() && from_the_registrar(cse, peer),
            Some(r) => {
                peer.bound_entity() == Some(&EntityId::cse(cse.id.home.sp.clone(), r.clone()))
            }
        };
    if turns_back {
        tracing::warn!(target: "audit", to = %req.to, "not retargeted: the request would go back to the CSE it came from");
        return Err(no_route(target.as_ref()));
    }
    crate::resources::ae_annc::may_relay(cse, &req, peer)?;
    // Outside this CSE, an entity is known by its SP-relative ID (absolute in another SP).
    if let Some(entity) = &peer.originator {
        req.from = Some(entity.as_seen_from(&cse.id.home));
    }
    // A request that wants no response is answered by nobody here either: the next hop
    // carries it out as a blocking one, and this CSE's binding drops the answer.
    if req.rt == m2m_core::ResponseType::NoResponse {
        req.rt = m2m_core::ResponseType::Blocking;
    }
    tracing::debug!(to = %req.to, hop = %m2m_transport::connector::loggable(&hop), "retargeting");
    let resp = cse
        .client_for(&hop, registree.as_ref())?
        .send(&hop, &req)
        .await?;
    // An S-stem a registree announced through this CSE, once the IN-CSE recorded it.
    if registree.is_none() {
        crate::resources::ae_annc::relayed(cse, &req, peer, &resp).await;
    }
    Ok(resp)
}
