//! Matching the Originator against accessControlOriginators (TS-0003 clause 7.1.3 and table 7.1.3-2;
//! TS-0001 clause 9.6.2.1; TS-0004 clause 7.3.3.15).
//!
//! Both the Originator and every CSE-ID/AE-ID entry are first brought to absolute form (TS-0001 clause 7.2):
//!
//! | given | absolute |
//! |---|---|
//! | `//sp/cse`, `//sp/cse/Cae`, `//sp/Sae` | unchanged |
//! | `/cse`, `/cse/Cae`, `/Sae` (SP-relative) | `//<hosting SP>/...` |
//! | `Cae` (CSE-relative AE-ID: an AE registered with the hosting CSE) | `//<hosting SP>/<hosting CSE>/Cae` |
//! | `Sae` | `//<hosting SP>/Sae` |
//!
//! and then compared segment by segment: an absolute ID has 2 or 3 non-empty segments after `//`, and two IDs
//! match only with the same number of segments, so a CSE-ID never matches the AEs under it. A `*` in an
//! entry matches any characters within one segment and never a `/`.
//!
//! Entry kinds and the decisions taken where the spec is silent:
//! - `all` matches every (non-empty) Originator.
//! - An SP domain is `//m2m.example.com`, or a bare name with a `.` that does not start with `C` or `S` (those are
//!   AE-IDs); it matches every ID whose SP-ID is exactly that name (no sub-domains, case-sensitive). `*` is not
//!   allowed in a domain: such an entry matches nothing.
//! - A `<group>` resource ID: see [`GroupResolver`]; asked for every entry that is not
//!   `all` and has no `*`. The Originator matches a member ID after both are brought to absolute form.
//! - Anything else (Role-IDs, which the request does not carry here, bare names such as `admin`, `*` alone,
//!   IDs with more than 3 segments or empty segments) matches nothing.
//! - An Originator that cannot be brought to absolute form, or that contains `*`, matches only `all`.
//! - All comparisons are exact and case-sensitive.

use super::{GroupLookup, GroupResolver, HostingCse};

/// An ID in absolute form, split into its segments (SP-ID first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteId {
    segments: Vec<String>,
}

impl AbsoluteId {
    /// The SP-ID (first segment).
    pub fn sp(&self) -> &str {
        &self.segments[0]
    }

    /// The segments: SP-ID, then CSE-ID, then (for a C-stem AE) the AE-ID-Stem.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The `//sp/...` form.
    pub fn to_absolute_string(&self) -> String {
        format!("//{}", self.segments.join("/"))
    }
}

/// Bring a CSE-ID or AE-ID in any form to absolute form. `None` when `id` is not such an ID. With
/// `allow_wildcard` false, an ID containing `*` is refused.
pub fn to_absolute(id: &str, host: &HostingCse, allow_wildcard: bool) -> Option<AbsoluteId> {
    if id.is_empty() || (!allow_wildcard && id.contains('*')) {
        return None;
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let sp = host.sp_fqdn.trim_matches('/');
    let cse = host.cse_id.trim_matches('/');
    let abs = if let Some(rest) = id.strip_prefix("//") {
        rest.to_string()
    } else if let Some(rest) = id.strip_prefix('/') {
        format!("{sp}/{rest}")
    } else if id.starts_with('C') {
        format!("{sp}/{cse}/{id}")
    } else if id.starts_with('S') {
        format!("{sp}/{id}")
    } else {
        return None;
    };
    let segments: Vec<String> = abs.split('/').map(str::to_string).collect();
    if !(2..=3).contains(&segments.len()) || segments.iter().any(String::is_empty) {
        return None;
    }
    Some(AbsoluteId { segments })
}

/// The outcome of one acor entry against the Originator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMatch {
    Yes,
    No,
    /// No match, with something worth reporting (e.g. the group could not be retrieved).
    NoBecause(String),
}

/// Whether the acor `entry` admits the Originator. `originator` is the raw From; `abs` its absolute form.
pub fn entry_matches(
    entry: &str,
    originator: &str,
    abs: Option<&AbsoluteId>,
    host: &HostingCse,
    groups: &dyn GroupResolver,
) -> EntryMatch {
    if originator.is_empty() || entry.is_empty() {
        return EntryMatch::No;
    }
    if entry == "all" {
        return EntryMatch::Yes;
    }
    let wildcard = entry.contains('*');
    if !wildcard {
        match groups.lookup(entry) {
            GroupLookup::Members(members) => {
                let Some(abs) = abs else {
                    return EntryMatch::No;
                };
                let hit = members
                    .iter()
                    .filter_map(|m| to_absolute(m, host, false))
                    .any(|m| m == *abs);
                return if hit { EntryMatch::Yes } else { EntryMatch::No };
            }
            GroupLookup::Unavailable => {
                return EntryMatch::NoBecause(format!("group {entry} cannot be retrieved"));
            }
            GroupLookup::NotAGroup => {}
        }
    }
    let Some(abs) = abs else {
        return EntryMatch::No;
    };
    if let Some(domain) = sp_domain(entry) {
        if wildcard || domain.is_empty() {
            return EntryMatch::No;
        }
        return if abs.sp() == domain {
            EntryMatch::Yes
        } else {
            EntryMatch::No
        };
    }
    let Some(pattern) = to_absolute(entry, host, true) else {
        return EntryMatch::No;
    };
    if pattern.segments.len() == abs.segments.len()
        && pattern
            .segments
            .iter()
            .zip(&abs.segments)
            .all(|(p, s)| glob(p, s))
    {
        EntryMatch::Yes
    } else {
        EntryMatch::No
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

/// `*` matches any run of characters; everything else matches itself. Used for originator
/// segments and the registration rules.
///
/// Linear in the lengths of both: the pattern is split at its stars, the first piece must start the text,
/// the last must end it, and each piece between is taken at its leftmost occurrence after the previous one
/// (leftmost is never worse for what follows). `str::find` is the linear two-way search, so no input is
/// slow; backtracking on the last star was quadratic (a 32 KiB `*aa..ab` against 64 KiB of `a` took
/// seconds).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
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

    struct NoGroups;
    impl GroupResolver for NoGroups {
        fn lookup(&self, _id: &str) -> GroupLookup {
            GroupLookup::NotAGroup
        }
    }

    fn host() -> HostingCse {
        HostingCse {
            sp_fqdn: "m2m.example.com".into(),
            cse_id: "id-in".into(),
        }
    }

    fn matches(entry: &str, originator: &str) -> bool {
        let h = host();
        let abs = to_absolute(originator, &h, false);
        entry_matches(entry, originator, abs.as_ref(), &h, &NoGroups) == EntryMatch::Yes
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
    fn absolute_forms() {
        let h = host();
        let cases = [
            (
                "//m2m.example.com/id-in/Cae1",
                Some("//m2m.example.com/id-in/Cae1"),
            ),
            ("/id-in/Cae1", Some("//m2m.example.com/id-in/Cae1")),
            ("Cae1", Some("//m2m.example.com/id-in/Cae1")),
            ("Sae1", Some("//m2m.example.com/Sae1")),
            ("/Sae1", Some("//m2m.example.com/Sae1")),
            ("//m2m.example.com/Sae1", Some("//m2m.example.com/Sae1")),
            ("/id-mn", Some("//m2m.example.com/id-mn")),
            ("//other.org/id-mn", Some("//other.org/id-mn")),
            ("", None),
            ("/", None),
            ("//", None),
            ("//m2m.example.com", None),
            ("//m2m.example.com/", None),
            ("/id-in/", None),
            ("/id-in//Cae", None),
            ("/id-in/Cae/cnt", None),
            ("//sp/id-in/Cae/x", None),
            ("admin", None),
            ("C*", None),
            ("Cae 1", None),
            ("Cae\n", None),
        ];
        for (id, want) in cases {
            let got = to_absolute(id, &h, false).map(|a| a.to_absolute_string());
            assert_eq!(got.as_deref(), want, "{id:?}");
        }
    }

    #[test]
    fn every_form_of_the_same_ae_matches_in_both_directions() {
        let forms = ["//m2m.example.com/id-in/Cae1", "/id-in/Cae1", "Cae1"];
        for e in forms {
            for o in forms {
                assert!(matches(e, o), "entry {e} originator {o}");
            }
        }
        let s_forms = ["//m2m.example.com/Sae1", "/Sae1", "Sae1"];
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
            ("all", "anything-at-all", true),
            ("all", "", false),
            ("ALL", "Cae1", false),
            // SP domain
            ("m2m.example.com", "Cae1", true),
            ("//m2m.example.com", "Cae1", true),
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
            // Other CSEs and SPs
            ("/id-mn/Cae1", "Cae1", false),
            ("//other.org/id-in/Cae1", "Cae1", false),
            ("/id-in/Cae1", "//other.org/id-in/Cae1", false),
            // Wildcards (TS-0003 table 7.1.3-2)
            ("//*/myCSEID", "//m2msp.org/myCSEID", true),
            ("//*/myCSEID", "/myCSEID", true),
            ("//*/myCSEID", "//a/b/myCSEID", false),
            ("//*/myCSE*", "//m2msp.org/myCSE42", true),
            ("//*/myCSE*", "//m2msp.org/myCSE42/C1", false),
            ("/myCSE*", "/myCSE1", true),
            ("/myCSE*", "//other.org/myCSE1", false),
            ("/myCSEID/C98*", "/myCSEID/C9886", true),
            ("/myCSEID/C98*", "/myCSEID/C9786", false),
            ("/myCSE*/C98*", "/myCSE7/C9886", true),
            ("/myCSE*/C98*", "/myCSE7/x/C9886", false),
            ("//*/myCSE*/C9886", "//m2msp.org/myCSEx/C9886", true),
            ("/SmyAE*", "SmyAE1", true),
            ("/SmyAE*", "/SmyAE1", true),
            ("/SmyAE*", "/id-in/SmyAE1", false),
            ("/id-in/C*", "/id-in/Cx", true),
            ("/id-in/C*", "Cx", true),
            ("/id-in/C*", "/id-in/Cx/y", false),
            ("/id-in/*", "/id-in/Cx", true),
            ("/*", "/id-in", true),
            ("/*", "/id-in/Cx", false),
            ("C*", "Cx", true),
            ("C*", "/id-mn/Cx", false),
            ("//*/*/*", "//a/b/c", true),
            ("//*/*/*", "//a/b", false),
            // Wildcard and bare names that are not IDs match nothing
            ("*", "Cae1", false),
            ("admin", "admin", false),
            ("role-1", "role-1", false),
            ("", "Cae1", false),
            // Originators that are not IDs match only "all"
            ("/id-in/C*", "/id-in/C*", false),
            ("C*", "C*", false),
            ("/id-in/Cae1/cnt", "/id-in/Cae1/cnt", false),
            // Case-sensitive
            ("/ID-IN/Cae1", "Cae1", false),
            ("/id-in/cae1", "Cae1", false),
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
        let h = HostingCse {
            sp_fqdn: "sp2.org".into(),
            cse_id: "id-mn".into(),
        };
        let abs = to_absolute("Cae1", &h, false);
        assert_eq!(
            abs.as_ref().map(|a| a.to_absolute_string()).as_deref(),
            Some("//sp2.org/id-mn/Cae1")
        );
        let m = |e: &str| entry_matches(e, "Cae1", abs.as_ref(), &h, &NoGroups) == EntryMatch::Yes;
        assert!(m("/id-mn/Cae1"));
        assert!(m("//sp2.org/id-mn/Cae1"));
        assert!(!m("/id-in/Cae1"));
        assert!(!m("//m2m.example.com/id-mn/Cae1"));
    }
}
