//! CREATE, RETRIEVE, UPDATE, DELETE and NOTIFY on local resources (TS-0004 clause 7.3.3 and the
//! per-type procedures of clause 7.4).

use crate::context::random_suffix;
use crate::cse::{representation, Cse, Peer};
use crate::notification;
use crate::resolve::Target;
use crate::resources::{self, Call, Prepared};
use crate::store::Resource;
use crate::subscription_events::{self, Event};
use m2m_core::schema;
use m2m_core::{
    M2mError, M2mResult, Request, ResourceType, Response, ResponseStatusCode as Rsc, ResultContent,
};
use m2m_security::access_control::AccessOperation;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The content of a create or update: `{"m2m:cnt": {...}}` with the root matching the type.
pub(crate) fn content_of(req: &Request, ty: ResourceType) -> M2mResult<Map<String, Value>> {
    let pc = req
        .pc
        .as_ref()
        .ok_or_else(|| M2mError::bad_request("missing content"))?;
    schema::inner_content(ty, pc).cloned()
}

/// An expirationTime later than the policy allows (`limits.max_expiration_secs` from now) is
/// brought back to it: TS-0001 clause 10.1.1.1 c), the Receiver assigns a value it supports, and
/// the answer shows it. The default may be later than the maximum; it is bounded too.
fn bound_expiration(cse: &Cse, attrs: &mut Map<String, Value>) {
    let Some(Ok(asked)) = attrs
        .get("et")
        .and_then(Value::as_str)
        .map(m2m_core::time::parse)
    else {
        return;
    };
    let max = cse.now() + chrono::Duration::seconds(cse.cfg.limits.max_expiration_secs as i64);
    if asked > max {
        attrs.insert("et".into(), json!(m2m_core::time::format(max)));
    }
}

/// An expirationTime brought earlier than a child's is refused (TS-0004 clause 7.3.3.4): the
/// child would expire with the parent, before its own time.
fn refuse_outlived(cse: &Cse, res: &Resource, content: &Map<String, Value>) -> M2mResult<()> {
    let Some(new_et) = content.get("et").and_then(Value::as_str) else {
        return Ok(());
    };
    let Ok(new_et) = m2m_core::time::normalize(new_et) else {
        return Ok(());
    };
    let earlier = res
        .et()
        .and_then(|t| m2m_core::time::normalize(t).ok())
        .is_none_or(|old| new_et < old);
    if earlier && cse.store.read(|r| r.child_outlives(res.ri(), &new_et))? {
        return Err(M2mError::bad_request(
            "expirationTime: a child resource expires later",
        ));
    }
    Ok(())
}

/// An UPDATE whose content is the representation of another resource type than its target's
/// (`m2m:cnt` sent to an `<action>`) is well-formed but not acceptable there: 4102
/// CONTENTS_UNACCEPTABLE. A root that names no resource type is malformed (4000, as
/// `content_of` says).
/// announceTo (`at`): this CSE announces no resource (TS-0001 clause 9.6.1.3; only
/// the `<AEAnnc>` of an S-stem AE-ID, which it keeps for registration, is an announced type
/// here). A list of targets would be stored and claim an announcement that never happens: the
/// feature is not supported, 5001 (TS-0004 clause 7.3.2.1). An empty list, or null, asks for
/// nothing.
fn refuse_announcement(content: &Map<String, Value>) -> M2mResult<()> {
    match content.get("at") {
        Some(Value::Array(targets)) if !targets.is_empty() => Err(M2mError::new(
            Rsc::NotImplemented,
            "announcement (announceTo) is not supported",
        )),
        _ => Ok(()),
    }
}

fn refuse_another_type(req: &Request, res: &Resource) -> M2mResult<()> {
    let Some(root) = req
        .pc
        .as_ref()
        .and_then(Value::as_object)
        .filter(|o| o.len() == 1)
        .and_then(|o| o.keys().next())
    else {
        return Ok(());
    };
    let names_a_type = ResourceType::from_root_name(root).is_some()
        || m2m_core::specialization::by_key(root).is_some();
    if names_a_type && *root != res.root_name() {
        return Err(M2mError::new(
            Rsc::ContentsUnacceptable,
            format!("the content is a {root}, not the target's type"),
        ));
    }
    Ok(())
}

/// A fresh resourceID for a type, e.g. `cin0mioz3k1c8f3k2j9q`: the type, the creation time and
/// randomness (see [`time_ordered_suffix`]).
pub(crate) fn new_ri(ty: ResourceType) -> String {
    format!("{}{}", ty.short_name(), time_ordered_suffix())
}

/// Nine base-36 digits of the milliseconds since 1970 (good until the year 5138), then eight random
/// ones. IDs made later sort later, so the store's indexes of IDs and names grow at their end
/// instead of at random places: at a million resources that is the difference between touching a
/// few pages per write and touching a page of every index per write. What the time part reveals
/// (when a resource was created) its `ct` attribute says to whoever may read it; the random part
/// keeps IDs unguessable.
pub(crate) fn time_ordered_suffix() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut time = [b'0'; 9];
    for d in time.iter_mut().rev() {
        *d = DIGITS[(ms % 36) as usize];
        ms /= 36;
    }
    let mut out = String::from_utf8_lossy(&time).into_owned();
    out.push_str(&random_suffix(8));
    out
}

/// The stored form of a new resource: the validated attributes with its identifiers,
/// timestamps and structured name added, and its creator (`originator`, or the AE or CSE that a
/// registration creates, which owns its own resource). The creator is kept in absolute form, so
/// every later comparison reads it the same way.
pub(crate) fn assemble(
    cse: &Cse,
    parent: &Resource,
    ty: ResourceType,
    mut attrs: Map<String, Value>,
    ri: Option<String>,
    originator: Option<m2m_core::EntityId>,
) -> Resource {
    let ri = ri.unwrap_or_else(|| new_ri(ty));
    let now = cse.now_ts();
    let behaviour = resources::behaviour(ty);
    let rn = match attrs.get("rn").and_then(Value::as_str) {
        Some(rn) => rn.to_owned(),
        None => behaviour.default_name(&ri),
    };
    attrs.insert("rn".into(), json!(rn));
    attrs.insert("ri".into(), json!(ri));
    attrs.insert("pi".into(), json!(parent.ri()));
    attrs.insert("ty".into(), json!(ty.code()));
    attrs.insert("ct".into(), json!(now));
    attrs.insert("lt".into(), json!(now));
    if !attrs.contains_key("et") {
        let et =
            cse.now() + chrono::Duration::seconds(cse.cfg.limits.default_expiration_secs as i64);
        attrs.insert("et".into(), json!(m2m_core::time::format(et)));
    }
    bound_expiration(cse, &mut attrs);
    // A child expires with its parent at the latest: a later expirationTime, asked for or the
    // default, is brought back to the parent's (TS-0004 clause 7.3.3.3), and the answer shows it.
    if let Some(parent_et) = parent.et() {
        let later = |own: &str| match (m2m_core::time::parse(own), m2m_core::time::parse(parent_et))
        {
            (Ok(own), Ok(limit)) => own > limit,
            _ => false,
        };
        if attrs.get("et").and_then(Value::as_str).is_some_and(later) {
            attrs.insert("et".into(), json!(parent_et));
        }
    }
    let srn = format!("{}/{}", parent.srn, rn);
    let home = &cse.id.home;
    let creator = match behaviour.own_creator(&attrs) {
        Some(own) => m2m_core::EntityId::parse(own, home).ok(),
        None => originator,
    }
    .map(|e| e.absolute());
    Resource {
        seq: 0,
        ty,
        srn,
        attrs,
        creator,
        specialization: None,
    }
}

pub async fn create(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: &Peer,
) -> M2mResult<Response> {
    let parent = target.into_resource("CREATE")?;
    let ty = req
        .ty
        .ok_or_else(|| M2mError::bad_request("CREATE without resource type"))?;
    if ty == ResourceType::Subscription && !parent.ty.allowed_children().contains(&ty) {
        // TS-0004 clause 7.4.8.2.1, Recv-6.4: instead of INVALID_CHILD_RESOURCE_TYPE.
        return Err(M2mError::new(
            Rsc::TargetNotSubscribable,
            format!("a {} cannot be subscribed to", parent.ty.short_name()),
        ));
    }
    if !parent.ty.allowed_children().contains(&ty) {
        return Err(M2mError::new(
            Rsc::InvalidChildResourceType,
            format!(
                "a {} cannot be created under a {}",
                ty.short_name(),
                parent.ty.short_name()
            ),
        ));
    }
    let content = content_of(&req, ty)?;
    schema::validate_create(ty, &content)?;
    refuse_announcement(&content)?;
    let originator = req.from.clone().unwrap_or_default();

    // rcn 9 on a CREATE: the attributes the CSE set or changed (TS-0004 clause 7.3.3.1).
    let requested =
        (req.result_content() == ResultContent::ModifiedAttributes).then(|| content.clone());
    let mut attrs = content;
    crate::access_references::pin(cse, ty, &mut attrs)?;
    if attrs.get("cr").is_some_and(Value::is_null) {
        attrs.insert("cr".into(), json!(originator));
    }
    // Type-specific preparation: may assign the resourceID (AE, remoteCSE) and may talk to peers.
    let behaviour = resources::behaviour(ty);
    let call = Call {
        cse,
        req: &req,
        peer,
    };
    let Prepared {
        ri,
        holder,
        specialization,
    } = behaviour.prepare_create(call, &parent, &mut attrs).await?;
    let mut new = assemble(cse, &parent, ty, attrs, ri, peer.originator.clone());
    new.specialization = specialization;

    let cse2 = Arc::clone(cse);
    let parent_ri = parent.ri().to_owned();
    let parent_srn = parent.srn.clone();
    let created = cse
        .store
        .write(move |w| {
            let parent = w
                .get_as_committed(&parent_ri, &parent_srn)?
                .ok_or_else(|| M2mError::not_found("the parent resource was deleted"))?;
            if w.get_by_srn(&new.srn)?.is_some() {
                return Err(M2mError::conflict(format!(
                    "a resource named '{}' already exists here",
                    new.rn()
                )));
            }
            let created = resources::behaviour(new.ty).insert(&cse2, w, &parent, new)?;
            // An AE that registered over a credential bound to no entity is bound to it while
            // it stays registered (`Reader::credential_of`).
            if let Some((holder, registered_with)) = &holder {
                w.hold_ae_id(created.ri(), holder, registered_with)?;
            }
            Ok(created)
        })
        .await
        .inspect_err(|_| behaviour.create_failed(cse))?;

    subscription_events::on_event(
        cse,
        &parent,
        Event::CreateChild,
        &created,
        None,
        req.from.as_deref(),
    );
    // After the creation was reported: what the type does next (a geofence event, a location
    // container) is heard of after it.
    behaviour.created(cse, &created);
    if !peer.by_action {
        resources::action::children_changed(cse, parent.ri());
    }
    let mut resp = Response::new(Rsc::Created, &req.rqi, None);
    resp.location = Some(created.srn.clone());
    resp.pc = match req.result_content() {
        ResultContent::Nothing => None,
        ResultContent::HierarchicalAddress => Some(json!({ "m2m:uri": created.srn })),
        ResultContent::HierarchicalAddressAndAttributes => Some(
            json!({ "m2m:rce": { "uri": created.srn, created.root_name(): Value::Object(created.attrs.clone()) } }),
        ),
        ResultContent::ModifiedAttributes => {
            let set =
                changed_by_the_cse(&Map::new(), &created.attrs, &requested.unwrap_or_default());
            Some(m2m_core::serialization::rooted(created.root_name(), set))
        }
        _ => Some(representation(&created)),
    };
    Ok(resp)
}

/// Resolves `la` / `ol` to the contentInstance they stand for.
fn instance_of(cse: &Cse, target: Target) -> M2mResult<Resource> {
    let none = || M2mError::not_found("there is no instance for it to stand for");
    match target {
        Target::Resource(r) => Ok(r),
        Target::Latest(c) => cse.store.latest_instance(&c)?.ok_or_else(none),
        Target::Oldest(c) => cse.store.oldest_instance(&c)?.ok_or_else(none),
        Target::FanOut { .. }
        | Target::SemanticFanOut(_)
        | Target::PollingChannelUri(_)
        | Target::SelfReference(_) => Err(M2mError::internal(
            "a fan-out, polling or target removal request reached the dispatcher",
        )),
    }
}

/// Whether a RETRIEVE lists child resources (`rcn` 4, 5, 6 or 8): that walk runs on a blocking
/// thread like a discovery.
pub fn lists_children(req: &Request) -> bool {
    matches!(
        req.result_content(),
        ResultContent::AttributesAndChildResources
            | ResultContent::ChildResources
            | ResultContent::AttributesAndChildResourceReferences
            | ResultContent::ChildResourceReferences
    )
}

/// A RETRIEVE; also the contentInstance it read when that one counts its retrievals (`dcnt`),
/// for [`resources::content_instance::count_retrieval`] once the answer is made.
pub fn retrieve(
    cse: &Cse,
    req: &Request,
    target: Target,
    peer: &Peer,
) -> M2mResult<(Response, Option<Resource>)> {
    let mut res = instance_of(cse, target)?;
    resources::behaviour(res.ty).present(cse, &mut res);
    let rcn = req.result_content();
    let mut partial_at = None;
    let mut children = || -> M2mResult<Vec<Resource>> {
        let (mut children, partial) = filtered_children(cse, req, &res, peer)?;
        partial_at = partial;
        // An instance read a limited number of times (deletionCnt) shows its content only to a
        // RETRIEVE of its own, which counts.
        for child in children
            .iter_mut()
            .filter(|c| resources::content_instance::counts_retrievals(c))
        {
            child.attrs.remove("con");
        }
        Ok(children)
    };
    let pc = match rcn {
        ResultContent::Attributes | ResultContent::OriginalResource if req.atrl.is_empty() => {
            // The whole resource: its attributes move into the answer unless a retrieval count
            // needs the resource afterwards.
            if resources::content_instance::counts_retrievals(&res) {
                representation(&res)
            } else {
                let mut m = Map::with_capacity(1);
                m.insert(
                    res.root_name().into_owned(),
                    Value::Object(std::mem::take(&mut res.attrs)),
                );
                Value::Object(m)
            }
        }
        ResultContent::Attributes | ResultContent::OriginalResource => partial(&res, &req.atrl)?,
        ResultContent::AttributesAndChildResources | ResultContent::ChildResources => {
            let attrs = if rcn == ResultContent::ChildResources {
                Map::new()
            } else {
                res.attrs.clone()
            };
            m2m_core::serialization::rooted(res.root_name(), nest(attrs, children()?))
        }
        ResultContent::AttributesAndChildResourceReferences => {
            let mut attrs = res.attrs.clone();
            attrs.insert("ch".into(), child_references(&children()?, req.drt));
            m2m_core::serialization::rooted(res.root_name(), attrs)
        }
        ResultContent::ChildResourceReferences => m2m_core::serialization::rooted(
            "m2m:rrl",
            m2m_core::serialization::rooted("rrf", child_references(&children()?, req.drt)),
        ),
        other => {
            return Err(M2mError::bad_request(format!(
                "rcn {} is not valid for RETRIEVE",
                other as u8
            )))
        }
    };
    let mut resp = Response::new(Rsc::Ok, &req.rqi, Some(pc));
    if let Some(offset) = partial_at {
        resp.cts = Some(m2m_core::primitive::PARTIAL_CONTENT);
        resp.cto = Some(offset);
    }
    let counted = resources::content_instance::counts_retrievals(&res).then_some(res);
    Ok((resp, counted))
}

/// A partial retrieve returns only the attributes named in `atrl`.
fn partial(res: &Resource, atrl: &[String]) -> M2mResult<Value> {
    if atrl.is_empty() {
        return Ok(representation(res));
    }
    let mut attrs = Map::new();
    for a in atrl {
        match res.attrs.get(a) {
            Some(v) => {
                attrs.insert(a.clone(), v.clone());
            }
            // An attribute of the type that this resource does not carry now.
            None if schema::attribute(res.ty, a).is_some() => {}
            None => {
                return Err(M2mError::bad_request(format!(
                    "'{a}' is not an attribute of a {}",
                    res.ty.short_name()
                )))
            }
        }
    }
    Ok(m2m_core::serialization::rooted(res.root_name(), attrs))
}

/// How deep child resources nest in an rcn 4 or 8 answer; deeper ones are listed at the last
/// level (the answer's size and depth stay bounded whatever the tree).
const MAX_NESTING: usize = 16;

/// The descendants `found` under `res`, each inside its parent when the parent is listed too,
/// else inside `res` (TS-0004 clause 8.4.3, example 3: child resources nested as in the tree),
/// under their root names. Linear in the number of resources and without recursion: a tree of
/// any depth cannot exhaust a stack here.
fn nest(attrs: Map<String, Value>, found: Vec<Resource>) -> Map<String, Value> {
    let top = found.len();
    let index: HashMap<&str, usize> = found.iter().enumerate().map(|(i, r)| (r.ri(), i)).collect();
    let listed_parent: Vec<usize> = found
        .iter()
        .map(|r| index.get(r.pi()).copied().unwrap_or(top))
        .collect();
    // Nesting levels (0 under `res`), parents before children; beyond MAX_NESTING a resource
    // goes to the deepest allowed level of its chain.
    let mut level = vec![usize::MAX; top];
    let mut parent = vec![top; top];
    for start in 0..top {
        let mut chain = Vec::new();
        let mut at = start;
        while at != top && level[at] == usize::MAX {
            chain.push(at);
            at = listed_parent[at];
            if chain.len() > top {
                break; // a cycle cannot happen in a tree; never loop on bad data
            }
        }
        let (mut up, mut lvl) = if at == top {
            (top, 0)
        } else {
            (at, level[at] + 1)
        };
        for &i in chain.iter().rev() {
            if lvl > MAX_NESTING {
                // Stay at the last level: hang on the same parent as the one before.
                lvl = MAX_NESTING;
                up = parent[listed_parent[i]];
            }
            parent[i] = up;
            level[i] = lvl;
            up = i;
            lvl += 1;
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); top + 1];
    for (i, p) in parent.iter().enumerate() {
        children[*p].push(i);
    }
    // Deepest first: every child is complete before its parent takes it.
    let mut order: Vec<usize> = (0..top).collect();
    order.sort_by_key(|i| std::cmp::Reverse(level[*i]));
    let mut done: Vec<Option<Map<String, Value>>> = vec![None; top];
    let adopt = |mut into: Map<String, Value>,
                 kids: &[usize],
                 done: &mut Vec<Option<Map<String, Value>>>| {
        for &c in kids {
            let child = done[c].take().unwrap_or_default();
            let list = into
                .entry(found[c].root_name().into_owned())
                .or_insert_with(|| json!([]));
            if let Value::Array(a) = list {
                a.push(Value::Object(child));
            }
        }
        into
    };
    for i in order {
        let built = adopt(found[i].attrs.clone(), &children[i], &mut done);
        done[i] = Some(built);
    }
    adopt(attrs, &children[top], &mut done)
}

/// The descendants a retrieve lists (rcn 4, 5, 6, 8): those matching the filter criteria, down
/// to `lvl` (every level without it, as a discovery), that the originator may retrieve itself,
/// within `ofst` and `lim`; with the offset to continue from when there are more. An instance
/// its container hides (disableRetrieval) is left out.
fn filtered_children(
    cse: &Cse,
    req: &Request,
    res: &Resource,
    peer: &Peer,
) -> M2mResult<(Vec<Resource>, Option<u64>)> {
    let offset = req.fc.offset.unwrap_or(0);
    let roles = crate::roles::held(cse, req, peer);
    let found = crate::discovery::Walk {
        root: res,
        fc: &req.fc,
        level: req.fc.level,
        op: AccessOperation::Retrieve,
        offset,
        limit: crate::discovery::limit(cse, &req.fc),
        deadline: crate::discovery::deadline(cse),
        roles: &roles,
    }
    .run(cse, peer)?;
    if found.timed_out {
        return Err(crate::discovery::timed_out());
    }
    let next = found.partial.then(|| offset + found.resources.len() as u64);
    // A parent that cannot be read hides its children (fail closed).
    let mut parents: HashMap<String, Option<Option<Resource>>> = HashMap::new();
    parents.insert(res.ri().to_owned(), Some(Some(res.clone())));
    let mut children = found.resources;
    children.retain(|child| {
        let parent = parents
            .entry(child.pi().to_owned())
            .or_insert_with(|| cse.store.get(child.pi()).ok());
        match parent {
            None => false,
            Some(p) => !p
                .as_ref()
                .is_some_and(|p| resources::behaviour(p.ty).hides_child(p, child)),
        }
    });
    Ok((children, next))
}

/// `m2m:childResourceRef`s, each addressed as the Desired Identifier Result Type asks (TS-0004
/// table 6.3.5.29-1: also outside discovery).
fn child_references(children: &[Resource], drt: m2m_core::DiscResType) -> Value {
    Value::Array(
        children
            .iter()
            .map(|c| json!({ "nm": c.rn(), "typ": c.ty.code(), "val": address_of(c, drt) }))
            .collect(),
    )
}

/// A resource's address as `drt` asks: its structured name (`cse-in/ae/cnt`) or its resourceID.
pub(crate) fn address_of(res: &Resource, drt: m2m_core::DiscResType) -> String {
    match drt {
        m2m_core::DiscResType::Structured => res.srn.clone(),
        m2m_core::DiscResType::Unstructured => res.ri().to_owned(),
    }
}

pub async fn update(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: &Peer,
) -> M2mResult<Response> {
    let res = target.into_resource("UPDATE")?;
    // Types never updated refuse before their content is even read (4005, not 4000).
    schema::updatable(res.ty)?;
    refuse_another_type(&req, &res)?;
    let mut content = content_of(&req, res.ty)?;
    schema::validate_update(res.ty, &content)?;
    refuse_announcement(&content)?;
    bound_expiration(cse, &mut content);
    crate::access_references::pin(cse, res.ty, &mut content)?;
    let behaviour = resources::behaviour(res.ty);
    let call = Call {
        cse,
        req: &req,
        peer,
    };
    behaviour.prepare_update(call, &res, &content).await?;
    refuse_outlived(cse, &res, &content)?;
    // A blocking-update subscription holds every other UPDATE of the resource until its target
    // answered this one (TS-0004 clause 7.5.1.2.19).
    let _blocked = subscription_events::blocking_update(cse, &res, &content).await?;
    let requested =
        (req.result_content() == ResultContent::ModifiedAttributes).then(|| content.clone());
    let now = cse.now_ts();
    let cse2 = Arc::clone(cse);
    let ri = res.ri().to_owned();
    // Who made the change, as far as it is more than a claim.
    let by = peer
        .proof
        .identifies()
        .then(|| peer.originator.clone())
        .flatten();
    let (updated, modified, before) = cse
        .store
        .write(move |w| {
            let mut cur = w
                .get(&ri)?
                .ok_or_else(|| M2mError::not_found("the resource was deleted"))?;
            let mut modified = Map::new();
            let before: Map<String, Value> = content
                .keys()
                .filter_map(|k| cur.attrs.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            for (k, v) in &content {
                if v.is_null() {
                    cur.attrs.remove(k);
                } else {
                    cur.attrs.insert(k.clone(), v.clone());
                }
                modified.insert(k.clone(), v.clone());
            }
            cur.attrs.insert("lt".into(), json!(now));
            if let Some(st) = cur.u64_attr("st") {
                cur.attrs.insert("st".into(), json!(st + 1));
            }
            resources::behaviour(cur.ty).apply_update(
                &cse2,
                w,
                &mut cur,
                &modified,
                &before,
                by.as_ref(),
            )?;
            w.update(&cur)?;
            Ok((cur, modified, before))
        })
        .await?;
    behaviour.updated(cse, &updated, &modified, &before);
    subscription_events::on_event(
        cse,
        &updated,
        Event::Update,
        &updated,
        Some(&modified),
        req.from.as_deref(),
    );
    if !peer.by_action {
        resources::action::subject_updated(cse, &updated);
    }
    // Last, so that nothing above is lost if the requester goes away meanwhile; bounded as a
    // DELETE's wait for its notices.
    let _ = tokio::time::timeout(
        SUBSCRIPTION_GONE_WAIT,
        behaviour.settle_update(cse, &updated, &modified, &before),
    )
    .await;
    let pc = match req.result_content() {
        ResultContent::Nothing => None,
        ResultContent::ModifiedAttributes => {
            let set =
                changed_by_the_cse(&res.attrs, &updated.attrs, &requested.unwrap_or_default());
            (!set.is_empty()).then(|| m2m_core::serialization::rooted(updated.root_name(), set))
        }
        _ => Some(representation(&updated)),
    };
    Ok(Response::new(Rsc::Updated, &req.rqi, pc))
}

/// What a CREATE or UPDATE answers with rcn=9 (TS-0004 7.2.1.2): the attributes the Hosting CSE added,
/// changed or deleted (null) other than as the request asked; the requested values are the
/// requester's own.
fn changed_by_the_cse(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    requested: &Map<String, Value>,
) -> Map<String, Value> {
    let mut set: Map<String, Value> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v) && requested.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in before.keys() {
        if !after.contains_key(k) && !requested.contains_key(k) {
            set.insert(k.clone(), Value::Null);
        }
    }
    set
}

/// A DELETE. Its answer (TS-0004 table 7.5.2-2, D/1,4,5,6,8) is the resource as a RETRIEVE with
/// the same Result Content would have shown it, children included, read before it went.
pub async fn delete(
    cse: &Arc<Cse>,
    req: &Request,
    target: Target,
    peer: &Peer,
) -> M2mResult<Response> {
    let res = instance_of(cse, target)?;
    if res.ty == ResourceType::CseBase {
        return Err(M2mError::not_allowed("the CSEBase cannot be deleted"));
    }
    let pc = match req.result_content() {
        ResultContent::Nothing => None,
        _ if lists_children(req) => {
            let (shown, _) = retrieve(cse, req, Target::Resource(res.clone()), peer)?;
            shown.pc
        }
        _ => Some(representation(&res)),
    };
    // The administrator deleting an <AE> frees its AE-ID (`store::AeIdHolder`): the operator
    // retired the device; the AE deregistering itself, or expiring, does not.
    let frees_ae_id = res.ty == ResourceType::Ae && peer.is_admin(cse);
    delete_and_tell(cse, &res, req.from.as_deref(), true, frees_ae_id).await?;
    Ok(Response::new(Rsc::Deleted, &req.rqi, pc))
}

/// Deletes a resource with its subtree and sends the notifications that follow; also used by
/// expiry (`originator` None: the CSE's own doing).
pub(crate) async fn delete_resource(
    cse: &Arc<Cse>,
    res: &Resource,
    originator: Option<&str>,
) -> M2mResult<()> {
    delete_and_tell(cse, res, originator, originator.is_some(), false).await
}

/// [`delete_resource`], answering after its subscription deletion notifications went out
/// (within [`SUBSCRIPTION_GONE_WAIT`]) when `wait`, as a DELETE by request does, and a
/// deletion that one waits for (a crossResourceSubscription whose subscription went). With
/// `frees_ae_id`, the AE-ID of a deleted `<AE>` may be registered again by anyone the
/// registration rules admit.
pub(crate) async fn delete_and_tell(
    cse: &Arc<Cse>,
    res: &Resource,
    originator: Option<&str>,
    wait: bool,
    frees_ae_id: bool,
) -> M2mResult<()> {
    let target = res.clone();
    // What the notifications, credential bindings and types' state below need, nothing more.
    let reported: Vec<ResourceType> = [ResourceType::Ae, ResourceType::Subscription]
        .into_iter()
        .chain(resources::keeping_state().iter().copied())
        .collect();
    let cse2 = Arc::clone(cse);
    let (deleted, parent) = cse
        .store
        .write(move |w| {
            let deleted = w.delete_subtree(&target, &reported)?;
            if frees_ae_id {
                for ae in deleted.iter().filter(|r| r.ty == ResourceType::Ae) {
                    w.release_ae_id(ae.ri())?;
                }
            }
            let parent = w.get(target.pi())?;
            if let Some(parent) = &parent {
                resources::behaviour(parent.ty).child_deleted(&cse2, w, parent, &target)?;
            }
            Ok((deleted, parent))
        })
        .await?;
    resources::behaviour(res.ty).deleted(cse, res);
    // What went with it: its timers, indexes and subscriptions elsewhere go too.
    for gone in deleted.iter().skip(1) {
        let behaviour = resources::behaviour(gone.ty);
        if behaviour.keeps_state() {
            behaviour.deleted(cse, gone);
        }
    }
    let told = subscription_events::on_deleted(cse, res, &deleted);
    crate::group::members_deleted(cse, res);
    // A crossResourceSubscription leaves the subscriptions it joined, and deletes those it made,
    // before the DELETE is answered (TS-0004 clause 7.4.58.2.4): a client reading one of them
    // next finds it no longer there. (Boxed: that deletes resources in turn.)
    for crs in deleted
        .iter()
        .filter(|r| r.ty == ResourceType::CrossResourceSubscription)
    {
        Box::pin(resources::cross_resource_subscription::release_targets(
            cse, crs,
        ))
        .await;
    }
    if let Some(parent) = parent {
        subscription_events::on_event(cse, &parent, Event::DeleteChild, res, None, originator);
        resources::action::children_changed(cse, parent.ri());
    }
    // A DELETE answers after its subscriptions' deletion notifications went out (TS-0004
    // clause 7.4.8.2.4, Recv-6.5), all within one bounded wait.
    if wait {
        let deadline = tokio::time::Instant::now() + SUBSCRIPTION_GONE_WAIT;
        for sent in told {
            let _ = tokio::time::timeout_at(deadline, sent).await;
        }
    }
    Ok(())
}

/// How long a DELETE waits, in all, for its subscription deletion notifications (and an UPDATE
/// for what `settle_update` waits for).
pub(crate) const SUBSCRIPTION_GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn notify(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: &Peer,
) -> M2mResult<Response> {
    let res = target.into_resource("NOTIFY")?;
    if res.ty == ResourceType::CseBase {
        // The group security association handshake (seeds/001 clause 8.2.1) speaks to the CSE.
        if let Some(answer) = crate::group_authentication::handle_notify(cse, &req, peer).await {
            return answer;
        }
        // ESPrim (TS-0004 clause 7.6.2): rand requests and protected primitives for this CSE.
        if let Some(answer) = crate::esprim::handle_notify(cse, &req, peer).await {
            return answer;
        }
        // A member hosting CSE's answer to a multicast fan-out (TS-0001 clause 10.2.7.13.2).
        if let Some(answer) = crate::multicast::host::handle_notify(cse, &req, peer) {
            return answer;
        }
        // Group credentials end to end (seeds/001 clause 5.1): the admin asks for a distribution.
        if let Some(answer) = crate::group_credentials::handle_notify(cse, &req, peer).await {
            return answer;
        }
    }
    match res.ty {
        // A notification for an AE is relayed to its pointOfAccess.
        ResourceType::Ae => notification::relay_to_ae(cse, req, &res).await,
        // An event of a target of a cross-resource subscription, for its time window.
        ResourceType::CrossResourceSubscription => {
            resources::cross_resource_subscription::notified(cse, &req, peer, &res).await
        }
        // A CSE takes the verification requests and deletion notices of subscriptions naming
        // it; it has nothing to do with any other notification (TS-0004 clause 7.3.3.9).
        ResourceType::CseBase => {
            let sgn = req.pc.as_ref().and_then(|pc| pc.get("m2m:sgn"));
            let flag = |k: &str| sgn.and_then(|s| s.get(k)) == Some(&Value::Bool(true));
            if flag("vrq") || flag("sud") {
                Ok(Response::new(Rsc::Ok, &req.rqi, None))
            } else {
                Err(M2mError::bad_request(
                    "this CSE takes no such notification: only subscription verification and deletion notices",
                ))
            }
        }
        ResourceType::RemoteCse => Ok(Response::new(Rsc::Ok, &req.rqi, None)),
        other => Err(M2mError::not_allowed(format!(
            "a {} cannot receive notifications",
            other.short_name()
        ))),
    }
}
