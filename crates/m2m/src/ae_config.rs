//! The configuration of an AE (TS-0001 clause 9.6.5 `<AE>`): its registration, the security
//! association with its CSE (TS-0003 clause 8.2), what it creates and subscribes to, and where it
//! receives notifications. Read by `m2m ae --config` and `m2m request --ae`.

use crate::association::{
    GbaDevice, GbaSae, MafCredential, MafSae, MefEnrolee, MefEnrolment, MefKpsa, SaeMode,
    SecretSource, TlsPeer,
};
use crate::notification_receiver::ReceiverSecurity;
use anyhow::{anyhow, bail, Context};
use m2m_core::ResourceType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `m2m ae --print-default-config`: every setting with its default and a comment, the others as
/// commented-out examples (the layout of `m2m_core::config_text`; a field missing here fails
/// `the_default_config_shows_every_field`).
pub const DEFAULT_CONFIG: &str = r##"# An AE of the m2m service layer: `m2m ae --config FILE` runs it, `m2m request --ae FILE`
# sends requests as it. Relative paths are relative to this file's directory. A "# key = value" line
# or a "# [table]" / "# [[rows]]" block is an optional example: remove the "# " of its lines to use it
# ("# # key" lines in a block then stay optional). Keys are never written here: name an environment
# variable (*_env) or a private key file (*_file, mode 0600) holding the key in hex.

# The <AE> this process registers.
[ae]
# The resourceName of the <AE>.
resource_name = "my-ae"
# Its App-ID (starting with R or N).
app_id = "Nmy-app"
# From of the registration: "C" lets the CSE assign the AE-ID (an association may bind it);
# "Cname" asks for that AE-ID.
originator = "C"
# Where the assigned AE-ID is kept, so that a restart reuses the registration; default: this
# file's name with .state.json, beside it.
# state_file = "data/my-ae.state.json"

# The CSE the AE registers with.
[cse]
# Its URL (https:// for a security association).
url = "http://127.0.0.1:8080"
# Its CSE-ID.
cse_id = "/id-in"
# Its CSEBase resourceName.
resource_name = "cse-in"
# Certificate mode: the root of trust for the CSE's certificate ...
# trusted_ca = "pki/ca/ca.pem"
# ... its revocation list, checked at every handshake (m2m pki revoke writes it) ...
# crl = "pki/ca/crl.pem"
# ... and the name it must carry (default: the host of url).
# server_name = "id-in.m2m.example.com"
# How long a request waits for its response, in seconds.
timeout_seconds = 10

# The security association with the CSE (TS-0003 clause 8.2).
[security]
# "none" | "psk" | "certificate" | "maf" | "gba" | "mef"; each mode needs the settings below that name it.
mode = "none"
# psk (provisioned symmetric key): the KpsaID, the TLS psk_identity ...
# kpsa_id = "AE123456789012-Lock@in.provider.com"
# ... and Kpsa in hex, in a private file ...
# key_file = "pki/my-ae.kpsa"
# ... or in this environment variable.
# key_env = "M2M_AE_KPSA"
# certificate: the AE's certificate chain (PEM, leaf first) ...
# certificate = "pki/my-ae.pem"
# ... and its private key (PEM, mode 0600).
# private_key = "pki/my-ae.key"
# maf (MAF-based): the MAF's URL ...
# maf_url = "https://127.0.0.1:8445"
# ... its MAF-FQDN ...
# maf_fqdn = "maf.keys.example.net"
# ... and the target CSE's absolute CSE-ID.
# target_cse = "//m2m.example.com/id-in"
# maf with a Km: the KmID ...
# km_id = "phone@maf.keys.example.net"
# ... and Km in hex, in a private file ...
# km_file = "pki/phone.km"
# ... or in this environment variable.
# km_env = "M2M_AE_KM"
# maf with an enrolment at the MEF instead of a Km, or mef (a Kpsa the MEF provisions for target_cse,
# here its CSE-ID /id-in; the CSE fetches the same key from the MEF): the MEF's URL ...
# mef_url = "https://127.0.0.1:8446"
# ... its MEF-FQDN ...
# mef_fqdn = "mef.keys.example.net"
# ... the KpmID ...
# kpm_id = "phone@mef.keys.example.net"
# ... and Kpm in hex, in a private file ...
# kpm_file = "pki/phone.kpm"
# ... or in this environment variable.
# kpm_env = "M2M_AE_KPM"
# ... or, instead of the kpm settings, the certificate and private_key above (the enrolee is the
# identity the certificate names) and the root of trust for the MEF's certificate.
# mef_trusted_ca = "pki/ca/ca.pem"
# gba (GBA-based, a device with a USIM), or maf with an enrolment at the MEF authenticated by GBA
# (mef_url, mef_fqdn and the three below instead of the kpm settings): the USIM file (mode 0600;
# `m2m bsf subscriber-add` writes it) ...
# usim = "pki/my-ae.usim"
# ... the BSF's Ub URL ...
# ub_url = "http://127.0.0.1:8080"
# ... its domain (the B-TIDs' suffix) ...
# bsf_fqdn = "bsf.operator.example.net"
# ... and, in mode gba, the CSE's NAF FQDN, its CSE-ID's public domain name.
# naf_fqdn = "id-in.m2m.example.com"

# certificate with the private key in a PKCS#11 token (generated there, never leaving it:
# `m2m keys token ... generate-key`, `m2m pki issue --public-key`): private_key is its URI,
# private_key = "pkcs11:token=m2m;object=my-ae;type=private", and the token is named here
# (OpenSSL's PKCS#11 provider signs the handshakes inside it; docs/SECURITY.md).
# [security.pkcs11]
# module = "/usr/lib/softhsm/libsofthsm2.so"  # the token vendor's PKCS#11 library
# token = "m2m"  # the token's label
# pin_file = "pki/token.pin"  # the user PIN (mode 0600)
# # provider = "/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so"  # OpenSSL's PKCS#11 provider (Debian's pkcs11-provider)

# A notification receiver at the AE's pointOfAccess; without this table the AE receives nothing
# (requestReachability false). Each notification is one JSON line on stdout.
# [notifications]
# listen = "127.0.0.1:0"  # the address to listen on; port 0: a free port
# binding = "http"  # "http"; "coap": plain CoAP over UDP (TS-0008); "coaps": CoAP over DTLS, where only the CSE authenticates (mode psk or certificate); "polling": no pointOfAccess, the AE long-polls a <pollingChannel> over its own association; "mqtt": its own topic at the CSE's MQTT server ([cse] url = "mqtts://..."); "websocket": the AE's WebSocket to its CSE, no pointOfAccess ([cse] url = "wss://...")
# # poa = "http://127.0.0.1:9000"  # the pointOfAccess announced; default: http:// (coap://, coaps://) and the address listened on

# A resource created after registration, in order; one that exists already is kept.
# [[create]]
# parent = ""  # below the AE: "" the AE itself, "state" its child
# ty = 3  # the resource type (3: container)
# content = { "m2m:cnt" = { rn = "state" } }  # the resource; "{aei}" in strings is replaced by the AE-ID

# Remote credential administration (docs/SECURITY.md): the AE reads what the administrator
# configured for it and applies it. Kpsa rotation (mode psk): when its credentials mgmtObj names
# a new KpsaID, the AE opens crse with its private key and associates with the new Kpsa. Trust
# anchors (with [cse] trusted_ca): the trustAnchorCred mgmtObjs below its <node> name the CAs it
# trusts for the CSE's certificate; it fetches each new one by HTTPS GET, checks its
# fingerprint, and switches once a handshake with the CSE succeeds under the new set.
# [credentials]
# object = "cse-in/my-node/kpsa"  # the dcfg:crds <mgmtObj> (pur "kpsa") below the AE's <node>
# private_jwk = "pki/my-ae-device.jwk"  # its private P-256 JWK (mode 0600): crse is encrypted for it
# # state = "data/my-ae.kpsa.json"  # the current KpsaID and Kpsa (mode 0600); default: this file's name with .kpsa.json
# trust_anchors = "cse-in/my-node"  # the <node> whose dcfg:tac objects name the trusted CAs (needs [cse] trusted_ca; either this or object may go)
# # trust_anchor_file = "data/my-ae.anchors.pem"  # where they are kept; default: this file's name with .anchors.pem
# # poll_seconds = 30  # how often the objects are read

# A subscription with the AE as notification target (nu = its AE-ID).
# [[subscribe]]
# to = "cse-in/other-ae/state"  # the subscribed-to resource (any address form the CSE resolves)
# rn = "my-ae-sub"  # the resourceName of the <subscription>; default: <resource_name>-sub-<its number>
# net = [3]  # notificationEventType; default [3] (a child created, e.g. a new contentInstance)
"##;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    ae: AeFile,
    cse: CseFile,
    security: SecurityFile,
    notifications: Option<Notifications>,
    credentials: Option<CredentialsFile>,
    create: Vec<CreateFile>,
    subscribe: Vec<Subscribe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AeFile {
    resource_name: String,
    app_id: String,
    originator: String,
    state_file: Option<PathBuf>,
}

impl Default for AeFile {
    fn default() -> Self {
        AeFile {
            resource_name: "my-ae".into(),
            app_id: "Nmy-app".into(),
            originator: "C".into(),
            state_file: None,
        }
    }
}

/// The CSE the AE registers with.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct CseFile {
    pub url: String,
    pub cse_id: String,
    pub resource_name: String,
    pub trusted_ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub server_name: Option<String>,
    pub timeout_seconds: u64,
}

impl Default for CseFile {
    fn default() -> Self {
        CseFile {
            url: "http://127.0.0.1:8080".into(),
            cse_id: "/id-in".into(),
            resource_name: "cse-in".into(),
            trusted_ca: None,
            crl: None,
            server_name: None,
            timeout_seconds: 10,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    #[default]
    None,
    Psk,
    Certificate,
    Maf,
    Gba,
    Mef,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct SecurityFile {
    mode: ModeName,
    kpsa_id: Option<String>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    /// The token a `pkcs11:` private_key is in (OpenSSL's PKCS#11 provider signs there).
    pkcs11: Option<m2m_cse::config::Pkcs11Section>,
    maf_url: Option<String>,
    maf_fqdn: Option<String>,
    target_cse: Option<String>,
    km_id: Option<String>,
    km_env: Option<String>,
    km_file: Option<PathBuf>,
    mef_url: Option<String>,
    mef_fqdn: Option<String>,
    kpm_id: Option<String>,
    kpm_env: Option<String>,
    kpm_file: Option<PathBuf>,
    mef_trusted_ca: Option<PathBuf>,
    usim: Option<PathBuf>,
    ub_url: Option<String>,
    bsf_fqdn: Option<String>,
    naf_fqdn: Option<String>,
}

/// The notification receiver at the AE's pointOfAccess.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How notifications arrive: HTTP (TS-0009), plain CoAP (TS-0008), or CoAP over DTLS with
    /// the AE's own credentials.
    #[serde(default)]
    pub binding: NotificationBinding,
    pub poa: Option<String>,
}

/// The binding of the AE's notification receiver.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotificationBinding {
    #[default]
    Http,
    Coap,
    /// CoAP over DTLS 1.2: the CSE must authenticate as the AE's CSE (its Kpsa in mode psk, the
    /// CSE's certificate in mode certificate) before it can deliver anything.
    Coaps,
    /// No pointOfAccess: the AE makes a `<pollingChannel>` and long-polls it over its own
    /// association (TS-0004 clause 7.4.21), for an AE that nobody can reach.
    Polling,
    /// The MQTT binding (TS-0010): the AE's pointOfAccess is its CSE's MQTT server
    /// (`[cse] url = "mqtts://..."`), which delivers the requests for the AE on its own topic.
    Mqtt,
    /// The WebSocket binding (TS-0020): no pointOfAccess; the CSE sends the AE's notifications
    /// on the WebSocket the AE keeps open to it (`[cse] url = "wss://..."`).
    Websocket,
}

/// The host of a URL (without brackets for an IPv6 literal), the name a CSE's certificate carries
/// when no server_name is configured.
fn url_host(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| anyhow!("[cse] url '{url}' is not a URL"))?;
    match uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
    {
        Some(host) if !host.is_empty() => Ok(host.to_owned()),
        _ => bail!("[cse] url '{url}' has no host"),
    }
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFile {
    #[serde(default)]
    parent: String,
    ty: u16,
    content: Value,
}

/// A resource the AE creates below itself after registration.
#[derive(Clone, Debug)]
pub struct Create {
    /// Below the AE: "" is the AE itself.
    pub parent: String,
    pub ty: ResourceType,
    pub content: Value,
}

/// A subscription with the AE as notification target.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// The subscribed-to resource (any address form the CSE resolves).
    pub to: String,
    pub rn: Option<String>,
    /// notificationEventType; default `[3]` (a child created, e.g. a new contentInstance).
    #[serde(default = "default_net")]
    pub net: Vec<u8>,
}

fn default_net() -> Vec<u8> {
    vec![3]
}

/// An AE configuration, checked, its paths resolved against the file's directory.
#[derive(Clone, Debug)]
pub struct AeConfig {
    pub resource_name: String,
    pub app_id: String,
    pub originator: String,
    pub state_file: PathBuf,
    pub cse: CseFile,
    pub sae: SaeMode,
    pub notifications: Option<Notifications>,
    pub create: Vec<Create>,
    pub subscribe: Vec<Subscribe>,
    pub credentials: Option<Credentials>,
}

/// `[credentials]` as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    object: Option<String>,
    private_jwk: Option<PathBuf>,
    state: Option<PathBuf>,
    trust_anchors: Option<String>,
    trust_anchor_file: Option<PathBuf>,
    #[serde(default = "default_poll")]
    poll_seconds: u64,
}

fn default_poll() -> u64 {
    30
}

/// Remote credential administration: what the AE watches, and how often.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub kpsa: Option<KpsaRotation>,
    pub trust_anchors: Option<TrustAnchors>,
    pub poll: Duration,
}

/// Remote Kpsa rotation: the credentials object to watch, the key that opens its `crse`, and
/// where the current KpsaID and Kpsa are kept.
#[derive(Debug, Clone)]
pub struct KpsaRotation {
    pub object: String,
    pub private_jwk: PathBuf,
    pub state: PathBuf,
}

/// Trust anchor administration (TS-0003 clause 8.3.9.9.7): the `<node>` whose trustAnchorCred
/// objects name the CAs the AE trusts for its CSE's certificate, and the file where the AE keeps
/// those CAs (PEM) once it has them; while that file exists it replaces `[cse] trusted_ca`.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    pub node: String,
    pub file: PathBuf,
}

impl TrustAnchors {
    /// The mark left once administered anchors are in use (`<file>.in-use`).
    pub fn marker(&self) -> PathBuf {
        let mut m = self.file.as_os_str().to_owned();
        m.push(".in-use");
        PathBuf::from(m)
    }
}

/// The Kpsa in use after a rotation (mode 0600).
#[derive(Serialize, Deserialize)]
pub struct KpsaState {
    pub kpsa_id: String,
    /// Kpsa in hex.
    pub key: String,
}

/// What a running AE keeps between runs: the AE-ID its registration was given.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct AeState {
    pub aei: String,
    pub resource_name: String,
    pub cse_url: String,
}

impl AeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<AeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ae".into());
        Self::parse(&text, base, &stem).with_context(|| format!("{}", path.display()))
    }

    /// Parses a configuration whose relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path, stem: &str) -> anyhow::Result<AeConfig> {
        let f: FileConfig = toml::from_str(text).map_err(|e| anyhow!("{}", e.message()))?;
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let mut cse = f.cse;
        cse.trusted_ca = cse.trusted_ca.map(resolve);
        cse.crl = cse.crl.map(resolve);
        if cse.timeout_seconds == 0 {
            bail!("[cse] timeout_seconds must be at least 1");
        }
        let sae = sae_mode(f.security, &resolve)?;
        let create = f
            .create
            .into_iter()
            .map(|c| {
                let ty = ResourceType::parse_requested(&c.ty.to_string())
                    .map_err(|e| anyhow!("[[create]] ty {}: {}", c.ty, e.dbg))?;
                if !c.content.is_object() {
                    bail!("[[create]] content must be a table such as {{ \"m2m:cnt\" = {{ rn = \"state\" }} }}");
                }
                Ok(Create {
                    parent: c.parent.trim_matches('/').to_owned(),
                    ty,
                    content: c.content,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(n) = &f.notifications {
            if n.binding == NotificationBinding::Polling && n.poa.is_some() {
                bail!("[notifications] binding polling announces no poa: the AE is reached through its pollingChannel");
            }
            if n.binding == NotificationBinding::Websocket && !cse.url.starts_with("wss://") {
                bail!("[notifications] binding websocket needs [cse] url = \"wss://...\": notifications come over the AE's WebSocket to its CSE");
            }
            if n.binding == NotificationBinding::Websocket && n.poa.is_some() {
                bail!("[notifications] binding websocket announces no poa: the AE is reached over its WebSocket");
            }
            if n.binding == NotificationBinding::Mqtt && !cse.url.starts_with("mqtts://") {
                bail!("[notifications] binding mqtt needs [cse] url = \"mqtts://...\": notifications come through the CSE's MQTT server");
            }
        }
        let state_file =
            f.ae.state_file
                .map(resolve)
                .unwrap_or_else(|| base.join(format!("{stem}.state.json")));
        let credentials = match f.credentials {
            None => None,
            Some(c) => {
                if c.poll_seconds == 0 {
                    bail!("[credentials] poll_seconds must be at least 1");
                }
                let kpsa = match (c.object, c.private_jwk) {
                    (Some(object), Some(jwk)) => Some(KpsaRotation {
                        object: object.trim_matches('/').to_owned(),
                        private_jwk: resolve(jwk),
                        state: c
                            .state
                            .map(resolve)
                            .unwrap_or_else(|| base.join(format!("{stem}.kpsa.json"))),
                    }),
                    (None, None) if c.state.is_none() => None,
                    _ => bail!("[credentials] object and private_jwk go together (Kpsa rotation)"),
                };
                let trust_anchors = match c.trust_anchors {
                    Some(node) => Some(TrustAnchors {
                        node: node.trim_matches('/').to_owned(),
                        file: c
                            .trust_anchor_file
                            .map(resolve)
                            .unwrap_or_else(|| base.join(format!("{stem}.anchors.pem"))),
                    }),
                    None if c.trust_anchor_file.is_some() => {
                        bail!("[credentials] trust_anchor_file needs trust_anchors")
                    }
                    None => None,
                };
                if kpsa.is_none() && trust_anchors.is_none() {
                    bail!("[credentials] names nothing to watch: object (Kpsa) or trust_anchors");
                }
                Some(Credentials {
                    kpsa,
                    trust_anchors,
                    poll: Duration::from_secs(c.poll_seconds),
                })
            }
        };
        Ok(AeConfig {
            resource_name: f.ae.resource_name,
            app_id: f.ae.app_id,
            originator: f.ae.originator,
            state_file,
            cse,
            sae,
            notifications: f.notifications,
            create,
            subscribe: f.subscribe,
            credentials,
        })
    }

    /// Who the CSE must be: its name, and the CAs trusted for it (the administered trust
    /// anchors once the AE has them, else `[cse] trusted_ca`).
    pub fn tls_peer(&self) -> TlsPeer {
        // Once administered anchors are in use, they alone are trusted: a lost file is a
        // failed handshake, never the first CA trusted again.
        let administered = self
            .credentials
            .as_ref()
            .and_then(|c| c.trust_anchors.as_ref())
            .filter(|t| t.file.exists() || t.marker().exists())
            .map(|t| t.file.clone());
        TlsPeer {
            trusted_ca: administered.or_else(|| self.cse.trusted_ca.clone()),
            server_name: self.cse.server_name.clone(),
            crl: self.cse.crl.clone(),
            cse_id: Some(self.cse.cse_id.clone()),
        }
    }

    /// Who may deliver to a `coaps` notification receiver: the AE's own association with its CSE,
    /// run the other way (the CSE initiates the DTLS handshake).
    pub fn receiver_security(&self) -> anyhow::Result<ReceiverSecurity> {
        match &self.sae {
            SaeMode::Psk { kpsa_id, key } => Ok(ReceiverSecurity::Psk {
                kpsa_id: kpsa_id.clone(),
                key: key.load()?,
            }),
            SaeMode::Certificate {
                certificate,
                private_key,
            } => Ok(ReceiverSecurity::Certificate {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                trusted_ca: self.cse.trusted_ca.clone().ok_or_else(|| {
                    anyhow!("[notifications] binding coaps needs [cse] trusted_ca")
                })?,
                cse_name: match &self.cse.server_name {
                    Some(name) => name.clone(),
                    None => url_host(&self.cse.url)?,
                },
            }),
            SaeMode::None | SaeMode::Maf(_) | SaeMode::Gba(_) | SaeMode::MefKpsa(_) => bail!(
                "[notifications] binding coaps needs [security] mode psk or certificate (the CSE proves itself with the same credentials)"
            ),
        }
    }

    /// The PSK to associate with: a rotated one kept in the credentials state, else the
    /// configured one.
    pub async fn current_psk(&self) -> anyhow::Result<Option<crate::association::PskCredential>> {
        if let Some(c) = self.credentials.as_ref().and_then(|c| c.kpsa.as_ref()) {
            if c.state.exists() {
                m2m_security::secure_environment::check_private_file(&c.state)
                    .map_err(anyhow::Error::msg)?;
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(&c.state)
                        .with_context(|| format!("cannot read {}", c.state.display()))?,
                );
                let kept: KpsaState = serde_json::from_str(&text)
                    .map_err(|_| anyhow!("{} is not a Kpsa state", c.state.display()))?;
                let key = zeroize::Zeroizing::new(kept.key);
                let key = m2m_security::credentials::Secret::from_hex(&key)
                    .map_err(|_| anyhow!("{}: the key is not hex", c.state.display()))?;
                return Ok(Some(crate::association::PskCredential::new(
                    kept.kpsa_id,
                    zeroize::Zeroizing::new(key.expose().to_vec()),
                )));
            }
        }
        self.sae.psk().await
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.cse.timeout_seconds)
    }

    /// The AE-ID of the last registration, if the AE has run and kept one.
    pub fn saved_state(&self) -> Option<AeState> {
        let text = std::fs::read_to_string(&self.state_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Keeps the registration for the next run (written whole, then renamed into place).
    pub fn save_state(&self, state: &AeState) -> anyhow::Result<()> {
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        }
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.state_file)
            .with_context(|| format!("cannot write {}", self.state_file.display()))
    }

    /// The From of requests sent as this AE: the AE-ID it was given, else its configured originator.
    pub fn from(&self) -> String {
        self.saved_state()
            .map(|s| s.aei)
            .unwrap_or_else(|| self.originator.clone())
    }
}

/// The SAE mode of a `[security]` section, each mode with exactly the settings it needs.
fn sae_mode(s: SecurityFile, resolve: &dyn Fn(PathBuf) -> PathBuf) -> anyhow::Result<SaeMode> {
    let need = |v: Option<String>, key: &str| {
        v.ok_or_else(|| anyhow!("[security] mode {:?} needs {key}", s.mode))
    };
    let secret = |env: Option<String>, file: Option<PathBuf>, what: &str| {
        match (env, file) {
        (Some(v), None) => Ok(SecretSource::Env(v)),
        (None, Some(f)) => Ok(SecretSource::File(resolve(f))),
        _ => Err(anyhow!(
            "[security] needs exactly one of {what}_env and {what}_file (keys are never written in the configuration)"
        )),
    }
    };
    Ok(match s.mode {
        ModeName::None => SaeMode::None,
        ModeName::Psk => SaeMode::Psk {
            kpsa_id: need(s.kpsa_id.clone(), "kpsa_id")?,
            key: secret(s.key_env.clone(), s.key_file.clone(), "key")?,
        },
        ModeName::Certificate => SaeMode::Certificate {
            certificate: resolve(
                s.certificate
                    .clone()
                    .ok_or_else(|| anyhow!("[security] mode certificate needs certificate"))?,
            ),
            private_key: private_key(&s, resolve)?,
        },
        ModeName::Maf => {
            let credential = if s.mef_url.is_some() {
                MafCredential::Enrolment(mef_enrolment(&s, resolve)?)
            } else {
                MafCredential::Km {
                    km_id: need(s.km_id.clone(), "km_id (or an enrolment: mef_url ...)")?,
                    km: secret(s.km_env.clone(), s.km_file.clone(), "km")?,
                }
            };
            SaeMode::Maf(MafSae {
                url: need(s.maf_url.clone(), "maf_url")?,
                fqdn: need(s.maf_fqdn.clone(), "maf_fqdn")?,
                target_cse: need(s.target_cse.clone(), "target_cse")?,
                credential,
            })
        }
        ModeName::Gba => SaeMode::Gba(GbaSae {
            device: gba_device(&s, resolve)?
                .ok_or_else(|| anyhow!("[security] mode gba needs usim"))?,
            naf_fqdn: need(s.naf_fqdn.clone(), "naf_fqdn")?,
        }),
        ModeName::Mef => SaeMode::MefKpsa(MefKpsa {
            enrolment: mef_enrolment(&s, resolve)?,
            target: sp_relative_cse(&need(s.target_cse.clone(), "target_cse")?)?,
        }),
    })
}

/// `private_key`: a PEM file, or a key in a PKCS#11 token named by its `pkcs11:` URI (no path to
/// resolve), which needs the token in `[security.pkcs11]`.
fn private_key(s: &SecurityFile, resolve: &dyn Fn(PathBuf) -> PathBuf) -> anyhow::Result<PathBuf> {
    use m2m_security::secure_environment::pkcs11;
    let key = s
        .private_key
        .clone()
        .ok_or_else(|| anyhow!("[security] mode certificate needs private_key"))?;
    if !pkcs11::is_key_uri(&key) {
        return Ok(resolve(key));
    }
    let Some(token) = &s.pkcs11 else {
        bail!("[security] private_key names a key in a token (pkcs11:): configure the token in [security.pkcs11]");
    };
    pkcs11::check_token_label(&token.token).map_err(|e| anyhow!("[security.pkcs11] token: {e}"))?;
    // OpenSSL's provider reads them, not this process: checked here as the CSE checks its own.
    let module = resolve(token.module.clone());
    if !module.is_file() {
        bail!(
            "[security.pkcs11] module {}: no such file",
            module.display()
        );
    }
    m2m_security::secure_environment::check_private_file(&resolve(token.pin_file.clone()))
        .map_err(|e| anyhow!("[security.pkcs11] pin_file: {e}"))?;
    Ok(key)
}

/// The device of `usim`, `ub_url` and `bsf_fqdn`, when `usim` is set.
fn gba_device(
    s: &SecurityFile,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> anyhow::Result<Option<GbaDevice>> {
    let Some(usim) = s.usim.clone() else {
        return Ok(None);
    };
    let need = |v: &Option<String>, key: &str| {
        v.clone()
            .ok_or_else(|| anyhow!("[security] usim needs {key}"))
    };
    Ok(Some(GbaDevice {
        usim: resolve(usim),
        ub_url: need(&s.ub_url, "ub_url")?,
        bsf_fqdn: need(&s.bsf_fqdn, "bsf_fqdn")?,
    }))
}

/// The enrolment of `mef_url` and `mef_fqdn`: on Kpm (kpm_id and kpm_env/kpm_file) or by GBA
/// (usim, ub_url, bsf_fqdn).
fn mef_enrolment(
    s: &SecurityFile,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> anyhow::Result<MefEnrolment> {
    let need = |v: &Option<String>, key: &str| {
        v.clone()
            .ok_or_else(|| anyhow!("[security] an enrolment at the MEF needs {key}"))
    };
    let enrolee = match gba_device(s, resolve)? {
        Some(device) => MefEnrolee::Gba(device),
        None if s.kpm_id.is_none() && s.certificate.is_some() => MefEnrolee::Certificate {
            certificate: resolve(s.certificate.clone().expect("checked")),
            private_key: resolve(
                s.private_key
                    .clone()
                    .ok_or_else(|| anyhow!("[security] certificate needs private_key"))?,
            ),
            trusted_ca: resolve(s.mef_trusted_ca.clone().ok_or_else(|| {
                anyhow!("[security] an enrolment with a certificate needs mef_trusted_ca")
            })?),
        },
        None => MefEnrolee::Kpm {
            kpm_id: need(&s.kpm_id, "kpm_id (or usim)")?,
            kpm: match (&s.kpm_env, &s.kpm_file) {
                (Some(v), None) => SecretSource::Env(v.clone()),
                (None, Some(f)) => SecretSource::File(resolve(f.clone())),
                _ => bail!("[security] needs exactly one of kpm_env and kpm_file (keys are never written in the configuration)"),
            },
        },
    };
    Ok(MefEnrolment {
        mef_url: need(&s.mef_url, "mef_url")?,
        mef_fqdn: need(&s.mef_fqdn, "mef_fqdn")?,
        enrolee,
    })
}

/// `/id-in` of `//sp/id-in` or `/id-in`: the form a CSE's certificate (and the MEF) names it by.
pub fn sp_relative_cse(id: &str) -> anyhow::Result<String> {
    let relative = match id.strip_prefix("//") {
        Some(rest) => rest
            .find('/')
            .map(|i| &rest[i..])
            .ok_or_else(|| anyhow!("{id} is no CSE-ID"))?,
        None => id,
    };
    anyhow::ensure!(
        relative.starts_with('/') && relative.len() > 1 && !relative[1..].contains('/'),
        "{id} is no CSE-ID (/id-in or //sp/id-in)"
    );
    Ok(relative.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<AeConfig> {
        AeConfig::parse(text, Path::new("/etc/ae"), "lock")
    }

    #[test]
    fn the_cse_name_a_coaps_receiver_requires_is_the_url_host() {
        for (url, host) in [
            ("coaps://mn.example.net:5684", "mn.example.net"),
            ("https://127.0.0.1:8443/cse", "127.0.0.1"),
            ("coaps://[::1]:5684", "::1"),
            ("coaps://[fe80::1]", "fe80::1"),
            ("coaps://gw.home", "gw.home"),
        ] {
            assert_eq!(url_host(url).unwrap(), host, "{url}");
        }
        assert!(url_host("coaps://:5684").is_err());
    }

    #[test]
    fn the_default_config_shows_every_field() {
        use m2m_core::config_text::{field_names, problems};
        let fields: &[(&str, &[&str])] = &[
            ("", field_names::<FileConfig>()),
            ("ae", field_names::<AeFile>()),
            ("cse", field_names::<CseFile>()),
            ("security", field_names::<SecurityFile>()),
            (
                "security.pkcs11",
                field_names::<m2m_cse::config::Pkcs11Section>(),
            ),
            ("notifications", field_names::<Notifications>()),
            ("create", field_names::<CreateFile>()),
            ("subscribe", field_names::<Subscribe>()),
            ("credentials", field_names::<CredentialsFile>()),
        ];
        let p = problems(DEFAULT_CONFIG, fields);
        assert!(p.is_empty(), "{p:#?}");
    }

    /// The modes of remote provisioning and GBA read the settings that name them: a MEF enrolment
    /// on Kpm, by GBA or with a certificate; GBA-based SAE; a Kpsa for a CSE.
    #[test]
    fn gba_and_mef_modes_read_their_settings() {
        let gba = "usim = \"lock.usim\"\nub_url = \"http://b:8080\"\nbsf_fqdn = \"bsf.example\"\n";
        let mef = "mef_url = \"https://m:8443\"\nmef_fqdn = \"mef.example\"\n";
        let cfg = |security: &str| parse(&format!("[security]\n{security}"));
        let SaeMode::Gba(g) = cfg(&format!("mode = \"gba\"\n{gba}naf_fqdn = \"id-in.sp\"\n"))
            .unwrap()
            .sae
        else {
            panic!("gba");
        };
        assert_eq!(g.device.usim, Path::new("/etc/ae/lock.usim"));
        assert_eq!(g.naf_fqdn, "id-in.sp");
        assert!(
            cfg(&format!("mode = \"gba\"\n{gba}")).is_err(),
            "naf_fqdn missing"
        );
        let SaeMode::MefKpsa(k) = cfg(&format!(
            "mode = \"mef\"\n{mef}{gba}target_cse = \"//sp.example/id-in\"\n"
        ))
        .unwrap()
        .sae
        else {
            panic!("mef");
        };
        assert_eq!(k.target, "/id-in");
        assert!(matches!(k.enrolment.enrolee, MefEnrolee::Gba(_)));
        let SaeMode::MefKpsa(k) = cfg(&format!(
            "mode = \"mef\"\n{mef}certificate = \"a.pem\"\nprivate_key = \"a.key\"\n\
             mef_trusted_ca = \"ca.pem\"\ntarget_cse = \"/id-in\"\n"
        ))
        .unwrap()
        .sae
        else {
            panic!("mef certificate");
        };
        assert!(matches!(
            k.enrolment.enrolee,
            MefEnrolee::Certificate { .. }
        ));
        assert!(cfg(&format!(
            "mode = \"mef\"\n{mef}certificate = \"a.pem\"\nprivate_key = \"a.key\"\ntarget_cse = \"/id-in\"\n"
        ))
        .is_err(), "the MEF's root of trust is required");
        assert!(cfg(&format!("mode = \"mef\"\n{mef}target_cse = \"/id-in/x\"\n")).is_err());
        assert_eq!(sp_relative_cse("//sp.example/id-in").unwrap(), "/id-in");
        assert!(sp_relative_cse("//sp.example").is_err());
    }

    /// Removing the `# ` of one optional block or key gives a configuration that parses and has it.
    #[test]
    fn each_optional_example_parses_uncommented() {
        use m2m_core::config_text::{each_uncommented, has_path};
        let all = each_uncommented(DEFAULT_CONFIG, &[]).unwrap();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        for optional in [
            "ae.state_file",
            "cse.trusted_ca",
            "security.kpm_env",
            "notifications",
            "notifications.poa",
            "create",
            "subscribe",
        ] {
            assert!(paths.contains(&optional), "{optional} not in {paths:?}");
        }
        for (path, text) in all {
            parse(&text).unwrap_or_else(|e| panic!("{path}: {e:#}\n{text}"));
            assert!(has_path(&text, &path), "{path}");
        }
        let (_, both) = each_uncommented(DEFAULT_CONFIG, &[])
            .unwrap()
            .into_iter()
            .find(|(p, _)| p == "notifications.poa")
            .unwrap();
        let n = parse(&both).unwrap().notifications.unwrap();
        assert_eq!(
            (n.listen.as_str(), n.poa.as_deref()),
            ("127.0.0.1:0", Some("http://127.0.0.1:9000"))
        );
    }

    #[test]
    fn the_default_config_is_the_defaults() {
        assert_eq!(
            format!("{:?}", parse(DEFAULT_CONFIG).unwrap()),
            format!("{:?}", parse("").unwrap())
        );
        let c = parse(DEFAULT_CONFIG).unwrap();
        let e = parse("").unwrap();
        assert_eq!(c.resource_name, "my-ae");
        assert_eq!(c.originator, "C");
        assert_eq!(c.cse.url, e.cse.url);
        assert_eq!(c.cse.resource_name, "cse-in");
        assert_eq!(c.sae, SaeMode::None);
        assert!(c.notifications.is_none() && c.create.is_empty() && c.subscribe.is_empty());
        assert_eq!(e.state_file, Path::new("/etc/ae/lock.state.json"));
        assert_eq!(e.timeout(), Duration::from_secs(10));
    }

    #[test]
    fn modes_with_their_settings() {
        let c = parse(
            "[security]\nmode = \"psk\"\nkpsa_id = \"AE1-Lock@in.provider.com\"\nkey_file = \"k.hex\"\n\
             [notifications]\n[[create]]\nty = 3\ncontent = { \"m2m:cnt\" = { rn = \"state\" } }\n\
             [[subscribe]]\nto = \"cse-mn/x/state\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sae,
            SaeMode::Psk {
                kpsa_id: "AE1-Lock@in.provider.com".into(),
                key: SecretSource::File("/etc/ae/k.hex".into())
            }
        );
        assert_eq!(c.notifications.unwrap().listen, "127.0.0.1:0");
        assert_eq!(c.create[0].ty, ResourceType::Container);
        assert_eq!(c.create[0].content["m2m:cnt"]["rn"], "state");
        assert_eq!(c.subscribe[0].net, vec![3]);

        let c = parse(
            "[security]\nmode = \"maf\"\nmaf_url = \"https://m\"\nmaf_fqdn = \"maf.x\"\ntarget_cse = \"//sp/id-in\"\n\
             mef_url = \"https://e\"\nmef_fqdn = \"mef.x\"\nkpm_id = \"p@mef.x\"\nkpm_env = \"KPM\"\n",
        )
        .unwrap();
        let SaeMode::Maf(m) = c.sae else {
            panic!("not maf")
        };
        assert!(
            matches!(&m.credential, MafCredential::Enrolment(MefEnrolment { enrolee: MefEnrolee::Kpm { kpm: SecretSource::Env(v), .. }, .. }) if v == "KPM")
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (text, says) in [
            (
                "[security]\nmode = \"psk\"\nkey_env = \"K\"\n",
                "needs kpsa_id",
            ),
            (
                "[security]\nmode = \"psk\"\nkpsa_id = \"a@b\"\n",
                "exactly one of key_env and key_file",
            ),
            (
                "[security]\nmode = \"psk\"\nkpsa_id = \"a@b\"\nkey = \"1a2b\"\n",
                "unknown field `key`",
            ),
            ("[security]\nmode = \"tls\"\n", "unknown variant"),
            ("[security]\nmode = \"maf\"\nmaf_url = \"u\"\n", "km_id"),
            ("[[create]]\nty = 999\ncontent = {}\n", "ty 999"),
            ("[[create]]\nty = 3\ncontent = 1\n", "must be a table"),
            ("[cse]\ntimeout_seconds = 0\n", "at least 1"),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains("1a2b"), "{err}");
        }
    }

    #[test]
    fn the_state_file_keeps_the_ae_id() {
        let dir = tempfile::tempdir().unwrap();
        let c = AeConfig::parse("[ae]\nstate_file = \"data/x.json\"\n", dir.path(), "x").unwrap();
        assert_eq!(c.from(), "C");
        let state = AeState {
            aei: "Clock-AE1".into(),
            resource_name: "front-lock".into(),
            cse_url: "https://127.0.0.1:8444".into(),
        };
        c.save_state(&state).unwrap();
        assert_eq!(c.saved_state().unwrap(), state);
        assert_eq!(c.from(), "Clock-AE1");
    }
}
