//! Direct dynamic authorization (TS-0003 clause 7.3.2.2; TS-0004 clause 7.5.1.2.10): what a
//! Hosting CSE asks a Dynamic Authorization Server (DAS) when no access control policy grants a
//! request, what the DAS answers, and the DAS's own policy.
//!
//! The exchange is a NOTIFY from the Hosting CSE to an address of `dap` whose content is
//! `m2m:securityInfo` (`m2m:seci`): `sit` 1 with a `dreq` (m2m:dynAuthDasRequest, TS-0004 clause
//! 6.3.5.46), answered by `sit` 2 with a `dres` (m2m:dynAuthDasResponse, clause 6.3.5.47) whose
//! `dai` carries the granted privileges (`gp`, an m2m:setOfAcrs) and their lifetime (`pl`). No
//! `dai` is a refusal.
//!
//! The policy of `m2m das` is a list of [`Rule`]s: the first rule that matches the originator, the
//! targeted resource and the operation grants that operation to that originator for the rule's
//! lifetime; no rule, no grant.

use crate::access_control::AccessOperation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// securityInfoType (TS-0004 clause 6.3.4.2.35): Dynamic Authorization Request.
pub const SIT_REQUEST: u64 = 1;
/// securityInfoType: Dynamic Authorization Response.
pub const SIT_RESPONSE: u64 = 2;

/// m2m:dynAuthDasRequest: the facts of the request the Hosting CSE could not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DasRequest {
    /// originator: the request's From, SP-relative.
    #[serde(rename = "or")]
    pub originator: String,
    /// targetedResourceType (sent always: TS-0004 7.5.1.2.10 calls it mandatory).
    #[serde(rename = "trt", default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<u16>,
    /// operation: the m2m:operation code (1 CREATE ... 5 NOTIFY).
    #[serde(rename = "op")]
    pub operation: u8,
    /// targetedResourceID: the SP-relative structured address of the resource whose policies
    /// decide (a CREATE's parent).
    #[serde(rename = "trid")]
    pub target: String,
    /// originatorIP: `{"ip4": ...}` or `{"ip6": ...}`.
    #[serde(rename = "oip", default, skip_serializing_if = "Option::is_none")]
    pub originator_ip: Option<Value>,
    /// requestTimestamp: when the Hosting CSE received the request.
    #[serde(rename = "rts", default, skip_serializing_if = "Option::is_none")]
    pub request_timestamp: Option<String>,
    /// proposedPrivilegesLifetime: the consultation resource's `dal`.
    #[serde(rename = "ppl", default, skip_serializing_if = "Option::is_none")]
    pub proposed_lifetime: Option<String>,
}

impl DasRequest {
    /// The NOTIFY content: `{"m2m:seci": {"sit": 1, "dreq": ...}}`.
    pub fn to_content(&self) -> Value {
        json!({ "m2m:seci": { "sit": SIT_REQUEST, "dreq": self } })
    }

    /// The request in a NOTIFY content, or why it is none.
    pub fn from_content(pc: &Value) -> Result<DasRequest, String> {
        let seci = pc
            .get("m2m:seci")
            .ok_or("the content is not a m2m:securityInfo")?;
        if seci.get("sit").and_then(Value::as_u64) != Some(SIT_REQUEST) {
            return Err("securityInfoType is not 1 (Dynamic Authorization Request)".into());
        }
        let dreq = seci.get("dreq").ok_or("no dasRequest")?;
        serde_json::from_value(dreq.clone()).map_err(|e| format!("dasRequest: {e}"))
    }

    /// The operation asked for, as an access operation.
    pub fn access_operation(&self) -> Option<AccessOperation> {
        Some(match self.operation {
            1 => AccessOperation::Create,
            2 => AccessOperation::Retrieve,
            3 => AccessOperation::Update,
            4 => AccessOperation::Delete,
            5 => AccessOperation::Notify,
            _ => return None,
        })
    }
}

/// What a DAS answered.
#[derive(Debug, Clone, PartialEq)]
pub enum DasAnswer {
    /// dynamicACPInfo: the privileges (m2m:setOfAcrs JSON) and their lifetime as given
    /// (m2m:absRelTimestamp: an absolute timestamp, or milliseconds from now).
    Granted {
        privileges: Value,
        lifetime: Option<String>,
    },
    /// Tokens (m2m:dynAuthJWT) issued for the originator, which the Hosting CSE verifies and
    /// decides with (TS-0003 clause 7.3.2.2 steps 3.1 and 4.1).
    /// (`Debug` shows how many, never them.)
    Tokens(m2m_core::Tokens),
    /// A response without dynamicACPInfo or tokens.
    Refused,
}

/// Tokens an answer may carry at most.
pub const MAX_ANSWER_TOKENS: usize = 4;

impl DasAnswer {
    /// The NOTIFY response content: `{"m2m:seci": {"sit": 2, "dres": {...}}}`.
    pub fn to_content(&self) -> Value {
        let dres = match self {
            DasAnswer::Granted {
                privileges,
                lifetime,
            } => {
                let mut dai = json!({ "gp": privileges });
                if let Some(pl) = lifetime {
                    dai["pl"] = json!(pl);
                }
                json!({ "dai": dai })
            }
            DasAnswer::Tokens(tokens) => json!({ "tkns": tokens.0 }),
            DasAnswer::Refused => json!({}),
        };
        json!({ "m2m:seci": { "sit": SIT_RESPONSE, "dres": dres } })
    }

    /// The answer in a response content. A content that is not a Dynamic Authorization Response
    /// is an error (the Hosting CSE then grants nothing, TS-0004 7.5.1.2.10); no content at all
    /// is a refusal (TS-0001 11.5.2 step 3.2: the content is present only with a grant or token).
    pub fn from_content(pc: Option<&Value>) -> Result<DasAnswer, String> {
        let Some(pc) = pc else {
            return Ok(DasAnswer::Refused);
        };
        let seci = pc
            .get("m2m:seci")
            .ok_or("the response is not a m2m:securityInfo")?;
        if seci.get("sit").and_then(Value::as_u64) != Some(SIT_RESPONSE) {
            return Err("securityInfoType is not 2 (Dynamic Authorization Response)".into());
        }
        if let Some(tkns) = seci.get("dres").and_then(|d| d.get("tkns")) {
            let tokens: Vec<String> = tkns
                .as_array()
                .ok_or("tokens is not a list")?
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .ok_or("a token is not a string")
                })
                .collect::<Result<_, _>>()?;
            if tokens.is_empty() || tokens.len() > MAX_ANSWER_TOKENS {
                return Err(format!("1 to {MAX_ANSWER_TOKENS} tokens"));
            }
            return Ok(DasAnswer::Tokens(m2m_core::Tokens(tokens)));
        }
        let Some(dai) = seci.get("dres").and_then(|d| d.get("dai")) else {
            return Ok(DasAnswer::Refused);
        };
        let Some(gp) = dai.get("gp") else {
            return Ok(DasAnswer::Refused);
        };
        let lifetime = match dai.get("pl") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err("privilegesLifetime is not an absRelTimestamp".into()),
        };
        Ok(DasAnswer::Granted {
            privileges: gp.clone(),
            lifetime,
        })
    }
}

/// One rule of a DAS policy: who may do what on which resources, for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Originators (SP-relative AE-IDs or CSE-IDs as the Hosting CSE names them, absolute for
    /// another SP's), [`wildcard`] patterns; `["*"]` is anyone.
    pub originators: Vec<String>,
    /// Targeted resources (SP-relative structured addresses), [`wildcard`] patterns:
    /// `/id-in/cse-in/door/**` is the door and everything below it.
    pub targets: Vec<String>,
    /// The operations granted: create, retrieve, update, delete, notify, discover.
    pub operations: Vec<String>,
    /// How long the grant holds, in seconds.
    pub lifetime_seconds: u64,
    /// Answer with a token for the originator (the rule's targets and operations, signed with
    /// the DAS's token key, the Hosting CSE its audience) instead of privileges.
    #[serde(default)]
    pub token: bool,
}

impl Rule {
    /// The acop bits of the rule's operations, or the name that is no operation.
    pub fn operation_bits(&self) -> Result<u32, String> {
        self.operations.iter().try_fold(0, |bits, op| {
            let bit = match op.as_str() {
                "create" => AccessOperation::Create,
                "retrieve" => AccessOperation::Retrieve,
                "update" => AccessOperation::Update,
                "delete" => AccessOperation::Delete,
                "notify" => AccessOperation::Notify,
                "discover" => AccessOperation::Discovery,
                other => return Err(format!("'{other}' is no operation")),
            };
            Ok(bits | bit.bit())
        })
    }

    fn matches(&self, req: &DasRequest, op: AccessOperation) -> bool {
        self.operation_bits().is_ok_and(|b| b & op.bit() != 0)
            && self
                .originators
                .iter()
                .any(|p| wildcard(p, &req.originator))
            && self.targets.iter().any(|p| wildcard(p, &req.target))
    }
}

/// The decision of a DAS policy on `req`: the first matching rule grants its operation to the
/// originator (one rule, that originator only) for its lifetime; `now` is Unix seconds.
pub fn decide(rules: &[Rule], req: &DasRequest, now: i64) -> (DasAnswer, Option<usize>) {
    let Some(op) = req.access_operation() else {
        return (DasAnswer::Refused, None);
    };
    let Some((i, rule)) = rules.iter().enumerate().find(|(_, r)| r.matches(req, op)) else {
        return (DasAnswer::Refused, None);
    };
    let until = now.saturating_add(i64::try_from(rule.lifetime_seconds).unwrap_or(i64::MAX));
    let lifetime =
        chrono::DateTime::from_timestamp(until, 0).map(|t| t.format("%Y%m%dT%H%M%S").to_string());
    let privileges = json!({ "acr": [{ "acor": [req.originator], "acop": op.bit() }] });
    (
        DasAnswer::Granted {
            privileges,
            lifetime,
        },
        Some(i),
    )
}

/// Whether `s` matches `pattern`, segment by segment (`/` separates segments): in a segment `*`
/// matches any run of characters (none included) but never a `/`; a last segment `**` matches the
/// rest, none included (`/id-in/cse-in/door/**` is the door and everything below it, not
/// `doorway`); the pattern `*` alone matches anything.
pub fn wildcard(pattern: &str, s: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let v: Vec<&str> = s.split('/').collect();
    if let Some((&"**", prefix)) = p.split_last() {
        return v.len() >= prefix.len() && prefix.iter().zip(&v).all(|(a, b)| segment(a, b));
    }
    p.len() == v.len() && p.iter().zip(&v).all(|(a, b)| segment(a, b))
}

/// One segment: `*` matches any run of characters.
fn segment(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(or: &str, trid: &str, op: u8) -> DasRequest {
        DasRequest {
            originator: or.into(),
            target_type: Some(3),
            operation: op,
            target: trid.into(),
            originator_ip: None,
            request_timestamp: None,
            proposed_lifetime: None,
        }
    }

    fn rule(or: &[&str], t: &[&str], ops: &[&str], secs: u64) -> Rule {
        Rule {
            originators: or.iter().map(|s| s.to_string()).collect(),
            targets: t.iter().map(|s| s.to_string()).collect(),
            operations: ops.iter().map(|s| s.to_string()).collect(),
            lifetime_seconds: secs,
            token: false,
        }
    }

    #[test]
    fn an_answer_with_tokens_round_trips_and_is_bounded() {
        let a = DasAnswer::Tokens(m2m_core::Tokens(vec!["h.p.s".into()]));
        assert!(!format!("{a:?}").contains("h.p.s"), "Debug shows no token");
        assert_eq!(DasAnswer::from_content(Some(&a.to_content())), Ok(a));
        for bad in [
            json!({"m2m:seci": {"sit": 2, "dres": {"tkns": []}}}),
            json!({"m2m:seci": {"sit": 2, "dres": {"tkns": ["a", "b", "c", "d", "e"]}}}),
            json!({"m2m:seci": {"sit": 2, "dres": {"tkns": [1]}}}),
            json!({"m2m:seci": {"sit": 2, "dres": {"tkns": "h.p.s"}}}),
        ] {
            assert!(DasAnswer::from_content(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*", "/id-in/Cguest"));
        assert!(wildcard("/id-in/C*", "/id-in/Cguest"));
        assert!(!wildcard("/id-in/C*", "/id-in/Sguest"));
        // `*` stays inside its segment; `**` is the subtree.
        assert!(!wildcard("/id-in/C*", "/id-in/Cguest/x"));
        assert!(!wildcard("/id-in/cse-in/door*", "/id-in/cse-in/door/state"));
        assert!(wildcard("/id-in/cse-in/door/**", "/id-in/cse-in/door"));
        assert!(wildcard(
            "/id-in/cse-in/door/**",
            "/id-in/cse-in/door/state/la"
        ));
        assert!(!wildcard("/id-in/cse-in/door/**", "/id-in/cse-in/doorway"));
        assert!(!wildcard("/id-in/cse-in/door/**", "/id-in/cse-in"));
        assert!(wildcard("/id-in/*/door", "/id-in/cse-in/door"));
        assert!(!wildcard("/id-in/*/door", "/id-in/a/b/door"));
        assert!(wildcard("a*b*c", "abc"));
        assert!(wildcard("a*b*c", "a-b-b-c"));
        assert!(!wildcard("a*b*c", "ac"));
        assert!(!wildcard("ab*ba", "aba"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
    }

    #[test]
    fn the_first_matching_rule_grants_its_operation_to_that_originator_only() {
        let rules = [
            rule(
                &["/id-in/Cguest"],
                &["/id-in/cse-in/door/**"],
                &["retrieve"],
                60,
            ),
            rule(
                &["*"],
                &["/id-in/cse-in/public"],
                &["retrieve", "update"],
                5,
            ),
        ];
        let (a, i) = decide(
            &rules,
            &req("/id-in/Cguest", "/id-in/cse-in/door/state", 2),
            1_000,
        );
        assert_eq!(i, Some(0));
        let DasAnswer::Granted {
            privileges,
            lifetime,
        } = a
        else {
            panic!("refused")
        };
        assert_eq!(
            privileges,
            json!({"acr": [{"acor": ["/id-in/Cguest"], "acop": 2}]})
        );
        assert_eq!(lifetime.as_deref(), Some("19700101T001740"));
        // Another operation, another originator, another target: no rule.
        for r in [
            req("/id-in/Cguest", "/id-in/cse-in/door", 3),
            req("/id-in/Cother", "/id-in/cse-in/door", 2),
            req("/id-in/Cguest", "/id-in/cse-in/window", 2),
            req("/id-in/Cguest", "/id-in/cse-in/door", 9),
        ] {
            assert_eq!(decide(&rules, &r, 0).0, DasAnswer::Refused, "{r:?}");
        }
        let (_, i) = decide(&rules, &req("/id-in/Cx", "/id-in/cse-in/public", 3), 0);
        assert_eq!(i, Some(1));
    }

    #[test]
    fn contents_round_trip_and_malformed_answers_are_errors() {
        let r = req("/id-in/Cguest", "/id-in/cse-in/door", 2);
        assert_eq!(DasRequest::from_content(&r.to_content()).unwrap(), r);
        assert!(DasRequest::from_content(&json!({"m2m:seci": {"sit": 2}})).is_err());
        let granted = DasAnswer::Granted {
            privileges: json!({"acr": []}),
            lifetime: Some("20301231T000000".into()),
        };
        assert_eq!(
            DasAnswer::from_content(Some(&granted.to_content())).unwrap(),
            granted
        );
        assert_eq!(
            DasAnswer::from_content(Some(&DasAnswer::Refused.to_content())).unwrap(),
            DasAnswer::Refused
        );
        assert_eq!(DasAnswer::from_content(None).unwrap(), DasAnswer::Refused);
        assert!(DasAnswer::from_content(Some(&json!({"m2m:seci": {"sit": 1}}))).is_err());
        assert!(DasAnswer::from_content(Some(&json!({"m2m:sgn": {}}))).is_err());
        let relative = json!({"m2m:seci": {"sit": 2, "dres": {"dai": {"gp": {}, "pl": 5000}}}});
        assert_eq!(
            DasAnswer::from_content(Some(&relative)).unwrap(),
            DasAnswer::Granted {
                privileges: json!({}),
                lifetime: Some("5000".into())
            }
        );
    }

    #[test]
    fn unknown_operation_names_are_errors() {
        assert_eq!(
            rule(&["*"], &["*"], &["retrieve", "discover"], 1).operation_bits(),
            Ok(34)
        );
        assert!(rule(&["*"], &["*"], &["read"], 1).operation_bits().is_err());
    }
}
