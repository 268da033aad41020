//! The M2M Authentication Function (TS-0003 clause 8.8): a server that registers MAF clients and their
//! symmetric keys and hands a key only to the entities the registering client named as its targets.
//!
//! # Transport and authentication
//! One TLS listener in the oneM2M profiles ([`m2m_security::tls::server_context`]) on the transport
//! layer ([`m2m_transport`]: connection cap, handshakes per address, timeouts, graceful shutdown,
//! one audit line per association; `[limits]` in the configuration). A MAF client
//! authenticates with TLS-PSK on Km (psk_identity = KmID, `relative@MAF-FQDN`, TS-0003 clause 10.6; the
//! configured row's `client_id` is its identity) or with an AE-ID/CSE-ID certificate
//! ([`m2m_security::certificates::identity_of`]). Identities are compared in absolute form
//! (`//sp/id-in`, `//sp/id-in/Cae`, `//sp/Sae`).
//!
//! # Remote-provisioned Km (TS-0003 clauses 8.3, 8.8.3.1)
//! With a `[mef]` section the MAF is an enrolment target of that MEF. An enrolee that enrolled there
//! (indication `MAF`, `mafId` = this MAF's FQDN) authenticates with TLS-PSK where psk_identity = its
//! KeID (`hex(RelativeKeID)@MEF-FQDN`) and psk = Km = HMAC-SHA256(Ke, label || MAF-FQDN)
//! ([`m2m_security::kdf::km`]). Project choice: the KmID of a remotely provisioned Km (SUID 21 in
//! TS-0004 terms) is the KeID itself, so the MAF knows which MEF holds it. A psk_identity that matches
//! no `[[km]]` row and ends in `@<mef fqdn>` with a hex relative part makes the MAF fetch
//! `GET /mef/fetchCredentials/{KeID}/11` over its own FQDN certificate association (the MEF must list
//! the MAF as a target for SUID 11), inside the synchronous PSK callback (`block_in_place`, so only on a
//! multi-thread runtime), within `timeout_ms`. The enrolee ID the MEF returns, in absolute form, is the
//! MAF client identity. Nothing is cached: an expired or unknown enrolment opens no association. A
//! failure is one `audit` line with the psk_identity and the reason; keys are never logged.
//!
//! Right after the handshake both sides compute the TLS exporter (RFC 5705) with the label
//! `"EXPORTER-oneM2M-Connection"`, no context, 48 bytes (TS-0003 clause 8.8.1): KcID = the 16 most-significant
//! (first) bytes, Kc = the 32 least-significant (last) bytes ([`m2m_security::kdf::export_split`]). The
//! server keeps it (zeroed on drop) with the connection: it is the key a Key Registration without keyValue
//! registers. Relative key IDs are uppercase hexBinary ([`m2m_security::kdf::hex_binary`], as
//! `kdf::kc_id_string` and `m2m keys export-split` write them); the MAF reads them in either case.
//!
//! # The HTTP/1.1 JSON API (this project's choice)
//! TS-0032 (the MAF/MEF interface resources) was not available, so the API below is modelled on the
//! parameters of TS-0003 clause 8.8.2. Times are oneM2M timestamps `YYYYMMDDTHHMMSS` (UTC); key values hex.
//!
//! | procedure (8.8.2) | request | answer |
//! |---|---|---|
//! | Client Registration | `POST /maf/clients` `{"expirationTime"?, "adminFQDN"?}` | 201 `{"mafClientRegID", "mafClientID", "expirationTime", "adminFQDN"?}` |
//! | Client Registration Update | `PUT /maf/clients/{mafClientRegID}` `{"expirationTime"?, "adminFQDN"?}` (only by that client) | 200 as Client Registration |
//! | Client De-Registration | `DELETE /maf/clients/{mafClientRegID}` (only by that client) | 204 |
//! | Key Registration | `POST /maf/keys` `{"suid", "targetIDs": [..], "expirationTime"?, "adminFQDN"?, "keyValue"?}` | 201 `{"relativeKeyID", "keyID", "expirationTime", "sourceID", "suid", "targetIDs"}` |
//! | Key Retrieval | `GET /maf/keys/{relativeKeyID}` (only by a target) | 200 `{"keyValue", "expirationTime", "sourceID", "suid", "adminFQDN"?, "sourceKmID"?}` |
//! | Key Registration Update | `PUT /maf/keys/{relativeKeyID}` `{"expirationTime"?, "targetIDs"?}` (only by the source) | 200 as Key Registration |
//! | Key De-Registration | `DELETE /maf/keys/{relativeKeyID}` (only by the source) | 204 |
//!
//! - Key Registration needs a valid Client Registration of the requester (403 otherwise).
//! - Without `keyValue`, the key is Kc of this connection and relativeKeyID = HEX(KcID); with `keyValue`
//!   (16 to 64 bytes), relativeKeyID is 16 random bytes in uppercase hex. The KcID on the wire is
//!   `relativeKeyID@MAF-FQDN` (`keyID`).
//! - `suid`: 12–15, 22–25 or 32–35 (TS-0004 table 6.3.4.2.39-1). For SAEF (x2) and ESPrim (x3) `targetIDs`
//!   must hold exactly one ID; targets are given as SP-relative or absolute AE-IDs/CSE-IDs and stored
//!   absolute.
//! - A requested expirationTime later than `max_lifetime` from now is shortened; absent, the configured
//!   default lifetime applies. Expired registrations are purged on access and by a periodic sweep.
//! - `sourceKmID` (project choice; TS-0003 clause 8.2.2.3 has the target form the source's Credential-ID
//!   "from KmID provided by the MAF" without saying how it travels): the KmID the source's client
//!   registration was made (or last updated) over; absent when that was a certificate association.
//! - Retrieval by an entity that is not a target: 403; unknown or expired: 404. Errors are
//!   `{"error": "short reason"}` and never carry key material.
//!
//! # Lifetimes: no key outlives what it was registered under
//! - A key registration belongs to the source's client registration valid when it was made (the one
//!   expiring last, if the client holds several). Its expirationTime is cut to that registration's,
//!   at Key Registration and at every Key Registration Update; a Client Registration Update that
//!   shortens the registration shortens its keys (they are not lengthened when it is lengthened).
//! - Client De-Registration deletes the client's keys (and its TTP credentials, [`ttp`]) in the same
//!   transaction. A key whose client registration has expired or is gone is gone: retrieval answers
//!   404 "no such key" as for an unknown key, the source can neither update nor extend it, and the
//!   sweep deletes both. Both expiries are checked when a key is read, not only by the sweep.
//! - An association opened with a remote-provisioned Km carries the lifetime the MEF reported for
//!   the enrolment (`lifetime` of fetchCredentials). A Client Registration or Update over it is cut
//!   to that end, and so is any key registered over it, now and at later updates (a Kc is derived
//!   from that association). Once the enrolment has ended, requests on a still-open association are
//!   refused (403 "the enrolment this association was authenticated with has ended"). A client that
//!   enrolled again updates its registration over the new Km (clause 8.8.2.5: an update may
//!   "establish a new Km"); its keys keep the end of the enrolment they were registered under.
//! - `[[km]]` rows and certificates carry no lifetime the MAF tracks: their clients' registrations
//!   are bounded by `max_lifetime` only.
//! - Deviations from the tables of clause 8.8.2: `adminFQDN` is optional (kept and echoed when given), `labels`
//!   and Client Configuration Retrieval is not implemented, `targetIDs` is mandatory and
//!   non-empty (the MAF creates no list of its own), and an optional `mafFQDN` is checked against this MAF's FQDN.
//! - Key Registration Update may change `targetIDs` for every SUID (clause 8.8.2.7 only foresees later changes
//!   for ESData, by administrating stakeholders; here the source may re-target its own key).
//! - Key values travel in the JSON bodies; the server's and client's HTTP buffers holding them are not zeroed
//!   (the parsed values are, as [`Secret`](m2m_security::credentials::Secret)s).
//! - Every registration, retrieval (granted or refused), update and de-registration is one log line with
//!   tracing target `audit`, carrying IDs only.
//!
//! # The trusted third party
//! The same listener serves the TTP's registry of E2E credentials (seeds/001 clauses 5.6, 5.7) under
//! `/maf/e2e-credentials`, with oneM2M status codes; see [`ttp`].

pub mod client;
pub mod config;
pub mod jwk;
pub mod server;
pub mod store;
pub mod ttp;

pub use client::{
    ClientRegistration, CredentialRequest, E2eCredential, MafClient, MafError, RegisteredKey,
    RetrievedKey,
};
pub use config::{Delegation, KmRow, MafConfig, MefSection, TtpSection, DEFAULT_CONFIG};
pub use jwk::{Jwk, KeyType};
pub use server::{Clock, RunningMaf};
pub use ttp::CredentialUsage;

use m2m_core::{EntityId, Home, SpId};

/// A relative key ID as the MAF stores and looks it up: hexBinary is case-insensitive, the MAF writes
/// it in uppercase, so an ID given in lowercase finds the same key.
pub(crate) fn normalize_relative_id(id: &str) -> String {
    id.to_ascii_uppercase()
}

/// An AE-ID or CSE-ID (SP-relative or absolute) in absolute form; CSE-relative AE-IDs are refused (the
/// MAF hosts no CSE).
pub fn absolute_id(id: &str, sp_fqdn: &str) -> Option<String> {
    entity_id(id, sp_fqdn).map(|e| e.absolute())
}

/// An AE-ID or CSE-ID (SP-relative or absolute), parsed; CSE-relative AE-IDs are refused (the MAF
/// hosts no CSE).
pub fn entity_id(id: &str, sp_fqdn: &str) -> Option<EntityId> {
    if !id.starts_with('/') {
        return None;
    }
    let home = Home::sp(SpId::parse(sp_fqdn).ok()?);
    EntityId::parse(id, &home).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_brought_to_absolute_form() {
        let sp = "m2m.example.com";
        assert_eq!(
            absolute_id("/id-in", sp).unwrap(),
            "//m2m.example.com/id-in"
        );
        assert_eq!(
            absolute_id("//M2M.Example.com/id-in/Cae", sp).unwrap(),
            "//m2m.example.com/id-in/Cae"
        );
        assert_eq!(absolute_id("/Sae1", sp).unwrap(), "//m2m.example.com/Sae1");
        assert!(absolute_id("Cae", sp).is_none());
        assert!(absolute_id("/id-in/*", sp).is_none());
        assert!(absolute_id("//sp/a/b/c", sp).is_none());
    }
}
