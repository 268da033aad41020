//! <subscription> (TS-0004 clause 7.4.8): target checks and the verification request sent to
//! each notificationURI before the subscription is created (TS-0004 clause 7.3.3.x, "verificationRequest").

use super::Prepared;
use crate::cse::Cse;
use crate::notification;
use crate::store::{string_list, Resource};
use m2m_core::{M2mError, M2mResult, Request, ResponseStatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub async fn prepare_create(
    cse: &Arc<Cse>,
    req: &Request,
    _parent: &Resource,
    attrs: &mut Map<String, Value>,
) -> M2mResult<Prepared> {
    check_supported(attrs)?;
    let ri = crate::dispatcher::new_ri(m2m_core::ResourceType::Subscription);
    let nus = string_list(attrs.get("nu"));
    if nus.is_empty() {
        return Err(M2mError::bad_request(
            "notificationURI must name at least one target",
        ));
    }
    verify(cse, req, &ri, &nus).await?;
    if !attrs.contains_key("nct") {
        attrs.insert("nct".into(), json!(1));
    }
    Ok(Prepared {
        ri: Some(ri),
        credential: None,
    })
}

pub async fn prepare_update(
    cse: &Arc<Cse>,
    req: &Request,
    res: &Resource,
    content: &Map<String, Value>,
) -> M2mResult<()> {
    check_supported(content)?;
    let old = string_list(res.attrs.get("nu"));
    let new: Vec<String> = string_list(content.get("nu"))
        .into_iter()
        .filter(|n| !old.contains(n))
        .collect();
    verify(cse, req, res.ri(), &new).await
}

/// The subscription attributes this CSE acts on: nu, enc with net 1-4, atr and chty, exc, nct 1-3,
/// su. Any other feature the schema knows (batchNotify, latestNotify, rateLimit, pending
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
        ("bn", "batchNotify"),
        ("rl", "rateLimit"),
        ("psn", "preSubscriptionNotify"),
        ("pn", "pendingNotification"),
        ("nsp", "notificationStoragePriority"),
        ("nec", "notificationEventCat"),
        ("acrs", "associatedCrossResourceSub"),
    ] {
        if set(k) {
            return unsupported(what);
        }
    }
    if attrs.get("ln") == Some(&Value::Bool(true)) {
        return unsupported("latestNotify");
    }
    if attrs
        .get("nct")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 3)
    {
        return unsupported("this notificationContentType");
    }
    if let Some(enc) = attrs.get("enc").and_then(Value::as_object) {
        if let Some(k) = enc
            .keys()
            .find(|k| !["net", "atr", "chty"].contains(&k.as_str()))
        {
            return unsupported(&format!("the eventNotificationCriteria condition '{k}'"));
        }
        let nets = enc
            .get("net")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        if nets.filter_map(Value::as_u64).any(|n| n > 4) {
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
async fn verify(cse: &Arc<Cse>, req: &Request, sub_ri: &str, nus: &[String]) -> M2mResult<()> {
    for nu in nus {
        check_target(cse, nu)?;
    }
    let originator = req.from.as_deref().unwrap_or("");
    for nu in nus {
        if notification::is_originator(cse, nu, originator) {
            continue;
        }
        let sgn =
            json!({ "m2m:sgn": { "vrq": true, "sur": cse.sp_relative(sub_ri), "cr": originator } });
        let resp = notification::send_now(cse, nu, sgn).await;
        if !resp.rsc.is_success() {
            tracing::info!(target: "audit", target_uri = %nu, rsc = resp.rsc.code(), dbg = resp.dbg().unwrap_or(""), "subscription verification failed");
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
    if m2m_core::EntityId::parse(nu, &cse.id.home).is_ok() || m2m_core::Address::parse(nu).is_ok() {
        return Ok(());
    }
    Err(bad())
}

/// The type's behaviour: targets checked and verified at creation and update.
pub struct Subscription;

impl super::Behaviour for Subscription {
    fn prepare_create<'a>(
        &'a self,
        call: super::Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<Prepared>> {
        Box::pin(prepare_create(call.cse, call.req, parent, attrs))
    }

    fn prepare_update<'a>(
        &'a self,
        call: super::Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        Box::pin(prepare_update(call.cse, call.req, res, content))
    }
}
