//! `<locationPolicy>` (TS-0004 clause 7.4.10, TS-0001 clauses 9.6.10 and 10.2.9): how the
//! location of a node is obtained, and the `<container>` that holds it.
//!
//! - A CREATE makes the policy and, next to it under the same parent, its location container:
//!   named by `lon` (else `<policy name>-location`), held by whoever holds the policy (its
//!   custodian, else its creator), under the policy's accessControlPolicyIDs and expiration,
//!   which follow the policy's as they change. The two point at each other: `loi` of the policy,
//!   `li` of the container. `lost` (locationStatus) starts empty. Deleting the policy deletes the
//!   container (clause 7.4.10.2.4).
//! - Device-based (`los` 2): the device reports its positions itself, as contentInstances of
//!   GeoJSON Points in the container. The attributes that configure a Location Server (`lot`,
//!   `lor`, `aid`, `rlkl`, `luec`) have no meaning there: 4000. With `lit` 2 (geofence event),
//!   an area `gta` (a GeoJSON Polygon or MultiPolygon) and a criterion `gec`, each position is
//!   judged on arrival against the one before it (the last position or event in the container;
//!   none: inside): entering (1, outside then inside), leaving (2), inside (3, inside both
//!   times), outside (4). When the criterion holds, the CSE adds a contentInstance whose `con`
//!   is the event's number right after the position, in the same transaction, so `la` shows it
//!   at once and the container's subscribers are told of both. `lou` is kept: the positions'
//!   pace is the device's.
//! - Network-based (1) needs a Location Server (OMA MLP or NetAPI, 3GPP Monitoring Event API) and
//!   sharing-based (3) the topology of the area network; this CSE has neither: 5001, after the
//!   checks of clause 7.4.10.2.1 (network-based without `lot` and `lor`: 4000).
//! - Parents: the CSEBase (TS-0001 table 9.2.2.1-1) and, as in Release 4, an AE.

use super::{Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::dispatcher;
use crate::store::{Resource, Writer};
use crate::subscription_events::{self, Event};
use m2m_core::geo_query::{geojson_area, geojson_point, Position, Shape};
use m2m_core::{EntityId, M2mError, M2mResult, ResourceType};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct LocationPolicy;

/// m2m:locationSource.
const NETWORK_BASED: u64 = 1;
const DEVICE_BASED: u64 = 2;
/// m2m:locationInformationType: geofence event.
const GEOFENCE_EVENT: u64 = 2;

/// The attributes that configure a Location Server request.
const SERVER_ATTRIBUTES: [&str; 5] = ["lot", "lor", "aid", "rlkl", "luec"];

impl Behaviour for LocationPolicy {
    fn prepare_create<'a>(
        &'a self,
        _call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready(check_create(attrs).map(|()| Prepared::default()))
    }

    fn insert(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        parent: &Resource,
        mut new: Resource,
    ) -> M2mResult<Resource> {
        let name = match new.str_attr("lon") {
            Some(lon) => lon.to_owned(),
            None => format!("{}-location", new.rn()),
        };
        if w.get_by_srn(&format!("{}/{name}", parent.srn))?.is_some() {
            return Err(M2mError::conflict(format!(
                "a resource named '{name}' already exists here"
            )));
        }
        let mut attrs = Map::new();
        attrs.insert("rn".into(), json!(name));
        attrs.insert("li".into(), json!(new.ri()));
        super::container::init_container(&mut attrs);
        let creator = new
            .creator
            .as_deref()
            .and_then(|c| EntityId::parse(c, &cse.id.home).ok());
        let mut container =
            dispatcher::assemble(cse, parent, ResourceType::Container, attrs, None, creator);
        follow(&new, &mut container);
        let container =
            super::behaviour(ResourceType::Container).insert(cse, w, parent, container)?;
        new.attrs.insert("loi".into(), json!(container.ri()));
        new.attrs.insert("lost".into(), json!(""));
        w.insert(new)
    }

    fn prepare_update<'a>(
        &'a self,
        _call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready(check_area(&super::merged(res, content)))
    }

    /// The container follows the policy's access attributes and expiration.
    fn apply_update(
        &self,
        _cse: &Cse,
        w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        if !["acpi", "et", "cstn"]
            .iter()
            .any(|k| changed.contains_key(*k))
        {
            return Ok(());
        }
        let Some(loi) = res.str_attr("loi") else {
            return Ok(());
        };
        if let Some(mut container) = w.get(loi)?.filter(|c| c.ty == ResourceType::Container) {
            follow(res, &mut container);
            w.update(&container)?;
        }
        Ok(())
    }

    /// The parent's subscribers hear of the container too.
    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        let container = res
            .str_attr("loi")
            .and_then(|loi| cse.store.get(loi).ok().flatten());
        let parent = cse.store.get(res.pi()).ok().flatten();
        if let (Some(container), Some(parent)) = (container, parent) {
            subscription_events::on_event(cse, &parent, Event::CreateChild, &container, None, None);
        }
    }

    fn keeps_state(&self) -> bool {
        true
    }

    /// Its location container goes with it (unless it went already, with a common ancestor).
    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        let Some(loi) = res.str_attr("loi").map(str::to_owned) else {
            return;
        };
        let cse = Arc::clone(cse);
        tokio::spawn(async move {
            if let Ok(Some(container)) = cse.store.get(&loi) {
                if let Err(e) = dispatcher::delete_resource(&cse, &container, None).await {
                    tracing::warn!(container = %loi, "location container not deleted: {}", e.dbg);
                }
            }
        });
    }
}

/// Gives the location container the policy's accessControlPolicyIDs, expiration and custodian
/// (both have the policy's creator): whoever holds the policy holds its positions.
fn follow(lcp: &Resource, container: &mut Resource) {
    for k in ["acpi", "et", "cstn"] {
        match lcp.attrs.get(k) {
            Some(v) => {
                container.attrs.insert(k.into(), v.clone());
            }
            None => {
                container.attrs.remove(k);
            }
        }
    }
}

fn check_create(attrs: &Map<String, Value>) -> M2mResult<()> {
    let los = attrs.get("los").and_then(Value::as_u64).unwrap_or(0);
    if attrs.get("lon").is_some() && attrs.get("lon") == attrs.get("rn") {
        return Err(M2mError::bad_request(
            "locationContainerName names the policy itself",
        ));
    }
    check_area(attrs)?;
    match los {
        DEVICE_BASED => {
            if let Some(a) = SERVER_ATTRIBUTES.iter().find(|a| attrs.contains_key(**a)) {
                return Err(M2mError::bad_request(format!(
                    "attribute '{a}': a Location Server setting, not for a device-based policy"
                )));
            }
            Ok(())
        }
        NETWORK_BASED if !(attrs.contains_key("lot") && attrs.contains_key("lor")) => {
            Err(M2mError::bad_request(
                "a network-based policy needs locationTargetID and locationServer",
            ))
        }
        NETWORK_BASED => Err(M2mError::not_implemented(
            "network-based location: this CSE has no Location Server interface",
        )),
        _ => Err(M2mError::not_implemented(
            "sharing-based location: this CSE does not know the area network's topology",
        )),
    }
}

/// `gta`, when there is one, is an area.
fn check_area(attrs: &Map<String, Value>) -> M2mResult<()> {
    match attrs.get("gta") {
        Some(gta) => geojson_area(gta)
            .map(|_| ())
            .map_err(|e| M2mError::bad_request(format!("attribute 'gta': {e}"))),
        None => Ok(()),
    }
}

/// Where a device stands with respect to a geofence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Inside,
    Outside,
}

/// m2m:geofenceEventCriteria, the numbers a geofence event contentInstance holds.
const ENTERING: u64 = 1;
const LEAVING: u64 = 2;
const INSIDE: u64 = 3;
const OUTSIDE: u64 = 4;

/// The geofence of a device-based policy: its area and the event it reports.
struct Geofence {
    area: Shape,
    criterion: u64,
}

impl Geofence {
    /// The geofence a location container's policy sets, if it sets one.
    fn of(w: &Writer<'_>, container: &Resource) -> M2mResult<Option<Geofence>> {
        let Some(li) = container.str_attr("li") else {
            return Ok(None);
        };
        let Some(lcp) = w.get(li)?.filter(|r| r.ty == ResourceType::LocationPolicy) else {
            return Ok(None);
        };
        let attr = |k: &str| lcp.attrs.get(k).and_then(Value::as_u64);
        if attr("los") != Some(DEVICE_BASED) || attr("lit") != Some(GEOFENCE_EVENT) {
            return Ok(None);
        }
        let (Some(gta), Some(criterion)) = (lcp.attrs.get("gta"), attr("gec")) else {
            return Ok(None);
        };
        Ok(geojson_area(gta)
            .ok()
            .map(|area| Geofence { area, criterion }))
    }

    fn side(&self, position: &Position) -> Side {
        if self.area.covers_point(position) {
            Side::Inside
        } else {
            Side::Outside
        }
    }

    /// Where the device stood before: as its last event says, else as its last position lies,
    /// else (nothing reported yet) inside.
    fn side_before(&self, last: Option<&Resource>) -> Side {
        let Some(con) = last.and_then(|r| r.attrs.get("con")) else {
            return Side::Inside;
        };
        match con.as_u64() {
            Some(ENTERING | INSIDE) => Side::Inside,
            Some(LEAVING | OUTSIDE) => Side::Outside,
            _ => geojson_point(con).map_or(Side::Inside, |p| self.side(&p)),
        }
    }

    /// The event the move from `before` to `now` makes, if it is the one reported.
    fn event(&self, before: Side, now: Side) -> Option<u64> {
        let event = match (before, now) {
            (Side::Outside, Side::Inside) => ENTERING,
            (Side::Inside, Side::Outside) => LEAVING,
            (Side::Inside, Side::Inside) => INSIDE,
            (Side::Outside, Side::Outside) => OUTSIDE,
        };
        (event == self.criterion).then_some(event)
    }
}

/// Inserts a contentInstance into a location container (`li` set): a position that makes the
/// geofence's event is followed by the event's contentInstance, which the container's
/// subscribers hear of once the position's creation is reported (see [`PendingEvents`]).
pub fn insert_position(
    cse: &Cse,
    w: &Writer<'_>,
    container: &Resource,
    new: Resource,
) -> M2mResult<Resource> {
    let event = match (
        Geofence::of(w, container)?,
        new.attrs.get("con").and_then(geojson_point),
    ) {
        (Some(fence), Some(position)) => {
            let last = w.latest_child(container.ri(), ResourceType::ContentInstance)?;
            fence.event(fence.side_before(last.as_ref()), fence.side(&position))
        }
        _ => None,
    };
    let Some(event) = event else {
        return super::container::insert_instance(cse, w, container, new);
    };
    let cse_id = EntityId::cse(cse.id.home.sp.clone(), cse.id.cse_id.clone());
    let mut attrs = Map::new();
    attrs.insert("con".into(), json!(event));
    let notice = dispatcher::assemble(
        cse,
        container,
        ResourceType::ContentInstance,
        attrs,
        None,
        Some(cse_id),
    );
    let mut both = super::container::insert_instances(cse, w, container, vec![new, notice])?;
    let notice = both.pop().expect("two instances in, two out");
    let position = both.pop().expect("two instances in, two out");
    cse.geofence_events.hold(position.ri(), notice);
    Ok(position)
}

/// Geofence event contentInstances written with a position, waiting for the position's
/// creation to be reported so that their own follows, by the position's resourceID.
#[derive(Default)]
pub struct PendingEvents {
    held: Mutex<HashMap<String, Resource>>,
    /// How many are held: every contentInstance asks, almost always of an empty map.
    count: std::sync::atomic::AtomicUsize,
}

impl PendingEvents {
    fn hold(&self, position: &str, notice: Resource) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(position.to_owned(), notice);
        self.count
            .store(held.len(), std::sync::atomic::Ordering::Release);
    }

    /// Reports the event that came with `position`, if one did.
    pub fn release(&self, cse: &Arc<Cse>, position: &Resource) {
        if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        let notice = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let notice = held.remove(position.ri());
            self.count
                .store(held.len(), std::sync::atomic::Ordering::Release);
            notice
        };
        let Some(notice) = notice else {
            return;
        };
        if let Ok(Some(container)) = cse.store.get(notice.pi()) {
            subscription_events::on_event(cse, &container, Event::CreateChild, &notice, None, None);
        }
    }
}
