//! The impersonation check (TS-0003 clause 7.2.1, TS-0004 clause 7.3.2.1): the `From` of a request
//! must be the identity its security association authenticated, and CSEs must come over one.
//! The answer also tells access control whether the originator counts as authenticated
//! (rq_authn, TS-0003 clause 7.1.2).

use crate::access::host;
use crate::association::Peer;
use crate::cse::Cse;
use m2m_core::id::{classify_originator, OriginatorKind};
use m2m_core::{M2mError, M2mResult, Operation, Request, ResourceType, ResponseStatusCode as Rsc};
use m2m_security::access_control::originator::{to_absolute, AbsoluteId};

fn absolute(cse: &Cse, id: &str) -> Option<AbsoluteId> {
    to_absolute(id, &host(cse), false)
}

/// Whether two IDs in any form name the same entity.
pub fn same_entity(cse: &Cse, a: &str, b: &str) -> bool {
    matches!((absolute(cse, a), absolute(cse, b)), (Some(x), Some(y)) if x == y)
}

/// Whether an ID bound to an association is a CSE-ID (`/id-mn`) rather than an AE-ID.
pub fn is_cse_id(id: &str) -> bool {
    matches!(
        classify_originator(id),
        OriginatorKind::SpRelative { rest: None, .. } | OriginatorKind::Absolute { rest: None, .. }
    )
}

fn not_authenticated(dbg: String) -> M2mError {
    M2mError::new(Rsc::OriginatorNotAuthenticated, dbg)
}

/// Checks the originator against the peer; `Ok(true)` when it counts as authenticated.
pub fn check(cse: &Cse, req: &Request, peer: &Peer) -> M2mResult<bool> {
    if peer.is_internal() {
        return Ok(true);
    }
    let from = req.from.as_deref().unwrap_or("");
    let ae_registration = req.op == Operation::Create && req.ty == Some(ResourceType::Ae);
    let Some(association) = &peer.association else {
        return without_association(cse, from, ae_registration, peer.development);
    };
    match association.entity.as_deref() {
        Some(cse_id) if is_cse_id(cse_id) => from_cse_peer(cse, from, cse_id),
        Some(ae_id) => {
            if ae_registration && matches!(classify_originator(from), OriginatorKind::Unassigned(_))
            {
                return Ok(true);
            }
            if same_entity(cse, from, ae_id) {
                Ok(true)
            } else {
                Err(not_authenticated(format!(
                    "originator '{from}' is not the AE-ID '{ae_id}' bound to the security association"
                )))
            }
        }
        // A credential bound to no entity yet: the AE registers with it (the registration rules
        // decide), and afterwards only the AE registered with that credential may use it.
        None => {
            if ae_registration {
                return Ok(true);
            }
            let bound = absolute(cse, from)
                .and_then(|abs| own_ae_stem(cse, &abs))
                .and_then(|stem| cse.store.read(|r| r.credential_of(&stem)).ok().flatten());
            if bound.as_deref() == Some(association.credential_id.as_str()) {
                Ok(true)
            } else {
                Err(not_authenticated(format!(
                    "originator '{from}' did not register with the credential of this security association"
                )))
            }
        }
    }
}

/// The AE-ID-Stem of an AE registered with this CSE, if `abs` names one.
fn own_ae_stem(cse: &Cse, abs: &AbsoluteId) -> Option<String> {
    let seg = abs.segments();
    let sp = cse.id.sp_id.fqdn();
    match seg {
        [s, c, stem] if s == sp && c == cse.id.cse_id.bare() => Some(stem.clone()),
        [s, stem] if s == sp && stem.starts_with('S') => Some(stem.clone()),
        _ => None,
    }
}

fn without_association(
    cse: &Cse,
    from: &str,
    ae_registration: bool,
    development: bool,
) -> M2mResult<bool> {
    if development && from == cse.id.admin {
        return Ok(true);
    }
    match classify_originator(from) {
        OriginatorKind::SpRelative { rest: None, .. }
        | OriginatorKind::Absolute { rest: None, .. } => Err(M2mError::new(
            Rsc::SecurityAssociationRequired,
            format!("CSE '{from}' must send its requests over a security association"),
        )),
        _ if ae_registration => Ok(false),
        OriginatorKind::Other(_) => Err(M2mError::bad_request(format!(
            "originator '{from}' is not an AE-ID (C... or S...) or CSE-ID"
        ))),
        _ => {
            let registered = absolute(cse, from)
                .and_then(|abs| own_ae_stem(cse, &abs))
                .is_some_and(
                    |stem| matches!(cse.store.get(&stem), Ok(Some(r)) if r.ty == ResourceType::Ae),
                );
            if registered {
                Ok(false)
            } else {
                Err(not_authenticated(format!(
                    "originator '{from}' is not registered here and has no security association"
                )))
            }
        }
    }
}

/// A CSE peer may speak for itself and for the entities behind it, never for this CSE, its AEs
/// or another CSE registered here (TS-0004 clause 7.3.2.1).
fn from_cse_peer(cse: &Cse, from: &str, peer_cse: &str) -> M2mResult<bool> {
    if same_entity(cse, from, peer_cse) {
        return Ok(true);
    }
    let Some(abs) = absolute(cse, from) else {
        return Err(M2mError::bad_request(format!(
            "originator '{from}' is not an AE-ID or CSE-ID"
        )));
    };
    let peer_bare = peer_cse.trim_start_matches('/');
    let seg = abs.segments();
    let sp = cse.id.sp_id.fqdn();
    let claimed_cse = match seg {
        [s, c] | [s, c, _] if s == sp => Some(c.as_str()),
        _ => None,
    };
    if let Some(c) = claimed_cse {
        let is_ae_stem_s = seg.len() == 2 && c.starts_with('S');
        let foreign = c != peer_bare
            && !is_ae_stem_s
            && (c == cse.id.cse_id.bare()
                || matches!(cse.store.get(c), Ok(Some(r)) if r.ty == ResourceType::RemoteCse));
        if foreign {
            return Err(not_authenticated(format!(
                "CSE '{peer_cse}' cannot send requests on behalf of '{from}'"
            )));
        }
    }
    // Originators behind another CSE count as authenticated only through ESPrim (TS-0003 7.1.2).
    Ok(false)
}
