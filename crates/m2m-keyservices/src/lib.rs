//! Key services of the Security CSF (TS-0003): the M2M Enrolment Function (MEF, remote security
//! provisioning, clause 8.3) and the M2M Authentication Function (MAF, clause 8.8).

pub mod mef;
