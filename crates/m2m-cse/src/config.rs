//! The CSE configuration: one TOML file, every field with a default (`m2m cse --print-default-config`).

use anyhow::{bail, Context};
use m2m_core::{CseId, SpId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

mod default_text;

/// Whether this CSE runs in the infrastructure (cloud) or on a middle node (gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    IN,
    MN,
}

impl Role {
    /// cseType (TS-0004 table 6.3.4.2.2-1).
    pub fn cse_type(self) -> u8 {
        match self {
            Role::IN => 1,
            Role::MN => 2,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub cse: CseSection,
    pub http: HttpSection,
    pub storage: StorageSection,
    /// The registrar CSE an MN-CSE registers with (required for role MN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registrar: Option<RegistrarSection>,
    pub limits: LimitsSection,
    pub registration: RegistrationSection,
    /// The TLS listener (security associations); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// A plain CoAP listener (UDP, no DTLS); absent: none. CoAP over DTLS is `tls.dtls_listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coap: Option<CoapSection>,
    /// The MQTT binding (TS-0010): this CSE as a client of an MQTT server, over TLS-PSK; absent:
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSection>,
    /// Multicast group fan-out over CoAP (TS-0001 clause 10.2.7.13, TS-0008 Annex B); absent:
    /// none (every fan-out is unicast, no group can be joined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multicast: Option<MulticastSection>,
    pub security: SecuritySection,
    /// The Secure Storage service (seeds/002 clause 6.3.5.2, `<CSEBase>/secureStorage`);
    /// absent: off (its requests answer 5001).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_storage: Option<SecureStorageSection>,
    /// The MAF this CSE retrieves connection keys from (MAF-based SAE); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maf: Option<MafSection>,
    /// Remote-provisioned Kpsa (TS-0003 clause 8.3.2.1): this CSE as an enrolment target of a
    /// MEF; absent: KeIDs open nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mef: Option<MefSection>,
    /// GBA-based security association establishment (TS-0003 clause 8.3.2.3, TS 33.222): this
    /// CSE as a NAF of a BSF; absent: B-TIDs open nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gba: Option<GbaSection>,
    /// Dynamic authorization (TS-0003 clause 7.3.2.2): the servers this CSE consults when no
    /// policy grants; absent: none is ever consulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_authorization: Option<DynamicAuthorizationSection>,
    /// Entity C of Group Authentication Solution 1 (IN-CSE): the group agents and their members.
    pub group_authentication: GroupAuthenticationSection,
    /// Entity B of Group Authentication Solution 1 (MN-CSE): the members it is group agent for.
    pub group_agent: GroupAgentSection,
    /// This CSE as ESPrim Target: pairwiseESPrimKeys, accepted options, rand lifetime.
    pub esprim: EsprimSection,
    /// Group credentials end to end (IN-CSE, seeds/001 clause 5.1): the members' own E2E keys.
    pub group_credentials: GroupCredentialsSection,
    /// `<flexContainer>` specializations besides the built-in module classes.
    pub flex_container: FlexContainerSection,
    /// Notification policies the operator sets for every subscription.
    pub notifications: NotificationsSection,
}

/// The system default `<notificationTargetPolicy>` (TS-0001 clause 9.6.31: "configurable by the
/// M2M Service Provider"): what happens when a notification target asks to be removed from a
/// subscription whose creator set no policy. `reject` (the default) keeps the creator's
/// subscription as it made it; `accept`, `seek` (ask the creator) and `inform` (tell the
/// creator, reject) are the other actions of TS-0004 table 6.3.4.2.32-1.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsSection {
    pub target_removal: TargetRemovalAction,
}

/// m2m:notificationTargetPolicyAction (TS-0004 table 6.3.4.2.32-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetRemovalAction {
    Accept = 1,
    #[default]
    Reject = 2,
    /// Seek authorization from the subscription creator before responding.
    Seek = 3,
    /// Inform the subscription creator without taking any action.
    Inform = 4,
}

impl TargetRemovalAction {
    pub(crate) fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::Accept,
            2 => Self::Reject,
            3 => Self::Seek,
            4 => Self::Inform,
            _ => return None,
        })
    }
}

/// How a listener without security association treats the From of its requests (`[http]
/// originators`, announced at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlainTrust {
    /// A From is a claim only (`Proof::Claimed`): it matches `all` in access control rules and
    /// nothing else, is never the creator, never the admin, and is not forwarded to other CSEs.
    Anonymous,
    /// Every From is believed as written, the admin included (`Proof::Vouched`: it matches IDs
    /// and creators, but rq_authn stays false, so `acaf` rules refuse it): for development on
    /// loopback, or a network the operator protects otherwise. Announced at start.
    Trusted,
}

/// Definition files of `<flexContainer>` specializations (m2m-core `specialization`: a JSON list
/// of `{key, cnd, attributes: [{name, type, mandatory, create}]}`), read at start; a malformed one stops
/// the start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlexContainerSection {
    pub specializations: Vec<PathBuf>,
}

/// Group credentials end to end at the IN-CSE (seeds/001 clause 5.1): each member AE's own
/// pre-provisioned E2E key, under which the group key is sealed for it. A configuration holding
/// keys must not be readable by others (as for `[security]` psk rows).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupCredentialsSection {
    /// The child container of a member AE that receives its sealed credential.
    pub container: String,
    /// The server's P-256 private JWK file (mode 0600): signs the credentials sealed under a
    /// member's public key (anyone knowing that key could otherwise forge one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<E2eMemberRow>,
}

impl Default for GroupCredentialsSection {
    fn default() -> Self {
        Self {
            container: "credentials".into(),
            signing_key: None,
            members: Vec::new(),
        }
    }
}

/// One member's E2E key: exactly one of `key` (hex, shared: AES key wrap), `keystore_secret`
/// (the name of a secret in the `[security]` keystore, shared) or `public_jwk` (a P-256 public
/// JWK file: ECDH-ES+A128KW).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eMemberRow {
    /// The member's AE-ID (SP-relative, e.g. `/id-mn/Clock1`, or absolute).
    pub member: String,
    /// The key ID of a shared key; default: the member's AE-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// A shared key in hex: 16, 24 or 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystore_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<PathBuf>,
}

impl std::fmt::Debug for E2eMemberRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eMemberRow")
            .field("member", &self.member)
            .field("kid", &self.kid)
            .field("keystore_secret", &self.keystore_secret)
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

/// End-to-End Security of Primitives with this CSE as Target (TS-0003 clause 8.4, TS-0004 clause
/// 7.6.2): the provisioned pairwiseESPrimKeys and what the receiverESPrimRandObjects offer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsprimSection {
    /// How long a receiverESPrimRandObject (and so every session on it) stays valid, in seconds.
    pub rand_lifetime_seconds: u64,
    /// The esprimProtocolAndAlgIDs offered and accepted (10, 11, 12: JWE with A128/A192/A256GCM).
    pub algorithms: Vec<m2m_core::security_info::EsprimProtocolAndAlgId>,
    /// MAF ESPrim Framework: accept pairwiseESPrimKeyIDs `hex(KcID)@<[maf] fqdn>`, retrieving Kc
    /// (registered with SUID 33 for this CSE) from the MAF; needs `[maf]`.
    pub maf_keys: bool,
    /// ESCertKE (TS-0003 clause 8.7): answer ESCertKE Messages (NOTIFY sit 6) with the `[tls]`
    /// certificate, trusting originators' certificates from `[tls]` trusted_ca.
    pub escertke: bool,
    /// An ESCertKE exchange whose message 3 does not come within this time is dropped.
    pub escertke_timeout_seconds: u64,
    /// At most this many ESCertKE exchanges wait for their message 3 (one per peer and originator).
    pub escertke_max_pending: usize,
    /// ... and at most this many of one peer (the entity its association is bound to, else its
    /// address), so that one peer cannot take every place under many originator IDs. A relaying
    /// CSE is one peer for all the originators behind it.
    pub escertke_max_pending_per_peer: usize,
    /// How long a key established by ESCertKE stays a valid pairwiseESPrimKey.
    pub escertke_key_lifetime_seconds: u64,
    /// The provisioned pairwiseESPrimKeys; with none, no maf_keys and no escertke this CSE is no
    /// ESPrim Target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<EsprimKeyRow>,
}

impl Default for EsprimSection {
    fn default() -> Self {
        Self {
            rand_lifetime_seconds: 300,
            algorithms: m2m_core::security_info::EsprimProtocolAndAlgId::ALL.to_vec(),
            maf_keys: false,
            escertke: false,
            escertke_timeout_seconds: 30,
            escertke_max_pending: 256,
            escertke_max_pending_per_peer: 4,
            escertke_key_lifetime_seconds: 3600,
            keys: Vec::new(),
        }
    }
}

/// One pairwiseESPrimKey: its ID, the entity at the other end, and where the key is (exactly one of
/// `key`, `key_env`, `keystore_secret`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsprimKeyRow {
    /// pairwiseESPrimKeyID, the `kid` of the ESPrim objects.
    pub kid: String,
    /// The AE-ID or CSE-ID the key belongs to (any form); the inner From must name it (4116 else).
    pub entity: String,
    /// The key in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The environment variable holding the key in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// The name of a secret in the `[security]` keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystore_secret: Option<String>,
}

impl std::fmt::Debug for EsprimKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsprimKeyRow")
            .field("kid", &self.kid)
            .field("entity", &self.entity)
            .field("key_env", &self.key_env)
            .field("keystore_secret", &self.keystore_secret)
            .finish_non_exhaustive()
    }
}

/// Group Authentication Solution 1 at the IN-CSE (seeds/001 clause 8.2.1): which MN-CSE is the
/// group agent of which members. A member is named by the KpsaxiId of its PSK row here (the row
/// gives Kpsaxi and the member's AE-ID/CSE-ID); under group authentication that identity opens
/// an association only with the current Ksx, never with Kpsaxi itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupAuthenticationSection {
    /// How long the Ksx of a round opens associations, in seconds.
    pub key_lifetime_seconds: u64,
    pub agents: Vec<GroupAgentRow>,
}

impl Default for GroupAuthenticationSection {
    fn default() -> Self {
        Self {
            key_lifetime_seconds: 3600,
            agents: Vec::new(),
        }
    }
}

/// One group agent and its members.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupAgentRow {
    /// The agent's CSE-ID, e.g. `/id-mn` (the entity its association at this CSE is bound to).
    pub agent: String,
    /// The members' KpsaxiIds (= KsxIds), each a PSK row of this CSE with an entity.
    pub members: Vec<String>,
}

/// Group Authentication Solution 1 at the MN-CSE: the members (AE-IDs or CSE-IDs bound to PSK
/// rows here) this CSE asks the registrar for group keys on behalf of; empty: not an agent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupAgentSection {
    pub members: Vec<String>,
}

/// The M2M Authentication Function (TS-0003 clause 8.8) this CSE is a target client of. The CSE
/// authenticates to it with its `[tls]` certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MafSection {
    /// e.g. `https://maf.keys.example.net:8443`
    pub url: String,
    /// The MAF-FQDN: the suffix of its key identifiers (`hex(KcID)@MAF-FQDN`), its SNI and the
    /// name its certificate must carry.
    pub fqdn: String,
    /// How long a handshake waits for the MAF.
    #[serde(default = "default_maf_timeout")]
    pub timeout_ms: u64,
    /// Keep a retrieved key until its expiration, at most this long (0: fetch for every
    /// handshake, so that a de-registered key opens nothing).
    #[serde(default)]
    pub cache_seconds: u64,
}

/// `[secure_storage]`: the key its contents are sealed under, and its bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureStorageSection {
    /// The secret of the secure environment the sealing key is derived from (HMAC-SHA-256
    /// inside a [security.pkcs11] token, or with a `[security]` keystore secret).
    pub secret: String,
    /// The largest content of one data object, in bytes.
    #[serde(default = "default_sdo_bytes")]
    pub max_object_bytes: usize,
    /// How many data objects one owner may keep.
    #[serde(default = "default_sdo_count")]
    pub max_objects_per_owner: usize,
    /// The contents of all owners together, in bytes.
    #[serde(default = "default_sdo_total")]
    pub max_total_bytes: u64,
}

fn default_sdo_total() -> u64 {
    64 << 20
}

fn default_sdo_bytes() -> usize {
    65_536
}

fn default_sdo_count() -> usize {
    256
}

fn default_maf_timeout() -> u64 {
    2_000
}

/// The MEF this CSE is an enrolment target of: an enrolee that enrolled naming this CSE for
/// SUID 12 offers its KeID as KpsaID, and the CSE fetches that Kpsa from the MEF with its `[tls]`
/// certificate (TS-0003 clauses 8.3.2.1, 10.3.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MefSection {
    /// The MEF's URL, e.g. `https://mef.keys.example.net:8443`.
    pub url: String,
    /// The MEF-FQDN: its certificate's name and the suffix of its KeIDs.
    pub fqdn: String,
    /// How long a handshake waits for the MEF.
    #[serde(default = "default_maf_timeout")]
    pub timeout_ms: u64,
    /// Keep a fetched Kpsa until its enrolment ends, at most this long (0: ask at every
    /// handshake, so that a revoked enrolment opens nothing).
    #[serde(default)]
    pub cache_seconds: u64,
}

/// The BSF this CSE is a NAF of (GBA-based SAE): a device offers its B-TID as psk_identity, and
/// the CSE fetches Ks_NAF for it over Zn with its `[tls]` certificate. Its NAF FQDN is the public
/// domain name of its CSE-ID (TS-0003 clause 8.3.2.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GbaSection {
    /// The BSF's Zn URL, e.g. `https://bsf.operator.example.net:8444`.
    pub zn_url: String,
    /// The BSF's domain: its certificate's name and the suffix of its B-TIDs.
    pub bsf_fqdn: String,
    /// How long a handshake waits for the BSF.
    #[serde(default = "default_maf_timeout")]
    pub timeout_ms: u64,
    /// Keep a fetched key until the B-TID expires, at most this long (0: ask at every handshake).
    #[serde(default)]
    pub cache_seconds: u64,
}

/// The Dynamic Authorization Servers this CSE consults (TS-0003 clause 7.3.2.2, TS-0004 clause
/// 7.5.1.2.10). A `<dynamicAuthorizationConsultation>` names servers in its `dap`; only those
/// listed here are ever contacted (a resource's creator could otherwise point the CSE at a
/// server that grants whatever it is asked), over https with the CSE's certificate, the server
/// verified by name against `[tls]` trusted_ca.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicAuthorizationSection {
    pub servers: Vec<DasServerRow>,
    /// How long a consultation waits for the server; no answer is a denial.
    pub timeout_ms: u64,
    /// The longest a grant is kept, whatever privilegesLifetime the server gives.
    pub max_lifetime_seconds: u64,
    /// How long a server's refusal (or silence) is kept before it is asked again for the same
    /// originator, target and operation: a flood of refused requests is not a flood of
    /// consultations.
    pub refusal_cache_seconds: u64,
    /// The issuers whose tokens (the Tokens parameter, TS-0003 clause 7.3.2.3) this CSE accepts.
    pub token_issuers: Vec<TokenIssuerRow>,
    /// Revoked token IDs, one per line, read again whenever the file changes; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_tokens: Option<PathBuf>,
}

/// A token issuer: the `iss` of its tokens and the P-256 public key (JWK with kid) they are
/// signed with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerRow {
    pub id: String,
    pub public_key: PathBuf,
}

impl Default for DynamicAuthorizationSection {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout_ms: 2_000,
            max_lifetime_seconds: 3_600,
            refusal_cache_seconds: 10,
            token_issuers: Vec::new(),
            revoked_tokens: None,
        }
    }
}

/// One Dynamic Authorization Server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DasServerRow {
    /// Its address as a `dap` names it, e.g. `https://das.m2m.example.com:8443`.
    pub url: String,
    /// The name its certificate must carry; absent: the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A TLS listener in the oneM2M profiles (TS-0003 clause 10.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: String,
    /// Cipher suites (OpenSSL names), restricted to the profile suites.
    pub cipher_suites: Vec<String>,
    /// Also accept TLS 1.3, which oneM2M Release 3 does not use.
    pub tls13: bool,
    /// This CSE's certificate chain (PEM, leaf first) and key, for the certificate suites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// Root of trust for client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<PathBuf>,
    /// Certificate revocation lists of the trusted CAs (PEM; `m2m pki revoke` writes them),
    /// consulted at every certificate handshake (TS-0003 clause 8.1.2.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// The peers whose certificates are accepted (AE-IDs, CSE-IDs, any form); empty: every
    /// identity the root of trust certifies for this service provider.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted_identities: Vec<String>,
    /// A handshake not finished within this time is dropped.
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress allowed per source address.
    pub max_handshakes_per_source: usize,
    /// Also serve the CoAP binding (TS-0008) over DTLS 1.2 on this UDP address, with the same
    /// suites, PSK table and certificates; absent: no DTLS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_listen: Option<String>,
    /// Also serve the WebSocket binding (TS-0020, `wss://`) on this TCP address, over the same
    /// TLS suites, credentials and accepted identities; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss_listen: Option<String>,
    /// The web origins (`https://app.example.com`) whose pages may open a WebSocket here; a
    /// handshake with any other Origin is refused (403): a page elsewhere must not ride a
    /// browser's client certificate. Empty: no browser page at all (devices send no Origin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wss_origins: Vec<String>,
}

impl TlsSection {
    /// The revocation list of `crl`, verified against `trusted_ca` (an unusable list stops
    /// start-up). Opened once, by [`crate::Cse::open`]: its listeners and clients share it.
    pub fn revocation_list(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<m2m_security::revocation::RevocationList>>> {
        m2m_security::revocation::RevocationList::open_configured(
            self.crl.as_deref(),
            self.trusted_ca.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("tls.crl: {e}"))
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            cipher_suites: m2m_security::tls::PSK_SUITES
                .iter()
                .chain(m2m_security::tls::CERTIFICATE_SUITES)
                .map(|s| s.to_string())
                .collect(),
            tls13: false,
            certificate: None,
            private_key: None,
            trusted_ca: None,
            crl: None,
            accepted_identities: Vec::new(),
            handshake_timeout_ms: 10_000,
            max_handshakes_per_source: 16,
            dtls_listen: None,
            wss_listen: None,
            wss_origins: Vec::new(),
        }
    }
}

/// Credentials of the security associations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// The psk lookup table (seeds/000 table 7.1.2-2) given in the configuration itself; a
    /// configuration holding keys must not be readable by others.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub psk: Vec<PskRow>,
    /// The software secure environment: an encrypted keystore made with `m2m keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keystore: Option<PathBuf>,
    /// The keystore's key: a key file (32 bytes) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// ... or a passphrase in this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_env: Option<String>,
    /// The Kpsa rotation key Krot shared with the administrator (32 bytes in hex, mode 0600):
    /// remote Kpsa rotation through the credentials mgmtObj; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_key: Option<PathBuf>,
    /// Krot as a secret of the secure environments instead (`m2m keys token ... add-secret`):
    /// in a PKCS#11 token the rotated Kpsa is derived inside it (HMAC-SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_secret: Option<String>,
    /// The Authorization Authorities whose `<role>` resources assign roles here, besides the
    /// administrator (TS-0003 clause 7.4), each with the namespace of its Role-IDs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub role_issuers: Vec<RoleIssuerRow>,
    /// A PKCS#11 token (an HSM, a smart card, SoftHSM) as secure environment: its PSKs, and the
    /// private key `[tls] private_key` names by a `pkcs11:` URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Section>,
    /// The lowest Security Level (seeds/002 clause 6.4.1) any key of this CSE may be kept at:
    /// `software`, `token` or `hardware`. Start-up refuses a secure environment, a PSK row or a
    /// private key file below it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_level: Option<m2m_security::secure_environment::SecurityLevel>,
}

/// `[security.pkcs11]`: where the token is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// The token vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// A file (mode 0600) holding the user PIN.
    pub pin_file: PathBuf,
    /// OpenSSL's PKCS#11 provider (Debian's `pkcs11-provider` package puts it at
    /// /usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<PathBuf>,
}

impl Pkcs11Section {
    pub fn token_config(&self) -> m2m_security::secure_environment::pkcs11::TokenConfig {
        m2m_security::secure_environment::pkcs11::TokenConfig {
            module: self.module.clone(),
            token: self.token.clone(),
            pin_file: self.pin_file.clone(),
        }
    }
}

/// An Authorization Authority: its AE-ID or CSE-ID, and the issuerID (a lower-case FQDN) every
/// Role-ID it assigns ends with (`name@domain`): one authority cannot assign another's roles.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleIssuerRow {
    pub id: String,
    pub domain: String,
}

/// One row of the psk lookup table: the AE-ID or CSE-ID (optional), KpsaID and Kpsa.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PskRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub kpsa_id: String,
    /// Kpsa in hex.
    pub key: String,
}

impl std::fmt::Debug for PskRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskRow")
            .field("entity", &self.entity)
            .field("kpsa_id", &self.kpsa_id)
            .finish_non_exhaustive()
    }
}

/// Which AEs may register here (TS-0001 clause 10.2.2.2; the same rules as
/// `<serviceSubscribedAppRule>` resources, which apply in addition).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSection {
    /// Each rule admits the (Credential-ID, App-ID, AE-ID-Stem) combinations it lists; an AE
    /// registers if any rule (here or as a resource) admits it, else 4126 APP_RULE_VALIDATION_FAILED.
    pub rules: Vec<m2m_security::registration_rules::AppRule>,
    /// Which CSEs each registree CSE may list in its descendantCSEs; none: a registree's list
    /// is taken first come, first kept (docs/SECURITY.md).
    pub descendants: Vec<m2m_security::registration_rules::DescendantRule>,
}

impl Default for RegistrationSection {
    /// Without a security association, any App-ID with a CSE- or SP-assigned AE-ID-Stem.
    fn default() -> Self {
        Self {
            rules: vec![m2m_security::registration_rules::AppRule {
                apci: None,
                aai: vec!["*".into()],
                aae: vec!["C*".into(), "S*".into()],
            }],
            descendants: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CseSection {
    pub role: Role,
    /// CSE-ID in SP-relative form, e.g. `/id-in`.
    pub cse_id: String,
    /// Resource name of the CSEBase, e.g. `cse-in`.
    pub resource_name: String,
    /// M2M-SP-ID, e.g. `//m2m.example.com`.
    pub sp_id: String,
    /// The originator with full access to everything on this CSE, when a credential proves it
    /// (a PSK row or certificate bound to it, or a listener declared trusted).
    pub admin_originator: String,
    /// The IN-CSE of this SP, whose public domain name CSE-ID certificates hang under (TS-0001
    /// clause 6.5.1.1: `<in>.<sp>`, `<cse>.<in>.<sp>`); default: this CSE on an IN, the
    /// registrar on an MN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_cse_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: String,
    /// The URL peers use to reach this CSE (pointOfAccess); defaults to `http://<listen address>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How the plain listener takes a request's From, since no security association proves it:
    /// "anonymous" (a claim: it matches only "all" in access control rules, is never the creator
    /// nor the admin, is not forwarded to other CSEs) or "trusted" (believed as written, the admin
    /// included: development on loopback, or a network protected otherwise; announced at start).
    pub originators: PlainTrust,
    /// Allow the plain-HTTP listener on a non-loopback address (no security association: only
    /// for networks that are protected otherwise).
    pub allow_insecure: bool,
    /// Serve the Upper Tester interface of conformance testing (TS-0019, `POST /__ut__`): only
    /// on a trusted listener on loopback (`upper_tester`).
    pub upper_tester: bool,
}

/// Multicast group fan-out (TS-0001 clause 10.2.7.13, TS-0008 Annex B) over IPv4, protected with
/// a group key at the service layer (docs/SECURITY.md, "Multicast group fan-out"). As group hosting
/// CSE, this CSE signs fan-outs with `group_credentials.signing_key` and seals each group key for
/// a member hosting CSE under that CSE's row of `group_credentials.members`; as member hosting CSE
/// it opens them with its own key here (exactly one of `key`, `keystore_secret`, `private_jwk`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MulticastSection {
    /// The UDP port of fan-out datagrams, the same for every CSE of a deployment (5683: coap).
    pub port: u16,
    /// The IPv4 address of the interface to send on and join groups on; 0.0.0.0: the route's.
    pub interface: String,
    /// Group hosting side: multicast addresses are allocated upwards from this one.
    pub first_address: String,
    /// Group hosting side: the IP time-to-live of fan-out datagrams (1: this link only).
    pub ttl: u32,
    /// Group hosting side: the responseTimeWindow given to members (ms): each waits a random
    /// time below it before answering, so that they do not all answer at once.
    pub response_window_ms: u64,
    /// Group hosting side: how long to wait for the members' answers when the request sets no
    /// Request Expiration Timestamp (ms); members that have not answered by then get 4008.
    pub response_timeout_ms: u64,
    /// Member side: this CSE's own E2E key (a shared key, hex), the configuration then mode 0600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Member side: or the name of a secret in the `[security]` keystore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keystore_secret: Option<String>,
    /// Member side: or its P-256 private JWK file (mode 0600), for ECDH-ES sealed group keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_jwk: Option<PathBuf>,
}

impl Default for MulticastSection {
    fn default() -> Self {
        Self {
            port: 5683,
            interface: "0.0.0.0".into(),
            first_address: "239.255.77.1".into(),
            ttl: 1,
            response_window_ms: 200,
            response_timeout_ms: 3000,
            key: None,
            keystore_secret: None,
            private_jwk: None,
        }
    }
}

impl std::fmt::Debug for MulticastSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MulticastSection")
            .field("port", &self.port)
            .field("interface", &self.interface)
            .field("first_address", &self.first_address)
            .field("ttl", &self.ttl)
            .field("response_window_ms", &self.response_window_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("keystore_secret", &self.keystore_secret)
            .field("private_jwk", &self.private_jwk)
            .finish()
    }
}

impl MulticastSection {
    /// The interface address.
    pub fn interface_addr(&self) -> anyhow::Result<std::net::Ipv4Addr> {
        self.interface.parse().with_context(|| {
            format!(
                "multicast.interface '{}' is not an IPv4 address",
                self.interface
            )
        })
    }

    /// The first group address: an IPv4 multicast address.
    pub fn first_group_addr(&self) -> anyhow::Result<std::net::Ipv4Addr> {
        let a: std::net::Ipv4Addr = self.first_address.parse().with_context(|| {
            format!(
                "multicast.first_address '{}' is not an IPv4 address",
                self.first_address
            )
        })?;
        if !a.is_multicast() {
            bail!("multicast.first_address {a} is not a multicast address (224.0.0.0/4)");
        }
        Ok(a)
    }

    /// Whether this CSE has a key to open group keys with: it can be a member hosting CSE.
    pub fn is_member(&self) -> bool {
        self.key.is_some() || self.keystore_secret.is_some() || self.private_jwk.is_some()
    }
}

/// A plain CoAP listener (TS-0008 without DTLS): like the plain-HTTP listener, no security
/// association, so a From there proves nothing by itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoapSection {
    /// UDP address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: String,
    /// How this listener takes a request's From: "anonymous" (a claim only) or "trusted".
    pub originators: PlainTrust,
    /// Allow the listener on a non-loopback address.
    pub allow_insecure: bool,
}

/// The MQTT binding (TS-0010): the MQTT server this CSE connects to as a client, its credential
/// there, and the server's files this CSE keeps up to date (`m2m mqtt-broker-config` writes the
/// rest of the server's configuration).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// The MQTT server, `mqtts://host:port` (TS-0010 clause 6.6): TLS is required (clause 7.3).
    pub broker: String,
    /// This CSE's KpsaID at the MQTT server; its key is the PSK row of that identity in
    /// `[security]` (or the keystore). The server knows the same row (its psk_file).
    pub psk_identity: String,
    /// Seconds between keep-alive pings (0: none).
    #[serde(default = "MqttSection::default_keep_alive")]
    pub keep_alive_seconds: u64,
    /// The MQTT server's ACL file, which this CSE writes at start and whenever an AE registers
    /// or is deleted (the topics of TS-0010 clause 7.4 per credential); absent: not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
    /// The MQTT server's pid file: the server is sent SIGHUP after the ACL file changed, so that
    /// it reads it again; absent: the operator reloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_pid_file: Option<PathBuf>,
}

impl MqttSection {
    fn default_keep_alive() -> u64 {
        60
    }

    /// The server's URL, refused unless mqtts:// (the MQTT server authenticates every client by
    /// TLS, TS-0010 clause 7.3; over plain MQTT nothing would tell one topic's sender from another).
    pub fn url(&self) -> anyhow::Result<m2m_core::mqtt_binding::MqttUrl> {
        let url = m2m_core::mqtt_binding::MqttUrl::parse(&self.broker)
            .map_err(|e| anyhow::anyhow!("mqtt.broker: {}", e.dbg))?;
        if !url.tls {
            bail!(
                "mqtt.broker '{}': use mqtts:// (TLS-PSK); over plain MQTT the server could not tell who publishes",
                self.broker
            );
        }
        Ok(url)
    }
}

impl Default for CoapSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5683".into(),
            originators: PlainTrust::Anonymous,
            allow_insecure: false,
        }
    }
}

impl CoapSection {
    /// The address, refused off loopback unless `allow_insecure`.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .with_context(|| format!("coap.listen '{}' is not an address:port", self.listen))?;
        if !addr.ip().is_loopback() && !self.allow_insecure {
            bail!(
                "refusing plain CoAP on {addr}: requests there have no security association; use \
                 tls.dtls_listen, listen on loopback, or set coap.allow_insecure = true"
            );
        }
        Ok(addr)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every acknowledged write survives a crash of the process (SQLite WAL, synchronous=NORMAL).
    Normal,
    /// Every acknowledged write also survives power loss (fsync per commit).
    Full,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Directory for the resource database.
    pub path: PathBuf,
    pub sync: SyncMode,
    /// The audit trail (security events chained by hash); default `<path>/audit.log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_trail: Option<PathBuf>,
    /// The resource store encrypted at rest under a key the secure environment derives from this
    /// secret (`m2m keys token ... generate-secret`, `m2m keys add-secret --generate`); a store
    /// written in the clear is encrypted at the next start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_secret: Option<String>,
    /// The secret the store was encrypted under before `encryption_secret` (key rotation): a
    /// store that key opens is re-encrypted under the new one at start, or, without
    /// `encryption_secret`, written back in the clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_encryption_secret: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSection {
    /// The registrar's CSE-ID, e.g. `/id-in`.
    pub cse_id: String,
    /// The registrar's CSEBase resource name, e.g. `cse-in`.
    pub resource_name: String,
    /// The registrar's address, e.g. `https://127.0.0.1:8443`.
    pub url: String,
    /// The registrar's name in its certificate (`<cse-id>.<sp-fqdn>`), sent as SNI and verified;
    /// needed when `url` names it by address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// TLS-PSK to the registrar instead of certificates: the KpsaID (Kpsami-Id of group
    /// authentication); the key is the PSK row of that identity in this CSE's `[security]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_identity: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest number of results of one discovery request.
    pub max_discovery_results: u64,
    /// Time one discovery (or listing of children) may search before it answers with what it
    /// found so far, in milliseconds.
    pub discovery_budget_ms: u64,
    /// Expiration given to resources created without `et`, in seconds.
    pub default_expiration_secs: u64,
    /// The latest expirationTime a request may ask for, in seconds from now (later: brought back).
    pub max_expiration_secs: u64,
    /// Timeout for requests this CSE sends (notifications, retargeting, fan-out), in milliseconds.
    pub outgoing_timeout_ms: u64,
    /// Largest number of members of a group.
    pub max_group_members: u64,
    /// On the IN-CSE: the most S-stem AE-IDs it records (`<AEAnnc>`) under one registree CSE,
    /// INACTIVE ones included; a further announcement is 5207 NOT_ACCEPTABLE.
    pub max_announcements_per_cse: u64,
    /// Connections open at once per listener; more are closed as they arrive.
    pub max_connections: usize,
    /// A request head must arrive complete within this time of its first byte.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive complete within this time.
    pub body_read_timeout_ms: u64,
    /// A connection (or association) with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// On shutdown, open requests get this long to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for CseSection {
    fn default() -> Self {
        Self {
            role: Role::IN,
            cse_id: "/id-in".into(),
            resource_name: "cse-in".into(),
            sp_id: "//m2m.example.com".into(),
            admin_originator: "CAdmin".into(),
            in_cse_id: None,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            max_body_bytes: 1 << 20,
            // The embedded defaults serve the README's curl session on loopback.
            originators: PlainTrust::Trusted,
            allow_insecure: false,
            upper_tester: false,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./m2m-data"),
            sync: SyncMode::Normal,
            audit_trail: None,
            encryption_secret: None,
            previous_encryption_secret: None,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_discovery_results: 10_000,
            discovery_budget_ms: 1_000,
            default_expiration_secs: 10 * 365 * 24 * 3600,
            max_expiration_secs: 10 * 365 * 24 * 3600,
            outgoing_timeout_ms: 5_000,
            max_group_members: 10_000,
            max_announcements_per_cse: 10_000,
            max_connections: 16_384,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// The identity of this CSE, parsed once from the configuration.
#[derive(Clone, Debug)]
pub struct CseIdentity {
    pub role: Role,
    pub cse_id: CseId,
    pub rn: String,
    pub sp_id: SpId,
    /// The point of view relative IDs are read from (this SP, this CSE).
    pub home: m2m_core::Home,
    /// This CSE as an entity.
    pub entity: m2m_core::EntityId,
    /// The admin originator, parsed.
    pub admin: m2m_core::EntityId,
    /// The registrar CSE (`[registrar] cse_id`), parsed; `None` for a CSE that registers nowhere.
    pub registrar: Option<CseId>,
    /// The IN-CSE of this SP (`[cse] in_cse_id`; default: this CSE on an IN, the registrar on an
    /// MN), which keeps S-stem AE-IDs unique in the SP.
    pub in_cse: CseId,
    /// How CSE-IDs are written in certificates of this SP.
    pub naming: m2m_security::certificates::CseNaming,
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        // Not the parser's own message: it quotes the offending line, which may hold a key.
        let cfg: Config = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: {}",
                m2m_core::config_text::toml_error(&e, text)
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let cfg = Self::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
        if cfg.holds_keys() {
            m2m_security::secure_environment::check_private_file(path)
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(cfg)
    }

    /// Whether the configuration text itself holds keys (PSK rows, inline ESPrim or group
    /// credential member keys): then its file must be readable by its owner only.
    pub fn holds_keys(&self) -> bool {
        !self.security.psk.is_empty()
            || self.esprim.keys.iter().any(|k| k.key.is_some())
            || self
                .group_credentials
                .members
                .iter()
                .any(|m| m.key.is_some())
            || self.multicast.as_ref().is_some_and(|m| m.key.is_some())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration serializes")
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.identity()?;
        // Timestamps are computed from these: a thousand years is more than any resource needs,
        // and far from where the arithmetic would overflow.
        const MILLENNIUM_SECS: u64 = 1000 * 366 * 24 * 3600;
        for (name, secs) in [
            (
                "limits.default_expiration_secs",
                self.limits.default_expiration_secs,
            ),
            (
                "limits.max_expiration_secs",
                self.limits.max_expiration_secs,
            ),
        ] {
            if secs == 0 || secs > MILLENNIUM_SECS {
                anyhow::bail!("{name}: 1 to {MILLENNIUM_SECS} seconds");
            }
        }
        for (i, rule) in self.registration.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| anyhow::anyhow!("registration.rules[{i}]: {e}"))?;
        }
        for (i, rule) in self.registration.descendants.iter().enumerate() {
            rule.validate()
                .map_err(|e| anyhow::anyhow!("registration.descendants[{i}]: {e}"))?;
        }
        if !self.http.listen.is_empty() {
            self.listen_addr()?;
        }
        if let Some(mqtt) = &self.mqtt {
            mqtt.url()?;
            m2m_security::credentials::KpsaId::parse(&mqtt.psk_identity)
                .map_err(|e| anyhow::anyhow!("mqtt.psk_identity: {e}"))?;
            if mqtt.acl_file.is_some() && mqtt.broker_pid_file.is_none() {
                bail!("mqtt.acl_file needs mqtt.broker_pid_file: an ACL the MQTT server never reads again would keep a deleted AE's topics open");
            }
        }
        if let Some(coap) = &self.coap {
            coap.addr()?;
        }
        if let Some(m) = &self.multicast {
            m.interface_addr()?;
            m.first_group_addr()?;
            let keys = [
                m.key.is_some(),
                m.keystore_secret.is_some(),
                m.private_jwk.is_some(),
            ];
            if keys.into_iter().filter(|k| *k).count() > 1 {
                bail!("multicast: give at most one of key, keystore_secret and private_jwk");
            }
        }
        match (self.cse.role, &self.registrar) {
            (Role::MN, None) => bail!("an MN-CSE needs a [registrar] section"),
            (_, Some(r)) => {
                CseId::parse(&r.cse_id)
                    .map_err(|e| anyhow::anyhow!("registrar.cse_id: {}", e.dbg))?;
                if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                    bail!("registrar.url must be an http:// or https:// URL");
                }
                if r.psk_identity.is_some() && !r.url.starts_with("https://") {
                    bail!("registrar.psk_identity needs an https:// registrar.url (TLS-PSK); over http:// it would never be used");
                }
            }
            _ => {}
        }
        self.validate_key_services()?;
        self.validate_group_authentication()?;
        self.validate_esprim()?;
        self.validate_storage_encryption()?;
        if let Some(name) = &self.security.rotation_secret {
            m2m_security::secure_environment::pkcs11::check_label(name).map_err(|_| {
                anyhow::anyhow!(
                    "security.rotation_secret: 1 to 64 letters, digits, '.', '_' or '-'"
                )
            })?;
            if self.security.rotation_key.is_some() {
                bail!("security: rotation_key and rotation_secret: give one");
            }
        }
        if let Some(s) = &self.secure_storage {
            if !(1..=1 << 20).contains(&s.max_object_bytes)
                || s.max_objects_per_owner == 0
                || s.max_total_bytes < s.max_object_bytes as u64
            {
                bail!("secure_storage: max_object_bytes 1 to 1048576, max_objects_per_owner at least 1, max_total_bytes at least max_object_bytes");
            }
            m2m_security::secure_environment::pkcs11::check_label(&s.secret).map_err(|_| {
                anyhow::anyhow!("secure_storage.secret: 1 to 64 letters, digits, '.', '_' or '-'")
            })?;
        }
        self.validate_key_levels()
    }

    /// `[storage] encryption_secret` and `previous_encryption_secret`: secret names, not the same
    /// (the previous alone turns encryption off).
    fn validate_storage_encryption(&self) -> anyhow::Result<()> {
        let s = &self.storage;
        for (what, name) in [
            ("encryption_secret", &s.encryption_secret),
            ("previous_encryption_secret", &s.previous_encryption_secret),
        ] {
            if let Some(n) = name {
                m2m_security::secure_environment::pkcs11::check_label(n).map_err(|_| {
                    anyhow::anyhow!("storage.{what}: 1 to 64 letters, digits, '.', '_' or '-'")
                })?;
            }
        }
        match (&s.encryption_secret, &s.previous_encryption_secret) {
            (Some(a), Some(b)) if a == b => {
                bail!(
                    "storage.previous_encryption_secret names the same secret as encryption_secret"
                )
            }
            _ => Ok(()),
        }
    }

    /// A `pkcs11:` private key needs `[security.pkcs11]`; `[security] required_level` refuses
    /// what is kept below it (the token's own level is checked when it is opened).
    fn validate_key_levels(&self) -> anyhow::Result<()> {
        use m2m_security::secure_environment::{pkcs11, SecurityLevel};
        let token_key = self
            .tls
            .as_ref()
            .and_then(|t| t.private_key.as_deref())
            .filter(|k| pkcs11::is_key_uri(k));
        if token_key.is_some() && self.security.pkcs11.is_none() {
            bail!("tls.private_key names a key in a token (pkcs11:): configure the token in [security.pkcs11]");
        }
        if let Some(p) = &self.security.pkcs11 {
            pkcs11::check_token_label(&p.token)
                .map_err(|e| anyhow::anyhow!("security.pkcs11.token: {e}"))?;
        }
        let Some(required) = self.security.required_level else {
            return Ok(());
        };
        if required <= SecurityLevel::Software {
            return Ok(());
        }
        let below = |what: &str| {
            anyhow::anyhow!(
                "security.required_level is {required}, but {what} keeps keys at level software"
            )
        };
        if !self.security.psk.is_empty() {
            return Err(below("[[security.psk]]"));
        }
        if self.security.keystore.is_some() {
            return Err(below("the keystore"));
        }
        if self.security.pkcs11.is_none() {
            return Err(below("a CSE without [security.pkcs11]"));
        }
        if self.tls.as_ref().is_some_and(|t| t.private_key.is_some()) && token_key.is_none() {
            return Err(below("tls.private_key (a file)"));
        }
        // Every other place a key can be given in software: a file, the configuration, the
        // environment.
        let software = [
            (
                "security.rotation_key",
                self.security.rotation_key.is_some(),
            ),
            (
                "esprim.keys (key, key_env)",
                self.esprim
                    .keys
                    .iter()
                    .any(|k| k.key.is_some() || k.key_env.is_some()),
            ),
            (
                "multicast (key, private_jwk)",
                self.multicast
                    .as_ref()
                    .is_some_and(|m| m.key.is_some() || m.private_jwk.is_some()),
            ),
            (
                "group_credentials.signing_key",
                self.group_credentials.signing_key.is_some(),
            ),
            (
                "group_credentials.members (key)",
                self.group_credentials
                    .members
                    .iter()
                    .any(|m| m.key.is_some()),
            ),
        ];
        if let Some((what, _)) = software.iter().find(|(_, given)| *given) {
            return Err(below(what));
        }
        Ok(())
    }

    /// The key services the CSE fetches keys from during handshakes ([maf], [gba], [mef]): it
    /// authenticates to each with its [tls] certificate (without it the section would silently do
    /// nothing), over https; each names its key identifiers by its own domain (KcIDs, B-TIDs,
    /// KeIDs), which no provisioned KpsaID and no other service may share.
    fn validate_key_services(&self) -> anyhow::Result<()> {
        let services = [
            self.maf
                .as_ref()
                .map(|m| ("maf", m.fqdn.as_str(), m.url.as_str())),
            self.gba
                .as_ref()
                .map(|g| ("gba", g.bsf_fqdn.as_str(), g.zn_url.as_str())),
            self.mef
                .as_ref()
                .map(|m| ("mef", m.fqdn.as_str(), m.url.as_str())),
        ];
        let certified = self.tls.as_ref().is_some_and(|t| {
            t.certificate.is_some() && t.private_key.is_some() && t.trusted_ca.is_some()
        });
        let mut domains: Vec<(&str, String)> = Vec::new();
        for (table, fqdn, url) in services.into_iter().flatten() {
            if !certified {
                bail!("[{table}] needs a [tls] section with certificate, private_key and trusted_ca (the CSE authenticates to the key service with them)");
            }
            let fqdn = m2m_security::certificates::check_fqdn(fqdn)
                .map_err(|e| anyhow::anyhow!("[{table}] domain: {e}"))?;
            if !url.starts_with("https://") {
                bail!("[{table}]: the key service's URL must be https://");
            }
            if let Some(row) = self.security.psk.iter().find(|r| {
                r.kpsa_id
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&fqdn))
            }) {
                bail!(
                    "security.psk kpsa_id {} is in the domain {fqdn} of [{table}], whose key identifiers that service names",
                    row.kpsa_id
                );
            }
            if let Some((other, _)) = domains.iter().find(|(_, d)| *d == fqdn) {
                bail!("[{other}] and [{table}] name the same domain {fqdn}: each names its own key identifiers");
            }
            domains.push((table, fqdn));
        }
        Ok(())
    }

    fn validate_esprim(&self) -> anyhow::Result<()> {
        let e = &self.esprim;
        if e.rand_lifetime_seconds == 0 || e.algorithms.is_empty() {
            bail!("esprim: rand_lifetime_seconds and algorithms must not be empty or zero");
        }
        if e.maf_keys && self.maf.is_none() {
            bail!("esprim.maf_keys needs a [maf] section (the MAF to retrieve Kc from)");
        }
        if e.escertke {
            let tls = self.tls.as_ref();
            if !tls.is_some_and(|t| {
                t.certificate.is_some() && t.private_key.is_some() && t.trusted_ca.is_some()
            }) {
                bail!("esprim.escertke needs [tls] certificate, private_key and trusted_ca");
            }
            if e.escertke_timeout_seconds == 0
                || e.escertke_max_pending == 0
                || e.escertke_max_pending_per_peer == 0
                || e.escertke_key_lifetime_seconds == 0
            {
                bail!("esprim: the escertke_* limits must not be zero");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, row) in e.keys.iter().enumerate() {
            if row.kid.is_empty() || !seen.insert(row.kid.as_str()) {
                bail!("esprim.keys[{i}]: kid is empty or listed twice");
            }
            m2m_core::id::check_originator(&row.entity)
                .map_err(|err| anyhow::anyhow!("esprim.keys[{i}].entity: {}", err.dbg))?;
            let sources = [
                row.key.is_some(),
                row.key_env.is_some(),
                row.keystore_secret.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                bail!(
                    "esprim.keys[{i}] ({}): give exactly one of key, key_env, keystore_secret",
                    row.kid
                );
            }
        }
        Ok(())
    }

    fn validate_group_authentication(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, row) in self.group_authentication.agents.iter().enumerate() {
            CseId::parse(&row.agent).map_err(|e| {
                anyhow::anyhow!("group_authentication.agents[{i}].agent: {}", e.dbg)
            })?;
            for m in &row.members {
                let id = m2m_security::credentials::KpsaId::parse(m).map_err(|e| {
                    anyhow::anyhow!("group_authentication.agents[{i}].members: '{m}': {e}")
                })?;
                if !seen.insert(id.to_string()) {
                    bail!("group_authentication: member '{m}' is listed twice");
                }
            }
        }
        if !self.group_authentication.agents.is_empty() && self.tls.is_none() {
            bail!("group_authentication needs a [tls] listener: the members' KsxIds open TLS-PSK associations there");
        }
        if !self.group_agent.members.is_empty() && self.registrar.is_none() {
            bail!("group_agent needs a [registrar] to ask for group keys");
        }
        Ok(())
    }

    pub fn identity(&self) -> anyhow::Result<CseIdentity> {
        let cse_id =
            CseId::parse(&self.cse.cse_id).map_err(|e| anyhow::anyhow!("cse.cse_id: {}", e.dbg))?;
        cse_id
            .check_not_ae_form()
            .map_err(|e| anyhow::anyhow!("cse.cse_id: {}", e.dbg))?;
        let sp_id =
            SpId::parse(&self.cse.sp_id).map_err(|e| anyhow::anyhow!("cse.sp_id: {}", e.dbg))?;
        let home = m2m_core::Home::cse(sp_id.clone(), cse_id.clone());
        m2m_core::Address::parse(&self.cse.resource_name)
            .ok()
            .filter(|a| !a.path.contains('/'))
            .context("cse.resource_name must be a single resource name")?;
        let admin = m2m_core::EntityId::parse(&self.cse.admin_originator, &home).map_err(|e| {
            anyhow::anyhow!(
                "cse.admin_originator '{}': {} (e.g. CAdmin)",
                self.cse.admin_originator,
                e.dbg
            )
        })?;
        let in_cse = match (&self.cse.in_cse_id, self.cse.role, &self.registrar) {
            (Some(id), _, _) => id.clone(),
            (None, Role::MN, Some(r)) => r.cse_id.clone(),
            _ => cse_id.sp_relative(),
        };
        // An IN-CSE-ID that is no lower-case DNS label gives no CSE a certificate name: then
        // certificates name AEs and FQDNs only.
        let in_cse_id =
            CseId::parse(&in_cse).map_err(|e| anyhow::anyhow!("cse.in_cse_id: {}", e.dbg))?;
        let naming = m2m_security::certificates::CseNaming::new(sp_id.fqdn(), &in_cse)
            .or_else(|_| m2m_security::certificates::CseNaming::without_cses(sp_id.fqdn()))
            .map_err(|e| anyhow::anyhow!("cse.sp_id: {e}"))?;
        let registrar = match &self.registrar {
            Some(r) => Some(
                CseId::parse(&r.cse_id)
                    .map_err(|e| anyhow::anyhow!("registrar.cse_id: {}", e.dbg))?,
            ),
            None => None,
        };
        Ok(CseIdentity {
            registrar,
            in_cse: in_cse_id,
            role: self.cse.role,
            naming,
            entity: m2m_core::EntityId::cse(sp_id.clone(), cse_id.clone()),
            cse_id,
            rn: self.cse.resource_name.clone(),
            sp_id,
            home,
            admin,
        })
    }

    /// The limits of this CSE's listeners (the TLS one takes its handshake settings from `[tls]`).
    pub fn transport_limits(&self) -> m2m_transport::Limits {
        let l = &self.limits;
        let tls = self.tls.clone().unwrap_or_default();
        m2m_transport::Limits {
            max_connections: l.max_connections,
            handshake_timeout_ms: tls.handshake_timeout_ms,
            max_handshakes_per_source: tls.max_handshakes_per_source,
            header_read_timeout_ms: l.header_read_timeout_ms,
            idle_timeout_ms: l.idle_timeout_ms,
            shutdown_grace_ms: l.shutdown_grace_ms,
        }
    }

    /// Where the audit trail is written (`storage.audit_trail`, else `audit.log` beside the
    /// resource database).
    pub fn audit_trail_path(&self) -> PathBuf {
        self.storage
            .audit_trail
            .clone()
            .unwrap_or_else(|| self.storage.path.join("audit.log"))
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http
            .listen
            .parse()
            .with_context(|| format!("http.listen '{}' is not an address:port", self.http.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips() {
        let text = Config::default().to_toml();
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.cse.cse_id, "/id-in");
        assert_eq!(back.http.listen, "127.0.0.1:8080");
    }

    #[test]
    fn a_required_level_refuses_every_key_kept_in_software() {
        let token = "[security.pkcs11]\nmodule = \"/m.so\"\ntoken = \"t\"\npin_file = \"/pin\"\n[security]\nrequired_level = \"token\"\n";
        assert!(Config::from_toml(token).is_ok());
        for (extra, what) in [
            ("rotation_key = \"/krot\"\n", "security.rotation_key"),
            ("keystore = \"/ks\"\nkey_file = \"/kf\"\n", "the keystore"),
            (
                "[[esprim.keys]]\nkid = \"k\"\nentity = \"Ca\"\nkey_env = \"K\"\n",
                "esprim.keys",
            ),
            (
                "[multicast]\nkey = \"00112233445566778899aabbccddeeff\"\n",
                "multicast",
            ),
            (
                "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n",
                "tls.private_key (a file)",
            ),
        ] {
            let e = Config::from_toml(&format!("{token}{extra}")).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("level software"), "{what}: {e}");
        }
        // A token key by URI needs the token's section.
        let e = Config::from_toml("[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = \"c.pem\"\nprivate_key = \"pkcs11:token=t;object=k;type=private\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[security.pkcs11]"), "{e}");
    }

    #[test]
    fn refuses_bad_configs() {
        assert!(
            Config::from_toml("[cse]\nrole = \"MN\"\n").is_err(),
            "MN without registrar"
        );
        assert!(Config::from_toml("[cse]\ncse_id = \"/a b\"\n").is_err());
        assert!(Config::from_toml("[cse]\nbogus = 1\n").is_err());
        assert!(Config::from_toml("[http]\nlisten = \"nowhere\"\n").is_err());
    }

    #[test]
    fn refuses_bad_esprim_sections() {
        let row = |kid: &str, entity: &str, src: &str| {
            format!("[[esprim.keys]]\nkid = \"{kid}\"\nentity = \"{entity}\"\n{src}\n")
        };
        let ok = row("k1", "Sae1", "key_env = \"K1\"");
        let cfg = Config::from_toml(&ok).unwrap();
        assert_eq!(cfg.esprim.rand_lifetime_seconds, 300);
        assert!(Config::from_toml(&row("k1", "Sae1", "")).is_err(), "no key");
        let two = row("k1", "Sae1", "key = \"00\"\nkey_env = \"K1\"");
        assert!(Config::from_toml(&two).is_err(), "two keys");
        assert!(
            Config::from_toml(&format!("{ok}{ok}")).is_err(),
            "kid twice"
        );
        assert!(Config::from_toml(&row("k1", "a b", "key_env = \"K\"")).is_err());
        assert!(Config::from_toml("[esprim]\nalgorithms = [13]\n").is_err());
        assert!(Config::from_toml("[esprim]\nalgorithms = []\n").is_err());
        assert!(
            Config::from_toml("[esprim]\nmaf_keys = true\n").is_err(),
            "MAF keys without a MAF"
        );
        assert!(
            Config::from_toml("[esprim]\nescertke = true\n").is_err(),
            "ESCertKE without a certificate"
        );
        let secret = row("k1", "Sae1", "key = \"00112233\"");
        let dbg = format!("{:?}", Config::from_toml(&secret).unwrap().esprim);
        assert!(!dbg.contains("00112233"), "{dbg}");
    }

    #[test]
    fn refuses_bad_group_authentication() {
        let agents = |agent: &str, members: &str| {
            format!("[[group_authentication.agents]]\nagent = \"{agent}\"\nmembers = [{members}]\n")
        };
        let ok = format!("{}[tls]\n", agents("/id-mn", "\"m1@in.example.com\""));
        assert!(Config::from_toml(&ok).is_ok());
        assert!(Config::from_toml(&agents("id mn", "\"m1@in.example.com\"")).is_err());
        assert!(Config::from_toml(&agents("/id-mn", "\"no-fqdn\"")).is_err());
        let twice = format!("{ok}{}", agents("/id-mn2", "\"m1@in.example.com\""));
        assert!(Config::from_toml(&twice).is_err(), "one member, two agents");
        assert!(
            Config::from_toml("[group_agent]\nmembers = [\"Sm1\"]\n").is_err(),
            "an agent needs a registrar"
        );
    }

    /// A configuration file holding any kind of key is refused when others may read it.
    #[test]
    fn a_readable_configuration_with_keys_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let esprim = "[[esprim.keys]]\nkid = \"k1\"\nentity = \"Sae1\"\nkey = \"00112233445566778899aabbccddeeff\"\n";
        let group = "[[group_credentials.members]]\nmember = \"/id-mn/Clock1\"\nkey = \"00112233445566778899aabbccddeeff\"\n";
        let psk = "[[security.psk]]\nkpsa_id = \"lock@in.example.com\"\nkey = \"00112233445566778899aabbccddeeff\"\n";
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("esprim", esprim), ("group", group), ("psk", psk)] {
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            assert!(Config::from_toml(text).unwrap().holds_keys(), "{name}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = format!("{:#}", Config::load(&path).expect_err("0644 refused"));
            assert!(e.contains("chmod"), "{name}: {e}");
            assert!(!e.contains("00112233"), "{name}: {e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(Config::load(&path).is_ok(), "{name} at 0600");
        }
        assert!(!Config::default().holds_keys());
    }

    /// A malformed key line is named by its number, never quoted.
    #[test]
    fn a_configuration_error_does_not_quote_a_key() {
        let e = refusal(
            "[[security.psk]]\nkpsa_id = \"a@in.example.com\"\nkey = \"00112233445566778899\n",
        );
        assert!(e.starts_with("invalid configuration: line 3: "), "{e}");
        assert!(!e.contains("00112233"), "{e}");
        let e = refusal(
            "[[security.psk]]\nkpsa_id = \"a@in.example.com\"\nkey = 00112233445566778899\n",
        );
        assert!(!e.contains("00112233"), "{e}");
    }

    fn refusal(text: &str) -> String {
        Config::from_toml(text)
            .expect_err("refused")
            .root_cause()
            .to_string()
    }

    const MAF: &str = "[maf]\nurl = \"https://127.0.0.1:1\"\nfqdn = \"maf.example.com\"\n";
    const CERTIFIED_TLS: &str =
        "[tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\ntrusted_ca = \"ca.pem\"\n";

    #[test]
    fn refuses_a_maf_without_a_certified_tls_listener() {
        let e = refusal(MAF);
        assert!(e.contains("[maf] needs a [tls] section"), "{e}");
        let e = refusal(&format!("{MAF}[tls]\ncertificate = \"c.pem\"\n"));
        assert!(e.contains("private_key and trusted_ca"), "{e}");
        assert!(Config::from_toml(&format!("{MAF}{CERTIFIED_TLS}")).is_ok());
    }

    /// The BSF's and the MEF's domains name their key identifiers (B-TIDs, KeIDs): no PSK row,
    /// and no other key service, may share one; each needs the certificate and https.
    #[test]
    fn key_services_keep_their_domains_apart() {
        const GBA: &str =
            "[gba]\nzn_url = \"https://127.0.0.1:1\"\nbsf_fqdn = \"bsf.example.com\"\n";
        const MEF: &str = "[mef]\nurl = \"https://127.0.0.1:2\"\nfqdn = \"mef.example.com\"\n";
        assert!(Config::from_toml(&format!("{MAF}{GBA}{MEF}{CERTIFIED_TLS}")).is_ok());
        assert!(refusal(GBA).contains("[gba] needs a [tls] section"));
        assert!(refusal(MEF).contains("[mef] needs a [tls] section"));
        let row = |domain: &str| {
            format!(
                "[[security.psk]]\nkpsa_id = \"x@{domain}\"\nkey = \"{}\"\n",
                "5a".repeat(16)
            )
        };
        for (section, domain) in [(GBA, "BSF.example.com"), (MEF, "mef.EXAMPLE.com")] {
            let e = refusal(&format!("{section}{CERTIFIED_TLS}{}", row(domain)));
            assert!(
                e.contains("whose key identifiers that service names"),
                "{e}"
            );
        }
        let e = refusal(&format!(
            "{MAF}{CERTIFIED_TLS}{}",
            GBA.replace("bsf.example.com", "MAF.example.com")
        ));
        assert!(e.contains("[maf] and [gba] name the same domain"), "{e}");
        let e = refusal(&format!(
            "{CERTIFIED_TLS}{}",
            MEF.replace("https://", "http://")
        ));
        assert!(e.contains("must be https://"), "{e}");
    }

    #[test]
    fn refuses_group_authentication_without_tls() {
        let agents = "[[group_authentication.agents]]\nagent = \"/id-mn\"\nmembers = [\"m1@in.example.com\"]\n";
        let e = refusal(agents);
        assert!(
            e.contains("group_authentication needs a [tls] listener"),
            "{e}"
        );
        assert!(Config::from_toml(&format!("{agents}[tls]\n")).is_ok());
    }

    #[test]
    fn refuses_a_registrar_psk_identity_over_plain_http() {
        let registrar = |url: &str| {
            format!(
                "[registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nurl = \"{url}\"\n\
                 psk_identity = \"mn@in.example.com\"\n"
            )
        };
        let e = refusal(&registrar("http://127.0.0.1:8080"));
        assert!(
            e.contains("registrar.psk_identity needs an https://"),
            "{e}"
        );
        assert!(Config::from_toml(&registrar("https://127.0.0.1:8443")).is_ok());
    }
}
