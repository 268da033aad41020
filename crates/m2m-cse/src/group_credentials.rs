//! Group credentials end to end (seeds/001 clause 5.1): the IN-CSE (M2M server) generates a group key
//! for a `<group>` and delivers it to each member sealed under that member's own E2E key, as a
//! `<contentInstance>` in the member AE's credential container, through normal retargeting: the
//! MN-CSE on the way relays and stores only the sealed object.
//!
//! Trigger: a NOTIFY to this CSEBase from the admin originator (honoured as for access control)
//! carrying `{"m2m:gcReq": {"grp": ADDRESS, "kid"?: ID, "snd"?: [ADDRESS..]}}`; anyone else gets
//! 4103. `snd` names further AEs that receive the key without being members (the gateway app that
//! sends the group's commands). The answer, 2000 `{"m2m:gcRsp": {"grp", "gid", "kid", "ver", "dlv":
//! [{"mid", "aei"?, "rsc", "dbg"?}]}}`, tells per member whether its credential was delivered; it
//! never carries the key. The group key lives only in the sealed objects: a new request is a new key.
//!
//! Every credential carries, sealed with it, the group (`gid`: the `<group>` address in SP-relative
//! form), a version and its issue time (`m2m_security::e2e::group_message`), so a member refuses an
//! older credential re-posted into its container. The version is this CSE's clock in microseconds,
//! raised to one more than the last version issued when the clock has not moved past it, so it
//! strictly increases while the process runs. It is not stored: across a restart it still increases
//! because it never runs ahead of the clock by more than one microsecond per distribution made in
//! the same microsecond (each one retrieves the group and its members first, which takes far longer),
//! and a restart takes longer than that; only a clock set back breaks this, and then members refuse
//! the new credentials as old (with the reason) until the clock passes the last version again.
//!
//! The server acts as itself towards the members: the group is retrieved as the admin originator,
//! each member AE is retrieved (for its AE-ID) and its credential created with From = this CSE's
//! CSE-ID, so the member grants that CSE-ID retrieve on the AE and create on its container.

use crate::access::{refused, Facts};
use crate::association::Peer;
use crate::config::{E2eMemberRow, GroupCredentialsSection};
use crate::context::Context;
use crate::store::string_list;
use chrono::{DateTime, Utc};
use m2m_core::{Address, Scope};
use m2m_core::{
    M2mError, M2mResult, Operation, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use m2m_security::credentials::Secret;
use m2m_security::e2e::esdata::content_info;
use m2m_security::e2e::freshness;
use m2m_security::e2e::group_message::{seal_credential, CredentialInfo, MemberKey};
use m2m_security::e2e::jose::{EcKeyPair, EcPublicKey, SigningKey, SymmetricKey};
use m2m_security::secure_environment::{check_private_file, SecureEnvironment};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Mutex;

/// The request content's root.
pub(crate) const REQUEST: &str = "m2m:gcReq";
/// The answer content's root.
pub(crate) const ANSWER: &str = "m2m:gcRsp";
/// Bytes of a group key: A128KW or `dir` with A128GCM for the group's commands.
const GROUP_KEY_LEN: usize = 16;

/// The admin's request: generate a key for `grp` and deliver it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupCredentialRequest {
    /// The `<group>` address.
    pub grp: String,
    /// The group key's ID; default a fresh `grp-…`.
    #[serde(default)]
    pub kid: Option<String>,
    /// AEs (addresses) that also receive the key: the group's senders.
    #[serde(default)]
    pub snd: Vec<String>,
}

/// One delivery's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// The member (or sender) address.
    pub mid: String,
    /// Its AE-ID, when it was learnt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aei: Option<String>,
    pub rsc: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbg: Option<String>,
}

/// The answer: what was delivered where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupCredentialAnswer {
    pub grp: String,
    /// The group as the credentials name it (`gid`).
    pub gid: String,
    pub kid: String,
    /// The version every credential of this distribution carries.
    pub ver: u64,
    pub dlv: Vec<Delivery>,
}

/// A member's own E2E key, as configured.
#[derive(Clone)]
enum OwnKey {
    Shared(SymmetricKey),
    Public(EcPublicKey),
}

struct E2eMember {
    member: String,
    key: OwnKey,
}

/// The IN-CSE's table of members' E2E keys and its signing key.
pub struct GroupCredentials {
    container: String,
    signer: Option<EcKeyPair>,
    members: Vec<E2eMember>,
    /// The last credential version issued (see the module doc).
    last_version: Mutex<u64>,
}

impl GroupCredentials {
    /// Loads the configured keys (`None` when no member is configured); errors name the row,
    /// never a key.
    pub fn from_config(
        section: &GroupCredentialsSection,
        environments: &[Box<dyn SecureEnvironment>],
    ) -> anyhow::Result<Option<Self>> {
        if section.members.is_empty() {
            return Ok(None);
        }
        let signer = section
            .signing_key
            .as_ref()
            .map(|path| {
                check_private_file(path).map_err(|e| anyhow::anyhow!(e))?;
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
                EcKeyPair::from_jwk(&text)
                    .map_err(|e| anyhow::anyhow!("group_credentials.signing_key: {}", e.reason))
            })
            .transpose()?;
        let mut members = Vec::with_capacity(section.members.len());
        for (i, row) in section.members.iter().enumerate() {
            let key = own_key(row, environments)
                .map_err(|e| anyhow::anyhow!("group_credentials.members[{i}]: {e}"))?;
            if matches!(key, OwnKey::Public(_)) && signer.is_none() {
                anyhow::bail!(
                    "group_credentials.members[{i}]: a public_jwk member needs group_credentials.signing_key"
                );
            }
            members.push(E2eMember {
                member: row.member.clone(),
                key,
            });
        }
        Ok(Some(Self {
            container: section.container.clone(),
            signer,
            members,
            last_version: Mutex::new(0),
        }))
    }

    /// The next version: the clock in microseconds, or one more than the last if that is not less.
    pub(crate) fn next_version(&self, now: DateTime<Utc>) -> u64 {
        let mut last = self.last_version.lock().unwrap_or_else(|e| e.into_inner());
        let clock = u64::try_from(freshness::micros(now)).unwrap_or(0);
        *last = clock.max(last.saturating_add(1));
        *last
    }

    fn find(&self, cse: &Context, aei: &str) -> Option<&E2eMember> {
        let aei = m2m_core::EntityId::parse(aei, &cse.id.home).ok()?;
        self.members
            .iter()
            .find(|m| m2m_core::EntityId::parse(&m.member, &cse.id.home).is_ok_and(|e| e == aei))
    }

    /// Seals `group_key` for the entity `id` (an AE-ID or, for a multicast group, a CSE-ID) as
    /// `info`; 4004 when no E2E key is configured for it.
    pub(crate) fn seal_for(
        &self,
        cse: &Context,
        id: &str,
        group_key: &SymmetricKey,
        info: &CredentialInfo,
    ) -> M2mResult<String> {
        let m = self.find(cse, id).ok_or_else(|| {
            M2mError::new(Rsc::NotFound, format!("no E2E key is configured for {id}"))
        })?;
        // `aud` names the entity as it knows itself (the SP-relative ID given here).
        let to = E2eMember {
            member: id.to_owned(),
            key: m.key.clone(),
        };
        self.seal(group_key, info, &to)
    }

    /// Seals `group_key` for `m` as `info`; `aud` is the member's AE-ID as configured.
    fn seal(
        &self,
        group_key: &SymmetricKey,
        info: &CredentialInfo,
        m: &E2eMember,
    ) -> M2mResult<String> {
        let to = match (&m.key, &self.signer) {
            (OwnKey::Shared(k), _) => MemberKey::Shared(k),
            (OwnKey::Public(k), Some(s)) => MemberKey::Ec(k, SigningKey::Ec(s)),
            (OwnKey::Public(_), None) => {
                return Err(M2mError::internal("no signing key for a public-key member"))
            }
        };
        seal_credential(group_key, &m.member, info, to)
    }
}

fn own_key(
    row: &E2eMemberRow,
    environments: &[Box<dyn SecureEnvironment>],
) -> anyhow::Result<OwnKey> {
    let kid = row.kid.clone().unwrap_or_else(|| row.member.clone());
    let shared = |secret: Secret| -> anyhow::Result<OwnKey> {
        if ![16, 24, 32].contains(&secret.len()) {
            anyhow::bail!("a shared E2E key has 16, 24 or 32 bytes");
        }
        Ok(OwnKey::Shared(SymmetricKey::new(kid.clone(), secret)))
    };
    match (&row.key, &row.keystore_secret, &row.public_jwk) {
        (Some(hex), None, None) => {
            shared(Secret::from_hex(hex).map_err(|e| anyhow::anyhow!("key: {e}"))?)
        }
        (None, Some(name), None) => shared(
            environments
                .iter()
                .find_map(|se| se.secret(name))
                .ok_or_else(|| anyhow::anyhow!("no keystore secret named '{name}'"))?,
        ),
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(OwnKey::Public(EcPublicKey::from_jwk(&text).map_err(
                |e| anyhow::anyhow!("public_jwk: {}", e.reason),
            )?))
        }
        _ => anyhow::bail!("give exactly one of key, keystore_secret and public_jwk"),
    }
}

/// A NOTIFY to the CSEBase: answers it if it carries a group credential request.
pub async fn handle_notify(
    cse: &Context,
    req: &Request,
    peer: &Peer,
) -> Option<M2mResult<Response>> {
    let ask =
        m2m_core::group_authentication::unwrap::<GroupCredentialRequest>(REQUEST, req.pc.as_ref())?;
    Some(match ask {
        Ok(ask) => distribute(cse, req, peer, ask).await,
        Err(e) => Err(e),
    })
}

async fn distribute(
    cse: &Context,
    req: &Request,
    peer: &Peer,
    ask: GroupCredentialRequest,
) -> M2mResult<Response> {
    let from = req.from.as_deref().unwrap_or("");
    if !Facts::of(peer).is_admin(cse) {
        tracing::warn!(target: "audit", originator = from, group = %ask.grp, "group credential distribution refused: not the admin");
        return Err(refused());
    }
    let Some(table) = cse.group_credentials.as_ref() else {
        tracing::warn!(target: "audit", "group credential distribution refused: none configured");
        return Err(refused());
    };
    let gid = group_id(cse, &ask.grp)?;
    let mut targets = group_members(cse, &ask.grp).await?;
    targets.extend(ask.snd.iter().cloned());
    let kid = ask
        .kid
        .clone()
        .unwrap_or_else(|| format!("grp-{}", crate::context::random_suffix(12)));
    let group_key = SymmetricKey::generate(kid.clone(), GROUP_KEY_LEN);
    let now = cse.now();
    let info = CredentialInfo {
        group: gid,
        version: table.next_version(now),
        issued: now,
    };
    let mut dlv = Vec::with_capacity(targets.len());
    for mid in targets {
        dlv.push(deliver(cse, table, &group_key, &info, &mid).await);
    }
    tracing::info!(target: "audit", group = %info.group, kid = %kid, version = info.version, delivered = dlv.iter().filter(|d| d.rsc == 2001).count(), of = dlv.len(), "group credentials distributed");
    let answer = GroupCredentialAnswer {
        grp: ask.grp,
        gid: info.group,
        kid,
        ver: info.version,
        dlv,
    };
    Ok(Response::new(
        Rsc::Ok,
        &req.rqi,
        Some(m2m_core::group_authentication::wrap(ANSWER, &answer)),
    ))
}

/// The group's address in SP-relative form (`/id-mn/cse-mn/gw/grpA`; an absolute address of
/// another SP stays absolute), so that one group has one `gid` however the admin names it.
fn group_id(cse: &Context, grp: &str) -> M2mResult<String> {
    let addr = Address::parse(grp)?;
    let cse_id = match &addr.scope {
        Scope::CseRelative => &cse.id.cse_id,
        Scope::SpRelative(c) => c,
        Scope::Absolute(sp, c) if *sp == cse.id.sp_id => c,
        Scope::Absolute(sp, c) => return Ok(format!("{sp}{c}/{}", addr.path)),
    };
    Ok(format!("{cse_id}/{}", addr.path))
}

/// The memberIDs of the `<group>` at `grp`, retrieved as the admin.
async fn group_members(cse: &Context, grp: &str) -> M2mResult<Vec<String>> {
    let admin = cse.id.admin.shortest_from(&cse.id.home);
    let resp = send(cse, Operation::Retrieve, grp, admin, None).await;
    if !resp.rsc.is_success() {
        return Err(M2mError::new(
            resp.rsc,
            format!(
                "the group '{grp}' cannot be retrieved: {}",
                resp.dbg().unwrap_or("")
            ),
        ));
    }
    let g = resp
        .pc
        .as_ref()
        .and_then(|pc| pc.get("m2m:grp"))
        .ok_or_else(|| M2mError::bad_request(format!("'{grp}' is not a <group>")))?;
    Ok(string_list(g.get("mid")))
}

/// Seals the key for the AE at `mid` and creates it in that AE's credential container.
async fn deliver(
    cse: &Context,
    table: &GroupCredentials,
    group_key: &SymmetricKey,
    info: &CredentialInfo,
    mid: &str,
) -> Delivery {
    let outcome = async {
        let aei = member_ae_id(cse, mid).await?;
        let member = table.find(cse, &aei).ok_or_else(|| {
            M2mError::new(Rsc::NotFound, format!("no E2E key is configured for {aei}"))
        })?;
        let sealed = table.seal(group_key, info, member)?;
        let cin = json!({ "m2m:cin": {
            "cnf": content_info("application/jose", 0),
            "con": sealed,
            "lbl": [format!("groupKey:{}", group_key.kid())],
        }});
        let to = format!("{mid}/{}", table.container);
        let resp = send(cse, Operation::Create, &to, server_id(cse), Some(cin)).await;
        if resp.rsc != Rsc::Created {
            return Err(M2mError::new(
                resp.rsc,
                format!("{to}: {}", resp.dbg().unwrap_or("")),
            ));
        }
        Ok(aei)
    }
    .await;
    match outcome {
        Ok(aei) => Delivery {
            mid: mid.to_owned(),
            aei: Some(aei),
            rsc: Rsc::Created.code(),
            dbg: None,
        },
        Err(e) => {
            tracing::warn!(target: "audit", member = mid, rsc = e.rsc.code(), reason = %e.dbg, "group credential not delivered");
            Delivery {
                mid: mid.to_owned(),
                aei: None,
                rsc: e.rsc.code(),
                dbg: Some(e.dbg),
            }
        }
    }
}

/// The AE-ID of the AE at `mid`, SP-relative (an AE-ID answered relative to its hosting CSE is
/// qualified with that CSE's ID, taken from the SP-relative address).
async fn member_ae_id(cse: &Context, mid: &str) -> M2mResult<String> {
    let resp = send(cse, Operation::Retrieve, mid, server_id(cse), None).await;
    if !resp.rsc.is_success() {
        return Err(M2mError::new(
            resp.rsc,
            format!("{mid}: {}", resp.dbg().unwrap_or("")),
        ));
    }
    let aei = resp
        .pc
        .as_ref()
        .and_then(|pc| pc.get(ResourceType::Ae.root_name()))
        .and_then(|ae| ae.get("aei"))
        .and_then(Value::as_str)
        .ok_or_else(|| M2mError::bad_request(format!("member {mid} is not an AE")))?;
    if aei.starts_with('/') {
        return Ok(aei.to_owned());
    }
    let host = match mid.strip_prefix('/') {
        Some(rest) if !rest.starts_with('/') => rest.split('/').next().unwrap_or(""),
        _ => cse.id.cse_id.bare(),
    };
    Ok(format!("/{host}/{aei}"))
}

/// This CSE's SP-relative CSE-ID: the originator of what the server does itself.
fn server_id(cse: &Context) -> String {
    cse.id.cse_id.sp_relative()
}

async fn send(cse: &Context, op: Operation, to: &str, from: String, pc: Option<Value>) -> Response {
    let rqi = format!("gcred-{}", crate::context::random_suffix(10));
    let mut r = Request::new(op, to, Some(from), rqi);
    if op == Operation::Create {
        r.ty = Some(ResourceType::ContentInstance);
    }
    r.pc = pc;
    cse.handle(r, Peer::internal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use chrono::{Duration, TimeZone};

    fn table() -> GroupCredentials {
        GroupCredentials {
            container: "credentials".into(),
            signer: None,
            members: Vec::new(),
            last_version: Mutex::new(0),
        }
    }

    #[test]
    fn versions_follow_the_clock_and_never_repeat() {
        let t = Utc.timestamp_micros(1_748_779_200_000_000).unwrap();
        let gc = table();
        assert_eq!(gc.next_version(t), 1_748_779_200_000_000);
        // The same microsecond, and a clock set back: still one more than the last.
        assert_eq!(gc.next_version(t), 1_748_779_200_000_001);
        assert_eq!(
            gc.next_version(t - Duration::seconds(10)),
            1_748_779_200_000_002
        );
        assert_eq!(
            gc.next_version(t + Duration::seconds(1)),
            1_748_779_201_000_000
        );
        // A restarted issuer (nothing remembered) a second later is still ahead of all of them.
        assert!(table().next_version(t + Duration::seconds(2)) > 1_748_779_201_000_000);
    }

    #[test]
    fn one_group_has_one_gid_in_every_address_form() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.storage.path = dir.path().join("db");
        let cse = crate::cse::Cse::open(cfg, &Default::default()).unwrap();
        let me = cse.id.cse_id.sp_relative();
        let sp = cse.id.sp_id.to_string();
        for form in [
            "/id-mn/cse-mn/gw/grpA".to_owned(),
            format!("{sp}/id-mn/cse-mn/gw/grpA"),
        ] {
            assert_eq!(
                group_id(&cse, &form).unwrap(),
                "/id-mn/cse-mn/gw/grpA",
                "{form}"
            );
        }
        // A trailing '/' is no other form of the group: no address at all.
        assert!(group_id(&cse, "/id-mn/cse-mn/gw/grpA/").is_err());
        assert_eq!(
            group_id(&cse, "cse-in/grp1").unwrap(),
            format!("{me}/cse-in/grp1")
        );
        assert_eq!(
            group_id(&cse, "//other.example.com/id-x/grp").unwrap(),
            "//other.example.com/id-x/grp"
        );
        assert!(group_id(&cse, "/id-mn/a b").is_err());
    }
}
