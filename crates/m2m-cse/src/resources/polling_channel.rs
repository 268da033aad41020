//! `<pollingChannel>` and its virtual child `<pollingChannelURI>` `pcu` (TS-0004 clauses 7.4.21,
//! 7.4.22; TS-0001 clauses 10.2.5.12 to 10.2.5.19): service layer long polling, for an AE or CSE
//! that nobody can reach (a phone behind a carrier's NAT), yet that can ask.
//!
//! - Only the entity the parent `<AE>` or `<remoteCSE>` stands for may create, retrieve, update,
//!   delete or poll its channel (clause 7.4.21.2, Recv-6.3; `access`), not even the admin. At
//!   most one per parent (a second is 4000).
//! - A request for that entity (a notification to its AE-ID) is queued in the channel instead of
//!   being sent to its pointOfAccess (TS-0004 clause 7.3.3.9.1); the sender waits.
//! - A RETRIEVE of `pcu` hands out the oldest queued request as `m2m:rqp`, or waits for one until
//!   the poll's Request Expiration Timestamp (default [`DEFAULT_POLL_WAIT`]), then 4008. With
//!   requestAggregation (`rqag`, Release 4) true, it hands out the queued requests at once (32 at
//!   most), as the list `m2m:agrp` of request primitives; each is answered on its own.
//! - The entity answers with a NOTIFY to `pcu` carrying `m2m:rsp`; the response goes, by its
//!   Request Identifier, to the sender still waiting (clause 7.4.22.2.5).
//! - A queued request that gets no answer before its own Request Expiration Timestamp (default
//!   `polling_queue::DEFAULT_DELIVERY_WAIT`) is answered 4008 to its sender and leaves the queue.

use super::{Call, Pending, Prepared};
use crate::cse::Cse;
use crate::polling_queue::deadline_of;
use crate::store::Resource;
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a poll without a Request Expiration Timestamp waits for a request.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(10);

/// The type's behaviour: one channel per parent. Its queue goes with the resource, also when
/// the parent is deleted.
pub struct PollingChannel;

impl super::Behaviour for PollingChannel {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        parent: &'a Resource,
        _attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready(one_per_parent(call.cse, parent).map(|()| Prepared::default()))
    }

    fn keeps_state(&self) -> bool {
        true
    }

    /// Whoever waits on the channel learns now.
    fn deleted(&self, cse: &Arc<Cse>, res: &Resource) {
        cse.polling.close(res.ri());
    }
}

/// TS-0004 table 7.4.5.1-3: an <AE> (or <remoteCSE>) has at most one <pollingChannel>.
fn one_per_parent(cse: &Cse, parent: &Resource) -> M2mResult<()> {
    let existing = cse
        .store
        .read(|r| r.children(parent.ri(), Some(ResourceType::PollingChannel)))?;
    if existing.is_empty() {
        Ok(())
    } else {
        Err(M2mError::bad_request(
            "the parent already has a pollingChannel",
        ))
    }
}

/// A request on `<pollingChannel>/pcu`, already authorized (the channel's own entity):
/// RETRIEVE polls, NOTIFY answers; it cannot be created, updated or deleted (clause 7.4.22.2).
pub async fn serve_pcu(cse: &Arc<Cse>, req: Request, pch: Resource) -> M2mResult<Response> {
    match req.op {
        Operation::Retrieve => {
            let aggregate = pch.attrs.get("rqag") == Some(&Value::Bool(true));
            let deadline = deadline_of(&req, cse.testing.poll_wait().unwrap_or(DEFAULT_POLL_WAIT));
            let polled = cse.polling.poll(cse, &pch, deadline, aggregate).await?;
            let pc = if aggregate {
                m2m_core::serialization::rooted(
                    "m2m:agrp",
                    polled.iter().map(Request::to_json).collect::<Vec<_>>(),
                )
            } else {
                m2m_core::serialization::rooted(
                    "m2m:rqp",
                    polled.first().map(Request::to_json).unwrap_or(Value::Null),
                )
            };
            Ok(Response::new(Rsc::Ok, &req.rqi, Some(pc)))
        }
        Operation::Notify => {
            let rsp = req
                .pc
                .as_ref()
                .and_then(|pc| pc.get("m2m:rsp"))
                .ok_or_else(|| {
                    M2mError::bad_request("the content must be the response as m2m:rsp")
                })?;
            cse.polling.respond(&pch, Response::from_rsp_json(rsp)?)?;
            Ok(Response::new(Rsc::Ok, &req.rqi, None))
        }
        Operation::Create | Operation::Update | Operation::Delete => Err(M2mError::not_allowed(
            "the pollingChannelURI is virtual: only RETRIEVE (a poll) and NOTIFY (an answer)",
        )),
    }
}
