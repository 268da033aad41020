//! `m2m bench`: load test of a CSE over HTTP keep-alive.
//!
//! Without `--url` the command starts the CSE itself: it runs the current executable as
//! `m2m cse --config <tmp>/cse.toml` with `listen = "127.0.0.1:0"` and storage in a temporary
//! directory, waits for the stdout line `m2m-cse listening http://HOST:PORT`, and kills the
//! child at the end. The CSE's resident memory (VmRSS) is then reported too.
//!
//! Setup registers an AE `bench` (From `C`), creates the container `bench/cnt`, and runs the
//! phases "cin create" (POST contentInstance) and "la retrieve" (GET `bench/cnt/la`) at each
//! client count. Every load client owns one keep-alive connection and sends requests back to
//! back. With `--fill N`, N contentInstances are first created in a separate container
//! `bench/fill`.

use crate::files::toml_path;
use crate::spawned::{self, Spawned, LISTENING_PREFIX};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use m2m_client::Client;
use m2m_core::{M2mError, Operation, Request, ResourceType, Response, ResponseStatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the spawned CSE may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Benchmark a CSE over HTTP keep-alive (spawns one unless --url is given).
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Base URL of a running CSE; without it a CSE is spawned in a temporary directory.
    #[arg(long)]
    pub url: Option<String>,
    /// Resource name of the CSEBase.
    #[arg(long, default_value = "cse-in")]
    pub cse_rn: String,
    /// Concurrent keep-alive clients per phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients: Vec<usize>,
    /// Measured duration of each phase (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// First create this many contentInstances (in container bench/fill) and report RSS after.
    #[arg(long)]
    pub fill: Option<u64>,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `10s`, `500ms`, `1m`, `2.5s`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 10s or 500ms"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown unit in '{s}' (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a load client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseKind {
    CinCreate,
    LaRetrieve,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::CinCreate => "cin create",
            Self::LaRetrieve => "la retrieve",
        }
    }
}

/// The result of one phase at one client count.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseResult {
    pub phase: &'static str,
    pub clients: usize,
    pub requests: u64,
    pub req_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl PhaseResult {
    /// Builds the result from the latencies (µs) of the requests completed in the window.
    pub fn from_samples(
        kind: PhaseKind,
        clients: usize,
        window: Duration,
        mut latencies_us: Vec<u32>,
        errors: u64,
        first_error: Option<String>,
    ) -> Self {
        latencies_us.sort_unstable();
        let requests = latencies_us.len() as u64;
        let secs = window.as_secs_f64();
        Self {
            phase: kind.name(),
            clients,
            requests,
            req_per_s: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            p50_ms: percentile(&latencies_us, 0.50) as f64 / 1000.0,
            p99_ms: percentile(&latencies_us, 0.99) as f64 / 1000.0,
            errors,
            first_error,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "phase": self.phase,
            "clients": self.clients,
            "requests": self.requests,
            "req_per_s": round(self.req_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The nearest-rank percentile of sorted samples; 0 for no samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The results table as text.
pub fn format_table(rows: &[PhaseResult]) -> String {
    let mut out = format!(
        "{:<12} {:>7} {:>10} {:>10} {:>8} {:>8} {:>7}\n",
        "phase", "clients", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<12} {:>7} {:>10} {:>10.1} {:>8.3} {:>8.3} {:>7}\n",
            r.phase, r.clients, r.requests, r.req_per_s, r.p50_ms, r.p99_ms, r.errors
        ));
    }
    out
}

/// Resident set size of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn format_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A CSE child process in a temporary directory.
struct SpawnedCse {
    process: Spawned,
    url: String,
    _dir: tempfile::TempDir,
}

/// The CSE configuration for a spawned benchmark CSE.
fn cse_config(storage: &Path) -> String {
    format!(
        "[cse]\nrole = \"IN\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {}\n",
        toml_path(storage)
    )
}

/// The base URL from the rest of the CSE's "listening" line (after [`LISTENING_PREFIX`]).
fn listening_url(rest: &str) -> Option<String> {
    let addr = rest.split_whitespace().next()?;
    Some(format!("http://{}", addr.trim_end_matches('/')))
}

impl SpawnedCse {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("m2m-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        // Created by the CSE itself, 0700.
        let storage = dir.path().join("data");
        let config = dir.path().join("cse.toml");
        std::fs::write(&config, cse_config(&storage))?;
        let mut cmd = spawned::m2m(&["cse", "--config"])?;
        cmd.arg(&config).current_dir(dir.path());
        let (process, rest) = spawned::start(cmd, None, &[LISTENING_PREFIX], START_TIMEOUT)?;
        let url = listening_url(&rest[0])
            .ok_or_else(|| anyhow!("the CSE printed an empty listening line"))?;
        Ok(Self {
            process,
            url,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

fn err_text(r: &Result<Response, M2mError>) -> Option<String> {
    match r {
        Ok(rsp) if rsp.rsc.is_success() => None,
        Ok(rsp) => Some(format!("{} {}", rsp.rsc, rsp.dbg().unwrap_or(""))),
        Err(e) => Some(e.to_string()),
    }
}

/// Sends and requires a success response.
async fn expect_ok(
    client: &Client,
    url: &str,
    req: &Request,
    what: &str,
) -> anyhow::Result<Response> {
    let rsp = client
        .send(url, req)
        .await
        .map_err(|e| anyhow!("{what}: {e}"))?;
    if !rsp.rsc.is_success() {
        bail!("{what}: {} {}", rsp.rsc, rsp.dbg().unwrap_or(""));
    }
    Ok(rsp)
}

fn create_request(to: &str, from: &str, ty: ResourceType, pc: Value, rqi: String) -> Request {
    let mut req = Request::new(Operation::Create, to, Some(from.to_owned()), rqi);
    req.ty = Some(ty);
    req.pc = Some(pc);
    req
}

/// Registers the AE `bench` and creates its container `cnt`; returns the AE-ID.
async fn setup(client: &Client, url: &str, cse: &str) -> anyhow::Result<String> {
    let req = create_request(
        cse,
        "C",
        ResourceType::Ae,
        json!({"m2m:ae": {"rn": "bench", "api": "Nbench", "rr": false, "srv": ["3"]}}),
        m2m_client::next_request_id(),
    );
    let rsp = client
        .send(url, &req)
        .await
        .map_err(|e| anyhow!("AE registration: {e}"))?;
    if matches!(
        rsp.rsc,
        ResponseStatusCode::Conflict | ResponseStatusCode::OriginatorHasAlreadyRegistered
    ) {
        bail!(
            "AE registration: {} - an AE 'bench' already exists on {url}; delete {cse}/bench first",
            rsp.rsc
        );
    }
    if !rsp.rsc.is_success() {
        bail!("AE registration: {} {}", rsp.rsc, rsp.dbg().unwrap_or(""));
    }
    let aei = rsp
        .pc
        .as_ref()
        .and_then(|pc| pc.pointer("/m2m:ae/aei"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("AE registration: the response has no m2m:ae/aei"))?
        .to_owned();
    let req = create_request(
        &format!("{cse}/bench"),
        &aei,
        ResourceType::Container,
        json!({"m2m:cnt": {"rn": "cnt", "mni": 1_000_000_000u64}}),
        m2m_client::next_request_id(),
    );
    expect_ok(client, url, &req, "container creation").await?;
    Ok(aei)
}

/// The request a load client sends over and over (only the rqi changes).
fn phase_request(kind: PhaseKind, cse: &str, aei: &str, container: &str) -> Request {
    match kind {
        PhaseKind::CinCreate => create_request(
            &format!("{cse}/bench/{container}"),
            aei,
            ResourceType::ContentInstance,
            json!({"m2m:cin": {"con": "bench payload 0123456789"}}),
            String::new(),
        ),
        PhaseKind::LaRetrieve => Request::new(
            Operation::Retrieve,
            format!("{cse}/bench/{container}/la"),
            Some(aei.to_owned()),
            String::new(),
        ),
    }
}

/// Runs one phase with `clients` concurrent keep-alive clients.
async fn run_phase(
    url: &str,
    kind: PhaseKind,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    cse: &str,
    aei: &str,
) -> PhaseResult {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let url = url.to_owned();
        let mut req = phase_request(kind, cse, aei, "cnt");
        tasks.push(tokio::spawn(async move {
            // One Client per load client: its own pool, hence one kept-alive connection.
            let client = Client::new();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                req.rqi = format!("b{c}-{n}");
                n += 1;
                let r = client.send(&url, &req).await;
                let t1 = Instant::now();
                let err = err_text(&r);
                if t0 >= measure_from && t1 <= end {
                    lat.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                    if let Some(e) = &err {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.clone());
                    }
                }
                if r.is_err() {
                    // Transport failure: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((lat, e, fe)) = t.await {
            all.extend(lat);
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    PhaseResult::from_samples(kind, clients, duration, all, errors, first_error)
}

/// Creates `n` contentInstances in a new container `bench/fill` with 32 clients.
async fn fill(url: &str, cse: &str, aei: &str, n: u64) -> anyhow::Result<(Duration, u64)> {
    let client = Client::new();
    let req = create_request(
        &format!("{cse}/bench"),
        aei,
        ResourceType::Container,
        json!({"m2m:cnt": {"rn": "fill"}}),
        m2m_client::next_request_id(),
    );
    expect_ok(&client, url, &req, "fill container creation").await?;
    let started = Instant::now();
    let workers = n.clamp(1, 32);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let count = n / workers + u64::from(w < n % workers);
        let url = url.to_owned();
        let mut req = phase_request(PhaseKind::CinCreate, cse, aei, "fill");
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let mut errors = 0u64;
            for i in 0..count {
                req.rqi = format!("f{w}-{i}");
                if err_text(&client.send(&url, &req).await).is_some() {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap_or(0);
    }
    Ok((started.elapsed(), errors))
}

/// Runs `m2m bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive numbers, e.g. 1,32");
    }
    let spawned = match &args.url {
        Some(_) => None,
        None => {
            let cse = SpawnedCse::start()?;
            eprintln!("m2m bench: spawned CSE pid {} at {}", cse.pid(), cse.url);
            Some(cse)
        }
    };
    let result = bench(&args, spawned.as_ref()).await;
    drop(spawned);
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn bench(args: &BenchArgs, spawned: Option<&SpawnedCse>) -> anyhow::Result<Value> {
    let url = match (&args.url, spawned) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(s)) => s.url.clone(),
        (None, None) => bail!("no CSE to benchmark"),
    };
    let cse = args.cse_rn.as_str();
    let rss = || spawned.and_then(|s| rss_kib(s.pid()));
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let client = Client::new();
    let aei = setup(&client, &url, cse).await?;
    let mut rss_report = serde_json::Map::new();
    if let Some(kib) = rss() {
        say(format!("CSE RSS after setup: {}", format_mib(kib)));
        rss_report.insert("after_setup_kib".into(), json!(kib));
    }
    let mut fill_report = Value::Null;
    if let Some(n) = args.fill {
        eprintln!("m2m bench: creating {n} contentInstances in {cse}/bench/fill ...");
        let (took, errors) = fill(&url, cse, &aei, n).await?;
        say(format!(
            "filled {n} contentInstances in {:.1} s ({:.0}/s, {errors} errors)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64().max(1e-9)
        ));
        fill_report =
            json!({"count": n, "seconds": round(took.as_secs_f64(), 3), "errors": errors});
        if let Some(kib) = rss() {
            say(format!("CSE RSS after fill: {}", format_mib(kib)));
            rss_report.insert("after_fill_kib".into(), json!(kib));
        }
    }
    let mut rows = Vec::new();
    for kind in [PhaseKind::CinCreate, PhaseKind::LaRetrieve] {
        for &clients in &args.clients {
            eprintln!(
                "m2m bench: {} with {clients} client(s) for {:?} (+{:?} warm-up) ...",
                kind.name(),
                args.duration,
                args.warmup
            );
            let r = run_phase(&url, kind, clients, args.warmup, args.duration, cse, &aei).await;
            if let Some(e) = &r.first_error {
                eprintln!("m2m bench: {} errors, first: {e}", r.errors);
            }
            rows.push(r);
        }
    }
    say(String::new());
    if !args.json {
        print!("{}", format_table(&rows));
    }
    if let Some(kib) = rss() {
        say(format!("\nCSE RSS after the phases: {}", format_mib(kib)));
        rss_report.insert("after_phases_kib".into(), json!(kib));
    }
    if args.url.is_some() {
        // Leave a running CSE as we found it.
        let req = Request::new(
            Operation::Delete,
            format!("{cse}/bench"),
            Some(aei.clone()),
            m2m_client::next_request_id(),
        );
        if let Err(e) = expect_ok(&client, &url, &req, "deleting the bench AE").await {
            eprintln!("m2m bench: warning: {e}");
        }
    }
    Ok(json!({
        "url": url,
        "spawned": spawned.is_some(),
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "rss": Value::Object(rss_report),
        "fill": fill_report,
        "phases": rows.iter().map(PhaseResult::to_json).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("m2m-bench").chain(argv.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn defaults_and_options() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.url, None);
        assert_eq!(a.clients, vec![1, 32]);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert_eq!(a.fill, None);
        assert_eq!(a.cse_rn, "cse-in");
        assert!(!a.json);
        let a = parse(&[
            "--url",
            "http://127.0.0.1:9000",
            "--clients",
            "4,8,64",
            "--duration",
            "500ms",
            "--warmup",
            "0",
            "--fill",
            "100000",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(a.clients, vec![4, 8, 64]);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(a.fill, Some(100_000));
        assert!(a.json);
        assert!(parse(&["--duration", "ten"]).is_err());
        assert!(parse(&["--clients", "a"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        for bad in ["", "s", "1h", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 0.5), 0);
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
    }

    #[test]
    fn table_and_json() {
        let r = PhaseResult::from_samples(
            PhaseKind::CinCreate,
            32,
            Duration::from_secs(2),
            (1..=1000).rev().map(|x| x * 10).collect(),
            3,
            Some("4004 NOT_FOUND".into()),
        );
        assert_eq!(r.requests, 1000);
        assert_eq!(r.req_per_s, 500.0);
        assert_eq!(r.p50_ms, 5.0);
        assert_eq!(r.p99_ms, 9.9);
        let t = format_table(std::slice::from_ref(&r));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "phase        clients   requests      req/s   p50 ms   p99 ms  errors"
        );
        assert_eq!(
            lines[1],
            "cin create        32       1000      500.0    5.000    9.900       3"
        );
        let j = r.to_json();
        assert_eq!(j["phase"], "cin create");
        assert_eq!(j["clients"], 32);
        assert_eq!(j["req_per_s"], 500.0);
        assert_eq!(j["p99_ms"], 9.9);
        assert_eq!(j["errors"], 3);
    }

    #[test]
    fn spawn_helpers() {
        assert_eq!(
            listening_url("127.0.0.1:40123\n").as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(listening_url(""), None);
        let cfg = cse_config(Path::new("/tmp/x y/data"));
        assert_eq!(
            cfg,
            "[cse]\nrole = \"IN\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"/tmp/x y/data\"\n"
        );
        assert_eq!(
            parse_vm_rss("Name:\tm2m\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"),
            Some(12345)
        );
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let req = phase_request(PhaseKind::LaRetrieve, "cse-in", "Cbench", "cnt");
        assert_eq!(req.to, "cse-in/bench/cnt/la");
        assert_eq!(req.op, Operation::Retrieve);
        let req = phase_request(PhaseKind::CinCreate, "cse-in", "Cbench", "cnt");
        assert_eq!(req.ty, Some(ResourceType::ContentInstance));
        assert_eq!(req.from.as_deref(), Some("Cbench"));
    }
}
