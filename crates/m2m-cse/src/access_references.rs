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
//!
//! The access decision reads references by resourceID only ([`stored`]): one still written as a
//! place, in a store older than this rule, decides nothing. Those stores are pinned once at start
//! ([`pin_stored`]): what each such reference names then is what it keeps naming.

use crate::context::Context;
use crate::resolve::{local_resource, locality, Locality};
use crate::store::Resource;
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
        if !pin_one(cse, s, want) {
            return Err(M2mError::bad_request(format!(
                "{long_name}: '{s}' is not {} of this CSE",
                article(want)
            )));
        }
    }
    Ok(())
}

/// Rewrites `id` to the resourceID of the `want` resource it names here; false when it names none.
fn pin_one(cse: &Context, id: &mut String, want: ResourceType) -> bool {
    match local_resource(cse, id) {
        Some(r) if r.ty == want => {
            *id = r.ri().to_owned();
            true
        }
        _ => false,
    }
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
    for entry in places_in_acor(cse, privileges) {
        if !pin_one(cse, entry, ResourceType::Group) {
            return Err(M2mError::bad_request(format!(
                "accessControlOriginators: '{entry}' names no group of this CSE"
            )));
        }
    }
    Ok(())
}

/// The `acor` entries of one `pv` or `pvs` that name a resource of this CSE by its place.
fn places_in_acor<'v>(cse: &Context, privileges: &'v mut Value) -> Vec<&'v mut String> {
    let Some(Value::Array(rules)) = privileges.get_mut("acr") else {
        return Vec::new();
    };
    rules
        .iter_mut()
        .filter_map(|rule| match rule.get_mut("acor") {
            Some(Value::Array(acor)) => Some(acor),
            _ => None,
        })
        .flatten()
        .filter_map(|entry| match entry {
            Value::String(s) if names_a_place(cse, s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Whether an acor entry addresses a resource of this CSE by where it sits rather than by its
/// resourceID: a path of more than one segment, or one that starts at the CSEBase (its name or
/// `-`). A single segment is a resourceID or an AE-ID-Stem, both fixed for good.
pub(crate) fn names_a_place(cse: &Context, entry: &str) -> bool {
    if entry == "all" || entry.contains('*') {
        return false;
    }
    Address::parse(entry)
        .is_ok_and(|addr| locality(cse, &addr) == Locality::Local && is_place(cse, &addr))
}

/// Whether a local address names a resource by where it sits (see [`names_a_place`]).
pub(crate) fn is_place(cse: &Context, addr: &Address) -> bool {
    let mut segments = addr.segments();
    match (segments.next(), segments.next()) {
        (Some(first), None) => first == cse.id.rn || first == "-",
        (Some(_), Some(_)) => true,
        (None, _) => false,
    }
}

/// A stored reference (`acpi`, `macp`, `daci`, an `acor` group) as the access decision reads
/// it: by resourceID only. One written as a place (before references were pinned, and not
/// pinned at start because it named nothing then) names nothing.
pub fn stored(cse: &Context, id: &str) -> Option<Resource> {
    // Parsed once: this is on the path of every decision that reads a policy.
    let addr = Address::parse(id).ok()?;
    if is_place(cse, &addr) {
        return None;
    }
    crate::resolve::local_resource_at(cse, &addr)
}

/// The store's task of pinning the references written before they were pinned when written.
pub(crate) const PIN_TASK: &str = "pin-access-references";

/// Pins, once, the references of a store written before this rule: each that names a resource
/// of its type now becomes its resourceID; one that names nothing stays and decides nothing
/// ([`stored`]). Run at start, before any listener opens.
pub(crate) async fn pin_stored(cse: &Context) -> M2mResult<()> {
    if !cse.store.read(|r| r.upkeep_pending(PIN_TASK))? {
        return Ok(());
    }
    let mut changed = Vec::new();
    let types = ResourceType::ALL.into_iter().filter(|t| {
        t.has_acpi() || matches!(t, ResourceType::Group | ResourceType::AccessControlPolicy)
    });
    for ty in types {
        for mut res in cse.store.read(|r| r.all_of_type(ty))? {
            if pin_attributes(cse, &mut res.attrs) {
                changed.push(res);
            }
        }
    }
    let pinned = changed.len();
    cse.store
        .write(move |w| {
            for res in &changed {
                w.update(res)?;
            }
            w.upkeep_done(PIN_TASK)
        })
        .await?;
    if pinned > 0 {
        tracing::info!(target: "audit", resources = pinned, "access references written by name pinned to the resourceIDs they name");
    }
    Ok(())
}

/// Pins what names a resource of its type among the stored attributes; whether any changed.
fn pin_attributes(cse: &Context, attrs: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for (attr, want) in [
        ("acpi", ResourceType::AccessControlPolicy),
        ("macp", ResourceType::AccessControlPolicy),
        ("daci", ResourceType::DynamicAuthorizationConsultation),
    ] {
        if let Some(Value::Array(ids)) = attrs.get_mut(attr) {
            for id in ids.iter_mut() {
                if let Value::String(s) = id {
                    changed |= names_a_place(cse, s) && pin_one(cse, s, want);
                }
            }
        }
    }
    for privileges in ["pv", "pvs"] {
        if let Some(pv) = attrs.get_mut(privileges) {
            for entry in places_in_acor(cse, pv) {
                changed |= pin_one(cse, entry, ResourceType::Group);
            }
        }
    }
    changed
}
