//! The trusted third party (TTP) of seeds/001 clauses 5.6 and 5.7: a registry of E2E credentials in
//! the MAF, where a gateway registers credentials on behalf of a constrained device and an authorized
//! application retrieves them by credential ID.
//!
//! It lives in the MAF because the MAF already authenticates every client by its Km association (or
//! certificate) and keeps secrets encrypted at rest ([`super::store`]).
//!
//! # API (JSON over the MAF's TLS listener; this project's choice)
//!
//! | operation | request | answer |
//! |---|---|---|
//! | register | `POST /maf/e2e-credentials` `{"subjectID", "usage", "jwk"?, "requesterIDs": [..], "expirationTime"?}` | 2001 `{"credentialID", "subjectID", "usage", "registrantID", "requesterIDs", "expirationTime", "jwk"?}` |
//! | retrieve | `GET /maf/e2e-credentials/{credentialID}` (registrant or requester) | 2000 `{"credentialID", "subjectID", "usage", "registrantID", "expirationTime", "jwk", "requesterIDs"?}` |
//! | update | `PUT /maf/e2e-credentials/{credentialID}` `{"requesterIDs"?, "expirationTime"?}` (registrant) | 2004 as register |
//! | de-register | `DELETE /maf/e2e-credentials/{credentialID}` (registrant) | 2002 `{"credentialID"}` |
//!
//! Every answer carries its oneM2M status code in the `X-M2M-RSC` header, with the HTTP status of
//! TS-0009 table 6.3.2-1; a refusal's body is `{"rsc", "error": "short reason"}` and never holds key
//! material.
//!
//! - `usage`: `esprim` (E2E message authentication, clause 5.6), `esdata-integrity` or
//!   `esdata-confidentiality` (clause 5.7).
//! - `jwk`: checked by [`super::jwk`] (`oct`, or an EC P-256 public key for the integrity usages; a
//!   private `d` is refused). Without `jwk` the TTP generates a 256-bit `oct` key and returns it to
//!   the registrant in the 2001 answer (clause 5.6 step 5: "the M2M Gateway may request for
//!   appropriate credentials from the TTP").
//! - `credentialID` = `hex(16 random bytes)@MAF-FQDN`, always assigned by the TTP: 128 random bits and
//!   the TTP's FQDN make it globally unique, and a client-proposed ID would let a client probe for
//!   other clients' IDs by the conflict answer. The path takes it with or without `@MAF-FQDN`.
//! - `subjectID` and `requesterIDs`: AE-IDs/CSE-IDs, SP-relative or absolute, answered in absolute
//!   form; `requesterIDs` must not be empty.
//! - `expirationTime`: default `[ttp] default_lifetime`, at most `[ttp] max_lifetime` from now, and
//!   never past the registrant's MAF Client Registration it was registered under (nor the
//!   enrolment of a remote-provisioned Km the association was opened with).
//!
//! # Lifetime
//!
//! A credential belongs to the registrant's client registration it was registered under (the one
//! valid at that time that expires last): de-registering that client deletes it at once, shortening
//! that registration shortens it, and once the registration has expired the credential is gone for
//! every requester (4004, as for an unknown ID) and the sweep deletes it.
//!
//! # Authorization
//!
//! - Registration needs a valid MAF Client Registration of the requester, and the subject must be the
//!   requester itself or match a `[[ttp.delegations]]` entry of the requester: 4103 otherwise.
//! - Retrieval: the registrant and the requesters only (an authenticated association suffices, no
//!   Client Registration, as for Key Retrieval). Anyone else gets 4004, exactly as for an
//!   unknown or expired ID: a client that may not have a credential cannot learn whether an ID
//!   (e.g. a `kid` it saw in a message) is registered or still valid.
//! - Update and de-registration: the registrant only; a requester (who knows the credential anyway)
//!   gets 4103, anyone else 4004.
//! - Every registration, retrieval, update, de-registration and refusal is one `audit` log line with
//!   IDs and the reason, never the key.

use super::absolute_id;
use super::jwk::Jwk;
use super::server::{self, internal, lifetime, parse_json, Answer, Conn, Refused, State};
use super::store::{ClientReg, Store};
use http::Method;
use m2m_core::ResponseStatusCode as Rsc;
use m2m_core::{EntityId, Home, SpId};
use m2m_security::access_control::originator::{Entry, Pattern};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

/// What a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialUsage {
    /// E2E security of primitives: message authentication (and encryption) between end points.
    Esprim,
    /// E2E integrity of data at rest (JWS).
    EsdataIntegrity,
    /// E2E confidentiality of data at rest (JWE).
    EsdataConfidentiality,
}

impl CredentialUsage {
    pub fn parse(s: &str) -> Option<CredentialUsage> {
        Some(match s {
            "esprim" => Self::Esprim,
            "esdata-integrity" => Self::EsdataIntegrity,
            "esdata-confidentiality" => Self::EsdataConfidentiality,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Esprim => "esprim",
            Self::EsdataIntegrity => "esdata-integrity",
            Self::EsdataConfidentiality => "esdata-confidentiality",
        }
    }
}

/// A credential registration (its JWK is stored apart, encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialReg {
    /// The relative credential ID: 32 lower-case hex digits.
    pub id: String,
    /// The MAF client that registered it (absolute AE-ID/CSE-ID).
    pub registrant: String,
    /// The device it was registered for (absolute AE-ID/CSE-ID).
    pub subject: String,
    pub usage: CredentialUsage,
    /// Who may retrieve it besides the registrant (absolute AE-IDs/CSE-IDs).
    pub requesters: Vec<String>,
    pub expires: i64,
    /// The registrant's client registration (`mafClientRegID`) it was registered under; `None`
    /// only for a row of an earlier MAF no registration was found for, which is gone.
    pub client_reg: Option<String>,
}

/// The configured delegations, parsed: which delegate may register for which subjects.
#[derive(Debug, Clone)]
pub struct Delegations {
    home: Home,
    rows: Vec<(EntityId, Vec<Pattern>)>,
}

impl Delegations {
    /// Normalises `[[ttp.delegations]]`; an entry that names no AE-ID/CSE-ID (pattern) is an error.
    pub fn from_config(
        rows: &[super::config::Delegation],
        sp_fqdn: &str,
    ) -> Result<Delegations, String> {
        let home = Home::sp(SpId::parse(sp_fqdn).map_err(|e| format!("sp_fqdn: {}", e.dbg))?);
        let mut out = Vec::new();
        for row in rows {
            let delegate = super::entity_id(&row.delegate, sp_fqdn)
                .ok_or_else(|| format!("delegate '{}' is no AE-ID/CSE-ID", row.delegate))?;
            let subjects = row
                .subjects
                .iter()
                .map(|s| subject_pattern(s, &home))
                .collect::<Result<Vec<_>, _>>()?;
            if subjects.is_empty() {
                return Err(format!("delegate '{}' has no subjects", row.delegate));
            }
            out.push((delegate, subjects));
        }
        Ok(Delegations { home, rows: out })
    }

    /// Whether `client` may register credentials for `subject` (both IDs in any SP-relative or
    /// absolute form; compared as identities).
    pub fn allows(&self, client: &str, subject: &str) -> bool {
        let (Ok(client), Ok(subject)) = (
            EntityId::parse(client, &self.home),
            EntityId::parse(subject, &self.home),
        ) else {
            return false;
        };
        if client == subject {
            return true;
        }
        self.rows
            .iter()
            .filter(|(delegate, _)| *delegate == client)
            .flat_map(|(_, subjects)| subjects)
            .any(|p| p.matches(&subject))
    }
}

/// A subject pattern (an AE-ID/CSE-ID, `*` allowed inside a segment, the SP-ID written out).
/// `all` and SP domains are refused: a delegation names devices, not a whole provider.
fn subject_pattern(s: &str, home: &Home) -> Result<Pattern, String> {
    let bad = || format!("subject '{s}' is no AE-ID/CSE-ID (pattern)");
    if !s.starts_with('/') {
        return Err(bad());
    }
    match Entry::parse(s, home) {
        Entry::Pattern(p) if !p.segments[0].contains('*') => Ok(p),
        _ => Err(bad()),
    }
}

/// `hex` or `hex@MAF-FQDN` → `hex`; anything else names no credential of this TTP.
pub(super) fn relative_id<'a>(id: &'a str, fqdn: &str) -> Option<&'a str> {
    let rel = match id.split_once('@') {
        Some((rel, f)) if f.eq_ignore_ascii_case(fqdn) => rel,
        Some(_) => return None,
        None => id,
    };
    (rel.len() == 32
        && rel
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(rel)
}

fn rsc_answer(rsc: Rsc, body: Value) -> Answer {
    let mut a = server::answer(
        http::StatusCode::from_u16(rsc.http_status()).unwrap_or(http::StatusCode::OK),
        body,
    );
    a.headers_mut()
        .insert("X-M2M-RSC", http::HeaderValue::from(rsc.code()));
    a
}

pub(super) fn refused(rsc: Rsc, reason: &str) -> Answer {
    rsc_answer(rsc, json!({ "rsc": rsc.code(), "error": reason }))
}

/// Routes `/maf/e2e-credentials[/{id}]`.
pub(super) fn handle(
    state: &State,
    conn: &Conn,
    method: &Method,
    rest: &[&str],
    body: &[u8],
) -> Answer {
    match (method, rest) {
        (&Method::POST, []) => register(state, conn, body),
        (&Method::GET, [id]) => retrieve(state, conn, id),
        (&Method::PUT, [id]) => update(state, conn, id, body),
        (&Method::DELETE, [id]) => deregister(state, conn, id),
        (_, [] | [_]) => refused(Rsc::OperationNotAllowed, "method not allowed"),
        _ => refused(Rsc::NotFound, "no such resource"),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterRequest {
    #[serde(rename = "subjectID")]
    subject_id: Option<String>,
    usage: Option<String>,
    jwk: Option<Value>,
    #[serde(rename = "requesterIDs")]
    requester_ids: Option<Vec<String>>,
    expiration_time: Option<String>,
}

fn credential_json(state: &State, reg: &CredentialReg, with_requesters: bool) -> Value {
    let mut v = json!({
        "credentialID": format!("{}@{}", reg.id, state.cfg.fqdn),
        "subjectID": reg.subject,
        "usage": reg.usage.as_str(),
        "registrantID": reg.registrant,
        "expirationTime": server::format_time(reg.expires),
    });
    if with_requesters {
        v["requesterIDs"] = json!(reg.requesters);
    }
    v
}

fn requesters(state: &State, ids: &[String]) -> Result<Vec<String>, &'static str> {
    if ids.is_empty() {
        return Err("requesterIDs is empty");
    }
    let mut out = Vec::new();
    for id in ids {
        let abs = absolute_id(id, &state.cfg.sp_fqdn)
            .ok_or("requesterIDs must be SP-relative or absolute AE-IDs/CSE-IDs")?;
        if !out.contains(&abs) {
            out.push(abs);
        }
    }
    Ok(out)
}

/// The requester may register for `subject`: a registered MAF client, delegated for it. Returns
/// the client registration the credential is registered under.
fn may_register(
    state: &State,
    store: &Store,
    conn: &Conn,
    subject: &str,
    now: i64,
) -> Result<ClientReg, Refused> {
    let refuse = |why: &str| {
        tracing::warn!(target: "audit", peer = %conn.peer, registrant = %conn.identity, subject, reason = why, "TTP credential registration refused");
        Box::new(refused(Rsc::OriginatorHasNoPrivilege, why))
    };
    let client = match store.live_client(&conn.identity, now) {
        Err(e) => return Err(Box::new(internal(e))),
        Ok(None) => return Err(refuse("not a registered MAF client")),
        Ok(Some(c)) => c,
    };
    if !state.delegations.allows(&conn.identity, subject) {
        return Err(refuse(
            "not delegated to register credentials for this subject",
        ));
    }
    Ok(client)
}

fn register(state: &State, conn: &Conn, body: &[u8]) -> Answer {
    let bad = |why: &str| {
        tracing::warn!(target: "audit", peer = %conn.peer, registrant = %conn.identity, reason = why, "TTP credential registration refused");
        refused(Rsc::BadRequest, why)
    };
    let req: RegisterRequest = match parse_json(body) {
        Ok(r) => r,
        Err(why) => return bad(why),
    };
    let Some(subject) = req.subject_id.as_deref() else {
        return bad("subjectID is missing");
    };
    let Some(subject) = absolute_id(subject, &state.cfg.sp_fqdn) else {
        return bad("subjectID must be an SP-relative or absolute AE-ID/CSE-ID");
    };
    // Expired credentials are left to the sweep: every read filters on expiry.
    let now = (state.clock)();
    if let Err(a) = may_register(state, &state.store(), conn, &subject, now) {
        return *a;
    }
    let Some(usage) = req.usage.as_deref().and_then(CredentialUsage::parse) else {
        return bad("usage must be esprim, esdata-integrity or esdata-confidentiality");
    };
    let requesters = match requesters(state, req.requester_ids.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(why) => return bad(why),
    };
    let ttp = &state.cfg.ttp;
    let expires = match lifetime(
        now,
        req.expiration_time.as_deref(),
        ttp.default_lifetime,
        ttp.max_lifetime,
    ) {
        Ok(t) => t,
        Err(why) => return bad(why),
    };
    let (jwk, generated) = match &req.jwk {
        Some(v) => match Jwk::from_value(v, usage) {
            Ok(j) => (j, false),
            Err(why) => return bad(why),
        },
        None => (Jwk::generate_oct(), true),
    };
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let store = state.store();
    // Checked again under the lock that adds the credential: a de-registration in between leaves
    // no orphan.
    let client = match may_register(state, &store, conn, &subject, now) {
        Ok(c) => c,
        Err(a) => return *a,
    };
    let reg = CredentialReg {
        id: hex::encode(id),
        registrant: conn.identity.clone(),
        subject,
        usage,
        requesters,
        expires: conn.cap(expires.min(client.expires)),
        client_reg: Some(client.reg_id),
    };
    match store.add_credential(&reg, &jwk) {
        Err(e) => return internal(e),
        Ok(false) => return internal("credential ID collision".into()),
        Ok(true) => {}
    }
    tracing::info!(target: "audit", peer = %conn.peer, registrant = %reg.registrant, credential = %reg.id, subject = %reg.subject,
        usage = reg.usage.as_str(), kty = ?jwk.kty(), generated, requesters = %reg.requesters.join(","), "TTP credential registered");
    let mut v = credential_json(state, &reg, true);
    if generated {
        v["jwk"] = jwk.to_value();
    }
    rsc_answer(Rsc::Created, v)
}

/// A live credential and the client registration it belongs to.
struct Live {
    reg: CredentialReg,
    client: ClientReg,
}

/// The live registration of `id` with its client registration, checked now; `None` for unknown,
/// malformed, expired, or whose client registration has expired or is gone (then purged).
fn live(state: &State, store: &Store, id: &str) -> Result<Option<Live>, String> {
    let Some(rel) = relative_id(id, &state.cfg.fqdn) else {
        return Ok(None);
    };
    let Some(reg) = store.credential(rel)? else {
        return Ok(None);
    };
    let now = (state.clock)();
    let client = match &reg.client_reg {
        Some(c) => store.client(c)?,
        None => None,
    };
    let why = match client {
        _ if reg.expires <= now => "TTP credential expired and purged",
        Some(client) if client.expires > now && client.client_id == reg.registrant => {
            return Ok(Some(Live { reg, client }))
        }
        _ => "TTP credential purged: its registrant's client registration has ended",
    };
    store.delete_credential(rel)?;
    tracing::info!(target: "audit", credential = %rel, "{why}");
    Ok(None)
}

/// The same answer for unknown, expired and not-for-you IDs (see the module documentation).
fn not_found() -> Answer {
    refused(Rsc::NotFound, "no such credential")
}

fn retrieve(state: &State, conn: &Conn, id: &str) -> Answer {
    let store = state.store();
    let reg = match live(state, &store, id) {
        Err(e) => return internal(e),
        // Answered with an expiry never past the client registration's.
        Ok(Some(live)) => CredentialReg {
            expires: live.reg.expires.min(live.client.expires),
            ..live.reg
        },
        Ok(None) => {
            tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, credential = %id, reason = "unknown or expired", "TTP credential retrieval refused");
            return not_found();
        }
    };
    let registrant = reg.registrant == conn.identity;
    if !registrant && !reg.requesters.contains(&conn.identity) {
        tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, credential = %reg.id, registrant = %reg.registrant, reason = "not an authorized requester", "TTP credential retrieval refused");
        return not_found();
    }
    let jwk = match store.credential_jwk(&reg) {
        Ok(Some(j)) => j,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    tracing::info!(target: "audit", peer = %conn.peer, requester = %conn.identity, credential = %reg.id, subject = %reg.subject, usage = reg.usage.as_str(), "TTP credential retrieval granted");
    let mut v = credential_json(state, &reg, registrant);
    v["jwk"] = jwk.to_value();
    rsc_answer(Rsc::Ok, v)
}

/// The live registration of `id` if the requester registered it; the refusal otherwise.
fn own(state: &State, store: &Store, conn: &Conn, id: &str, what: &str) -> Result<Live, Refused> {
    let refuse = |reason: &str| {
        tracing::warn!(target: "audit", peer = %conn.peer, requester = %conn.identity, credential = %id, reason, "TTP credential {what} refused");
    };
    let refusal = match live(state, store, id) {
        Err(e) => internal(e),
        Ok(Some(live)) if live.reg.registrant == conn.identity => return Ok(live),
        Ok(Some(live)) if live.reg.requesters.contains(&conn.identity) => {
            refuse("a requester, not the registrant");
            refused(
                Rsc::OriginatorHasNoPrivilege,
                "only the registrant may change this credential",
            )
        }
        Ok(Some(_)) => {
            refuse("not the registrant");
            not_found()
        }
        Ok(None) => {
            refuse("unknown or expired");
            not_found()
        }
    };
    Err(Box::new(refusal))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateRequest {
    #[serde(rename = "requesterIDs")]
    requester_ids: Option<Vec<String>>,
    expiration_time: Option<String>,
}

fn update(state: &State, conn: &Conn, id: &str, body: &[u8]) -> Answer {
    let req: UpdateRequest = match parse_json(body) {
        Ok(r) => r,
        Err(why) => return refused(Rsc::BadRequest, why),
    };
    let store = state.store();
    let (old, client) = match own(state, &store, conn, id, "update") {
        Ok(live) => (live.reg, live.client),
        Err(a) => return *a,
    };
    let mut reg = old.clone();
    if let Some(ids) = &req.requester_ids {
        reg.requesters = match requesters(state, ids) {
            Ok(r) => r,
            Err(why) => return refused(Rsc::BadRequest, why),
        };
    }
    if let Some(t) = &req.expiration_time {
        let ttp = &state.cfg.ttp;
        reg.expires = match lifetime(
            (state.clock)(),
            Some(t),
            ttp.default_lifetime,
            ttp.max_lifetime,
        ) {
            // Never past the registrant's client registration, nor this association's credential.
            Ok(t) => conn.cap(t.min(client.expires)),
            Err(why) => return refused(Rsc::BadRequest, why),
        };
    }
    // The JWK is sealed to its registration: opened under the old one, sealed under the new.
    let jwk = match store.credential_jwk(&old) {
        Ok(Some(j)) => j,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    if let Err(e) = store.update_credential(&reg, &jwk) {
        return internal(e);
    }
    tracing::info!(target: "audit", peer = %conn.peer, registrant = %conn.identity, credential = %reg.id,
        requesters = %reg.requesters.join(","), "TTP credential updated");
    rsc_answer(Rsc::Updated, credential_json(state, &reg, true))
}

fn deregister(state: &State, conn: &Conn, id: &str) -> Answer {
    let store = state.store();
    let reg = match own(state, &store, conn, id, "de-registration") {
        Ok(live) => live.reg,
        Err(a) => return *a,
    };
    if let Err(e) = store.delete_credential(&reg.id) {
        return internal(e);
    }
    tracing::info!(target: "audit", peer = %conn.peer, registrant = %conn.identity, credential = %reg.id, "TTP credential de-registered");
    rsc_answer(
        Rsc::Deleted,
        json!({ "credentialID": format!("{}@{}", reg.id, state.cfg.fqdn) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maf::config::Delegation;

    const SP: &str = "m2m.example.com";

    #[test]
    fn delegations_match_subjects_per_segment() {
        let d = Delegations::from_config(
            &[Delegation {
                delegate: "/mn-cse-123456".into(),
                subjects: vec![
                    "/mn-cse-123456/C*".into(),
                    "//M2M.example.com/Smeter".into(),
                ],
            }],
            SP,
        )
        .unwrap();
        let gw = "//m2m.example.com/mn-cse-123456";
        assert!(d.allows(gw, "//m2m.example.com/mn-cse-123456/Csensor1"));
        assert!(d.allows(gw, "//m2m.example.com/Smeter"));
        assert!(d.allows(gw, gw), "a client registers for itself");
        assert!(!d.allows(gw, "//m2m.example.com/mn-cse-999/Csensor1"));
        assert!(!d.allows(gw, "//m2m.example.com/mn-cse-1234567/Csensor1"));
        assert!(!d.allows(gw, "//m2m.example.com/mn-cse-123456/Ssensor1"));
        assert!(!d.allows(gw, "//other.example.com/mn-cse-123456/Csensor1"));
        let other = "//m2m.example.com/mn-cse-999";
        assert!(!d.allows(other, "//m2m.example.com/mn-cse-123456/Csensor1"));
    }

    #[test]
    fn delegations_refuse_whole_providers_and_non_ids() {
        for bad in [
            "all",
            "//m2m.example.com",
            "m2m.example.com",
            "Csensor",
            "//*/x",
            "",
        ] {
            let r = Delegations::from_config(
                &[Delegation {
                    delegate: "/mn".into(),
                    subjects: vec![bad.into()],
                }],
                SP,
            );
            assert!(r.is_err(), "{bad}");
        }
        let r = Delegations::from_config(
            &[Delegation {
                delegate: "mn".into(),
                subjects: vec!["/mn/C*".into()],
            }],
            SP,
        );
        assert!(r.is_err());
    }

    #[test]
    fn credential_ids_name_this_ttp_only() {
        let hex = "0123456789abcdef0123456789abcdef";
        let f = "maf.keys.example.net";
        assert_eq!(relative_id(hex, f), Some(hex));
        assert_eq!(
            relative_id(&format!("{hex}@MAF.keys.example.net"), f),
            Some(hex)
        );
        assert_eq!(relative_id(&format!("{hex}@other.example.net"), f), None);
        assert_eq!(relative_id(&hex.to_uppercase(), f), None);
        assert_eq!(relative_id("../etc", f), None);
    }
}
