//! SPARQL 1.1 SELECT over RDF (W3C SPARQL 1.1 Query, [33] of TS-0004): the queries of a
//! semanticsFilter read and evaluated, with no part of the CSE involved (`semantic_query` holds
//! the procedures of TS-0004 clauses 7.3.3.18 and 7.3.3.19 that use it).
//!
//! The SPARQL evaluated here: `PREFIX`/`BASE`, `SELECT [DISTINCT|REDUCED]` of variables or `*`,
//! a `WHERE` group of basic graph patterns (`;` and `,` lists, `a` for rdf:type, IRIs, prefixed
//! names, variables, literals with a language or a datatype, numbers, booleans) and `FILTER`s
//! (`||`, `&&`, `!`, `=`, `!=`, `<`, `>`, `<=`, `>=`, `contains`, `strstarts`, `strends`, `str`,
//! `lcase`, `ucase`, `lang`, `bound`, `isIRI`, `isURI`, `isLiteral`, `isBlank`), `LIMIT` and
//! `OFFSET`. Text that is no SPARQL query is 4143 INVALID_SPARQL_QUERY; SPARQL this CSE does not
//! evaluate (OPTIONAL, UNION, property paths, CONSTRUCT, ORDER BY, ...) is 5001, named.
//!
//! Results are in the W3C SPARQL 1.1 Query Results JSON Format or the SPARQL Query Results XML
//! Format. The work is bounded: at most [`MAX_SOLUTIONS`] partial solutions at any step and 20
//! million pattern comparisons (else 5207), FILTERs nested 64 deep at most (else 5001).

use base64::Engine;
use m2m_core::filter::FilterCriteria;
use m2m_core::{M2mError, M2mResult, ResponseStatusCode as Rsc};
use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfParser};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// The partial solutions a query may hold at once.
pub const MAX_SOLUTIONS: usize = 100_000;
/// The pattern-to-triple comparisons and filter evaluations one evaluation may make.
const MAX_WORK: u64 = 20_000_000;
/// How deep FILTER expressions may nest (parentheses, `!`, function arguments).
const MAX_NESTING: usize = 64;
/// The size of what one query may be: text, patterns, variables, FILTER expression nodes.
const MAX_QUERY_BYTES: usize = 16 * 1024;
const MAX_PATTERNS: usize = 64;
const MAX_VARIABLES: usize = 64;
const MAX_FILTER_NODES: usize = 1024;
/// The semanticsFilter queries one request may carry.
const MAX_QUERIES: usize = 8;
/// The triples one query's data basis may hold.
const MAX_TRIPLES: usize = 200_000;

const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const XSD: &str = "http://www.w3.org/2001/XMLSchema#";
const XSD_STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
const LANG_STRING: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString";
/// The XSD types compared as numbers.
const NUMERIC: [&str; 16] = [
    "integer",
    "decimal",
    "double",
    "float",
    "long",
    "int",
    "short",
    "byte",
    "nonNegativeInteger",
    "positiveInteger",
    "negativeInteger",
    "nonPositiveInteger",
    "unsignedLong",
    "unsignedInt",
    "unsignedShort",
    "unsignedByte",
];

/// An RDF term of a descriptor or a query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Term {
    Iri(String),
    Blank(String),
    Literal {
        value: String,
        datatype: String,
        lang: Option<String>,
    },
}

impl Term {
    fn string(value: impl Into<String>) -> Term {
        Term::Literal {
            value: value.into(),
            datatype: XSD_STRING.into(),
            lang: None,
        }
    }

    /// The lexical form of a string literal (plain, xsd:string or language-tagged).
    fn text(&self) -> Option<&str> {
        match self {
            Term::Literal {
                value, datatype, ..
            } if datatype == XSD_STRING || datatype == LANG_STRING => Some(value),
            _ => None,
        }
    }

    /// The value of a numeric literal.
    fn number(&self) -> Option<f64> {
        match self {
            Term::Literal {
                value, datatype, ..
            } if datatype
                .strip_prefix(XSD)
                .is_some_and(|t| NUMERIC.contains(&t)) =>
            {
                value.parse().ok()
            }
            _ => None,
        }
    }

    fn lang(&self) -> Option<&str> {
        match self {
            Term::Literal { lang, .. } => lang.as_deref(),
            _ => None,
        }
    }

    /// The term in the W3C SPARQL Query Results XML Format (a `<binding>`'s content).
    fn to_xml(&self) -> String {
        use m2m_core::xml::escape;
        match self {
            Term::Iri(v) => format!("<uri>{}</uri>", escape(v)),
            Term::Blank(v) => format!("<bnode>{}</bnode>", escape(v)),
            Term::Literal {
                value,
                datatype,
                lang,
            } => match lang {
                Some(l) => format!(
                    "<literal xml:lang=\"{}\">{}</literal>",
                    escape(l),
                    escape(value)
                ),
                None if datatype != XSD_STRING => format!(
                    "<literal datatype=\"{}\">{}</literal>",
                    escape(datatype),
                    escape(value)
                ),
                None => format!("<literal>{}</literal>", escape(value)),
            },
        }
    }

    /// The term in the W3C SPARQL JSON results format.
    fn to_json(&self) -> Value {
        match self {
            Term::Iri(v) => json!({ "type": "uri", "value": v }),
            Term::Blank(v) => json!({ "type": "bnode", "value": v }),
            Term::Literal {
                value,
                datatype,
                lang,
            } => {
                let mut m = Map::new();
                m.insert("type".into(), json!("literal"));
                m.insert("value".into(), json!(value));
                match lang {
                    Some(l) => {
                        m.insert("xml:lang".into(), json!(l));
                    }
                    None if datatype != XSD_STRING => {
                        m.insert("datatype".into(), json!(datatype));
                    }
                    None => {}
                }
                Value::Object(m)
            }
        }
    }
}

/// Whether a predicate is the base ontology's `resourceDescriptorLink` (TS-0004 clause
/// 7.3.3.18.1), in whichever namespace the descriptor's author wrote the base ontology (its
/// published IRIs differ between releases): the local name decides.
fn is_descriptor_link(predicate: &Term) -> bool {
    match predicate {
        Term::Iri(iri) => iri
            .rsplit(['#', '/'])
            .next()
            .is_some_and(|local| local == "resourceDescriptorLink"),
        _ => false,
    }
}

/// The RDF data basis of a query: the triples of the descriptors in scope, each term held once.
#[derive(Default)]
pub struct Graph {
    terms: Vec<Term>,
    ids: HashMap<Term, u32>,
    triples: Vec<[u32; 3]>,
    descriptors: usize,
    /// More triples were in scope than [`MAX_TRIPLES`].
    overflow: bool,
}

impl Graph {
    fn intern(&mut self, t: Term) -> u32 {
        if let Some(id) = self.ids.get(&t) {
            return *id;
        }
        let id = self.terms.len() as u32;
        self.terms.push(t.clone());
        self.ids.insert(t, id);
        id
    }

    /// Whether any descriptor was added.
    pub fn has_descriptors(&self) -> bool {
        self.descriptors > 0
    }

    /// Adds the triples of a descriptor (`dsp`, base64, in its representation `dcrp`); blank
    /// nodes stay apart from other descriptors'. A descriptor that does not parse adds nothing
    /// (it was checked when stored). Returns what its `resourceDescriptorLink` annotations name
    /// (TS-0004 clause 7.3.3.18.1: other descriptors to read with it).
    pub fn add_descriptor(&mut self, dcrp: u64, dsp: &str) -> Vec<String> {
        let first = self.triples.len();
        self.parse_descriptor(dcrp, dsp);
        self.triples[first..]
            .iter()
            .filter(|t| is_descriptor_link(&self.terms[t[1] as usize]))
            .filter_map(|t| match &self.terms[t[2] as usize] {
                Term::Iri(v) | Term::Literal { value: v, .. } => Some(v.clone()),
                Term::Blank(_) => None,
            })
            .collect()
    }

    fn parse_descriptor(&mut self, dcrp: u64, dsp: &str) {
        let format = match dcrp {
            4 => RdfFormat::RdfXml,
            5 => RdfFormat::Turtle,
            7 => RdfFormat::JsonLd {
                profile: JsonLdProfileSet::empty(),
            },
            _ => return,
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(dsp.trim()) else {
            return;
        };
        self.descriptors += 1;
        let scope = self.descriptors;
        let blank = |id: &str| Term::Blank(format!("d{scope}_{id}"));
        for quad in RdfParser::from_format(format).for_slice(&bytes).flatten() {
            if self.triples.len() >= MAX_TRIPLES {
                self.overflow = true;
                return;
            }
            let s = match quad.subject {
                oxrdf::NamedOrBlankNode::NamedNode(n) => Term::Iri(n.into_string()),
                oxrdf::NamedOrBlankNode::BlankNode(b) => blank(b.as_str()),
            };
            let p = Term::Iri(quad.predicate.into_string());
            let o = match quad.object {
                oxrdf::Term::NamedNode(n) => Term::Iri(n.into_string()),
                oxrdf::Term::BlankNode(b) => blank(b.as_str()),
                oxrdf::Term::Literal(l) => {
                    let (value, datatype, lang) = l.destruct();
                    let datatype = match (datatype, &lang) {
                        (Some(d), _) => d.into_string(),
                        (None, Some(_)) => LANG_STRING.to_owned(),
                        (None, None) => XSD_STRING.to_owned(),
                    };
                    Term::Literal {
                        value,
                        datatype,
                        lang,
                    }
                }
            };
            let triple = [self.intern(s), self.intern(p), self.intern(o)];
            self.triples.push(triple);
        }
    }

    #[cfg(test)]
    fn triple_count(&self) -> usize {
        self.triples.len()
    }
}

/// A position of a triple pattern, as read.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Var(String),
    Term(Term),
}

/// A FILTER expression.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare(&'static str, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    Node(Node),
}

/// A parsed query.
#[derive(Debug)]
pub struct Query {
    /// Every variable, in order of appearance (the projection of `*`).
    variables: Vec<String>,
    /// The projected variables; `None` for `*`.
    select: Option<Vec<String>>,
    distinct: bool,
    patterns: Vec<[Node; 3]>,
    filters: Vec<Expr>,
    /// The FILTER expression nodes, evaluated once per solution.
    filter_nodes: u64,
    limit: Option<usize>,
    offset: usize,
}

/// A solution: the term ID bound to each variable (by its index in `Query::variables`).
type Solution = Vec<Option<u32>>;

/// A position of a triple pattern over a graph.
#[derive(Clone, Copy)]
enum Slot {
    Var(usize),
    /// A constant term; `None` when the graph does not hold it (nothing matches).
    Const(Option<u32>),
}

/// What a FILTER is evaluated against.
struct Scope<'a> {
    graph: &'a Graph,
    index: &'a HashMap<&'a str, usize>,
    solution: &'a Solution,
}

impl Query {
    /// Reads a semanticsFilter: 4143 for what is no SPARQL query, 5001 for SPARQL this CSE does
    /// not evaluate (or more than it evaluates).
    pub fn parse(text: &str) -> M2mResult<Query> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(unsupported("a query longer than 16 KiB"));
        }
        let tokens = lex(text)?;
        Parser {
            tokens,
            at: 0,
            prefixes: HashMap::new(),
            base: String::new(),
            depth: 0,
            nodes: 0,
        }
        .query()
    }

    /// The variables of the result, in order.
    fn projected(&self) -> &[String] {
        self.select.as_deref().unwrap_or(&self.variables)
    }

    /// The solutions over `graph`, projected, made distinct and cut as asked.
    fn solve(&self, graph: &Graph) -> M2mResult<Vec<Vec<Option<u32>>>> {
        let too_much = || {
            M2mError::new(
                Rsc::NotAcceptable,
                "the semantic query needs more work than this CSE gives one query",
            )
        };
        if graph.overflow {
            return Err(M2mError::new(
                Rsc::NotAcceptable,
                "more semantic descriptions are in scope than one query reads",
            ));
        }
        let index: HashMap<&str, usize> = self
            .variables
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i))
            .collect();
        let slot = |n: &Node| match n {
            Node::Var(v) => Slot::Var(index[v.as_str()]),
            Node::Term(t) => Slot::Const(graph.ids.get(t).copied()),
        };
        let mut solutions: Vec<Solution> = vec![vec![None; self.variables.len()]];
        let mut work: u64 = 0;
        for pattern in &self.patterns {
            let slots = [slot(&pattern[0]), slot(&pattern[1]), slot(&pattern[2])];
            let mut next = Vec::new();
            for sol in &solutions {
                work += graph.triples.len() as u64;
                if work > MAX_WORK {
                    return Err(too_much());
                }
                for triple in &graph.triples {
                    if let Some(extended) = bind(&slots, triple, sol) {
                        next.push(extended);
                        if next.len() > MAX_SOLUTIONS {
                            return Err(too_much());
                        }
                    }
                }
            }
            solutions = next;
        }
        work += solutions.len() as u64 * self.filter_nodes;
        if work > MAX_WORK {
            return Err(too_much());
        }
        solutions.retain(|solution| {
            let scope = Scope {
                graph,
                index: &index,
                solution,
            };
            self.filters.iter().all(|f| truth(f, &scope) == Some(true))
        });
        let columns: Vec<usize> = self
            .projected()
            .iter()
            .map(|v| index.get(v.as_str()).copied().unwrap_or(usize::MAX))
            .collect();
        let mut rows: Vec<Vec<Option<u32>>> = solutions
            .iter()
            .map(|s| {
                columns
                    .iter()
                    .map(|c| s.get(*c).copied().flatten())
                    .collect()
            })
            .collect();
        if self.distinct {
            let mut seen = HashSet::new();
            rows.retain(|r| seen.insert(r.clone()));
        }
        Ok(rows
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// Whether the query has a solution over `graph` (semantic resource discovery).
    pub fn matches(&self, graph: &Graph) -> M2mResult<bool> {
        Ok(!self.solve(graph)?.is_empty())
    }

    /// The results over `graph` in the SPARQL 1.1 Query Results JSON Format, as text.
    pub fn results_json(&self, graph: &Graph) -> M2mResult<String> {
        let vars = self.projected();
        let bindings: Vec<Value> = self
            .solve(graph)?
            .into_iter()
            .map(|row| {
                let mut b = Map::new();
                for (v, t) in vars.iter().zip(row) {
                    if let Some(t) = t {
                        b.insert(v.clone(), graph.terms[t as usize].to_json());
                    }
                }
                Value::Object(b)
            })
            .collect();
        Ok(json!({ "results": { "bindings": bindings }, "head": { "vars": vars } }).to_string())
    }

    /// The results over `graph` in the format a response in `ser` carries (TS-0004 clause
    /// 7.3.3.19): the XML results format for XML, the JSON one for JSON and CBOR.
    pub fn results_for(
        &self,
        graph: &Graph,
        ser: Option<m2m_core::serialization::Serialization>,
    ) -> M2mResult<String> {
        match ser {
            Some(m2m_core::serialization::Serialization::Xml) => self.results_xml(graph),
            _ => self.results_json(graph),
        }
    }

    /// The results over `graph` in the SPARQL Query Results XML Format (Second Edition), as
    /// text: what an XML response primitive carries (TS-0004 clause 7.3.3.19).
    pub fn results_xml(&self, graph: &Graph) -> M2mResult<String> {
        use m2m_core::xml::escape;
        let vars = self.projected();
        let mut out = String::from(
            "<?xml version=\"1.0\"?><sparql xmlns=\"http://www.w3.org/2005/sparql-results#\"><head>",
        );
        for v in vars {
            out.push_str(&format!("<variable name=\"{}\"/>", escape(v)));
        }
        out.push_str("</head><results>");
        for row in self.solve(graph)? {
            out.push_str("<result>");
            for (v, t) in vars.iter().zip(row) {
                if let Some(t) = t {
                    out.push_str(&format!(
                        "<binding name=\"{}\">{}</binding>",
                        escape(v),
                        graph.terms[t as usize].to_xml()
                    ));
                }
            }
            out.push_str("</result>");
        }
        out.push_str("</results></sparql>");
        Ok(out)
    }
}

/// `sol` extended so that the pattern matches `triple`, if it can be.
fn bind(slots: &[Slot; 3], triple: &[u32; 3], sol: &Solution) -> Option<Solution> {
    let mut out: Option<Solution> = None;
    for (slot, term) in slots.iter().zip(triple) {
        match *slot {
            Slot::Const(Some(id)) if id == *term => {}
            Slot::Const(_) => return None,
            Slot::Var(v) => match out.as_ref().unwrap_or(sol)[v] {
                Some(bound) if bound != *term => return None,
                Some(_) => {}
                None => out.get_or_insert_with(|| sol.clone())[v] = Some(*term),
            },
        }
    }
    Some(out.unwrap_or_else(|| sol.clone()))
}

/// A FILTER's effective boolean value; `None` for an error (which filters the solution out).
/// `||` and `&&` follow SPARQL's three-valued logic: an error is outweighed by true (`||`) or
/// false (`&&`) on the other side.
fn truth(e: &Expr, s: &Scope<'_>) -> Option<bool> {
    match e {
        Expr::Or(items) => {
            let values: Vec<Option<bool>> = items.iter().map(|i| truth(i, s)).collect();
            if values.contains(&Some(true)) {
                Some(true)
            } else if values.contains(&None) {
                None
            } else {
                Some(false)
            }
        }
        Expr::And(items) => {
            let values: Vec<Option<bool>> = items.iter().map(|i| truth(i, s)).collect();
            if values.contains(&Some(false)) {
                Some(false)
            } else if values.contains(&None) {
                None
            } else {
                Some(true)
            }
        }
        Expr::Not(a) => truth(a, s).map(|b| !b),
        _ => match value(e, s)? {
            Val::Bool(b) => Some(b),
            Val::Term(t) => match t.as_ref() {
                Term::Literal {
                    value, datatype, ..
                } if *datatype == format!("{XSD}boolean") => Some(value == "true" || value == "1"),
                t => match t.number() {
                    Some(n) => Some(n != 0.0 && !n.is_nan()),
                    None => t.text().map(|s| !s.is_empty()),
                },
            },
        },
    }
}

enum Val<'a> {
    Bool(bool),
    Term(std::borrow::Cow<'a, Term>),
}

fn value<'a>(e: &'a Expr, s: &Scope<'a>) -> Option<Val<'a>> {
    use std::borrow::Cow;
    Some(match e {
        Expr::Node(Node::Var(v)) => {
            let id = (*s.solution.get(*s.index.get(v.as_str())?)?)?;
            Val::Term(Cow::Borrowed(&s.graph.terms[id as usize]))
        }
        Expr::Node(Node::Term(t)) => Val::Term(Cow::Borrowed(t)),
        Expr::Or(_) | Expr::And(_) | Expr::Not(_) => Val::Bool(truth(e, s)?),
        Expr::Compare(op, a, b) => Val::Bool(compare(op, &*term(a, s)?, &*term(b, s)?)?),
        Expr::Call(f, args) => call(f, args, s)?,
    })
}

fn term<'a>(e: &'a Expr, s: &Scope<'a>) -> Option<std::borrow::Cow<'a, Term>> {
    Some(match value(e, s)? {
        Val::Term(t) => t,
        Val::Bool(b) => std::borrow::Cow::Owned(Term::Literal {
            value: b.to_string(),
            datatype: format!("{XSD}boolean"),
            lang: None,
        }),
    })
}

/// SPARQL's comparison: numbers by value, strings of the same language (or none) by text, any
/// terms for (in)equality; an ordering of other terms is an error.
fn compare(op: &str, a: &Term, b: &Term) -> Option<bool> {
    let ordering = match (a.number(), b.number()) {
        (Some(x), Some(y)) => x.partial_cmp(&y)?,
        _ => match (a.text(), b.text()) {
            (Some(x), Some(y))
                if a.lang().map(str::to_ascii_lowercase)
                    == b.lang().map(str::to_ascii_lowercase) =>
            {
                x.cmp(y)
            }
            _ => {
                return match op {
                    "=" => Some(a == b),
                    "!=" => Some(a != b),
                    _ => None,
                }
            }
        },
    };
    Some(match op {
        "=" => ordering.is_eq(),
        "!=" => !ordering.is_eq(),
        "<" => ordering.is_lt(),
        ">" => ordering.is_gt(),
        "<=" => ordering.is_le(),
        _ => ordering.is_ge(),
    })
}

fn call<'a>(f: &str, args: &'a [Expr], s: &Scope<'a>) -> Option<Val<'a>> {
    use std::borrow::Cow;
    let arg = |i: usize| args.get(i).and_then(|a| term(a, s));
    let text = |i: usize| arg(i).and_then(|t| t.text().map(str::to_owned));
    Some(match f {
        "contains" => Val::Bool(text(0)?.contains(&text(1)?)),
        "strstarts" => Val::Bool(text(0)?.starts_with(&text(1)?)),
        "strends" => Val::Bool(text(0)?.ends_with(&text(1)?)),
        "str" => Val::Term(Cow::Owned(Term::string(match arg(0)?.into_owned() {
            Term::Iri(i) => i,
            Term::Literal { value, .. } => value,
            Term::Blank(_) => return None,
        }))),
        "lcase" => Val::Term(Cow::Owned(Term::string(text(0)?.to_lowercase()))),
        "ucase" => Val::Term(Cow::Owned(Term::string(text(0)?.to_uppercase()))),
        "lang" => match arg(0)?.as_ref() {
            Term::Literal { lang, .. } => {
                Val::Term(Cow::Owned(Term::string(lang.clone().unwrap_or_default())))
            }
            _ => return None,
        },
        "bound" => match args.first() {
            Some(Expr::Node(Node::Var(v))) => Val::Bool(
                s.index
                    .get(v.as_str())
                    .and_then(|i| s.solution.get(*i).copied().flatten())
                    .is_some(),
            ),
            _ => return None,
        },
        "isiri" | "isuri" => Val::Bool(matches!(arg(0)?.as_ref(), Term::Iri(_))),
        "isliteral" => Val::Bool(matches!(arg(0)?.as_ref(), Term::Literal { .. })),
        "isblank" => Val::Bool(matches!(arg(0)?.as_ref(), Term::Blank(_))),
        _ => return None,
    })
}

/// The queries of a request's semanticsFilter, read (4143, 5001 as [`Query::parse`]).
pub fn filters(fc: &FilterCriteria) -> M2mResult<Vec<Query>> {
    if fc.semantics_filter.len() > MAX_QUERIES {
        return Err(unsupported("more than 8 semanticsFilter queries"));
    }
    fc.semantics_filter
        .iter()
        .map(|q| Query::parse(q))
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Reading the query text

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Iri(String),
    PName(String, String),
    Var(String),
    Str(String),
    Lang(String),
    Num(String),
    Word(String),
    Punct(&'static str),
}

fn invalid(why: impl std::fmt::Display) -> M2mError {
    M2mError::new(Rsc::InvalidSparqlQuery, format!("semanticsFilter: {why}"))
}

fn unsupported(what: &str) -> M2mError {
    M2mError::not_implemented(format!(
        "semanticsFilter: {what} is SPARQL this CSE does not evaluate"
    ))
}

const PUNCT: [&str; 21] = [
    "&&", "||", "!=", "<=", ">=", "^^", "{", "}", "(", ")", ".", ";", ",", "*", "=", "<", ">", "!",
    "/", "|", "[",
];

fn lex(text: &str) -> M2mResult<Vec<Tok>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let name_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // An IRI reference: `<` up to `>` with no space inside; else a comparison.
        if c == '<' {
            if let Some(len) = chars[i + 1..]
                .iter()
                .position(|c| *c == '>' || c.is_whitespace() || *c == '<')
                .filter(|l| chars.get(i + 1 + l) == Some(&'>'))
            {
                out.push(Tok::Iri(chars[i + 1..i + 1 + len].iter().collect()));
                i += len + 2;
                continue;
            }
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(invalid("a string is not closed")),
                    Some(q) if *q == c => break,
                    Some('\\') => {
                        s.push(match chars.get(i + 1) {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some(e @ ('"' | '\'' | '\\')) => *e,
                            _ => return Err(invalid("an unknown escape in a string")),
                        });
                        i += 2;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push(Tok::Str(s));
            continue;
        }
        if (c == '?' || c == '$')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
        {
            let start = i + 1;
            i = start;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Var(chars[start..i].iter().collect()));
            continue;
        }
        if c == '@' {
            let start = i + 1;
            i = start;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '-') {
                i += 1;
            }
            out.push(Tok::Lang(chars[start..i].iter().collect()));
            continue;
        }
        if c.is_ascii_digit()
            || ((c == '+' || c == '-') && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            // An exponent makes an xsd:double (`1e3`, `2.5E-2`).
            if matches!(chars.get(i), Some('e' | 'E')) {
                let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
                if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
                    i += 1 + sign;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if chars.get(i) == Some(&':') {
                i += 1;
                let local_start = i;
                while i < chars.len() && name_char(chars[i]) {
                    i += 1;
                }
                // A local name does not end with '.': that is the end of the triple.
                while i > local_start && chars[i - 1] == '.' {
                    i -= 1;
                }
                if word == "_" {
                    return Err(unsupported("a blank node label (_:)"));
                }
                out.push(Tok::PName(word, chars[local_start..i].iter().collect()));
            } else if word.is_empty() {
                return Err(invalid(format!("unexpected '{c}'")));
            } else {
                out.push(Tok::Word(word));
            }
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match PUNCT.iter().find(|p| rest.starts_with(*p)) {
            Some(p) => {
                out.push(Tok::Punct(p));
                i += p.chars().count();
            }
            None => return Err(invalid(format!("unexpected '{c}'"))),
        }
    }
    Ok(out)
}

/// Words of SPARQL this CSE does not evaluate.
const UNSUPPORTED: [&str; 22] = [
    "OPTIONAL",
    "UNION",
    "MINUS",
    "GRAPH",
    "SERVICE",
    "BIND",
    "VALUES",
    "ORDER",
    "GROUP",
    "HAVING",
    "CONSTRUCT",
    "ASK",
    "DESCRIBE",
    "FROM",
    "NAMED",
    "INSERT",
    "DELETE",
    "EXISTS",
    "NOT",
    "REGEX",
    "LOAD",
    "CLEAR",
];

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
    prefixes: HashMap<String, String>,
    base: String,
    /// How deep the expression being read nests.
    depth: usize,
    /// The FILTER expression nodes read so far.
    nodes: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> M2mResult<Tok> {
        let t = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| invalid("the query ends too early"))?;
        self.at += 1;
        Ok(t)
    }

    fn word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn punct(&self, p: &str) -> bool {
        self.peek()
            == Some(&Tok::Punct(match PUNCT.iter().find(|x| **x == p) {
                Some(x) => x,
                None => return false,
            }))
    }

    fn expect(&mut self, p: &str) -> M2mResult<()> {
        if self.punct(p) {
            self.at += 1;
            Ok(())
        } else {
            Err(invalid(format!("'{p}' expected")))
        }
    }

    /// Refuses, named, a word of SPARQL this CSE does not evaluate.
    fn refuse_unsupported(&self) -> M2mResult<()> {
        if let Some(Tok::Word(w)) = self.peek() {
            if let Some(u) = UNSUPPORTED.iter().find(|u| w.eq_ignore_ascii_case(u)) {
                return Err(unsupported(u));
            }
        }
        Ok(())
    }

    fn query(mut self) -> M2mResult<Query> {
        loop {
            if self.word("PREFIX") {
                self.at += 1;
                let (prefix, local) = match self.next()? {
                    Tok::PName(p, l) => (p, l),
                    _ => return Err(invalid("a PREFIX names a prefix such as 'm2m:'")),
                };
                if !local.is_empty() {
                    return Err(invalid("a PREFIX names a prefix such as 'm2m:'"));
                }
                let Tok::Iri(iri) = self.next()? else {
                    return Err(invalid("a PREFIX is followed by an IRI"));
                };
                let iri = self.resolve(&iri);
                self.prefixes.insert(prefix, iri);
            } else if self.word("BASE") {
                self.at += 1;
                let Tok::Iri(iri) = self.next()? else {
                    return Err(invalid("BASE is followed by an IRI"));
                };
                self.base = iri;
            } else {
                break;
            }
        }
        self.refuse_unsupported()?;
        if !self.word("SELECT") {
            return Err(invalid("a query here is a SELECT"));
        }
        self.at += 1;
        let distinct = self.word("DISTINCT") || self.word("REDUCED");
        if distinct {
            self.at += 1;
        }
        let select = if self.punct("*") {
            self.at += 1;
            None
        } else {
            let mut vars = Vec::new();
            while let Some(Tok::Var(v)) = self.peek() {
                vars.push(v.clone());
                self.at += 1;
            }
            if self.punct("(") {
                return Err(unsupported("an expression in SELECT"));
            }
            if vars.is_empty() {
                return Err(invalid("SELECT names variables or '*'"));
            }
            Some(vars)
        };
        self.refuse_unsupported()?;
        if self.word("WHERE") {
            self.at += 1;
        }
        self.expect("{")?;
        let (patterns, filters) = self.group()?;
        self.expect("}")?;
        let (mut limit, mut offset) = (None, 0);
        while self.peek().is_some() {
            self.refuse_unsupported()?;
            let which = match self.next()? {
                Tok::Word(w) if w.eq_ignore_ascii_case("LIMIT") => true,
                Tok::Word(w) if w.eq_ignore_ascii_case("OFFSET") => false,
                _ => return Err(invalid("only LIMIT and OFFSET may follow the WHERE group")),
            };
            let Tok::Num(n) = self.next()? else {
                return Err(invalid("LIMIT and OFFSET take a number"));
            };
            let n: usize = n
                .parse()
                .map_err(|_| invalid("LIMIT and OFFSET take a number"))?;
            if which {
                limit = Some(n);
            } else {
                offset = n;
            }
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(unsupported("more than 64 triple patterns"));
        }
        let mut variables: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for n in patterns.iter().flatten() {
            if let Node::Var(v) = n {
                if seen.insert(v.clone()) {
                    variables.push(v.clone());
                }
            }
        }
        let selected = select.as_ref().map_or(0, |s| {
            s.iter().filter(|v| !seen.contains(v.as_str())).count()
        });
        if variables.len() + selected > MAX_VARIABLES {
            return Err(unsupported("more than 64 variables"));
        }
        Ok(Query {
            variables,
            select,
            distinct,
            patterns,
            filters,
            filter_nodes: self.nodes as u64,
            limit,
            offset,
        })
    }

    fn resolve(&self, iri: &str) -> String {
        if iri.contains(':') || self.base.is_empty() {
            iri.to_owned()
        } else {
            format!("{}{iri}", self.base)
        }
    }

    fn group(&mut self) -> M2mResult<(Vec<[Node; 3]>, Vec<Expr>)> {
        let (mut patterns, mut filters) = (Vec::new(), Vec::new());
        loop {
            self.refuse_unsupported()?;
            if self.punct("}") || self.peek().is_none() {
                return Ok((patterns, filters));
            }
            if self.punct(".") {
                self.at += 1;
                continue;
            }
            if self.punct("{") {
                return Err(unsupported("a nested group"));
            }
            if self.word("FILTER") {
                self.at += 1;
                filters.push(self.constraint()?);
                continue;
            }
            self.triples(&mut patterns)?;
        }
    }

    /// A subject and its predicate-object lists (`;`, `,`).
    fn triples(&mut self, out: &mut Vec<[Node; 3]>) -> M2mResult<()> {
        let subject = self.node(false)?;
        loop {
            let predicate = if self.peek() == Some(&Tok::Word("a".into())) {
                self.at += 1;
                Node::Term(Term::Iri(RDF_TYPE.into()))
            } else {
                self.node(false)?
            };
            if ["/", "|", "*"].iter().any(|p| self.punct(p)) || self.punct("!") {
                return Err(unsupported("a property path"));
            }
            loop {
                let object = self.node(true)?;
                out.push([subject.clone(), predicate.clone(), object]);
                if self.punct(",") {
                    self.at += 1;
                    continue;
                }
                break;
            }
            if self.punct(";") {
                self.at += 1;
                if self.punct(".") || self.punct("}") {
                    return Ok(());
                }
                continue;
            }
            return Ok(());
        }
    }

    /// A variable, an IRI, a prefixed name or (as an object) a literal.
    fn node(&mut self, literal: bool) -> M2mResult<Node> {
        if self.punct("[") || self.punct("(") {
            return Err(unsupported("blank node and collection syntax"));
        }
        Ok(match self.next()? {
            Tok::Var(v) => Node::Var(v),
            Tok::Iri(i) => Node::Term(Term::Iri(self.resolve(&i))),
            Tok::PName(p, l) => Node::Term(Term::Iri(self.expand(&p, &l)?)),
            t if literal => Node::Term(self.literal(t)?),
            _ => return Err(invalid("a variable or an IRI expected")),
        })
    }

    fn expand(&self, prefix: &str, local: &str) -> M2mResult<String> {
        self.prefixes
            .get(prefix)
            .map(|ns| format!("{ns}{local}"))
            .ok_or_else(|| invalid(format!("the prefix '{prefix}:' is not declared")))
    }

    fn literal(&mut self, t: Tok) -> M2mResult<Term> {
        Ok(match t {
            Tok::Str(value) => match self.peek().cloned() {
                Some(Tok::Lang(lang)) => {
                    self.at += 1;
                    Term::Literal {
                        value,
                        datatype: LANG_STRING.into(),
                        lang: Some(lang.to_ascii_lowercase()),
                    }
                }
                Some(Tok::Punct("^^")) => {
                    self.at += 1;
                    let datatype = match self.next()? {
                        Tok::Iri(i) => self.resolve(&i),
                        Tok::PName(p, l) => self.expand(&p, &l)?,
                        _ => return Err(invalid("a datatype IRI expected after '^^'")),
                    };
                    Term::Literal {
                        value,
                        datatype,
                        lang: None,
                    }
                }
                _ => Term::string(value),
            },
            Tok::Num(n) => Term::Literal {
                datatype: format!(
                    "{XSD}{}",
                    if n.contains(['e', 'E']) {
                        "double"
                    } else if n.contains('.') {
                        "decimal"
                    } else {
                        "integer"
                    }
                ),
                value: n,
                lang: None,
            },
            Tok::Word(w) if w == "true" || w == "false" => Term::Literal {
                value: w,
                datatype: format!("{XSD}boolean"),
                lang: None,
            },
            _ => return Err(invalid("a term expected")),
        })
    }

    /// `FILTER (expr)` or `FILTER fn(args)`.
    fn constraint(&mut self) -> M2mResult<Expr> {
        if self.punct("(") {
            self.at += 1;
            let e = self.or()?;
            self.expect(")")?;
            Ok(e)
        } else {
            self.primary()
        }
    }

    fn or(&mut self) -> M2mResult<Expr> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(unsupported("a FILTER nested more than 64 deep"));
        }
        let e = self.or_list();
        self.depth -= 1;
        e
    }

    /// Counts one FILTER expression node against [`MAX_FILTER_NODES`].
    fn count(&mut self) -> M2mResult<()> {
        self.nodes += 1;
        if self.nodes > MAX_FILTER_NODES {
            return Err(unsupported("FILTERs of more than 1024 terms and operators"));
        }
        Ok(())
    }

    /// `a || b || ...` as one flat list: a long chain never nests.
    fn or_list(&mut self) -> M2mResult<Expr> {
        let mut items = vec![self.and()?];
        while self.punct("||") {
            self.at += 1;
            self.count()?;
            items.push(self.and()?);
        }
        Ok(match items.len() {
            1 => items.pop().unwrap_or(Expr::Or(Vec::new())),
            _ => Expr::Or(items),
        })
    }

    fn and(&mut self) -> M2mResult<Expr> {
        let mut items = vec![self.relation()?];
        while self.punct("&&") {
            self.at += 1;
            self.count()?;
            items.push(self.relation()?);
        }
        Ok(match items.len() {
            1 => items.pop().unwrap_or(Expr::And(Vec::new())),
            _ => Expr::And(items),
        })
    }

    fn relation(&mut self) -> M2mResult<Expr> {
        let left = self.unary()?;
        for op in ["=", "!=", "<", ">", "<=", ">="] {
            if self.punct(op) {
                self.at += 1;
                self.count()?;
                let right = self.unary()?;
                let op = PUNCT.iter().find(|p| **p == op).copied().unwrap_or("=");
                return Ok(Expr::Compare(op, Box::new(left), Box::new(right)));
            }
        }
        Ok(left)
    }

    fn unary(&mut self) -> M2mResult<Expr> {
        let mut negations = 0;
        while self.punct("!") {
            self.at += 1;
            negations += 1;
        }
        let mut e = self.primary()?;
        // `!!x` is `x`: a run of negations never nests.
        if negations % 2 == 1 {
            e = Expr::Not(Box::new(e));
        }
        Ok(e)
    }

    fn primary(&mut self) -> M2mResult<Expr> {
        self.refuse_unsupported()?;
        self.count()?;
        if self.punct("(") {
            self.at += 1;
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        let t = self.next()?;
        if let Tok::Word(w) = &t {
            let f = w.to_ascii_lowercase();
            if f != "true" && f != "false" {
                const KNOWN: [&str; 12] = [
                    "contains",
                    "strstarts",
                    "strends",
                    "str",
                    "lcase",
                    "ucase",
                    "lang",
                    "bound",
                    "isiri",
                    "isuri",
                    "isliteral",
                    "isblank",
                ];
                if !KNOWN.contains(&f.as_str()) {
                    return Err(unsupported(&format!("the function {w}")));
                }
                self.expect("(")?;
                let mut args = Vec::new();
                if !self.punct(")") {
                    loop {
                        args.push(self.or()?);
                        if self.punct(",") {
                            self.at += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect(")")?;
                return Ok(Expr::Call(f, args));
            }
        }
        Ok(Expr::Node(match t {
            Tok::Var(v) => Node::Var(v),
            Tok::Iri(i) => Node::Term(Term::Iri(self.resolve(&i))),
            Tok::PName(p, l) => Node::Term(Term::Iri(self.expand(&p, &l)?)),
            other => Node::Term(self.literal(other)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIPTOR: &str = r#"@prefix m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#> .
@prefix ex: <http://example.org/home#> .
ex:lock1 a m2m:Device ; m2m:hasName "front door lock"@en ; ex:battery 81 .
ex:lock2 a m2m:Device ; m2m:hasName "garage lock" ; ex:battery 14 .
ex:op1 a m2m:Operation ; m2m:oneM2MTargetURI "/id-in/cse-in/lock1/state" ; m2m:oneM2MMethod "RETRIEVE" .
"#;

    fn graph() -> Graph {
        let mut g = Graph::default();
        g.add_descriptor(
            5,
            &base64::engine::general_purpose::STANDARD.encode(DESCRIPTOR),
        );
        g
    }

    fn rows(q: &str) -> Value {
        let text = Query::parse(q).unwrap().results_json(&graph()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    const PRE: &str = "PREFIX m2m: <https://git.onem2m.org/MAS/BaseOntology/raw/master/base_ontology.owl#>\nPREFIX ex: <http://example.org/home#>\n";

    /// An XML response primitive carries the SPARQL Query Results XML Format (TS-0004 clause
    /// 7.3.3.19): IRIs, typed and language-tagged literals, and markup in values escaped.
    #[test]
    fn results_in_the_xml_format_bind_each_term_by_its_kind() {
        let xml = Query::parse(&format!(
            "{PRE}SELECT ?d ?n ?b WHERE {{ ?d m2m:hasName ?n ; ex:battery ?b FILTER(?b > 50) }}"
        ))
        .unwrap()
        .results_xml(&graph())
        .unwrap();
        assert!(
            xml.starts_with("<?xml version=\"1.0\"?><sparql xmlns=\"http://www.w3.org/2005/sparql-results#\"><head><variable name=\"d\"/><variable name=\"n\"/><variable name=\"b\"/></head><results>"),
            "{xml}"
        );
        assert!(
            xml.contains("<result><binding name=\"d\"><uri>http://example.org/home#lock1</uri></binding><binding name=\"n\"><literal xml:lang=\"en\">front door lock</literal></binding><binding name=\"b\"><literal datatype=\"http://www.w3.org/2001/XMLSchema#integer\">81</literal></binding></result>"),
            "{xml}"
        );
        assert!(xml.ends_with("</results></sparql>"), "{xml}");
        // Markup inside a value stays character data.
        let mut g = Graph::default();
        g.add_descriptor(
            5,
            &base64::engine::general_purpose::STANDARD.encode(
                "@prefix ex: <http://example.org/home#> . ex:x ex:note \"a<b & \\\"c\\\"\" .",
            ),
        );
        let xml = Query::parse(&format!("{PRE}SELECT ?n WHERE {{ ?x ex:note ?n }}"))
            .unwrap()
            .results_xml(&g)
            .unwrap();
        assert!(
            xml.contains("<literal>a&lt;b &amp; &quot;c&quot;</literal>"),
            "{xml}"
        );
    }

    #[test]
    fn basic_graph_patterns_and_filters_select_their_solutions() {
        assert_eq!(graph().triple_count(), 9);
        let r = rows(&format!(
            "{PRE}SELECT ?d ?n WHERE {{ ?d a m2m:Device ; m2m:hasName ?n ; ex:battery ?b . FILTER(?b < 20) }}"
        ));
        assert_eq!(r["head"]["vars"], json!(["d", "n"]));
        assert_eq!(
            r["results"]["bindings"],
            json!([{ "d": { "type": "uri", "value": "http://example.org/home#lock2" },
                     "n": { "type": "literal", "value": "garage lock" } }])
        );
        let r = rows(&format!(
            "{PRE}select ?wm ?res where {{ ?wm a m2m:Operation . ?wm m2m:oneM2MTargetURI ?res FILTER(contains(?res, \"lock1\")) }}"
        ));
        assert_eq!(
            r["results"]["bindings"].as_array().map(Vec::len),
            Some(1),
            "{r}"
        );
        let r = rows(&format!(
            "{PRE}SELECT DISTINCT ?t WHERE {{ ?x a ?t }} LIMIT 1"
        ));
        assert_eq!(
            r["results"]["bindings"].as_array().map(Vec::len),
            Some(1),
            "{r}"
        );
        let r = rows(&format!(
            "{PRE}SELECT * WHERE {{ ?x m2m:hasName ?n FILTER(lang(?n) = \"en\") }}"
        ));
        assert_eq!(
            r["results"]["bindings"][0]["n"]["xml:lang"],
            json!("en"),
            "{r}"
        );
        let r = rows(&format!("{PRE}SELECT ?x WHERE {{ ?x ex:battery 81 }}"));
        assert_eq!(
            r["results"]["bindings"].as_array().map(Vec::len),
            Some(1),
            "{r}"
        );
        let text = Query::parse(&format!("{PRE}SELECT ?x WHERE {{ ?x a ex:Nothing }}"))
            .unwrap()
            .results_json(&graph())
            .unwrap();
        assert!(
            text.starts_with("{\"results\":") && text.ends_with("}}"),
            "{text}"
        );
    }

    #[test]
    fn what_is_no_sparql_and_what_is_not_evaluated_have_their_codes() {
        for bad in [
            "",
            "hello",
            "SELECT WHERE { ?x ?p ?o }",
            "SELECT ?x WHERE { ?x ?p ?o",
            "SELECT ?x WHERE { ?x undeclared:p ?o }",
            "SELECT ?x WHERE { ?x ?p \"open }",
            "PREFIX x <http://a> SELECT ?x WHERE { ?x ?p ?o }",
        ] {
            let e = Query::parse(bad).unwrap_err();
            assert_eq!(e.rsc, Rsc::InvalidSparqlQuery, "{bad}: {}", e.dbg);
        }
        for (q, named) in [
            (
                "SELECT ?x WHERE { ?x ?p ?o OPTIONAL { ?x ?q ?r } }",
                "OPTIONAL",
            ),
            (
                "SELECT ?x WHERE { { ?x ?p ?o } UNION { ?x ?q ?r } }",
                "nested group",
            ),
            ("CONSTRUCT { ?x ?p ?o } WHERE { ?x ?p ?o }", "CONSTRUCT"),
            (
                "SELECT ?x WHERE { ?x <http://a>/<http://b> ?o }",
                "property path",
            ),
            (
                "SELECT ?x WHERE { ?x ?p ?o FILTER regex(?o, \"a\") }",
                "REGEX",
            ),
            ("SELECT ?x WHERE { ?x ?p ?o } ORDER BY ?x", "ORDER"),
            (
                "SELECT (COUNT(?x) AS ?n) WHERE { ?x ?p ?o }",
                "expression in SELECT",
            ),
        ] {
            let e = Query::parse(q).unwrap_err();
            assert_eq!(e.rsc, Rsc::NotImplemented, "{q}: {}", e.dbg);
            assert!(e.dbg.contains(named), "{q}: {}", e.dbg);
        }
    }

    /// Nothing of a query's shape makes the CSE recurse or work without bound: deep
    /// parentheses and calls are refused at 64, chains of `&&`/`||` are flat lists and count
    /// against 1024 terms, runs of `!` collapse, and the text, patterns, variables and queries
    /// are bounded.
    #[test]
    fn no_shape_of_query_overflows_the_stack_or_the_budget() {
        let refused = |q: &str| Query::parse(q).map(|_| ()).unwrap_err().rsc;
        let deep = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}?o{}) }}",
            "(".repeat(100),
            ")".repeat(100)
        );
        assert_eq!(refused(&deep), Rsc::NotImplemented);
        let calls = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}?o{}) }}",
            "str(".repeat(100),
            ")".repeat(100)
        );
        assert_eq!(refused(&calls), Rsc::NotImplemented);
        for op in ["&&", "||"] {
            let chain = format!(
                "SELECT ?x WHERE {{ ?x ?p ?o FILTER(1{}) }}",
                format!("{op}1").repeat(2000)
            );
            assert_eq!(refused(&chain), Rsc::NotImplemented, "{op} chain");
            let short = format!(
                "SELECT ?x WHERE {{ ?x ?p ?o FILTER(1{}) }}",
                format!("{op}1").repeat(100)
            );
            assert!(Query::parse(&short).is_ok(), "{op} chain of 100");
        }
        let nots = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}bound(?o)) }}",
            "!".repeat(1001)
        );
        let q = Query::parse(&nots).unwrap();
        assert_eq!(
            q.filters,
            vec![Expr::Not(Box::new(Expr::Call(
                "bound".into(),
                vec![Expr::Node(Node::Var("o".into()))]
            )))]
        );
        assert_eq!(
            refused(&"#".repeat(17 * 1024)),
            Rsc::NotImplemented,
            "16 KiB"
        );
        let patterns: String = (0..65)
            .map(|i| format!("?s <http://e/p{i}> ?o . "))
            .collect();
        assert_eq!(
            refused(&format!("SELECT ?s WHERE {{ {patterns} }}")),
            Rsc::NotImplemented
        );
        let vars: String = (0..65).map(|i| format!("?v{i} ")).collect();
        assert_eq!(
            refused(&format!("SELECT {vars} WHERE {{ ?s ?p ?o }}")),
            Rsc::NotImplemented
        );
        let fc = FilterCriteria {
            semantics_filter: vec!["SELECT ?s WHERE { ?s ?p ?o }".into(); 9],
            ..FilterCriteria::default()
        };
        assert_eq!(
            filters(&fc).map(|_| ()).unwrap_err().rsc,
            Rsc::NotImplemented
        );
    }

    fn many(n: usize) -> Graph {
        let mut g = Graph::default();
        let text: String = (0..n)
            .map(|i| format!("<http://e/s{i}> <http://e/p> <http://e/o{i}> .\n"))
            .collect();
        g.add_descriptor(5, &base64::engine::general_purpose::STANDARD.encode(text));
        g
    }

    #[test]
    fn a_query_that_explodes_is_refused_not_run_to_the_end() {
        // Too many partial solutions: 400 x 400 unrelated pairs.
        let q = Query::parse("SELECT * WHERE { ?a ?p ?b . ?c ?q ?d }").unwrap();
        assert_eq!(
            q.results_json(&many(400)).unwrap_err().rsc,
            Rsc::NotAcceptable
        );
        // Few solutions, too much work: 5,000 x 5,000 comparisons for 5,000 joined rows.
        let q = Query::parse("SELECT * WHERE { ?a ?p ?b . ?a ?q ?c }").unwrap();
        assert_eq!(
            q.results_json(&many(5000)).unwrap_err().rsc,
            Rsc::NotAcceptable
        );
        assert!(q.results_json(&many(1000)).is_ok(), "within the budget");
    }

    /// SPARQL's three-valued logic, language-tagged strings and numeric types.
    #[test]
    fn errors_and_languages_follow_sparql() {
        let count = |filter: &str| -> usize {
            let q = format!(
                "{PRE}SELECT ?d WHERE {{ ?d a m2m:Device ; ex:battery ?b . FILTER({filter}) }}"
            );
            let r: Value =
                serde_json::from_str(&Query::parse(&q).unwrap().results_json(&graph()).unwrap())
                    .unwrap();
            r["results"]["bindings"].as_array().map_or(0, Vec::len)
        };
        // `?d < 3` compares an IRI with a number: an error.
        assert_eq!(count("?d < 3"), 0);
        assert_eq!(count("?d < 3 || true"), 2, "an error || true is true");
        assert_eq!(count("!(?d < 3 && false)"), 2, "an error && false is false");
        assert_eq!(
            count("!(?d < 3 || false)"),
            0,
            "an error || false stays an error"
        );
        assert_eq!(count("?b > 1e1"), 2, "a double");
        let names = |filter: &str| -> usize {
            let q = format!("{PRE}SELECT ?n WHERE {{ ?d m2m:hasName ?n FILTER({filter}) }}");
            let r: Value =
                serde_json::from_str(&Query::parse(&q).unwrap().results_json(&graph()).unwrap())
                    .unwrap();
            r["results"]["bindings"].as_array().map_or(0, Vec::len)
        };
        assert_eq!(
            names("?n = \"front door lock\""),
            0,
            "a tagged string is not a plain one"
        );
        assert_eq!(
            names("?n = \"front door lock\"@EN"),
            1,
            "tags compare without case"
        );
        assert_eq!(names("?n = \"garage lock\""), 1);
        assert!(
            Query::parse("SELECT ?x WHERE { ?x A ?o }").is_err(),
            "only lower-case a"
        );
        assert_eq!(
            Query::parse("SELECT ?x WHERE { _:b ?p ?x }")
                .unwrap_err()
                .rsc,
            Rsc::NotImplemented
        );
    }
}
