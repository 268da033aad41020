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
//! The pairwiseESPrimKey a `kid` names comes from one of three sources (TS-0003 clause 8.4.2 A, C.6a):
//! - provisioned in `[esprim] keys`;
//! - the MAF ESPrim Framework (`[esprim] maf_keys`): a `kid` of the form `hex(KcID)@<[maf] fqdn>` is
//!   retrieved from the MAF on first use (the key must be registered with SUID 33 for this CSE), turned
//!   into the pairwiseESPrimKey with `kdf::esprim_maf_pairwise`, bound to the key's Source ID and cached
//!   until Kc's lifetime;
//! - ESCertKE (`[esprim] escertke`, `crate::escertke`): `kid` = hexBinary(pairwiseE2EKeyID), bound to the
//!   originator certificate's identity.
//!
//! The rands, sessions and replay cache live in memory (`m2m_security::e2e::esprim::EsprimReceiver`) and
//! expire with the rands.

use crate::association::{Association, Peer, SaeMode};
use crate::config::{Config, EsprimKeyRow};
use crate::context::Context;
use crate::maf_keys::{KeyUsage, MafKeys};
use crate::resolve::{self, Locality};
use chrono::{DateTime, Utc};
use m2m_core::security_info::{SecurityInfo, SecurityInfoType, SECURITY_INFO_ROOT};
use m2m_core::{Address, M2mError, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::credentials::CredentialId;
use m2m_security::credentials::Secret;
use m2m_security::e2e::esprim::{self, EsprimReceiver, InnerRequest, PairwiseKey, PairwiseKeys};
use m2m_security::kdf;
use m2m_security::secure_environment::SecureEnvironment;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The shortest pairwiseESPrimKey accepted: 128 bits, the strength of the weakest AEAD option.
const MIN_KEY_LEN: usize = 16;

/// At most this many keys from the MAF and ESCertKE are held at once (each until its lifetime).
const MAX_DERIVED_KEYS: usize = 10_000;

/// The Target's keys and ESPrim state.
pub struct EsprimTarget {
    /// Provisioned keys, by pairwiseESPrimKeyID.
    keys: HashMap<String, PairwiseKey>,
    /// The MAF to retrieve Kc from (MAF ESPrim Framework), shared with the TLS listener.
    maf: Option<Arc<MafKeys>>,
    /// Keys from the MAF and from ESCertKE, until their lifetimes.
    derived: Mutex<HashMap<String, PairwiseKey>>,
    /// The ESCertKE Terminating End-Point.
    pub(crate) escertke: Option<crate::escertke::EscertkeTarget>,
    receiver: Mutex<EsprimReceiver>,
    rand_lifetime: chrono::Duration,
}

impl EsprimTarget {
    /// Loads the provisioned keys of `[esprim]` and the other key sources it enables; `None` when it
    /// enables none. `maf` is the CSE's MAF, used when `[esprim] maf_keys` is set.
    pub(crate) fn from_config(
        cfg: &Config,
        environments: &[Box<dyn SecureEnvironment>],
        maf: Option<&Arc<MafKeys>>,
        revocation: Option<Arc<m2m_security::revocation::RevocationList>>,
    ) -> anyhow::Result<Option<Self>> {
        let section = &cfg.esprim;
        if section.keys.is_empty() && !section.maf_keys && !section.escertke {
            return Ok(None);
        }
        let mut keys = HashMap::with_capacity(section.keys.len());
        for row in &section.keys {
            let key = key_of(environments, row)?;
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
            maf: match (section.maf_keys, maf) {
                (false, _) => None,
                (true, Some(maf)) => Some(Arc::clone(maf)),
                (true, None) => anyhow::bail!("esprim.maf_keys needs [maf]"),
            },
            derived: Mutex::new(HashMap::new()),
            escertke: crate::escertke::EscertkeTarget::from_config(cfg, revocation)?,
            receiver: Mutex::new(EsprimReceiver::new(section.algorithms.clone())),
            rand_lifetime: chrono::Duration::try_seconds(lifetime)
                .ok_or_else(|| anyhow::anyhow!("esprim.rand_lifetime_seconds is too large"))?,
        }))
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, EsprimReceiver> {
        self.receiver.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn derived(&self) -> std::sync::MutexGuard<'_, HashMap<String, PairwiseKey>> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds a key from the MAF or ESCertKE until its lifetime. At the cap, expired keys go first,
    /// then the one expiring soonest: a flood of exchanges cannot grow memory.
    pub(crate) fn remember(&self, kid: String, key: PairwiseKey, now: DateTime<Utc>) {
        let mut derived = self.derived();
        if derived.len() >= MAX_DERIVED_KEYS {
            derived.retain(|_, k| k.expires.is_none_or(|e| e > now));
        }
        if derived.len() >= MAX_DERIVED_KEYS {
            let soonest = derived
                .iter()
                .min_by_key(|(_, k)| k.expires)
                .map(|(kid, _)| kid.clone());
            if let Some(kid) = soonest {
                derived.remove(&kid);
            }
        }
        derived.insert(kid, key);
    }

    /// The pairwiseESPrimKey `kid` names: provisioned, held, or (for a KcID of this CSE's MAF) retrieved
    /// from the MAF now (TS-0003 8.4.2 C.6a). `Ok(None)`: unknown here (the library answers 4112).
    async fn pairwise_key(&self, kid: &str, now: DateTime<Utc>) -> M2mResult<Option<PairwiseKey>> {
        if let Some(k) = self.keys.get(kid) {
            return Ok(Some(k.clone()));
        }
        if let Some(k) = self
            .derived()
            .get(kid)
            .filter(|k| k.expires.is_none_or(|e| e > now))
        {
            return Ok(Some(k.clone()));
        }
        let Some((maf, relative)) = self
            .maf
            .as_ref()
            .and_then(|m| Some((m, m.relative_id(kid)?)))
        else {
            return Ok(None);
        };
        let key =
            match tokio::time::timeout(maf.timeout(), maf.retrieve(relative, KeyUsage::Esprim))
                .await
            {
                Ok(Ok(key)) => key,
                Ok(Err(why)) => return Err(maf_refused(kid, &why)),
                Err(_) => return Err(maf_refused(kid, "the MAF did not answer in time")),
            };
        let pairwise = PairwiseKey {
            key: kdf::esprim_maf_pairwise(&key.kc),
            entity: key.source_id,
            expires: Some(key.expires),
        };
        tracing::info!(target: "audit", kid, entity = %pairwise.entity, expires = %key.expires, "ESPrim key retrieved from the MAF");
        self.remember(kid.to_owned(), pairwise.clone(), now);
        Ok(Some(pairwise))
    }
}

/// 4112 for a MAF key ID the MAF would not release for ESPrim (unknown, expired, another target, not
/// SUID 33), with the MAF's reason: the Originator learns why, and no key is involved.
fn maf_refused(kid: &str, why: &str) -> M2mError {
    tracing::warn!(target: "audit", kid, reason = %why, "ESPrim key not available from the MAF");
    M2mError::new(
        Rsc::EsprimUnknownKeyId,
        format!("pairwiseESPrimKeyID {kid:?}: the MAF did not release it for ESPrim: {why}"),
    )
}

/// The one key an object needs, looked up before the receiver is locked (the MAF is asked
/// asynchronously).
struct Resolved(Option<(String, PairwiseKey)>);

impl PairwiseKeys for Resolved {
    fn pairwise_key(&self, kid: &str) -> Option<PairwiseKey> {
        self.0
            .as_ref()
            .filter(|(k, _)| k == kid)
            .map(|(_, key)| key.clone())
    }
}

/// The key of one row: inline hex, an environment variable, or a keystore secret.
fn key_of(
    environments: &[Box<dyn SecureEnvironment>],
    row: &EsprimKeyRow,
) -> anyhow::Result<Secret> {
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
        (None, None, Some(name)) => environments
            .iter()
            .find_map(|se| se.secret(name))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "esprim key {kid}: no secure environment holds the secret '{name}' \
                     (in a token: imported with --extractable)"
                )
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
    cse: &Context,
    req: &Request,
    peer: &Peer,
) -> Option<M2mResult<Response>> {
    let pc = req.pc.as_ref()?;
    pc.get(SECURITY_INFO_ROOT)?;
    Some(answer(cse, req, peer, pc).await)
}

async fn answer(
    cse: &Context,
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
    match (info.sit, info.epo.clone()) {
        (SecurityInfoType::ReceiverRandRequest, _) => {
            let ero = target
                .receiver()
                .issue_rand(cse.now(), target.rand_lifetime);
            let content = SecurityInfo::rand_response(ero).to_content();
            Ok(Response::new(Rsc::Ok, &req.rqi, Some(content)))
        }
        (SecurityInfoType::EscertkeMessage, _) => {
            crate::escertke::answer(cse, target, req, peer, &info)
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
            "a securityInfo request carries sit 3, 5 or 6",
        )),
    }
}

/// Steps J to L of TS-0004 clause 7.6.2: unprotect, process the inner request, protect its response.
async fn protected_exchange(
    cse: &Context,
    target: &EsprimTarget,
    outer_peer: &Peer,
    jwe: &str,
) -> M2mResult<String> {
    let now = cse.now();
    let env = esprim::open_envelope(jwe)?;
    let kid = env.kid().to_owned();
    let resolved = Resolved(target.pairwise_key(&kid, now).await?.map(|k| (kid, k)));
    let home = &cse.id.home;
    let same_entity = |from: &str, entity: &str| {
        let parse = |s: &str| m2m_core::EntityId::parse(s, home).ok();
        parse(from).is_some() && parse(from) == parse(entity)
    };
    let inner = target
        .receiver()
        .unprotect_request_with(&resolved, &env, now, &same_entity)?;
    let response = process_inner(cse, &inner, outer_peer).await;
    tracing::info!(target: "audit", originator = %inner.from, kid = %inner.session.kid, rsc = response.rsc.code(), "ESPrim inner request processed");
    let body = serde_json::to_vec(&response.to_rsp_json())
        .map_err(|_| M2mError::new(Rsc::EsprimEncryptionError, "inner response"))?;
    target
        .receiver()
        .protect_response(&inner.session, &body, cse.now())
}

/// The inner request through the normal pipeline; its errors become (protected) error responses.
async fn process_inner(cse: &Context, inner: &InnerRequest, outer_peer: &Peer) -> Response {
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
    match authenticated_by_key(cse, inner, outer_peer) {
        Ok(peer) => cse.handle(req, peer).await,
        Err(e) => Response::error(&e, rqi),
    }
}

/// The Target is this CSE: an inner request for another CSE would leave the protection here.
fn local_only(cse: &Context, req: Request) -> M2mResult<Request> {
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
fn authenticated_by_key(cse: &Context, inner: &InnerRequest, outer: &Peer) -> M2mResult<Peer> {
    let entity = m2m_core::EntityId::parse(&inner.from, &cse.id.home)?;
    let credential = CredentialId::new(
        CredentialId::TYPE_PAIRWISE_ESPRIM_KEY_ID,
        &inner.session.kid,
    )
    .map_err(|_| M2mError::bad_request("the pairwiseESPrimKeyID is not a Credential-ID value"))?;
    // Never "internal": an inner request always passes the impersonation check.
    let addr = outer.addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    let mut peer = Peer::associated(
        addr,
        Arc::new(Association {
            mode: SaeMode::EndToEnd,
            credential,
            entity: Some(entity),
        }),
    );
    // Through an MQTT server the address is the server's, not the originator's.
    peer.via_mqtt_server = outer.via_mqtt_server;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_security::secure_environment::{create_key_file, KeySource, SoftwareKeystore};

    fn config(extra: &str) -> Config {
        Config::from_toml(extra).expect("configuration")
    }

    fn target(cfg: &Config) -> anyhow::Result<Option<EsprimTarget>> {
        EsprimTarget::from_config(cfg, &crate::secure_environments(cfg)?, None, None)
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
        let t = target(&cfg).unwrap().expect("a target");
        assert_eq!(t.keys["a"].key.expose(), &[0x11; 16]);
        assert_eq!(t.keys["b"].key.expose(), &[0x22; 16]);
        assert_eq!(t.keys["c"].key.expose(), &[7; 32]);
        assert_eq!(t.keys["c"].entity, "Sc");

        let short = config("[[esprim.keys]]\nkid = \"a\"\nentity = \"Sa\"\nkey = \"0011\"\n");
        let e = target(&short).err().expect("too short");
        assert!(e.to_string().contains("at least 16 bytes"), "{e}");
        assert!(!e.to_string().contains("0011"), "{e}");
        let missing = config(
            "[[esprim.keys]]\nkid = \"a\"\nentity = \"Sa\"\nkey_env = \"ESPRIM_UNSET_VAR\"\n",
        );
        assert!(target(&missing).is_err());
        assert!(target(&Config::default()).unwrap().is_none());
    }
}
