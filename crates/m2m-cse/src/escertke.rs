//! This CSE as ESCertKE Terminating End-Point (TS-0003 clause 8.7; TS-0004 clause 7.5.1.2.12): NOTIFY
//! requests to the CSEBase carrying `m2m:securityInfo` sit 6 with an ESCertKE Message.
//!
//! Message 1 (a ClientHello) starts an exchange and is answered with Message 2; the half-done handshake
//! is kept per peer and originator (the outer From; TS-0004 carries no exchange identifier, so a new
//! Message 1 from the same originator through the same peer replaces its pending exchange) for
//! `escertke_timeout_seconds`, at most `escertke_max_pending` at once and at most
//! `escertke_max_pending_per_peer` of one peer: the peer is the entity the hop's security association
//! is bound to, else the source address (IPv6 by its /64), so one peer sending Message 1s under many
//! originator IDs fills its own share and not every place. A Message 3 must come through the peer its
//! Message 1 came through. Message 3 completes it and is answered with Message 4; the exported
//! pairwiseE2EKey becomes a pairwiseESPrimKey with `kid` = hexBinary(pairwiseE2EKeyID), bound to the
//! identity of the originator's certificate and valid for `escertke_key_lifetime_seconds`. An exchange is
//! used once: a replayed Message 3 finds nothing pending (4000); a failed handshake (a certificate from
//! another root, a bad Finished) is 4106. Relaying CSEs forward these NOTIFYs like any other and learn
//! nothing they could use: the flights are a TLS handshake.

use crate::association::Peer;
use crate::config::Config;
use crate::context::Context;
use crate::esprim::EsprimTarget;
use chrono::{DateTime, Duration, Utc};
use m2m_core::security_info::SecurityInfo;
use m2m_core::{M2mError, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::e2e::escertke::{self, PairwiseE2eKey, Terminator};
use m2m_security::e2e::esprim::PairwiseKey;
use m2m_security::tls::{server_context, ServerTlsConfig, CERTIFICATE_SUITES};
use openssl::ssl::SslContext;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Who a pending exchange is charged to, and its originator.
type ExchangeKey = (String, String);

/// The peer a request came through, as the per-peer limit counts it: the entity its security
/// association is bound to, else (through an MQTT server, whose address every sender shares) the
/// credential that published, else its source address (an IPv6 address by its /64 prefix, which
/// a single host is commonly given whole), else this CSE itself.
fn peer_of(peer: &Peer) -> String {
    if let Some(entity) = peer.bound_entity() {
        return format!("entity {entity}");
    }
    if let (true, Some(a)) = (peer.via_mqtt_server, &peer.association) {
        return format!("credential {}", a.credential);
    }
    match peer.addr.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) => format!("address {ip}"),
        Some(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("address {v4}"),
            None => {
                let s = ip.segments();
                format!("address {:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "this CSE".to_owned(),
    }
}

/// Half-done exchanges (handshakes between Messages 2 and 3) and their limits; `T` is the
/// handshake, generic so that the bookkeeping is tested without TLS.
struct Exchanges<T> {
    map: HashMap<ExchangeKey, (T, DateTime<Utc>)>,
    timeout: Duration,
    max_pending: usize,
    max_per_peer: usize,
}

impl<T> Exchanges<T> {
    /// Whether an exchange for `key` may be kept at `now`: expired ones are dropped first; one
    /// replacing the same peer's and originator's pending exchange always may.
    fn admit(&mut self, key: &ExchangeKey, now: DateTime<Utc>) -> M2mResult<()> {
        let timeout = self.timeout;
        self.map.retain(|_, (_, started)| now - *started < timeout);
        if self.map.contains_key(key) {
            return Ok(());
        }
        let of_peer = self.map.keys().filter(|(p, _)| *p == key.0).count();
        if of_peer >= self.max_per_peer {
            return Err(M2mError::new(
                Rsc::InternalServerError,
                "too many ESCertKE exchanges are pending from this peer: complete them or let them expire first",
            ));
        }
        if self.map.len() >= self.max_pending {
            return Err(M2mError::new(
                Rsc::InternalServerError,
                "too many ESCertKE exchanges are pending: try again later",
            ));
        }
        Ok(())
    }

    /// Keeps `handshake` for `key`, checking the limits again (another Message 1 may have taken
    /// the place while this one was answered).
    fn insert(&mut self, key: ExchangeKey, handshake: T, now: DateTime<Utc>) -> M2mResult<()> {
        self.admit(&key, now)?;
        self.map.insert(key, (handshake, now));
        Ok(())
    }

    /// Takes the pending exchange of `key` if it is still in time.
    fn take(&mut self, key: &ExchangeKey, now: DateTime<Utc>) -> Option<T> {
        self.map
            .remove(key)
            .filter(|(_, started)| now - *started < self.timeout)
            .map(|(t, _)| t)
    }
}

/// The Terminating End-Point's context, pending exchanges and limits.
pub struct EscertkeTarget {
    context: SslContext,
    pending: Mutex<Exchanges<Terminator>>,
    key_lifetime: Duration,
}

fn seconds(name: &str, s: u64) -> anyhow::Result<Duration> {
    i64::try_from(s)
        .ok()
        .and_then(Duration::try_seconds)
        .ok_or_else(|| anyhow::anyhow!("esprim.{name} is too large"))
}

impl EscertkeTarget {
    /// The ESCertKE context of `[esprim] escertke`: the [tls] certificate, the profile's ECDHE-ECDSA
    /// suites, TLS 1.2 only, originators' certificates verified against [tls] trusted_ca.
    pub fn from_config(
        cfg: &Config,
        revocation: Option<std::sync::Arc<m2m_security::revocation::RevocationList>>,
    ) -> anyhow::Result<Option<Self>> {
        let e = &cfg.esprim;
        if !e.escertke {
            return Ok(None);
        }
        let tls = cfg
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("esprim.escertke needs [tls]"))?;
        let context = server_context(&ServerTlsConfig {
            cipher_suites: CERTIFICATE_SUITES.iter().map(|s| s.to_string()).collect(),
            tls13: false,
            certificate_chain: tls.certificate.clone(),
            private_key: tls.private_key.clone(),
            trusted_ca: tls.trusted_ca.clone(),
            psk: None,
            revocation,
        })
        .map_err(|e| anyhow::anyhow!("esprim.escertke: {e}"))?;
        Ok(Some(Self {
            context,
            pending: Mutex::new(Exchanges {
                map: HashMap::new(),
                timeout: seconds("escertke_timeout_seconds", e.escertke_timeout_seconds)?,
                max_pending: e.escertke_max_pending,
                max_per_peer: e.escertke_max_pending_per_peer,
            }),
            key_lifetime: seconds(
                "escertke_key_lifetime_seconds",
                e.escertke_key_lifetime_seconds,
            )?,
        }))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Exchanges<Terminator>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Message 1 -> Message 2, keeping the handshake for the peer and originator. The limits are
    /// checked before the handshake work too, so a refused peer costs no TLS processing.
    fn begin(&self, key: ExchangeKey, message1: &[u8], now: DateTime<Utc>) -> M2mResult<Vec<u8>> {
        self.pending().admit(&key, now)?;
        let (terminator, message2) =
            Terminator::accept(&self.context, message1).map_err(|e| refused(e.0))?;
        self.pending().insert(key, terminator, now)?;
        Ok(message2)
    }

    /// Message 3 -> Message 4 and the key; the exchange ends here whatever the outcome.
    fn complete(
        &self,
        key: &ExchangeKey,
        message3: &[u8],
        now: DateTime<Utc>,
    ) -> M2mResult<(Vec<u8>, PairwiseE2eKey)> {
        let terminator = self.pending().take(key, now).ok_or_else(|| {
            M2mError::bad_request(
                "no ESCertKE exchange is pending for this originator (Message 3 replayed, late, without Message 1, or through another peer)",
            )
        })?;
        terminator.finish(message3).map_err(|e| refused(e.0))
    }
}

/// A failed handshake: the originator could not be authenticated.
fn refused(reason: String) -> M2mError {
    M2mError::new(
        Rsc::OriginatorNotAuthenticated,
        format!("ESCertKE refused: {reason}"),
    )
}

/// Answers a sit 6 NOTIFY: Message 2 for a Message 1, Message 4 for a Message 3 (then the key is held).
pub(crate) fn answer(
    cse: &Context,
    target: &EsprimTarget,
    req: &Request,
    peer: &Peer,
    info: &SecurityInfo,
) -> M2mResult<Response> {
    let result = exchange(cse, target, req, peer, info);
    if let Err(e) = &result {
        let from = req.from.as_deref().unwrap_or("");
        tracing::warn!(target: "audit", originator = from, peer = %peer_of(peer), rsc = e.rsc.code(), reason = %e.dbg, "ESCertKE Message refused");
    }
    let content = SecurityInfo::escertke_message(&result?).to_content();
    Ok(Response::new(Rsc::Ok, &req.rqi, Some(content)))
}

fn exchange(
    cse: &Context,
    target: &EsprimTarget,
    req: &Request,
    peer: &Peer,
    info: &SecurityInfo,
) -> M2mResult<Vec<u8>> {
    let Some(ke) = target.escertke.as_ref() else {
        return Err(M2mError::new(
            Rsc::NotImplemented,
            "this CSE does not run ESCertKE",
        ));
    };
    let originator = req
        .from
        .as_deref()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| M2mError::bad_request("an ESCertKE Message needs a From"))?;
    let message = info.escertke_bytes().map_err(M2mError::bad_request)?;
    let now = cse.now();
    let exchange = (peer_of(peer), originator.to_owned());
    if escertke::is_message1(&message) {
        return ke.begin(exchange, &message, now);
    }
    let (message4, key) = ke.complete(&exchange, &message, now)?;
    hold_key(cse, target, ke, originator, key, now)?;
    Ok(message4)
}

/// Binds the exported key to the identity the originator's certificate names and holds it as a
/// pairwiseESPrimKey.
fn hold_key(
    cse: &Context,
    target: &EsprimTarget,
    ke: &EscertkeTarget,
    originator: &str,
    key: PairwiseE2eKey,
    now: DateTime<Utc>,
) -> M2mResult<()> {
    let der = key
        .peer_certificate
        .to_der()
        .map_err(|_| refused("the originator's certificate cannot be read".into()))?;
    let entity = cse
        .certificate_association(&der)
        .ok()
        .and_then(|a| a.entity)
        .map(|e| e.sp_relative())
        .ok_or_else(|| refused("the originator's certificate names no AE-ID or CSE-ID".into()))?;
    let kid = key.key_id_text();
    tracing::info!(target: "audit", originator, entity = %entity, kid = %kid, "ESCertKE completed: pairwiseESPrimKey established");
    let pairwise = PairwiseKey {
        key: key.key,
        entity,
        expires: Some(now + ke.key_lifetime),
    };
    target.remember(kid, pairwise, now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::association::{Association, SaeMode};
    use chrono::TimeZone;
    use std::sync::Arc;

    fn table(max_pending: usize, max_per_peer: usize) -> Exchanges<u32> {
        Exchanges {
            map: HashMap::new(),
            timeout: Duration::seconds(30),
            max_pending,
            max_per_peer,
        }
    }

    fn key(peer: &str, originator: &str) -> ExchangeKey {
        (peer.to_owned(), originator.to_owned())
    }

    #[test]
    fn one_peer_fills_its_share_and_no_more() {
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
        let mut t = table(6, 4);
        // One peer under many originator IDs: four places, then refused with the reason.
        for i in 0..4 {
            t.insert(key("address 10.0.0.9", &format!("Cflood{i}")), i, now)
                .unwrap();
        }
        let e = t
            .insert(key("address 10.0.0.9", "Cflood4"), 4, now)
            .unwrap_err();
        assert_eq!(e.rsc, Rsc::InternalServerError);
        assert!(e.dbg.contains("from this peer"), "{e}");
        // Its own originator starting over replaces its exchange: allowed at the limit.
        t.insert(key("address 10.0.0.9", "Cflood0"), 40, now)
            .unwrap();
        assert_eq!(t.map.len(), 4);
        // Other peers still get places, up to the global limit.
        t.insert(key("entity /id-mn", "Sesc1"), 5, now).unwrap();
        t.insert(key("address 10.0.0.7", "Cother"), 6, now).unwrap();
        let e = t
            .insert(key("address 10.0.0.8", "Cthird"), 7, now)
            .unwrap_err();
        assert!(e.dbg.contains("try again later"), "{e}");
        // A Message 3 under the same From through another peer finds nothing (and takes nothing).
        assert_eq!(t.take(&key("address 10.0.0.7", "Cflood1"), now), None);
        assert_eq!(t.take(&key("address 10.0.0.9", "Cflood1"), now), Some(1));
        assert_eq!(t.take(&key("address 10.0.0.9", "Cflood0"), now), Some(40));
        // Completing frees the peer's places; expiry does too.
        t.insert(key("address 10.0.0.9", "Cflood5"), 8, now)
            .unwrap();
        let later = now + Duration::seconds(31);
        for i in 0..4 {
            t.insert(key("address 10.0.0.9", &format!("Cnew{i}")), i, later)
                .unwrap();
        }
        assert_eq!(t.take(&key("entity /id-mn", "Sesc1"), later), None);
    }

    #[test]
    fn peers_are_the_bound_entity_else_the_address() {
        let home = m2m_core::Home::cse(
            m2m_core::SpId::parse("m2m.example.com").unwrap(),
            m2m_core::CseId::parse("/id-in").unwrap(),
        );
        let with = |addr: &str, entity: Option<&str>| {
            Peer::associated(
                addr.parse().unwrap(),
                Arc::new(Association {
                    mode: SaeMode::ProvisionedKey,
                    credential: m2m_security::credentials::CredentialId::parse("12-x@y.z").unwrap(),
                    entity: entity.map(|e| m2m_core::EntityId::parse(e, &home).unwrap()),
                }),
            )
        };
        // The entity, whatever connection it comes from.
        assert_eq!(
            peer_of(&with("10.0.0.1:1000", Some("/id-mn"))),
            "entity //m2m.example.com/id-mn"
        );
        assert_eq!(
            peer_of(&with("10.0.0.2:2000", Some("/id-mn"))),
            "entity //m2m.example.com/id-mn"
        );
        // No entity: the address, any port.
        assert_eq!(peer_of(&with("10.0.0.1:1000", None)), "address 10.0.0.1");
        assert_eq!(peer_of(&with("10.0.0.1:1001", None)), "address 10.0.0.1");
        // Through an MQTT server (everyone's address is the server's): the credential.
        let mut via = with("127.0.0.1:1883", None);
        via.via_mqtt_server = true;
        assert_eq!(peer_of(&via), "credential 12-x@y.z");
        let plain = |addr: &str| Peer {
            addr: Some(addr.parse().unwrap()),
            ..Peer::default()
        };
        assert_eq!(peer_of(&plain("127.0.0.1:5")), "address 127.0.0.1");
        assert_eq!(peer_of(&plain("[::ffff:10.1.2.3]:5")), "address 10.1.2.3");
        // An IPv6 host's whole /64 is one peer.
        assert_eq!(
            peer_of(&plain("[2001:db8:1:2::1]:5")),
            peer_of(&plain("[2001:db8:1:2:ffff::9]:6"))
        );
        assert_ne!(
            peer_of(&plain("[2001:db8:1:2::1]:5")),
            peer_of(&plain("[2001:db8:1:3::1]:5"))
        );
        assert_eq!(peer_of(&Peer::internal()), "this CSE");
    }
}
