//! `<schedule>` (TS-0004 clause 7.4.9, TS-0001 clause 9.6.9): time windows, as m2m:scheduleEntry
//! lines of 7 fields in UTC (table 7.4.9.1-4), for its parent.
//!
//! - Under a `<subscription>` or `<crossResourceSubscription>` it is the notification schedule,
//!   named `notificationSchedule` (one at most): the CSE sends the subscription's notifications
//!   only while one of its entries matches, and discards the others unless the subscription's
//!   pendingNotification keeps them for when an entry matches again (`subscription_events`), except
//!   with notificationEventCat immediate (2), which ignores the schedule (TS-0004 clause
//!   7.5.1.2.2).
//! - The CSEBase has at most one (its reachability schedule).
//! - Under the CSEBase or a `<node>` it is stored and served; the CSE does not hold requests back
//!   by it (the reachability of entities is theirs to announce).
//! - `nco` (networkCoordinated) belongs to a schedule under a `<node>`: elsewhere 4102
//!   CONTENTS_UNACCEPTABLE (clause 7.4.9.2.1). True asks the IN-CSE to coordinate the schedule
//!   with an Underlying Network (TS-0001 table 9.6.9-2), which this CSE has no interface to:
//!   5001 NOT_IMPLEMENTED rather than a promise it would not keep; false is stored.

use super::{Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{string_list, Resource};
use m2m_core::{M2mError, M2mResult, ResourceType, ResponseStatusCode as Rsc};
use m2m_security::access_control::window::Schedule as Entry;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

pub struct Schedule;

impl Behaviour for Schedule {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready((|| {
            check(parent.ty, attrs)?;
            one_per_parent(call.cse, parent, attrs)?;
            Ok(Prepared::default())
        })())
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready((|| {
            check(crate::resolve::parent_of(call.cse, res)?.ty, content)
        })())
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.schedules.refresh(cse, res.pi());
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.schedules.refresh(cse, res.pi());
    }
}

/// The name of a subscription's schedule (TS-0004 tables 7.4.8.1-4, 7.4.58.1-4).
const NOTIFICATION_SCHEDULE: &str = "notificationSchedule";

/// A subscription or crossResourceSubscription has one schedule, `notificationSchedule` (its
/// name is given when the request names none); the CSEBase has one (TS-0004 table 7.4.3.1-3);
/// a node any number. A second: 4000.
fn one_per_parent(cse: &Cse, parent: &Resource, attrs: &mut Map<String, Value>) -> M2mResult<()> {
    match parent.ty {
        ResourceType::Subscription | ResourceType::CrossResourceSubscription => {
            match attrs.get("rn").and_then(Value::as_str) {
                None => {
                    attrs.insert("rn".into(), Value::from(NOTIFICATION_SCHEDULE));
                }
                Some(NOTIFICATION_SCHEDULE) => {}
                Some(_) => {
                    return Err(M2mError::bad_request(
                        "the schedule of a subscription is named notificationSchedule",
                    ))
                }
            }
        }
        ResourceType::CseBase => {
            let existing = cse
                .store
                .read(|r| r.children(parent.ri(), Some(ResourceType::Schedule)))?;
            if !existing.is_empty() {
                return Err(M2mError::bad_request("the CSEBase has one schedule"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The most entries a schedule holds (each is read at every notification of its subscription).
const MAX_ENTRIES: usize = 64;

/// Schedule entries of attribute `name` (a `<schedule>`'s, a dataCollection's): at most
/// [`MAX_ENTRIES`], each a 7-field crontab entry (4000 otherwise).
pub(crate) fn check_entries<'a>(
    name: &str,
    entries: impl IntoIterator<Item = &'a str>,
) -> M2mResult<()> {
    for (i, entry) in entries.into_iter().enumerate() {
        if i == MAX_ENTRIES {
            return Err(M2mError::bad_request(format!(
                "attribute '{name}': at most {MAX_ENTRIES} entries"
            )));
        }
        Entry::parse(entry)
            .map_err(|e| M2mError::bad_request(format!("attribute '{name}': {e}")))?;
    }
    Ok(())
}

/// The entries parse (at most [`MAX_ENTRIES`]); `nco` only under a `<node>`.
fn check(parent: ResourceType, attrs: &Map<String, Value>) -> M2mResult<()> {
    check_entries("se/sce", entries(attrs).iter().map(String::as_str))?;
    if attrs.contains_key("nco") && parent != ResourceType::Node {
        return Err(M2mError::new(
            Rsc::ContentsUnacceptable,
            "networkCoordinated is for a schedule of a <node> only",
        ));
    }
    if attrs.get("nco") == Some(&Value::Bool(true)) {
        return Err(M2mError::new(
            Rsc::NotImplemented,
            "schedule coordination with an Underlying Network is not supported",
        ));
    }
    Ok(())
}

fn entries(attrs: &Map<String, Value>) -> Vec<String> {
    string_list(attrs.get("se").and_then(|se| se.get("sce")))
}

/// The subscriptions that have a notification schedule, so that a notification of any other
/// pays a set lookup only.
#[derive(Default)]
pub struct Schedules {
    scheduled: RwLock<HashSet<String>>,
}

impl Schedules {
    /// Reads again whether `parent` has schedules (after one came or went).
    fn refresh(&self, cse: &Cse, parent: &str) {
        let any = cse
            .store
            .read(|r| r.children(parent, Some(ResourceType::Schedule)))
            .map(|c| !c.is_empty())
            .unwrap_or(true);
        let mut set = self.scheduled.write().unwrap_or_else(|e| e.into_inner());
        if any {
            set.insert(parent.to_owned());
        } else {
            set.remove(parent);
        }
    }

    /// Every parent with a schedule (at start: one read of the schedules).
    pub fn load(&self, cse: &Cse) -> M2mResult<()> {
        let all = cse.store.read(|r| r.all_of_type(ResourceType::Schedule))?;
        let mut set = self.scheduled.write().unwrap_or_else(|e| e.into_inner());
        set.extend(all.iter().map(|s| s.pi().to_owned()));
        Ok(())
    }

    /// Whether `sub` may notify now: it has no schedule, or one of its schedules' entries
    /// matches the current time (UTC).
    pub fn allows(&self, cse: &Cse, sub: &Resource) -> bool {
        let has = self
            .scheduled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sub.ri());
        if !has {
            return true;
        }
        let now = cse.now();
        let schedules = cse
            .store
            .read(|r| r.children(sub.ri(), Some(ResourceType::Schedule)))
            .unwrap_or_default();
        schedules.is_empty()
            || schedules.iter().any(|s| {
                entries(&s.attrs)
                    .iter()
                    .any(|e| Entry::parse(e).is_ok_and(|e| e.matches(&now)))
            })
    }
}
