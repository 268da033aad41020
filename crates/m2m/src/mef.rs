//! `m2m mef`: the M2M Enrolment Function (remote security provisioning, TS-0003 clause 8.3) as its own
//! server. The API is documented in `m2m_keyservices::mef`.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct MefArgs {
    /// TOML configuration file (mode 0600 when it holds [[kpm]] keys). Relative paths in it are
    /// read against the file's directory.
    #[arg(long, required_unless_present = "print_default_config")]
    pub config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

/// Runs the MEF until Ctrl-C; prints `m2m-mef listening https://ADDR` once it accepts connections.
pub async fn run(args: MefArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        print!("{}", m2m_keyservices::mef::DEFAULT_CONFIG);
        return Ok(());
    }
    let path = args.config.context("--config is required")?;
    let cfg = m2m_keyservices::mef::MefConfig::load(&path).map_err(anyhow::Error::msg)?;
    // Beside the enrolment store (a file), named after it: never another service's trail.
    let mut trail = cfg.storage.clone().into_os_string();
    trail.push(".audit.log");
    crate::init_logging_with_trail(std::path::Path::new(&trail), "mef")?;
    let fqdn = cfg.fqdn.clone();
    let mef = m2m_keyservices::mef::Mef::new(cfg).map_err(anyhow::Error::msg)?;
    let running = mef.start().await.map_err(anyhow::Error::msg)?;
    let addr = running.addr;
    tracing::info!(fqdn = %fqdn, %addr, "MEF started");
    // The line tests and tools wait for: the MEF serves requests from now on.
    println!("m2m-mef listening https://{addr}");
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    // Requests in progress finish first ([limits] shutdown_grace_ms).
    running.shutdown().await;
    Ok(())
}
