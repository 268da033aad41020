//! Role-based access control (TS-0003 clause 7.4.3): which of the Role-IDs a request names
//! (`rids`) its originator holds here, this CSE being the Role Repository. A role is held when a
//! `<role>` under the CSEBase has that roleID, names the originator as holder, was issued by the
//! administrator or one of `[security] role_issuers` (the `<role>` type makes sure its creator
//! is its issuer), and is valid now. Held roles then match the accessControlOriginators entries
//! that name them (TS-0003 clause 7.1.3). An originator only claimed holds no role.

use crate::association::Peer;
use crate::context::Context;
use m2m_core::{EntityId, Request, ResourceType};

/// The Role-IDs of `req` its originator holds, as text; every one refused is in the audit log.
pub fn held(cse: &Context, req: &Request, peer: &Peer) -> Vec<String> {
    if req.rids.is_empty() {
        return Vec::new();
    }
    let Some(originator) = peer.originator.as_ref().filter(|_| peer.proof.identifies()) else {
        tracing::info!(target: "audit", roles = req.rids.len(), "roles refused: the originator is only claimed");
        return Vec::new();
    };
    let roles = match cse
        .store
        .read(|r| r.children(cse.base_ri(), Some(ResourceType::Role)))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e.dbg, "roles cannot be read; none is held");
            return Vec::new();
        }
    };
    let now = cse.now();
    let parse = |v: Option<&str>| v.and_then(|s| EntityId::parse(s, &cse.id.home).ok());
    let at = |v: Option<&str>| v.and_then(|s| m2m_core::time::parse(s).ok());
    let mut held = Vec::new();
    for rid in &req.rids {
        let valid = roles.iter().any(|r| {
            r.str_attr("rlid") == Some(rid.as_str())
                && parse(r.str_attr("tkhd")).as_ref() == Some(originator)
                && parse(r.str_attr("tkis")).is_some_and(|i| may_assign(cse, &i, rid.as_str()))
                && at(r.str_attr("tknb")).is_some_and(|nb| nb <= now)
                && at(r.str_attr("tkna")).is_some_and(|na| now < na)
        });
        if valid {
            held.push(rid.as_str().to_owned());
        } else {
            tracing::info!(target: "audit", originator = %originator, role = %rid, "role refused: no valid <role> of a role issuer assigns it to the originator");
        }
    }
    held
}

/// Whether `who` is one of `[security] role_issuers` (the administrator needs no such right).
pub fn is_issuer(cse: &Context, who: &EntityId) -> bool {
    namespace_of(cse, who).is_some()
}

/// The namespace (issuerID) of the roles `who` assigns, when it is a configured role issuer.
fn namespace_of<'c>(cse: &'c Context, who: &EntityId) -> Option<&'c str> {
    cse.cfg
        .security
        .role_issuers
        .iter()
        .find(|r| EntityId::parse(&r.id, &cse.id.home).ok().as_ref() == Some(who))
        .map(|r| r.domain.as_str())
}

/// Whether `issuer` may assign `role`: the administrator any, a role issuer those of its
/// namespace.
fn may_assign(cse: &Context, issuer: &EntityId, role: &str) -> bool {
    *issuer == cse.id.admin
        || namespace_of(cse, issuer)
            .is_some_and(|d| role.rsplit_once('@').map(|(_, i)| i) == Some(d))
}

/// A `<role>` its issuer may not assign is refused at creation (4000).
pub fn check_namespace(cse: &Context, issuer: &EntityId, role: &str) -> m2m_core::M2mResult<()> {
    if may_assign(cse, issuer, role) || *issuer == cse.id.admin {
        return Ok(());
    }
    Err(m2m_core::M2mError::bad_request(
        "attribute 'rlid': not a Role-ID of its issuer's namespace",
    ))
}

/// Checks `[security] role_issuers` at start-up: IDs and namespaces that parse.
pub fn check_config(cfg: &crate::config::Config, home: &m2m_core::Home) -> anyhow::Result<()> {
    for r in &cfg.security.role_issuers {
        EntityId::parse(&r.id, home).map_err(|_| {
            anyhow::anyhow!(
                "security.role_issuers: '{}' is not an AE-ID or CSE-ID",
                r.id
            )
        })?;
        if !m2m_core::RoleId::is(&format!("x@{}", r.domain)) {
            anyhow::bail!(
                "security.role_issuers: '{}' is not a lower-case fully qualified domain name",
                r.domain
            );
        }
    }
    Ok(())
}
