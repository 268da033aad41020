//! `<action>` and `<dependency>` (Release 4, TS-0001 V4 clauses 9.6.61, 9.6.62; TS-0004 V4 clauses
//! 7.4.65, 7.4.66): when an attribute of the action's subject resource meets its criteria, and
//! its dependencies are met, the CSE sends the action's request primitive to its object
//! recipient, as the action's creator, and keeps the answer in `air`.
//!
//! - The subject is `sri`, or the action's parent. `evc/sbjt` must be an attribute of its type
//!   (4000), and is compared with `evc/thld` by `evc/optr` after each UPDATE of
//!   the subject.
//! - `apv` is a request primitive (`op`, `fr`, `pc`, `ty`...); its `fr` must be the action's
//!   creator (4000): an action runs with its creator's rights, never more. Its `to` is `orc`,
//!   which must name a resource the creator can reach (4000).
//! - `evm` 0 (off) never runs; 1 (once) runs once and turns itself off; 2 (periodic) runs when
//!   the criteria are met, at most once per period `ecp` (an xs:duration: milliseconds, or
//!   ISO 8601; 100 ms at least), the first time they are met in it; 3 (continuous) runs every
//!   time the criteria are met, `ecp` times at most (a positive count; then it turns itself
//!   off, as once does; without `ecp`, without end). `ecp` only with 2 or 3; 2 without it runs
//!   at most every 10 s.
//!   The ordering operators (`optr` 3 to 6) take a number or a string threshold (4000).
//! - `dep` lists `<dependency>` children: a met one with `sfc` (sufficient) true is enough, else
//!   all must be met; one that no longer exists is not met (the action is held until `dep` is
//!   changed). A dependency compares an attribute of its `rri` resource like `evc`.

use super::{Call, Pending, Prepared};
use crate::association::Peer;
use crate::cse::Cse;
use crate::store::{string_list, Resource};
use m2m_core::{M2mError, M2mResult, Operation, Request, ResourceType};
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// evalMode (Release 4).
const OFF: u64 = 0;
const ONCE: u64 = 1;
const PERIODIC: u64 = 2;
const CONTINUOUS: u64 = 3;

/// The `<action>` type.
pub struct Action;

impl super::Behaviour for Action {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        Box::pin(async move {
            check_action(call, parent, attrs, None).await?;
            Ok(Prepared::default())
        })
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.actions.index(cse, res);
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        Box::pin(async move {
            let merged = super::merged(res, content);
            let parent = crate::resolve::parent_of(call.cse, res)?;
            check_action(call, &parent, &merged, Some(res)).await
        })
    }

    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        cse.actions.index(cse, res);
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.actions.forget(res.ri());
    }
}

/// The checks of an action as it would be stored (CREATE, or the result of an UPDATE).
async fn check_action(
    call: Call<'_>,
    parent: &Resource,
    attrs: &Map<String, Value>,
    existing: Option<&Resource>,
) -> M2mResult<()> {
    let cse = call.cse;
    // An action later runs as its creator with the CSE's word for it: only a creator its
    // association proved may leave one.
    if !call.peer.proof.identifies() {
        return Err(crate::access::refused());
    }
    let evm = attrs.get("evm").and_then(Value::as_u64).unwrap_or(OFF);
    if evm == PERIODIC && period(attrs).is_none() {
        return Err(M2mError::bad_request(
            "the period of a periodic evaluation (ecp) is a duration of 100 ms at least",
        ));
    }
    if evm == CONTINUOUS && attrs.contains_key("ecp") && run_limit(attrs).is_none() {
        return Err(M2mError::bad_request(
            "the evalControlParam of a continuous evaluation is a number of runs, 1 at least",
        ));
    }
    if attrs.contains_key("ecp") && matches!(evm, OFF | ONCE) {
        return Err(M2mError::bad_request(
            "evalControlParam is for periodic or continuous evaluation only",
        ));
    }
    let creator = existing
        .and_then(|r| r.creator.clone())
        .or_else(|| call.req.from.clone())
        .unwrap_or_default();
    // The subject first: an action reveals nothing of a resource its creator may not see, not
    // even whether it exists or has an attribute.
    let unreadable = || {
        M2mError::bad_request("the subject resource cannot be retrieved by the action's creator")
    };
    let subject = subject_of(cse, parent, attrs).map_err(|_| unreadable())?;
    // The parent too: creating a child (a write-only mailbox) does not mean reading it.
    if !super::reachable(cse, call.peer, &creator, subject.ri()).await {
        return Err(unreadable());
    }
    let evc = attrs.get("evc").cloned().unwrap_or_default();
    check_criteria(&subject, &evc)?;
    // The action runs as its creator: its primitive may not name anyone else.
    let apv = attrs.get("apv").cloned().unwrap_or_default();
    let home = &cse.id.home;
    let same = |a: &str, b: &str| {
        m2m_core::EntityId::parse(a, home)
            .ok()
            .zip(m2m_core::EntityId::parse(b, home).ok())
            .is_some_and(|(a, b)| a == b)
    };
    if !apv
        .get("fr")
        .and_then(Value::as_str)
        .is_some_and(|fr| same(fr, &creator))
    {
        return Err(M2mError::bad_request(
            "the action primitive's From must be the action's creator",
        ));
    }
    let checked = primitive(&apv, "orc-check", &creator)?;
    // The action keeps its primitive: a device configuration secret in it must be protected,
    // as in the object itself.
    if let Some(pc) = apv.get("pc") {
        m2m_core::mgmt_obj::refuse_clear_secrets(pc)?;
    }
    // A NOTIFY from the CSE's own hand would pass as the CSE's notification.
    if checked.op == Operation::Notify {
        return Err(M2mError::bad_request(
            "an action primitive is a CREATE, RETRIEVE, UPDATE or DELETE",
        ));
    }
    let orc = attrs.get("orc").and_then(Value::as_str).unwrap_or("");
    if !super::reachable(cse, call.peer, &creator, orc).await {
        return Err(M2mError::bad_request(
            "the object recipient cannot be retrieved by the action's creator",
        ));
    }
    // Entries the action already had are not checked again: a dependency deleted (or expired)
    // since stays listed and unmet, so the action stays held (fail closed), and it does not keep
    // the action from being updated otherwise.
    let had = existing
        .map(|a| string_list(a.attrs.get("dep")))
        .unwrap_or_default();
    for dep in string_list(attrs.get("dep")) {
        if had.contains(&dep) {
            continue;
        }
        let is_child = crate::resolve::local_resource(cse, &dep).is_some_and(|d| {
            d.ty == ResourceType::Dependency && existing.is_some_and(|a| d.pi() == a.ri())
        });
        if !is_child {
            return Err(M2mError::bad_request(format!(
                "dependency '{dep}' is not a <dependency> of this action"
            )));
        }
    }
    Ok(())
}

/// `evc/sbjt` must be an attribute of the resource's type, and `evc/thld` of that attribute's
/// kind where the type defines it.
fn check_criteria(res: &Resource, evc: &Value) -> M2mResult<()> {
    let sbjt = evc.get("sbjt").and_then(Value::as_str).unwrap_or("");
    if !has_attribute(res, sbjt) {
        return Err(M2mError::bad_request(format!(
            "the subject resource has no attribute '{sbjt}'"
        )));
    }
    let Some(thld) = evc.get("thld") else {
        return Ok(());
    };
    // greaterThan, lessThan and their OrEqual order numbers and strings, not lists or booleans.
    if matches!(evc.get("optr").and_then(Value::as_u64), Some(3..=6))
        && !(thld.is_number() || thld.is_string())
    {
        return Err(M2mError::bad_request(
            "evc.optr 3 to 6 compare a number or a string threshold",
        ));
    }
    match m2m_core::schema::attribute(res.ty, sbjt).map(|s| s.kind) {
        Some(m2m_core::schema::Kind::Any) | None => {
            // An attribute the CSE sets (a counter...): the kind of its current value.
            let fits = match res.attrs.get(sbjt) {
                Some(Value::Number(n)) if n.is_u64() => thld.is_u64(),
                Some(Value::Number(_)) => thld.is_number(),
                Some(Value::Bool(_)) => thld.is_boolean(),
                Some(Value::String(_)) => thld.is_string(),
                _ => true,
            };
            if !fits {
                return Err(M2mError::bad_request(
                    "evc.thld is not of the kind of the subject attribute",
                ));
            }
            Ok(())
        }
        Some(kind) => m2m_core::schema::check_value(&kind, thld, "evc.thld"),
    }
}

/// Whether `name` is an attribute of the resource's type (set now or not).
fn has_attribute(res: &Resource, name: &str) -> bool {
    res.attrs.contains_key(name) || m2m_core::schema::attribute(res.ty, name).is_some()
}

/// The subject of an action: `sri`, or its parent.
fn subject_of(cse: &Cse, parent: &Resource, attrs: &Map<String, Value>) -> M2mResult<Resource> {
    match attrs.get("sri").and_then(Value::as_str) {
        Some(sri) => crate::resolve::local_resource(cse, sri)
            .ok_or_else(|| M2mError::bad_request("the subject resource does not exist here")),
        None => Ok(parent.clone()),
    }
}

/// The action primitive as a request: `apv` with its own `fr`, a fresh `rqi`, to `to`.
fn primitive(apv: &Value, to: &str, creator: &str) -> M2mResult<Request> {
    let mut p = apv.clone();
    let obj = p
        .as_object_mut()
        .ok_or_else(|| M2mError::bad_request("actionPrimitive must be a request primitive"))?;
    obj.insert("to".into(), json!(to));
    obj.insert("fr".into(), json!(creator));
    obj.insert(
        "rqi".into(),
        json!(format!("actr-{}", crate::context::random_suffix(10))),
    );
    Request::from_json(&p)
}

/// The `<dependency>` type.
pub struct Dependency;

impl super::Behaviour for Dependency {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        Box::pin(async move {
            check_dependency(call, attrs).await?;
            Ok(Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        Box::pin(async move { check_dependency(call, &super::merged(res, content)).await })
    }
}

/// A dependency's referenced resource must be one the requester may retrieve (a dependency
/// reveals what it compares), exist here and carry the attribute it compares.
async fn check_dependency(call: Call<'_>, attrs: &Map<String, Value>) -> M2mResult<()> {
    let cse = call.cse;
    let rri = attrs.get("rri").and_then(Value::as_str).unwrap_or("");
    let who = call.req.from.clone().unwrap_or_default();
    if !super::reachable(cse, call.peer, &who, rri).await {
        return Err(M2mError::bad_request(
            "the referenced resource cannot be retrieved by the originator",
        ));
    }
    let referenced = crate::resolve::local_resource(cse, rri)
        .ok_or_else(|| M2mError::bad_request("the referenced resource does not exist here"))?;
    check_criteria(&referenced, attrs.get("evc").unwrap_or(&Value::Null))
}

/// Whether `value` compares with `thld` as `optr` says; values of different kinds never do,
/// except that any two values can be equal or not.
fn meets(evc: &Value, value: Option<&Value>) -> bool {
    let (Some(optr), Some(thld)) = (evc.get("optr").and_then(Value::as_u64), evc.get("thld"))
    else {
        return false;
    };
    let Some(value) = value else {
        return false;
    };
    let order = match (value, thld) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match optr {
        1 => value == thld || order == Some(Ordering::Equal),
        2 => !(value == thld || order == Some(Ordering::Equal)),
        3 => order == Some(Ordering::Greater),
        4 => order == Some(Ordering::Less),
        5 => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
        6 => matches!(order, Some(Ordering::Less | Ordering::Equal)),
        _ => false,
    }
}

/// The period of a periodic action without `ecp`: the CSE's choice (TS-0001 leaves it to local
/// policy), that of other CSEs.
const DEFAULT_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// The period of a periodic action (`ecp`, 100 ms at least; else the default), `None` when `ecp`
/// is not such a duration.
fn period(attrs: &Map<String, Value>) -> Option<std::time::Duration> {
    match attrs.get("ecp") {
        None => Some(DEFAULT_PERIOD),
        Some(ecp) => m2m_core::time::parse_duration(ecp)
            .filter(|d| *d >= std::time::Duration::from_millis(100)),
    }
}

/// How many times a continuous action may run (`ecp`, a positive count), `None` without one or
/// when `ecp` is not one.
fn run_limit(attrs: &Map<String, Value>) -> Option<u64> {
    attrs.get("ecp").and_then(Value::as_u64).filter(|n| *n > 0)
}

/// The actions by the resourceID of their subject (rebuilt from the store at start).
#[derive(Default)]
pub struct Actions {
    by_subject: Mutex<HashMap<String, HashSet<String>>>,
    /// When each periodic action last ran.
    last_run: Mutex<HashMap<String, std::time::Instant>>,
    /// How many times each continuous action with a limit ran since it was (re)indexed.
    runs: Mutex<HashMap<String, u64>>,
}

impl Actions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.by_subject.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every action of the store, indexed by subject.
    pub fn load(&self, cse: &Cse) -> M2mResult<()> {
        for a in cse.store.read(|r| r.all_of_type(ResourceType::Action))? {
            self.index(cse, &a);
        }
        Ok(())
    }

    fn index(&self, cse: &Cse, action: &Resource) {
        self.forget(action.ri());
        let subject = match action.str_attr("sri") {
            Some(sri) => crate::resolve::local_resource(cse, sri).map(|r| r.ri().to_owned()),
            None => Some(action.pi().to_owned()),
        };
        if let Some(subject) = subject {
            self.map()
                .entry(subject)
                .or_default()
                .insert(action.ri().to_owned());
        }
    }

    /// Whether the periodic action `ri` may run now, and if so, that it ran now (one step, so
    /// that events close together run it once).
    fn take_period(&self, ri: &str, period: std::time::Duration) -> bool {
        let mut last = self.last_run.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .get(ri)
            .is_some_and(|t| now.duration_since(*t) < period)
        {
            return false;
        }
        last.insert(ri.to_owned(), now);
        true
    }

    /// Counts a run of the continuous action `ri` limited to `limit` runs: `None` when it ran
    /// them all, else whether this run is its last.
    fn take_run(&self, ri: &str, limit: u64) -> Option<bool> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let n = runs.entry(ri.to_owned()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(*n == limit)
    }

    fn forget(&self, action_ri: &str) {
        self.last_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(action_ri);
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(action_ri);
        let mut map = self.map();
        map.retain(|_, set| {
            set.remove(action_ri);
            !set.is_empty()
        });
    }

    fn of_subject(&self, ri: &str) -> Vec<String> {
        self.map()
            .get(ri)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// After a child of `ri` was created or deleted (its counters changed): its actions, if it is a
/// subject, look at it as it is now.
pub fn children_changed(cse: &Arc<Cse>, ri: &str) {
    if cse.actions.of_subject(ri).is_empty() {
        return;
    }
    match cse.store.get(ri) {
        Ok(Some(subject)) => subject_updated(cse, &subject),
        Ok(None) => {}
        Err(e) => tracing::warn!(dbg = %e.dbg, "subject of an action unreadable"),
    }
}

/// After an UPDATE of `subject`: the actions whose criteria and dependencies it now meets run.
pub fn subject_updated(cse: &Arc<Cse>, subject: &Resource) {
    let actions = cse.actions.of_subject(subject.ri());
    if actions.is_empty() {
        return;
    }
    let cse = Arc::clone(cse);
    let subject = subject.clone();
    tokio::spawn(async move {
        for ri in actions {
            if let Err(e) = evaluate(&cse, &ri, &subject).await {
                tracing::warn!(action = %ri, dbg = %e.dbg, "action not run");
            }
        }
    });
}

/// The peer of what an action does: as its creator, vouched for by the CSE that knew it at
/// creation, never authenticated now, never the admin, never the CSE itself
/// (`impersonation::check`).
fn run_as_creator() -> Peer {
    Peer {
        by_action: true,
        ..Peer::internal()
    }
}

async fn evaluate(cse: &Arc<Cse>, ri: &str, subject: &Resource) -> M2mResult<()> {
    let Some(action) = cse.store.get(ri)? else {
        cse.actions.forget(ri);
        return Ok(());
    };
    let evm = action.u64_attr("evm").unwrap_or(OFF);
    if evm == OFF {
        return Ok(());
    }
    let evc = action.attrs.get("evc").cloned().unwrap_or_default();
    let sbjt = evc.get("sbjt").and_then(Value::as_str).unwrap_or("");
    if !meets(&evc, subject.attrs.get(sbjt)) || !dependencies_met(cse, &action)? {
        return Ok(());
    }
    // Whether it runs tells what the subject holds: only while its creator may still read it
    // (decided, not asked: a RETRIEVE would count as the creator's, for monitors and beacons).
    let creator = action.creator.clone().unwrap_or_default();
    let reads = action.creator_entity(&cse.id.home).is_some_and(|who| {
        let op = m2m_security::access_control::AccessOperation::Retrieve;
        crate::access::permits_entity(cse, &who, op, subject).unwrap_or(false)
    });
    if !reads {
        tracing::info!(target: "audit", action = %ri, creator = %creator, "action not run: its creator can no longer read its subject");
        return Ok(());
    }
    if evm == PERIODIC {
        let Some(period) = period(&action.attrs) else {
            return Ok(());
        };
        if !cse.actions.take_period(ri, period) {
            return Ok(());
        }
    }
    // A continuous action with a number of runs turns itself off after the last one.
    let mut last_run = evm == ONCE;
    if let (CONTINUOUS, Some(limit)) = (evm, run_limit(&action.attrs)) {
        match cse.actions.take_run(ri, limit) {
            Some(last) => last_run = last,
            None => return Ok(()),
        }
    }
    let apv = action.attrs.get("apv").cloned().unwrap_or_default();
    let orc = action.str_attr("orc").unwrap_or_default().to_owned();
    let answer = match primitive(&apv, &orc, &creator) {
        Ok(req) => cse.handle(req, run_as_creator()).await,
        Err(e) => m2m_core::Response::error(&e, ""),
    };
    tracing::info!(target: "audit", action = %ri, creator = %creator, rsc = answer.rsc.code(), "action run");
    let air = answer.to_rsp_json();
    let id = ri.to_owned();
    cse.store
        .write(move |w| {
            let Some(mut a) = w.get(&id)? else {
                return Ok(());
            };
            a.attrs.insert("air".into(), air);
            if last_run {
                a.attrs.insert("evm".into(), json!(OFF));
            }
            w.update(&a)
        })
        .await
}

/// The dependencies of an action: none; or a met sufficient one; or all met.
fn dependencies_met(cse: &Cse, action: &Resource) -> M2mResult<bool> {
    let deps = string_list(action.attrs.get("dep"));
    if deps.is_empty() {
        return Ok(true);
    }
    let mut all = true;
    for id in deps {
        let Some(dep) = crate::resolve::local_resource(cse, &id) else {
            all = false;
            continue;
        };
        let evc = dep.attrs.get("evc").cloned().unwrap_or_default();
        let sbjt = evc.get("sbjt").and_then(Value::as_str).unwrap_or("");
        let value = dep
            .str_attr("rri")
            .and_then(|rri| crate::resolve::local_resource(cse, rri))
            .and_then(|r| r.attrs.get(sbjt).cloned());
        let met = meets(&evc, value.as_ref());
        if met && dep.attrs.get("sfc") == Some(&Value::Bool(true)) {
            return Ok(true);
        }
        all &= met;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::meets;
    use serde_json::json;

    #[test]
    fn criteria_compare_numbers_strings_and_booleans() {
        let evc =
            |optr: u64, thld: serde_json::Value| json!({ "optr": optr, "sbjt": "x", "thld": thld });
        assert!(meets(&evc(1, json!(5)), Some(&json!(5.0))));
        assert!(meets(&evc(3, json!(20)), Some(&json!(21))));
        assert!(!meets(&evc(3, json!(20)), Some(&json!(20))));
        assert!(meets(&evc(5, json!(20)), Some(&json!(20))));
        assert!(meets(&evc(4, json!("b")), Some(&json!("a"))));
        assert!(meets(&evc(2, json!("OPEN")), Some(&json!("LOCKED"))));
        assert!(meets(&evc(1, json!(true)), Some(&json!(true))));
        assert!(
            !meets(&evc(3, json!(1)), Some(&json!("2"))),
            "no order across kinds"
        );
        assert!(meets(&evc(2, json!(1)), Some(&json!("1"))), "but unequal");
        assert!(
            !meets(&evc(1, json!(1)), None),
            "an absent attribute meets nothing"
        );
    }
}
