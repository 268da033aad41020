//! `m2m bench-coap`: the CoAP binding over DTLS (TS-0008, TS-0003 clause 10.2.1), next to a
//! reference measured the same way on the same machine: full DTLS-PSK handshakes per second of
//! the CSE and of libcoap's `coap-server-openssl` (the same client), `la` retrieve over CoAP/DTLS
//! next to HTTP over TLS on the same CSE and store, and the memory of many idle DTLS associations.

use crate::bench_tls::{prepare, print_rows, retrieves_per_second, rss_mib, Row, PSK_IDENTITY};
use crate::files::{toml_path, write_private};
use crate::rate::{self, Op};
use crate::spawned::{self, Spawned, LISTENING_PREFIX_DTLS, LISTENING_PREFIX_TLS};
use anyhow::Context;
use m2m_client::{Client, PeerPolicy, TlsSettings};
use m2m_security::credentials::Secret;
use m2m_security::tls::{client_context, dtls_client_context, ClientTlsConfig};
use m2m_transport::{DatagramChannel, PeerCheck};
use openssl::ssl::SslContext;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use zeroize::Zeroizing;

/// The bench's key: libcoap takes a PSK as a command-line argument, so it has no zero byte.
const PSK_HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f91";
/// The suite both servers are measured with: the one TS-0003 makes mandatory for DTLS.
const SUITE: &str = "PSK-AES128-CCM8";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct BenchCoapArgs {
    /// Measured duration of each phase (seconds).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent handshaking clients.
    #[arg(long, default_value_t = 4)]
    pub handshake_clients: usize,
    /// Clients of the retrieve phases, each on its own association.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Idle DTLS-PSK associations to hold open while measuring the CSE's memory (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
}

fn config(suite: &str) -> anyhow::Result<ClientTlsConfig> {
    let key = Secret::from_hex(PSK_HEX).map_err(|e| anyhow::anyhow!(e))?;
    Ok(ClientTlsConfig {
        cipher_suites: vec![suite.into()],
        psk: Some((PSK_IDENTITY.into(), Zeroizing::new(key.expose().to_vec()))),
        ..Default::default()
    })
}

fn dtls_context() -> anyhow::Result<SslContext> {
    dtls_client_context(&config(SUITE)?).map_err(|e| anyhow::anyhow!(e))
}

/// A client with the bench PSK for https (TLS) and coaps (DTLS), one association per server.
fn psk_client() -> Client {
    let tls = client_context(&config("PSK-AES128-CBC-SHA256").expect("PSK")).expect("TLS context");
    Client::new()
        .with_tls(TlsSettings {
            context: tls,
            peer: PeerPolicy::PreSharedKey,
        })
        .with_dtls(TlsSettings {
            context: dtls_context().expect("DTLS context"),
            peer: PeerPolicy::PreSharedKey,
        })
}

/// The CSE with TLS and DTLS listeners and the bench's PSK row; the guard, https and coaps
/// addresses.
fn start_cse(dir: &Path, idle: usize) -> anyhow::Result<(Spawned, String, String)> {
    let cfg = format!(
        "[http]\nlisten = \"\"\n[storage]\npath = {}\n[limits]\nmax_connections = {}\n[tls]\nlisten = \"127.0.0.1:0\"\ndtls_listen = \"127.0.0.1:0\"\nmax_handshakes_per_source = 64\n[[security.psk]]\nentity = \"Cbench\"\nkpsa_id = \"{PSK_IDENTITY}\"\nkey = \"{PSK_HEX}\"\n",
        toml_path(&dir.join("data")),
        (idle + 1024).max(16_384),
    );
    let path = dir.join("cse.toml");
    write_private(&path, cfg.as_bytes())?;
    let mut cmd = spawned::m2m(&["cse", "--config"])?;
    cmd.arg(&path).env("M2M_LOG", "error");
    let (cse, mut urls) = spawned::start(
        cmd,
        None,
        &[LISTENING_PREFIX_TLS, LISTENING_PREFIX_DTLS],
        START_TIMEOUT,
    )?;
    let coaps = urls.pop().unwrap_or_default();
    let https = urls.pop().unwrap_or_default();
    Ok((cse, https, coaps))
}

/// `coap-server-openssl` with the same PSK on `port + 1` (its DTLS port).
fn start_libcoap(port: u16) -> anyhow::Result<Spawned> {
    let key = Secret::from_hex(PSK_HEX).map_err(|e| anyhow::anyhow!(e))?;
    use std::os::unix::ffi::OsStringExt;
    let child = Command::new("coap-server-openssl")
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-v", "0"])
        .arg("-k")
        .arg(std::ffi::OsString::from_vec(key.expose().to_vec()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start coap-server-openssl (Debian package libcoap3-bin)")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(child.into())
}

/// Full DTLS handshakes (each on a new socket, close_notify after) per second.
async fn handshakes_per_second(
    server: SocketAddr,
    ctx: SslContext,
    clients: usize,
    seconds: u64,
) -> (f64, u64) {
    rate::per_second(clients, seconds, None, |_| {
        let ctx = ctx.clone();
        async move {
            let op: Op = Box::new(move || {
                let ctx = ctx.clone();
                Box::pin(async move {
                    match DatagramChannel::dtls(
                        &ctx,
                        server,
                        &PeerCheck::PreSharedKey,
                        HANDSHAKE_TIMEOUT,
                    )
                    .await
                    {
                        Ok(mut ch) => {
                            ch.close().await;
                            true
                        }
                        Err(_) => false,
                    }
                })
            });
            op
        }
    })
    .await
}

/// User and system CPU time of a process so far (Linux: /proc/PID/stat, in USER_HZ = 100 ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: count fields after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn free_udp_pair() -> anyhow::Result<u16> {
    // libcoap takes port for CoAP and port + 1 for DTLS: find two free ones in a row.
    for _ in 0..50 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two free UDP ports in a row")
}

pub async fn run(args: BenchCoapArgs) -> anyhow::Result<()> {
    // Each idle association is a socket here.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::Builder::new()
        .prefix("m2m-bench-coap-")
        .tempdir()?;
    let (cse, https, coaps) = start_cse(dir.path(), args.idle)?;
    let dtls_addr: SocketAddr = coaps.parse().context("coaps address")?;
    let mut rows: Vec<Row> = Vec::new();

    let ctx = dtls_context()?;
    let cpu = cpu_seconds(cse.id());
    let (ours, fail_ours) =
        handshakes_per_second(dtls_addr, ctx.clone(), args.handshake_clients, args.seconds).await;
    let our_cpu = cpu_seconds(cse.id()) - cpu;
    let port = free_udp_pair()?;
    let server = start_libcoap(port)?;
    let cpu = cpu_seconds(server.id());
    let (theirs, fail_theirs) = handshakes_per_second(
        ([127, 0, 0, 1], port + 1).into(),
        ctx,
        args.handshake_clients,
        args.seconds,
    )
    .await;
    let their_cpu = cpu_seconds(server.id()) - cpu;
    drop(server);
    rows.push((
        format!("DTLS-PSK ({SUITE}) handshakes/s"),
        format!("{ours:.0} (failed {fail_ours})"),
        ours / theirs.max(1.0),
        format!("coap-server-openssl {theirs:.0} (failed {fail_theirs})"),
    ));
    // libcoap's server runs on one thread, the CSE on every core: per CPU-second of the server
    // process is the comparison per busy core.
    let (ours_per_cpu, theirs_per_cpu) = (
        ours * args.seconds as f64 / our_cpu.max(0.01),
        theirs * args.seconds as f64 / their_cpu.max(0.01),
    );
    rows.push((
        "DTLS-PSK handshakes per server CPU-second".into(),
        format!("{ours_per_cpu:.0} ({our_cpu:.1} s CPU)"),
        ours_per_cpu / theirs_per_cpu.max(1.0),
        format!("coap-server-openssl {theirs_per_cpu:.0} ({their_cpu:.1} s CPU)"),
    ));

    let https_url = format!("https://{https}");
    let coaps_url = format!("coaps://{coaps}");
    let (from, to) = prepare(&psk_client(), &https_url, "C", "bench").await?;
    let (h, hf) = retrieves_per_second(
        psk_client,
        &https_url,
        &to,
        &from,
        args.clients,
        args.seconds,
    )
    .await;
    let (c, cf) = retrieves_per_second(
        psk_client,
        &coaps_url,
        &to,
        &from,
        args.clients,
        args.seconds,
    )
    .await;
    rows.push((
        format!(
            "la retrieve, {} clients, HTTP over TLS-PSK req/s",
            args.clients
        ),
        format!("{h:.0} (failed {hf})"),
        1.0,
        String::new(),
    ));
    rows.push((
        format!(
            "la retrieve, {} clients, CoAP over DTLS-PSK req/s",
            args.clients
        ),
        format!("{c:.0} (failed {cf})"),
        c / h.max(1.0),
        "ratio to HTTP over TLS".into(),
    ));

    if args.idle > 0 {
        let before = rss_mib(cse.id());
        let ctx = dtls_context()?;
        let mut held = Vec::with_capacity(args.idle);
        for _ in 0..args.idle {
            match DatagramChannel::dtls(
                &ctx,
                dtls_addr,
                &PeerCheck::PreSharedKey,
                HANDSHAKE_TIMEOUT,
            )
            .await
            {
                Ok(ch) => held.push(ch),
                Err(e) => {
                    eprintln!(
                        "m2m bench-coap: idle association {} failed: {e}",
                        held.len()
                    );
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_mib(cse.id());
        rows.push((
            format!("{} idle DTLS-PSK associations", held.len()),
            format!("RSS {after:.1} MiB (before {before:.1})"),
            0.0,
            String::new(),
        ));
        drop(held);
    }
    drop(cse);

    print_rows(&rows);
    Ok(())
}
