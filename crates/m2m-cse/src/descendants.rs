//! descendantCSEs (`dcse`, TS-0001 table 9.6.4-2 and clause 10.2.2.4; TS-0004 clause 7.4.4.2):
//! which CSEs are registered below a CSE registered here. A registree keeps its list up to date
//! at its registrar (`registration::publish_descendants`: whenever a CSE registers with it,
//! changes its own list or goes); a registrar keeps of each list only the CSEs nobody else here
//! accounts for and its `[[registration.descendants]]` rules allow ([`admit`]), and takes a
//! registree's word only for itself and its descendants (`impersonation`).
//!
//! Claims are first come, first kept: a registree cannot take over a CSE that this CSE, its
//! registrar, the IN-CSE, another registree or another registree's list already accounts for.
//! Where `[[registration.descendants]]` rules say which CSEs each registree may list, a claim
//! outside them is left out too (and stored lists are judged again at start, [`judge_stored`]);
//! without rules a CSE nobody accounts for yet can be claimed, and the claimant is then taken at
//! its word for it (docs/SECURITY.md). What this CSE's own registrar refuses leaves the lists
//! here ([`drop_refused`]).

use crate::context::Context;
use crate::store::{Reader, Resource};
use m2m_core::{CseId, M2mResult, ResourceType};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};

/// One publication of this CSE's list at a time (an older list never overwrites a newer one),
/// and at most one loop trying again.
#[derive(Default)]
pub(crate) struct Publishing {
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
    pub(crate) retrying: std::sync::atomic::AtomicBool,
}

/// The CSEs a `<remoteCSE>` accounts for here: its own CSE-ID and its `dcse`.
fn accounted(csr: &Resource) -> impl Iterator<Item = CseId> + '_ {
    let own = csr.str_attr("csi").and_then(|c| CseId::parse(c).ok());
    own.into_iter().chain(listed(csr))
}

/// The `dcse` of a `<remoteCSE>` as stored (each entry admitted when it was written).
fn listed(csr: &Resource) -> impl Iterator<Item = CseId> + '_ {
    crate::store::string_list(csr.attrs.get("dcse"))
        .into_iter()
        .filter_map(|c| CseId::parse(&c).ok())
}

/// Whether the registree `csr` (a `<remoteCSE>` here) lists `id` among its descendants.
pub(crate) fn lists(csr: &Resource, id: &CseId) -> bool {
    listed(csr).any(|c| c == *id)
}

/// The registree here whose kept `dcse` lists `id`: the way down to a CSE registered below it
/// (TS-0001 clause 10.2.2.4). [`admit`] keeps the lists disjoint, so at most one does.
pub(crate) fn registree_above(cse: &Context, id: &CseId) -> M2mResult<Option<Resource>> {
    // What the index names is read again and checked: a registree changed since is not taken
    // at the index's word.
    match cse.descendant_index.registree_of(cse, id)? {
        Some(ri) => Ok(cse
            .store
            .get(&ri)?
            .filter(|r| r.ty == ResourceType::RemoteCse && lists(r, id))),
        None => Ok(None),
    }
}

/// Which registree lists each descendant CSE: built from all `<remoteCSE>`s once, and again
/// only after a commit changed one (the store's registrees generation), so that routing a
/// request down does not read every registree.
#[derive(Default)]
pub(crate) struct Index {
    built: std::sync::RwLock<Option<Built>>,
}

/// An index and the registrees generation it was built at.
struct Built {
    generation: u64,
    registree_of: HashMap<CseId, String>,
}

impl Index {
    /// The resourceID of the registree whose `dcse` lists `id`.
    fn registree_of(&self, cse: &Context, id: &CseId) -> M2mResult<Option<String>> {
        // Read before the registrees: a commit after this makes the index built below stale.
        let generation = cse.store.registrees_generation();
        if let Some(built) = &*self.built.read().unwrap_or_else(|e| e.into_inner()) {
            if built.generation == generation {
                return Ok(built.registree_of.get(id).cloned());
            }
        }
        let registrar = cse.id.registrar.as_ref().map(CseId::bare);
        let registrees = cse.store.read(|r| r.all_of_type(ResourceType::RemoteCse))?;
        let mut map = HashMap::new();
        for csr in registrees.iter().filter(|c| Some(c.ri()) != registrar) {
            for listed in listed(csr) {
                map.entry(listed).or_insert_with(|| csr.ri().to_owned());
            }
        }
        let found = map.get(id).cloned();
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = Some(Built {
            generation,
            registree_of: map,
        });
        Ok(found)
    }
}

/// The `dcse` the registree `owner` may hold here, from the list it `claimed`: SP-relative
/// CSE-IDs that are neither this CSE, nor its registrar, nor `owner` itself, nor accounted for by
/// another `<remoteCSE>` here (read inside the write transaction, so two registrees cannot both
/// take one). What is left out is audited, not refused: one rogue entry must not keep a
/// registree from declaring the others.
pub(crate) fn admit(
    cse: &Context,
    r: &Reader<'_>,
    owner: &CseId,
    claimed: &[String],
) -> M2mResult<Vec<String>> {
    let mut taken: BTreeSet<CseId> = BTreeSet::new();
    taken.insert(cse.id.cse_id.clone());
    taken.extend(cse.id.registrar.iter().cloned());
    // The IN-CSE is nobody's descendant.
    taken.insert(cse.id.in_cse.clone());
    taken.insert(owner.clone());
    for csr in r.all_of_type(ResourceType::RemoteCse)? {
        if csr.ri() != owner.bare() {
            taken.extend(accounted(&csr));
        }
    }
    let mut admitted = BTreeSet::new();
    for entry in claimed {
        match descendant_id(entry) {
            Some(id) if !taken.contains(&id) && provisioned(cse, owner, &id) => {
                admitted.insert(id.sp_relative());
            }
            Some(id) if !taken.contains(&id) => {
                tracing::warn!(target: "audit", registree = %owner, entry = %id, "descendant CSE left out: no registration.descendants rule lets this registree list it");
            }
            _ => {
                tracing::warn!(target: "audit", registree = %owner, entry = %entry, "descendant CSE left out: not a CSE-ID of this SP, or accounted for here already");
            }
        }
    }
    Ok(admitted.into_iter().collect())
}

/// Whether the configured rules let `owner` list `id` (any CSE without rules).
fn provisioned(cse: &Context, owner: &CseId, id: &CseId) -> bool {
    m2m_security::registration_rules::descendant_admitted(
        &cse.cfg.registration.descendants,
        owner,
        id,
    )
}

/// At start: the lists kept from before hold only what the rules configured now allow (a rule
/// taken away applies at once, not at the registree's next update). Before this CSE registers
/// with its registrar, so the list it publishes there is the judged one.
pub(crate) async fn judge_stored(cse: &Context) -> M2mResult<()> {
    let rules = cse.cfg.registration.descendants.clone();
    if rules.is_empty() {
        return Ok(());
    }
    let registrar = cse.id.registrar.as_ref().map(|r| r.bare().to_owned());
    cse.store
        .write(move |w| {
            for mut csr in w.all_of_type(ResourceType::RemoteCse)? {
                let Some(owner) = csr.str_attr("csi").and_then(|c| CseId::parse(c).ok()) else {
                    continue;
                };
                if Some(csr.ri()) == registrar.as_deref() {
                    continue;
                }
                let (kept, dropped): (Vec<CseId>, Vec<CseId>) = listed(&csr).partition(|id| {
                    m2m_security::registration_rules::descendant_admitted(&rules, &owner, id)
                });
                if dropped.is_empty() {
                    continue;
                }
                tracing::warn!(target: "audit", registree = %owner, dropped = ?dropped.iter().map(CseId::sp_relative).collect::<Vec<_>>(), "descendant CSEs dropped: no registration.descendants rule lets this registree list them");
                let kept: Vec<String> = kept.iter().map(CseId::sp_relative).collect();
                csr.attrs.insert("dcse".into(), json!(kept));
                w.update(&csr)?;
            }
            Ok(())
        })
        .await
}

/// An entry of a `dcse`: an SP-relative CSE-ID (a CSE of another SP is never registered below
/// one of ours; `/S...` is an AE).
fn descendant_id(entry: &str) -> Option<CseId> {
    entry
        .starts_with('/')
        .then(|| CseId::parse(entry).ok())
        .flatten()
        .filter(|id| id.check_not_ae_form().is_ok())
}

/// Keeps the `dcse` of a `<remoteCSE>` being written to what [`admit`] allows.
pub(crate) fn keep_admitted(cse: &Context, r: &Reader<'_>, csr: &mut Resource) -> M2mResult<()> {
    if !csr.attrs.contains_key("dcse") {
        return Ok(());
    }
    let Some(owner) = csr.str_attr("csi").and_then(|c| CseId::parse(c).ok()) else {
        return Ok(());
    };
    let claimed = crate::store::string_list(csr.attrs.get("dcse"));
    let admitted = admit(cse, r, &owner, &claimed)?;
    csr.attrs.insert("dcse".into(), json!(admitted));
    Ok(())
}

/// This CSE's descendants, as its registrar should know them: every CSE registered here (but the
/// registrar) and their descendants as kept here, with `joining` (a registration being made).
pub(crate) fn ours(cse: &Context, joining: &[CseId]) -> M2mResult<Vec<String>> {
    let registrees = cse.store.read(|r| r.all_of_type(ResourceType::RemoteCse))?;
    let mut all: BTreeSet<CseId> = joining.iter().cloned().collect();
    for csr in &registrees {
        if cse
            .id
            .registrar
            .as_ref()
            .is_some_and(|reg| csr.ri() == reg.bare())
        {
            continue;
        }
        all.extend(accounted(csr));
    }
    all.remove(&cse.id.cse_id);
    Ok(all.into_iter().map(|c| c.sp_relative()).collect())
}

/// After the registrar kept only `kept` of the list this CSE sent it: what it left out is
/// nobody's below this CSE either, so it leaves the lists of this CSE's registrees too (a
/// registree that claimed a CSE known elsewhere in the tree, which this CSE could not tell).
pub(crate) fn drop_refused(
    w: &crate::store::Writer<'_>,
    refused: &BTreeSet<CseId>,
) -> M2mResult<()> {
    if refused.is_empty() {
        return Ok(());
    }
    for mut csr in w.all_of_type(ResourceType::RemoteCse)? {
        let before = crate::store::string_list(csr.attrs.get("dcse"));
        let after: Vec<String> = before
            .iter()
            .filter(|c| CseId::parse(c).map_or(true, |id| !refused.contains(&id)))
            .cloned()
            .collect();
        if after.len() != before.len() {
            tracing::warn!(target: "audit", registree = %csr.ri(), dropped = ?refused, "descendant CSEs dropped: the registrar accounts for them elsewhere");
            csr.attrs.insert("dcse".into(), json!(after));
            w.update(&csr)?;
        }
    }
    Ok(())
}

/// Our `dcse` for the `<remoteCSE>` this CSE creates or refreshes at its registrar.
pub(crate) fn current(cse: &Context) -> Vec<String> {
    ours(cse, &[]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sp_relative_cse_ids_are_descendants() {
        for (entry, ok) in [
            ("/id-asn", true),
            ("id-asn", false),
            ("//m2m.example.com/id-asn", false),
            ("/Sphone", false),
            ("/id-asn/Cx", false),
            ("/", false),
        ] {
            assert_eq!(descendant_id(entry).is_some(), ok, "{entry}");
        }
    }

    /// What the registrar refused of this CSE's list leaves every registree's list here, and
    /// nothing else does.
    #[test]
    fn refused_descendants_leave_the_registrees_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), crate::config::SyncMode::Normal).unwrap();
        let csr = |csi: &str, dcse: &[&str]| {
            let bare = csi.trim_start_matches('/');
            let attrs =
                json!({"ri": bare, "rn": bare, "pi": "id-mn", "ty": 16, "csi": csi, "dcse": dcse});
            Resource {
                seq: 0,
                ty: ResourceType::RemoteCse,
                srn: format!("cse-mn/{bare}"),
                attrs: attrs.as_object().unwrap().clone(),
                creator: None,
                specialization: None,
            }
        };
        let (a, b) = (
            csr("/id-asn", &["/id-mnc", "/id-x"]),
            csr("/id-asn2", &["/id-y"]),
        );
        store
            .write_blocking(move |w| {
                w.insert(a)?;
                w.insert(b).map(|_| ())
            })
            .unwrap();
        let refused: BTreeSet<CseId> = [CseId::parse("/id-mnc").unwrap()].into();
        store
            .write_blocking(move |w| drop_refused(w, &refused))
            .unwrap();
        let list =
            |ri: &str| crate::store::string_list(store.get(ri).unwrap().unwrap().attrs.get("dcse"));
        assert_eq!(list("id-asn"), vec!["/id-x"]);
        assert_eq!(list("id-asn2"), vec!["/id-y"]);
    }
}
