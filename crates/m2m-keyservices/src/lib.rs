//! The key services: MAF (TS-0003 clause 8.8).
//!
//! [`maf`] holds the M2M Authentication Function: its server (a TLS listener with a small HTTP/JSON API, SQLite
//! storage with key values encrypted at rest) and a client library that keeps one TLS connection so that the
//! connection key Kc it registers is the one both sides export.

pub mod maf;
