//! Attribute schemas of the hosted resource types and the validation of CREATE and UPDATE request
//! content (TS-0004 clauses 7.3.3.3, 7.3.3.4 and 7.4.x; multiplicity and RW/RO/WO from TS-0001
//! clause 9.6; short names from TS-0004 clause 8.2.3 and, for members of complex types, 8.2.5).
//!
//! Each resource type has a table of [`AttrSpec`]s: the attribute short name, its value [`Kind`],
//! whether it is mandatory / optional / not allowed in a CREATE, and whether an UPDATE may change it.
//! An attribute that may be updated and is optional at creation may also be deleted by an UPDATE
//! that sets it to `null` (TS-0001 clause 8.1.2, Update); mandatory attributes may not.
//!
//! Every violation is a `BAD_REQUEST` naming the attribute, except the operations a type does not
//! support at all (CREATE or UPDATE of `<CSEBase>`, UPDATE of `<contentInstance>`), which are
//! `OPERATION_NOT_ALLOWED`.

use crate::error::{M2mError, M2mResult};
use crate::resource_type::{is_specified_type, ResourceType};
use crate::time;
use chrono::Utc;
use serde_json::{Map, Value};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Presence of an attribute in the Content of a CREATE request (TS-0004 clause 7.4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// M: must be present.
    Mandatory,
    /// O: may be present.
    Optional,
    /// NP: set by the Hosting CSE; present in a request means BAD_REQUEST.
    NotAllowed,
}

/// How the members of a structured value combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjRule {
    /// Only the `required` flags of the fields apply.
    Fields,
    /// At least one of the fields is present (e.g. m2m:operationMonitor).
    AtLeastOne,
    /// Exactly one of the fields is present (an xs:choice, e.g. m2m:locationRegion).
    ExactlyOne,
}

/// One member of a structured (complex data type) value.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// A complex data type (TS-0004 clause 6.3.5): its members; unknown members are refused.
#[derive(Debug)]
pub struct ObjSpec {
    pub fields: &'static [Field],
    pub rule: ObjRule,
}

/// The value type of an attribute or member, as it appears in the JSON serialization.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Any JSON value (e.g. `con`, xs:anyType).
    Any,
    /// Any JSON object whose inner structure is not checked here (e.g. `esi`, `conr`).
    AnyObject,
    /// xs:string.
    Str,
    /// xs:token: a string without tab, line feed or carriage return, leading or trailing
    /// spaces, or two spaces in a row (the labels of m2m:labels, TS-0004 table 6.3.3-1).
    Token,
    /// m2m:resourceName (TS-0004 clause 6.2.3): `(ALPHA / DIGIT) *(ALPHA / DIGIT / "-" / "." / "_")`,
    /// and not one of the names reserved for virtual children (`la`, `ol`, `fopt`, `pcu`, `ntsr`).
    ResourceName,
    /// App-ID: starts with `r`, `R` or `N` (TS-0004 clause 7.4.5.2.1).
    AppId,
    /// xs:nonNegativeInteger.
    NonNegInt,
    /// xs:integer (a JSON integer of either sign).
    Integer,
    /// xs:float / xs:double (any JSON number).
    Number,
    /// xs:positiveInteger.
    PosInt,
    /// An integer in the inclusive range.
    Range(u64, u64),
    /// An integer enumeration (TS-0004 clause 6.3.4).
    Enum(&'static [u64]),
    /// A string enumeration.
    StrEnum(&'static [&'static str]),
    /// xs:boolean.
    Bool,
    /// m2m:timestamp (`YYYYMMDDTHHMMSS[,f]`).
    Timestamp,
    /// m2m:timestamp that is not in the past (expirationTime, TS-0004 clauses 7.3.3.3 and 7.3.3.4).
    FutureTimestamp,
    /// xs:duration: an ISO 8601 duration string (`PT10S`) or a non-negative integer.
    Duration,
    /// xs:anyURI / m2m:ID: a non-empty string without whitespace.
    Uri,
    /// m2m:contentInfo: `type/subtype:encoding[:security]` (TS-0004 table 6.3.3-1).
    ContentInfo,
    /// An element of m2m:supportedReleaseVersions (`1`, `2`, `2a`, `3`, ...).
    ReleaseVersion,
    /// m2m:resourceType code.
    ResourceTypeCode,
    /// m2m:memberType: 0 (mixed) or a resource type code (TS-0004 clause 6.3.4.2.11).
    MemberType,
    /// m2m:eventCat: 2..=4 or a user category 100..=999 (TS-0004 table 6.3.3-1).
    EventCat,
    /// m2m:countryCode: two ASCII letters.
    CountryCode,
    /// m2m:ipv4 with optional CIDR suffix.
    Ipv4,
    /// m2m:ipv6 with optional prefix length.
    Ipv6,
    /// circRegion: latitude, longitude, radius (TS-0004 clause 6.3.5.28).
    CircRegion,
    /// A JSON array of the inner kind (possibly empty).
    List(&'static Kind),
    /// A JSON array of the inner kind with at least one element.
    NonEmptyList(&'static Kind),
    /// A structured value.
    Object(&'static ObjSpec),
    /// The `creator` attribute: in a CREATE only `null` ("set the creator"), TS-0004 clause 7.3.3.3.
    CreatorNull,
    /// m2m:geoCoordinates (Release 4): `{typ, crd}`, see [`crate::geo_query`].
    GeoCoordinates,
}

/// One attribute of a resource type.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub create: Create,
    /// Whether an UPDATE may set it (and, when not mandatory at creation, delete it with `null`).
    pub update: bool,
}

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

pub(crate) const fn attr(name: &'static str, kind: Kind, create: Create, update: bool) -> AttrSpec {
    AttrSpec {
        name,
        kind,
        create,
        update,
    }
}
/// O at create, O at update (RW).
pub(crate) const fn rw(name: &'static str, kind: Kind) -> AttrSpec {
    attr(name, kind, Create::Optional, true)
}
/// M at create, O at update (RW, multiplicity 1).
pub(crate) const fn m_rw(name: &'static str, kind: Kind) -> AttrSpec {
    attr(name, kind, Create::Mandatory, true)
}
/// O at create, NP at update (WO).
pub(crate) const fn wo(name: &'static str, kind: Kind) -> AttrSpec {
    attr(name, kind, Create::Optional, false)
}
/// M at create, NP at update (WO, multiplicity 1).
pub(crate) const fn m_wo(name: &'static str, kind: Kind) -> AttrSpec {
    attr(name, kind, Create::Mandatory, false)
}
/// NP at create and update (RO).
pub(crate) const fn ro(name: &'static str) -> AttrSpec {
    attr(name, Kind::Any, Create::NotAllowed, false)
}
pub(crate) const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}
pub(crate) const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

pub(crate) const STR_LIST: Kind = Kind::List(&Kind::Str);
pub(crate) const URI_LIST: Kind = Kind::List(&Kind::Uri);
/// m2m:serializations: the Release 3 names (TS-0004 table 6.3.3-1) or the media types of
/// Release 4, which this CSE's own CSEBase uses.
const SERIALIZATIONS: Kind = Kind::List(&Kind::StrEnum(&[
    "xml",
    "json",
    "cbor",
    "application/xml",
    "application/json",
    "application/cbor",
]));
const RELEASE_VERSIONS: Kind = Kind::NonEmptyList(&Kind::ReleaseVersion);
/// m2m:accessControlOperations: a sum of 1, 2, 4, 8, 16, 32 (TS-0004 clause 6.3.4.2.29).
const ACCESS_CONTROL_OPERATIONS: Kind = Kind::Range(1, 63);
/// m2m:triggerRecipientID: a port number.
const TRIGGER_RECIPIENT_ID: Kind = Kind::Range(0, 65535);

// Universal and common attributes (TS-0001 clause 9.6.1.3).
pub(crate) const RN: AttrSpec = wo("rn", Kind::ResourceName);
pub(crate) const TY: AttrSpec = ro("ty");
pub(crate) const RI: AttrSpec = ro("ri");
pub(crate) const PI: AttrSpec = ro("pi");
pub(crate) const CT: AttrSpec = ro("ct");
pub(crate) const LT: AttrSpec = ro("lt");
const ST: AttrSpec = ro("st");
pub(crate) const ET: AttrSpec = rw("et", Kind::FutureTimestamp);
pub(crate) const LBL: AttrSpec = rw("lbl", Kind::List(&Kind::Token));
pub(crate) const ACPI: AttrSpec = rw("acpi", URI_LIST);
/// custodian (Release 4): the AE or CSE that holds the creator's default rights instead of it.
pub(crate) const CSTN: AttrSpec = rw("cstn", Kind::Uri);
pub(crate) const AT: AttrSpec = rw("at", URI_LIST);
pub(crate) const AA: AttrSpec = rw("aa", STR_LIST);
pub(crate) const DACI: AttrSpec = rw("daci", URI_LIST);
const CR: AttrSpec = wo("cr", Kind::CreatorNull);
/// location (Release 4), the geometry a geo-query matches.
const LOC: AttrSpec = rw("loc", Kind::GeoCoordinates);
const LOC_WO: AttrSpec = wo("loc", Kind::GeoCoordinates);

// ---------------------------------------------------------------------------------------------
// Complex data types
// ---------------------------------------------------------------------------------------------

/// accessControlContexts/accessControlIpAddresses (TS-0004 clause 6.3.5.27).
static ACIP: ObjSpec = ObjSpec {
    fields: &[
        opt("ipv4", Kind::List(&Kind::Ipv4)),
        opt("ipv6", Kind::List(&Kind::Ipv6)),
    ],
    rule: ObjRule::AtLeastOne,
};
/// m2m:locationRegion (TS-0004 clause 6.3.5.28), an xs:choice.
static ACLR: ObjSpec = ObjSpec {
    fields: &[
        opt("accc", Kind::NonEmptyList(&Kind::CountryCode)),
        opt("accr", Kind::CircRegion),
    ],
    rule: ObjRule::ExactlyOne,
};
/// accessControlContexts (TS-0004 clause 6.3.5.27).
static ACCO: ObjSpec = ObjSpec {
    fields: &[
        opt("actw", STR_LIST),
        opt("acip", Kind::Object(&ACIP)),
        opt("aclr", Kind::Object(&ACLR)),
    ],
    rule: ObjRule::Fields,
};
/// accessControlObjectDetails (TS-0004 clause 6.3.5.27).
static ACOD: ObjSpec = ObjSpec {
    fields: &[
        opt("ty", Kind::ResourceTypeCode),
        opt("spty", Kind::Str),
        req("chty", Kind::List(&Kind::ResourceTypeCode)),
    ],
    rule: ObjRule::Fields,
};
/// m2m:accessControlRule (TS-0004 clause 6.3.5.27).
static ACR: ObjSpec = ObjSpec {
    fields: &[
        req("acor", URI_LIST),
        req("acop", ACCESS_CONTROL_OPERATIONS),
        opt("acco", Kind::List(&Kind::Object(&ACCO))),
        opt("acaf", Kind::Bool),
        opt("acod", Kind::List(&Kind::Object(&ACOD))),
        // accessControlAttributes (Release 4): the attributes the rule covers.
        opt("aca", Kind::List(&Kind::Str)),
    ],
    rule: ObjRule::Fields,
};
/// m2m:setOfAcrs (TS-0004 clause 6.3.5.26) for `pv`: zero or more rules.
static SET_OF_ACRS: ObjSpec = ObjSpec {
    fields: &[opt("acr", Kind::List(&Kind::Object(&ACR)))],
    rule: ObjRule::Fields,
};
/// m2m:setOfAcrs for `pvs`: at least one rule (TS-0004 table 7.4.2.1-3, clauses 7.4.2.2.1 and 7.4.2.2.3).
static SELF_PRIVILEGES: ObjSpec = ObjSpec {
    fields: &[req("acr", Kind::NonEmptyList(&Kind::Object(&ACR)))],
    rule: ObjRule::Fields,
};
/// m2m:operationMonitor (TS-0004 clause 6.3.5.57). The originator is `org`: table 8.2.5 marks
/// its short name as one assigned already, and the one assigned to "originator" is `org`
/// (table 8.2.3); its `or*` is read as that. `or`, which this CSE took before, is still read.
static OPERATION_MONITOR: ObjSpec = ObjSpec {
    fields: &[
        opt("ops", ACCESS_CONTROL_OPERATIONS),
        opt("org", Kind::Uri),
        opt("or", Kind::Uri),
    ],
    rule: ObjRule::AtLeastOne,
};
/// m2m:missingData (TS-0004 clause 6.3.5.40).
static MISSING_DATA: ObjSpec = ObjSpec {
    fields: &[req("num", Kind::PosInt), req("dur", Kind::Duration)],
    rule: ObjRule::Fields,
};
/// m2m:eventNotificationCriteria (TS-0004 clause 6.3.5.7).
static EVENT_NOTIFICATION_CRITERIA: ObjSpec = ObjSpec {
    fields: &[
        opt("crb", Kind::Timestamp),
        opt("cra", Kind::Timestamp),
        opt("ms", Kind::Timestamp),
        opt("us", Kind::Timestamp),
        opt("sts", Kind::PosInt),
        opt("stb", Kind::NonNegInt),
        opt("exb", Kind::Timestamp),
        opt("exa", Kind::Timestamp),
        opt("sza", Kind::NonNegInt),
        opt("szb", Kind::PosInt),
        opt("om", Kind::List(&Kind::Object(&OPERATION_MONITOR))),
        opt("atr", STR_LIST),
        // m2m:notificationEventType, TS-0004 clause 6.3.4.2.19.
        opt("net", Kind::List(&Kind::Range(1, 8))),
        opt("chty", Kind::List(&Kind::ResourceTypeCode)),
        opt("md", Kind::Object(&MISSING_DATA)),
        opt("fo", Kind::Enum(&[1, 2])),
    ],
    rule: ObjRule::Fields,
};
/// m2m:eventNotificationCriteriaSet: one criteria for every regular target, or one per target.
static EVENT_NOTIFICATION_CRITERIA_SET: ObjSpec = ObjSpec {
    fields: &[req(
        "enc",
        Kind::NonEmptyList(&Kind::Object(&EVENT_NOTIFICATION_CRITERIA)),
    )],
    rule: ObjRule::Fields,
};
/// m2m:evalCriteria (Release 4): the attribute `sbjt` compared by `optr` (1 =, 2 !=, 3 >, 4 <,
/// 5 >=, 6 <=) with `thld`.
static EVAL_CRITERIA: ObjSpec = ObjSpec {
    fields: &[
        req("optr", Kind::Range(1, 6)),
        req("sbjt", Kind::Str),
        req("thld", Kind::Any),
    ],
    rule: ObjRule::Fields,
};
/// m2m:batchNotify (TS-0004 clause 6.3.5.6).
static BATCH_NOTIFY: ObjSpec = ObjSpec {
    fields: &[opt("num", Kind::NonNegInt), opt("dur", Kind::Duration)],
    rule: ObjRule::Fields,
};
/// m2m:rateLimit (TS-0004 clause 6.3.5.31).
static RATE_LIMIT: ObjSpec = ObjSpec {
    fields: &[req("mnn", Kind::NonNegInt), req("tww", Kind::Duration)],
    rule: ObjRule::Fields,
};

// ---------------------------------------------------------------------------------------------
// Resource type tables
// ---------------------------------------------------------------------------------------------

/// `<accessControlPolicy>`: TS-0004 clause 7.4.2 (tables 7.4.2.1-2 and -3), TS-0001 clause 9.6.2.
static ACP_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    LBL,
    AT,
    AA,
    m_rw("pv", Kind::Object(&SET_OF_ACRS)),
    m_rw("pvs", Kind::Object(&SELF_PRIVILEGES)),
    rw("adri", URI_LIST),
    rw("apri", URI_LIST),
    rw("airi", URI_LIST),
];

/// `<AE>`: TS-0004 clause 7.4.5 (tables 7.4.5.1-2 and -3), TS-0001 clause 9.6.5.
/// `<AEAnnc>`: TS-0004 clause 7.4.5 (the announced attributes of table 7.4.5.1-3 this CSE keeps):
/// `lnk` the `<AE>` on the announcing CSE (or `INACTIVE` once it deregistered), `api` its App-ID,
/// `lbl` with `Credential-ID:<its Credential-ID>` (TS-0001 clause 10.2.2.2).
static AEANNC_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    LBL,
    m_rw("lnk", Kind::Uri),
    rw("api", Kind::AppId),
];

static AE_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    rw("apn", Kind::Str),
    m_wo("api", Kind::AppId),
    ro("aei"),
    rw("poa", URI_LIST),
    rw("or", Kind::Uri),
    rw("nl", Kind::Uri),
    m_rw("rr", Kind::Bool),
    rw("csz", SERIALIZATIONS),
    rw("esi", Kind::AnyObject),
    rw("mei", Kind::Str),
    m_rw("srv", RELEASE_VERSIONS),
    // m2m:AERegistrationStatus, TS-0004 clause 6.3.4.2.57.
    rw("regs", Kind::Enum(&[1, 2])),
    rw("trps", Kind::Bool),
    rw("scp", STR_LIST),
    rw("tren", Kind::Bool),
    rw("ape", Kind::List(&Kind::AnyObject)),
    rw("tri", TRIGGER_RECIPIENT_ID),
    rw("trn", Kind::NonNegInt),
    LOC,
];

/// `<container>`: TS-0004 clause 7.4.6 (tables 7.4.6.1-2 and -3), TS-0001 clause 9.6.6.
static CNT_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ST,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    CR,
    rw("mni", Kind::NonNegInt),
    rw("mbs", Kind::NonNegInt),
    rw("mia", Kind::NonNegInt),
    ro("cni"),
    ro("cbs"),
    ro("li"),
    rw("or", Kind::Uri),
    rw("disr", Kind::Bool),
    LOC,
];

/// `<contentInstance>`: TS-0004 clause 7.4.7 (tables 7.4.7.1-2 and -3), TS-0001 clause 9.6.7.
/// Never updated (clause 7.4.7.2.3), hence every attribute is WO or RO.
static CIN_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ST,
    wo("et", Kind::FutureTimestamp),
    wo("lbl", Kind::List(&Kind::Token)),
    wo("at", URI_LIST),
    wo("aa", STR_LIST),
    CR,
    wo("cnf", Kind::ContentInfo),
    ro("cs"),
    wo("conr", Kind::AnyObject),
    wo("or", Kind::Uri),
    m_wo("con", Kind::Any),
    LOC_WO,
    // dataGenerationTime and deletionCnt (Release 4).
    wo("dgt", Kind::Timestamp),
    wo("dcnt", Kind::PosInt),
];

/// `<CSEBase>`: TS-0004 clause 7.4.3 (tables 7.4.3.1-2 and -3), TS-0001 clause 9.6.3.
/// Neither created nor updated through the API: every attribute is RO.
static CB_ATTRS: &[AttrSpec] = &[
    ro("rn"),
    TY,
    RI,
    PI,
    CT,
    LT,
    ro("lbl"),
    ro("acpi"),
    ro("daci"),
    ro("cst"),
    ro("csi"),
    ro("srt"),
    ro("poa"),
    ro("nl"),
    ro("ncp"),
    ro("csz"),
    ro("esi"),
    ro("srv"),
    // currentTime (Release 4), sampled at each RETRIEVE.
    ro("ctm"),
];

/// `<group>`: TS-0004 clause 7.4.13 (tables 7.4.13.1-2 and -3), TS-0001 clause 9.6.13.
static GRP_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    CR,
    wo("mt", Kind::MemberType),
    wo("spty", Kind::Str),
    ro("cnm"),
    m_rw("mnm", Kind::PosInt),
    m_rw("mid", URI_LIST),
    rw("macp", URI_LIST),
    ro("mtv"),
    // m2m:consistencyStrategy, TS-0004 clause 6.3.4.2.12.
    wo("csy", Kind::Enum(&[1, 2, 3])),
    rw("gn", Kind::Str),
    ro("ssi"),
    rw("nar", Kind::Object(&BATCH_NOTIFY)),
];

/// `<remoteCSE>`: TS-0004 clause 7.4.4 (tables 7.4.4.1-2 and -3), TS-0001 clause 9.6.4.
static CSR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    // m2m:cseTypeID, TS-0004 clause 6.3.4.2.2.
    wo("cst", Kind::Enum(&[1, 2, 3])),
    rw("poa", URI_LIST),
    m_wo("cb", Kind::Uri),
    wo("csi", Kind::Uri),
    rw("mei", Kind::Str),
    rw("tri", TRIGGER_RECIPIENT_ID),
    m_rw("rr", Kind::Bool),
    rw("nl", Kind::Uri),
    rw("trn", Kind::NonNegInt),
    rw("csz", SERIALIZATIONS),
    rw("esi", Kind::AnyObject),
    rw("dcse", URI_LIST),
    m_rw("srv", RELEASE_VERSIONS),
    // m2m:multicastCapability, TS-0004 clause 6.3.4.2.58.
    rw("mtcc", Kind::Enum(&[1, 2])),
    rw("egid", Kind::Str),
    rw("tren", Kind::Bool),
    rw("ape", Kind::List(&Kind::AnyObject)),
    LOC,
];

/// `<subscription>`: TS-0004 clause 7.4.8 (tables 7.4.8.1-2 and -3), TS-0001 clause 9.6.8.
static SUB_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    CR,
    rw("enc", Kind::Object(&EVENT_NOTIFICATION_CRITERIA)),
    rw("exc", Kind::PosInt),
    m_rw("nu", Kind::NonEmptyList(&Kind::Uri)),
    rw("gpi", Kind::Uri),
    rw("nfu", Kind::Uri),
    rw("bn", Kind::Object(&BATCH_NOTIFY)),
    rw("rl", Kind::Object(&RATE_LIMIT)),
    wo("psn", Kind::PosInt),
    // m2m:pendingNotification, TS-0004 clause 6.3.4.2.17.
    rw("pn", Kind::Enum(&[1, 2])),
    rw("nsp", Kind::PosInt),
    rw("ln", Kind::Bool),
    // m2m:notificationContentType, TS-0004 clause 6.3.4.2.18; which ones fit which
    // notificationEventType is the subscription's own check (TS-0001 table 9.6.8-4).
    rw("nct", Kind::Enum(&[1, 2, 3, 4, 5])),
    rw("nec", Kind::EventCat),
    wo("su", Kind::Uri),
    rw("acrs", URI_LIST),
    // notificationStatsEnable / notificationStatsInfo (Release 4, TS-0004 V4 clause 7.4.8).
    rw("nse", Kind::Bool),
    ro("nsi"),
    // Release 4: a notification names the originator of the triggering request as its creator.
    rw("eeno", Kind::Bool),
];

/// `<serviceSubscribedAppRule>`: TS-0004 clause 7.4.29 (tables 7.4.29.1-2 and -3), TS-0001
/// clause 9.6.29: which (Credential-ID, App-ID, AE-ID-Stem) combinations may register.
static ASAR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    rw("apci", STR_LIST),
    rw("aai", STR_LIST),
    rw("aae", STR_LIST),
    rw("ari", STR_LIST),
];

/// m2m:ipAddress (TS-0004 clause 6.3.5.60): exactly one of `ip4`, `ip6`.
static IP_ADDRESS: ObjSpec = ObjSpec {
    fields: &[opt("ip4", Kind::Str), opt("ip6", Kind::Str)],
    rule: ObjRule::ExactlyOne,
};

/// `<localMulticastGroup>`: TS-0004 clause 7.4.55 (tables 7.4.55.1-2 and -3), TS-0001 clause 9.6.44.
/// `gck` and `spk` are this project's: the group key sealed for the member hosting CSE (a compact
/// JWE only its own E2E key opens) and the group hosting CSE's public key (a P-256 JWK) that
/// verifies the fan-outs (docs/SECURITY.md, "Multicast group fan-out").
static LMG_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    rw("egid", Kind::Str),
    m_rw("mad", Kind::Object(&IP_ADDRESS)),
    m_wo("mgft", Kind::Uri),
    m_rw("mli", Kind::NonEmptyList(&Kind::Uri)),
    rw("rstt", Kind::Uri),
    rw("rstw", Kind::Duration),
    m_rw("gck", Kind::Str),
    m_rw("spk", Kind::AnyObject),
];

/// `<crossResourceSubscription>`: TS-0004 clause 7.4.58 (tables 7.4.58.1-2 and -3), TS-0001
/// clause 9.6.58; `eem` (eventEvaluationMode) and the notification statistics are Release 4.
static CRS_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    CR,
    wo("rrat", URI_LIST),
    wo("srat", URI_LIST),
    ro("rrats"),
    // m2m:timeWindowType, TS-0004 clause 6.3.4.2.61: periodic, sliding.
    m_rw("twt", Kind::Enum(&[1, 2])),
    m_rw("tws", Kind::Duration),
    wo("encs", Kind::Object(&EVENT_NOTIFICATION_CRITERIA_SET)),
    wo("nec", Kind::EventCat),
    rw("exc", Kind::PosInt),
    m_rw("nu", Kind::NonEmptyList(&Kind::Uri)),
    wo("su", Kind::Uri),
    rw("eem", Kind::Enum(&[1, 2, 3, 4, 5])),
    rw("nse", Kind::Bool),
    ro("nsi"),
];

/// `<action>` (Release 4): what a CSE does, as the action's creator, when an attribute of its
/// subject resource meets the criteria (and its dependencies are met).
static ACTR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    CR,
    rw("apy", Kind::NonNegInt),
    rw("sri", Kind::Uri),
    m_rw("evc", Kind::Object(&EVAL_CRITERIA)),
    // m2m:evalMode: 0 off, 1 once, 2 periodic, 3 continuous.
    m_rw("evm", Kind::Enum(&[0, 1, 2, 3])),
    rw("ecp", Kind::Any),
    rw("dep", URI_LIST),
    m_rw("orc", Kind::Uri),
    m_rw("apv", Kind::AnyObject),
    ro("air"),
];

/// `<dependency>` (Release 4): a condition on another resource an `<action>` waits for.
static DEPR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    CR,
    m_rw("sfc", Kind::Bool),
    m_rw("evc", Kind::Object(&EVAL_CRITERIA)),
    m_rw("rri", Kind::Uri),
];

/// `<flexContainer>`: TS-0004 clause 7.4.37 (tables 7.4.37.1-1 and -2), TS-0001 clause 9.6.35;
/// its custom attributes are those of its specialization (`specialization`), checked apart.
static FCNT_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ST,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    CR,
    m_wo("cnd", Kind::Uri),
    rw("or", Kind::Uri),
    ro("cs"),
    rw("nl", Kind::Uri),
    LOC,
    // Instances (Release 4): flexContainerInstanceEnable and the container-like limits.
    rw("fcied", Kind::Bool),
    rw("mni", Kind::NonNegInt),
    rw("mbs", Kind::NonNegInt),
    rw("mia", Kind::NonNegInt),
    ro("cni"),
    ro("cbs"),
];

/// `<flexContainerInstance>` (Release 4): the CSE's record of a `<flexContainer>` at one
/// stateTag, never created or updated by a request; its custom attributes are its
/// specialization's.
static FCI_ATTRS: &[AttrSpec] = &[
    ro("rn"),
    TY,
    RI,
    PI,
    CT,
    LT,
    ST,
    ro("et"),
    ro("lbl"),
    ro("loc"),
    ro("at"),
    ro("cnd"),
    ro("cs"),
    ro("org"),
];

/// `<request>`: TS-0004 clauses 7.4.12, 7.3.2.2; made by the CSE for a non-blocking request,
/// never by a request (every attribute the CSE's but the access control ones).
static REQ_ATTRS: &[AttrSpec] = &[
    ro("rn"),
    TY,
    RI,
    PI,
    CT,
    LT,
    ro("et"),
    ACPI,
    CSTN,
    ro("lbl"),
    DACI,
    ro("op"),
    ro("tg"),
    ro("org"),
    ro("rid"),
    ro("mi"),
    ro("pc"),
    ro("rs"),
    ro("ors"),
];

/// `<timeSeries>`: TS-0004 clause 7.4.38 (tables 7.4.38.1-2 and -3), TS-0001 clause 9.6.36.
/// periodicInterval, periodicIntervalDelta and missingDataDetectTimer are in milliseconds.
static TS_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    CR,
    rw("mni", Kind::NonNegInt),
    rw("mbs", Kind::NonNegInt),
    rw("mia", Kind::NonNegInt),
    ro("cni"),
    ro("cbs"),
    rw("pei", Kind::PosInt),
    rw("peid", Kind::NonNegInt),
    rw("mdd", Kind::Bool),
    rw("mdn", Kind::PosInt),
    ro("mdlt"),
    ro("mdc"),
    rw("mdt", Kind::PosInt),
    rw("or", Kind::Uri),
    wo("cnf", Kind::ContentInfo),
    LOC,
];

/// `<timeSeriesInstance>`: TS-0004 clause 7.4.39 (tables 7.4.39.1-2 and -3), TS-0001 clause
/// 9.6.37. Never updated. `dgt` is an m2m:absRelTimestamp, checked by the type's module.
static TSI_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    wo("et", Kind::FutureTimestamp),
    wo("lbl", Kind::List(&Kind::Token)),
    wo("at", URI_LIST),
    wo("aa", STR_LIST),
    m_wo("dgt", Kind::Any),
    m_wo("con", Kind::Any),
    wo("snr", Kind::NonNegInt),
    ro("cs"),
    LOC_WO,
];

/// `<pollingChannel>`: TS-0004 clause 7.4.21 (table 7.4.21.1-2), TS-0001 clause 9.6.21: the
/// universal and common attributes and Release 4's requestAggregation `rqag`; its `pcu` child is
/// virtual.
static PCH_ATTRS: &[AttrSpec] = &[RN, TY, RI, PI, CT, LT, ET, LBL, rw("rqag", Kind::Bool)];

/// `<node>`: TS-0004 clause 7.4.18 (table 7.4.18.1-3), TS-0001 clause 9.6.18. `rms` and `nid`
/// are the CSE's (RO); `hael` is kept by the CSE as AEs name the node in their `nl`.
static NOD_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    m_rw("ni", Kind::Str),
    rw("hcl", Kind::Uri),
    rw("hael", Kind::NonEmptyList(&Kind::Uri)),
    rw("hsl", Kind::NonEmptyList(&Kind::Uri)),
    rw("mgca", Kind::Str),
    ro("rms"),
    ro("nid"),
];

/// `<mgmtObj>`: the attributes every specialization has (TS-0004 table 7.4.15.1-2); the
/// specialization's own are in m2m-core `mgmt_obj`. Only the specializations of
/// `mgmt_obj::SPECS` are hosted (mgd 0, self-defined, is not).
static MGO_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    m_wo("mgd", Kind::NonNegInt),
    wo("obis", URI_LIST),
    wo("obps", URI_LIST),
    rw("dc", Kind::Str),
];

/// m2m:scheduleEntries (TS-0004 clause 6.3.5.11): `{"sce": [...]}`, at least one entry.
pub(crate) static SCHEDULE_ENTRIES: ObjSpec = ObjSpec {
    fields: &[req("sce", Kind::NonEmptyList(&Kind::Str))],
    rule: ObjRule::Fields,
};

/// `<locationPolicy>`: TS-0004 clause 7.4.10 (table 7.4.10.1-3), TS-0001 clause 9.6.10.
/// `gta` (xs:anyType) is a GeoJSON polygon, checked by the type's module.
static LCP_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    // m2m:locationSource: 1 network-based, 2 device-based, 3 sharing-based.
    m_wo("los", Kind::Enum(&[1, 2, 3])),
    // m2m:locationInformationType: 1 position fix, 2 geofence event.
    rw("lit", Kind::Enum(&[1, 2])),
    rw("lou", Kind::List(&Kind::Duration)),
    wo("lot", Kind::Str),
    wo("lor", Kind::Uri),
    ro("loi"),
    wo("lon", Kind::ResourceName),
    ro("lost"),
    rw("gta", Kind::AnyObject),
    // m2m:geofenceEventCriteria: 1 entering, 2 leaving, 3 inside, 4 outside.
    rw("gec", Kind::Enum(&[1, 2, 3, 4])),
    wo("aid", Kind::Str),
    rw("rlkl", Kind::Bool),
    // m2m:locationUpdateEventCriteria: 0 location change.
    rw("luec", Kind::Enum(&[0])),
];

/// `<dynamicAuthorizationConsultation>`: TS-0004 clause 7.4.36 (table 7.4.36.1-3), TS-0001
/// clause 9.6.40: whether consultation is enabled, the Dynamic Authorization Servers to consult
/// (at least one), the lifetime to propose for the privileges they grant.
static DAC_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    LBL,
    DACI,
    m_rw("dae", Kind::Bool),
    m_rw("dap", Kind::NonEmptyList(&Kind::Uri)),
    rw("dal", Kind::Timestamp),
];

/// `<role>`: TS-0004 clause 7.4.40 (table 7.4.40.1-3), TS-0001 clause 9.6.38: a role assigned to
/// its holder by its issuer for a time; only the link to its token may change.
static ROLE_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    LBL,
    DACI,
    m_wo("rlid", Kind::Str),
    m_wo("tkis", Kind::Uri),
    m_wo("tkhd", Kind::Uri),
    m_wo("tknb", Kind::Timestamp),
    m_wo("tkna", Kind::Timestamp),
    wo("rlnm", Kind::Str),
    rw("rltl", Kind::Uri),
];

/// `<token>`: TS-0004 clause 7.4.41 (table 7.4.41.1-3), TS-0001 clause 9.6.39: a token (its JWT in
/// `tkob`) and its claims, which the CSE reads from the verified token.
static TOKEN_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    LBL,
    DACI,
    m_wo("tkid", Kind::Str),
    m_wo("tkob", Kind::Str),
    wo("tkvr", Kind::Str),
    wo("tkis", Kind::Uri),
    wo("tkhd", Kind::Uri),
    wo("tknb", Kind::Timestamp),
    wo("tkna", Kind::Timestamp),
    wo("tknm", Kind::Str),
    wo("tkau", Kind::List(&Kind::Uri)),
    wo("tkps", Kind::AnyObject),
    wo("tkex", Kind::Str),
];

/// `<timeSyncBeacon>` (Release 4): the beacon criteria and where beacons go; the rules between
/// them are the type's module's.
static TSB_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    // beaconCriteria: 1 periodic, 2 loss of synchronization.
    m_rw("bcnc", Kind::Enum(&[1, 2])),
    rw("bcni", Kind::Duration),
    rw("bcnt", Kind::Duration),
    wo("bcnr", Kind::Uri),
    m_rw("bcnu", Kind::NonEmptyList(&Kind::Uri)),
];

/// `<schedule>`: TS-0004 clause 7.4.9 (table 7.4.9.1-3), TS-0001 clause 9.6.9. The entries'
/// format is checked by the type's module.
static SCH_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    m_rw("se", Kind::Object(&SCHEDULE_ENTRIES)),
    rw("nco", Kind::Bool),
];

/// `<semanticDescriptor>`: TS-0004 clause 7.4.34 (table 7.4.34.1-3), TS-0001 clause 9.6.30.
/// `dsp` is xs:base64Binary (checked, with its syntax, by the type's module); `soe` is never
/// stored; `svd` is the CSE's.
static SMD_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    AT,
    AA,
    DACI,
    CR,
    m_rw("dcrp", Kind::Enum(&[1, 2, 3, 4, 5, 6, 7])),
    attr("soe", Kind::Str, Create::NotAllowed, true),
    m_rw("dsp", Kind::Str),
    rw("or", Kind::Uri),
    rw("rels", URI_LIST),
    ro("svd"),
    rw("vlde", Kind::Bool),
];

/// `<notificationTargetMgmtPolicyRef>`: TS-0004 clause 7.4.30 (table 7.4.30.1-3), TS-0001 clause
/// 9.6.31: which policy applies to which notification targets of the parent subscription.
static NTPR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    m_rw("ntu", Kind::NonEmptyList(&Kind::Uri)),
    rw("npi", Kind::Uri),
];

/// `<notificationTargetPolicy>`: TS-0004 clause 7.4.31 (table 7.4.31.1-3), TS-0001 clause 9.6.32.
/// `acn` and `plbl` have multiplicity 1 (TS-0001 table 9.6.32-2): a CREATE gives them.
static NTP_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    CR,
    // action is RW (TS-0001 table 9.6.32-2): the creator may change its decision.
    m_rw("acn", Kind::Enum(&[1, 2, 3, 4])),
    m_rw("plbl", Kind::Str),
    rw("rrs", Kind::Enum(&[1, 2])),
];

/// m2m:deletionContexts (TS-0004 clause 6.3.5.37): time-of-day schedules and regions.
static DELETION_CONTEXTS: ObjSpec = ObjSpec {
    fields: &[
        opt("tod", STR_LIST),
        opt("lr", Kind::List(&Kind::Object(&ACLR))),
    ],
    rule: ObjRule::Fields,
};

/// `<policyDeletionRules>`: TS-0004 clause 7.4.32 (table 7.4.32.1-3), TS-0001 clause 9.6.33.
static PDR_ATTRS: &[AttrSpec] = &[
    RN,
    TY,
    RI,
    PI,
    CT,
    LT,
    ET,
    ACPI,
    CSTN,
    LBL,
    DACI,
    wo("dr", Kind::Object(&DELETION_CONTEXTS)),
    rw("drr", Kind::Enum(&[1, 2])),
];

/// The attribute table of a resource type.
pub fn attributes(ty: ResourceType) -> &'static [AttrSpec] {
    match ty {
        ResourceType::AccessControlPolicy => ACP_ATTRS,
        ResourceType::Action => ACTR_ATTRS,
        ResourceType::Dependency => DEPR_ATTRS,
        ResourceType::Ae => AE_ATTRS,
        ResourceType::Container => CNT_ATTRS,
        ResourceType::ContentInstance => CIN_ATTRS,
        ResourceType::CrossResourceSubscription => CRS_ATTRS,
        ResourceType::CseBase => CB_ATTRS,
        ResourceType::Group => GRP_ATTRS,
        ResourceType::LocalMulticastGroup => LMG_ATTRS,
        ResourceType::LocationPolicy => LCP_ATTRS,
        ResourceType::MgmtObj => MGO_ATTRS,
        ResourceType::SemanticDescriptor => SMD_ATTRS,
        ResourceType::Schedule => SCH_ATTRS,
        ResourceType::Node => NOD_ATTRS,
        ResourceType::NotificationTargetMgmtPolicyRef => NTPR_ATTRS,
        ResourceType::NotificationTargetPolicy => NTP_ATTRS,
        ResourceType::PolicyDeletionRules => PDR_ATTRS,
        ResourceType::PollingChannel => PCH_ATTRS,
        ResourceType::RemoteCse => CSR_ATTRS,
        ResourceType::Request => REQ_ATTRS,
        ResourceType::ServiceSubscribedAppRule => ASAR_ATTRS,
        ResourceType::Subscription => SUB_ATTRS,
        ResourceType::FlexContainer => FCNT_ATTRS,
        ResourceType::FlexContainerInstance => FCI_ATTRS,
        ResourceType::TimeSeries => TS_ATTRS,
        ResourceType::TimeSeriesInstance => TSI_ATTRS,
        ResourceType::TimeSyncBeacon => TSB_ATTRS,
        ResourceType::AeAnnc => AEANNC_ATTRS,
        ResourceType::DynamicAuthorizationConsultation => DAC_ATTRS,
        ResourceType::Role => ROLE_ATTRS,
        ResourceType::Token => TOKEN_ATTRS,
    }
}

/// The specification of one attribute of `ty`, if it has one by that short name.
pub fn attribute(ty: ResourceType, name: &str) -> Option<&'static AttrSpec> {
    attributes(ty).iter().find(|a| a.name == name)
}

/// The attributes of `ty` that the hosting CSE sets and the originator may never provide (NP in both
/// CREATE and UPDATE). `cr` is not among them: a CREATE may carry it as `null`.
pub fn read_only_attributes(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        ResourceType::AccessControlPolicy => &["ty", "ri", "pi", "ct", "lt"],
        ResourceType::Action => &["ty", "ri", "pi", "ct", "lt", "air"],
        ResourceType::Dependency => &["ty", "ri", "pi", "ct", "lt"],
        ResourceType::Ae => &["ty", "ri", "pi", "ct", "lt", "aei"],
        ResourceType::Container => &["ty", "ri", "pi", "ct", "lt", "st", "cni", "cbs", "li"],
        ResourceType::ContentInstance => &["ty", "ri", "pi", "ct", "lt", "st", "cs"],
        ResourceType::CrossResourceSubscription => &["ty", "ri", "pi", "ct", "lt", "rrats", "nsi"],
        ResourceType::CseBase => &[
            "rn", "ty", "ri", "pi", "ct", "lt", "lbl", "acpi", "daci", "cst", "csi", "srt", "poa",
            "nl", "ncp", "csz", "esi", "srv", "ctm",
        ],
        ResourceType::Group => &["ty", "ri", "pi", "ct", "lt", "cnm", "mtv", "ssi"],
        ResourceType::Node => &["ty", "ri", "pi", "ct", "lt", "rms", "nid"],
        ResourceType::Schedule => &["ty", "ri", "pi", "ct", "lt"],
        ResourceType::LocationPolicy => &["ty", "ri", "pi", "ct", "lt", "loi", "lost"],
        ResourceType::SemanticDescriptor => &["ty", "ri", "pi", "ct", "lt", "svd"],
        ResourceType::LocalMulticastGroup
        | ResourceType::MgmtObj
        | ResourceType::NotificationTargetMgmtPolicyRef
        | ResourceType::NotificationTargetPolicy
        | ResourceType::PolicyDeletionRules
        | ResourceType::PollingChannel
        | ResourceType::RemoteCse => &["ty", "ri", "pi", "ct", "lt"],
        ResourceType::ServiceSubscribedAppRule => &["ty", "ri", "pi", "ct", "lt"],
        ResourceType::Request => &[
            "rn", "ty", "ri", "pi", "ct", "lt", "et", "lbl", "op", "tg", "org", "rid", "mi", "pc",
            "rs", "ors",
        ],
        ResourceType::Subscription => &["ty", "ri", "pi", "ct", "lt", "nsi"],
        ResourceType::FlexContainer => &["ty", "ri", "pi", "ct", "lt", "st", "cs", "cni", "cbs"],
        ResourceType::FlexContainerInstance => &[
            "rn", "ty", "ri", "pi", "ct", "lt", "st", "et", "lbl", "loc", "at", "cnd", "cs", "org",
        ],
        ResourceType::TimeSeries => &["ty", "ri", "pi", "ct", "lt", "cni", "cbs", "mdlt", "mdc"],
        ResourceType::TimeSeriesInstance => &["ty", "ri", "pi", "ct", "lt", "cs"],
        ResourceType::TimeSyncBeacon
        | ResourceType::AeAnnc
        | ResourceType::DynamicAuthorizationConsultation
        | ResourceType::Role
        | ResourceType::Token => &["ty", "ri", "pi", "ct", "lt"],
    }
}

/// Whether `name` is a known resource attribute short name of any hosted type (used to decide that an
/// unknown query field is an attribute filter condition).
pub fn is_attribute_name(name: &str) -> bool {
    ResourceType::ALL
        .into_iter()
        .any(|t| attribute(t, name).is_some())
}

/// Extracts the resource representation from a CREATE/UPDATE Content: an object with the single
/// member `m2m:<ty>` whose value is an object (TS-0004 clause 7.3.3.3: a representation that does not
/// match the Resource Type is a BAD_REQUEST).
pub fn inner_content(ty: ResourceType, pc: &Value) -> M2mResult<&Map<String, Value>> {
    let outer = pc
        .as_object()
        .ok_or_else(|| M2mError::bad_request("content is not a JSON object"))?;
    if ty == ResourceType::FlexContainer {
        return crate::specialization::inner_content(outer);
    }
    if ty == ResourceType::MgmtObj {
        return crate::mgmt_obj::inner_content(outer).map(|(_, inner)| inner);
    }
    let root = ty.root_name();
    match (outer.len(), outer.get(root)) {
        (1, Some(Value::Object(inner))) => Ok(inner),
        (1, Some(_)) => Err(M2mError::bad_request(format!(
            "'{root}' is not a JSON object"
        ))),
        _ => Err(M2mError::bad_request(format!(
            "content must be a single '{root}' object"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// A custom attribute of a `<flexContainer>`: not in its table; its specialization checks it.
fn is_custom(ty: ResourceType, name: &str) -> bool {
    matches!(
        ty,
        ResourceType::FlexContainer | ResourceType::FlexContainerInstance | ResourceType::MgmtObj
    ) && attribute(ty, name).is_none()
}

/// Checks one value against a kind, naming `path` in the error (specializations use it).
pub fn check_value(kind: &Kind, v: &Value, path: &str) -> M2mResult<()> {
    check(kind, v, path)
}

fn attr_err(path: &str, what: impl std::fmt::Display) -> M2mError {
    M2mError::bad_request(format!("attribute '{path}': {what}"))
}

fn lookup(ty: ResourceType, name: &str) -> M2mResult<&'static AttrSpec> {
    attribute(ty, name).ok_or_else(|| {
        M2mError::bad_request(format!(
            "attribute '{name}': not an attribute of <{}>",
            ty.short_name()
        ))
    })
}

/// Validates the content of a CREATE of `ty`: unknown attributes, wrong value types, missing mandatory
/// attributes, attributes the originator may not set (RO) -> M2mError BAD_REQUEST (4000) with a short dbg
/// naming the attribute, e.g. "attribute 'mni': expected a non-negative integer".
///
/// A CREATE of `<CSEBase>` is OPERATION_NOT_ALLOWED (TS-0004 clause 7.4.3.2.1).
pub fn validate_create(ty: ResourceType, content: &Map<String, Value>) -> M2mResult<()> {
    if ty == ResourceType::CseBase {
        return Err(M2mError::not_allowed(
            "a <CSEBase> resource cannot be created",
        ));
    }
    for (name, value) in content {
        if is_custom(ty, name) {
            continue;
        }
        let spec = lookup(ty, name)?;
        match (spec.create, spec.kind) {
            (Create::NotAllowed, _) => {
                return Err(attr_err(name, "may not be provided by the originator"))
            }
            (_, Kind::CreatorNull) => {
                if !value.is_null() {
                    return Err(attr_err(
                        name,
                        "only null is allowed (the hosting CSE sets the creator)",
                    ));
                }
            }
            _ if value.is_null() => return Err(attr_err(name, "null is not allowed in CREATE")),
            (_, kind) => check(&kind, value, name)?,
        }
    }
    if let Some(missing) = attributes(ty)
        .iter()
        .find(|a| a.create == Create::Mandatory && !content.contains_key(a.name))
    {
        return Err(attr_err(missing.name, "mandatory attribute is missing"));
    }
    Ok(())
}

/// Whether a resource of `ty` may be updated at all: not an instance nor the CSEBase (4005,
/// whatever the content; TS-0004 clauses 7.4.7.2.3, 7.4.39.2.3, 7.4.3.2.3).
pub fn updatable(ty: ResourceType) -> M2mResult<()> {
    if ty.is_instance() || ty == ResourceType::CseBase {
        return Err(M2mError::not_allowed(format!(
            "a <{}> resource cannot be updated",
            ty.short_name()
        )));
    }
    Ok(())
}

/// Validates the content of an UPDATE of `ty`: RO and WO (create-only) attributes are refused with
/// BAD_REQUEST; `null` means "delete this optional attribute" and is allowed for attributes that are
/// optional at creation only. `acpi` must be the only attribute of an UPDATE that changes it (TS-0001
/// table 9.6.1.3.2-1).
///
/// An UPDATE of `<contentInstance>` or `<CSEBase>` is OPERATION_NOT_ALLOWED (TS-0004 clauses
/// 7.4.7.2.3 and 7.4.3.2.3).
pub fn validate_update(ty: ResourceType, content: &Map<String, Value>) -> M2mResult<()> {
    updatable(ty)?;
    for (name, value) in content {
        if is_custom(ty, name) {
            continue;
        }
        let spec = lookup(ty, name)?;
        if !spec.update {
            return Err(attr_err(name, "cannot be updated"));
        }
        if value.is_null() {
            if spec.create == Create::Mandatory {
                return Err(attr_err(name, "mandatory attribute cannot be deleted"));
            }
            continue;
        }
        check(&spec.kind, value, name)?;
    }
    if content.contains_key("acpi") && content.len() > 1 {
        return Err(attr_err(
            "acpi",
            "must be the only attribute of an UPDATE that changes it",
        ));
    }
    Ok(())
}

/// xs:token (XML Schema part 2, 3.3.2): the whitespace-collapsed form of a string; as a member
/// of a list (m2m:labels) it is not empty, or the list could not be written in XML.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['\t', '\n', '\r'])
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
}

fn is_resource_type_code(n: u64) -> bool {
    u16::try_from(n).is_ok_and(is_specified_type)
}

fn check_resource_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        // The virtual resources' names; `secureStorage` is the Security CSF's storage under
        // the CSEBase (m2m-cse `secure_storage`), reserved everywhere for simplicity.
        && !matches!(s, "la" | "ol" | "fopt" | "pcu" | "ntsr" | "secureStorage")
}

fn check_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// ISO 8601 duration, e.g. `P1DT2H`, `PT0.5S`.
fn check_iso_duration(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('P') else {
        return false;
    };
    rest.bytes().any(|b| b.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || b"YMWDTHS.,".contains(&b))
        && !rest.ends_with('T')
        && rest.bytes().last().is_some_and(|b| !b.is_ascii_digit())
}

fn check_content_info(s: &str) -> bool {
    let mut parts = s.split(':');
    let media = parts.next().unwrap_or("");
    let encoding = parts.next();
    let security = parts.next();
    let media_ok = match media.split_once('/') {
        Some((t, st)) => !t.is_empty() && !st.is_empty() && !st.contains('/') && check_uri(media),
        None => false,
    };
    media_ok
        && matches!(encoding, Some("0" | "1" | "2"))
        && matches!(security, None | Some("0" | "1" | "2" | "3" | "4" | "5"))
        && parts.next().is_none()
}

fn check_release_version(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &s.as_bytes()[digits..];
    (1..=2).contains(&digits)
        && !s.starts_with('0')
        && (rest.is_empty() || (rest.len() == 1 && rest[0].is_ascii_lowercase()))
}

fn check_cidr<A: std::str::FromStr>(s: &str, max_prefix: u8) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let prefix_ok = match prefix {
        None => true,
        Some(p) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u8>().is_ok_and(|n| n <= max_prefix)
        }
    };
    addr.parse::<A>().is_ok() && prefix_ok
}

fn expect_one_of(values: &[u64]) -> String {
    let list: Vec<String> = values.iter().map(u64::to_string).collect();
    format!("expected one of {}", list.join(", "))
}

/// Checks one value against its kind; `path` names it in the error (`pvs.acr[0].acop`).
fn check(kind: &Kind, v: &Value, path: &str) -> M2mResult<()> {
    let ok = |cond: bool, what: &str| {
        if cond {
            Ok(())
        } else {
            Err(attr_err(path, what))
        }
    };
    let string = v.as_str();
    let uint = v.as_u64();
    match *kind {
        Kind::Any => Ok(()),
        Kind::AnyObject => ok(v.is_object(), "expected an object"),
        Kind::Str => ok(string.is_some(), "expected a string"),
        Kind::Token => ok(
            string.is_some_and(is_token),
            "expected a token (not empty; no tabs or line breaks, no leading, trailing or double spaces)",
        ),
        Kind::ResourceName => ok(
            string.is_some_and(check_resource_name),
            "expected a resource name of letters, digits, '-', '.', '_' starting with a letter or digit, other than 'la', 'ol', 'fopt'",
        ),
        Kind::AppId => ok(
            string.is_some_and(|s| s.starts_with(['r', 'R', 'N'])),
            "expected an App-ID starting with 'r', 'R' or 'N'",
        ),
        Kind::NonNegInt => ok(uint.is_some(), "expected a non-negative integer"),
        Kind::Integer => ok(v.is_i64() || v.is_u64(), "expected an integer"),
        Kind::Number => ok(v.is_number(), "expected a number"),
        Kind::PosInt => ok(uint.is_some_and(|n| n > 0), "expected a positive integer"),
        Kind::Range(lo, hi) => ok(
            uint.is_some_and(|n| (lo..=hi).contains(&n)),
            &format!("expected an integer in {lo}..={hi}"),
        ),
        Kind::Enum(values) => ok(
            uint.is_some_and(|n| values.contains(&n)),
            &expect_one_of(values),
        ),
        Kind::StrEnum(values) => ok(
            string.is_some_and(|s| values.contains(&s)),
            &format!("expected one of {}", values.join(", ")),
        ),
        Kind::Bool => ok(v.is_boolean(), "expected a boolean"),
        Kind::Timestamp => ok(
            string.is_some_and(|s| time::parse(s).is_ok()),
            "expected a timestamp YYYYMMDDTHHMMSS",
        ),
        Kind::FutureTimestamp => match string.map(time::parse) {
            Some(Ok(t)) => ok(t >= Utc::now(), "expiration time is in the past"),
            _ => Err(attr_err(path, "expected a timestamp YYYYMMDDTHHMMSS")),
        },
        Kind::Duration => ok(
            uint.is_some() || string.is_some_and(check_iso_duration),
            "expected a duration (ISO 8601 such as PT10S, or a non-negative integer)",
        ),
        Kind::Uri => ok(
            string.is_some_and(check_uri),
            "expected a non-empty URI without whitespace",
        ),
        Kind::ContentInfo => ok(
            string.is_some_and(check_content_info),
            "expected type/subtype:encoding[:security] with encoding 0..=2 and security 0..=5",
        ),
        Kind::ReleaseVersion => ok(
            string.is_some_and(check_release_version),
            "expected a release version such as \"2a\" or \"3\"",
        ),
        Kind::ResourceTypeCode => ok(
            uint.is_some_and(is_resource_type_code),
            "expected a resource type code",
        ),
        Kind::MemberType => ok(
            uint.is_some_and(|n| n == 0 || is_resource_type_code(n)),
            "expected 0 (mixed) or a resource type code",
        ),
        Kind::EventCat => ok(
            uint.is_some_and(|n| (2..=4).contains(&n) || (100..=999).contains(&n)),
            "expected an event category 2..=4 or 100..=999",
        ),
        Kind::CountryCode => ok(
            string.is_some_and(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())),
            "expected a two-letter country code",
        ),
        Kind::Ipv4 => ok(
            string.is_some_and(|s| check_cidr::<Ipv4Addr>(s, 32)),
            "expected an IPv4 address with optional /prefix",
        ),
        Kind::Ipv6 => ok(
            string.is_some_and(|s| check_cidr::<Ipv6Addr>(s, 128)),
            "expected an IPv6 address with optional /prefix",
        ),
        Kind::CircRegion => {
            let nums: Option<Vec<f64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                .unwrap_or(None);
            ok(
                matches!(nums.as_deref(), Some(&[lat, lon, r])
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) && r >= 0.0),
                "expected [latitude, longitude, radius]",
            )
        }
        Kind::List(inner) | Kind::NonEmptyList(inner) => {
            let Some(items) = v.as_array() else {
                return Err(attr_err(path, "expected a list"));
            };
            if items.is_empty() && matches!(kind, Kind::NonEmptyList(_)) {
                return Err(attr_err(path, "expected a non-empty list"));
            }
            for (i, item) in items.iter().enumerate() {
                check(inner, item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Kind::Object(spec) => check_object(spec, v, path),
        Kind::CreatorNull => ok(v.is_null(), "only null is allowed"),
        Kind::GeoCoordinates => crate::geo_query::check_location(v).map_err(|e| attr_err(path, e)),
    }
}

fn check_object(spec: &ObjSpec, v: &Value, path: &str) -> M2mResult<()> {
    let Some(obj) = v.as_object() else {
        return Err(attr_err(path, "expected an object"));
    };
    for (name, member) in obj {
        let member_path = format!("{path}.{name}");
        let Some(field) = spec.fields.iter().find(|f| f.name == name) else {
            return Err(attr_err(&member_path, "unknown element"));
        };
        check(&field.kind, member, &member_path)?;
    }
    if let Some(missing) = spec
        .fields
        .iter()
        .find(|f| f.required && !obj.contains_key(f.name))
    {
        return Err(attr_err(
            path,
            format!("missing element '{}'", missing.name),
        ));
    }
    let names = || {
        spec.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match spec.rule {
        ObjRule::Fields => Ok(()),
        ObjRule::AtLeastOne if obj.is_empty() => Err(attr_err(
            path,
            format!("expected at least one of {}", names()),
        )),
        ObjRule::ExactlyOne if obj.len() != 1 => Err(attr_err(
            path,
            format!("expected exactly one of {}", names()),
        )),
        ObjRule::AtLeastOne | ObjRule::ExactlyOne => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ResponseStatusCode as Rsc;
    use serde_json::json;
    use ResourceType::*;

    const FUTURE: &str = "20991231T235959";

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test content is not an object: {other}"),
        }
    }

    /// A valid ACP rule.
    fn acr() -> Value {
        json!({"acor": ["CAdmin", "all"], "acop": 63})
    }

    /// A minimal valid CREATE content per creatable type.
    fn minimal(ty: ResourceType) -> Value {
        match ty {
            AccessControlPolicy => json!({"pv": {"acr": []}, "pvs": {"acr": [acr()]}}),
            Action => json!({"evc": {"optr": 1, "sbjt": "lbl", "thld": "x"}, "evm": 1,
                "orc": "/id-in/Cae1", "apv": {"op": 3, "fr": "Cae1", "pc": {}}}),
            Dependency => json!({"sfc": true, "evc": {"optr": 3, "sbjt": "cni", "thld": 1},
                "rri": "/id-in/cnt1"}),
            Ae => json!({"api": "Nmyapp", "rr": false, "srv": ["3"]}),
            AeAnnc => json!({"lnk": "/id-mn/Sphone"}),
            Container => json!({}),
            ContentInstance => json!({"con": "21.5"}),
            CrossResourceSubscription => json!({"nu": ["/id-in/Cae1"], "twt": 1, "tws": "PT4S",
                "rrat": ["/id-in/cnt1"], "encs": {"enc": [{"net": [3]}]}}),
            CseBase => json!({}),
            Group => json!({"mid": [], "mnm": 10}),
            LocalMulticastGroup => json!({"mad": {"ip4": "239.255.77.1"}, "mgft": "/in/mcg-1",
                "mli": ["/mn/cnt1"], "gck": "a.b.c.d.e", "spk": {"kty": "EC"}}),
            PollingChannel => json!({}),
            MgmtObj => json!({"mgd": 1006, "btl": 50, "bts": 1}),
            Node => json!({"ni": "urn:sn:1234"}),
            Schedule => json!({"se": {"sce": ["* * 8-20 * * * *"]}}),
            LocationPolicy => json!({"los": 2}),
            TimeSyncBeacon => json!({"bcnc": 1, "bcnu": ["/id-in/Cae1"]}),
            DynamicAuthorizationConsultation => {
                json!({"dae": true, "dap": ["https://das.example.com"]})
            }
            SemanticDescriptor => json!({"dcrp": 5, "dsp": "PGE+IDxiPiA8Yz4gLg=="}),
            NotificationTargetMgmtPolicyRef => json!({"ntu": ["Cae1"]}),
            NotificationTargetPolicy => json!({"acn": 1, "plbl": "Default"}),
            PolicyDeletionRules => json!({}),
            RemoteCse => json!({"cb": "/mn-cse/cb", "rr": true, "srv": ["2a", "3"]}),
            Request | FlexContainerInstance => json!({}),
            Subscription => json!({"nu": ["/id-in/Cae1"]}),
            FlexContainer => json!({"cnd": "org.onem2m.common.moduleclass.lock"}),
            TimeSeries => json!({}),
            TimeSeriesInstance => json!({"dgt": "20261205T120000", "con": "21.5"}),
            ServiceSubscribedAppRule => json!({"aai": ["Nlock*"], "aae": ["C*"]}),
            Role => json!({"rlid": "r@roles.example.com", "tkis": "CAdmin", "tkhd": "Cae1",
                "tknb": "20261201T000000", "tkna": "20271201T000000"}),
            Token => json!({"tkid": "t@das.example.com", "tkob": "a.b.c"}),
        }
    }

    /// A CREATE with `attr` added (or replaced) in the minimal content.
    fn with(ty: ResourceType, attr: &str, v: Value) -> Map<String, Value> {
        let mut m = obj(minimal(ty));
        m.insert(attr.to_owned(), v);
        m
    }

    fn without(ty: ResourceType, attr: &str) -> Map<String, Value> {
        let mut m = obj(minimal(ty));
        m.shift_remove(attr);
        m
    }

    fn assert_bad(r: M2mResult<()>, attr: &str, case: &str) {
        let e = r.expect_err(case);
        assert_eq!(e.rsc, Rsc::BadRequest, "{case}: {e}");
        assert!(
            e.dbg.contains(&format!("'{attr}")),
            "{case}: dbg '{}' does not name '{attr}'",
            e.dbg
        );
    }

    const CREATABLE: [ResourceType; 9] = [
        AccessControlPolicy,
        Ae,
        Container,
        ContentInstance,
        Group,
        LocalMulticastGroup,
        PollingChannel,
        RemoteCse,
        Subscription,
    ];

    #[test]
    fn minimal_creates_are_valid() {
        for ty in CREATABLE {
            validate_create(ty, &obj(minimal(ty))).unwrap_or_else(|e| panic!("{ty}: {e}"));
        }
    }

    #[test]
    fn rich_creates_are_valid() {
        let cases = [
            (
                Ae,
                json!({"rn": "lamp-1", "api": "r.org.example.lamp", "apn": "lamp", "rr": true,
                    "poa": ["http://10.0.0.2:8080"], "srv": ["2a", "3", "4"], "csz": ["json", "cbor"],
                    "lbl": ["a", "k:v"], "acpi": ["/cse/acp1"], "et": FUTURE, "nl": "/cse/node1",
                    "or": "http://ont", "regs": 1, "trps": false, "tren": true, "tri": 3010, "trn": 1,
                    "esi": {"esf": [1]}, "at": ["/in-cse"], "aa": ["lbl"], "daci": ["/cse/dac"]}),
            ),
            (
                Container,
                json!({"rn": "data", "mni": 0, "mbs": 10000, "mia": 3600, "disr": false,
                    "cr": null, "or": "http://ont", "et": "20991231T235959,5", "lbl": []}),
            ),
            (
                ContentInstance,
                json!({"rn": "v1", "cnf": "application/json:0", "con": {"t": 21.5}, "cr": null,
                    "lbl": ["x"], "et": FUTURE, "conr": {"urir": []}}),
            ),
            (ContentInstance, json!({"cnf": "text/plain:1:3", "con": 12})),
            (
                Group,
                json!({"mid": ["/cse/a", "/cse/b"], "mnm": 2, "mt": 3, "csy": 2, "gn": "g",
                    "macp": ["/cse/acp"], "nar": {"num": 2, "dur": "PT1S"}, "spty": "x", "cr": null}),
            ),
            (Group, json!({"mid": [], "mnm": 1, "mt": 0})),
            (
                RemoteCse,
                json!({"cb": "/mn/cb", "csi": "/mn", "cst": 2, "rr": false, "srv": ["3"],
                    "poa": ["http://10.0.0.3"], "dcse": ["/asn"], "mtcc": 2, "egid": "g@x", "mei": "m"}),
            ),
            (
                Subscription,
                json!({"nu": ["/id-in/Cae1", "http://h/notify?ct=json"], "rn": "s1",
                    "enc": {"net": [1, 2, 3, 4], "atr": ["con"], "chty": [4], "crb": FUTURE,
                        "sts": 1, "stb": 0, "sza": 0, "szb": 1, "fo": 2,
                        "om": [{"ops": 4}, {"or": "Cae1"}], "md": {"num": 1, "dur": "PT10M"}},
                    "exc": 3, "nct": 2, "su": "/id-in/Cae1", "bn": {"num": 5}, "ln": true,
                    "rl": {"mnn": 10, "tww": 60}, "pn": 1, "nsp": 1, "nec": 100, "psn": 2,
                    "gpi": "/cse/grp", "nfu": "/cse/x", "cr": null, "daci": []}),
            ),
            (
                AccessControlPolicy,
                json!({"rn": "acp1", "pv": {"acr": [{"acor": ["all"], "acop": 2,
                        "acco": [{"actw": ["* * * * * * *"],
                                  "acip": {"ipv4": ["10.0.0.0/8", "192.168.1.1"], "ipv6": ["::/0"]},
                                  "aclr": {"accc": ["KR"]}}],
                        "acaf": false,
                        "acod": [{"ty": 3, "chty": [4], "spty": "x"}]}]},
                    "pvs": {"acr": [acr(), {"acor": [], "acop": 1, "acco": [{"aclr": {"accr": [1.5, -2.0, 100]}}]}]},
                    "adri": [], "at": ["/in"], "aa": ["pv"], "lbl": ["x"], "et": FUTURE}),
            ),
            (
                AccessControlPolicy,
                json!({"pv": {}, "pvs": {"acr": [acr()]}}),
            ),
        ];
        for (ty, content) in cases {
            validate_create(ty, &obj(content.clone()))
                .unwrap_or_else(|e| panic!("{ty} {content}: {e}"));
        }
    }

    #[test]
    fn create_violations() {
        // (type, attribute, value, case)
        let wrong: &[(ResourceType, &str, Value, &str)] = &[
            // unknown attributes
            (Container, "foo", json!(1), "unknown attribute"),
            (Ae, "mni", json!(1), "attribute of another type"),
            (ContentInstance, "acpi", json!(["/a"]), "cin has no acpi"),
            (
                AccessControlPolicy,
                "acpi",
                json!(["/a"]),
                "acp has no acpi",
            ),
            (Ae, "cr", Value::Null, "AE has no creator"),
            (RemoteCse, "cr", Value::Null, "remoteCSE has no creator"),
            (
                Subscription,
                "at",
                json!(["/x"]),
                "subscription is not announceable",
            ),
            // read-only attributes
            (Container, "ri", json!("x"), "ri"),
            (Container, "ty", json!(3), "ty"),
            (Container, "pi", json!("x"), "pi"),
            (Container, "ct", json!(FUTURE), "ct"),
            (Container, "lt", json!(FUTURE), "lt"),
            (Container, "st", json!(0), "st"),
            (Container, "cni", json!(0), "cni"),
            (Container, "cbs", json!(0), "cbs"),
            (Container, "li", json!("/x"), "li"),
            (ContentInstance, "cs", json!(3), "cs"),
            (Ae, "aei", json!("Cx"), "aei"),
            (Group, "cnm", json!(0), "cnm"),
            (Group, "mtv", json!(true), "mtv"),
            (Group, "ssi", json!(true), "ssi"),
            // creator: only null
            (Container, "cr", json!("Cae"), "creator with a value"),
            (Subscription, "cr", json!(""), "creator with an empty value"),
            // null on other attributes
            (Container, "mni", Value::Null, "null in create"),
            // wrong types and values
            (Container, "mni", json!(-1), "negative mni"),
            (Container, "mni", json!("10"), "mni as string"),
            (Container, "mni", json!(1.5), "mni as float"),
            (Container, "mbs", json!(true), "mbs as bool"),
            (Container, "disr", json!("false"), "disr as string"),
            (Container, "rn", json!(""), "empty rn"),
            (Container, "rn", json!("a/b"), "rn with slash"),
            (Container, "rn", json!("a b"), "rn with space"),
            (Container, "rn", json!("la"), "rn la"),
            (Container, "rn", json!("ol"), "rn ol"),
            (Container, "rn", json!("fopt"), "rn fopt"),
            (Container, "rn", json!("pcu"), "rn pcu"),
            (Container, "rn", json!("-x"), "rn starting with '-'"),
            (Container, "rn", json!(".."), "rn '..'"),
            (Container, "rn", json!(5), "rn as number"),
            (Container, "et", json!("2099-12-31"), "et malformed"),
            (Container, "et", json!("20000101T000000"), "et in the past"),
            (Container, "lbl", json!("a b"), "lbl not a list"),
            (Container, "lbl", json!([1]), "lbl of numbers"),
            (Container, "acpi", json!([""]), "acpi with empty id"),
            (Ae, "api", json!("xapp"), "api with a bad first letter"),
            (Ae, "api", json!(1), "api as number"),
            (Ae, "rr", json!("true"), "rr as string"),
            (Ae, "srv", json!([]), "srv empty"),
            (Ae, "srv", json!(["3", "x"]), "srv bad version"),
            (Ae, "srv", json!("3"), "srv not a list"),
            (Ae, "csz", json!(["yaml"]), "csz unknown serialization"),
            (Ae, "poa", json!("http://x"), "poa not a list"),
            (Ae, "regs", json!(3), "regs out of range"),
            (Ae, "tri", json!(70000), "tri out of range"),
            (
                ContentInstance,
                "cnf",
                json!("application/json"),
                "cnf without encoding",
            ),
            (
                ContentInstance,
                "cnf",
                json!("text:0"),
                "cnf without subtype",
            ),
            (
                ContentInstance,
                "cnf",
                json!("text/plain:7"),
                "cnf bad encoding",
            ),
            (
                ContentInstance,
                "cnf",
                json!("text/plain:0:9"),
                "cnf bad security",
            ),
            (
                ContentInstance,
                "cnf",
                json!("text/plain:0:1:1"),
                "cnf too many parts",
            ),
            (Group, "mt", json!(999), "mt not a type"),
            (Group, "mt", json!(-1), "mt negative"),
            (Group, "mnm", json!(0), "mnm zero"),
            (Group, "mid", json!("/a"), "mid not a list"),
            (Group, "csy", json!(4), "csy out of range"),
            (
                Group,
                "nar",
                json!({"num": 1, "x": 2}),
                "nar unknown element",
            ),
            (RemoteCse, "cst", json!(4), "cst out of range"),
            (RemoteCse, "cb", json!(""), "cb empty"),
            (Subscription, "nu", json!([]), "nu empty"),
            (Subscription, "nu", json!("/x"), "nu not a list"),
            (Subscription, "nu", json!([1]), "nu of numbers"),
            (Subscription, "exc", json!(0), "exc zero"),
            (Subscription, "nct", json!(0), "nct zero"),
            (Subscription, "nec", json!(5), "nec not a category"),
            (Subscription, "enc", json!([]), "enc not an object"),
            (Subscription, "enc", json!({"net": [9]}), "net out of range"),
            (Subscription, "enc", json!({"net": [0]}), "net zero"),
            (Subscription, "enc", json!({"net": 1}), "net not a list"),
            (
                Subscription,
                "enc",
                json!({"foo": 1}),
                "enc unknown element",
            ),
            (
                Subscription,
                "enc",
                json!({"crb": "x"}),
                "enc bad timestamp",
            ),
            (Subscription, "enc", json!({"sts": 0}), "sts zero"),
            (
                Subscription,
                "enc",
                json!({"chty": [999]}),
                "chty unknown type",
            ),
            (Subscription, "enc", json!({"om": [{}]}), "om empty"),
            (
                Subscription,
                "enc",
                json!({"md": {"num": 1}}),
                "md without dur",
            ),
            (Subscription, "enc", json!({"fo": 3}), "fo out of range"),
            (Subscription, "bn", json!({"dur": "10s"}), "bn bad duration"),
            (Subscription, "bn", json!({"dur": "P"}), "bn empty duration"),
            (Subscription, "rl", json!({"mnn": 1}), "rl without tww"),
            (Subscription, "su", json!(["x"]), "su not a uri"),
            // ACP structure traps
            (AccessControlPolicy, "pvs", json!({"acr": []}), "pvs empty"),
            (AccessControlPolicy, "pvs", json!({}), "pvs without acr"),
            (
                AccessControlPolicy,
                "pvs",
                json!([acr()]),
                "pvs not an object",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 0}]}),
                "acop 0",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 64}]}),
                "acop 64",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": "63"}]}),
                "acop string",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": "all", "acop": 63}]}),
                "acor not a list",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acop": 63}]}),
                "acor missing",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"]}]}),
                "acop missing",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "x": 1}]}),
                "unknown key in acr",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acaf": 1}]}),
                "acaf not bool",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": {"acor": ["all"], "acop": 1}}),
                "acr not a list",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acrs": []}),
                "unknown key in setOfAcrs",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": {}}]}),
                "acco not a list",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"acip": {"ipv4": ["10.0.0.300"]}}]}]}),
                "bad ipv4",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"acip": {"ipv4": ["10.0.0.0/33"]}}]}]}),
                "bad ipv4 prefix",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"acip": {"ipv6": ["fe80::/129"]}}]}]}),
                "bad ipv6 prefix",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"acip": {}}]}]}),
                "empty acip",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"aclr": {"accc": ["KR"], "accr": [0, 0, 1]}}]}]}),
                "aclr with both choices",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"aclr": {"accr": [91, 0, 1]}}]}]}),
                "latitude out of range",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"aclr": {"accr": [0, 0]}}]}]}),
                "circRegion of two",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acco": [{"actw": "* * *"}]}]}),
                "actw not a list",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acod": [{"ty": 3}]}]}),
                "acod without chty",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 1, "acod": [{"chty": [4], "x": 1}]}]}),
                "unknown key in acod",
            ),
            (AccessControlPolicy, "adri", json!("/x"), "adri not a list"),
        ];
        for (ty, attr, v, case) in wrong {
            assert_bad(
                validate_create(*ty, &with(*ty, attr, v.clone())),
                attr,
                case,
            );
        }
    }

    #[test]
    fn nested_errors_name_the_element() {
        let e = validate_create(
            AccessControlPolicy,
            &with(
                AccessControlPolicy,
                "pv",
                json!({"acr": [acr(), {"acor": ["all"], "acop": 64}]}),
            ),
        )
        .unwrap_err();
        assert_eq!(
            e.dbg,
            "attribute 'pv.acr[1].acop': expected an integer in 1..=63"
        );
        let e = validate_create(Container, &with(Container, "mni", json!(-1))).unwrap_err();
        assert_eq!(e.dbg, "attribute 'mni': expected a non-negative integer");
    }

    #[test]
    fn missing_mandatory_at_create() {
        let cases: &[(ResourceType, &str)] = &[
            (Ae, "api"),
            (Ae, "rr"),
            (Ae, "srv"),
            (ContentInstance, "con"),
            (AccessControlPolicy, "pv"),
            (AccessControlPolicy, "pvs"),
            (Group, "mid"),
            (Group, "mnm"),
            (RemoteCse, "cb"),
            (RemoteCse, "rr"),
            (RemoteCse, "srv"),
            (Subscription, "nu"),
        ];
        for (ty, attr) in cases {
            assert_bad(validate_create(*ty, &without(*ty, attr)), attr, "missing");
        }
    }

    #[test]
    fn cse_base_is_never_created_or_updated() {
        let e = validate_create(CseBase, &Map::new()).unwrap_err();
        assert_eq!(e.rsc, Rsc::OperationNotAllowed);
        let e = validate_update(CseBase, &obj(json!({"lbl": ["x"]}))).unwrap_err();
        assert_eq!(e.rsc, Rsc::OperationNotAllowed);
    }

    #[test]
    fn content_instance_is_never_updated() {
        for content in [json!({}), json!({"lbl": ["x"]}), json!({"con": "x"})] {
            let e = validate_update(ContentInstance, &obj(content)).unwrap_err();
            assert_eq!(e.rsc, Rsc::OperationNotAllowed);
        }
    }

    #[test]
    fn valid_updates() {
        let cases = [
            (
                Container,
                json!({"mni": 5, "mbs": null, "lbl": ["a"], "et": FUTURE}),
            ),
            (
                Container,
                json!({"et": null, "lbl": null, "disr": true, "or": null}),
            ),
            (Container, json!({"acpi": ["/cse/acp2"]})),
            (Container, json!({"acpi": null})),
            (
                Ae,
                json!({"rr": true, "poa": ["http://x"], "apn": null, "srv": ["3"]}),
            ),
            (
                Subscription,
                json!({"nu": ["/a"], "enc": {"net": [3]}, "exc": null, "nct": 1}),
            ),
            (
                Group,
                json!({"mid": ["/a"], "mnm": 3, "gn": null, "nar": null}),
            ),
            (
                RemoteCse,
                json!({"rr": false, "poa": ["http://y"], "dcse": ["/asn1"]}),
            ),
            (
                AccessControlPolicy,
                json!({"pv": {"acr": []}, "pvs": {"acr": [acr()]}}),
            ),
            (AccessControlPolicy, json!({"adri": null, "lbl": ["x"]})),
        ];
        for (ty, content) in cases {
            validate_update(ty, &obj(content.clone()))
                .unwrap_or_else(|e| panic!("{ty} {content}: {e}"));
        }
    }

    #[test]
    fn update_violations() {
        let wrong: &[(ResourceType, &str, Value, &str)] = &[
            // unknown
            (Container, "foo", json!(1), "unknown attribute"),
            (Ae, "mni", json!(1), "attribute of another type"),
            // read-only
            (Container, "ri", json!("x"), "ri"),
            (Container, "ty", json!(3), "ty"),
            (Container, "ct", json!(FUTURE), "ct"),
            (Container, "cni", json!(1), "cni"),
            (Ae, "aei", json!("C1"), "aei"),
            (Group, "cnm", json!(1), "cnm"),
            // create-only (WO)
            (Container, "rn", json!("x"), "rn"),
            (Container, "cr", Value::Null, "cr"),
            (Ae, "api", json!("Nx"), "api"),
            (Group, "mt", json!(3), "mt"),
            (Group, "csy", json!(1), "csy"),
            (Group, "spty", json!("x"), "spty"),
            (RemoteCse, "cb", json!("/x"), "cb"),
            (RemoteCse, "csi", json!("/x"), "csi"),
            (RemoteCse, "cst", json!(1), "cst"),
            (Subscription, "psn", json!(1), "psn"),
            (Subscription, "su", json!("/x"), "su"),
            // null on mandatory
            (Ae, "rr", Value::Null, "rr null"),
            (Ae, "srv", Value::Null, "srv null"),
            (Subscription, "nu", Value::Null, "nu null"),
            (Group, "mid", Value::Null, "mid null"),
            (Group, "mnm", Value::Null, "mnm null"),
            (AccessControlPolicy, "pvs", Value::Null, "pvs null"),
            (AccessControlPolicy, "pv", Value::Null, "pv null"),
            (RemoteCse, "rr", Value::Null, "csr rr null"),
            // wrong values
            (Container, "mni", json!(-3), "negative mni"),
            (Container, "et", json!("20000101T000000"), "et in the past"),
            (Subscription, "nu", json!([]), "nu emptied"),
            (
                AccessControlPolicy,
                "pvs",
                json!({"acr": []}),
                "pvs emptied",
            ),
            (
                AccessControlPolicy,
                "pv",
                json!({"acr": [{"acor": ["all"], "acop": 64}]}),
                "acop 64",
            ),
        ];
        for (ty, attr, v, case) in wrong {
            let content = obj(json!({ *attr: v.clone() }));
            assert_bad(validate_update(*ty, &content), attr, case);
        }
    }

    #[test]
    fn acpi_update_must_be_alone() {
        let content = obj(json!({"acpi": ["/cse/acp"], "lbl": ["x"]}));
        assert_bad(
            validate_update(Container, &content),
            "acpi",
            "acpi with lbl",
        );
    }

    #[test]
    fn read_only_lists_match_the_tables() {
        for ty in ResourceType::ALL {
            let from_table: Vec<&str> = attributes(ty)
                .iter()
                .filter(|a| a.create == Create::NotAllowed && !a.update)
                .map(|a| a.name)
                .collect();
            let mut listed = read_only_attributes(ty).to_vec();
            let mut expected = from_table.clone();
            listed.sort_unstable();
            expected.sort_unstable();
            assert_eq!(listed, expected, "{ty}");
            for universal in ["ri", "pi", "ct", "lt", "ty"] {
                assert!(listed.contains(&universal), "{ty} lacks {universal}");
            }
        }
    }

    #[test]
    fn tables_are_consistent() {
        for ty in ResourceType::ALL {
            let attrs = attributes(ty);
            for (i, a) in attrs.iter().enumerate() {
                assert!(
                    attrs[i + 1..].iter().all(|b| b.name != a.name),
                    "{ty}: duplicate {}",
                    a.name
                );
                // NP at creation but updatable would make no sense for the hosted types, but
                // for semanticOpExec, an UPDATE's request (TS-0004 table 7.4.34.1-3).
                let update_only = (ty, a.name) == (ResourceType::SemanticDescriptor, "soe");
                assert!(
                    update_only || !(a.create == Create::NotAllowed && a.update),
                    "{ty}: {}",
                    a.name
                );
            }
            assert_eq!(
                attrs.iter().any(|a| a.name == "acpi"),
                ty.has_acpi(),
                "{ty}: acpi presence differs from ResourceType::has_acpi"
            );
        }
    }

    #[test]
    fn attribute_names() {
        for name in [
            "rn", "ri", "ct", "lbl", "mni", "cni", "con", "cnf", "api", "aei", "rr", "nu", "enc",
            "mid", "mnm", "cnm", "csi", "cb", "pv", "pvs", "cr", "srt", "dcse",
        ] {
            assert!(is_attribute_name(name), "{name}");
        }
        for name in ["rcn", "foo", "acr", "acop", "net", "", "m2m:cnt", "MNI"] {
            assert!(!is_attribute_name(name), "{name}");
        }
    }

    #[test]
    fn inner_content_extraction() {
        let pc = json!({"m2m:cnt": {"mni": 1}});
        assert_eq!(inner_content(Container, &pc).unwrap().len(), 1);
        for bad in [
            json!("x"),
            json!([]),
            json!({"m2m:cin": {}}),
            json!({"m2m:cnt": []}),
            json!({"m2m:cnt": {}, "m2m:cin": {}}),
            json!({}),
        ] {
            let e = inner_content(Container, &bad).unwrap_err();
            assert_eq!(e.rsc, Rsc::BadRequest, "{bad}");
        }
    }

    #[test]
    fn value_helpers() {
        for ok in ["PT10S", "P1D", "P1DT2H3M4.5S", "P2W"] {
            assert!(check_iso_duration(ok), "{ok}");
        }
        for bad in ["", "P", "PT", "10S", "P1DT", "PT10", "P-1D"] {
            assert!(!check_iso_duration(bad), "{bad}");
        }
        for ok in ["1", "2", "2a", "3", "4", "10"] {
            assert!(check_release_version(ok), "{ok}");
        }
        for bad in ["", "a", "0", "3A", "2aa", "100", "3.0"] {
            assert!(!check_release_version(bad), "{bad}");
        }
        for ok in ["a", "A1", "x.y-z_1", "0", "lat"] {
            assert!(check_resource_name(ok), "{ok}");
        }
        for bad in [
            "",
            "_a",
            ".",
            "~x",
            "a~b",
            "é",
            "la",
            "a%20b",
            "secureStorage",
        ] {
            assert!(!check_resource_name(bad), "{bad}");
        }
    }

    #[test]
    fn arbitrary_values_never_panic() {
        let samples = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(u64::MAX),
            json!(1e300),
            json!(""),
            json!("é/ü:9:9:9"),
            json!("/"),
            json!([]),
            json!([null, [], {}]),
            json!({}),
            json!({"acr": [null]}),
            json!({"acr": [{"acco": [{"aclr": {"accr": [null, 1, 2]}}]}]}),
        ];
        for ty in ResourceType::ALL {
            for a in attributes(ty) {
                for v in &samples {
                    let m = obj(json!({ a.name: v.clone() }));
                    let _ = validate_create(ty, &m);
                    let _ = validate_update(ty, &m);
                }
            }
        }
    }
}
