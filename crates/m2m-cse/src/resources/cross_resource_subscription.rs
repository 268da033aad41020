//! `<crossResourceSubscription>` (TS-0004 clauses 7.4.58, 7.5.1.2.18, 7.5.1.2.20; TS-0001 clause
//! 9.6.58): one notification when events on several resources come within one time window.
//!
//! - At creation the CSE, as the originator, creates a `<subscription>` under each regular target
//!   (`rrat`, with the criteria of `encs`) and adds itself to each subscription target (`srat`);
//!   their notifications come to the crossResourceSubscription. One that fails undoes the others
//!   and answers 5221 CROSS_RESOURCE_OPERATION_FAILURE.
//! - Each window (periodic: back to back from the creation; sliding: from the first notification
//!   after the last window) collects which targets notified. When it ends, the
//!   eventEvaluationMode (`eem`, Release 4; default: all targets) decides whether the
//!   notification `{"m2m:sgn": {"sur": <its ID>}}` goes to `nu`.
//! - Deleting it deletes the subscriptions it made and removes it from the others; a subscription
//!   it relies on being deleted deletes it.
//!
//! Windows live in memory: after a restart, a periodic window starts with the first notification.

use super::{Call, Pending, Prepared};
use crate::association::Peer;
use crate::cse::Cse;
use crate::resolve::local_resource as local;
use crate::store::{string_list, Resource};
use m2m_core::{
    Address, EntityId, M2mError, M2mResult, Operation, Request, ResourceType, Response,
    ResponseStatusCode as Rsc,
};
use m2m_security::association::Proof;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The type's behaviour.
pub struct CrossResourceSubscription;

impl super::Behaviour for CrossResourceSubscription {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        Box::pin(prepare_create(call, attrs))
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.cross_resources.start(cse, res);
    }

    /// A new notificationURI is verified as at creation (TS-0001 clause 10.2.10.2, table 10.2.10.2-1:
    /// the checks of a subscription's UPDATE).
    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        Box::pin(async move {
            check_evaluation_mode(&super::merged(res, content))?;
            crate::resources::subscription::verify_added(call, res, content).await
        })
    }

    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &crate::store::Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        if changed.contains_key("nse") && res.attrs.get("nse") != Some(&Value::Bool(false)) {
            res.attrs.remove("nsi");
        }
        Ok(())
    }

    /// A new window type or size restarts the window (TS-0004 clause 7.4.58.2.3).
    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        if changed.contains_key("twt") || changed.contains_key("tws") {
            cse.cross_resources.stop(res.ri());
            cse.cross_resources.start(cse, res);
        }
    }

    fn keeps_state(&self) -> bool {
        true
    }

    /// Its windows stop; the dispatcher then releases its targets (`release_targets`) before
    /// the DELETE is answered.
    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.cross_resources.stop(res.ri());
    }
}

/// eventEvaluationMode 3 and 4 (some or all missing) need periodic windows: a sliding window
/// only opens with an event.
fn check_evaluation_mode(attrs: &Map<String, Value>) -> M2mResult<()> {
    let sliding = attrs.get("twt").and_then(Value::as_u64) == Some(SLIDING);
    let eem = attrs.get("eem").and_then(Value::as_u64).unwrap_or(1);
    if sliding && matches!(eem, 3 | 4) {
        return Err(M2mError::bad_request(
            "an eventEvaluationMode about missing events needs a periodic window",
        ));
    }
    Ok(())
}

/// timeWindowType (TS-0004 table 6.3.4.2.61-1).
const PERIODIC: u64 = 1;
const SLIDING: u64 = 2;

async fn prepare_create(call: Call<'_>, attrs: &mut Map<String, Value>) -> M2mResult<Prepared> {
    let cse = call.cse;
    let rrat = string_list(attrs.get("rrat"));
    let srat = string_list(attrs.get("srat"));
    if rrat.is_empty() && srat.is_empty() {
        return Err(M2mError::bad_request(
            "regularResourcesAsTarget or subscriptionResourcesAsTarget must name a target",
        ));
    }
    let criteria: Vec<Value> = attrs
        .get("encs")
        .and_then(|e| e.get("enc"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !rrat.is_empty() && criteria.len() != 1 && criteria.len() != rrat.len() {
        return Err(M2mError::bad_request(
            "eventNotificationCriteriaSet holds one criteria, or one per regular target",
        ));
    }
    check_evaluation_mode(attrs)?;
    let ri = crate::dispatcher::new_ri(ResourceType::CrossResourceSubscription);
    let me = cse.sp_relative(&ri);
    crate::resources::subscription::verify(call, &ri, &string_list(attrs.get("nu"))).await?;
    // The subscriptions' verification requests come to this crossResourceSubscription, which
    // does not exist yet: the CSE answers for it.
    cse.cross_resources.pending(&me, true);
    let made = associate(call, attrs, &me, &rrat, &srat, &criteria).await;
    cse.cross_resources.pending(&me, false);
    let rrats = made?;
    if !rrat.is_empty() {
        attrs.insert("rrats".into(), json!(rrats));
    }
    Ok(Prepared {
        ri: Some(ri),
        ..Prepared::default()
    })
}

/// Creates the subscriptions on the regular targets and joins the subscription targets, as the
/// originator; on any failure undoes what was done and answers 5221.
async fn associate(
    call: Call<'_>,
    attrs: &Map<String, Value>,
    me: &str,
    rrat: &[String],
    srat: &[String],
    criteria: &[Value],
) -> M2mResult<Vec<String>> {
    let mut joined: Vec<&String> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let failure = |what: String| {
        tracing::info!(target: "audit", crs = me, reason = %what, "crossResourceSubscription not created");
        M2mError::new(
            Rsc::CrossResourceOperationFailure,
            "a target of the crossResourceSubscription could not be subscribed to",
        )
    };
    let result: M2mResult<()> = async {
        for target in srat {
            // What a remote host answered goes to the log only.
            join(call, target, me).await.map_err(|e| {
                if e.rsc == Rsc::BadRequest {
                    tracing::info!(target: "audit", crs = me, target_uri = %m2m_transport::connector::loggable(target), dbg = %e.dbg, "subscription target refused");
                    M2mError::bad_request(
                        "a subscriptionResourcesAsTarget entry is not a subscription that can be joined",
                    )
                } else {
                    failure(format!("{target}: {}", e.dbg))
                }
            })?;
            joined.push(target);
        }
        for (i, target) in rrat.iter().enumerate() {
            let enc = criteria.get(i).or(criteria.first()).cloned();
            let sub = subscribe(call, attrs, target, me, enc)
                .await
                .map_err(|e| failure(format!("{target}: {}", e.dbg)))?;
            created.push(sub);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        for sub in &created {
            let _ = internal(call.cse, call.peer, Operation::Delete, sub, call.req, None).await;
        }
        for target in joined {
            leave(call.cse, target, me).await;
        }
        return Err(e);
    }
    Ok(created)
}

/// Sends a request as the originator of the CREATE being served, through the CSE's own handling
/// (access control, routing) as any request of that originator.
async fn internal(
    cse: &Arc<Cse>,
    peer: &Peer,
    op: Operation,
    to: &str,
    original: &Request,
    content: Option<(ResourceType, Value)>,
) -> M2mResult<Response> {
    let mut req = Request::new(
        op,
        to,
        original.from.clone(),
        format!("crs-{}", crate::context::random_suffix(10)),
    );
    if let Some((ty, pc)) = content {
        if op == Operation::Create {
            req.ty = Some(ty);
        }
        req.pc = Some(pc);
    }
    let resp = cse.handle(req, peer.clone()).await;
    if resp.rsc.is_success() {
        Ok(resp)
    } else {
        Err(M2mError::new(
            resp.rsc,
            resp.dbg().unwrap_or("refused").to_owned(),
        ))
    }
}

/// A <subscription> under a regular target notifying this crossResourceSubscription; its ID.
async fn subscribe(
    call: Call<'_>,
    attrs: &Map<String, Value>,
    target: &str,
    me: &str,
    enc: Option<Value>,
) -> M2mResult<String> {
    let mut sub = json!({ "nu": [me], "acrs": [me] });
    if let Some(enc) = enc {
        sub["enc"] = enc;
    }
    for k in ["et", "nec"] {
        if let Some(v) = attrs.get(k) {
            sub[k] = v.clone();
        }
    }
    let resp = internal(
        call.cse,
        call.peer,
        Operation::Create,
        target,
        call.req,
        Some((ResourceType::Subscription, json!({ "m2m:sub": sub }))),
    )
    .await?;
    let ri = resp
        .pc
        .as_ref()
        .and_then(|pc| pc.pointer("/m2m:sub/ri"))
        .and_then(Value::as_str)
        .ok_or_else(|| M2mError::internal("the subscription's answer names no resourceID"))?;
    Ok(id_on_host_of(call.cse, target, ri))
}

/// The ID of resource `ri` on the CSE hosting `target`, an ID that names the subscription
/// wherever the crossResourceSubscription is read: SP-relative (this CSE's or another CSE's of
/// this SP), absolute when a CSE of another SP hosts it.
fn id_on_host_of(cse: &Cse, target: &str, ri: &str) -> String {
    let Ok(address) = Address::parse(target) else {
        return cse.sp_relative(ri);
    };
    match (crate::resolve::locality(cse, &address), &address.scope) {
        (crate::resolve::Locality::Remote(Some(host)), _) => format!("{}/{ri}", host.sp_relative()),
        // A CSE of another SP: the absolute ID.
        (crate::resolve::Locality::Remote(None), m2m_core::Scope::Absolute(sp, host)) => {
            format!("{sp}{host}/{ri}")
        }
        _ => cse.sp_relative(ri),
    }
}

/// Adds this crossResourceSubscription to a subscription target's notificationURI and
/// associatedCrossResourceSub (an UPDATE as the originator). Not a <subscription>: 4000.
async fn join(call: Call<'_>, target: &str, me: &str) -> M2mResult<()> {
    let current = internal(
        call.cse,
        call.peer,
        Operation::Retrieve,
        target,
        call.req,
        None,
    )
    .await?;
    let sub = current
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:sub"))
        .ok_or_else(|| {
            M2mError::bad_request("a subscriptionResourcesAsTarget entry is not a subscription")
        })?;
    let mut nu = string_list(sub.get("nu"));
    let mut acrs = string_list(sub.get("acrs"));
    for list in [&mut nu, &mut acrs] {
        if !list.iter().any(|x| x == me) {
            list.push(me.to_owned());
        }
    }
    internal(
        call.cse,
        call.peer,
        Operation::Update,
        target,
        call.req,
        Some((
            ResourceType::Subscription,
            json!({ "m2m:sub": { "nu": nu, "acrs": acrs } }),
        )),
    )
    .await
    .map(|_| ())
}

/// Removes this crossResourceSubscription from a subscription hosted here (its notificationURI
/// and associatedCrossResourceSub); a subscription hosted elsewhere is left to its host's expiry.
/// Failures are ignored (TS-0004 clause 7.4.58.2.4).
async fn leave(cse: &Arc<Cse>, target: &str, me: &str) {
    let Some(sub) = local(cse, target).filter(|r| r.ty == ResourceType::Subscription) else {
        return;
    };
    let me = me.to_owned();
    let r = cse
        .store
        .write(move |w| {
            let Some(mut sub) = w.get(sub.ri())? else {
                return Ok(());
            };
            for k in ["nu", "acrs"] {
                let kept: Vec<String> = string_list(sub.attrs.get(k))
                    .into_iter()
                    .filter(|x| *x != me)
                    .collect();
                if kept.is_empty() {
                    sub.attrs.remove(k);
                } else {
                    sub.attrs.insert(k.into(), json!(kept));
                }
            }
            w.update(&sub)
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(dbg = %e.dbg, "crossResourceSubscription not removed from a target");
    }
}

/// After the deletion: the subscriptions it made go and it leaves the others (TS-0004 clause
/// 7.4.58.2.4); its subscriber was told with the deletion (`subscription_events::on_deleted`).
pub(crate) async fn release_targets(cse: &Arc<Cse>, crs: &Resource) {
    let me = cse.sp_relative(crs.ri());
    for sub in string_list(crs.attrs.get("rrats")) {
        // Only a subscription that still names this crossResourceSubscription as its own: an
        // ID another CSE answered with is not trusted to name a resource it may delete.
        let Some(res) = local(cse, &sub).filter(|r| {
            r.ty == ResourceType::Subscription
                && string_list(r.attrs.get("acrs"))
                    .iter()
                    .any(|a| crate::resolve::names(cse, a, crs))
        }) else {
            continue;
        };
        if let Err(e) = crate::dispatcher::delete_resource(cse, &res, None).await {
            tracing::debug!(dbg = %e.dbg, "a subscription of a crossResourceSubscription was gone");
        }
    }
    for target in string_list(crs.attrs.get("srat")) {
        leave(cse, &target, &me).await;
    }
}

/// A NOTIFY to a crossResourceSubscription: a verification request, a subscription deletion
/// (it then goes too), or an event of one of its targets for the current window. Events and
/// deletions count only from the CSE hosting the subscription named in `sur`.
pub async fn notified(
    cse: &Arc<Cse>,
    req: &Request,
    peer: &Peer,
    crs: &Resource,
) -> M2mResult<Response> {
    let sgn = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:sgn"))
        .ok_or_else(|| M2mError::bad_request("the content is not a m2m:sgn notification"))?;
    let ok = Response::new(Rsc::Ok, &req.rqi, None);
    if sgn.get("vrq") == Some(&Value::Bool(true)) {
        return Ok(ok);
    }
    let sur = sgn.get("sur").and_then(Value::as_str).unwrap_or("");
    if !is_target(cse, crs, sur) || !hosts(cse, peer, sur) {
        tracing::info!(target: "audit", crs = crs.ri(), from = req.from.as_deref().unwrap_or(""), "notification to a crossResourceSubscription refused");
        return Err(M2mError::bad_request(
            "the notification is not from a subscription of this crossResourceSubscription",
        ));
    }
    if sgn.get("sud") == Some(&Value::Bool(true)) {
        crate::dispatcher::delete_resource(cse, crs, None).await?;
        return Ok(ok);
    }
    cse.cross_resources.event(cse, crs, sur);
    Ok(ok)
}

/// Whether `sub` (possibly deleted already) is one of the subscriptions `crs` relies on: made
/// for it (`rrats`) or joined by it (`srat`), named by resourceID or structured name. Only then
/// may its end delete `crs`.
pub(crate) fn relies_on(cse: &Cse, crs: &Resource, sub: &Resource) -> bool {
    string_list(crs.attrs.get("rrats"))
        .iter()
        .chain(string_list(crs.attrs.get("srat")).iter())
        .any(|id| crate::resolve::names(cse, id, sub))
}

/// Whether the NOTIFY comes from the CSE hosting subscription `sur`: this CSE itself for a local
/// one (no entity outside may speak for it), the remote CSE, authenticated or vouched for by
/// the CSE relaying it, for a remote one.
fn hosts(cse: &Cse, peer: &Peer, sur: &str) -> bool {
    let Ok(addr) = Address::parse(sur) else {
        return false;
    };
    match crate::resolve::locality(cse, &addr) {
        crate::resolve::Locality::Local => peer.is_internal(),
        crate::resolve::Locality::Remote(Some(host)) => {
            // The remote CSE of this SP (an address naming another SP is not Remote(Some)).
            peer.proof >= Proof::Vouched
                && matches!(&peer.originator, Some(EntityId::Cse { sp, cse: c }) if *c == host && *sp == cse.id.sp_id)
        }
        crate::resolve::Locality::Remote(None) => false,
    }
}

/// Whether `sur` names one of the subscriptions the crossResourceSubscription relies on.
fn is_target(cse: &Cse, crs: &Resource, sur: &str) -> bool {
    if sur.is_empty() {
        return false;
    }
    // The same resource, whatever forms the two IDs take (`sur` resolved once).
    let sur_res = local(cse, sur);
    let same = |id: &str| {
        sur_res
            .as_ref()
            .is_some_and(|s| crate::resolve::names(cse, id, s))
            || Address::parse(id)
                .ok()
                .zip(Address::parse(sur).ok())
                .is_some_and(|(a, b)| a == b)
    };
    string_list(crs.attrs.get("rrats"))
        .iter()
        .chain(string_list(crs.attrs.get("srat")).iter())
        .any(|id| same(id))
}

/// The windows of the crossResourceSubscriptions, by resourceID, and those being created.
#[derive(Default)]
pub struct CrossResources {
    windows: Mutex<HashMap<String, Window>>,
    pending: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Window {
    /// The subscriptions that notified in the current window.
    seen: HashSet<String>,
    timer: Option<tokio::task::AbortHandle>,
}

impl CrossResources {
    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self, id: &str, on: bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            p.insert(id.to_owned());
        } else {
            p.remove(id);
        }
    }

    /// Whether `nu` is a crossResourceSubscription of this CSE being created.
    pub fn is_pending(&self, nu: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(nu)
    }

    /// A periodic window starts with the resource.
    fn start(&self, cse: &Arc<Cse>, crs: &Resource) {
        if crs.u64_attr("twt") == Some(PERIODIC) {
            let timer = spawn_window(cse, crs, true);
            self.windows().entry(crs.ri().to_owned()).or_default().timer = Some(timer);
        }
    }

    fn stop(&self, ri: &str) {
        if let Some(w) = self.windows().remove(ri) {
            if let Some(t) = w.timer {
                t.abort();
            }
        }
    }

    /// An event of a target: counted in the current window, which a sliding window opens.
    fn event(&self, cse: &Arc<Cse>, crs: &Resource, sur: &str) {
        let mut windows = self.windows();
        let w = windows.entry(crs.ri().to_owned()).or_default();
        w.seen.insert(sur.to_owned());
        if w.timer.is_none() {
            let periodic = crs.u64_attr("twt") == Some(PERIODIC);
            w.timer = Some(spawn_window(cse, crs, periodic));
        }
    }

    /// Ends the current window: what it saw, and (sliding) no window until the next event.
    fn close(&self, ri: &str, periodic: bool) -> HashSet<String> {
        let mut windows = self.windows();
        let Some(w) = windows.get_mut(ri) else {
            return HashSet::new();
        };
        if !periodic {
            w.timer = None;
        }
        std::mem::take(&mut w.seen)
    }
}

/// The timer of a window: once (sliding) or back to back (periodic).
fn spawn_window(cse: &Arc<Cse>, crs: &Resource, periodic: bool) -> tokio::task::AbortHandle {
    let size = crs
        .attrs
        .get("tws")
        .and_then(m2m_core::time::parse_duration)
        .unwrap_or(std::time::Duration::from_secs(60))
        // A local floor: each window may send a notification.
        .max(std::time::Duration::from_millis(100));
    let cse = Arc::clone(cse);
    let ri = crs.ri().to_owned();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(size).await;
            let seen = cse.cross_resources.close(&ri, periodic);
            let crs = match cse.store.get(&ri) {
                Ok(Some(crs)) => crs,
                _ => break,
            };
            window_ended(&cse, &crs, seen.len());
            if !periodic {
                break;
            }
        }
    })
    .abort_handle()
}

/// eventEvaluationMode (Release 4): whether a window in which `seen` of `expected` targets
/// notified calls for the cross-resource notification.
fn fires(eem: u64, seen: usize, expected: usize) -> bool {
    match eem {
        // allOrSomeEventsPresent
        2 => seen >= 1,
        // allOrSomeEventsMissing
        3 => seen < expected,
        // allEventsMissing
        4 => seen == 0,
        // someEventsMissing
        5 => seen >= 1 && seen < expected,
        // allEventsPresent
        _ => seen >= expected,
    }
}

fn window_ended(cse: &Arc<Cse>, crs: &Resource, seen: usize) {
    let expected =
        string_list(crs.attrs.get("rrat")).len() + string_list(crs.attrs.get("srat")).len();
    let eem = crs.u64_attr("eem").unwrap_or(1);
    if fires(eem, seen, expected) {
        let sgn = json!({ "sur": cse.sp_relative(crs.ri()) });
        crate::subscription_events::notify_subscription(cse, crs, sgn);
    }
}

#[cfg(test)]
mod tests {
    use super::fires;

    #[test]
    fn evaluation_modes_decide_on_the_events_of_a_window() {
        // (eem, seen of 2) -> fires
        let table = [
            (1, [false, false, true]),
            (2, [false, true, true]),
            (3, [true, true, false]),
            (4, [true, false, false]),
            (5, [false, true, false]),
        ];
        for (eem, want) in table {
            for (seen, fire) in want.iter().enumerate() {
                assert_eq!(fires(eem, seen, 2), *fire, "eem {eem}, {seen} of 2");
            }
        }
    }
}
