//! `m2m store encrypt`: the operator's step that takes a CSE's resource store written in the
//! clear into encryption at rest (docs/SECURITY.md "The resource store encrypted at rest"). A CSE
//! never does this itself at start: a store found in the clear in its directory need not be the
//! one it wrote.

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
    }
}
