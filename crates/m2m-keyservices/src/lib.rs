//! Key services of the Security CSF as servers of their own (TS-0003 clauses 8.3 and 8.8).
//!
//! [`maf`] holds the M2M Authentication Function: its server (a TLS listener with a small HTTP/JSON API, SQLite
//! storage with key values encrypted at rest) and a client library that keeps one TLS connection so that the
//! connection key Kc it registers is the one both sides export. [`mef`] holds the M2M Enrolment Function:
//! remote security provisioning from the bootstrap exporter key Ke. [`bsf`] holds a GBA Bootstrapping
//! Server Function (3GPP TS 33.220) with its HSS, its Ub and Zn interfaces, and the device's USIM.

#![forbid(unsafe_code)]

/// AES-256-GCM sealing at rest and private SQLite files, shared with the CSE's secure storage.
pub mod at_rest;
pub mod bsf;
pub mod maf;
pub mod mef;
mod provisioned_keys;
pub mod psk_fetch;
pub mod sae;

/// The revocation list a server checks client certificates against (TS-0003 clause 8.1.2.2).
fn revocation_list(
    crl: Option<&std::path::Path>,
    trusted_ca: Option<&std::path::Path>,
) -> Result<Option<std::sync::Arc<m2m_security::revocation::RevocationList>>, String> {
    m2m_security::revocation::RevocationList::open_configured(crl, trusted_ca)
        .map_err(|e| format!("crl: {e}"))
}
