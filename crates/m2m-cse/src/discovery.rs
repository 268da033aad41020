//! Resource discovery (TS-0001 clause 10.2.6, TS-0004 clause 7.3.3.17): the descendants of the
//! target that match the filter criteria, as a list of addresses.

use crate::access::{self, Facts};
use crate::cse::{Cse, Peer};
use crate::resolve::Target;
use m2m_core::{DiscResType, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::access_control::AccessOperation;
use serde_json::json;
use std::collections::HashMap;

pub fn discover(cse: &Cse, req: &Request, target: Target, peer: &Peer) -> M2mResult<Response> {
    let root = target.into_resource("discovery")?;
    let fc = &req.fc;
    let max = cse.cfg.limits.max_discovery_results;
    let limit = fc.limit.unwrap_or(max).min(max);
    let offset = fc.offset.unwrap_or(0);
    let base_depth = root.srn.matches('/').count() as u32;
    let mut skipped = 0u64;
    let mut found = Vec::new();
    let mut more = false;
    // Only what the originator may discover is listed; the request itself is not refused.
    let facts = Facts::of(peer);
    let mut decisions = HashMap::new();
    let mut failure = None;
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
            match access::permits(
                cse,
                &facts,
                AccessOperation::Discovery,
                &res,
                &mut decisions,
            ) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
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
    if let Some(e) = failure {
        return Err(e);
    }
    let mut resp = Response::new(Rsc::Ok, &req.rqi, Some(json!({ "m2m:uril": found })));
    if more {
        // Partial content: the originator continues from this offset (TS-0004 clause 7.3.3.17.x).
        resp.cts = Some(2);
        resp.cto = Some(offset + found.len() as u64);
    }
    Ok(resp)
}
