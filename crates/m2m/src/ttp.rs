//! `m2m ttp`: a client of the MAF's trusted third party (seeds/001 clauses 5.6, 5.7; the API is in
//! `m2m_keyservices::maf::ttp`): register, retrieve, update and de-register E2E credentials as a MAF
//! client (TLS-PSK on Km, or a certificate), printing the MAF's answer as one JSON object.
//!
//! ```text
//! m2m ttp --maf-url URL --maf-fqdn FQDN --cert mn.pem --key mn.key --ca ca.pem \
//!     register --subject /mn-cse-123456/Csensor1 --usage esdata-integrity --jwk @sensor1.pub.jwk --requester /Sapp
//! KM=... m2m ttp --maf-url URL --maf-fqdn FQDN --km-id app@FQDN --km-env KM get ID
//! ```
//!
//! Exit codes as `m2m request`: 0 done, 1 the MAF refused (stdout: `{"rsc", "error"}`), 2 the MAF
//! could not be reached or authenticated.

use crate::association::SecretSource;
use crate::redacted::{redacted, Redacted};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use m2m_keyservices::maf::{CredentialRequest, CredentialUsage, Jwk, MafClient, MafError};
use m2m_security::credentials::Secret;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TtpArgs {
    /// The MAF (https://host:port).
    #[arg(long)]
    maf_url: String,
    /// Its FQDN (SNI, certificate name, suffix of credential IDs).
    #[arg(long)]
    maf_fqdn: String,
    /// TLS-PSK: the KmID ...
    #[arg(long, requires = "km_env", conflicts_with = "cert")]
    km_id: Option<String>,
    /// ... and the environment variable holding Km in hex.
    #[arg(long)]
    km_env: Option<String>,
    /// Certificate: the AE-ID/CSE-ID certificate chain (PEM) ...
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// ... its private key ...
    #[arg(long)]
    key: Option<PathBuf>,
    /// ... and the root of trust for the MAF's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: TtpCommand,
}

#[derive(Subcommand, Debug)]
enum TtpCommand {
    /// Register an E2E credential on behalf of a device (or yourself); prints its credentialID.
    Register {
        /// The device's AE-ID/CSE-ID (SP-relative or absolute).
        #[arg(long)]
        subject: String,
        #[arg(long, value_enum)]
        usage: UsageArg,
        /// The JWK as JSON, or @FILE (keep symmetric keys out of the process list: use a file).
        /// Without it the TTP generates a 256-bit oct key and prints it.
        #[arg(long, value_parser = redacted)]
        jwk: Option<Redacted>,
        /// An AE-ID/CSE-ID allowed to retrieve the credential; repeatable.
        #[arg(long = "requester", required = true)]
        requesters: Vec<String>,
        /// oneM2M timestamp (YYYYMMDDTHHMMSS, UTC); default and cap by the MAF's `[ttp]` section.
        #[arg(long)]
        expiration_time: Option<String>,
    },
    /// Retrieve a credential by its ID (the registrant or a requester); prints it with its JWK.
    Get { id: String },
    /// Change the requesters and/or the expiration time (the registrant only).
    Update {
        id: String,
        #[arg(long = "requester")]
        requesters: Vec<String>,
        #[arg(long)]
        expiration_time: Option<String>,
    },
    /// De-register a credential (the registrant only).
    Delete { id: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UsageArg {
    Esprim,
    EsdataIntegrity,
    EsdataConfidentiality,
}

impl From<UsageArg> for CredentialUsage {
    fn from(u: UsageArg) -> Self {
        match u {
            UsageArg::Esprim => CredentialUsage::Esprim,
            UsageArg::EsdataIntegrity => CredentialUsage::EsdataIntegrity,
            UsageArg::EsdataConfidentiality => CredentialUsage::EsdataConfidentiality,
        }
    }
}

/// Runs `m2m ttp`; returns the process exit code.
pub async fn run(args: TtpArgs) -> anyhow::Result<i32> {
    // Local mistakes (options, an unset variable, a bad JWK) are errors (exit 1) before any
    // connection; only failing to reach or authenticate to the MAF is exit 2.
    let jwk = local_jwk(&args.command)?;
    let auth = MafAuth::from_args(&args)?;
    let mut maf = match auth.connect(&args.maf_url, &args.maf_fqdn).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("m2m ttp: {e:#}");
            return Ok(2);
        }
    };
    match call(&mut maf, &args.command, jwk.as_ref()).await {
        Ok(v) => {
            println!("{v}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("m2m ttp: {e}");
            match e.status {
                Some(_) => {
                    println!("{}", json!({ "rsc": e.rsc, "error": e.reason }));
                    Ok(1)
                }
                None => Ok(2),
            }
        }
    }
}

/// The JWK of a registration, read and checked before anything is sent.
fn local_jwk(command: &TtpCommand) -> anyhow::Result<Option<Jwk>> {
    let TtpCommand::Register {
        jwk: Some(text),
        usage,
        ..
    } = command
    else {
        return Ok(None);
    };
    let text = zeroize::Zeroizing::new(match text.expose().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --jwk file {path}"))?,
        None => text.expose().to_owned(),
    });
    let jwk = Jwk::from_json(text.as_bytes(), (*usage).into())
        .map_err(|why| anyhow::anyhow!("--jwk: {why}"))?;
    Ok(Some(jwk))
}

/// How this client authenticates to the MAF, with its key material loaded.
enum MafAuth<'a> {
    Psk {
        km_id: &'a str,
        km: Secret,
    },
    Certificate {
        cert: &'a PathBuf,
        key: &'a PathBuf,
        ca: &'a PathBuf,
    },
}

impl<'a> MafAuth<'a> {
    /// Checks the options and loads Km: no network yet.
    fn from_args(args: &'a TtpArgs) -> anyhow::Result<Self> {
        Ok(
            match (&args.km_id, &args.km_env, &args.cert, &args.key, &args.ca) {
                (Some(km_id), Some(var), None, _, _) => MafAuth::Psk {
                    km_id,
                    km: SecretSource::Env(var.clone()).load()?,
                },
                (None, _, Some(cert), Some(key), Some(ca)) => {
                    MafAuth::Certificate { cert, key, ca }
                }
                _ => bail!("authenticate to the MAF with --km-id/--km-env or --cert/--key/--ca"),
            },
        )
    }

    async fn connect(&self, url: &str, fqdn: &str) -> Result<MafClient, MafError> {
        match self {
            MafAuth::Psk { km_id, km } => MafClient::connect_psk(url, fqdn, km_id, km).await,
            MafAuth::Certificate { cert, key, ca } => {
                MafClient::connect_certificate(url, fqdn, cert, key, ca).await
            }
        }
    }
}

async fn call(
    maf: &mut MafClient,
    command: &TtpCommand,
    jwk: Option<&Jwk>,
) -> Result<Value, MafError> {
    let credential = match command {
        TtpCommand::Register {
            subject,
            usage,
            requesters,
            expiration_time,
            ..
        } => {
            // Registration needs a valid Client Registration of this identity.
            maf.register_client(None).await?;
            let requesters: Vec<&str> = requesters.iter().map(String::as_str).collect();
            maf.register_credential(&CredentialRequest {
                subject_id: subject,
                usage: (*usage).into(),
                jwk,
                requester_ids: &requesters,
                expiration_time: expiration_time.as_deref(),
            })
            .await?
        }
        TtpCommand::Get { id } => maf.retrieve_credential(id).await?,
        TtpCommand::Update {
            id,
            requesters,
            expiration_time,
        } => {
            let requesters: Vec<&str> = requesters.iter().map(String::as_str).collect();
            let requesters = (!requesters.is_empty()).then_some(&requesters[..]);
            maf.update_credential(id, requesters, expiration_time.as_deref())
                .await?
        }
        TtpCommand::Delete { id } => {
            maf.deregister_credential(id).await?;
            return Ok(json!({ "credentialID": id, "deleted": true }));
        }
    };
    Ok(credential.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ttp: TtpArgs,
    }

    fn parse(args: &[&str]) -> TtpArgs {
        let mut argv = vec![
            "ttp",
            "--maf-url",
            "https://127.0.0.1:1",
            "--maf-fqdn",
            "maf",
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().ttp
    }

    fn run_now(args: TtpArgs) -> anyhow::Result<i32> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(args))
    }

    #[test]
    fn local_mistakes_are_errors_before_any_connection() {
        // An unset variable is the user's mistake (exit 1), not an unreachable MAF (exit 2).
        let args = parse(&[
            "--km-id",
            "app@maf",
            "--km-env",
            "M2M_TEST_TTP_UNSET_KM",
            "get",
            "x",
        ]);
        let err = run_now(args).unwrap_err();
        assert_eq!(err.to_string(), "$M2M_TEST_TTP_UNSET_KM is not set");
        let err = run_now(parse(&["get", "x"])).unwrap_err();
        assert!(err.to_string().contains("authenticate to the MAF"), "{err}");
        // Nothing listens on port 1: with the options right, that is exit 2.
        std::env::set_var("M2M_TEST_TTP_KM", "00".repeat(32));
        let args = parse(&[
            "--km-id",
            "app@maf",
            "--km-env",
            "M2M_TEST_TTP_KM",
            "get",
            "x",
        ]);
        assert_eq!(run_now(args).unwrap(), 2);
    }

    #[test]
    fn a_raw_jwk_never_shows_in_debug() {
        let secret = r#"{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0"}"#;
        let args = parse(&[
            "--km-id",
            "a@maf",
            "--km-env",
            "KM",
            "register",
            "--subject",
            "/x",
            "--usage",
            "esprim",
            "--jwk",
            secret,
            "--requester",
            "/y",
        ]);
        let shown = format!("{args:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
