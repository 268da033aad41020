//! `m2m bench-bindings`: the MQTT (TS-0010) and WebSocket (TS-0020) bindings next to HTTP on the
//! same CSE and store, in one run: `la` retrieves per second and their p99 latency, each client
//! an AE with its own PSK row, over HTTP on TLS-PSK straight to the CSE, over a WebSocket on
//! TLS-PSK straight to the CSE, and over MQTT through mosquitto (TLS-PSK from each client to the
//! server, and from the server's session to the CSE).

use crate::files::{toml_path, write_private};
use crate::spawned::{self, LISTENING_PREFIX_TLS, LISTENING_PREFIX_WSS};
use m2m_client::{Client, MqttSettings, PeerPolicy, TlsSettings};
use m2m_core::{Operation, Request, ResourceType};
use m2m_security::tls::{client_context, ClientTlsConfig};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CSE_IDENTITY: &str = "bench-cse@bench.m2m.example.com";

#[derive(clap::Args, Debug)]
pub struct BenchBindingsArgs {
    /// Measured duration of each phase (seconds).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Clients (AEs), each on its own association, one request at a time.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
}

/// The key of client `i` (`i` = usize::MAX: the CSE's own at the MQTT server).
fn key_hex(i: usize) -> String {
    format!(
        "{:032x}",
        0xb0_0000_0000_0000_0000_0000_0000_0001u128 ^ ((i as u128) << 8)
    )
}

fn identity(i: usize) -> String {
    format!("bench{i}@bench.m2m.example.com")
}

fn aei(i: usize) -> String {
    format!("Sbench{i}")
}

/// The client of AE `i`: its PSK for https and for mqtts (the CSE-ID for the topics).
fn client(i: usize) -> anyhow::Result<Client> {
    let key = hex::decode(key_hex(i))?;
    let context = client_context(&ClientTlsConfig {
        cipher_suites: vec!["PSK-AES128-CBC-SHA256".into()],
        psk: Some((identity(i), Zeroizing::new(key))),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let tls = TlsSettings {
        context,
        peer: PeerPolicy::PreSharedKey,
    };
    Ok(Client::new()
        .with_timeout(Duration::from_secs(10))
        .with_tls(tls.clone())
        .with_mqtt(MqttSettings {
            tls,
            credential: Some(format!("12-{}", identity(i))),
            cse_id: "/id-in".into(),
        }))
}

fn cse_config(dir: &Path, mqtt_port: u16, clients: usize) -> String {
    let mut cfg = format!(
        "[http]\nlisten = \"\"\n[storage]\npath = {data}\n[limits]\nmax_connections = 4096\n\
         [tls]\nlisten = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\nmax_handshakes_per_source = 64\n\
         [mqtt]\nbroker = \"mqtts://127.0.0.1:{mqtt_port}\"\npsk_identity = \"{CSE_IDENTITY}\"\n\
         acl_file = {acl}\nbroker_pid_file = {pid}\n\
         [[security.psk]]\nkpsa_id = \"{CSE_IDENTITY}\"\nkey = \"{cse_key}\"\n",
        data = toml_path(&dir.join("data")),
        acl = toml_path(&dir.join("acl")),
        pid = toml_path(&dir.join("mosquitto.pid")),
        cse_key = key_hex(usize::MAX),
    );
    for i in 0..clients {
        cfg.push_str(&format!(
            "[[security.psk]]\nentity = \"{}\"\nkpsa_id = \"{}\"\nkey = \"{}\"\n",
            aei(i),
            identity(i),
            key_hex(i)
        ));
    }
    cfg
}

fn request(op: Operation, to: &str, from: &str) -> Request {
    Request::new(op, to, Some(from.to_owned()), m2m_client::next_request_id())
}

/// AE 0 registers, makes a container everyone may read, with one instance; `la` of it.
async fn prepare(client: &Client, url: &str) -> anyhow::Result<String> {
    let from = aei(0);
    let steps = [
        (
            "cse-in",
            ResourceType::Ae,
            json!({"m2m:ae": {"api": "Nbench", "rr": false, "srv": ["3"]}}),
        ),
        (
            "cse-in/Sbench0",
            ResourceType::AccessControlPolicy,
            json!({"m2m:acp": {"rn": "all", "pv": {"acr": [
                {"acor": [from.clone()], "acop": 63}, {"acor": ["all"], "acop": 2}]},
                   "pvs": {"acr": [{"acor": [from.clone()], "acop": 63}]}}}),
        ),
        (
            "cse-in/Sbench0",
            ResourceType::Container,
            json!({"m2m:cnt": {"rn": "cnt", "acpi": ["cse-in/Sbench0/all"]}}),
        ),
        (
            "cse-in/Sbench0/cnt",
            ResourceType::ContentInstance,
            json!({"m2m:cin": {"con": "LOCKED"}}),
        ),
    ];
    for (to, ty, pc) in steps {
        let mut req = request(Operation::Create, to, &from);
        req.ty = Some(ty);
        req.pc = Some(pc);
        client
            .send(url, &req)
            .await?
            .into_result()
            .map_err(|e| anyhow::anyhow!("{to}: {e}"))?;
    }
    Ok("cse-in/Sbench0/cnt/la".into())
}

/// Requests per second and p99 latency (ms) of `clients` AEs retrieving `to` back to back
/// through `url`, after a warm-up that opens their associations; and the failures.
async fn retrieves(url: &str, to: &str, clients: usize, seconds: u64) -> (f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let Ok(client) = client(i) else {
            continue;
        };
        let (url, to, stop, counting) = (
            url.to_owned(),
            to.to_owned(),
            stop.clone(),
            counting.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = request(Operation::Retrieve, &to, &aei(i));
                let began = Instant::now();
                let ok = matches!(client.send(&url, &req).await, Ok(r) if r.rsc.is_success());
                if counting.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        failed += 1;
                    }
                }
            }
            (latencies, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((l, f)) = t.await {
            all.extend(l);
            failed += f;
        }
    }
    all.sort_unstable();
    let p99 = crate::bench::percentile(&all, 0.99) as f64 / 1000.0;
    (all.len() as f64 / elapsed, p99, failed)
}

pub async fn run(args: BenchBindingsArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::Builder::new()
        .prefix("m2m-bench-bindings-")
        .tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cse_toml = dir.path().join("cse.toml");
    write_private(
        &cse_toml,
        cse_config(dir.path(), port, args.clients).as_bytes(),
    )?;
    let broker = crate::mosquitto::start(
        &cse_toml,
        &dir.path().join("mqtt"),
        &dir.path().join("mosquitto.log"),
    )?;
    let mut cmd = spawned::m2m(&["cse", "--config"])?;
    cmd.arg(&cse_toml).env("M2M_LOG", "error");
    let (cse, mut urls) = spawned::start(
        cmd,
        None,
        &[LISTENING_PREFIX_TLS, LISTENING_PREFIX_WSS],
        START_TIMEOUT,
    )?;
    let wss = format!("wss://{}", urls.pop().unwrap_or_default());
    let https = format!("https://{}", urls.pop().unwrap_or_default());
    let mqtts = format!("mqtts://127.0.0.1:{port}");
    // The CSE connects to the server after it listens: the first request waits for that.
    let first = client(0)?;
    let deadline = Instant::now() + START_TIMEOUT;
    let to = loop {
        match prepare(&first, &mqtts).await {
            Ok(to) => break to,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the CSE never answered over MQTT"))
            }
            Err(e) => {
                eprintln!("m2m bench-bindings: waiting for the CSE over MQTT: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    };
    drop(first);
    let (h, hp99, hf) = retrieves(&https, &to, args.clients, args.seconds).await;
    let (w, wp99, wf) = retrieves(&wss, &to, args.clients, args.seconds).await;
    let (m, mp99, mf) = retrieves(&mqtts, &to, args.clients, args.seconds).await;
    drop(cse);
    drop(broker);
    let rows: Vec<crate::bench_tls::Row> = vec![
        (
            format!("la retrieve, {} AEs, HTTP over TLS-PSK req/s", args.clients),
            format!("{h:.0}, p99 {hp99:.2} ms (failed {hf})"),
            1.0,
            String::new(),
        ),
        (
            format!(
                "la retrieve, {} AEs, WebSocket over TLS-PSK req/s",
                args.clients
            ),
            format!("{w:.0}, p99 {wp99:.2} ms (failed {wf})"),
            w / h.max(1.0),
            "ratio to HTTP over TLS-PSK".into(),
        ),
        (
            format!(
                "la retrieve, {} AEs, MQTT via mosquitto req/s",
                args.clients
            ),
            format!("{m:.0}, p99 {mp99:.2} ms (failed {mf})"),
            m / h.max(1.0),
            "ratio to HTTP over TLS-PSK".into(),
        ),
    ];
    crate::bench_tls::print_rows(&rows);
    Ok(())
}
