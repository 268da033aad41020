//! Semantic query and semantic resource discovery (TS-0004 clauses 7.3.3.18, 7.3.3.19): SPARQL
//! 1.1 SELECT queries evaluated over the RDF of `<semanticDescriptor>` resources.
//!
//! The SPARQL evaluated here: `PREFIX`/`BASE`, `SELECT [DISTINCT|REDUCED]` of variables or `*`,
//! a `WHERE` group of basic graph patterns (`;` and `,` lists, `a` for rdf:type, IRIs, prefixed
//! names, variables, literals with a language or a datatype, numbers, booleans) and `FILTER`s
//! (`||`, `&&`, `!`, `=`, `!=`, `<`, `>`, `<=`, `>=`, `contains`, `strstarts`, `strends`, `str`,
//! `lcase`, `ucase`, `lang`, `bound`, `isIRI`, `isURI`, `isLiteral`, `isBlank`), `LIMIT` and
//! `OFFSET`. Text that is no SPARQL query is 4143 INVALID_SPARQL_QUERY; SPARQL this CSE does not
//! evaluate (OPTIONAL, UNION, property paths, CONSTRUCT, ORDER BY, ...) is 5001, named.
//!
//! Results are in the W3C SPARQL 1.1 Query Results JSON Format. The work is bounded: at most
//! [`MAX_SOLUTIONS`] partial solutions at any step and 20 million pattern comparisons (else
//! 5207), FILTERs nested 64 deep at most (else 5001).
//!
//! - A semantic query (`sqi` true, Result Content semantic content, one semanticsFilter;
//!   clause 7.3.3.19.1, implicit scope): the descriptors of the `<semanticDescriptor>`s below
//!   the target (the target too, when it is one) that the originator may RETRIEVE form the data
//!   basis; the answer is `{"m2m:qres": "<results as JSON text>"}`.
//! - A discovery or child listing with semanticsFilter (clause 7.3.3.18, annotation-based and
//!   resource link-based): a resource matches when one of the queries has a solution over the
//!   descriptors of its `<semanticDescriptor>` children the originator holds the walk's
//!   privilege on, with those their relatedSemantics (`rels`) name.

use crate::access::{self, Facts};
use crate::cse::{Cse, Peer};
use crate::resolve::Target;
use crate::store::{Reader, Resource};
use base64::Engine;
use m2m_core::filter::FilterCriteria;
use m2m_core::{
    Address, M2mError, M2mResult, Request, ResourceType, Response, ResponseStatusCode as Rsc,
};
use m2m_security::access_control::AccessOperation;
use oxrdfio::{JsonLdProfileSet, RdfFormat, RdfParser};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The partial solutions a query may hold at once.
pub const MAX_SOLUTIONS: usize = 100_000;
/// The pattern-to-triple comparisons one evaluation may make.
const MAX_WORK: u64 = 20_000_000;
/// How deep FILTER expressions may nest (parentheses, `!`, function arguments).
const MAX_NESTING: usize = 64;

const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const XSD: &str = "http://www.w3.org/2001/XMLSchema#";
const XSD_STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
const LANG_STRING: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString";

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

    fn number(&self) -> Option<f64> {
        match self {
            Term::Literal {
                value, datatype, ..
            } if datatype.starts_with(XSD) && datatype != XSD_STRING => value.parse().ok(),
            _ => None,
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

/// The RDF data basis of a query: the triples of the descriptors in scope.
#[derive(Default)]
pub struct Graph {
    triples: Vec<[Term; 3]>,
    descriptors: usize,
}

impl Graph {
    /// Adds the triples of a descriptor (`dsp`, base64, in its representation `dcrp`); blank
    /// nodes stay apart from other descriptors'. A descriptor that does not parse adds nothing
    /// (it was checked when stored).
    pub fn add_descriptor(&mut self, dcrp: u64, dsp: &str) {
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
                    Term::Literal {
                        value,
                        datatype: datatype.map_or_else(
                            || {
                                if lang.is_some() {
                                    LANG_STRING.to_owned()
                                } else {
                                    XSD_STRING.to_owned()
                                }
                            },
                            |d| d.into_string(),
                        ),
                        lang,
                    }
                }
            };
            self.triples.push([s, p, o]);
        }
    }

    #[cfg(test)]
    fn triple_count(&self) -> usize {
        self.triples.len()
    }
}

/// A position of a triple pattern.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Var(String),
    Term(Term),
}

/// A FILTER expression.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(&'static str, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
    Node(Node),
}

/// A parsed query.
#[derive(Debug)]
pub struct Query {
    /// The projected variables; `None` for `*`.
    select: Option<Vec<String>>,
    distinct: bool,
    patterns: Vec<[Node; 3]>,
    filters: Vec<Expr>,
    limit: Option<usize>,
    offset: usize,
}

type Solution = HashMap<String, Term>;

impl Query {
    /// Reads a semanticsFilter: 4143 for what is no SPARQL query, 5001 for SPARQL this CSE does
    /// not evaluate.
    pub fn parse(text: &str) -> M2mResult<Query> {
        let tokens = lex(text)?;
        Parser {
            tokens,
            at: 0,
            prefixes: HashMap::new(),
            base: String::new(),
            depth: 0,
        }
        .query()
    }

    /// The variables of the result, in order.
    fn variables(&self) -> Vec<String> {
        if let Some(v) = &self.select {
            return v.clone();
        }
        let mut seen = Vec::new();
        for n in self.patterns.iter().flatten() {
            if let Node::Var(v) = n {
                if !seen.contains(v) {
                    seen.push(v.clone());
                }
            }
        }
        seen
    }

    /// The solutions over `graph`, projected, made distinct and cut as asked.
    fn solve(&self, graph: &Graph) -> M2mResult<Vec<Vec<Option<Term>>>> {
        let mut solutions: Vec<Solution> = vec![HashMap::new()];
        let mut work: u64 = 0;
        let too_much = || {
            M2mError::new(
                Rsc::NotAcceptable,
                "the semantic query needs more work than this CSE gives one query",
            )
        };
        for pattern in &self.patterns {
            let mut next = Vec::new();
            for sol in &solutions {
                work += graph.triples.len() as u64;
                if work > MAX_WORK {
                    return Err(too_much());
                }
                for triple in &graph.triples {
                    if let Some(extended) = bind(pattern, triple, sol) {
                        next.push(extended);
                        if next.len() > MAX_SOLUTIONS {
                            return Err(too_much());
                        }
                    }
                }
            }
            solutions = next;
        }
        solutions.retain(|s| self.filters.iter().all(|f| truth(f, s) == Some(true)));
        let vars = self.variables();
        let mut rows: Vec<Vec<Option<Term>>> = solutions
            .iter()
            .map(|s| vars.iter().map(|v| s.get(v).cloned()).collect())
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
        let vars = self.variables();
        let bindings: Vec<Value> = self
            .solve(graph)?
            .into_iter()
            .map(|row| {
                let mut b = Map::new();
                for (v, t) in vars.iter().zip(row) {
                    if let Some(t) = t {
                        b.insert(v.clone(), t.to_json());
                    }
                }
                Value::Object(b)
            })
            .collect();
        Ok(json!({ "results": { "bindings": bindings }, "head": { "vars": vars } }).to_string())
    }
}

/// `sol` extended so that `pattern` matches `triple`, if it can be.
fn bind(pattern: &[Node; 3], triple: &[Term; 3], sol: &Solution) -> Option<Solution> {
    let mut out: Option<Solution> = None;
    for (node, term) in pattern.iter().zip(triple) {
        match node {
            Node::Term(t) if t != term => return None,
            Node::Term(_) => {}
            Node::Var(v) => {
                let current = out.as_ref().unwrap_or(sol);
                match current.get(v) {
                    Some(bound) if bound != term => return None,
                    Some(_) => {}
                    None => {
                        out.get_or_insert_with(|| sol.clone())
                            .insert(v.clone(), term.clone());
                    }
                }
            }
        }
    }
    Some(out.unwrap_or_else(|| sol.clone()))
}

/// A FILTER's effective boolean value; `None` for an error (which filters the solution out).
fn truth(e: &Expr, s: &Solution) -> Option<bool> {
    match value(e, s)? {
        Val::Bool(b) => Some(b),
        Val::Term(t) => match &t {
            Term::Literal {
                value, datatype, ..
            } if datatype == &format!("{XSD}boolean") => Some(value == "true" || value == "1"),
            _ if t.number().is_some() => t.number().map(|n| n != 0.0),
            _ => t.text().map(|s| !s.is_empty()),
        },
    }
}

enum Val {
    Bool(bool),
    Term(Term),
}

fn value(e: &Expr, s: &Solution) -> Option<Val> {
    let term = |e: &Expr| match value(e, s)? {
        Val::Term(t) => Some(t),
        Val::Bool(b) => Some(Term::Literal {
            value: b.to_string(),
            datatype: format!("{XSD}boolean"),
            lang: None,
        }),
    };
    Some(match e {
        Expr::Node(Node::Var(v)) => Val::Term(s.get(v)?.clone()),
        Expr::Node(Node::Term(t)) => Val::Term(t.clone()),
        Expr::Or(a, b) => Val::Bool(truth(a, s) == Some(true) || truth(b, s) == Some(true)),
        Expr::And(a, b) => Val::Bool(truth(a, s)? && truth(b, s)?),
        Expr::Not(a) => Val::Bool(!truth(a, s)?),
        Expr::Compare(op, a, b) => Val::Bool(compare(op, &term(a)?, &term(b)?)?),
        Expr::Call(f, args) => call(f, args, s, &term)?,
    })
}

fn compare(op: &str, a: &Term, b: &Term) -> Option<bool> {
    let ordering = match (a.number(), b.number(), a.text(), b.text()) {
        (Some(x), Some(y), _, _) => x.partial_cmp(&y)?,
        (_, _, Some(x), Some(y)) => x.cmp(y),
        _ => {
            return match op {
                "=" => Some(a == b),
                "!=" => Some(a != b),
                _ => None,
            }
        }
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

fn call(f: &str, args: &[Expr], s: &Solution, term: &dyn Fn(&Expr) -> Option<Term>) -> Option<Val> {
    let arg = |i: usize| args.get(i).and_then(term);
    let text = |i: usize| arg(i).and_then(|t| t.text().map(str::to_owned));
    Some(match f {
        "contains" => Val::Bool(text(0)?.contains(&text(1)?)),
        "strstarts" => Val::Bool(text(0)?.starts_with(&text(1)?)),
        "strends" => Val::Bool(text(0)?.ends_with(&text(1)?)),
        "str" => Val::Term(Term::string(match arg(0)? {
            Term::Iri(i) => i,
            Term::Literal { value, .. } => value,
            Term::Blank(_) => return None,
        })),
        "lcase" => Val::Term(Term::string(text(0)?.to_lowercase())),
        "ucase" => Val::Term(Term::string(text(0)?.to_uppercase())),
        "lang" => match arg(0)? {
            Term::Literal { lang, .. } => Val::Term(Term::string(lang.unwrap_or_default())),
            _ => return None,
        },
        "bound" => match args.first() {
            Some(Expr::Node(Node::Var(v))) => Val::Bool(s.contains_key(v)),
            _ => return None,
        },
        "isiri" | "isuri" => Val::Bool(matches!(arg(0)?, Term::Iri(_))),
        "isliteral" => Val::Bool(matches!(arg(0)?, Term::Literal { .. })),
        "isblank" => Val::Bool(matches!(arg(0)?, Term::Blank(_))),
        _ => return None,
    })
}

// ----------------------------------------------------------------------------------------------
// The CSE's procedures

/// The queries of a request's semanticsFilter, read (4143, 5001 as [`Query::parse`]).
pub fn filters(fc: &FilterCriteria) -> M2mResult<Vec<Query>> {
    fc.semantics_filter
        .iter()
        .map(|q| Query::parse(q))
        .collect()
}

/// A semantic query (clause 7.3.3.19.1), on a search thread like a discovery.
pub async fn query(
    cse: &Arc<Cse>,
    req: Request,
    target: Target,
    peer: Peer,
) -> M2mResult<Response> {
    let root = target.into_resource("semantic query")?;
    let deadline = crate::discovery::deadline(cse);
    let shared = Arc::clone(cse);
    cse.searches
        .run(move || query_blocking(&shared, &req, &root, &peer, deadline))
        .await
}

fn query_blocking(
    cse: &Cse,
    req: &Request,
    root: &Resource,
    peer: &Peer,
    deadline: std::time::Instant,
) -> M2mResult<Response> {
    let [query] = filters(&req.fc)?
        .try_into()
        .map_err(|_| M2mError::bad_request("a semantic query has one semanticsFilter"))?;
    let roles = crate::roles::held(cse, req, peer);
    let fc = FilterCriteria {
        resource_types: vec![ResourceType::SemanticDescriptor.code()],
        ..FilterCriteria::default()
    };
    let found = crate::discovery::Walk {
        root,
        fc: &fc,
        level: None,
        op: AccessOperation::Retrieve,
        offset: 0,
        limit: cse.cfg.limits.max_discovery_results,
        deadline,
        roles: &roles,
    }
    .run(cse, peer)?;
    if found.partial {
        // A query over part of its data basis would answer wrongly, not partly.
        return Err(M2mError::new(
            Rsc::NotAcceptable,
            "more semantic descriptors are in scope than one query reads: target a narrower resource",
        ));
    }
    let mut graph = Graph::default();
    // The target itself when it is a descriptor (the walk lists what is below it); the generic
    // access check granted RETRIEVE on it.
    for smd in std::iter::once(root)
        .filter(|r| r.ty == ResourceType::SemanticDescriptor)
        .chain(&found.resources)
    {
        add(&mut graph, smd);
    }
    let text = query.results_json(&graph)?;
    Ok(Response::new(
        Rsc::Ok,
        &req.rqi,
        Some(json!({ "m2m:qres": text })),
    ))
}

fn add(graph: &mut Graph, smd: &Resource) {
    if let (Some(dcrp), Some(dsp)) = (smd.u64_attr("dcrp"), smd.str_attr("dsp")) {
        graph.add_descriptor(dcrp, dsp);
    }
}

/// Whether `res` matches a semanticsFilter of a walk (clause 7.3.3.18): one of `queries` has a
/// solution over the descriptors of its `<semanticDescriptor>` children that `facts` hold `op`
/// on, with the descriptors their relatedSemantics name (held the same way).
pub(crate) fn semantic_match(
    cse: &Cse,
    r: &Reader<'_>,
    facts: &Facts,
    op: AccessOperation,
    res: &Resource,
    queries: &[Query],
    decisions: &mut HashMap<String, bool>,
) -> M2mResult<bool> {
    let mut graph = Graph::default();
    let mut seen = HashSet::new();
    let mut permitted = |smd: &Resource, decisions: &mut HashMap<String, bool>| {
        Ok::<bool, M2mError>(
            smd.ty == ResourceType::SemanticDescriptor
                && seen.insert(smd.ri().to_owned())
                && access::permits(cse, facts, op, smd, decisions)?,
        )
    };
    for smd in r.children(res.ri(), Some(ResourceType::SemanticDescriptor))? {
        if !permitted(&smd, decisions)? {
            continue;
        }
        add(&mut graph, &smd);
        for id in crate::store::string_list(smd.attrs.get("rels")) {
            if let Some(related) = local(cse, r, &id)? {
                if permitted(&related, decisions)? {
                    add(&mut graph, &related);
                }
            }
        }
    }
    if graph.descriptors == 0 {
        return Ok(false);
    }
    for q in queries {
        if q.matches(&graph)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A resource of this CSE named by `id` in any scope, read through the walk's reader.
fn local(cse: &Cse, r: &Reader<'_>, id: &str) -> M2mResult<Option<Resource>> {
    let Ok(addr) = Address::parse(id) else {
        return Ok(None);
    };
    if crate::resolve::locality(cse, &addr) != crate::resolve::Locality::Local {
        return Ok(None);
    }
    let path = addr.path.as_str();
    match path.split_once('/') {
        None => r.get(path),
        Some((first, rest)) if first == cse.id.rn || first == "-" => {
            r.get_by_srn(&format!("{}/{rest}", cse.id.rn))
        }
        Some(_) => Ok(None),
    }
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
        if let Some(vars) = &select {
            let bound = |v: &String| {
                patterns
                    .iter()
                    .flatten()
                    .any(|n| n == &Node::Var(v.clone()))
            };
            if let Some(v) = vars.iter().find(|v| !bound(v)) {
                // SPARQL allows it (always unbound); it is almost always a typing error.
                tracing::debug!(var = %v, "semantic query selects a variable no pattern binds");
            }
        }
        Ok(Query {
            select,
            distinct,
            patterns,
            filters,
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
            let predicate = if self.word("a") {
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
                    if n.contains('.') {
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

    fn or_list(&mut self) -> M2mResult<Expr> {
        let mut e = self.and()?;
        while self.punct("||") {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> M2mResult<Expr> {
        let mut e = self.relation()?;
        while self.punct("&&") {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.relation()?));
        }
        Ok(e)
    }

    fn relation(&mut self) -> M2mResult<Expr> {
        let left = self.unary()?;
        for op in ["=", "!=", "<", ">", "<=", ">="] {
            if self.punct(op) {
                self.at += 1;
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

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}?o{}) }}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(Query::parse(&deep).unwrap_err().rsc, Rsc::NotImplemented);
        let nots = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}bound(?o)) }}",
            "!".repeat(100_001)
        );
        let q = Query::parse(&nots).unwrap();
        assert_eq!(
            q.filters,
            vec![Expr::Not(Box::new(Expr::Call(
                "bound".into(),
                vec![Expr::Node(Node::Var("o".into()))]
            )))]
        );
        let nested_calls = format!(
            "SELECT ?x WHERE {{ ?x ?p ?o FILTER({}?o{}) }}",
            "str(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(
            Query::parse(&nested_calls).unwrap_err().rsc,
            Rsc::NotImplemented
        );
    }

    #[test]
    fn a_query_that_explodes_is_refused_not_run_to_the_end() {
        let mut g = Graph::default();
        let many: String = (0..400)
            .map(|i| format!("<http://e/s{i}> <http://e/p> <http://e/o{i}> .\n"))
            .collect();
        g.add_descriptor(5, &base64::engine::general_purpose::STANDARD.encode(many));
        let q = Query::parse("SELECT * WHERE { ?a ?p ?b . ?c ?q ?d }").unwrap();
        assert_eq!(q.results_json(&g).unwrap_err().rsc, Rsc::NotAcceptable);
    }
}
