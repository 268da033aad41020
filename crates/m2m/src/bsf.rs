//! `m2m bsf`: a GBA Bootstrapping Server Function (3GPP TS 33.220) as its own server, the
//! operator's subscriber provisioning, and a device's bootstrapping with its USIM file. The
//! interfaces are documented in `m2m_keyservices::bsf`.
//!
//! ```text
//! m2m bsf --print-default-config > bsf.toml
//! m2m bsf subscriber-add --config bsf.toml --impi 001010000000001@ims.example --ae-id CLock --usim-out lock.usim
//! m2m bsf --config bsf.toml
//! m2m bsf bootstrap --usim lock.usim --ub-url http://bsf.example:8080 --bsf-fqdn bsf.operator.example.net
//! ```

use anyhow::Context;
use m2m_keyservices::bsf::{self, BsfConfig, SoftwareUsim};
use rand::RngCore;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BsfArgs {
    #[command(subcommand)]
    pub command: Option<BsfCommand>,
    /// The BSF configuration (TOML). Relative paths in it are read against the file's directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum BsfCommand {
    /// Provision a subscriber (the operator's personalisation of a SIM): fresh random K and OPc
    /// in the BSF's store, and the device's USIM file (0600) with the same.
    SubscriberAdd(SubscriberAddArgs),
    /// The device side: bootstrap at a BSF with a USIM file (or reuse the key it keeps while
    /// fresh) and print the B-TID and its lifetime.
    Bootstrap(BootstrapArgs),
}

#[derive(clap::Args, Debug)]
pub struct SubscriberAddArgs {
    /// The BSF configuration whose store gets the subscriber.
    #[arg(long)]
    pub config: PathBuf,
    /// The subscriber's private identity (IMPI).
    #[arg(long)]
    pub impi: String,
    /// The AE-ID the device's AE uses (e.g. `CLock`): the association a NAF makes with its keys is
    /// bound to it.
    #[arg(long)]
    pub ae_id: Option<String>,
    /// Where to write the device's USIM file (refused when it exists).
    #[arg(long)]
    pub usim_out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// The device's USIM file.
    #[arg(long)]
    pub usim: PathBuf,
    /// The BSF's Ub URL, `http://host:port`.
    #[arg(long)]
    pub ub_url: String,
    /// The BSF's domain name (the realm and the B-TIDs' suffix).
    #[arg(long)]
    pub bsf_fqdn: String,
    /// Bootstrap anew even when the kept key is fresh.
    #[arg(long)]
    pub force: bool,
    /// Also print Ks_NAF for this NAF FQDN (a CSE's public domain name) and each PSK suite, for a
    /// TLS stack of your own (`openssl s_client -psk`): key material on stdout, as asked.
    #[arg(long)]
    pub ks_naf_for: Option<String>,
}

fn subscriber_add(a: SubscriberAddArgs) -> anyhow::Result<()> {
    let cfg = BsfConfig::load(&a.config).map_err(anyhow::Error::msg)?;
    if let Some(ae) = &a.ae_id {
        // An AE-ID-Stem (CLock, Sdevice: read by each NAF against its own CSE) or an SP-relative
        // or absolute AE-ID.
        let valid = if ae.contains('/') {
            let sp =
                m2m_core::SpId::parse(&cfg.sp_fqdn).map_err(|e| anyhow::anyhow!("{}", e.dbg))?;
            m2m_core::EntityId::parse(ae, &m2m_core::Home::sp(sp)).is_ok_and(|e| e.is_ae())
        } else {
            (ae.starts_with('C') || ae.starts_with('S'))
                && m2m_core::id::check_segment("AE-ID", ae).is_ok()
        };
        anyhow::ensure!(valid, "--ae-id {ae} is not an AE-ID");
    }
    let mut k = zeroize::Zeroizing::new([0u8; 16]);
    let mut opc = zeroize::Zeroizing::new([0u8; 16]);
    rand::rngs::OsRng.fill_bytes(&mut k[..]);
    rand::rngs::OsRng.fill_bytes(&mut opc[..]);
    // The device's file first: a store row without a USIM could never be used.
    SoftwareUsim::create(&a.usim_out, &a.impi, &k, &opc).map_err(anyhow::Error::msg)?;
    let store = bsf::open_store(&cfg).map_err(anyhow::Error::msg)?;
    if let Err(e) = store.add_subscriber(&a.impi, a.ae_id.as_deref(), &k, &opc, [0x80, 0x00]) {
        let _ = std::fs::remove_file(&a.usim_out);
        anyhow::bail!(e);
    }
    println!(
        "subscriber {} added (AE-ID {}); USIM file {}",
        a.impi,
        a.ae_id.as_deref().unwrap_or("-"),
        a.usim_out.display()
    );
    Ok(())
}

async fn bootstrap(a: BootstrapArgs) -> anyhow::Result<()> {
    let mut usim = SoftwareUsim::load(&a.usim).map_err(anyhow::Error::msg)?;
    let key = bsf::current_key(&a.ub_url, &a.bsf_fqdn, &mut usim, a.force)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("B-TID {}", key.b_tid);
    println!("lifetime {}", key.expires.to_rfc3339());
    if let Some(naf) = &a.ks_naf_for {
        use m2m_security::gba::key_derivation::{ua_tls_psk, NafId};
        for (suite, code) in [
            ("PSK-AES128-CBC-SHA256", 0x00AE),
            ("PSK-AES128-CCM8", 0xC0A8),
        ] {
            let ks_naf = key
                .ks_naf(&NafId {
                    fqdn: naf.clone(),
                    ua_protocol: ua_tls_psk(code),
                })
                .map_err(anyhow::Error::msg)?;
            println!("Ks_NAF {suite} {}", hex::encode(&ks_naf[..]));
        }
    }
    Ok(())
}

/// Runs the BSF until Ctrl-C; prints `m2m-bsf ub http://ADDR` (Ub) and then `m2m-bsf listening
/// https://ADDR` (Zn) once it accepts connections.
pub async fn run(args: BsfArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BsfCommand::SubscriberAdd(a)) => return subscriber_add(a),
        Some(BsfCommand::Bootstrap(a)) => return bootstrap(a).await,
        None => {}
    }
    if args.print_default_config {
        print!("{}", bsf::DEFAULT_CONFIG);
        return Ok(());
    }
    let path = args.config.context("--config is required")?;
    let cfg = BsfConfig::load(&path).map_err(anyhow::Error::msg)?;
    crate::init_logging_with_trail(&cfg.storage.join("audit.log"), "bsf")?;
    let fqdn = cfg.fqdn.clone();
    let b = bsf::Bsf::new(cfg).map_err(anyhow::Error::msg)?;
    let running = b.start().await.map_err(anyhow::Error::msg)?;
    tracing::info!(fqdn = %fqdn, ub = %running.ub_addr, zn = %running.zn_addr, "BSF started");
    // Ub first: the listening line (the one tools wait for) comes last.
    println!("m2m-bsf ub http://{}", running.ub_addr);
    println!("m2m-bsf listening https://{}", running.zn_addr);
    std::io::stdout().flush()?;
    crate::shutdown::requested().await?;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
