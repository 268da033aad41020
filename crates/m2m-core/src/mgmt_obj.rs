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

/// NP at create, O at update, set by the CSE at creation (multiplicity 1).
const fn attr_np_create(name: &'static str, kind: Kind) -> AttrSpec {
    crate::schema::attr(name, kind, Create::NotAllowed, true)
}

/// The specializations of TS-0001 Annex D clauses D.2 to D.11.
pub static SPECS: &[MgmtSpec] = &[
    MgmtSpec {
        mgd: 1001,
        name: "firmware",
        root: "m2m:fwr",
        attributes: FIRMWARE,
        always_true: &[],
        exclusive: &[],
        defaults: &[("uds", DefaultValue::Uninitialized)],
    },
    MgmtSpec {
        mgd: 1002,
        name: "software",
        root: "m2m:swr",
        attributes: SOFTWARE,
        always_true: &[],
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
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1004,
        name: "areaNwkInfo",
        root: "m2m:ani",
        attributes: AREA_NWK_INFO,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1005,
        name: "areaNwkDeviceInfo",
        root: "m2m:andi",
        attributes: AREA_NWK_DEVICE_INFO,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1006,
        name: "battery",
        root: "m2m:bat",
        attributes: BATTERY,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1007,
        name: "deviceInfo",
        root: "m2m:dvi",
        attributes: DEVICE_INFO,
        always_true: &[],
        exclusive: &[],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1008,
        name: "deviceCapability",
        root: "m2m:dvc",
        attributes: DEVICE_CAPABILITY,
        always_true: &["ena", "dis"],
        exclusive: &[("ena", "dis")],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1009,
        name: "reboot",
        root: "m2m:rbo",
        attributes: REBOOT,
        always_true: &["rbo", "far"],
        exclusive: &[("rbo", "far")],
        defaults: &[],
    },
    MgmtSpec {
        mgd: 1010,
        name: "eventLog",
        root: "m2m:evl",
        attributes: EVENT_LOG,
        always_true: &["lga", "lgo"],
        exclusive: &[("lga", "lgo")],
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

/// mgmtDefinition values of TS-0004 table 6.3.4.2.22-1 (0 and 1001-1026): the ones not in
/// [`SPECS`] are specified but not hosted here.
fn is_specified(mgd: u64) -> bool {
    mgd == 0 || (1001..=1026).contains(&mgd)
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
