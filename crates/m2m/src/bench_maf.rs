//! `m2m bench-maf`: MAF key registrations and key retrievals per second over kept-alive
//! associations (a source on TLS-PSK/Km, a target on its certificate), the MAF in this process.

use crate::files::{toml_path, write_private};
use crate::rate::{self, Op};
use crate::scratch_pki;
use crate::spawned::{self, LISTENING_PREFIX_TLS};
use m2m_keyservices::maf::{server::system_clock, MafClient, MafConfig, RunningMaf};
use m2m_security::certificates::LeafName;
use m2m_security::credentials::Secret;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SP: &str = "m2m.example.com";
/// How long the CSE may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const MAF_FQDN: &str = "maf.keys.example.net";
const KM_ID: &str = "bench@maf.keys.example.net";
const KM_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(clap::Args, Debug)]
pub struct BenchMafArgs {
    /// Measured duration of each phase (seconds).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent kept-alive connections per phase.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
}

/// A CA, the MAF's FQDN certificate and the IN-CSE's certificate in `dir`.
fn pki(dir: &Path) -> anyhow::Result<()> {
    scratch_pki::write_pki(
        dir,
        "bench CA",
        SP,
        &[MAF_FQDN.into()],
        &[
            ("maf", LeafName::Fqdn(MAF_FQDN.into())),
            ("in", scratch_pki::cse("/id-in", SP)),
        ],
        &[],
    )?;
    write_private(&dir.join("storage.key"), "cd".repeat(32).as_bytes())?;
    Ok(())
}

pub async fn run(args: BenchMafArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("m2m-bench-maf-")
        .tempdir()?;
    let d = dir.path();
    pki(d)?;
    let cfg = format!(
        "fqdn = \"{MAF_FQDN}\"\nsp_fqdn = \"{SP}\"\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\nstorage = {}\nstorage_key_file = {}\n[[km]]\nclient_id = \"/id-in/Cbench\"\nkm_id = \"{KM_ID}\"\nkey = \"{KM_HEX}\"\n",
        toml_path(&d.join("maf.pem")),
        toml_path(&d.join("maf.key")),
        toml_path(&d.join("ca.pem")),
        toml_path(&d.join("store")),
        toml_path(&d.join("storage.key"))
    );
    let cfg = MafConfig::from_toml_str(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    let maf = RunningMaf::start(cfg, system_clock())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let url = format!("https://{}", maf.addr);
    let target = format!("//{SP}/id-in");

    // Registrations: client-supplied key values (the exporter gives one key per connection).
    let (url2, target2) = (url.clone(), target.clone());
    let (reg_rate, reg_failed) =
        rate::per_second(args.connections, args.seconds, None, move |_| {
            let (url, target) = (url2.clone(), target2.clone());
            async move {
                let km = Secret::from_hex(KM_HEX).expect("Km");
                let mut c = MafClient::connect_psk(&url, MAF_FQDN, KM_ID, &km)
                    .await
                    .expect("source association");
                let _ = c.register_client(None).await;
                let c = Arc::new(tokio::sync::Mutex::new(c));
                let f: Op = Box::new(move || {
                    let (c, target) = (c.clone(), target.clone());
                    Box::pin(async move {
                        let key = Secret::new(rand::random::<[u8; 32]>().to_vec());
                        c.lock()
                            .await
                            .register_key_value(12, &[target.as_str()], &key, None)
                            .await
                            .is_ok()
                    })
                });
                f
            }
        })
        .await;

    // Retrievals: one key, retrieved again and again by the target over its certificate association.
    let km = Secret::from_hex(KM_HEX).expect("Km");
    let mut source = MafClient::connect_psk(&url, MAF_FQDN, KM_ID, &km)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = source.register_client(None).await;
    let key = source
        .register_key(12, &[target.as_str()], None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let relative = key.relative_id.clone();
    let d2 = d.to_owned();
    let url3 = url.clone();
    let (get_rate, get_failed) =
        rate::per_second(args.connections, args.seconds, None, move |_| {
            let (url, d, relative) = (url3.clone(), d2.clone(), relative.clone());
            async move {
                let c = MafClient::connect_certificate(
                    &url,
                    MAF_FQDN,
                    &d.join("in.pem"),
                    &d.join("in.key"),
                    &d.join("ca.pem"),
                )
                .await
                .expect("target association");
                let c = Arc::new(tokio::sync::Mutex::new(c));
                let f: Op = Box::new(move || {
                    let (c, relative) = (c.clone(), relative.clone());
                    Box::pin(async move { c.lock().await.retrieve_key(&relative).await.is_ok() })
                });
                f
            }
        })
        .await;
    let (local_ms, maf_ms) = first_handshakes(d, &url, &target).await?;
    drop(maf);
    println!("{:<40} {:>12} {:>8}", "figure", "per second", "failed");
    println!(
        "{:<40} {reg_rate:>12.0} {reg_failed:>8}",
        format!("MAF key registrations ({} conns)", args.connections)
    );
    println!(
        "{:<40} {get_rate:>12.0} {get_failed:>8}",
        format!("MAF key retrievals ({} conns)", args.connections)
    );
    println!(
        "TLS-PSK handshake at the IN-CSE: {local_ms:.2} ms with a provisioned key, {maf_ms:.2} ms with a MAF key (added by the MAF retrieval: {:.2} ms)",
        maf_ms - local_ms
    );
    Ok(())
}

/// Mean duration of a full TLS-PSK handshake at an IN-CSE with a key of its own table and with
/// a fresh MAF key each time (the CSE retrieves Kc from the MAF during the handshake).
async fn first_handshakes(d: &Path, maf_url: &str, target: &str) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: usize = 200;
    let local_key = "0f0e0d0c0b0a09080706050403020100";
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {}\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\n[maf]\nurl = \"{maf_url}\"\nfqdn = \"{MAF_FQDN}\"\n[[security.psk]]\nentity = \"Clocal\"\nkpsa_id = \"local@bench.example.net\"\nkey = \"{local_key}\"\n",
        toml_path(&d.join("cse-data")),
        toml_path(&d.join("in.pem")),
        toml_path(&d.join("in.key")),
        toml_path(&d.join("ca.pem"))
    );
    let path = d.join("cse.toml");
    write_private(&path, cfg.as_bytes())?;
    let mut cmd = spawned::m2m(&["cse", "--config"])?;
    cmd.arg(&path).env("M2M_LOG", "error");
    let (cse, urls) = spawned::start(cmd, None, &[LISTENING_PREFIX_TLS], START_TIMEOUT)?;
    let addr = &urls[0];
    let psk_ctx = |id: &str, key: Vec<u8>| {
        m2m_security::tls::client_context(&m2m_security::tls::ClientTlsConfig {
            psk: Some((id.to_owned(), zeroize::Zeroizing::new(key))),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!(e))
    };
    let local_secret = Secret::from_hex(local_key).map_err(|e| anyhow::anyhow!(e))?;
    let local = psk_ctx("local@bench.example.net", local_secret.expose().to_vec())?;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        crate::bench_tls::handshake(addr, &local).await?;
    }
    let local_ms = start.elapsed().as_secs_f64() * 1000.0 / ROUNDS as f64;
    // A new key per round, registered beforehand, so that every handshake is a first one.
    let km = Secret::from_hex(KM_HEX).map_err(|e| anyhow::anyhow!(e))?;
    let mut source = MafClient::connect_psk(maf_url, MAF_FQDN, KM_ID, &km)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = source.register_client(None).await;
    let mut contexts = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let key = Secret::new(rand::random::<[u8; 32]>().to_vec());
        let reg = source
            .register_key_value(12, &[target], &key, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let psk = m2m_keyservices::sae::psk_of_kc(&key);
        contexts.push(psk_ctx(&reg.key_id, psk.expose().to_vec())?);
    }
    let start = Instant::now();
    for ctx in &contexts {
        crate::bench_tls::handshake(addr, ctx).await?;
    }
    let maf_ms = start.elapsed().as_secs_f64() * 1000.0 / ROUNDS as f64;
    drop(cse);
    Ok((local_ms, maf_ms))
}
