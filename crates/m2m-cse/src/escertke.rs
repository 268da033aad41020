//! This CSE as ESCertKE Terminating End-Point (TS-0003 clause 8.7; TS-0004 clause 7.5.1.2.12): NOTIFY
//! requests to the CSEBase carrying `m2m:securityInfo` sit 6 with an ESCertKE Message.
//!
//! Message 1 (a ClientHello) starts an exchange and is answered with Message 2; the half-done handshake
//! is kept per originator (the outer From; TS-0004 carries no exchange identifier, so a new Message 1
//! from the same originator replaces its pending exchange) for `escertke_timeout_seconds`, at most
//! `escertke_max_pending` at once. Message 3 completes it and is answered with Message 4; the exported
//! pairwiseE2EKey becomes a pairwiseESPrimKey with `kid` = hexBinary(pairwiseE2EKeyID), bound to the
//! identity of the originator's certificate and valid for `escertke_key_lifetime_seconds`. An exchange is
//! used once: a replayed Message 3 finds nothing pending (4000); a failed handshake (a certificate from
//! another root, a bad Finished) is 4106. Relaying CSEs forward these NOTIFYs like any other and learn
//! nothing they could use: the flights are a TLS handshake.

use crate::config::Config;
use crate::cse::Cse;
use crate::esprim::EsprimTarget;
use chrono::{DateTime, Duration, Utc};
use m2m_core::security_info::SecurityInfo;
use m2m_core::{M2mError, M2mResult, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::e2e::escertke::{self, PairwiseE2eKey, Terminator};
use m2m_security::e2e::esprim::PairwiseKey;
use m2m_security::tls::{server_context, ServerTlsConfig, CERTIFICATE_SUITES};
use openssl::ssl::SslContext;
use std::collections::HashMap;
use std::sync::Mutex;

/// A handshake between Messages 2 and 3.
struct Pending {
    terminator: Terminator,
    started: DateTime<Utc>,
}

/// The Terminating End-Point's context, pending exchanges and limits.
pub struct EscertkeTarget {
    context: SslContext,
    pending: Mutex<HashMap<String, Pending>>,
    timeout: Duration,
    max_pending: usize,
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
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Self>> {
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
        })
        .map_err(|e| anyhow::anyhow!("esprim.escertke: {e}"))?;
        Ok(Some(Self {
            context,
            pending: Mutex::new(HashMap::new()),
            timeout: seconds("escertke_timeout_seconds", e.escertke_timeout_seconds)?,
            max_pending: e.escertke_max_pending,
            key_lifetime: seconds(
                "escertke_key_lifetime_seconds",
                e.escertke_key_lifetime_seconds,
            )?,
        }))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Message 1 -> Message 2, keeping the handshake for the originator.
    fn begin(&self, originator: &str, message1: &[u8], now: DateTime<Utc>) -> M2mResult<Vec<u8>> {
        {
            let mut pending = self.pending();
            pending.retain(|_, p| now - p.started < self.timeout);
            if pending.len() >= self.max_pending && !pending.contains_key(originator) {
                return Err(M2mError::new(
                    Rsc::InternalServerError,
                    "too many ESCertKE exchanges are pending: try again later",
                ));
            }
        }
        let (terminator, message2) =
            Terminator::accept(&self.context, message1).map_err(|e| refused(e.0))?;
        let started = now;
        self.pending().insert(
            originator.to_owned(),
            Pending {
                terminator,
                started,
            },
        );
        Ok(message2)
    }

    /// Message 3 -> Message 4 and the key; the exchange ends here whatever the outcome.
    fn complete(
        &self,
        originator: &str,
        message3: &[u8],
        now: DateTime<Utc>,
    ) -> M2mResult<(Vec<u8>, PairwiseE2eKey)> {
        let pending = self
            .pending()
            .remove(originator)
            .filter(|p| now - p.started < self.timeout)
            .ok_or_else(|| {
                M2mError::bad_request(
                    "no ESCertKE exchange is pending for this originator (Message 3 replayed, late, or without Message 1)",
                )
            })?;
        pending
            .terminator
            .finish(message3)
            .map_err(|e| refused(e.0))
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
    cse: &Cse,
    target: &EsprimTarget,
    req: &Request,
    info: &SecurityInfo,
) -> M2mResult<Response> {
    let result = exchange(cse, target, req, info);
    if let Err(e) = &result {
        let from = req.from.as_deref().unwrap_or("");
        tracing::warn!(target: "audit", originator = from, rsc = e.rsc.code(), reason = %e.dbg, "ESCertKE Message refused");
    }
    let content = SecurityInfo::escertke_message(&result?).to_content();
    Ok(Response::new(Rsc::Ok, &req.rqi, Some(content)))
}

fn exchange(
    cse: &Cse,
    target: &EsprimTarget,
    req: &Request,
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
    if escertke::is_message1(&message) {
        return ke.begin(originator, &message, now);
    }
    let (message4, key) = ke.complete(originator, &message, now)?;
    hold_key(cse, target, ke, originator, key, now)?;
    Ok(message4)
}

/// Binds the exported key to the identity the originator's certificate names and holds it as a
/// pairwiseESPrimKey.
fn hold_key(
    cse: &Cse,
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
