//! This CSE as ESPrim Target (TS-0004 clauses 7.5.1.2.11, 7.5.1.2.13 and 7.6.2; TS-0003 clause 8.4):
//! NOTIFY requests to the CSEBase carrying `m2m:securityInfo`.
//!
//! - sit 3 is answered with sit 4 and a fresh receiverESPrimRandObject.
//! - sit 5 carries an ESPrim object: it is unprotected with the pairwiseESPrimKey its `kid` names
//!   (which also checks the rands, the options, the tag, the replay cache and the inner From, 4111-4116 /
//!   5210), the inner request goes through the normal pipeline as if it came over an association bound
//!   to the key's entity (impersonation check, access decision), and its response, successful or not, is
//!   returned protected as sit 5 in a 2000 outer response. ESPrim failures are outer error responses.
//!
//! The pairwiseESPrimKeys are provisioned in `[esprim]`; the rands, sessions and replay cache live in
//! memory (`m2m_security::e2e::esprim::EsprimReceiver`) and expire with the rands.

use crate::association::{Association, Peer, SaeMode};
use crate::config::{Config, EsprimKeyRow};
use crate::cse::Cse;
use crate::resolve::{self, Locality};
use m2m_core::security_info::{SecurityInfo, SecurityInfoType, SECURITY_INFO_ROOT};
use m2m_core::{Address, M2mError, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::credentials::Secret;
use m2m_security::e2e::esprim::{EsprimReceiver, InnerRequest, PairwiseKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The shortest pairwiseESPrimKey accepted: 128 bits, the strength of the weakest AEAD option.
const MIN_KEY_LEN: usize = 16;

/// The Target's keys and ESPrim state.
pub struct EsprimTarget {
    keys: HashMap<String, PairwiseKey>,
    receiver: Mutex<EsprimReceiver>,
    rand_lifetime: chrono::Duration,
}

impl EsprimTarget {
    /// Loads the provisioned keys of `[esprim]`; `None` when there are none.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Self>> {
        let section = &cfg.esprim;
        if section.keys.is_empty() {
            return Ok(None);
        }
        let mut keys = HashMap::with_capacity(section.keys.len());
        for row in &section.keys {
            let key = key_of(cfg, row)?;
            let entry = PairwiseKey {
                key,
                entity: row.entity.clone(),
                expires: None,
            };
            keys.insert(row.kid.clone(), entry);
        }
        let lifetime = i64::try_from(section.rand_lifetime_seconds).unwrap_or(i64::MAX);
        Ok(Some(Self {
            keys,
            receiver: Mutex::new(EsprimReceiver::new(section.algorithms.clone())),
            rand_lifetime: chrono::Duration::try_seconds(lifetime)
                .ok_or_else(|| anyhow::anyhow!("esprim.rand_lifetime_seconds is too large"))?,
        }))
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, EsprimReceiver> {
        self.receiver.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key of one row: inline hex, an environment variable, or a keystore secret.
fn key_of(cfg: &Config, row: &EsprimKeyRow) -> anyhow::Result<Secret> {
    let kid = &row.kid;
    let key = match (&row.key, &row.key_env, &row.keystore_secret) {
        (Some(hex), _, _) => {
            Secret::from_hex(hex).map_err(|e| anyhow::anyhow!("esprim key {kid}: key: {e}"))?
        }
        (None, Some(var), _) => {
            let hex =
                zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                    anyhow::anyhow!("esprim key {kid}: key_env: ${var} is not set")
                })?);
            Secret::from_hex(&hex).map_err(|e| anyhow::anyhow!("esprim key {kid}: ${var}: {e}"))?
        }
        (None, None, Some(name)) => crate::secure_environments(cfg)?
            .iter()
            .find_map(|se| se.secret(name))
            .ok_or_else(|| {
                anyhow::anyhow!("esprim key {kid}: no secret '{name}' in the [security] keystore")
            })?,
        (None, None, None) => anyhow::bail!("esprim key {kid}: no key given"),
    };
    if key.len() < MIN_KEY_LEN {
        anyhow::bail!("esprim key {kid}: a pairwiseESPrimKey has at least {MIN_KEY_LEN} bytes");
    }
    Ok(key)
}

/// A NOTIFY to the CSEBase: answers it if its content is `m2m:securityInfo`.
pub async fn handle_notify(
    cse: &Arc<Cse>,
    req: &Request,
    peer: &Peer,
) -> Option<M2mResult<Response>> {
    let pc = req.pc.as_ref()?;
    pc.get(SECURITY_INFO_ROOT)?;
    Some(answer(cse, req, peer, pc).await)
}

async fn answer(
    cse: &Arc<Cse>,
    req: &Request,
    peer: &Peer,
    pc: &serde_json::Value,
) -> M2mResult<Response> {
    let info = SecurityInfo::from_content(pc).map_err(M2mError::bad_request)?;
    let Some(target) = cse.esprim.as_ref() else {
        return Err(M2mError::new(
            Rsc::NotImplemented,
            "this CSE is no ESPrim Target: it holds no pairwiseESPrimKey",
        ));
    };
    match (info.sit, info.epo) {
        (SecurityInfoType::ReceiverRandRequest, _) => {
            let ero = target
                .receiver()
                .issue_rand(cse.now(), target.rand_lifetime);
            let content = SecurityInfo::rand_response(ero).to_content();
            Ok(Response::new(Rsc::Ok, &req.rqi, Some(content)))
        }
        (SecurityInfoType::EsprimObject, Some(jwe)) => {
            let result = protected_exchange(cse, target, peer, &jwe).await;
            if let Err(e) = &result {
                let from = req.from.as_deref().unwrap_or("");
                tracing::warn!(target: "audit", originator = from, rsc = e.rsc.code(), reason = %e.dbg, "ESPrim object refused");
            }
            let content = SecurityInfo::esprim_object(result?).to_content();
            Ok(Response::new(Rsc::Ok, &req.rqi, Some(content)))
        }
        _ => Err(M2mError::bad_request(
            "a securityInfo request carries sit 3 or 5",
        )),
    }
}

/// Steps J to L of TS-0004 clause 7.6.2: unprotect, process the inner request, protect its response.
async fn protected_exchange(
    cse: &Arc<Cse>,
    target: &EsprimTarget,
    outer_peer: &Peer,
    jwe: &str,
) -> M2mResult<String> {
    let inner = target
        .receiver()
        .unprotect_request(&target.keys, jwe, cse.now())?;
    let response = process_inner(cse, &inner, outer_peer).await;
    tracing::info!(target: "audit", originator = %inner.from, kid = %inner.session.kid, rsc = response.rsc.code(), "ESPrim inner request processed");
    let body = serde_json::to_vec(&response.to_rsp_json())
        .map_err(|_| M2mError::new(Rsc::EsprimEncryptionError, "inner response"))?;
    target
        .receiver()
        .protect_response(&inner.session, &body, cse.now())
}

/// The inner request through the normal pipeline; its errors become (protected) error responses.
async fn process_inner(cse: &Arc<Cse>, inner: &InnerRequest, outer_peer: &Peer) -> Response {
    let rqi = inner
        .primitive
        .get("rqi")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let req = match Request::from_json(&inner.primitive).and_then(|r| local_only(cse, r)) {
        Ok(r) => r,
        Err(e) => return Response::error(&e, rqi),
    };
    cse.handle(req, authenticated_by_key(inner, outer_peer))
        .await
}

/// The Target is this CSE: an inner request for another CSE would leave the protection here.
fn local_only(cse: &Cse, req: Request) -> M2mResult<Request> {
    let addr = Address::parse(&req.to)?;
    match resolve::locality(cse, &addr) {
        Locality::Local => Ok(req),
        Locality::Remote(_) => Err(M2mError::bad_request(
            "an ESPrim inner request must address a resource of its Target CSE",
        )),
    }
}

/// The peer of an inner request: the pairwiseESPrimKey is its association, bound to the key's
/// entity (already checked to equal the inner From), so the impersonation check accepts exactly that
/// originator and counts it as authenticated.
fn authenticated_by_key(inner: &InnerRequest, outer: &Peer) -> Peer {
    Peer {
        // Never "internal": an inner request always passes the impersonation check.
        addr: Some(outer.addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into())),
        association: Some(Arc::new(Association {
            mode: SaeMode::EndToEnd,
            credential_id: format!("13-{}", inner.session.kid),
            entity: Some(inner.from.clone()),
        })),
        development: false,
        authenticated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_security::secure_environment::{create_key_file, KeySource, SoftwareKeystore};

    fn config(extra: &str) -> Config {
        Config::from_toml(extra).expect("configuration")
    }

    #[test]
    fn keys_come_from_hex_env_or_keystore_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let (ks_path, key_file) = (dir.path().join("ks"), dir.path().join("ks.key"));
        create_key_file(&key_file).unwrap();
        let mut ks =
            SoftwareKeystore::create(&ks_path, KeySource::KeyFile(key_file.clone())).unwrap();
        ks.set_secret("esp-k", Secret::new(vec![7; 32])).unwrap();
        ks.save().unwrap();
        std::env::set_var("ESPRIM_UNIT_KEY", "22".repeat(16));
        let cfg = config(&format!(
            "[security]\nkeystore = {:?}\nkey_file = {:?}\n\
             [[esprim.keys]]\nkid = \"a\"\nentity = \"Sa\"\nkey = \"{}\"\n\
             [[esprim.keys]]\nkid = \"b\"\nentity = \"Sb\"\nkey_env = \"ESPRIM_UNIT_KEY\"\n\
             [[esprim.keys]]\nkid = \"c\"\nentity = \"Sc\"\nkeystore_secret = \"esp-k\"\n",
            ks_path.display().to_string(),
            key_file.display().to_string(),
            "11".repeat(16)
        ));
        let t = EsprimTarget::from_config(&cfg).unwrap().expect("a target");
        assert_eq!(t.keys["a"].key.expose(), &[0x11; 16]);
        assert_eq!(t.keys["b"].key.expose(), &[0x22; 16]);
        assert_eq!(t.keys["c"].key.expose(), &[7; 32]);
        assert_eq!(t.keys["c"].entity, "Sc");

        let short = config("[[esprim.keys]]\nkid = \"a\"\nentity = \"Sa\"\nkey = \"0011\"\n");
        let e = EsprimTarget::from_config(&short).err().expect("too short");
        assert!(e.to_string().contains("at least 16 bytes"), "{e}");
        assert!(!e.to_string().contains("0011"), "{e}");
        let missing = config(
            "[[esprim.keys]]\nkid = \"a\"\nentity = \"Sa\"\nkey_env = \"ESPRIM_UNSET_VAR\"\n",
        );
        assert!(EsprimTarget::from_config(&missing).is_err());
        assert!(EsprimTarget::from_config(&Config::default())
            .unwrap()
            .is_none());
    }
}
