//! `m2m keys`: the software secure environment from the command line (keystore files, PSKs), and the oneM2M
//! key derivations (`m2m_security::kdf`, TS-0003 clause 10.3) for operators.
//!
//! ```text
//! m2m keys init       --keystore FILE (--key-file F [--create-key-file] | --passphrase-env VAR)
//! m2m keys add-psk    --keystore FILE <key source> --kpsa-id ID (--key HEX | --key-env VAR)
//!                     [--entity AE-ID|CSE-ID] [--replace]
//! m2m keys list       --keystore FILE <key source>
//! m2m keys remove-psk --keystore FILE <key source> --kpsa-id ID
//!
//! m2m keys km                 (--ke HEX | --ke-env VAR) --maf-id ID                     (10.3.2)
//! m2m keys kpsa               (--ke HEX | --ke-env VAR) --id ID                         (10.3.3)
//! m2m keys usage-key          (--ke HEX | --ke-env VAR) --suid N --target ID            (10.3.7)
//! m2m keys group-key          (--kpsa HEX | --kpsa-env VAR) --id ID --rand HEX          (seeds/001 NOTE 5)
//! m2m keys session-esprim-key (--key HEX | --key-env VAR) --receiver-rand HEX --originator-rand HEX
//!                                                                                      (10.3.8.2)
//! m2m keys esprim-maf-key    (--kc HEX | --kc-env VAR)     (8.4.2 A, C.6a.4; the label is this project's)
//! m2m keys export-split       (--exported HEX | --exported-env VAR) --fqdn FQDN
//!                             [--kind bootstrap|connection]                        (10.3.1, 10.3.4, 10.3.5)
//! m2m keys e2e-keys           (--kpsa HEX | --kpsa-env VAR) --salt HEX                  (10.3.6)
//! ```
//!
//! The keystore format is described on `m2m_security::secure_environment::SoftwareKeystore`. The keystore
//! subcommands never print key material; `list` shows entities and KpsaIDs only. The derivation subcommands
//! do print the derived key, in lowercase hex on stdout, one `Name: value` line each, together with the
//! identifiers exactly as hashed (after NFKC): an operator asked for them explicitly. A key given with
//! `--key`, `--ke`, ... is visible to other local users in the process list while the command runs; the
//! `--...-env VAR` form avoids that.
use crate::association::{process_env, EnvLookup, SecretSource};
use crate::redacted::{redacted, Redacted};
use anyhow::{bail, Context};
use clap::ValueEnum;
use clap::{Args, Subcommand};

mod token;
use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::kdf;
use m2m_security::secure_environment::{
    create_key_file, KeySource, KeystoreError, SecureEnvironment, SoftwareKeystore,
};
use std::io::Write;
use std::path::PathBuf;

/// `m2m keys`: manage keystores and credentials.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `m2m keys` subcommands: keystore management, then the key derivations of TS-0003 clause 10.3.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a new, empty keystore (encrypted with AES-256-GCM).
    Init(InitArgs),
    /// Add a pre-shared key (Kpsa) under its KpsaID, optionally bound to an AE-ID or CSE-ID.
    AddPsk(AddPskArgs),
    /// List the PSKs (entity and KpsaID, never keys) and the names of other secrets.
    List(StoreArgs),
    /// Remove the PSK of a KpsaID.
    RemovePsk(RemovePskArgs),
    /// Add a named secret (e.g. `secure-storage`, the key the CSE's secure storage derives its
    /// encryption key from): 32 fresh random bytes, or the given key.
    AddSecret(AddSecretArgs),
    /// Derive the Master Credential Km from an Enrolment Key (TS-0003 10.3.2); prints Km.
    Km(KmArgs),
    /// Derive a Provisioned Secure Connection Key Kpsa from an Enrolment Key (10.3.3); prints Kpsa.
    Kpsa(KpsaArgs),
    /// Derive a usage-constrained symmetric key from an Enrolment Key (10.3.7); prints the key.
    UsageKey(UsageKeyArgs),
    /// Derive a member's Group Secure Connection Key Ksx (seeds/001 8.2.1 NOTE 5); prints Ksx.
    GroupKey(GroupKeyArgs),
    /// Derive a sessionESPrimKey from a pairwiseESPrimKey and two rands (10.3.8.2); prints it.
    SessionEsprimKey(SessionEsprimKeyArgs),
    /// Derive the pairwiseESPrimKey of a MAF-distributed Kc (TS-0003 8.4.2 C.6a.4, with this project's
    /// reserved string); prints it.
    EsprimMafKey(EsprimMafKeyArgs),
    /// Split 48 bytes of TLS exporter output into Ke/RelativeKeID or Kc/KcID (10.3.1); prints both and the
    /// KeID or Key Identifier.
    ExportSplit(ExportSplitArgs),
    /// Derive Ke2e_master from Kpsa and a salt, and the four end-to-end keys (10.3.6); prints them.
    E2eKeys(E2eKeysArgs),
    /// The keys of a PKCS#11 token (an HSM, a smart card, SoftHSM): generate, import, list,
    /// destroy; private keys and unextractable secrets never leave it.
    Token(token::TokenArgs),
    /// Rotate a device's Kpsa remotely: prints the UPDATE content of its credentials mgmtObj
    /// (`dcfg:crds`: the new KpsaID, and the new Kpsa as a JWE only the device opens); the key
    /// itself is never printed.
    RotateKpsa(RotateKpsaArgs),
}

/// `m2m keys rotate-kpsa`.
#[derive(Args, Debug, Clone)]
pub struct RotateKpsaArgs {
    /// The rotation key Krot the CSE holds too (`[security] rotation_key`): 32 bytes in hex in a
    /// file of mode 0600.
    #[arg(long)]
    pub rotation_key: std::path::PathBuf,
    /// The new KpsaID (`name@issuer-fqdn`), never used before.
    #[arg(long)]
    pub kpsa_id: String,
    /// The device's AE-ID as the CSE names it, SP-relative (e.g. `/id-in/Clock-AE1`).
    #[arg(long)]
    pub entity: String,
    /// The device's public P-256 JWK (with kid): crse is encrypted for it.
    #[arg(long)]
    pub device_jwk: std::path::PathBuf,
}

/// Where the keystore's master key comes from: exactly one of the two.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct KeySourceArgs {
    /// Key file holding the 32-byte master key (raw or 64 hex digits), mode 0600.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Name of an environment variable holding the passphrase (stretched with Argon2id).
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

/// A keystore file and its key source.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The keystore file.
    #[arg(long, value_name = "FILE")]
    pub keystore: PathBuf,
    #[command(flatten)]
    pub key: KeySourceArgs,
}

/// `m2m keys init`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Create the key file first (32 random bytes as hex, mode 0600); it must not exist.
    #[arg(long, conflicts_with = "passphrase_env")]
    pub create_key_file: bool,
}

/// Declares the argument pair `--FLAG HEX` (redacted) | `--FLAG-env VAR`, exactly one of them
/// required, as a struct to flatten into a command's arguments, with the help texts given.
macro_rules! hex_secret_arg {
    ($(#[$meta:meta])* $ty:ident, $flag:ident, $env:ident, $help:literal, $env_help:literal) => {
        $(#[$meta])*
        #[derive(Args, Debug, Clone)]
        pub struct $ty {
            #[doc = $help]
            #[arg(long, value_name = "HEX", value_parser = redacted,
                  required_unless_present = stringify!($env), conflicts_with = stringify!($env))]
            pub $flag: Option<Redacted>,
            #[doc = $env_help]
            #[arg(long, value_name = "VAR")]
            pub $env: Option<String>,
        }

        impl $ty {
            /// The key, from the command line or the environment; errors never repeat it.
            fn secret(&self, env: Env) -> anyhow::Result<Secret> {
                secret_arg(stringify!($flag), self.$flag.as_ref(), self.$env.as_deref(), env)
            }
        }
    };
}

hex_secret_arg!(
    /// `--key HEX | --key-env VAR`.
    AddPskKey,
    key,
    key_env,
    "The key in hex (visible in the process list: prefer --key-env).",
    "Name of an environment variable holding the key in hex."
);
hex_secret_arg!(
    /// `--ke HEX | --ke-env VAR`.
    EnrolmentKey,
    ke,
    ke_env,
    "The Enrolment Key Ke in hex (visible in the process list: prefer --ke-env).",
    "Name of an environment variable holding Ke in hex."
);
hex_secret_arg!(
    /// `--kpsa HEX | --kpsa-env VAR`.
    GroupMemberKpsa,
    kpsa,
    kpsa_env,
    "Kpsaxi, the key member Ax shares with the IN-CSE, in hex (visible in the process list: prefer --kpsa-env).",
    "Name of an environment variable holding Kpsaxi in hex."
);
hex_secret_arg!(
    /// `--key HEX | --key-env VAR`.
    PairwiseEsprimKey,
    key,
    key_env,
    "The pairwiseESPrimKey in hex (visible in the process list: prefer --key-env).",
    "Name of an environment variable holding the pairwiseESPrimKey in hex."
);
hex_secret_arg!(
    /// `--kc HEX | --kc-env VAR`.
    ConnectionKey,
    kc,
    kc_env,
    "Kc in hex (visible in the process list: prefer --kc-env).",
    "Name of an environment variable holding Kc in hex."
);
hex_secret_arg!(
    /// `--exported HEX | --exported-env VAR`.
    ExporterOutput,
    exported,
    exported_env,
    "The 48 bytes of exporter output in hex (visible in the process list: prefer --exported-env).",
    "Name of an environment variable holding the exporter output in hex."
);
hex_secret_arg!(
    /// `--kpsa HEX | --kpsa-env VAR`.
    E2eKpsa,
    kpsa,
    kpsa_env,
    "Kpsa in hex (visible in the process list: prefer --kpsa-env).",
    "Name of an environment variable holding Kpsa in hex."
);

/// `--entity`: an AE-ID (`Cname`, `Sname`, or that after a CSE-ID: `/id-in/Cname`,
/// `//sp/id-in/Cname`) or a CSE-ID (`/id-mn`, `//sp/id-mn`), checked here so that a typo is
/// refused when the key is stored, not when the CSE starts (the CSE parses it against its own
/// identity then).
pub fn entity_arg(s: &str) -> Result<String, String> {
    use m2m_core::{CseId, EntityId, Home, SpId};
    // Read as the project reads identities; the CSE that uses the key resolves the relative
    // forms against its own SP and CSE-ID, so any home serves the check of the form.
    let home = Home::cse(
        SpId::parse("sp.example").map_err(|e| e.dbg)?,
        CseId::parse("/cse").map_err(|e| e.dbg)?,
    );
    EntityId::parse(s, &home)
        .map(|_| s.to_owned())
        .map_err(|_| {
            format!(
                "'{s}' is no AE-ID (Cname, Sname, /cse-id/Cname) or CSE-ID (/cse-id, //sp/cse-id)"
            )
        })
}

/// `m2m keys add-psk`.
#[derive(Args, Debug, Clone)]
pub struct AddPskArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The KpsaID (TLS psk_identity): Issuer_Relative_KpsaID@Issuer-FQDN.
    #[arg(long, value_name = "ID")]
    pub kpsa_id: String,
    #[command(flatten)]
    pub key: AddPskKey,
    /// The AE-ID or CSE-ID this credential authenticates.
    #[arg(long, value_name = "AE-or-CSE-ID", value_parser = entity_arg)]
    pub entity: Option<String>,
    /// Replace a PSK already held under this KpsaID.
    #[arg(long)]
    pub replace: bool,
}

/// `m2m keys remove-psk`.
#[derive(Args, Debug, Clone)]
pub struct RemovePskArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The KpsaID to remove.
    #[arg(long, value_name = "ID")]
    pub kpsa_id: String,
}

/// `m2m keys add-secret`.
#[derive(Args, Debug, Clone)]
pub struct AddSecretArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The secret's name.
    #[arg(long)]
    pub name: String,
    /// 32 fresh random bytes (nobody ever sees them).
    #[arg(long, conflicts_with_all = ["key", "key_env"])]
    pub generate: bool,
    /// The key in hex (visible in the process list: prefer --key-env).
    #[arg(long, value_name = "HEX", value_parser = redacted, required_unless_present_any = ["generate", "key_env"], conflicts_with = "key_env")]
    pub key: Option<Redacted>,
    /// Name of an environment variable holding the key in hex.
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
}

/// `m2m keys km`.
#[derive(Args, Debug, Clone)]
pub struct KmArgs {
    #[command(flatten)]
    pub ke: EnrolmentKey,
    /// The MAF-ID (NFKC-normalized before hashing).
    #[arg(long, value_name = "ID")]
    pub maf_id: String,
}

/// `m2m keys kpsa`.
#[derive(Args, Debug, Clone)]
pub struct KpsaArgs {
    #[command(flatten)]
    pub ke: EnrolmentKey,
    /// Enrolee B's CSE-ID or AE-ID (NFKC-normalized before hashing).
    #[arg(long, value_name = "ID")]
    pub id: String,
}

/// `m2m keys usage-key`.
#[derive(Args, Debug, Clone)]
pub struct UsageKeyArgs {
    #[command(flatten)]
    pub ke: EnrolmentKey,
    /// The Security Usage Identifier (hashed as its decimal text).
    #[arg(long, value_name = "N")]
    pub suid: u32,
    /// The Enrolment-Target-ID: an FQDN, for a CSE or AE the FQDN form of its absolute ID.
    #[arg(long, value_name = "ID")]
    pub target: String,
}

/// `m2m keys group-key`.
#[derive(Args, Debug, Clone)]
pub struct GroupKeyArgs {
    #[command(flatten)]
    pub kpsa: GroupMemberKpsa,
    /// Enrolee Ax's CSE-ID or AE-ID (NFKC-normalized before hashing).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// The IN-CSE's Rand: 16 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub rand: String,
}

/// `m2m keys session-esprim-key`.
#[derive(Args, Debug, Clone)]
pub struct SessionEsprimKeyArgs {
    #[command(flatten)]
    pub key: PairwiseEsprimKey,
    /// The receiver's rand value (esrv): 16 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub receiver_rand: String,
    /// The originator's rand value (esrv): 16 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub originator_rand: String,
}

/// `m2m keys esprim-maf-key`.
#[derive(Args, Debug, Clone)]
pub struct EsprimMafKeyArgs {
    #[command(flatten)]
    pub kc: ConnectionKey,
}

/// Which TLS exporter produced the bytes given to `export-split`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// MEF bootstrap ("EXPORTER-oneM2M-Bootstrap"): Ke and RelativeKeID, KeID = HEX@MEF-FQDN.
    Bootstrap,
    /// MAF connection ("EXPORTER-oneM2M-Connection"): Kc and KcID, Key Identifier = HEX@MAF-FQDN.
    Connection,
}

/// `m2m keys export-split`.
#[derive(Args, Debug, Clone)]
pub struct ExportSplitArgs {
    #[command(flatten)]
    pub exported: ExporterOutput,
    /// The FQDN of the MEF (bootstrap) or MAF (connection).
    #[arg(long, value_name = "FQDN")]
    pub fqdn: String,
    /// Which exporter label produced the bytes.
    #[arg(long, value_enum, default_value_t = ExportKind::Connection)]
    pub kind: ExportKind,
}

/// `m2m keys e2e-keys`.
#[derive(Args, Debug, Clone)]
pub struct E2eKeysArgs {
    #[command(flatten)]
    pub kpsa: E2eKpsa,
    /// The Salt in hex (TS-0003 leaves it unspecified; both end-points must agree on it). May be empty.
    #[arg(long, value_name = "HEX")]
    pub salt: String,
}

/// Runs `m2m keys`, reading environment variables of the process and printing to stdout.
pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    run_with(args, &process_env, &mut stdout.lock())
}

type Env<'a> = EnvLookup<'a>;

fn run_with(args: KeysArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Init(a) => init(a, env, out),
        KeysCommand::AddPsk(a) => add_psk(a, env, out),
        KeysCommand::List(a) => list(a, env, out),
        KeysCommand::RemovePsk(a) => remove_psk(a, env, out),
        KeysCommand::AddSecret(a) => add_secret(a, env, out),
        KeysCommand::Km(a) => derive_km(a, env, out),
        KeysCommand::Kpsa(a) => derive_kpsa(a, env, out),
        KeysCommand::UsageKey(a) => usage_key(a, env, out),
        KeysCommand::GroupKey(a) => group_key(a, env, out),
        KeysCommand::SessionEsprimKey(a) => session_esprim_key(a, env, out),
        KeysCommand::EsprimMafKey(a) => {
            let kc = a.kc.secret(env)?;
            writeln!(out, "reserved string: {:?}", kdf::ESPRIM_MAF_LABEL)?;
            print_key(out, "pairwiseESPrimKey", &kdf::esprim_maf_pairwise(&kc))
        }
        KeysCommand::ExportSplit(a) => export_split(a, env, out),
        KeysCommand::E2eKeys(a) => e2e_keys(a, env, out),
        KeysCommand::RotateKpsa(a) => rotate_kpsa(a, out),
        KeysCommand::Token(a) => token::run(a, env, out),
    }
}

/// The key of `--NAME HEX` or `--NAME-env VAR`; errors never repeat the value.
fn secret_arg(
    name: &str,
    hex_value: Option<&Redacted>,
    var: Option<&str>,
    env: Env,
) -> anyhow::Result<Secret> {
    match (hex_value, var) {
        (Some(k), None) => {
            Secret::from_hex(k.expose()).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
        }
        (None, Some(var)) => {
            let hex = SecretSource::Env(var.to_owned())
                .text_with(env)
                .map_err(|e| anyhow::anyhow!("--{name}-env: {e}"))?;
            Secret::from_hex(&hex).map_err(|e| anyhow::anyhow!("--{name}-env {var}: {e}"))
        }
        _ => bail!("give exactly one of --{name} and --{name}-env"),
    }
}

fn key_source(k: &KeySourceArgs, env: Env) -> anyhow::Result<KeySource> {
    match (&k.key_file, &k.passphrase_env) {
        (Some(f), None) => Ok(KeySource::KeyFile(f.clone())),
        (None, Some(var)) => {
            let Some(p) = env(var) else {
                bail!("environment variable {var} (--passphrase-env) is not set");
            };
            if p.is_empty() {
                bail!("environment variable {var} (--passphrase-env) is empty");
            }
            Ok(KeySource::Passphrase(Secret::from_slice(p.as_bytes())))
        }
        _ => bail!("give exactly one of --key-file and --passphrase-env"),
    }
}

fn open(s: &StoreArgs, env: Env) -> anyhow::Result<SoftwareKeystore> {
    Ok(SoftwareKeystore::open(
        &s.keystore,
        key_source(&s.key, env)?,
    )?)
}

fn init(a: InitArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let source = key_source(&a.store.key, env)?;
    if a.create_key_file {
        if let KeySource::KeyFile(f) = &source {
            create_key_file(f)?;
            writeln!(out, "created key file {} (mode 0600)", f.display())?;
        }
    }
    let ks = SoftwareKeystore::create(&a.store.keystore, source)?;
    writeln!(
        out,
        "created keystore {} ({})",
        ks.path().display(),
        if ks.is_passphrase_protected() {
            "passphrase, Argon2id"
        } else {
            "key file"
        }
    )?;
    Ok(())
}

fn add_psk(a: AddPskArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let kpsa_id = KpsaId::parse(&a.kpsa_id).map_err(anyhow::Error::msg)?;
    let key = a.key.secret(env)?;
    let mut ks = open(&a.store, env)?;
    let replaced = a.replace && ks.remove_psk(&kpsa_id);
    let n = key.len();
    let entry = PskEntry {
        entity_id: a.entity.clone(),
        kpsa_id: kpsa_id.clone(),
        key,
    };
    match ks.add_psk(entry) {
        Ok(()) => {}
        Err(e @ KeystoreError::DuplicatePsk(_)) => bail!("{e} (use --replace to replace it)"),
        Err(e) => return Err(e.into()),
    }
    ks.save()?;
    writeln!(
        out,
        "{} PSK {kpsa_id} ({n} bytes){} in {}",
        if replaced { "replaced" } else { "added" },
        a.entity
            .as_deref()
            .map(|e| format!(" for {e}"))
            .unwrap_or_default(),
        ks.path().display()
    )?;
    Ok(())
}

fn list(a: StoreArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let ks = open(&a, env)?;
    let rows = ks.psk_entries();
    if rows.is_empty() {
        writeln!(out, "no PSK in {}", ks.path().display())?;
    } else {
        let w = rows
            .iter()
            .map(|(e, _)| e.as_deref().unwrap_or("-").len())
            .max()
            .unwrap_or(0)
            .max("ENTITY".len());
        writeln!(out, "{:<w$}  KPSA-ID", "ENTITY")?;
        for (e, k) in rows {
            writeln!(out, "{:<w$}  {k}", e.as_deref().unwrap_or("-"))?;
        }
    }
    let names = ks.secret_names();
    if !names.is_empty() {
        writeln!(out, "SECRETS: {}", names.join(", "))?;
    }
    Ok(())
}

fn remove_psk(a: RemovePskArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let kpsa_id = KpsaId::parse(&a.kpsa_id).map_err(anyhow::Error::msg)?;
    let mut ks = open(&a.store, env)?;
    if !ks.remove_psk(&kpsa_id) {
        bail!("no PSK {kpsa_id} in {}", ks.path().display());
    }
    ks.save()
        .with_context(|| format!("saving {}", ks.path().display()))?;
    writeln!(out, "removed PSK {kpsa_id} from {}", ks.path().display())?;
    Ok(())
}

fn add_secret(a: AddSecretArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let secret = if a.generate {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes[..]);
        Secret::from_slice(&bytes[..])
    } else {
        secret_arg("key", a.key.as_ref(), a.key_env.as_deref(), env)?
    };
    let mut ks = open(&a.store, env)?;
    if ks.secret_names().contains(&a.name) {
        bail!("{} holds a secret {} already", ks.path().display(), a.name);
    }
    let n = secret.len();
    ks.set_secret(&a.name, secret)?;
    ks.save()
        .with_context(|| format!("saving {}", ks.path().display()))?;
    writeln!(
        out,
        "added secret {} ({n} bytes) to {}",
        a.name,
        ks.path().display()
    )?;
    Ok(())
}

/// A non-secret byte string given in hex, of exactly `len` bytes when `len` is set.
fn hex_arg(name: &str, value: &str, len: Option<usize>) -> anyhow::Result<Vec<u8>> {
    let b = hex::decode(value.trim())
        .map_err(|_| anyhow::anyhow!("--{name} is not hex: an even number of 0-9, a-f, A-F"))?;
    if let Some(n) = len {
        if b.len() != n {
            bail!("--{name} is {} bytes, {n} are needed", b.len());
        }
    }
    Ok(b)
}

/// An identifier as hashed (NFKC), refusing an empty one; the line shown says when NFKC changed it.
fn id_arg(name: &str, id: &str) -> anyhow::Result<(String, String)> {
    let n = kdf::normalize_id(id);
    if n.is_empty() {
        bail!("--{name} is empty");
    }
    let shown = if n == id {
        n.clone()
    } else {
        format!("{n} (NFKC of {id:?})")
    };
    Ok((n, shown))
}

fn print_key(out: &mut dyn Write, name: &str, key: &Secret) -> anyhow::Result<()> {
    writeln!(out, "{name}: {}", &*key.to_hex())?;
    Ok(())
}

fn derive_km(a: KmArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let ke = a.ke.secret(env)?;
    let (id, shown) = id_arg("maf-id", &a.maf_id)?;
    writeln!(out, "MAF-ID: {shown}")?;
    print_key(out, "Km", &kdf::km(&ke, &id))
}

fn rotate_kpsa(a: RotateKpsaArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use m2m_security::e2e::jose::{self, ContentEnc, EcPublicKey, HeaderParams, Recipient};
    m2m_security::secure_environment::check_private_file(&a.rotation_key)
        .map_err(anyhow::Error::msg)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.rotation_key)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.rotation_key.display()))?,
    );
    let krot = Secret::from_hex(text.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow::anyhow!("{} must hold 32 bytes in hex", a.rotation_key.display()))?;
    KpsaId::parse(&a.kpsa_id).map_err(|e| anyhow::anyhow!("--kpsa-id: {e}"))?;
    if !a.entity.starts_with('/') || a.entity.starts_with("//") {
        anyhow::bail!("--entity: the SP-relative AE-ID, e.g. /id-in/Clock-AE1");
    }
    let jwk = std::fs::read_to_string(&a.device_jwk)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.device_jwk.display()))?;
    let device = EcPublicKey::from_jwk(&jwk)
        .map_err(|e| anyhow::anyhow!("{}: {}", a.device_jwk.display(), e.reason))?;
    let kpsa = kdf::rotated_kpsa(&krot, &a.kpsa_id, &a.entity);
    // The entity in the protected header: the CSE checks that the object's node hosts it.
    let mut header = HeaderParams::new();
    header.insert("sub".into(), serde_json::Value::String(a.entity.clone()));
    let crse = jose::encrypt_compact(
        kpsa.to_hex().as_bytes(),
        Recipient::EcdhEs(&device),
        ContentEnc::A128Gcm,
        &header,
    )
    .map_err(|e| anyhow::anyhow!("JWE: {}", e.reason))?;
    let content = serde_json::json!({ "dcfg:crds": { "crid": a.kpsa_id, "crse": crse } });
    writeln!(out, "{content}")?;
    Ok(())
}

fn derive_kpsa(a: KpsaArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let ke = a.ke.secret(env)?;
    let (id, shown) = id_arg("id", &a.id)?;
    writeln!(out, "Enrolee-B-ID: {shown}")?;
    print_key(out, "Kpsa", &kdf::kpsa(&ke, &id))
}

fn usage_key(a: UsageKeyArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let ke = a.ke.secret(env)?;
    let (id, shown) = id_arg("target", &a.target)?;
    writeln!(
        out,
        "SUID: {} (hashed as the text {:?})",
        a.suid,
        kdf::suid_octets(a.suid)
    )?;
    writeln!(out, "Enrolment-Target-ID: {shown}")?;
    print_key(out, "key", &kdf::usage_constrained(&ke, a.suid, &id))
}

fn group_key(a: GroupKeyArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let k = a.kpsa.secret(env)?;
    let (id, shown) = id_arg("id", &a.id)?;
    let rand = hex_arg("rand", &a.rand, Some(kdf::GROUP_RAND_LEN))?;
    writeln!(out, "Enrolee-Ax-ID: {shown}")?;
    writeln!(out, "Rand: {}", hex::encode(&rand))?;
    print_key(out, "Ksx", &kdf::ksx(&k, &id, &rand))?;
    writeln!(out, "KsxId: the KpsaxiId of the key given")?;
    Ok(())
}

fn session_esprim_key(
    a: SessionEsprimKeyArgs,
    env: Env,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let k = a.key.secret(env)?;
    let mut r = [0u8; kdf::ESPRIM_RAND_LEN];
    let mut o = [0u8; kdf::ESPRIM_RAND_LEN];
    r.copy_from_slice(&hex_arg(
        "receiver-rand",
        &a.receiver_rand,
        Some(kdf::ESPRIM_RAND_LEN),
    )?);
    o.copy_from_slice(&hex_arg(
        "originator-rand",
        &a.originator_rand,
        Some(kdf::ESPRIM_RAND_LEN),
    )?);
    print_key(
        out,
        "sessionESPrimKey",
        &kdf::session_esprim_key(&k, &r, &o),
    )
}

fn export_split(a: ExportSplitArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let x = a.exported.secret(env)?;
    let exported: &[u8; kdf::EXPORT_LEN] = x.expose().try_into().map_err(|_| {
        anyhow::anyhow!(
            "the exporter output is {} bytes, {} are needed (TS-0003 10.3.1)",
            x.len(),
            kdf::EXPORT_LEN
        )
    })?;
    let (key, rel) = kdf::export_split(exported);
    let (key_name, rel_name, id_name, id) = match a.kind {
        ExportKind::Bootstrap => (
            "Ke",
            "RelativeKeID",
            "KeID",
            kdf::ke_id_string(&rel, &a.fqdn),
        ),
        ExportKind::Connection => (
            "Kc",
            "KcID",
            "Key Identifier",
            kdf::kc_id_string(&rel, &a.fqdn),
        ),
    };
    // The identifier must be usable as a TLS psk_identity in the KpsaID form (10.5).
    KpsaId::parse(&id).map_err(|e| anyhow::anyhow!("--fqdn: {e}"))?;
    print_key(out, key_name, &key)?;
    writeln!(out, "{rel_name}: {}", kdf::hex_binary(&rel))?;
    writeln!(out, "{id_name}: {id}")?;
    Ok(())
}

fn e2e_keys(a: E2eKeysArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let k = a.kpsa.secret(env)?;
    let salt = hex_arg("salt", &a.salt, None)?;
    let m = kdf::e2e_master(&salt, &k);
    let keys = kdf::e2e_keys(&m);
    print_key(out, "Ke2e_master", &m)?;
    print_key(out, "Ke2e_msg_auth", &keys.msg_auth)?;
    print_key(out, "Ke2e_msg_conf", &keys.msg_conf)?;
    print_key(out, "Ke2e_att_auth", &keys.att_auth)?;
    print_key(out, "Ke2e_att_conf", &keys.att_conf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_entity_is_an_ae_id_or_a_cse_id() {
        for good in [
            "Clock-AE1",
            "S-meter",
            "/id-mn",
            "/id-in/Clock",
            "//m2m.example.com/id-in/Clock",
        ] {
            assert_eq!(entity_arg(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "",
            "C",
            "lock",
            "Clock AE",
            "/",
            "/id-in/",
            "//",
            "//sp",
            "/id-in//C",
            "Cé",
            "/id-in/cnt",
            "/id-in/lock",
            "/id-in/C",
            "/id-in/Ca/b",
            "C:x",
            "Clock@x",
            "//sp/id-in/cnt",
        ] {
            assert!(entity_arg(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;
    use clap::Parser;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use zeroize::Zeroizing;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: KeysArgs,
    }

    fn parse(argv: &[&str]) -> Result<KeysArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("m2m-keys").chain(argv.iter().copied())).map(|c| c.args)
    }

    const LOCK1: &str = "AE123456789012-Lock@in.provider.com";
    const LOCK2: &str = "AE123456789015-Lock@in.provider.com";
    const KEY1: &str = "1a2b3c4d5e6f7a8b";
    const KEY2: &str = "12345678abcdefab";

    struct Run {
        env: HashMap<String, String>,
    }

    impl Run {
        fn new(vars: &[(&str, &str)]) -> Run {
            Run {
                env: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        }
        fn run(&self, argv: &[&str]) -> anyhow::Result<String> {
            let args = parse(argv)?;
            let env = |n: &str| self.env.get(n).cloned().map(Zeroizing::new);
            let mut out = Vec::new();
            run_with(args, &env, &mut out)?;
            Ok(String::from_utf8(out).unwrap())
        }
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn parsing() {
        assert!(
            parse(&["init", "--keystore", "k"]).is_err(),
            "a key source is required"
        );
        assert!(parse(&[
            "init",
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--passphrase-env",
            "P"
        ])
        .is_err());
        assert!(parse(&[
            "init",
            "--keystore",
            "k",
            "--passphrase-env",
            "P",
            "--create-key-file"
        ])
        .is_err());
        assert!(parse(&[
            "init",
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--create-key-file"
        ])
        .is_ok());
        assert!(parse(&[
            "add-psk",
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--kpsa-id",
            LOCK1
        ])
        .is_err());
        assert!(parse(&[
            "add-psk",
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--kpsa-id",
            LOCK1,
            "--key",
            KEY1,
            "--key-env",
            "K"
        ])
        .is_err());
        let a = parse(&[
            "add-psk",
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--kpsa-id",
            LOCK1,
            "--key",
            KEY1,
        ])
        .unwrap();
        let d = format!("{a:?}");
        assert!(d.contains("<redacted>") && !d.contains(KEY1), "{d}");
    }

    #[test]
    fn key_file_session() {
        let dir = tempfile::tempdir().unwrap();
        let ks = dir.path().join("mn-cse.keystore");
        let kf = dir.path().join("mn-cse.key");
        let r = Run::new(&[("LOCK2_KEY", KEY2)]);
        let src = ["--keystore", s(&ks), "--key-file", s(&kf)];
        let with = |extra: &[&str], cmd: &str| -> Vec<String> {
            std::iter::once(cmd)
                .chain(src.iter().copied())
                .chain(extra.iter().copied())
                .map(str::to_string)
                .collect()
        };
        let run = |v: Vec<String>| r.run(&v.iter().map(String::as_str).collect::<Vec<_>>());

        let o = run(with(&["--create-key-file"], "init")).unwrap();
        assert!(
            o.contains("created key file") && o.contains("created keystore"),
            "{o}"
        );
        assert_eq!(
            std::fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(run(with(&[], "init"))
            .unwrap_err()
            .to_string()
            .contains("exists already"));

        let o = run(with(
            &["--kpsa-id", LOCK1, "--key", KEY1, "--entity", "Clock-AE1"],
            "add-psk",
        ))
        .unwrap();
        assert!(
            o.contains("added PSK") && o.contains("8 bytes") && !o.contains(KEY1),
            "{o}"
        );
        run(with(
            &[
                "--kpsa-id",
                LOCK2,
                "--key-env",
                "LOCK2_KEY",
                "--entity",
                "Cllock-AE2",
            ],
            "add-psk",
        ))
        .unwrap();
        let e = run(with(&["--kpsa-id", LOCK1, "--key", "aabb"], "add-psk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already") && e.contains("--replace"), "{e}");
        let e = run(with(&["--kpsa-id", "nope", "--key", KEY1], "add-psk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no '@'"), "{e}");
        let e = run(with(
            &["--kpsa-id", LOCK1, "--key", "1a2b3c4d5e6f7a8Z"],
            "add-psk",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("not hex") && !e.contains("1a2b3c4d"), "{e}");
        let e = run(with(&["--kpsa-id", LOCK1, "--key-env", "UNSET"], "add-psk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("UNSET") && e.contains("not set"), "{e}");

        let o = run(with(&[], "list")).unwrap();
        assert!(
            o.contains("ENTITY") && o.contains(LOCK1) && o.contains("Cllock-AE2"),
            "{o}"
        );
        assert!(!o.contains(KEY1) && !o.contains(KEY2), "{o}");

        // The keystore really holds the door-lock keys.
        let store = SoftwareKeystore::open(&ks, KeySource::KeyFile(kf.clone())).unwrap();
        assert_eq!(
            store.psk(LOCK1).unwrap().key,
            Secret::from_hex(KEY1).unwrap()
        );
        assert_eq!(
            store.psk(LOCK2).unwrap().entity_id.as_deref(),
            Some("Cllock-AE2")
        );

        let o = run(with(
            &["--kpsa-id", LOCK1, "--key", "aabbccdd", "--replace"],
            "add-psk",
        ))
        .unwrap();
        assert!(o.contains("replaced"), "{o}");
        let store = SoftwareKeystore::open(&ks, KeySource::KeyFile(kf.clone())).unwrap();
        assert_eq!(
            store.psk(LOCK1).unwrap().key.expose(),
            [0xaa, 0xbb, 0xcc, 0xdd]
        );
        assert_eq!(store.psk(LOCK1).unwrap().entity_id, None);

        let o = run(with(&["--kpsa-id", LOCK1], "remove-psk")).unwrap();
        assert!(o.contains("removed"), "{o}");
        assert!(run(with(&["--kpsa-id", LOCK1], "remove-psk"))
            .unwrap_err()
            .to_string()
            .contains("no PSK"));
        let o = run(with(&[], "list")).unwrap();
        assert!(!o.contains(LOCK1) && o.contains(LOCK2), "{o}");

        // Permissions are enforced.
        std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(run(with(&[], "list"))
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }

    #[test]
    fn passphrase_session() {
        let dir = tempfile::tempdir().unwrap();
        let ks = dir.path().join("ae.keystore");
        let r = Run::new(&[
            ("M2M_PW", "door lock demo"),
            ("BAD_PW", "door lock dem0"),
            ("EMPTY", ""),
        ]);
        let k = s(&ks);
        let o = r
            .run(&["init", "--keystore", k, "--passphrase-env", "M2M_PW"])
            .unwrap();
        assert!(o.contains("passphrase"), "{o}");
        r.run(&[
            "add-psk",
            "--keystore",
            k,
            "--passphrase-env",
            "M2M_PW",
            "--kpsa-id",
            LOCK1,
            "--key",
            KEY1,
        ])
        .unwrap();
        let o = r
            .run(&["list", "--keystore", k, "--passphrase-env", "M2M_PW"])
            .unwrap();
        assert!(o.contains(&format!("-       {LOCK1}")), "{o}");
        let e = r
            .run(&["list", "--keystore", k, "--passphrase-env", "BAD_PW"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wrong key or corrupted file") && !e.contains("dem"),
            "{e}"
        );
        let e = r
            .run(&["list", "--keystore", k, "--passphrase-env", "EMPTY"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = r
            .run(&["list", "--keystore", k, "--passphrase-env", "NOPE"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        let o = r
            .run(&["list", "--keystore", k, "--passphrase-env", "M2M_PW"])
            .unwrap();
        assert!(!o.contains(KEY1));
    }

    fn field<'a>(out: &'a str, name: &str) -> &'a str {
        let p = format!("{name}: ");
        out.lines()
            .find_map(|l| l.strip_prefix(p.as_str()))
            .unwrap_or_else(|| panic!("no {name:?} line in {out}"))
    }

    const KE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn derivations() {
        let r = Run::new(&[("KE", KE), ("BAD", "xyz")]);
        // Vectors of m2m_security::kdf's tests (computed with Python).
        let o = r.run(&["km", "--ke", KE, "--maf-id", "ＡＢＣ"]).unwrap();
        assert_eq!(
            field(&o, "Km"),
            "61c09a442919553e19c8f07c3b92ec12ff981df94cff4534141833a53b0a5a3c"
        );
        assert!(field(&o, "MAF-ID").starts_with("ABC (NFKC of"), "{o}");
        let o2 = r.run(&["km", "--ke-env", "KE", "--maf-id", "ABC"]).unwrap();
        assert_eq!(field(&o2, "Km"), field(&o, "Km"));
        assert_eq!(field(&o2, "MAF-ID"), "ABC");
        let o = r
            .run(&["kpsa", "--ke-env", "KE", "--id", "Ca\u{fb01}le"])
            .unwrap();
        assert_eq!(
            field(&o, "Kpsa"),
            "647ef2af42cadb400db93276a8dd6769abe0739cbc27d994113bde038ac7740b"
        );
        let o = r
            .run(&[
                "usage-key",
                "--ke",
                KE,
                "--suid",
                "13",
                "--target",
                "cafe\u{301}.example.com",
            ])
            .unwrap();
        assert_eq!(
            field(&o, "key"),
            "571dfc9b1bee6a5fd4c305c22af318a7197bd9579233866ccae63147ab4800a2"
        );
        assert!(field(&o, "SUID").contains("\"13\""), "{o}");
        let o = r
            .run(&[
                "group-key",
                "--kpsa",
                "1a2b3c4d5e6f7a8b",
                "--id",
                "AE123456789012-Lock",
                "--rand",
                "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF",
            ])
            .unwrap();
        assert_eq!(
            field(&o, "Ksx"),
            "b97c1d7841db2c84ff6c4f989c2ef5e5c6b4719bdd810393cdb4c528d346ab52"
        );
        let o = r
            .run(&[
                "session-esprim-key",
                "--key",
                "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
                "--receiver-rand",
                "000102030405060708090a0b0c0d0e0f",
                "--originator-rand",
                "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            ])
            .unwrap();
        assert_eq!(
            field(&o, "sessionESPrimKey"),
            "c8f01e899ed99689a37098a5e3a41d9fa7486a5177b11d0f5656a100093738ed"
        );
        let o = r
            .run(&[
                "e2e-keys",
                "--kpsa",
                &"0b".repeat(22),
                "--salt",
                "000102030405060708090a0b0c",
            ])
            .unwrap();
        assert_eq!(
            field(&o, "Ke2e_master"),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        );
        assert_eq!(
            field(&o, "Ke2e_att_conf"),
            "665fe20b6fa51a06f23a198a69b6735951ea812a3719ae104dae6fee69ddcf20"
        );
    }

    #[test]
    fn export_split_command() {
        let x: String = (0u8..48).map(|b| format!("{b:02x}")).collect();
        let r = Run::new(&[("X", &x)]);
        let o = r
            .run(&[
                "export-split",
                "--exported-env",
                "X",
                "--fqdn",
                "maf.example.com",
            ])
            .unwrap();
        assert_eq!(field(&o, "Kc"), &x[32..]);
        assert_eq!(field(&o, "KcID"), "000102030405060708090A0B0C0D0E0F");
        assert_eq!(
            field(&o, "Key Identifier"),
            "000102030405060708090A0B0C0D0E0F@maf.example.com"
        );
        let o = r
            .run(&[
                "export-split",
                "--exported",
                &x,
                "--fqdn",
                "mef.example.com",
                "--kind",
                "bootstrap",
            ])
            .unwrap();
        assert_eq!(field(&o, "Ke"), &x[32..]);
        assert_eq!(
            field(&o, "KeID"),
            "000102030405060708090A0B0C0D0E0F@mef.example.com"
        );
        let e = r
            .run(&[
                "export-split",
                "--exported",
                &x[..94],
                "--fqdn",
                "m.example.com",
            ])
            .unwrap_err()
            .to_string();
        assert!(e.contains("47 bytes") && !e.contains(&x[..20]), "{e}");
        let e = r
            .run(&["export-split", "--exported", &x, "--fqdn", "not an fqdn"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--fqdn"), "{e}");
    }

    #[test]
    fn derivation_errors_and_redaction() {
        let r = Run::new(&[("BAD", "xyz")]);
        assert!(
            parse(&["km", "--maf-id", "m"]).is_err(),
            "a key is required"
        );
        assert!(parse(&["km", "--ke", KE, "--ke-env", "KE", "--maf-id", "m"]).is_err());
        let a = parse(&["kpsa", "--ke", KE, "--id", "x"]).unwrap();
        let d = format!("{a:?}");
        assert!(d.contains("<redacted>") && !d.contains(KE), "{d}");
        let e = r
            .run(&["km", "--ke-env", "BAD", "--maf-id", "m"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ke-env BAD") && !e.contains("xyz"), "{e}");
        let e = r
            .run(&["km", "--ke-env", "UNSET", "--maf-id", "m"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not set"), "{e}");
        let e = r
            .run(&["km", "--ke", KE, "--maf-id", ""])
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = r
            .run(&["group-key", "--kpsa", KE, "--id", "a", "--rand", "0011"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 bytes, 16"), "{e}");
        let e = r
            .run(&[
                "session-esprim-key",
                "--key",
                KE,
                "--receiver-rand",
                "zz",
                "--originator-rand",
                "00",
            ])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--receiver-rand is not hex"), "{e}");
        assert!(parse(&["usage-key", "--ke", KE, "--suid", "-1", "--target", "t"]).is_err());
    }
}
