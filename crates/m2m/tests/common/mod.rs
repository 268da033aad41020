//! Shared harness of the integration tests: real `m2m cse` processes driven over HTTP (TS-0009),
//! a small synchronous oneM2M client, a notification receiver, a PKI made with `m2m pki`, and a
//! TLS client for requests over a security association.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a CSE may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The CSE process
// ---------------------------------------------------------------------------------------------

/// A running `m2m cse` child process.
pub struct CseProcess {
    child: Child,
    /// The plain-HTTP URL, or the https one when there is no plain listener.
    url: String,
    /// The TLS listener's URL, if the configuration has `[tls]`.
    https_url: Option<String>,
    config_path: PathBuf,
    data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// Keeps the configuration file (and, for [`CseProcess::start_temp`], the data) alive.
    _config_dir: tempfile::TempDir,
    _owned_data: Option<Arc<tempfile::TempDir>>,
}

/// Builds the configuration: `extra` is TOML (any sections of the CSE config); the harness sets
/// `http.listen` (unless given), `storage.path` and a short `limits.outgoing_timeout_ms`.
fn build_config(extra: &str, data_dir: &Path) -> String {
    let mut table: toml::Table = toml::from_str(extra)
        .unwrap_or_else(|e| panic!("test configuration is not TOML: {e}\n{extra}"));
    let section = |t: &mut toml::Table, name: &str| -> toml::Table {
        match t.remove(name) {
            Some(toml::Value::Table(s)) => s,
            Some(other) => panic!("[{name}] must be a table, got {other}"),
            None => toml::Table::new(),
        }
    };
    let mut http = section(&mut table, "http");
    http.entry("listen")
        .or_insert_with(|| toml::Value::String("127.0.0.1:0".into()));
    table.insert("http".into(), toml::Value::Table(http));
    let mut storage = section(&mut table, "storage");
    storage.insert(
        "path".into(),
        toml::Value::String(data_dir.to_string_lossy().into_owned()),
    );
    table.insert("storage".into(), toml::Value::Table(storage));
    let mut limits = section(&mut table, "limits");
    limits
        .entry("outgoing_timeout_ms")
        .or_insert(toml::Value::Integer(3000));
    table.insert("limits".into(), toml::Value::Table(limits));
    toml::to_string(&table).expect("configuration serializes")
}

impl CseProcess {
    /// Starts a CSE with `extra` configuration on `data_dir` and waits until it listens.
    pub fn start(config_toml_extra: &str, data_dir: &Path) -> CseProcess {
        let config_dir = tempfile::tempdir().expect("temp dir for the config");
        let config_path = config_dir.path().join("cse.toml");
        write_private(&config_path, &build_config(config_toml_extra, data_dir));
        Self::spawn(config_path, data_dir.to_owned(), config_dir, None)
    }

    /// Starts a CSE on a fresh temporary data directory owned by the process handle.
    pub fn start_temp(config_toml_extra: &str) -> CseProcess {
        Self::start_temp_with_env(config_toml_extra, &[])
    }

    /// [`CseProcess::start_temp`] with these environment variables set for the CSE (e.g. the
    /// SOFTHSM2_CONF of a test's own token).
    pub fn start_temp_with_env(config_toml_extra: &str, env: &[(&str, &str)]) -> CseProcess {
        let data = Arc::new(tempfile::tempdir().expect("temp data dir"));
        let config_dir = tempfile::tempdir().expect("temp dir for the config");
        let config_path = config_dir.path().join("cse.toml");
        write_private(&config_path, &build_config(config_toml_extra, data.path()));
        Self::spawn_env(
            config_path,
            data.path().to_owned(),
            config_dir,
            Some(data),
            env,
        )
    }

    /// Runs `m2m cse` with `extra` on `data_dir` where it must refuse to start: its stderr
    /// (it panics if the CSE is still running after 20 s).
    pub fn start_error(config_toml_extra: &str, data_dir: &Path) -> String {
        let config_dir = tempfile::tempdir().expect("temp dir for the config");
        let config_path = config_dir.path().join("cse.toml");
        write_private(&config_path, &build_config(config_toml_extra, data_dir));
        let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["cse", "--config", config_path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("m2m cse starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("child status").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the CSE started although it must refuse:\n{config_toml_extra}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("child output");
        assert!(!out.status.success(), "the CSE exited 0");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// An IN-CSE with the default identity (`/id-in`, `cse-in`, `//m2m.example.com`).
    pub fn start_in() -> CseProcess {
        Self::start_temp("")
    }

    fn spawn(
        config_path: PathBuf,
        data_dir: PathBuf,
        config_dir: tempfile::TempDir,
        owned: Option<Arc<tempfile::TempDir>>,
    ) -> CseProcess {
        Self::spawn_env(config_path, data_dir, config_dir, owned, &[])
    }

    fn spawn_env(
        config_path: PathBuf,
        data_dir: PathBuf,
        config_dir: tempfile::TempDir,
        owned: Option<Arc<tempfile::TempDir>>,
        env: &[(&str, &str)],
    ) -> CseProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .arg("cse")
            .arg("--config")
            .arg(&config_path)
            .envs(env.iter().copied())
            .env(
                "M2M_LOG",
                std::env::var("M2M_LOG").unwrap_or_else(|_| "info,m2m_cse=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the m2m binary");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let pipe = child.stderr.take().expect("stderr pipe");
            let buf = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                    b.push_str(&line);
                    b.push('\n');
                }
            });
        }
        // Which listening lines to wait for: `http://` unless `http.listen` is empty, `https://`
        // when `[tls]` is configured (the CSE prints them in that order).
        let (want_http, want_https) = {
            let text = std::fs::read_to_string(&config_path).unwrap_or_default();
            let table: toml::Table = toml::from_str(&text).unwrap_or_default();
            let http = table
                .get("http")
                .and_then(|h| h.get("listen"))
                .and_then(toml::Value::as_str)
                .is_none_or(|l| !l.is_empty());
            (http, table.contains_key("tls"))
        };
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let pipe = child.stdout.take().expect("stdout pipe");
            let buf = Arc::clone(&stdout);
            std::thread::spawn(move || {
                // Keep draining stdout so the child never blocks on a full pipe.
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                        b.push_str(&line);
                        b.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut http_url, mut https_url) = (None::<String>, None::<String>);
        while (want_http && http_url.is_none()) || (want_https && https_url.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("m2m-cse listening ") {
                        if url.starts_with("https://") {
                            https_url = Some(url.to_owned());
                        } else if url.starts_with("http://") {
                            http_url = Some(url.to_owned());
                        }
                    }
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let _ = child.wait();
                    // Give the stderr reader a moment to collect the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    let err = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    panic!(
                        "the CSE did not print its listening line(s) (http: {want_http}, https: \
                         {want_https}) within {START_TIMEOUT:?} (exit status {status:?}); config {}:\n{}\nstderr:\n{err}",
                        config_path.display(),
                        std::fs::read_to_string(&config_path).unwrap_or_default()
                    );
                }
            }
        }
        let url = http_url
            .or_else(|| https_url.clone())
            .expect("at least one listener");
        CseProcess {
            child,
            url,
            https_url,
            config_path,
            data_dir,
            stderr,
            stdout,
            _config_dir: config_dir,
            _owned_data: owned,
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS listener's URL, e.g. `https://127.0.0.1:41235`; panics without `[tls]`.
    pub fn https_url(&self) -> &str {
        self.https_url
            .as_deref()
            .expect("this CSE has no [tls] listener")
    }

    /// The TLS listener's port; panics without `[tls]`.
    pub fn https_port(&self) -> u16 {
        self.https_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("https URL ends with a port")
    }

    /// The DTLS (CoAP) listener's port, from its listening line; panics without `tls.dtls_listen`.
    pub fn coaps_port(&self) -> u16 {
        poll(Duration::from_secs(5), || {
            self.stdout().lines().find_map(|l| {
                l.trim()
                    .strip_prefix("m2m-cse listening coaps://")
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
            })
        })
        .expect("this CSE printed no coaps:// listening line")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What the CSE wrote on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the CSE wrote on stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the process's log shows `text` within 5 s (its stderr is read by a thread, so a
    /// line may land just after the request that caused it).
    pub fn logged(&self, text: &str) -> bool {
        poll(Duration::from_secs(5), || {
            self.stderr().contains(text).then_some(())
        })
        .is_some()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (what systemd or Docker send) and waits up to 10 s for the process to end:
    /// its exit status, `None` if it is still running.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM failed");
        poll(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills this process (if still running) and starts a new one on the same configuration and
    /// data directory; the new process may listen on another port.
    pub fn restart(self) -> CseProcess {
        let mut this = self;
        this.kill9();
        let config_path = this.config_path.clone();
        let data_dir = this.data_dir.clone();
        let owned = this._owned_data.take();
        // Move the config dir out of `this` (Drop only kills the child, already dead).
        let config_dir = std::mem::replace(
            &mut this._config_dir,
            tempfile::tempdir().expect("temp dir"),
        );
        drop(this);
        Self::spawn(config_path, data_dir, config_dir, owned)
    }
}

impl Drop for CseProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The oneM2M HTTP client
// ---------------------------------------------------------------------------------------------

static RQI: AtomicU64 = AtomicU64::new(1);

/// A fresh request identifier.
pub fn rqi() -> String {
    format!(
        "test-{}-{}",
        std::process::id(),
        RQI.fetch_add(1, Ordering::Relaxed)
    )
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// X-M2M-RSC as a number (0 when absent).
    pub rsc: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The JSON body (`Null` when empty), or a string holding non-JSON text.
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// `m2m:dbg` of an error answer.
    pub fn dbg(&self) -> Option<&str> {
        self.body.get("m2m:dbg").and_then(Value::as_str)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build()
}

/// Sends a raw HTTP request to `base` + `path` (path may carry a query) with exactly the given headers.
pub fn raw(method: &str, base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    try_raw(method, base, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {base}{path}: transport error: {e}"))
}

/// Like [`raw`], but a transport failure (connection refused or reset) is an `Err`.
pub fn try_raw(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let url = format!("{base}{path}");
    let mut req = agent().request(method, &url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = if body.is_empty() && method != "POST" && method != "PUT" {
        req.call()
    } else {
        req.send_bytes(body)
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let status = resp.status();
    let mut headers = HashMap::new();
    for name in resp.headers_names() {
        if let Some(v) = resp.header(&name) {
            headers.insert(name.to_ascii_lowercase(), v.to_owned());
        }
    }
    let rsc = headers
        .get("x-m2m-rsc")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let text = resp.into_string().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(Resp {
        status,
        rsc,
        headers,
        body,
    })
}

/// A oneM2M request over HTTP with X-M2M-Origin (when `from` is given), X-M2M-RI and X-M2M-RVI: 3.
pub fn request(
    method: &str,
    base: &str,
    path: &str,
    from: Option<&str>,
    ty: Option<u16>,
    body: Option<&Value>,
) -> Resp {
    try_request(method, base, path, from, ty, body)
        .unwrap_or_else(|e| panic!("{method} {base}{path}: transport error: {e}"))
}

/// Like [`request`], but a transport failure is an `Err`.
pub fn try_request(
    method: &str,
    base: &str,
    path: &str,
    from: Option<&str>,
    ty: Option<u16>,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let ri = rqi();
    let ct = match ty {
        Some(ty) => format!("application/json;ty={ty}"),
        None => "application/json".to_owned(),
    };
    let mut headers: Vec<(&str, &str)> = vec![("X-M2M-RI", &ri), ("X-M2M-RVI", "3")];
    if let Some(f) = from {
        headers.push(("X-M2M-Origin", f));
    }
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
    if bytes.is_some() || ty.is_some() {
        headers.push(("Content-Type", &ct));
    }
    headers.push(("Accept", "application/json"));
    try_raw(
        method,
        base,
        path,
        &headers,
        bytes.as_deref().unwrap_or(&[]),
    )
}

/// CREATE (POST with `ty`).
pub fn create_full(base: &str, to: &str, from: &str, ty: u16, body: Value) -> Resp {
    request("POST", base, to, Some(from), Some(ty), Some(&body))
}

pub fn create(base: &str, to: &str, from: &str, ty: u16, body: Value) -> (u16, Value) {
    let r = create_full(base, to, from, ty, body);
    (r.rsc, r.body)
}

pub fn retrieve_full(base: &str, to: &str, from: &str) -> Resp {
    request("GET", base, to, Some(from), None, None)
}

pub fn retrieve(base: &str, to: &str, from: &str) -> (u16, Value) {
    let r = retrieve_full(base, to, from);
    (r.rsc, r.body)
}

/// RETRIEVE with a query string, e.g. `fu=1&ty=3` (without the `?`).
pub fn get_with_query_full(base: &str, to: &str, from: &str, query: &str) -> Resp {
    request(
        "GET",
        base,
        &format!("{to}?{query}"),
        Some(from),
        None,
        None,
    )
}

pub fn get_with_query(base: &str, to: &str, from: &str, query: &str) -> (u16, Value) {
    let r = get_with_query_full(base, to, from, query);
    (r.rsc, r.body)
}

pub fn update(base: &str, to: &str, from: &str, body: Value) -> (u16, Value) {
    let r = request("PUT", base, to, Some(from), None, Some(&body));
    (r.rsc, r.body)
}

pub fn delete(base: &str, to: &str, from: &str) -> (u16, Value) {
    let r = request("DELETE", base, to, Some(from), None, None);
    (r.rsc, r.body)
}

/// NOTIFY (POST without `ty`).
pub fn notify(base: &str, to: &str, from: &str, body: Value) -> (u16, Value) {
    let r = request("POST", base, to, Some(from), None, Some(&body));
    (r.rsc, r.body)
}

/// Registers an AE under the CSEBase `cb` (e.g. `/cse-in`) and returns its AE-ID.
pub fn register_ae(base: &str, cb: &str, from: &str, rn: &str, poa: &[&str]) -> String {
    let mut ae = json!({ "rn": rn, "api": "Ntest", "rr": !poa.is_empty(), "srv": ["3"] });
    if !poa.is_empty() {
        ae["poa"] = json!(poa);
    }
    let (rsc, body) = create(base, cb, from, 2, json!({ "m2m:ae": ae }));
    assert_eq!(rsc, 2001, "AE registration of '{rn}' from '{from}': {body}");
    body["m2m:ae"]["aei"]
        .as_str()
        .unwrap_or_else(|| panic!("registration answer has no aei: {body}"))
        .to_owned()
}

/// Creates a container and returns its resourceID.
/// The AE `phone` (`C`, no requestReachability) registered with `cse`'s `/cse-in` over `client`'s
/// association (TLS-PSK or certificate): the handshake's and the request's fate.
pub fn register_phone_ae(client: &TlsClient, cse: &CseProcess) -> Result<Resp, String> {
    let body = json!({ "m2m:ae": { "rn": "phone", "api": "Nphone", "rr": false, "srv": ["3"] } });
    client.request(
        cse.https_url(),
        "POST",
        "/cse-in",
        Some("C"),
        Some(2),
        Some(&body),
    )
}

pub fn create_cnt(base: &str, parent: &str, from: &str, attrs: Value) -> String {
    let (rsc, body) = create(base, parent, from, 3, json!({ "m2m:cnt": attrs }));
    assert_eq!(rsc, 2001, "container creation under {parent}: {body}");
    body["m2m:cnt"]["ri"].as_str().expect("cnt ri").to_owned()
}

/// Creates a contentInstance and returns its resourceID.
pub fn create_cin(base: &str, parent: &str, from: &str, con: &str) -> String {
    let (rsc, body) = create(base, parent, from, 4, json!({ "m2m:cin": { "con": con } }));
    assert_eq!(rsc, 2001, "contentInstance creation under {parent}: {body}");
    body["m2m:cin"]["ri"].as_str().expect("cin ri").to_owned()
}
/// The `m2m:uril` of a discovery answer (panics without one).
pub fn uril(b: &Value) -> Vec<String> {
    b["m2m:uril"]
        .as_array()
        .unwrap_or_else(|| panic!("no m2m:uril in {b}"))
        .iter()
        .map(|v| v.as_str().expect("uril entries are strings").to_owned())
        .collect()
}

/// Polls `f` until it returns `Some` or the timeout passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// The notification receiver
// ---------------------------------------------------------------------------------------------

/// One request received by a [`Receiver`].
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Received {
    /// The `m2m:sgn` of a notification (Null otherwise).
    pub fn sgn(&self) -> &Value {
        self.body.get("m2m:sgn").unwrap_or(&Value::Null)
    }

    pub fn is_verification(&self) -> bool {
        self.sgn().get("vrq").and_then(Value::as_bool) == Some(true)
    }

    /// notificationEventType, if this is an event notification.
    pub fn net(&self) -> Option<u64> {
        self.sgn().pointer("/nev/net").and_then(Value::as_u64)
    }

    pub fn rep(&self) -> &Value {
        self.sgn().pointer("/nev/rep").unwrap_or(&Value::Null)
    }

    pub fn sur(&self) -> Option<&str> {
        self.sgn().get("sur").and_then(Value::as_str)
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    /// The X-M2M-RSC answered (2000 unless told otherwise).
    answer_rsc: Mutex<u16>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers `X-M2M-RSC: 2000`.
pub struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            answer_rsc: Mutex::new(2000),
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve_connection(stream, &st));
            }
        });
        Receiver { url, state }
    }

    /// The receiver's URL, usable as a notificationURI or pointOfAccess.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, answer with this X-M2M-RSC (e.g. 4103 to refuse verification).
    pub fn answer_with(&self, rsc: u16) {
        *self
            .state
            .answer_rsc
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = rsc;
    }

    pub fn all(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn count(&self, pred: impl Fn(&Received) -> bool) -> usize {
        self.all().iter().filter(|r| pred(r)).count()
    }

    /// Waits until a received request satisfies `pred` and returns it; panics with everything
    /// received so far on timeout.
    pub fn wait_for(&self, pred: impl Fn(&Received) -> bool, timeout: Duration) -> Received {
        self.try_wait_for(&pred, timeout).unwrap_or_else(|| {
            panic!(
                "no matching request at {} within {timeout:?}; received:\n{:#?}",
                self.url,
                self.all()
            )
        })
    }

    pub fn try_wait_for(
        &self,
        pred: impl Fn(&Received) -> bool,
        timeout: Duration,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = self
            .state
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = got.iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            got = self
                .state
                .arrived
                .wait_timeout(got, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `n` requests satisfy `pred`; returns them.
    pub fn wait_for_n(
        &self,
        n: usize,
        pred: impl Fn(&Received) -> bool,
        timeout: Duration,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Received> = self.all().into_iter().filter(|r| pred(r)).collect();
            if found.len() >= n {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected {n} matching requests at {} within {timeout:?}, got {}; received:\n{:#?}",
                    self.url,
                    found.len(),
                    self.all()
                );
            }
            let guard = self
                .state
                .received
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let _ = self
                .state
                .arrived
                .wait_timeout(guard, Duration::from_millis(50));
        }
    }
}

/// Serves one (keep-alive) connection: every request is recorded and answered.
fn serve_connection(stream: TcpStream, st: &ReceiverState) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let request_line = request_line.trim_end().to_owned();
        if request_line.is_empty() {
            continue;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            match read_chunked(&mut reader) {
                Some(b) => b,
                None => return,
            }
        } else {
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        // A CBOR notification (by its content type) decodes to the same JSON value.
        let cbor = headers
            .get("content-type")
            .is_some_and(|ct| ct.contains("cbor"));
        let body = if body.is_empty() {
            Value::Null
        } else if cbor {
            m2m_core::serialization::Serialization::Cbor
                .decode(&body)
                .unwrap_or_else(|_| Value::String("undecodable CBOR".into()))
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        let rqi = headers.get("x-m2m-ri").cloned().unwrap_or_default();
        let rsc = *st.answer_rsc.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut got = st.received.lock().unwrap_or_else(|e| e.into_inner());
            got.push(Received {
                method,
                path,
                headers,
                body,
            });
            st.arrived.notify_all();
        }
        let status = match rsc {
            2000..=2999 => "200 OK",
            4004 => "404 Not Found",
            4103 => "403 Forbidden",
            4000..=4999 => "400 Bad Request",
            _ => "500 Internal Server Error",
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nX-M2M-RSC: {rsc}\r\nX-M2M-RI: {rqi}\r\nContent-Length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).ok()? == 0 || l.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
    }
}

/// A port on 127.0.0.1 with nothing listening (bound then released).
pub fn unused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Standard timeout for asynchronous effects (notifications, registration).
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Two CSEs: an IN-CSE and an MN-CSE registered with it
// ---------------------------------------------------------------------------------------------

/// The SP-FQDN of the test deployments (`//m2m.example.com`).
pub const SP_FQDN: &str = "m2m.example.com";
/// The IN-CSE's name in its certificate (`<cse-id>.<sp>`), used as SNI and verified name.
pub const IN_SERVER_NAME: &str = "id-in.m2m.example.com";

/// The `[tls]` section of a CSE using the certificate `name` of `pki` (e.g. `id-in`), listening
/// on a free loopback port.
pub fn tls_section(pki: &Pki, name: &str) -> String {
    let (pem, key) = pki.cse_cert(name);
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\n",
        pem.display().to_string(),
        key.display().to_string(),
        pki.ca_pem().display().to_string()
    )
}

/// Registration rules for an IN-CSE whose MN-CSEs register S-stem AEs over security
/// associations: the IN-CSE judges each announcement by its rules with the AE's Credential-ID
/// (TS-0001 clause 10.2.2.2 step 006b), and the embedded default admits AEs without one only.
pub const IN_ADMITS_MN_CREDENTIALS: &str =
    "\n[[registration.rules]]\naai = [\"*\"]\naae = [\"C*\", \"S*\"]\n\
     [[registration.rules]]\napci = [\"*\"]\naai = [\"*\"]\naae = [\"S*\"]\n";

/// The configuration of an IN-CSE `/id-in` (`cse-in`) with a TLS listener for its CSE peers; its
/// AEs keep using the loopback plain listener.
pub fn in_tls_config(pki: &Pki) -> String {
    tls_section(pki, "id-in")
}

/// The configuration of an MN-CSE `/id-mn` (`cse-mn`) registering over mutual TLS with the
/// IN-CSE at `in_https_url` (TS-0003 clause 8.2.2.2: certificate-based SAEF on Mcc).
pub fn mn_config(in_https_url: &str, pki: &Pki) -> String {
    format!(
        "[cse]\nrole = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n\
         sp_id = \"//m2m.example.com\"\nadmin_originator = \"CAdmin\"\n\n\
         [registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nurl = \"{in_https_url}\"\n\
         server_name = \"{IN_SERVER_NAME}\"\n\n{}",
        tls_section(pki, "id-mn")
    )
}

/// Waits until the MN is registered: the IN holds `<remoteCSE>` id-mn and the MN holds id-in.
pub fn wait_registered(in_cse: &CseProcess, mn: &CseProcess) {
    let ok = poll(WAIT, || {
        let (a, _) = retrieve(in_cse.url(), "/cse-in/id-mn", "CAdmin");
        let (b, _) = retrieve(mn.url(), "/cse-mn/id-in", "CAdmin");
        (a == 2000 && b == 2000).then_some(())
    });
    if ok.is_none() {
        panic!(
            "the MN did not register within {WAIT:?}\nIN stderr:\n{}\nMN stderr:\n{}",
            in_cse.stderr(),
            mn.stderr()
        );
    }
}

/// Starts an IN-CSE and an MN-CSE that registers with it over mutual TLS (certificates from a
/// fresh [`Pki`] made by `m2m pki`), and waits for the registration. Each CSE also keeps its
/// loopback plain listener for its own AEs and the admin: `url()` is that one, `https_url()`
/// the TLS listener.
pub fn start_in_mn_tls() -> (CseProcess, CseProcess, Pki) {
    let pki = Pki::temp();
    let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
    let mn = CseProcess::start_temp(&mn_config(in_cse.https_url(), &pki));
    wait_registered(&in_cse, &mn);
    (in_cse, mn, pki)
}

/// Three tiers: an IN-CSE, an MN-CSE `/id-mn` registered with it, and an MN-CSE `/id-mn2`
/// (`cse-mn2`) registered with the MN, each over mutual TLS; waits for both registrations and
/// for the IN to list the second MN among the first one's descendantCSEs.
pub fn start_three_tiers() -> (CseProcess, CseProcess, CseProcess, Pki) {
    let pki = Pki::temp();
    pki.issue(&["--kind", "cse", "--id", "/id-mn2"], "id-mn2");
    let (in_cse, mn) = {
        let in_cse = CseProcess::start_temp(&in_tls_config(&pki));
        let mn = CseProcess::start_temp(&mn_config(in_cse.https_url(), &pki));
        wait_registered(&in_cse, &mn);
        (in_cse, mn)
    };
    let mn2 = CseProcess::start_temp(&format!(
        "[cse]\nrole = \"MN\"\ncse_id = \"/id-mn2\"\nresource_name = \"cse-mn2\"\n\
         sp_id = \"//m2m.example.com\"\nadmin_originator = \"CAdmin\"\nin_cse_id = \"/id-in\"\n\n\
         [registrar]\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\nurl = \"{}\"\n\
         server_name = \"id-mn.id-in.m2m.example.com\"\n\n{}",
        mn.https_url(),
        tls_section(&pki, "id-mn2")
    ));
    let registered = poll(WAIT, || {
        (retrieve(mn.url(), "/cse-mn/id-mn2", "CAdmin").0 == 2000).then_some(())
    });
    assert!(
        registered.is_some(),
        "MN:\n{}\nMN2:\n{}",
        mn.stderr(),
        mn2.stderr()
    );
    // And the IN knows the second MN as the first one's descendant (its dcse).
    let listed = poll(WAIT, || {
        let (_, csr) = retrieve(in_cse.url(), "/cse-in/id-mn", "CAdmin");
        (csr["m2m:csr"]["dcse"] == json!(["/id-mn2"])).then_some(())
    });
    assert!(listed.is_some(), "MN:\n{}", mn.stderr());
    (in_cse, mn, mn2, pki)
}

/// `m2m ae` running, its stdout as JSON lines; killed when dropped.
pub struct AeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl AeProcess {
    pub fn start(config: &Path) -> AeProcess {
        Self::start_with_stderr(config, Stdio::null())
    }

    /// Starts `m2m ae` with its log (stderr) in the file `log`.
    pub fn start_logged(config: &Path, log: &Path) -> AeProcess {
        let file = std::fs::File::create(log).expect("the AE's log file");
        Self::start_with_stderr(config, Stdio::from(file))
    }

    fn start_with_stderr(config: &Path, stderr: Stdio) -> AeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args(["ae", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start m2m ae");
        let (tx, lines) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        AeProcess { child, lines }
    }

    pub fn next(&self, what: &str, cse: &CseProcess) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the AE printed no {what}:\n{}", cse.stderr()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    /// The `ready` line: its pointOfAccess.
    pub fn ready(&self, cse: &CseProcess) -> Value {
        loop {
            let line = self.next("ready line", cse);
            if line.get("ready").is_some() {
                return line["ready"].clone();
            }
        }
    }

    /// The next event notification (verification requests skipped).
    pub fn event(&self, cse: &CseProcess) -> Value {
        loop {
            let note = self.next("notification", cse);
            if note["notification"]["verification"] != json!(true) {
                return note;
            }
        }
    }

    /// Whether the AE printed anything within `wait`.
    pub fn silent_for(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }
}

impl Drop for AeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The PKI: a CA and certificates issued by the `m2m pki` command
// ---------------------------------------------------------------------------------------------

/// Runs the `m2m` binary with `args` and returns its output; panics with stderr when it fails.
pub fn m2m(args: &[&str]) -> std::process::Output {
    let out = m2m_command(args);
    assert!(
        out.status.success(),
        "m2m {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A token issuer's signing key made in `dir` by `m2m e2e keygen` (EC, kid `das-tokens`): the
/// private JWK `das-tokens.jwk` that `m2m das` signs with, and the public one
/// `das-tokens.pub.jwk` that a CSE's `[[dynamic_authorization.token_issuers]]` names; returns
/// the public key's path.
pub fn token_issuer_key(dir: &Path) -> PathBuf {
    let out = m2m(&[
        "e2e",
        "keygen",
        "--kty",
        "ec",
        "--kid",
        "das-tokens",
        "--out",
        dir.join("das-tokens.jwk").to_str().expect("UTF-8 path"),
    ]);
    let public_key = dir.join("das-tokens.pub.jwk");
    std::fs::write(&public_key, String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    public_key
}

/// The JSON document an `m2m` command printed on stdout; panics with its stdout and stderr when
/// there is none.
pub fn json_stdout(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "no JSON on stdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs the `m2m` binary with `args` (whatever the outcome).
pub fn m2m_command(args: &[&str]) -> std::process::Output {
    m2m_command_env(args, &[])
}

/// Runs the `m2m` binary with `args` and the extra environment `env` (whatever the outcome).
pub fn m2m_command_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the m2m binary")
}

/// A root CA (`DIR/ca/ca.pem`) for the SP `m2m.example.com` and the CSE certificates of `/id-in`
/// and `/id-mn` (`DIR/id-in.pem`/`.key`, ...), all made by `m2m pki`.
pub struct Pki {
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Pki {
    /// Makes the CA and the CSE certificates in `dir`.
    pub fn new(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_owned(),
            _owned: None,
        };
        let ca = pki.ca_dir();
        m2m(&["pki", "ca", "--out", &ca.to_string_lossy(), "--sp", SP_FQDN]);
        for id in ["/id-in", "/id-mn"] {
            pki.issue(&["--kind", "cse", "--id", id], &id[1..]);
        }
        pki
    }

    /// A PKI in a temporary directory it owns.
    pub fn temp() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir for the PKI");
        let mut pki = Pki::new(dir.path());
        pki._owned = Some(dir);
        pki
    }

    /// A CA only, in a temporary directory it owns, that may also certify the DNS names under
    /// `domain` (the key services' FQDNs); the test issues the leaves it needs.
    pub fn temp_ca_permitting_dns(domain: &str) -> Pki {
        let owned = tempfile::tempdir().expect("temp dir for the PKI");
        let pki = Pki {
            dir: owned.path().to_owned(),
            _owned: Some(owned),
        };
        let ca = pki.ca_dir();
        m2m(&[
            "pki",
            "ca",
            "--out",
            &ca.to_string_lossy(),
            "--sp",
            SP_FQDN,
            "--permit-dns",
            domain,
        ]);
        pki
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory `m2m pki issue --ca` takes.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The root certificate (the root of trust of every CSE).
    pub fn ca_pem(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    /// The certificate chain and key of CSE `name` (`id-in` or `id-mn`).
    pub fn cse_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// `m2m pki issue --ca CA --sp m2m.example.com --out DIR/<name> ARGS...`: returns the chain
    /// (PEM, leaf then CA) and the key.
    pub fn issue(&self, args: &[&str], name: &str) -> (PathBuf, PathBuf) {
        let prefix = self.dir.join(name);
        let ca = self.ca_dir();
        let mut all = vec![
            "pki",
            "issue",
            "--ca",
            ca.to_str().expect("UTF-8 path"),
            "--sp",
            SP_FQDN,
            "--out",
            prefix.to_str().expect("UTF-8 path"),
        ];
        all.extend_from_slice(args);
        m2m(&all);
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Requests over a security association (TLS 1.2, the oneM2M profile suites)
// ---------------------------------------------------------------------------------------------

/// A TLS client (the `openssl` crate, configured here, not by the CSE's code): either a
/// certificate and key verified against a root, or a PSK.
pub struct TlsClient {
    ctx: openssl::ssl::SslContext,
    server_name: Option<String>,
}

impl TlsClient {
    /// Mutual TLS with `ECDHE-ECDSA-AES128-SHA256`; the server must present a certificate for
    /// `server_name` that chains to `ca`.
    pub fn certificate(ca: &Path, chain: &Path, key: &Path, server_name: &str) -> TlsClient {
        use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).expect("TLS context");
        b.set_min_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_cipher_list("ECDHE-ECDSA-AES128-SHA256").unwrap();
        b.set_ca_file(ca).expect("CA file");
        b.set_certificate_chain_file(chain)
            .expect("certificate chain");
        b.set_private_key_file(key, SslFiletype::PEM)
            .expect("private key");
        b.set_verify(SslVerifyMode::PEER);
        TlsClient {
            ctx: b.build(),
            server_name: Some(server_name.to_owned()),
        }
    }

    /// TLS-PSK with `PSK-AES128-CBC-SHA256`.
    pub fn psk(identity: &str, key_hex: &str) -> TlsClient {
        use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
        let key: Vec<u8> = (0..key_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).expect("hex key"))
            .collect();
        let identity = identity.to_owned();
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).expect("TLS context");
        b.set_min_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        b.set_cipher_list("PSK-AES128-CBC-SHA256").unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_psk_client_callback(move |_ssl, _hint, id_out, psk_out| {
            let id = identity.as_bytes();
            id_out[..id.len()].copy_from_slice(id);
            id_out[id.len()] = 0;
            psk_out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        TlsClient {
            ctx: b.build(),
            server_name: None,
        }
    }

    /// One oneM2M request over a new TLS connection to `https_url`; `Err` when the connection
    /// or the handshake fails.
    pub fn request(
        &self,
        https_url: &str,
        method: &str,
        path: &str,
        from: Option<&str>,
        ty: Option<u16>,
        body: Option<&Value>,
    ) -> Result<Resp, String> {
        let addr = https_url
            .strip_prefix("https://")
            .ok_or_else(|| format!("not an https URL: {https_url}"))?;
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(15))).ok();
        let mut ssl = openssl::ssl::Ssl::new(&self.ctx).map_err(|e| e.to_string())?;
        if let Some(name) = &self.server_name {
            ssl.set_hostname(name).map_err(|e| e.to_string())?;
            ssl.param_mut().set_host(name).map_err(|e| e.to_string())?;
        }
        let mut tls = ssl
            .connect(tcp)
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        let host = self.server_name.as_deref().unwrap_or(addr);
        tls.write_all(&http_request(method, host, path, from, ty, body))
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        // A close without close_notify still ends the answer.
        let _ = tls.read_to_end(&mut answer);
        parse_http_response(&answer).ok_or_else(|| {
            format!(
                "no HTTP response over TLS: {:?}",
                String::from_utf8_lossy(&answer)
            )
        })
    }
}

/// A oneM2M request as HTTP/1.1 bytes with `Connection: close` (for raw clients: TLS peers,
/// `openssl s_client`, `gnutls-cli`).
pub fn http_request(
    method: &str,
    host: &str,
    path: &str,
    from: Option<&str>,
    ty: Option<u16>,
    body: Option<&Value>,
) -> Vec<u8> {
    let body = body
        .map(|b| serde_json::to_vec(b).expect("JSON"))
        .unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-M2M-RI: {}\r\nX-M2M-RVI: 3\r\nAccept: application/json\r\n",
        rqi()
    );
    if let Some(f) = from {
        head.push_str(&format!("X-M2M-Origin: {f}\r\n"));
    }
    match ty {
        Some(ty) => head.push_str(&format!("Content-Type: application/json;ty={ty}\r\n")),
        None if !body.is_empty() => head.push_str("Content-Type: application/json\r\n"),
        None => {}
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Parses the first HTTP/1.x response found in `bytes` (tools may print other lines before it).
pub fn parse_http_response(bytes: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("HTTP/1.")?;
    let text = &text[start..];
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body_text = match headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        Some(n) => rest.get(..n).unwrap_or(rest),
        None => rest,
    };
    let rsc = headers
        .get("x-m2m-rsc")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = if body_text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body_text).unwrap_or(Value::String(body_text.to_owned()))
    };
    Some(Resp {
        status,
        rsc,
        headers,
        body,
    })
}

/// Writes a file with mode 0600 (configurations holding keys must not be readable by others).
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, 0o600);
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Runs `m2m cse --config` on `config_text` (written with `mode`, the harness adding nothing)
/// and expects the process to exit within 20 s; returns (success, stdout, stderr). A CSE that
/// starts listening instead is killed and the test fails.
pub fn cse_exit(config_text: &str, mode: u32) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cse.toml");
    std::fs::write(&path, config_text).expect("write config");
    set_mode(&path, mode);
    let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .arg("cse")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the m2m binary");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "m2m cse kept running on a configuration it should refuse:\n{config_text}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Access control
// ---------------------------------------------------------------------------------------------

/// accessControlOperations bits (TS-0004 table 6.3.4.2.29-1).
pub const OP_CREATE: u64 = 1;
pub const OP_RETRIEVE: u64 = 2;
pub const OP_UPDATE: u64 = 4;
pub const OP_DELETE: u64 = 8;
pub const OP_NOTIFY: u64 = 16;
pub const OP_DISCOVERY: u64 = 32;
pub const OP_ALL: u64 = 63;

/// One accessControlRule: the originators and the operations they may perform.
pub fn acr(originators: &[&str], ops: u64) -> Value {
    json!({ "acor": originators, "acop": ops })
}

/// Creates an <accessControlPolicy> `rn` under `parent` with the rules `pv` (privileges) and `pvs`
/// (selfPrivileges); returns its resourceID.
pub fn create_acp(
    base: &str,
    parent: &str,
    from: &str,
    rn: &str,
    pv: Vec<Value>,
    pvs: Vec<Value>,
) -> String {
    let body = json!({ "m2m:acp": { "rn": rn, "pv": { "acr": pv }, "pvs": { "acr": pvs } } });
    let (rsc, b) = create(base, parent, from, 1, body);
    assert_eq!(rsc, 2001, "ACP {rn} under {parent} from {from}: {b}");
    b["m2m:acp"]["ri"].as_str().expect("acp ri").to_owned()
}

/// Sets the accessControlPolicyIDs of `target` (an acpi-only UPDATE); `root` is its short
/// resource name, e.g. `m2m:cnt`.
pub fn set_acpi(base: &str, target: &str, from: &str, root: &str, acpi: &[&str]) {
    let (rsc, b) = update(base, target, from, json!({ root: { "acpi": acpi } }));
    assert_eq!(rsc, 2004, "acpi of {target} from {from}: {b}");
}

// ---------------------------------------------------------------------------------------------
// Key-service processes (`m2m maf`, `m2m mef`)
// ---------------------------------------------------------------------------------------------

/// A running `m2m maf` or `m2m mef` child process, killed when dropped.
pub struct ServiceProcess {
    child: Child,
    /// The process's stderr (its log), `DIR/<what>.log`.
    log: PathBuf,
    /// `https://ADDR`.
    url: String,
    /// The lines it printed before the listening line (a BSF's Ub address).
    pub preamble: Vec<String>,
}

impl ServiceProcess {
    /// Writes `config` (mode 0600) to `DIR/<what>.toml`, starts `m2m <what> --config` with its
    /// stderr in `DIR/<what>.log` and waits for its `m2m-<what> listening https://ADDR` line.
    pub fn start(what: &str, dir: &Path, config: &str) -> ServiceProcess {
        Self::start_with_env(what, dir, config, &[])
    }

    /// [`ServiceProcess::start`] with these environment variables set for the process.
    pub fn start_with_env(
        what: &str,
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        let path = dir.join(format!("{what}.toml"));
        write_private(&path, config);
        let log = dir.join(format!("{what}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_m2m"))
            .args([what, "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the service log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start m2m {what}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let prefix = format!("m2m-{what} listening https://");
        let mut service = ServiceProcess {
            child,
            log,
            url: String::new(),
            preamble: Vec::new(),
        };
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = service.child.wait();
                panic!("m2m {what} exited before listening:\n{}", service.stderr());
            };
            if let Some(addr) = line.strip_prefix(&prefix) {
                break addr.to_owned();
            }
            service.preamble.push(line);
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        service.url = format!("https://{addr}");
        service
    }

    /// `https://ADDR`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ADDR` (host:port), as the key-service clients take it.
    pub fn addr(&self) -> &str {
        &self.url["https://".len()..]
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process's log shows `text` within 5 s (a line may land just after the
    /// request that caused it was answered).
    pub fn logged(&self, text: &str) -> bool {
        poll(Duration::from_secs(5), || {
            self.stderr().contains(text).then_some(())
        })
        .is_some()
    }

    /// Stops the process (the service is down from here on).
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    /// Waits for the process to exit (after `kill`, for its log to be complete).
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `m2m maf` for the SP `m2m.example.com` on 127.0.0.1:0 with the certificate `maf.pem`/`maf.key`
/// the test issued in `pki`, storing in `maf-data` there under the storage key `storage.key`
/// (written here); `extra` adds its `[[km]]` rows, `[ttp]` or `[mef]` sections.
pub fn start_maf_process(pki: &Pki, fqdn: &str, extra: &str) -> ServiceProcess {
    let dir = pki.dir();
    let storage_key = dir.join("storage.key");
    write_private(&storage_key, &"ab".repeat(32));
    let config = format!(
        "fqdn = \"{fqdn}\"\nsp_fqdn = \"{SP_FQDN}\"\nlisten = \"127.0.0.1:0\"\n\
         certificate = {:?}\nprivate_key = {:?}\ntrusted_ca = {:?}\nstorage = {:?}\n\
         storage_key_file = {:?}\n{extra}",
        dir.join("maf.pem").display().to_string(),
        dir.join("maf.key").display().to_string(),
        pki.ca_pem().display().to_string(),
        dir.join("maf-data").display().to_string(),
        storage_key.display().to_string(),
    );
    ServiceProcess::start("maf", dir, &config)
}

/// A client of the MAF on its Km (TLS-PSK) that has registered itself with the MAF.
pub async fn registered_km_client(
    maf_url: &str,
    maf_fqdn: &str,
    km_id: &str,
    km: &m2m_security::credentials::Secret,
) -> m2m_keyservices::maf::MafClient {
    let mut maf = m2m_keyservices::maf::MafClient::connect_psk(maf_url, maf_fqdn, km_id, km)
        .await
        .expect("Km association with the MAF");
    maf.register_client(None)
        .await
        .expect("client registration");
    maf
}

// ---------------------------------------------------------------------------------------------
// Secrets in what a user or an operator sees
// ---------------------------------------------------------------------------------------------

/// Asserts that none of `secrets` (raw key bytes) appears in any of `texts` (logs, outputs,
/// captures) in the encodings a key is written in: hex in either case, base64url and base64
/// (padded or not).
pub fn assert_no_secret<T: AsRef<str>, K: AsRef<[u8]>>(texts: &[T], secrets: &[K]) {
    for (i, secret) in secrets.iter().enumerate() {
        let raw = secret.as_ref();
        assert!(!raw.is_empty(), "secret #{i} is empty: nothing to look for");
        let encodings = [
            ("lower-case hex", hex::encode(raw)),
            ("upper-case hex", hex::encode_upper(raw)),
            ("base64url", b64url(raw)),
            ("base64", b64(raw).trim_end_matches('=').to_owned()),
        ];
        for (j, text) in texts.iter().enumerate() {
            for (name, encoded) in &encodings {
                assert!(
                    !text.as_ref().contains(encoded.as_str()),
                    "secret #{i} reached text #{j} in {name}"
                );
            }
        }
    }
}

/// The raw bytes of a key given in hex (the form of configuration rows and constants).
pub fn unhex(key_hex: &str) -> Vec<u8> {
    hex::decode(key_hex).expect("hex key")
}

// ---------------------------------------------------------------------------------------------
// Third-party peers
// ---------------------------------------------------------------------------------------------

/// Whether `program` runs (`program version_arg`); outside CI a missing one skips loudly, in CI
/// it fails (`.ci/run` installs it). `purpose` names the check that needs it.
pub fn have_tool(program: &str, version_arg: &str, purpose: &str) -> bool {
    let found = Command::new(program)
        .arg(version_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found_or_skip(program, found, purpose)
}

/// Like [`have_tool`] for a program with no option that exits 0 (libcoap's clients): whether it
/// can be started at all.
pub fn have_program(program: &str, purpose: &str) -> bool {
    found_or_skip(program, starts(program, &[]), purpose)
}

/// Like [`have_tool`] for a program whose every option exits non-zero (mosquitto's): whether
/// `program -h` can be started.
pub fn can_start(program: &str, purpose: &str) -> bool {
    found_or_skip(program, starts(program, &["-h"]), purpose)
}

/// Whether `program ARGS` can be started, whatever it exits with.
fn starts(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether python3 imports `module`; missing: skipped loudly outside CI, a failure in CI.
pub fn have_python_module(module: &str, purpose: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found_or_skip(&format!("python3 module {module}"), found, purpose)
}

fn found_or_skip(program: &str, found: bool, purpose: &str) -> bool {
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("`{program}` is not installed, and CI=true: .ci/run must install it");
        }
        // Straight to the process's stderr: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!! SKIPPED: `{program}` is not installed; {purpose} needs it. \
             In CI it is mandatory. !!!!!!!!!!\n"
        );
    }
    found
}

// ---------------------------------------------------------------------------------------------
// An intermediate on the path: a recording (and, for ESPrim, tampering) HTTP relay
// ---------------------------------------------------------------------------------------------

/// base64url without padding (JOSE's encoding).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// base64 with padding (the encoding of `eckm` and of most JSON byte strings).
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What the relay does to the `epo` of a sit 5 request.
#[derive(Clone)]
pub enum Tamper {
    /// Forward as received: the relay only records.
    Nothing,
    FlipCiphertext,
    Kid(&'static str),
}

/// An HTTP forwarder to `upstream` (one request per connection): records all bytes both ways and
/// the last sit 5 request, and tampers with its `epo` as told.
pub struct Relay {
    pub url: String,
    tamper: Arc<Mutex<Tamper>>,
    seen: Arc<Mutex<Vec<u8>>>,
    /// The head and `epo` of the last ESPrim-protected request (sit 5) that passed.
    pub last_esprim: Arc<Mutex<Option<(String, String)>>>,
}

/// Reads one HTTP message (head and Content-Length body) from `s`.
fn read_message(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The head with another Content-Length and `Connection: close` (so upstream's answer ends).
fn rewrite_head(head: &str, len: usize) -> String {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if name != "content-length" && name != "connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out + &format!("Content-Length: {len}\r\nConnection: close\r\n\r\n")
}

/// The JWE with one header member replaced (the header is the AEAD's associated data).
pub fn with_header(jwe: &str, name: &str, value: Value) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
    let mut h = m2m_security::e2e::jose::decode_header(&parts[0]).expect("JWE header");
    h.insert(name.into(), value);
    parts[0] = b64url(&serde_json::to_vec(&h).unwrap());
    parts.join(".")
}

/// The JWE with the first character of its ciphertext changed (same header and IV).
pub fn flip_ciphertext(jwe: &str) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
    let c = parts[3].remove(0);
    parts[3].insert(0, if c == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

impl Relay {
    /// A relay in front of `upstream` (`http://HOST:PORT`) that forwards untouched until told.
    pub fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let relay = Relay {
            url,
            tamper: Arc::new(Mutex::new(Tamper::Nothing)),
            seen: Arc::default(),
            last_esprim: Arc::default(),
        };
        let (tamper, seen, last) = (
            relay.tamper.clone(),
            relay.seen.clone(),
            relay.last_esprim.clone(),
        );
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let Some((head, body)) = read_message(&mut client) else {
                    continue;
                };
                let body = tampered(&head, body, &tamper, &last);
                let mut up = TcpStream::connect(&upstream).expect("upstream");
                let req = [rewrite_head(&head, body.len()).into_bytes(), body].concat();
                up.write_all(&req).unwrap();
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer);
                {
                    let mut s = seen.lock().unwrap();
                    s.extend_from_slice(&req);
                    s.extend_from_slice(&answer);
                }
                let _ = client.write_all(&answer);
            }
        });
        relay
    }

    pub fn set(&self, t: Tamper) {
        *self.tamper.lock().unwrap() = t;
    }

    /// Every byte the relay carried, both ways.
    pub fn seen_bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// What the relay carried, as text.
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen_bytes()).into_owned()
    }
}

/// The body to forward: a sit 5 request's `epo` is recorded and tampered with as told.
fn tampered(
    head: &str,
    body: Vec<u8>,
    tamper: &Mutex<Tamper>,
    last: &Mutex<Option<(String, String)>>,
) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let Some(epo) = v["m2m:seci"]["epo"].as_str().map(str::to_owned) else {
        return body;
    };
    *last.lock().unwrap() = Some((head.to_owned(), epo.clone()));
    v["m2m:seci"]["epo"] = json!(match tamper.lock().unwrap().clone() {
        Tamper::Nothing => epo,
        Tamper::FlipCiphertext => flip_ciphertext(&epo),
        Tamper::Kid(k) => with_header(&epo, "kid", json!(k)),
    });
    serde_json::to_vec(&v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The door locks of the developer guide (seeds/000 table 7.1.2-1)
// ---------------------------------------------------------------------------------------------

/// A door-lock row: AE-ID, KpsaID (psk_identity), Kpsa in hex.
pub struct Row {
    pub ae: &'static str,
    pub kpsa_id: &'static str,
    pub key: &'static str,
}

pub const LOCK1: Row = Row {
    ae: "Clock-AE1",
    kpsa_id: "AE123456789012-Lock@in.provider.com",
    key: "1a2b3c4d5e6f7a8b",
};
pub const LOCK2: Row = Row {
    ae: "Cllock-AE2",
    kpsa_id: "AE123456789015-Lock@in.provider.com",
    key: "12345678abcdefab",
};

/// The `[[security.psk]]` row of a door lock (without `entity` when the row names no AE-ID).
pub fn psk_row_toml(row: &Row) -> String {
    let entity = if row.ae.is_empty() {
        String::new()
    } else {
        format!("entity = \"{}\"\n", row.ae)
    };
    format!(
        "[[security.psk]]\n{entity}kpsa_id = \"{}\"\nkey = \"{}\"\n",
        row.kpsa_id, row.key
    )
}

// ---------------------------------------------------------------------------------------------
// What a process left on disk
// ---------------------------------------------------------------------------------------------

/// Every file under `dir` (recursively), read as bytes: for "no secret in any file" checks.
#[allow(dead_code)]
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
#[allow(dead_code)]
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
