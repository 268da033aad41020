//! `m2m pki`: an operator's CA and entity certificates in the TS-0003 clause 10.1.1 profile
//! (P-256 keys, ECDSA with SHA-256, keyUsage digitalSignature), for certificate-based security association
//! establishment (TS-0003 clause 8.2.2.2).
//!
//! ```text
//! m2m pki ca    --out DIR [--name NAME] [--days 3650] [--sp SP-FQDN] [--permit-dns DOMAIN]... [--force]
//! m2m pki issue --ca DIR --kind cse|ae|maf|mef|das --id ID [--sp SP-FQDN] [--cse CSE-ID] --out PREFIX
//!               [--days 365] [--not-before RFC3339] [--not-after RFC3339] [--dns NAME]... [--force]
//! m2m pki show  CERT [--sp SP-FQDN]
//! m2m pki revoke --ca DIR [CERT]... [--serial HEX]... [--days 30]
//! m2m pki crl    --ca DIR [--days 30]
//! ```
//!
//! Files: `DIR/ca.pem`, `DIR/ca.key`, `PREFIX.pem` (leaf, then the CA) and `PREFIX.key`. Keys are unencrypted
//! PKCS#8 PEM written with mode 0600 and never printed. The subjectAltName encodings are those of
//! [`m2m_security::certificates`]: AE `onem2m://SP-FQDN/SP-relative-AE-ID` (URI), CSE `<cse-id>.<SP-FQDN>`
//! (dNSName), MAF/MEF the FQDN (dNSName).
//!
//! Revocation (TS-0003 clause 8.1.2.2): `revoke` adds certificates to the CA's list `DIR/crl.pem` (a v2
//! CRL, cRLNumber one higher than the last) and `crl` re-signs it with a later nextUpdate. The file is
//! replaced by rename, so a CSE, MAF or MEF reading it at a handshake never sees half of it; they
//! refuse every certificate of the CA once its list is past nextUpdate, so re-sign before then.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use m2m_security::certificates::{self as certs, CertIdentity, KeyType, LeafName, Validity};
use m2m_security::revocation::{self, RevokedEntry};
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameRef, X509Ref, X509};
use std::fs;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// `m2m pki`: make a CA, issue entity certificates, show what a certificate says.
#[derive(Args, Debug)]
pub struct PkiArgs {
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Make a root CA (P-256, SHA-256, CA:TRUE pathlen 0): DIR/ca.pem and DIR/ca.key.
    Ca(CaArgs),
    /// Issue an AE-ID, CSE-ID or FQDN (MAF/MEF) certificate signed by a CA made with `pki ca`.
    Issue(IssueArgs),
    /// Print a certificate's subject, issuer, validity, key, SANs and the oneM2M identity it names.
    Show(ShowArgs),
    /// Revoke certificates of a CA: add them to DIR/crl.pem (made if missing) and re-sign it.
    Revoke(RevokeArgs),
    /// Re-sign DIR/crl.pem with a fresh nextUpdate (made empty if missing).
    Crl(CrlArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RevokeArgs {
    /// Directory of the issuing CA (ca.pem, ca.key); the list is DIR/crl.pem.
    #[arg(long)]
    pub ca: PathBuf,
    /// Certificates to revoke (PEM; the first certificate of each file), issued by this CA.
    pub certs: Vec<PathBuf>,
    /// Serial numbers to revoke (hex, as `pki show` prints them), for certificates whose file is gone.
    #[arg(long)]
    pub serial: Vec<String>,
    /// Days until the list's nextUpdate: peers refuse this CA's certificates once it passes.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct CrlArgs {
    /// Directory of the CA (ca.pem, ca.key); the list is DIR/crl.pem.
    #[arg(long)]
    pub ca: PathBuf,
    /// Days until nextUpdate.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// Directory for ca.pem and ca.key (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The CA's commonName.
    #[arg(long, default_value = "oneM2M root CA")]
    pub name: String,
    /// Validity in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// SP-FQDN the CA is constrained to: nameConstraints permit URI host SP-FQDN (AE-IDs, TS-0003 clause
    /// 10.1.1.5) and DNS subtree SP-FQDN (CSE-IDs, MAF/MEF names inside the SP domain).
    #[arg(long)]
    pub sp: Option<String>,
    /// Another DNS subtree to permit (e.g. the domain of a MAF or MEF outside the SP domain, or `localhost`
    /// so that `issue --dns localhost` works in test set-ups). Needs --sp.
    #[arg(long = "permit-dns", requires = "sp")]
    pub permit_dns: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// The certificate flavours of TS-0003 clause 10.1.3 that `issue` makes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CSE-ID certificate (clause 10.1.1.7).
    Cse,
    /// AE-ID certificate (clause 10.1.1.5).
    Ae,
    /// FQDN certificate of an M2M Authentication Function (clause 10.1.1.6).
    Maf,
    /// FQDN certificate of an M2M Enrolment Function (clause 10.1.1.6).
    Mef,
    /// FQDN certificate of a Dynamic Authorization Server (an FQDN certificate like the MAF's).
    Das,
}

/// Key types; only p256 is in the profile, the others make certificates that must be refused.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTypeArg {
    P256,
    P384,
    Rsa,
}

#[derive(Args, Debug, Clone)]
pub struct IssueArgs {
    /// Directory of the issuing CA (ca.pem, ca.key).
    #[arg(long)]
    pub ca: PathBuf,
    /// Which certificate flavour.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// cse: the CSE-ID (`/id-mn`); ae: the AE-ID (`Cphone` with --cse, `/id-in/Cphone`, `/Sdoorlock`,
    /// `//SP-FQDN/...`); maf/mef: the FQDN.
    #[arg(long)]
    pub id: String,
    /// The SP-FQDN (M2M-SP-ID without `//`); required for cse and ae.
    #[arg(long)]
    pub sp: Option<String>,
    /// Registrar CSE-ID that makes a C-stem AE-ID (`Cphone`) SP-relative (`/id-in/Cphone`).
    #[arg(long)]
    pub cse: Option<String>,
    /// The SP's IN-CSE-ID: a CSE certificate names `<in>.<sp>` for the IN-CSE and
    /// `<cse>.<in>.<sp>` for any other CSE (TS-0001 clause 6.5.1.1).
    #[arg(long = "in-cse", default_value = "/id-in")]
    pub in_cse: String,
    /// Output prefix: PREFIX.pem (leaf, then CA) and PREFIX.key.
    #[arg(long)]
    pub out: PathBuf,
    /// Validity in days (from now, or ending at --not-after when only that is given).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Start of validity, RFC 3339 (e.g. 2020-01-01T00:00:00Z); for expired or not-yet-valid test certificates.
    #[arg(long)]
    pub not_before: Option<String>,
    /// End of validity, RFC 3339.
    #[arg(long)]
    pub not_after: Option<String>,
    /// Extra dNSName for TLS host name checks (e.g. `localhost`); must not name another CSE.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Key type (tests only: p384 and rsa are outside the TS-0003 profile).
    #[arg(long, value_enum, default_value = "p256", hide = true)]
    pub key_type: KeyTypeArg,
    /// Certify this public key (PEM) instead of making a key pair: a key generated in a PKCS#11
    /// token (`m2m keys token generate-key` prints it), which never leaves the token; no
    /// PREFIX.key is written.
    #[arg(long, value_name = "PEM")]
    pub public_key: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// PEM file; the first certificate in it is shown.
    pub cert: PathBuf,
    /// SP-FQDN, to read AE-IDs and CSE-IDs.
    #[arg(long)]
    pub sp: Option<String>,
    /// The SP's IN-CSE-ID, to read CSE-IDs (see `issue --in-cse`).
    #[arg(long = "in-cse", default_value = "/id-in")]
    pub in_cse: String,
}

/// Runs `m2m pki`.
pub fn run(args: PkiArgs) -> anyhow::Result<()> {
    match args.command {
        PkiCommand::Ca(a) => {
            let (pem, key) = make_ca(&a)?;
            println!("CA certificate: {}", pem.display());
            println!("CA key (0600):  {}", key.display());
        }
        PkiCommand::Issue(a) => {
            let (pem, key, id) = issue(&a)?;
            println!("certificate: {} ({id})", pem.display());
            match key {
                Some(key) => println!("key (0600):  {}", key.display()),
                None => println!(
                    "key:         the private key of {}",
                    a.public_key
                        .as_ref()
                        .expect("no key file: a public key")
                        .display()
                ),
            }
        }
        PkiCommand::Show(a) => print!("{}", show(&a)?),
        PkiCommand::Revoke(a) => {
            let (path, added, total) = revoke(&a)?;
            println!(
                "{}: {added} certificate(s) revoked, {total} in the list",
                path.display()
            );
        }
        PkiCommand::Crl(a) => {
            let (path, total) = resign_crl(&a)?;
            println!(
                "{}: re-signed, {total} revoked, next update in {} day(s)",
                path.display(),
                a.days
            );
        }
    }
    Ok(())
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("'{s}' is not an RFC 3339 time"))?
        .timestamp())
}

/// The validity period from --days, --not-before and --not-after.
fn validity(
    days: u32,
    not_before: Option<&str>,
    not_after: Option<&str>,
) -> anyhow::Result<Validity> {
    let span = i64::from(days) * 86_400;
    let nb = not_before.map(parse_time).transpose()?;
    let na = not_after.map(parse_time).transpose()?;
    let (not_before, not_after) = match (nb, na) {
        (Some(b), Some(a)) => (b, a),
        (Some(b), None) => (b, b + span),
        (None, Some(a)) => (a - span, a),
        (None, None) => {
            let v = Validity::days_from_now(days);
            (v.not_before, v.not_after)
        }
    };
    if not_after <= not_before {
        bail!("the certificate would end before it starts");
    }
    Ok(Validity {
        not_before,
        not_after,
    })
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn check_free(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists (use --force to replace it)", path.display());
    }
    Ok(())
}

/// Writes a private key with mode 0600 from the start (a replaced file is removed first, so an old wider
/// mode does not survive).
fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    crate::files::write_private(path, pem)
}

fn write_public(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

fn key_pem(key: &PKey<Private>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(
        key.private_key_to_pem_pkcs8()
            .map_err(|e| anyhow!("cannot encode the key: {e}"))?,
    ))
}

fn e(s: String) -> anyhow::Error {
    anyhow!(s)
}

/// `m2m pki ca`: returns the paths of ca.pem and ca.key.
pub fn make_ca(a: &CaArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pem_path = a.out.join("ca.pem");
    let key_path = a.out.join("ca.key");
    check_free(&pem_path, a.force)?;
    check_free(&key_path, a.force)?;
    let key = certs::generate_key(KeyType::P256).map_err(e)?;
    let v = validity(a.days, None, None)?;
    let ca = certs::make_ca(&a.name, &key, v, a.sp.as_deref(), &a.permit_dns).map_err(e)?;
    certs::check_profile(&ca).map_err(|r| anyhow!("internal: CA outside the profile: {r}"))?;
    fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    write_private(&key_path, &key_pem(&key)?)?;
    write_public(&pem_path, &ca.to_pem()?)?;
    Ok((pem_path, key_path))
}

/// Normalizes an AE-ID given on the command line to its SP-relative form (TS-0001 table 7.2-1).
pub fn normalize_ae_id(id: &str, sp: &str, cse: Option<&str>) -> anyhow::Result<String> {
    let cse = cse.map(|c| format!("/{}", c.trim_start_matches('/')));
    let rel = if let Some(rest) = id.strip_prefix("//") {
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("absolute AE-ID '{id}' has no path"))?;
        if !host.eq_ignore_ascii_case(sp) {
            bail!("AE-ID '{id}' belongs to SP '{host}', not '{sp}'");
        }
        format!("/{path}")
    } else if id.starts_with('/') {
        id.to_owned()
    } else if id.starts_with('C') {
        let cse = cse.as_deref().ok_or_else(|| {
            anyhow!("AE-ID-Stem '{id}' is CSE-relative: give the registrar with --cse /CSE-ID")
        })?;
        format!("{cse}/{id}")
    } else if id.starts_with('S') {
        format!("/{id}")
    } else {
        bail!("AE-ID '{id}' must start with C or S (TS-0001 table 7.2-1)");
    };
    if let (Some(cse), Some((given, _))) = (&cse, rel[1..].split_once('/')) {
        if &format!("/{given}") != cse {
            bail!("AE-ID '{id}' names registrar /{given}, not {cse}");
        }
    }
    certs::check_sp_relative_ae_id(&rel).map_err(e)?;
    Ok(rel)
}

/// What `--kind`, `--id`, `--sp`, `--cse`, `--in-cse` name.
pub fn leaf_name(
    kind: Kind,
    id: &str,
    sp: Option<&str>,
    cse: Option<&str>,
    in_cse: &str,
) -> anyhow::Result<LeafName> {
    let need_sp =
        || sp.ok_or_else(|| anyhow!("--sp SP-FQDN is required for {kind:?} certificates"));
    Ok(match kind {
        Kind::Cse => {
            let sp = certs::check_fqdn(need_sp()?).map_err(e)?;
            let cse_id = match id.strip_prefix("//") {
                Some(rest) => {
                    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                    if !host.eq_ignore_ascii_case(&sp) {
                        bail!("CSE-ID '{id}' belongs to SP '{host}', not '{sp}'");
                    }
                    format!("/{path}")
                }
                None => format!("/{}", id.trim_start_matches('/')),
            };
            let naming = certs::CseNaming::new(&sp, in_cse).map_err(e)?;
            let cse_id = m2m_core::CseId::parse(&cse_id).map_err(|err| anyhow!(err.dbg))?;
            naming.dns_name(&cse_id).map_err(e)?;
            LeafName::Cse { cse_id, naming }
        }
        Kind::Ae => {
            let sp = certs::check_fqdn(need_sp()?).map_err(e)?;
            let ae_id = normalize_ae_id(id, &sp, cse)?;
            LeafName::Ae { ae_id, sp }
        }
        Kind::Maf | Kind::Mef | Kind::Das => {
            let fqdn = certs::check_fqdn(id).map_err(e)?;
            if let Some(sp) = sp {
                let naming = certs::CseNaming::new(sp, in_cse).map_err(e)?;
                if !matches!(naming.cse_of(&fqdn), Ok(None)) {
                    bail!(
                        "'{fqdn}' is the public domain name of a CSE (<cse>.<in>.<sp>, TS-0001 6.5.1.1); \
                         use a name outside {} for a {}",
                        naming.dns_name(naming.in_cse.as_ref().expect("checked")).map_err(e)?,
                        format!("{kind:?}").to_lowercase()
                    );
                }
            }
            LeafName::Fqdn(fqdn)
        }
    })
}

fn load_ca(dir: &Path) -> anyhow::Result<(X509, PKey<Private>)> {
    let pem_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    let ca = X509::from_pem(
        &fs::read(&pem_path).with_context(|| format!("cannot read {}", pem_path.display()))?,
    )
    .map_err(|err| anyhow!("{} holds no certificate: {err}", pem_path.display()))?;
    // A CA key others can read may already be copied: refuse to sign with it.
    m2m_security::secure_environment::check_private_file(&key_path).map_err(|e| anyhow!(e))?;
    let key_pem = Zeroizing::new(
        fs::read(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?,
    );
    // The error of a failed key parse says nothing about the key's content.
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|_| anyhow!("{} holds no readable private key", key_path.display()))?;
    let matches = ca
        .public_key()
        .map(|pk| pk.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        bail!(
            "{} is not the key of {}",
            key_path.display(),
            pem_path.display()
        );
    }
    Ok((ca, key))
}

/// The CA's current list, verified with its key; empty when there is none yet.
fn current_crl(dir: &Path, ca: &X509) -> anyhow::Result<(Vec<RevokedEntry>, u64)> {
    let path = dir.join("crl.pem");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => bail!("cannot read {}: {err}", path.display()),
    };
    let crls = revocation::parse_pem_crls(&text).map_err(e)?;
    let [crl] = crls.as_slice() else {
        bail!("{} must hold exactly one CRL", path.display());
    };
    let key = ca.public_key().map_err(|err| anyhow!("CA key: {err}"))?;
    if !crl.verify(&key).unwrap_or(false) {
        bail!("{} is not signed by this CA", path.display());
    }
    Ok((revocation::crl_entries(crl), revocation::crl_number(crl)))
}

/// Signs and writes DIR/crl.pem by rename (readers see the old list or the new one, never half).
fn write_crl(
    dir: &Path,
    ca: &X509,
    key: &PKey<Private>,
    revoked: &[RevokedEntry],
    number: u64,
    days: u32,
) -> anyhow::Result<PathBuf> {
    if days == 0 {
        bail!("--days must be at least 1");
    }
    let now = now_unix();
    let crl = revocation::make_crl(
        ca,
        key,
        &revocation::CrlContent {
            revoked,
            number,
            this_update: now,
            next_update: now + i64::from(days) * 86_400,
        },
    )
    .map_err(e)?;
    let pem = crl.to_pem().map_err(|err| anyhow!("CRL: {err}"))?;
    let path = dir.join("crl.pem");
    // A temporary file of its own (two runs at once do not write into each other's), renamed
    // into place. Revocations are read-modify-write: run one at a time per CA.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, &pem).context("cannot write the CRL")?;
    {
        use std::os::unix::fs::PermissionsExt;
        // A CRL is public: whoever checks certificates reads it.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .context("cannot write the CRL")?;
    }
    tmp.as_file().sync_all().context("cannot write the CRL")?;
    tmp.persist(&path)
        .map_err(|e| anyhow!("cannot replace {}: {}", path.display(), e.error))?;
    Ok(path)
}

/// `m2m pki revoke`: returns the list's path, how many entries were added and how many it holds.
pub fn revoke(a: &RevokeArgs) -> anyhow::Result<(PathBuf, usize, usize)> {
    if a.certs.is_empty() && a.serial.is_empty() {
        bail!("name certificates to revoke (files or --serial)");
    }
    let (ca, key) = load_ca(&a.ca)?;
    let mut serials = Vec::new();
    for path in &a.certs {
        let cert = X509::from_pem(
            &fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .map_err(|err| anyhow!("{} holds no certificate: {err}", path.display()))?;
        let ca_key = ca.public_key().map_err(|err| anyhow!("CA key: {err}"))?;
        let issued_here = cert.issuer_name().to_der().ok() == ca.subject_name().to_der().ok()
            && cert.verify(&ca_key).unwrap_or(false);
        if !issued_here {
            bail!("{} was not issued by this CA", path.display());
        }
        let serial = cert
            .serial_number()
            .to_bn()
            .map_err(|err| anyhow!("serial: {err}"))?;
        serials.push(serial.to_vec());
    }
    for hex_serial in &a.serial {
        let digits: String = hex_serial.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits)
            .ok()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| anyhow!("--serial '{hex_serial}' is not a hex serial number"))?;
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        serials.push(trimmed);
    }
    let (mut entries, number) = current_crl(&a.ca, &ca)?;
    let now = now_unix();
    let mut added = 0;
    for serial in serials {
        if !entries.iter().any(|r| r.serial == serial) {
            entries.push(RevokedEntry {
                serial,
                revoked_at: now,
            });
            added += 1;
        }
    }
    let path = write_crl(&a.ca, &ca, &key, &entries, number + 1, a.days)?;
    Ok((path, added, entries.len()))
}

/// `m2m pki crl`: returns the list's path and how many certificates it revokes.
pub fn resign_crl(a: &CrlArgs) -> anyhow::Result<(PathBuf, usize)> {
    let (ca, key) = load_ca(&a.ca)?;
    let (entries, number) = current_crl(&a.ca, &ca)?;
    let path = write_crl(&a.ca, &ca, &key, &entries, number + 1, a.days)?;
    Ok((path, entries.len()))
}

/// `m2m pki issue`: returns the paths of PREFIX.pem and PREFIX.key (none for a `--public-key`)
/// and the identity the certificate names.
pub fn issue(a: &IssueArgs) -> anyhow::Result<(PathBuf, Option<PathBuf>, CertIdentity)> {
    let pem_path = with_ext(&a.out, ".pem");
    let key_path = with_ext(&a.out, ".key");
    check_free(&pem_path, a.force)?;
    // A key file of an earlier issue would sit next to a certificate it does not match.
    check_free(&key_path, a.force)?;
    let name = leaf_name(a.kind, &a.id, a.sp.as_deref(), a.cse.as_deref(), &a.in_cse)?;
    let (ca, ca_key) = load_ca(&a.ca)?;
    let v = validity(a.days, a.not_before.as_deref(), a.not_after.as_deref())?;
    let (leaf, key) = match &a.public_key {
        Some(path) => {
            let pem = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let public = openssl::pkey::PKey::public_key_from_pem(&pem)
                .map_err(|_| anyhow!("{}: not a PEM public key", path.display()))?;
            let p256 = public.ec_key().ok().and_then(|k| k.group().curve_name())
                == Some(openssl::nid::Nid::X9_62_PRIME256V1);
            if !p256 {
                bail!(
                    "{}: not a P-256 key (TS-0003 clause 10.1 certificates are P-256)",
                    path.display()
                );
            }
            if a.force && key_path.exists() {
                fs::remove_file(&key_path)
                    .with_context(|| format!("cannot remove {}", key_path.display()))?;
            }
            (
                certs::issue(&name, &public, &ca, &ca_key, v, &a.dns).map_err(e)?,
                None,
            )
        }
        None => {
            let key = certs::generate_key(match a.key_type {
                KeyTypeArg::P256 => KeyType::P256,
                KeyTypeArg::P384 => KeyType::P384,
                KeyTypeArg::Rsa => KeyType::Rsa2048,
            })
            .map_err(e)?;
            let leaf = certs::issue(&name, &key, &ca, &ca_key, v, &a.dns).map_err(e)?;
            (leaf, Some(key))
        }
    };
    // The CA's nameConstraints and basicConstraints must admit it (validity aside: expired and
    // not-yet-valid certificates are made on purpose).
    certs::verify_with_ca(&leaf, &ca, false)
        .map_err(|r| anyhow!("the CA cannot issue this certificate: {r}"))?;
    if let Err(r) = certs::check_profile(&leaf) {
        eprintln!("warning: certificate is outside the TS-0003 profile: {r}");
    }
    let naming = match &name {
        LeafName::Ae { sp, .. } => certs::CseNaming::new(sp, &a.in_cse).map_err(e)?,
        LeafName::Cse { naming, .. } => naming.clone(),
        LeafName::Fqdn(f) => {
            // A MAF/MEF certificate outside any SP's CSE names: read against its own domain.
            let sp = a.sp.clone().unwrap_or_else(|| f.clone());
            certs::CseNaming::new(&sp, &a.in_cse)
                .or_else(|_| certs::CseNaming::without_cses(&sp))
                .map_err(e)?
        }
    };
    let id = certs::identity_of(&leaf, &naming)
        .map_err(|r| anyhow!("internal: the new certificate names no identity: {r}"))?;
    if let Some(parent) = pem_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let key_path = match &key {
        Some(key) => {
            write_private(&key_path, &key_pem(key)?)?;
            Some(key_path)
        }
        None => None,
    };
    let mut chain = leaf.to_pem()?;
    chain.extend(ca.to_pem()?);
    write_public(&pem_path, &chain)?;
    Ok((pem_path, key_path, id))
}

/// A certificate's text as it may go to a terminal: control characters escaped.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn name_text(n: &X509NameRef) -> String {
    n.entries()
        .map(|en| {
            let k = en.object().nid().short_name().unwrap_or("?");
            let v = en.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{k}={}", printable(&v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn san_lines(cert: &X509Ref) -> Vec<String> {
    let Some(sans) = cert.subject_alt_names() else {
        return vec![];
    };
    sans.iter()
        .map(|gn| {
            if let Some(d) = gn.dnsname() {
                format!("DNS:{}", printable(d))
            } else if let Some(u) = gn.uri() {
                format!("URI:{}", printable(u))
            } else if let Some(m) = gn.email() {
                format!("email:{}", printable(m))
            } else if let Some(ip) = gn.ipaddress() {
                match ip.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])
                    ),
                    16 => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(ip);
                        format!("IP:{}", std::net::Ipv6Addr::from(b))
                    }
                    _ => "IP:?".into(),
                }
            } else if let Some(dn) = gn.directory_name() {
                format!("DirName:{}", name_text(dn))
            } else {
                "other name".into()
            }
        })
        .collect()
}

/// `m2m pki show`: the text it prints.
pub fn show(a: &ShowArgs) -> anyhow::Result<String> {
    let pem = fs::read(&a.cert).with_context(|| format!("cannot read {}", a.cert.display()))?;
    let cert = X509::from_pem(&pem)
        .map_err(|err| anyhow!("{} holds no PEM certificate: {err}", a.cert.display()))?;
    let now = openssl::asn1::Asn1Time::from_unix(now_unix() as _)?;
    let state = if cert.not_after() < now {
        "expired"
    } else if cert.not_before() > now {
        "not yet valid"
    } else {
        "valid now"
    };
    let key = cert.public_key()?;
    let sig = cert.signature_algorithm().object().nid();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11}{v}\n"));
    line("subject:", name_text(cert.subject_name()));
    line("issuer:", name_text(cert.issuer_name()));
    line(
        "serial:",
        cert.serial_number().to_bn()?.to_hex_str()?.to_string(),
    );
    line(
        "validity:",
        format!("{} to {} ({state})", cert.not_before(), cert.not_after()),
    );
    line("key:", certs::key_type_name(&key));
    line(
        "signature:",
        sig.long_name().unwrap_or("unknown").to_string(),
    );
    let sans = san_lines(&cert);
    if sans.is_empty() {
        line("SAN:", "(none)".into());
    }
    for s in sans {
        line("SAN:", s);
    }
    line(
        "profile:",
        match certs::check_profile(&cert) {
            Ok(()) => "TS-0003 10.1.1: ok".into(),
            Err(r) => format!("outside TS-0003 10.1.1: {r}"),
        },
    );
    let naming = a.sp.as_deref().map(|sp| {
        certs::CseNaming::new(sp, &a.in_cse).or_else(|_| certs::CseNaming::without_cses(sp))
    });
    let ident = match naming {
        None => "give --sp SP-FQDN to read AE-IDs and CSE-IDs".into(),
        Some(Err(r)) => format!("none: {r}"),
        Some(Ok(naming)) => match certs::identity_of(&cert, &naming) {
            Ok(id) => id.to_string(),
            Err(r) => format!("none: {r}"),
        },
    };
    line("identity:", printable(&ident));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::fs::PermissionsExt;

    const SP: &str = "m2m.example.com";

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(clap::Subcommand)]
    enum Top {
        Pki(PkiArgs),
    }

    fn parse(args: &[&str]) -> PkiArgs {
        let mut v = vec!["m2m", "pki"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().cmd {
            Top::Pki(p) => p,
        }
    }

    fn issue_args(args: &[&str]) -> IssueArgs {
        let mut v = vec!["issue"];
        v.extend_from_slice(args);
        match parse(&v).command {
            PkiCommand::Issue(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_public_key_is_certified_without_a_key_file_and_only_on_p256() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let write_public = |name: &str, key: &PKey<openssl::pkey::Private>| {
            let path = dir.path().join(name);
            fs::write(&path, key.public_key_to_pem().unwrap()).unwrap();
            path
        };
        let p256 = certs::generate_key(KeyType::P256).unwrap();
        let p384 = certs::generate_key(KeyType::P384).unwrap();
        let (good, bad) = (
            write_public("p256.pem", &p256),
            write_public("p384.pem", &p384),
        );
        let prefix = dir.path().join("leaf");
        let args = |public: &Path, force: bool| {
            let mut v = vec![
                "--ca",
                ca.to_str().unwrap(),
                "--kind",
                "cse",
                "--id",
                "/id-mn",
                "--sp",
                SP,
                "--out",
                prefix.to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
            ];
            if force {
                v.push("--force");
            }
            issue_args(&v)
        };
        let e = issue(&args(&bad, false)).unwrap_err().to_string();
        assert!(e.contains("not a P-256 key"), "{e}");
        let (pem, key, _) = issue(&args(&good, false)).unwrap();
        assert!(key.is_none() && !with_ext(&prefix, ".key").exists());
        let leaf = X509::from_pem(&fs::read(&pem).unwrap()).unwrap();
        assert!(
            leaf.public_key().unwrap().public_eq(&p256),
            "the certificate is the given key's"
        );
        // A key file of an earlier issue goes when the certificate is replaced for a token key.
        fs::write(with_ext(&prefix, ".key"), "stale").unwrap();
        assert!(
            issue(&args(&good, false)).is_err(),
            "refused without --force"
        );
        issue(&args(&good, true)).unwrap();
        assert!(!with_ext(&prefix, ".key").exists());
    }

    fn ca_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ca");
        run(parse(&[
            "ca",
            "--out",
            out.to_str().unwrap(),
            "--sp",
            SP,
            "--name",
            "m2m.example.com root CA",
            "--permit-dns",
            "keys.example.net",
            "--permit-dns",
            "localhost",
        ]))
        .unwrap();
        dir
    }

    fn load(path: &Path) -> Vec<X509> {
        X509::stack_from_pem(&fs::read(path).unwrap()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ca_files_and_profile() {
        let dir = ca_dir();
        let ca_dir = dir.path().join("ca");
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        let ca = load(&ca_dir.join("ca.pem")).remove(0);
        certs::check_profile(&ca).unwrap();
        let ku = ca.key_usage().unwrap();
        use openssl::x509::X509KeyUsage as K;
        assert!(ku.contains(K::KEY_CERT_SIGN | K::CRL_SIGN | K::DIGITAL_SIGNATURE));
        let text = String::from_utf8(ca.to_text().unwrap()).unwrap();
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("URI:m2m.example.com"), "{text}");
        assert!(text.contains("DNS:m2m.example.com"), "{text}");
        assert!(text.contains("DNS:keys.example.net"), "{text}");
        // No silent overwrite of a CA key.
        let again = run(parse(&["ca", "--out", ca_dir.to_str().unwrap()]));
        assert!(again.unwrap_err().to_string().contains("--force"));
    }

    #[test]
    fn issue_each_kind_and_read_it_back() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let ca = ca.to_str().unwrap();
        let ent = |id: &str| {
            CertIdentity::Entity(
                m2m_core::EntityId::parse(
                    id,
                    &m2m_core::Home::sp(m2m_core::SpId::parse(SP).unwrap()),
                )
                .unwrap(),
            )
        };
        let cases: [(&[&str], CertIdentity); 6] = [
            (
                &[
                    "--kind",
                    "cse",
                    "--id",
                    "/id-mn",
                    "--sp",
                    SP,
                    "--dns",
                    "localhost",
                ],
                ent("/id-mn"),
            ),
            (
                &["--kind", "cse", "--id", "/id-in", "--sp", SP],
                ent("/id-in"),
            ),
            (
                &[
                    "--kind", "ae", "--id", "Cphone", "--cse", "/id-in", "--sp", SP,
                ],
                ent("/id-in/Cphone"),
            ),
            (
                &[
                    "--kind",
                    "ae",
                    "--id",
                    "//m2m.example.com/Slock",
                    "--sp",
                    SP,
                ],
                ent("/Slock"),
            ),
            (
                &["--kind", "maf", "--id", "maf.keys.example.net"],
                CertIdentity::Fqdn("maf.keys.example.net".into()),
            ),
            (
                &["--kind", "mef", "--id", "mef.m2m.example.com", "--sp", SP],
                CertIdentity::Fqdn("mef.m2m.example.com".into()),
            ),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            let prefix = dir.path().join(format!("out/leaf{i}"));
            let mut v = vec!["--ca", ca, "--out", prefix.to_str().unwrap()];
            v.extend_from_slice(args);
            let (pem, key, id) = issue(&issue_args(&v)).unwrap();
            let key = key.expect("a key file");
            assert_eq!(id, want);
            assert_eq!(mode(&key), 0o600);
            let chain = load(&pem);
            assert_eq!(chain.len(), 2, "leaf then CA");
            certs::check_profile(&chain[0]).unwrap();
            let naming = certs::CseNaming::new(SP, "/id-in").unwrap();
            assert_eq!(certs::identity_of(&chain[0], &naming).unwrap(), want);
            certs::verify_with_ca(&chain[0], &chain[1], true).unwrap();
            let pem_text = fs::read_to_string(&pem).unwrap();
            assert!(!pem_text.contains("PRIVATE KEY"));
            // The key file holds the key of the certificate.
            let k = PKey::private_key_from_pem(&fs::read(&key).unwrap()).unwrap();
            assert!(chain[0].public_key().unwrap().public_eq(&k));
        }
    }

    #[test]
    fn ae_id_forms_agree() {
        for (id, cse) in [
            ("Cphone", Some("/id-in")),
            ("Cphone", Some("id-in")),
            ("/id-in/Cphone", None),
            ("/id-in/Cphone", Some("/id-in")),
            ("//M2M.example.com/id-in/Cphone", None),
        ] {
            assert_eq!(normalize_ae_id(id, SP, cse).unwrap(), "/id-in/Cphone");
        }
        assert!(normalize_ae_id("Cphone", SP, None).is_err());
        assert!(normalize_ae_id("/id-in/Cphone", SP, Some("/id-mn")).is_err());
        assert!(normalize_ae_id("//other.org/Sx", SP, None).is_err());
        assert!(normalize_ae_id("phone", SP, None).is_err());
        assert!(normalize_ae_id("/id-in/Sphone", SP, None).is_err());
    }

    #[test]
    fn refusals() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let ca = ca.to_str().unwrap();
        let out = dir.path().join("x");
        let out = out.to_str().unwrap();
        let fails = |args: &[&str], why: &str| {
            let mut v = vec!["--ca", ca, "--out", out];
            v.extend_from_slice(args);
            let err = issue(&issue_args(&v)).unwrap_err().to_string();
            assert!(err.contains(why), "{args:?}: {err}");
        };
        fails(&["--kind", "cse", "--id", "/id-mn"], "--sp");
        fails(
            &["--kind", "cse", "--id", "/id_mn", "--sp", SP],
            "DNS label",
        );
        fails(
            &[
                "--kind",
                "maf",
                "--id",
                "maf.id-in.m2m.example.com",
                "--sp",
                SP,
            ],
            "public domain name of a CSE",
        );
        fails(
            &["--kind", "cse", "--id", "/ID-MN", "--sp", SP],
            "DNS label",
        );
        fails(&["--kind", "maf", "--id", "*.example.net"], "wildcard");
        // Outside the CA's nameConstraints.
        fails(
            &["--kind", "cse", "--id", "/id-mn", "--sp", "other.org"],
            "subtree",
        );
        fails(&["--kind", "maf", "--id", "maf.example.org"], "subtree");
        fails(
            &[
                "--kind",
                "ae",
                "--id",
                "/Sx",
                "--sp",
                SP,
                "--dns",
                "host.example.org",
            ],
            "subtree",
        );
        fails(
            &[
                "--kind",
                "cse",
                "--id",
                "/x",
                "--sp",
                SP,
                "--not-before",
                "2030-01-02T00:00:00Z",
                "--not-after",
                "2030-01-01T00:00:00Z",
            ],
            "end before",
        );
        assert!(!Path::new(&format!("{out}.key")).exists());
        assert!(!Path::new(&format!("{out}.pem")).exists());
        // Existing files are kept unless --force.
        let ok = [
            "--ca", ca, "--out", out, "--kind", "cse", "--id", "/id-mn", "--sp", SP,
        ];
        issue(&issue_args(&ok)).unwrap();
        let err = issue(&issue_args(&ok)).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        fs::set_permissions(format!("{out}.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let mut forced = ok.to_vec();
        forced.push("--force");
        issue(&issue_args(&forced)).unwrap();
        assert_eq!(mode(Path::new(&format!("{out}.key"))), 0o600);
    }

    #[test]
    fn a_ca_key_others_can_read_is_refused() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let out = dir.path().join("leaf");
        let args = [
            "--ca",
            ca.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kind",
            "cse",
            "--id",
            "/id-mn",
            "--sp",
            SP,
        ];
        fs::set_permissions(ca.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", issue(&issue_args(&args)).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!out.with_extension("pem").exists());
        fs::set_permissions(ca.join("ca.key"), fs::Permissions::from_mode(0o600)).unwrap();
        issue(&issue_args(&args)).unwrap();
    }

    #[test]
    fn expired_and_not_yet_valid_dates() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let ca = ca.to_str().unwrap();
        let old = dir.path().join("old");
        let (pem, _, _) = issue(&issue_args(&[
            "--ca",
            ca,
            "--out",
            old.to_str().unwrap(),
            "--kind",
            "cse",
            "--id",
            "/id-mn",
            "--sp",
            SP,
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-01-02T00:00:00+00:00",
        ]))
        .unwrap();
        let chain = load(&pem);
        assert_eq!(
            chain[0].not_before().to_string(),
            "Jan  1 00:00:00 2020 GMT"
        );
        assert_eq!(chain[0].not_after().to_string(), "Jan  2 00:00:00 2020 GMT");
        let err = certs::verify_with_ca(&chain[0], &chain[1], true).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let shown = show(&ShowArgs {
            in_cse: "/id-in".into(),
            cert: pem,
            sp: Some(SP.into()),
        })
        .unwrap();
        assert!(shown.contains("(expired)"), "{shown}");

        let future = dir.path().join("future");
        let (pem, _, _) = issue(&issue_args(&[
            "--ca",
            ca,
            "--out",
            future.to_str().unwrap(),
            "--kind",
            "ae",
            "--id",
            "/Sx",
            "--sp",
            SP,
            "--not-before",
            "2999-01-01T00:00:00Z",
            "--days",
            "2",
        ]))
        .unwrap();
        let chain = load(&pem);
        assert_eq!(chain[0].not_after().to_string(), "Jan  3 00:00:00 2999 GMT");
        let err = certs::verify_with_ca(&chain[0], &chain[1], true).unwrap_err();
        assert!(err.contains("not yet valid"), "{err}");

        // Only --not-after: a --days period ending then.
        let v = validity(10, None, Some("2020-01-11T00:00:00Z")).unwrap();
        assert_eq!(v.not_after - v.not_before, 10 * 86_400);
    }

    #[test]
    fn non_profile_keys_for_tests() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let ca = ca.to_str().unwrap();
        for (kt, why) in [("p384", "secp384r1"), ("rsa", "RSA")] {
            let out = dir.path().join(kt);
            let (pem, _, _) = issue(&issue_args(&[
                "--ca",
                ca,
                "--out",
                out.to_str().unwrap(),
                "--kind",
                "cse",
                "--id",
                "/id-mn",
                "--sp",
                SP,
                "--key-type",
                kt,
            ]))
            .unwrap();
            let chain = load(&pem);
            let err = certs::check_profile(&chain[0]).unwrap_err();
            assert!(err.contains(why), "{err}");
            let shown = show(&ShowArgs {
                in_cse: "/id-in".into(),
                cert: pem,
                sp: None,
            })
            .unwrap();
            assert!(shown.contains("outside TS-0003"), "{shown}");
        }
    }

    #[test]
    fn show_prints_identity_not_keys() {
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let out = dir.path().join("ae");
        let (pem, _, _) = issue(&issue_args(&[
            "--ca",
            ca.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kind",
            "ae",
            "--id",
            "Cphone",
            "--cse",
            "/id-in",
            "--sp",
            SP,
        ]))
        .unwrap();
        let shown = show(&ShowArgs {
            in_cse: "/id-in".into(),
            cert: pem.clone(),
            sp: Some(SP.into()),
        })
        .unwrap();
        for want in [
            "subject:   CN=/id-in/Cphone",
            "issuer:    CN=m2m.example.com root CA",
            "key:       EC P-256",
            "signature: ecdsa-with-SHA256",
            "SAN:       URI:onem2m://m2m.example.com/id-in/Cphone",
            "profile:   TS-0003 10.1.1: ok",
            "identity:  AE-ID //m2m.example.com/id-in/Cphone",
            "(valid now)",
        ] {
            assert!(shown.contains(want), "missing {want:?} in\n{shown}");
        }
        let other = show(&ShowArgs {
            in_cse: "/id-in".into(),
            cert: pem.clone(),
            sp: Some("other.org".into()),
        })
        .unwrap();
        assert!(other.contains("identity:  none:"), "{other}");
        let no_sp = show(&ShowArgs {
            in_cse: "/id-in".into(),
            cert: pem,
            sp: None,
        })
        .unwrap();
        assert!(no_sp.contains("give --sp"), "{no_sp}");
        let ca_shown = show(&ShowArgs {
            in_cse: "/id-in".into(),
            cert: ca.join("ca.pem"),
            sp: None,
        })
        .unwrap();
        assert!(ca_shown.contains("SAN:       (none)"), "{ca_shown}");
    }

    /// Interop with the system `openssl` command: it verifies the chain (with the CA's URI and DNS
    /// nameConstraints) and shows the subjectAltName.
    #[test]
    fn openssl_cli_verifies_issued_certificates() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let probe = std::process::Command::new("openssl")
            .arg("version")
            .output();
        if !probe.as_ref().is_ok_and(|o| o.status.success()) {
            assert!(!ci, "the openssl command is required in CI");
            eprintln!("!!!!!!!! SKIPPED openssl_cli_verifies_issued_certificates: no `openssl` command !!!!!!!!");
            return;
        }
        let dir = ca_dir();
        let ca = dir.path().join("ca");
        let ca_pem = ca.join("ca.pem");
        let openssl = |args: &[&str]| {
            let o = std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr),
            )
        };
        for (name, args, san) in [
            (
                "cse",
                vec!["--kind", "cse", "--id", "/id-mn", "--sp", SP],
                "DNS:id-mn.id-in.m2m.example.com",
            ),
            (
                "ae",
                vec![
                    "--kind", "ae", "--id", "Cphone", "--cse", "/id-in", "--sp", SP,
                ],
                "URI:onem2m://m2m.example.com/id-in/Cphone",
            ),
            (
                "maf",
                vec!["--kind", "maf", "--id", "maf.keys.example.net"],
                "DNS:maf.keys.example.net",
            ),
        ] {
            let out = dir.path().join(name);
            let mut v = vec!["--ca", ca.to_str().unwrap(), "--out", out.to_str().unwrap()];
            v.extend(args);
            let (pem, _, _) = issue(&issue_args(&v)).unwrap();
            let (ok, text) = openssl(&[
                "verify",
                "-CAfile",
                ca_pem.to_str().unwrap(),
                pem.to_str().unwrap(),
            ]);
            assert!(ok && text.contains(": OK"), "openssl verify {name}: {text}");
            let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", pem.to_str().unwrap()]);
            assert!(ok, "{text}");
            assert!(text.contains(san), "{name}: {san} not in\n{text}");
            assert!(text.contains("ecdsa-with-SHA256"), "{text}");
            assert!(text.contains("prime256v1"), "{text}");
            assert!(text.contains("Digital Signature"), "{text}");
        }
        // An expired certificate is refused by openssl too.
        let out = dir.path().join("old");
        let (pem, _, _) = issue(&issue_args(&[
            "--ca",
            ca.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kind",
            "cse",
            "--id",
            "/id-mn",
            "--sp",
            SP,
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-01-02T00:00:00Z",
        ]))
        .unwrap();
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            ca_pem.to_str().unwrap(),
            pem.to_str().unwrap(),
        ]);
        assert!(!ok && text.contains("expired"), "{text}");
        // A certificate outside the CA's nameConstraints (made with the library, `issue` refuses it).
        let (ca_cert, ca_key) = load_ca(&ca).unwrap();
        let key = certs::generate_key(KeyType::P256).unwrap();
        let name = LeafName::Cse {
            cse_id: m2m_core::CseId::parse("/id-mn").unwrap(),
            naming: certs::CseNaming::new("other.org", "/id-in").unwrap(),
        };
        let bad = certs::issue(
            &name,
            &key,
            &ca_cert,
            &ca_key,
            Validity::days_from_now(1),
            &[],
        )
        .unwrap();
        let bad_pem = dir.path().join("bad.pem");
        fs::write(&bad_pem, bad.to_pem().unwrap()).unwrap();
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            ca_pem.to_str().unwrap(),
            bad_pem.to_str().unwrap(),
        ]);
        assert!(!ok && text.contains("subtree"), "{text}");
        // The CA's nameConstraints as openssl reads them.
        let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", ca_pem.to_str().unwrap()]);
        assert!(ok && text.contains("Name Constraints: critical"), "{text}");
        assert!(text.contains("URI:m2m.example.com"), "{text}");
    }
}
