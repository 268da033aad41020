//! The access control decision of TS-0003 clause 7.1 (7.1.2 request parameters, 7.1.3 rule format, 7.1.4
//! decision, 7.1.5 reference algorithm), as a pure function: the facts of a request in, a decision and a
//! short reason out. No I/O; the time, the source IP address, the location and group membership are given.
//! Rules limited to some attributes (Release 4 `aca`) grant only an operation that touches no other
//! attribute, and say which attributes the answer may show ([`Decision::attributes`]).
//!
//! ```
//! use m2m_core::{CseId, EntityId, Home, SpId};
//! use m2m_security::access_control::*;
//! use m2m_security::association::Proof;
//! use serde_json::json;
//!
//! let acp = Privileges::from_json(&json!({"acr": [{"acor": ["Cae1"], "acop": 2}]})).unwrap();
//! let home = Home::cse(SpId::parse("m2m.example.com").unwrap(), CseId::parse("/id-in").unwrap());
//! let originator = EntityId::parse("/id-in/Cae1", &home).unwrap();
//! let req = AccessRequest {
//!     originator: &originator,
//!     proof: Proof::Authenticated,
//!     operation: AccessOperation::Retrieve,
//!     ip: None,
//!     time: chrono::Utc::now(),
//!     location: None,
//!     target_type: 3,
//!     child_type: None,
//!     attributes: None,
//!     roles: &[],
//! };
//! let d = decide(&[("acp1", &acp)], &req, &home, &NoGroups);
//! assert!(d.permit, "{}", d.reason);
//! assert_eq!(d.reason, "permitted by rule 1 of acp1");
//! ```
//!
//! The algorithm (clause 7.1.5): permit-overrides across every rule of every given policy;
//! `res_acr = authn AND origs AND ops AND ctxts AND objd`; no policy, no rule, or anything that cannot be
//! determined is Deny (clause 7.1.4).
//! - authn is false only when the rule has `acaf` true and the request is not authenticated (table 7.1.5-1):
//!   rq_authn is [`Proof::Authenticated`].
//! - origs: see [`originator`] for the ID forms, wildcards, SP domains and `<group>` entries. An originator
//!   that is only [`Proof::Claimed`] (no security association proves it) matches `all` and nothing else: an
//!   ID nobody proved cannot earn what is granted to that ID.
//! - ops: the request's operation bit is set in `acop`. Discovery (32) is its own bit, not implied by
//!   Retrieve (2).
//! - ctxts: a rule without `acco` admits any context (clause 7.1.3, "for pairs"); otherwise one `acco` element
//!   must admit the request, each being time AND ip AND location, an absent part admitting everything
//!   (INFERRED: the equations of clause 7.1.5 were lost in conversion). Time: [`window`]. IP: [`ip`]; a
//!   request without a source address (internal) is not admitted by an `acip`. Location: `accr` is a circle
//!   (haversine distance on a sphere of radius 6 371 008.8 m, the border included); a request without a
//!   location is not admitted; `accc` (country codes) cannot be evaluated here and admits nothing.
//! - objd: applies to CREATE only. A rule without `acod` admits any child; otherwise one `acod` element must
//!   admit it: `ty` (when present) equals the target's type AND the child's type is in `chty`. An element with
//!   `spty` cannot be evaluated here (the specialization of the target is not given) and admits nothing. A
//!   CREATE whose child type is unknown is not admitted by an `acod`.
//!
//! Role-IDs (table 7.1.2-1) and Tokens are not part of [`AccessRequest`]; Dynamic and Distributed
//! Authorization (TS-0004 clause 7.3.3.15) happen after a Deny, outside this module.
//!
//! The reason of a decision names policies and rules: it is for the audit log, never for the requester.

pub mod ip;
pub mod originator;
pub mod policy;
pub mod window;

pub use policy::{Context, IpAddresses, ObjectDetail, Privileges, Region, Rule, Window};

use crate::association::Proof;
use chrono::{DateTime, Utc};
use m2m_core::{EntityId, Home};
use originator::EntryMatch;
use std::fmt;

/// The operations of accessControlOperations (TS-0004 table 6.3.4.2.29-1), with their `acop` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessOperation {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
    /// A RETRIEVE with filter criteria `fu=1` (TS-0003 clause 7.1.3).
    Discovery,
}

impl AccessOperation {
    /// The bit of this operation in `acop`: 1, 2, 4, 8, 16, 32.
    pub fn bit(self) -> u32 {
        match self {
            AccessOperation::Create => 1,
            AccessOperation::Retrieve => 2,
            AccessOperation::Update => 4,
            AccessOperation::Delete => 8,
            AccessOperation::Notify => 16,
            AccessOperation::Discovery => 32,
        }
    }

    /// Upper-case name, for reasons.
    pub fn name(self) -> &'static str {
        match self {
            AccessOperation::Create => "CREATE",
            AccessOperation::Retrieve => "RETRIEVE",
            AccessOperation::Update => "UPDATE",
            AccessOperation::Delete => "DELETE",
            AccessOperation::Notify => "NOTIFY",
            AccessOperation::Discovery => "DISCOVERY",
        }
    }
}

impl fmt::Display for AccessOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A position in degrees (rq_loc, TS-0003 table 7.1.2-2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// The facts of one request that the decision needs (TS-0003 tables 7.1.2-1 to 7.1.2-3).
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    /// The From parameter, parsed (already checked against the security association by the caller).
    pub originator: &'a EntityId,
    /// How far the security association proves the originator (rq_authn and below).
    pub proof: Proof,
    pub operation: AccessOperation,
    /// rq_ip, from the socket; `None` for internal requests, which no `acip` admits.
    pub ip: Option<std::net::IpAddr>,
    /// rq_time.
    pub time: DateTime<Utc>,
    /// rq_loc; `None` when there is no location source, and then no `aclr` admits the request.
    pub location: Option<Location>,
    /// The resource type of the target (matched against `acod/ty`).
    pub target_type: u16,
    /// For CREATE: the resource type of the resource to be created (matched against `acod/chty`).
    pub child_type: Option<u16>,
    /// The attributes the operation touches (those a CREATE or UPDATE sets, a partial RETRIEVE
    /// names, a RETRIEVE or DELETE of the whole resource holds), for rules limited to some
    /// attributes (`aca`); `None` when not known, and then no such rule grants.
    pub attributes: Option<&'a [String]>,
    /// The Role-IDs the Hosting CSE found the originator to hold for this request (its `<role>`
    /// resources, a token's roles): an accessControlOriginators entry naming one matches
    /// (TS-0003 clause 7.4.3). Empty for an originator only claimed.
    pub roles: &'a [String],
}

/// The answer of a `<group>` lookup for an accessControlOriginators entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLookup {
    /// The entry is not the resource ID of a `<group>`: it is matched as an ID.
    NotAGroup,
    /// The entry is a `<group>`; these are its memberIDs.
    Members(Vec<String>),
    /// The entry names a `<group>` that cannot be retrieved: the entry matches nothing (TS-0001 clause 9.6.2.1).
    Unavailable,
}

/// Resolves accessControlOriginators entries that may be `<group>` resource IDs (TS-0001 clause 9.6.2.1).
///
/// [`decide`] asks it about every entry that is not `all` and contains no `*` (wildcards are not allowed in
/// group IDs), with the entry exactly as written in the rule, and only for rules whose operations include the
/// request's operation. Members are matched as AE-IDs/CSE-IDs in any form; nested groups are not expanded,
/// so a resolver that supports them returns the flattened member list.
pub trait GroupResolver {
    fn lookup(&self, id: &str) -> GroupLookup;
}

/// A [`GroupResolver`] for which no entry is a group.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroups;

impl GroupResolver for NoGroups {
    fn lookup(&self, _id: &str) -> GroupLookup {
        GroupLookup::NotAGroup
    }
}

/// The access decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub permit: bool,
    /// Short and human readable, e.g. "permitted by rule 2 of acp1".
    pub reason: String,
    /// When only rules limited to some attributes (`aca`) permitted: those attributes, the only
    /// ones the answer may show.
    pub attributes: Option<Vec<String>>,
}

impl Decision {
    fn permit(reason: String) -> Decision {
        Decision {
            permit: true,
            reason,
            attributes: None,
        }
    }

    fn deny(reason: String) -> Decision {
        Decision {
            permit: false,
            reason,
            attributes: None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.permit { "permit" } else { "deny" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// At most this many rule notes go into a deny reason.
const MAX_NOTES: usize = 3;

/// The access decision of TS-0003 clause 7.1.5 over the rules of `policies` (the privileges, or the
/// selfPrivileges when the target is an `<accessControlPolicy>`), each named by its ID for the reason.
pub fn decide(
    policies: &[(&str, &Privileges)],
    req: &AccessRequest,
    home: &Home,
    groups: &dyn GroupResolver,
) -> Decision {
    if policies.is_empty() {
        return Decision::deny("no accessControlPolicy applies to the target".into());
    }
    let mut notes: Vec<String> = Vec::new();
    // The attributes granted by the rules that cover only some (aca), and by which rules.
    let mut granted: Vec<&str> = Vec::new();
    let mut granting: Vec<String> = Vec::new();
    for (acp, privileges) in policies {
        for (i, rule) in privileges.rules.iter().enumerate() {
            match (evaluate_rule(rule, req, home, groups), &rule.attributes) {
                (Ok(()), None) => {
                    return Decision::permit(format!("permitted by rule {} of {acp}", i + 1))
                }
                (Ok(()), Some(names)) => {
                    granted.extend(names.iter().map(String::as_str));
                    granting.push(format!("rule {} of {acp}", i + 1));
                }
                (Err(Some(note)), _) => notes.push(format!("rule {} of {acp}: {note}", i + 1)),
                (Err(None), _) => {}
            }
        }
    }
    if !granting.is_empty() {
        match req.attributes {
            Some(touched) if touched.iter().all(|a| granted.contains(&a.as_str())) => {
                let mut d = Decision::permit(format!(
                    "permitted for its attributes by {}",
                    granting.join(", ")
                ));
                d.attributes = Some(granted.iter().map(|a| (*a).to_owned()).collect());
                return d;
            }
            _ => notes.push(format!(
                "{} cover only the attributes {}",
                granting.join(", "),
                granted.join(", ")
            )),
        }
    }
    let names: Vec<&str> = policies.iter().map(|(id, _)| *id).collect();
    let mut reason = format!(
        "no rule of {} grants {} to {}",
        names.join(", "),
        req.operation,
        req.originator
    );
    if !req.proof.identifies() {
        reason.push_str(" (claimed without a security association: only \"all\" can match)");
    }
    for note in notes.iter().take(MAX_NOTES) {
        reason.push_str("; ");
        reason.push_str(note);
    }
    if notes.len() > MAX_NOTES {
        reason.push_str(&format!("; {} more", notes.len() - MAX_NOTES));
    }
    Decision::deny(reason)
}

/// `Ok` when the rule grants the request. `Err(Some(note))` when it does not although the originator and the
/// operation match (or the rule is defective, or a group could not be retrieved), `Err(None)` otherwise.
fn evaluate_rule(
    rule: &Rule,
    req: &AccessRequest,
    home: &Home,
    groups: &dyn GroupResolver,
) -> Result<(), Option<String>> {
    if let Some(defect) = &rule.defect {
        return Err(Some(format!("not understood ({defect})")));
    }
    // ops
    if rule.operations & req.operation.bit() == 0 {
        return Err(None);
    }
    // origs
    let mut origs = false;
    let mut group_note = None;
    for entry in &rule.originators {
        if !req.proof.identifies() {
            // A bare claim earns only what is granted to everybody.
            if entry == "all" {
                origs = true;
                break;
            }
            continue;
        }
        if req.roles.iter().any(|r| r == entry) {
            origs = true;
            break;
        }
        match originator::entry_matches(entry, req.originator, home, groups) {
            EntryMatch::Yes => {
                origs = true;
                break;
            }
            EntryMatch::No => {}
            EntryMatch::NoBecause(why) => group_note = group_note.or(Some(why)),
        }
    }
    if !origs {
        return Err(group_note);
    }
    // authn (table 7.1.5-1)
    if rule.auth_flag && !req.proof.is_authenticated() {
        return Err(Some("requires an authenticated originator (acaf)".into()));
    }
    // ctxts
    if !rule.contexts.is_empty() {
        let mut first_failure = None;
        let mut admitted = false;
        for ctx in &rule.contexts {
            match evaluate_context(ctx, req) {
                Ok(()) => {
                    admitted = true;
                    break;
                }
                Err(why) => {
                    first_failure.get_or_insert(why);
                }
            }
        }
        if !admitted {
            return Err(Some(
                first_failure.unwrap_or_else(|| "no context admits the request".into()),
            ));
        }
    }
    // objd (CREATE only)
    if req.operation == AccessOperation::Create && !rule.object_details.is_empty() {
        evaluate_object_details(&rule.object_details, req)?;
    }
    Ok(())
}

/// One acco element: time AND ip AND location.
fn evaluate_context(ctx: &Context, req: &AccessRequest) -> Result<(), String> {
    if let Some(defect) = &ctx.defect {
        return Err(format!("context not understood ({defect})"));
    }
    if let Some(windows) = &ctx.windows {
        let inside = windows.iter().any(|w| match &w.schedule {
            Ok(s) => s.matches(&req.time),
            Err(_) => false,
        });
        if !inside {
            return Err(format!(
                "{} is outside accessControlWindow",
                req.time.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
    }
    if let Some(ips) = &ctx.ip {
        let Some(addr) = req.ip else {
            return Err("no source IP address to match accessControlIpAddresses".into());
        };
        let inside = ips.blocks.iter().any(|(_, b)| match b {
            Ok(c) => c.contains(addr),
            Err(_) => false,
        });
        if !inside {
            return Err(format!(
                "{} is not in accessControlIpAddresses",
                ip::canonical(addr)
            ));
        }
    }
    if let Some(region) = &ctx.region {
        match region {
            Region::Invalid(e) => return Err(format!("accessControlLocationRegion: {e}")),
            Region::Countries(_) => {
                return Err("country-code regions cannot be evaluated".into());
            }
            Region::Circle { lat, lon, radius } => {
                let Some(loc) = req.location else {
                    return Err(
                        "no originator location to match accessControlLocationRegion".into(),
                    );
                };
                if !within(loc, *lat, *lon, *radius) {
                    return Err("originator is outside accessControlLocationRegion".into());
                }
            }
        }
    }
    Ok(())
}

fn evaluate_object_details(
    ods: &[ObjectDetail],
    req: &AccessRequest,
) -> Result<(), Option<String>> {
    let Some(child) = req.child_type else {
        return Err(Some(
            "the type of the resource to create is unknown (accessControlObjectDetails)".into(),
        ));
    };
    for od in ods {
        if od.defect.is_some() || od.specialization_type.is_some() {
            continue;
        }
        if od.resource_type.is_some_and(|t| t != req.target_type) {
            continue;
        }
        if od.child_types.contains(&child) {
            return Ok(());
        }
    }
    let spty = ods
        .iter()
        .any(|od| od.defect.is_none() && od.specialization_type.is_some());
    let mut why = format!(
        "accessControlObjectDetails do not allow creating type {child} under type {}",
        req.target_type
    );
    if spty {
        why.push_str(" (specializationType cannot be evaluated)");
    }
    Err(Some(why))
}

/// Mean earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Whether `loc` is within `radius` metres of (`lat`, `lon`): haversine great-circle distance.
fn within(loc: Location, lat: f64, lon: f64, radius: f64) -> bool {
    // NaN is in no range.
    if !((-90.0..=90.0).contains(&loc.lat) && (-180.0..=180.0).contains(&loc.lon)) {
        return false;
    }
    distance_m(loc.lat, loc.lon, lat, lon) <= radius
}

/// Great-circle distance in metres between two points given in degrees.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests;
