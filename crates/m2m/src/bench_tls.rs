//! `m2m bench-tls`: security association figures of the CSE, next to `openssl s_server` measured
//! the same way on the same machine: full TLS-PSK and certificate handshakes per second, latest
//! retrieve over a TLS-PSK keep-alive association against plain HTTP, and the memory of many idle
//! associations.

use crate::files::{toml_path, write_private};
use crate::rate::{self, Op};
use crate::scratch_pki;
use crate::spawned::{self, Spawned, LISTENING_PREFIX, LISTENING_PREFIX_TLS};
use anyhow::Context;
use m2m_client::{Client, TlsSettings};
use m2m_core::{Operation, Request, ResourceType};
use m2m_security::credentials::Secret;
use m2m_security::tls::{client_context, client_ssl, ClientTlsConfig};
use openssl::ssl::SslContext;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

pub(crate) const PSK_IDENTITY: &str = "bench-psk@bench.m2m.example.com";
pub(crate) const PSK_HEX: &str = "00112233445566778899aabbccddeeff";
const SP: &str = "m2m.example.com";
/// How long the CSE may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct BenchTlsArgs {
    /// Measured duration of each phase (seconds).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent handshaking clients.
    #[arg(long, default_value_t = 4)]
    pub handshake_clients: usize,
    /// Keep-alive clients of the retrieve phases.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Idle TLS-PSK associations to hold open while measuring the CSE's memory (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Also measure a CSE whose keys live in a PKCS#11 token (a SoftHSM2 token made for the
    /// run: needs softhsm2 and pkcs11-provider): certificate handshakes signing in the token,
    /// TLS-PSK handshakes with the key unwrapped from it, next to the same CSE's software keys.
    #[arg(long)]
    pub token: bool,
    /// The PKCS#11 module of --token.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pub token_module: PathBuf,
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, the IN-CSE's certificate (the server) and the MN-CSE's (the client) in `dir`; with
/// `token_key`, also `in-token.pem` certifying that public key for the IN-CSE.
fn make_pki(
    dir: &Path,
    token_key: Option<&openssl::pkey::PKeyRef<openssl::pkey::Public>>,
) -> anyhow::Result<Pki> {
    let certified: Vec<_> = token_key
        .map(|k| ("in-token", scratch_pki::cse("/id-in", SP), k))
        .into_iter()
        .collect();
    scratch_pki::write_pki(
        dir,
        "bench root",
        SP,
        &[],
        &[
            ("in", scratch_pki::cse("/id-in", SP)),
            ("mn", scratch_pki::cse("/id-mn", SP)),
        ],
        &certified,
    )?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("in.pem"),
        server_key: dir.join("in.key"),
        client_cert: dir.join("mn.pem"),
        client_key: dir.join("mn.key"),
    })
}

/// Starts the CSE with a plain and a TLS listener; returns the guard and both addresses.
fn start_cse(dir: &Path, pki: &Pki) -> anyhow::Result<(Spawned, String, String)> {
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {}\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = {}\ntrusted_ca = {}\nmax_handshakes_per_source = 64\n[[security.psk]]\nentity = \"Cbench\"\nkpsa_id = \"{PSK_IDENTITY}\"\nkey = \"{PSK_HEX}\"\n",
        toml_path(&dir.join("data")),
        toml_path(&pki.server_cert),
        toml_path(&pki.server_key),
        toml_path(&pki.ca)
    );
    let path = dir.join("cse.toml");
    write_private(&path, cfg.as_bytes())?;
    let mut cmd = spawned::m2m(&["cse", "--config"])?;
    cmd.arg(&path).env("M2M_LOG", "error");
    let (cse, mut urls) = spawned::start(
        cmd,
        None,
        &[LISTENING_PREFIX, LISTENING_PREFIX_TLS],
        START_TIMEOUT,
    )?;
    let https = urls.pop().unwrap_or_default();
    let http = urls.pop().unwrap_or_default();
    Ok((cse, http, https))
}

/// Starts `openssl s_server` in the same profile: PSK, or a certificate with client verification.
fn start_s_server(port: u16, pki: &Pki, psk: bool) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-accept",
        &port.to_string(),
        "-tls1_2",
        "-quiet",
        "-naccept",
        "1000000",
    ]);
    if psk {
        cmd.args([
            "-nocert",
            "-psk",
            PSK_HEX,
            "-psk_identity",
            PSK_IDENTITY,
            "-cipher",
            "PSK-AES128-CBC-SHA256",
        ]);
    } else {
        cmd.args(["-cipher", "ECDHE-ECDSA-AES128-SHA256", "-Verify", "2"]);
        cmd.arg("-cert")
            .arg(&pki.server_cert)
            .arg("-key")
            .arg(&pki.server_key)
            .arg("-CAfile")
            .arg(&pki.ca);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start openssl s_server")?;
    // Wait until it accepts connections.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child.into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("openssl s_server did not start")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn psk_context() -> anyhow::Result<SslContext> {
    let key = Secret::from_hex(PSK_HEX).map_err(|e| anyhow::anyhow!(e))?;
    let key = Zeroizing::new(key.expose().to_vec());
    client_context(&ClientTlsConfig {
        cipher_suites: vec!["PSK-AES128-CBC-SHA256".into()],
        psk: Some((PSK_IDENTITY.into(), key)),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(e))
}

fn cert_context(pki: &Pki) -> anyhow::Result<SslContext> {
    client_context(&ClientTlsConfig {
        cipher_suites: vec!["ECDHE-ECDSA-AES128-SHA256".into()],
        certificate_chain: Some(pki.client_cert.clone()),
        private_key: Some(pki.client_key.clone()),
        trusted_ca: Some(pki.ca.clone()),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(e))
}

/// One full handshake (new TCP connection, no resumption); the connection is then closed.
pub(crate) async fn handshake(
    addr: &str,
    ctx: &SslContext,
) -> anyhow::Result<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let ssl = client_ssl(ctx, None).map_err(|e| anyhow::anyhow!(e))?;
    let mut s = tokio_openssl::SslStream::new(ssl, tcp)?;
    Pin::new(&mut s).connect().await?;
    Ok(s)
}

/// Full handshakes per second with `clients` concurrent handshakers.
async fn handshakes_per_second(
    addr: &str,
    ctx: SslContext,
    clients: usize,
    seconds: u64,
) -> (f64, u64) {
    rate::per_second(clients, seconds, None, |_| {
        let (addr, ctx) = (addr.to_owned(), ctx.clone());
        async move {
            let op: Op = Box::new(move || {
                let (addr, ctx) = (addr.clone(), ctx.clone());
                Box::pin(async move { handshake(&addr, &ctx).await.is_ok() })
            });
            op
        }
    })
    .await
}

fn request(op: Operation, to: &str, from: &str) -> Request {
    Request::new(op, to, Some(from.to_owned()), m2m_client::next_request_id())
}

/// Registers an AE with a container holding one instance; returns the container's address.
pub(crate) async fn prepare(
    client: &Client,
    url: &str,
    from: &str,
    rn: &str,
) -> anyhow::Result<(String, String)> {
    let mut ae = request(Operation::Create, "cse-in", from);
    ae.ty = Some(ResourceType::Ae);
    ae.pc = Some(json!({"m2m:ae": {"rn": rn, "api": "Nbench", "rr": false, "srv": ["3"]}}));
    let rsp = client
        .send(url, &ae)
        .await?
        .into_result()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let aei = rsp
        .pc
        .as_ref()
        .and_then(|p| p["m2m:ae"]["aei"].as_str())
        .context("no aei")?
        .to_owned();
    let mut cnt = request(Operation::Create, &format!("cse-in/{rn}"), &aei);
    cnt.ty = Some(ResourceType::Container);
    cnt.pc = Some(json!({"m2m:cnt": {"rn": "cnt"}}));
    client
        .send(url, &cnt)
        .await?
        .into_result()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cin = request(Operation::Create, &format!("cse-in/{rn}/cnt"), &aei);
    cin.ty = Some(ResourceType::ContentInstance);
    cin.pc = Some(json!({"m2m:cin": {"con": "LOCKED"}}));
    client
        .send(url, &cin)
        .await?
        .into_result()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((aei, format!("cse-in/{rn}/cnt/la")))
}

/// Latest-retrieve requests per second over `clients` keep-alive connections (after a warm-up
/// that opens them).
pub(crate) async fn retrieves_per_second(
    make: impl Fn() -> Client,
    url: &str,
    to: &str,
    from: &str,
    clients: usize,
    seconds: u64,
) -> (f64, u64) {
    let warm_up = Some(Duration::from_millis(500));
    rate::per_second(clients, seconds, warm_up, |_| {
        let client = Arc::new(make());
        let (url, to, from) = (url.to_owned(), to.to_owned(), from.to_owned());
        async move {
            let op: Op = Box::new(move || {
                let (client, url, to, from) =
                    (client.clone(), url.clone(), to.clone(), from.clone());
                Box::pin(async move {
                    let req = request(Operation::Retrieve, &to, &from);
                    matches!(client.send(&url, &req).await, Ok(r) if r.rsc.is_success())
                })
            });
            op
        }
    })
    .await
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    crate::bench::rss_kib(pid).map_or(0.0, |k| k as f64 / 1024.0)
}

pub async fn run(args: BenchTlsArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("m2m-bench-tls-")
        .tempdir()?;
    let token = match args.token {
        true => Some(BenchToken::make(dir.path(), &args.token_module)?),
        false => None,
    };
    let pki = make_pki(dir.path(), token.as_ref().map(|t| t.public.as_ref()))?;
    let (cse, http, https) = start_cse(dir.path(), &pki)?;
    let mut rows: Vec<Row> = Vec::new();
    if let Some(token) = &token {
        rows.extend(token_rows(&args, token, dir.path(), &pki, &https).await?);
    }

    for (label, psk) in [
        ("TLS-PSK handshakes/s", true),
        ("certificate handshakes/s", false),
    ] {
        let ctx = if psk {
            psk_context()?
        } else {
            cert_context(&pki)?
        };
        let (ours, fail_ours) =
            handshakes_per_second(&https, ctx.clone(), args.handshake_clients, args.seconds).await;
        let port = free_port()?;
        let server = start_s_server(port, &pki, psk)?;
        let (theirs, fail_theirs) = handshakes_per_second(
            &format!("127.0.0.1:{port}"),
            ctx,
            args.handshake_clients,
            args.seconds,
        )
        .await;
        drop(server);
        rows.push((
            label.into(),
            format!("{ours:.0} (failed {fail_ours})"),
            ours / theirs.max(1.0),
            format!("openssl s_server {theirs:.0} (failed {fail_theirs})"),
        ));
    }

    let plain_client = Client::new;
    let psk_client = || {
        Client::new().with_tls(TlsSettings {
            context: psk_context().expect("PSK context"),
            peer: m2m_client::PeerPolicy::PreSharedKey,
        })
    };
    let (plain_from, plain_to) = prepare(
        &plain_client(),
        &format!("http://{http}"),
        "Cplain",
        "plain",
    )
    .await?;
    let (psk_from, psk_to) =
        prepare(&psk_client(), &format!("https://{https}"), "C", "overpsk").await?;
    let (p, pf) = retrieves_per_second(
        plain_client,
        &format!("http://{http}"),
        &plain_to,
        &plain_from,
        args.clients,
        args.seconds,
    )
    .await;
    let (t, tf) = retrieves_per_second(
        psk_client,
        &format!("https://{https}"),
        &psk_to,
        &psk_from,
        args.clients,
        args.seconds,
    )
    .await;
    rows.push((
        format!("la retrieve, {} clients, plain HTTP req/s", args.clients),
        format!("{p:.0} (failed {pf})"),
        1.0,
        String::new(),
    ));
    rows.push((
        format!("la retrieve, {} clients, TLS-PSK req/s", args.clients),
        format!("{t:.0} (failed {tf})"),
        t / p.max(1.0),
        "ratio to plain HTTP".into(),
    ));

    if args.idle > 0 {
        let before = rss_mib(cse.id());
        let ctx = psk_context()?;
        let mut held = Vec::with_capacity(args.idle);
        for _ in 0..args.idle {
            match handshake(&https, &ctx).await {
                Ok(s) => held.push(s),
                Err(e) => {
                    eprintln!("m2m bench-tls: idle association {} failed: {e}", held.len());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_mib(cse.id());
        rows.push((
            format!("{} idle TLS-PSK associations", held.len()),
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

/// A SoftHSM2 token made for the run: a P-256 key generated in it and the bench's PSK stored
/// in it, through `m2m keys token` (the token's SOFTHSM2_CONF is its own).
struct BenchToken {
    conf: PathBuf,
    pin_file: PathBuf,
    module: PathBuf,
    public: openssl::pkey::PKey<openssl::pkey::Public>,
}

const TOKEN_LABEL: &str = "bench";

impl BenchToken {
    fn make(dir: &Path, module: &Path) -> anyhow::Result<BenchToken> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        let init = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--pin", "bench-pin", "--so-pin", "bench-so-pin"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .context("cannot run softhsm2-util (apt-get install softhsm2)")?;
        anyhow::ensure!(
            init.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let pin_file = dir.join("token.pin");
        write_private(&pin_file, b"bench-pin\n")?;
        let keys =
            |args: &[&str], env: &[(&str, &str)]| token_keys(&conf, &pin_file, module, args, env);
        let generated = keys(&["generate-key", "--label", "bench-key"], &[])?;
        let public = openssl::pkey::PKey::public_key_from_pem(generated.as_bytes())
            .context("m2m keys token generate-key printed no public key")?;
        keys(
            &[
                "add-psk",
                "--kpsa-id",
                PSK_IDENTITY,
                "--entity",
                "Cbench",
                "--key-env",
                "BENCH_PSK",
            ],
            &[("BENCH_PSK", PSK_HEX)],
        )?;
        Ok(BenchToken {
            conf,
            pin_file,
            module: module.to_path_buf(),
            public,
        })
    }
}

/// `m2m keys token ... ARGS` on the bench's token: its stdout.
fn token_keys(
    conf: &Path,
    pin_file: &Path,
    module: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut cmd = spawned::m2m(&["keys", "token", "--token", TOKEN_LABEL])?;
    cmd.arg("--module")
        .arg(module)
        .arg("--pin-file")
        .arg(pin_file)
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .envs(env.iter().copied());
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "m2m keys token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The token CSE next to the software one (`https`), in one run: certificate and TLS-PSK
/// handshakes per second, alternating, twice each.
async fn token_rows(
    args: &BenchTlsArgs,
    token: &BenchToken,
    dir: &Path,
    pki: &Pki,
    https: &str,
) -> anyhow::Result<Vec<Row>> {
    let data = dir.join("token-data");
    let cfg = format!(
        "[http]\nlisten = \"\"\n[storage]\npath = {}\n[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {}\nprivate_key = \"pkcs11:token={TOKEN_LABEL};object=bench-key;type=private\"\ntrusted_ca = {}\nmax_handshakes_per_source = 64\n[security.pkcs11]\nmodule = {}\ntoken = \"{TOKEN_LABEL}\"\npin_file = {}\n",
        toml_path(&data),
        toml_path(&dir.join("in-token.pem")),
        toml_path(&pki.ca),
        toml_path(&token.module),
        toml_path(&token.pin_file),
    );
    let path = dir.join("cse-token.toml");
    write_private(&path, cfg.as_bytes())?;
    let mut cmd = spawned::m2m(&["cse", "--config"])?;
    cmd.arg(&path)
        .env("M2M_LOG", "error")
        .env("SOFTHSM2_CONF", &token.conf)
        .env_remove("OPENSSL_CONF");
    let (mut token_cse, mut urls) =
        spawned::start(cmd, None, &[LISTENING_PREFIX_TLS], START_TIMEOUT)?;
    let token_https = urls.pop().unwrap_or_default();
    let mut rows = Vec::new();
    for (label, psk) in [
        ("certificate handshakes/s, key in the token", false),
        ("TLS-PSK handshakes/s, key unwrapped from the token", true),
    ] {
        let ctx = if psk {
            psk_context()?
        } else {
            cert_context(pki)?
        };
        let (mut in_token, mut software, mut failed) = (0.0, 0.0, 0);
        for _ in 0..2 {
            let (t, ft) = handshakes_per_second(
                &token_https,
                ctx.clone(),
                args.handshake_clients,
                args.seconds,
            )
            .await;
            let (s, fs) =
                handshakes_per_second(https, ctx.clone(), args.handshake_clients, args.seconds)
                    .await;
            in_token += t / 2.0;
            software += s / 2.0;
            failed += ft + fs;
            // A token CSE that died measures as refused handshakes: say so, with its stderr.
            if let Some(why) = token_cse.exited() {
                anyhow::bail!("the CSE with its keys in the token exited: {why}");
            }
        }
        rows.push((
            label.into(),
            format!("{in_token:.0} (failed {failed})"),
            in_token / software.max(1.0),
            format!("the same CSE with its key in a file: {software:.0}"),
        ));
    }
    drop(token_cse);
    Ok(rows)
}

/// One row of a bench-tls / bench-coap table: figure, the CSE's value, ratio (0: none), reference.
pub(crate) type Row = (String, String, f64, String);

/// Prints the rows, the label column as wide as the longest label.
pub(crate) fn print_rows(rows: &[Row]) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    println!(
        "{:<width$} {:>28} {:>7}  reference",
        "figure", "CSE", "ratio"
    );
    for (label, value, ratio, reference) in rows {
        let ratio = if *ratio > 0.0 {
            format!("{ratio:.2}")
        } else {
            String::new()
        };
        println!("{label:<width$} {value:>28} {ratio:>7}  {reference}");
    }
}
