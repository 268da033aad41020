//! `<request>` and non-blocking requests (TS-0004 clauses 7.4.12, 7.3.2.2, 7.3.2.3; TS-0001
//! clause 8.2.2): a request with Response Type nonBlockingRequestSynch (1) or
//! nonBlockingRequestAsynch (2) is acknowledged at once (1001 / 1002 with the `<request>`'s ID)
//! and carried out afterwards as a blocking one; its `<request>` under the CSEBase holds the
//! status (`rs`: 3 pending, 1 completed, 2 failed) and the result (`ors`, an `m2m:rsp`). With
//! nonBlockingRequestAsynch the result is also sent, as a NOTIFY carrying `m2m:rsp`, to each
//! notification target of the Response Type (`X-M2M-RTU`), or else to the originator.
//!
//! Only the originator reaches its `<request>` (the creator policy); it cannot be created by a
//! request (4005), nor deleted while pending (5220: a started operation cannot be recalled).

use crate::association::Peer;
use crate::cse::Cse;
use crate::store::Resource;
use m2m_core::primitive::ResponseType;
use m2m_core::EntityId;
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use serde_json::{json, Map};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// m2m:requestStatus (TS-0004 table 6.3.4.2.10-1).
const COMPLETED: u64 = 1;
const FAILED: u64 = 2;
const PENDING: u64 = 3;

/// How long a `<request>` is kept when its request names no expiration.
const DEFAULT_LIFETIME: chrono::Duration = chrono::Duration::seconds(60);

/// The type's behaviour.
pub struct RequestResource;

/// A CREATE of a `<request>` never gets here: `validity` refuses it (4005, Recv-1.0).
impl super::Behaviour for RequestResource {
    fn admits(&self, _cse: &Cse, op: Operation, res: &Resource) -> M2mResult<()> {
        if op == Operation::Delete && res.u64_attr("rs") == Some(PENDING) {
            return Err(M2mError::new(
                Rsc::UnableToRecallRequest,
                "the request is under way and cannot be recalled",
            ));
        }
        Ok(())
    }
}

/// Whether a request asks to be answered later.
pub fn is_non_blocking(req: &Request) -> bool {
    matches!(
        req.rt,
        ResponseType::NonBlockingSynch | ResponseType::NonBlockingAsynch
    )
}

/// How long a `<request>` may be asked to live at most (TS-0004 table 7.3.2.2-1: a longer one
/// is refused).
const MAX_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// Acknowledges a non-blocking request with its new `<request>`, and carries it out afterwards.
pub async fn accept(
    cse: &Arc<Cse>,
    req: Request,
    peer: Peer,
    originator: m2m_core::EntityId,
) -> M2mResult<Response> {
    // The result goes to the originator only: its ID, or a pointOfAccess of its <AE> (never a
    // target of its choosing, which the CSE would then be made to call).
    let own_poa: Vec<String> = originator
        .local_stem(&cse.id.home)
        .and_then(|stem| cse.store.get(stem.as_str()).ok().flatten())
        .map(|ae| crate::store::string_list(ae.attrs.get("poa")))
        .unwrap_or_default();
    for nu in req.rtu.iter().flatten() {
        let is_originator =
            m2m_core::EntityId::parse(nu, &cse.id.home).is_ok_and(|e| e == originator);
        if !is_originator && !own_poa.contains(nu) {
            return Err(M2mError::bad_request(
                "a Response Type target must be the originator or one of its points of access",
            ));
        }
    }
    let asynch = req.rt == ResponseType::NonBlockingAsynch;
    let slot = InFlight::take(cse, &originator)?;
    let resource = store_request(cse, &req).await?;
    let ri = resource.ri().to_owned();
    let cse2 = Arc::clone(cse);
    tokio::spawn(async move {
        carry_out(cse2, req, peer, ri).await;
        drop(slot);
    });
    let rsc = if asynch {
        Rsc::AcceptedNonBlockingRequestAsynch
    } else {
        Rsc::AcceptedNonBlockingRequestSynch
    };
    let mut resp = Response::new(rsc, "", Some(json!({ "m2m:uri": resource.ri() })));
    resp.location = Some(resource.srn.clone());
    Ok(resp)
}

/// The non-blocking requests under way, by originator: each originator has at most
/// [`MAX_IN_FLIGHT`], so that no one fills the CSE with work it answered 1001 for.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<EntityId, usize>>);

/// The most non-blocking requests of one originator under way at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// One request under way; its end frees the place.
struct Slot {
    cse: Arc<Cse>,
    originator: EntityId,
}

impl InFlight {
    fn take(cse: &Arc<Cse>, originator: &EntityId) -> M2mResult<Slot> {
        let mut counts = cse.non_blocking.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(originator.clone()).or_default();
        if *n >= MAX_IN_FLIGHT {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                "too many non-blocking requests of this originator are under way",
            ));
        }
        *n += 1;
        Ok(Slot {
            cse: Arc::clone(cse),
            originator: originator.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .cse
            .non_blocking
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.originator) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.originator);
            }
        }
    }
}

/// The `<request>` of a non-blocking request, pending (TS-0004 tables 7.3.2.2-1 and -2).
async fn store_request(cse: &Arc<Cse>, req: &Request) -> M2mResult<Resource> {
    let now = cse.now();
    // The <request> outlives the request, its result, and the Result Persistence asked for
    // (TS-0004 table 7.4.12.1-2, expirationTime).
    let expires = [&req.rqet, &req.rset, &req.rp]
        .into_iter()
        .flatten()
        .filter_map(|t| m2m_core::time::parse(t).ok())
        .max()
        .unwrap_or(now + cse.testing.request_lifetime().unwrap_or(DEFAULT_LIFETIME));
    if expires > now + MAX_LIFETIME {
        return Err(M2mError::bad_request(
            "the request's expiration lies too far ahead for its <request>",
        ));
    }
    let mut mi = Map::new();
    mi.insert(
        "rt".into(),
        json!({ "rtv": req.rt as u8, "nu": req.rtu.clone().unwrap_or_default() }),
    );
    for (k, v) in [
        ("ot", &req.ot),
        ("rqet", &req.rqet),
        ("rset", &req.rset),
        ("oet", &req.oet),
        ("rp", &req.rp),
        ("rvi", &req.rvi),
        ("vsi", &req.vsi),
    ] {
        if let Some(v) = v {
            mi.insert(k.into(), json!(v));
        }
    }
    if let Some(ty) = req.ty {
        mi.insert("ty".into(), json!(ty.code()));
    }
    if let Some(rcn) = req.rcn {
        mi.insert("rcn".into(), json!(rcn as u8));
    }
    let ri = crate::dispatcher::new_ri(ResourceType::Request);
    let originator = req.from.clone().unwrap_or_default();
    let mut attrs = json!({
        "op": req.op as u8,
        "tg": req.to,
        "org": originator,
        "rid": req.rqi,
        "mi": mi,
        "rs": PENDING,
        "ors": { "rsc": Rsc::Accepted.code(), "rqi": req.rqi },
        "lbl": [originator],
        "et": m2m_core::time::format(expires),
    });
    if let Some(pc) = &req.pc {
        attrs["pc"] = pc.clone();
    }
    let attrs = attrs.as_object().cloned().unwrap_or_default();
    let base = cse
        .store
        .get(cse.base_ri())?
        .ok_or_else(|| M2mError::internal("the CSEBase is missing"))?;
    let creator = m2m_core::EntityId::parse(&originator, &cse.id.home).ok();
    let new =
        crate::dispatcher::assemble(cse, &base, ResourceType::Request, attrs, Some(ri), creator);
    cse.store.write(move |w| w.insert(new)).await
}

/// Carries out the request as a blocking one and records its result; with
/// nonBlockingRequestAsynch, sends the result on.
async fn carry_out(cse: Arc<Cse>, mut req: Request, peer: Peer, ri: String) {
    let asynch = req.rt == ResponseType::NonBlockingAsynch;
    let targets = std::mem::take(&mut req.rtu);
    let originator = req.from.clone();
    req.rt = ResponseType::Blocking;
    let mut resp = cse.handle(req, peer).await;
    // The result travels on its own (a NOTIFY, a RETRIEVE of the <request>): it says whom it is
    // from and for.
    resp.from = Some(cse.id.cse_id.sp_relative());
    resp.to.clone_from(&originator);
    let status = if resp.rsc.is_success() {
        COMPLETED
    } else {
        FAILED
    };
    let ors = resp.to_rsp_json();
    let now = cse.now_ts();
    let id = ri.clone();
    let ors2 = ors.clone();
    let stored = cse
        .store
        .write(move |w| {
            let Some(mut r) = w.get(&id)? else {
                return Ok(());
            };
            r.attrs.insert("rs".into(), json!(status));
            r.attrs.insert("ors".into(), ors2);
            r.attrs.insert("lt".into(), json!(now));
            w.update(&r)
        })
        .await;
    if let Err(e) = stored {
        tracing::warn!(dbg = %e.dbg, "result of a non-blocking request not stored");
    }
    if asynch {
        // Not given: the originator; given and empty: nobody (TS-0004 clause 7.5.1.2.5).
        let to: Vec<String> = match targets {
            None => originator.into_iter().collect(),
            Some(targets) => targets,
        };
        for nu in to {
            let r = crate::notification::send_now(&cse, &nu, json!({ "m2m:rsp": ors })).await;
            if !r.rsc.is_success() {
                tracing::info!(target_uri = %m2m_transport::connector::loggable(&nu), rsc = r.rsc.code(), "result of a non-blocking request not delivered");
            }
        }
    }
}
