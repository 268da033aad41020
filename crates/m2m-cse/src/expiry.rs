//! Resource expiration (TS-0001 clause 9.6.1.3: expirationTime): expired resources are deleted,
//! with the notifications a deletion sends.

use crate::cse::Cse;
use std::sync::Arc;
use std::time::Duration;

/// Deletes expired resources once a second, forever.
pub async fn run(cse: Arc<Cse>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        sweep(&cse).await;
    }
}

/// One pass: deletes every resource whose expirationTime has passed. Returns how many.
pub(crate) async fn sweep(cse: &Arc<Cse>) -> usize {
    let now = cse.now_ts();
    let mut n = 0;
    loop {
        let batch = match cse.store.read(|r| r.expired(&now, 256)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dbg = %e.dbg, "expiry sweep failed");
                return n;
            }
        };
        if batch.is_empty() {
            return n;
        }
        for res in &batch {
            // A resource may already be gone with an expired ancestor of the same batch.
            if matches!(cse.store.get(res.ri()), Ok(Some(_))) {
                if let Err(e) = crate::dispatcher::delete_resource(cse, res, None).await {
                    tracing::warn!(ri = res.ri(), dbg = %e.dbg, "cannot delete expired resource");
                    return n;
                }
                tracing::debug!(ri = res.ri(), "expired");
                n += 1;
            }
        }
    }
}
