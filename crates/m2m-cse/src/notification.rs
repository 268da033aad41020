//! Notification delivery (TS-0004 clause 7.5.1.2.x: the Notify request a subscription sends;
//! clause 7.3.3.9.1: a request for an entity that polls; TS-0020 clause 5.2, TS-0010 clause
//! 6.4.3: an entity reached over its own connection): the layer between the security gate and the
//! resource types. It takes Notify requests from above and carries them, in order per target, to
//! URLs, to registered AEs (their pollingChannel, WebSocket, MQTT topic or pointOfAccess), or by ID
//! through the Receiver, and counts notificationStatsInfo. It imports nothing from the resource
//! types: what a subscription is and when it fires is theirs (`subscription_events`).

use crate::association::Peer;
use crate::context::Context;
use crate::outbound::{Links, MqttServer};
use crate::polling_queue::Channels;
use crate::store::Resource;
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode,
};
use m2m_transport::connector::loggable;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

/// Notifications waiting for one target at most; beyond, a target slower than its events loses
/// the newest (logged) instead of growing memory without bound.
const QUEUE_LEN: usize = 1024;

/// A target's queue idle this long ends (its task and map entry go; the next event starts anew).
const QUEUE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The ways a notification leaves this CSE, over the [`Context`] it reads: per-target queues, so
/// that notifications to one target arrive in the order of events, and the ways to entities that
/// cannot be reached at an address (their polling channels, the connections they opened).
pub struct Delivery {
    ctx: Arc<Context>,
    queues: Mutex<HashMap<String, Queue>>,
    /// Tells a queue's task whether the map entry is still its own when it ends.
    next_id: std::sync::atomic::AtomicU64,
    /// Requests queued for entities that poll (`<pollingChannel>`).
    pub(crate) polling: Channels,
    /// Open WebSocket connections by the AE proven on each: its notifications go over it.
    pub(crate) websockets: Links,
    /// The MQTT binding (`[mqtt]`): notifications to `mqtt(s)://` points of access go through it.
    pub(crate) mqtt: OnceLock<Arc<dyn MqttServer>>,
    /// What the Upper Tester interface changed (conformance testing only).
    pub(crate) testing: crate::overrides::Overrides,
    /// The NOTIFYs on their way to a pointOfAccess, by originator (From) and Request
    /// Identifier, each with how many: one that arrives back here meanwhile came through a
    /// pointOfAccess that leads to this CSE ([`Delivery::is_relaying`]).
    relaying: Mutex<HashMap<(String, String), usize>>,
}

/// One NOTIFY on its way to a pointOfAccess, counted in [`Delivery::relaying`] until dropped.
struct Relaying<'d> {
    delivery: &'d Delivery,
    key: (String, String),
}

impl Drop for Relaying<'_> {
    fn drop(&mut self) {
        let mut map = self.delivery.relaying();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl std::ops::Deref for Delivery {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// One target's queue: the sender of its delivery task's channel.
struct Queue {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
}

/// One Notify request on its way to a target.
pub(crate) struct Outgoing {
    body: Value,
    /// Event Category (X-M2M-EC): notificationEventCat, or "latest" with latestNotify.
    ec: Option<String>,
    /// The subscription whose notificationStatsInfo counts it, and the events it carries.
    stats: Option<(String, u64)>,
    /// Told when the request was sent and answered (or failed).
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Outgoing {
    /// A Notify request carrying `body` (`m2m:sgn`, `m2m:agn`), with an Event Category.
    pub(crate) fn new(body: Value, ec: Option<String>) -> Self {
        Outgoing {
            body,
            ec,
            stats: None,
            done: None,
        }
    }

    /// Counted in the notificationStatsInfo of a subscription, as this many events.
    pub(crate) fn counted(mut self, stats: Option<(String, u64)>) -> Self {
        self.stats = stats;
        self
    }

    /// Tells `done` once it was sent and answered (or failed).
    pub(crate) fn when_done(mut self, done: tokio::sync::oneshot::Sender<()>) -> Self {
        self.done = Some(done);
        self
    }
}

impl Delivery {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Delivery {
            ctx,
            queues: Default::default(),
            next_id: Default::default(),
            polling: Default::default(),
            websockets: Default::default(),
            mqtt: Default::default(),
            testing: Default::default(),
            relaying: Default::default(),
        }
    }

    fn relaying(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        self.relaying.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the NOTIFY `req` (its From and Request Identifier) is on its way from this CSE to
    /// an AE's pointOfAccess: arriving here, it came back through an address that leads to this
    /// CSE (or to a group of it), and relaying it again would go round without end.
    pub(crate) fn is_relaying(&self, req: &Request) -> bool {
        self.relaying().contains_key(&relay_key(req))
    }

    fn start_relaying(&self, req: &Request) -> Relaying<'_> {
        let key = relay_key(req);
        *self.relaying().entry(key.clone()).or_default() += 1;
        Relaying {
            delivery: self,
            key,
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a notification for a target; delivery happens in the background, in order.
    pub(crate) fn enqueue(self: &Arc<Self>, nu: &str, body: Outgoing) {
        let mut queues = self.queues();
        let body = match queues.get(nu) {
            None => body,
            Some(q) => match q.tx.try_send(body) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(target_uri = %loggable(nu), queued = QUEUE_LEN, "notification dropped: the target's queue is full");
                    return;
                }
                // The task ended without removing its entry (it panicked): start a new one.
                Err(mpsc::error::TrySendError::Closed(b)) => b,
            },
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let _ = tx.try_send(body);
        queues.insert(nu.to_owned(), Queue { id, tx });
        tokio::spawn(deliver_queue(Arc::clone(self), nu.to_owned(), id, rx));
    }
}

/// A target's delivery task: sends in order until the queue stays idle, then removes its map
/// entry (if still its own) and delivers what came in before the removal.
async fn deliver_queue(cse: Arc<Delivery>, nu: String, id: u64, mut rx: mpsc::Receiver<Outgoing>) {
    while let Ok(Some(body)) = tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
        deliver(&cse, &nu, body).await;
    }
    {
        let mut queues = cse.queues();
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

async fn deliver(cse: &Delivery, nu: &str, out: Outgoing) {
    let resp = send_request(cse, nu, out.body, out.ec).await;
    let delivered = resp.rsc.is_success();
    if !delivered {
        tracing::warn!(target_uri = %loggable(nu), rsc = resp.rsc.code(), dbg = resp.dbg().unwrap_or(""), "notification not delivered");
    }
    if let Some((sub_ri, events)) = out.stats {
        count_statistics(cse, sub_ri, nu, events, delivered).await;
    }
    if let Some(done) = out.done {
        let _ = done.send(());
    }
}

/// notificationStatsInfo (Release 4): per target, the notification requests sent (`rqs`), the
/// responses received (`rsr`) and the events they carried (`noec`), counted while
/// notificationStatsEnable is true.
async fn count_statistics(cse: &Context, sub_ri: String, nu: &str, events: u64, answered: bool) {
    let tg = nu.to_owned();
    let r = cse
        .store
        .write(move |w| {
            let Some(mut sub) = w.get(&sub_ri)? else {
                return Ok(());
            };
            if sub.attrs.get("nse") != Some(&Value::Bool(true)) {
                return Ok(());
            }
            let nsi = sub.attrs.entry("nsi").or_insert_with(|| json!([]));
            let Some(list) = nsi.as_array_mut() else {
                return Ok(());
            };
            let at = match list.iter().position(|e| e["tg"] == tg.as_str()) {
                Some(i) => i,
                None => {
                    list.push(json!({ "tg": tg, "rqs": 0, "rsr": 0, "noec": 0 }));
                    list.len() - 1
                }
            };
            let entry = &mut list[at];
            let add = |v: &Value, n: u64| json!(v.as_u64().unwrap_or(0) + n);
            entry["rqs"] = add(&entry["rqs"], events);
            entry["rsr"] = add(&entry["rsr"], if answered { events } else { 0 });
            entry["noec"] = add(&entry["noec"], events);
            w.update(&sub)
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(dbg = %e.dbg, "cannot count notification statistics");
    }
}

/// Sends one notification now and waits for the answer: to a URL directly, to an ID through the
/// CSE's own routing (a local AE's pointOfAccess, or a remote CSE).
pub async fn send_now(cse: &Delivery, nu: &str, body: Value) -> Response {
    send_request(cse, nu, body, None).await
}

async fn send_request(cse: &Delivery, nu: &str, body: Value, ec: Option<String>) -> Response {
    let rqi = format!("ntf-{}", crate::context::random_suffix(10));
    let mut req = Request::new(
        Operation::Notify,
        nu,
        Some(cse.id.cse_id.sp_relative()),
        rqi.clone(),
    );
    req.pc = Some(body);
    req.ec = ec;
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
pub(crate) fn is_url(s: &str) -> bool {
    ["http://", "https://", "coap://", "coaps://"]
        .iter()
        .any(|scheme| s.starts_with(scheme))
}

/// Whether a notificationURI designates the originator of the request itself: its AE-ID or
/// CSE-ID in any form, or the address of its `<AE>` (or `<remoteCSE>`) here.
pub fn is_originator(cse: &Context, nu: &str, originator: &str) -> bool {
    let Ok(who) = m2m_core::EntityId::parse(originator, &cse.id.home) else {
        return false;
    };
    target_entity(cse, nu).is_some_and(|target| target == who)
}

/// The entity a notification target written as a oneM2M ID designates: an AE-ID or CSE-ID in
/// any form, or a registration here addressed as a resource (an `<AE>`'s AE-ID, a
/// `<remoteCSE>`'s CSE-ID); `None` for a URL or any other resource.
pub(crate) fn target_entity(cse: &Context, nu: &str) -> Option<m2m_core::EntityId> {
    if is_url(nu) {
        return None;
    }
    let home = &cse.id.home;
    if let Ok(e) = m2m_core::EntityId::parse(nu, home) {
        return Some(e);
    }
    let registration = crate::resolve::local_resource(cse, nu)?;
    let id = match registration.ty {
        ResourceType::Ae => registration.str_attr("aei")?,
        ResourceType::RemoteCse => registration.str_attr("csi")?,
        _ => return None,
    };
    m2m_core::EntityId::parse(id, home).ok()
}

/// The release a primitive to `ae` complies with (TS-0004 table 7.2.1.1-1: the Release Version
/// Indicator names it): the one given when the AE supports it, else the latest the AE lists in
/// its supportedReleaseVersions that is not later than the one given (a primitive is not
/// relabelled as a later release than it was made in), so that an AE of an earlier release is
/// not sent one it refuses. None stays none.
fn release_for(ae: &Resource, given: Option<&str>) -> Option<String> {
    fn rank(r: &str) -> u8 {
        match r {
            "1" => 1,
            "2" => 2,
            "2a" => 3,
            "3" => 4,
            "4" => 5,
            "5" => 6,
            _ => 0,
        }
    }
    let given = given?;
    let srv = crate::store::string_list(ae.attrs.get("srv"));
    if srv.is_empty() || srv.iter().any(|s| s == given) {
        return Some(given.to_owned());
    }
    srv.into_iter()
        .filter(|s| rank(s) > 0 && rank(s) <= rank(given))
        .max_by_key(|s| rank(s))
        .or_else(|| Some(given.to_owned()))
}

/// Relays a NOTIFY addressed to a registered AE to its pointOfAccess.
pub async fn relay_to_ae(cse: &Delivery, mut req: Request, ae: &Resource) -> M2mResult<Response> {
    req.rvi = release_for(ae, req.rvi.as_deref());
    // An AE that polls is reached through its channel, not its pointOfAccess (TS-0004 clause
    // 7.3.3.9.1).
    if let Some(pch) = crate::polling_queue::channel_of(cse, ae)? {
        let wait = cse
            .testing
            .poll_wait()
            .unwrap_or(crate::polling_queue::DEFAULT_DELIVERY_WAIT);
        return cse.polling.deliver(&pch, req, wait).await;
    }
    // An AE connected over a WebSocket is reached over it (TS-0020 clause 5.2), its
    // pointOfAccess or requestReachability aside: the connection is its way in.
    if let Some(link) = ae
        .str_attr("aei")
        .and_then(|a| m2m_core::EntityId::parse(a, &cse.id.home).ok())
        .and_then(|e| cse.websockets.of(&e))
    {
        let timeout = std::time::Duration::from_millis(cse.config().limits.outgoing_timeout_ms);
        return link.request(&req, timeout).await;
    }
    // requestReachability false: the AE said it cannot be reached (TS-0001 table 9.6.5-3).
    if ae.attrs.get("rr") == Some(&Value::Bool(false)) {
        return Err(M2mError::new(
            ResponseStatusCode::TargetNotReachable,
            "the AE is not request-reachable",
        ));
    }
    let poa = ae
        .attrs
        .get("poa")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .find(|p| is_url(p) || crate::outbound::is_mqtt_url(p))
        })
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
    // The serialization the AE asked for: a `ct` key of its pointOfAccess, else the first of
    // its contentSerialization this CSE writes (TS-0004 clause 7.5.1.2.2).
    let (poa, ct) = m2m_core::serialization::split_ct(&poa);
    let csz = crate::store::string_list(ae.attrs.get("csz"));
    let ser = ct
        .or_else(|| {
            m2m_core::serialization::Serialization::preferred(csz.iter().map(String::as_str))
        })
        .unwrap_or_default();
    if crate::outbound::is_mqtt_url(&poa) {
        // Over MQTT the server delivers to the AE's own topic (its ACL lets only that AE read it).
        let entity = ae
            .str_attr("aei")
            .and_then(|a| m2m_core::EntityId::parse(a, &cse.id.home).ok())
            .ok_or_else(|| {
                M2mError::new(
                    ResponseStatusCode::TargetNotReachable,
                    "the AE has no AE-ID",
                )
            })?;
        let server = cse.mqtt.get().ok_or_else(|| {
            M2mError::new(
                ResponseStatusCode::TargetNotReachable,
                "this CSE has no MQTT binding",
            )
        })?;
        return server.send(&cse.ctx, &poa, &entity, &req, ser).await;
    }
    let rqi = req.rqi.clone();
    let _relaying = cse.start_relaying(&req);
    let answer = client.send_to_url_as(&poa, &req, ser).await;
    only_the_status(answer, &rqi, ae.ri())
}

fn relay_key(req: &Request) -> (String, String) {
    (req.from.clone().unwrap_or_default(), req.rqi.clone())
}

/// What the requester of a NOTIFY learns of the answer at an AE's pointOfAccess: its status
/// code, nothing of its content, and one fixed text when it failed. The pointOfAccess is an
/// address the AE gave itself: anything more would make this CSE a way to read (or map) what
/// answers at any address it can reach (a NOTIFY's answer carries no content, TS-0004 clause
/// 7.3.3.9).
fn only_the_status(answer: M2mResult<Response>, rqi: &str, ae: &str) -> M2mResult<Response> {
    match answer {
        Ok(resp) => Ok(Response::new(resp.rsc, rqi, None)),
        Err(e) => {
            tracing::debug!(ae, rsc = e.rsc.code(), why = %e.dbg, "notification to an AE's pointOfAccess failed");
            Err(M2mError::new(
                e.rsc,
                "the AE did not take the notification at its pointOfAccess",
            ))
        }
    }
}

#[cfg(test)]
mod release_tests {
    use super::release_for;
    use crate::store::Resource;

    fn ae(srv: serde_json::Value) -> Resource {
        Resource {
            seq: 1,
            ty: m2m_core::ResourceType::Ae,
            srn: "cse-in/a".into(),
            attrs: serde_json::json!({ "srv": srv })
                .as_object()
                .cloned()
                .unwrap(),
            creator: None,
            specialization: None,
        }
    }

    #[test]
    fn a_primitive_to_an_ae_is_in_a_release_it_supports() {
        let three = Some("3");
        assert_eq!(
            release_for(&ae(serde_json::json!(["2"])), three).as_deref(),
            Some("2")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!(["2a", "3"])), three).as_deref(),
            Some("3")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!(["1", "2a"])), three).as_deref(),
            Some("2a")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!(["4", "3"])), Some("4")).as_deref(),
            Some("4")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!([])), three).as_deref(),
            Some("3")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!(["x"])), three).as_deref(),
            Some("3")
        );
        assert_eq!(
            release_for(&ae(serde_json::json!(["4", "5"])), Some("2a")).as_deref(),
            Some("2a"),
            "never relabelled as a later release"
        );
        assert_eq!(release_for(&ae(serde_json::json!(["2"])), None), None);
    }
}

/// The notification layer on its own, over a Context and no engine: what it is given for one
/// target arrives there in order, with its Event Category, and `when_done` tells once answered.
#[cfg(test)]
mod delivery_tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// An HTTP notification target that records each request's X-M2M-EC and body, in arrival
    /// order, and answers 2000.
    async fn target() -> (String, Arc<Mutex<Vec<(Option<String>, Value)>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ntf", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let (rd, mut wr) = sock.into_split();
                    let mut rd = BufReader::new(rd);
                    loop {
                        let (mut len, mut ec) = (0usize, None);
                        let mut line = String::new();
                        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            rd.read_line(&mut line).await.unwrap();
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            let (k, v) = l.split_once(':').unwrap();
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap(),
                                "x-m2m-ec" => ec = Some(v.trim().to_owned()),
                                _ => {}
                            }
                        }
                        let mut body = vec![0; len];
                        rd.read_exact(&mut body).await.unwrap();
                        let body: Value = serde_json::from_slice(&body).unwrap();
                        log.lock().unwrap().push((ec, body));
                        let answer = "HTTP/1.1 200 OK\r\nX-M2M-RSC: 2000\r\nX-M2M-RI: n\r\nContent-Length: 0\r\n\r\n";
                        wr.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_targets_notifications_arrive_in_order_without_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.storage.path = dir.path().join("db");
        let ctx = Context::open(cfg, &Default::default()).unwrap();
        let delivery = Arc::new(Delivery::new(Arc::new(ctx)));
        let (url, seen) = target().await;
        let (done, answered) = tokio::sync::oneshot::channel();
        let mut done = Some(done);
        for n in 0..20 {
            let out = Outgoing::new(json!({ "m2m:sgn": { "n": n } }), Some("4".into()));
            let out = match done.take_if(|_| n == 19) {
                Some(d) => out.when_done(d),
                None => out,
            };
            // As events hand them over: one after the other, without waiting.
            delivery.enqueue(&url, out);
        }
        tokio::time::timeout(std::time::Duration::from_secs(20), answered)
            .await
            .expect("the last notification is answered")
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let order: Vec<u64> = seen
            .iter()
            .map(|(_, b)| b["m2m:sgn"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        assert!(seen.iter().all(|(ec, _)| ec.as_deref() == Some("4")));
    }

    #[tokio::test]
    async fn a_notify_by_id_without_a_receiver_is_refused_not_lost_silently() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.storage.path = dir.path().join("db");
        let ctx = Context::open(cfg, &Default::default()).unwrap();
        let delivery = Delivery::new(Arc::new(ctx));
        // No engine registered its Receiver: a Notify addressed by ID cannot be routed.
        let resp = send_now(&delivery, "Cphone", json!({ "m2m:sgn": {} })).await;
        assert_eq!(resp.rsc, ResponseStatusCode::InternalServerError);
    }
}
