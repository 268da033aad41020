//! `m2m e2e`: end-to-end security for AEs and operators (TS-0003 clause 8.5.3 ESData; seeds/001
//! clauses 5.1, 5.4, 5.7): keys as JWK files, contentInstance content protected and opened, secure
//! group commands, and sealed group credentials. The cryptography is `m2m_security::e2e`.
//!
//! ```text
//! m2m e2e keygen --kty ec --kid sensor1 --out sensor1.jwk          # prints the public JWK
//! m2m e2e protect-data --to /id-mn/cse-mn/gw/sensor1 --cr Cgw --sign sensor1.jwk --sign-kid ID \
//!     --encrypt data.jwk --content '{"t":21.5}' > cin.json         # body of m2m request --ty 4
//! m2m e2e open-data --to /id-mn/cse-mn/gw/sensor1 --cin @read.json --state app.state --max-age 600 \
//!     --ttp-url URL --ttp-fqdn FQDN --km-id app@FQDN --km-env KM --verify-ttp ID --decrypt-ttp ID2
//! m2m e2e open-credential --member-id /id-mn/Clock1 --key lock1.jwk --cin @cred.json \
//!     --state lock1.state --out group.jwk
//! ```
//!
//! Freshness (`m2m_security::e2e::freshness`): `protect-data` stamps the content with its creation
//! time; `open-data --state` and `open-credential --state` remember the newest time / version
//! opened ([`crate::e2e_state`]) and refuse one that is not newer, and `--max-age` an old one.
//!
//! Keys: `FILE` (a JWK, mode 0600 when it holds a secret) or `env:VAR` (the JWK text in that variable).
//! Exit codes as `m2m request`: 0 done; 1 refused (stdout `{"rsc", "error"}`, the reason on stderr,
//! never a key); 2 the TTP could not be reached or authenticated.

use crate::association::{process_env, SecretSource};
use crate::e2e_state::ReplayState;
use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use m2m_core::M2mError;
use m2m_keyservices::maf::MafClient;
use m2m_security::e2e::esdata::{self, BoundAttributes, Protection, ReaderKeys};
use m2m_security::e2e::freshness;
use m2m_security::e2e::group_message::{self, GroupKeyMgmt, MemberUnwrapKey};
use m2m_security::e2e::jose::{
    ContentEnc, DecryptionKey, EcKeyPair, EcPublicKey, Recipient, SigningKey, SymmetricKey,
    VerifyingKey,
};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Args, Debug)]
pub struct E2eArgs {
    #[command(subcommand)]
    command: E2eCommand,
}

/// Where the verification or decryption keys of `open-data` may come from besides files: the TTP.
#[derive(Args, Debug, Default)]
struct TtpSource {
    /// The MAF holding the trusted third party (https://host:port) ...
    #[arg(long, requires_all = ["ttp_fqdn", "km_id", "km_env"])]
    ttp_url: Option<String>,
    /// ... its FQDN ...
    #[arg(long)]
    ttp_fqdn: Option<String>,
    /// ... the KmID of this application at the MAF ...
    #[arg(long)]
    km_id: Option<String>,
    /// ... and the environment variable holding Km in hex.
    #[arg(long)]
    km_env: Option<String>,
}

#[derive(Subcommand, Debug)]
enum E2eCommand {
    /// Make a key: a JWK written to a new 0600 file; prints the public JWK (EC) or the kid (oct).
    Keygen {
        #[arg(long, value_enum)]
        kty: Kty,
        /// The key ID (for a key registered at the TTP: its credentialID, or pass --*-kid later).
        #[arg(long)]
        kid: String,
        /// Bytes of an oct key: 16, 24 or 32 (32: HS256 or A256KW).
        #[arg(long, default_value_t = 32)]
        bytes: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// ESData: sign and/or encrypt a contentInstance's content bound to its container, creator and
    /// contentInfo, stamped with the time now (`esct`); prints the body of `m2m request -X create --ty 4`.
    ProtectData {
        /// The address of the container the instance will be created in (as the reader will read it).
        #[arg(long)]
        to: String,
        /// The creator: the From the instance is created with.
        #[arg(long)]
        cr: String,
        /// Media type of the content.
        #[arg(long, default_value = "application/json")]
        media: String,
        /// Sign with this key (oct: HS256, EC private: ES256).
        #[arg(long, value_name = "KEY")]
        sign: Option<String>,
        /// The kid to sign under (e.g. the TTP's credentialID) instead of the file's.
        #[arg(long)]
        sign_kid: Option<String>,
        /// Encrypt to this key (oct: AES key wrap, EC public: ECDH-ES+A128KW).
        #[arg(long, value_name = "KEY")]
        encrypt: Option<String>,
        /// The kid to encrypt under instead of the file's.
        #[arg(long)]
        encrypt_kid: Option<String>,
        #[arg(long, value_enum, default_value = "a128gcm")]
        enc: EncArg,
        /// The content: TEXT, @FILE or - (standard input).
        #[arg(long, default_value = "-")]
        content: String,
    },
    /// ESData: check and open a contentInstance read from the container --to; prints the content.
    /// Content without a creation time (`esct`, written before it existed) is refused.
    OpenData {
        /// The address of the container the instance was read from (as the writer bound it).
        #[arg(long)]
        to: String,
        /// Remember the newest creation time opened per container and creator in FILE (JSON, mode
        /// 0600, created if missing) and refuse content not newer: a replayed or older instance.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Refuse content created more than SECONDS ago.
        #[arg(long, value_name = "SECONDS")]
        max_age: Option<u64>,
        /// Print {"con": TEXT, "created": TIMESTAMP} instead of the content alone.
        #[arg(long)]
        json: bool,
        /// The contentInstance as read (`m2m request --json` output, an m2m:cin object): JSON, @FILE or -.
        #[arg(long, default_value = "-")]
        cin: String,
        /// Require a signature, verified with this key file (oct or EC public) ...
        #[arg(long, value_name = "KEY", conflicts_with = "verify_ttp")]
        verify: Option<String>,
        /// ... or with the key the TTP holds under this credentialID.
        #[arg(long, value_name = "CREDENTIAL_ID", requires = "ttp_url")]
        verify_ttp: Option<String>,
        /// Require encryption, decrypted with this key file (oct or EC private) ...
        #[arg(long, value_name = "KEY", conflicts_with = "decrypt_ttp")]
        decrypt: Option<String>,
        /// ... or with the key the TTP holds under this credentialID.
        #[arg(long, value_name = "CREDENTIAL_ID", requires = "ttp_url")]
        decrypt_ttp: Option<String>,
        #[command(flatten)]
        ttp: TtpSource,
    },
    /// Secure group communication: sign a command (ES256) and encrypt it under the group key;
    /// prints the body of `m2m request -X create --ty 4` (e.g. to `<group>/fopt/cmd`).
    SealCommand {
        /// The sender's P-256 private key.
        #[arg(long, value_name = "KEY")]
        signer: String,
        /// The group key (oct), as opened with open-credential.
        #[arg(long, value_name = "KEY")]
        group_key: String,
        /// Use the group key as the content key (`dir`) instead of wrapping a fresh one.
        #[arg(long)]
        dir: bool,
        /// TEXT, @FILE or -.
        #[arg(long, default_value = "-")]
        content: String,
    },
    /// A member opens a group command (decrypts with the group key, verifies the sender); prints it.
    OpenCommand {
        #[arg(long, value_name = "KEY")]
        group_key: String,
        /// The sender's P-256 public key.
        #[arg(long, value_name = "KEY")]
        signer: String,
        #[arg(long)]
        dir: bool,
        /// The contentInstance as read, or the bare compact JWE: JSON, @FILE or -.
        #[arg(long, default_value = "-")]
        cin: String,
    },
    /// A member opens the group credential sealed for it; writes the group key to a new 0600 file
    /// and prints its kid, group, version and issue time. A credential whose version is not newer
    /// than the newest this member opened for its group (in --state) is refused: a replay.
    OpenCredential {
        /// This member's ID, as the credential names it (`aud`).
        #[arg(long)]
        member_id: String,
        /// The member's own E2E key: oct (shared with the server) or its P-256 private key.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// With a P-256 member key: the server's public key that signed the credential.
        #[arg(long, value_name = "KEY")]
        server: Option<String>,
        #[arg(long, default_value = "-")]
        cin: String,
        /// Where to write the group key (JWK, created with mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// The newest version opened per member and group is kept in FILE (JSON, mode 0600,
        /// created if missing); an equal or older one is refused.
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Refuse a credential issued more than SECONDS ago.
        #[arg(long, value_name = "SECONDS")]
        max_age: Option<u64>,
        /// Refuse a credential for another group than GID (its SP-relative address).
        #[arg(long, value_name = "GID")]
        group: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kty {
    Oct,
    Ec,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EncArg {
    A128gcm,
    A192gcm,
    A256gcm,
}

impl From<EncArg> for ContentEnc {
    fn from(e: EncArg) -> Self {
        match e {
            EncArg::A128gcm => ContentEnc::A128Gcm,
            EncArg::A192gcm => ContentEnc::A192Gcm,
            EncArg::A256gcm => ContentEnc::A256Gcm,
        }
    }
}

/// Why a subcommand did not do its work: the exit code follows from it.
enum Failure {
    /// A oneM2M refusal (the content, the credential, the TTP): exit 1.
    Refused(M2mError),
    /// The TTP could not be reached or authenticated: exit 2.
    Unreachable(String),
}

impl From<M2mError> for Failure {
    fn from(e: M2mError) -> Self {
        Failure::Refused(e)
    }
}

/// Runs `m2m e2e`; returns the process exit code.
pub async fn run(args: E2eArgs) -> anyhow::Result<i32> {
    match execute(args.command).await? {
        Ok(()) => Ok(0),
        Err(Failure::Refused(e)) => {
            eprintln!("m2m e2e: {} {}", e.rsc.code(), e.dbg);
            println!("{}", json!({ "rsc": e.rsc.code(), "error": e.dbg }));
            Ok(1)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("m2m e2e: {why}");
            Ok(2)
        }
    }
}

/// Local mistakes (a missing file, a file readable by others, a malformed JWK) are `Err`; what the
/// peer or the content refused is `Ok(Err(..))`.
async fn execute(command: E2eCommand) -> anyhow::Result<Result<(), Failure>> {
    match command {
        E2eCommand::Keygen {
            kty,
            kid,
            bytes,
            out,
        } => keygen(kty, &kid, bytes, &out).map(Ok),
        E2eCommand::ProtectData {
            to,
            cr,
            media,
            sign,
            sign_kid,
            encrypt,
            encrypt_kid,
            enc,
            content,
        } => {
            let sign = sign
                .map(|s| load_key(&s, sign_kid.as_deref()))
                .transpose()?;
            let encrypt = encrypt
                .map(|s| load_key(&s, encrypt_kid.as_deref()))
                .transpose()?;
            let content = read_input(&content)?;
            let attrs = BoundAttributes {
                to,
                cr,
                cnf: esdata::content_info(&media, 0),
            };
            let how = protection(sign.as_ref(), encrypt.as_ref(), enc.into())?;
            Ok(esdata::protect(&content, &attrs, Utc::now(), how)
                .map(|con| print_cin(&attrs.cnf, &con, true))
                .map_err(Failure::from))
        }
        E2eCommand::OpenData {
            to,
            state,
            max_age,
            json,
            cin,
            verify,
            verify_ttp,
            decrypt,
            decrypt_ttp,
            ttp,
        } => {
            let checks = Freshness::new(state, max_age)?;
            let stored = StoredCin::read(&cin)?;
            let mut ttp = TtpConnection::new(&ttp);
            let verify = match key_or_ttp(verify, verify_ttp, &mut ttp).await? {
                Ok(k) => k.map(LoadedKey::public_form),
                Err(f) => return Ok(Err(f)),
            };
            let decrypt = match key_or_ttp(decrypt, decrypt_ttp, &mut ttp).await? {
                Ok(k) => k,
                Err(f) => return Ok(Err(f)),
            };
            open_data(
                &stored,
                to,
                verify.as_ref(),
                decrypt.as_ref(),
                &checks,
                json,
            )
        }
        E2eCommand::SealCommand {
            signer,
            group_key,
            dir,
            content,
        } => {
            let signer = load_key(&signer, None)?.ec_pair("--signer")?;
            let group = load_key(&group_key, None)?.oct("--group-key")?;
            let content = read_input(&content)?;
            let cnf = esdata::content_info("application/json", 0);
            Ok(
                group_message::seal_command(&content, &signer, &group, mgmt(dir))
                    .map(|con| print_cin(&cnf, &con, false))
                    .map_err(Failure::from),
            )
        }
        E2eCommand::OpenCommand {
            group_key,
            signer,
            dir,
            cin,
        } => {
            let group = load_key(&group_key, None)?.oct("--group-key")?;
            let signer = load_key(&signer, None)?.ec_public("--signer")?;
            let stored = StoredCin::read(&cin)?;
            Ok(
                group_message::open_command(&stored.con, &group, mgmt(dir), &signer)
                    .map(|plain| print_bytes(&plain))
                    .map_err(Failure::from),
            )
        }
        E2eCommand::OpenCredential {
            member_id,
            key,
            server,
            cin,
            out,
            state,
            max_age,
            group,
        } => {
            let checks = Freshness::new(Some(state), max_age)?;
            open_credential(
                &member_id,
                &key,
                server.as_deref(),
                &cin,
                &out,
                &checks,
                group.as_deref(),
            )
        }
    }
}

fn mgmt(dir: bool) -> GroupKeyMgmt {
    if dir {
        GroupKeyMgmt::Dir
    } else {
        GroupKeyMgmt::KeyWrap
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A key read from a JWK, typed by what it holds.
enum LoadedKey {
    Oct(SymmetricKey),
    EcPair(EcKeyPair),
    EcPublic(EcPublicKey),
}

impl LoadedKey {
    /// Whether the key is secret (oct `k`, private `d`), so its file must be private.
    fn is_secret(&self) -> bool {
        !matches!(self, LoadedKey::EcPublic(_))
    }

    fn oct(self, what: &str) -> anyhow::Result<SymmetricKey> {
        match self {
            LoadedKey::Oct(k) => Ok(k),
            _ => bail!("{what}: a symmetric (oct) key is needed"),
        }
    }

    fn ec_pair(self, what: &str) -> anyhow::Result<EcKeyPair> {
        match self {
            LoadedKey::EcPair(k) => Ok(k),
            _ => bail!("{what}: a P-256 private key is needed"),
        }
    }

    /// A public key, also taken from a private JWK (its public half).
    fn ec_public(self, what: &str) -> anyhow::Result<EcPublicKey> {
        match self {
            LoadedKey::EcPublic(k) => Ok(k),
            LoadedKey::EcPair(k) => Ok(k.public_key()),
            LoadedKey::Oct(_) => bail!("{what}: a P-256 public key is needed"),
        }
    }

    fn signing(&self) -> anyhow::Result<SigningKey<'_>> {
        match self {
            LoadedKey::Oct(k) => Ok(SigningKey::Hmac(k)),
            LoadedKey::EcPair(k) => Ok(SigningKey::Ec(k)),
            LoadedKey::EcPublic(_) => bail!("--sign: a public key cannot sign"),
        }
    }

    /// A private EC JWK given to verify stands for its public half.
    fn public_form(self) -> LoadedKey {
        match self {
            LoadedKey::EcPair(k) => LoadedKey::EcPublic(k.public_key()),
            other => other,
        }
    }

    fn verifying(&self) -> anyhow::Result<VerifyingKey<'_>> {
        match self {
            LoadedKey::Oct(k) => Ok(VerifyingKey::Hmac(k)),
            LoadedKey::EcPublic(k) => Ok(VerifyingKey::Ec(k)),
            LoadedKey::EcPair(_) => bail!("--verify: give the signer's public key"),
        }
    }

    fn recipient(&self) -> anyhow::Result<Recipient<'_>> {
        match self {
            LoadedKey::Oct(k) => Ok(Recipient::KeyWrap(k)),
            LoadedKey::EcPublic(k) => Ok(Recipient::EcdhEs(k)),
            LoadedKey::EcPair(_) => bail!("--encrypt: give the recipient's public key"),
        }
    }

    fn decryption(&self) -> anyhow::Result<DecryptionKey<'_>> {
        match self {
            LoadedKey::Oct(k) => Ok(DecryptionKey::KeyWrap(k)),
            LoadedKey::EcPair(k) => Ok(DecryptionKey::EcdhEs(k)),
            LoadedKey::EcPublic(_) => bail!("--decrypt: a public key cannot decrypt"),
        }
    }
}

/// Reads a JWK from `spec` (FILE or `env:VAR`), with `kid` replacing its own key ID.
fn load_key(spec: &str, kid: Option<&str>) -> anyhow::Result<LoadedKey> {
    let (text, file) = match spec.strip_prefix("env:") {
        Some(var) => (
            SecretSource::Env(var.to_owned()).text_with(&process_env)?,
            None,
        ),
        None => {
            let path = Path::new(spec);
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {spec}"));
            (Zeroizing::new(text?), Some(path))
        }
    };
    let key = parse_key(&text, kid).with_context(|| format!("key {spec}"))?;
    // A file holding a secret (oct `k`, private `d`) must be private; a public key need not be.
    if let (Some(path), true) = (file, key.is_secret()) {
        m2m_security::secure_environment::check_private_file(path).map_err(|e| anyhow!(e))?;
    }
    Ok(key)
}

/// Types a JWK text by its `kty` (and `d`); `kid` replaces the JWK's own.
fn parse_key(text: &str, kid: Option<&str>) -> anyhow::Result<LoadedKey> {
    let mut v: Value =
        serde_json::from_str(text).map_err(|_| anyhow!("not a JWK (JSON object)"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("not a JWK (JSON object)"))?;
    if let Some(kid) = kid {
        obj.insert("kid".into(), kid.into());
    }
    let private = obj.contains_key("d");
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let text = Zeroizing::new(v.to_string());
    // The value held the key too: clear it before it is dropped.
    zeroize_value(&mut v);
    let bad = |e: m2m_security::e2e::jose::JoseError| anyhow!("{}", e.reason);
    Ok(match (kty.as_str(), private) {
        ("oct", _) => LoadedKey::Oct(SymmetricKey::from_jwk(&text).map_err(bad)?),
        ("EC", true) => LoadedKey::EcPair(EcKeyPair::from_jwk(&text).map_err(bad)?),
        ("EC", false) => LoadedKey::EcPublic(EcPublicKey::from_jwk(&text).map_err(bad)?),
        _ => bail!("the JWK's kty must be oct or EC"),
    })
}

fn zeroize_value(v: &mut Value) {
    use zeroize::Zeroize;
    if let Some(obj) = v.as_object_mut() {
        for member in ["k", "d"] {
            if let Some(Value::String(s)) = obj.get_mut(member) {
                s.zeroize();
            }
        }
    }
}

fn keygen(kty: Kty, kid: &str, bytes: usize, out: &Path) -> anyhow::Result<()> {
    match kty {
        Kty::Oct => {
            if ![16, 24, 32].contains(&bytes) {
                bail!("--bytes must be 16, 24 or 32");
            }
            let key = SymmetricKey::generate(kid, bytes);
            crate::files::write_private(out, key.to_jwk().as_bytes())?;
            println!("{}", json!({ "kty": "oct", "kid": kid, "file": out }));
        }
        Kty::Ec => {
            let pair = EcKeyPair::generate(kid).map_err(|e| anyhow!("{}", e.reason))?;
            crate::files::write_private(out, pair.to_jwk().as_bytes())?;
            println!("{}", pair.public_key().to_jwk());
        }
    }
    Ok(())
}

/// A key from a file, or from the TTP by its credentialID (the kid becomes that ID).
async fn key_or_ttp(
    file: Option<String>,
    credential: Option<String>,
    ttp: &mut TtpConnection<'_>,
) -> anyhow::Result<Result<Option<LoadedKey>, Failure>> {
    if let Some(spec) = file {
        return Ok(Ok(Some(load_key(&spec, None)?)));
    }
    let Some(id) = credential else {
        return Ok(Ok(None));
    };
    Ok(fetch_from_ttp(&id, ttp).await?.map(Some))
}

/// The TTP of one command: one association, opened when a key is first fetched.
struct TtpConnection<'a> {
    source: &'a TtpSource,
    maf: Option<MafClient>,
}

impl<'a> TtpConnection<'a> {
    fn new(source: &'a TtpSource) -> Self {
        TtpConnection { source, maf: None }
    }

    /// The MAF client, connecting on first use.
    async fn client(&mut self) -> anyhow::Result<Result<&mut MafClient, Failure>> {
        if let Some(maf) = self.maf.take() {
            return Ok(Ok(self.maf.insert(maf)));
        }
        let ttp = self.source;
        let (Some(url), Some(fqdn), Some(km_id), Some(km_env)) =
            (&ttp.ttp_url, &ttp.ttp_fqdn, &ttp.km_id, &ttp.km_env)
        else {
            bail!("a key from the TTP needs --ttp-url, --ttp-fqdn, --km-id and --km-env");
        };
        let km = SecretSource::Env(km_env.clone()).load()?;
        Ok(match MafClient::connect_psk(url, fqdn, km_id, &km).await {
            Ok(m) => Ok(self.maf.insert(m)),
            Err(e) => Err(Failure::Unreachable(format!("TTP: {e}"))),
        })
    }
}

async fn fetch_from_ttp(
    id: &str,
    ttp: &mut TtpConnection<'_>,
) -> anyhow::Result<Result<LoadedKey, Failure>> {
    let maf = match ttp.client().await? {
        Ok(m) => m,
        Err(f) => return Ok(Err(f)),
    };
    let credential = match maf.retrieve_credential(id).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(match e.rsc {
                Some(rsc) => Failure::Refused(M2mError::new(
                    m2m_core::ResponseStatusCode::from_code(rsc)
                        .unwrap_or(m2m_core::ResponseStatusCode::NotFound),
                    format!("TTP: {}", e.reason),
                )),
                None => Failure::Unreachable(format!("TTP: {e}")),
            }))
        }
    };
    let jwk = credential
        .jwk
        .ok_or_else(|| anyhow!("the TTP answered no JWK"))?;
    let text = std::str::from_utf8(jwk.json().expose()).context("the TTP's JWK")?;
    let key = parse_key(text, Some(&credential.credential_id))
        .with_context(|| format!("the TTP's credential {id}"))?;
    Ok(Ok(key))
}

fn protection<'a>(
    sign: Option<&'a LoadedKey>,
    encrypt: Option<&'a LoadedKey>,
    enc: ContentEnc,
) -> anyhow::Result<Protection<'a>> {
    Ok(match (sign, encrypt) {
        (Some(s), None) => Protection::Sign(s.signing()?),
        (None, Some(e)) => Protection::Encrypt(e.recipient()?, enc),
        (Some(s), Some(e)) => Protection::SignThenEncrypt(s.signing()?, e.recipient()?, enc),
        (None, None) => bail!("give --sign and/or --encrypt"),
    })
}

// ---------------------------------------------------------------------------------------------
// Contents in and out

/// A contentInstance as read: its content and the attributes ESData binds.
struct StoredCin {
    con: String,
    cr: Option<String>,
    cnf: Option<String>,
}

impl StoredCin {
    /// From `m2m request --json` output, an `m2m:cin` object, a bare cin, or a bare compact token.
    fn read(spec: &str) -> anyhow::Result<StoredCin> {
        let text = read_input(spec)?;
        let text = std::str::from_utf8(&text).context("the contentInstance is not text")?;
        let text = text.trim();
        if !text.starts_with('{') {
            return Ok(StoredCin {
                con: text.to_owned(),
                cr: None,
                cnf: None,
            });
        }
        let v: Value = serde_json::from_str(text).context("the contentInstance is not JSON")?;
        let cin = v
            .pointer("/pc/m2m:cin")
            .or_else(|| v.get("m2m:cin"))
            .unwrap_or(&v);
        let field = |k: &str| cin.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(StoredCin {
            con: field("con").ok_or_else(|| anyhow!("the contentInstance has no con"))?,
            cr: field("cr"),
            cnf: field("cnf"),
        })
    }
}

/// What a reader requires of an object's time besides its protection.
struct Freshness {
    state: Option<PathBuf>,
    max_age: Option<chrono::Duration>,
}

impl Freshness {
    fn new(state: Option<PathBuf>, max_age: Option<u64>) -> anyhow::Result<Self> {
        let max_age = max_age
            .map(|s| {
                i64::try_from(s)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .ok_or_else(|| anyhow!("--max-age is too large"))
            })
            .transpose()?;
        Ok(Self { state, max_age })
    }

    /// The state file, locked until the result is dropped.
    fn open_state(&self) -> anyhow::Result<Option<ReplayState>> {
        self.state.as_deref().map(ReplayState::open).transpose()
    }
}

fn open_data(
    stored: &StoredCin,
    to: String,
    verify: Option<&LoadedKey>,
    decrypt: Option<&LoadedKey>,
    checks: &Freshness,
    json: bool,
) -> anyhow::Result<Result<(), Failure>> {
    const WHAT: &str = "ESData content rejected";
    let attrs = BoundAttributes {
        to,
        cr: stored.cr.clone().unwrap_or_default(),
        cnf: stored.cnf.clone().unwrap_or_default(),
    };
    let local = |e: anyhow::Error| Failure::Refused(M2mError::bad_request(e.to_string()));
    let keys = match (|| {
        Ok(ReaderKeys {
            verify: verify.map(LoadedKey::verifying).transpose()?,
            decrypt: decrypt.map(LoadedKey::decryption).transpose()?,
        })
    })() {
        Ok(k) => k,
        Err(e) => return Ok(Err(local(e))),
    };
    let opened = match esdata::open(&stored.con, &attrs, keys) {
        Ok(o) => o,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Err(e) = freshness::check_age(WHAT, opened.created, Utc::now(), checks.max_age) {
        return Ok(Err(e.into()));
    }
    let text = if json {
        let con = std::str::from_utf8(&opened.content)
            .map_err(|_| anyhow!("the content is not text: read it without --json"))?;
        Some(Zeroizing::new(
            json!({ "con": con, "created": m2m_core::time::format(opened.created) }).to_string(),
        ))
    } else {
        None
    };
    // Checked and recorded under the lock, and only then printed.
    if let Some(mut state) = checks.open_state()? {
        let created = freshness::micros(opened.created);
        let scope = format!("from {} in {}", attrs.cr, attrs.to);
        let newest = state.newest_data(&attrs.to, &attrs.cr);
        if let Err(e) = freshness::check_newer(WHAT, created, newest, &scope) {
            return Ok(Err(e.into()));
        }
        state.record_data(&attrs.to, &attrs.cr, created);
        state.save()?;
    }
    match text {
        Some(t) => println!("{}", t.as_str()),
        None => print_bytes(&opened.content),
    }
    Ok(Ok(()))
}

fn open_credential(
    member_id: &str,
    key: &str,
    server: Option<&str>,
    cin: &str,
    out: &Path,
    checks: &Freshness,
    group: Option<&str>,
) -> anyhow::Result<Result<(), Failure>> {
    const WHAT: &str = "group credential rejected";
    let own = load_key(key, None)?;
    let server = server
        .map(|s| load_key(s, None).and_then(|k| k.ec_public("--server")))
        .transpose()?;
    let unwrap = match (&own, &server) {
        (LoadedKey::Oct(k), _) => MemberUnwrapKey::Shared(k),
        (LoadedKey::EcPair(k), Some(s)) => MemberUnwrapKey::Ec(k, VerifyingKey::Ec(s)),
        (LoadedKey::EcPair(_), None) => bail!("a P-256 member key needs --server"),
        (LoadedKey::EcPublic(_), _) => bail!("--key: the member's private key is needed"),
    };
    let stored = StoredCin::read(cin)?;
    let opened = match group_message::open_credential(&stored.con, member_id, unwrap) {
        Ok(o) => o,
        Err(e) => return Ok(Err(Failure::Refused(e))),
    };
    let info = &opened.info;
    if let Some(want) = group.filter(|g| *g != info.group) {
        return Ok(Err(Failure::Refused(M2mError::new(
            m2m_core::ResponseStatusCode::OriginatorNotAuthenticated,
            format!("{WHAT}: it is for the group {:?}, not {want:?}", info.group),
        ))));
    }
    if let Err(e) = freshness::check_age(WHAT, info.issued, Utc::now(), checks.max_age) {
        return Ok(Err(e.into()));
    }
    let mut state = checks
        .open_state()?
        .ok_or_else(|| anyhow!("open-credential needs --state"))?;
    let scope = format!("by {member_id} for {}", info.group);
    let newest = state.newest_credential(member_id, &info.group);
    if let Err(e) = freshness::check_newer(WHAT, info.version, newest, &scope) {
        return Ok(Err(e.into()));
    }
    // The key file first (it must be new): a version is recorded only once its key is kept.
    crate::files::write_private(out, opened.key.to_jwk().as_bytes())?;
    state.record_credential(member_id, &info.group, info.version);
    if let Err(e) = state.save() {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    println!(
        "{}",
        json!({
            "kid": opened.key.kid(),
            "file": out,
            "gid": info.group,
            "ver": info.version,
            "iat": m2m_core::time::format(info.issued),
        })
    );
    Ok(Ok(()))
}

/// TEXT, @FILE or - (standard input).
fn read_input(spec: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    match spec {
        "-" => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
        }
        s => match s.strip_prefix('@') {
            Some(path) => {
                *buf = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
            }
            None => buf.extend_from_slice(s.as_bytes()),
        },
    }
    Ok(buf)
}

/// The body of a contentInstance CREATE; `cr: null` asks the hosting CSE to record the creator,
/// which ESData binds.
fn print_cin(cnf: &str, con: &str, with_creator: bool) {
    let mut cin = json!({ "cnf": cnf, "con": con });
    if with_creator {
        cin["cr"] = Value::Null;
    }
    println!("{}", json!({ "m2m:cin": cin }));
}

fn print_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(bytes);
    let _ = out.write_all(b"\n");
}
