//! `<flexContainer>` (TS-0004 clause 7.4.37, Annex J; TS-0001 clause 9.6.35): a container whose
//! attributes are those of its specialization (m2m-core `specialization`), represented under the
//! specialization's own name (`cod:lock`). Its containerDefinition must be that specialization's
//! (4000); a specialization this CSE does not know is 4125 SPECIALIZATION_SCHEMA_NOT_FOUND; the
//! custom attributes are checked against it at CREATE and UPDATE; contentSize is the size of the
//! custom attributes.
//!
//! Instances (Release 4, `<flexContainerInstance>` 58): while `fcied` (flexContainerInstance
//! enable) is present, the CSE keeps records of the flexContainer's states as its children,
//! with `cni`/`cbs` and the limits `mni`/`mbs`/`mia` as a container has them, and `la`/`ol`.
//! - A CREATE with `fcied` (true or false) records the first state.
//! - With `fcied` true, an UPDATE that sets a custom attribute, `lbl` or `loc` records the new
//!   state (named `<rn>_<st>`, holding those attributes, `cs`, `cnd` and `org`, the
//!   originator of the change); turning it true records the state afresh (earlier records go).
//! - With `fcied` false the latest record is kept and no more are made.
//! - Removing `fcied` (null) removes the records, the counters and the limits.
//! - `mni`, `mbs`, `mia` need `fcied` and are not 0; `mbs` below `cs` is refused (4000). The
//!   oldest records go first, as a container's instances do.
//! - Records are never created or updated by a request (4005).

use super::{Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::specialization::{self, Specialization};
use m2m_core::{EntityId, M2mError, M2mResult, Request, ResourceType};
use serde_json::{json, Map, Value};

/// The type's behaviour.
pub struct FlexContainer;

impl super::Behaviour for FlexContainer {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        let checked = requested(call.req).and_then(|spec| {
            if !spec.admits_cnd(attrs.get("cnd").and_then(Value::as_str)) {
                return Err(M2mError::bad_request(format!(
                    "containerDefinition is not that of {}",
                    spec.key
                )));
            }
            spec.check(attrs, true)?;
            let cs = content_size(&spec, attrs);
            check_limits(attrs, attrs, cs)?;
            attrs.insert("cs".into(), json!(cs));
            attrs.insert("st".into(), json!(0));
            if attrs.contains_key("fcied") {
                attrs.insert("cni".into(), json!(0));
                attrs.insert("cbs".into(), json!(0));
            }
            Ok(Prepared {
                specialization: Some(spec.key),
                ..Prepared::default()
            })
        });
        super::ready(checked)
    }

    /// With `fcied`, the first state is recorded with the flexContainer.
    fn insert(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        _parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        let mut fcnt = w.insert(new)?;
        if fcnt.attrs.contains_key("fcied") {
            let by = fcnt
                .creator
                .as_deref()
                .and_then(|c| EntityId::parse(c, &cse.id.home).ok());
            record(cse, w, &mut fcnt, by.as_ref())?;
            w.update(&fcnt)?;
        }
        Ok(fcnt)
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        let checked = requested(call.req).and_then(|spec| {
            if res
                .flex_specialization()
                .is_none_or(|own| own.key != spec.key)
            {
                return Err(M2mError::bad_request(format!(
                    "the resource is not a {}",
                    spec.key
                )));
            }
            spec.check(content, false)?;
            let merged = super::merged(res, content);
            check_limits(content, &merged, content_size(&spec, &merged))
        });
        super::ready(checked)
    }

    fn apply_update(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        before: &Map<String, Value>,
        by: Option<&EntityId>,
    ) -> M2mResult<()> {
        let spec = res.flex_specialization();
        if let Some(spec) = &spec {
            let cs = content_size(spec, &res.attrs);
            res.attrs.insert("cs".into(), json!(cs));
        }
        let was = match changed.get("fcied") {
            Some(_) => before.get("fcied").and_then(Value::as_bool),
            None => res.attrs.get("fcied").and_then(Value::as_bool),
        };
        let now = res.attrs.get("fcied").and_then(Value::as_bool);
        match (was, now) {
            (_, None) => {
                // Records, counters and limits go with fcied.
                delete_records(w, res, None)?;
                for k in ["cni", "cbs", "mni", "mbs", "mia"] {
                    res.attrs.remove(k);
                }
                return Ok(());
            }
            (Some(false), Some(false)) => {}
            (_, Some(false)) => {
                // Only the latest record stays (a first one when there was none).
                match w.latest_child(res.ri(), ResourceType::FlexContainerInstance)? {
                    Some(latest) => delete_records(w, res, Some(&latest))?,
                    None => record(cse, w, res, by)?,
                }
            }
            (Some(true), Some(true)) => {
                let state_changed = changed.keys().any(|k| {
                    k == "lbl" || k == "loc" || spec.as_ref().is_some_and(|s| s.is_custom(k))
                });
                if state_changed {
                    record(cse, w, res, by)?;
                }
            }
            (_, Some(true)) => {
                delete_records(w, res, None)?;
                record(cse, w, res, by)?;
            }
        }
        super::container::after_update(cse, w, res, changed)
    }

    fn child_deleted(
        &self,
        _cse: &Cse,
        w: &Writer<'_>,
        res: &Resource,
        child: &Resource,
    ) -> M2mResult<()> {
        if child.ty == ResourceType::FlexContainerInstance {
            super::container::instance_removed(w, res, child)?;
        }
        Ok(())
    }
}

/// `mni`, `mbs`, `mia` (set by `content`) need `fcied` in the resource as it will be (`merged`)
/// and are not 0; `mbs` is not below the contentSize `cs`.
fn check_limits(
    content: &Map<String, Value>,
    merged: &Map<String, Value>,
    cs: u64,
) -> M2mResult<()> {
    let set = |k: &str| content.get(k).filter(|v| !v.is_null());
    if !merged.contains_key("fcied") {
        if let Some(k) = ["mni", "mbs", "mia"].into_iter().find(|k| set(k).is_some()) {
            return Err(M2mError::bad_request(format!(
                "attribute '{k}': limits need flexContainerInstanceEnable (fcied)"
            )));
        }
    }
    if let Some(k) = ["mni", "mbs", "mia"]
        .into_iter()
        .find(|k| set(k).and_then(Value::as_u64) == Some(0))
    {
        return Err(M2mError::bad_request(format!(
            "attribute '{k}': 0 is not a limit"
        )));
    }
    if let Some(mbs) = merged.get("mbs").and_then(Value::as_u64) {
        if mbs < cs {
            return Err(M2mError::bad_request(format!(
                "attribute 'mbs': {mbs} is below the contentSize {cs}"
            )));
        }
    }
    Ok(())
}

/// Records the flexContainer's state as a new `<flexContainerInstance>` and counts it, then
/// keeps the records within the limits. `fcnt` gets the new counters; the caller stores it.
fn record(cse: &Cse, w: &Writer<'_>, fcnt: &mut Resource, by: Option<&EntityId>) -> M2mResult<()> {
    let st = fcnt.u64_attr("st").unwrap_or(0);
    let cs = fcnt.u64_attr("cs").unwrap_or(0);
    // Named by its state; a name someone took for another child gets a suffix, so that no
    // child can keep a state from being recorded.
    let mut name = format!("{}_{st}", fcnt.rn());
    if w.get_by_srn(&format!("{}/{name}", fcnt.srn))?.is_some() {
        name = format!("{name}-{}", crate::context::random_suffix(6));
    }
    let mut attrs = Map::new();
    attrs.insert("rn".into(), json!(name));
    attrs.insert("st".into(), json!(st));
    attrs.insert("cs".into(), json!(cs));
    if let Some(by) = by {
        attrs.insert("org".into(), json!(by.shortest_from(&cse.id.home)));
    }
    if let Some(et) = fcnt.attrs.get("et") {
        attrs.insert("et".into(), et.clone());
    }
    let spec = fcnt.flex_specialization();
    for (k, v) in &fcnt.attrs {
        let copied = matches!(k.as_str(), "cnd" | "lbl" | "loc" | "at")
            || spec.as_ref().is_some_and(|s| s.is_custom(k));
        if copied {
            attrs.insert(k.clone(), v.clone());
        }
    }
    let mut fci = crate::dispatcher::assemble(
        cse,
        fcnt,
        ResourceType::FlexContainerInstance,
        attrs,
        None,
        by.cloned(),
    );
    fci.specialization.clone_from(&fcnt.specialization);
    if let Some(mia) = fcnt.u64_attr("mia") {
        super::container::cap_expiration(cse, &mut fci, mia);
    }
    w.insert(fci)?;
    let cni = fcnt.u64_attr("cni").unwrap_or(0) + 1;
    let cbs = fcnt.u64_attr("cbs").unwrap_or(0) + cs;
    fcnt.attrs.insert("cni".into(), json!(cni));
    fcnt.attrs.insert("cbs".into(), json!(cbs));
    super::container::trim(w, fcnt)
}

/// Deletes the records of `fcnt`, all or all but `keep`, and counts what stays.
fn delete_records(w: &Writer<'_>, fcnt: &mut Resource, keep: Option<&Resource>) -> M2mResult<()> {
    for fci in w.children(fcnt.ri(), Some(ResourceType::FlexContainerInstance))? {
        if keep.is_none_or(|k| k.ri() != fci.ri()) {
            w.delete_one(&fci)?;
        }
    }
    let (cni, cbs) = keep.map_or((0, 0), |k| (1, k.u64_attr("cs").unwrap_or(0)));
    fcnt.attrs.insert("cni".into(), json!(cni));
    fcnt.attrs.insert("cbs".into(), json!(cbs));
    Ok(())
}

/// `<flexContainerInstance>`: the generic procedures (made by the CSE only, never updated; its
/// deletion counted by its flexContainer).
pub struct FlexContainerInstance;

impl super::Behaviour for FlexContainerInstance {}

/// The specialization the request's content names (known: the content was read already).
fn requested(req: &Request) -> M2mResult<Specialization> {
    req.pc
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|o| o.keys().next())
        .and_then(|k| specialization::by_key(k))
        .ok_or_else(|| M2mError::bad_request("content names no known specialization"))
}

/// contentSize: the bytes of the custom attributes' values as serialized.
fn content_size(spec: &Specialization, attrs: &Map<String, Value>) -> u64 {
    spec.custom(attrs)
        .map(|(_, v)| super::container::content_size(v))
        .sum()
}
