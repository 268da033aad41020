//! Group Authentication Solution 1 (seeds/001 clause 8.2.1, TR-0012): inner TLS-PSK between each
//! member Ax and the group agent B (MN-CSE), outer association between B and C (IN-CSE), then the
//! Group Security Association Handshake: C derives Ksx per member and sends Rand through B.
//!
//! Both ends live here: [`GroupKeys`] is C's table of current Ksx (consulted by the TLS-PSK
//! callback instead of Kpsaxi), [`Agent`] is B's record of live inner associations and of the
//! current round. The primitives are NOTIFY requests to a CSEBase whose content is one of the typed
//! contents of `m2m_core::group_authentication`, so they pass the impersonation check like any
//! request; the access decision for them is made here.

use crate::association::{Association, Peer, Proof, SaeMode};
use crate::config::GroupAuthenticationSection;
use crate::context::Context;
use chrono::{DateTime, Utc};
use m2m_core::group_authentication::{
    self as wire, KeyMaterial, KeyRequest, Round, RoundAnswer, RoundMember,
};
use m2m_core::{
    EntityId, Home, M2mError, M2mResult, Operation, Request, Response, ResponseStatusCode as Rsc,
};
use m2m_security::credentials::{CredentialId, KpsaId, PskEntry, Secret};
use m2m_security::kdf;
use m2m_security::tls::PskKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 4103 for a group authentication request that is not for this requester; why, in the audit log.
fn refused(why: impl std::fmt::Display) -> M2mError {
    tracing::warn!(target: "audit", reason = %why, "group authentication refused");
    crate::access::refused()
}

// ---------------------------------------------------------------------------------------------
// Entity C: the IN-CSE
// ---------------------------------------------------------------------------------------------

/// A member as C's configuration provisions it.
struct Member {
    agent: EntityId,
    /// The AE-ID/CSE-ID of the member's PSK row.
    entity: EntityId,
    /// Enrolee-Ax-ID as the row writes it (the member derives Ksx with the same text).
    eid: String,
    kpsaxi: Secret,
}

/// A Ksx of the current round.
struct CurrentKey {
    entity: EntityId,
    ksx: Secret,
    until: Instant,
}

/// C's group keys: members by KpsaxiId (one equality for KpsaIDs: the FQDN without case, as the
/// psk lookup table compares them), and the Ksx of each agent's latest round by KsxId.
pub struct GroupKeys {
    lifetime: Duration,
    members: HashMap<KpsaId, Member>,
    current: Mutex<HashMap<KpsaId, CurrentKey>>,
}

impl GroupKeys {
    /// Resolves every configured member through `psk` (the secure environments); `None` when no
    /// agent is configured.
    pub fn from_config(
        section: &GroupAuthenticationSection,
        home: &Home,
        psk: impl Fn(&str) -> Option<PskEntry>,
    ) -> anyhow::Result<Option<Self>> {
        let mut members = HashMap::new();
        for row in &section.agents {
            let agent = EntityId::parse(&row.agent, home)
                .ok()
                .filter(EntityId::is_cse)
                .ok_or_else(|| {
                    anyhow::anyhow!("group_authentication: agent '{}' is no CSE-ID", row.agent)
                })?;
            for kpsaxi_id in &row.members {
                let entry = psk(kpsaxi_id).ok_or_else(|| {
                    anyhow::anyhow!("group_authentication: member '{kpsaxi_id}' has no PSK row")
                })?;
                let eid = entry.entity_id.clone().unwrap_or_default();
                let entity = EntityId::parse(&eid, home)
                    .ok()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "group_authentication: the PSK row of '{kpsaxi_id}' names no AE-ID or CSE-ID"
                        )
                    })?;
                let member = Member {
                    agent: agent.clone(),
                    entity,
                    eid,
                    kpsaxi: entry.key,
                };
                members.insert(entry.kpsa_id, member);
            }
        }
        if members.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            lifetime: Duration::from_secs(section.key_lifetime_seconds),
            members,
            current: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether `psk_identity` is a member's KsxId, which only a current Ksx opens (in any letter
    /// case the psk lookup table would accept for the member's long-term row).
    pub fn governs(&self, psk_identity: &KpsaId) -> bool {
        self.members.contains_key(psk_identity)
    }

    /// The PSK for a member's KsxId: its current Ksx, never Kpsaxi (NOTE 7: the member proves
    /// possession of the derived key).
    pub fn psk(&self, psk_identity: &KpsaId) -> Option<PskKey> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let (id, key) = current
            .get_key_value(psk_identity)
            .filter(|(_, k)| k.until > Instant::now())?;
        Some(PskKey {
            key: zeroize::Zeroizing::new(key.ksx.expose().to_vec()),
            association: Association {
                mode: SaeMode::GroupKey,
                credential: CredentialId::for_kpsa(id),
                entity: Some(key.entity.clone()),
            },
        })
    }

    /// Whether `cse_id` is a configured group agent.
    fn is_agent(&self, agent: &EntityId) -> bool {
        self.members.values().any(|m| m.agent == *agent)
    }

    /// One round for `agent`: every listed member must be in its group; a fresh Rand, a Ksx per
    /// listed member, and the agent's previous keys are gone (unlisted members keep none).
    fn round(
        &self,
        home: &Home,
        agent: &EntityId,
        listed: &[String],
        now: DateTime<Utc>,
    ) -> M2mResult<RoundAnswer> {
        if listed.is_empty() {
            return Err(M2mError::bad_request("a round names at least one member"));
        }
        let mut chosen = Vec::with_capacity(listed.len());
        for id in listed {
            let entity = EntityId::parse(id, home).ok();
            let found = self
                .members
                .iter()
                .find(|(_, m)| m.agent == *agent && Some(&m.entity) == entity.as_ref());
            match found {
                Some(pair) => chosen.push((id, pair)),
                None => {
                    return Err(refused(format_args!(
                        "'{id}' is not a member of the group of agent {agent}"
                    )))
                }
            }
        }
        let rand = kdf::new_group_rand();
        let until = Instant::now() + self.lifetime;
        let exp = now + chrono::Duration::from_std(self.lifetime).unwrap_or_default();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let agents_keys: Vec<KpsaId> = self
            .members
            .iter()
            .filter(|(_, m)| m.agent == *agent)
            .map(|(k, _)| k.clone())
            .collect();
        for k in agents_keys {
            current.remove(&k);
        }
        let mut mbr = Vec::with_capacity(chosen.len());
        for (id, (kid, m)) in chosen {
            let eid = m.eid.clone();
            let ksx = kdf::ksx(&m.kpsaxi, &eid, &rand);
            current.insert(
                kid.clone(),
                CurrentKey {
                    entity: m.entity.clone(),
                    ksx,
                    until,
                },
            );
            mbr.push(RoundMember {
                id: id.clone(),
                eid,
                kid: kid.to_string(),
            });
        }
        Ok(RoundAnswer {
            rand: wire::rand_to_hex(&rand),
            exp: m2m_core::time::format(exp),
            mbr,
        })
    }
}

/// C: a NOTIFY carrying a round. Only a configured agent, authenticated by its association and
/// speaking for itself, gets one.
async fn answer_round(
    cse: &Context,
    req: &Request,
    peer: &Peer,
    round: Round,
) -> M2mResult<Response> {
    let agent = peer
        .bound_entity()
        .filter(|e| peer.proof == Proof::Authenticated && peer.originator.as_ref() == Some(*e));
    let Some(agent) = agent else {
        return Err(refused(format_args!(
            "round from {:?}: not over the originator's own association",
            peer.originator
        )));
    };
    let Some(keys) = cse.group_keys.as_ref() else {
        return Err(refused("this CSE serves no group authentication"));
    };
    if !keys.is_agent(agent) {
        return Err(refused(format_args!("{agent} is not a group agent here")));
    }
    match keys.round(&cse.id.home, agent, &round.mid, cse.now()) {
        Ok(answer) => {
            tracing::info!(target: "audit", agent = %agent, members = ?round.mid, exp = %answer.exp, "group authentication round: Ksx derived");
            Ok(Response::new(
                Rsc::Ok,
                &req.rqi,
                Some(wire::wrap(wire::ROUND_ANSWER, &answer)),
            ))
        }
        Err(e) => {
            tracing::warn!(target: "audit", agent = %agent, members = ?round.mid, reason = %e.dbg, "group authentication round refused");
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entity B: the MN-CSE, group agent
// ---------------------------------------------------------------------------------------------

/// A round B obtained from C, kept while its keys are valid so that members asking one after
/// the other share it instead of each ending the others' keys.
struct AgentRound {
    answer: RoundAnswer,
    expires: DateTime<Utc>,
}

/// B's state: who completed an inner TLS-PSK association and is connected now, and the round.
#[derive(Default)]
pub struct Agent {
    /// Bound entity -> number of live inner associations.
    live: Arc<Mutex<HashMap<EntityId, usize>>>,
    round: tokio::sync::Mutex<Option<AgentRound>>,
}

/// Holds an inner association as live until the connection ends.
pub struct InnerGuard {
    live: Arc<Mutex<HashMap<EntityId, usize>>>,
    entity: EntityId,
}

impl Drop for InnerGuard {
    fn drop(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.entity) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.entity);
            }
        }
    }
}

impl Agent {
    /// Records a TLS-PSK association bound to an entity as inner-authenticated while the guard
    /// lives; other associations are not inner authentication.
    pub fn enter(&self, association: &Association) -> Option<InnerGuard> {
        if association.mode != SaeMode::ProvisionedKey {
            return None;
        }
        let entity = association.entity.clone()?;
        *self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(entity.clone())
            .or_insert(0) += 1;
        Some(InnerGuard {
            live: Arc::clone(&self.live),
            entity,
        })
    }

    /// The configured members with a live inner association, as configured.
    fn live_members(&self, cse: &Context) -> Vec<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        cse.cfg
            .group_agent
            .members
            .iter()
            .filter(|m| EntityId::parse(m, &cse.id.home).is_ok_and(|e| live.contains_key(&e)))
            .cloned()
            .collect()
    }
}

/// The configured member that `entity` is, if any (as configured).
fn configured_member(cse: &Context, entity: &EntityId) -> Option<String> {
    cse.cfg
        .group_agent
        .members
        .iter()
        .find(|m| EntityId::parse(m, &cse.id.home).is_ok_and(|e| e == *entity))
        .cloned()
}

/// Whether the round member `id` names `member` (both as IDs).
fn names(cse: &Context, id: &str, member: &str) -> bool {
    let parse = |s: &str| EntityId::parse(s, &cse.id.home).ok();
    parse(id).is_some() && parse(id) == parse(member)
}

/// B: a member's request for key material, over its inner association.
async fn answer_key_request(cse: &Context, req: &Request, peer: &Peer) -> M2mResult<Response> {
    if cse.cfg.group_agent.members.is_empty() {
        return Err(refused("this CSE is no group agent"));
    }
    let inner = peer
        .association
        .as_ref()
        .filter(|a| a.mode == SaeMode::ProvisionedKey && peer.proof == Proof::Authenticated)
        .and_then(|a| a.entity.as_ref());
    let Some(member) = inner.and_then(|e| configured_member(cse, e)) else {
        return Err(refused(format_args!(
            "key request from {:?}: no inner TLS-PSK association of a member",
            peer.originator
        )));
    };
    let mut round = cse.group_agent.round.lock().await;
    let now = cse.now();
    let reusable = round
        .as_ref()
        .filter(|r| r.expires > now && r.answer.mbr.iter().any(|m| names(cse, &m.id, &member)));
    let answer = match reusable {
        Some(r) => r.answer.clone(),
        None => {
            let fresh = ask_for_round(cse).await?;
            let expires = m2m_core::time::parse(&fresh.exp)
                .map_err(|_| M2mError::internal("the registrar's round has no valid exp"))?;
            *round = Some(AgentRound {
                answer: fresh.clone(),
                expires,
            });
            fresh
        }
    };
    let Some(mine) = answer.mbr.iter().find(|m| names(cse, &m.id, &member)) else {
        return Err(M2mError::internal(
            "the registrar's round does not name the member",
        ));
    };
    let registrar = cse
        .cfg
        .registrar
        .as_ref()
        .map(|r| r.cse_id.clone())
        .unwrap_or_default();
    let material = KeyMaterial {
        rand: answer.rand.clone(),
        eid: mine.eid.clone(),
        kid: mine.kid.clone(),
        csi: registrar,
        exp: answer.exp.clone(),
    };
    tracing::info!(target: "audit", member = %member, "group key material forwarded");
    Ok(Response::new(
        Rsc::Ok,
        &req.rqi,
        Some(wire::wrap(wire::KEY_MATERIAL, &material)),
    ))
}

/// B → C over the outer association: a round naming exactly the members connected now.
async fn ask_for_round(cse: &Context) -> M2mResult<RoundAnswer> {
    let reg = cse
        .cfg
        .registrar
        .as_ref()
        .ok_or_else(|| M2mError::internal("no registrar configured"))?;
    let mid = cse.group_agent.live_members(cse);
    let mut notify = Request::new(
        Operation::Notify,
        reg.resource_name.clone(),
        Some(cse.id.cse_id.sp_relative()),
        format!("gauth-{}", crate::context::random_suffix(10)),
    );
    notify.pc = Some(wire::wrap(wire::ROUND, &Round { mid: mid.clone() }));
    tracing::info!(target: "audit", registrar = %reg.cse_id, members = ?mid, "group authentication round requested");
    let resp = cse.registrar_client.send(&reg.url, &notify).await?;
    if !resp.rsc.is_success() {
        return Err(M2mError::new(
            resp.rsc,
            format!(
                "the registrar refused the group authentication round: {}",
                resp.dbg().unwrap_or("")
            ),
        ));
    }
    let answer: RoundAnswer = wire::unwrap(wire::ROUND_ANSWER, resp.pc.as_ref())
        .ok_or_else(|| M2mError::internal("the registrar's answer carries no m2m:gaRand"))??;
    wire::rand_from_hex(&answer.rand)?;
    Ok(answer)
}

/// A NOTIFY to the CSEBase: answers it if it carries one of the handshake's contents.
pub async fn handle_notify(
    cse: &Context,
    req: &Request,
    peer: &Peer,
) -> Option<M2mResult<Response>> {
    let pc = req.pc.as_ref();
    if let Some(round) = wire::unwrap::<Round>(wire::ROUND, pc) {
        return Some(match round {
            Ok(round) => answer_round(cse, req, peer, round).await,
            Err(e) => Err(e),
        });
    }
    if let Some(ask) = wire::unwrap::<KeyRequest>(wire::KEY_REQUEST, pc) {
        return Some(match ask {
            Ok(_) => answer_key_request(cse, req, peer).await,
            Err(e) => Err(e),
        });
    }
    None
}
