//! References that decide access, pinned to the resource they name when they are written
//! (TS-0001 clause 9.6.1.3 accessControlPolicyIDs and dynamicAuthorizationConsultationIDs,
//! clause 9.6.13 membersAccessControlPolicyIDs, clause 9.6.2.1 a `<group>` in
//! accessControlOriginators).
//!
//! The TS lets each of these name its resource in any ID form, structured names included. A
//! structured name is a place, not a resource: read at decision time, it would name whatever was
//! made there last, so that an ACP that expired (or a group that was deleted) and was made again
//! under its name by whoever may create there would decide for every resource that named it.
//! Each such reference is therefore checked when written (it must name a resource of the right
//! type on this CSE: 4000 otherwise) and stored as that resource's resourceID, which no later
//! resource takes. A reference to another CSE's resource is refused (`acpi`, `macp`, `daci`) or
//! never matches (`acor`), as before.

use crate::context::Context;
use crate::resolve::{local_resource, locality, Locality};
use m2m_core::{Address, EntityId, M2mError, M2mResult, ResourceType};
use serde_json::{Map, Value};

/// Checks the access attributes of a CREATE or UPDATE and pins their references: `acpi` and
/// `macp` must name `<accessControlPolicy>` resources hosted here (anything else would leave the
/// resource reachable by the admin only), `daci` `<dynamicAuthorizationConsultation>` resources
/// hosted here, an `acor` entry naming a resource by its place a `<group>` hosted here; each is
/// rewritten to the resourceID it named. A custodian must be an AE or a CSE.
pub fn pin(cse: &Context, ty: ResourceType, content: &mut Map<String, Value>) -> M2mResult<()> {
    if let Some(cstn) = content.get("cstn").and_then(Value::as_str) {
        EntityId::parse(cstn, &cse.id.home)
            .map_err(|_| M2mError::bad_request("custodian: expected an AE-ID or a CSE-ID"))?;
    }
    let acp = ResourceType::AccessControlPolicy;
    pin_list(cse, content, "acpi", acp, "accessControlPolicyIDs")?;
    pin_list(cse, content, "macp", acp, "membersAccessControlPolicyIDs")?;
    pin_list(
        cse,
        content,
        "daci",
        ResourceType::DynamicAuthorizationConsultation,
        "dynamicAuthorizationConsultationIDs",
    )?;
    if ty == acp {
        for privileges in ["pv", "pvs"] {
            if let Some(pv) = content.get_mut(privileges) {
                pin_originators(cse, pv)?;
            }
        }
    }
    Ok(())
}

/// Rewrites each entry of the list attribute `attr` to the resourceID of the `want` resource it
/// names here. Anything but a list of strings is left to the schema check.
fn pin_list(
    cse: &Context,
    content: &mut Map<String, Value>,
    attr: &str,
    want: ResourceType,
    long_name: &str,
) -> M2mResult<()> {
    let Some(Value::Array(ids)) = content.get_mut(attr) else {
        return Ok(());
    };
    for id in ids.iter_mut() {
        let Value::String(s) = id else { continue };
        match local_resource(cse, s) {
            Some(r) if r.ty == want => *s = r.ri().to_owned(),
            _ => {
                return Err(M2mError::bad_request(format!(
                    "{long_name}: '{s}' is not {} of this CSE",
                    article(want)
                )))
            }
        }
    }
    Ok(())
}

fn article(ty: ResourceType) -> &'static str {
    match ty {
        ResourceType::AccessControlPolicy => "an accessControlPolicy",
        ResourceType::DynamicAuthorizationConsultation => "a dynamicAuthorizationConsultation",
        _ => "a resource of the right type",
    }
}

/// Pins the `acor` entries of one `pv` or `pvs` (`{"acr": [{"acor": [...]}, ...]}`) that name a
/// resource of this CSE by its place (a structured name, or a path below a resourceID): such an
/// entry must name a `<group>` here and becomes its resourceID. AE-IDs, CSE-IDs, patterns,
/// domains and `all` are originators, not places, and stay as written.
fn pin_originators(cse: &Context, privileges: &mut Value) -> M2mResult<()> {
    let Some(Value::Array(rules)) = privileges.get_mut("acr") else {
        return Ok(());
    };
    for rule in rules {
        let Some(Value::Array(acor)) = rule.get_mut("acor") else {
            continue;
        };
        for entry in acor {
            let Value::String(s) = entry else { continue };
            if !names_a_place(cse, s) {
                continue;
            }
            match local_resource(cse, s) {
                Some(g) if g.ty == ResourceType::Group => *s = g.ri().to_owned(),
                _ => {
                    return Err(M2mError::bad_request(format!(
                        "accessControlOriginators: '{s}' names no group of this CSE"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Whether an acor entry addresses a resource of this CSE by where it sits rather than by its
/// resourceID: a path of more than one segment, or one that starts at the CSEBase (its name or
/// `-`). A single segment is a resourceID or an AE-ID-Stem, both fixed for good.
fn names_a_place(cse: &Context, entry: &str) -> bool {
    if entry == "all" || entry.contains('*') {
        return false;
    }
    let Ok(addr) = Address::parse(entry) else {
        return false;
    };
    if locality(cse, &addr) != Locality::Local {
        return false;
    }
    let mut segments = addr.segments();
    match (segments.next(), segments.next()) {
        (Some(first), None) => first == cse.id.rn || first == "-",
        (Some(_), Some(_)) => true,
        (None, _) => false,
    }
}
