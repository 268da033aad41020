//! Role-IDs and Token-IDs (TS-0001 clause 7.1.14; TS-0004 table 6.3.3-1, m2m:roleID and
//! m2m:tokenID): `issuerRelativeID@issuerID`, the relative part letters, digits, `.`, `_` and `-`,
//! the issuer an FQDN in lower case. Equal when their text is equal.

use crate::error::{M2mError, M2mResult};
use std::fmt;

/// Checks `issuerRelativeID@issuerID`; what is wrong otherwise.
fn check(kind: &str, s: &str) -> Result<(), String> {
    let (relative, issuer) = s
        .split_once('@')
        .ok_or_else(|| format!("a {kind} is issuerRelativeID@issuerID"))?;
    if relative.is_empty()
        || !relative
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "the issuer-relative part of a {kind} holds letters, digits, '.', '_' and '-'"
        ));
    }
    let labels: Vec<&str> = issuer.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if labels.len() < 2 || issuer.len() > 253 || !labels.iter().all(label_ok) {
        return Err(format!(
            "the issuer of a {kind} is a fully qualified domain name in lower case"
        ));
    }
    Ok(())
}

macro_rules! issued_id {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A ", $kind, " (m2m:", stringify!($name), " of TS-0004 table 6.3.3-1).")]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses the text; 4000 BAD_REQUEST naming what is wrong.
            pub fn parse(s: &str) -> M2mResult<Self> {
                check($kind, s).map_err(M2mError::bad_request)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether `s` is one (an accessControlOriginators entry may be).
            pub fn is(s: &str) -> bool {
                check($kind, s).is_ok()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

issued_id!(RoleId, "Role-ID");
issued_id!(TokenId, "Token-ID");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_table_6_3_3_1() {
        for ok in [
            "1234abcd@role-issuer.com",
            "door.opener_1-a@roles.m2m.example.com",
        ] {
            assert_eq!(RoleId::parse(ok).unwrap().as_str(), ok);
            assert!(TokenId::is(ok));
        }
        for bad in [
            "",
            "abcd",
            "@role-issuer.com",
            "ab cd@role-issuer.com",
            "ab/cd@role-issuer.com",
            "abcd@Role-Issuer.com",
            "abcd@localhost",
            "abcd@-x.com",
            "abcd@x..com",
            "a@b@c.com",
            "Clock1",
            "/id-in/Clock1",
        ] {
            assert!(RoleId::parse(bad).is_err(), "{bad}");
        }
    }
}
