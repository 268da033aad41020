//! The group hosting CSE's side of a multicast fan-out (TS-0001 clause 10.2.7.13, TS-0004 clauses
//! 7.4.14.2.6 and 7.5.3.1.3): the Multicast Group Information of each `<group>`, kept in memory
//! only (so a group key never rests on disk here; after a restart the next fan-out issues a new
//! one), the `<localMulticastGroup>` of each member hosting CSE, the datagram, and the wait for
//! the members' answers.

use super::{encode_datagram, ip_address, segment, sending_socket};
use crate::config::Config;
use crate::cse::{Cse, Peer};
use crate::group_credentials::GroupCredentials;
use crate::resolve::{self, Locality};
use crate::store::{string_list, Resource};
use chrono::{DateTime, Utc};
use m2m_core::{
    Address, CseId, M2mError, M2mResult, Operation, Request, ResourceType, Response,
    ResponseStatusCode as Rsc, Scope,
};
use m2m_security::e2e::group_message::{CredentialInfo, GroupKeyMgmt};
use m2m_security::e2e::jose::{EcKeyPair, SymmetricKey};
use m2m_security::e2e::multicast::Sender;
use m2m_security::secure_environment::check_private_file;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bytes of a multicast group key (`dir` A128GCM).
const GROUP_KEY_LEN: usize = 16;

/// Which members each capable member hosting CSE holds (SP-relative CSE-ID -> its CSEBase
/// address and members): a Multicast Group Information is made for one plan.
type Plan = BTreeMap<String, (String, Vec<String>)>;

/// What is known of one `<group>`'s multicast group.
enum Slot {
    Unknown,
    Ready(Arc<GroupInfo>),
    /// No multicast group could be made for this plan (fewer than two CSEs joined) at `at`:
    /// not tried again for [`RETRY_AFTER`], so fan-outs do not each re-key every member.
    Failed {
        plan: Plan,
        at: std::time::Instant,
    },
}

/// How long a plan that failed is not tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Group addresses are `first_address` plus a hash of the group in `0..ADDRESSES`: stable across
/// restarts without allocation state; groups that share one are told apart by their target.
const ADDRESSES: u32 = 256;

/// The Multicast Group Information of one `<group>` (TS-0001 table 10.2.7.13.0-1).
pub(crate) struct GroupInfo {
    /// The plan it was made for: any change (memberIDs, a CSE that left, registered or lost its
    /// multicastCapability) issues a new key.
    plan: Plan,
    address: Ipv4Addr,
    /// multicastGroupFanoutTarget.
    target: String,
    key: SymmetricKey,
    /// Per member hosting CSE (SP-relative CSE-ID): its `<localMulticastGroup>` and members.
    per_cse: BTreeMap<String, MemberCse>,
}

impl GroupInfo {
    /// Whether `member` (a memberID) is reached by this multicast group.
    pub(crate) fn covers(&self, member: &str) -> bool {
        self.per_cse
            .values()
            .any(|c| c.members.iter().any(|m| m == member))
    }
}

struct MemberCse {
    /// The address of its `<localMulticastGroup>`.
    lmg: String,
    members: Vec<String>,
}

/// A fan-out waiting for its answers: which CSE answers for which members, and where to.
struct Pending {
    expected: HashMap<String, Vec<String>>,
    answers: mpsc::UnboundedSender<(String, Vec<Value>)>,
}

pub struct Host {
    socket: tokio::sync::OnceCell<tokio::net::UdpSocket>,
    interface: Ipv4Addr,
    ttl: u32,
    port: u16,
    first: u32,
    sender: tokio::sync::Mutex<Sender>,
    /// The public JWK that verifies this CSE's fan-outs (`spk` of every `<localMulticastGroup>`).
    spk: Value,
    /// One slot per `<group>`, each locked while its multicast group is (re)made: one slow
    /// member hosting CSE holds up its group only.
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    pending: Mutex<HashMap<String, Pending>>,
    window: Duration,
    timeout: Duration,
}

impl Host {
    /// The group hosting side, when `[multicast]` is configured and `group_credentials` has a
    /// signing key (the fan-outs are signed with it).
    pub fn from_config(cfg: &Config, cse_id: &str) -> anyhow::Result<Option<Self>> {
        let (Some(m), Some(path)) = (&cfg.multicast, &cfg.group_credentials.signing_key) else {
            return Ok(None);
        };
        check_private_file(path).map_err(|e| anyhow::anyhow!(e))?;
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
        let key = EcKeyPair::from_jwk(&text)
            .map_err(|e| anyhow::anyhow!("group_credentials.signing_key: {}", e.reason))?;
        let spk: Value = serde_json::from_str(&key.public_key().to_jwk())?;
        Ok(Some(Self {
            socket: tokio::sync::OnceCell::new(),
            interface: m.interface_addr()?,
            ttl: m.ttl,
            port: m.port,
            first: u32::from(m.first_group_addr()?),
            sender: tokio::sync::Mutex::new(Sender::new(key, cse_id)),
            spk,
            groups: Default::default(),
            pending: Default::default(),
            window: Duration::from_millis(m.response_window_ms),
            timeout: Duration::from_millis(m.response_timeout_ms),
        }))
    }

    fn slot(&self, group_ri: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            groups
                .entry(group_ri.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Unknown))),
        )
    }

    /// The Multicast Group Information of `group`, made (or re-keyed) first when its plan
    /// changed; `None` when fewer than two member hosting CSEs can join (unicast for all).
    pub(crate) async fn ensure(&self, cse: &Arc<Cse>, group: &Resource) -> Option<Arc<GroupInfo>> {
        let plan = plan(cse, group);
        let slot = self.slot(group.ri());
        let mut slot = slot.lock().await;
        let old = match std::mem::replace(&mut *slot, Slot::Unknown) {
            Slot::Ready(g) if g.plan == plan => {
                *slot = Slot::Ready(Arc::clone(&g));
                return Some(g);
            }
            Slot::Failed { plan: p, at } if p == plan && at.elapsed() < RETRY_AFTER => {
                *slot = Slot::Failed { plan: p, at };
                return None;
            }
            Slot::Ready(g) => Some(g),
            Slot::Failed { .. } | Slot::Unknown => None,
        };
        let new = self.establish(cse, group, plan.clone()).await;
        // Member hosting CSEs that no longer take part leave (their key is already outdated).
        for (id, c) in old.iter().flat_map(|o| &o.per_cse) {
            if !new.as_ref().is_some_and(|n| n.per_cse.contains_key(id)) {
                self.delete_lmg(cse, &c.lmg).await;
            }
        }
        *slot = match &new {
            Some(n) => Slot::Ready(Arc::clone(n)),
            None => Slot::Failed {
                plan,
                at: std::time::Instant::now(),
            },
        };
        new
    }

    /// Forgets `group` (deleted) and has its member hosting CSEs leave.
    pub(crate) async fn forget(&self, cse: &Arc<Cse>, group_ri: &str) {
        let slot = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group_ri);
        let Some(slot) = slot else { return };
        let old = std::mem::replace(&mut *slot.lock().await, Slot::Unknown);
        if let Slot::Ready(g) = old {
            for c in g.per_cse.values() {
                self.delete_lmg(cse, &c.lmg).await;
            }
        }
    }

    async fn establish(
        &self,
        cse: &Arc<Cse>,
        group: &Resource,
        plan: Plan,
    ) -> Option<Arc<GroupInfo>> {
        if plan.len() < 2 {
            return None;
        }
        let table = cse.group_credentials.as_ref()?;
        let address = group_address(self.first, group.ri());
        let target = format!("{}/{}", cse.id.cse_id.sp_relative(), segment(group.ri()));
        let kid = format!("mcast-{}", crate::context::random_suffix(12));
        let key = SymmetricKey::generate(kid, GROUP_KEY_LEN);
        let now = cse.now();
        let info = CredentialInfo {
            group: target.clone(),
            version: table.next_version(now),
            issued: now,
        };
        let mut per_cse = BTreeMap::new();
        for (id, (cb, members)) in plan.clone() {
            let lmg = json!({
                "mad": ip_address(address),
                "mli": members,
                "rstt": cse.id.cse_id.sp_relative(),
                "rstw": iso_duration(self.window),
            });
            match self
                .upsert(cse, table, &id, &cb, group.ri(), &target, lmg, &key, &info)
                .await
            {
                Ok(lmg) => {
                    per_cse.insert(id, MemberCse { lmg, members });
                }
                Err(e) => {
                    tracing::warn!(target: "audit", cse = %id, group = group.ri(), rsc = e.rsc.code(), reason = %e.dbg, "member hosting CSE did not join the multicast group: unicast for its members")
                }
            }
        }
        if per_cse.len() < 2 {
            for c in per_cse.values() {
                self.delete_lmg(cse, &c.lmg).await;
            }
            return None;
        }
        tracing::info!(target: "audit", group = group.ri(), address = %address, kid = key.kid(), version = info.version, csEs = ?per_cse.keys().collect::<Vec<_>>(), "multicast group keyed");
        Some(Arc::new(GroupInfo {
            plan,
            address,
            target,
            key,
            per_cse,
        }))
    }

    /// Creates the `<localMulticastGroup>` on the member hosting CSE `id` (CSEBase at `cb`), or
    /// updates the one made before (a restart); its address.
    #[allow(clippy::too_many_arguments)]
    async fn upsert(
        &self,
        cse: &Arc<Cse>,
        table: &GroupCredentials,
        id: &str,
        cb: &str,
        group_ri: &str,
        target: &str,
        mut lmg: Value,
        key: &SymmetricKey,
        info: &CredentialInfo,
    ) -> M2mResult<String> {
        lmg["gck"] = json!(table.seal_for(cse, id, key, info)?);
        lmg["spk"] = self.spk.clone();
        let rn = segment(group_ri);
        let address = format!("{cb}/{rn}");
        let mut create = lmg.clone();
        create["rn"] = json!(rn);
        create["mgft"] = json!(target);
        let resp = send(cse, Operation::Create, cb, json!({ "m2m:lmg": create })).await;
        match resp.rsc {
            Rsc::Created => Ok(address),
            Rsc::Conflict => {
                let resp = send(cse, Operation::Update, &address, json!({ "m2m:lmg": lmg })).await;
                resp.into_result().map(|_| address)
            }
            _ => resp.into_result().map(|_| address),
        }
    }

    async fn delete_lmg(&self, cse: &Arc<Cse>, lmg: &str) {
        let resp = send(cse, Operation::Delete, lmg, Value::Null).await;
        if !resp.rsc.is_success() && resp.rsc != Rsc::NotFound {
            tracing::warn!(target: "audit", lmg, rsc = resp.rsc.code(), "localMulticastGroup not deleted: that CSE keeps an outdated key only");
        }
    }

    /// Sends `req` for the members of `group` (`<group>/fopt/rest`) in one datagram and collects
    /// the member hosting CSEs' answers: one `m2m:rsp` per member, 4008 for those not answered
    /// in time.
    pub(crate) async fn fan_out(
        &self,
        cse: &Arc<Cse>,
        req: &Request,
        rest: &str,
        peer: &Peer,
        group: &GroupInfo,
    ) -> Vec<Value> {
        let members = || group.per_cse.values().flat_map(|c| c.members.iter());
        let to_of = |m: &str| join(m, rest);
        let failed = |e: M2mError| -> Vec<Value> {
            members()
                .map(|m| member_rsp(e.rsc, &req.rqi, m, &to_of(m), Some(&e.dbg)))
                .collect()
        };
        // As for unicast retargeting: only an originator something proves is relayed.
        if !peer.proof.identifies() {
            return failed(M2mError::new(
                Rsc::OriginatorNotAuthenticated,
                "a request for another CSE needs a security association that proves its originator",
            ));
        }
        let deadline = self.deadline(cse, req);
        let rqi = format!("mc-{}", crate::context::random_suffix(16));
        let inner = self.inner_request(cse, req, rest, peer, group, &rqi, deadline);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let expected: HashMap<String, Vec<String>> = group
            .per_cse
            .iter()
            .map(|(id, c)| (id.clone(), c.members.clone()))
            .collect();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                rqi.clone(),
                Pending {
                    expected: expected.clone(),
                    answers: tx,
                },
            );
        // Removed however this ends, also when the originator's request is dropped midway.
        let _waiting = Waiting {
            host: self,
            rqi: &rqi,
        };
        let sent = self.send_datagram(cse, group, &inner).await;
        let mut answers: HashMap<String, Vec<Value>> = HashMap::new();
        if sent.is_ok() {
            let wait = (deadline - cse.now()).to_std().unwrap_or_default();
            let timer = tokio::time::sleep(wait);
            tokio::pin!(timer);
            while answers.len() < expected.len() {
                tokio::select! {
                    a = rx.recv() => match a {
                        Some((id, entries)) => { answers.insert(id, entries); }
                        None => break,
                    },
                    _ = &mut timer => break,
                }
            }
        }
        if let Err(e) = sent {
            return failed(e);
        }
        let mut out = Vec::new();
        for (id, c) in &group.per_cse {
            let mut entries = answers.remove(id).unwrap_or_default();
            // One entry per member: the first a CSE gave for it; 4008 for a member it left out.
            let mut seen = std::collections::HashSet::new();
            entries.retain(|e| {
                seen.insert(
                    e.get("fr")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )
            });
            for m in &c.members {
                if !seen.contains(m.as_str()) {
                    entries.push(member_rsp(
                        Rsc::RequestTimeout,
                        &req.rqi,
                        m,
                        &to_of(m),
                        Some("no answer in time"),
                    ));
                }
            }
            out.extend(entries);
        }
        // The originator's request identifier, as for unicast members.
        for e in &mut out {
            e["rqi"] = json!(req.rqi);
        }
        out
    }

    /// The Request Expiration Timestamp of the fan-out: the originator's when it set one that
    /// parses and is sooner than the local policy's wait.
    fn deadline(&self, cse: &Cse, req: &Request) -> DateTime<Utc> {
        let policy = cse.now()
            + chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::seconds(3));
        req.rqet
            .as_deref()
            .and_then(|t| m2m_core::time::parse(t).ok())
            .map_or(policy, |t| t.min(policy))
    }

    /// The primitive the datagram carries: To the fan-out target, From the originator as seen
    /// from outside this CSE, no Response Type (TS-0004 GrphostCSE-1.0).
    #[allow(clippy::too_many_arguments)]
    fn inner_request(
        &self,
        cse: &Cse,
        req: &Request,
        rest: &str,
        peer: &Peer,
        group: &GroupInfo,
        rqi: &str,
        deadline: DateTime<Utc>,
    ) -> Request {
        let from = peer
            .originator
            .as_ref()
            .map(|e| e.as_seen_from(&cse.id.home))
            .or_else(|| req.from.clone());
        let mut inner = Request::new(req.op, join(&group.target, rest), from, rqi);
        inner.rvi = req.rvi.clone();
        inner.ty = req.ty;
        inner.pc = req.pc.clone();
        inner.rcn = req.rcn;
        inner.fc = req.fc.clone();
        inner.drt = req.drt;
        inner.rqet = Some(m2m_core::time::format(deadline));
        inner
    }

    async fn send_datagram(&self, cse: &Cse, group: &GroupInfo, inner: &Request) -> M2mResult<()> {
        let primitive = zeroize::Zeroizing::new(inner.to_json().to_string());
        // Held until the datagram is sent: sequence numbers leave in the order they were taken.
        let mut sender = self.sender.lock().await;
        let sealed = sender.seal(
            primitive.as_bytes(),
            &group.key,
            GroupKeyMgmt::Dir,
            cse.now(),
        )?;
        let datagram = encode_datagram(&group.target, &sealed)?;
        let unreachable = |e: std::io::Error| {
            tracing::warn!(error = %e, "multicast fan-out not sent");
            M2mError::new(
                Rsc::TargetNotReachable,
                "the multicast group cannot be reached",
            )
        };
        let socket = self
            .socket
            .get_or_try_init(|| async { sending_socket(self.interface, self.ttl) })
            .await
            .map_err(unreachable)?;
        socket
            .send_to(&datagram, (group.address, self.port))
            .await
            .map_err(unreachable)?;
        drop(sender);
        tracing::debug!(target = %group.target, address = %group.address, bytes = datagram.len(), "multicast fan-out sent");
        Ok(())
    }

    /// A member hosting CSE's answer (a NOTIFY to this CSEBase carrying `m2m:rsp`), accepted only
    /// from the CSE itself over its association, for a fan-out waiting for it, and only for the
    /// members that CSE hosts.
    fn accept(&self, req: &Request, rsp: &Value, peer: &Peer) -> M2mResult<Response> {
        let who = match &peer.originator {
            Some(e)
                if e.is_cse()
                    && peer.proof.is_authenticated()
                    && peer.bound_entity() == Some(e) =>
            {
                e.sp_relative()
            }
            _ => {
                tracing::warn!(target: "audit", originator = ?peer.originator, "multicast answer refused: not a member hosting CSE speaking for itself");
                return Err(crate::access::refused());
            }
        };
        let rqi = rsp.get("rqi").and_then(Value::as_str).unwrap_or_default();
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = pending.get(rqi) else {
            return Err(M2mError::not_found(
                "no multicast fan-out waits for this answer",
            ));
        };
        let Some(members) = p.expected.get(&who) else {
            tracing::warn!(target: "audit", cse = %who, "multicast answer refused: that CSE was not sent this fan-out");
            return Err(crate::access::refused());
        };
        let entries: Vec<Value> = rsp
            .pointer("/pc/m2m:agr/m2m:rsp")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| {
                let fr = e.get("fr").and_then(Value::as_str).unwrap_or_default();
                let own = members.iter().any(|m| m == fr);
                if !own {
                    tracing::warn!(target: "audit", cse = %who, member = fr, "multicast answer entry dropped: not a member that CSE hosts");
                }
                own
            })
            .cloned()
            .collect();
        let _ = p.answers.send((who, entries));
        Ok(Response::new(Rsc::Ok, &req.rqi, None))
    }
}

/// A fan-out's entry in `pending`, removed when it is dropped.
struct Waiting<'a> {
    host: &'a Host,
    rqi: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.host
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.rqi);
    }
}

/// A NOTIFY to the CSEBase: a member hosting CSE's answer to a multicast fan-out.
pub(crate) fn handle_notify(cse: &Cse, req: &Request, peer: &Peer) -> Option<M2mResult<Response>> {
    let rsp = req.pc.as_ref()?.get("m2m:rsp")?;
    let host = cse.multicast_host.as_ref()?;
    Some(host.accept(req, rsp, peer))
}

/// The SP-relative CSE-ID and CSEBase address of the member hosting CSE of `member`, when it is
/// registered here with multicastCapability IP (TS-0001 clause 10.2.7.13.1 step 004, note 2).
fn capable_host(cse: &Cse, member: &str) -> Option<(String, String)> {
    let addr = Address::parse(member).ok()?;
    let Locality::Remote(Some(id)) = resolve::locality(cse, &addr) else {
        return None;
    };
    let csr = cse.store.get(id.bare()).ok()??;
    if csr.ty != ResourceType::RemoteCse || csr.attrs.get("mtcc").and_then(Value::as_u64) != Some(2)
    {
        return None;
    }
    let cb = csr.attrs.get("cb")?.as_str()?;
    is_own_cse_base(&id, cb).then(|| (id.sp_relative(), cb.to_owned()))
}

/// The address of the multicast group of `group_ri` from the range starting at `first` (see
/// [`ADDRESSES`]).
fn group_address(first: u32, group_ri: &str) -> Ipv4Addr {
    // FNV-1a: stable across builds and restarts, unlike the std hasher.
    let h = group_ri.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Ipv4Addr::from(first.wrapping_add(h % ADDRESSES))
}

/// Whether `cb` (a `<remoteCSE>`'s CSEBase) is the CSEBase of the CSE `csi` (`/{csi}/{name}`).
/// Requests go there as this CSE itself, so an address elsewhere (here, or another CSE) is
/// never used.
fn is_own_cse_base(csi: &CseId, cb: &str) -> bool {
    Address::parse(cb).is_ok_and(|a| {
        matches!(&a.scope, Scope::SpRelative(c) if c == csi)
            && !a.path.is_empty()
            && !a.path.contains('/')
    })
}

/// The plan of `group` now: its members by capable member hosting CSE.
fn plan(cse: &Cse, group: &Resource) -> Plan {
    let mut plan = Plan::new();
    for m in string_list(group.attrs.get("mid")) {
        if let Some((id, cb)) = capable_host(cse, &m) {
            plan.entry(id).or_insert((cb, Vec::new())).1.push(m);
        }
    }
    plan
}

fn join(base: &str, rest: &str) -> String {
    if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{rest}")
    }
}

fn member_rsp(rsc: Rsc, rqi: &str, member: &str, to: &str, dbg: Option<&str>) -> Value {
    let mut r = Response::new(rsc, rqi, dbg.map(|d| json!({ "m2m:dbg": d })));
    r.from = Some(member.to_owned());
    r.to = Some(to.to_owned());
    r.to_rsp_json()
}

/// xs:duration of `d` in whole milliseconds, e.g. `PT0.200S`.
fn iso_duration(d: Duration) -> String {
    let ms = d.as_millis();
    format!("PT{}.{:03}S", ms / 1000, ms % 1000)
}

async fn send(cse: &Arc<Cse>, op: Operation, to: &str, pc: Value) -> Response {
    let rqi = format!("mcg-{}", crate::context::random_suffix(10));
    let mut r = Request::new(op, to, Some(cse.id.cse_id.sp_relative()), rqi);
    if op == Operation::Create {
        r.ty = Some(ResourceType::LocalMulticastGroup);
    }
    if !pc.is_null() {
        r.pc = Some(pc);
    }
    cse.handle(r, Peer::internal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_cse_is_reached_at_its_own_cse_base_only() {
        let mn1 = CseId::parse("/id-mn1").unwrap();
        assert!(is_own_cse_base(&mn1, "/id-mn1/cse-mn1"));
        for cb in [
            "/id-in/cse-in/locks/fopt",
            "/id-mn2/cse-mn2",
            "/id-mn1",
            "/id-mn1/",
            "/id-mn1/cse-mn1/x",
            "/id-mn10/cse-mn10",
            "cse-mn1",
            "//m2m.example.com/id-mn1/cse-mn1",
        ] {
            assert!(!is_own_cse_base(&mn1, cb), "{cb}");
        }
    }

    #[test]
    fn group_addresses_stay_in_the_range_and_differ_between_groups() {
        let first = u32::from(Ipv4Addr::new(239, 255, 77, 1));
        let all: std::collections::HashSet<Ipv4Addr> = (0..200)
            .map(|i| group_address(first, &format!("grp{i}")))
            .collect();
        for a in &all {
            assert!(a.is_multicast() && u32::from(*a) - first < ADDRESSES, "{a}");
        }
        assert!(all.len() > 100, "spread over the range: {}", all.len());
        assert_eq!(group_address(first, "grp7"), group_address(first, "grp7"));
    }
}
