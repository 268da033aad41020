//! `m2m mef`: the M2M Enrolment Function (remote security provisioning, TS-0003 clause 8.3) as its own
//! server. The API is documented in `m2m_keyservices::mef`.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MefArgs {
    #[command(subcommand)]
    pub command: Option<MefCommand>,
    /// TOML configuration file (mode 0600 when it holds `[[kpm]]` keys). Relative paths in it are
    /// read against the file's directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum MefCommand {
    /// Revoke enrolments at a running MEF (an administrator's certificate, one of its `admins`):
    /// their Ke and every key derived from it stop working.
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ke_id", "enrolee"])))]
pub struct RevokeArgs {
    /// The MEF, e.g. <https://mef.keys.example.net:8443>.
    #[arg(long)]
    pub url: String,
    /// The MEF's FQDN, which its certificate must name.
    #[arg(long)]
    pub fqdn: String,
    /// The administrator's certificate chain (PEM, leaf first) and key.
    #[arg(long)]
    pub certificate: PathBuf,
    #[arg(long)]
    pub private_key: PathBuf,
    /// The root of trust for the MEF's certificate.
    #[arg(long)]
    pub trusted_ca: PathBuf,
    /// The enrolment to revoke, by KeID.
    #[arg(long = "ke-id")]
    pub ke_id: Option<String>,
    /// Revoke every enrolment of this enrolee.
    #[arg(long)]
    pub enrolee: Option<String>,
}

/// `m2m mef revoke`: prints each KeID revoked.
async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    use m2m_keyservices::mef::store::Revocation;
    let addr = m2m_keyservices::mef::client::mef_addr(&a.url).map_err(anyhow::Error::msg)?;
    let mut mef = m2m_keyservices::mef::MefClient::connect_certificate(
        &addr,
        &a.fqdn,
        &a.certificate,
        &a.private_key,
        &a.trusted_ca,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.url))?;
    let which = match (a.ke_id, a.enrolee) {
        (Some(k), _) => Revocation::KeId(k),
        (None, Some(e)) => Revocation::Enrolee(e),
        (None, None) => anyhow::bail!("name --ke-id or --enrolee"),
    };
    let revoked = mef
        .revoke(&which)
        .await
        .map_err(|e| anyhow::anyhow!("revocation refused: {e}"))?;
    for ke_id in revoked {
        println!("revoked {ke_id}");
    }
    Ok(())
}

/// Runs the MEF until Ctrl-C; prints `m2m-mef listening https://ADDR` once it accepts connections.
pub async fn run(args: MefArgs) -> anyhow::Result<()> {
    if let Some(MefCommand::Revoke(a)) = args.command {
        return revoke(a).await;
    }
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
    crate::shutdown::requested().await?;
    tracing::info!("shutting down");
    // Requests in progress finish first ([limits] shutdown_grace_ms).
    running.shutdown().await;
    Ok(())
}
