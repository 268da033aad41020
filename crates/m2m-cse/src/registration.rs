//! CSE registration (TS-0001 clause 10.2.2.4): an MN-CSE creates its `<remoteCSE>` on the registrar
//! IN-CSE and a `<remoteCSE>` for the registrar on itself, and keeps its descendantCSEs up to date
//! there (`crate::descendants`).

use crate::cse::Cse;
use crate::store::Resource;
use m2m_core::{
    CseId, M2mError, M2mResult, Operation, Request, ResourceType, ResponseStatusCode as Rsc,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Registers with the configured registrar, retrying with back-off until it succeeds.
pub async fn register_with_registrar(cse: Arc<Cse>) {
    let Some(reg) = cse.cfg.registrar.clone() else {
        return;
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match register_once(&cse).await {
            Ok(()) => {
                tracing::info!(registrar = %reg.cse_id, url = %m2m_transport::connector::loggable(&reg.url), "registered with the registrar CSE");
                crate::resources::ae_annc::reannounce_all(&cse).await;
                return;
            }
            Err(e) => {
                tracing::warn!(registrar = %reg.cse_id, rsc = e.rsc.code(), dbg = %e.dbg, "registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn rqi() -> String {
    format!("reg-{}", crate::context::random_suffix(10))
}

async fn register_once(cse: &Arc<Cse>) -> M2mResult<()> {
    let reg = cse
        .cfg
        .registrar
        .as_ref()
        .ok_or_else(|| M2mError::internal("no registrar configured"))?;
    let me = &cse.id;
    let from = Some(me.cse_id.sp_relative());
    let mut csr = json!({ "m2m:csr": {
        "rn": me.cse_id.bare(),
        "csi": me.cse_id.sp_relative(),
        "cb": format!("{}/{}", me.cse_id, me.rn),
        "cst": me.role.cse_type(),
        "rr": true,
        "poa": [cse.public_url()],
        "srv": ["2a", "3"],
        "dcse": crate::descendants::current(cse),
    }});
    // A CSE that can join multicast groups says so (multicastCapability IP, TS-0004 6.3.4.2.58).
    let multicast = cse.multicast_member.is_some().then(|| json!(2));
    if let Some(m) = &multicast {
        csr["m2m:csr"]["mtcc"] = m.clone();
    }
    let mut create = Request::new(
        Operation::Create,
        reg.resource_name.clone(),
        from.clone(),
        rqi(),
    );
    create.ty = Some(ResourceType::RemoteCse);
    create.pc = Some(csr);
    let resp = cse.registrar_client.send(&reg.url, &create).await?;
    match resp.rsc {
        Rsc::Created => {}
        // Registered before (a restart): refresh the pointOfAccess.
        Rsc::Conflict | Rsc::OriginatorHasAlreadyRegistered => {
            let mut update = Request::new(
                Operation::Update,
                // By resourceID: the name may have been free-named (taken by something else).
                me.cse_id.bare().to_owned(),
                from.clone(),
                rqi(),
            );
            let mut csr = json!({
                "poa": [cse.public_url()],
                "dcse": crate::descendants::current(cse),
            });
            if let Some(m) = &multicast {
                csr["mtcc"] = m.clone();
            }
            update.pc = Some(json!({ "m2m:csr": csr }));
            cse.registrar_client
                .send(&reg.url, &update)
                .await?
                .into_result()?;
        }
        _ => {
            resp.into_result()?;
        }
    }
    // Learn the registrar's CSEBase and represent it locally.
    let get = Request::new(Operation::Retrieve, reg.resource_name.clone(), from, rqi());
    let cb = cse
        .registrar_client
        .send(&reg.url, &get)
        .await?
        .into_result()?;
    let cb = cb
        .pc
        .as_ref()
        .and_then(|p| p.get("m2m:cb"))
        .cloned()
        .unwrap_or(Value::Null);
    let reg_csi = m2m_core::CseId::parse(&reg.cse_id)?;
    if cb
        .get("csi")
        .and_then(Value::as_str)
        .is_some_and(|c| c != reg_csi.sp_relative())
    {
        return Err(M2mError::bad_request(format!(
            "the registrar at {} is not {}",
            reg.url, reg_csi
        )));
    }
    upsert_registrar_csr(cse, &reg_csi, &reg.resource_name, &reg.url, &cb).await
}

/// Tells the registrar this CSE's descendants (an UPDATE of our `<remoteCSE>` there, TS-0001
/// clause 10.2.2.4), with `joining` (CSEs being registered here, and their descendants) counted
/// already. Without a registrar there is nobody to tell. Runs as a task of its own, so that a
/// caller that stops waiting (a registration answered after [`PUBLISH_WAIT`]) does not cancel it;
/// a failure, or a list the registrar did not keep whole, is tried again ([`retry`]) and never
/// the caller's error.
pub(crate) async fn publish_descendants(cse: &Arc<Cse>, joining: &[CseId]) {
    if cse.cfg.registrar.is_none() {
        return;
    }
    let task = {
        let cse = Arc::clone(cse);
        let joining = joining.to_vec();
        tokio::spawn(async move {
            if let Err(why) = publish_once(&cse, &joining).await {
                tracing::warn!(reason = %why, "descendant CSEs not yet known to the registrar; trying again");
                retry(&cse);
            }
        })
    };
    let _ = tokio::time::timeout(PUBLISH_WAIT, task).await;
}

/// How long a registration or an UPDATE of a registree waits for the registrar to learn it.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn publish_once(cse: &Cse, joining: &[CseId]) -> Result<(), String> {
    let Some(reg) = cse.cfg.registrar.as_ref() else {
        return Ok(());
    };
    let _one = cse.publishing.one_at_a_time.lock().await;
    let dcse = crate::descendants::ours(cse, joining).map_err(|e| e.dbg)?;
    let me = &cse.id.cse_id;
    // By resourceID: the registrar may have given the `<remoteCSE>` another name.
    let mut update = Request::new(
        Operation::Update,
        me.bare().to_owned(),
        Some(me.sp_relative()),
        format!("dcse-{}", crate::context::random_suffix(10)),
    );
    update.pc = Some(json!({"m2m:csr": {"dcse": dcse}}));
    let answer = cse
        .registrar_client
        .send(&reg.url, &update)
        .await
        .map_err(|e| e.dbg)?;
    if answer.rsc != Rsc::Updated {
        return Err(format!("the registrar answered {}", answer.rsc.code()));
    }
    // What the registrar kept is in its answer, which it shows only to a CSE that may read its
    // own <remoteCSE> there: without it nothing is known to be refused, and nothing is dropped.
    let Some(answered) = answer.pc.as_ref().and_then(|p| p.pointer("/m2m:csr/dcse")) else {
        tracing::warn!(
            "the registrar did not show which descendant CSEs it kept: none dropped here"
        );
        return Ok(());
    };
    let kept: std::collections::BTreeSet<CseId> = crate::store::string_list(Some(answered))
        .iter()
        .filter_map(|c| CseId::parse(c).ok())
        .collect();
    let refused: std::collections::BTreeSet<CseId> = dcse
        .iter()
        .filter_map(|c| CseId::parse(c).ok())
        .filter(|c| !kept.contains(c))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    // A CSE registered here that the registrar counts as another's (it moved here, and the
    // other has not told yet): try again later. Descendants it refused leave our lists.
    let registered_here = refused
        .iter()
        .filter(
            |c| matches!(cse.store.get(c.bare()), Ok(Some(r)) if r.ty == ResourceType::RemoteCse),
        )
        .count();
    cse.store
        .write(move |w| crate::descendants::drop_refused(w, &refused))
        .await
        .map_err(|e| e.dbg)?;
    if registered_here > 0 {
        return Err(format!(
            "the registrar counts {registered_here} CSE(s) registered here as another registree's"
        ));
    }
    Ok(())
}

/// Publishes again with back-off (1 s doubling to 60 s) until the registrar has the list, one
/// loop per CSE at a time (each attempt sends the list as it is then).
fn retry(cse: &Arc<Cse>) {
    use std::sync::atomic::Ordering;
    if cse.publishing.retrying.swap(true, Ordering::AcqRel) {
        return;
    }
    /// Clears the flag however the loop ends (a runtime shutting down drops it mid-sleep).
    struct Done(std::sync::Weak<Cse>);
    impl Drop for Done {
        fn drop(&mut self) {
            if let Some(cse) = self.0.upgrade() {
                cse.publishing.retrying.store(false, Ordering::Release);
            }
        }
    }
    let weak = Arc::downgrade(cse);
    tokio::spawn(async move {
        let _done = Done(weak.clone());
        let mut delay = std::time::Duration::from_secs(1);
        loop {
            tokio::time::sleep(delay).await;
            let Some(cse) = weak.upgrade() else { break };
            if publish_once(&cse, &[]).await.is_ok() {
                break;
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(60));
        }
    });
}

async fn upsert_registrar_csr(
    cse: &Cse,
    csi: &m2m_core::CseId,
    rn: &str,
    url: &str,
    cb: &Value,
) -> M2mResult<()> {
    let now = cse.now_ts();
    let base = cse.base_ri().to_owned();
    let srn = format!("{}/{}", cse.id.rn, csi.bare());
    let (csi, rn, url, cb) = (csi.clone(), rn.to_owned(), url.to_owned(), cb.clone());
    cse.store
        .write(move |w| match w.get(csi.bare())? {
            Some(mut existing) => {
                existing.attrs.insert("poa".into(), json!([url]));
                existing.attrs.insert("lt".into(), json!(now));
                w.update(&existing)
            }
            None => {
                let attrs = json!({
                    "ty": ResourceType::RemoteCse.code(),
                    "ri": csi.bare(),
                    "rn": csi.bare(),
                    "pi": base,
                    "ct": now,
                    "lt": now,
                    "csi": csi.sp_relative(),
                    "cb": format!("{csi}/{rn}"),
                    "cst": cb.get("cst").cloned().unwrap_or(json!(1)),
                    "srv": cb.get("srv").cloned().unwrap_or(json!(["3"])),
                    "rr": true,
                    "poa": [url],
                });
                let attrs = attrs.as_object().cloned().unwrap_or_default();
                w.insert(Resource {
                    seq: 0,
                    ty: ResourceType::RemoteCse,
                    srn,
                    attrs,
                    creator: Some(csi.sp_relative()),
                    specialization: None,
                })
                .map(|_| ())
            }
        })
        .await
}
