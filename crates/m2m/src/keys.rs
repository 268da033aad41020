//! `m2m keys`: the software secure environment from the command line (keystore files, PSKs).
//!
//! ```text
//! m2m keys init       --keystore FILE (--key-file F [--create-key-file] | --passphrase-env VAR)
//! m2m keys add-psk    --keystore FILE <key source> --kpsa-id ID (--key HEX | --key-env VAR)
//!                     [--entity AE-ID|CSE-ID] [--replace]
//! m2m keys list       --keystore FILE <key source>
//! m2m keys remove-psk --keystore FILE <key source> --kpsa-id ID
//! ```
//!
//! The keystore format is described on `m2m_security::secure_environment::SoftwareKeystore`. No subcommand
//! prints key material; `list` shows entities and KpsaIDs only. A key given with `--key` is visible to other
//! local users in the process list while the command runs; `--key-env` avoids that.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use m2m_security::credentials::{KpsaId, PskEntry, Secret};
use m2m_security::secure_environment::{
    create_key_file, KeySource, KeystoreError, SecureEnvironment, SoftwareKeystore,
};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// `m2m keys`: manage keystores and credentials.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `m2m keys` subcommands. Key derivations (`km`, ...) join later.
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

/// `m2m keys add-psk`.
#[derive(Args, Debug, Clone)]
pub struct AddPskArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The KpsaID (TLS psk_identity): Issuer_Relative_KpsaID@Issuer-FQDN.
    #[arg(long, value_name = "ID")]
    pub kpsa_id: String,
    /// The key in hex (visible in the process list: prefer --key-env).
    #[arg(long, value_name = "HEX", value_parser = redacted, required_unless_present = "key_env",
          conflicts_with = "key_env")]
    pub key: Option<Redacted>,
    /// Name of an environment variable holding the key in hex.
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
    /// The AE-ID or CSE-ID this credential authenticates.
    #[arg(long, value_name = "AE-or-CSE-ID")]
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

/// A command-line value that is secret: zeroed on drop, `Debug` redacted, never echoed by clap errors.
#[derive(Clone)]
pub struct Redacted(Zeroizing<String>);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Never fails, so clap never repeats the value in an error; it is checked later without echo.
fn redacted(s: &str) -> Result<Redacted, std::convert::Infallible> {
    Ok(Redacted(Zeroizing::new(s.to_string())))
}

/// Runs `m2m keys`, reading environment variables of the process and printing to stdout.
pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok().map(Zeroizing::new);
    let stdout = std::io::stdout();
    run_with(args, &env, &mut stdout.lock())
}

type Env<'a> = &'a dyn Fn(&str) -> Option<Zeroizing<String>>;

fn run_with(args: KeysArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Init(a) => init(a, env, out),
        KeysCommand::AddPsk(a) => add_psk(a, env, out),
        KeysCommand::List(a) => list(a, env, out),
        KeysCommand::RemovePsk(a) => remove_psk(a, env, out),
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
    let key = match (&a.key, &a.key_env) {
        (Some(k), None) => Secret::from_hex(&k.0).map_err(|e| anyhow::anyhow!("--key: {e}"))?,
        (None, Some(var)) => {
            let Some(k) = env(var) else {
                bail!("environment variable {var} (--key-env) is not set");
            };
            Secret::from_hex(&k).map_err(|e| anyhow::anyhow!("--key-env {var}: {e}"))?
        }
        _ => bail!("give exactly one of --key and --key-env"),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

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
}
