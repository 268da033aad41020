//! The one error type of the service layer: a Response Status Code plus a short debug text (`m2m:dbg`).

use crate::status::ResponseStatusCode;
use std::fmt;

/// A failed request: the status code the originator receives and a short reason.
///
/// The reason is sent to the originator as `m2m:dbg`; it must never contain key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct M2mError {
    pub rsc: ResponseStatusCode,
    pub dbg: String,
}

impl M2mError {
    pub fn new(rsc: ResponseStatusCode, dbg: impl Into<String>) -> Self {
        Self {
            rsc,
            dbg: dbg.into(),
        }
    }
    pub fn bad_request(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::BadRequest, dbg)
    }
    pub fn not_found(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::NotFound, dbg)
    }
    pub fn not_allowed(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::OperationNotAllowed, dbg)
    }
    pub fn conflict(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::Conflict, dbg)
    }
    pub fn internal(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::InternalServerError, dbg)
    }
    pub fn not_implemented(dbg: impl Into<String>) -> Self {
        Self::new(ResponseStatusCode::NotImplemented, dbg)
    }
}

impl fmt::Display for M2mError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rsc, self.dbg)
    }
}

impl std::error::Error for M2mError {}

/// Result of a oneM2M operation.
pub type M2mResult<T> = Result<T, M2mError>;
