//! The MQTT server's side of the MQTT binding's security (TS-0010 clauses 7.2-7.4), written for
//! mosquitto: its PSK file (the same rows as this CSE's psk lookup table), the PSK identity as
//! the user name, and an ACL that lets each credential publish only on its own topics:
//!
//! | who | publishes on | subscribes to |
//! |---|---|---|
//! | this CSE | `resp/+/<csi>`, `reg_resp/+/<csi>`, `req/<csi>/+` | `req/+/<csi>`, `reg_req/+/<csi>`, `resp/<csi>` |
//! | a credential | `reg_req/<Credential-ID>/<csi>` | `reg_resp/<Credential-ID>` |
//! | ... for each entity E it names | `req/E/<csi>`, `resp/<csi>/E` | `resp/E`, `req/+/E` |
//!
//! (every topic under `/oneM2M/`, every one ending in `/#` for the serialization). The entities a
//! credential names: the one its PSK row is bound to, and the AEs registered with it. So a topic
//! names its sender truthfully, and the CSE holds each request's From to that sender
//! (`mqtt_binding`). The ACL changes when an AE registers or is deleted: the CSE writes
//! it again and signals the server ([`AclFile`]).

use crate::config::{Config, MqttSection};
use m2m_core::mqtt_binding::{topic_forms, topic_id};
use m2m_core::{EntityId, Home};
use m2m_security::credentials::{CredentialId, KpsaId};
use m2m_security::secure_environment::SecureEnvironment;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// One credential the MQTT server knows: its KpsaID and the entity its row is bound to.
#[derive(Clone, Debug)]
pub struct Row {
    pub kpsa_id: KpsaId,
    pub entity: Option<EntityId>,
}

/// The rows of the secure environments that are AEs' credentials at the MQTT server: not a row
/// bound to a CSE (Mcc is not served over MQTT), not a group member's KsxId (only its current
/// group key opens, TS-0003 group authentication), not one of `excluded`.
pub fn rows(
    environments: &[Box<dyn SecureEnvironment>],
    home: &Home,
    excluded: &dyn Fn(&KpsaId) -> bool,
) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for (entity, kpsa_id) in environments.iter().flat_map(|se| se.psk_entries()) {
        if out.iter().any(|r| r.kpsa_id == kpsa_id) || excluded(&kpsa_id) {
            continue;
        }
        let entity = match entity {
            None => None,
            Some(e) => match EntityId::parse(&e, home) {
                Ok(e) if e.is_ae() => Some(e),
                _ => continue,
            },
        };
        out.push(Row { kpsa_id, entity });
    }
    out
}

/// The group members' KsxIds of `[group_authentication]`: no row of theirs goes to the server.
fn group_members(cfg: &Config) -> Vec<KpsaId> {
    cfg.group_authentication
        .agents
        .iter()
        .flat_map(|a| &a.members)
        .filter_map(|m| KpsaId::parse(m).ok())
        .collect()
}

/// The ACL (mosquitto's acl_file format) for this CSE (`csi`: its ID in topic form), its own
/// identity at the server, the credentials' rows, and the AEs registered with each credential
/// (`bindings`: AE-ID-Stem, Credential-ID).
pub fn render_acl(
    home: &Home,
    own_identity: &str,
    rows: &[Row],
    bindings: &[(String, String)],
) -> String {
    let cse = EntityId::Cse {
        sp: home.sp.clone(),
        cse: home.cse.clone().expect("a CSE's home"),
    };
    let csi = topic_id(&cse.sp_relative());
    let mut out = String::from(
        "# The MQTT server's ACL for the oneM2M topics of this CSE (TS-0010 clause 7.4), written by the CSE\n\
         # (m2m cse, [mqtt] acl_file) at start and whenever an AE registers or is deleted: do not edit.\n\
         # User names are PSK identities (use_identity_as_username).\n\n",
    );
    let _ = writeln!(out, "user {own_identity}");
    for line in [
        format!("topic read /oneM2M/req/+/{csi}/#"),
        format!("topic read /oneM2M/reg_req/+/{csi}/#"),
        format!("topic read /oneM2M/resp/{csi}/#"),
        format!("topic write /oneM2M/resp/+/{csi}/#"),
        format!("topic write /oneM2M/reg_resp/+/{csi}/#"),
        format!("topic write /oneM2M/req/{csi}/+/#"),
    ] {
        let _ = writeln!(out, "{line}");
    }
    // KpsaIDs compared as KpsaIds (the FQDN in any letter case), as the psk lookup table does.
    let own = KpsaId::parse(own_identity).ok();
    for row in rows {
        let identity = row.kpsa_id.to_string();
        if own.as_ref() == Some(&row.kpsa_id) || !is_acl_safe(&identity) {
            continue;
        }
        let credential = CredentialId::for_kpsa(&row.kpsa_id).to_string();
        let _ = writeln!(out, "\nuser {identity}");
        let _ = writeln!(
            out,
            "topic write /oneM2M/reg_req/{credential}/{csi}/#\ntopic read /oneM2M/reg_resp/{credential}/#"
        );
        let mut entities: Vec<EntityId> = row.entity.iter().cloned().collect();
        for (stem, bound) in bindings {
            if kpsa_of(bound).as_ref() == Some(&row.kpsa_id) {
                if let Ok(e) = EntityId::parse(stem, home) {
                    entities.push(e);
                }
            }
        }
        entities.sort();
        entities.dedup();
        for entity in entities.iter().filter(|e| !e.is_home_cse(home)) {
            for f in topic_forms(entity, home) {
                if !is_acl_safe(&f) {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "topic write /oneM2M/req/{f}/{csi}/#\ntopic read /oneM2M/resp/{f}/#\n\
                     topic read /oneM2M/req/+/{f}/#\ntopic write /oneM2M/resp/{csi}/{f}/#"
                );
            }
        }
    }
    out
}

/// The KpsaID of a stored Credential-ID `12-<KpsaID>`.
fn kpsa_of(credential: &str) -> Option<KpsaId> {
    let c = CredentialId::parse(credential).ok()?;
    (c.type_id() == CredentialId::TYPE_KPSA_ID)
        .then(|| KpsaId::parse(c.value()).ok())
        .flatten()
}

/// Whether a name can stand in an ACL line as one topic level or user name (no wildcard, no
/// separator, no white space that would end the line early).
fn is_acl_safe(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '+' | '#'))
}

/// The PSK file (mosquitto's `identity:hex-key` lines): the rows, and this CSE's own identity.
pub fn render_psk_file(
    environments: &[Box<dyn SecureEnvironment>],
    rows: &[Row],
    own: &KpsaId,
) -> Zeroizing<String> {
    let identities: Vec<String> = std::iter::once(own.to_string())
        .chain(rows.iter().map(|r| r.kpsa_id.to_string()))
        .filter(|i| is_acl_safe(i))
        .collect();
    let entries: Vec<(String, Zeroizing<String>)> = identities
        .into_iter()
        .filter_map(|i| {
            let entry = environments.iter().find_map(|se| se.psk(&i))?;
            Some((i, entry.key.to_hex()))
        })
        .collect();
    // Sized once: a growing string would leave copies of the keys in freed memory.
    let size = entries.iter().map(|(i, k)| i.len() + k.len() + 2).sum();
    let mut out = Zeroizing::new(String::with_capacity(size));
    for (identity, key) in &entries {
        out.push_str(identity);
        out.push(':');
        out.push_str(key);
        out.push('\n');
    }
    out
}

/// The files `m2m mqtt-broker-config` writes for mosquitto.
pub struct BrokerFiles {
    /// mosquitto.conf.
    pub conf: String,
    /// An OpenSSL configuration that caps the server at TLS 1.2 (mosquitto's `tls_version` is
    /// a minimum only): the oneM2M PSK suites are TLS 1.2's.
    pub openssl_cnf: String,
    /// The PSK file: keys, mode 0600.
    pub psk_file: Zeroizing<String>,
    /// The first ACL (the CSE writes it again at start, with its registrations).
    pub acl: String,
    pub acl_path: PathBuf,
    pub pid_path: PathBuf,
}

/// Everything mosquitto needs to serve this CSE's MQTT binding, its files placed in `dir`
/// (the ACL and pid file where `[mqtt]` names them).
pub fn broker_files(cfg: &Config, dir: &Path) -> anyhow::Result<BrokerFiles> {
    let mqtt: &MqttSection = cfg
        .mqtt
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the configuration has no [mqtt] table"))?;
    let url = mqtt.url()?;
    if let Some(required) = cfg
        .security
        .required_level
        .filter(|l| *l > m2m_security::secure_environment::SecurityLevel::Software)
    {
        anyhow::bail!(
            "security.required_level is {required}: the MQTT server's PSK file would hold the keys in a file"
        );
    }
    let home = cfg.identity()?.home;
    let environments = crate::secure_environments(cfg)?;
    if !environments
        .iter()
        .any(|se| se.psk(&mqtt.psk_identity).is_some())
    {
        anyhow::bail!(
            "mqtt.psk_identity '{}' has no PSK row in [security]",
            mqtt.psk_identity
        );
    }
    let own =
        KpsaId::parse(&mqtt.psk_identity).map_err(|e| anyhow::anyhow!("mqtt.psk_identity: {e}"))?;
    let members = group_members(cfg);
    let rows = rows(&environments, &home, &|k| *k == own || members.contains(k));
    let acl_path = mqtt.acl_file.clone().unwrap_or_else(|| dir.join("acl"));
    let pid_path = mqtt
        .broker_pid_file
        .clone()
        .unwrap_or_else(|| dir.join("mosquitto.pid"));
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let conf = format!(
        "# mosquitto for the MQTT binding of {csi} (TS-0010 clause 7), written by m2m mqtt-broker-config.\n\
         # Run: OPENSSL_CONF={cnf} mosquitto -c {conf}\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         persistence false\n\
         pid_file {pid}\n\
         acl_file {acl}\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\n\
         # Larger messages than the CSE reads are refused here; retained messages would run again\n\
         # at every subscription.\n\
         max_packet_size {max_packet}\n\
         retain_available false\n\
         # Each message goes out at once (no Nagle delay on a request/response exchange).\n\
         set_tcp_nodelay true\n\n\
         listener {port} {host}\n\
         psk_hint oneM2M\n\
         psk_file {psk}\n\
         # The PSK identity is the user name the ACL names, and the client identifier: nobody else\n\
         # takes over a client's session (TS-0010 clause 7.2).\n\
         use_identity_as_username true\n\
         use_username_as_clientid true\n\
         tls_version tlsv1.2\n\
         ciphers {suites}\n",
        csi = cfg.cse.cse_id,
        cnf = abs(&dir.join("openssl.cnf")).display(),
        conf = abs(&dir.join("mosquitto.conf")).display(),
        pid = abs(&pid_path).display(),
        acl = abs(&acl_path).display(),
        port = url.port,
        host = url.host,
        psk = abs(&dir.join("psk_file")).display(),
        suites = m2m_security::tls::PSK_SUITES.join(":"),
        max_packet = cfg.http.max_body_bytes + 4096,
    );
    let openssl_cnf = "# Caps mosquitto at TLS 1.2, the version of the oneM2M PSK suites (TS-0003 clause 10.2).\n\
         openssl_conf = openssl_init\n\n[openssl_init]\nssl_conf = ssl_sect\n\n[ssl_sect]\n\
         system_default = system_default_sect\n\n[system_default_sect]\nMaxProtocol = TLSv1.2\n"
        .to_owned();
    Ok(BrokerFiles {
        conf,
        openssl_cnf,
        psk_file: render_psk_file(&environments, &rows, &own),
        acl: render_acl(&home, &mqtt.psk_identity, &rows, &[]),
        acl_path,
        pid_path,
    })
}

/// The ACL file the CSE keeps: written again (through a temporary file, then renamed) whenever
/// the registrations change, then the server signalled to read it. Both happen before the
/// registration's answer is published, so that the server has read the AE's new topics before
/// the AE can use them (mosquitto reloads at its next loop, before it routes that answer).
pub struct AclFile {
    path: PathBuf,
    pid_file: Option<PathBuf>,
    own_identity: String,
    rows: Vec<Row>,
    /// One writer at a time: the last registration's file wins whole.
    writing: std::sync::Mutex<()>,
}

impl AclFile {
    /// The ACL file of `[mqtt]`, for the credentials of `rows` ([`rows`]).
    pub fn new(mqtt: &MqttSection, rows: Vec<Row>) -> Option<Arc<AclFile>> {
        Some(Arc::new(AclFile {
            path: mqtt.acl_file.clone()?,
            pid_file: mqtt.broker_pid_file.clone(),
            own_identity: mqtt.psk_identity.clone(),
            rows,
            writing: std::sync::Mutex::new(()),
        }))
    }

    /// Writes the ACL now (at start: a failure stops the CSE).
    pub fn write(&self, cse: &crate::context::Context) -> anyhow::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let bindings = cse
            .store
            .read(|r| r.credential_bindings())
            .map_err(|e| anyhow::anyhow!("{}", e.dbg))?;
        // A rotated-out KpsaID or a group member's KsxId publishes as nobody.
        let current: Vec<Row> = self
            .rows
            .iter()
            .filter(|r| {
                let retired = cse.rotation.as_ref().is_some_and(|rot| {
                    matches!(
                        rot.lookup(&r.kpsa_id.to_string()),
                        crate::credential_rotation::Lookup::Retired
                    )
                });
                let grouped = cse
                    .group_keys
                    .as_ref()
                    .is_some_and(|g| g.governs(&r.kpsa_id));
                !retired && !grouped
            })
            .cloned()
            .collect();
        let text = render_acl(&cse.id.home, &self.own_identity, &current, &bindings);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)
            .map_err(|e| anyhow::anyhow!("{}: {}", self.path.display(), e.error))?;
        self.signal();
        Ok(())
    }

    /// SIGHUP to the server of the pid file, if it runs.
    fn signal(&self) {
        let Some(pid_file) = &self.pid_file else {
            return;
        };
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        // A stale pid file may name another process by now: only mosquitto is signalled.
        let is_mosquitto = |pid: rustix::process::Pid| {
            std::fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero()))
                .is_ok_and(|c| c.trim() == "mosquitto")
        };
        match pid {
            Some(pid) if is_mosquitto(pid) => {
                if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
                    tracing::warn!(target: "audit", error = %e, "the MQTT server could not be signalled to read its new ACL");
                }
            }
            _ => {
                tracing::warn!(target: "audit", pid_file = %pid_file.display(), "no running MQTT server in mqtt.broker_pid_file: its ACL is not read again")
            }
        }
    }
}

impl crate::outbound::RegistrationWatch for AclFile {
    /// Writes the ACL again: an AE registered or was deleted.
    fn changed(&self, cse: &crate::context::Context) {
        if let Err(e) = self.write(cse) {
            tracing::warn!(target: "audit", error = %e, "the MQTT server's ACL could not be written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_core::{CseId, SpId};

    #[test]
    fn each_credential_publishes_on_its_own_topics_only() {
        let home = Home::cse(
            SpId::parse("in.provider.com").unwrap(),
            CseId::parse("in-cse").unwrap(),
        );
        let rows = vec![
            Row {
                kpsa_id: KpsaId::parse("lock@in.provider.com").unwrap(),
                entity: Some(EntityId::parse("Slock", &home).unwrap()),
            },
            Row {
                kpsa_id: KpsaId::parse("phone@in.provider.com").unwrap(),
                entity: None,
            },
            Row {
                kpsa_id: KpsaId::parse("cse@in.provider.com").unwrap(),
                entity: None,
            },
        ];
        // The CSE's identity and a registration's Credential-ID in other letter cases of the FQDN
        // are still theirs (KpsaIDs compare as KpsaIds).
        let bindings = vec![("Cphone1".to_owned(), "12-phone@IN.provider.com".to_owned())];
        let acl = render_acl(&home, "cse@In.Provider.com", &rows, &bindings);
        let user = |name: &str| -> Vec<String> {
            acl.split("\nuser ")
                .find(|b| b.starts_with(&format!("{name}\n")))
                .unwrap_or_else(|| panic!("no user {name} in\n{acl}"))
                .lines()
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let lock = user("lock@in.provider.com");
        assert!(lock.contains(&"topic write /oneM2M/req/Slock/in-cse/#".to_owned()));
        assert!(lock
            .contains(&"topic write /oneM2M/reg_req/12-lock@in.provider.com/in-cse/#".to_owned()));
        assert!(!lock
            .iter()
            .any(|l| l.contains("phone") || l.contains("Cphone1")));
        let phone = user("phone@in.provider.com");
        assert!(phone.contains(&"topic write /oneM2M/req/Cphone1/in-cse/#".to_owned()));
        assert!(phone.contains(&"topic write /oneM2M/req/in-cse:Cphone1/in-cse/#".to_owned()));
        assert!(!phone.iter().any(|l| l.contains("Slock")));
        // Nobody but the CSE writes a request as the CSE, or answers as it.
        for block in [&lock, &phone] {
            assert!(!block
                .iter()
                .any(|l| l.starts_with("topic write /oneM2M/req/in-cse/")
                    || l.starts_with("topic write /oneM2M/resp/+")));
        }
        // The CSE's user is spelt as it connects; its row gets no second block.
        let cse = user("cse@In.Provider.com");
        assert!(cse.contains(&"topic read /oneM2M/req/+/in-cse/#".to_owned()));
        assert_eq!(acl.matches("\nuser cse@").count(), 1, "once: {acl}");
    }
}
