//! `<AEAnnc>` on the IN-CSE (TS-0004 clause 7.4.5.2.1, TS-0001 clause 10.2.2.2 steps 005b to
//! 008b): the record of an S-stem AE-ID registered at another CSE of the SP, which keeps S-stems
//! unique in the SP. Its resourceID is the AE-ID-Stem, so it shares one namespace with the
//! `<AE>`s registered here: an AE-ID-Stem taken by either is taken for both (4117). It lives
//! under the `<remoteCSE>` of the announcing CSE, which alone acts on it, over its own security
//! association (`access`); `lnk` names the `<AE>` there (`/<CSE-ID>/<AE-ID-Stem>`) or is
//! `INACTIVE` after it deregistered. The announcing side ([`announce`], [`deannounce`],
//! [`reannounce_all`]) is here too; `resources::ae` calls it when an S-stem AE registers or goes.

use super::{ready, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::AeIdHolder;
use crate::store::Resource;
use m2m_core::{
    AeStem, CseId, EntityId, M2mError, M2mResult, Request, ResourceType, ResponseStatusCode,
    StemKind,
};
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
    let home = &cse.id.home;
    let announcing_cse = EntityId::cse(home.sp.clone(), csi.clone());
    let from_ok = originator.is_some_and(|e| {
        *e == announcing_cse || *e == cse.id.admin || e.local_stem(home) == Some(&stem)
    });
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
    let api = attrs.get("api").and_then(Value::as_str).ok_or_else(|| {
        M2mError::bad_request("an AEAnnc carries the App-ID of the AE it announces")
    })?;
    admitted_by_rules(cse, &stem, api, attrs.get("lbl"), &csi)?;
    attrs.insert("rn".into(), json!(stem.as_str()));
    Ok(Prepared {
        ri: Some(stem.to_string()),
        ..Prepared::default()
    })
}

/// The Credential-ID an announcement says the AE registered with (TS-0001 clause 10.2.2.2 step
/// 005a: `Credential-ID:<id>` among its labels; none, or empty, without a security
/// association). Two such labels are 4000: the IN-CSE would have to choose which one to judge.
fn announced_credential(lbl: Option<&Value>) -> M2mResult<Option<&str>> {
    let mut found = lbl
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|l| l.strip_prefix("Credential-ID:"));
    let credential = found.next();
    if found.next().is_some() {
        return Err(M2mError::bad_request(
            "an AEAnnc names one Credential-ID in its labels",
        ));
    }
    Ok(credential.filter(|c| !c.is_empty()))
}

/// TS-0001 clause 10.2.2.2 steps 006a, 006b: the IN-CSE records an S-stem only if its
/// registration rules admit the announced AE (App-ID, AE-ID-Stem, the Credential-ID it registered
/// with) as they would admit it registering here; 4126 otherwise, which the announcing CSE passes
/// on to the AE. The rules are this CSE's: the service subscription profile's choice of rules
/// per node is not modelled (see `resources::ae`).
fn admitted_by_rules(
    cse: &Cse,
    stem: &AeStem,
    api: &str,
    lbl: Option<&Value>,
    announcer: &CseId,
) -> M2mResult<()> {
    let credential = announced_credential(lbl)?;
    super::ae::check_rules(cse, api, stem.as_str(), credential).inspect_err(|_| {
        tracing::warn!(target: "audit", ae_id = %stem, announcer = %announcer, "AEAnnc refused: no registration rule admits the announced AE");
    })
}

/// An UPDATE may mark the announced AE deregistered, or registered again at the same CSE; a new
/// Credential-ID or App-ID is judged by the registration rules again (step 006b).
fn check_update(cse: &Cse, res: &Resource, content: &Map<String, Value>) -> M2mResult<()> {
    let parent = crate::resolve::parent_of(cse, res)?;
    let csi = announcer(&parent)?;
    if let Some(lnk) = content.get("lnk").and_then(Value::as_str) {
        if lnk != INACTIVE {
            let stem = announced_stem(lnk, &csi)?;
            if stem.as_str() != res.ri() {
                return Err(M2mError::bad_request(
                    "an AEAnnc's link names the AE-ID-Stem it was created for",
                ));
            }
        }
    }
    if content.contains_key("lbl") || content.contains_key("api") {
        let pick = |k: &str| content.get(k).or_else(|| res.attrs.get(k));
        let api = pick("api").and_then(Value::as_str).unwrap_or("");
        admitted_by_rules(cse, &AeStem::parse(res.ri())?, api, pick("lbl"), &csi)?;
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

/// The S-stem of an `<AE>`'s attributes (`aei`), if it has one.
pub(crate) fn sp_stem(ae: &Map<String, Value>) -> Option<AeStem> {
    ae.get("aei")
        .and_then(Value::as_str)
        .and_then(|a| AeStem::parse(a).ok())
        .filter(|s| s.kind() == StemKind::Sp)
}

// ---------------------------------------------------------------------------------------------
// The announcing side: an MN-CSE registering S-stem AEs

/// The IN-CSE keeps S-stem AE-IDs unique in the SP (TS-0004 clause 7.4.5.2.1, Recv-6.5;
/// TS-0001 clause 10.2.2.2 case b): before an MN-CSE or ASN-CSE registers an AE with an S-stem,
/// it has the IN-CSE record it as an `<AEAnnc>` under this CSE's `<remoteCSE>` there (`lbl`
/// carries the Credential-ID the AE registered with). The IN-CSE refuses a stem registered there
/// or announced by another CSE (4117 here too); one this CSE announced before (a
/// re-registration) is updated instead. Nothing to do on the IN-CSE itself, whose `<AE>`s and
/// `<AEAnnc>`s share one namespace. The request goes through the registrar, like every request
/// towards the IN-CSE, so only a CSE registered with the IN-CSE can announce (4004 otherwise).
pub(crate) async fn announce(
    cse: &Cse,
    stem: &AeStem,
    api: &str,
    credential: Option<&m2m_security::credentials::CredentialId>,
) -> M2mResult<()> {
    let Some(registrar) = cse.cfg.registrar.as_ref() else {
        return Ok(());
    };
    let me = &cse.id.cse_id;
    let lnk = format!("{}/{stem}", me.sp_relative());
    let lbl = format!(
        "Credential-ID:{}",
        credential.map(ToString::to_string).unwrap_or_default()
    );
    let in_cse = cse.id.in_cse.sp_relative();
    let from = Some(lnk.clone());
    let mut create = Request::new(
        m2m_core::Operation::Create,
        format!("{in_cse}/{}", me.bare()),
        from.clone(),
        announcement_rqi(),
    );
    create.ty = Some(ResourceType::AeAnnc);
    create.pc = Some(json!({"m2m:aeA": {"lnk": lnk, "api": api, "lbl": [lbl]}}));
    let send = |req: Request| async move {
        cse.registrar_client
            .send(&registrar.url, &req)
            .await
            .map_err(|e| {
                tracing::warn!(target: "audit", ae_id = %stem, dbg = %e.dbg, "S-stem AE registration refused: the IN-CSE cannot be reached to record it");
                M2mError::new(
                    ResponseStatusCode::TargetNotReachable,
                    "the IN-CSE, which keeps S-stem AE-IDs unique, cannot be reached: register with a C-stem AE-ID",
                )
            })
    };
    let created = send(create).await?;
    let answer = match created.rsc {
        ResponseStatusCode::Created => return Ok(()),
        // Announced before, by this CSE if it is a re-registration: the IN-CSE lets only the
        // CSE that announced it update it.
        ResponseStatusCode::OriginatorHasAlreadyRegistered | ResponseStatusCode::Conflict => {
            let mut update = Request::new(
                m2m_core::Operation::Update,
                format!("{in_cse}/{stem}"),
                from,
                announcement_rqi(),
            );
            update.pc = Some(json!({"m2m:aeA": {"lnk": lnk, "lbl": [lbl]}}));
            let updated = send(update).await?;
            if updated.rsc == ResponseStatusCode::Updated {
                return Ok(());
            }
            updated.rsc
        }
        other => other,
    };
    tracing::warn!(target: "audit", ae_id = %stem, rsc = answer.code(), "S-stem AE registration refused: the IN-CSE did not record it");
    Err(match answer {
        ResponseStatusCode::AppRuleValidationFailed => M2mError::new(
            ResponseStatusCode::AppRuleValidationFailed,
            "no registration rule of the IN-CSE admits this App-ID and AE-ID with this credential",
        ),
        ResponseStatusCode::OriginatorHasAlreadyRegistered
        | ResponseStatusCode::Conflict
        | ResponseStatusCode::OriginatorHasNoPrivilege
        | ResponseStatusCode::OriginatorNotAuthenticated => M2mError::new(
            ResponseStatusCode::OriginatorHasAlreadyRegistered,
            "the AE-ID is already registered",
        ),
        _ => M2mError::new(
            ResponseStatusCode::TargetNotReachable,
            "the IN-CSE, which keeps S-stem AE-IDs unique, did not record this one: register with a C-stem AE-ID",
        ),
    })
}

/// After an S-stem AE deregistered here: its `<AEAnnc>` at the IN-CSE says so (`lnk` INACTIVE,
/// TS-0004 clause 7.4.5.2.4) and stays, so that the stem remains this CSE's for a
/// re-registration. Best effort, in the background: a failure is logged.
pub(crate) fn deannounce(cse: &std::sync::Arc<Cse>, stem: AeStem) {
    if cse.cfg.registrar.is_none() {
        return;
    }
    let cse = std::sync::Arc::clone(cse);
    tokio::spawn(async move { mark_inactive(&cse, &stem).await });
}

async fn mark_inactive(cse: &Cse, stem: &AeStem) {
    let Some(registrar) = cse.cfg.registrar.as_ref() else {
        return;
    };
    // Registered again meanwhile: its announcement stands.
    if !matches!(cse.store.get(stem.as_str()), Ok(None)) {
        return;
    }
    let mut update = Request::new(
        m2m_core::Operation::Update,
        format!("{}/{stem}", cse.id.in_cse.sp_relative()),
        Some(format!("{}/{stem}", cse.id.cse_id.sp_relative())),
        announcement_rqi(),
    );
    update.pc = Some(json!({"m2m:aeA": {"lnk": INACTIVE}}));
    match cse.registrar_client.send(&registrar.url, &update).await {
        Ok(r) if r.rsc == ResponseStatusCode::Updated => {}
        Ok(r) => {
            tracing::warn!(ae_id = %stem, rsc = r.rsc.code(), "the IN-CSE did not mark the S-stem AE deregistered")
        }
        Err(e) => {
            tracing::warn!(ae_id = %stem, dbg = %e.dbg, "the IN-CSE could not be told the S-stem AE deregistered")
        }
    }
}

/// After this CSE (re)registered with its registrar: every S-stem AE registered here is
/// announced again (the IN-CSE's records go with this CSE's `<remoteCSE>` there). A refusal
/// is logged: the AE stays registered here, and the IN-CSE takes no relayed request for it.
pub(crate) async fn reannounce_all(cse: &Cse) {
    let aes = match cse.store.read(|r| r.all_of_type(ResourceType::Ae)) {
        Ok(aes) => aes,
        Err(e) => {
            tracing::warn!(dbg = %e.dbg, "S-stem AEs not announced again: the store cannot be read");
            return;
        }
    };
    for ae in aes {
        let Some(stem) = sp_stem(&ae.attrs) else {
            continue;
        };
        let credential = match cse.store.read(|r| r.holder_of(stem.as_str())) {
            Ok(Some(AeIdHolder::Credential(c))) => Some(c),
            _ => None,
        };
        let api = ae.str_attr("api").unwrap_or("");
        if let Err(e) = announce(cse, &stem, api, credential.as_ref()).await {
            tracing::warn!(target: "audit", ae_id = %stem, rsc = e.rsc.code(), "S-stem AE not announced again to the IN-CSE");
        }
    }
}

fn announcement_rqi() -> String {
    format!("annc-{}", crate::context::random_suffix(10))
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
