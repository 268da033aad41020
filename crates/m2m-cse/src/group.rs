//! `<group>` (TS-0001 clause 9.6.13, TS-0004 clause 7.4.13): member validation against memberType and
//! maxNrOfMembers, and the `<fanOutPoint>` that applies a request to every member and aggregates the
//! responses.

use crate::cse::{Cse, Peer};
use crate::store::{string_list, Resource};
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// memberType "mixed" (TS-0004 table 6.3.4.2.x: value 0).
const MIXED: u64 = 0;

/// consistencyStrategy (TS-0004): what to do with a member of the wrong type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Consistency {
    AbandonMember = 1,
    AbandonGroup = 2,
    SetMixed = 3,
}

fn consistency(attrs: &Map<String, Value>) -> Consistency {
    match attrs.get("csy").and_then(Value::as_u64) {
        Some(2) => Consistency::AbandonGroup,
        Some(3) => Consistency::SetMixed,
        _ => Consistency::AbandonMember,
    }
}

/// The type of a member, asked of its hosting CSE (locally or through retargeting); `None` when it
/// cannot be retrieved.
/// The request is made as the group's creator makes its own, with what its association proved
/// (never as the CSE itself, which would upgrade a claim).
async fn member_type(cse: &Arc<Cse>, peer: &Peer, originator: &str, member: &str) -> Option<u64> {
    let rqi = format!("grp-{}", crate::context::random_suffix(10));
    let mut req = Request::new(
        Operation::Retrieve,
        member,
        Some(originator.to_owned()),
        rqi,
    );
    req.atrl = vec!["ty".into()];
    let resp = cse.handle(req, peer.clone()).await;
    if !resp.rsc.is_success() {
        return None;
    }
    resp.pc?.as_object()?.values().next()?.get("ty")?.as_u64()
}

/// Validates memberIDs and sets currentNrOfMembers and memberTypeValidated.
pub async fn prepare_create(
    cse: &Arc<Cse>,
    req: &Request,
    attrs: &mut Map<String, Value>,
    peer: &Peer,
) -> M2mResult<()> {
    validate_members(cse, req, attrs, peer).await
}

pub async fn prepare_update(
    cse: &Arc<Cse>,
    req: &Request,
    res: &Resource,
    content: &Map<String, Value>,
    peer: &Peer,
) -> M2mResult<()> {
    let mut merged = crate::resources::merged(res, content);
    validate_members(cse, req, &mut merged, peer).await?;
    // A member listed twice is listed once (TS-0004 clause 7.4.13.2.3: duplicates removed);
    // any other difference is a member that does not exist or does not fit.
    if merged.get("mid").map(|m| string_list(Some(m)))
        != content.get("mid").map(|m| unique(string_list(Some(m))))
    {
        return Err(M2mError::new(
            Rsc::GroupMemberTypeInconsistent,
            "some memberIDs do not exist or are of the wrong type",
        ));
    }
    Ok(())
}

async fn validate_members(
    cse: &Arc<Cse>,
    req: &Request,
    attrs: &mut Map<String, Value>,
    peer: &Peer,
) -> M2mResult<()> {
    let originator = req.from.clone().unwrap_or_default();
    let mut mids: Vec<String> = Vec::new();
    for m in attrs
        .get("mid")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let m = m
            .as_str()
            .ok_or_else(|| M2mError::bad_request("memberIDs must be strings"))?;
        if !mids.iter().any(|x| x == m) {
            mids.push(m.to_owned());
        }
    }
    let mnm = attrs
        .get("mnm")
        .and_then(Value::as_u64)
        .unwrap_or(cse.cfg.limits.max_group_members);
    if mids.len() as u64 > mnm.min(cse.cfg.limits.max_group_members) {
        return Err(M2mError::new(
            Rsc::MaxNumberOfMemberExceeded,
            format!("{} members exceed maxNrOfMembers {mnm}", mids.len()),
        ));
    }
    let mut mt = attrs.get("mt").and_then(Value::as_u64).unwrap_or(MIXED);
    let csy = consistency(attrs);
    let mut valid = Vec::with_capacity(mids.len());
    for m in mids {
        match member_type(cse, peer, &originator, &m).await {
            None => tracing::debug!(member = %m, "group member cannot be retrieved: removed"),
            Some(t) if mt == MIXED || t == mt => valid.push(m),
            Some(_) => match csy {
                Consistency::AbandonMember => {}
                Consistency::AbandonGroup => {
                    return Err(M2mError::new(
                        Rsc::GroupMemberTypeInconsistent,
                        format!("member '{m}' is not of memberType {mt}"),
                    ))
                }
                Consistency::SetMixed => {
                    mt = MIXED;
                    valid.push(m);
                }
            },
        }
    }
    attrs.insert("mt".into(), json!(mt));
    attrs.insert("cnm".into(), json!(valid.len()));
    attrs.insert("mid".into(), json!(valid));
    attrs.insert("mtv".into(), json!(true));
    // semanticSupportIndicator: this CSE answers `<group>/sfop` (TS-0004 clause 7.4.35).
    attrs.insert("ssi".into(), json!(true));
    Ok(())
}

/// Keeps currentNrOfMembers in step with memberIDs after an update.
/// The list without its repeated entries, in the order of their first appearance.
fn unique(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for x in list {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Stores memberIDs without repetition and currentNrOfMembers to match.
pub fn refresh_counts(res: &mut Resource) {
    if let Some(mid) = res.attrs.get("mid") {
        let once = unique(string_list(Some(mid)));
        res.attrs.insert("mid".into(), json!(once));
    }
    let n = res
        .attrs
        .get("mid")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    res.attrs.insert("cnm".into(), json!(n));
}

/// Applies a request to every member (`<group>/fopt[/rest]`) and aggregates the answers in `m2m:agr`.
pub async fn fan_out(
    cse: &Arc<Cse>,
    req: Request,
    group: Resource,
    rest: String,
    peer: Peer,
) -> M2mResult<Response> {
    let members = string_list(group.attrs.get("mid"));
    if members.is_empty() {
        return Err(M2mError::new(Rsc::NoMembers, "the group has no members"));
    }
    let peer = nested(peer, &rest, members.len())?;
    // Members on member hosting CSEs of a multicast group get one datagram (TS-0004 clause
    // 7.4.14.2.6); the others a request each.
    // Only for an originator something proves (as for retargeting): a claim never makes
    // the group hosting CSE key a multicast group.
    let multicast = match &cse.multicast_host {
        Some(host) if peer.proof.identifies() => host.ensure(cse, &group).await.map(|g| (host, g)),
        _ => None,
    };
    let by_multicast = async {
        match &multicast {
            Some((host, g)) => host.fan_out(cse, &req, &rest, &peer, g).await,
            None => Vec::new(),
        }
    };
    let unicast: Vec<&String> = members
        .iter()
        .filter(|m| !multicast.as_ref().is_some_and(|(_, g)| g.covers(m)))
        .collect();
    let calls = unicast
        .into_iter()
        .map(|m| to_member(cse, req.clone(), m, &rest, peer.clone()));
    let (responses, multicast_rsps) =
        futures_util::future::join(futures_util::future::join_all(calls), by_multicast).await;
    if req.op == Operation::Delete && rest.is_empty() {
        forget_deleted_members(cse, &group, &responses).await;
    }
    let mut rsps: Vec<Value> = responses.iter().map(Response::to_rsp_json).collect();
    rsps.extend(multicast_rsps);
    Ok(Response::new(
        Rsc::Ok,
        &req.rqi,
        Some(m2m_core::serialization::rooted(
            "m2m:agr",
            m2m_core::serialization::rooted("m2m:rsp", rsps),
        )),
    ))
}

/// After a DELETE fanned out to the members themselves, the members that answered DELETED leave
/// memberIDs, unless the reference is to a virtual resource (TS-0004 clause 7.4.14.2.4).
async fn forget_deleted_members(cse: &Arc<Cse>, group: &Resource, responses: &[Response]) {
    let gone: Vec<String> = responses
        .iter()
        .filter(|r| r.rsc == Rsc::Deleted)
        .filter_map(|r| r.from.clone())
        .filter(|m| !is_virtual_reference(m))
        .collect();
    if gone.is_empty() {
        return;
    }
    drop_members(cse, group.ri().to_owned(), move |_, m| {
        gone.iter().any(|g| g == m)
    })
    .await;
}

/// Removes from the memberIDs of group `group_ri` the entries `leaves` picks, counts again, and
/// re-indexes the group (the one write both ways members leave: through `fopt` and directly).
async fn drop_members(
    cse: &Arc<Cse>,
    group_ri: String,
    leaves: impl Fn(&Cse, &str) -> bool + Send + 'static,
) {
    let cse2 = Arc::clone(cse);
    let updated = cse
        .store
        .write(move |w| {
            let Some(mut g) = w.get(&group_ri)? else {
                return Ok(None);
            };
            let kept: Vec<String> = string_list(g.attrs.get("mid"))
                .into_iter()
                .filter(|m| !leaves(&cse2, m))
                .collect();
            g.attrs.insert("mid".into(), json!(kept));
            refresh_counts(&mut g);
            w.update(&g)?;
            Ok(Some(g))
        })
        .await;
    match updated {
        Ok(Some(g)) => {
            cse.group_members.index(cse, &g);
            members_changed(cse, &g);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(dbg = %e.dbg, "deleted members not removed from a group"),
    }
}

/// A member reference to a virtual resource (`.../la`, `.../ol`, `.../fopt`).
fn is_virtual_reference(member: &str) -> bool {
    matches!(
        member.rsplit('/').next(),
        Some("la" | "ol" | "fopt" | "pcu" | "ntsr")
    )
}

/// `req` applied to one member (`member[/rest]`); the answer names the member it came from
/// (TS-0004 clause 7.4.14.2.5). Also what a member hosting CSE does with a multicast fan-out.
/// Groups of groups fan out this many levels deep at most.
pub(crate) const MAX_FAN_OUT_DEPTH: u8 = 3;

/// Member requests one fan-out makes at most, its nested levels together: as many as one group
/// may have members (`limits.max_group_members`' default).
pub(crate) const MAX_FAN_OUT_REQUESTS: usize = 10_000;

/// The peer of a fan-out's member requests, one level deeper. A fan-out whose levels would go
/// deeper than [`MAX_FAN_OUT_DEPTH`] (a group in its own memberIDs, or groups naming each other,
/// here or on other CSEs) is refused before any member is asked: the levels still to come are the
/// `fopt`s of `rest`, each consumed by one level, and those already made here are the peer's. A
/// request arriving from another CSE holds no depth of this CSE's, but its path only holds the
/// levels left of its own bound, so the levels of all CSEs together stay within it.
///
/// Each level also takes its `members` out of the budget of member requests the whole tree
/// shares ([`MAX_FAN_OUT_REQUESTS`]): a level beyond it is 5207 NOT_ACCEPTABLE (the member that
/// led there answers so in the aggregate), before any of its members is asked.
pub(crate) fn nested(mut peer: Peer, rest: &str, members: usize) -> M2mResult<Peer> {
    // A semanticFanOutPoint at the end is one more level (its members are retrieved).
    let to_come = rest
        .split('/')
        .filter(|s| matches!(*s, "fopt" | "sfop"))
        .count();
    let levels = usize::from(peer.fan_out_depth) + 1 + to_come;
    if levels > usize::from(MAX_FAN_OUT_DEPTH) {
        return Err(M2mError::bad_request(format!(
            "groups fan out {MAX_FAN_OUT_DEPTH} levels deep at most"
        )));
    }
    let budget = peer
        .fan_out_budget
        .get_or_insert_with(|| Arc::new(std::sync::atomic::AtomicUsize::new(MAX_FAN_OUT_REQUESTS)));
    let ordering = std::sync::atomic::Ordering::SeqCst;
    if budget
        .fetch_update(ordering, ordering, |left| left.checked_sub(members))
        .is_err()
    {
        return Err(M2mError::new(
            Rsc::NotAcceptable,
            format!("one fan-out makes {MAX_FAN_OUT_REQUESTS} member requests at most, its nested groups together"),
        ));
    }
    peer.fan_out_depth += 1;
    Ok(peer)
}

pub(crate) async fn to_member(
    cse: &Arc<Cse>,
    mut req: Request,
    member: &str,
    rest: &str,
    peer: Peer,
) -> Response {
    req.to = if rest.is_empty() {
        member.to_owned()
    } else {
        format!("{member}/{rest}")
    };
    let to = req.to.clone();
    let mut resp = cse.handle(req, peer).await;
    resp.from = Some(member.to_owned());
    resp.to = Some(to);
    resp
}

/// After the memberIDs of `group` changed: a multicast group is re-keyed (or left) now rather than
/// at the next fan-out, so that a member hosting CSE that left stops listening at once.
pub fn members_changed(cse: &Arc<Cse>, group: &Resource) {
    if let Some(host) = cse.multicast_host.clone() {
        let cse = Arc::clone(cse);
        let group = group.clone();
        tokio::spawn(async move {
            host.ensure(&cse, &group).await;
        });
    }
}

/// After `group` was deleted: its member hosting CSEs leave its multicast group.
pub fn deleted(cse: &Arc<Cse>, group: &Resource) {
    if let Some(host) = cse.multicast_host.clone() {
        let cse = Arc::clone(cse);
        let ri = group.ri().to_owned();
        tokio::spawn(async move {
            host.forget(&cse, &ri).await;
        });
    }
}

/// The local members of the groups of this CSE, by structured name: a member deleted directly
/// (not through a group's fan-out) leaves the memberIDs of every group that lists it, as one
/// deleted through `fopt` does (`forget_deleted_members`), and the groups count it no more.
#[derive(Default)]
pub struct MemberIndex {
    inner: std::sync::RwLock<MemberMap>,
}

#[derive(Default)]
struct MemberMap {
    /// Member structured name → (its resourceID, the groups listing it).
    by_srn: std::collections::BTreeMap<String, (String, std::collections::HashSet<String>)>,
    /// Group resourceID → the structured names of its local members.
    of_group: HashMap<String, Vec<String>>,
}

impl MemberIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemberMap> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every group of the store (at start).
    pub fn load(&self, cse: &Cse) -> M2mResult<()> {
        for g in cse.store.read(|r| r.all_of_type(ResourceType::Group))? {
            self.index(cse, &g);
        }
        Ok(())
    }

    /// Indexes the local members of `group` as its memberIDs are now.
    pub fn index(&self, cse: &Cse, group: &Resource) {
        let members: Vec<Resource> = string_list(group.attrs.get("mid"))
            .iter()
            .filter(|m| !is_virtual_reference(m))
            .filter_map(|m| crate::resolve::local_resource(cse, m))
            .collect();
        let mut map = self.write();
        map.forget(group.ri());
        for m in members {
            map.by_srn
                .entry(m.srn.clone())
                .or_insert_with(|| (m.ri().to_owned(), Default::default()))
                .1
                .insert(group.ri().to_owned());
            map.of_group
                .entry(group.ri().to_owned())
                .or_default()
                .push(m.srn);
        }
    }

    pub fn forget(&self, group_ri: &str) {
        self.write().forget(group_ri);
    }

    /// The members at `srn` and below that groups list, with their groups; they leave the index.
    fn take_gone(&self, srn: &str) -> Vec<(String, String, Vec<String>)> {
        // Every DELETE asks: without group members, under a shared lock only.
        if self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_srn
            .is_empty()
        {
            return Vec::new();
        }
        let mut map = self.write();
        let (lo, hi) = crate::store::scan::subtree_bounds(srn);
        let mut keys: Vec<String> = map.by_srn.range(lo..hi).map(|(k, _)| k.clone()).collect();
        if map.by_srn.contains_key(srn) {
            keys.push(srn.to_owned());
        }
        keys.into_iter()
            .filter_map(|k| {
                let (ri, groups) = map.by_srn.remove(&k)?;
                Some((k, ri, groups.into_iter().collect()))
            })
            .collect()
    }
}

impl MemberMap {
    fn forget(&mut self, group_ri: &str) {
        for srn in self.of_group.remove(group_ri).unwrap_or_default() {
            if let Some((_, groups)) = self.by_srn.get_mut(&srn) {
                groups.remove(group_ri);
                if groups.is_empty() {
                    self.by_srn.remove(&srn);
                }
            }
        }
    }
}

/// After `res` and its subtree were deleted: the groups that listed any of them as a member
/// drop those from memberIDs (and count them no more).
pub fn members_deleted(cse: &Arc<Cse>, res: &Resource) {
    let gone = cse.group_members.take_gone(&res.srn);
    if gone.is_empty() {
        return;
    }
    let mut by_group: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (srn, ri, groups) in gone {
        for g in groups {
            by_group
                .entry(g)
                .or_default()
                .push((ri.clone(), srn.clone()));
        }
    }
    let cse = Arc::clone(cse);
    tokio::spawn(async move {
        for (group_ri, members) in by_group {
            let leaves = move |cse: &Cse, m: &str| {
                members
                    .iter()
                    .any(|(ri, srn)| crate::resolve::names_at(cse, m, ri, srn))
            };
            drop_members(&cse, group_ri, leaves).await;
        }
    });
}
