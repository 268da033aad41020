//! Bulk loading for benchmarks and scale tests: contentInstances written straight into the store
//! in large transactions, as a CREATE from the container's creator would store them (identifiers,
//! timestamps, the container's counters and limits), without the request path: no access
//! decision, no notifications. Reachable from no binding: the scale test
//! (crates/m2m/tests/store_scale.rs) calls it on a CSE that serves nobody yet.

use crate::cse::Cse;
use crate::dispatcher::assemble;
use m2m_core::{M2mError, M2mResult, ResourceType};
use serde_json::{json, Map};
use std::sync::Arc;

/// Instances written per transaction.
const PER_TRANSACTION: u64 = 5_000;

/// Creates `count` contentInstances with content `con` in the container at structured name
/// `container`; every `label_every`-th one (if not 0) gets the label `label`.
pub fn prefill_instances(
    cse: &Arc<Cse>,
    container: &str,
    count: u64,
    con: &str,
    label: Option<(&str, u64)>,
) -> M2mResult<()> {
    let cnt = cse
        .store
        .get_by_srn(container)?
        .filter(|c| c.ty == ResourceType::Container)
        .ok_or_else(|| M2mError::not_found(format!("no container '{container}'")))?;
    let creator = cnt
        .creator
        .as_deref()
        .and_then(|c| m2m_core::EntityId::parse(c, &cse.id.home).ok());
    let mut done = 0;
    while done < count {
        let n = PER_TRANSACTION.min(count - done);
        let batch: Vec<_> = (done..done + n)
            .map(|i| {
                let mut attrs = Map::new();
                attrs.insert("con".into(), json!(con));
                if let Some((l, every)) = label.filter(|(_, every)| *every > 0) {
                    if i % every == 0 {
                        attrs.insert("lbl".into(), json!([l]));
                    }
                }
                assemble(
                    cse,
                    &cnt,
                    ResourceType::ContentInstance,
                    attrs,
                    None,
                    creator.clone(),
                )
            })
            .collect();
        let cse2 = Arc::clone(cse);
        let ri = cnt.ri().to_owned();
        cse.store.write_blocking(move |w| {
            let parent = w
                .get(&ri)?
                .ok_or_else(|| M2mError::not_found("the container was deleted"))?;
            crate::resources::container::insert_instances(&cse2, w, &parent, batch).map(|_| ())
        })?;
        done += n;
    }
    Ok(())
}
