//! Remote rotation of a Kpsa (seed 002 Security Administration: credentials "updated and revoked
//! remotely"), carried by the TS-0022 credentials `<mgmtObj>` (`dcfg:crds`, `pur` "kpsa") of the
//! entity's `<node>`.
//!
//! 1. The administrator chooses a new KpsaID and derives the new Kpsa from the rotation key Krot it
//!    shares with this CSE ([`m2m_security::kdf::rotated_kpsa`], `m2m keys rotate-kpsa`), then
//!    UPDATEs the credentials object: `crid` the new KpsaID, `crse` the new Kpsa as a JWE only the
//!    device can open. Only the administrator may change `crid` of a "kpsa" object.
//! 2. This CSE records that the new KpsaID belongs to the AE the `<node>` hosts and replaces its
//!    current ones, and derives the same key whenever the ID is presented: no secret is stored, sent
//!    or shown ([`Rotation`] keeps IDs only, in `<storage>/rotated-credentials.json`).
//! 3. The device reads the object over its current association, decrypts `crse` and associates
//!    with the new key. From that first completed handshake on, the KpsaIDs it replaces open
//!    nothing (a handshake attempt alone retires nothing: the new ID is no secret).

use m2m_core::{EntityId, Home, M2mError, M2mResult};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId, Secret};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The purpose (`pur`) of a credentials object that carries a Kpsa.
pub const PURPOSE: &str = "kpsa";

/// The rotation key and the rotations recorded so far.
pub struct Rotation {
    krot: Secret,
    path: PathBuf,
    home: Home,
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    rows: Vec<Row>,
    /// KpsaIDs that open nothing any more.
    retired: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    kpsa_id: String,
    /// The AE-ID or CSE-ID, SP-relative.
    entity: String,
    /// The KpsaIDs retired once this one has opened an association.
    replaces: Vec<String>,
    #[serde(default)]
    in_use: bool,
}

/// What a psk_identity is to the rotation table.
pub enum Lookup {
    Rotated(m2m_security::tls::PskKey),
    Retired,
    Unknown,
}

impl Rotation {
    /// `[security] rotation_key` (32 bytes in hex, mode 0600) and the table in the storage
    /// directory; none without the key.
    pub fn from_config(cfg: &crate::Config, home: &Home) -> anyhow::Result<Option<Arc<Rotation>>> {
        let Some(key_path) = &cfg.security.rotation_key else {
            return Ok(None);
        };
        m2m_security::secure_environment::check_private_file(key_path)
            .map_err(|e| anyhow::anyhow!("security.rotation_key: {e}"))?;
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(key_path).map_err(|e| {
                anyhow::anyhow!("security.rotation_key: {}: {e}", key_path.display())
            })?);
        let krot = Secret::from_hex(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "security.rotation_key: {} must hold 32 bytes in hex",
                    key_path.display()
                )
            })?;
        let path = cfg.storage.path.join("rotated-credentials.json");
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        Ok(Some(Arc::new(Rotation {
            krot,
            path,
            home: home.clone(),
            state: Mutex::new(state),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The PSK of a rotated KpsaID, or that a KpsaID is retired.
    pub fn lookup(&self, psk_identity: &str) -> Lookup {
        let state = self.state();
        if state.retired.iter().any(|r| r == psk_identity) {
            return Lookup::Retired;
        }
        let Some(row) = state.rows.iter().find(|r| r.kpsa_id == psk_identity) else {
            return Lookup::Unknown;
        };
        let (Ok(kpsa_id), Ok(entity)) = (
            KpsaId::parse(&row.kpsa_id),
            EntityId::parse(&row.entity, &self.home),
        ) else {
            return Lookup::Retired;
        };
        let key = m2m_security::kdf::rotated_kpsa(&self.krot, &row.kpsa_id, &row.entity);
        Lookup::Rotated(m2m_security::tls::PskKey {
            key: zeroize::Zeroizing::new(key.expose().to_vec()),
            association: Association {
                mode: SaeMode::ProvisionedKey,
                credential: CredentialId::for_kpsa(&kpsa_id),
                entity: Some(entity),
            },
        })
    }

    /// A completed handshake used `kpsa_id`: if it is a rotated one seen for the first time,
    /// the KpsaIDs it replaces are retired now.
    pub fn used(&self, kpsa_id: &str) {
        let mut state = self.state();
        let Some(row) = state
            .rows
            .iter_mut()
            .find(|r| r.kpsa_id == kpsa_id && !r.in_use)
        else {
            return;
        };
        row.in_use = true;
        let (entity, replaces) = (row.entity.clone(), row.replaces.clone());
        for old in &replaces {
            if !state.retired.contains(old) {
                state.retired.push(old.clone());
            }
        }
        state.rows.retain(|r| !replaces.contains(&r.kpsa_id));
        match save(&self.path, &state) {
            Ok(()) => {
                tracing::warn!(target: "audit", entity = %entity, kpsa_id = %kpsa_id, retired = ?replaces, "credential changed: the rotated Kpsa is in use, the replaced ones open nothing")
            }
            Err(e) => {
                tracing::error!(target: "audit", entity = %entity, kpsa_id = %kpsa_id, error = %e, "credential rotation: the table cannot be written")
            }
        }
    }

    /// Records the rotation the administrator asked for: `kpsa_id` belongs to `entity` and
    /// replaces `replaces` (its current KpsaIDs, and any earlier rotation not yet used).
    pub fn prepare(
        &self,
        kpsa_id: &KpsaId,
        entity: &EntityId,
        mut replaces: Vec<String>,
    ) -> M2mResult<()> {
        let id = kpsa_id.to_string();
        let who = entity.sp_relative();
        let mut state = self.state();
        if state.retired.contains(&id) || replaces.contains(&id) {
            return Err(M2mError::bad_request(
                "credentials: this KpsaID was used before; choose a new one",
            ));
        }
        if let Some(other) = state.rows.iter().find(|r| r.kpsa_id == id) {
            if other.entity != who {
                return Err(M2mError::bad_request(
                    "credentials: this KpsaID belongs to another entity",
                ));
            }
            return Ok(());
        }
        for r in state.rows.iter().filter(|r| r.entity == who) {
            replaces.push(r.kpsa_id.clone());
        }
        replaces.sort();
        replaces.dedup();
        state.rows.push(Row {
            kpsa_id: id.clone(),
            entity: who.clone(),
            replaces: replaces.clone(),
            in_use: false,
        });
        save(&self.path, &state).map_err(M2mError::internal)?;
        tracing::warn!(target: "audit", entity = %who, kpsa_id = %id, replaces = ?replaces, "credential rotation prepared");
        Ok(())
    }
}

/// Writes the table by rename (IDs only: it holds no key).
fn save(path: &Path, state: &State) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
