//! XML serialization (TS-0004 clause 8.3): a content as an XML document with the short names,
//! read into and written from the same data model as JSON and CBOR (`serde_json::Value`).
//!
//! - The root element is the content's single key (`m2m:cin`, `m2m:sgn`, `cod:lock`...); a
//!   resource's `rn` is an XML attribute of its element, as in the XSD.
//! - A list of simple values is one element holding them separated by spaces (xs:list); a list
//!   of structures, or of child resources, repeats the element.
//! - An empty element is NULL (clause 8.3.1: how an UPDATE removes an attribute).
//! - Reading needs the types XML does not carry: they come from the schema of the root's
//!   resource type (m2m-core `schema`, the flexContainer and mgmtObj specializations), and for a
//!   notification from its known members. A value of an attribute the schema does not know stays
//!   text (and the schema check that follows refuses it).
//! - Documents with a DOCTYPE are refused (no entity of any kind is expanded), as are
//!   documents nested more than [`crate::serialization::MAX_DEPTH`] deep or with more than
//!   [`MAX_ELEMENTS`] elements.
//! - Namespaces: `m2m` is `http://www.onem2m.org/xml/protocols` (clause 6.1); another prefix
//!   (a specialization's domain, `cod`) is declared as `http://www.onem2m.org/xml/protocols/<prefix>`.
//!   Elements are matched by their prefixed names, as the short names are.

use crate::error::{M2mError, M2mResult};
use crate::resource_type::ResourceType;
use crate::schema::{self, Kind, ObjSpec};
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Number, Value};

/// The oneM2M protocols namespace (TS-0004 clause 6.1).
pub const M2M_NAMESPACE: &str = "http://www.onem2m.org/xml/protocols";
/// Most elements in one document.
pub const MAX_ELEMENTS: usize = 100_000;
/// Most attributes of one element (a resource element has one, `rn`).
pub const MAX_ATTRIBUTES: usize = 16;

fn bad(what: impl std::fmt::Display) -> M2mError {
    M2mError::bad_request(format!("malformed XML content: {what}"))
}

/// One element as read: its name as written, its attributes, children and text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    /// An empty element: NULL.
    fn is_null(&self) -> bool {
        self.children.is_empty() && self.text.trim().is_empty() && self.attrs.is_empty()
    }
}

fn parse(body: &[u8]) -> M2mResult<Element> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(bad)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(bad("more than one root element"));
                }
                count += 1;
                if count > MAX_ELEMENTS || stack.len() >= crate::serialization::MAX_DEPTH {
                    return Err(bad("too many elements, or nested too deeply"));
                }
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|_| bad("a name that is not UTF-8"))?
                    .to_owned();
                let mut element = Element {
                    name,
                    ..Element::default()
                };
                // quick-xml's own duplicate check is quadratic: attributes are few here, and
                // counted, instead.
                for a in e.attributes().with_checks(false) {
                    let a = a.map_err(bad)?;
                    if element.attrs.len() >= MAX_ATTRIBUTES {
                        return Err(bad("too many attributes"));
                    }
                    let key = std::str::from_utf8(a.key.as_ref())
                        .map_err(|_| bad("an attribute name that is not UTF-8"))?;
                    if key == "xmlns" || key.starts_with("xmlns:") || key.starts_with("xsi:") {
                        continue;
                    }
                    if element.attrs.iter().any(|(k, _)| k == key) {
                        return Err(bad("an attribute given twice"));
                    }
                    let value = a.unescape_value().map_err(bad)?;
                    element.attrs.push((key.to_owned(), value.into_owned()));
                }
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| bad("an end without a start"))?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(bad)?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(bad("text outside the root element")),
                }
            }
            Event::CData(c) => {
                let text = std::str::from_utf8(&c).map_err(|_| bad("CDATA that is not UTF-8"))?;
                match stack.last_mut() {
                    Some(open) => open.text.push_str(text),
                    None => return Err(bad("CDATA outside the root element")),
                }
            }
            Event::DocType(_) => return Err(bad("a document type declaration is not accepted")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(bad("an element is not closed"));
    }
    root.ok_or_else(|| bad("no root element"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Reads an XML content into the JSON data model.
pub fn decode(body: &[u8]) -> M2mResult<Value> {
    let root = parse(body)?;
    let value = if root.name == "m2m:sgn" {
        notification(&root)
    } else if let Some(types) = Types::of_root(&root.name) {
        resource(&root, &types)
    } else {
        generic(&root)
    };
    let mut out = Map::new();
    out.insert(root.name.clone(), value);
    Ok(Value::Object(out))
}

/// Where the kinds of a resource's attributes come from.
enum Types {
    Schema(ResourceType),
    Flex(crate::specialization::Specialization),
    Mgmt(&'static crate::mgmt_obj::MgmtSpec),
}

impl Types {
    fn of_root(root: &str) -> Option<Types> {
        if let Some(spec) = crate::mgmt_obj::by_root(root) {
            return Some(Types::Mgmt(spec));
        }
        if let Some(spec) = crate::specialization::by_key(root) {
            return Some(Types::Flex(spec));
        }
        ResourceType::ALL
            .into_iter()
            .find(|t| t.root_name() == root)
            .map(Types::Schema)
    }

    /// The kind of an attribute; those the CSE sets (their schema says only "read-only") by
    /// what they hold.
    fn kind(&self, name: &str) -> Option<Kind> {
        match self.declared(name) {
            None | Some(Kind::Any) => set_by_the_cse(name).or(self.declared(name)),
            known => known,
        }
    }

    fn declared(&self, name: &str) -> Option<Kind> {
        match self {
            Types::Schema(ty) => schema::attribute(*ty, name).map(|a| a.kind),
            Types::Flex(spec) => schema::attribute(ResourceType::FlexContainer, name)
                .map(|a| a.kind)
                .or_else(|| {
                    spec.attributes
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| a.kind)
                }),
            Types::Mgmt(spec) => spec
                .attribute(name)
                .or_else(|| schema::attribute(ResourceType::MgmtObj, name))
                .map(|a| a.kind),
        }
    }
}

/// The kinds of the attributes a hosting CSE sets (TS-0004 table 6.3.3-1 and the resource
/// tables), which requests never carry.
fn set_by_the_cse(name: &str) -> Option<Kind> {
    static URIS: Kind = Kind::Uri;
    static STRS: Kind = Kind::Str;
    static CODES: Kind = Kind::NonNegInt;
    Some(match name {
        "ty" | "st" | "cni" | "cbs" | "cs" | "cnm" | "mdc" | "mdlt" | "dcnt" => Kind::NonNegInt,
        "mtv" | "rr" | "disr" => Kind::Bool,
        "srt" => Kind::List(&CODES),
        "poa" | "acpi" | "mid" | "nu" | "hael" | "hcl" => Kind::List(&URIS),
        "srv" | "csz" | "lbl" => Kind::List(&STRS),
        _ => return None,
    })
}

/// A resource element: `rn` from its attribute, its members typed by its schema; child
/// resources (prefixed names) read as resources in turn.
fn resource(e: &Element, types: &Types) -> Value {
    let mut out = Map::new();
    for (k, v) in &e.attrs {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    for (name, group) in grouped(&e.children) {
        let value = if name.contains(':') {
            let items: Vec<Value> = group
                .iter()
                .map(|c| match Types::of_root(name) {
                    Some(t) => resource(c, &t),
                    None => generic(c),
                })
                .collect();
            Value::Array(items)
        } else {
            member(name, &group, types.kind(name).as_ref())
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// The elements of one name, in their first order of appearance.
fn grouped(children: &[Element]) -> Vec<(&str, Vec<&Element>)> {
    let mut groups: Vec<(&str, Vec<&Element>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for c in children {
        match index.get(c.name.as_str()) {
            Some(&i) => groups[i].1.push(c),
            None => {
                index.insert(&c.name, groups.len());
                groups.push((&c.name, vec![c]));
            }
        }
    }
    groups
}

/// Lists whose items hold spaces (schedule entries: `actw`, `sce`): each item is an element of
/// its own, as the XSD repeats them, never a space-separated text.
const ITEMS_WITH_SPACES: [&str; 2] = ["actw", "sce"];

/// The value of a member `name` given as one or more elements of that name.
fn member(name: &str, group: &[&Element], kind: Option<&Kind>) -> Value {
    match kind {
        Some(Kind::List(inner) | Kind::NonEmptyList(inner)) if is_structured(inner) => {
            if group.len() == 1 && group[0].is_null() {
                return Value::Null;
            }
            Value::Array(group.iter().map(|e| typed(e, Some(inner))).collect())
        }
        // Repeated elements are one item each.
        Some(Kind::List(inner) | Kind::NonEmptyList(inner))
            if group.len() > 1 || ITEMS_WITH_SPACES.contains(&name) =>
        {
            if group.len() == 1 && group[0].is_null() {
                return Value::Null;
            }
            Value::Array(group.iter().map(|e| scalar(&e.text, inner)).collect())
        }
        // anyType values a comparison reads (an evalCriteria's threshold): as they look.
        Some(Kind::Any) if name == "thld" && group.len() == 1 => infer(&group[0].text),
        _ if group.len() > 1 => Value::Array(group.iter().map(|e| typed(e, kind)).collect()),
        _ => typed(group[0], kind),
    }
}

/// A text as the JSON value it looks like: a number, a boolean, else the text.
fn infer(text: &str) -> Value {
    let t = text.trim();
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => scalar(t, &Kind::Number),
    }
}

fn is_structured(kind: &Kind) -> bool {
    matches!(kind, Kind::Object(_) | Kind::AnyObject | Kind::Any)
}

/// One element as a value of `kind` (unknown: text, or a structure of texts).
fn typed(e: &Element, kind: Option<&Kind>) -> Value {
    if e.is_null() {
        return Value::Null;
    }
    match kind {
        Some(Kind::Object(spec)) => structure(e, spec),
        Some(Kind::List(inner) | Kind::NonEmptyList(inner)) if !is_structured(inner) => {
            Value::Array(
                e.text
                    .split_whitespace()
                    .map(|t| scalar(t, inner))
                    .collect(),
            )
        }
        _ if !e.children.is_empty() => generic(e),
        Some(k) => scalar(&e.text, k),
        None => Value::String(e.text.clone()),
    }
}

fn structure(e: &Element, spec: &ObjSpec) -> Value {
    let mut out = Map::new();
    for (name, group) in grouped(&e.children) {
        let kind = spec.fields.iter().find(|f| f.name == name).map(|f| f.kind);
        out.insert(name.to_owned(), member(name, &group, kind.as_ref()));
    }
    Value::Object(out)
}

/// A text as a value of a simple kind; text that does not fit stays text.
fn scalar(text: &str, kind: &Kind) -> Value {
    let t = text.trim();
    let number = || -> Option<Value> {
        if let Ok(n) = t.parse::<u64>() {
            return Some(Value::Number(n.into()));
        }
        if let Ok(n) = t.parse::<i64>() {
            return Some(Value::Number(n.into()));
        }
        t.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
    };
    let v = match kind {
        Kind::NonNegInt
        | Kind::Integer
        | Kind::PosInt
        | Kind::Range(..)
        | Kind::Enum(_)
        | Kind::ResourceTypeCode
        | Kind::MemberType
        | Kind::EventCat
        | Kind::Number => number(),
        Kind::Duration if t.bytes().all(|b| b.is_ascii_digit()) => number(),
        Kind::Bool => match t {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    v.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// An element with no known types: children as members (repeated names as lists), text as a
/// string.
fn generic(e: &Element) -> Value {
    if e.children.is_empty() && e.attrs.is_empty() {
        return if e.text.is_empty() {
            Value::Null
        } else {
            Value::String(e.text.clone())
        };
    }
    let mut out = Map::new();
    for (k, v) in &e.attrs {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    for (name, group) in grouped(&e.children) {
        let value = if let (true, Some(t)) = (name.contains(':'), Types::of_root(name)) {
            let items: Vec<Value> = group.iter().map(|c| resource(c, &t)).collect();
            if items.len() == 1 {
                items.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(items)
            }
        } else if group.len() == 1 {
            generic(group[0])
        } else {
            Value::Array(group.iter().map(|c| generic(c)).collect())
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// A notification (`m2m:sgn`, TS-0004 clause 7.5.1.1): its flags, numbers and the resource
/// representation it carries typed as they are.
fn notification(e: &Element) -> Value {
    let mut out = Map::new();
    for (name, group) in grouped(&e.children) {
        let first = group[0];
        let value = match name {
            "vrq" | "sud" | "tra" | "trr" => scalar(&first.text, &Kind::Bool),
            "nev" => {
                let mut nev = Map::new();
                for (n, g) in grouped(&first.children) {
                    let v = match n {
                        "net" => scalar(&g[0].text, &Kind::NonNegInt),
                        "rep" => generic(g[0]),
                        _ => generic(g[0]),
                    };
                    nev.insert(n.to_owned(), v);
                }
                Value::Object(nev)
            }
            _ => generic(first),
        };
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

/// Writes a content (one root key) as an XML document.
///
/// Names come from the content's keys, which a client chose for anyType values (`con`): a
/// structure whose keys are not all plain XML names (`letters, digits, '.', '-', '_'`, one
/// `prefix:`, no `xml` prefix) is written as its JSON text instead of as elements, so that no
/// key can close or open elements of the document. Characters XML 1.0 cannot carry become
/// U+FFFD.
pub fn encode(v: &Value) -> M2mResult<Vec<u8>> {
    let Some((root, inner)) = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .filter(|(root, _)| is_name(root))
    else {
        return Err(M2mError::internal(
            "an XML content has a single root element with a plain name",
        ));
    };
    let mut w = Writer::default();
    w.note_prefix(root);
    let mut body = String::new();
    w.content(&mut body, root, inner);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    out.push('<');
    out.push_str(root);
    for p in &w.prefixes {
        let ns = if p == "m2m" {
            M2M_NAMESPACE.to_owned()
        } else {
            format!("{M2M_NAMESPACE}/{p}")
        };
        out.push_str(&format!(" xmlns:{p}=\"{}\"", escape(&ns)));
    }
    out.push_str(&body);
    Ok(out.into_bytes())
}

/// A plain XML name: `[prefix:]local`, each of ASCII letters, digits, `.`, `-`, `_`, starting
/// with a letter or `_`; no prefix beginning with `xml`.
fn is_name(s: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    match s.split_once(':') {
        Some((prefix, local)) => {
            part(prefix) && part(local) && !prefix.to_ascii_lowercase().starts_with("xml")
        }
        None => part(s),
    }
}

/// The namespace prefixes used, declared on the root.
#[derive(Default)]
struct Writer {
    prefixes: std::collections::BTreeSet<String>,
}

impl Writer {
    fn note_prefix(&mut self, name: &str) {
        if let Some((p, _)) = name.split_once(':') {
            if !self.prefixes.contains(p) {
                self.prefixes.insert(p.to_owned());
            }
        }
    }

    /// What follows `<name` (whose attributes start here) up to and with `</name>`: a
    /// resource's `rn` as its attribute, then its value.
    fn content(&mut self, out: &mut String, name: &str, v: &Value) {
        let rn = name
            .contains(':')
            .then(|| v.get("rn").and_then(Value::as_str))
            .flatten();
        if let Some(rn) = rn {
            out.push_str(" rn=\"");
            out.push_str(&escape(rn));
            out.push('"');
        }
        match v {
            Value::Null => {
                out.push_str("/>");
                return;
            }
            Value::Object(o) if o.keys().all(|k| is_name(k)) => {
                out.push('>');
                for (k, x) in o {
                    if rn.is_some() && k == "rn" {
                        continue;
                    }
                    self.member(out, k, x);
                }
            }
            // Keys that are no names: the structure as JSON text.
            Value::Object(_) => {
                out.push('>');
                out.push_str(&escape(&v.to_string()));
            }
            Value::Array(items) => {
                out.push('>');
                out.push_str(&simple_list(items));
            }
            scalar => {
                out.push('>');
                out.push_str(&escape(&text(scalar)));
            }
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }

    fn element(&mut self, out: &mut String, name: &str, v: &Value) {
        self.note_prefix(name);
        out.push('<');
        out.push_str(name);
        self.content(out, name, v);
    }

    fn member(&mut self, out: &mut String, name: &str, v: &Value) {
        match v {
            // A list of structures (or resources), or of texts with spaces, repeats the
            // element; a list of simple values is one element holding them.
            Value::Array(items)
                if items.iter().any(|i| {
                    i.is_object() || i.is_array() || i.as_str().is_some_and(has_space)
                }) =>
            {
                for item in items {
                    self.element(out, name, item);
                }
            }
            _ => self.element(out, name, v),
        }
    }
}

fn has_space(s: &str) -> bool {
    s.chars().any(char::is_whitespace) || s.is_empty()
}

fn simple_list(items: &[Value]) -> String {
    items
        .iter()
        .map(|i| escape(&text(i)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `s` as XML character data or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            // XML 1.0 has no way to carry these, not even as references.
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(xml: &str) -> Value {
        decode(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {}", e.dbg))
    }

    #[test]
    fn the_example_of_clause_8_3_2_reads() {
        let v = read(
            r#"<?xml version="1.0" encoding="UTF-8"?>
            <m2m:cin xmlns:m2m="http://www.onem2m.org/xml/protocols">
                <cnf>application/xml:1</cnf>
                <con>PHRpbWU+MTc4ODkzMDk8L3RpbWU+</con>
            </m2m:cin>"#,
        );
        assert_eq!(
            v,
            json!({"m2m:cin": {"cnf": "application/xml:1", "con": "PHRpbWU+MTc4ODkzMDk8L3RpbWU+"}})
        );
        // An empty element is NULL: the UPDATE that removes maxNrOfMembers.
        assert_eq!(
            read("<m2m:grp><mnm></mnm></m2m:grp>"),
            json!({"m2m:grp": {"mnm": null}})
        );
        assert_eq!(
            read("<m2m:grp><mnm/></m2m:grp>"),
            json!({"m2m:grp": {"mnm": null}})
        );
    }

    #[test]
    fn types_come_from_the_schema() {
        let v = read(
            r#"<m2m:cnt xmlns:m2m="http://www.onem2m.org/xml/protocols" rn="box">
                 <mni>5</mni><lbl>a b</lbl><disr>true</disr><acpi>/id-in/acp1</acpi>
               </m2m:cnt>"#,
        );
        assert_eq!(
            v,
            json!({"m2m:cnt": {"rn": "box", "mni": 5, "lbl": ["a", "b"], "disr": true, "acpi": ["/id-in/acp1"]}})
        );
        let acp = read(
            "<m2m:acp><pv><acr><acor>Cae1 all</acor><acop>3</acop></acr><acr><acor>Cae2</acor><acop>63</acop></acr></pv>\
             <pvs><acr><acor>Cae1</acor><acop>63</acop></acr></pvs></m2m:acp>",
        );
        assert_eq!(
            acp,
            json!({"m2m:acp": {"pv": {"acr": [{"acor": ["Cae1", "all"], "acop": 3}, {"acor": ["Cae2"], "acop": 63}]},
                "pvs": {"acr": [{"acor": ["Cae1"], "acop": 63}]}}})
        );
        let lock = read(
            "<cod:lock><cnd>org.onem2m.common.moduleclass.lock</cnd><lock>true</lock></cod:lock>",
        );
        assert_eq!(lock["cod:lock"]["lock"], json!(true));
        // What the schema does not know stays text, for the checks after to judge.
        assert_eq!(
            read("<m2m:cnt><mni>many</mni><zz>1</zz></m2m:cnt>")["m2m:cnt"],
            json!({"mni": "many", "zz": "1"})
        );
    }

    #[test]
    fn written_and_read_back() {
        for v in [
            json!({"m2m:cnt": {"rn": "box", "ty": 3, "lbl": ["a", "b"], "mni": 5, "disr": false,
                "m2m:cin": [{"rn": "c1", "con": "x < y & z", "ty": 4}, {"rn": "c2", "con": "2", "ty": 4}]}}),
            json!({"m2m:acp": {"rn": "p", "pv": {"acr": [{"acor": ["Cae1"], "acop": 3}]}, "pvs": {"acr": [{"acor": ["Cae1"], "acop": 63}]}}}),
            json!({"m2m:dbg": "a reason"}),
            json!({"m2m:uril": ["/id-in/a", "/id-in/b"]}),
            json!({"m2m:sgn": {"nev": {"rep": {"m2m:cin": {"rn": "c", "con": "on", "ty": 4}}, "net": 3}, "sur": "/id-in/sub", "vrq": false}}),
        ] {
            let bytes = encode(&v).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(
                text.contains(&format!("xmlns:m2m=\"{M2M_NAMESPACE}\"")),
                "{text}"
            );
            let mut back = decode(&bytes).unwrap_or_else(|e| panic!("{text}: {}", e.dbg));
            if v.get("m2m:uril").is_some() {
                back = json!({"m2m:uril": back["m2m:uril"].as_str().unwrap().split(' ').collect::<Vec<_>>()});
            }
            assert_eq!(back, v, "{text}");
        }
        let text =
            String::from_utf8(encode(&json!({"m2m:cin": {"rn": "a\"b", "con": "<&>"}})).unwrap())
                .unwrap();
        assert!(
            text.contains("rn=\"a&quot;b\"") && text.contains("<con>&lt;&amp;&gt;</con>"),
            "{text}"
        );
    }

    #[test]
    fn keys_a_client_chose_cannot_shape_the_document() {
        // A content whose keys would close and open elements: written as JSON text.
        let evil = json!({"m2m:sgn": {"nev": {"rep": {"m2m:cin": {"con": {
            "a:x/></con></m2m:cin></rep></nev><sur>/forged</sur><vrq>true</vrq><x": null}}}, "net": 3},
            "sur": "/id-in/sub1"}});
        let text = String::from_utf8(encode(&evil).unwrap()).unwrap();
        assert!(!text.contains("<sur>/forged"), "{text}");
        let back = decode(text.as_bytes()).unwrap();
        assert_eq!(back["m2m:sgn"]["sur"], json!("/id-in/sub1"), "{text}");
        let con = back["m2m:sgn"]["nev"]["rep"]["m2m:cin"]["con"]
            .as_str()
            .expect("JSON text");
        assert_eq!(
            serde_json::from_str::<Value>(con).unwrap(),
            evil["m2m:sgn"]["nev"]["rep"]["m2m:cin"]["con"]
        );
        for key in ["a b", "xml:lang", "xmlns:m2m", "1a", "a:b:c", ""] {
            let v = json!({"m2m:cin": {"con": {key: "v"}}});
            let text = String::from_utf8(encode(&v).unwrap()).unwrap();
            assert!(decode(text.as_bytes()).is_ok(), "{key}: {text}");
        }
        // Characters XML cannot carry.
        let text = String::from_utf8(encode(&json!({"m2m:cin": {"con": "a\u{1}b\u{0}"}})).unwrap())
            .unwrap();
        assert_eq!(
            decode(text.as_bytes()).unwrap()["m2m:cin"]["con"],
            json!("a\u{fffd}b\u{fffd}")
        );
        assert!(encode(&json!({"bad root": {}})).is_err());
    }

    #[test]
    fn lists_of_texts_with_spaces_repeat_their_element() {
        let acp = json!({"m2m:acp": {"pv": {"acr": [{"acor": ["Cae1"], "acop": 2,
            "acco": [{"actw": ["* * 8-20 * * * *", "* * * * * 1 *"]}]}]},
            "pvs": {"acr": [{"acor": ["Cae1"], "acop": 63}]}}});
        let text = String::from_utf8(encode(&acp).unwrap()).unwrap();
        assert_eq!(decode(text.as_bytes()).unwrap(), acp, "{text}");
        let one = read("<m2m:sch><se><sce>* * 8-20 * * * *</sce></se></m2m:sch>");
        assert_eq!(one["m2m:sch"]["se"]["sce"], json!(["* * 8-20 * * * *"]));
        let actr =
            read("<m2m:actr><evc><optr>3</optr><sbjt>cni</sbjt><thld>10</thld></evc></m2m:actr>");
        assert_eq!(
            actr["m2m:actr"]["evc"]["thld"],
            json!(10),
            "a threshold as it looks"
        );
    }

    #[test]
    fn hostile_documents_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><m2m:cin><con>&lol2;</con></m2m:cin>"#;
        for bad in [
            laughs,
            "<m2m:cin><con>&ext;</con></m2m:cin>",
            "<m2m:cin><con>x</m2m:cin>",
            "<m2m:cin></m2m:cin><m2m:cnt/>",
            "text",
            "",
            "<m2m:cin>",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = format!(
            "<m2m:cin><con>{}x{}</con></m2m:cin>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(decode(deep.as_bytes()).is_err());
        let many = format!(
            "<m2m:cin{}/>",
            (0..100).map(|i| format!(" a{i}=\"\"")).collect::<String>()
        );
        assert!(decode(many.as_bytes()).is_err(), "100 attributes");
        assert!(
            decode(b"<m2m:cin rn=\"a\" rn=\"b\"/>").is_err(),
            "an attribute twice"
        );
        // Many distinct siblings read in linear time (no quadratic grouping).
        let wide = format!(
            "<m2m:cin><con>{}</con></m2m:cin>",
            (0..20_000).map(|i| format!("<e{i}/>")).collect::<String>()
        );
        assert!(decode(wide.as_bytes()).is_ok());
    }
}
