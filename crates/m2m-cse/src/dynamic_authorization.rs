//! Direct dynamic authorization at the Hosting CSE (TS-0003 clause 7.3.2.2; TS-0004 clause
//! 7.5.1.2.10; TS-0001 clause 11.5.2).
//!
//! When no access control policy grants a request, and the resource whose policies decide it is
//! linked (`daci`, its own or else its nearest ancestor's) to an enabled
//! `<dynamicAuthorizationConsultation>`, the CSE asks a Dynamic Authorization Server of that
//! resource's `dap` (a NOTIFY carrying `m2m:seci` sit 1, [`m2m_security::dynamic_authorization`])
//! and decides the request again with the privileges the server grants.
//!
//! - Only the servers of `[dynamic_authorization] servers` are contacted, over https with this
//!   CSE's certificate (the server verified by name) or http to a loopback address: whoever
//!   creates a consultation resource cannot point the CSE at a server of its choice.
//! - A grant is kept in memory for its privilegesLifetime (at most `max_lifetime_seconds`), per
//!   originator and resource, and decides that originator's later requests there without a
//!   consultation; TS-0004 has the CSE store it as an `<accessControlPolicy>` under the target,
//!   which most targets cannot have as a child (TS-0001 9.6.1.1) and which would have to be
//!   linked through the target's `acpi` (docs/CONFORMANCE.md).
//! - A refusal, a server that does not answer in `timeout_ms`, or an answer that is not a
//!   Dynamic Authorization Response is a denial (4103, fail closed), kept `refusal_cache_seconds`
//!   for that originator, resource and operation so that refused requests are not each a
//!   consultation.

use crate::access::Grant;
use crate::association::Peer;
use crate::config::{Config, DynamicAuthorizationSection};
use crate::context::Context;
use crate::resolve::Target;
use crate::store::{string_list, Resource};
use m2m_core::{EntityId, RoleId};
use m2m_core::{M2mError, M2mResult, Operation, Request, ResourceType};
use m2m_security::access_control::Privileges;
use m2m_security::dynamic_authorization::{DasAnswer, DasRequest};
use m2m_security::token;
use openssl::ssl::SslContext;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cached decisions at most; beyond, expired ones are dropped and new ones not kept.
const MAX_CACHED: usize = 10_000;
/// Local token IDs kept per holder.
const MAX_LOCAL_PER_HOLDER: usize = 8;
/// Consultation resources looked at per request (a long daci list is not a long wait).
const MAX_CONSULTATIONS: usize = 4;
/// Servers asked per request at most.
const MAX_ATTEMPTS: usize = 2;
/// Consultations in progress at once; more are refused, not queued.
const MAX_IN_FLIGHT: usize = 64;
/// Ancestors looked at for a daci.
const MAX_DEPTH: usize = 32;

/// The servers this CSE may consult and what they decided.
pub struct Consultations {
    servers: HashMap<String, m2m_client::Client>,
    /// The identity each server issues its tokens as (its certificate's name; `iss`).
    identities: HashMap<String, String>,
    /// Tokens servers issued, by the local token ID this CSE assigned them (`ltids`).
    local_tokens: Mutex<HashMap<String, LocalToken>>,
    issuers: Vec<token::Issuer>,
    revoked: Option<token::RevokedTokens>,
    timeout: Duration,
    max_lifetime: Duration,
    refusal_ttl: Duration,
    cache: Mutex<HashMap<(String, String), Cached>>,
    in_flight: tokio::sync::Semaphore,
}

/// A token a server issued for an originator, kept under its local token ID.
struct LocalToken {
    token: String,
    /// The holder, absolute.
    holder: String,
    /// notAfter, Unix seconds.
    until: i64,
}

/// What a dynamic authorization decided: the grant, and the local token IDs assigned to the
/// tokens a server issued for the request (the response's Assigned Token Identifiers).
pub struct Dynamic {
    pub grant: Grant,
    pub assigned: Vec<(String, String)>,
}

impl From<Grant> for Dynamic {
    fn from(grant: Grant) -> Self {
        Dynamic {
            grant,
            assigned: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Cached {
    grant: Option<(Privileges, Instant)>,
    /// acop bit -> until when a refusal holds.
    refused: HashMap<u32, Instant>,
}

impl Cached {
    fn expired(&self, now: Instant) -> bool {
        self.grant.as_ref().is_none_or(|(_, until)| *until <= now)
            && self.refused.values().all(|until| *until <= now)
    }
}

impl Consultations {
    /// The `[dynamic_authorization]` servers with their clients; none without the section.
    pub fn from_config(
        cfg: &Config,
        client: &m2m_client::Client,
        certificate: Option<&SslContext>,
    ) -> anyhow::Result<Option<Consultations>> {
        let Some(section) = &cfg.dynamic_authorization else {
            return Ok(None);
        };
        let mut servers = HashMap::new();
        let mut identities = HashMap::new();
        for row in &section.servers {
            let client = match server_kind(&row.url)? {
                Kind::Https(host) => {
                    identities.insert(
                        row.url.clone(),
                        row.server_name.clone().unwrap_or_else(|| host.clone()),
                    );
                    let context = certificate.ok_or_else(|| {
                        anyhow::anyhow!(
                            "dynamic_authorization: {} needs [tls] certificate, private_key and trusted_ca",
                            row.url
                        )
                    })?;
                    client.clone().with_tls(m2m_client::TlsSettings {
                        context: context.clone(),
                        peer: m2m_client::PeerPolicy::Named(
                            row.server_name.clone().unwrap_or(host),
                        ),
                    })
                }
                Kind::Loopback => {
                    match &row.server_name {
                        Some(name) => {
                            identities.insert(row.url.clone(), name.clone());
                        }
                        None => {
                            tracing::warn!(server = %m2m_transport::connector::loggable(&row.url), "dynamic_authorization: a loopback server without server_name: tokens it answers with are refused (their issuer is not known to be it)")
                        }
                    }
                    client.clone()
                }
            };
            servers.insert(row.url.clone(), client);
        }
        let mut issuers = Vec::new();
        for row in &section.token_issuers {
            let jwk = std::fs::read_to_string(&row.public_key).map_err(|e| {
                anyhow::anyhow!(
                    "dynamic_authorization.token_issuers: {}: {e}",
                    row.public_key.display()
                )
            })?;
            let key = m2m_security::e2e::jose::EcPublicKey::from_jwk(&jwk).map_err(|e| {
                anyhow::anyhow!(
                    "dynamic_authorization.token_issuers: {}: {}",
                    row.public_key.display(),
                    e.reason
                )
            })?;
            // The token header's kid picks the issuer: two issuers with one kid would make
            // the second's tokens fail, or be taken for the first's.
            if issuers
                .iter()
                .any(|i: &token::Issuer| i.key.kid() == key.kid())
            {
                anyhow::bail!(
                    "dynamic_authorization.token_issuers: two issuer keys have the kid '{}'",
                    key.kid()
                );
            }
            issuers.push(token::Issuer {
                id: row.id.clone(),
                key,
            });
        }
        let revoked = match &section.revoked_tokens {
            Some(p) => Some(
                token::RevokedTokens::open(p)
                    .map_err(|e| anyhow::anyhow!("dynamic_authorization.revoked_tokens: {e}"))?,
            ),
            None => None,
        };
        let mut c = Self::new(section, servers, issuers, revoked);
        c.identities = identities;
        Ok(Some(c))
    }

    fn new(
        section: &DynamicAuthorizationSection,
        servers: HashMap<String, m2m_client::Client>,
        issuers: Vec<token::Issuer>,
        revoked: Option<token::RevokedTokens>,
    ) -> Self {
        Consultations {
            servers,
            identities: HashMap::new(),
            local_tokens: Mutex::new(HashMap::new()),
            issuers,
            revoked,
            timeout: Duration::from_millis(section.timeout_ms.max(1)),
            max_lifetime: Duration::from_secs(section.max_lifetime_seconds),
            refusal_ttl: Duration::from_secs(section.refusal_cache_seconds),
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    fn local_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalToken>> {
        self.local_tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `token` for `holder` until `until` under a new local token ID; `None` when the
    /// table is full of live tokens.
    fn assign_local(&self, token: &str, holder: &str, until: i64, now: i64) -> Option<String> {
        let mut local = self.local_tokens();
        // A few per holder: the one expiring first makes room for the next.
        let held: Vec<(String, i64)> = local
            .iter()
            .filter(|(_, t)| t.holder == holder)
            .map(|(id, t)| (id.clone(), t.until))
            .collect();
        if held.len() >= MAX_LOCAL_PER_HOLDER {
            if let Some((oldest, _)) = held.iter().min_by_key(|(_, u)| *u) {
                local.remove(oldest);
            }
        }
        if local.len() >= MAX_CACHED {
            local.retain(|_, t| t.until > now);
            if local.len() >= MAX_CACHED {
                return None;
            }
        }
        let id = format!("lt{}", crate::context::random_suffix(16));
        local.insert(
            id.clone(),
            LocalToken {
                token: token.to_owned(),
                holder: holder.to_owned(),
                until,
            },
        );
        Some(id)
    }

    /// The token kept under `id` for `holder`, if it is still valid.
    fn local_token(&self, id: &str, holder: &str, now: i64) -> Option<String> {
        let local = self.local_tokens();
        local
            .get(id)
            .filter(|t| t.holder == holder && t.until > now)
            .map(|t| t.token.clone())
    }

    /// What was decided for `entity` goes with its registration (grants and refusals kept,
    /// local token IDs assigned to it): whoever registers its AE-ID next is decided anew.
    pub(crate) fn forget(&self, entity: &EntityId) {
        let gone = entity.absolute();
        self.cache().retain(|(who, _), _| *who != gone);
        self.local_tokens().retain(|_, t| t.holder != gone);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, key: (String, String), f: impl FnOnce(&mut Cached)) {
        let now = Instant::now();
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.retain(|_, c| !c.expired(now));
            if cache.len() >= MAX_CACHED {
                // Full of live entries: start over rather than stop remembering (the next
                // requests are consulted again, bounded by MAX_IN_FLIGHT).
                cache.clear();
            }
        }
        f(cache.entry(key).or_default());
    }
}

enum Kind {
    Https(String),
    Loopback,
}

/// What a configured server URL is: https (with its host), or http to a loopback address.
fn server_kind(url: &str) -> anyhow::Result<Kind> {
    let bad = || {
        anyhow::anyhow!("dynamic_authorization: '{url}' is not an https URL or an http URL of a loopback address")
    };
    if let Some(rest) = url.strip_prefix("https://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = host_of(authority).ok_or_else(bad)?;
        return Ok(Kind::Https(host));
    }
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = host_of(authority).ok_or_else(bad)?;
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(Kind::Loopback)
    } else {
        Err(bad())
    }
}

fn host_of(authority: &str) -> Option<String> {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// After access control refused `req` on `target`: the grant of a Dynamic Authorization Server,
/// or the refusal as it was.
pub async fn consult(
    cse: &Context,
    req: &Request,
    target: &Target,
    peer: &Peer,
    refusal: M2mError,
) -> M2mResult<Dynamic> {
    let Some(das) = &cse.dynamic_authorization else {
        return Err(refusal);
    };
    if refusal.rsc != m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege {
        return Err(refusal);
    }
    let (Some(originator), Some((subject, child_type))) = (
        peer.originator.as_ref(),
        crate::access::subject_of(req, target),
    ) else {
        return Err(refusal);
    };
    // An originator only claimed is granted nothing by any rule: no consultation for it. And
    // what the security gate decides by other rules than privileges stays decided.
    if !peer.proof.identifies() || !crate::access::dynamically_grantable(req, subject) {
        return Err(refusal);
    }
    // Tokens first, and only they (TS-0001 clause 10.2.3.1: indirect before direct), whether
    // the request carries them or names them by Token-ID.
    if !req.tkns.is_empty() || !req.tids.is_empty() || !req.ltids.is_empty() {
        return by_tokens(cse, das, req, peer, subject, child_type, originator)
            .map(Dynamic::from)
            .ok_or(refusal);
    }
    let consultations = linked_consultations(cse, subject);
    if consultations.is_empty() {
        return Err(refusal);
    }
    let op = crate::access::operation(req);
    let key = (originator.absolute(), subject.ri().to_owned());
    let now = Instant::now();
    {
        let cache = das.cache();
        if let Some(cached) = cache.get(&key) {
            if let Some((privileges, until)) = &cached.grant {
                if *until > now {
                    if let Some(grant) =
                        crate::access::permitted_by(cse, peer, req, subject, child_type, privileges)
                    {
                        return Ok(grant.into());
                    }
                }
            }
            if cached.refused.get(&op.bit()).is_some_and(|u| *u > now) {
                return Err(refusal);
            }
        }
    }
    let ask = DasRequest {
        originator: originator.as_seen_from(&cse.id.home),
        target_type: Some(subject.ty.code()),
        operation: req.op as u8,
        target: format!("{}/{}", cse.id.cse_id, subject.srn),
        originator_ip: peer.originator_ip().map(|ip| match ip {
            std::net::IpAddr::V4(ip) => json!({ "ip4": ip.to_string() }),
            std::net::IpAddr::V6(ip) => json!({ "ip6": ip.to_string() }),
        }),
        request_timestamp: Some(m2m_core::time::format(cse.now())),
        proposed_lifetime: None,
    };
    // One consultation at a time per slot: a flood of refused requests waits for none.
    let Ok(_slot) = das.in_flight.try_acquire() else {
        tracing::warn!(target: "audit", originator = %key.0, "dynamic authorization refused: too many consultations in progress");
        return Err(refusal);
    };
    let mut answer = None;
    let mut asked: Vec<String> = Vec::new();
    'servers: for dac in consultations.iter().take(MAX_CONSULTATIONS) {
        let ask = DasRequest {
            proposed_lifetime: dac.str_attr("dal").map(str::to_owned),
            ..ask.clone()
        };
        for url in string_list(dac.attrs.get("dap")) {
            // Each server once per request, and a few at most, whatever the daps list.
            if asked.contains(&url) || asked.len() >= MAX_ATTEMPTS {
                continue;
            }
            let Some(client) = das.servers.get(&url) else {
                tracing::warn!(target: "audit", consultation = dac.ri(), server = %m2m_transport::connector::loggable(&url), "dynamic authorization: the server is not among [dynamic_authorization] servers; not consulted");
                continue;
            };
            asked.push(url.clone());
            match ask_server(cse, das, client, &url, &ask).await {
                Ok(a) => {
                    answer = Some((url, a));
                    break 'servers;
                }
                Err(why) => {
                    tracing::warn!(target: "audit", server = %m2m_transport::connector::loggable(&url), originator = %key.0, target = %ask.target, reason = %why, "dynamic authorization: no answer from the server")
                }
            }
        }
    }
    let decided = match answer {
        Some((
            url,
            DasAnswer::Granted {
                privileges,
                lifetime,
            },
        )) => granted(cse, das, &key, privileges, lifetime.as_deref())
            .and_then(|p| crate::access::permitted_by(cse, peer, req, subject, child_type, &p))
            .map(|g| (url, Dynamic::from(g))),
        Some((url, DasAnswer::Tokens(tokens))) => {
            let call = (req, peer, subject, child_type);
            by_server_tokens(cse, das, &url, &tokens, call, originator).map(|d| (url, d))
        }
        _ => None,
    };
    match decided {
        Some((url, dynamic)) => {
            tracing::info!(target: "audit", server = %m2m_transport::connector::loggable(&url), originator = %key.0, operation = %op, target = %ask.target, "dynamic authorization granted");
            Ok(dynamic)
        }
        None => {
            let until = Instant::now() + das.refusal_ttl;
            das.remember(key.clone(), |c| {
                c.refused.insert(op.bit(), until);
            });
            tracing::info!(target: "audit", originator = %key.0, operation = %op, target = %ask.target, "dynamic authorization refused");
            Err(refusal)
        }
    }
}

/// Indirect dynamic authorization (TS-0003 clause 7.3.2.3, checks of clause 7.3.2.5): every
/// token must verify with a configured issuer's key, be valid now, not be revoked, be held by the
/// originator and name this CSE in its audience (when it has one), or the request is refused
/// (step 7.1.4); a permission whose resources include the subject then decides like an ACP.
fn by_tokens(
    cse: &Context,
    das: &Consultations,
    req: &Request,
    peer: &Peer,
    subject: &Resource,
    child_type: Option<u16>,
    originator: &m2m_core::EntityId,
) -> Option<Grant> {
    const MAX_TOKENS: usize = 8;
    let who = originator.as_seen_from(&cse.id.home);
    let address = format!("{}/{}", cse.id.cse_id, subject.srn);
    let named = req.tkns.len() + req.tids.len() + req.ltids.len();
    if named > MAX_TOKENS {
        tracing::info!(target: "audit", originator = %who, tokens = named, "token refused: too many tokens");
        return None;
    }
    let mut tokens: Vec<String> = req.tkns.to_vec();
    for id in &req.tids {
        match stored_token(cse, id) {
            Some(t) => tokens.push(t),
            None => {
                tracing::info!(target: "audit", originator = %who, token_id = %id, "token refused: no <token> of that Token-ID here");
                return None;
            }
        }
    }
    let now = cse.now().timestamp();
    for lti in &req.ltids {
        match das.local_token(lti, &originator.absolute(), now) {
            Some(t) => tokens.push(t),
            None => {
                tracing::info!(target: "audit", originator = %who, local_token_id = %lti, "token refused: no valid token of that local token ID for the originator");
                return None;
            }
        }
    }
    let mut claims = Vec::new();
    for t in &tokens {
        match check_token(cse, das, t, originator, now) {
            Ok(c) => claims.push(c),
            Err(why) => {
                tracing::info!(target: "audit", originator = %who, reason = %why, "token refused");
                return None;
            }
        }
    }
    let grant = grant_by_claims(cse, peer, req, subject, child_type, &claims);
    if grant.is_none() {
        tracing::info!(target: "audit", originator = %who, target = %address, "token refused: no permission covers the request");
    }
    grant
}

/// The grant of verified tokens' permissions on `subject`: privileges of a permission naming
/// it, else the roles they assign (TS-0003 clause 7.3.2.5, token permissions evaluation).
fn grant_by_claims(
    cse: &Context,
    peer: &Peer,
    req: &Request,
    subject: &Resource,
    child_type: Option<u16>,
    claims: &[token::TokenClaims],
) -> Option<Grant> {
    let who = peer
        .originator
        .as_ref()
        .map(|o| o.as_seen_from(&cse.id.home))
        .unwrap_or_default();
    let address = format!("{}/{}", cse.id.cse_id, subject.srn);
    let mut roles: Vec<String> = Vec::new();
    for c in claims {
        let permissions = c.permissions.iter().flat_map(|p| &p.permissions);
        for p in permissions {
            let covers = p.resources.iter().any(|r| {
                r == subject.ri()
                    || *r == cse.sp_relative(subject.ri())
                    || m2m_security::dynamic_authorization::wildcard(r, &address)
            });
            // Roles apply to the resources the permission names, or to any without a list
            // (clause 7.3.2.5 step 1).
            // And only roles of the token issuer's own namespace (`name@iss`): one issuer
            // cannot assign another authority's roles.
            if covers || p.resources.is_empty() {
                roles.extend(
                    p.roles
                        .iter()
                        .filter(|r| {
                            RoleId::is(r) && r.rsplit_once('@').map(|(_, i)| i) == Some(&c.issuer)
                        })
                        .cloned(),
                );
            }
            let Some(pv) = p.privileges.as_ref().filter(|_| covers) else {
                continue;
            };
            let Ok(privileges) = Privileges::from_json(pv) else {
                continue;
            };
            if let Some(grant) =
                crate::access::permitted_by(cse, peer, req, subject, child_type, &privileges)
            {
                tracing::info!(target: "audit", originator = %who, token_id = %c.token_id, issuer = %c.issuer, target = %address, "access granted by token");
                return Some(grant);
            }
        }
    }
    if !roles.is_empty() {
        if let Some(grant) =
            crate::access::permitted_with_roles(cse, peer, req, subject, child_type, &roles)
        {
            tracing::info!(target: "audit", originator = %who, roles = ?roles, target = %address, "access granted by a token's roles");
            return Some(grant);
        }
    }
    None
}

/// The tokens a server answered with (TS-0003 clause 7.3.2.2 step 4.1): each verified like a
/// token in a request and issued by that server itself (its `iss` is the server's identity), or
/// nothing is granted; a grant assigns each a local token ID the originator may name later.
fn by_server_tokens(
    cse: &Context,
    das: &Consultations,
    url: &str,
    tokens: &[String],
    (req, peer, subject, child_type): (&Request, &Peer, &Resource, Option<u16>),
    originator: &m2m_core::EntityId,
) -> Option<Dynamic> {
    let who = originator.as_seen_from(&cse.id.home);
    let now = cse.now().timestamp();
    let identity = das.identities.get(url);
    let mut claims = Vec::new();
    for t in tokens {
        match check_token(cse, das, t, originator, now) {
            Ok(c) if identity == Some(&c.issuer) => claims.push(c),
            Ok(c) => {
                tracing::warn!(target: "audit", server = %m2m_transport::connector::loggable(url), token_id = %c.token_id, issuer = %c.issuer, "token refused: not issued by the server that answered");
                return None;
            }
            Err(why) => {
                tracing::warn!(target: "audit", server = %m2m_transport::connector::loggable(url), originator = %who, reason = %why, "token refused");
                return None;
            }
        }
    }
    let grant = grant_by_claims(cse, peer, req, subject, child_type, &claims)?;
    let holder = originator.absolute();
    let assigned = tokens
        .iter()
        .zip(&claims)
        .filter_map(|(t, c)| {
            // Kept no longer than a grant would be, whatever the token says.
            let cap =
                now.saturating_add(i64::try_from(das.max_lifetime.as_secs()).unwrap_or(i64::MAX));
            let lti = das.assign_local(t, &holder, c.not_after.min(cap), now)?;
            Some((lti, c.token_id.clone()))
        })
        .collect();
    Some(Dynamic { grant, assigned })
}

/// The token of the `<token>` under the CSEBase whose tokenID is `id` (TS-0003 clause 7.4.3
/// step 2, this CSE as Token Repository).
fn stored_token(cse: &Context, id: &m2m_core::TokenId) -> Option<String> {
    let tokens = cse
        .store
        .read(|r| r.children(cse.base_ri(), Some(m2m_core::ResourceType::Token)))
        .ok()?;
    tokens
        .iter()
        .find(|t| t.str_attr("tkid") == Some(id.as_str()))
        .and_then(|t| t.str_attr("tkob"))
        .map(str::to_owned)
}

impl Consultations {
    /// The claims of `t` if a configured issuer signed it, it is valid at `now` and not revoked
    /// (what a `<token>` must be to be kept); why not otherwise, naming the token ID at most.
    pub fn verify_token(&self, t: &str, now: i64) -> Result<token::TokenClaims, String> {
        let c = token::verify(t, &self.issuers, now).map_err(|e| e.to_string())?;
        let revoked = match &self.revoked {
            None => false,
            Some(list) => list
                .is_revoked(&c.token_id)
                .map_err(|_| format!("{}: the revocation list cannot be read", c.token_id))?,
        };
        if revoked {
            return Err(format!("{}: revoked", c.token_id));
        }
        Ok(c)
    }
}

/// One token's checks; the reason names the token ID at most, never the token.
fn check_token(
    cse: &Context,
    das: &Consultations,
    t: &str,
    originator: &m2m_core::EntityId,
    now: i64,
) -> Result<token::TokenClaims, String> {
    let c = das.verify_token(t, now)?;
    // A Token-ID is its issuer's (`name@iss`): none names another issuer's tokens.
    if !m2m_core::TokenId::is(&c.token_id)
        || c.token_id.rsplit_once('@').map(|(_, i)| i) != Some(c.issuer.as_str())
    {
        return Err("a token whose ID is not its issuer's".to_owned());
    }
    // A holder names its SP or CSE (`/cse/stem` or absolute): a bare AE-ID would be read
    // against whichever CSE checks it.
    let holder = c
        .holder
        .starts_with('/')
        .then(|| m2m_core::EntityId::parse(&c.holder, &cse.id.home).ok())
        .flatten();
    if holder.as_ref() != Some(originator) {
        return Err(format!("{}: held by another entity", c.token_id));
    }
    let me = m2m_core::EntityId::parse(&cse.id.cse_id.sp_relative(), &cse.id.home).ok();
    // An audience is required here: a token for any CSE would be good at every CSE trusting
    // its issuer (TS-0003 7.3.2.5 allows none; this CSE does not take such tokens).
    let for_me = c
        .audience
        .iter()
        .any(|a| a.starts_with('/') && m2m_core::EntityId::parse(a, &cse.id.home).ok() == me);
    if !for_me {
        return Err(format!("{}: this CSE is not in its audience", c.token_id));
    }
    Ok(c)
}

/// The grant's privileges, kept for its lifetime (bounded); `None` when they do not parse.
fn granted(
    cse: &Context,
    das: &Consultations,
    key: &(String, String),
    privileges: Value,
    lifetime: Option<&str>,
) -> Option<Privileges> {
    let privileges = Privileges::from_json(&privileges).ok()?;
    let keep = lifetime
        .and_then(|pl| lifetime_from(cse, pl))
        .map(|d| d.min(das.max_lifetime))
        .filter(|d| !d.is_zero());
    if let Some(keep) = keep {
        let until = Instant::now() + keep;
        let kept = privileges.clone();
        das.remember(key.clone(), |c| c.grant = Some((kept, until)));
    }
    Some(privileges)
}

/// privilegesLifetime (m2m:absRelTimestamp): an absolute timestamp, or milliseconds from now.
fn lifetime_from(cse: &Context, pl: &str) -> Option<Duration> {
    if let Ok(ms) = pl.trim().parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    let until = m2m_core::time::parse(pl).ok()?;
    (until - cse.now()).to_std().ok()
}

async fn ask_server(
    cse: &Context,
    das: &Consultations,
    client: &m2m_client::Client,
    url: &str,
    ask: &DasRequest,
) -> Result<DasAnswer, String> {
    let rqi = format!("das-{}", crate::context::random_suffix(10));
    let mut req = Request::new(
        Operation::Notify,
        url,
        Some(cse.id.cse_id.sp_relative()),
        rqi,
    );
    req.pc = Some(ask.to_content());
    let resp = tokio::time::timeout(das.timeout, client.send_to_url(url, &req))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.dbg.clone())?;
    if !resp.rsc.is_success() {
        return Err(format!("answered {}", resp.rsc.code()));
    }
    DasAnswer::from_content(resp.pc.as_ref())
}

/// The enabled `<dynamicAuthorizationConsultation>`s linked to `subject`: those of its own daci,
/// or else of its nearest ancestor that has one (TS-0001 table 9.6.1.3.2-1).
fn linked_consultations(cse: &Context, subject: &Resource) -> Vec<Resource> {
    let mut at = Some(subject.clone());
    for _ in 0..MAX_DEPTH {
        let Some(res) = at else { break };
        let daci = string_list(res.attrs.get("daci"));
        if !daci.is_empty() {
            return daci
                .iter()
                .filter_map(|id| crate::access_references::stored(cse, id))
                .filter(|d| d.ty == ResourceType::DynamicAuthorizationConsultation)
                .filter(|d| d.attrs.get("dae") == Some(&Value::Bool(true)))
                .collect();
        }
        if res.ty == ResourceType::CseBase {
            break;
        }
        at = cse.store.get(res.pi()).ok().flatten();
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_https_or_loopback_http() {
        assert!(matches!(
            server_kind("https://das.example.com:8443").unwrap(),
            Kind::Https(h) if h == "das.example.com"
        ));
        assert!(matches!(
            server_kind("https://[::1]:8443/das").unwrap(),
            Kind::Https(h) if h == "::1"
        ));
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost/das",
            "http://[::1]:80",
        ] {
            assert!(matches!(server_kind(ok).unwrap(), Kind::Loopback), "{ok}");
        }
        for bad in [
            "http://das.example.com",
            "http://10.0.0.1:80",
            "coap://127.0.0.1",
            "https://",
            "das.example.com",
        ] {
            assert!(server_kind(bad).is_err(), "{bad}");
        }
    }
}
