//! `<token>` (ty 32; TS-0004 clause 7.4.41, TS-0001 clause 9.6.39, TS-0003 clause 7.4.2.3): a
//! token held in this CSE, its Token Repository, for requests that name it by Token-ID (`tids`).
//! The CSE keeps only tokens it can verify: `tkob` must be a JWT signed by one of the configured
//! token issuers (`[dynamic_authorization] token_issuers`), valid now, not revoked, whose
//! `jti` is `tkid`; the other attributes are its claims, filled in from the token, and any given
//! must equal them (4000 otherwise). It is verified again whenever a request names it.

use super::{Behaviour, Call, Pending, Prepared};
use crate::store::Resource;
use m2m_core::{M2mError, M2mResult, TokenId};
use serde_json::{json, Map, Value};

pub struct Token;

impl Behaviour for Token {
    fn prepare_create<'a>(
        &'a self,
        call: Call<'a>,
        _parent: &'a Resource,
        attrs: &'a mut Map<String, Value>,
    ) -> Pending<'a, M2mResult<Prepared>> {
        super::ready((|| {
            let text = |name: &str| attrs.get(name).and_then(Value::as_str).unwrap_or("");
            let id = TokenId::parse(text("tkid"))
                .map_err(|e| M2mError::bad_request(format!("attribute 'tkid': {}", e.dbg)))?;
            if call.peer.by_action {
                return Err(M2mError::new(
                    m2m_core::ResponseStatusCode::OriginatorHasNoPrivilege,
                    "a <token> is not created by an <action>",
                ));
            }
            let das = call.cse.dynamic_authorization.as_ref().ok_or_else(|| {
                M2mError::bad_request("attribute 'tkob': no token issuer is configured on this CSE")
            })?;
            let claims = das
                .verify_token(text("tkob"), call.cse.now().timestamp())
                .map_err(|why| M2mError::bad_request(format!("attribute 'tkob': {why}")))?;
            if claims.token_id != id.as_str() {
                return Err(M2mError::bad_request(
                    "attribute 'tkid': not the tokenID (jti) of the token",
                ));
            }
            // A Token-ID is its issuer's (`name@iss`), and names one token here: no issuer
            // shadows another's tokens.
            if id.as_str().rsplit_once('@').map(|(_, i)| i) != Some(claims.issuer.as_str()) {
                return Err(M2mError::bad_request(
                    "attribute 'tkid': not a Token-ID of the token's issuer",
                ));
            }
            let kept = call
                .cse
                .store
                .read(|r| r.children(call.cse.base_ri(), Some(m2m_core::ResourceType::Token)))?;
            if kept.iter().any(|t| t.str_attr("tkid") == Some(id.as_str())) {
                return Err(M2mError::bad_request(
                    "attribute 'tkid': a token of this Token-ID is kept here already",
                ));
            }
            let stamp = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(m2m_core::time::format)
                    .map(Value::String)
            };
            let from_claims = [
                ("tkvr", Some(json!(claims.version))),
                ("tkis", Some(json!(claims.issuer))),
                ("tkhd", Some(json!(claims.holder))),
                ("tknb", stamp(claims.not_before)),
                ("tkna", stamp(claims.not_after)),
                ("tknm", claims.name.clone().map(Value::String)),
                (
                    "tkau",
                    (!claims.audience.is_empty()).then(|| json!(claims.audience)),
                ),
                (
                    "tkps",
                    claims
                        .permissions
                        .as_ref()
                        .and_then(|p| serde_json::to_value(p).ok()),
                ),
                ("tkex", claims.extension.clone().map(Value::String)),
            ];
            for (name, value) in from_claims {
                match (attrs.get(name), value) {
                    (Some(given), Some(v)) if *given != v => {
                        return Err(M2mError::bad_request(format!(
                            "attribute '{name}': not the token's claim"
                        )))
                    }
                    (Some(_), None) => {
                        return Err(M2mError::bad_request(format!(
                            "attribute '{name}': the token has no such claim"
                        )))
                    }
                    (None, Some(v)) => {
                        attrs.insert(name.to_owned(), v);
                    }
                    _ => {}
                }
            }
            Ok(Prepared::default())
        })())
    }
}
