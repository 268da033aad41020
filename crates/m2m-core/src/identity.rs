//! Who an entity is (TS-0001 clause 7.2, table 7.2-1): CSE-IDs and AE-IDs in every form an
//! originator may use, parsed once at the edge into one normalized [`EntityId`] and compared only
//! as values of that type.
//!
//! | given | meaning | normalized |
//! |---|---|---|
//! | `Cxyz` | CSE-relative AE-ID: a C-stem assigned by the CSE reading it | `//<sp>/<this cse>/Cxyz` |
//! | `Sxyz` | AE-ID-Stem assigned by the SP (unique in the SP) | `//<sp>/Sxyz` |
//! | `/cse` | SP-relative CSE-ID | `//<sp>/cse` |
//! | `/cse/Cxyz` | SP-relative AE-ID of a C-stem AE registered with `cse` | `//<sp>/cse/Cxyz` |
//! | `/Sxyz` | SP-relative AE-ID of an S-stem AE | `//<sp>/Sxyz` |
//! | `/cse/Sxyz` | an S-stem named with a CSE in front (unique in the SP without it) | `//<sp>/Sxyz` |
//! | `//sp/...` | the absolute forms of all of the above | `//<sp lowercased>/...` |
//!
//! Decisions where the specification leaves room (docs/SECURITY.md, "The identity model"):
//! - One case rule: the SP-ID is a domain name and compared without case (kept lowercase); CSE-IDs and
//!   AE-ID-Stems are compared exactly, case included.
//! - An SP-relative ID with one segment that starts with `S` is an AE-ID (table 7.2-1 gives `/S190XX7T`),
//!   never a CSE-ID; so a CSE-ID must not start with `S` ([`CseId::check_not_ae_form`]).
//! - Anything else (bare names such as `admin`, more segments, empty segments, a `*`) is not an entity.

use crate::error::{M2mError, M2mResult};
use crate::id::{check_segment, CseId, SpId};
use std::fmt;

/// Longest originator accepted, in bytes.
pub const MAX_ID_LEN: usize = 512;

/// Who assigned an AE-ID-Stem: its registrar CSE (`C`) or the M2M Service Provider (`S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StemKind {
    /// `C...`: assigned by the registrar CSE, unique under it.
    Cse,
    /// `S...`: assigned by the SP, unique in the SP.
    Sp,
}

impl StemKind {
    /// The letter a stem of this kind starts with.
    pub fn letter(self) -> char {
        match self {
            StemKind::Cse => 'C',
            StemKind::Sp => 'S',
        }
    }

    fn of(s: &str) -> Option<StemKind> {
        match s.as_bytes().first() {
            Some(b'C') => Some(StemKind::Cse),
            Some(b'S') => Some(StemKind::Sp),
            _ => None,
        }
    }
}

/// An AE-ID-Stem: `C` or `S` and at least one more unreserved character.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AeStem(String);

impl AeStem {
    pub fn parse(s: &str) -> M2mResult<AeStem> {
        if StemKind::of(s).is_none() || s.len() < 2 {
            return Err(M2mError::bad_request(
                "an AE-ID-Stem starts with C or S and names the AE",
            ));
        }
        check_segment("AE-ID-Stem", s)?;
        Ok(AeStem(s.to_owned()))
    }

    pub fn kind(&self) -> StemKind {
        StemKind::of(&self.0).expect("checked at parse")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeStem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CSE whose point of view relative IDs are read from: its SP and CSE-ID. Without a CSE (the MAF,
/// the MEF), CSE-relative AE-IDs (`Cxyz`) cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Home {
    pub sp: SpId,
    pub cse: Option<CseId>,
}

impl Home {
    /// The point of view of the CSE `cse` in `sp`.
    pub fn cse(sp: SpId, cse: CseId) -> Home {
        Home { sp, cse: Some(cse) }
    }

    /// The point of view of an SP-wide service (MAF, MEF): only SP-relative and absolute IDs.
    pub fn sp(sp: SpId) -> Home {
        Home { sp, cse: None }
    }
}

/// One entity, normalized: a CSE or an AE, with the SP it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityId {
    /// A CSE-ID.
    Cse { sp: SpId, cse: CseId },
    /// An AE whose stem (`C...`) its registrar CSE assigned.
    CseAe {
        sp: SpId,
        registrar: CseId,
        stem: AeStem,
    },
    /// An AE whose stem (`S...`) the SP assigned.
    SpAe { sp: SpId, stem: AeStem },
}

fn not_an_id() -> M2mError {
    M2mError::bad_request("the originator is not an AE-ID or CSE-ID (TS-0001 clause 7.2)")
}

impl EntityId {
    /// Reads an AE-ID or CSE-ID in any form of TS-0001 table 7.2-1, relative IDs from `home`.
    pub fn parse(id: &str, home: &Home) -> M2mResult<EntityId> {
        check_length(id)?;
        if let Some(rest) = id.strip_prefix("//") {
            let (sp, rest) = rest.split_once('/').ok_or_else(not_an_id)?;
            let sp = SpId::parse(sp).map_err(|_| not_an_id())?;
            Self::parse_sp_relative(sp, rest)
        } else if let Some(rest) = id.strip_prefix('/') {
            Self::parse_sp_relative(home.sp.clone(), rest)
        } else {
            let stem = AeStem::parse(id).map_err(|_| not_an_id())?;
            match stem.kind() {
                StemKind::Sp => Ok(EntityId::SpAe {
                    sp: home.sp.clone(),
                    stem,
                }),
                StemKind::Cse => {
                    let registrar = home.cse.clone().ok_or_else(|| {
                        M2mError::bad_request(
                            "a CSE-relative AE-ID needs its CSE: use the SP-relative form /cse-id/C...",
                        )
                    })?;
                    Ok(EntityId::CseAe {
                        sp: home.sp.clone(),
                        registrar,
                        stem,
                    })
                }
            }
        }
    }

    /// `rest` is what follows `//sp/` or `/`.
    fn parse_sp_relative(sp: SpId, rest: &str) -> M2mResult<EntityId> {
        let mut parts = rest.split('/');
        let first = parts.next().unwrap_or("");
        let second = parts.next();
        if parts.next().is_some() {
            return Err(not_an_id());
        }
        match second {
            None if first.starts_with('S') => Ok(EntityId::SpAe {
                sp,
                stem: AeStem::parse(first).map_err(|_| not_an_id())?,
            }),
            None => Ok(EntityId::Cse {
                sp,
                cse: CseId::parse(first).map_err(|_| not_an_id())?,
            }),
            Some(stem) => {
                let registrar = CseId::parse(first).map_err(|_| not_an_id())?;
                if first.starts_with('S') {
                    return Err(not_an_id());
                }
                let stem = AeStem::parse(stem).map_err(|_| not_an_id())?;
                Ok(match stem.kind() {
                    StemKind::Cse => EntityId::CseAe {
                        sp,
                        registrar,
                        stem,
                    },
                    // S-stems are unique in the SP: the CSE in front adds nothing.
                    StemKind::Sp => EntityId::SpAe { sp, stem },
                })
            }
        }
    }

    /// The CSE `cse` of `sp`.
    pub fn cse(sp: SpId, cse: CseId) -> EntityId {
        EntityId::Cse { sp, cse }
    }

    /// The AE with `stem` registered at the CSE `home` names (a C-stem under it, an S-stem in its SP).
    pub fn ae_at(home: &Home, stem: AeStem) -> M2mResult<EntityId> {
        match stem.kind() {
            StemKind::Sp => Ok(EntityId::SpAe {
                sp: home.sp.clone(),
                stem,
            }),
            StemKind::Cse => Ok(EntityId::CseAe {
                sp: home.sp.clone(),
                registrar: home.cse.clone().ok_or_else(not_an_id)?,
                stem,
            }),
        }
    }

    pub fn sp(&self) -> &SpId {
        match self {
            EntityId::Cse { sp, .. } | EntityId::CseAe { sp, .. } | EntityId::SpAe { sp, .. } => sp,
        }
    }

    pub fn is_cse(&self) -> bool {
        matches!(self, EntityId::Cse { .. })
    }

    pub fn is_ae(&self) -> bool {
        !self.is_cse()
    }

    /// The CSE-ID of a CSE.
    pub fn cse_id(&self) -> Option<&CseId> {
        match self {
            EntityId::Cse { cse, .. } => Some(cse),
            _ => None,
        }
    }

    /// The AE-ID-Stem of an AE.
    pub fn stem(&self) -> Option<&AeStem> {
        match self {
            EntityId::CseAe { stem, .. } | EntityId::SpAe { stem, .. } => Some(stem),
            EntityId::Cse { .. } => None,
        }
    }

    /// The registrar of a C-stem AE (the CSE that assigned it).
    pub fn registrar(&self) -> Option<&CseId> {
        match self {
            EntityId::CseAe { registrar, .. } => Some(registrar),
            _ => None,
        }
    }

    /// Whether this is the CSE `home` names itself.
    pub fn is_home_cse(&self, home: &Home) -> bool {
        match self {
            EntityId::Cse { sp, cse } => *sp == home.sp && Some(cse) == home.cse.as_ref(),
            _ => false,
        }
    }

    /// The stem of an AE that belongs to the CSE `home` names: a C-stem it assigned, or an S-stem of its
    /// SP (which of those are registered there is for the store to say).
    pub fn local_stem(&self, home: &Home) -> Option<&AeStem> {
        match self {
            EntityId::CseAe {
                sp,
                registrar,
                stem,
            } if *sp == home.sp && Some(registrar) == home.cse.as_ref() => Some(stem),
            EntityId::SpAe { sp, stem } if *sp == home.sp => Some(stem),
            _ => None,
        }
    }

    /// The segments of the absolute form after `//`: SP-ID, then CSE-ID and/or AE-ID-Stem.
    pub fn segments(&self) -> Vec<&str> {
        match self {
            EntityId::Cse { sp, cse } => vec![sp.fqdn(), cse.bare()],
            EntityId::CseAe {
                sp,
                registrar,
                stem,
            } => vec![sp.fqdn(), registrar.bare(), stem.as_str()],
            EntityId::SpAe { sp, stem } => vec![sp.fqdn(), stem.as_str()],
        }
    }

    /// The absolute form, `//sp/cse`, `//sp/cse/Cxyz` or `//sp/Sxyz`.
    pub fn absolute(&self) -> String {
        format!("//{}", self.segments().join("/"))
    }

    /// The SP-relative form, `/cse`, `/cse/Cxyz` or `/Sxyz`.
    pub fn sp_relative(&self) -> String {
        format!("/{}", self.segments()[1..].join("/"))
    }

    /// The form a From takes when it leaves `home` for another CSE: SP-relative inside the SP,
    /// absolute outside it (TS-0001 table 7.2-1, "rules of use").
    pub fn as_seen_from(&self, home: &Home) -> String {
        if *self.sp() == home.sp {
            self.sp_relative()
        } else {
            self.absolute()
        }
    }

    /// The shortest form that `home` reads back as this entity: the bare stem of a local AE.
    pub fn shortest_from(&self, home: &Home) -> String {
        match self.local_stem(home) {
            Some(stem) => stem.to_string(),
            None => self.as_seen_from(home),
        }
    }
}

impl fmt::Display for EntityId {
    /// The absolute form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.absolute())
    }
}

fn check_length(id: &str) -> M2mResult<()> {
    if id.len() > MAX_ID_LEN {
        return Err(M2mError::bad_request(format!(
            "originator longer than {MAX_ID_LEN} characters"
        )));
    }
    Ok(())
}

/// The From of a request: an entity, or (only to register an AE) no AE-ID yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Originator {
    /// No From, or `C`/`S` alone: the registrar or the SP assigns the AE-ID (TS-0001 10.2.2.2).
    Unassigned(Option<StemKind>),
    Entity(EntityId),
}

impl Originator {
    /// Reads a From parameter (`None`: absent).
    pub fn parse(from: Option<&str>, home: &Home) -> M2mResult<Originator> {
        match from {
            None | Some("") => Ok(Originator::Unassigned(None)),
            Some("C") => Ok(Originator::Unassigned(Some(StemKind::Cse))),
            Some("S") => Ok(Originator::Unassigned(Some(StemKind::Sp))),
            Some(id) => EntityId::parse(id, home).map(Originator::Entity),
        }
    }

    pub fn entity(&self) -> Option<&EntityId> {
        match self {
            Originator::Entity(e) => Some(e),
            Originator::Unassigned(_) => None,
        }
    }
}

impl fmt::Display for Originator {
    /// The entity's absolute form, or what an unassigned originator asks for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Originator::Entity(e) => write!(f, "{e}"),
            Originator::Unassigned(None) => f.write_str("(no AE-ID)"),
            Originator::Unassigned(Some(k)) => write!(f, "{}", k.letter()),
        }
    }
}

impl CseId {
    /// A CSE-ID must not read as an SP-relative AE-ID (`/Sxyz`): see the module documentation.
    pub fn check_not_ae_form(&self) -> M2mResult<()> {
        if self.bare().starts_with('S') {
            return Err(M2mError::bad_request(
                "a CSE-ID must not start with 'S': /S... is an SP-relative AE-ID (TS-0001 table 7.2-1)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Home {
        Home::cse(
            SpId::parse("m2m.example.com").unwrap(),
            CseId::parse("/id-in").unwrap(),
        )
    }

    fn abs(id: &str) -> Option<String> {
        EntityId::parse(id, &home()).ok().map(|e| e.absolute())
    }

    #[test]
    fn every_form_normalizes_to_one_absolute_id() {
        let cases = [
            ("Cae1", Some("//m2m.example.com/id-in/Cae1")),
            ("/id-in/Cae1", Some("//m2m.example.com/id-in/Cae1")),
            (
                "//m2m.example.com/id-in/Cae1",
                Some("//m2m.example.com/id-in/Cae1"),
            ),
            (
                "//M2M.Example.COM/id-in/Cae1",
                Some("//m2m.example.com/id-in/Cae1"),
            ),
            ("Sae1", Some("//m2m.example.com/Sae1")),
            ("/Sae1", Some("//m2m.example.com/Sae1")),
            ("//m2m.example.com/Sae1", Some("//m2m.example.com/Sae1")),
            ("/id-mn/Sae1", Some("//m2m.example.com/Sae1")),
            ("/id-mn", Some("//m2m.example.com/id-mn")),
            ("/CSE090112", Some("//m2m.example.com/CSE090112")),
            ("//other.org/id-mn", Some("//other.org/id-mn")),
            ("//other.org/id-mn/Cx", Some("//other.org/id-mn/Cx")),
            ("/id-mn/Cx", Some("//m2m.example.com/id-mn/Cx")),
        ];
        for (id, want) in cases {
            assert_eq!(abs(id).as_deref(), want, "{id:?}");
        }
    }

    #[test]
    fn what_is_not_an_entity() {
        for bad in [
            "",
            "C",
            "S",
            "admin",
            "id-in",
            "cae1",
            "sae1",
            "/",
            "//",
            "///x",
            "//m2m.example.com",
            "//m2m.example.com/",
            "/id-in/",
            "/id-in//Cae",
            "/id-in/Cae/cnt",
            "//sp/id-in/Cae/x",
            "/id-in/xae",
            "/Sx/Cy",
            "C*",
            "/id-in/C*",
            "Cae 1",
            "Cae\n",
            "/S",
            "/id-in/S",
        ] {
            assert!(EntityId::parse(bad, &home()).is_err(), "{bad:?} accepted");
        }
        let long = format!("C{}", "a".repeat(MAX_ID_LEN));
        assert!(EntityId::parse(&long, &home()).is_err());
    }

    #[test]
    fn s_stems_are_aes_never_cses() {
        let e = EntityId::parse("/Sabc", &home()).unwrap();
        assert!(e.is_ae() && !e.is_cse());
        assert_eq!(e.stem().map(AeStem::as_str), Some("Sabc"));
        assert!(CseId::parse("/Sgw").unwrap().check_not_ae_form().is_err());
        assert!(CseId::parse("/sgw").unwrap().check_not_ae_form().is_ok());
        assert!(CseId::parse("/CSE1").unwrap().check_not_ae_form().is_ok());
    }

    #[test]
    fn cse_ids_and_stems_keep_their_case() {
        let a = EntityId::parse("/id-in/Cae1", &home()).unwrap();
        let b = EntityId::parse("/ID-IN/Cae1", &home()).unwrap();
        let c = EntityId::parse("/id-in/CAE1", &home()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            EntityId::parse("//M2M.EXAMPLE.COM/id-in/Cae1", &home()).unwrap()
        );
    }

    #[test]
    fn a_cse_never_equals_the_aes_under_it() {
        let cse = EntityId::parse("/id-in", &home()).unwrap();
        let ae = EntityId::parse("Cae1", &home()).unwrap();
        assert_ne!(cse, ae);
        assert!(cse.is_home_cse(&home()));
        assert!(!ae.is_home_cse(&home()));
    }

    #[test]
    fn local_stems() {
        let h = home();
        let local = |id: &str| {
            EntityId::parse(id, &h)
                .unwrap()
                .local_stem(&h)
                .map(|s| s.to_string())
        };
        assert_eq!(local("Cae1").as_deref(), Some("Cae1"));
        assert_eq!(local("/id-in/Cae1").as_deref(), Some("Cae1"));
        assert_eq!(local("/Sae1").as_deref(), Some("Sae1"));
        assert_eq!(local("/id-mn/Cae1"), None);
        assert_eq!(local("//other.org/id-in/Cae1"), None);
        assert_eq!(local("//other.org/Sae1"), None);
        assert_eq!(local("/id-in"), None);
    }

    #[test]
    fn relative_forms_need_a_cse_for_c_stems() {
        let sp_only = Home::sp(SpId::parse("m2m.example.com").unwrap());
        assert!(EntityId::parse("Cae1", &sp_only).is_err());
        assert!(EntityId::parse("/id-in/Cae1", &sp_only).is_ok());
        assert!(EntityId::parse("Sae1", &sp_only).is_ok());
    }

    #[test]
    fn forms_leaving_the_cse() {
        let h = home();
        let e = EntityId::parse("Cae1", &h).unwrap();
        assert_eq!(e.as_seen_from(&h), "/id-in/Cae1");
        assert_eq!(e.shortest_from(&h), "Cae1");
        let other = Home::cse(
            SpId::parse("other.org").unwrap(),
            CseId::parse("/x").unwrap(),
        );
        assert_eq!(e.as_seen_from(&other), "//m2m.example.com/id-in/Cae1");
        for id in ["Cae1", "/Sae1", "/id-mn", "//other.org/id-mn/Cx"] {
            let e = EntityId::parse(id, &h).unwrap();
            for form in [e.absolute(), e.as_seen_from(&h), e.shortest_from(&h)] {
                assert_eq!(EntityId::parse(&form, &h).unwrap(), e, "{id} as {form}");
            }
        }
    }

    #[test]
    fn originators() {
        let h = home();
        assert_eq!(
            Originator::parse(None, &h).unwrap(),
            Originator::Unassigned(None)
        );
        assert_eq!(
            Originator::parse(Some("C"), &h).unwrap(),
            Originator::Unassigned(Some(StemKind::Cse))
        );
        assert_eq!(
            Originator::parse(Some("S"), &h).unwrap(),
            Originator::Unassigned(Some(StemKind::Sp))
        );
        assert!(Originator::parse(Some("admin"), &h).is_err());
        assert!(Originator::parse(Some("Cx"), &h)
            .unwrap()
            .entity()
            .is_some());
    }
}
