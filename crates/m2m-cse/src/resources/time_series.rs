//! `<timeSeries>` and `<timeSeriesInstance>` (TS-0004 clauses 7.4.38, 7.4.39; TS-0001 clause
//! 10.2.4.29): instances counted and limited as in a container ([`super::container`]), one
//! instance per dataGenerationTime, and missing data detection with its reports to the
//! missingData subscriptions (TS-0004 clause 7.5.1.2.9).
//!
//! Detection: with periodicInterval set and missingDataDetect true, the first instance starts the
//! monitoring. The N-th expected dataGenerationTime is the first one plus N periodicIntervals; an
//! instance within periodicIntervalDelta of it must be there when missingDataDetectTimer has
//! passed after it, or the expected time joins missingDataList. Only expected times whose
//! detection time comes after the monitoring started are judged: a first instance dated long ago
//! does not flood the list with points nobody could have sent. The monitoring lives in memory and
//! starts again with the next instance after a restart.

use super::{Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use chrono::{DateTime, Utc};
use m2m_core::EntityId;
use m2m_core::{M2mError, M2mResult, ResourceType};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The attributes that an UPDATE may not change together with missingDataDetect, nor while it is
/// true (TS-0004 clause 7.4.38.2.3).
const MONITORING_ATTRIBUTES: [&str; 4] = ["mdt", "mdn", "peid", "pei"];

/// The shortest periodicInterval and missingDataDetectTimer this CSE monitors (a local policy:
/// each period costs a store write), and the longest (a year; the arithmetic stays in range).
const MIN_PERIOD_MS: u64 = 100;
const MAX_PERIOD_MS: u64 = 365 * 24 * 3_600 * 1_000;

/// missingDataList entries kept at most when missingDataMaxNr is not set.
const MAX_MISSING_LIST: usize = 10_000;

/// The `<timeSeries>` type.
pub struct TimeSeries;

impl super::Behaviour for TimeSeries {
    fn prepare_create<'a>(
        &'a self,
        _call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        let checked = periodic_interval_delta(attrs, true).and_then(|()| detection(attrs));
        attrs.insert("cni".into(), json!(0));
        attrs.insert("cbs".into(), json!(0));
        attrs.insert("mdc".into(), json!(0));
        // "If not set then this is treated as false" (TS-0004 table 7.4.38.1-3): shown so.
        attrs.entry("mdd").or_insert(json!(false));
        super::ready(checked.map(|()| Prepared::default()))
    }

    fn prepare_update<'a>(
        &'a self,
        _call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready(check_update(res, content))
    }

    fn apply_update(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        if changed.contains_key("pei") && !changed.contains_key("peid") {
            res.attrs.remove("peid");
            periodic_interval_delta(&mut res.attrs, true)?;
        }
        // missingDataDetect set to true starts afresh; false keeps what was found.
        if changed.get("mdd") == Some(&Value::Bool(true)) {
            res.attrs.remove("mdlt");
            res.attrs.insert("mdc".into(), json!(0));
        }
        super::container::after_update(cse, w, res, changed)
    }

    fn updated(
        &self,
        cse: &Arc<Cse>,
        res: &Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
    ) {
        // Monitoring (re)starts with the next instance, or stops.
        if changed.contains_key("mdd") {
            cse.time_series.stop(res.ri());
        }
    }

    fn child_deleted(
        &self,
        _cse: &Cse,
        w: &Writer<'_>,
        res: &Resource,
        child: &Resource,
    ) -> M2mResult<()> {
        if child.ty == ResourceType::TimeSeriesInstance {
            super::container::instance_removed(w, res, child)?;
        }
        Ok(())
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.time_series.stop(res.ri());
    }
}

/// periodicIntervalDelta at most half the periodicInterval (TS-0004 clause 7.4.38.2.1); when
/// only the interval is given, the CSE's policy: half of missingDataDetectTimer when that is
/// within the bound (so that the timer can exceed the delta), else half of the interval.
fn periodic_interval_delta(attrs: &mut Map<String, Value>, set_default: bool) -> M2mResult<()> {
    for k in ["pei", "mdt"] {
        if attrs
            .get(k)
            .and_then(Value::as_u64)
            .is_some_and(|v| !(MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&v))
        {
            return Err(M2mError::bad_request(format!(
                "'{k}' must lie between {MIN_PERIOD_MS} ms and a year"
            )));
        }
    }
    let Some(pei) = attrs.get("pei").and_then(Value::as_u64) else {
        return Ok(());
    };
    match attrs.get("peid").and_then(Value::as_u64) {
        Some(peid) if peid > pei / 2 => Err(M2mError::bad_request(
            "periodicIntervalDelta must be at most half the periodicInterval",
        )),
        Some(_) => Ok(()),
        None if set_default => {
            let half = pei / 2;
            let peid = match attrs.get("mdt").and_then(Value::as_u64) {
                Some(mdt) if mdt <= half => mdt / 2,
                _ => half,
            };
            attrs.insert("peid".into(), json!(peid));
            Ok(())
        }
        None => Ok(()),
    }
}

/// missingDataDetect true needs missingDataDetectTimer, greater than periodicIntervalDelta.
fn detection(attrs: &Map<String, Value>) -> M2mResult<()> {
    if attrs.get("mdd") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    let mdt = attrs
        .get("mdt")
        .and_then(Value::as_u64)
        .ok_or_else(|| M2mError::bad_request("missingDataDetect needs missingDataDetectTimer"))?;
    if attrs
        .get("peid")
        .and_then(Value::as_u64)
        .is_some_and(|peid| mdt <= peid)
    {
        return Err(M2mError::bad_request(
            "missingDataDetectTimer must be greater than periodicIntervalDelta",
        ));
    }
    Ok(())
}

fn check_update(res: &Resource, content: &Map<String, Value>) -> M2mResult<()> {
    let touches_monitoring = MONITORING_ATTRIBUTES
        .iter()
        .any(|k| content.contains_key(*k));
    if touches_monitoring && content.contains_key("mdd") {
        return Err(M2mError::bad_request(
            "missingDataDetect cannot change together with the monitoring attributes",
        ));
    }
    if touches_monitoring && res.attrs.get("mdd") == Some(&Value::Bool(true)) {
        return Err(M2mError::bad_request(
            "the monitoring attributes cannot change while missingDataDetect is true",
        ));
    }
    let mut merged = super::merged(res, content);
    if content.contains_key("pei") && !content.contains_key("peid") {
        merged.remove("peid");
    }
    periodic_interval_delta(&mut merged, true)?;
    detection(&merged)
}

/// The `<timeSeriesInstance>` type.
pub struct TimeSeriesInstance;

impl super::Behaviour for TimeSeriesInstance {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        let dgt = attrs
            .get("dgt")
            .ok_or_else(|| M2mError::bad_request("dataGenerationTime is mandatory"))
            .and_then(|v| generation_time(v, call.cse.now()));
        super::ready(dgt.map(|t| {
            // A relative dataGenerationTime becomes the absolute time it stands for.
            if attrs.get("dgt").is_some_and(Value::is_number) {
                attrs.insert("dgt".into(), json!(m2m_core::time::format(t)));
            }
            Prepared::default()
        }))
    }

    /// `tsi_` and a time-ordered suffix, so that instances list in creation order.
    fn default_name(&self, _ri: &str) -> String {
        format!("tsi_{}", crate::dispatcher::time_ordered_suffix())
    }

    /// One instance per dataGenerationTime in a timeSeries (TS-0004 clause 7.4.39.2.1): checked
    /// inside the write, so that two at once cannot both pass.
    fn insert(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        let dgt = new
            .attrs
            .get("dgt")
            .map(|v| generation_time(v, cse.now()))
            .transpose()?;
        for sibling in w.children(parent.ri(), Some(ResourceType::TimeSeriesInstance))? {
            let same = sibling
                .attrs
                .get("dgt")
                .and_then(|v| generation_time(v, cse.now()).ok());
            if dgt.is_some() && same == dgt {
                return Err(M2mError::conflict(
                    "an instance with this dataGenerationTime exists in the timeSeries",
                ));
            }
        }
        super::container::insert_instance(cse, w, parent, new)
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        let Some(dgt) = res
            .attrs
            .get("dgt")
            .and_then(|v| generation_time(v, cse.now()).ok())
        else {
            return;
        };
        match cse.store.get(res.pi()) {
            Ok(Some(ts)) => cse.time_series.received(cse, &ts, dgt),
            Ok(None) => {}
            Err(e) => tracing::warn!(dbg = %e.dbg, "timeSeries unreadable"),
        }
    }
}

/// An m2m:absRelTimestamp: a timestamp, or milliseconds relative to now.
/// The same reading as the request's time parameters (`validity::abs_rel`).
fn generation_time(v: &Value, now: DateTime<Utc>) -> M2mResult<DateTime<Utc>> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() => n.to_string(),
        _ => {
            return Err(M2mError::bad_request(
                "dataGenerationTime must be a timestamp or milliseconds from now",
            ))
        }
    };
    crate::validity::abs_rel("dataGenerationTime", &text, now)
}

/// The running missing data monitors, by timeSeries resourceID, and the missingData windows of
/// the subscriptions, by subscription resourceID.
#[derive(Default)]
pub struct Monitors {
    monitors: Mutex<HashMap<String, Monitor>>,
    next_id: std::sync::atomic::AtomicU64,
    windows: Mutex<HashMap<String, Window>>,
}

struct Monitor {
    /// Tells the task whether the entry is still its own when it ends.
    id: u64,
    /// dataGenerationTimes (ms since the epoch) received and not yet judged, at most
    /// [`MAX_UNJUDGED`] (the latest go first: they are the furthest from being judged).
    received: BTreeSet<i64>,
    task: tokio::task::AbortHandle,
}

/// The most dataGenerationTimes a monitor holds before judging them.
const MAX_UNJUDGED: usize = 10_000;

/// A missingData subscription's window (TS-0001 clause 10.2.4.29): started by the first missing
/// point, counting until `until`.
struct Window {
    until: DateTime<Utc>,
    count: u64,
    /// The points detected since the last notification.
    unreported: Vec<String>,
}

impl Monitors {
    fn monitors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Monitor>> {
        self.monitors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the monitoring of a timeSeries (deleted, or missingDataDetect changed).
    pub fn stop(&self, ts_ri: &str) {
        if let Some(m) = self.monitors().remove(ts_ri) {
            m.task.abort();
        }
    }

    /// A subscription's missingData changed or it went: its window starts anew.
    pub fn reset_window(&self, sub_ri: &str) {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sub_ri);
    }

    /// An instance arrived: the first starts the monitoring when the timeSeries asks for it.
    fn received(&self, cse: &Arc<Cse>, ts: &Resource, dgt: DateTime<Utc>) {
        let monitoring = ts.attrs.get("mdd") == Some(&Value::Bool(true))
            && ts.u64_attr("pei").is_some()
            && ts.u64_attr("mdt").is_some();
        if !monitoring {
            return;
        }
        let mut monitors = self.monitors();
        if let Some(m) = monitors.get_mut(ts.ri()) {
            m.received.insert(dgt.timestamp_millis());
            if m.received.len() > MAX_UNJUDGED {
                m.received.pop_last();
            }
            return;
        }
        // The task's end takes this lock: the entry is in before the task can look for it.
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = tokio::spawn(monitor(
            Arc::clone(cse),
            ts.ri().to_owned(),
            id,
            dgt,
            cse.now(),
        ));
        monitors.insert(
            ts.ri().to_owned(),
            Monitor {
                id,
                received: BTreeSet::new(),
                task: task.abort_handle(),
            },
        );
    }

    /// Whether an instance within `delta` of `expected` arrived; forgets what is older.
    fn judge(&self, ts_ri: &str, expected: i64, delta: i64) -> Option<bool> {
        let mut monitors = self.monitors();
        let m = monitors.get_mut(ts_ri)?;
        let present = m
            .received
            .range(expected - delta..=expected + delta)
            .next()
            .is_some();
        m.received = m.received.split_off(&(expected - delta));
        Some(present)
    }
}

/// The monitoring of one timeSeries from its first instance, generated at `first`.
async fn monitor(cse: Arc<Cse>, ri: String, id: u64, first: DateTime<Utc>, started: DateTime<Utc>) {
    let first_ms = first.timestamp_millis();
    let mut n: i64 = 1;
    loop {
        // The current settings each round: an UPDATE while monitoring may not change them, but
        // the resource may be gone.
        let ts = match cse.store.get(&ri) {
            Ok(Some(ts)) if ts.attrs.get("mdd") == Some(&Value::Bool(true)) => ts,
            _ => break,
        };
        let (Some(pei), Some(mdt)) = (ts.u64_attr("pei"), ts.u64_attr("mdt")) else {
            break;
        };
        // Both within a year (checked at CREATE and UPDATE); peid at most half of pei.
        let bounded = |v: u64| v.min(MAX_PERIOD_MS) as i64;
        let (pei, mdt) = (bounded(pei).max(1), bounded(mdt));
        let peid = bounded(ts.u64_attr("peid").unwrap_or(0)).min(pei / 2);
        // Skip the expected times judged before the monitoring started.
        let started_ms = started.timestamp_millis();
        if first_ms
            .saturating_add(n.saturating_mul(pei))
            .saturating_add(mdt)
            < started_ms
        {
            n = started_ms.saturating_sub(mdt).saturating_sub(first_ms) / pei + 1;
        }
        let expected = first_ms.saturating_add(n.saturating_mul(pei));
        let detect_at = expected.saturating_add(mdt);
        let wait = detect_at - Utc::now().timestamp_millis();
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
        }
        match cse.time_series.judge(&ri, expected, peid) {
            Some(true) => {}
            Some(false) => {
                let at = DateTime::from_timestamp_millis(expected).unwrap_or(first);
                if let Err(e) = missing(&cse, &ri, at).await {
                    tracing::warn!(dbg = %e.dbg, "missing data point not recorded");
                }
            }
            None => break,
        }
        n += 1;
    }
    // Ended by itself (the timeSeries gone or no longer monitored): its entry goes, unless a
    // new monitor took its place.
    let mut monitors = cse.time_series.monitors();
    if monitors.get(&ri).is_some_and(|m| m.id == id) {
        monitors.remove(&ri);
    }
}

/// A missing data point: into missingDataList (bounded by missingDataMaxNr), then to the
/// missingData subscriptions.
async fn missing(cse: &Arc<Cse>, ri: &str, expected: DateTime<Utc>) -> M2mResult<()> {
    let point = m2m_core::time::format(expected);
    let p = point.clone();
    let id = ri.to_owned();
    let ts = cse
        .store
        .write(move |w| {
            let Some(mut ts) = w.get(&id)? else {
                return Ok(None);
            };
            let max = ts
                .u64_attr("mdn")
                .map_or(MAX_MISSING_LIST, |n| n as usize)
                .min(MAX_MISSING_LIST);
            let list = ts.attrs.entry("mdlt").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(json!(p));
                let excess = list.len().saturating_sub(max);
                list.drain(..excess);
                let len = list.len();
                ts.attrs.insert("mdc".into(), json!(len));
            }
            w.update(&ts)?;
            Ok(Some(ts))
        })
        .await?;
    let Some(ts) = ts else {
        return Ok(());
    };
    let subs = cse
        .store
        .read(|r| r.children(ts.ri(), Some(ResourceType::Subscription)))?;
    for sub in subs {
        let Some(md) = sub.attrs.get("enc").and_then(|e| e.get("md")) else {
            continue;
        };
        let reports_missing = sub
            .attrs
            .get("enc")
            .and_then(|e| e.get("net"))
            .and_then(Value::as_array)
            .is_some_and(|n| n.iter().any(|v| v.as_u64() == Some(8)));
        if !reports_missing {
            continue;
        }
        if let Some(report) = cse.time_series.count_in_window(&sub, md, &point) {
            let sgn = json!({
                "nev": { "rep": { "m2m:tsn": report }, "net": 8 },
                "sur": cse.sp_relative(sub.ri()),
            });
            crate::subscription_events::notify_subscription(cse, &sub, sgn);
        }
    }
    Ok(())
}

impl Monitors {
    /// Counts a missing point in a subscription's window; the timeSeriesNotification to send
    /// when the count reached the subscription's number (and for each point after, until the
    /// window ends).
    fn count_in_window(&self, sub: &Resource, md: &Value, point: &str) -> Option<Value> {
        let num = md.get("num").and_then(Value::as_u64)?;
        let dur = md.get("dur").and_then(m2m_core::time::parse_duration)?;
        let now = Utc::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows
            .entry(sub.ri().to_owned())
            .or_insert_with(|| Window {
                until: now,
                count: 0,
                unreported: Vec::new(),
            });
        if window.until <= now {
            *window = Window {
                until: now + chrono::Duration::from_std(dur).unwrap_or_default(),
                count: 0,
                unreported: Vec::new(),
            };
        }
        window.count += 1;
        window.unreported.push(point.to_owned());
        (window.count >= num).then(|| {
            let mdlt = std::mem::take(&mut window.unreported);
            json!({ "mdlt": mdlt, "mdc": window.count })
        })
    }
}

/// A missingData condition (or net 8) needs a `<timeSeries>` (TS-0004 clause 7.4.8.2.1).
pub fn check_missing_data_subscription(
    parent: &Resource,
    enc: &Value,
    reports_missing: bool,
) -> M2mResult<()> {
    let md = enc.get("md");
    if (reports_missing || md.is_some()) && parent.ty != ResourceType::TimeSeries {
        return Err(M2mError::bad_request(
            "missingData needs a timeSeries as the subscribed-to resource",
        ));
    }
    if reports_missing && md.is_none() {
        return Err(M2mError::bad_request(
            "notificationEventType 8 needs the missingData condition",
        ));
    }
    Ok(())
}
