//! `m2m bench`: load test of a CSE over HTTP keep-alive (a measurement tool; the requests are
//! those of TS-0004 clause 7.3: CREATE of a contentInstance, RETRIEVE of `la`, and discovery,
//! a RETRIEVE with filterUsage 1 per clause 7.3.3.17).
//!
//! Without `--url` the command starts the CSE itself: it runs the current executable as
//! `m2m cse --config <tmp>/cse.toml` with `listen = "127.0.0.1:0"` and storage in a temporary
//! directory, waits for the stdout line `m2m-cse listening http://HOST:PORT`, and kills the
//! child at the end. The CSE's resident memory (VmRSS) and, during a fill, the sizes of its
//! database and write-ahead log are then reported too.
//!
//! Setup registers an AE `bench` (From `C`) and creates the container `bench/cnt` with one
//! contentInstance (so that `la` answers 2000 in any choice of phases). The phases,
//! chosen with `--phases` (always run in this order):
//! - `create`: "cin create" (POST contentInstance to `bench/cnt`) at each client count;
//! - `la`: "la retrieve" (GET `bench/cnt/la`) at each client count;
//! - `discovery`: "disc type" (`GET /<cse>?fu=1&ty=4&lim=100`) and "disc label"
//!   (`GET /<cse>?fu=1&lbl=bench/rare&lim=100`), each with one client, then "la + 2 disc":
//!   `la` retrieves with the largest client count while two more clients discover in a loop
//!   (alternating type and label), reported apart, with the ratio of that `la` rate to the plain
//!   "la retrieve" rate at the same client count in the same run.
//!
//! Every load client owns one keep-alive connection and sends requests back to back; a response
//! whose status is not the expected one (2001 for a create, 2000 otherwise) is an error.
//!
//! With `--fill N` or `--fill CxN`, contentInstances are first created by 32 clients: `N` in the
//! container `bench/fill`, or `N` in each of `C` containers `bench/fill0` .. `bench/fill{C-1}`.
//! Every fill container carries `lbl: ["bench/fill"]`. The instances are numbered in sending
//! order, `i = c * N + k` for the k-th instance of container c (both from 0), and those with
//! `i % 1000 == 0` carry `lbl: ["bench/rare"]`: one in 1,000, the first one of the first
//! container always, so label discovery has something to find.

use crate::files::toml_path;
use crate::spawned::{self, Spawned, LISTENING_PREFIX};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use m2m_client::Client;
use m2m_core::filter::FilterUsage;
use m2m_core::{M2mError, Operation, Request, ResourceType, Response, ResponseStatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the spawned CSE may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent clients of a fill.
const FILL_CLIENTS: u64 = 32;
/// One fill instance in this many carries the label [`RARE_LABEL`].
const RARE_EVERY: u64 = 1000;
/// The label of every fill container.
pub const FILL_LABEL: &str = "bench/fill";
/// The label of one fill instance in [`RARE_EVERY`].
pub const RARE_LABEL: &str = "bench/rare";
/// The `lim` of the discovery phases.
const DISCOVERY_LIMIT: u64 = 100;
/// Clients discovering in a loop during the "la + 2 disc" phase.
const MIXED_DISCOVERERS: usize = 2;
/// The database is sampled this often during a fill of a spawned CSE.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Fill progress goes to stderr this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// WAL/database ratios count only from this database size on (a young database is tiny next to
/// the WAL's first checkpoint interval, and its ratio says nothing about growth).
pub const RATIO_MIN_DB_BYTES: u64 = 4 * 1024 * 1024;

/// Benchmark a CSE over HTTP keep-alive (spawns one unless --url is given).
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Base URL of a running CSE; without it a CSE is spawned in a temporary directory.
    #[arg(long)]
    pub url: Option<String>,
    /// Resource name of the CSEBase.
    #[arg(long, default_value = "cse-in")]
    pub cse_rn: String,
    /// Concurrent keep-alive clients per phase, comma-separated (the largest is also the `la`
    /// client count of the "la + 2 disc" phase).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub clients: Vec<usize>,
    /// Measured duration of each phase (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each phase.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// First create contentInstances with 32 clients: N (in bench/fill) or CxN (N in each of C
    /// containers bench/fill0..), e.g. 100x10000; reports RSS (and storage sizes) after.
    #[arg(long, value_parser = parse_fill)]
    pub fill: Option<FillSpec>,
    /// Phases to run, comma-separated, in the order create, la, discovery whatever the order
    /// given; "none" runs only setup (and the fill).
    #[arg(long, default_value = "create,la", value_parser = parse_phases)]
    pub phases: Phases,
    /// With --url: leave the AE `bench` and everything under it on the CSE (default: delete it).
    #[arg(long)]
    pub keep: bool,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The spawned CSE's resource store encrypted at rest (`[storage] encryption_secret`, a
    /// fresh secret in a keystore of its temporary directory).
    #[arg(long, conflicts_with = "url")]
    pub encrypted_store: bool,
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

/// What `--fill` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillSpec {
    pub containers: u64,
    pub per_container: u64,
    /// `CxN` form: containers `fill0`..; the plain `N` form uses the one container `fill`.
    pub numbered: bool,
}

impl FillSpec {
    pub fn total(&self) -> u64 {
        // parse_fill refuses products that overflow.
        self.containers * self.per_container
    }

    /// The resource name of fill container `c`.
    pub fn container_name(&self, c: u64) -> String {
        if self.numbered {
            format!("fill{c}")
        } else {
            "fill".to_owned()
        }
    }

    /// Container and instance number of the `i`-th instance sent.
    pub fn place(&self, i: u64) -> (u64, u64) {
        (i / self.per_container, i % self.per_container)
    }

    /// How many instances carry [`RARE_LABEL`].
    pub fn rare_count(&self) -> u64 {
        self.total().div_ceil(RARE_EVERY)
    }
}

/// Whether the `i`-th fill instance carries [`RARE_LABEL`].
pub fn is_rare(i: u64) -> bool {
    i.is_multiple_of(RARE_EVERY)
}

/// Parses `--fill`: `N` or `CxN`, positive integers whose product fits in 64 bits.
pub fn parse_fill(s: &str) -> Result<FillSpec, String> {
    let number = |part: &str, what: &str| -> Result<u64, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{s}': {what} '{part}' is not a positive integer (use N or CxN, e.g. 1000000 or 100x10000)"
            ));
        }
        match part.parse::<u64>() {
            Ok(0) => Err(format!("'{s}': {what} must be at least 1")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("'{s}': {what} '{part}' is too large")),
        }
    };
    let spec = match s.split_once('x') {
        None => FillSpec {
            containers: 1,
            per_container: number(s, "the count")?,
            numbered: false,
        },
        Some((c, n)) => FillSpec {
            containers: number(c, "the container count")?,
            per_container: number(n, "the count per container")?,
            numbered: true,
        },
    };
    if spec.containers.checked_mul(spec.per_container).is_none() {
        return Err(format!("'{s}': the total is too large"));
    }
    Ok(spec)
}

/// The phases `--phases` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    pub create: bool,
    pub la: bool,
    pub discovery: bool,
}

/// Parses `--phases`: a comma list of `create`, `la`, `discovery`, or `none`.
pub fn parse_phases(s: &str) -> Result<Phases, String> {
    let mut p = Phases::default();
    if s.trim() == "none" {
        return Ok(p);
    }
    for name in s.split(',').map(str::trim) {
        match name {
            "create" => p.create = true,
            "la" => p.la = true,
            "discovery" => p.discovery = true,
            other => {
                return Err(format!(
                    "unknown phase '{other}' (use create, la, discovery, comma-separated, or none)"
                ))
            }
        }
    }
    Ok(p)
}

/// What a load client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseKind {
    CinCreate,
    LaRetrieve,
    /// Discovery of contentInstances (`ty=4`) under the CSEBase.
    DiscType,
    /// Discovery by the label [`RARE_LABEL`] under the CSEBase.
    DiscLabel,
    /// Type and label discovery, alternately.
    DiscBoth,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::CinCreate => "cin create",
            Self::LaRetrieve => "la retrieve",
            Self::DiscType => "disc type",
            Self::DiscLabel => "disc label",
            Self::DiscBoth => "disc both",
        }
    }

    /// The status a successful response carries.
    fn expected(self) -> ResponseStatusCode {
        match self {
            Self::CinCreate => ResponseStatusCode::Created,
            _ => ResponseStatusCode::Ok,
        }
    }

    fn is_discovery(self) -> bool {
        matches!(self, Self::DiscType | Self::DiscLabel | Self::DiscBoth)
    }
}

/// Row names of the "la + 2 disc" phase.
const MIXED_LA: &str = "la + 2 disc";
const MIXED_DISC: &str = "2 disc + la";

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
    /// Discovery: how many addresses the first successful response listed.
    pub found: Option<u64>,
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
            found: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut j = json!({
            "phase": self.phase,
            "clients": self.clients,
            "requests": self.requests,
            "req_per_s": round(self.req_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "first_error": self.first_error,
        });
        if let Some(n) = self.found {
            j["found"] = json!(n);
        }
        j
    }
}

/// The "la + 2 disc" phase: `la` under discovery load, and how it compares to `la` alone.
#[derive(Clone, Debug, PartialEq)]
pub struct MixedResult {
    pub la: PhaseResult,
    pub disc: PhaseResult,
    /// `la` req/s here over "la retrieve" req/s at the same client count; `None` without that
    /// phase in the run.
    pub ratio: Option<f64>,
}

impl MixedResult {
    /// Pairs the two halves of the phase with the plain "la retrieve" row of `rows`, if any.
    pub fn new(la: PhaseResult, disc: PhaseResult, rows: &[PhaseResult]) -> Self {
        let ratio = rows
            .iter()
            .find(|r| r.phase == PhaseKind::LaRetrieve.name() && r.clients == la.clients)
            .filter(|alone| alone.req_per_s > 0.0)
            .map(|alone| la.req_per_s / alone.req_per_s);
        Self { la, disc, ratio }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "la_clients": self.la.clients,
            "la_req_per_s": round(self.la.req_per_s, 1),
            "la_p99_ms": round(self.la.p99_ms, 3),
            "disc_clients": self.disc.clients,
            "disc_req_per_s": round(self.disc.req_per_s, 1),
            "disc_p50_ms": round(self.disc.p50_ms, 3),
            "disc_p99_ms": round(self.disc.p99_ms, 3),
            "la_ratio_to_alone": self.ratio.map(|r| round(r, 3)),
        })
    }

    /// The summary line under the table.
    pub fn summary(&self) -> String {
        let ratio = match self.ratio {
            Some(r) => format!("{r:.3} of its rate alone"),
            None => "no \"la retrieve\" phase at that client count to compare with".to_owned(),
        };
        format!(
            "la at {} clients while {} clients discover: {:.1} req/s, p99 {:.3} ms ({ratio}); \
             discovery p50 {:.3} ms, p99 {:.3} ms",
            self.la.clients,
            self.disc.clients,
            self.la.req_per_s,
            self.la.p99_ms,
            self.disc.p50_ms,
            self.disc.p99_ms
        )
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

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
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

fn format_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The database and WAL sizes seen while sampling a spawned CSE's storage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageStats {
    pub samples: u64,
    pub max_wal: u64,
    /// The database size when the largest WAL was seen.
    pub db_at_max_wal: u64,
    /// The largest WAL/database ratio among samples with a database of at least
    /// [`RATIO_MIN_DB_BYTES`].
    pub max_ratio: Option<f64>,
    /// The last sample (db, wal).
    pub last: (u64, u64),
}

impl StorageStats {
    pub fn add(&mut self, db: u64, wal: u64) {
        self.samples += 1;
        if self.samples == 1 || wal > self.max_wal {
            self.max_wal = wal;
            self.db_at_max_wal = db;
        }
        if db >= RATIO_MIN_DB_BYTES {
            let r = wal as f64 / db as f64;
            if self.max_ratio.is_none_or(|m| r > m) {
                self.max_ratio = Some(r);
            }
        }
        self.last = (db, wal);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "samples": self.samples,
            "max_wal_bytes": self.max_wal,
            "db_bytes_at_max_wal": self.db_at_max_wal,
            "max_wal_db_ratio": self.max_ratio.map(|r| round(r, 3)),
            "final_db_bytes": self.last.0,
            "final_wal_bytes": self.last.1,
        })
    }

    /// The report lines.
    pub fn lines(&self) -> Vec<String> {
        let ratio = match self.max_ratio {
            Some(r) => format!("{r:.2}"),
            None => format!(
                "- (no sample with a database of {} or more)",
                format_bytes(RATIO_MIN_DB_BYTES)
            ),
        };
        vec![
            format!(
                "largest WAL seen: {} (database {} then); largest WAL/database ratio: {ratio}",
                format_bytes(self.max_wal),
                format_bytes(self.db_at_max_wal)
            ),
            format!(
                "after the fill: database {}, WAL {} ({} samples)",
                format_bytes(self.last.0),
                format_bytes(self.last.1),
                self.samples
            ),
        ]
    }
}

/// Whether the `resources.db` in `storage` is encrypted: a database SQLite wrote in the clear
/// starts with its magic string, an SQLCipher one with a random salt.
fn store_is_encrypted(storage: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(storage.join("resources.db"))
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head != b"SQLite format 3\0")
}

/// The sizes of `resources.db` and `resources.db-wal` in `storage` (0 for a missing file).
fn storage_sizes(storage: &Path) -> (u64, u64) {
    let size = |name: &str| {
        std::fs::metadata(storage.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    (size("resources.db"), size("resources.db-wal"))
}

/// A CSE child process in a temporary directory.
struct SpawnedCse {
    process: Spawned,
    url: String,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

/// The CSE configuration for a spawned benchmark CSE.
fn cse_config(storage: &Path) -> String {
    format!(
        "[cse]\nrole = \"IN\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = {}\n",
        toml_path(storage)
    )
}

/// What [`cse_config`] needs to encrypt the store: a keystore in `dir` (its key file beside it)
/// holding a fresh secret `store-key`, and the lines naming them.
fn encrypted_store_config(dir: &Path) -> anyhow::Result<String> {
    use m2m_security::credentials::Secret;
    use m2m_security::secure_environment::{create_key_file, KeySource, SoftwareKeystore};
    let (keystore, key_file) = (dir.join("bench.keystore"), dir.join("bench-keystore.key"));
    create_key_file(&key_file)?;
    let mut ks = SoftwareKeystore::create(&keystore, KeySource::KeyFile(key_file.clone()))?;
    let mut secret = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    ks.set_secret("store-key", Secret::new(secret))?;
    ks.save()?;
    Ok(format!(
        "encryption_secret = \"store-key\"\n[security]\nkeystore = {}\nkey_file = {}\n",
        toml_path(&keystore),
        toml_path(&key_file)
    ))
}

/// The base URL from the rest of the CSE's "listening" line (after [`LISTENING_PREFIX`]).
fn listening_url(rest: &str) -> Option<String> {
    let addr = rest.split_whitespace().next()?;
    Some(format!("http://{}", addr.trim_end_matches('/')))
}

impl SpawnedCse {
    fn start(encrypted_store: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("m2m-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        // Created by the CSE itself, 0700.
        let storage = dir.path().join("data");
        let config = dir.path().join("cse.toml");
        let mut text = cse_config(&storage);
        if encrypted_store {
            // Right after [storage], which cse_config ends with.
            text.push_str(&encrypted_store_config(dir.path())?);
        }
        std::fs::write(&config, text)?;
        let mut cmd = spawned::m2m(&["cse", "--config"])?;
        cmd.arg(&config).current_dir(dir.path());
        let (process, rest) = spawned::start(cmd, None, &[LISTENING_PREFIX], START_TIMEOUT)?;
        let url = listening_url(&rest[0])
            .ok_or_else(|| anyhow!("the CSE printed an empty listening line"))?;
        Ok(Self {
            process,
            url,
            storage,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

/// Why a response is not the `expected` success, if it is not.
fn err_text(r: &Result<Response, M2mError>, expected: ResponseStatusCode) -> Option<String> {
    match r {
        Ok(rsp) if rsp.rsc == expected => None,
        Ok(rsp) => Some(format!("{} {}", rsp.rsc, rsp.dbg().unwrap_or(""))),
        Err(e) => Some(e.to_string()),
    }
}

/// How many addresses a discovery response lists.
fn discovered(rsp: &Response) -> Option<u64> {
    let list = rsp.pc.as_ref()?.get("m2m:uril")?.as_array()?;
    Some(list.len() as u64)
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

/// Registers the AE `bench`, creates its container `cnt` with one contentInstance; returns the
/// AE-ID.
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
    // `la` has something to return even when no create phase runs before it.
    let req = create_request(
        &format!("{cse}/bench/cnt"),
        &aei,
        ResourceType::ContentInstance,
        json!({"m2m:cin": {"con": "bench payload 0123456789"}}),
        m2m_client::next_request_id(),
    );
    expect_ok(client, url, &req, "first contentInstance").await?;
    Ok(aei)
}

/// A discovery request under the CSEBase `cse` (TS-0004 clause 7.3.3.17).
fn discovery_request(cse: &str, aei: &str, by_label: bool) -> Request {
    let mut req = Request::new(
        Operation::Retrieve,
        cse,
        Some(aei.to_owned()),
        String::new(),
    );
    req.fc.filter_usage = Some(FilterUsage::Discovery);
    req.fc.limit = Some(DISCOVERY_LIMIT);
    if by_label {
        req.fc.labels = vec![RARE_LABEL.to_owned()];
    } else {
        req.fc.resource_types = vec![ResourceType::ContentInstance.code()];
    }
    req
}

/// The requests a load client sends over and over, in turn (only the rqi changes).
fn phase_requests(kind: PhaseKind, cse: &str, aei: &str, container: &str) -> Vec<Request> {
    match kind {
        PhaseKind::CinCreate => vec![create_request(
            &format!("{cse}/bench/{container}"),
            aei,
            ResourceType::ContentInstance,
            json!({"m2m:cin": {"con": "bench payload 0123456789"}}),
            String::new(),
        )],
        PhaseKind::LaRetrieve => vec![Request::new(
            Operation::Retrieve,
            format!("{cse}/bench/{container}/la"),
            Some(aei.to_owned()),
            String::new(),
        )],
        PhaseKind::DiscType => vec![discovery_request(cse, aei, false)],
        PhaseKind::DiscLabel => vec![discovery_request(cse, aei, true)],
        PhaseKind::DiscBoth => vec![
            discovery_request(cse, aei, false),
            discovery_request(cse, aei, true),
        ],
    }
}

/// What load clients measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    found: Option<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.found.is_none() {
            self.found = other.found;
        }
    }
}

/// Runs groups of load clients at once, each group `(kind, clients)`; one result per group.
async fn run_groups(
    url: &str,
    groups: &[(PhaseKind, usize)],
    warmup: Duration,
    duration: Duration,
    cse: &str,
    aei: &str,
) -> Vec<PhaseResult> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for (group, &(kind, clients)) in groups.iter().enumerate() {
        for c in 0..clients {
            let url = url.to_owned();
            let mut reqs = phase_requests(kind, cse, aei, "cnt");
            tasks.push(tokio::spawn(async move {
                // One Client per load client: its own pool, hence one kept-alive connection.
                let client = Client::new();
                let mut t = Tally::default();
                let expected = kind.expected();
                // Clients start at different requests of the cycle (type, label, type, ...).
                let mut n = c;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let i = n % reqs.len();
                    let req = &mut reqs[i];
                    req.rqi = format!("b{group}-{c}-{n}");
                    n += 1;
                    let r = client.send(&url, req).await;
                    let t1 = Instant::now();
                    let err = err_text(&r, expected);
                    if t0 >= measure_from && t1 <= end {
                        t.latencies_us
                            .push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                        if let Some(e) = &err {
                            t.errors += 1;
                            t.first_error.get_or_insert_with(|| e.clone());
                        }
                    }
                    if kind.is_discovery() && t.found.is_none() && err.is_none() {
                        if let Ok(rsp) = &r {
                            t.found = discovered(rsp);
                        }
                    }
                    if r.is_err() {
                        // Transport failure: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (group, t)
            }));
        }
    }
    let mut tallies: Vec<Tally> = groups.iter().map(|_| Tally::default()).collect();
    for task in tasks {
        if let Ok((group, t)) = task.await {
            tallies[group].merge(t);
        }
    }
    groups
        .iter()
        .zip(tallies)
        .map(|(&(kind, clients), t)| {
            let mut r = PhaseResult::from_samples(
                kind,
                clients,
                duration,
                t.latencies_us,
                t.errors,
                t.first_error,
            );
            // Alternating type and label: one count would describe neither.
            r.found = t.found.filter(|_| kind != PhaseKind::DiscBoth);
            r
        })
        .collect()
}

/// The outcome of a fill.
struct FillOutcome {
    took: Duration,
    errors: u64,
    first_error: Option<String>,
    storage: Option<StorageStats>,
}

/// Creates the fill containers, then the instances of `spec` with [`FILL_CLIENTS`] clients,
/// printing progress to stderr and sampling `storage` (a spawned CSE's) every second.
async fn fill(
    url: &str,
    cse: &str,
    aei: &str,
    spec: FillSpec,
    storage: Option<&Path>,
) -> anyhow::Result<FillOutcome> {
    let client = Client::new();
    for c in 0..spec.containers {
        let req = create_request(
            &format!("{cse}/bench"),
            aei,
            ResourceType::Container,
            json!({"m2m:cnt": {"rn": spec.container_name(c), "lbl": [FILL_LABEL]}}),
            m2m_client::next_request_id(),
        );
        expect_ok(&client, url, &req, "fill container creation").await?;
    }
    let total = spec.total();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let monitor = tokio::spawn(monitor_fill(
        total,
        done.clone(),
        started,
        storage.map(Path::to_path_buf),
        stopped,
    ));
    let workers = total.clamp(1, FILL_CLIENTS);
    let mut tasks = Vec::new();
    for w in 0..workers {
        // Contiguous slices: at any moment the clients write to different containers.
        let (from, to) = (total * w / workers, total * (w + 1) / workers);
        let url = url.to_owned();
        let (cse, aei, done) = (cse.to_owned(), aei.to_owned(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let mut errors = 0u64;
            let mut first_error = None;
            for i in from..to {
                let (c, k) = spec.place(i);
                let mut cin = json!({"con": format!("fill {c}/{k}")});
                if is_rare(i) {
                    cin["lbl"] = json!([RARE_LABEL]);
                }
                let req = create_request(
                    &format!("{cse}/bench/{}", spec.container_name(c)),
                    &aei,
                    ResourceType::ContentInstance,
                    json!({ "m2m:cin": cin }),
                    format!("f{w}-{i}"),
                );
                let r = client.send(&url, &req).await;
                if let Some(e) = err_text(&r, ResponseStatusCode::Created) {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                done.fetch_add(1, Ordering::Relaxed);
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (errors, first_error)
        }));
    }
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((e, fe)) = t.await {
            errors += e;
            if first_error.is_none() {
                first_error = fe;
            }
        }
    }
    let took = started.elapsed();
    let _ = stop.send(());
    let mut stats = monitor
        .await
        .map_err(|e| anyhow!("the fill monitor failed: {e}"))?;
    if let (Some(s), Some(dir)) = (stats.as_mut(), storage) {
        // "After the fill" is a point of the fill too.
        let (db, wal) = storage_sizes(dir);
        s.add(db, wal);
    }
    Ok(FillOutcome {
        took,
        errors,
        first_error,
        storage: stats,
    })
}

/// Samples the storage sizes every [`SAMPLE_EVERY`] (when there is a `storage` directory) and
/// prints progress every [`PROGRESS_EVERY`], until `stop` fires.
async fn monitor_fill(
    total: u64,
    done: Arc<AtomicU64>,
    started: Instant,
    storage: Option<PathBuf>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<StorageStats> {
    let mut stats = storage.as_ref().map(|_| StorageStats::default());
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = (started, 0u64);
    loop {
        tokio::select! {
            _ = &mut stop => return stats,
            _ = sample.tick() => {}
        }
        let mut sizes = None;
        if let (Some(s), Some(dir)) = (stats.as_mut(), storage.as_deref()) {
            let (db, wal) = storage_sizes(dir);
            s.add(db, wal);
            sizes = Some((db, wal));
        }
        let now = Instant::now();
        if now - last_report.0 >= PROGRESS_EVERY {
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "m2m bench: {}",
                progress_line(total, n, n - last_report.1, now - last_report.0, sizes)
            );
            last_report = (now, n);
        }
    }
}

/// One progress line of a fill: `n` of `total` done, `recent` of them in the last `span`.
pub fn progress_line(
    total: u64,
    n: u64,
    recent: u64,
    span: Duration,
    sizes: Option<(u64, u64)>,
) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        n as f64 * 100.0 / total as f64
    };
    let rate = recent as f64 / span.as_secs_f64().max(1e-9);
    let mut line = format!("fill {n}/{total} ({pct:.1}%), {rate:.0}/s");
    if let Some((db, wal)) = sizes {
        line.push_str(&format!(
            ", database {}, WAL {}",
            format_bytes(db),
            format_bytes(wal)
        ));
    }
    line
}

/// Runs `m2m bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive numbers, e.g. 1,32");
    }
    if args.keep && args.url.is_none() {
        bail!("--keep only applies with --url (a spawned CSE ends with the run)");
    }
    let spawned = match &args.url {
        Some(_) => None,
        None => {
            let cse = SpawnedCse::start(args.encrypted_store)?;
            eprintln!(
                "m2m bench: spawned CSE pid {} at {}{}",
                cse.pid(),
                cse.url,
                if args.encrypted_store {
                    ", its store encrypted at rest"
                } else {
                    ""
                }
            );
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

/// Runs one phase at one client count, saying so on stderr.
async fn phase(
    args: &BenchArgs,
    url: &str,
    groups: &[(PhaseKind, usize)],
    what: &str,
    cse: &str,
    aei: &str,
) -> Vec<PhaseResult> {
    eprintln!(
        "m2m bench: {what} for {:?} (+{:?} warm-up) ...",
        args.duration, args.warmup
    );
    let rows = run_groups(url, groups, args.warmup, args.duration, cse, aei).await;
    for r in &rows {
        if let Some(e) = &r.first_error {
            eprintln!("m2m bench: {}: {} errors, first: {e}", r.phase, r.errors);
        }
    }
    rows
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
    if let Some(spec) = args.fill {
        let n = spec.total();
        let wher = if spec.numbered {
            format!(
                "{} containers {cse}/bench/fill0..fill{}, {} each",
                spec.containers,
                spec.containers - 1,
                spec.per_container
            )
        } else {
            format!("{cse}/bench/fill")
        };
        eprintln!("m2m bench: creating {n} contentInstances in {wher} ...");
        let out = fill(&url, cse, &aei, spec, spawned.map(|s| s.storage.as_path())).await?;
        let secs = out.took.as_secs_f64();
        let rate = n as f64 / secs.max(1e-9);
        say(format!(
            "filled {n} contentInstances in {secs:.1} s ({rate:.0}/s, {} errors)",
            out.errors
        ));
        if let Some(e) = &out.first_error {
            eprintln!("m2m bench: fill: {} errors, first: {e}", out.errors);
        }
        fill_report = json!({
            "count": n,
            "containers": spec.containers,
            "per_container": spec.per_container,
            "rare": spec.rare_count(),
            "seconds": round(secs, 3),
            "per_s": round(rate, 1),
            "errors": out.errors,
            "first_error": out.first_error,
        });
        if let Some(s) = &out.storage {
            for line in s.lines() {
                say(line);
            }
            fill_report["storage"] = s.to_json();
        }
        if let Some(kib) = rss() {
            say(format!("CSE RSS after fill: {}", format_mib(kib)));
            rss_report.insert("after_fill_kib".into(), json!(kib));
        }
    }
    let mut rows = Vec::new();
    let mut kinds = Vec::new();
    if args.phases.create {
        kinds.push(PhaseKind::CinCreate);
    }
    if args.phases.la {
        kinds.push(PhaseKind::LaRetrieve);
    }
    for kind in kinds {
        for &clients in &args.clients {
            let what = format!("{} with {clients} client(s)", kind.name());
            rows.extend(phase(args, &url, &[(kind, clients)], &what, cse, &aei).await);
        }
    }
    let mut mixed = None;
    if args.phases.discovery {
        for kind in [PhaseKind::DiscType, PhaseKind::DiscLabel] {
            let what = format!("{} with 1 client", kind.name());
            rows.extend(phase(args, &url, &[(kind, 1)], &what, cse, &aei).await);
        }
        let la_clients = args.clients.iter().copied().max().unwrap_or(1);
        let what =
            format!("la with {la_clients} client(s) while {MIXED_DISCOVERERS} clients discover");
        let groups = [
            (PhaseKind::LaRetrieve, la_clients),
            (PhaseKind::DiscBoth, MIXED_DISCOVERERS),
        ];
        let mut both = phase(args, &url, &groups, &what, cse, &aei).await;
        let mut disc = both.pop().context("no discovery result")?;
        let mut la = both.pop().context("no la result")?;
        la.phase = MIXED_LA;
        disc.phase = MIXED_DISC;
        let m = MixedResult::new(la, disc, &rows);
        rows.push(m.la.clone());
        rows.push(m.disc.clone());
        mixed = Some(m);
    }
    if !rows.is_empty() {
        say(String::new());
    }
    if !args.json && !rows.is_empty() {
        print!("{}", format_table(&rows));
        for r in &rows {
            if let Some(n) = r.found {
                println!("{}: the first answer listed {n} resource(s)", r.phase);
            }
        }
        if let Some(m) = &mixed {
            println!("{}", m.summary());
        }
    }
    if let Some(kib) = rss() {
        say(format!("\nCSE RSS after the phases: {}", format_mib(kib)));
        rss_report.insert("after_phases_kib".into(), json!(kib));
    }
    if args.url.is_some() && args.keep {
        eprintln!("m2m bench: kept {cse}/bench (AE-ID {aei}) and everything under it");
    } else if args.url.is_some() {
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
        "encrypted_store": spawned.map(|s| store_is_encrypted(&s.storage)),
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "rss": Value::Object(rss_report),
        "fill": fill_report,
        "phases": rows.iter().map(PhaseResult::to_json).collect::<Vec<_>>(),
        "la_under_discovery": mixed.as_ref().map_or(Value::Null, MixedResult::to_json),
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
        assert_eq!(
            a.phases,
            Phases {
                create: true,
                la: true,
                discovery: false
            }
        );
        assert!(!a.keep);
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
            "--phases",
            "discovery,la",
            "--keep",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(a.clients, vec![4, 8, 64]);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(
            a.fill,
            Some(FillSpec {
                containers: 1,
                per_container: 100_000,
                numbered: false
            })
        );
        assert_eq!(
            a.phases,
            Phases {
                create: false,
                la: true,
                discovery: true
            }
        );
        assert!(a.keep);
        assert!(a.json);
        let a = parse(&["--fill", "100x10000", "--phases", "none"]).unwrap();
        assert_eq!(a.fill.unwrap().total(), 1_000_000);
        assert_eq!(a.phases, Phases::default());
        let e = parse(&["--fill", "100x"]).err().unwrap().to_string();
        assert!(
            e.contains("'100x': the count per container '' is not a positive integer"),
            "{e}"
        );
        let e = parse(&["--phases", "create,disco"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown phase 'disco'"), "{e}");
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
        let req = &phase_requests(PhaseKind::LaRetrieve, "cse-in", "Cbench", "cnt")[0];
        assert_eq!(req.to, "cse-in/bench/cnt/la");
        assert_eq!(req.op, Operation::Retrieve);
        assert!(!req.is_discovery());
        let req = &phase_requests(PhaseKind::CinCreate, "cse-in", "Cbench", "cnt")[0];
        assert_eq!(req.ty, Some(ResourceType::ContentInstance));
        assert_eq!(req.from.as_deref(), Some("Cbench"));
    }

    /// The path and query a request goes out with (TS-0009 clause 6.2.2).
    fn wire(req: &Request) -> String {
        let http = m2m_core::http_binding::encode_request(
            req,
            "http",
            "127.0.0.1:1",
            m2m_core::serialization::Serialization::Json,
        )
        .unwrap();
        let mut q: Vec<&str> = http.uri().query().unwrap_or("").split('&').collect();
        q.sort_unstable();
        format!("{}?{}", http.uri().path(), q.join("&"))
    }

    #[test]
    fn discovery_requests_on_the_wire() {
        let reqs = phase_requests(PhaseKind::DiscType, "cse-in", "Cbench", "cnt");
        assert_eq!(reqs.len(), 1);
        assert!(reqs[0].is_discovery());
        assert_eq!(reqs[0].from.as_deref(), Some("Cbench"));
        assert_eq!(wire(&reqs[0]), "/cse-in?fu=1&lim=100&ty=4");
        let reqs = phase_requests(PhaseKind::DiscLabel, "cse-in", "Cbench", "cnt");
        assert_eq!(wire(&reqs[0]), "/cse-in?fu=1&lbl=bench%2Frare&lim=100");
        // The clients of the mixed phase alternate, type first.
        let reqs = phase_requests(PhaseKind::DiscBoth, "cse-in", "Cbench", "cnt");
        let wires: Vec<String> = reqs.iter().map(wire).collect();
        assert_eq!(
            wires,
            [
                "/cse-in?fu=1&lim=100&ty=4",
                "/cse-in?fu=1&lbl=bench%2Frare&lim=100"
            ]
        );
    }

    #[test]
    fn only_the_expected_status_is_a_success() {
        let ok = |rsc| Ok(Response::new(rsc, "1", None));
        assert_eq!(
            err_text(&ok(ResponseStatusCode::Ok), PhaseKind::DiscType.expected()),
            None
        );
        assert_eq!(
            err_text(
                &ok(ResponseStatusCode::Created),
                PhaseKind::CinCreate.expected()
            ),
            None
        );
        // A success code other than the one the operation answers with is still an error.
        assert_eq!(
            err_text(
                &ok(ResponseStatusCode::Created),
                PhaseKind::LaRetrieve.expected()
            )
            .as_deref(),
            Some("2001 CREATED ")
        );
        let denied = Response::error(
            &M2mError::new(ResponseStatusCode::OriginatorHasNoPrivilege, "no"),
            "2",
        );
        let e = err_text(&Ok(denied), PhaseKind::DiscLabel.expected()).unwrap();
        assert!(e.starts_with("4103 ORIGINATOR_HAS_NO_PRIVILEGE"), "{e}");
        let unreachable = Err(M2mError::new(
            ResponseStatusCode::TargetNotReachable,
            "down",
        ));
        assert!(err_text(&unreachable, ResponseStatusCode::Ok).is_some());
        let list = Response::new(
            ResponseStatusCode::Ok,
            "3",
            Some(json!({"m2m:uril": ["cse-in/a", "cse-in/b"]})),
        );
        assert_eq!(discovered(&list), Some(2));
        assert_eq!(
            discovered(&Response::new(ResponseStatusCode::Ok, "4", None)),
            None
        );
    }

    #[test]
    fn fill_forms() {
        let f = parse_fill("1000000").unwrap();
        assert_eq!(
            f,
            FillSpec {
                containers: 1,
                per_container: 1_000_000,
                numbered: false
            }
        );
        assert_eq!(f.container_name(0), "fill");
        let f = parse_fill("100x10000").unwrap();
        assert_eq!(
            (f.containers, f.per_container, f.total()),
            (100, 10_000, 1_000_000)
        );
        assert_eq!(f.container_name(0), "fill0");
        assert_eq!(f.container_name(99), "fill99");
        assert_eq!(f.rare_count(), 1000);
        let f = parse_fill("1x5").unwrap();
        assert!(f.numbered);
        assert_eq!(f.container_name(0), "fill0");
        assert_eq!(
            parse_fill("18446744073709551615").unwrap().per_container,
            u64::MAX
        );
        for (bad, why) in [
            ("", "the count '' is not a positive integer"),
            ("0", "the count must be at least 1"),
            ("-5", "the count '-5' is not a positive integer"),
            ("1e6", "the count '1e6' is not a positive integer"),
            ("1_000", "the count '1_000' is not a positive integer"),
            (" 10", "the count ' 10' is not a positive integer"),
            ("10X5", "the count '10X5' is not a positive integer"),
            ("x10", "the container count '' is not a positive integer"),
            (
                "10x",
                "the count per container '' is not a positive integer",
            ),
            ("0x10", "the container count must be at least 1"),
            ("10x0", "the count per container must be at least 1"),
            (
                "1x2x3",
                "the count per container '2x3' is not a positive integer",
            ),
            (
                "99999999999999999999",
                "the count '99999999999999999999' is too large",
            ),
            ("4294967296x4294967296", "the total is too large"),
        ] {
            let e = parse_fill(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(
                e.split_once(": ")
                    .map(|(_, w)| w.split(" (use").next().unwrap()),
                Some(why),
                "{bad}: {e}"
            );
            assert!(e.starts_with(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn fill_placement_and_rare_labels() {
        let f = parse_fill("3x50").unwrap();
        assert_eq!(f.place(0), (0, 0));
        assert_eq!(f.place(49), (0, 49));
        assert_eq!(f.place(50), (1, 0));
        assert_eq!(f.place(149), (2, 49));
        assert_eq!(f.rare_count(), 1);
        assert_eq!((0..f.total()).filter(|&i| is_rare(i)).count(), 1);
        let f = parse_fill("7x1001").unwrap();
        let rare = (0..f.total()).filter(|&i| is_rare(i)).count() as u64;
        assert_eq!(rare, f.rare_count());
        assert_eq!(rare, 8);
        assert!(is_rare(0) && !is_rare(1) && !is_rare(999) && is_rare(1000));
    }

    #[test]
    fn phase_lists() {
        let all = Phases {
            create: true,
            la: true,
            discovery: true,
        };
        assert_eq!(parse_phases("create,la,discovery"), Ok(all));
        assert_eq!(parse_phases("discovery, la ,create"), Ok(all));
        assert_eq!(
            parse_phases("discovery"),
            Ok(Phases {
                discovery: true,
                ..Phases::default()
            })
        );
        assert_eq!(parse_phases("none"), Ok(Phases::default()));
        for bad in ["", "la,", "creat", "none,la", "LA"] {
            let e = parse_phases(bad).unwrap_err();
            assert!(e.starts_with("unknown phase"), "{bad}: {e}");
        }
    }

    #[test]
    fn storage_samples() {
        const MIB: u64 = 1024 * 1024;
        let mut s = StorageStats::default();
        assert_eq!(s.to_json()["max_wal_db_ratio"], Value::Null);
        // A young database: its ratio is not counted, its WAL is.
        s.add(MIB, 3 * MIB);
        assert_eq!(s.max_ratio, None);
        assert_eq!((s.max_wal, s.db_at_max_wal), (3 * MIB, MIB));
        s.add(4 * MIB, 8 * MIB); // ratio 2.0
        s.add(40 * MIB, 20 * MIB); // ratio 0.5, largest WAL
        s.add(50 * MIB, 2 * MIB); // checkpointed
        assert_eq!(s.samples, 4);
        assert_eq!((s.max_wal, s.db_at_max_wal), (20 * MIB, 40 * MIB));
        assert_eq!(s.max_ratio, Some(2.0));
        assert_eq!(s.last, (50 * MIB, 2 * MIB));
        let j = s.to_json();
        assert_eq!(j["max_wal_bytes"], 20 * MIB);
        assert_eq!(j["db_bytes_at_max_wal"], 40 * MIB);
        assert_eq!(j["max_wal_db_ratio"], 2.0);
        assert_eq!(j["final_db_bytes"], 50 * MIB);
        assert_eq!(j["final_wal_bytes"], 2 * MIB);
        assert_eq!(
            s.lines(),
            [
                "largest WAL seen: 20.0 MiB (database 40.0 MiB then); largest WAL/database ratio: 2.00",
                "after the fill: database 50.0 MiB, WAL 2.0 MiB (4 samples)"
            ]
        );
        // The sizes of a directory's files; 0 for missing ones.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(storage_sizes(dir.path()), (0, 0));
        std::fs::write(dir.path().join("resources.db"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("resources.db-wal"), [0u8; 3]).unwrap();
        assert_eq!(storage_sizes(dir.path()), (10, 3));
    }

    #[test]
    fn progress() {
        assert_eq!(
            progress_line(1_000_000, 250_000, 120_000, Duration::from_secs(10), None),
            "fill 250000/1000000 (25.0%), 12000/s"
        );
        assert_eq!(
            progress_line(
                100,
                100,
                5,
                Duration::from_millis(500),
                Some((3 * 1024 * 1024, 512 * 1024))
            ),
            "fill 100/100 (100.0%), 10/s, database 3.0 MiB, WAL 0.5 MiB"
        );
    }

    fn row(phase: &'static str, clients: usize, req_per_s: f64) -> PhaseResult {
        PhaseResult {
            phase,
            clients,
            requests: 0,
            req_per_s,
            p50_ms: 0.1,
            p99_ms: 2.0,
            errors: 0,
            first_error: None,
            found: None,
        }
    }

    #[test]
    fn la_under_discovery_against_la_alone() {
        let rows = [
            row("cin create", 32, 10_000.0),
            row("la retrieve", 1, 9_000.0),
            row("la retrieve", 32, 30_000.0),
        ];
        let m = MixedResult::new(row(MIXED_LA, 32, 24_000.0), row(MIXED_DISC, 2, 40.0), &rows);
        assert_eq!(m.ratio, Some(0.8));
        let j = m.to_json();
        assert_eq!(j["la_clients"], 32);
        assert_eq!(j["la_req_per_s"], 24_000.0);
        assert_eq!(j["disc_clients"], 2);
        assert_eq!(j["la_ratio_to_alone"], 0.8);
        assert_eq!(
            m.summary(),
            "la at 32 clients while 2 clients discover: 24000.0 req/s, p99 2.000 ms (0.800 of its \
             rate alone); discovery p50 0.100 ms, p99 2.000 ms"
        );
        // Compared only with la at the same client count, and never with a zero rate.
        let m = MixedResult::new(row(MIXED_LA, 1, 4_500.0), row(MIXED_DISC, 2, 40.0), &rows);
        assert_eq!(m.ratio, Some(0.5));
        let m = MixedResult::new(row(MIXED_LA, 8, 4_500.0), row(MIXED_DISC, 2, 40.0), &rows);
        assert_eq!(m.ratio, None);
        assert_eq!(m.to_json()["la_ratio_to_alone"], Value::Null);
        assert!(
            m.summary().contains("no \"la retrieve\" phase"),
            "{}",
            m.summary()
        );
        let m = MixedResult::new(
            row(MIXED_LA, 32, 4_500.0),
            row(MIXED_DISC, 2, 40.0),
            &[row("la retrieve", 32, 0.0)],
        );
        assert_eq!(m.ratio, None);
        // A discovery row carries what it found; other rows do not have the key.
        let mut d = row("disc label", 1, 50.0);
        d.found = Some(1000);
        assert_eq!(d.to_json()["found"], 1000);
        assert!(row("la retrieve", 1, 1.0).to_json().get("found").is_none());
    }
}
