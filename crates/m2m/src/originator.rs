//! Sending request primitives as an originator (TS-0001 clause 8.1) and checking the Response
//! Status Code each step expects; shared by `m2m ae` and `m2m demo`.

use anyhow::bail;
use m2m_client::Client;
use m2m_core::{M2mError, Operation, Request, ResourceType, Response};
use serde_json::Value;

/// Sends one request with a fresh request identifier.
pub async fn send(
    client: &Client,
    base: &str,
    op: Operation,
    to: &str,
    from: &str,
    ty: Option<ResourceType>,
    pc: Option<Value>,
) -> Result<Response, M2mError> {
    let mut req = Request::new(op, to, Some(from.to_owned()), m2m_client::next_request_id());
    req.ty = ty;
    req.pc = pc;
    client.send(base, &req).await
}

pub fn code(r: &Response) -> u16 {
    r.rsc.code()
}

/// The response, which must carry `want`; otherwise an error naming the step, the code and the
/// CSE's reason.
pub fn expect(r: Result<Response, M2mError>, want: u16, what: &str) -> anyhow::Result<Response> {
    match r {
        Ok(r) if code(&r) == want => Ok(r),
        Ok(r) => bail!(
            "{what}: {} {} ({})",
            code(&r),
            r.rsc.name(),
            r.dbg().unwrap_or("")
        ),
        Err(e) => bail!("{what}: {} {}", e.rsc.code(), e.dbg),
    }
}

/// The content of a response (Null when it has none).
pub fn pc(r: &Response) -> &Value {
    r.pc.as_ref().unwrap_or(&Value::Null)
}
