//! `<AEAnnc>` on the IN-CSE (TS-0004 clause 7.4.5.2.1, TS-0001 clause 10.2.2.2 steps 005b to
//! 008b): the record of an S-stem AE-ID registered at another CSE of the SP, which keeps S-stems
//! unique in the SP. Its resourceID is the AE-ID-Stem, so it shares one namespace with the
//! `<AE>`s registered here: an AE-ID-Stem taken by either is taken for both (4117). It lives
//! under the `<remoteCSE>` of the announcing CSE, which alone acts on it, over its own security
//! association (`access`); `lnk` names the `<AE>` there (`/<CSE-ID>/<AE-ID-Stem>`) or is
//! `INACTIVE` after it deregistered. The announcing side is `resources::ae::announce`.

use super::{ready, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::Resource;
use m2m_core::{AeStem, CseId, EntityId, M2mError, M2mResult, ResponseStatusCode, StemKind};
use serde_json::{json, Map, Value};

/// `lnk` once the announced `<AE>` has deregistered (TS-0004 clause 7.4.5.2.4).
pub const INACTIVE: &str = "INACTIVE";

/// The CSE a `<remoteCSE>` stands for.
fn announcer(remote_cse: &Resource) -> M2mResult<CseId> {
    CseId::parse(remote_cse.str_attr("csi").unwrap_or(""))
}

/// The AE-ID-Stem `lnk` names: `/<the announcing CSE-ID>/<S-stem>`; anything else is 4000.
fn announced_stem(lnk: &str, announcer: &CseId) -> M2mResult<AeStem> {
    let stem = lnk
        .strip_prefix(announcer.sp_relative().as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .map(AeStem::parse)
        .transpose()?
        .filter(|s| s.kind() == StemKind::Sp);
    stem.ok_or_else(|| {
        M2mError::bad_request(
            "an AEAnnc's link names an S-stem AE at the CSE that announces it: /<CSE-ID>/S...",
        )
    })
}

fn prepare_create(
    cse: &Cse,
    parent: &Resource,
    attrs: &mut Map<String, Value>,
    originator: Option<&EntityId>,
) -> M2mResult<Prepared> {
    // Only the IN-CSE keeps S-stems unique: a record anywhere else would only block the AEs
    // it names from being relayed there.
    if cse.id.role != crate::config::Role::IN {
        return Err(M2mError::not_allowed(
            "only the IN-CSE keeps announcements of S-stem AE-IDs",
        ));
    }
    let csi = announcer(parent)?;
    let lnk = attrs.get("lnk").and_then(Value::as_str).unwrap_or("");
    let stem = announced_stem(lnk, &csi)?;
    // From is the announced AE as its CSE relays it, or that CSE (TS-0004 clause 7.4.5.2.1), or
    // the administrator.
    let from_ok = match originator {
        Some(EntityId::SpAe { stem: s, .. }) => *s == stem,
        Some(e) => e.cse_id() == Some(&csi) || *e == cse.id.admin,
        None => false,
    };
    if !from_ok {
        return Err(M2mError::bad_request(
            "an AEAnnc is created by the CSE that announces it, for the AE it names",
        ));
    }
    if attrs
        .get("rn")
        .and_then(Value::as_str)
        .is_some_and(|rn| rn != stem.as_str())
    {
        return Err(M2mError::bad_request(
            "an AEAnnc is named by the AE-ID-Stem it announces",
        ));
    }
    // Registered here, announced by any CSE, or held by the credential that registered it here
    // before (`store::AeIdHolder`): the S-stem is not free in the SP.
    let taken = cse.store.get(stem.as_str())?.is_some()
        || cse.store.read(|r| r.holder_of(stem.as_str()))?.is_some();
    if taken {
        tracing::warn!(target: "audit", ae_id = %stem, announcer = %csi, "AEAnnc refused: the S-stem is registered or held elsewhere in the SP");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorHasAlreadyRegistered,
            "the AE-ID is already registered",
        ));
    }
    attrs.insert("rn".into(), json!(stem.as_str()));
    Ok(Prepared {
        ri: Some(stem.to_string()),
        ..Prepared::default()
    })
}

/// An UPDATE may mark the announced AE deregistered, or registered again at the same CSE.
fn check_update(cse: &Cse, res: &Resource, content: &Map<String, Value>) -> M2mResult<()> {
    let Some(lnk) = content.get("lnk").and_then(Value::as_str) else {
        return Ok(());
    };
    if lnk == INACTIVE {
        return Ok(());
    }
    let parent = crate::resolve::parent_of(cse, res)?;
    let stem = announced_stem(lnk, &announcer(&parent)?)?;
    if stem.as_str() != res.ri() {
        return Err(M2mError::bad_request(
            "an AEAnnc's link names the AE-ID-Stem it was created for",
        ));
    }
    Ok(())
}

/// The type's behaviour: the checks above.
pub struct AeAnnc;

impl super::Behaviour for AeAnnc {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        ready(prepare_create(
            call.cse,
            parent,
            attrs,
            call.peer.originator.as_ref(),
        ))
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        ready(check_update(call.cse, res, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_names_an_s_stem_at_the_announcing_cse() {
        let mn = CseId::parse("/id-mn").unwrap();
        assert_eq!(
            announced_stem("/id-mn/Sphone", &mn).unwrap().as_str(),
            "Sphone"
        );
        for bad in [
            "/id-mn/Cphone",
            "/id-mn2/Sphone",
            "/id-mnx/Sphone",
            "/id-mn/",
            "/id-mn",
            "id-mn/Sphone",
            "//m2m.example.com/id-mn/Sphone",
            "/id-mn/Sphone/x",
            "/id-mn/S",
            INACTIVE,
        ] {
            assert!(announced_stem(bad, &mn).is_err(), "{bad}");
        }
    }
}
