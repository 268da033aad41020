//! Shared harness of the key-service tests (MAF, MEF, TTP, keystore): one log capture per test
//! binary, a test PKI written to a temporary directory, private files and the in-process MAF set-up.
#![allow(dead_code)]

use m2m_keyservices::maf::{Clock, KmRow, MafClient, MafConfig, RunningMaf};
use m2m_security::certificates::{generate_key, issue, make_ca, KeyType, LeafName, Validity};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

// ----- log capture -------------------------------------------------------------------------------

/// The buffer every test of a binary logs into.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the global subscriber once per binary (a scoped one misses events when other threads
/// cache callsite interest first) and returns its buffer.
pub fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        cap
    })
}

/// Everything logged so far, as written.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

/// Everything logged so far, lower-cased (hex keys may be logged in either case).
pub fn log_text_lowercase() -> String {
    log_text().to_lowercase()
}

// ----- files ---------------------------------------------------------------------------------------

/// Writes a file only its owner may read, as the services demand of key and configuration files;
/// created 0600 and set 0600 again in case it existed with other permissions.
pub fn write_private(path: &Path, data: &[u8]) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ----- PKI -----------------------------------------------------------------------------------------

/// A temporary directory holding `ca.pem` and, per leaf, `{name}.pem` and a private `{name}.key`.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// A P-256 CA named `ca_name` (constrained to `sp` and `fqdns` when given) issuing one P-256
    /// certificate per leaf.
    pub fn new(
        ca_name: &str,
        sp: Option<&str>,
        fqdns: &[String],
        leaves: &[(&str, LeafName)],
    ) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = generate_key(KeyType::P256).unwrap();
        let v = Validity::days_from_now(1);
        let ca = make_ca(ca_name, &ca_key, v, sp, fqdns).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.to_pem().unwrap()).unwrap();
        write_private(
            &dir.path().join("ca.key"),
            &ca_key.private_key_to_pem_pkcs8().unwrap(),
        );
        for (name, leaf) in leaves {
            let key = generate_key(KeyType::P256).unwrap();
            let cert = issue(leaf, &key, &ca, &ca_key, v, &[]).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.pem")),
                cert.to_pem().unwrap(),
            )
            .unwrap();
            write_private(
                &dir.path().join(format!("{name}.key")),
                &key.private_key_to_pem_pkcs8().unwrap(),
            );
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `crl.pem`: the CA's CRL revoking the certificates of `leaves` (TS-0003 clause 8.1.2.2).
    pub fn write_crl(&self, leaves: &[&str]) {
        use m2m_security::revocation::{make_crl, CrlContent, RevokedEntry};
        let read = |name: &str| std::fs::read(self.path(name)).unwrap();
        let ca = openssl::x509::X509::from_pem(&read("ca.pem")).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(&read("ca.key")).unwrap();
        let now = chrono::Utc::now().timestamp();
        let revoked: Vec<RevokedEntry> = leaves
            .iter()
            .map(|name| {
                let cert = openssl::x509::X509::from_pem(&read(&format!("{name}.pem"))).unwrap();
                RevokedEntry {
                    serial: cert.serial_number().to_bn().unwrap().to_vec(),
                    revoked_at: now,
                }
            })
            .collect();
        let content = CrlContent {
            revoked: &revoked,
            number: 1,
            this_update: now,
            next_update: now + 3600,
        };
        let crl = make_crl(&ca, &key, &content).unwrap();
        std::fs::write(self.path("crl.pem"), crl.to_pem().unwrap()).unwrap();
    }
}

/// A CSE-ID certificate leaf of the service provider `sp`.
pub fn cse_leaf(cse_id: &str, sp: &str) -> LeafName {
    LeafName::Cse {
        cse_id: m2m_core::CseId::parse(cse_id).expect("CSE-ID"),
        naming: m2m_security::certificates::CseNaming::new(sp, "/id-in").expect("naming"),
    }
}

// ----- the MAF -------------------------------------------------------------------------------------

/// A MAF on 127.0.0.1:0 with the certificate `maf.pem` of `p`, the given Km rows, `storage.key` of
/// `p` as storage key, no keystore, MEF nor TTP delegations.
pub fn maf_config(p: &Pki, fqdn: &str, sp: &str, km: Vec<KmRow>, storage: &Path) -> MafConfig {
    MafConfig {
        fqdn: fqdn.into(),
        sp_fqdn: sp.into(),
        in_cse_id: "/id-in".into(),
        listen: "127.0.0.1:0".into(),
        certificate: Some(p.path("maf.pem")),
        private_key: Some(p.path("maf.key")),
        trusted_ca: Some(p.path("ca.pem")),
        crl: p.path("crl.pem").exists().then(|| p.path("crl.pem")),
        km,
        storage: storage.to_path_buf(),
        storage_key_file: Some(p.path("storage.key")),
        keystore: None,
        key_file: None,
        passphrase_env: None,
        default_key_lifetime: 3600,
        default_client_lifetime: 86_400,
        max_lifetime: 30 * 86_400,
        sweep_interval: 3600,
        handshake_timeout: None,
        limits: m2m_transport::Limits {
            handshake_timeout_ms: 5_000,
            ..Default::default()
        },
        mef: None,
        ttp: Default::default(),
        pkcs11: None,
        required_level: None,
    }
}

/// A clock the test moves forward by adding seconds to the offset.
pub fn test_clock() -> (Clock, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let o = Arc::clone(&offset);
    (
        Arc::new(move || chrono::Utc::now().timestamp() + o.load(Ordering::SeqCst)),
        offset,
    )
}

pub fn url(maf: &RunningMaf) -> String {
    format!("https://{}", maf.addr)
}

/// A client of the MAF over the CSE-ID certificate `{name}.pem` of `p`.
pub async fn certificate_client(
    maf: &RunningMaf,
    maf_fqdn: &str,
    p: &Pki,
    name: &str,
) -> MafClient {
    MafClient::connect_certificate(
        &url(maf),
        maf_fqdn,
        &p.path(&format!("{name}.pem")),
        &p.path(&format!("{name}.key")),
        &p.path("ca.pem"),
    )
    .await
    .unwrap()
}
