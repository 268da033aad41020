//! `<mgmtObj>` (TS-0004 clause 7.4.15 and Annex D; TS-0001 clause 9.6.15 and Annex D): device
//! management resources under a `<node>`, each a specialization of m2m-core `mgmt_obj`
//! (firmware, software, memory, areaNwkInfo, areaNwkDeviceInfo, battery, deviceInfo,
//! deviceCapability, reboot, eventLog), represented under its own name (`m2m:fwr`...).
//!
//! Service layer management (clause 7.4.15.2.1): the managed entity itself reads these
//! resources and acts on an executable attribute set to true, typically through a subscription.
//! The CSE checks the specialization's attributes, keeps the executable attributes the TS says
//! are always true at true (Annex D: enable/disable, reboot/factoryReset, logStart/logStop),
//! refuses both of a pair at once (4000), and marks the action's status In_Process when one is
//! asked (firmware `ud`, software `in`/`un`/`act`/`dea`) unless the request sets the status.
//!
//! Device configuration (TS-0022: dataCollection, myCertFileCred, wificlient, credentials, SIM,
//! mobileNetwork, and the security ones of TS-0003 clause 8.3.9.9: registration,
//! authenticationProfile, trustAnchorCred, MAFClientRegCfg, MEFClientRegCfg, under `dcfg:`
//! names; the security ones only the administrator writes): their rules between attributes hold for the resource as
//! stored (a dataCollection's measurement schedule or interval, not both; a WiFi credential of
//! its encryption type), and a secret (a WiFi password or key, a credential's secret or token, a
//! certificate file with its private key) is accepted only as a JWE protected for the device
//! (TS-0003 clause 8.5): the CSE never holds it in the clear, so no RETRIEVE, notification or
//! discovery can show it (4000 otherwise).

use super::{Behaviour, Call, Pending, Prepared};
use crate::cse::Cse;
use crate::store::{Resource, Writer};
use m2m_core::mgmt_obj::{by_root, MgmtSpec};
use m2m_core::EntityId;
use m2m_core::{M2mError, M2mResult, Request};
use serde_json::{json, Map, Value};

pub struct MgmtObj;

/// The executable attributes whose action has a status attribute (TS-0004 D.2, D.3).
const STATUS_OF: &[(&str, &str)] = &[
    ("ud", "uds"),
    ("in", "ins"),
    ("un", "ins"),
    ("act", "acts"),
    ("dea", "acts"),
];

/// m2m:status In_Process (TS-0004 table 6.3.4.2.20-1).
const IN_PROCESS: u64 = 3;

/// A credentials object whose purpose is a Kpsa ([`crate::credential_rotation`]) is the
/// administrator's: only it creates one, or changes its `pur`, `crid` or `crse` (4103 for anyone
/// else, the device included: whoever could would choose the device's next key). A new `crid` is
/// a rotation: `crse` must be a JWE whose protected header names (`sub`) the one AE the object's
/// `<node>` hosts, so that a changed `hael` cannot bind the key to another entity.
fn kpsa_rotation(
    call: Call<'_>,
    res: Option<&Resource>,
    content: &Map<String, Value>,
    merged: &Map<String, Value>,
) -> M2mResult<()> {
    use crate::credential_rotation::PURPOSE;
    let credentials =
        |m: &Map<String, Value>| m.get("pur").and_then(Value::as_str) == Some(PURPOSE);
    let was_kpsa = res.is_some_and(|r| credentials(&r.attrs));
    let is_kpsa = credentials(merged);
    if !(was_kpsa || is_kpsa)
        || !["pur", "crid", "crse"]
            .iter()
            .any(|a| content.contains_key(*a))
    {
        return Ok(());
    }
    let cse = call.cse;
    if !call.peer.is_admin(cse) {
        return Err(M2mError::new(
            m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
            "credentials: only the administrator changes a Kpsa's credentials object",
        ));
    }
    let Some(res) = res else {
        // The object as first made names the current KpsaID: nothing to rotate yet.
        return Ok(());
    };
    let crid = content.get("crid").and_then(Value::as_str);
    let (Some(crid), true) = (crid, is_kpsa) else {
        return Ok(());
    };
    if res.attrs.get("crid").and_then(Value::as_str) == Some(crid) {
        return Ok(());
    }
    let Some(rotation) = &cse.rotation else {
        return Err(M2mError::bad_request(
            "credentials: remote Kpsa rotation is not configured on this CSE",
        ));
    };
    let crse = content
        .get("crse")
        .and_then(Value::as_str)
        .filter(|c| m2m_core::mgmt_obj::is_jwe(c))
        .ok_or_else(|| {
            M2mError::bad_request(
                "credentials: a new KpsaID needs crse, the new Kpsa as a JWE for the device",
            )
        })?;
    let kpsa_id = m2m_security::credentials::KpsaId::parse(crid)
        .map_err(|e| M2mError::bad_request(format!("credentials: crid: {e}")))?;
    let entity = hosted_ae(cse, res)?;
    if jwe_subject(crse).as_deref() != Some(entity.sp_relative().as_str()) {
        return Err(M2mError::bad_request(
            "credentials: crse names another entity than the one the <node> hosts",
        ));
    }
    rotation.prepare(
        &kpsa_id,
        &entity,
        cse.kpsa_ids_of(&entity),
        cse.configured_kpsa_ids(),
    )
}

/// The `sub` of a compact JWE's protected header.
fn jwe_subject(jwe: &str) -> Option<String> {
    let header = m2m_security::e2e::jose::decode_header(jwe.split('.').next()?).ok()?;
    header.get("sub").and_then(Value::as_str).map(str::to_owned)
}

/// The AE-ID of the one AE the `<node>` above `res` hosts (`hael`).
fn hosted_ae(cse: &Cse, res: &Resource) -> M2mResult<EntityId> {
    let none = || {
        M2mError::bad_request(
            "credentials: a Kpsa is rotated for the one AE its <node> hosts (hael)",
        )
    };
    let node = cse.store.get(res.pi())?.ok_or_else(none)?;
    let links = crate::store::string_list(node.attrs.get("hael"));
    let [link] = links.as_slice() else {
        return Err(none());
    };
    let ae = crate::resolve::local_resource(cse, link)
        .filter(|r| r.ty == m2m_core::ResourceType::Ae)
        .ok_or_else(none)?;
    let aei = ae.str_attr("aei").ok_or_else(none)?;
    EntityId::parse(aei, &cse.id.home).map_err(|_| none())
}

fn check_schedules(attrs: &Map<String, Value>) -> M2mResult<()> {
    for name in ["rpsc", "mesc"] {
        let entries = attrs
            .get(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|se| se.get("sce").and_then(Value::as_array))
            .flatten()
            .map(|e| e.as_str().unwrap_or_default());
        super::schedule::check_entries(name, entries)?;
    }
    Ok(())
}

/// A myCertFileCred in the clear (a certificate-only format, not PEM) must be certificates: the
/// base64 of DER certificates or of a PKCS#7 bundle, which hold no private key. Anything else in
/// a certificate format could be a key under the wrong name (4000).
fn check_certificate_file(attrs: &Map<String, Value>) -> M2mResult<()> {
    use base64::Engine;
    let (Some(format), Some(content)) = (
        attrs.get("mcff").and_then(Value::as_str),
        attrs.get("mcfc").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    if m2m_core::mgmt_obj::is_jwe(content)
        || !m2m_core::mgmt_obj::is_certificate_format(format)
        || content.contains("-----BEGIN")
    {
        // Protected, refused already (`check_state`), or PEM whose blocks were checked.
        return Ok(());
    }
    let compact: String = content.split_whitespace().collect();
    let certificates = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
        .is_some_and(|der| {
            openssl::x509::X509::from_der(&der).is_ok()
                || openssl::pkcs7::Pkcs7::from_der(&der).is_ok()
        });
    if certificates {
        Ok(())
    } else {
        Err(M2mError::bad_request(
            "attribute 'mcfc': not certificates in the format 'mcff' names (the base64 of DER certificates or PKCS#7); a file with a private key comes protected for its target (a JWE)",
        ))
    }
}

/// The security specializations of TS-0003 clause 8.3.9.9 are the administrator's to create
/// and change (4103 for anyone else, the device included): whoever could would choose how the
/// device authenticates, whom it trusts, where it registers its keys.
fn administered(call: Call<'_>, spec: &MgmtSpec) -> M2mResult<()> {
    // Not through an <action> either: whoever may change one the administrator made would act
    // as the administrator.
    if !m2m_core::mgmt_obj::ADMINISTERED.contains(&spec.mgd)
        || (call.peer.is_admin(call.cse) && !call.peer.by_action)
    {
        return Ok(());
    }
    Err(M2mError::new(
        m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
        format!("{}: only the administrator configures it", spec.name),
    ))
}

/// The specialization a request's content is written as.
fn requested(req: &Request) -> Option<&'static MgmtSpec> {
    req.pc
        .as_ref()
        .and_then(Value::as_object)
        .and_then(|o| o.keys().next())
        .and_then(|root| by_root(root))
}

impl Behaviour for MgmtObj {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready((|| {
            let spec = requested(call.req)
                .ok_or_else(|| M2mError::bad_request("not a mgmtObj specialization"))?;
            spec.check_create(attrs)?;
            administered(call, spec)?;
            spec.check_state(attrs)?;
            check_schedules(attrs)?;
            check_certificate_file(attrs)?;
            kpsa_rotation(call, None, attrs, attrs)?;
            for name in spec.always_true {
                attrs.insert((*name).into(), Value::Bool(true));
            }
            for (name, value) in spec.defaults {
                attrs.entry(*name).or_insert_with(|| value.value());
            }
            Ok(Prepared::default())
        })())
    }

    fn prepare_update<'a>(
        &'a self,
        call: Call<'a>,
        res: &'a Resource,
        content: &'a Map<String, Value>,
    ) -> Pending<'a, M2mResult<()>> {
        super::ready((|| {
            let spec = res
                .mgmt_spec()
                .ok_or_else(|| M2mError::internal("a mgmtObj without mgd"))?;
            if requested(call.req).map(|s| s.mgd) != Some(spec.mgd) {
                return Err(M2mError::bad_request(format!(
                    "the content must be '{}', the specialization of the resource",
                    spec.root
                )));
            }
            spec.check_update(content)?;
            administered(call, spec)?;
            let merged = super::merged(res, content);
            spec.check_state(&merged)?;
            check_schedules(content)?;
            kpsa_rotation(call, Some(res), content, &merged)
        })())
    }

    fn apply_update(
        &self,
        _cse: &Cse,
        _w: &Writer<'_>,
        res: &mut Resource,
        changed: &Map<String, Value>,
        _before: &Map<String, Value>,
        _by: Option<&EntityId>,
    ) -> M2mResult<()> {
        let Some(spec) = res.mgmt_spec() else {
            return Ok(());
        };
        // Again inside the transaction: two UPDATEs checked against the same earlier state
        // could otherwise together store what neither may (a schedule and an interval).
        spec.check_state(&res.attrs)?;
        for name in spec.always_true {
            res.attrs.insert((*name).into(), Value::Bool(true));
        }
        for (trigger, status) in STATUS_OF {
            let asked = changed.get(*trigger) == Some(&Value::Bool(true));
            if asked && spec.attribute(status).is_some() && !changed.contains_key(*status) {
                res.attrs.insert(
                    (*status).into(),
                    json!({ "acn": trigger, "sus": IN_PROCESS }),
                );
            }
        }
        Ok(())
    }
}
