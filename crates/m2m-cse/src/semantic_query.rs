//! Semantic query and semantic resource discovery (TS-0004 clauses 7.3.3.18, 7.3.3.19): SPARQL
//! (`sparql`) evaluated over the RDF of the `<semanticDescriptor>` resources an originator may
//! read.
//!
//! - A semantic query (`sqi` true, Result Content semantic content, one semanticsFilter;
//!   clause 7.3.3.19.1, implicit scope): the descriptors of the `<semanticDescriptor>`s below
//!   the target (the target too, when it is one) that the originator may RETRIEVE form the data
//!   basis; the answer is `{"m2m:qres": "<results as text>"}`, in the SPARQL XML results format
//!   for an XML response, the JSON one otherwise.
//! - A discovery or child listing with semanticsFilter (clause 7.3.3.18, annotation-based and
//!   resource link-based): a resource matches when one of the queries has a solution over the
//!   descriptors of its `<semanticDescriptor>` children the originator holds the walk's
//!   privilege on, with those their relatedSemantics (`rels`) name, or, for a descriptor
//!   without `rels`, those its `resourceDescriptorLink` annotations name (7.3.3.18.1).

use crate::access::{self, Facts};
use crate::cse::{Cse, Peer};
use crate::resolve::Target;
use crate::sparql::{filters, Graph, Query};
use crate::store::{Reader, Resource};
use m2m_core::filter::FilterCriteria;
use m2m_core::{
    Address, M2mError, M2mResult, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use m2m_security::access_control::AccessOperation;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A semantic query (clause 7.3.3.19.1), on a search thread like a discovery.
pub async fn query(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: Peer,
) -> M2mResult<Response> {
    let root = target.into_resource("semantic query")?;
    let deadline = crate::discovery::deadline(cse);
    let shared = Arc::clone(cse);
    cse.searches
        .run(move || query_blocking(&shared, &req, &root, &peer, deadline))
        .await
}

fn query_blocking(
    cse: &Cse,
    req: &Request,
    root: &Resource,
    peer: &Peer,
    deadline: std::time::Instant,
) -> M2mResult<Response> {
    let [query] = filters(&req.fc)?
        .try_into()
        .map_err(|_| M2mError::bad_request("a semantic query has one semanticsFilter"))?;
    let roles = crate::roles::held(cse, req, peer);
    let fc = FilterCriteria {
        resource_types: vec![ResourceType::SemanticDescriptor.code()],
        ..FilterCriteria::default()
    };
    let found = crate::discovery::Walk {
        root,
        fc: &fc,
        level: None,
        op: AccessOperation::Retrieve,
        offset: 0,
        limit: cse.cfg.limits.max_discovery_results,
        deadline,
        roles: &roles,
    }
    .run(cse, peer)?;
    if found.partial {
        // A query over part of its data basis would answer wrongly, not partly.
        return Err(M2mError::new(
            Rsc::NotAcceptable,
            "more semantic descriptors are in scope than one query reads: target a narrower resource",
        ));
    }
    let mut graph = Graph::default();
    // The target itself when it is a descriptor (the walk lists what is below it); the generic
    // access check granted RETRIEVE on it.
    for smd in std::iter::once(root)
        .filter(|r| r.ty == ResourceType::SemanticDescriptor)
        .chain(&found.resources)
    {
        add(&mut graph, smd);
    }
    let text = query.results_for(&graph, req.accept)?;
    Ok(Response::new(
        Rsc::Ok,
        &req.rqi,
        Some(json!({ "m2m:qres": text })),
    ))
}

/// Adds the descriptor of `smd`; what its `resourceDescriptorLink` annotations name.
fn add(graph: &mut Graph, smd: &Resource) -> Vec<String> {
    match (smd.u64_attr("dcrp"), smd.str_attr("dsp")) {
        (Some(dcrp), Some(dsp)) => graph.add_descriptor(dcrp, dsp),
        _ => Vec::new(),
    }
}

/// The descriptors a resource's annotations may bring into one match, followed link after link.
const MAX_LINKED: usize = 64;

/// Whether `res` matches a semanticsFilter of a walk (clause 7.3.3.18): one of `queries` has a
/// solution over the descriptors of its `<semanticDescriptor>` children that `facts` may
/// RETRIEVE, with the descriptors their relatedSemantics name (held the same way). RETRIEVE,
/// not DISCOVER: a filter answered yes or no, query after query, reads a descriptor out. A
/// query too large for one resource's descriptors does not match it (the walk goes on).
pub(crate) fn semantic_match(
    cse: &Cse,
    r: &Reader<'_>,
    facts: &Facts,
    res: &Resource,
    queries: &[Query],
    decisions: &mut HashMap<String, bool>,
) -> M2mResult<bool> {
    let mut graph = Graph::default();
    let mut seen = HashSet::new();
    let mut permitted = |smd: &Resource, decisions: &mut HashMap<String, bool>| {
        Ok::<bool, M2mError>(
            smd.ty == ResourceType::SemanticDescriptor
                && seen.insert(smd.ri().to_owned())
                && access::permits(cse, facts, AccessOperation::Retrieve, smd, decisions)?,
        )
    };
    let mut annotated = Vec::new();
    for smd in r.children(res.ri(), Some(ResourceType::SemanticDescriptor))? {
        if !permitted(&smd, decisions)? {
            continue;
        }
        let links = add(&mut graph, &smd);
        let rels = crate::store::string_list(smd.attrs.get("rels"));
        // Without relatedSemantics, the annotation-based method (clause 7.3.3.18.1): the
        // descriptors its resourceDescriptorLink triples name join the graph.
        if rels.is_empty() {
            annotated.extend(links);
        }
        for id in rels {
            if let Some(related) = local(cse, r, &id)? {
                if permitted(&related, decisions)? {
                    add(&mut graph, &related);
                }
            }
        }
    }
    let mut followed = 0;
    while let Some(id) = annotated.pop() {
        if followed == MAX_LINKED {
            break;
        }
        followed += 1;
        if let Some(linked) = local(cse, r, &id)? {
            if permitted(&linked, decisions)? {
                annotated.extend(add(&mut graph, &linked));
            }
        }
    }
    if !graph.has_descriptors() {
        return Ok(false);
    }
    for q in queries {
        match q.matches(&graph) {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if e.rsc == Rsc::NotAcceptable => {
                tracing::info!(resource = res.ri(), dbg = %e.dbg, "semantic filter too large for a resource's descriptors: no match");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A resource of this CSE named by `id` in any scope, read through the walk's reader.
fn local(cse: &Cse, r: &Reader<'_>, id: &str) -> M2mResult<Option<Resource>> {
    let Ok(addr) = Address::parse(id) else {
        return Ok(None);
    };
    if crate::resolve::locality(cse, &addr) != crate::resolve::Locality::Local {
        return Ok(None);
    }
    let path = addr.path.as_str();
    match path.split_once('/') {
        None => r.get(path),
        Some((first, rest)) if first == cse.id.rn || first == "-" => {
            r.get_by_srn(&format!("{}/{rest}", cse.id.rn))
        }
        Some(_) => Ok(None),
    }
}

/// A RETRIEVE of `<group>/sfop` (`<semanticFanOutPoint>`, clause 7.4.35.2.2; the explicit scope
/// of clause 7.3.3.19.2): each member is retrieved as the originator would retrieve it (its
/// hosting CSE decides, this one included), and the descriptors of the `<semanticDescriptor>`s
/// among the answers form the data basis. With `sqi` a semantic query over all of them; without,
/// a semantic resource discovery whose answer lists the members whose own descriptor matches.
pub async fn fan_out(
    cse: &Arc<Cse>,
    req: Request,
    group: Resource,
    peer: Peer,
) -> M2mResult<Response> {
    if group.attrs.get("ssi") == Some(&serde_json::Value::Bool(false)) {
        return Err(M2mError::not_allowed(
            "the group does not support semantic fan-out",
        ));
    }
    let queries = filters(&req.fc)?;
    if queries.is_empty() {
        return Err(M2mError::bad_request(
            "a semanticFanOutPoint answers a semanticsFilter",
        ));
    }
    let mut members = crate::store::string_list(group.attrs.get("mid"));
    // As many members as one discovery reads: a query over part of them would answer wrongly,
    // a discovery says its answer is partial.
    let limit = usize::try_from(cse.cfg.limits.max_discovery_results).unwrap_or(usize::MAX);
    let mut partial = false;
    if members.len() > limit {
        if req.sqi {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                "the group has more members than one semantic query reads",
            ));
        }
        members.truncate(limit);
        partial = true;
    }
    let peer = crate::group::nested(peer, "", members.len())?;
    let calls = members.iter().enumerate().map(|(i, m)| {
        let mut r = Request::new(
            m2m_core::Operation::Retrieve,
            m.clone(),
            req.from.clone(),
            format!("{}-sfop{i}", req.rqi),
        );
        // The member is read as the originator reads it: the same release and credentials.
        r.rvi = req.rvi.clone();
        r.tkns = req.tkns.clone();
        r.rids = req.rids.clone();
        r.tids = req.tids.clone();
        r.ltids = req.ltids.clone();
        crate::group::to_member(cse, r, m, "", peer.clone())
    });
    let answers = futures_util::future::join_all(calls).await;
    // A member that did not answer (unreachable, a failure on its CSE) leaves the data basis
    // short of what the originator may read: the answer says it is partial. A refusal or a
    // member that is gone is what the originator may see, and no gap.
    if answers.iter().any(|a| a.rsc.code() >= 5000) {
        partial = true;
    }
    let descriptors: Vec<(String, u64, String)> = answers
        .iter()
        .filter(|a| a.rsc == Rsc::Ok)
        .filter_map(|a| {
            let smd = a.pc.as_ref()?.get("m2m:smd")?;
            Some((
                a.from.clone()?,
                smd.get("dcrp")?.as_u64()?,
                smd.get("dsp")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let rqi = req.rqi.clone();
    let accept = req.accept;
    let sqi = req.sqi;
    // The SPARQL work on a search thread within the discovery budget, as for the implicit scope.
    let deadline = crate::discovery::deadline(cse);
    let (pc, cut) = cse
        .searches
        .run(move || fan_out_result(&queries, &descriptors, sqi, accept, deadline))
        .await?;
    let mut resp = Response::new(Rsc::Ok, rqi, Some(pc));
    if partial || cut {
        resp.cts = Some(m2m_core::primitive::PARTIAL_CONTENT);
    }
    Ok(resp)
}

/// The answer of a semantic fan-out over the members' `descriptors` (member, dcrp, dsp).
fn fan_out_result(
    queries: &[Query],
    descriptors: &[(String, u64, String)],
    sqi: bool,
    accept: Option<m2m_core::serialization::Serialization>,
    deadline: std::time::Instant,
) -> M2mResult<(serde_json::Value, bool)> {
    if sqi {
        let mut graph = Graph::default();
        for (_, dcrp, dsp) in descriptors {
            graph.add_descriptor(*dcrp, dsp);
        }
        let [query] = queries else {
            return Err(M2mError::bad_request(
                "a semantic query has one semanticsFilter",
            ));
        };
        let text = query.results_for(&graph, accept)?;
        return Ok((json!({ "m2m:qres": text }), false));
    }
    let mut found = Vec::new();
    for (member, dcrp, dsp) in descriptors {
        if std::time::Instant::now() > deadline {
            return Ok((m2m_core::serialization::rooted("m2m:uril", found), true));
        }
        let mut graph = Graph::default();
        graph.add_descriptor(*dcrp, dsp);
        for q in queries {
            match q.matches(&graph) {
                Ok(true) => {
                    found.push(member.clone());
                    break;
                }
                Ok(false) => {}
                // Too large for this member's descriptor: no match, as in a discovery.
                Err(e) if e.rsc == Rsc::NotAcceptable => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((m2m_core::serialization::rooted("m2m:uril", found), false))
}
