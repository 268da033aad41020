//! `m2m demo`: the door-lock use case of the security guide (seeds/000) played for real. The
//! MEF, the MAF, the IN-CSE and the MN-CSE (the home gateway) are `m2m` processes on loopback;
//! the two locks associate with the gateway by DTLS-PSK and speak CoAP (TS-0008), with the
//! guide's credentials (Table 7.1.2-1), the gateway with the IN-CSE by certificates, the smartphone with the IN-CSE by
//! MAF-based SAE after enrolling at the MEF; the gateway app (MN-AE) by TLS-PSK with a key of its
//! own. Then the smartphone unlocks the front door and hears about it, and a series of attacks is
//! refused, each checked by what the attacker sees and by the reason in the CSE's audit log. No
//! listener believes a From it cannot prove: the admin is whoever holds the admin's PSK row.

use crate::association::{maf_access, MafCredential, MafSae, SaeMode, SecretSource, TlsPeer};
use crate::files::{toml_path, write_private};
use crate::notification_receiver::subscription_reference;
use crate::originator::{code, expect, pc, send};
use crate::scratch_pki;
use crate::spawned::{
    self, Spawned, LISTENING_PREFIX, LISTENING_PREFIX_DTLS, LISTENING_PREFIX_TLS,
};
use anyhow::{anyhow, bail, Context};
use m2m_client::Client;
use m2m_core::filter::FilterUsage;
use m2m_core::{M2mError, Operation, Request, ResourceType, Response};
use m2m_keyservices::maf::server::format_time;
use m2m_keyservices::sae::connection_key_until;
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SP: &str = "m2m.example.com";
const MAF_FQDN: &str = "maf.keys.example.net";
const MEF_FQDN: &str = "mef.keys.example.net";
/// The mobile operator's Bootstrapping Server Function (3GPP GBA), and the cellular lock's SIM.
const BSF_FQDN: &str = "bsf.keys.example.net";
const GARAGE_IMPI: &str = "001010000000042@ims.mnc001.mcc001.3gppnetwork.org";
const GARAGE_AE: &str = "Cgarage-lock";
const GARAGE_USIM: &str = "garage-lock.usim";
const SAE_GBA: &str = "TLS-PSK (GBA Ks_NAF)";
/// The smartphone's pre-provisioned enrolment credential (KpmID, Kpm): it leaves the factory with
/// this only, and obtains its MAF credential Km by enrolling at the MEF (TS-0003 clause 8.3).
const PHONE_KPM_ID: &str = "phone@mef.keys.example.net";
const PHONE_KPM: &str = "7c2e9d4a1b3f5e6d8c0a2b4f6e8d1c3b5a7f9e0d2c4b6a8f1e3d5c7b9a0f2e4d";
/// The phone's Kpm in the demo directory (mode 0600), as `m2m ae` would read it.
const PHONE_KPM_FILE: &str = "phone-kpm.hex";
const IN_SERVER_NAME: &str = "id-in.m2m.example.com";
const MN_ID: &str = "mn-cse-123456";
const ADMIN: &str = "CAdmin";
/// The admin's own TLS-PSK row at each CSE (bound to `CAdmin` there): the admin is whoever holds
/// that key, never a process that merely reaches a loopback port. Random per run.
const ADMIN_MN_KPSA_ID: &str = "admin@mn-cse-123456.m2m.example.com";
const ADMIN_IN_KPSA_ID: &str = "admin@id-in.m2m.example.com";
/// The gateway application, the MN-AE of seeds/000: it runs inside the home gateway and
/// associates with the MN-CSE by TLS-PSK with a key of its own (random per run), like
/// examples/doorlock/gateway-app.toml. The locks' policies let it read and subscribe, not unlock.
const GATEWAY_AE: &str = "Cgateway-app";
const GATEWAY_KPSA_ID: &str = "MNAE-gateway-app@in.provider.com";
const GATEWAY_RN: &str = "gateway-app";
const GATEWAY_LABEL: &str = "gateway app MN-AE";
/// Private files of the run's random keys (hex), in the demo directory.
const GATEWAY_KPSA_FILE: &str = "gateway-app.kpsa";
/// The MN-CSE's own identity at its MQTT server (mosquitto).
const MN_MQTT_KPSA_ID: &str = "mn-cse-mqtt@in.provider.com";
const ADMIN_MN_KPSA_FILE: &str = "admin-mn.kpsa";
const ADMIN_IN_KPSA_FILE: &str = "admin-in.kpsa";
/// The MN-CSE's Kpsa rotation key, shared with the operator (`m2m keys rotate-kpsa`).
const ROTATION_KEY_FILE: &str = "mn-rotation.key";
/// `m2m ae` configurations of the admin at each CSE (its TLS-PSK row), written once the CSE
/// listens: the demo's own admin requests use them, and so can `m2m request --ae`.
const ADMIN_MN_AE: &str = "admin-mn.toml";
const ADMIN_IN_AE: &str = "admin-in.toml";
/// How long a process may take to listen, and the MN to register.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a notification may take to arrive.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// A door lock of Table 7.1.2-1: AE-ID, KpsaID, Kpsa (hex), resource name at the gateway.
struct Lock {
    ae: &'static str,
    kpsa_id: &'static str,
    key: &'static str,
    rn: &'static str,
    label: &'static str,
}

const FRONT: Lock = Lock {
    ae: "Clock-AE1",
    kpsa_id: "AE123456789012-Lock@in.provider.com",
    key: "1a2b3c4d5e6f7a8b",
    rn: "front-lock",
    label: "front lock ADN-AE1",
};
/// The guide prints the second lock's AE-ID as `Cllock-AE2`; kept as printed.
const BACK: Lock = Lock {
    ae: "Cllock-AE2",
    kpsa_id: "AE123456789015-Lock@in.provider.com",
    key: "12345678abcdefab",
    rn: "back-lock",
    label: "back lock ADN-AE2",
};

/// Km rows of the MAF (pre-provisioned Km): a phone nobody trusts, the babysitter's phone. The
/// owner's phone has none: it enrols at the MEF.
const KMS: [(&str, &str, &str); 2] = [
    (
        "Cstranger",
        "stranger@maf.keys.example.net",
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
    ),
    (
        "Cbabysitter",
        "babysitter@maf.keys.example.net",
        "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000",
    ),
];

/// How long a client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

const SAE_PSK: &str = "TLS-PSK (Kpsa)";
/// The gateway app through the home gateway's MQTT server.
const SAE_MQTT_PSK: &str = "MQTT, TLS-PSK (Kpsa)";
const SAE_DTLS_PSK: &str = "CoAP/DTLS-PSK (Kpsa)";
const SAE_MAF: &str = "TLS-PSK (MAF Kc)";
const SAE_CERT: &str = "TLS (certificates)";
const SAE_NONE: &str = "none (plain HTTP)";
const SAE_PSK_TLS13: &str = "TLS 1.3 PSK (SHA-384)";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Print one JSON document instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Leave the MAF and the CSEs running afterwards (until Ctrl-C) and print how to poke them.
    #[arg(long)]
    pub keep_running: bool,
    /// Put the PKI, configurations, data and logs here (must be empty or absent) instead of a
    /// temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Spawns `m2m ARGS` with its log in `log` and waits until it printed a line starting with each
/// of `prefixes`; returns the rest of those lines.
fn spawn(args: &[&str], log: &Path, prefixes: &[&str]) -> anyhow::Result<(Spawned, Vec<String>)> {
    let mut cmd = spawned::m2m(args)?;
    cmd.env(
        "M2M_LOG",
        std::env::var("M2M_LOG").unwrap_or_else(|_| "info".into()),
    );
    spawned::start(cmd, Some(log), prefixes, START_TIMEOUT)
}

/// Writes `d/NAME.toml` and starts `m2m COMMAND --config d/NAME.toml`, its log in `d/NAME.log`.
fn start_with_config(
    d: &Path,
    command: &str,
    name: &str,
    config: &str,
    prefixes: &[&str],
) -> anyhow::Result<(Spawned, Vec<String>)> {
    let cfg = d.join(format!("{name}.toml"));
    write_private(&cfg, config.as_bytes())?;
    let log = d.join(format!("{name}.log"));
    spawn(
        &[command, "--config", &cfg.display().to_string()],
        &log,
        prefixes,
    )
}

/// The HTTP and HTTPS base URLs from the rest of a CSE's two listening lines.
fn cse_urls(rest: &[String]) -> (String, String) {
    (
        format!("http://{}", rest[0]),
        format!("https://{}", rest[1]),
    )
}

/// A CA for the SP and the MAF's domain; certificates of the IN-CSE, the MN-CSE and the MAF.
fn make_pki(d: &Path) -> anyhow::Result<()> {
    scratch_pki::write_pki(
        d,
        "door-lock demo root",
        SP,
        &["keys.example.net".into()],
        &[
            ("maf", LeafName::Fqdn(MAF_FQDN.into())),
            ("mef", LeafName::Fqdn(MEF_FQDN.into())),
            ("bsf", LeafName::Fqdn(BSF_FQDN.into())),
            ("in", scratch_pki::cse("/id-in", SP)),
            ("mn", scratch_pki::cse(&format!("/{MN_ID}"), SP)),
        ],
        &[],
    )?;
    write_private(&d.join("maf-storage.key"), "cd".repeat(32).as_bytes())?;
    Ok(())
}

/// `d/name` as a TOML string.
fn p(d: &Path, name: &str) -> String {
    toml_path(&d.join(name))
}

/// The `[tls]` section of a CSE: its certificate, the CA it trusts; `tls13` also accepts TLS 1.3.
fn tls_section(d: &Path, name: &str, tls13: bool) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ntls13 = {tls13}\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\n",
        p(d, &format!("{name}.pem")),
        p(d, &format!("{name}.key")),
        p(d, "ca.pem"),
    )
}

/// The MEF: the smartphone's Kpm row; the MAF may fetch the Km of an enrolment (SUID 11).
fn mef_config(d: &Path) -> String {
    format!(
        "fqdn = \"{MEF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\nstorage = {}\nstorage_key = {}\n\
         [[kpm]]\nenrolee_id = \"/id-in/Cphone\"\nkpm_id = \"{PHONE_KPM_ID}\"\nkey = \"{PHONE_KPM}\"\n[[targets]]\nid = \"{MAF_FQDN}\"\nsuids = [11]\n",
        p(d, "mef.pem"),
        p(d, "mef.key"),
        p(d, "ca.pem"),
        // In a directory of its own: the MEF keeps the enrolment file's directory 0700.
        p(d, "mef/enrolments.json"),
        p(d, "mef-storage.key"),
    )
}

fn maf_config(d: &Path, mef_url: &str) -> String {
    let mut cfg = format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\nstorage = {}\nstorage_key_file = {}\n[mef]\nurl = \"{mef_url}\"\nfqdn = \"{MEF_FQDN}\"\n",
        p(d, "maf.pem"),
        p(d, "maf.key"),
        p(d, "ca.pem"),
        p(d, "maf-data"),
        p(d, "maf-storage.key"),
    );
    for (ae, km_id, key) in KMS {
        cfg.push_str(&format!(
            "[[km]]\nclient_id = \"/id-in/{ae}\"\nkm_id = \"{km_id}\"\nkey = \"{key}\"\n"
        ));
    }
    cfg
}

/// The BSF: the IN-CSE is its NAF (its SIM devices associate with the IN-CSE by GBA).
fn bsf_config(d: &Path) -> String {
    format!(
        "fqdn = \"{BSF_FQDN}\"\nsp_fqdn = \"{SP}\"\nub_listen = \"127.0.0.1:0\"\nzn_listen = \"127.0.0.1:0\"\n\
         certificate = {}\nprivate_key = {}\ntrusted_ca = {}\nstorage = {}\nstorage_key = {}\n[[nafs]]\nid = \"/id-in\"\n",
        p(d, "bsf.pem"),
        p(d, "bsf.key"),
        p(d, "ca.pem"),
        p(d, "bsf-data"),
        p(d, "bsf-storage.key"),
    )
}

/// A row of a CSE's psk lookup table.
fn psk_row(entity: &str, kpsa_id: &str, key: &str) -> String {
    format!("[[security.psk]]\nentity = \"{entity}\"\nkpsa_id = \"{kpsa_id}\"\nkey = \"{key}\"\n")
}

/// The IN-CSE: TLS only (the MN-CSE by certificate, the phones by MAF keys, the admin by its own
/// PSK row). No plain listener: the story needs none, and one would only be a way around the
/// associations.
fn in_config(d: &Path, maf_url: &str, bsf_zn: &str, keys: &RunKeys) -> String {
    format!(
        "[http]\nlisten = \"\"\n[storage]\npath = {}\n[limits]\noutgoing_timeout_ms = 3000\n{}[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n\
         [gba]\nzn_url = \"{bsf_zn}\"\nbsf_fqdn = \"{BSF_FQDN}\"\n{}",
        p(d, "in-data"),
        // The phone keeps a WebSocket open to the IN-CSE (TS-0020): its notifications come on it.
        tls_section(d, "in", false) + "wss_listen = \"127.0.0.1:0\"\n",
        psk_row(ADMIN, ADMIN_IN_KPSA_ID, &keys.admin_in),
    )
}

/// The MN-CSE, the home gateway. Its loopback listener takes a From as a claim only
/// ("anonymous"): a local process without a credential is nobody, least of all the admin (the
/// attacks show it). TLS also accepts 1.3, which the locks do not use (an attack does).
fn mn_config(d: &Path, in_https: &str, keys: &RunKeys, mqtt_port: Option<u16>) -> String {
    let mut cfg = format!(
        "[cse]\nrole = \"MN\"\ncse_id = \"/{MN_ID}\"\nresource_name = \"cse-mn\"\nsp_id = \"//{SP}\"\nadmin_originator = \"{ADMIN}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\noriginators = \"anonymous\"\n[storage]\npath = {}\n[limits]\noutgoing_timeout_ms = 3000\n\
         [registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nurl = \"{in_https}\"\nserver_name = \"{IN_SERVER_NAME}\"\n{}",
        p(d, "mn-data"),
        // The locks speak CoAP over DTLS (TS-0008, TS-0003 clause 10.2.1) with the same rows.
        tls_section(d, "mn", true)
            + "dtls_listen = \"127.0.0.1:0\"\n",
    );
    // The gateway app talks to its MN-CSE over MQTT (TS-0010) through mosquitto, when installed.
    if let Some(port) = mqtt_port {
        cfg.push_str(&format!(
            "[mqtt]\nbroker = \"mqtts://127.0.0.1:{port}\"\npsk_identity = \"{MN_MQTT_KPSA_ID}\"\nacl_file = {}\nbroker_pid_file = {}\n",
            p(d, "mqtt/acl"),
            p(d, "mqtt/mosquitto.pid"),
        ));
        cfg.push_str(&format!(
            "[[security.psk]]\nkpsa_id = \"{MN_MQTT_KPSA_ID}\"\nkey = \"{}\"\n",
            keys.mqtt
        ));
    }
    for lock in [&FRONT, &BACK] {
        cfg.push_str(&psk_row(lock.ae, lock.kpsa_id, lock.key));
    }
    cfg.push_str(&psk_row(GATEWAY_AE, GATEWAY_KPSA_ID, &keys.gateway));
    cfg.push_str(&psk_row(ADMIN, ADMIN_MN_KPSA_ID, &keys.admin_mn));
    // Remote Kpsa rotation (docs/SECURITY.md): the operator's tool and the gateway share Krot.
    cfg.push_str(&format!(
        "[security]\nrotation_key = {}\n",
        p(d, ROTATION_KEY_FILE)
    ));
    cfg
}

/// The admin at a CSE as an `m2m ae` configuration: its TLS-PSK row, its key in a private file.
fn admin_ae_config(url: &str, cse_id: &str, rn: &str, kpsa_id: &str, key_file: &str) -> String {
    format!(
        "# The admin {ADMIN} at {cse_id}: m2m request --ae THIS-FILE --to {rn}\n\
         [ae]\nresource_name = \"admin\"\napp_id = \"Nadmin\"\noriginator = \"{ADMIN}\"\n\
         [cse]\nurl = \"{url}\"\ncse_id = \"{cse_id}\"\nresource_name = \"{rn}\"\n\
         [security]\nmode = \"psk\"\nkpsa_id = \"{kpsa_id}\"\nkey_file = {}\n",
        toml_path(Path::new(key_file)),
    )
}

/// The keys of a run that are not the guide's: the gateway app's Kpsa and the admins'.
struct RunKeys {
    gateway: String,
    admin_mn: String,
    admin_in: String,
    /// The MN-CSE's rotation key Krot (32 bytes), which the operator holds too.
    rotation: String,
    /// The MN-CSE's own key at the MQTT server.
    mqtt: String,
}

impl RunKeys {
    fn random() -> Self {
        let key = || hex::encode(rand::random::<[u8; 16]>());
        Self {
            gateway: key(),
            admin_mn: key(),
            admin_in: key(),
            rotation: hex::encode(rand::random::<[u8; 32]>()),
            mqtt: key(),
        }
    }

    /// Each in its private file, as a provisioned device or an operator would keep it.
    fn write(&self, d: &Path) -> anyhow::Result<()> {
        for (file, key) in [
            (GATEWAY_KPSA_FILE, &self.gateway),
            (ADMIN_MN_KPSA_FILE, &self.admin_mn),
            (ADMIN_IN_KPSA_FILE, &self.admin_in),
            (ROTATION_KEY_FILE, &self.rotation),
        ] {
            write_private(&d.join(file), key.as_bytes())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

fn psk_client(identity: &str, key: &[u8]) -> anyhow::Result<Client> {
    crate::association::psk_client(identity, key, CLIENT_TIMEOUT)
}

fn hex_key(h: &str) -> anyhow::Result<Vec<u8>> {
    Ok(Secret::from_hex(h)
        .map_err(|e| anyhow!(e))?
        .expose()
        .to_vec())
}

/// Creates a contentInstance holding the lock state `con` in the container `to`.
async fn create_cin(
    client: &Client,
    url: &str,
    to: &str,
    from: &str,
    con: &str,
) -> Result<Response, M2mError> {
    let pc = json!({ "m2m:cin": { "con": con } });
    let ty = Some(ResourceType::ContentInstance);
    send(client, url, Operation::Create, to, from, ty, Some(pc)).await
}

/// An attack by request: refused with `want` is a pass.
fn refused_with(r: Result<Response, M2mError>, want: u16) -> anyhow::Result<((), String)> {
    match r {
        Ok(r) if code(&r) == want => Ok(((), format!("refused: {want} {}", r.rsc.name()))),
        Ok(r) => bail!(
            "NOT refused as expected: {} {} ({})",
            code(&r),
            r.rsc.name(),
            r.dbg().unwrap_or("")
        ),
        Err(e) => bail!("transport failure instead of {want}: {}", e.dbg),
    }
}

/// The TLS alert a wrong Kpsa ends in: the server's Finished does not verify.
const ALERT_BAD_MAC: &str = "sslv3 alert bad record mac";
/// The TLS alert for a psk_identity the server has no key for (an unknown KpsaID, an expired Kc).
const ALERT_UNKNOWN_IDENTITY: &str = "tlsv1 alert unknown psk identity";
/// The TLS alert a TLS 1.3 client offering only SHA-384 gets: the server's TLS 1.3 suites are
/// the SHA-256 ones a PSK can use, so there is nothing to agree on.
const ALERT_TLS13_NO_SUITE: &str = "sslv3 alert handshake failure";
/// The reasons the CSE's audit line gives for those refusals (OpenSSL's, on the server's side).
const REFUSED_BAD_MAC: &str = "bad record mac";
const REFUSED_UNKNOWN_IDENTITY: &str = "psk identity not found";
const REFUSED_NO_SUITE: &str = "no shared cipher";

/// An attack on the handshake: a pass only when the TLS handshake itself failed with `alert`.
/// Any other transport failure (connection refused, timeout, a dead CSE) is not a refusal.
fn handshake_refused(r: Result<Response, M2mError>, alert: &str) -> anyhow::Result<((), String)> {
    match r {
        Err(e) => Ok((
            (),
            format!("handshake refused ({})", handshake_failure(&e, alert)?),
        )),
        Ok(r) => bail!("an association was opened: answer {}", code(&r)),
    }
}

/// A (D)TLS-PSK client with `identity` and `key` (hex) asks `to` at `url` as the front lock: the
/// handshake must fail with `alert` at the client and `reason` in the CSE's audit log.
async fn psk_handshake_attack(
    (url, to): (&str, &str),
    (identity, key): (&str, &str),
    (alert, reason): (&str, &str),
    log: (&AuditLog, u64),
) -> anyhow::Result<((), String)> {
    let c = psk_client(identity, &hex_key(key)?)?;
    let r = send(&c, url, Operation::Retrieve, to, FRONT.ae, None, None).await;
    handshake_refused_and_audited(r, alert, log, reason).await
}

/// A DTLS-PSK client offering only TLS_PSK_WITH_AES_128_CBC_SHA256. With a wrong key its
/// Finished fails to decrypt at the server either way; under CCM_8 (what the locks negotiate)
/// the server drops it silently (RFC 6347 clause 4.1.2.7) and the client only times out, under
/// CBC it answers with the bad_record_mac alert the demo shows at once.
fn dtls_cbc_psk_client(identity: &str, key: &[u8]) -> anyhow::Result<Client> {
    let config = m2m_security::tls::ClientTlsConfig {
        cipher_suites: vec!["PSK-AES128-CBC-SHA256".into()],
        tls13: false,
        psk: Some((identity.to_owned(), zeroize::Zeroizing::new(key.to_vec()))),
        psk_source: None,
        certificate_chain: None,
        private_key: None,
        trusted_ca: None,
        revocation: None,
    };
    let context =
        m2m_security::tls::dtls_client_context(&config).map_err(|e| anyhow!("DTLS: {e}"))?;
    Ok(Client::new()
        .with_timeout(CLIENT_TIMEOUT)
        .with_dtls(m2m_client::TlsSettings {
            context,
            peer: m2m_client::PeerPolicy::PreSharedKey,
        }))
}

/// `TLS handshake failed: ALERT` out of a transport failure, or an error saying what it was.
fn handshake_failure(e: &M2mError, alert: &str) -> anyhow::Result<String> {
    const FAILED: &str = "TLS handshake failed: ";
    match e.dbg.find(FAILED) {
        Some(at) if e.dbg[at..].contains(alert) => Ok(format!("{FAILED}{alert}")),
        _ => bail!(
            "not the handshake refusal expected ({FAILED}{alert}): {}",
            e.dbg
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The CSEs' audit logs
// ---------------------------------------------------------------------------------------------

/// How long a CSE may take to write an audit line to its log (it goes through a pipe).
const AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A CSE's log: a refusal tells the requester only a status code and a generic text; why it was
/// refused is an audit line here, which the attacks read back.
struct AuditLog {
    cse: &'static str,
    path: PathBuf,
}

impl AuditLog {
    fn new(cse: &'static str, path: PathBuf) -> Self {
        Self { cse, path }
    }

    /// Where the log ends now: what an attack causes comes after.
    fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The reason of the first audit line after `mark` whose message is `message` and whose
    /// reason contains `reason`; waits for the CSE to write it.
    async fn reason(&self, mark: u64, message: &str, reason: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + AUDIT_TIMEOUT;
        loop {
            let text =
                std::fs::read(&self.path).with_context(|| format!("{}", self.path.display()))?;
            let since = String::from_utf8_lossy(text.get(mark as usize..).unwrap_or_default());
            if let Some(found) = audit_lines(&since)
                .filter(|(m, _)| m.starts_with(message))
                .find_map(|(_, r)| r.filter(|r| r.contains(reason)))
            {
                return Ok(format!("{} audit: {found}", self.cse));
            }
            if Instant::now() > deadline {
                bail!(
                    "no audit line \"{message}\" with reason \"{reason}\" in {}",
                    self.path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The audit lines of a log text: (message with its fields, reason if the line has one). A line
/// reads `TIME LEVEL audit: MESSAGE field=value ... reason=REASON` (the reason comes last).
fn audit_lines(text: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    text.lines().filter_map(|line| {
        let line = strip_ansi(line);
        let at = line.find(" audit: ")?;
        let rest = line[at + " audit: ".len()..].to_owned();
        let reason = rest
            .find(" reason=")
            .map(|r| rest[r + " reason=".len()..].to_owned());
        Some((rest, reason))
    })
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the requester is told may name no entity, policy or rule: those are in the audit log.
const NAMED_NOWHERE: [&str; 16] = [
    "Clock-AE1",
    "Cllock-AE2",
    GATEWAY_AE,
    ADMIN,
    "Cphone",
    "Cstranger",
    "Cbabysitter",
    MN_ID,
    "id-in",
    "state-acp",
    "acp",
    "rule",
    "acaf",
    "accessControl",
    "window",
    "polic",
];

/// Fails when the requester's text names anything of [`NAMED_NOWHERE`].
fn names_nothing(text: &str) -> anyhow::Result<()> {
    let lower = text.to_lowercase();
    match NAMED_NOWHERE
        .iter()
        .find(|n| lower.contains(&n.to_lowercase()))
    {
        Some(n) => bail!("the refusal text names {n:?}: {text}"),
        None => Ok(()),
    }
}

/// An attack by request, refused with `want`, a text that names nothing, and the audit line
/// `message` whose reason contains `reason` in `log` since `mark`.
async fn refused_and_audited(
    r: Result<Response, M2mError>,
    want: u16,
    (log, mark): (&AuditLog, u64),
    message: &str,
    reason: &str,
) -> anyhow::Result<((), String)> {
    let told = r
        .as_ref()
        .ok()
        .and_then(Response::dbg)
        .unwrap_or_default()
        .to_owned();
    let ((), seen) = refused_with(r, want)?;
    names_nothing(&told)?;
    let audit = log.reason(mark, message, reason).await?;
    Ok(((), format!("{seen}; {audit}; told: \"{told}\"")))
}

/// An attack on the handshake, refused with `alert` (what the client sees) and the audit line
/// "association refused" for `reason` (OpenSSL's, on the server's side) in `log` since `mark`.
async fn handshake_refused_and_audited(
    r: Result<Response, M2mError>,
    alert: &str,
    (log, mark): (&AuditLog, u64),
    reason: &str,
) -> anyhow::Result<((), String)> {
    let ((), seen) = handshake_refused(r, alert)?;
    let audit = log.reason(mark, "association refused", reason).await?;
    Ok(((), format!("{seen}; {audit}")))
}

// ---------------------------------------------------------------------------------------------
// The smartphone's notification receiver
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Steps and the report
// ---------------------------------------------------------------------------------------------

struct Step {
    step: String,
    entity: String,
    sae: String,
    expected: String,
    outcome: String,
    ok: bool,
    ms: f64,
}

struct Report {
    steps: Vec<Step>,
    unlock_to_notification_ms: Option<f64>,
}

impl Report {
    /// Records a step; prints its progress line (stderr) and returns its value when it passed.
    fn record<T>(
        &mut self,
        (step, entity, sae, expected): (&str, &str, &str, &str),
        started: Instant,
        res: anyhow::Result<(T, String)>,
    ) -> Option<T> {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (ok, outcome, value) = match res {
            Ok((v, o)) => (true, o, Some(v)),
            Err(e) => (false, format!("{e:#}"), None),
        };
        let n = self.steps.len() + 1;
        eprintln!(
            "[{n:>2}] {} {step} ({entity}, {sae}): {outcome} [{ms:.1} ms]",
            if ok { "ok  " } else { "FAIL" }
        );
        self.steps.push(Step {
            step: step.into(),
            entity: entity.into(),
            sae: sae.into(),
            expected: expected.into(),
            outcome,
            ok,
            ms,
        });
        value
    }

    fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    fn json(&self) -> Value {
        json!({
            "steps": self.steps.iter().map(|s| json!({
                "step": s.step, "entity": s.entity, "sae": s.sae, "expected": s.expected,
                "outcome": s.outcome, "ok": s.ok, "ms": (s.ms * 10.0).round() / 10.0,
            })).collect::<Vec<_>>(),
            "unlock_to_notification_ms": self.unlock_to_notification_ms.map(|m| (m * 10.0).round() / 10.0),
            "ok": self.ok(),
        })
    }

    fn table(&self) -> String {
        let cut = |s: &str, n: usize| -> String {
            if s.chars().count() > n {
                format!("{}…", s.chars().take(n - 1).collect::<String>())
            } else {
                s.to_owned()
            }
        };
        let mut out = String::new();
        // Each column as wide as its longest cell, and at least as wide as its heading.
        let width = |cell: fn(&Step) -> usize, heading: usize| {
            self.steps.iter().map(cell).max().unwrap_or(0).max(heading)
        };
        let sw = width(|s| s.step.len(), 4);
        let ew = width(|s| s.entity.len(), 6);
        let aw = width(|s| s.sae.len(), 8);
        out.push_str(&format!(
            " #  {:<sw$}  {:<ew$}  {:<aw$}  {:<4}  {:>9}  outcome\n",
            "step", "entity", "SAE mode", "ok", "ms"
        ));
        out.push_str(&format!("{}\n", "-".repeat(sw + ew + aw + 40)));
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}  {:<sw$}  {:<ew$}  {:<aw$}  {:<4}  {:>9.1}  {}\n",
                i + 1,
                s.step,
                s.entity,
                s.sae,
                if s.ok { "yes" } else { "NO" },
                s.ms,
                cut(&s.outcome, 70)
            ));
        }
        let passed = self.steps.iter().filter(|s| s.ok).count();
        out.push_str(&format!(
            "\n{passed}/{} steps behaved as expected (story steps succeed, attacks are refused).\n",
            self.steps.len()
        ));
        if let Some(ms) = self.unlock_to_notification_ms {
            out.push_str(&format!(
                "Unlock to notification on the phone (MN-CSE -> IN-CSE -> phone): {ms:.1} ms\n"
            ));
        }
        out.push_str(if self.ok() {
            "RESULT: OK\n"
        } else {
            "RESULT: FAILED\n"
        });
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------------------------

/// The running deployment.
struct Deployment {
    dir: PathBuf,
    _mef: Spawned,
    mef_url: String,
    _bsf: Spawned,
    /// The BSF's Ub (where SIM devices bootstrap).
    bsf_ub: String,
    _maf: Spawned,
    _in: Spawned,
    _mn: Spawned,
    maf_url: String,
    in_https: String,
    /// The IN-CSE's WebSocket listener, where the phone keeps its connection.
    in_wss: String,
    /// Where the gateway app reaches the MN-CSE: its MQTT server, or its TLS listener when
    /// mosquitto is not installed.
    gateway_url: String,
    /// mosquitto, when installed.
    _broker: Option<Spawned>,
    /// The gateway app's SAE mode as the report shows it.
    gateway_sae: &'static str,
    mn_http: String,
    mn_https: String,
    /// The MN-CSE's CoAP over DTLS, where the locks talk.
    mn_coaps: String,
    keys: RunKeys,
    /// The admin at the MN-CSE, over its own association.
    mn_admin: Client,
    /// The CSEs' logs, where their audit lines go.
    in_log: AuditLog,
    mn_log: AuditLog,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let _temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("{}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("--dir {} must be empty", d.display());
            }
            // Absolute from here on: the configurations name files by it, and the MEF, the MAF
            // and the AEs read a relative path against their configuration's directory, the
            // CSEs against their working directory.
            std::fs::canonicalize(d).with_context(|| format!("{}", d.display()))?
        }
        None => {
            let t = tempfile::Builder::new().prefix("m2m-demo-").tempdir()?;
            let path = std::fs::canonicalize(t.path())?;
            _temp = t;
            path
        }
    };
    let mut report = Report {
        steps: Vec::new(),
        unlock_to_notification_ms: None,
    };
    let deployment = setup(&dir, RunKeys::random(), &mut report).await;
    if let Some(dep) = &deployment {
        story_and_attacks(dep, &mut report).await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    std::io::stdout().flush()?;
    if args.keep_running {
        if let Some(dep) = &deployment {
            print_poke_help(dep, &dir);
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// A client of the admin from its `m2m ae` configuration (TLS-PSK on the admin's row).
async fn admin_client(path: &Path) -> anyhow::Result<Client> {
    let cfg = crate::ae_config::AeConfig::load(path)?;
    let psk = cfg.sae.psk().await?;
    cfg.sae.client(psk, &cfg.tls_peer(), CLIENT_TIMEOUT)
}

async fn setup(d: &Path, keys: RunKeys, r: &mut Report) -> Option<Deployment> {
    let t = Instant::now();
    let res = make_pki(d).and_then(|()| keys.write(d)).map(|()| {
        (
            (),
            "CA for m2m.example.com + keys.example.net; /id-in, /mn-cse-123456, MAF, MEF; \
             random Kpsa for the gateway app and the admins"
                .to_owned(),
        )
    });
    r.record(
        ("make the PKI and keys", "demo", "-", "certificates issued"),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = (|| {
        let (proc, urls) = start_with_config(
            d,
            "mef",
            "mef",
            &mef_config(d),
            &["m2m-mef listening https://"],
        )?;
        let url = format!("https://{}", urls[0]);
        // The phone leaves the factory with its Kpm, in a private file.
        write_private(&d.join(PHONE_KPM_FILE), PHONE_KPM.as_bytes())?;
        let msg = format!("listening {url}, Kpm row for the smartphone /id-in/Cphone");
        Ok(((proc, url), msg))
    })();
    let (mef, mef_url) = r.record(("start the MEF", MEF_FQDN, "-", "listening"), t, res)?;

    let t = Instant::now();
    let res = (|| {
        let (proc, urls) = start_with_config(
            d,
            "maf",
            "maf",
            &maf_config(d, &mef_url),
            &["m2m-maf listening https://"],
        )?;
        let url = format!("https://{}", urls[0]);
        for (ae, _, km) in KMS {
            write_private(&d.join(km_file(ae)), km.as_bytes())?;
        }
        let msg = format!("listening {url}, Km rows for /id-in/Cstranger, Cbabysitter");
        Ok(((proc, url), msg))
    })();
    let (maf, maf_url) = r.record(("start the MAF", MAF_FQDN, "-", "listening"), t, res)?;

    let t = Instant::now();
    let res = (|| {
        let (proc, urls) = start_with_config(
            d,
            "bsf",
            "bsf",
            &bsf_config(d),
            &["m2m-bsf ub ", "m2m-bsf listening https://"],
        )?;
        // The operator personalises the cellular lock's SIM: K and OPc in the BSF's store (its
        // HSS) and in the device's USIM, the AE-ID its associations are bound to.
        let cfg = d.join("bsf.toml").display().to_string();
        let usim = d.join(GARAGE_USIM).display().to_string();
        let out = spawned::m2m(&[
            "bsf",
            "subscriber-add",
            "--config",
            &cfg,
            "--impi",
            GARAGE_IMPI,
            "--ae-id",
            GARAGE_AE,
            "--usim-out",
            &usim,
        ])?
        .output()?;
        if !out.status.success() {
            bail!(
                "m2m bsf subscriber-add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ub = urls[0].clone();
        let zn = format!("https://{}", urls[1]);
        let msg = format!("Ub {ub}, Zn {zn}; SIM of the cellular lock provisioned ({GARAGE_AE})");
        Ok(((proc, ub, zn), msg))
    })();
    let (bsf, bsf_ub, bsf_zn) = r.record(
        ("start the BSF, provision a SIM", BSF_FQDN, "-", "listening"),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = (|| {
        let (proc, urls) = start_with_config(
            d,
            "cse",
            "in",
            &in_config(d, &maf_url, &bsf_zn, &keys),
            &[LISTENING_PREFIX_TLS, spawned::LISTENING_PREFIX_WSS],
        )?;
        let https = format!("https://{}", urls[0]);
        let wss = format!("wss://{}", urls[1]);
        write_private(
            &d.join(ADMIN_IN_AE),
            admin_ae_config(
                &https,
                "/id-in",
                "cse-in",
                ADMIN_IN_KPSA_ID,
                ADMIN_IN_KPSA_FILE,
            )
            .as_bytes(),
        )?;
        let msg =
            format!("listening {https}, WebSocket {wss} (TLS only; the admin by its own PSK)");
        Ok(((proc, https, wss), msg))
    })();
    let (in_proc, in_https, in_wss) = r.record(
        ("start the IN-CSE", "IN-CSE /id-in", "-", "listening"),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = async {
        let mqtt_port = crate::mosquitto::installed()
            .then(|| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
            .transpose()?
            .map(|a| a.port());
        std::fs::create_dir_all(d.join("mqtt"))?;
        let (proc, urls) = start_with_config(d, "cse", "mn", &mn_config(d, &in_https, &keys, mqtt_port), &[LISTENING_PREFIX, LISTENING_PREFIX_TLS, LISTENING_PREFIX_DTLS])?;
        let broker = match mqtt_port {
            Some(port) => Some((
                crate::mosquitto::start(&d.join("mn.toml"), &d.join("mqtt"), &d.join("mosquitto.log"))?,
                format!("mqtts://127.0.0.1:{port}"),
            )),
            None => None,
        };
        let (http, https) = cse_urls(&urls);
        let coaps = format!("coaps://{}", urls[2]);
        write_private(
            &d.join(ADMIN_MN_AE),
            admin_ae_config(&https, &format!("/{MN_ID}"), "cse-mn", ADMIN_MN_KPSA_ID, ADMIN_MN_KPSA_FILE)
                .as_bytes(),
        )?;
        // Registered when the IN holds the MN's <remoteCSE>: the IN's admin looks, over its
        // own association.
        let in_admin = admin_client(&d.join(ADMIN_IN_AE)).await?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let rsp = send(
                &in_admin,
                &in_https,
                Operation::Retrieve,
                &format!("cse-in/{MN_ID}"),
                ADMIN,
                None,
                None,
            )
            .await;
            if matches!(&rsp, Ok(x) if code(x) == 2000) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the MN-CSE did not register with the IN-CSE within {START_TIMEOUT:?}; logs: {}",
                    d.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mn_admin = admin_client(&d.join(ADMIN_MN_AE)).await?;
        let (broker, gateway_url, mqtt) = match broker {
            Some((b, url)) => {
                wait_logged(&d.join("mn.log"), "MQTT server associated").await?;
                (Some(b), url, "; MQTT via mosquitto".to_owned())
            }
            None => (None, https.clone(), "; mosquitto not installed: no MQTT".to_owned()),
        };
        Ok((
            (proc, http, https, coaps, mn_admin, broker, gateway_url),
            format!("registered with the IN-CSE over mutual TLS; loopback listener anonymous; CoAP over DTLS{mqtt}"),
        ))
    }
    .await;
    let (mn_proc, mn_http, mn_https, mn_coaps, mn_admin, broker, gateway_url) = r.record(
        (
            "start the home gateway, register with the IN-CSE",
            "MN-CSE /mn-cse-123456",
            SAE_CERT,
            "<remoteCSE> on the IN",
        ),
        t,
        res,
    )?;
    Some(Deployment {
        dir: d.to_owned(),
        _mef: mef,
        mef_url,
        _bsf: bsf,
        bsf_ub,
        _maf: maf,
        _in: in_proc,
        _mn: mn_proc,
        maf_url,
        in_https,
        in_wss,
        gateway_sae: if broker.is_some() {
            SAE_MQTT_PSK
        } else {
            SAE_PSK
        },
        gateway_url,
        _broker: broker,
        mn_http,
        mn_https,
        mn_coaps,
        keys,
        mn_admin,
        in_log: AuditLog::new("IN-CSE", d.join("in.log")),
        mn_log: AuditLog::new("MN-CSE", d.join("mn.log")),
    })
}

/// Waits until `log` holds `text` (a process announcing a state).
async fn wait_logged(log: &Path, text: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !std::fs::read_to_string(log).is_ok_and(|l| l.contains(text)) {
        if Instant::now() > deadline {
            bail!("{} never logged {text:?}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The private file of a pre-provisioned Km.
fn km_file(ae: &str) -> String {
    format!("{}-km.hex", ae.trim_start_matches('C'))
}

/// The target of the phones' connection keys: the IN-CSE.
fn in_cse_id() -> String {
    format!("//{SP}/id-in")
}

/// MAF-based SAE of the owner's phone: enrolment at the MEF on its Kpm, Kc for the IN-CSE.
fn owner_phone(dep: &Deployment) -> MafSae {
    MafSae {
        url: dep.maf_url.clone(),
        fqdn: MAF_FQDN.into(),
        target_cse: in_cse_id(),
        credential: MafCredential::Enrolment(crate::association::MefEnrolment {
            mef_url: dep.mef_url.clone(),
            mef_fqdn: MEF_FQDN.into(),
            enrolee: crate::association::MefEnrolee::Kpm {
                kpm_id: PHONE_KPM_ID.into(),
                kpm: SecretSource::File(dep.dir.join(PHONE_KPM_FILE)),
            },
        }),
    }
}

/// MAF-based SAE of the other phones: their pre-provisioned Km row `KMS[i]`.
fn other_phone(dep: &Deployment, i: usize) -> MafSae {
    let (ae, km_id, _) = KMS[i];
    MafSae {
        url: dep.maf_url.clone(),
        fqdn: MAF_FQDN.into(),
        target_cse: in_cse_id(),
        credential: MafCredential::Km {
            km_id: km_id.into(),
            km: SecretSource::File(dep.dir.join(km_file(ae))),
        },
    }
}

/// A phone-like AE `ae`: Kc from the MAF for the IN-CSE (the code `m2m ae` and `m2m request`
/// run), then registration there over TLS-PSK.
async fn phone_registers(
    url: &str,
    ae: &str,
    sae: MafSae,
    poa: Option<&str>,
) -> anyhow::Result<(Client, String)> {
    let mode = SaeMode::Maf(sae);
    let psk = mode.psk().await?;
    let client = mode.client(psk, &TlsPeer::default(), CLIENT_TIMEOUT)?;
    let rn = ae.trim_start_matches('C');
    let mut ae = json!({ "rn": rn, "api": "Nphone", "rr": poa.is_some(), "srv": ["3"] });
    if let Some(poa) = poa {
        ae["poa"] = json!([poa]);
    }
    let rsp = expect(
        send(
            &client,
            url,
            Operation::Create,
            "cse-in",
            "C",
            Some(ResourceType::Ae),
            Some(json!({ "m2m:ae": ae })),
        )
        .await,
        2001,
        "registration at the IN-CSE",
    )?;
    let aei = pc(&rsp)["m2m:ae"]["aei"]
        .as_str()
        .context("no aei")?
        .to_owned();
    Ok((client, aei))
}

/// The owner's phone's `<AE>` at the IN-CSE.
const PHONE_AE: &str = "cse-in/phone";

fn state_path(lock: &Lock) -> String {
    format!("/{MN_ID}/cse-mn/{}/state", lock.rn)
}

async fn story_and_attacks(dep: &Deployment, r: &mut Report) {
    if story(dep, r).await.is_none() {
        eprintln!("the story stopped at a failed step; the attacks are not played");
        return;
    }
    if administration(dep, r).await.is_none() {
        eprintln!("the administration stopped at a failed step");
    }
}

async fn story(dep: &Deployment, r: &mut Report) -> Option<()> {
    // 1. The locks register at the gateway over TLS-PSK and publish their state.
    let mut lock_clients = Vec::new();
    for lock in [&FRONT, &BACK] {
        let t = Instant::now();
        let res = async {
            let client = psk_client(lock.kpsa_id, &hex_key(lock.key)?)?;
            let body = json!({ "m2m:ae": { "rn": lock.rn, "api": "Ndoorlock", "rr": false, "srv": ["3"] } });
            let rsp = expect(
                send(&client, &dep.mn_coaps, Operation::Create, "cse-mn", "C", Some(ResourceType::Ae), Some(body)).await,
                2001,
                "registration",
            )?;
            let aei = pc(&rsp)["m2m:ae"]["aei"].as_str().unwrap_or_default().to_owned();
            if aei != lock.ae {
                bail!("registered as {aei}, not {}", lock.ae);
            }
            Ok((client, format!("From C over {} -> aei {aei}", lock.kpsa_id)))
        }
        .await;
        let client = r.record(
            (
                "lock registers at the home gateway",
                lock.label,
                SAE_DTLS_PSK,
                &format!("2001, aei {}", lock.ae),
            ),
            t,
            res,
        )?;

        let t = Instant::now();
        let res = async {
            let mut pv = vec![
                json!({ "acor": [lock.ae], "acop": 63, "acaf": true }),
                json!({ "acor": ["/id-in/Cphone"], "acop": 35 }),
            ];
            if lock.ae == FRONT.ae {
                pv.push(json!({ "acor": ["/id-in/Cbabysitter"], "acop": 2,
                                "acco": [{ "actw": ["* * * * * * 2001"] }] }));
            }
            // The gateway app: RETRIEVE, and CREATE of subscriptions (type 23) only.
            pv.push(json!({ "acor": [GATEWAY_AE], "acop": 3, "acod": [{ "chty": [23] }] }));
            let acp = json!({ "m2m:acp": { "rn": "state-acp", "pv": { "acr": pv },
                              "pvs": { "acr": [{ "acor": [lock.ae], "acop": 63 }] } } });
            let base = format!("cse-mn/{}", lock.rn);
            let rsp = expect(
                send(
                    &client,
                    &dep.mn_coaps,
                    Operation::Create,
                    &base,
                    lock.ae,
                    Some(ResourceType::AccessControlPolicy),
                    Some(acp),
                )
                .await,
                2001,
                "ACP",
            )?;
            let acp_ri = pc(&rsp)["m2m:acp"]["ri"]
                .as_str()
                .context("no ACP ri")?
                .to_owned();
            expect(
                send(
                    &client,
                    &dep.mn_coaps,
                    Operation::Create,
                    &base,
                    lock.ae,
                    Some(ResourceType::Container),
                    Some(json!({ "m2m:cnt": { "rn": "state", "acpi": [acp_ri] } })),
                )
                .await,
                2001,
                "container state",
            )?;
            expect(
                create_cin(
                    &client,
                    &dep.mn_coaps,
                    &format!("{base}/state"),
                    lock.ae,
                    "LOCKED",
                )
                .await,
                2001,
                "LOCKED",
            )?;
            Ok((
                (),
                format!(
                    "state under ACP ({} acaf; phone: ops 35; gateway app: read, subscribe) = LOCKED",
                    lock.ae
                ),
            ))
        }
        .await;
        r.record(
            (
                "lock creates state + ACP, reports LOCKED",
                lock.label,
                SAE_DTLS_PSK,
                "2001 x3",
            ),
            t,
            res,
        )?;
        lock_clients.push(client);
    }

    // 2. The gateway app registers over its own association and reads what its rule grants.
    let gateway = gateway_app(dep, r).await?;

    // 3. The smartphone: Kc from the MAF, registration at the IN-CSE over the WebSocket it
    //    keeps open (TS-0020): behind NAT nobody reaches it, its notifications come on it.
    let t = Instant::now();
    let res = async {
        let (client, aei) = phone_registers(&dep.in_wss, "Cphone", owner_phone(dep), None).await?;
        if aei != "Cphone" {
            bail!("registered as {aei}, not Cphone");
        }
        Ok((
            client,
            format!(
                "Kc from the MAF; aei {aei}, over its WebSocket {}",
                dep.in_wss
            ),
        ))
    }
    .await;
    let phone = r.record(
        (
            "phone enrols at the MEF, gets Kc from the MAF, registers",
            "smartphone ADN-AE3",
            SAE_MAF,
            "2001, aei Cphone",
        ),
        t,
        res,
    )?;
    let mut receiver = match crate::notification_receiver::start_websocket(
        phone.clone(),
        dep.in_wss.clone(),
        "Cphone".into(),
        PHONE_AE.into(),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            r.record::<()>(
                (
                    "start the phone's notification receiver",
                    "smartphone ADN-AE3",
                    "-",
                    "its WebSocket",
                ),
                Instant::now(),
                Err(e),
            );
            return None;
        }
    };

    let t = Instant::now();
    let res = async {
        let mut req = Request::new(
            Operation::Retrieve,
            format!("/{MN_ID}/cse-mn"),
            Some("Cphone".into()),
            m2m_client::next_request_id(),
        );
        req.fc.filter_usage = Some(FilterUsage::Discovery);
        req.fc.resource_types = vec![3];
        let rsp = expect(phone.send(&dep.in_https, &req).await, 2000, "discovery")?;
        let uris: Vec<String> = pc(&rsp)["m2m:uril"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for lock in [&FRONT, &BACK] {
            let want = format!("{}/state", lock.rn);
            if !uris.iter().any(|u| u.ends_with(&want)) {
                bail!("{want} not discovered: {uris:?}");
            }
        }
        Ok(((), format!("found {}", uris.join(", "))))
    }
    .await;
    r.record(
        (
            "phone discovers the locks through the IN-CSE",
            "smartphone ADN-AE3",
            SAE_MAF,
            "both state containers",
        ),
        t,
        res,
    )?;

    let front_state = state_path(&FRONT);
    let t = Instant::now();
    let res = async {
        let sub = json!({ "m2m:sub": { "rn": "phone-sub", "nu": ["/id-in/Cphone"], "enc": { "net": [3] } } });
        let rsp = expect(
            send(&phone, &dep.in_https, Operation::Create, &front_state, "Cphone", Some(ResourceType::Subscription), Some(sub)).await,
            2001,
            "subscription",
        )?;
        let ri = pc(&rsp)["m2m:sub"]["ri"].as_str().context("no subscription ri")?;
        receiver.subscriptions.add(subscription_reference(&front_state, ri, "/id-in"));
        Ok(((), "nu = /id-in/Cphone (MN -> IN -> the phone's WebSocket)".to_owned()))
    }
    .await;
    r.record(
        (
            "phone subscribes to the front lock's state",
            "smartphone ADN-AE3",
            SAE_MAF,
            "2001",
        ),
        t,
        res,
    )?;

    // Drop anything that arrived before the unlock.
    while receiver.notes.try_recv().is_ok() {}
    let t = Instant::now();
    let res = async {
        expect(
            create_cin(&phone, &dep.in_https, &front_state, "Cphone", "UNLOCKED").await,
            2001,
            "UNLOCKED",
        )?;
        Ok((
            (),
            "contentInstance UNLOCKED created via the IN-CSE".to_owned(),
        ))
    }
    .await;
    let unlocked_at = t;
    r.record(
        (
            "phone unlocks the front door",
            "smartphone ADN-AE3",
            SAE_MAF,
            "2001",
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = async {
        let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT;
        loop {
            let note = tokio::time::timeout_at(deadline, receiver.notes.recv())
                .await
                .map_err(|_| anyhow!("no notification within {NOTIFY_TIMEOUT:?}"))?
                .context("receiver stopped")?;
            if note.content_instance_con() == Some(&json!("UNLOCKED")) {
                let ms = note.at.duration_since(unlocked_at).as_secs_f64() * 1000.0;
                return Ok((
                    ms,
                    format!("UNLOCKED notified, {ms:.1} ms after the unlock request"),
                ));
            }
        }
    }
    .await;
    let latency = r.record(
        (
            "phone receives the notification",
            "smartphone ADN-AE3",
            "its WebSocket",
            "notification UNLOCKED",
        ),
        t,
        res,
    )?;
    r.unlock_to_notification_ms = Some(latency);

    let t = Instant::now();
    let res = async {
        let rsp = expect(
            send(
                &phone,
                &dep.in_https,
                Operation::Retrieve,
                &format!("{front_state}/la"),
                "Cphone",
                None,
                None,
            )
            .await,
            2000,
            "la",
        )?;
        let con = pc(&rsp)["m2m:cin"]["con"].clone();
        if con != "UNLOCKED" {
            bail!("state is {con}");
        }
        Ok(((), "state/la = UNLOCKED".to_owned()))
    }
    .await;
    r.record(
        (
            "phone reads the state",
            "smartphone ADN-AE3",
            SAE_MAF,
            "UNLOCKED",
        ),
        t,
        res,
    )?;

    // 4. The phone goes where it keeps no WebSocket open: it makes a <pollingChannel> at the
    //    IN-CSE and long-polls it over its own association (the channel comes first).
    let t = Instant::now();
    let res = async {
        let rsp = send(
            &phone,
            &dep.in_https,
            Operation::Create,
            PHONE_AE,
            "Cphone",
            Some(ResourceType::PollingChannel),
            Some(json!({ "m2m:pch": { "rn": "pch" } })),
        )
        .await;
        expect(rsp, 2001, "pollingChannel")?;
        let polling = crate::notification_receiver::start_polling(
            crate::notification_receiver::PollingChannel {
                client: phone.clone(),
                cse_url: dep.in_https.clone(),
                pcu: format!("{PHONE_AE}/pch/pcu"),
                aei: "Cphone".into(),
                wait: CLIENT_TIMEOUT / 2,
            },
        );
        for sur in receiver.subscriptions.all() {
            polling.subscriptions.add(sur);
        }
        Ok((
            polling,
            format!("{PHONE_AE}/pch created; long polls on its pcu"),
        ))
    }
    .await;
    let mut polling = r.record(
        (
            "phone goes out of reach: makes a pollingChannel",
            "smartphone ADN-AE3",
            SAE_MAF,
            "2001, polling",
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = async {
        expect(
            create_cin(&phone, &dep.in_https, &front_state, "Cphone", "LOCKED").await,
            2001,
            "LOCKED",
        )?;
        Ok(((), "contentInstance LOCKED".to_owned()))
    }
    .await;
    let locked_at = t;
    r.record(
        (
            "phone locks the front door again",
            "smartphone ADN-AE3",
            SAE_MAF,
            "2001",
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = async {
        let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT;
        let ms = loop {
            let note = tokio::time::timeout_at(deadline, polling.notes.recv())
                .await
                .map_err(|_| anyhow!("no notification within {NOTIFY_TIMEOUT:?}"))?
                .context("poller stopped")?;
            if note.content_instance_con() == Some(&json!("LOCKED")) {
                let ms = note.at.duration_since(locked_at).as_secs_f64() * 1000.0;
                break Ok::<_, anyhow::Error>(ms);
            }
        }?;
        if let Ok(Some(note)) =
            tokio::time::timeout(Duration::from_millis(200), receiver.notes.recv()).await
        {
            bail!("the WebSocket still got a notification: {}", note.sgn);
        }
        Ok((
            (),
            format!("LOCKED on a long poll of pch/pcu, {ms:.1} ms after the lock request; nothing on its WebSocket"),
        ))
    }
    .await;
    r.record(
        (
            "phone receives the notification by long polling",
            "smartphone ADN-AE3",
            "polling channel",
            "notification LOCKED",
        ),
        t,
        res,
    )?;

    let b_tid = cellular_lock(dep, r).await?;
    attacks(dep, r, &lock_clients[1], &gateway, &b_tid).await;
    Some(())
}

/// The cellular lock (the garage, no home gateway in reach) has a SIM: it bootstraps at the
/// operator's BSF (HTTP Digest AKA with its USIM), associates with the IN-CSE with its B-TID
/// and Ks_NAF, which the IN-CSE fetches from the BSF, and registers as the AE-ID its
/// subscriber record names. Returns the B-TID (which any eavesdropper sees).
async fn cellular_lock(dep: &Deployment, r: &mut Report) -> Option<String> {
    let t = Instant::now();
    let res = async {
        let mode = SaeMode::Gba(crate::association::GbaSae {
            device: crate::association::GbaDevice {
                usim: dep.dir.join(GARAGE_USIM),
                ub_url: dep.bsf_ub.clone(),
                bsf_fqdn: BSF_FQDN.into(),
            },
            naf_fqdn: IN_SERVER_NAME.into(),
        });
        let psk = mode.psk().await?.context("no GBA credential")?;
        let b_tid = psk.identity.clone();
        let client = mode.client(Some(psk), &TlsPeer::default(), CLIENT_TIMEOUT)?;
        let body = json!({ "m2m:ae": { "rn": "garage-lock", "api": "Ndoorlock", "rr": false, "srv": ["3"] } });
        let rsp = expect(
            send(&client, &dep.in_https, Operation::Create, "cse-in", GARAGE_AE, Some(ResourceType::Ae), Some(body)).await,
            2001,
            "registration at the IN-CSE",
        )?;
        let aei = pc(&rsp)["m2m:ae"]["aei"].as_str().unwrap_or_default().to_owned();
        if aei != GARAGE_AE {
            bail!("registered as {aei}, not as the subscriber record's {GARAGE_AE}");
        }
        // The IN-CSE's audit line names the subscriber (Credential-ID 97-IMPI), not the B-TID.
        let bound = format!("97-{GARAGE_IMPI} -> //{SP}/id-in/{GARAGE_AE}");
        wait_logged(&dep.dir.join("in.log"), &bound).await?;
        Ok((
            b_tid.clone(),
            format!("bootstrapped (B-TID {b_tid}); 2001 as {aei}; IN-CSE audit: association {bound}"),
        ))
    }
    .await;
    r.record(
        (
            "cellular lock bootstraps by GBA and registers at the IN-CSE",
            "cellular lock Cgarage-lock",
            SAE_GBA,
            "2001, bound to the SIM's AE-ID",
        ),
        t,
        res,
    )
}

/// The gateway app registers at the MN-CSE over TLS-PSK with its own key (the association binds
/// Cgateway-app) and reads the front lock's state, which its rule grants.
async fn gateway_app(dep: &Deployment, r: &mut Report) -> Option<Client> {
    let t = Instant::now();
    let res = async {
        // Its MQTT server when the home gateway has one (the CSE-ID names the topics).
        let client = crate::association::SaeMode::None.client(
            Some(crate::association::PskCredential::new(
                GATEWAY_KPSA_ID.to_owned(),
                zeroize::Zeroizing::new(hex_key(&dep.keys.gateway)?),
            )),
            &TlsPeer {
                cse_id: Some(format!("/{MN_ID}")),
                ..TlsPeer::default()
            },
            CLIENT_TIMEOUT,
        )?;
        let body =
            json!({ "m2m:ae": { "rn": GATEWAY_RN, "api": "Ngateway", "rr": false, "srv": ["3"] } });
        let rsp = expect(
            send(
                &client,
                &dep.gateway_url,
                Operation::Create,
                "cse-mn",
                "C",
                Some(ResourceType::Ae),
                Some(body),
            )
            .await,
            2001,
            "registration",
        )?;
        let aei = pc(&rsp)["m2m:ae"]["aei"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if aei != GATEWAY_AE {
            bail!("registered as {aei}, not {GATEWAY_AE}");
        }
        Ok((
            client,
            format!(
                "From C over {GATEWAY_KPSA_ID} via {} -> aei {aei}",
                dep.gateway_url
            ),
        ))
    }
    .await;
    let client = r.record(
        (
            "gateway app registers at the home gateway",
            GATEWAY_LABEL,
            dep.gateway_sae,
            &format!("2001, aei {GATEWAY_AE}"),
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = async {
        let rsp = expect(
            send(
                &client,
                &dep.gateway_url,
                Operation::Retrieve,
                &format!("cse-mn/{}/state/la", FRONT.rn),
                GATEWAY_AE,
                None,
                None,
            )
            .await,
            2000,
            "state/la",
        )?;
        let con = pc(&rsp)["m2m:cin"]["con"].clone();
        if con != "LOCKED" {
            bail!("state is {con}");
        }
        Ok((
            (),
            "front lock's state/la = LOCKED (its rule grants RETRIEVE)".to_owned(),
        ))
    }
    .await;
    r.record(
        (
            "gateway app reads the front lock's state",
            GATEWAY_LABEL,
            dep.gateway_sae,
            "2000 LOCKED",
        ),
        t,
        res,
    )?;
    Some(client)
}

async fn attacks(dep: &Deployment, r: &mut Report, back: &Client, gateway: &Client, b_tid: &str) {
    let front_rel = format!("cse-mn/{}/state", FRONT.rn);
    let mn = &dep.mn_log;

    let t = Instant::now();
    let mark = mn.mark();
    let res = refused_and_audited(
        create_cin(
            &Client::new(),
            &dep.mn_http,
            &front_rel,
            FRONT.ae,
            "UNLOCKED",
        )
        .await,
        4103,
        (mn, mark),
        "access denied",
        "claimed without a security association",
    )
    .await;
    r.record(
        (
            "ATTACK unlock without a security association",
            "Clock-AE1 (claimed)",
            SAE_NONE,
            "4103 (a claim matches only \"all\")",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let res = local_admin(dep).await;
    r.record(
        (
            "ATTACK a local process without a credential acts as the admin",
            "CAdmin (claimed, loopback)",
            SAE_NONE,
            "4106, lock still there",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let mark = mn.mark();
    let res = refused_and_audited(
        create_cin(
            gateway,
            &dep.gateway_url,
            &front_rel,
            GATEWAY_AE,
            "UNLOCKED",
        )
        .await,
        4103,
        (mn, mark),
        "access denied",
        "accessControlObjectDetails",
    )
    .await;
    r.record(
        (
            "ATTACK the gateway app unlocks the front door",
            GATEWAY_AE,
            dep.gateway_sae,
            "4103 (acod: subscriptions only)",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let mark = mn.mark();
    let res = psk_handshake_attack(
        (&dep.mn_https, &front_rel),
        (FRONT.kpsa_id, "1a2b3c4d5e6f7a8c"),
        (ALERT_BAD_MAC, REFUSED_BAD_MAC),
        (mn, mark),
    )
    .await;
    r.record(
        (
            "ATTACK wrong PSK for the front lock's KpsaID",
            FRONT.kpsa_id,
            SAE_PSK,
            "handshake refused",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let mark = mn.mark();
    let res = tls13_without_the_key(dep, (mn, mark)).await;
    r.record(
        (
            "ATTACK TLS 1.3 PSK client without the front lock's key",
            FRONT.kpsa_id,
            SAE_PSK_TLS13,
            "handshake refused",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let guessed = "AE123456789013-Lock@in.provider.com";
    let mark = mn.mark();
    let res = psk_handshake_attack(
        (&dep.mn_https, &front_rel),
        (guessed, FRONT.key),
        (ALERT_UNKNOWN_IDENTITY, REFUSED_UNKNOWN_IDENTITY),
        (mn, mark),
    )
    .await;
    r.record(
        (
            "ATTACK guessed KpsaID",
            guessed,
            SAE_PSK,
            "handshake refused",
        ),
        t,
        res,
    );

    // The same two over CoAP/DTLS: the same alerts reach the client, the same reasons the log.
    let t = Instant::now();
    let mark = mn.mark();
    let res = async {
        let c = dtls_cbc_psk_client(FRONT.kpsa_id, &hex_key("1a2b3c4d5e6f7a8c")?)?;
        let r = send(
            &c,
            &dep.mn_coaps,
            Operation::Retrieve,
            &front_rel,
            FRONT.ae,
            None,
            None,
        )
        .await;
        handshake_refused_and_audited(r, ALERT_BAD_MAC, (mn, mark), REFUSED_BAD_MAC).await
    }
    .await;
    r.record(
        (
            "ATTACK wrong PSK for the front lock's KpsaID, over DTLS",
            FRONT.kpsa_id,
            SAE_DTLS_PSK,
            "handshake refused",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let mark = mn.mark();
    let res = psk_handshake_attack(
        (&dep.mn_coaps, &front_rel),
        (guessed, FRONT.key),
        (ALERT_UNKNOWN_IDENTITY, REFUSED_UNKNOWN_IDENTITY),
        (mn, mark),
    )
    .await;
    r.record(
        (
            "ATTACK guessed KpsaID, over DTLS",
            guessed,
            SAE_DTLS_PSK,
            "handshake refused",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let mark = mn.mark();
    let res = refused_and_audited(
        create_cin(back, &dep.mn_coaps, &front_rel, FRONT.ae, "UNLOCKED").await,
        4106,
        (mn, mark),
        "originator refused",
        "over an association bound to",
    )
    .await;
    r.record(
        (
            "ATTACK back lock pretends to be the front lock",
            "Cllock-AE2 as Clock-AE1",
            SAE_DTLS_PSK,
            "4106",
        ),
        t,
        res,
    );

    let t = Instant::now();
    let res = expired_key(dep).await;
    r.record(
        (
            "ATTACK phone uses its expired MAF key",
            "smartphone ADN-AE3",
            SAE_MAF,
            "handshake refused",
        ),
        t,
        res,
    );

    let state_la = format!("{}/la", state_path(&FRONT));
    let mut stranger = None;
    for (i, step, expected, reason) in [
        (
            0,
            "ATTACK an AE no ACP names reads the lock",
            "4103",
            // No rule names it: the reason names it as the MN-CSE saw it, relayed by the IN.
            format!("grants RETRIEVE to //{SP}/id-in/{}", KMS[0].0),
        ),
        (
            1,
            "ATTACK babysitter outside its time window (2001)",
            "4103 (actw)",
            "is outside accessControlWindow".to_owned(),
        ),
    ] {
        let t = Instant::now();
        let res = async {
            let (c, aei) =
                phone_registers(&dep.in_https, KMS[i].0, other_phone(dep, i), None).await?;
            if i == 0 {
                stranger = Some((c.clone(), aei.clone()));
            }
            // The MN-CSE, which hosts the lock's policy, decides (the IN-CSE retargets).
            let mark = mn.mark();
            refused_and_audited(
                send(
                    &c,
                    &dep.in_https,
                    Operation::Retrieve,
                    &state_la,
                    &aei,
                    None,
                    None,
                )
                .await,
                4103,
                (mn, mark),
                "access denied",
                &reason,
            )
            .await
        }
        .await;
        r.record((step, KMS[i].0, SAE_MAF, expected), t, res);
    }

    // The stranger, registered at the IN-CSE like the phone, polls the phone's channel to take
    // the notifications meant for it.
    let t = Instant::now();
    let res = async {
        let (c, aei) = stranger.context("the stranger did not register")?;
        let mark = dep.in_log.mark();
        let mut poll = Request::new(
            Operation::Retrieve,
            format!("{PHONE_AE}/pch/pcu"),
            Some(aei),
            m2m_client::next_request_id(),
        );
        poll.rqet = Some("2000".into());
        refused_and_audited(
            c.send(&dep.in_https, &poll).await,
            4103,
            (&dep.in_log, mark),
            "access denied",
            "is not the entity the polling channel",
        )
        .await
    }
    .await;
    r.record(
        (
            "ATTACK a stranger polls the phone's channel",
            KMS[0].0,
            SAE_MAF,
            "4103",
        ),
        t,
        res,
    );

    // The B-TID crosses the air in the clear (the psk_identity); without K in the SIM nobody
    // has its Ks_NAF. The IN-CSE fetches the real key from the BSF and the handshake fails.
    let t = Instant::now();
    let key = hex::encode(rand::random::<[u8; 32]>());
    let res = psk_handshake_attack(
        (&dep.in_https, "cse-in/garage-lock"),
        (b_tid, &key),
        (ALERT_BAD_MAC, REFUSED_BAD_MAC),
        (&dep.in_log, dep.in_log.mark()),
    )
    .await;
    r.record(
        (
            "ATTACK the cellular lock's sniffed B-TID with a guessed key",
            "attacker (B-TID)",
            SAE_GBA,
            "handshake refused (no K, no Ks_NAF)",
        ),
        t,
        res,
    );
}

// ---------------------------------------------------------------------------------------------
// Security administration (seed 002): the operator rotates the front lock's key remotely
// ---------------------------------------------------------------------------------------------

/// The front lock's new KpsaID after the rotation.
const FRONT_ROTATED_KPSA_ID: &str = "AE123456789012-Lock-r1@in.provider.com";
/// The front lock as an `m2m ae` process: its configuration, its private P-256 JWK (crse is
/// encrypted for it), its pre-provisioned Kpsa.
const FRONT_AE_CONFIG: &str = "front-lock.toml";
const FRONT_JWK: &str = "front-lock.jwk";
const FRONT_KPSA_FILE: &str = "front-lock.kpsa";
/// The front lock's `<node>` at the gateway and its credentials object (`dcfg:crds`, pur "kpsa").
const FRONT_NODE: &str = "cse-mn/front-lock-node";
const FRONT_CREDENTIALS: &str = "cse-mn/front-lock-node/kpsa";

/// The babysitter has left: the operator rotates the front lock's Kpsa through the lock's
/// credentials object at the gateway (TS-0001 Annex D device management, docs/SECURITY.md
/// "Rotating a device's Kpsa"), the lock (`m2m ae` over CoAP/DTLS) picks it up, and the old key
/// opens nothing any more, over either listener.
async fn administration(dep: &Deployment, r: &mut Report) -> Option<()> {
    let t = Instant::now();
    let res = device_objects(dep).await;
    r.record(
        (
            "operator gives the front lock a node and a credentials object",
            ADMIN,
            SAE_PSK,
            "2001 x3",
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = front_lock_process(dep).await;
    let lock = r.record(
        (
            "front lock runs as m2m ae, watching its credentials object",
            FRONT.label,
            SAE_DTLS_PSK,
            "ready, registration reused",
        ),
        t,
        res,
    )?;

    let t = Instant::now();
    let res = rotate_front_key(dep, &lock).await;
    r.record(
        (
            "the babysitter has left: operator rotates the front lock's key",
            ADMIN,
            SAE_PSK,
            "2004; the lock uses the new key",
        ),
        t,
        res,
    )?;

    let front_rel = format!("cse-mn/{}", FRONT.rn);
    for (step, url, sae) in [
        (
            "ATTACK the front lock's old key after the rotation",
            &dep.mn_coaps,
            SAE_DTLS_PSK,
        ),
        (
            "ATTACK the front lock's old key after the rotation, over TLS",
            &dep.mn_https,
            SAE_PSK,
        ),
    ] {
        let t = Instant::now();
        let mark = dep.mn_log.mark();
        let res = psk_handshake_attack(
            (url, &front_rel),
            (FRONT.kpsa_id, FRONT.key),
            (ALERT_UNKNOWN_IDENTITY, REFUSED_UNKNOWN_IDENTITY),
            (&dep.mn_log, mark),
        )
        .await;
        r.record((step, FRONT.kpsa_id, sae, "handshake refused"), t, res);
    }
    drop(lock);
    Some(())
}

/// The operator's part: an ACP (the lock may read and update its objects, the operator
/// everything), the lock's `<node>` (hael: the lock) and its credentials object naming the
/// current KpsaID.
async fn device_objects(dep: &Deployment) -> anyhow::Result<((), String)> {
    let admin = &dep.mn_admin;
    let create = |to: &'static str, ty: ResourceType, body: Value| async move {
        let rsp = send(
            admin,
            &dep.mn_https,
            Operation::Create,
            to,
            ADMIN,
            Some(ty),
            Some(body),
        );
        expect(rsp.await, 2001, &format!("{ty:?}"))
    };
    let acp = json!({ "m2m:acp": { "rn": "front-lock-dm",
        "pv": { "acr": [{ "acor": [FRONT.ae], "acop": 6 }] },
        "pvs": { "acr": [{ "acor": [ADMIN], "acop": 63 }] } } });
    let rsp = create("cse-mn", ResourceType::AccessControlPolicy, acp).await?;
    let acpi = json!([pc(&rsp)["m2m:acp"]["ri"].as_str().context("no ACP ri")?]);
    let node = json!({ "m2m:nod": { "rn": "front-lock-node", "ni": "front-lock-device",
        "hael": [FRONT.ae], "acpi": acpi } });
    create("cse-mn", ResourceType::Node, node).await?;
    let crds = json!({ "dcfg:crds": { "rn": "kpsa", "mgd": 1029, "pur": "kpsa",
        "crid": FRONT.kpsa_id, "acpi": acpi } });
    create(FRONT_NODE, ResourceType::MgmtObj, crds).await?;
    Ok((
        (),
        format!("{FRONT_CREDENTIALS}: pur kpsa, crid {}; the lock may read it, only the operator change its key", FRONT.kpsa_id),
    ))
}

/// Starts the front lock as `m2m ae`: its Kpsa and a new device JWK in private files, its kept
/// registration (the lock registered in the story), `[credentials]` polled every second.
async fn front_lock_process(dep: &Deployment) -> anyhow::Result<(Spawned, String)> {
    let d = &dep.dir;
    write_private(&d.join(FRONT_KPSA_FILE), FRONT.key.as_bytes())?;
    let out = spawned::m2m(&[
        "e2e",
        "keygen",
        "--kty",
        "ec",
        "--kid",
        "front-lock-device",
        "--out",
    ])?
    .arg(d.join(FRONT_JWK))
    .output()
    .context("m2m e2e keygen")?;
    if !out.status.success() {
        bail!("m2m e2e keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(d.join("front-lock.pub.jwk"), &out.stdout)?;
    let config = format!(
        "[ae]\nresource_name = \"{}\"\napp_id = \"Ndoorlock\"\noriginator = \"{}\"\n\
         [cse]\nurl = \"{}\"\ncse_id = \"/{MN_ID}\"\nresource_name = \"cse-mn\"\n\
         [security]\nmode = \"psk\"\nkpsa_id = \"{}\"\nkey_file = \"{FRONT_KPSA_FILE}\"\n\
         [credentials]\nobject = \"{FRONT_CREDENTIALS}\"\nprivate_jwk = \"{FRONT_JWK}\"\npoll_seconds = 1\n",
        FRONT.rn, FRONT.ae, dep.mn_coaps, FRONT.kpsa_id
    );
    let path = d.join(FRONT_AE_CONFIG);
    write_private(&path, config.as_bytes())?;
    crate::ae_config::AeConfig::load(&path)?.save_state(&crate::ae_config::AeState {
        aei: FRONT.ae.into(),
        resource_name: FRONT.rn.into(),
        cse_url: dep.mn_coaps.clone(),
    })?;
    let (proc, ready) = spawn(
        &["ae", "--config", &path.display().to_string()],
        &d.join("front-lock.log"),
        &[READY_PREFIX],
    )?;
    let ready: Value =
        serde_json::from_str(&format!("{READY_PREFIX}{}", ready[0])).context("the ready line")?;
    let (aei, how) = (&ready["ready"]["aei"], &ready["ready"]["registration"]);
    if aei != FRONT.ae || how != "reused" {
        bail!("ready as {aei} ({how}), not {} (reused)", FRONT.ae);
    }
    Ok((
        proc,
        format!(
            "aei {}, registration reused; polls {FRONT_CREDENTIALS} every second",
            FRONT.ae
        ),
    ))
}

/// The line `m2m ae` prints once registered.
const READY_PREFIX: &str = "{\"ready\"";
/// The line `m2m ae` prints once it associates with a rotated Kpsa.
const CREDENTIAL_PREFIX: &str = "{\"credential\"";

/// The operator's tool makes the new KpsaID's update (its Kpsa derived from Krot, in a JWE for
/// the lock's key); the gateway takes it; the lock reports that it associates with the new key,
/// and the new key, derived here independently, opens an association bound to the lock.
async fn rotate_front_key(dep: &Deployment, lock: &Spawned) -> anyhow::Result<((), String)> {
    let d = &dep.dir;
    let entity = format!("/{MN_ID}/{}", FRONT.ae);
    let out = spawned::m2m(&[
        "keys",
        "rotate-kpsa",
        "--kpsa-id",
        FRONT_ROTATED_KPSA_ID,
        "--entity",
        &entity,
    ])?
    .arg("--rotation-key")
    .arg(d.join(ROTATION_KEY_FILE))
    .arg("--device-jwk")
    .arg(d.join("front-lock.pub.jwk"))
    .output()
    .context("m2m keys rotate-kpsa")?;
    if !out.status.success() {
        bail!(
            "m2m keys rotate-kpsa: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let content: Value = serde_json::from_slice(&out.stdout).context("rotate-kpsa output")?;
    let rsp = send(
        &dep.mn_admin,
        &dep.mn_https,
        Operation::Update,
        FRONT_CREDENTIALS,
        ADMIN,
        None,
        Some(content),
    )
    .await;
    let rsp = expect(rsp, 2004, "UPDATE of the credentials object")?;
    if pc(&rsp).to_string().contains(&dep.keys.rotation) {
        bail!("the answer shows the rotation key");
    }
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let line = loop {
        if let Some(line) = lock.printed(CREDENTIAL_PREFIX) {
            break line;
        }
        if Instant::now() > deadline {
            bail!("the lock did not take the new key within {NOTIFY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reported: Value = serde_json::from_str(&line).context("the credential line")?;
    if reported["credential"]["kpsa_id"] != FRONT_ROTATED_KPSA_ID {
        bail!("the lock reports {line}");
    }
    let krot = m2m_security::credentials::Secret::from_hex(&dep.keys.rotation)
        .map_err(|_| anyhow!("the rotation key"))?;
    let new_key = m2m_security::kdf::rotated_kpsa(&krot, FRONT_ROTATED_KPSA_ID, &entity);
    let client = psk_client(FRONT_ROTATED_KPSA_ID, new_key.expose())?;
    let front = format!("cse-mn/{}", FRONT.rn);
    expect(
        send(
            &client,
            &dep.mn_coaps,
            Operation::Retrieve,
            &front,
            FRONT.ae,
            None,
            None,
        )
        .await,
        2000,
        "the lock's AE with the new key",
    )?;
    Ok((
        (),
        format!(
            "crds UPDATE 2004 (crid {FRONT_ROTATED_KPSA_ID}, crse a JWE for the lock); the lock reports the new KpsaID; the new key reads {front} as {}",
            FRONT.ae
        ),
    ))
}

/// From CAdmin on the MN-CSE's loopback listener, without a credential: deleting the front lock
/// is refused (the claim is nobody's, least of all the admin's), and the admin with its own
/// association then finds the lock still there.
async fn local_admin(dep: &Deployment) -> anyhow::Result<((), String)> {
    let lock = format!("cse-mn/{}", FRONT.rn);
    let mark = dep.mn_log.mark();
    let ((), refused) = refused_and_audited(
        send(
            &Client::new(),
            &dep.mn_http,
            Operation::Delete,
            &lock,
            ADMIN,
            None,
            None,
        )
        .await,
        4106,
        (&dep.mn_log, mark),
        "originator refused",
        &format!("{ADMIN} is not registered here and has no security association"),
    )
    .await?;
    let rsp = expect(
        send(
            &dep.mn_admin,
            &dep.mn_https,
            Operation::Retrieve,
            &lock,
            ADMIN,
            None,
            None,
        )
        .await,
        2000,
        "the admin (its own PSK) retrieves the lock",
    )?;
    let aei = pc(&rsp)["m2m:ae"]["aei"].as_str().unwrap_or_default();
    if aei != FRONT.ae {
        bail!("the admin found {aei:?} at {lock}, not {}", FRONT.ae);
    }
    Ok((
        (),
        format!("{refused}; lock still there (admin over its PSK)"),
    ))
}

/// A TLS 1.3-only client offering the front lock's KpsaID with a key it does not know, and
/// only TLS_AES_256_GCM_SHA384: the MN-CSE accepts TLS 1.3 (`tls13 = true`) but must open no
/// association bound to the lock. Should a handshake complete anyway, the unlock it then sends
/// as Clock-AE1 must be refused.
async fn tls13_without_the_key(
    dep: &Deployment,
    audit: (&AuditLog, u64),
) -> anyhow::Result<((), String)> {
    use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_ciphersuites("TLS_AES_256_GCM_SHA384")?;
    b.set_verify(SslVerifyMode::NONE);
    let identity = FRONT.kpsa_id.as_bytes().to_vec();
    let wrong = hex_key("00")?;
    b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
        if identity.len() + 1 > identity_out.len() || wrong.len() > psk_out.len() {
            return Ok(0);
        }
        identity_out[..identity.len()].copy_from_slice(&identity);
        identity_out[identity.len()] = 0;
        psk_out[..wrong.len()].copy_from_slice(&wrong);
        Ok(wrong.len())
    });
    let client = Client::new()
        .with_timeout(CLIENT_TIMEOUT)
        .with_tls(m2m_client::TlsSettings {
            context: b.build(),
            peer: m2m_client::PeerPolicy::PreSharedKey,
        });
    let front_rel = format!("cse-mn/{}/state", FRONT.rn);
    match create_cin(&client, &dep.mn_https, &front_rel, FRONT.ae, "UNLOCKED").await {
        Err(e) => {
            let seen = handshake_failure(&e, ALERT_TLS13_NO_SUITE)?;
            let audit = audit
                .0
                .reason(audit.1, "association refused", REFUSED_NO_SUITE)
                .await?;
            Ok(((), format!("handshake refused ({seen}); {audit}")))
        }
        Ok(rsp) if (4100..4200).contains(&code(&rsp)) => Ok((
            (),
            format!(
                "the handshake completed, but the unlock as {} was refused: {} {}",
                FRONT.ae,
                code(&rsp),
                rsp.rsc.name()
            ),
        )),
        Ok(rsp) => bail!(
            "an association without the key unlocked the front door: answer {}",
            code(&rsp)
        ),
    }
}

/// A Kc the phone registers (after a fresh enrolment) with an expirationTime a few seconds ahead
/// works, then opens nothing.
async fn expired_key(dep: &Deployment) -> anyhow::Result<((), String)> {
    let access = maf_access(&owner_phone(dep)).await?;
    let expires = chrono::Utc::now().timestamp() + 2;
    let key = connection_key_until(&access, &in_cse_id(), Some(&format_time(expires)))
        .await
        .map_err(|e| anyhow!(e))?;
    let attempt = || async {
        // A fresh client: a fresh association (no kept-alive connection).
        let c = psk_client(&key.psk_identity, key.psk.expose())?;
        Ok::<_, anyhow::Error>(
            send(
                &c,
                &dep.in_https,
                Operation::Retrieve,
                "cse-in/phone",
                "Cphone",
                None,
                None,
            )
            .await,
        )
    };
    expect(
        attempt().await?,
        2000,
        "before its expiry the key must work",
    )?;
    let mark = dep.in_log.mark();
    // Wait for the expiry, then poll until the handshake is refused.
    let until = Duration::from_secs((expires + 1 - chrono::Utc::now().timestamp()).max(0) as u64);
    tokio::time::sleep(until).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await? {
            Err(e) => {
                let seen = handshake_failure(&e, ALERT_UNKNOWN_IDENTITY)?;
                let audit = dep
                    .in_log
                    .reason(mark, "association refused", REFUSED_UNKNOWN_IDENTITY)
                    .await?;
                return Ok((
                    (),
                    format!(
                        "worked before {}, handshake refused after ({seen}); {audit}",
                        format_time(expires),
                    ),
                ));
            }
            Ok(r) if Instant::now() > deadline => {
                bail!(
                    "the expired key still opens an association (answer {})",
                    code(&r)
                )
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn print_poke_help(dep: &Deployment, dir: &Path) {
    let ae = |name: &str| dir.join(name).display().to_string();
    println!(
        "\nThe deployment keeps running (Ctrl-C ends it). Files and logs: {}\n\
         MAF            {}\n\
         MEF            {}\n\
         IN-CSE /id-in  {} (TLS only)\n\
         MN-CSE /{MN_ID} (cse-mn)  {} (TLS)  {} (loopback, From is a claim only)\n\n\
         Read the front lock's state as the front lock itself (TLS-PSK, its association):\n  \
         M2M_PSK={} m2m request --url {} --psk-identity {} --psk-key-env M2M_PSK --from {} --to cse-mn/{}/state/la\n\n\
         As the admin, over the admin's own PSK row at each CSE:\n  \
         m2m request --ae {} --to cse-mn/{}\n  \
         m2m request --ae {} --to cse-in/{MN_ID}\n\n\
         The same From on the MN's loopback listener is nobody (4106):\n  \
         curl -s {}/cse-mn/{} -H 'X-M2M-Origin: {ADMIN}' -H 'X-M2M-RI: 1' -H 'X-M2M-RVI: 3'\n",
        dir.display(),
        dep.maf_url,
        dep.mef_url,
        dep.in_https,
        dep.mn_https,
        dep.mn_http,
        FRONT.key,
        dep.mn_https,
        FRONT.kpsa_id,
        FRONT.ae,
        FRONT.rn,
        ae(ADMIN_MN_AE),
        FRONT.rn,
        ae(ADMIN_IN_AE),
        dep.mn_http,
        FRONT.rn,
    );
    let _ = std::io::stdout().flush();
}
