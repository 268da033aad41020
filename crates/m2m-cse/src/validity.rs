//! Checks of a received request primitive that do not depend on its target (TS-0004 clause
//! 7.3.2.1) and the time parameters of TS-0004 clause 7.3.3: Request Expiration Timestamp,
//! Result Expiration Timestamp, Operation Execution Time, Response Type, the parameters table
//! 7.2.1.1-1 does not permit for the operation, and the Result Content values TS-0001 table
//! 8.1.2-1 allows per operation. What the CSE
//! does not support is refused with the status code the clause names, never ignored.

use chrono::{DateTime, Utc};
use m2m_core::{
    FilterCriteria, M2mError, M2mResult, Operation, Request, ResponseStatusCode as Rsc,
};
use std::time::Duration;

/// How far ahead an Operation Execution Time may lie: the request waits for it (blocking), and
/// non-blocking requests, which would let it wait longer, are not supported.
pub const MAX_EXECUTION_DELAY: Duration = Duration::from_secs(60);

/// The time parameters of a request, resolved to instants.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deadlines {
    /// Result Expiration Timestamp: a result later than this is not delivered (4008).
    pub result_expires: Option<DateTime<Utc>>,
    /// Operation Execution Time: the operation runs at this time, not before.
    pub execute_at: Option<DateTime<Utc>>,
}

/// An m2m:absRelTimestamp: an absolute time (`20261205T080000`), or a time from now in
/// milliseconds or as an xs:duration (`PT2S`). Milliseconds written as a decimal (`1000.0`, as
/// clients in languages without integer division send them) count whole milliseconds.
pub(crate) fn abs_rel(name: &str, v: &str, now: DateTime<Utc>) -> M2mResult<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(ms) = whole_millis(v).parse::<i64>() {
        return chrono::Duration::try_milliseconds(ms)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| M2mError::bad_request(format!("{name} out of range")));
    }
    if v.starts_with('P') {
        return m2m_core::time::parse_duration(&serde_json::Value::String(v.to_owned()))
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| M2mError::bad_request(format!("{name} '{v}' is not a duration")));
    }
    m2m_core::time::parse(v)
        .map_err(|_| M2mError::bad_request(format!("{name} '{v}' is not a timestamp")))
}

/// `v` without the fractional part of a decimal number (`1000.5` is `1000`), else `v`.
fn whole_millis(v: &str) -> &str {
    match v.split_once('.') {
        Some((whole, fraction))
            if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) =>
        {
            whole
        }
        _ => v,
    }
}

/// The Semantic Query Indicator and semanticsFilter (TS-0004 clauses 7.3.3.18, 7.3.3.19): a
/// semantic query is a RETRIEVE, no discovery, with one semanticsFilter and semantic content as
/// its Result Content (the default for it); semantic content only answers one. The SPARQL is
/// read here, before anything else is done: 4143 INVALID_SPARQL_QUERY, or 5001.
fn semantic_parameters(req: &Request) -> M2mResult<()> {
    use m2m_core::ResultContent::SemanticContent;
    if req.sqi {
        let why = if req.op != Operation::Retrieve {
            Some("the Semantic Query Indicator is for a RETRIEVE")
        } else if req.is_discovery() {
            Some("a semantic query is no discovery (filterUsage)")
        } else if req.fc.semantics_filter.len() != 1 {
            Some("a semantic query has one semanticsFilter")
        } else if req.rcn.is_some_and(|r| r != SemanticContent) {
            Some("a semantic query answers semantic content (rcn 10)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(M2mError::bad_request(why));
        }
    } else if req.rcn == Some(SemanticContent) {
        return Err(M2mError::bad_request(
            "semantic content (rcn 10) is the result of a semantic query (sqi)",
        ));
    }
    crate::sparql::filters(&req.fc).map(|_| ())
}

/// Checks a request before anything is done for it; the deadlines to keep while doing it. Relative
/// time parameters are rewritten as absolute ones, so that a copy of the request (forwarded, or
/// fanned out to group members) keeps the same deadlines instead of counting again.
pub fn check(req: &mut Request, now: DateTime<Utc>) -> M2mResult<Deadlines> {
    for (name, param) in [
        ("Request Expiration Timestamp", &mut req.rqet),
        ("Result Expiration Timestamp", &mut req.rset),
        ("Operation Execution Time", &mut req.oet),
        ("Result Persistence", &mut req.rp),
    ] {
        if let Some(v) = param.as_deref() {
            *param = Some(m2m_core::time::format(abs_rel(name, v, now)?));
        }
    }
    // A result that would be gone before it is made persists nothing.
    if let Some(rp) = req
        .rp
        .as_deref()
        .and_then(|t| m2m_core::time::parse(t).ok())
    {
        if rp <= now {
            return Err(M2mError::bad_request("the Result Persistence has passed"));
        }
    }
    let req: &Request = req;
    let expired = |what: &str| M2mError::new(Rsc::RequestTimeout, format!("the {what} has passed"));
    let mut request_expires = None;
    if let Some(rqet) = &req.rqet {
        let t = abs_rel("Request Expiration Timestamp", rqet, now)?;
        if t <= now {
            return Err(expired("Request Expiration Timestamp"));
        }
        request_expires = Some(t);
    }
    let mut deadlines = Deadlines::default();
    if let Some(rset) = &req.rset {
        let t = abs_rel("Result Expiration Timestamp", rset, now)?;
        if t <= now {
            return Err(expired("Result Expiration Timestamp"));
        }
        // TS-0004 table 6.3.3-1: "Result Expiration Timestamp shall be later than Request
        // Expiration Timestamp".
        if request_expires.is_some_and(|r| t <= r) {
            return Err(M2mError::bad_request(
                "the Result Expiration Timestamp must be later than the Request Expiration Timestamp",
            ));
        }
        deadlines.result_expires = Some(t);
    }
    if let Some(oet) = &req.oet {
        let t = abs_rel("Operation Execution Time", oet, now)?;
        let latest = now + chrono::Duration::from_std(MAX_EXECUTION_DELAY).unwrap_or_default();
        if t > latest {
            return Err(M2mError::new(
                Rsc::NotImplemented,
                format!(
                    "an Operation Execution Time more than {} s ahead is not supported",
                    MAX_EXECUTION_DELAY.as_secs()
                ),
            ));
        }
        // An operation due after the request or its result expires can never be done in time:
        // the parameters contradict each other.
        if deadlines.result_expires.is_some_and(|r| r <= t)
            || request_expires.is_some_and(|r| r <= t)
        {
            return Err(M2mError::bad_request(
                "the Operation Execution Time lies after the request or its result expires",
            ));
        }
        deadlines.execute_at = (t > now).then_some(t);
    }
    not_permitted(req)?;
    semantic_parameters(req)?;
    // Content is mandatory for an UPDATE (TS-0004 table 7.2.1.1-1): without it the primitive is
    // malformed, whatever it targets (4000 before anything about the target).
    if req.op == Operation::Update && req.pc.is_none() {
        return Err(M2mError::bad_request(
            "an UPDATE carries the attributes to change",
        ));
    }
    if let Some(rcn) = req.rcn {
        // The HTTP binding checks it while decoding; CoAP and internal requests reach here.
        if !rcn.valid_for(req.op, req.is_discovery()) {
            return Err(M2mError::bad_request(format!(
                "rcn {} is not valid for this operation",
                rcn as u8
            )));
        }
    }
    Ok(deadlines)
}

/// The parameters TS-0004 table 7.2.1.1-1 marks NP (not permitted) for the operation: 4000.
fn not_permitted(req: &Request) -> M2mResult<()> {
    let np = |what: &str| {
        Err(M2mError::bad_request(format!(
            "{what} is not permitted in a {:?} request",
            req.op
        )))
    };
    let op = req.op;
    if op != Operation::Create && req.ty.is_some() {
        return np("Resource Type");
    }
    // Made by the CSE only (TS-0004 clause 7.4.12.2.1, Recv-1.0; a flexContainerInstance is
    // the CSE's record of its flexContainer, Release 4).
    if op == Operation::Create
        && matches!(
            req.ty,
            Some(m2m_core::ResourceType::Request | m2m_core::ResourceType::FlexContainerInstance)
        )
    {
        return Err(M2mError::not_allowed(
            "resources of this type are made by the CSE only",
        ));
    }
    if op == Operation::Delete && req.pc.is_some() {
        return np("Content");
    }
    if matches!(op, Operation::Create | Operation::Notify) && *req.fc != FilterCriteria::default() {
        return np("Filter Criteria");
    }
    if op == Operation::Notify && req.rcn.is_some() {
        return np("Result Content");
    }
    // The attribute list selects what a RETRIEVE shows or an UPDATE touches (Release 4).
    if matches!(
        op,
        Operation::Create | Operation::Delete | Operation::Notify
    ) && !req.atrl.is_empty()
    {
        return np("Attribute List");
    }
    Ok(())
}

/// Waits for the Operation Execution Time, if any; whether it waited.
pub async fn wait_for_execution(deadlines: &Deadlines) -> bool {
    let Some(at) = deadlines.execute_at else {
        return false;
    };
    let Ok(wait) = (at - Utc::now()).to_std() else {
        return false;
    };
    tokio::time::sleep(wait).await;
    true
}

/// Whether a result came after its Result Expiration Timestamp (then 4008, not the result).
pub fn result_expired(deadlines: &Deadlines) -> Option<M2mError> {
    deadlines
        .result_expires
        .filter(|t| Utc::now() > *t)
        .map(|_| {
            M2mError::new(
                Rsc::RequestTimeout,
                "the Result Expiration Timestamp passed before the result",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use m2m_core::ResultContent;

    /// A request of `op`, with content when the operation needs it.
    fn req(op: Operation) -> Request {
        let mut r = Request::new(op, "cse-in", Some("Cx".to_owned()), "r".to_owned());
        if op == Operation::Update {
            r.pc = Some(serde_json::json!({ "m2m:cnt": { "lbl": ["x"] } }));
        }
        r
    }

    #[test]
    fn an_update_without_content_is_4000() {
        let mut r = req(Operation::Update);
        r.pc = None;
        assert_eq!(code(check(&mut r, now())), 4000);
        let mut r = req(Operation::Retrieve);
        assert_eq!(code(check(&mut r, now())), 2000, "a RETRIEVE needs none");
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap()
    }

    fn code(r: M2mResult<Deadlines>) -> u16 {
        r.map_or_else(|e| e.rsc.code(), |_| 2000)
    }

    #[test]
    fn expired_timestamps_are_4008_and_future_ones_pass() {
        for (rqet, want) in [
            ("20261205T075959", 4008),
            ("20261205T080000", 4008),
            ("20261205T080001", 2000),
            ("-5", 4008),
            ("5000", 2000),
            ("5000.0", 2000),
            ("0.9", 4008),
            ("-5.0", 4008),
        ] {
            let mut r = req(Operation::Retrieve);
            r.rqet = Some(rqet.into());
            assert_eq!(code(check(&mut r, now())), want, "rqet {rqet}");
            let mut r = req(Operation::Retrieve);
            r.rset = Some(rqet.into());
            assert_eq!(code(check(&mut r, now())), want, "rset {rqet}");
        }
        let mut r = req(Operation::Retrieve);
        r.rqet = Some("tomorrow".into());
        assert_eq!(code(check(&mut r, now())), 4000);
        for bad in ["5000.", ".5", "5000.0.0", "5e3", "NaN", "5000.x"] {
            let mut r = req(Operation::Retrieve);
            r.rqet = Some(bad.into());
            assert_eq!(code(check(&mut r, now())), 4000, "rqet {bad}");
        }
        // The result cannot expire before (or with) the request.
        for (rset, want) in [("4000", 4000), ("5000", 4000), ("6000", 2000)] {
            let mut r = req(Operation::Retrieve);
            r.rqet = Some("5000".into());
            r.rset = Some(rset.into());
            assert_eq!(code(check(&mut r, now())), want, "rset {rset}");
        }
    }

    #[test]
    fn an_execution_time_is_kept_within_a_minute_and_before_the_expirations() {
        let mut r = req(Operation::Update);
        r.oet = Some("20261205T080030".into());
        let d = check(&mut r, now()).unwrap();
        assert_eq!(d.execute_at, Some(now() + chrono::Duration::seconds(30)));
        r.oet = Some("20261205T080200".into());
        assert_eq!(code(check(&mut r, now())), 5001);
        r.oet = Some("20261205T080030".into());
        r.rset = Some("20261205T080010".into());
        assert_eq!(code(check(&mut r, now())), 4000, "contradicting parameters");
        r.oet = Some("20261205T075000".into());
        r.rset = None;
        assert_eq!(
            check(&mut r, now()).unwrap().execute_at,
            None,
            "already due"
        );
    }

    #[test]
    fn parameters_not_permitted_for_the_operation_are_4000() {
        let mut r = req(Operation::Retrieve);
        r.ty = Some(m2m_core::ResourceType::Container);
        assert_eq!(code(check(&mut r, now())), 4000, "ty on a RETRIEVE");
        let mut r = req(Operation::Delete);
        r.pc = Some(serde_json::json!({ "m2m:cnt": {} }));
        assert_eq!(code(check(&mut r, now())), 4000, "content on a DELETE");
        let mut r = req(Operation::Notify);
        r.rcn = Some(ResultContent::Attributes);
        assert_eq!(code(check(&mut r, now())), 4000, "rcn on a NOTIFY");
        let mut r = req(Operation::Notify);
        r.fc.labels = vec!["a".into()];
        assert_eq!(code(check(&mut r, now())), 4000, "fc on a NOTIFY");
        let mut r = req(Operation::Create);
        r.ty = Some(m2m_core::ResourceType::Container);
        assert_eq!(code(check(&mut r, now())), 2000, "ty on a CREATE");
    }

    #[test]
    fn filter_criteria_in_a_create_and_result_contents_outside_the_table_are_4000() {
        let mut r = req(Operation::Create);
        r.fc.labels = vec!["a".into()];
        assert_eq!(code(check(&mut r, now())), 4000);
        for (op, rcn, want) in [
            (Operation::Create, ResultContent::ModifiedAttributes, 2000),
            (Operation::Create, ResultContent::ChildResources, 4000),
            (Operation::Retrieve, ResultContent::OriginalResource, 2000),
            (Operation::Retrieve, ResultContent::Nothing, 4000),
            (
                Operation::Retrieve,
                ResultContent::HierarchicalAddress,
                4000,
            ),
            (Operation::Update, ResultContent::ModifiedAttributes, 2000),
            (Operation::Update, ResultContent::ChildResources, 4000),
            (Operation::Delete, ResultContent::ChildResources, 2000),
            (Operation::Delete, ResultContent::ModifiedAttributes, 4000),
        ] {
            let mut r = req(op);
            r.rcn = Some(rcn);
            assert_eq!(code(check(&mut r, now())), want, "{op:?} {rcn:?}");
        }
    }
}
