//! Resource discovery (TS-0001 clause 10.2.6, TS-0004 clause 7.3.3.17): the descendants of the
//! target that match the filter criteria and that the originator may discover, as a list of
//! addresses; and the same walk for the child resources a RETRIEVE lists (`rcn` 4, 5, 6, 8).
//!
//! Candidates come from the indexes of the filter conditions in structured-name order
//! ([`crate::store::scan`]), so the work grows with what matches, not with what is stored. Each
//! candidate is checked against the whole filter and the access decision; `ofst` and `lim` stop
//! the walk. The walk runs on a search thread ([`crate::search_threads`]), never on the threads
//! that serve other requests, and within a time budget (`[limits] discovery_budget_ms`): when it runs out, what was found is
//! answered as partial content (Content Status PARTIAL_CONTENT, Content Offset where to go on).
//!
//! With applyRelativePath (`arp`, clause 7.3.3.17.17) each match stands for the resource at the
//! path from it (`../temp/la`): what exists there, once, and only if the originator holds the
//! same privilege on it, is the result; a path that leads nowhere drops the match.

use crate::access::{self, Facts};
use crate::cse::{Cse, Peer};
use crate::resolve::Target;
use crate::store::scan::{self, Plan, Stream};
use crate::store::{Reader, Resource};
use m2m_core::filter::{FilterCriteria, PathStep, RelativePath};
use m2m_core::{M2mError, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::access_control::AccessOperation;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One walk over the descendants of a resource.
pub struct Walk<'a> {
    pub root: &'a Resource,
    pub fc: &'a FilterCriteria,
    /// The deepest level below the root to list (1: children only); `None`: every level.
    pub level: Option<u32>,
    /// Which privilege each listed resource needs.
    pub op: AccessOperation,
    pub offset: u64,
    pub limit: u64,
    /// When to stop, partial (the budget counts from the request's arrival, queue included).
    pub deadline: Instant,
    /// The Role-IDs the originator holds for this request ([`crate::roles`]).
    pub roles: &'a [String],
}

/// What a walk found.
pub struct Found {
    pub resources: Vec<Resource>,
    /// The walk stopped before the end (limit reached or budget spent): more may follow from
    /// offset `offset + resources.len()`.
    pub partial: bool,
    /// Nothing was found before the budget ran out.
    pub timed_out: bool,
}

/// Candidates examined between two looks at the clock.
const CLOCK_EVERY: u32 = 64;

impl Walk<'_> {
    pub fn run(&self, cse: &Cse, peer: &Peer) -> M2mResult<Found> {
        let plan = Plan::of(self.fc);
        let (lo, hi) = scan::subtree_bounds(&self.root.srn);
        let max_depth = self.level.map(|l| scan::depth(&self.root.srn) + l as usize);
        let facts = Facts::of(peer).holding(self.roles);
        let mut decisions = HashMap::new();
        let mut found = Vec::new();
        // The resources applyRelativePath led to, each listed once.
        let mut led_to = std::collections::HashSet::new();
        let semantic = crate::sparql::filters(self.fc)?;
        // Decisions for RETRIEVE on descriptors, kept apart from the walk's (the cache is per
        // resource, one operation per cache).
        let mut retrieve_decisions = HashMap::new();
        let mut skipped = 0u64;
        let mut examined = 0u32;
        cse.store.read(|r| {
            let mut stream = Stream::open(r, &plan, &lo, &hi)?;
            let mut min = lo.clone();
            while let Some(key) = stream.seek(r, &min)? {
                if let Some(max) = max_depth.filter(|m| scan::depth(&key.srn) > *m) {
                    min = scan::skip_below(&key.srn, max);
                    continue;
                }
                min = scan::after(&key.srn);
                examined += 1;
                // A geo-query costs a relation per candidate: the clock is read at each.
                let clock_every = if self.fc.is_geo() { 1 } else { CLOCK_EVERY };
                if examined.is_multiple_of(clock_every) && Instant::now() > self.deadline {
                    return Ok(Found {
                        timed_out: found.is_empty(),
                        resources: found,
                        partial: true,
                    });
                }
                let Some(res) = r.get_by_seq(key.seq)? else {
                    continue;
                };
                // Access is decided before the geo-query is (see `matches_guarded`).
                let mut refused = None;
                let selected = self.fc.matches_guarded(&res.attrs, || {
                    access::permits(cse, &facts, self.op, &res, &mut decisions).unwrap_or_else(
                        |e| {
                            refused = Some(e);
                            false
                        },
                    )
                });
                if let Some(e) = refused {
                    return Err(e);
                }
                if !selected {
                    continue;
                }
                if !semantic.is_empty()
                    && !crate::semantic_query::semantic_match(
                        cse,
                        r,
                        &facts,
                        &res,
                        &semantic,
                        &mut retrieve_decisions,
                    )?
                {
                    continue;
                }
                let res = match &self.fc.apply_relative_path {
                    None => res,
                    Some(path) => {
                        let Some(there) = at_relative_path(r, &res, path)? else {
                            continue;
                        };
                        if !led_to.insert(there.ri().to_owned())
                            || !access::permits(cse, &facts, self.op, &there, &mut decisions)?
                        {
                            continue;
                        }
                        there
                    }
                };
                if skipped < self.offset {
                    skipped += 1;
                    continue;
                }
                if found.len() as u64 >= self.limit {
                    return Ok(Found {
                        resources: found,
                        partial: true,
                        timed_out: false,
                    });
                }
                found.push(res);
            }
            Ok(Found {
                resources: found,
                partial: false,
                timed_out: false,
            })
        })
    }
}

/// The resource at `path` from `res` (applyRelativePath), if there is one: `..` above the
/// CSEBase leads nowhere, `la`/`ol` to the latest/oldest instance of what holds instances.
fn at_relative_path(
    r: &Reader<'_>,
    res: &Resource,
    path: &RelativePath,
) -> M2mResult<Option<Resource>> {
    let mut segs: Vec<&str> = res.srn.split('/').collect();
    let mut instance = None;
    for step in path.steps() {
        match step {
            PathStep::Parent if segs.len() <= 1 => return Ok(None),
            PathStep::Parent => {
                segs.pop();
            }
            PathStep::Child(name) => segs.push(name),
            PathStep::Latest | PathStep::Oldest => instance = Some(step),
        }
    }
    let Some(at) = r.get_by_srn(&segs.join("/"))? else {
        return Ok(None);
    };
    let Some(step) = instance else {
        return Ok(Some(at));
    };
    let Some(ty) = at.ty.instance_type() else {
        return Ok(None);
    };
    if *step == PathStep::Latest {
        r.latest_child(at.ri(), ty)
    } else {
        r.oldest_child(at.ri(), ty)
    }
}

/// The largest result the configuration allows, and what the request asks for within it.
pub fn limit(cse: &Cse, fc: &FilterCriteria) -> u64 {
    let max = cse.cfg.limits.max_discovery_results;
    fc.limit.unwrap_or(max).min(max)
}

pub async fn discover(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: Peer,
) -> M2mResult<Response> {
    let root = target.into_resource("discovery")?;
    let deadline = deadline(cse);
    let shared = Arc::clone(cse);
    cse.searches
        .run(move || discover_blocking(&shared, &req, &root, &peer, deadline))
        .await
}

fn discover_blocking(
    cse: &Cse,
    req: &Request,
    root: &Resource,
    peer: &Peer,
    deadline: Instant,
) -> M2mResult<Response> {
    let offset = req.fc.offset.unwrap_or(0);
    let roles = crate::roles::held(cse, req, peer);
    let found = Walk {
        root,
        fc: &req.fc,
        level: req.fc.level,
        op: AccessOperation::Discovery,
        offset,
        limit: limit(cse, &req.fc),
        deadline,
        roles: &roles,
    }
    .run(cse, peer)?;
    if found.timed_out {
        return Err(timed_out());
    }
    let address = |res: &Resource| crate::dispatcher::address_of(res, req.drt);
    let pc = if req.rcn == Some(m2m_core::ResultContent::ChildResourceReferences) {
        let rrf: Vec<serde_json::Value> = found
            .resources
            .iter()
            .map(|r| json!({ "nm": r.rn(), "typ": r.ty.code(), "val": address(r) }))
            .collect();
        m2m_core::serialization::rooted("m2m:rrl", m2m_core::serialization::rooted("rrf", rrf))
    } else {
        let uris: Vec<String> = found.resources.iter().map(address).collect();
        m2m_core::serialization::rooted("m2m:uril", uris)
    };
    let mut resp = Response::new(Rsc::Ok, &req.rqi, Some(pc));
    if found.partial {
        // Partial content: the originator continues from this offset (TS-0001 clause 8.1.3).
        resp.cts = Some(m2m_core::primitive::PARTIAL_CONTENT);
        resp.cto = Some(offset + found.resources.len() as u64);
    }
    Ok(resp)
}

/// When a walk that starts now must stop (`[limits] discovery_budget_ms`).
pub fn deadline(cse: &Cse) -> Instant {
    Instant::now() + Duration::from_millis(cse.cfg.limits.discovery_budget_ms)
}

/// The answer when the budget ran out before anything was found: narrowing the filter helps,
/// repeating the request does not.
pub fn timed_out() -> M2mError {
    M2mError::new(
        Rsc::RequestTimeout,
        "the search did not finish within its time budget: narrow the filter criteria",
    )
}
