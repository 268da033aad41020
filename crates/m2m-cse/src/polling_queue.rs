//! The requests waiting in `<pollingChannel>`s (TS-0004 clauses 7.3.3.9.1 and 7.4.22.2): a request
//! for an entity that polls is queued in its channel, and its sender waits; the entity's long
//! poll takes it, and its answer goes back to that sender by Request Identifier. The resource
//! type and its `pcu` virtual child are `resources::polling_channel`; this is the queue that the
//! notification layer delivers into.

use crate::context::Context;
use crate::store::Resource;
use chrono::{DateTime, Utc};
use m2m_core::{M2mError, M2mResult, Request, ResourceType, Response, ResponseStatusCode as Rsc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// How long a request for a polling entity waits for its answer when it names no Request
/// Expiration Timestamp: a poll in progress takes it at once, a poller between two polls comes
/// back within `resources::polling_channel::DEFAULT_POLL_WAIT`.
pub const DEFAULT_DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// Requests queued in one channel at most; beyond, the sender gets 5103 at once instead of the
/// CSE's memory growing for an entity that never polls.
const QUEUE_LEN: usize = 256;

/// Requests one aggregating poll hands out at most (the rest wait for the next poll): an answer
/// of bounded size, and fewer requests at stake if it never reaches the poller.
const AGGREGATE_MAX: usize = 32;

/// The `<pollingChannel>` of a registered AE or CSE, if it made one.
pub fn channel_of(cse: &Context, registree: &Resource) -> M2mResult<Option<Resource>> {
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
    pub(crate) async fn poll(
        &self,
        cse: &Context,
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
    pub(crate) fn respond(&self, pch: &Resource, resp: Response) -> M2mResult<()> {
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
pub(crate) fn deadline_of(req: &Request, default: Duration) -> DateTime<Utc> {
    req.rqet
        .as_deref()
        .and_then(|t| m2m_core::time::parse(t).ok())
        .unwrap_or_else(|| Utc::now() + chrono::Duration::from_std(default).unwrap_or_default())
}

fn until(deadline: DateTime<Utc>) -> Duration {
    (deadline - Utc::now()).to_std().unwrap_or_default()
}
