//! `m2m mqtt-broker-config`: the configuration of the MQTT server (mosquitto) that carries a
//! CSE's MQTT binding (TS-0010 clause 7), from the CSE's own configuration: the listener of
//! `[mqtt] broker` with TLS-PSK capped at TLS 1.2, the PSK file (the CSE's psk lookup table),
//! the PSK identity as the user name, and the first topic ACL (the CSE keeps it afterwards).

use crate::files::write_private;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The CSE's configuration (its `[mqtt]` table and its PSK rows).
    #[arg(long)]
    config: PathBuf,
    /// Directory the files are written to (created): mosquitto.conf, openssl.cnf, psk_file, and
    /// the ACL unless `[mqtt]` acl_file places it elsewhere.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = m2m_cse::Config::load(&args.config)?;
    std::fs::create_dir_all(&args.out)?;
    let files = m2m_cse::mqtt_broker::broker_files(&cfg, &args.out)?;
    let conf = args.out.join("mosquitto.conf");
    std::fs::write(&conf, &files.conf)?;
    std::fs::write(args.out.join("openssl.cnf"), &files.openssl_cnf)?;
    // Every key of the psk lookup table: readable by the server's user only (written anew).
    let _ = std::fs::remove_file(args.out.join("psk_file"));
    write_private(&args.out.join("psk_file"), files.psk_file.as_bytes())?;
    if let Some(dir) = files
        .acl_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&files.acl_path, &files.acl)?;
    println!(
        "MQTT server configuration written to {}\nrun it with: OPENSSL_CONF={} mosquitto -c {}",
        args.out.display(),
        std::path::absolute(args.out.join("openssl.cnf"))?.display(),
        std::path::absolute(&conf)?.display()
    );
    Ok(())
}
