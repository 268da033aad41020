//! A throw-away PKI for the demo and the benches: a CA and leaf certificates in the TS-0003
//! clause 10.1.1 profile, written as files the configurations point at.

use crate::files::write_private;
use anyhow::anyhow;
use m2m_security::certificates::{self, KeyType, LeafName, Validity};
use std::path::Path;

/// Long enough for any demo or bench run, short enough to be worthless afterwards.
const VALID_DAYS: u32 = 2;

/// Writes `dir/ca.pem` (a CA named `ca_name` for the SP `sp` and the domains `ca_domains`) and,
/// for each `(stem, name)` of `leaves`, `dir/STEM.pem` (the leaf then the CA, the chain a TLS
/// server sends) and `dir/STEM.key` (PKCS#8), all mode 0600; for each `(stem, name, public key)`
/// of `certified` (a key kept elsewhere, e.g. in a token), `dir/STEM.pem` only.
pub fn write_pki(
    dir: &Path,
    ca_name: &str,
    sp: &str,
    ca_domains: &[String],
    leaves: &[(&str, LeafName)],
    certified: &[(
        &str,
        LeafName,
        &openssl::pkey::PKeyRef<openssl::pkey::Public>,
    )],
) -> anyhow::Result<()> {
    let err = |e: String| anyhow!(e);
    let ca_key = certificates::generate_key(KeyType::P256).map_err(err)?;
    let v = Validity::days_from_now(VALID_DAYS);
    let ca = certificates::make_ca(ca_name, &ca_key, v, Some(sp), ca_domains).map_err(err)?;
    write_private(&dir.join("ca.pem"), &ca.to_pem()?)?;
    for (stem, leaf, public) in certified {
        let cert = certificates::issue(leaf, public, &ca, &ca_key, v, &[]).map_err(err)?;
        let mut chain = cert.to_pem()?;
        chain.extend(ca.to_pem()?);
        write_private(&dir.join(format!("{stem}.pem")), &chain)?;
    }
    for (stem, leaf) in leaves {
        let key = certificates::generate_key(KeyType::P256).map_err(err)?;
        let cert = certificates::issue(leaf, &key, &ca, &ca_key, v, &[]).map_err(err)?;
        let mut chain = cert.to_pem()?;
        chain.extend(ca.to_pem()?);
        write_private(&dir.join(format!("{stem}.pem")), &chain)?;
        write_private(
            &dir.join(format!("{stem}.key")),
            &key.private_key_to_pem_pkcs8()?,
        )?;
    }
    Ok(())
}

/// The certificate name of the CSE `cse_id` (with its leading slash) of the SP `sp` whose IN-CSE
/// is `/id-in` (as in every configuration the demo and benches write).
pub fn cse(cse_id: &str, sp: &str) -> LeafName {
    LeafName::Cse {
        cse_id: m2m_core::CseId::parse(cse_id).expect("a CSE-ID of the demo"),
        naming: m2m_security::certificates::CseNaming::new(sp, "/id-in").expect("the demo's SP"),
    }
}
