//! `<schedule>` (TS-0004 clause 7.4.9, TS-0001 clause 9.6.9): time windows, as m2m:scheduleEntry
//! lines of 7 fields in UTC (table 7.4.9.1-4), for its parent.
//!
//! - Under a `<subscription>` it is the notification schedule: the CSE sends the subscription's
//!   notifications only while one of its entries matches, and discards the others (no
//!   pendingNotification here: nothing is held for later).
//! - Under the CSEBase or a `<node>` it is stored and served; the CSE does not hold requests back
//!   by it (the reachability of entities is theirs to announce).
//! - `nco` (networkCoordinated) belongs to a schedule under a `<node>`: elsewhere 4102
//!   CONTENTS_UNACCEPTABLE (clause 7.4.9.2.1).

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
        _call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready(check(parent.ty, attrs).map(|()| Prepared::default()))
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready((|| {
            let parent = call
                .cse
                .store
                .get(res.pi())?
                .ok_or_else(|| M2mError::not_found("the parent resource is gone"))?;
            check(parent.ty, content)
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

/// The entries parse; `nco` only under a `<node>`.
fn check(parent: ResourceType, attrs: &Map<String, Value>) -> M2mResult<()> {
    for entry in entries(attrs) {
        Entry::parse(&entry)
            .map_err(|e| M2mError::bad_request(format!("attribute 'se/sce': {e}")))?;
    }
    if attrs.contains_key("nco") && parent != ResourceType::Node {
        return Err(M2mError::new(
            Rsc::ContentsUnacceptable,
            "networkCoordinated is for a schedule of a <node> only",
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
