//! The ESCertKE Initiating End-Point (TS-0003 clause 8.7; TS-0004 clause 7.5.1.2.12): the four ESCertKE
//! Messages travel as `m2m:securityInfo` sit 6 in two NOTIFYs to the Target's CSEBase (Messages 1 and 3)
//! and their responses (Messages 2 and 4), through whatever CSE the client is connected to. The result is
//! a pairwiseE2EKey shared with the Target only, used as pairwiseESPrimKey.

use crate::esprim::notify_security_info;
use crate::Client;
use m2m_core::security_info::{SecurityInfo, SecurityInfoType};
use m2m_core::{M2mError, M2mResult, ResponseStatusCode as Rsc};
use m2m_security::e2e::escertke::{EscertkeError, Initiator, PairwiseE2eKey};
use openssl::ssl::SslContext;

/// Where the Terminating End-Point is and how it must authenticate.
pub struct EscertkeTarget<'a> {
    /// The base URL of the CSE the client talks to (the Target or a CSE on the way).
    pub url: &'a str,
    /// The Target's `<CSEBase>`, e.g. `/id-in`.
    pub to: &'a str,
    /// The outer From: the Originator's ID.
    pub from: &'a str,
    /// The name the Target's certificate must carry (e.g. `id-in.m2m.example.com`).
    pub server_name: &'a str,
}

/// The Target did not authenticate (its certificate, its Finished): reported like a refusal.
fn local(e: EscertkeError) -> M2mError {
    M2mError::new(
        Rsc::BadRequest,
        format!("ESCertKE with the Target failed: {e}"),
    )
}

async fn send(client: &Client, t: &EscertkeTarget<'_>, message: &[u8]) -> M2mResult<Vec<u8>> {
    let answer = notify_security_info(
        client,
        t.url,
        t.to,
        t.from,
        SecurityInfo::escertke_message(message),
        SecurityInfoType::EscertkeMessage,
    )
    .await?;
    answer.escertke_bytes().map_err(M2mError::internal)
}

/// Runs ESCertKE with the Target; `ctx` holds the Originator's certificate, key and root of trust
/// (`m2m_security::tls::client_context`). The Target's refusals come back as its error responses.
pub async fn establish(
    client: &Client,
    t: &EscertkeTarget<'_>,
    ctx: &SslContext,
) -> M2mResult<PairwiseE2eKey> {
    let (mut initiator, message1) = Initiator::start(ctx, Some(t.server_name)).map_err(local)?;
    let message2 = send(client, t, &message1).await?;
    let message3 = initiator.respond(&message2).map_err(local)?;
    let message4 = send(client, t, &message3).await?;
    initiator.finish(&message4).map_err(local)
}
