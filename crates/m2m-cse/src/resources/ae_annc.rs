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
use crate::resolve::Target;
use crate::store::AeIdHolder;
use crate::store::Resource;
use m2m_core::{
    AeStem, CseId, EntityId, M2mError, M2mResult, Request, ResourceType, ResponseStatusCode,
    StemKind,
};
use serde_json::{json, Map, Value};

/// `lnk` once the announced `<AE>` has deregistered (TS-0004 clause 7.4.5.2.4).
pub const INACTIVE: &str = crate::impersonation::ANNOUNCED_INACTIVE;

/// The CSE a `<remoteCSE>` stands for.
fn announcer(remote_cse: &Resource) -> M2mResult<CseId> {
    CseId::parse(remote_cse.str_attr("csi").unwrap_or(""))
}

/// The CSE and S-stem `lnk` names (`/<CSE-ID>/<S-stem>`), the CSE being the one `registree`
/// stands for or one its descendantCSEs list as kept here (an ASN-CSE registered with an MN-CSE
/// announces through it); anything else is 4000.
fn announced(lnk: &str, registree: &Resource) -> M2mResult<(CseId, AeStem)> {
    let (csi, stem) = link(lnk)
        .filter(|(csi, stem)| {
            stem.kind() == StemKind::Sp
                && (announcer(registree).is_ok_and(|r| r == *csi)
                    || crate::descendants::lists(registree, csi))
        })
        .ok_or_else(|| {
            M2mError::bad_request(
                "an AEAnnc's link names an S-stem AE at the CSE that announces it: /<CSE-ID>/S...",
            )
        })?;
    Ok((csi, stem))
}

/// The CSE and AE-ID-Stem a link names: the SP-relative address `/<CSE-ID>/<stem>`.
fn link(lnk: &str) -> Option<(CseId, AeStem)> {
    let address = m2m_core::Address::parse(lnk).ok()?;
    let m2m_core::Scope::SpRelative(csi) = address.scope.clone() else {
        return None;
    };
    let mut segments = address.segments();
    let stem = AeStem::parse(segments.next()?).ok()?;
    segments.next().is_none().then_some((csi, stem))
}

/// The `<remoteCSE>` of the CSE registered here that `peer` is bound to (not the registrar's).
fn registree_of(cse: &Cse, peer: &crate::association::Peer) -> Option<Resource> {
    let id = peer.bound_entity().and_then(EntityId::cse_id)?;
    if cse.id.registrar.as_ref() == Some(id) {
        return None;
    }
    match cse.store.get(id.bare()) {
        Ok(Some(csr)) if csr.ty == ResourceType::RemoteCse => Some(csr),
        _ => None,
    }
}

/// The `<AEAnnc>` a request carries: a CREATE of one, or an UPDATE with one as its content.
fn announcement(req: &Request) -> Option<&Value> {
    let annc = req.pc.as_ref()?.get("m2m:aeA")?;
    match req.op {
        m2m_core::Operation::Create if req.ty == Some(ResourceType::AeAnnc) => Some(annc),
        m2m_core::Operation::Update => Some(annc),
        _ => None,
    }
}

/// Before this CSE relays an announcement a registree sent (a CREATE of an `<AEAnnc>`, or an
/// UPDATE carrying one) towards the IN-CSE: its link names an S-stem AE in that registree's own
/// tree, the AE its From names. A registree would otherwise have the IN-CSE record, in another
/// CSE's name, a stem it does not hold (4106).
pub(crate) fn may_relay(
    cse: &Cse,
    req: &Request,
    peer: &crate::association::Peer,
) -> M2mResult<()> {
    let (Some(annc), Some(registree)) = (announcement(req), registree_of(cse, peer)) else {
        return Ok(());
    };
    let lnk = annc
        .get("lnk")
        .and_then(Value::as_str)
        .filter(|l| *l != INACTIVE);
    let Some(lnk) = lnk else {
        if req.op == m2m_core::Operation::Create {
            return Err(M2mError::bad_request(
                "an AEAnnc's link names an S-stem AE at the CSE that announces it: /<CSE-ID>/S...",
            ));
        }
        // Marking one deregistered: the impersonation check let through only the registree
        // that holds the stem here.
        return Ok(());
    };
    let from_stem = req
        .from
        .as_deref()
        .and_then(|f| EntityId::parse(f, &cse.id.home).ok())
        .and_then(|e| e.stem().cloned());
    let ours = announced(lnk, &registree).is_ok_and(|(_, stem)| from_stem.as_ref() == Some(&stem));
    if !ours {
        tracing::warn!(target: "audit", registree = %registree.ri(), lnk = %lnk, "announcement not relayed: it names an AE outside the registree's tree, or another than its From");
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorNotAuthenticated,
            "a CSE relays announcements only of S-stem AEs registered in its own tree",
        ));
    }
    Ok(())
}

/// Where the IN-CSE keeps an announcement sent to its CSEBase (by a CSE that is not registered
/// with it: an ASN-CSE below an MN-CSE, which cannot name a `<remoteCSE>` of its own there):
/// under the `<remoteCSE>` of the registree that is, or whose descendantCSEs list, the CSE `lnk`
/// names. Any other target stays as it is.
/// Only a registree's announcement is placed: to anyone else the CSEBase stays the target, and
/// the access decision refuses it as it refuses any `<AEAnnc>` there (nothing tells whether a
/// CSE is registered or listed).
pub(crate) fn placed(
    cse: &Cse,
    req: &Request,
    target: Target,
    peer: &crate::association::Peer,
) -> M2mResult<Target> {
    let to_the_base = matches!(&target, Target::Resource(r) if r.ty == ResourceType::CseBase);
    if req.op != m2m_core::Operation::Create
        || req.ty != Some(ResourceType::AeAnnc)
        || !to_the_base
        || cse.id.role != crate::config::Role::IN
    {
        return Ok(target);
    }
    let lnk = req
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:aeA"))
        .and_then(|a| a.get("lnk"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let csi = link(lnk).map(|(c, _)| c).ok_or_else(|| {
        M2mError::bad_request("an AEAnnc's link names an S-stem AE: /<CSE-ID>/S...")
    })?;
    // Under the peer's own record, when it is or lists the announcing CSE; otherwise the
    // CSEBase stays the target and the access decision refuses it (nothing tells whether
    // another registree accounts for that CSE).
    let Some(registree) = registree_of(cse, peer) else {
        return Ok(target);
    };
    let accounts = announcer(&registree).is_ok_and(|r| r == csi)
        || crate::descendants::lists(&registree, &csi);
    Ok(if accounts {
        Target::Resource(registree)
    } else {
        target
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
    let lnk = attrs.get("lnk").and_then(Value::as_str).unwrap_or("");
    let (csi, stem) = announced(lnk, parent)?;
    // From is the announced AE as its CSE relays it, or that CSE (TS-0004 clause 7.4.5.2.1), or
    // the registree it is registered below, or the administrator.
    let home = &cse.id.home;
    let as_cse = |c: CseId| EntityId::cse(home.sp.clone(), c);
    let registree = announcer(parent).ok().map(as_cse);
    let announcing_cse = as_cse(csi.clone());
    let from_ok = originator.is_some_and(|e| {
        *e == announcing_cse
            || Some(e) == registree.as_ref()
            || *e == cse.id.admin
            || e.local_stem(home) == Some(&stem)
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
    // The rules first: whether a stem is taken is told only to an announcement they admit.
    let api = attrs.get("api").and_then(Value::as_str).ok_or_else(|| {
        M2mError::bad_request("an AEAnnc carries the App-ID of the AE it announces")
    })?;
    admitted_by_rules(cse, &stem, api, attrs.get("lbl"), &csi)?;
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
    // A stem already recorded is answered 4117 above (the MN then updates its record): only a
    // new record counts against the quota, here and again inside the write (`insert`).
    let held = cse
        .store
        .read(|r| r.count_children(parent.ri(), ResourceType::AeAnnc))?;
    within_quota(cse, held, parent, stem.as_str())?;
    attrs.insert("rn".into(), json!(stem.as_str()));
    Ok(Prepared {
        ri: Some(stem.to_string()),
        ..Prepared::default()
    })
}

/// A registree fills the IN-CSE's store with announcements only up to
/// `limits.max_announcements_per_cse` (INACTIVE records included: they keep their stems): 5207
/// when the registree `under` (a `<remoteCSE>`) holds `held` of them already.
fn within_quota(cse: &Cse, held: u64, under: &Resource, stem: &str) -> M2mResult<()> {
    let limit = cse.cfg.limits.max_announcements_per_cse;
    if held >= limit {
        tracing::warn!(target: "audit", registree = %under.ri(), ae_id = %stem, held, limit, "AEAnnc refused: the registree's announcements reached the limit");
        return Err(M2mError::new(
            ResponseStatusCode::NotAcceptable,
            "the IN-CSE records no more S-stem AE-IDs below this CSE",
        ));
    }
    Ok(())
}

/// The Credential-ID an announcement says the AE registered with (TS-0001 clause 10.2.2.2 step
/// 005a: `Credential-ID:<id>` among its labels; none, or empty, without a security
/// association). Two such labels are 4000: the IN-CSE would have to choose which one to judge.
fn announced_credential(lbl: Option<&Value>) -> M2mResult<Option<&str>> {
    const PREFIX: &str = "Credential-ID:";
    let labels = lbl.and_then(Value::as_array).into_iter().flatten();
    let misspelt = labels.clone().filter_map(Value::as_str).any(|l| {
        l.get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX) && p != PREFIX)
    });
    if misspelt {
        return Err(M2mError::bad_request(
            "an AEAnnc names its Credential-ID as 'Credential-ID:<id>'",
        ));
    }
    let mut found = labels
        .filter_map(Value::as_str)
        .filter_map(|l| l.strip_prefix(PREFIX));
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
            let (announcing, stem) = announced(lnk, &parent)?;
            // The record stays with the CSE that announced it (its creator, [`own_creator`]),
            // registered or not: S-stem AEs do not move registrars (docs/SECURITY.md), and
            // another CSE of the registree's tree re-activating it would take the AE over.
            // Records made before the creator was kept: the CSE of an active link.
            let recorded = res
                .creator
                .as_deref()
                .and_then(|c| EntityId::parse(c, &cse.id.home).ok())
                .and_then(|e| e.cse_id().cloned())
                .or_else(|| {
                    res.str_attr("lnk")
                        .filter(|l| *l != INACTIVE)
                        .and_then(|l| link(l).map(|(c, _)| c))
                });
            if recorded.is_some_and(|c| c != announcing) {
                return Err(M2mError::new(
                    ResponseStatusCode::OriginatorHasAlreadyRegistered,
                    "the AE-ID is already registered",
                ));
            }
            if stem.as_str() != res.ri() {
                return Err(M2mError::bad_request(
                    "an AEAnnc's link names the AE-ID-Stem it was created for",
                ));
            }
        }
    }
    if content.get("api").is_some_and(Value::is_null) {
        return Err(M2mError::bad_request(
            "an AEAnnc keeps the App-ID of the AE it announces",
        ));
    }
    // A new Credential-ID or App-ID, or the AE registered again (its link active again): judged
    // again, on what the record would hold after the UPDATE (step 006b).
    let active_again = content
        .get("lnk")
        .and_then(Value::as_str)
        .is_some_and(|l| l != INACTIVE);
    if active_again || content.contains_key("lbl") || content.contains_key("api") {
        let pick = |k: &str| match content.get(k) {
            Some(v) => Some(v).filter(|v| !v.is_null()),
            None => res.attrs.get(k),
        };
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

    /// The quota counted again inside the write: announcements racing each other past the
    /// count in `prepare_create` do not pass it together.
    fn insert(
        &self,
        cse: &Cse,
        w: &crate::store::Writer<'_>,
        parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        if parent.ty == ResourceType::RemoteCse {
            let held = w.count_children(parent.ri(), ResourceType::AeAnnc)?;
            within_quota(cse, held, parent, new.ri())?;
        }
        w.insert(new)
    }

    /// A record (or an intermediate CSE's copy) of an AE announced from below its registree
    /// went: the registree keeps a copy of its own, which must go too, or it would go on
    /// speaking for the stem there after the stem is free in the SP.
    fn deleted(&self, cse: &std::sync::Arc<Cse>, res: &Resource) {
        remove_copy_below(cse, res);
    }

    /// The CSE that announced the AE (the `/<CSE-ID>` of `lnk`), whoever relayed the request:
    /// the record keeps it when `lnk` reads INACTIVE.
    fn own_creator<'a>(&self, attrs: &'a Map<String, Value>) -> Option<&'a str> {
        let lnk = attrs.get("lnk").and_then(Value::as_str)?;
        let end = lnk.get(1..)?.find('/')? + 1;
        Some(&lnk[..end])
    }
}

/// How many registrees are told at once that a record went.
static COPY_REMOVALS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// After the record `res` went: if the CSE that announced it is not the registree it was kept
/// under (it was relayed from further down), that registree is told to remove its copy, as this
/// CSE, through routing (a registree is reached only over TLS proving it). Its own copy's
/// deletion tells the next one down the same way. A registree that cannot be reached keeps its
/// copy until its `<remoteCSE>` here goes (audited).
fn remove_copy_below(cse: &std::sync::Arc<Cse>, res: &Resource) {
    let Some(announcer) = crate::impersonation::announcer_of_record(cse, res) else {
        return;
    };
    let registree = match cse.store.get(res.pi()) {
        Ok(Some(csr)) if csr.ty == ResourceType::RemoteCse => {
            csr.str_attr("csi").and_then(|c| CseId::parse(c).ok())
        }
        _ => None,
    };
    let Some(registree) = registree.filter(|r| *r != announcer) else {
        return;
    };
    let cse = std::sync::Arc::clone(cse);
    let (to, stem) = (
        format!("{}/{}", registree.sp_relative(), res.ri()),
        res.ri().to_owned(),
    );
    tokio::spawn(async move {
        // A few at a time: many records expiring at once, or a registree that does not answer,
        // do not open a connection each.
        let Ok(_turn) = COPY_REMOVALS.acquire().await else {
            return;
        };
        // Announced again meanwhile: the registree's copy is the new record's.
        if matches!(cse.store.get(&stem), Ok(Some(r)) if r.ty == ResourceType::AeAnnc) {
            return;
        }
        let req = Request::new(
            m2m_core::Operation::Delete,
            to.clone(),
            Some(cse.id.cse_id.sp_relative()),
            announcement_rqi(),
        );
        let resp = cse.handle(req, crate::association::Peer::internal()).await;
        match resp.rsc {
            ResponseStatusCode::Deleted | ResponseStatusCode::NotFound => {
                tracing::info!(target: "audit", copy = %to, rsc = resp.rsc.code(), "announcement copy below removed");
            }
            rsc => {
                tracing::warn!(target: "audit", copy = %to, rsc = rsc.code(), "announcement copy below not removed: the registree keeps speaking for the stem there until its <remoteCSE> goes");
            }
        }
    });
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
    let lbl = json!([format!(
        "Credential-ID:{}",
        credential.map(ToString::to_string).unwrap_or_default()
    )]);
    send_announcement(cse, &cse.id.cse_id, stem, api, Some(lbl)).await
}

/// Sends the announcement of the S-stem AE `stem` registered at `announcing` (this CSE, or a
/// CSE below it whose announcement this CSE keeps a copy of) to the IN-CSE: CREATE, or UPDATE
/// when it is recorded already. `lbl` `None`: the Credential-ID is not known here (an UPDATE
/// leaves the IN-CSE's as it is; a CREATE says none).
async fn send_announcement(
    cse: &Cse,
    announcing: &CseId,
    stem: &AeStem,
    api: &str,
    lbl: Option<Value>,
) -> M2mResult<()> {
    let Some(registrar) = cse.cfg.registrar.as_ref() else {
        return Ok(());
    };
    let me = &cse.id.cse_id;
    let lnk = format!("{}/{stem}", announcing.sp_relative());
    let in_cse = cse.id.in_cse.sp_relative();
    let from = Some(lnk.clone());
    // Under this CSE's <remoteCSE> at the IN-CSE; a CSE registered further down has none there
    // and sends it to the IN-CSE's CSEBase, which keeps it under its registree's (`placed`).
    let parent = if announcing == me && cse.id.registrar.as_ref() == Some(&cse.id.in_cse) {
        me.bare()
    } else {
        cse.id.in_cse.bare()
    };
    let mut create = Request::new(
        m2m_core::Operation::Create,
        format!("{in_cse}/{parent}"),
        from.clone(),
        announcement_rqi(),
    );
    create.ty = Some(ResourceType::AeAnnc);
    let none = json!(["Credential-ID:"]);
    create.pc =
        Some(json!({"m2m:aeA": {"lnk": lnk, "api": api, "lbl": lbl.as_ref().unwrap_or(&none)}}));
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
            let mut record = json!({"lnk": lnk, "api": api});
            if let Some(lbl) = lbl {
                record["lbl"] = lbl;
            }
            update.pc = Some(json!({ "m2m:aeA": record }));
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
        ResponseStatusCode::NotAcceptable => M2mError::new(
            ResponseStatusCode::NotAcceptable,
            "the IN-CSE records no more S-stem AE-IDs below this CSE: register with a C-stem AE-ID",
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

/// On a CSE between an announcing CSE and the IN-CSE (an MN-CSE with an ASN-CSE registered):
/// once the IN-CSE has recorded an S-stem that a registree announced through this CSE (its
/// CREATE at the IN-CSE's CSEBase or its UPDATE of the record, answered with the record), this
/// CSE keeps a copy of that record, as the answer shows it, under that registree's
/// `<remoteCSE>`. The registree, and no other CSE, then relays for that AE here
/// (`impersonation`), and no AE registers the stem here. Only a link into the registree's own
/// tree is copied; a record marked INACTIVE marks the copy so. A failure is logged (the AE's
/// requests through this CSE are refused until its CSE announces it again).
pub(crate) async fn relayed(
    cse: &Cse,
    req: &Request,
    peer: &crate::association::Peer,
    resp: &m2m_core::Response,
) {
    let recorded = match req.op {
        m2m_core::Operation::Create => resp.rsc == ResponseStatusCode::Created,
        m2m_core::Operation::Update => resp.rsc == ResponseStatusCode::Updated,
        _ => false,
    };
    let (Some(asked), Some(csr)) = (
        announcement(req),
        registree_of(cse, peer).filter(|_| recorded),
    ) else {
        return;
    };
    let Some(shown) = resp.pc.as_ref().and_then(|pc| pc.get("m2m:aeA")) else {
        return;
    };
    let Some(stem) = shown
        .get("ri")
        .and_then(Value::as_str)
        .and_then(|s| AeStem::parse(s).ok())
    else {
        return;
    };
    let Some(lnk) = shown.get("lnk").and_then(Value::as_str) else {
        return;
    };
    // The IN-CSE's answer to the announcement of that very AE: From the AE, To the IN-CSE's
    // CSEBase (a CREATE) or the record (an UPDATE), the link asked for and shown.
    let from_ok = req
        .from
        .as_deref()
        .and_then(|f| EntityId::parse(f, &cse.id.home).ok())
        .is_some_and(|e| e.stem() == Some(&stem));
    let to_ok = match req.op {
        m2m_core::Operation::Create => at_the_in(cse, &req.to, None),
        _ => at_the_in(cse, &req.to, Some(&stem)),
    };
    let same_link = asked.get("lnk").and_then(Value::as_str) == Some(lnk);
    if !(from_ok && to_ok && same_link) {
        return;
    }
    let keep = if lnk == INACTIVE {
        None
    } else {
        match announced(lnk, &csr) {
            Ok((_, s)) if s == stem => {}
            _ => return,
        }
        let mut attrs = Map::new();
        for k in ["lnk", "api", "lbl"] {
            if let Some(v) = shown.get(k).filter(|v| !v.is_null()) {
                attrs.insert(k.to_owned(), v.clone());
            }
        }
        Some(crate::dispatcher::assemble(
            cse,
            &csr,
            ResourceType::AeAnnc,
            attrs,
            Some(stem.to_string()),
            None,
        ))
    };
    let (under, ri, link) = (csr.ri().to_owned(), stem.to_string(), lnk.to_owned());
    let kept = cse
        .store
        .write(move |w| match (w.get(&ri)?, keep) {
            (None, Some(copy)) => w.insert(copy).map(|_| ()),
            // Kept already under that registree (a re-registration, a deregistration): what
            // the IN-CSE now holds.
            (Some(mut kept), keep) if kept.ty == ResourceType::AeAnnc && kept.pi() == under => {
                match keep {
                    Some(copy) => {
                        for k in ["lnk", "api", "lbl"] {
                            if let Some(v) = copy.attrs.get(k) {
                                kept.attrs.insert(k.to_owned(), v.clone());
                            }
                        }
                    }
                    None => {
                        kept.attrs.insert("lnk".into(), json!(link));
                    }
                }
                w.update(&kept)
            }
            // Nothing kept to mark, or the stem is another's here: as it is.
            _ => Ok(()),
        })
        .await;
    if let Err(e) = kept {
        tracing::warn!(target: "audit", ae_id = %stem, registree = %csr.ri(), dbg = %e.dbg, "S-stem announced below not kept here: the AE's requests through this CSE are refused");
    }
}

/// Whether `to` addresses, at the IN-CSE, its CSEBase (`record` None) or the resource named by
/// `record`, in any form (SP-relative, absolute, the CSEBase by its resourceID or `-`).
fn at_the_in(cse: &Cse, to: &str, record: Option<&AeStem>) -> bool {
    let Ok(to) = m2m_core::Address::parse(to) else {
        return false;
    };
    let in_cse = &cse.id.in_cse;
    let at_the_in = match &to.scope {
        m2m_core::Scope::CseRelative => false,
        m2m_core::Scope::SpRelative(c) => c == in_cse,
        m2m_core::Scope::Absolute(sp, c) => *sp == cse.id.home.sp && c == in_cse,
    };
    let segments: Vec<&str> = to.segments().collect();
    at_the_in
        && match record {
            None => matches!(segments.as_slice(), [] | ["-"]) || segments == [in_cse.bare()],
            Some(stem) => segments == [stem.as_str()],
        }
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
/// announced again (the IN-CSE's records go with this CSE's `<remoteCSE>` there), and so is every
/// announcement of a CSE below that this CSE keeps a copy of ([`relayed`]). A refusal is
/// logged: the AE stays registered, and the IN-CSE takes no relayed request for it.
pub(crate) async fn reannounce_all(cse: &Cse) {
    let read = cse.store.read(|r| {
        let mut own = Vec::new();
        for ae in r.all_of_type(ResourceType::Ae)? {
            let Some(stem) = sp_stem(&ae.attrs) else {
                continue;
            };
            let holding = r.holding(stem.as_str())?;
            own.push((stem, ae.str_attr("api").unwrap_or("").to_owned(), holding));
        }
        Ok((own, r.all_of_type(ResourceType::AeAnnc)?))
    });
    let (own, copies) = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(dbg = %e.dbg, "S-stem AEs not announced again: the store cannot be read");
            return;
        }
    };
    let me = &cse.id.cse_id;
    for (stem, api, holding) in own {
        // The Credential-ID of its association; not known for an AE-ID held by itself since
        // before schema version 5 (the IN-CSE keeps the one it has).
        let lbl = match holding {
            Some((_, Some(c))) => Some(json!([format!("Credential-ID:{c}")])),
            Some((AeIdHolder::Itself, None)) => None,
            _ => Some(json!(["Credential-ID:"])),
        };
        if let Err(e) = send_announcement(cse, me, &stem, &api, lbl).await {
            tracing::warn!(target: "audit", ae_id = %stem, rsc = e.rsc.code(), "S-stem AE not announced again to the IN-CSE");
        }
    }
    for copy in copies {
        let Some(lnk) = copy.str_attr("lnk").filter(|l| *l != INACTIVE) else {
            continue;
        };
        let Ok(registree) = crate::resolve::parent_of(cse, &copy) else {
            continue;
        };
        let Ok((announcing, stem)) = announced(lnk, &registree) else {
            continue;
        };
        let api = copy.str_attr("api").unwrap_or("");
        let lbl = copy.attrs.get("lbl").cloned();
        if let Err(e) = send_announcement(cse, &announcing, &stem, api, lbl).await {
            tracing::warn!(target: "audit", ae_id = %stem, rsc = e.rsc.code(), "S-stem AE below not announced again to the IN-CSE");
        }
    }
}

fn announcement_rqi() -> String {
    format!("annc-{}", crate::context::random_suffix(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `<remoteCSE>` of /id-mn, which lists /id-asn below it.
    fn registree() -> Resource {
        let attrs = json!({"ri": "id-mn", "rn": "id-mn", "pi": "id-in", "ty": 16,
            "csi": "/id-mn", "dcse": ["/id-asn"]});
        Resource {
            seq: 0,
            ty: ResourceType::RemoteCse,
            srn: "cse-in/id-mn".into(),
            attrs: attrs.as_object().cloned().unwrap(),
            creator: None,
            specialization: None,
        }
    }

    #[test]
    fn the_link_names_an_s_stem_at_the_announcing_cse_or_below_it() {
        let mn = registree();
        for (lnk, csi) in [("/id-mn/Sphone", "/id-mn"), ("/id-asn/Smeter", "/id-asn")] {
            let (c, stem) = announced(lnk, &mn).unwrap();
            assert_eq!(
                (c.sp_relative().as_str(), stem.as_str()),
                (csi, &lnk[csi.len() + 1..])
            );
        }
        for bad in [
            "/id-mn/Cphone",
            "/id-mn2/Sphone",
            "/id-mnx/Sphone",
            "/id-asn/Cmeter",
            "/id-asn2/Smeter",
            "/id-mn/",
            "/id-mn",
            "id-mn/Sphone",
            "//m2m.example.com/id-mn/Sphone",
            "/id-mn/Sphone/x",
            "/id-mn/S",
            INACTIVE,
        ] {
            assert!(announced(bad, &mn).is_err(), "{bad}");
        }
    }
}
