//! `<subscription>` (TS-0004 clause 7.4.8): target checks and the verification request sent to
//! each notificationURI before the subscription is created (TS-0004 clause 7.3.3.x, "verificationRequest").

use super::Prepared;
use crate::cse::Cse;
use crate::notification;
use crate::store::{string_list, Resource};
use m2m_core::EntityId;
use m2m_core::{M2mError, M2mResult, ResponseStatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub async fn prepare_create(
    call: super::Call<'_>,
    parent: &Resource,
    attrs: &mut Map<String, Value>,
) -> M2mResult<Prepared> {
    let cse = call.cse;
    // What a subscription sends is judged for its creator: a From only claimed (an anonymous
    // listener) makes none, or anyone could subscribe as a registered AE and be shown what
    // that AE may read.
    if !call.peer.proof.identifies() {
        return Err(crate::access::refused());
    }
    check_supported(attrs)?;
    complete_defaults(attrs);
    check_criteria(parent, attrs)?;
    let nus = string_list(attrs.get("nu"));
    if nus.is_empty() {
        return Err(M2mError::bad_request(
            "notificationURI must name at least one target",
        ));
    }
    check_associated(cse, attrs, &nus)?;
    if is_blocking(attrs) {
        check_blocking(cse, parent, attrs, &nus)?;
    }
    let ri = crate::dispatcher::new_ri(m2m_core::ResourceType::Subscription);
    verify(call, &ri, &nus).await?;
    if let Some(bn) = attrs.get_mut("bn").and_then(Value::as_object_mut) {
        // TS-0004 clause 7.4.8.2.1, Recv-6.5: the provider's default when none is given.
        bn.entry("dur")
            .or_insert_with(|| json!(DEFAULT_BATCH_DURATION));
    }
    Ok(Prepared {
        ri: Some(ri),
        ..Prepared::default()
    })
}

pub async fn prepare_update(
    call: super::Call<'_>,
    res: &Resource,
    content: &Map<String, Value>,
) -> M2mResult<()> {
    let cse = call.cse;
    check_supported(content)?;
    if content
        .get("enc")
        .is_some_and(|enc| nets(enc).any(|n| n == BLOCKING_UPDATE))
    {
        return Err(M2mError::bad_request(
            "an UPDATE cannot make a subscription blocking (notificationEventType 7)",
        ));
    }
    // What the subscription would be: every check of a creation holds for it.
    let mut merged = super::merged(res, content);
    complete_defaults(&mut merged);
    let parent = crate::resolve::parent_of(cse, res)?;
    check_criteria(&parent, &merged)?;
    let nus = string_list(merged.get("nu"));
    // Only what this UPDATE changes answers to the rule (a subscription stored before it keeps
    // taking other updates).
    if content.contains_key("acrs") || content.contains_key("nu") {
        check_associated(cse, &merged, &nus)?;
    }
    if is_blocking(&merged) {
        check_blocking_policies(&merged, &nus)?;
        if content.contains_key("nu") {
            target_may_update(cse, &parent, &nus)?;
        }
    }
    verify_added(call, res, content).await
}

/// Verifies the notificationURIs an UPDATE adds (TS-0004 clause 7.3.8.2.2): the ones kept were
/// verified when they came.
pub(crate) async fn verify_added(
    call: super::Call<'_>,
    res: &Resource,
    content: &Map<String, Value>,
) -> M2mResult<()> {
    let old = string_list(res.attrs.get("nu"));
    let new: Vec<String> = string_list(content.get("nu"))
        .into_iter()
        .filter(|n| !old.contains(n))
        .collect();
    verify(call, res.ri(), &new).await
}

/// batchNotify/duration when the subscriber gives none (TS-0004 clause 7.4.8.2.1, Recv-6.5:
/// "the default duration as given by the M2M Service Provider"): 60 s, written in milliseconds,
/// the xs:duration form of JSON that needs no ISO 8601 parser (TS-0004 clause 7.3.3 writes
/// relative times so); the ISO form a subscriber gives is kept as given.
pub const DEFAULT_BATCH_DURATION: u64 = 60_000;

/// notificationEventType (TS-0004 table 6.3.4.2.19-1) values with a behaviour of their own.
pub const BLOCKING_UPDATE: u64 = 7;
const MISSING_DATA: u64 = 8;

/// The notificationEventType values of an eventNotificationCriteria.
fn nets(enc: &Value) -> impl Iterator<Item = u64> + '_ {
    enc.get("net")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
}

/// Whether a subscription blocks the UPDATEs of its resource (notificationEventType 7).
pub fn is_blocking(attrs: &Map<String, Value>) -> bool {
    attrs
        .get("enc")
        .is_some_and(|enc| nets(enc).any(|n| n == BLOCKING_UPDATE))
}

/// TS-0001 table 9.6.8-4: the notificationContentType a notificationEventType defaults to.
fn default_nct(net: u64) -> u64 {
    match net {
        6 => 4,
        BLOCKING_UPDATE => 2,
        MISSING_DATA => 5,
        _ => 1,
    }
}

/// TS-0001 table 9.6.8-4: whether a notificationContentType is valid for a notificationEventType.
fn nct_fits(nct: u64, net: u64) -> bool {
    match nct {
        1 | 3 => (1..=5).contains(&net),
        2 => net == 1 || net == BLOCKING_UPDATE,
        4 => net == 6,
        5 => net == MISSING_DATA,
        _ => false,
    }
}

/// Each associatedCrossResourceSub entry is also a notificationURI (in any ID form), as the
/// crossResourceSubscription that writes it makes it (TS-0004 clause 7.4.58.2.1): the deletion
/// notice an entry gets (clause 7.5.1.2.4) then goes only where the notificationURI's
/// verification let notifications go, never to a target no one verified.
fn check_associated(cse: &Cse, attrs: &Map<String, Value>, nus: &[String]) -> M2mResult<()> {
    match string_list(attrs.get("acrs"))
        .iter()
        .find(|a| !still_named(cse, a, nus))
    {
        Some(_) => Err(M2mError::bad_request(
            "an associatedCrossResourceSub entry is not among the notificationURIs",
        )),
        None => Ok(()),
    }
}

/// Whether an associatedCrossResourceSub entry is in a list (of after an UPDATE, or the
/// notificationURIs), in whatever ID form: a local resource is compared as the resource it
/// names (`resolve::names`), another CSE's as an address (its SP-relative and absolute forms
/// are one), anything else (a URL) as written.
pub(crate) fn still_named(cse: &Cse, entry: &str, now: &[String]) -> bool {
    if let Some(crs) = crate::resolve::local_resource(cse, entry) {
        return now.iter().any(|n| crate::resolve::names(cse, n, &crs));
    }
    let elsewhere = m2m_core::Address::parse(entry)
        .ok()
        .filter(|a| a.cse().is_some());
    now.iter().any(|n| {
        n == entry
            || elsewhere.as_ref().is_some_and(|a| {
                m2m_core::Address::parse(n).is_ok_and(|b| a.same_as(&b, &cse.id.sp_id))
            })
    })
}

/// The values the Hosting CSE sets when the subscriber does not: notification on update of the
/// resource (TS-0004 table 7.4.8.1-3; not when an operationMonitor stands instead), and the
/// notificationContentType of the event types (TS-0001 table 9.6.8-4) when they agree on one.
fn complete_defaults(attrs: &mut Map<String, Value>) {
    let enc = attrs.entry("enc").or_insert_with(|| json!({}));
    if let Some(e) = enc.as_object_mut() {
        if !e.contains_key("net") && !e.contains_key("om") {
            e.insert("net".into(), json!([1]));
        }
    }
    if attrs.get("nct").is_none_or(Value::is_null) {
        let defaults: Vec<u64> = attrs
            .get("enc")
            .map(|e| nets(e).map(default_nct).collect())
            .unwrap_or_default();
        match defaults.split_first() {
            Some((first, rest)) if rest.iter().all(|d| d == first) => {
                attrs.insert("nct".into(), json!(first));
            }
            // Event types of different defaults: the check below refuses it.
            Some(_) => {}
            None => {
                attrs.insert("nct".into(), json!(1));
            }
        }
    }
}

/// The checks of TS-0004 clause 7.4.8.2.1 / 7.4.8.2.3, Recv-6.4, on the subscription as it
/// would be: 4000 for criteria that contradict each other or the subscribed-to resource.
fn check_criteria(parent: &Resource, attrs: &Map<String, Value>) -> M2mResult<()> {
    let enc = attrs.get("enc").cloned().unwrap_or_else(|| json!({}));
    if enc.get("net").is_some() && enc.get("om").is_some() {
        return Err(M2mError::bad_request(
            "notificationEventType and operationMonitor exclude each other",
        ));
    }
    let monitors = enc.get("om").and_then(Value::as_array);
    if monitors
        .into_iter()
        .flatten()
        .any(|m| m.get("org").is_some() && m.get("or").is_some())
    {
        return Err(M2mError::bad_request(
            "an operationMonitor names its originator once (org)",
        ));
    }
    let event_types: Vec<u64> = nets(&enc).collect();
    super::time_series::check_missing_data_subscription(
        parent,
        &enc,
        event_types.contains(&MISSING_DATA),
    )?;
    let Some(nct) = attrs.get("nct").and_then(Value::as_u64) else {
        return Err(M2mError::bad_request(
            "the notificationEventTypes have different default notificationContentTypes: give one",
        ));
    };
    if let Some(net) = event_types.iter().find(|net| !nct_fits(nct, **net)) {
        return Err(M2mError::bad_request(format!(
            "notificationContentType {nct} is not valid for notificationEventType {net}"
        )));
    }
    let allowed = parent.ty.allowed_children();
    for chty in enc
        .get("chty")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let valid = chty
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .and_then(m2m_core::ResourceType::from_code)
            .is_some_and(|t| allowed.contains(&t));
        if !valid {
            return Err(M2mError::bad_request(format!(
                "childResourceType {chty} is not a child type of the subscribed-to resource"
            )));
        }
    }
    Ok(())
}

/// A blocking-update subscription (TS-0004 clause 7.4.8.2.1, Recv-6.4; TS-0001 10.2.10.7): the
/// only one on its resource (4124), its only event type, one resource-ID target, no other policy.
fn check_blocking(
    cse: &Cse,
    parent: &Resource,
    attrs: &Map<String, Value>,
    nus: &[String],
) -> M2mResult<()> {
    check_blocking_policies(attrs, nus)?;
    target_may_update(cse, parent, nus)?;
    let siblings = cse
        .store
        .read(|r| r.children(parent.ri(), Some(m2m_core::ResourceType::Subscription)))?;
    if siblings.iter().any(|s| is_blocking(&s.attrs)) {
        return Err(M2mError::new(
            ResponseStatusCode::BlockingSubscriptionAlreadyExists,
            "the resource already has a blocking subscription",
        ));
    }
    Ok(())
}

/// The one target of a blocking-update subscription decides every UPDATE of the resource, so it
/// must hold the UPDATE privilege there itself (TS-0001 clause 10.2.10.2: "check that this entity
/// has privileges for updating the subscribed-to resource"); otherwise whoever may only read and
/// subscribe could veto or stall the owner's updates. The target is judged as vouched for
/// (rules requiring authentication do not count for it): it is not the one asking.
fn target_may_update(cse: &Cse, subscribed: &Resource, nus: &[String]) -> M2mResult<()> {
    let Some(target) = nus.first() else {
        return Ok(());
    };
    match blocking_target_may_update(cse, target, subscribed)? {
        Some(true) => Ok(()),
        Some(false) => Err(M2mError::new(
            ResponseStatusCode::OriginatorHasNoPrivilege,
            "the notification target of a blocking update subscription may not update the resource",
        )),
        None => Err(M2mError::bad_request(
            "the notification target of a blocking update subscription must be an AE or CSE",
        )),
    }
}

/// Whether the entity the blocking target `nu` names may UPDATE `res` (judged as vouched for);
/// `None` when `nu` names no AE or CSE. Asked at CREATE, at an UPDATE of the target, and again
/// before every blocked UPDATE (`subscription_events::blocking_update`).
pub(crate) fn blocking_target_may_update(
    cse: &Cse,
    nu: &str,
    res: &Resource,
) -> M2mResult<Option<bool>> {
    let Some(entity) = notification::target_entity(cse, nu) else {
        return Ok(None);
    };
    let op = m2m_security::access_control::AccessOperation::Update;
    crate::access::permits_entity(cse, &entity, op, res).map(Some)
}

fn check_blocking_policies(attrs: &Map<String, Value>, nus: &[String]) -> M2mResult<()> {
    let bad = |what: &str| Err(M2mError::bad_request(what.to_owned()));
    let enc = attrs.get("enc").cloned().unwrap_or_default();
    if nets(&enc).any(|n| n != BLOCKING_UPDATE) {
        return bad("a blocking update subscription has no other notificationEventType");
    }
    if let Some(k) = enc
        .as_object()
        .and_then(|e| e.keys().find(|k| !["net", "atr"].contains(&k.as_str())))
    {
        return bad(&format!(
            "a blocking update subscription takes no '{k}' condition"
        ));
    }
    if nus.len() != 1 || nus.iter().any(|nu| notification::is_url(nu)) {
        return bad("a blocking update subscription has one notification target, a resource ID");
    }
    for k in ["exc", "bn", "ln", "nec", "nse", "eeno", "su"] {
        if attrs.get(k).is_some_and(|v| !v.is_null()) {
            return bad(&format!(
                "a blocking update subscription takes no '{k}' policy"
            ));
        }
    }
    Ok(())
}

/// The subscription attributes this CSE acts on: nu, enc with net 1-4 and 7, atr and chty, exc,
/// nct, su, bn, ln, nec, nse, eeno. Any other feature the schema knows (rateLimit, pending
/// notifications, group fan-out subscriptions, the other event criteria...) is refused with 5001
/// NOT_IMPLEMENTED (TS-0004 clause 7.3.3.2: an attribute or value of a feature the Hosting CSE
/// does not support), never stored and ignored.
fn check_supported(attrs: &Map<String, Value>) -> M2mResult<()> {
    let unsupported = |what: &str| {
        Err(M2mError::new(
            ResponseStatusCode::NotImplemented,
            format!("{what} is not supported by this CSE"),
        ))
    };
    let set = |k: &str| attrs.get(k).is_some_and(|v| !v.is_null());
    for (k, what) in [
        ("gpi", "groupID"),
        ("nfu", "notificationForwardingURI"),
        ("nsp", "notificationStoragePriority"),
    ] {
        if set(k) {
            return unsupported(what);
        }
    }
    // rateLimit: a window of 1 s at least, and at least one event in it (else the events
    // would wait forever).
    if let Some(rl) = attrs.get("rl").filter(|v| !v.is_null()) {
        let mnn = rl.get("mnn").and_then(Value::as_u64).unwrap_or(0);
        let tww = rl.get("tww").and_then(m2m_core::time::parse_duration);
        if mnn == 0 || tww.is_none_or(|d| d < std::time::Duration::from_secs(1)) {
            return Err(M2mError::bad_request(
                "rateLimit: at least 1 notification in a window of 1 s at least",
            ));
        }
    }
    if let Some(enc) = attrs.get("enc").and_then(Value::as_object) {
        if let Some(k) = enc.keys().find(|k| {
            ![
                "net", "atr", "chty", "md", "om", "crb", "cra", "ms", "us", "sts", "stb", "exb",
                "exa", "sza", "szb", "fo",
            ]
            .contains(&k.as_str())
        }) {
            return unsupported(&format!("the eventNotificationCriteria condition '{k}'"));
        }
        let v = Value::Object(enc.clone());
        if nets(&v).any(|n| matches!(n, 5 | 6)) {
            return unsupported("this notificationEventType");
        }
    }
    Ok(())
}

/// Checks every notificationURI's form (a URL of this binding, or an AE-ID/CSE-ID), then sends a
/// verification request to every target that is not the originator itself; a malformed target is
/// the requester's error (4000), a refusal SUBSCRIPTION_VERIFICATION_INITIATION_FAILED (5204, TS-0004
/// clause 7.3.8.2.1). What a target answered, or why it could not be reached, goes to the log, not
/// to the requester: the CSE is nobody's port scanner.
pub(crate) async fn verify(call: super::Call<'_>, sub_ri: &str, nus: &[String]) -> M2mResult<()> {
    let cse = call.cse;
    for nu in nus {
        check_target(cse, nu)?;
    }
    let originator = call.req.from.as_deref().unwrap_or("");
    // A target that is the originator is not asked (TS-0004 clause 7.4.8.2.1): only when the
    // originator is one its association or listener vouches for, not a mere claim of a From.
    let proven = call.peer.proof.identifies();
    for nu in nus {
        if proven && notification::is_originator(cse, nu, originator) {
            continue;
        }
        // A <crossResourceSubscription> this CSE is creating accepts: it is the one asking.
        if cse.cross_resources.is_pending(nu) {
            continue;
        }
        let sgn =
            json!({ "m2m:sgn": { "vrq": true, "sur": cse.sp_relative(sub_ri), "cr": originator } });
        let resp = notification::send_now(cse, nu, sgn).await;
        if !resp.rsc.is_success() {
            tracing::info!(target: "audit", target_uri = %m2m_transport::connector::loggable(nu), rsc = resp.rsc.code(), dbg = resp.dbg().unwrap_or(""), "subscription verification failed");
            return Err(M2mError::new(
                ResponseStatusCode::SubscriptionVerificationInitiationFailed,
                "a notification target did not accept the verification request",
            ));
        }
    }
    Ok(())
}

/// A notificationURI is an http(s) URL with a host, an AE-ID/CSE-ID or a resource address.
fn check_target(cse: &Cse, nu: &str) -> M2mResult<()> {
    let bad = || {
        M2mError::bad_request(
            "notificationURI must be an http:// or https:// URL, an AE-ID/CSE-ID or a resource address",
        )
    };
    if let Some(rest) = nu
        .strip_prefix("http://")
        .or_else(|| nu.strip_prefix("https://"))
    {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains('@') || nu.parse::<http::Uri>().is_err() {
            return Err(bad());
        }
        return Ok(());
    }
    if m2m_core::EntityId::parse(nu, &cse.id.home).is_ok() {
        return Ok(());
    }
    let Ok(addr) = m2m_core::Address::parse(nu) else {
        return Err(bad());
    };
    // A target is an entity (TS-0001 table 9.6.8-2: an <AE> or <CSEBase>), never a virtual
    // resource: a group's fanOutPoint answers for its members without asking them, and would
    // carry every notification to all of them.
    if crate::resolve::locality(cse, &addr) == crate::resolve::Locality::Local
        && matches!(
            crate::resolve::resolve(cse, &addr),
            Ok(t) if !matches!(t, crate::resolve::Target::Resource(_))
        )
    {
        return Err(M2mError::bad_request(
            "notificationURI names a virtual resource, not an entity",
        ));
    }
    Ok(())
}

/// The type's behaviour: criteria and targets checked, targets verified at creation and
/// update; the statistics of notificationStatsEnable reset as TS-0004 (Release 4) says.
pub struct Subscription;

impl super::Behaviour for Subscription {
    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        crate::subscription_events::watch_operations(cse, res);
        crate::subscription_events::pre_subscription_notify(cse, res);
    }

    fn prepare_create<'a>(
        &'a self,
        call: super::Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<Prepared>> {
        Box::pin(prepare_create(call, parent, attrs))
    }

    fn prepare_update<'a>(
        &'a self,
        call: super::Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        Box::pin(prepare_update(call, res, content))
    }

    /// A changed missingData condition restarts its window (TS-0004 table 6.3.5.7-1).
    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        crate::subscription_events::watch_operations(cse, res);
        if changed.contains_key("enc") {
            cse.time_series.reset_window(res.ri());
        }
    }

    /// A `<crossResourceSubscription>` dropped from associatedCrossResourceSub is told the
    /// subscription is gone for it (TS-0004 clause 7.4.8.2.3, Recv-6.5), before the UPDATE is
    /// answered (the dispatcher bounds the wait): a local one that relied on it is deleted by
    /// then and its subscriber told.
    fn settle_update<'a>(
        &'a self,
        cse: &'a Arc<Cse>,
        res: &'a Resource,
        changed: &'a Map<String, Value>,
        before: &'a Map<String, Value>,
    ) -> super::Pending<'a, ()> {
        if !changed.contains_key("acrs") {
            return super::ready(());
        }
        let now = string_list(res.attrs.get("acrs"));
        // Told only if it was a notificationURI too (verified), as at the deletion: the
        // notificationURIs before this UPDATE (`before` holds only what it changed).
        let nus = string_list(if changed.contains_key("nu") {
            before.get("nu")
        } else {
            res.attrs.get("nu")
        });
        let told: Vec<_> = string_list(before.get("acrs"))
            .iter()
            .filter(|a| !still_named(cse, a, &now) && still_named(cse, a, &nus))
            .filter_map(|gone| crate::subscription_events::subscription_gone(cse, res, gone))
            .collect();
        Box::pin(async move {
            for done in told {
                let _ = done.await;
            }
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
        // enc or nct removed: their defaults again.
        complete_defaults(&mut res.attrs);
        // notificationStatsEnable set (again) starts the statistics anew; removed, they go.
        if changed.contains_key("nse") && res.attrs.get("nse") != Some(&Value::Bool(false)) {
            res.attrs.remove("nsi");
        }
        if let Some(bn) = res.attrs.get_mut("bn").and_then(Value::as_object_mut) {
            bn.entry("dur")
                .or_insert_with(|| json!(DEFAULT_BATCH_DURATION));
        }
        Ok(())
    }
}
