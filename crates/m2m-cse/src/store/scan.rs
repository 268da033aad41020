//! Candidates for discovery (TS-0004 clause 7.3.3.17) in structured-name order, drawn from the
//! indexes of the filter conditions rather than from the whole subtree.
//!
//! Every index that discovery uses lists resources by structured name (`srn`) within one
//! condition value: `(ty, srn)`, `(lbl, srn)`, `(rn, srn)`, `(cty, srn)`, and `srn` itself for the
//! subtree. A [`Stream`] walks one of them page by page from any name on (a *seek*), so that
//! - several values of one condition (`ty=3 4`) are a union of streams, merged by name;
//! - several conditions combined with AND are an intersection, computed by leapfrogging: each
//!   stream seeks to the largest name another one stands at, so whole runs that one condition
//!   excludes are skipped with one index lookup instead of being read;
//! - a time or size range (`cra`, `ms`, `sza`, ...) that matches few resources is read from its
//!   index in full and sorted by name; one that matches many is left to the final check;
//! - `lvl` skips, with one seek, the whole subtree of a resource below the level.
//!
//! What a stream yields is a superset of what matches: discovery checks each candidate against the
//! full filter and the access decision. Pages are separate statements, not one transaction: the
//! specification does not ask a partial result to be consistent with its continuation (TS-0001
//! clause 8.1.3, Content Offset), and a long read would keep the log from being checkpointed.

use super::{internal, Reader};
use m2m_core::filter::{FilterCriteria, FilterOperation};
use m2m_core::M2mResult;
use rusqlite::params;
use std::collections::VecDeque;

/// A resource as an index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub srn: String,
    pub seq: i64,
}

/// The smallest name after `srn`: names are unreserved characters, so no name lies between
/// `srn` and `srn` followed by NUL.
pub fn after(srn: &str) -> String {
    format!("{srn}\0")
}

/// The bounds of the names of every descendant of `srn`: `srn/` inclusive to `srn0` exclusive
/// (`0` follows `/` in ASCII).
pub fn subtree_bounds(srn: &str) -> (String, String) {
    (format!("{srn}/"), format!("{srn}0"))
}

/// One index walked by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Index {
    /// Every resource.
    All,
    Type(u16),
    Label(String),
    Name(String),
    ContentType(String),
}

impl Index {
    /// A page of keys with `min <= srn < hi`, by name.
    fn page(&self, r: &Reader<'_>, min: &str, hi: &str, n: usize) -> M2mResult<Vec<Key>> {
        const ALL: &str =
            "SELECT srn, seq FROM resources WHERE srn >= ?1 AND srn < ?2 ORDER BY srn LIMIT ?3";
        const TYPE: &str = "SELECT srn, seq FROM resources INDEXED BY resources_type \
             WHERE ty = ?4 AND srn >= ?1 AND srn < ?2 ORDER BY srn LIMIT ?3";
        const LABEL: &str = "SELECT srn, seq FROM labels \
             WHERE lbl = ?4 AND srn >= ?1 AND srn < ?2 ORDER BY srn LIMIT ?3";
        const NAME: &str = "SELECT srn, seq FROM resources INDEXED BY resources_name \
             WHERE rn = ?4 AND srn >= ?1 AND srn < ?2 ORDER BY srn LIMIT ?3";
        const CONTENT_TYPE: &str =
            "SELECT srn, seq FROM resources INDEXED BY resources_content_type \
             WHERE cty = ?4 AND srn >= ?1 AND srn < ?2 ORDER BY srn LIMIT ?3";
        let n = n as i64;
        let (sql, value): (&str, Option<rusqlite::types::Value>) = match self {
            Index::All => (ALL, None),
            Index::Type(t) => (TYPE, Some(i64::from(*t).into())),
            Index::Label(l) => (LABEL, Some(l.clone().into())),
            Index::Name(rn) => (NAME, Some(rn.clone().into())),
            Index::ContentType(c) => (CONTENT_TYPE, Some(c.clone().into())),
        };
        let mut st = r.conn.prepare_cached(sql).map_err(internal)?;
        let map = |row: &rusqlite::Row<'_>| {
            Ok(Key {
                srn: row.get(0)?,
                seq: row.get(1)?,
            })
        };
        let rows = match value {
            None => st.query_map(params![min, hi, n], map),
            Some(v) => st.query_map(params![min, hi, n, v], map),
        }
        .map_err(internal)?;
        rows.collect::<Result<_, _>>().map_err(internal)
    }
}

/// A time or size range over one column, read in full when it is small.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    /// `ct` from..=to (normalized timestamps; `None`: open).
    Created(Option<String>, Option<String>),
    Modified(Option<String>, Option<String>),
    Expires(Option<String>, Option<String>),
    /// `cs` from..=to.
    Size(Option<i64>, Option<i64>),
}

impl Range {
    /// Every key in the range (inclusive bounds: a superset of the strict conditions), or `None`
    /// when more than `cap` resources lie in it anywhere in the tree.
    fn keys(&self, r: &Reader<'_>, cap: usize) -> M2mResult<Option<Vec<Key>>> {
        // Timestamps are digits, `T` and `,`: `~` sorts after all of them.
        const CT: &str = "SELECT srn, seq FROM resources INDEXED BY resources_created \
             WHERE ct >= ?1 AND ct <= ?2 LIMIT ?3";
        const LT: &str = "SELECT srn, seq FROM resources INDEXED BY resources_modified \
             WHERE lt >= ?1 AND lt <= ?2 LIMIT ?3";
        const ET: &str = "SELECT srn, seq FROM resources INDEXED BY resources_expiry \
             WHERE et >= ?1 AND et <= ?2 LIMIT ?3";
        const CS: &str = "SELECT srn, seq FROM resources INDEXED BY resources_size \
             WHERE cs >= ?1 AND cs <= ?2 LIMIT ?3";
        let text = |v: &Option<String>, open: &str| v.clone().unwrap_or_else(|| open.to_owned());
        let (sql, lo, hi): (&str, rusqlite::types::Value, rusqlite::types::Value) = match self {
            Range::Created(a, b) => (CT, text(a, "").into(), text(b, "~").into()),
            Range::Modified(a, b) => (LT, text(a, "").into(), text(b, "~").into()),
            Range::Expires(a, b) => (ET, text(a, "").into(), text(b, "~").into()),
            Range::Size(a, b) => (
                CS,
                a.unwrap_or(i64::MIN).into(),
                b.unwrap_or(i64::MAX).into(),
            ),
        };
        let mut st = r.conn.prepare_cached(sql).map_err(internal)?;
        let rows = st
            .query_map(params![lo, hi, cap as i64 + 1], |row| {
                Ok(Key {
                    srn: row.get(0)?,
                    seq: row.get(1)?,
                })
            })
            .map_err(internal)?;
        let keys: Vec<Key> = rows.collect::<Result<_, _>>().map_err(internal)?;
        Ok((keys.len() <= cap).then_some(keys))
    }
}

/// How candidates are drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Index(Index),
    Range(Range),
    Union(Vec<Plan>),
    Intersect(Vec<Plan>),
}

/// The most resources a range is read in full for.
pub const RANGE_CAP: usize = 2048;

impl Plan {
    /// The plan for a filter: every condition that has an index contributes a stream; the
    /// others are left to the final check. With `fo=2` (OR) every condition must have one, or the
    /// whole subtree is the candidate set.
    pub fn of(fc: &FilterCriteria) -> Plan {
        let or = fc.filter_operation == FilterOperation::Or;
        let mut parts = Vec::new();
        let mut unindexed = false;
        let union = |v: Vec<Plan>| {
            if v.len() == 1 {
                v.into_iter().next().unwrap()
            } else {
                Plan::Union(v)
            }
        };
        if !fc.resource_types.is_empty() {
            parts.push(union(
                fc.resource_types
                    .iter()
                    .map(|t| Plan::Index(Index::Type(*t)))
                    .collect(),
            ));
        }
        if !fc.labels.is_empty() {
            parts.push(union(
                fc.labels
                    .iter()
                    .map(|l| Plan::Index(Index::Label(l.clone())))
                    .collect(),
            ));
        }
        if !fc.content_types.is_empty() {
            parts.push(union(
                fc.content_types
                    .iter()
                    .map(|c| {
                        let t = m2m_core::filter::type_of_content(c);
                        Plan::Index(Index::ContentType(t.to_owned()))
                    })
                    .collect(),
            ));
        }
        for (name, value) in &fc.attributes {
            if name == "rn" && !value.contains('*') {
                parts.push(Plan::Index(Index::Name(value.clone())));
            } else {
                unindexed = true;
            }
        }
        let size = |v: u64| super::schema::saturating_i64(v);
        let ranges: [(Option<Range>, Option<Range>); 4] = [
            (
                fc.created_after
                    .clone()
                    .map(|a| Range::Created(Some(a), None)),
                fc.created_before
                    .clone()
                    .map(|b| Range::Created(None, Some(b))),
            ),
            (
                fc.modified_since
                    .clone()
                    .map(|a| Range::Modified(Some(a), None)),
                fc.unmodified_since
                    .clone()
                    .map(|b| Range::Modified(None, Some(b))),
            ),
            (
                fc.expire_after
                    .clone()
                    .map(|a| Range::Expires(Some(a), None)),
                fc.expire_before
                    .clone()
                    .map(|b| Range::Expires(None, Some(b))),
            ),
            (
                fc.size_above.map(|a| Range::Size(Some(size(a)), None)),
                fc.size_below.map(|b| Range::Size(None, Some(size(b)))),
            ),
        ];
        for (from, to) in ranges {
            match (from, to) {
                // Under AND both bounds of one column make one range.
                (Some(from), Some(to)) if !or => parts.push(Plan::Range(from.join(to))),
                (from, to) => parts.extend(from.into_iter().chain(to).map(Plan::Range)),
            }
        }
        // Locations have no index: a geo-query is judged on each candidate.
        if fc.state_tag_smaller.is_some() || fc.state_tag_bigger.is_some() || fc.geo.is_some() {
            unindexed = true;
        }
        let all = Plan::Index(Index::All);
        if parts.is_empty() || (or && unindexed) {
            return all;
        }
        if or {
            union(parts)
        } else if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Plan::Intersect(parts)
        }
    }
}

impl Range {
    /// Two half-open ranges over the same column as one.
    fn join(self, other: Range) -> Range {
        match (self, other) {
            (Range::Created(a, _), Range::Created(_, b)) => Range::Created(a, b),
            (Range::Modified(a, _), Range::Modified(_, b)) => Range::Modified(a, b),
            (Range::Expires(a, _), Range::Expires(_, b)) => Range::Expires(a, b),
            (Range::Size(a, _), Range::Size(_, b)) => Range::Size(a, b),
            (a, _) => a,
        }
    }
}

/// The first page size, doubled on every page up to [`MAX_PAGE`]: a seek that lands near its
/// target reads little, a long walk reads in large pages.
const FIRST_PAGE: usize = 16;
const MAX_PAGE: usize = 512;

/// Keys in name order from `lo` (inclusive) to `hi` (exclusive), seekable forward.
pub enum Stream {
    Index {
        index: Index,
        hi: String,
        buf: VecDeque<Key>,
        /// Every key at or after the last fetch's start has been fetched.
        done: bool,
        page: usize,
    },
    /// A range read in full (sorted by name, within bounds).
    Keys(VecDeque<Key>),
    Union(Vec<Stream>),
    Intersect(Vec<Stream>),
}

impl Stream {
    /// The stream of `plan` over the names in `lo..hi`. A range too large to read becomes the
    /// whole subtree under AND (the final check applies it) — callers pass plans from
    /// [`Plan::of`], where that is always a superset.
    pub fn open(r: &Reader<'_>, plan: &Plan, lo: &str, hi: &str) -> M2mResult<Stream> {
        Ok(match plan {
            Plan::Index(index) => Stream::index(index.clone(), hi),
            Plan::Range(range) => match range.keys(r, RANGE_CAP)? {
                Some(mut keys) => {
                    keys.retain(|k| k.srn.as_str() >= lo && k.srn.as_str() < hi);
                    keys.sort_by(|a, b| a.srn.cmp(&b.srn));
                    Stream::Keys(keys.into())
                }
                None => Stream::index(Index::All, hi),
            },
            Plan::Union(plans) => Stream::Union(
                plans
                    .iter()
                    .map(|p| Stream::open(r, p, lo, hi))
                    .collect::<M2mResult<_>>()?,
            ),
            Plan::Intersect(plans) => {
                let mut streams: Vec<Stream> = plans
                    .iter()
                    .map(|p| Stream::open(r, p, lo, hi))
                    .collect::<M2mResult<_>>()?;
                // A range too large to read adds nothing to an intersection.
                streams.retain(|s| !s.is_everything());
                if streams.is_empty() {
                    Stream::index(Index::All, hi)
                } else if streams.len() == 1 {
                    streams.pop().unwrap()
                } else {
                    Stream::Intersect(streams)
                }
            }
        })
    }

    fn index(index: Index, hi: &str) -> Stream {
        Stream::Index {
            index,
            hi: hi.to_owned(),
            buf: VecDeque::new(),
            done: false,
            page: FIRST_PAGE,
        }
    }

    fn is_everything(&self) -> bool {
        matches!(
            self,
            Stream::Index {
                index: Index::All,
                ..
            }
        )
    }

    /// The first key whose name is `>= min`, without consuming it; `None` when there is none.
    /// `min` never decreases from one call to the next.
    pub fn seek(&mut self, r: &Reader<'_>, min: &str) -> M2mResult<Option<Key>> {
        match self {
            Stream::Index {
                index,
                hi,
                buf,
                done,
                page,
            } => {
                while buf.front().is_some_and(|k| k.srn.as_str() < min) {
                    buf.pop_front();
                }
                if let Some(k) = buf.front() {
                    return Ok(Some(k.clone()));
                }
                if *done || min >= hi.as_str() {
                    return Ok(None);
                }
                let keys = index.page(r, min, hi, *page)?;
                *done = keys.len() < *page;
                *page = (*page * 2).min(MAX_PAGE);
                *buf = keys.into();
                Ok(buf.front().cloned())
            }
            Stream::Keys(keys) => {
                while keys.front().is_some_and(|k| k.srn.as_str() < min) {
                    keys.pop_front();
                }
                Ok(keys.front().cloned())
            }
            Stream::Union(streams) => {
                let mut first: Option<Key> = None;
                for s in streams.iter_mut() {
                    if let Some(k) = s.seek(r, min)? {
                        if first.as_ref().is_none_or(|f| k.srn < f.srn) {
                            first = Some(k);
                        }
                    }
                }
                Ok(first)
            }
            Stream::Intersect(streams) => {
                // Leapfrog: every stream seeks to the name the previous one stands at; when one
                // stands further on, that name is the new target and the round starts again.
                let mut target = min.to_owned();
                'round: loop {
                    let mut seq = 0;
                    for s in streams.iter_mut() {
                        let Some(k) = s.seek(r, &target)? else {
                            return Ok(None);
                        };
                        if k.srn != target {
                            target = k.srn;
                            continue 'round;
                        }
                        seq = k.seq;
                    }
                    return Ok(Some(Key { srn: target, seq }));
                }
            }
        }
    }
}

/// How deep `srn` lies: its number of `/`.
pub fn depth(srn: &str) -> usize {
    srn.bytes().filter(|b| *b == b'/').count()
}

/// The name from which to go on after `srn` when nothing deeper than `max_depth` is wanted: after
/// the subtree of its ancestor at `max_depth` (`srn` lies deeper than that).
pub fn skip_below(srn: &str, max_depth: usize) -> String {
    match srn.match_indices('/').nth(max_depth) {
        Some((i, _)) => format!("{}0", &srn[..i]),
        None => after(srn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_skip_whole_subtrees() {
        assert_eq!(depth("cse-in/ae/cnt"), 2);
        // Below cse-in (depth 0) with lvl 1: after cse-in/ae/cnt comes cse-in/ae0.
        assert_eq!(skip_below("cse-in/ae/cnt", 1), "cse-in/ae0");
        assert_eq!(skip_below("cse-in/ae/cnt/x", 2), "cse-in/ae/cnt0");
        let a = after("a");
        assert!(a.as_str() > "a" && a.as_str() < "a-" && a.as_str() < "a/");
    }
}
