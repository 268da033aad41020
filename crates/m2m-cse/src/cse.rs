//! The resource engine: the entry point every request goes through, whatever its binding
//! (TS-0004 clause 7.3: the Receiver's generic procedure), over the [`Context`] it holds.

use crate::config::Config;
use crate::context::Receiver;
use crate::notification::Delivery;
use crate::resolve::{self, Locality, Target};
use crate::store::Resource;
use crate::subscription_events::Notifier;
use crate::{access, discovery, dispatcher, group, impersonation, routing};
use m2m_core::{Address, M2mError, M2mResult, Operation, Request, ResourceType, Response};
use m2m_security::secure_environment::SharedEnvironments;
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub use crate::association::Peer;
pub use crate::context::{BoxFuture, Context};

/// The release versions a request may name (X-M2M-RVI); Release 1 had no such parameter.
const SUPPORTED_RVI: &[&str] = &["2", "2a", "3", "4", "5"];

/// The releases this CSE speaks (the CSEBase's supportedReleaseVersions).
const SUPPORTED_RELEASES: [&str; 3] = ["2a", "3", "4"];

/// The resource engine: the Receiver's generic procedure over the [`Context`], and the state of
/// the resource types (timers, monitors, queues).
///
/// Aligned to 128 bytes so that in its `Arc` the reference counts, which every request changes
/// from every core, have a cache line of their own: the `delivery` pointer each `cse.store`
/// goes through is read from another, which those writes do not invalidate.
#[repr(align(128))]
pub struct Cse {
    /// The notification layer, over the [`Context`]: what the engine sends goes through it.
    pub(crate) delivery: Arc<Delivery>,
    /// The notification policies' state (`subscription_events`): batches, rate windows,
    /// monitored and blocked resources, missed events.
    pub(crate) notifier: Notifier,
    /// Missing data monitors of `<timeSeries>` resources and windows of their subscriptions.
    pub(crate) time_series: crate::resources::time_series::Monitors,
    /// The time windows of `<crossResourceSubscription>` resources.
    pub(crate) cross_resources: crate::resources::cross_resource_subscription::CrossResources,
    pub(crate) non_blocking: crate::resources::request::InFlight,
    pub(crate) schedules: crate::resources::schedule::Schedules,
    /// The `<action>` resources by subject.
    pub(crate) actions: crate::resources::action::Actions,
    /// The local members of groups (`group::MemberIndex`).
    pub(crate) group_members: crate::group::MemberIndex,
    /// Geofence events written with a position, until the position's creation is reported.
    pub(crate) geofence_events: crate::resources::location_policy::PendingEvents,
    /// The armed `<timeSyncBeacon>`s.
    pub(crate) beacons: crate::resources::time_sync_beacon::Beacons,
    /// The MQTT server's ACL this CSE keeps (`[mqtt] acl_file`), told when registrations change.
    pub(crate) mqtt_acl: std::sync::OnceLock<Arc<dyn crate::outbound::RegistrationWatch>>,
    /// Discovery and child listings, on threads of their own at a lower CPU priority.
    pub(crate) searches: crate::search_threads::SearchThreads,
    /// Multicast fan-out as group hosting CSE (`[multicast]` with a signing key).
    pub(crate) multicast_host: Option<Arc<crate::multicast::host::Host>>,
    /// Multicast fan-out as member hosting CSE (`[multicast]` with a key of its own).
    pub(crate) multicast_member: Option<Arc<crate::multicast::member::Member>>,
}

/// The engine reads the layers below through it: `cse.websockets` is the notification layer's,
/// `cse.store` the context's.
impl std::ops::Deref for Cse {
    type Target = Delivery;
    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

impl Receiver for Cse {
    fn receive(self: Arc<Self>, req: Request, peer: Peer) -> BoxFuture<Response> {
        self.handle(req, peer)
    }
}

impl Cse {
    /// Opens the store and makes sure the CSEBase exists and reflects the configuration; the keys
    /// the configuration names are taken from `environments` (opened once by the caller).
    pub fn open(cfg: Config, environments: &SharedEnvironments) -> anyhow::Result<Arc<Self>> {
        let ctx = Context::open(cfg, environments)?;
        let multicast_host =
            crate::multicast::host::Host::from_config(&ctx.cfg, &ctx.id.cse_id.sp_relative())?
                .map(Arc::new);
        let multicast_member =
            crate::multicast::member::Member::from_config(&ctx.cfg, environments)?.map(Arc::new);
        let cse = Arc::new(Self {
            delivery: Arc::new(Delivery::new(Arc::new(ctx))),
            notifier: Notifier::default(),
            time_series: Default::default(),
            cross_resources: Default::default(),
            non_blocking: Default::default(),
            schedules: Default::default(),
            actions: Default::default(),
            group_members: Default::default(),
            geofence_events: Default::default(),
            beacons: Default::default(),
            mqtt_acl: Default::default(),
            searches: crate::search_threads::SearchThreads::per_core(),
            multicast_host,
            multicast_member,
        });
        let receiver: Arc<dyn Receiver> = Arc::clone(&cse) as _;
        cse.register(&receiver);
        cse.ensure_cse_base()?;
        crate::resources::notification_target_policy::ensure_system_default(&cse)?;
        cse.actions
            .load(&cse)
            .map_err(|e| anyhow::anyhow!("cannot read the actions: {}", e.dbg))?;
        cse.group_members
            .load(&cse)
            .map_err(|e| anyhow::anyhow!("cannot read the groups: {}", e.dbg))?;
        crate::subscription_events::load_monitored(&cse)
            .map_err(|e| anyhow::anyhow!("cannot read the subscriptions: {}", e.dbg))?;
        cse.schedules
            .load(&cse)
            .map_err(|e| anyhow::anyhow!("cannot read the schedules: {}", e.dbg))?;
        cse.beacons
            .load(&cse)
            .map_err(|e| anyhow::anyhow!("cannot read the time sync beacons: {}", e.dbg))?;
        Ok(cse)
    }
    /// Sets the pointOfAccess once the listener is bound (the port may have been chosen by the OS).
    pub fn set_public_url(&self, url: String) -> M2mResult<()> {
        Context::set_public_url(&self.delivery, url);
        self.ensure_cse_base()
            .map_err(|e| M2mError::internal(e.to_string()))
    }

    fn ensure_cse_base(&self) -> anyhow::Result<()> {
        // contentSerialization of the CSEBase: what this CSE reads and writes (Release 4 media
        // types, TS-0004 clause 8).
        const SERIALIZATIONS: [&str; 3] =
            ["application/json", "application/cbor", "application/xml"];
        let now = self.now_ts();
        let poa = self.public_url();
        let id = self.id.clone();
        self.store
            .write_blocking(move |w| match w.get(id.cse_id.bare())? {
                Some(mut cb) => {
                    cb.attrs.insert("poa".into(), json!([poa]));
                    cb.attrs.insert("cst".into(), json!(id.role.cse_type()));
                    // What this version of the CSE supports, not what an older one did.
                    cb.attrs.insert("srt".into(), json!(supported_types()));
                    cb.attrs.insert("srv".into(), json!(SUPPORTED_RELEASES));
                    cb.attrs.insert("csz".into(), json!(SERIALIZATIONS));
                    w.update(&cb)
                }
                None => {
                    let attrs = json!({
                        "ty": ResourceType::CseBase.code(),
                        "ri": id.cse_id.bare(),
                        "rn": id.rn,
                        "pi": "",
                        "ct": now,
                        "lt": now,
                        "cst": id.role.cse_type(),
                        "csi": id.cse_id.sp_relative(),
                        "srt": supported_types(),
                        "poa": [poa],
                        "srv": SUPPORTED_RELEASES,
                        "csz": SERIALIZATIONS,
                    });
                    let attrs = attrs.as_object().cloned().unwrap_or_default();
                    w.insert(Resource {
                        seq: 0,
                        ty: ResourceType::CseBase,
                        srn: id.rn.clone(),
                        attrs,
                        creator: None,
                        specialization: None,
                    })
                    .map(|_| ())
                }
            })?;
        Ok(())
    }

    /// Processes one request primitive and produces its response. Never fails: errors become
    /// error responses with `m2m:dbg`.
    pub fn handle(self: &Arc<Self>, req: Request, peer: Peer) -> BoxFuture<Response> {
        let cse = Arc::clone(self);
        Box::pin(async move {
            let rqi = req.rqi.clone();
            let rvi = req.rvi.clone();
            let vsi = req.vsi.clone();
            let rset = req.rset.clone();
            let mut resp = match Arc::clone(&cse).process(req, peer).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(rsc = e.rsc.code(), dbg = %e.dbg, "request refused");
                    Response::error(&e, rqi.clone())
                }
            };
            resp.rqi = rqi;
            if resp.rvi.is_none() {
                resp.rvi = rvi;
            }
            // Vendor Information goes back as it came (TS-0004 table 7.2.1.2-1).
            if resp.vsi.is_none() {
                resp.vsi = vsi;
            }
            // So does the Result Expiration Timestamp: the time by which this answer was due.
            if resp.rset.is_none() {
                resp.rset = rset;
            }
            cse.stamp(&mut resp);
            resp
        })
    }

    async fn process(self: Arc<Self>, req: Request, peer: Peer) -> M2mResult<Response> {
        if let Some(rvi) = &req.rvi {
            if !SUPPORTED_RVI.contains(&rvi.as_str()) {
                return Err(M2mError::new(
                    m2m_core::ResponseStatusCode::ReleaseVersionNotSupported,
                    format!("release version '{rvi}' is not supported"),
                ));
            }
        }
        // A NOTIFY this CSE is relaying to a pointOfAccess, back here from outside (a fan-out's
        // member requests are this CSE's own): the pointOfAccess leads here.
        if req.op == Operation::Notify && peer.fan_out_depth == 0 && self.is_relaying(&req) {
            tracing::warn!(target: "audit", rqi = %req.rqi, "a notification came back to the CSE relaying it (a pointOfAccess leads here): refused");
            return Err(M2mError::new(
                m2m_core::ResponseStatusCode::TargetNotReachable,
                "the notification came back to the CSE relaying it",
            ));
        }
        let mut req = req;
        let deadlines = crate::validity::check(&mut req, self.now())?;
        // The secure storage answers blocking requests only: a <request> would keep what is
        // stored or read in the resource store.
        if crate::resources::request::is_non_blocking(&req)
            && Address::parse(&req.to)
                .ok()
                .and_then(|a| crate::secure_storage::addressed(&self, &a))
                .is_some()
        {
            return Err(M2mError::bad_request(
                "the secure storage answers blocking requests only",
            ));
        }
        // Non-blocking (TS-0004 clause 7.3.2.2): acknowledged with its <request>, carried out
        // after; only for an originator that is who it says.
        if crate::resources::request::is_non_blocking(&req) {
            let (originator, proof) = impersonation::check(&self, &req, &peer)?;
            let Some(entity) = originator.entity().cloned() else {
                return Err(M2mError::bad_request("a registration is answered blocking"));
            };
            if !proof.identifies() {
                return Err(crate::access::refused());
            }
            // The <request> keeps the content before the target's checks run: a secret in the
            // clear would be stored with it.
            if let Some(pc) = &req.pc {
                m2m_core::mgmt_obj::refuse_clear_secrets(pc)?;
            }
            return Box::pin(crate::resources::request::accept(&self, req, peer, entity)).await;
        }
        let resp = self.execute(req, peer, &deadlines).await?;
        match crate::validity::result_expired(&deadlines) {
            Some(late) => Err(late),
            None => Ok(resp),
        }
    }

    async fn execute(
        self: Arc<Self>,
        req: Request,
        peer: Peer,
        deadlines: &crate::validity::Deadlines,
    ) -> M2mResult<Response> {
        let (originator, proof) = impersonation::check(&self, &req, &peer)?;
        // Loss of synchronization (timeSyncBeacon): judged on what the entity proved to be.
        if let (Some(who), true) = (originator.entity(), proof.identifies()) {
            self.beacons.observe(&self, &req, who);
        }
        let peer = peer.with_originator(originator.entity().cloned(), proof);
        let addr = Address::parse(&req.to)?;
        match resolve::locality(&self, &addr) {
            Locality::Local => {}
            Locality::Remote(cse) => {
                return Box::pin(routing::forward(&self, req, cse, &peer)).await
            }
        }
        // The Security CSF's storage: outside the resource tree and its policies.
        if let Some(object) = crate::secure_storage::addressed(&self, &addr) {
            return crate::secure_storage::serve(&self, &req, object, &peer);
        }
        let mut decided = self.decide(&req, &addr, &peer).await?;
        // The hosting CSE performs the operation at its Operation Execution Time, not before;
        // only an originator with the privilege waits for it. What changed meanwhile (the target
        // deleted or made again under its name, a policy revoked, a time window closed) is
        // decided on again: the operation acts on what is there when it runs. (Boxed, and the
        // first decision replaced rather than kept beside it: every request's future is as
        // large as its largest state, and it is copied into its box whole.)
        if crate::validity::wait_for_execution(deadlines).await {
            decided = Box::pin(self.decide(&req, &addr, &peer)).await?;
        }
        let (target, grant, assigned) = decided;
        // operationMonitor: the resource the operation addressed (a CREATE's parent); a set
        // lookup for any other.
        let monitored = match &target {
            Target::Resource(r) if crate::subscription_events::is_monitored(&self, r.ri()) => {
                Some((
                    r.ri().to_owned(),
                    req.op,
                    req.is_discovery(),
                    req.from.clone().unwrap_or_default(),
                ))
            }
            _ => None,
        };
        let shows = access::answer_may_show(&self, &req, &target, &peer)?;
        let mut resp = Arc::clone(&self).dispatch(req, target, peer).await?;
        if !shows {
            resp.pc = None;
            resp.cts = None;
            resp.cto = None;
        }
        if let access::Grant::Attributes(allowed) = &grant {
            show_only(&mut resp, allowed);
        }
        resp.ati = assigned;
        if let Some((ri, op, discovery, originator)) = monitored {
            crate::subscription_events::on_operation(&self, &ri, op, discovery, &originator);
        }
        Ok(resp)
    }

    /// The target of a local request and whether its originator may perform it (TS-0004 clause
    /// 7.3.3.15 and the type's additions to it, Recv-6.3): the target, the grant, and the
    /// Role-IDs or tokens a Dynamic Authorization Server assigned.
    async fn decide(
        &self,
        req: &Request,
        addr: &Address,
        peer: &Peer,
    ) -> M2mResult<(Target, access::Grant, Vec<(String, String)>)> {
        let target = resolve::resolve(self, addr)?;
        // An announcement from a CSE below a registree is kept under that registree's record.
        let target = crate::resources::ae_annc::placed(self, req, target, peer)?;
        // A semanticFanOutPoint is refused any other operation at the syntax check, before any
        // access decision (TS-0004 clause 7.4.35.2).
        if matches!(target, Target::SemanticFanOut(_)) && req.op != Operation::Retrieve {
            return Err(M2mError::not_allowed(
                "a semanticFanOutPoint answers RETRIEVE only",
            ));
        }
        let (grant, assigned) = match access::authorize(self, req, &target, peer) {
            Ok(g) => (g, Vec::new()),
            // No policy grants: a Dynamic Authorization Server may (TS-0004 clause 7.3.3.15).
            Err(refusal) => {
                let d = Box::pin(crate::dynamic_authorization::consult(
                    self, req, &target, peer, refusal,
                ))
                .await?;
                (d.grant, d.assigned)
            }
        };
        // Additions of a type to the authorization step (Recv-6.3), e.g. disableRetrieval.
        match &target {
            Target::Resource(r) => crate::resources::behaviour(r.ty).admits(self, req.op, r)?,
            Target::Latest(r) | Target::Oldest(r) => {
                crate::resources::behaviour(r.ty).admits_latest_oldest(req.op, r)?
            }
            Target::FanOut { .. }
            | Target::SemanticFanOut(_)
            | Target::PollingChannelUri(_)
            | Target::SelfReference(_) => {}
        }
        Ok((target, grant, assigned))
    }

    /// Carries out a request on its resolved, authorized target.
    ///
    /// The larger and rarer ways (fan-out, long polling, UPDATE with its blocking notification,
    /// NOTIFY; in `execute` forwarding and dynamic authorization, in `process` non-blocking
    /// requests) are boxed: an `async fn` is as large as its largest await, and every request's
    /// future is moved into a box whole (15 KB before, more than half of it for these).
    async fn dispatch(
        self: Arc<Self>,
        req: Request,
        target: Target,
        peer: Peer,
    ) -> M2mResult<Response> {
        match target {
            Target::FanOut { group, rest } => {
                return Box::pin(group::fan_out(&self, req, group, rest, peer)).await
            }
            Target::SemanticFanOut(group) => {
                return Box::pin(crate::semantic_query::fan_out(&self, req, group, peer)).await
            }
            Target::PollingChannelUri(pch) => {
                return Box::pin(crate::resources::polling_channel::serve_pcu(
                    &self, req, pch,
                ))
                .await
            }
            Target::SelfReference(sub) => {
                return Box::pin(crate::resources::notification_target_policy::serve_ntsr(
                    &self, &req, &sub, &peer,
                ))
                .await
            }
            _ => {}
        }
        match req.op {
            Operation::Create => dispatcher::create(&self, req, target, &peer).await,
            Operation::Retrieve if req.sqi => {
                crate::semantic_query::query(&self, req, target, peer).await
            }
            Operation::Retrieve if req.is_discovery() => {
                discovery::discover(&self, req, target, peer).await
            }
            Operation::Retrieve => {
                let (resp, counted) = if dispatcher::lists_children(&req) {
                    // A walk over children: off the threads that serve other requests.
                    let cse = Arc::clone(&self);
                    self.searches
                        .run(move || dispatcher::retrieve(&cse, &req, target, &peer))
                        .await?
                } else {
                    dispatcher::retrieve(&self, &req, target, &peer)?
                };
                let Some(cin) = counted else {
                    return Ok(resp);
                };
                // The retrieval is taken before the answer goes out, and the answer shows
                // the count it took.
                match crate::resources::content_instance::count_retrieval(&self, &cin).await? {
                    Some(n) => Ok(show_count(resp, n)),
                    None => Err(M2mError::not_found("the resource does not exist")),
                }
            }
            Operation::Update => Box::pin(dispatcher::update(&self, req, target, &peer)).await,
            Operation::Delete => dispatcher::delete(&self, &req, target, &peer).await,
            Operation::Notify => Box::pin(dispatcher::notify(&self, req, target, &peer)).await,
        }
    }
}

/// An answer granted for some attributes only (accessControlAttributes): its representation
/// keeps those and drops the others, whatever the Result Content asked for; a content that is
/// not a representation (`m2m:uri`, child references) is dropped whole.
fn show_only(resp: &mut Response, allowed: &[String]) {
    let Some(Value::Object(pc)) = resp.pc.as_mut() else {
        return;
    };
    let Some(Value::Object(inner)) = pc.values_mut().next() else {
        resp.pc = None;
        return;
    };
    inner.retain(|k, _| allowed.iter().any(|a| a == k));
}

/// A contentInstance's answer with the deletionCnt its retrieval took.
fn show_count(mut resp: Response, n: u64) -> Response {
    if let Some(dcnt) = resp
        .pc
        .as_mut()
        .and_then(|pc| pc.get_mut("m2m:cin"))
        .and_then(|cin| cin.get_mut("dcnt"))
    {
        *dcnt = Value::from(n);
    }
    resp
}

/// The resource types this CSE hosts (the CSEBase's supportedResourceType).
fn supported_types() -> Vec<u16> {
    ResourceType::ALL.iter().map(|t| t.code()).collect()
}

/// The JSON representation `{"m2m:xxx": {...}}` of a resource.
pub(crate) fn representation(res: &Resource) -> Value {
    let mut m = Map::with_capacity(1);
    m.insert(
        res.root_name().into_owned(),
        Value::Object(res.attrs.clone()),
    );
    Value::Object(m)
}
