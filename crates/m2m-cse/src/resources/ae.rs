//! <AE> registration (TS-0001 clause 10.2.2.2, TS-0004 clause 7.3.2.7 and 7.4.5): AE-ID assignment
//! from the originator, App-ID check, and refusal of a second registration of the same AE-ID.

use super::service_subscribed_app_rule::rule_of;
use super::Prepared;
use crate::association::Peer;
use crate::cse::Cse;
use m2m_core::id::{classify_originator, OriginatorKind};
use m2m_core::{M2mError, M2mResult, Request, ResourceType, ResponseStatusCode};
use m2m_security::registration_rules::{admitted, AppRule, Registration};
use serde_json::{json, Map, Value};

/// Decides the AE-ID of a registering AE and whether it may register. Over a security
/// association whose credential is bound to an AE-ID, that AE-ID is the one registered (TS-0003
/// clause 7.2.1); otherwise the registration rules decide, with the association's Credential-ID.
pub fn prepare_create(
    cse: &Cse,
    req: &Request,
    attrs: &mut Map<String, Value>,
    peer: &Peer,
) -> M2mResult<Prepared> {
    let api = attrs.get("api").and_then(Value::as_str).unwrap_or("");
    if !(api.starts_with('R') || api.starts_with('N') || api.starts_with('r')) {
        return Err(M2mError::bad_request(format!(
            "App-ID '{api}' must start with 'R' (registered) or 'N' (non-registered)"
        )));
    }
    let from = req.from.as_deref().unwrap_or("");
    let association = peer.association.as_deref();
    let bound = association
        .and_then(|a| a.entity.as_deref())
        .filter(|e| !crate::impersonation::is_cse_id(e));
    let aei = match (classify_originator(from), bound) {
        // The credential names the AE: it registers as that AE (the impersonation check has
        // already refused any other From).
        (_, Some(ae_id)) => {
            let stem = ae_id.rsplit('/').next().unwrap_or(ae_id).to_owned();
            // The credential must name an AE of this CSE (or an SP-assigned one).
            if !crate::impersonation::same_entity(cse, &stem, ae_id) {
                return Err(M2mError::new(
                    ResponseStatusCode::OriginatorNotAuthenticated,
                    format!("the credential names AE-ID '{ae_id}', which cannot register with this CSE"),
                ));
            }
            stem
        }
        (OriginatorKind::Unassigned(kind), None) => {
            format!("{}{}", kind.unwrap_or('C'), crate::dispatcher::random_suffix(12))
        }
        (OriginatorKind::AeStem(stem), None) => stem.to_owned(),
        // An SP-relative AE-ID naming this CSE, e.g. /id-in/Cabc, is the same registration.
        (OriginatorKind::SpRelative { cse: c, rest: Some(stem) }, None) if c == cse.id.cse_id.bare() && !stem.contains('/') => {
            stem.to_owned()
        }
        _ => {
            return Err(M2mError::bad_request(format!(
                "originator '{from}' cannot register an AE: use an AE-ID-Stem (C..., S...) or C/S to have one assigned"
            )))
        }
    };
    let credential = association.map(|a| a.credential_id.clone());
    if bound.is_none() {
        check_rules(cse, api, &aei, credential.as_deref())?;
    }
    if cse.store.get(&aei)?.is_some() {
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorHasAlreadyRegistered,
            format!("AE-ID '{aei}' is already registered"),
        ));
    }
    attrs.insert("aei".into(), json!(aei));
    Ok(Prepared {
        ri: Some(aei),
        credential: if bound.is_none() { credential } else { None },
    })
}

/// The registration rules of the configuration and the <serviceSubscribedAppRule> resources: one
/// of them must admit the (Credential-ID, App-ID, AE-ID-Stem) combination.
fn check_rules(cse: &Cse, api: &str, aei: &str, credential_id: Option<&str>) -> M2mResult<()> {
    let stored = cse
        .store
        .read(|r| r.all_of_type(ResourceType::ServiceSubscribedAppRule))?;
    let stored: Vec<AppRule> = stored.iter().map(|r| rule_of(&r.attrs)).collect();
    let reg = Registration {
        credential_id,
        app_id: api,
        ae_id_stem: aei,
    };
    if admitted(cse.cfg.registration.rules.iter().chain(stored.iter()), &reg) {
        return Ok(());
    }
    Err(M2mError::new(
        ResponseStatusCode::AppRuleValidationFailed,
        format!("no registration rule admits App-ID '{api}' with AE-ID '{aei}'"),
    ))
}
