//! Child `m2m` processes of the demo and the benches (CSE per TS-0001 clause 6, MAF, MEF): start
//! one, wait for its listening lines, kill it when dropped.

use anyhow::{anyhow, Context};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The line the CSE prints on stdout once it accepts plain HTTP connections (then the address).
pub const LISTENING_PREFIX: &str = "m2m-cse listening http://";
/// The line the CSE prints on stdout once it accepts TLS connections (then the address).
pub const LISTENING_PREFIX_TLS: &str = "m2m-cse listening https://";
/// The line of the DTLS listener (CoAP), printed after the others.
pub const LISTENING_PREFIX_DTLS: &str = "m2m-cse listening coaps://";
/// The line of the plain CoAP listener, printed last.
pub const LISTENING_PREFIX_COAP: &str = "m2m-cse listening coap://";
/// The WebSocket listener over TLS (`tls.wss_listen`).
pub const LISTENING_PREFIX_WSS: &str = "m2m-cse listening wss://";

/// Lines of the child's stderr kept for the error report of a failed start.
const TAIL_LINES: usize = 20;

/// A started child process, killed when dropped (every exit path, panics included).
pub struct Spawned {
    child: Child,
    /// Its stdout's lines after the listening lines (none for an adopted child).
    lines: Option<Mutex<mpsc::Receiver<String>>>,
    /// The last lines of its stderr (none for an adopted child).
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
}

impl Spawned {
    /// The child's process id (for its memory figures).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child printed on stdout that starts with `prefix` (the lines before it
    /// are passed over), if one came already: a child reports what it did on stdout.
    pub fn printed(&self, prefix: &str) -> Option<String> {
        let lines = self.lines.as_ref()?;
        let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(line) = lines.try_recv() {
            if line.trim().starts_with(prefix) {
                return Some(line);
            }
        }
        None
    }

    /// Why the child is gone, if it is: its exit status and the last lines of its stderr (a
    /// bench that measured nothing says whether its server died, and of what).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        // Let the stderr thread read what the child wrote before it died.
        std::thread::sleep(Duration::from_millis(50));
        let tail = self
            .tail
            .as_ref()
            .map(|t| {
                let t = t.lock().unwrap_or_else(|p| p.into_inner());
                t.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default();
        Some(format!("{status}\n{tail}"))
    }
}

/// Adopts a child started elsewhere (a third-party peer) so that it is killed when dropped.
impl From<Child> for Spawned {
    fn from(child: Child) -> Self {
        Self {
            child,
            lines: None,
            tail: None,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `m2m ARGS` from the current executable; the caller may add environment and a directory.
pub fn m2m(args: &[&str]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the m2m executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    Ok(cmd)
}

/// Spawns `cmd`, copies its stderr to `log` (if any), and waits up to `timeout` until it printed
/// a line starting with each of `prefixes`; returns the rest of those lines in the order of
/// `prefixes`. On a failed start the error names the command and ends with its stderr's tail.
pub fn start(
    mut cmd: Command,
    log: Option<&Path>,
    prefixes: &[&str],
    timeout: Duration,
) -> anyhow::Result<(Spawned, Vec<String>)> {
    let what = format!("{cmd:?}");
    let log_file = match log {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("{}", p.display()))?),
        None => None,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let tail = keep_stderr(stderr, log_file);
    let mut spawned = Spawned {
        child,
        lines: None,
        tail: Some(Arc::clone(&tail)),
    };
    let lines = drain_stdout(stdout);
    match wait_for(&lines, prefixes, timeout) {
        Ok(found) => {
            spawned.lines = Some(Mutex::new(lines));
            Ok((spawned, found))
        }
        Err(why) => {
            drop(spawned);
            // Let the stderr thread read what the child wrote before it died.
            std::thread::sleep(Duration::from_millis(50));
            let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            let log = log.map(|p| format!(" (its log: {})", p.display()));
            Err(anyhow!(
                "{what} did not start: {why}{}\n{}",
                log.unwrap_or_default(),
                tail.join("\n")
            ))
        }
    }
}

/// Keeps reading stderr (so the child never blocks on a full pipe) into `log` and a short tail.
fn keep_stderr(
    stderr: impl Read + Send + 'static,
    mut log: Option<std::fs::File>,
) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let kept = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            let mut t = kept.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    tail
}

/// Sends stdout's lines to the returned channel, and keeps draining it after nobody listens.
fn drain_stdout(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// The rest of the first line starting with each prefix, or why they did not all come.
fn wait_for(
    lines: &mpsc::Receiver<String>,
    prefixes: &[&str],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                format!("no {prefixes:?} line within {timeout:?}")
            }
            mpsc::RecvTimeoutError::Disconnected => {
                format!("it closed stdout without a {prefixes:?} line")
            }
        })?;
        for (slot, p) in found.iter_mut().zip(prefixes) {
            if let Some(rest) = line.trim().strip_prefix(p) {
                slot.get_or_insert_with(|| rest.to_owned());
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_exits_reports_its_stderr_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'bad config: no [http]' >&2; exit 3"]);
        let err = start(cmd, None, &[LISTENING_PREFIX], Duration::from_secs(5))
            .err()
            .expect("no start");
        let text = format!("{err:#}");
        assert!(text.contains("did not start"), "{text}");
        assert!(text.contains("bad config: no [http]"), "{text}");
    }

    #[test]
    fn a_child_that_dies_after_starting_says_why() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'm2m-cse listening http://127.0.0.1:1'; sleep 0.2; echo 'token gone' >&2; exit 7",
        ]);
        let (mut child, _) =
            start(cmd, None, &[LISTENING_PREFIX], Duration::from_secs(5)).expect("started");
        assert_eq!(child.exited(), None, "still running");
        std::thread::sleep(Duration::from_millis(600));
        let why = child.exited().expect("exited");
        assert!(why.contains('7') && why.contains("token gone"), "{why}");
    }

    #[test]
    fn the_rest_of_each_listening_line_comes_back_in_order() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'm2m-cse listening https://127.0.0.1:2'; echo 'm2m-cse listening http://127.0.0.1:1'; sleep 5",
        ]);
        let (_child, urls) = start(
            cmd,
            None,
            &[LISTENING_PREFIX, LISTENING_PREFIX_TLS],
            Duration::from_secs(5),
        )
        .expect("started");
        assert_eq!(urls, ["127.0.0.1:1", "127.0.0.1:2"]);
    }
}
