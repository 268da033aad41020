//! End-to-End Security of Primitives, ESPrim (TS-0003 clauses 8.4 and 10.3.8.2; TS-0004 clause 7.6.2).
//!
//! The Originator and the Receiver (Target) share a pairwiseESPrimKey (provisioned, MAF or ESCertKE; this
//! module takes it from a [`PairwiseKeys`] lookup). The Receiver hands out receiverESPrimRandObjects
//! ([`EsprimReceiver::issue_rand`], the sit 4 answer to a sit 3 request); the Originator makes its own
//! originatorESPrimRandObject and derives sessionESPrimKey with [`kdf::session_esprim_key`]
//! ([`EsprimSession::start`]). Every inner primitive then travels as a JWE Compact object (`alg` dir,
//! `enc` per esprimProtocolAndAlgID, `kid` = pairwiseESPrimKeyID, `cty` "json", `ori`/`rri` = rand IDs,
//! `oro` = the whole originator rand object until the Receiver has answered once), carried in an outer
//! NOTIFY as `m2m:securityInfo` {sit 5, epo}. The answer is protected under the same session key.
//!
//! Project decisions (the spec leaves them open):
//! - esprimRandValue (`esrv`) is written as 32 lowercase hex digits; the KDF hashes its 16 bytes.
//! - The content key is the first 16 / 24 / 32 bytes of the 32-byte sessionESPrimKey for A128GCM /
//!   A192GCM / A256GCM (the spec says "used directly", which fits A256GCM only).
//! - Freshness: the rand expiries bound a session's life, AND every accepted object's JWE IV is remembered
//!   for the session until it expires, so a replayed object is refused with 4113
//!   ESPRIM_UNKNOWN_ORIG_RAND_ID: the originator rand is what makes an ESPrim fresh, a replay is a second
//!   use of a (rand, IV) pair that was used up, and 4113 tells an honest Originator what to do (start a
//!   new session) without suggesting the MAC failed. IVs are recorded only after the tag verified, so a
//!   forger cannot fill the cache. [`MAX_OBJECTS_PER_SESSION`] caps it; beyond that the session is used up
//!   (4113) and the Originator starts a new one.
//! - An `oro` is recorded only after the object it came in has verified, for the same reason.
//! - Error codes (TS-0004 table 7.6.2-1): unknown/expired key 4112, unknown/expired originator rand (and
//!   replay) 4113, unknown/expired receiver rand 4114, bad tag 4115, inner From not the key's entity 4116,
//!   an object that is not a JWE or not JSON inside 5210, encryption failure 5211, any `alg`/`enc`/`cty`/
//!   header option outside what both rands allow 4111.

use crate::credentials::Secret;
use crate::e2e::jose::SymmetricKey;
use crate::e2e::jose::{self, ContentEnc, DecryptionKey, HeaderParams, JoseErrorKind, Recipient};
use crate::kdf::{self, ESPRIM_RAND_LEN};
use chrono::{DateTime, Duration, Utc};
use m2m_core::security_info::{
    EsprimKeyGenAlgId, EsprimProtocolAndAlgId, OriginatorEsprimRandObject, ReceiverEsprimRandObject,
};
use m2m_core::{M2mError, ResponseStatusCode as Rsc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The `cty` of a JSON-serialized inner primitive (RFC 7516 allows omitting `application/`).
pub const CTY_JSON: &str = "json";
/// How many objects one session accepts before the Originator must start a new one (bounds the replay
/// cache's memory).
pub const MAX_OBJECTS_PER_SESSION: usize = 1 << 16;

/// A pairwiseESPrimKey and what it is bound to.
#[derive(Clone, Debug)]
pub struct PairwiseKey {
    /// The key.
    pub key: Secret,
    /// The AE-ID or CSE-ID of the other end; an inner request's From must equal it (4116).
    pub entity: String,
    /// pairwiseESPrimKeyLifetime: `None` never expires.
    pub expires: Option<DateTime<Utc>>,
}

/// Where the Receiver finds a pairwiseESPrimKey by its ID (provisioned table, MAF cache, ESCertKE).
pub trait PairwiseKeys {
    /// The key named `kid`, if known.
    fn pairwise_key(&self, kid: &str) -> Option<PairwiseKey>;
}

impl PairwiseKeys for HashMap<String, PairwiseKey> {
    fn pairwise_key(&self, kid: &str) -> Option<PairwiseKey> {
        self.get(kid).cloned()
    }
}

/// Identifies one session: pairwiseESPrimKeyID, originator rand ID, receiver rand ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// pairwiseESPrimKeyID (`kid`).
    pub kid: String,
    /// originatorESPrimRandObject's esprimRandID (`ori`).
    pub ori: String,
    /// receiverESPrimRandObject's esprimRandID (`rri`).
    pub rri: String,
}

/// A verified inner request.
#[derive(Debug)]
pub struct InnerRequest {
    /// The inner request primitive (JSON object, short names).
    pub primitive: Value,
    /// Its From, already checked against the pairwise key's entity.
    pub from: String,
    /// The session to protect the answer with ([`EsprimReceiver::protect_response`]).
    pub session: SessionId,
}

fn err(rsc: Rsc, dbg: impl Into<String>) -> M2mError {
    M2mError::new(rsc, dbg)
}

/// A 128-bit esprimRandValue as 32 lowercase hex digits.
pub fn rand_value_text(v: &[u8; ESPRIM_RAND_LEN]) -> String {
    hex::encode(v)
}

/// Reads an esprimRandValue (32 hex digits, either case).
pub fn parse_rand_value(s: &str) -> Option<[u8; ESPRIM_RAND_LEN]> {
    let mut out = [0u8; ESPRIM_RAND_LEN];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Reads an esprimRandExpiry (m2m:absRelTimestamp): an absolute timestamp, or milliseconds after `now`.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(ms) = s.parse::<i64>() {
        return now.checked_add_signed(Duration::try_milliseconds(ms)?);
    }
    m2m_core::time::parse(s).ok()
}

fn random_rand() -> [u8; ESPRIM_RAND_LEN] {
    use rand::RngCore;
    let mut r = [0u8; ESPRIM_RAND_LEN];
    rand::rngs::OsRng.fill_bytes(&mut r);
    r
}

/// A fresh rand ID: `prefix` + 16 hex digits. The prefix starts with a letter, so it is an NCName;
/// "ru" marks a receiver's unique rand (TS-0003 8.4.2 B.2e), "ou" an originator's.
fn new_rand_id(prefix: &str) -> String {
    let r = random_rand();
    format!("{prefix}{}", hex::encode(&r[..8]))
}

/// The content key of `enc` from a session key (see the module doc).
fn content_key(session: &Secret, kid: &str, enc: ContentEnc) -> SymmetricKey {
    SymmetricKey::new(kid, Secret::from_slice(&session.expose()[..enc.key_len()]))
}

fn to_enc(a: EsprimProtocolAndAlgId) -> ContentEnc {
    match a {
        EsprimProtocolAndAlgId::JweA128Gcm => ContentEnc::A128Gcm,
        EsprimProtocolAndAlgId::JweA192Gcm => ContentEnc::A192Gcm,
        EsprimProtocolAndAlgId::JweA256Gcm => ContentEnc::A256Gcm,
    }
}

/// An ESPrim object with its header parsed but nothing verified yet: the parts that select keys and
/// rands. A Receiver that must fetch the key first reads [`Envelope::kid`], then hands the same
/// envelope to [`EsprimReceiver::unprotect_request_with`], so the header is parsed once.
pub struct Envelope<'a> {
    jwe: &'a str,
    header: HeaderParams,
    kid: String,
    ori: String,
    rri: String,
    alg_id: EsprimProtocolAndAlgId,
    iv: String,
}

/// Parses an ESPrim object's header and checks the options it names (5210 / 4111 / 4112..4114).
pub fn open_envelope(jwe: &str) -> Result<Envelope<'_>, M2mError> {
    let parts = jose::split_compact(jwe, 5, "JWE")
        .map_err(|e| err(Rsc::EsprimDecryptionError, e.reason))?;
    let header =
        jose::decode_header(parts[0]).map_err(|e| err(Rsc::EsprimDecryptionError, e.reason))?;
    let text = |name: &str| header.get(name).and_then(Value::as_str).map(str::to_string);
    if text("alg").as_deref() != Some("dir") {
        return Err(err(
            Rsc::EsprimUnsupportedOption,
            "ESPrim objects use alg dir only",
        ));
    }
    let alg_id = text("enc")
        .and_then(|e| EsprimProtocolAndAlgId::from_enc(&e))
        .ok_or_else(|| {
            err(
                Rsc::EsprimUnsupportedOption,
                "ESPrim enc must be A128GCM, A192GCM or A256GCM",
            )
        })?;
    if let Some(cty) = header.get("cty") {
        if cty.as_str() != Some(CTY_JSON) {
            return Err(err(
                Rsc::EsprimUnsupportedOption,
                "only JSON inner primitives (cty json) are supported",
            ));
        }
    }
    if !parts[1].is_empty() {
        return Err(err(
            Rsc::EsprimUnsupportedOption,
            "alg dir carries no encrypted key",
        ));
    }
    let kid =
        text("kid").ok_or_else(|| err(Rsc::EsprimUnknownKeyId, "the ESPrim object has no kid"))?;
    let ori = text("ori")
        .ok_or_else(|| err(Rsc::EsprimUnknownOrigRandId, "the ESPrim object has no ori"))?;
    let rri = text("rri")
        .ok_or_else(|| err(Rsc::EsprimUnknownRecvRandId, "the ESPrim object has no rri"))?;
    Ok(Envelope {
        jwe,
        iv: parts[2].to_string(),
        header,
        kid,
        ori,
        rri,
        alg_id,
    })
}

impl Envelope<'_> {
    /// The pairwiseESPrimKeyID (`kid`) the object names, not verified: for a Receiver that must
    /// fetch the key first (MAF ESPrim Framework, TS-0003 8.4.2 C.6a).
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Decrypts with a session's content key: a tag failure is 4115, anything else 5210.
fn decrypt(session_key: &Secret, env: &Envelope) -> Result<Value, M2mError> {
    let jwe = env.jwe;
    let enc = to_enc(env.alg_id);
    let key = content_key(session_key, &env.kid, enc);
    let opened = jose::decrypt_compact(jwe, DecryptionKey::Direct(&key), &[enc]).map_err(|e| {
        match e.kind {
            JoseErrorKind::Integrity => err(
                Rsc::EsprimBadMac,
                "the ESPrim object's authentication tag does not verify",
            ),
            JoseErrorKind::Unsupported => err(Rsc::EsprimUnsupportedOption, e.reason),
            _ => err(Rsc::EsprimDecryptionError, e.reason),
        }
    })?;
    let v: Value = serde_json::from_slice(&opened.payload).map_err(|_| {
        err(
            Rsc::EsprimDecryptionError,
            "the inner primitive is not JSON",
        )
    })?;
    if !v.is_object() {
        return Err(err(
            Rsc::EsprimDecryptionError,
            "the inner primitive is not a JSON object",
        ));
    }
    Ok(v)
}

/// Encrypts an inner primitive under a session (5211 on failure).
fn encrypt(
    inner: &[u8],
    session_key: &Secret,
    id: &SessionId,
    alg_id: EsprimProtocolAndAlgId,
    oro: Option<&OriginatorEsprimRandObject>,
) -> Result<String, M2mError> {
    let enc = to_enc(alg_id);
    let key = content_key(session_key, &id.kid, enc);
    let mut h = HeaderParams::new();
    h.insert("cty".into(), CTY_JSON.into());
    h.insert("ori".into(), id.ori.clone().into());
    h.insert("rri".into(), id.rri.clone().into());
    if let Some(o) = oro {
        h.insert(
            "oro".into(),
            serde_json::to_value(o).expect("rand object serializes"),
        );
    }
    jose::encrypt_compact(inner, Recipient::Direct(&key), enc, &h)
        .map_err(|e| err(Rsc::EsprimEncryptionError, e.reason))
}

/// The IVs of the objects a session accepted (the replay cache).
#[derive(Default)]
struct SeenIvs(HashSet<String>);

impl SeenIvs {
    /// Records `iv`; 4113 for a replay or a session that already holds `cap` objects.
    fn admit(&mut self, iv: &str, cap: usize) -> Result<(), M2mError> {
        if self.0.contains(iv) {
            return Err(err(
                Rsc::EsprimUnknownOrigRandId,
                "replayed ESPrim object: this originator rand already carried it",
            ));
        }
        if self.0.len() >= cap {
            return Err(err(
                Rsc::EsprimUnknownOrigRandId,
                "the ESPrim session is used up: start a new one with a fresh originator rand",
            ));
        }
        self.0.insert(iv.to_string());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Receiver

/// A rand the Receiver holds: one it issued, or an originator's it recorded.
#[derive(Clone)]
struct HeldRand {
    value: [u8; ESPRIM_RAND_LEN],
    expires: DateTime<Utc>,
    espa: Vec<EsprimProtocolAndAlgId>,
}

struct ReceiverSession {
    key: Secret,
    expires: DateTime<Utc>,
    alg_id: EsprimProtocolAndAlgId,
    seen: SeenIvs,
}

/// The Receiver (Target) side: issues receiver rands, unprotects requests, protects responses.
///
/// Holds rands, recorded originator rands and sessions in memory; everything expires with its rand.
pub struct EsprimReceiver {
    espa: Vec<EsprimProtocolAndAlgId>,
    rands: HashMap<String, HeldRand>,
    originators: HashMap<(String, String), HeldRand>,
    sessions: HashMap<SessionId, ReceiverSession>,
    next_purge: Option<DateTime<Utc>>,
    /// Objects one session may carry ([`MAX_OBJECTS_PER_SESSION`] unless lowered).
    session_cap: usize,
}

impl Default for EsprimReceiver {
    fn default() -> Self {
        Self::new(EsprimProtocolAndAlgId::ALL.to_vec())
    }
}

impl EsprimReceiver {
    /// A Receiver that accepts the AEAD options `espa` (default: all three).
    pub fn new(espa: Vec<EsprimProtocolAndAlgId>) -> Self {
        Self {
            espa,
            rands: HashMap::new(),
            originators: HashMap::new(),
            sessions: HashMap::new(),
            next_purge: None,
            session_cap: MAX_OBJECTS_PER_SESSION,
        }
    }

    /// Lowers the number of objects one session may carry (at most [`MAX_OBJECTS_PER_SESSION`]):
    /// beyond it the session is used up and the Originator must start a new one.
    pub fn with_session_cap(mut self, cap: usize) -> Self {
        self.session_cap = cap.min(MAX_OBJECTS_PER_SESSION);
        self
    }

    /// A fresh unique receiverESPrimRandObject valid for `lifetime` (TS-0003 8.4.2 B.2e), to send back
    /// as `m2m:securityInfo` {sit 4, ero}.
    pub fn issue_rand(
        &mut self,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> ReceiverEsprimRandObject {
        let value = random_rand();
        let expires = now + lifetime;
        let esri = new_rand_id("ru");
        self.rands.insert(
            esri.clone(),
            HeldRand {
                value,
                expires,
                espa: self.espa.clone(),
            },
        );
        ReceiverEsprimRandObject {
            esri,
            esrv: rand_value_text(&value),
            esrx: m2m_core::time::format(expires),
            esks: vec![EsprimKeyGenAlgId::HmacSha256],
            espa: self.espa.clone(),
        }
    }

    /// Verifies and decrypts an ESPrim object carrying an inner request (TS-0003 8.4.2 C.6): the key,
    /// both rands, the options, the tag, the replay cache, then the inner From against the key's entity.
    pub fn unprotect_request(
        &mut self,
        keys: &dyn PairwiseKeys,
        jwe: &str,
        now: DateTime<Utc>,
    ) -> Result<InnerRequest, M2mError> {
        let env = open_envelope(jwe)?;
        self.unprotect_request_with(keys, &env, now, &|from, entity| from == entity)
    }

    /// [`Self::unprotect_request`] with the caller's test of "the inner From is the key's entity": a CSE
    /// compares IDs in any of their forms (`Sae1`, `/Sae1`, `//sp/Sae1`), since a certificate or the MAF
    /// names the entity in a form the Originator need not write.
    pub fn unprotect_request_with(
        &mut self,
        keys: &dyn PairwiseKeys,
        env: &Envelope,
        now: DateTime<Utc>,
        same_entity: &dyn Fn(&str, &str) -> bool,
    ) -> Result<InnerRequest, M2mError> {
        self.purge_due(now);
        let pairwise = keys
            .pairwise_key(&env.kid)
            .filter(|k| k.expires.is_none_or(|e| e > now))
            .ok_or_else(|| {
                err(
                    Rsc::EsprimUnknownKeyId,
                    format!("unknown or expired pairwiseESPrimKeyID {:?}", env.kid),
                )
            })?;
        let rrand = self
            .rands
            .get(&env.rri)
            .filter(|r| r.expires > now)
            .ok_or_else(|| {
                err(
                    Rsc::EsprimUnknownRecvRandId,
                    format!("unknown or expired receiver rand {:?}", env.rri),
                )
            })?;
        let (orand, new_oro) = self.originator_rand(env, rrand, now)?;
        if !orand.espa.contains(&env.alg_id) || !rrand.espa.contains(&env.alg_id) {
            return Err(err(
                Rsc::EsprimUnsupportedOption,
                format!(
                    "enc {} was not offered in both rand objects",
                    env.alg_id.enc()
                ),
            ));
        }
        let id = SessionId {
            kid: env.kid.clone(),
            ori: env.ori.clone(),
            rri: env.rri.clone(),
        };
        let expires = orand.expires.min(rrand.expires);
        let expires = pairwise.expires.map_or(expires, |k| k.min(expires));
        let session_key = match self.sessions.get(&id) {
            Some(s) => s.key.clone(),
            None => kdf::session_esprim_key(&pairwise.key, &rrand.value, &orand.value),
        };
        let inner = decrypt(&session_key, env)?;
        // Authentic from here on: only now may the object change state.
        let cap = self.session_cap;
        let session = self
            .sessions
            .entry(id.clone())
            .or_insert_with(|| ReceiverSession {
                key: session_key,
                expires,
                alg_id: env.alg_id,
                seen: SeenIvs::default(),
            });
        session.seen.admit(&env.iv, cap)?;
        session.alg_id = env.alg_id;
        if let Some(o) = new_oro {
            self.originators
                .insert((env.kid.clone(), env.ori.clone()), o);
        }
        let from = inner.get("fr").and_then(Value::as_str).unwrap_or_default();
        if !same_entity(from, &pairwise.entity) {
            return Err(err(
                Rsc::EsprimImpersonationError,
                format!(
                    "the inner From {from:?} is not the entity of key {:?}",
                    env.kid
                ),
            ));
        }
        Ok(InnerRequest {
            from: from.to_string(),
            primitive: inner,
            session: id,
        })
    }

    /// The originator rand an object names: the `oro` it carries (validated, recorded by the caller once
    /// the object verified) or one recorded before. 4113 when unknown, expired or inconsistent.
    fn originator_rand(
        &self,
        env: &Envelope,
        rrand: &HeldRand,
        now: DateTime<Utc>,
    ) -> Result<(HeldRand, Option<HeldRand>), M2mError> {
        let bad = |why: &str| {
            err(
                Rsc::EsprimUnknownOrigRandId,
                format!("originator rand {:?}: {why}", env.ori),
            )
        };
        let recorded = self.originators.get(&(env.kid.clone(), env.ori.clone()));
        let Some(oro) = env.header.get("oro") else {
            return recorded
                .filter(|r| r.expires > now)
                .map(|r| (r.clone(), None))
                .ok_or_else(|| bad("unknown or expired"));
        };
        let oro: OriginatorEsprimRandObject =
            serde_json::from_value(oro.clone()).map_err(|_| bad("the oro object is malformed"))?;
        if oro.esri != env.ori {
            return Err(bad("oro names another rand ID"));
        }
        let value = parse_rand_value(&oro.esrv).ok_or_else(|| bad("esrv is not 32 hex digits"))?;
        let expires = parse_expiry(&oro.esrx, now).ok_or_else(|| bad("esrx is not a timestamp"))?;
        if expires <= now {
            return Err(bad("expired"));
        }
        if expires > rrand.expires {
            return Err(bad("it outlives the receiver rand"));
        }
        if oro.espa.iter().any(|a| !rrand.espa.contains(a)) {
            return Err(err(
                Rsc::EsprimUnsupportedOption,
                "the originator rand offers an enc the receiver rand does not",
            ));
        }
        if let Some(r) = recorded {
            if r.value != value {
                return Err(bad("a different rand with this ID was recorded"));
            }
        }
        let rec = HeldRand {
            value,
            expires,
            espa: oro.espa,
        };
        Ok((rec.clone(), Some(rec)))
    }

    /// Protects an inner response under the session its request came in (TS-0003 8.4.2 C.8).
    pub fn protect_response(
        &mut self,
        session: &SessionId,
        inner: &[u8],
        now: DateTime<Utc>,
    ) -> Result<String, M2mError> {
        let s = self
            .sessions
            .get(session)
            .filter(|s| s.expires > now)
            .ok_or_else(|| {
                err(
                    Rsc::EsprimUnknownOrigRandId,
                    "the ESPrim session is unknown or expired",
                )
            })?;
        encrypt(inner, &s.key, session, s.alg_id, None)
    }

    /// Drops every expired rand, recorded originator rand and session (and its replay cache).
    pub fn purge(&mut self, now: DateTime<Utc>) {
        self.rands.retain(|_, r| r.expires > now);
        self.originators.retain(|_, r| r.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }

    /// Purges at most once a second, so the maps stay bounded without a scan per object.
    fn purge_due(&mut self, now: DateTime<Utc>) {
        if self.next_purge.is_none_or(|t| now >= t) {
            self.purge(now);
            self.next_purge = Some(now + Duration::seconds(1));
        }
    }

    /// How many sessions are live (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Originator

/// The Originator side of one session: protects requests, unprotects the responses.
pub struct EsprimSession {
    id: SessionId,
    key: Secret,
    alg_id: EsprimProtocolAndAlgId,
    oro: OriginatorEsprimRandObject,
    expires: DateTime<Utc>,
    receiver_has_oro: bool,
    seen: SeenIvs,
}

impl std::fmt::Debug for EsprimSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsprimSession")
            .field("id", &self.id)
            .field("enc", &self.alg_id.enc())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl EsprimSession {
    /// Starts a session (TS-0003 8.4.2 B.2g-B.2h): checks the receiver rand, makes an originator rand
    /// valid for `lifetime` (never past the receiver's), picks the strongest AEAD both sides offer (or
    /// `prefer` if both offer it) and derives sessionESPrimKey.
    pub fn start(
        pairwise_kid: &str,
        pairwise: &Secret,
        receiver_rand: &ReceiverEsprimRandObject,
        now: DateTime<Utc>,
        lifetime: Duration,
        prefer: Option<EsprimProtocolAndAlgId>,
    ) -> Result<Self, M2mError> {
        let rvalue = parse_rand_value(&receiver_rand.esrv).ok_or_else(|| {
            err(
                Rsc::EsprimUnknownRecvRandId,
                "the receiver rand's esrv is not 32 hex digits",
            )
        })?;
        let rexp = parse_expiry(&receiver_rand.esrx, now)
            .filter(|e| *e > now)
            .ok_or_else(|| {
                err(
                    Rsc::EsprimUnknownRecvRandId,
                    "the receiver rand is expired or has no valid esrx",
                )
            })?;
        if !receiver_rand.esks.contains(&EsprimKeyGenAlgId::HmacSha256) {
            return Err(err(
                Rsc::EsprimUnsupportedOption,
                "the receiver offers no known sessionESPrimKey algorithm",
            ));
        }
        let alg_id = match prefer {
            Some(p) if receiver_rand.espa.contains(&p) => p,
            _ => *receiver_rand.espa.iter().max().ok_or_else(|| {
                err(
                    Rsc::EsprimUnsupportedOption,
                    "the receiver offers no AEAD algorithm",
                )
            })?,
        };
        let value = random_rand();
        let expires = (now + lifetime).min(rexp);
        let oro = OriginatorEsprimRandObject {
            esri: new_rand_id("ou"),
            esrv: rand_value_text(&value),
            esrx: m2m_core::time::format(expires),
            esk: EsprimKeyGenAlgId::HmacSha256,
            espa: vec![alg_id],
        };
        Ok(Self {
            id: SessionId {
                kid: pairwise_kid.to_string(),
                ori: oro.esri.clone(),
                rri: receiver_rand.esri.clone(),
            },
            key: kdf::session_esprim_key(pairwise, &rvalue, &value),
            alg_id,
            oro,
            expires,
            receiver_has_oro: false,
            seen: SeenIvs::default(),
        })
    }

    /// The session's IDs.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// When the session ends (the originator rand's expiry).
    pub fn expires(&self) -> DateTime<Utc> {
        self.expires
    }

    /// Protects a JSON inner request primitive into an ESPrim object (TS-0003 8.4.2 C.3). Until a
    /// response came back, the object carries the whole originator rand object (`oro`).
    pub fn protect_request(&self, inner: &[u8], now: DateTime<Utc>) -> Result<String, M2mError> {
        if now >= self.expires {
            return Err(err(
                Rsc::EsprimUnknownOrigRandId,
                "the ESPrim session has expired: start a new one",
            ));
        }
        let oro = (!self.receiver_has_oro).then_some(&self.oro);
        encrypt(inner, &self.key, &self.id, self.alg_id, oro)
    }

    /// Verifies and decrypts the ESPrim object of a response (TS-0003 8.4.2 C.11): it must name this
    /// session, be unexpired, verify, and not be a replay.
    pub fn unprotect_response(&mut self, jwe: &str, now: DateTime<Utc>) -> Result<Value, M2mError> {
        let env = open_envelope(jwe)?;
        if env.kid != self.id.kid {
            return Err(err(
                Rsc::EsprimUnknownKeyId,
                "the response names another pairwiseESPrimKeyID",
            ));
        }
        if env.ori != self.id.ori || now >= self.expires {
            return Err(err(
                Rsc::EsprimUnknownOrigRandId,
                "the response names another or an expired originator rand",
            ));
        }
        if env.rri != self.id.rri {
            return Err(err(
                Rsc::EsprimUnknownRecvRandId,
                "the response names another receiver rand",
            ));
        }
        if env.alg_id != self.alg_id {
            return Err(err(
                Rsc::EsprimUnsupportedOption,
                "the response uses an enc this session did not offer",
            ));
        }
        let inner = decrypt(&self.key, &env)?;
        self.seen.admit(&env.iv, MAX_OBJECTS_PER_SESSION)?;
        self.receiver_has_oro = true;
        Ok(inner)
    }
}
