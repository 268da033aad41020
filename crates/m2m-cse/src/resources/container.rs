//! `<container>` and `<contentInstance>` (TS-0004 clauses 7.4.6, 7.4.7): instance counters, the
//! maxNrOfInstances / maxByteSize / maxInstanceAge limits, and the state tag. The counters and
//! limits serve a `<timeSeries>` and its `<timeSeriesInstance>`s the same way (clause 7.4.39.2.1:
//! "same as that steps of `<contentInstance>`"), without the state tag.

use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::EntityId;
use m2m_core::{M2mError, M2mResult, Operation, ResourceType, ResponseStatusCode};
use serde_json::{json, Map, Value};

pub fn init_container(attrs: &mut Map<String, Value>) {
    attrs.insert("cni".into(), json!(0));
    attrs.insert("cbs".into(), json!(0));
    attrs.insert("st".into(), json!(0));
}

/// contentSize: the byte length of the content as it is serialized.
pub fn content_size(con: &Value) -> u64 {
    match con {
        Value::String(s) => s.len() as u64,
        other => other.to_string().len() as u64,
    }
}

/// Inserts a contentInstance and updates its container: counters, state tag, and the limits.
pub fn insert_instance(
    cse: &Cse,
    w: &Writer<'_>,
    parent: &Resource,
    cin: Resource,
) -> M2mResult<Resource> {
    let mut created = insert_instances(cse, w, parent, vec![cin])?;
    Ok(created.pop().expect("one instance in, one out"))
}

/// Inserts contentInstances in order as [`insert_instance`] would one by one, with one update
/// of the container at the end (bulk loading, see `crate::prefill`).
pub fn insert_instances(
    cse: &Cse,
    w: &Writer<'_>,
    parent: &Resource,
    instances: Vec<Resource>,
) -> M2mResult<Vec<Resource>> {
    // A timeSeries and its instances carry no stateTag (TS-0004 tables 7.4.38.1-2, 7.4.39.1-2).
    let state_tag = parent.ty == ResourceType::Container;
    let mut cnt = parent.clone();
    let mbs = cnt.u64_attr("mbs");
    let mia = cnt.u64_attr("mia");
    let mut st = cnt.u64_attr("st").unwrap_or(0);
    let mut cni = cnt.u64_attr("cni").unwrap_or(0);
    let mut cbs = cnt.u64_attr("cbs").unwrap_or(0);
    let mut created = Vec::with_capacity(instances.len());
    for mut cin in instances {
        let cs = content_size(cin.attrs.get("con").unwrap_or(&Value::Null));
        if let Some(mbs) = mbs.filter(|mbs| cs > *mbs) {
            return Err(M2mError::new(
                ResponseStatusCode::NotAcceptable,
                format!("content of {cs} bytes exceeds the container's maxByteSize of {mbs}"),
            ));
        }
        st += 1;
        cin.attrs.insert("cs".into(), json!(cs));
        if state_tag {
            cin.attrs.insert("st".into(), json!(st));
        }
        if let Some(mia) = mia {
            cap_expiration(cse, &mut cin, mia);
        }
        created.push(w.insert(cin)?);
        cni += 1;
        cbs += cs;
    }
    if state_tag {
        cnt.attrs.insert("st".into(), json!(st));
    }
    cnt.attrs.insert("cni".into(), json!(cni));
    cnt.attrs.insert("cbs".into(), json!(cbs));
    // The new instances' expiration is already capped by maxInstanceAge, and older ones were when
    // they came or when mia last changed: only the count and size limits need work here.
    trim(w, &mut cnt)?;
    w.update(&cnt)?;
    Ok(created)
}

/// An instance lives at most maxInstanceAge seconds: its expiration is brought forward.
pub(crate) fn cap_expiration(cse: &Cse, cin: &mut Resource, mia: u64) {
    let ct = cin
        .str_attr("ct")
        .and_then(|t| m2m_core::time::parse(t).ok())
        .unwrap_or_else(|| cse.now());
    // An age beyond what a timestamp holds is no limit at all.
    let Some(limit) = i64::try_from(mia)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| ct.checked_add_signed(age))
    else {
        return;
    };
    let current = cin.et().and_then(|t| m2m_core::time::parse(t).ok());
    if current.is_none_or(|et| et > limit) {
        cin.attrs
            .insert("et".into(), json!(m2m_core::time::format(limit)));
    }
}

/// After an UPDATE of the container: its limits may have shrunk. The instances are all visited
/// (maxInstanceAge applied to each) only when `changed` touches mia. Updates `cnt`'s counters; the
/// caller stores it.
pub fn after_update(
    cse: &Cse,
    w: &Writer<'_>,
    cnt: &mut Resource,
    changed: &Map<String, Value>,
) -> M2mResult<()> {
    trim(w, cnt)?;
    if changed.contains_key("mia") {
        apply_max_age(cse, w, cnt)?;
    }
    Ok(())
}

/// Drops the oldest instances until the container is within maxNrOfInstances and maxByteSize.
/// Updates `cnt`'s counters; the caller stores it.
pub(crate) fn trim(w: &Writer<'_>, cnt: &mut Resource) -> M2mResult<()> {
    let mni = cnt.u64_attr("mni");
    let mbs = cnt.u64_attr("mbs");
    let mut cni = cnt.u64_attr("cni").unwrap_or(0);
    let mut cbs = cnt.u64_attr("cbs").unwrap_or(0);
    let instances = cnt
        .ty
        .instance_type()
        .unwrap_or(ResourceType::ContentInstance);
    while mni.is_some_and(|m| cni > m) || mbs.is_some_and(|m| cbs > m) {
        let Some(oldest) = w.oldest_child(cnt.ri(), instances)? else {
            break;
        };
        w.delete_one(&oldest)?;
        cni = cni.saturating_sub(1);
        cbs = cbs.saturating_sub(oldest.u64_attr("cs").unwrap_or(0));
    }
    cnt.attrs.insert("cni".into(), json!(cni));
    cnt.attrs.insert("cbs".into(), json!(cbs));
    Ok(())
}

/// Brings every instance's expiration within maxInstanceAge.
fn apply_max_age(cse: &Cse, w: &Writer<'_>, cnt: &Resource) -> M2mResult<()> {
    if let Some(mia) = cnt.u64_attr("mia") {
        for mut cin in w.children(cnt.ri(), cnt.ty.instance_type())? {
            let before = cin.et().map(str::to_owned);
            cap_expiration(cse, &mut cin, mia);
            if cin.et().map(str::to_owned) != before {
                w.update(&cin)?;
            }
        }
    }
    Ok(())
}

/// Keeps the counters right when an instance is deleted directly or expires.
pub fn instance_removed(w: &Writer<'_>, parent: &Resource, cin: &Resource) -> M2mResult<()> {
    let mut cnt = parent.clone();
    let cni = cnt.u64_attr("cni").unwrap_or(0).saturating_sub(1);
    let cbs = cnt
        .u64_attr("cbs")
        .unwrap_or(0)
        .saturating_sub(cin.u64_attr("cs").unwrap_or(0));
    cnt.attrs.insert("cni".into(), json!(cni));
    cnt.attrs.insert("cbs".into(), json!(cbs));
    w.update(&cnt)
}

/// The type's behaviour: counters at creation, limits at update, counters after an instance
/// was deleted.
pub struct Container;

impl super::Behaviour for Container {
    fn prepare_create<'a>(
        &'a self,
        _call: super::Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<super::Prepared>> {
        init_container(attrs);
        super::ready(Ok(super::Prepared::default()))
    }

    fn apply_update(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        // disableRetrieval from TRUE to FALSE: every instance is deleted at once (TS-0001 table
        // 9.6.6-3), so what was written while retrieval was off never becomes readable.
        if before.get("disr") == Some(&Value::Bool(true)) && !retrieval_disabled(res) {
            delete_all_instances(w, res)?;
        }
        after_update(cse, w, res, changed)
    }

    fn admits_latest_oldest(&self, op: Operation, res: &Resource) -> M2mResult<()> {
        refuse_if_disabled(op, res)
    }

    /// While disableRetrieval is TRUE, child listings do not show the instances either.
    fn hides_child(&self, res: &Resource, child: &Resource) -> bool {
        child.ty == ResourceType::ContentInstance && retrieval_disabled(res)
    }

    fn child_deleted(
        &self,
        _cse: &Cse,
        w: &Writer<'_>,
        res: &Resource,
        child: &Resource,
    ) -> M2mResult<()> {
        if child.ty == ResourceType::ContentInstance {
            instance_removed(w, res, child)?;
        }
        Ok(())
    }
}

/// Whether the container's disableRetrieval is TRUE.
pub fn retrieval_disabled(cnt: &Resource) -> bool {
    cnt.attrs.get("disr") == Some(&Value::Bool(true))
}

/// RETRIEVE, UPDATE and DELETE of a child `<contentInstance>` of a container whose
/// disableRetrieval is TRUE are OPERATION_NOT_ALLOWED (TS-0004 clause 7.4.7.2.2-4); CREATE is not.
pub fn refuse_if_disabled(op: Operation, cnt: &Resource) -> M2mResult<()> {
    if matches!(
        op,
        Operation::Retrieve | Operation::Update | Operation::Delete
    ) && retrieval_disabled(cnt)
    {
        return Err(M2mError::not_allowed(
            "retrieval of this container's instances is disabled",
        ));
    }
    Ok(())
}

/// Deletes every instance of `cnt` and zeroes its counters; the caller stores it.
fn delete_all_instances(w: &Writer<'_>, cnt: &mut Resource) -> M2mResult<()> {
    while let Some(cin) = w.oldest_child(cnt.ri(), ResourceType::ContentInstance)? {
        w.delete_one(&cin)?;
    }
    cnt.attrs.insert("cni".into(), json!(0));
    cnt.attrs.insert("cbs".into(), json!(0));
    Ok(())
}
