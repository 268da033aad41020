//! `<flexContainer>` specializations (TS-0004 clause 7.4.37, Annex J; the module classes of
//! TS-0023): the name a specialization is represented under (`cod:lock`), its
//! containerDefinition (`org.onem2m.common.moduleclass.lock`) and its custom attributes.
//!
//! The registry holds built-in module classes of the home domain the door-lock scenario uses
//! (lock, doorStatus, battery, binarySwitch, temperature), and whatever a CSE adds at start from
//! definition files in the same JSON form ([`Registry::add_json`]):
//!
//! ```json
//! [{ "key": "cod:lock", "cnd": "org.onem2m.common.moduleclass.lock",
//!    "attributes": [{ "name": "lock", "type": "boolean", "mandatory": true }] }]
//! ```
//!
//! `"mandatory": true` is a data point of multiplicity 1 (TS-0023): once given, an UPDATE does
//! not remove it (null is refused). A custom attribute is optional at CREATE, as TS-0004 table
//! 7.4.37.1-2 writes `[customAttribute]` (O), unless its definition says `"create": "M"`, as the
//! generic interworking ones of Annex J do for `gisn`, `gion` and `gios`.
//!
//! Types: `boolean`, `integer`, `nonNegInteger`, `positiveInteger`, `float`, `string`,
//! `timestamp`, `list`, `any`.
//!
//! A definition without `cnd` is a specialization whose containerDefinition the TS leaves
//! undefined (the generic interworking ones of TS-0004 Annex J, `m2m:gis`, `m2m:gio`): any
//! containerDefinition is accepted, and since it cannot tell the specialization, the CSE keeps
//! the key with the resource (`Resource::specialization` in m2m-cse).

use crate::error::{M2mError, M2mResult};
use crate::schema::{check_value, Kind};
use crate::status::ResponseStatusCode;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

/// One custom attribute of a specialization.
#[derive(Clone, Debug)]
pub struct CustomAttribute {
    pub name: String,
    pub kind: Kind,
    /// Multiplicity 1: never removed by an UPDATE.
    pub mandatory: bool,
    /// Given at every CREATE (`"create": "M"`); TS-0004 makes custom attributes optional there.
    pub required_at_create: bool,
}

/// A specialization of `<flexContainer>`.
#[derive(Clone, Debug)]
pub struct Specialization {
    /// The JSON root name, `domain:name`.
    pub key: String,
    /// containerDefinition; `None` where the TS leaves it undefined (any is accepted).
    pub cnd: Option<String>,
    pub attributes: Vec<CustomAttribute>,
}

/// The specializations a CSE knows, by key and by containerDefinition.
#[derive(Default)]
pub struct Registry {
    by_key: HashMap<String, Specialization>,
    key_of_cnd: HashMap<String, String>,
}

const BUILT_IN: &str = r#"[
  { "key": "cod:lock", "cnd": "org.onem2m.common.moduleclass.lock", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "lock", "type": "boolean", "mandatory": true } ] },
  { "key": "cod:dooSs", "cnd": "org.onem2m.common.moduleclass.doorStatus", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "dooSe", "type": "nonNegInteger", "mandatory": true },
    { "name": "opeDn", "type": "timestamp" },
    { "name": "opeAm", "type": "boolean" } ] },
  { "key": "cod:bat", "cnd": "org.onem2m.common.moduleclass.battery", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "lvl", "type": "integer", "mandatory": true },
    { "name": "capay", "type": "integer" },
    { "name": "reche", "type": "boolean" },
    { "name": "charg", "type": "boolean" },
    { "name": "discg", "type": "boolean" },
    { "name": "lowBy", "type": "boolean" },
    { "name": "batTd", "type": "integer" },
    { "name": "chaVe", "type": "float" } ] },
  { "key": "cod:binSh", "cnd": "org.onem2m.common.moduleclass.binarySwitch", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "state", "type": "boolean", "mandatory": true } ] },
  { "key": "cod:tempe", "cnd": "org.onem2m.common.moduleclass.temperature", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "curT0", "type": "float", "mandatory": true },
    { "name": "tarTe", "type": "float" },
    { "name": "unit", "type": "nonNegInteger" },
    { "name": "minVe", "type": "float" },
    { "name": "maxVe", "type": "float" },
    { "name": "steVe", "type": "float" } ] },
  { "key": "cod:aiQSr", "cnd": "org.onem2m.common.moduleclass.airQualitySensor", "attributes": [
    { "name": "dgt", "type": "timestamp" },
    { "name": "monEd", "type": "boolean" },
    { "name": "pm1", "type": "integer" },
    { "name": "pm25", "type": "integer" },
    { "name": "pm10", "type": "integer" },
    { "name": "odor", "type": "integer" },
    { "name": "tsp", "type": "float" },
    { "name": "humiy", "type": "float" },
    { "name": "tempe", "type": "float" },
    { "name": "airPe", "type": "float" },
    { "name": "co", "type": "float" },
    { "name": "co2", "type": "float" },
    { "name": "ch2o", "type": "float" },
    { "name": "voc", "type": "float" },
    { "name": "no2", "type": "float" },
    { "name": "so2", "type": "float" },
    { "name": "o3", "type": "float" },
    { "name": "noise", "type": "float" },
    { "name": "winDn", "type": "float" },
    { "name": "winSd", "type": "float" } ] },
  { "key": "m2m:gis", "attributes": [
    { "name": "gisn", "type": "string", "mandatory": true, "create": "M" },
    { "name": "giip", "type": "list" },
    { "name": "giop", "type": "list" } ] },
  { "key": "m2m:gio", "attributes": [
    { "name": "gion", "type": "string", "mandatory": true, "create": "M" },
    { "name": "giip", "type": "list" },
    { "name": "giop", "type": "list" },
    { "name": "giil", "type": "list" },
    { "name": "giol", "type": "list" },
    { "name": "gios", "type": "string", "mandatory": true, "create": "M" } ] }
]"#;

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "boolean" => Kind::Bool,
        "integer" => Kind::Integer,
        "nonNegInteger" => Kind::NonNegInt,
        "positiveInteger" => Kind::PosInt,
        "float" | "double" => Kind::Number,
        "string" => Kind::Str,
        "timestamp" => Kind::Timestamp,
        "list" => Kind::List(&Kind::Any),
        "any" => Kind::Any,
        _ => return None,
    })
}

impl Registry {
    /// The built-in module classes.
    pub fn built_in() -> Self {
        let mut r = Registry::default();
        // The text above is this crate's own: it parses.
        let _ = r.add_json(BUILT_IN);
        r
    }

    /// Adds the specializations of one definition file; a malformed one is refused whole.
    pub fn add_json(&mut self, text: &str) -> Result<usize, String> {
        let defs: Vec<Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON list: {e}"))?;
        let mut parsed = Vec::with_capacity(defs.len());
        for d in &defs {
            let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
            let key = s("key").ok_or("a definition without 'key'")?;
            if !key.contains(':') {
                return Err(format!("'{key}': a key is 'domain:name'"));
            }
            let cnd = s("cnd");
            let mut attributes = Vec::new();
            for a in d
                .get("attributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = a
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("'{key}': an attribute without 'name'"))?;
                let ty = a.get("type").and_then(Value::as_str).unwrap_or("any");
                let kind =
                    kind_of(ty).ok_or_else(|| format!("'{key}.{name}': unknown type '{ty}'"))?;
                attributes.push(CustomAttribute {
                    name: name.to_owned(),
                    kind,
                    mandatory: a.get("mandatory").and_then(Value::as_bool).unwrap_or(false),
                    required_at_create: match a.get("create") {
                        None => false,
                        Some(Value::String(o)) if o == "O" => false,
                        Some(Value::String(m)) if m == "M" => true,
                        Some(other) => {
                            return Err(format!(
                                "'{key}.{name}': create is \"M\" or \"O\", not {other}"
                            ))
                        }
                    },
                });
            }
            parsed.push(Specialization {
                key,
                cnd,
                attributes,
            });
        }
        let n = parsed.len();
        for spec in parsed {
            if let Some(cnd) = &spec.cnd {
                self.key_of_cnd.insert(cnd.clone(), spec.key.clone());
            }
            self.by_key.insert(spec.key.clone(), spec);
        }
        Ok(n)
    }

    pub fn by_key(&self, key: &str) -> Option<&Specialization> {
        self.by_key.get(key)
    }

    pub fn by_cnd(&self, cnd: &str) -> Option<&Specialization> {
        self.key_of_cnd.get(cnd).and_then(|k| self.by_key.get(k))
    }
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Registry::built_in()))
}

/// Adds definition files' specializations to this process's registry (a CSE at start).
pub fn install(text: &str) -> Result<usize, String> {
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .add_json(text)
}

/// Looks a specialization up by its key.
pub fn by_key(key: &str) -> Option<Specialization> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .by_key(key)
        .cloned()
}

/// Looks a specialization up by its containerDefinition.
pub fn by_cnd(cnd: &str) -> Option<Specialization> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .by_cnd(cnd)
        .cloned()
}

/// The key a flexContainer with this containerDefinition is represented under.
pub fn key_of(cnd: &str) -> Option<String> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .key_of_cnd
        .get(cnd)
        .cloned()
}

/// The representation inside a flexContainer's content: one `domain:name` member this CSE
/// knows (TS-0004 clause 7.4.37.2.1: 4125 SPECIALIZATION_SCHEMA_NOT_FOUND otherwise).
pub fn inner_content(outer: &Map<String, Value>) -> M2mResult<&Map<String, Value>> {
    let (key, inner) = match (outer.len(), outer.iter().next()) {
        (1, Some((k, Value::Object(inner)))) => (k, inner),
        _ => {
            return Err(M2mError::bad_request(
                "content must be a single specialization object such as 'cod:lock'",
            ))
        }
    };
    if !key.contains(':') || key.starts_with(':') || key.ends_with(':') {
        return Err(M2mError::bad_request(format!(
            "'{key}' is not a specialization name (domain:name)"
        )));
    }
    if by_key(key).is_none() {
        return Err(M2mError::new(
            ResponseStatusCode::SpecializationSchemaNotFound,
            format!("the specialization '{key}' is not known to this CSE"),
        ));
    }
    Ok(inner)
}

impl Specialization {
    /// Whether a flexContainer of this specialization may have `cnd` as its containerDefinition:
    /// its own; for one whose containerDefinition is undefined, any that is not another
    /// specialization's (a generic flexContainer does not pass for a lock).
    pub fn admits_cnd(&self, cnd: Option<&str>) -> bool {
        match (&self.cnd, cnd) {
            (Some(own), Some(cnd)) => cnd == own,
            (None, Some(cnd)) => key_of(cnd).is_none(),
            (_, None) => false,
        }
    }

    /// Checks the custom attributes of a CREATE (`create`) or UPDATE content: each must be one of
    /// the specialization's, of its type; a CREATE carries those required at CREATE, an UPDATE
    /// does not remove the mandatory ones.
    pub fn check(&self, content: &Map<String, Value>, create: bool) -> M2mResult<()> {
        for (name, value) in content {
            if crate::schema::attribute(crate::ResourceType::FlexContainer, name).is_some() {
                continue;
            }
            let attr = self
                .attributes
                .iter()
                .find(|a| a.name == *name)
                .ok_or_else(|| {
                    M2mError::bad_request(format!(
                        "attribute '{name}': not an attribute of {}",
                        self.key
                    ))
                })?;
            if value.is_null() {
                if create || attr.mandatory {
                    return Err(M2mError::bad_request(format!(
                        "attribute '{name}': null is not allowed here"
                    )));
                }
                continue;
            }
            check_value(&attr.kind, value, name)?;
        }
        if create {
            if let Some(missing) = self
                .attributes
                .iter()
                .find(|a| a.required_at_create && !content.contains_key(&a.name))
            {
                return Err(M2mError::bad_request(format!(
                    "attribute '{}': mandatory attribute is missing",
                    missing.name
                )));
            }
        }
        Ok(())
    }

    /// Whether `name` is one of the specialization's custom attributes.
    pub fn is_custom(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name == name)
    }

    /// The custom attributes of a representation.
    pub fn custom<'a>(
        &self,
        attrs: &'a Map<String, Value>,
    ) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        let names: Vec<String> = self.attributes.iter().map(|a| a.name.clone()).collect();
        attrs.iter().filter(move |(k, _)| names.contains(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_module_classes_check_their_attributes() {
        let lock = by_key("cod:lock").expect("built in");
        assert_eq!(
            by_cnd("org.onem2m.common.moduleclass.lock").unwrap().key,
            "cod:lock"
        );
        let obj = |v: Value| v.as_object().cloned().unwrap();
        assert!(lock
            .check(&obj(json!({ "cnd": "x", "lock": true })), true)
            .is_ok());
        assert!(
            lock.check(&obj(json!({ "cnd": "x" })), true).is_ok(),
            "a custom attribute is optional at CREATE (TS-0004 table 7.4.37.1-2)"
        );
        assert!(
            lock.check(&obj(json!({ "cnd": "x", "lock": null })), true)
                .is_err(),
            "null at CREATE"
        );
        assert!(
            lock.check(&obj(json!({ "lock": "yes" })), false).is_err(),
            "a boolean"
        );
        assert!(
            lock.check(&obj(json!({ "colour": 1 })), false).is_err(),
            "unknown"
        );
        assert!(
            lock.check(&obj(json!({ "lock": null })), false).is_err(),
            "mandatory kept"
        );
        let t = by_key("cod:tempe").unwrap();
        assert!(t
            .check(&obj(json!({ "curT0": 21.5, "unit": 1 })), true)
            .is_ok());
        assert!(t.check(&obj(json!({ "curT0": "21.5" })), true).is_err());
        assert!(t.check(&obj(json!({ "unit": 1 })), true).is_ok());
    }

    #[test]
    fn definitions_are_added_whole_or_not_at_all() {
        let mut r = Registry::default();
        assert!(r
            .add_json(r#"[{"key":"x:a","cnd":"c.a"},{"key":"nocolon","cnd":"c.b"}]"#)
            .is_err());
        assert!(r.by_key("x:a").is_none());
        assert_eq!(
            r.add_json(r#"[{"key":"x:a","cnd":"c.a","attributes":[{"name":"v","type":"float"}]}]"#),
            Ok(1)
        );
        assert_eq!(r.by_cnd("c.a").unwrap().key, "x:a");
        assert!(r
            .add_json(r#"[{"key":"x:b","cnd":"c.b","attributes":[{"name":"v","type":"complex"}]}]"#)
            .is_err());
        for create in [r#""X""#, "true", "1"] {
            let def = format!(
                r#"[{{"key":"x:b","cnd":"c.b","attributes":[{{"name":"v","create":{create}}}]}}]"#
            );
            assert!(r.add_json(&def).is_err(), "{create}");
        }
        r.add_json(r#"[{"key":"x:b","cnd":"c.b","attributes":[{"name":"v","create":"M"}]}]"#)
            .unwrap();
        let obj = |v: Value| v.as_object().cloned().unwrap();
        let b = r.by_key("x:b").unwrap();
        assert!(b.check(&obj(json!({ "cnd": "c.b" })), true).is_err());
        assert!(b.check(&obj(json!({ "cnd": "c.b", "v": 1 })), true).is_ok());
    }

    #[test]
    fn an_undefined_container_definition_admits_any_but_names_nothing() {
        let gis = by_key("m2m:gis").expect("built in");
        assert!(gis.cnd.is_none());
        assert!(gis.admits_cnd(Some("someCND")));
        assert!(!gis.admits_cnd(None), "cnd stays mandatory");
        assert!(
            !gis.admits_cnd(Some("org.onem2m.common.moduleclass.lock")),
            "a generic flexContainer does not take a lock's cnd"
        );
        assert!(by_cnd("someCND").is_none());
        let lock = by_key("cod:lock").unwrap();
        assert!(lock.admits_cnd(Some("org.onem2m.common.moduleclass.lock")));
        assert!(!lock.admits_cnd(Some("someCND")));
        let obj = |v: Value| v.as_object().cloned().unwrap();
        let gio = by_key("m2m:gio").unwrap();
        assert!(gio
            .check(&obj(json!({ "cnd": "c", "gion": "op", "gios": "s" })), true)
            .is_ok());
        assert!(gio
            .check(&obj(json!({ "cnd": "c", "gion": "op" })), true)
            .is_err());
        assert!(gis
            .check(&obj(json!({ "cnd": "c", "gisn": "a", "wrong": 1 })), true)
            .is_err());
    }
}
