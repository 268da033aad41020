//! Matching the Originator against accessControlOriginators (TS-0003 clause 7.1.3 and table 7.1.3-2;
//! TS-0001 clause 9.6.2.1; TS-0004 clause 7.3.3.15).
//!
//! The Originator arrives parsed ([`EntityId`], TS-0001 clause 7.2: one normalized value whatever form the
//! From used). Every acor entry is read with the same rules into an [`Entry`]:
//!
//! | entry | matches |
//! |---|---|
//! | `all` | every Originator |
//! | `//m2m.example.com`, or a bare name with a `.` not starting with `C`/`S` | every ID of that SP (no sub-domains; the SP-ID ignores case) |
//! | a CSE-ID or AE-ID in any form, `*` allowed inside a segment | IDs of the same kind whose segments match |
//! | the resource ID of a `<group>` | its members, each read as an ID (TS-0001 clause 9.6.2.1) |
//!
//! Kinds never mix: a CSE-ID pattern (`/id-mn`, `/*`) matches CSEs only, an S-stem pattern (`/S*`, `S*`) S-stem
//! AEs only, a pattern under a CSE (`/id-in/C*`, `/id-in/*`, `C*`) the C-stem AEs that CSE assigned. A `*` matches any characters within one
//! segment and never a `/`. Role-IDs (which the request does not carry here), bare names such as `admin`, `*`
//! alone, `*` in a domain and IDs with more segments match nothing.

use super::{GroupLookup, GroupResolver};
use m2m_core::{EntityId, Home};

/// What an acor entry denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `all`.
    All,
    /// An SP domain, lowercase.
    Domain(String),
    /// A CSE-ID or AE-ID, possibly with wildcards.
    Pattern(Pattern),
    /// Nothing this matcher can evaluate.
    Unusable,
}

/// Which kind of entity a pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Cse,
    CseAe,
    SpAe,
}

/// An ID pattern in absolute form: the segments after `//`, `*` a wildcard inside one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    pub segments: Vec<String>,
}

impl Pattern {
    /// Whether `id` is of this pattern's kind and every segment matches.
    pub fn matches(&self, id: &EntityId) -> bool {
        let kind = match id {
            EntityId::Cse { .. } => PatternKind::Cse,
            EntityId::CseAe { .. } => PatternKind::CseAe,
            EntityId::SpAe { .. } => PatternKind::SpAe,
        };
        let segments = id.segments();
        kind == self.kind
            && segments.len() == self.segments.len()
            && self.segments.iter().zip(segments).all(|(p, s)| glob(p, s))
    }
}

impl Entry {
    /// Reads one acor entry, relative IDs from `home`.
    pub fn parse(entry: &str, home: &Home) -> Entry {
        if entry == "all" {
            return Entry::All;
        }
        if entry.is_empty() || entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Entry::Unusable;
        }
        if let Some(domain) = sp_domain(entry) {
            if domain.is_empty() || domain.contains('*') {
                return Entry::Unusable;
            }
            return Entry::Domain(domain.to_ascii_lowercase());
        }
        pattern(entry, home).map_or(Entry::Unusable, Entry::Pattern)
    }
}

/// The domain name when `entry` denotes an SP domain.
fn sp_domain(entry: &str) -> Option<&str> {
    if let Some(rest) = entry.strip_prefix("//") {
        return if rest.contains('/') { None } else { Some(rest) };
    }
    if !entry.starts_with(['/', 'C', 'S']) && entry.contains('.') {
        return Some(entry);
    }
    None
}

/// Reads an ID pattern with the classification rules of [`EntityId::parse`], `*` allowed in segments.
fn pattern(entry: &str, home: &Home) -> Option<Pattern> {
    let (sp, rest): (String, Vec<&str>) = if let Some(rest) = entry.strip_prefix("//") {
        let (sp, rest) = rest.split_once('/')?;
        (sp.to_ascii_lowercase(), rest.split('/').collect())
    } else if let Some(rest) = entry.strip_prefix('/') {
        (home.sp.fqdn().to_owned(), rest.split('/').collect())
    } else if entry.starts_with('S') {
        (home.sp.fqdn().to_owned(), vec![entry])
    } else if entry.starts_with('C') {
        let cse = home.cse.as_ref()?;
        (home.sp.fqdn().to_owned(), vec![cse.bare(), entry])
    } else {
        return None;
    };
    if sp.is_empty() || rest.iter().any(|s| s.is_empty() || !segment_chars(s)) {
        return None;
    }
    let (kind, segments) = match rest.as_slice() {
        [one] if one.starts_with('S') => (PatternKind::SpAe, vec![sp, one.to_string()]),
        [one] => (PatternKind::Cse, vec![sp, one.to_string()]),
        // S-stems are unique in the SP: the CSE in front adds nothing (as in EntityId::parse).
        [cse, stem] if !cse.starts_with('S') && stem.starts_with('S') => {
            (PatternKind::SpAe, vec![sp, stem.to_string()])
        }
        // Any other stem under a CSE (`C98*`, `*`) stands for the C-stem AEs it assigned.
        [cse, stem] if !cse.starts_with('S') => (
            PatternKind::CseAe,
            vec![sp, cse.to_string(), stem.to_string()],
        ),
        _ => return None,
    };
    Some(Pattern { kind, segments })
}

fn segment_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '*'))
}

/// The outcome of one acor entry against the Originator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMatch {
    Yes,
    No,
    /// No match, with something worth reporting (e.g. the group could not be retrieved).
    NoBecause(String),
}

/// Whether the acor `entry` admits `originator`.
pub fn entry_matches(
    entry: &str,
    originator: &EntityId,
    home: &Home,
    groups: &dyn GroupResolver,
) -> EntryMatch {
    if entry == "all" {
        return EntryMatch::Yes;
    }
    if !entry.is_empty() && !entry.contains('*') {
        match groups.lookup(entry) {
            GroupLookup::Members(members) => {
                let hit = members
                    .iter()
                    .filter_map(|m| EntityId::parse(m, home).ok())
                    .any(|m| m == *originator);
                return if hit { EntryMatch::Yes } else { EntryMatch::No };
            }
            GroupLookup::Unavailable => {
                return EntryMatch::NoBecause(format!("group {entry} cannot be retrieved"));
            }
            GroupLookup::NotAGroup => {}
        }
    }
    let hit = match Entry::parse(entry, home) {
        Entry::All => true,
        Entry::Domain(d) => originator.sp().fqdn() == d,
        Entry::Pattern(p) => p.matches(originator),
        Entry::Unusable => false,
    };
    if hit {
        EntryMatch::Yes
    } else {
        EntryMatch::No
    }
}

/// `*` matches any run of characters; everything else matches itself. Used for originator
/// segments and the registration rules.
///
/// Linear in the lengths of both: the pattern is split at its stars, the first piece must start the text,
/// the last must end it, and each piece between is taken at its leftmost occurrence after the previous one
/// (leftmost is never worse for what follows). `str::find` is the linear two-way search, so no input is
/// slow; backtracking on the last star was quadratic (a 32 KiB `*aa..ab` against 64 KiB of `a` took
/// seconds).
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(last) = pieces.next_back() else {
        // No star: an exact comparison.
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for piece in pieces.filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_control::NoGroups;
    use m2m_core::{CseId, SpId};

    fn home() -> Home {
        Home::cse(
            SpId::parse("m2m.example.com").unwrap(),
            CseId::parse("id-in").unwrap(),
        )
    }

    fn matches(entry: &str, originator: &str) -> bool {
        let h = home();
        let o = EntityId::parse(originator, &h).expect(originator);
        entry_matches(entry, &o, &h, &NoGroups) == EntryMatch::Yes
    }

    #[test]
    fn glob_table() {
        let cases = [
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "ab", false),
            ("C98*", "C9886", true),
            ("C98*", "C99", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("**", "x", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
        // No exponential blow-up.
        let long = "a".repeat(10_000);
        assert!(!glob(&format!("{}b", "*a".repeat(50)), &long));
    }

    #[test]
    fn glob_is_linear_on_long_inputs() {
        // Found by the property tests: backtracking on the last star took seconds here.
        let text = "a".repeat(64 * 1024);
        let start = std::time::Instant::now();
        assert!(!glob(&format!("*{}b", "a".repeat(32 * 1024)), &text));
        assert!(glob(&format!("*{}", "a".repeat(32 * 1024)), &text));
        assert!(glob(&format!("{}*", "a".repeat(32 * 1024)), &text));
        assert!(!glob(&format!("{}b*", "a".repeat(32 * 1024)), &text));
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        // The last piece may not reuse text a middle piece took.
        assert!(!glob("*ab*ba", "aba"));
        assert!(glob("*ab*ba", "abba"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn every_form_of_the_same_ae_matches_in_both_directions() {
        let forms = ["//m2m.example.com/id-in/Cae1", "/id-in/Cae1", "Cae1"];
        for e in forms {
            for o in forms {
                assert!(matches(e, o), "entry {e} originator {o}");
            }
        }
        let s_forms = [
            "//m2m.example.com/Sae1",
            "/Sae1",
            "Sae1",
            "/id-mn/Sae1",
            "//M2M.example.com/Sae1",
        ];
        for e in s_forms {
            for o in s_forms {
                assert!(matches(e, o), "entry {e} originator {o}");
            }
            for o in forms {
                assert!(!matches(e, o), "entry {e} originator {o}");
            }
        }
        let cse_forms = ["//m2m.example.com/id-mn", "/id-mn"];
        for e in cse_forms {
            for o in cse_forms {
                assert!(matches(e, o), "entry {e} originator {o}");
            }
        }
    }

    #[test]
    fn entry_table() {
        let cases = [
            // all
            ("all", "Cae1", true),
            ("ALL", "Cae1", false),
            // SP domain (the SP-ID ignores case)
            ("m2m.example.com", "Cae1", true),
            ("//m2m.example.com", "Cae1", true),
            ("//M2M.example.com", "Cae1", true),
            ("//m2m.example.com", "/id-mn", true),
            ("//m2m.example.com", "//m2m.example.com/Sx", true),
            ("//m2m.example.com", "//other.org/id-in/Cae1", false),
            ("other.org", "//other.org/id-in/Cae1", true),
            ("example.com", "Cae1", false), // no sub-domain matching
            ("//m2m.example.*", "Cae1", false),
            ("*.example.com", "Cae1", false),
            ("//*", "Cae1", false),
            ("//", "Cae1", false),
            // CSE-ID vs the AEs under it
            ("/id-in", "/id-in", true),
            ("/id-in", "Cae1", false),
            ("/id-in", "/id-in/Cae1", false),
            ("//m2m.example.com/id-in", "/id-in/Cae1", false),
            // An S-stem AE is never a CSE, nor the other way round
            ("/Sae1", "/id-mn", false),
            ("/*", "/Sae1", false),
            ("/*", "Sae1", false),
            ("/S*", "/id-mn", false),
            ("/S*", "/Sgw", true),
            ("/*", "/sgw", true),
            ("//*/*", "//m2m.example.com/Sae1", false),
            // Other CSEs and SPs
            ("/id-mn/Cae1", "Cae1", false),
            ("//other.org/id-in/Cae1", "Cae1", false),
            ("/id-in/Cae1", "//other.org/id-in/Cae1", false),
            // Wildcards (TS-0003 table 7.1.3-2)
            ("//*/myCSEID", "//m2msp.org/myCSEID", true),
            ("//*/myCSEID", "/myCSEID", true),
            ("//*/myCSE*", "//m2msp.org/myCSE42", true),
            ("//*/myCSE*", "//m2msp.org/myCSE42/C1", false),
            ("/myCSE*", "/myCSE1", true),
            ("/myCSE*", "//other.org/myCSE1", false),
            ("/myCSEID/C98*", "/myCSEID/C9886", true),
            ("/myCSEID/C98*", "/myCSEID/C9786", false),
            ("/myCSE*/C98*", "/myCSE7/C9886", true),
            ("//*/myCSE*/C9886", "//m2msp.org/myCSEx/C9886", true),
            ("/SmyAE*", "SmyAE1", true),
            ("/SmyAE*", "/SmyAE1", true),
            ("/SmyAE*", "/id-in/SmyAE1", true), // the same S-stem AE
            ("/id-in/C*", "/id-in/Cx", true),
            ("/id-in/C*", "Cx", true),
            ("/id-in/*", "/id-in/Cx", true),
            ("/id-in/*", "/Sx", false),
            ("/*", "/id-in", true),
            ("/*", "/id-in/Cx", false),
            ("C*", "Cx", true),
            ("C*", "/id-mn/Cx", false),
            ("S*", "Sx", true),
            ("S*", "/id-mn", false),
            ("//*/*/C*", "//a.b/b/Cc", true),
            ("//*/*/C*", "//a.b/b", false),
            // Wildcard and bare names that are not IDs match nothing
            ("*", "Cae1", false),
            ("admin", "Cae1", false),
            ("role-1", "Cae1", false),
            ("", "Cae1", false),
            ("/id-in/Cae1/cnt", "Cae1", false),
            // CSE-IDs and stems are exact, case included
            ("/ID-IN/Cae1", "Cae1", false),
            ("/id-in/cae1", "Cae1", false),
            ("/id-in/CAE1", "Cae1", false),
        ];
        for (entry, originator, want) in cases {
            assert_eq!(
                matches(entry, originator),
                want,
                "entry {entry:?} originator {originator:?}"
            );
        }
    }

    #[test]
    fn relative_forms_follow_the_hosting_cse() {
        let h = Home::cse(
            SpId::parse("sp2.org").unwrap(),
            CseId::parse("id-mn").unwrap(),
        );
        let o = EntityId::parse("Cae1", &h).unwrap();
        assert_eq!(o.absolute(), "//sp2.org/id-mn/Cae1");
        let m = |e: &str| entry_matches(e, &o, &h, &NoGroups) == EntryMatch::Yes;
        assert!(m("/id-mn/Cae1"));
        assert!(m("//sp2.org/id-mn/Cae1"));
        assert!(!m("/id-in/Cae1"));
        assert!(!m("//m2m.example.com/id-mn/Cae1"));
    }
}
