//! The privileges and selfPrivileges attributes (`m2m:setOfAcrs`, TS-0004 clause 6.3.5.26/6.3.5.27; TS-0003
//! clause 7.1.3) parsed from their JSON short-name form `{"acr":[{"acor":[..],"acop":n,..}]}`.
//!
//! The parse is lenient and fails closed: whatever cannot be understood is kept, with its reason, as a part
//! that never grants access. Only a top level that is not an object, or an `acr` that is not a list, is an
//! error. [`Privileges::problems`] lists everything that was not understood, and the parts the decision can
//! never evaluate (`accc` country codes, `acod` with `spty`), for a caller that wants to reject such a
//! policy when it is created or updated. `accr` circles are evaluated when the request carries a location.
//!
//! | not understood | effect |
//! |---|---|
//! | a rule that is not an object; `acor` or `acop` missing or of the wrong type; `acaf` not a boolean; an `acco` or `acod` that is not a list; an unknown key in a rule (e.g. a later release's `aca`, which would narrow the rule) | the rule grants nothing |
//! | an `acor` element that is not a string | that element matches nothing |
//! | an `acco` element that is not an object, or has an unknown key; an `acip` or `aclr` of the wrong shape | that context evaluates to false |
//! | an `actw` window that does not parse | that window matches nothing |
//! | an `ipv4`/`ipv6` element that does not parse | that address matches nothing |
//! | an `acod` element that is not an object, has an unknown key, a bad `ty`, or a missing or bad `chty` | that element admits nothing |
//!
//! Decisions where the spec is silent: an empty `acco`, `actw` or `acod` list is the same as an absent one
//! (their multiplicity is 0..n, and XML cannot tell the two apart); `acip` and `aclr` (0..1) that are present
//! constrain even when empty, so `"acip":{}` admits no address. Operation bits above 32 are ignored.

use super::ip::Cidr;
use super::window::Schedule;
use serde_json::Value;

/// A parsed privileges or selfPrivileges attribute.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Privileges {
    pub rules: Vec<Rule>,
    /// Problems at the top level (e.g. unknown keys next to `acr`); they do not affect the rules.
    pub notes: Vec<String>,
}

/// One access control rule (`m2m:accessControlRule`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rule {
    /// acor: the entries as given; non-string elements are dropped (and noted in `notes`).
    pub originators: Vec<String>,
    /// acop: bit mask of [`AccessOperation::bit`](super::AccessOperation::bit).
    pub operations: u32,
    /// acco: empty = any context.
    pub contexts: Vec<Context>,
    /// acaf, default false.
    pub auth_flag: bool,
    /// acod: empty = any child resource type.
    pub object_details: Vec<ObjectDetail>,
    /// aca (accessControlAttributes, Release 4): `None` = the rule covers every attribute;
    /// otherwise it grants the operation only where it touches no other attribute.
    pub attributes: Option<Vec<String>>,
    /// Why this rule can never grant, when it could not be understood.
    pub defect: Option<String>,
    /// Non-fatal problems (e.g. a dropped acor element).
    pub notes: Vec<String>,
}

/// One element of acco: time AND ip AND location; an absent part admits everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    /// actw: `None` = absent; otherwise the time must be in one of the windows.
    pub windows: Option<Vec<Window>>,
    /// acip: `None` = absent.
    pub ip: Option<IpAddresses>,
    /// aclr: `None` = absent.
    pub region: Option<Region>,
    /// Why this context always evaluates to false, when it could not be understood.
    pub defect: Option<String>,
}

/// One actw entry, as written and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub text: String,
    pub schedule: Result<Schedule, String>,
}

/// acip: ipv4 and ipv6 address blocks, each as written and parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IpAddresses {
    pub blocks: Vec<(String, Result<Cidr, String>)>,
}

/// aclr (`m2m:locationRegion`).
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    /// accr: latitude and longitude in degrees, radius in metres.
    Circle { lat: f64, lon: f64, radius: f64 },
    /// accc: ISO 3166-1 country codes.
    Countries(Vec<String>),
    /// Not understood: matches nothing.
    Invalid(String),
}

/// One acod element.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectDetail {
    /// ty: the type the target must have.
    pub resource_type: Option<u16>,
    /// spty, as given; its presence makes the element unevaluable here (false).
    pub specialization_type: Option<Value>,
    /// chty: the child resource types that may be created.
    pub child_types: Vec<u16>,
    /// Why this element admits nothing, when it could not be understood.
    pub defect: Option<String>,
}

impl Privileges {
    /// Parse `{"acr":[...]}`. See the module documentation for how unknown parts are treated.
    /// Whether a rule limits itself to some attributes (`aca`): then a decision needs to know
    /// which attributes the operation touches.
    pub fn has_attribute_rules(&self) -> bool {
        self.rules.iter().any(|r| r.attributes.is_some())
    }

    pub fn from_json(v: &Value) -> Result<Privileges, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("privileges must be an object, not {}", kind(v)))?;
        let mut out = Privileges::default();
        for key in obj.keys() {
            if key != "acr" {
                out.notes.push(format!("unknown key '{key}' ignored"));
            }
        }
        match obj.get("acr") {
            None => {}
            Some(Value::Array(rules)) => {
                out.rules = rules.iter().map(parse_rule).collect();
            }
            Some(other) => return Err(format!("acr must be a list, not {}", kind(other))),
        }
        Ok(out)
    }

    /// Every part that was not understood, as "rule N: ..." lines. Empty for a clean policy.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.notes.clone();
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            if let Some(d) = &r.defect {
                out.push(format!("rule {n}: {d}"));
            }
            out.extend(r.notes.iter().map(|x| format!("rule {n}: {x}")));
            for (j, c) in r.contexts.iter().enumerate() {
                let m = j + 1;
                if let Some(d) = &c.defect {
                    out.push(format!("rule {n} acco {m}: {d}"));
                }
                for w in c.windows.iter().flatten() {
                    if let Err(e) = &w.schedule {
                        out.push(format!("rule {n} acco {m}: window '{}': {e}", w.text));
                    }
                }
                for (text, b) in c.ip.iter().flat_map(|ip| &ip.blocks) {
                    if let Err(e) = b {
                        out.push(format!("rule {n} acco {m}: address '{text}': {e}"));
                    }
                }
                match &c.region {
                    Some(Region::Invalid(e)) => out.push(format!("rule {n} acco {m}: {e}")),
                    // The decision has no country for an originator: such a context never grants.
                    Some(Region::Countries(_)) => out.push(format!(
                        "rule {n} acco {m}: accc country codes cannot be evaluated"
                    )),
                    _ => {}
                }
            }
            for (j, d) in r.object_details.iter().enumerate() {
                if let Some(e) = &d.defect {
                    out.push(format!("rule {n} acod {}: {e}", j + 1));
                } else if d.specialization_type.is_some() {
                    // The decision is not given the target's specialization: it never admits.
                    out.push(format!(
                        "rule {n} acod {}: spty cannot be evaluated (the target's specialization is not known)",
                        j + 1
                    ));
                }
            }
        }
        out
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_rule(v: &Value) -> Rule {
    let mut rule = Rule::default();
    let Some(obj) = v.as_object() else {
        rule.defect = Some(format!("a rule must be an object, not {}", kind(v)));
        return rule;
    };
    let mut defects: Vec<String> = Vec::new();
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "acor" | "acop" | "acco" | "acaf" | "acod" | "aca"
        ) {
            defects.push(format!("unknown rule element '{key}'"));
        }
    }
    match obj.get("acor") {
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => rule.originators.push(s.clone()),
                    other => rule
                        .notes
                        .push(format!("acor element {} ignored", kind(other))),
                }
            }
        }
        Some(other) => defects.push(format!("acor must be a list, not {}", kind(other))),
        None => defects.push("acor is missing".into()),
    }
    match obj.get("acop") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(bits) => rule.operations = (bits & 0x3f) as u32,
            None => defects.push(format!("acop {n} is not a non-negative integer")),
        },
        Some(other) => defects.push(format!("acop must be a number, not {}", kind(other))),
        None => defects.push("acop is missing".into()),
    }
    match obj.get("acaf") {
        None => {}
        Some(Value::Bool(b)) => rule.auth_flag = *b,
        Some(other) => defects.push(format!("acaf must be a boolean, not {}", kind(other))),
    }
    match obj.get("acco") {
        None => {}
        Some(Value::Array(items)) => rule.contexts = items.iter().map(parse_context).collect(),
        Some(other) => defects.push(format!("acco must be a list, not {}", kind(other))),
    }
    match obj.get("aca") {
        None => {}
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect();
            match names {
                Some(names) => rule.attributes = Some(names),
                None => defects.push("aca must be a list of attribute names".into()),
            }
        }
        Some(other) => defects.push(format!("aca must be a list, not {}", kind(other))),
    }
    match obj.get("acod") {
        None => {}
        Some(Value::Array(items)) => {
            rule.object_details = items.iter().map(parse_object_detail).collect()
        }
        Some(other) => defects.push(format!("acod must be a list, not {}", kind(other))),
    }
    if !defects.is_empty() {
        rule.defect = Some(defects.join("; "));
    }
    rule
}

fn parse_context(v: &Value) -> Context {
    let mut ctx = Context::default();
    let Some(obj) = v.as_object() else {
        ctx.defect = Some(format!("a context must be an object, not {}", kind(v)));
        return ctx;
    };
    let mut defects: Vec<String> = Vec::new();
    for (key, val) in obj {
        match key.as_str() {
            "actw" => match parse_windows(val) {
                Ok(w) => ctx.windows = (!w.is_empty()).then_some(w),
                Err(e) => defects.push(e),
            },
            "acip" => match parse_ip(val) {
                Ok(ip) => ctx.ip = Some(ip),
                Err(e) => defects.push(e),
            },
            "aclr" => ctx.region = Some(parse_region(val)),
            other => defects.push(format!("unknown context element '{other}'")),
        }
    }
    if !defects.is_empty() {
        ctx.defect = Some(defects.join("; "));
    }
    ctx
}

fn parse_windows(v: &Value) -> Result<Vec<Window>, String> {
    let one = |text: &str| Window {
        text: text.to_string(),
        schedule: Schedule::parse(text).map_err(|e| e.0),
    };
    match v {
        // A single entry given as a string instead of a list of one.
        Value::String(s) => Ok(vec![one(s)]),
        Value::Array(items) => Ok(items
            .iter()
            .map(|item| match item {
                Value::String(s) => one(s),
                other => Window {
                    text: other.to_string(),
                    schedule: Err(format!("a window must be a string, not {}", kind(other))),
                },
            })
            .collect()),
        other => Err(format!("actw must be a list, not {}", kind(other))),
    }
}

fn parse_ip(v: &Value) -> Result<IpAddresses, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("acip must be an object, not {}", kind(v)))?;
    let mut out = IpAddresses::default();
    for (key, val) in obj {
        let parse: fn(&str) -> Result<Cidr, String> = match key.as_str() {
            "ipv4" => Cidr::parse_v4,
            "ipv6" => Cidr::parse_v6,
            other => return Err(format!("unknown acip element '{other}'")),
        };
        let items = val
            .as_array()
            .ok_or_else(|| format!("acip {key} must be a list, not {}", kind(val)))?;
        for item in items {
            match item {
                Value::String(s) => out.blocks.push((s.clone(), parse(s))),
                other => out.blocks.push((
                    other.to_string(),
                    Err(format!("an address must be a string, not {}", kind(other))),
                )),
            }
        }
    }
    Ok(out)
}

fn parse_region(v: &Value) -> Region {
    let Some(obj) = v.as_object() else {
        return Region::Invalid(format!("aclr must be an object, not {}", kind(v)));
    };
    if obj.len() != 1 {
        return Region::Invalid("aclr must hold exactly one of accr and accc".into());
    }
    if let Some(c) = obj.get("accr") {
        let nums: Option<Vec<f64>> = c
            .as_array()
            .map(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
            .unwrap_or(None);
        return match nums.as_deref() {
            Some(&[lat, lon, radius])
                if (-90.0..=90.0).contains(&lat)
                    && (-180.0..=180.0).contains(&lon)
                    && radius.is_finite()
                    && radius >= 0.0 =>
            {
                Region::Circle { lat, lon, radius }
            }
            _ => Region::Invalid(
                "accr must be [latitude -90..90, longitude -180..180, radius >= 0 in metres]"
                    .into(),
            ),
        };
    }
    if let Some(c) = obj.get("accc") {
        let codes: Option<Vec<String>> = c.as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
        });
        return match codes {
            Some(codes) => Region::Countries(codes),
            None => Region::Invalid("accc must be a list of country codes".into()),
        };
    }
    Region::Invalid(format!(
        "unknown aclr element '{}'",
        obj.keys().next().map(String::as_str).unwrap_or("")
    ))
}

fn parse_object_detail(v: &Value) -> ObjectDetail {
    let mut od = ObjectDetail::default();
    let Some(obj) = v.as_object() else {
        od.defect = Some(format!(
            "an acod element must be an object, not {}",
            kind(v)
        ));
        return od;
    };
    let mut defects: Vec<String> = Vec::new();
    let ty = |x: &Value| x.as_u64().and_then(|n| u16::try_from(n).ok());
    for (key, val) in obj {
        match key.as_str() {
            "ty" => match ty(val) {
                Some(t) => od.resource_type = Some(t),
                None => defects.push(format!("ty {val} is not a resource type")),
            },
            "spty" => od.specialization_type = Some(val.clone()),
            "chty" => match val.as_array() {
                Some(items) => match items.iter().map(ty).collect::<Option<Vec<u16>>>() {
                    Some(t) => od.child_types = t,
                    None => defects.push(format!("chty {val} is not a list of resource types")),
                },
                None => defects.push(format!("chty must be a list, not {}", kind(val))),
            },
            other => defects.push(format!("unknown acod element '{other}'")),
        }
    }
    if !obj.contains_key("chty") {
        defects.push("chty is missing".into());
    }
    if !defects.is_empty() {
        od.defect = Some(defects.join("; "));
    }
    od
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_rule() {
        let p = Privileges::from_json(&json!({"acr": [{
            "acor": ["all", "/id-in/C*"],
            "acop": 63,
            "acaf": true,
            "acco": [{
                "actw": ["* * 8-17 * * 1-5 *"],
                "acip": {"ipv4": ["10.0.0.0/8"], "ipv6": ["2001:db8::/32"]},
                "aclr": {"accr": [48.85, 2.35, 1000.0]}
            }],
            "acod": [{"ty": 2, "chty": [3, 23]}]
        }]}))
        .unwrap();
        assert!(p.problems().is_empty(), "{:?}", p.problems());
        let r = &p.rules[0];
        assert_eq!(r.originators, vec!["all", "/id-in/C*"]);
        assert_eq!(r.operations, 63);
        assert!(r.auth_flag);
        assert_eq!(r.contexts.len(), 1);
        assert_eq!(r.contexts[0].windows.as_ref().unwrap().len(), 1);
        assert_eq!(r.contexts[0].ip.as_ref().unwrap().blocks.len(), 2);
        assert_eq!(
            r.contexts[0].region,
            Some(Region::Circle {
                lat: 48.85,
                lon: 2.35,
                radius: 1000.0
            })
        );
        assert_eq!(r.object_details[0].resource_type, Some(2));
        assert_eq!(r.object_details[0].child_types, vec![3, 23]);
    }

    #[test]
    fn top_level_shapes() {
        assert!(Privileges::from_json(&json!(null)).is_err());
        assert!(Privileges::from_json(&json!([])).is_err());
        assert!(Privileges::from_json(&json!("acr")).is_err());
        assert!(Privileges::from_json(&json!({"acr": {}})).is_err());
        assert!(Privileges::from_json(&json!({"acr": null})).is_err());
        assert!(Privileges::from_json(&json!({"acr": 5})).is_err());
        assert_eq!(Privileges::from_json(&json!({})).unwrap().rules.len(), 0);
        assert_eq!(
            Privileges::from_json(&json!({"acr": []}))
                .unwrap()
                .rules
                .len(),
            0
        );
        let p = Privileges::from_json(&json!({"acr": [], "x": 1})).unwrap();
        assert_eq!(p.problems().len(), 1);
    }

    /// (rule JSON, whether the rule is defective)
    #[test]
    fn rule_defects() {
        let cases = [
            (json!({"acor": ["all"], "acop": 2}), false),
            (json!({"acor": ["all"], "acop": 2, "acaf": false}), false),
            (json!({"acor": [], "acop": 0}), false),
            (json!({"acor": ["all"], "acop": 2, "acco": []}), false),
            (json!({"acor": ["all"], "acop": 2, "acod": []}), false),
            (json!(null), true),
            (json!("all"), true),
            (json!([1]), true),
            (json!({"acop": 2}), true),
            (json!({"acor": ["all"]}), true),
            (json!({"acor": "all", "acop": 2}), true),
            (json!({"acor": ["all"], "acop": "2"}), true),
            (json!({"acor": ["all"], "acop": -1}), true),
            (json!({"acor": ["all"], "acop": 2.5}), true),
            (json!({"acor": ["all"], "acop": 2, "acaf": "false"}), true),
            (json!({"acor": ["all"], "acop": 2, "acaf": null}), true),
            (json!({"acor": ["all"], "acop": 2, "acco": {}}), true),
            (
                json!({"acor": ["all"], "acop": 2, "acod": {"chty": [3]}}),
                true,
            ),
            (json!({"acor": ["all"], "acop": 2, "aca": ["lbl"]}), false),
            (json!({"acor": ["all"], "acop": 2, "aca": []}), false),
            (json!({"acor": ["all"], "acop": 2, "aca": "lbl"}), true),
            (json!({"acor": ["all"], "acop": 2, "aca": [1]}), true),
            (
                json!({"acor": ["all"], "acop": 2, "aca": ["lbl"], "acx": 1}),
                true,
            ),
        ];
        for (v, defective) in cases {
            let p = Privileges::from_json(&json!({ "acr": [v.clone()] })).unwrap();
            assert_eq!(p.rules[0].defect.is_some(), defective, "{v}");
        }
    }

    #[test]
    fn acop_keeps_only_known_bits() {
        let p =
            Privileges::from_json(&json!({"acr": [{"acor": ["all"], "acop": 64 + 2}]})).unwrap();
        assert_eq!(p.rules[0].operations, 2);
        let p =
            Privileges::from_json(&json!({"acr": [{"acor": ["all"], "acop": u64::MAX}]})).unwrap();
        assert_eq!(p.rules[0].operations, 63);
    }

    #[test]
    fn non_string_originators_are_dropped_and_noted() {
        let p = Privileges::from_json(
            &json!({"acr": [{"acor": ["Cae", 5, null, {"a": 1}], "acop": 2}]}),
        )
        .unwrap();
        assert_eq!(p.rules[0].originators, vec!["Cae"]);
        assert!(p.rules[0].defect.is_none());
        assert_eq!(p.rules[0].notes.len(), 3);
        assert_eq!(p.problems().len(), 3);
    }

    /// (acco element, whether the context is defective)
    #[test]
    fn context_defects() {
        let cases = [
            (json!({}), false),
            (json!({"actw": []}), false),
            (json!({"actw": "* * * * * * *"}), false),
            (json!({"acip": {}}), false),
            (json!({"acip": {"ipv4": []}}), false),
            (json!({"aclr": {"accc": ["FR"]}}), false),
            (json!(null), true),
            (json!([]), true),
            (json!("actw"), true),
            (json!({"actx": ["* * * * * * *"]}), true),
            (json!({"actw": 5}), true),
            (json!({"actw": {}}), true),
            (json!({"acip": []}), true),
            (json!({"acip": "10.0.0.1"}), true),
            (json!({"acip": {"ipv4": "10.0.0.1"}}), true),
            (json!({"acip": {"ipv5": ["10.0.0.1"]}}), true),
        ];
        for (v, defective) in cases {
            let p = Privileges::from_json(
                &json!({"acr": [{"acor": ["all"], "acop": 2, "acco": [v.clone()]}]}),
            )
            .unwrap();
            assert_eq!(p.rules[0].contexts[0].defect.is_some(), defective, "{v}");
            assert!(p.rules[0].defect.is_none());
        }
    }

    #[test]
    fn regions() {
        let cases = [
            (json!({"accr": [0.0, 0.0, 10.0]}), true),
            (json!({"accr": [90, -180, 0]}), true),
            (json!({"accc": ["FR", "DE"]}), true),
            (json!({"accc": []}), true),
            (json!({}), false),
            (json!({"accr": [0.0, 0.0, 10.0], "accc": ["FR"]}), false),
            (json!({"accr": [0.0, 0.0]}), false),
            (json!({"accr": [0.0, 0.0, 1.0, 2.0]}), false),
            (json!({"accr": [91.0, 0.0, 1.0]}), false),
            (json!({"accr": [0.0, 181.0, 1.0]}), false),
            (json!({"accr": [0.0, 0.0, -1.0]}), false),
            (json!({"accr": ["0", 0.0, 1.0]}), false),
            (json!({"accr": "0,0,1"}), false),
            (json!({"accc": "FR"}), false),
            (json!({"accc": [1]}), false),
            (json!({"acc": ["FR"]}), false),
            (json!([0.0, 0.0, 1.0]), false),
        ];
        for (v, valid) in cases {
            let r = parse_region(&v);
            assert_eq!(!matches!(r, Region::Invalid(_)), valid, "{v}: {r:?}");
        }
    }

    #[test]
    fn object_details() {
        let cases = [
            (json!({"chty": [3]}), false),
            (json!({"ty": 2, "chty": [3, 4]}), false),
            (
                json!({"ty": 28, "spty": "org.onem2m.x", "chty": [28]}),
                false,
            ),
            (json!({"chty": []}), false),
            (json!({}), true),
            (json!({"ty": 2}), true),
            (json!({"chty": 3}), true),
            (json!({"chty": ["3"]}), true),
            (json!({"chty": [-3]}), true),
            (json!({"chty": [70000]}), true),
            (json!({"ty": "2", "chty": [3]}), true),
            (json!({"chty": [3], "x": 1}), true),
            (json!(3), true),
        ];
        for (v, defective) in cases {
            let od = parse_object_detail(&v);
            assert_eq!(od.defect.is_some(), defective, "{v}: {od:?}");
        }
    }

    /// Parts that parse but that the decision can never evaluate are problems, so a CREATE or
    /// UPDATE refuses them (4000) instead of storing a rule that silently never grants.
    #[test]
    fn unevaluable_parts_are_problems() {
        let with = |extra: Value| {
            let mut rule = json!({"acor": ["all"], "acop": 2});
            rule.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Privileges::from_json(&json!({ "acr": [rule] }))
                .unwrap()
                .problems()
        };
        let countries = with(json!({"acco": [{"aclr": {"accc": ["FR"]}}]}));
        assert_eq!(countries.len(), 1, "{countries:?}");
        assert!(countries[0].contains("accc"), "{countries:?}");
        let spty = with(json!({"acod": [{"ty": 28, "spty": "org.onem2m.x", "chty": [28]}]}));
        assert_eq!(spty.len(), 1, "{spty:?}");
        assert!(spty[0].contains("spty"), "{spty:?}");
        // A circle is evaluated against the request's location: not a problem.
        assert!(with(json!({"acco": [{"aclr": {"accr": [48.85, 2.35, 1000]}}]})).is_empty());
        assert!(with(json!({"acod": [{"ty": 2, "chty": [3]}]})).is_empty());
    }

    #[test]
    fn hostile_shapes_never_panic() {
        let nasty = [
            json!({"acr": [null, 1, "x", [], {}, {"acor": null, "acop": null, "acco": null, "acod": null}]}),
            json!({"acr": [{"acor": [[]], "acop": 1e300, "acco": [null, [], 1, {"actw": [null, 1, [], {}]}]}]}),
            json!({"acr": [{"acor": ["all"], "acop": 2, "acco": [{"acip": {"ipv4": [null, 1, "x"], "ipv6": [{}]}}]}]}),
            json!({"acr": [{"acor": ["all"], "acop": 2, "acco": [{"aclr": {"accr": [null, null, null]}}]}]}),
            json!({"acr": [{"acor": ["all"], "acop": 2, "acod": [null, {"chty": [null]}, {"ty": {}, "chty": {}}]}]}),
            json!({"acr": [{"acor": ["all"], "acop": 2, "acco": [{"actw": ["", " ", "* * * * * * * * * *", "99999999999999999999 * * * * * *"]}]}]}),
        ];
        for v in nasty {
            let p = Privileges::from_json(&v).unwrap();
            let _ = p.problems();
        }
    }
}
