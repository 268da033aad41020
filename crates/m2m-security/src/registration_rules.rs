//! AE registration rules (TS-0001 clause 10.2.2.2 step 003 and clause 9.6.29
//! `<serviceSubscribedAppRule>`; TS-0004 clause 7.3.2.7): which (Credential-ID, App-ID, AE-ID-Stem)
//! combinations may register with this CSE.

use crate::access_control::originator::glob;
use m2m_core::CseId;
use serde::{Deserialize, Serialize};

/// One rule: the short names of `<serviceSubscribedAppRule>` (`apci`, `aai`, `aae`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRule {
    /// applicableCredIDs: the Credential-IDs (with `*` wildcards) of the security associations
    /// this rule applies to. Absent: the rule applies only to registrations without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apci: Option<Vec<String>>,
    /// allowedApp-IDs, with `*` wildcards. Absent or empty: no App-ID is allowed.
    #[serde(default)]
    pub aai: Vec<String>,
    /// allowedAEs: AE-ID-Stems (`C*`, `S*`, `*`, or patterns). Absent or empty: none.
    #[serde(default)]
    pub aae: Vec<String>,
}

/// Which CSEs a registree CSE may list below it in its descendantCSEs (`dcse`, TS-0001 clause
/// 10.2.2.4), as the SP provisioned its gateways. The TS leaves a registree's list its own word;
/// with such rules a registrar keeps of it only the CSEs a rule for that registree names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescendantRule {
    /// The registree's CSE-ID, SP-relative (`/id-mn`), with `*` wildcards.
    pub registree: String,
    /// The CSE-IDs it may list, SP-relative (`/id-lock-*`), with `*` wildcards; `{registree}`
    /// stands for the registree's own CSE-ID without its `/` (`/{registree}-*`: the CSEs named
    /// after it). The wildcards of `registree` and `cses` are matched each on its own: only
    /// `{registree}` ties a descendant to the registree that lists it.
    pub cses: Vec<String>,
}

/// What `{registree}` in a `cses` pattern stands for.
const REGISTREE: &str = "{registree}";

impl DescendantRule {
    /// Whether this rule lets `registree` list `descendant`.
    pub fn admits(&self, registree: &CseId, descendant: &CseId) -> bool {
        glob(&self.registree, &registree.sp_relative())
            && self.cses.iter().any(|p| {
                glob(
                    &p.replace(REGISTREE, registree.bare()),
                    &descendant.sp_relative(),
                )
            })
    }

    /// Checks the rule itself: SP-relative CSE-ID patterns (one leading `/`), one at least.
    pub fn validate(&self) -> Result<(), String> {
        if self.cses.is_empty() {
            return Err("cses lists no CSE-ID".into());
        }
        if self.registree.contains(REGISTREE) {
            return Err(format!("{REGISTREE} stands in cses only"));
        }
        for p in std::iter::once(&self.registree).chain(&self.cses) {
            let bare = p.strip_prefix('/').unwrap_or("");
            if bare.is_empty() || bare.contains('/') {
                return Err(format!(
                    "'{p}' is not an SP-relative CSE-ID pattern (/id-mn, /id-lock-*)"
                ));
            }
        }
        Ok(())
    }
}

/// Whether `registree` may list `descendant` under `rules`: any CSE when there are none.
pub fn descendant_admitted(
    rules: &[DescendantRule],
    registree: &CseId,
    descendant: &CseId,
) -> bool {
    rules.is_empty() || rules.iter().any(|r| r.admits(registree, descendant))
}

/// What a registering AE presents.
#[derive(Clone, Copy, Debug)]
pub struct Registration<'a> {
    /// The Credential-ID of the security association the request came over, if any.
    pub credential_id: Option<&'a str>,
    pub app_id: &'a str,
    /// The AE-ID-Stem the AE will have (requested or assigned).
    pub ae_id_stem: &'a str,
}

fn any_match(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| glob(p, value))
}

impl AppRule {
    /// Whether this rule admits the registration.
    pub fn admits(&self, reg: &Registration<'_>) -> bool {
        let credential_ok = match (&self.apci, reg.credential_id) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(patterns), Some(cred)) => any_match(patterns, cred),
        };
        credential_ok && any_match(&self.aai, reg.app_id) && any_match(&self.aae, reg.ae_id_stem)
    }

    /// Checks the rule itself (TS-0004 clause 7.4.29.2.1: App-ID patterns start with `*`, R or N).
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.aai {
            if !(a.starts_with('*') || a.starts_with('R') || a.starts_with('N')) {
                return Err(format!(
                    "allowedApp-IDs entry '{a}' must start with '*', 'R' or 'N'"
                ));
            }
        }
        Ok(())
    }
}

/// Whether any of the rules admits the registration.
pub fn admitted<'r>(rules: impl IntoIterator<Item = &'r AppRule>, reg: &Registration<'_>) -> bool {
    rules.into_iter().any(|r| r.admits(reg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(apci: Option<&[&str]>, aai: &[&str], aae: &[&str]) -> AppRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AppRule {
            apci: apci.map(v),
            aai: v(aai),
            aae: v(aae),
        }
    }

    fn reg<'a>(cred: Option<&'a str>, app: &'a str, ae: &'a str) -> Registration<'a> {
        Registration {
            credential_id: cred,
            app_id: app,
            ae_id_stem: ae,
        }
    }

    #[test]
    fn descendant_rules_name_registrees_and_their_cses() {
        let id = |s: &str| CseId::parse(s).unwrap();
        let rules = vec![
            DescendantRule {
                registree: "/id-mn".into(),
                cses: vec!["/id-lock-*".into(), "/id-mn3".into()],
            },
            DescendantRule {
                registree: "/gw-*".into(),
                cses: vec!["/{registree}-sub*".into()],
            },
            DescendantRule {
                registree: "/hub-*".into(),
                cses: vec!["/hub-*-sub".into()],
            },
        ];
        for (registree, cse, ok) in [
            ("/id-mn", "/id-lock-1", true),
            ("/id-mn", "/id-mn3", true),
            ("/id-mn", "/id-mn4", false),
            ("/id-mn2", "/id-lock-1", false),
            ("/gw-7", "/gw-7-sub", true),
            ("/gw-7", "/gw-7-sub2", true),
            ("/gw-7", "/gw-8-sub", false),
            ("/gw-7", "/gw-70-sub", false),
            ("/gw-7", "/id-lock-1", false),
            // Without {registree} the two wildcards are not tied: any hub lists any hub's.
            ("/hub-1", "/hub-2-sub", true),
        ] {
            assert_eq!(
                descendant_admitted(&rules, &id(registree), &id(cse)),
                ok,
                "{registree} listing {cse}"
            );
        }
        assert!(
            descendant_admitted(&[], &id("/x"), &id("/y")),
            "no rules: any"
        );
        for bad in ["id-mn", "//sp/id-mn", "/", "/a/b"] {
            let r = DescendantRule {
                registree: bad.into(),
                cses: vec!["/x".into()],
            };
            assert!(r.validate().is_err(), "{bad}");
        }
        let empty = DescendantRule {
            registree: "/id-mn".into(),
            cses: vec![],
        };
        assert!(empty.validate().is_err());
    }

    #[test]
    fn wildcards() {
        for (p, v, ok) in [
            ("*", "anything", true),
            ("C*", "Cabc", true),
            ("C*", "Sabc", false),
            ("C123*X", "C123abcX", true),
            ("C123*X", "C123abcY", false),
            ("C123*X", "C123X", true),
            ("C1*2*3", "C1a2b3", true),
            ("C1*2*3", "C13", false),
            ("Nlock", "Nlock", true),
            ("Nlock", "Nlocks", false),
            ("", "", true),
        ] {
            assert_eq!(glob(p, v), ok, "{p} vs {v}");
        }
    }

    #[test]
    fn rule_decisions() {
        let open = rule(None, &["*"], &["C*", "S*"]);
        assert!(open.admits(&reg(None, "Nlock", "Cabc")));
        assert!(open.admits(&reg(None, "Rlock", "Sabc")));
        assert!(
            !open.admits(&reg(None, "Nlock", "Xabc")),
            "stem not allowed"
        );
        assert!(
            !open.admits(&reg(Some("12-key@x.com"), "Nlock", "Cabc")),
            "no apci: only without SA"
        );

        let psk = rule(
            Some(&["12-*@in.provider.com"]),
            &["Ndoorlock"],
            &["Clock-AE*"],
        );
        assert!(psk.admits(&reg(
            Some("12-AE123-Lock@in.provider.com"),
            "Ndoorlock",
            "Clock-AE1"
        )));
        assert!(!psk.admits(&reg(
            Some("12-AE123-Lock@evil.com"),
            "Ndoorlock",
            "Clock-AE1"
        )));
        assert!(
            !psk.admits(&reg(None, "Ndoorlock", "Clock-AE1")),
            "needs an association"
        );
        assert!(!psk.admits(&reg(
            Some("12-AE123-Lock@in.provider.com"),
            "Nother",
            "Clock-AE1"
        )));
        assert!(!psk.admits(&reg(
            Some("12-AE123-Lock@in.provider.com"),
            "Ndoorlock",
            "Cphone"
        )));

        let empty = rule(None, &[], &[]);
        assert!(
            !empty.admits(&reg(None, "Nx", "Cx")),
            "empty lists allow nothing"
        );
        assert!(
            !admitted(&[], &reg(None, "Nx", "Cx")),
            "no rule, no registration"
        );
        assert!(admitted(&[empty, open], &reg(None, "Nx", "Cx")));
    }

    #[test]
    fn rule_validation() {
        assert!(rule(None, &["*", "Rx*", "Nlock"], &[]).validate().is_ok());
        assert!(rule(None, &["lock"], &[]).validate().is_err());
    }
}
