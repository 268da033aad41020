//! `m2m cse --print-default-config`: every table and setting of [`Config`] with a one-line comment
//! (the operator's version of the field's doc comment), the defaults set and the optional tables,
//! rows and keys as commented-out examples (layout: [`m2m_core::config_text`]).

use super::*;
use m2m_core::config_text::{self, Doc, Doc::*};
use m2m_security::registration_rules::{AppRule, DescendantRule};

const INTRO: &str = "\
m2m cse: the configuration of a CSE (`m2m cse --config FILE`; without --config these defaults apply).
Every setting shows its default. A \"# key = value\" line or a \"# [table]\" / \"# [[rows]]\" block is an
optional example: remove the \"# \" of its lines to use it; \"# # key\" lines in a block then stay optional
(alternatives to choose from). A configuration holding keys (a \"key\" of [[security.psk]], [[esprim.keys]],
[[group_credentials.members]] or [multicast]) must be mode 0600 (chmod 600 FILE), else the CSE refuses it; the
keystore of [security] is the place for keys.";

/// The comment of every table and field, in print order: a field without one fails the tests
/// below, and so does one here that no longer exists.
const DOCS: &[Doc] = &[
    Table("cse", "This CSE: its role, its identifiers and its administrator."),
    Key("cse.role", "\"IN\" (infrastructure node) or \"MN\" (middle node: needs [registrar])."),
    Key("cse.cse_id", "This CSE's CSE-ID, SP-relative (e.g. \"/id-in\")."),
    Key("cse.resource_name", "The resource name of the CSEBase (e.g. \"cse-in\")."),
    Key("cse.sp_id", "The M2M-SP-ID of this service provider (e.g. \"//m2m.example.com\")."),
    Key(
        "cse.admin_originator",
        "The originator with full access to everything here: when a credential proves it (a PSK row or\n\
         certificate bound to it), or on a listener that believes every From ([http] originators = \"trusted\").",
    ),
    Key(
        "cse.in_cse_id",
        "The IN-CSE-ID of this SP: CSE-ID certificates are checked by the names \"<in>.<sp>\" and\n\
         \"<cse>.<in>.<sp>\" (TS-0001 clause 6.5.1.1); default: this CSE on an IN, the registrar on an MN.",
    ),
    Table(
        "http",
        "The plain-HTTP listener: no security association, so a From there proves nothing by itself.",
    ),
    Key(
        "http.listen",
        "Address to listen on (port 0: a free port, printed at start; \"\": no plain listener); loopback\n\
         only, unless allow_insecure.",
    ),
    Key(
        "http.public_url",
        "The URL peers reach this CSE at (pointOfAccess); default: https://<[tls] address>, else\n\
         http://<listen address>.",
    ),
    Key("http.max_body_bytes", "Largest request body accepted, in bytes."),
    Key(
        "http.originators",
        "\"anonymous\" | \"trusted\": how this listener, having no security association, takes a request's From.\n\
         \"anonymous\": a claim only (it matches only \"all\" in access control, is never the creator nor the admin,\n\
         is not forwarded). \"trusted\": believed as written, admin_originator included. The embedded default is\n\
         \"trusted\" on loopback, for development, and is announced at start; set \"anonymous\" (or listen = \"\")\n\
         for anything else.",
    ),
    Key(
        "http.allow_insecure",
        "Allow the plain listener on a non-loopback address, where every host that reaches it talks without a\n\
         security association: only for a network protected otherwise.",
    ),
    Key(
        "http.upper_tester",
        "Serve the Upper Tester interface of conformance testing (TS-0019, POST /__ut__): a test suite\n\
         shortens lifetimes and waits through it. Only with a loopback listener and originators =\n\
         \"trusted\" (the CSE refuses to start otherwise); for conformance testing, never in production.",
    ),
    Table("storage", "Where the resources are kept (SQLite)."),
    Key("storage.path", "Directory of the resource database."),
    Key(
        "storage.sync",
        "\"normal\": an acknowledged write survives a crash of the process; \"full\": also a power loss (fsync per commit).",
    ),
    Key(
        "storage.audit_trail",
        "The audit trail: every security event, each entry chained by hash to the one before\n\
         (`m2m audit verify`, `m2m audit show`). Default: audit.log in the storage directory.",
    ),
    Key(
        "storage.encryption_secret",
        "The resource store encrypted at rest (SQLCipher 4) under a key the secure environment derives from this\n\
         secret (a token computes it inside); a store written in the clear is encrypted at the next start\n\
         (docs/SECURITY.md \"The resource store encrypted at rest\").",
    ),
    Key(
        "storage.previous_encryption_secret",
        "Key rotation: the secret the store was encrypted under before; re-encrypted at start (alone: decrypted).",
    ),
    Table(
        "registrar",
        "The registrar CSE an MN-CSE registers with (needed with role = \"MN\"); over https:// this CSE presents\n\
         its [tls] certificate.",
    ),
    Key("registrar.cse_id", "the registrar's CSE-ID"),
    Key("registrar.resource_name", "its CSEBase resource name"),
    Key("registrar.url", "its address, http:// or https://"),
    Key(
        "registrar.server_name",
        "the name its certificate must carry, sent as SNI; default: the public domain name of cse_id",
    ),
    Alt(
        "registrar.psk_identity",
        "instead of certificates: TLS-PSK with this KpsaID, the key from its [[security.psk]] row; needs https://",
    ),
    Table(
        "limits",
        "Limits: resources, outgoing requests, and the connections of every listener (against floods and\n\
         slow clients; the TLS listener takes its handshake limits from [tls]).",
    ),
    Key("limits.max_discovery_results", "Largest number of results of one discovery request."),
    Key(
        "limits.discovery_budget_ms",
        "Time one discovery (or listing of children) may search before it answers with what it found\n\
         so far as partial content, in milliseconds.",
    ),
    Key(
        "limits.default_expiration_secs",
        "The expirationTime of a resource created without one, in seconds.",
    ),
    Key(
        "limits.max_expiration_secs",
        "The latest expirationTime a request may ask for, in seconds from now: a later one is\n\
         brought back to it (TS-0001 clause 10.1.1.1), and the answer shows the value set.",
    ),
    Key(
        "limits.outgoing_timeout_ms",
        "Timeout of the requests this CSE sends (notifications, retargeting, fan-out), in milliseconds.",
    ),
    Key("limits.max_group_members", "Largest number of members of a group."),
    Key(
        "limits.max_announcements_per_cse",
        "On the IN-CSE: the most S-stem AE-IDs recorded (<AEAnnc>) under one registree CSE, INACTIVE ones\n\
         included (the admin deletes those no longer wanted); a further one is 5207 NOT_ACCEPTABLE.",
    ),
    Key(
        "limits.max_connections",
        "Connections open at once per listener; more are closed as they arrive.",
    ),
    Key(
        "limits.header_read_timeout_ms",
        "A request head must arrive complete within this time of its first byte, in milliseconds.",
    ),
    Key(
        "limits.body_read_timeout_ms",
        "A request body must arrive complete within this time, in milliseconds.",
    ),
    Key(
        "limits.idle_timeout_ms",
        "A connection (or security association) without traffic for this long is closed, in milliseconds.",
    ),
    Key(
        "limits.shutdown_grace_ms",
        "On shutdown, open requests get this long to finish, in milliseconds.",
    ),
    Table(
        "registration",
        "Which AEs may register here (TS-0001 clause 10.2.2.2); <serviceSubscribedAppRule> resources apply too.",
    ),
    Rows(
        "registration.rules",
        "An AE registers if a rule admits its (Credential-ID, App-ID, AE-ID-Stem), else 4126. The default:\n\
         any App-ID with a CSE- or SP-assigned AE-ID, without a security association.",
    ),
    Key(
        "registration.rules.apci",
        "applicableCredIDs, * wildcards (a PSK's is \"12-<KpsaID>\"); absent: only registrations without a security association",
    ),
    Key("registration.rules.aai", "allowedApp-IDs, * wildcards; empty: none"),
    Key("registration.rules.aae", "allowedAEs: AE-ID-Stems (\"C*\", \"S*\", patterns); empty: none"),
    Rows(
        "registration.descendants",
        "Which CSEs each registree CSE may list below it (its descendantCSEs, TS-0001 clause 10.2.2.4): with\n\
         rows, a registree's list keeps only the CSEs a row for it names (lists kept before are judged again at\n\
         start); without any, lists are taken first come, first kept.",
    ),
    Key("registration.descendants.registree", "the registree's CSE-ID, SP-relative, * wildcards"),
    Key(
        "registration.descendants.cses",
        "the CSE-IDs it may list, SP-relative, * wildcards, {registree}: the registree's CSE-ID without its /",
    ),
    Table(
        "tls",
        "The TLS listener: security associations with TLS-PSK and certificates (TS-0003 clause 10.2); without\n\
         this table there is none.",
    ),
    Key("tls.listen", "address to listen on; port 0: a free port, printed at start"),
    Key("tls.cipher_suites", "OpenSSL names, restricted to the oneM2M profile suites"),
    Key("tls.tls13", "also accept TLS 1.3, which oneM2M Release 3 does not use"),
    Key(
        "tls.certificate",
        "this CSE's certificate chain (PEM, leaf first; m2m pki issue --kind cse), for the certificate suites",
    ),
    Key("tls.private_key", "its private key (PEM, mode 0600)"),
    Key("tls.trusted_ca", "the root of trust for the peers' certificates"),
    Alt(
        "tls.crl",
        "the CAs' revocation lists (PEM, m2m pki revoke), read again when changed, checked at every certificate handshake",
    ),
    Alt(
        "tls.accepted_identities",
        "accept only these peers' certificates (AE-IDs, CSE-IDs); absent: every identity trusted_ca certifies for this SP",
    ),
    Key("tls.handshake_timeout_ms", "a handshake not finished within this time is dropped"),
    Key("tls.max_handshakes_per_source", "handshakes in progress allowed per source address"),
    Alt(
        "tls.dtls_listen",
        "also serve CoAP (TS-0008) over DTLS 1.2 on this UDP address, same suites and credentials (5684: coaps)",
    ),
    Alt(
        "tls.wss_listen",
        "also serve the WebSocket binding (TS-0020) over TLS on this TCP address, same suites and credentials (wss://)",
    ),
    Alt(
        "tls.wss_origins",
        "the web origins whose pages may open a WebSocket; absent: a handshake with an Origin (a browser page) is refused",
    ),
    Table(
        "coap",
        "A plain CoAP listener (TS-0008 over UDP, no DTLS): no security association, so a From there proves\n\
         nothing by itself; CoAP over DTLS is tls.dtls_listen. Without this table there is none.",
    ),
    Key("coap.listen", "UDP address to listen on (5683: coap); loopback only, unless allow_insecure"),
    Key(
        "coap.originators",
        "\"anonymous\" | \"trusted\": how this listener takes a request's From, as http.originators",
    ),
    Key(
        "coap.allow_insecure",
        "allow the listener on a non-loopback address (only for a network protected otherwise)",
    ),
    Table(
        "mqtt",
        "The MQTT binding (TS-0010): this CSE as a client of an MQTT server (mosquitto), over TLS-PSK. The server\n\
         authenticates every client and lets it publish only on its own topics (its ACL, which this CSE keeps);\n\
         `m2m mqtt-broker-config` writes the server's configuration. Without this table there is none.",
    ),
    Key("mqtt.broker", "the MQTT server, mqtts://host:port (TLS is required)"),
    Key(
        "mqtt.psk_identity",
        "this CSE's KpsaID at the MQTT server; its key is the PSK row of that identity in [security]",
    ),
    Key("mqtt.keep_alive_seconds", "seconds between keep-alive pings (0: none)"),
    Alt(
        "mqtt.acl_file",
        "the MQTT server's ACL file, written at start and whenever an AE registers or is deleted (needs broker_pid_file)",
    ),
    Alt(
        "mqtt.broker_pid_file",
        "the MQTT server's pid file: it is sent SIGHUP after the ACL file changed (absent: reload it yourself)",
    ),
    Table(
        "multicast",
        "Multicast group fan-out over CoAP (TS-0001 clause 10.2.7.13, TS-0008 Annex B), protected with a group key:\n\
         as group hosting CSE (fan-outs signed with group_credentials.signing_key, group keys sealed for each\n\
         member hosting CSE under its [[group_credentials.members]] row) and, with a key below, as member hosting\n\
         CSE. Without this table every fan-out is unicast.",
    ),
    Key("multicast.port", "UDP port of the fan-out datagrams, the same for every CSE of a deployment"),
    Key(
        "multicast.interface",
        "IPv4 address of the interface to send on and join groups on (0.0.0.0: the route's)",
    ),
    Key(
        "multicast.first_address",
        "group hosting side: multicast addresses are allocated upwards from this one",
    ),
    Key("multicast.ttl", "group hosting side: IP time-to-live of the datagrams (1: this link)"),
    Key(
        "multicast.response_window_ms",
        "group hosting side: responseTimeWindow for members, each answers after a random delay below it",
    ),
    Key(
        "multicast.response_timeout_ms",
        "group hosting side: wait this long for members' answers (4008 for the silent ones)",
    ),
    Key(
        "multicast.keystore_secret",
        "member side: this CSE's own E2E key, the name of a secret in the [security] keystore",
    ),
    Alt(
        "multicast.key",
        "or the key in hex (16, 24 or 32 bytes): the configuration must then be mode 0600",
    ),
    Alt(
        "multicast.private_jwk",
        "or its P-256 private JWK file (mode 0600), for group keys sealed with ECDH-ES",
    ),
    Table(
        "security",
        "The credentials of the security associations: the software keystore, PSK rows.",
    ),
    Key(
        "security.keystore",
        "The software secure environment: an encrypted keystore made with `m2m keys init`.",
    ),
    Key("security.key_file", "Its key file (32 bytes, mode 0600) ..."),
    Key(
        "security.passphrase_env",
        "... or the environment variable holding its passphrase (exactly one of the two).",
    ),
    Alt(
        "security.rotation_key",
        "Krot, the key shared with the administrator for remote Kpsa rotation (32 bytes hex, mode 0600; docs/SECURITY.md)",
    ),
    Alt(
        "security.rotation_secret",
        "... or Krot as a secret of the secure environment (in a token the rotated Kpsa is derived inside it)",
    ),
    Alt(
        "security.required_level",
        "the lowest Security Level any key may be kept at: \"software\", \"token\" (a PKCS#11 token) or \"hardware\"\n\
         (a token in a hardware slot); start-up refuses keys kept lower (docs/SECURITY.md \"Keys in a PKCS#11 token\")",
    ),
    Table(
        "security.pkcs11",
        "A PKCS#11 token (an HSM, a smart card, SoftHSM) as secure environment: its PSKs (`m2m keys token add-psk`),\n\
         and the key [tls] private_key names as \"pkcs11:token=<token>;object=<label>;type=private\".",
    ),
    Key("security.pkcs11.module", "the token vendor's PKCS#11 library"),
    Key("security.pkcs11.token", "the token's label"),
    Key("security.pkcs11.pin_file", "a file (mode 0600) holding the user PIN"),
    Alt(
        "security.pkcs11.provider",
        "OpenSSL's PKCS#11 provider, which signs the handshakes inside the token",
    ),
    Rows(
        "security.role_issuers",
        "An Authorization Authority whose <role> resources assign roles here, besides the administrator (TS-0003 7.4; docs/SECURITY.md).",
    ),
    Key("security.role_issuers.id", "its AE-ID or CSE-ID, proven by its security association"),
    Key(
        "security.role_issuers.domain",
        "the issuerID its Role-IDs end with (name@domain, lower case): it assigns those only",
    ),
    Rows(
        "security.psk",
        "A PSK row in the configuration itself (seeds/000 table 7.1.2-2), for demos: the file must then be mode 0600.",
    ),
    Key(
        "security.psk.entity",
        "the AE-ID or CSE-ID the key is bound to; absent: the registration rules decide on \"12-<kpsa_id>\"",
    ),
    Key("security.psk.kpsa_id", "KpsaID, the TLS psk_identity: <name>@<fully qualified issuer>"),
    Key(
        "security.psk.key",
        "Kpsa in hex: fresh random bytes (openssl rand -hex 32), never an example",
    ),
    Table(
        "secure_storage",
        "The Secure Storage service (seeds/002 clause 6.3.5.2): AEs and CSEs keep sensitive data objects at\n\
         <CSEBase>/secureStorage, readable by their owner and the readers it names only (docs/SECURITY.md).",
    ),
    Key(
        "secure_storage.secret",
        "the secret of the secure environment the sealing key is derived from (HMAC-SHA-256 inside the token)",
    ),
    Key("secure_storage.max_object_bytes", "the largest content of one data object, in bytes"),
    Key("secure_storage.max_objects_per_owner", "how many data objects one owner may keep"),
    Key("secure_storage.max_total_bytes", "the contents of all owners together, in bytes"),
    Table(
        "maf",
        "The MAF this CSE retrieves connection keys from (MAF-based SAE, TS-0003 clause 8.8); the CSE\n\
         authenticates to it with [tls] certificate, private_key and trusted_ca, which it needs.",
    ),
    Key("maf.url", "the MAF's URL"),
    Key(
        "maf.fqdn",
        "the MAF-FQDN: the suffix of its key IDs (hex(KcID)@MAF-FQDN), its SNI, the name its certificate carries",
    ),
    Key("maf.timeout_ms", "how long a handshake waits for the MAF"),
    Key(
        "maf.cache_seconds",
        "keep a retrieved key until its expiration, at most this long; 0: ask at every handshake (a de-registered key opens nothing)",
    ),
    Table(
        "mef",
        "The MEF this CSE is an enrolment target of (remote-provisioned Kpsa, TS-0003 clause 8.3.2.1): an\n\
         enrolee that enrolled naming this CSE for SUID 12 offers its KeID as KpsaID; the CSE fetches the Kpsa\n\
         from the MEF with [tls] certificate, private_key and trusted_ca, which it needs, and binds the enrolee.",
    ),
    Key("mef.url", "the MEF's URL"),
    Key(
        "mef.fqdn",
        "the MEF-FQDN: its certificate's name and the suffix of its KeIDs (hex@MEF-FQDN)",
    ),
    Key("mef.timeout_ms", "how long a handshake waits for the MEF"),
    Key(
        "mef.cache_seconds",
        "keep a fetched Kpsa until its enrolment ends, at most this long; 0: ask at every handshake (a revoked enrolment opens nothing)",
    ),
    Table(
        "gba",
        "The BSF this CSE is a NAF of (GBA-based SAE, TS-0003 clause 8.3.2.3, 3GPP TS 33.222): a device\n\
         offers its B-TID as psk_identity, the CSE fetches Ks_NAF over Zn with [tls] certificate, private_key\n\
         and trusted_ca, which it needs. Its NAF FQDN is its CSE-ID's public domain name.",
    ),
    Key("gba.zn_url", "the BSF's Zn URL (https)"),
    Key(
        "gba.bsf_fqdn",
        "the BSF's domain: its certificate's name and the suffix of its B-TIDs (base64(RAND)@domain)",
    ),
    Key("gba.timeout_ms", "how long a handshake waits for the BSF"),
    Key(
        "gba.cache_seconds",
        "keep a fetched key until its B-TID expires, at most this long; 0: ask at every handshake",
    ),
    Table(
        "dynamic_authorization",
        "Dynamic authorization (TS-0003 clause 7.3.2.2): when no policy grants a request on a resource linked\n\
         (daci) to an enabled <dynamicAuthorizationConsultation>, the CSE asks a Dynamic Authorization Server\n\
         of its dap, over https with its [tls] certificate (which it needs), and keeps the grant for its lifetime.",
    ),
    Key(
        "dynamic_authorization.timeout_ms",
        "how long a consultation waits; no answer is a denial",
    ),
    Key(
        "dynamic_authorization.max_lifetime_seconds",
        "the longest a grant is kept, whatever lifetime the server gives",
    ),
    Key(
        "dynamic_authorization.refusal_cache_seconds",
        "how long a refusal is kept before the server is asked again for the same request",
    ),
    Alt(
        "dynamic_authorization.revoked_tokens",
        "revoked token IDs, one per line, read again when changed; missing or unreadable: every token refused",
    ),
    Rows(
        "dynamic_authorization.token_issuers",
        "An issuer whose tokens (Tokens parameter: the HTTP Authorization header) grant what their permissions say.",
    ),
    Key(
        "dynamic_authorization.token_issuers.id",
        "the iss of its tokens, e.g. its FQDN",
    ),
    Key(
        "dynamic_authorization.token_issuers.public_key",
        "its token-signing public key: a P-256 JWK with kid (m2m e2e keygen --kty ec prints one)",
    ),
    Rows(
        "dynamic_authorization.servers",
        "A server this CSE may consult; a dap naming any other is never contacted.",
    ),
    Key("dynamic_authorization.servers.url", "its address, as dap names it"),
    Alt(
        "dynamic_authorization.servers.server_name",
        "the name its certificate must carry; absent: the URL's host",
    ),
    Table(
        "group_authentication",
        "Entity C of Group Authentication Solution 1 (IN-CSE, seeds/001 clause 8.2.1): the group agents and their members.",
    ),
    Key(
        "group_authentication.key_lifetime_seconds",
        "How long the Ksx of a round opens associations, in seconds.",
    ),
    Rows(
        "group_authentication.agents",
        "A group agent (MN-CSE) and its members (needs [tls]): a member's KpsaxiId then opens an association\n\
         only with the current Ksx, never with Kpsaxi itself.",
    ),
    Key(
        "group_authentication.agents.agent",
        "the agent's CSE-ID, the entity its association here is bound to",
    ),
    Key(
        "group_authentication.agents.members",
        "the members' KpsaxiIds (= KsxIds), each a [[security.psk]] row with an entity",
    ),
    Table(
        "group_agent",
        "Entity B of Group Authentication Solution 1 (MN-CSE): the members it asks the registrar for group keys for.",
    ),
    Key(
        "group_agent.members",
        "AE-IDs or CSE-IDs bound to PSK rows here; empty: not an agent (else it needs [registrar]).",
    ),
    Table(
        "esprim",
        "This CSE as ESPrim Target (end-to-end security of primitives, TS-0003 clause 8.4); with no keys, no\n\
         maf_keys and no escertke it is none.",
    ),
    Key(
        "esprim.rand_lifetime_seconds",
        "How long a receiverESPrimRandObject (and every session on it) stays valid, in seconds.",
    ),
    Key(
        "esprim.algorithms",
        "The esprimProtocolAndAlgIDs offered and accepted: 10, 11, 12 (JWE A128/A192/A256GCM).",
    ),
    Key(
        "esprim.maf_keys",
        "Accept pairwiseESPrimKeyIDs hex(KcID)@<[maf] fqdn>, the key retrieved from the MAF (needs [maf]).",
    ),
    Key(
        "esprim.escertke",
        "Answer ESCertKE (TS-0003 clause 8.7) with the [tls] certificate, trusting originators' certificates\n\
         from [tls] trusted_ca (needs them).",
    ),
    Key(
        "esprim.escertke_timeout_seconds",
        "An ESCertKE exchange whose message 3 does not come within this time is dropped.",
    ),
    Key(
        "esprim.escertke_max_pending",
        "At most this many ESCertKE exchanges wait for their message 3 ...",
    ),
    Key(
        "esprim.escertke_max_pending_per_peer",
        "... and at most this many of one peer (its bound entity, else its address), so that one peer\n\
         cannot take every place.",
    ),
    Key(
        "esprim.escertke_key_lifetime_seconds",
        "How long a key established by ESCertKE stays a valid pairwiseESPrimKey, in seconds.",
    ),
    Rows(
        "esprim.keys",
        "A provisioned pairwiseESPrimKey, from exactly one of key_env, key, keystore_secret.",
    ),
    Key("esprim.keys.kid", "pairwiseESPrimKeyID, the kid of the ESPrim objects"),
    Key(
        "esprim.keys.entity",
        "the AE-ID or CSE-ID the key belongs to: the inner From must name it (else 4116)",
    ),
    Key(
        "esprim.keys.key_env",
        "the environment variable holding the key in hex (at least 16 bytes)",
    ),
    Alt(
        "esprim.keys.key",
        "or the key in hex: the configuration must then be mode 0600",
    ),
    Alt(
        "esprim.keys.keystore_secret",
        "or the name of a secret in the [security] keystore",
    ),
    Table(
        "group_credentials",
        "Group credentials end to end (IN-CSE, seeds/001 clause 5.1): each member AE's own E2E key, under\n\
         which the group key is sealed for it.",
    ),
    Key(
        "group_credentials.container",
        "The child container of a member AE that receives its sealed credential.",
    ),
    Key(
        "group_credentials.signing_key",
        "The server's P-256 private JWK file (mode 0600) signing the credentials sealed under a member's\n\
         public key; needed for public_jwk members.",
    ),
    Rows(
        "group_credentials.members",
        "A member AE and its own E2E key, from exactly one of keystore_secret, key, public_jwk.",
    ),
    Key(
        "group_credentials.members.member",
        "the member's AE-ID (SP-relative or absolute)",
    ),
    Alt(
        "group_credentials.members.kid",
        "the key ID of a shared key; default: the member's AE-ID",
    ),
    Key(
        "group_credentials.members.keystore_secret",
        "a shared key: the name of a secret in the [security] keystore",
    ),
    Alt(
        "group_credentials.members.key",
        "or a shared key in hex, 16, 24 or 32 bytes: the configuration must then be mode 0600",
    ),
    Alt(
        "group_credentials.members.public_jwk",
        "or the member's P-256 public JWK file (ECDH-ES+A128KW; needs signing_key)",
    ),
    Table(
        "flex_container",
        "<flexContainer> specializations besides the built-in module classes (cod:lock, cod:dooSs, cod:bat,\n\
         cod:binSh, cod:tempe).",
    ),
    Key(
        "flex_container.specializations",
        "Definition files read at start, each a JSON list of {key, cnd, attributes: [{name, type, mandatory, create}]}\n\
         (docs/CONFORMANCE.md); a malformed file stops the start.",
    ),
    Table(
        "notifications",
        "Notification policies the operator sets for every subscription.",
    ),
    Key(
        "notifications.target_removal",
        "When a notification target asks to leave a subscription (DELETE <sub>/ntsr) whose creator set no\n\
         policy: \"reject\" (keep the subscription as its creator made it), \"accept\", \"seek\" (ask the\n\
         creator) or \"inform\" (tell the creator, reject). The CSE keeps it as <notificationTargetPolicy>\n\
         defaultNTP under its CSEBase.",
    ),
];

/// Where a key is shown in an example: never a value someone could use as it is.
const HEX_PLACEHOLDER: &str = "<64 hex digits>";

/// The defaults with a value for every optional field, and one further row of each array: what the
/// commented-out examples show.
fn example() -> Config {
    let mut c = Config::default();
    c.cse.in_cse_id = Some("/id-in".into());
    c.storage.audit_trail = Some("m2m-data/audit.log".into());
    c.storage.encryption_secret = Some("store-key".into());
    c.storage.previous_encryption_secret = Some("store-key-old".into());
    c.http.public_url = Some("https://cse.m2m.example.com:8443".into());
    c.registrar = Some(RegistrarSection {
        cse_id: "/id-in".into(),
        resource_name: "cse-in".into(),
        url: "https://127.0.0.1:8443".into(),
        server_name: Some("id-in.m2m.example.com".into()),
        psk_identity: Some("mn-outer@in.m2m.example.com".into()),
    });
    c.registration.rules.push(AppRule {
        apci: Some(vec!["12-*@in.provider.com".into()]),
        aai: vec!["Ndoorlock".into()],
        aae: vec!["Clock-AE*".into()],
    });
    c.registration.descendants.push(DescendantRule {
        registree: "/id-mn".into(),
        cses: vec!["/id-lock-*".into()],
    });
    c.tls = Some(TlsSection {
        certificate: Some("pki/cse.pem".into()),
        private_key: Some("pki/cse.key".into()),
        trusted_ca: Some("pki/ca/ca.pem".into()),
        crl: Some("pki/ca/crl.pem".into()),
        accepted_identities: vec!["/id-mn".into(), "Clock-AE1".into()],
        dtls_listen: Some("127.0.0.1:5684".into()),
        wss_listen: Some("127.0.0.1:8444".into()),
        wss_origins: vec!["https://app.m2m.example.com".into()],
        ..TlsSection::default()
    });
    c.coap = Some(CoapSection::default());
    c.mqtt = Some(MqttSection {
        broker: "mqtts://127.0.0.1:8883".into(),
        psk_identity: "in-cse@in.provider.com".into(),
        keep_alive_seconds: 60,
        acl_file: Some("mqtt/acl".into()),
        broker_pid_file: Some("mqtt/mosquitto.pid".into()),
    });
    c.multicast = Some(MulticastSection {
        keystore_secret: Some("multicast-e2e".into()),
        key: Some(HEX_PLACEHOLDER.into()),
        private_jwk: Some("cse-e2e.jwk".into()),
        ..MulticastSection::default()
    });
    c.security.keystore = Some("cse.keystore".into());
    c.security.key_file = Some("cse-keystore.key".into());
    c.security.passphrase_env = Some("M2M_CSE_KEYSTORE_PASSPHRASE".into());
    c.security.rotation_key = Some("kpsa-rotation.key".into());
    c.security.rotation_secret = Some("krot".into());
    c.security.required_level = Some(m2m_security::secure_environment::SecurityLevel::Software);
    c.security.pkcs11 = Some(Pkcs11Section {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token: "m2m".into(),
        pin_file: "token.pin".into(),
        provider: Some(m2m_security::secure_environment::pkcs11::DEFAULT_PROVIDER_MODULE.into()),
    });
    c.security.role_issuers = vec![RoleIssuerRow {
        id: "/id-in/Cauthority".into(),
        domain: "roles.example.com".into(),
    }];
    c.security.psk.push(PskRow {
        entity: Some("Clock-AE1".into()),
        kpsa_id: "clock@in.provider.com".into(),
        key: HEX_PLACEHOLDER.into(),
    });
    c.secure_storage = Some(SecureStorageSection {
        secret: "secure-storage".into(),
        max_object_bytes: default_sdo_bytes(),
        max_objects_per_owner: default_sdo_count(),
        max_total_bytes: default_sdo_total(),
    });
    c.maf = Some(MafSection {
        url: "https://maf.keys.example.net:8443".into(),
        fqdn: "maf.keys.example.net".into(),
        timeout_ms: default_maf_timeout(),
        cache_seconds: 0,
    });
    c.mef = Some(MefSection {
        url: "https://mef.keys.example.net:8443".into(),
        fqdn: "mef.keys.example.net".into(),
        timeout_ms: default_maf_timeout(),
        cache_seconds: 0,
    });
    c.gba = Some(GbaSection {
        zn_url: "https://bsf.operator.example.net:8444".into(),
        bsf_fqdn: "bsf.operator.example.net".into(),
        timeout_ms: default_maf_timeout(),
        cache_seconds: 0,
    });
    c.dynamic_authorization = Some(DynamicAuthorizationSection {
        servers: vec![DasServerRow {
            url: "https://das.m2m.example.com:8443".into(),
            server_name: Some("das.m2m.example.com".into()),
        }],
        token_issuers: vec![TokenIssuerRow {
            id: "das.m2m.example.com".into(),
            public_key: "das-tokens.pub.jwk".into(),
        }],
        revoked_tokens: Some("revoked-tokens.txt".into()),
        ..DynamicAuthorizationSection::default()
    });
    c.group_authentication.agents.push(GroupAgentRow {
        agent: "/id-mn".into(),
        members: vec!["meter1@in.m2m.example.com".into()],
    });
    c.esprim.keys.push(EsprimKeyRow {
        kid: "esp1-pairwise".into(),
        entity: "Sesp1".into(),
        key: Some(HEX_PLACEHOLDER.into()),
        key_env: Some("ESP1_KEY".into()),
        keystore_secret: Some("esp1-pairwise".into()),
    });
    c.group_credentials.signing_key = Some("in-server.jwk".into());
    c.group_credentials.members.push(E2eMemberRow {
        member: "/id-mn/Clock1".into(),
        kid: Some("lock1-e2e".into()),
        key: Some(HEX_PLACEHOLDER.into()),
        keystore_secret: Some("lock1-e2e".into()),
        public_jwk: Some("lock1.pub.jwk".into()),
    });
    c
}

fn table(c: &Config) -> anyhow::Result<toml::Table> {
    Ok(toml::Table::try_from(c)?)
}

impl Config {
    /// The text `m2m cse --print-default-config` prints: it parses to [`Config::default`].
    pub fn default_text() -> anyhow::Result<String> {
        config_text::render(
            INTRO,
            DOCS,
            &table(&Config::default())?,
            &table(&example())?,
        )
        .map_err(|e| anyhow::anyhow!("the default configuration text: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::config_text::{each_uncommented, field_names, has_path, problems};

    fn text() -> String {
        Config::default_text().unwrap()
    }

    #[test]
    fn the_printed_configuration_parses_to_the_defaults() {
        let parsed = Config::from_toml(&text()).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
        assert_eq!(table(&parsed).unwrap(), table(&Config::default()).unwrap());
    }

    /// Each struct of the configuration by the table it is read from.
    fn fields() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("", field_names::<Config>()),
            ("cse", field_names::<CseSection>()),
            ("http", field_names::<HttpSection>()),
            ("storage", field_names::<StorageSection>()),
            ("registrar", field_names::<RegistrarSection>()),
            ("limits", field_names::<LimitsSection>()),
            ("registration", field_names::<RegistrationSection>()),
            ("registration.rules", field_names::<AppRule>()),
            ("registration.descendants", field_names::<DescendantRule>()),
            ("tls", field_names::<TlsSection>()),
            ("coap", field_names::<CoapSection>()),
            ("mqtt", field_names::<MqttSection>()),
            ("multicast", field_names::<MulticastSection>()),
            ("security", field_names::<SecuritySection>()),
            ("security.psk", field_names::<PskRow>()),
            ("security.role_issuers", field_names::<RoleIssuerRow>()),
            ("security.pkcs11", field_names::<Pkcs11Section>()),
            ("secure_storage", field_names::<SecureStorageSection>()),
            ("maf", field_names::<MafSection>()),
            ("gba", field_names::<GbaSection>()),
            ("mef", field_names::<MefSection>()),
            (
                "dynamic_authorization",
                field_names::<DynamicAuthorizationSection>(),
            ),
            (
                "dynamic_authorization.servers",
                field_names::<DasServerRow>(),
            ),
            (
                "dynamic_authorization.token_issuers",
                field_names::<TokenIssuerRow>(),
            ),
            (
                "group_authentication",
                field_names::<GroupAuthenticationSection>(),
            ),
            (
                "group_authentication.agents",
                field_names::<GroupAgentRow>(),
            ),
            ("group_agent", field_names::<GroupAgentSection>()),
            ("esprim", field_names::<EsprimSection>()),
            ("esprim.keys", field_names::<EsprimKeyRow>()),
            (
                "group_credentials",
                field_names::<GroupCredentialsSection>(),
            ),
            ("group_credentials.members", field_names::<E2eMemberRow>()),
            ("flex_container", field_names::<FlexContainerSection>()),
            ("notifications", field_names::<NotificationsSection>()),
        ]
    }

    #[test]
    fn every_field_is_shown_with_a_comment() {
        let p = problems(&text(), &fields());
        assert!(p.is_empty(), "{p:#?}");
    }

    /// A field the table above does not document makes the text fail, not print without it.
    #[test]
    fn a_field_without_a_comment_fails() {
        let docs: Vec<Doc> = DOCS
            .iter()
            .copied()
            .filter(|d| !matches!(d, Key("limits.idle_timeout_ms", _)))
            .collect();
        let e = config_text::render(
            INTRO,
            &docs,
            &table(&Config::default()).unwrap(),
            &table(&example()).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e, "limits.idle_timeout_ms: no doc");
    }

    #[test]
    fn the_security_switches_say_what_they_do() {
        let text = text();
        let comment_above = |setting: &str| {
            let lines: Vec<&str> = text.lines().collect();
            let at = lines.iter().position(|l| l.starts_with(setting)).unwrap();
            lines[..at]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("# "))
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let originators = comment_above("originators = \"trusted\"");
        for says in [
            "\"anonymous\"",
            "\"trusted\"",
            "announced at start",
            "loopback",
        ] {
            assert!(originators.contains(says), "{says}: {originators}");
        }
        assert!(comment_above("allow_insecure = false").contains("non-loopback"));
        assert!(comment_above("admin_originator = ").contains("full access"));
        assert!(comment_above("max_connections = ").contains("per listener"));
    }

    /// Removing the `# ` of one optional block or key (with what it needs) gives a configuration
    /// that loads and has it.
    #[test]
    fn each_optional_example_parses_uncommented() {
        let needs: &[(&str, &[&str])] = &[
            ("maf", &["tls"]),
            ("gba", &["tls"]),
            ("mef", &["tls"]),
            ("group_authentication.agents", &["tls"]),
            ("mqtt.acl_file", &["mqtt.broker_pid_file"]),
            ("esprim.keys.key", &["-esprim.keys.key_env"]),
            ("multicast.key", &["-multicast.keystore_secret"]),
            ("multicast.private_jwk", &["-multicast.keystore_secret"]),
            ("esprim.keys.keystore_secret", &["-esprim.keys.key_env"]),
            (
                "group_credentials.members.key",
                &["-group_credentials.members.keystore_secret"],
            ),
            (
                "group_credentials.members.public_jwk",
                &["-group_credentials.members.keystore_secret"],
            ),
        ];
        let all = each_uncommented(&text(), needs).unwrap();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        for optional in [
            "cse.in_cse_id",
            "http.public_url",
            "registrar",
            "registrar.psk_identity",
            "registration.rules",
            "registration.descendants",
            "tls",
            "tls.accepted_identities",
            "tls.dtls_listen",
            "tls.wss_listen",
            "tls.wss_origins",
            "coap",
            "mqtt",
            "multicast",
            "multicast.private_jwk",
            "security.keystore",
            "security.psk",
            "secure_storage",
            "maf",
            "mef",
            "gba",
            "group_authentication.agents",
            "esprim.keys",
            "esprim.keys.key",
            "group_credentials.signing_key",
            "group_credentials.members",
            "group_credentials.members.public_jwk",
        ] {
            assert!(paths.contains(&optional), "{optional} not in {paths:?}");
        }
        for (path, t) in all {
            let t = t.replace(HEX_PLACEHOLDER, &"5a".repeat(32));
            let cfg = Config::from_toml(&t).unwrap_or_else(|e| panic!("{path}: {e:#}\n{t}"));
            let back = toml::to_string(&cfg).unwrap();
            assert!(has_path(&back, &path), "{path} is not in\n{back}");
        }
    }

    #[test]
    fn the_examples_hold_no_key() {
        let text = text();
        assert!(!Config::from_toml(&text).unwrap().holds_keys());
        let keys = text
            .lines()
            .filter(|l| l.trim_start_matches("# ").starts_with("key = "));
        assert_eq!(keys.clone().count(), 4, "{text}");
        for line in keys {
            assert!(line.contains(HEX_PLACEHOLDER), "{line}");
        }
    }
}
