//! `m2m store`: the operator's steps on a stopped CSE's resource store. `encrypt` takes a store
//! written in the clear into encryption at rest (docs/SECURITY.md "The resource store encrypted
//! at rest"): a CSE never does this itself at start, a store found in the clear in its directory
//! need not be the one it wrote. `release-ae-id` frees an AE-ID that stays with its credential
//! (docs/SECURITY.md "An AE-ID stays with its credential").

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `m2m store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Encrypt the CSE's resource store, written in the clear, under the key of its `[storage]
    /// encryption_secret` (with the CSE stopped: its storage directory is locked while it runs).
    Encrypt {
        /// The CSE's configuration (as `m2m cse --config`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Free an AE-ID whose `<AE>` is gone but which stays with the credential it registered with,
    /// so that another credential may register it (with the CSE stopped).
    ReleaseAeId {
        /// The CSE's configuration (as `m2m cse --config`).
        #[arg(long)]
        config: PathBuf,
        /// The AE-ID, in any form (`Cmeter`, `/id-in/Cmeter`, `Sphone`...).
        ae_id: String,
    },
}

pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Encrypt { config } => {
            let cfg = m2m_cse::Config::load(&config)?;
            match m2m_cse::encrypt_store(&cfg)? {
                Some(done) => println!("{done}"),
                None => println!("the resource store was encrypted under that key already"),
            }
            Ok(())
        }
        StoreCommand::ReleaseAeId { config, ae_id } => {
            let cfg = m2m_cse::Config::load(&config)?;
            // The release is a security event of the CSE: it goes into the CSE's audit trail.
            crate::init_logging_with_trail(&cfg.audit_trail_path(), "cse")?;
            if m2m_cse::release_ae_id(&cfg, &ae_id)? {
                println!(
                    "{ae_id} released: the registration rules alone decide who registers it next"
                );
            } else {
                println!("{ae_id} was held by no credential");
            }
            Ok(())
        }
    }
}
