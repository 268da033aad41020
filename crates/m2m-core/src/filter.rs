//! Filter Criteria (TS-0004 clause 6.3.5.8; TS-0001 clause 8.1.2): conditions used by discovery and
//! conditional retrieval, and their evaluation against a resource representation.

use crate::error::{M2mError, M2mResult};
use crate::geo_query::{GeoQuery, GeoQueryParts};
use crate::time;
use serde_json::{Map, Value};

/// filterUsage (TS-0004 table 6.3.4.2.31-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterUsage {
    Discovery = 1,
    #[default]
    ConditionalRetrieval = 2,
}

/// filterOperation: how the conditions combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterOperation {
    #[default]
    And = 1,
    Or = 2,
}

/// The Filter Criteria request parameter. Timestamps are kept normalized (see [`time::normalize`]),
/// so comparison with stored timestamps is a string comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterCriteria {
    pub created_before: Option<String>,
    pub created_after: Option<String>,
    pub modified_since: Option<String>,
    pub unmodified_since: Option<String>,
    pub state_tag_smaller: Option<u64>,
    pub state_tag_bigger: Option<u64>,
    pub expire_before: Option<String>,
    pub expire_after: Option<String>,
    pub labels: Vec<String>,
    pub resource_types: Vec<u16>,
    pub size_above: Option<u64>,
    pub size_below: Option<u64>,
    pub content_types: Vec<String>,
    /// Attribute conditions `name=value`.
    pub attributes: Vec<(String, String)>,
    pub filter_usage: Option<FilterUsage>,
    pub filter_operation: FilterOperation,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub level: Option<u32>,
    /// The geo-query parameters `gmty`, `geom`, `gsf` as they arrived (Release 4).
    /// (Boxed, as the query: every request carries a FilterCriteria, few a geo-query.)
    pub geo_parts: Option<Box<GeoQueryParts>>,
    /// The geo-query, once all three are there.
    pub geo: Option<Box<GeoQuery>>,
    /// applyRelativePath (`arp`, clause 7.3.3.17.17): a path such as `../temp/la` appended to
    /// each match; what exists there is the result instead.
    pub apply_relative_path: Option<RelativePath>,
    /// semanticsFilter (`smf`, m2m:sparql 0..n, clause 7.3.3.18): SPARQL queries over the
    /// descriptors of `<semanticDescriptor>` children; a resource matches when one has a result.
    pub semantics_filter: Vec<String>,
}

/// A resource tree relative path (`arp`): segments that are resource names, `..` (the parent)
/// or `.`; `la`/`ol` (also written `LATEST`/`OLDEST`) only last. Never absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelativePath(Vec<PathStep>);

/// One step of a [`RelativePath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    Parent,
    Child(String),
    Latest,
    Oldest,
}

impl RelativePath {
    /// Reads `arp`: 4000 for an empty or absolute path, an empty segment inside it, a name
    /// that is no resource name, or `la`/`ol` before the end.
    pub fn parse(v: &str) -> M2mResult<Self> {
        let bad = |why: &str| M2mError::bad_request(format!("applyRelativePath: {why}"));
        if v.is_empty() || v.starts_with('/') {
            return Err(bad("a relative path is neither empty nor absolute"));
        }
        let segs: Vec<&str> = v.strip_suffix('/').unwrap_or(v).split('/').collect();
        let mut steps = Vec::with_capacity(segs.len());
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            steps.push(match *seg {
                "." => continue,
                ".." => PathStep::Parent,
                "la" | "LATEST" if last => PathStep::Latest,
                "ol" | "OLDEST" if last => PathStep::Oldest,
                "la" | "LATEST" | "ol" | "OLDEST" => {
                    return Err(bad("la and ol end a path"));
                }
                "" => return Err(bad("an empty segment")),
                name if name.chars().all(crate::id::is_id_char) => PathStep::Child(name.to_owned()),
                _ => return Err(bad("a segment is not a resource name")),
            });
        }
        Ok(Self(steps))
    }

    pub fn steps(&self) -> &[PathStep] {
        &self.0
    }
}

impl std::fmt::Display for RelativePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for step in &self.0 {
            if !first {
                f.write_str("/")?;
            }
            first = false;
            match step {
                PathStep::Parent => f.write_str("..")?,
                PathStep::Child(n) => f.write_str(n)?,
                PathStep::Latest => f.write_str("la")?,
                PathStep::Oldest => f.write_str("ol")?,
            }
        }
        Ok(())
    }
}

fn parse_u64(name: &str, v: &str) -> M2mResult<u64> {
    v.parse()
        .map_err(|_| M2mError::bad_request(format!("{name} '{v}' is not a non-negative integer")))
}

/// Splits a multi-valued field at spaces: the HTTP binding decodes the `+` of `ty=2+3` to a space
/// (TS-0009 clause 6.2.2.2) and the JSON form joins list elements with one. A `+` that reaches this
/// point was sent escaped (`%2B`) and belongs to its element, as in `application/senml+json`.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(' ').filter(|s| !s.is_empty())
}

impl FilterCriteria {
    pub fn is_discovery(&self) -> bool {
        self.filter_usage == Some(FilterUsage::Discovery)
    }

    /// Every condition and parameter that is set, as (short name, value), in the one order both
    /// encoders (JSON `fc`, HTTP query) write: timestamps as strings, numbers, lists as arrays,
    /// attribute conditions under their attribute name, `fo` only when it is not the default And.
    pub fn fields(&self) -> impl Iterator<Item = (&str, Value)> {
        let mut out: Vec<(&str, Value)> = Vec::new();
        let times = [
            ("crb", &self.created_before),
            ("cra", &self.created_after),
            ("ms", &self.modified_since),
            ("us", &self.unmodified_since),
            ("exb", &self.expire_before),
            ("exa", &self.expire_after),
        ];
        out.extend(
            times
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.clone()?.into()))),
        );
        let numbers = [
            ("sts", self.state_tag_smaller),
            ("stb", self.state_tag_bigger),
            ("sza", self.size_above),
            ("szb", self.size_below),
            ("lim", self.limit),
            ("ofst", self.offset),
            ("lvl", self.level.map(u64::from)),
        ];
        out.extend(
            numbers
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?.into()))),
        );
        if !self.labels.is_empty() {
            out.push(("lbl", self.labels.clone().into()));
        }
        if !self.resource_types.is_empty() {
            out.push(("ty", self.resource_types.clone().into()));
        }
        if !self.content_types.is_empty() {
            out.push(("cty", self.content_types.clone().into()));
        }
        out.extend(
            self.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone().into())),
        );
        if let Some(q) = &self.geo {
            out.push(("gmty", (q.geometry_type as u8).into()));
            out.push(("geom", q.text.clone().into()));
            out.push(("gsf", (q.function as u8).into()));
        }
        if let Some(fu) = self.filter_usage {
            out.push(("fu", (fu as u8).into()));
        }
        if self.filter_operation != FilterOperation::And {
            out.push(("fo", (self.filter_operation as u8).into()));
        }
        if let Some(arp) = &self.apply_relative_path {
            out.push(("arp", arp.to_string().into()));
        }
        if !self.semantics_filter.is_empty() {
            out.push(("smf", self.semantics_filter.clone().into()));
        }
        out.into_iter()
    }

    /// Takes one query-string field if it belongs to the filter criteria; returns `Ok(false)` for
    /// fields that are not filter criteria. `attribute_names` decides which other names are
    /// resource attributes (the `atr` condition of TS-0009 clause 6.2.2.2).
    pub fn take_query_field(
        &mut self,
        name: &str,
        value: &str,
        is_attribute: impl Fn(&str) -> bool,
    ) -> M2mResult<bool> {
        match name {
            "crb" => self.created_before = Some(time::normalize(value)?),
            "cra" => self.created_after = Some(time::normalize(value)?),
            "ms" => self.modified_since = Some(time::normalize(value)?),
            "us" => self.unmodified_since = Some(time::normalize(value)?),
            "exb" => self.expire_before = Some(time::normalize(value)?),
            "exa" => self.expire_after = Some(time::normalize(value)?),
            "sts" => self.state_tag_smaller = Some(parse_u64(name, value)?),
            "stb" => self.state_tag_bigger = Some(parse_u64(name, value)?),
            "sza" => self.size_above = Some(parse_u64(name, value)?),
            "szb" => self.size_below = Some(parse_u64(name, value)?),
            "lim" => self.limit = Some(parse_u64(name, value)?),
            "ofst" => self.offset = Some(parse_u64(name, value)?),
            "lvl" => {
                let l = parse_u64(name, value)?;
                self.level =
                    Some(u32::try_from(l).map_err(|_| M2mError::bad_request("lvl too large"))?);
            }
            "lbl" => self.labels.extend(split_list(value).map(str::to_owned)),
            "cty" => self
                .content_types
                .extend(split_list(value).map(str::to_owned)),
            "ty" => {
                for t in split_list(value) {
                    self.resource_types.push(
                        t.parse().map_err(|_| {
                            M2mError::bad_request(format!("ty '{t}' is not a number"))
                        })?,
                    );
                }
            }
            "fu" => {
                self.filter_usage = Some(match value {
                    "1" => FilterUsage::Discovery,
                    "2" => FilterUsage::ConditionalRetrieval,
                    _ => {
                        return Err(M2mError::bad_request(format!(
                            "filterUsage '{value}' is not supported"
                        )))
                    }
                })
            }
            "fo" => {
                self.filter_operation = match value {
                    "1" => FilterOperation::And,
                    "2" => FilterOperation::Or,
                    _ => {
                        return Err(M2mError::bad_request(format!(
                            "filterOperation '{value}' is not supported"
                        )))
                    }
                }
            }
            "gmty" | "geom" | "gsf" => {
                let parts = self.geo_parts.get_or_insert_with(Box::default);
                match name {
                    "gmty" => parts.geometry_type = Some(parse_u64(name, value)?),
                    "gsf" => parts.function = Some(parse_u64(name, value)?),
                    _ => parts.geometry = Some(value.to_owned()),
                }
                self.geo = parts.complete()?.map(Box::new);
            }
            "arp" => self.apply_relative_path = Some(RelativePath::parse(value)?),
            "smf" => self.semantics_filter.push(value.to_owned()),
            "cfs" | "cfq" => {
                return Err(M2mError::not_implemented(format!(
                    "filter condition '{name}' is not supported"
                )))
            }
            other if is_attribute(other) => {
                self.attributes.push((other.to_owned(), value.to_owned()))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Refuses a geo-query given in part: `gmty`, `geom` and `gsf` go together. Every binding
    /// calls it once the request is whole.
    pub fn check_complete(&self) -> M2mResult<()> {
        if self.geo.is_none() && self.geo_parts.is_some() {
            return Err(M2mError::bad_request(
                "geo-query: gmty, geom and gsf go together",
            ));
        }
        Ok(())
    }

    /// Evaluates the conditions against a resource representation (short names).
    /// With no conditions every resource matches.
    pub fn matches(&self, res: &Map<String, Value>) -> bool {
        self.matches_guarded(res, || true)
    }

    /// Whether a resource is selected: by the conditions, and by `admits` (an access check), which
    /// is asked once the other conditions leave the answer open or positive, and always before
    /// the geo-query, the costly condition: nobody pays for, or times, a relation with a resource
    /// it may not see.
    pub fn matches_guarded(&self, res: &Map<String, Value>, admits: impl FnOnce() -> bool) -> bool {
        let plain = self.plain_results(res);
        let Some(q) = &self.geo else {
            return self.combine(&plain) && admits();
        };
        match self.filter_operation {
            FilterOperation::And if plain.iter().any(|r| !r) => false,
            FilterOperation::Or if plain.iter().any(|r| *r) => admits(),
            _ => admits() && q.matches(res.get("loc")),
        }
    }

    fn combine(&self, results: &[bool]) -> bool {
        if results.is_empty() {
            return true;
        }
        match self.filter_operation {
            FilterOperation::And => results.iter().all(|r| *r),
            FilterOperation::Or => results.iter().any(|r| *r),
        }
    }

    /// The results of every condition but the geo-query.
    fn plain_results(&self, res: &Map<String, Value>) -> Vec<bool> {
        let mut results = Vec::with_capacity(8);
        let str_attr = |k: &str| res.get(k).and_then(Value::as_str);
        let num_attr = |k: &str| res.get(k).and_then(Value::as_u64);
        let ts = |k: &str| str_attr(k).and_then(|s| time::normalize(s).ok());

        if let Some(v) = &self.created_before {
            results.push(ts("ct").is_some_and(|ct| ct < *v));
        }
        if let Some(v) = &self.created_after {
            results.push(ts("ct").is_some_and(|ct| ct > *v));
        }
        if let Some(v) = &self.modified_since {
            results.push(ts("lt").is_some_and(|lt| lt > *v));
        }
        if let Some(v) = &self.unmodified_since {
            results.push(ts("lt").is_some_and(|lt| lt < *v));
        }
        if let Some(v) = &self.expire_before {
            results.push(ts("et").is_some_and(|et| et < *v));
        }
        if let Some(v) = &self.expire_after {
            results.push(ts("et").is_some_and(|et| et > *v));
        }
        if let Some(v) = self.state_tag_smaller {
            results.push(num_attr("st").is_some_and(|st| st < v));
        }
        if let Some(v) = self.state_tag_bigger {
            results.push(num_attr("st").is_some_and(|st| st > v));
        }
        if let Some(v) = self.size_above {
            results.push(num_attr("cs").is_some_and(|cs| cs >= v));
        }
        if let Some(v) = self.size_below {
            results.push(num_attr("cs").is_some_and(|cs| cs < v));
        }
        if !self.labels.is_empty() {
            let lbl = res.get("lbl").and_then(Value::as_array);
            results.push(lbl.is_some_and(|l| {
                l.iter().any(|x| {
                    x.as_str()
                        .is_some_and(|x| self.labels.iter().any(|f| f == x))
                })
            }));
        }
        if !self.resource_types.is_empty() {
            let ty = num_attr("ty");
            results
                .push(ty.is_some_and(|t| self.resource_types.iter().any(|f| u64::from(*f) == t)));
        }
        if !self.content_types.is_empty() {
            // contentInfo is "type/subtype:encoding"; the filter is matched with its
            // typeOfContent part (TS-0004 7.3.3.17.8), a filter value's own ":encoding" aside.
            let cnf = str_attr("cnf").map(type_of_content);
            results.push(
                cnf.is_some_and(|c| self.content_types.iter().any(|f| type_of_content(f) == c)),
            );
        }
        for (name, value) in &self.attributes {
            results.push(res.get(name).is_some_and(|v| attribute_equals(v, value)));
        }
        results
    }

    /// Whether a geo-query is among the conditions (each candidate then costs a relation).
    pub fn is_geo(&self) -> bool {
        self.geo.is_some()
    }
}

/// Compares a stored attribute with the text of a query condition; a list matches if any element does.
fn attribute_equals(stored: &Value, wanted: &str) -> bool {
    match stored {
        Value::String(s) => wildcard_match(wanted, s),
        Value::Number(n) => n.to_string() == wanted,
        Value::Bool(b) => (wanted == "true" && *b) || (wanted == "false" && !*b),
        Value::Array(items) => items.iter().any(|v| attribute_equals(v, wanted)),
        _ => false,
    }
}

/// Whether `text` matches `pattern`, where `*` stands for 0 or more characters (TS-0004
/// 7.3.3.17.9: `creator=CAE-ID*`, `creator=*ID123`); without `*`, equality.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// The typeOfContent part of a contentInfo (`type/subtype` of `type/subtype:encoding`).
pub fn type_of_content(cnf: &str) -> &str {
    cnf.split(':').next().unwrap_or(cnf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_relative_path_is_read_and_written_back() {
        let p = super::RelativePath::parse("../temp/./LATEST").unwrap();
        assert_eq!(
            p.steps(),
            &[
                super::PathStep::Parent,
                super::PathStep::Child("temp".into()),
                super::PathStep::Latest
            ]
        );
        assert_eq!(p.to_string(), "../temp/la");
        assert_eq!(super::RelativePath::parse(&p.to_string()), Ok(p));
        for bad in ["", "/a", "a//b", "ol/a", "a b", "a:b"] {
            assert!(super::RelativePath::parse(bad).is_err(), "{bad}");
        }
        let mut fc = FilterCriteria::default();
        assert!(fc.take_query_field("arp", "x/ol", |_| false).unwrap());
        assert!(fc.fields().any(|(k, v)| k == "arp" && v == "x/ol"));
    }

    use super::*;
    use serde_json::json;

    fn res(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn fields_lists_what_is_set_in_encoder_order() {
        let f = fc(&[
            ("fo", "2"),
            ("cr", "Cx"),
            ("ty", "2 3"),
            ("lim", "5"),
            ("lbl", "a b"),
            ("crb", "20260101T000000"),
            ("fu", "1"),
        ]);
        let fields: Vec<(&str, Value)> = f.fields().collect();
        assert_eq!(
            fields,
            vec![
                ("crb", json!(f.created_before.clone().unwrap())),
                ("lim", json!(5)),
                ("lbl", json!(["a", "b"])),
                ("ty", json!([2, 3])),
                ("cr", json!("Cx")),
                ("fu", json!(1)),
                ("fo", json!(2)),
            ]
        );
        assert_eq!(FilterCriteria::default().fields().count(), 0);
    }

    fn fc(pairs: &[(&str, &str)]) -> FilterCriteria {
        let mut f = FilterCriteria::default();
        for (k, v) in pairs {
            assert!(
                f.take_query_field(k, v, |n| n == "cr" || n == "mni")
                    .unwrap(),
                "{k}"
            );
        }
        f
    }

    #[test]
    fn attribute_values_take_wildcards() {
        for (p, t, want) in [
            ("a*", "aValue", true),
            ("a*", "a", true),
            ("*ID123", "CAE-ID123", true),
            ("C*-*3", "CAE-ID123", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("*", "", true),
            ("a*", "bValue", false),
            ("ab*ba", "aba", false),
            ("aValue", "aValue", true),
            ("aValue", "aValue2", false),
        ] {
            assert_eq!(wildcard_match(p, t), want, "{p} ~ {t}");
        }
        let cin = res(json!({"ty": 4, "con": "aValue", "cr": "CAE-ID123"}));
        let on_con = |v: &str| {
            let mut f = FilterCriteria::default();
            assert!(f.take_query_field("con", v, |n| n == "con").unwrap());
            f
        };
        assert!(on_con("a*").matches(&cin));
        assert!(!on_con("b*").matches(&cin));
        assert!(fc(&[("cr", "*ID123")]).matches(&cin));
        assert!(!fc(&[("cr", "*ID124")]).matches(&cin));
    }

    /// contentType is matched with the typeOfContent part of contentInfo (TS-0004 7.3.3.17.8),
    /// whether or not the filter value carries an encoding of its own.
    #[test]
    fn content_type_matches_the_type_of_content() {
        let cin = res(json!({"ty": 4, "cnf": "text/plain:0"}));
        for yes in [
            "text/plain",
            "text/plain:0",
            "text/plain:1",
            "a/b text/plain",
        ] {
            assert!(fc(&[("cty", yes)]).matches(&cin), "{yes}");
        }
        for no in ["text/html", "text/plain2", "text"] {
            assert!(!fc(&[("cty", no)]).matches(&cin), "{no}");
        }
    }

    #[test]
    fn conditions_and_or() {
        let cnt = res(
            json!({"ty": 3, "ct": "20260101T000000", "lbl": ["lock", "front"], "cr": "Cabc", "mni": 10}),
        );
        assert!(fc(&[("ty", "3")]).matches(&cnt));
        assert!(fc(&[("ty", "2 3")]).matches(&cnt));
        assert!(!fc(&[("ty", "4")]).matches(&cnt));
        assert!(fc(&[("lbl", "front")]).matches(&cnt));
        assert!(!fc(&[("lbl", "back")]).matches(&cnt));
        assert!(fc(&[("cra", "20251231T235959")]).matches(&cnt));
        assert!(
            !fc(&[("cra", "20260101T000000")]).matches(&cnt),
            "createdAfter is strict"
        );
        assert!(fc(&[("crb", "20260101T000001")]).matches(&cnt));
        assert!(fc(&[("cr", "Cabc")]).matches(&cnt));
        assert!(fc(&[("mni", "10")]).matches(&cnt));
        assert!(!fc(&[("ty", "4"), ("lbl", "lock")]).matches(&cnt));
        assert!(fc(&[("ty", "4"), ("lbl", "lock"), ("fo", "2")]).matches(&cnt));
        assert!(FilterCriteria::default().matches(&cnt));
    }

    #[test]
    fn a_plus_inside_a_list_element_is_kept() {
        // Found by the property tests: cty=application/senml%2Bjson came back as two media types.
        let f = fc(&[
            ("cty", "application/senml+json text/plain"),
            ("lbl", "c++ a"),
        ]);
        assert_eq!(
            f.content_types,
            vec!["application/senml+json", "text/plain"]
        );
        assert_eq!(f.labels, vec!["c++", "a"]);
        let f = fc(&[("cty", "a/+")]);
        assert_eq!(f.content_types, vec!["a/+"]);
    }

    #[test]
    fn bad_values_are_bad_requests() {
        let mut f = FilterCriteria::default();
        assert!(f.take_query_field("lim", "-1", |_| false).is_err());
        assert!(f.take_query_field("cra", "yesterday", |_| false).is_err());
        assert!(f.take_query_field("fu", "9", |_| false).is_err());
        assert!(!f.take_query_field("nonsense", "1", |_| false).unwrap());
    }
}
