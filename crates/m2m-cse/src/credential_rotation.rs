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
//!
//! KpsaIDs are compared as KpsaIDs (the FQDN part without regard to case), and the retired ones
//! are enforced whenever the table exists, with or without a rotation key configured.

use m2m_core::{EntityId, Home, M2mError, M2mResult};
use m2m_security::association::{Association, SaeMode};
use m2m_security::credentials::{CredentialId, KpsaId, Secret};
use m2m_security::secure_environment::SharedEnvironments;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The purpose (`pur`) of a credentials object that carries a Kpsa.
pub const PURPOSE: &str = "kpsa";

/// Where the rotation key Krot is.
enum Krot {
    /// `rotation_key`: a key file, read into memory at start.
    File(Secret),
    /// `rotation_secret`: a secret of the secure environments, which compute the HMAC where it is
    /// (inside a PKCS#11 token: Krot never enters the process).
    Environment {
        name: String,
        environments: SharedEnvironments,
    },
}

impl Krot {
    /// The Kpsa of a rotated KpsaID ([`m2m_security::kdf::rotated_kpsa`]).
    fn rotated_kpsa(&self, kpsa_id: &str, entity: &str) -> Option<Secret> {
        match self {
            Krot::File(krot) => Some(m2m_security::kdf::rotated_kpsa(krot, kpsa_id, entity)),
            Krot::Environment { name, environments } => {
                let input = m2m_security::kdf::rotated_kpsa_input(kpsa_id, entity);
                environments
                    .iter()
                    .find_map(|se| se.derive_key(name, &input))
            }
        }
    }
}

/// The rotation key and the rotations recorded so far.
pub struct Rotation {
    /// `None`: rotation is not configured (any more); the table's retired IDs still hold.
    krot: Option<Krot>,
    path: PathBuf,
    home: Home,
    state: Mutex<State>,
    /// The domains of the key services ([maf], [gba], [mef], lower case): their key identifiers
    /// are theirs, and the psk table looks a rotated KpsaID up before them.
    key_service_domains: Vec<String>,
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
    /// `[security] rotation_key` (32 bytes in hex, mode 0600) or `rotation_secret` (a secret of
    /// `environments`) and the table in the storage directory; the table alone (its retired IDs)
    /// when no key is configured any more; none without either.
    pub fn from_config(
        cfg: &crate::Config,
        home: &Home,
        environments: &SharedEnvironments,
    ) -> anyhow::Result<Option<Arc<Rotation>>> {
        let path = cfg.storage.path.join("rotated-credentials.json");
        let sec = &cfg.security;
        let krot = match (&sec.rotation_key, &sec.rotation_secret) {
            (None, None) if !path.exists() => return Ok(None),
            (None, None) => None,
            (Some(key_path), None) => Some(Krot::File(read_krot(key_path)?)),
            (None, Some(name)) => {
                // Held, and usable for HMAC where it is: asked once now, not at the first
                // rotation.
                if !environments
                    .iter()
                    .any(|se| se.derive_key(name, b"").is_some())
                {
                    anyhow::bail!(
                        "security.rotation_secret: no secure environment holds the secret {name:?}"
                    );
                }
                Some(Krot::Environment {
                    name: name.clone(),
                    environments: environments.clone(),
                })
            }
            (Some(_), Some(_)) => {
                anyhow::bail!("security: rotation_key and rotation_secret: give one")
            }
        };
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        let key_service_domains = [
            cfg.maf.as_ref().map(|m| &m.fqdn),
            cfg.gba.as_ref().map(|g| &g.bsf_fqdn),
            cfg.mef.as_ref().map(|m| &m.fqdn),
        ]
        .into_iter()
        .flatten()
        .map(|d| d.to_ascii_lowercase())
        .collect();
        Ok(Some(Arc::new(Rotation {
            krot,
            path,
            home: home.clone(),
            state: Mutex::new(state),
            key_service_domains,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The PSK of a rotated KpsaID, or that a KpsaID is retired.
    pub fn lookup(&self, psk_identity: &str) -> Lookup {
        let id = canonical(psk_identity);
        let state = self.state();
        if state.retired.contains(&id) {
            return Lookup::Retired;
        }
        let Some(row) = state.rows.iter().find(|r| r.kpsa_id == id).cloned() else {
            return Lookup::Unknown;
        };
        // The derivation may ask a token: not while other handshakes wait for the table.
        drop(state);
        let Some(krot) = &self.krot else {
            // Rotated once, and rotation is off now: the key cannot be derived, nor given back
            // to whatever row it replaced.
            return Lookup::Retired;
        };
        let (Ok(kpsa_id), Ok(entity)) = (
            KpsaId::parse(&row.kpsa_id),
            EntityId::parse(&row.entity, &self.home),
        ) else {
            return Lookup::Retired;
        };
        let Some(key) = krot.rotated_kpsa(&row.kpsa_id, &row.entity) else {
            // The secret is gone from the secure environment: nothing opens.
            return Lookup::Retired;
        };
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
    /// the KpsaIDs it replaces are retired now, durably; `Err` (the association is refused) when
    /// that cannot be written: a retirement that a restart would forget is none.
    pub fn used(&self, kpsa_id: &str) -> Result<(), String> {
        let id = canonical(kpsa_id);
        let mut state = self.state();
        let before = state.clone();
        let Some(row) = state.rows.iter_mut().find(|r| r.kpsa_id == id && !r.in_use) else {
            return Ok(());
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
                tracing::warn!(target: "audit", entity = %entity, kpsa_id = %id, retired = ?replaces, "credential changed: the rotated Kpsa is in use, the replaced ones open nothing");
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: "audit", entity = %entity, kpsa_id = %id, error = %e, "credential rotation: the table cannot be written; the association is refused");
                // As before: the next handshake tries again.
                *state = before;
                Err(e)
            }
        }
    }

    /// Records the rotation the administrator asked for: `kpsa_id` belongs to `entity` and
    /// replaces `replaces` (its current KpsaIDs, and any earlier rotation not yet used).
    pub fn prepare(
        &self,
        kpsa_id: &KpsaId,
        entity: &EntityId,
        replaces: Vec<String>,
        configured: &std::collections::HashSet<String>,
    ) -> M2mResult<()> {
        if self.krot.is_none() {
            return Err(M2mError::bad_request(
                "credentials: remote Kpsa rotation is not configured on this CSE",
            ));
        }
        let id = kpsa_id.canonical();
        if self
            .key_service_domains
            .iter()
            .any(|d| kpsa_id.issuer_fqdn().eq_ignore_ascii_case(d))
        {
            return Err(M2mError::bad_request(
                "credentials: this KpsaID is in the domain of a key service of this CSE",
            ));
        }
        let who = entity.sp_relative();
        let mut replaces: Vec<String> = replaces.iter().map(|r| canonical(r)).collect();
        if replaces.is_empty() {
            return Err(M2mError::bad_request(
                "credentials: the entity has no Kpsa of this CSE to replace",
            ));
        }
        let mut state = self.state();
        if state.retired.contains(&id) || replaces.contains(&id) || configured.contains(&id) {
            return Err(M2mError::bad_request(
                "credentials: this KpsaID is or was in use; choose a new one",
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

/// A KpsaID as the table keeps it ([`KpsaId::canonical`]); anything else as given.
pub fn canonical(id: &str) -> String {
    KpsaId::parse(id).map_or_else(|_| id.to_owned(), |k| k.canonical())
}

fn read_krot(key_path: &Path) -> anyhow::Result<Secret> {
    m2m_security::secure_environment::check_private_file(key_path)
        .map_err(|e| anyhow::anyhow!("security.rotation_key: {e}"))?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_path)
            .map_err(|e| anyhow::anyhow!("security.rotation_key: {}: {e}", key_path.display()))?,
    );
    Secret::from_hex(text.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "security.rotation_key: {} must hold 32 bytes in hex",
                key_path.display()
            )
        })
}

/// Writes the table durably, by rename (IDs only: it holds no key).
fn save(path: &Path, state: &State) -> Result<(), String> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    f.write_all(&text).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotated KpsaID is looked up before the key services' identifiers: it may not be one of
    /// theirs (a B-TID, a KeID, a Key Identifier of the MAF), in any letter case.
    #[test]
    fn a_rotation_never_takes_a_key_service_domain() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("krot.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = crate::Config::from_toml(&format!(
            "[storage]\npath = {:?}\n[security]\nrotation_key = {:?}\n\
             [tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\ntrusted_ca = \"ca.pem\"\n\
             [gba]\nzn_url = \"https://127.0.0.1:1\"\nbsf_fqdn = \"bsf.example.com\"\n\
             [mef]\nurl = \"https://127.0.0.1:2\"\nfqdn = \"mef.example.com\"\n",
            dir.path().display().to_string(),
            key.display().to_string(),
        ))
        .unwrap();
        let home = Home::cse(
            m2m_core::SpId::parse("m2m.example.com").unwrap(),
            m2m_core::CseId::parse("/id-in").unwrap(),
        );
        let rotation = Rotation::from_config(&cfg, &home, &Default::default())
            .unwrap()
            .unwrap();
        let entity = EntityId::parse("CLock", &home).unwrap();
        let configured = std::collections::HashSet::new();
        for id in ["AAAA@bsf.example.com", "0A0B@MEF.example.com"] {
            let e = rotation
                .prepare(
                    &KpsaId::parse(id).unwrap(),
                    &entity,
                    vec!["old@in.example.com".into()],
                    &configured,
                )
                .unwrap_err();
            assert!(e.dbg.contains("domain of a key service"), "{id}: {}", e.dbg);
        }
        rotation
            .prepare(
                &KpsaId::parse("new@in.example.com").unwrap(),
                &entity,
                vec!["old@in.example.com".into()],
                &configured,
            )
            .unwrap();
    }

    /// Krot as a secret of the secure environment (`rotation_secret`, derived where it is kept)
    /// gives the same rotated Kpsa as Krot in a file; a secret nobody holds stops the start.
    #[test]
    fn krot_in_a_secure_environment_derives_what_krot_in_a_file_does() {
        use m2m_security::secure_environment::{
            create_key_file, KeySource, SecureEnvironment, SoftwareKeystore,
        };
        use std::os::unix::fs::PermissionsExt;
        let home = Home::cse(
            m2m_core::SpId::parse("m2m.example.com").unwrap(),
            m2m_core::CseId::parse("/id-in").unwrap(),
        );
        let krot_hex = "5c".repeat(32);
        let rotated_key = |storage: &str, environments: &SharedEnvironments| {
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("krot.key");
            std::fs::write(&key, &krot_hex).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            let cfg = crate::Config::from_toml(&format!(
                "[storage]\npath = {:?}\n[security]\n{}\n",
                dir.path().display().to_string(),
                storage.replace("KEYFILE", &key.display().to_string()),
            ))
            .unwrap();
            let rotation = match Rotation::from_config(&cfg, &home, environments) {
                Ok(r) => r.unwrap(),
                Err(e) => return Err(e.to_string()),
            };
            let entity = EntityId::parse("CLock", &home).unwrap();
            let new = KpsaId::parse("lock-2@in.m2m.example.com").unwrap();
            rotation
                .prepare(
                    &new,
                    &entity,
                    vec!["lock-1@in.m2m.example.com".into()],
                    &Default::default(),
                )
                .unwrap();
            Ok(match rotation.lookup("lock-2@in.m2m.example.com") {
                Lookup::Rotated(k) => Some(k.key.to_vec()),
                _ => None,
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let (ks_path, kf) = (dir.path().join("ks"), dir.path().join("ks.key"));
        create_key_file(&kf).unwrap();
        let mut ks = SoftwareKeystore::create(&ks_path, KeySource::KeyFile(kf)).unwrap();
        ks.set_secret("krot", Secret::from_hex(&krot_hex).unwrap())
            .unwrap();
        let environments: SharedEnvironments =
            vec![Box::new(ks) as Box<dyn SecureEnvironment>].into();

        let from_file = rotated_key("rotation_key = \"KEYFILE\"", &Default::default())
            .unwrap()
            .unwrap();
        let from_environment = rotated_key("rotation_secret = \"krot\"", &environments)
            .unwrap()
            .unwrap();
        assert_eq!(from_file, from_environment);
        assert_eq!(
            from_file,
            m2m_security::kdf::rotated_kpsa(
                &Secret::from_hex(&krot_hex).unwrap(),
                "lock-2@in.m2m.example.com",
                "/id-in/CLock"
            )
            .expose()
        );
        let e = rotated_key("rotation_secret = \"nobody\"", &environments).unwrap_err();
        assert!(e.contains("no secure environment holds the secret"), "{e}");
    }
}
