//! <pollingChannel> and its virtual child <pollingChannelURI> `pcu` (TS-0004 clauses 7.4.21,
//! 7.4.22; TS-0001 clauses 10.2.5.12 to 10.2.5.19): service layer long polling, for an AE or CSE
//! that nobody can reach (a phone behind a carrier's NAT), yet that can ask.
//!
//! - Only the entity the parent <AE> or <remoteCSE> stands for may create, retrieve, update,
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
//!   [`DEFAULT_DELIVERY_WAIT`]) is answered 4008 to its sender and leaves the queue.

use super::{Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::Resource;
use chrono::{DateTime, Utc};
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// How long a poll without a Request Expiration Timestamp waits for a request.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(10);

/// How long a request for a polling entity waits for its answer when it names no Request
/// Expiration Timestamp: a poll in progress takes it at once, a poller between two polls comes
/// back within [`DEFAULT_POLL_WAIT`].
pub const DEFAULT_DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// Requests queued in one channel at most; beyond, the sender gets 5103 at once instead of the
/// CSE's memory growing for an entity that never polls.
const QUEUE_LEN: usize = 256;

/// Requests one aggregating poll hands out at most (the rest wait for the next poll): an answer
/// of bounded size, and fewer requests at stake if it never reaches the poller.
const AGGREGATE_MAX: usize = 32;

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

/// The <pollingChannel> of a registered AE or CSE, if it made one.
pub fn channel_of(cse: &Cse, registree: &Resource) -> M2mResult<Option<Resource>> {
    let mut found = cse
        .store
        .read(|r| r.children(registree.ri(), Some(ResourceType::PollingChannel)))?;
    Ok(found.pop())
}

/// Requests waiting in the channels of this CSE, by the channel's resourceID.
#[derive(Default)]
pub struct Channels {
    inner: Mutex<HashMap<String, Channel>>,
}

#[derive(Default)]
struct Channel {
    /// Requests no poll has taken yet, oldest first.
    queue: VecDeque<Request>,
    /// Woken when a request is queued or the channel closes.
    arrived: Arc<Notify>,
    /// Where the response to each queued or handed-out request goes, by Request Identifier.
    awaiting: HashMap<String, oneshot::Sender<Response>>,
}

impl Channels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a deleted channel: its pollers wake (and find it gone), its senders get 5103.
    pub fn close(&self, pch_ri: &str) {
        if let Some(ch) = self.lock().remove(pch_ri) {
            ch.arrived.notify_waiters();
        }
    }

    /// Queues `req` for the entity polling `pch` and waits for its answer (until its Request
    /// Expiration Timestamp, else `wait`).
    pub async fn deliver(
        &self,
        pch: &Resource,
        req: Request,
        wait: Duration,
    ) -> M2mResult<Response> {
        let deadline = deadline_of(&req, wait);
        let rqi = req.rqi.clone();
        let rx = {
            let mut channels = self.lock();
            let ch = channels.entry(pch.ri().to_owned()).or_default();
            if ch.awaiting.contains_key(&rqi) {
                return Err(M2mError::bad_request(
                    "a request with this Request Identifier is already waiting for the target",
                ));
            }
            if ch.queue.len() >= QUEUE_LEN {
                tracing::warn!(pch = pch.ri(), queued = QUEUE_LEN, "polling channel full");
                return Err(unreachable_target());
            }
            let (tx, rx) = oneshot::channel();
            ch.awaiting.insert(rqi.clone(), tx);
            ch.queue.push_back(req);
            ch.arrived.notify_one();
            rx
        };
        match tokio::time::timeout(until(deadline), rx).await {
            Ok(Ok(resp)) => Ok(resp),
            // The channel was deleted while the request waited.
            Ok(Err(_)) => Err(unreachable_target()),
            Err(_) => {
                if let Some(ch) = self.lock().get_mut(pch.ri()) {
                    ch.awaiting.remove(&rqi);
                    ch.queue.retain(|q| q.rqi != rqi);
                }
                Err(M2mError::new(
                    Rsc::RequestTimeout,
                    "the target did not answer through its polling channel in time",
                ))
            }
        }
    }

    /// A long poll: the oldest queued request (all of them with `all`), or the first to arrive
    /// before `deadline`.
    async fn poll(
        &self,
        cse: &Cse,
        pch: &Resource,
        deadline: DateTime<Utc>,
        all: bool,
    ) -> M2mResult<Vec<Request>> {
        loop {
            let arrived = {
                let mut channels = self.lock();
                let ch = channels.entry(pch.ri().to_owned()).or_default();
                if !ch.queue.is_empty() {
                    let n = if all {
                        ch.queue.len().min(AGGREGATE_MAX)
                    } else {
                        1
                    };
                    return Ok(ch.queue.drain(..n).collect());
                }
                Arc::clone(&ch.arrived)
            };
            let woken = arrived.notified();
            tokio::pin!(woken);
            // A request queued between the look above and now left a permit: no wake-up is lost.
            woken.as_mut().enable();
            if tokio::time::timeout(until(deadline), woken).await.is_err() {
                return Err(M2mError::new(
                    Rsc::RequestTimeout,
                    "no request for the originator arrived before the Request Expiration Timestamp",
                ));
            }
            if cse.store.get(pch.ri())?.is_none() {
                // Deleted while the poll waited; its entry must not come back.
                self.lock().remove(pch.ri());
                return Err(M2mError::not_found("the pollingChannel was deleted"));
            }
        }
    }

    /// The entity's answer to a request it polled: to the sender waiting for it.
    fn respond(&self, pch: &Resource, resp: Response) -> M2mResult<()> {
        let tx = self
            .lock()
            .get_mut(pch.ri())
            .and_then(|ch| ch.awaiting.remove(&resp.rqi));
        match tx {
            // The sender may have given up in the meantime: the answer is then simply late.
            Some(tx) => {
                let _ = tx.send(resp);
                Ok(())
            }
            None => Err(M2mError::not_found(
                "no request with this Request Identifier is waiting for a response",
            )),
        }
    }
}

fn unreachable_target() -> M2mError {
    M2mError::new(
        Rsc::TargetNotReachable,
        "the target cannot be reached through its polling channel",
    )
}

/// The Request Expiration Timestamp of a request (absolute once `validity::check` ran), or
/// `default` from now.
fn deadline_of(req: &Request, default: Duration) -> DateTime<Utc> {
    req.rqet
        .as_deref()
        .and_then(|t| m2m_core::time::parse(t).ok())
        .unwrap_or_else(|| Utc::now() + chrono::Duration::from_std(default).unwrap_or_default())
}

fn until(deadline: DateTime<Utc>) -> Duration {
    (deadline - Utc::now()).to_std().unwrap_or_default()
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
                json!({ "m2m:agrp": polled.iter().map(Request::to_json).collect::<Vec<_>>() })
            } else {
                json!({ "m2m:rqp": polled.first().map(Request::to_json) })
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
