//! The member hosting CSE's side of a multicast fan-out (TS-0001 clause 9.6.44, TS-0004 clauses
//! 7.4.55 and 7.4.14.2.6 MemhostCSE-1.0 to 3.0): `<localMulticastGroup>` resources joined on
//! their multicast address, each datagram opened (group key, the group hosting CSE's signature,
//! replay window), applied to the local members, and answered over the unicast association.

use super::{decode_datagram, joined_socket, parse_ip_address};
use crate::config::Config;
use crate::cse::{Cse, Peer};
use crate::resolve::{self, Locality};
use crate::store::{string_list, Resource};
use m2m_core::{
    Address, EntityId, M2mError, M2mResult, Operation, Request, ResourceType,
    ResponseStatusCode as Rsc, Scope,
};
use m2m_security::credentials::Secret;
use m2m_security::e2e::group_message::{open_credential, GroupKeyMgmt, MemberUnwrapKey};
use m2m_security::e2e::jose::{EcKeyPair, EcPublicKey, SymmetricKey, VerifyingKey};
use m2m_security::e2e::multicast::Receiver;
use m2m_security::secure_environment::{check_private_file, SecureEnvironment};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Datagrams processed at once; more are dropped (a flood must not start a task each).
const CONCURRENT_DATAGRAMS: usize = 64;
/// The longest responseTimeWindow honoured.
const MAX_WINDOW: Duration = Duration::from_secs(10);
/// The most multicast groups joined at once (each is a socket and a task).
const MAX_GROUPS: usize = 64;

/// This CSE's own E2E key, under which group hosting CSEs seal group keys for it.
enum OwnKey {
    Shared(SymmetricKey),
    Ec(EcKeyPair),
}

/// One joined `<localMulticastGroup>`.
struct Joined {
    ri: String,
    address: Ipv4Addr,
    members: Vec<String>,
    response_target: String,
    window: Duration,
    key: SymmetricKey,
    version: u64,
    sender: EntityId,
    sender_key: EcPublicKey,
}

#[derive(Default)]
struct State {
    /// By multicastGroupFanoutTarget.
    groups: HashMap<String, Arc<Joined>>,
    receiver: Receiver,
    /// One socket (and its task) per joined address, with how many groups use it.
    listeners: HashMap<Ipv4Addr, (usize, tokio::task::AbortHandle)>,
}

pub struct Member {
    own: OwnKey,
    port: u16,
    interface: Ipv4Addr,
    state: Mutex<State>,
    busy: Arc<Semaphore>,
}

impl Member {
    /// The member side, when `[multicast]` gives this CSE a key of its own.
    pub fn from_config(
        cfg: &Config,
        environments: &[Box<dyn SecureEnvironment>],
    ) -> anyhow::Result<Option<Self>> {
        let Some(m) = cfg.multicast.as_ref().filter(|m| m.is_member()) else {
            return Ok(None);
        };
        let kid = cfg.cse.cse_id.clone();
        let shared = |secret: Secret| -> anyhow::Result<OwnKey> {
            if ![16, 24, 32].contains(&secret.len()) {
                anyhow::bail!("multicast: a shared E2E key has 16, 24 or 32 bytes");
            }
            Ok(OwnKey::Shared(SymmetricKey::new(kid.clone(), secret)))
        };
        let own = match (&m.key, &m.keystore_secret, &m.private_jwk) {
            (Some(hex), _, _) => {
                shared(Secret::from_hex(hex).map_err(|e| anyhow::anyhow!("multicast.key: {e}"))?)?
            }
            (_, Some(name), _) => shared(
                environments
                    .iter()
                    .find_map(|se| se.secret(name))
                    .ok_or_else(|| {
                        anyhow::anyhow!("multicast: no keystore secret named '{name}'")
                    })?,
            )?,
            (_, _, Some(path)) => {
                check_private_file(path).map_err(|e| anyhow::anyhow!(e))?;
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
                OwnKey::Ec(
                    EcKeyPair::from_jwk(&text)
                        .map_err(|e| anyhow::anyhow!("multicast.private_jwk: {}", e.reason))?,
                )
            }
            (None, None, None) => return Ok(None),
        };
        Ok(Some(Self {
            own,
            port: m.port,
            interface: m.interface_addr()?,
            state: Mutex::default(),
            busy: Arc::new(Semaphore::new(CONCURRENT_DATAGRAMS)),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and checks a `<localMulticastGroup>` created by `creator`: its address, its target
    /// (under the creator's CSE-ID), local members, and the group key it carries for this CSE.
    fn open(
        &self,
        cse: &Cse,
        ri: &str,
        attrs: &Map<String, Value>,
        creator: &EntityId,
    ) -> M2mResult<Joined> {
        let address = parse_ip_address(attrs.get("mad"))?;
        let target = attrs
            .get("mgft")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The target is a path under the creator's own CSE-ID (SP-relative, this SP).
        let under_creator = Address::parse(target).is_ok_and(|a| {
            !a.path.is_empty()
                && matches!((&a.scope, creator), (Scope::SpRelative(c), EntityId::Cse { sp, cse: id })
                    if c == id && *sp == cse.id.home.sp)
        });
        if !under_creator {
            return Err(M2mError::bad_request(
                "multicastGroupFanoutTarget must lie under the group hosting CSE's CSE-ID",
            ));
        }
        let members = string_list(attrs.get("mli"));
        for m in &members {
            let local = Address::parse(m)
                .map(|a| matches!(resolve::locality(cse, &a), Locality::Local))
                .unwrap_or(false);
            if !local {
                return Err(M2mError::bad_request(format!(
                    "memberList: '{m}' is not hosted by this CSE"
                )));
            }
        }
        // The answers go to the group hosting CSE, over this CSE's association, as this CSE:
        // never to another target the creator names.
        let response_target = creator.sp_relative();
        if let Some(rstt) = attrs.get("rstt").and_then(Value::as_str) {
            let is_creator = EntityId::parse(rstt, &cse.id.home).is_ok_and(|e| e == *creator);
            if !is_creator {
                return Err(M2mError::bad_request(
                    "responseTarget must be the group hosting CSE",
                ));
            }
        }
        let window = attrs
            .get("rstw")
            .and_then(parse_window)
            .unwrap_or_default()
            .min(MAX_WINDOW);
        let spk = attrs.get("spk").map(Value::to_string).unwrap_or_default();
        let sender_key = EcPublicKey::from_jwk(&spk)
            .map_err(|e| M2mError::bad_request(format!("spk: {}", e.reason)))?;
        let gck = attrs.get("gck").and_then(Value::as_str).unwrap_or_default();
        let me = cse.id.cse_id.sp_relative();
        let unwrap = match &self.own {
            OwnKey::Shared(k) => MemberUnwrapKey::Shared(k),
            OwnKey::Ec(k) => MemberUnwrapKey::Ec(k, VerifyingKey::Ec(&sender_key)),
        };
        let opened = open_credential(gck, &me, unwrap)
            .map_err(|e| M2mError::new(Rsc::JoinMulticastGroupFailed, format!("gck: {}", e.dbg)))?;
        if opened.info.group != target {
            return Err(M2mError::new(
                Rsc::JoinMulticastGroupFailed,
                "gck: the group key is for another fan-out target",
            ));
        }
        Ok(Joined {
            ri: ri.to_owned(),
            address,
            members,
            response_target,
            window,
            key: opened.key,
            version: opened.info.version,
            sender: creator.clone(),
            sender_key,
        })
    }

    /// Validates a CREATE (`current` `None`) or UPDATE of a `<localMulticastGroup>`: the group
    /// key opens, and an update carries a newer one than the CSE holds.
    pub(crate) fn check(
        &self,
        cse: &Cse,
        attrs: &Map<String, Value>,
        creator: &EntityId,
        current: Option<&Resource>,
    ) -> M2mResult<()> {
        let ri = current.map(Resource::ri).unwrap_or_default();
        let new = self.open(cse, ri, attrs, creator)?;
        let target = attrs
            .get("mgft")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let st = self.state();
        if current.is_none() && st.groups.len() >= MAX_GROUPS {
            return Err(M2mError::new(
                Rsc::JoinMulticastGroupFailed,
                "this CSE has joined as many multicast groups as it may",
            ));
        }
        if let Some(held) = st.groups.get(target) {
            if current.is_some() && new.version <= held.version {
                return Err(M2mError::new(
                    Rsc::JoinMulticastGroupFailed,
                    "gck: not newer than the group key held",
                ));
            }
        }
        // A new address must be joinable before the resource is stored, so that the group
        // hosting CSE learns of a failure (5216) instead of counting on a member that hears
        // nothing.
        if !st.listeners.contains_key(&new.address) {
            joined_socket(new.address, self.port, self.interface).map_err(|e| {
                tracing::warn!(address = %new.address, error = %e, "multicast group cannot be joined");
                M2mError::new(
                    Rsc::JoinMulticastGroupFailed,
                    "the multicast address cannot be joined here",
                )
            })?;
        }
        Ok(())
    }

    /// Joins (or re-keys) the stored `<localMulticastGroup>` `res`.
    pub(crate) fn install(&self, cse: &Arc<Cse>, res: &Resource) -> M2mResult<()> {
        let creator = res
            .creator
            .as_deref()
            .and_then(|c| EntityId::parse(c, &cse.id.home).ok())
            .ok_or_else(|| M2mError::internal("localMulticastGroup without creator"))?;
        let joined = self.open(cse, res.ri(), &res.attrs, &creator)?;
        let target = res
            .attrs
            .get("mgft")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut st = self.state();
        match st.listeners.entry(joined.address) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().0 += 1,
            std::collections::hash_map::Entry::Vacant(e) => {
                let socket =
                    joined_socket(joined.address, self.port, self.interface).map_err(|err| {
                        M2mError::new(
                            Rsc::JoinMulticastGroupFailed,
                            format!("cannot join {}: {err}", joined.address),
                        )
                    })?;
                let task = tokio::spawn(listen(Arc::downgrade(cse), socket));
                e.insert((1, task.abort_handle()));
            }
        }
        tracing::info!(target: "audit", lmg = res.ri(), target = %target, address = %joined.address, kid = joined.key.kid(), version = joined.version, "multicast group joined");
        if let Some(old) = st.groups.insert(target, Arc::new(joined)) {
            release(&mut st, old.address);
            st.receiver.forget(old.key.kid());
        }
        Ok(())
    }

    /// Leaves the `<localMulticastGroup>` `res` (deleted): its key is forgotten.
    pub(crate) fn uninstall(&self, res: &Resource) {
        let mut st = self.state();
        let Some(target) = st
            .groups
            .iter()
            .find(|(_, j)| j.ri == res.ri())
            .map(|(t, _)| t.clone())
        else {
            return;
        };
        if let Some(old) = st.groups.remove(&target) {
            release(&mut st, old.address);
            st.receiver.forget(old.key.kid());
            tracing::info!(target: "audit", lmg = res.ri(), target = %target, "multicast group left");
        }
    }

    /// Joins every `<localMulticastGroup>` stored here (at start).
    pub fn restore(&self, cse: &Arc<Cse>) {
        // Children of the CSEBase, the only place a <localMulticastGroup> lives.
        let base = cse.id.rn.clone();
        let stored = cse
            .store
            .read(|r| {
                let cb = r.get_by_srn(&base)?;
                cb.map_or(Ok(Vec::new()), |cb| {
                    r.children(cb.ri(), Some(ResourceType::LocalMulticastGroup))
                })
            })
            .unwrap_or_default();
        for res in stored {
            if let Err(e) = self.install(cse, &res) {
                tracing::warn!(target: "audit", lmg = res.ri(), reason = %e.dbg, "multicast group not joined");
            }
        }
    }

    /// One datagram heard on a joined address (TS-0004 MemhostCSE-1.0 to 3.0).
    async fn receive(&self, cse: &Arc<Cse>, bytes: &[u8], src: SocketAddr) {
        let Some((target, sealed)) = decode_datagram(bytes) else {
            tracing::debug!(%src, "multicast datagram ignored: not a fan-out");
            return;
        };
        let Some(joined) = self.state().groups.get(&target).cloned() else {
            tracing::debug!(%src, target = %target, "multicast datagram ignored: no localMulticastGroup for its target");
            return;
        };
        let opened = {
            let mut st = self.state();
            let home = &cse.id.home;
            let senders = |id: &str| {
                (EntityId::parse(id, home).ok().as_ref() == Some(&joined.sender))
                    .then(|| joined.sender_key.clone())
            };
            st.receiver
                .open(&sealed, &joined.key, GroupKeyMgmt::Dir, senders, cse.now())
        };
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(target: "audit", %src, target = %target, reason = %e.dbg, "multicast fan-out refused");
                return;
            }
        };
        let inner = serde_json::from_slice::<Value>(&opened.primitive)
            .map_err(|_| M2mError::bad_request("not JSON"))
            .and_then(|v| Request::from_json(&v));
        let inner = match inner {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "audit", %src, reason = %e.dbg, "multicast fan-out refused: not a request primitive");
                return;
            }
        };
        // The signed To must name the target the datagram was delivered for.
        let rest = if inner.to == target {
            String::new()
        } else if let Some(r) = inner.to.strip_prefix(&format!("{target}/")) {
            r.to_owned()
        } else {
            tracing::warn!(target: "audit", %src, "multicast fan-out refused: its To is another target");
            return;
        };
        let expired = inner
            .rqet
            .as_deref()
            .and_then(|t| m2m_core::time::parse(t).ok())
            .is_some_and(|t| t < cse.now());
        if expired {
            tracing::debug!(rqi = %inner.rqi, "multicast fan-out expired before it was processed");
            return;
        }
        tracing::debug!(%src, target = %target, seq = opened.seq, rqi = %inner.rqi, "multicast fan-out accepted");
        let peer = Peer::multicast(src, joined.sender.clone(), joined.key.kid());
        let mut entries = Vec::with_capacity(joined.members.len());
        for m in &joined.members {
            let resp = crate::group::to_member(cse, inner.clone(), m, &rest, peer.clone()).await;
            entries.push(resp.to_rsp_json());
        }
        // Spread the answers of all members over the responseTimeWindow.
        let delay = joined.window.mul_f64(rand::random::<f64>());
        tokio::time::sleep(delay).await;
        self.answer(cse, &joined, &inner.rqi, entries).await;
    }

    /// The answer: a NOTIFY to the responseTarget over this CSE's unicast association.
    async fn answer(&self, cse: &Arc<Cse>, joined: &Joined, rqi: &str, entries: Vec<Value>) {
        let me = cse.id.cse_id.sp_relative();
        let mut notify = Request::new(
            Operation::Notify,
            &joined.response_target,
            Some(me.clone()),
            format!("mca-{}", crate::context::random_suffix(10)),
        );
        notify.pc = Some(json!({ "m2m:rsp": {
            "rsc": Rsc::Ok.code(),
            "rqi": rqi,
            "fr": me,
            "to": joined.response_target,
            "pc": { "m2m:agr": { "m2m:rsp": entries } },
        }}));
        let resp = cse.handle(notify, Peer::internal()).await;
        if !resp.rsc.is_success() {
            tracing::warn!(rsc = resp.rsc.code(), to = %joined.response_target, "multicast answer not delivered");
        }
    }
}

fn release(st: &mut State, address: Ipv4Addr) {
    if let Some((users, task)) = st.listeners.get_mut(&address) {
        *users = users.saturating_sub(1);
        if *users == 0 {
            // Dropping the socket with its task leaves the group (IGMP leave).
            task.abort();
            st.listeners.remove(&address);
        }
    }
}

async fn listen(cse: Weak<Cse>, socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "multicast receive error");
                continue;
            }
        };
        let Some(cse) = cse.upgrade() else { return };
        let Some(member) = cse.multicast_member.clone() else {
            return;
        };
        let Ok(permit) = Arc::clone(&member.busy).try_acquire_owned() else {
            tracing::warn!(%src, "multicast datagram dropped: too many in progress");
            continue;
        };
        let bytes = buf[..n].to_vec();
        tokio::spawn(async move {
            member.receive(&cse, &bytes, src).await;
            drop(permit);
        });
    }
}

/// responseTimeWindow: an xs:duration or a number of milliseconds (`m2m_core::time`), at most
/// [`MAX_WINDOW`].
fn parse_window(v: &Value) -> Option<Duration> {
    m2m_core::time::parse_duration(v).map(|d| d.min(MAX_WINDOW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_as_durations_or_milliseconds_and_are_bounded() {
        assert_eq!(
            parse_window(&json!("PT0.200S")),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            parse_window(&json!(1500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_window(&json!("PT99999S")), Some(MAX_WINDOW));
        assert_eq!(parse_window(&json!("P1D")), Some(MAX_WINDOW));
        assert_eq!(parse_window(&json!("1 day")), None);
        assert_eq!(parse_window(&json!("PT-1S")), None);
    }
}
