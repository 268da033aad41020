//! `<AE>` registration (TS-0001 clause 10.2.2.2, TS-0004 clause 7.3.2.7 and 7.4.5): AE-ID assignment
//! from the originator, App-ID check, and refusal of a second registration of the same AE-ID.

use super::service_subscribed_app_rule::rule_of;
use super::Prepared;
use crate::association::Peer;
use crate::cse::Cse;
use crate::store::AeIdHolder;
use m2m_core::{
    AeStem, EntityId, M2mError, M2mResult, Originator, Request, ResourceType, ResponseStatusCode,
    StemKind,
};
use m2m_security::registration_rules::{admitted, AppRule, Registration};
use serde_json::{json, Map, Value};

/// 4106 for a registration the requester's credential may not make; why, in the audit log.
fn not_yours(why: impl std::fmt::Display) -> M2mError {
    tracing::warn!(target: "audit", reason = %why, "AE registration refused");
    M2mError::new(
        ResponseStatusCode::OriginatorNotAuthenticated,
        "this AE-ID cannot be registered with the credential of this security association",
    )
}

/// Decides the AE-ID of a registering AE and whether it may register. Over a security
/// association whose credential is bound to an AE-ID, that AE-ID is the one registered (TS-0003
/// clause 7.2.1); otherwise the registration rules decide, with the association's Credential-ID,
/// and an AE-ID that a credential of this CSE is bound to is registered only over that credential.
pub fn prepare_create(
    cse: &Cse,
    req: &Request,
    attrs: &mut Map<String, Value>,
    peer: &Peer,
) -> M2mResult<Prepared> {
    let api = attrs.get("api").and_then(Value::as_str).unwrap_or("");
    // A lower-case 'r' is the registered form of Releases before 4 (TS-0001 clause 7.1.8).
    let before_release_4 = req
        .rvi
        .as_deref()
        .is_none_or(|v| matches!(v, "1" | "2" | "2a" | "3"));
    if !(api.starts_with('R') || api.starts_with('N') || (api.starts_with('r') && before_release_4))
    {
        return Err(M2mError::bad_request(format!(
            "App-ID '{api}' must start with 'R' (registered) or 'N' (non-registered)"
        )));
    }
    let home = &cse.id.home;
    let association = peer.association.as_deref();
    let bound = association.and_then(|a| a.entity.as_ref());
    // An AE registers with its registrar itself: never with a CSE's credential, nor relayed by one.
    if bound.is_some_and(EntityId::is_cse) {
        return Err(not_yours(format_args!(
            "{} (a CSE's credential) tried to register an AE",
            bound.map(ToString::to_string).unwrap_or_default()
        )));
    }
    let originator = Originator::parse(req.from.as_deref(), home)?;
    let stem: AeStem = match (&originator, bound) {
        // The credential names the AE: it registers as that AE (the impersonation check has
        // already refused any other From).
        (_, Some(ae)) => ae.local_stem(home).cloned().ok_or_else(|| {
            not_yours(format_args!(
                "the credential names {ae}, which cannot register with this CSE"
            ))
        })?,
        (Originator::Unassigned(kind), None) => {
            let letter = kind.unwrap_or(StemKind::Cse).letter();
            AeStem::parse(&format!("{letter}{}", crate::context::random_suffix(12)))?
        }
        (Originator::Entity(e), None) => e.local_stem(home).cloned().ok_or_else(|| {
            M2mError::bad_request(
                "the originator cannot register an AE here: use an AE-ID-Stem (C..., S...) or C/S to have one assigned",
            )
        })?,
    };
    let entity = EntityId::ae_at(home, stem.clone())?;
    let credential = association.map(|a| a.credential.to_string());
    // The admin's AE-ID is the admin's: registered only over a credential bound to it (or by a
    // listener the operator declared trusted), never taken by whoever registers first, over an
    // unbound credential or an anonymous listener alike.
    let trusted_listener =
        association.is_none() && peer.plain == crate::config::PlainTrust::Trusted;
    if bound.is_none() && entity == cse.id.admin && !trusted_listener {
        return Err(not_yours(format_args!(
            "{entity} (the administrator) registering over {}",
            credential.as_deref().unwrap_or_default()
        )));
    }
    if bound.is_none() {
        held_by_another(cse, &stem, &entity, association)?;
        // Squatting: an AE-ID bound to a credential of this CSE belongs to that credential.
        if let Some(owner) = cse.credential_bound_to(&entity) {
            return Err(not_yours(format_args!(
                "{entity} is bound to {owner}, not to {}",
                credential
                    .as_deref()
                    .unwrap_or("a listener without security association")
            )));
        }
        // Likewise an AE-ID the configuration accepts only as a certificate's identity.
        if cse.is_certificate_identity(&entity) {
            return Err(not_yours(format_args!(
                "{entity} is a certificate identity, not {}",
                credential
                    .as_deref()
                    .unwrap_or("a listener without security association")
            )));
        }
        check_rules(cse, api, stem.as_str(), credential.as_deref())?;
    }
    if cse.store.get(stem.as_str())?.is_some() {
        return Err(M2mError::new(
            ResponseStatusCode::OriginatorHasAlreadyRegistered,
            "the AE-ID is already registered",
        ));
    }
    attrs.insert("aei".into(), json!(stem.as_str()));
    // Who may register this AE-ID again once the AE has gone: what proved it now.
    let holder = association.map(|a| {
        let holder = match bound {
            Some(_) => AeIdHolder::Itself,
            None => AeIdHolder::Credential(a.credential.clone()),
        };
        (holder, a.credential.clone())
    });
    Ok(Prepared {
        ri: Some(stem.to_string()),
        holder,
        ..Prepared::default()
    })
}

/// An AE-ID that registered before over a security association stays with what proved it then,
/// after its AE has gone (deregistered or expired), until the administrator deletes the AE: a
/// registration with another credential, or without any, is refused (4106). So what names the
/// AE-ID elsewhere (resources it created, roles, notificationURIs) passes to nobody who could not
/// prove it.
fn held_by_another(
    cse: &Cse,
    stem: &AeStem,
    entity: &EntityId,
    association: Option<&m2m_security::association::Association>,
) -> M2mResult<()> {
    let credential = association.map(|a| &a.credential);
    let refused = match cse.store.read(|r| r.holder_of(stem.as_str()))? {
        None => return Ok(()),
        Some(AeIdHolder::Itself) => "an association bound to it".to_owned(),
        Some(AeIdHolder::Credential(c)) if credential != Some(&c) => format!("credential {c}"),
        Some(AeIdHolder::Credential(_)) => return Ok(()),
    };
    Err(not_yours(format_args!(
        "{entity} registered before with {refused}, not {}",
        credential.map_or_else(
            || "a listener without security association".to_owned(),
            ToString::to_string
        )
    )))
}

/// The registration rules of the configuration and the <serviceSubscribedAppRule> resources: one
/// of them must admit the (Credential-ID, App-ID, AE-ID-Stem) combination.
pub(super) fn check_rules(
    cse: &Cse,
    api: &str,
    aei: &str,
    credential_id: Option<&str>,
) -> M2mResult<()> {
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
    tracing::warn!(target: "audit", app_id = api, ae_id = aei, credential = ?credential_id, "AE registration refused: no registration rule admits it");
    Err(M2mError::new(
        ResponseStatusCode::AppRuleValidationFailed,
        "no registration rule admits this App-ID and AE-ID with this credential",
    ))
}

/// The type's behaviour: the registration checks of [`prepare_create`].
pub struct Ae;

impl super::Behaviour for Ae {
    fn prepare_create<'a>(
        &'a self,
        call: super::Call<'a>,
        parent: &'a crate::store::Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<Prepared>> {
        Box::pin(async move {
            let prepared = super::node::prepare_registration(call, parent, attrs, None, |attrs| {
                prepare_create(call.cse, call.req, attrs, call.peer)
            })
            .await?;
            if let Some(stem) = super::ae_annc::sp_stem(attrs) {
                let api = attrs.get("api").and_then(Value::as_str).unwrap_or("");
                let credential = call.peer.association.as_deref().map(|a| &a.credential);
                super::ae_annc::announce(call.cse, &stem, api, credential).await?;
            }
            Ok(prepared)
        })
    }

    fn own_creator<'a>(&self, attrs: &'a Map<String, Value>) -> Option<&'a str> {
        attrs.get("aei").and_then(Value::as_str)
    }

    /// The MQTT server's ACL names the AEs registered with each credential.
    fn created(&self, cse: &std::sync::Arc<crate::cse::Cse>, _res: &crate::store::Resource) {
        if let Some(acl) = cse.mqtt_acl.get() {
            acl.changed(cse);
        }
    }

    fn deleted(&self, cse: &std::sync::Arc<crate::cse::Cse>, res: &crate::store::Resource) {
        if let Some(acl) = cse.mqtt_acl.get() {
            acl.changed(cse);
        }
        if let Some(stem) = super::ae_annc::sp_stem(&res.attrs) {
            super::ae_annc::deannounce(cse, stem);
        }
        if let Some(e) = res
            .str_attr("aei")
            .and_then(|a| EntityId::parse(a, &cse.id.home).ok())
        {
            cse.websockets.forget(&e);
            // Its secure storage goes with its registration: whoever registers the AE-ID next
            // inherits neither its objects nor the grants naming it.
            crate::secure_storage::owner_gone(cse, &e);
            if let Some(das) = &cse.dynamic_authorization {
                das.forget(&e);
            }
        }
    }

    /// [`Behaviour::deleted`] also when an AE goes with an ancestor (the MQTT ACL).
    fn keeps_state(&self) -> bool {
        true
    }

    fn insert(
        &self,
        cse: &crate::cse::Cse,
        w: &crate::store::Writer<'_>,
        _parent: &crate::store::Resource,
        new: crate::store::Resource,
    ) -> M2mResult<crate::store::Resource> {
        super::node::insert_linked(cse, w, new)
    }

    fn prepare_update<'a>(
        &'a self,
        call: super::Call<'a>,
        _res: &'a crate::store::Resource,
        content: &'a Map<String, Value>,
    ) -> super::Pending<'a, M2mResult<()>> {
        Box::pin(super::node::check_link(call, content, None))
    }

    /// A new nodeLink moves the entity between nodes (`resources::node`).
    fn apply_update(
        &self,
        cse: &crate::cse::Cse,
        w: &crate::store::Writer<'_>,
        res: &mut crate::store::Resource,
        changed: &Map<String, Value>,
        before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        super::node::relink(cse, w, res, changed, before)
    }
}
