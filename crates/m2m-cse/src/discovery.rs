//! Resource discovery (TS-0001 clause 10.2.6, TS-0004 clause 7.3.3.17): the descendants of the
//! target that match the filter criteria, as a list of addresses.

use crate::cse::Cse;
use crate::resolve::Target;
use m2m_core::{DiscResType, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use serde_json::json;

pub fn discover(cse: &Cse, req: &Request, target: Target) -> M2mResult<Response> {
    let root = target.into_resource("discovery")?;
    let fc = &req.fc;
    let max = cse.cfg.limits.max_discovery_results;
    let limit = fc.limit.unwrap_or(max).min(max);
    let offset = fc.offset.unwrap_or(0);
    let base_depth = root.srn.matches('/').count() as u32;
    let mut skipped = 0u64;
    let mut found = Vec::new();
    let mut more = false;
    cse.store.read(|r| {
        r.for_each_descendant(&root.srn, |res| {
            if let Some(lvl) = fc.level {
                if res.srn.matches('/').count() as u32 - base_depth > lvl {
                    return true;
                }
            }
            if !fc.matches(&res.attrs) {
                return true;
            }
            if skipped < offset {
                skipped += 1;
                return true;
            }
            if found.len() as u64 >= limit {
                more = true;
                return false;
            }
            found.push(match req.drt {
                DiscResType::Structured => res.srn,
                DiscResType::Unstructured => res.ri().to_owned(),
            });
            true
        })
    })?;
    let mut resp = Response::new(Rsc::Ok, &req.rqi, Some(json!({ "m2m:uril": found })));
    if more {
        // Partial content: the originator continues from this offset (TS-0004 clause 7.3.3.17.x).
        resp.cts = Some(2);
        resp.cto = Some(offset + found.len() as u64);
    }
    Ok(resp)
}
