//! `<timeSyncBeacon>` (Release 4, ty 60): the CSE tells entities its time, so that those without a
//! clock of their own, or whose clock drifts, keep theirs in step.
//!
//! - Criteria `bcnc`: 1 periodic, every `bcni` (an xs:duration, 1 s at least; `PT1H` when none is
//!   given); 2 loss of synchronization, when a request of the entity `bcnr` carries an
//!   Originating Timestamp further than `bcnt` from the CSE's clock (1 s at least, 10 s when none
//!   is given; at most one beacon per `bcnt`, one such beacon per entity). `bcnr` is the
//!   originator itself (or any entity, for the admin): another's requests are not watched.
//! - Each originator other than the admin has at most [`MAX_PER_ORIGINATOR`] beacons, each with
//!   at most [`MAX_TARGETS`] targets (a target named twice counts once).
//! - Beacons nobody accepts slow down: after each round that reached no target the next waits
//!   twice as long, up to an hour.
//! - A beacon is a NOTIFY from the CSE to each of `bcnu`, `{"m2m:tsbn": {"tbr": <the beacon's
//!   resourceID>, "ctm": <the CSE's time>}}`; its answer is not waited for by anything.
//! - `bcni` belongs to periodic beacons only, `bcnt` and `bcnr` to loss of synchronization only
//!   (which needs `bcnr`; `bcnr` is not updated): 4000 otherwise.
//! - Targets in `bcnu` other than the originator itself are verified first, as a subscription's
//!   notification targets are (TS-0004 clause 7.5.1.2.2): a CSE does not send beacons to
//!   whoever someone names.
//! - Beacons are armed at creation, re-armed by an UPDATE and at every start, and stop with the
//!   resource.

use super::{Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::notification;
use crate::store::{string_list, Resource, Writer};
use m2m_core::{EntityId, M2mError, M2mResult, Request, ResourceType};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub struct TimeSyncBeacon;

const PERIODIC: u64 = 1;
const LOSS_OF_SYNCHRONIZATION: u64 = 2;
/// beaconInterval when none is given.
const DEFAULT_INTERVAL: &str = "PT1H";
/// beaconThreshold when none is given, in milliseconds (xs:duration as a number).
const DEFAULT_THRESHOLD_MS: u64 = 10_000;
/// The shortest interval, and threshold: a beacon a second is plenty for any clock.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between beacons nobody accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Beacons of one originator (the admin's are not counted).
pub const MAX_PER_ORIGINATOR: usize = 16;
/// Targets of one beacon.
pub const MAX_TARGETS: usize = 8;

impl Behaviour for TimeSyncBeacon {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        Box::pin(async move {
            check(call.cse, attrs)?;
            dedupe_targets(attrs);
            complete_defaults(attrs);
            let admin = call.peer.is_admin(call.cse);
            if let Some(requester) = requester(call.cse, attrs) {
                // Watching another entity's requests would tell its activity to whoever asks.
                if !admin && call.peer.originator.as_ref() != Some(&requester) {
                    return Err(M2mError::new(
                        m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
                        "beaconRequester: beacons are asked for by their requester",
                    ));
                }
                if call.cse.beacons.watches(&requester) {
                    return Err(M2mError::bad_request(
                        "a loss of synchronization beacon is set for this requester already",
                    ));
                }
            }
            let ri = crate::dispatcher::new_ri(ResourceType::TimeSyncBeacon);
            if let Some(owner) = call.peer.originator.as_ref().filter(|_| !admin) {
                call.cse.beacons.reserve(&ri, owner)?;
            }
            if let Err(e) =
                super::subscription::verify(call, &ri, &string_list(attrs.get("bcnu"))).await
            {
                call.cse.beacons.disarm(&ri);
                return Err(e);
            }
            Ok(Prepared {
                ri: Some(ri),
                ..Prepared::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        Box::pin(async move {
            let mut merged = super::merged(res, content);
            // A criterion changed without its own settings falls back to their defaults.
            if content.contains_key("bcnc") {
                for k in ["bcni", "bcnt"] {
                    if !content.contains_key(k) {
                        merged.remove(k);
                    }
                }
            }
            check(call.cse, &merged)?;
            let old = string_list(res.attrs.get("bcnu"));
            let added: Vec<String> = string_list(content.get("bcnu"))
                .into_iter()
                .filter(|t| !old.contains(t))
                .collect();
            super::subscription::verify(call, res.ri(), &added).await
        })
    }

    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        if changed.contains_key("bcnc") {
            for k in ["bcni", "bcnt"] {
                if !changed.contains_key(k) {
                    res.attrs.remove(k);
                }
            }
        }
        dedupe_targets(&mut res.attrs);
        complete_defaults(&mut res.attrs);
        Ok(())
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.beacons.arm(cse, res);
    }

    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        _changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        cse.beacons.arm(cse, res);
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.beacons.disarm(res.ri());
    }
}

/// The rules between the criterion and its settings, on the beacon as it will be.
fn check(cse: &Cse, attrs: &Map<String, Value>) -> M2mResult<()> {
    let bad = |what: &str| Err(M2mError::bad_request(what.to_owned()));
    let criterion = attrs.get("bcnc").and_then(Value::as_u64);
    if attrs.contains_key("bcni") && criterion != Some(PERIODIC) {
        return bad("beaconInterval belongs to periodic beacons");
    }
    if attrs.contains_key("bcnt") && criterion != Some(LOSS_OF_SYNCHRONIZATION) {
        return bad("beaconThreshold belongs to loss of synchronization beacons");
    }
    match (criterion, attrs.get("bcnr")) {
        (Some(PERIODIC), Some(_)) => {
            return bad("beaconRequester belongs to loss of synchronization beacons")
        }
        (Some(LOSS_OF_SYNCHRONIZATION), None) => {
            return bad("a loss of synchronization beacon needs its beaconRequester")
        }
        _ => {}
    }
    if attrs.contains_key("bcnr") && requester(cse, attrs).is_none() {
        return bad("beaconRequester: expected an AE-ID or a CSE-ID");
    }
    if let Some(i) = attrs.get("bcni") {
        if m2m_core::time::parse_duration(i).is_none_or(|d| d < MIN_INTERVAL) {
            return bad("beaconInterval: expected a duration of 1 s at least");
        }
    }
    if let Some(t) = attrs.get("bcnt") {
        if m2m_core::time::parse_duration(t).is_none_or(|d| d < MIN_INTERVAL) {
            return bad("beaconThreshold: expected a duration of 1 s at least");
        }
    }
    let mut targets = string_list(attrs.get("bcnu"));
    targets.sort();
    targets.dedup();
    if targets.len() > MAX_TARGETS {
        return bad("beaconNotificationURIs: at most 8 targets");
    }
    Ok(())
}

/// A target named twice is one target.
fn dedupe_targets(attrs: &mut Map<String, Value>) {
    let mut seen = Vec::new();
    for t in string_list(attrs.get("bcnu")) {
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    if attrs.contains_key("bcnu") {
        attrs.insert("bcnu".into(), json!(seen));
    }
}

fn complete_defaults(attrs: &mut Map<String, Value>) {
    match attrs.get("bcnc").and_then(Value::as_u64) {
        Some(PERIODIC) if !attrs.contains_key("bcni") => {
            attrs.insert("bcni".into(), json!(DEFAULT_INTERVAL));
        }
        Some(LOSS_OF_SYNCHRONIZATION) if !attrs.contains_key("bcnt") => {
            attrs.insert("bcnt".into(), json!(DEFAULT_THRESHOLD_MS));
        }
        _ => {}
    }
}

fn requester(cse: &Cse, attrs: &Map<String, Value>) -> Option<EntityId> {
    let id = attrs.get("bcnr").and_then(Value::as_str)?;
    EntityId::parse(id, &cse.id.home).ok()
}

/// Sends one beacon of `tsb` to each of its targets; whether any accepted it.
async fn send(cse: &Arc<Cse>, tsb: &str, targets: &[String]) -> bool {
    let body = json!({ "m2m:tsbn": { "tbr": tsb, "ctm": cse.now_ts() } });
    let mut accepted = false;
    for target in targets {
        let resp = notification::send_now(cse, target, body.clone()).await;
        if resp.rsc.is_success() {
            accepted = true;
        } else {
            tracing::debug!(tsb, target = %target, rsc = resp.rsc.code(), "beacon not accepted");
        }
    }
    accepted
}

/// A loss of synchronization beacon being watched for, by its requester.
struct Watch {
    tsb: String,
    threshold: Duration,
    targets: Vec<String>,
    last: Option<Instant>,
}

/// The armed beacons: a task per periodic one, and the requesters watched for loss of
/// synchronization.
#[derive(Default)]
pub struct Beacons {
    periodic: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// The creator of each armed beacon, and of each being created (reserved at its check, so
    /// that concurrent creations cannot all pass it; a reservation that never became a beacon
    /// lapses after [`RESERVATION`]), for the per-originator limit.
    owners: Mutex<HashMap<String, Owner>>,
    watched: Mutex<HashMap<EntityId, Watch>>,
    /// How many requesters are watched: a request looks no further when none is.
    watching: AtomicUsize,
}

/// Who created a beacon; `reserved` while its creation is under way.
struct Owner {
    creator: Option<EntityId>,
    reserved: Option<Instant>,
}

/// How long a beacon's creation may take between its limit check and its arming.
const RESERVATION: Duration = Duration::from_secs(60);

impl Beacons {
    /// Counts a beacon of `owner` now being created against its limit; refused when the limit
    /// is reached (in one step, so that concurrent creations cannot all pass).
    fn reserve(&self, ri: &str, owner: &EntityId) -> M2mResult<()> {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.retain(|_, o| o.reserved.is_none_or(|at| at.elapsed() < RESERVATION));
        let held = owners
            .values()
            .filter(|o| o.creator.as_ref() == Some(owner))
            .count();
        if held >= MAX_PER_ORIGINATOR {
            return Err(M2mError::new(
                m2m_core::ResponseStatusCode::NotAcceptable,
                format!("at most {MAX_PER_ORIGINATOR} timeSyncBeacons per originator"),
            ));
        }
        owners.insert(
            ri.to_owned(),
            Owner {
                creator: Some(owner.clone()),
                reserved: Some(Instant::now()),
            },
        );
        Ok(())
    }

    /// Arms every stored beacon (at start: one read of the beacons).
    pub fn load(&self, cse: &Arc<Cse>) -> M2mResult<()> {
        for tsb in cse
            .store
            .read(|r| r.all_of_type(ResourceType::TimeSyncBeacon))?
        {
            self.arm(cse, &tsb);
        }
        Ok(())
    }

    fn watches(&self, requester: &EntityId) -> bool {
        self.lock_watched().contains_key(requester)
    }

    /// (Re-)arms the beacon `tsb` as it now is.
    fn arm(&self, cse: &Arc<Cse>, tsb: &Resource) {
        // The owner entry is replaced in one step, never removed first: a concurrent creation
        // checking the limit in between would find one beacon fewer than there are.
        self.stop(tsb.ri());
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                tsb.ri().to_owned(),
                Owner {
                    // Stored in absolute form: the same EntityId the originator's request names.
                    creator: tsb
                        .creator
                        .as_deref()
                        .and_then(|c| EntityId::parse(c, &cse.id.home).ok()),
                    reserved: None,
                },
            );
        let targets = string_list(tsb.attrs.get("bcnu"));
        match tsb.attrs.get("bcnc").and_then(Value::as_u64) {
            Some(PERIODIC) => {
                let Some(interval) = tsb
                    .attrs
                    .get("bcni")
                    .and_then(m2m_core::time::parse_duration)
                else {
                    return;
                };
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (weak, ri) = (Arc::downgrade(cse), tsb.ri().to_owned());
                let task = runtime.spawn(periodic(weak, ri, interval.max(MIN_INTERVAL), targets));
                self.lock_periodic()
                    .insert(tsb.ri().to_owned(), task.abort_handle());
            }
            Some(LOSS_OF_SYNCHRONIZATION) => {
                let (Some(requester), Some(threshold)) = (
                    requester(cse, &tsb.attrs),
                    tsb.attrs
                        .get("bcnt")
                        .and_then(m2m_core::time::parse_duration),
                ) else {
                    return;
                };
                let watch = Watch {
                    tsb: tsb.ri().to_owned(),
                    threshold,
                    targets,
                    last: None,
                };
                let mut watched = self.lock_watched();
                watched.insert(requester, watch);
                self.watching.store(watched.len(), Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn disarm(&self, ri: &str) {
        self.stop(ri);
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ri);
    }

    /// Stops what the beacon `ri` does (its task, its watch); its owner entry stays.
    fn stop(&self, ri: &str) {
        if let Some(task) = self.lock_periodic().remove(ri) {
            task.abort();
        }
        let mut watched = self.lock_watched();
        watched.retain(|_, w| w.tsb != ri);
        self.watching.store(watched.len(), Ordering::Relaxed);
    }

    /// A request arrived from `who`: if a beacon watches it and the request's Originating
    /// Timestamp is further than the threshold from the CSE's clock, the beacon goes (at most
    /// once per threshold).
    pub fn observe(&self, cse: &Arc<Cse>, req: &Request, who: &EntityId) {
        if self.watching.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(sent_at) = req
            .ot
            .as_deref()
            .and_then(|t| m2m_core::time::parse(t).ok())
        else {
            return;
        };
        let drift = (cse.now() - sent_at)
            .abs()
            .to_std()
            .unwrap_or(Duration::MAX);
        let (tsb, targets) = {
            let mut watched = self.lock_watched();
            let Some(watch) = watched.get_mut(who) else {
                return;
            };
            let recent = watch.last.is_some_and(|l| l.elapsed() < watch.threshold);
            if drift <= watch.threshold || recent {
                return;
            }
            watch.last = Some(Instant::now());
            (watch.tsb.clone(), watch.targets.clone())
        };
        let cse = Arc::clone(cse);
        tokio::spawn(async move {
            // A watch armed by an UPDATE that raced the beacon's DELETE ends here.
            if matches!(cse.store.get(&tsb), Ok(None)) {
                cse.beacons.disarm(&tsb);
                return;
            }
            send(&cse, &tsb, &targets).await;
        });
    }

    fn lock_periodic(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.periodic.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_watched(&self) -> std::sync::MutexGuard<'_, HashMap<EntityId, Watch>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task of a periodic beacon: the first beacon one interval after arming, then every
/// interval, while the CSE and the resource live; rounds that reach nobody double the wait.
async fn periodic(cse: Weak<Cse>, tsb: String, interval: Duration, targets: Vec<String>) {
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        let Some(cse) = cse.upgrade() else {
            return;
        };
        // Armed by an UPDATE that raced the beacon's DELETE: nothing to send for.
        if matches!(cse.store.get(&tsb), Ok(None)) {
            cse.beacons.disarm(&tsb);
            return;
        }
        wait = if send(&cse, &tsb, &targets).await {
            interval
        } else {
            (wait * 2).min(MAX_BACKOFF.max(interval))
        };
    }
}
