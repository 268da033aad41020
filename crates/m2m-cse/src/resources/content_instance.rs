//! `<contentInstance>` (TS-0004 clause 7.4.7): inserted with its effects on the container
//! (counters, state tag, limits: [`super::container`]); in a location container, judged against
//! its policy's geofence ([`super::location_policy`]). A contentInstance with `dcnt`
//! (deletionCnt, Release 4) is deleted after that many retrievals.

use super::Behaviour;
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::{M2mError, M2mResult, Operation, ResourceType};
use serde_json::json;
use std::sync::Arc;

pub struct ContentInstance;

impl Behaviour for ContentInstance {
    /// Its container's disableRetrieval (TS-0004 clause 7.4.7.2.2-4).
    fn admits(&self, cse: &Cse, op: Operation, res: &Resource) -> M2mResult<()> {
        if op == Operation::Create {
            return Ok(());
        }
        match cse.store.get(res.pi())? {
            Some(parent) if parent.ty == ResourceType::Container => {
                super::container::refuse_if_disabled(op, &parent)
            }
            _ => Ok(()),
        }
    }

    /// `cin_` and a time-ordered suffix, so that instances list in creation order.
    fn default_name(&self, _ri: &str) -> String {
        format!("cin_{}", crate::dispatcher::time_ordered_suffix())
    }

    fn insert(
        &self,
        cse: &Cse,
        w: &Writer<'_>,
        parent: &Resource,
        new: Resource,
    ) -> M2mResult<Resource> {
        if parent.attrs.contains_key("li") {
            return super::location_policy::insert_position(cse, w, parent, new);
        }
        super::container::insert_instance(cse, w, parent, new)
    }

    fn created(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.geofence_events.release(cse, res);
    }
}

/// Whether `res` is a contentInstance that counts its retrievals down.
pub fn counts_retrievals(res: &Resource) -> bool {
    res.ty == ResourceType::ContentInstance && res.attrs.contains_key("dcnt")
}

/// Takes one retrieval of `cin` before its answer goes out: the count goes down by one, and the
/// instance is deleted, with the notifications that follow, when it reaches zero. Returns the
/// count taken (what the answer shows), or `None` when the instance is gone: the count is read
/// and written in one transaction, so concurrent readers take one each and no more read it
/// than it allows.
pub async fn count_retrieval(cse: &Arc<Cse>, cin: &Resource) -> M2mResult<Option<u64>> {
    let ri = cin.ri().to_owned();
    let taken = cse
        .store
        .write(move |w| {
            let Some(mut current) = w.get(&ri)? else {
                return Ok(None);
            };
            match current.u64_attr("dcnt") {
                Some(n) if n > 1 => {
                    current.attrs.insert("dcnt".into(), json!(n - 1));
                    w.update(&current)?;
                    Ok(Some((n, None)))
                }
                // Taken already: its deletion is under way (retrying it here would delete it
                // twice, and uncount it twice).
                Some(0) => Ok(None),
                _ => {
                    // The last one: marked taken inside the transaction, so nobody else
                    // takes it while it is being deleted.
                    current.attrs.insert("dcnt".into(), json!(0));
                    w.update(&current)?;
                    Ok(Some((1, Some(current))))
                }
            }
        })
        .await;
    let taken = match taken {
        Ok(Some((n, Some(last)))) => crate::dispatcher::delete_resource(cse, &last, None)
            .await
            .map(|()| Some(n)),
        Ok(Some((n, None))) => Ok(Some(n)),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    taken.map_err(|e| {
        tracing::warn!(cin = %cin.ri(), "deletionCnt not counted: {}", e.dbg);
        // The answer is not given: a retrieval that was not counted did not happen.
        M2mError::internal("the retrieval could not be counted")
    })
}
