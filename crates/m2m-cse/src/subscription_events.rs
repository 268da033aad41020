//! Subscription events (TS-0004 clauses 7.5.1.2.2 to 7.5.1.2.4; TS-0001 clause 10.2.10.7):
//! which subscriptions an event triggers, the `m2m:sgn` they carry, and the notification
//! policies (batchNotify, latestNotify, notificationEventCat, notificationStatsEnable,
//! expirationCounter, rateLimit, pendingNotification, operationMonitor, blocking update). What
//! they send goes to the notification layer below (`notification`), which delivers it.

use crate::cse::{representation, Cse};
use crate::notification::{send_now, Outgoing};
use crate::store::Resource;
use m2m_core::{M2mError, M2mResult, Operation, ResourceType, ResponseStatusCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// notificationEventType (TS-0004 table 6.3.4.2.20-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Update = 1,
    Delete = 2,
    CreateChild = 3,
    DeleteChild = 4,
}

/// The state of the notification policies: batches, blocked UPDATEs, monitored resources, rate
/// windows and missed events.
#[derive(Default)]
pub struct Notifier {
    /// Notifications held for a batch, by (subscription resourceID, target).
    batches: Mutex<HashMap<(String, String), Batch>>,
    /// One UPDATE at a time on a resource with a blocking-update subscription, by resourceID.
    blocked: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The resources with an operationMonitor subscription, so that other requests pay a set
    /// lookup only.
    monitored: std::sync::RwLock<std::collections::HashSet<String>>,
    /// The same for blocking-update subscriptions: an UPDATE elsewhere reads no subscriptions
    /// before it is carried out.
    blocking: std::sync::RwLock<std::collections::HashSet<String>>,
    /// rateLimit windows, by subscription resourceID.
    rates: Mutex<HashMap<String, RateWindow>>,
    /// Events held by all rateLimit windows, and the number of the next flush task.
    rates_held: std::sync::atomic::AtomicUsize,
    next_flusher: std::sync::atomic::AtomicU64,
    /// pendingNotification: events missed outside the notification schedule, by subscription
    /// resourceID, waiting for the schedule to allow them.
    missed: Mutex<HashMap<String, std::collections::VecDeque<Value>>>,
}

/// pendingNotification values (TS-0001 table 9.6.8-2).
const SEND_LATEST: u64 = 1;
const SEND_ALL_PENDING: u64 = 2;
/// The most missed events one subscription keeps for sendAllPending; beyond, the oldest go.
const MAX_MISSED: usize = 1_000;

/// The current rateLimit window of a subscription (TS-0001 clause 10.2.10.x: sequential windows
/// of `tww`, at most `mnn` notification events in each; the others wait for the next).
struct RateWindow {
    start: std::time::Instant,
    sent: u64,
    held: std::collections::VecDeque<Value>,
    /// The task that sends the held events at the windows' ends, if one runs: only the task
    /// of this number goes on (an older one, from before a race, stops).
    flusher: Option<u64>,
}

/// The most notification events a rate-limited subscription holds for later windows; beyond,
/// the oldest go (logged).
const MAX_RATE_HELD: usize = 1_000;
/// The most held by all of them together; beyond, new events are dropped (logged).
const MAX_RATE_HELD_TOTAL: usize = 20_000;

/// A subscription's rateLimit, (`mnn`, `tww`).
fn rate_limit(sub: &Resource) -> Option<(u64, std::time::Duration)> {
    let rl = sub.attrs.get("rl")?;
    let mnn = rl.get("mnn").and_then(Value::as_u64)?;
    let tww = rl.get("tww").and_then(m2m_core::time::parse_duration)?;
    (!tww.is_zero()).then_some((mnn, tww))
}

/// The notifications of one subscription for one target waiting for their batch (TS-0001
/// clause 10.2.10.7): sent when `num` are held or when the duration since the first ran out.
struct Batch {
    items: Vec<Value>,
    timer: Option<tokio::task::AbortHandle>,
    policy: Policy,
}

/// A subscription's policies for what it sends, read when the event happened.
#[derive(Clone)]
struct Policy {
    sub_ri: String,
    latest: bool,
    ec: Option<String>,
    stats: bool,
}

impl Policy {
    fn of(sub: &Resource) -> Self {
        let latest = sub.attrs.get("ln") == Some(&Value::Bool(true));
        Policy {
            sub_ri: sub.ri().to_owned(),
            latest,
            // m2m:stdEventCats: 4 is "latest" (TS-0004 clause 7.5.1.2.2, step 2.3).
            ec: if latest {
                Some("4".to_owned())
            } else {
                sub.u64_attr("nec").map(|n| n.to_string())
            },
            stats: sub.attrs.get("nse") == Some(&Value::Bool(true)),
        }
    }

    fn outgoing(&self, body: Value, events: u64) -> Outgoing {
        Outgoing::new(body, self.ec.clone())
            .counted(self.stats.then(|| (self.sub_ri.clone(), events)))
    }
}

impl Notifier {
    fn batches(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Batch>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Triggers the subscriptions of `subject` for an event that concerns `res`, caused by a request
/// of `originator` (None: the CSE itself, e.g. expiry).
pub fn on_event(
    cse: &Arc<Cse>,
    subject: &Resource,
    event: Event,
    res: &Resource,
    modified: Option<&Map<String, Value>>,
    originator: Option<&str>,
) {
    let subs = match cse
        .store
        .read(|r| r.children(subject.ri(), Some(ResourceType::Subscription)))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(dbg = %e.dbg, "cannot read subscriptions");
            return;
        }
    };
    // One decision per subscription creator (the event's resource is the same for all). A
    // child its subject governs (an instance) is decided on the subject in hand, not on a copy
    // read back from the store.
    let mut decided = HashMap::new();
    let judged = if !crate::access::governed_by_itself(res) && res.pi() == subject.ri() {
        subject
    } else {
        res
    };
    for sub in subs {
        // A subscription is not told about its own creation.
        if sub.ri() == res.ri()
            || !wants(&sub, event, res, modified)
            || !may_see(cse, &sub, judged, &mut decided)
        {
            continue;
        }
        let rep = match sub.u64_attr("nct").unwrap_or(1) {
            2 => match modified {
                Some(m) => m2m_core::serialization::rooted(res.root_name(), m.clone()),
                None => representation(res),
            },
            3 => json!({ "m2m:uri": cse.sp_relative(res.ri()) }),
            _ => representation(res),
        };
        let mut nev = Map::with_capacity(2);
        nev.insert("rep".into(), rep);
        nev.insert("net".into(), json!(event as u8));
        let mut sgn = Map::with_capacity(3);
        sgn.insert("nev".into(), Value::Object(nev));
        sgn.insert("sur".into(), json!(cse.sp_relative(sub.ri())));
        let mut sgn = Value::Object(sgn);
        // The creator; without one, with eeno, the originator of the event (Release 4).
        let eeno = sub.attrs.get("eeno") == Some(&Value::Bool(true));
        if let Some(cr) = sub
            .str_attr("cr")
            .or(originator.filter(|o| eeno && !o.is_empty()))
        {
            sgn["cr"] = json!(cr);
        }
        notify_targets(cse, &sub, sgn);
        count_down(cse, &sub);
    }
}

/// Whether the subscription's creator may read `res` now: a notification shows nothing its
/// subscriber could not RETRIEVE (a child with policies of its own or made by someone else, a
/// subject whose policies changed since the subscription was made). TS-0004 clause 7.5.1.2.2
/// does not say; RETRIEVE is what the subscription needed (TS-0001 clause 10.2.10.2).
/// `decided` keeps the answer per creator for one `res` (one event): subscriptions of one
/// creator decide once.
fn may_see(cse: &Cse, sub: &Resource, res: &Resource, decided: &mut HashMap<String, bool>) -> bool {
    let Some(creator) = sub.creator.as_deref() else {
        return true;
    };
    if let Some(d) = decided.get(creator) {
        return *d;
    }
    let op = m2m_security::access_control::AccessOperation::Retrieve;
    let d = sub.creator_entity(&cse.id.home).is_some_and(|who| {
        crate::access::permits_entity(cse, &who, op, res).unwrap_or_else(|e| {
            tracing::warn!(dbg = %e.dbg, "cannot decide who may see a notification");
            false
        })
    });
    decided.insert(creator.to_owned(), d);
    d
}

/// preSubscriptionNotify (`psn`, TS-0001 table 9.6.8-2): the events of before the subscription
/// that the CSE still holds, up to `psn` of them, oldest first: the instances of a container or
/// timeSeries, as the creation events they were, for a subscription to child creations. Other
/// events are not retained, so there are none to send.
pub(crate) fn pre_subscription_notify(cse: &Arc<Cse>, sub: &Resource) {
    let Some(n) = sub.u64_attr("psn").filter(|n| *n > 0) else {
        return;
    };
    let Ok(Some(parent)) = cse.store.get(sub.pi()) else {
        return;
    };
    let Some(ty) = parent.ty.instance_type() else {
        return;
    };
    // What a RETRIEVE would not show is not sent either: instances hidden by disableRetrieval,
    // instances read a limited number of times (deletionCnt).
    if crate::resources::container::retrieval_disabled(&parent) {
        return;
    }
    // At most what a batch holds: the rest of a long history is not "the events just before".
    let n = n.min(MAX_BATCH);
    let Ok(mut earlier) = cse.store.read(|r| r.latest_children(parent.ri(), ty, n)) else {
        return;
    };
    earlier.reverse();
    for res in earlier {
        if crate::resources::content_instance::counts_retrievals(&res)
            || !wants(sub, Event::CreateChild, &res, None)
        {
            continue;
        }
        let rep = match sub.u64_attr("nct").unwrap_or(1) {
            3 => json!({ "m2m:uri": cse.sp_relative(res.ri()) }),
            _ => representation(&res),
        };
        let mut sgn = json!({ "nev": { "rep": rep, "net": Event::CreateChild as u8 }, "sur": cse.sp_relative(sub.ri()) });
        if let Some(cr) = sub.str_attr("cr") {
            sgn["cr"] = json!(cr);
        }
        notify_targets(cse, sub, sgn);
    }
}

/// Whether a subscription's eventNotificationCriteria select the event (TS-0004 clause 7.5.1.2.2):
/// its notificationEventType (default: update only), and for an update the attributes (`atr`)
/// of which one must have changed, for a child created or deleted the child resource types
/// (`chty`) it must be of; then the conditions on the resource the event concerns (TS-0001
/// table 9.6.8-3: creation, modification and expiration times, stateTag, contentSize; the
/// subscribed-to resource for an update or deletion, the child for a child's), combined by `fo`.
fn wants(
    sub: &Resource,
    event: Event,
    res: &Resource,
    modified: Option<&Map<String, Value>>,
) -> bool {
    let enc = sub.attrs.get("enc");
    let list = |k: &str| enc.and_then(|e| e.get(k)).and_then(Value::as_array);
    let net_ok = match list("net") {
        Some(nets) => nets.iter().any(|n| n.as_u64() == Some(event as u64)),
        // Update_of_Resource is the default only without an operationMonitor (TS-0001 table
        // 9.6.8-2): a monitoring subscription notifies its operations, not every update.
        None => event == Event::Update && list("om").is_none(),
    };
    if !net_ok {
        return false;
    }
    let selected = match event {
        Event::Update => list("atr").is_none_or(|atr| {
            modified.is_some_and(|m| {
                atr.iter()
                    .filter_map(Value::as_str)
                    .any(|a| m.contains_key(a))
            })
        }),
        Event::CreateChild | Event::DeleteChild => list("chty").is_none_or(|chty| {
            chty.iter()
                .any(|t| t.as_u64() == Some(u64::from(res.ty.code())))
        }),
        Event::Delete => true,
    };
    selected && enc.is_none_or(|e| conditions_hold(e, res))
}

/// The eventNotificationCriteria conditions that test the resource, with their filterOperation:
/// read as the Filter Criteria of the same names (TS-0004 clause 7.3.3.17), which they are.
const RESOURCE_CONDITIONS: [&str; 10] = [
    "crb", "cra", "ms", "us", "sts", "stb", "exb", "exa", "sza", "szb",
];

fn conditions_hold(enc: &Value, res: &Resource) -> bool {
    let Some(enc) = enc.as_object() else {
        return true;
    };
    if !RESOURCE_CONDITIONS.iter().any(|k| enc.contains_key(*k)) {
        return true;
    }
    let mut fc = m2m_core::FilterCriteria::default();
    for k in RESOURCE_CONDITIONS.iter().chain(&["fo"]) {
        let text = match enc.get(*k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        // Checked at creation; a value that no longer reads selects nothing.
        if fc.take_query_field(k, &text, |_| false).is_err() {
            return false;
        }
    }
    fc.matches(&res.attrs)
}

/// A notification of `sub` raised outside the resource events (missing data points): to its
/// targets under its policies, counted against its expirationCounter.
pub(crate) fn notify_subscription(cse: &Arc<Cse>, sub: &Resource, sgn: Value) {
    notify_targets(cse, sub, sgn);
    count_down(cse, sub);
}

/// A subscription's notification to each of its targets, under its policies: held for a batch
/// (batchNotify), or queued now.
/// m2m:eventCat immediate (TS-0004 table 6.3.3-1).
const IMMEDIATE: u64 = 2;

fn notify_targets(cse: &Arc<Cse>, sub: &Resource, sgn: Value) {
    // Outside its notification schedule the event is not notified, unless its category is
    // immediate (TS-0004 clause 7.5.1.2.2).
    let immediate = sub.u64_attr("nec") == Some(IMMEDIATE);
    if !immediate && !cse.schedules.allows(cse, sub) {
        if !keep_missed(cse, sub, sgn) {
            tracing::debug!(
                sub = sub.ri(),
                "notification outside the subscription's schedule, discarded"
            );
        }
        return;
    }
    if let Some((mnn, tww)) = rate_limit(sub) {
        if !admit(cse, sub, &sgn, mnn, tww) {
            return;
        }
    }
    send_event(cse, sub, sgn);
}

/// pendingNotification (TS-0001 table 9.6.8-2): an event missed outside the notification
/// schedule is kept (sendLatest: the last one; sendAllPending: all, at most [`MAX_MISSED`]) and
/// sent once the schedule allows, the sendLatest one with Event Category "latest". Whether it
/// was kept.
fn keep_missed(cse: &Arc<Cse>, sub: &Resource, sgn: Value) -> bool {
    let pn = sub.u64_attr("pn");
    if !matches!(pn, Some(SEND_LATEST | SEND_ALL_PENDING)) {
        return false;
    }
    let mut missed = cse
        .notifier
        .missed
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let first = !missed.contains_key(sub.ri());
    let kept = missed.entry(sub.ri().to_owned()).or_default();
    if pn == Some(SEND_LATEST) {
        kept.clear();
    } else if kept.len() >= MAX_MISSED {
        kept.pop_front();
    }
    kept.push_back(sgn);
    if first {
        tokio::spawn(send_missed_when_allowed(
            Arc::clone(cse),
            sub.ri().to_owned(),
        ));
    }
    true
}

/// Waits (looking every second) until a subscription's schedule allows, then sends what it
/// missed; ends with the subscription, or when it no longer asks for its missed events.
async fn send_missed_when_allowed(cse: Arc<Cse>, ri: String) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let sub = match cse.store.get(&ri) {
            Ok(Some(sub)) if sub.attrs.contains_key("pn") => sub,
            _ => {
                cse.notifier
                    .missed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ri);
                return;
            }
        };
        if !cse.schedules.allows(&cse, &sub) {
            continue;
        }
        let kept = cse
            .notifier
            .missed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ri)
            .unwrap_or_default();
        let latest = sub.u64_attr("pn") == Some(SEND_LATEST);
        let mut policy = Policy::of(&sub);
        if latest {
            // m2m:stdEventCats 4, "latest" (TS-0001 table 9.6.8-2, pendingNotification).
            policy.ec = Some("4".to_owned());
        }
        for sgn in kept {
            for nu in targets(&sub) {
                cse.delivery.enqueue(
                    nu,
                    policy.outgoing(m2m_core::serialization::rooted("m2m:sgn", sgn.clone()), 1),
                );
            }
        }
        return;
    }
}

/// rateLimit: whether the event goes now (counted in the window); if not, it is held for the
/// next windows, which a task opens as each one ends.
fn admit(cse: &Arc<Cse>, sub: &Resource, sgn: &Value, mnn: u64, tww: std::time::Duration) -> bool {
    let now = std::time::Instant::now();
    let mut rates = cse.notifier.rates.lock().unwrap_or_else(|e| e.into_inner());
    let w = rates
        .entry(sub.ri().to_owned())
        .or_insert_with(|| RateWindow {
            start: now,
            sent: 0,
            held: Default::default(),
            flusher: None,
        });
    if now.duration_since(w.start) >= tww && w.flusher.is_none() {
        w.start = now;
        w.sent = 0;
    }
    if w.sent < mnn && w.held.is_empty() {
        w.sent += 1;
        return true;
    }
    let held = &cse.notifier.rates_held;
    if w.held.len() >= MAX_RATE_HELD {
        w.held.pop_front();
        held.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(
            sub = sub.ri(),
            "rateLimit: the oldest held notification dropped"
        );
    }
    if held.load(Ordering::Relaxed) >= MAX_RATE_HELD_TOTAL {
        tracing::warn!(
            sub = sub.ri(),
            "rateLimit: the CSE holds all it may, notification dropped"
        );
        return false;
    }
    w.held.push_back(sgn.clone());
    held.fetch_add(1, Ordering::Relaxed);
    if w.flusher.is_none() {
        let id = cse.notifier.next_flusher.fetch_add(1, Ordering::Relaxed);
        w.flusher = Some(id);
        let (cse, ri, end) = (Arc::clone(cse), sub.ri().to_owned(), w.start + tww);
        tokio::spawn(flush_rate_windows(cse, ri, end, id));
    }
    false
}

/// Forgets a subscription's rateLimit window and what it held.
fn forget_rate_window(cse: &Cse, ri: &str) {
    let gone = cse
        .notifier
        .rates
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(ri);
    if let Some(w) = gone {
        cse.notifier
            .rates_held
            .fetch_sub(w.held.len(), Ordering::Relaxed);
    }
}

/// Sends what a rate-limited subscription held, `mnn` at each window's start, until nothing is
/// held (or the subscription is gone).
async fn flush_rate_windows(cse: Arc<Cse>, ri: String, mut end: std::time::Instant, id: u64) {
    loop {
        tokio::time::sleep_until(end.into()).await;
        // The subscription as it is now: gone, or its rateLimit removed or changed by an
        // UPDATE, its window follows.
        let sub = match cse.store.get(&ri) {
            Ok(Some(sub)) => sub,
            _ => {
                forget_rate_window(&cse, &ri);
                return;
            }
        };
        let Some((mnn, tww)) = rate_limit(&sub) else {
            let held: Vec<Value> = {
                let mut rates = cse.notifier.rates.lock().unwrap_or_else(|e| e.into_inner());
                rates
                    .remove(&ri)
                    .map(|w| w.held.into_iter().collect())
                    .unwrap_or_default()
            };
            cse.notifier
                .rates_held
                .fetch_sub(held.len(), Ordering::Relaxed);
            for sgn in held {
                send_event(&cse, &sub, sgn);
            }
            return;
        };
        let (batch, more) = {
            let mut rates = cse.notifier.rates.lock().unwrap_or_else(|e| e.into_inner());
            let Some(w) = rates.get_mut(&ri).filter(|w| w.flusher == Some(id)) else {
                return;
            };
            w.start = std::time::Instant::now();
            let n = (mnn as usize).min(w.held.len());
            w.sent = n as u64;
            let batch: Vec<Value> = w.held.drain(..n).collect();
            let more = !w.held.is_empty();
            if !more {
                w.flusher = None;
            }
            end = w.start + tww;
            (batch, more)
        };
        cse.notifier
            .rates_held
            .fetch_sub(batch.len(), Ordering::Relaxed);
        for sgn in batch {
            send_event(&cse, &sub, sgn);
        }
        if !more {
            return;
        }
    }
}

/// A subscription's notification event to each target, by its batch policy.
fn send_event(cse: &Arc<Cse>, sub: &Resource, sgn: Value) {
    let policy = Policy::of(sub);
    let batch = sub.attrs.get("bn").filter(|b| b.is_object());
    for nu in targets(sub) {
        match batch {
            Some(bn) => hold(cse, &policy, bn, nu, sgn.clone()),
            None => cse.delivery.enqueue(
                nu,
                policy.outgoing(m2m_core::serialization::rooted("m2m:sgn", sgn.clone()), 1),
            ),
        }
    }
}

fn targets(sub: &Resource) -> impl Iterator<Item = &str> {
    sub.attrs
        .get("nu")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// batchNotify: holds `sgn` for `nu`; sends the batch when it holds `num`, or starts the timer
/// of `dur` with its first notification.
fn hold(cse: &Arc<Cse>, policy: &Policy, bn: &Value, nu: &str, sgn: Value) {
    // Held in memory: at most MAX_BATCH, whatever number the subscriber asked for.
    let num = bn
        .get("num")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .map_or(MAX_BATCH, |n| n.min(MAX_BATCH));
    let dur = bn
        .get("dur")
        .and_then(m2m_core::time::parse_duration)
        .unwrap_or(DEFAULT_BATCH_DURATION);
    let key = (policy.sub_ri.clone(), nu.to_owned());
    let full = {
        let mut batches = cse.notifier.batches();
        let batch = batches.entry(key.clone()).or_insert_with(|| Batch {
            items: Vec::new(),
            timer: None,
            policy: policy.clone(),
        });
        batch.items.push(sgn);
        if batch.items.len() as u64 >= num {
            batches.remove(&key)
        } else {
            if batch.timer.is_none() {
                let cse2 = Arc::clone(cse);
                let key2 = key.clone();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(dur).await;
                    let due = cse2.notifier.batches().remove(&key2);
                    if let Some(due) = due {
                        send_batch(&cse2, &key2.1, due);
                    }
                });
                batch.timer = Some(timer.abort_handle());
            }
            None
        }
    };
    if let Some(full) = full {
        send_batch(cse, nu, full);
    }
}

/// The most notifications a batch holds before it is sent, whatever its number.
const MAX_BATCH: u64 = 1_000;

/// The batch duration when the stored value cannot be read (it always can: the subscription
/// sets `subscription::DEFAULT_BATCH_DURATION`).
const DEFAULT_BATCH_DURATION: std::time::Duration =
    std::time::Duration::from_millis(crate::resources::subscription::DEFAULT_BATCH_DURATION);

/// Sends a batch as one aggregated notification (`m2m:agn`); with latestNotify, only its newest.
fn send_batch(cse: &Arc<Cse>, nu: &str, batch: Batch) {
    if let Some(timer) = &batch.timer {
        timer.abort();
    }
    let events = batch.items.len() as u64;
    let mut items = batch.items;
    if batch.policy.latest {
        items = items.split_off(items.len().saturating_sub(1));
    }
    if items.is_empty() {
        return;
    }
    let body = m2m_core::serialization::rooted(
        "m2m:agn",
        m2m_core::serialization::rooted("m2m:sgn", items),
    );
    cse.delivery
        .enqueue(nu, batch.policy.outgoing(body, events));
}

/// Notes a subscription's resource as operation-monitored when its criteria hold an
/// operationMonitor.
pub fn watch_operations(cse: &Cse, sub: &Resource) {
    if sub.attrs.get("enc").and_then(|e| e.get("om")).is_some() {
        cse.notifier
            .monitored
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sub.pi().to_owned());
    }
    if crate::resources::subscription::is_blocking(&sub.attrs) {
        cse.notifier
            .blocking
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sub.pi().to_owned());
    }
}

/// A subscription of `ri` went (or `ri` itself): `ri` stays watched only for the subscriptions
/// it still has. Forgotten first, then read again: a subscription created meanwhile watches
/// itself or is read.
fn unwatch(cse: &Cse, ri: &str) {
    for set in [&cse.notifier.monitored, &cse.notifier.blocking] {
        set.write().unwrap_or_else(|e| e.into_inner()).remove(ri);
    }
    let remaining = cse
        .store
        .read(|r| r.children(ri, Some(ResourceType::Subscription)))
        .unwrap_or_default();
    for sub in &remaining {
        watch_operations(cse, sub);
    }
    let still_blocking = cse
        .notifier
        .blocking
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(ri);
    if !still_blocking {
        cse.notifier
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ri);
    }
}

/// Whether a resource may have a blocking-update subscription.
fn may_block(cse: &Cse, ri: &str) -> bool {
    cse.notifier
        .blocking
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(ri)
}

/// Whether a resource may have an operationMonitor subscription.
pub fn is_monitored(cse: &Cse, ri: &str) -> bool {
    cse.notifier
        .monitored
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains(ri)
}

/// Every operation-monitored or update-blocking resource of the store (at start: one read of
/// the subscriptions).
pub fn load_monitored(cse: &Cse) -> M2mResult<()> {
    for sub in cse
        .store
        .read(|r| r.all_of_type(ResourceType::Subscription))?
    {
        watch_operations(cse, &sub);
    }
    Ok(())
}

/// operationMonitor (TS-0004 clause 6.3.5.57, table 6.3.5.29-1): after an operation on `ri` by
/// `originator`, each subscription of `ri` whose monitor matches it (its operations, as access
/// control operation bits, and its originator; an absent one matches any) notifies
/// `nev.om {op, or}`.
pub fn on_operation(cse: &Arc<Cse>, ri: &str, op: Operation, discovery: bool, originator: &str) {
    let subs = match cse
        .store
        .read(|r| r.children(ri, Some(ResourceType::Subscription)))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(dbg = %e.dbg, "cannot read subscriptions");
            return;
        }
    };
    let bit: u64 = match (op, discovery) {
        (Operation::Create, _) => 1,
        (Operation::Retrieve, false) => 2,
        (Operation::Update, _) => 4,
        (Operation::Delete, _) => 8,
        (Operation::Notify, _) => 16,
        (Operation::Retrieve, true) => 32,
    };
    let home = &cse.id.home;
    let who = m2m_core::EntityId::parse(originator, home).ok();
    let mut subject: Option<Option<Resource>> = None;
    let mut decided = HashMap::new();
    for sub in subs {
        let monitors = sub
            .attrs
            .get("enc")
            .and_then(|e| e.get("om"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let matches = monitors.iter().any(|m| {
            let ops_ok = m
                .get("ops")
                .and_then(Value::as_u64)
                .is_none_or(|ops| ops & bit != 0);
            // `org` (TS-0004 table 8.2.3), or `or` as this CSE read it before.
            let named = m.get("org").or_else(|| m.get("or"));
            let or_ok = named.and_then(Value::as_str).is_none_or(|or| {
                or == originator
                    || m2m_core::EntityId::parse(or, home)
                        .ok()
                        .zip(who.clone())
                        .is_some_and(|(a, b)| a == b)
            });
            ops_ok && or_ok
        });
        // Who did what to the subject is for a subscriber that may still read it (the subject
        // read once, one decision per creator).
        let mut visible = || {
            let subject = subject.get_or_insert_with(|| cse.store.get(ri).ok().flatten());
            subject
                .as_ref()
                .is_some_and(|s| may_see(cse, &sub, s, &mut decided))
        };
        if matches && visible() {
            let sgn = json!({
                "nev": { "om": { "op": op as u8, "org": originator } },
                "sur": cse.sp_relative(sub.ri()),
            });
            notify_subscription(cse, &sub, sgn);
        }
    }
}

/// Blocking update (TS-0004 clauses 7.5.1.2.19 and 7.3.2.9): before an UPDATE of `res` changes
/// it, each blocking subscription whose attributes it touches notifies its target with the
/// update's content and waits for the answer; a refusal refuses the UPDATE. The guard returned
/// keeps other UPDATEs of the resource waiting until this one is done.
pub async fn blocking_update(
    cse: &Arc<Cse>,
    res: &Resource,
    content: &Map<String, Value>,
) -> M2mResult<Option<tokio::sync::OwnedMutexGuard<()>>> {
    if !may_block(cse, res.ri()) {
        return Ok(None);
    }
    let subs: Vec<Resource> = cse
        .store
        .read(|r| r.children(res.ri(), Some(ResourceType::Subscription)))?
        .into_iter()
        .filter(|s| crate::resources::subscription::is_blocking(&s.attrs))
        .collect();
    if subs.is_empty() {
        return Ok(None);
    }
    let lock = {
        let mut blocked = cse
            .notifier
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(blocked.entry(res.ri().to_owned()).or_default())
    };
    let guard = lock.lock_owned().await;
    for sub in subs {
        if !touches(&sub, content) {
            continue;
        }
        let Some(nu) = targets(&sub).next() else {
            continue;
        };
        // A target that no longer holds UPDATE here decides nothing, and is shown nothing.
        let may_update = crate::resources::subscription::blocking_target_may_update(cse, nu, res);
        if !matches!(may_update, Ok(Some(true))) {
            tracing::info!(target: "audit", sub = %sub.ri(), "blocking subscription skipped: its target may no longer update the resource");
            continue;
        }
        let mut sgn = json!({
            "nev": { "rep": { res.root_name(): content }, "net": crate::resources::subscription::BLOCKING_UPDATE },
            "sur": cse.sp_relative(sub.ri()),
        });
        if let Some(cr) = sub.str_attr("cr") {
            sgn["cr"] = json!(cr);
        }
        let resp = send_now(cse, nu, m2m_core::serialization::rooted("m2m:sgn", sgn)).await;
        match resp.rsc {
            rsc if rsc.is_success() => {}
            ResponseStatusCode::TargetNotReachable => {
                return Err(M2mError::new(
                    ResponseStatusCode::RemoteEntityNotReachable,
                    "the blocking subscription's target could not be reached",
                ))
            }
            ResponseStatusCode::OperationNotAllowed => {
                return Err(M2mError::new(
                    ResponseStatusCode::OperationDeniedByRemoteEntity,
                    "the blocking subscription's target refused the update",
                ))
            }
            other => {
                return Err(M2mError::new(
                    other,
                    "the blocking subscription's target did not accept the update",
                ))
            }
        }
    }
    Ok(Some(guard))
}

/// Whether an UPDATE's content touches the attributes a blocking subscription watches (all of
/// them without `atr`).
fn touches(sub: &Resource, content: &Map<String, Value>) -> bool {
    match sub
        .attrs
        .get("enc")
        .and_then(|e| e.get("atr"))
        .and_then(Value::as_array)
    {
        Some(atr) => atr
            .iter()
            .filter_map(Value::as_str)
            .any(|a| content.contains_key(a)),
        None => true,
    }
}

/// A subscription ends (deleted, expired, counted down): what its batches hold goes out first
/// (TS-0004 clause 7.4.8.2.4).
pub fn batches_end(cse: &Arc<Cse>, sub: &Resource) {
    let ending: Vec<((String, String), Batch)> = {
        let mut batches = cse.notifier.batches();
        let keys: Vec<(String, String)> = batches
            .keys()
            .filter(|(ri, _)| ri == sub.ri())
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| batches.remove(&k).map(|b| (k, b)))
            .collect()
    };
    for ((_, nu), batch) in ending {
        send_batch(cse, &nu, batch);
    }
}

/// expirationCounter: each notification counts down; at zero the subscription is deleted.
fn count_down(cse: &Arc<Cse>, sub: &Resource) {
    let Some(exc) = sub.u64_attr("exc") else {
        return;
    };
    let cse = Arc::clone(cse);
    let sub = sub.clone();
    tokio::spawn(async move {
        let r = if exc <= 1 {
            crate::dispatcher::delete_resource(&cse, &sub, None).await
        } else {
            let ri = sub.ri().to_owned();
            cse.store
                .write(move |w| match w.get(&ri)? {
                    Some(mut cur) => {
                        cur.attrs.insert("exc".into(), json!(exc - 1));
                        w.update(&cur)
                    }
                    None => Ok(()),
                })
                .await
        };
        if let Err(e) = r {
            tracing::warn!(dbg = %e.dbg, "cannot count down subscription");
        }
    });
}

/// After a deletion: subscriptions on the deleted resource report it (net 2), and every deleted
/// subscription tells its subscriber (subscriptionDeletion to `su`). Returns what tells when the
/// deletion notifications went out, for a DELETE that answers after them.
pub fn on_deleted(
    cse: &Arc<Cse>,
    res: &Resource,
    deleted: &[Resource],
) -> Vec<tokio::sync::oneshot::Receiver<()>> {
    let mut sent = Vec::new();
    for sub in deleted
        .iter()
        .filter(|d| d.ty == ResourceType::Subscription)
    {
        let sur = cse.sp_relative(sub.ri());
        if sub.pi() == res.ri() && wants(sub, Event::Delete, res, None) {
            let rep = match sub.u64_attr("nct").unwrap_or(1) {
                3 => json!({ "m2m:uri": cse.sp_relative(res.ri()) }),
                _ => representation(res),
            };
            let mut sgn = json!({ "nev": { "rep": rep, "net": Event::Delete as u8 }, "sur": sur });
            if let Some(cr) = sub.str_attr("cr") {
                sgn["cr"] = json!(cr);
            }
            // The last notice of a subscription is not held for a window it will not see.
            send_event(cse, sub, sgn);
        }
        batches_end(cse, sub);
        forget_rate_window(cse, sub.ri());
        cse.notifier
            .missed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sub.ri());
        cse.time_series.reset_window(sub.ri());
        if is_monitored(cse, sub.pi()) || may_block(cse, sub.pi()) {
            unwatch(cse, sub.pi());
        }
        // The subscriber, and each <crossResourceSubscription> it serves (TS-0004 clause
        // 7.4.8.2.4), learn that it is gone. Only an entry that is also a notificationURI, as
        // every CREATE and UPDATE makes them: one stored before that rule was never verified.
        let nus = crate::store::string_list(sub.attrs.get("nu"));
        let told = sub.str_attr("su").into_iter().map(str::to_owned).chain(
            crate::store::string_list(sub.attrs.get("acrs"))
                .into_iter()
                .filter(|a| crate::resources::subscription::still_named(cse, a, &nus)),
        );
        for target in told {
            sent.extend(subscription_gone(cse, sub, &target));
        }
    }
    // A deleted <crossResourceSubscription> tells its subscriber too (TS-0004 clause
    // 7.5.1.2.20), before the DELETE is answered like a subscription's.
    for crs in deleted
        .iter()
        .filter(|d| d.ty == ResourceType::CrossResourceSubscription)
    {
        if let Some(su) = crs.str_attr("su") {
            sent.extend(subscription_gone(cse, crs, su));
        }
    }
    sent
}

/// Tells `target` that `sub` is gone for it: a subscription deletion notification (TS-0004
/// clause 7.5.1.2.4), with the creator when the subscription has one. The receiver is told
/// when that is done (the notice sent, or a local crossResourceSubscription deleted).
pub(crate) fn subscription_gone(
    cse: &Arc<Cse>,
    sub: &Resource,
    target: &str,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    // A <crossResourceSubscription> of this CSE goes at once: the notification would name a
    // subscription that can no longer be looked up.
    if let Some(crs) = crate::resolve::local_resource(cse, target).filter(|r| {
        r.ty == ResourceType::CrossResourceSubscription
            && crate::resources::cross_resource_subscription::relies_on(cse, r, sub)
    }) {
        // Told when done: the DELETE that ended the subscription answers after it, with the
        // crossResourceSubscription and its other subscriptions gone.
        let (done, deleted) = tokio::sync::oneshot::channel();
        let cse = Arc::clone(cse);
        tokio::spawn(async move {
            // Its own subscriber told too before this is done (bounded), as for a DELETE.
            if let Err(e) = crate::dispatcher::delete_and_tell(&cse, &crs, None, true, false).await
            {
                tracing::debug!(dbg = %e.dbg, "crossResourceSubscription already gone");
            }
            let _ = done.send(());
        });
        return Some(deleted);
    }
    let mut sgn = json!({ "sud": true, "sur": cse.sp_relative(sub.ri()) });
    if let Some(cr) = sub.str_attr("cr") {
        sgn["cr"] = json!(cr);
    }
    let (done, sent) = tokio::sync::oneshot::channel();
    cse.delivery.enqueue(
        target,
        Outgoing::new(m2m_core::serialization::rooted("m2m:sgn", sgn), None).when_done(done),
    );
    Some(sent)
}
