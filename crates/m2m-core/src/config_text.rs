//! The commented configuration texts of `--print-default-config` (`m2m cse|maf|mef|ae`; no spec
//! clause): every setting with a `#` comment, every optional one as a commented-out example, and
//! the checks that keep such a text true to the configuration type it documents.
//!
//! The layout ([`outline`] reads it, [`render`] writes it):
//! - `key = value` is a setting, `# key = value` an optional one. A `# text` line right above a
//!   setting, or a trailing `  # text`, documents it.
//! - `# [name]` / `# [[name]]` opens an optional table / row: a block of the commented settings
//!   right after it, each documented by a trailing comment, so that removing the leading `# ` of
//!   each line of the block leaves valid TOML. In a block, `# # key = value` is an alternative
//!   (e.g. a key in an environment variable instead of a file) that stays optional when the block
//!   is uncommented.
//! - After a block, the next setting must follow a real header: TOML would give it to the table
//!   before the block, whatever the reader believes.

use serde::de::{self, Visitor};
use std::collections::BTreeSet;
use std::ops::Range;

/// One setting line, set or optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `table.key`, `key` at the root; a row's key under its array: `security.psk.key`.
    pub path: String,
    /// How many `# ` precede it: 0 set, 1 optional, 2 an alternative inside an optional block.
    pub depth: usize,
    pub documented: bool,
    /// The line index (0-based).
    pub line: usize,
}

/// A table or array-of-tables header, set or optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub rows: bool,
    pub optional: bool,
    pub documented: bool,
}

/// A part of a text that can be uncommented alone: an optional table or row with its settings,
/// or one optional setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Optional {
    /// The table's or array's name, or the setting's path.
    pub path: String,
    pub lines: Range<usize>,
}

/// What a configuration text holds, line by line.
#[derive(Clone, Debug, Default)]
pub struct Outline {
    pub settings: Vec<Setting>,
    pub headers: Vec<Header>,
    pub optional: Vec<Optional>,
}

enum Line<'a> {
    Blank,
    Prose,
    Header {
        name: &'a str,
        rows: bool,
        trailing: bool,
    },
    Setting {
        key: &'a str,
        trailing: bool,
    },
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_table_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_bare_key)
}

/// Whether `rest` (after a header's brackets or a setting's value) is empty or a comment.
fn trailing_comment(rest: &str) -> Option<bool> {
    let rest = rest.trim();
    match rest.strip_prefix('#') {
        Some(text) => Some(!text.trim().is_empty()),
        None => rest.is_empty().then_some(false),
    }
}

/// A line without its comment markers: a header, a one-line setting, or neither.
fn bare(s: &str) -> Option<Line<'_>> {
    if let Some(inner) = s.strip_prefix("[[") {
        let (name, rest) = inner.split_once("]]")?;
        let trailing = trailing_comment(rest)?;
        return is_table_name(name).then_some(Line::Header {
            name,
            rows: true,
            trailing,
        });
    }
    if let Some(inner) = s.strip_prefix('[') {
        let (name, rest) = inner.split_once(']')?;
        let trailing = trailing_comment(rest)?;
        return is_table_name(name).then_some(Line::Header {
            name,
            rows: false,
            trailing,
        });
    }
    let (key, _) = s.split_once('=')?;
    let key = key.trim();
    if !is_bare_key(key) || toml::from_str::<toml::Table>(s).is_err() {
        return None;
    }
    // Documented when some ` #` ends the value: the text before it is the whole setting.
    let trailing = s.match_indices(" #").any(|(i, _)| {
        !s[i + 2..].trim().is_empty() && toml::from_str::<toml::Table>(&s[..i]).is_ok()
    });
    Some(Line::Setting { key, trailing })
}

/// A line and the number of `# ` before its header or setting.
fn classify(line: &str) -> Result<(usize, Line<'_>), String> {
    let line = line.trim_end();
    if line.is_empty() {
        return Ok((0, Line::Blank));
    }
    if !line.starts_with('#') {
        return bare(line)
            .map(|l| (0, l))
            .ok_or_else(|| format!("{line:?} is no header and no one-line setting"));
    }
    let mut rest = line;
    for depth in 1..=2 {
        match rest.strip_prefix("# ").map(|r| (r, bare(r))) {
            Some((_, Some(l))) => return Ok((depth, l)),
            Some((r, None)) if r.starts_with("# ") => rest = r,
            _ => break,
        }
    }
    Ok((0, Line::Prose))
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// Reads a configuration text in the layout of this module; an error names each line that breaks it.
pub fn outline(text: &str) -> Result<Outline, String> {
    let mut o = Outline::default();
    let mut errors = Vec::new();
    // The table settings belong to (the last real header), the open optional block, whether a
    // block has closed since that header, and whether the line before was prose.
    let mut table = String::new();
    let mut block: Option<(String, usize)> = None;
    let mut after_block = false;
    let mut prose = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let (depth, kind) = match classify(line) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("line {n}: {e}"));
                continue;
            }
        };
        let continues = matches!(kind, Line::Setting { .. }) && depth >= 1;
        if let (Some((name, start)), false) = (&block, continues) {
            o.optional.push(Optional {
                path: name.clone(),
                lines: *start..i,
            });
            block = None;
            after_block = true;
        }
        match kind {
            Line::Blank => prose = false,
            Line::Prose => prose = true,
            Line::Header {
                name,
                rows,
                trailing,
            } => {
                o.headers.push(Header {
                    name: name.to_owned(),
                    rows,
                    optional: depth > 0,
                    documented: trailing || prose,
                });
                match depth {
                    0 => {
                        table = name.to_owned();
                        after_block = false;
                    }
                    1 => block = Some((name.to_owned(), i)),
                    _ => errors.push(format!("line {n}: a header commented out twice")),
                }
                prose = false;
            }
            Line::Setting { key, trailing } => {
                let path = match &block {
                    Some((name, _)) => join(name, key),
                    None => join(&table, key),
                };
                if block.is_none() {
                    if after_block {
                        errors.push(format!(
                            "line {n}: {key} follows an optional block, so TOML would give it to [{table}]; put it before the block"
                        ));
                    }
                    if depth == 2 {
                        errors.push(format!(
                            "line {n}: {key} is commented out twice outside an optional block"
                        ));
                    }
                    if depth == 1 {
                        o.optional.push(Optional {
                            path: path.clone(),
                            lines: i..i + 1,
                        });
                    }
                }
                o.settings.push(Setting {
                    path,
                    depth,
                    documented: trailing || (prose && block.is_none()),
                    line: i,
                });
                prose = false;
            }
        }
    }
    if let Some((name, start)) = block {
        o.optional.push(Optional {
            path: name,
            lines: start..text.lines().count(),
        });
    }
    if errors.is_empty() {
        Ok(o)
    } else {
        Err(errors.join("\n"))
    }
}

impl Outline {
    /// Each setting path no occurrence of which is documented, and each table whose first header is not.
    pub fn undocumented(&self) -> Vec<String> {
        let documented: BTreeSet<&str> = self
            .settings
            .iter()
            .filter(|s| s.documented)
            .map(|s| s.path.as_str())
            .collect();
        let mut seen = BTreeSet::new();
        let mut missing: Vec<String> = self
            .headers
            .iter()
            .filter(|h| seen.insert(h.name.as_str()) && !h.documented)
            .map(|h| format!("[{}]", h.name))
            .collect();
        let settings: BTreeSet<&str> = self.settings.iter().map(|s| s.path.as_str()).collect();
        missing.extend(
            settings
                .into_iter()
                .filter(|p| !documented.contains(p))
                .map(str::to_owned),
        );
        missing
    }
}

/// `text` with one `# ` removed from each line of `parts`.
pub fn uncomment(text: &str, parts: &[&Optional]) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let part = parts.iter().any(|p| p.lines.contains(&i));
        out.push_str(match (part, line.strip_prefix("# ")) {
            (true, Some(rest)) => rest,
            _ => line,
        });
        out.push('\n');
    }
    out
}

/// Every optional part of `text` uncommented alone, together with what `needs` lists for its path:
/// other optional parts to uncomment with it (e.g. `("maf", &["tls"])`: a `[maf]` without `[tls]` is
/// refused), and, prefixed `-`, set settings it replaces (e.g. `("esprim.keys.key",
/// &["-esprim.keys.key_env"])`: a row takes one key source). After a block, each alternative
/// inside it too. Returns (the part's path, the text).
pub fn each_uncommented(
    text: &str,
    needs: &[(&str, &[&str])],
) -> Result<Vec<(String, String)>, String> {
    let o = outline(text)?;
    let mut out = Vec::new();
    for part in &o.optional {
        let uncommented = with_needs(text, &o, part, needs)?;
        out.push((part.path.clone(), uncommented.clone()));
        if part.lines.len() > 1 {
            // The block's lines are where they were: its alternatives are the optional settings
            // among them now.
            let inner = outline(&uncommented)?;
            for alt in inner
                .optional
                .iter()
                .filter(|a| part.lines.contains(&a.lines.start) && a.lines.start > part.lines.start)
            {
                let t = with_needs(&uncommented, &inner, alt, needs)?;
                out.push((alt.path.clone(), t));
            }
        }
    }
    Ok(out)
}

/// `text` (whose outline is `o`) with `part` and what `needs` lists for it uncommented, and the
/// settings it replaces removed.
fn with_needs(
    text: &str,
    o: &Outline,
    part: &Optional,
    needs: &[(&str, &[&str])],
) -> Result<String, String> {
    let wanted: Vec<&str> = needs
        .iter()
        .filter(|(p, _)| *p == part.path)
        .flat_map(|(_, w)| w.iter().copied())
        .collect();
    let mut parts = vec![part];
    for w in wanted.iter().filter(|w| !w.starts_with('-')) {
        let found = o.optional.iter().find(|x| x.path == *w);
        parts.push(found.ok_or_else(|| format!("{} needs {w}: no such optional part", part.path))?);
    }
    let uncommented = uncomment(text, &parts);
    let removed: Vec<&str> = wanted.iter().filter_map(|w| w.strip_prefix('-')).collect();
    if removed.is_empty() {
        return Ok(uncommented);
    }
    let set = outline(&uncommented)?;
    let drop: BTreeSet<usize> = set
        .settings
        .iter()
        .filter(|s| s.depth == 0 && removed.contains(&s.path.as_str()))
        .map(|s| s.line)
        .collect();
    if drop.len() != removed.len() {
        return Err(format!(
            "{}: replaces {removed:?}, not set once each",
            part.path
        ));
    }
    Ok(uncommented
        .lines()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect())
}

/// A TOML error as `line N: message`, without the text of the line the parser would quote: that
/// line may hold a key.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(1, |before| before.matches('\n').count() + 1);
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// Whether the TOML `text` has `path` (a table, a non-empty array of tables, or a key; through an
/// array of tables, in any row).
pub fn has_path(text: &str, path: &str) -> bool {
    fn walk(v: &toml::Value, segments: &[&str]) -> bool {
        match (v, segments.split_first()) {
            (toml::Value::Array(rows), Some(_)) => rows.iter().any(|r| walk(r, segments)),
            (toml::Value::Table(t), Some((first, rest))) => {
                t.get(*first).is_some_and(|v| walk(v, rest))
            }
            (toml::Value::Array(rows), None) => !rows.is_empty(),
            (_, None) => true,
            _ => false,
        }
    }
    let segments: Vec<&str> = path.split('.').collect();
    toml::from_str::<toml::Table>(text).is_ok_and(|t| walk(&toml::Value::Table(t), &segments))
}

/// What is wrong with `text` as the documentation of a configuration whose tables have `fields`
/// (`("", the root's fields)`, `("tls", the fields of [tls])`, ..., from [`field_names`]): layout
/// errors, fields it does not show, settings or tables no field has, settings without a comment.
pub fn problems(text: &str, fields: &[(&str, &[&str])]) -> Vec<String> {
    let o = match outline(text) {
        Ok(o) => o,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let shown: BTreeSet<&str> = o
        .settings
        .iter()
        .map(|s| s.path.as_str())
        .chain(o.headers.iter().map(|h| h.name.as_str()))
        .collect();
    for (table, names) in fields {
        if names.is_empty() {
            problems.push(format!("[{table}]: no fields (no struct?)"));
        }
        for name in *names {
            let path = join(table, name);
            if !shown.contains(path.as_str()) {
                problems.push(format!("{path} is not shown"));
            }
        }
    }
    let known = |path: &str| {
        let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
        fields
            .iter()
            .any(|(t, names)| *t == table && names.contains(&key))
    };
    for path in &shown {
        if !known(path) {
            problems.push(format!("{path} is no field"));
        }
    }
    problems.extend(
        o.undocumented()
            .into_iter()
            .map(|p| format!("{p} has no comment")),
    );
    problems
}

/// The field names of a struct deriving `Deserialize`, in declaration order; empty for other types.
pub fn field_names<T: de::DeserializeOwned>() -> &'static [&'static str] {
    // serde hands a struct's field names to `deserialize_struct`; the probe keeps them and stops.
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// What a generated text says about a table, an array of tables or a key, in print order. The
/// text is one line: the operator's version of the field's doc comment.
#[derive(Clone, Copy, Debug)]
pub enum Doc {
    /// `[name]`: set when the defaults have it, else an optional block with the example's values.
    Table(&'static str, &'static str),
    /// `[[name]]`: the defaults' rows, then the example's further rows as optional blocks.
    Rows(&'static str, &'static str),
    /// `table.key` of the table or rows above: the default value, else (optional) the example's.
    Key(&'static str, &'static str),
    /// A key to choose: like [`Doc::Key`], but inside an optional block it stays optional
    /// (`# # key = value`) when the block is uncommented: an alternative to another key (a key
    /// in a variable instead of a file), or a narrowing the operator decides on.
    Alt(&'static str, &'static str),
}

fn comment_lines(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str(if line.is_empty() { "#" } else { "# " });
        out.push_str(line);
        out.push('\n');
    }
}

fn value_at<'a>(t: &'a toml::Table, name: &str) -> Option<&'a toml::Value> {
    let mut segments = name.split('.');
    let mut v = t.get(segments.next()?)?;
    for s in segments {
        v = v.as_table()?.get(s)?;
    }
    Some(v)
}

fn rows_at<'a>(t: &'a toml::Table, name: &str) -> Result<Vec<&'a toml::Table>, String> {
    match value_at(t, name) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(rows)) => rows
            .iter()
            .map(|r| r.as_table().ok_or(format!("[[{name}]]: a row is no table")))
            .collect(),
        Some(_) => Err(format!("[[{name}]] is no array")),
    }
}

/// The text of a configuration whose `defaults` (the serialized default configuration) are set and
/// whose `example` (the defaults plus a value for every optional field, and rows after the default
/// ones) gives the optional settings, tables and rows; `intro` heads it as comment lines. An error
/// names a doc without a value or a value without a doc.
pub fn render(
    intro: &str,
    docs: &[Doc],
    defaults: &toml::Table,
    example: &toml::Table,
) -> Result<String, String> {
    let mut out = String::new();
    comment_lines(&mut out, intro);
    for key in defaults.keys().chain(example.keys()) {
        let documented = docs
            .iter()
            .any(|d| matches!(d, Doc::Table(n, _) | Doc::Rows(n, _) if n == key));
        if !documented {
            return Err(format!("[{key}]: no doc"));
        }
    }
    let mut printed = BTreeSet::new();
    let mut rest = docs;
    while let Some((head, tail)) = rest.split_first() {
        let (name, doc, rows) = match *head {
            Doc::Table(name, doc) => (name, doc, false),
            Doc::Rows(name, doc) => (name, doc, true),
            Doc::Key(path, _) | Doc::Alt(path, _) => {
                return Err(format!("{path}: a key before its table"))
            }
        };
        let n = tail
            .iter()
            .take_while(|d| matches!(d, Doc::Key(..) | Doc::Alt(..)))
            .count();
        let (keys, after) = tail.split_at(n);
        rest = after;
        let mut keys_of = BTreeSet::new();
        for k in keys {
            let (Doc::Key(path, _) | Doc::Alt(path, _)) = k else {
                unreachable!("taken while a key")
            };
            match path.rsplit_once('.') {
                Some((table, key)) if table == name => keys_of.insert(key),
                _ => return Err(format!("{path} is not a key of [{name}]")),
            };
        }
        let subtables: BTreeSet<String> = docs
            .iter()
            .filter_map(|d| match d {
                Doc::Table(n, _) | Doc::Rows(n, _) => n.strip_prefix(&format!("{name}.")),
                _ => None,
            })
            .map(str::to_owned)
            .collect();
        out.push('\n');
        comment_lines(&mut out, doc);
        let sections: Vec<(Option<&toml::Table>, &toml::Table)> = if rows {
            let set = rows_at(defaults, name)?;
            let ex = rows_at(example, name)?;
            if ex.len() <= set.len() {
                return Err(format!(
                    "[[{name}]]: the example adds no row to the defaults'"
                ));
            }
            ex.iter()
                .enumerate()
                .map(|(i, e)| (set.get(i).copied(), *e))
                .collect()
        } else {
            let set = value_at(defaults, name).and_then(toml::Value::as_table);
            let ex = value_at(example, name).and_then(toml::Value::as_table);
            vec![(set, ex.or(set).ok_or(format!("[{name}]: no value"))?)]
        };
        for (set, ex) in sections {
            for key in set.into_iter().chain([ex]).flat_map(|t| t.keys()) {
                if !keys_of.contains(key.as_str()) && !subtables.contains(key) {
                    return Err(format!("{}: no doc", join(name, key)));
                }
            }
            let header = if rows {
                format!("[[{name}]]")
            } else {
                format!("[{name}]")
            };
            out.push_str(if set.is_some() { "" } else { "# " });
            out.push_str(&header);
            out.push('\n');
            for k in keys {
                let (Doc::Key(path, doc) | Doc::Alt(path, doc)) = *k else {
                    unreachable!("taken while a key")
                };
                let alt = matches!(k, Doc::Alt(..));
                let key = path.rsplit_once('.').map_or(path, |(_, k)| k);
                let first = !printed.contains(path);
                let line = match (set, set.and_then(|t| t.get(key)), ex.get(key)) {
                    (_, Some(v), _) => format!("{key} = {v}"),
                    (Some(_), None, Some(v)) => format!("# {key} = {v}"),
                    (None, None, Some(v)) if alt => format!("# # {key} = {v}"),
                    (None, None, Some(v)) => format!("# {key} = {v}"),
                    (_, None, None) => continue,
                };
                printed.insert(path);
                match (set.is_some(), first) {
                    (true, true) => {
                        comment_lines(&mut out, doc);
                        out.push_str(&line);
                    }
                    (false, true) if doc.contains('\n') => {
                        return Err(format!("{path}: a doc in an optional block is one line"))
                    }
                    (false, true) => out.push_str(&format!("{line}  # {doc}")),
                    (_, false) => out.push_str(&line),
                }
                out.push('\n');
            }
        }
    }
    for d in docs {
        if let Doc::Key(path, _) | Doc::Alt(path, _) = d {
            if !printed.contains(path) {
                return Err(format!(
                    "{path}: no value in the defaults nor in the example"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# intro\n\
        # The name.\n\
        name = \"x\"\n\
        # An optional port.\n\
        # port = 8\n\
        \n\
        # The listener.\n\
        # [tls]\n\
        # listen = \"a:1\"  # where\n\
        # key_file = \"k\"  # a key file\n\
        # # key_env = \"K\"  # or a variable\n\
        \n\
        # Rows.\n\
        [[row]]\n\
        # Its id.\n\
        id = 1\n";

    #[test]
    fn reads_settings_blocks_and_alternatives() {
        let o = outline(TEXT).unwrap();
        let paths: Vec<(&str, usize)> = o
            .settings
            .iter()
            .map(|s| (s.path.as_str(), s.depth))
            .collect();
        assert_eq!(
            paths,
            [
                ("name", 0),
                ("port", 1),
                ("tls.listen", 1),
                ("tls.key_file", 1),
                ("tls.key_env", 2),
                ("row.id", 0)
            ]
        );
        let optional: Vec<(&str, Range<usize>)> = o
            .optional
            .iter()
            .map(|p| (p.path.as_str(), p.lines.clone()))
            .collect();
        assert_eq!(optional, [("port", 4..5), ("tls", 7..11)]);
        assert!(o.undocumented().is_empty(), "{:?}", o.undocumented());
    }

    #[test]
    fn uncommenting_a_block_leaves_its_alternative_optional() {
        let all = each_uncommented(TEXT, &[]).unwrap();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["port", "tls", "tls.key_env"]);
        let (_, tls) = &all[1];
        assert!(
            has_path(tls, "tls.key_file") && !has_path(tls, "tls.key_env"),
            "{tls}"
        );
        let (_, env) = &all[2];
        assert!(has_path(env, "tls.key_env") && has_path(env, "tls.key_file"));
        assert!(has_path(&all[0].1, "port") && !has_path(&all[0].1, "tls"));
        let replaced = each_uncommented(TEXT, &[("tls.key_env", &["-tls.key_file"])]).unwrap();
        let (_, env) = &replaced[2];
        assert!(
            has_path(env, "tls.key_env") && !has_path(env, "tls.key_file"),
            "{env}"
        );
        let needs = each_uncommented(TEXT, &[("port", &["tls"])]).unwrap();
        assert!(has_path(&needs[0].1, "port") && has_path(&needs[0].1, "tls.listen"));
        let e = each_uncommented(TEXT, &[("port", &["-name", "-name"])]).unwrap_err();
        assert!(e.contains("not set once each"), "{e}");
        assert!(has_path(TEXT, "row.id") && !has_path(TEXT, "row.name"));
    }

    #[test]
    fn refuses_a_setting_that_toml_would_give_to_another_table() {
        let e =
            outline("[a]\nx = 1\n# A block.\n# [b]\n# y = 2  # y\n\n# Z.\nz = 3\n").unwrap_err();
        assert!(e.contains("line 8: z follows an optional block"), "{e}");
        assert!(outline("x = 1\ny = [\n1]\n")
            .unwrap_err()
            .contains("line 2"));
    }

    #[test]
    fn finds_missing_unknown_and_undocumented_fields() {
        let fields: &[(&str, &[&str])] = &[
            ("", &["name", "port", "tls", "row", "gone"]),
            ("tls", &["listen", "key_file", "key_env"]),
            ("row", &["id"]),
        ];
        let p = problems(TEXT, fields);
        assert_eq!(p, ["gone is not shown"]);
        let undocumented = TEXT.replace("# Its id.\n", "").replace("  # where", "");
        let p = problems(&undocumented, fields);
        assert!(p.contains(&"tls.listen has no comment".to_owned()), "{p:?}");
        assert!(p.contains(&"row.id has no comment".to_owned()), "{p:?}");
        let p = problems(&TEXT.replace("id = 1", "ident = 1"), fields);
        assert!(p.contains(&"row.ident is no field".to_owned()), "{p:?}");
    }

    #[test]
    fn a_toml_error_names_the_line_not_its_text() {
        let text = "a = 1\nkey = \"00112233\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        assert!(
            e.to_string().contains("00112233"),
            "the parser quotes the line"
        );
        let said = toml_error(&e, text);
        assert!(said.starts_with("line 2: "), "{said}");
        assert!(!said.contains("00112233"), "{said}");
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Probed {
        first: u8,
        #[serde(rename = "second")]
        _second: Option<String>,
    }

    #[test]
    fn field_names_are_the_serde_names() {
        assert_eq!(field_names::<Probed>(), ["first", "second"]);
        assert!(field_names::<String>().is_empty());
    }

    #[test]
    fn renders_defaults_set_and_the_rest_as_examples() {
        use Doc::*;
        let docs = [
            Table("a", "Table a."),
            Key("a.x", "X."),
            Key("a.opt", "Optional."),
            Table("b", "Optional table b."),
            Key("b.y", "Y."),
            Alt("b.z", "Z instead of y."),
            Rows("a.r", "Rows."),
            Key("a.r.k", "K."),
        ];
        let defaults: toml::Table = toml::from_str("[a]\nx = 1\n").unwrap();
        let example: toml::Table =
            toml::from_str("[a]\nx = 1\nopt = \"o\"\n[[a.r]]\nk = 2\n[b]\ny = 3\nz = 4\n").unwrap();
        let text = render("Intro.", &docs, &defaults, &example).unwrap();
        assert_eq!(
            text,
            "# Intro.\n\n# Table a.\n[a]\n# X.\nx = 1\n# Optional.\n# opt = \"o\"\n\n\
             # Optional table b.\n# [b]\n# y = 3  # Y.\n# # z = 4  # Z instead of y.\n\n\
             # Rows.\n# [[a.r]]\n# k = 2  # K.\n"
        );
        assert_eq!(toml::from_str::<toml::Table>(&text).unwrap(), defaults);
        let fields: &[(&str, &[&str])] = &[
            ("", &["a", "b"]),
            ("a", &["x", "opt", "r"]),
            ("a.r", &["k"]),
            ("b", &["y", "z"]),
        ];
        assert!(
            problems(&text, fields).is_empty(),
            "{:?}",
            problems(&text, fields)
        );

        let undocumented: toml::Table = toml::from_str("[a]\nx = 1\nw = 2\n").unwrap();
        let e = render("", &docs, &undocumented, &example).unwrap_err();
        assert_eq!(e, "a.w: no doc");
        let stale = [Table("a", "A."), Key("a.x", "X."), Key("a.gone", "Gone.")];
        let e = render("", &stale, &defaults, &defaults).unwrap_err();
        assert!(e.contains("a.gone: no value"), "{e}");
    }
}
