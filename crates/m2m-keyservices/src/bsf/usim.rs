//! A software USIM: the subscriber's IMPI, K and OPc, and the highest SQN it accepted, in a file
//! only its owner may read (0600). The project simulates the UICC; everything it computes is the
//! USIM's real algorithm (MILENAGE, TS 35.206) and check (TS 33.102 clause 6.3.3).
//!
//! The file is JSON: `{"impi": "...", "k": "<32 hex>", "opc": "<32 hex>", "sqnHighest": N}`, and
//! once the device has bootstrapped, the key the ME keeps (TS 33.220 clause 4.5.2): `"bootstrapped":
//! {"bTid": ..., "ks": "<64 hex>", "rand": "<32 hex>", "expires": "<RFC 3339>"}`. The highest SQN is
//! written (to a temporary file renamed over the old one) before the answer that accepted it leaves
//! the device, so a replayed challenge is refused after a crash too.

use m2m_security::gba::key_derivation::Ks;
use m2m_security::gba::milenage::{Block, Milenage};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UsimFile {
    impi: String,
    k: String,
    opc: String,
    sqn_highest: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bootstrapped: Option<KeptKey>,
}

/// The bootstrapped key as the file keeps it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeptKey {
    b_tid: String,
    ks: String,
    rand: String,
    expires: String,
}

impl Drop for UsimFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.k.zeroize();
        self.opc.zeroize();
        if let Some(b) = &mut self.bootstrapped {
            b.ks.zeroize();
        }
    }
}

/// A USIM held in a file.
pub struct SoftwareUsim {
    path: PathBuf,
    pub impi: String,
    k: Zeroizing<Block>,
    opc: Zeroizing<Block>,
    /// The highest SQN accepted.
    pub sqn_highest: u64,
    /// The key of the last bootstrapping, kept for later runs.
    pub bootstrapped: Option<super::Bootstrapped>,
}

impl std::fmt::Debug for SoftwareUsim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareUsim")
            .field("path", &self.path)
            .field("impi", &self.impi)
            .finish_non_exhaustive()
    }
}

fn block(hex_text: &str, what: &str) -> Result<Zeroizing<Block>, String> {
    let v = Zeroizing::new(hex::decode(hex_text).map_err(|_| format!("{what} is not hex"))?);
    let b: Block = v[..]
        .try_into()
        .map_err(|_| format!("{what} is not 16 octets"))?;
    Ok(Zeroizing::new(b))
}

impl SoftwareUsim {
    /// Reads a USIM file, which must be private (0600).
    pub fn load(path: &Path) -> Result<SoftwareUsim, String> {
        m2m_security::secure_environment::check_private_file(path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let f: UsimFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a USIM file: {e}", path.display()))?;
        let k = block(&f.k, "k").map_err(|e| format!("{}: {e}", path.display()))?;
        let opc = block(&f.opc, "opc").map_err(|e| format!("{}: {e}", path.display()))?;
        // A kept key that does not read is dropped: the device bootstraps again.
        let bootstrapped = f.bootstrapped.as_ref().and_then(|b| {
            let ks = Zeroizing::new(hex::decode(&b.ks).ok()?);
            let rand = hex::decode(&b.rand).ok()?;
            Some(super::Bootstrapped {
                b_tid: b.b_tid.clone(),
                ks: Ks::from_bytes(ks[..].try_into().ok()?),
                rand: rand.try_into().ok()?,
                impi: f.impi.clone(),
                expires: chrono::DateTime::parse_from_rfc3339(&b.expires)
                    .ok()?
                    .with_timezone(&chrono::Utc),
            })
        });
        Ok(SoftwareUsim {
            path: path.to_path_buf(),
            impi: f.impi.clone(),
            k,
            opc,
            sqn_highest: f.sqn_highest,
            bootstrapped,
        })
    }

    /// Writes a new USIM file (0600; refused when the file exists).
    pub fn create(path: &Path, impi: &str, k: &Block, opc: &Block) -> Result<SoftwareUsim, String> {
        let usim = SoftwareUsim {
            path: path.to_path_buf(),
            impi: impi.to_owned(),
            k: Zeroizing::new(*k),
            opc: Zeroizing::new(*opc),
            sqn_highest: 0,
            bootstrapped: None,
        };
        usim.write(true)?;
        Ok(usim)
    }

    /// The USIM's algorithm set.
    pub fn milenage(&self) -> Milenage {
        Milenage::new(*self.k, *self.opc)
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists the highest SQN accepted (before the answer that accepted it is sent).
    pub fn save(&self) -> Result<(), String> {
        self.write(false)
    }

    fn write(&self, create_new: bool) -> Result<(), String> {
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&UsimFile {
                impi: self.impi.clone(),
                k: hex::encode(&self.k[..]),
                opc: hex::encode(&self.opc[..]),
                sqn_highest: self.sqn_highest,
                bootstrapped: self.bootstrapped.as_ref().map(|b| KeptKey {
                    b_tid: b.b_tid.clone(),
                    ks: hex::encode(b.ks.expose()),
                    rand: hex::encode(b.rand),
                    expires: b.expires.to_rfc3339(),
                }),
            })
            .map_err(|e| e.to_string())?,
        );
        let io = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        if create_new {
            let mut f = opts.create_new(true).open(&self.path).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            return f.sync_all().map_err(io);
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut f = opts.create_new(true).open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usim_file_keeps_its_sqn_and_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("usim.json");
        let mut u = SoftwareUsim::create(&path, "i@ims.example", &[1; 16], &[2; 16]).unwrap();
        assert!(SoftwareUsim::create(&path, "i@ims.example", &[1; 16], &[2; 16]).is_err());
        u.sqn_highest = 77;
        u.save().unwrap();
        let back = SoftwareUsim::load(&path).unwrap();
        assert_eq!(back.sqn_highest, 77);
        assert_eq!(back.impi, "i@ims.example");
        assert!(!format!("{back:?}").contains("0101"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                SoftwareUsim::load(&path).is_err(),
                "a readable USIM file is refused"
            );
        }
    }
}
