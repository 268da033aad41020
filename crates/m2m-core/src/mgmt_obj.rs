//! `<mgmtObj>` specializations (TS-0004 clause 7.4.15 and Annex D; TS-0001 clause 9.6.15 and
//! Annex D): each is represented under its own name (`m2m:fwr`, `m2m:bat`...), identified by its
//! mgmtDefinition (`mgd`, TS-0004 table 6.3.4.2.22-1), with its own attributes.
//!
//! Service layer management (TS-0004 clause 7.4.15.2.1): the managed entity reads and writes
//! these resources itself through the generic procedures; an executable attribute set to true
//! (reboot, install...) is what it acts on, typically through a subscription.

use crate::error::{M2mError, M2mResult};
use crate::schema::{m_rw, m_wo, rw, wo, AttrSpec, Create, Kind, STR_LIST};
use serde_json::{Map, Value};

/// A check of a `<mgmtObj>`'s attributes as they would be stored.
pub type StateRule = fn(&Map<String, Value>) -> M2mResult<()>;

/// One specialization.
#[derive(Debug)]
pub struct MgmtSpec {
    /// mgmtDefinition.
    pub mgd: u64,
    /// Its name in TS-0001 Annex D.
    pub name: &'static str,
    /// The JSON root element (TS-0004 table 8.2.4-1).
    pub root: &'static str,
    /// Its own attributes (TS-0004 Annex D tables D.x.1-2).
    pub attributes: &'static [AttrSpec],
    /// Executable attributes whose value is always true (TS-0004 Annex D): setting one to true
    /// asks the managed entity to act.
    pub always_true: &'static [&'static str],
    /// Attributes that hold a secret (`name`, or `object/member`): the CSE stores them only
    /// protected for their target, as a JWE (TS-0003 clause 8.5, ESData), never in the clear.
    pub protected: &'static [&'static str],
    /// Checks of the resource as it would be stored (the CREATE content, or the result of an
    /// UPDATE): rules between attributes.
    pub rule: Option<StateRule>,
    /// Checks that no secret is in the clear beyond the `protected` attributes (a certificate
    /// file whose format carries a private key).
    pub secret_rule: Option<StateRule>,
    /// Executable attributes that may not both be set true in one request (TS-0004 D.x.2.2).
    pub exclusive: &'static [(&'static str, &'static str)],
    /// What the CSE sets at creation for attributes of multiplicity 1 the originator may not
    /// give (an actionStatus starts Uninitialized, an executable flag false).
    pub defaults: &'static [(&'static str, DefaultValue)],
}

/// A value the CSE sets at creation.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    False,
    /// m2m:actionStatus with status Uninitialized (TS-0004 table 6.3.4.2.20-1).
    Uninitialized,
}

impl DefaultValue {
    pub fn value(self) -> Value {
        match self {
            DefaultValue::False => Value::Bool(false),
            DefaultValue::Uninitialized => serde_json::json!({ "sus": 0 }),
        }
    }
}

/// m2m:actionStatus (TS-0004 clause 6.3.5.14): `{acn, sus}`, sus a m2m:status 0-3.
static ACTION_STATUS: crate::schema::ObjSpec = crate::schema::ObjSpec {
    fields: &[
        crate::schema::opt("acn", Kind::Str),
        crate::schema::opt("sus", Kind::Enum(&[0, 1, 2, 3])),
    ],
    rule: crate::schema::ObjRule::Fields,
};
const ACTION: Kind = Kind::Object(&ACTION_STATUS);

static FIRMWARE: &[AttrSpec] = &[
    m_rw("vr", Kind::Str),
    m_rw("fwn", Kind::Str),
    m_rw("url", Kind::Uri),
    m_rw("ud", Kind::Bool),
    attr_np_create("uds", ACTION),
];

static SOFTWARE: &[AttrSpec] = &[
    m_rw("vr", Kind::Str),
    m_rw("swn", Kind::Str),
    m_rw("url", Kind::Uri),
    attr_np_create("in", Kind::Bool),
    attr_np_create("un", Kind::Bool),
    attr_np_create("ins", ACTION),
    attr_np_create("act", Kind::Bool),
    attr_np_create("dea", Kind::Bool),
    attr_np_create("acts", ACTION),
];

static MEMORY: &[AttrSpec] = &[m_rw("mma", Kind::NonNegInt), m_rw("mmt", Kind::NonNegInt)];

static AREA_NWK_INFO: &[AttrSpec] = &[m_rw("ant", Kind::Str), rw("ldv", STR_LIST)];

static AREA_NWK_DEVICE_INFO: &[AttrSpec] = &[
    m_rw("dvd", Kind::Str),
    m_rw("dvt", Kind::Str),
    m_rw("awi", Kind::Uri),
    rw("sli", Kind::NonNegInt),
    rw("sld", Kind::NonNegInt),
    rw("ss", Kind::Str),
    rw("lnh", STR_LIST),
];

static BATTERY: &[AttrSpec] = &[
    m_rw("btl", Kind::Range(0, 100)),
    m_rw("bts", Kind::Enum(&[1, 2, 3, 4, 5, 6, 7])),
];

static DEVICE_INFO: &[AttrSpec] = &[
    m_rw("dlb", Kind::Str),
    m_wo("man", Kind::Str),
    rw("mfdl", Kind::Str),
    wo("mfd", Kind::Timestamp),
    m_wo("mod", Kind::Str),
    wo("smod", Kind::Str),
    m_rw("dty", Kind::Str),
    rw("dvnm", Kind::Str),
    rw("fwv", Kind::Str),
    rw("swv", Kind::Str),
    wo("hwv", Kind::Str),
    rw("osv", Kind::Str),
    wo("cnty", Kind::Str),
    rw("loc", Kind::Str),
    rw("syst", Kind::Timestamp),
    rw("spur", Kind::Uri),
    rw("purl", Kind::Uri),
    rw("ptl", STR_LIST),
];

static DEVICE_CAPABILITY: &[AttrSpec] = &[
    m_rw("can", Kind::Str),
    m_rw("att", Kind::Bool),
    m_rw("cas", ACTION),
    m_rw("cus", Kind::Bool),
    rw("ena", Kind::Bool),
    rw("dis", Kind::Bool),
];

static REBOOT: &[AttrSpec] = &[rw("rbo", Kind::Bool), rw("far", Kind::Bool)];

static EVENT_LOG: &[AttrSpec] = &[
    m_rw("lgt", Kind::Enum(&[1, 2, 3, 4, 5])),
    m_rw("lgd", Kind::Str),
    m_rw("lgst", Kind::Enum(&[1, 2, 3, 4, 5])),
    rw("lga", Kind::Bool),
    rw("lgo", Kind::Bool),
];

/// m2m:suid values (TS-0004 table 6.3.4.2.x): the security usages of a credential.
const SUID: Kind = Kind::Enum(&[
    10, 11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 32, 33, 34, 35, 40, 41, 42, 43, 44, 45,
]);

/// A list of m2m:scheduleEntries (dataCollection's reporting and measurement schedules).
const SCHEDULES: Kind = Kind::NonEmptyList(&Kind::Object(&crate::schema::SCHEDULE_ENTRIES));

/// dataCollection (TS-0022): what a device measures and reports, into which container.
static DATA_COLLECTION: &[AttrSpec] = &[
    m_rw("cntp", Kind::Str),
    rw("rpsc", SCHEDULES),
    rw("mesc", SCHEDULES),
    rw("meil", Kind::PosInt),
];

/// myCertFileCred (TS-0022; TS-0003 clause 8.3.8): a certificate file for the listed usages.
static MY_CERT_FILE_CRED: &[AttrSpec] = &[
    m_rw("suids", Kind::NonEmptyList(&SUID)),
    m_wo("mcff", Kind::Str),
    m_wo("mcfc", Kind::Str),
];

/// The credentials of a WiFi client: `enct` 1 none, 2 WEP, 3-5 WPA/WPA2/WPA3 Personal, 6-8
/// Enterprise; the user name and password (Enterprise), the WEP key, the WPA passphrase.
static WIFI_CREDENTIALS: crate::schema::ObjSpec = crate::schema::ObjSpec {
    fields: &[
        crate::schema::req("enct", Kind::Enum(&[1, 2, 3, 4, 5, 6, 7, 8])),
        crate::schema::opt("unm", Kind::Str),
        crate::schema::opt("pwd", Kind::Str),
        crate::schema::opt("wepk", Kind::Str),
        crate::schema::opt("wpap", Kind::Str),
    ],
    rule: crate::schema::ObjRule::Fields,
};

/// wificlient (TS-0022).
static WIFI_CLIENT: &[AttrSpec] = &[
    m_rw("ssid", Kind::Str),
    rw("wcrds", Kind::Object(&WIFI_CREDENTIALS)),
    rw("maca", Kind::Str),
    rw("chanl", Kind::Str),
    rw("cons", Kind::Enum(&[0, 1, 2, 3, 4, 5, 6])),
    m_rw("scan", Kind::Bool),
    rw("scanr", STR_LIST),
    rw("ud", Kind::Bool),
    attr_np_create("uds", ACTION),
    rw("trdst", Kind::Bool),
    rw("rdst", Kind::Bool),
];

/// credentials (TS-0022): a credential for a purpose; its secret and token are protected.
static CREDENTIALS: &[AttrSpec] = &[
    rw("pur", Kind::Str),
    rw("crid", Kind::Str),
    rw("crse", Kind::Str),
    rw("crtk", Kind::Str),
];

/// SIM (TS-0022).
static SIM: &[AttrSpec] = &[
    rw("imsi", Kind::Str),
    m_rw("icid", Kind::Str),
    rw("sist", Kind::Enum(&[0, 1])),
    rw("sity", Kind::Enum(&[0, 1, 2, 3])),
    rw("spn", Kind::Str),
];

/// m2m:ipAddress (TS-0004 clause 6.3.5.60): `{ip4, ip6}`.
static IP_ADDRESS: crate::schema::ObjSpec = crate::schema::ObjSpec {
    fields: &[
        crate::schema::opt("ip4", Kind::Ipv4),
        crate::schema::opt("ip6", Kind::Ipv6),
    ],
    rule: crate::schema::ObjRule::Fields,
};

/// mobileNetwork (TS-0022).
static MOBILE_NETWORK: &[AttrSpec] = &[
    m_rw("cnb", Kind::Enum(&[0, 1, 2, 3, 4, 5, 6, 7])),
    rw("rss", Kind::Integer),
    rw("liqu", Kind::Integer),
    rw("ipad", Kind::List(&Kind::Object(&IP_ADDRESS))),
    rw("ripa", Kind::List(&Kind::Object(&IP_ADDRESS))),
    rw("apna", Kind::Str),
    rw("ceid", Kind::Integer),
    rw("smnc", Kind::Integer),
    rw("smcc", Kind::Integer),
    rw("lac", Kind::Integer),
    rw("coel", Kind::Enum(&[0, 1, 2, 3, 4])),
];

/// A TCP or UDP port (the xs:unsignedByte of TS-0003 table 12.4.2-1 cannot hold one).
const PORT: Kind = Kind::Range(1, 65535);

/// registration (TS-0001 table 9.6.18-1; TS-0003 clause 8.3.9.9.2): how an AE or CSE registers
/// with its Registrar CSE, and the authenticationProfile its association follows.
static REGISTRATION: &[AttrSpec] = &[
    rw("orid", Kind::Uri),
    rw("apid", Kind::AppId),
    m_rw("rcsi", Kind::Uri),
    m_rw("rpoa", Kind::NonEmptyList(&Kind::Uri)),
    rw("aupl", Kind::Uri),
];

/// authenticationProfile (TS-0003 clauses 8.3.8, 8.3.9.9.2 to 8.3.9.9.6): how the device
/// establishes a mutually authenticated association: its SUID, TLS ciphersuites (IANA numbers),
/// the symmetric key's ID and value (the value protected for the device), the key registration's
/// duration and labels, its certificate's fingerprint, and the links to the MEF or MAF client
/// registration configuration, trust anchors and certificate file it uses.
static AUTHENTICATION_PROFILE: &[AttrSpec] = &[
    m_rw("suid", SUID),
    rw("tlscs", Kind::NonEmptyList(&Kind::Range(0, 65535))),
    rw("symki", Kind::Str),
    rw("symkv", Kind::Str),
    rw("krd", Kind::Duration),
    rw("krl", STR_LIST),
    rw("mcfp", Kind::Str),
    rw("crcl", Kind::Uri),
    rw("tacl", Kind::NonEmptyList(&Kind::Uri)),
    rw("mcfl", Kind::Uri),
];

/// trustAnchorCred (TS-0003 clause 8.3.9.9.7): a trust anchor CA certificate, named by its
/// fingerprint and fetched by HTTPS GET from its URI.
static TRUST_ANCHOR_CRED: &[AttrSpec] = &[m_rw("cfp", Kind::Str), m_rw("uri", Kind::Uri)];

/// MAFClientRegCfg and MEFClientRegCfg (TS-0003 clauses 8.3.7.2, 8.8.3.2, sec:clientRegCfg of
/// table 12.4.2-1): the MAF's or MEF's FQDN, the administrating stakeholder's, and the ports of
/// its bindings; expirationTime and labels are the resource's own `et` and `lbl`.
static CLIENT_REG_CFG: &[AttrSpec] = &[
    m_rw("fqdn", Kind::Uri),
    m_rw("adfq", Kind::Uri),
    rw("htpp", PORT),
    rw("copp", PORT),
    rw("wspp", PORT),
];

/// The ciphersuites TS-0003 clause 10.2.2 makes mandatory for TLS-PSK (TLS:
/// TLS_PSK_WITH_AES_128_CBC_SHA256, DTLS: TLS_PSK_WITH_AES_128_CCM_8) and clause 10.2.3 for
/// certificates (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8).
const MANDATORY_PSK_SUITES: [u64; 2] = [0x00AE, 0xC0A8];
const MANDATORY_CERTIFICATE_SUITES: [u64; 2] = [0xC023, 0xC0AE];

/// authenticationProfile: what TS-0003 clause 8.3.9.9.2 step 5 verifies of the profile itself
/// (its parent and child objects are the managed entity's to verify): a pre-provisioned key
/// names its symmKeyID; a MEF- or MAF-established one its key registration duration and its
/// client registration configuration; a TLS-PSK profile lists a mandatory PSK ciphersuite; a
/// certificate profile its certificate's fingerprint and a mandatory certificate ciphersuite.
fn authentication_profile_rule(state: &Map<String, Value>) -> M2mResult<()> {
    let suid = state.get("suid").and_then(Value::as_u64).unwrap_or(0);
    let has = |name: &str| state.get(name).is_some_and(|v| !v.is_null());
    let needs = |name: &str, what: &str| {
        if has(name) {
            Ok(())
        } else {
            Err(M2mError::bad_request(format!(
                "attribute '{name}': an authenticationProfile with SUID {suid} needs {what}"
            )))
        }
    };
    if matches!(suid, 11..=13) {
        needs("symki", "the pre-provisioned key's ID")?;
    }
    if matches!(suid, 21..=23 | 32 | 33) {
        needs("krd", "the key registration's duration")?;
        needs("crcl", "its MEF or MAF client registration configuration")?;
    }
    if matches!(suid, 41..=43) {
        needs("mcfp", "its certificate's fingerprint")?;
        if state
            .get("mcfp")
            .and_then(Value::as_str)
            .and_then(fingerprint)
            .is_none()
        {
            return Err(M2mError::bad_request(
                "attribute 'mcfp': a SHA-256 fingerprint, 64 hex digits (pairs may be separated by ':')",
            ));
        }
    }
    let suites: Vec<u64> = state
        .get("tlscs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mandatory: &[u64] = match suid {
        11 | 12 | 21 | 22 | 32 => &MANDATORY_PSK_SUITES,
        41..=43 => &MANDATORY_CERTIFICATE_SUITES,
        _ => &[],
    };
    if !mandatory.is_empty() && !suites.iter().any(|s| mandatory.contains(s)) {
        return Err(M2mError::bad_request(format!(
            "attribute 'tlscs': an authenticationProfile with SUID {suid} lists one of the mandatory ciphersuites {mandatory:?} (TS-0003 clause 10.2)"
        )));
    }
    Ok(())
}

/// trustAnchorCred: a SHA-256 fingerprint, and an https URI (TS-0003 clause 8.3.9.9.7: the
/// certificate is fetched by HTTPS GET).
fn trust_anchor_rule(state: &Map<String, Value>) -> M2mResult<()> {
    if state
        .get("cfp")
        .and_then(Value::as_str)
        .and_then(fingerprint)
        .is_none()
    {
        return Err(M2mError::bad_request(
            "attribute 'cfp': a SHA-256 fingerprint, 64 hex digits (pairs may be separated by ':')",
        ));
    }
    let uri = state.get("uri").and_then(Value::as_str).unwrap_or("");
    if !uri
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        return Err(M2mError::bad_request(
            "attribute 'uri': the trust anchor is fetched by HTTPS GET (an https:// URI)",
        ));
    }
    Ok(())
}

/// A SHA-256 certificate fingerprint written as 64 hex digits, or as 32 pairs separated by ':'
/// (as `openssl x509 -fingerprint -sha256` prints it), in either case.
pub fn fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = if text.contains(':') {
        let pairs: Vec<&str> = text.split(':').collect();
        if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
            return None;
        }
        pairs.concat()
    } else {
        text.to_owned()
    };
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The security specializations (TS-0003 clause 8.3.9.9): who changes them chooses how the
/// device authenticates, whom it trusts and where it registers its keys, so only the CSE's
/// administrator creates or updates one.
pub const ADMINISTERED: &[u64] = &[1020, 1022, 1024, 1025, 1026];

/// dataCollection: a measurement schedule or a measurement interval, not both.
fn data_collection_rule(state: &Map<String, Value>) -> M2mResult<()> {
    if state.contains_key("mesc") && state.contains_key("meil") {
        return Err(M2mError::bad_request(
            "attributes 'mesc' and 'meil': a measurement schedule or an interval, not both",
        ));
    }
    Ok(())
}

/// wificlient: each credential goes with its encryption type.
fn wifi_client_rule(state: &Map<String, Value>) -> M2mResult<()> {
    let Some(c) = state.get("wcrds").and_then(Value::as_object) else {
        return Ok(());
    };
    let enct = c.get("enct").and_then(Value::as_u64).unwrap_or(0);
    for (member, fits) in [
        ("unm", (6..=8).contains(&enct)),
        ("pwd", (6..=8).contains(&enct)),
        ("wepk", enct == 2),
        ("wpap", (3..=5).contains(&enct)),
    ] {
        if c.contains_key(member) && !fits {
            return Err(M2mError::bad_request(format!(
                "attribute 'wcrds.{member}': not a credential of encryption type {enct}"
            )));
        }
    }
    Ok(())
}

/// myCertFileCred: only a format that holds certificates alone may come in the clear, and then
/// a PEM file holds certificate blocks only; any other format (PKCS#12, PKCS#8, one this CSE does
/// not know) may carry a private key and comes protected for the device. (A DER file of a
/// certificate format is parsed as certificates by the CSE: `certificate_only_der`.)
fn my_cert_file_rule(state: &Map<String, Value>) -> M2mResult<()> {
    let format = state.get("mcff").and_then(Value::as_str).unwrap_or("");
    let content = state.get("mcfc").and_then(Value::as_str).unwrap_or("");
    if is_jwe(content) {
        return Ok(());
    }
    if !is_certificate_format(format) {
        return Err(protected_refusal("mcfc"));
    }
    if content.contains("-----BEGIN") && !pem_certificates_only(content) {
        return Err(protected_refusal("mcfc"));
    }
    Ok(())
}

/// Media types of files that hold certificates only (RFC 2585, RFC 8551, and the common PEM
/// and PKCS#7 names), compared without parameters and case.
const CERTIFICATE_FORMATS: &[&str] = &[
    "application/pkix-cert",
    "application/pkix-pkipath",
    "application/x-x509-ca-cert",
    "application/x-x509-user-cert",
    "application/pkcs7-mime",
    "application/x-pkcs7-certificates",
    "application/x-pem-file",
];

/// Whether `mcff` names a certificate-only format (parameters and case ignored).
pub fn is_certificate_format(format: &str) -> bool {
    let bare = format.split(';').next().unwrap_or("").trim();
    CERTIFICATE_FORMATS
        .iter()
        .any(|f| bare.eq_ignore_ascii_case(f))
}

/// Whether every PEM block of `text` is a certificate or PKCS#7 (none a key of any kind).
fn pem_certificates_only(text: &str) -> bool {
    text.match_indices("-----BEGIN ").all(|(at, _)| {
        let label = text[at + 11..].split("-----").next().unwrap_or("");
        matches!(
            label,
            "CERTIFICATE" | "TRUSTED CERTIFICATE" | "PKCS7" | "CMS"
        )
    })
}

fn protected_refusal(path: &str) -> M2mError {
    M2mError::bad_request(format!(
        "attribute '{path}': a secret is accepted only protected for its target (a JWE, TS-0003 clause 8.5), never in the clear"
    ))
}

/// Whether `s` is a JWE in compact serialization (RFC 7516 clause 7.1): five base64url parts,
/// the first a protected header naming `alg` and `enc`. The CSE cannot open it, and need not:
/// only the target holds the key.
pub fn is_jwe(s: &str) -> bool {
    use base64::Engine;
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 5
        || !parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        || parts[3].is_empty()
        || parts[4].is_empty()
    {
        return false;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(header) = b64
        .decode(parts[0])
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
    else {
        return false;
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let enc = header.get("enc").and_then(Value::as_str).unwrap_or("");
    let (iv, tag) = (
        b64.decode(parts[2]).unwrap_or_default(),
        b64.decode(parts[4]).unwrap_or_default(),
    );
    // A real content encryption (RFC 7518 clause 5.1) with its IV and full tag, and a key
    // management algorithm (not `none`); `dir` and ECDH-ES carry no encrypted key, others do.
    let tag_len = match enc {
        "A128GCM" | "A192GCM" | "A256GCM" => 16,
        "A128CBC-HS256" => 16,
        "A192CBC-HS384" => 24,
        "A256CBC-HS512" => 32,
        _ => return false,
    };
    let direct = matches!(alg, "dir" | "ECDH-ES");
    KEY_MANAGEMENT.contains(&alg)
        && !iv.is_empty()
        && tag.len() == tag_len
        && parts[1].is_empty() == direct
}

/// Key management algorithms of RFC 7518 clause 4.1 (not `none`, not RSA1_5).
const KEY_MANAGEMENT: &[&str] = &[
    "RSA-OAEP",
    "RSA-OAEP-256",
    "A128KW",
    "A192KW",
    "A256KW",
    "dir",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "ECDH-ES+A192KW",
    "ECDH-ES+A256KW",
    "A128GCMKW",
    "A192GCMKW",
    "A256GCMKW",
    "PBES2-HS256+A128KW",
    "PBES2-HS384+A192KW",
    "PBES2-HS512+A256KW",
];

/// Refuses request content (of a request kept for later: a non-blocking request's `<request>`,
/// an `<action>`'s primitive) that is a device configuration object carrying a secret in the
/// clear: it would be stored before the object's own checks ran.
pub fn refuse_clear_secrets(pc: &Value) -> M2mResult<()> {
    let Some((spec, inner)) = pc
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .and_then(|(root, inner)| Some((by_root(root)?, inner.as_object()?)))
    else {
        return Ok(());
    };
    spec.check_secrets(inner)
}

/// NP at create, O at update, set by the CSE at creation (multiplicity 1).
const fn attr_np_create(name: &'static str, kind: Kind) -> AttrSpec {
    crate::schema::attr(name, kind, Create::NotAllowed, true)
}

/// The specializations of TS-0001 Annex D clauses D.2 to D.11, and of TS-0022 (device
/// configuration) those this CSE hosts: their names and attributes as the reference CSE of the
/// conformance suite writes them (TS-0022 is not among the texts this project holds). The
/// security ones that reference CSE lacks (registration, authenticationProfile,
/// trustAnchorCred, MAFClientRegCfg, MEFClientRegCfg) carry the attributes TS-0003 names, under
/// short names of this project's (docs/CONFORMANCE.md).
pub static SPECS: &[MgmtSpec] = &[
    MgmtSpec {
        mgd: 1001,
        name: "firmware",
        root: "m2m:fwr",
        attributes: FIRMWARE,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[("uds", DefaultValue::Uninitialized)],
    },
    MgmtSpec {
        mgd: 1002,
        name: "software",
        root: "m2m:swr",
        attributes: SOFTWARE,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[("in", "un"), ("act", "dea")],
        defaults: &[
            ("in", DefaultValue::False),
            ("un", DefaultValue::False),
            ("ins", DefaultValue::Uninitialized),
        ],
    },
    MgmtSpec {
        mgd: 1003,
        name: "memory",
        root: "m2m:mem",
        attributes: MEMORY,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1004,
        name: "areaNwkInfo",
        root: "m2m:ani",
        attributes: AREA_NWK_INFO,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1005,
        name: "areaNwkDeviceInfo",
        root: "m2m:andi",
        attributes: AREA_NWK_DEVICE_INFO,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1006,
        name: "battery",
        root: "m2m:bat",
        attributes: BATTERY,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1007,
        name: "deviceInfo",
        root: "m2m:dvi",
        attributes: DEVICE_INFO,
        always_true: &[],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1008,
        name: "deviceCapability",
        root: "m2m:dvc",
        attributes: DEVICE_CAPABILITY,
        always_true: &["ena", "dis"],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[("ena", "dis")],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1009,
        name: "reboot",
        root: "m2m:rbo",
        attributes: REBOOT,
        always_true: &["rbo", "far"],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[("rbo", "far")],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1010,
        name: "eventLog",
        root: "m2m:evl",
        attributes: EVENT_LOG,
        always_true: &["lga", "lgo"],
        protected: &[],
        rule: None,
        secret_rule: None,
        exclusive: &[("lga", "lgo")],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1020,
        name: "registration",
        root: "dcfg:reg",
        attributes: REGISTRATION,
        protected: &[],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1021,
        name: "dataCollection",
        root: "dcfg:datc",
        attributes: DATA_COLLECTION,
        protected: &[],
        rule: Some(data_collection_rule),
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1022,
        name: "authenticationProfile",
        root: "dcfg:autp",
        attributes: AUTHENTICATION_PROFILE,
        protected: &["symkv"],
        rule: Some(authentication_profile_rule),
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1023,
        name: "myCertFileCred",
        root: "dcfg:nycfc",
        attributes: MY_CERT_FILE_CRED,
        protected: &[],
        rule: None,
        secret_rule: Some(my_cert_file_rule),
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1024,
        name: "trustAnchorCred",
        root: "dcfg:tac",
        attributes: TRUST_ANCHOR_CRED,
        protected: &[],
        rule: Some(trust_anchor_rule),
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1025,
        name: "MAFClientRegCfg",
        root: "dcfg:mafrc",
        attributes: CLIENT_REG_CFG,
        protected: &[],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1026,
        name: "MEFClientRegCfg",
        root: "dcfg:mefrc",
        attributes: CLIENT_REG_CFG,
        protected: &[],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1028,
        name: "wificlient",
        root: "dcfg:wific",
        attributes: WIFI_CLIENT,
        protected: &["wcrds/pwd", "wcrds/wepk", "wcrds/wpap"],
        rule: Some(wifi_client_rule),
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[
            ("ud", DefaultValue::False),
            ("uds", DefaultValue::Uninitialized),
        ],
    },
    MgmtSpec {
        mgd: 1029,
        name: "credentials",
        root: "dcfg:crds",
        attributes: CREDENTIALS,
        protected: &["crse", "crtk"],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1030,
        name: "SIM",
        root: "dcfg:sim",
        attributes: SIM,
        protected: &[],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1031,
        name: "mobileNetwork",
        root: "dcfg:mnwk",
        attributes: MOBILE_NETWORK,
        protected: &[],
        rule: None,
        secret_rule: None,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
];

/// The specialization of a mgmtDefinition.
pub fn by_mgd(mgd: u64) -> Option<&'static MgmtSpec> {
    SPECS.iter().find(|s| s.mgd == mgd)
}

/// The specialization represented under `root`.
pub fn by_root(root: &str) -> Option<&'static MgmtSpec> {
    SPECS.iter().find(|s| s.root == root)
}

/// mgmtDefinition values of TS-0004 table 6.3.4.2.22-1 (0 and 1001-1026) and TS-0022 (up to
/// 1031): the ones not in [`SPECS`] are specified but not hosted here.
fn is_specified(mgd: u64) -> bool {
    mgd == 0 || (1001..=1031).contains(&mgd)
}

/// The content of a CREATE or UPDATE of a `<mgmtObj>`: a single specialization object; an unknown
/// root is 4000.
pub fn inner_content(
    outer: &Map<String, Value>,
) -> M2mResult<(&'static MgmtSpec, &Map<String, Value>)> {
    match (outer.len(), outer.iter().next()) {
        (1, Some((k, Value::Object(inner)))) => match by_root(k) {
            Some(spec) => Ok((spec, inner)),
            None => Err(M2mError::bad_request(format!(
                "'{k}' is not a mgmtObj specialization this CSE hosts"
            ))),
        },
        _ => Err(M2mError::bad_request(
            "content must be a single mgmtObj specialization object such as 'm2m:fwr'",
        )),
    }
}

impl MgmtSpec {
    /// The specialization's own attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&'static AttrSpec> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// Checks a CREATE content: its mgmtDefinition is this specialization's; its own
    /// attributes (the common ones are the schema's) are known, of their kind, allowed at
    /// creation; the mandatory ones are there; no exclusive pair is set true.
    pub fn check_create(&self, content: &Map<String, Value>) -> M2mResult<()> {
        match content.get("mgd").and_then(Value::as_u64) {
            Some(mgd) if mgd == self.mgd => {}
            Some(mgd) if !is_specified(mgd) => {
                return Err(M2mError::bad_request(format!(
                    "attribute 'mgd': {mgd} is not a mgmtDefinition"
                )))
            }
            _ => {
                return Err(M2mError::bad_request(format!(
                    "attribute 'mgd': must be {} for '{}'",
                    self.mgd, self.root
                )))
            }
        }
        self.check_attributes(content, true)?;
        if let Some(missing) = self
            .attributes
            .iter()
            .find(|a| a.create == Create::Mandatory && !content.contains_key(a.name))
        {
            return Err(M2mError::bad_request(format!(
                "attribute '{}': mandatory attribute is missing",
                missing.name
            )));
        }
        self.check_exclusive(content)
    }

    /// Checks an UPDATE content's own attributes.
    pub fn check_update(&self, content: &Map<String, Value>) -> M2mResult<()> {
        self.check_attributes(content, false)?;
        self.check_exclusive(content)
    }

    /// Checks the resource as it would be stored (the CREATE content, or the stored attributes
    /// with an UPDATE applied): the rules between its attributes, and that every secret is
    /// protected for its target.
    pub fn check_state(&self, state: &Map<String, Value>) -> M2mResult<()> {
        self.check_secrets(state)?;
        self.rule.map_or(Ok(()), |rule| rule(state))
    }

    /// That no secret of `state` (a whole resource or an UPDATE's content) is in the clear.
    pub fn check_secrets(&self, state: &Map<String, Value>) -> M2mResult<()> {
        for path in self.protected {
            let value = match path.split_once('/') {
                Some((obj, member)) => state.get(obj).and_then(|o| o.get(member)),
                None => state.get(*path),
            };
            if let Some(v) = value.filter(|v| !v.is_null()) {
                if !v.as_str().is_some_and(is_jwe) {
                    return Err(protected_refusal(&path.replace('/', ".")));
                }
            }
        }
        self.secret_rule.map_or(Ok(()), |rule| rule(state))
    }

    fn check_attributes(&self, content: &Map<String, Value>, create: bool) -> M2mResult<()> {
        for (name, value) in content {
            if crate::schema::attribute(crate::ResourceType::MgmtObj, name).is_some() {
                continue;
            }
            let spec = self.attribute(name).ok_or_else(|| {
                M2mError::bad_request(format!(
                    "attribute '{name}': not an attribute of '{}'",
                    self.root
                ))
            })?;
            if create && spec.create == Create::NotAllowed {
                return Err(M2mError::bad_request(format!(
                    "attribute '{name}': may not be provided by the originator"
                )));
            }
            if !create && !spec.update {
                return Err(M2mError::bad_request(format!(
                    "attribute '{name}': cannot be updated"
                )));
            }
            if value.is_null() {
                if create || spec.create == Create::Mandatory {
                    return Err(M2mError::bad_request(format!(
                        "attribute '{name}': cannot be null"
                    )));
                }
                continue;
            }
            crate::schema::check_value(&spec.kind, value, name)?;
        }
        Ok(())
    }

    fn check_exclusive(&self, content: &Map<String, Value>) -> M2mResult<()> {
        let set = |k: &str| content.get(k) == Some(&Value::Bool(true));
        if let Some((a, b)) = self.exclusive.iter().find(|(a, b)| set(a) && set(b)) {
            return Err(M2mError::bad_request(format!(
                "attributes '{a}' and '{b}' cannot both be executed"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn roots_and_definitions_are_unique() {
        for (i, a) in SPECS.iter().enumerate() {
            for b in &SPECS[i + 1..] {
                assert_ne!(a.mgd, b.mgd);
                assert_ne!(a.root, b.root);
            }
            assert_eq!(by_root(a.root).map(|s| s.mgd), Some(a.mgd));
        }
    }

    #[test]
    fn protected_means_a_compact_jwe() {
        use base64::Engine;
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let h = |alg: &str, enc: &str| b(format!(r#"{{"alg":"{alg}","enc":"{enc}"}}"#).as_bytes());
        let (iv, ct, tag) = (b(b"twelve-bytes"), b(b"ct"), b(b"sixteen-byte-tag"));
        let direct = h("ECDH-ES", "A256GCM");
        let wrapped = h("A256KW", "A128CBC-HS256");
        assert!(is_jwe(&format!("{direct}..{iv}.{ct}.{tag}")));
        assert!(is_jwe(&format!(
            "{wrapped}.{}.{iv}.{ct}.{tag}",
            b(b"wrapped key")
        )));
        for bad in [
            "plain text".to_owned(),
            format!("{direct}.{iv}.{ct}.{tag}"),
            format!("{direct}..{iv}..{tag}"),
            format!("{direct}..{iv}.{ct}."),
            format!("{direct}...{ct}.{tag}"),
            format!("{direct}..{iv}.{ct}.{}", b(b"short")),
            format!("{direct}.{}.{iv}.{ct}.{tag}", b(b"key")),
            format!("{wrapped}..{iv}.{ct}.{tag}"),
            format!("{}..{iv}.{ct}.{tag}", h("none", "A256GCM")),
            format!("{}..{iv}.{ct}.{tag}", h("dir", "none")),
            format!("{direct}..a+b.{ct}.{tag}"),
            format!("{}..{iv}.{ct}.{tag}", b(b"{}")),
        ] {
            assert!(!is_jwe(&bad), "{bad}");
        }
        let good = format!("{direct}..{iv}.{ct}.{tag}");
        let crds = by_mgd(1029).unwrap();
        assert!(crds.check_state(&obj(json!({ "crse": "secret" }))).is_err());
        crds.check_state(&obj(json!({ "crse": good }))).unwrap();
        let wific = by_mgd(1028).unwrap();
        assert!(wific
            .check_state(&obj(json!({ "wcrds": { "enct": 8, "pwd": "secret" } })))
            .is_err());
    }

    #[test]
    fn specialization_checks() {
        let bat = by_mgd(1006).unwrap();
        bat.check_create(&obj(json!({ "mgd": 1006, "btl": 23, "bts": 5 })))
            .unwrap();
        for bad in [
            json!({ "mgd": 1006, "btl": 23, "bts": 99 }),
            json!({ "mgd": 1006, "btl": 101, "bts": 1 }),
            json!({ "mgd": 1006, "btl": 23 }),
            json!({ "mgd": 1003, "btl": 23, "bts": 1 }),
            json!({ "mgd": 1006, "btl": 23, "bts": 1, "mma": 1 }),
        ] {
            assert!(bat.check_create(&obj(bad.clone())).is_err(), "{bad}");
        }
        let swr = by_mgd(1002).unwrap();
        assert!(swr
            .check_create(&obj(
                json!({ "mgd": 1002, "vr": "1", "swn": "s", "url": "u", "in": true })
            ))
            .is_err());
        assert!(swr
            .check_update(&obj(json!({ "in": true, "un": true })))
            .is_err());
        swr.check_update(&obj(json!({ "in": true }))).unwrap();
        let dvi = by_mgd(1007).unwrap();
        assert!(
            dvi.check_update(&obj(json!({ "man": "x" }))).is_err(),
            "man is WO"
        );
    }
}
