//! Notifications (TS-0004 clause 7.3.3.x and 7.5.1): which subscriptions an event triggers, the
//! `m2m:sgn` they carry, and their delivery, in order per target, to URLs or to entities by ID.

use crate::cse::{representation, Cse, Peer};
use crate::store::Resource;
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// notificationEventType (TS-0004 table 6.3.4.2.20-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Update = 1,
    Delete = 2,
    CreateChild = 3,
    DeleteChild = 4,
}

/// Notifications waiting for one target at most; beyond, a target slower than its events loses
/// the newest (logged) instead of growing memory without bound.
const QUEUE_LEN: usize = 1024;

/// A target's queue idle this long ends (its task and map entry go; the next event starts anew).
const QUEUE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Per-target delivery queues, so that notifications to one target arrive in the order of events.
#[derive(Default)]
pub struct Notifier {
    queues: Mutex<HashMap<String, Queue>>,
    /// Tells a queue's task whether the map entry is still its own when it ends.
    next_id: std::sync::atomic::AtomicU64,
}

/// One target's queue: the sender of its delivery task's channel.
struct Queue {
    id: u64,
    tx: mpsc::Sender<Value>,
}

impl Notifier {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Triggers the subscriptions of `subject` for an event that concerns `res`.
pub fn on_event(
    cse: &Arc<Cse>,
    subject: &Resource,
    event: Event,
    res: &Resource,
    modified: Option<&Map<String, Value>>,
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
    for sub in subs {
        // A subscription is not told about its own creation.
        if sub.ri() == res.ri() || !wants(&sub, event, res, modified) {
            continue;
        }
        let rep = match sub.u64_attr("nct").unwrap_or(1) {
            2 => match modified {
                Some(m) => json!({ res.ty.root_name(): m }),
                None => representation(res),
            },
            3 => json!(cse.sp_relative(res.ri())),
            _ => representation(res),
        };
        let mut sgn =
            json!({ "nev": { "rep": rep, "net": event as u8 }, "sur": cse.sp_relative(sub.ri()) });
        if let Some(cr) = sub.str_attr("cr") {
            sgn["cr"] = json!(cr);
        }
        enqueue_all(cse, &sub, json!({ "m2m:sgn": sgn }));
        count_down(cse, &sub);
    }
}

/// Whether a subscription's eventNotificationCriteria select the event (TS-0004 clause 7.5.1.2.2):
/// its notificationEventType (default: update only), and for an update the attributes (`atr`)
/// of which one must have changed, for a child created or deleted the child resource types
/// (`chty`) it must be of.
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
        None => event == Event::Update,
    };
    if !net_ok {
        return false;
    }
    match event {
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
    }
}

fn enqueue_all(cse: &Arc<Cse>, sub: &Resource, body: Value) {
    for nu in sub
        .attrs
        .get("nu")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        enqueue(cse, nu, body.clone());
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
            crate::dispatcher::delete_resource(&cse, &sub).await
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
/// subscription tells its subscriber (subscriptionDeletion to `su`).
pub fn on_deleted(cse: &Arc<Cse>, res: &Resource, deleted: &[Resource]) {
    for sub in deleted
        .iter()
        .filter(|d| d.ty == ResourceType::Subscription)
    {
        let sur = cse.sp_relative(sub.ri());
        if sub.pi() == res.ri() && wants(sub, Event::Delete, res, None) {
            let rep = match sub.u64_attr("nct").unwrap_or(1) {
                3 => json!(cse.sp_relative(res.ri())),
                _ => representation(res),
            };
            enqueue_all(
                cse,
                sub,
                json!({ "m2m:sgn": { "nev": { "rep": rep, "net": Event::Delete as u8 }, "sur": sur } }),
            );
        }
        if let Some(su) = sub.str_attr("su") {
            enqueue(cse, su, json!({ "m2m:sgn": { "sud": true, "sur": sur } }));
        }
    }
}

/// Queues a notification body for a target; delivery happens in the background, in order.
pub fn enqueue(cse: &Arc<Cse>, nu: &str, body: Value) {
    let mut queues = cse.notifier.queues();
    let body = match queues.get(nu) {
        None => body,
        Some(q) => match q.tx.try_send(body) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(target_uri = %nu, queued = QUEUE_LEN, "notification dropped: the target's queue is full");
                return;
            }
            // The task ended without removing its entry (it panicked): start a new one.
            Err(mpsc::error::TrySendError::Closed(b)) => b,
        },
    };
    let id = cse
        .notifier
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let _ = tx.try_send(body);
    queues.insert(nu.to_owned(), Queue { id, tx });
    tokio::spawn(deliver_queue(Arc::clone(cse), nu.to_owned(), id, rx));
}

/// A target's delivery task: sends in order until the queue stays idle, then removes its map
/// entry (if still its own) and delivers what came in before the removal.
async fn deliver_queue(cse: Arc<Cse>, nu: String, id: u64, mut rx: mpsc::Receiver<Value>) {
    while let Ok(Some(body)) = tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
        deliver(&cse, &nu, body).await;
    }
    {
        let mut queues = cse.notifier.queues();
        if queues.get(&nu).is_some_and(|q| q.id == id) {
            queues.remove(&nu);
        }
    }
    // Enqueuing holds the map's lock: nothing reaches this channel any more.
    rx.close();
    while let Some(body) = rx.recv().await {
        deliver(&cse, &nu, body).await;
    }
}

async fn deliver(cse: &Arc<Cse>, nu: &str, body: Value) {
    let resp = send_now(cse, nu, body).await;
    if !resp.rsc.is_success() {
        tracing::warn!(target_uri = %nu, rsc = resp.rsc.code(), dbg = resp.dbg().unwrap_or(""), "notification not delivered");
    }
}

/// Sends one notification now and waits for the answer: to a URL directly, to an ID through the
/// CSE's own routing (a local AE's pointOfAccess, or a remote CSE).
pub async fn send_now(cse: &Arc<Cse>, nu: &str, body: Value) -> Response {
    let rqi = format!("ntf-{}", crate::dispatcher::random_suffix(10));
    let mut req = Request::new(
        Operation::Notify,
        nu,
        Some(cse.id.cse_id.sp_relative()),
        rqi.clone(),
    );
    req.pc = Some(body);
    if is_url(nu) {
        match cse.client.send_to_url(nu, &req).await {
            Ok(r) => r,
            Err(e) => Response::error(&e, rqi),
        }
    } else {
        cse.handle(req, Peer::internal()).await
    }
}

/// A notification target or pointOfAccess that is a URL of a binding this CSE sends over (HTTP,
/// CoAP, and their secure forms with the CSE's certificate or the entity's PSK row).
fn is_url(s: &str) -> bool {
    ["http://", "https://", "coap://", "coaps://"]
        .iter()
        .any(|scheme| s.starts_with(scheme))
}

/// Whether a notificationURI designates the originator of the request itself.
pub fn is_originator(cse: &Cse, nu: &str, originator: &str) -> bool {
    !originator.is_empty() && (nu == originator || nu == cse.sp_relative(originator))
}

/// Relays a NOTIFY addressed to a registered AE to its pointOfAccess.
pub async fn relay_to_ae(cse: &Arc<Cse>, req: Request, ae: &Resource) -> M2mResult<Response> {
    // An AE that polls is reached through its channel, not its pointOfAccess (TS-0004 clause
    // 7.3.3.9.1).
    if let Some(pch) = crate::resources::polling_channel::channel_of(cse, ae)? {
        return cse.polling.deliver(&pch, req).await;
    }
    let poa = ae
        .attrs
        .get("poa")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().filter_map(Value::as_str).find(|p| is_url(p)))
        .map(str::to_owned);
    let Some(poa) = poa else {
        return Err(M2mError::new(
            ResponseStatusCode::TargetNotReachable,
            format!("AE '{}' has no pointOfAccess", ae.ri()),
        ));
    };
    // Over https or coaps the AE proves it is this AE (its AE-ID certificate, or the key of the
    // PSK row bound to its AE-ID): its poa is an address it gave itself, which any certificate of
    // the same root of trust could answer on.
    let client = match ae
        .str_attr("aei")
        .and_then(|a| m2m_core::EntityId::parse(a, &cse.id.home).ok())
    {
        Some(entity) if poa.starts_with("https://") || poa.starts_with("coaps://") => {
            cse.client_for_entity(&entity)
        }
        _ => cse.client.clone(),
    };
    client.send_to_url(&poa, &req).await
}
