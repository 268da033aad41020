//! The ESPrim Originator (TS-0004 clauses 7.5.1.2.11, 7.5.1.2.13 and 7.6.2; TS-0003 clause 8.4):
//! asks the Target for a receiverESPrimRandObject (NOTIFY sit 3), starts a session with the
//! pairwiseESPrimKey, sends the inner request protected (NOTIFY sit 5) and unprotects the response.
//! Both NOTIFYs go to whatever CSE the client is connected to, which forwards them to the Target.

use crate::Client;
use m2m_core::security_info::{SecurityInfo, SecurityInfoType};
use m2m_core::{M2mError, M2mResult, Operation, Request, Response, ResponseStatusCode as Rsc};
use m2m_security::credentials::Secret;
use m2m_security::e2e::esprim::EsprimSession;

/// How long the originator rand is offered for (the receiver rand may end the session earlier).
const SESSION_LIFETIME_SECONDS: i64 = 300;

/// Where the Target is and which pairwiseESPrimKey protects the exchange.
pub struct EsprimTarget<'a> {
    /// The base URL of the CSE the client talks to (the Target or a CSE on the way).
    pub url: &'a str,
    /// The Target's `<CSEBase>`, e.g. `/id-in`.
    pub to: &'a str,
    /// The outer From: the Originator's ID.
    pub from: &'a str,
    /// pairwiseESPrimKeyID and the key.
    pub kid: &'a str,
    pub key: &'a Secret,
}

/// Sends `info` in a NOTIFY to `to` (a CSEBase) through the CSE at `url`, as `from`; the answer must be
/// 2000 with a securityInfo of type `want` (ESPrim and ESCertKE share this transport).
pub(crate) async fn notify_security_info(
    client: &Client,
    url: &str,
    to: &str,
    from: &str,
    info: SecurityInfo,
    want: SecurityInfoType,
) -> M2mResult<SecurityInfo> {
    let mut req = Request::new(
        Operation::Notify,
        to.to_owned(),
        Some(from.to_owned()),
        crate::next_request_id(),
    );
    req.pc = Some(info.to_content());
    let rsp = client.send(url, &req).await?.into_result()?;
    let answer = rsp
        .pc
        .as_ref()
        .ok_or_else(|| M2mError::internal("the Target's answer has no securityInfo"))
        .and_then(|pc| SecurityInfo::from_content(pc).map_err(M2mError::internal))?;
    if answer.sit != want {
        return Err(M2mError::internal(
            "the Target answered with another securityInfoType",
        ));
    }
    Ok(answer)
}

/// Sends `inner` protected to the Target and returns the verified inner response. Outer failures
/// (the Target's ESPrim error codes, transport errors) are errors; the inner response is returned
/// whatever its status code.
pub async fn send_protected(
    client: &Client,
    t: &EsprimTarget<'_>,
    inner: &Request,
) -> M2mResult<Response> {
    let rand = notify_security_info(
        client,
        t.url,
        t.to,
        t.from,
        SecurityInfo::rand_request(),
        SecurityInfoType::ReceiverRandResponse,
    )
    .await?
    .ero
    .ok_or_else(|| M2mError::internal("the Target's answer carries no rand object"))?;
    let lifetime = chrono::Duration::seconds(SESSION_LIFETIME_SECONDS);
    let mut session =
        EsprimSession::start(t.kid, t.key, &rand, chrono::Utc::now(), lifetime, None)?;
    let body = serde_json::to_vec(&inner.to_json())
        .map_err(|_| M2mError::new(Rsc::EsprimEncryptionError, "inner request"))?;
    let jwe = session.protect_request(&body, chrono::Utc::now())?;
    let answer = notify_security_info(
        client,
        t.url,
        t.to,
        t.from,
        SecurityInfo::esprim_object(jwe),
        SecurityInfoType::EsprimObject,
    )
    .await?;
    let epo = answer.epo.unwrap_or_default();
    let inner_rsp = session.unprotect_response(&epo, chrono::Utc::now())?;
    Response::from_rsp_json(&inner_rsp)
        .map_err(|e| M2mError::new(Rsc::EsprimDecryptionError, e.dbg))
}
