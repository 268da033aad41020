//! Identifiers and addressing (TS-0001 clause 7.2, TS-0004 clause 6.2.3).
//!
//! A `To` parameter names a resource in one of three scopes: CSE-relative (`cse-in/ae1`),
//! SP-relative (`/id-in/cse-in/ae1`) or absolute (`//m2m.example.com/id-in/cse-in/ae1`). Inside the
//! scope the path is structured (starting with the CSEBase resource name, or `-` for it) or
//! unstructured (starting with a resourceID).

use crate::error::{M2mError, M2mResult};
use std::fmt;

/// Characters allowed in a CSE-ID, a resource name or a resourceID segment: RFC 3986 unreserved.
pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Checks one identifier segment (a CSE-ID without its slash, an AE-ID-Stem): non-empty, RFC 3986
/// unreserved characters only; 4000 with the offending character otherwise.
pub fn check_segment(kind: &str, s: &str) -> M2mResult<()> {
    if s.is_empty() {
        return Err(M2mError::bad_request(format!("empty {kind}")));
    }
    if let Some(c) = s.chars().find(|c| !is_id_char(*c)) {
        return Err(M2mError::bad_request(format!(
            "{kind} '{s}' contains '{c}'"
        )));
    }
    Ok(())
}

/// A CSE-ID, kept without its leading `/` (`id-in`); displayed SP-relative (`/id-in`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CseId(String);

impl CseId {
    /// Accepts `/id-in` or `id-in`.
    pub fn parse(s: &str) -> M2mResult<Self> {
        let bare = s.strip_prefix('/').unwrap_or(s);
        check_segment("CSE-ID", bare)?;
        Ok(Self(bare.to_owned()))
    }
    /// The CSE-ID without the leading slash.
    pub fn bare(&self) -> &str {
        &self.0
    }
    /// The SP-relative form, `/id-in`.
    pub fn sp_relative(&self) -> String {
        format!("/{}", self.0)
    }
}

impl fmt::Display for CseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// An M2M Service Provider ID, kept as its FQDN (`m2m.example.com`); displayed `//m2m.example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpId(String);

impl SpId {
    pub fn parse(s: &str) -> M2mResult<Self> {
        let bare = s.strip_prefix("//").unwrap_or(s);
        check_segment("SP-ID", bare)?;
        Ok(Self(bare.to_ascii_lowercase()))
    }
    pub fn fqdn(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}", self.0)
    }
}

/// Which scope a `To` parameter was given in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    CseRelative,
    SpRelative(CseId),
    Absolute(SpId, CseId),
}

/// A parsed `To` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub scope: Scope,
    /// The path inside the CSE, without leading `/`: `cse-in/ae1/cnt` or `cnt4711/la`.
    /// Empty when only a CSE was named (`/id-in`), which addresses its CSEBase.
    pub path: String,
}

impl Address {
    /// Parses a `To` parameter (already percent-decoded).
    pub fn parse(to: &str) -> M2mResult<Self> {
        // `cse-in/` names no resource: its last resource name is empty (TS-0001 clause 7.2),
        // whichever binding carried it.
        if to.len() > 1 && to.ends_with('/') {
            return Err(M2mError::bad_request("the target address ends with '/'"));
        }
        if let Some(rest) = to.strip_prefix("//") {
            let (sp, rest) = rest.split_once('/').unwrap_or((rest, ""));
            let (cse, path) = rest.split_once('/').unwrap_or((rest, ""));
            if cse.is_empty() {
                return Err(M2mError::bad_request(format!(
                    "absolute address '{to}' names no CSE"
                )));
            }
            let addr = Self {
                scope: Scope::Absolute(SpId::parse(sp)?, CseId::parse(cse)?),
                path: path.to_owned(),
            };
            addr.check_path()?;
            Ok(addr)
        } else if let Some(rest) = to.strip_prefix('/') {
            let (cse, path) = rest.split_once('/').unwrap_or((rest, ""));
            let addr = Self {
                scope: Scope::SpRelative(CseId::parse(cse)?),
                path: path.to_owned(),
            };
            addr.check_path()?;
            Ok(addr)
        } else {
            if to.is_empty() {
                return Err(M2mError::bad_request("empty target address"));
            }
            let addr = Self {
                scope: Scope::CseRelative,
                path: to.to_owned(),
            };
            addr.check_path()?;
            Ok(addr)
        }
    }

    fn check_path(&self) -> M2mResult<()> {
        if self.path.is_empty() {
            return Ok(());
        }
        for seg in self.path.split('/') {
            check_segment("resource name", seg)?;
        }
        Ok(())
    }

    /// The CSE this address points at, if it names one.
    pub fn cse(&self) -> Option<&CseId> {
        match &self.scope {
            Scope::CseRelative => None,
            Scope::SpRelative(c) | Scope::Absolute(_, c) => Some(c),
        }
    }

    /// The path segments inside the CSE.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }

    /// Whether two addresses written by entities of the SP `home` name the same resource:
    /// an SP-relative address and the absolute one with the SP-ID `home` are one form each of
    /// the same ID (TS-0001 table 7.2-1). A CSE-relative address equals only a CSE-relative one
    /// (of the same receiver). A structured and an unstructured path of one resource are not
    /// told apart here: only the hosting CSE knows they meet.
    pub fn same_as(&self, other: &Address, home: &SpId) -> bool {
        fn cse<'a>(a: &'a Address, home: &'a SpId) -> Option<(&'a SpId, &'a CseId)> {
            match &a.scope {
                Scope::CseRelative => None,
                Scope::SpRelative(c) => Some((home, c)),
                Scope::Absolute(sp, c) => Some((sp, c)),
            }
        }
        cse(self, home) == cse(other, home) && self.segments().eq(other.segments())
    }
}

/// The form of an originator (`From`) as TS-0001 clause 7.2 distinguishes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginatorKind<'a> {
    /// No From, or `C`/`S` alone: only valid for AE registration.
    Unassigned(Option<char>),
    /// An AE-ID-Stem, CSE-relative (`Cxyz`) or SP-relative (`Sxyz`) as registered here.
    AeStem(&'a str),
    /// An SP-relative ID `/cse-id` or `/cse-id/Cxyz`.
    SpRelative { cse: &'a str, rest: Option<&'a str> },
    /// An absolute ID `//sp/cse-id[/rest]`.
    Absolute {
        sp: &'a str,
        cse: &'a str,
        rest: Option<&'a str>,
    },
    /// Anything else (e.g. an AE-ID that does not start with C or S).
    Other(&'a str),
}

/// Classifies an originator string.
pub fn classify_originator(from: &str) -> OriginatorKind<'_> {
    match from {
        "" => OriginatorKind::Unassigned(None),
        "C" => OriginatorKind::Unassigned(Some('C')),
        "S" => OriginatorKind::Unassigned(Some('S')),
        _ => {
            if let Some(rest) = from.strip_prefix("//") {
                let (sp, rest) = rest.split_once('/').unwrap_or((rest, ""));
                let (cse, tail) = match rest.split_once('/') {
                    Some((c, t)) => (c, Some(t)),
                    None => (rest, None),
                };
                OriginatorKind::Absolute {
                    sp,
                    cse,
                    rest: tail,
                }
            } else if let Some(rest) = from.strip_prefix('/') {
                match rest.split_once('/') {
                    Some((cse, tail)) => OriginatorKind::SpRelative {
                        cse,
                        rest: Some(tail),
                    },
                    None => OriginatorKind::SpRelative {
                        cse: rest,
                        rest: None,
                    },
                }
            } else if from.starts_with('C') || from.starts_with('S') {
                OriginatorKind::AeStem(from)
            } else {
                OriginatorKind::Other(from)
            }
        }
    }
}

/// Validates an originator as a syntactically acceptable ID (no spaces or control characters).
pub fn check_originator(from: &str) -> M2mResult<()> {
    if from.len() > 512 {
        return Err(M2mError::bad_request(
            "originator longer than 512 characters",
        ));
    }
    if let Some(c) = from
        .chars()
        .find(|c| !(is_id_char(*c) || *c == '/' || *c == ':' || *c == '@'))
    {
        return Err(M2mError::bad_request(format!(
            "originator contains '{}'",
            c.escape_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_resource_in_its_sp_relative_and_absolute_forms_is_the_same() {
        let home = SpId::parse("//m2m.example.com").unwrap();
        let same = |a: &str, b: &str| {
            Address::parse(a)
                .unwrap()
                .same_as(&Address::parse(b).unwrap(), &home)
        };
        assert!(same("/id-mn/crs1", "//m2m.example.com/id-mn/crs1"));
        assert!(same("//M2M.example.com/id-mn/crs1", "/id-mn/crs1"));
        assert!(same("/id-mn/cse-mn/ae/crs", "/id-mn/cse-mn/ae/crs"));
        assert!(same("cse-in/ae", "cse-in/ae"));
        // Another SP, another CSE, another path, another scope: not the same.
        assert!(!same("/id-mn/crs1", "//other.example.com/id-mn/crs1"));
        assert!(!same("/id-mn/crs1", "/id-mn2/crs1"));
        assert!(!same("/id-mn/crs1", "/id-mn/crs2"));
        assert!(!same("/id-mn/crs1", "/id-mn/crs1/x"));
        assert!(!same("crs1", "/id-mn/crs1"));
    }

    #[test]
    fn parses_the_three_scopes() {
        let a = Address::parse("cse-in/ae1/cnt").unwrap();
        assert_eq!(a.scope, Scope::CseRelative);
        assert_eq!(a.path, "cse-in/ae1/cnt");

        let a = Address::parse("/id-in/cse-in/ae1").unwrap();
        assert_eq!(a.scope, Scope::SpRelative(CseId::parse("id-in").unwrap()));
        assert_eq!(a.path, "cse-in/ae1");

        let a = Address::parse("//m2m.example.com/id-in/cnt123").unwrap();
        assert_eq!(
            a.scope,
            Scope::Absolute(
                SpId::parse("m2m.example.com").unwrap(),
                CseId::parse("/id-in").unwrap()
            )
        );
        assert_eq!(a.path, "cnt123");

        let a = Address::parse("/id-in").unwrap();
        assert_eq!(a.path, "");
    }

    #[test]
    fn refuses_bad_addresses() {
        for bad in [
            "",
            "//",
            "///x",
            "/",
            "cse-in//x",
            "cse-in/a b",
            "/id-in/cse-in/<x>",
            "//sp",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn classifies_originators() {
        assert_eq!(classify_originator(""), OriginatorKind::Unassigned(None));
        assert_eq!(
            classify_originator("C"),
            OriginatorKind::Unassigned(Some('C'))
        );
        assert_eq!(classify_originator("Cabc"), OriginatorKind::AeStem("Cabc"));
        assert_eq!(
            classify_originator("/id-in/Cabc"),
            OriginatorKind::SpRelative {
                cse: "id-in",
                rest: Some("Cabc")
            }
        );
        assert_eq!(
            classify_originator("/id-mn"),
            OriginatorKind::SpRelative {
                cse: "id-mn",
                rest: None
            }
        );
        assert_eq!(
            classify_originator("//sp.com/id-in/Cabc"),
            OriginatorKind::Absolute {
                sp: "sp.com",
                cse: "id-in",
                rest: Some("Cabc")
            }
        );
        assert_eq!(classify_originator("admin"), OriginatorKind::Other("admin"));
        assert!(check_originator("C a").is_err());
        assert!(check_originator("/id-in/CAdmin").is_ok());
    }
}
