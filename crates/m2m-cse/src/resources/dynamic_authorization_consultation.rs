//! `<dynamicAuthorizationConsultation>` (ty 34; TS-0004 clause 7.4.36, TS-0001 clause 9.6.40):
//! whether consultation-based dynamic authorization is enabled (`dae`), the Dynamic
//! Authorization Servers to consult (`dap`, at least one) and the privileges lifetime to propose
//! (`dal`). Resources link to it with `daci`; the consultation itself is
//! [`crate::dynamic_authorization`]. Its CRUD is the generic one: the schema checks the
//! attributes, and only the servers of the CSE's configuration are ever contacted, whatever `dap`
//! names.

pub struct DynamicAuthorizationConsultation;

impl super::Behaviour for DynamicAuthorizationConsultation {}
