//! Target resolution (TS-0001 clause 7.2, TS-0004 clause 7.3.2): which CSE a `To` names, and which
//! resource (or virtual resource: `la`, `ol`, `fopt`, `sfop`, `pcu`, `ntsr`) it is on this CSE.

use crate::context::Context;
use crate::store::Resource;
use m2m_core::{Address, CseId, M2mError, M2mResult, ResourceType, Scope};
use std::sync::Arc;

/// Whether an address is served here or must be forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum Locality {
    Local,
    /// Another CSE; `None` when only another SP was named.
    Remote(Option<CseId>),
}

pub fn locality(cse: &Context, addr: &Address) -> Locality {
    match &addr.scope {
        Scope::CseRelative => Locality::Local,
        Scope::SpRelative(c) if *c == cse.id.cse_id => Locality::Local,
        Scope::SpRelative(c) => Locality::Remote(Some(c.clone())),
        Scope::Absolute(sp, c) if *sp == cse.id.sp_id => {
            if *c == cse.id.cse_id {
                Locality::Local
            } else {
                Locality::Remote(Some(c.clone()))
            }
        }
        Scope::Absolute(..) => Locality::Remote(None),
    }
}

/// What a local address resolves to.
#[derive(Debug)]
pub enum Target {
    Resource(Resource),
    /// `<container>/la`, `<timeSeries>/la`: the container as the cache holds it (an `la` reads
    /// its type and policies, and copying it would cost as much as the answer).
    Latest(Arc<Resource>),
    /// `<container>/ol`, `<timeSeries>/ol`
    Oldest(Arc<Resource>),
    /// `<group>/fopt[/rest]`
    FanOut {
        group: Resource,
        rest: String,
    },
    /// `<pollingChannel>/pcu`
    PollingChannelUri(Resource),
    /// `<group>/sfop` (`<semanticFanOutPoint>`, TS-0004 clause 7.4.35)
    SemanticFanOut(Resource),
    /// `<subscription>/ntsr`, `<crossResourceSubscription>/ntsr` (notificationTargetSelfReference)
    SelfReference(Resource),
}

impl Target {
    /// The resource itself; a virtual resource is refused with OPERATION_NOT_ALLOWED.
    pub fn into_resource(self, what: &str) -> M2mResult<Resource> {
        match self {
            Target::Resource(r) => Ok(r),
            _ => Err(M2mError::not_allowed(format!(
                "{what} is not allowed on a virtual resource"
            ))),
        }
    }
}

fn not_found(path: &str) -> M2mError {
    M2mError::not_found(format!("resource '{path}' does not exist"))
}

/// Resolves a local address to a target.
pub fn resolve(cse: &Context, addr: &Address) -> M2mResult<Target> {
    let segs: Vec<&str> = addr.segments().collect();
    // Structured addresses start with the CSEBase name (or "-"); anything else starts with a resourceID.
    let (base_srn, rest): (String, &[&str]) = match segs.split_first() {
        None => (cse.id.rn.clone(), &[]),
        Some((first, rest)) if *first == cse.id.rn || *first == "-" => (cse.id.rn.clone(), rest),
        Some((ri, rest)) => {
            let res = cse.store.get(ri)?.ok_or_else(|| not_found(ri))?;
            (res.srn, rest)
        }
    };
    let mut srn = base_srn;
    for s in rest {
        srn.push('/');
        srn.push_str(s);
    }
    // The common case: the whole path names a stored resource.
    if let Some(res) = cse.store.get_by_srn(&srn)? {
        return Ok(Target::Resource(res));
    }
    resolve_virtual(cse, &srn)
        .ok_or_else(|| not_found(&addr.path))
        .and_then(|r| r)
}

/// A resource of this CSE by any form of its ID (resourceID or structured, any scope); `None`
/// for another CSE's, a virtual resource, or nothing.
pub fn local_resource(cse: &Context, id: &str) -> Option<Resource> {
    local_resource_at(cse, &Address::parse(id).ok()?)
}

/// [`local_resource`] of an address already parsed.
pub fn local_resource_at(cse: &Context, addr: &Address) -> Option<Resource> {
    if locality(cse, addr) != Locality::Local {
        return None;
    }
    match resolve(cse, addr).ok()? {
        Target::Resource(r) => Some(r),
        _ => None,
    }
}

/// Finds a virtual resource in a structured name that names no stored resource.
fn resolve_virtual(cse: &Context, srn: &str) -> Option<M2mResult<Target>> {
    let segs: Vec<&str> = srn.split('/').collect();
    // `fopt` may be followed by a path applied to every member.
    if let Some(i) = segs.iter().position(|s| *s == "fopt") {
        let parent = segs[..i].join("/");
        let rest = segs[i + 1..].join("/");
        return Some(match cse.store.get_by_srn(&parent) {
            Ok(Some(g)) if g.ty == ResourceType::Group => Ok(Target::FanOut { group: g, rest }),
            Ok(_) => Err(not_found(srn)),
            Err(e) => Err(e),
        });
    }
    let (parent, last) = srn.rsplit_once('/')?;
    if last == "pcu" {
        return Some(match cse.store.get_by_srn(parent) {
            Ok(Some(p)) if p.ty == ResourceType::PollingChannel => Ok(Target::PollingChannelUri(p)),
            Ok(_) => Err(not_found(srn)),
            Err(e) => Err(e),
        });
    }
    if last == "sfop" {
        return Some(match cse.store.get_by_srn(parent) {
            Ok(Some(g)) if g.ty == ResourceType::Group => Ok(Target::SemanticFanOut(g)),
            Ok(_) => Err(not_found(srn)),
            Err(e) => Err(e),
        });
    }
    if last == "ntsr" {
        return Some(match cse.store.get_by_srn(parent) {
            Ok(Some(s))
                if matches!(
                    s.ty,
                    ResourceType::Subscription | ResourceType::CrossResourceSubscription
                ) =>
            {
                Ok(Target::SelfReference(s))
            }
            Ok(_) => Err(not_found(srn)),
            Err(e) => Err(e),
        });
    }
    if last != "la" && last != "ol" {
        return None;
    }
    Some(match cse.store.get_by_srn_shared(parent) {
        Ok(Some(c)) if c.ty.instance_type().is_some() => Ok(if last == "la" {
            Target::Latest(c)
        } else {
            Target::Oldest(c)
        }),
        Ok(_) => Err(not_found(srn)),
        Err(e) => Err(e),
    })
}

/// Whether `id`, in any of its forms, is the address of `res` on this CSE: its resourceID or
/// its structured name (looked at as an address, so that `res` may be deleted already).
pub fn names(cse: &Context, id: &str, res: &Resource) -> bool {
    names_at(cse, id, res.ri(), &res.srn)
}

/// [`names`] for the resource of resourceID `ri` and structured name `srn` (one that is gone).
pub fn names_at(cse: &Context, id: &str, ri: &str, srn: &str) -> bool {
    let Ok(addr) = Address::parse(id) else {
        return false;
    };
    if crate::resolve::locality(cse, &addr) != crate::resolve::Locality::Local {
        return false;
    }
    let path: Vec<&str> = addr.segments().collect();
    match path.as_slice() {
        [only] => *only == ri,
        // `-` stands for the CSEBase's name.
        [base, rest @ ..] => {
            let base = if *base == "-" {
                cse.id.rn.as_str()
            } else {
                base
            };
            std::iter::once(base)
                .chain(rest.iter().copied())
                .eq(srn.split('/'))
        }
        [] => false,
    }
}

/// The parent of `res` as stored now (an UPDATE's checks judge against it); gone: 4004.
pub(crate) fn parent_of(cse: &Context, res: &Resource) -> M2mResult<Resource> {
    cse.store
        .get(res.pi())?
        .ok_or_else(|| m2m_core::M2mError::not_found("the parent resource is gone"))
}
