//! `m2m`: the oneM2M service layer with its security built in.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// mimalloc instead of the C library's allocator: a request allocates and frees many small
/// objects on two worker threads and the store's writer thread, where glibc's arenas spent a
/// tenth of the CPU (measured with `perf` under `m2m bench`). Alternating runs of
/// `m2m bench --clients 32 --phases create,la`: creates +11%, `la` +5% (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod ae;
mod ae_config;
mod association;
mod audit;
mod bench;
mod bench_bindings;
mod bench_coap;
mod bench_e2e;
mod bench_maf;
mod bench_tls;
mod bsf;
mod das;
mod demo;
mod e2e;
mod e2e_state;
mod esprim_keys;
mod files;
mod keys;
mod maf;
mod mef;
mod mosquitto;
mod mqtt_broker_config;
mod notification_receiver;
mod openssl_provider;
mod originator;
mod pki;
mod rate;
mod redacted;
mod request;
mod scratch_pki;
mod shutdown;
mod spawned;
mod store;
mod trust_anchors;
mod ttp;

#[derive(Parser)]
#[command(
    name = "m2m",
    version,
    about = "oneM2M service layer with security built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the door-lock home of the security guide: every entity a real process over real TLS,
    /// the story, then the attacks, each refused.
    Demo(demo::DemoArgs),
    /// Run a CSE (IN-CSE by default; MN-CSE with a config that says so).
    Cse(CseArgs),
    /// Run an AE as its own process: associate, register (or reuse the registration), create,
    /// subscribe, print each notification as a JSON line; ends on SIGINT/SIGTERM.
    Ae(ae::AeArgs),
    /// Send one request primitive to a CSE and print the response.
    Request(Box<request::RequestArgs>),
    /// Benchmark security associations: handshakes/s next to openssl s_server, TLS-PSK keep-alive retrieves, idle associations.
    BenchTls(bench_tls::BenchTlsArgs),
    /// Benchmark CoAP over DTLS: DTLS-PSK handshakes/s next to libcoap's coap-server, la over CoAP/DTLS next to HTTP/TLS, idle DTLS associations.
    BenchCoap(bench_coap::BenchCoapArgs),
    /// Benchmark the bindings: la retrieves/s and p99 over HTTP, WebSocket (TLS-PSK) and MQTT (through mosquitto), in one run.
    BenchBindings(bench_bindings::BenchBindingsArgs),
    /// Benchmark the MAF: key registrations and retrievals per second over kept-alive associations.
    BenchMaf(bench_maf::BenchMafArgs),
    /// Benchmark end-to-end security on one core: ESPrim protect+unprotect, JWS/JWE, Ksx derivations/s.
    BenchE2e(bench_e2e::BenchE2eArgs),
    /// Manage the software secure environment: an encrypted keystore of PSKs and secrets.
    Keys(keys::KeysArgs),
    /// Run the M2M Authentication Function: central key distribution (TS-0003 clause 8.8).
    Maf(maf::MafArgs),
    /// Run the M2M Enrolment Function: remote security provisioning (TS-0003 clause 8.3).
    Mef(mef::MefArgs),
    /// Run a GBA Bootstrapping Server Function (3GPP TS 33.220), provision its subscribers, or
    /// bootstrap a device with its USIM file.
    Bsf(bsf::BsfArgs),
    /// Write the MQTT server's configuration (mosquitto) for a CSE's MQTT binding: TLS-PSK, the
    /// PSK file, identities as user names, the topic ACL (TS-0010 clause 7).
    MqttBrokerConfig(mqtt_broker_config::Args),
    /// Run a Dynamic Authorization Server deciding from a policy file (TS-0003 clause 7.3.2.2).
    Das(das::DasArgs),
    /// Use the MAF's trusted third party: register and retrieve E2E credentials (seeds/001 5.6, 5.7).
    Ttp(Box<ttp::TtpArgs>),
    /// End-to-end security: JWK keys, ESData protect/open, secure group commands, group credentials.
    E2e(e2e::E2eArgs),
    /// Make certificates in the TS-0003 profile (root CA, CSE, AE, MAF, MEF) and show a certificate's oneM2M identity.
    Pki(pki::PkiArgs),
    /// Benchmark a CSE: contentInstance create, latest retrieve and discovery under keep-alive
    /// load, after an optional fill (N or CxN contentInstances).
    Bench(bench::BenchArgs),
    /// Read a CSE's audit trail: verify its hash chain, show its entries by event, field or time.
    Audit(audit::AuditArgs),
    /// A CSE's resource store: encrypt one written in the clear (`m2m store encrypt`).
    Store(store::StoreArgs),
}

#[derive(clap::Args)]
struct CseArgs {
    /// TOML configuration file; without it the embedded defaults are used. Relative paths in it
    /// (storage, certificates, keystore, keys) are read against the working directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the default configuration and exit: every setting with a comment, the optional ones
    /// commented out.
    #[arg(long)]
    print_default_config: bool,
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("M2M_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Logging to stderr as `M2M_LOG` says, and every `audit` event, whatever its level, to the
/// audit trail at `trail` as well.
pub(crate) fn init_logging_with_trail(
    trail: &std::path::Path,
    service: &str,
) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("M2M_LOG").unwrap_or_else(|_| "info".into());
    let audit =
        audit::layer(trail, service)?.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "audit"
        }));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(audit)
        .init();
    Ok(())
}

fn main() {
    // Errors end the process with their chain of causes, never a backtrace.
    // Before the process ends: the writer thread would be stopped with the last entries queued.
    let flush = audit::FlushOnExit;
    let result = run(Cli::parse());
    drop(flush);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cse(args) => {
            if args.print_default_config {
                print!("{}", m2m_cse::Config::default_text()?);
                return Ok(());
            }
            // Before OpenSSL starts and before any other thread: a key in a token signs
            // through OpenSSL's PKCS#11 provider.
            if let Some(p) = &args.config {
                openssl_provider::prepare(p, openssl_provider::Layout::Cse)?;
            }
            let cfg = match &args.config {
                Some(p) => m2m_cse::Config::load(p)?,
                None => m2m_cse::Config::default(),
            };
            init_logging_with_trail(&cfg.audit_trail_path(), "cse")?;
            runtime()?.block_on(run_cse(cfg))
        }
        Command::Demo(args) => {
            let code = runtime()?.block_on(demo::run(args))?;
            std::process::exit(code);
        }
        Command::Ae(args) => {
            if args.print_default_config {
                print!("{}", ae_config::DEFAULT_CONFIG);
                return Ok(());
            }
            // Before OpenSSL starts: the AE's certificate key may be in a token.
            if let Some(p) = &args.config {
                openssl_provider::prepare(p, openssl_provider::Layout::Ae)?;
            }
            init_logging();
            runtime()?.block_on(ae::run(args))
        }
        Command::Request(args) => {
            if let Some(p) = &args.ae {
                openssl_provider::prepare(p, openssl_provider::Layout::Ae)?;
            }
            let code = runtime()?.block_on(request::run(*args))?;
            std::process::exit(code);
        }
        Command::Bench(args) => runtime()?.block_on(bench::run(args)),
        Command::Audit(args) => {
            let code = audit::run(args)?;
            std::process::exit(code);
        }
        Command::Keys(args) => keys::run(args),
        Command::Store(args) => store::run(args),
        Command::MqttBrokerConfig(args) => mqtt_broker_config::run(args),
        Command::BenchTls(args) => runtime()?.block_on(bench_tls::run(args)),
        Command::BenchCoap(args) => runtime()?.block_on(bench_coap::run(args)),
        Command::BenchBindings(args) => runtime()?.block_on(bench_bindings::run(args)),
        Command::BenchMaf(args) => runtime()?.block_on(bench_maf::run(args)),
        Command::BenchE2e(args) => bench_e2e::run(args),
        Command::Pki(args) => pki::run(args),
        // Logging starts once their configuration says where the audit trail is.
        Command::Maf(args) => {
            // Before OpenSSL starts: the MAF's certificate key may be in a token.
            if let Some(p) = &args.config {
                openssl_provider::prepare(p, openssl_provider::Layout::KeyService)?;
            }
            runtime()?.block_on(maf::run(args))
        }
        Command::Ttp(args) => {
            let code = runtime()?.block_on(ttp::run(*args))?;
            std::process::exit(code);
        }
        Command::E2e(args) => {
            let code = runtime()?.block_on(e2e::run(args))?;
            std::process::exit(code);
        }
        Command::Mef(args) => {
            if let (None, Some(p)) = (&args.command, &args.config) {
                openssl_provider::prepare(p, openssl_provider::Layout::KeyService)?;
            }
            runtime()?.block_on(mef::run(args))
        }
        Command::Bsf(args) => runtime()?.block_on(bsf::run(args)),
        Command::Das(args) => runtime()?.block_on(das::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

async fn run_cse(cfg: m2m_cse::Config) -> anyhow::Result<()> {
    let role = cfg.cse.role;
    let running = m2m_cse::start(cfg).await?;
    let id = running.cse.identity();
    tracing::info!(cse_id = %id.cse_id, rn = %id.rn, role = ?role, "CSE started");
    // The line tests and tools wait for: the CSE serves requests from now on.
    if let Some(addr) = running.local_addr {
        println!("{}{addr}", spawned::LISTENING_PREFIX);
    }
    if let Some(addr) = running.tls_addr {
        println!("{}{addr}", spawned::LISTENING_PREFIX_TLS);
    }
    if let Some(addr) = running.dtls_addr {
        println!("{}{addr}", spawned::LISTENING_PREFIX_DTLS);
    }
    if let Some(addr) = running.coap_addr {
        println!("{}{addr}", spawned::LISTENING_PREFIX_COAP);
    }
    if let Some(addr) = running.wss_addr {
        println!("{}{addr}", spawned::LISTENING_PREFIX_WSS);
    }
    std::io::stdout().flush()?;
    shutdown::requested().await?;
    tracing::info!("shutting down");
    Ok(())
}
