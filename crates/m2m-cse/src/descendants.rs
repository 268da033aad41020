//! descendantCSEs (`dcse`, TS-0001 table 9.6.4-2 and clause 10.2.2.4; TS-0004 clause 7.4.4.2):
//! which CSEs are registered below a CSE registered here. A registree keeps its list up to date
//! at its registrar (`registration::publish_descendants`: whenever a CSE registers with it,
//! changes its own list or goes);
//! a registrar keeps of each list only the CSEs nobody else here accounts for ([`admit`]), and
//! takes a registree's word only for itself and its descendants (`impersonation`).
//!
//! Claims are first come, first kept: a registree cannot take over a CSE that this CSE, its
//! registrar, another registree or another registree's list already accounts for. So a rogue
//! registree can at worst keep a CSE that registers elsewhere later from being relayed for here
//! (until its claim goes), never speak for one already known.

use crate::context::Context;
use crate::store::{Reader, Resource};
use m2m_core::{CseId, M2mResult, ResourceType};
use serde_json::json;
use std::collections::BTreeSet;

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
    taken.insert(owner.clone());
    for csr in r.all_of_type(ResourceType::RemoteCse)? {
        if csr.ri() != owner.bare() {
            taken.extend(accounted(&csr));
        }
    }
    let mut admitted = BTreeSet::new();
    for entry in claimed {
        match descendant_id(entry) {
            Some(id) if !taken.contains(&id) => {
                admitted.insert(id.sp_relative());
            }
            _ => {
                tracing::warn!(target: "audit", registree = %owner, entry = %entry, "descendant CSE left out: not a CSE-ID of this SP, or accounted for here already");
            }
        }
    }
    Ok(admitted.into_iter().collect())
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
}
