//! `m2m maf`: runs the M2M Authentication Function (TS-0003 clause 8.8) as its own server; see
//! `m2m_keyservices::maf` for the API it serves.
//!
//! ```text
//! m2m maf --print-default-config > maf.toml && chmod 600 maf.toml
//! m2m maf --config maf.toml
//! ```

use anyhow::Context;
use clap::Args;
use m2m_keyservices::maf::{server::system_clock, MafConfig, RunningMaf, DEFAULT_CONFIG};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MafArgs {
    /// The MAF configuration (TOML, mode 0600: it holds Km keys). Relative paths in it are read
    /// against the file's directory.
    #[arg(long, required_unless_present = "print_default_config")]
    pub config: Option<PathBuf>,
    /// Print an example configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

pub async fn run(args: MafArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let path = args.config.context("--config is required")?;
    let cfg = MafConfig::from_file(&path).map_err(anyhow::Error::msg)?;
    crate::init_logging_with_trail(&cfg.storage.join("audit.log"), "maf")?;
    let maf = RunningMaf::start(cfg, system_clock())
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("starting the MAF of {}", path.display()))?;
    println!("m2m-maf listening https://{}", maf.addr);
    crate::shutdown::requested().await?;
    // Requests in progress finish first ([limits] shutdown_grace_ms).
    maf.shutdown().await;
    Ok(())
}
