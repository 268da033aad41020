//! `m2m keys token`: the keys of a PKCS#11 token (the secure environment's hardware back end,
//! seeds/002 clause 6.4.2): generate, import, list without values, destroy.

use super::{AddPskKey, Env};
use anyhow::Context;
use clap::{Args, Subcommand};
use m2m_security::credentials::{KpsaId, PskEntry};
use m2m_security::secure_environment::pkcs11::{KeyKind, Pkcs11Token, TokenConfig};
use m2m_security::secure_environment::SecureEnvironment;
use std::io::Write;
use std::path::PathBuf;

/// `m2m keys token`: which token, and what to do with it.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The token vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "LIBRARY")]
    pub module: PathBuf,
    /// The token's label.
    #[arg(long, value_name = "LABEL")]
    pub token: String,
    /// File (mode 0600) holding the user PIN.
    #[arg(long, value_name = "FILE")]
    pub pin_file: PathBuf,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Generate a P-256 key pair inside the token (the private key never leaves it); prints the
    /// `pkcs11:` URI for `[tls]` private_key and the public key for `m2m pki issue --public-key`.
    GenerateKey {
        #[arg(long)]
        label: String,
    },
    /// Print the public key of a key pair in the token (PEM).
    PublicKey {
        #[arg(long)]
        label: String,
    },
    /// Store a PSK (Kpsa) under its KpsaID, optionally bound to an AE-ID or CSE-ID: sensitive,
    /// handed to OpenSSL for one handshake at a time.
    AddPsk {
        /// The KpsaID (TLS psk_identity): Issuer_Relative_KpsaID@Issuer-FQDN.
        #[arg(long, value_name = "ID")]
        kpsa_id: String,
        #[command(flatten)]
        key: AddPskKey,
        /// The AE-ID or CSE-ID this credential authenticates.
        #[arg(long, value_name = "AE-or-CSE-ID", value_parser = super::entity_arg)]
        entity: Option<String>,
    },
    /// Store a named secret; without --extractable it never leaves the token (HMAC inside only).
    AddSecret {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        key: AddPskKey,
        /// The secret may be wrapped out to the process that uses it (as a PSK is).
        #[arg(long)]
        extractable: bool,
    },
    /// Generate a 32-byte named secret inside the token, never extractable.
    GenerateSecret {
        #[arg(long)]
        name: String,
    },
    /// List the keys: label, kind, whether readable or extractable, never a value.
    List,
    /// Destroy the keys labelled LABEL (`kpsa:<KpsaID>` for a PSK, `secret:<name>`).
    Destroy {
        #[arg(long)]
        label: String,
    },
}

pub fn run(a: TokenArgs, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    let token = Pkcs11Token::open(&TokenConfig {
        module: a.module,
        token: a.token,
        pin_file: a.pin_file,
    })?;
    match a.command {
        TokenCommand::GenerateKey { label } => {
            let public = token.generate_ec_key(&label)?;
            writeln!(out, "private key: {}", token.private_key_uri(&label))?;
            out.write_all(&public.public_key_to_pem()?)?;
        }
        TokenCommand::PublicKey { label } => {
            out.write_all(&token.public_key(&label)?.public_key_to_pem()?)?;
        }
        TokenCommand::AddPsk {
            kpsa_id,
            key,
            entity,
        } => {
            let kpsa_id = KpsaId::parse(&kpsa_id).map_err(anyhow::Error::msg)?;
            let key = key.secret(env)?;
            let n = key.len();
            token.import_psk(&PskEntry {
                entity_id: entity.clone(),
                kpsa_id: kpsa_id.clone(),
                key,
            })?;
            writeln!(
                out,
                "added PSK {kpsa_id} ({n} bytes){} to the token {}",
                entity.map(|e| format!(" for {e}")).unwrap_or_default(),
                token.token_label()
            )?;
        }
        TokenCommand::AddSecret {
            name,
            key,
            extractable,
        } => {
            token.import_secret(&name, &key.secret(env)?, extractable)?;
            writeln!(
                out,
                "added secret:{name} to the token {}",
                token.token_label()
            )?;
        }
        TokenCommand::GenerateSecret { name } => {
            token.generate_secret(&name)?;
            writeln!(
                out,
                "generated secret:{name} in the token {}",
                token.token_label()
            )?;
        }
        TokenCommand::List => {
            writeln!(
                out,
                "token {} (security level {})",
                token.token_label(),
                token.security_level()
            )?;
            for k in token.list()? {
                if k.kind == KeyKind::EcPublic {
                    writeln!(out, "{}\t{}\tpublic", k.kind, k.label)?;
                    continue;
                }
                writeln!(
                    out,
                    "{}\t{}\t{}{}{}{}",
                    k.kind,
                    k.label,
                    if k.sensitive { "sensitive" } else { "readable" },
                    if k.extractable {
                        ", extractable"
                    } else {
                        ", never leaves the token"
                    },
                    if k.generated_in_token {
                        ", generated in the token"
                    } else {
                        ""
                    },
                    k.entity.map(|e| format!(", for {e}")).unwrap_or_default()
                )?;
            }
        }
        TokenCommand::Destroy { label } => {
            let n = token
                .destroy(&label)
                .with_context(|| format!("destroying {label}"))?;
            if n == 0 {
                anyhow::bail!("no key labelled {label:?} in the token");
            }
            writeln!(out, "destroyed {n} object(s) labelled {label}")?;
        }
    }
    Ok(())
}
